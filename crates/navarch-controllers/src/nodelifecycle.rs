//! The node lifecycle controller and the taint-based eviction that follows
//! it (upstream's `node-lifecycle-controller` and
//! `taint-eviction-controller`, in one task sharing one view of nodes and
//! pods).
//!
//! **Health.** A node is alive while its kubelet renews its Lease in
//! `kube-node-lease` (or posts a new `Ready` heartbeat). The controller
//! records, in its own monotonic clock, when it last *saw* either change
//! (upstream's probe timestamp: no trust in remote clocks). A node not
//! heard from for the grace period (`--node-monitor-grace-period`,
//! default 40 s) has its kubelet-owned conditions set to `Unknown` (reason
//! `NodeStatusUnknown`, "Kubelet stopped posting node status."), a
//! `NodeNotReady` event, and its pods' `Ready` condition set to `False` so
//! Services stop sending them traffic. The kubelet sets `Ready` back when
//! it returns.
//!
//! **Taints.** From the `Ready` condition: `False` gives
//! `node.kubernetes.io/not-ready`, `Unknown` (or never posted)
//! `node.kubernetes.io/unreachable`, each with effects `NoSchedule` (added
//! at once) and `NoExecute` (added through the zone's eviction rate
//! limiter); `spec.unschedulable` gives `node.kubernetes.io/unschedulable:
//! NoSchedule`. Taints are removed at once when the condition clears. Taint
//! writes are merge patches guarded by the node's resourceVersion.
//!
//! **Rate limiting** (a partition must not empty the cluster), per zone
//! (`topology.kubernetes.io/region` + `zone` labels), as upstream:
//! * a zone is *Normal*, in *PartialDisruption* (more than 2 nodes and at
//!   least `unhealthy_zone_threshold` (55 %) of them not Ready) or in
//!   *FullDisruption* (every node not Ready);
//! * Normal and FullDisruption zones taint at `eviction_rate` (0.1
//!   nodes/s, burst 1); PartialDisruption zones at
//!   `secondary_eviction_rate` (0.01/s) when larger than
//!   `large_cluster_threshold` (50 nodes), otherwise not at all;
//! * when *every* zone is in FullDisruption the controller assumes it is
//!   the one cut off: it adds no `NoExecute` taint and removes the ones it
//!   added. Leaving that state, every node gets a fresh grace period.
//!
//! **Eviction** (taint manager): a pod on a node with `NoExecute` taints is
//! deleted at once if a taint is not tolerated, otherwise when the
//! shortest `tolerationSeconds` among the tolerations used has passed,
//! counted from each taint's `timeAdded` (tolerations without seconds
//! tolerate forever). The API server gives every pod 300 s tolerations of
//! `not-ready` and `unreachable` (`DefaultTolerationSeconds`). A pod to be
//! evicted gets the `DisruptionTarget` condition (`DeletionByTaintManager`)
//! and a `TaintManagerEviction` event, then a graceful delete with its uid
//! as precondition; its controller replaces it elsewhere. A taint removed
//! before the deadline cancels the eviction.

use crate::events::{ObjectRef, Recorder};
use crate::informer::{Batch, Change, Informer};
use crate::rt;
use navarch_api::patch::PatchType;
use navarch_api::{ApiError, Subresource};
use navarch_apiserver::cache::CachedObject;
use navarch_apiserver::{ApiServer, DeleteOptions, WriteOptions};
use navarch_scheduler::{Effect, Taint, Toleration};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const COMPONENT: &str = "node-controller";
/// Conditions the kubelet owns, set to Unknown when it goes quiet.
const KUBELET_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// The controller's settings (upstream kube-controller-manager flags).
#[derive(Debug, Clone)]
pub struct NodeLifecycleOptions {
    /// `--node-monitor-grace-period`.
    pub grace_period: Duration,
    /// `--node-monitor-period` (upstream 5 s; 1 s here, the scan is cheap).
    pub monitor_period: Duration,
    /// `--node-eviction-rate`, nodes per second per zone.
    pub eviction_rate: f64,
    /// `--secondary-node-eviction-rate`.
    pub secondary_eviction_rate: f64,
    /// `--unhealthy-zone-threshold`.
    pub unhealthy_zone_threshold: f64,
    /// `--large-cluster-size-threshold`.
    pub large_cluster_threshold: usize,
}

impl Default for NodeLifecycleOptions {
    fn default() -> Self {
        NodeLifecycleOptions {
            grace_period: Duration::from_secs(40),
            monitor_period: Duration::from_secs(1),
            eviction_rate: 0.1,
            secondary_eviction_rate: 0.01,
            unhealthy_zone_threshold: 0.55,
            large_cluster_threshold: 50,
        }
    }
}

/// Starts the controller on `server`'s watch cache; it stops with
/// `shutdown`.
pub fn spawn(server: Arc<ApiServer>, options: NodeLifecycleOptions, shutdown: CancellationToken) {
    let (tx, rx) = mpsc::channel(256);
    for r in [
        rt("", "nodes"),
        rt("", "pods"),
        rt("coordination.k8s.io", "leases"),
    ] {
        Informer::start(server.cache.clone(), r, tx.clone(), shutdown.clone());
    }
    drop(tx);
    let recorder = Recorder::spawn(server.clone(), COMPONENT);
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let c = Controller {
        server,
        recorder,
        options,
        nodes: HashMap::new(),
        leases: HashMap::new(),
        pods: HashMap::new(),
        by_node: HashMap::new(),
        zones: HashMap::new(),
        all_disrupted: false,
        evictions: HashMap::new(),
        deadlines: BTreeSet::new(),
        busy: HashSet::new(),
        synced: HashSet::new(),
        done_tx,
    };
    tokio::spawn(c.run(rx, done_rx));
}

/// What the controller keeps of a node.
struct Node {
    uid: String,
    resource_version: String,
    /// The `Ready` condition's status, when posted.
    ready: Option<String>,
    /// The `Ready` condition's lastHeartbeatTime (a change is a heartbeat).
    heartbeat: String,
    unschedulable: bool,
    taints: Vec<Value>,
    /// The `NoExecute` taints, parsed, with when each was added.
    no_execute: Vec<(Taint, Instant)>,
    zone: String,
    /// When the controller last heard from the kubelet.
    probe: Instant,
    /// Conditions present (for the Unknown write).
    conditions: Vec<String>,
}

impl Node {
    fn parse(o: &Arc<CachedObject>, now: Instant) -> Node {
        let v = o.shared_value();
        let conds = v["status"]["conditions"].as_array();
        let ready = conds.and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
        let labels = &v["metadata"]["labels"];
        let zone = format!(
            "{}:\u{0}:{}",
            labels["topology.kubernetes.io/region"]
                .as_str()
                .unwrap_or(""),
            labels["topology.kubernetes.io/zone"].as_str().unwrap_or("")
        );
        let taints: Vec<Value> = v["spec"]["taints"].as_array().cloned().unwrap_or_default();
        let wall = jiff::Timestamp::now();
        let no_execute = taints
            .iter()
            .filter_map(|t| {
                let taint = Taint::parse("Node", "spec.taints", t).ok()??;
                (taint.effect == Effect::NoExecute).then(|| {
                    let added = t["timeAdded"]
                        .as_str()
                        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
                        .map(|at| instant_of(at, wall, now))
                        .unwrap_or(now);
                    (taint, added)
                })
            })
            .collect();
        Node {
            uid: v["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            resource_version: o.mod_revision.to_string(),
            ready: ready.and_then(|c| c["status"].as_str()).map(str::to_string),
            heartbeat: ready
                .and_then(|c| c["lastHeartbeatTime"].as_str())
                .unwrap_or("")
                .to_string(),
            unschedulable: v["spec"]["unschedulable"] == json!(true),
            taints,
            no_execute,
            zone,
            probe: now,
            conditions: conds
                .map(|c| {
                    c.iter()
                        .filter_map(|c| c["type"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The `NoExecute` taint key the Ready condition calls for.
    fn wanted_no_execute(&self) -> Option<&'static str> {
        match self.ready.as_deref() {
            Some("True") => None,
            Some("False") => Some(NOT_READY),
            _ => Some(UNREACHABLE),
        }
    }

    fn has_taint(&self, key: &str, effect: &str) -> bool {
        self.taints
            .iter()
            .any(|t| t["key"] == key && t["effect"] == effect)
    }

    fn object_ref(&self, name: &str) -> ObjectRef {
        ObjectRef {
            kind: "Node",
            api_version: "v1",
            namespace: String::new(),
            name: name.to_string(),
            uid: self.uid.clone(),
        }
    }
}

/// The monotonic instant of a wall-clock time, relative to `now`.
fn instant_of(at: jiff::Timestamp, wall: jiff::Timestamp, now: Instant) -> Instant {
    let ago = wall.as_millisecond() - at.as_millisecond();
    if ago <= 0 {
        now + Duration::from_millis((-ago) as u64)
    } else {
        now.checked_sub(Duration::from_millis(ago as u64))
            .unwrap_or(now)
    }
}

/// Zone health (upstream `ZoneState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    Normal,
    PartialDisruption,
    FullDisruption,
}

/// Upstream `ComputeZoneState`: from the number of nodes and of not-Ready
/// ones.
pub fn zone_state(nodes: usize, not_ready: usize, threshold: f64) -> ZoneState {
    if nodes > 0 && not_ready == nodes {
        ZoneState::FullDisruption
    } else if not_ready > 2 && not_ready as f64 / nodes as f64 >= threshold {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// A zone's `NoExecute` tainting queue and its token bucket (burst 1).
struct Zone {
    waiting: VecDeque<String>,
    queued: HashSet<String>,
    tokens: f64,
    refilled: Instant,
    rate: f64,
}

impl Zone {
    fn new(now: Instant, rate: f64) -> Zone {
        Zone {
            waiting: VecDeque::new(),
            queued: HashSet::new(),
            tokens: 1.0,
            refilled: now,
            rate,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(1.0);
        self.refilled = now;
    }
}

/// A scheduled eviction.
struct Eviction {
    at: Instant,
    uid: String,
    node: String,
}

/// A write finished (the informer brings its effect).
struct Done {
    node: Option<String>,
    pod: Option<String>,
}

struct Controller {
    server: Arc<ApiServer>,
    recorder: Recorder,
    options: NodeLifecycleOptions,
    nodes: HashMap<String, Node>,
    /// Node name → the Lease's renewTime last seen.
    leases: HashMap<String, String>,
    /// Pods by `namespace/name`.
    pods: HashMap<String, Arc<CachedObject>>,
    /// Node name → its pods' keys.
    by_node: HashMap<String, HashSet<String>>,
    zones: HashMap<String, Zone>,
    all_disrupted: bool,
    evictions: HashMap<String, Eviction>,
    deadlines: BTreeSet<(Instant, String)>,
    /// Nodes and pods with a write in flight.
    busy: HashSet<String>,
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
        let mut tick = tokio::time::interval(self.options.monitor_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_eviction = self
                .deadlines
                .first()
                .map(|(at, _)| *at)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                b = informers.recv() => match b {
                    Some(b) => self.apply(b),
                    None => return,
                },
                Some(d) = done.recv() => {
                    if let Some(n) = d.node { self.busy.remove(&format!("node/{n}")); }
                    if let Some(p) = d.pod { self.busy.remove(&format!("pod/{p}")); }
                }
                _ = tick.tick() => {
                    if self.synced.len() == 3 {
                        self.monitor();
                    }
                }
                _ = tokio::time::sleep_until(next_eviction) => {}
            }
            if self.synced.len() == 3 {
                self.fire_evictions();
            }
        }
    }

    // ----- informer events ---------------------------------------------------

    fn apply(&mut self, batch: Batch) {
        let kind = batch.rt.kind;
        let now = Instant::now();
        for change in batch.changes {
            match (kind, change) {
                (k, Change::Synced) => {
                    self.synced.insert(k);
                }
                ("Node", Change::Upsert(o)) => self.node_changed(&o, now),
                ("Node", Change::Delete(o)) => {
                    self.nodes.remove(&o.name);
                    for zone in self.zones.values_mut() {
                        zone.queued.remove(&o.name);
                    }
                }
                ("Lease", Change::Upsert(o)) if o.namespace == "kube-node-lease" => {
                    let renew = o.value()["spec"]["renewTime"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    if self.leases.get(&o.name) != Some(&renew) {
                        if let Some(n) = self.nodes.get_mut(&o.name) {
                            n.probe = now;
                        }
                        self.leases.insert(o.name.clone(), renew);
                    }
                }
                ("Lease", Change::Delete(o)) if o.namespace == "kube-node-lease" => {
                    self.leases.remove(&o.name);
                }
                ("Pod", Change::Upsert(o)) => self.pod_changed(o),
                ("Pod", Change::Delete(o)) => {
                    let key = pod_key(&o.namespace, &o.name);
                    if let Some(old) = self.pods.remove(&key) {
                        self.unindex(&key, &old);
                    }
                    self.cancel(&key, false);
                }
                _ => {}
            }
        }
    }

    fn node_changed(&mut self, o: &Arc<CachedObject>, now: Instant) {
        let mut n = Node::parse(o, now);
        let name = o.name.clone();
        let retaint;
        match self.nodes.get(&name) {
            Some(old) => {
                // A new Ready heartbeat counts; anything else keeps the
                // probe time.
                n.probe = if n.heartbeat != old.heartbeat && n.ready.as_deref() != Some("Unknown") {
                    now
                } else {
                    old.probe
                };
                retaint = old.no_execute.iter().map(|t| &t.0).collect::<Vec<_>>()
                    != n.no_execute.iter().map(|t| &t.0).collect::<Vec<_>>();
            }
            None => retaint = !n.no_execute.is_empty(),
        }
        self.nodes.insert(name.clone(), n);
        if retaint {
            self.reevaluate_node(&name);
        }
    }

    fn pod_changed(&mut self, o: Arc<CachedObject>) {
        let key = pod_key(&o.namespace, &o.name);
        if let Some(old) = self.pods.get(&key).cloned() {
            self.unindex(&key, &old);
        }
        let node = o.field("spec.nodeName").unwrap_or_default();
        if !node.is_empty() {
            self.by_node
                .entry(node.clone())
                .or_default()
                .insert(key.clone());
        }
        self.pods.insert(key.clone(), o);
        if self
            .nodes
            .get(&node)
            .is_some_and(|n| !n.no_execute.is_empty())
        {
            self.evaluate_pod(&key);
        } else {
            self.cancel(&key, false);
        }
    }

    fn unindex(&mut self, key: &str, o: &Arc<CachedObject>) {
        let node = o.field("spec.nodeName").unwrap_or_default();
        if let Some(set) = self.by_node.get_mut(&node) {
            set.remove(key);
            if set.is_empty() {
                self.by_node.remove(&node);
            }
        }
    }

    // ----- the monitor -------------------------------------------------------

    fn monitor(&mut self) {
        let now = Instant::now();
        let grace = self.options.grace_period;
        // 1. Nodes not heard from within the grace period go Unknown.
        let quiet: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| {
                now.saturating_duration_since(n.probe) > grace
                    && n.ready.as_deref() != Some("Unknown")
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in quiet {
            self.mark_unknown(&name);
        }
        // 2. Zone states and rates.
        let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
        for n in self.nodes.values() {
            let c = counts.entry(n.zone.clone()).or_default();
            c.0 += 1;
            if n.ready.as_deref() != Some("True") {
                c.1 += 1;
            }
        }
        let states: HashMap<String, ZoneState> = counts
            .iter()
            .map(|(z, (total, bad))| {
                (
                    z.clone(),
                    zone_state(*total, *bad, self.options.unhealthy_zone_threshold),
                )
            })
            .collect();
        let all_disrupted =
            !states.is_empty() && states.values().all(|s| *s == ZoneState::FullDisruption);
        if self.all_disrupted && !all_disrupted {
            // Out of a full disruption: everyone gets a fresh grace period.
            tracing::info!("controller connectivity restored: resetting node probe times");
            for n in self.nodes.values_mut() {
                n.probe = now;
            }
        }
        if all_disrupted && !self.all_disrupted {
            tracing::warn!("every zone is fully disrupted: stopping NoExecute tainting");
        }
        self.all_disrupted = all_disrupted;
        self.zones.retain(|z, _| counts.contains_key(z));
        for (z, state) in &states {
            let (total, _) = counts[z];
            let rate = match state {
                ZoneState::Normal | ZoneState::FullDisruption => self.options.eviction_rate,
                ZoneState::PartialDisruption if total > self.options.large_cluster_threshold => {
                    self.options.secondary_eviction_rate
                }
                ZoneState::PartialDisruption => 0.0,
            };
            let zone = self
                .zones
                .entry(z.clone())
                .or_insert_with(|| Zone::new(now, rate));
            zone.refill(now);
            zone.rate = rate;
        }
        // 3. Taints per node.
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in names {
            self.reconcile_taints(&name);
        }
    }

    /// The taints a node should carry, and the write if they differ. A
    /// `NoExecute` taint to add waits for its zone's token.
    fn reconcile_taints(&mut self, name: &str) {
        if self.busy.contains(&format!("node/{name}")) {
            return;
        }
        let Some(n) = self.nodes.get(name) else {
            return;
        };
        let wanted = n.wanted_no_execute();
        let mut want_no_schedule: Vec<&str> = wanted.into_iter().collect();
        if n.unschedulable {
            want_no_schedule.push(UNSCHEDULABLE);
        }
        let want_no_execute = if self.all_disrupted { None } else { wanted };
        let ours = [UNREACHABLE, NOT_READY, UNSCHEDULABLE];
        let mut taints: Vec<Value> = Vec::new();
        let mut changed = false;
        for t in &n.taints {
            let key = t["key"].as_str().unwrap_or("");
            let keep = !ours.contains(&key)
                || match t["effect"].as_str().unwrap_or("") {
                    "NoSchedule" => want_no_schedule.contains(&key),
                    "NoExecute" => want_no_execute == Some(key),
                    _ => true,
                };
            if keep {
                taints.push(t.clone());
            } else {
                changed = true;
            }
        }
        let stamp = navarch_api::meta::rfc3339(jiff::Timestamp::now());
        for key in &want_no_schedule {
            if !n.has_taint(key, "NoSchedule") {
                taints.push(json!({"key": key, "effect": "NoSchedule", "timeAdded": stamp}));
                changed = true;
            }
        }
        let missing = want_no_execute.filter(|k| !n.has_taint(k, "NoExecute"));
        // Swapping not-ready for unreachable (or back) is immediate, as
        // upstream; a first NoExecute taint waits for the zone's token.
        let swap = n.has_taint(UNREACHABLE, "NoExecute") || n.has_taint(NOT_READY, "NoExecute");
        let zone = n.zone.clone();
        match missing {
            Some(key) => {
                if swap || self.take_token(&zone, name) {
                    tracing::info!(node = %name, taint = key, "tainting node NoExecute");
                    taints.push(json!({"key": key, "effect": "NoExecute", "timeAdded": stamp}));
                    changed = true;
                }
            }
            None => {
                if let Some(z) = self.zones.get_mut(&zone) {
                    if z.queued.remove(name) {
                        z.waiting.retain(|w| w != name);
                    }
                }
            }
        }
        if changed {
            let rv = self.nodes[name].resource_version.clone();
            let patch = json!({"metadata": {"resourceVersion": rv}, "spec": {"taints": taints}});
            self.write_node(name, None, patch);
        }
    }

    /// Queues `name` in its zone and takes the zone's token if it is
    /// `name`'s turn and one is left.
    fn take_token(&mut self, zone: &str, name: &str) -> bool {
        self.advance_zone(zone);
        let Some(z) = self.zones.get_mut(zone) else {
            return false;
        };
        if z.queued.insert(name.to_string()) {
            z.waiting.push_back(name.to_string());
        }
        if z.waiting.front().map(String::as_str) == Some(name) && z.tokens >= 1.0 {
            z.tokens -= 1.0;
            z.waiting.pop_front();
            z.queued.remove(name);
            return true;
        }
        false
    }

    /// Drops recovered nodes from the head of a zone's queue, so the next
    /// token goes to a node still waiting.
    fn advance_zone(&mut self, zone: &str) {
        let Some(z) = self.zones.get_mut(zone) else {
            return;
        };
        while let Some(head) = z.waiting.front() {
            let still = self
                .nodes
                .get(head)
                .is_some_and(|n| n.wanted_no_execute().is_some());
            if still {
                break;
            }
            let head = z.waiting.pop_front().expect("front exists");
            z.queued.remove(&head);
        }
    }

    /// Sets the kubelet's conditions to Unknown and the node's pods not
    /// ready.
    fn mark_unknown(&mut self, name: &str) {
        if self.busy.contains(&format!("node/{name}")) {
            return;
        }
        let Some(n) = self.nodes.get(name) else {
            return;
        };
        let now = navarch_api::meta::rfc3339(jiff::Timestamp::now());
        let mut conditions: Vec<Value> = KUBELET_CONDITIONS
            .iter()
            .filter(|c| n.conditions.iter().any(|have| have == *c))
            .map(|c| {
                json!({"type": c, "status": "Unknown", "reason": "NodeStatusUnknown",
                    "message": "Kubelet stopped posting node status.", "lastTransitionTime": now})
            })
            .collect();
        if n.ready.is_none() {
            conditions.push(json!({"type": "Ready", "status": "Unknown",
                "reason": "NodeStatusNeverUpdated", "message": "Kubelet never posted node status.",
                "lastHeartbeatTime": now, "lastTransitionTime": now}));
        }
        tracing::info!(node = %name, "node stopped posting status: marking it Unknown");
        self.recorder.normal(
            &n.object_ref(name),
            "NodeNotReady",
            format!("Node {name} status is now: NodeNotReady"),
        );
        let patch = json!({"metadata": {"resourceVersion": n.resource_version},
            "status": {"conditions": conditions}});
        self.write_node(name, Some(Subresource::Status), patch);
        self.mark_pods_not_ready(name);
    }

    fn mark_pods_not_ready(&mut self, node: &str) {
        let Some(keys) = self.by_node.get(node) else {
            return;
        };
        let now = navarch_api::meta::rfc3339(jiff::Timestamp::now());
        for key in keys.clone() {
            let Some(o) = self.pods.get(&key) else {
                continue;
            };
            let v = o.shared_value();
            let ready = v["status"]["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
            if ready.is_none_or(|c| c["status"] != "True") {
                continue;
            }
            let phase = v["status"]["phase"].as_str().unwrap_or("");
            if phase == "Succeeded" || phase == "Failed" {
                continue;
            }
            let uid = v["metadata"]["uid"].as_str().unwrap_or("").to_string();
            self.recorder.warning(
                &ObjectRef::pod(&o.namespace, &o.name, &uid),
                "NodeNotReady",
                "Node is not ready".into(),
            );
            let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False",
                "lastTransitionTime": now}]}});
            let (server, ns, name) = (self.server.clone(), o.namespace.clone(), o.name.clone());
            tokio::spawn(async move {
                let r = server
                    .patch(
                        rt("", "pods"),
                        Some(&ns),
                        &name,
                        Some(Subresource::Status),
                        PatchType::Strategic,
                        patch,
                        &WriteOptions::default(),
                    )
                    .await;
                if let Err(e) = r {
                    if e.code != 404 {
                        tracing::debug!(pod = %name, error = %e, "marking pod not ready failed");
                    }
                }
            });
        }
    }

    fn write_node(&mut self, name: &str, sub: Option<Subresource>, patch: Value) {
        self.busy.insert(format!("node/{name}"));
        let (server, done, name) = (self.server.clone(), self.done_tx.clone(), name.to_string());
        tokio::spawn(async move {
            let ptype = if sub.is_some() {
                PatchType::Strategic
            } else {
                PatchType::Merge
            };
            let r = server
                .patch(
                    rt("", "nodes"),
                    None,
                    &name,
                    sub,
                    ptype,
                    patch,
                    &WriteOptions::default(),
                )
                .await;
            match r {
                Ok(_) => {}
                Err(e) if e.code == 404 || e.code == 409 => {}
                Err(e) => tracing::warn!(node = %name, error = %e, "updating node failed"),
            }
            let _ = done.send(Done {
                node: Some(name),
                pod: None,
            });
        });
    }

    // ----- taint-based eviction ----------------------------------------------

    fn reevaluate_node(&mut self, node: &str) {
        let keys: Vec<String> = self
            .by_node
            .get(node)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for key in keys {
            self.evaluate_pod(&key);
        }
    }

    /// Schedules, moves or cancels the eviction of one pod.
    fn evaluate_pod(&mut self, key: &str) {
        let Some(o) = self.pods.get(key).cloned() else {
            return;
        };
        let node_name = o.field("spec.nodeName").unwrap_or_default();
        let Some(node) = self.nodes.get(&node_name) else {
            self.cancel(key, false);
            return;
        };
        if node.no_execute.is_empty() {
            self.cancel(key, true);
            return;
        }
        let v = o.shared_value();
        if !v["metadata"]["deletionTimestamp"].is_null() {
            self.cancel(key, false);
            return;
        }
        let phase = v["status"]["phase"].as_str().unwrap_or("");
        if phase == "Succeeded" || phase == "Failed" {
            self.cancel(key, false);
            return;
        }
        let tolerations: Vec<(Toleration, Option<i64>)> = v["spec"]["tolerations"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .filter_map(|t| {
                        let tol = Toleration::parse("Pod", "spec.tolerations", t).ok()??;
                        Some((tol, t["tolerationSeconds"].as_i64()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let now = Instant::now();
        let at = eviction_time(&node.no_execute, &tolerations, now);
        let uid = v["metadata"]["uid"].as_str().unwrap_or("").to_string();
        match at {
            None => self.cancel(key, true),
            Some(at) => {
                if let Some(e) = self.evictions.get(key) {
                    if e.at == at && e.uid == uid {
                        return;
                    }
                    self.deadlines.remove(&(e.at, key.to_string()));
                }
                self.deadlines.insert((at, key.to_string()));
                self.evictions.insert(
                    key.to_string(),
                    Eviction {
                        at,
                        uid,
                        node: node_name,
                    },
                );
            }
        }
    }

    fn cancel(&mut self, key: &str, announce: bool) {
        if let Some(e) = self.evictions.remove(key) {
            self.deadlines.remove(&(e.at, key.to_string()));
            if announce {
                if let Some((ns, name)) = key.split_once('/') {
                    self.recorder.normal(
                        &ObjectRef::pod(ns, name, &e.uid),
                        "TaintManagerEviction",
                        format!("Cancelling deletion of Pod {key}"),
                    );
                }
            }
        }
    }

    fn fire_evictions(&mut self) {
        let now = Instant::now();
        while let Some((at, key)) = self.deadlines.first().cloned() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            let Some(e) = self.evictions.remove(&key) else {
                continue;
            };
            if self.busy.contains(&format!("pod/{key}")) {
                continue;
            }
            let still = self
                .pods
                .get(&key)
                .is_some_and(|o| o.field("spec.nodeName").as_deref() == Some(e.node.as_str()));
            if !still {
                continue;
            }
            self.evict(&key, e);
        }
    }

    fn evict(&mut self, key: &str, e: Eviction) {
        let Some((ns, name)) = key.split_once('/') else {
            return;
        };
        tracing::info!(pod = %key, node = %e.node, "evicting pod from tainted node");
        self.recorder.normal(
            &ObjectRef::pod(ns, name, &e.uid),
            "TaintManagerEviction",
            format!("Marking for deletion Pod {key}"),
        );
        self.busy.insert(format!("pod/{key}"));
        let (server, done) = (self.server.clone(), self.done_tx.clone());
        let (ns, name, key) = (ns.to_string(), name.to_string(), key.to_string());
        tokio::spawn(async move {
            let r = evict_pod(&server, &ns, &name, &e.uid).await;
            if let Err(e) = r {
                if e.code != 404 && e.code != 409 {
                    tracing::warn!(pod = %key, error = %e, "evicting pod failed");
                }
            }
            let _ = done.send(Done {
                node: None,
                pod: Some(key),
            });
        });
    }
}

/// When a pod on a node with these `NoExecute` taints must go: now if one
/// is not tolerated, never (`None`) if all are tolerated forever,
/// otherwise the earliest `timeAdded + tolerationSeconds` over the
/// tolerations used (upstream `getMinTolerationTime`, counted from each
/// taint's `timeAdded`).
pub fn eviction_time(
    taints: &[(Taint, Instant)],
    tolerations: &[(Toleration, Option<i64>)],
    now: Instant,
) -> Option<Instant> {
    let mut earliest: Option<Instant> = None;
    for (taint, added) in taints {
        let used: Vec<Option<i64>> = tolerations
            .iter()
            .filter(|(t, _)| t.tolerates(taint))
            .map(|(_, s)| *s)
            .collect();
        if used.is_empty() {
            return Some(now);
        }
        // Among the tolerations matching this taint, the shortest bound
        // counts, as upstream takes the minimum over all used ones.
        for s in used.into_iter().flatten() {
            let at = *added + Duration::from_secs(s.max(0) as u64);
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
        }
    }
    earliest
}

async fn evict_pod(server: &ApiServer, ns: &str, name: &str, uid: &str) -> Result<(), ApiError> {
    let pods = rt("", "pods");
    let now = navarch_api::meta::rfc3339(jiff::Timestamp::now());
    let patch = json!({"status": {"conditions": [{
        "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
        "message": "Taint manager: deleting due to NoExecute taint",
        "lastTransitionTime": now}]}});
    server
        .patch(
            pods,
            Some(ns),
            name,
            Some(Subresource::Status),
            PatchType::Strategic,
            patch,
            &WriteOptions::default(),
        )
        .await?;
    let del = DeleteOptions {
        precondition_uid: Some(uid.to_string()).filter(|u| !u.is_empty()),
        ..Default::default()
    };
    server.delete(pods, Some(ns), name, &del).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str) -> Taint {
        Taint::parse("Node", "t", &json!({"key": key, "effect": "NoExecute"}))
            .unwrap()
            .unwrap()
    }

    fn tol(v: Value) -> (Toleration, Option<i64>) {
        (
            Toleration::parse("Pod", "t", &v).unwrap().unwrap(),
            v["tolerationSeconds"].as_i64(),
        )
    }

    #[test]
    fn zone_states_follow_upstream() {
        assert_eq!(zone_state(0, 0, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(3, 3, 0.55), ZoneState::FullDisruption);
        assert_eq!(zone_state(1, 1, 0.55), ZoneState::FullDisruption);
        // Two nodes down is never a partial disruption.
        assert_eq!(zone_state(4, 2, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(5, 3, 0.55), ZoneState::PartialDisruption);
        assert_eq!(zone_state(10, 5, 0.55), ZoneState::Normal);
        assert_eq!(zone_state(100, 55, 0.55), ZoneState::PartialDisruption);
    }

    #[test]
    fn eviction_waits_for_the_shortest_used_toleration() {
        let now = Instant::now();
        let added = now - Duration::from_secs(10);
        let taints = vec![(taint(UNREACHABLE), added)];
        // Not tolerated: now.
        assert_eq!(eviction_time(&taints, &[], now), Some(now));
        let other = tol(json!({"key": "x", "operator": "Exists", "effect": "NoExecute"}));
        assert_eq!(eviction_time(&taints, &[other], now), Some(now));
        // Tolerated forever.
        let forever = tol(json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}));
        assert_eq!(
            eviction_time(&taints, std::slice::from_ref(&forever), now),
            None
        );
        // 300 s from the taint's timeAdded; a shorter one wins.
        let t300 = tol(
            json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
        );
        let t30 = tol(json!({"operator": "Exists", "tolerationSeconds": 30}));
        assert_eq!(
            eviction_time(&taints, std::slice::from_ref(&t300), now),
            Some(added + Duration::from_secs(300))
        );
        assert_eq!(
            eviction_time(&taints, &[t300.clone(), t30], now),
            Some(added + Duration::from_secs(30))
        );
        assert_eq!(
            eviction_time(&taints, &[t300, forever], now),
            Some(added + Duration::from_secs(300))
        );
        // Two taints, one untolerated: now.
        let two = vec![(taint(UNREACHABLE), added), (taint("dedicated"), now)];
        let t = tol(json!({"key": UNREACHABLE, "operator": "Exists", "tolerationSeconds": 300}));
        assert_eq!(eviction_time(&two, &[t], now), Some(now));
    }

    #[test]
    fn token_bucket_refills_at_the_rate_with_burst_one() {
        let t0 = Instant::now();
        let mut z = Zone::new(t0, 0.1);
        assert_eq!(z.tokens, 1.0);
        z.tokens -= 1.0;
        z.refill(t0 + Duration::from_secs(5));
        assert!((z.tokens - 0.5).abs() < 1e-9);
        z.refill(t0 + Duration::from_secs(100));
        assert_eq!(z.tokens, 1.0);
    }
}
