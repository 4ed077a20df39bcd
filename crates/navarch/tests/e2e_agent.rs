//! End to end: the real binary with its agent (process runtime), driven by
//! kubectl and the Python client. Needs root (cgroups, mount namespaces);
//! skipped with a message otherwise.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A server with a built-in agent; on drop, every container process of the
/// node is killed (containers outlive agents by design).
struct Cluster {
    server: TestServer,
    node: String,
}

impl Cluster {
    fn start(node: &str) -> Option<Cluster> {
        if !is_root() {
            eprintln!("skipping: the process runtime needs root for cgroups and mounts");
            return None;
        }
        let server = TestServer::start_with_agent(node);
        let c = Cluster {
            server,
            node: node.to_string(),
        };
        wait_for(30, "node Ready", || {
            let o = c.server.kubectl(&[
                "get",
                "node",
                node,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            (stdout(&o) == "True").then_some(())
        });
        Some(c)
    }

    fn apply(&self, yaml: &str) {
        self.server.must_kubectl_stdin(&["apply", "-f", "-"], yaml);
    }

    fn jsonpath(&self, pod: &str, path: &str) -> String {
        let o = self
            .server
            .kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")]);
        stdout(&o)
    }

    fn wait_pod(&self, pod: &str, path: &str, want: &str, secs: u64) {
        let mut last = String::new();
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            last = self.jsonpath(pod, path);
            if last == want {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let dump = self.server.kubectl(&["get", "pod", pod, "-o", "yaml"]);
        panic!(
            "pod {pod}: {path} is {last:?}, want {want:?}\n{}",
            stdout(&dump)
        );
    }

    fn wait_running(&self, pod: &str) {
        self.wait_pod(pod, "{.status.phase}", "Running", 30);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        kill_node_processes(&self.node);
        kill_shims(self.server.dir.path());
    }
}

fn pod_yaml(name: &str, node: &str, body: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 2\n{body}"
    )
}

#[test]
fn pods_run_with_init_containers_and_logs() {
    let Some(c) = Cluster::start("e2e-run") else {
        return;
    };
    c.apply(&pod_yaml(
        "web",
        "e2e-run",
        r#"  initContainers:
  - name: setup
    image: busybox
    command: ["sh", "-c", "echo init-done > /work/ready"]
    volumeMounts: [{name: work, mountPath: /work}]
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "cat /work/ready; i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done"]
    volumeMounts: [{name: work, mountPath: /work}]
  - name: side
    image: busybox
    command: ["sh", "-c", "echo side-$MY_POD on $MY_NODE; sleep 3600"]
    env:
    - {name: MY_POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: MY_NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
  volumes:
  - name: work
    emptyDir: {}
"#,
    ));
    c.wait_running("web");
    c.wait_pod(
        "web",
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "True",
        30,
    );
    let wide = c.server.must_kubectl(&["get", "pod", "web", "-o", "wide"]);
    assert!(
        wide.contains("Running") && wide.contains("e2e-run") && wide.contains("127.0.0.1"),
        "{wide}"
    );
    assert_eq!(
        c.jsonpath(
            "web",
            "{.status.initContainerStatuses[0].state.terminated.reason}"
        ),
        "Completed"
    );
    // Logs: the init container's file was seen through the shared volume.
    let logs = wait_for(10, "app logs", || {
        let o = c.server.kubectl(&["logs", "web", "-c", "app"]);
        let s = stdout(&o);
        (s.contains("init-done") && s.contains("line 3")).then_some(s)
    });
    assert!(logs.starts_with("init-done\n"), "{logs}");
    let side = c.server.must_kubectl(&["logs", "web", "-c", "side"]);
    assert_eq!(side, "side-web on e2e-run\n");
    let tail = c
        .server
        .must_kubectl(&["logs", "web", "-c", "app", "--tail", "2"]);
    assert_eq!(tail.lines().count(), 2, "{tail}");
    // Follow streams new lines.
    let mut follow = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(&c.server.kubeconfig)
        .args(["logs", "-f", "web", "-c", "app", "--tail", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    follow.kill().unwrap();
    let out = follow.wait_with_output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert!(lines >= 4, "follow gave {lines} lines");
    // No container named so.
    let o = c.server.kubectl(&["logs", "web", "-c", "nope"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("container nope is not valid for pod web"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn exec_exit_codes_restarts_and_previous_logs() {
    let Some(c) = Cluster::start("e2e-exec") else {
        return;
    };
    c.apply(&pod_yaml(
        "box",
        "e2e-exec",
        r#"  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo $$$$ > /tmp/pid-$POD_UID; echo started; exec sleep 3600"]
    env:
    - {name: POD_UID, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}
"#,
    ));
    c.wait_running("box");
    let out = c
        .server
        .must_kubectl(&["exec", "box", "--", "sh", "-c", "echo hi; echo err >&2"]);
    assert_eq!(out, "hi\n");
    let o = c
        .server
        .kubectl(&["exec", "box", "--", "sh", "-c", "exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let o = c.server.kubectl_with(
        &kubectl_path(),
        &["exec", "-i", "box", "--", "cat"],
        Some("piped\n"),
    );
    assert_eq!(stdout(&o), "piped\n");
    let o = c.server.kubectl(&["exec", "box", "--", "no-such-binary"]);
    assert!(!o.status.success());
    // Killing the main process restarts the container (restartPolicy Always).
    c.server.must_kubectl(&[
        "exec",
        "box",
        "--",
        "sh",
        "-c",
        "kill $(cat /tmp/pid-$POD_UID)",
    ]);
    c.wait_pod(
        "box",
        "{.status.containerStatuses[0].restartCount}",
        "1",
        30,
    );
    c.wait_running("box");
    let prev = c.server.must_kubectl(&["logs", "box", "--previous"]);
    assert_eq!(prev, "started\n");
}

#[test]
fn port_forward_reaches_a_server_in_the_pod() {
    let Some(c) = Cluster::start("e2e-pf") else {
        return;
    };
    let port = free_port();
    c.apply(&pod_yaml(
        "http",
        "e2e-pf",
        &format!(
            r#"  containers:
  - name: srv
    image: python
    command: ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1", "--directory", "/srv"]
    volumeMounts: [{{name: content, mountPath: /srv}}]
    readinessProbe:
      httpGet: {{path: /, port: {port}}}
      periodSeconds: 1
  volumes:
  - name: content
    configMap:
      name: site
"#
        ),
    ));
    c.server.must_kubectl(&[
        "create",
        "configmap",
        "site",
        "--from-literal=index.html=hello from navarch",
    ]);
    c.wait_pod(
        "http",
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "True",
        40,
    );
    let local = free_port();
    let mut pf = Command::new(kubectl_path())
        .arg("--kubeconfig")
        .arg(&c.server.kubeconfig)
        .args(["port-forward", "pod/http", &format!("{local}:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let body = wait_for(20, "port-forward answer", || {
        let o = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "2",
                &format!("http://127.0.0.1:{local}/index.html"),
            ])
            .output()
            .ok()?;
        (o.status.success() && !o.stdout.is_empty())
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    });
    let _ = pf.kill();
    let _ = pf.wait();
    assert_eq!(body, "hello from navarch");
    // The ConfigMap changes: the file follows.
    c.server.must_kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: site\ndata:\n  index.html: updated\n",
    );
    wait_for(40, "updated configmap content", || {
        let o = c
            .server
            .kubectl(&["exec", "http", "--", "cat", "/srv/index.html"]);
        (stdout(&o) == "updated").then_some(())
    });
}

#[test]
fn liveness_restarts_readiness_flips_and_graceful_delete() {
    let Some(c) = Cluster::start("e2e-probe") else {
        return;
    };
    c.apply(&pod_yaml(
        "probed",
        "e2e-probe",
        r#"  terminationGracePeriodSeconds: 3
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "trap 'echo got TERM' TERM; touch /tmp/probe-$POD_UID-ready /tmp/probe-$POD_UID-live; while true; do sleep 0.1; done"]
    env:
    - {name: POD_UID, valueFrom: {fieldRef: {fieldPath: metadata.uid}}}
    readinessProbe:
      exec: {command: ["sh", "-c", "test -e /tmp/probe-$POD_UID-ready"]}
      periodSeconds: 1
    livenessProbe:
      exec: {command: ["sh", "-c", "test -e /tmp/probe-$POD_UID-live"]}
      periodSeconds: 1
      failureThreshold: 2
"#,
    ));
    c.wait_pod(
        "probed",
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "True",
        30,
    );
    let uid = c.jsonpath("probed", "{.metadata.uid}");
    std::fs::remove_file(format!("/tmp/probe-{uid}-ready")).unwrap();
    c.wait_pod(
        "probed",
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "False",
        15,
    );
    std::fs::remove_file(format!("/tmp/probe-{uid}-live")).unwrap();
    c.wait_pod(
        "probed",
        "{.status.containerStatuses[0].restartCount}",
        "1",
        30,
    );
    c.wait_pod(
        "probed",
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "True",
        30,
    );
    let events = c.server.must_kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=probed",
    ]);
    assert!(
        events.contains("Unhealthy") && events.contains("Killing"),
        "{events}"
    );
    // The process ignores SIGTERM: deletion takes the grace period (3 s).
    let t = Instant::now();
    c.server
        .must_kubectl(&["delete", "pod", "probed", "--wait=true"]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "deleted after {took:?}"
    );
    assert!(took < Duration::from_secs(20), "deleted after {took:?}");
    let _ = std::fs::remove_file(format!("/tmp/probe-{uid}-ready"));
    let _ = std::fs::remove_file(format!("/tmp/probe-{uid}-live"));
}

#[test]
fn memory_limit_oom_kills_and_bad_input_is_reported() {
    let Some(c) = Cluster::start("e2e-oom") else {
        return;
    };
    c.apply(&pod_yaml(
        "hog",
        "e2e-oom",
        r#"  restartPolicy: Never
  containers:
  - name: hog
    image: python
    command: ["python3", "-c", "b = bytearray(400 * 1024 * 1024); import time; time.sleep(30)"]
    resources:
      limits: {memory: 64Mi}
"#,
    ));
    c.wait_pod("hog", "{.status.phase}", "Failed", 40);
    assert_eq!(
        c.jsonpath(
            "hog",
            "{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "OOMKilled"
    );
    // More cpu than the node has: rejected at admission.
    c.apply(&pod_yaml(
        "huge",
        "e2e-oom",
        "  containers:\n  - name: a\n    image: busybox\n    command: [\"sleep\", \"1\"]\n    resources:\n      requests: {cpu: \"1000\"}\n",
    ));
    c.wait_pod("huge", "{.status.phase}", "Failed", 20);
    assert_eq!(c.jsonpath("huge", "{.status.reason}"), "OutOfcpu");
    // A command that does not exist, a container without a command, a
    // missing ConfigMap volume: reasons, not crashes.
    c.apply(&pod_yaml(
        "broken",
        "e2e-oom",
        r#"  containers:
  - name: nosuch
    image: busybox
    command: ["/no/such/binary"]
  - name: nocmd
    image: nginx
"#,
    ));
    c.wait_pod(
        "broken",
        "{.status.containerStatuses[?(@.name==\"nocmd\")].state.waiting.reason}",
        "CreateContainerError",
        20,
    );
    let msg = wait_for(20, "start error", || {
        let s = c.jsonpath(
            "broken",
            "{.status.containerStatuses[?(@.name==\"nosuch\")]}",
        );
        s.contains("no such file or directory").then_some(s)
    });
    assert!(msg.contains("/no/such/binary"), "{msg}");
    c.apply(&pod_yaml(
        "nocm",
        "e2e-oom",
        "  containers:\n  - name: a\n    image: busybox\n    command: [\"sleep\", \"100\"]\n    volumeMounts: [{name: cfg, mountPath: /cfg}]\n  volumes:\n  - name: cfg\n    configMap: {name: absent}\n",
    ));
    wait_for(20, "FailedMount event", || {
        let o = c.server.kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=nocm,reason=FailedMount",
            "-o",
            "name",
        ]);
        (!stdout(&o).is_empty()).then_some(())
    });
    assert_eq!(
        c.jsonpath(
            "nocm",
            "{.status.containerStatuses[0].state.waiting.reason}"
        ),
        "ContainerCreating"
    );
    // The agent is still alive and serving.
    c.apply(&pod_yaml(
        "ok",
        "e2e-oom",
        "  containers:\n  - name: a\n    image: busybox\n    command: [\"sleep\", \"100\"]\n",
    ));
    c.wait_running("ok");
}

#[test]
fn second_agent_joins_and_a_restarted_agent_adopts_its_pods() {
    let Some(c) = Cluster::start("e2e-main") else {
        return;
    };
    let agent_dir = tempfile::tempdir().unwrap();
    let mut agent = AgentProc::start(&c.server, "e2e-second", agent_dir.path());
    wait_for(30, "second node Ready", || {
        let o = c.server.kubectl(&["get", "nodes", "-o", "name"]);
        let s = stdout(&o);
        (s.contains("node/e2e-second") && s.contains("node/e2e-main")).then_some(())
    });
    c.apply(&pod_yaml(
        "far",
        "e2e-second",
        "  containers:\n  - name: a\n    image: busybox\n    command: [\"sleep\", \"3600\"]\n",
    ));
    c.wait_running("far");
    let id = c.jsonpath("far", "{.status.containerStatuses[0].containerID}");
    let out = c
        .server
        .must_kubectl(&["exec", "far", "--", "echo", "remote"]);
    assert_eq!(out, "remote\n");
    // SIGKILL the agent: the pod keeps running; a new agent adopts it.
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let agent2 = AgentProc::start(&c.server, "e2e-second", agent_dir.path());
    std::thread::sleep(Duration::from_secs(3));
    c.wait_running("far");
    assert_eq!(
        c.jsonpath("far", "{.status.containerStatuses[0].containerID}"),
        id
    );
    assert_eq!(
        c.jsonpath("far", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
    let out = c
        .server
        .must_kubectl(&["exec", "far", "--", "echo", "again"]);
    assert_eq!(out, "again\n");
    c.server
        .must_kubectl(&["delete", "pod", "far", "--wait=true"]);
    drop(agent2);
    drop(agent);
}

#[test]
fn a_wrong_token_is_refused() {
    let Some(c) = Cluster::start("e2e-token") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let token = std::fs::read_to_string(c.server.dir.path().join("node-token")).unwrap();
    let (hash, _) = token.trim().split_once("::").unwrap();
    for bad in [
        format!("{hash}::node:wrongsecret"),
        "N10deadbeef::node:x".to_string(),
        "garbage".to_string(),
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_navarch"))
            .args([
                "agent",
                "--server",
                &c.server.url(),
                "--token",
                &bad,
                "--node-name",
                "intruder",
            ])
            .args(["--agent-port", "0", "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!o.status.success(), "agent with token {bad:?} started");
        let err = stderr(&o);
        assert!(err.contains("token"), "{err}");
    }
    let o = c.server.kubectl(&["get", "node", "intruder"]);
    assert!(!o.status.success());
}

#[test]
fn python_client_exec_and_port_forward() {
    let Some(c) = Cluster::start("e2e-py") else {
        return;
    };
    let port = free_port();
    c.apply(&pod_yaml(
        "pyweb",
        "e2e-py",
        &format!(
            "  containers:\n  - name: srv\n    image: python\n    command: [\"python3\", \"-m\", \"http.server\", \"{port}\", \"--bind\", \"127.0.0.1\"]\n    readinessProbe:\n      tcpSocket: {{port: {port}}}\n      periodSeconds: 1\n"
        ),
    ));
    c.wait_pod(
        "pyweb",
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "True",
        30,
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/python/agent_test.py"
    );
    let python = std::env::var("NAVARCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let o = Command::new(python)
        .arg(script)
        .arg(&c.server.kubeconfig)
        .arg(port.to_string())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python agent test failed:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
}
