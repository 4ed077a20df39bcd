//! DaemonSets and StatefulSets through the real binary and kubectl, on
//! hollow nodes from `navarch sim` (which report pods Running and Ready and
//! finish their deletion): `rollout status`, `get`, `scale`, `set image`,
//! `rollout history` and `rollout undo`, which reads and applies the
//! controllers' ControllerRevisions.

mod common;

use common::{wait_for, TestServer};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// `navarch sim` with a kubeconfig, killed on drop.
struct Sim(Child);

impl Sim {
    fn start(s: &TestServer, nodes: &str) -> Sim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_navarch"))
            .args(["sim", "--kubeconfig"])
            .arg(&s.kubeconfig)
            .args(["--nodes", nodes, "--prefix", "sets-"])
            .env("NAVARCH_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning navarch sim");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("registered "), "{line:?}");
        Sim(child)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const DS: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: c, image: 'agent:1'}]
";

const STS: &str = "apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  replicas: 2
  serviceName: web
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: 'db:1'}]
";

/// The revision numbers `kubectl rollout history` lists.
fn history(s: &TestServer, what: &str) -> Vec<String> {
    let out = s.must_kubectl(&["rollout", "history", what]);
    out.lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn image(s: &TestServer, what: &str) -> String {
    s.must_kubectl(&[
        "get",
        what,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ])
    .trim()
    .to_string()
}

fn rollout_status(s: &TestServer, what: &str) -> String {
    s.must_kubectl(&["rollout", "status", what, "--timeout=60s"])
}

#[test]
fn kubectl_rolls_out_daemonsets_and_statefulsets() {
    let s = TestServer::start();
    let _sim = Sim::start(&s, "2");

    // DaemonSet: one pod per node, rolled out, updated and undone.
    s.must_kubectl_stdin(&["apply", "-f", "-"], DS);
    let out = rollout_status(&s, "ds/agent");
    assert!(
        out.contains("daemon set \"agent\" successfully rolled out"),
        "{out}"
    );
    let row = s.must_kubectl(&["get", "ds", "agent", "--no-headers"]);
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[..6], ["agent", "2", "2", "2", "2", "2"], "{row}");
    let nodes = s.must_kubectl(&[
        "get",
        "pods",
        "-l",
        "app=agent",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
    ]);
    let mut nodes: Vec<&str> = nodes.lines().collect();
    nodes.sort();
    assert_eq!(nodes, ["sets-0", "sets-1"]);
    s.must_kubectl(&["set", "image", "ds/agent", "c=agent:2"]);
    let out = rollout_status(&s, "ds/agent");
    assert!(out.contains("successfully rolled out"), "{out}");
    assert_eq!(history(&s, "ds/agent"), ["1", "2"]);
    s.must_kubectl(&["rollout", "undo", "ds/agent"]);
    assert_eq!(image(&s, "ds/agent"), "agent:1");
    rollout_status(&s, "ds/agent");
    wait_for(30, "revision 1 renumbered 3", || {
        (history(&s, "ds/agent") == ["2", "3"]).then_some(())
    });
    wait_for(30, "pods back at agent:1", || {
        let images = s.must_kubectl(&[
            "get",
            "pods",
            "-l",
            "app=agent",
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={range .items[*]}{.spec.containers[0].image}{\"\\n\"}{end}",
        ]);
        (images.lines().filter(|l| *l == "agent:1").count() == 2).then_some(())
    });

    // StatefulSet: ordered pods, scaled, updated and undone.
    s.must_kubectl_stdin(&["apply", "-f", "-"], STS);
    let out = rollout_status(&s, "sts/web");
    assert!(out.contains("partitioned roll out complete"), "{out}");
    let row = s.must_kubectl(&["get", "sts", "web", "--no-headers"]);
    assert!(row.starts_with("web ") && row.contains(" 2/2 "), "{row}");
    s.must_kubectl(&["scale", "sts", "web", "--replicas=3"]);
    wait_for(30, "3/3 ready", || {
        let row = s.must_kubectl(&["get", "sts", "web", "--no-headers"]);
        row.contains(" 3/3 ").then_some(())
    });
    let pods = s.must_kubectl(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.hostname}{\"\\n\"}{end}",
    ]);
    let mut pods: Vec<&str> = pods.lines().collect();
    pods.sort();
    assert_eq!(pods, ["web-0 web-0", "web-1 web-1", "web-2 web-2"]);
    let events = s.must_kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web,reason=SuccessfulCreate",
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains("create Pod web-2 in StatefulSet web successful"),
        "{events}"
    );
    s.must_kubectl(&["set", "image", "sts/web", "c=db:2"]);
    let out = rollout_status(&s, "sts/web");
    assert!(
        out.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{out}"
    );
    assert_eq!(history(&s, "sts/web"), ["1", "2"]);
    s.must_kubectl(&["rollout", "undo", "sts/web"]);
    assert_eq!(image(&s, "sts/web"), "db:1");
    rollout_status(&s, "sts/web");
    wait_for(30, "sts revision 1 renumbered 3", || {
        (history(&s, "sts/web") == ["2", "3"]).then_some(())
    });
    let revs = s.must_kubectl(&[
        "get",
        "sts",
        "web",
        "-o",
        "jsonpath={.status.currentRevision} {.status.updateRevision}",
    ]);
    let revs: Vec<&str> = revs.split_whitespace().collect();
    assert_eq!(revs.len(), 2);
    assert_eq!(revs[0], revs[1], "rolled back completely");
}
