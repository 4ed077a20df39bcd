//! The replication controller: one reconciler for ReplicaSets (apps/v1)
//! and ReplicationControllers (v1), as upstream's `replica_set` controller.
//!
//! One task owns the local state (owners and pods, folded in from the
//! informers) and a work queue of owner keys. Any change to an owner, or to
//! a pod it controls or whose labels its selector matches, queues the
//! owner; a sync reads the local state and nothing else:
//!
//! * pods are *claimed* as upstream's `ClaimPods`: active pods controlled
//!   by the owner that no longer match its selector are released (the
//!   ownerReference removed), orphans that match are adopted (a controller
//!   ownerReference with the owner's uid added), both as merge patches
//!   guarded by the pod's resourceVersion; the owner syncs again once the
//!   patches are done;
//! * then, if the owner's **expectations** are met, the difference between
//!   `spec.replicas` and the active controlled pods is made up: creates
//!   from `spec.template` in slow-start batches (1, 2, 4, …, at most 500 per
//!   sync), deletes in parallel. Expectations record the creates and
//!   deletes issued and are lowered as the pod informer observes them (or
//!   as writes fail), so no sync acts on a view that does not yet show its
//!   own writes: a burst of watch events never makes extra pods. Unmet
//!   expectations expire after five minutes, as upstream;
//! * `status` (replicas, fullyLabeledReplicas, readyReplicas,
//!   availableReplicas, observedGeneration, the `ReplicaFailure` condition)
//!   is patched through the `status` subresource when it differs.
//!
//! Scale-down order (simplified upstream `ActivePods`, same direction):
//! unscheduled before scheduled, Pending before Unknown before Running, not
//! ready before ready, ready for less time before longer, more restarts
//! before fewer, newer before older. Upstream's ranking by the number of
//! related pods on the same node is not applied.
//!
//! Deleting an owner does not make this controller delete its pods: that
//! is the garbage collector's work ([`crate::gc`]), through the pods'
//! ownerReferences.

use crate::events::{ObjectRef, Recorder};
use crate::informer::{Batch, Change, Informer};
use crate::pods_rt;
use crate::queue::{Backoff, WorkQueue};
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

/// Upstream `BurstReplicas`: creates or deletes per sync, at most.
pub const BURST_REPLICAS: usize = 500;
/// Upstream `ExpectationsTimeout`.
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);
const COMPONENT: &str = "replicaset-controller";

/// Starts the controller on `server`'s watch cache; it stops with
/// `shutdown`.
pub fn spawn(server: Arc<ApiServer>, shutdown: CancellationToken) {
    let (tx, rx) = mpsc::channel(256);
    for rt in [pods_rt(), rs_rt(), rc_rt()] {
        Informer::start(server.cache.clone(), rt, tx.clone(), shutdown.clone());
    }
    drop(tx);
    let recorder = Recorder::spawn(server.clone(), COMPONENT);
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let c = Controller {
        server,
        recorder,
        owners: HashMap::new(),
        pods: HashMap::new(),
        by_controller: HashMap::new(),
        orphans: HashMap::new(),
        counts: HashMap::new(),
        queue: WorkQueue::default(),
        expectations: HashMap::new(),
        busy: HashSet::new(),
        failures: HashMap::new(),
        backoff: Backoff::default(),
        not_before: HashMap::new(),
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

fn rs_rt() -> &'static ResourceType {
    lookup("apps", "v1", "replicasets").expect("replicasets")
}
fn rc_rt() -> &'static ResourceType {
    lookup("", "v1", "replicationcontrollers").expect("replicationcontrollers")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    ReplicaSet,
    ReplicationController,
}

impl Kind {
    fn from_str(kind: &str) -> Option<Kind> {
        match kind {
            "ReplicaSet" => Some(Kind::ReplicaSet),
            "ReplicationController" => Some(Kind::ReplicationController),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Kind::ReplicaSet => "ReplicaSet",
            Kind::ReplicationController => "ReplicationController",
        }
    }
    fn api_version(self) -> &'static str {
        match self {
            Kind::ReplicaSet => "apps/v1",
            Kind::ReplicationController => "v1",
        }
    }
    fn rt(self) -> &'static ResourceType {
        match self {
            Kind::ReplicaSet => rs_rt(),
            Kind::ReplicationController => rc_rt(),
        }
    }
}

/// An owner's queue key: kind, namespace, name.
type OwnerKey = (Kind, String, String);

/// What a sync reads of a ReplicaSet or ReplicationController.
struct Owner {
    uid: String,
    generation: i64,
    replicas: usize,
    selector: LabelSelector,
    template: Value,
    template_labels: Map<String, Value>,
    min_ready_seconds: i64,
    status: Value,
    deleting: bool,
}

impl Owner {
    fn from_json(kind: Kind, v: &Value) -> Owner {
        let template = v["spec"]["template"].clone();
        let template_labels = template["metadata"]["labels"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let selector = match kind {
            Kind::ReplicaSet => LabelSelector::from_label_selector(&v["spec"]["selector"])
                .unwrap_or_else(|_| LabelSelector::nothing()),
            Kind::ReplicationController => {
                // A map; defaults to the template's labels.
                let m = v["spec"]["selector"]
                    .as_object()
                    .filter(|m| !m.is_empty())
                    .cloned()
                    .unwrap_or_else(|| template_labels.clone());
                LabelSelector::from_label_selector(&json!({ "matchLabels": m }))
                    .unwrap_or_else(|_| LabelSelector::nothing())
            }
        };
        // An empty selector is invalid for both kinds: it claims nothing.
        let selector = if selector.is_empty() {
            LabelSelector::nothing()
        } else {
            selector
        };
        Owner {
            uid: v["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            generation: v["metadata"]["generation"].as_i64().unwrap_or(0),
            replicas: v["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize,
            selector,
            template,
            template_labels,
            min_ready_seconds: v["spec"]["minReadySeconds"].as_i64().unwrap_or(0),
            status: v["status"].clone(),
            deleting: v["metadata"]["deletionTimestamp"].is_string(),
        }
    }
}

impl Owner {
    /// What `pod` adds to this owner's counts: `None` unless the owner
    /// (`kind`/`name`, this uid) controls it and it is active.
    fn count(&self, kind: Kind, name: &str, pod: &Pod) -> Option<Counted> {
        let (k, n, u) = pod.controller.as_ref()?;
        if *k != kind || n != name || *u != self.uid || !pod.active() {
            return None;
        }
        let matching = self.selector.matches(Some(&pod.labels));
        Some(Counted {
            matching,
            fully_labeled: matching
                && self
                    .template_labels
                    .iter()
                    .all(|(k, v)| pod.labels.get(k) == Some(v)),
            ready_since: pod.ready_since.filter(|_| matching),
        })
    }

    /// Whether pods count the same for `other` as for this owner.
    fn counts_like(&self, other: &Owner) -> bool {
        self.uid == other.uid
            && self.selector == other.selector
            && self.template_labels == other.template_labels
    }
}

/// What a sync reads of a pod.
struct Pod {
    namespace: String,
    name: String,
    uid: String,
    resource_version: String,
    labels: Map<String, Value>,
    owner_refs: Vec<Value>,
    /// The controller ownerReference: kind, name, uid.
    controller: Option<(Kind, String, String)>,
    /// Controlled by something that is not an RS/RC.
    foreign_controller: bool,
    scheduled: bool,
    phase: String,
    deleting: bool,
    /// `Ready` is `True`, since (unix seconds, 0 when unknown).
    ready_since: Option<i64>,
    restarts: i64,
    created: i64,
    /// What the pod adds to its controller's [`Counts`], when the
    /// controller is known and the pod is active.
    counted: Option<Counted>,
}

/// A controlled active pod's part in its owner's counts.
#[derive(Clone, Copy)]
struct Counted {
    matching: bool,
    fully_labeled: bool,
    ready_since: Option<i64>,
}

/// An owner's pods, counted as they change, so that a sync reads its
/// status in O(1) instead of walking thousands of pods.
#[derive(Default)]
struct Counts {
    /// Active controlled pods that match the selector.
    owned: usize,
    ready: usize,
    fully_labeled: usize,
    /// Ready pods by when they turned ready (for minReadySeconds).
    ready_since: std::collections::BTreeMap<i64, usize>,
    /// Active controlled pods that no longer match: to release.
    release: BTreeSet<String>,
}

impl Counts {
    fn add(&mut self, key: &str, c: Counted) {
        if !c.matching {
            self.release.insert(key.to_string());
            return;
        }
        self.owned += 1;
        self.fully_labeled += c.fully_labeled as usize;
        if let Some(since) = c.ready_since {
            self.ready += 1;
            *self.ready_since.entry(since).or_default() += 1;
        }
    }

    fn sub(&mut self, key: &str, c: Counted) {
        if !c.matching {
            self.release.remove(key);
            return;
        }
        self.owned -= 1;
        self.fully_labeled -= c.fully_labeled as usize;
        if let Some(since) = c.ready_since {
            self.ready -= 1;
            if let Some(n) = self.ready_since.get_mut(&since) {
                *n -= 1;
                if *n == 0 {
                    self.ready_since.remove(&since);
                }
            }
        }
    }

    /// Available pods (ready for `min_ready` seconds at `now`) and the
    /// seconds until the next ready pod becomes available.
    fn available(&self, min_ready: i64, now: i64) -> (usize, Option<i64>) {
        if min_ready <= 0 {
            return (self.ready, None);
        }
        let mut available = 0;
        for (since, n) in &self.ready_since {
            let left = since + min_ready - now;
            if left > 0 {
                return (available, Some(left));
            }
            available += n;
        }
        (available, None)
    }
}

fn ts(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second())
        .unwrap_or(0)
}

impl Pod {
    fn from_json(v: &Value) -> Pod {
        let m = &v["metadata"];
        let owner_refs = m["ownerReferences"].as_array().cloned().unwrap_or_default();
        let ctrl = owner_refs.iter().find(|r| r["controller"] == true);
        let controller = ctrl.and_then(|r| {
            Some((
                Kind::from_str(r["kind"].as_str()?)?,
                r["name"].as_str()?.to_string(),
                r["uid"].as_str().unwrap_or("").to_string(),
            ))
        });
        let ready_since = v["status"]["conditions"].as_array().and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == "Ready" && c["status"] == "True")
                .map(|c| ts(&c["lastTransitionTime"]))
        });
        let restarts = v["status"]["containerStatuses"]
            .as_array()
            .map(|cs| cs.iter().filter_map(|c| c["restartCount"].as_i64()).sum())
            .unwrap_or(0);
        Pod {
            namespace: m["namespace"].as_str().unwrap_or("").to_string(),
            name: m["name"].as_str().unwrap_or("").to_string(),
            uid: m["uid"].as_str().unwrap_or("").to_string(),
            resource_version: m["resourceVersion"].as_str().unwrap_or("").to_string(),
            labels: m["labels"].as_object().cloned().unwrap_or_default(),
            foreign_controller: ctrl.is_some() && controller.is_none(),
            owner_refs,
            controller,
            scheduled: v["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty()),
            phase: v["status"]["phase"]
                .as_str()
                .unwrap_or("Pending")
                .to_string(),
            deleting: m["deletionTimestamp"].is_string(),
            ready_since,
            restarts,
            created: ts(&m["creationTimestamp"]),
            counted: None,
        }
    }

    /// Upstream `IsPodActive`: not terminal, not being deleted.
    fn active(&self) -> bool {
        self.phase != "Succeeded" && self.phase != "Failed" && !self.deleting
    }

    fn phase_rank(&self) -> u8 {
        match self.phase.as_str() {
            "Pending" => 0,
            "Unknown" => 1,
            "Running" => 2,
            _ => 3,
        }
    }

    /// Sort key: smaller is deleted first (see the module's docs).
    fn deletion_rank(&self) -> Rank {
        (
            self.scheduled,
            self.phase_rank(),
            self.ready_since.is_some(),
            // Ready for less time (later transition) first.
            std::cmp::Reverse(self.ready_since.unwrap_or(0)),
            std::cmp::Reverse(self.restarts),
            std::cmp::Reverse(self.created),
        )
    }
}

type Rank = (
    bool,
    u8,
    bool,
    std::cmp::Reverse<i64>,
    std::cmp::Reverse<i64>,
    std::cmp::Reverse<i64>,
);

/// Creates and deletes issued for an owner and not yet observed.
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

/// The outcome of an owner's writes, back to the loop.
struct Done {
    owner: OwnerKey,
    /// Creates not issued or failed (to lower the expectations).
    adds_missed: i64,
    /// Deletes that failed (pod keys).
    dels_missed: Vec<String>,
    /// `ReplicaFailure` reason and message, or none when all went well.
    failure: Option<(&'static str, String)>,
    /// Whether these were creates or deletes (not adoptions or releases).
    manage: bool,
    /// Some writes were not done: retry after a backoff.
    retry: bool,
}

/// A sync's decisions, taken on the local state.
struct Plan {
    owner_ref: ObjectRef,
    status: Option<Value>,
    /// Seconds until a ready pod becomes available.
    next_check: Option<i64>,
    /// Adoption and release patches, by pod name.
    claims: Vec<(String, Value)>,
    /// How many active pods it controls.
    owned_count: usize,
    /// When there are too many, the active controlled pods in deletion
    /// order: (rank, name, uid); empty otherwise.
    owned: Vec<(Rank, String, String)>,
    /// Whether to create or delete (expectations met, owner not deleting).
    manage: bool,
    replicas: usize,
    pod: Value,
}

struct Controller {
    server: Arc<ApiServer>,
    recorder: Recorder,
    owners: HashMap<OwnerKey, Owner>,
    /// Pods by `namespace/name`.
    pods: HashMap<String, Pod>,
    /// Pod keys by their controller's uid (RS/RC controllers only).
    by_controller: HashMap<String, BTreeSet<String>>,
    /// Pod keys without a controller, by namespace (adoption candidates).
    orphans: HashMap<String, BTreeSet<String>>,
    /// Each owner's pods counted, by owner uid.
    counts: HashMap<String, Counts>,
    queue: WorkQueue<OwnerKey>,
    expectations: HashMap<OwnerKey, Expectations>,
    /// Owners with writes in flight: not synced until they are done.
    busy: HashSet<OwnerKey>,
    failures: HashMap<OwnerKey, (&'static str, String)>,
    /// Failed syncs in a row, per owner (for the retry backoff).
    backoff: Backoff<OwnerKey>,
    /// No creates or deletes before then (the backoff after a failure),
    /// whatever queues the owner meanwhile.
    not_before: HashMap<OwnerKey, Instant>,
    synced: HashSet<&'static str>,
    done_tx: mpsc::UnboundedSender<Done>,
}

fn pod_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

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
            let ready = ["Pod", "ReplicaSet", "ReplicationController"]
                .iter()
                .all(|k| self.synced.contains(k));
            if ready {
                let mut n = 0;
                while let Some(key) = self.queue.pop() {
                    if self.busy.contains(&key) {
                        // Synced again when its writes are done.
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

    fn enqueue(&mut self, key: OwnerKey) {
        self.queue.add(key);
    }

    fn enqueue_after(&mut self, key: OwnerKey, after: Duration) {
        self.queue.add_after(key, after);
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
        if kind == "Pod" {
            let pod = Pod::from_json(&v);
            let key = pod_key(&o.namespace, &o.name);
            let old = self.pods.remove(&key);
            // Observations lower the expectations of the controller.
            if let Some(owner) = self.controller_of(&pod) {
                let uid_changed = old.as_ref().is_none_or(|p| p.uid != pod.uid);
                if uid_changed {
                    if let Some(e) = self.expectations.get_mut(&owner) {
                        e.adds -= 1;
                    }
                }
            }
            if pod.deleting {
                self.deletion_observed(&old, &pod);
            }
            let mut owners = self.interested(&pod);
            if let Some(old) = &old {
                for k in self.interested(old) {
                    if !owners.contains(&k) {
                        owners.push(k);
                    }
                }
            }
            for k in owners {
                self.enqueue(k);
            }
            let mut pod = pod;
            if let Some(old) = &old {
                self.unindex(&key, old);
            }
            self.index(&key, &mut pod);
            self.pods.insert(key, pod);
        } else if let Some(k) = Kind::from_str(kind) {
            let key = (k, o.namespace.clone(), o.name.clone());
            let owner = Owner::from_json(k, &v);
            let old = self.owners.get(&key);
            if old.is_some_and(|old| old.uid != owner.uid) {
                // Recreated under the same name: a different object.
                self.expectations.remove(&key);
            }
            let recount = old.is_none_or(|old| !old.counts_like(&owner));
            if let Some(old) = old.filter(|old| old.uid != owner.uid) {
                self.counts.remove(&old.uid);
            }
            if recount {
                self.recount(&key, &owner);
            }
            self.owners.insert(key.clone(), owner);
            self.enqueue(key);
        }
    }

    fn delete(&mut self, kind: &str, o: &Arc<CachedObject>) {
        if kind == "Pod" {
            let key = pod_key(&o.namespace, &o.name);
            let Some(pod) = self.pods.remove(&key) else {
                return;
            };
            self.unindex(&key, &pod);
            self.deletion_observed(&None, &pod);
            for k in self.interested(&pod) {
                self.enqueue(k);
            }
        } else if let Some(k) = Kind::from_str(kind) {
            let key = (k, o.namespace.clone(), o.name.clone());
            if let Some(owner) = self.owners.remove(&key) {
                self.counts.remove(&owner.uid);
            }
            self.expectations.remove(&key);
            self.failures.remove(&key);
            self.backoff.forget(&key);
            self.not_before.remove(&key);
        }
    }

    /// The index a pod's claim is looked up in: its controller's, or its
    /// namespace's orphans.
    fn index_of<'a>(
        map: &'a mut HashMap<String, BTreeSet<String>>,
        orphans: &'a mut HashMap<String, BTreeSet<String>>,
        pod: &Pod,
    ) -> Option<(&'a mut HashMap<String, BTreeSet<String>>, String)> {
        match (&pod.controller, pod.foreign_controller) {
            (Some((_, _, uid)), _) => Some((map, uid.clone())),
            (None, false) => Some((orphans, pod.namespace.clone())),
            (None, true) => None,
        }
    }

    fn index(&mut self, key: &str, pod: &mut Pod) {
        if let Some((m, k)) = Self::index_of(&mut self.by_controller, &mut self.orphans, pod) {
            m.entry(k).or_default().insert(key.to_string());
        }
        pod.counted = pod.controller.as_ref().and_then(|(kind, name, uid)| {
            let owner = self
                .owners
                .get(&(*kind, pod.namespace.clone(), name.clone()))?;
            let c = owner.count(*kind, name, pod)?;
            self.counts.entry(uid.clone()).or_default().add(key, c);
            Some(c)
        });
    }

    /// Counts an owner's pods afresh (new to the controller, or its
    /// selector or template labels changed).
    fn recount(&mut self, key: &OwnerKey, owner: &Owner) {
        let (kind, _, name) = key;
        let mut counts = Counts::default();
        for pk in self.by_controller.get(&owner.uid).into_iter().flatten() {
            let Some(pod) = self.pods.get_mut(pk) else {
                continue;
            };
            pod.counted = owner.count(*kind, name, pod);
            if let Some(c) = pod.counted {
                counts.add(pk, c);
            }
        }
        self.counts.insert(owner.uid.clone(), counts);
    }

    fn unindex(&mut self, key: &str, pod: &Pod) {
        if let (Some(c), Some((_, _, uid))) = (pod.counted, &pod.controller) {
            if let Some(counts) = self.counts.get_mut(uid) {
                counts.sub(key, c);
            }
        }
        if let Some((m, k)) = Self::index_of(&mut self.by_controller, &mut self.orphans, pod) {
            if let Some(set) = m.get_mut(&k) {
                set.remove(key);
                if set.is_empty() {
                    m.remove(&k);
                }
            }
        }
    }

    /// A pod being deleted or gone: the deletion its controller expected.
    fn deletion_observed(&mut self, old: &Option<Pod>, pod: &Pod) {
        if old.as_ref().is_some_and(|o| o.deleting) {
            return;
        }
        let key = pod_key(&pod.namespace, &pod.name);
        if let Some(owner) = self.controller_of(pod) {
            if let Some(e) = self.expectations.get_mut(&owner) {
                e.dels.remove(&key);
            }
        }
    }

    /// The RS/RC controlling `pod` (its controller ownerReference, with the
    /// owner's current uid).
    fn controller_of(&self, pod: &Pod) -> Option<OwnerKey> {
        let (kind, name, uid) = pod.controller.as_ref()?;
        let key = (*kind, pod.namespace.clone(), name.clone());
        self.owners.get(&key).filter(|o| &o.uid == uid).map(|_| key)
    }

    /// The owners a change to `pod` concerns: its controller, or, for an
    /// orphan, every owner in its namespace whose selector matches it.
    fn interested(&self, pod: &Pod) -> Vec<OwnerKey> {
        if pod.controller.is_some() || pod.foreign_controller {
            return self.controller_of(pod).into_iter().collect();
        }
        self.owners
            .iter()
            .filter(|((_, ns, _), o)| *ns == pod.namespace && o.selector.matches(Some(&pod.labels)))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn done(&mut self, d: Done) {
        self.busy.remove(&d.owner);
        if let Some(e) = self.expectations.get_mut(&d.owner) {
            e.adds -= d.adds_missed;
            for k in &d.dels_missed {
                e.dels.remove(k);
            }
        }
        let failed = d.failure.is_some() || d.retry;
        if d.manage {
            match d.failure {
                Some(f) => {
                    self.failures.insert(d.owner.clone(), f);
                }
                None => {
                    self.failures.remove(&d.owner);
                }
            }
        }
        if !self.owners.contains_key(&d.owner) {
            self.backoff.forget(&d.owner);
            self.not_before.remove(&d.owner);
            return;
        }
        if failed {
            // Upstream requeues failed syncs rate-limited.
            let delay = self.backoff.fail(d.owner.clone());
            self.not_before
                .insert(d.owner.clone(), Instant::now() + delay);
            self.enqueue_after(d.owner, delay);
        } else {
            if d.manage {
                self.backoff.forget(&d.owner);
            }
            self.enqueue(d.owner);
        }
    }

    // ----- sync --------------------------------------------------------------

    fn sync(&mut self, key: OwnerKey) {
        // Upstream: a sync with nothing to create or delete succeeds, and
        // a success clears ReplicaFailure (a set scaled to its pods, or
        // to zero, no longer fails).
        if let Some(owner) = self.owners.get(&key) {
            let owned = self.counts.get(&owner.uid).map_or(0, |c| c.owned);
            if owned == owner.replicas && self.may_manage(&key) {
                self.failures.remove(&key);
            }
        }
        let Some(plan) = self.plan(&key) else {
            self.expectations.remove(&key);
            return;
        };
        self.act(key, plan);
    }

    /// Whether creates and deletes may be issued now: the expectations are
    /// met and no failure backoff is running.
    fn may_manage(&self, key: &OwnerKey) -> bool {
        self.expectations.get(key).is_none_or(|e| e.met())
            && self
                .not_before
                .get(key)
                .is_none_or(|t| *t <= Instant::now())
    }

    /// What a sync does, read from the local state.
    fn plan(&self, key: &OwnerKey) -> Option<Plan> {
        let owner = self.owners.get(key)?;
        let (kind, ns, name) = key;
        let empty = Counts::default();
        let counts = self.counts.get(&owner.uid).unwrap_or(&empty);
        // Claim: release controlled pods that no longer match, adopt
        // matching orphans of the namespace.
        let mut patches: Vec<(String, Value)> = Vec::new();
        if !owner.deleting {
            for p in counts.release.iter().filter_map(|pk| self.pods.get(pk)) {
                let refs: Vec<Value> = p
                    .owner_refs
                    .iter()
                    .filter(|r| r["uid"] != owner.uid.as_str())
                    .cloned()
                    .collect();
                patches.push((p.name.clone(), ref_patch(p, refs)));
            }
            let controller_ref = controller_ref(*kind, name, &owner.uid);
            let orphans = self.orphans.get(ns).into_iter().flatten();
            for p in orphans.filter_map(|pk| self.pods.get(pk)) {
                if p.active() && owner.selector.matches(Some(&p.labels)) {
                    let mut refs = p.owner_refs.clone();
                    refs.push(controller_ref.clone());
                    patches.push((p.name.clone(), ref_patch(p, refs)));
                }
            }
        }
        let now = jiff::Timestamp::now().as_second();
        let (available, next_check) = counts.available(owner.min_ready_seconds, now);
        let status = self.status(
            key,
            owner,
            counts.owned,
            counts.fully_labeled,
            counts.ready,
            available,
        );
        // Ranked only when some must go.
        let mut ranked: Vec<(Rank, String, String)> = Vec::new();
        if counts.owned > owner.replicas {
            ranked = self
                .by_controller
                .get(&owner.uid)
                .into_iter()
                .flatten()
                .filter_map(|pk| self.pods.get(pk))
                .filter(|p| p.counted.is_some_and(|c| c.matching))
                .map(|p| (p.deletion_rank(), p.name.clone(), p.uid.clone()))
                .collect();
            ranked.sort();
        }
        let met = self.may_manage(key);
        Some(Plan {
            owner_ref: ObjectRef {
                kind: kind.name(),
                api_version: kind.api_version(),
                namespace: ns.clone(),
                name: name.clone(),
                uid: owner.uid.clone(),
            },
            status,
            next_check,
            claims: patches,
            owned_count: counts.owned,
            owned: ranked,
            manage: met && !owner.deleting,
            replicas: owner.replicas,
            pod: pod_from_template(&owner.template, *kind, ns, name, &owner.uid),
        })
    }

    fn act(&mut self, key: OwnerKey, plan: Plan) {
        let (kind, ns, name) = &key;
        if let Some(status) = plan.status {
            let server = self.server.clone();
            let (kind, ns2, name2) = (*kind, ns.clone(), name.clone());
            tokio::spawn(async move {
                let r = server
                    .patch(
                        kind.rt(),
                        Some(&ns2),
                        &name2,
                        Some(Subresource::Status),
                        PatchType::Merge,
                        json!({ "status": status }),
                        &write_options(),
                    )
                    .await;
                if let Err(e) = r {
                    if e.code != 404 && e.code != 409 {
                        tracing::warn!(owner = %name2, error = %e, "status update failed");
                    }
                }
            });
        }
        if let Some(left) = plan.next_check {
            self.enqueue_after(key.clone(), Duration::from_secs(left.max(1) as u64));
        }
        if !plan.claims.is_empty() {
            // Adoptions and releases first; the owner syncs again once
            // they are done (and seen).
            self.busy.insert(key.clone());
            let server = self.server.clone();
            let tx = self.done_tx.clone();
            let ns = ns.clone();
            let patches = plan.claims;
            tokio::spawn(async move {
                let mut set = tokio::task::JoinSet::new();
                for (pod, patch) in patches {
                    let server = server.clone();
                    let ns = ns.clone();
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
                        if let Err(e) = r {
                            tracing::debug!(pod = %pod, error = %e, "claiming a pod failed");
                        }
                    });
                }
                while set.join_next().await.is_some() {}
                let _ = tx.send(Done {
                    owner: key,
                    adds_missed: 0,
                    dels_missed: Vec::new(),
                    failure: None,
                    manage: false,
                    retry: false,
                });
            });
            return;
        }
        if !plan.manage {
            return;
        }
        let owner_ref = plan.owner_ref;
        let diff = plan.owned_count as i64 - plan.replicas as i64;
        if diff < 0 {
            let n = (-diff as usize).min(BURST_REPLICAS);
            self.expectations.insert(
                key.clone(),
                Expectations {
                    adds: n as i64,
                    dels: HashSet::new(),
                    set_at: Instant::now(),
                },
            );
            self.enqueue_after(key.clone(), EXPECTATIONS_TIMEOUT);
            self.busy.insert(key.clone());
            let (server, recorder, tx) = (
                self.server.clone(),
                self.recorder.clone(),
                self.done_tx.clone(),
            );
            let ns = ns.clone();
            let pod = plan.pod;
            tokio::spawn(async move {
                let (created, failure) =
                    slow_start_create(&server, &recorder, &owner_ref, &ns, pod, n).await;
                let _ = tx.send(Done {
                    owner: key,
                    adds_missed: (n - created) as i64,
                    dels_missed: Vec::new(),
                    failure,
                    manage: true,
                    retry: created < n,
                });
            });
        } else if diff > 0 {
            let n = (diff as usize).min(BURST_REPLICAS);
            let victims: Vec<(String, String)> = plan.owned[..n]
                .iter()
                .map(|(_, name, uid)| (name.clone(), uid.clone()))
                .collect();
            self.expectations.insert(
                key.clone(),
                Expectations {
                    adds: 0,
                    dels: victims.iter().map(|(n, _)| pod_key(ns, n)).collect(),
                    set_at: Instant::now(),
                },
            );
            self.enqueue_after(key.clone(), EXPECTATIONS_TIMEOUT);
            self.busy.insert(key.clone());
            let (server, recorder, tx) = (
                self.server.clone(),
                self.recorder.clone(),
                self.done_tx.clone(),
            );
            let ns = ns.clone();
            tokio::spawn(async move {
                let mut set = tokio::task::JoinSet::new();
                for (pod, uid) in victims {
                    let (server, ns) = (server.clone(), ns.clone());
                    set.spawn(async move {
                        let del = DeleteOptions {
                            precondition_uid: Some(uid).filter(|u| !u.is_empty()),
                            ..Default::default()
                        };
                        let r = server.delete(pods_rt(), Some(&ns), &pod, &del).await;
                        (pod, r.map(|_| ()))
                    });
                }
                let mut missed = Vec::new();
                let mut failure = None;
                while let Some(r) = set.join_next().await {
                    let Ok((pod, r)) = r else { continue };
                    match r {
                        Ok(()) => recorder.normal(
                            &owner_ref,
                            "SuccessfulDelete",
                            format!("Deleted pod: {pod}"),
                        ),
                        // Already gone: its deletion is (or was) observed.
                        Err(e) if e.code == 404 => missed.push(pod_key(&ns, &pod)),
                        Err(e) => {
                            recorder.warning(
                                &owner_ref,
                                "FailedDelete",
                                format!("Error deleting: {}", e.message),
                            );
                            failure = Some(("FailedDelete", e.message.clone()));
                            missed.push(pod_key(&ns, &pod));
                        }
                    }
                }
                let _ = tx.send(Done {
                    owner: key,
                    adds_missed: 0,
                    retry: failure.is_some(),
                    dels_missed: missed,
                    failure,
                    manage: true,
                });
            });
        }
    }

    /// The status to write, or `None` when the owner already shows it.
    fn status(
        &self,
        key: &OwnerKey,
        owner: &Owner,
        replicas: usize,
        fully_labeled: usize,
        ready: usize,
        available: usize,
    ) -> Option<Value> {
        let cur = &owner.status;
        let mut conditions: Vec<Value> = cur["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["type"] != "ReplicaFailure")
            .collect();
        let existing = cur["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "ReplicaFailure"))
            .cloned();
        if let Some((reason, message)) = self.failures.get(key) {
            let same = existing
                .as_ref()
                .is_some_and(|c| c["reason"] == *reason && c["message"] == message.as_str());
            conditions.push(match (same, existing) {
                (true, Some(c)) => c,
                _ => json!({"type": "ReplicaFailure", "status": "True", "reason": reason,
                    "message": message,
                    "lastTransitionTime": navarch_api::meta::rfc3339(jiff::Timestamp::now())}),
            });
        }
        let want = json!({
            "replicas": replicas,
            "fullyLabeledReplicas": fully_labeled,
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": owner.generation,
        });
        let num = |f: &str| cur[f].as_i64().unwrap_or(0);
        let cur_conditions = cur["conditions"].as_array().cloned().unwrap_or_default();
        let same = num("replicas") == replicas as i64
            && num("fullyLabeledReplicas") == fully_labeled as i64
            && num("readyReplicas") == ready as i64
            && num("availableReplicas") == available as i64
            && num("observedGeneration") == owner.generation
            && cur_conditions == conditions;
        if same {
            return None;
        }
        let mut want = want;
        want["conditions"] = if conditions.is_empty() {
            Value::Null
        } else {
            Value::Array(conditions)
        };
        Some(want)
    }
}

fn write_options() -> WriteOptions {
    WriteOptions {
        field_manager: Some(COMPONENT.into()),
        ..Default::default()
    }
}

fn controller_ref(kind: Kind, name: &str, uid: &str) -> Value {
    json!({"apiVersion": kind.api_version(), "kind": kind.name(), "name": name,
        "uid": uid, "controller": true, "blockOwnerDeletion": true})
}

/// A merge patch setting a pod's ownerReferences, only if the pod is still
/// the one seen (uid and resourceVersion).
fn ref_patch(p: &Pod, refs: Vec<Value>) -> Value {
    json!({"metadata": {"ownerReferences": refs, "uid": p.uid,
        "resourceVersion": p.resource_version}})
}

/// Upstream `GetPodFromTemplate`: labels, annotations and finalizers of the
/// template, the owner's name as `generateName`, a controller reference.
fn pod_from_template(template: &Value, kind: Kind, ns: &str, name: &str, uid: &str) -> Value {
    let tm = &template["metadata"];
    let mut meta = json!({
        "generateName": format!("{name}-"),
        "namespace": ns,
        "ownerReferences": [controller_ref(kind, name, uid)],
    });
    for f in ["labels", "annotations", "finalizers"] {
        if !tm[f].is_null() {
            meta[f] = tm[f].clone();
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]})
}

/// Upstream `slowStartBatch`: batches of 1, 2, 4, … creates at once,
/// stopping at the first batch with an error. Returns the pods created
/// and the failure, if any.
async fn slow_start_create(
    server: &Arc<ApiServer>,
    recorder: &Recorder,
    owner: &ObjectRef,
    ns: &str,
    pod: Value,
    count: usize,
) -> (usize, Option<(&'static str, String)>) {
    let mut created = 0;
    let mut batch = 1;
    let mut failure = None;
    while created < count {
        let n = batch.min(count - created);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let (server, ns, pod) = (server.clone(), ns.to_string(), pod.clone());
            set.spawn(async move {
                server
                    .create(pods_rt(), Some(&ns), pod, &write_options())
                    .await
            });
        }
        let mut ok = 0;
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(w)) => {
                    ok += 1;
                    let name = w.object["metadata"]["name"].as_str().unwrap_or("");
                    recorder.normal(owner, "SuccessfulCreate", format!("Created pod: {name}"));
                }
                // Upstream ignores creates refused because the namespace
                // is being deleted: no event, no condition.
                Ok(Err(e)) if e.code == 403 && e.message.contains("is being terminated") => {}
                Ok(Err(e)) => {
                    create_failed(recorder, owner, &e);
                    failure = Some(("FailedCreate", e.message.clone()));
                }
                Err(_) => {}
            }
        }
        created += ok;
        if ok < n {
            break;
        }
        batch *= 2;
    }
    (created, failure)
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

    fn ready(since: i64) -> Counted {
        Counted {
            matching: true,
            fully_labeled: true,
            ready_since: Some(since),
        }
    }

    #[test]
    fn counts_follow_adds_and_removals() {
        let mut c = Counts::default();
        c.add("ns/a", ready(100));
        c.add("ns/b", ready(105));
        let pending = Counted {
            matching: true,
            fully_labeled: false,
            ready_since: None,
        };
        c.add("ns/c", pending);
        let stray = Counted {
            matching: false,
            fully_labeled: false,
            ready_since: None,
        };
        c.add("ns/d", stray);
        assert_eq!((c.owned, c.ready, c.fully_labeled), (3, 2, 2));
        assert_eq!(c.release.iter().collect::<Vec<_>>(), ["ns/d"]);
        // minReadySeconds 10 at 110: a is available, b in 5 s.
        assert_eq!(c.available(10, 110), (1, Some(5)));
        assert_eq!(c.available(0, 110), (2, None));
        assert_eq!(c.available(10, 120), (2, None));
        c.sub("ns/a", ready(100));
        c.sub("ns/d", stray);
        assert_eq!((c.owned, c.ready, c.fully_labeled), (2, 1, 1));
        assert!(c.release.is_empty());
        assert_eq!(c.available(10, 110), (0, Some(5)));
        c.sub("ns/b", ready(105));
        c.sub("ns/c", pending);
        assert_eq!((c.owned, c.ready), (0, 0));
        assert!(c.ready_since.is_empty());
    }
}
