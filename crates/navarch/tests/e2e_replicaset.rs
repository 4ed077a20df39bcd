//! The replication controller through the real binary and kubectl: a
//! ReplicaSet created from YAML, scaled with `kubectl scale`, read back
//! with `kubectl get rs`, deleted with and without `--cascade=orphan`.
//! Nodes are plain Node objects (no agent): pods are bound but never run,
//! so only DESIRED and CURRENT are checked, and deleted pods stay
//! Terminating (no kubelet finishes them).

mod common;

use common::{wait_for, TestServer};

const NODE: &str = "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-a\n  labels:\n    kubernetes.io/hostname: node-a\nstatus:\n  capacity: {cpu: \"8\", memory: 8Gi, pods: \"110\"}\n  allocatable: {cpu: \"8\", memory: 8Gi, pods: \"110\"}\n  conditions: [{type: Ready, status: \"True\"}]\n";

const RS: &str = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: frontend\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {tier: frontend}\n  template:\n    metadata:\n      labels: {tier: frontend}\n    spec:\n      containers:\n      - name: php\n        image: php-redis\n";

fn active_pods(s: &TestServer) -> usize {
    let out = s.must_kubectl(&[
        "get",
        "pods",
        "-l",
        "tier=frontend",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    out.lines()
        .filter(|l| !l.trim().is_empty() && l.split_whitespace().count() == 1)
        .count()
}

#[test]
fn kubectl_creates_scales_and_lists_a_replica_set() {
    let s = TestServer::start();
    s.must_kubectl_stdin(&["apply", "-f", "-"], NODE);
    s.must_kubectl_stdin(&["create", "-f", "-"], RS);
    wait_for(20, "1 pod", || (active_pods(&s) == 1).then_some(()));

    s.must_kubectl(&["scale", "rs", "frontend", "--replicas=3"]);
    let row = wait_for(20, "DESIRED 3 CURRENT 3", || {
        let out = s.must_kubectl(&["get", "rs", "frontend", "--no-headers"]);
        let cols: Vec<&str> = out.split_whitespace().collect();
        (cols.len() >= 4 && cols[0] == "frontend" && cols[1] == "3" && cols[2] == "3")
            .then_some(out)
    });
    assert_eq!(active_pods(&s), 3, "{row}");
    let header = s.must_kubectl(&["get", "rs", "frontend"]);
    assert!(header.starts_with("NAME"), "{header}");
    assert!(header.contains("DESIRED") && header.contains("CURRENT") && header.contains("READY"));

    let events = s.must_kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=frontend,reason=SuccessfulCreate",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert!(events.contains("Created pod: frontend-"), "{events}");

    s.must_kubectl(&["scale", "rs", "frontend", "--replicas=1"]);
    wait_for(20, "DESIRED 1 CURRENT 1", || {
        let out = s.must_kubectl(&["get", "rs", "frontend", "--no-headers"]);
        let cols: Vec<&str> = out.split_whitespace().collect();
        (cols.len() >= 4 && cols[1] == "1" && cols[2] == "1").then_some(())
    });
    assert_eq!(active_pods(&s), 1);

    // Deleting with --cascade=orphan keeps the pod and frees it.
    s.must_kubectl(&["delete", "rs", "frontend", "--cascade=orphan"]);
    wait_for(20, "pod orphaned", || {
        let refs = s.must_kubectl(&[
            "get",
            "pods",
            "-l",
            "tier=frontend",
            "-o",
            "jsonpath={.items[*].metadata.ownerReferences}",
        ]);
        (refs.trim().is_empty() && active_pods(&s) == 1).then_some(())
    });
    // A new ReplicaSet adopts it; deleting that one (background, kubectl's
    // default) takes the pod with it: the garbage collector.
    s.must_kubectl_stdin(&["create", "-f", "-"], RS);
    wait_for(20, "pod adopted", || {
        let kind = s.must_kubectl(&[
            "get",
            "pods",
            "-l",
            "tier=frontend",
            "-o",
            "jsonpath={.items[*].metadata.ownerReferences[0].kind}",
        ]);
        (kind.trim() == "ReplicaSet").then_some(())
    });
    assert_eq!(active_pods(&s), 1);
    s.must_kubectl(&["delete", "rs", "frontend", "--wait=false"]);
    wait_for(20, "pods deleted with their owner", || {
        (active_pods(&s) == 0).then_some(())
    });
}
