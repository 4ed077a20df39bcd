//! `FakeRuntime`: a scripted, in-memory runtime for the agent's unit tests.
//! Containers are tokio tasks that follow a [`FakeBehavior`] chosen by
//! container name; all timing goes through `tokio::time`, so tests can run
//! with paused time (`#[tokio::test(start_paused = true)]`).

use crate::cri_log::{LogStream, LogWriter};
use crate::error::{Error, Result, StartFailure};
use crate::runtime::*;
use crate::types::*;
use futures::future::BoxFuture;
use futures::FutureExt;
use jiff::Timestamp;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// How a fake container's process behaves once started.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeBehavior {
    pub run: FakeRun,
    pub on_term: FakeOnTerm,
    /// Lines written to the container's log (stdout) when it starts.
    pub output: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum FakeRun {
    /// Runs until stopped.
    Forever,
    /// Exits with `exit_code` after `after`.
    ExitAfter { after: Duration, exit_code: i32 },
    /// Is OOM-killed (exit 137, reason `OOMKilled`) after `after`.
    OomAfter { after: Duration },
    /// Fails to start with this failure (exit 128, reason `StartError`).
    FailStart(StartFailure),
}

/// What the process does on SIGTERM.
#[derive(Debug, Clone, PartialEq)]
pub enum FakeOnTerm {
    /// Exits with `exit_code` after `after`.
    Exit { after: Duration, exit_code: i32 },
    /// Ignores it (only SIGKILL ends it: exit 137).
    Ignore,
}

impl Default for FakeBehavior {
    fn default() -> Self {
        FakeBehavior::run_forever()
    }
}

impl FakeBehavior {
    /// Runs until stopped; exits 143 at once on SIGTERM.
    pub fn run_forever() -> Self {
        FakeBehavior {
            run: FakeRun::Forever,
            on_term: FakeOnTerm::Exit {
                after: Duration::ZERO,
                exit_code: 143,
            },
            output: Vec::new(),
        }
    }
    pub fn exit_after(after: Duration, exit_code: i32) -> Self {
        FakeBehavior {
            run: FakeRun::ExitAfter { after, exit_code },
            ..Self::run_forever()
        }
    }
    /// Exits with `exit_code` right after starting.
    pub fn crash(exit_code: i32) -> Self {
        Self::exit_after(Duration::ZERO, exit_code)
    }
    pub fn oom_after(after: Duration) -> Self {
        FakeBehavior {
            run: FakeRun::OomAfter { after },
            ..Self::run_forever()
        }
    }
    pub fn fail_start(failure: StartFailure) -> Self {
        FakeBehavior {
            run: FakeRun::FailStart(failure),
            ..Self::run_forever()
        }
    }
    pub fn on_term(mut self, on_term: FakeOnTerm) -> Self {
        self.on_term = on_term;
        self
    }
    pub fn with_output(mut self, lines: &[&str]) -> Self {
        self.output = lines.iter().map(|s| s.to_string()).collect();
        self
    }
}

/// What an exec in a fake container returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FakeExec {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// How long the command runs.
    pub duration: Duration,
}

type ExecHandler = Arc<dyn Fn(&ContainerStatus, &[String]) -> FakeExec + Send + Sync>;

/// A call the fake received, for assertions.
#[derive(Debug, Clone, PartialEq)]
pub enum FakeCall {
    RunPodSandbox(String),
    StopPodSandbox(SandboxId),
    RemovePodSandbox(SandboxId),
    CreateContainer(SandboxId, String),
    StartContainer(ContainerId),
    StopContainer(ContainerId, Duration),
    RemoveContainer(ContainerId),
    Exec(ContainerId, Vec<String>),
    PortForward(SandboxId, u16),
}

struct FakeContainer {
    status: ContainerStatus,
    sandbox_ready: bool,
    signals: Option<tokio::sync::mpsc::UnboundedSender<Sig>>,
    done: watch::Sender<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sig {
    Term,
    Kill,
}

#[derive(Default)]
struct State {
    sandboxes: HashMap<SandboxId, PodSandboxStatus>,
    containers: HashMap<ContainerId, FakeContainer>,
    behaviors: HashMap<String, VecDeque<FakeBehavior>>,
    defaults: HashMap<String, FakeBehavior>,
    calls: Vec<FakeCall>,
}

/// The fake runtime. Cheap to clone (shared state).
#[derive(Clone)]
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<ContainerEvent>,
    exec: Arc<Mutex<ExecHandler>>,
}

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeRuntime {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(1024);
        FakeRuntime {
            state: Arc::new(Mutex::new(State::default())),
            events,
            exec: Arc::new(Mutex::new(Arc::new(|_, _| FakeExec::default()))),
        }
    }

    /// Behaviour of every start of containers named `name` (unless queued
    /// ones are pending).
    pub fn set_behavior(&self, name: &str, b: FakeBehavior) {
        self.state.lock().defaults.insert(name.to_owned(), b);
    }

    /// Behaviours for the next starts of containers named `name`, in order;
    /// then the default one.
    pub fn push_behaviors(&self, name: &str, bs: impl IntoIterator<Item = FakeBehavior>) {
        self.state
            .lock()
            .behaviors
            .entry(name.to_owned())
            .or_default()
            .extend(bs);
    }

    /// What exec and exec_sync return.
    pub fn set_exec_handler(
        &self,
        f: impl Fn(&ContainerStatus, &[String]) -> FakeExec + Send + Sync + 'static,
    ) {
        *self.exec.lock() = Arc::new(f);
    }

    /// Calls received so far.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.state.lock().calls.clone()
    }

    fn record(&self, c: FakeCall) {
        self.state.lock().calls.push(c);
    }

    fn emit(&self, s: &ContainerStatus, kind: ContainerEventKind) {
        let _ = self.events.send(ContainerEvent {
            container_id: s.id.clone(),
            sandbox_id: s.sandbox_id.clone(),
            kind,
        });
    }

    fn finish(&self, id: &ContainerId, exit_code: i32, reason_: &str, message: Option<String>) {
        let status = {
            let mut st = self.state.lock();
            let Some(c) = st.containers.get_mut(id) else {
                return;
            };
            if c.status.state == ContainerState::Exited {
                return;
            }
            c.status.state = ContainerState::Exited;
            c.status.exit_code = Some(exit_code);
            c.status.reason = Some(reason_.to_owned());
            c.status.message = message;
            c.status.finished_at = Some(Timestamp::now());
            c.status.pid = None;
            c.signals = None;
            c.done.send_replace(true);
            c.status.clone()
        };
        self.emit(&status, ContainerEventKind::Stopped);
    }

    fn exit_reason(code: i32) -> &'static str {
        if code == 0 {
            reason::COMPLETED
        } else {
            reason::ERROR
        }
    }

    fn status_of(&self, id: &ContainerId) -> Result<ContainerStatus> {
        self.state
            .lock()
            .containers
            .get(id)
            .map(|c| c.status.clone())
            .ok_or_else(|| Error::ContainerNotFound(id.0.clone()))
    }

    async fn run_process(
        self,
        id: ContainerId,
        b: FakeBehavior,
        mut sigs: tokio::sync::mpsc::UnboundedReceiver<Sig>,
    ) {
        let sleep_until_exit = async {
            match b.run {
                FakeRun::Forever => futures::future::pending::<(i32, &str)>().await,
                FakeRun::ExitAfter { after, exit_code } => {
                    tokio::time::sleep(after).await;
                    (exit_code, Self::exit_reason(exit_code))
                }
                FakeRun::OomAfter { after } => {
                    tokio::time::sleep(after).await;
                    (137, reason::OOM_KILLED)
                }
                FakeRun::FailStart(_) => unreachable!("handled at start"),
            }
        };
        tokio::pin!(sleep_until_exit);
        let mut term_deadline: Option<(tokio::time::Instant, i32)> = None;
        let (code, why) = loop {
            let term = async {
                match term_deadline {
                    Some((at, code)) => {
                        tokio::time::sleep_until(at).await;
                        code
                    }
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut sleep_until_exit => break r,
                code = term => break (code, Self::exit_reason(code)),
                sig = sigs.recv() => match sig {
                    Some(Sig::Kill) | None => break (137, reason::ERROR),
                    Some(Sig::Term) => {
                        if let FakeOnTerm::Exit { after, exit_code } = b.on_term {
                            if term_deadline.is_none() {
                                term_deadline = Some((tokio::time::Instant::now() + after, exit_code));
                            }
                        }
                    }
                },
            }
        };
        self.finish(&id, code, why, None);
    }
}

impl Runtime for FakeRuntime {
    fn version(&self) -> String {
        "fake://0.1.0".into()
    }

    fn run_pod_sandbox<'a>(&'a self, config: PodSandboxConfig) -> BoxFuture<'a, Result<SandboxId>> {
        async move {
            self.record(FakeCall::RunPodSandbox(config.name.clone()));
            let id = SandboxId::generate();
            let status = PodSandboxStatus {
                id: id.clone(),
                config,
                state: SandboxState::Ready,
                created_at: Timestamp::now(),
                network: PodNetwork::Host,
                cgroup: CgroupInfo::Disabled {
                    reason: "fake runtime".into(),
                },
            };
            self.state.lock().sandboxes.insert(id.clone(), status);
            Ok(id)
        }
        .boxed()
    }

    fn stop_pod_sandbox<'a>(&'a self, id: &'a SandboxId) -> BoxFuture<'a, Result<()>> {
        async move {
            self.record(FakeCall::StopPodSandbox(id.clone()));
            let ids: Vec<ContainerId> = {
                let mut st = self.state.lock();
                let sb = st
                    .sandboxes
                    .get_mut(id)
                    .ok_or_else(|| Error::SandboxNotFound(id.0.clone()))?;
                sb.state = SandboxState::NotReady;
                st.containers
                    .values_mut()
                    .filter(|c| c.status.sandbox_id == *id)
                    .map(|c| {
                        c.sandbox_ready = false;
                        c.status.id.clone()
                    })
                    .collect()
            };
            for c in ids {
                self.stop_container(&c, Duration::ZERO).await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn remove_pod_sandbox<'a>(&'a self, id: &'a SandboxId) -> BoxFuture<'a, Result<()>> {
        async move {
            self.record(FakeCall::RemovePodSandbox(id.clone()));
            let ids: Vec<ContainerId> = self
                .state
                .lock()
                .containers
                .values()
                .filter(|c| c.status.sandbox_id == *id)
                .map(|c| c.status.id.clone())
                .collect();
            for c in ids {
                self.remove_container(&c).await?;
            }
            self.state.lock().sandboxes.remove(id);
            Ok(())
        }
        .boxed()
    }

    fn pod_sandbox_status<'a>(
        &'a self,
        id: &'a SandboxId,
    ) -> BoxFuture<'a, Result<PodSandboxStatus>> {
        async move {
            self.state
                .lock()
                .sandboxes
                .get(id)
                .cloned()
                .ok_or_else(|| Error::SandboxNotFound(id.0.clone()))
        }
        .boxed()
    }

    fn list_pod_sandboxes<'a>(
        &'a self,
        filter: SandboxFilter,
    ) -> BoxFuture<'a, Result<Vec<PodSandboxStatus>>> {
        async move {
            let mut v: Vec<_> = self
                .state
                .lock()
                .sandboxes
                .values()
                .filter(|s| filter.matches(s))
                .cloned()
                .collect();
            v.sort_by_key(|s| s.created_at);
            Ok(v)
        }
        .boxed()
    }

    fn create_container<'a>(
        &'a self,
        sandbox: &'a SandboxId,
        config: ContainerConfig,
    ) -> BoxFuture<'a, Result<ContainerId>> {
        async move {
            self.record(FakeCall::CreateContainer(
                sandbox.clone(),
                config.name.clone(),
            ));
            if config.command.is_empty() {
                return Err(Error::NoCommand {
                    container: config.name.clone(),
                });
            }
            let mut st = self.state.lock();
            let sb = st
                .sandboxes
                .get(sandbox)
                .ok_or_else(|| Error::SandboxNotFound(sandbox.0.clone()))?;
            if sb.state != SandboxState::Ready {
                return Err(Error::SandboxNotReady(sandbox.0.clone()));
            }
            let log_path = sb.config.log_directory.join(&config.log_path);
            let id = ContainerId::generate();
            let status = ContainerStatus {
                id: id.clone(),
                sandbox_id: sandbox.clone(),
                name: config.name.clone(),
                attempt: config.attempt,
                image: config.image.clone(),
                image_ref: format!("fake://{}", config.image),
                state: ContainerState::Created,
                created_at: Timestamp::now(),
                started_at: None,
                finished_at: None,
                exit_code: None,
                reason: None,
                message: None,
                pid: None,
                log_path,
                labels: config.labels,
                annotations: config.annotations,
                mounts: config.mounts,
                cgroup: CgroupInfo::Disabled {
                    reason: "fake runtime".into(),
                },
            };
            let (done, _) = watch::channel(false);
            st.containers.insert(
                id.clone(),
                FakeContainer {
                    status: status.clone(),
                    sandbox_ready: true,
                    signals: None,
                    done,
                },
            );
            drop(st);
            self.emit(&status, ContainerEventKind::Created);
            Ok(id)
        }
        .boxed()
    }

    fn start_container<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<()>> {
        async move {
            self.record(FakeCall::StartContainer(id.clone()));
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let (status, behavior) = {
                let mut st = self.state.lock();
                let c = st
                    .containers
                    .get(id)
                    .ok_or_else(|| Error::ContainerNotFound(id.0.clone()))?;
                if c.status.state != ContainerState::Created {
                    return Err(Error::InvalidState {
                        id: id.0.clone(),
                        state: c.status.state.as_str(),
                        op: "start",
                    });
                }
                if !c.sandbox_ready {
                    return Err(Error::SandboxNotReady(c.status.sandbox_id.0.clone()));
                }
                let name = c.status.name.clone();
                let behavior = st
                    .behaviors
                    .get_mut(&name)
                    .and_then(|q| q.pop_front())
                    .or_else(|| st.defaults.get(&name).cloned())
                    .unwrap_or_default();
                let c = st.containers.get_mut(id).expect("checked above");
                if !matches!(behavior.run, FakeRun::FailStart(_)) {
                    c.status.state = ContainerState::Running;
                    c.status.started_at = Some(Timestamp::now());
                    c.status.pid = Some(10_000 + (id.0.len() as u32));
                    c.signals = Some(tx);
                }
                (c.status.clone(), behavior)
            };
            if let FakeRun::FailStart(failure) = &behavior.run {
                self.finish(id, 128, reason::START_ERROR, Some(failure.to_string()));
                return Err(Error::StartFailed {
                    container: status.name,
                    failure: failure.clone(),
                });
            }
            if !behavior.output.is_empty() && !status.log_path.as_os_str().is_empty() {
                let mut w = LogWriter::open(&status.log_path, LogRotation::default())
                    .map_err(|e| Error::io(format!("open log {}", status.log_path.display()), e))?;
                for line in &behavior.output {
                    w.write_entry(Timestamp::now(), LogStream::Stdout, false, line.as_bytes())
                        .map_err(|e| Error::io("write log", e))?;
                }
            }
            self.emit(&status, ContainerEventKind::Started);
            tokio::spawn(self.clone().run_process(id.clone(), behavior, rx));
            Ok(())
        }
        .boxed()
    }

    fn stop_container<'a>(
        &'a self,
        id: &'a ContainerId,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<()>> {
        async move {
            self.record(FakeCall::StopContainer(id.clone(), timeout));
            let (signals, mut done) = {
                let st = self.state.lock();
                let c = st
                    .containers
                    .get(id)
                    .ok_or_else(|| Error::ContainerNotFound(id.0.clone()))?;
                (c.signals.clone(), c.done.subscribe())
            };
            let Some(signals) = signals else {
                return Ok(());
            };
            if !timeout.is_zero() {
                let _ = signals.send(Sig::Term);
                if tokio::time::timeout(timeout, done.wait_for(|d| *d))
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            let _ = signals.send(Sig::Kill);
            let _ = done.wait_for(|d| *d).await;
            Ok(())
        }
        .boxed()
    }

    fn remove_container<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<()>> {
        async move {
            self.record(FakeCall::RemoveContainer(id.clone()));
            if self.state.lock().containers.contains_key(id) {
                self.stop_container(id, Duration::ZERO).await?;
            }
            let removed = self.state.lock().containers.remove(id);
            if let Some(c) = removed {
                self.emit(&c.status, ContainerEventKind::Removed);
            }
            Ok(())
        }
        .boxed()
    }

    fn container_status<'a>(
        &'a self,
        id: &'a ContainerId,
    ) -> BoxFuture<'a, Result<ContainerStatus>> {
        async move { self.status_of(id) }.boxed()
    }

    fn list_containers<'a>(
        &'a self,
        filter: ContainerFilter,
    ) -> BoxFuture<'a, Result<Vec<ContainerStatus>>> {
        async move {
            let mut v: Vec<_> = self
                .state
                .lock()
                .containers
                .values()
                .map(|c| c.status.clone())
                .filter(|s| filter.matches(s))
                .collect();
            v.sort_by_key(|s| s.created_at);
            Ok(v)
        }
        .boxed()
    }

    fn wait_container<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<ContainerStatus>> {
        async move {
            let mut done = {
                let st = self.state.lock();
                let c = st
                    .containers
                    .get(id)
                    .ok_or_else(|| Error::ContainerNotFound(id.0.clone()))?;
                c.done.subscribe()
            };
            let _ = done.wait_for(|d| *d).await;
            self.status_of(id)
        }
        .boxed()
    }

    fn events(&self) -> broadcast::Receiver<ContainerEvent> {
        self.events.subscribe()
    }

    fn exec_sync<'a>(
        &'a self,
        id: &'a ContainerId,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecSyncResult>> {
        async move {
            self.record(FakeCall::Exec(id.clone(), cmd.clone()));
            let status = self.status_of(id)?;
            if status.state != ContainerState::Running {
                return Err(Error::InvalidState {
                    id: id.0.clone(),
                    state: status.state.as_str(),
                    op: "exec",
                });
            }
            let handler = self.exec.lock().clone();
            let r = handler(&status, &cmd);
            if r.duration > timeout {
                tokio::time::sleep(timeout).await;
                return Err(Error::Timeout {
                    op: "exec",
                    after: timeout,
                });
            }
            tokio::time::sleep(r.duration).await;
            Ok(ExecSyncResult {
                stdout: r.stdout,
                stderr: r.stderr,
                exit_code: r.exit_code,
            })
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
            self.record(FakeCall::Exec(id.clone(), cmd.clone()));
            let status = self.status_of(id)?;
            if status.state != ContainerState::Running {
                return Err(Error::InvalidState {
                    id: id.0.clone(),
                    state: status.state.as_str(),
                    op: "exec",
                });
            }
            let handler = self.exec.lock().clone();
            let r = handler(&status, &cmd);
            let code = r.exit_code;
            let duration = r.duration;
            Ok(StreamSession {
                stdin: streams
                    .stdin
                    .then(|| Box::new(tokio::io::sink()) as BoxWriter),
                stdout: streams
                    .stdout
                    .then(|| Box::new(std::io::Cursor::new(r.stdout)) as BoxReader),
                stderr: (streams.stderr && !streams.tty)
                    .then(|| Box::new(std::io::Cursor::new(r.stderr)) as BoxReader),
                resize: streams.tty.then(|| tokio::sync::mpsc::channel(4).0),
                exit: async move {
                    tokio::time::sleep(duration).await;
                    Ok(code)
                }
                .boxed(),
            })
        }
        .boxed()
    }

    fn attach<'a>(
        &'a self,
        _id: &'a ContainerId,
        _streams: StreamOptions,
    ) -> BoxFuture<'a, Result<StreamSession>> {
        async move { Err(Error::Unsupported("attach on the fake runtime")) }.boxed()
    }

    fn port_forward<'a>(
        &'a self,
        sandbox: &'a SandboxId,
        port: u16,
    ) -> BoxFuture<'a, Result<PortStream>> {
        async move {
            self.record(FakeCall::PortForward(sandbox.clone(), port));
            if !self.state.lock().sandboxes.contains_key(sandbox) {
                return Err(Error::SandboxNotFound(sandbox.0.clone()));
            }
            // An echo server on the other end.
            let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(&mut theirs);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
            Ok(Box::new(ours) as PortStream)
        }
        .boxed()
    }

    fn reopen_container_log<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<()>> {
        async move { self.status_of(id).map(|_| ()) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pod(rt: &FakeRuntime) -> SandboxId {
        rt.run_pod_sandbox(PodSandboxConfig {
            name: "p".into(),
            namespace: "default".into(),
            ..Default::default()
        })
        .await
        .unwrap()
    }

    fn container(name: &str) -> ContainerConfig {
        ContainerConfig {
            name: name.into(),
            command: vec!["app".into()],
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_exit_after_duration() {
        let rt = FakeRuntime::new();
        rt.set_behavior("job", FakeBehavior::exit_after(Duration::from_secs(30), 3));
        let sb = pod(&rt).await;
        let id = rt.create_container(&sb, container("job")).await.unwrap();
        let mut events = rt.events();
        rt.start_container(&id).await.unwrap();
        assert_eq!(
            events.recv().await.unwrap().kind,
            ContainerEventKind::Started
        );
        let t0 = tokio::time::Instant::now();
        let st = rt.wait_container(&id).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(30));
        assert_eq!(st.state, ContainerState::Exited);
        assert_eq!(st.exit_code, Some(3));
        assert_eq!(st.reason.as_deref(), Some(reason::ERROR));
        assert_eq!(
            events.recv().await.unwrap().kind,
            ContainerEventKind::Stopped
        );
    }

    #[tokio::test(start_paused = true)]
    async fn queued_behaviours_then_default() {
        let rt = FakeRuntime::new();
        rt.push_behaviors(
            "web",
            [
                FakeBehavior::crash(1),
                FakeBehavior::oom_after(Duration::from_secs(2)),
            ],
        );
        rt.set_behavior("web", FakeBehavior::crash(0));
        let sb = pod(&rt).await;
        let mut got = Vec::new();
        for _ in 0..3 {
            let id = rt.create_container(&sb, container("web")).await.unwrap();
            rt.start_container(&id).await.unwrap();
            let st = rt.wait_container(&id).await.unwrap();
            got.push((st.exit_code.unwrap(), st.reason.unwrap()));
        }
        assert_eq!(
            got,
            vec![
                (1, "Error".to_owned()),
                (137, "OOMKilled".to_owned()),
                (0, "Completed".to_owned())
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn graceful_stop_and_kill_after_timeout() {
        let rt = FakeRuntime::new();
        rt.set_behavior(
            "graceful",
            FakeBehavior::run_forever().on_term(FakeOnTerm::Exit {
                after: Duration::from_secs(2),
                exit_code: 7,
            }),
        );
        rt.set_behavior(
            "stubborn",
            FakeBehavior::run_forever().on_term(FakeOnTerm::Ignore),
        );
        let sb = pod(&rt).await;
        let g = rt
            .create_container(&sb, container("graceful"))
            .await
            .unwrap();
        let s = rt
            .create_container(&sb, container("stubborn"))
            .await
            .unwrap();
        rt.start_container(&g).await.unwrap();
        rt.start_container(&s).await.unwrap();

        let t0 = tokio::time::Instant::now();
        rt.stop_container(&g, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(2));
        assert_eq!(rt.container_status(&g).await.unwrap().exit_code, Some(7));

        let t0 = tokio::time::Instant::now();
        rt.stop_container(&s, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(10));
        assert_eq!(rt.container_status(&s).await.unwrap().exit_code, Some(137));
        // Stopping again is a no-op.
        rt.stop_container(&s, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(rt
            .calls()
            .contains(&FakeCall::StopContainer(s.clone(), Duration::from_secs(10))));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_and_exec() {
        let rt = FakeRuntime::new();
        let sb = pod(&rt).await;
        let err = rt
            .create_container(
                &sb,
                ContainerConfig {
                    name: "nocmd".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert_eq!(err.kube_reason(), "CreateContainerError");

        rt.set_behavior(
            "bad",
            FakeBehavior::fail_start(StartFailure::ExecutableNotFound {
                program: "foo".into(),
            }),
        );
        let id = rt.create_container(&sb, container("bad")).await.unwrap();
        let err = rt.start_container(&id).await.unwrap_err();
        assert!(
            err.to_string().contains("executable file not found"),
            "{err}"
        );
        let st = rt.container_status(&id).await.unwrap();
        assert_eq!(
            (st.exit_code, st.reason.as_deref()),
            (Some(128), Some("StartError"))
        );

        rt.set_exec_handler(|_, cmd| FakeExec {
            exit_code: if cmd[0] == "ok" { 0 } else { 1 },
            stdout: b"out".to_vec(),
            duration: Duration::from_secs(if cmd[0] == "slow" { 5 } else { 0 }),
            ..Default::default()
        });
        let id = rt.create_container(&sb, container("app")).await.unwrap();
        rt.start_container(&id).await.unwrap();
        let r = rt
            .exec_sync(&id, vec!["ok".into()], Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!((r.exit_code, r.stdout.as_slice()), (0, &b"out"[..]));
        let e = rt
            .exec_sync(&id, vec!["slow".into()], Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }));
        let mut s = rt
            .exec(
                &id,
                vec!["no".into()],
                StreamOptions {
                    stdout: true,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let mut out = String::new();
        s.stdout
            .as_mut()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        assert_eq!(out, "out");
        assert_eq!(s.exit.await.unwrap(), 1);

        let mut pf = rt.port_forward(&sb, 80).await.unwrap();
        pf.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        pf.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");

        rt.remove_pod_sandbox(&sb).await.unwrap();
        assert!(rt
            .list_containers(ContainerFilter::default())
            .await
            .unwrap()
            .is_empty());
        assert!(rt.pod_sandbox_status(&sb).await.unwrap_err().is_not_found());
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_output_goes_to_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let rt = FakeRuntime::new();
        rt.set_behavior(
            "app",
            FakeBehavior::run_forever().with_output(&["hello", "world"]),
        );
        let sb = rt
            .run_pod_sandbox(PodSandboxConfig {
                name: "p".into(),
                log_directory: dir.path().to_owned(),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut c = container("app");
        c.log_path = "app/0.log".into();
        let id = rt.create_container(&sb, c).await.unwrap();
        rt.start_container(&id).await.unwrap();
        let st = rt.container_status(&id).await.unwrap();
        let reader = crate::cri_log::LogReader::new(
            &st.log_path,
            Default::default(),
            Box::pin(futures::future::ready(())),
        );
        let mut r = reader;
        let mut all = String::new();
        while let Some(c) = r.next_chunk().await.unwrap() {
            all.push_str(std::str::from_utf8(&c).unwrap());
        }
        assert_eq!(all, "hello\nworld\n");
    }
}
