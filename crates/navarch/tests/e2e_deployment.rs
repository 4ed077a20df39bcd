//! The Deployment controller through the real binary and kubectl:
//! `kubectl create deployment`, `get rs`, `scale`, `set image`,
//! `rollout history` and `rollout undo`. Nodes are plain Node objects (no
//! agent): pods are bound but never become Ready, so a rolling update
//! stops after its first surge step; `rollout status` is tested in-process
//! (crates/navarch-controllers/tests/deployment.rs).

mod common;

use common::{wait_for, TestServer};

const NODE: &str = "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-a\n  labels:\n    kubernetes.io/hostname: node-a\nstatus:\n  capacity: {cpu: \"8\", memory: 8Gi, pods: \"110\"}\n  allocatable: {cpu: \"8\", memory: 8Gi, pods: \"110\"}\n  conditions: [{type: Ready, status: \"True\"}]\n";

/// `kubectl get rs` rows: name, DESIRED, image.
fn sets(s: &TestServer) -> Vec<(String, i64, String)> {
    let out = s.must_kubectl(&[
        "get",
        "rs",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.replicas} {.spec.template.spec.containers[0].image}{\"\\n\"}{end}",
    ]);
    let mut v: Vec<(String, i64, String)> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].parse().unwrap(), f[2].to_string())
        })
        .collect();
    v.sort();
    v
}

fn revision_of(s: &TestServer, kind_name: &str) -> String {
    s.must_kubectl(&[
        "get",
        kind_name,
        "-o",
        "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
    ])
    .trim()
    .to_string()
}

#[test]
fn kubectl_creates_scales_updates_and_undoes_a_deployment() {
    let s = TestServer::start();
    s.must_kubectl_stdin(&["apply", "-f", "-"], NODE);
    s.must_kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=3",
    ]);

    // One ReplicaSet named after the template hash, DESIRED 3 in `get rs`.
    let first = wait_for(20, "the first ReplicaSet", || {
        let v = sets(&s);
        (v.len() == 1 && v[0].1 == 3).then(|| v[0].0.clone())
    });
    let hash = s.must_kubectl(&[
        "get",
        "rs",
        &first,
        "-o",
        "jsonpath={.metadata.labels.pod-template-hash}",
    ]);
    assert!(!hash.trim().is_empty());
    assert_eq!(first, format!("web-{}", hash.trim()));
    let row = wait_for(20, "DESIRED 3 CURRENT 3", || {
        let out = s.must_kubectl(&["get", "rs", &first, "--no-headers"]);
        let cols: Vec<String> = out.split_whitespace().map(str::to_string).collect();
        (cols.get(1).map(String::as_str) == Some("3")
            && cols.get(2).map(String::as_str) == Some("3"))
        .then_some(cols)
    });
    assert_eq!(row[0], first);
    assert_eq!(revision_of(&s, "deployment/web"), "1");
    let ready = s.must_kubectl(&["get", "deployment", "web", "--no-headers"]);
    assert!(ready.starts_with("web "), "{ready}");

    // Scale: the one ReplicaSet follows.
    s.must_kubectl(&["scale", "deployment", "web", "--replicas=5"]);
    wait_for(20, "DESIRED 5", || {
        let v = sets(&s);
        (v.len() == 1 && v[0].1 == 5).then_some(())
    });

    // A new image: a second ReplicaSet, created with the surge (25% of 5
    // rounds up to 2). No pod is ever available, so the rollout only
    // trades unavailable old replicas for new ones within maxSurge:
    // upstream's `cleanupUnhealthyReplicas`.
    s.must_kubectl(&["set", "image", "deployment/web", "nginx=nginx:1.27"]);
    let v = wait_for(20, "a second ReplicaSet", || {
        let v = sets(&s);
        (v.len() == 2 && v.iter().any(|r| r.2 == "nginx:1.27" && r.1 >= 2)).then_some(v)
    });
    let second = v.iter().find(|r| r.2 == "nginx:1.27").unwrap().0.clone();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let v = sets(&s);
    let total: i64 = v.iter().map(|r| r.1).sum();
    assert_eq!(total, 7, "at most 5 + 2 wanted: {v:?}");
    assert!(v.iter().find(|r| r.0 == first).unwrap().1 >= 3, "{v:?}");
    wait_for(20, "revision 2", || {
        (revision_of(&s, "deployment/web") == "2").then_some(())
    });
    assert_eq!(revision_of(&s, &format!("rs/{second}")), "2");
    let events = s.must_kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=web,reason=ScalingReplicaSet",
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains(&format!("Scaled up replica set {first} to 3")),
        "{events}"
    );
    assert!(
        events.contains(&format!("Scaled up replica set {first} to 5 from 3")),
        "{events}"
    );
    assert!(
        events.contains(&format!("Scaled up replica set {second} to 2")),
        "{events}"
    );

    let history = s.must_kubectl(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");

    // Undo: the template of revision 1 back, its ReplicaSet reused as
    // revision 3, no third ReplicaSet.
    s.must_kubectl(&["rollout", "undo", "deployment/web"]);
    let image = s.must_kubectl(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(image.trim(), "nginx");
    wait_for(20, "revision 3 on the first ReplicaSet", || {
        (revision_of(&s, &format!("rs/{first}")) == "3" && revision_of(&s, "deployment/web") == "3")
            .then_some(())
    });
    // No pod is available: the undo cannot progress further than
    // maxSurge allows, but no third ReplicaSet appears.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let v = sets(&s);
    let total: i64 = v.iter().map(|r| r.1).sum();
    assert_eq!(total, 7, "{v:?}");
    assert_eq!(v.len(), 2, "{v:?}");
    let history = s.must_kubectl(&["rollout", "history", "deployment/web"]);
    assert!(
        history.contains("\n2 ") && history.contains("\n3 "),
        "{history}"
    );

    // Pause: a template change makes no ReplicaSet until resumed.
    s.must_kubectl(&["rollout", "pause", "deployment/web"]);
    s.must_kubectl(&["set", "image", "deployment/web", "nginx=nginx:1.28"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(sets(&s).len(), 2, "no rollout while paused");
    s.must_kubectl(&["rollout", "resume", "deployment/web"]);
    wait_for(20, "a third ReplicaSet after resume", || {
        sets(&s).iter().any(|r| r.2 == "nginx:1.28").then_some(())
    });

    // Restart: a new template annotation, a new ReplicaSet.
    s.must_kubectl(&["rollout", "restart", "deployment/web"]);
    wait_for(20, "a fourth ReplicaSet after restart", || {
        (sets(&s).len() == 4).then_some(())
    });
    let restarted = s.must_kubectl(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}",
    ]);
    assert!(!restarted.trim().is_empty());
    wait_for(20, "revision 5", || {
        (revision_of(&s, "deployment/web") == "5").then_some(())
    });
}
