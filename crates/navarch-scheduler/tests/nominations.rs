//! Nominated pods: the room preemption frees is kept for the preemptor
//! (upstream `RunFilterPluginsWithNominatedPods`, the PreferNominatedNode
//! fast path and the nominator's bookkeeping).

mod common;

use common::*;
use navarch_scheduler::{preempt, schedule, Check, Config, Ledger, PodInfo, PreemptOutcome};
use serde_json::json;

fn cfg() -> Config {
    Config::default()
}

/// Two 2-cpu nodes; n1 has 1 cpu free, n2 is full.
fn two_nodes() -> Ledger {
    ledger(
        &[
            node("n1", "2", "4Gi", json!({})),
            node("n2", "2", "4Gi", json!({})),
        ],
        &[
            pod("x1").req("1", "1Mi").node("n1").json(),
            pod("x2").req("2", "1Mi").node("n2").json(),
        ],
    )
}

#[test]
fn lower_or_equal_priority_pods_cannot_take_nominated_room() {
    let mut l = two_nodes();
    // A priority-100 preemptor is nominated to n1, needing the free cpu.
    let high = pod("high").req("1", "1Mi").priority(100).info();
    assert!(l.nominate("n1", high.clone()));
    assert_eq!(l.nomination("high"), Some("n1"));
    assert_eq!(l.nominated_to("n1"), vec!["high".to_string()]);
    // A lower-priority pod that would fit in the free cpu does not get it.
    let low = pod("low").req("500m", "1Mi").priority(10).info();
    let u = schedule(&l, &low, &cfg(), 0).unwrap_err();
    assert_eq!(u.message, "0/2 nodes are available: 2 Insufficient cpu.");
    // Nor does one of equal priority (upstream adds nominated pods with
    // priority >= the incoming pod's).
    let equal = pod("equal").req("500m", "1Mi").priority(100).info();
    assert!(schedule(&l, &equal, &cfg(), 0).is_err());
    // A more important pod ignores the nomination.
    let higher = pod("higher").req("500m", "1Mi").priority(101).info();
    assert_eq!(schedule(&l, &higher, &cfg(), 0).unwrap().node, "n1");
    // The nominated pod itself fits there: its own nomination does not
    // count against it.
    let p = schedule(&l, &high, &cfg(), 0).unwrap();
    assert_eq!(p.node, "n1");
    l.reserve("n1", high, Check::All).unwrap();
    // Placing it drops the nomination.
    assert_eq!(l.nomination("high"), None);
    assert!(l.nominated_to("n1").is_empty());
    assert_eq!(l.nomination_count(), 0);
}

#[test]
fn lower_priority_nominations_do_not_block() {
    let mut l = two_nodes();
    l.nominate("n1", pod("low").req("1", "1Mi").priority(5).info());
    let p = pod("p").req("1", "1Mi").priority(5).info();
    assert!(
        schedule(&l, &p, &cfg(), 0).is_err(),
        "equal priority yields"
    );
    let q = pod("q").req("1", "1Mi").priority(6).info();
    assert_eq!(schedule(&l, &q, &cfg(), 0).unwrap().node, "n1");
    // Upstream then clears the lower-priority nominations on that node.
    assert_eq!(l.nominated_below("n1", 6), vec!["low".to_string()]);
    assert!(l.nominated_below("n1", 5).is_empty());
    l.reserve("n1", q, Check::Resources).unwrap();
    for key in l.nominated_below("n1", 6) {
        assert!(l.remove_nomination(&key));
    }
    assert!(!l.remove_nomination("low"));
}

#[test]
fn commit_check_keeps_nominated_room() {
    let mut l = two_nodes();
    // A decision taken before the preemption nominated n1...
    let low = pod("low").req("1", "1Mi").priority(0).info();
    let decision = schedule(&l, &low, &cfg(), 0).unwrap();
    assert_eq!(decision.node, "n1");
    l.nominate("n1", pod("high").req("600m", "1Mi").priority(10).info());
    // ...is rejected at commit, by either check.
    for check in [Check::Resources, Check::All] {
        let err = l.reserve(&decision.node, low.clone(), check).unwrap_err();
        assert_eq!(err.reasons, vec!["Insufficient cpu".to_string()]);
    }
    // Host ports are held as well.
    l.remove_nomination("high");
    l.nominate("n1", pod("web").host_port(80, 80).priority(10).info());
    let err = l
        .check_fit(
            "n1",
            &pod("other").host_port(80, 80).info(),
            Check::Resources,
        )
        .unwrap_err();
    assert_eq!(
        err.reasons,
        vec!["node(s) didn't have free ports for the requested pod ports".to_string()]
    );
    assert!(l
        .check_fit(
            "n1",
            &pod("vip").host_port(80, 80).priority(11).info(),
            Check::Resources
        )
        .is_ok());
}

#[test]
fn nominated_pods_count_for_anti_affinity_and_both_passes_run() {
    let nodes = [
        node("a", "4", "8Gi", json!({"zone": "A"})),
        node("b", "4", "8Gi", json!({"zone": "B"})),
    ];
    let mut l = ledger(&nodes, &[]);
    // A pod nominated to a, with anti-affinity to app=batch on its host.
    let guard = pod("guard")
        .label("app", "db")
        .priority(50)
        .affinity(json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "batch"}}, "topologyKey": "kubernetes.io/hostname"}]}}))
        .info();
    l.nominate("a", guard);
    let batch = pod("batch").label("app", "batch").priority(1).info();
    // With no placed pod carrying required anti-affinity and none of its
    // own, upstream skips InterPodAffinity for the pod altogether, and
    // with it the nominated pods' terms.
    assert!(schedule(&l, &batch, &cfg(), 0).is_ok());
    // An existing pod with required anti-affinity makes the incoming pod's
    // InterPodAffinity PreFilter run (upstream skips the plugin, and so
    // the nominated pods' terms, otherwise).
    l.apply_pod(
        &pod("far")
            .label("app", "x")
            .affinity(
                json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "batch"}}, "topologyKey": "zone"}]}}),
            )
            .node("b")
            .json(),
    )
    .unwrap();
    let u = schedule(&l, &batch, &cfg(), 0).unwrap_err();
    assert_eq!(
        u.node_statuses["a"].reasons[0],
        "node(s) didn't satisfy existing pods anti-affinity rules"
    );
    // Pod affinity to the nominated pod: the pass with it succeeds, the
    // pass without it fails, so the node is rejected (upstream requires
    // both: the nominated pod may end up elsewhere).
    let friend = pod("friend")
        .priority(1)
        .affinity(json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}))
        .info();
    let u = schedule(&l, &friend, &cfg(), 0).unwrap_err();
    assert_eq!(
        u.node_statuses["a"].reasons[0],
        "node(s) didn't match pod affinity rules"
    );
}

#[test]
fn nominated_node_is_tried_first() {
    // n2 is emptier and would win on score; the pod nominated to n1 goes
    // to n1 without scoring.
    let l0 = ledger(
        &[
            node("n1", "4", "8Gi", json!({})),
            node("n2", "4", "8Gi", json!({})),
        ],
        &[pod("busy").req("3", "6Gi").node("n1").json()],
    );
    let p = pod("p").req("500m", "1Gi").priority(10).info();
    assert_eq!(schedule(&l0, &p, &cfg(), 7).unwrap().node, "n2");
    let mut l = l0.clone();
    l.nominate("n1", p.clone());
    let pl = schedule(&l, &p, &cfg(), 7).unwrap();
    assert_eq!(
        (
            pl.node.as_str(),
            pl.feasible_nodes,
            pl.evaluated_nodes,
            pl.score
        ),
        ("n1", 1, 1, 0)
    );
    assert_eq!(pl.next_start_index, 7 % 2);
    // The pod's status works the same without a ledger record.
    let mut v = pod("p").req("500m", "1Gi").priority(10).json();
    v["status"]["nominatedNodeName"] = json!("n1");
    let from_status = PodInfo::from_json(&v).unwrap();
    assert_eq!(schedule(&l0, &from_status, &cfg(), 0).unwrap().node, "n1");
    // A nominated node that no longer fits falls back to the full search.
    let big = pod("big").req("2", "1Gi").priority(10).info();
    l.nominate("n1", big.clone());
    assert_eq!(schedule(&l, &big, &cfg(), 0).unwrap().node, "n2");
    // So does a nomination to a node the ledger does not know.
    l.nominate("gone", big.clone());
    assert_eq!(schedule(&l, &big, &cfg(), 0).unwrap().node, "n2");
}

#[test]
fn bind_delete_and_status_events_maintain_nominations() {
    let mut l = two_nodes();
    let pending = |nnn: Option<&str>| {
        let mut v = pod("p").req("1", "1Mi").priority(10).json();
        if let Some(n) = nnn {
            v["status"]["nominatedNodeName"] = json!(n);
        }
        v
    };
    // The status carries the nomination (e.g. after a driver restart).
    l.apply_pod(&pending(Some("n1"))).unwrap();
    assert_eq!(l.nomination("p"), Some("n1"));
    assert_eq!(l.nominated_pod("p").unwrap().0.priority, 10);
    // Moved by a new status.
    l.apply_pod(&pending(Some("n2"))).unwrap();
    assert_eq!(l.nomination("p"), Some("n2"));
    assert!(l.nominated_to("n1").is_empty());
    // Cleared status after it was seen set: removed.
    l.apply_pod(&pending(None)).unwrap();
    assert_eq!(l.nomination("p"), None);
    // A nomination made in memory survives an update that does not carry
    // it yet (the status write is in flight).
    l.nominate("n1", pod("p").req("1", "1Mi").priority(10).info());
    l.apply_pod(&pending(None)).unwrap();
    assert_eq!(l.nomination("p"), Some("n1"));
    // Bound: the nomination goes.
    let mut bound = pending(Some("n1"));
    bound["spec"]["nodeName"] = json!("n1");
    l.apply_pod(&bound).unwrap();
    assert_eq!(l.nomination("p"), None);
    assert!(
        !l.nominate("n2", pod("p").info()),
        "a placed pod is not nominated"
    );
    // Deleted while nominated: the nomination goes.
    l.nominate("n2", pod("q").req("1", "1Mi").priority(10).info());
    assert!(!l.remove_pod("q"), "q was never placed");
    assert_eq!(l.nomination("q"), None);
    // Terminal: gone too.
    l.apply_pod(&{
        let mut v = pod("r").json();
        v["status"] = json!({"nominatedNodeName": "n2"});
        v
    })
    .unwrap();
    assert_eq!(l.nomination("r"), Some("n2"));
    l.apply_pod(&{
        let mut v = pod("r").json();
        v["status"] = json!({"nominatedNodeName": "n2", "phase": "Failed"});
        v
    })
    .unwrap();
    assert_eq!(l.nomination_count(), 0);
}

#[test]
fn nominations_to_unknown_nodes_and_removed_nodes() {
    let mut l = two_nodes();
    l.nominate("later", pod("p").req("1", "1Mi").info());
    assert_eq!(l.nominated_to("later"), vec!["p".to_string()]);
    assert_eq!(l.node_count(), 2);
    l.add_node(&node("later", "1", "1Gi", json!({}))).unwrap();
    // The node arrives with its nomination: a pod of equal priority finds
    // no room there.
    let q = pod("q")
        .req("500m", "1Mi")
        .spec("nodeSelector", json!({"kubernetes.io/hostname": "later"}))
        .info();
    assert!(schedule(&l, &q, &cfg(), 0).is_err());
    assert!(l.remove_node("later"));
    assert_eq!(l.nomination("p"), Some("later"));
    assert!(l.remove_nomination("p"));
    assert!(l.nominated_to("later").is_empty());
}

#[test]
fn preemption_honours_nominations() {
    // One node, full of a low-priority pod; a priority-50 pod is already
    // nominated there for the room its preemption will free.
    let mut l = ledger(
        &[node("n1", "2", "4Gi", json!({}))],
        &[pod("victim").req("2", "1Mi").priority(0).node("n1").json()],
    );
    l.nominate("n1", pod("first").req("2", "1Mi").priority(50).info());
    // A priority-20 pod cannot preempt for that room: even with the victim
    // gone, the nominated pod holds it.
    let p = pod("p").req("1", "1Mi").priority(20).info();
    let u = schedule(&l, &p, &cfg(), 0).unwrap_err();
    let out = preempt(&l, &p, &u, &[], &cfg());
    assert_eq!(
        out,
        PreemptOutcome::NotPossible {
            message: "preemption: 0/1 nodes are available: 1 Insufficient cpu.".into()
        }
    );
    assert!(out.clears_nomination());
    // A priority-60 pod can: the lower nomination does not count for it.
    let vip = pod("vip").req("1", "1Mi").priority(60).info();
    let u = schedule(&l, &vip, &cfg(), 0).unwrap_err();
    let PreemptOutcome::Preempt(pre) = preempt(&l, &vip, &u, &[], &cfg()) else {
        panic!()
    };
    assert_eq!(pre.node, "n1");
    assert_eq!(l.nominated_below("n1", 60), vec!["first".to_string()]);
    let never = pod("never")
        .req("1", "1Mi")
        .priority(60)
        .spec("preemptionPolicy", json!("Never"))
        .info();
    let u = schedule(&l, &never, &cfg(), 0).unwrap_err();
    assert!(!preempt(&l, &never, &u, &[], &cfg()).clears_nomination());
}
