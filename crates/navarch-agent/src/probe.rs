//! Container probes: one attempt ([`probe_once`]) and the periodic worker
//! that thresholds attempts into results ([`spawn_worker`]), after the
//! kubelet's prober.
//!
//! # What the pod worker must do around a probe worker
//!
//! As the kubelet does:
//!
//! - Before a worker's first [`ProbeEvent::Result`], a container is
//!   **not ready** (readiness starts as failure), **live** (liveness starts
//!   as success: only `failureThreshold` consecutive failures kill it) and
//!   **not started** (startup has no result yet).
//! - A container with a startup probe runs no liveness or readiness probe
//!   until its startup probe succeeded: spawn those workers after the
//!   startup worker's `Result { success: true }`. A container without one
//!   is started as soon as it runs.
//! - A liveness or startup failure result means "restart the container"
//!   (per `restartPolicy`). The worker then stops probing that container,
//!   as the kubelet puts its worker on hold until it sees a new container;
//!   the new container gets new workers.
//! - Each failed attempt is a [`ProbeEvent::Failed`] for a Warning event
//!   with reason `Unhealthy`.
//! - `exec` commands take `$(VAR)` references to the container's literal
//!   `env` values only; expand them with [`probe_command`] before
//!   spawning.

use k8s_openapi::api::core::v1::{Container, ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use navarch_runtime::{ContainerId, Runtime};
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// The `User-Agent` of HTTP probes, as a kubelet 1.33 sends it.
pub const USER_AGENT: &str = "kube-probe/1.33";

/// How much of an exec probe's output or an HTTP body is kept (as the
/// kubelet: 10 KiB).
const MAX_OUTPUT: usize = 10 * 1024;

/// Which probe of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        })
    }
}

/// What a probe runs against.
#[derive(Clone)]
pub struct ProbeTarget {
    pub runtime: Arc<dyn Runtime>,
    pub container_id: ContainerId,
    /// Default host of httpGet and tcpSocket probes.
    pub pod_ip: String,
    /// The container's ports, for named probe ports.
    pub ports: Vec<ContainerPort>,
}

/// The result of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeOutcome {
    Success,
    /// Failed, with the kubelet's wording of why (the exec output, `HTTP
    /// probe failed with statuscode: 500`, `dial tcp …: connect: connection
    /// refused`, …).
    Failure(String),
}

/// What a worker reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeEvent {
    /// The thresholded result changed (sent once at the first decision too).
    Result {
        container: String,
        kind: ProbeKind,
        success: bool,
    },
    /// A single failed attempt (for `Unhealthy` events): message like
    /// `Liveness probe failed: HTTP probe failed with statuscode: 500`.
    Failed {
        container: String,
        kind: ProbeKind,
        message: String,
    },
}

fn seconds(v: Option<i32>, default: i32) -> Duration {
    let s = v.filter(|&s| s > 0).unwrap_or(default);
    Duration::from_secs(s as u64)
}

/// A probe's `timeoutSeconds` (default 1).
pub fn probe_timeout(probe: &Probe) -> Duration {
    seconds(probe.timeout_seconds, 1)
}

/// An exec probe's command with `$(VAR)` expanded against the container's
/// literal `env` values, as the kubelet does (a variable set by
/// `valueFrom` expands to the empty string; unknown references stay).
pub fn probe_command(container: &Container, cmd: &[String]) -> Vec<String> {
    let env: Vec<(String, String)> = container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    cmd.iter().map(|c| crate::env::expand(c, &env)).collect()
}

/// One attempt: exec (`exec_sync` with `timeoutSeconds`; exit 0 is
/// success; the output is the failure message), httpGet (HTTP or HTTPS
/// without certificate verification, host default `pod_ip`, named or
/// numeric port, `path`, `httpHeaders`, `User-Agent: kube-probe/1.33`
/// unless set, 200–399 is success, redirects followed only to the same
/// host (a redirect elsewhere counts as success, as the kubelet's probe
/// warning does), no proxy, no keep-alive), tcpSocket (a connection within
/// the timeout), grpc (not supported: always
/// `Failure("grpc probes are not supported")`).
pub async fn probe_once(probe: &Probe, target: &ProbeTarget) -> ProbeOutcome {
    let timeout = probe_timeout(probe);
    if let Some(exec) = &probe.exec {
        return exec_probe(exec.command.clone().unwrap_or_default(), target, timeout).await;
    }
    if let Some(http) = &probe.http_get {
        let port = match resolve_port(&http.port, &target.ports) {
            Ok(p) => p,
            Err(e) => return ProbeOutcome::Failure(e),
        };
        let host = http
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| target.pod_ip.clone());
        let scheme = http
            .scheme
            .as_deref()
            .unwrap_or("HTTP")
            .to_ascii_lowercase();
        let path = http.path.as_deref().unwrap_or_default();
        let headers: Vec<(String, String)> = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        return http_probe(&scheme, &host, port, path, &headers, timeout).await;
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = match resolve_port(&tcp.port, &target.ports) {
            Ok(p) => p,
            Err(e) => return ProbeOutcome::Failure(e),
        };
        let host = tcp
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| target.pod_ip.clone());
        return tcp_probe(&host, port, timeout).await;
    }
    if probe.grpc.is_some() {
        return ProbeOutcome::Failure("grpc probes are not supported".into());
    }
    ProbeOutcome::Failure("missing probe handler".into())
}

/// Kubelet's `ResolveContainerPort`, with its error wording.
fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16, String> {
    let n = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => {
            match ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
            {
                Some(p) => i64::from(p.container_port),
                None => name
                    .parse::<i64>()
                    .map_err(|_| format!("strconv.Atoi: parsing {name:?}: invalid syntax"))?,
            }
        }
    };
    u16::try_from(n)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("invalid port number: {n}"))
}

/// `host:port`, with brackets for IPv6 addresses.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn exec_probe(cmd: Vec<String>, target: &ProbeTarget, timeout: Duration) -> ProbeOutcome {
    let joined = cmd.join(" ");
    match target
        .runtime
        .exec_sync(&target.container_id, cmd, timeout)
        .await
    {
        Ok(r) if r.exit_code == 0 => ProbeOutcome::Success,
        Ok(r) => {
            let mut out = r.stdout;
            out.extend_from_slice(&r.stderr);
            out.truncate(MAX_OUTPUT);
            ProbeOutcome::Failure(String::from_utf8_lossy(&out).into_owned())
        }
        Err(navarch_runtime::Error::Timeout { .. }) => {
            ProbeOutcome::Failure(format!("command {joined:?} timed out"))
        }
        Err(e) => ProbeOutcome::Failure(e.to_string()),
    }
}

/// The shared HTTP client: no proxy, no keep-alive, no certificate checks,
/// same-host redirects only (at most 10).
fn http_client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .no_proxy()
                .pool_max_idle_per_host(0)
                .redirect(reqwest::redirect::Policy::custom(|attempt| {
                    if attempt.previous().len() >= 10 {
                        return attempt.error("stopped after 10 redirects");
                    }
                    let first = attempt.previous().first().and_then(|u| u.host_str());
                    if attempt.url().host_str() == first {
                        attempt.follow()
                    } else {
                        attempt.stop()
                    }
                }))
                .build()
                .map_err(|e| format!("cannot build the probe HTTP client: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

async fn http_probe(
    scheme: &str,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> ProbeOutcome {
    let slash = if path.starts_with('/') { "" } else { "/" };
    let addr = join_host_port(host, port);
    let url = format!("{scheme}://{addr}{slash}{path}");
    let client = match http_client() {
        Ok(c) => c,
        Err(e) => return ProbeOutcome::Failure(e),
    };
    let mut req = client.get(&url).timeout(timeout);
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    if !has("user-agent") {
        req = req.header("User-Agent", USER_AGENT);
    }
    if !has("accept") {
        req = req.header("Accept", "*/*");
    }
    let send = async {
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        // Drain (a bounded part of) the body, as the kubelet reads it.
        let mut resp = resp;
        let mut read = 0;
        while read < MAX_OUTPUT {
            match resp.chunk().await? {
                Some(c) => read += c.len(),
                None => break,
            }
        }
        Ok::<u16, reqwest::Error>(status)
    };
    match send.await {
        Ok(code) if (200..400).contains(&code) => ProbeOutcome::Success,
        Ok(code) => ProbeOutcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
        Err(e) => ProbeOutcome::Failure(format!(
            "Get {:?}: {}",
            e.url().map(|u| u.as_str()).unwrap_or(&url),
            http_error_text(&e, host, port)
        )),
    }
}

/// A reqwest error in Go's words.
fn http_error_text(e: &reqwest::Error, host: &str, port: u16) -> String {
    if e.is_timeout() {
        return "context deadline exceeded (Client.Timeout exceeded while awaiting headers)".into();
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let mut innermost = None;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if e.is_connect() {
                return format!(
                    "dial tcp {}: {}",
                    join_host_port(host, port),
                    go_io_error(io)
                );
            }
        }
        innermost = Some(s);
        source = s.source();
    }
    match innermost {
        Some(s) => s.to_string(),
        None => e.to_string(),
    }
}

/// An IO error of a connect as Go prints it (`connect: connection refused`).
fn go_io_error(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::TimedOut {
        return "i/o timeout".into();
    }
    match e.raw_os_error() {
        Some(n) => {
            let desc = nix::errno::Errno::from_raw(n).desc();
            let mut chars = desc.chars();
            let lower = match chars.next() {
                Some(c) => c.to_lowercase().chain(chars).collect(),
                None => String::new(),
            };
            format!("connect: {lower}")
        }
        None => e.to_string(),
    }
}

async fn tcp_probe(host: &str, port: u16, timeout: Duration) -> ProbeOutcome {
    let addr = join_host_port(host, port);
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
        Ok(Ok(_conn)) => ProbeOutcome::Success,
        Ok(Err(e)) => ProbeOutcome::Failure(format!("dial tcp {addr}: {}", go_io_error(&e))),
        Err(_) => ProbeOutcome::Failure(format!("dial tcp {addr}: i/o timeout")),
    }
}

/// Runs a probe on tokio time, as the kubelet's prober worker does:
///
/// - The first attempt is `initialDelaySeconds` after the spawn (spawn the
///   worker when the container starts), then one every `periodSeconds`
///   (default 10; an attempt that overruns skips ticks). Each attempt times
///   out after `timeoutSeconds` (default 1). The kubelet's random jitter
///   before the first probe after its own restart is not reproduced.
/// - `successThreshold` (default 1) consecutive successes or
///   `failureThreshold` (default 3) consecutive failures make a result; a
///   [`ProbeEvent::Result`] is sent at the first result and whenever it
///   changes. Every failed attempt also sends a [`ProbeEvent::Failed`].
/// - A startup worker stops after its success result; liveness and startup
///   workers stop after a failure result (the container is to be
///   restarted; see the module docs). A readiness worker runs until
///   stopped.
/// - The worker stops on `cancel` or when the receiver is gone.
pub fn spawn_worker(
    kind: ProbeKind,
    container: String,
    probe: Probe,
    target: ProbeTarget,
    tx: mpsc::Sender<ProbeEvent>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = run_worker(kind, container, probe, target, tx) => {}
        }
    })
}

async fn run_worker(
    kind: ProbeKind,
    container: String,
    probe: Probe,
    target: ProbeTarget,
    tx: mpsc::Sender<ProbeEvent>,
) {
    let period = seconds(probe.period_seconds, 10);
    let initial = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
    let success_threshold = probe.success_threshold.filter(|&n| n > 0).unwrap_or(1);
    let failure_threshold = probe.failure_threshold.filter(|&n| n > 0).unwrap_or(3);
    let mut ticker = tokio::time::interval_at(Instant::now() + initial, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);

    let mut last: Option<bool> = None;
    let mut run = 0;
    let mut reported: Option<bool> = None;
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            _ = ticker.tick() => {}
        }
        let outcome = probe_once(&probe, &target).await;
        let success = outcome == ProbeOutcome::Success;
        if let ProbeOutcome::Failure(why) = outcome {
            let event = ProbeEvent::Failed {
                container: container.clone(),
                kind,
                message: format!("{kind} probe failed: {why}"),
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
        if last == Some(success) {
            run += 1;
        } else {
            last = Some(success);
            run = 1;
        }
        let threshold = if success {
            success_threshold
        } else {
            failure_threshold
        };
        if run < threshold {
            continue;
        }
        if reported != Some(success) {
            reported = Some(success);
            let event = ProbeEvent::Result {
                container: container.clone(),
                kind,
                success,
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
        match (kind, success) {
            (ProbeKind::Startup, true) => return,
            (ProbeKind::Liveness | ProbeKind::Startup, false) => return,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use navarch_runtime::{ContainerConfig, FakeExec, FakeRuntime, PodSandboxConfig};
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn fake_target(rt: &FakeRuntime) -> ProbeTarget {
        let sb = rt
            .run_pod_sandbox(PodSandboxConfig {
                name: "p".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let id = rt
            .create_container(
                &sb,
                ContainerConfig {
                    name: "app".into(),
                    command: vec!["run".into()],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        rt.start_container(&id).await.unwrap();
        ProbeTarget {
            runtime: Arc::new(rt.clone()),
            container_id: id,
            pod_ip: "127.0.0.1".into(),
            ports: vec![],
        }
    }

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn exec_outcomes() {
        let rt = FakeRuntime::new();
        rt.set_exec_handler(|_, cmd| match cmd[0].as_str() {
            "ok" => FakeExec::default(),
            "slow" => FakeExec {
                duration: Duration::from_secs(5),
                ..Default::default()
            },
            _ => FakeExec {
                exit_code: 1,
                stdout: b"cat: /tmp/healthy: ".to_vec(),
                stderr: b"No such file or directory\n".to_vec(),
                ..Default::default()
            },
        });
        let t = fake_target(&rt).await;
        let p = |cmd: &[&str]| probe(json!({"exec": {"command": cmd}, "timeoutSeconds": 2}));
        assert_eq!(probe_once(&p(&["ok"]), &t).await, ProbeOutcome::Success);
        assert_eq!(
            probe_once(&p(&["cat", "/tmp/healthy"]), &t).await,
            ProbeOutcome::Failure("cat: /tmp/healthy: No such file or directory\n".into())
        );
        assert_eq!(
            probe_once(&p(&["slow", "x"]), &t).await,
            ProbeOutcome::Failure("command \"slow x\" timed out".into())
        );
        assert_eq!(
            probe_once(&probe(json!({"grpc": {"port": 9000}})), &t).await,
            ProbeOutcome::Failure("grpc probes are not supported".into())
        );
    }

    #[test]
    fn probe_commands_expand_literal_env_only() {
        let c: Container = serde_json::from_value(json!({"name": "app", "env": [
            {"name": "A", "value": "a"},
            {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}))
        .unwrap();
        let cmd = ["$(A)".to_owned(), "x$(B)y".to_owned(), "$(C)".to_owned()];
        assert_eq!(probe_command(&c, &cmd), ["a", "xy", "$(C)"]);
    }

    /// A tiny HTTP server: `/ok` 200, `/fail` 500, `/redirect` → `/ok`,
    /// `/away` → another host, `/loop` → itself, `/slow` answers after 3 s.
    /// Returns its port and the request heads it saw.
    async fn http_server() -> (u16, Arc<parking_lot::Mutex<Vec<String>>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut n = 0;
                    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(m) => n += m,
                        }
                    }
                    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    seen.lock().push(head);
                    let (status, extra) = match path.as_str() {
                        "/ok" => ("200 OK", String::new()),
                        "/redirect" => ("302 Found", "Location: /ok\r\n".into()),
                        "/away" => ("302 Found", "Location: http://other.invalid/\r\n".into()),
                        "/loop" => ("302 Found", "Location: /loop\r\n".into()),
                        "/slow" => {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                            ("200 OK", String::new())
                        }
                        _ => ("500 Internal Server Error", String::new()),
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\n{extra}Content-Length: 4\r\nConnection: close\r\n\r\nbody"
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        (port, seen)
    }

    fn plain_target() -> ProbeTarget {
        ProbeTarget {
            runtime: Arc::new(FakeRuntime::new()),
            container_id: ContainerId::from("c"),
            pod_ip: "127.0.0.1".into(),
            ports: vec![ContainerPort {
                name: Some("web".into()),
                container_port: 1,
                ..Default::default()
            }],
        }
    }

    /// A port nothing listens on.
    async fn closed_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn http_outcomes() {
        let (port, seen) = http_server().await;
        let mut t = plain_target();
        t.ports[0].container_port = i32::from(port);
        let get = |path: &str| {
            probe(json!({"httpGet": {"path": path, "port": "web",
                "httpHeaders": [{"name": "X-Custom", "value": "1"}]}, "timeoutSeconds": 1}))
        };
        assert_eq!(probe_once(&get("/ok"), &t).await, ProbeOutcome::Success);
        let head = seen.lock().last().unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /ok http/1.1"), "{head}");
        assert!(head.contains("user-agent: kube-probe/1.33"), "{head}");
        assert!(head.contains("x-custom: 1"), "{head}");
        assert_eq!(
            probe_once(&get("/fail"), &t).await,
            ProbeOutcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        assert_eq!(
            probe_once(&get("/redirect"), &t).await,
            ProbeOutcome::Success
        );
        assert!(seen.lock().last().unwrap().starts_with("GET /ok "));
        assert_eq!(probe_once(&get("/away"), &t).await, ProbeOutcome::Success);
        match probe_once(&get("/loop"), &t).await {
            ProbeOutcome::Failure(m) => assert!(m.contains("stopped after 10 redirects"), "{m}"),
            o => panic!("{o:?}"),
        }
        assert_eq!(
            probe_once(&get("/slow"), &t).await,
            ProbeOutcome::Failure(format!(
                "Get \"http://127.0.0.1:{port}/slow\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ))
        );
        let closed = closed_port().await;
        let p = probe(json!({"httpGet": {"path": "/healthz", "port": closed}}));
        assert_eq!(
            probe_once(&p, &t).await,
            ProbeOutcome::Failure(format!(
                "Get \"http://127.0.0.1:{closed}/healthz\": dial tcp 127.0.0.1:{closed}: connect: connection refused"
            ))
        );
        let p = probe(json!({"httpGet": {"port": "nope"}}));
        assert_eq!(
            probe_once(&p, &t).await,
            ProbeOutcome::Failure("strconv.Atoi: parsing \"nope\": invalid syntax".into())
        );
    }

    #[tokio::test]
    async fn https_skips_certificate_verification() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = acceptor.accept(s).await else {
                        return;
                    };
                    let mut buf = [0u8; 2048];
                    let _ = s.read(&mut buf).await;
                    let _ = s
                        .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                        .await;
                    let _ = s.shutdown().await;
                });
            }
        });
        let p = probe(json!({"httpGet": {"scheme": "HTTPS", "port": port, "path": "/"}}));
        assert_eq!(probe_once(&p, &plain_target()).await, ProbeOutcome::Success);
    }

    #[tokio::test]
    async fn tcp_outcomes() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let t = plain_target();
        let p = probe(json!({"tcpSocket": {"port": port}}));
        assert_eq!(probe_once(&p, &t).await, ProbeOutcome::Success);
        drop(l);
        assert_eq!(
            probe_once(&p, &t).await,
            ProbeOutcome::Failure(format!(
                "dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
    }

    /// A fake container whose exec results follow `script` (true = exit 0),
    /// then repeat the last entry; records the time of each attempt.
    async fn scripted(script: Vec<bool>) -> (ProbeTarget, Arc<parking_lot::Mutex<Vec<Duration>>>) {
        let rt = FakeRuntime::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let times = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let start = Instant::now();
        let times2 = times.clone();
        rt.set_exec_handler(move |_, _| {
            let i = calls.fetch_add(1, Ordering::SeqCst);
            times2.lock().push(start.elapsed());
            let ok = script[i.min(script.len() - 1)];
            FakeExec {
                exit_code: if ok { 0 } else { 1 },
                stdout: if ok { vec![] } else { b"bad".to_vec() },
                ..Default::default()
            }
        });
        (fake_target(&rt).await, times)
    }

    fn failed(kind: ProbeKind) -> ProbeEvent {
        ProbeEvent::Failed {
            container: "app".into(),
            kind,
            message: format!("{kind} probe failed: bad"),
        }
    }

    fn result(kind: ProbeKind, success: bool) -> ProbeEvent {
        ProbeEvent::Result {
            container: "app".into(),
            kind,
            success,
        }
    }

    async fn collect(mut rx: mpsc::Receiver<ProbeEvent>, n: usize) -> Vec<ProbeEvent> {
        let mut out = Vec::new();
        while out.len() < n {
            match rx.recv().await {
                Some(e) => out.push(e),
                None => break,
            }
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_thresholds_and_timing() {
        use ProbeKind::Readiness as R;
        let (t, times) = scripted(vec![true, false, false, true, true]).await;
        let p = probe(
            json!({"exec": {"command": ["check"]}, "initialDelaySeconds": 5,
            "periodSeconds": 2, "successThreshold": 2, "failureThreshold": 2}),
        );
        let (tx, rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let h = spawn_worker(R, "app".into(), p, t, tx, cancel.clone());
        let events = collect(rx, 4).await;
        // ok (run 1 < 2), fail, fail → false, ok, ok → true.
        assert_eq!(
            events,
            vec![failed(R), failed(R), result(R, false), result(R, true)]
        );
        let secs: Vec<u64> = times.lock().iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, vec![5, 7, 9, 11, 13]);
        cancel.cancel();
        h.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_defaults_and_stop_after_failure() {
        use ProbeKind::Liveness as L;
        let (t, times) = scripted(vec![true, false, false, true, false, false, false]).await;
        let p = probe(json!({"exec": {"command": ["check"]}}));
        let (tx, rx) = mpsc::channel(16);
        let h = spawn_worker(L, "app".into(), p, t, tx, CancellationToken::new());
        let events = collect(rx, 100).await;
        assert_eq!(
            events,
            vec![
                result(L, true),
                failed(L),
                failed(L),
                failed(L),
                failed(L),
                failed(L),
                result(L, false),
            ]
        );
        h.await.unwrap();
        let secs: Vec<u64> = times.lock().iter().map(|d| d.as_secs()).collect();
        assert_eq!(
            secs,
            vec![0, 10, 20, 30, 40, 50, 60],
            "period 10 by default"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn startup_stops_after_success() {
        use ProbeKind::Startup as S;
        let (t, times) = scripted(vec![false, false, true]).await;
        let p = probe(json!({"exec": {"command": ["check"]}, "periodSeconds": 1,
            "failureThreshold": 30}));
        let (tx, rx) = mpsc::channel(16);
        let h = spawn_worker(S, "app".into(), p, t, tx, CancellationToken::new());
        let events = collect(rx, 100).await;
        assert_eq!(events, vec![failed(S), failed(S), result(S, true)]);
        h.await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(times.lock().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn worker_stops_when_receiver_is_gone() {
        let (t, times) = scripted(vec![true]).await;
        let p = probe(json!({"exec": {"command": ["check"]}}));
        let (tx, rx) = mpsc::channel(16);
        let h = spawn_worker(
            ProbeKind::Readiness,
            "app".into(),
            p,
            t,
            tx,
            CancellationToken::new(),
        );
        let events = collect(rx, 1).await;
        assert_eq!(events, vec![result(ProbeKind::Readiness, true)]);
        h.await.unwrap();
        assert_eq!(times.lock().len(), 1);
    }
}
