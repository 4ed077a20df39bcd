//! Hollow nodes against a real API server (in-process, in-memory store):
//! registration, Leases, pod status, graceful deletion, take-over after a
//! restart, join errors, kubeconfig targets.

use navarch_sim::{NodeTemplate, Sim, SimConfig, Taint, Target};
use navarch_store::{MemoryStore, Store};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

struct Server {
    dir: tempfile::TempDir,
    running: navarch_apiserver::Running,
    admin: reqwest::Client,
    _cancel: tokio_util::sync::DropGuard,
}

async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let cancel = CancellationToken::new();
    let running = navarch_apiserver::start(
        navarch_apiserver::Config::new(dir.path(), "127.0.0.1:0"),
        store,
        cancel.clone(),
    )
    .await
    .unwrap();
    let admin = Target::from_kubeconfig(&running.kubeconfig)
        .unwrap()
        .client()
        .unwrap();
    Server {
        dir,
        running,
        admin,
        _cancel: cancel.drop_guard(),
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.running.url)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.admin.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn must_get(&self, path: &str) -> Value {
        let (status, v) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    async fn must_send(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let ct = if method == reqwest::Method::PATCH {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        let r = self
            .admin
            .request(method.clone(), self.url(path))
            .header("content-type", ct)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }

    async fn create_pod(&self, name: &str, node: &str) -> Value {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"nodeName": node,
                "initContainers": [{"name": "setup", "image": "busybox"}],
                "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                                  "limits": {"cpu": "100m", "memory": "64Mi"}}}]}});
        self.must_send(
            reqwest::Method::POST,
            "/api/v1/namespaces/default/pods",
            pod,
        )
        .await
    }

    async fn join_target(&self, data_dir: &std::path::Path) -> Result<Target, navarch_sim::Error> {
        Target::join(
            &self.running.url,
            &self.running.node_token,
            "hollow-sim",
            data_dir,
        )
        .await
    }
}

/// Polls `f` until it returns `Some`, for at most `secs` seconds.
async fn must_eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn config(nodes: usize) -> SimConfig {
    let mut c = SimConfig::new(nodes);
    c.lease_renew = Duration::from_millis(500);
    c
}

fn condition<'a>(node: &'a Value, t: &str) -> &'a Value {
    node["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_ready_with_template_and_leases_are_renewed() {
    let s = server().await;
    let data = tempfile::tempdir().unwrap();
    let target = s.join_target(data.path()).await.unwrap();
    let mut c = config(20);
    c.report_pods = false;
    c.template = NodeTemplate {
        cpu: "4".into(),
        memory: "32Gi".into(),
        pods: 50,
        zones: NodeTemplate::numbered_zones(3),
        taints: vec![Taint::parse("dedicated=sim:NoSchedule").unwrap()],
        ..NodeTemplate::default()
    };
    c.template.labels.insert("pool".into(), "blue".into());
    let sim = Sim::start(target, c).await.unwrap();
    assert_eq!(sim.node_names().len(), 20);
    assert_eq!(sim.node_names()[7], "hollow-7");

    let list = s
        .must_get("/api/v1/nodes?labelSelector=navarch.io%2Fhollow%3Dtrue")
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 20);
    let n = s.must_get("/api/v1/nodes/hollow-7").await;
    let labels = &n["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/hostname"], "hollow-7");
    assert_eq!(labels["kubernetes.io/os"], "linux");
    assert_eq!(labels["topology.kubernetes.io/zone"], "zone-1");
    assert_eq!(labels["topology.kubernetes.io/region"], "region-0");
    assert_eq!(labels["pool"], "blue");
    assert_eq!(
        n["spec"]["taints"],
        json!([{"key": "dedicated", "value": "sim", "effect": "NoSchedule"}])
    );
    assert_eq!(n["status"]["capacity"]["cpu"], "4");
    assert_eq!(n["status"]["capacity"]["memory"], "32Gi");
    assert_eq!(n["status"]["capacity"]["pods"], "50");
    assert_eq!(n["status"]["capacity"], n["status"]["allocatable"]);
    assert_eq!(condition(&n, "Ready")["status"], "True");
    assert_eq!(condition(&n, "Ready")["reason"], "KubeletReady");
    for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert_eq!(condition(&n, t)["status"], "False", "{t}");
    }
    let addresses = n["status"]["addresses"].as_array().unwrap();
    assert!(addresses
        .iter()
        .any(|a| a["type"] == "InternalIP" && a["address"] == "10.64.0.8"));
    assert!(addresses
        .iter()
        .any(|a| a["type"] == "Hostname" && a["address"] == "hollow-7"));
    assert_eq!(n["status"]["nodeInfo"]["operatingSystem"], "linux");

    // Every node has a Lease owned by it, and the Leases are renewed.
    let lease_path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/hollow-7";
    let lease = s.must_get(lease_path).await;
    assert_eq!(lease["spec"]["holderIdentity"], "hollow-7");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 40);
    assert_eq!(
        lease["metadata"]["ownerReferences"][0]["uid"],
        n["metadata"]["uid"]
    );
    let first = lease["spec"]["renewTime"].as_str().unwrap().to_string();
    assert_eq!(first.len(), "2026-11-24T10:00:00.123456Z".len(), "{first}");
    let renew_times = || async {
        let list = s
            .must_get("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases")
            .await;
        let mut times = std::collections::BTreeMap::new();
        for l in list["items"].as_array().unwrap() {
            times.insert(
                l["metadata"]["name"].as_str().unwrap().to_string(),
                l["spec"]["renewTime"].clone(),
            );
        }
        times
    };
    let before = renew_times().await;
    assert_eq!(before.len(), 20);
    must_eventually(5, "every lease renewed", || async {
        let now = renew_times().await;
        before
            .iter()
            .all(|(k, t)| now.get(k) != Some(t))
            .then_some(())
    })
    .await;
    sim.stop().await.unwrap();
    // Nodes stay registered after a stop.
    let list = s
        .must_get("/api/v1/nodes?labelSelector=navarch.io%2Fhollow%3Dtrue")
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_pods_run_and_graceful_deletes_finish() {
    let s = server().await;
    let data = tempfile::tempdir().unwrap();
    let target = s.join_target(data.path()).await.unwrap();
    let sim = Sim::start(target, config(20)).await.unwrap();

    let p1 = s.create_pod("p1", "hollow-3").await;
    s.create_pod("p2", "hollow-3").await;
    s.create_pod("elsewhere", "real-node").await;
    let running = |name: &'static str| {
        let s = &s;
        move || async move {
            let p = s
                .must_get(&format!("/api/v1/namespaces/default/pods/{name}"))
                .await;
            (p["status"]["phase"] == "Running").then_some(p)
        }
    };
    let p1r = must_eventually(10, "p1 Running", running("p1")).await;
    let p2r = must_eventually(10, "p2 Running", running("p2")).await;
    let st = &p1r["status"];
    assert_eq!(st["hostIP"], "10.64.0.4");
    assert_eq!(st["hostIPs"][0]["ip"], "10.64.0.4");
    let ip = st["podIP"].as_str().unwrap();
    assert!(ip.starts_with("10.1"), "{ip}");
    assert_eq!(st["podIPs"][0]["ip"], ip);
    assert_ne!(p2r["status"]["podIP"], st["podIP"], "pod IPs are unique");
    assert_eq!(st["qosClass"], "Burstable", "the server's class is kept");
    assert!(st["startTime"].is_string());
    for t in [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ] {
        assert_eq!(condition(&p1r, t)["status"], "True", "{t}");
    }
    let cs = &st["containerStatuses"][0];
    assert_eq!(cs["name"], "main");
    assert_eq!(cs["ready"], true);
    assert_eq!(cs["restartCount"], 0);
    assert_eq!(
        cs["containerID"],
        format!("hollow://{}-main", p1["metadata"]["uid"].as_str().unwrap())
    );
    assert!(cs["state"]["running"]["startedAt"].is_string());
    assert_eq!(
        st["initContainerStatuses"][0]["state"]["terminated"]["exitCode"],
        0
    );

    // Reported once: the resourceVersion stays put once Running.
    let rv = p1r["metadata"]["resourceVersion"].clone();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let again = s.must_get("/api/v1/namespaces/default/pods/p1").await;
    assert_eq!(again["metadata"]["resourceVersion"], rv);

    // A pod on a node that is not hollow is left alone.
    let other = s
        .must_get("/api/v1/namespaces/default/pods/elsewhere")
        .await;
    assert_eq!(other["status"]["phase"], "Pending");
    assert!(other["status"].get("podIP").is_none());

    // A default (graceful) delete is finished by the hollow node.
    let r = s
        .admin
        .delete(s.url("/api/v1/namespaces/default/pods/p1"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    must_eventually(10, "p1 gone", || async {
        let (status, _) = s.get("/api/v1/namespaces/default/pods/p1").await;
        (status == 404).then_some(())
    })
    .await;
    // ... while a graceful delete elsewhere waits for that node's kubelet.
    s.admin
        .delete(s.url("/api/v1/namespaces/default/pods/elsewhere"))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, v) = s.get("/api/v1/namespaces/default/pods/elsewhere").await;
    assert_eq!(status, 200);
    assert!(v["metadata"]["deletionTimestamp"].is_string());
    sim.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sim_takes_over_its_nodes_through_a_kubeconfig() {
    let s = server().await;
    let target = Target::from_kubeconfig(&s.running.kubeconfig).unwrap();
    let sim = Sim::start(target.clone(), config(5)).await.unwrap();
    let uid = s.must_get("/api/v1/nodes/hollow-2").await["metadata"]["uid"].clone();
    sim.stop().await.unwrap();

    // While the sim is down: a node marked not ready, a pod bound.
    s.must_send(
        reqwest::Method::PATCH,
        "/api/v1/nodes/hollow-2/status",
        json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown"}]}}),
    )
    .await;
    s.create_pod("late", "hollow-2").await;

    let mut c = config(5);
    c.template.labels.insert("generation".into(), "2".into());
    let sim = Sim::start(target, c).await.unwrap();
    let n = s.must_get("/api/v1/nodes/hollow-2").await;
    assert_eq!(n["metadata"]["uid"], uid, "the same Node, taken over");
    assert_eq!(n["metadata"]["labels"]["generation"], "2");
    assert_eq!(condition(&n, "Ready")["status"], "True");
    let list = s
        .must_get("/api/v1/nodes?labelSelector=navarch.io%2Fhollow%3Dtrue")
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 5);
    must_eventually(
        10,
        "the pod bound while the sim was down Running",
        || async {
            let p = s.must_get("/api/v1/namespaces/default/pods/late").await;
            (p["status"]["phase"] == "Running").then_some(())
        },
    )
    .await;
    sim.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_on_stop_removes_nodes_and_leases() {
    let s = server().await;
    let target = Target::from_kubeconfig(&s.running.kubeconfig).unwrap();
    let mut c = config(4);
    c.prefix = "gone-".into();
    c.delete_on_stop = true;
    let sim = Sim::start(target, c).await.unwrap();
    assert_eq!(s.get("/api/v1/nodes/gone-3").await.0, 200);
    sim.stop().await.unwrap();
    for i in 0..4 {
        assert_eq!(s.get(&format!("/api/v1/nodes/gone-{i}")).await.0, 404);
        let lease =
            format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/gone-{i}");
        assert_eq!(s.get(&lease).await.0, 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_a_clear_error() {
    let s = server().await;
    let data = tempfile::tempdir().unwrap();
    let (hash, _) = s.running.node_token.split_once("::node:").unwrap();
    for (token, expect) in [
        (
            format!("{hash}::node:not-the-secret"),
            "rejected the node token",
        ),
        (
            format!("N10{}::node:secret", "0".repeat(64)),
            "does not match the token",
        ),
        ("garbage".to_string(), "malformed node token"),
    ] {
        let e = Target::join(&s.running.url, &token, "hollow-sim", data.path())
            .await
            .expect_err("join must fail");
        let mut text = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(x) = src {
            text.push_str(": ");
            text.push_str(&x.to_string());
            src = x.source();
        }
        assert!(text.contains("hollow-sim"), "{text}");
        assert!(text.contains(expect), "{token}: {text}");
    }
    // No node was registered.
    let list = s.must_get("/api/v1/nodes").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    drop(s.dir);
}

#[tokio::test]
async fn bad_configs_are_refused_before_any_request() {
    let target = Target {
        server: "https://127.0.0.1:9".into(),
        ca_pem: None,
        token: None,
        identity_pem: None,
        insecure: true,
    };
    let mut c = SimConfig::new(3);
    c.template.cpu = "many".into();
    let e = Sim::start(target.clone(), c)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("cpu") && e.contains("many"), "{e}");
    let mut c = SimConfig::new(3);
    c.prefix = "Upper_".into();
    let e = Sim::start(target, c).await.err().unwrap().to_string();
    assert!(e.contains("prefix"), "{e}");
}
