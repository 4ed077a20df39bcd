//! The node lifecycle controller in an in-process cluster with hollow
//! nodes: a node whose kubelet goes quiet becomes Unknown, is tainted
//! unreachable, and its pods are evicted after their toleration and
//! replaced elsewhere; a node that comes back is untainted and keeps its
//! pods; a partition of every node evicts nothing.

mod common;

use common::{pods, rs, rt, Cluster};
use navarch_controllers::nodelifecycle::{self, NodeLifecycleOptions, UNREACHABLE};
use navarch_sim::{Sim, SimConfig, Target};
use serde_json::Value;
use std::time::Duration;

fn options() -> NodeLifecycleOptions {
    NodeLifecycleOptions {
        grace_period: Duration::from_secs(2),
        monitor_period: Duration::from_millis(200),
        ..Default::default()
    }
}

/// The cluster with pods tolerating unreachable nodes for `toleration` s.
async fn cluster(toleration: i64) -> Cluster {
    let c = Cluster::start_configured(false, |config| {
        config.default_toleration_seconds = navarch_apiserver::DefaultTolerations {
            not_ready: toleration,
            unreachable: toleration,
        };
    })
    .await;
    nodelifecycle::spawn(c.server.clone(), options(), c.shutdown.clone());
    c
}

async fn sim(c: &Cluster, prefix: &str, nodes: usize) -> Sim {
    let target = Target::from_kubeconfig(&c.kubeconfig).unwrap();
    let mut config = SimConfig::new(nodes);
    config.prefix = prefix.into();
    // Leases renewed well within the 2 s grace period.
    config.lease_renew = Duration::from_millis(300);
    Sim::start(target, config).await.unwrap()
}

async fn node(c: &Cluster, name: &str) -> Value {
    c.server.read(rt("", "nodes"), None, name).await.unwrap().0
}

fn ready(n: &Value) -> String {
    n["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

fn has_taint(n: &Value, key: &str, effect: &str) -> bool {
    n["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["key"] == key && t["effect"] == effect)
}

/// Running, not terminating pods on `node`.
fn running_on(c: &Cluster, node: &str) -> usize {
    c.all_pods()
        .iter()
        .filter(|p| {
            p["spec"]["nodeName"] == node
                && p["status"]["phase"] == "Running"
                && p["metadata"]["deletionTimestamp"].is_null()
        })
        .count()
}

async fn wait_node(c: &Cluster, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        let n = node(c, name).await;
        if f(&n) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "node {name}: {what} not reached in 15 s: {:#}",
        node(c, name).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_tainted_and_its_pods_are_replaced_elsewhere() {
    let c = cluster(1).await;
    let a = sim(&c, "a-", 1).await;
    let created = c.create(rt("apps", "replicasets"), rs("web", 3)).await;
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    c.wait("3 pods running on a-0", |c| running_on(c, "a-0") == 3)
        .await;
    let b = sim(&c, "b-", 2).await;

    a.partition(&["a-0"]).unwrap();
    let n = wait_node(
        &c,
        "a-0",
        "Ready=Unknown with the unreachable taints",
        |n| {
            ready(n) == "Unknown"
                && has_taint(n, UNREACHABLE, "NoExecute")
                && has_taint(n, UNREACHABLE, "NoSchedule")
        },
    )
    .await;
    let cond = n["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(cond["reason"], "NodeStatusUnknown");
    assert_eq!(cond["message"], "Kubelet stopped posting node status.");

    // The 1 s toleration passes: the pods are marked and deleted, and the
    // ReplicaSet runs 3 elsewhere.
    c.wait("3 pods running on the b nodes", |c| {
        running_on(c, "b-0") + running_on(c, "b-1") == 3 && c.owned(&uid).len() == 3
    })
    .await;
    let evicted: Vec<Value> = c
        .all_pods()
        .into_iter()
        .filter(|p| p["spec"]["nodeName"] == "a-0")
        .collect();
    assert_eq!(
        evicted.len(),
        3,
        "the old pods stay Terminating: no kubelet finishes them"
    );
    for p in &evicted {
        assert!(!p["metadata"]["deletionTimestamp"].is_null());
        let conds = p["status"]["conditions"].as_array().unwrap();
        let dt = conds
            .iter()
            .find(|c| c["type"] == "DisruptionTarget")
            .expect("DisruptionTarget");
        assert_eq!(dt["reason"], "DeletionByTaintManager");
        let ready = conds.iter().find(|c| c["type"] == "Ready").unwrap();
        assert_eq!(ready["status"], "False", "marked not ready: {p:#}");
        let name = p["metadata"]["name"].as_str().unwrap();
        c.wait_event(name, "TaintManagerEviction").await;
    }
    c.wait_event("a-0", "NodeNotReady").await;
    // The scheduler keeps new pods off the tainted node.
    assert_eq!(running_on(&c, "a-0"), 0);
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_before_the_toleration_keeps_its_pods() {
    let c = cluster(300).await;
    let a = sim(&c, "a-", 2).await;
    let created = c.create(rt("apps", "replicasets"), rs("web", 4)).await;
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    c.wait("4 pods running", |c| {
        running_on(c, "a-0") + running_on(c, "a-1") == 4
    })
    .await;
    let on_a0 = running_on(&c, "a-0");
    a.partition(&["a-0"]).unwrap();
    wait_node(&c, "a-0", "tainted", |n| {
        ready(n) == "Unknown" && has_taint(n, UNREACHABLE, "NoExecute")
    })
    .await;
    a.heal(&["a-0"]).await.unwrap();
    wait_node(&c, "a-0", "Ready and untainted", |n| {
        ready(n) == "True" && n["spec"]["taints"].as_array().is_none_or(|t| t.is_empty())
    })
    .await;
    // Nothing was evicted; the pods the controller marked not ready are
    // reported ready again by the kubelet.
    assert_eq!(c.owned(&uid).len(), 4);
    assert!(c
        .all_pods()
        .iter()
        .all(|p| p["metadata"]["deletionTimestamp"].is_null()));
    c.wait("pods on a-0 ready again", |c| {
        c.all_pods()
            .iter()
            .filter(|p| p["spec"]["nodeName"] == "a-0")
            .all(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                    .is_some_and(|c| c["status"] == "True")
            })
    })
    .await;
    assert_eq!(running_on(&c, "a-0"), on_a0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_node_is_silent_nothing_is_evicted() {
    // The controller cannot tell a dead cluster from its own partition.
    let c = cluster(1).await;
    let a = sim(&c, "a-", 3).await;
    let created = c.create(rt("apps", "replicasets"), rs("web", 3)).await;
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    c.wait("3 pods running", |c| {
        (0..3)
            .map(|i| running_on(c, &format!("a-{i}")))
            .sum::<usize>()
            == 3
    })
    .await;
    a.partition(&["a-0", "a-1", "a-2"]).unwrap();
    for i in 0..3 {
        wait_node(&c, &format!("a-{i}"), "Unknown", |n| {
            ready(n) == "Unknown" && has_taint(n, UNREACHABLE, "NoSchedule")
        })
        .await;
    }
    // Well past grace + toleration: no NoExecute taint, no eviction.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in 0..3 {
        let n = node(&c, &format!("a-{i}")).await;
        assert!(!has_taint(&n, UNREACHABLE, "NoExecute"), "{n:#}");
    }
    assert_eq!(c.owned(&uid).len(), 3);
    assert!(c
        .all_pods()
        .iter()
        .all(|p| p["metadata"]["deletionTimestamp"].is_null()));
    let _ = pods();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_adds_the_unschedulable_taint() {
    let c = cluster(300).await;
    let _a = sim(&c, "a-", 1).await;
    c.server
        .patch(
            rt("", "nodes"),
            None,
            "a-0",
            None,
            navarch_api::patch::PatchType::Merge,
            serde_json::json!({"spec": {"unschedulable": true}}),
            &common::opts(),
        )
        .await
        .unwrap();
    wait_node(&c, "a-0", "unschedulable taint", |n| {
        has_taint(n, "node.kubernetes.io/unschedulable", "NoSchedule")
    })
    .await;
    c.server
        .patch(
            rt("", "nodes"),
            None,
            "a-0",
            None,
            navarch_api::patch::PatchType::Merge,
            serde_json::json!({"spec": {"unschedulable": null}}),
            &common::opts(),
        )
        .await
        .unwrap();
    wait_node(&c, "a-0", "no taint", |n| {
        !has_taint(n, "node.kubernetes.io/unschedulable", "NoSchedule")
    })
    .await;
}
