//! The scheduler driver against a real in-process API server (memory
//! store): nodes and pods go in through the API verbs, bindings, events and
//! conditions come out through them. Nodes here are hollow: no agent runs,
//! so the tests finish graceful deletions the way a kubelet would.

use navarch_api::registry::lookup;
use navarch_api::ResourceType;
use navarch_apiserver::cache::Filter;
use navarch_apiserver::{ApiServer, DeleteOptions, WriteOptions};
use navarch_controllers::scheduler::{self, Profile, SchedulerOptions};
use navarch_scheduler::Config;
use navarch_store::{MemoryStore, Store};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct Cluster {
    server: Arc<ApiServer>,
    kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn rt(group: &str, plural: &str) -> &'static ResourceType {
    lookup(group, "v1", plural).expect("served")
}

fn opts() -> WriteOptions {
    WriteOptions::default()
}

impl Cluster {
    async fn start(options: SchedulerOptions) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let shutdown = CancellationToken::new();
        let running = navarch_apiserver::start(
            navarch_apiserver::Config::new(dir.path(), "127.0.0.1:0"),
            store,
            shutdown.clone(),
        )
        .await
        .unwrap();
        scheduler::spawn(running.server.clone(), options, shutdown.clone());
        Cluster {
            server: running.server,
            kubeconfig: running.kubeconfig,
            _dir: dir,
            shutdown,
        }
    }

    async fn default() -> Cluster {
        Cluster::start(SchedulerOptions {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(200),
            ..Default::default()
        })
        .await
    }

    async fn node(&self, name: &str, cpu: &str, labels: Value) {
        let mut l = json!({"kubernetes.io/hostname": name});
        if let Some(m) = labels.as_object() {
            for (k, v) in m {
                l[k] = v.clone();
            }
        }
        let node = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": l},
            "status": {"capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                       "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}});
        self.server
            .create(rt("", "nodes"), None, node, &opts())
            .await
            .unwrap();
    }

    async fn pod(&self, name: &str, cpu: &str, spec: Value) {
        let mut s = json!({"containers": [{"name": "c", "image": "pause",
            "resources": {"requests": {"cpu": cpu}}}]});
        if let Some(m) = spec.as_object() {
            for (k, v) in m {
                s[k] = v.clone();
            }
        }
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}}, "spec": s});
        self.server
            .create(rt("", "pods"), Some("default"), pod, &opts())
            .await
            .unwrap();
    }

    async fn priority_class(&self, name: &str, value: i64, extra: Value) {
        let mut pc = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value});
        if let Some(m) = extra.as_object() {
            for (k, v) in m {
                pc[k] = v.clone();
            }
        }
        self.server
            .create(
                lookup("scheduling.k8s.io", "v1", "priorityclasses").unwrap(),
                None,
                pc,
                &opts(),
            )
            .await
            .unwrap();
    }

    async fn get(&self, name: &str) -> Option<Value> {
        self.server
            .read(rt("", "pods"), Some("default"), name)
            .await
            .ok()
            .map(|(v, _)| v)
    }

    /// Waits until `f` holds for the pod (or panics after 10 s).
    async fn wait_pod(&self, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..1000 {
            if let Some(p) = self.get(name).await {
                if f(&p) {
                    return p;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "pod {name}: {what} not reached: {:#}",
            self.get(name).await.unwrap_or_default()
        );
    }

    async fn bound_to(&self, name: &str) -> String {
        let p = self
            .wait_pod(name, "bound", |p| p["spec"]["nodeName"].is_string())
            .await;
        p["spec"]["nodeName"].as_str().unwrap().to_string()
    }

    fn events_for(&self, pod: &str) -> Vec<Value> {
        self.server
            .cache
            .kind(rt("", "events"))
            .list(&Filter::default(), 0)
            .items
            .iter()
            .map(|o| o.value())
            .filter(|e| e["involvedObject"]["name"] == pod)
            .collect()
    }

    async fn wait_event(&self, pod: &str, reason: &str) -> Value {
        for _ in 0..1000 {
            if let Some(e) = self
                .events_for(pod)
                .into_iter()
                .find(|e| e["reason"] == reason)
            {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no {reason} event for {pod}: {:#?}", self.events_for(pod));
    }

    /// What a kubelet does once a deleted pod's containers stopped.
    async fn finish_deletion(&self, name: &str) {
        self.wait_pod(name, "deletionTimestamp", |p| {
            p["metadata"]["deletionTimestamp"].is_string()
        })
        .await;
        let del = DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        let _ = self
            .server
            .delete(rt("", "pods"), Some("default"), name, &del)
            .await;
    }
}

fn condition<'a>(pod: &'a Value, ty: &str) -> Option<&'a Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_selector_picks_the_labelled_node_and_records_scheduled() {
    let c = Cluster::default().await;
    c.node("n1", "4", json!({})).await;
    c.node("n2", "4", json!({"disktype": "ssd"})).await;
    c.node("n3", "4", json!({})).await;
    c.pod("web", "100m", json!({"nodeSelector": {"disktype": "ssd"}}))
        .await;
    assert_eq!(c.bound_to("web").await, "n2");
    let p = c.get("web").await.unwrap();
    assert_eq!(condition(&p, "PodScheduled").unwrap()["status"], "True");
    let e = c.wait_event("web", "Scheduled").await;
    assert_eq!(e["message"], "Successfully assigned default/web to n2");
    assert_eq!(e["source"]["component"], "default-scheduler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_pod_explains_why_and_retries_when_a_node_arrives() {
    let c = Cluster::default().await;
    c.node("small-1", "2", json!({})).await;
    c.node("small-2", "2", json!({})).await;
    c.node("tainted", "8", json!({})).await;
    let taint =
        json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}});
    c.server
        .patch(
            rt("", "nodes"),
            None,
            "tainted",
            None,
            navarch_api::patch::PatchType::Merge,
            taint,
            &opts(),
        )
        .await
        .unwrap();
    // Fill the small nodes with pods of the same priority: no victims.
    c.pod("filler-1", "1500m", json!({})).await;
    c.pod("filler-2", "1500m", json!({})).await;
    c.bound_to("filler-1").await;
    c.bound_to("filler-2").await;
    c.pod("big", "1", json!({})).await;
    let e = c.wait_event("big", "FailedScheduling").await;
    assert_eq!(e["type"], "Warning");
    assert_eq!(
        e["message"],
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
    );
    let p = c
        .wait_pod("big", "PodScheduled=False", |p| {
            condition(p, "PodScheduled").is_some_and(|c| c["status"] == "False")
        })
        .await;
    let cond = condition(&p, "PodScheduled").unwrap();
    assert_eq!(cond["reason"], "Unschedulable");
    assert_eq!(cond["message"], e["message"]);
    assert!(p["spec"]["nodeName"].is_null());
    // A node that fits arrives: the pod is retried at once, not by polling.
    c.node("large", "8", json!({})).await;
    assert_eq!(c.bound_to("big").await, "large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_for_other_schedulers_are_left_alone() {
    let mut options = SchedulerOptions::default();
    options.profiles.push(Profile {
        name: "packer".into(),
        config: Config::default(),
    });
    let c = Cluster::start(options).await;
    c.node("n1", "4", json!({})).await;
    c.pod("theirs", "100m", json!({"schedulerName": "someone-else"}))
        .await;
    c.pod("second-profile", "100m", json!({"schedulerName": "packer"}))
        .await;
    c.pod("ours", "100m", json!({})).await;
    assert_eq!(c.bound_to("ours").await, "n1");
    assert_eq!(c.bound_to("second-profile").await, "n1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = c.get("theirs").await.unwrap();
    assert!(p["spec"]["nodeName"].is_null());
    assert!(condition(&p, "PodScheduled").is_none());
    assert!(c.events_for("theirs").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_pod_preempts_and_is_nominated() {
    let c = Cluster::default().await;
    for (name, value) in [("low", 10), ("high", 1000)] {
        c.priority_class(name, value, json!({})).await;
    }
    c.node("only", "2", json!({})).await;
    c.pod("victim-a", "1", json!({"priorityClassName": "low"}))
        .await;
    c.pod("victim-b", "1", json!({"priorityClassName": "low"}))
        .await;
    c.bound_to("victim-a").await;
    c.bound_to("victim-b").await;
    c.pod("vip", "1500m", json!({"priorityClassName": "high"}))
        .await;
    // Both victims must go (1.5 cpu needed, 1 each): graceful deletion,
    // marked with the reason.
    for v in ["victim-a", "victim-b"] {
        let p = c
            .wait_pod(v, "deletionTimestamp", |p| {
                p["metadata"]["deletionTimestamp"].is_string()
            })
            .await;
        let dt = condition(&p, "DisruptionTarget").expect("DisruptionTarget");
        assert_eq!(dt["reason"], "PreemptionByScheduler");
        let e = c.wait_event(v, "Preempted").await;
        assert!(
            e["message"].as_str().unwrap().ends_with("on node only"),
            "{e}"
        );
    }
    let p = c
        .wait_pod("vip", "nominated", |p| {
            p["status"]["nominatedNodeName"] == "only"
        })
        .await;
    assert!(p["spec"]["nodeName"].is_null());
    // A less important pod arriving now may not take the nominated room.
    c.pod("sneaky", "1", json!({"priorityClassName": "low"}))
        .await;
    c.wait_event("sneaky", "FailedScheduling").await;
    // The victims' kubelet finishes; the preemptor lands where it was nominated.
    c.finish_deletion("victim-a").await;
    c.finish_deletion("victim-b").await;
    assert_eq!(c.bound_to("vip").await, "only");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(c.get("sneaky").await.unwrap()["spec"]["nodeName"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lower_priority_never_preempts_and_never_policy_is_honoured() {
    let c = Cluster::default().await;
    c.priority_class("polite", 1000, json!({"preemptionPolicy": "Never"}))
        .await;
    c.node("only", "1", json!({})).await;
    c.pod("first", "1", json!({})).await;
    c.bound_to("first").await;
    c.pod("polite", "1", json!({"priorityClassName": "polite"}))
        .await;
    c.wait_event("polite", "FailedScheduling").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = c.get("first").await.unwrap();
    assert!(first["metadata"]["deletionTimestamp"].is_null());
    // Freeing the node (a bound pod deleted) retries the waiting pod.
    c.server
        .delete(
            rt("", "pods"),
            Some("default"),
            "first",
            &DeleteOptions {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(c.bound_to("polite").await, "only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_never_overbooks_and_the_rest_wait() {
    let c = Cluster::default().await;
    for i in 0..5 {
        c.node(&format!("n{i}"), "2", json!({})).await;
    }
    // 5 nodes × 2 cpu = 10 cpu; 120 pods of 100m: 100 fit, 20 wait.
    let mut tasks = Vec::new();
    for i in 0..120 {
        let server = c.server.clone();
        tasks.push(tokio::spawn(async move {
            let pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("p{i}"), "namespace": "default"},
                "spec": {"containers": [{"name": "c", "image": "pause",
                    "resources": {"requests": {"cpu": "100m"}}}]}});
            server
                .create(rt("", "pods"), Some("default"), pod, &opts())
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let count = |c: &Cluster| {
        let pods = c
            .server
            .cache
            .kind(rt("", "pods"))
            .list(&Filter::default(), 0)
            .items;
        let mut per_node = std::collections::HashMap::<String, usize>::new();
        let mut failed = 0;
        for p in pods {
            let v = p.value();
            match v["spec"]["nodeName"].as_str() {
                Some(n) => *per_node.entry(n.to_string()).or_default() += 1,
                None if condition(&v, "PodScheduled").is_some_and(|c| c["status"] == "False") => {
                    failed += 1
                }
                None => {}
            }
        }
        (per_node, failed)
    };
    for _ in 0..1000 {
        let (per_node, failed) = count(&c);
        if per_node.values().sum::<usize>() == 100 && failed == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (per_node, failed) = count(&c);
    assert_eq!(per_node.len(), 5, "{per_node:?}");
    assert!(per_node.values().all(|n| *n == 20), "{per_node:?}");
    assert_eq!(failed, 20);
    // Still true a while later: nothing binds past capacity.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&c).0.values().sum::<usize>(), 100);
}

/// Hollow nodes (`navarch-sim`, which plays their kubelets: bound pods
/// become Running, graceful deletions finish) with priorities: the
/// important pods preempt exactly as many victims as they need, land, run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hollow_cluster_preempts_the_fewest_least_important_pods() {
    let c = Cluster::default().await;
    for (name, value) in [("batch", 1), ("serving", 1000)] {
        c.priority_class(name, value, json!({})).await;
    }
    let target = navarch_sim::Target::from_kubeconfig(&c.kubeconfig).unwrap();
    let mut config = navarch_sim::SimConfig::new(10);
    config.template.cpu = "2".into();
    let sim = navarch_sim::Sim::start(target, config).await.unwrap();
    // 20 batch pods of 1 cpu fill the 10 nodes.
    for i in 0..20 {
        c.pod(
            &format!("batch-{i}"),
            "1",
            json!({"priorityClassName": "batch"}),
        )
        .await;
    }
    for i in 0..20 {
        c.wait_pod(&format!("batch-{i}"), "Running", |p| {
            p["status"]["phase"] == "Running"
        })
        .await;
    }
    // 3 serving pods of 1500m: each needs both batch pods of one node gone.
    for i in 0..3 {
        c.pod(
            &format!("serving-{i}"),
            "1500m",
            json!({"priorityClassName": "serving"}),
        )
        .await;
    }
    let mut nodes = std::collections::HashSet::new();
    for i in 0..3 {
        let p = c
            .wait_pod(&format!("serving-{i}"), "Running", |p| {
                p["status"]["phase"] == "Running"
            })
            .await;
        nodes.insert(p["spec"]["nodeName"].as_str().unwrap().to_string());
    }
    assert_eq!(nodes.len(), 3, "one node each: {nodes:?}");
    // Exactly the 6 batch pods on those nodes were preempted; 14 still run.
    let mut running = 0;
    for _ in 0..500 {
        running = 0;
        let mut gone = 0;
        for i in 0..20 {
            match c.get(&format!("batch-{i}")).await {
                Some(p) if p["metadata"]["deletionTimestamp"].is_null() => running += 1,
                _ => gone += 1,
            }
        }
        if gone == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(running, 14);
    for i in 0..20 {
        if c.get(&format!("batch-{i}")).await.is_none() {
            c.wait_event(&format!("batch-{i}"), "Preempted").await;
        }
    }
    sim.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_pods_wait_until_their_gates_are_removed() {
    let c = Cluster::default().await;
    c.node("n1", "4", json!({})).await;
    c.pod(
        "gated",
        "100m",
        json!({"schedulingGates": [{"name": "example.com/quota"}]}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = c.get("gated").await.unwrap();
    assert!(p["spec"]["nodeName"].is_null());
    assert_eq!(
        condition(&p, "PodScheduled").unwrap()["reason"],
        "SchedulingGated"
    );
    assert!(c.events_for("gated").is_empty(), "no attempt while gated");
    let mut p = p;
    p["spec"]["schedulingGates"] = json!([]);
    c.server
        .update(rt("", "pods"), Some("default"), "gated", None, p, &opts())
        .await
        .unwrap();
    assert_eq!(c.bound_to("gated").await, "n1");
}
