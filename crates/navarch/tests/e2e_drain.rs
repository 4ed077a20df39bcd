//! `kubectl cordon`, `drain` and `uncordon` against the real binary, on
//! two hollow nodes (`navarch sim`, which reports pods Running and Ready
//! and finishes graceful deletes): a drain evicts through the eviction
//! subresource, one pod at a time as the PodDisruptionBudget allows and
//! replacements become Ready on the other node, skips DaemonSet pods, and
//! gives up with kubectl's message when the budget never allows it.

mod common;

use common::{stderr, stdout, wait_for, TestServer};
use serde_json::Value;
use std::process::{Child, Command, Stdio};

/// A running `navarch sim`, killed on drop.
struct SimProcess(Child);

impl SimProcess {
    fn start(s: &TestServer, nodes: usize) -> SimProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_navarch"))
            .arg("sim")
            .arg("--kubeconfig")
            .arg(&s.kubeconfig)
            .args(["--nodes", &nodes.to_string(), "--cpu", "8"])
            .env("NAVARCH_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning navarch sim");
        SimProcess(child)
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const RS: &str = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: c\n        image: nginx\n        resources: {requests: {cpu: 100m}}\n";

const PDB: &str = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\nspec:\n  maxUnavailable: 1\n  selector:\n    matchLabels: {app: web}\n";

const DAEMON_SET: &str = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  selector:\n    matchLabels: {app: agent}\n  template:\n    metadata:\n      labels: {app: agent}\n    spec:\n      nodeSelector: {kubernetes.io/hostname: hollow-0}\n      containers:\n      - name: c\n        image: pause\n";

const BARE: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bare\nspec:\n  nodeName: hollow-0\n  containers:\n  - name: c\n    image: busybox\n    volumeMounts: [{name: scratch, mountPath: /scratch}]\n  volumes:\n  - name: scratch\n    emptyDir: {}\n";

fn json(s: &TestServer, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&s.must_kubectl(&a)).unwrap()
}

/// Pods with `app=LABEL`, not terminating: (name, node, ready).
fn pods(s: &TestServer, label: &str) -> Vec<(String, String, bool)> {
    let v = json(s, &["get", "pods", "-l", &format!("app={label}")]);
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let ready = p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_string(),
                ready,
            )
        })
        .collect()
}

fn all_ready_on(s: &TestServer, label: &str, n: usize, node: &str) -> Option<()> {
    let ps = pods(s, label);
    (ps.len() == n && ps.iter().all(|(_, on, ready)| on == node && *ready)).then_some(())
}

fn allowed(s: &TestServer) -> Option<i64> {
    let v = json(s, &["get", "pdb", "web"]);
    (v["status"]["observedGeneration"] == v["metadata"]["generation"])
        .then(|| v["status"]["disruptionsAllowed"].as_i64().unwrap_or(0))
}

/// POSTs an eviction with the admin token; (HTTP code, body).
fn evict(s: &TestServer, pod: &str) -> (u16, Value) {
    let body = format!(
        r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{pod}","namespace":"default"}}}}"#
    );
    let o = Command::new("curl")
        .args(["-sk", "-w", "\n%{http_code}", "-X", "POST"])
        .args(["-H", "Content-Type: application/json"])
        .args(["-H", &format!("Authorization: Bearer {}", s.token())])
        .args([
            "-d",
            &body,
            &format!("{}/api/v1/namespaces/default/pods/{pod}/eviction", s.url()),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[test]
fn cordon_drain_within_the_budget_and_uncordon() {
    let s = TestServer::start();
    let _sim = SimProcess::start(&s, 2);
    wait_for(30, "two hollow nodes", || {
        let v = json(&s, &["get", "nodes", "-l", "navarch.io/hollow=true"]);
        (v["items"].as_array().unwrap().len() == 2).then_some(())
    });

    // Cordoned: SchedulingDisabled, and nothing lands there.
    let out = s.must_kubectl(&["cordon", "hollow-1"]);
    assert!(out.contains("node/hollow-1 cordoned"), "{out}");
    let row = s.must_kubectl(&["get", "node", "hollow-1", "--no-headers"]);
    assert!(row.contains("Ready,SchedulingDisabled"), "{row}");
    s.must_kubectl_stdin(&["apply", "-f", "-"], RS);
    wait_for(30, "3 web pods Ready on hollow-0", || {
        all_ready_on(&s, "web", 3, "hollow-0")
    });
    let out = s.must_kubectl(&["uncordon", "hollow-1"]);
    assert!(out.contains("node/hollow-1 uncordoned"), "{out}");
    let row = s.must_kubectl(&["get", "node", "hollow-1", "--no-headers"]);
    assert!(!row.contains("SchedulingDisabled"), "{row}");

    s.must_kubectl_stdin(&["apply", "-f", "-"], PDB);
    wait_for(30, "the budget to allow 1", || {
        (allowed(&s) == Some(1)).then_some(())
    });
    let table = s.must_kubectl(&["get", "pdb", "web"]);
    assert!(table.contains("ALLOWED DISRUPTIONS"), "{table}");

    // A DaemonSet's pod (made by hand: this test does not rely on the
    // DaemonSet controller) and a bare pod with an emptyDir.
    s.must_kubectl_stdin(&["apply", "-f", "-"], DAEMON_SET);
    let ds_uid = s.must_kubectl(&["get", "ds", "agent", "-o", "jsonpath={.metadata.uid}"]);
    let ds_pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: agent-manual\n  labels: {{app: agent}}\n  ownerReferences:\n  - {{apiVersion: apps/v1, kind: DaemonSet, name: agent, uid: {ds_uid}, controller: true}}\nspec:\n  nodeName: hollow-0\n  containers:\n  - name: c\n    image: pause\n"
    );
    s.must_kubectl_stdin(&["apply", "-f", "-"], &ds_pod);
    s.must_kubectl_stdin(&["apply", "-f", "-"], BARE);

    // Without --delete-emptydir-data, then without --force, the bare pod
    // stops the drain before any eviction.
    let o = s.kubectl(&["drain", "hollow-0", "--ignore-daemonsets", "--timeout=60s"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("cannot delete Pods with local storage (use --delete-emptydir-data to override): default/bare"),
        "{err}"
    );
    let o = s.kubectl(&[
        "drain",
        "hollow-0",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=60s",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(
            "cannot delete Pods that declare no controller (use --force to override): default/bare"
        ),
        "{err}"
    );
    assert_eq!(pods(&s, "web").len(), 3);
    let row = s.must_kubectl(&["get", "node", "hollow-0", "--no-headers"]);
    assert!(
        row.contains("SchedulingDisabled"),
        "drain cordons first: {row}"
    );

    // The drain: evictions within the budget (one at a time: the others
    // are refused with 429 and retried, or wait on the budget's update),
    // replacements on hollow-1. A watch on the budget records every
    // currentHealthy it shows meanwhile.
    let watch_out = s.dir.path().join("pdb-watch.txt");
    let mut watch = Command::new(common::kubectl_path())
        .arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(["get", "pdb", "web", "--watch", "-o"])
        .arg("jsonpath={.status.currentHealthy}{\"\\n\"}")
        .stdout(std::fs::File::create(&watch_out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let o = s.kubectl(&[
        "drain",
        "hollow-0",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--force",
        "--timeout=120s",
    ]);
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(o.status.success(), "drain failed:\n{out}\n{err}");
    assert!(out.contains("node/hollow-0 drained"), "{out}");
    assert!(out.contains("evicting pod default/web-"), "{out}");
    assert!(out.contains("pod/bare evicted"), "{out}");
    assert!(
        err.contains("ignoring DaemonSet-managed Pods: default/agent-"),
        "{err}"
    );
    assert_eq!(out.matches(" evicted\n").count(), 4, "{out}");
    wait_for(30, "3 web pods Ready on hollow-1", || {
        all_ready_on(&s, "web", 3, "hollow-1")
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = watch.kill();
    let _ = watch.wait();
    let seen: Vec<i64> = std::fs::read_to_string(&watch_out)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(
        seen.iter().all(|h| *h >= 2) && seen.contains(&2) && seen.last() == Some(&3),
        "never fewer than 2 of 3 healthy (maxUnavailable 1): {seen:?}\n{err}"
    );
    assert!(!s.kubectl(&["get", "pod", "bare"]).status.success());
    // The DaemonSet's pod stays.
    let ds_pods = json(&s, &["get", "pods", "-l", "app=agent"]);
    assert!(
        ds_pods["items"].as_array().unwrap().iter().any(|p| {
            p["spec"]["nodeName"] == "hollow-0"
                && p["metadata"]["ownerReferences"][0]["uid"] == ds_uid.as_str()
        }),
        "{ds_pods:#}"
    );
    let out = s.must_kubectl(&["uncordon", "hollow-0"]);
    assert!(out.contains("node/hollow-0 uncordoned"), "{out}");

    // A budget that allows nothing: the eviction is a 429 naming the
    // budget, and a drain with a timeout gives up.
    s.must_kubectl(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"maxUnavailable":0}}"#,
    ]);
    wait_for(30, "the budget to allow 0", || {
        (allowed(&s) == Some(0)).then_some(())
    });
    let victim = pods(&s, "web")[0].0.clone();
    let (code, st) = evict(&s, &victim);
    assert_eq!(code, 429, "{st}");
    assert_eq!(st["reason"], "TooManyRequests");
    assert_eq!(
        st["message"],
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(st["details"]["causes"][0]["reason"], "DisruptionBudget");
    assert_eq!(
        st["details"]["causes"][0]["message"],
        "The disruption budget web needs 3 healthy pods and has 3 currently"
    );
    let o = s.kubectl(&["drain", "hollow-1", "--ignore-daemonsets", "--timeout=5s"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{err}"
    );
    assert!(err.contains("global timeout reached: 5s"), "{err}");
    assert!(all_ready_on(&s, "web", 3, "hollow-1").is_some());
}
