//! The StatefulSet controller (apps/v1), as upstream's `statefulset`
//! controller: pods with stable names, created, replaced and removed in
//! ordinal order.
//!
//! One task owns the local state (StatefulSets, pods and
//! ControllerRevisions, from the informers and from its own writes, see
//! [`crate::revision`]) and a work queue of StatefulSet keys; a sync reads
//! the local state and writes through the API server's verbs.
//!
//! * **Identity**: pod `<set>-<ordinal>` for ordinals `start … start +
//!   replicas − 1` (`spec.ordinals.start`, default 0), labels
//!   `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index`
//!   and `controller-revision-hash` (the revision's name), `hostname` the
//!   pod's name and `subdomain` `spec.serviceName`. A pod whose identity
//!   labels were changed gets them back. Pods are claimed by selector and
//!   name (adopted, released).
//! * **Revisions** (upstream `getStatefulSetRevisions`): the template is
//!   held by a ControllerRevision (see [`crate::revision`]); the *update*
//!   revision is the latest when it holds the template, else an older
//!   equal one renumbered (rollback), else a new one. The *current*
//!   revision is `status.currentRevision` (the update revision at first).
//!   Pods below the partition are created at the current revision, the
//!   others at the update revision. History beyond `revisionHistoryLimit`
//!   that no pod uses is deleted, oldest first.
//! * **OrderedReady** (monotonic): pods are processed in ordinal order; a
//!   missing (or Failed/Succeeded, then deleted: `RecreatingFailedPod`)
//!   pod is created and the sync stops there, as it stops at any pod not
//!   Running and Ready and available for `minReadySeconds`, so pod *n* is
//!   created only once *0 … n−1* are. Only then are pods beyond the
//!   replicas deleted, the highest ordinal first, one per sync, each after
//!   the previous one is gone. **Parallel**: every pod is created,
//!   recreated and deleted at once (slow-start batches), without waiting.
//! * **RollingUpdate**: once the pods are all there (and, when ordered,
//!   healthy), the highest ordinal at or above `partition` not at the
//!   update revision is deleted (recreated at the update revision by the
//!   next sync), one at a time, each only after the ones above it are
//!   healthy again; with `maxUnavailable` set (upstream's
//!   `MaxUnavailableStatefulSet`), up to that many pods (int or percent of
//!   the replicas, rounded up, at least 1) minus the unhealthy ones are
//!   deleted at once, highest first. **OnDelete**: pods are replaced at
//!   the update revision only when deleted.
//! * **Status** (upstream `updateStatus`, `completeRollingUpdate`):
//!   replicas (pods created), readyReplicas, availableReplicas,
//!   currentReplicas, updatedReplicas, currentRevision, updateRevision
//!   (current becomes update once a RollingUpdate has every pod updated
//!   and ready), observedGeneration and collisionCount, through the
//!   `status` subresource when they differ.
//! * Events as upstream: `SuccessfulCreate` ("create Pod web-0 in
//!   StatefulSet web successful"), `SuccessfulDelete`, `SuccessfulUpdate`,
//!   their `Failed…` forms, `RecreatingFailedPod`,
//!   `RecreatingTerminatedPod`.
//!
//! Not done: PersistentVolumeClaims. `volumeClaimTemplates` and
//! `persistentVolumeClaimRetentionPolicy` are accepted, and each pod gets
//! its `<claim>-<set>-<ordinal>` claim volume as upstream, but no claim is
//! created (there are no PersistentVolumes yet).

use crate::events::{ObjectRef, Recorder};
use crate::informer::{Batch, Change, Informer};
use crate::queue::{Backoff, WorkQueue};
use crate::revision::{
    self, available, claim, controller_of, key as obj_key, labels_of, now, pod_from_template,
    pods_rt, revisions_rt, rv, scaled, until_available, Claim, Local, Owner, Rev, HASH_LABEL,
};
use navarch_api::patch::PatchType;
use navarch_api::registry::lookup;
use navarch_api::selector::LabelSelector;
use navarch_api::{ApiError, ResourceType, Subresource};
use navarch_apiserver::cache::CachedObject;
use navarch_apiserver::{ApiServer, DeleteOptions, WriteOptions};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const COMPONENT: &str = "statefulset-controller";
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// Starts the controller on `server`'s watch cache; it stops with
/// `shutdown`.
pub fn spawn(server: Arc<ApiServer>, shutdown: CancellationToken) {
    let (tx, rx) = mpsc::channel(256);
    for rt in [pods_rt(), sts_rt(), revisions_rt()] {
        Informer::start(server.cache.clone(), rt, tx.clone(), shutdown.clone());
    }
    drop(tx);
    let recorder = Recorder::spawn(server.clone(), COMPONENT);
    let c = Controller {
        server,
        recorder,
        sets: HashMap::new(),
        pods: Local::default(),
        revisions: Local::default(),
        queue: WorkQueue::default(),
        backoff: Backoff::default(),
        synced: HashSet::new(),
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = c.run(rx) => {}
        }
    });
}

fn sts_rt() -> &'static ResourceType {
    lookup("apps", "v1", "statefulsets").expect("statefulsets")
}

/// `namespace`, `name`.
type Key = (String, String);

fn write_options() -> WriteOptions {
    WriteOptions {
        field_manager: Some(COMPONENT.into()),
        ..Default::default()
    }
}

/// What a sync reads of a StatefulSet.
#[derive(Clone)]
struct Sts {
    raw: Value,
    uid: String,
    generation: i64,
    replicas: i64,
    selector: LabelSelector,
    template: Value,
    service_name: String,
    parallel: bool,
    on_delete: bool,
    /// `rollingUpdate.partition`, when `rollingUpdate` is given.
    partition: Option<i64>,
    max_unavailable: Value,
    start: i64,
    min_ready: i64,
    history_limit: usize,
    claim_templates: Vec<String>,
    deleting: bool,
}

impl Sts {
    fn from_json(v: &Value) -> Sts {
        let spec = &v["spec"];
        let ru = &spec["updateStrategy"]["rollingUpdate"];
        Sts {
            raw: v.clone(),
            uid: v["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            generation: v["metadata"]["generation"].as_i64().unwrap_or(0),
            replicas: spec["replicas"].as_i64().unwrap_or(1).max(0),
            selector: LabelSelector::from_label_selector(&spec["selector"])
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(LabelSelector::nothing),
            template: spec["template"].clone(),
            service_name: spec["serviceName"].as_str().unwrap_or("").to_string(),
            parallel: spec["podManagementPolicy"] == "Parallel",
            on_delete: spec["updateStrategy"]["type"] == "OnDelete",
            partition: ru
                .is_object()
                .then(|| ru["partition"].as_i64().unwrap_or(0).max(0)),
            max_unavailable: ru["maxUnavailable"].clone(),
            start: spec["ordinals"]["start"].as_i64().unwrap_or(0).max(0),
            min_ready: spec["minReadySeconds"].as_i64().unwrap_or(0),
            history_limit: spec["revisionHistoryLimit"].as_i64().unwrap_or(10).max(0) as usize,
            claim_templates: spec["volumeClaimTemplates"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["metadata"]["name"].as_str().map(str::to_string))
                .collect(),
            deleting: v["metadata"]["deletionTimestamp"].is_string(),
        }
    }

    fn object_ref(&self, ns: &str, name: &str) -> ObjectRef {
        ObjectRef {
            kind: "StatefulSet",
            api_version: "apps/v1",
            namespace: ns.to_string(),
            name: name.to_string(),
            uid: self.uid.clone(),
        }
    }

    fn owner<'a>(&'a self, name: &'a str) -> Owner<'a> {
        Owner {
            kind: "StatefulSet",
            name,
            uid: &self.uid,
            selector: &self.selector,
            deleting: self.deleting,
        }
    }

    fn end(&self) -> i64 {
        self.start + self.replicas - 1
    }

    fn status(&self) -> &Value {
        &self.raw["status"]
    }
}

/// Upstream `getParentNameAndOrdinal`: `<parent>-<ordinal>`.
fn parent_and_ordinal(name: &str) -> Option<(&str, i64)> {
    let (parent, ord) = name.rsplit_once('-')?;
    if ord.is_empty() || !ord.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ord: i32 = ord.parse().ok()?;
    Some((parent, ord as i64))
}

/// What a sync reads of a pod.
#[derive(Clone)]
struct Pod {
    /// `{"metadata": …}` without managedFields (for claims).
    meta: Value,
    name: String,
    uid: String,
    labels: Map<String, Value>,
    controller: Option<revision::ControllerRef>,
    /// `status.phase`; empty for a pod not created.
    phase: String,
    deleting: bool,
    ready_since: Option<i64>,
}

impl revision::Claimable for Pod {
    fn controller(&self) -> &Option<revision::ControllerRef> {
        &self.controller
    }

    fn labels(&self) -> &Map<String, Value> {
        &self.labels
    }
}

impl Pod {
    fn from_json(v: &Value) -> Pod {
        let m = &v["metadata"];
        let mut meta = m.clone();
        if let Some(o) = meta.as_object_mut() {
            o.remove("managedFields");
        }
        Pod {
            meta: json!({ "metadata": meta }),
            name: m["name"].as_str().unwrap_or("").to_string(),
            uid: m["uid"].as_str().unwrap_or("").to_string(),
            labels: labels_of(v),
            controller: controller_of(v),
            phase: v["status"]["phase"].as_str().unwrap_or("").to_string(),
            deleting: m["deletionTimestamp"].is_string(),
            ready_since: revision::ready_since(v),
        }
    }

    fn ordinal(&self) -> Option<i64> {
        parent_and_ordinal(&self.name).map(|(_, o)| o)
    }

    fn revision(&self) -> &str {
        self.labels
            .get(HASH_LABEL)
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    fn created(&self) -> bool {
        !self.phase.is_empty()
    }

    fn failed(&self) -> bool {
        self.phase == "Failed"
    }

    fn succeeded(&self) -> bool {
        self.phase == "Succeeded"
    }

    fn running_and_ready(&self) -> bool {
        self.phase == "Running" && self.ready_since.is_some()
    }

    fn available(&self, min_ready: i64, now_s: i64) -> bool {
        available(self.ready_since, min_ready, now_s)
    }

    /// Upstream `isHealthy`.
    fn healthy(&self) -> bool {
        self.running_and_ready() && !self.deleting
    }

    /// Upstream `identityMatches` (with the pod-index label).
    fn identity_matches(&self, set: &str) -> bool {
        let label = |k: &str| self.labels.get(k).and_then(Value::as_str);
        let ord = self.ordinal();
        parent_and_ordinal(&self.name).is_some_and(|(p, _)| p == set)
            && label(POD_NAME_LABEL) == Some(self.name.as_str())
            && label(POD_INDEX_LABEL) == ord.map(|o| o.to_string()).as_deref()
    }
}

/// Upstream `newStatefulSetPod` at a revision (`setPodRevision`).
fn new_pod(set: &Sts, ns: &str, name: &str, template: &Value, revision: &str, ord: i64) -> Value {
    let mut pod = pod_from_template(template, ns, &set.owner(name));
    let pod_name = format!("{name}-{ord}");
    let meta = &mut pod["metadata"];
    if let Some(m) = meta.as_object_mut() {
        m.remove("generateName");
    }
    meta["name"] = json!(pod_name);
    let labels = &mut meta["labels"];
    labels[POD_NAME_LABEL] = json!(pod_name);
    labels[POD_INDEX_LABEL] = json!(ord.to_string());
    labels[HASH_LABEL] = json!(revision);
    let spec = &mut pod["spec"];
    spec["hostname"] = json!(pod_name);
    if !set.service_name.is_empty() {
        spec["subdomain"] = json!(set.service_name);
    }
    // Upstream `updateStorage`: a volume per claim template, first.
    if !set.claim_templates.is_empty() {
        let mut volumes: Vec<Value> = set
            .claim_templates
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": format!("{c}-{name}-{ord}")}}))
            .collect();
        for v in spec["volumes"].as_array().into_iter().flatten() {
            if !v["name"]
                .as_str()
                .is_some_and(|n| set.claim_templates.iter().any(|c| c == n))
            {
                volumes.push(v.clone());
            }
        }
        spec["volumes"] = Value::Array(volumes);
    }
    pod
}

/// One write of a sync.
enum Step {
    Create(Value),
    Delete(Pod),
    /// A merge patch restoring a pod's identity labels.
    Fix(Pod, Value),
}

/// What a write did, for the local store.
enum Effect {
    Put(Value),
    Gone(String, i64),
}

/// What the writes need, cloned into concurrent tasks.
#[derive(Clone)]
struct Ctx {
    server: Arc<ApiServer>,
    recorder: Recorder,
    set_ref: ObjectRef,
}

impl Ctx {
    /// Upstream `recordPodEvent`.
    fn event(&self, verb: &str, pod: &str, err: Option<&ApiError>) {
        let set = &self.set_ref.name;
        let (ok, failed) = match verb {
            "create" => ("SuccessfulCreate", "FailedCreate"),
            "delete" => ("SuccessfulDelete", "FailedDelete"),
            _ => ("SuccessfulUpdate", "FailedUpdate"),
        };
        match err {
            None => self.recorder.normal(
                &self.set_ref,
                ok,
                format!("{verb} Pod {pod} in StatefulSet {set} successful"),
            ),
            Some(e) => self.recorder.warning(
                &self.set_ref,
                failed,
                format!(
                    "{verb} Pod {pod} in StatefulSet {set} failed error: {}",
                    e.message
                ),
            ),
        }
    }

    /// Runs one replica's writes in order, stopping at the first error.
    async fn run(self, steps: Vec<Step>) -> (Vec<Effect>, Result<(), ApiError>) {
        let ns = self.set_ref.namespace.clone();
        let opts = write_options();
        let mut effects = Vec::new();
        for step in steps {
            let r = match step {
                Step::Create(pod) => {
                    let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
                    match self.server.create(pods_rt(), Some(&ns), pod, &opts).await {
                        Ok(w) => {
                            self.event("create", &name, None);
                            effects.push(Effect::Put(w.object));
                            Ok(())
                        }
                        // Sunk, as upstream: the old pod is still there.
                        Err(e) if e.code == 409 => Err(e),
                        Err(e) => {
                            self.event("create", &name, Some(&e));
                            Err(e)
                        }
                    }
                }
                Step::Delete(p) => {
                    let del = DeleteOptions {
                        precondition_uid: Some(p.uid.clone()).filter(|u| !u.is_empty()),
                        ..Default::default()
                    };
                    match self
                        .server
                        .delete(pods_rt(), Some(&ns), &p.name, &del)
                        .await
                    {
                        Ok((v, gone)) => {
                            self.event("delete", &p.name, None);
                            effects.push(if gone {
                                Effect::Gone(p.name.clone(), rv(&v))
                            } else {
                                Effect::Put(v)
                            });
                            Ok(())
                        }
                        // Gone, or another pod by now: the informer says.
                        Err(e) if e.code == 404 || e.code == 409 => Ok(()),
                        Err(e) => {
                            self.event("delete", &p.name, Some(&e));
                            Err(e)
                        }
                    }
                }
                Step::Fix(p, patch) => {
                    match revision::patch_object(
                        &self.server,
                        pods_rt(),
                        &ns,
                        &p.name,
                        patch,
                        &opts,
                    )
                    .await
                    {
                        Ok(v) => {
                            self.event("update", &p.name, None);
                            effects.push(Effect::Put(v));
                            Ok(())
                        }
                        Err(e) if e.code == 404 || e.code == 409 => Ok(()),
                        Err(e) => {
                            self.event("update", &p.name, Some(&e));
                            Err(e)
                        }
                    }
                }
            };
            if r.is_err() {
                return (effects, r);
            }
        }
        (effects, Ok(()))
    }
}

struct Controller {
    server: Arc<ApiServer>,
    recorder: Recorder,
    sets: HashMap<Key, Sts>,
    pods: Local<Pod>,
    revisions: Local<Rev>,
    queue: WorkQueue<Key>,
    backoff: Backoff<Key>,
    synced: HashSet<&'static str>,
}

/// A StatefulSet's pods: the replicas by index (`None`: missing) and the
/// condemned ones (beyond the replicas), highest ordinal first.
struct Members {
    replicas: Vec<Option<Pod>>,
    condemned: Vec<Pod>,
}

/// The replica and status counts (upstream `computeReplicaStatus`).
#[derive(Debug, Default, PartialEq)]
struct Counts {
    replicas: i64,
    ready: i64,
    available: i64,
    current: i64,
    updated: i64,
}

fn counts<'a>(
    pods: impl Iterator<Item = &'a Pod>,
    min_ready: i64,
    now_s: i64,
    current: &str,
    update: &str,
) -> Counts {
    let mut c = Counts::default();
    for p in pods {
        if p.created() {
            c.replicas += 1;
        }
        if p.running_and_ready() {
            c.ready += 1;
            if p.available(min_ready, now_s) {
                c.available += 1;
            }
        }
        if p.created() && !p.deleting {
            if p.revision() == current {
                c.current += 1;
            }
            if p.revision() == update {
                c.updated += 1;
            }
        }
    }
    c
}

impl Controller {
    async fn run(mut self, mut informers: mpsc::Receiver<Batch>) {
        loop {
            while let Ok(b) = informers.try_recv() {
                self.apply(b);
            }
            let ready = ["Pod", "StatefulSet", "ControllerRevision"]
                .iter()
                .all(|k| self.synced.contains(k));
            if ready {
                if let Some(key) = self.queue.pop() {
                    match self.sync(&key).await {
                        Ok(()) => self.backoff.forget(&key),
                        Err(e) => {
                            tracing::debug!(statefulset = %key.1, error = %e, "statefulset sync failed");
                            let delay = self.backoff.fail(key.clone());
                            self.queue.add_after(key, delay);
                        }
                    }
                    continue;
                }
            }
            let wake = self.queue.next_wake();
            tokio::select! {
                b = informers.recv() => match b {
                    Some(b) => self.apply(b),
                    None => return,
                },
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
                Change::Upsert(o) => self.upsert(kind, &o),
                Change::Delete(o) => self.delete(kind, &o),
            }
        }
    }

    fn upsert(&mut self, kind: &str, o: &Arc<CachedObject>) {
        let v = o.shared_value();
        match kind {
            "Pod" => self.put_pod(&v),
            "StatefulSet" => self.put_set(&v),
            "ControllerRevision" => self.put_revision(&v),
            _ => {}
        }
    }

    fn delete(&mut self, kind: &str, o: &Arc<CachedObject>) {
        let k = obj_key(&o.namespace, &o.name);
        match kind {
            "Pod" => {
                if let Some(p) = self.pods.deleted(&k, o.mod_revision) {
                    self.enqueue_for(&o.namespace, &p.controller, &p.labels);
                }
            }
            "StatefulSet" => {
                let key = (o.namespace.clone(), o.name.clone());
                self.sets.remove(&key);
                self.backoff.forget(&key);
            }
            "ControllerRevision" => {
                if let Some(r) = self.revisions.deleted(&k, o.mod_revision) {
                    let labels = labels_of(&r.raw);
                    self.enqueue_for(&o.namespace, &r.controller, &labels);
                }
            }
            _ => {}
        }
    }

    fn put_pod(&mut self, v: &Value) {
        let ns = v["metadata"]["namespace"].as_str().unwrap_or("");
        for (controller, labels) in self.pods.put_pod(v, "StatefulSet", Pod::from_json) {
            self.enqueue_for(ns, &controller, &labels);
        }
    }

    fn put_set(&mut self, v: &Value) {
        let ns = v["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
        let key = (ns, name);
        if self.sets.get(&key).is_some_and(|s| rv(&s.raw) > rv(v)) {
            return;
        }
        self.sets.insert(key.clone(), Sts::from_json(v));
        self.queue.add(key);
    }

    fn put_revision(&mut self, v: &Value) {
        let r = Rev::from_json(v);
        let ns = v["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let k = obj_key(&ns, &r.name);
        let (controller, labels) = (r.controller.clone(), labels_of(v));
        if self.revisions.put(&k, rv(v), r) {
            self.enqueue_for(&ns, &controller, &labels);
        }
    }

    /// Queues the StatefulSet controlling an object, or, for an orphan,
    /// those in its namespace whose selector matches its labels.
    fn enqueue_for(
        &mut self,
        ns: &str,
        controller: &Option<revision::ControllerRef>,
        labels: &Map<String, Value>,
    ) {
        let keys: Vec<Key> = match controller {
            Some((kind, name, uid)) => {
                let key = (ns.to_string(), name.clone());
                let ours =
                    kind == "StatefulSet" && self.sets.get(&key).is_some_and(|s| s.uid == *uid);
                ours.then_some(key).into_iter().collect()
            }
            None => self
                .sets
                .iter()
                .filter(|((n, _), s)| n == ns && s.selector.matches(Some(labels)))
                .map(|(k, _)| k.clone())
                .collect(),
        };
        for k in keys {
            self.queue.add(k);
        }
    }

    fn apply_effects(&mut self, ns: &str, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Put(v) => self.put_pod(&v),
                Effect::Gone(name, at) => {
                    self.pods.deleted_by_us(&obj_key(ns, &name), at);
                }
            }
        }
    }

    // ----- sync --------------------------------------------------------------

    async fn sync(&mut self, key: &Key) -> Result<(), ApiError> {
        let Some(set) = self.sets.get(key).cloned() else {
            return Ok(());
        };
        let (ns, name) = key;
        if set.selector.is_nothing() {
            return Ok(());
        }
        self.claim(key, &set).await?;
        let owner = set.owner(name);
        let mut revisions: Vec<Rev> = self
            .revisions
            .in_namespace(ns)
            .filter(|r| owner.controls(&r.controller))
            .cloned()
            .collect();
        revision::sort_revisions(&mut revisions);
        let (current, update, collisions) = self.revisions_of(key, &set, &revisions).await?;
        let result = self.update(key, &set, &current, &update).await;
        let now_s = now();
        let members = self.members(ns, &set, name);
        let all = members
            .replicas
            .iter()
            .flatten()
            .chain(members.condemned.iter());
        let c = counts(all, set.min_ready, now_s, &current.name, &update.name);
        self.write_status(key, &set, c, &current, &update, collisions)
            .await?;
        result?;
        self.truncate_history(key, &set, &revisions, &current, &update)
            .await?;
        // Synced again when its ready pods become available.
        let next = members
            .replicas
            .iter()
            .flatten()
            .filter_map(|p| until_available(p.ready_since, set.min_ready, now_s))
            .min();
        if let Some(left) = next {
            self.queue
                .add_after(key.clone(), Duration::from_secs(left as u64 + 1));
        }
        Ok(())
    }

    /// Adopts and releases pods (members by name) and ControllerRevisions.
    async fn claim(&mut self, key: &Key, set: &Sts) -> Result<(), ApiError> {
        let (ns, name) = key;
        let owner = set.owner(name);
        let member = |n: &str| parent_and_ordinal(n).is_some_and(|(p, _)| p == name);
        let pod_claims: Vec<(String, Value)> = self
            .pods
            .in_namespace(ns)
            .filter_map(|p| match claim(&owner, &p.meta, member(&p.name)) {
                Claim::Patch { patch, .. } => Some((p.name.clone(), patch)),
                _ => None,
            })
            .collect();
        let rev_claims: Vec<(String, Value)> = self
            .revisions
            .in_namespace(ns)
            .filter_map(|r| match claim(&owner, &r.raw, true) {
                Claim::Patch { patch, .. } => Some((r.name.clone(), patch)),
                _ => None,
            })
            .collect();
        let opts = write_options();
        for (pod, patch) in pod_claims {
            match revision::patch_object(&self.server, pods_rt(), ns, &pod, patch, &opts).await {
                Ok(v) => self.put_pod(&v),
                Err(e) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        for (rev, patch) in rev_claims {
            match revision::patch_object(&self.server, revisions_rt(), ns, &rev, patch, &opts).await
            {
                Ok(v) => self.put_revision(&v),
                Err(e) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Upstream `getStatefulSetRevisions`: current and update revisions
    /// and the collision count.
    async fn revisions_of(
        &mut self,
        key: &Key,
        set: &Sts,
        revisions: &[Rev],
    ) -> Result<(Rev, Rev, i64), ApiError> {
        let (ns, name) = key;
        let mut collisions = set.status()["collisionCount"].as_i64().unwrap_or(0);
        let data = revision::template_patch(&set.template);
        let next = revisions.last().map_or(0, |r| r.revision) + 1;
        let equal: Vec<&Rev> = revisions.iter().filter(|r| *r.data() == data).collect();
        let opts = write_options();
        let update = match (equal.last(), revisions.last()) {
            (Some(e), Some(last)) if e.name == last.name => (*e).clone(),
            (Some(e), _) => {
                let r = revision::renumber(&self.server, ns, e, next, &opts).await?;
                self.put_revision(&r.raw);
                r
            }
            (None, _) => {
                let r = revision::create_revision(
                    &self.server,
                    ns,
                    &set.owner(name),
                    &set.raw,
                    next,
                    &mut collisions,
                    &opts,
                )
                .await?;
                self.put_revision(&r.raw);
                r
            }
        };
        let current_name = set.status()["currentRevision"].as_str().unwrap_or("");
        let current = revisions
            .iter()
            .find(|r| r.name == current_name)
            .cloned()
            .unwrap_or_else(|| update.clone());
        Ok((current, update, collisions))
    }

    /// The StatefulSet's claimed pods, in and beyond its ordinal range.
    fn members(&self, ns: &str, set: &Sts, name: &str) -> Members {
        let owner = set.owner(name);
        let mut replicas: Vec<Option<Pod>> = vec![None; set.replicas as usize];
        let mut condemned: Vec<Pod> = Vec::new();
        for p in self.pods.in_namespace(ns) {
            if !owner.controls(&p.controller) || !set.selector.matches(Some(&p.labels)) {
                continue;
            }
            let Some((parent, ord)) = parent_and_ordinal(&p.name) else {
                continue;
            };
            if parent != name {
                continue;
            }
            if ord >= set.start && ord <= set.end() {
                replicas[(ord - set.start) as usize] = Some(p.clone());
            } else {
                condemned.push(p.clone());
            }
        }
        condemned.sort_by_key(|p| std::cmp::Reverse(p.ordinal()));
        Members {
            replicas,
            condemned,
        }
    }

    /// Upstream `updateStatefulSet`: creates, recreates and deletes pods.
    async fn update(
        &mut self,
        key: &Key,
        set: &Sts,
        current: &Rev,
        update: &Rev,
    ) -> Result<(), ApiError> {
        let (ns, name) = key;
        if set.deleting {
            return Ok(());
        }
        let ctx = Ctx {
            server: self.server.clone(),
            recorder: self.recorder.clone(),
            set_ref: set.object_ref(ns, name),
        };
        let monotonic = !set.parallel;
        let now_s = now();
        let members = self.members(ns, set, name);
        let (current_t, update_t) = (current.template(), update.template());
        // Upstream `newVersionedStatefulSetPod`.
        let current_count = set.status()["currentReplicas"].as_i64().unwrap_or(0);
        let versioned = |ord: i64| {
            let below = match set.partition {
                Some(p) => ord < set.start + p,
                None => !set.on_delete && ord < set.start + current_count,
            };
            if below {
                new_pod(set, ns, name, &current_t, &current.name, ord)
            } else {
                new_pod(set, ns, name, &update_t, &update.name, ord)
            }
        };
        let first_unhealthy: Option<String> = members
            .replicas
            .iter()
            .enumerate()
            .find(|(_, p)| !p.as_ref().is_some_and(Pod::healthy))
            .map(|(i, p)| match p {
                Some(p) => p.name.clone(),
                None => format!("{name}-{}", set.start + i as i64),
            })
            .or_else(|| {
                members
                    .condemned
                    .iter()
                    .rev()
                    .find(|p| !p.healthy())
                    .map(|p| p.name.clone())
            });
        // Replicas, in ordinal order (upstream `processReplica`).
        let mut groups: Vec<Vec<Step>> = Vec::new();
        let mut blocked = false;
        for (i, slot) in members.replicas.iter().enumerate() {
            let ord = set.start + i as i64;
            let mut steps = Vec::new();
            let mut missing = slot.as_ref().is_none_or(|p| !p.created());
            if let Some(p) = slot.as_ref().filter(|p| p.failed() || p.succeeded()) {
                let (warning, reason, what) = if p.failed() {
                    (true, "RecreatingFailedPod", "failed")
                } else {
                    (false, "RecreatingTerminatedPod", "terminated")
                };
                let msg = format!(
                    "StatefulSet {ns}/{name} is recreating {what} Pod {}",
                    p.name
                );
                if warning {
                    self.recorder.warning(&ctx.set_ref, reason, msg);
                } else {
                    self.recorder.normal(&ctx.set_ref, reason, msg);
                }
                steps.push(Step::Delete(p.clone()));
                missing = true;
            }
            if missing {
                steps.push(Step::Create(versioned(ord)));
                groups.push(steps);
                if monotonic {
                    blocked = true;
                    break;
                }
                continue;
            }
            let p = slot.as_ref().expect("created pod");
            if monotonic && !(p.running_and_ready() && p.available(set.min_ready, now_s)) {
                blocked = true;
                break;
            }
            if !p.identity_matches(name) {
                let patch = json!({"metadata": {"uid": p.uid, "labels": {
                    POD_NAME_LABEL: p.name,
                    POD_INDEX_LABEL: ord.to_string()}}});
                groups.push(vec![Step::Fix(p.clone(), patch)]);
            }
        }
        self.run_groups(&ctx, groups, monotonic).await?;
        if blocked {
            return Ok(());
        }
        // Condemned, highest ordinal first (upstream `processCondemned`).
        let mut deletes: Vec<Vec<Step>> = Vec::new();
        for p in &members.condemned {
            if p.deleting {
                if monotonic {
                    // Wait for it to go before the next.
                    return Ok(());
                }
                continue;
            }
            let first = first_unhealthy.as_deref() == Some(p.name.as_str());
            if monotonic && !first && !(p.running_and_ready() && p.available(set.min_ready, now_s))
            {
                return Ok(());
            }
            deletes.push(vec![Step::Delete(p.clone())]);
            if monotonic {
                break;
            }
        }
        let scaled_down = monotonic && !deletes.is_empty();
        self.run_groups(&ctx, deletes, monotonic).await?;
        if scaled_down || set.on_delete {
            return Ok(());
        }
        // Rolling update, highest ordinal first.
        let replicas = self.members(ns, set, name).replicas;
        let update_min = set.partition.unwrap_or(0).max(0) as usize;
        let stale = |p: &Pod| p.revision() != update.name && !p.deleting;
        let mut victims: Vec<Vec<Step>> = Vec::new();
        if !set.max_unavailable.is_null() {
            // Upstream `updateStatefulSetAfterInvariantEstablished`.
            let max = scaled(&set.max_unavailable, 1, set.replicas).max(1);
            let unavailable = replicas
                .iter()
                .filter(|p| {
                    !p.as_ref()
                        .is_some_and(|p| p.healthy() && p.available(set.min_ready, now_s))
                })
                .count() as i64;
            let mut room = max - unavailable;
            for p in replicas.iter().skip(update_min).rev().flatten() {
                if room <= 0 {
                    break;
                }
                if stale(p) {
                    victims.push(vec![Step::Delete(p.clone())]);
                    room -= 1;
                }
            }
        } else {
            for slot in replicas.iter().skip(update_min).rev() {
                let Some(p) = slot else { break };
                if stale(p) {
                    tracing::info!(statefulset = %name, pod = %p.name, "deleting pod for update");
                    victims.push(vec![Step::Delete(p.clone())]);
                    break;
                }
                if !p.healthy() {
                    break;
                }
            }
        }
        self.run_groups(&ctx, victims, false).await
    }

    /// Runs each group's writes: one group after the other (stopping at an
    /// error) when `ordered`, else in slow-start batches (1, 2, 4, …, a
    /// batch with an error ends it).
    async fn run_groups(
        &mut self,
        ctx: &Ctx,
        groups: Vec<Vec<Step>>,
        ordered: bool,
    ) -> Result<(), ApiError> {
        let ns = ctx.set_ref.namespace.clone();
        if ordered {
            for g in groups {
                let (effects, r) = ctx.clone().run(g).await;
                self.apply_effects(&ns, effects);
                r?;
            }
            return Ok(());
        }
        let mut groups = groups.into_iter();
        let mut batch = 1;
        loop {
            let mut set = tokio::task::JoinSet::new();
            for g in groups.by_ref().take(batch) {
                set.spawn(ctx.clone().run(g));
            }
            if set.is_empty() {
                return Ok(());
            }
            let mut first_error = None;
            while let Some(r) = set.join_next().await {
                let Ok((effects, r)) = r else { continue };
                self.apply_effects(&ns, effects);
                if let Err(e) = r {
                    first_error.get_or_insert(e);
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
            batch *= 2;
        }
    }

    /// Upstream `updateStatefulSetStatus` with `completeRollingUpdate`.
    async fn write_status(
        &mut self,
        key: &Key,
        set: &Sts,
        c: Counts,
        current: &Rev,
        update: &Rev,
        collisions: i64,
    ) -> Result<(), ApiError> {
        let (mut current_name, mut current_count) = (current.name.as_str(), c.current);
        let rolling = !set.on_delete;
        if rolling && c.updated == c.replicas && c.ready == c.replicas {
            current_count = c.updated;
            current_name = &update.name;
        }
        let want = json!({
            "observedGeneration": set.generation,
            "replicas": c.replicas,
            "readyReplicas": c.ready,
            "availableReplicas": c.available,
            "currentReplicas": current_count,
            "updatedReplicas": c.updated,
            "currentRevision": current_name,
            "updateRevision": update.name,
            "collisionCount": collisions,
        });
        let set = self.sets.get(key).cloned().unwrap_or_else(|| set.clone());
        let old = set.status();
        let same = want.as_object().expect("object").iter().all(|(k, v)| {
            let o = &old[k.as_str()];
            o == v || (o.is_null() && *v == json!(0))
        });
        if same {
            return Ok(());
        }
        let w = match self
            .server
            .patch(
                sts_rt(),
                Some(&key.0),
                &key.1,
                Some(Subresource::Status),
                PatchType::Merge,
                json!({ "status": want }),
                &write_options(),
            )
            .await
        {
            Ok(w) => w,
            Err(e) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        };
        if self
            .sets
            .get(key)
            .is_none_or(|s| rv(&s.raw) <= rv(&w.object))
        {
            self.sets.insert(key.clone(), Sts::from_json(&w.object));
        }
        Ok(())
    }

    /// Upstream `truncateHistory`: revisions no pod uses, beyond the
    /// limit, oldest first.
    async fn truncate_history(
        &mut self,
        key: &Key,
        set: &Sts,
        revisions: &[Rev],
        current: &Rev,
        update: &Rev,
    ) -> Result<(), ApiError> {
        let (ns, name) = key;
        let members = self.members(ns, set, name);
        let mut live: HashSet<&str> = [current.name.as_str(), update.name.as_str()].into();
        for p in members.replicas.iter().flatten().chain(&members.condemned) {
            live.insert(p.revision());
        }
        let history: Vec<&Rev> = revisions
            .iter()
            .filter(|r| !live.contains(r.name.as_str()))
            .collect();
        if history.len() <= set.history_limit {
            return Ok(());
        }
        let excess = history.len() - set.history_limit;
        let doomed: Vec<Rev> = history.into_iter().take(excess).cloned().collect();
        for r in doomed {
            if let Some(at) = revision::delete_revision(&self.server, ns, &r).await? {
                self.revisions.deleted_by_us(&obj_key(ns, &r.name), at);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: Value) -> Sts {
        Sts::from_json(
            &json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u"},
            "spec": v}),
        )
    }

    #[test]
    fn names_parse_into_parent_and_ordinal() {
        assert_eq!(parent_and_ordinal("web-0"), Some(("web", 0)));
        assert_eq!(parent_and_ordinal("my-web-12"), Some(("my-web", 12)));
        assert_eq!(parent_and_ordinal("web"), None);
        assert_eq!(parent_and_ordinal("web-x"), None);
        assert_eq!(parent_and_ordinal("web-"), None);
        assert_eq!(parent_and_ordinal("web-99999999999"), None);
    }

    #[test]
    fn pods_get_identity_revision_and_claim_volumes() {
        let s = set(json!({"serviceName": "nginx",
            "volumeClaimTemplates": [{"metadata": {"name": "data"}}],
            "selector": {"matchLabels": {"app": "web"}}}));
        let t = json!({"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "i"}],
                     "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cfg", "emptyDir": {}}]}});
        let p = new_pod(&s, "ns", "web", &t, "web-abc", 2);
        assert_eq!(p["metadata"]["name"], "web-2");
        assert!(p["metadata"]["generateName"].is_null());
        let l = &p["metadata"]["labels"];
        assert_eq!(l["app"], "web");
        assert_eq!(l[POD_NAME_LABEL], "web-2");
        assert_eq!(l[POD_INDEX_LABEL], "2");
        assert_eq!(l[HASH_LABEL], "web-abc");
        assert_eq!(p["spec"]["hostname"], "web-2");
        assert_eq!(p["spec"]["subdomain"], "nginx");
        assert_eq!(
            p["spec"]["volumes"],
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data-web-2"}},
                   {"name": "cfg", "emptyDir": {}}])
        );
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
        let pod = Pod::from_json(&json!({"metadata": {"name": "web-2", "labels": l}}));
        assert!(pod.identity_matches("web"));
        let moved = Pod::from_json(&json!({"metadata": {"name": "web-2",
            "labels": {POD_NAME_LABEL: "web-2"}}}));
        assert!(!moved.identity_matches("web"));
    }

    #[test]
    fn partition_and_ordinals_are_read() {
        let s = set(json!({"replicas": 3, "ordinals": {"start": 5},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}));
        assert_eq!((s.start, s.end(), s.partition), (5, 7, Some(2)));
        assert!(!s.parallel && !s.on_delete);
        let s =
            set(json!({"podManagementPolicy": "Parallel", "updateStrategy": {"type": "OnDelete"}}));
        assert!(s.parallel && s.on_delete && s.partition.is_none());
    }

    #[test]
    fn status_counts_created_ready_current_and_updated() {
        let pod = |name: &str, phase: &str, ready: bool, rev: &str, deleting: bool| {
            let mut v = json!({"metadata": {"name": name, "labels": {HASH_LABEL: rev}},
                "status": {"phase": phase}});
            if ready {
                v["status"]["conditions"] = json!([{"type": "Ready", "status": "True",
                    "lastTransitionTime": "2020-01-01T00:00:00Z"}]);
            }
            if deleting {
                v["metadata"]["deletionTimestamp"] = json!("2020-01-01T00:00:00Z");
            }
            Pod::from_json(&v)
        };
        let pods = [
            pod("web-0", "Running", true, "r2", false),
            pod("web-1", "Running", true, "r1", false),
            pod("web-2", "Pending", false, "r1", true),
            pod("web-3", "", false, "r2", false),
        ];
        let c = counts(pods.iter(), 0, 2_000_000_000, "r1", "r2");
        assert_eq!(
            c,
            Counts {
                replicas: 3,
                ready: 2,
                available: 2,
                current: 1,
                updated: 1
            }
        );
    }
}
