//! The StatefulSet controller against a real in-process API server (memory
//! store), with the scheduler and hollow nodes (`navarch_sim`) that report
//! pods Running and Ready and finish graceful deletions. Orderings are
//! checked on the watch stream of pods, event by event.

use navarch_api::registry::lookup;
use navarch_api::ResourceType;
use navarch_apiserver::cache::{EventType, Filter, WatchItem};
use navarch_apiserver::ApiServer;
use navarch_controllers::statefulset;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::*;

fn statefulsets() -> &'static ResourceType {
    lookup("apps", "v1", "statefulsets").unwrap()
}

fn revisions() -> &'static ResourceType {
    lookup("apps", "v1", "controllerrevisions").unwrap()
}

async fn start() -> Cluster {
    let c = Cluster::start_with(false).await;
    statefulset::spawn(c.server.clone(), c.shutdown.clone());
    c
}

fn sts(name: &str, replicas: i64, spec: Value) -> Value {
    let mut s = json!({"replicas": replicas, "serviceName": "svc",
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "db:1",
                "resources": {"requests": {"cpu": "10m"}}}]}}});
    for (k, v) in spec.as_object().unwrap() {
        s[k] = v.clone();
    }
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": "default"}, "spec": s})
}

fn uid(o: &Value) -> String {
    o["metadata"]["uid"].as_str().unwrap().to_string()
}

fn name(p: &Value) -> &str {
    p["metadata"]["name"].as_str().unwrap()
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn image(p: &Value) -> &str {
    p["spec"]["containers"][0]["image"].as_str().unwrap_or("")
}

fn revision_label(p: &Value) -> &str {
    p["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap_or("")
}

/// One pod watch event, as the tests read it.
#[derive(Debug, Clone)]
struct Seen {
    ty: EventType,
    name: String,
    ready: bool,
    deleting: bool,
    image: String,
}

/// Every pod event from the watch cache, in order.
struct Stream {
    events: Arc<Mutex<Vec<Seen>>>,
}

impl Stream {
    fn start(server: &Arc<ApiServer>) -> Stream {
        let cache = server.cache.clone();
        let from = cache.revision();
        let mut rx = cache
            .kind(pods())
            .watch(Filter::default(), Some(from), false)
            .unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let e = events.clone();
        tokio::spawn(async move {
            while let Some(item) = rx.recv().await {
                if let WatchItem::Event(ty, o) = item {
                    let v = o.value();
                    e.lock().unwrap().push(Seen {
                        ty,
                        name: o.name.clone(),
                        ready: ready(&v),
                        deleting: v["metadata"]["deletionTimestamp"].is_string(),
                        image: image(&v).to_string(),
                    });
                }
            }
        });
        Stream { events }
    }

    fn all(&self) -> Vec<Seen> {
        self.events.lock().unwrap().clone()
    }

    /// Index of the first event matching `f`.
    fn first(&self, f: impl Fn(&Seen) -> bool) -> Option<usize> {
        self.all().iter().position(f)
    }
}

fn added(pod: &str) -> impl Fn(&Seen) -> bool + '_ {
    move |s| s.name == pod && matches!(s.ty, EventType::Added)
}

fn became_ready(pod: &str) -> impl Fn(&Seen) -> bool + '_ {
    move |s| s.name == pod && s.ready && !s.deleting
}

fn deleting(pod: &str) -> impl Fn(&Seen) -> bool + '_ {
    move |s| s.name == pod && (s.deleting || matches!(s.ty, EventType::Deleted))
}

fn deleted(pod: &str) -> impl Fn(&Seen) -> bool + '_ {
    move |s| s.name == pod && matches!(s.ty, EventType::Deleted)
}

impl Cluster {
    /// Active pods of the StatefulSet `uid`, by name.
    fn members(&self, uid: &str) -> Vec<Value> {
        let mut v = self.owned(uid);
        v.sort_by_key(|p| name(p).to_string());
        v
    }

    async fn wait_members(&self, uid: &str, want: &[&str], image_: &str) -> Vec<Value> {
        let mut last = Vec::new();
        for _ in 0..2000 {
            let m = self.members(uid);
            let names: Vec<&str> = m.iter().map(name).collect();
            if names == want && m.iter().all(|p| ready(p) && image(p) == image_) {
                return m;
            }
            last = names.iter().map(|s| s.to_string()).collect();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("pods not {want:?} ready at {image_}: {last:?}");
    }

    async fn scale(&self, sts_name: &str, replicas: i64) {
        self.patch(
            statefulsets(),
            sts_name,
            json!({"spec": {"replicas": replicas}}),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_ready_creates_in_order_and_scales_down_in_reverse() {
    let c = start().await;
    let _sim = c.sim(2).await;
    let stream = Stream::start(&c.server);
    let s = c.create(statefulsets(), sts("web", 3, json!({}))).await;
    let id = uid(&s);
    let members = c
        .wait_members(&id, &["web-0", "web-1", "web-2"], "db:1")
        .await;

    // Each pod was created only after the one before it was Ready.
    for (prev, next) in [("web-0", "web-1"), ("web-1", "web-2")] {
        let r = stream.first(became_ready(prev)).unwrap();
        let a = stream.first(added(next)).unwrap();
        assert!(
            r < a,
            "{next} created (event {a}) before {prev} was ready (event {r})"
        );
    }
    assert!(stream.first(added("web-0")).unwrap() < stream.first(added("web-1")).unwrap());

    // Identity.
    for (i, p) in members.iter().enumerate() {
        let l = &p["metadata"]["labels"];
        assert_eq!(l["statefulset.kubernetes.io/pod-name"], name(p));
        assert_eq!(l["apps.kubernetes.io/pod-index"], i.to_string());
        assert_eq!(p["spec"]["hostname"], name(p));
        assert_eq!(p["spec"]["subdomain"], "svc");
    }
    let st = c
        .wait_status(
            statefulsets(),
            "web",
            json!({"replicas": 3, "readyReplicas": 3, "availableReplicas": 3,
                "currentReplicas": 3, "updatedReplicas": 3, "observedGeneration": 1}),
        )
        .await;
    let rev = st["status"]["updateRevision"].as_str().unwrap().to_string();
    assert_eq!(st["status"]["currentRevision"], rev.as_str());
    assert!(members.iter().all(|p| revision_label(p) == rev));
    let revs: Vec<Value> = c
        .server
        .cache
        .kind(revisions())
        .list(&Filter::default(), 0)
        .items
        .iter()
        .map(|o| o.value())
        .filter(|r| controller_uid(r) == Some(id.as_str()))
        .collect();
    assert_eq!(revs.len(), 1);
    assert_eq!(revs[0]["metadata"]["name"], rev.as_str());
    assert_eq!(revs[0]["revision"], 1);
    let events: Vec<String> = c
        .events_for("web")
        .iter()
        .filter(|e| e["reason"] == "SuccessfulCreate")
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        events.contains(&"create Pod web-0 in StatefulSet web successful".to_string()),
        "{events:?}"
    );

    // Scale down to 1: web-2 goes first, and web-1 only once web-2 is gone.
    c.scale("web", 1).await;
    c.wait_members(&id, &["web-0"], "db:1").await;
    c.wait("both deletions seen", |_| {
        stream.first(deleted("web-1")).is_some() && stream.first(deleted("web-2")).is_some()
    })
    .await;
    let gone2 = stream.first(deleted("web-2")).unwrap();
    let start1 = stream.first(deleting("web-1")).unwrap();
    assert!(
        gone2 < start1,
        "web-1 deleted (event {start1}) before web-2 was gone (event {gone2})"
    );
    let e = c.wait_event("web", "SuccessfulDelete").await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .ends_with("in StatefulSet web successful"),
        "{e}"
    );
    c.wait_status(
        statefulsets(),
        "web",
        json!({"replicas": 1, "readyReplicas": 1, "currentReplicas": 1, "observedGeneration": 2}),
    )
    .await;

    // A deleted pod comes back under its name.
    let web0 = c.members(&id)[0].clone();
    c.server
        .delete(pods(), Some("default"), "web-0", &Default::default())
        .await
        .unwrap();
    c.wait("web-0 recreated", |c| {
        c.members(&id)
            .first()
            .is_some_and(|p| name(p) == "web-0" && uid(p) != uid(&web0) && ready(p))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_ready_waits_for_readiness_on_plain_nodes() {
    // No kubelet: pods stay Pending until the test reports them.
    let c = start().await;
    c.node("n1", "8").await;
    let s = c.create(statefulsets(), sts("db", 2, json!({}))).await;
    let id = uid(&s);
    c.wait("db-0 exists and is bound", |c| {
        c.members(&id)
            .iter()
            .any(|p| name(p) == "db-0" && p["spec"]["nodeName"] == "n1")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.members(&id).len(), 1, "db-1 must wait for db-0");
    c.report("db-0", false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        c.members(&id).len(),
        1,
        "Running but not Ready is not enough"
    );
    c.report("db-0", true).await;
    c.wait("db-1 created once db-0 is ready", |c| {
        c.members(&id).len() == 2
    })
    .await;
    c.wait_status(
        statefulsets(),
        "db",
        json!({"replicas": 2, "readyReplicas": 1, "currentReplicas": 2}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_creates_and_deletes_all_at_once() {
    let c = start().await;
    c.node("n1", "8").await;
    let s = c
        .create(
            statefulsets(),
            sts("par", 3, json!({"podManagementPolicy": "Parallel"})),
        )
        .await;
    let id = uid(&s);
    // None is ever ready, yet all three are created.
    c.wait("three pods", |c| c.members(&id).len() == 3).await;
    let names: Vec<String> = c.members(&id).iter().map(|p| name(p).to_string()).collect();
    assert_eq!(names, ["par-0", "par-1", "par-2"]);
    c.wait_status(
        statefulsets(),
        "par",
        json!({"replicas": 3, "readyReplicas": 0, "currentReplicas": 3}),
    )
    .await;
    // Scale to 0: every pod is marked for deletion without waiting (no
    // kubelet finishes any of them).
    c.scale("par", 0).await;
    c.wait("all three being deleted", |c| {
        let all = c.all_pods();
        let deleting = all
            .iter()
            .filter(|p| controller_uid(p) == Some(id.as_str()))
            .filter(|p| p["metadata"]["deletionTimestamp"].is_string())
            .count();
        deleting == 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_goes_in_reverse_ordinal_order_within_partition() {
    let c = start().await;
    let _sim = c.sim(2).await;
    let s = c
        .create(
            statefulsets(),
            sts(
                "ru",
                3,
                json!({"updateStrategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"partition": 1}}}),
            ),
        )
        .await;
    let id = uid(&s);
    c.wait_members(&id, &["ru-0", "ru-1", "ru-2"], "db:1").await;
    let st = c
        .wait_status(statefulsets(), "ru", json!({"readyReplicas": 3}))
        .await;
    let old_rev = st["status"]["currentRevision"]
        .as_str()
        .unwrap()
        .to_string();
    let stream = Stream::start(&c.server);
    c.patch(
        statefulsets(),
        "ru",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "db:2",
            "resources": {"requests": {"cpu": "10m"}}}]}}}}),
    )
    .await;
    // Ordinals at or above the partition are updated, highest first.
    c.wait("ru-1 and ru-2 updated and ready", |c| {
        let m = c.members(&id);
        m.len() == 3
            && m.iter()
                .all(|p| ready(p) && (image(p) == "db:2") == (name(p) != "ru-0"))
    })
    .await;
    let st = c
        .wait_status(
            statefulsets(),
            "ru",
            json!({"updatedReplicas": 2, "currentReplicas": 1, "readyReplicas": 3,
                "observedGeneration": 2}),
        )
        .await;
    let new_rev = st["status"]["updateRevision"].as_str().unwrap().to_string();
    assert_ne!(new_rev, old_rev);
    assert_eq!(st["status"]["currentRevision"], old_rev.as_str());
    // ru-2 was replaced and ready before ru-1 was touched; ru-0 never.
    let ready2 = stream
        .first(|s| s.name == "ru-2" && s.ready && s.image == "db:2")
        .unwrap();
    let del1 = stream.first(deleting("ru-1")).unwrap();
    assert!(
        stream.first(deleting("ru-2")).unwrap() < ready2 && ready2 < del1,
        "{:#?}",
        stream.all()
    );
    assert!(stream.first(deleting("ru-0")).is_none());
    let m = c.members(&id);
    assert_eq!(revision_label(&m[0]), old_rev);
    assert_eq!(revision_label(&m[2]), new_rev);

    // Partition 0: ru-0 too, then the current revision is the update one.
    c.patch(
        statefulsets(),
        "ru",
        json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}}),
    )
    .await;
    c.wait_members(&id, &["ru-0", "ru-1", "ru-2"], "db:2").await;
    let st = c
        .wait_status(
            statefulsets(),
            "ru",
            json!({"updatedReplicas": 3, "currentReplicas": 3, "readyReplicas": 3,
                "observedGeneration": 3}),
        )
        .await;
    assert_eq!(st["status"]["currentRevision"], new_rev.as_str());
    assert_eq!(st["status"]["updateRevision"], new_rev.as_str());

    // kubectl reads the status as written.
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&c.kubeconfig)
        .args(["rollout", "status", "sts/ru", "--timeout=20s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_unavailable_and_on_delete_and_failed_pods() {
    let c = start().await;
    let _sim = c.sim(2).await;
    // maxUnavailable 2 with Parallel: two pods are replaced at a time.
    let s = c
        .create(
            statefulsets(),
            sts(
                "mu",
                4,
                json!({"podManagementPolicy": "Parallel", "updateStrategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"partition": 0, "maxUnavailable": 2}}}),
            ),
        )
        .await;
    let id = uid(&s);
    c.wait_members(&id, &["mu-0", "mu-1", "mu-2", "mu-3"], "db:1")
        .await;
    let stream = Stream::start(&c.server);
    c.patch(
        statefulsets(),
        "mu",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "db:2",
            "resources": {"requests": {"cpu": "10m"}}}]}}}}),
    )
    .await;
    c.wait_members(&id, &["mu-0", "mu-1", "mu-2", "mu-3"], "db:2")
        .await;
    // mu-3 and mu-2 went together, before mu-1 and mu-0.
    let d3 = stream.first(deleting("mu-3")).unwrap();
    let d2 = stream.first(deleting("mu-2")).unwrap();
    let r3 = stream
        .first(|s| s.name == "mu-3" && s.ready && s.image == "db:2")
        .unwrap();
    let d1 = stream.first(deleting("mu-1")).unwrap();
    assert!(d3 < r3 && d2 < r3, "{:#?}", stream.all());
    assert!(d2 < d1 && d3 < d1, "{:#?}", stream.all());

    // OnDelete: a template change touches nothing until a pod is deleted.
    let s = c
        .create(
            statefulsets(),
            sts("od", 2, json!({"updateStrategy": {"type": "OnDelete"}})),
        )
        .await;
    let od = uid(&s);
    c.wait_members(&od, &["od-0", "od-1"], "db:1").await;
    c.patch(
        statefulsets(),
        "od",
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "db:2",
            "resources": {"requests": {"cpu": "10m"}}}]}}}}),
    )
    .await;
    c.wait_status(
        statefulsets(),
        "od",
        json!({"observedGeneration": 2, "updatedReplicas": 0, "readyReplicas": 2}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(c.members(&od).iter().all(|p| image(p) == "db:1"));
    c.server
        .delete(pods(), Some("default"), "od-1", &Default::default())
        .await
        .unwrap();
    c.wait("od-1 at the new template", |c| {
        c.members(&od)
            .iter()
            .any(|p| name(p) == "od-1" && image(p) == "db:2" && ready(p))
    })
    .await;
    c.wait_status(statefulsets(), "od", json!({"updatedReplicas": 1}))
        .await;

    // A Failed pod is deleted and recreated.
    let before = c.members(&od)[0].clone();
    c.server
        .patch(
            pods(),
            Some("default"),
            "od-0",
            Some(navarch_api::Subresource::Status),
            navarch_api::patch::PatchType::Merge,
            json!({"status": {"phase": "Failed"}}),
            &opts(),
        )
        .await
        .unwrap();
    let e = c.wait_event("od", "RecreatingFailedPod").await;
    assert_eq!(
        e["message"],
        "StatefulSet default/od is recreating failed Pod od-0"
    );
    c.wait("od-0 recreated", |c| {
        c.members(&od)
            .iter()
            .any(|p| name(p) == "od-0" && uid(p) != uid(&before) && ready(p))
    })
    .await;
}
