//! The per-container shim: a small daemon that is the parent of one
//! container process, drains its output into the CRI log file (rotating
//! it), fans the output out to attached clients, feeds its stdin, reaps it
//! and records how it ended. It outlives the agent, so containers keep
//! running and logging while the agent restarts, and their exit codes are
//! known when it comes back.
//!
//! The agent binary calls [`shim_main`] from a hidden subcommand; the
//! process runtime runs `<program> <args…> start <container dir>`. The shim
//! forks once: the first process waits for the daemon's report (started,
//! with pid and start time; or why not) and prints it as JSON on stdout;
//! the daemon (its own session, a child subreaper) stays with the container.
//!
//! Files in the container directory: `shim-config.json` (written by the
//! agent), `shim.json` (pids, written by the shim once started),
//! `exit.json` (how the container ended, written by the shim before it
//! exits), `shim.sock` (control socket), `shim.log` (the shim's own
//! diagnostics).
//!
//! The control socket takes one JSON line per connection (`attach`, `kill`,
//! `wait`, `reopen_log`) and answers one JSON line; an `attach` connection
//! then carries frames: one kind byte, a big-endian u32 length, payload.

use crate::cgroup::CgroupHandle;
use crate::cri_log::{LineSplitter, LogStream, LogWriter};
use crate::error::StartFailure;
use crate::fdio::{self, FdIo};
use crate::sys::{self, ChildPlan, Creds, MountSetup};
use crate::types::{reason, ExitInfo, LogRotation, Mount, TerminalSize};
use bytes::Bytes;
use jiff::Timestamp;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, watch};

pub(crate) const CONFIG_FILE: &str = "shim-config.json";
pub(crate) const STATE_FILE: &str = "shim.json";
pub(crate) const EXIT_FILE: &str = "exit.json";
pub(crate) const SOCKET_FILE: &str = "shim.sock";
const LOG_FILE: &str = "shim.log";

pub(crate) const FRAME_STDIN: u8 = 0;
pub(crate) const FRAME_STDOUT: u8 = 1;
pub(crate) const FRAME_STDERR: u8 = 2;
pub(crate) const FRAME_STDIN_CLOSE: u8 = 3;
pub(crate) const FRAME_RESIZE: u8 = 4;
pub(crate) const FRAME_EXIT: u8 = 5;
const MAX_FRAME: usize = 1 << 20;

/// What the shim runs, written by the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ShimConfig {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub creds: Option<Creds>,
    pub mounts: Vec<Mount>,
    /// Unshare a mount namespace and bind `mounts` in it.
    pub private_mounts: bool,
    pub stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub log_path: PathBuf,
    pub rotation: LogRotation,
    pub cgroup: Option<CgroupHandle>,
    pub socket: PathBuf,
}

/// The running container, written by the shim. Start times are in clock
/// ticks since boot (`/proc/<pid>/stat`), so a reused pid is told apart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ShimState {
    pub shim_pid: u32,
    pub shim_start_time: u64,
    /// The container's main process; also its session and process group id.
    pub pid: u32,
    pub start_time: u64,
    pub started_at: Timestamp,
}

/// What the first shim process prints.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum StartReport {
    Started(ShimState),
    Failed(StartFailure),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    Attach {
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    Kill {
        signal: i32,
    },
    Wait,
    ReopenLog,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Response {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitInfo>,
}

/// Writes `value` as JSON to `path` atomically (temporary file + rename),
/// readable by the owner only (configs carry env values, Secrets included).
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(value).map_err(io::Error::other)?)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Entry point of the shim process. Call it from the agent binary's hidden
/// `runtime-shim` subcommand with the arguments after it, **before** any
/// thread or async runtime is started (the shim forks). Never returns.
pub fn shim_main<I: IntoIterator<Item = OsString>>(args: I) -> ! {
    let args: Vec<OsString> = args.into_iter().collect();
    let code = match args.as_slice() {
        [cmd, dir] if cmd == "start" => start(Path::new(dir)),
        _ => {
            eprintln!("usage: <shim> start <container-dir>");
            2
        }
    };
    std::process::exit(code)
}

fn report_failure(message: String) -> i32 {
    let r = StartReport::Failed(StartFailure::Shim { message });
    println!("{}", serde_json::to_string(&r).unwrap_or_default());
    1
}

fn threads() -> usize {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Threads:")
                    .and_then(|n| n.trim().parse().ok())
            })
        })
        .unwrap_or(1)
}

fn start(dir: &Path) -> i32 {
    if threads() > 1 {
        return report_failure("shim_main must be called before any thread is started".into());
    }
    let cfg: ShimConfig = match read_json(&dir.join(CONFIG_FILE)) {
        Ok(Some(c)) => c,
        Ok(None) => return report_failure(format!("{} missing", dir.join(CONFIG_FILE).display())),
        Err(e) => return report_failure(format!("read config: {e}")),
    };
    let (report_r, report_w) = match sys::pipe() {
        Ok(p) => p,
        Err(e) => return report_failure(format!("pipe: {e}")),
    };
    // SAFETY: the process is single-threaded (checked above), so the child
    // may run arbitrary code after fork.
    match unsafe { nix::unistd::fork() } {
        Err(e) => report_failure(format!("fork: {e}")),
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(report_w);
            let mut report = String::new();
            let _ = fs::File::from(report_r).read_to_string(&mut report);
            if report.trim().is_empty() {
                return report_failure(format!(
                    "the shim daemon exited without reporting (see {})",
                    dir.join(LOG_FILE).display()
                ));
            }
            println!("{}", report.trim());
            0
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(report_r);
            std::process::exit(daemon_main(dir, cfg, report_w))
        }
    }
}

fn daemon_main(dir: &Path, cfg: ShimConfig, report: OwnedFd) -> i32 {
    let _ = nix::unistd::setsid();
    // Do not pin the agent's working directory.
    let _ = std::env::set_current_dir("/");
    let _ = nix::sys::prctl::set_child_subreaper(true);
    if let Ok(null) = fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(null.as_fd());
    }
    if let Ok(log) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOG_FILE))
    {
        let _ = nix::unistd::dup2_stdout(log.as_fd());
        let _ = nix::unistd::dup2_stderr(log.as_fd());
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = send_report(
                report,
                &StartReport::Failed(StartFailure::Shim {
                    message: format!("tokio runtime: {e}"),
                }),
            );
            return 1;
        }
    };
    rt.block_on(daemon(dir.to_owned(), cfg, report))
}

fn send_report(fd: OwnedFd, report: &StartReport) -> io::Result<()> {
    let mut f = fs::File::from(fd);
    f.write_all(
        serde_json::to_string(report)
            .map_err(io::Error::other)?
            .as_bytes(),
    )
}

fn log_msg(msg: impl std::fmt::Display) {
    eprintln!("{} {msg}", Timestamp::now());
}

/// Shim state shared by its tasks.
struct Shared {
    cfg: ShimConfig,
    pid: Pid,
    log: parking_lot::Mutex<LogWriter>,
    output: broadcast::Sender<(u8, Bytes)>,
    stdin: tokio::sync::Mutex<Option<FdIo>>,
    tty: Option<FdIo>,
    exit: watch::Sender<Option<ExitInfo>>,
}

struct Spawned {
    pid: Pid,
    stdin: Option<FdIo>,
    outputs: Vec<(LogStream, FdIo)>,
    tty: Option<FdIo>,
}

async fn daemon(dir: PathBuf, cfg: ShimConfig, report: OwnedFd) -> i32 {
    let started = async {
        let sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
            .map_err(|e| shim_failure(format!("SIGCHLD handler: {e}")))?;
        let _ = fs::remove_file(&cfg.socket);
        let listener = UnixListener::bind(&cfg.socket)
            .map_err(|e| shim_failure(format!("bind {}: {e}", cfg.socket.display())))?;
        let log = LogWriter::open(&cfg.log_path, cfg.rotation)
            .map_err(|e| shim_failure(format!("open log {}: {e}", cfg.log_path.display())))?;
        let spawned = spawn_container(&cfg)?;
        Ok::<_, StartFailure>((sigchld, listener, log, spawned))
    }
    .await;
    let (sigchld, listener, log, spawned) = match started {
        Ok(s) => s,
        Err(failure) => {
            log_msg(format_args!("start failed: {failure}"));
            let exit = ExitInfo {
                exit_code: 128,
                signal: None,
                finished_at: Timestamp::now(),
                reason: reason::START_ERROR.into(),
                message: Some(failure.to_string()),
            };
            let _ = write_json(&dir.join(EXIT_FILE), &exit);
            let _ = fs::remove_file(&cfg.socket);
            let _ = send_report(report, &StartReport::Failed(failure));
            return 1;
        }
    };
    let state = ShimState {
        shim_pid: std::process::id(),
        shim_start_time: sys::process_start_time(std::process::id()).unwrap_or(0),
        pid: spawned.pid.as_raw() as u32,
        start_time: sys::process_start_time(spawned.pid.as_raw() as u32).unwrap_or(0),
        started_at: Timestamp::now(),
    };
    if let Err(e) = write_json(&dir.join(STATE_FILE), &state) {
        log_msg(format_args!("write {STATE_FILE}: {e}"));
    }
    let _ = send_report(report, &StartReport::Started(state));

    let (output, _) = broadcast::channel(256);
    let (exit_tx, _) = watch::channel(None);
    let shared = Arc::new(Shared {
        cfg,
        pid: spawned.pid,
        log: parking_lot::Mutex::new(log),
        output,
        stdin: tokio::sync::Mutex::new(spawned.stdin),
        tty: spawned.tty,
        exit: exit_tx,
    });

    let mut pumps = tokio::task::JoinSet::new();
    for (stream, io) in spawned.outputs {
        pumps.spawn(pump(shared.clone(), io, stream));
    }
    let conns = tokio_util::task::TaskTracker::new();
    let accept = {
        let shared = shared.clone();
        let conns = conns.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        conns.spawn(handle_conn(shared.clone(), stream));
                    }
                    Err(e) => {
                        log_msg(format_args!("accept: {e}"));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };

    let (main_tx, mut main_rx) = watch::channel(None);
    tokio::spawn(reaper(sigchld, shared.pid, main_tx));
    let status = loop {
        if let Some(s) = *main_rx.borrow_and_update() {
            break s;
        }
        if main_rx.changed().await.is_err() {
            break (255, None);
        }
    };
    let (code, signal) = status;

    // The container is over when its main process is: kill what is left of
    // it (the process group, then the cgroup), as a pid namespace would.
    let _ = nix::sys::signal::killpg(shared.pid, Signal::SIGKILL);
    if let Some(cg) = &shared.cfg.cgroup {
        cg.kill_all();
    }
    // Drain the output; give up on writers that escaped both.
    let drain = async { while pumps.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(2), drain)
        .await
        .is_err()
    {
        log_msg("output still open 2s after the container exited; closing it");
        pumps.abort_all();
    }
    let oom = shared
        .cfg
        .cgroup
        .as_ref()
        .is_some_and(|cg| cg.was_oom_killed(signal));
    let exit = ExitInfo::from_code(code, signal, oom);
    if let Err(e) = write_json(&dir.join(EXIT_FILE), &exit) {
        log_msg(format_args!("write {EXIT_FILE}: {e}"));
    }
    accept.abort();
    let _ = fs::remove_file(&shared.cfg.socket);
    shared.exit.send_replace(Some(exit));
    conns.close();
    let _ = tokio::time::timeout(Duration::from_secs(1), conns.wait()).await;
    0
}

fn shim_failure(message: String) -> StartFailure {
    StartFailure::Shim { message }
}

/// Reaps every child (the shim is a subreaper); reports the main process'
/// exit code and signal.
async fn reaper(
    mut sigchld: tokio::signal::unix::Signal,
    main: Pid,
    tx: watch::Sender<Option<(i32, Option<i32>)>>,
) {
    loop {
        loop {
            match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    if status.pid() == Some(main) {
                        if let Some(code) = sys::exit_code(status) {
                            tx.send_replace(Some(code));
                        }
                    }
                }
            }
        }
        if sigchld.recv().await.is_none() {
            return;
        }
    }
}

fn spawn_container(cfg: &ShimConfig) -> Result<Spawned, StartFailure> {
    let setup = |step: &str, e: io::Error| StartFailure::Setup {
        step: step.to_owned(),
        message: sys::errno_message(&e),
    };
    let program = cfg
        .argv
        .first()
        .ok_or_else(|| shim_failure("empty argv".into()))?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(&cfg.argv[1..])
        .env_clear()
        .envs(cfg.env.iter().map(|(k, v)| (k, v)));

    let mut plan = ChildPlan::new(&cfg.cwd).map_err(|e| setup("cwd", e))?;
    plan.creds = cfg.creds.clone();
    let mut stdin_keep = None;
    let mut outputs = Vec::new();
    let mut tty = None;
    if cfg.tty {
        let ws = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&ws), None).map_err(|e| setup("openpty", e.into()))?;
        sys::set_cloexec(&pty.master).map_err(|e| setup("openpty", e))?;
        sys::set_cloexec(&pty.slave).map_err(|e| setup("openpty", e))?;
        let clone = |fd: &OwnedFd| fd.try_clone().map_err(|e| setup("dup pty", e));
        cmd.stdin(clone(&pty.slave)?)
            .stdout(clone(&pty.slave)?)
            .stderr(pty.slave);
        let master = FdIo::new(pty.master, true).map_err(|e| setup("pty master", e))?;
        if cfg.stdin {
            stdin_keep = Some(master.clone());
        }
        outputs.push((LogStream::Stdout, master.clone()));
        tty = Some(master);
        plan.controlling_tty = true;
    } else {
        if cfg.stdin {
            let (r, w) = sys::pipe().map_err(|e| setup("stdin pipe", e))?;
            cmd.stdin(r);
            stdin_keep = Some(FdIo::new(w, false).map_err(|e| setup("stdin pipe", e))?);
        } else {
            cmd.stdin(std::process::Stdio::null());
        }
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let (r, w) = sys::pipe().map_err(|e| setup("output pipe", e))?;
            match stream {
                LogStream::Stdout => cmd.stdout(w),
                LogStream::Stderr => cmd.stderr(w),
            };
            outputs.push((
                stream,
                FdIo::new(r, false).map_err(|e| setup("output pipe", e))?,
            ));
        }
    }
    let cgroup_files = cfg
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
    if cfg.private_mounts {
        plan.mounts = MountSetup::Private(sys::prepare_mounts(&cfg.mounts).map_err(|e| {
            StartFailure::Setup {
                step: "prepare volume mounts".into(),
                message: e.to_string(),
            }
        })?);
    }
    plan.describe(&cfg.cwd, &cgroup_files);
    let (diag_r, diag_w) = sys::pipe().map_err(|e| setup("pipe", e))?;
    fdio::set_nonblocking(&diag_r).map_err(|e| setup("pipe", e))?;
    plan.diag = Some(diag_w);
    let plan = Arc::new(plan);
    let child_plan = plan.clone();
    // SAFETY: `apply` only makes async-signal-safe system calls on data
    // prepared before the fork (see `ChildPlan`).
    unsafe {
        cmd.pre_exec(move || child_plan.apply());
    }
    let spawned = cmd.spawn();
    // Close our copies of the child's ends so EOF means the child is done.
    drop(cmd);
    match spawned {
        Ok(child) => Ok(Spawned {
            pid: Pid::from_raw(child.id() as i32),
            stdin: stdin_keep,
            outputs,
            tty,
        }),
        Err(e) => Err(plan.start_failure(program, &e, Some(&diag_r))),
    }
}

/// Copies one output stream to the log and to attached clients.
async fn pump(shared: Arc<Shared>, mut io: FdIo, stream: LogStream) {
    let kind = match stream {
        LogStream::Stdout => FRAME_STDOUT,
        LogStream::Stderr => FRAME_STDERR,
    };
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; 32 * 1024];
    let write = |log: &mut LogWriter, ts, line: &[u8], partial| {
        if let Err(e) = log.write_entry(ts, stream, partial, line) {
            log_msg(format_args!("write log {}: {e}", log.path().display()));
        }
    };
    loop {
        let n = match io.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log_msg(format_args!("read {}: {e}", stream.as_str()));
                break;
            }
        };
        let data = &buf[..n];
        let _ = shared.output.send((kind, Bytes::copy_from_slice(data)));
        let ts = Timestamp::now();
        let mut log = shared.log.lock();
        splitter.push(data, |line, partial| write(&mut log, ts, line, partial));
    }
    let mut log = shared.log.lock();
    splitter.finish(|line, partial| write(&mut log, Timestamp::now(), line, partial));
}

async fn reply(w: &mut (impl AsyncWrite + Unpin), resp: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(resp).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await
}

async fn handle_conn(shared: Arc<Shared>, stream: UnixStream) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    match (&mut r).take(64 * 1024).read_line(&mut line).await {
        Ok(n) if n > 0 => {}
        _ => return,
    }
    let req: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            let _ = reply(
                &mut w,
                &Response {
                    error: Some(format!("bad request: {e}")),
                    ..Default::default()
                },
            )
            .await;
            return;
        }
    };
    let result = match req {
        Request::Kill { signal } => {
            let error = match Signal::try_from(signal) {
                Err(e) => Some(format!("signal {signal}: {e}")),
                Ok(sig) => {
                    if shared.exit.borrow().is_none() {
                        let _ = nix::sys::signal::killpg(shared.pid, sig);
                        if sig == Signal::SIGKILL {
                            if let Some(cg) = &shared.cfg.cgroup {
                                cg.kill_all();
                            }
                        }
                    }
                    None
                }
            };
            reply(&mut w, &Response { error, exit: None }).await
        }
        Request::Wait => {
            let mut rx = shared.exit.subscribe();
            let exit = loop {
                let seen = rx.borrow_and_update().clone();
                if let Some(e) = seen {
                    break Some(e);
                }
                if rx.changed().await.is_err() {
                    break None;
                }
            };
            reply(&mut w, &Response { error: None, exit }).await
        }
        Request::ReopenLog => {
            let error = shared.log.lock().reopen().err().map(|e| e.to_string());
            reply(&mut w, &Response { error, exit: None }).await
        }
        Request::Attach {
            stdin,
            stdout,
            stderr,
        } => attach(shared, r, w, stdin, stdout, stderr).await,
    };
    if let Err(e) = result {
        if e.kind() != io::ErrorKind::BrokenPipe {
            log_msg(format_args!("control connection: {e}"));
        }
    }
}

pub(crate) async fn write_frame(
    w: &mut (impl AsyncWrite + Unpin),
    kind: u8,
    payload: &[u8],
) -> io::Result<()> {
    let mut head = [0u8; 5];
    head[0] = kind;
    head[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    w.write_all(&head).await?;
    w.write_all(payload).await
}

/// Reads one frame; `None` at a clean EOF.
pub(crate) async fn read_frame(
    r: &mut (impl AsyncRead + Unpin),
) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some((head[0], payload)))
}

pub(crate) fn resize_payload(size: TerminalSize) -> [u8; 4] {
    let mut p = [0u8; 4];
    p[..2].copy_from_slice(&size.width.to_be_bytes());
    p[2..].copy_from_slice(&size.height.to_be_bytes());
    p
}

async fn attach(
    shared: Arc<Shared>,
    mut r: BufReader<tokio::net::unix::OwnedReadHalf>,
    mut w: tokio::net::unix::OwnedWriteHalf,
    want_stdin: bool,
    want_stdout: bool,
    want_stderr: bool,
) -> io::Result<()> {
    if want_stdin && !shared.cfg.stdin {
        let error = Some("the container was not created with stdin: true".to_owned());
        return reply(&mut w, &Response { error, exit: None }).await;
    }
    let mut output = shared.output.subscribe();
    let mut exit = shared.exit.subscribe();
    reply(&mut w, &Response::default()).await?;
    let already = exit.borrow_and_update().as_ref().map(|e| e.exit_code);
    if let Some(code) = already {
        write_frame(&mut w, FRAME_EXIT, &code.to_be_bytes()).await?;
        return w.shutdown().await;
    }

    let input = async {
        let mut stdin_open = want_stdin;
        loop {
            let frame = match read_frame(&mut r).await {
                Ok(Some(f)) => f,
                Ok(None) | Err(_) => break,
            };
            match frame {
                (FRAME_STDIN, data) if stdin_open => {
                    let mut guard = shared.stdin.lock().await;
                    if let Some(stdin) = guard.as_mut() {
                        if stdin.write_all(&data).await.is_err() {
                            *guard = None;
                        }
                    }
                }
                (FRAME_STDIN_CLOSE, _) if stdin_open => {
                    stdin_open = false;
                    if shared.cfg.stdin_once {
                        *shared.stdin.lock().await = None;
                    }
                }
                (FRAME_RESIZE, p) if p.len() == 4 => {
                    if let Some(tty) = &shared.tty {
                        let width = u16::from_be_bytes([p[0], p[1]]);
                        let height = u16::from_be_bytes([p[2], p[3]]);
                        let _ = fdio::set_winsize(tty.raw(), width, height);
                    }
                }
                _ => {}
            }
        }
        if stdin_open && shared.cfg.stdin_once {
            *shared.stdin.lock().await = None;
        }
    };
    let out = async {
        loop {
            tokio::select! {
                msg = output.recv() => match msg {
                    Ok((kind, data)) => {
                        if (kind == FRAME_STDOUT && want_stdout) || (kind == FRAME_STDERR && want_stderr) {
                            write_frame(&mut w, kind, &data).await?;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        log_msg(format_args!("attach client lagged; {n} output chunks dropped"));
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = exit.changed() => {
                    // Forward what is still queued, then the exit code.
                    while let Ok((kind, data)) = output.try_recv() {
                        if (kind == FRAME_STDOUT && want_stdout) || (kind == FRAME_STDERR && want_stderr) {
                            write_frame(&mut w, kind, &data).await?;
                        }
                    }
                    let code = exit.borrow().as_ref().map_or(255, |e| e.exit_code);
                    write_frame(&mut w, FRAME_EXIT, &code.to_be_bytes()).await?;
                    break;
                }
            }
        }
        w.shutdown().await
    };
    // Either side ending ends the session.
    tokio::select! {
        _ = input => Ok(()),
        r = out => r,
    }
}
