//! `navarch sim` through the real binary and kubectl: hollow nodes joined
//! with the node token or through a kubeconfig, pods reported Running,
//! SIGTERM (nodes stay, or go with `--delete-on-exit`), a wrong token.

mod common;

use common::{stderr, stdout, wait_for, TestServer};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running `navarch sim`, stopped with SIGTERM on drop.
struct SimProcess {
    child: Child,
}

impl SimProcess {
    /// Starts `navarch sim ARGS` and waits for its "registered" line.
    fn start(args: &[&str]) -> (SimProcess, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_navarch"))
            .arg("sim")
            .args(args)
            .env("NAVARCH_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning navarch sim");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(
            line.starts_with("registered "),
            "unexpected first line {line:?}"
        );
        (SimProcess { child }, line)
    }

    /// SIGTERM, and the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        wait_for(20, "navarch sim to exit", || self.child.try_wait().unwrap())
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn node_token(s: &TestServer) -> String {
    std::fs::read_to_string(s.dir.path().join("node-token"))
        .unwrap()
        .trim()
        .to_string()
}

fn hollow_nodes(s: &TestServer) -> Vec<Value> {
    let out = s.must_kubectl(&["get", "nodes", "-l", "navarch.io/hollow=true", "-o", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["items"].as_array().unwrap().clone()
}

#[test]
fn sim_joins_with_the_node_token_runs_bound_pods_and_leaves_nodes_on_exit() {
    let s = TestServer::start();
    let data = tempfile::tempdir().unwrap();
    let (mut sim, line) = SimProcess::start(&[
        "--server",
        &s.url(),
        "--token",
        &node_token(&s),
        "--data-dir",
        data.path().to_str().unwrap(),
        "--nodes",
        "6",
        "--zones",
        "2",
        "--cpu",
        "8",
        "--node-label",
        "pool=sim",
        "--taint",
        "dedicated=sim:PreferNoSchedule",
    ]);
    assert!(line.contains("registered 6 hollow nodes in"), "{line}");
    // It joined once, as `<prefix>sim`.
    assert!(data.path().join("pki/client.crt").exists());

    let nodes = hollow_nodes(&s);
    assert_eq!(nodes.len(), 6);
    let n5 = nodes
        .iter()
        .find(|n| n["metadata"]["name"] == "hollow-5")
        .expect("hollow-5");
    assert_eq!(
        n5["metadata"]["labels"]["topology.kubernetes.io/zone"],
        "zone-1"
    );
    assert_eq!(n5["metadata"]["labels"]["pool"], "sim");
    assert_eq!(n5["spec"]["taints"][0]["effect"], "PreferNoSchedule");
    assert_eq!(n5["status"]["allocatable"]["cpu"], "8");
    let table = s.must_kubectl(&["get", "node", "hollow-5"]);
    assert!(table.contains(" Ready "), "{table}");

    s.must_kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: on-hollow\nspec:\n  nodeName: hollow-2\n  containers:\n  - name: c\n    image: busybox\n",
    );
    let ip = wait_for(20, "the pod Running", || {
        let out = s.kubectl(&[
            "get",
            "pod",
            "on-hollow",
            "-o",
            "jsonpath={.status.phase} {.status.podIP}",
        ]);
        let text = stdout(&out);
        let (phase, ip) = text.split_once(' ')?;
        (phase == "Running" && !ip.is_empty()).then(|| ip.to_string())
    });
    assert!(ip.starts_with("10.1"), "{ip}");

    let status = sim.terminate();
    assert!(status.success(), "{status:?}");
    assert_eq!(hollow_nodes(&s).len(), 6, "nodes stay registered");
}

#[test]
fn sim_through_a_kubeconfig_deletes_its_nodes_on_exit_when_asked() {
    let s = TestServer::start();
    let (mut sim, _) = SimProcess::start(&[
        "--kubeconfig",
        s.kubeconfig.to_str().unwrap(),
        "--nodes",
        "3",
        "--prefix",
        "kc-",
        "--delete-on-exit",
    ]);
    let names: Vec<String> = hollow_nodes(&s)
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 3);
    assert!(names.iter().all(|n| n.starts_with("kc-")), "{names:?}");
    let leases = s.must_kubectl(&["get", "leases", "-n", "kube-node-lease", "-o", "name"]);
    assert!(leases.contains("/kc-0"), "{leases}");

    assert!(sim.terminate().success());
    assert!(hollow_nodes(&s).is_empty());
    let leases = s.must_kubectl(&["get", "leases", "-n", "kube-node-lease", "-o", "name"]);
    assert!(!leases.contains("kc-"), "{leases}");
}

#[test]
fn sim_with_a_wrong_token_fails_clearly() {
    let s = TestServer::start();
    let token = node_token(&s);
    let (hash, _) = token.split_once("::node:").unwrap();
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_navarch"))
        .args(["sim", "--server", &s.url(), "--nodes", "2", "--data-dir"])
        .arg(data.path())
        .args(["--token", &format!("{hash}::node:wrong")])
        .env("NAVARCH_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("joining the cluster as node hollow-sim")
            && err.contains("rejected the node token"),
        "{err}"
    );
    assert!(hollow_nodes(&s).is_empty());
    // Neither credentials nor a server: a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_navarch"))
        .args(["sim", "--nodes", "1"])
        .env_remove("NAVARCH_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--kubeconfig"), "{}", stderr(&out));
}
