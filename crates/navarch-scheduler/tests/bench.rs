//! Micro benchmarks, printed, never asserted on time. Run with
//! `cargo test --release -p navarch-scheduler --test bench -- --ignored --nocapture`.

use std::sync::Arc;
use std::time::Instant;

use navarch_scheduler::{schedule, Check, Config, Ledger, PodInfo};
use serde_json::json;

fn nodes(l: &mut Ledger, n: usize) {
    nodes_in_zones(l, n, 10);
}

fn nodes_in_zones(l: &mut Ledger, n: usize, zones: usize) {
    // Upstream scheduler_perf node-default: 4 cpu, 32Gi, 110 pods.
    for i in 0..n {
        l.add_node(&json!({
            "metadata": {"name": format!("node-{i:05}"),
                         "labels": {"kubernetes.io/hostname": format!("node-{i:05}"),
                                    "topology.kubernetes.io/zone": format!("zone-{}", i % zones)}},
            "status": {"allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"}}
        }))
        .unwrap();
    }
}

fn basic_pod(i: usize) -> Arc<PodInfo> {
    // Upstream scheduler_perf pod-default: 100m cpu, 500Mi memory.
    Arc::new(
        PodInfo::from_json(&json!({
            "metadata": {"name": format!("pod-{i}"), "namespace": "sched-test", "uid": format!("uid-{i}"),
                         "labels": {"app": "basic"}},
            "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                                     "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]}
        }))
        .unwrap(),
    )
}

fn run(
    name: &str,
    n_nodes: usize,
    n_pods: usize,
    config: &Config,
    make: impl Fn(usize) -> Arc<PodInfo>,
) {
    let mut l = Ledger::new();
    nodes(&mut l, n_nodes);
    let pods: Vec<Arc<PodInfo>> = (0..n_pods).map(make).collect();
    let t = Instant::now();
    let mut start = 0;
    let mut placed = 0;
    for p in pods {
        match schedule(&l, &p, config, start) {
            Ok(pl) => {
                start = pl.next_start_index;
                l.reserve(&pl.node, p, Check::Resources).unwrap();
                placed += 1;
            }
            Err(u) => start = u.next_start_index,
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{name}: {n_nodes} nodes x {n_pods} pods, parallelism {}: {placed} placed in {secs:.3}s = {:.0} pods/s",
        config.parallelism,
        n_pods as f64 / secs
    );
}

#[test]
#[ignore = "benchmark: prints pods/s, run in release with --ignored --nocapture"]
fn scheduling_basic() {
    run(
        "SchedulingBasic",
        5000,
        10_000,
        &Config::default(),
        basic_pod,
    );
    let par = Config {
        parallelism: 2,
        ..Config::default()
    };
    run("SchedulingBasic", 5000, 10_000, &par, basic_pod);
}

#[test]
#[ignore = "benchmark: prints pods/s, run in release with --ignored --nocapture"]
fn scheduling_with_constraints() {
    // Anti-affinity per app on hostnames and zone spreading: exercises the
    // label index and the per-cycle domain counts.
    let pod = |i: usize| {
        let app = format!("app-{}", i % 50);
        Arc::new(
            PodInfo::from_json(&json!({
                "metadata": {"name": format!("pod-{i}"), "namespace": "sched-test", "uid": format!("uid-{i}"),
                             "labels": {"app": app}},
                "spec": {
                    "containers": [{"name": "c", "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}],
                    "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}]}},
                    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": app}}}]
                }
            }))
            .unwrap(),
        )
    };
    run("AntiAffinity+Spread", 5000, 10_000, &Config::default(), pod);
    let par = Config {
        parallelism: 2,
        ..Config::default()
    };
    run("AntiAffinity+Spread", 5000, 10_000, &par, pod);
}

/// Places `init` pods unmeasured, then `measured` pods timed.
fn run_phases(
    name: &str,
    n_nodes: usize,
    zones: usize,
    init: &[Arc<PodInfo>],
    measured: &[Arc<PodInfo>],
) {
    let config = Config::default();
    let mut l = Ledger::new();
    nodes_in_zones(&mut l, n_nodes, zones);
    let mut start = 0;
    let mut go = |l: &mut Ledger, pods: &[Arc<PodInfo>]| {
        let mut placed = 0;
        for p in pods {
            match schedule(l, p, &config, start) {
                Ok(pl) => {
                    start = pl.next_start_index;
                    l.reserve(&pl.node, p.clone(), Check::Resources).unwrap();
                    placed += 1;
                }
                Err(u) => start = u.next_start_index,
            }
        }
        placed
    };
    go(&mut l, init);
    let t = Instant::now();
    let placed = go(&mut l, measured);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{name}: {n_nodes} nodes, {} init + {} measured pods: {placed} placed in {secs:.3}s = {:.0} pods/s",
        init.len(),
        measured.len(),
        measured.len() as f64 / secs
    );
}

#[test]
#[ignore = "benchmark: prints pods/s, run in release with --ignored --nocapture"]
fn topology_spreading() {
    // scheduler_perf TopologySpreading: plain init pods, then pods spread
    // over 3 zones with maxSkew 5.
    let init: Vec<_> = (0..5000).map(basic_pod).collect();
    let measured: Vec<_> = (0..10_000)
        .map(|i| {
            Arc::new(
                PodInfo::from_json(&json!({
                    "metadata": {"name": format!("spread-{i}"), "namespace": "sched-test",
                                 "uid": format!("spread-{i}"), "labels": {"color": "blue"}},
                    "spec": {
                        "containers": [{"name": "c", "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}],
                        "topologySpreadConstraints": [{"maxSkew": 5, "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"color": "blue"}}}]
                    }
                }))
                .unwrap(),
            )
        })
        .collect();
    run_phases("TopologySpreading", 5000, 3, &init, &measured);
}

#[test]
#[ignore = "benchmark: prints pods/s, run in release with --ignored --nocapture"]
fn preferred_pod_affinity() {
    // scheduler_perf SchedulingPreferredPodAffinity: every pod labelled
    // color=red with one preferred affinity term to color=red on hostnames.
    let pod = |i: usize| {
        Arc::new(
            PodInfo::from_json(&json!({
                "metadata": {"name": format!("pref-{i}"), "namespace": "sched-test",
                             "uid": format!("pref-{i}"), "labels": {"color": "red"}},
                "spec": {
                    "containers": [{"name": "c", "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}],
                    "affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                        {"weight": 1, "podAffinityTerm": {
                            "labelSelector": {"matchLabels": {"color": "red"}},
                            "topologyKey": "kubernetes.io/hostname",
                            "namespaces": ["sched-test", "sched-setup"]}}]}}
                }
            }))
            .unwrap(),
        )
    };
    let init: Vec<_> = (0..5000).map(pod).collect();
    let measured: Vec<_> = (5000..10_000).map(pod).collect();
    run_phases("SchedulingPreferredPodAffinity", 5000, 10, &init, &measured);
}
