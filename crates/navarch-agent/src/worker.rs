//! The pod worker: one task per pod bound to this node, level-triggered.
//!
//! Every wake-up (a pod update, a runtime event of its sandbox, a probe
//! result, a timer) runs [`Worker::sync`], which looks at the pod spec and
//! what the runtime has, does the next steps (sandbox, volumes, init
//! containers in order, containers with restart policy and back-off,
//! probes, termination) and writes the status through the `status`
//! subresource when it differs from what was last written.
//!
//! Containers are found again in the runtime by their labels, so a worker
//! started after an agent restart adopts what is running: restart counts
//! come from the runtime's attempt numbers, nothing is started twice.

use crate::api::{PodApi, PodEvent};
use crate::env::{self, ConfigObjects, NodeAllocatable, PodContext};
use crate::labels;
use crate::probe::{self, ProbeEvent, ProbeKind, ProbeTarget};
use crate::status::{merge_diff, pod_phase, set_condition, ContainerPhase};
use crate::volumes::{self, PodVolumes};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod};
use navarch_runtime::{
    ContainerConfig, ContainerFilter, ContainerId, ContainerState, ContainerStatus,
    PodSandboxConfig, Resources, Runtime, SandboxFilter, SandboxId, SandboxState, UserSpec,
};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// First back-off after a container restarts and crashes again.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// Longest back-off (the kubelet's 5 minutes).
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long without crashing starts over at
/// [`BACKOFF_INITIAL`].
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How often a worker re-checks its pod without being told to (and
/// refreshes ConfigMap, Secret and downward API volumes).
pub const RESYNC: Duration = Duration::from_secs(10);
/// Retry delay after a failed step (API unreachable, volume not ready).
const RETRY: Duration = Duration::from_secs(2);
const DEFAULT_GRACE: i64 = 30;

/// What every worker of a node shares.
pub struct NodeContext {
    pub node_name: String,
    pub host_ip: String,
    /// The agent's data directory: pods under `pods/<uid>`, logs under
    /// `logs/<namespace>_<name>_<uid>`.
    pub data_dir: PathBuf,
    pub allocatable: NodeAllocatable,
    /// `process` for `process://<id>` container ids.
    pub runtime_scheme: String,
}

/// What the manager tells a worker.
#[derive(Debug)]
pub enum WorkerMsg {
    /// The pod as the API has it now.
    Update(Box<Pod>),
    /// The pod is gone from the API.
    Removed,
}

/// Whether the node took the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// Rejected at admission (`OutOfcpu`, …): the pod fails without running.
    Rejected {
        reason: String,
        message: String,
    },
}

/// A running worker.
pub struct WorkerHandle {
    pub tx: mpsc::UnboundedSender<WorkerMsg>,
}

/// Starts the worker of `pod`. It sends the pod's uid on `done` when it has
/// finished (the pod was removed and cleaned up).
pub fn spawn(
    ctx: Arc<NodeContext>,
    runtime: Arc<dyn Runtime>,
    api: Arc<dyn PodApi>,
    pod: Pod,
    admission: Admission,
    done: mpsc::UnboundedSender<String>,
    cancel: CancellationToken,
) -> WorkerHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let (probe_tx, probe_rx) = mpsc::channel(64);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut w = Worker {
        ns: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: uid.clone(),
        ctx,
        runtime,
        api,
        pod,
        removed: false,
        rejected: match admission {
            Admission::Admitted => None,
            Admission::Rejected { reason, message } => Some((reason, message)),
        },
        sandbox: None,
        containers: BTreeMap::new(),
        probe_tx,
        probes: HashMap::new(),
        probe_ok: HashMap::new(),
        start_time: None,
        volumes: None,
        volumes_at: None,
        objects: None,
        mount_error: None,
        initialized: false,
        terminal: None,
        last_written: None,
        wake_at: None,
        stopping: HashSet::new(),
        finished: false,
        cancel: cancel.child_token(),
    };
    tokio::spawn(async move {
        w.run(rx, probe_rx, cancel).await;
        let _ = done.send(uid);
    });
    WorkerHandle { tx }
}

#[derive(Debug, Default)]
struct CState {
    current: Option<ContainerStatus>,
    previous: Option<ContainerStatus>,
    /// When the container was last restarted after a failure, and the
    /// back-off that restart started.
    last_restart: Option<(Instant, Duration)>,
    /// Why the container waits instead of running (back-off, config error).
    waiting: Option<(String, String)>,
}

struct Probing {
    container: ContainerId,
    cancel: CancellationToken,
}

/// How a pod ended on this node.
#[derive(Debug, Clone)]
struct Terminal {
    phase: &'static str,
    reason: Option<String>,
    message: Option<String>,
}

struct Worker {
    ctx: Arc<NodeContext>,
    runtime: Arc<dyn Runtime>,
    api: Arc<dyn PodApi>,
    pod: Pod,
    ns: String,
    name: String,
    uid: String,
    removed: bool,
    rejected: Option<(String, String)>,
    sandbox: Option<SandboxId>,
    containers: BTreeMap<String, CState>,
    probe_tx: mpsc::Sender<ProbeEvent>,
    probes: HashMap<(String, ProbeKind), Probing>,
    probe_ok: HashMap<(String, ProbeKind), bool>,
    start_time: Option<Timestamp>,
    volumes: Option<PodVolumes>,
    volumes_at: Option<Instant>,
    objects: Option<ConfigObjects>,
    mount_error: Option<String>,
    initialized: bool,
    terminal: Option<Terminal>,
    last_written: Option<Value>,
    wake_at: Option<Instant>,
    stopping: HashSet<ContainerId>,
    finished: bool,
    /// Cancels the probe workers.
    cancel: CancellationToken,
}

impl Worker {
    async fn run(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<WorkerMsg>,
        mut probe_rx: mpsc::Receiver<ProbeEvent>,
        shutdown: CancellationToken,
    ) {
        let mut events = self.runtime.events();
        self.adopt().await;
        self.sync().await;
        while !self.finished {
            let wake = self
                .wake_at
                .unwrap_or_else(|| Instant::now() + RESYNC)
                .min(Instant::now() + RESYNC);
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Agent shutdown: containers keep running, a new agent
                    // adopts them.
                    self.cancel.cancel();
                    return;
                }
                msg = rx.recv() => {
                    let Some(msg) = msg else { self.cancel.cancel(); return };
                    self.take(msg);
                    while let Ok(msg) = rx.try_recv() {
                        self.take(msg);
                    }
                }
                ev = events.recv() => match ev {
                    Ok(ev) if Some(&ev.sandbox_id) == self.sandbox.as_ref() => {
                        if ev.kind == navarch_runtime::ContainerEventKind::Stopped {
                            self.stopping.remove(&ev.container_id);
                        }
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        events = self.runtime.events();
                    }
                },
                ev = probe_rx.recv() => {
                    if let Some(ev) = ev {
                        self.on_probe(ev);
                        while let Ok(ev) = probe_rx.try_recv() {
                            self.on_probe(ev);
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            self.sync().await;
        }
        self.cancel.cancel();
    }

    fn take(&mut self, msg: WorkerMsg) {
        match msg {
            WorkerMsg::Update(p) => self.pod = *p,
            WorkerMsg::Removed => self.removed = true,
        }
    }

    fn wake_in(&mut self, d: Duration) {
        let at = Instant::now() + d;
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    fn event(&self, container: Option<&str>, warning: bool, reason: &str, message: String) {
        let field_path = container
            .map(|c| {
                let init = self.spec_init().iter().any(|s| s.name == c);
                if init {
                    format!("spec.initContainers{{{c}}}")
                } else {
                    format!("spec.containers{{{c}}}")
                }
            })
            .unwrap_or_default();
        self.api.event(PodEvent {
            namespace: self.ns.clone(),
            pod: self.name.clone(),
            uid: self.uid.clone(),
            field_path,
            warning,
            reason: reason.to_string(),
            message,
        });
    }

    fn spec_containers(&self) -> &[Container] {
        self.pod
            .spec
            .as_ref()
            .map(|s| s.containers.as_slice())
            .unwrap_or(&[])
    }

    fn spec_init(&self) -> &[Container] {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_deref())
            .unwrap_or(&[])
    }

    fn restart_policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }

    fn pod_dir(&self) -> PathBuf {
        self.ctx.data_dir.join("pods").join(&self.uid)
    }

    fn log_dir(&self) -> PathBuf {
        self.ctx
            .data_dir
            .join("logs")
            .join(format!("{}_{}_{}", self.ns, self.name, self.uid))
    }

    /// Finds this pod's sandbox and containers left by an earlier agent.
    async fn adopt(&mut self) {
        let mut filter = SandboxFilter::default();
        filter
            .labels
            .insert(labels::POD_UID.into(), self.uid.clone());
        let Ok(mut found) = self.runtime.list_pod_sandboxes(filter).await else {
            return;
        };
        found.sort_by_key(|s| (s.state == SandboxState::Ready, s.created_at));
        if let Some(newest) = found.pop() {
            info!(pod = %format!("{}/{}", self.ns, self.name), sandbox = %newest.id, "adopted pod sandbox");
            self.sandbox = Some(newest.id);
            self.start_time = self
                .pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0)
                .or(Some(newest.created_at));
        }
        for stale in found {
            let _ = self.runtime.remove_pod_sandbox(&stale.id).await;
        }
    }

    /// Reads the runtime's containers of the sandbox into `self.containers`.
    async fn refresh_containers(&mut self) {
        let Some(sandbox) = self.sandbox.clone() else {
            return;
        };
        let filter = ContainerFilter {
            sandbox_id: Some(sandbox),
            ..ContainerFilter::default()
        };
        let list = match self.runtime.list_containers(filter).await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "listing containers failed");
                return;
            }
        };
        let mut by_name: BTreeMap<String, Vec<ContainerStatus>> = BTreeMap::new();
        for c in list {
            by_name.entry(c.name.clone()).or_default().push(c);
        }
        for (name, mut list) in by_name {
            list.sort_by_key(|c| c.attempt);
            let current = list.pop();
            let previous = list.pop();
            // Keep one dead container per name for `logs --previous`.
            for old in list {
                let _ = self.runtime.remove_container(&old.id).await;
            }
            let st = self.containers.entry(name).or_default();
            st.current = current;
            st.previous = previous;
        }
    }

    async fn sync(&mut self) {
        self.wake_at = None;
        if let Some((reason, message)) = self.rejected.clone() {
            if self.removed || self.pod.metadata.deletion_timestamp.is_some() {
                self.finish_deletion().await;
                return;
            }
            self.terminal = Some(Terminal {
                phase: "Failed",
                reason: Some(reason),
                message: Some(message),
            });
            self.write_status().await;
            return;
        }
        if self.removed || self.pod.metadata.deletion_timestamp.is_some() {
            self.terminate().await;
            return;
        }
        if self.terminal.is_none() && self.sandbox.is_none() {
            // A pod that already ended (seen again after an agent restart)
            // is never run again.
            if let Some(phase) = self.pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
                if phase == "Succeeded" || phase == "Failed" {
                    self.terminal = Some(Terminal {
                        phase: if phase == "Succeeded" {
                            "Succeeded"
                        } else {
                            "Failed"
                        },
                        reason: self.pod.status.as_ref().and_then(|s| s.reason.clone()),
                        message: self.pod.status.as_ref().and_then(|s| s.message.clone()),
                    });
                }
            }
        }
        if self.start_time.is_none() {
            self.start_time = Some(
                self.pod
                    .status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map(|t| t.0)
                    .unwrap_or_else(Timestamp::now),
            );
        }
        self.refresh_containers().await;
        if self.terminal.is_none() {
            self.check_deadline().await;
        }
        if self.terminal.is_none() {
            self.run_pod().await;
        }
        if self.terminal.is_some() {
            self.stop_probes();
            self.stop_running(None, "").await;
        } else {
            self.manage_probes();
        }
        self.write_status().await;
    }

    async fn check_deadline(&mut self) {
        let Some(deadline) = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
        else {
            return;
        };
        let api_start = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0);
        let Some(start) = api_start.or(self.start_time) else {
            return;
        };
        let elapsed = Timestamp::now().duration_since(start);
        let limit = jiff::SignedDuration::from_secs(deadline);
        if elapsed >= limit {
            let message = "Pod was active on the node longer than the specified deadline";
            self.event(None, true, "DeadlineExceeded", message.into());
            self.terminal = Some(Terminal {
                phase: "Failed",
                reason: Some("DeadlineExceeded".into()),
                message: Some(message.into()),
            });
        } else {
            let left = (limit - elapsed).unsigned_abs();
            self.wake_in(left);
        }
    }

    /// Sandbox, volumes, init containers, containers.
    async fn run_pod(&mut self) {
        if self.sandbox.is_none() {
            let config = self.sandbox_config();
            match self.runtime.run_pod_sandbox(config).await {
                Ok(id) => self.sandbox = Some(id),
                Err(e) => {
                    self.event(
                        None,
                        true,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {e}"),
                    );
                    self.wake_in(RETRY);
                    return;
                }
            }
        }
        if !self.ensure_volumes().await {
            return;
        }
        let policy = self.restart_policy();
        // Init containers, in order.
        self.initialized = false;
        let inits: Vec<Container> = self.spec_init().to_vec();
        for spec in &inits {
            let sidecar = spec.restart_policy.as_deref() == Some("Always");
            let state = self
                .containers
                .get(&spec.name)
                .and_then(|c| c.current.as_ref())
                .map(|c| (c.state, c.exit_code.unwrap_or(0)));
            match state {
                None => {
                    self.start_container(spec, true).await;
                    if !sidecar {
                        return;
                    }
                }
                Some((ContainerState::Created, _)) => {
                    self.start_created(spec).await;
                    if !sidecar {
                        return;
                    }
                }
                Some((ContainerState::Running, _)) | Some((ContainerState::Unknown, _)) => {
                    if !sidecar {
                        return;
                    }
                }
                Some((ContainerState::Exited, 0)) if !sidecar => {}
                Some((ContainerState::Exited, _)) => {
                    if policy == "Never" && !sidecar {
                        self.terminal = Some(Terminal {
                            phase: "Failed",
                            reason: None,
                            message: None,
                        });
                        return;
                    }
                    self.restart_with_backoff(spec, true).await;
                    if !sidecar {
                        return;
                    }
                }
            }
        }
        self.initialized = true;
        let containers: Vec<Container> = self.spec_containers().to_vec();
        let mut all_done = !containers.is_empty();
        for spec in &containers {
            let state = self
                .containers
                .get(&spec.name)
                .and_then(|c| c.current.as_ref())
                .map(|c| (c.state, c.exit_code.unwrap_or(0)));
            match state {
                None => {
                    all_done = false;
                    self.start_container(spec, false).await;
                }
                Some((ContainerState::Created, _)) => {
                    all_done = false;
                    self.start_created(spec).await;
                }
                Some((ContainerState::Running, _)) | Some((ContainerState::Unknown, _)) => {
                    all_done = false;
                }
                Some((ContainerState::Exited, code)) => {
                    let restart = match policy.as_str() {
                        "Never" => false,
                        "OnFailure" => code != 0,
                        _ => true,
                    };
                    if restart {
                        all_done = false;
                        self.restart_with_backoff(spec, false).await;
                    }
                }
            }
        }
        if all_done {
            let phases: Vec<ContainerPhase> = containers
                .iter()
                .map(|c| self.container_phase(c, &policy))
                .collect();
            let phase = pod_phase(&policy, &phases);
            if phase == "Succeeded" || phase == "Failed" {
                self.terminal = Some(Terminal {
                    phase,
                    reason: None,
                    message: None,
                });
            }
        }
    }

    /// Fetches the ConfigMaps and Secrets the pod names and materialises its
    /// volumes (again every [`RESYNC`], so their contents follow updates).
    async fn ensure_volumes(&mut self) -> bool {
        let due = self
            .volumes_at
            .is_none_or(|at| at.elapsed() >= RESYNC || self.mount_error.is_some());
        if !due {
            return self.volumes.is_some();
        }
        let refs = env::references(&self.pod);
        match self.api.config_objects(&self.ns, &refs).await {
            Ok(o) => self.objects = Some(o),
            Err(e) => {
                debug!(error = %e, "fetching configmaps and secrets failed");
                if self.objects.is_none() {
                    self.wake_in(RETRY);
                    return false;
                }
            }
        }
        let objects = self.objects.clone().unwrap_or_default();
        let host_ips = [self.ctx.host_ip.clone()];
        let pctx = PodContext {
            pod: &self.pod,
            host_ip: &self.ctx.host_ip,
            pod_ips: &host_ips,
            node_allocatable: &self.ctx.allocatable,
        };
        let pod_dir = self.pod_dir();
        let result = volumes::prepare(&pctx, &pod_dir, &objects);
        self.volumes_at = Some(Instant::now());
        match result {
            Ok(v) => {
                self.volumes = Some(v);
                self.mount_error = None;
                true
            }
            Err(e) => {
                let msg = e.to_string();
                if self.mount_error.as_deref() != Some(msg.as_str()) || self.volumes.is_none() {
                    self.event(None, true, "FailedMount", msg.clone());
                }
                self.mount_error = Some(msg);
                self.wake_in(RETRY * 2);
                // Running containers keep their (older) volumes.
                self.volumes.is_some()
            }
        }
    }

    fn sandbox_config(&self) -> PodSandboxConfig {
        let mut labels_map = BTreeMap::new();
        labels_map.insert(labels::POD_NAMESPACE.into(), self.ns.clone());
        labels_map.insert(labels::POD_NAME.into(), self.name.clone());
        labels_map.insert(labels::POD_UID.into(), self.uid.clone());
        let containers = self.spec_containers();
        let sum = |f: fn(&Resources) -> Option<u64>| -> Option<u64> {
            let mut total = 0u64;
            for c in containers {
                total += f(&container_resources(c))?;
            }
            Some(total)
        };
        PodSandboxConfig {
            name: self.name.clone(),
            namespace: self.ns.clone(),
            uid: self.uid.clone(),
            attempt: 0,
            log_directory: self.log_dir(),
            labels: labels_map,
            annotations: BTreeMap::new(),
            resources: Resources {
                cpu_limit_millis: sum(|r| r.cpu_limit_millis),
                cpu_request_millis: None,
                memory_limit_bytes: sum(|r| r.memory_limit_bytes),
            },
        }
    }

    /// Restarts an exited container now, or reports the back-off.
    async fn restart_with_backoff(&mut self, spec: &Container, init: bool) {
        let now = Instant::now();
        let st = self.containers.entry(spec.name.clone()).or_default();
        if let Some((at, delay)) = st.last_restart {
            let until = at + delay;
            if now < until {
                let left = until - now;
                st.waiting = Some((
                    "CrashLoopBackOff".into(),
                    format!(
                        "back-off {} restarting failed container={} pod={}_{}({})",
                        human_secs(delay),
                        spec.name,
                        self.name,
                        self.ns,
                        self.uid
                    ),
                ));
                self.event(
                    Some(&spec.name),
                    true,
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {} in pod {}_{}({})",
                        spec.name, self.name, self.ns, self.uid
                    ),
                );
                self.wake_in(left);
                return;
            }
        }
        let next = match st.last_restart {
            Some((at, d)) if now.duration_since(at) < d + BACKOFF_RESET => (d * 2).min(BACKOFF_MAX),
            _ => BACKOFF_INITIAL,
        };
        st.last_restart = Some((now, next));
        self.start_container(spec, init).await;
    }

    async fn start_created(&mut self, spec: &Container) {
        let Some(id) = self
            .containers
            .get(&spec.name)
            .and_then(|c| c.current.as_ref())
            .map(|c| c.id.clone())
        else {
            return;
        };
        self.start_and_report(spec, &id).await;
    }

    /// Creates and starts the next attempt of a container.
    async fn start_container(&mut self, spec: &Container, init: bool) {
        let Some(sandbox) = self.sandbox.clone() else {
            return;
        };
        let attempt = self
            .containers
            .get(&spec.name)
            .and_then(|c| c.current.as_ref())
            .map(|c| c.attempt + 1)
            .unwrap_or(0);
        let objects = self.objects.clone().unwrap_or_default();
        let host_ips = [self.ctx.host_ip.clone()];
        let pctx = PodContext {
            pod: &self.pod,
            host_ip: &self.ctx.host_ip,
            pod_ips: &host_ips,
            node_allocatable: &self.ctx.allocatable,
        };
        let env_vars = match env::container_env_report(&pctx, spec, &objects) {
            Ok(report) => {
                for w in report.warnings {
                    self.event(Some(&spec.name), true, "InvalidEnvironmentVariableNames", w);
                }
                report.env
            }
            Err(e) => {
                self.config_error(spec, "CreateContainerConfigError", e.to_string());
                return;
            }
        };
        let mounts = match self
            .volumes
            .as_ref()
            .map(|v| volumes::container_mounts(spec, v, &env_vars))
            .unwrap_or_else(|| Ok(Vec::new()))
        {
            Ok(m) => m,
            Err(e) => {
                self.config_error(spec, "CreateContainerConfigError", e.message.clone());
                return;
            }
        };
        let command: Vec<String> = spec
            .command
            .iter()
            .flatten()
            .map(|s| env::expand(s, &env_vars))
            .collect();
        let args: Vec<String> = spec
            .args
            .iter()
            .flatten()
            .map(|s| env::expand(s, &env_vars))
            .collect();
        let mut clabels = BTreeMap::new();
        clabels.insert(labels::POD_NAMESPACE.into(), self.ns.clone());
        clabels.insert(labels::POD_NAME.into(), self.name.clone());
        clabels.insert(labels::POD_UID.into(), self.uid.clone());
        clabels.insert(labels::CONTAINER_NAME.into(), spec.name.clone());
        clabels.insert(
            labels::CONTAINER_TYPE.into(),
            if init { "init" } else { "regular" }.into(),
        );
        let config = ContainerConfig {
            name: spec.name.clone(),
            attempt,
            image: spec.image.clone().unwrap_or_default(),
            command,
            args,
            working_dir: spec.working_dir.as_ref().map(PathBuf::from),
            env: env_vars,
            mounts,
            log_path: PathBuf::from(format!("{}/{}.log", spec.name, attempt)),
            stdin: spec.stdin.unwrap_or(false),
            stdin_once: spec.stdin_once.unwrap_or(false),
            tty: spec.tty.unwrap_or(false),
            user: self.user_spec(spec),
            resources: container_resources(spec),
            labels: clabels,
            annotations: BTreeMap::new(),
        };
        let id = match self.runtime.create_container(&sandbox, config).await {
            Ok(id) => id,
            Err(e) => {
                self.config_error(spec, e.kube_reason(), e.to_string());
                return;
            }
        };
        self.event(
            Some(&spec.name),
            false,
            "Created",
            format!("Created container: {}", spec.name),
        );
        self.start_and_report(spec, &id).await;
    }

    async fn start_and_report(&mut self, spec: &Container, id: &ContainerId) {
        let result = self.runtime.start_container(id).await;
        match &result {
            Ok(()) => self.event(
                Some(&spec.name),
                false,
                "Started",
                format!("Started container {}", spec.name),
            ),
            Err(e) => self.event(Some(&spec.name), true, "Failed", format!("Error: {e}")),
        }
        let status = self.runtime.container_status(id).await.ok();
        let st = self.containers.entry(spec.name.clone()).or_default();
        st.waiting = None;
        if let Some(status) = status {
            if st.current.as_ref().map(|c| &c.id) != Some(&status.id) {
                if let Some(old) = st.previous.take() {
                    let _ = self.runtime.remove_container(&old.id).await;
                }
                st.previous = st.current.take();
            }
            st.current = Some(status);
        }
        if result.is_ok() {
            self.run_post_start(spec, id).await;
        }
    }

    /// Runs a `postStart` exec hook; a failing hook kills the container, as
    /// the kubelet does.
    async fn run_post_start(&mut self, spec: &Container, id: &ContainerId) {
        let Some(handler) = spec.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else {
            return;
        };
        if let Err(msg) = self.run_hook(handler, id, Duration::from_secs(30)).await {
            self.event(
                Some(&spec.name),
                true,
                "FailedPostStartHook",
                format!("PostStartHook failed: {msg}"),
            );
            let _ = self.runtime.stop_container(id, self.grace_for(spec)).await;
        }
    }

    async fn run_hook(
        &self,
        handler: &LifecycleHandler,
        id: &ContainerId,
        timeout: Duration,
    ) -> Result<(), String> {
        if let Some(exec) = &handler.exec {
            let cmd = exec.command.clone().unwrap_or_default();
            return match self.runtime.exec_sync(id, cmd, timeout).await {
                Ok(r) if r.exit_code == 0 => Ok(()),
                Ok(r) => Err(format!(
                    "command exited with {}: {}",
                    r.exit_code,
                    String::from_utf8_lossy(&r.stderr).trim()
                )),
                Err(e) => Err(e.to_string()),
            };
        }
        if let Some(sleep) = &handler.sleep {
            tokio::time::sleep(Duration::from_secs(sleep.seconds.max(0) as u64).min(timeout)).await;
            return Ok(());
        }
        // HTTP and TCP handlers are one probe attempt with the hook's timeout.
        if handler.http_get.is_none() && handler.tcp_socket.is_none() {
            return Ok(());
        }
        let probe = k8s_openapi::api::core::v1::Probe {
            http_get: handler.http_get.clone(),
            tcp_socket: handler.tcp_socket.clone(),
            timeout_seconds: Some(timeout.as_secs().max(1) as i32),
            ..Default::default()
        };
        let target = self.probe_target(id.clone(), None);
        match probe::probe_once(&probe, &target).await {
            probe::ProbeOutcome::Success => Ok(()),
            probe::ProbeOutcome::Failure(m) => Err(m),
        }
    }

    fn config_error(&mut self, spec: &Container, reason: &str, message: String) {
        self.event(
            Some(&spec.name),
            true,
            "Failed",
            format!("Error: {message}"),
        );
        let st = self.containers.entry(spec.name.clone()).or_default();
        st.waiting = Some((reason.to_string(), message));
        self.wake_in(RESYNC);
    }

    fn user_spec(&self, spec: &Container) -> UserSpec {
        let psc = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref());
        let csc = spec.security_context.as_ref();
        let uid = csc
            .and_then(|c| c.run_as_user)
            .or_else(|| psc.and_then(|p| p.run_as_user));
        let gid = csc
            .and_then(|c| c.run_as_group)
            .or_else(|| psc.and_then(|p| p.run_as_group));
        UserSpec {
            run_as_user: uid.and_then(|u| u32::try_from(u).ok()),
            run_as_group: gid.and_then(|g| u32::try_from(g).ok()),
            supplemental_groups: psc
                .and_then(|p| p.supplemental_groups.clone())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|g| u32::try_from(g).ok())
                .collect(),
        }
    }

    fn grace_for(&self, _spec: &Container) -> Duration {
        let secs = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(DEFAULT_GRACE);
        Duration::from_secs(secs.max(0) as u64)
    }

    fn probe_target(&self, id: ContainerId, spec: Option<&Container>) -> ProbeTarget {
        ProbeTarget {
            runtime: self.runtime.clone(),
            container_id: id,
            pod_ip: self.ctx.host_ip.clone(),
            ports: spec.and_then(|s| s.ports.clone()).unwrap_or_default(),
        }
    }

    fn on_probe(&mut self, ev: ProbeEvent) {
        match ev {
            ProbeEvent::Failed {
                container,
                kind: _,
                message,
            } => {
                self.event(Some(&container), true, "Unhealthy", message);
            }
            ProbeEvent::Result {
                container,
                kind,
                success,
            } => {
                let current = self
                    .containers
                    .get(&container)
                    .and_then(|c| c.current.as_ref())
                    .filter(|c| c.state == ContainerState::Running)
                    .map(|c| c.id.clone());
                let Some(id) = current else { return };
                if self
                    .probes
                    .get(&(container.clone(), kind))
                    .map(|p| &p.container)
                    != Some(&id)
                {
                    return;
                }
                self.probe_ok.insert((container.clone(), kind), success);
                let kill = !success && matches!(kind, ProbeKind::Liveness | ProbeKind::Startup);
                if kill && self.stopping.insert(id.clone()) {
                    let what = if kind == ProbeKind::Liveness {
                        "liveness"
                    } else {
                        "startup"
                    };
                    self.event(
                        Some(&container),
                        false,
                        "Killing",
                        format!("Container {container} failed {what} probe, will be restarted"),
                    );
                    let spec = self
                        .spec_containers()
                        .iter()
                        .chain(self.spec_init())
                        .find(|c| c.name == container)
                        .cloned();
                    let probe_grace = spec.as_ref().and_then(|s| {
                        let p = if kind == ProbeKind::Liveness {
                            s.liveness_probe.as_ref()
                        } else {
                            s.startup_probe.as_ref()
                        };
                        p.and_then(|p| p.termination_grace_period_seconds)
                    });
                    let grace = probe_grace
                        .map(|s| Duration::from_secs(s.max(0) as u64))
                        .unwrap_or_else(|| {
                            spec.as_ref().map(|s| self.grace_for(s)).unwrap_or_default()
                        });
                    let runtime = self.runtime.clone();
                    tokio::spawn(async move {
                        if let Err(e) = runtime.stop_container(&id, grace).await {
                            warn!(error = %e, "stopping container after a failed probe");
                        }
                    });
                }
            }
        }
    }

    /// Starts probe workers for running containers, stops those of
    /// containers that are gone.
    fn manage_probes(&mut self) {
        let specs: Vec<Container> = self
            .spec_init()
            .iter()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"))
            .chain(self.spec_containers())
            .cloned()
            .collect();
        let mut wanted: HashSet<(String, ProbeKind)> = HashSet::new();
        for spec in &specs {
            let Some(id) = self
                .containers
                .get(&spec.name)
                .and_then(|c| c.current.as_ref())
                .filter(|c| c.state == ContainerState::Running)
                .map(|c| c.id.clone())
            else {
                continue;
            };
            let started = spec.startup_probe.is_none()
                || self.probe_ok.get(&(spec.name.clone(), ProbeKind::Startup)) == Some(&true)
                    && self
                        .probes
                        .get(&(spec.name.clone(), ProbeKind::Startup))
                        .is_some_and(|p| p.container == id);
            let mut kinds = Vec::new();
            if let Some(p) = &spec.startup_probe {
                kinds.push((ProbeKind::Startup, p.clone()));
            }
            if started {
                if let Some(p) = &spec.liveness_probe {
                    kinds.push((ProbeKind::Liveness, p.clone()));
                }
                if let Some(p) = &spec.readiness_probe {
                    kinds.push((ProbeKind::Readiness, p.clone()));
                }
            }
            for (kind, probe) in kinds {
                let key = (spec.name.clone(), kind);
                wanted.insert(key.clone());
                if self.probes.get(&key).is_some_and(|p| p.container == id) {
                    continue;
                }
                if let Some(old) = self.probes.remove(&key) {
                    old.cancel.cancel();
                }
                // A new container starts unready, not started, alive.
                self.probe_ok
                    .insert(key.clone(), kind == ProbeKind::Liveness);
                let cancel = self.cancel.child_token();
                probe::spawn_worker(
                    kind,
                    spec.name.clone(),
                    probe,
                    self.probe_target(id.clone(), Some(spec)),
                    self.probe_tx.clone(),
                    cancel.clone(),
                );
                self.probes.insert(
                    key,
                    Probing {
                        container: id.clone(),
                        cancel,
                    },
                );
            }
        }
        self.probes.retain(|k, p| {
            let keep = wanted.contains(k);
            if !keep {
                p.cancel.cancel();
            }
            keep
        });
    }

    fn stop_probes(&mut self) {
        for (_, p) in self.probes.drain() {
            p.cancel.cancel();
        }
    }

    /// Stops every running container: preStop hook, SIGTERM, SIGKILL after
    /// the grace period. `grace` overrides the pod's.
    async fn stop_running(&mut self, grace: Option<Duration>, why: &str) {
        let mut running = Vec::new();
        let specs: Vec<Container> = self
            .spec_containers()
            .iter()
            .chain(self.spec_init())
            .cloned()
            .collect();
        for (name, st) in &self.containers {
            if let Some(c) = &st.current {
                if matches!(c.state, ContainerState::Running | ContainerState::Created) {
                    running.push((name.clone(), c.id.clone()));
                }
            }
        }
        if running.is_empty() {
            return;
        }
        let mut stops = Vec::new();
        let this = &*self;
        for (name, id) in running {
            let spec = specs.iter().find(|s| s.name == name).cloned();
            let grace = grace.unwrap_or_else(|| {
                spec.as_ref()
                    .map(|s| this.grace_for(s))
                    .unwrap_or(Duration::from_secs(DEFAULT_GRACE as u64))
            });
            if !why.is_empty() {
                this.event(
                    Some(&name),
                    false,
                    "Killing",
                    format!("Stopping container {name}"),
                );
            }
            let pre_stop = spec
                .as_ref()
                .and_then(|s| s.lifecycle.as_ref())
                .and_then(|l| l.pre_stop.clone());
            stops.push(async move {
                let started = Instant::now();
                if let Some(h) = pre_stop {
                    if let Err(msg) = this.run_hook(&h, &id, grace).await {
                        this.event(
                            Some(&name),
                            true,
                            "FailedPreStopHook",
                            format!("PreStopHook failed: {msg}"),
                        );
                    }
                }
                let left = grace.saturating_sub(started.elapsed());
                if let Err(e) = this.runtime.stop_container(&id, left).await {
                    warn!(error = %e, container = %name, "stopping container failed");
                }
            });
        }
        futures::future::join_all(stops).await;
        self.refresh_containers().await;
    }

    /// The pod is being deleted (or is gone from the API): stop it within
    /// its grace period, remove it from the API, clean up.
    async fn terminate(&mut self) {
        self.stop_probes();
        self.refresh_containers().await;
        self.stop_running(None, "delete").await;
        self.finish_deletion().await;
    }

    async fn finish_deletion(&mut self) {
        if !self.removed {
            // Final status before the object goes away (watchers see the
            // containers terminated).
            self.write_status().await;
            if let Err(e) = self.api.delete_pod(&self.ns, &self.name, &self.uid).await {
                warn!(error = %e, pod = %format!("{}/{}", self.ns, self.name), "removing pod from the API failed, retrying");
                self.wake_in(RETRY);
                return;
            }
        }
        if let Some(sandbox) = self.sandbox.take() {
            if let Err(e) = self.runtime.remove_pod_sandbox(&sandbox).await {
                warn!(error = %e, "removing pod sandbox failed");
                self.sandbox = Some(sandbox);
                self.wake_in(RETRY);
                return;
            }
        }
        let dir = self.pod_dir();
        if let Err(e) = volumes::teardown(&dir) {
            warn!(error = %e, "removing pod volumes failed");
        }
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(self.log_dir());
        info!(pod = %format!("{}/{}", self.ns, self.name), "pod removed");
        self.finished = true;
    }

    fn container_phase(&self, spec: &Container, policy: &str) -> ContainerPhase {
        let st = self.containers.get(&spec.name);
        let cur = st.and_then(|s| s.current.as_ref());
        match cur {
            None => {
                if st.is_some_and(|s| s.previous.is_some()) {
                    ContainerPhase::Restarting
                } else {
                    ContainerPhase::Waiting
                }
            }
            Some(c) => match c.state {
                ContainerState::Running | ContainerState::Unknown => ContainerPhase::Running,
                ContainerState::Created => {
                    if c.attempt > 0 {
                        ContainerPhase::Restarting
                    } else {
                        ContainerPhase::Waiting
                    }
                }
                ContainerState::Exited => {
                    let code = c.exit_code.unwrap_or(0);
                    let restart = match policy {
                        "Never" => false,
                        "OnFailure" => code != 0,
                        _ => true,
                    };
                    if restart && self.terminal.is_none() {
                        ContainerPhase::Restarting
                    } else if code == 0 {
                        ContainerPhase::Succeeded
                    } else {
                        ContainerPhase::Failed
                    }
                }
            },
        }
    }

    fn container_status_json(&self, spec: &Container, init: bool, pod_initializing: bool) -> Value {
        let st = self.containers.get(&spec.name);
        let cur = st.and_then(|s| s.current.as_ref());
        let prev = st.and_then(|s| s.previous.as_ref());
        let waiting = st.and_then(|s| s.waiting.as_ref());
        let terminated = |c: &ContainerStatus| -> Value {
            let mut t = Map::new();
            t.insert("exitCode".into(), json!(c.exit_code.unwrap_or(0)));
            if let Some(r) = &c.reason {
                t.insert("reason".into(), json!(r));
            }
            if let Some(m) = &c.message {
                t.insert("message".into(), json!(m));
            }
            t.insert(
                "startedAt".into(),
                c.started_at.map(rfc3339).map_or(Value::Null, Value::from),
            );
            t.insert(
                "finishedAt".into(),
                c.finished_at.map(rfc3339).map_or(Value::Null, Value::from),
            );
            t.insert(
                "containerID".into(),
                json!(format!("{}://{}", self.ctx.runtime_scheme, c.id)),
            );
            json!({"terminated": t})
        };
        let waiting_state = |reason: &str, message: Option<&str>| -> Value {
            let mut w = Map::new();
            w.insert("reason".into(), json!(reason));
            if let Some(m) = message {
                w.insert("message".into(), json!(m));
            }
            json!({"waiting": w})
        };
        let running = cur.is_some_and(|c| c.state == ContainerState::Running);
        let (state, last) = match cur {
            Some(c) if c.state == ContainerState::Running || c.state == ContainerState::Unknown => {
                (
                    json!({"running": {"startedAt": c.started_at.map(rfc3339)}}),
                    prev.map(terminated).unwrap_or_else(|| json!({})),
                )
            }
            Some(c) if c.state == ContainerState::Exited => match waiting {
                Some((r, m)) if self.terminal.is_none() => {
                    (waiting_state(r, Some(m)), terminated(c))
                }
                _ => (
                    terminated(c),
                    prev.map(terminated).unwrap_or_else(|| json!({})),
                ),
            },
            _ => {
                let (r, m) = match waiting {
                    Some((r, m)) => (r.as_str(), Some(m.as_str())),
                    None if pod_initializing && !init => ("PodInitializing", None),
                    None => ("ContainerCreating", None),
                };
                (
                    waiting_state(r, m),
                    prev.map(terminated).unwrap_or_else(|| json!({})),
                )
            }
        };
        let started_ok = running
            && (spec.startup_probe.is_none()
                || self.probe_ok.get(&(spec.name.clone(), ProbeKind::Startup)) == Some(&true));
        let ready_ok = if init && spec.restart_policy.as_deref() != Some("Always") {
            cur.is_some_and(|c| c.state == ContainerState::Exited && c.exit_code == Some(0))
        } else {
            started_ok
                && (spec.readiness_probe.is_none()
                    || self
                        .probe_ok
                        .get(&(spec.name.clone(), ProbeKind::Readiness))
                        == Some(&true))
        };
        let mut s = Map::new();
        s.insert("name".into(), json!(spec.name));
        s.insert(
            "image".into(),
            json!(spec.image.clone().unwrap_or_default()),
        );
        s.insert(
            "imageID".into(),
            json!(cur.map(|c| c.image_ref.clone()).unwrap_or_default()),
        );
        if let Some(c) = cur {
            s.insert(
                "containerID".into(),
                json!(format!("{}://{}", self.ctx.runtime_scheme, c.id)),
            );
        }
        s.insert("ready".into(), json!(ready_ok));
        s.insert(
            "restartCount".into(),
            json!(cur.map(|c| c.attempt).unwrap_or(0)),
        );
        s.insert("started".into(), json!(started_ok));
        s.insert("state".into(), state);
        s.insert("lastState".into(), last);
        Value::Object(s)
    }

    /// The status this node reports for the pod, merged over the API's
    /// `current` one (fields others own, like the scheduler's conditions,
    /// are kept).
    fn desired_status(&self, current: &Value) -> Value {
        let mut status = current.clone();
        let now = rfc3339(Timestamp::now());
        let policy = self.restart_policy();
        let obj = status.as_object_mut().expect("object");
        let host_ip = self.ctx.host_ip.clone();
        obj.insert("hostIP".into(), json!(host_ip));
        obj.insert("hostIPs".into(), json!([{"ip": host_ip}]));
        let started = self.rejected.is_none();
        if started {
            obj.insert("podIP".into(), json!(host_ip));
            obj.insert("podIPs".into(), json!([{"ip": host_ip}]));
        }
        if let Some(t) = self.start_time {
            obj.insert("startTime".into(), json!(rfc3339(t)));
        }
        if let Some(spec) = &self.pod.spec {
            if let Ok(v) = serde_json::to_value(spec) {
                obj.insert("qosClass".into(), json!(navarch_api::kinds::qos_class(&v)));
            }
        }
        let init_specs = self.spec_init();
        let specs = self.spec_containers();
        let pod_initializing = !self.initialized && !init_specs.is_empty();
        if self.rejected.is_none() {
            if !init_specs.is_empty() {
                let v: Vec<Value> = init_specs
                    .iter()
                    .map(|c| self.container_status_json(c, true, pod_initializing))
                    .collect();
                obj.insert("initContainerStatuses".into(), json!(v));
            }
            let v: Vec<Value> = specs
                .iter()
                .map(|c| self.container_status_json(c, false, pod_initializing))
                .collect();
            obj.insert("containerStatuses".into(), json!(v));
        }
        let phase = match &self.terminal {
            Some(t) => t.phase,
            None if !self.initialized => "Pending",
            None => {
                let phases: Vec<ContainerPhase> = specs
                    .iter()
                    .map(|c| self.container_phase(c, &policy))
                    .collect();
                pod_phase(&policy, &phases)
            }
        };
        obj.insert("phase".into(), json!(phase));
        match &self.terminal {
            Some(t) => {
                if let Some(r) = &t.reason {
                    obj.insert("reason".into(), json!(r));
                }
                if let Some(m) = &t.message {
                    obj.insert("message".into(), json!(m));
                }
            }
            None => {
                obj.remove("reason");
                obj.remove("message");
            }
        }
        // Conditions.
        let mut conds: Vec<Value> = obj
            .get("conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !conds.iter().any(|c| c["type"] == "PodScheduled") {
            set_condition(&mut conds, "PodScheduled", true, None, None, &now);
        }
        if self.rejected.is_none() {
            let sandbox_ready = self.sandbox.is_some() && self.terminal.is_none();
            set_condition(
                &mut conds,
                "PodReadyToStartContainers",
                sandbox_ready,
                None,
                None,
                &now,
            );
            let unfinished_init: Vec<&str> = init_specs
                .iter()
                .filter(|c| {
                    let st = self
                        .containers
                        .get(&c.name)
                        .and_then(|s| s.current.as_ref());
                    let sidecar = c.restart_policy.as_deref() == Some("Always");
                    !match st {
                        Some(s) if sidecar => s.state == ContainerState::Running,
                        Some(s) => s.state == ContainerState::Exited && s.exit_code == Some(0),
                        None => false,
                    }
                })
                .map(|c| c.name.as_str())
                .collect();
            let initialized = self.initialized || unfinished_init.is_empty();
            let msg = format!(
                "containers with incomplete status: [{}]",
                unfinished_init.join(" ")
            );
            set_condition(
                &mut conds,
                "Initialized",
                initialized,
                (!initialized).then_some("ContainersNotInitialized"),
                (!initialized).then_some(msg.as_str()),
                &now,
            );
            let statuses = obj
                .get("containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let unready: Vec<&str> = statuses
                .iter()
                .filter(|s| s["ready"] != true)
                .filter_map(|s| s["name"].as_str())
                .collect();
            let terminal = self.terminal.is_some();
            let ready = unready.is_empty() && !terminal && initialized;
            let (reason, msg) = if terminal {
                (Some("PodCompleted"), None)
            } else if !unready.is_empty() {
                (
                    Some("ContainersNotReady"),
                    Some(format!(
                        "containers with unready status: [{}]",
                        unready.join(" ")
                    )),
                )
            } else {
                (None, None)
            };
            set_condition(
                &mut conds,
                "ContainersReady",
                ready,
                reason,
                msg.as_deref(),
                &now,
            );
            set_condition(&mut conds, "Ready", ready, reason, msg.as_deref(), &now);
        }
        obj.insert("conditions".into(), json!(conds));
        status
    }

    async fn write_status(&mut self) {
        // The API's status, as JSON (once per write; the desired status is
        // built over it and diffed against it).
        let current = self
            .pod
            .status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        let desired = self.desired_status(&current);
        if self.last_written.as_ref() == Some(&desired) {
            return;
        }
        let Some(patch) = merge_diff(&current, &desired) else {
            self.last_written = Some(desired);
            return;
        };
        match self
            .api
            .patch_status(&self.ns, &self.name, json!({ "status": patch }))
            .await
        {
            Ok(()) => self.last_written = Some(desired),
            Err(e) => {
                debug!(error = %e, pod = %format!("{}/{}", self.ns, self.name), "status write failed, will retry");
                self.wake_in(RETRY);
            }
        }
    }
}

/// Resource limits and requests of a container, for its cgroup.
pub fn container_resources(c: &Container) -> Resources {
    let q = |map: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
             key: &str|
     -> Option<i128> {
        map.and_then(|m| m.get(key))
            .and_then(|q| navarch_api::kinds::util::parse_quantity(&q.0))
    };
    let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let millis = |nano: i128| -> u64 { ((nano + 999_999) / 1_000_000).max(0) as u64 };
    let units = |nano: i128| -> u64 { ((nano + 999_999_999) / 1_000_000_000).max(0) as u64 };
    Resources {
        cpu_limit_millis: q(limits, "cpu").map(millis),
        cpu_request_millis: q(requests, "cpu").or_else(|| q(limits, "cpu")).map(millis),
        memory_limit_bytes: q(limits, "memory").map(units),
    }
}

/// Kubernetes' timestamp format: RFC 3339 in UTC with whole seconds.
pub fn rfc3339(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

/// Go's `time.Duration` text for whole seconds (`10s`, `1m20s`, `5m0s`).
fn human_secs(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
