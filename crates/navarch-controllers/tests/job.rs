//! The Job and CronJob controllers against a real in-process API server
//! (memory store) with the scheduler and hollow nodes (`navarch_sim`),
//! which report pods Running; the tests finish pods themselves, as a
//! kubelet would, through `pods/status`.

use jiff::Timestamp;
use navarch_api::patch::PatchType;
use navarch_api::Subresource;
use navarch_apiserver::cache::Filter;
use navarch_controllers::job::{JobOptions, TRACKING_FINALIZER};
use navarch_controllers::{cronjob, job};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

mod common;

use common::*;

fn jobs() -> &'static navarch_api::ResourceType {
    rt("batch", "jobs")
}

fn cronjobs() -> &'static navarch_api::ResourceType {
    rt("batch", "cronjobs")
}

fn uid(o: &Value) -> String {
    o["metadata"]["uid"].as_str().unwrap().to_string()
}

fn now_str() -> String {
    navarch_api::meta::rfc3339(Timestamp::now())
}

fn template() -> Value {
    json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "pause",
        "resources": {"requests": {"cpu": "100m"}}}]}})
}

fn job_obj(name: &str, spec: Value) -> Value {
    let mut j = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"template": template()}});
    for (k, v) in spec.as_object().unwrap() {
        j["spec"][k] = v.clone();
    }
    j
}

/// Starts a cluster with `nodes` hollow nodes and the Job controller
/// (failed pods replaced after 100 ms instead of 10 s).
async fn cluster(nodes: usize) -> (Cluster, Option<navarch_sim::Sim>) {
    let c = Cluster::start_with(false).await;
    let sim = if nodes > 0 {
        Some(c.sim(nodes).await)
    } else {
        None
    };
    job::spawn_with(
        c.server.clone(),
        JobOptions {
            pod_failure_backoff: Duration::from_millis(100),
            max_pod_failure_backoff: Duration::from_secs(1),
        },
        c.shutdown.clone(),
    );
    (c, sim)
}

/// Every pod the Job controls, whatever its phase.
fn job_pods(c: &Cluster, job_uid: &str) -> Vec<Value> {
    c.all_pods()
        .into_iter()
        .filter(|p| controller_uid(p) == Some(job_uid))
        .collect()
}

fn active(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

fn name(p: &Value) -> String {
    p["metadata"]["name"].as_str().unwrap().to_string()
}

/// Waits for `f` to hold on the cluster, for at most 30 s.
async fn until<T>(c: &Cluster, what: &str, mut f: impl FnMut(&Cluster) -> Option<T>) -> T {
    for _ in 0..3000 {
        if let Some(v) = f(c) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not reached in 30 s: {what}");
}

/// The Job once condition `ty` is `True`.
async fn wait_condition(c: &Cluster, job: &str, ty: &str) -> Value {
    for _ in 0..3000 {
        let j = c.read(jobs(), job).await;
        if condition(&j, ty).is_some_and(|c| c["status"] == "True") {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let j = c.read(jobs(), job).await;
    panic!("{job}: no {ty} condition: {:#}", j["status"]);
}

fn condition<'a>(j: &'a Value, ty: &str) -> Option<&'a Value> {
    j["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty)
}

fn condition_types(j: &Value) -> Vec<String> {
    j["status"]["conditions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| c["type"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Finishes a pod as its kubelet would: terminal phase, container
/// terminated, `Ready` false.
async fn finish(c: &Cluster, pod: &str, succeeded: bool) {
    let now = now_str();
    let (phase, code, reason) = if succeeded {
        ("Succeeded", 0, "Completed")
    } else {
        ("Failed", 1, "Error")
    };
    c.server
        .patch(
            pods(),
            Some("default"),
            pod,
            Some(Subresource::Status),
            PatchType::Merge,
            json!({"status": {"phase": phase,
                "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": now}],
                "containerStatuses": [{"name": "c", "image": "pause", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"terminated": {"exitCode": code, "reason": reason,
                        "startedAt": now, "finishedAt": now}}}]}}),
            &opts(),
        )
        .await
        .unwrap();
}

/// Active pods of the Job the hollow nodes report Running.
fn running(c: &Cluster, job_uid: &str) -> Vec<String> {
    job_pods(c, job_uid)
        .iter()
        .filter(|p| active(p) && p["status"]["phase"] == "Running")
        .map(name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_completions_two_at_a_time_run_to_complete() {
    let (c, _sim) = cluster(3).await;
    let j = c
        .create(
            jobs(),
            job_obj("pi", json!({"completions": 5, "parallelism": 2})),
        )
        .await;
    let id = uid(&j);
    let mut finished = BTreeSet::new();
    while finished.len() < 5 {
        let run = until(&c, "a running pod", |c| {
            let r: Vec<String> = running(c, &id)
                .into_iter()
                .filter(|n| !finished.contains(n))
                .collect();
            (!r.is_empty()).then_some(r)
        })
        .await;
        let n_active = job_pods(&c, &id).iter().filter(|p| active(p)).count();
        assert!(n_active <= 2, "{n_active} active pods with parallelism 2");
        for p in run {
            finish(&c, &p, true).await;
            finished.insert(p);
        }
    }
    let j = wait_condition(&c, "pi", "Complete").await;
    let s = &j["status"];
    assert_eq!(s["succeeded"], 5, "{s:#}");
    assert!(s["failed"].is_null() && s["active"].is_null(), "{s:#}");
    assert_eq!(
        (s["ready"].clone(), s["terminating"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(s["uncountedTerminatedPods"], json!({}));
    assert_eq!(condition_types(&j), ["SuccessCriteriaMet", "Complete"]);
    let complete = condition(&j, "Complete").unwrap();
    assert_eq!(complete["reason"], "CompletionsReached");
    assert_eq!(s["completionTime"], complete["lastTransitionTime"]);
    assert!(s["startTime"].as_str().unwrap() <= s["completionTime"].as_str().unwrap());
    // Exactly five pods, none left holding the tracking finalizer; each
    // made from the template with the Job's labels and controller reference.
    let pods = job_pods(&c, &id);
    assert_eq!(pods.len(), 5);
    for p in &pods {
        let fins = p["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(!fins.contains(&json!(TRACKING_FINALIZER)), "{}", name(p));
        assert!(name(p).starts_with("pi-"));
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/job-name"],
            "pi"
        );
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/controller-uid"],
            id.as_str()
        );
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Job");
        assert_eq!(
            p["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
            true
        );
    }
    let e = c.wait_event("pi", "SuccessfulCreate").await;
    assert!(e["message"]
        .as_str()
        .unwrap()
        .starts_with("Created pod: pi-"));
    assert_eq!(e["source"]["component"], "job-controller");
    c.wait_event("pi", "Completed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_beyond_the_backoff_limit_fail_the_job() {
    let (c, _sim) = cluster(2).await;
    let id = uid(&c
        .create(jobs(), job_obj("flaky", json!({"backoffLimit": 1})))
        .await);
    // The first failure is replaced (after the back-off), the second is
    // one too many.
    let first = until(&c, "a running pod", |c| running(c, &id).pop()).await;
    finish(&c, &first, false).await;
    let second = until(&c, "a replacement", |c| {
        running(c, &id).into_iter().find(|p| *p != first)
    })
    .await;
    finish(&c, &second, false).await;
    let j = wait_condition(&c, "flaky", "Failed").await;
    let f = condition(&j, "Failed").unwrap();
    assert_eq!(f["reason"], "BackoffLimitExceeded");
    assert_eq!(f["message"], "Job has reached the specified backoff limit");
    assert_eq!(condition_types(&j), ["FailureTarget", "Failed"]);
    assert_eq!(j["status"]["failed"], 2);
    assert!(j["status"]["completionTime"].is_null());
    assert_eq!(job_pods(&c, &id).len(), 2, "no pod after the failure");
    let e = c.wait_event("flaky", "BackoffLimitExceeded").await;
    assert_eq!(e["type"], "Warning");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_deadline_fails_the_job_and_removes_its_pods() {
    let (c, _sim) = cluster(2).await;
    let id = uid(&c
        .create(
            jobs(),
            job_obj(
                "slow",
                json!({"completions": 4, "parallelism": 2, "activeDeadlineSeconds": 2}),
            ),
        )
        .await);
    until(&c, "two running pods", |c| {
        (running(c, &id).len() == 2).then_some(())
    })
    .await;
    let j = wait_condition(&c, "slow", "Failed").await;
    let f = condition(&j, "Failed").unwrap();
    assert_eq!(f["reason"], "DeadlineExceeded");
    assert_eq!(
        f["message"],
        "Job was active longer than specified deadline"
    );
    // The running pods were deleted (the hollow nodes finished that, the
    // controller removed their finalizers) and counted as failed.
    assert_eq!(j["status"]["failed"], 2);
    until(&c, "pods gone", |c| {
        job_pods(c, &id).is_empty().then_some(())
    })
    .await;
    assert_eq!(
        c.wait_event("slow", "DeadlineExceeded").await["type"],
        "Warning"
    );
    c.wait_event("slow", "SuccessfulDelete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_is_deleted_after_its_ttl() {
    let (c, _sim) = cluster(1).await;
    let id = uid(&c
        .create(
            jobs(),
            job_obj("short", json!({"ttlSecondsAfterFinished": 1})),
        )
        .await);
    let p = until(&c, "a running pod", |c| running(c, &id).pop()).await;
    finish(&c, &p, true).await;
    wait_condition(&c, "short", "Complete").await;
    for _ in 0..3000 {
        match c.server.read(jobs(), Some("default"), "short").await {
            Err(e) if e.code == 404 => return,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    panic!("the job outlived its ttl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_job_starts_when_resumed() {
    let (c, _sim) = cluster(1).await;
    let id = uid(&c
        .create(
            jobs(),
            job_obj(
                "later",
                json!({"suspend": true, "completions": 2, "parallelism": 2}),
            ),
        )
        .await);
    let j = wait_condition(&c, "later", "Suspended").await;
    assert!(j["status"]["startTime"].is_null());
    assert!(job_pods(&c, &id).is_empty());
    c.patch(jobs(), "later", json!({"spec": {"suspend": false}}))
        .await;
    until(&c, "two pods", |c| {
        (job_pods(c, &id).len() == 2).then_some(())
    })
    .await;
    for _ in 0..3000 {
        let j = c.read(jobs(), "later").await;
        let s = condition(&j, "Suspended").unwrap();
        if s["status"] == "False" {
            assert_eq!(s["reason"], "JobResumed");
            assert!(j["status"]["startTime"].is_string());
            c.wait_event("later", "Resumed").await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not resumed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_indexed_job_runs_one_pod_per_index() {
    let (c, _sim) = cluster(2).await;
    let id = uid(&c
        .create(
            jobs(),
            job_obj(
                "idx",
                json!({"completionMode": "Indexed", "completions": 3, "parallelism": 3}),
            ),
        )
        .await);
    let pods = until(&c, "three running pods", |c| {
        let r = running(c, &id);
        (r.len() == 3).then_some(r)
    })
    .await;
    let all = job_pods(&c, &id);
    let mut indexes = BTreeSet::new();
    for p in &all {
        let ix = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
            ix.as_str()
        );
        assert_eq!(p["spec"]["hostname"], format!("idx-{ix}"));
        assert!(name(p).starts_with(&format!("idx-{ix}-")));
        indexes.insert(ix);
    }
    assert_eq!(
        indexes,
        BTreeSet::from(["0".into(), "1".into(), "2".into()])
    );
    for p in pods {
        finish(&c, &p, true).await;
    }
    let j = wait_condition(&c, "idx", "Complete").await;
    assert_eq!(j["status"]["completedIndexes"], "0-2");
    assert_eq!(j["status"]["succeeded"], 3);
}

// ----- CronJobs ------------------------------------------------------------------------

/// A cluster with the CronJob controller only (Jobs stay as the tests
/// make them).
async fn cron_cluster() -> Cluster {
    let c = Cluster::start_with(false).await;
    cronjob::spawn(c.server.clone(), c.shutdown.clone());
    c
}

fn cronjob_obj(name: &str, spec: Value) -> Value {
    let mut cj = json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"schedule": "*/1 * * * *", "suspend": true,
            "jobTemplate": {"metadata": {"labels": {"from": name}}, "spec": {"template": template()}}}});
    for (k, v) in spec.as_object().unwrap() {
        cj["spec"][k] = v.clone();
    }
    cj
}

async fn patch_status(
    c: &Cluster,
    rt: &'static navarch_api::ResourceType,
    name: &str,
    status: Value,
) {
    c.server
        .patch(
            rt,
            Some("default"),
            name,
            Some(Subresource::Status),
            PatchType::Merge,
            json!({ "status": status }),
            &opts(),
        )
        .await
        .unwrap();
}

fn all_jobs(c: &Cluster) -> Vec<Value> {
    c.server
        .cache
        .kind(jobs())
        .list(&Filter::default(), 0)
        .items
        .iter()
        .map(|o| o.value())
        .collect()
}

/// Five minutes ago: schedule times since then were missed.
fn five_minutes_ago() -> String {
    navarch_api::meta::rfc3339(Timestamp::now() - jiff::SignedDuration::from_mins(5))
}

/// A Job the CronJob controls, made by hand (as `kubectl create job
/// --from=cronjob/…` makes one), and its object reference.
async fn manual_job(c: &Cluster, name: &str, cj: &Value) -> Value {
    let mut j = job_obj(name, json!({}));
    j["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "CronJob",
        "name": cj["metadata"]["name"], "uid": cj["metadata"]["uid"], "controller": true}]);
    let j = c.create(jobs(), j).await;
    json!({"kind": "Job", "apiVersion": "batch/v1", "namespace": "default",
        "name": name, "uid": j["metadata"]["uid"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cronjob_starts_the_job_of_a_due_schedule() {
    let c = cron_cluster().await;
    let cj = c
        .create(
            cronjobs(),
            cronjob_obj("hello", json!({"startingDeadlineSeconds": 300})),
        )
        .await;
    // The last run was five minutes ago: the current minute is due.
    patch_status(
        &c,
        cronjobs(),
        "hello",
        json!({"lastScheduleTime": five_minutes_ago()}),
    )
    .await;
    c.patch(cronjobs(), "hello", json!({"spec": {"suspend": false}}))
        .await;
    let job = until(&c, "a job", |c| all_jobs(c).pop()).await;
    let minutes: i64 = name(&job).strip_prefix("hello-").unwrap().parse().unwrap();
    let scheduled = Timestamp::from_second(minutes * 60).unwrap();
    let now = Timestamp::now();
    assert!(scheduled <= now && now.duration_since(scheduled).as_secs() < 120);
    let m = &job["metadata"];
    assert_eq!(
        m["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"],
        navarch_api::meta::rfc3339(scheduled)
    );
    assert_eq!(m["labels"]["from"], "hello");
    assert_eq!(m["ownerReferences"][0]["kind"], "CronJob");
    assert_eq!(m["ownerReferences"][0]["uid"], cj["metadata"]["uid"]);
    assert_eq!(m["ownerReferences"][0]["controller"], true);
    for _ in 0..3000 {
        let cj = c.read(cronjobs(), "hello").await;
        let s = &cj["status"];
        if s["active"][0]["name"] == name(&job).as_str() {
            assert_eq!(s["active"][0]["uid"], job["metadata"]["uid"]);
            assert_eq!(s["active"][0]["kind"], "Job");
            assert_eq!(s["lastScheduleTime"], navarch_api::meta::rfc3339(scheduled));
            let e = c.wait_event("hello", "SuccessfulCreate").await;
            assert_eq!(e["message"], format!("Created job {}", name(&job)));
            assert_eq!(all_jobs(&c).len(), 1, "one job per schedule time");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the job is not in status.active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_keeps_the_running_job_and_replace_replaces_it() {
    let c = cron_cluster().await;
    let cj = c
        .create(
            cronjobs(),
            cronjob_obj("tick", json!({"concurrencyPolicy": "Forbid"})),
        )
        .await;
    let r = manual_job(&c, "manual", &cj).await;
    patch_status(
        &c,
        cronjobs(),
        "tick",
        json!({"active": [r], "lastScheduleTime": five_minutes_ago()}),
    )
    .await;
    c.patch(cronjobs(), "tick", json!({"spec": {"suspend": false}}))
        .await;
    let e = c.wait_event("tick", "JobAlreadyActive").await;
    assert_eq!(
        e["message"],
        "Not starting job because prior execution is running and concurrency policy is Forbid"
    );
    assert_eq!(all_jobs(&c).len(), 1);
    // Replace: the running Job is deleted, a new one started.
    c.patch(
        cronjobs(),
        "tick",
        json!({"spec": {"concurrencyPolicy": "Replace"}}),
    )
    .await;
    let e = c.wait_event("tick", "SuccessfulDelete").await;
    assert_eq!(e["message"], "Deleted job manual");
    let new = until(&c, "the replacement job", |c| {
        let js = all_jobs(c);
        (js.len() == 1 && name(&js[0]) != "manual").then(|| name(&js[0]))
    })
    .await;
    for _ in 0..3000 {
        let cj = c.read(cronjobs(), "tick").await;
        let a = cj["status"]["active"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if a.len() == 1 && a[0]["name"] == new.as_str() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("status.active does not list only {new}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_limits_keep_the_newest_finished_jobs() {
    let c = cron_cluster().await;
    let cj = c
        .create(
            cronjobs(),
            cronjob_obj(
                "hist",
                json!({"successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1}),
            ),
        )
        .await;
    let at = |mins: i64| {
        navarch_api::meta::rfc3339(Timestamp::now() - jiff::SignedDuration::from_mins(mins))
    };
    let mut newest_completion = String::new();
    for (name, kind, started) in [
        ("s1", "Complete", 30),
        ("s2", "Complete", 20),
        ("s3", "Complete", 10),
        ("f1", "Failed", 25),
        ("f2", "Failed", 15),
    ] {
        manual_job(&c, name, &cj).await;
        let done = at(started - 1);
        let mut status = json!({"startTime": at(started),
            "conditions": [{"type": kind, "status": "True", "lastTransitionTime": done}]});
        if kind == "Complete" {
            status["completionTime"] = json!(done);
            status["succeeded"] = json!(1);
            newest_completion = done;
        } else {
            status["failed"] = json!(1);
        }
        patch_status(&c, jobs(), name, status).await;
    }
    until(&c, "s3 and f2 left", |c| {
        let left: BTreeSet<String> = all_jobs(c).iter().map(name).collect();
        (left == BTreeSet::from(["s3".to_string(), "f2".to_string()])).then_some(())
    })
    .await;
    let want = BTreeSet::from([
        "Deleted job s1".to_string(),
        "Deleted job s2".into(),
        "Deleted job f1".into(),
    ]);
    until(&c, "SuccessfulDelete events for s1, s2 and f1", |c| {
        let deleted: BTreeSet<String> = c
            .events_for("hist")
            .iter()
            .filter(|e| e["reason"] == "SuccessfulDelete")
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect();
        (deleted == want).then_some(())
    })
    .await;
    // lastSuccessfulTime: the newest completion (s3's).
    for _ in 0..3000 {
        let cj = c.read(cronjobs(), "hist").await;
        if cj["status"]["lastSuccessfulTime"] == newest_completion.as_str() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no lastSuccessfulTime");
}
