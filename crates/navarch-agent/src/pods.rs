//! The pod manager: watches the pods bound to this node and keeps one
//! [`worker`](crate::worker) per pod, admitting new pods against the node's
//! allocatable resources first — on the scheduler's own ledger
//! (`navarch_scheduler::Ledger::reserve`), so the agent and the scheduler
//! count requests (init containers, sidecars, overhead), pod slots and host
//! ports the same way and can never disagree about what fits.
//!
//! When the server is unreachable the watch retries with back-off and the
//! workers (and their containers) carry on. Sandboxes of pods that no longer
//! exist in the API are removed once a complete list has been seen, never
//! before.

use crate::api::PodApi;
use crate::labels;
use crate::worker::{self, Admission, NodeContext, WorkerHandle, WorkerMsg};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use navarch_runtime::{Runtime, SandboxFilter};
use navarch_scheduler::{Check, Ledger, NodeInfo, PodInfo, Resources};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Most pods a node runs (the kubelet's default `maxPods`).
pub const MAX_PODS: i64 = 110;

pub struct PodManager {
    ctx: Arc<NodeContext>,
    runtime: Arc<dyn Runtime>,
    api: Arc<dyn PodApi>,
    workers: HashMap<String, WorkerHandle>,
    /// This node and the pods admitted to it.
    ledger: Ledger,
    done_tx: mpsc::UnboundedSender<String>,
    done_rx: mpsc::UnboundedReceiver<String>,
    cancel: CancellationToken,
}

impl PodManager {
    pub fn new(
        ctx: Arc<NodeContext>,
        runtime: Arc<dyn Runtime>,
        api: Arc<dyn PodApi>,
        cancel: CancellationToken,
    ) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let mut ledger = Ledger::new();
        ledger.upsert_node(admission_node(&ctx));
        PodManager {
            ctx,
            runtime,
            api,
            workers: HashMap::new(),
            ledger,
            done_tx,
            done_rx,
            cancel,
        }
    }

    /// Watches this node's pods until cancelled.
    pub async fn run(mut self, client: kube::Client) {
        let pods: Api<Pod> = Api::all(client);
        let config =
            watcher::Config::default().fields(&format!("spec.nodeName={}", self.ctx.node_name));
        let mut stream = watcher(pods, config).boxed();
        // uids seen during the current (re)list.
        let mut listing: Option<HashSet<String>> = None;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                Some(uid) = self.done_rx.recv() => {
                    self.workers.remove(&uid);
                    self.ledger.remove_pod(&uid);
                }
                ev = stream.next() => match ev {
                    None => return,
                    Some(Err(e)) => warn!(error = %e, "watching pods failed; pods keep running, retrying"),
                    Some(Ok(ev)) => match ev {
                        watcher::Event::Init => listing = Some(HashSet::new()),
                        watcher::Event::InitApply(p) => {
                            if let Some(l) = listing.as_mut() {
                                l.insert(p.metadata.uid.clone().unwrap_or_default());
                            }
                            self.apply(p).await;
                        }
                        watcher::Event::InitDone => {
                            if let Some(seen) = listing.take() {
                                self.cleanup(&seen).await;
                            }
                        }
                        watcher::Event::Apply(p) => self.apply(p).await,
                        watcher::Event::Delete(p) => {
                            let uid = p.metadata.uid.clone().unwrap_or_default();
                            if let Some(w) = self.workers.get(&uid) {
                                let _ = w.tx.send(WorkerMsg::Removed);
                            }
                        }
                    },
                },
            }
        }
    }

    async fn apply(&mut self, pod: Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if let Some(w) = self.workers.get(&uid) {
            let _ = w.tx.send(WorkerMsg::Update(Box::new(pod)));
            return;
        }
        let admission = self.admit(&pod, &uid).await;
        if let Admission::Rejected { reason, message } = &admission {
            info!(pod = %key(&pod), %reason, %message, "pod rejected");
        }
        let handle = worker::spawn(
            self.ctx.clone(),
            self.runtime.clone(),
            self.api.clone(),
            pod,
            admission,
            self.done_tx.clone(),
            self.cancel.child_token(),
        );
        self.workers.insert(uid, handle);
    }

    /// The kubelet's admission: enough cpu, memory, ephemeral storage,
    /// extended resources, pod slots and free host ports left (the
    /// scheduler's resource check on this node's ledger). Pods this node
    /// already runs (adopted after a restart) and pods that already ended
    /// are not checked again.
    async fn admit(&mut self, pod: &Pod, uid: &str) -> Admission {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded") | Some("Failed")) {
            return Admission::Admitted;
        }
        let info = match serde_json::to_value(pod)
            .map_err(|e| e.to_string())
            .and_then(|v| PodInfo::from_json(&v).map_err(|e| e.to_string()))
        {
            Ok(mut i) => {
                // The ledger keys pods by uid; the node is this one.
                i.key = uid.to_string();
                i.node_name = None;
                Arc::new(i)
            }
            Err(e) => {
                return Admission::Rejected {
                    reason: "UnexpectedAdmissionError".into(),
                    message: format!("Pod was rejected: {e}"),
                }
            }
        };
        let mut filter = SandboxFilter::default();
        filter
            .labels
            .insert(labels::POD_UID.into(), uid.to_string());
        let known = self
            .runtime
            .list_pod_sandboxes(filter)
            .await
            .map(|l| !l.is_empty())
            .unwrap_or(false);
        let node = self.ctx.node_name.clone();
        if known || pod.metadata.deletion_timestamp.is_some() {
            // Already running here: counted, never refused.
            self.ledger.apply_pod_info(Arc::new(PodInfo {
                node_name: Some(node),
                ..(*info).clone()
            }));
            return Admission::Admitted;
        }
        let used = self.ledger.requested(&node).cloned().unwrap_or_default();
        match self.ledger.reserve(&node, info.clone(), Check::Resources) {
            Ok(()) => Admission::Admitted,
            Err(rejected) => rejection(&rejected.reasons, &info, &used, &self.ledger, &node),
        }
    }

    /// After a complete (re)list: workers of pods that vanished while the
    /// watch was down are told so, and sandboxes of pods the API no longer
    /// has are removed.
    async fn cleanup(&mut self, seen: &HashSet<String>) {
        for (uid, w) in &self.workers {
            if !seen.contains(uid) {
                let _ = w.tx.send(WorkerMsg::Removed);
            }
        }
        let Ok(sandboxes) = self
            .runtime
            .list_pod_sandboxes(SandboxFilter::default())
            .await
        else {
            return;
        };
        for sb in sandboxes {
            let uid = sb
                .config
                .labels
                .get(labels::POD_UID)
                .cloned()
                .unwrap_or_default();
            if seen.contains(&uid) || self.workers.contains_key(&uid) {
                continue;
            }
            info!(sandbox = %sb.id, pod = %format!("{}/{}", sb.config.namespace, sb.config.name), "removing the sandbox of a pod the API no longer has");
            if let Err(e) = self.runtime.remove_pod_sandbox(&sb.id).await {
                warn!(error = %e, "removing orphaned sandbox failed");
            }
            let dir = self.ctx.data_dir.join("pods").join(&uid);
            let _ = crate::volumes::teardown(&dir);
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::remove_dir_all(sb.config.log_directory);
        }
    }

    /// Number of pods with a worker.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }
}

/// The node as the admission ledger sees it: its allocatable resources,
/// [`MAX_PODS`] slots, and pods sharing its network (the process runtime),
/// so container ports are host ports.
fn admission_node(ctx: &NodeContext) -> NodeInfo {
    let a = &ctx.allocatable;
    let mut labels = navarch_scheduler::Labels::new();
    labels.insert(
        navarch_scheduler::HOST_NETWORK_NODE_LABEL.to_string(),
        "true".to_string(),
    );
    NodeInfo {
        name: ctx.node_name.clone(),
        uid: String::new(),
        labels,
        taints: Vec::new(),
        unschedulable: false,
        allocatable: Resources {
            milli_cpu: a.cpu_millis,
            memory: a.memory_bytes,
            ephemeral_storage: a.ephemeral_storage_bytes,
            pods: MAX_PODS,
            scalar: Default::default(),
        },
        host_network: true,
    }
}

/// The kubelet's rejection for the first failed check: `OutOf<resource>`
/// with requested / used / capacity, or `NodePorts`.
fn rejection(
    reasons: &[String],
    pod: &PodInfo,
    used: &Resources,
    ledger: &Ledger,
    node: &str,
) -> Admission {
    let cap = ledger
        .node_view(node)
        .map(|n| n.allocatable.clone())
        .unwrap_or_default();
    let first = reasons.first().map(String::as_str).unwrap_or("");
    let (resource, requested, used, capacity) = match first {
        "Too many pods" => ("pods", 1, used.pods, cap.pods),
        "Insufficient cpu" => ("cpu", pod.requests.milli_cpu, used.milli_cpu, cap.milli_cpu),
        "Insufficient memory" => ("memory", pod.requests.memory, used.memory, cap.memory),
        "Insufficient ephemeral-storage" => (
            "ephemeral-storage",
            pod.requests.ephemeral_storage,
            used.ephemeral_storage,
            cap.ephemeral_storage,
        ),
        other => match other.strip_prefix("Insufficient ") {
            Some(name) => (
                name,
                pod.requests.scalar(name),
                used.scalar(name),
                cap.scalar(name),
            ),
            None => {
                return Admission::Rejected {
                    reason: "NodePorts".into(),
                    message: format!(
                        "Pod was rejected: Predicate NodePorts failed: {}",
                        reasons.join(", ")
                    ),
                }
            }
        },
    };
    Admission::Rejected {
        reason: format!("OutOf{resource}"),
        message: format!(
            "Pod was rejected: Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}"
        ),
    }
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::NodeAllocatable;
    use serde_json::json;

    fn ledger() -> Ledger {
        let ctx = NodeContext {
            node_name: "n1".into(),
            host_ip: "10.0.0.5".into(),
            data_dir: std::env::temp_dir(),
            allocatable: NodeAllocatable {
                cpu_millis: 2000,
                memory_bytes: 4 << 30,
                ephemeral_storage_bytes: 10 << 30,
            },
            runtime_scheme: "fake".into(),
        };
        let mut l = Ledger::new();
        l.upsert_node(admission_node(&ctx));
        l
    }

    fn pod(uid: &str, cpu: &str, port: Option<i64>) -> Arc<PodInfo> {
        let mut c = json!({"name": "c", "resources": {"requests": {"cpu": cpu}}});
        if let Some(p) = port {
            c["ports"] = json!([{"containerPort": p}]);
        }
        // An init container bigger than the app container counts, as the
        // scheduler counts it.
        Arc::new(
            PodInfo::from_json(&json!({"metadata": {"name": uid, "uid": uid},
                "spec": {"initContainers": [{"name": "i", "resources": {"requests": {"cpu": "10m"}}}],
                         "containers": [c]}}))
            .unwrap(),
        )
    }

    fn admit(l: &mut Ledger, p: Arc<PodInfo>) -> Admission {
        let used = l.requested("n1").cloned().unwrap_or_default();
        match l.reserve("n1", p.clone(), Check::Resources) {
            Ok(()) => Admission::Admitted,
            Err(r) => rejection(&r.reasons, &p, &used, l, "n1"),
        }
    }

    #[test]
    fn admission_counts_like_the_scheduler_and_words_like_the_kubelet() {
        let mut l = ledger();
        assert!(matches!(
            admit(&mut l, pod("a", "1500m", Some(8080))),
            Admission::Admitted
        ));
        match admit(&mut l, pod("b", "1", None)) {
            Admission::Rejected { reason, message } => {
                assert_eq!(reason, "OutOfcpu");
                assert_eq!(message, "Pod was rejected: Node didn't have enough resource: cpu, requested: 1000, used: 1500, capacity: 2000");
            }
            a => panic!("{a:?}"),
        }
        // Pods share the node's network: the same container port collides.
        match admit(&mut l, pod("c", "100m", Some(8080))) {
            Admission::Rejected { reason, .. } => assert_eq!(reason, "NodePorts"),
            a => panic!("{a:?}"),
        }
        assert!(matches!(
            admit(&mut l, pod("d", "100m", Some(8081))),
            Admission::Admitted
        ));
        // A finished pod gives its room back.
        assert!(l.remove_pod("a"));
        assert!(matches!(
            admit(&mut l, pod("b", "1", None)),
            Admission::Admitted
        ));
    }
}
