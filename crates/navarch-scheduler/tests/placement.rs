//! Scenario tests: upstream behaviour and messages, mostly from the
//! examples in the Kubernetes documentation.

mod common;

use common::*;
use navarch_scheduler::{
    preempt, schedule, Check, Code, Config, DefaultSpreading, Hold, Ledger, Pdb, PodInfo,
    PreemptOutcome, Resources, ScoringStrategy,
};
use serde_json::{json, Value};
use std::sync::Arc;

fn cfg() -> Config {
    Config::default()
}

fn fail_message(l: &Ledger, pod: &PodInfo) -> String {
    let u = schedule(l, pod, &cfg(), 0).unwrap_err();
    let post = match preempt(l, pod, &u, &[], &cfg()) {
        PreemptOutcome::NotPossible { message } => message,
        PreemptOutcome::Preempt(p) => panic!("unexpected preemption {p:?}"),
    };
    u.failed_scheduling_message(Some(&post))
}

// ----- FailedScheduling messages --------------------------------------------

#[test]
fn failed_scheduling_message_format() {
    // One node too small for the memory request (unresolvable: more than
    // its allocatable), two that do not match the node selector.
    let l = ledger(
        &[
            node("n1", "4", "1Gi", json!({"disktype": "ssd"})),
            node("n2", "4", "8Gi", json!({})),
            node("n3", "4", "8Gi", json!({"disktype": "hdd"})),
        ],
        &[],
    );
    let p = pod("p")
        .req("100m", "2Gi")
        .spec("nodeSelector", json!({"disktype": "ssd"}))
        .info();
    assert_eq!(
        fail_message(&l, &p),
        "0/3 nodes are available: 1 Insufficient memory, 2 node(s) didn't match Pod's node affinity/selector. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    let u = schedule(&l, &p, &cfg(), 0).unwrap_err();
    assert!(!u.preemption_may_help);
    assert_eq!(
        u.node_statuses["n1"].code,
        Code::UnschedulableAndUnresolvable
    );
}

#[test]
fn reasons_sort_as_strings_and_victimless_nodes() {
    // 12 nodes full of equal-priority pods, 2 tainted: "10 Insufficient
    // cpu" sorts before "2 node(s) ..." as upstream's sort.Strings does.
    let mut nodes = Vec::new();
    let mut pods = Vec::new();
    for i in 0..12 {
        let name = format!("n{i:02}");
        let mut n = node(&name, "1", "4Gi", json!({}));
        if i < 2 {
            n["spec"] =
                json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]});
        }
        nodes.push(n);
        pods.push(pod(&format!("x{i}")).req("900m", "1Mi").node(&name).json());
    }
    let l = ledger(&nodes, &pods);
    let p = pod("p").req("500m", "1Mi").info();
    assert_eq!(
        fail_message(&l, &p),
        "0/12 nodes are available: 10 Insufficient cpu, 2 node(s) had untolerated taint {dedicated: gpu}. \
         preemption: 0/12 nodes are available: 10 No preemption victims found for incoming pod, \
         2 Preemption is not helpful for scheduling."
    );
}

#[test]
fn preemption_policy_never_message() {
    let l = ledger(
        &[node("n1", "1", "1Gi", json!({}))],
        &[pod("low").req("1", "1Mi").node("n1").json()],
    );
    let p = pod("p")
        .req("500m", "1Mi")
        .priority(100)
        .spec("preemptionPolicy", json!("Never"))
        .info();
    assert_eq!(
        fail_message(&l, &p),
        "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
    );
}

#[test]
fn no_nodes() {
    let u = schedule(&Ledger::new(), &pod("p").info(), &cfg(), 0).unwrap_err();
    assert_eq!(u.message, "no nodes available to schedule pods");
}

// ----- taints ---------------------------------------------------------------

#[test]
fn taints_and_tolerations_docs_examples() {
    let tainted = |name: &str, taints: Value| {
        let mut n = node(name, "4", "4Gi", json!({}));
        n["spec"] = json!({"taints": taints});
        n
    };
    let l = ledger(
        &[
            tainted(
                "node1",
                json!([{"key": "key1", "value": "value1", "effect": "NoSchedule"}]),
            ),
            tainted(
                "node2",
                json!([{"key": "key1", "value": "value1", "effect": "NoSchedule"},
                                    {"key": "key2", "value": "value2", "effect": "NoSchedule"}]),
            ),
        ],
        &[],
    );
    let plain = pod("plain").info();
    let u = schedule(&l, &plain, &cfg(), 0).unwrap_err();
    assert_eq!(
        u.message,
        "0/2 nodes are available: 2 node(s) had untolerated taint {key1: value1}."
    );
    let tolerant = pod("t")
        .spec("tolerations", json!([{"key": "key1", "operator": "Equal", "value": "value1", "effect": "NoSchedule"}]))
        .info();
    assert_eq!(schedule(&l, &tolerant, &cfg(), 0).unwrap().node, "node1");
    // PreferNoSchedule only scores: the pod avoids the soft-tainted node.
    let mut soft = node("soft", "4", "4Gi", json!({}));
    soft["spec"] = json!({"taints": [{"key": "k", "effect": "PreferNoSchedule"}]});
    let l = ledger(&[soft, node("clean", "4", "4Gi", json!({}))], &[]);
    for i in 0..5 {
        assert_eq!(
            schedule(&l, &pod(&format!("p{i}")).info(), &cfg(), 0)
                .unwrap()
                .node,
            "clean"
        );
    }
}

#[test]
fn cordoned_nodes() {
    let mut n = node("n1", "4", "4Gi", json!({}));
    n["spec"] = json!({"unschedulable": true});
    let l = ledger(&[n], &[]);
    assert_eq!(
        schedule(&l, &pod("p").info(), &cfg(), 0)
            .unwrap_err()
            .message,
        "0/1 nodes are available: 1 node(s) were unschedulable."
    );
    let ok = pod("q")
        .spec(
            "tolerations",
            json!([{"key": "node.kubernetes.io/unschedulable", "operator": "Exists"}]),
        )
        .info();
    assert!(schedule(&l, &ok, &cfg(), 0).is_ok());
}

// ----- node affinity --------------------------------------------------------

#[test]
fn node_affinity_required_and_preferred_docs_example() {
    // Docs: required zone In [antarctica-east1, antarctica-west1], preferred
    // another-node-label-key=another-node-label-value (weight 1).
    let l = ledger(
        &[
            node(
                "east",
                "4",
                "4Gi",
                json!({"topology.kubernetes.io/zone": "antarctica-east1"}),
            ),
            node(
                "west",
                "4",
                "4Gi",
                json!({"topology.kubernetes.io/zone": "antarctica-west1",
                                             "another-node-label-key": "another-node-label-value"}),
            ),
            node(
                "eu",
                "4",
                "4Gi",
                json!({"topology.kubernetes.io/zone": "europe-west1",
                                           "another-node-label-key": "another-node-label-value"}),
            ),
        ],
        &[],
    );
    let p = pod("with-node-affinity")
        .affinity(json!({"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["antarctica-east1", "antarctica-west1"]}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {"matchExpressions": [
                {"key": "another-node-label-key", "operator": "In", "values": ["another-node-label-value"]}]}}]}}))
        .info();
    assert_eq!(schedule(&l, &p, &cfg(), 0).unwrap().node, "west");
}

#[test]
fn node_affinity_weights_docs_example() {
    // Docs: label-1 (weight 1) vs label-2 (weight 50): the label-2 node wins.
    let l = ledger(
        &[
            node("a", "4", "4Gi", json!({"label-1": "key-1"})),
            node("b", "4", "4Gi", json!({"label-2": "key-2"})),
        ],
        &[],
    );
    let p = pod("with-affinity-preferred-weight")
        .affinity(json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "preference": {"matchExpressions": [{"key": "label-1", "operator": "In", "values": ["key-1"]}]}},
            {"weight": 50, "preference": {"matchExpressions": [{"key": "label-2", "operator": "In", "values": ["key-2"]}]}}]}}))
        .info();
    assert_eq!(schedule(&l, &p, &cfg(), 0).unwrap().node, "b");
}

#[test]
fn node_affinity_gt_lt_and_metadata_name() {
    let l = ledger(
        &[
            node("small", "4", "4Gi", json!({"cores": "4"})),
            node("big", "4", "4Gi", json!({"cores": "32"})),
            node("other", "4", "4Gi", json!({})),
        ],
        &[],
    );
    let gt = pod("gt")
        .affinity(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["8"]}]}]}}}))
        .info();
    assert_eq!(schedule(&l, &gt, &cfg(), 0).unwrap().node, "big");
    let lt = pod("lt")
        .affinity(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["8"]}]}]}}}))
        .info();
    assert_eq!(schedule(&l, &lt, &cfg(), 0).unwrap().node, "small");
    // DaemonSet-style pin: only the named node is filtered; the others
    // report the PreFilter's status.
    let pinned = |name: &str| {
        pod("ds")
            .req("8", "1Mi")
            .affinity(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [name]}]}]}}}))
            .info()
    };
    assert_eq!(
        schedule(&l, &pinned("other"), &cfg(), 0).unwrap_err().message,
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't satisfy plugin(s) [NodeAffinity]."
    );
    let conflict = pod("c")
        .affinity(json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]},
                             {"key": "metadata.name", "operator": "In", "values": ["b"]}]}]}}}))
        .info();
    let u = schedule(&l, &conflict, &cfg(), 0).unwrap_err();
    assert_eq!(
        u.message,
        "0/3 nodes are available: pod affinity terms conflict."
    );
    assert!(matches!(
        preempt(&l, &conflict, &u, &[], &cfg()),
        PreemptOutcome::NotPossible { .. }
    ));
}

// ----- topology spread ------------------------------------------------------

fn zone_nodes(zones: &[(&str, &str)]) -> Vec<Value> {
    zones
        .iter()
        .map(|(n, z)| node(n, "4", "8Gi", json!({"zone": z})))
        .collect()
}

fn spread(pod: PodBuilder, constraints: Value) -> Arc<PodInfo> {
    pod.label("foo", "bar")
        .spec("topologySpreadConstraints", constraints)
        .info()
}

#[test]
fn topology_spread_docs_one_constraint() {
    // Docs: zoneA {node1, node2}, zoneB {node3, node4}; foo=bar pods on
    // node1, node2, node3. maxSkew 1 over zones: only zoneB is allowed.
    let nodes = zone_nodes(&[
        ("node1", "zoneA"),
        ("node2", "zoneA"),
        ("node3", "zoneB"),
        ("node4", "zoneB"),
    ]);
    let pods: Vec<Value> = ["node1", "node2", "node3"]
        .iter()
        .enumerate()
        .map(|(i, n)| pod(&format!("e{i}")).label("foo", "bar").node(n).json())
        .collect();
    let l = ledger(&nodes, &pods);
    let c = json!([{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"foo": "bar"}}}]);
    let p = spread(pod("mypod"), c);
    let placed = schedule(&l, &p, &cfg(), 0).unwrap().node;
    assert!(placed == "node3" || placed == "node4", "{placed}");
    // With zoneA 2 and zoneB 3, only zoneA fits.
    let mut l2 = l.clone();
    l2.apply_pod(&pod("x").label("foo", "bar").node("node3").json())
        .unwrap();
    l2.apply_pod(&pod("y").label("foo", "bar").node("node4").json())
        .unwrap();
    let placed = schedule(&l2, &p, &cfg(), 0).unwrap().node;
    assert!(placed == "node1" || placed == "node2", "{placed}");
    // The zoneA nodes are rejected with upstream's reason.
    let only_a = ledger(
        &zone_nodes(&[("node1", "zoneA"), ("node2", "zoneA"), ("node3", "zoneB")]),
        &{
            let mut p = pods.clone();
            p.push(pod("e3").label("foo", "bar").node("node3").json());
            p.push(pod("e4").label("foo", "bar").node("node3").json());
            p
        },
    );
    // zoneA 2, zoneB 3 -> zoneA allowed, zoneB (3+1-2 = 2 > 1) rejected.
    let pinned_b = spread(
        pod("q").spec("nodeSelector", json!({"zone": "zoneB"})),
        json!([{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"foo": "bar"}}, "nodeAffinityPolicy": "Ignore"}]),
    );
    assert_eq!(
        schedule(&only_a, &pinned_b, &cfg(), 0).unwrap_err().message,
        "0/3 nodes are available: 1 node(s) didn't match pod topology spread constraints, \
         2 node(s) didn't match Pod's node affinity/selector."
    );
}

#[test]
fn topology_spread_docs_two_constraints() {
    // Docs: zone and node constraints, maxSkew 1 each: only node4 works.
    let nodes = zone_nodes(&[
        ("node1", "zoneA"),
        ("node2", "zoneA"),
        ("node3", "zoneB"),
        ("node4", "zoneB"),
    ]);
    let pods: Vec<Value> = ["node1", "node2", "node3"]
        .iter()
        .enumerate()
        .map(|(i, n)| pod(&format!("e{i}")).label("foo", "bar").node(n).json())
        .collect();
    let l = ledger(&nodes, &pods);
    let p = spread(
        pod("mypod"),
        json!([
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": {"foo": "bar"}}},
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": {"foo": "bar"}}}]),
    );
    assert_eq!(schedule(&l, &p, &cfg(), 0).unwrap().node, "node4");
}

#[test]
fn topology_spread_node_affinity_policy_and_min_domains() {
    // Docs: a zoneC node the pod excludes by node affinity is not a domain
    // (nodeAffinityPolicy: Honor), so zoneB is chosen, not zoneC.
    let nodes = zone_nodes(&[
        ("node1", "zoneA"),
        ("node2", "zoneA"),
        ("node3", "zoneB"),
        ("node4", "zoneB"),
        ("node5", "zoneC"),
    ]);
    let pods: Vec<Value> = ["node1", "node2", "node3"]
        .iter()
        .enumerate()
        .map(|(i, n)| pod(&format!("e{i}")).label("foo", "bar").node(n).json())
        .collect();
    let l = ledger(&nodes, &pods);
    let c = json!([{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"foo": "bar"}}}]);
    let not_c = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["zoneC"]}]}]}}});
    let p = spread(pod("p").affinity(not_c), c.clone());
    let placed = schedule(&l, &p, &cfg(), 0).unwrap().node;
    assert!(placed == "node3" || placed == "node4", "{placed}");
    // Without the exclusion the empty zoneC is the global minimum (0).
    assert_eq!(
        schedule(&l, &spread(pod("q"), c), &cfg(), 0).unwrap().node,
        "node5"
    );
    // minDomains 4 > 3 zones: the global minimum counts as 0, so zones with
    // a matching pod are rejected; zoneC (0 + 1 - 0 <= 1) still fits.
    let md = spread(
        pod("r"),
        json!([{"maxSkew": 1, "minDomains": 4, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"foo": "bar"}}}]),
    );
    assert_eq!(schedule(&l, &md, &cfg(), 0).unwrap().node, "node5");
}

#[test]
fn topology_spread_missing_label_and_match_label_keys() {
    let mut nodes = zone_nodes(&[("a1", "A"), ("b1", "B")]);
    nodes.push(node("nolabel", "4", "8Gi", json!({})));
    let pods = vec![
        pod("old1")
            .label("app", "web")
            .label("rev", "1")
            .node("a1")
            .json(),
        pod("old2")
            .label("app", "web")
            .label("rev", "1")
            .node("a1")
            .json(),
    ];
    let l = ledger(&nodes, &pods);
    let c = |keys: Value| {
        pod("new")
            .label("app", "web")
            .label("rev", "2")
            .spec(
                "topologySpreadConstraints",
                json!([{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                        "nodeAffinityPolicy": "Ignore",
                        "labelSelector": {"matchLabels": {"app": "web"}}, "matchLabelKeys": keys}]),
            )
            .spec("nodeSelector", json!({"zone": "A"}))
            .info()
    };
    // Counting all revisions: zone A has 2, B 0: A is rejected. The node
    // without the label is unresolvable.
    let u = schedule(&l, &c(json!([])), &cfg(), 0).unwrap_err();
    assert_eq!(
        u.node_statuses["a1"].reasons[0],
        "node(s) didn't match pod topology spread constraints"
    );
    // matchLabelKeys [rev]: only revision 2 counts, so A is fine.
    assert_eq!(
        schedule(&l, &c(json!(["rev"])), &cfg(), 0).unwrap().node,
        "a1"
    );
    let anywhere = pod("x")
        .spec(
            "topologySpreadConstraints",
            json!([{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"app": "none"}}}]),
        )
        .spec("nodeSelector", json!({"kubernetes.io/hostname": "nolabel"}))
        .info();
    let u = schedule(&l, &anywhere, &cfg(), 0).unwrap_err();
    assert_eq!(
        u.node_statuses["nolabel"].reasons[0],
        "node(s) didn't match pod topology spread constraints (missing required label)"
    );
}

#[test]
fn schedule_anyway_and_system_default_spreading() {
    let nodes = zone_nodes(&[("a1", "A"), ("a2", "A"), ("b1", "B"), ("b2", "B")]);
    let mut l = ledger(&nodes, &[]);
    // Pods of a service: the driver passes the service selector; system
    // defaults (hostname 3, zone 5, ScheduleAnyway) spread them.
    let sel = navarch_api::selector::LabelSelector::parse("app=svc").unwrap();
    let mut per_node = std::collections::BTreeMap::new();
    for i in 0..8 {
        let p = PodInfo::from_json(&pod(&format!("s{i}")).label("app", "svc").json())
            .unwrap()
            .with_default_spread_selector(Some(sel.clone()));
        let n = place(&mut l, Arc::new(p)).unwrap();
        *per_node.entry(n).or_insert(0) += 1;
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2, 2],
        "{per_node:?}"
    );
    // Explicit ScheduleAnyway over zones: prefer the emptier zone.
    let mut l = ledger(
        &nodes,
        &[
            pod("e1").label("foo", "bar").node("a1").json(),
            pod("e2").label("foo", "bar").node("a2").json(),
        ],
    );
    let soft = spread(
        pod("soft"),
        json!([{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"foo": "bar"}}}]),
    );
    let n = place(&mut l, soft).unwrap();
    assert!(n.starts_with('b'), "{n}");
    // Disabled defaults: no spreading preference besides resources.
    let c = Config {
        default_spreading: DefaultSpreading::Disabled,
        ..Config::default()
    };
    let p = PodInfo::from_json(&pod("d").label("app", "svc").json())
        .unwrap()
        .with_default_spread_selector(Some(sel));
    assert!(schedule(&l, &p, &c, 0).is_ok());
}

// ----- inter-pod affinity ---------------------------------------------------

fn anti(app: &str, key: &str) -> Value {
    json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": [app]}]}, "topologyKey": key}]}})
}

#[test]
fn anti_affinity_one_per_zone() {
    let nodes = zone_nodes(&[("a1", "A"), ("a2", "A"), ("b1", "B"), ("b2", "B")]);
    let mut l = ledger(&nodes, &[]);
    let web = |i: usize| {
        pod(&format!("web-{i}"))
            .label("app", "web")
            .affinity(anti("web", "zone"))
            .info()
    };
    let z1 = place(&mut l, web(0)).unwrap();
    let z2 = place(&mut l, web(1)).unwrap();
    assert_ne!(z1.chars().next(), z2.chars().next());
    let p = web(2);
    assert_eq!(
        fail_message(&l, &p),
        "0/4 nodes are available: 4 node(s) didn't match pod anti-affinity rules. \
         preemption: 0/4 nodes are available: 4 No preemption victims found for incoming pod."
    );
    // An unrelated pod is not affected, but a pod the existing pods'
    // anti-affinity selects is kept out of their zones.
    assert!(place(&mut l, pod("db").label("app", "db").info()).is_ok());
    let u = schedule(&l, &pod("w").label("app", "web").info(), &cfg(), 0).unwrap_err();
    assert_eq!(
        u.message,
        "0/4 nodes are available: 4 node(s) didn't satisfy existing pods anti-affinity rules."
    );
}

#[test]
fn redis_web_colocation_docs_example() {
    // Docs: redis-cache replicas spread one per node; web-store replicas
    // one per node, each next to a redis-cache.
    let nodes: Vec<Value> = (1..=4)
        .map(|i| node(&format!("node-{i}"), "4", "8Gi", json!({})))
        .collect();
    let mut l = ledger(&nodes, &[]);
    let host = "kubernetes.io/hostname";
    let mut redis_nodes = Vec::new();
    for i in 0..3 {
        let p = pod(&format!("redis-{i}"))
            .label("app", "store")
            .affinity(anti("store", host))
            .info();
        redis_nodes.push(place(&mut l, p).unwrap());
    }
    redis_nodes.sort();
    redis_nodes.dedup();
    assert_eq!(redis_nodes.len(), 3);
    let mut web_nodes = Vec::new();
    for i in 0..3 {
        let mut aff = anti("web-store", host);
        aff["podAffinity"] = json!({"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["store"]}]},
             "topologyKey": host}]});
        let p = pod(&format!("web-{i}"))
            .label("app", "web-store")
            .affinity(aff)
            .info();
        web_nodes.push(place(&mut l, p).unwrap());
    }
    web_nodes.sort();
    assert_eq!(web_nodes, redis_nodes);
}

#[test]
fn pod_affinity_first_pod_and_missing_peers() {
    let nodes = zone_nodes(&[("a1", "A"), ("b1", "B")]);
    let mut l = ledger(&nodes, &[]);
    let aff = |app: &str| {
        json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "zone"}]}})
    };
    // Affinity to itself: the first pod may go anywhere.
    let first = place(
        &mut l,
        pod("g0").label("app", "grp").affinity(aff("grp")).info(),
    )
    .unwrap();
    let second = place(
        &mut l,
        pod("g1").label("app", "grp").affinity(aff("grp")).info(),
    )
    .unwrap();
    assert_eq!(first, second);
    // Affinity to pods that do not exist: nowhere.
    let u = schedule(&l, &pod("x").affinity(aff("none")).info(), &cfg(), 0).unwrap_err();
    assert_eq!(
        u.message,
        "0/2 nodes are available: 2 node(s) didn't match pod affinity rules."
    );
    assert!(!u.preemption_may_help);
}

#[test]
fn affinity_namespaces_and_namespace_selector() {
    let nodes = zone_nodes(&[("a1", "A"), ("b1", "B")]);
    let mut l = ledger(
        &nodes,
        &[pod("db").ns("team-a").label("app", "db").node("b1").json()],
    );
    l.set_namespace(&json!({"metadata": {"name": "team-a", "labels": {"team": "a"}}}))
        .unwrap();
    let term = |extra: Value| {
        let mut t = json!({"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"});
        for (k, v) in extra.as_object().unwrap() {
            t[k] = v.clone();
        }
        pod("client")
            .affinity(
                json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [t]}}),
            )
            .info()
    };
    // Default: own namespace only, where there is no db.
    assert!(schedule(&l, &term(json!({})), &cfg(), 0).is_err());
    assert_eq!(
        schedule(&l, &term(json!({"namespaces": ["team-a"]})), &cfg(), 0)
            .unwrap()
            .node,
        "b1"
    );
    assert_eq!(
        schedule(
            &l,
            &term(json!({"namespaceSelector": {"matchLabels": {"team": "a"}}})),
            &cfg(),
            0
        )
        .unwrap()
        .node,
        "b1"
    );
    assert_eq!(
        schedule(&l, &term(json!({"namespaceSelector": {}})), &cfg(), 0)
            .unwrap()
            .node,
        "b1"
    );
    assert!(schedule(
        &l,
        &term(json!({"namespaceSelector": {"matchLabels": {"team": "b"}}})),
        &cfg(),
        0
    )
    .is_err());
}

#[test]
fn preferred_pod_affinity_scores() {
    let nodes = zone_nodes(&[("a1", "A"), ("b1", "B")]);
    let l = ledger(
        &nodes,
        &[pod("cache").label("app", "cache").node("b1").json()],
    );
    let near = pod("near")
        .affinity(json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}}]}}))
        .info();
    assert_eq!(schedule(&l, &near, &cfg(), 0).unwrap().node, "b1");
    let far = pod("far")
        .affinity(json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}}]}}))
        .info();
    assert_eq!(schedule(&l, &far, &cfg(), 0).unwrap().node, "a1");
}

// ----- ports, resources, commit ---------------------------------------------

#[test]
fn host_ports_and_host_network_nodes() {
    let mut hn = node(
        "proc",
        "4",
        "8Gi",
        json!({"navarch.io/host-network-pods": "true"}),
    );
    hn["metadata"]["labels"]["kubernetes.io/hostname"] = json!("proc");
    let l = ledger(
        &[node("ctr", "4", "8Gi", json!({})), hn],
        &[
            pod("a").host_port(8080, 8080).node("ctr").json(),
            // On the process node this pod binds 9090 on the host.
            pod("b").host_port(9090, 0).node("proc").json(),
        ],
    );
    let u = schedule(
        &l,
        &pod("c")
            .host_port(80, 8080)
            .spec("nodeSelector", json!({"kubernetes.io/hostname": "ctr"}))
            .info(),
        &cfg(),
        0,
    )
    .unwrap_err();
    assert_eq!(u.message, "0/2 nodes are available: 1 node(s) didn't have free ports for the requested pod ports, 1 node(s) didn't match Pod's node affinity/selector.");
    // A container port without hostPort conflicts only on the process node.
    let p = pod("d").host_port(9090, 0).info();
    let pl = schedule(&l, &p, &cfg(), 0).unwrap();
    assert_eq!(pl.node, "ctr");
    assert_eq!(pl.feasible_nodes, 1);
}

#[test]
fn extended_resources_and_sidecars() {
    let mut gpu = node("gpu", "8", "16Gi", json!({}));
    gpu["status"]["allocatable"]["nvidia.com/gpu"] = json!("2");
    let l = ledger(&[gpu, node("cpu", "8", "16Gi", json!({}))], &[]);
    let mut p = pod("train").json();
    p["spec"]["containers"][0]["resources"] = json!({"requests": {"nvidia.com/gpu": "2"}});
    assert_eq!(
        schedule(&l, &PodInfo::from_json(&p).unwrap(), &cfg(), 0)
            .unwrap()
            .node,
        "gpu"
    );
    p["spec"]["containers"][0]["resources"] = json!({"requests": {"nvidia.com/gpu": "3"}});
    let u = schedule(&l, &PodInfo::from_json(&p).unwrap(), &cfg(), 0).unwrap_err();
    assert_eq!(
        u.message,
        "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    );
    // A sidecar's requests add to the app containers'.
    let mut s = pod("side").req("7", "1Mi").json();
    s["spec"]["initContainers"] = json!([{"name": "proxy", "restartPolicy": "Always",
        "resources": {"requests": {"cpu": "1500m"}}}]);
    let u = schedule(&l, &PodInfo::from_json(&s).unwrap(), &cfg(), 0).unwrap_err();
    assert_eq!(u.message, "0/2 nodes are available: 2 Insufficient cpu.");
}

#[test]
fn commit_rejects_stale_decisions() {
    let mut l = ledger(&[node("n1", "1", "1Gi", json!({}))], &[]);
    let a = pod("a").req("600m", "1Mi").info();
    let b = pod("b").req("600m", "1Mi").info();
    // Two decisions made on the same snapshot...
    let pa = schedule(&l, &a, &cfg(), 0).unwrap();
    let pb = schedule(&l, &b, &cfg(), 0).unwrap();
    // ...only the first commits.
    l.reserve(&pa.node, a.clone(), Check::Resources).unwrap();
    let err = l
        .reserve(&pb.node, b.clone(), Check::Resources)
        .unwrap_err();
    assert_eq!(err.reasons, vec!["Insufficient cpu".to_string()]);
    assert!(l.is_assumed("a"));
    // Re-reserving the same pod does not count it twice.
    l.reserve(&pa.node, a.clone(), Check::All).unwrap();
    assert_eq!(l.requested("n1").unwrap().milli_cpu, 600);
    // The bind is confirmed by the watch event.
    l.apply_pod(&pod("a").req("600m", "1Mi").node("n1").json())
        .unwrap();
    assert!(!l.is_assumed("a"));
    assert!(!l.forget("a"));
    // A failed bind is forgotten.
    l.remove_pod("a");
    l.reserve("n1", b.clone(), Check::Resources).unwrap();
    assert!(l.forget("b"));
    assert!(l.requested("n1").unwrap().is_zero());
    assert_eq!(
        l.check_fit("gone", &b, Check::Resources)
            .unwrap_err()
            .reasons,
        vec!["node \"gone\" not found".to_string()]
    );
    // Holds take resources away from the scheduler.
    l.add_hold(
        "offer-1",
        "n1",
        Hold {
            resources: Resources {
                milli_cpu: 500,
                ..Default::default()
            },
            host_ports: vec![],
        },
    )
    .unwrap();
    assert_eq!(
        schedule(&l, &b, &cfg(), 0).unwrap_err().message,
        "0/1 nodes are available: 1 Insufficient cpu."
    );
    l.remove_hold("offer-1");
    assert!(schedule(&l, &b, &cfg(), 0).is_ok());
}

#[test]
fn most_allocated_packs_least_allocated_spreads() {
    let nodes = vec![
        node("n1", "4", "8Gi", json!({})),
        node("n2", "4", "8Gi", json!({})),
    ];
    let mut pack = ledger(&nodes, &[pod("x").req("1", "1Gi").node("n1").json()]);
    let mut spreadl = pack.clone();
    let most = Config {
        scoring_strategy: ScoringStrategy::MostAllocated,
        ..Config::default()
    };
    let p = pod("p").req("1", "1Gi").info();
    let n = schedule(&pack, &p, &most, 0).unwrap().node;
    assert_eq!(n, "n1");
    pack.reserve(&n, p.clone(), Check::Resources).unwrap();
    assert_eq!(schedule(&spreadl, &p, &cfg(), 0).unwrap().node, "n2");
    spreadl.reserve("n2", p, Check::Resources).unwrap();
}

// ----- sampling, determinism, parallel filtering ----------------------------

#[test]
fn sampling_rotates_over_the_nodes() {
    let nodes: Vec<Value> = (0..1000)
        .map(|i| node(&format!("n{i:04}"), "4", "8Gi", json!({})))
        .collect();
    let l = ledger(&nodes, &[]);
    let p = pod("p").req("100m", "1Mi").info();
    let a = schedule(&l, &p, &cfg(), 0).unwrap();
    assert_eq!(a.evaluated_nodes, 420);
    assert_eq!(a.feasible_nodes, 420);
    assert_eq!(a.next_start_index, 420);
    let b = schedule(&l, &p, &cfg(), a.next_start_index).unwrap();
    assert_eq!(b.next_start_index, 840);
    let c = schedule(&l, &p, &cfg(), b.next_start_index).unwrap();
    assert_eq!(c.next_start_index, 260);
    // Same inputs, same decision.
    assert_eq!(schedule(&l, &p, &cfg(), 840).unwrap(), c);
}

#[test]
fn parallel_filtering_matches_sequential() {
    let mut nodes = Vec::new();
    let mut pods = Vec::new();
    for i in 0..1500 {
        let name = format!("n{i:04}");
        nodes.push(node(
            &name,
            "4",
            "8Gi",
            json!({"zone": format!("z{}", i % 7)}),
        ));
        if i % 3 == 0 {
            pods.push(
                pod(&format!("p{i}"))
                    .req("3500m", "1Gi")
                    .label("app", "x")
                    .node(&name)
                    .json(),
            );
        }
    }
    let l = ledger(&nodes, &pods);
    let par = Config {
        parallelism: 4,
        ..Config::default()
    };
    for (i, p) in [
        pod("a").req("1", "1Gi").info(),
        pod("b").req("5", "1Gi").info(),
        pod("c")
            .req("1", "1Gi")
            .label("app", "x")
            .affinity(anti("x", "zone"))
            .info(),
    ]
    .into_iter()
    .enumerate()
    {
        for start in [0, 777, 1499] {
            let s = schedule(&l, &p, &cfg(), start);
            let q = schedule(&l, &p, &par, start);
            assert_eq!(s, q, "pod {i} start {start}");
        }
    }
}

#[test]
fn equal_nodes_share_equal_pods() {
    // Best-effort pods on identical nodes: the tie-break spreads them.
    let nodes: Vec<Value> = (0..4)
        .map(|i| node(&format!("n{i}"), "4", "8Gi", json!({})))
        .collect();
    let mut l = ledger(&nodes, &[]);
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..40 {
        let n = place(&mut l, pod(&format!("p{i}")).info()).unwrap();
        *counts.entry(n).or_insert(0) += 1;
    }
    assert!(counts.values().all(|c| *c == 10), "{counts:?}");
}

// ----- preemption -----------------------------------------------------------

#[test]
fn preemption_picks_lowest_priority_victims() {
    let l = ledger(
        &[
            node("n1", "2", "4Gi", json!({})),
            node("n2", "2", "4Gi", json!({})),
        ],
        &[
            pod("n1-low").req("1", "1Mi").priority(10).node("n1").json(),
            pod("n1-mid").req("1", "1Mi").priority(50).node("n1").json(),
            pod("n2-mid").req("1", "1Mi").priority(50).node("n2").json(),
            pod("n2-mid2")
                .req("1", "1Mi")
                .priority(60)
                .node("n2")
                .json(),
        ],
    );
    let p = pod("p").req("1", "1Mi").priority(100).info();
    let u = schedule(&l, &p, &cfg(), 0).unwrap_err();
    assert!(u.preemption_may_help);
    let PreemptOutcome::Preempt(pre) = preempt(&l, &p, &u, &[], &cfg()) else {
        panic!()
    };
    assert_eq!(pre.node, "n1");
    assert_eq!(
        pre.victims
            .iter()
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>(),
        vec!["n1-low"]
    );
    // Never evicts pods with priority >= the preemptor's.
    let equal = pod("q").req("1", "1Mi").priority(10).info();
    let u = schedule(&l, &equal, &cfg(), 0).unwrap_err();
    let PreemptOutcome::NotPossible { message } = preempt(&l, &equal, &u, &[], &cfg()) else {
        panic!()
    };
    assert_eq!(
        message,
        "preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
    );
}

#[test]
fn preemption_prefers_nodes_without_pdb_violations() {
    let l = ledger(
        &[
            node("n1", "1", "4Gi", json!({})),
            node("n2", "1", "4Gi", json!({})),
        ],
        &[
            pod("guarded")
                .req("1", "1Mi")
                .label("app", "db")
                .priority(0)
                .node("n1")
                .json(),
            pod("free")
                .req("1", "1Mi")
                .label("app", "web")
                .priority(5)
                .node("n2")
                .json(),
        ],
    );
    let pdb = Pdb::from_json(&json!({"metadata": {"namespace": "default", "name": "db"},
        "spec": {"selector": {"matchLabels": {"app": "db"}}}, "status": {"disruptionsAllowed": 0}}))
    .unwrap();
    let p = pod("p").req("1", "1Mi").priority(100).info();
    let u = schedule(&l, &p, &cfg(), 0).unwrap_err();
    // Without the PDB the lower-priority victim (n1) wins.
    let PreemptOutcome::Preempt(a) = preempt(&l, &p, &u, &[], &cfg()) else {
        panic!()
    };
    assert_eq!(a.node, "n1");
    let PreemptOutcome::Preempt(b) = preempt(&l, &p, &u, std::slice::from_ref(&pdb), &cfg()) else {
        panic!()
    };
    assert_eq!((b.node.as_str(), b.pdb_violations), ("n2", 0));
    // When every option violates, upstream still preempts (and says so).
    let only = ledger(
        &[node("n1", "1", "4Gi", json!({}))],
        &[pod("guarded")
            .req("1", "1Mi")
            .label("app", "db")
            .node("n1")
            .json()],
    );
    let u = schedule(&only, &p, &cfg(), 0).unwrap_err();
    let PreemptOutcome::Preempt(c) = preempt(&only, &p, &u, &[pdb], &cfg()) else {
        panic!()
    };
    assert_eq!(c.pdb_violations, 1);
}

#[test]
fn preemption_reprieves_what_is_not_needed_and_ties_on_start_time() {
    let l = ledger(
        &[
            node("n1", "3", "4Gi", json!({})),
            node("n2", "3", "4Gi", json!({})),
        ],
        &[
            pod("a-old")
                .req("1", "1Mi")
                .priority(1)
                .started("2024-01-01T00:00:00Z")
                .node("n1")
                .json(),
            pod("a-small")
                .req("500m", "1Mi")
                .priority(1)
                .started("2024-01-01T00:00:00Z")
                .node("n1")
                .json(),
            pod("b-new")
                .req("1", "1Mi")
                .priority(1)
                .started("2024-06-01T00:00:00Z")
                .node("n2")
                .json(),
            pod("b-small")
                .req("500m", "1Mi")
                .priority(1)
                .started("2024-06-01T00:00:00Z")
                .node("n2")
                .json(),
        ],
    );
    // 1500m used of 3000m on each: a 2-cpu pod needs 500m freed. The 1-cpu
    // pods (tied in importance, reprieved first by key) stay; the 500m
    // pods go.
    let p = pod("p").req("2", "1Mi").priority(10).info();
    let u = schedule(&l, &p, &cfg(), 0).unwrap_err();
    let PreemptOutcome::Preempt(pre) = preempt(&l, &p, &u, &[], &cfg()) else {
        panic!()
    };
    assert_eq!(pre.victims.len(), 1);
    // Equal on every other criterion: the later-started victims' node.
    assert_eq!(pre.node, "n2");
    assert_eq!(pre.victims[0].name, "b-small");
}

#[test]
fn preemption_respects_anti_affinity_of_victims() {
    // The only node hosts a low-priority pod with anti-affinity against the
    // incoming pod: evicting it makes room.
    let l = ledger(
        &[node("n1", "4", "4Gi", json!({}))],
        &[pod("hater")
            .label("app", "x")
            .priority(0)
            .affinity(anti("y", "kubernetes.io/hostname"))
            .node("n1")
            .json()],
    );
    let p = pod("y").label("app", "y").priority(10).info();
    let u = schedule(&l, &p, &cfg(), 0).unwrap_err();
    assert_eq!(
        u.message,
        "0/1 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules."
    );
    let PreemptOutcome::Preempt(pre) = preempt(&l, &p, &u, &[], &cfg()) else {
        panic!()
    };
    assert_eq!(pre.victims[0].name, "hater");
}

#[test]
fn nominated_node_with_terminating_victims() {
    let mut victim = pod("v").req("1", "1Mi").priority(0).node("n1").json();
    victim["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
    victim["status"]["conditions"] =
        json!([{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}]);
    let l = ledger(&[node("n1", "1", "4Gi", json!({}))], &[victim]);
    let mut p = pod("p").req("1", "1Mi").priority(10).json();
    p["status"] = json!({"nominatedNodeName": "n1"});
    let p = PodInfo::from_json(&p).unwrap();
    let u = schedule(&l, &p, &cfg(), 0).unwrap_err();
    assert_eq!(
        preempt(&l, &p, &u, &[], &cfg()),
        PreemptOutcome::NotPossible {
            message: "preemption: not eligible due to a terminating pod on the nominated node."
                .into()
        }
    );
}
