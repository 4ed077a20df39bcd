//! End-to-end: the real `navarch server` driven by the real kubectl.
mod common;
use common::*;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: main
        image: nginx:1.27
        ports:
        - containerPort: 80
      - name: sidecar
        image: busybox
        command: ["sleep", "3600"]
"#;

#[test]
fn discovery_namespaces_and_builtin_objects() {
    let s = TestServer::start();
    let out = s.must_kubectl(&["get", "ns"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(out.contains(ns), "namespace {ns} missing from:\n{out}");
    }
    assert!(out.contains("Active"), "{out}");
    let labels = s.must_kubectl(&[
        "get",
        "ns",
        "kube-system",
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(labels.contains("kubernetes.io/metadata.name"), "{labels}");
    let sas = s.must_kubectl(&["get", "sa", "-A", "-o", "name"]);
    assert_eq!(
        sas.lines()
            .filter(|l| *l == "serviceaccount/default")
            .count(),
        4,
        "{sas}"
    );
    let svc = s.must_kubectl(&[
        "get",
        "svc",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert_eq!(svc, "10.96.0.1");
    let res = s.must_kubectl(&["api-resources"]);
    for r in [
        "deployments",
        "replicationcontrollers",
        "leases",
        "endpointslices",
        "priorityclasses",
        "cronjobs",
    ] {
        assert!(res.contains(r), "{r} missing from api-resources:\n{res}");
    }
    // kubectl explain needs real schemas.
    let ex = s.must_kubectl(&["explain", "deployment.spec.replicas"]);
    assert!(ex.contains("replicas"), "{ex}");
}

#[test]
fn version_dispatcher_runs_matching_kubectl() {
    let s = TestServer::start();
    // The dispatcher on PATH picks the kubectl matching the server's minor version.
    let o = s.kubectl_with(
        std::path::Path::new("kubectl"),
        &["version", "-o", "json"],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["serverVersion"]["gitVersion"], "v1.33.0");
    let out = s.kubectl_with(
        std::path::Path::new("kubectl"),
        &["get", "ns", "default"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn apply_get_describe_label_annotate_patch_scale_delete() {
    let s = TestServer::start();
    let out = s.must_kubectl_stdin(&["apply", "-f", "-"], DEPLOYMENT);
    assert!(out.contains("deployment.apps/web created"), "{out}");
    // Defaults as upstream.
    let y = s.must_kubectl(&["get", "deploy", "web", "-o", "yaml"]);
    for needle in [
        "type: RollingUpdate",
        "maxSurge: 25%",
        "revisionHistoryLimit: 10",
        "progressDeadlineSeconds: 600",
        "imagePullPolicy: IfNotPresent",
        "protocol: TCP",
        "kubectl.kubernetes.io/last-applied-configuration",
        "generation: 1",
    ] {
        assert!(y.contains(needle), "{needle} missing:\n{y}");
    }
    // Table output with upstream columns; wide adds containers and images.
    let t = s.must_kubectl(&["get", "deploy"]);
    assert!(
        t.contains("READY") && t.contains("UP-TO-DATE") && t.contains("AVAILABLE"),
        "{t}"
    );
    let w = s.must_kubectl(&["get", "deploy", "-o", "wide"]);
    assert!(w.contains("CONTAINERS") && w.contains("nginx:1.27"), "{w}");
    // Re-apply with a change: a three-way strategic merge patch.
    let changed = DEPLOYMENT
        .replace("replicas: 2", "replicas: 3")
        .replace("nginx:1.27", "nginx:1.28");
    let out = s.must_kubectl_stdin(&["apply", "-f", "-"], &changed);
    assert!(out.contains("configured"), "{out}");
    let img = s.must_kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[*].image} {.spec.replicas} {.metadata.generation}"]);
    assert_eq!(img, "nginx:1.28 busybox 3 2");
    // Removing the sidecar from the applied config removes it from the object.
    let without_sidecar: String = changed
        .split("      - name: sidecar")
        .next()
        .unwrap()
        .to_string();
    s.must_kubectl_stdin(&["apply", "-f", "-"], &without_sidecar);
    let names = s.must_kubectl(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[*].name}",
    ]);
    assert_eq!(names, "main");

    let d = s.must_kubectl(&["describe", "deploy", "web"]);
    assert!(
        d.contains("StrategyType:") && d.contains("RollingUpdate") && d.contains("80/TCP"),
        "{d}"
    );

    s.must_kubectl(&["label", "deploy", "web", "tier=frontend"]);
    s.must_kubectl(&["annotate", "deploy", "web", "owner=team-a"]);
    let lv = s.must_kubectl(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.labels.tier} {.metadata.annotations.owner}",
    ]);
    assert_eq!(lv, "frontend team-a");
    s.must_kubectl(&["label", "deploy", "web", "tier-"]);
    let shown = s.must_kubectl(&["get", "deploy", "web", "--show-labels"]);
    assert!(!shown.contains("tier=frontend"), "{shown}");
    let sel = s.must_kubectl(&[
        "get",
        "deploy",
        "-l",
        "app=web,tier notin (x)",
        "-o",
        "name",
    ]);
    assert_eq!(sel.trim(), "deployment.apps/web");
    let none = s.must_kubectl(&["get", "deploy", "-l", "app!=web", "-o", "name"]);
    assert_eq!(none.trim(), "");

    // The three patch types.
    s.must_kubectl(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"main","image":"nginx:smp"}]}}}}"#,
    ]);
    s.must_kubectl(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minReadySeconds":5}}"#,
    ]);
    s.must_kubectl(&[
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/revisionHistoryLimit","value":3}]"#,
    ]);
    let p = s.must_kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.spec.minReadySeconds} {.spec.revisionHistoryLimit}"]);
    assert_eq!(p, "nginx:smp 5 3");
    let bad = s.kubectl(&[
        "patch",
        "deploy",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":99}]"#,
    ]);
    assert!(!bad.status.success());

    // Scale through the scale subresource.
    s.must_kubectl(&["scale", "deploy", "web", "--replicas=7"]);
    assert_eq!(
        s.must_kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "7"
    );
    let neg = s.kubectl(&["scale", "deploy", "web", "--replicas=-1"]);
    assert!(!neg.status.success());

    // Delete waits until the object is gone.
    let out = s.must_kubectl(&["delete", "deploy", "web"]);
    assert!(out.contains("deleted"), "{out}");
    let gone = s.kubectl(&["get", "deploy", "web"]);
    assert!(
        !gone.status.success() && stderr(&gone).contains("NotFound"),
        "{}",
        stderr(&gone)
    );
}

#[test]
fn create_generators_use_protobuf_bodies() {
    let s = TestServer::start();
    s.must_kubectl(&["create", "namespace", "team"]);
    s.must_kubectl(&[
        "-n",
        "team",
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=2",
        "--",
        "sleep",
        "3600",
    ]);
    s.must_kubectl(&[
        "-n",
        "team",
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=1",
        "--from-literal=b=two",
    ]);
    s.must_kubectl(&[
        "-n",
        "team",
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=password=s3cr3t",
    ]);
    s.must_kubectl(&[
        "-n",
        "team",
        "create",
        "service",
        "clusterip",
        "svc",
        "--tcp=80:8080",
    ]);
    s.must_kubectl(&["-n", "team", "create", "serviceaccount", "robot"]);
    s.must_kubectl(&[
        "-n",
        "team",
        "create",
        "job",
        "once",
        "--image=busybox",
        "--",
        "echo",
        "hi",
    ]);
    let d = s.must_kubectl(&[
        "-n",
        "team",
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].command}",
    ]);
    assert_eq!(d, r#"2 ["sleep","3600"]"#);
    assert_eq!(
        s.must_kubectl(&["-n", "team", "get", "cm", "cfg", "-o", "jsonpath={.data.b}"]),
        "two"
    );
    // Secret bytes arrive base64-encoded, as in JSON.
    assert_eq!(
        s.must_kubectl(&[
            "-n",
            "team",
            "get",
            "secret",
            "sec",
            "-o",
            "jsonpath={.data.password}"
        ]),
        "czNjcjN0"
    );
    let svc = s.must_kubectl(&[
        "-n",
        "team",
        "get",
        "svc",
        "svc",
        "-o",
        "jsonpath={.spec.ports[0].port} {.spec.ports[0].targetPort} {.spec.clusterIP}",
    ]);
    assert!(svc.starts_with("80 8080 10.96."), "{svc}");
    assert_eq!(
        s.must_kubectl(&[
            "-n",
            "team",
            "get",
            "job",
            "once",
            "-o",
            "jsonpath={.spec.template.spec.restartPolicy}"
        ]),
        "Never"
    );
    assert_eq!(
        s.must_kubectl(&["-n", "team", "get", "sa", "-o", "name"])
            .lines()
            .count(),
        2
    );
    // auth can-i also sends protobuf.
    assert_eq!(
        s.must_kubectl(&["auth", "can-i", "create", "pods"]).trim(),
        "yes"
    );
}

#[test]
fn replace_conflict_diff_edit_and_wait() {
    let s = TestServer::start();
    s.must_kubectl(&["create", "configmap", "cm", "--from-literal=k=first"]);
    let stale = s.must_kubectl(&["get", "cm", "cm", "-o", "yaml"]);
    s.must_kubectl(&[
        "patch",
        "cm",
        "cm",
        "--type=merge",
        "-p",
        r#"{"data":{"k":"second"}}"#,
    ]);
    // A replace with the old resourceVersion is a Conflict.
    let o = s.kubectl_with(
        &kubectl_path(),
        &["replace", "-f", "-"],
        Some(&stale.replace("k: first", "k: third")),
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Conflict") && stderr(&o).contains("the object has been modified"),
        "{}",
        stderr(&o)
    );
    // A fresh one succeeds.
    let fresh = s.must_kubectl(&["get", "cm", "cm", "-o", "yaml"]);
    s.must_kubectl_stdin(
        &["replace", "-f", "-"],
        &fresh.replace("k: second", "k: fourth"),
    );
    assert_eq!(
        s.must_kubectl(&["get", "cm", "cm", "-o", "jsonpath={.data.k}"]),
        "fourth"
    );

    // diff: exit 1 and a unified diff when the server object differs.
    let o = s.kubectl_with(
        &kubectl_path(),
        &["diff", "-f", "-"],
        Some(&fresh.replace("k: second", "k: fifth")),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).contains("+  k: fifth"), "{}", stdout(&o));
    assert_eq!(
        s.must_kubectl(&["get", "cm", "cm", "-o", "jsonpath={.data.k}"]),
        "fourth",
        "diff must not change the object"
    );

    // edit through an editor script.
    let editor = s.dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/k: fourth/k: edited/' \"$1\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = std::process::Command::new(kubectl_path())
        .args(["--kubeconfig"])
        .arg(&s.kubeconfig)
        .args(["edit", "cm", "cm"])
        .env("KUBE_EDITOR", &editor)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        s.must_kubectl(&["get", "cm", "cm", "-o", "jsonpath={.data.k}"]),
        "edited"
    );

    // wait for a jsonpath condition and for deletion.
    s.must_kubectl(&[
        "wait",
        "--for=jsonpath={.data.k}=edited",
        "cm/cm",
        "--timeout=10s",
    ]);
    let mut waiter = std::process::Command::new(kubectl_path())
        .args(["--kubeconfig"])
        .arg(&s.kubeconfig)
        .args(["wait", "--for=delete", "cm/cm", "--timeout=20s"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    s.must_kubectl(&["delete", "cm", "cm"]);
    assert!(waiter.wait().unwrap().success());
}

#[test]
fn watch_streams_changes() {
    let s = TestServer::start();
    s.must_kubectl(&["create", "configmap", "first"]);
    let mut w = std::process::Command::new(kubectl_path())
        .args(["--kubeconfig"])
        .arg(&s.kubeconfig)
        .args(["get", "cm", "-w", "--request-timeout=8s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(800));
    s.must_kubectl(&["create", "configmap", "second"]);
    std::thread::sleep(std::time::Duration::from_millis(800));
    let _ = w.kill();
    let out = w.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("first") && text.contains("second"),
        "watch output:\n{text}"
    );
    assert!(text.contains("DATA"), "table header expected:\n{text}");
}

#[test]
fn server_side_apply_creates_updates_and_conflicts() {
    let s = TestServer::start();
    let out = s.must_kubectl_stdin(&["apply", "--server-side", "-f", "-"], DEPLOYMENT);
    assert!(out.contains("serverside-applied"), "{out}");
    let mf = s.must_kubectl(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(mf.contains("kubectl"), "{mf}");
    s.must_kubectl_stdin(
        &["apply", "--server-side", "-f", "-"],
        &DEPLOYMENT.replace("replicas: 2", "replicas: 4"),
    );
    assert_eq!(
        s.must_kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "4"
    );
    // Another manager changes replicas: the next apply conflicts unless forced.
    s.must_kubectl(&["scale", "deploy", "web", "--replicas=9"]);
    let o = s.kubectl_with(
        &kubectl_path(),
        &["apply", "--server-side", "-f", "-"],
        Some(&DEPLOYMENT.replace("replicas: 2", "replicas: 5")),
    );
    assert!(!o.status.success(), "expected a conflict");
    assert!(stderr(&o).contains("conflict"), "{}", stderr(&o));
    s.must_kubectl_stdin(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &DEPLOYMENT.replace("replicas: 2", "replicas: 5"),
    );
    assert_eq!(
        s.must_kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "5"
    );
    // Dry run changes nothing.
    s.must_kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &DEPLOYMENT.replace("replicas: 2", "replicas: 6"),
    );
    assert_eq!(
        s.must_kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "5"
    );
}

#[test]
fn bad_input_gets_clear_errors() {
    let s = TestServer::start();
    let o = s.kubectl_with(
        &kubectl_path(),
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n"),
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("Invalid") && stderr(&o).contains("metadata.name"),
        "{}",
        stderr(&o)
    );
    // Strict field validation (kubectl's default) rejects unknown fields.
    let o = s.kubectl_with(
        &kubectl_path(),
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\nbogus: 1\n"),
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unknown field") && stderr(&o).contains("bogus"),
        "{}",
        stderr(&o)
    );
    let o = s.kubectl(&["-n", "nowhere", "create", "configmap", "x"]);
    assert!(
        !o.status.success() && stderr(&o).contains("namespaces \"nowhere\" not found"),
        "{}",
        stderr(&o)
    );
    let o = s.kubectl_with(&kubectl_path(), &["create", "-f", "-"], Some("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: c}}\n    spec:\n      containers: [{name: c, image: x}]\n"));
    assert!(
        !o.status.success() && stderr(&o).contains("selector"),
        "{}",
        stderr(&o)
    );
    // Bodies over 3 MiB are refused with 413.
    let big = format!(
        "{{\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"x\":\"{}\"}}}}",
        "a".repeat(4 * 1024 * 1024)
    );
    let path = s.dir.path().join("big.json");
    std::fs::write(&path, big).unwrap();
    let o = std::process::Command::new("curl")
        .args([
            "-sk",
            "--http1.1",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
        ])
        .args(["-H", &format!("Authorization: Bearer {}", s.token())])
        .arg("--data-binary")
        .arg(format!("@{}", path.display()))
        .arg(format!("{}/api/v1/namespaces/default/configmaps", s.url()))
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["code"], 413, "{st}");
    // Malformed JSON and unknown paths get Status errors.
    let o = std::process::Command::new("curl")
        .args([
            "-sk",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            "{not json",
        ])
        .args(["-H", &format!("Authorization: Bearer {}", s.token())])
        .arg(format!("{}/api/v1/namespaces/default/configmaps", s.url()))
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (st["kind"].as_str(), st["code"].as_i64()),
        (Some("Status"), Some(400)),
        "{st}"
    );
    let o = std::process::Command::new("curl")
        .args(["-sk", "-H", &format!("Authorization: Bearer {}", s.token())])
        .arg(format!("{}/apis/nope.example.com/v1/widgets", s.url()))
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["code"], 404, "{st}");

    // Nothing was stored by the failures.
    assert_eq!(
        s.must_kubectl(&["get", "cm", "-o", "name"]).lines().count(),
        0
    );
    assert_eq!(
        s.must_kubectl(&["get", "deploy", "-o", "name"])
            .lines()
            .count(),
        0
    );
}

#[test]
fn state_survives_kill_and_restart() {
    let s = TestServer::start();
    s.must_kubectl(&["create", "configmap", "keep", "--from-literal=a=b"]);
    let rv1: i64 = s
        .must_kubectl(&[
            "get",
            "cm",
            "keep",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .parse()
        .unwrap();
    let ca1 = std::fs::read_to_string(s.dir.path().join("tls/ca.crt")).unwrap();
    let token1 = s.token();
    let (dir, port) = s.crash();
    let s = TestServer::start_in(dir, port);
    assert_eq!(
        std::fs::read_to_string(s.dir.path().join("tls/ca.crt")).unwrap(),
        ca1
    );
    assert_eq!(s.token(), token1);
    assert_eq!(
        s.must_kubectl(&["get", "cm", "keep", "-o", "jsonpath={.data.a}"]),
        "b"
    );
    s.must_kubectl(&["create", "configmap", "after"]);
    let rv2: i64 = s
        .must_kubectl(&[
            "get",
            "cm",
            "after",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .parse()
        .unwrap();
    assert!(
        rv2 > rv1,
        "revisions must keep increasing across restarts: {rv1} then {rv2}"
    );
}

#[test]
fn unauthenticated_requests_get_401() {
    let s = TestServer::start();
    let o = std::process::Command::new("curl")
        .args(["-sk", &format!("{}/api/v1/namespaces", s.url())])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "Status");
    assert_eq!(v["code"], 401);
    assert_eq!(v["reason"], "Unauthorized");
    let o = std::process::Command::new("curl")
        .args([
            "-sk",
            "-H",
            "Authorization: Bearer wrong",
            &format!("{}/api/v1/namespaces", s.url()),
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["code"], 401);
}

/// POSTs a JSON body with the admin token; returns (HTTP code, body).
fn post(s: &TestServer, path: &str, body: &str) -> (u16, serde_json::Value) {
    request(s, "POST", path, body)
}

fn request(s: &TestServer, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let o = std::process::Command::new("curl")
        .args([
            "-sk",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
            "-H",
            "Content-Type: application/json",
        ])
        .args(["-H", &format!("Authorization: Bearer {}", s.token())])
        .args(["-d", body, &format!("{}{path}", s.url())])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn binding_graceful_deletion_eviction_finalizers_and_namespaces() {
    let s = TestServer::start();
    s.must_kubectl(&["run", "p", "--image=nginx"]);
    let bind = r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{"kind":"Node","name":"n1"}}"#;
    let (code, st) = post(
        &s,
        "/api/v1/namespaces/default/pods/p/binding",
        &bind.replace("n1", "Not_A_Node"),
    );
    assert_eq!(code, 422, "{st}");
    let (code, st) = post(
        &s,
        "/api/v1/namespaces/default/pods/p/binding",
        &bind.replace(r#""name":"p"}"#, r#""name":"p","uid":"not-this-pod"}"#),
    );
    assert_eq!(code, 409, "{st}");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("Precondition failed: UID in precondition"),
        "{st}"
    );
    let (code, _) = post(&s, "/api/v1/namespaces/default/pods/p/binding", bind);
    assert_eq!(code, 201);
    let cond = s.must_kubectl(&[
        "get",
        "pod",
        "p",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].status}",
    ]);
    assert_eq!(cond, "True");
    assert_eq!(
        s.must_kubectl(&[
            "get",
            "pods",
            "--field-selector",
            "spec.nodeName=n1",
            "-o",
            "name"
        ])
        .trim(),
        "pod/p"
    );
    let (code, st) = post(
        &s,
        "/api/v1/namespaces/default/pods/p/binding",
        &bind.replace("n1", "n2"),
    );
    assert_eq!(code, 409, "{st}");
    // A bound pod is deleted gracefully: it stays, Terminating, until its agent finishes it.
    s.must_kubectl(&["delete", "pod", "p", "--wait=false"]);
    let t = s.must_kubectl(&["get", "pod", "p"]);
    assert!(t.contains("Terminating"), "{t}");
    s.must_kubectl(&["delete", "pod", "p", "--force", "--grace-period=0"]);
    assert!(!s.kubectl(&["get", "pod", "p"]).status.success());

    // A collection delete honours ?gracePeriodSeconds= for every item.
    for name in ["c1", "c2"] {
        s.must_kubectl(&["run", name, "--image=nginx", "--labels=batch=c"]);
        let (code, _) = post(
            &s,
            &format!("/api/v1/namespaces/default/pods/{name}/binding"),
            &bind.replace("\"p\"", &format!("\"{name}\"")),
        );
        assert_eq!(code, 201);
    }
    let (code, st) = request(
        &s,
        "DELETE",
        "/api/v1/namespaces/default/pods?labelSelector=batch%3Dc&gracePeriodSeconds=0",
        "",
    );
    assert_eq!(code, 200, "{st}");
    let left = s.must_kubectl(&["get", "pods", "-l", "batch=c", "-o", "name"]);
    assert_eq!(
        left.trim(),
        "",
        "bound pods deleted with grace 0 are gone at once"
    );
    let (code, st) = request(
        &s,
        "DELETE",
        "/api/v1/namespaces/default/pods?gracePeriodSeconds=soon",
        "",
    );
    assert_eq!(code, 400, "{st}");

    // Eviction deletes an unbound pod at once.
    s.must_kubectl(&["run", "e", "--image=nginx"]);
    let (code, st) = post(
        &s,
        "/api/v1/namespaces/default/pods/e/eviction",
        r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"e","namespace":"default"}}"#,
    );
    assert_eq!(code, 201, "{st}");
    assert!(!s.kubectl(&["get", "pod", "e"]).status.success());

    // Finalizers hold deletion until removed.
    s.must_kubectl(&["create", "configmap", "fin"]);
    s.must_kubectl(&[
        "patch",
        "cm",
        "fin",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ]);
    s.must_kubectl(&["delete", "cm", "fin", "--wait=false"]);
    assert!(!s
        .must_kubectl(&[
            "get",
            "cm",
            "fin",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}"
        ])
        .is_empty());
    let o = s.kubectl(&[
        "patch",
        "cm",
        "fin",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold","example.com/new"]}}"#,
    ]);
    assert!(
        !o.status.success(),
        "new finalizers on a deleting object must be refused"
    );
    s.must_kubectl(&[
        "patch",
        "cm",
        "fin",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    assert!(!s.kubectl(&["get", "cm", "fin"]).status.success());

    // Events are found by describe through involvedObject field selectors.
    s.must_kubectl(&["run", "q", "--image=nginx"]);
    let uid = s.must_kubectl(&["get", "pod", "q", "-o", "jsonpath={.metadata.uid}"]);
    let ev = format!(
        "apiVersion: v1\nkind: Event\nmetadata: {{name: q.1}}\ninvolvedObject: {{kind: Pod, name: q, namespace: default, uid: \"{uid}\", apiVersion: v1}}\nreason: Testing\nmessage: hello from the test\ntype: Normal\nsource: {{component: e2e}}\ncount: 1\n"
    );
    s.must_kubectl_stdin(&["create", "-f", "-"], &ev);
    let d = s.must_kubectl(&["describe", "pod", "q"]);
    assert!(
        d.contains("Testing") && d.contains("hello from the test"),
        "{d}"
    );
    // (The scheduler has its own FailedScheduling events: no nodes here.)
    let v1 = s.must_kubectl(&[
        "get",
        "events.v1.events.k8s.io",
        "--field-selector",
        "reason=Testing",
        "-o",
        "jsonpath={.items[0].regarding.name}/{.items[0].note}",
    ]);
    assert_eq!(v1, "q/hello from the test");

    // Deleting a namespace deletes its contents, then the namespace; creation into it is refused meanwhile.
    s.must_kubectl(&["create", "ns", "doomed"]);
    s.must_kubectl(&["-n", "doomed", "create", "configmap", "a"]);
    s.must_kubectl(&["-n", "doomed", "create", "deployment", "d", "--image=nginx"]);
    s.must_kubectl(&["delete", "ns", "doomed", "--timeout=20s"]);
    assert!(!s.kubectl(&["get", "ns", "doomed"]).status.success());
    assert!(!s
        .kubectl(&["-n", "doomed", "create", "configmap", "b"])
        .status
        .success());
}

#[test]
fn client_certificates_authenticate() {
    let s = TestServer::start();
    let d = s.dir.path();
    let run = |args: &[&str]| {
        let o = std::process::Command::new("openssl")
            .args(args)
            .current_dir(d)
            .output()
            .expect("openssl");
        assert!(o.status.success(), "openssl {args:?}: {}", stderr(&o));
    };
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "client.key",
    ]);
    run(&[
        "req",
        "-new",
        "-key",
        "client.key",
        "-subj",
        "/O=system:masters/CN=cert-admin",
        "-out",
        "client.csr",
    ]);
    // A v3 certificate with the clientAuth usage, as cluster tooling issues them.
    std::fs::write(
        d.join("client.ext"),
        "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "tls/ca.crt",
        "-CAkey",
        "tls/ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "client.ext",
        "-out",
        "client.crt",
    ]);
    let curl = |extra: &[&str]| -> serde_json::Value {
        let o = std::process::Command::new("curl")
            .args(["-sS", "--cacert", "tls/ca.crt"])
            .args(extra)
            .arg(format!(
                "{}/apis/authentication.k8s.io/v1/selfsubjectreviews",
                s.url()
            ))
            .args([
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "-d",
                r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
            ])
            .current_dir(d)
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{e}: curl said {}", stderr(&o)))
    };
    let v = curl(&["--cert", "client.crt", "--key", "client.key"]);
    assert_eq!(v["status"]["userInfo"]["username"], "cert-admin", "{v}");
    assert!(
        v["status"]["userInfo"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g == "system:masters"),
        "{v}"
    );
    // A certificate from another CA is not accepted.
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "other.key",
        "-subj",
        "/CN=intruder",
        "-days",
        "1",
        "-out",
        "other.crt",
    ]);
    let o = std::process::Command::new("curl")
        .args([
            "-s",
            "--cacert",
            "tls/ca.crt",
            "--cert",
            "other.crt",
            "--key",
            "other.key",
        ])
        .arg(format!("{}/api/v1/namespaces", s.url()))
        .current_dir(d)
        .output()
        .unwrap();
    let accepted = serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .map(|v| v["kind"] == "NamespaceList")
        .unwrap_or(false);
    assert!(!accepted, "a foreign certificate was accepted");
}
