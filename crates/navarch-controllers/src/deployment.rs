//! The Deployment controller (apps/v1), as upstream's `deployment`
//! controller: one ReplicaSet per pod template, rolled from old to new.
//!
//! One task owns the local state (Deployments, ReplicaSets and a count of
//! the live pods of each ReplicaSet, from the informers) and a work queue
//! of Deployment keys. A sync reads the local state and writes through the
//! API server's verbs, one Deployment at a time; the objects its writes
//! return replace the local copies at once (the informer never moves a
//! copy back to an older resourceVersion), so a sync never acts on a view
//! that misses its own writes.
//!
//! * ReplicaSets are *claimed* like the ReplicaSet controller claims pods:
//!   controlled ones that no longer match the selector are released,
//!   matching orphans adopted.
//! * The *new* ReplicaSet is the (oldest) one whose template equals the
//!   Deployment's, ignoring the `pod-template-hash` label; when there is
//!   none it is created as `<deployment>-<hash>`, the hash (FNV-1a 32 of the
//!   template's canonical JSON, plus `status.collisionCount`, encoded with
//!   upstream's safe alphabet) also added to its selector and template
//!   labels. A name taken by a different ReplicaSet bumps `collisionCount`.
//! * Revisions (`deployment.kubernetes.io/revision`): the new ReplicaSet
//!   gets the highest old revision + 1 when its own is lower (so an old
//!   ReplicaSet brought back by a rollback gets a new number), and the
//!   Deployment mirrors it. `desired-replicas` and `max-replicas` are set
//!   with every scale.
//! * RollingUpdate (upstream `rolloutRolling`): scale the new ReplicaSet up
//!   to at most `replicas + maxSurge` pods in all, else scale old ones down
//!   (first their unavailable pods, then as far as `replicas −
//!   maxUnavailable` available pods allow, oldest first). Recreate: old
//!   ReplicaSets to 0, wait until their pods are gone, then the new one up.
//! * A change of `spec.replicas` while several ReplicaSets are active (or a
//!   paused Deployment) is a *scaling event*: the one active ReplicaSet is
//!   scaled to `replicas`; with several, the difference to `replicas +
//!   maxSurge` is shared as upstream's proportional scaling shares it: each
//!   gets its size times the new `replicas + maxSurge` over the size it was
//!   scaled for (its `max-replicas` annotation), rounded, the remainder to
//!   the largest.
//! * `spec.paused`: scaling only, no rollout, `Progressing` is `Unknown`
//!   with reason `DeploymentPaused` (`DeploymentResumed` after).
//! * Once complete, old ReplicaSets with no replicas beyond
//!   `revisionHistoryLimit` (default 10) are deleted, lowest revision first.
//! * `status` (observedGeneration, replicas, updatedReplicas,
//!   readyReplicas, availableReplicas, unavailableReplicas, collisionCount,
//!   `Available` and `Progressing` with upstream's reasons, including
//!   `ProgressDeadlineExceeded` after `progressDeadlineSeconds`) is patched
//!   through the `status` subresource when it differs.
//!
//! A ReplicaSet rolled back to keeps its earlier revisions in
//! `deployment.kubernetes.io/revision-history` (at most 2,000 characters).
//!
//! Not done: the legacy server-side rollback (`spec.rollbackTo`, extensions/v1beta1;
//! `kubectl rollout undo` patches the template client-side).

use crate::events::{ObjectRef, Recorder};
use crate::informer::{Batch, Change, Informer};
use crate::pods_rt;
use crate::queue::{Backoff, WorkQueue};
use navarch_api::patch::PatchType;
use navarch_api::registry::lookup;
use navarch_api::selector::LabelSelector;
use navarch_api::{ResourceType, Subresource};
use navarch_apiserver::cache::CachedObject;
use navarch_apiserver::{ApiServer, DeleteOptions, WriteOptions};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const COMPONENT: &str = "deployment-controller";
pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX: &str = "deployment.kubernetes.io/max-replicas";
/// Upstream `FailedRSCreateReason`.
const RS_CREATE_ERROR: &str = "ReplicaSetCreateError";
/// Earlier revisions of a ReplicaSet that was rolled back to.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// Upstream `maxRevHistoryLengthInChars`.
const REVISION_HISTORY_CHARS: usize = 2000;
/// Deployment annotations not copied to its ReplicaSets (upstream
/// `skipCopyAnnotation`).
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    DESIRED,
    MAX,
    "deprecated.deployment.rollback.to",
];

/// Starts the controller on `server`'s watch cache; it stops with
/// `shutdown`.
pub fn spawn(server: Arc<ApiServer>, shutdown: CancellationToken) {
    let (tx, rx) = mpsc::channel(256);
    for rt in [pods_rt(), rs_rt(), deploy_rt()] {
        Informer::start(server.cache.clone(), rt, tx.clone(), shutdown.clone());
    }
    drop(tx);
    let recorder = Recorder::spawn(server.clone(), COMPONENT);
    let c = Controller {
        server,
        recorder,
        deployments: HashMap::new(),
        sets: HashMap::new(),
        set_by_uid: HashMap::new(),
        pods: HashMap::new(),
        live_pods: HashMap::new(),
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

fn rs_rt() -> &'static ResourceType {
    lookup("apps", "v1", "replicasets").expect("replicasets")
}
fn deploy_rt() -> &'static ResourceType {
    lookup("apps", "v1", "deployments").expect("deployments")
}

/// `namespace`, `name`.
type Key = (String, String);

fn rv(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn ts(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second())
        .unwrap_or(0)
}

fn now_str() -> String {
    navarch_api::meta::rfc3339(jiff::Timestamp::now())
}

/// An int-or-percent (`maxSurge`, `maxUnavailable`) against `total`.
fn int_or_percent(v: &Value, default: &str, total: i64, round_up: bool) -> i64 {
    let v = if v.is_null() {
        Value::String(default.into())
    } else {
        v.clone()
    };
    if let Some(n) = v.as_i64() {
        return n.max(0);
    }
    let s = v.as_str().unwrap_or("0");
    match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
        Some(p) if round_up => (p * total + 99) / 100,
        Some(p) => p * total / 100,
        None => s.parse().unwrap_or(0),
    }
}

/// What a sync reads of a Deployment.
#[derive(Clone)]
struct Deploy {
    raw: Value,
    uid: String,
    generation: i64,
    replicas: i64,
    selector: LabelSelector,
    selector_json: Value,
    template: Value,
    paused: bool,
    recreate: bool,
    surge: i64,
    unavailable: i64,
    history_limit: usize,
    deadline: i64,
    deleting: bool,
}

impl Deploy {
    fn from_json(v: &Value) -> Deploy {
        let spec = &v["spec"];
        let replicas = spec["replicas"].as_i64().unwrap_or(1).max(0);
        let selector = LabelSelector::from_label_selector(&spec["selector"])
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(LabelSelector::nothing);
        let recreate = spec["strategy"]["type"] == "Recreate";
        let ru = &spec["strategy"]["rollingUpdate"];
        let (mut surge, mut unavailable) = if recreate {
            (0, 0)
        } else {
            (
                int_or_percent(&ru["maxSurge"], "25%", replicas, true),
                int_or_percent(&ru["maxUnavailable"], "25%", replicas, false),
            )
        };
        // Upstream `ResolveFenceposts`: never both zero.
        if !recreate && surge == 0 && unavailable == 0 {
            unavailable = 1;
        }
        if recreate {
            surge = 0;
        }
        Deploy {
            raw: v.clone(),
            uid: v["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            generation: v["metadata"]["generation"].as_i64().unwrap_or(0),
            replicas,
            selector,
            selector_json: spec["selector"].clone(),
            template: spec["template"].clone(),
            paused: spec["paused"] == true,
            recreate,
            surge,
            unavailable: unavailable.min(replicas),
            history_limit: spec["revisionHistoryLimit"].as_i64().unwrap_or(10).max(0) as usize,
            deadline: spec["progressDeadlineSeconds"].as_i64().unwrap_or(600),
            deleting: v["metadata"]["deletionTimestamp"].is_string(),
        }
    }

    fn status(&self) -> &Value {
        &self.raw["status"]
    }

    fn object_ref(&self, ns: &str, name: &str) -> ObjectRef {
        ObjectRef {
            kind: "Deployment",
            api_version: "apps/v1",
            namespace: ns.to_string(),
            name: name.to_string(),
            uid: self.uid.clone(),
        }
    }
}

/// What a sync reads of a ReplicaSet.
#[derive(Clone)]
struct Set {
    raw: Value,
    name: String,
    uid: String,
    labels: Map<String, Value>,
    /// The controller ownerReference: kind, name, uid.
    controller: Option<(String, String, String)>,
    replicas: i64,
    status_replicas: i64,
    ready: i64,
    available: i64,
    revision: i64,
    created: i64,
    deleting: bool,
}

impl Set {
    fn from_json(v: &Value) -> Set {
        let m = &v["metadata"];
        let controller = m["ownerReferences"].as_array().and_then(|rs| {
            rs.iter().find(|r| r["controller"] == true).map(|r| {
                let s = |f: &str| r[f].as_str().unwrap_or("").to_string();
                (s("kind"), s("name"), s("uid"))
            })
        });
        let st = &v["status"];
        Set {
            raw: v.clone(),
            name: m["name"].as_str().unwrap_or("").to_string(),
            uid: m["uid"].as_str().unwrap_or("").to_string(),
            labels: m["labels"].as_object().cloned().unwrap_or_default(),
            controller,
            replicas: v["spec"]["replicas"].as_i64().unwrap_or(1),
            status_replicas: st["replicas"].as_i64().unwrap_or(0),
            ready: st["readyReplicas"].as_i64().unwrap_or(0),
            available: st["availableReplicas"].as_i64().unwrap_or(0),
            revision: annotation(v, REVISION)
                .and_then(|r| r.parse().ok())
                .unwrap_or(0),
            created: ts(&m["creationTimestamp"]),
            deleting: m["deletionTimestamp"].is_string(),
        }
    }

    fn annotation(&self, k: &str) -> Option<&str> {
        annotation(&self.raw, k)
    }
}

fn annotation<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v["metadata"]["annotations"][k].as_str()
}

struct Controller {
    server: Arc<ApiServer>,
    recorder: Recorder,
    deployments: HashMap<Key, Deploy>,
    /// ReplicaSets by key.
    sets: HashMap<Key, Set>,
    set_by_uid: HashMap<String, Key>,
    /// Pods by `namespace/name`: the uid of their controlling ReplicaSet,
    /// when they count as running for Recreate (not Succeeded or Failed).
    pods: HashMap<String, Option<String>>,
    /// Per ReplicaSet uid, its pods that are not Succeeded or Failed
    /// (terminating ones included).
    live_pods: HashMap<String, usize>,
    queue: WorkQueue<Key>,
    /// Failed syncs in a row, per Deployment (for the retry backoff).
    backoff: Backoff<Key>,
    synced: HashSet<&'static str>,
}

/// How a sync ends: the deployment's Progressing condition change it asks
/// for (creating a new ReplicaSet, finding one).
type Note = Option<(&'static str, String)>;

impl Controller {
    async fn run(mut self, mut informers: mpsc::Receiver<Batch>) {
        loop {
            while let Ok(b) = informers.try_recv() {
                self.apply(b);
            }
            let ready = ["Pod", "ReplicaSet", "Deployment"]
                .iter()
                .all(|k| self.synced.contains(k));
            if ready {
                if let Some(key) = self.queue.pop() {
                    match self.sync(&key).await {
                        Ok(()) => {
                            self.backoff.forget(&key);
                        }
                        Err(e) => {
                            // Requeued rate-limited.
                            tracing::debug!(deployment = %key.1, error = %e, "deployment sync failed");
                            let delay = self.backoff.fail(key.clone());
                            self.enqueue_after(key, delay);
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

    fn enqueue(&mut self, key: Key) {
        self.queue.add(key);
    }

    fn enqueue_after(&mut self, key: Key, after: Duration) {
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
        let key = (o.namespace.clone(), o.name.clone());
        match kind {
            "Pod" => {
                let v = o.shared_value();
                let terminal =
                    matches!(v["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
                let owner = v["metadata"]["ownerReferences"].as_array().and_then(|rs| {
                    rs.iter()
                        .find(|r| r["controller"] == true && r["kind"] == "ReplicaSet")
                        .and_then(|r| r["uid"].as_str().map(str::to_string))
                });
                let counted = owner.filter(|_| !terminal);
                let pk = format!("{}/{}", o.namespace, o.name);
                let old = self.pods.insert(pk, counted.clone());
                if old.as_ref() != Some(&counted) {
                    if let Some(Some(u)) = old {
                        self.pod_gone(&u);
                    }
                    if let Some(u) = counted {
                        *self.live_pods.entry(u).or_default() += 1;
                    }
                }
            }
            "ReplicaSet" => {
                let set = Set::from_json(&o.shared_value());
                self.put_set(key, set);
            }
            "Deployment" => {
                let v = o.shared_value();
                if self
                    .deployments
                    .get(&key)
                    .is_some_and(|d| rv(&d.raw) > rv(&v))
                {
                    return;
                }
                self.deployments.insert(key.clone(), Deploy::from_json(&v));
                self.enqueue(key);
            }
            _ => {}
        }
    }

    fn pod_gone(&mut self, rs_uid: &str) {
        if let Some(n) = self.live_pods.get_mut(rs_uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.live_pods.remove(rs_uid);
                // Recreate waits for this.
                if let Some(k) = self.set_by_uid.get(rs_uid).cloned() {
                    for d in self.interested(&k) {
                        self.enqueue(d);
                    }
                }
            }
        }
    }

    /// Stores a ReplicaSet unless the local copy is newer, and queues the
    /// Deployments it concerns.
    fn put_set(&mut self, key: Key, set: Set) {
        if let Some(old) = self.sets.get(&key) {
            if old.uid == set.uid && rv(&old.raw) > rv(&set.raw) {
                return;
            }
        }
        let before = self.interested(&key);
        self.set_by_uid.insert(set.uid.clone(), key.clone());
        if let Some(old) = self.sets.insert(key.clone(), set) {
            if old.uid != self.sets[&key].uid {
                self.set_by_uid.remove(&old.uid);
            }
        }
        let mut ds = self.interested(&key);
        ds.extend(before);
        for d in ds {
            self.enqueue(d);
        }
    }

    fn delete(&mut self, kind: &str, o: &Arc<CachedObject>) {
        let key = (o.namespace.clone(), o.name.clone());
        match kind {
            "Pod" => {
                let pk = format!("{}/{}", o.namespace, o.name);
                if let Some(Some(u)) = self.pods.remove(&pk) {
                    self.pod_gone(&u);
                }
            }
            "ReplicaSet" => {
                let ds = self.interested(&key);
                if let Some(s) = self.sets.remove(&key) {
                    self.set_by_uid.remove(&s.uid);
                }
                for d in ds {
                    self.enqueue(d);
                }
            }
            "Deployment" => {
                self.deployments.remove(&key);
                self.backoff.forget(&key);
            }
            _ => {}
        }
    }

    /// The Deployments a ReplicaSet concerns: its controller, or, for an
    /// orphan, those in its namespace whose selector matches it.
    fn interested(&self, key: &Key) -> Vec<Key> {
        let Some(s) = self.sets.get(key) else {
            return Vec::new();
        };
        match &s.controller {
            Some((k, n, _)) if k == "Deployment" => vec![(key.0.clone(), n.clone())],
            Some(_) => Vec::new(),
            None => self
                .deployments
                .iter()
                .filter(|((ns, _), d)| *ns == key.0 && d.selector.matches(Some(&s.labels)))
                .map(|(k, _)| k.clone())
                .collect(),
        }
    }

    // ----- sync --------------------------------------------------------------

    async fn sync(&mut self, key: &Key) -> Result<(), navarch_api::ApiError> {
        let Some(d) = self.deployments.get(key).cloned() else {
            return Ok(());
        };
        let (ns, name) = key;
        if d.selector.is_empty() || d.selector_json.is_null() {
            return Ok(());
        }
        // Claim.
        let mut claims = Vec::new();
        for (k, s) in &self.sets {
            if k.0 != *ns {
                continue;
            }
            let matches = d.selector.matches(Some(&s.labels));
            let refs = s.raw["metadata"]["ownerReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            match &s.controller {
                Some((kind, n, u)) if kind == "Deployment" && n == name && *u == d.uid => {
                    if !matches && !d.deleting {
                        let refs: Vec<Value> = refs
                            .into_iter()
                            .filter(|r| r["uid"] != d.uid.as_str())
                            .collect();
                        claims.push((s.name.clone(), s.uid.clone(), refs));
                    }
                }
                Some(_) => {}
                None => {
                    if matches && !d.deleting && !s.deleting {
                        let mut refs = refs;
                        refs.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                            "name": name, "uid": d.uid, "controller": true,
                            "blockOwnerDeletion": true}));
                        claims.push((s.name.clone(), s.uid.clone(), refs));
                    }
                }
            }
        }
        for (rs, uid, refs) in claims {
            let patch = json!({"metadata": {"ownerReferences": refs, "uid": uid}});
            let w = self.patch_rs(ns, &rs, patch).await?;
            self.put_set((ns.clone(), rs), Set::from_json(&w));
        }
        let mut owned: Vec<Set> = self
            .sets
            .iter()
            .filter(|(k, s)| {
                k.0 == *ns
                    && s.controller
                        .as_ref()
                        .is_some_and(|(kd, n, u)| kd == "Deployment" && n == name && *u == d.uid)
            })
            .map(|(_, s)| s.clone())
            .collect();
        owned.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        if d.deleting {
            return self.write_status(key, &d, &owned, None, None).await;
        }
        let new_idx = owned
            .iter()
            .position(|s| equal_ignore_hash(&s.raw["spec"]["template"], &d.template));
        let mut new = new_idx.map(|i| owned.remove(i));
        let mut olds = owned;
        let mut note: Note = None;
        // Paused conditions are written first (upstream
        // `checkPausedConditions`).
        let scaling = self.is_scaling_event(&d, new.as_ref(), &olds);
        if d.paused || scaling {
            if let Some(n) = &mut new {
                self.sync_revision(key, &d, n, &olds).await?;
            }
            self.scale(key, &d, &mut new, &mut olds).await?;
            if d.paused {
                self.cleanup(key, &d, &olds).await?;
            }
            return self
                .write_status(key, &d, &all(&new, &olds), new.as_ref(), None)
                .await;
        }
        if d.recreate {
            let mut scaled = false;
            for o in olds.iter_mut() {
                if o.replicas > 0 {
                    self.scale_rs(key, &d, o, 0).await?;
                    scaled = true;
                }
            }
            let running = olds
                .iter()
                .any(|o| self.live_pods.get(&o.uid).copied().unwrap_or(0) > 0);
            if scaled || running {
                return self
                    .write_status(key, &d, &all(&new, &olds), new.as_ref(), None)
                    .await;
            }
        }
        match &mut new {
            Some(n) => {
                self.sync_revision(key, &d, n, &olds).await?;
                if d.status()["conditions"]
                    .as_array()
                    .is_none_or(|cs| !cs.iter().any(|c| c["type"] == "Progressing"))
                {
                    note = Some((
                        "FoundNewReplicaSet",
                        format!("Found new replica set \"{}\"", n.name),
                    ));
                }
            }
            None => {
                let count = if d.recreate {
                    d.replicas
                } else {
                    let total: i64 = olds.iter().map(|s| s.replicas).sum();
                    (d.replicas + d.surge - total).clamp(0, d.replicas)
                };
                match self.create_new(key, &d, &olds, count).await? {
                    Some(s) => {
                        note = Some((
                            "NewReplicaSetCreated",
                            format!("Created new replica set \"{}\"", s.name),
                        ));
                        new = Some(s);
                    }
                    None => return Ok(()),
                }
            }
        }
        let mut n = new.expect("new replica set");
        if d.recreate {
            if n.replicas != d.replicas {
                self.scale_rs(key, &d, &mut n, d.replicas).await?;
            }
        } else if !self.rolling(key, &d, &mut n, &mut olds).await? && complete(&d, &n, &olds) {
            self.cleanup(key, &d, &olds).await?;
        }
        if d.recreate && complete(&d, &n, &olds) {
            self.cleanup(key, &d, &olds).await?;
        }
        let new = Some(n);
        self.write_status(key, &d, &all(&new, &olds), new.as_ref(), note)
            .await
    }

    /// Upstream `isScalingEvent`: an active ReplicaSet's desired-replicas
    /// annotation differs from `spec.replicas`.
    fn is_scaling_event(&self, d: &Deploy, new: Option<&Set>, olds: &[Set]) -> bool {
        new.into_iter()
            .chain(olds.iter())
            .filter(|s| s.replicas > 0)
            .any(|s| {
                s.annotation(DESIRED)
                    .and_then(|a| a.parse::<i64>().ok())
                    .is_some_and(|a| a != d.replicas)
            })
    }

    /// One step of a rolling update; whether anything was scaled.
    async fn rolling(
        &mut self,
        key: &Key,
        d: &Deploy,
        new: &mut Set,
        olds: &mut [Set],
    ) -> Result<bool, navarch_api::ApiError> {
        // reconcileNewReplicaSet
        if new.replicas > d.replicas {
            self.scale_rs(key, d, new, d.replicas).await?;
            return Ok(true);
        }
        if new.replicas < d.replicas {
            let current: i64 = new.replicas + olds.iter().map(|s| s.replicas).sum::<i64>();
            let up = (d.replicas + d.surge - current).min(d.replicas - new.replicas);
            if up > 0 {
                let to = new.replicas + up;
                self.scale_rs(key, d, new, to).await?;
                return Ok(true);
            }
        }
        // reconcileOldReplicaSets
        let old_count: i64 = olds.iter().map(|s| s.replicas).sum();
        if old_count == 0 {
            return Ok(false);
        }
        let all_count = old_count + new.replicas;
        let min_available = d.replicas - d.unavailable;
        let new_unavailable = (new.replicas - new.available).max(0);
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        // Unhealthy old replicas first (upstream `cleanupUnhealthyReplicas`).
        olds.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        let mut cleaned = 0;
        for o in olds.iter_mut() {
            if cleaned >= max_scaled_down {
                break;
            }
            if o.replicas == 0 {
                continue;
            }
            let unhealthy = o.replicas - o.available;
            if unhealthy <= 0 {
                continue;
            }
            let n = unhealthy.min(max_scaled_down - cleaned);
            let to = o.replicas - n;
            self.scale_rs(key, d, o, to).await?;
            cleaned += n;
        }
        // Then as availability allows (`scaleDownOldReplicaSetsForRollingUpdate`).
        // A ReplicaSet's status may still count pods it was just told to
        // delete: never more available than it wants.
        let available: i64 = new.available.min(new.replicas)
            + olds
                .iter()
                .map(|s| s.available.min(s.replicas))
                .sum::<i64>();
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for o in olds.iter_mut() {
                if scaled >= total {
                    break;
                }
                if o.replicas == 0 {
                    continue;
                }
                let n = o.replicas.min(total - scaled);
                let to = o.replicas - n;
                self.scale_rs(key, d, o, to).await?;
                scaled += n;
            }
        }
        Ok(cleaned + scaled > 0)
    }

    /// Upstream `scale`, simplified (see the module's docs).
    async fn scale(
        &mut self,
        key: &Key,
        d: &Deploy,
        new: &mut Option<Set>,
        olds: &mut [Set],
    ) -> Result<(), navarch_api::ApiError> {
        let active = new
            .iter()
            .chain(olds.iter())
            .filter(|s| s.replicas > 0)
            .count();
        if active <= 1 {
            // The active one, else the latest.
            let target = if let Some(n) = new.as_mut().filter(|n| n.replicas > 0 || active == 0) {
                Some(n)
            } else if let Some(o) = olds.iter_mut().find(|o| o.replicas > 0) {
                Some(o)
            } else {
                olds.iter_mut().max_by_key(|o| (o.created, o.name.clone()))
            };
            if let Some(t) = target {
                self.scale_rs(key, d, t, d.replicas).await?;
            }
            return Ok(());
        }
        if let Some(n) = new.as_mut() {
            if n.replicas == d.replicas && n.available == d.replicas {
                for o in olds.iter_mut() {
                    if o.replicas > 0 {
                        self.scale_rs(key, d, o, 0).await?;
                    }
                }
                return Ok(());
            }
        }
        if d.recreate {
            return Ok(());
        }
        let mut sets: Vec<&mut Set> = new
            .iter_mut()
            .chain(olds.iter_mut())
            .filter(|s| s.replicas > 0)
            .collect();
        let total: i64 = sets.iter().map(|s| s.replicas).sum();
        let allowed = d.replicas + d.surge;
        let to_add = allowed - total;
        // Upstream: largest first; newer first when adding, older first
        // when removing.
        if to_add > 0 {
            sets.sort_by_key(|s| std::cmp::Reverse((s.replicas, s.created)));
        } else {
            sets.sort_by_key(|s| (std::cmp::Reverse(s.replicas), s.created));
        }
        let status_replicas = d.status()["replicas"].as_i64().unwrap_or(0);
        let mut targets: Vec<i64> = Vec::with_capacity(sets.len());
        let mut added = 0;
        for s in &sets {
            let p = proportion(s, d.replicas, allowed, status_replicas, to_add, added);
            targets.push(s.replicas + p);
            added += p;
        }
        // The leftover to the largest.
        if to_add != 0 {
            targets[0] = (targets[0] + to_add - added).max(0);
        }
        for (s, t) in sets.into_iter().zip(targets) {
            self.scale_rs(key, d, s, t.max(0)).await?;
        }
        Ok(())
    }

    /// Sets `replicas` (and the replica annotations) of a ReplicaSet when
    /// either differs, with a `ScalingReplicaSet` event when the size does.
    async fn scale_rs(
        &mut self,
        key: &Key,
        d: &Deploy,
        s: &mut Set,
        to: i64,
    ) -> Result<(), navarch_api::ApiError> {
        let desired = d.replicas.to_string();
        let max = (d.replicas + d.surge).to_string();
        if s.replicas == to
            && s.annotation(DESIRED) == Some(desired.as_str())
            && s.annotation(MAX) == Some(max.as_str())
        {
            return Ok(());
        }
        let patch = json!({"metadata": {"uid": s.uid, "annotations": {DESIRED: desired, MAX: max}},
            "spec": {"replicas": to}});
        let w = self.patch_rs(&key.0, &s.name, patch).await?;
        let from = s.replicas;
        *s = Set::from_json(&w);
        self.put_set((key.0.clone(), s.name.clone()), s.clone());
        if from != to {
            let dir = if to > from { "up" } else { "down" };
            self.recorder.normal(
                &d.object_ref(&key.0, &key.1),
                "ScalingReplicaSet",
                format!("Scaled {dir} replica set {} to {to} from {from}", s.name),
            );
        }
        Ok(())
    }

    async fn patch_rs(
        &self,
        ns: &str,
        name: &str,
        patch: Value,
    ) -> Result<Value, navarch_api::ApiError> {
        Ok(self
            .server
            .patch(
                rs_rt(),
                Some(ns),
                name,
                None,
                PatchType::Merge,
                patch,
                &write_options(),
            )
            .await?
            .object)
    }

    /// Upstream `SetNewReplicaSetAnnotations` on an existing new
    /// ReplicaSet (revision, copied annotations), and the Deployment's
    /// revision annotation.
    async fn sync_revision(
        &mut self,
        key: &Key,
        d: &Deploy,
        n: &mut Set,
        olds: &[Set],
    ) -> Result<(), navarch_api::ApiError> {
        let next = olds.iter().map(|s| s.revision).max().unwrap_or(0) + 1;
        let mut want = copied_annotations(d);
        if n.revision < next {
            want.insert(REVISION.into(), Value::String(next.to_string()));
            // A ReplicaSet brought back (a rollback) keeps its earlier
            // revisions in the history annotation.
            if let Some(old) = n.annotation(REVISION).filter(|r| !r.is_empty()) {
                if let Some(h) = revision_history(n.annotation(REVISION_HISTORY), old) {
                    want.insert(REVISION_HISTORY.into(), Value::String(h));
                }
            }
        }
        let differs = want
            .iter()
            .any(|(k, v)| n.raw["metadata"]["annotations"][k.as_str()] != *v);
        if differs {
            let patch = json!({"metadata": {"uid": n.uid, "annotations": want}});
            let w = self.patch_rs(&key.0, &n.name, patch).await?;
            *n = Set::from_json(&w);
            self.put_set((key.0.clone(), n.name.clone()), n.clone());
        }
        self.set_deployment_revision(key, d, n.revision).await
    }

    async fn set_deployment_revision(
        &mut self,
        key: &Key,
        d: &Deploy,
        revision: i64,
    ) -> Result<(), navarch_api::ApiError> {
        let r = revision.to_string();
        if annotation(&d.raw, REVISION) == Some(r.as_str()) {
            return Ok(());
        }
        let w = self
            .server
            .patch(
                deploy_rt(),
                Some(&key.0),
                &key.1,
                None,
                PatchType::Merge,
                json!({"metadata": {"uid": d.uid, "annotations": {REVISION: r}}}),
                &write_options(),
            )
            .await?;
        self.store_deployment(key, &w.object);
        Ok(())
    }

    fn store_deployment(&mut self, key: &Key, v: &Value) {
        if self
            .deployments
            .get(key)
            .is_none_or(|d| rv(&d.raw) <= rv(v))
        {
            self.deployments.insert(key.clone(), Deploy::from_json(v));
        }
    }

    /// Creates the new ReplicaSet; `None` after a hash collision (the
    /// Deployment's `collisionCount` was bumped and it syncs again).
    async fn create_new(
        &mut self,
        key: &Key,
        d: &Deploy,
        olds: &[Set],
        replicas: i64,
    ) -> Result<Option<Set>, navarch_api::ApiError> {
        let (ns, name) = key;
        let collisions = d.status()["collisionCount"].as_i64();
        let hash = template_hash(&d.template, collisions);
        let rs_name = format!("{name}-{hash}");
        let revision = olds.iter().map(|s| s.revision).max().unwrap_or(0) + 1;
        let mut template = d.template.clone();
        template["metadata"]["labels"][HASH_LABEL] = Value::String(hash.clone());
        let mut selector = d.selector_json.clone();
        selector["matchLabels"][HASH_LABEL] = Value::String(hash.clone());
        let mut annotations = copied_annotations(d);
        annotations.insert(REVISION.into(), revision.to_string().into());
        annotations.insert(DESIRED.into(), d.replicas.to_string().into());
        annotations.insert(MAX.into(), (d.replicas + d.surge).to_string().into());
        let mut spec = json!({"replicas": replicas, "selector": selector, "template": template});
        if let Some(m) = d.raw["spec"]["minReadySeconds"].as_i64() {
            spec["minReadySeconds"] = m.into();
        }
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": rs_name, "namespace": ns,
                "labels": template["metadata"]["labels"], "annotations": annotations,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                    "name": name, "uid": d.uid, "controller": true,
                    "blockOwnerDeletion": true}]},
            "spec": spec});
        let created = match self
            .server
            .create(rs_rt(), Some(ns), rs, &write_options())
            .await
        {
            Ok(w) => w.object,
            Err(e) if e.code == 409 => {
                let (existing, _) = self.server.read(rs_rt(), Some(ns), &rs_name).await?;
                let s = Set::from_json(&existing);
                let ours = s.controller.as_ref().is_some_and(|(_, _, u)| *u == d.uid);
                if ours && equal_ignore_hash(&existing["spec"]["template"], &d.template) {
                    self.put_set((ns.clone(), rs_name), s.clone());
                    return Ok(Some(s));
                }
                // A hash collision: another template under this name.
                let mut status = d.status().clone();
                if !status.is_object() {
                    status = json!({});
                }
                status["collisionCount"] = (collisions.unwrap_or(0) + 1).into();
                self.patch_status(key, json!({"collisionCount": status["collisionCount"]}))
                    .await?;
                self.enqueue(key.clone());
                return Ok(None);
            }
            Err(e) => {
                // Upstream: a Warning event and Progressing=False, until a
                // sync creates it.
                let msg = format!(
                    "Failed to create new replica set \"{rs_name}\": {}",
                    e.message
                );
                self.recorder
                    .warning(&d.object_ref(ns, name), RS_CREATE_ERROR, msg.clone());
                let mut conditions = d.status()["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                set_condition(
                    &mut conditions,
                    "Progressing",
                    "False",
                    RS_CREATE_ERROR,
                    &msg,
                    &now_str(),
                );
                if let Err(se) = self
                    .patch_status(key, json!({ "conditions": conditions }))
                    .await
                {
                    tracing::debug!(error = %se, "recording a ReplicaSet create error failed");
                }
                return Err(e);
            }
        };
        let s = Set::from_json(&created);
        self.put_set((ns.clone(), s.name.clone()), s.clone());
        if replicas > 0 {
            self.recorder.normal(
                &d.object_ref(ns, name),
                "ScalingReplicaSet",
                format!("Scaled up replica set {} to {replicas}", s.name),
            );
        }
        self.set_deployment_revision(key, d, revision).await?;
        Ok(Some(s))
    }

    /// Upstream `cleanupDeployment`: old ReplicaSets beyond
    /// `revisionHistoryLimit`, lowest revision first, only those with no
    /// replicas.
    async fn cleanup(
        &mut self,
        key: &Key,
        d: &Deploy,
        olds: &[Set],
    ) -> Result<(), navarch_api::ApiError> {
        let mut alive: Vec<&Set> = olds.iter().filter(|s| !s.deleting).collect();
        if alive.len() <= d.history_limit {
            return Ok(());
        }
        let excess = alive.len() - d.history_limit;
        alive.sort_by_key(|s| (s.revision, s.created));
        for s in alive.into_iter().take(excess) {
            let observed = s.raw["status"]["observedGeneration"].as_i64().unwrap_or(0);
            let generation = s.raw["metadata"]["generation"].as_i64().unwrap_or(0);
            if s.status_replicas != 0 || s.replicas != 0 || generation > observed {
                continue;
            }
            let del = DeleteOptions {
                precondition_uid: Some(s.uid.clone()),
                ..Default::default()
            };
            match self
                .server
                .delete(rs_rt(), Some(&key.0), &s.name, &del)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn patch_status(
        &mut self,
        key: &Key,
        status: Value,
    ) -> Result<(), navarch_api::ApiError> {
        let w = self
            .server
            .patch(
                deploy_rt(),
                Some(&key.0),
                &key.1,
                Some(Subresource::Status),
                PatchType::Merge,
                json!({ "status": status }),
                &write_options(),
            )
            .await?;
        self.store_deployment(key, &w.object);
        Ok(())
    }

    /// Upstream `syncRolloutStatus` (and `checkPausedConditions`): the
    /// status from the ReplicaSets, written when it differs.
    async fn write_status(
        &mut self,
        key: &Key,
        d: &Deploy,
        sets: &[Set],
        new: Option<&Set>,
        note: Note,
    ) -> Result<(), navarch_api::ApiError> {
        let old = d.status();
        let replicas: i64 = sets.iter().map(|s| s.status_replicas).sum();
        let updated = new.map_or(0, |n| n.status_replicas);
        let ready: i64 = sets.iter().map(|s| s.ready).sum();
        let available: i64 = sets.iter().map(|s| s.available).sum();
        let mut conditions: Vec<Value> = old["conditions"].as_array().cloned().unwrap_or_default();
        let now = now_str();
        let (a_status, a_reason, a_msg) = if available >= d.replicas - d.unavailable {
            (
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        } else {
            (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        };
        set_condition(
            &mut conditions,
            "Available",
            a_status,
            a_reason,
            a_msg,
            &now,
        );
        let current = conditions
            .iter()
            .find(|c| c["type"] == "Progressing")
            .cloned();
        let cur_reason = current
            .as_ref()
            .and_then(|c| c["reason"].as_str())
            .unwrap_or("");
        let mut recheck = None;
        if d.paused && cur_reason != "DeploymentPaused" {
            set_condition(
                &mut conditions,
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused",
                &now,
            );
        } else if !d.paused && cur_reason == "DeploymentPaused" {
            set_condition(
                &mut conditions,
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed",
                &now,
            );
        } else if !d.paused {
            if let Some((reason, msg)) = &note {
                set_condition(&mut conditions, "Progressing", "True", reason, msg, &now);
            }
            let new_name = new.map(|n| n.name.as_str()).unwrap_or("");
            let already_complete = replicas == updated && cur_reason == "NewReplicaSetAvailable";
            let is_complete =
                updated == d.replicas && replicas == d.replicas && available == d.replicas;
            let num = |f: &str| old[f].as_i64().unwrap_or(0);
            let progressing = updated > num("updatedReplicas")
                || replicas - updated < num("replicas") - num("updatedReplicas")
                || ready > num("readyReplicas")
                || available > num("availableReplicas");
            if !already_complete && new.is_some() {
                if is_complete {
                    set_condition(
                        &mut conditions,
                        "Progressing",
                        "True",
                        "NewReplicaSetAvailable",
                        &format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                        &now,
                    );
                } else if progressing {
                    force_condition(
                        &mut conditions,
                        "Progressing",
                        "True",
                        "ReplicaSetUpdated",
                        &format!("ReplicaSet \"{new_name}\" is progressing."),
                        &now,
                    );
                } else if let Some(c) = conditions
                    .iter()
                    .find(|c| c["type"] == "Progressing")
                    .cloned()
                {
                    let reason = c["reason"].as_str().unwrap_or("");
                    if reason != "NewReplicaSetAvailable" && reason != "ProgressDeadlineExceeded" {
                        let left = ts(&c["lastUpdateTime"]) + d.deadline
                            - jiff::Timestamp::now().as_second();
                        if left < 0 {
                            set_condition(
                                &mut conditions,
                                "Progressing",
                                "False",
                                "ProgressDeadlineExceeded",
                                &format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                                &now,
                            );
                        } else {
                            recheck = Some(left + 1);
                        }
                    }
                }
            }
        }
        // Upstream `getReplicaFailures`: the new ReplicaSet's
        // ReplicaFailure condition, else an old one's, mirrored.
        let failure = new.into_iter().chain(sets.iter()).find_map(|s| {
            s.raw["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "ReplicaFailure")
                .cloned()
        });
        match failure {
            Some(f) => set_condition(
                &mut conditions,
                "ReplicaFailure",
                f["status"].as_str().unwrap_or("True"),
                f["reason"].as_str().unwrap_or(""),
                f["message"].as_str().unwrap_or(""),
                &now,
            ),
            None => conditions.retain(|c| c["type"] != "ReplicaFailure"),
        }
        if let Some(left) = recheck {
            self.enqueue_after(key.clone(), Duration::from_secs(left as u64));
        }
        let mut want = json!({
            "observedGeneration": d.generation,
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": (d.replicas - available).max(0),
            "conditions": conditions,
        });
        if let Some(c) = old["collisionCount"].as_i64() {
            want["collisionCount"] = c.into();
        }
        let same =
            want.as_object().unwrap().iter().all(|(k, v)| {
                old[k.as_str()] == *v || (old[k.as_str()].is_null() && *v == json!(0))
            });
        if same {
            return Ok(());
        }
        match self.patch_status(key, want).await {
            Err(e) if e.code == 404 => Ok(()),
            r => r,
        }
    }
}

/// Upstream `GetProportion`: what a ReplicaSet gets of a scaling event
/// (`to_add` in all, `added` given so far), by its share of the size it
/// was last scaled for (its `max-replicas` annotation, else the
/// Deployment's `status.replicas`).
fn proportion(
    s: &Set,
    replicas: i64,
    allowed: i64,
    status_replicas: i64,
    to_add: i64,
    added: i64,
) -> i64 {
    if s.replicas == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if replicas == 0 {
        -s.replicas
    } else {
        let annotated = s
            .annotation(MAX)
            .and_then(|m| m.parse::<i64>().ok())
            .unwrap_or(status_replicas);
        if annotated <= 0 {
            0
        } else {
            (s.replicas as f64 * allowed as f64 / annotated as f64).round() as i64 - s.replicas
        }
    };
    let left = to_add - added;
    if to_add > 0 {
        fraction.min(left)
    } else {
        fraction.max(left)
    }
}

/// Upstream's revision-history annotation with `old` appended, the
/// oldest entries dropped to keep it within 2,000 characters; `None` when
/// even `old` alone does not fit.
fn revision_history(current: Option<&str>, old: &str) -> Option<String> {
    let entries: Vec<&str> = current
        .filter(|c| !c.is_empty())
        .map(|c| c.split(',').collect())
        .unwrap_or_default();
    let mut len = current.map_or(0, str::len) + old.len() + usize::from(!entries.is_empty());
    let mut start = 0;
    while len > REVISION_HISTORY_CHARS && start < entries.len() {
        len -= entries[start].len() + 1;
        start += 1;
    }
    if len > REVISION_HISTORY_CHARS {
        return None;
    }
    let mut kept = entries[start..].to_vec();
    kept.push(old);
    Some(kept.join(","))
}

fn all(new: &Option<Set>, olds: &[Set]) -> Vec<Set> {
    new.iter().chain(olds.iter()).cloned().collect()
}

/// Upstream `DeploymentComplete` from the ReplicaSets' view: the new one
/// holds every replica, all available, and no old one has any.
fn complete(d: &Deploy, new: &Set, olds: &[Set]) -> bool {
    new.replicas == d.replicas
        && new.available == d.replicas
        && olds
            .iter()
            .all(|s| s.replicas == 0 && s.status_replicas == 0)
}

/// Upstream `SetDeploymentCondition`: same status and reason keep the
/// condition as it is; same status keeps `lastTransitionTime`.
fn set_condition(cs: &mut Vec<Value>, ty: &str, status: &str, reason: &str, msg: &str, now: &str) {
    if let Some(c) = cs.iter().find(|c| c["type"] == ty) {
        if c["status"] == status && c["reason"] == reason {
            return;
        }
    }
    force_condition(cs, ty, status, reason, msg, now);
}

/// Sets a condition, refreshing `lastUpdateTime`.
fn force_condition(
    cs: &mut Vec<Value>,
    ty: &str,
    status: &str,
    reason: &str,
    msg: &str,
    now: &str,
) {
    let transition = cs
        .iter()
        .find(|c| c["type"] == ty && c["status"] == status)
        .map(|c| c["lastTransitionTime"].clone())
        .unwrap_or_else(|| Value::String(now.to_string()));
    let c = json!({"type": ty, "status": status, "reason": reason, "message": msg,
        "lastUpdateTime": now, "lastTransitionTime": transition});
    match cs.iter_mut().find(|c| c["type"] == ty) {
        Some(slot) => *slot = c,
        None => cs.push(c),
    }
}

fn copied_annotations(d: &Deploy) -> Map<String, Value> {
    d.raw["metadata"]["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn without_hash(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(l) = t["metadata"]["labels"].as_object_mut() {
        l.remove(HASH_LABEL);
    }
    t
}

/// Upstream `EqualIgnoreHash`.
fn equal_ignore_hash(a: &Value, b: &Value) -> bool {
    without_hash(a) == without_hash(b)
}

/// JSON with object keys sorted, at every level.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        x => out.push_str(&x.to_string()),
    }
}

/// The `pod-template-hash` of a template: FNV-1a 32 of its canonical JSON
/// (without the hash label) and the collision count, its decimal digits
/// mapped to upstream's `SafeEncodeString` alphabet.
pub fn template_hash(template: &Value, collision_count: Option<i64>) -> String {
    let mut s = String::new();
    canonical(&without_hash(template), &mut s);
    if let Some(c) = collision_count {
        s.push_str(&c.to_string());
    }
    let mut h: u32 = 2166136261;
    for b in s.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(16777619);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHABET[b as usize % ALPHABET.len()] as char)
        .collect()
}

fn write_options() -> WriteOptions {
    WriteOptions {
        field_manager: Some(COMPONENT.into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_ignores_key_order_and_hash_label() {
        let a = json!({"metadata": {"labels": {"app": "x", "tier": "y"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let b = json!({"spec": {"containers": [{"image": "i", "name": "c"}]}, "metadata": {"labels": {"tier": "y", "app": "x", HASH_LABEL: "zzz"}}});
        assert_eq!(template_hash(&a, None), template_hash(&b, None));
        assert_ne!(template_hash(&a, None), template_hash(&a, Some(1)));
        let h = template_hash(&a, None);
        assert!(
            h.bytes()
                .all(|c| b"bcdfghjklmnpqrstvwxz2456789".contains(&c)),
            "{h}"
        );
    }

    #[test]
    fn surge_rounds_up_unavailable_down() {
        assert_eq!(int_or_percent(&Value::Null, "25%", 5, true), 2);
        assert_eq!(int_or_percent(&Value::Null, "25%", 5, false), 1);
        assert_eq!(int_or_percent(&json!(3), "25%", 5, false), 3);
        assert_eq!(int_or_percent(&json!("50%"), "25%", 3, false), 1);
    }

    fn set(replicas: i64, max: Option<&str>) -> Set {
        let mut v = json!({"metadata": {"name": "s"}, "spec": {"replicas": replicas}});
        if let Some(m) = max {
            v["metadata"]["annotations"] = json!({ MAX: m });
        }
        Set::from_json(&v)
    }

    /// Upstream's proportional scaling: each active ReplicaSet grows or
    /// shrinks by its share of the size it was scaled for.
    #[test]
    fn scaling_events_are_shared_by_the_max_replicas_annotation() {
        // 10 -> 20 replicas, maxSurge 3: 13 -> 23 in all, sets 8 and 5.
        let (a, b) = (set(8, Some("13")), set(5, Some("13")));
        let pa = proportion(&a, 20, 23, 13, 10, 0);
        let pb = proportion(&b, 20, 23, 13, 10, pa);
        assert_eq!((pa, pb), (6, 4));
        // 10 -> 5: 13 -> 8, older first.
        let pa = proportion(&a, 5, 8, 13, -5, 0);
        let pb = proportion(&b, 5, 8, 13, -5, pa);
        assert_eq!((pa, pb), (-3, -2));
        // Without the annotation, the Deployment's status.replicas (4 *
        // 23 / 8 = 11.5 rounds away from zero, as Go's math.Round).
        assert_eq!(proportion(&set(4, None), 20, 23, 8, 10, 0), 8);
        // Never more than what is left to give; to zero replicas, all.
        assert_eq!(proportion(&a, 20, 23, 13, 10, 8), 2);
        assert_eq!(proportion(&a, 0, 3, 13, -10, 0), -8);
        assert_eq!(proportion(&set(0, Some("13")), 20, 23, 13, 10, 0), 0);
    }

    #[test]
    fn revision_history_appends_and_stays_within_its_limit() {
        assert_eq!(revision_history(None, "1").as_deref(), Some("1"));
        assert_eq!(revision_history(Some(""), "1").as_deref(), Some("1"));
        assert_eq!(revision_history(Some("1,3"), "5").as_deref(), Some("1,3,5"));
        let long = vec!["1234"; 400].join(","); // 1,999 characters
        let h = revision_history(Some(&long), "99").unwrap();
        assert!(h.len() <= 2000, "{}", h.len());
        assert!(h.ends_with(",1234,99"));
        assert_eq!(revision_history(None, &"9".repeat(2001)), None);
    }
}
