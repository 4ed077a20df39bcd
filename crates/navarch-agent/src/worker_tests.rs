//! Component tests of the pod worker on the fake runtime, with paused time
//! and a fake API that feeds status writes back like the watch does.

use crate::api::{ApiCallError, PodApi, PodEvent};
use crate::env::{ConfigObjects, NodeAllocatable, References};
use crate::worker::{self, Admission, NodeContext, WorkerHandle, WorkerMsg};
use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use navarch_runtime::{
    ContainerState, FakeBehavior, FakeCall, FakeExec, FakeOnTerm, FakeRuntime, Runtime,
};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct FakeApi {
    pod: Mutex<Value>,
    deleted: Mutex<bool>,
    events: Mutex<Vec<PodEvent>>,
    config_maps: Mutex<Vec<ConfigMap>>,
    worker: Mutex<Option<mpsc::UnboundedSender<WorkerMsg>>>,
    fail_writes: Mutex<bool>,
}

impl FakeApi {
    fn status(&self) -> Value {
        self.pod.lock()["status"].clone()
    }
    fn container(&self, name: &str) -> Value {
        let st = self.status();
        st["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(st["initContainerStatuses"].as_array().into_iter().flatten())
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }
    fn condition(&self, type_: &str) -> String {
        self.status()["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == type_)
            .map(|c| c["status"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    }
    fn reasons(&self) -> Vec<String> {
        self.events
            .lock()
            .iter()
            .map(|e| e.reason.clone())
            .collect()
    }
    /// Changes the pod as a user would and tells the worker.
    fn edit(&self, f: impl FnOnce(&mut Value)) {
        let pod = {
            let mut p = self.pod.lock();
            f(&mut p);
            p.clone()
        };
        if let Some(tx) = self.worker.lock().as_ref() {
            let _ = tx.send(WorkerMsg::Update(Box::new(
                serde_json::from_value(pod).unwrap(),
            )));
        }
    }
}

impl PodApi for FakeApi {
    fn patch_status<'a>(
        &'a self,
        _ns: &'a str,
        _name: &'a str,
        patch: Value,
    ) -> BoxFuture<'a, Result<(), ApiCallError>> {
        async move {
            if *self.fail_writes.lock() {
                return Err(ApiCallError("connection refused".into()));
            }
            let pod = {
                let mut p = self.pod.lock();
                crate::status::apply_merge_patch(&mut p, &patch);
                p.clone()
            };
            if let Some(tx) = self.worker.lock().as_ref() {
                let _ = tx.send(WorkerMsg::Update(Box::new(
                    serde_json::from_value(pod).unwrap(),
                )));
            }
            Ok(())
        }
        .boxed()
    }
    fn delete_pod<'a>(
        &'a self,
        _ns: &'a str,
        _name: &'a str,
        _uid: &'a str,
    ) -> BoxFuture<'a, Result<(), ApiCallError>> {
        async move {
            *self.deleted.lock() = true;
            Ok(())
        }
        .boxed()
    }
    fn config_objects<'a>(
        &'a self,
        _ns: &'a str,
        refs: &'a References,
    ) -> BoxFuture<'a, Result<ConfigObjects, ApiCallError>> {
        async move {
            let mut o = ConfigObjects::default();
            for cm in self.config_maps.lock().iter() {
                let name = cm.metadata.name.clone().unwrap();
                if refs.config_maps.contains(&name) {
                    o.config_maps.insert(name, cm.clone());
                }
            }
            Ok(o)
        }
        .boxed()
    }
    fn event(&self, event: PodEvent) {
        self.events.lock().push(event);
    }
}

struct Harness {
    rt: FakeRuntime,
    api: Arc<FakeApi>,
    _handle: WorkerHandle,
    done: mpsc::UnboundedReceiver<String>,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

fn pod(spec: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": "uid-1"},
        "spec": spec,
    })
}

fn start(rt: FakeRuntime, pod: Value) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    start_in(rt, pod, dir, Arc::new(FakeApi::default()))
}

fn start_in(rt: FakeRuntime, pod: Value, dir: tempfile::TempDir, api: Arc<FakeApi>) -> Harness {
    *api.pod.lock() = pod.clone();
    let ctx = Arc::new(NodeContext {
        node_name: "n1".into(),
        host_ip: "10.0.0.5".into(),
        data_dir: dir.path().to_path_buf(),
        allocatable: NodeAllocatable {
            cpu_millis: 2000,
            memory_bytes: 4 << 30,
            ephemeral_storage_bytes: 10 << 30,
        },
        runtime_scheme: "fake".into(),
    });
    let (done_tx, done) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let handle = worker::spawn(
        ctx,
        Arc::new(rt.clone()),
        api.clone(),
        serde_json::from_value::<Pod>(pod).unwrap(),
        Admission::Admitted,
        done_tx,
        cancel.clone(),
    );
    *api.worker.lock() = Some(handle.tx.clone());
    Harness {
        rt,
        api,
        _handle: handle,
        done,
        cancel,
        _dir: dir,
    }
}

async fn settle(d: Duration) {
    // Let spawned tasks run, then advance paused time.
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(d).await;
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn c(name: &str) -> Value {
    json!({"name": name, "image": "busybox", "command": ["sleep", "1000"]})
}

#[tokio::test(start_paused = true)]
async fn init_containers_run_in_order_then_containers() {
    let rt = FakeRuntime::new();
    rt.set_behavior("init", FakeBehavior::exit_after(Duration::from_secs(1), 0));
    let h = start(
        rt,
        pod(json!({"initContainers": [c("init")], "containers": [c("a"), c("b")]})),
    );
    settle(Duration::from_millis(100)).await;
    assert_eq!(h.api.status()["phase"], "Pending");
    assert_eq!(h.api.condition("Initialized"), "False");
    assert_eq!(
        h.api.container("a")["state"]["waiting"]["reason"],
        "PodInitializing"
    );
    settle(Duration::from_secs(2)).await;
    let st = h.api.status();
    assert_eq!(st["phase"], "Running", "{st:#}");
    assert_eq!(h.api.condition("Initialized"), "True");
    assert_eq!(h.api.condition("Ready"), "True");
    assert_eq!(
        h.api.container("init")["state"]["terminated"]["reason"],
        "Completed"
    );
    assert!(h.api.container("a")["state"]["running"]["startedAt"].is_string());
    assert_eq!(st["podIP"], "10.0.0.5");
    assert_eq!(st["hostIP"], "10.0.0.5");
    assert_eq!(st["qosClass"], "BestEffort");
    // The init container was created before the others.
    let creates: Vec<String> =
        h.rt.calls()
            .into_iter()
            .filter_map(|c| match c {
                FakeCall::CreateContainer(_, n) => Some(n),
                _ => None,
            })
            .collect();
    assert_eq!(creates, ["init", "a", "b"]);
    assert!(h.api.reasons().contains(&"Started".to_string()));
    h.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn crash_loop_backs_off_exponentially() {
    let rt = FakeRuntime::new();
    rt.set_behavior("a", FakeBehavior::crash(2));
    let h = start(rt, pod(json!({"containers": [c("a")]})));
    // First crash: restarted at once.
    settle(Duration::from_millis(100)).await;
    let a = h.api.container("a");
    assert_eq!(a["restartCount"], 1, "{a:#}");
    assert_eq!(a["state"]["waiting"]["reason"], "CrashLoopBackOff", "{a:#}");
    assert!(a["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .starts_with("back-off 10s restarting failed container=a pod=web_default"));
    assert_eq!(a["lastState"]["terminated"]["exitCode"], 2);
    assert_eq!(h.api.status()["phase"], "Running");
    settle(Duration::from_secs(10)).await;
    let a = h.api.container("a");
    assert_eq!(a["restartCount"], 2, "{a:#}");
    assert!(a["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .starts_with("back-off 20s"));
    settle(Duration::from_secs(15)).await;
    assert_eq!(h.api.container("a")["restartCount"], 2);
    settle(Duration::from_secs(6)).await;
    assert_eq!(h.api.container("a")["restartCount"], 3);
    assert!(h.api.reasons().contains(&"BackOff".to_string()));
    h.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn restart_policies_end_the_pod() {
    for (policy, code, phase) in [
        ("Never", 1, "Failed"),
        ("Never", 0, "Succeeded"),
        ("OnFailure", 0, "Succeeded"),
    ] {
        let rt = FakeRuntime::new();
        rt.set_behavior("a", FakeBehavior::exit_after(Duration::from_secs(1), code));
        let h = start(
            rt,
            pod(json!({"restartPolicy": policy, "containers": [c("a")]})),
        );
        settle(Duration::from_secs(2)).await;
        let st = h.api.status();
        assert_eq!(st["phase"], phase, "{policy} {code}: {st:#}");
        assert_eq!(h.api.container("a")["restartCount"], 0);
        assert_eq!(
            h.api.container("a")["state"]["terminated"]["exitCode"],
            code
        );
        assert_eq!(h.api.condition("Ready"), "False");
        h.cancel.cancel();
    }
}

#[tokio::test(start_paused = true)]
async fn graceful_deletion_honours_the_grace_period() {
    let rt = FakeRuntime::new();
    rt.set_behavior("a", FakeBehavior::run_forever().on_term(FakeOnTerm::Ignore));
    let mut h = start(
        rt,
        pod(json!({"terminationGracePeriodSeconds": 5, "containers": [c("a")]})),
    );
    settle(Duration::from_millis(100)).await;
    assert_eq!(h.api.status()["phase"], "Running");
    h.api.edit(|p| {
        p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        p["metadata"]["deletionGracePeriodSeconds"] = json!(5);
    });
    settle(Duration::from_secs(4)).await;
    assert!(
        !*h.api.deleted.lock(),
        "deleted before the grace period ended"
    );
    settle(Duration::from_secs(2)).await;
    assert!(*h.api.deleted.lock());
    assert_eq!(h.done.recv().await.as_deref(), Some("uid-1"));
    let calls = h.rt.calls();
    assert!(calls
        .iter()
        .any(|c| matches!(c, FakeCall::StopContainer(_, d) if *d == Duration::from_secs(5))));
    assert!(calls
        .iter()
        .any(|c| matches!(c, FakeCall::RemovePodSandbox(_))));
    let a = h.api.container("a");
    assert_eq!(a["state"]["terminated"]["exitCode"], 137, "{a:#}");
    assert!(h.api.reasons().contains(&"Killing".to_string()));
}

#[tokio::test(start_paused = true)]
async fn prestop_hook_runs_before_sigterm() {
    let rt = FakeRuntime::new();
    let hooks = Arc::new(Mutex::new(Vec::new()));
    let seen = hooks.clone();
    rt.set_exec_handler(move |_, cmd| {
        seen.lock().push(cmd.to_vec());
        FakeExec::default()
    });
    let mut spec = c("a");
    spec["lifecycle"] = json!({"preStop": {"exec": {"command": ["sh", "-c", "echo bye"]}}});
    let mut h = start(rt, pod(json!({"containers": [spec]})));
    settle(Duration::from_millis(100)).await;
    h.api.edit(|p| {
        p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    });
    settle(Duration::from_millis(100)).await;
    assert_eq!(h.done.recv().await.as_deref(), Some("uid-1"));
    assert_eq!(hooks.lock()[0], ["sh", "-c", "echo bye"]);
}

#[tokio::test(start_paused = true)]
async fn liveness_failure_restarts_and_readiness_drives_ready() {
    let rt = FakeRuntime::new();
    let healthy = Arc::new(Mutex::new(true));
    let ready = Arc::new(Mutex::new(false));
    let (h2, r2) = (healthy.clone(), ready.clone());
    rt.set_exec_handler(move |_, cmd| {
        let ok = match cmd[0].as_str() {
            "live" => *h2.lock(),
            _ => *r2.lock(),
        };
        FakeExec {
            exit_code: if ok { 0 } else { 1 },
            ..FakeExec::default()
        }
    });
    let mut spec = c("a");
    spec["livenessProbe"] =
        json!({"exec": {"command": ["live"]}, "periodSeconds": 1, "failureThreshold": 2});
    spec["readinessProbe"] = json!({"exec": {"command": ["ready"]}, "periodSeconds": 1});
    let h = start(rt, pod(json!({"containers": [spec]})));
    settle(Duration::from_secs(3)).await;
    assert_eq!(h.api.condition("Ready"), "False");
    assert_eq!(h.api.container("a")["ready"], false);
    *ready.lock() = true;
    settle(Duration::from_secs(2)).await;
    assert_eq!(h.api.condition("Ready"), "True");
    assert_eq!(h.api.container("a")["ready"], true);
    *ready.lock() = false;
    // failureThreshold defaults to 3.
    settle(Duration::from_secs(4)).await;
    assert_eq!(h.api.condition("Ready"), "False");
    *ready.lock() = true;
    *healthy.lock() = false;
    settle(Duration::from_secs(4)).await;
    let a = h.api.container("a");
    assert!(a["restartCount"].as_u64().unwrap() >= 1, "{a:#}");
    assert_eq!(a["lastState"]["terminated"]["exitCode"], 143, "{a:#}");
    let reasons = h.api.reasons();
    assert!(reasons.contains(&"Unhealthy".to_string()), "{reasons:?}");
    assert!(reasons.contains(&"Killing".to_string()), "{reasons:?}");
    h.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn config_errors_are_waiting_reasons() {
    let rt = FakeRuntime::new();
    let mut bad_env = c("env");
    bad_env["env"] =
        json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "k"}}}]);
    let no_cmd = json!({"name": "nocmd", "image": "nginx"});
    let h = start(rt, pod(json!({"containers": [bad_env, no_cmd, c("ok")]})));
    settle(Duration::from_millis(100)).await;
    let env = h.api.container("env");
    assert_eq!(
        env["state"]["waiting"]["reason"],
        "CreateContainerConfigError"
    );
    assert_eq!(
        env["state"]["waiting"]["message"],
        "configmap \"missing\" not found"
    );
    let nocmd = h.api.container("nocmd");
    assert_eq!(
        nocmd["state"]["waiting"]["reason"], "CreateContainerError",
        "{nocmd:#}"
    );
    assert!(nocmd["state"]["waiting"]["message"]
        .as_str()
        .unwrap()
        .contains("no command specified"));
    assert!(h.api.container("ok")["state"]["running"].is_object());
    assert_eq!(h.api.status()["phase"], "Pending");
    // The ConfigMap appears: the container starts on a later sync.
    h.api.config_maps.lock().push(
        serde_json::from_value(json!({"metadata": {"name": "missing"}, "data": {"k": "v"}}))
            .unwrap(),
    );
    settle(Duration::from_secs(11)).await;
    assert!(h.api.container("env")["state"]["running"].is_object());
    h.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_new_worker_adopts_running_containers() {
    let rt = FakeRuntime::new();
    rt.set_behavior("a", FakeBehavior::run_forever());
    let dir = tempfile::tempdir().unwrap();
    let spec = pod(json!({"containers": [c("a")]}));
    let api = Arc::new(FakeApi::default());
    let h = start_in(rt.clone(), spec, dir, api.clone());
    settle(Duration::from_millis(100)).await;
    let started = h.api.container("a")["state"]["running"]["startedAt"].clone();
    // The agent stops: the worker goes, the container stays.
    h.cancel.cancel();
    settle(Duration::from_millis(100)).await;
    let running: Vec<_> = rt
        .list_containers(Default::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.state == ContainerState::Running)
        .collect();
    assert_eq!(running.len(), 1);
    let creates_before = rt
        .calls()
        .iter()
        .filter(|c| matches!(c, FakeCall::CreateContainer(..)))
        .count();
    // A new agent: same runtime, pod as the API has it.
    let pod_now = api.pod.lock().clone();
    let h2 = start_in(rt.clone(), pod_now, h._dir, api.clone());
    settle(Duration::from_millis(100)).await;
    let creates_after = rt
        .calls()
        .iter()
        .filter(|c| matches!(c, FakeCall::CreateContainer(..)))
        .count();
    assert_eq!(creates_before, creates_after, "container started twice");
    assert_eq!(
        h2.api.container("a")["state"]["running"]["startedAt"],
        started
    );
    assert_eq!(h2.api.status()["phase"], "Running");
    h2.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn active_deadline_fails_the_pod() {
    let rt = FakeRuntime::new();
    let h = start(
        rt,
        pod(json!({"activeDeadlineSeconds": 3, "containers": [c("a")]})),
    );
    settle(Duration::from_secs(1)).await;
    assert_eq!(h.api.status()["phase"], "Running");
    // The deadline is measured on the wall clock (startTime is a
    // timestamp): move it back instead of waiting.
    h.api.edit(|p| {
        p["status"]["startTime"] = json!("2020-01-01T00:00:00Z");
    });
    settle(Duration::from_millis(100)).await;
    let st = h.api.status();
    assert_eq!(st["phase"], "Failed", "{st:#}");
    assert_eq!(st["reason"], "DeadlineExceeded");
    assert!(h.api.container("a")["state"]["terminated"].is_object());
    h.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn status_writes_retry_when_the_server_is_down() {
    let rt = FakeRuntime::new();
    let api = Arc::new(FakeApi::default());
    *api.fail_writes.lock() = true;
    let h = start_in(
        rt.clone(),
        pod(json!({"containers": [c("a")]})),
        tempfile::tempdir().unwrap(),
        api.clone(),
    );
    settle(Duration::from_secs(5)).await;
    assert!(h.api.status().is_null());
    // The container runs regardless.
    assert_eq!(
        rt.list_containers(Default::default()).await.unwrap().len(),
        1
    );
    *api.fail_writes.lock() = false;
    settle(Duration::from_secs(3)).await;
    assert_eq!(h.api.status()["phase"], "Running");
    h.cancel.cancel();
}
