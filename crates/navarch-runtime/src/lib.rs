//! The node agent's container runtime layer.
//!
//! The agent talks to a [`Runtime`]: pod sandboxes and containers, shaped
//! after CRI's `RuntimeService` (run/stop/remove sandbox, create/start/stop/
//! remove container, status, list, wait, events, exec, attach,
//! port-forward, reopen log) in async Rust with a typed [`Error`]. The trait
//! is object safe (boxed futures), so the agent holds an `Arc<dyn Runtime>`
//! and a `cri` backend can be added beside these two:
//!
//! - [`ProcessRuntime`] (`process`): each container is a host process.
//! - [`FakeRuntime`] (`fake`): scripted containers on tokio time, for the
//!   agent's unit tests (paused time works).
//!
//! [`cri_log`] writes and reads container logs in the CRI format with
//! rotation: what `kubectl logs` (follow, tail, since, timestamps,
//! limitBytes, previous) needs.
//!
//! # The process runtime
//!
//! **Shim.** Every container has a small shim process ([`shim_main`], which
//! the agent binary must call from a hidden subcommand such as `navarch
//! runtime-shim`, before it starts tokio). The shim daemonizes (own session,
//! child subreaper), starts the container, and stays its parent: it drains
//! stdout/stderr into the log file (rotating it by size), fans the output
//! out to `attach` clients, holds the container's stdin (`stdin: true`) or
//! pty (`tty: true`), reaps the process and writes `exit.json` (exit code,
//! 128 + signal for signals, OOM reason, finish time). So a container keeps
//! running, logging and having its exit code recorded while the agent is
//! down. The agent talks to a shim over a unix socket in the container's
//! state directory (kill, wait, attach, reopen log); signals go through the
//! shim, which cannot confuse a reused pid since it holds the unreaped
//! child. A shim costs about 0.5 MB of private memory.
//!
//! **Adoption.** All state is files under the runtime's state directory
//! (mode 0700; env values may be Secrets): `sandbox.json`,
//! `container.json` (config, log path, cgroup, boot id), the shim's
//! `shim.json` (pids and their start times from `/proc/<pid>/stat`) and
//! `exit.json`. A new [`ProcessRuntime`] on the same directory reports
//! running containers as running (same pid, same start time, same boot) and
//! exited ones with the exit code their shim recorded. If the shim vanished
//! too (killed, or the machine rebooted) the exit code cannot be known: the
//! container is reported exited with code 137 and reason
//! `ContainerStatusUnknown`, as the kubelet does.
//!
//! **Processes.** `command` + `args` (a container without `command` is a
//! [`Error::NoCommand`]: no image is pulled, so there is no entrypoint),
//! `workingDir` (default `/`), `env` (with `PATH` and `HOME` filled in as
//! runc does), in its own session and process group, as
//! `runAsUser`/`runAsGroup`/`supplementalGroups` (setgroups, setgid,
//! setuid before exec). A command that cannot be started is a
//! [`StartFailure`] worded like runc's (`exec: "foo": executable file not
//! found in $PATH`) and leaves the container exited with code 128, reason
//! `StartError`. Stop sends SIGTERM to the process group, SIGKILL after the
//! timeout; when the main process ends, what is left of the container (its
//! process group, its cgroup) is killed, as a pid namespace would.
//!
//! **Cgroups.** One cgroup per pod (`<parent>/pod-<sandbox>`, pod-level
//! limits) and one per container below it (container limits, OOM
//! accounting, kill-all), on cgroup v2 when the unified hierarchy has the
//! cpu and memory controllers, else on the v1 cpu and memory hierarchies;
//! detected at start-up. `limits.cpu` becomes a CFS quota over a 100 ms
//! period, `requests.cpu` shares/weight, `limits.memory` the memory limit.
//! A container whose cgroup saw an OOM kill (v2 `memory.events`, v1
//! `memory.oom_control` `oom_kill`) is reported `OOMKilled`. Without usable
//! cgroups (not root, or disabled) containers still run: a warning is
//! logged and statuses say `CgroupInfo::Disabled` with the reason.
//!
//! **Volumes.** A container with mounts gets a private mount namespace
//! (`unshare(CLONE_NEWNS)`, `/` made a recursive slave so nothing leaks out)
//! with each host directory bind-mounted at its `mountPath`, read-only when
//! asked; two pods each see their own `/etc/config`. Missing mount points are
//! created (empty) on the host, as the filesystem is shared. Without root
//! this is impossible: containers with mounts are then refused with a clear
//! `InvalidConfig` error. Exec joins the container's mount namespace
//! (`setns`) and cgroup and runs as its user, in its cwd, with its env.
//!
//! **Network.** Pods share the node's network (`hostNetwork` semantics):
//! port-forward connects to `127.0.0.1:<port>`.
//!
//! **Not isolated.** No pid, user, network or IPC namespace, no rootfs, no
//! capability dropping, no seccomp: a container running as root is root on
//! the node. That is the `process` runtime's contract; isolation comes with
//! the `cri` backend.

pub mod cgroup;
pub mod cri_log;
mod error;
pub mod fake;
mod fdio;
pub mod process;
mod runtime;
pub mod shim;
mod sys;
mod types;

pub use error::{Error, Result, StartFailure};
pub use fake::{FakeBehavior, FakeCall, FakeExec, FakeOnTerm, FakeRun, FakeRuntime};
pub use process::{MountMode, ProcessRuntime, ProcessRuntimeConfig, ShimCommand};
pub use runtime::{
    BoxReader, BoxWriter, Duplex, PortStream, Runtime, StreamOptions, StreamSession,
};
pub use shim::shim_main;
pub use types::*;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn runtimes_are_object_safe() {
        let rt: Arc<dyn Runtime> = Arc::new(FakeRuntime::new());
        assert_eq!(rt.version(), "fake://0.1.0");
    }
}
