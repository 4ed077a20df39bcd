//! The DaemonSet controller against a real in-process API server (memory
//! store), with the scheduler and hollow nodes (`navarch_sim`) that carry
//! labels and taints and report pods Running and Ready.

use navarch_api::registry::lookup;
use navarch_api::ResourceType;
use navarch_apiserver::cache::Filter;
use navarch_apiserver::ApiServer;
use navarch_controllers::daemonset;
use navarch_sim::{NodeTemplate, Sim, SimConfig, Taint, Target};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::*;

fn daemonsets() -> &'static ResourceType {
    lookup("apps", "v1", "daemonsets").unwrap()
}

fn revisions() -> &'static ResourceType {
    lookup("apps", "v1", "controllerrevisions").unwrap()
}

fn nodes() -> &'static ResourceType {
    lookup("", "v1", "nodes").unwrap()
}

async fn start() -> Cluster {
    let c = Cluster::start_with(false).await;
    daemonset::spawn(c.server.clone(), c.shutdown.clone());
    c
}

/// Hollow nodes `<prefix><i>` with these labels and taints.
async fn sim(c: &Cluster, prefix: &str, n: usize, labels: &[(&str, &str)], taints: &[&str]) -> Sim {
    let mut config = SimConfig::new(n);
    config.prefix = prefix.into();
    config.delete_on_stop = true;
    config.template = NodeTemplate {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        taints: taints.iter().map(|t| Taint::parse(t).unwrap()).collect(),
        ..NodeTemplate::default()
    };
    Sim::start(Target::from_kubeconfig(&c.kubeconfig).unwrap(), config)
        .await
        .unwrap()
}

fn ds(name: &str, spec: Value) -> Value {
    let mut spec_full = json!({
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "agent:1",
                "resources": {"requests": {"cpu": "10m"}}}]}}});
    merge(&mut spec_full, spec);
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec_full})
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn cached(server: &ApiServer, rt: &'static ResourceType) -> Vec<Value> {
    server
        .cache
        .kind(rt)
        .list(&Filter::default(), 0)
        .items
        .iter()
        .map(|o| o.value())
        .collect()
}

fn uid(o: &Value) -> String {
    o["metadata"]["uid"].as_str().unwrap().to_string()
}

fn node_of(p: &Value) -> String {
    p["spec"]["nodeName"].as_str().unwrap_or("").to_string()
}

fn ready(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn image(p: &Value) -> &str {
    p["spec"]["containers"][0]["image"].as_str().unwrap_or("")
}

/// Active pods of `uid` by node (bound ones only).
fn by_node(c: &Cluster, uid: &str) -> BTreeMap<String, Vec<Value>> {
    let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in c.owned(uid) {
        m.entry(node_of(&p)).or_default().push(p);
    }
    m
}

/// Revisions controlled by `uid`, lowest first.
fn revisions_of(c: &Cluster, uid: &str) -> Vec<Value> {
    let mut v: Vec<Value> = cached(&c.server, revisions())
        .into_iter()
        .filter(|r| controller_uid(r) == Some(uid))
        .collect();
    v.sort_by_key(|r| r["revision"].as_i64().unwrap());
    v
}

impl Cluster {
    /// Waits until every active pod of `uid` is bound and ready, one on each
    /// of `want` (and only there), with `image`.
    async fn daemon_pods_on(&self, uid: &str, want: &[&str], image_: &str) {
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        let mut last = BTreeMap::new();
        for _ in 0..2000 {
            let m = by_node(self, uid);
            let ok = m.keys().cloned().collect::<Vec<_>>() == want
                && m.values()
                    .all(|ps| ps.len() == 1 && ready(&ps[0]) && image(&ps[0]) == image_);
            if ok {
                return;
            }
            last = m;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let got: Vec<(String, usize)> = last.iter().map(|(k, v)| (k.clone(), v.len())).collect();
        panic!("daemon pods not on {want:?} with {image_}: {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pod_per_fitting_node_by_selector_and_taints() {
    let c = start().await;
    let _plain = sim(&c, "plain-", 2, &[], &[]).await;
    let _ssd = sim(&c, "ssd-", 2, &[("disk", "ssd")], &[]).await;
    let _tainted = sim(&c, "tainted-", 1, &[], &["dedicated=infra:NoSchedule"]).await;
    let all = c.create(daemonsets(), ds("all", json!({}))).await;
    let ssd = c
        .create(
            daemonsets(),
            ds(
                "ssd",
                json!({"template": {"spec": {"nodeSelector": {"disk": "ssd"}}}}),
            ),
        )
        .await;
    let tolerant = c
        .create(
            daemonsets(),
            ds(
                "tolerant",
                json!({"template": {"spec": {"tolerations": [
                    {"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}]}}}),
            ),
        )
        .await;
    let untainted = ["plain-0", "plain-1", "ssd-0", "ssd-1"];
    c.daemon_pods_on(&uid(&all), &untainted, "agent:1").await;
    c.daemon_pods_on(&uid(&ssd), &["ssd-0", "ssd-1"], "agent:1")
        .await;
    c.daemon_pods_on(
        &uid(&tolerant),
        &["plain-0", "plain-1", "ssd-0", "ssd-1", "tainted-0"],
        "agent:1",
    )
    .await;
    let st = c
        .wait_status(
            daemonsets(),
            "all",
            json!({"desiredNumberScheduled": 4, "currentNumberScheduled": 4,
                "numberReady": 4, "numberAvailable": 4, "updatedNumberScheduled": 4,
                "numberMisscheduled": 0, "numberUnavailable": 0, "observedGeneration": 1}),
        )
        .await;
    assert_eq!(st["status"]["observedGeneration"], 1);
    c.wait_status(
        daemonsets(),
        "ssd",
        json!({"desiredNumberScheduled": 2, "numberAvailable": 2}),
    )
    .await;

    // The revision and what each pod carries.
    let revs = revisions_of(&c, &uid(&all));
    assert_eq!(revs.len(), 1, "{revs:#?}");
    let hash = revs[0]["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(revs[0]["metadata"]["name"], format!("all-{hash}"));
    assert_eq!(revs[0]["revision"], 1);
    assert_eq!(revs[0]["metadata"]["labels"]["app"], "all");
    assert_eq!(revs[0]["data"]["spec"]["template"]["$patch"], "replace");
    for p in c.owned(&uid(&all)) {
        let l = &p["metadata"]["labels"];
        assert_eq!(l["controller-revision-hash"], hash.as_str());
        assert_eq!(l["pod-template-generation"], "1");
        assert_eq!(
            p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"],
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In",
                "values": [node_of(&p)]}]}])
        );
        let keys: Vec<&str> = p["spec"]["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["key"].as_str().unwrap())
            .collect();
        for k in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
            "node.kubernetes.io/disk-pressure",
            "node.kubernetes.io/memory-pressure",
            "node.kubernetes.io/pid-pressure",
            "node.kubernetes.io/unschedulable",
        ] {
            assert!(keys.contains(&k), "{k} missing: {keys:?}");
        }
        assert!(!keys.contains(&"node.kubernetes.io/network-unavailable"));
        assert_eq!(p["metadata"]["generateName"], "all-");
    }
    let e = c.wait_event("all", "SuccessfulCreate").await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("Created pod: all-"),
        "{e}"
    );

    // A cordoned node keeps its daemon pods, and gets them (the
    // unschedulable toleration).
    c.server
        .patch(
            nodes(),
            None,
            "plain-0",
            None,
            navarch_api::patch::PatchType::Merge,
            json!({"spec": {"unschedulable": true}}),
            &opts(),
        )
        .await
        .unwrap();
    let victim = by_node(&c, &uid(&all))["plain-0"][0].clone();
    c.server
        .delete(
            pods(),
            Some("default"),
            victim["metadata"]["name"].as_str().unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
    c.wait("a new daemon pod on the cordoned node", |c| {
        by_node(c, &uid(&all))
            .get("plain-0")
            .is_some_and(|ps| ps.len() == 1 && uid(&ps[0]) != uid(&victim) && ready(&ps[0]))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_nodes_added_removed_and_relabelled() {
    let c = start().await;
    let _a = sim(&c, "a-", 2, &[("role", "worker")], &[]).await;
    let d = c
        .create(
            daemonsets(),
            ds(
                "agent",
                json!({"template": {"spec": {"nodeSelector": {"role": "worker"}}}}),
            ),
        )
        .await;
    let id = uid(&d);
    c.daemon_pods_on(&id, &["a-0", "a-1"], "agent:1").await;

    // Added.
    let b = sim(&c, "b-", 2, &[("role", "worker")], &[]).await;
    c.daemon_pods_on(&id, &["a-0", "a-1", "b-0", "b-1"], "agent:1")
        .await;
    c.wait_status(
        daemonsets(),
        "agent",
        json!({"desiredNumberScheduled": 4, "numberAvailable": 4}),
    )
    .await;

    // Relabelled away: its pod goes; back: a new one.
    let relabel = |role: &'static str| {
        let server = c.server.clone();
        async move {
            server
                .patch(
                    nodes(),
                    None,
                    "a-0",
                    None,
                    navarch_api::patch::PatchType::Merge,
                    json!({"metadata": {"labels": {"role": role}}}),
                    &opts(),
                )
                .await
                .unwrap();
        }
    };
    relabel("none").await;
    c.daemon_pods_on(&id, &["a-1", "b-0", "b-1"], "agent:1")
        .await;
    let e = c.wait_event("agent", "SuccessfulDelete").await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("Deleted pod: agent-"),
        "{e}"
    );
    c.wait_status(
        daemonsets(),
        "agent",
        json!({"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberMisscheduled": 0}),
    )
    .await;
    relabel("worker").await;
    c.daemon_pods_on(&id, &["a-0", "a-1", "b-0", "b-1"], "agent:1")
        .await;

    // Removed: they no longer count, and nothing is created for them.
    b.stop().await.unwrap();
    c.wait("nodes b-* gone", |c| {
        !cached(&c.server, nodes())
            .iter()
            .any(|n| n["metadata"]["name"].as_str().unwrap().starts_with("b-"))
    })
    .await;
    c.wait_status(
        daemonsets(),
        "agent",
        json!({"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberAvailable": 2,
            "numberUnavailable": 0}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = by_node(&c, &id);
    assert_eq!(m["a-0"].len(), 1);
    assert_eq!(m["a-1"].len(), 1);
    assert!(
        c.owned(&id).iter().all(|p| !node_of(p).is_empty()),
        "no pod waits for a node that is gone"
    );
}

/// Samples the daemon pods while a rollout runs: nodes without an
/// available (ready, not deleting) pod, at most.
struct Sampler {
    stop: Arc<AtomicBool>,
    worst: Arc<Mutex<(usize, usize)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(server: Arc<ApiServer>, uid: String, nodes: Vec<String>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let worst = Arc::new(Mutex::new((0, 0)));
        let (s, w) = (stop.clone(), worst.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let mut up: HashMap<String, bool> = HashMap::new();
                for p in cached(&server, pods()) {
                    if controller_uid(&p) == Some(uid.as_str()) && ready(&p) {
                        up.insert(node_of(&p), true);
                    }
                }
                let down = nodes.iter().filter(|n| !up.contains_key(*n)).count();
                {
                    let mut w = w.lock().unwrap();
                    w.0 = w.0.max(down);
                    w.1 += 1;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        Sampler { stop, worst, task }
    }

    /// (most nodes down at once, samples)
    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        *self.worst.lock().unwrap()
    }
}

fn set_image(image: &str) -> Value {
    json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image,
        "resources": {"requests": {"cpu": "10m"}}}]}}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_replaces_pods_within_max_unavailable_and_rolls_back() {
    let c = start().await;
    let s = sim(&c, "n-", 5, &[], &[]).await;
    let names = s.node_names();
    let d = c
        .create(
            daemonsets(),
            ds(
                "roll",
                json!({"updateStrategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 2}}}),
            ),
        )
        .await;
    let id = uid(&d);
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    c.daemon_pods_on(&id, &all, "agent:1").await;
    let first = revisions_of(&c, &id);
    assert_eq!(first.len(), 1);
    let first_hash = first[0]["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap()
        .to_string();

    let sampler = Sampler::start(c.server.clone(), id.clone(), names.clone());
    c.patch(daemonsets(), "roll", set_image("agent:2")).await;
    c.daemon_pods_on(&id, &all, "agent:2").await;
    let (worst, samples) = sampler.finish().await;
    assert!(samples > 10, "{samples} samples");
    assert!(
        worst <= 2,
        "{worst} nodes without a ready daemon pod at once"
    );
    assert!(worst >= 1, "the rollout was seen");
    let st = c
        .wait_status(
            daemonsets(),
            "roll",
            json!({"updatedNumberScheduled": 5, "numberAvailable": 5, "observedGeneration": 2}),
        )
        .await;
    assert_eq!(st["status"]["desiredNumberScheduled"], 5);
    let revs = revisions_of(&c, &id);
    assert_eq!(revs.len(), 2);
    assert_eq!(revs[1]["revision"], 2);
    let second_hash = revs[1]["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap()
        .to_string();
    for p in c.owned(&id) {
        assert_eq!(
            p["metadata"]["labels"]["controller-revision-hash"],
            second_hash.as_str()
        );
        assert_eq!(p["metadata"]["labels"]["pod-template-generation"], "2");
    }

    // kubectl reads the status and the history as written.
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&c.kubeconfig)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let out = kubectl(&["rollout", "status", "ds/roll", "--timeout=20s"]);
    assert!(
        out.contains("daemon set \"roll\" successfully rolled out"),
        "{out}"
    );

    // Back to the first template (what `kubectl rollout undo` writes):
    // its revision is renumbered, no third one appears.
    c.patch(daemonsets(), "roll", set_image("agent:1")).await;
    c.daemon_pods_on(&id, &all, "agent:1").await;
    c.wait("revision 1 renumbered to 3", |c| {
        let revs = revisions_of(c, &id);
        revs.len() == 2
            && revs[1]["metadata"]["labels"]["controller-revision-hash"] == first_hash.as_str()
            && revs[1]["revision"] == 3
    })
    .await;
    for p in c.owned(&id) {
        assert_eq!(
            p["metadata"]["labels"]["controller-revision-hash"],
            first_hash.as_str()
        );
    }
    let history = kubectl(&["rollout", "history", "ds/roll"]);
    let numbers: Vec<&str> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(numbers, ["2", "3"], "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_delete_waits_for_deletions_and_failed_pods_are_recreated() {
    let c = start().await;
    let _s = sim(&c, "n-", 2, &[], &[]).await;
    let d = c
        .create(
            daemonsets(),
            ds("od", json!({"updateStrategy": {"type": "OnDelete"}})),
        )
        .await;
    let id = uid(&d);
    c.daemon_pods_on(&id, &["n-0", "n-1"], "agent:1").await;
    c.patch(daemonsets(), "od", set_image("agent:2")).await;
    c.wait_status(
        daemonsets(),
        "od",
        json!({"observedGeneration": 2, "updatedNumberScheduled": 0, "numberAvailable": 2}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(c.owned(&id).iter().all(|p| image(p) == "agent:1"));
    // Deleted: replaced at the new template.
    let old = by_node(&c, &id)["n-0"][0].clone();
    c.server
        .delete(
            pods(),
            Some("default"),
            old["metadata"]["name"].as_str().unwrap(),
            &Default::default(),
        )
        .await
        .unwrap();
    c.wait("n-0 updated", |c| {
        by_node(c, &id)
            .get("n-0")
            .is_some_and(|ps| ps.len() == 1 && image(&ps[0]) == "agent:2" && ready(&ps[0]))
    })
    .await;
    c.wait_status(daemonsets(), "od", json!({"updatedNumberScheduled": 1}))
        .await;

    // A Failed daemon pod is deleted (FailedDaemonPod) and replaced.
    let failing = by_node(&c, &id)["n-1"][0].clone();
    c.server
        .patch(
            pods(),
            Some("default"),
            failing["metadata"]["name"].as_str().unwrap(),
            Some(navarch_api::Subresource::Status),
            navarch_api::patch::PatchType::Merge,
            json!({"status": {"phase": "Failed"}}),
            &opts(),
        )
        .await
        .unwrap();
    let e = c.wait_event("od", "FailedDaemonPod").await;
    assert_eq!(e["type"], "Warning");
    assert!(
        e["message"].as_str().unwrap().starts_with(&format!(
            "Found failed daemon pod default/{} on node n-1, will try to kill it",
            failing["metadata"]["name"].as_str().unwrap()
        )),
        "{e}"
    );
    c.wait("n-1 has a new running pod", |c| {
        by_node(c, &id)
            .get("n-1")
            .is_some_and(|ps| ps.len() == 1 && uid(&ps[0]) != uid(&failing) && ready(&ps[0]))
    })
    .await;
    // OnDelete: the replacement is at the current template.
    assert_eq!(image(&by_node(&c, &id)["n-1"][0]), "agent:2");
}
