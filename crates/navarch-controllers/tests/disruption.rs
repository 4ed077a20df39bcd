//! PodDisruptionBudgets end to end in one process: the disruption
//! controller's status on pods of a ReplicaSet (hollow nodes, or a plain
//! Node whose pods the test reports Ready itself), and the eviction
//! subresource spending it.

use navarch_api::ApiError;
use navarch_apiserver::DeleteOptions;
use navarch_controllers::disruption;
use navarch_controllers::informer::{Change, Informer};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::*;

fn pdbs() -> &'static navarch_api::ResourceType {
    rt("policy", "poddisruptionbudgets")
}

fn name(o: &Value) -> String {
    o["metadata"]["name"].as_str().unwrap().to_string()
}

fn uid(o: &Value) -> String {
    o["metadata"]["uid"].as_str().unwrap().to_string()
}

fn pdb(name: &str, app: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["selector"] = json!({"matchLabels": {"app": app}});
    json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

async fn start(sim: usize) -> (Cluster, Option<navarch_sim::Sim>) {
    let c = Cluster::start_with(false).await;
    disruption::spawn_with(
        c.server.clone(),
        disruption::Options {
            deletion_timeout: Duration::from_secs(3),
            stale_pod_disruption_timeout: Duration::from_secs(3),
        },
        c.shutdown.clone(),
    );
    let s = if sim > 0 {
        Some(c.sim(sim).await)
    } else {
        None
    };
    (c, s)
}

async fn evict(
    c: &Cluster,
    pod: &str,
    delete_options: Value,
    dry_run: bool,
) -> Result<Value, ApiError> {
    let ev = json!({"apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": pod, "namespace": "default"}, "deleteOptions": delete_options});
    c.server.evict("default", pod, &ev, dry_run).await
}

/// The pod as stored (not the watch cache, which may lag a write).
async fn pod(c: &Cluster, name: &str) -> Option<Value> {
    c.server
        .read(pods(), Some("default"), name)
        .await
        .ok()
        .map(|r| r.0)
}

async fn terminating(c: &Cluster, name: &str) -> bool {
    pod(c, name)
        .await
        .is_none_or(|p| !p["metadata"]["deletionTimestamp"].is_null())
}

fn condition<'a>(o: &'a Value, ty: &str) -> Option<&'a Value> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

/// A bare pod (no controller) labelled `app`, bound to `node`.
fn bare_pod(name: &str, app: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "pause"}]}})
}

/// Every version of every budget, from an informer of our own.
fn record_budgets(c: &Cluster) -> Arc<Mutex<Vec<Value>>> {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    Informer::start(c.server.cache.clone(), pdbs(), tx, c.shutdown.clone());
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            for ch in b.changes {
                if let Change::Upsert(o) = ch {
                    s.lock().unwrap().push(o.value());
                }
            }
        }
    });
    seen
}

/// `n` pods of ReplicaSet `app` bound to the plain node `n1` and reported
/// Running and Ready; returns the ReplicaSet's uid and the pods' names.
async fn ready_replica_set(c: &Cluster, app: &str, n: i64) -> (String, Vec<String>) {
    let id = uid(&c.create(rt("apps", "replicasets"), rs(app, n)).await);
    c.wait(&format!("{n} bound pods"), |c| {
        let owned = c.owned(&id);
        owned.len() == n as usize && owned.iter().all(|p| p["spec"]["nodeName"] == "n1")
    })
    .await;
    let mut names: Vec<String> = c.owned(&id).iter().map(name).collect();
    names.sort();
    for p in &names {
        c.report(p, true).await;
    }
    (id, names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_for_min_available_max_unavailable_and_percentages_on_hollow_nodes() {
    let (c, _sim) = start(2).await;
    let rsets = rt("apps", "replicasets");
    let id = uid(&c.create(rsets, rs("web", 4)).await);
    c.settle(&id, 4).await;
    c.wait_status(rsets, "web", json!({"readyReplicas": 4}))
        .await;

    c.create(pdbs(), pdb("min-int", "web", json!({"minAvailable": 3})))
        .await;
    c.create(
        pdbs(),
        pdb("max-pct", "web", json!({"maxUnavailable": "50%"})),
    )
    .await;
    c.create(
        pdbs(),
        pdb("min-pct", "web", json!({"minAvailable": "30%"})),
    )
    .await;
    c.create(pdbs(), pdb("max-int", "web", json!({"maxUnavailable": 1})))
        .await;
    let o = c
        .wait_status(
            pdbs(),
            "min-int",
            json!({"expectedPods": 4, "currentHealthy": 4, "desiredHealthy": 3,
                "disruptionsAllowed": 1, "observedGeneration": 1}),
        )
        .await;
    let cond = condition(&o, "DisruptionAllowed").expect("condition");
    assert_eq!(cond["status"], "True");
    assert_eq!(cond["reason"], "SufficientPods");
    assert!(o["status"]["disruptedPods"].is_null());
    // 50 % of 4, rounded up: 2 may be unavailable.
    c.wait_status(
        pdbs(),
        "max-pct",
        json!({"expectedPods": 4, "currentHealthy": 4, "desiredHealthy": 2,
            "disruptionsAllowed": 2, "observedGeneration": 1}),
    )
    .await;
    // 30 % of 4 = 1.2, rounded up: 2 must stay.
    c.wait_status(
        pdbs(),
        "min-pct",
        json!({"expectedPods": 4, "desiredHealthy": 2, "disruptionsAllowed": 2}),
    )
    .await;
    c.wait_status(
        pdbs(),
        "max-int",
        json!({"expectedPods": 4, "desiredHealthy": 3, "disruptionsAllowed": 1}),
    )
    .await;

    // The scale follows spec.replicas; an integer minAvailable counts pods.
    c.patch(rsets, "web", json!({"spec": {"replicas": 6}}))
        .await;
    c.settle(&id, 6).await;
    c.wait_status(
        pdbs(),
        "max-pct",
        json!({"expectedPods": 6, "currentHealthy": 6, "desiredHealthy": 3, "disruptionsAllowed": 3}),
    )
    .await;
    c.wait_status(
        pdbs(),
        "min-int",
        json!({"expectedPods": 6, "currentHealthy": 6, "disruptionsAllowed": 3}),
    )
    .await;

    // A spec change: observedGeneration follows the generation.
    c.patch(pdbs(), "min-int", json!({"spec": {"minAvailable": 6}}))
        .await;
    let o = c
        .wait_status(
            pdbs(),
            "min-int",
            json!({"desiredHealthy": 6, "disruptionsAllowed": 0, "observedGeneration": 2}),
        )
        .await;
    let cond = condition(&o, "DisruptionAllowed").unwrap();
    assert_eq!(
        (cond["status"].as_str(), cond["reason"].as_str()),
        (Some("False"), Some("InsufficientPods"))
    );

    // A pod under four budgets cannot be evicted (upstream's 500).
    let victim = name(&c.owned(&id)[0]);
    let st = evict(&c, &victim, Value::Null, false).await.unwrap();
    assert_eq!(st["code"], 500);
    assert_eq!(st["status"], "Failure");
    assert_eq!(
        st["message"],
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    );
    assert!(!terminating(&c, &victim).await);

    // A budget selecting nothing: no pods, nothing allowed, an event.
    c.create(
        pdbs(),
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "none", "namespace": "default"},
            "spec": {"minAvailable": 0, "selector": {"matchLabels": {"app": "nothing"}}}}),
    )
    .await;
    c.wait_status(
        pdbs(),
        "none",
        json!({"expectedPods": 0, "disruptionsAllowed": 0, "observedGeneration": 1}),
    )
    .await;
    let e = c.wait_event("none", "NoPods").await;
    assert_eq!(e["message"], "No matching pods found");
    assert_eq!(e["type"], "Normal");
    assert_eq!(e["source"]["component"], "controllermanager");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmanaged_pods_missing_controllers_and_unscalable_owners() {
    let (c, _sim) = start(1).await;
    let rsets = rt("apps", "replicasets");
    let id = uid(&c.create(rsets, rs("web", 2)).await);
    c.settle(&id, 2).await;
    c.wait_status(rsets, "web", json!({"readyReplicas": 2}))
        .await;
    // A bare pod the budget also selects (not the ReplicaSet, which would
    // adopt it): left out of the scale (with a warning), counted as
    // healthy.
    let mut bare = bare_pod("bare", "other", "hollow-0");
    bare["metadata"]["labels"]["tier"] = json!("web");
    c.create(pods(), bare).await;
    let mut budget = pdb("web", "web", json!({"maxUnavailable": 1}));
    budget["spec"]["selector"] = json!({"matchLabels": {"tier": "web"}});
    c.create(pdbs(), budget).await;
    c.wait_status(
        pdbs(),
        "web",
        json!({"expectedPods": 2, "currentHealthy": 3, "desiredHealthy": 1, "disruptionsAllowed": 2}),
    )
    .await;
    let e = c.wait_event("web", "UnmanagedPods").await;
    assert_eq!(e["type"], "Warning");
    assert!(
        e["message"].as_str().unwrap().starts_with(
            "Pods selected by this PodDisruptionBudget (selector: &LabelSelector{MatchLabels:map[string]string{tier: web,},MatchExpressions:[]LabelSelectorRequirement{},}) were found to be unmanaged."
        ),
        "{e}"
    );

    // A pod whose controller does not exist fails the sync: nothing may be
    // disrupted, and the condition says why.
    let mut ghost = bare_pod("ghost", "other", "hollow-0");
    ghost["metadata"]["labels"]["tier"] = json!("web");
    ghost["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "gone", "uid": "00000000-0000-0000-0000-000000000001", "controller": true}]);
    c.create(pods(), ghost).await;
    let o = c
        .wait_status(pdbs(), "web", json!({"disruptionsAllowed": 0}))
        .await;
    let cond = condition(&o, "DisruptionAllowed").unwrap();
    assert_eq!(cond["status"], "False");
    assert_eq!(cond["reason"], "SyncFailed");
    assert_eq!(cond["message"], "found no controllers for pod \"ghost\"");
    let e = c.wait_event("web", "CalculateExpectedPodCountFailed").await;
    assert_eq!(
        e["message"],
        "Failed to calculate the number of expected pods: found no controllers for pod \"ghost\""
    );
    // Evictions stop while the budget cannot be computed.
    let e = evict(&c, "bare", Value::Null, false).await.unwrap_err();
    assert_eq!(e.code, 429);

    // Once the pod goes, the budget recovers.
    c.server
        .delete(
            pods(),
            Some("default"),
            "ghost",
            &DeleteOptions {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let o = c
        .wait_status(pdbs(), "web", json!({"disruptionsAllowed": 2}))
        .await;
    assert_eq!(
        condition(&o, "DisruptionAllowed").unwrap()["reason"],
        "SufficientPods"
    );

    // Pods of a kind without a scale subresource cannot be counted.
    let ds = c
        .create(
            rt("apps", "daemonsets"),
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": {"name": "agent", "namespace": "default"},
                "spec": {"selector": {"matchLabels": {"app": "agent"}},
                    "template": {"metadata": {"labels": {"app": "agent"}},
                        "spec": {"nodeSelector": {"no-such-label": "x"},
                            "containers": [{"name": "c", "image": "pause"}]}}}}),
        )
        .await;
    let mut dpod = bare_pod("agent-x", "agent", "hollow-0");
    dpod["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "DaemonSet",
        "name": "agent", "uid": uid(&ds), "controller": true}]);
    c.create(pods(), dpod).await;
    c.create(pdbs(), pdb("agent", "agent", json!({"maxUnavailable": 1})))
        .await;
    let o = c
        .wait_status(pdbs(), "agent", json!({"disruptionsAllowed": 0}))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut o = o;
    while condition(&o, "DisruptionAllowed").is_none_or(|c| c["reason"] != "SyncFailed") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no SyncFailed: {o:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        o = c.read(pdbs(), "agent").await;
    }
    assert_eq!(
        condition(&o, "DisruptionAllowed").unwrap()["message"],
        "daemonsets.apps does not implement the scale subresource"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evictions_spend_the_budget_and_get_429_once_it_is_spent() {
    let (c, _) = start(0).await;
    let history = record_budgets(&c);
    c.node("n1", "8").await;
    let (id, names) = ready_replica_set(&c, "web", 3).await;
    c.create(pdbs(), pdb("web", "web", json!({"minAvailable": 2})))
        .await;
    c.wait_status(
        pdbs(),
        "web",
        json!({"expectedPods": 3, "currentHealthy": 3, "desiredHealthy": 2,
            "disruptionsAllowed": 1, "observedGeneration": 1}),
    )
    .await;

    // Missing pods are 404s.
    assert_eq!(
        evict(&c, "nope", Value::Null, false)
            .await
            .unwrap_err()
            .code,
        404
    );
    // A dry run changes nothing.
    let st = evict(&c, &names[0], Value::Null, true).await.unwrap();
    assert_eq!(st["status"], "Success");
    assert!(!terminating(&c, &names[0]).await);
    assert!(condition(&pod(&c, &names[0]).await.unwrap(), "DisruptionTarget").is_none());
    assert_eq!(
        c.read(pdbs(), "web").await["status"]["disruptionsAllowed"],
        1
    );

    // The budget allows one: granted, recorded, the pod marked and deleted.
    let st = evict(&c, &names[0], json!({}), false).await.unwrap();
    assert_eq!(st["code"], 201);
    let p = pod(&c, &names[0])
        .await
        .expect("terminating, no kubelet to finish it");
    assert!(!p["metadata"]["deletionTimestamp"].is_null());
    let cond = condition(&p, "DisruptionTarget").expect("DisruptionTarget");
    assert_eq!(cond["status"], "True");
    assert_eq!(cond["reason"], "EvictionByEvictionAPI");
    assert_eq!(cond["message"], "Eviction API: evicting");
    let recorded = history.lock().unwrap().iter().any(|v| {
        v["status"]["disruptedPods"][&names[0]].is_string()
            && v["status"]["disruptionsAllowed"] == 0
    });
    let recorded = recorded || {
        // The informer may not have caught up yet.
        tokio::time::sleep(Duration::from_millis(500)).await;
        history.lock().unwrap().iter().any(|v| {
            v["status"]["disruptedPods"][&names[0]].is_string()
                && v["status"]["disruptionsAllowed"] == 0
        })
    };
    assert!(recorded, "the eviction recorded the pod in disruptedPods");

    // Spent: 429 with upstream's message and cause, nothing deleted.
    let e = evict(&c, &names[1], Value::Null, false).await.unwrap_err();
    assert_eq!((e.code, e.reason), (429, "TooManyRequests"));
    assert_eq!(
        e.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(e.causes[0].reason, "DisruptionBudget");
    assert!(
        e.causes[0]
            .message
            .starts_with("The disruption budget web needs 2 healthy pods and has "),
        "{:?}",
        e.causes
    );
    assert!(!terminating(&c, &names[1]).await);
    assert!(condition(&pod(&c, &names[1]).await.unwrap(), "DisruptionTarget").is_none());

    // The controller sees the pod terminating: the entry goes, 2 healthy.
    let o = c
        .wait_status(
            pdbs(),
            "web",
            json!({"currentHealthy": 2, "desiredHealthy": 2, "disruptionsAllowed": 0}),
        )
        .await;
    let o = if o["status"]["disruptedPods"].is_null() {
        o
    } else {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.read(pdbs(), "web").await
    };
    assert!(o["status"]["disruptedPods"].is_null(), "{o:#}");
    assert_eq!(
        condition(&o, "DisruptionAllowed").unwrap()["reason"],
        "InsufficientPods"
    );

    // The replacement is Pending (bound, never run): evicted without the
    // budget.
    let old: HashSet<String> = names.iter().cloned().collect();
    // Replacements, once bound (a bind after the eviction read the pod
    // would make its guarded delete a 429, as upstream).
    let fresh = |c: &Cluster| -> Vec<String> {
        c.owned(&id)
            .iter()
            .filter(|p| p["spec"]["nodeName"] == "n1")
            .map(name)
            .filter(|n| !old.contains(n))
            .collect()
    };
    c.wait("a replacement", |c| fresh(c).len() == 1).await;
    let r1 = fresh(&c)[0].clone();
    evict(&c, &r1, Value::Null, false).await.unwrap();
    assert!(terminating(&c, &r1).await);

    // The next one runs but is not Ready; the application is healthy
    // (2 of 2), so it goes without spending the budget.
    c.wait("another replacement", |c| fresh(c).iter().any(|n| n != &r1))
        .await;
    let r2 = fresh(&c).into_iter().find(|n| n != &r1).unwrap();
    c.report(&r2, false).await;
    evict(&c, &r2, Value::Null, false).await.unwrap();
    assert!(terminating(&c, &r2).await);
    assert_eq!(
        c.read(pdbs(), "web").await["status"]["disruptionsAllowed"],
        0
    );

    // A Ready replacement makes room for one more eviction.
    c.wait("a third replacement", |c| {
        fresh(c).iter().any(|n| n != &r1 && n != &r2)
    })
    .await;
    let r3 = fresh(&c)
        .into_iter()
        .find(|n| n != &r1 && n != &r2)
        .unwrap();
    c.report(&r3, true).await;
    c.wait_status(
        pdbs(),
        "web",
        json!({"currentHealthy": 3, "disruptionsAllowed": 1}),
    )
    .await;
    // The eviction's preconditions hold: a wrong uid is a conflict.
    let e = evict(
        &c,
        &names[1],
        json!({"preconditions": {"uid": "not-the-uid"}}),
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, 409, "{e}");
    assert!(!terminating(&c, &names[1]).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_pods_go_when_the_policy_is_always_allow() {
    let (c, _) = start(0).await;
    c.node("n1", "8").await;
    let (id, names) = ready_replica_set(&c, "web", 3).await;
    c.create(pdbs(), pdb("web", "web", json!({"minAvailable": 3})))
        .await;
    c.wait_status(
        pdbs(),
        "web",
        json!({"currentHealthy": 3, "desiredHealthy": 3, "disruptionsAllowed": 0, "observedGeneration": 1}),
    )
    .await;
    // Two pods stop being Ready: the application is disrupted (1 of 3).
    c.report(&names[0], false).await;
    c.report(&names[1], false).await;
    c.wait_status(pdbs(), "web", json!({"currentHealthy": 1}))
        .await;
    // IfHealthyBudget (the default): an unhealthy pod is protected too.
    let e = evict(&c, &names[0], Value::Null, false).await.unwrap_err();
    assert_eq!(e.code, 429);
    assert_eq!(
        e.causes[0].message,
        "The disruption budget web needs 3 healthy pods and has 1 currently"
    );
    // A Pending pod (bound, never run) goes whatever the budget says.
    c.patch(
        rt("apps", "replicasets"),
        "web",
        json!({"spec": {"replicas": 4}}),
    )
    .await;
    c.wait("a fourth pod", |c| c.owned(&id).len() == 4).await;
    let pending = c
        .owned(&id)
        .iter()
        .map(name)
        .find(|n| !names.contains(n))
        .unwrap();
    assert_eq!(
        pod(&c, &pending).await.unwrap()["status"]["phase"],
        "Pending"
    );
    evict(&c, &pending, Value::Null, false).await.unwrap();
    assert!(terminating(&c, &pending).await);
    // AlwaysAllow: unhealthy pods go whatever the budget says; healthy
    // ones do not.
    c.patch(
        pdbs(),
        "web",
        json!({"spec": {"unhealthyPodEvictionPolicy": "AlwaysAllow"}}),
    )
    .await;
    c.wait_status(pdbs(), "web", json!({"observedGeneration": 2}))
        .await;
    evict(&c, &names[0], Value::Null, false).await.unwrap();
    assert!(terminating(&c, &names[0]).await);
    assert_eq!(
        evict(&c, &names[2], Value::Null, false)
            .await
            .unwrap_err()
            .code,
        429
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_evictions_never_exceed_the_budget() {
    let (c, _) = start(0).await;
    c.node("n1", "64").await;
    let names: Vec<String> = (0..20).map(|i| format!("burst-{i}")).collect();
    for n in &names {
        c.create(pods(), bare_pod(n, "burst", "n1")).await;
        c.report(n, true).await;
    }
    c.create(pdbs(), pdb("burst", "burst", json!({"minAvailable": 17})))
        .await;
    c.wait_status(
        pdbs(),
        "burst",
        json!({"expectedPods": 20, "currentHealthy": 20, "disruptionsAllowed": 3}),
    )
    .await;
    let c = Arc::new(c);
    let mut set = tokio::task::JoinSet::new();
    for n in names.clone() {
        let c = c.clone();
        set.spawn(async move { (n.clone(), evict(&c, &n, Value::Null, false).await) });
    }
    let mut granted = Vec::new();
    while let Some(r) = set.join_next().await {
        let (n, r) = r.unwrap();
        match r {
            Ok(st) => {
                assert_eq!(st["code"], 201);
                granted.push(n);
            }
            Err(e) => assert_eq!(e.code, 429, "{n}: {e}"),
        }
    }
    assert_eq!(granted.len(), 3, "granted: {granted:?}");
    let mut gone = Vec::new();
    for n in &names {
        if terminating(&c, n).await {
            gone.push(n);
        }
    }
    assert_eq!(gone.len(), 3, "{gone:?}");
    c.wait_status(
        pdbs(),
        "burst",
        json!({"currentHealthy": 17, "disruptionsAllowed": 0}),
    )
    .await;
    // A second burst finds nothing left to spend.
    for n in names.iter().filter(|n| !granted.contains(n)).take(5) {
        assert_eq!(
            evict(&c, n, Value::Null, false).await.unwrap_err().code,
            429
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disrupted_pods_not_deleted_expire_and_stale_conditions_reset() {
    // Timeouts of 3 s here (upstream: 2 minutes).
    let (c, _) = start(0).await;
    c.node("n1", "8").await;
    let (_, names) = ready_replica_set(&c, "web", 3).await;
    c.create(pdbs(), pdb("web", "web", json!({"minAvailable": 1})))
        .await;
    c.wait_status(
        pdbs(),
        "web",
        json!({"currentHealthy": 3, "disruptionsAllowed": 2, "observedGeneration": 1}),
    )
    .await;
    // The budget grants the eviction, then the delete's precondition
    // fails: the pod stays, but is held out of currentHealthy.
    let e = evict(
        &c,
        &names[0],
        json!({"preconditions": {"uid": "not-the-uid"}}),
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code, 409);
    assert!(!terminating(&c, &names[0]).await);
    let o = c
        .wait_status(
            pdbs(),
            "web",
            json!({"currentHealthy": 2, "disruptionsAllowed": 1}),
        )
        .await;
    assert!(o["status"]["disruptedPods"][&names[0]].is_string(), "{o:#}");
    // Until the deletion timeout: dropped, with a warning on the pod.
    let o = c
        .wait_status(
            pdbs(),
            "web",
            json!({"currentHealthy": 3, "disruptionsAllowed": 2}),
        )
        .await;
    assert!(o["status"]["disruptedPods"].is_null(), "{o:#}");
    let e = c.wait_event(&names[0], "NotDeleted").await;
    assert_eq!(
        e["message"],
        "Pod was expected by PDB default/web to be deleted but it wasn't"
    );

    // A DisruptionTarget condition on a pod that was never deleted goes
    // back to False after the stale timeout.
    let now = navarch_api::meta::rfc3339(jiff::Timestamp::now());
    c.server
        .patch(
            pods(),
            Some("default"),
            &names[1],
            Some(navarch_api::Subresource::Status),
            navarch_api::patch::PatchType::Merge,
            json!({"status": {"conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                 "message": "Eviction API: evicting", "lastTransitionTime": now}]}}),
            &opts(),
        )
        .await
        .unwrap();
    c.wait("the condition reset", |c| {
        c.all_pods()
            .into_iter()
            .find(|p| p["metadata"]["name"] == names[1].as_str())
            .and_then(|p| condition(&p, "DisruptionTarget").cloned())
            .is_some_and(|cond| cond["status"] == "False" && cond["reason"].is_null())
    })
    .await;
}
