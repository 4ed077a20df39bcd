//! The Job controller (batch/v1), as upstream's `job` controller with
//! tracking by finalizers, plus the TTL-after-finished controller.
//!
//! One task owns the local state (Jobs and their pods, folded in from the
//! informers) and a work queue of Job keys. A sync reads the local state,
//! decides (pure functions, unit-tested below) and hands the writes to a
//! task; the Job is not synced again until that task is done, and the Job
//! object its status writes return replaces the local copy at once (an
//! informer never moves a copy back to an older resourceVersion).
//!
//! * Pods are made from `spec.template` with `generateName: <job>-`, a
//!   controller ownerReference and the `batch.kubernetes.io/job-tracking`
//!   finalizer (the API server has already put the `controller-uid` and
//!   `job-name` labels, both spellings, on the template). Pods are claimed
//!   like the ReplicaSet controller claims them: matching orphans adopted
//!   (with the finalizer), controlled pods that no longer match released.
//! * **Expectations** record the creates and deletes issued and are lowered
//!   as the pod informer observes them, so a burst of events never makes
//!   extra pods; creates go in slow-start batches, at most 500 per sync.
//! * **Tracking with finalizers** (upstream `trackJobStatusAndRemoveFinalizers`):
//!   a finished pod's uid goes into `status.uncountedTerminatedPods` (one
//!   status write), then its finalizer is removed, then the uid moves into
//!   `status.succeeded`/`failed` (a second write). A pod is thus counted
//!   exactly once, even if it is deleted meanwhile. Pods being deleted
//!   before they succeeded count as failed (unless `podReplacementPolicy`
//!   is `Failed`).
//! * `completions` (unset: done when any pod succeeded and none is
//!   active), `parallelism`, `suspend` (active pods deleted, condition
//!   `Suspended`, `startTime` reset on resume), `backoffLimit` (failed pods,
//!   and for `restartPolicy: OnFailure` the container restarts of running
//!   pods), the delay before replacing failed pods (10 s doubling, at most
//!   10 min, counted from the last failure since the last success; kept in
//!   memory as upstream), `activeDeadlineSeconds` (reason
//!   `DeadlineExceeded`), `completionMode: Indexed` (index annotation and
//!   label, `JOB_COMPLETION_INDEX`, hostname `<job>-<index>`,
//!   `status.completedIndexes`), `podReplacementPolicy`, `spec.managedBy`
//!   (Jobs managed by another controller are left alone).
//! * Finishing as Kubernetes 1.31+: first the interim `SuccessCriteriaMet`
//!   (reason `CompletionsReached`) or `FailureTarget` condition, active pods
//!   deleted; `Complete` (with `completionTime`) or `Failed` once no pod is
//!   uncounted or terminating. Events `SuccessfulCreate`, `SuccessfulDelete`,
//!   `FailedCreate`, `Completed`, `BackoffLimitExceeded`, `DeadlineExceeded`,
//!   `Suspended`, `Resumed`, `TooManySucceededPods`.
//! * Finalizers of pods whose Job is finished or gone are removed (the
//!   orphan queue).
//! * TTL after finished: a finished Job with `ttlSecondsAfterFinished` is
//!   deleted (background propagation, uid and resourceVersion
//!   preconditions, after re-reading it) once its `Complete`/`Failed`
//!   condition is that old.
//!
//! Not done: `podFailurePolicy` rules (the field only switches pod
//! replacement to `Failed`, as defaulting does), `backoffLimitPerIndex` /
//! `maxFailedIndexes`, `successPolicy`, and upstream's one-second batching
//! of pod-triggered syncs.

use crate::events::{ObjectRef, Recorder};
use crate::informer::{Batch, Change, Informer};
use crate::pods_rt;
use crate::queue::{Backoff, WorkQueue};
use jiff::Timestamp;
use navarch_api::patch::PatchType;
use navarch_api::registry::lookup;
use navarch_api::selector::LabelSelector;
use navarch_api::{ApiError, ResourceType, Subresource};
use navarch_apiserver::cache::CachedObject;
use navarch_apiserver::{ApiServer, DeleteOptions, WriteOptions};
use serde_json::{json, Map, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The finalizer that keeps a Job's pod until it is counted.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// Annotation (and label) with an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// Upstream `MaxUncountedPods`.
pub const MAX_UNCOUNTED_PODS: usize = 500;
/// Upstream `MaxPodCreateDeletePerSync`.
pub const MAX_POD_CREATE_DELETE_PER_SYNC: usize = 500;
/// Upstream `ExpectationsTimeout`.
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);
/// `names.MaxGeneratedNameLength`: 63 minus the 5 random characters.
const MAX_GENERATED_NAME_LENGTH: usize = 58;
const COMPONENT: &str = "job-controller";
const MANAGED_BY_DEFAULT: &str = "kubernetes.io/job-controller";
const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// Knobs; the defaults are upstream's.
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// Delay before replacing a failed pod (`DefaultJobPodFailureBackOff`),
    /// doubled for each further failure since the last success.
    pub pod_failure_backoff: Duration,
    /// At most this (`MaxJobPodFailureBackOff`).
    pub max_pod_failure_backoff: Duration,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            pod_failure_backoff: Duration::from_secs(10),
            max_pod_failure_backoff: Duration::from_secs(600),
        }
    }
}

/// Starts the Job and TTL-after-finished controllers with upstream's
/// settings; they stop with `shutdown`.
pub fn spawn(server: Arc<ApiServer>, shutdown: CancellationToken) {
    spawn_with(server, JobOptions::default(), shutdown)
}

/// Starts the controllers with `opts`.
pub fn spawn_with(server: Arc<ApiServer>, opts: JobOptions, shutdown: CancellationToken) {
    let (tx, rx) = mpsc::channel(256);
    for rt in [pods_rt(), jobs_rt()] {
        Informer::start(server.cache.clone(), rt, tx.clone(), shutdown.clone());
    }
    drop(tx);
    let recorder = Recorder::spawn(server.clone(), COMPONENT);
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let c = Controller {
        server,
        recorder,
        opts,
        jobs: HashMap::new(),
        by_uid: HashMap::new(),
        pods: HashMap::new(),
        owned: HashMap::new(),
        orphans: HashMap::new(),
        queue: WorkQueue::default(),
        orphan_queue: WorkQueue::default(),
        orphans_busy: HashSet::new(),
        expectations: HashMap::new(),
        expected_rm: HashMap::new(),
        pod_backoff: HashMap::new(),
        busy: HashSet::new(),
        backoff: Backoff::default(),
        synced: HashSet::new(),
        done_tx,
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = c.run(rx, done_rx) => {}
        }
    });
}

fn jobs_rt() -> &'static ResourceType {
    lookup("batch", "v1", "jobs").expect("jobs")
}

fn write_options() -> WriteOptions {
    WriteOptions {
        field_manager: Some(COMPONENT.into()),
        ..Default::default()
    }
}

// ----- time --------------------------------------------------------------------

/// A timestamp as the API writes it (whole seconds, like `metav1.Time`).
fn time_str(t: Timestamp) -> String {
    navarch_api::meta::rfc3339(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

fn parse_time(v: &Value) -> Option<Timestamp> {
    v.as_str().and_then(|s| s.parse().ok())
}

fn secs(d: jiff::SignedDuration) -> Duration {
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

// ----- Jobs ----------------------------------------------------------------------

type JobKey = (String, String);

/// What a sync reads of a Job.
#[derive(Debug, Clone)]
struct Job {
    obj: Value,
    rv: i64,
    uid: String,
    namespace: String,
    name: String,
    selector: LabelSelector,
    parallelism: i64,
    completions: Option<i64>,
    backoff_limit: i64,
    active_deadline: Option<i64>,
    suspend: bool,
    indexed: bool,
    /// `podReplacementPolicy: Failed` (or a `podFailurePolicy`): pods being
    /// deleted are neither failed nor replaced until they are terminal.
    only_replace_failed: bool,
    restart_on_failure: bool,
    ttl: Option<i64>,
    deleting: bool,
    managed_elsewhere: bool,
}

impl Job {
    fn from_json(v: Value, rv: i64) -> Job {
        let spec = &v["spec"];
        let selector = LabelSelector::from_label_selector(&spec["selector"])
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(LabelSelector::nothing);
        let managed_elsewhere = spec["managedBy"]
            .as_str()
            .is_some_and(|m| m != MANAGED_BY_DEFAULT);
        Job {
            rv,
            uid: v["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            namespace: v["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            name: v["metadata"]["name"].as_str().unwrap_or("").to_string(),
            selector,
            parallelism: spec["parallelism"].as_i64().unwrap_or(1).max(0),
            completions: spec["completions"].as_i64().map(|c| c.max(0)),
            backoff_limit: spec["backoffLimit"].as_i64().unwrap_or(6),
            active_deadline: spec["activeDeadlineSeconds"].as_i64(),
            suspend: spec["suspend"].as_bool().unwrap_or(false),
            indexed: spec["completionMode"] == "Indexed" && spec["completions"].is_i64(),
            only_replace_failed: spec["podReplacementPolicy"] == "Failed"
                || !spec["podFailurePolicy"].is_null(),
            restart_on_failure: spec["template"]["spec"]["restartPolicy"] == "OnFailure",
            ttl: spec["ttlSecondsAfterFinished"].as_i64(),
            deleting: v["metadata"]["deletionTimestamp"].is_string(),
            managed_elsewhere,
            obj: v,
        }
    }

    /// The `Complete` or `Failed` condition that is `True`, if any.
    fn finished(&self) -> Option<Cond> {
        finished_condition(&Status::from_json(&self.obj["status"]))
    }

    fn obj_ref(&self) -> ObjectRef {
        ObjectRef {
            kind: "Job",
            api_version: "batch/v1",
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }

    fn completions(&self) -> i64 {
        self.completions.unwrap_or(0)
    }
}

fn finished_condition(s: &Status) -> Option<Cond> {
    s.conditions
        .iter()
        .find(|c| (c.ty == "Complete" || c.ty == "Failed") && c.status == "True")
        .cloned()
}

/// A Job condition.
#[derive(Debug, Clone, PartialEq)]
struct Cond {
    ty: String,
    status: String,
    reason: String,
    message: String,
    last_probe: Option<String>,
    last_transition: Option<String>,
}

impl Cond {
    fn new(ty: &str, status: &str, reason: &str, message: &str, now: Timestamp) -> Cond {
        Cond {
            ty: ty.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_probe: Some(time_str(now)),
            last_transition: Some(time_str(now)),
        }
    }

    fn from_json(v: &Value) -> Cond {
        let s = |f: &str| v[f].as_str().unwrap_or("").to_string();
        let t = |f: &str| v[f].as_str().map(str::to_string);
        Cond {
            ty: s("type"),
            status: s("status"),
            reason: s("reason"),
            message: s("message"),
            last_probe: t("lastProbeTime"),
            last_transition: t("lastTransitionTime"),
        }
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), json!(self.ty));
        m.insert("status".into(), json!(self.status));
        if let Some(t) = &self.last_probe {
            m.insert("lastProbeTime".into(), json!(t));
        }
        if let Some(t) = &self.last_transition {
            m.insert("lastTransitionTime".into(), json!(t));
        }
        if !self.reason.is_empty() {
            m.insert("reason".into(), json!(self.reason));
        }
        if !self.message.is_empty() {
            m.insert("message".into(), json!(self.message));
        }
        Value::Object(m)
    }
}

/// The fields of `status` this controller owns; the rest of the original
/// object is kept as it was.
#[derive(Debug, Clone, PartialEq, Default)]
struct Status {
    conditions: Vec<Cond>,
    start_time: Option<String>,
    completion_time: Option<String>,
    active: i64,
    succeeded: i64,
    failed: i64,
    ready: Option<i64>,
    terminating: Option<i64>,
    completed_indexes: String,
    uncounted_succeeded: Vec<String>,
    uncounted_failed: Vec<String>,
}

impl Status {
    fn from_json(v: &Value) -> Status {
        let uids = |f: &str| -> Vec<String> {
            v["uncountedTerminatedPods"][f]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|u| u.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        Status {
            conditions: v["conditions"]
                .as_array()
                .map(|a| a.iter().map(Cond::from_json).collect())
                .unwrap_or_default(),
            start_time: v["startTime"].as_str().map(str::to_string),
            completion_time: v["completionTime"].as_str().map(str::to_string),
            active: v["active"].as_i64().unwrap_or(0),
            succeeded: v["succeeded"].as_i64().unwrap_or(0),
            failed: v["failed"].as_i64().unwrap_or(0),
            ready: v["ready"].as_i64(),
            terminating: v["terminating"].as_i64(),
            completed_indexes: v["completedIndexes"].as_str().unwrap_or("").to_string(),
            uncounted_succeeded: uids("succeeded"),
            uncounted_failed: uids("failed"),
        }
    }

    /// `orig` with these fields written over it (zero counters and empty
    /// strings omitted, as Go's `omitempty` does).
    fn to_json(&self, orig: &Value) -> Value {
        let mut m = orig.as_object().cloned().unwrap_or_default();
        let mut set = |k: &str, v: Option<Value>| match v {
            Some(v) => {
                m.insert(k.to_string(), v);
            }
            None => {
                m.remove(k);
            }
        };
        set(
            "conditions",
            (!self.conditions.is_empty())
                .then(|| Value::Array(self.conditions.iter().map(Cond::to_json).collect())),
        );
        set("startTime", self.start_time.clone().map(Value::from));
        set(
            "completionTime",
            self.completion_time.clone().map(Value::from),
        );
        for (k, n) in [
            ("active", self.active),
            ("succeeded", self.succeeded),
            ("failed", self.failed),
        ] {
            set(k, (n != 0).then(|| json!(n)));
        }
        set("ready", self.ready.map(Value::from));
        set("terminating", self.terminating.map(Value::from));
        set(
            "completedIndexes",
            (!self.completed_indexes.is_empty()).then(|| json!(self.completed_indexes)),
        );
        let mut u = Map::new();
        if !self.uncounted_succeeded.is_empty() {
            u.insert("succeeded".into(), json!(self.uncounted_succeeded));
        }
        if !self.uncounted_failed.is_empty() {
            u.insert("failed".into(), json!(self.uncounted_failed));
        }
        set("uncountedTerminatedPods", Some(Value::Object(u)));
        Value::Object(m)
    }

    fn condition(&self, ty: &str) -> Option<&Cond> {
        self.conditions.iter().find(|c| c.ty == ty)
    }

    /// Upstream `ensureJobConditionStatus`: adds or updates the condition;
    /// never adds one that is `False`. Whether anything changed.
    fn ensure(&mut self, ty: &str, status: &str, reason: &str, msg: &str, now: Timestamp) -> bool {
        if let Some(c) = self.conditions.iter_mut().find(|c| c.ty == ty) {
            if c.status != status || c.reason != reason || c.message != msg {
                *c = Cond::new(ty, status, reason, msg, now);
                return true;
            }
            return false;
        }
        if status != "False" {
            self.conditions
                .push(Cond::new(ty, status, reason, msg, now));
            return true;
        }
        false
    }
}

// ----- pods ----------------------------------------------------------------------

/// A pod's controller ownerReference.
#[derive(Debug, Clone, PartialEq)]
struct Ctrl {
    kind: String,
    api_version: String,
    name: String,
    uid: String,
}

impl Ctrl {
    fn is_job(&self) -> bool {
        self.kind == "Job" && self.api_version.starts_with("batch/")
    }
}

/// What a sync reads of a pod.
#[derive(Debug, Clone)]
struct Pod {
    namespace: String,
    name: String,
    uid: String,
    resource_version: String,
    labels: Map<String, Value>,
    owner_refs: Vec<Value>,
    finalizers: Vec<Value>,
    controller: Option<Ctrl>,
    phase: String,
    deleting: bool,
    tracked: bool,
    index: Option<i64>,
    scheduled: bool,
    ready_since: Option<i64>,
    /// Container (and init container) restarts.
    restarts: i64,
    created: i64,
    /// Upstream `getFinishedTime`.
    finished_at: Timestamp,
}

fn pod_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

impl Pod {
    fn from_json(v: &Value) -> Pod {
        let m = &v["metadata"];
        let owner_refs = m["ownerReferences"].as_array().cloned().unwrap_or_default();
        let controller = owner_refs
            .iter()
            .find(|r| r["controller"] == true)
            .map(|r| Ctrl {
                kind: r["kind"].as_str().unwrap_or("").into(),
                api_version: r["apiVersion"].as_str().unwrap_or("").into(),
                name: r["name"].as_str().unwrap_or("").into(),
                uid: r["uid"].as_str().unwrap_or("").into(),
            });
        let finalizers = m["finalizers"].as_array().cloned().unwrap_or_default();
        let st = &v["status"];
        let ready_since = st["conditions"].as_array().and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == "Ready" && c["status"] == "True")
                .map(|c| parse_time(&c["lastTransitionTime"]).map_or(0, |t| t.as_second()))
        });
        let restarts = ["containerStatuses", "initContainerStatuses"]
            .iter()
            .filter_map(|f| st[*f].as_array())
            .flatten()
            .filter_map(|c| c["restartCount"].as_i64())
            .sum();
        Pod {
            namespace: m["namespace"].as_str().unwrap_or("").to_string(),
            name: m["name"].as_str().unwrap_or("").to_string(),
            uid: m["uid"].as_str().unwrap_or("").to_string(),
            resource_version: m["resourceVersion"].as_str().unwrap_or("").to_string(),
            labels: m["labels"].as_object().cloned().unwrap_or_default(),
            tracked: finalizers.iter().any(|f| f == TRACKING_FINALIZER),
            finalizers,
            owner_refs,
            controller,
            phase: st["phase"].as_str().unwrap_or("Pending").to_string(),
            deleting: m["deletionTimestamp"].is_string(),
            index: m["annotations"][COMPLETION_INDEX]
                .as_str()
                .and_then(|s| s.parse::<i64>().ok())
                .filter(|i| *i >= 0),
            scheduled: v["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty()),
            ready_since,
            restarts,
            created: parse_time(&m["creationTimestamp"]).map_or(0, |t| t.as_second()),
            finished_at: finished_at(v),
        }
    }

    fn terminal(&self) -> bool {
        self.phase == "Succeeded" || self.phase == "Failed"
    }

    /// Upstream `IsPodActive`.
    fn active(&self) -> bool {
        !self.terminal() && !self.deleting
    }

    fn terminating(&self) -> bool {
        self.deleting && !self.terminal()
    }

    fn ready(&self) -> bool {
        self.ready_since.is_some()
    }

    fn to_ref(&self) -> PodRef {
        PodRef {
            name: self.name.clone(),
            uid: self.uid.clone(),
            ready: self.ready(),
            tracked: self.tracked,
        }
    }

    /// Sort key of upstream `controller.ActivePods`: smaller goes first.
    fn removal_rank(
        &self,
    ) -> (
        bool,
        u8,
        bool,
        std::cmp::Reverse<i64>,
        std::cmp::Reverse<i64>,
        std::cmp::Reverse<i64>,
    ) {
        let phase = match self.phase.as_str() {
            "Pending" => 0,
            "Unknown" => 1,
            "Running" => 2,
            _ => 3,
        };
        (
            self.scheduled,
            phase,
            self.ready(),
            std::cmp::Reverse(self.ready_since.unwrap_or(0)),
            std::cmp::Reverse(self.restarts),
            std::cmp::Reverse(self.created),
        )
    }
}

/// Upstream `getFinishedTime`: the last container's finish, else the
/// `Ready=False` transition, else the deletion time minus its grace
/// period, else the creation time.
fn finished_at(v: &Value) -> Timestamp {
    let st = &v["status"];
    let from_containers = st["containerStatuses"].as_array().and_then(|cs| {
        let mut last: Option<Timestamp> = None;
        for c in cs {
            let t = parse_time(&c["state"]["terminated"]["finishedAt"])?;
            last = Some(last.map_or(t, |l| l.max(t)));
        }
        last
    });
    if let Some(t) = from_containers {
        return t;
    }
    let ready_false = st["conditions"].as_array().and_then(|cs| {
        cs.iter()
            .find(|c| c["type"] == "Ready" && c["status"] == "False")
            .and_then(|c| parse_time(&c["lastTransitionTime"]))
    });
    if let Some(t) = ready_false {
        return t;
    }
    let m = &v["metadata"];
    if let Some(t) = parse_time(&m["deletionTimestamp"]) {
        let grace = m["deletionGracePeriodSeconds"].as_i64().unwrap_or(0);
        return t - jiff::SignedDuration::from_secs(grace);
    }
    parse_time(&m["creationTimestamp"]).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A pod a sync writes to.
#[derive(Debug, Clone, PartialEq)]
struct PodRef {
    name: String,
    uid: String,
    ready: bool,
    tracked: bool,
}

/// Upstream `isPodFailed`.
fn pod_failed(p: &Pod, job: &Job) -> bool {
    if p.phase == "Failed" {
        return true;
    }
    if job.only_replace_failed {
        return false;
    }
    p.deleting && p.phase != "Succeeded"
}

// ----- back-off of pod re-creation -----------------------------------------------

/// Upstream `backoffRecord`: failures since the last success, and when the
/// last one happened.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct PodBackoff {
    failures: u32,
    last_failure: Option<Timestamp>,
}

impl PodBackoff {
    /// The record after newly finished pods (upstream `newBackoffRecord`).
    fn next(self, succeeded: &[Timestamp], failed: &[Timestamp]) -> PodBackoff {
        let mut s = succeeded.to_vec();
        let mut f = failed.to_vec();
        s.sort();
        f.sort();
        match (s.last(), f.last()) {
            (None, None) => self,
            (None, Some(last)) => PodBackoff {
                failures: self.failures + f.len() as u32,
                last_failure: Some(*last),
            },
            (Some(_), None) => PodBackoff::default(),
            (Some(last_success), Some(_)) => {
                let after: Vec<&Timestamp> = f.iter().filter(|t| *t > last_success).collect();
                PodBackoff {
                    failures: after.len() as u32,
                    last_failure: after.last().map(|t| **t),
                }
            }
        }
    }

    /// How long to wait before creating pods (upstream
    /// `getRemainingTimeForFailuresCount`).
    fn remaining(&self, now: Timestamp, base: Duration, max: Duration) -> Duration {
        let Some(last) = self.last_failure else {
            return Duration::ZERO;
        };
        if self.failures == 0 {
            return Duration::ZERO;
        }
        let mut d = base;
        for _ in 1..self.failures {
            d = d.saturating_mul(2);
            if d >= max {
                d = max;
                break;
            }
        }
        let elapsed = secs(now.duration_since(last));
        d.saturating_sub(elapsed)
    }
}

// ----- completion indexes ------------------------------------------------------------

/// Ordered, non-overlapping, non-adjacent index intervals
/// (`status.completedIndexes`).
#[derive(Debug, Clone, PartialEq, Default)]
struct Intervals(Vec<(i64, i64)>);

impl Intervals {
    /// Upstream `parseIndexesFromString`: corrupt parts skipped, indexes
    /// from `completions` on dropped.
    fn parse(s: &str, completions: i64) -> Intervals {
        let mut out: Vec<(i64, i64)> = Vec::new();
        if s.is_empty() {
            return Intervals(out);
        }
        for part in s.split(',') {
            let mut lim = part.split('-');
            let Some(Ok(first)) = lim.next().map(str::parse::<i64>) else {
                continue;
            };
            if first >= completions {
                break;
            }
            let last = match lim.next() {
                Some(l) => match l.parse::<i64>() {
                    Ok(l) => l.min(completions - 1),
                    Err(_) => continue,
                },
                None => first,
            };
            match out.last_mut() {
                Some(prev) if prev.1 == first - 1 => prev.1 = last,
                _ => out.push((first, last)),
            }
        }
        Intervals(out)
    }

    /// These intervals plus `indexes` (in increasing order).
    fn with(&self, indexes: &[i64]) -> Intervals {
        let mut all: Vec<(i64, i64)> = self.0.clone();
        all.extend(indexes.iter().map(|i| (*i, *i)));
        all.sort();
        let mut out: Vec<(i64, i64)> = Vec::new();
        for (a, b) in all {
            match out.last_mut() {
                Some(prev) if a <= prev.1 + 1 => prev.1 = prev.1.max(b),
                _ => out.push((a, b)),
            }
        }
        Intervals(out)
    }

    fn total(&self) -> i64 {
        self.0.iter().map(|(a, b)| b - a + 1).sum()
    }

    fn has(&self, i: i64) -> bool {
        self.0.iter().any(|(a, b)| *a <= i && i <= *b)
    }
}

impl std::fmt::Display for Intervals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, (a, b)) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{a}")?;
            if b > a {
                let sep = if *b == a + 1 { "," } else { "-" };
                write!(f, "{sep}{b}")?;
            }
        }
        Ok(())
    }
}

/// Upstream `firstPendingIndexes`: the first `count` indexes below
/// `completions` that are neither done nor taken by an active pod.
fn first_pending_indexes(taken: &Intervals, count: usize, completions: i64) -> Vec<i64> {
    let mut out = Vec::with_capacity(count);
    let mut i = 0;
    while i < completions && out.len() < count {
        if !taken.has(i) {
            out.push(i);
        }
        i += 1;
    }
    out
}

/// Upstream `activePodsForRemoval`: for Indexed Jobs, pods without a valid
/// index and all but one of each repeated index first; then, up to
/// `at_least`, in `ActivePods` order.
fn pods_for_removal(job: &Job, active: &[&Pod], at_least: usize) -> Vec<PodRef> {
    let mut rm: Vec<&Pod> = Vec::new();
    let mut left: Vec<&Pod> = Vec::new();
    if job.indexed {
        let mut by_index: std::collections::BTreeMap<i64, Vec<&Pod>> = Default::default();
        for p in active {
            match p.index {
                Some(i) if i < job.completions() => by_index.entry(i).or_default().push(p),
                _ => rm.push(p),
            }
        }
        for (_, mut ps) in by_index {
            ps.sort_by_key(|p| p.removal_rank());
            let keep = ps.pop().expect("non-empty");
            rm.extend(ps);
            left.push(keep);
        }
    } else {
        left = active.to_vec();
    }
    if rm.len() < at_least {
        left.sort_by_key(|p| p.removal_rank());
        let n = (at_least - rm.len()).min(left.len());
        rm.extend(left.into_iter().take(n));
    }
    rm.into_iter().map(Pod::to_ref).collect()
}

// ----- a sync's decisions --------------------------------------------------------------

/// What `manageJob` decided.
#[derive(Debug, Clone, PartialEq)]
enum Manage {
    /// Delete these pods, their finalizer removed first (upstream
    /// `deleteJobPods`: such pods are not counted).
    Delete(Vec<PodRef>),
    /// Create pods, with these completion indexes (`None`: NonIndexed).
    Create(Vec<Option<i64>>),
    /// Failed pods are replaced only after this back-off.
    Wait(Duration),
    Nothing,
}

/// The step of a sync that writes pods before the status is tracked.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// The Job is finishing: delete its active pods, keeping their
    /// finalizers (upstream `deleteActivePods`).
    DeleteActive(Vec<PodRef>),
    /// `manageJob` was called.
    Manage(Manage),
    /// Expectations unmet or the Job is being deleted: status only.
    Track,
}

/// A sync, from its decisions on the local state to the status it writes.
#[derive(Debug, Clone)]
struct Sync {
    job: Job,
    pods: Vec<Pod>,
    now: Timestamp,
    satisfied: bool,
    expected_rm: HashSet<String>,
    uncounted_succeeded: HashSet<String>,
    uncounted_failed: HashSet<String>,
    status: Status,
    active: i64,
    ready: i64,
    terminating: i64,
    succeeded: i64,
    prev_succeeded_indexes: Intervals,
    succeeded_indexes: Intervals,
    finished: Option<Cond>,
    pod_backoff: PodBackoff,
    /// Sync again after this long (deadline, back-off).
    requeue: Option<Duration>,
    step: Step,
    /// Events to record once the status is written: (warning, reason, message).
    events: Vec<(bool, &'static str, String)>,
    needs_flush: bool,
}

/// What the pod writes of a step achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Outcome {
    deleted: i64,
    deleted_ready: i64,
    created: i64,
}

/// The first half of upstream `syncJob`, up to and including the decision
/// of `manageJob`. `pods` are the pods the Job controls (claimed).
fn prepare(
    job: &Job,
    pods: Vec<Pod>,
    now: Timestamp,
    satisfied: bool,
    expected_rm: HashSet<String>,
    backoff: PodBackoff,
    opts: &JobOptions,
) -> Sync {
    let mut status = Status::from_json(&job.obj["status"]);
    let uncounted_succeeded: HashSet<String> = status.uncounted_succeeded.iter().cloned().collect();
    let uncounted_failed: HashSet<String> = status.uncounted_failed.iter().cloned().collect();
    let active: Vec<&Pod> = pods.iter().filter(|p| p.active()).collect();
    let ready = active.iter().filter(|p| p.ready()).count() as i64;
    let terminating = pods.iter().filter(|p| p.terminating()).count() as i64;
    // Newly finished pods: tracked, not yet in the uncounted lists, not
    // waiting for their finalizer removal to be seen.
    let valid = |p: &&Pod| {
        p.tracked
            && !expected_rm.contains(&p.uid)
            && (!job.indexed || p.index.is_some_and(|i| i < job.completions()))
    };
    let new_succeeded: Vec<&Pod> = pods
        .iter()
        .filter(valid)
        .filter(|p| !uncounted_succeeded.contains(&p.uid) && p.phase == "Succeeded")
        .collect();
    let new_failed: Vec<&Pod> = pods
        .iter()
        .filter(valid)
        .filter(|p| !uncounted_failed.contains(&p.uid) && pod_failed(p, job))
        .collect();
    let mut succeeded = status.succeeded + (new_succeeded.len() + uncounted_succeeded.len()) as i64;
    let failed = status.failed + (new_failed.len() + uncounted_failed.len()) as i64;
    if status.start_time.is_none() && !job.suspend {
        status.start_time = Some(time_str(now));
    }
    let pod_backoff = backoff.next(
        &new_succeeded
            .iter()
            .map(|p| p.finished_at)
            .collect::<Vec<_>>(),
        &new_failed.iter().map(|p| p.finished_at).collect::<Vec<_>>(),
    );
    let mut requeue = None;
    let mut finished = status
        .condition("SuccessCriteriaMet")
        .filter(|c| c.status == "True")
        .cloned();
    if finished.is_none() {
        if let Some(t) = status
            .condition("FailureTarget")
            .filter(|c| c.status == "True")
        {
            finished = Some(Cond::new("Failed", "True", &t.reason, &t.message, now));
        }
    }
    if finished.is_none() {
        let start = status
            .start_time
            .as_deref()
            .and_then(|s| s.parse::<Timestamp>().ok());
        if failed > job.backoff_limit || past_backoff_limit_on_failure(job, &pods) {
            finished = Some(Cond::new(
                "FailureTarget",
                "True",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
                now,
            ));
        } else if let (Some(ads), Some(start), false) = (job.active_deadline, start, job.suspend) {
            let left = jiff::SignedDuration::from_secs(ads) - now.duration_since(start);
            if left <= jiff::SignedDuration::ZERO {
                finished = Some(Cond::new(
                    "FailureTarget",
                    "True",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                    now,
                ));
            } else {
                requeue = Some(secs(left));
            }
        }
    }
    let mut prev_succeeded_indexes = Intervals::default();
    let mut succeeded_indexes = Intervals::default();
    if job.indexed {
        prev_succeeded_indexes = Intervals::parse(&status.completed_indexes, job.completions());
        let mut new: Vec<i64> = pods
            .iter()
            .filter(|p| p.phase == "Succeeded" && p.tracked)
            .filter_map(|p| p.index)
            .filter(|i| *i < job.completions())
            .collect();
        new.sort();
        new.dedup();
        succeeded_indexes = prev_succeeded_indexes.with(&new);
        succeeded = succeeded_indexes.total();
    }
    let step = if finished.is_some() {
        Step::DeleteActive(active.iter().map(|p| p.to_ref()).collect())
    } else if satisfied && !job.deleting {
        let taken = succeeded_indexes.with(&{
            let mut t: Vec<i64> = active.iter().filter_map(|p| p.index).collect();
            if job.only_replace_failed {
                t.extend(
                    pods.iter()
                        .filter(|p| p.terminating())
                        .filter_map(|p| p.index),
                );
            }
            t.sort();
            t.dedup();
            t
        });
        let m = manage(
            job,
            &active,
            succeeded,
            terminating,
            &taken,
            &pod_backoff,
            now,
            opts,
        );
        if let Manage::Wait(d) = &m {
            requeue = Some(requeue.map_or(*d, |r: Duration| r.min(*d)));
        }
        Step::Manage(m)
    } else {
        Step::Track
    };
    Sync {
        job: job.clone(),
        active: active.len() as i64,
        ready,
        terminating,
        pods,
        now,
        satisfied,
        expected_rm,
        uncounted_succeeded,
        uncounted_failed,
        status,
        succeeded,
        prev_succeeded_indexes,
        succeeded_indexes,
        finished,
        pod_backoff,
        requeue,
        step,
        events: Vec::new(),
        needs_flush: false,
    }
}

/// Upstream `pastBackoffLimitOnFailure`: for `restartPolicy: OnFailure`,
/// the restarts of the Job's running and pending pods against the limit.
fn past_backoff_limit_on_failure(job: &Job, pods: &[Pod]) -> bool {
    if !job.restart_on_failure {
        return false;
    }
    let restarts: i64 = pods
        .iter()
        .filter(|p| p.phase == "Running" || p.phase == "Pending")
        .map(|p| p.restarts)
        .sum();
    if job.backoff_limit == 0 {
        restarts > 0
    } else {
        restarts >= job.backoff_limit
    }
}

/// Upstream `manageJob`'s decision.
#[allow(clippy::too_many_arguments)]
fn manage(
    job: &Job,
    active: &[&Pod],
    succeeded: i64,
    terminating: i64,
    taken_indexes: &Intervals,
    backoff: &PodBackoff,
    now: Timestamp,
    opts: &JobOptions,
) -> Manage {
    let n_active = active.len() as i64;
    if job.suspend {
        if active.is_empty() {
            return Manage::Nothing;
        }
        return Manage::Delete(pods_for_removal(job, active, active.len()));
    }
    let want = match job.completions {
        // Work queue: parallelism pods until one succeeded, then let the
        // others finish.
        None if succeeded > 0 => n_active,
        None => job.parallelism,
        Some(c) => (c - succeeded).clamp(0, job.parallelism),
    };
    let rm_at_least = (n_active - want).max(0) as usize;
    let mut rm = pods_for_removal(job, active, rm_at_least);
    rm.truncate(MAX_POD_CREATE_DELETE_PER_SYNC);
    if !rm.is_empty() {
        return Manage::Delete(rm);
    }
    let terminating = if job.only_replace_failed {
        terminating
    } else {
        0
    };
    let diff = want - terminating - n_active;
    if diff <= 0 {
        return Manage::Nothing;
    }
    let wait = backoff.remaining(now, opts.pod_failure_backoff, opts.max_pod_failure_backoff);
    if !wait.is_zero() {
        // Upstream `enqueueSyncJobWithDelay`: not before the batch period.
        return Manage::Wait(wait.max(Duration::from_secs(1)));
    }
    let diff = (diff as usize).min(MAX_POD_CREATE_DELETE_PER_SYNC);
    if job.indexed {
        let idx = first_pending_indexes(taken_indexes, diff, job.completions());
        if idx.is_empty() {
            return Manage::Nothing;
        }
        return Manage::Create(idx.into_iter().map(Some).collect());
    }
    Manage::Create(vec![None; diff])
}

impl Sync {
    /// The rest of `syncJob` once the step's pod writes are done: counters,
    /// the success check, the `Suspended` condition.
    fn after_step(&mut self, out: Outcome) {
        match &self.step {
            Step::DeleteActive(pods) => {
                if out.deleted != pods.len() as i64 || !self.satisfied {
                    // Pods not yet gone or not yet seen: not finished yet.
                    self.finished = None;
                }
                self.active -= out.deleted;
                self.terminating += out.deleted;
                self.ready -= out.deleted_ready;
            }
            Step::Manage(m) => {
                match m {
                    Manage::Delete(_) => {
                        self.active -= out.deleted;
                        self.terminating += out.deleted;
                        self.ready -= out.deleted_ready;
                    }
                    Manage::Create(_) => self.active += out.created,
                    Manage::Wait(_) | Manage::Nothing => {}
                }
                self.success_check(true);
            }
            Step::Track => self.success_check(false),
        }
        let s = &mut self.status;
        if s.active != self.active
            || s.ready != Some(self.ready)
            || s.terminating != Some(self.terminating)
        {
            self.needs_flush = true;
        }
        s.active = self.active;
        s.ready = Some(self.ready);
        s.terminating = Some(self.terminating);
    }

    fn success_check(&mut self, manage_called: bool) {
        let complete = match self.job.completions {
            None => self.succeeded > 0 && self.active == 0,
            Some(c) => self.succeeded >= c && self.active == 0,
        };
        if complete {
            self.finished = Some(Cond::new(
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                self.now,
            ));
        } else if manage_called {
            let now = self.now;
            if self.job.suspend {
                if self
                    .status
                    .ensure("Suspended", "True", "JobSuspended", "Job suspended", now)
                {
                    self.needs_flush = true;
                    self.events
                        .push((false, "Suspended", "Job suspended".into()));
                }
            } else if self
                .status
                .ensure("Suspended", "False", "JobResumed", "Job resumed", now)
            {
                self.needs_flush = true;
                self.events.push((false, "Resumed", "Job resumed".into()));
                // activeDeadlineSeconds counts continuous activity.
                self.status.start_time = Some(time_str(now));
            }
        }
    }

    /// Upstream `trackJobStatusAndRemoveFinalizers` up to its first status
    /// write: finished pods into the uncounted lists, the pods whose
    /// finalizer goes, the interim condition. Returns those pods and the
    /// uids still holding a finalizer.
    fn track(&mut self) -> Tracking {
        let job = &self.job;
        let with_finalizer: HashSet<String> = self
            .pods
            .iter()
            .filter(|p| p.tracked && !self.expected_rm.contains(&p.uid))
            .map(|p| p.uid.clone())
            .collect();
        if clean_uncounted(&mut self.status, &with_finalizer) {
            self.needs_flush = true;
        }
        let mut order: Vec<&Pod> = self.pods.iter().collect();
        if job.indexed {
            order.sort_by_key(|p| p.index.unwrap_or(-1));
        }
        let finishing_as_failure = self
            .finished
            .as_ref()
            .is_some_and(|c| c.ty != "SuccessCriteriaMet");
        let mut rm: Vec<PodRef> = Vec::new();
        let mut new_indexes: Vec<i64> = Vec::new();
        let mut reached_max = false;
        for p in order {
            if !p.tracked || self.expected_rm.contains(&p.uid) {
                continue;
            }
            let failed = pod_failed(p, job);
            let can_remove =
                job.deleting || self.finished.is_some() || p.phase == "Succeeded" || failed;
            if !can_remove {
                continue;
            }
            rm.push(p.to_ref());
            if p.phase == "Succeeded" && !self.uncounted_failed.contains(&p.uid) {
                if job.indexed {
                    if let Some(ix) = p.index.filter(|i| *i < job.completions()) {
                        if !self.prev_succeeded_indexes.has(ix) {
                            new_indexes.push(ix);
                            self.needs_flush = true;
                        }
                    }
                } else if !self.uncounted_succeeded.contains(&p.uid) {
                    self.needs_flush = true;
                    self.status.uncounted_succeeded.push(p.uid.clone());
                }
            } else if (failed || finishing_as_failure)
                && !self.uncounted_failed.contains(&p.uid)
                && (!job.indexed || p.index.is_some_and(|i| i < job.completions()))
            {
                self.needs_flush = true;
                self.status.uncounted_failed.push(p.uid.clone());
            }
            let n = new_indexes.len()
                + self.status.uncounted_succeeded.len()
                + self.status.uncounted_failed.len();
            if n >= MAX_UNCOUNTED_PODS {
                reached_max = true;
                break;
            }
        }
        if job.indexed {
            new_indexes.sort();
            new_indexes.dedup();
            self.succeeded_indexes = self.succeeded_indexes.with(&new_indexes);
            let s = self.succeeded_indexes.to_string();
            if s != self.status.completed_indexes {
                self.needs_flush = true;
            }
            self.status.succeeded = self.succeeded_indexes.total();
            self.status.completed_indexes = s;
        }
        match self.finished.clone() {
            Some(c) if c.ty == "FailureTarget" => {
                // Recorded before the finalizers go, so the failure is not
                // lost with the pods.
                self.status.conditions.push(c.clone());
                self.needs_flush = true;
                self.finished = Some(Cond::new("Failed", "True", &c.reason, &c.message, self.now));
            }
            Some(c) if c.ty == "SuccessCriteriaMet" => {
                if self
                    .status
                    .condition("SuccessCriteriaMet")
                    .is_none_or(|x| x.status != "True")
                {
                    self.status.conditions.push(c.clone());
                    self.needs_flush = true;
                }
                self.finished = Some(Cond::new(
                    "Complete", "True", &c.reason, &c.message, self.now,
                ));
            }
            _ => {}
        }
        Tracking {
            rm,
            with_finalizer,
            reached_max,
        }
    }

    /// Upstream `enactJobFinished`: the terminal condition, once nothing is
    /// uncounted or terminating. Whether the Job finished now.
    fn enact(&mut self) -> bool {
        let Some(c) = self.finished.clone() else {
            return false;
        };
        if !self.status.uncounted_succeeded.is_empty() || !self.status.uncounted_failed.is_empty() {
            return false;
        }
        if self.terminating > 0 {
            return false;
        }
        self.status
            .ensure(&c.ty, &c.status, &c.reason, &c.message, self.now);
        if c.ty == "Complete" {
            self.status.completion_time = c.last_transition.clone();
        }
        true
    }

    /// The events of a Job that just finished (upstream `recordJobFinished`).
    fn finished_events(&mut self) {
        let Some(c) = self.finished.clone() else {
            return;
        };
        if c.ty == "Complete" {
            if self
                .job
                .completions
                .is_some_and(|n| self.status.succeeded > n)
            {
                self.events.push((
                    true,
                    "TooManySucceededPods",
                    "Too many succeeded pods running after completion count reached".into(),
                ));
            }
            self.events
                .push((false, "Completed", "Job completed".into()));
        } else {
            let reason: &'static str = match c.reason.as_str() {
                "BackoffLimitExceeded" => "BackoffLimitExceeded",
                "DeadlineExceeded" => "DeadlineExceeded",
                _ => "JobFailed",
            };
            self.events.push((true, reason, c.message.clone()));
        }
    }
}

/// The pods whose finalizer a sync removes.
#[derive(Debug)]
struct Tracking {
    rm: Vec<PodRef>,
    with_finalizer: HashSet<String>,
    reached_max: bool,
}

/// Upstream `cleanUncountedPodsWithoutFinalizers`: uncounted pods whose
/// finalizer is gone move into the counters. Whether anything changed.
fn clean_uncounted(status: &mut Status, with_finalizer: &HashSet<String>) -> bool {
    let mut changed = false;
    let before = status.uncounted_succeeded.len();
    status
        .uncounted_succeeded
        .retain(|u| with_finalizer.contains(u));
    if status.uncounted_succeeded.len() != before {
        status.succeeded += (before - status.uncounted_succeeded.len()) as i64;
        changed = true;
    }
    let before = status.uncounted_failed.len();
    status
        .uncounted_failed
        .retain(|u| with_finalizer.contains(u));
    if status.uncounted_failed.len() != before {
        status.failed += (before - status.uncounted_failed.len()) as i64;
        changed = true;
    }
    changed
}

// ----- pods from the template --------------------------------------------------------

fn controller_ref(job: &Job) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job", "name": job.name, "uid": job.uid,
        "controller": true, "blockOwnerDeletion": true})
}

/// A pod from the Job's template: labels, annotations and finalizers of
/// the template plus the tracking finalizer, a controller reference and,
/// for an Indexed Job, the index (annotation, label, hostname,
/// `JOB_COMPLETION_INDEX`).
fn pod_from_template(job: &Job, index: Option<i64>) -> Value {
    let t = &job.obj["spec"]["template"];
    let tm = &t["metadata"];
    let mut labels = tm["labels"].as_object().cloned().unwrap_or_default();
    let mut annotations = tm["annotations"].as_object().cloned().unwrap_or_default();
    let mut finalizers = tm["finalizers"].as_array().cloned().unwrap_or_default();
    if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
        finalizers.push(json!(TRACKING_FINALIZER));
    }
    let mut spec = t["spec"].clone();
    let mut generate_name = format!("{}-", job.name);
    if let Some(ix) = index {
        annotations.insert(COMPLETION_INDEX.into(), json!(ix.to_string()));
        labels.insert(COMPLETION_INDEX.into(), json!(ix.to_string()));
        spec["hostname"] = json!(format!("{}-{ix}", job.name));
        let suffix = format!("-{ix}-");
        generate_name = format!("{}{suffix}", job.name);
        if generate_name.len() > MAX_GENERATED_NAME_LENGTH {
            let keep = MAX_GENERATED_NAME_LENGTH - suffix.len();
            generate_name = format!("{}{suffix}", &job.name[..keep.min(job.name.len())]);
        }
        for list in ["initContainers", "containers"] {
            if let Some(cs) = spec[list].as_array_mut() {
                for c in cs {
                    let env = c
                        .as_object_mut()
                        .map(|o| o.entry("env").or_insert_with(|| json!([])));
                    if let Some(env) = env.and_then(Value::as_array_mut) {
                        if !env.iter().any(|e| e["name"] == COMPLETION_INDEX_ENV) {
                            env.push(
                                json!({"name": COMPLETION_INDEX_ENV, "valueFrom": {"fieldRef": {
                                "fieldPath": format!("metadata.labels['{COMPLETION_INDEX}']")}}}),
                            );
                        }
                    }
                }
            }
        }
    }
    let mut meta = json!({
        "generateName": generate_name,
        "namespace": job.namespace,
        "ownerReferences": [controller_ref(job)],
        "finalizers": finalizers,
    });
    if !labels.is_empty() {
        meta["labels"] = Value::Object(labels);
    }
    if !annotations.is_empty() {
        meta["annotations"] = Value::Object(annotations);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
}

fn remove_finalizer_patch() -> Value {
    json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER]}})
}

/// A merge patch setting ownerReferences and finalizers, only if the pod
/// is still the one seen.
fn claim_patch(p: &Pod, refs: Vec<Value>, finalizers: Vec<Value>) -> Value {
    json!({"metadata": {"ownerReferences": refs, "finalizers": finalizers, "uid": p.uid,
        "resourceVersion": p.resource_version}})
}

// ----- the controller task --------------------------------------------------------------

/// Creates and deletes issued for a Job and not yet observed.
struct Expectations {
    adds: i64,
    dels: HashSet<String>,
    set_at: Instant,
}

impl Expectations {
    fn met(&self) -> bool {
        (self.adds <= 0 && self.dels.is_empty()) || self.set_at.elapsed() >= EXPECTATIONS_TIMEOUT
    }
}

enum Msg {
    /// A sync's writes are done.
    Synced(Box<Done>),
    /// Adoptions and releases are done (all of them: true).
    Claimed(JobKey, bool),
    /// An orphan pod's finalizer removal is done.
    Orphan(String, bool),
    /// A TTL deletion is done (or found not due).
    Expired(JobKey, bool),
}

struct Done {
    key: JobKey,
    /// Creates that failed or were skipped.
    adds_missed: i64,
    /// Deletes that failed (pod keys).
    dels_missed: Vec<String>,
    /// Uids whose finalizer removal was done (expected to be observed).
    rm_done: Vec<String>,
    /// The Job as last written.
    written: Option<Value>,
    pod_backoff: Option<PodBackoff>,
    failed: bool,
}

struct Controller {
    server: Arc<ApiServer>,
    recorder: Recorder,
    opts: JobOptions,
    jobs: HashMap<JobKey, Job>,
    by_uid: HashMap<String, JobKey>,
    /// Pods by `namespace/name`.
    pods: HashMap<String, Pod>,
    /// Pods by the uid of the Job controlling them.
    owned: HashMap<String, BTreeSet<String>>,
    /// Pods without a controller, by namespace.
    orphans: HashMap<String, BTreeSet<String>>,
    queue: WorkQueue<JobKey>,
    /// Pods whose tracking finalizer may have to go.
    orphan_queue: WorkQueue<String>,
    orphans_busy: HashSet<String>,
    expectations: HashMap<JobKey, Expectations>,
    /// Uids whose finalizer removal is not yet observed, per Job.
    expected_rm: HashMap<JobKey, HashSet<String>>,
    pod_backoff: HashMap<JobKey, PodBackoff>,
    busy: HashSet<JobKey>,
    backoff: Backoff<JobKey>,
    synced: HashSet<&'static str>,
    done_tx: mpsc::UnboundedSender<Msg>,
}

impl Controller {
    async fn run(
        mut self,
        mut informers: mpsc::Receiver<Batch>,
        mut done: mpsc::UnboundedReceiver<Msg>,
    ) {
        loop {
            while let Ok(b) = informers.try_recv() {
                self.apply(b);
            }
            while let Ok(d) = done.try_recv() {
                self.done(d);
            }
            let ready = ["Pod", "Job"].iter().all(|k| self.synced.contains(k));
            if ready {
                let mut n = 0;
                while let Some(key) = self.queue.pop() {
                    if !self.busy.contains(&key) {
                        self.sync(key);
                    }
                    n += 1;
                    if n >= 256 {
                        break;
                    }
                }
                while let Some(pod) = self.orphan_queue.pop() {
                    self.sync_orphan(pod);
                }
                if !self.queue.is_empty() {
                    tokio::task::yield_now().await;
                    continue;
                }
            }
            let wake = self.queue.next_wake().min(self.orphan_queue.next_wake());
            tokio::select! {
                b = informers.recv() => match b {
                    Some(b) => self.apply(b),
                    None => return,
                },
                Some(d) = done.recv() => self.done(d),
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    // ----- informer events ---------------------------------------------------------

    fn apply(&mut self, batch: Batch) {
        let kind = batch.rt.kind;
        for change in batch.changes {
            match change {
                Change::Synced => {
                    self.synced.insert(kind);
                }
                Change::Upsert(o) => self.upsert(kind, &o),
                Change::Delete(o) => self.delete(kind, &o),
            }
        }
    }

    fn upsert(&mut self, kind: &str, o: &Arc<CachedObject>) {
        if kind == "Pod" {
            let pod = Pod::from_json(&o.shared_value());
            let key = pod_key(&o.namespace, &o.name);
            let old = self.unindex_pod(&key);
            if let Some(job) = self.controller_of(&pod) {
                // Observations lower the expectations of the controller.
                if old.as_ref().is_none_or(|p| p.uid != pod.uid) {
                    if let Some(e) = self.expectations.get_mut(&job) {
                        e.adds -= 1;
                    }
                }
                if pod.deleting && old.as_ref().is_none_or(|o| !o.deleting) {
                    if let Some(e) = self.expectations.get_mut(&job) {
                        e.dels.remove(&key);
                    }
                }
                if !pod.tracked {
                    if let Some(s) = self.expected_rm.get_mut(&job) {
                        s.remove(&pod.uid);
                    }
                }
            }
            let mut jobs = self.interested(&pod);
            if let Some(old) = &old {
                for k in self.interested(old) {
                    if !jobs.contains(&k) {
                        jobs.push(k);
                    }
                }
            }
            for k in jobs {
                self.queue.add(k);
            }
            if self.orphaned_finalizer(&pod) {
                self.orphan_queue.add(key.clone());
            }
            self.index_pod(key, pod);
        } else {
            let key = (o.namespace.clone(), o.name.clone());
            let rv = o.mod_revision;
            if let Some(old) = self.jobs.get(&key) {
                if old.rv >= rv && old.uid == o.value()["metadata"]["uid"] {
                    // Our own write, already applied.
                    return;
                }
            }
            let job = Job::from_json(o.value(), rv);
            self.put_job(key, job);
        }
    }

    fn put_job(&mut self, key: JobKey, job: Job) {
        if let Some(old) = self.jobs.get(&key) {
            if old.uid != job.uid {
                // Recreated under the same name: a different object.
                self.by_uid.remove(&old.uid);
                self.expectations.remove(&key);
                self.expected_rm.remove(&key);
                self.pod_backoff.remove(&key);
            }
        }
        self.by_uid.insert(job.uid.clone(), key.clone());
        let uid = job.uid.clone();
        self.jobs.insert(key.clone(), job);
        self.queue.add(key);
        // Orphans may be waiting for this Job.
        let pods: Vec<String> = self
            .owned
            .get(&uid)
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        for p in pods {
            if self
                .pods
                .get(&p)
                .is_some_and(|p| self.orphaned_finalizer(p))
            {
                self.orphan_queue.add(p);
            }
        }
    }

    fn delete(&mut self, kind: &str, o: &Arc<CachedObject>) {
        if kind == "Pod" {
            let key = pod_key(&o.namespace, &o.name);
            let Some(pod) = self.unindex_pod(&key) else {
                return;
            };
            if let Some(job) = self.controller_of(&pod) {
                if let Some(e) = self.expectations.get_mut(&job) {
                    e.dels.remove(&key);
                }
                if let Some(s) = self.expected_rm.get_mut(&job) {
                    s.remove(&pod.uid);
                }
            }
            for k in self.interested(&pod) {
                self.queue.add(k);
            }
        } else {
            let key = (o.namespace.clone(), o.name.clone());
            let Some(job) = self.jobs.remove(&key) else {
                return;
            };
            self.by_uid.remove(&job.uid);
            self.expectations.remove(&key);
            self.expected_rm.remove(&key);
            self.pod_backoff.remove(&key);
            self.backoff.forget(&key);
            // Its pods keep no finalizer (upstream `cleanupPodFinalizers`).
            let pods: Vec<String> = self
                .owned
                .get(&job.uid)
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            for p in pods {
                self.orphan_queue.add(p);
            }
        }
    }

    fn index_pod(&mut self, key: String, pod: Pod) {
        match &pod.controller {
            Some(c) => {
                self.owned
                    .entry(c.uid.clone())
                    .or_default()
                    .insert(key.clone());
            }
            None => {
                self.orphans
                    .entry(pod.namespace.clone())
                    .or_default()
                    .insert(key.clone());
            }
        }
        self.pods.insert(key, pod);
    }

    fn unindex_pod(&mut self, key: &str) -> Option<Pod> {
        let pod = self.pods.remove(key)?;
        match &pod.controller {
            Some(c) => {
                if let Some(s) = self.owned.get_mut(&c.uid) {
                    s.remove(key);
                    if s.is_empty() {
                        self.owned.remove(&c.uid);
                    }
                }
            }
            None => {
                if let Some(s) = self.orphans.get_mut(&pod.namespace) {
                    s.remove(key);
                }
            }
        }
        Some(pod)
    }

    /// The Job controlling `pod` (by its controller reference's uid).
    fn controller_of(&self, pod: &Pod) -> Option<JobKey> {
        let c = pod.controller.as_ref().filter(|c| c.is_job())?;
        let key = self.by_uid.get(&c.uid)?;
        (key.0 == pod.namespace && key.1 == c.name).then(|| key.clone())
    }

    /// The Jobs a change to `pod` concerns: its controller, or, for an
    /// orphan, every Job in its namespace whose selector matches it.
    fn interested(&self, pod: &Pod) -> Vec<JobKey> {
        if pod.controller.is_some() {
            return self.controller_of(pod).into_iter().collect();
        }
        self.jobs
            .iter()
            .filter(|((ns, _), j)| *ns == pod.namespace && j.selector.matches(Some(&pod.labels)))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// A pod holding the tracking finalizer that no sync will remove: no
    /// controller, or a Job controller that is finished or gone.
    fn orphaned_finalizer(&self, pod: &Pod) -> bool {
        if !pod.tracked {
            return false;
        }
        match &pod.controller {
            None => true,
            Some(c) if !c.is_job() || c.api_version != "batch/v1" => false,
            Some(_) => match self.controller_of(pod).and_then(|k| self.jobs.get(&k)) {
                None => true,
                Some(j) => j.finished().is_some() && !j.managed_elsewhere,
            },
        }
    }

    fn done(&mut self, m: Msg) {
        match m {
            Msg::Synced(d) => self.sync_done(*d),
            Msg::Claimed(key, ok) => {
                self.busy.remove(&key);
                if ok {
                    self.backoff.forget(&key);
                    self.queue.add(key);
                } else {
                    let delay = self.backoff.fail(key.clone());
                    self.queue.add_after(key, delay);
                }
            }
            Msg::Orphan(pod, ok) => {
                self.orphans_busy.remove(&pod);
                if !ok {
                    self.orphan_queue.add_after(pod, Duration::from_secs(1));
                }
            }
            Msg::Expired(key, ok) => {
                self.busy.remove(&key);
                if !ok && self.jobs.contains_key(&key) {
                    let delay = self.backoff.fail(key.clone());
                    self.queue.add_after(key, delay);
                }
            }
        }
    }

    fn sync_done(&mut self, d: Done) {
        let key = d.key;
        self.busy.remove(&key);
        if let Some(e) = self.expectations.get_mut(&key) {
            e.adds -= d.adds_missed;
            for k in &d.dels_missed {
                e.dels.remove(k);
            }
        }
        if !self.jobs.contains_key(&key) {
            self.expectations.remove(&key);
            self.backoff.forget(&key);
            return;
        }
        // Finalizer removals still to be seen by the informer.
        let uid = self.jobs[&key].uid.clone();
        let still: Vec<String> = d
            .rm_done
            .into_iter()
            .filter(|u| {
                self.owned
                    .get(&uid)
                    .into_iter()
                    .flatten()
                    .filter_map(|k| self.pods.get(k))
                    .any(|p| &p.uid == u && p.tracked)
            })
            .collect();
        if !still.is_empty() {
            self.expected_rm
                .entry(key.clone())
                .or_default()
                .extend(still);
        }
        if let Some(b) = d.pod_backoff {
            self.pod_backoff.insert(key.clone(), b);
        }
        if let Some(obj) = d.written {
            let rv = obj["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse::<i64>().ok())
                .unwrap_or(0);
            let newer = self
                .jobs
                .get(&key)
                .is_some_and(|j| j.rv < rv && j.uid == obj["metadata"]["uid"]);
            if newer {
                self.put_job(key.clone(), Job::from_json(obj, rv));
            }
        }
        if d.failed {
            let delay = self.backoff.fail(key.clone());
            self.queue.add_after(key, delay);
        } else {
            self.backoff.forget(&key);
            self.queue.add(key);
        }
    }

    // ----- sync ------------------------------------------------------------------------

    fn sync(&mut self, key: JobKey) {
        let Some(job) = self.jobs.get(&key).cloned() else {
            self.expectations.remove(&key);
            self.expected_rm.remove(&key);
            self.pod_backoff.remove(&key);
            return;
        };
        if job.managed_elsewhere {
            return;
        }
        let now = Timestamp::now();
        if let Some(c) = job.finished() {
            self.pod_backoff.remove(&key);
            self.expectations.remove(&key);
            for p in self.owned.get(&job.uid).into_iter().flatten() {
                if self.pods.get(p).is_some_and(|p| p.tracked) {
                    self.orphan_queue.add(p.clone());
                }
            }
            self.ttl(&key, &job, &c, now);
            return;
        }
        if self.claim(&key, &job) {
            return;
        }
        let satisfied = self.expectations.get(&key).is_none_or(|e| e.met());
        let pods: Vec<Pod> = self
            .owned
            .get(&job.uid)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k))
            .filter(|p| p.controller.as_ref().is_some_and(|c| c.is_job()))
            .filter(|p| job.selector.matches(Some(&p.labels)))
            .cloned()
            .collect();
        let expected_rm = self.expected_rm.get(&key).cloned().unwrap_or_default();
        let backoff = self.pod_backoff.get(&key).copied().unwrap_or_default();
        let mut s = prepare(&job, pods, now, satisfied, expected_rm, backoff, &self.opts);
        if let Some(d) = s.requeue {
            self.queue.add_after(key.clone(), d);
        }
        // Expectations for this sync's creates and deletes.
        match &s.step {
            Step::Manage(Manage::Create(ix)) => {
                self.expectations.insert(
                    key.clone(),
                    Expectations {
                        adds: ix.len() as i64,
                        dels: HashSet::new(),
                        set_at: Instant::now(),
                    },
                );
                self.queue.add_after(key.clone(), EXPECTATIONS_TIMEOUT);
            }
            Step::Manage(Manage::Delete(pods)) => {
                self.expectations.insert(
                    key.clone(),
                    Expectations {
                        adds: 0,
                        dels: pods.iter().map(|p| pod_key(&key.0, &p.name)).collect(),
                        set_at: Instant::now(),
                    },
                );
                self.queue.add_after(key.clone(), EXPECTATIONS_TIMEOUT);
            }
            _ => {}
        }
        let pod_writes = match &s.step {
            Step::DeleteActive(p) => !p.is_empty(),
            Step::Manage(Manage::Create(_)) | Step::Manage(Manage::Delete(_)) => true,
            _ => false,
        };
        if !pod_writes {
            // Nothing to write unless the status says otherwise.
            let mut dry = s.clone();
            dry.after_step(Outcome::default());
            let t = dry.track();
            let finishes = !t.reached_max && dry.clone().enact();
            if !dry.needs_flush && t.rm.is_empty() && !finishes && dry.events.is_empty() {
                return;
            }
            s = dry;
            self.busy.insert(key.clone());
            let w = Writer::new(self, &key);
            tokio::spawn(async move {
                w.finish(s, Some(t), (Outcome::default(), 0, Vec::new()))
                    .await
            });
            return;
        }
        self.busy.insert(key.clone());
        let w = Writer::new(self, &key);
        tokio::spawn(async move {
            let out = w.run_step(&s).await;
            w.finish(s, None, out).await
        });
    }

    /// Adopts matching orphans and releases controlled pods that no longer
    /// match (upstream `ClaimPods`, with the tracking finalizer); true when
    /// patches were issued (the Job syncs again once they are done).
    fn claim(&mut self, key: &JobKey, job: &Job) -> bool {
        if job.deleting {
            return false;
        }
        let mut patches: Vec<(String, Value)> = Vec::new();
        for k in self.owned.get(&job.uid).into_iter().flatten() {
            let Some(p) = self.pods.get(k) else { continue };
            if p.controller.as_ref().is_some_and(|c| c.is_job())
                && !job.selector.matches(Some(&p.labels))
                && !p.deleting
            {
                let refs = p
                    .owner_refs
                    .iter()
                    .filter(|r| r["uid"] != job.uid.as_str())
                    .cloned()
                    .collect();
                let fins = p
                    .finalizers
                    .iter()
                    .filter(|f| *f != TRACKING_FINALIZER)
                    .cloned()
                    .collect();
                patches.push((p.name.clone(), claim_patch(p, refs, fins)));
            }
        }
        for k in self.orphans.get(&key.0).into_iter().flatten() {
            let Some(p) = self.pods.get(k) else { continue };
            if p.deleting || !job.selector.matches(Some(&p.labels)) {
                continue;
            }
            let mut refs = p.owner_refs.clone();
            refs.push(controller_ref(job));
            let mut fins = p.finalizers.clone();
            if !p.tracked {
                fins.push(json!(TRACKING_FINALIZER));
            }
            patches.push((p.name.clone(), claim_patch(p, refs, fins)));
        }
        if patches.is_empty() {
            return false;
        }
        self.busy.insert(key.clone());
        let (server, tx, key, ns) = (
            self.server.clone(),
            self.done_tx.clone(),
            key.clone(),
            key.0.clone(),
        );
        tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            for (pod, patch) in patches {
                let (server, ns) = (server.clone(), ns.clone());
                set.spawn(async move {
                    let r = server
                        .patch(
                            pods_rt(),
                            Some(&ns),
                            &pod,
                            None,
                            PatchType::Merge,
                            patch,
                            &write_options(),
                        )
                        .await;
                    match r {
                        Ok(_) => true,
                        // Gone or changed meanwhile: the next sync sees it.
                        Err(e) if e.code == 404 || e.code == 409 => true,
                        Err(e) => {
                            tracing::debug!(pod = %pod, error = %e, "claiming a pod failed");
                            false
                        }
                    }
                });
            }
            let mut ok = true;
            while let Some(r) = set.join_next().await {
                ok &= r.unwrap_or(false);
            }
            let _ = tx.send(Msg::Claimed(key, ok));
        });
        true
    }

    /// The TTL-after-finished controller's part: delete the Job once its
    /// finish is `ttlSecondsAfterFinished` old, else sync again then.
    fn ttl(&mut self, key: &JobKey, job: &Job, finished: &Cond, now: Timestamp) {
        let Some(ttl) = job.ttl else { return };
        if job.deleting {
            return;
        }
        let Some(at) = finished
            .last_transition
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
        else {
            return;
        };
        let expire = at + jiff::SignedDuration::from_secs(ttl);
        if now < expire {
            self.queue
                .add_after(key.clone(), secs(expire.duration_since(now)));
            return;
        }
        self.busy.insert(key.clone());
        let (server, tx, key) = (self.server.clone(), self.done_tx.clone(), key.clone());
        tokio::spawn(async move {
            let ok = expire_job(&server, &key).await;
            let _ = tx.send(Msg::Expired(key, ok));
        });
    }

    /// Removes the tracking finalizer of a pod whose Job will not.
    fn sync_orphan(&mut self, key: String) {
        if self.orphans_busy.contains(&key) {
            self.orphan_queue.add_after(key, Duration::from_millis(100));
            return;
        }
        let Some(pod) = self.pods.get(&key) else {
            return;
        };
        if !self.orphaned_finalizer(pod) {
            return;
        }
        // A Job we do not know (yet) is looked up before its pod is freed.
        let check = match &pod.controller {
            Some(c) if self.controller_of(pod).is_none() => Some((c.name.clone(), c.uid.clone())),
            _ => None,
        };
        let (server, tx, ns, name) = (
            self.server.clone(),
            self.done_tx.clone(),
            pod.namespace.clone(),
            pod.name.clone(),
        );
        self.orphans_busy.insert(key.clone());
        tokio::spawn(async move {
            if let Some((job, uid)) = check {
                if let Ok((j, _)) = server.read(jobs_rt(), Some(&ns), &job).await {
                    let j = Job::from_json(j, 0);
                    if j.uid == uid && j.finished().is_none() {
                        let _ = tx.send(Msg::Orphan(key, true));
                        return;
                    }
                }
            }
            let r = server
                .patch(
                    pods_rt(),
                    Some(&ns),
                    &name,
                    None,
                    PatchType::Strategic,
                    remove_finalizer_patch(),
                    &write_options(),
                )
                .await;
            let ok = match r {
                Ok(_) => true,
                Err(e) if e.code == 404 => true,
                Err(e) => {
                    tracing::debug!(pod = %name, error = %e, "removing a pod's job-tracking finalizer failed");
                    false
                }
            };
            let _ = tx.send(Msg::Orphan(key, ok));
        });
    }
}

/// Deletes an expired Job after re-reading it (upstream `processTTL`);
/// false when a delete that was due failed.
async fn expire_job(server: &Arc<ApiServer>, key: &JobKey) -> bool {
    let (fresh, _) = match server.read(jobs_rt(), Some(&key.0), &key.1).await {
        Ok(j) => j,
        Err(e) => return e.code == 404,
    };
    let rv = fresh["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_string);
    let job = Job::from_json(fresh, 0);
    let (Some(ttl), Some(c)) = (job.ttl, job.finished()) else {
        return true;
    };
    if job.deleting {
        return true;
    }
    let Some(at) = c
        .last_transition
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok())
    else {
        return true;
    };
    if Timestamp::now() < at + jiff::SignedDuration::from_secs(ttl) {
        return true;
    }
    let opts = DeleteOptions {
        propagation: Some("Background".into()),
        precondition_uid: Some(job.uid.clone()),
        precondition_rv: rv,
        ..Default::default()
    };
    match server.delete(jobs_rt(), Some(&key.0), &key.1, &opts).await {
        Ok(_) => {
            tracing::info!(job = %key.1, namespace = %key.0, "deleted a finished job after its ttl");
            true
        }
        Err(e) if e.code == 404 || e.code == 409 => true,
        Err(e) => {
            tracing::debug!(job = %key.1, error = %e, "deleting an expired job failed");
            false
        }
    }
}

/// The writes of one sync, done by a task of its own.
struct Writer {
    server: Arc<ApiServer>,
    recorder: Recorder,
    tx: mpsc::UnboundedSender<Msg>,
    key: JobKey,
}

impl Writer {
    fn new(c: &Controller, key: &JobKey) -> Writer {
        Writer {
            server: c.server.clone(),
            recorder: c.recorder.clone(),
            tx: c.done_tx.clone(),
            key: key.clone(),
        }
    }

    /// The pod writes of the sync's step.
    async fn run_step(&self, s: &Sync) -> (Outcome, i64, Vec<String>) {
        let job = &s.job;
        let r = job.obj_ref();
        match &s.step {
            Step::DeleteActive(pods) => {
                let (d, dr, _) = self.delete_pods(job, pods, false).await;
                (
                    Outcome {
                        deleted: d,
                        deleted_ready: dr,
                        created: 0,
                    },
                    0,
                    Vec::new(),
                )
            }
            Step::Manage(Manage::Delete(pods)) => {
                let (d, dr, missed) = self.delete_pods(job, pods, true).await;
                (
                    Outcome {
                        deleted: d,
                        deleted_ready: dr,
                        created: 0,
                    },
                    0,
                    missed,
                )
            }
            Step::Manage(Manage::Create(indexes)) => {
                let created = self.create_pods(job, &r, indexes).await;
                (
                    Outcome {
                        created,
                        ..Default::default()
                    },
                    indexes.len() as i64 - created,
                    Vec::new(),
                )
            }
            _ => (Outcome::default(), 0, Vec::new()),
        }
    }

    /// Upstream slow-start creation: batches of 1, 2, 4, … stopping at
    /// the first batch with an error. Returns the pods created.
    async fn create_pods(&self, job: &Job, r: &ObjectRef, indexes: &[Option<i64>]) -> i64 {
        let mut created = 0;
        let mut batch = 1;
        let mut next = 0;
        while next < indexes.len() {
            let n = batch.min(indexes.len() - next);
            let mut set = tokio::task::JoinSet::new();
            for ix in &indexes[next..next + n] {
                let (server, ns, pod) = (
                    self.server.clone(),
                    job.namespace.clone(),
                    pod_from_template(job, *ix),
                );
                set.spawn(async move {
                    server
                        .create(pods_rt(), Some(&ns), pod, &write_options())
                        .await
                });
            }
            next += n;
            let mut ok = 0;
            let mut failed = false;
            while let Some(res) = set.join_next().await {
                match res {
                    Ok(Ok(w)) => {
                        ok += 1;
                        let name = w.object["metadata"]["name"].as_str().unwrap_or("");
                        self.recorder
                            .normal(r, "SuccessfulCreate", format!("Created pod: {name}"));
                    }
                    // The namespace is being deleted: no event, nothing more.
                    Ok(Err(e)) if e.code == 403 && e.message.contains("is being terminated") => {
                        failed = true;
                    }
                    Ok(Err(e)) => {
                        failed = true;
                        create_failed(&self.recorder, r, &e);
                    }
                    Err(_) => failed = true,
                }
            }
            created += ok;
            if failed {
                break;
            }
            batch *= 2;
        }
        created
    }

    /// Deletes pods, first removing their finalizer when `rm_finalizer`.
    /// Returns the pods deleted (or already gone), the ready ones among
    /// them, and the keys of the deletes that failed.
    async fn delete_pods(
        &self,
        job: &Job,
        pods: &[PodRef],
        rm_finalizer: bool,
    ) -> (i64, i64, Vec<String>) {
        let r = job.obj_ref();
        let mut set = tokio::task::JoinSet::new();
        for p in pods.iter().cloned() {
            let (server, ns) = (self.server.clone(), job.namespace.clone());
            set.spawn(async move {
                if rm_finalizer && p.tracked {
                    let res = server
                        .patch(
                            pods_rt(),
                            Some(&ns),
                            &p.name,
                            None,
                            PatchType::Strategic,
                            remove_finalizer_patch(),
                            &write_options(),
                        )
                        .await;
                    if let Err(e) = res {
                        return (p, Err(e));
                    }
                }
                let del = DeleteOptions {
                    precondition_uid: Some(p.uid.clone()).filter(|u| !u.is_empty()),
                    ..Default::default()
                };
                let res = server.delete(pods_rt(), Some(&ns), &p.name, &del).await;
                (p, res.map(|_| ()))
            });
        }
        let (mut deleted, mut ready, mut missed) = (0, 0, Vec::new());
        while let Some(res) = set.join_next().await {
            let Ok((p, res)) = res else { continue };
            match res {
                Ok(()) => {
                    deleted += 1;
                    if p.ready {
                        ready += 1;
                    }
                    self.recorder.normal(
                        &r,
                        "SuccessfulDelete",
                        format!("Deleted pod: {}", p.name),
                    );
                }
                Err(e) if e.code == 404 => {
                    deleted += 1;
                    if p.ready {
                        ready += 1;
                    }
                    missed.push(pod_key(&job.namespace, &p.name));
                }
                Err(e) => {
                    self.recorder.warning(
                        &r,
                        "FailedDelete",
                        format!("Error deleting: {}", e.message),
                    );
                    missed.push(pod_key(&job.namespace, &p.name));
                }
            }
        }
        (deleted, ready, missed)
    }

    /// Writes the status with the Job's resourceVersion; the Job as written.
    async fn flush(&self, obj: &mut Value, status: &Status) -> Result<(), ApiError> {
        let mut body = obj.clone();
        body["status"] = status.to_json(&obj["status"]);
        let w = self
            .server
            .update(
                jobs_rt(),
                Some(&self.key.0),
                &self.key.1,
                Some(Subresource::Status),
                body,
                &write_options(),
            )
            .await?;
        *obj = w.object;
        Ok(())
    }

    /// The rest of a sync after its pod writes: tracking, finalizers,
    /// status, events; reports to the controller.
    async fn finish(
        self,
        mut s: Sync,
        tracked: Option<Tracking>,
        out: (Outcome, i64, Vec<String>),
    ) {
        let (outcome, adds_missed, dels_missed) = out;
        let t = match tracked {
            Some(t) => t,
            None => {
                s.after_step(outcome);
                s.track()
            }
        };
        let mut done = Done {
            key: self.key.clone(),
            adds_missed,
            dels_missed,
            rm_done: Vec::new(),
            written: None,
            pod_backoff: None,
            failed: false,
        };
        let mut obj = s.job.obj.clone();
        let r = s.job.obj_ref();
        if s.needs_flush {
            if let Err(e) = self.flush(&mut obj, &s.status).await {
                tracing::debug!(job = %self.key.1, error = %e, "adding uncounted pods to the job status failed");
                done.failed = true;
                let _ = self.tx.send(Msg::Synced(Box::new(done)));
                return;
            }
            done.pod_backoff = Some(s.pod_backoff);
            done.written = Some(obj.clone());
            s.needs_flush = false;
        }
        let mut with_finalizer = t.with_finalizer;
        let mut rm_failed = false;
        if !t.rm.is_empty() {
            let mut set = tokio::task::JoinSet::new();
            for p in t.rm {
                let (server, ns) = (self.server.clone(), s.job.namespace.clone());
                set.spawn(async move {
                    let res = server
                        .patch(
                            pods_rt(),
                            Some(&ns),
                            &p.name,
                            None,
                            PatchType::Strategic,
                            remove_finalizer_patch(),
                            &write_options(),
                        )
                        .await;
                    (p.uid, res.map(|_| ()))
                });
            }
            while let Some(res) = set.join_next().await {
                let Ok((uid, res)) = res else {
                    rm_failed = true;
                    continue;
                };
                match res {
                    Ok(()) => {
                        with_finalizer.remove(&uid);
                        done.rm_done.push(uid);
                    }
                    Err(e) if e.code == 404 => {
                        with_finalizer.remove(&uid);
                    }
                    Err(e) => {
                        tracing::debug!(job = %self.key.1, error = %e, "removing a job-tracking finalizer failed");
                        rm_failed = true;
                    }
                }
            }
        }
        if clean_uncounted(&mut s.status, &with_finalizer) {
            s.needs_flush = true;
        }
        let finished = !rm_failed && !t.reached_max && s.enact();
        if finished {
            s.needs_flush = true;
            s.finished_events();
        }
        if s.needs_flush {
            if let Err(e) = self.flush(&mut obj, &s.status).await {
                tracing::debug!(job = %self.key.1, error = %e, "updating the job status failed");
                done.failed = true;
            } else {
                done.written = Some(obj);
            }
        }
        done.failed |= rm_failed;
        if !done.failed {
            for (warning, reason, msg) in s.events.drain(..) {
                if warning {
                    self.recorder.warning(&r, reason, msg);
                } else {
                    self.recorder.normal(&r, reason, msg);
                }
            }
        }
        let _ = self.tx.send(Msg::Synced(Box::new(done)));
    }
}

fn create_failed(recorder: &Recorder, owner: &ObjectRef, e: &ApiError) {
    recorder.warning(
        owner,
        "FailedCreate",
        format!("Error creating: {}", e.message),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn job(spec: Value) -> Job {
        let mut base = json!({"metadata": {"name": "pi", "namespace": "default", "uid": "j1"},
            "spec": {"parallelism": 1, "completions": 1, "backoffLimit": 6,
                "completionMode": "NonIndexed", "podReplacementPolicy": "TerminatingOrFailed",
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "j1"}},
                "template": {"metadata": {"labels": {"batch.kubernetes.io/controller-uid": "j1"}},
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "perl"}]}}},
            "status": {}});
        for (k, v) in spec.as_object().unwrap() {
            base["spec"][k] = v.clone();
        }
        Job::from_json(base, 1)
    }

    fn pod(name: &str, phase: &str) -> Pod {
        Pod::from_json(
            &json!({"metadata": {"name": name, "namespace": "default", "uid": format!("u-{name}"),
            "finalizers": [TRACKING_FINALIZER],
            "creationTimestamp": "2024-01-01T00:00:00Z",
            "labels": {"batch.kubernetes.io/controller-uid": "j1"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "pi", "uid": "j1", "controller": true}]},
            "spec": {"nodeName": "n1"},
            "status": {"phase": phase}}),
        )
    }

    fn now() -> Timestamp {
        t("2024-01-01T00:10:00Z")
    }

    fn plan(job: &Job, pods: Vec<Pod>) -> Sync {
        prepare(
            job,
            pods,
            now(),
            true,
            HashSet::new(),
            PodBackoff::default(),
            &JobOptions::default(),
        )
    }

    /// Runs a sync as if every write worked; the status it leaves.
    fn run(mut s: Sync) -> Sync {
        let out = match &s.step {
            Step::DeleteActive(p) | Step::Manage(Manage::Delete(p)) => Outcome {
                deleted: p.len() as i64,
                deleted_ready: p.iter().filter(|p| p.ready).count() as i64,
                created: 0,
            },
            Step::Manage(Manage::Create(ix)) => Outcome {
                created: ix.len() as i64,
                ..Default::default()
            },
            _ => Outcome::default(),
        };
        s.after_step(out);
        let t = s.track();
        let mut with = t.with_finalizer;
        for p in &t.rm {
            with.remove(&p.uid);
        }
        clean_uncounted(&mut s.status, &with);
        if s.enact() {
            s.finished_events();
        }
        s
    }

    #[test]
    fn creates_up_to_parallelism_and_remaining_completions() {
        let j = job(json!({"completions": 5, "parallelism": 2}));
        let s = plan(&j, vec![]);
        assert_eq!(s.step, Step::Manage(Manage::Create(vec![None, None])));
        assert!(s.status.start_time.is_some());
        // 4 succeeded (counted), 1 running: nothing more to create.
        let mut j = job(json!({"completions": 5, "parallelism": 2}));
        j.obj["status"] = json!({"succeeded": 4});
        let s = plan(&j, vec![pod("a", "Running")]);
        assert_eq!(s.step, Step::Manage(Manage::Nothing));
        // 3 succeeded, 0 running: one more only.
        j.obj["status"] = json!({"succeeded": 3});
        let s = plan(&j, vec![]);
        assert_eq!(s.step, Step::Manage(Manage::Create(vec![None, None])));
        j.obj["status"] = json!({"succeeded": 4});
        let s = plan(&j, vec![]);
        assert_eq!(s.step, Step::Manage(Manage::Create(vec![None])));
        // Too many active: the not-ready, pending ones go first.
        let j = job(json!({"completions": 5, "parallelism": 1}));
        let s = plan(&j, vec![pod("a", "Running"), pod("b", "Pending")]);
        match s.step {
            Step::Manage(Manage::Delete(p)) => assert_eq!(p[0].name, "b"),
            other => panic!("{other:?}"),
        }
        // Unmet expectations: no decisions.
        let s = prepare(
            &j,
            vec![],
            now(),
            false,
            HashSet::new(),
            PodBackoff::default(),
            &JobOptions::default(),
        );
        assert_eq!(s.step, Step::Track);
    }

    #[test]
    fn a_succeeded_pod_is_counted_through_the_uncounted_list() {
        let j = job(json!({}));
        let s = run(plan(&j, vec![pod("a", "Succeeded")]));
        // Counted, finalizer removed, interim then terminal condition.
        assert_eq!(s.status.succeeded, 1);
        assert!(s.status.uncounted_succeeded.is_empty());
        let types: Vec<&str> = s.status.conditions.iter().map(|c| c.ty.as_str()).collect();
        assert_eq!(types, ["SuccessCriteriaMet", "Complete"]);
        let c = s.status.condition("Complete").unwrap();
        assert_eq!(c.reason, "CompletionsReached");
        assert_eq!(s.status.completion_time, c.last_transition);
        assert!(s.events.iter().any(|e| e.1 == "Completed"));
        // When the finalizer removal fails, the uid stays uncounted and
        // the Job does not finish.
        let mut s = plan(&j, vec![pod("a", "Succeeded")]);
        s.after_step(Outcome::default());
        let t = s.track();
        assert_eq!(t.rm.len(), 1);
        assert_eq!(s.status.uncounted_succeeded, ["u-a"]);
        assert!(!clean_uncounted(&mut s.status, &t.with_finalizer));
        assert!(!s.enact());
        assert_eq!(s.status.succeeded, 0);
        // A pod seen again with its uid already uncounted is not re-added.
        let mut j2 = j.clone();
        j2.obj["status"] = s.status.to_json(&json!({}));
        let mut s2 = plan(&j2, vec![pod("a", "Succeeded")]);
        assert_eq!(s2.succeeded, 1);
        s2.after_step(Outcome::default());
        s2.track();
        assert_eq!(s2.status.uncounted_succeeded, ["u-a"]);
    }

    #[test]
    fn work_queue_jobs_complete_when_one_pod_succeeded_and_none_runs() {
        let j = job(json!({"completions": null, "parallelism": 3}));
        let s = plan(&j, vec![]);
        assert_eq!(s.step, Step::Manage(Manage::Create(vec![None; 3])));
        // One succeeded, two running: wait for them, create nothing.
        let s = run(plan(
            &j,
            vec![
                pod("a", "Succeeded"),
                pod("b", "Running"),
                pod("c", "Running"),
            ],
        ));
        assert_eq!(s.step, Step::Manage(Manage::Nothing));
        assert!(s.status.condition("Complete").is_none());
        assert_eq!(s.status.succeeded, 1);
        let mut j2 = j.clone();
        j2.obj["status"] = s.status.to_json(&json!({}));
        let mut b = pod("b", "Succeeded");
        let mut c = pod("c", "Failed");
        b.tracked = true;
        c.tracked = true;
        let s = run(plan(&j2, vec![b, c]));
        assert!(s.status.condition("Complete").is_some());
        assert_eq!((s.status.succeeded, s.status.failed), (2, 1));
    }

    #[test]
    fn backoff_limit_exceeded_fails_the_job() {
        let j = job(json!({"backoffLimit": 1, "completions": 3}));
        let mut j1 = j.clone();
        j1.obj["status"] = json!({"failed": 1, "active": 1});
        // A second failure: over the limit.
        let s = plan(&j1, vec![pod("b", "Failed"), pod("c", "Running")]);
        assert_eq!(s.finished.as_ref().unwrap().ty, "FailureTarget");
        assert_eq!(
            s.step,
            Step::DeleteActive(vec![pod("c", "Running").to_ref()])
        );
        let s = run(s);
        // The running pod is terminating: FailureTarget only.
        let types: Vec<&str> = s.status.conditions.iter().map(|c| c.ty.as_str()).collect();
        assert_eq!(types, ["FailureTarget"]);
        assert_eq!(s.status.terminating, Some(1));
        assert_eq!(
            s.status.failed, 3,
            "b failed, c counted failed as the job fails"
        );
        // Next sync, pods gone: Failed with the same reason.
        let mut j2 = j.clone();
        j2.obj["status"] = s.status.to_json(&json!({}));
        let s = run(plan(&j2, vec![]));
        let f = s.status.condition("Failed").unwrap();
        assert_eq!(
            (f.reason.as_str(), f.message.as_str()),
            (
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit"
            )
        );
        assert!(s.status.completion_time.is_none());
        assert!(s
            .events
            .iter()
            .any(|e| e.0 && e.1 == "BackoffLimitExceeded"));
    }

    #[test]
    fn restarts_count_against_the_limit_with_on_failure() {
        let mut j = job(json!({"backoffLimit": 2}));
        j.restart_on_failure = true;
        let mut p = pod("a", "Running");
        p.restarts = 2;
        let s = plan(&j, vec![p.clone()]);
        assert_eq!(s.finished.unwrap().reason, "BackoffLimitExceeded");
        p.restarts = 1;
        assert!(plan(&j, vec![p]).finished.is_none());
    }

    #[test]
    fn active_deadline() {
        let mut j = job(json!({"activeDeadlineSeconds": 60}));
        j.obj["status"] = json!({"startTime": "2024-01-01T00:09:30Z"});
        let s = plan(&j, vec![pod("a", "Running")]);
        assert!(s.finished.is_none());
        assert_eq!(s.requeue, Some(Duration::from_secs(30)));
        j.obj["status"] = json!({"startTime": "2024-01-01T00:09:00Z"});
        let s = plan(&j, vec![pod("a", "Running")]);
        assert_eq!(s.finished.as_ref().unwrap().reason, "DeadlineExceeded");
        assert!(matches!(s.step, Step::DeleteActive(ref p) if p.len() == 1));
    }

    #[test]
    fn suspend_deletes_active_pods_and_resume_resets_the_start_time() {
        let mut j = job(json!({"suspend": true, "parallelism": 2, "completions": 4}));
        j.obj["status"] = json!({"startTime": "2024-01-01T00:00:00Z"});
        let s = plan(&j, vec![pod("a", "Running")]);
        assert!(matches!(s.step, Step::Manage(Manage::Delete(ref p)) if p.len() == 1));
        let s = run(s);
        assert_eq!(s.status.condition("Suspended").unwrap().status, "True");
        assert!(s.events.iter().any(|e| e.1 == "Suspended"));
        // Deleted by the controller (finalizer removed first): not failed.
        assert_eq!(s.status.failed, 0);
        let mut j2 = job(json!({"parallelism": 2, "completions": 4}));
        j2.obj["status"] = s.status.to_json(&json!({}));
        let s = run(plan(&j2, vec![]));
        let c = s.status.condition("Suspended").unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "JobResumed")
        );
        assert_eq!(s.status.start_time, Some(time_str(now())));
        // A Job created suspended has no start time.
        let s = run(plan(&job(json!({"suspend": true})), vec![]));
        assert!(s.status.start_time.is_none());
    }

    #[test]
    fn replacements_wait_for_the_failure_backoff() {
        let j = job(json!({"completions": 2, "parallelism": 2}));
        let mut failed = pod("a", "Failed");
        failed.finished_at = t("2024-01-01T00:09:55Z");
        let s = plan(&j, vec![failed, pod("b", "Running")]);
        assert_eq!(s.step, Step::Manage(Manage::Wait(Duration::from_secs(5))));
        assert_eq!(s.pod_backoff.failures, 1);
        // Two failures since the last success: 20 s.
        let b = PodBackoff {
            failures: 2,
            last_failure: Some(t("2024-01-01T00:09:55Z")),
        };
        assert_eq!(
            b.remaining(now(), Duration::from_secs(10), Duration::from_secs(600)),
            Duration::from_secs(15)
        );
        let b = PodBackoff {
            failures: 20,
            last_failure: Some(now()),
        };
        assert_eq!(
            b.remaining(now(), Duration::from_secs(10), Duration::from_secs(600)),
            Duration::from_secs(600)
        );
        // A later success resets it; failures after it still count.
        let r = b.next(
            &[t("2024-01-01T00:09:00Z")],
            &[t("2024-01-01T00:08:00Z"), t("2024-01-01T00:09:30Z")],
        );
        assert_eq!(
            r,
            PodBackoff {
                failures: 1,
                last_failure: Some(t("2024-01-01T00:09:30Z"))
            }
        );
        assert_eq!(
            r.next(&[t("2024-01-01T00:09:40Z")], &[]),
            PodBackoff::default()
        );
    }

    #[test]
    fn deleted_pods_count_as_failed_unless_only_failed_pods_are_replaced() {
        let j = job(json!({"completions": 2, "parallelism": 2}));
        let mut p = pod("a", "Running");
        p.deleting = true;
        let s = run(plan(&j, vec![p.clone()]));
        assert_eq!(s.status.failed, 1);
        let mut j2 = j.clone();
        j2.only_replace_failed = true;
        let s = plan(&j2, vec![p.clone()]);
        // Terminating, not failed; not replaced until it is terminal.
        assert_eq!(s.step, Step::Manage(Manage::Create(vec![None])));
        let s = run(s);
        assert_eq!(s.status.failed, 0);
        assert_eq!(s.status.terminating, Some(1));
    }

    #[test]
    fn indexed_jobs() {
        let j = job(json!({"completionMode": "Indexed", "completions": 4, "parallelism": 2}));
        assert!(j.indexed);
        let mut a = pod("a", "Succeeded");
        a.index = Some(0);
        let mut b = pod("b", "Running");
        b.index = Some(2);
        let s = plan(&j, vec![a, b]);
        assert_eq!(s.step, Step::Manage(Manage::Create(vec![Some(1)])));
        let s = run(s);
        assert_eq!(s.status.completed_indexes, "0");
        assert_eq!(s.status.succeeded, 1);
        // Duplicates of an index and out-of-range indexes are deleted.
        let mut c = pod("c", "Running");
        c.index = Some(2);
        let mut d = pod("d", "Running");
        d.index = Some(7);
        let mut b = pod("b", "Running");
        b.index = Some(2);
        let s = plan(&j, vec![b, c, d]);
        match s.step {
            Step::Manage(Manage::Delete(p)) => {
                let names: BTreeSet<&str> = p.iter().map(|p| p.name.as_str()).collect();
                assert_eq!(names.len(), 2);
                assert!(names.contains("d"));
            }
            other => panic!("{other:?}"),
        }
        let p = pod_from_template(&j, Some(3));
        assert_eq!(p["metadata"]["generateName"], "pi-3-");
        assert_eq!(p["metadata"]["annotations"][COMPLETION_INDEX], "3");
        assert_eq!(p["metadata"]["labels"][COMPLETION_INDEX], "3");
        assert_eq!(p["spec"]["hostname"], "pi-3");
        assert_eq!(
            p["spec"]["containers"][0]["env"][0]["name"],
            COMPLETION_INDEX_ENV
        );
        assert_eq!(p["metadata"]["finalizers"], json!([TRACKING_FINALIZER]));
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "Job");
    }

    #[test]
    fn completed_indexes_strings() {
        let i = Intervals::parse("0,2-4,6,7", 10);
        assert_eq!(i.to_string(), "0,2-4,6,7");
        assert_eq!(i.total(), 6);
        assert_eq!(i.with(&[1, 5]).to_string(), "0-7");
        assert_eq!(Intervals::parse("1-9", 5).to_string(), "1-4");
        assert_eq!(Intervals::parse("x,3", 5).to_string(), "3");
        assert_eq!(
            first_pending_indexes(&Intervals::parse("0,2", 5), 2, 5),
            [1, 3]
        );
        assert_eq!(Intervals::default().with(&[1, 2]).to_string(), "1,2");
    }

    #[test]
    fn status_json_round_trip() {
        let orig = json!({"failedIndexes": "1", "active": 2});
        let mut s = Status::from_json(&orig);
        s.active = 0;
        s.ready = Some(0);
        let v = s.to_json(&orig);
        assert_eq!(
            v,
            json!({"failedIndexes": "1", "ready": 0, "uncountedTerminatedPods": {}})
        );
    }
}
