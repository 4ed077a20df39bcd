//! The pod manager: watches the pods bound to this node and keeps one
//! [`worker`](crate::worker) per pod, admitting new pods against the node's
//! allocatable resources first.
//!
//! When the server is unreachable the watch retries with back-off and the
//! workers (and their containers) carry on. Sandboxes of pods that no longer
//! exist in the API are removed once a complete list has been seen, never
//! before.

use crate::api::PodApi;
use crate::labels;
use crate::worker::{self, container_resources, Admission, NodeContext, WorkerHandle, WorkerMsg};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use navarch_runtime::{Runtime, SandboxFilter};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Most pods a node runs (the kubelet's default `maxPods`).
pub const MAX_PODS: i64 = 110;

struct Admitted {
    cpu_millis: i64,
    memory_bytes: i64,
}

pub struct PodManager {
    ctx: Arc<NodeContext>,
    runtime: Arc<dyn Runtime>,
    api: Arc<dyn PodApi>,
    workers: HashMap<String, WorkerHandle>,
    admitted: HashMap<String, Admitted>,
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
        PodManager {
            ctx,
            runtime,
            api,
            workers: HashMap::new(),
            admitted: HashMap::new(),
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
                    self.admitted.remove(&uid);
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

    /// The kubelet's admission: enough cpu, memory and pod slots left.
    /// Pods this node already runs (adopted after a restart) and pods that
    /// already ended are not checked again.
    async fn admit(&mut self, pod: &Pod, uid: &str) -> Admission {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded") | Some("Failed")) {
            return Admission::Admitted;
        }
        let (cpu, mem) = pod_requests(pod);
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
        if !known && pod.metadata.deletion_timestamp.is_none() {
            let used_cpu: i64 = self.admitted.values().map(|a| a.cpu_millis).sum();
            let used_mem: i64 = self.admitted.values().map(|a| a.memory_bytes).sum();
            let alloc = &self.ctx.allocatable;
            if self.admitted.len() as i64 + 1 > MAX_PODS {
                return Admission::Rejected {
                    reason: "OutOfpods".into(),
                    message: format!(
                        "Pod was rejected: Node didn't have enough resource: pods, requested: 1, used: {}, capacity: {MAX_PODS}",
                        self.admitted.len()
                    ),
                };
            }
            if cpu > 0 && used_cpu + cpu > alloc.cpu_millis {
                return Admission::Rejected {
                    reason: "OutOfcpu".into(),
                    message: format!(
                        "Pod was rejected: Node didn't have enough resource: cpu, requested: {cpu}, used: {used_cpu}, capacity: {}",
                        alloc.cpu_millis
                    ),
                };
            }
            if mem > 0 && used_mem + mem > alloc.memory_bytes {
                return Admission::Rejected {
                    reason: "OutOfmemory".into(),
                    message: format!(
                        "Pod was rejected: Node didn't have enough resource: memory, requested: {mem}, used: {used_mem}, capacity: {}",
                        alloc.memory_bytes
                    ),
                };
            }
        }
        self.admitted.insert(
            uid.to_string(),
            Admitted {
                cpu_millis: cpu,
                memory_bytes: mem,
            },
        );
        Admission::Admitted
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

/// The pod's effective cpu (millicores) and memory (bytes) requests: the
/// larger of the containers' sum and the largest init container, plus
/// overhead, as the scheduler counts them.
pub fn pod_requests(pod: &Pod) -> (i64, i64) {
    let Some(spec) = &pod.spec else { return (0, 0) };
    let req = |c: &k8s_openapi::api::core::v1::Container| -> (i64, i64) {
        let r = container_resources(c);
        let mem = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|m| m.get("memory"))
            .and_then(|q| navarch_api::kinds::util::parse_quantity(&q.0))
            .map(|n| ((n + 999_999_999) / 1_000_000_000) as i64)
            .or(r.memory_limit_bytes.map(|b| b as i64))
            .unwrap_or(0);
        (r.cpu_request_millis.unwrap_or(0) as i64, mem)
    };
    let mut cpu = 0;
    let mut mem = 0;
    for c in &spec.containers {
        let (c, m) = req(c);
        cpu += c;
        mem += m;
    }
    for c in spec.init_containers.iter().flatten() {
        let (c, m) = req(c);
        cpu = cpu.max(c);
        mem = mem.max(m);
    }
    if let Some(o) = &spec.overhead {
        if let Some(q) = o
            .get("cpu")
            .and_then(|q| navarch_api::kinds::util::parse_quantity(&q.0))
        {
            cpu += ((q + 999_999) / 1_000_000) as i64;
        }
        if let Some(q) = o
            .get("memory")
            .and_then(|q| navarch_api::kinds::util::parse_quantity(&q.0))
        {
            mem += ((q + 999_999_999) / 1_000_000_000) as i64;
        }
    }
    (cpu, mem)
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}
