//! Property tests: no overbooking, required node affinity and pod
//! anti-affinity always hold, decisions are deterministic, and the
//! incremental ledger equals one rebuilt from scratch.

use std::collections::BTreeMap;
use std::sync::Arc;

use navarch_scheduler::{
    preempt, schedule, Check, Config, Hold, HostPort, Ledger, PodInfo, PreemptOutcome, Resources,
};
use proptest::prelude::*;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
struct NodeSpec {
    cpu: i64,
    mem_mi: i64,
    pods: i64,
    zone: Option<u8>,
    host_network: bool,
    tainted: bool,
}

fn node_spec() -> impl Strategy<Value = NodeSpec> {
    (
        500i64..8000,
        256i64..16384,
        1i64..8,
        prop::option::weighted(0.9, 0u8..3),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(cpu, mem_mi, pods, zone, host_network, tainted)| NodeSpec {
                cpu,
                mem_mi,
                pods,
                zone,
                host_network,
                tainted,
            },
        )
}

fn node_json(i: usize, n: &NodeSpec) -> Value {
    let mut labels = json!({"kubernetes.io/hostname": format!("n{i}")});
    if let Some(z) = n.zone {
        labels["zone"] = json!(format!("z{z}"));
    }
    if n.host_network {
        labels["navarch.io/host-network-pods"] = json!("true");
    }
    let taints = if n.tainted {
        json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}])
    } else {
        json!([])
    };
    json!({"metadata": {"name": format!("n{i}"), "labels": labels},
           "spec": {"taints": taints},
           "status": {"allocatable": {"cpu": format!("{}m", n.cpu), "memory": format!("{}Mi", n.mem_mi),
                                      "pods": n.pods.to_string()}}})
}

#[derive(Debug, Clone)]
struct PodSpec {
    cpu: Option<i64>,
    mem_mi: Option<i64>,
    init_cpu: Option<i64>,
    sidecar_cpu: Option<i64>,
    overhead_cpu: Option<i64>,
    port: Option<(i64, i64)>,
    app: u8,
    zone_selector: Option<u8>,
    anti: Option<bool>, // Some(true): zone, Some(false): hostname
    tolerate: bool,
    priority: i32,
    /// A zone DoNotSchedule constraint on the pod's app: (maxSkew,
    /// nodeAffinityPolicy Honor?).
    spread: Option<(i64, bool)>,
}

fn pod_spec() -> impl Strategy<Value = PodSpec> {
    (
        (
            prop::option::of(0i64..3000),
            prop::option::of(0i64..4096),
            prop::option::weighted(0.2, 0i64..4000),
        ),
        (
            prop::option::weighted(0.2, 0i64..500),
            prop::option::weighted(0.1, 0i64..200),
        ),
        prop::option::weighted(
            0.3,
            (
                prop::sample::select(vec![80i64, 8080]),
                prop::sample::select(vec![0i64, 8080, 8081]),
            ),
        ),
        (
            0u8..3,
            prop::option::weighted(0.2, 0u8..3),
            prop::option::weighted(0.3, any::<bool>()),
            any::<bool>(),
            0i32..3,
        ),
        prop::option::weighted(0.3, (1i64..3, any::<bool>())),
    )
        .prop_map(
            |(
                (cpu, mem_mi, init_cpu),
                (sidecar_cpu, overhead_cpu),
                port,
                (app, zone_selector, anti, tolerate, priority),
                spread,
            )| PodSpec {
                cpu,
                mem_mi,
                init_cpu,
                sidecar_cpu,
                overhead_cpu,
                port,
                app,
                zone_selector,
                anti,
                tolerate,
                priority,
                spread,
            },
        )
}

fn pod_json(i: usize, p: &PodSpec) -> Value {
    let mut req = json!({});
    if let Some(c) = p.cpu {
        req["cpu"] = json!(format!("{c}m"));
    }
    if let Some(m) = p.mem_mi {
        req["memory"] = json!(format!("{m}Mi"));
    }
    let mut c = json!({"name": "c", "resources": {"requests": req}});
    if let Some((cp, hp)) = p.port {
        c["ports"] = json!([{"containerPort": cp, "hostPort": hp}]);
    }
    let mut spec = json!({"containers": [c], "priority": p.priority});
    let mut init = Vec::new();
    if let Some(s) = p.sidecar_cpu {
        init.push(json!({"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": format!("{s}m")}}}));
    }
    if let Some(i) = p.init_cpu {
        init.push(json!({"name": "init", "resources": {"requests": {"cpu": format!("{i}m")}}}));
    }
    spec["initContainers"] = json!(init);
    if let Some(o) = p.overhead_cpu {
        spec["overhead"] = json!({"cpu": format!("{o}m")});
    }
    if let Some(z) = p.zone_selector {
        spec["nodeSelector"] = json!({"zone": format!("z{z}")});
    }
    if let Some(zone) = p.anti {
        let key = if zone {
            "zone"
        } else {
            "kubernetes.io/hostname"
        };
        spec["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": format!("a{}", p.app)}}, "topologyKey": key}]}});
    }
    if p.tolerate {
        spec["tolerations"] = json!([{"key": "dedicated", "operator": "Exists"}]);
    }
    if let Some((skew, honor)) = p.spread {
        spec["topologySpreadConstraints"] = json!([{"maxSkew": skew, "topologyKey": "zone",
            "whenUnsatisfiable": "DoNotSchedule", "nodeAffinityPolicy": if honor { "Honor" } else { "Ignore" },
            "labelSelector": {"matchLabels": {"app": format!("a{}", p.app)}}}]);
    }
    json!({"metadata": {"name": format!("p{i}"), "namespace": "default", "uid": format!("p{i}"),
                        "labels": {"app": format!("a{}", p.app)}},
           "spec": spec})
}

/// Upstream's request arithmetic, written out independently.
fn expected_cpu(p: &PodSpec) -> i64 {
    let app = p.cpu.unwrap_or(0) + p.sidecar_cpu.unwrap_or(0);
    let init = p
        .init_cpu
        .map(|i| i + p.sidecar_cpu.unwrap_or(0))
        .unwrap_or(0);
    app.max(init) + p.overhead_cpu.unwrap_or(0)
}

fn ports_of(p: &PodSpec, host_network: bool) -> Vec<i64> {
    let mut out = Vec::new();
    if let Some((cp, hp)) = p.port {
        if hp > 0 {
            out.push(hp);
        }
        if host_network && cp != hp {
            out.push(cp);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn placements_never_overbook_or_break_affinity(
        nodes in prop::collection::vec(node_spec(), 1..10),
        pods in prop::collection::vec(pod_spec(), 1..40),
        hold_cpu in prop::option::of(0i64..2000),
    ) {
        let mut l = Ledger::new();
        for (i, n) in nodes.iter().enumerate() {
            l.add_node(&node_json(i, n)).unwrap();
        }
        let mut hold_on = None;
        if let Some(c) = hold_cpu {
            let h = Hold { resources: Resources { milli_cpu: c, pods: 1, ..Default::default() },
                           host_ports: vec![HostPort::new("TCP", "", 8081)] };
            if l.add_hold("offer", "n0", h).is_ok() {
                hold_on = Some(c);
            }
        }
        let config = Config::default();
        let mut placed: BTreeMap<usize, Vec<usize>> = BTreeMap::new(); // node -> pods
        let mut start = 0;
        for (i, p) in pods.iter().enumerate() {
            let info = Arc::new(PodInfo::from_json(&pod_json(i, p)).unwrap());
            let decision = schedule(&l, &info, &config, start);
            // Same snapshot, same decision; a clone is the same snapshot.
            prop_assert_eq!(&decision, &schedule(&l, &info, &config, start));
            prop_assert_eq!(&decision, &schedule(&l.clone(), &info, &config, start));
            match decision {
                Ok(pl) => {
                    start = pl.next_start_index;
                    let chosen: usize = pl.node[1..].parse().unwrap();
                    if let Some((skew, honor)) = p.spread {
                        // Upstream's skew rule, recomputed from scratch.
                        let eligible = |n: usize| {
                            nodes[n].zone.is_some() && (!honor || p.zone_selector.is_none_or(|z| nodes[n].zone == Some(z)))
                        };
                        let mut counts: BTreeMap<u8, i64> = BTreeMap::new();
                        for (n, spec) in nodes.iter().enumerate() {
                            if eligible(n) {
                                counts.entry(spec.zone.unwrap()).or_insert(0);
                            }
                        }
                        for (n, list) in &placed {
                            if eligible(*n) {
                                let same = list.iter().filter(|j| pods[**j].app == p.app).count() as i64;
                                *counts.get_mut(&nodes[*n].zone.unwrap()).unwrap() += same;
                            }
                        }
                        let min = counts.values().copied().min().unwrap_or(0);
                        let zone = nodes[chosen].zone;
                        prop_assert!(zone.is_some(), "spread pod {} placed on a node without the key", i);
                        let mine = counts.get(&zone.unwrap()).copied().unwrap_or(0);
                        prop_assert!(mine + 1 - min <= skew, "pod {}: skew {} + 1 - {} > {}", i, mine, min, skew);
                    }
                    // A decision on the current ledger always commits.
                    l.reserve(&pl.node, info.clone(), Check::All).unwrap();
                    placed.entry(chosen).or_default().push(i);
                }
                Err(u) => {
                    start = u.next_start_index;
                    let prefix = format!("0/{} nodes are available", nodes.len());
                    prop_assert!(u.message.starts_with(&prefix), "{}", u.message);
                }
            }
        }
        for (n, list) in &placed {
            let spec = &nodes[*n];
            // Resources, recomputed independently, including the hold.
            let mut cpu: i64 = list.iter().map(|i| expected_cpu(&pods[*i])).sum();
            let mut slots = list.len() as i64;
            if *n == 0 {
                if let Some(c) = hold_on {
                    cpu += c;
                    slots += 1;
                }
            }
            let mem: i64 = list.iter().map(|i| pods[*i].mem_mi.unwrap_or(0) << 20).sum();
            prop_assert!(cpu <= spec.cpu, "node n{} cpu {} > {}", n, cpu, spec.cpu);
            prop_assert!(mem <= spec.mem_mi << 20);
            prop_assert!(slots <= spec.pods);
            let r = l.requested(&format!("n{n}")).unwrap();
            prop_assert_eq!(r.milli_cpu, cpu);
            prop_assert_eq!(r.memory, mem);
            // Host ports are unique per node (all on 0.0.0.0/TCP here).
            let mut ports: Vec<i64> = list.iter().flat_map(|i| ports_of(&pods[*i], spec.host_network)).collect();
            if *n == 0 && hold_on.is_some() {
                ports.push(8081);
            }
            let total = ports.len();
            ports.sort();
            ports.dedup();
            prop_assert_eq!(ports.len(), total, "host port conflict on n{}", n);
            for i in list {
                let p = &pods[*i];
                // Required node affinity and taints.
                if let Some(z) = p.zone_selector {
                    prop_assert_eq!(spec.zone, Some(z));
                }
                prop_assert!(!spec.tainted || p.tolerate);
                // Anti-affinity, in both directions.
                if let Some(by_zone) = p.anti {
                    for (m, others) in &placed {
                        let same = if by_zone {
                            spec.zone.is_some() && nodes[*m].zone == spec.zone
                        } else {
                            m == n
                        };
                        if !same {
                            continue;
                        }
                        for j in others {
                            if j != i {
                                prop_assert!(pods[*j].app != p.app,
                                    "pod {} (anti a{} by {}) shares a domain with pod {}", i, p.app,
                                    if by_zone { "zone" } else { "host" }, j);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn incremental_ledger_equals_rebuild(
        nodes in prop::collection::vec(node_spec(), 1..6),
        events in prop::collection::vec((0usize..20, prop::option::of(0usize..6), pod_spec(), 0u8..10), 1..80),
    ) {
        let mut l = Ledger::new();
        let mut present = vec![true; nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            l.add_node(&node_json(i, n)).unwrap();
        }
        let mut state: BTreeMap<usize, (Option<usize>, PodSpec)> = BTreeMap::new();
        for (pod, node, spec, op) in events {
            match op {
                0 => {
                    l.remove_pod(&format!("p{pod}"));
                    state.remove(&pod);
                }
                1 => {
                    // Toggle a node's presence (and host-network flag).
                    let n = pod % nodes.len();
                    if present[n] {
                        l.remove_node(&format!("n{n}"));
                    } else {
                        l.add_node(&node_json(n, &nodes[n])).unwrap();
                    }
                    present[n] = !present[n];
                }
                _ => {
                    let mut v = pod_json(pod, &spec);
                    if let Some(n) = node {
                        v["spec"]["nodeName"] = json!(format!("n{}", n % nodes.len()));
                    }
                    l.apply_pod(&v).unwrap();
                    state.insert(pod, (node.map(|n| n % nodes.len()), spec));
                }
            }
        }
        let mut fresh = Ledger::new();
        for (i, n) in nodes.iter().enumerate() {
            if present[i] {
                fresh.add_node(&node_json(i, n)).unwrap();
            }
        }
        for (pod, (node, spec)) in &state {
            let mut v = pod_json(*pod, spec);
            if let Some(n) = node {
                v["spec"]["nodeName"] = json!(format!("n{n}"));
            }
            fresh.apply_pod(&v).unwrap();
        }
        prop_assert_eq!(l.node_count(), fresh.node_count());
        prop_assert_eq!(l.pod_count(), fresh.pod_count());
        for i in 0..nodes.len() {
            let name = format!("n{i}");
            prop_assert_eq!(l.requested(&name), fresh.requested(&name));
            prop_assert_eq!(l.used_host_ports(&name), fresh.used_host_ports(&name));
            prop_assert_eq!(l.pods_on(&name), fresh.pods_on(&name));
            prop_assert_eq!(l.free(&name), fresh.free(&name));
        }
    }

    #[test]
    fn nominated_room_is_kept_from_less_important_pods(
        nodes in prop::collection::vec(node_spec(), 1..6),
        pods in prop::collection::vec(pod_spec(), 1..30),
        nominated in prop::collection::vec((pod_spec(), 0usize..6), 0..6),
    ) {
        let mut l = Ledger::new();
        for (i, n) in nodes.iter().enumerate() {
            l.add_node(&node_json(i, n)).unwrap();
        }
        let mut keys = Vec::new();
        for (j, (spec, n)) in nominated.iter().enumerate() {
            let info = Arc::new(PodInfo::from_json(&pod_json(500 + j, spec)).unwrap());
            keys.push(info.clone());
            let node = format!("n{}", n % nodes.len());
            prop_assert!(l.nominate(&node, info));
        }
        prop_assert_eq!(l.nomination_count(), nominated.len());
        let config = Config::default();
        for (i, p) in pods.iter().enumerate() {
            let info = Arc::new(PodInfo::from_json(&pod_json(i, p)).unwrap());
            let Ok(pl) = schedule(&l, &info, &config, 0) else { continue };
            l.reserve(&pl.node, info.clone(), Check::Resources).unwrap();
            // What the node has placed plus what is nominated to it at or
            // above this pod's priority still fits, in every resource the
            // pod requests (as upstream, a pod requesting none of a
            // resource is not checked for it) and in pod slots.
            let mut total = l.requested(&pl.node).unwrap().clone();
            for k in l.nominated_to(&pl.node) {
                let (np, _) = l.nominated_pod(&k).unwrap();
                if np.priority >= info.priority {
                    total.add(&np.requests);
                    total.pods += 1;
                }
            }
            let alloc = &l.node_view(&pl.node).unwrap().allocatable;
            let r = &info.requests;
            let over = (r.milli_cpu > 0 && total.milli_cpu > alloc.milli_cpu)
                || (r.memory > 0 && total.memory > alloc.memory)
                || total.pods > alloc.pods;
            prop_assert!(!over, "pod {} on {}: {:?} > {:?}", i, pl.node, total, alloc);
        }
        // The nominated pods themselves: placing one drops its nomination.
        for info in keys {
            if let Ok(pl) = schedule(&l, &info, &config, 0) {
                l.reserve(&pl.node, info.clone(), Check::All).unwrap();
                prop_assert_eq!(l.nomination(&info.key), None);
            }
        }
    }

    #[test]
    fn preemption_evicts_only_lower_priority_and_makes_room(
        nodes in prop::collection::vec(node_spec(), 1..6),
        pods in prop::collection::vec(pod_spec(), 1..30),
        incoming in pod_spec(),
        boost in 0i32..4,
    ) {
        let mut l = Ledger::new();
        for (i, n) in nodes.iter().enumerate() {
            l.add_node(&node_json(i, n)).unwrap();
        }
        let config = Config::default();
        for (i, p) in pods.iter().enumerate() {
            let info = Arc::new(PodInfo::from_json(&pod_json(i, p)).unwrap());
            if let Ok(pl) = schedule(&l, &info, &config, 0) {
                l.reserve(&pl.node, info, Check::Resources).unwrap();
            }
        }
        let mut v = pod_json(1000, &incoming);
        v["spec"]["priority"] = json!(incoming.priority + boost);
        let pod = Arc::new(PodInfo::from_json(&v).unwrap());
        let Err(u) = schedule(&l, &pod, &config, 0) else { return Ok(()) };
        match preempt(&l, &pod, &u, &[], &config) {
            PreemptOutcome::Preempt(pre) => {
                prop_assert!(u.preemption_may_help);
                prop_assert!(!pre.victims.is_empty());
                for v in &pre.victims {
                    prop_assert!(v.priority < pod.priority);
                    let (_, on) = l.placed_pod(&v.key).unwrap();
                    prop_assert_eq!(on, pre.node.as_str());
                }
                // Once the victims are gone the pod fits there.
                for v in &pre.victims {
                    l.remove_pod(&v.key);
                }
                prop_assert!(l.check_fit(&pre.node, &pod, Check::All).is_ok());
            }
            PreemptOutcome::NotPossible { message } => {
                prop_assert!(message.starts_with("preemption: "), "{}", message);
            }
        }
    }
}
