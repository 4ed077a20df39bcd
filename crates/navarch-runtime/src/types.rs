//! Configuration and status types, modelled on CRI's messages.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// A fresh random id (32 lowercase hex digits).
            pub fn generate() -> Self {
                $name(uuid::Uuid::new_v4().simple().to_string())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }
    };
}

id_type!(
    /// Id of a pod sandbox, chosen by the runtime.
    SandboxId
);
id_type!(
    /// Id of a container, chosen by the runtime.
    ContainerId
);

/// Resource limits and requests of a container (or, summed, of a pod).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// `limits.cpu` in millicores → CFS quota.
    pub cpu_limit_millis: Option<u64>,
    /// `requests.cpu` in millicores → cpu shares / weight.
    pub cpu_request_millis: Option<u64>,
    /// `limits.memory` in bytes → memory limit.
    pub memory_limit_bytes: Option<u64>,
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.cpu_limit_millis.is_none()
            && self.cpu_request_millis.is_none()
            && self.memory_limit_bytes.is_none()
    }
}

/// What a pod sandbox is made of. On the process runtime a sandbox is a pod
/// cgroup and a directory; the pod shares the node's network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PodSandboxConfig {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    /// Directory for the containers' logs (`/var/log/pods/<ns>_<name>_<uid>`);
    /// each container's `log_path` is relative to it.
    pub log_directory: PathBuf,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Pod-level limits for the pod cgroup (normally the sum of the
    /// containers' limits when all of them set one).
    pub resources: Resources,
}

/// A directory (or file) of the host exposed to the container at another
/// path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub host_path: PathBuf,
    pub container_path: PathBuf,
    pub read_only: bool,
}

/// `securityContext` fields this runtime honours.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    pub run_as_user: Option<u32>,
    /// Defaults to the primary group of `run_as_user` in `/etc/passwd`, else 0.
    pub run_as_group: Option<u32>,
    pub supplemental_groups: Vec<u32>,
}

/// What a container is made of.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub name: String,
    /// Restart count of this container name in the pod.
    pub attempt: u32,
    /// Recorded and reported, never pulled by the process runtime.
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: Option<PathBuf>,
    /// Ordered as in the pod spec; later entries win.
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    /// Relative to the sandbox's `log_directory` (`<name>/<attempt>.log`).
    pub log_path: PathBuf,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub user: UserSpec,
    pub resources: Resources,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Whether a sandbox can take containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    Ready,
    NotReady,
}

/// How resource limits are enforced for a sandbox or container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupInfo {
    /// Limits are enforced in this cgroup (relative to the hierarchy root).
    Enabled {
        version: CgroupVersion,
        path: String,
    },
    /// Limits are not enforced, and why.
    Disabled { reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Network of a pod. The process runtime only has the node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodNetwork {
    /// `hostNetwork` semantics: pod IP = node IP, container ports are host
    /// ports.
    Host,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodSandboxStatus {
    pub id: SandboxId,
    pub config: PodSandboxConfig,
    pub state: SandboxState,
    pub created_at: Timestamp,
    pub network: PodNetwork,
    pub cgroup: CgroupInfo,
}

/// CRI's container states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
            ContainerState::Unknown => "unknown",
        }
    }
}

/// Reasons set on exited containers, as containerd's CRI plugin and the
/// kubelet report them.
pub mod reason {
    /// Exit code 0.
    pub const COMPLETED: &str = "Completed";
    /// Non-zero exit code.
    pub const ERROR: &str = "Error";
    /// The container's cgroup saw an OOM kill during this run.
    pub const OOM_KILLED: &str = "OOMKilled";
    /// The process could not be started; exit code 128.
    pub const START_ERROR: &str = "StartError";
    /// The process and its shim vanished while nobody watched; exit code 137.
    pub const CONTAINER_STATUS_UNKNOWN: &str = "ContainerStatusUnknown";
}

/// How a process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code, or 128 + signal number for a signal.
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub finished_at: Timestamp,
    pub reason: String,
    pub message: Option<String>,
}

impl ExitInfo {
    /// Exit info for a process that exited with `code` (or was killed by
    /// `signal`), with the CRI reason.
    pub fn from_code(exit_code: i32, signal: Option<i32>, oom_killed: bool) -> Self {
        let reason = if oom_killed {
            reason::OOM_KILLED
        } else if exit_code == 0 {
            reason::COMPLETED
        } else {
            reason::ERROR
        };
        ExitInfo {
            exit_code,
            signal,
            finished_at: Timestamp::now(),
            reason: reason.to_owned(),
            message: None,
        }
    }
}

/// What the runtime knows of one container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub id: ContainerId,
    pub sandbox_id: SandboxId,
    pub name: String,
    pub attempt: u32,
    pub image: String,
    /// Image reference to report as `imageID` (`process://<image>` here).
    pub image_ref: String,
    pub state: ContainerState,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub message: Option<String>,
    /// Host pid of the container's main process while running.
    pub pid: Option<u32>,
    /// Absolute path of the current log file.
    pub log_path: PathBuf,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub mounts: Vec<Mount>,
    pub cgroup: CgroupInfo,
}

/// Filter for `list_containers`; `None` fields match anything.
#[derive(Debug, Clone, Default)]
pub struct ContainerFilter {
    pub id: Option<ContainerId>,
    pub sandbox_id: Option<SandboxId>,
    pub state: Option<ContainerState>,
    /// All these labels must be present with these values.
    pub labels: BTreeMap<String, String>,
}

impl ContainerFilter {
    pub fn matches(&self, s: &ContainerStatus) -> bool {
        self.id.as_ref().is_none_or(|id| *id == s.id)
            && self
                .sandbox_id
                .as_ref()
                .is_none_or(|id| *id == s.sandbox_id)
            && self.state.is_none_or(|st| st == s.state)
            && self.labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
    }
}

/// Filter for `list_pod_sandboxes`; `None` fields match anything.
#[derive(Debug, Clone, Default)]
pub struct SandboxFilter {
    pub id: Option<SandboxId>,
    pub state: Option<SandboxState>,
    pub labels: BTreeMap<String, String>,
}

impl SandboxFilter {
    pub fn matches(&self, s: &PodSandboxStatus) -> bool {
        self.id.as_ref().is_none_or(|id| *id == s.id)
            && self.state.is_none_or(|st| st == s.state)
            && self
                .labels
                .iter()
                .all(|(k, v)| s.config.labels.get(k) == Some(v))
    }
}

/// A container lifecycle event (CRI's `GetContainerEvents`).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerEvent {
    pub container_id: ContainerId,
    pub sandbox_id: SandboxId,
    pub kind: ContainerEventKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerEventKind {
    Created,
    Started,
    /// The container's process ended (or could not start).
    Stopped,
    Removed,
}

/// Terminal size for tty sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

/// Result of `exec_sync`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSyncResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// Log rotation of container log files: `N.log`, `N.log.1` … `N.log.<max_files-1>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRotation {
    /// Rotate when the current file would grow past this many bytes.
    pub max_size: u64,
    /// Files kept per container instance, the current one included (≥ 1).
    pub max_files: u32,
}

impl Default for LogRotation {
    fn default() -> Self {
        LogRotation {
            max_size: 10 * 1024 * 1024,
            max_files: 3,
        }
    }
}
