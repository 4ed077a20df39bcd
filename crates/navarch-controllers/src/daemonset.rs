//! The DaemonSet controller (apps/v1), as upstream's `daemon` controller:
//! one pod on every node the pod fits.
//!
//! One task owns the local state (DaemonSets, Nodes, pods and
//! ControllerRevisions, from the informers and from its own writes, see
//! [`crate::revision`]) and a work queue of DaemonSet keys; a sync reads
//! the local state and writes through the API server's verbs.
//!
//! * **Which nodes** (upstream `NodeShouldRunDaemonPod`): the template's
//!   `nodeName` (if set), `nodeSelector` and required node affinity must
//!   match the node, and every `NoSchedule`/`NoExecute` taint must be
//!   tolerated, with the tolerations every daemon pod gets:
//!   `node.kubernetes.io/not-ready` and `unreachable` (NoExecute, no
//!   seconds), `disk-pressure`, `memory-pressure`, `pid-pressure`,
//!   `unschedulable` (NoSchedule) and, for `hostNetwork` pods,
//!   `network-unavailable`. A pod already there keeps running unless a
//!   `NoExecute` taint is not tolerated. The predicates are
//!   `navarch-scheduler`'s (`RequiredNodeAffinity`, `Toleration`).
//! * **Pods** are created from the template with those tolerations, the
//!   labels `controller-revision-hash` and `pod-template-generation`, and
//!   the required node affinity replaced by `matchFields metadata.name In
//!   [node]`, so the scheduler binds each to its node; at most 250 per
//!   sync, in slow-start batches. Pods are claimed (adopted, released) by
//!   the selector. A node's pod is found from `spec.nodeName` or, before
//!   binding, that affinity. Extra pods on a node are deleted (the oldest
//!   is kept); pods on nodes that no longer fit are deleted; Failed pods
//!   are deleted (a `FailedDaemonPod` warning) and recreated, with a
//!   per-node backoff (1 s doubling to 15 min) and the sync failing so it
//!   is retried rate-limited, as upstream; unscheduled pods aimed at nodes
//!   that are gone are deleted.
//! * **Revisions**: the current template is held by a ControllerRevision
//!   `<ds>-<hash>` (see [`crate::revision`]); a template seen before gets
//!   its revision renumbered (rollback), a new one the next number. Old
//!   revisions beyond `revisionHistoryLimit` whose hash no pod carries are
//!   deleted, oldest first. A pod is *updated* when its
//!   `controller-revision-hash` is the current revision's, or its
//!   `pod-template-generation` is the DaemonSet's template generation.
//! * **RollingUpdate** (only when the sync made no other change, as
//!   upstream waits for its expectations): with `maxSurge` 0, old pods are
//!   deleted, old unavailable ones first, while at most `maxUnavailable`
//!   (default 1, int or percent of the desired nodes, rounded up) nodes
//!   lack an available updated pod; the next sync creates their
//!   replacements. With `maxSurge`, a new pod is created next to the old
//!   one on up to `maxSurge` nodes, and the old one deleted once the new
//!   one is available. **OnDelete**: pods are replaced only when deleted.
//! * **Status** (upstream `updateDaemonSetStatus`): desiredNumberScheduled,
//!   currentNumberScheduled, numberMisscheduled, numberReady,
//!   numberAvailable (ready for `minReadySeconds`), numberUnavailable,
//!   updatedNumberScheduled, observedGeneration and collisionCount,
//!   through the `status` subresource when it differs; a DaemonSet with
//!   pods not yet available is synced again when they will be.
//! * Events: `SuccessfulCreate`, `SuccessfulDelete`, `FailedCreate`,
//!   `FailedDelete`, `FailedDaemonPod`, `SelectingAll`.
//!
//! The template generation comes from the
//! `deprecated.daemonset.template.generation` annotation upstream's API
//! server maintains; when it is absent (this API server does not set it)
//! `metadata.generation` stands in, which changes with every template
//! change too. Pods left on deleted nodes are not this controller's to
//! delete: the pod garbage collector (`crate::podgc`) does, as upstream's.

use crate::events::{ObjectRef, Recorder};
use crate::informer::{Batch, Change, Informer};
use crate::queue::{Backoff, WorkQueue};
use crate::revision::{
    self, available, claim, controller_of, key as obj_key, labels_of, now, pod_from_template,
    pods_rt, revisions_rt, rv, scaled, ts, until_available, Claim, Local, Owner, Rev, HASH_LABEL,
};
use navarch_api::patch::PatchType;
use navarch_api::registry::lookup;
use navarch_api::selector::LabelSelector;
use navarch_api::{ApiError, ResourceType, Subresource};
use navarch_apiserver::cache::CachedObject;
use navarch_apiserver::{ApiServer, DeleteOptions, WriteOptions};
use navarch_scheduler::{
    Effect, Labels, NodeInfo, PodInfo, RequiredNodeAffinity, Taint, Toleration,
};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const COMPONENT: &str = "daemonset-controller";
/// The deprecated pod label with the DaemonSet's template generation.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
/// Where upstream's API server keeps a DaemonSet's template generation.
pub const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";
/// Upstream's DaemonSet `BurstReplicas`: creates or deletes per sync.
const BURST: usize = 250;
/// Failed-pod backoff per node (upstream `failedPodsBackoff`).
const FAILED_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const FAILED_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);

/// The tolerations every daemon pod gets (upstream
/// `AddOrUpdateDaemonPodTolerations`): key, effect.
const DAEMON_TOLERATIONS: [(&str, &str); 6] = [
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];
const HOST_NETWORK_TOLERATION: (&str, &str) =
    ("node.kubernetes.io/network-unavailable", "NoSchedule");

/// Starts the controller on `server`'s watch cache; it stops with
/// `shutdown`.
pub fn spawn(server: Arc<ApiServer>, shutdown: CancellationToken) {
    let (tx, rx) = mpsc::channel(256);
    for rt in [pods_rt(), nodes_rt(), ds_rt(), revisions_rt()] {
        Informer::start(server.cache.clone(), rt, tx.clone(), shutdown.clone());
    }
    drop(tx);
    let recorder = Recorder::spawn(server.clone(), COMPONENT);
    let c = Controller {
        server,
        recorder,
        dss: HashMap::new(),
        nodes: BTreeMap::new(),
        pods: Local::default(),
        revisions: Local::default(),
        queue: WorkQueue::default(),
        backoff: Backoff::default(),
        failed: HashMap::new(),
        synced: HashSet::new(),
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = c.run(rx) => {}
        }
    });
}

fn nodes_rt() -> &'static ResourceType {
    lookup("", "v1", "nodes").expect("nodes")
}
fn ds_rt() -> &'static ResourceType {
    lookup("apps", "v1", "daemonsets").expect("daemonsets")
}

/// `namespace`, `name`.
type Key = (String, String);

fn write_options() -> WriteOptions {
    WriteOptions {
        field_manager: Some(COMPONENT.into()),
        ..Default::default()
    }
}

/// What a sync reads of a DaemonSet.
#[derive(Clone)]
struct Ds {
    raw: Value,
    uid: String,
    generation: i64,
    selector: LabelSelector,
    template: Value,
    min_ready: i64,
    on_delete: bool,
    history_limit: usize,
    deleting: bool,
}

impl Ds {
    fn from_json(v: &Value) -> Ds {
        let spec = &v["spec"];
        Ds {
            raw: v.clone(),
            uid: v["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            generation: v["metadata"]["generation"].as_i64().unwrap_or(0),
            selector: LabelSelector::from_label_selector(&spec["selector"])
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(LabelSelector::nothing),
            template: spec["template"].clone(),
            min_ready: spec["minReadySeconds"].as_i64().unwrap_or(0),
            on_delete: spec["updateStrategy"]["type"] == "OnDelete",
            history_limit: spec["revisionHistoryLimit"].as_i64().unwrap_or(10).max(0) as usize,
            deleting: v["metadata"]["deletionTimestamp"].is_string(),
        }
    }

    /// Upstream `GetTemplateGeneration` (see the module's docs).
    fn template_generation(&self) -> i64 {
        self.raw["metadata"]["annotations"][TEMPLATE_GENERATION_ANNOTATION]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(self.generation)
    }

    fn rolling(&self) -> &Value {
        &self.raw["spec"]["updateStrategy"]["rollingUpdate"]
    }

    fn object_ref(&self, ns: &str, name: &str) -> ObjectRef {
        ObjectRef {
            kind: "DaemonSet",
            api_version: "apps/v1",
            namespace: ns.to_string(),
            name: name.to_string(),
            uid: self.uid.clone(),
        }
    }

    fn owner<'a>(&'a self, name: &'a str) -> Owner<'a> {
        Owner {
            kind: "DaemonSet",
            name,
            uid: &self.uid,
            selector: &self.selector,
            deleting: self.deleting,
        }
    }
}

/// What the predicates read of a node.
#[derive(PartialEq)]
struct Node {
    labels: Labels,
    taints: Vec<Taint>,
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
    /// `spec.nodeName`, or the node its affinity pins it to.
    node: Option<String>,
    scheduled: bool,
    phase: String,
    deleting: bool,
    ready_since: Option<i64>,
    created: i64,
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
        let node_name = v["spec"]["nodeName"].as_str().filter(|s| !s.is_empty());
        Pod {
            meta: json!({ "metadata": meta }),
            name: m["name"].as_str().unwrap_or("").to_string(),
            uid: m["uid"].as_str().unwrap_or("").to_string(),
            labels: labels_of(v),
            controller: controller_of(v),
            node: node_name
                .map(str::to_string)
                .or_else(|| target_node(&v["spec"])),
            scheduled: node_name.is_some(),
            phase: v["status"]["phase"]
                .as_str()
                .unwrap_or("Pending")
                .to_string(),
            deleting: m["deletionTimestamp"].is_string(),
            ready_since: revision::ready_since(v),
            created: ts(&m["creationTimestamp"]),
        }
    }

    fn terminal(&self) -> bool {
        self.phase == "Succeeded" || self.phase == "Failed"
    }

    fn hash(&self) -> &str {
        self.labels
            .get(HASH_LABEL)
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// Upstream `IsPodUpdated`.
    fn updated(&self, hash: &str, generation: i64) -> bool {
        let gen = generation.to_string();
        (!hash.is_empty() && self.hash() == hash)
            || self
                .labels
                .get(TEMPLATE_GENERATION_LABEL)
                .and_then(Value::as_str)
                == Some(gen.as_str())
    }

    /// Upstream `podByCreationTimestampAndPhase`: scheduled first, then
    /// oldest, then by name.
    fn age_key(&self) -> (bool, i64, String) {
        (!self.scheduled, self.created, self.name.clone())
    }
}

/// Upstream `GetTargetNodeName` for a pod not yet bound: the node of the
/// first `matchFields metadata.name In [node]` of its required terms.
fn target_node(spec: &Value) -> Option<String> {
    let terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"]
        .as_array()?;
    for t in terms {
        for f in t["matchFields"].as_array().into_iter().flatten() {
            if f["key"] == "metadata.name" && f["operator"] == "In" {
                let values = f["values"].as_array()?;
                return match values.as_slice() {
                    [v] => v.as_str().map(str::to_string),
                    _ => None,
                };
            }
        }
    }
    None
}

/// Adds (or replaces) the daemon tolerations in a pod spec (upstream
/// `AddOrUpdateTolerationInPodSpec` for each).
pub fn add_daemon_tolerations(spec: &mut Value) {
    let host_network = spec["hostNetwork"] == true;
    let extra = host_network.then_some(HOST_NETWORK_TOLERATION);
    for (key, effect) in DAEMON_TOLERATIONS.into_iter().chain(extra) {
        let want = json!({"key": key, "operator": "Exists", "effect": effect});
        let mut tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
        let same = |t: &Value| {
            t["key"] == key
                && t["effect"] == effect
                && t["operator"] == "Exists"
                && t["value"].as_str().unwrap_or("").is_empty()
        };
        match tolerations.iter().position(same) {
            Some(i) if tolerations[i] == want => continue,
            Some(i) => tolerations[i] = want,
            None => tolerations.push(want),
        }
        spec["tolerations"] = Value::Array(tolerations);
    }
}

/// Upstream `ReplaceDaemonSetPodNodeNameNodeAffinity`: the required node
/// terms become one `matchFields metadata.name In [node]`.
pub fn pin_to_node(spec: &mut Value, node: &str) {
    let term =
        json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]});
    let required =
        &mut spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    if required.is_object() {
        required["nodeSelectorTerms"] = json!([term]);
    } else {
        *required = json!({ "nodeSelectorTerms": [term] });
    }
}

/// What the template requires of a node, with the daemon tolerations.
struct Requirements {
    node_name: Option<String>,
    affinity: RequiredNodeAffinity,
    tolerations: Vec<Toleration>,
}

impl Requirements {
    fn of(template: &Value) -> Result<Requirements, navarch_scheduler::Error> {
        let mut spec = template["spec"].clone();
        add_daemon_tolerations(&mut spec);
        let pod = json!({"metadata": {"name": "daemon", "namespace": "default",
            "labels": template["metadata"]["labels"]}, "spec": spec});
        let info = PodInfo::from_json(&pod)?;
        Ok(Requirements {
            node_name: template["spec"]["nodeName"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            affinity: info.required_node_affinity.clone(),
            tolerations: info.tolerations.clone(),
        })
    }

    /// Upstream `NodeShouldRunDaemonPod`: (should run, should continue
    /// running).
    fn fit(&self, name: &str, node: &Node) -> (bool, bool) {
        if self.node_name.as_deref().is_some_and(|n| n != name) {
            return (false, false);
        }
        if !self.affinity.matches(name, &node.labels) {
            return (false, false);
        }
        let untolerated = |t: &&Taint| !self.tolerations.iter().any(|tol| tol.tolerates(t));
        let blocks = node
            .taints
            .iter()
            .filter(|t| t.blocks_scheduling())
            .any(|t| untolerated(&t));
        let evicts = node
            .taints
            .iter()
            .filter(|t| t.effect == Effect::NoExecute)
            .any(|t| untolerated(&t));
        (!blocks, !evicts)
    }
}

/// The failed-pod backoff of one (DaemonSet, node).
struct FailedBackoff {
    delay: Duration,
    last: Instant,
}

/// Why a sync is retried.
#[derive(Debug)]
enum Retry {
    Api(ApiError),
    FailedPods(usize),
}

impl std::fmt::Display for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Retry::Api(e) => write!(f, "{}", e.message),
            Retry::FailedPods(n) => write!(f, "deleted {n} failed pods"),
        }
    }
}

impl From<ApiError> for Retry {
    fn from(e: ApiError) -> Retry {
        Retry::Api(e)
    }
}

struct Controller {
    server: Arc<ApiServer>,
    recorder: Recorder,
    dss: HashMap<Key, Ds>,
    /// Nodes by name; `None` for a Node the predicates cannot read.
    nodes: BTreeMap<String, Option<Node>>,
    pods: Local<Pod>,
    revisions: Local<Rev>,
    queue: WorkQueue<Key>,
    backoff: Backoff<Key>,
    failed: HashMap<(Key, String), FailedBackoff>,
    synced: HashSet<&'static str>,
}

/// A DaemonSet's pods on one node (terminal pods being deleted left out).
type NodePods = BTreeMap<String, Vec<Pod>>;

impl Controller {
    async fn run(mut self, mut informers: mpsc::Receiver<Batch>) {
        loop {
            while let Ok(b) = informers.try_recv() {
                self.apply(b);
            }
            let ready = ["Pod", "Node", "DaemonSet", "ControllerRevision"]
                .iter()
                .all(|k| self.synced.contains(k));
            if ready {
                if let Some(key) = self.queue.pop() {
                    match self.sync(&key).await {
                        Ok(()) => self.backoff.forget(&key),
                        Err(e) => {
                            tracing::debug!(daemonset = %key.1, error = %e, "daemonset sync failed");
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
            "Node" => {
                let node = match NodeInfo::from_json(&v) {
                    Ok(n) => Some(Node {
                        labels: n.labels,
                        taints: n.taints,
                    }),
                    Err(e) => {
                        tracing::warn!(node = %o.name, error = %e, "node not readable; no daemon pods there");
                        None
                    }
                };
                if self.nodes.get(&o.name) != Some(&node) {
                    self.nodes.insert(o.name.clone(), node);
                    self.enqueue_all();
                }
            }
            "DaemonSet" => {
                self.put_ds(&v);
            }
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
            "Node" => {
                self.nodes.remove(&o.name);
                self.failed.retain(|(_, n), _| *n != o.name);
                self.enqueue_all();
            }
            "DaemonSet" => {
                let key = (o.namespace.clone(), o.name.clone());
                self.dss.remove(&key);
                self.backoff.forget(&key);
                self.failed.retain(|(k, _), _| *k != key);
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
        for (controller, labels) in self.pods.put_pod(v, "DaemonSet", Pod::from_json) {
            self.enqueue_for(ns, &controller, &labels);
        }
    }

    fn put_ds(&mut self, v: &Value) {
        let ns = v["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
        let key = (ns, name);
        if self.dss.get(&key).is_some_and(|d| rv(&d.raw) > rv(v)) {
            return;
        }
        self.dss.insert(key.clone(), Ds::from_json(v));
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

    fn enqueue_all(&mut self) {
        let keys: Vec<Key> = self.dss.keys().cloned().collect();
        for k in keys {
            self.queue.add(k);
        }
    }

    /// Queues the DaemonSet controlling an object, or, for an orphan, those
    /// in its namespace whose selector matches its labels.
    fn enqueue_for(
        &mut self,
        ns: &str,
        controller: &Option<revision::ControllerRef>,
        labels: &Map<String, Value>,
    ) {
        let keys: Vec<Key> = match controller {
            Some((kind, name, uid)) => {
                let key = (ns.to_string(), name.clone());
                let ours = kind == "DaemonSet" && self.dss.get(&key).is_some_and(|d| d.uid == *uid);
                ours.then_some(key).into_iter().collect()
            }
            None => self
                .dss
                .iter()
                .filter(|((n, _), d)| n == ns && d.selector.matches(Some(labels)))
                .map(|(k, _)| k.clone())
                .collect(),
        };
        for k in keys {
            self.queue.add(k);
        }
    }

    // ----- sync --------------------------------------------------------------

    async fn sync(&mut self, key: &Key) -> Result<(), Retry> {
        let Some(ds) = self.dss.get(key).cloned() else {
            return Ok(());
        };
        let (ns, name) = key;
        if ds.selector.is_empty() || ds.selector.is_nothing() {
            self.recorder.warning(
                &ds.object_ref(ns, name),
                "SelectingAll",
                "This daemon set is selecting all pods. A non-empty selector is required.".into(),
            );
            return Ok(());
        }
        // Upstream returns here too: the status of a DaemonSet being
        // deleted cannot be computed reliably.
        if ds.deleting {
            return Ok(());
        }
        self.claim(key, &ds).await?;
        let (cur, olds) = self.history(key, &ds).await?;
        let ds = self.dss.get(key).cloned().unwrap_or(ds);
        let hash = if cur.hash.is_empty() {
            cur.name.clone()
        } else {
            cur.hash.clone()
        };
        let requirements = match Requirements::of(&ds.template) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(daemonset = %name, error = %e, "template not readable");
                None
            }
        };
        let mut result = Ok(());
        if let Some(req) = &requirements {
            let (wrote, r) = self.manage(key, &ds, req, &hash).await;
            result = r;
            if result.is_ok() && !wrote && !ds.on_delete {
                result = self.rolling_update(key, &ds, req, &hash).await;
            }
        }
        self.cleanup_history(key, &ds, &olds).await?;
        self.write_status(key, &ds, requirements.as_ref(), &hash)
            .await?;
        result
    }

    /// Adopts and releases pods and ControllerRevisions.
    async fn claim(&mut self, key: &Key, ds: &Ds) -> Result<(), ApiError> {
        let (ns, name) = key;
        let owner = ds.owner(name);
        let pod_claims: Vec<(String, Value)> = self
            .pods
            .in_namespace(ns)
            .filter_map(|p| match claim(&owner, &p.meta, true) {
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
                // Changed or gone meanwhile: the informer brings the news.
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

    /// Upstream `constructHistory`: the current revision (found, renumbered
    /// or created) and the old ones.
    async fn history(&mut self, key: &Key, ds: &Ds) -> Result<(Rev, Vec<Rev>), ApiError> {
        let (ns, name) = key;
        let owner = ds.owner(name);
        let data = revision::template_patch(&ds.template);
        let mut owned: Vec<Rev> = self
            .revisions
            .in_namespace(ns)
            .filter(|r| owner.controls(&r.controller))
            .cloned()
            .collect();
        revision::sort_revisions(&mut owned);
        let (mut current, olds): (Vec<Rev>, Vec<Rev>) =
            owned.into_iter().partition(|r| *r.data() == data);
        let next = olds.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
        let opts = write_options();
        // Duplicates of the current template (upstream `dedupCurHistories`
        // keeps the highest revision): the others stay as old history.
        let Some(cur) = current.pop() else {
            let before = ds.raw["status"]["collisionCount"].as_i64().unwrap_or(0);
            let mut collisions = before;
            let r = revision::create_revision(
                &self.server,
                ns,
                &owner,
                &ds.raw,
                next,
                &mut collisions,
                &opts,
            )
            .await;
            if collisions != before {
                self.patch_status(key, json!({ "collisionCount": collisions }))
                    .await?;
            }
            let r = r?;
            self.put_revision(&r.raw);
            let mut olds = olds;
            olds.extend(current);
            return Ok((r, olds));
        };
        let mut olds = olds;
        olds.extend(current);
        if cur.revision < next {
            let r = revision::renumber(&self.server, ns, &cur, next, &opts).await?;
            self.put_revision(&r.raw);
            return Ok((r, olds));
        }
        Ok((cur, olds))
    }

    /// The DaemonSet's claimed pods by node (upstream
    /// `getNodesToDaemonPods`), oldest first.
    fn node_pods(&self, ns: &str, ds: &Ds, name: &str) -> NodePods {
        let owner = ds.owner(name);
        let mut out: NodePods = BTreeMap::new();
        for p in self.pods.in_namespace(ns) {
            if !owner.controls(&p.controller) || !ds.selector.matches(Some(&p.labels)) {
                continue;
            }
            if p.terminal() && p.deleting {
                continue;
            }
            if let Some(n) = &p.node {
                out.entry(n.clone()).or_default().push(p.clone());
            }
        }
        for pods in out.values_mut() {
            pods.sort_by_key(Pod::age_key);
        }
        out
    }

    /// Upstream `manage` and `podsShouldBeOnNode`: creates the missing
    /// pods and deletes the ones that should go. Whether it wrote anything.
    async fn manage(
        &mut self,
        key: &Key,
        ds: &Ds,
        req: &Requirements,
        hash: &str,
    ) -> (bool, Result<(), Retry>) {
        let (ns, name) = key;
        let by_node = self.node_pods(ns, ds, name);
        let surge = !ds.on_delete && max_surge(ds, 1) > 0;
        let now_s = now();
        let mut create_on: Vec<String> = Vec::new();
        let mut delete: Vec<Pod> = Vec::new();
        let mut failed_seen = 0;
        let ds_ref = ds.object_ref(ns, name);
        let nodes: Vec<(String, bool, bool)> = self
            .nodes
            .iter()
            .filter_map(|(n, node)| {
                let (run, keep) = req.fit(n, node.as_ref()?);
                Some((n.clone(), run, keep))
            })
            .collect();
        for (node, should_run, should_continue) in &nodes {
            let pods = by_node.get(node);
            let exists = pods.is_some();
            if *should_run && !exists {
                create_on.push(node.clone());
            } else if *should_continue {
                let mut running: Vec<&Pod> = Vec::new();
                for p in pods.into_iter().flatten() {
                    if p.deleting {
                        continue;
                    }
                    if p.phase == "Failed" {
                        failed_seen += 1;
                        let bk = (key.clone(), node.clone());
                        let t = Instant::now();
                        if let Some(b) = self.failed.get(&bk) {
                            if t.duration_since(b.last) < b.delay {
                                self.queue.add_after(key.clone(), b.delay);
                                continue;
                            }
                        }
                        self.failed_backoff_next(bk, t);
                        self.recorder.warning(
                            &ds_ref,
                            "FailedDaemonPod",
                            format!(
                                "Found failed daemon pod {ns}/{} on node {node}, will try to kill it",
                                p.name
                            ),
                        );
                        delete.push(p.clone());
                    } else if p.phase == "Succeeded" {
                        delete.push(p.clone());
                    } else {
                        running.push(p);
                    }
                }
                if !surge {
                    // One pod per node: the oldest stays.
                    delete.extend(running.iter().skip(1).map(|p| (*p).clone()));
                } else {
                    delete.extend(surge_extras(&running, hash, ds.min_ready, now_s));
                }
            } else if exists {
                delete.extend(pods.into_iter().flatten().filter(|p| !p.deleting).cloned());
            }
        }
        // Unscheduled pods aimed at nodes that are gone.
        for (node, pods) in &by_node {
            if !self.nodes.contains_key(node) {
                delete.extend(pods.iter().filter(|p| !p.scheduled && !p.deleting).cloned());
            }
        }
        let wrote = !create_on.is_empty() || !delete.is_empty();
        let r = self.sync_nodes(key, ds, hash, &create_on, &delete).await;
        let r = match r {
            Err(e) => Err(Retry::Api(e)),
            Ok(()) if failed_seen > 0 => Err(Retry::FailedPods(failed_seen)),
            Ok(()) => Ok(()),
        };
        (wrote, r)
    }

    fn failed_backoff_next(&mut self, k: (Key, String), t: Instant) {
        let e = self.failed.entry(k).or_insert(FailedBackoff {
            delay: Duration::ZERO,
            last: t,
        });
        let expired = t.duration_since(e.last) > 2 * FAILED_BACKOFF_MAX;
        e.delay = if e.delay.is_zero() || expired {
            FAILED_BACKOFF_INITIAL
        } else {
            (e.delay * 2).min(FAILED_BACKOFF_MAX)
        };
        e.last = t;
    }

    /// Upstream `syncNodes`: creates a pod on each node (slow-start
    /// batches) and deletes the pods, at most [`BURST`] of each.
    async fn sync_nodes(
        &mut self,
        key: &Key,
        ds: &Ds,
        hash: &str,
        create_on: &[String],
        delete: &[Pod],
    ) -> Result<(), ApiError> {
        let (ns, name) = key;
        let ds_ref = ds.object_ref(ns, name);
        let mut template = ds.template.clone();
        add_daemon_tolerations(&mut template["spec"]);
        let labels = &mut template["metadata"]["labels"];
        labels[TEMPLATE_GENERATION_LABEL] = json!(ds.template_generation().to_string());
        labels[HASH_LABEL] = json!(hash);
        let base = pod_from_template(&template, ns, &ds.owner(name));
        let mut first_error = None;
        let creates = &create_on[..create_on.len().min(BURST)];
        let mut pos = 0;
        let mut batch = 1;
        while pos < creates.len() {
            let n = batch.min(creates.len() - pos);
            let mut set = tokio::task::JoinSet::new();
            for node in &creates[pos..pos + n] {
                let mut pod = base.clone();
                pin_to_node(&mut pod["spec"], node);
                let (server, ns) = (self.server.clone(), ns.clone());
                set.spawn(async move {
                    server
                        .create(pods_rt(), Some(&ns), pod, &write_options())
                        .await
                });
            }
            let mut failed = false;
            while let Some(r) = set.join_next().await {
                match r {
                    Ok(Ok(w)) => {
                        let pod = w.object["metadata"]["name"].as_str().unwrap_or("");
                        self.recorder.normal(
                            &ds_ref,
                            "SuccessfulCreate",
                            format!("Created pod: {pod}"),
                        );
                        self.put_pod(&w.object);
                    }
                    Ok(Err(e)) if e.code == 403 && e.message.contains("is being terminated") => {
                        failed = true;
                    }
                    Ok(Err(e)) => {
                        self.recorder.warning(
                            &ds_ref,
                            "FailedCreate",
                            format!("Error creating: {}", e.message),
                        );
                        failed = true;
                        first_error.get_or_insert(e);
                    }
                    Err(_) => failed = true,
                }
            }
            pos += n;
            if failed {
                break;
            }
            batch *= 2;
        }
        let mut set = tokio::task::JoinSet::new();
        for p in delete.iter().take(BURST) {
            let (server, ns, pod, uid) = (
                self.server.clone(),
                ns.clone(),
                p.name.clone(),
                p.uid.clone(),
            );
            set.spawn(async move {
                let del = DeleteOptions {
                    precondition_uid: Some(uid).filter(|u| !u.is_empty()),
                    ..Default::default()
                };
                let r = server.delete(pods_rt(), Some(&ns), &pod, &del).await;
                (pod, r)
            });
        }
        while let Some(r) = set.join_next().await {
            let Ok((pod, r)) = r else { continue };
            match r {
                Ok((v, gone)) => {
                    self.recorder.normal(
                        &ds_ref,
                        "SuccessfulDelete",
                        format!("Deleted pod: {pod}"),
                    );
                    if gone {
                        self.pods.deleted_by_us(&obj_key(ns, &pod), rv(&v));
                    } else {
                        self.put_pod(&v);
                    }
                }
                Err(e) if e.code == 404 || e.code == 409 => {}
                Err(e) => {
                    self.recorder.warning(
                        &ds_ref,
                        "FailedDelete",
                        format!("Error deleting: {}", e.message),
                    );
                    first_error.get_or_insert(e);
                }
            }
        }
        if create_on.len() > BURST || delete.len() > BURST {
            self.queue.add(key.clone());
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Upstream `rollingUpdate`.
    async fn rolling_update(
        &mut self,
        key: &Key,
        ds: &Ds,
        req: &Requirements,
        hash: &str,
    ) -> Result<(), Retry> {
        let (ns, name) = key;
        let mut by_node = self.node_pods(ns, ds, name);
        // Upstream `updatedDesiredNodeCounts`.
        let mut desired = 0;
        for (n, node) in &self.nodes {
            if node.as_ref().is_some_and(|node| req.fit(n, node).0) {
                desired += 1;
                by_node.entry(n.clone()).or_default();
            }
        }
        let surge = max_surge(ds, desired);
        let mut unavailable = scaled(&ds.rolling()["maxUnavailable"], 1, desired);
        if desired > 0 && surge == 0 && unavailable == 0 {
            unavailable = 1;
        }
        let generation = ds.template_generation();
        let now_s = now();
        let is_available = |p: &Pod| available(p.ready_since, ds.min_ready, now_s);
        if surge == 0 {
            let mut num_unavailable = 0;
            let mut replace: Vec<Pod> = Vec::new();
            let mut candidates: Vec<Pod> = Vec::new();
            for pods in by_node.values() {
                let Some((new, old)) = updated_and_old(pods, hash, generation) else {
                    num_unavailable += 1;
                    continue;
                };
                match (new, old) {
                    (None, None) | (Some(_), Some(_)) => num_unavailable += 1,
                    (Some(new), None) => {
                        if !is_available(new) {
                            num_unavailable += 1;
                        }
                    }
                    (None, Some(old)) => {
                        if !is_available(old) {
                            replace.push(old.clone());
                        } else if num_unavailable < unavailable {
                            candidates.push(old.clone());
                        }
                    }
                }
            }
            let room = (unavailable - num_unavailable).clamp(0, candidates.len() as i64) as usize;
            replace.extend(candidates.into_iter().take(room));
            return Ok(self.sync_nodes(key, ds, hash, &[], &replace).await?);
        }
        let mut num_surge = 0;
        let mut allowed: Vec<String> = Vec::new();
        let mut candidates: Vec<String> = Vec::new();
        let mut old_to_delete: Vec<Pod> = Vec::new();
        for (node, pods) in &by_node {
            let Some((new, old)) = updated_and_old(pods, hash, generation) else {
                num_surge += 1;
                continue;
            };
            match (new, old) {
                (_, None) => {}
                (None, Some(old)) => {
                    if !is_available(old) {
                        allowed.push(node.clone());
                    } else if num_surge < surge {
                        candidates.push(node.clone());
                    }
                }
                (Some(new), Some(old)) => {
                    if is_available(new) {
                        old_to_delete.push(old.clone());
                    } else {
                        num_surge += 1;
                    }
                }
            }
        }
        let room = (surge - num_surge).clamp(0, candidates.len() as i64) as usize;
        allowed.extend(candidates.into_iter().take(room));
        Ok(self
            .sync_nodes(key, ds, hash, &allowed, &old_to_delete)
            .await?)
    }

    /// Upstream `cleanupHistory`.
    async fn cleanup_history(&mut self, key: &Key, ds: &Ds, olds: &[Rev]) -> Result<(), ApiError> {
        let (ns, name) = key;
        if olds.len() <= ds.history_limit {
            return Ok(());
        }
        let mut to_kill = olds.len() - ds.history_limit;
        let live: HashSet<String> = self
            .node_pods(ns, ds, name)
            .values()
            .flatten()
            .map(|p| p.hash().to_string())
            .filter(|h| !h.is_empty())
            .collect();
        let mut olds = olds.to_vec();
        revision::sort_revisions(&mut olds);
        for r in olds {
            if to_kill == 0 {
                break;
            }
            if live.contains(&r.hash) {
                continue;
            }
            if let Some(at) = revision::delete_revision(&self.server, ns, &r).await? {
                self.revisions.deleted_by_us(&obj_key(ns, &r.name), at);
            }
            to_kill -= 1;
        }
        Ok(())
    }

    /// Upstream `updateDaemonSetStatus`, written when it differs.
    async fn write_status(
        &mut self,
        key: &Key,
        ds: &Ds,
        req: Option<&Requirements>,
        hash: &str,
    ) -> Result<(), ApiError> {
        let (ns, name) = key;
        let by_node = self.node_pods(ns, ds, name);
        let generation = ds.template_generation();
        let now_s = now();
        let (mut desired, mut current, mut misscheduled) = (0, 0, 0);
        let (mut ready, mut avail, mut updated) = (0, 0, 0);
        let mut recheck: Option<i64> = None;
        for (n, node) in &self.nodes {
            let should_run = match (req, node) {
                (Some(req), Some(node)) => req.fit(n, node).0,
                _ => false,
            };
            let pods = by_node.get(n).filter(|p| !p.is_empty());
            if should_run {
                desired += 1;
                let Some(pods) = pods else { continue };
                current += 1;
                let p = &pods[0];
                if p.ready_since.is_some() {
                    ready += 1;
                    if available(p.ready_since, ds.min_ready, now_s) {
                        avail += 1;
                    } else if let Some(left) = until_available(p.ready_since, ds.min_ready, now_s) {
                        recheck = Some(recheck.map_or(left, |r| r.min(left)));
                    }
                }
                if p.updated(hash, generation) {
                    updated += 1;
                }
            } else if pods.is_some() {
                misscheduled += 1;
            }
        }
        if let Some(left) = recheck {
            self.queue
                .add_after(key.clone(), Duration::from_secs(left.max(0) as u64 + 1));
        }
        let want = json!({
            "desiredNumberScheduled": desired,
            "currentNumberScheduled": current,
            "numberMisscheduled": misscheduled,
            "numberReady": ready,
            "numberAvailable": avail,
            "numberUnavailable": desired - avail,
            "updatedNumberScheduled": updated,
            "observedGeneration": ds.generation,
        });
        let ds = self.dss.get(key).cloned().unwrap_or_else(|| ds.clone());
        let cur = &ds.raw["status"];
        let same = want
            .as_object()
            .expect("object")
            .iter()
            .all(|(k, v)| cur[k.as_str()].as_i64().unwrap_or(0) == v.as_i64().unwrap_or(0));
        if same {
            return Ok(());
        }
        match self.patch_status(key, want).await {
            Err(e) if e.code == 404 => Ok(()),
            r => r,
        }
    }

    async fn patch_status(&mut self, key: &Key, status: Value) -> Result<(), ApiError> {
        let w = self
            .server
            .patch(
                ds_rt(),
                Some(&key.0),
                &key.1,
                Some(Subresource::Status),
                PatchType::Merge,
                json!({ "status": status }),
                &write_options(),
            )
            .await?;
        // The controller's own write: taken at once, not queued again.
        if self
            .dss
            .get(key)
            .is_none_or(|d| rv(&d.raw) <= rv(&w.object))
        {
            self.dss.insert(key.clone(), Ds::from_json(&w.object));
        }
        Ok(())
    }
}

/// `maxSurge` scaled to `desired` nodes (0 for OnDelete).
fn max_surge(ds: &Ds, desired: i64) -> i64 {
    if ds.on_delete {
        return 0;
    }
    scaled(&ds.rolling()["maxSurge"], 0, desired)
}

/// Upstream `findUpdatedPodsOnNode`: the updated and the old pod of a
/// node, none being deleted; `None` when there are two of either.
fn updated_and_old<'a>(
    pods: &'a [Pod],
    hash: &str,
    generation: i64,
) -> Option<(Option<&'a Pod>, Option<&'a Pod>)> {
    let (mut new, mut old) = (None, None);
    for p in pods.iter().filter(|p| !p.deleting) {
        let slot = if p.updated(hash, generation) {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(p);
    }
    Some((new, old))
}

/// With `maxSurge` (upstream `podsShouldBeOnNode`): an old and a new pod
/// may share a node only while the old one is ready and the new one not
/// yet available; all other extra pods go. `running` is oldest first.
fn surge_extras(running: &[&Pod], hash: &str, min_ready: i64, now_s: i64) -> Vec<Pod> {
    let mut out = Vec::new();
    let (mut oldest_new, mut oldest_old): (Option<&Pod>, Option<&Pod>) = (None, None);
    for p in running {
        let slot = if p.hash() == hash {
            &mut oldest_new
        } else {
            &mut oldest_old
        };
        if slot.is_none() {
            *slot = Some(p);
        } else {
            out.push((*p).clone());
        }
    }
    if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
        if old.ready_since.is_none() || available(new.ready_since, min_ready, now_s) {
            out.push(old.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(labels: Value, taints: Value) -> Node {
        let n = NodeInfo::from_json(&json!({"metadata": {"name": "n1", "labels": labels},
            "spec": {"taints": taints}}))
        .unwrap();
        Node {
            labels: n.labels,
            taints: n.taints,
        }
    }

    #[test]
    fn daemon_tolerations_are_added_once_and_replace_matching_ones() {
        let mut spec = json!({"tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "other", "operator": "Exists"}]});
        add_daemon_tolerations(&mut spec);
        let t = spec["tolerations"].as_array().unwrap();
        assert_eq!(t.len(), 7, "{t:#?}");
        assert_eq!(
            t[0],
            json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"})
        );
        let again = spec.clone();
        add_daemon_tolerations(&mut spec);
        assert_eq!(spec, again);
        let mut host = json!({"hostNetwork": true});
        add_daemon_tolerations(&mut host);
        assert!(host["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/network-unavailable"));
    }

    #[test]
    fn pinning_replaces_required_terms_and_keeps_the_rest() {
        let mut spec = json!({"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "a", "operator": "Exists"}]}]},
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {}}]}}});
        pin_to_node(&mut spec, "n7");
        let na = &spec["affinity"]["nodeAffinity"];
        assert_eq!(
            na["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n7"]}]}])
        );
        assert!(na["preferredDuringSchedulingIgnoredDuringExecution"].is_array());
        assert_eq!(target_node(&spec).as_deref(), Some("n7"));
        let mut empty = json!({});
        pin_to_node(&mut empty, "n1");
        assert_eq!(target_node(&empty).as_deref(), Some("n1"));
    }

    #[test]
    fn nodes_fit_by_selector_affinity_and_taints() {
        let t = json!({"metadata": {"labels": {"app": "x"}}, "spec": {
            "nodeSelector": {"disk": "ssd"}, "containers": [{"name": "c", "image": "i"}]}});
        let req = Requirements::of(&t).unwrap();
        assert_eq!(
            req.fit("n1", &node(json!({"disk": "ssd"}), json!([]))),
            (true, true)
        );
        assert_eq!(
            req.fit("n1", &node(json!({"disk": "hdd"}), json!([]))),
            (false, false)
        );
        // Untolerated NoSchedule: not placed, but a pod there stays.
        let tainted = node(
            json!({"disk": "ssd"}),
            json!([{"key": "k", "effect": "NoSchedule"}]),
        );
        assert_eq!(req.fit("n1", &tainted), (false, true));
        let evicting = node(
            json!({"disk": "ssd"}),
            json!([{"key": "k", "effect": "NoExecute"}]),
        );
        assert_eq!(req.fit("n1", &evicting), (false, false));
        // The daemon tolerations: cordoned and not-ready nodes are fine.
        let cordoned = node(
            json!({"disk": "ssd"}),
            json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
                   {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]),
        );
        assert_eq!(req.fit("n1", &cordoned), (true, true));
        let named = json!({"spec": {"nodeName": "n2", "containers": []}});
        let req = Requirements::of(&named).unwrap();
        assert_eq!(req.fit("n1", &node(json!({}), json!([]))), (false, false));
        assert_eq!(req.fit("n2", &node(json!({}), json!([]))), (true, true));
    }

    fn pod(name: &str, hash: &str, created: i64, ready: Option<i64>) -> Pod {
        Pod {
            meta: Value::Null,
            name: name.into(),
            uid: name.into(),
            labels: json!({ HASH_LABEL: hash }).as_object().unwrap().clone(),
            controller: None,
            node: Some("n".into()),
            scheduled: true,
            phase: "Running".into(),
            deleting: false,
            ready_since: ready,
            created,
        }
    }

    #[test]
    fn updated_pods_by_hash_or_generation() {
        let mut p = pod("a", "h1", 1, None);
        assert!(p.updated("h1", 3));
        assert!(!p.updated("h2", 3));
        p.labels
            .insert(TEMPLATE_GENERATION_LABEL.into(), json!("3"));
        assert!(p.updated("h2", 3));
        let pods = [pod("a", "h1", 1, None), pod("b", "h2", 2, None)];
        let (new, old) = updated_and_old(&pods, "h2", 9).unwrap();
        assert_eq!(new.unwrap().name, "b");
        assert_eq!(old.unwrap().name, "a");
        let two_old = [pod("a", "h1", 1, None), pod("b", "h1", 2, None)];
        assert!(updated_and_old(&two_old, "h2", 9).is_none());
    }

    #[test]
    fn surge_keeps_a_ready_old_pod_until_the_new_one_is_available() {
        let old = pod("old", "h1", 1, Some(10));
        let new = pod("new", "h2", 2, None);
        let extra = pod("new2", "h2", 3, None);
        let gone: Vec<String> = surge_extras(&[&old, &new, &extra], "h2", 0, 100)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(gone, ["new2"]);
        let ready_new = pod("new", "h2", 2, Some(50));
        let gone: Vec<String> = surge_extras(&[&old, &ready_new], "h2", 0, 100)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(gone, ["old"]);
        // Not available yet (minReadySeconds): both stay.
        assert!(surge_extras(&[&old, &ready_new], "h2", 100, 100).is_empty());
    }
}
