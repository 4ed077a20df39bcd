//! Real-process tests of the process runtime. They need root (setuid,
//! cgroups, mount namespaces); without it each test prints why it is
//! skipped and passes.

use navarch_runtime::cgroup::{CgroupConfig, CgroupMode, Cgroups};
use navarch_runtime::cri_log::{self, LogOptions, LogReader, LogStream};
use navarch_runtime::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn needs_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    eprintln!("skipping {test}: needs root (setuid, cgroups and mount namespaces)");
    true
}

struct Env {
    dir: tempfile::TempDir,
    config: ProcessRuntimeConfig,
    rt: Option<ProcessRuntime>,
}

impl Env {
    async fn new() -> Env {
        Self::with(|_| {}).await
    }

    async fn with(tweak: impl FnOnce(&mut ProcessRuntimeConfig)) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let shim = ShimCommand {
            program: env!("CARGO_BIN_EXE_navarch-runtime-shim").into(),
            args: vec![],
        };
        let mut config = ProcessRuntimeConfig::new(dir.path().join("state"), shim);
        config.cgroups = CgroupConfig {
            mode: CgroupMode::Auto,
            parent: format!(
                "navarch-test-{}",
                SandboxId::generate().0.get(..12).unwrap()
            ),
        };
        tweak(&mut config);
        let rt = ProcessRuntime::open(config.clone()).await.unwrap();
        Env {
            dir,
            config,
            rt: Some(rt),
        }
    }

    fn rt(&self) -> &ProcessRuntime {
        self.rt.as_ref().unwrap()
    }

    fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    async fn pod(&self, name: &str) -> SandboxId {
        self.pod_with(name, Resources::default()).await
    }

    async fn pod_with(&self, name: &str, resources: Resources) -> SandboxId {
        self.rt()
            .run_pod_sandbox(PodSandboxConfig {
                name: name.into(),
                namespace: "default".into(),
                uid: format!("uid-{name}"),
                log_directory: self.logs().join(name),
                resources,
                ..Default::default()
            })
            .await
            .unwrap()
    }

    async fn run(&self, sb: &SandboxId, c: ContainerConfig) -> ContainerId {
        let id = self.rt().create_container(sb, c).await.unwrap();
        self.rt().start_container(&id).await.unwrap();
        id
    }

    async fn status(&self, id: &ContainerId) -> ContainerStatus {
        self.rt().container_status(id).await.unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Kill what a failed test left behind and remove the test's cgroups.
        let cgroups = Cgroups::detect(&self.config.cgroups);
        if let Some(h) = cgroups.handle("") {
            for d in &h.dirs {
                rmdir_tree(d);
            }
        }
    }
}

fn rmdir_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&e.path());
            }
        }
    }
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sh(name: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        name: name.into(),
        image: "busybox".into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}/0.log").into(),
        ..Default::default()
    }
}

async fn eventually(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn log_text(path: &Path) -> String {
    let mut r = LogReader::new(path, LogOptions::default(), Box::pin(async {}));
    let mut s = String::new();
    while let Some(c) = r.next_chunk().await.unwrap() {
        s.push_str(&String::from_utf8_lossy(&c));
    }
    s
}

async fn wait_log(path: &Path, needle: &str) -> String {
    let mut text = String::new();
    eventually(
        &format!("{needle:?} in {}", path.display()),
        Duration::from_secs(5),
        async || {
            text = log_text(path).await;
            text.contains(needle)
        },
    )
    .await;
    text
}

#[tokio::test]
async fn logs_graceful_stop_and_exit_codes() {
    if needs_root("logs_graceful_stop_and_exit_codes") {
        return;
    }
    let env = Env::new().await;
    let sb = env.pod("p").await;
    let mut events = env.rt().events();
    let id = env
        .run(
            &sb,
            sh(
                "app",
                "trap 'exit 7' TERM; echo hi; echo err >&2; while true; do sleep 0.05; done",
            ),
        )
        .await;
    let st = env.status(&id).await;
    assert_eq!(st.state, ContainerState::Running);
    assert!(st.pid.is_some() && st.started_at.is_some());
    assert_eq!(st.image_ref, "process://busybox");
    wait_log(&st.log_path, "err").await;

    // The raw file is in the CRI format.
    let raw = std::fs::read_to_string(&st.log_path).unwrap();
    let entries: Vec<_> = raw
        .lines()
        .map(|l| cri_log::parse_entry(l.as_bytes()).expect("CRI log line"))
        .collect();
    assert!(entries
        .iter()
        .any(|e| e.stream == LogStream::Stdout && e.content == b"hi" && !e.partial));
    assert!(entries
        .iter()
        .any(|e| e.stream == LogStream::Stderr && e.content == b"err"));
    assert!(entries[0].timestamp.parse::<jiff::Timestamp>().is_ok());

    let t0 = Instant::now();
    env.rt()
        .stop_container(&id, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    let st = env.status(&id).await;
    assert_eq!(st.state, ContainerState::Exited);
    assert_eq!(st.exit_code, Some(7));
    assert_eq!(st.reason.as_deref(), Some("Error"));
    assert!(st.finished_at.is_some() && st.pid.is_none());

    let mut kinds = Vec::new();
    while kinds.len() < 3 {
        let e = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("container events")
            .unwrap();
        if e.container_id == id {
            kinds.push(e.kind);
        }
    }
    assert_eq!(
        kinds,
        vec![
            ContainerEventKind::Created,
            ContainerEventKind::Started,
            ContainerEventKind::Stopped
        ]
    );

    // Plain exit codes.
    for (script, code, reason) in [("exit 3", 3, "Error"), ("true", 0, "Completed")] {
        let id = env.run(&sb, sh("exit", script)).await;
        let st = env.rt().wait_container(&id).await.unwrap();
        assert_eq!(
            (st.exit_code, st.reason.as_deref()),
            (Some(code), Some(reason)),
            "{script}"
        );
        env.rt().remove_container(&id).await.unwrap();
    }
    env.rt().remove_pod_sandbox(&sb).await.unwrap();
    assert!(env
        .rt()
        .list_containers(Default::default())
        .await
        .unwrap()
        .is_empty());
    // Idempotent.
    env.rt().remove_pod_sandbox(&sb).await.unwrap();
}

#[tokio::test]
async fn sigkill_after_the_grace_period() {
    if needs_root("sigkill_after_the_grace_period") {
        return;
    }
    let env = Env::new().await;
    let sb = env.pod("p").await;
    let id = env
        .run(
            &sb,
            sh(
                "stubborn",
                "trap '' TERM; echo ready; while true; do sleep 0.05; done",
            ),
        )
        .await;
    wait_log(&env.status(&id).await.log_path, "ready").await;
    let t0 = Instant::now();
    env.rt()
        .stop_container(&id, Duration::from_millis(700))
        .await
        .unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(700));
    let st = env.status(&id).await;
    assert_eq!(st.exit_code, Some(137));
    // Stopping a stopped container is fine.
    env.rt()
        .stop_container(&id, Duration::from_secs(1))
        .await
        .unwrap();
}

#[tokio::test]
async fn run_as_user_and_groups() {
    if needs_root("run_as_user_and_groups") {
        return;
    }
    let env = Env::new().await;
    let sb = env.pod("p").await;
    let mut c = sh(
        "nobody",
        "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); sleep 30",
    );
    c.user = UserSpec {
        run_as_user: Some(65534),
        run_as_group: Some(65534),
        supplemental_groups: vec![1234],
    };
    let id = env.run(&sb, c).await;
    let text = wait_log(&env.status(&id).await.log_path, "uid=").await;
    assert!(text.contains("uid=65534 gid=65534"), "{text}");
    assert!(text.contains("1234"), "{text}");
    // Exec runs as the same user.
    let r = env
        .rt()
        .exec_sync(&id, vec!["id".into(), "-u".into()], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "65534");
    env.rt().remove_pod_sandbox(&sb).await.unwrap();
}

#[tokio::test]
async fn bad_commands_are_clear_errors() {
    if needs_root("bad_commands_are_clear_errors") {
        return;
    }
    let env = Env::new().await;
    let sb = env.pod("p").await;
    let mut c = sh("nocmd", "");
    c.command.clear();
    c.args = vec!["x".into()];
    let err = env.rt().create_container(&sb, c).await.unwrap_err();
    assert!(matches!(err, Error::NoCommand { .. }), "{err}");
    assert_eq!(err.kube_reason(), "CreateContainerError");
    assert!(err.to_string().contains("no command specified"), "{err}");

    let mut c = sh("missing", "");
    c.command = vec!["no-such-binary-navarch".into()];
    let id = env.rt().create_container(&sb, c).await.unwrap();
    let err = env.rt().start_container(&id).await.unwrap_err();
    assert_eq!(err.kube_reason(), "RunContainerError");
    let want = r#"exec: "no-such-binary-navarch": executable file not found in $PATH"#;
    assert!(err.to_string().contains(want), "{err}");
    let st = env.status(&id).await;
    assert_eq!(st.state, ContainerState::Exited);
    assert_eq!(
        (st.exit_code, st.reason.as_deref()),
        (Some(128), Some("StartError"))
    );
    assert_eq!(st.message.as_deref(), Some(want));
    // A second start is refused, not a panic.
    assert!(matches!(
        env.rt().start_container(&id).await.unwrap_err(),
        Error::InvalidState { .. }
    ));

    let mut c = sh("badcwd", "true");
    c.working_dir = Some("/no/such/dir".into());
    let id = env.rt().create_container(&sb, c).await.unwrap();
    let err = env.rt().start_container(&id).await.unwrap_err();
    assert!(err.to_string().contains("chdir to cwd"), "{err}");
    assert!(
        err.to_string().contains("no such file or directory"),
        "{err}"
    );
    env.rt().remove_pod_sandbox(&sb).await.unwrap();
}

fn cgroups_usable(env: &Env, test: &str) -> bool {
    match env.rt().cgroup_info() {
        CgroupInfo::Enabled { .. } => true,
        CgroupInfo::Disabled { reason } => {
            eprintln!("skipping {test}: cgroups unavailable ({reason})");
            false
        }
    }
}

#[tokio::test]
async fn memory_limit_oom_kill_is_reported() {
    if needs_root("memory_limit_oom_kill_is_reported") {
        return;
    }
    let env = Env::new().await;
    if !cgroups_usable(&env, "memory_limit_oom_kill_is_reported") {
        return;
    }
    let limits = Resources {
        memory_limit_bytes: Some(32 << 20),
        ..Default::default()
    };
    let sb = env.pod_with("p", limits).await;
    let mut c = sh("hog", "head -c 200m /dev/zero | tail");
    c.resources = limits;
    let id = env.run(&sb, c).await;
    let st = tokio::time::timeout(Duration::from_secs(20), env.rt().wait_container(&id))
        .await
        .expect("the hog should be killed")
        .unwrap();
    assert_eq!(st.reason.as_deref(), Some("OOMKilled"), "{st:?}");
    assert_eq!(st.exit_code, Some(137));
    env.rt().remove_pod_sandbox(&sb).await.unwrap();
}

#[tokio::test]
async fn cpu_and_memory_limits_are_written() {
    if needs_root("cpu_and_memory_limits_are_written") {
        return;
    }
    let env = Env::new().await;
    if !cgroups_usable(&env, "cpu_and_memory_limits_are_written") {
        return;
    }
    let pod_limits = Resources {
        cpu_limit_millis: Some(1000),
        cpu_request_millis: None,
        memory_limit_bytes: Some(128 << 20),
    };
    let sb = env.pod_with("p", pod_limits).await;
    let mut c = sh("app", "sleep 30");
    c.resources = Resources {
        cpu_limit_millis: Some(500),
        cpu_request_millis: Some(250),
        memory_limit_bytes: Some(64 << 20),
    };
    let id = env.run(&sb, c).await;
    let st = env.status(&id).await;
    let CgroupInfo::Enabled { version, path } = &st.cgroup else {
        panic!("{:?}", st.cgroup)
    };
    let cgroups = Cgroups::detect(&env.config.cgroups);
    let h = cgroups.handle(&format!("pod-{sb}/{id}")).unwrap();
    let read = |dir: &Path, f: &str| {
        std::fs::read_to_string(dir.join(f))
            .unwrap()
            .trim()
            .to_owned()
    };
    match version {
        CgroupVersion::V1 => {
            assert_eq!(read(&h.dirs[1], "cpu.cfs_quota_us"), "50000");
            assert_eq!(read(&h.dirs[1], "cpu.cfs_period_us"), "100000");
            assert_eq!(read(&h.dirs[1], "cpu.shares"), "256");
            assert_eq!(
                read(&h.dirs[0], "memory.limit_in_bytes"),
                (64u64 << 20).to_string()
            );
            let pod = h.dirs[1].parent().unwrap();
            assert_eq!(read(pod, "cpu.cfs_quota_us"), "100000");
        }
        CgroupVersion::V2 => {
            assert_eq!(read(&h.dirs[0], "cpu.max"), "50000 100000");
            assert_eq!(read(&h.dirs[0], "memory.max"), (64u64 << 20).to_string());
        }
    }
    // The process is in it.
    let pid = st.pid.unwrap();
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(own.contains(path.as_str()), "{own}\n{path}");
    assert!(h.pids().contains(&(pid as i32)));
    env.rt().remove_pod_sandbox(&sb).await.unwrap();
    assert!(!h.dirs[0].exists());
}

#[tokio::test]
async fn cgroups_disabled_degrade_with_a_reason() {
    if needs_root("cgroups_disabled_degrade_with_a_reason") {
        return;
    }
    let env = Env::with(|c| c.cgroups.mode = CgroupMode::Disabled).await;
    let sb = env.pod("p").await;
    let s = env.rt().pod_sandbox_status(&sb).await.unwrap();
    assert!(matches!(&s.cgroup, CgroupInfo::Disabled { reason } if reason.contains("disabled")));
    assert_eq!(s.network, PodNetwork::Host);
    let mut c = sh("app", "echo ok");
    c.resources.memory_limit_bytes = Some(1 << 20);
    let id = env.run(&sb, c).await;
    let st = env.rt().wait_container(&id).await.unwrap();
    assert_eq!(st.exit_code, Some(0));
    assert!(matches!(st.cgroup, CgroupInfo::Disabled { .. }));
}

#[tokio::test]
async fn volumes_are_private_bind_mounts() {
    if needs_root("volumes_are_private_bind_mounts") {
        return;
    }
    let env = Env::new().await;
    let src_a = env.dir.path().join("vol-a");
    let src_b = env.dir.path().join("vol-b");
    std::fs::create_dir_all(&src_a).unwrap();
    std::fs::create_dir_all(&src_b).unwrap();
    std::fs::write(src_a.join("x"), "from-a").unwrap();
    std::fs::write(src_b.join("x"), "from-b").unwrap();
    // A mount point that does not exist on the host yet.
    let target = PathBuf::from(format!("/tmp/navarch-mnt-{}/config", SandboxId::generate()));
    let mount = |src: &Path, ro: bool| Mount {
        host_path: src.to_owned(),
        container_path: target.clone(),
        read_only: ro,
    };
    let script = format!("echo content=$(cat {}/x); sleep 30", target.display());
    let pa = env.pod("a").await;
    let pb = env.pod("b").await;
    let mut ca = sh("c", &script);
    ca.mounts = vec![mount(&src_a, false)];
    let mut cb = sh("c", &script);
    cb.mounts = vec![mount(&src_b, true)];
    let a = env.run(&pa, ca).await;
    let b = env.run(&pb, cb).await;
    let ta = wait_log(&env.status(&a).await.log_path, "content=").await;
    let tb = wait_log(&env.status(&b).await.log_path, "content=").await;
    assert!(ta.contains("content=from-a"), "{ta}");
    assert!(tb.contains("content=from-b"), "{tb}");
    // The host sees an empty mount point, not the volume.
    assert!(target.is_dir());
    assert!(!target.join("x").exists());

    // Exec joins the container's mount namespace.
    let cat = vec!["cat".to_owned(), target.join("x").display().to_string()];
    let r = env
        .rt()
        .exec_sync(&a, cat.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r.stdout, b"from-a");
    let r = env
        .rt()
        .exec_sync(&b, cat, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r.stdout, b"from-b");
    // Writable in a, read-only in b.
    let touch = |name: &str| vec!["touch".to_owned(), target.join(name).display().to_string()];
    let r = env
        .rt()
        .exec_sync(&a, touch("new"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0);
    assert!(src_a.join("new").exists());
    let r = env
        .rt()
        .exec_sync(&b, touch("new"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_ne!(r.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("Read-only"),
        "{r:?}"
    );

    env.rt().remove_pod_sandbox(&pa).await.unwrap();
    env.rt().remove_pod_sandbox(&pb).await.unwrap();
    let _ = std::fs::remove_dir_all(target.parent().unwrap());
}

#[tokio::test]
async fn exec_with_pipes_and_tty() {
    if needs_root("exec_with_pipes_and_tty") {
        return;
    }
    let env = Env::new().await;
    let sb = env.pod("p").await;
    let mut c = sh("app", "sleep 30");
    c.env = vec![("FOO".into(), "bar".into())];
    c.working_dir = Some("/tmp".into());
    let id = env.run(&sb, c).await;

    let script = |s: &str| vec!["sh".to_owned(), "-c".to_owned(), s.to_owned()];
    let r = env
        .rt()
        .exec_sync(
            &id,
            script("echo $FOO; pwd; echo e >&2; exit 4"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "bar\n/tmp\n");
    assert_eq!(r.stderr, b"e\n");
    assert_eq!(r.exit_code, 4);

    let err = env
        .rt()
        .exec_sync(
            &id,
            vec!["sleep".into(), "10".into()],
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    let err = env
        .rt()
        .exec_sync(&id, vec!["nope-navarch".into()], Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("executable file not found in $PATH"),
        "{err}"
    );

    // Streaming with stdin.
    let mut s = env
        .rt()
        .exec(
            &id,
            vec!["cat".into()],
            StreamOptions {
                stdin: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut stdin = s.stdin.take().unwrap();
    stdin.write_all(b"hello").await.unwrap();
    drop(stdin);
    let mut out = String::new();
    s.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    assert_eq!(out, "hello");
    assert_eq!(s.exit.await.unwrap(), 0);

    // A terminal, resized while running.
    let mut s = env
        .rt()
        .exec(
            &id,
            script("tty; stty size; read x; stty size; exit 5"),
            StreamOptions {
                stdin: true,
                stdout: true,
                tty: true,
                size: Some(TerminalSize {
                    width: 100,
                    height: 30,
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(s.stderr.is_none());
    let mut stdout = s.stdout.take().unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&out).contains("30 100") {
        let n = tokio::time::timeout(Duration::from_secs(5), stdout.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
    s.resize
        .as_ref()
        .unwrap()
        .send(TerminalSize {
            width: 120,
            height: 40,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.stdin.as_mut().unwrap().write_all(b"\n").await.unwrap();
    let code = tokio::time::timeout(Duration::from_secs(5), s.exit)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 5);
    let _ = tokio::time::timeout(Duration::from_secs(2), stdout.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("40 120"), "{text}");

    // Not running → clear error.
    env.rt().stop_container(&id, Duration::ZERO).await.unwrap();
    let err = env
        .rt()
        .exec_sync(&id, vec!["true".into()], Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidState { .. }), "{err}");
    env.rt().remove_pod_sandbox(&sb).await.unwrap();
}

#[tokio::test]
async fn attach_to_stdin_and_output() {
    if needs_root("attach_to_stdin_and_output") {
        return;
    }
    let env = Env::new().await;
    let sb = env.pod("p").await;
    let mut c = sh("cat", "");
    c.command = vec!["cat".into()];
    c.stdin = true;
    c.stdin_once = true;
    let id = env.run(&sb, c).await;
    let mut s = env
        .rt()
        .attach(
            &id,
            StreamOptions {
                stdin: true,
                stdout: true,
                stderr: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut stdin = s.stdin.take().unwrap();
    stdin.write_all(b"ping\n").await.unwrap();
    let mut stdout = s.stdout.take().unwrap();
    let mut buf = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), stdout.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping\n");
    // stdin_once: closing our stdin closes the container's; cat exits 0.
    drop(stdin);
    let code = tokio::time::timeout(Duration::from_secs(5), s.exit)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, 0);
    let st = env.rt().wait_container(&id).await.unwrap();
    assert_eq!(st.exit_code, Some(0));
    assert!(log_text(&st.log_path).await.contains("ping"));
}

#[tokio::test]
async fn port_forward_reaches_node_localhost() {
    if needs_root("port_forward_reaches_node_localhost") {
        return;
    }
    let env = Env::new().await;
    let sb = env.pod("p").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"hello from the pod").await.unwrap();
    });
    let mut stream = env.rt().port_forward(&sb, port).await.unwrap();
    let mut got = String::new();
    stream.read_to_string(&mut got).await.unwrap();
    assert_eq!(got, "hello from the pod");
}

#[tokio::test]
async fn restarted_runtime_adopts_containers() {
    if needs_root("restarted_runtime_adopts_containers") {
        return;
    }
    let mut env = Env::new().await;
    let sb = env.pod("p").await;
    let looping = env
        .run(
            &sb,
            sh(
                "loop",
                "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.05; done",
            ),
        )
        .await;
    let quick = env.run(&sb, sh("quick", "sleep 0.3; exit 3")).await;
    let doomed = env.run(&sb, sh("doomed", "sleep 30")).await;
    let before = env.status(&looping).await;
    wait_log(&before.log_path, "line 2").await;
    let doomed_pid = env.status(&doomed).await.pid.unwrap();

    // The agent goes away.
    drop(env.rt.take());
    // While it is away: `quick` exits on its own; `doomed` loses its shim
    // and then its process.
    let stat = std::fs::read_to_string(format!("/proc/{doomed_pid}/stat")).unwrap();
    let ppid: i32 = stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    use nix::sys::signal::{kill, Signal::SIGKILL};
    use nix::unistd::Pid;
    kill(Pid::from_raw(ppid), SIGKILL).unwrap();
    kill(Pid::from_raw(doomed_pid as i32), SIGKILL).unwrap();
    let lines_before = log_text(&before.log_path).await.lines().count();
    tokio::time::sleep(Duration::from_millis(600)).await;

    // A new agent on the same state directory.
    env.rt = Some(ProcessRuntime::open(env.config.clone()).await.unwrap());
    let mut events = env.rt().events();
    let all = env.rt().list_containers(Default::default()).await.unwrap();
    assert_eq!(all.len(), 3);
    let st = env.status(&looping).await;
    assert_eq!(st.state, ContainerState::Running);
    assert_eq!(st.pid, before.pid);
    assert_eq!(st.started_at, before.started_at);
    // Logs went on while nobody watched, and still do.
    let lines_now = log_text(&st.log_path).await.lines().count();
    assert!(lines_now > lines_before, "{lines_now} > {lines_before}");

    let q = env.status(&quick).await;
    assert_eq!(
        (q.state, q.exit_code, q.reason.as_deref()),
        (ContainerState::Exited, Some(3), Some("Error"))
    );
    let d = env.status(&doomed).await;
    assert_eq!(
        (d.state, d.exit_code, d.reason.as_deref()),
        (
            ContainerState::Exited,
            Some(137),
            Some("ContainerStatusUnknown")
        )
    );
    let running = env
        .rt()
        .list_containers(ContainerFilter {
            state: Some(ContainerState::Running),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 1);

    // The adopted container can be exec'd into and stopped.
    let r = env
        .rt()
        .exec_sync(
            &looping,
            vec!["echo".into(), "inside".into()],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(r.stdout, b"inside\n");
    env.rt()
        .stop_container(&looping, Duration::from_secs(5))
        .await
        .unwrap();
    let st = env.status(&looping).await;
    assert_eq!(st.exit_code, Some(143));
    let e = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.container_id, e.kind),
        (looping.clone(), ContainerEventKind::Stopped)
    );
    env.rt().remove_pod_sandbox(&sb).await.unwrap();
}

#[tokio::test]
async fn logs_rotate_and_reopen() {
    if needs_root("logs_rotate_and_reopen") {
        return;
    }
    let env = Env::with(|c| {
        c.log_rotation = LogRotation {
            max_size: 4096,
            max_files: 3,
        }
    })
    .await;
    let sb = env.pod("p").await;
    let id = env
        .run(
            &sb,
            sh(
                "chatty",
                "i=0; while [ $i -lt 400 ]; do echo \"line $i padding-padding\"; i=$((i+1)); done; sleep 30",
            ),
        )
        .await;
    let path = env.status(&id).await.log_path;
    wait_log(&path, "line 399 ").await;
    let files = cri_log::log_files(&path);
    assert_eq!(
        files,
        vec![
            cri_log::rotated_path(&path, 2),
            cri_log::rotated_path(&path, 1),
            path.clone()
        ]
    );
    for f in &files {
        assert!(std::fs::metadata(f).unwrap().len() <= 4096);
    }
    let text = log_text(&path).await;
    let lines: Vec<&str> = text.lines().collect();
    let first: usize = lines[0].split(' ').nth(1).unwrap().parse().unwrap();
    assert!(first > 0);
    for (k, l) in lines.iter().enumerate() {
        assert_eq!(*l, format!("line {} padding-padding", first + k));
    }
    // Tail over rotated files.
    let mut r = LogReader::new(
        &path,
        LogOptions {
            tail_lines: Some(2),
            ..Default::default()
        },
        Box::pin(async {}),
    );
    let mut tail = String::new();
    while let Some(c) = r.next_chunk().await.unwrap() {
        tail.push_str(&String::from_utf8_lossy(&c));
    }
    assert_eq!(tail, "line 398 padding-padding\nline 399 padding-padding\n");

    // Someone moves the log away: after reopen, new output lands in a new file.
    std::fs::rename(&path, env.dir.path().join("moved.log")).unwrap();
    env.rt().reopen_container_log(&id).await.unwrap();
    let r = env
        .rt()
        .exec_sync(&id, vec!["true".into()], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0);
    assert!(path.exists());
    env.rt().remove_container(&id).await.unwrap();
    assert!(cri_log::log_files(&path).is_empty());
}

/// Without root the runtime still runs containers, with cgroups off (and
/// said so in statuses) and volume mounts refused. Run as root, the test
/// re-runs itself as user 65534.
#[tokio::test]
async fn unprivileged_runtime_degrades() {
    const INNER: &str = "NAVARCH_RUNTIME_TEST_UNPRIVILEGED";
    if nix::unistd::geteuid().is_root() {
        if std::env::var_os(INNER).is_some() {
            panic!("still root in the unprivileged run");
        }
        use std::os::unix::process::CommandExt;
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "unprivileged_runtime_degrades", "--nocapture"])
            .env(INNER, "1")
            .current_dir("/tmp")
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "unprivileged run failed:\n{text}");
        assert!(text.contains("1 passed"), "{text}");
        return;
    }
    let env = Env::new().await;
    let CgroupInfo::Disabled { reason } = env.rt().cgroup_info() else {
        panic!("cgroups should be unavailable without root")
    };
    assert!(reason.contains("cannot create"), "{reason}");
    let sb = env.pod("p").await;
    let s = env.rt().pod_sandbox_status(&sb).await.unwrap();
    assert!(matches!(s.cgroup, CgroupInfo::Disabled { .. }));

    let mut c = sh("vol", "true");
    c.mounts = vec![Mount {
        host_path: "/tmp".into(),
        container_path: "/mnt/x".into(),
        read_only: false,
    }];
    let err = env.rt().create_container(&sb, c).await.unwrap_err();
    assert!(err.to_string().contains("needs root"), "{err}");

    let mut c = sh("app", "echo uid=$(id -u)");
    c.resources.memory_limit_bytes = Some(64 << 20);
    let id = env.run(&sb, c).await;
    let st = env.rt().wait_container(&id).await.unwrap();
    assert_eq!(st.exit_code, Some(0));
    assert!(log_text(&st.log_path).await.contains("uid=65534"));
    let mut c = sh("su", "true");
    c.user.run_as_user = Some(0);
    let id = env.rt().create_container(&sb, c).await.unwrap();
    let err = env.rt().start_container(&id).await.unwrap_err();
    assert!(
        err.to_string().contains("setgroups") || err.to_string().contains("setuid"),
        "{err}"
    );
}

#[tokio::test]
async fn tty_container_attach_and_resize() {
    if needs_root("tty_container_attach_and_resize") {
        return;
    }
    let env = Env::new().await;
    let sb = env.pod("p").await;
    let mut c = sh("term", "tty; stty size; read x; stty size; echo got=$x");
    c.tty = true;
    c.stdin = true;
    let id = env.run(&sb, c).await;
    let log = env.status(&id).await.log_path;
    let text = wait_log(&log, "24 80").await;
    assert!(text.contains("/dev/pts/"), "{text}");
    let mut s = env
        .rt()
        .attach(
            &id,
            StreamOptions {
                stdin: true,
                stdout: true,
                stderr: true,
                tty: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(s.stderr.is_none(), "a terminal has one output stream");
    s.resize
        .as_ref()
        .unwrap()
        .send(TerminalSize {
            width: 120,
            height: 40,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.stdin.as_mut().unwrap().write_all(b"yes\n").await.unwrap();
    let mut out = String::new();
    let mut stdout = s.stdout.take().unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), stdout.read_to_string(&mut out)).await;
    assert!(out.contains("40 120"), "{out:?}");
    assert!(out.contains("got=yes"), "{out:?}");
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), s.exit)
            .await
            .unwrap()
            .unwrap(),
        0
    );
    let text = log_text(&log).await;
    assert!(
        text.contains("40 120") && text.contains("got=yes"),
        "{text}"
    );
}
