//! The built-in scheduler through the real binary and kubectl: node
//! selectors, FailedScheduling in `kubectl describe`, and a second profile
//! from a `KubeSchedulerConfiguration` file. Nodes are plain Node objects
//! (no agent), as in upstream's scheduler tests.

mod common;

use common::{free_port, wait_for, TestServer};

fn nodes_yaml(specs: &[(&str, &str, &str)]) -> String {
    specs
        .iter()
        .map(|(name, cpu, labels)| {
            format!(
                "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n    kubernetes.io/hostname: {name}\n{labels}status:\n  capacity: {{cpu: \"{cpu}\", memory: 8Gi, pods: \"110\"}}\n  allocatable: {{cpu: \"{cpu}\", memory: 8Gi, pods: \"110\"}}\n  conditions: [{{type: Ready, status: \"True\"}}]\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn node_of(s: &TestServer, pod: &str) -> Option<String> {
    let out = s.kubectl(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"]);
    let n = common::stdout(&out).trim().to_string();
    (out.status.success() && !n.is_empty()).then_some(n)
}

#[test]
fn node_selector_lands_on_the_labelled_node_and_impossible_pods_explain_why() {
    let s = TestServer::start();
    s.must_kubectl_stdin(
        &["apply", "-f", "-"],
        &nodes_yaml(&[
            ("node-a", "4", ""),
            ("node-b", "4", "    disktype: ssd\n"),
            ("node-c", "4", ""),
        ]),
    );
    s.must_kubectl(&[
        "run",
        "db",
        "--image=postgres",
        "--overrides={\"spec\":{\"nodeSelector\":{\"disktype\":\"ssd\"}}}",
    ]);
    let node = wait_for(20, "db bound", || node_of(&s, "db"));
    assert_eq!(node, "node-b");
    let events = s.must_kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=db,reason=Scheduled",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert_eq!(events.trim(), "Successfully assigned default/db to node-b");

    // No node has 64 cpus: describe tells why, as upstream words it.
    s.must_kubectl(&[
        "run",
        "huge",
        "--image=busybox",
        "--overrides={\"spec\":{\"containers\":[{\"name\":\"huge\",\"image\":\"busybox\",\"resources\":{\"requests\":{\"cpu\":\"64\"}}}]}}",
    ]);
    let want = "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";
    let described = wait_for(20, "FailedScheduling in describe", || {
        let d = s.must_kubectl(&["describe", "pod", "huge"]);
        (d.contains("FailedScheduling") && d.contains(want)).then_some(d)
    });
    assert!(
        described.contains("PodScheduled      False") || described.contains("PodScheduled   False"),
        "{described}"
    );
    assert!(node_of(&s, "huge").is_none());
    let reason = s.must_kubectl(&[
        "get",
        "pod",
        "huge",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].reason}",
    ]);
    assert_eq!(reason.trim(), "Unschedulable");

    // A bigger node joins: the waiting pod is placed without any retry by hand.
    s.must_kubectl_stdin(
        &["apply", "-f", "-"],
        &nodes_yaml(&[("node-big", "96", "")]),
    );
    assert_eq!(
        wait_for(20, "huge bound", || node_of(&s, "huge")),
        "node-big"
    );
}

#[test]
fn scheduler_config_profiles_and_scheduler_name() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("scheduler.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- schedulerName: default-scheduler\n- schedulerName: bin-packer\n  pluginConfig:\n  - name: NodeResourcesFit\n    args:\n      scoringStrategy:\n        type: MostAllocated\n",
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let s = TestServer::spawn(
        data,
        free_port(),
        &[
            "--disable-agent",
            "--scheduler-config",
            config.to_str().unwrap(),
        ],
    );
    s.must_kubectl_stdin(
        &["apply", "-f", "-"],
        &nodes_yaml(&[("empty", "8", ""), ("busy", "8", "")]),
    );
    // Make `busy` the fuller node.
    s.must_kubectl(&[
        "run",
        "load",
        "--image=busybox",
        "--overrides={\"spec\":{\"nodeName\":\"busy\",\"containers\":[{\"name\":\"load\",\"image\":\"busybox\",\"resources\":{\"requests\":{\"cpu\":\"4\",\"memory\":\"4Gi\"}}}]}}",
    ]);
    let pod = |name: &str, scheduler: &str| {
        format!("{{\"spec\":{{\"schedulerName\":\"{scheduler}\",\"containers\":[{{\"name\":\"c\",\"image\":\"busybox\",\"resources\":{{\"requests\":{{\"cpu\":\"1\",\"memory\":\"1Gi\"}}}}}}]}}}}")
            .replace("{name}", name)
    };
    s.must_kubectl(&[
        "run",
        "spread",
        "--image=busybox",
        &format!("--overrides={}", pod("spread", "default-scheduler")),
    ]);
    s.must_kubectl(&[
        "run",
        "packed",
        "--image=busybox",
        &format!("--overrides={}", pod("packed", "bin-packer")),
    ]);
    s.must_kubectl(&[
        "run",
        "other",
        "--image=busybox",
        &format!("--overrides={}", pod("other", "not-ours")),
    ]);
    assert_eq!(
        wait_for(20, "spread bound", || node_of(&s, "spread")),
        "empty"
    );
    assert_eq!(
        wait_for(20, "packed bound", || node_of(&s, "packed")),
        "busy"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        node_of(&s, "other").is_none(),
        "a pod for another scheduler was bound"
    );

    // A bad config is refused with the field named.
    std::fs::write(
        &config,
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\npercentageOfNodesToScore: 500\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_navarch"))
        .args(["server", "--disable-agent", "--scheduler-config"])
        .arg(&config)
        .args(["--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("percentageOfNodesToScore"), "{err}");
}
