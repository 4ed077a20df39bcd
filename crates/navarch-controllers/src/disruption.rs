//! The disruption controller: the status of PodDisruptionBudgets
//! (`policy/v1`), as upstream's `disruption` controller, which the
//! eviction subresource (`navarch_apiserver::eviction`) and the
//! scheduler's preemption read.
//!
//! One task owns the local state (budgets, pods, and the scale of the
//! pods' controllers, folded in from the informers) and a work queue of
//! budget keys. A budget is synced again when it changes, when a pod whose
//! labels it selects (before or after the change) changes, when the
//! `spec.replicas` of a ReplicaSet, ReplicationController, StatefulSet or
//! Deployment in its namespace changes (only budgets that need the scale),
//! and when an entry of its `status.disruptedPods` is due to expire. A sync
//! reads the local state only:
//!
//! * the matched pods: the budget's namespace and `spec.selector` (`{}`
//!   selects every pod, a null selector none);
//! * `expectedPods` and `desiredHealthy`: an integer `minAvailable` is
//!   `desiredHealthy` as it is, over the matched pods; a percentage
//!   `minAvailable`, and `maxUnavailable` (`desiredHealthy = expected -
//!   maxUnavailable`, at least 0), are taken of the summed `spec.replicas`
//!   of the pods' controllers (a ReplicaSet owned by a Deployment counts
//!   as the Deployment; other kinds through their `scale` subresource),
//!   percentages rounded up ([`scaled_value`]). Pods without a controller
//!   are left out with an `UnmanagedPods` warning; a pod whose controller
//!   cannot be found fails the sync (`found no controllers for pod "…"`);
//! * `currentHealthy`: matched pods that are Ready, not terminating, and
//!   not in `status.disruptedPods` (evictions granted whose deletes are
//!   not seen yet); entries for pods seen terminating or gone are dropped,
//!   and entries older than [`DELETION_TIMEOUT`] are dropped with a
//!   `NotDeleted` warning on the pod;
//! * `disruptionsAllowed = currentHealthy - desiredHealthy`, never
//!   negative, 0 while `expectedPods` is 0; `observedGeneration`; the
//!   `DisruptionAllowed` condition (`SufficientPods` / `InsufficientPods`).
//!
//! The status is written through the `status` subresource, only when it
//! differs, guarded by the budget's resourceVersion (the eviction handler
//! writes the same status: a stale view is a conflict, never an
//! overwrite). A sync that fails sets `disruptionsAllowed` to 0 with the
//! condition `False`/`SyncFailed` and the error as its message (upstream's
//! fail-safe), so evictions stop while the budget cannot be computed.
//!
//! As upstream, the controller also resets a `DisruptionTarget` condition
//! (other than the kubelet's) left on a pod that is neither terminating nor
//! terminal for [`STALE_POD_DISRUPTION_TIMEOUT`] (an eviction whose delete
//! failed) to `False`.

use crate::events::{ObjectRef, Recorder};
use crate::informer::{Batch, Change, Informer};
use crate::queue::{Backoff, WorkQueue};
use crate::{pods_rt, rt};
use navarch_api::registry::REGISTRY;
use navarch_api::selector::LabelSelector;
use navarch_api::{ApiError, ResourceType, Subresource};
use navarch_apiserver::cache::CachedObject;
use navarch_apiserver::eviction::{set_status_condition, update_disruption_allowed_condition};
use navarch_apiserver::{ApiServer, WriteOptions};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use navarch_apiserver::eviction::DELETION_TIMEOUT;
/// Upstream `stalePodDisruptionTimeout`.
pub const STALE_POD_DISRUPTION_TIMEOUT: Duration = Duration::from_secs(120);
/// Upstream's event source for this controller.
const COMPONENT: &str = "controllermanager";
const FIELD_MANAGER: &str = "disruption-controller";

/// Timeouts of the controller (upstream's defaults unless a test needs
/// them shorter, as upstream's `NewDisruptionControllerInternal`).
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a `disruptedPods` entry holds a pod that is not seen
    /// terminating out of `currentHealthy`.
    pub deletion_timeout: Duration,
    /// How long a stale `DisruptionTarget` condition stays `True`.
    pub stale_pod_disruption_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            deletion_timeout: DELETION_TIMEOUT,
            stale_pod_disruption_timeout: STALE_POD_DISRUPTION_TIMEOUT,
        }
    }
}

/// Starts the controller on `server`'s watch cache with upstream's
/// timeouts; it stops with `shutdown`.
pub fn spawn(server: Arc<ApiServer>, shutdown: CancellationToken) {
    spawn_with(server, Options::default(), shutdown)
}

/// As [`spawn`], with other timeouts.
pub fn spawn_with(server: Arc<ApiServer>, options: Options, shutdown: CancellationToken) {
    let (tx, rx) = mpsc::channel(256);
    for rt in [pods_rt(), pdb_rt(), rs_rt(), rc_rt(), deploy_rt(), sts_rt()] {
        Informer::start(server.cache.clone(), rt, tx.clone(), shutdown.clone());
    }
    drop(tx);
    let recorder = Recorder::spawn(server.clone(), COMPONENT);
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let c = Controller {
        server,
        recorder,
        options,
        pdbs: HashMap::new(),
        pods: HashMap::new(),
        scales: HashMap::new(),
        queue: WorkQueue::default(),
        backoff: Backoff::default(),
        busy: BTreeSet::new(),
        written: HashMap::new(),
        synced: BTreeSet::new(),
        done_tx,
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = c.run(rx, done_rx) => {}
        }
    });
}

fn pdb_rt() -> &'static ResourceType {
    rt("policy", "poddisruptionbudgets")
}
fn rs_rt() -> &'static ResourceType {
    rt("apps", "replicasets")
}
fn rc_rt() -> &'static ResourceType {
    rt("", "replicationcontrollers")
}
fn deploy_rt() -> &'static ResourceType {
    rt("apps", "deployments")
}
fn sts_rt() -> &'static ResourceType {
    rt("apps", "statefulsets")
}

/// A queue key: a budget to sync, or a pod whose `DisruptionTarget`
/// condition may be stale. Both are (namespace, name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    Pdb(String, String),
    Pod(String, String),
}

/// A controller reference (upstream `metav1.GetControllerOf`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ControllerRef {
    api_version: String,
    kind: String,
    name: String,
    uid: String,
}

impl ControllerRef {
    fn of(v: &Value) -> Option<ControllerRef> {
        let r = v["metadata"]["ownerReferences"]
            .as_array()?
            .iter()
            .find(|r| r["controller"] == true)?;
        let s = |f: &str| r[f].as_str().unwrap_or("").to_string();
        Some(ControllerRef {
            api_version: s("apiVersion"),
            kind: s("kind"),
            name: s("name"),
            uid: s("uid"),
        })
    }
}

/// What a sync reads of a pod.
#[derive(Debug, Clone)]
struct Pod {
    uid: String,
    labels: Option<Map<String, Value>>,
    controller: Option<ControllerRef>,
    ready: bool,
    deleting: bool,
    /// A `DisruptionTarget` condition that may go stale: `True`, not the
    /// kubelet's, on a pod neither terminating nor terminal; when it
    /// became `True` (unix seconds).
    disruption_since: Option<i64>,
}

impl Pod {
    fn from_json(v: &Value) -> Pod {
        let phase = v["status"]["phase"].as_str().unwrap_or("");
        let deleting = !v["metadata"]["deletionTimestamp"].is_null();
        let disruption_since = v["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionTarget"))
            .filter(|c| {
                c["status"] == "True"
                    && c["reason"] != "TerminationByKubelet"
                    && !deleting
                    && phase != "Succeeded"
                    && phase != "Failed"
            })
            .map(|c| ts(&c["lastTransitionTime"]).map_or(0, |t| t.as_second()));
        Pod {
            uid: v["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            labels: v["metadata"]["labels"].as_object().cloned(),
            controller: ControllerRef::of(v),
            ready: navarch_apiserver::eviction::pod_ready(v),
            deleting,
            disruption_since,
        }
    }
}

/// What a sync reads of a budget: the object (its status is rewritten
/// whole) and its selector.
struct Pdb {
    obj: Value,
    revision: i64,
    /// `Err`: the selector does not parse (upstream's "Failed to get pods").
    selector: Result<LabelSelector, String>,
}

impl Pdb {
    fn from_json(obj: Value) -> Pdb {
        let selector = LabelSelector::from_label_selector_or_nothing(&obj["spec"]["selector"])
            .map_err(|e| e.0);
        Pdb {
            revision: revision(&obj),
            obj,
            selector,
        }
    }

    fn selects(&self, labels: Option<&Map<String, Value>>) -> bool {
        self.selector.as_ref().is_ok_and(|s| s.matches(labels))
    }

    /// Whether `expectedPods` comes from the controllers' scale.
    fn needs_scale(&self) -> bool {
        let spec = &self.obj["spec"];
        !spec["maxUnavailable"].is_null() || spec["minAvailable"].is_string()
    }
}

fn revision(v: &Value) -> i64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn ts(v: &Value) -> Option<jiff::Timestamp> {
    v.as_str()?.parse().ok()
}

/// A workload's `spec.replicas`, uid, and (ReplicaSets) its controller.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scale {
    uid: String,
    replicas: i64,
    controller: Option<ControllerRef>,
}

/// Upstream `GetScaledValueFromIntOrPercent`: an integer as it is; a
/// percentage (`"N%"`) of `total`, rounded up with `round_up`, else down.
pub fn scaled_value(v: &Value, total: i64, round_up: bool) -> Result<i64, String> {
    let (n, percent) = match v {
        Value::Null => return Err("nil value for IntOrString".into()),
        Value::Number(n) => (
            n.as_i64()
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {n}"))?,
            false,
        ),
        Value::String(s) => {
            let Some(digits) = s.strip_suffix('%') else {
                return Err(
                    "invalid value for IntOrString: invalid type: string is not a percentage"
                        .into(),
                );
            };
            let n = digits.parse::<i64>().map_err(|e| {
                format!("invalid value for IntOrString: invalid value \"{s}\": {e}")
            })?;
            (n, true)
        }
        other => return Err(format!("invalid value for IntOrString: {other}")),
    };
    if !percent {
        return Ok(n);
    }
    let scaled = n as f64 * total as f64 / 100.0;
    Ok(if round_up {
        scaled.ceil() as i64
    } else {
        scaled.floor() as i64
    })
}

/// Upstream `getExpectedPodCount`: (`expectedPods`, `desiredHealthy`, the
/// unmanaged pods), with `scale` summing the pods' controllers' replicas
/// (and naming the pods without a controller) when the spec needs it.
fn expected_pod_count(
    spec: &Value,
    matched: usize,
    scale: impl FnOnce() -> Result<(i64, Vec<String>), String>,
) -> Result<(i64, i64, Vec<String>), String> {
    if !spec["maxUnavailable"].is_null() {
        let (expected, unmanaged) = scale()?;
        let max_unavailable = scaled_value(&spec["maxUnavailable"], expected, true)?;
        return Ok((expected, (expected - max_unavailable).max(0), unmanaged));
    }
    match &spec["minAvailable"] {
        Value::Null => Ok((0, 0, Vec::new())),
        Value::String(_) => {
            let (expected, unmanaged) = scale()?;
            let min = scaled_value(&spec["minAvailable"], expected, true)?;
            Ok((expected, min, unmanaged))
        }
        v => Ok((
            matched as i64,
            scaled_value(v, matched as i64, true)?,
            Vec::new(),
        )),
    }
}

/// Upstream `verifyGroupKind`.
fn group_kind_is(r: &ControllerRef, kind: &str, groups: &[&str]) -> Result<bool, String> {
    let (group, _) = parse_group_version(&r.api_version)?;
    Ok(r.kind == kind && groups.contains(&group))
}

/// Upstream `schema.ParseGroupVersion`.
fn parse_group_version(s: &str) -> Result<(&str, &str), String> {
    match s.split('/').collect::<Vec<_>>()[..] {
        [v] => Ok(("", v)),
        [g, v] => Ok((g, v)),
        _ => Err(format!("unexpected GroupVersion string: {s}")),
    }
}

/// Upstream's `%v` of a `*metav1.LabelSelector` (its generated `String`).
fn go_selector(v: &Value) -> String {
    if v.is_null() {
        return "nil".into();
    }
    let mut labels = String::from("map[string]string{");
    if let Some(m) = v["matchLabels"].as_object() {
        let mut keys: Vec<&String> = m.keys().collect();
        keys.sort();
        for k in keys {
            labels.push_str(&format!("{k}: {},", m[k].as_str().unwrap_or("")));
        }
    }
    labels.push('}');
    let mut exprs = String::from("[]LabelSelectorRequirement{");
    for e in v["matchExpressions"].as_array().into_iter().flatten() {
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        exprs.push_str(&format!(
            "LabelSelectorRequirement{{Key:{},Operator:{},Values:[{}],}},",
            e["key"].as_str().unwrap_or(""),
            e["operator"].as_str().unwrap_or(""),
            values.join(" ")
        ));
    }
    exprs.push('}');
    format!("&LabelSelector{{MatchLabels:{labels},MatchExpressions:{exprs},}}")
}

/// Upstream `ConditionsAreUpToDate`.
fn conditions_up_to_date(obj: &Value) -> bool {
    let st = &obj["status"];
    let Some(c) = st["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionAllowed"))
    else {
        return false;
    };
    if st["observedGeneration"].as_i64().unwrap_or(0)
        != obj["metadata"]["generation"].as_i64().unwrap_or(0)
    {
        return false;
    }
    if st["disruptionsAllowed"].as_i64().unwrap_or(0) > 0 {
        c["status"] == "True" && c["reason"] == "SufficientPods"
    } else {
        c["status"] == "False" && c["reason"] == "InsufficientPods"
    }
}

/// The counts a sync computed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counts {
    current_healthy: i64,
    desired_healthy: i64,
    expected: i64,
    disrupted: Map<String, Value>,
}

/// Upstream `updatePdbStatus`: the status to write, or `None` when the
/// budget already shows it.
fn pdb_status(obj: &Value, c: &Counts) -> Option<Value> {
    let mut allowed = c.current_healthy - c.desired_healthy;
    if c.expected <= 0 || allowed <= 0 {
        allowed = 0;
    }
    let st = &obj["status"];
    let num = |f: &str| st[f].as_i64().unwrap_or(0);
    let generation = obj["metadata"]["generation"].as_i64().unwrap_or(0);
    let cur_disrupted = st["disruptedPods"].as_object().cloned().unwrap_or_default();
    if num("currentHealthy") == c.current_healthy
        && num("desiredHealthy") == c.desired_healthy
        && num("expectedPods") == c.expected
        && num("disruptionsAllowed") == allowed
        && cur_disrupted == c.disrupted
        && num("observedGeneration") == generation
        && conditions_up_to_date(obj)
    {
        return None;
    }
    let mut status = json!({
        "currentHealthy": c.current_healthy,
        "desiredHealthy": c.desired_healthy,
        "expectedPods": c.expected,
        "disruptionsAllowed": allowed,
        "observedGeneration": generation,
        "conditions": st["conditions"].as_array().cloned().unwrap_or_default(),
    });
    if !c.disrupted.is_empty() {
        status["disruptedPods"] = Value::Object(c.disrupted.clone());
    }
    update_disruption_allowed_condition(&mut status);
    Some(status)
}

/// Upstream `failSafe`: no disruptions allowed, `SyncFailed`; `None` when
/// the budget already shows it.
fn fail_safe_status(obj: &Value, error: &str) -> Option<Value> {
    let mut status = obj["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    status["disruptionsAllowed"] = json!(0);
    let mut conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    let generation = status["observedGeneration"].as_i64().unwrap_or(0);
    set_status_condition(
        &mut conditions,
        "DisruptionAllowed",
        "False",
        "SyncFailed",
        error,
        generation,
    );
    status["conditions"] = Value::Array(conditions);
    (status != obj["status"]).then_some(status)
}

/// A write's outcome, back to the loop.
struct Done {
    key: Key,
    /// The resourceVersion written, or the error.
    result: Result<i64, ApiError>,
    /// Sync the key again after a success (a fail-safe write is not
    /// retried, as upstream).
    requeue: bool,
}

struct Controller {
    server: Arc<ApiServer>,
    recorder: Recorder,
    options: Options,
    /// Budgets by namespace, then name.
    pdbs: HashMap<String, BTreeMap<String, Pdb>>,
    /// Pods by namespace, then name.
    pods: HashMap<String, HashMap<String, Pod>>,
    /// Workloads' scale by kind, namespace, name.
    scales: HashMap<(&'static str, String, String), Scale>,
    queue: WorkQueue<Key>,
    backoff: Backoff<Key>,
    /// Keys with a write in flight: not synced until it is done.
    busy: BTreeSet<Key>,
    /// The revision a budget's last status write produced: no sync on an
    /// older view of it (it could only conflict).
    written: HashMap<Key, i64>,
    synced: BTreeSet<&'static str>,
    done_tx: mpsc::UnboundedSender<Done>,
}

const KINDS: [&str; 6] = [
    "Pod",
    "PodDisruptionBudget",
    "ReplicaSet",
    "ReplicationController",
    "Deployment",
    "StatefulSet",
];

impl Controller {
    async fn run(
        mut self,
        mut informers: mpsc::Receiver<Batch>,
        mut done: mpsc::UnboundedReceiver<Done>,
    ) {
        loop {
            while let Ok(b) = informers.try_recv() {
                self.apply(b);
            }
            while let Ok(d) = done.try_recv() {
                self.done(d);
            }
            if KINDS.iter().all(|k| self.synced.contains(k)) {
                let mut n = 0;
                while let Some(key) = self.queue.pop() {
                    if self.busy.contains(&key) {
                        continue;
                    }
                    self.sync(key);
                    n += 1;
                    if n >= 256 {
                        break;
                    }
                }
                if !self.queue.is_empty() {
                    tokio::task::yield_now().await;
                    continue;
                }
            }
            let wake = self.queue.next_wake();
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

    // ----- informer events ---------------------------------------------------

    fn apply(&mut self, batch: Batch) {
        let kind = batch.rt.kind;
        for change in batch.changes {
            match change {
                Change::Synced => {
                    self.synced.insert(kind);
                }
                Change::Upsert(o) => self.observe(kind, &o, false),
                Change::Delete(o) => self.observe(kind, &o, true),
            }
        }
    }

    fn observe(&mut self, kind: &'static str, o: &Arc<CachedObject>, deleted: bool) {
        let (ns, name) = (o.namespace.clone(), o.name.clone());
        match kind {
            "Pod" => self.observe_pod(ns, name, o, deleted),
            "PodDisruptionBudget" => {
                let key = Key::Pdb(ns.clone(), name.clone());
                let pdbs = self.pdbs.entry(ns).or_default();
                if deleted {
                    pdbs.remove(&name);
                    self.written.remove(&key);
                    self.backoff.forget(&key);
                } else {
                    pdbs.insert(name, Pdb::from_json(o.value()));
                    self.queue.add(key);
                }
            }
            _ => {
                let v = o.shared_value();
                let new = (!deleted).then(|| Scale {
                    uid: v["metadata"]["uid"].as_str().unwrap_or("").to_string(),
                    replicas: v["spec"]["replicas"].as_i64().unwrap_or(1),
                    controller: ControllerRef::of(&v),
                });
                let key = (kind, ns.clone(), name);
                let old = match &new {
                    Some(s) => self.scales.insert(key, s.clone()),
                    None => self.scales.remove(&key),
                };
                if old != new {
                    // Budgets that read the scale of this namespace's
                    // workloads.
                    let keys: Vec<Key> = self
                        .pdbs
                        .get(&ns)
                        .into_iter()
                        .flatten()
                        .filter(|(_, p)| p.needs_scale())
                        .map(|(n, _)| Key::Pdb(ns.clone(), n.clone()))
                        .collect();
                    for k in keys {
                        self.queue.add(k);
                    }
                }
            }
        }
    }

    fn observe_pod(&mut self, ns: String, name: String, o: &Arc<CachedObject>, deleted: bool) {
        let new = (!deleted).then(|| Pod::from_json(&o.shared_value()));
        let pods = self.pods.entry(ns.clone()).or_default();
        let old = match &new {
            Some(p) => pods.insert(name.clone(), p.clone()),
            None => pods.remove(&name),
        };
        let matching = |labels: Option<&Map<String, Value>>| -> Vec<String> {
            self.pdbs
                .get(&ns)
                .into_iter()
                .flatten()
                .filter(|(_, p)| p.selects(labels))
                .map(|(n, _)| n.clone())
                .collect()
        };
        let now = new.as_ref().map(|p| matching(p.labels.as_ref()));
        let before = old.as_ref().map(|p| matching(p.labels.as_ref()));
        let mut keys: BTreeSet<String> = BTreeSet::new();
        keys.extend(now.iter().flatten().cloned());
        keys.extend(before.iter().flatten().cloned());
        // Upstream warns on every pod event; here when the pod appears or
        // its labels change.
        if let (Some(p), Some(m)) = (&new, &now) {
            let relabelled = old.as_ref().is_none_or(|o| o.labels != p.labels);
            if m.len() > 1 && relabelled {
                self.recorder.warning(
                    &ObjectRef::pod(&ns, &name, &p.uid),
                    "MultiplePodDisruptionBudgets",
                    format!(
                        "Pod \"{ns}\"/\"{name}\" matches multiple PodDisruptionBudgets.  Chose \"{}\" arbitrarily.",
                        m[0]
                    ),
                );
            }
        }
        for k in keys {
            self.queue.add(Key::Pdb(ns.clone(), k));
        }
        if let Some(since) = new.as_ref().and_then(|p| p.disruption_since) {
            let wait = self.stale_wait(since);
            self.queue.add_after(Key::Pod(ns, name), wait);
        }
    }

    fn stale_wait(&self, since: i64) -> Duration {
        let age = jiff::Timestamp::now().as_second() - since;
        let left = self.options.stale_pod_disruption_timeout.as_secs() as i64 - age;
        Duration::from_secs(left.max(0) as u64)
    }

    fn done(&mut self, d: Done) {
        self.busy.remove(&d.key);
        match d.result {
            Ok(rev) => {
                if let Key::Pdb(..) = d.key {
                    self.written.insert(d.key.clone(), rev);
                }
                if d.requeue {
                    self.backoff.forget(&d.key);
                    self.queue.add(d.key);
                }
            }
            // Gone: its deletion is (or will be) observed.
            Err(e) if e.code == 404 => self.backoff.forget(&d.key),
            Err(e) => {
                if e.code != 409 {
                    tracing::warn!(key = ?d.key, error = %e, "disruption controller write failed");
                }
                let delay = self.backoff.fail(d.key.clone());
                self.queue.add_after(d.key, delay);
            }
        }
    }

    // ----- syncs -------------------------------------------------------------

    fn sync(&mut self, key: Key) {
        match &key {
            Key::Pdb(ns, name) => self.sync_pdb(key.clone(), ns.clone(), name.clone()),
            Key::Pod(ns, name) => self.sync_stale_pod(key.clone(), ns.clone(), name.clone()),
        }
    }

    fn sync_pdb(&mut self, key: Key, ns: String, name: String) {
        let Some(pdb) = self.pdbs.get(&ns).and_then(|m| m.get(&name)) else {
            self.backoff.forget(&key);
            return;
        };
        if self.written.get(&key).is_some_and(|w| pdb.revision < *w) {
            // Synced again when the informer delivers the write.
            return;
        }
        let pdb_ref = ObjectRef {
            kind: "PodDisruptionBudget",
            api_version: "policy/v1",
            namespace: ns.clone(),
            name: name.clone(),
            uid: pdb.obj["metadata"]["uid"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        };
        let now = jiff::Timestamp::now();
        match self.compute(pdb, &pdb_ref, now) {
            Ok((counts, recheck)) => {
                if let Some(at) = recheck {
                    let wait = at.duration_since(now).as_secs_f64().max(0.0);
                    self.queue
                        .add_after(key.clone(), Duration::from_secs_f64(wait));
                }
                match pdb_status(&pdb.obj, &counts) {
                    Some(status) => {
                        let obj = with_status(&pdb.obj, status);
                        self.write(key, obj, true);
                    }
                    None => self.backoff.forget(&key),
                }
            }
            Err(e) => {
                tracing::debug!(pdb = %name, namespace = %ns, error = %e, "failed to sync the PodDisruptionBudget");
                if let Some(status) = fail_safe_status(&pdb.obj, &e) {
                    let obj = with_status(&pdb.obj, status);
                    self.write(key, obj, false);
                }
            }
        }
    }

    /// Upstream `trySync` up to the status: the counts, and when an entry
    /// of `disruptedPods` expires. Records the events upstream records.
    fn compute(
        &self,
        pdb: &Pdb,
        pdb_ref: &ObjectRef,
        now: jiff::Timestamp,
    ) -> Result<(Counts, Option<jiff::Timestamp>), String> {
        let ns = &pdb_ref.namespace;
        let selector = match &pdb.selector {
            Ok(s) => s,
            Err(e) => {
                self.recorder
                    .warning(pdb_ref, "NoPods", format!("Failed to get pods: {e}"));
                return Err(e.clone());
            }
        };
        let mut pods: Vec<(&String, &Pod)> = self
            .pods
            .get(ns)
            .into_iter()
            .flatten()
            .filter(|(_, p)| selector.matches(p.labels.as_ref()))
            .collect();
        pods.sort_by(|a, b| a.0.cmp(b.0));
        if pods.is_empty() {
            self.recorder
                .normal(pdb_ref, "NoPods", "No matching pods found".into());
        }
        let spec = &pdb.obj["spec"];
        let (expected, desired, unmanaged) =
            expected_pod_count(spec, pods.len(), || self.expected_scale(ns, &pods)).map_err(
                |e| {
                    self.recorder.warning(
                        pdb_ref,
                        "CalculateExpectedPodCountFailed",
                        format!("Failed to calculate the number of expected pods: {e}"),
                    );
                    e
                },
            )?;
        if !unmanaged.is_empty() {
            self.recorder.warning(
                pdb_ref,
                "UnmanagedPods",
                format!(
                    "Pods selected by this PodDisruptionBudget (selector: {}) were found to be unmanaged. As a result, the status of the PDB cannot be calculated correctly, which may result in undefined behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an integer value.",
                    go_selector(&spec["selector"])
                ),
            );
        }
        // Upstream `buildDisruptedPodMap` and `countHealthyPods`.
        let timeout = jiff::SignedDuration::try_from(self.options.deletion_timeout)
            .unwrap_or(jiff::SignedDuration::from_secs(120));
        let listed = pdb.obj["status"]["disruptedPods"].as_object();
        let mut disrupted = Map::new();
        let mut recheck: Option<jiff::Timestamp> = None;
        let mut healthy = 0;
        for (name, p) in &pods {
            if p.deleting {
                continue;
            }
            let entry = listed.and_then(|m| m.get(name.as_str()));
            if let Some((raw, at)) = entry.and_then(|v| ts(v).map(|t| (v, t))) {
                let due = at + timeout;
                if due < now {
                    self.recorder.warning(
                        &ObjectRef::pod(ns, name, &p.uid),
                        "NotDeleted",
                        format!(
                            "Pod was expected by PDB {ns}/{} to be deleted but it wasn't",
                            pdb_ref.name
                        ),
                    );
                } else {
                    recheck = Some(recheck.map_or(due, |r| r.min(due)));
                    disrupted.insert((*name).clone(), raw.clone());
                    // Expected to be deleted soon: not healthy.
                    if due > now {
                        continue;
                    }
                }
            }
            if p.ready {
                healthy += 1;
            }
        }
        Ok((
            Counts {
                current_healthy: healthy,
                desired_healthy: desired,
                expected,
                disrupted,
            },
            recheck,
        ))
    }

    /// Upstream `getExpectedScale`: the summed scale of the pods'
    /// controllers, and the pods without one.
    fn expected_scale(
        &self,
        ns: &str,
        pods: &[(&String, &Pod)],
    ) -> Result<(i64, Vec<String>), String> {
        let mut scale: HashMap<String, i64> = HashMap::new();
        let mut unmanaged = Vec::new();
        for (name, p) in pods {
            let Some(r) = &p.controller else {
                unmanaged.push((*name).clone());
                continue;
            };
            if scale.contains_key(&r.uid) {
                continue;
            }
            let found = match self.find_replication_controller(ns, r)? {
                Some(s) => Some(s),
                None => match self.find_deployment(ns, r)? {
                    Some(s) => Some(s),
                    None => match self.find_replica_set(ns, r)? {
                        Some(s) => Some(s),
                        None => match self.find_stateful_set(ns, r)? {
                            Some(s) => Some(s),
                            None => self.find_by_scale(ns, r)?,
                        },
                    },
                },
            };
            match found {
                Some((uid, n)) => {
                    scale.insert(uid, n);
                }
                None => return Err(format!("found no controllers for pod \"{name}\"")),
            }
        }
        Ok((scale.values().sum(), unmanaged))
    }

    fn scale_of(&self, kind: &'static str, ns: &str, name: &str) -> Option<&Scale> {
        self.scales.get(&(kind, ns.to_string(), name.to_string()))
    }

    fn find_replication_controller(
        &self,
        ns: &str,
        r: &ControllerRef,
    ) -> Result<Option<(String, i64)>, String> {
        if !group_kind_is(r, "ReplicationController", &[""])? {
            return Ok(None);
        }
        Ok(self
            .scale_of("ReplicationController", ns, &r.name)
            .filter(|s| s.uid == r.uid)
            .map(|s| (s.uid.clone(), s.replicas)))
    }

    /// A ReplicaSet controlled by a Deployment counts as the Deployment.
    fn find_deployment(
        &self,
        ns: &str,
        r: &ControllerRef,
    ) -> Result<Option<(String, i64)>, String> {
        if !group_kind_is(r, "ReplicaSet", &["apps", "extensions"])? {
            return Ok(None);
        }
        let Some(rs) = self
            .scale_of("ReplicaSet", ns, &r.name)
            .filter(|s| s.uid == r.uid)
        else {
            return Ok(None);
        };
        let Some(d) = &rs.controller else {
            return Ok(None);
        };
        if !group_kind_is(d, "Deployment", &["apps", "extensions"])? {
            return Ok(None);
        }
        Ok(self
            .scale_of("Deployment", ns, &d.name)
            .filter(|s| s.uid == d.uid)
            .map(|s| (s.uid.clone(), s.replicas)))
    }

    /// A ReplicaSet not controlled by a Deployment.
    fn find_replica_set(
        &self,
        ns: &str,
        r: &ControllerRef,
    ) -> Result<Option<(String, i64)>, String> {
        if !group_kind_is(r, "ReplicaSet", &["apps", "extensions"])? {
            return Ok(None);
        }
        Ok(self
            .scale_of("ReplicaSet", ns, &r.name)
            .filter(|s| s.uid == r.uid)
            .filter(|s| s.controller.as_ref().is_none_or(|c| c.kind != "Deployment"))
            .map(|s| (s.uid.clone(), s.replicas)))
    }

    fn find_stateful_set(
        &self,
        ns: &str,
        r: &ControllerRef,
    ) -> Result<Option<(String, i64)>, String> {
        if !group_kind_is(r, "StatefulSet", &["apps"])? {
            return Ok(None);
        }
        Ok(self
            .scale_of("StatefulSet", ns, &r.name)
            .filter(|s| s.uid == r.uid)
            .map(|s| (s.uid.clone(), s.replicas)))
    }

    /// Upstream `getScaleController`: any other kind through its `scale`
    /// subresource (read from the watch cache).
    fn find_by_scale(&self, ns: &str, r: &ControllerRef) -> Result<Option<(String, i64)>, String> {
        let (group, version) = parse_group_version(&r.api_version)?;
        let Some(rt) = REGISTRY
            .iter()
            .find(|t| t.group == group && t.version == version && t.kind == r.kind)
        else {
            return Err(format!(
                "no matches for kind \"{}\" in version \"{}\"",
                r.kind, r.api_version
            ));
        };
        if !rt.has_subresource(Subresource::Scale) {
            return Err(format!(
                "{} does not implement the scale subresource",
                rt.qualified_plural()
            ));
        }
        let Some(o) = self.server.cache.kind(rt).get(&rt.key(Some(ns), &r.name)) else {
            return Ok(None);
        };
        let v = o.shared_value();
        if v["metadata"]["uid"].as_str() != Some(r.uid.as_str()) {
            return Ok(None);
        }
        let replicas = self.server.scale_of(rt, &v)["spec"]["replicas"]
            .as_i64()
            .unwrap_or(0);
        Ok(Some((r.uid.clone(), replicas)))
    }

    /// Writes a budget's status, guarded by the resourceVersion `obj`
    /// carries.
    fn write(&mut self, key: Key, obj: Value, requeue: bool) {
        self.busy.insert(key.clone());
        let (server, tx) = (self.server.clone(), self.done_tx.clone());
        let (ns, name) = match &key {
            Key::Pdb(ns, name) | Key::Pod(ns, name) => (ns.clone(), name.clone()),
        };
        tokio::spawn(async move {
            let result = server
                .update(
                    pdb_rt(),
                    Some(&ns),
                    &name,
                    Some(Subresource::Status),
                    obj,
                    &write_options(),
                )
                .await
                .map(|w| revision(&w.object));
            let _ = tx.send(Done {
                key,
                result,
                requeue,
            });
        });
    }

    /// Upstream `syncStalePodDisruption`: a `DisruptionTarget` condition
    /// still `True` after the timeout on a pod that is neither terminating
    /// nor terminal goes back to `False`.
    fn sync_stale_pod(&mut self, key: Key, ns: String, name: String) {
        let Some(since) = self
            .pods
            .get(&ns)
            .and_then(|m| m.get(&name))
            .and_then(|p| p.disruption_since)
        else {
            self.backoff.forget(&key);
            return;
        };
        let wait = self.stale_wait(since);
        if !wait.is_zero() {
            self.queue.add_after(key, wait);
            return;
        }
        self.busy.insert(key.clone());
        let (server, tx) = (self.server.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            let result = reset_disruption_target(&server, &ns, &name).await;
            let _ = tx.send(Done {
                key,
                result,
                requeue: false,
            });
        });
    }
}

/// Sets the pod's `DisruptionTarget` condition to `False` (reason and
/// message cleared, as upstream's `UpdatePodCondition` with a bare
/// condition), if it is still stale in the stored pod.
async fn reset_disruption_target(
    server: &ApiServer,
    ns: &str,
    name: &str,
) -> Result<i64, ApiError> {
    let (mut pod, rev) = server.read(pods_rt(), Some(ns), name).await?;
    let p = Pod::from_json(&pod);
    if p.disruption_since.is_none() {
        return Ok(rev);
    }
    let now = navarch_api::meta::rfc3339(jiff::Timestamp::now());
    if let Some(cs) = pod["status"]["conditions"].as_array_mut() {
        for c in cs.iter_mut().filter(|c| c["type"] == "DisruptionTarget") {
            *c = json!({"type": "DisruptionTarget", "status": "False", "lastProbeTime": null,
                "lastTransitionTime": now});
        }
    }
    pod["metadata"]["resourceVersion"] = json!(rev.to_string());
    let w = server
        .update(
            pods_rt(),
            Some(ns),
            name,
            Some(Subresource::Status),
            pod,
            &write_options(),
        )
        .await?;
    tracing::info!(pod = %name, namespace = %ns, "reset a stale DisruptionTarget condition to False");
    Ok(revision(&w.object))
}

fn with_status(obj: &Value, status: Value) -> Value {
    let mut o = obj.clone();
    o["status"] = status;
    o
}

fn write_options() -> WriteOptions {
    WriteOptions {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up_integers_stay() {
        let cases: &[(Value, i64, i64)] = &[
            (json!(3), 10, 3),
            (json!("50%"), 3, 2),
            (json!("50%"), 4, 2),
            (json!("34%"), 3, 2),
            (json!("33%"), 3, 1),
            (json!("1%"), 1, 1),
            (json!("0%"), 7, 0),
            (json!("100%"), 7, 7),
            (json!("10%"), 0, 0),
        ];
        for (v, total, want) in cases {
            assert_eq!(scaled_value(v, *total, true), Ok(*want), "{v} of {total}");
        }
        assert_eq!(scaled_value(&json!("50%"), 3, false), Ok(1));
        assert_eq!(
            scaled_value(&json!("5"), 3, true).unwrap_err(),
            "invalid value for IntOrString: invalid type: string is not a percentage"
        );
        assert!(scaled_value(&json!("x%"), 3, true)
            .unwrap_err()
            .starts_with("invalid value for IntOrString: invalid value \"x%\""));
    }

    #[test]
    fn expected_and_desired_follow_the_spec() {
        let scale = |n: i64| move || Ok((n, vec!["bare".to_string()]));
        let no_scale = || -> Result<(i64, Vec<String>), String> { panic!("scale not needed") };
        // An integer minAvailable: over the matched pods, no scale.
        assert_eq!(
            expected_pod_count(&json!({"minAvailable": 2}), 5, no_scale),
            Ok((5, 2, vec![]))
        );
        // A percentage minAvailable, rounded up, of the controllers' scale.
        assert_eq!(
            expected_pod_count(&json!({"minAvailable": "50%"}), 2, scale(5)),
            Ok((5, 3, vec!["bare".into()]))
        );
        // maxUnavailable (rounded up too): desired = expected - max.
        assert_eq!(
            expected_pod_count(&json!({"maxUnavailable": "30%"}), 2, scale(10)),
            Ok((10, 7, vec!["bare".into()]))
        );
        assert_eq!(
            expected_pod_count(&json!({"maxUnavailable": 1}), 2, scale(3)),
            Ok((3, 2, vec!["bare".into()]))
        );
        // Never below zero.
        assert_eq!(
            expected_pod_count(&json!({"maxUnavailable": 5}), 2, scale(3)).map(|r| r.1),
            Ok(0)
        );
        // Neither: nothing expected, nothing desired.
        assert_eq!(
            expected_pod_count(&json!({}), 4, no_scale),
            Ok((0, 0, vec![]))
        );
        // Errors from the scale pass through.
        assert_eq!(
            expected_pod_count(&json!({"maxUnavailable": 1}), 1, || Err("boom".into())),
            Err("boom".into())
        );
    }

    fn pdb(status: Value) -> Value {
        json!({"metadata": {"name": "p", "generation": 2, "resourceVersion": "7"}, "status": status})
    }

    #[test]
    fn disruptions_allowed_is_never_negative_and_needs_expected_pods() {
        let counts = |cur, des, exp| Counts {
            current_healthy: cur,
            desired_healthy: des,
            expected: exp,
            disrupted: Map::new(),
        };
        let st = pdb_status(&pdb(json!({})), &counts(5, 3, 5)).unwrap();
        assert_eq!(st["disruptionsAllowed"], 2);
        assert_eq!(st["observedGeneration"], 2);
        assert_eq!(st["conditions"][0]["reason"], "SufficientPods");
        assert!(st.get("disruptedPods").is_none());
        let st = pdb_status(&pdb(json!({})), &counts(2, 3, 5)).unwrap();
        assert_eq!(st["disruptionsAllowed"], 0);
        assert_eq!(st["conditions"][0]["status"], "False");
        assert_eq!(st["conditions"][0]["reason"], "InsufficientPods");
        let st = pdb_status(&pdb(json!({})), &counts(2, 0, 0)).unwrap();
        assert_eq!(st["disruptionsAllowed"], 0);
        // Up to date: no write.
        let cur = pdb(pdb_status(&pdb(json!({})), &counts(5, 3, 5)).unwrap());
        assert_eq!(pdb_status(&cur, &counts(5, 3, 5)), None);
        // An older observedGeneration is a change.
        let mut stale = cur.clone();
        stale["status"]["observedGeneration"] = json!(1);
        assert!(pdb_status(&stale, &counts(5, 3, 5)).is_some());
    }

    #[test]
    fn fail_safe_allows_nothing_and_says_why() {
        let cur = pdb(json!({"disruptionsAllowed": 2, "observedGeneration": 2}));
        let st = fail_safe_status(&cur, "found no controllers for pod \"a\"").unwrap();
        assert_eq!(st["disruptionsAllowed"], 0);
        let c = &st["conditions"][0];
        assert_eq!(c["status"], "False");
        assert_eq!(c["reason"], "SyncFailed");
        assert_eq!(c["message"], "found no controllers for pod \"a\"");
        assert_eq!(
            fail_safe_status(&pdb(st.clone()), "found no controllers for pod \"a\""),
            None
        );
    }

    #[test]
    fn group_versions_and_selectors_print_as_upstream() {
        assert_eq!(parse_group_version("v1"), Ok(("", "v1")));
        assert_eq!(parse_group_version("apps/v1"), Ok(("apps", "v1")));
        assert!(parse_group_version("a/b/c").is_err());
        assert_eq!(
            go_selector(&json!({"matchLabels": {"b": "2", "a": "1"},
                "matchExpressions": [{"key": "k", "operator": "In", "values": ["x", "y"]}]})),
            "&LabelSelector{MatchLabels:map[string]string{a: 1,b: 2,},MatchExpressions:[]LabelSelectorRequirement{LabelSelectorRequirement{Key:k,Operator:In,Values:[x y],},},}"
        );
        assert_eq!(go_selector(&Value::Null), "nil");
    }
}
