//! The `Runtime` trait: what the agent needs from a container runtime.

use crate::error::Result;
use crate::types::*;
use futures::future::BoxFuture;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{broadcast, mpsc};

/// A byte source handed out by exec, attach and port-forward.
pub type BoxReader = Box<dyn AsyncRead + Send + Unpin>;
/// A byte sink handed out by exec and attach.
pub type BoxWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// A bidirectional byte stream (port-forward).
pub trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

/// A connection to a port in the pod's network.
pub type PortStream = Box<dyn Duplex>;

/// Which streams an exec or attach wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    /// A terminal: output comes on `stdout` only and the session can be
    /// resized.
    pub tty: bool,
    /// Initial terminal size (tty only).
    pub size: Option<TerminalSize>,
}

/// A running exec or attach session. Drop `stdin` to send EOF. `exit`
/// resolves to the exit code of the exec'd process (for attach: of the
/// container) once it ends.
pub struct StreamSession {
    pub stdin: Option<BoxWriter>,
    pub stdout: Option<BoxReader>,
    pub stderr: Option<BoxReader>,
    /// Present for tty sessions: send new terminal sizes here.
    pub resize: Option<mpsc::Sender<TerminalSize>>,
    pub exit: BoxFuture<'static, Result<i32>>,
}

impl std::fmt::Debug for StreamSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSession")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("resize", &self.resize.is_some())
            .finish()
    }
}

/// The agent's view of a container runtime, shaped after CRI's
/// `RuntimeService`. Object safe: the agent holds an `Arc<dyn Runtime>`.
///
/// Every call is idempotent where CRI says so: stopping a stopped container
/// or removing a removed one succeeds.
pub trait Runtime: Send + Sync + 'static {
    /// Backend name and version, reported as the node's
    /// `containerRuntimeVersion` (`process://0.1.0`).
    fn version(&self) -> String;

    /// Creates a pod sandbox (on the process runtime: the pod cgroup and
    /// directory) and returns its id.
    fn run_pod_sandbox<'a>(&'a self, config: PodSandboxConfig) -> BoxFuture<'a, Result<SandboxId>>;
    /// Forcibly stops every container of the sandbox and marks it NotReady.
    fn stop_pod_sandbox<'a>(&'a self, id: &'a SandboxId) -> BoxFuture<'a, Result<()>>;
    /// Stops and removes every container of the sandbox, then the sandbox.
    fn remove_pod_sandbox<'a>(&'a self, id: &'a SandboxId) -> BoxFuture<'a, Result<()>>;
    fn pod_sandbox_status<'a>(
        &'a self,
        id: &'a SandboxId,
    ) -> BoxFuture<'a, Result<PodSandboxStatus>>;
    fn list_pod_sandboxes<'a>(
        &'a self,
        filter: SandboxFilter,
    ) -> BoxFuture<'a, Result<Vec<PodSandboxStatus>>>;

    /// Records a container in a sandbox; validates its config (a container
    /// without a command fails here with [`crate::Error::NoCommand`]).
    fn create_container<'a>(
        &'a self,
        sandbox: &'a SandboxId,
        config: ContainerConfig,
    ) -> BoxFuture<'a, Result<ContainerId>>;
    /// Starts a created container. A process that cannot start leaves the
    /// container exited with reason `StartError`, exit code 128, and the
    /// error is returned.
    fn start_container<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<()>>;
    /// SIGTERM to the container's process group, SIGKILL after `timeout`
    /// (at once when `timeout` is zero). Returns once the container exited.
    fn stop_container<'a>(
        &'a self,
        id: &'a ContainerId,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<()>>;
    /// Removes a container (killing it if it still runs) and its log files.
    fn remove_container<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<()>>;
    fn container_status<'a>(
        &'a self,
        id: &'a ContainerId,
    ) -> BoxFuture<'a, Result<ContainerStatus>>;
    fn list_containers<'a>(
        &'a self,
        filter: ContainerFilter,
    ) -> BoxFuture<'a, Result<Vec<ContainerStatus>>>;
    /// Resolves when the container is exited, with its final status.
    fn wait_container<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<ContainerStatus>>;
    /// Lifecycle events of all containers. A lagging receiver loses events
    /// (`RecvError::Lagged`) and should relist.
    fn events(&self) -> broadcast::Receiver<ContainerEvent>;

    /// Runs `cmd` in the container and collects its output; kills it and
    /// fails with [`crate::Error::Timeout`] after `timeout`.
    fn exec_sync<'a>(
        &'a self,
        id: &'a ContainerId,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecSyncResult>>;
    /// Starts `cmd` in the container with the streams asked for.
    fn exec<'a>(
        &'a self,
        id: &'a ContainerId,
        cmd: Vec<String>,
        streams: StreamOptions,
    ) -> BoxFuture<'a, Result<StreamSession>>;
    /// Connects to the container's own stdin/stdout/stderr.
    fn attach<'a>(
        &'a self,
        id: &'a ContainerId,
        streams: StreamOptions,
    ) -> BoxFuture<'a, Result<StreamSession>>;
    /// Opens a TCP connection to `port` in the pod's network.
    fn port_forward<'a>(
        &'a self,
        sandbox: &'a SandboxId,
        port: u16,
    ) -> BoxFuture<'a, Result<PortStream>>;
    /// Makes the container's log writer reopen its log file (after the file
    /// was moved away).
    fn reopen_container_log<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<()>>;
}
