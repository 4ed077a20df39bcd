//! The replication controller against a real in-process API server
//! (memory store), with the scheduler and, where pods must run, hollow
//! nodes (`navarch_sim`) that report them Running and Ready and finish
//! their graceful deletions.

use navarch_api::registry::lookup;
use navarch_apiserver::DeleteOptions;
use navarch_controllers::informer::{Change, Informer};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::*;

fn names(pods: &[Value]) -> HashSet<String> {
    pods.iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn uid(o: &Value) -> String {
    o["metadata"]["uid"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_set_scales_up_and_down_and_replaces_deleted_pods() {
    let c = Cluster::start_with(false).await;
    let _sim = c.sim(3).await;
    let rsets = rt("apps", "replicasets");
    let o = c.create(rsets, rs("web", 0)).await;
    let id = uid(&o);
    c.wait_status(
        rsets,
        "web",
        json!({"observedGeneration": 1, "replicas": 0}),
    )
    .await;
    assert!(c.owned(&id).is_empty());

    // 0 → 5: created from the template, controlled by the RS, Running
    // and Ready on the hollow nodes.
    c.patch(rsets, "web", json!({"spec": {"replicas": 5}}))
        .await;
    c.settle(&id, 5).await;
    for p in c.owned(&id) {
        assert!(p["metadata"]["name"].as_str().unwrap().starts_with("web-"));
        assert_eq!(
            p["metadata"]["labels"],
            json!({"app": "web", "tier": "web"})
        );
        let r = &p["metadata"]["ownerReferences"][0];
        assert_eq!(r["kind"], "ReplicaSet");
        assert_eq!(r["apiVersion"], "apps/v1");
        assert_eq!(r["name"], "web");
        assert_eq!(r["blockOwnerDeletion"], true);
    }
    let o = c
        .wait_status(
            rsets,
            "web",
            json!({"observedGeneration": 2, "replicas": 5, "fullyLabeledReplicas": 5,
                "readyReplicas": 5, "availableReplicas": 5}),
        )
        .await;
    assert!(o["status"]["conditions"].is_null());
    let e = c.wait_event("web", "SuccessfulCreate").await;
    assert!(e["message"]
        .as_str()
        .unwrap()
        .starts_with("Created pod: web-"));
    assert_eq!(e["involvedObject"]["kind"], "ReplicaSet");

    // A pod deleted by hand is replaced.
    let before = names(&c.owned(&id));
    let victim = before.iter().next().unwrap().clone();
    c.server
        .delete(pods(), Some("default"), &victim, &DeleteOptions::default())
        .await
        .unwrap();
    c.wait("a replacement", |c| {
        let now = names(&c.owned(&id));
        now.len() == 5 && !now.contains(&victim)
    })
    .await;
    c.settle(&id, 5).await;
    c.wait_status(rsets, "web", json!({"replicas": 5, "readyReplicas": 5}))
        .await;

    // 5 → 2.
    c.patch(rsets, "web", json!({"spec": {"replicas": 2}}))
        .await;
    c.settle(&id, 2).await;
    c.wait_status(
        rsets,
        "web",
        json!({"observedGeneration": 3, "replicas": 2, "readyReplicas": 2, "availableReplicas": 2}),
    )
    .await;
    let e = c.wait_event("web", "SuccessfulDelete").await;
    assert!(e["message"]
        .as_str()
        .unwrap()
        .starts_with("Deleted pod: web-"));
    // The hollow nodes finish the graceful deletions.
    c.wait("deleted pods gone", |c| c.all_pods().len() == 2)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_deletes_unscheduled_then_not_ready_pods_first() {
    let c = Cluster::start_with(false).await;
    // Room for two pods of 1 cpu: the third stays unscheduled.
    c.node("n1", "2").await;
    let rsets = rt("apps", "replicasets");
    let mut r = rs("app", 3);
    r["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("1");
    let id = uid(&c.create(rsets, r).await);
    c.settle(&id, 3).await;
    c.wait("two pods bound", |c| {
        c.owned(&id)
            .iter()
            .filter(|p| p["spec"]["nodeName"].is_string())
            .count()
            == 2
    })
    .await;
    let pods = c.owned(&id);
    let unscheduled = names(
        &pods
            .iter()
            .filter(|p| p["spec"]["nodeName"].is_null())
            .cloned()
            .collect::<Vec<_>>(),
    );
    let bound: Vec<String> = pods
        .iter()
        .filter(|p| p["spec"]["nodeName"].is_string())
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    // One bound pod becomes ready; the other runs, not ready.
    c.report(&bound[0], true).await;
    c.report(&bound[1], false).await;
    c.wait_status(rsets, "app", json!({"replicas": 3, "readyReplicas": 1}))
        .await;

    c.patch(rsets, "app", json!({"spec": {"replicas": 2}}))
        .await;
    c.settle(&id, 2).await;
    let left = names(&c.owned(&id));
    assert!(
        left.is_disjoint(&unscheduled),
        "the unscheduled pod goes first: {left:?}"
    );

    c.patch(rsets, "app", json!({"spec": {"replicas": 1}}))
        .await;
    c.settle(&id, 1).await;
    let left = names(&c.owned(&id));
    assert_eq!(
        left,
        HashSet::from([bound[0].clone()]),
        "the ready pod stays"
    );
    c.wait_status(
        rsets,
        "app",
        json!({"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_adopted_and_relabelled_pods_released() {
    let c = Cluster::start_with(false).await;
    // An orphan matching the selector, and one that does not match.
    for (name, app) in [("orphan", "db"), ("other", "cache")] {
        c.create(
            pods(),
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": {"app": app}},
                "spec": {"containers": [{"name": "c", "image": "pause"}]}}),
        )
        .await;
    }
    let rsets = rt("apps", "replicasets");
    let id = uid(&c.create(rsets, rs("db", 2)).await);
    c.settle(&id, 2).await;
    let owned = names(&c.owned(&id));
    assert!(owned.contains("orphan"), "adopted: {owned:?}");
    let orphan = c.read(pods(), "orphan").await;
    let r = &orphan["metadata"]["ownerReferences"][0];
    assert_eq!(r["uid"], id.as_str());
    assert_eq!(r["controller"], true);
    assert!(c.read(pods(), "other").await["metadata"]["ownerReferences"].is_null());
    // Only one pod was created for the second replica.
    assert_eq!(c.all_pods().len(), 3);

    // Relabelled out of the selector: released, and replaced.
    c.patch(
        pods(),
        "orphan",
        json!({"metadata": {"labels": {"app": "gone"}}}),
    )
    .await;
    c.wait("released", |c| !names(&c.owned(&id)).contains("orphan"))
        .await;
    c.settle(&id, 2).await;
    c.wait("orphan released", |c| {
        c.all_pods()
            .iter()
            .find(|p| p["metadata"]["name"] == "orphan")
            .is_some_and(|p| controller_uid(p).is_none())
    })
    .await;
    // Relabelled back in: adopted again, and one pod goes.
    c.patch(
        pods(),
        "orphan",
        json!({"metadata": {"labels": {"app": "db"}}}),
    )
    .await;
    c.wait("re-adopted", |c| {
        c.all_pods()
            .iter()
            .find(|p| p["metadata"]["name"] == "orphan")
            .is_some_and(|p| controller_uid(p) == Some(id.as_str()))
    })
    .await;
    c.settle(&id, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_controller_works_the_same() {
    let c = Cluster::start_with(false).await;
    let _sim = c.sim(2).await;
    let rcs = rt("", "replicationcontrollers");
    // No selector: the template's labels.
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "legacy"},
        "spec": {"replicas": 3, "minReadySeconds": 2,
            "template": {"metadata": {"labels": {"run": "legacy"}},
                "spec": {"containers": [{"name": "c", "image": "pause"}]}}}});
    let id = uid(&c.create(rcs, rc).await);
    c.settle(&id, 3).await;
    let p = &c.owned(&id)[0];
    assert_eq!(
        p["metadata"]["ownerReferences"][0]["kind"],
        "ReplicationController"
    );
    assert_eq!(p["metadata"]["ownerReferences"][0]["apiVersion"], "v1");
    // Ready before available (minReadySeconds), then available.
    let o = c
        .wait_status(rcs, "legacy", json!({"replicas": 3, "readyReplicas": 3}))
        .await;
    assert!(
        o["status"]["availableReplicas"].as_i64().unwrap_or(0) < 3,
        "available before minReadySeconds: {:#}",
        o["status"]
    );
    c.wait_status(
        rcs,
        "legacy",
        json!({"replicas": 3, "readyReplicas": 3, "availableReplicas": 3, "observedGeneration": 1}),
    )
    .await;
    c.patch(rcs, "legacy", json!({"spec": {"replicas": 1}}))
        .await;
    c.settle(&id, 1).await;
    c.wait_status(
        rcs,
        "legacy",
        json!({"replicas": 1, "availableReplicas": 1}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expectations_prevent_creating_extra_pods() {
    let c = Cluster::start_with(false).await;
    // Every pod the controller ever creates, from an informer of our own.
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    Informer::start(c.server.cache.clone(), pods(), tx, c.shutdown.clone());
    {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                for ch in b.changes {
                    if let Change::Upsert(o) | Change::Delete(o) = ch {
                        seen.lock().unwrap().insert(uid(&o.value()));
                    }
                }
            }
        });
    }
    let rsets = rt("apps", "replicasets");
    let id = uid(&c.create(rsets, rs("burst", 50)).await);
    // A burst of watch events while the pods are created: every pod is
    // modified as soon as it appears, and the RS too.
    let mut touched = HashSet::new();
    for i in 0..400 {
        for p in c.owned(&id) {
            let name = p["metadata"]["name"].as_str().unwrap().to_string();
            if touched.insert(name.clone()) {
                // (Tolerating a pod already deleted: an extra pod removed
                // again is what the assertions below catch.)
                let _ = c
                    .server
                    .patch(
                        pods(),
                        Some("default"),
                        &name,
                        None,
                        navarch_api::patch::PatchType::Merge,
                        json!({"metadata": {"annotations": {"touched": "yes"}}}),
                        &opts(),
                    )
                    .await;
            }
        }
        if i % 20 == 0 {
            c.patch(
                rsets,
                "burst",
                json!({"metadata": {"annotations": {"i": i.to_string()}}}),
            )
            .await;
        }
        if touched.len() == 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.settle(&id, 50).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.all_pods().len(), 50);
    assert_eq!(seen.lock().unwrap().len(), 50, "pods ever created");
    c.wait_status(rsets, "burst", json!({"replicas": 50, "readyReplicas": 0}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_creates_set_replica_failure_until_they_succeed() {
    let c = Cluster::start_with(false).await;
    let rsets = rt("apps", "replicasets");
    // Pod admission refuses the template: its PriorityClass does not exist.
    let mut r = rs("prio", 2);
    r["spec"]["template"]["spec"]["priorityClassName"] = json!("missing");
    let id = uid(&c.create(rsets, r).await);
    let e = c.wait_event("prio", "FailedCreate").await;
    assert_eq!(e["type"], "Warning");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("Error creating: pods"),
        "{e:#}"
    );
    let mut cond = Value::Null;
    for _ in 0..2000 {
        let o = c.read(rsets, "prio").await;
        if let Some(x) = o["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "ReplicaFailure"))
        {
            cond = x.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(cond["status"], "True", "no ReplicaFailure condition");
    assert_eq!(cond["reason"], "FailedCreate");
    assert!(c.owned(&id).is_empty());
    // Retries back off: not one attempt per millisecond.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let count: i64 = c
        .events_for("prio")
        .iter()
        .filter(|e| e["reason"] == "FailedCreate")
        .map(|e| e["count"].as_i64().unwrap_or(1))
        .sum();
    assert!(count <= 8, "{count} failed attempts in ~0.5 s");

    // Once the PriorityClass exists, the pods are created and the
    // condition goes.
    c.server
        .create(
            lookup("scheduling.k8s.io", "v1", "priorityclasses").unwrap(),
            None,
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": "missing"}, "value": 10}),
            &opts(),
        )
        .await
        .unwrap();
    c.settle(&id, 2).await;
    for _ in 0..2000 {
        let o = c.read(rsets, "prio").await;
        if o["status"]["conditions"].is_null() && o["status"]["replicas"] == 2 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{:#}", c.read(rsets, "prio").await["status"]);
}
