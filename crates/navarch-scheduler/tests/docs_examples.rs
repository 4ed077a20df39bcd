//! Table-driven tests, one table per filter or score, each case
//! reproducing behaviour the Kubernetes documentation describes (the page
//! is named on each table, the point on each case) or, where the
//! documentation is silent, upstream kube-scheduler's rule (named too).
//!
//! Nodes and pods are written as compact JSON: `n(name, {labels, taints,
//! unschedulable, alloc})` and `p(name, {labels, ns, node, req, status,
//! <any spec field>})`.

mod common;

use std::collections::BTreeMap;

use common::*;
use navarch_scheduler::{
    preempt, queue_order, schedule, Check, Code, Config, Ledger, PodInfo, PreemptOutcome,
    ScoringStrategy,
};
use serde_json::{json, Value};

/// A node with 4 cpu, 8Gi, 110 pods unless `alloc` says otherwise.
fn n(name: &str, extra: Value) -> Value {
    let mut v = node(
        name,
        "4",
        "8Gi",
        extra.get("labels").cloned().unwrap_or(Value::Null),
    );
    for k in ["taints", "unschedulable"] {
        if let Some(x) = extra.get(k) {
            v["spec"][k] = x.clone();
        }
    }
    if let Some(a) = extra.get("alloc").and_then(Value::as_object) {
        for (k, x) in a {
            v["status"]["allocatable"][k] = x.clone();
        }
    }
    v
}

/// A pod in `default` with one container `c`; `req` are that container's
/// requests, `node` binds it, other keys go to `spec`.
fn p(name: &str, extra: Value) -> Value {
    let mut v = pod(name).json();
    for (k, x) in extra.as_object().expect("object") {
        match k.as_str() {
            "labels" => v["metadata"]["labels"] = x.clone(),
            "ns" => v["metadata"]["namespace"] = x.clone(),
            "node" => v["spec"]["nodeName"] = x.clone(),
            "req" => v["spec"]["containers"][0]["resources"] = json!({"requests": x}),
            "status" => v["status"] = x.clone(),
            _ => v["spec"][k] = x.clone(),
        }
    }
    v
}

fn info(v: &Value) -> PodInfo {
    PodInfo::from_json(v).unwrap()
}

/// The nodes where every filter passes for the pod, sorted.
fn feasible(l: &Ledger, pod: &Value) -> Vec<String> {
    let pod = info(pod);
    let mut out: Vec<String> = l
        .node_names()
        .into_iter()
        .filter(|node| l.check_fit(node, &pod, Check::All).is_ok())
        .collect();
    out.sort();
    out
}

/// Why the filters reject the pod on `node` (empty when they pass).
fn why(l: &Ledger, pod: &Value, node: &str) -> String {
    match l.check_fit(node, &info(pod), Check::All) {
        Ok(()) => String::new(),
        Err(r) => r.reasons.join(", "),
    }
}

/// The `FailedScheduling` message: filters, then preemption's part.
fn failed_scheduling(l: &Ledger, pod: &Value) -> String {
    let pod = info(pod);
    let cfg = Config::default();
    let u = match schedule(l, &pod, &cfg, 0) {
        Ok(p) => panic!("{} was scheduled on {}", pod.name, p.node),
        Err(u) => u,
    };
    let post = match preempt(l, &pod, &u, &[], &cfg) {
        PreemptOutcome::NotPossible { message } => Some(message),
        PreemptOutcome::Preempt(_) => None,
    };
    u.failed_scheduling_message(post.as_deref())
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn required_terms(terms: Value) -> Value {
    json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}})
}

// ----- NodeAffinity ---------------------------------------------------------

#[test]
fn node_selector_and_required_node_affinity() {
    // kubernetes.io "Assigning Pods to Nodes": nodeSelector, and node
    // affinity's operators, with terms ORed and expressions ANDed.
    let l = ledger(
        &[
            n(
                "east-ssd",
                json!({"labels": {"disktype": "ssd", "topology.kubernetes.io/zone": "antarctica-east1", "cores": "16"}}),
            ),
            n(
                "west-hdd",
                json!({"labels": {"disktype": "hdd", "topology.kubernetes.io/zone": "antarctica-west1", "cores": "4"}}),
            ),
            n(
                "eu-ssd",
                json!({"labels": {"disktype": "ssd", "topology.kubernetes.io/zone": "europe-west1"}}),
            ),
        ],
        &[],
    );
    let zone_in = |values: Value| json!({"key": "topology.kubernetes.io/zone", "operator": "In", "values": values});
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "nodeSelector disktype: ssd picks the nodes with that label",
            json!({"nodeSelector": {"disktype": "ssd"}}),
            vec!["east-ssd", "eu-ssd"],
        ),
        (
            "an empty nodeSelector selects every node",
            json!({"nodeSelector": {}}),
            vec!["east-ssd", "eu-ssd", "west-hdd"],
        ),
        (
            "In: the docs' zone In [antarctica-east1, antarctica-west1]",
            json!({"affinity": required_terms(json!([{"matchExpressions": [zone_in(json!(["antarctica-east1", "antarctica-west1"]))]}]))}),
            vec!["east-ssd", "west-hdd"],
        ),
        (
            "NotIn",
            json!({"affinity": required_terms(json!([{"matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "NotIn", "values": ["europe-west1"]}]}]))}),
            vec!["east-ssd", "west-hdd"],
        ),
        (
            "NotIn matches nodes without the label",
            json!({"affinity": required_terms(json!([{"matchExpressions": [
                {"key": "cores", "operator": "NotIn", "values": ["16"]}]}]))}),
            vec!["eu-ssd", "west-hdd"],
        ),
        (
            "Exists",
            json!({"affinity": required_terms(json!([{"matchExpressions": [{"key": "cores", "operator": "Exists"}]}]))}),
            vec!["east-ssd", "west-hdd"],
        ),
        (
            "DoesNotExist",
            json!({"affinity": required_terms(json!([{"matchExpressions": [{"key": "cores", "operator": "DoesNotExist"}]}]))}),
            vec!["eu-ssd"],
        ),
        (
            "Gt compares integers; a node without the label does not match",
            json!({"affinity": required_terms(json!([{"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["8"]}]}]))}),
            vec!["east-ssd"],
        ),
        (
            "Lt",
            json!({"affinity": required_terms(json!([{"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["8"]}]}]))}),
            vec!["west-hdd"],
        ),
        (
            "several nodeSelectorTerms are ORed",
            json!({"affinity": required_terms(json!([
                {"matchExpressions": [zone_in(json!(["europe-west1"]))]},
                {"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["8"]}]}]))}),
            vec!["east-ssd", "eu-ssd"],
        ),
        (
            "expressions of one term are ANDed",
            json!({"affinity": required_terms(json!([{"matchExpressions": [
                {"key": "disktype", "operator": "In", "values": ["ssd"]},
                zone_in(json!(["antarctica-east1", "europe-west1"])),
                {"key": "cores", "operator": "Exists"}]}]))}),
            vec!["east-ssd"],
        ),
        (
            "nodeSelector and nodeAffinity must both be satisfied",
            json!({"nodeSelector": {"disktype": "ssd"},
                   "affinity": required_terms(json!([{"matchExpressions": [zone_in(json!(["antarctica-west1"]))]}]))}),
            vec![],
        ),
        (
            "matchFields metadata.name pins a node",
            json!({"affinity": required_terms(json!([{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": ["west-hdd"]}]}]))}),
            vec!["west-hdd"],
        ),
        (
            "an empty term matches no node (upstream NodeSelectorTerm)",
            json!({"affinity": required_terms(json!([{}]))}),
            vec![],
        ),
    ];
    for (doc, spec, want) in cases {
        let pod = p("p", spec);
        assert_eq!(feasible(&l, &pod), names(&want), "{doc}");
        for node in l.node_names() {
            if !want.contains(&node.as_str()) {
                assert_eq!(
                    why(&l, &pod, &node),
                    "node(s) didn't match Pod's node affinity/selector",
                    "{doc}: {node}"
                );
            }
        }
    }
}

// ----- TaintToleration and NodeUnschedulable -------------------------------

#[test]
fn taints_and_tolerations() {
    // kubernetes.io "Taints and Tolerations" (`kubectl taint nodes node1
    // key1=value1:NoSchedule` and the tolerations that match it).
    let taint = |effect: &str| json!([{"key": "key1", "value": "value1", "effect": effect}]);
    let untolerated = "node(s) had untolerated taint {key1: value1}";
    let cases: Vec<(&str, Value, Value, &str)> = vec![
        (
            "no toleration: NoSchedule keeps the pod off",
            taint("NoSchedule"),
            json!([]),
            untolerated,
        ),
        (
            "operator Equal with key, value and effect",
            taint("NoSchedule"),
            json!([{"key": "key1", "operator": "Equal", "value": "value1", "effect": "NoSchedule"}]),
            "",
        ),
        (
            "operator Exists with the key (no value)",
            taint("NoSchedule"),
            json!([{"key": "key1", "operator": "Exists", "effect": "NoSchedule"}]),
            "",
        ),
        (
            "the operator defaults to Equal",
            taint("NoSchedule"),
            json!([{"key": "key1", "value": "value1", "effect": "NoSchedule"}]),
            "",
        ),
        (
            "an empty key with operator Exists tolerates everything",
            taint("NoSchedule"),
            json!([{"operator": "Exists"}]),
            "",
        ),
        (
            "an empty effect matches all effects with key key1",
            taint("NoExecute"),
            json!([{"key": "key1", "operator": "Exists"}]),
            "",
        ),
        (
            "a different value does not match",
            taint("NoSchedule"),
            json!([{"key": "key1", "operator": "Equal", "value": "value2", "effect": "NoSchedule"}]),
            untolerated,
        ),
        (
            "a different effect does not match",
            taint("NoSchedule"),
            json!([{"key": "key1", "operator": "Exists", "effect": "NoExecute"}]),
            untolerated,
        ),
        (
            "NoExecute taints filter too",
            taint("NoExecute"),
            json!([{"key": "key1", "operator": "Exists", "effect": "NoSchedule"}]),
            untolerated,
        ),
        (
            "PreferNoSchedule never filters (it only scores)",
            taint("PreferNoSchedule"),
            json!([]),
            "",
        ),
        (
            "the docs' three taints: tolerating the two key1 taints leaves key2",
            json!([{"key": "key1", "value": "value1", "effect": "NoSchedule"},
                   {"key": "key1", "value": "value1", "effect": "NoExecute"},
                   {"key": "key2", "value": "value2", "effect": "NoSchedule"}]),
            json!([{"key": "key1", "operator": "Equal", "value": "value1", "effect": "NoSchedule"},
                   {"key": "key1", "operator": "Equal", "value": "value1", "effect": "NoExecute"}]),
            "node(s) had untolerated taint {key2: value2}",
        ),
        (
            "a taint without value prints as {key: }",
            json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]),
            json!([]),
            "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }",
        ),
    ];
    for (doc, taints, tolerations, want) in cases {
        let l = ledger(&[n("node1", json!({"taints": taints}))], &[]);
        let pod = p("p", json!({"tolerations": tolerations}));
        assert_eq!(why(&l, &pod, "node1"), want, "{doc}");
    }
}

#[test]
fn cordoned_nodes_and_the_unschedulable_toleration() {
    // kubernetes.io "Taints and Tolerations", taint-based: a cordoned node
    // (spec.unschedulable) acts as node.kubernetes.io/unschedulable:
    // NoSchedule, which DaemonSet pods tolerate (upstream NodeUnschedulable).
    let key = "node.kubernetes.io/unschedulable";
    let cases: Vec<(&str, Value, bool)> = vec![
        ("no toleration", json!([]), false),
        (
            "Exists, NoSchedule (as DaemonSets add)",
            json!([{"key": key, "operator": "Exists", "effect": "NoSchedule"}]),
            true,
        ),
        (
            "Exists, any effect",
            json!([{"key": key, "operator": "Exists"}]),
            true,
        ),
        ("tolerate everything", json!([{"operator": "Exists"}]), true),
        (
            "the wrong effect",
            json!([{"key": key, "operator": "Exists", "effect": "NoExecute"}]),
            false,
        ),
        (
            "Equal with a value the taint does not have",
            json!([{"key": key, "operator": "Equal", "value": "true"}]),
            false,
        ),
    ];
    let l = ledger(&[n("n1", json!({"unschedulable": true}))], &[]);
    for (doc, tolerations, fits) in cases {
        let got = why(&l, &p("p", json!({"tolerations": tolerations})), "n1");
        let want = if fits {
            ""
        } else {
            "node(s) were unschedulable"
        };
        assert_eq!(got, want, "{doc}");
    }
}

#[test]
fn node_name() {
    // Upstream NodeName: a pod with spec.nodeName fits only that node.
    let l = ledger(&[n("a", json!({})), n("b", json!({}))], &[]);
    let pod = p("p", json!({"nodeName": "b"}));
    assert_eq!(feasible(&l, &pod), names(&["b"]));
    assert_eq!(
        why(&l, &pod, "a"),
        "node(s) didn't match the requested node name"
    );
}

// ----- NodeResourcesFit -----------------------------------------------------

#[test]
fn resources_fit() {
    // kubernetes.io "Resource Management for Pods and Containers" (a pod's
    // request is the sum of its containers'), "Init Containers" (resource
    // sharing: the highest init request versus the sum of the app
    // containers), "Sidecar Containers" (sidecars run alongside: their
    // requests add to the app containers' and to later init containers'),
    // "Pod Overhead" (added to the requests) and extended resources.
    // The node: 1 cpu, 1Gi, 3 pods, 4 example.com/foo, 10Gi ephemeral
    // storage; 300m / 256Mi are in use, so 700m / 768Mi are free.
    let node = n(
        "n",
        json!({"alloc": {"cpu": "1", "memory": "1Gi", "pods": "3",
                          "example.com/foo": "4", "ephemeral-storage": "10Gi"}}),
    );
    let l = ledger(
        &[node],
        &[p(
            "used",
            json!({"req": {"cpu": "300m", "memory": "256Mi"}, "node": "n"}),
        )],
    );
    let c = |name: &str, cpu: &str| json!({"name": name, "resources": {"requests": {"cpu": cpu}}});
    let side = |name: &str, cpu: &str| json!({"name": name, "restartPolicy": "Always", "resources": {"requests": {"cpu": cpu}}});
    let unres = Code::UnschedulableAndUnresolvable;
    let sched = Code::Unschedulable;
    /// `None`: fits; else the node's status code and reasons.
    type Want<'a> = Option<(Code, &'a str)>;
    let cases: Vec<(&str, Value, Want)> = vec![
        (
            "two containers' requests add up: 350m + 350m fit in 700m",
            json!({"containers": [c("a", "350m"), c("b", "350m")]}),
            None,
        ),
        (
            "351m + 350m do not",
            json!({"containers": [c("a", "351m"), c("b", "350m")]}),
            Some((sched, "Insufficient cpu")),
        ),
        (
            "init containers: the highest init request (700m) counts, not their sum",
            json!({"containers": [c("a", "100m")], "initContainers": [c("i1", "700m"), c("i2", "600m")]}),
            None,
        ),
        (
            "an init container above the free cpu",
            json!({"containers": [c("a", "100m")], "initContainers": [c("i1", "701m")]}),
            Some((sched, "Insufficient cpu")),
        ),
        (
            "an init container above allocatable cannot fit even on an empty node",
            json!({"containers": [c("a", "100m")], "initContainers": [c("i1", "1100m")]}),
            Some((unres, "Insufficient cpu")),
        ),
        (
            "a sidecar adds to the app containers: 500m + 200m",
            json!({"containers": [c("a", "500m")], "initContainers": [side("s", "200m")]}),
            None,
        ),
        (
            "500m + 201m",
            json!({"containers": [c("a", "500m")], "initContainers": [side("s", "201m")]}),
            Some((sched, "Insufficient cpu")),
        ),
        (
            "an init container after a sidecar runs beside it: 100m + 600m",
            json!({"containers": [c("a", "100m")], "initContainers": [side("s", "100m"), c("i", "600m")]}),
            None,
        ),
        (
            "100m + 601m",
            json!({"containers": [c("a", "100m")], "initContainers": [side("s", "100m"), c("i", "601m")]}),
            Some((sched, "Insufficient cpu")),
        ),
        (
            "an init container before the sidecar does not see it: max(650m, 500m + 100m)",
            json!({"containers": [c("a", "500m")], "initContainers": [c("i", "650m"), side("s", "100m")]}),
            None,
        ),
        (
            "overhead is added: 600m + 100m",
            json!({"req": {"cpu": "600m"}, "overhead": {"cpu": "100m"}}),
            None,
        ),
        (
            "600m + 101m",
            json!({"req": {"cpu": "600m"}, "overhead": {"cpu": "101m"}}),
            Some((sched, "Insufficient cpu")),
        ),
        (
            "memory: 768Mi fits",
            json!({"req": {"memory": "768Mi"}}),
            None,
        ),
        (
            "769Mi does not",
            json!({"req": {"memory": "769Mi"}}),
            Some((sched, "Insufficient memory")),
        ),
        (
            "cpu and memory short: every reason, unresolvable if any is",
            json!({"req": {"cpu": "2", "memory": "800Mi"}}),
            Some((unres, "Insufficient cpu, Insufficient memory")),
        ),
        (
            "extended resources: all 4 example.com/foo",
            json!({"req": {"example.com/foo": "4"}}),
            None,
        ),
        (
            "5 example.com/foo is more than the node has",
            json!({"req": {"example.com/foo": "5"}}),
            Some((unres, "Insufficient example.com/foo")),
        ),
        (
            "an extended resource the node does not advertise",
            json!({"req": {"example.com/bar": "1"}}),
            Some((unres, "Insufficient example.com/bar")),
        ),
        (
            "ephemeral storage",
            json!({"req": {"ephemeral-storage": "11Gi"}}),
            Some((unres, "Insufficient ephemeral-storage")),
        ),
        (
            "a pod without requests needs only a pod slot",
            json!({}),
            None,
        ),
    ];
    let cfg = Config::default();
    for (doc, spec, want) in cases {
        let pod = info(&p("p", spec));
        let got = match schedule(&l, &pod, &cfg, 0) {
            Ok(_) => None,
            Err(u) => {
                let st = &u.node_statuses["n"];
                Some((st.code, st.reasons.join(", ")))
            }
        };
        assert_eq!(got, want.map(|(c, r)| (c, r.to_string())), "{doc}");
    }
    // The node's pod limit (status.allocatable.pods).
    let full = ledger(
        &[n("n", json!({"alloc": {"pods": "2"}}))],
        &[p("a", json!({"node": "n"})), p("b", json!({"node": "n"}))],
    );
    let u = schedule(&full, &info(&p("p", json!({}))), &cfg, 0).unwrap_err();
    assert_eq!(u.message, "0/1 nodes are available: 1 Too many pods.");
    assert_eq!(u.node_statuses["n"].code, Code::Unschedulable);
}

// ----- NodePorts ------------------------------------------------------------

#[test]
fn host_ports() {
    // kubernetes.io "Configuration Best Practices" on hostPort: each
    // <hostIP, hostPort, protocol> combination must be unique; upstream
    // NodePorts: 0.0.0.0 (the default) conflicts with every IP, sidecars'
    // ports count, regular init containers' do not.
    let port = |port: i64, ip: &str, proto: &str| json!({"containerPort": port, "hostPort": port, "hostIP": ip, "protocol": proto});
    let existing = p(
        "existing",
        json!({"node": "n",
               "containers": [{"name": "c", "ports": [port(8080, "", ""), port(53, "127.0.0.1", "UDP")]}],
               "initContainers": [{"name": "s", "restartPolicy": "Always", "ports": [port(9000, "", "")]},
                                  {"name": "i", "ports": [port(9100, "", "")]}]}),
    );
    let l = ledger(&[n("n", json!({}))], &[existing]);
    let conflict = "node(s) didn't have free ports for the requested pod ports";
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "same port, default IP and protocol",
            json!([port(8080, "", "")]),
            conflict,
        ),
        (
            "a specific IP against 0.0.0.0",
            json!([port(8080, "10.0.0.1", "TCP")]),
            conflict,
        ),
        ("another protocol", json!([port(8080, "", "UDP")]), ""),
        ("another port", json!([port(8081, "", "")]), ""),
        (
            "0.0.0.0 against a specific IP",
            json!([port(53, "0.0.0.0", "UDP")]),
            conflict,
        ),
        (
            "the same specific IP",
            json!([port(53, "127.0.0.1", "UDP")]),
            conflict,
        ),
        (
            "another specific IP",
            json!([port(53, "127.0.0.2", "UDP")]),
            "",
        ),
        (
            "SCTP is its own protocol",
            json!([port(53, "127.0.0.1", "SCTP")]),
            "",
        ),
        (
            "an existing sidecar's port",
            json!([port(9000, "", "")]),
            conflict,
        ),
        (
            "an existing init container's port is free",
            json!([port(9100, "", "")]),
            "",
        ),
        (
            "a containerPort without hostPort binds nothing on the host",
            json!([{"containerPort": 8080}]),
            "",
        ),
    ];
    for (doc, ports, want) in cases {
        let pod = p("p", json!({"containers": [{"name": "c", "ports": ports}]}));
        assert_eq!(why(&l, &pod, "n"), want, "{doc}");
    }
    // The incoming pod's sidecar ports count; its init containers' do not.
    let sidecar = p(
        "p",
        json!({"initContainers": [{"name": "s", "restartPolicy": "Always", "ports": [port(8080, "", "")]}]}),
    );
    assert_eq!(why(&l, &sidecar, "n"), conflict);
    let init = p(
        "p",
        json!({"initContainers": [{"name": "i", "ports": [port(8080, "", "")]}]}),
    );
    assert_eq!(why(&l, &init, "n"), "");
}

// ----- PodTopologySpread ----------------------------------------------------

/// A cluster of `(node, zone, matching pods on it)`; the pods carry
/// `foo: bar` and `pod-template-hash: old`, and every node the label
/// `node: <name>` as in the documentation's examples.
fn spread_cluster(nodes: &[(&str, Option<&str>, usize)], extra: &[Value]) -> Ledger {
    let mut ns = Vec::new();
    let mut ps = Vec::new();
    for (name, zone, count) in nodes {
        let mut labels = json!({"node": name});
        if let Some(z) = zone {
            labels["zone"] = json!(z);
        }
        ns.push(n(name, json!({"labels": labels})));
        for i in 0..*count {
            ps.push(p(
                &format!("{name}-{i}"),
                json!({"node": name, "labels": {"foo": "bar", "pod-template-hash": "old"}}),
            ));
        }
    }
    ns.extend(extra.iter().cloned());
    ledger(&ns, &ps)
}

fn constraint(key: &str, max_skew: i64, extra: Value) -> Value {
    let mut c = json!({"maxSkew": max_skew, "topologyKey": key, "whenUnsatisfiable": "DoNotSchedule",
                       "labelSelector": {"matchLabels": {"foo": "bar"}}});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

#[test]
fn topology_spread_constraints() {
    // kubernetes.io "Pod Topology Spread Constraints".
    let four: &[(&str, Option<&str>, usize)] = &[
        ("node1", Some("zoneA"), 1),
        ("node2", Some("zoneA"), 1),
        ("node3", Some("zoneB"), 1),
        ("node4", Some("zoneB"), 0),
    ];
    let mypod = json!({"foo": "bar", "pod-template-hash": "new"});
    let zone1 = constraint("zone", 1, json!({}));
    let tainted_c = n(
        "node5",
        json!({"labels": {"zone": "zoneC", "node": "node5"},
               "taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]}),
    );
    type Case<'a> = (
        &'a str,
        &'a [(&'a str, Option<&'a str>, usize)],
        Vec<Value>,
        Value,
        Vec<&'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            "one constraint: only zone B keeps the skew within 1",
            four,
            vec![],
            json!({"labels": mypod, "topologySpreadConstraints": [zone1]}),
            vec!["node3", "node4"],
        ),
        (
            "maxSkew 2 lets zone A take it as well",
            four,
            vec![],
            json!({"labels": mypod, "topologySpreadConstraints": [constraint("zone", 2, json!({}))]}),
            vec!["node1", "node2", "node3", "node4"],
        ),
        (
            "topologyKey node: only node4",
            four,
            vec![],
            json!({"labels": mypod, "topologySpreadConstraints": [constraint("node", 1, json!({}))]}),
            vec!["node4"],
        ),
        (
            "ScheduleAnyway never filters",
            four,
            vec![],
            json!({"labels": mypod, "topologySpreadConstraints": [
                constraint("zone", 1, json!({"whenUnsatisfiable": "ScheduleAnyway"}))]}),
            vec!["node1", "node2", "node3", "node4"],
        ),
        (
            "multiple constraints are ANDed: zone B and node4 leave node4",
            four,
            vec![],
            json!({"labels": mypod, "topologySpreadConstraints": [zone1, constraint("node", 1, json!({}))]}),
            vec!["node4"],
        ),
        (
            "conflicting constraints: zone B versus node2, nothing fits",
            &[
                ("node1", Some("zoneA"), 2),
                ("node2", Some("zoneA"), 1),
                ("node3", Some("zoneB"), 2),
            ],
            vec![],
            json!({"labels": mypod, "topologySpreadConstraints": [zone1, constraint("node", 1, json!({}))]}),
            vec![],
        ),
        (
            "implicit conventions: node1 without a zone label is bypassed with its pods",
            &[
                ("node1", None, 2),
                ("node2", Some("zoneA"), 1),
                ("node3", Some("zoneB"), 2),
            ],
            vec![],
            json!({"labels": mypod, "topologySpreadConstraints": [zone1, constraint("node", 1, json!({}))]}),
            vec!["node2"],
        ),
        (
            "3 zones with 2, 2 and 1 matching pods: the global minimum is 1",
            &[
                ("a", Some("zoneA"), 2),
                ("b", Some("zoneB"), 2),
                ("c", Some("zoneC"), 1),
            ],
            vec![],
            json!({"labels": mypod, "topologySpreadConstraints": [zone1]}),
            vec!["c"],
        ),
        (
            "minDomains 3 with 2 zones: the global minimum counts as 0",
            four,
            vec![],
            json!({"labels": mypod, "topologySpreadConstraints": [constraint("zone", 1, json!({"minDomains": 3}))]}),
            vec![],
        ),
        (
            "minDomains 3, maxSkew 2: zone B (1 + 1 - 0) fits",
            four,
            vec![],
            json!({"labels": mypod, "topologySpreadConstraints": [constraint("zone", 2, json!({"minDomains": 3}))]}),
            vec!["node3", "node4"],
        ),
        (
            "minDomains 2 with 2 zones has no effect",
            four,
            vec![],
            json!({"labels": mypod, "topologySpreadConstraints": [constraint("zone", 1, json!({"minDomains": 2}))]}),
            vec!["node3", "node4"],
        ),
        (
            "with node affinity: zone C, excluded by the pod, is no domain (nodeAffinityPolicy Honor)",
            &[
                ("node1", Some("zoneA"), 1),
                ("node2", Some("zoneA"), 1),
                ("node3", Some("zoneB"), 1),
                ("node4", Some("zoneB"), 0),
                ("node5", Some("zoneC"), 0),
            ],
            vec![],
            json!({"labels": mypod, "topologySpreadConstraints": [zone1],
                   "affinity": required_terms(json!([{"matchExpressions": [
                       {"key": "zone", "operator": "NotIn", "values": ["zoneC"]}]}]))}),
            vec!["node3", "node4"],
        ),
        (
            "nodeAffinityPolicy Ignore: empty zone C is the minimum, and excluded",
            &[
                ("node1", Some("zoneA"), 1),
                ("node2", Some("zoneA"), 1),
                ("node3", Some("zoneB"), 1),
                ("node4", Some("zoneB"), 0),
                ("node5", Some("zoneC"), 0),
            ],
            vec![],
            json!({"labels": mypod, "topologySpreadConstraints": [constraint("zone", 1, json!({"nodeAffinityPolicy": "Ignore"}))],
                   "affinity": required_terms(json!([{"matchExpressions": [
                       {"key": "zone", "operator": "NotIn", "values": ["zoneC"]}]}]))}),
            vec![],
        ),
        (
            "nodeTaintsPolicy Honor: a zone whose nodes the pod does not tolerate is no domain",
            four,
            vec![tainted_c.clone()],
            json!({"labels": mypod, "topologySpreadConstraints": [constraint("zone", 1, json!({"nodeTaintsPolicy": "Honor"}))]}),
            vec!["node3", "node4"],
        ),
        (
            "nodeTaintsPolicy Ignore (the default): the tainted empty zone is the minimum",
            four,
            vec![tainted_c],
            json!({"labels": mypod, "topologySpreadConstraints": [zone1]}),
            vec![],
        ),
        (
            "implicit conventions: a pod its own selector does not match adds no skew",
            four,
            vec![],
            json!({"labels": {}, "topologySpreadConstraints": [zone1]}),
            vec!["node1", "node2", "node3", "node4"],
        ),
        (
            "matchLabelKeys pod-template-hash: only the new revision's pods count",
            four,
            vec![],
            json!({"labels": mypod, "topologySpreadConstraints": [
                constraint("node", 1, json!({"matchLabelKeys": ["pod-template-hash"]}))]}),
            vec!["node1", "node2", "node3", "node4"],
        ),
        (
            "an empty labelSelector counts no pods (upstream countPodsMatchSelector)",
            four,
            vec![],
            json!({"labels": mypod, "topologySpreadConstraints": [constraint("zone", 1, json!({"labelSelector": {}}))]}),
            vec!["node1", "node2", "node3", "node4"],
        ),
        (
            "a null labelSelector selects nothing, the incoming pod included",
            four,
            vec![],
            json!({"labels": mypod, "topologySpreadConstraints": [constraint("zone", 1, json!({"labelSelector": null}))]}),
            vec!["node1", "node2", "node3", "node4"],
        ),
    ];
    for (doc, cluster, extra, spec, want) in cases {
        let l = spread_cluster(cluster, &extra);
        assert_eq!(feasible(&l, &p("mypod", spec)), names(&want), "{doc}");
    }
    // The reasons: too much skew may be fixed by removing pods; a node
    // without the key never fits.
    let l = spread_cluster(
        &[
            ("node1", None, 0),
            ("node2", Some("zoneA"), 1),
            ("node3", Some("zoneB"), 0),
        ],
        &[],
    );
    let pod = p(
        "mypod",
        json!({"labels": mypod, "topologySpreadConstraints": [zone1]}),
    );
    assert_eq!(
        why(&l, &pod, "node1"),
        "node(s) didn't match pod topology spread constraints (missing required label)"
    );
    assert_eq!(
        why(&l, &pod, "node2"),
        "node(s) didn't match pod topology spread constraints"
    );
    // Codes: pinned to node1 and node2 (zone domains counted over every
    // node, nodeAffinityPolicy Ignore), neither fits.
    let x = p(
        "x",
        json!({"labels": mypod,
               "topologySpreadConstraints": [constraint("zone", 1, json!({"nodeAffinityPolicy": "Ignore"}))],
               "affinity": required_terms(json!([{"matchExpressions": [
                   {"key": "node", "operator": "In", "values": ["node1", "node2"]}]}]))}),
    );
    let u = schedule(&l, &info(&x), &Config::default(), 0).unwrap_err();
    assert_eq!(
        u.message,
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
         1 node(s) didn't match pod topology spread constraints, \
         1 node(s) didn't match pod topology spread constraints (missing required label)."
    );
    assert_eq!(
        u.node_statuses["node1"].code,
        Code::UnschedulableAndUnresolvable
    );
    assert_eq!(u.node_statuses["node2"].code, Code::Unschedulable);
    assert!(u.preemption_may_help);
}

// ----- InterPodAffinity -----------------------------------------------------

#[test]
fn inter_pod_affinity_and_anti_affinity() {
    // kubernetes.io "Assigning Pods to Nodes", inter-pod affinity and
    // anti-affinity. Zone V: v1 (a security=S1 pod), v2; zone W: w1 (a
    // web pod with anti-affinity to app=web per host); zone R: r1 (a
    // security=S2 pod). All pods in `default`; namespace team-a is
    // labelled team=a and has one security=S3 pod on w1.
    let zone = "topology.kubernetes.io/zone";
    let host = "kubernetes.io/hostname";
    let mut l = ledger(
        &[
            n("v1", json!({"labels": {zone: "V"}})),
            n("v2", json!({"labels": {zone: "V"}})),
            n("w1", json!({"labels": {zone: "W"}})),
            n("r1", json!({"labels": {zone: "R"}})),
        ],
        &[
            p("s1", json!({"node": "v1", "labels": {"security": "S1"}})),
            p("s2", json!({"node": "r1", "labels": {"security": "S2"}})),
            p(
                "web",
                json!({"node": "w1", "labels": {"app": "web"}, "affinity": {"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": host}]}}}),
            ),
            p(
                "s3",
                json!({"node": "w1", "ns": "team-a", "labels": {"security": "S3"}}),
            ),
        ],
    );
    l.set_namespace(&json!({"metadata": {"name": "team-a", "labels": {"team": "a"}}}))
        .unwrap();
    let term = |values: Value, key: &str, extra: Value| {
        let mut t = json!({"labelSelector": {"matchExpressions": [
            {"key": "security", "operator": "In", "values": values}]}, "topologyKey": key});
        for (k, v) in extra.as_object().unwrap() {
            t[k] = v.clone();
        }
        t
    };
    let affinity =
        |t: Value| json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [t]}});
    let anti = |t: Value| json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [t]}});
    let no_affinity = "node(s) didn't match pod affinity rules";
    let no_anti = "node(s) didn't match pod anti-affinity rules";
    let existing_anti = "node(s) didn't satisfy existing pods anti-affinity rules";
    let cases: Vec<(&str, Value, Vec<&str>, &str)> = vec![
        (
            "the docs' pod-with-pod-affinity: only zone V, where a security=S1 pod runs",
            json!({"affinity": affinity(term(json!(["S1"]), zone, json!({})))}),
            vec!["v1", "v2"],
            no_affinity,
        ),
        (
            "affinity per host: only the node with the pod",
            json!({"affinity": affinity(term(json!(["S1", "S2"]), host, json!({})))}),
            vec!["r1", "v1"],
            no_affinity,
        ),
        (
            "anti-affinity per zone keeps out of zone V",
            json!({"affinity": anti(term(json!(["S1"]), zone, json!({})))}),
            vec!["r1", "w1"],
            no_anti,
        ),
        (
            "anti-affinity per host keeps out of v1 only",
            json!({"affinity": anti(term(json!(["S1"]), host, json!({})))}),
            vec!["r1", "v2", "w1"],
            no_anti,
        ),
        (
            "existing pods' anti-affinity is symmetric: an app=web pod avoids w1",
            json!({"labels": {"app": "web"}}),
            vec!["r1", "v1", "v2"],
            existing_anti,
        ),
        (
            "no pod matches: the pod stays pending",
            json!({"affinity": affinity(term(json!(["S9"]), zone, json!({})))}),
            vec![],
            no_affinity,
        ),
        (
            "the first pod of a group with affinity to itself may go anywhere",
            json!({"labels": {"security": "S9"}, "affinity": affinity(term(json!(["S9"]), zone, json!({})))}),
            vec!["r1", "v1", "v2", "w1"],
            "",
        ),
        (
            "a topology key no node has never matches",
            json!({"labels": {"security": "S9"}, "affinity": affinity(term(json!(["S9"]), "rack", json!({})))}),
            vec![],
            no_affinity,
        ),
        (
            "terms match the pod's own namespace by default",
            json!({"affinity": affinity(term(json!(["S3"]), zone, json!({})))}),
            vec![],
            no_affinity,
        ),
        (
            "namespaces lists other namespaces",
            json!({"affinity": affinity(term(json!(["S3"]), zone, json!({"namespaces": ["team-a"]})))}),
            vec!["w1"],
            no_affinity,
        ),
        (
            "namespaceSelector selects namespaces by label",
            json!({"affinity": affinity(term(json!(["S3"]), zone, json!({"namespaceSelector": {"matchLabels": {"team": "a"}}})))}),
            vec!["w1"],
            no_affinity,
        ),
        (
            "an empty namespaceSelector selects every namespace",
            json!({"affinity": affinity(term(json!(["S1", "S3"]), host, json!({"namespaceSelector": {}})))}),
            vec!["v1", "w1"],
            no_affinity,
        ),
    ];
    for (doc, spec, want, reason) in cases {
        let pod = p("p", spec);
        assert_eq!(feasible(&l, &pod), names(&want), "{doc}");
        for node in l.node_names() {
            if !want.contains(&node.as_str()) {
                assert_eq!(why(&l, &pod, &node), reason, "{doc}: {node}");
            }
        }
    }
}

#[test]
fn redis_cache_and_web_store_colocation() {
    // kubernetes.io "Assigning Pods to Nodes", "More practical use-cases":
    // 3 redis-cache replicas with anti-affinity to each other, 3
    // web-store replicas with anti-affinity to each other and affinity to
    // redis-cache: one of each per node. A 4th web-store replica has
    // nowhere to go.
    let host = "kubernetes.io/hostname";
    let term = |app: &str| {
        json!({"labelSelector": {"matchExpressions": [
        {"key": "app", "operator": "In", "values": [app]}]}, "topologyKey": host})
    };
    let mut l = ledger(
        &[
            n("node-1", json!({})),
            n("node-2", json!({})),
            n("node-3", json!({})),
        ],
        &[],
    );
    let mut cache_on = BTreeMap::new();
    for i in 1..=3 {
        let cache = info(&p(
            &format!("redis-cache-{i}"),
            json!({"labels": {"app": "store"}, "affinity": {"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [term("store")]}}}),
        ));
        cache_on.insert(place(&mut l, cache.into()).unwrap(), i);
    }
    assert_eq!(cache_on.len(), 3);
    let web = |i: usize| {
        p(
            &format!("web-server-{i}"),
            json!({"labels": {"app": "web-store"}, "affinity": {
                "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("web-store")]},
                "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("store")]}}}),
        )
    };
    let mut web_on = BTreeMap::new();
    for i in 1..=3 {
        web_on.insert(place(&mut l, info(&web(i)).into()).unwrap(), i);
    }
    assert_eq!(
        web_on.keys().collect::<Vec<_>>(),
        cache_on.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        failed_scheduling(&l, &web(4)),
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
}

// ----- Scores ---------------------------------------------------------------

#[test]
fn scores() {
    // The winning node and its weighted total under the default weights
    // (TaintToleration 3, NodeAffinity 2, NodeResourcesFit 1,
    // PodTopologySpread 2, InterPodAffinity 2, BalancedAllocation 1).
    // Nodes: 4000m cpu and 10000 bytes of memory unless labelled.
    let plain = |name: &str, extra: Value| {
        let mut e = extra;
        e["alloc"] = json!({"cpu": "4", "memory": "10000"});
        n(name, e)
    };
    let used = |node: &str, cpu: &str, mem: &str| {
        p(
            &format!("used-{node}"),
            json!({"node": node, "req": {"cpu": cpu, "memory": mem}}),
        )
    };
    let pod = json!({"req": {"cpu": "1", "memory": "2000"}});
    let most = Config {
        scoring_strategy: ScoringStrategy::MostAllocated,
        ..Config::default()
    };
    type Case<'a> = (&'a str, Vec<Value>, Vec<Value>, Value, Config, &'a str, i64);
    let cases: Vec<Case> = vec![
        (
            // n1: cpu (4000-1000)/4000 = 75, memory 80 -> 77; balanced
            // |0.25 - 0.2| / 2 -> 97; no PreferNoSchedule taints -> 3 x 100.
            // n2: 25, 30 -> 27; 97; 300.
            "LeastAllocated (the default) spreads: the emptier node",
            vec![plain("n1", json!({})), plain("n2", json!({}))],
            vec![used("n2", "2", "5000")],
            pod.clone(),
            Config::default(),
            "n1",
            77 + 97 + 300,
        ),
        (
            // "Resource Bin Packing": n2 75, 70 -> 72.
            "MostAllocated bin-packs: the fuller node",
            vec![plain("n1", json!({})), plain("n2", json!({}))],
            vec![used("n2", "2", "5000")],
            pod.clone(),
            most,
            "n2",
            72 + 97 + 300,
        ),
        (
            // n1: cpu 0.75 -> 25, memory 0.3 -> 70: 47, balanced 0.225 -> 77.
            // n2: 0.5 and 0.5: 50, balanced 100.
            "BalancedAllocation prefers even cpu and memory use",
            vec![plain("n1", json!({})), plain("n2", json!({}))],
            vec![used("n1", "2", "0"), used("n2", "1", "2000")],
            json!({"req": {"cpu": "1", "memory": "3000"}}),
            Config::default(),
            "n2",
            50 + 100 + 300,
        ),
        (
            "PreferNoSchedule: the untolerated soft taint scores 0 for TaintToleration",
            vec![
                plain(
                    "n1",
                    json!({"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}),
                ),
                plain("n2", json!({})),
            ],
            vec![],
            pod.clone(),
            Config::default(),
            "n2",
            77 + 97 + 300,
        ),
        (
            // "Node affinity weight": raw 1 and 50 normalise to 2 and 100.
            "preferred node affinity: the weight-50 term beats the weight-1 term",
            vec![
                plain("n1", json!({"labels": {"label-1": "key-1"}})),
                plain("n2", json!({"labels": {"label-2": "key-2"}})),
            ],
            vec![],
            json!({"req": {"cpu": "1", "memory": "2000"}, "affinity": {"nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [{"key": "label-1", "operator": "In", "values": ["key-1"]}]}},
                {"weight": 50, "preference": {"matchExpressions": [{"key": "label-2", "operator": "In", "values": ["key-2"]}]}}]}}}),
            Config::default(),
            "n2",
            77 + 97 + 300 + 2 * 100,
        ),
    ];
    for (doc, nodes, pods, spec, config, want_node, want_score) in cases {
        let l = ledger(&nodes, &pods);
        let got = schedule(&l, &info(&p("p", spec)), &config, 0).unwrap();
        assert_eq!(
            (got.node.as_str(), got.score),
            (want_node, want_score),
            "{doc}"
        );
    }
    // A tolerated PreferNoSchedule taint costs nothing: equal totals.
    let l = ledger(
        &[
            plain(
                "n1",
                json!({"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}),
            ),
            plain("n2", json!({})),
        ],
        &[],
    );
    let tolerant = p(
        "p",
        json!({"req": {"cpu": "1", "memory": "2000"},
               "tolerations": [{"key": "k", "operator": "Exists", "effect": "PreferNoSchedule"}]}),
    );
    assert_eq!(
        schedule(&l, &info(&tolerant), &Config::default(), 0)
            .unwrap()
            .score,
        77 + 97 + 300
    );
}

#[test]
fn preferred_pod_affinity_and_spreading_pick_the_documented_domain() {
    // "Assigning Pods to Nodes": the docs' pod requires a security=S1 pod
    // in its zone and prefers (weight 100) a zone without security=S2:
    // zones V and W both have S1, only V has S2, so W.
    // "Pod Topology Spread Constraints": ScheduleAnyway prefers the zone
    // with fewer matching pods.
    let zone = "topology.kubernetes.io/zone";
    let sel = |v: &str| json!({"matchExpressions": [{"key": "security", "operator": "In", "values": [v]}]});
    let l = ledger(
        &[
            n("v1", json!({"labels": {zone: "V"}})),
            n("v2", json!({"labels": {zone: "V"}})),
            n("w1", json!({"labels": {zone: "W"}})),
        ],
        &[
            p("a", json!({"node": "v1", "labels": {"security": "S1"}})),
            p("b", json!({"node": "v2", "labels": {"security": "S2"}})),
            p("c", json!({"node": "w1", "labels": {"security": "S1"}})),
        ],
    );
    let pod = p(
        "with-pod-affinity",
        json!({"affinity": {
            "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": sel("S1"), "topologyKey": zone}]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "podAffinityTerm": {"labelSelector": sel("S2"), "topologyKey": zone}}]}}}),
    );
    assert_eq!(
        schedule(&l, &info(&pod), &Config::default(), 0)
            .unwrap()
            .node,
        "w1"
    );
    let l = spread_cluster(
        &[
            ("node1", Some("zoneA"), 1),
            ("node2", Some("zoneA"), 1),
            ("node3", Some("zoneB"), 0),
        ],
        &[],
    );
    let soft = p(
        "mypod",
        json!({"labels": {"foo": "bar"}, "topologySpreadConstraints": [
            constraint("zone", 1, json!({"whenUnsatisfiable": "ScheduleAnyway"}))]}),
    );
    assert_eq!(
        schedule(&l, &info(&soft), &Config::default(), 0)
            .unwrap()
            .node,
        "node3"
    );
}

// ----- FailedScheduling messages --------------------------------------------

#[test]
fn failed_scheduling_messages() {
    // Upstream FitError: "0/N nodes are available: " then "<count> <reason>"
    // entries sorted as strings, then DefaultPreemption's "preemption: "
    // part (one period at the end since Kubernetes 1.30).
    let cp_taint =
        json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]);
    let mut gpu = n("worker", json!({}));
    gpu["status"]["allocatable"]["nvidia.com/gpu"] = json!("1");
    let wants_gpu = |name: &str| {
        let mut v = p(name, json!({}));
        v["spec"]["containers"][0]["resources"] = json!({"requests": {"nvidia.com/gpu": "1"}});
        v
    };
    let mut gpu_user = wants_gpu("trainer");
    gpu_user["spec"]["nodeName"] = json!("worker");
    let pinned = |node: &str| {
        json!({"req": {"cpu": "8"}, "affinity": required_terms(json!([{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": [node]}]}]))})
    };
    type Case<'a> = (&'a str, Vec<Value>, Vec<Value>, Value, &'a str);
    let cases: Vec<Case> = vec![
        (
            "a single-node cluster whose control plane is tainted",
            vec![n("cp", json!({"taints": cp_taint.clone()}))],
            vec![],
            p("p", json!({})),
            "0/1 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }. \
             preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
        ),
        (
            "a GPU in use on the worker, the control plane tainted",
            vec![n("cp", json!({"taints": cp_taint.clone()})), gpu],
            vec![gpu_user],
            wants_gpu("p"),
            "0/2 nodes are available: 1 Insufficient nvidia.com/gpu, 1 node(s) had untolerated taint \
             {node-role.kubernetes.io/control-plane: }. preemption: 0/2 nodes are available: \
             1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling.",
        ),
        (
            "one node can report several reasons",
            vec![n("n1", json!({"alloc": {"cpu": "1", "memory": "1Gi"}}))],
            vec![p("x", json!({"node": "n1", "req": {"cpu": "900m", "memory": "900Mi"}}))],
            p("p", json!({"req": {"cpu": "500m", "memory": "500Mi"}})),
            "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory. \
             preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.",
        ),
        (
            "filters run in order, the first failure is reported: cordoned before tainted",
            vec![n("n1", json!({"unschedulable": true, "taints": cp_taint.clone()}))],
            vec![],
            p("p", json!({})),
            "0/1 nodes are available: 1 node(s) were unschedulable. \
             preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
        ),
        (
            "a DaemonSet-style pin: the other nodes fail NodeAffinity's PreFilter",
            vec![n("a", json!({})), n("b", json!({})), n("c", json!({}))],
            vec![],
            p("p", pinned("b")),
            "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't satisfy plugin(s) [NodeAffinity]. \
             preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.",
        ),
        (
            "metadata.name terms that cannot both hold: a PreFilter rejection",
            vec![n("a", json!({})), n("b", json!({}))],
            vec![],
            p("p", json!({"affinity": required_terms(json!([{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": ["a"]},
                {"key": "metadata.name", "operator": "In", "values": ["b"]}]}]))})),
            "0/2 nodes are available: pod affinity terms conflict. \
             preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.",
        ),
        (
            "preemptionPolicy: Never",
            vec![n("n1", json!({"alloc": {"cpu": "1"}}))],
            vec![p("x", json!({"node": "n1", "req": {"cpu": "1"}}))],
            p("p", json!({"req": {"cpu": "1"}, "priority": 1000, "preemptionPolicy": "Never"})),
            "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never.",
        ),
    ];
    for (doc, nodes, pods, pod, want) in cases {
        let l = ledger(&nodes, &pods);
        assert_eq!(failed_scheduling(&l, &pod), want, "{doc}");
    }
    let u = schedule(
        &Ledger::new(),
        &info(&p("p", json!({}))),
        &Config::default(),
        0,
    )
    .unwrap_err();
    assert_eq!(u.message, "no nodes available to schedule pods");
}

// ----- PrioritySort ---------------------------------------------------------

#[test]
fn priority_sort() {
    // kubernetes.io "Pod Priority and Preemption": higher priority pods are
    // scheduled first; equal priorities in arrival order (upstream
    // PrioritySort, by the queue timestamp; here creationTimestamp).
    let q = |name: &str, prio: i32, created: &str| {
        info(
            &json!({"metadata": {"name": name, "uid": name, "creationTimestamp": created},
                      "spec": {"priority": prio}}),
        )
    };
    let mut pods = [
        q("low-old", 0, "2024-01-01T00:00:00Z"),
        q("high-new", 1000, "2024-03-01T00:00:00Z"),
        q("mid", 10, "2024-02-01T00:00:00Z"),
        q("high-old", 1000, "2024-01-15T00:00:00Z"),
        q("negative", -5, "2023-01-01T00:00:00Z"),
    ];
    pods.sort_by(queue_order);
    let order: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        order,
        vec!["high-old", "high-new", "mid", "low-old", "negative"]
    );
}
