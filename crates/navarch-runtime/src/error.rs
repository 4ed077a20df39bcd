//! The runtime's one error type.

use std::io;
use std::path::PathBuf;

/// Why a container's process could not be started. Carried by
/// [`Error::StartFailed`] and, as text, in the container's terminated state
/// (reason `StartError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StartFailure {
    /// `command[0]` has no `/` and is not in `$PATH`.
    #[error("exec: {program:?}: executable file not found in $PATH")]
    ExecutableNotFound { program: String },
    /// `command[0]` is a path that does not exist.
    #[error("exec: {program:?}: stat {program}: no such file or directory")]
    NoSuchFile { program: String },
    /// `command[0]` exists but cannot be executed.
    #[error("exec: {program:?}: permission denied")]
    PermissionDenied { program: String },
    /// Any other `execve` failure.
    #[error("exec: {program:?}: {message}")]
    Exec { program: String, message: String },
    /// A step before `execve` (cgroup, mounts, chdir, credentials) failed.
    #[error("{step}: {message}")]
    Setup { step: String, message: String },
    /// The per-container shim could not be started or did not answer.
    #[error("shim: {message}")]
    Shim { message: String },
}

/// Errors of the runtime layer. Messages are lowercase without a trailing
/// period; [`Error::kube_reason`] gives the Kubernetes waiting reason the
/// agent should report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pod sandbox {0:?} not found")]
    SandboxNotFound(String),
    #[error("container {0:?} not found")]
    ContainerNotFound(String),
    /// The container spec has no `command`: this runtime pulls no image, so
    /// there is no entrypoint to fall back on.
    #[error("no command specified for container {container:?}: the process runtime does not pull images, so `command` is required")]
    NoCommand { container: String },
    /// A field of the configuration is unusable.
    #[error("invalid {field}: {reason}")]
    InvalidConfig { field: String, reason: String },
    /// The container could not be started (see [`StartFailure`]).
    #[error("failed to start container {container:?}: {failure}")]
    StartFailed {
        container: String,
        failure: StartFailure,
    },
    /// A command could not be started in the container (exec).
    #[error("exec in container {container:?} failed: {failure}")]
    ExecFailed {
        container: String,
        failure: StartFailure,
    },
    /// The operation needs another state (for example exec in a container
    /// that is not running).
    #[error("container {id:?} is {state}: cannot {op}")]
    InvalidState {
        id: String,
        state: &'static str,
        op: &'static str,
    },
    /// The pod sandbox is stopped: no new containers.
    #[error("pod sandbox {0:?} is not ready")]
    SandboxNotReady(String),
    /// An operation did not finish in time (exec_sync, stop).
    #[error("{op} timed out after {after:?}")]
    Timeout {
        op: &'static str,
        after: std::time::Duration,
    },
    /// A cgroup file could not be written.
    #[error("cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Filesystem or system-call failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// Talking to a container's shim failed.
    #[error("shim of container {id:?}: {message}")]
    Shim { id: String, message: String },
    /// The backend cannot do this.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The reason a kubelet reports in a container's `waiting` state when
    /// creating or starting it failed with this error.
    pub fn kube_reason(&self) -> &'static str {
        match self {
            Error::InvalidConfig { .. } => "CreateContainerConfigError",
            Error::StartFailed { .. } => "RunContainerError",
            _ => "CreateContainerError",
        }
    }

    /// True for the two not-found variants.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::SandboxNotFound(_) | Error::ContainerNotFound(_)
        )
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
