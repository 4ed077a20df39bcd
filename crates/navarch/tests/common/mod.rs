//! Shared end-to-end harness: the real `navarch` binary on a free port with a
//! temp data dir, and the real clients pointed at it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct TestServer {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub kubeconfig: PathBuf,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestServer {
    pub fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, free_port())
    }

    /// Starts (or restarts) a server on an existing data dir.
    pub fn start_in(dir: tempfile::TempDir, port: u16) -> TestServer {
        Self::spawn(dir, port, &["--disable-agent"])
    }

    /// A server with its built-in agent for node `node` (process runtime,
    /// agent port chosen freely).
    pub fn start_with_agent(node: &str) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::spawn(
            dir,
            free_port(),
            &[
                "--node-name",
                node,
                "--agent-port",
                "0",
                "--node-ip",
                "127.0.0.1",
            ],
        )
    }

    pub fn spawn(dir: tempfile::TempDir, port: u16, extra: &[&str]) -> TestServer {
        let child = Command::new(env!("CARGO_BIN_EXE_navarch"))
            .arg("server")
            .args(extra)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env(
                "NAVARCH_LOG",
                std::env::var("NAVARCH_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning navarch server");
        let kubeconfig = dir.path().join("kubeconfig.yaml");
        let s = TestServer {
            child,
            dir,
            port,
            kubeconfig,
        };
        s.wait_ready();
        s
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new("curl")
                .args([
                    "-sk",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    &format!("https://127.0.0.1:{}/readyz", self.port),
                ])
                .output()
                .map(|o| o.stdout == b"200")
                .unwrap_or(false);
            if ok && self.kubeconfig.exists() {
                return;
            }
            assert!(Instant::now() < deadline, "server did not become ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tls/admin-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Runs the pinned kubectl (1.32 unless NAVARCH_KUBECTL says otherwise).
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(&kubectl_path(), args, None)
    }

    pub fn kubectl_with(&self, bin: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kcache"))
            .args(args);
        cmd.env_remove("KUBECONFIG");
        if let Some(input) = stdin {
            use std::io::Write;
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("running kubectl");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            return child.wait_with_output().unwrap();
        }
        cmd.output().expect("running kubectl")
    }

    /// Runs kubectl and asserts success; returns stdout.
    pub fn must_kubectl(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        assert!(
            o.status.success(),
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    pub fn must_kubectl_stdin(&self, args: &[&str], stdin: &str) -> String {
        let o = self.kubectl_with(&kubectl_path(), args, Some(stdin));
        assert!(
            o.status.success(),
            "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// SIGKILL, like a crash.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Crashes the server (SIGKILL) and hands back its data dir and port for a restart.
    pub fn crash(mut self) -> (tempfile::TempDir, u16) {
        self.kill9();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        (dir, self.port)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The kubectl binary the tests drive: `NAVARCH_KUBECTL`, else the pinned
/// 1.32 beside the dispatcher, else `kubectl` on PATH.
pub fn kubectl_path() -> PathBuf {
    if let Ok(p) = std::env::var("NAVARCH_KUBECTL") {
        return PathBuf::from(p);
    }
    if let Some(p) = pinned_kubectl("1.32") {
        return p;
    }
    PathBuf::from("kubectl")
}

/// `kubectl.<version>` beside the dispatcher on PATH, if present.
pub fn pinned_kubectl(version: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", "command -v kubectl"])
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    let real = std::fs::canonicalize(path).ok()?;
    let p = real.parent()?.join(format!("kubectl.{version}"));
    p.exists().then_some(p)
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A standalone `navarch agent` process (process runtime, loopback node
/// IP, free agent port); on drop it is killed with its containers.
pub struct AgentProc {
    pub child: Child,
    pub dir: PathBuf,
    pub node: String,
}

impl AgentProc {
    pub fn start(server: &TestServer, node: &str, dir: &Path) -> AgentProc {
        Self::start_with(server, node, dir, &[])
    }

    pub fn start_with(server: &TestServer, node: &str, dir: &Path, extra: &[&str]) -> AgentProc {
        let token = std::fs::read_to_string(server.dir.path().join("node-token")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_navarch"))
            .args([
                "agent",
                "--server",
                &server.url(),
                "--token",
                token.trim(),
                "--node-name",
                node,
            ])
            .args(["--agent-port", "0", "--node-ip", "127.0.0.1"])
            .args(extra)
            .arg("--data-dir")
            .arg(dir)
            .env(
                "NAVARCH_LOG",
                std::env::var("NAVARCH_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        AgentProc {
            child,
            dir: dir.to_path_buf(),
            node: node.to_string(),
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_node_processes(&self.node);
        kill_shims(&self.dir);
    }
}

/// Kills every process left in the cgroups of node `node` (containers keep
/// running when an agent stops, by design; tests must not leak them).
pub fn kill_node_processes(node: &str) {
    let parent = format!("navarch-{node}");
    let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut dirs: Vec<PathBuf> = vec![PathBuf::from("/sys/fs/cgroup").join(&parent)];
    for r in roots.flatten() {
        dirs.push(r.path().join(&parent));
    }
    for _ in 0..3 {
        for d in &dirs {
            kill_cgroup_tree(d);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill_cgroup_tree(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    for e in entries.flatten() {
        if e.path().is_dir() {
            kill_cgroup_tree(&e.path());
        }
    }
    // Empty now (or soon): remove it so test runs leave no cgroups behind.
    let _ = std::fs::remove_dir(dir);
}

/// Kills the shims of containers whose state lives under `dir`.
pub fn kill_shims(dir: &Path) {
    let _ = Command::new("pkill")
        .args(["-9", "-f", &format!("runtime-shim.*{}", dir.display())])
        .status();
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

/// Polls `f` every 100 ms until it returns `Some`, for up to `secs` seconds.
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
