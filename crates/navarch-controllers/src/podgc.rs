//! The pod garbage collector (upstream's `pod-garbage-collector`), every
//! `period` (upstream 20 s):
//!
//! * **terminated pods** (Succeeded or Failed) beyond `threshold`
//!   (`--terminated-pod-gc-threshold`, 12,500) are deleted, oldest
//!   creationTimestamp first;
//! * **orphaned pods**, bound to a node that no longer exists and still
//!   missing after a quarantine (upstream 40 s), are marked
//!   `DisruptionTarget` (`DeletionByPodGC`) and force-deleted: no kubelet
//!   is left to finish them;
//! * **unscheduled terminating pods** (a deletion timestamp and no node)
//!   are force-deleted;
//! * **terminating pods on out-of-service nodes** (not Ready and tainted
//!   `node.kubernetes.io/out-of-service:NoExecute`, upstream's
//!   non-graceful node shutdown) are force-deleted.

use crate::informer::{Batch, Change, Informer};
use crate::rt;
use navarch_api::patch::PatchType;
use navarch_api::{ApiError, Subresource};
use navarch_apiserver::cache::CachedObject;
use navarch_apiserver::{ApiServer, DeleteOptions, WriteOptions};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

/// Settings (upstream kube-controller-manager's).
#[derive(Debug, Clone)]
pub struct PodGcOptions {
    /// `--terminated-pod-gc-threshold`; 0 disables the terminated-pod pass.
    pub threshold: usize,
    /// How often the collector runs (upstream `gcCheckPeriod`, 20 s).
    pub period: Duration,
    /// How long a missing node must stay missing (upstream 40 s).
    pub quarantine: Duration,
}

impl Default for PodGcOptions {
    fn default() -> Self {
        PodGcOptions {
            threshold: 12_500,
            period: Duration::from_secs(20),
            quarantine: Duration::from_secs(40),
        }
    }
}

/// Starts the collector; it stops with `shutdown`.
pub fn spawn(server: Arc<ApiServer>, options: PodGcOptions, shutdown: CancellationToken) {
    let (tx, mut rx) = mpsc::channel(64);
    for r in [rt("", "nodes"), rt("", "pods")] {
        Informer::start(server.cache.clone(), r, tx.clone(), shutdown.clone());
    }
    drop(tx);
    tokio::spawn(async move {
        let mut gc = PodGc {
            server,
            options,
            nodes: HashMap::new(),
            pods: HashMap::new(),
            missing_since: HashMap::new(),
            in_flight: HashSet::new(),
            synced: HashSet::new(),
        };
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
        let mut tick = tokio::time::interval(gc.options.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                b = rx.recv() => match b {
                    Some(b) => gc.apply(b),
                    None => return,
                },
                Some(k) = done_rx.recv() => { gc.in_flight.remove(&k); }
                _ = tick.tick() => {
                    if gc.synced.len() == 2 {
                        gc.collect(&done_tx);
                    }
                }
            }
        }
    });
}

/// What the collector keeps of a node.
struct Node {
    ready: bool,
    out_of_service: bool,
}

struct PodGc {
    server: Arc<ApiServer>,
    options: PodGcOptions,
    nodes: HashMap<String, Node>,
    pods: HashMap<String, Arc<CachedObject>>,
    /// Nodes pods are bound to that do not exist, since when.
    missing_since: HashMap<String, Instant>,
    in_flight: HashSet<String>,
    synced: HashSet<&'static str>,
}

/// Why a pod is collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Terminated,
    Orphaned,
    UnscheduledTerminating,
    OutOfService,
}

impl PodGc {
    fn apply(&mut self, batch: Batch) {
        for change in batch.changes {
            match (batch.rt.kind, change) {
                (k, Change::Synced) => {
                    self.synced.insert(k);
                }
                ("Node", Change::Upsert(o)) => {
                    let v = o.shared_value();
                    let ready = v["status"]["conditions"]
                        .as_array()
                        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                        .is_some_and(|c| c["status"] == "True");
                    let out_of_service = v["spec"]["taints"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|t| t["key"] == OUT_OF_SERVICE && t["effect"] == "NoExecute");
                    self.nodes.insert(
                        o.name.clone(),
                        Node {
                            ready,
                            out_of_service,
                        },
                    );
                }
                ("Node", Change::Delete(o)) => {
                    self.nodes.remove(&o.name);
                }
                ("Pod", Change::Upsert(o)) => {
                    self.pods.insert(format!("{}/{}", o.namespace, o.name), o);
                }
                ("Pod", Change::Delete(o)) => {
                    self.pods.remove(&format!("{}/{}", o.namespace, o.name));
                }
                _ => {}
            }
        }
    }

    /// One pass; the deletes run in the background.
    fn collect(&mut self, done: &mpsc::UnboundedSender<String>) {
        let now = Instant::now();
        let mut victims: Vec<(String, Reason)> = Vec::new();
        let mut terminated: Vec<&Arc<CachedObject>> = Vec::new();
        let mut missing: HashSet<String> = HashSet::new();
        for (key, o) in &self.pods {
            let node = o.field("spec.nodeName").unwrap_or_default();
            let phase = o.field("status.phase").unwrap_or_default();
            if phase == "Succeeded" || phase == "Failed" {
                terminated.push(o);
            }
            let terminating = crate::deleting(o);
            if node.is_empty() {
                if terminating {
                    victims.push((key.clone(), Reason::UnscheduledTerminating));
                }
                continue;
            }
            match self.nodes.get(&node) {
                None => {
                    missing.insert(node.clone());
                    let since = *self.missing_since.entry(node).or_insert(now);
                    if now.saturating_duration_since(since) >= self.options.quarantine {
                        victims.push((key.clone(), Reason::Orphaned));
                    }
                }
                Some(n) if terminating && !n.ready && n.out_of_service => {
                    victims.push((key.clone(), Reason::OutOfService));
                }
                Some(_) => {}
            }
        }
        self.missing_since.retain(|n, _| missing.contains(n));
        let t = self.options.threshold;
        if t > 0 && terminated.len() > t {
            let mut by_age: Vec<(String, String)> = terminated
                .iter()
                .map(|o| {
                    let created = o.value()["metadata"]["creationTimestamp"]
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    (created, format!("{}/{}", o.namespace, o.name))
                })
                .collect();
            by_age.sort();
            let excess = terminated.len() - t;
            victims.extend(
                by_age
                    .into_iter()
                    .take(excess)
                    .map(|(_, k)| (k, Reason::Terminated)),
            );
        }
        for (key, reason) in victims {
            if !self.in_flight.insert(key.clone()) {
                continue;
            }
            let Some(o) = self.pods.get(&key) else {
                self.in_flight.remove(&key);
                continue;
            };
            let uid = o.value()["metadata"]["uid"]
                .as_str()
                .unwrap_or("")
                .to_string();
            tracing::info!(pod = %key, ?reason, "garbage collecting pod");
            let (server, done) = (self.server.clone(), done.clone());
            let (ns, name) = (o.namespace.clone(), o.name.clone());
            tokio::spawn(async move {
                if let Err(e) = delete(&server, &ns, &name, &uid, reason).await {
                    if e.code != 404 && e.code != 409 {
                        tracing::warn!(pod = %key, error = %e, "pod garbage collection failed");
                    }
                }
                let _ = done.send(key);
            });
        }
    }
}

async fn delete(
    server: &ApiServer,
    ns: &str,
    name: &str,
    uid: &str,
    reason: Reason,
) -> Result<(), ApiError> {
    // Upstream marks a live pod Failed before force-deleting it.
    if reason != Reason::Terminated {
        let now = navarch_api::meta::rfc3339(jiff::Timestamp::now());
        let message = match reason {
            Reason::Orphaned => "PodGC: node no longer exists",
            Reason::OutOfService => "PodGC: node is out of service",
            _ => "PodGC: pod is terminating and not scheduled",
        };
        let patch = json!({"status": {"phase": "Failed", "conditions": [{"type": "DisruptionTarget",
            "status": "True", "reason": "DeletionByPodGC", "message": message,
            "lastTransitionTime": now}]}});
        let r = server
            .patch(
                rt("", "pods"),
                Some(ns),
                name,
                Some(Subresource::Status),
                PatchType::Strategic,
                patch,
                &WriteOptions::default(),
            )
            .await;
        match r {
            Err(e) if e.code == 404 => return Ok(()),
            // The delete matters more than the marking.
            Err(e) => tracing::debug!(pod = %name, error = %e, "marking pod Failed"),
            Ok(_) => {}
        }
    }
    let opts = DeleteOptions {
        grace_period_seconds: Some(0),
        precondition_uid: Some(uid.to_string()).filter(|u| !u.is_empty()),
        ..Default::default()
    };
    server
        .delete(rt("", "pods"), Some(ns), name, &opts)
        .await
        .map(|_| ())
}
