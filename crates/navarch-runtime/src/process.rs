//! The `process` backend: each container is a host process, parented by a
//! per-container shim (see [`crate::shim`]), in its pod's cgroup, in a
//! private mount namespace when it has volumes.
//!
//! State lives under `state_dir`:
//! `sandboxes/<id>/sandbox.json` and `containers/<id>/container.json`
//! (written by the runtime), plus the shim's files next to the latter. A new
//! [`ProcessRuntime`] on the same directory adopts everything: running
//! containers are still running (pid + start time + boot id checked, so a
//! reused pid is not mistaken for them), containers that exited while the
//! agent was away report the exit code their shim recorded. Only when the
//! shim vanished too (killed, or the machine rebooted) is the exit code
//! unknown: the container is then reported exited with code 137 and reason
//! `ContainerStatusUnknown`, as the kubelet does for containers it cannot
//! find.

use crate::cgroup::{CgroupConfig, CgroupHandle, Cgroups};
use crate::cri_log;
use crate::error::{Error, Result, StartFailure};
use crate::fdio::{self, FdIo};
use crate::runtime::*;
use crate::shim::{
    self, read_json, write_json, Request, Response, ShimConfig, ShimState, StartReport,
};
use crate::sys::{self, ChildPlan, MountSetup};
use crate::types::*;
use futures::future::BoxFuture;
use futures::FutureExt;
use jiff::Timestamp;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// How the runtime runs the shim: `<program> <args…> start <container dir>`,
/// where `<program> <args…>` ends up in [`crate::shim_main`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// Whether volumes get a private mount namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MountMode {
    /// A private mount namespace when running as root; otherwise containers
    /// with mounts are refused with a clear error.
    #[default]
    Auto,
    /// Never: containers with mounts are refused.
    Disabled,
}

#[derive(Debug, Clone)]
pub struct ProcessRuntimeConfig {
    /// Where sandbox and container state is kept (the agent's data dir).
    pub state_dir: PathBuf,
    pub shim: ShimCommand,
    pub cgroups: CgroupConfig,
    pub log_rotation: LogRotation,
    pub mounts: MountMode,
}

impl ProcessRuntimeConfig {
    pub fn new(state_dir: impl Into<PathBuf>, shim: ShimCommand) -> Self {
        ProcessRuntimeConfig {
            state_dir: state_dir.into(),
            shim,
            cgroups: CgroupConfig::default(),
            log_rotation: LogRotation::default(),
            mounts: MountMode::Auto,
        }
    }
}

const SANDBOX_FILE: &str = "sandbox.json";
const CONTAINER_FILE: &str = "container.json";
/// Longest path a unix socket address holds.
const MAX_SOCKET_PATH: usize = 107;
const STOP_KILL_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SandboxRecord {
    id: SandboxId,
    config: PodSandboxConfig,
    state: SandboxState,
    created_at: Timestamp,
    cgroup: Option<CgroupHandle>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ContainerMeta {
    id: ContainerId,
    sandbox_id: SandboxId,
    config: ContainerConfig,
    created_at: Timestamp,
    log_path: PathBuf,
    cgroup: Option<CgroupHandle>,
    /// The boot the container was started in (`/proc/sys/kernel/random/boot_id`).
    boot_id: Option<String>,
}

struct ContainerRecord {
    dir: PathBuf,
    meta: Mutex<ContainerMeta>,
    /// Serialises start, stop and remove of this container.
    op: tokio::sync::Mutex<()>,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    shim: Option<ShimState>,
    exit: Option<ExitInfo>,
}

struct Inner {
    cfg: ProcessRuntimeConfig,
    cgroups: Cgroups,
    /// `Err(reason)` when volumes cannot be mounted privately.
    private_mounts: std::result::Result<(), String>,
    boot_id: Option<String>,
    sandboxes: Mutex<HashMap<SandboxId, SandboxRecord>>,
    containers: Mutex<HashMap<ContainerId, Arc<ContainerRecord>>>,
    events: broadcast::Sender<ContainerEvent>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// The process runtime. Dropping it stops its background tasks but not the
/// containers: a new one on the same state directory adopts them.
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

impl Drop for ProcessRuntime {
    fn drop(&mut self) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
    }
}

fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
}

impl ProcessRuntime {
    /// Opens the runtime on `config.state_dir`, adopting the sandboxes and
    /// containers found there. Must be called within a tokio runtime.
    pub async fn open(mut config: ProcessRuntimeConfig) -> Result<Self> {
        fs::create_dir_all(&config.state_dir)
            .and_then(|_| fs::canonicalize(&config.state_dir))
            .map(|d| config.state_dir = d)
            .map_err(|e| Error::io(format!("create {}", config.state_dir.display()), e))?;
        let sandboxes_dir = config.state_dir.join("sandboxes");
        let containers_dir = config.state_dir.join("containers");
        for d in [&sandboxes_dir, &containers_dir] {
            fs::create_dir_all(d).map_err(|e| Error::io(format!("create {}", d.display()), e))?;
        }
        // Container configs hold env values, Secrets included: owner only.
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&config.state_dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(format!("chmod {}", config.state_dir.display()), e))?;
        }
        let probe = containers_dir
            .join(ContainerId::generate().0)
            .join(shim::SOCKET_FILE);
        if probe.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::InvalidConfig {
                field: "state_dir".into(),
                reason: format!(
                    "{} is too long: container socket paths would exceed {MAX_SOCKET_PATH} bytes",
                    config.state_dir.display()
                ),
            });
        }
        let cgroups = Cgroups::detect(&config.cgroups);
        let private_mounts = match config.mounts {
            MountMode::Disabled => Err("private mount namespaces are disabled by configuration".to_owned()),
            MountMode::Auto if !sys::is_root() => Err(
                "volume mounts need a private mount namespace, which needs root (the agent is not running as root)"
                    .to_owned(),
            ),
            MountMode::Auto => Ok(()),
        };
        if let Err(reason) = &private_mounts {
            warn!(%reason, "containers with volume mounts will be refused");
        }
        let (events, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            cfg: config,
            cgroups,
            private_mounts,
            boot_id: boot_id(),
            sandboxes: Mutex::new(HashMap::new()),
            containers: Mutex::new(HashMap::new()),
            events,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let rt = ProcessRuntime { inner };
        rt.adopt(&sandboxes_dir, &containers_dir)?;
        Ok(rt)
    }

    fn adopt(&self, sandboxes_dir: &Path, containers_dir: &Path) -> Result<()> {
        let inner = &self.inner;
        for entry in read_dir(sandboxes_dir)? {
            match read_json::<SandboxRecord>(&entry.join(SANDBOX_FILE)) {
                Ok(Some(mut rec)) => {
                    if rec.state == SandboxState::Ready {
                        // The pod cgroup does not survive a reboot: recreate it.
                        let rel = pod_cgroup(&rec.id);
                        if rec.cgroup.as_ref().is_some_and(|h| !h.dirs[0].exists()) {
                            rec.cgroup = inner
                                .cgroups
                                .create(&rel, &rec.config.resources)
                                .ok()
                                .flatten();
                        }
                    }
                    inner.sandboxes.lock().insert(rec.id.clone(), rec);
                }
                Ok(None) => {
                    warn!(dir = %entry.display(), "sandbox directory without state; ignoring")
                }
                Err(e) => {
                    warn!(dir = %entry.display(), error = %e, "unreadable sandbox state; ignoring")
                }
            }
        }
        let (mut running, mut exited) = (0, 0);
        for entry in read_dir(containers_dir)? {
            let meta = match read_json::<ContainerMeta>(&entry.join(CONTAINER_FILE)) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    warn!(dir = %entry.display(), "container directory without state; ignoring");
                    continue;
                }
                Err(e) => {
                    warn!(dir = %entry.display(), error = %e, "unreadable container state; ignoring");
                    continue;
                }
            };
            let rec = Arc::new(ContainerRecord {
                dir: entry.clone(),
                meta: Mutex::new(meta.clone()),
                op: tokio::sync::Mutex::new(()),
                seen: Mutex::new(Seen::default()),
            });
            match inner.observe(&rec) {
                ContainerState::Running => {
                    running += 1;
                    inner.watch(rec.clone());
                }
                ContainerState::Exited => exited += 1,
                _ => {}
            }
            inner.containers.lock().insert(meta.id.clone(), rec);
        }
        let sandboxes = inner.sandboxes.lock().len();
        info!(sandboxes, running, exited, state_dir = %inner.cfg.state_dir.display(), "process runtime opened");
        Ok(())
    }

    /// How cgroups are used on this node (the reason when they are not).
    pub fn cgroup_info(&self) -> CgroupInfo {
        self.inner.cgroups.info("")
    }
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| Error::io(format!("read {}", dir.display()), e))? {
        let e = e.map_err(|e| Error::io(format!("read {}", dir.display()), e))?;
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(e.path());
        }
    }
    Ok(out)
}

fn pod_cgroup(id: &SandboxId) -> String {
    format!("pod-{id}")
}

fn container_cgroup(sandbox: &SandboxId, id: &ContainerId) -> String {
    format!("pod-{sandbox}/{id}")
}

fn shim_client(rec: &ContainerRecord) -> ShimClient {
    ShimClient {
        socket: rec.dir.join(shim::SOCKET_FILE),
    }
}

impl Inner {
    fn emit(&self, container_id: &ContainerId, sandbox_id: &SandboxId, kind: ContainerEventKind) {
        let _ = self.events.send(ContainerEvent {
            container_id: container_id.clone(),
            sandbox_id: sandbox_id.clone(),
            kind,
        });
    }

    fn container(&self, id: &ContainerId) -> Result<Arc<ContainerRecord>> {
        self.containers
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::ContainerNotFound(id.0.clone()))
    }

    fn persist_sandbox(&self, rec: &SandboxRecord) -> Result<()> {
        let dir = self.cfg.state_dir.join("sandboxes").join(&rec.id.0);
        write_json(&dir.join(SANDBOX_FILE), rec)
            .map_err(|e| Error::io(format!("write {}", dir.display()), e))
    }

    /// Where the container is now, from what the shim wrote and /proc.
    fn observe(&self, rec: &ContainerRecord) -> ContainerState {
        let mut seen = rec.seen.lock();
        if seen.exit.is_some() {
            return ContainerState::Exited;
        }
        let exit_path = rec.dir.join(shim::EXIT_FILE);
        if let Ok(Some(e)) = read_json::<ExitInfo>(&exit_path) {
            seen.exit = Some(e);
            return ContainerState::Exited;
        }
        if seen.shim.is_none() {
            seen.shim = read_json(&rec.dir.join(shim::STATE_FILE)).ok().flatten();
        }
        let Some(s) = seen.shim.clone() else {
            return ContainerState::Created;
        };
        let same_boot = rec.meta.lock().boot_id == self.boot_id;
        if same_boot
            && (sys::process_alive(s.pid, s.start_time)
                || sys::process_alive(s.shim_pid, s.shim_start_time))
        {
            return ContainerState::Running;
        }
        // Both gone. The shim writes exit.json before exiting: look again.
        if let Ok(Some(e)) = read_json::<ExitInfo>(&exit_path) {
            seen.exit = Some(e);
            return ContainerState::Exited;
        }
        let exit = ExitInfo {
            exit_code: 137,
            signal: None,
            finished_at: Timestamp::now(),
            reason: reason::CONTAINER_STATUS_UNKNOWN.into(),
            message: Some(
                "the container and its shim exited while nobody watched them; the exit code is unknown".into(),
            ),
        };
        warn!(container = %rec.meta.lock().id, "container vanished with its shim; exit code unknown");
        if let Err(e) = write_json(&exit_path, &exit) {
            warn!(error = %e, "cannot record the exit of a vanished container");
        }
        seen.exit = Some(exit);
        ContainerState::Exited
    }

    fn status(&self, rec: &ContainerRecord) -> ContainerStatus {
        let state = self.observe(rec);
        let meta = rec.meta.lock().clone();
        let seen = rec.seen.lock();
        let exit = seen.exit.clone();
        let cgroup = match &meta.cgroup {
            Some(_) => self
                .cgroups
                .info(&container_cgroup(&meta.sandbox_id, &meta.id)),
            None if state == ContainerState::Created => self
                .cgroups
                .info(&container_cgroup(&meta.sandbox_id, &meta.id)),
            None => match self.cgroups.info("") {
                CgroupInfo::Disabled { reason } => CgroupInfo::Disabled { reason },
                CgroupInfo::Enabled { .. } => CgroupInfo::Disabled {
                    reason: "the container was not placed in a cgroup".into(),
                },
            },
        };
        ContainerStatus {
            id: meta.id.clone(),
            sandbox_id: meta.sandbox_id.clone(),
            name: meta.config.name.clone(),
            attempt: meta.config.attempt,
            image: meta.config.image.clone(),
            image_ref: format!("process://{}", meta.config.image),
            state,
            created_at: meta.created_at,
            started_at: seen.shim.as_ref().map(|s| s.started_at),
            finished_at: exit.as_ref().map(|e| e.finished_at),
            exit_code: exit.as_ref().map(|e| e.exit_code),
            reason: exit.as_ref().map(|e| e.reason.clone()),
            message: exit.as_ref().and_then(|e| e.message.clone()),
            pid: (state == ContainerState::Running)
                .then(|| seen.shim.as_ref().map(|s| s.pid))
                .flatten(),
            log_path: meta.log_path.clone(),
            labels: meta.config.labels.clone(),
            annotations: meta.config.annotations.clone(),
            mounts: meta.config.mounts.clone(),
            cgroup,
        }
    }

    /// Resolves once the container is exited.
    async fn wait_exit(&self, rec: &ContainerRecord) {
        loop {
            if self.observe(rec) == ContainerState::Exited {
                return;
            }
            match shim_client(rec).wait().await {
                Ok(exit) => {
                    rec.seen.lock().exit.get_or_insert(exit);
                    return;
                }
                // No shim to ask (gone, or not started yet): poll.
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// Emits `Stopped` when a running container exits.
    fn watch(self: &Arc<Self>, rec: Arc<ContainerRecord>) {
        // The task ends when the container exits or the runtime is dropped
        // (which cancels the token), so holding `Inner` here is no leak.
        let inner = self.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = inner.cancel.cancelled() => {}
                _ = inner.wait_exit(&rec) => {
                    let meta = rec.meta.lock().clone();
                    inner.emit(&meta.id, &meta.sandbox_id, ContainerEventKind::Stopped);
                }
            }
        });
    }

    /// Sends `sig` to the container's process group, through its shim (which
    /// holds the unreaped process, so the pid cannot be reused), else
    /// directly after checking the pid still names the container.
    async fn signal(&self, rec: &ContainerRecord, sig: Signal) -> Result<()> {
        match shim_client(rec).kill(sig).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let shim = rec.seen.lock().shim.clone();
                if let Some(s) = shim {
                    if sys::process_alive(s.pid, s.start_time) {
                        warn!(error = %e, "shim unreachable; signalling the container directly");
                        let _ = nix::sys::signal::killpg(Pid::from_raw(s.pid as i32), sig);
                    }
                }
                if sig == Signal::SIGKILL {
                    if let Some(cg) = &rec.meta.lock().cgroup {
                        cg.kill_all();
                    }
                }
                Ok(())
            }
        }
    }

    async fn stop(&self, rec: &ContainerRecord, timeout: Duration) -> Result<()> {
        if self.observe(rec) != ContainerState::Running {
            return Ok(());
        }
        let id = rec.meta.lock().id.clone();
        if !timeout.is_zero() {
            self.signal(rec, Signal::SIGTERM).await?;
            if tokio::time::timeout(timeout, self.wait_exit(rec))
                .await
                .is_ok()
            {
                info!(container = %id, "container stopped");
                return Ok(());
            }
            info!(container = %id, ?timeout, "container ignored SIGTERM; killing it");
        }
        self.signal(rec, Signal::SIGKILL).await?;
        tokio::time::timeout(STOP_KILL_WAIT, self.wait_exit(rec))
            .await
            .map_err(|_| Error::Timeout {
                op: "stop container",
                after: STOP_KILL_WAIT,
            })?;
        info!(container = %id, "container killed");
        Ok(())
    }

    async fn remove(&self, rec: &ContainerRecord) -> Result<()> {
        self.stop(rec, Duration::ZERO).await?;
        let meta = rec.meta.lock().clone();
        if let Some(cg) = &meta.cgroup {
            if let Err(e) = cg.remove().await {
                warn!(container = %meta.id, error = %e, "cannot remove container cgroup");
            }
        }
        cri_log::remove_log_files(&meta.log_path)
            .map_err(|e| Error::io(format!("remove logs {}", meta.log_path.display()), e))?;
        match fs::remove_dir_all(&rec.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::io(format!("remove {}", rec.dir.display()), e));
            }
            _ => {}
        }
        self.containers.lock().remove(&meta.id);
        self.emit(&meta.id, &meta.sandbox_id, ContainerEventKind::Removed);
        Ok(())
    }

    fn validate(&self, config: &ContainerConfig) -> Result<()> {
        let invalid = |field: &str, reason: String| Error::InvalidConfig {
            field: field.to_owned(),
            reason,
        };
        if config.name.is_empty() {
            return Err(invalid("name", "must not be empty".into()));
        }
        if config.command.is_empty() || config.command[0].is_empty() {
            return Err(Error::NoCommand {
                container: config.name.clone(),
            });
        }
        for a in config.command.iter().chain(&config.args) {
            if a.contains('\0') {
                return Err(invalid(
                    "command",
                    format!("argument {a:?} contains a NUL byte"),
                ));
            }
        }
        for (k, v) in &config.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(invalid(
                    "env",
                    format!("{k:?} is not a valid variable name or has a NUL byte"),
                ));
            }
        }
        if let Some(wd) = &config.working_dir {
            if !wd.is_absolute() {
                return Err(invalid(
                    "workingDir",
                    format!("{} is not absolute", wd.display()),
                ));
            }
        }
        if config.log_path.is_absolute()
            || config
                .log_path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(invalid(
                "log_path",
                format!("{} must be relative, without ..", config.log_path.display()),
            ));
        }
        for m in &config.mounts {
            if !m.host_path.is_absolute() || !m.container_path.is_absolute() {
                return Err(invalid(
                    "mounts",
                    format!(
                        "{} → {}: both paths must be absolute",
                        m.host_path.display(),
                        m.container_path.display()
                    ),
                ));
            }
            if m.container_path == Path::new("/") {
                return Err(invalid("mounts", "cannot mount over /".into()));
            }
        }
        if !config.mounts.is_empty() {
            if let Err(reason) = &self.private_mounts {
                return Err(invalid("mounts", reason.clone()));
            }
        }
        Ok(())
    }

    async fn start(self: &Arc<Self>, rec: Arc<ContainerRecord>) -> Result<()> {
        let _op = rec.op.lock().await;
        let state = self.observe(&rec);
        let (id, name) = {
            let m = rec.meta.lock();
            (m.id.clone(), m.config.name.clone())
        };
        if state != ContainerState::Created {
            return Err(Error::InvalidState {
                id: id.0,
                state: state.as_str(),
                op: "start",
            });
        }
        let meta = rec.meta.lock().clone();
        let sandbox = self
            .sandboxes
            .lock()
            .get(&meta.sandbox_id)
            .cloned()
            .ok_or_else(|| Error::SandboxNotFound(meta.sandbox_id.0.clone()))?;
        if sandbox.state != SandboxState::Ready {
            return Err(Error::SandboxNotReady(sandbox.id.0));
        }
        let fail = |failure: StartFailure| {
            let exit = ExitInfo {
                exit_code: 128,
                signal: None,
                finished_at: Timestamp::now(),
                reason: reason::START_ERROR.into(),
                message: Some(failure.to_string()),
            };
            let _ = write_json(&rec.dir.join(shim::EXIT_FILE), &exit);
            rec.seen.lock().exit = Some(exit);
            self.emit(&id, &meta.sandbox_id, ContainerEventKind::Stopped);
            Error::StartFailed {
                container: name.clone(),
                failure,
            }
        };

        let cgroup = match self.cgroups.create(
            &container_cgroup(&meta.sandbox_id, &id),
            &meta.config.resources,
        ) {
            Ok(cg) => cg,
            Err(e) => {
                return Err(fail(StartFailure::Setup {
                    step: "create the container cgroup".into(),
                    message: e.to_string(),
                }))
            }
        };
        if cgroup.is_none() && !meta.config.resources.is_empty() {
            warn!(container = %id, "resource limits not enforced: cgroups are unavailable");
        }
        {
            let mut m = rec.meta.lock();
            m.cgroup = cgroup.clone();
            m.boot_id = self.boot_id.clone();
            if let Err(e) = write_json(&rec.dir.join(CONTAINER_FILE), &*m) {
                return Err(Error::io("write container state", e));
            }
        }
        let config = &meta.config;
        let creds = sys::resolve_creds(&config.user);
        let uid = creds
            .as_ref()
            .map(|c| c.uid)
            .unwrap_or_else(|| nix::unistd::geteuid().as_raw());
        let shim_cfg = ShimConfig {
            argv: config.command.iter().chain(&config.args).cloned().collect(),
            env: sys::resolve_env(&config.env, uid),
            cwd: config.working_dir.clone().unwrap_or_else(|| "/".into()),
            creds,
            mounts: config.mounts.clone(),
            private_mounts: !config.mounts.is_empty(),
            stdin: config.stdin,
            stdin_once: config.stdin_once,
            tty: config.tty,
            log_path: meta.log_path.clone(),
            rotation: self.cfg.log_rotation,
            cgroup,
            socket: rec.dir.join(shim::SOCKET_FILE),
        };
        write_json(&rec.dir.join(shim::CONFIG_FILE), &shim_cfg)
            .map_err(|e| Error::io("write shim config", e))?;

        let out = tokio::process::Command::new(&self.cfg.shim.program)
            .args(&self.cfg.shim.args)
            .arg("start")
            .arg(&rec.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await;
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                return Err(fail(StartFailure::Shim {
                    message: format!("run {}: {e}", self.cfg.shim.program.display()),
                }))
            }
        };
        let report: StartReport = match serde_json::from_slice(&out.stdout) {
            Ok(r) => r,
            Err(e) => {
                return Err(fail(StartFailure::Shim {
                    message: format!(
                        "unreadable report ({e}); stdout {:?}, stderr {:?}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    ),
                }))
            }
        };
        match report {
            StartReport::Started(state) => {
                info!(container = %id, name = %name, pid = state.pid, "container started");
                rec.seen.lock().shim = Some(state);
                self.emit(&id, &meta.sandbox_id, ContainerEventKind::Started);
                self.watch(rec.clone());
                Ok(())
            }
            StartReport::Failed(failure) => {
                warn!(container = %id, name = %name, %failure, "container failed to start");
                Err(fail(failure))
            }
        }
    }

    /// Spawns `cmd` inside a running container.
    fn spawn_exec(
        &self,
        rec: &ContainerRecord,
        cmd: &[String],
        streams: StreamOptions,
    ) -> Result<ExecProcess> {
        let state = self.observe(rec);
        let meta = rec.meta.lock().clone();
        let shim = rec.seen.lock().shim.clone();
        let (ContainerState::Running, Some(shim)) = (state, shim) else {
            return Err(Error::InvalidState {
                id: meta.id.0,
                state: state.as_str(),
                op: "exec",
            });
        };
        if cmd.is_empty() || cmd[0].is_empty() || cmd.iter().any(|a| a.contains('\0')) {
            return Err(Error::InvalidConfig {
                field: "command".into(),
                reason: "must be non-empty, without NUL bytes".into(),
            });
        }
        let failed = |failure: StartFailure| Error::ExecFailed {
            container: meta.config.name.clone(),
            failure,
        };
        let setup = |step: &str, e: io::Error| {
            failed(StartFailure::Setup {
                step: step.to_owned(),
                message: sys::errno_message(&e),
            })
        };
        let config = &meta.config;
        let cwd = config.working_dir.clone().unwrap_or_else(|| "/".into());
        let mut plan = ChildPlan::new(&cwd).map_err(|e| setup("cwd", e))?;
        plan.creds = sys::resolve_creds(&config.user);
        let uid = plan
            .creds
            .as_ref()
            .map(|c| c.uid)
            .unwrap_or_else(|| nix::unistd::geteuid().as_raw());
        let env = sys::resolve_env(&config.env, uid);

        // Same mount namespace as the container.
        let ns = format!("/proc/{}/ns/mnt", shim.pid);
        let theirs =
            fs::metadata(&ns).map_err(|e| setup("inspect the container's mount namespace", e))?;
        let ours = fs::metadata("/proc/self/ns/mnt")
            .map_err(|e| setup("inspect our mount namespace", e))?;
        if (theirs.dev(), theirs.ino()) != (ours.dev(), ours.ino()) {
            let fd = fs::File::open(&ns)
                .map_err(|e| setup("open the container's mount namespace", e))?;
            plan.mounts = MountSetup::Join(fd.into());
        }
        if !sys::process_alive(shim.pid, shim.start_time) {
            return Err(Error::InvalidState {
                id: meta.id.0,
                state: "exited",
                op: "exec",
            });
        }
        // Same cgroup.
        let cgroup_files = meta
            .cgroup
            .as_ref()
            .map(|c| c.procs_files())
            .unwrap_or_default();
        for f in &cgroup_files {
            let fd = fs::OpenOptions::new()
                .write(true)
                .open(f)
                .map_err(|e| setup(&format!("open {}", f.display()), e))?;
            plan.cgroup_procs.push(fd.into());
        }

        let mut command = tokio::process::Command::new(&cmd[0]);
        command
            .args(&cmd[1..])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .kill_on_drop(false);
        let mut master = None;
        if streams.tty {
            let size = streams.size.unwrap_or(TerminalSize {
                width: 80,
                height: 24,
            });
            let ws = nix::pty::Winsize {
                ws_row: size.height,
                ws_col: size.width,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            let pty = nix::pty::openpty(Some(&ws), None).map_err(|e| setup("openpty", e.into()))?;
            sys::set_cloexec(&pty.master).map_err(|e| setup("openpty", e))?;
            sys::set_cloexec(&pty.slave).map_err(|e| setup("openpty", e))?;
            let dup = |fd: &std::os::fd::OwnedFd| fd.try_clone().map_err(|e| setup("dup pty", e));
            command
                .stdin(dup(&pty.slave)?)
                .stdout(dup(&pty.slave)?)
                .stderr(pty.slave);
            master = Some(FdIo::new(pty.master, true).map_err(|e| setup("pty master", e))?);
            plan.controlling_tty = true;
        } else {
            let pipe_or_null = |wanted: bool| {
                if wanted {
                    Stdio::piped()
                } else {
                    Stdio::null()
                }
            };
            command
                .stdin(pipe_or_null(streams.stdin))
                .stdout(pipe_or_null(streams.stdout))
                .stderr(pipe_or_null(streams.stderr));
        }
        plan.describe(&cwd, &cgroup_files);
        let (diag_r, diag_w) = sys::pipe().map_err(|e| setup("pipe", e))?;
        fdio::set_nonblocking(&diag_r).map_err(|e| setup("pipe", e))?;
        plan.diag = Some(diag_w);
        let plan = Arc::new(plan);
        let child_plan = plan.clone();
        // SAFETY: `apply` only makes async-signal-safe system calls on data
        // prepared before the fork (see `ChildPlan`).
        unsafe {
            command.pre_exec(move || child_plan.apply());
        }
        let spawned = command.spawn();
        drop(command);
        match spawned {
            Ok(child) => Ok(ExecProcess { child, master }),
            Err(e) => Err(failed(plan.start_failure(&cmd[0], &e, Some(&diag_r)))),
        }
    }
}

struct ExecProcess {
    child: tokio::process::Child,
    master: Option<FdIo>,
}

async fn read_capped(r: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    const CAP: u64 = 16 << 20;
    let mut out = Vec::new();
    if let Some(mut r) = r {
        let _ = (&mut r).take(CAP).read_to_end(&mut out).await;
        let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
    }
    out
}

/// Agent side of the shim's control socket.
struct ShimClient {
    socket: PathBuf,
}

impl ShimClient {
    async fn request(
        &self,
        req: &Request,
    ) -> io::Result<(
        BufReader<tokio::net::unix::OwnedReadHalf>,
        tokio::net::unix::OwnedWriteHalf,
        Response,
    )> {
        let stream = UnixStream::connect(&self.socket).await?;
        let (r, mut w) = stream.into_split();
        let mut line = serde_json::to_vec(req).map_err(io::Error::other)?;
        line.push(b'\n');
        w.write_all(&line).await?;
        let mut r = BufReader::new(r);
        let mut resp = String::new();
        if r.read_line(&mut resp).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "shim closed the connection",
            ));
        }
        let resp: Response = serde_json::from_str(&resp)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if let Some(e) = &resp.error {
            return Err(io::Error::other(e.clone()));
        }
        Ok((r, w, resp))
    }

    async fn kill(&self, sig: Signal) -> io::Result<()> {
        self.request(&Request::Kill { signal: sig as i32 })
            .await
            .map(|_| ())
    }

    async fn wait(&self) -> io::Result<ExitInfo> {
        let (_, _, resp) = self.request(&Request::Wait).await?;
        resp.exit.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "shim ended without an exit status",
            )
        })
    }

    async fn reopen_log(&self) -> io::Result<()> {
        self.request(&Request::ReopenLog).await.map(|_| ())
    }

    async fn attach(
        &self,
        streams: StreamOptions,
        tasks: &TaskTracker,
        cancel: CancellationToken,
    ) -> io::Result<StreamSession> {
        let want_stderr = streams.stderr && !streams.tty;
        let (mut r, mut w, _) = self
            .request(&Request::Attach {
                stdin: streams.stdin,
                stdout: streams.stdout,
                stderr: want_stderr,
            })
            .await?;
        const BUF: usize = 64 * 1024;
        let (mut out_w, out_r) = tokio::io::duplex(BUF);
        let (mut err_w, err_r) = tokio::io::duplex(BUF);
        let (in_w, mut in_r) = tokio::io::duplex(BUF);
        let (exit_tx, exit_rx) = oneshot::channel::<i32>();
        let (resize_tx, mut resize_rx) = mpsc::channel::<TerminalSize>(4);
        let stdin_wanted = streams.stdin;
        // Ends both tasks when the runtime is dropped or the output ends.
        let session = cancel.child_token();
        let done = session.clone();
        tasks.spawn(async move {
            let demux = async {
                let (mut out_ok, mut err_ok) = (true, true);
                while let Ok(Some((kind, data))) = shim::read_frame(&mut r).await {
                    match kind {
                        shim::FRAME_STDOUT if out_ok => {
                            out_ok = out_w.write_all(&data).await.is_ok()
                        }
                        shim::FRAME_STDERR if err_ok => {
                            err_ok = err_w.write_all(&data).await.is_ok()
                        }
                        shim::FRAME_EXIT if data.len() == 4 => {
                            let _ = exit_tx
                                .send(i32::from_be_bytes([data[0], data[1], data[2], data[3]]));
                            return;
                        }
                        _ => {}
                    }
                }
            };
            tokio::select! {
                _ = done.cancelled() => {}
                _ = demux => {}
            }
            done.cancel();
        });
        tasks.spawn(async move {
            let pump = async {
                let mut buf = vec![0u8; 32 * 1024];
                let (mut stdin_open, mut resize_open) = (stdin_wanted, true);
                loop {
                    let frame = tokio::select! {
                        n = in_r.read(&mut buf), if stdin_open => match n {
                            Ok(0) | Err(_) => {
                                stdin_open = false;
                                (shim::FRAME_STDIN_CLOSE, &[][..])
                            }
                            Ok(n) => (shim::FRAME_STDIN, &buf[..n]),
                        },
                        size = resize_rx.recv(), if resize_open => match size {
                            Some(s) => {
                                let p = shim::resize_payload(s);
                                if shim::write_frame(&mut w, shim::FRAME_RESIZE, &p).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                            None => {
                                resize_open = false;
                                continue;
                            }
                        },
                        else => futures::future::pending().await,
                    };
                    if shim::write_frame(&mut w, frame.0, frame.1).await.is_err() {
                        return;
                    }
                }
            };
            tokio::select! {
                _ = session.cancelled() => {}
                _ = pump => {}
            }
        });
        Ok(StreamSession {
            stdin: streams.stdin.then(|| Box::new(in_w) as BoxWriter),
            stdout: streams.stdout.then(|| Box::new(out_r) as BoxReader),
            stderr: want_stderr.then(|| Box::new(err_r) as BoxReader),
            resize: streams.tty.then_some(resize_tx),
            exit: async move {
                exit_rx.await.map_err(|_| Error::Shim {
                    id: String::new(),
                    message: "attach connection ended without an exit code".into(),
                })
            }
            .boxed(),
        })
    }
}

impl Runtime for ProcessRuntime {
    fn version(&self) -> String {
        format!("process://{}", env!("CARGO_PKG_VERSION"))
    }

    fn run_pod_sandbox<'a>(&'a self, config: PodSandboxConfig) -> BoxFuture<'a, Result<SandboxId>> {
        async move {
            let inner = &self.inner;
            let id = SandboxId::generate();
            let dir = inner.cfg.state_dir.join("sandboxes").join(&id.0);
            fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
            let cgroup = match inner.cgroups.create(&pod_cgroup(&id), &config.resources) {
                Ok(cg) => cg,
                Err(e) => {
                    let _ = fs::remove_dir_all(&dir);
                    return Err(Error::Cgroup {
                        path: inner.cgroups.rel_path(&pod_cgroup(&id)).into(),
                        source: e,
                    });
                }
            };
            let rec = SandboxRecord {
                id: id.clone(),
                config,
                state: SandboxState::Ready,
                created_at: Timestamp::now(),
                cgroup,
            };
            inner.persist_sandbox(&rec)?;
            info!(sandbox = %id, pod = %format_args!("{}/{}", rec.config.namespace, rec.config.name), "pod sandbox created");
            inner.sandboxes.lock().insert(id.clone(), rec);
            Ok(id)
        }
        .boxed()
    }

    fn stop_pod_sandbox<'a>(&'a self, id: &'a SandboxId) -> BoxFuture<'a, Result<()>> {
        async move {
            let inner = &self.inner;
            if !inner.sandboxes.lock().contains_key(id) {
                return Err(Error::SandboxNotFound(id.0.clone()));
            }
            let recs: Vec<_> = inner
                .containers
                .lock()
                .values()
                .filter(|r| r.meta.lock().sandbox_id == *id)
                .cloned()
                .collect();
            for rec in recs {
                let _op = rec.op.lock().await;
                inner.stop(&rec, Duration::ZERO).await?;
            }
            let rec = {
                let mut s = inner.sandboxes.lock();
                let Some(rec) = s.get_mut(id) else {
                    return Ok(());
                };
                rec.state = SandboxState::NotReady;
                rec.clone()
            };
            inner.persist_sandbox(&rec)
        }
        .boxed()
    }

    fn remove_pod_sandbox<'a>(&'a self, id: &'a SandboxId) -> BoxFuture<'a, Result<()>> {
        async move {
            let inner = &self.inner;
            let Some(rec) = inner.sandboxes.lock().get(id).cloned() else {
                return Ok(());
            };
            let recs: Vec<_> = inner
                .containers
                .lock()
                .values()
                .filter(|r| r.meta.lock().sandbox_id == *id)
                .cloned()
                .collect();
            for c in recs {
                let _op = c.op.lock().await;
                inner.remove(&c).await?;
            }
            if let Some(cg) = &rec.cgroup {
                cg.remove().await.map_err(|e| Error::Cgroup {
                    path: cg.dirs[0].clone(),
                    source: e,
                })?;
            }
            let dir = inner.cfg.state_dir.join("sandboxes").join(&id.0);
            match fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(Error::io(format!("remove {}", dir.display()), e))
                }
                _ => {}
            }
            inner.sandboxes.lock().remove(id);
            info!(sandbox = %id, "pod sandbox removed");
            Ok(())
        }
        .boxed()
    }

    fn pod_sandbox_status<'a>(
        &'a self,
        id: &'a SandboxId,
    ) -> BoxFuture<'a, Result<PodSandboxStatus>> {
        async move {
            let inner = &self.inner;
            let rec = inner
                .sandboxes
                .lock()
                .get(id)
                .cloned()
                .ok_or_else(|| Error::SandboxNotFound(id.0.clone()))?;
            Ok(sandbox_status(inner, rec))
        }
        .boxed()
    }

    fn list_pod_sandboxes<'a>(
        &'a self,
        filter: SandboxFilter,
    ) -> BoxFuture<'a, Result<Vec<PodSandboxStatus>>> {
        async move {
            let inner = &self.inner;
            let recs: Vec<_> = inner.sandboxes.lock().values().cloned().collect();
            let mut out: Vec<_> = recs
                .into_iter()
                .map(|r| sandbox_status(inner, r))
                .filter(|s| filter.matches(s))
                .collect();
            out.sort_by_key(|s| s.created_at);
            Ok(out)
        }
        .boxed()
    }

    fn create_container<'a>(
        &'a self,
        sandbox: &'a SandboxId,
        config: ContainerConfig,
    ) -> BoxFuture<'a, Result<ContainerId>> {
        async move {
            let inner = &self.inner;
            let sb = inner
                .sandboxes
                .lock()
                .get(sandbox)
                .cloned()
                .ok_or_else(|| Error::SandboxNotFound(sandbox.0.clone()))?;
            if sb.state != SandboxState::Ready {
                return Err(Error::SandboxNotReady(sandbox.0.clone()));
            }
            inner.validate(&config)?;
            let id = ContainerId::generate();
            let dir = inner.cfg.state_dir.join("containers").join(&id.0);
            fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
            let rel = if config.log_path.as_os_str().is_empty() {
                PathBuf::from(format!("{}/{}.log", config.name, config.attempt))
            } else {
                config.log_path.clone()
            };
            let log_path = if sb.config.log_directory.as_os_str().is_empty() {
                dir.join(rel)
            } else {
                std::path::absolute(sb.config.log_directory.join(rel))
                    .map_err(|e| Error::io("resolve the log directory", e))?
            };
            let meta = ContainerMeta {
                id: id.clone(),
                sandbox_id: sandbox.clone(),
                config,
                created_at: Timestamp::now(),
                log_path,
                cgroup: None,
                boot_id: None,
            };
            write_json(&dir.join(CONTAINER_FILE), &meta)
                .map_err(|e| Error::io("write container state", e))?;
            let rec = Arc::new(ContainerRecord {
                dir,
                meta: Mutex::new(meta),
                op: tokio::sync::Mutex::new(()),
                seen: Mutex::new(Seen::default()),
            });
            inner.containers.lock().insert(id.clone(), rec);
            inner.emit(&id, sandbox, ContainerEventKind::Created);
            Ok(id)
        }
        .boxed()
    }

    fn start_container<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<()>> {
        async move {
            let rec = self.inner.container(id)?;
            self.inner.start(rec).await
        }
        .boxed()
    }

    fn stop_container<'a>(
        &'a self,
        id: &'a ContainerId,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<()>> {
        async move {
            let rec = self.inner.container(id)?;
            let _op = rec.op.lock().await;
            self.inner.stop(&rec, timeout).await
        }
        .boxed()
    }

    fn remove_container<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<()>> {
        async move {
            let Ok(rec) = self.inner.container(id) else {
                return Ok(());
            };
            let _op = rec.op.lock().await;
            self.inner.remove(&rec).await
        }
        .boxed()
    }

    fn container_status<'a>(
        &'a self,
        id: &'a ContainerId,
    ) -> BoxFuture<'a, Result<ContainerStatus>> {
        async move {
            let rec = self.inner.container(id)?;
            Ok(self.inner.status(&rec))
        }
        .boxed()
    }

    fn list_containers<'a>(
        &'a self,
        filter: ContainerFilter,
    ) -> BoxFuture<'a, Result<Vec<ContainerStatus>>> {
        async move {
            let recs: Vec<_> = self.inner.containers.lock().values().cloned().collect();
            let mut out: Vec<_> = recs
                .iter()
                .map(|r| self.inner.status(r))
                .filter(|s| filter.matches(s))
                .collect();
            out.sort_by_key(|s| s.created_at);
            Ok(out)
        }
        .boxed()
    }

    fn wait_container<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<ContainerStatus>> {
        async move {
            let rec = self.inner.container(id)?;
            self.inner.wait_exit(&rec).await;
            Ok(self.inner.status(&rec))
        }
        .boxed()
    }

    fn events(&self) -> broadcast::Receiver<ContainerEvent> {
        self.inner.events.subscribe()
    }

    fn exec_sync<'a>(
        &'a self,
        id: &'a ContainerId,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecSyncResult>> {
        async move {
            let rec = self.inner.container(id)?;
            let streams = StreamOptions {
                stdout: true,
                stderr: true,
                ..Default::default()
            };
            let mut p = self.inner.spawn_exec(&rec, &cmd, streams)?;
            let pid = p.child.id();
            let stdout = p.child.stdout.take();
            let stderr = p.child.stderr.take();
            let run = async {
                let (stdout, stderr, status) =
                    tokio::join!(read_capped(stdout), read_capped(stderr), p.child.wait());
                let status = status.map_err(|e| Error::io("wait for exec", e))?;
                Ok(ExecSyncResult {
                    stdout,
                    stderr,
                    exit_code: sys::std_exit_code(status),
                })
            };
            match tokio::time::timeout(timeout, run).await {
                Ok(r) => r,
                Err(_) => {
                    if let Some(pid) = pid {
                        let _ =
                            nix::sys::signal::killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    }
                    Err(Error::Timeout {
                        op: "exec",
                        after: timeout,
                    })
                }
            }
        }
        .boxed()
    }

    fn exec<'a>(
        &'a self,
        id: &'a ContainerId,
        cmd: Vec<String>,
        streams: StreamOptions,
    ) -> BoxFuture<'a, Result<StreamSession>> {
        async move {
            let inner = &self.inner;
            let rec = inner.container(id)?;
            let mut p = inner.spawn_exec(&rec, &cmd, streams)?;
            let mut session = StreamSession {
                stdin: None,
                stdout: None,
                stderr: None,
                resize: None,
                exit: futures::future::pending().boxed(),
            };
            if let Some(master) = p.master.take() {
                if streams.stdin {
                    session.stdin = Some(Box::new(master.clone()));
                }
                if streams.stdout || streams.stderr {
                    session.stdout = Some(Box::new(master.clone()));
                }
                let (tx, mut rx) = mpsc::channel::<TerminalSize>(4);
                let cancel = inner.cancel.clone();
                inner.tasks.spawn(async move {
                    loop {
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            size = rx.recv() => match size {
                                Some(s) => { let _ = fdio::set_winsize(master.raw(), s.width, s.height); }
                                None => return,
                            }
                        }
                    }
                });
                session.resize = Some(tx);
            } else {
                session.stdin = p.child.stdin.take().map(|s| Box::new(s) as BoxWriter);
                session.stdout = p.child.stdout.take().map(|s| Box::new(s) as BoxReader);
                session.stderr = p.child.stderr.take().map(|s| Box::new(s) as BoxReader);
            }
            let mut child = p.child;
            session.exit = async move {
                let status = child.wait().await.map_err(|e| Error::io("wait for exec", e))?;
                Ok(sys::std_exit_code(status))
            }
            .boxed();
            Ok(session)
        }
        .boxed()
    }

    fn attach<'a>(
        &'a self,
        id: &'a ContainerId,
        streams: StreamOptions,
    ) -> BoxFuture<'a, Result<StreamSession>> {
        async move {
            let inner = &self.inner;
            let rec = inner.container(id)?;
            let state = inner.observe(&rec);
            if state != ContainerState::Running {
                return Err(Error::InvalidState {
                    id: id.0.clone(),
                    state: state.as_str(),
                    op: "attach",
                });
            }
            let tty = rec.meta.lock().config.tty;
            let streams = StreamOptions { tty, ..streams };
            shim_client(&rec)
                .attach(streams, &inner.tasks, inner.cancel.clone())
                .await
                .map_err(|e| Error::Shim {
                    id: id.0.clone(),
                    message: e.to_string(),
                })
        }
        .boxed()
    }

    fn port_forward<'a>(
        &'a self,
        sandbox: &'a SandboxId,
        port: u16,
    ) -> BoxFuture<'a, Result<PortStream>> {
        async move {
            if !self.inner.sandboxes.lock().contains_key(sandbox) {
                return Err(Error::SandboxNotFound(sandbox.0.clone()));
            }
            // The pod shares the node's network: its ports are the node's.
            let stream = match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(s) => s,
                Err(e4) => tokio::net::TcpStream::connect(("::1", port))
                    .await
                    .map_err(|_| Error::io(format!("connect to port {port} of the pod"), e4))?,
            };
            let _ = stream.set_nodelay(true);
            Ok(Box::new(stream) as PortStream)
        }
        .boxed()
    }

    fn reopen_container_log<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<()>> {
        async move {
            let rec = self.inner.container(id)?;
            let state = self.inner.observe(&rec);
            if state != ContainerState::Running {
                return Err(Error::InvalidState {
                    id: id.0.clone(),
                    state: state.as_str(),
                    op: "reopen its log",
                });
            }
            shim_client(&rec)
                .reopen_log()
                .await
                .map_err(|e| Error::Shim {
                    id: id.0.clone(),
                    message: e.to_string(),
                })
        }
        .boxed()
    }
}

fn sandbox_status(inner: &Inner, rec: SandboxRecord) -> PodSandboxStatus {
    let cgroup = match &rec.cgroup {
        Some(_) => inner.cgroups.info(&pod_cgroup(&rec.id)),
        None => match inner.cgroups.info("") {
            d @ CgroupInfo::Disabled { .. } => d,
            CgroupInfo::Enabled { .. } => CgroupInfo::Disabled {
                reason: "the pod was not placed in a cgroup".into(),
            },
        },
    };
    PodSandboxStatus {
        id: rec.id,
        config: rec.config,
        state: rec.state,
        created_at: rec.created_at,
        network: PodNetwork::Host,
        cgroup,
    }
}
