//! The Job and CronJob controllers through the real binary and kubectl:
//! `kubectl create job`, the pod finished by hand (no agent: the status
//! is patched as a kubelet would), `kubectl wait --for=condition=complete`,
//! `kubectl get jobs`; `kubectl create cronjob`, `kubectl get cronjobs` and
//! `kubectl create job --from=cronjob/…`.

mod common;

use common::{wait_for, TestServer};

const NODE: &str = "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-a\n  labels:\n    kubernetes.io/hostname: node-a\nstatus:\n  capacity: {cpu: \"8\", memory: 8Gi, pods: \"110\"}\n  allocatable: {cpu: \"8\", memory: 8Gi, pods: \"110\"}\n  conditions: [{type: Ready, status: \"True\"}]\n";

#[test]
fn kubectl_runs_a_job_to_completion_and_lists_cronjobs() {
    let s = TestServer::start();
    s.must_kubectl_stdin(&["apply", "-f", "-"], NODE);
    s.must_kubectl(&["create", "job", "pi", "--image=perl", "--", "echo", "hi"]);
    let pod = wait_for(20, "the job's pod", || {
        let out = s.must_kubectl(&[
            "get",
            "pods",
            "-l",
            "batch.kubernetes.io/job-name=pi",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ]);
        let names: Vec<&str> = out.split_whitespace().collect();
        (names.len() == 1).then(|| names[0].to_string())
    });
    let fins = s.must_kubectl(&["get", "pod", &pod, "-o", "jsonpath={.metadata.finalizers}"]);
    assert!(fins.contains("batch.kubernetes.io/job-tracking"), "{fins}");
    let running = s.must_kubectl(&["get", "jobs", "pi", "--no-headers"]);
    let cols: Vec<&str> = running.split_whitespace().collect();
    assert_eq!(cols[..3], ["pi", "Running", "0/1"], "{running}");

    // The container exits 0: the kubelet's status write, by hand.
    s.must_kubectl(&[
        "patch",
        "pod",
        &pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Succeeded","conditions":[{"type":"Ready","status":"False"}]}}"#,
    ]);
    s.must_kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/pi",
        "--timeout=30s",
    ]);
    let row = s.must_kubectl(&["get", "jobs"]);
    let mut lines = row.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
        "{row}"
    );
    let cols: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(cols[..3], ["pi", "Complete", "1/1"], "{row}");
    assert!(
        cols[3].ends_with('s') || cols[3].ends_with('m'),
        "DURATION {row}"
    );
    let fins = s.must_kubectl(&["get", "pod", &pod, "-o", "jsonpath={.metadata.finalizers}"]);
    assert!(
        !fins.contains("job-tracking"),
        "the finalizer stays after counting: {fins}"
    );
    let events = s.must_kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=pi",
        "-o",
        "jsonpath={range .items[*]}{.reason}:{.message}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains(&format!("SuccessfulCreate:Created pod: {pod}")),
        "{events}"
    );
    wait_for(10, "the Completed event", || {
        let ev = s.must_kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=pi,reason=Completed",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        ev.contains("Job completed").then_some(())
    });

    // CronJobs.
    s.must_kubectl(&[
        "create",
        "cronjob",
        "hello",
        "--image=busybox",
        "--schedule=*/1 * * * *",
        "--",
        "date",
    ]);
    let out = s.must_kubectl(&["get", "cronjobs"]);
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    for col in [
        "NAME",
        "SCHEDULE",
        "TIMEZONE",
        "SUSPEND",
        "ACTIVE",
        "LAST SCHEDULE",
        "AGE",
    ] {
        assert!(header.contains(col), "{out}");
    }
    let cols: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        cols[..9],
        ["hello", "*/1", "*", "*", "*", "*", "<none>", "False", "0"][..9],
        "{out}"
    );
    // `--from=cronjob/` is made client-side: a Job the CronJob controls.
    s.must_kubectl(&["create", "job", "by-hand", "--from=cronjob/hello"]);
    let owner = s.must_kubectl(&[
        "get",
        "job",
        "by-hand",
        "-o",
        "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name} {.metadata.annotations.cronjob\\.kubernetes\\.io/instantiate}",
    ]);
    assert_eq!(owner, "CronJob/hello manual");
    // The Job controller runs it like any other.
    wait_for(20, "a pod for the manual job", || {
        let out = s.must_kubectl(&[
            "get",
            "pods",
            "-l",
            "batch.kubernetes.io/job-name=by-hand",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ]);
        (!out.trim().is_empty()).then_some(())
    });
}
