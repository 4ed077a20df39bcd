//! The pod garbage collector and leader election in an in-process
//! cluster.

mod common;

use common::{opts, pods, rt, Cluster};
use navarch_api::patch::PatchType;
use navarch_api::Subresource;
use navarch_controllers::leader::{self, ElectionConfig};
use navarch_controllers::podgc::{self, PodGcOptions};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn pod(name: &str, node: Option<&str>) -> serde_json::Value {
    let mut p = json!({"metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "pause"}], "schedulerName": "none"}});
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
    }
    p
}

fn names(c: &Cluster) -> Vec<String> {
    let mut v: Vec<String> = c
        .all_pods()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_pods_over_the_threshold_and_orphans_are_collected() {
    let c = Cluster::start_with(false).await;
    c.node("n1", "8").await;
    for i in 0..6 {
        c.create(pods(), pod(&format!("done-{i}"), Some("n1")))
            .await;
        c.server
            .patch(
                pods(),
                Some("default"),
                &format!("done-{i}"),
                Some(Subresource::Status),
                PatchType::Merge,
                json!({"status": {"phase": "Succeeded"}}),
                &opts(),
            )
            .await
            .unwrap();
        // creationTimestamp has a one-second resolution.
        if i == 1 {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
    }
    c.create(pods(), pod("live", Some("n1"))).await;
    c.create(pods(), pod("orphan", Some("gone-node"))).await;
    podgc::spawn(
        c.server.clone(),
        PodGcOptions {
            threshold: 4,
            period: Duration::from_millis(100),
            quarantine: Duration::from_millis(500),
        },
        c.shutdown.clone(),
    );
    c.wait("the two oldest terminated pods and the orphan gone", |c| {
        names(c) == ["done-2", "done-3", "done-4", "done-5", "live"]
    })
    .await;
    // Nothing more goes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(names(&c), ["done-2", "done-3", "done-4", "done-5", "live"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_a_successor_after_release() {
    let c = Cluster::start_with(false).await;
    let leading = Arc::new(AtomicUsize::new(0));
    let config = |id: &str| {
        let mut e = ElectionConfig::new("test-controller", id);
        e.retry_period = Duration::from_millis(100);
        e.lease_duration = Duration::from_secs(2);
        e.renew_deadline = Duration::from_secs(1);
        e
    };
    let start = |id: &'static str, stop: CancellationToken| {
        let leading = leading.clone();
        leader::run(c.server.clone(), config(id), stop, move |token| {
            leading.fetch_add(1, Ordering::SeqCst);
            let leading = leading.clone();
            tokio::spawn(async move {
                token.cancelled().await;
                leading.fetch_sub(1, Ordering::SeqCst);
            });
            let _ = id;
        })
    };
    let a_stop = CancellationToken::new();
    let b_stop = CancellationToken::new();
    let a = start("a", a_stop.clone());
    c.wait("a leads", |_| leading.load(Ordering::SeqCst) == 1)
        .await;
    let _b = start("b", b_stop.clone());
    let lease = |c: &Cluster| {
        c.server
            .cache
            .kind(rt("coordination.k8s.io", "leases"))
            .get(&rt("coordination.k8s.io", "leases").key(Some("kube-system"), "test-controller"))
            .map(|o| o.value())
    };
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(leading.load(Ordering::SeqCst), 1, "never two leaders");
    }
    assert_eq!(lease(&c).unwrap()["spec"]["holderIdentity"], "a");
    // a shuts down and releases; b takes over without waiting out the
    // lease duration.
    a_stop.cancel();
    a.await.unwrap();
    c.wait("b leads", |c| {
        lease(c).is_some_and(|l| l["spec"]["holderIdentity"] == "b")
            && leading.load(Ordering::SeqCst) == 1
    })
    .await;
    let l = lease(&c).unwrap();
    assert_eq!(l["spec"]["leaseTransitions"], 1);
    // a restarted with its identity while b holds the lease waits.
    let a_again = CancellationToken::new();
    let _a2 = start("a", a_again.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(lease(&c).unwrap()["spec"]["holderIdentity"], "b");
    assert_eq!(leading.load(Ordering::SeqCst), 1);
    b_stop.cancel();
    a_again.cancel();
}
