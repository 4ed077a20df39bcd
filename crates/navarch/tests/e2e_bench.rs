//! `navarch bench scheduler` through the real binary: a small run of every
//! workload (its own server with the built-in scheduler, hollow nodes) ends
//! with one JSON object whose numbers add up.

mod common;

use common::TestServer;
use serde_json::Value;
use std::process::Command;

fn bench_scheduler(workload: &str, nodes: &str, pods: &str) -> Value {
    bench_scheduler_with(workload, nodes, pods, &[])
}

fn bench_scheduler_with(workload: &str, nodes: &str, pods: &str, extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_navarch"))
        .args(["bench", "scheduler", "--nodes", nodes, "--pods", pods])
        .args(["--workload", workload, "--json"])
        .args(extra)
        .env("NAVARCH_LOG", "warn")
        .output()
        .expect("running navarch bench scheduler");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench scheduler {workload} failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = text.lines().last().expect("some output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

#[test]
fn bench_scheduler_reports_one_json_object_with_every_pod_bound() {
    let v = bench_scheduler("SchedulingBasic", "20", "50");
    for key in [
        "workload",
        "nodes",
        "pods",
        "pods_per_second",
        "p50_ms",
        "p99_ms",
    ] {
        assert!(v.get(key).is_some(), "{key} missing: {v}");
    }
    assert_eq!(v["workload"], "SchedulingBasic");
    assert_eq!(v["nodes"], 20);
    assert_eq!(v["pods"], 50);
    assert_eq!(v["bound"], 50);
    assert_eq!(v["init_pods"], 4);
    assert_eq!(v["unschedulable"], 0);
    let (p50, p99, max) = (
        v["p50_ms"].as_f64().unwrap(),
        v["p99_ms"].as_f64().unwrap(),
        v["max_ms"].as_f64().unwrap(),
    );
    assert!(v["pods_per_second"].as_f64().unwrap() > 0.0, "{v}");
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{v}");
    assert!(v["server_rss_mb"].as_f64().unwrap() > 0.0, "{v}");
}

#[test]
fn bench_scheduler_runs_the_affinity_and_spreading_workloads() {
    for w in [
        "SchedulingNodeAffinity",
        "SchedulingPodAntiAffinity",
        "SchedulingPreferredPodAffinity",
        "TopologySpreading",
    ] {
        let v = bench_scheduler(w, "10", "8");
        assert_eq!(v["workload"], w);
        assert_eq!(v["bound"], 8, "{v}");
    }
}

#[test]
fn bench_scheduler_refuses_impossible_runs() {
    let out = Command::new(env!("CARGO_BIN_EXE_navarch"))
        .args(["bench", "scheduler", "--nodes", "10", "--pods", "20"])
        .args(["--workload", "SchedulingPodAntiAffinity"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hold at most 10 pods"), "{err}");
}

#[test]
fn bench_scheduler_against_a_kubeconfig_preempts_and_leaves_the_cluster_clean() {
    // A cluster the bench did not start (the built-in scheduler is on).
    let s = TestServer::spawn(
        tempfile::tempdir().unwrap(),
        common::free_port(),
        &["--disable-agent"],
    );
    let kubeconfig = s.kubeconfig.to_str().unwrap().to_string();
    let v = bench_scheduler_with("PreemptionBasic", "5", "3", &["--kubeconfig", &kubeconfig]);
    assert_eq!(v["init_pods"], 20);
    assert_eq!(v["bound"], 3, "{v}");
    assert!(
        v["server_rss_mb"].is_null(),
        "no child server to measure: {v}"
    );
    // Hollow nodes, namespaces, pods and priority classes are gone.
    let left = |args: &[&str]| s.must_kubectl(args).trim().to_string();
    assert_eq!(left(&["get", "nodes", "-o", "name"]), "");
    assert_eq!(left(&["get", "pods", "-A", "-o", "name"]), "");
    assert_eq!(left(&["get", "priorityclasses", "-o", "name"]), "");
    common::wait_for(10, "the bench namespaces gone", || {
        let ns = left(&["get", "namespaces", "-o", "name"]);
        (!ns.contains("sched-")).then_some(())
    });
}
