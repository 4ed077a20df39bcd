//! Node failure end to end: the real binary with its built-in agent and a
//! second agent process (process runtime), kubectl 1.32. A Deployment runs
//! on the second node; that agent is killed with SIGKILL; the node goes
//! Unknown after the grace period, its pods are evicted after their
//! toleration and re-created on the first node. Short settings: 8 s
//! Leases (renewed every 2 s), 6 s grace, 3 s tolerations. Needs root.

mod common;
use common::*;
use std::time::Instant;

fn pods_on(s: &TestServer, node: &str) -> Vec<String> {
    let out = s.must_kubectl(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    out.lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() == 2 && f[0] == node && f[1] == "Running"
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn pods_of_a_killed_agent_are_recreated_on_the_other_node() {
    if !is_root() {
        eprintln!("skipping: the process runtime needs root for cgroups and mounts");
        return;
    }
    // Dropped last: the built-in agent's containers outlive the server.
    let _main = KillOnDrop("nf-main");
    let s = TestServer::spawn(
        tempfile::tempdir().unwrap(),
        free_port(),
        &[
            "--node-name",
            "nf-main",
            "--agent-port",
            "0",
            "--node-ip",
            "127.0.0.1",
            "--node-lease-duration-seconds",
            "8",
            "--node-monitor-grace-period",
            "6s",
            "--node-monitor-period",
            "500ms",
            "--default-unreachable-toleration-seconds",
            "3",
            "--default-not-ready-toleration-seconds",
            "3",
        ],
    );
    let agent_dir = tempfile::tempdir().unwrap();
    let mut agent = AgentProc::start_with(
        &s,
        "nf-second",
        agent_dir.path(),
        &["--node-lease-duration-seconds", "8"],
    );
    wait_for(60, "both nodes Ready", || {
        let out = s.must_kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status} {end}",
        ]);
        (out.contains("nf-main=True") && out.contains("nf-second=True")).then_some(())
    });
    // Everything lands on the second node first.
    s.must_kubectl(&["cordon", "nf-main"]);
    s.must_kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "--replicas=2",
        "--",
        "sleep",
        "3600",
    ]);
    s.must_kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert_eq!(pods_on(&s, "nf-second").len(), 2);
    s.must_kubectl(&["uncordon", "nf-main"]);

    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    let killed = Instant::now();
    wait_for(60, "nf-second Unknown and tainted unreachable", || {
        let out = s.must_kubectl(&[
            "get",
            "node",
            "nf-second",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.spec.taints[*].key}",
        ]);
        (out.starts_with("Unknown") && out.contains("node.kubernetes.io/unreachable")).then_some(())
    });
    wait_for(60, "2 pods Running on nf-main", || {
        (pods_on(&s, "nf-main").len() == 2).then_some(())
    });
    let replaced = killed.elapsed();
    eprintln!(
        "replacement pods Running {:.1} s after SIGKILL (last renewal up to 2 s earlier; grace 6 s + toleration 3 s)",
        replaced.as_secs_f64()
    );
    s.must_kubectl(&["rollout", "status", "deployment/web", "--timeout=30s"]);
    // The evicted pods show why.
    let events = s.must_kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=TaintManagerEviction",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(
        events.contains("Marking for deletion Pod default/web-"),
        "{events}"
    );
    let node_events = s.must_kubectl(&["describe", "node", "nf-second"]);
    assert!(node_events.contains("NodeNotReady"), "{node_events}");
    assert!(
        node_events.contains("node.kubernetes.io/unreachable:NoExecute"),
        "{node_events}"
    );
    drop(agent);
}

/// Kills the built-in agent's containers when the test ends.
struct KillOnDrop(&'static str);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        kill_node_processes(self.0);
    }
}
