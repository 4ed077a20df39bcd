//! The pod scheduler's driver: informers in, bindings out.
//!
//! One task owns the [`Ledger`] (the cluster snapshot) and the queues, so
//! placement needs no locks: it folds informer batches into the ledger,
//! then takes pods from the active queue (priority order), places each with
//! the pure [`schedule`] on the ledger as it is, reserves the node
//! ([`Ledger::reserve`], the commit-time re-check), and hands the binding to
//! a bounded set of concurrent `pods/binding` writes. Concurrent writes are
//! committed together by the store's group commit: that is the batching.
//! The bound pod's watch event confirms the reservation; a failed binding
//! forgets it and the pod is retried after a backoff.
//!
//! A pod no node can take gets a `FailedScheduling` event and the
//! `PodScheduled=False` condition with upstream's message, may preempt
//! lower-priority pods (graceful deletion with a `DisruptionTarget`
//! condition, `status.nominatedNodeName` on the preemptor), and waits among
//! the unschedulable pods until a cluster event could help it: a node added
//! or changed, a bound pod deleted, finished or relabelled, a namespace
//! relabelled; or after five minutes, as upstream. Retries back off from 1 s
//! to 10 s per pod (upstream's defaults).
//!
//! Pods name their scheduler in `spec.schedulerName`; this driver takes the
//! pods of its profiles' names (`default-scheduler` by default) and leaves
//! every other pod alone.

use crate::events::{ObjectRef, Recorder};
use crate::informer::{Batch, Change, Informer};
use navarch_api::patch::PatchType;
use navarch_api::registry::lookup;
use navarch_api::selector::LabelSelector;
use navarch_api::{ApiError, ResourceType};
use navarch_apiserver::cache::CachedObject;
use navarch_apiserver::{ApiServer, DeleteOptions, WriteOptions};
use navarch_scheduler::{
    preempt, schedule, Check, Config, Ledger, NodeInfo, Pdb, PodInfo, PreemptOutcome,
};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The scheduler name pods get by default.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// One scheduling profile: the pods naming `name` are placed with `config`.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub name: String,
    pub config: Config,
}

/// How the driver runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerOptions {
    pub profiles: Vec<Profile>,
    /// `pods/binding` writes in flight, at most. Each waits for the store's
    /// group commit, so this bounds bindings per commit: 64 capped
    /// `bench scheduler` at ~2,000 pods/s with seconds of queueing, 1024 did
    /// not (docs/benchmarks.md).
    pub bind_concurrency: usize,
    /// Upstream `podInitialBackoffSeconds` / `podMaxBackoffSeconds`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Upstream `podMaxInUnschedulablePodsDuration`: unschedulable pods are
    /// retried after this long even without a cluster event.
    pub max_unschedulable: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            profiles: vec![Profile {
                name: DEFAULT_SCHEDULER_NAME.into(),
                config: Config::default(),
            }],
            bind_concurrency: 1024,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            max_unschedulable: Duration::from_secs(300),
        }
    }
}

/// Counters of a running scheduler.
#[derive(Debug, Default)]
pub struct Stats {
    pub scheduled: AtomicU64,
    pub unschedulable_attempts: AtomicU64,
    pub bind_failures: AtomicU64,
    pub preemptions: AtomicU64,
}

/// A running scheduler.
pub struct Scheduler {
    pub stats: Arc<Stats>,
}

/// Starts the scheduler on `server`'s watch cache; it stops with `shutdown`.
pub fn spawn(
    server: Arc<ApiServer>,
    options: SchedulerOptions,
    shutdown: CancellationToken,
) -> Scheduler {
    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::channel(256);
    for rt in [
        rt("", "nodes"),
        rt("", "pods"),
        rt("", "namespaces"),
        rt("policy", "poddisruptionbudgets"),
        rt("", "services"),
        rt("", "replicationcontrollers"),
        rt("apps", "replicasets"),
        rt("apps", "statefulsets"),
    ] {
        Informer::start(server.cache.clone(), rt, tx.clone(), shutdown.clone());
    }
    drop(tx);
    let recorder = Recorder::spawn(server.clone(), DEFAULT_SCHEDULER_NAME);
    let (bind_tx, bind_rx) = mpsc::unbounded_channel();
    let driver = Driver {
        server,
        options,
        recorder,
        stats: stats.clone(),
        ledger: Ledger::new(),
        pending: HashMap::new(),
        active: navarch_scheduler::ActiveQueue::new(),
        backoff: BTreeSet::new(),
        unschedulable: HashSet::new(),
        flush: false,
        synced: HashSet::new(),
        next_start: 0,
        pdbs: HashMap::new(),
        spreaders: HashMap::new(),
        in_flight: 0,
        bind_tx,
        binding: HashMap::new(),
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = driver.run(rx, bind_rx) => {}
        }
    });
    Scheduler { stats }
}

fn rt(group: &str, plural: &str) -> &'static ResourceType {
    let version = if group.is_empty() || group == "apps" || group == "policy" {
        "v1"
    } else {
        unreachable!("only v1 kinds are watched")
    };
    lookup(group, version, plural).expect("served kind")
}

/// Where a pending pod is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    Backoff,
    Unschedulable,
    /// Reserved on a node; its binding is in flight.
    Binding,
    /// `spec.schedulingGates` is not empty: not scheduled until removed.
    Gated,
}

struct Pending {
    info: Arc<PodInfo>,
    uid: String,
    /// The pod's key in the store (and watch cache).
    store_key: String,
    profile: usize,
    state: State,
    attempts: u32,
    /// When the pod may be retried (end of its backoff).
    retry_at: Instant,
    /// When it became unschedulable.
    since: Instant,
    /// The `PodScheduled` condition's status and message as last seen.
    condition: Option<(String, String)>,
}

/// What a failed cycle does with the pod's `status.nominatedNodeName`.
enum Nomination {
    Keep,
    Clear,
    Set(String),
}

/// Results of bindings, back to the driver.
struct Bound {
    key: String,
    pod: ObjectRef,
    node: String,
    result: Result<(), ApiError>,
}

struct Driver {
    server: Arc<ApiServer>,
    options: SchedulerOptions,
    recorder: Recorder,
    stats: Arc<Stats>,
    ledger: Ledger,
    pending: HashMap<String, Pending>,
    active: navarch_scheduler::ActiveQueue,
    backoff: BTreeSet<(Instant, String)>,
    unschedulable: HashSet<String>,
    /// A cluster event asked for the unschedulable pods to be retried.
    flush: bool,
    /// Kinds whose informer delivered its initial list.
    synced: HashSet<&'static str>,
    next_start: usize,
    pdbs: HashMap<String, Pdb>,
    /// Selectors of services and controllers, by namespace and object key
    /// (for the cluster-default topology spreading).
    spreaders: HashMap<String, HashMap<String, LabelSelector>>,
    in_flight: usize,
    bind_tx: mpsc::UnboundedSender<Bound>,
    /// Pods whose binding is in flight or done but not yet seen, by store
    /// key: (ledger key, node, the pod as reserved).
    binding: HashMap<String, (String, String, Arc<PodInfo>)>,
}

static EMPTY_LABELS: std::sync::LazyLock<serde_json::Map<String, Value>> =
    std::sync::LazyLock::new(serde_json::Map::new);

fn pods_rt() -> &'static ResourceType {
    rt("", "pods")
}

/// Pods placed per turn before informer events are folded in again.
const TURN: usize = 256;
/// The kinds whose initial list must be in the ledger before placing.
const NEEDED: [&str; 2] = ["Node", "Pod"];

impl Driver {
    async fn run(
        mut self,
        mut informers: mpsc::Receiver<Batch>,
        mut binds: mpsc::UnboundedReceiver<Bound>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Fold in everything already delivered.
            while let Ok(b) = informers.try_recv() {
                self.apply(b);
            }
            while let Ok(b) = binds.try_recv() {
                self.bound(b);
            }
            if self.flush {
                self.flush = false;
                self.flush_unschedulable(false);
            }
            let ready = NEEDED.iter().all(|k| self.synced.contains(k));
            let now = Instant::now();
            while let Some((at, key)) = self.backoff.first().cloned() {
                if at > now {
                    break;
                }
                self.backoff.pop_first();
                self.activate(&key);
            }
            let mut placed = 0;
            while ready
                && placed < TURN
                && self.in_flight < self.options.bind_concurrency
                && !self.active.is_empty()
            {
                if let Some(key) = self.active.pop() {
                    self.schedule_one(&key);
                    placed += 1;
                }
            }
            if ready && !self.active.is_empty() && self.in_flight < self.options.bind_concurrency {
                // More to place: let other tasks run, then go on.
                tokio::task::yield_now().await;
                continue;
            }
            let wake = self
                .backoff
                .first()
                .map(|(at, _)| *at)
                .unwrap_or_else(|| now + Duration::from_secs(3600));
            tokio::select! {
                b = informers.recv() => match b {
                    Some(b) => self.apply(b),
                    None => return,
                },
                Some(b) = binds.recv() => self.bound(b),
                _ = tokio::time::sleep_until(wake) => {}
                _ = tick.tick() => self.flush_unschedulable(true),
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
        if kind == "Pod" {
            if self.confirm_binding(o) {
                return;
            }
            if o.field("spec.nodeName").is_some_and(|n| !n.is_empty()) {
                // Bound: whatever binding was awaited is over.
                self.binding.remove(&o.key);
            }
        }
        let v = o.shared_value();
        match kind {
            "Pod" => self.pod_upsert(&v),
            "Node" => match NodeInfo::from_json(&v) {
                Ok(info) => {
                    if self.ledger.node_view(&info.name) != Some(&info) {
                        self.ledger.upsert_node(info);
                        self.flush = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(node = %o.name, error = %e, "node not usable for scheduling")
                }
            },
            "Namespace" => {
                let labels = v["metadata"]["labels"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                self.ledger.set_namespace_labels(&o.name, labels);
                self.flush = true;
            }
            "PodDisruptionBudget" => match Pdb::from_json(&v) {
                Ok(p) => {
                    self.pdbs.insert(o.key.clone(), p);
                }
                Err(e) => tracing::debug!(pdb = %o.name, error = %e, "PodDisruptionBudget skipped"),
            },
            _ => {
                // Services, ReplicationControllers, ReplicaSets, StatefulSets:
                // their selectors drive the cluster-default spreading.
                let sel = &v["spec"]["selector"];
                let parsed = match kind {
                    "Service" | "ReplicationController" => {
                        sel.as_object().filter(|m| !m.is_empty()).and_then(|m| {
                            LabelSelector::from_label_selector(&json!({"matchLabels": m})).ok()
                        })
                    }
                    _ => LabelSelector::from_label_selector(sel)
                        .ok()
                        .filter(|s| !s.is_empty()),
                };
                let ns = self.spreaders.entry(o.namespace.clone()).or_default();
                match parsed {
                    Some(s) => {
                        ns.insert(o.key.clone(), s);
                    }
                    None => {
                        ns.remove(&o.key);
                    }
                }
            }
        }
    }

    fn delete(&mut self, kind: &str, o: &Arc<CachedObject>) {
        match kind {
            "Pod" => {
                self.binding.remove(&o.key);
                let v = o.shared_value();
                let uid = v["metadata"]["uid"].as_str().unwrap_or("");
                let key = if uid.is_empty() {
                    format!("{}/{}", o.namespace, o.name)
                } else {
                    uid.to_string()
                };
                self.forget_pending(&key);
                if self.ledger.remove_pod(&key) {
                    self.flush = true;
                }
            }
            "Node" => {
                self.ledger.remove_node(&o.name);
            }
            "Namespace" => self.ledger.remove_namespace(&o.name),
            "PodDisruptionBudget" => {
                self.pdbs.remove(&o.key);
            }
            _ => {
                if let Some(ns) = self.spreaders.get_mut(&o.namespace) {
                    ns.remove(&o.key);
                }
            }
        }
    }

    fn pod_upsert(&mut self, v: &Value) {
        let info = match PodInfo::from_json(v) {
            Ok(i) => Arc::new(i),
            Err(e) => {
                tracing::warn!(pod = %v["metadata"]["name"], error = %e, "pod not usable for scheduling");
                return;
            }
        };
        let key = info.key.clone();
        if info.node_name.is_some() {
            // Bound (by us, another scheduler, or at creation).
            let before = self
                .ledger
                .placed_pod(&key)
                .map(|(p, _)| (p.labels.clone(), p.terminal));
            self.forget_pending(&key);
            self.ledger.apply_pod_info(info.clone());
            match before {
                Some((labels, _)) if info.terminal || labels != info.labels => self.flush = true,
                _ => {}
            }
            return;
        }
        let scheduler = v["spec"]["schedulerName"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_SCHEDULER_NAME);
        let profile = self
            .options
            .profiles
            .iter()
            .position(|p| p.name == scheduler);
        if info.terminal || info.terminating {
            // Finished or being deleted: nothing to place or keep room for.
            self.forget_pending(&key);
            self.ledger.remove_pod(&key);
            return;
        }
        // Nominations (`status.nominatedNodeName`) hold room whichever
        // scheduler set them; not while our own reservation is in flight.
        if self
            .pending
            .get(&key)
            .is_none_or(|p| p.state != State::Binding)
        {
            self.ledger.apply_pod_info(info.clone());
        }
        let Some(profile) = profile else {
            // Another scheduler's pod.
            self.forget_pending(&key);
            return;
        };
        let condition = v["status"]["conditions"].as_array().and_then(|cs| {
            cs.iter().find(|c| c["type"] == "PodScheduled").map(|c| {
                (
                    c["status"].as_str().unwrap_or("").to_string(),
                    c["message"].as_str().unwrap_or("").to_string(),
                )
            })
        });
        let uid = v["metadata"]["uid"].as_str().unwrap_or("").to_string();
        match self.pending.get_mut(&key) {
            None => {
                let now = Instant::now();
                let gated = info.scheduling_gated;
                self.pending.insert(
                    key.clone(),
                    Pending {
                        info: info.clone(),
                        uid,
                        store_key: pods_rt().key(Some(&info.namespace), &info.name),
                        profile,
                        state: if gated { State::Gated } else { State::Active },
                        attempts: 0,
                        retry_at: now,
                        since: now,
                        condition,
                    },
                );
                if !gated {
                    self.active.push(&info);
                }
            }
            Some(p) => {
                p.condition = condition;
                // Our own status writes (condition, nomination) change
                // nothing placement reads; only a real change requeues.
                let changed = !same_for_scheduling(&p.info, &info);
                p.info = info.clone();
                p.profile = profile;
                if !changed {
                    return;
                }
                match p.state {
                    State::Binding | State::Active => {}
                    State::Gated if info.scheduling_gated => {}
                    State::Gated | State::Backoff | State::Unschedulable => {
                        if info.scheduling_gated {
                            p.state = State::Gated;
                            self.unschedulable.remove(&key);
                            self.active.remove(&key);
                        } else {
                            self.unschedulable.remove(&key);
                            p.state = State::Active;
                            self.active.push(&info);
                        }
                    }
                }
            }
        }
    }

    /// The watch event of a pod this driver just bound, carrying nothing
    /// but the binding (same node, labels, not finished): confirms the
    /// reservation from the fields the cache extracted, without parsing the
    /// pod again. Anything else takes the full path.
    fn confirm_binding(&mut self, o: &Arc<CachedObject>) -> bool {
        let Some((key, node, info)) = self.binding.get(&o.key) else {
            return false;
        };
        let bound_there = o.field("spec.nodeName").as_deref() == Some(node.as_str());
        let phase = o.field("status.phase").unwrap_or_default();
        let finished = phase == "Succeeded" || phase == "Failed";
        let same_labels = o.labels.as_ref().unwrap_or(&EMPTY_LABELS) == &info.labels;
        if !bound_there || finished || !same_labels {
            return false;
        }
        let mut bound = (**info).clone();
        bound.node_name = Some(node.clone());
        let key = key.clone();
        self.binding.remove(&o.key);
        self.forget_pending(&key);
        self.ledger.apply_pod_info(Arc::new(bound));
        true
    }

    /// Drops a pod from the queues (bound, deleted, or not ours).
    fn forget_pending(&mut self, key: &str) {
        if let Some(p) = self.pending.remove(key) {
            if p.state == State::Binding {
                self.binding.remove(&p.store_key);
            }
            match p.state {
                State::Active => {
                    self.active.remove(key);
                }
                State::Backoff => {
                    self.backoff.remove(&(p.retry_at, key.to_string()));
                }
                State::Unschedulable => {
                    self.unschedulable.remove(key);
                }
                State::Binding | State::Gated => {}
            }
        }
    }

    /// Moves unschedulable pods back to the queue: all of them (a cluster
    /// event), or those waiting longer than `max_unschedulable`.
    fn flush_unschedulable(&mut self, only_expired: bool) {
        let now = Instant::now();
        let keys: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|k| {
                !only_expired
                    || self.pending.get(*k).is_some_and(|p| {
                        now.duration_since(p.since) >= self.options.max_unschedulable
                    })
            })
            .cloned()
            .collect();
        for key in keys {
            self.unschedulable.remove(&key);
            let Some(p) = self.pending.get_mut(&key) else {
                continue;
            };
            if p.retry_at > now {
                p.state = State::Backoff;
                self.backoff.insert((p.retry_at, key));
            } else {
                self.activate(&key);
            }
        }
    }

    fn activate(&mut self, key: &str) {
        if let Some(p) = self.pending.get_mut(key) {
            p.state = State::Active;
            self.active.push(&p.info);
        }
    }

    // ----- placing -----------------------------------------------------------

    fn schedule_one(&mut self, key: &str) {
        let Some(p) = self.pending.get(key) else {
            return;
        };
        if p.state != State::Active {
            return;
        }
        let profile = p.profile;
        let config = &self.options.profiles[profile].config;
        let info = Arc::new(
            (*p.info)
                .clone()
                .with_default_spread_selector(self.default_selector(&p.info)),
        );
        match schedule(&self.ledger, &info, config, self.next_start) {
            Ok(placement) => {
                self.next_start = placement.next_start_index;
                if let Err(r) = self
                    .ledger
                    .reserve(&placement.node, info.clone(), Check::Resources)
                {
                    // Cannot happen on the snapshot just read; retry anyway.
                    tracing::error!(pod = %info.name, rejected = %r, "reservation refused");
                    self.retry_later(key);
                    return;
                }
                let p = self.pending.get_mut(key).expect("pending");
                p.state = State::Binding;
                self.binding.insert(
                    p.store_key.clone(),
                    (key.to_string(), placement.node.clone(), info.clone()),
                );
                self.in_flight += 1;
                let server = self.server.clone();
                let tx = self.bind_tx.clone();
                let pod = ObjectRef::pod(&info.namespace, &info.name, &p.uid);
                let node = placement.node;
                let key = key.to_string();
                tokio::spawn(async move {
                    let result = bind(&server, &pod, &node).await;
                    let _ = tx.send(Bound {
                        key,
                        pod,
                        node,
                        result,
                    });
                });
            }
            Err(diagnosis) => {
                self.stats
                    .unschedulable_attempts
                    .fetch_add(1, Ordering::Relaxed);
                self.next_start = diagnosis.next_start_index;
                // PostFilter (DefaultPreemption) runs on every failure, as
                // upstream's: its verdict is part of the message.
                let mut post = None;
                let mut nominate = Nomination::Keep;
                // (Not with no nodes at all: upstream's "no nodes available
                // to schedule pods" is not a fit error.)
                let pdbs: Vec<Pdb> = self.pdbs.values().cloned().collect();
                let outcome = (diagnosis.num_all_nodes > 0)
                    .then(|| preempt(&self.ledger, &info, &diagnosis, &pdbs, config));
                if outcome.as_ref().is_some_and(|o| o.clears_nomination()) {
                    self.ledger.remove_nomination(key);
                    if info.nominated_node_name.is_some() {
                        nominate = Nomination::Clear;
                    }
                }
                match outcome {
                    Some(PreemptOutcome::Preempt(pre)) => {
                        self.stats.preemptions.fetch_add(1, Ordering::Relaxed);
                        self.evict(&info, &pre.node, &pre.victims);
                        // Less important pods nominated there may no longer
                        // fit: their nominations go, and they try again.
                        for other in self.ledger.nominated_below(&pre.node, info.priority) {
                            if let Some((o, _)) = self.ledger.nominated_pod(&other) {
                                let (ns, name) = (o.namespace.clone(), o.name.clone());
                                self.patch_status(
                                    &ns,
                                    &name,
                                    json!({"status": {"nominatedNodeName": null}}),
                                );
                            }
                            self.ledger.remove_nomination(&other);
                            if self.unschedulable.remove(&other) {
                                self.activate(&other);
                            }
                        }
                        self.ledger.nominate(&pre.node, info.clone());
                        nominate = Nomination::Set(pre.node);
                    }
                    Some(PreemptOutcome::NotPossible { message }) => post = Some(message),
                    None => {}
                }
                let message = diagnosis.failed_scheduling_message(post.as_deref());
                self.unschedulable(key, &message, nominate);
            }
        }
    }

    /// Upstream `DefaultSelector`: the selectors of the services,
    /// replication controllers, replica sets and stateful sets selecting the
    /// pod, ANDed; only needed when the pod has no spread constraints.
    fn default_selector(&self, pod: &PodInfo) -> Option<LabelSelector> {
        if !pod.spread_constraints.is_empty() {
            return None;
        }
        let ns = self.spreaders.get(&pod.namespace)?;
        let mut reqs = Vec::new();
        for s in ns.values() {
            if s.matches(Some(&pod.labels)) {
                reqs.extend(s.requirements().iter().cloned());
            }
        }
        if reqs.is_empty() {
            None
        } else {
            Some(LabelSelector::from_requirements(reqs))
        }
    }

    fn backoff_for(&self, attempts: u32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).min(16);
        (self.options.initial_backoff * factor).min(self.options.max_backoff)
    }

    /// Marks a pod unschedulable: event, condition, nomination; it waits
    /// for a cluster event (or its backoff, then the flush).
    fn unschedulable(&mut self, key: &str, message: &str, nominate: Nomination) {
        let backoff = {
            let attempts = self.pending.get(key).map(|p| p.attempts + 1).unwrap_or(1);
            self.backoff_for(attempts)
        };
        let Some(p) = self.pending.get_mut(key) else {
            return;
        };
        let now = Instant::now();
        p.attempts += 1;
        p.retry_at = now + backoff;
        p.since = now;
        p.state = State::Unschedulable;
        self.unschedulable.insert(key.to_string());
        let obj = ObjectRef::pod(&p.info.namespace, &p.info.name, &p.uid);
        self.recorder
            .warning(&obj, "FailedScheduling", message.to_string());
        let same = p
            .condition
            .as_ref()
            .is_some_and(|(s, m)| s == "False" && m == message);
        let renominate = match &nominate {
            Nomination::Keep => false,
            Nomination::Clear => true,
            Nomination::Set(n) => p.info.nominated_node_name.as_ref() != Some(n),
        };
        if same && !renominate {
            return;
        }
        p.condition = Some(("False".into(), message.to_string()));
        let now = navarch_api::meta::rfc3339(jiff::Timestamp::now());
        let mut patch = json!({"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message, "lastProbeTime": null, "lastTransitionTime": now}]}});
        match nominate {
            Nomination::Keep => {}
            Nomination::Clear => patch["status"]["nominatedNodeName"] = Value::Null,
            Nomination::Set(n) => patch["status"]["nominatedNodeName"] = json!(n),
        }
        let (ns, name) = (p.info.namespace.clone(), p.info.name.clone());
        self.patch_status(&ns, &name, patch);
    }

    /// Puts a pod back after a backoff (an error, not a verdict).
    fn retry_later(&mut self, key: &str) {
        let attempts = self.pending.get(key).map(|p| p.attempts + 1).unwrap_or(1);
        let backoff = self.backoff_for(attempts);
        if let Some(p) = self.pending.get_mut(key) {
            p.attempts = attempts;
            p.retry_at = Instant::now() + backoff;
            p.state = State::Backoff;
            self.backoff.insert((p.retry_at, key.to_string()));
        }
    }

    /// Writes a pending pod's scheduling status (condition, nomination)
    /// only while it is still unbound: a write decided before someone bound
    /// the pod must not land after the binding (compare-and-swap on the
    /// resourceVersion it was checked at).
    fn patch_status(&self, ns: &str, name: &str, patch: Value) {
        let server = self.server.clone();
        let (ns, name) = (ns.to_string(), name.to_string());
        tokio::spawn(async move {
            for _ in 0..5 {
                let (pod, rv) = match server.read(pods_rt(), Some(&ns), &name).await {
                    Ok(x) => x,
                    Err(_) => return,
                };
                if pod["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty())
                {
                    return;
                }
                let mut guarded = patch.clone();
                guarded["metadata"] = json!({"resourceVersion": rv.to_string()});
                match patch_pod_status(&server, &ns, &name, guarded).await {
                    Ok(()) => return,
                    Err(e) if e.code == 409 => continue,
                    Err(e) if e.code == 404 => return,
                    Err(e) => {
                        tracing::debug!(pod = %name, error = %e, "pod status update failed");
                        return;
                    }
                }
            }
        });
    }

    /// Preemption: mark each victim (`DisruptionTarget`), delete it
    /// gracefully, and record why.
    fn evict(&self, preemptor: &PodInfo, node: &str, victims: &[navarch_scheduler::Victim]) {
        for v in victims {
            // Ledger keys are uids (namespace/name only for pods without one).
            let uid = if v.key.contains('/') {
                String::new()
            } else {
                v.key.clone()
            };
            let obj = ObjectRef::pod(&v.namespace, &v.name, &uid);
            let preemptor_uid = self
                .pending
                .get(&preemptor.key)
                .map(|p| p.uid.clone())
                .unwrap_or_default();
            self.recorder.normal(
                &obj,
                "Preempted",
                format!("Preempted by pod {preemptor_uid} on node {node}"),
            );
            let server = self.server.clone();
            let (ns, name) = (v.namespace.clone(), v.name.clone());
            let profile = self
                .pending
                .get(&preemptor.key)
                .map(|p| self.options.profiles[p.profile].name.clone())
                .unwrap_or_else(|| DEFAULT_SCHEDULER_NAME.into());
            tokio::spawn(async move {
                let pods = rt("", "pods");
                let now = navarch_api::meta::rfc3339(jiff::Timestamp::now());
                let patch = json!({"status": {"conditions": [{
                    "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                    "message": format!("{profile}: preempting to accommodate a higher priority pod"),
                    "lastTransitionTime": now}]}});
                if let Err(e) = patch_pod_status(&server, &ns, &name, patch).await {
                    if e.code == 404 {
                        return;
                    }
                    tracing::debug!(pod = %name, error = %e, "marking a preemption victim failed");
                }
                let del = DeleteOptions {
                    precondition_uid: Some(uid).filter(|u| !u.is_empty()),
                    ..Default::default()
                };
                if let Err(e) = server.delete(pods, Some(&ns), &name, &del).await {
                    if e.code != 404 && e.code != 409 {
                        tracing::warn!(pod = %name, error = %e, "deleting a preemption victim failed");
                    }
                }
            });
        }
    }

    // ----- binding results ---------------------------------------------------

    fn bound(&mut self, b: Bound) {
        self.in_flight -= 1;
        match b.result {
            Ok(()) => {
                self.stats.scheduled.fetch_add(1, Ordering::Relaxed);
                let message = format!(
                    "Successfully assigned {}/{} to {}",
                    b.pod.namespace, b.pod.name, b.node
                );
                self.recorder.normal(&b.pod, "Scheduled", message);
                // The pod's watch event (with spec.nodeName) confirms the
                // reservation and leaves the queue.
                if let Some(p) = self.pending.get_mut(&b.key) {
                    if p.state == State::Binding {
                        self.pending.remove(&b.key);
                    }
                }
            }
            Err(e) => {
                self.ledger.forget(&b.key);
                self.stats.bind_failures.fetch_add(1, Ordering::Relaxed);
                if e.code == 404 {
                    self.forget_pending(&b.key);
                    return;
                }
                let Some(p) = self.pending.get(&b.key) else {
                    return;
                };
                if p.state != State::Binding {
                    return;
                }
                self.binding.remove(&p.store_key);
                tracing::debug!(pod = %p.info.name, node = %b.node, error = %e, "binding failed");
                self.recorder.warning(
                    &b.pod,
                    "FailedScheduling",
                    format!("Binding rejected: {}", e.message),
                );
                self.retry_later(&b.key);
            }
        }
    }
}

fn write_options() -> WriteOptions {
    WriteOptions {
        field_manager: Some(DEFAULT_SCHEDULER_NAME.into()),
        ..Default::default()
    }
}

/// A strategic-merge patch of `pods/status` (conditions merge by type).
async fn patch_pod_status(
    server: &ApiServer,
    ns: &str,
    name: &str,
    patch: Value,
) -> Result<(), ApiError> {
    server
        .patch(
            pods_rt(),
            Some(ns),
            name,
            Some(navarch_api::Subresource::Status),
            PatchType::Strategic,
            patch,
            &write_options(),
        )
        .await
        .map(|_| ())
}

async fn bind(server: &ApiServer, pod: &ObjectRef, node: &str) -> Result<(), ApiError> {
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    server
        .bind(
            rt("", "pods"),
            Some(&pod.namespace),
            &pod.name,
            &binding,
            &write_options(),
        )
        .await
}

/// Whether two versions of a pending pod differ in anything placement
/// reads (status-only changes such as our own condition writes do not).
fn same_for_scheduling(a: &PodInfo, b: &PodInfo) -> bool {
    let mut b2 = b.clone();
    b2.nominated_node_name = a.nominated_node_name.clone();
    b2.started = a.started;
    *a == b2
}
