//! The agent's HTTPS streaming server end to end, over TLS with client
//! certificates: logs, exec and port-forward against the fake runtime (its
//! port-forward redirected to TCP servers of the test), and exec/attach
//! against the process runtime when running as root with the shim built.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use navarch_agent::{labels, server, APISERVER_CLIENT_CN};
use navarch_runtime::*;
use navarch_stream::client::{spdy_connect, websocket_connect, ExecClient, PortForwardClient};
use navarch_stream::spdy::SpdyHeaders;
use navarch_stream::ws::{decode_message, encode_message};
use navarch_stream::{ChannelProtocol, ExitStatus, StreamVersion};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

const TEST_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// PKI

struct Pki {
    ca_pem: String,
    serving: (String, String),
    apiserver: (String, String),
    stranger: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "test-ca");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();

    let leaf = |cn: &str, server: bool| -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        if server {
            p.subject_alt_names = vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress([127, 0, 0, 1].into()),
            ];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        } else {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        serving: leaf("node-1", true),
        apiserver: leaf(APISERVER_CLIENT_CN, false),
        stranger: leaf("system:node:node-2", false),
        ca_pem,
    }
}

// ---------------------------------------------------------------------------
// A fake runtime whose port-forward connects to 127.0.0.1, like the process
// runtime's.

#[derive(Clone)]
struct TcpFake(FakeRuntime);

impl Runtime for TcpFake {
    fn version(&self) -> String {
        self.0.version()
    }
    fn run_pod_sandbox<'a>(&'a self, c: PodSandboxConfig) -> BoxFuture<'a, Result<SandboxId>> {
        self.0.run_pod_sandbox(c)
    }
    fn stop_pod_sandbox<'a>(&'a self, id: &'a SandboxId) -> BoxFuture<'a, Result<()>> {
        self.0.stop_pod_sandbox(id)
    }
    fn remove_pod_sandbox<'a>(&'a self, id: &'a SandboxId) -> BoxFuture<'a, Result<()>> {
        self.0.remove_pod_sandbox(id)
    }
    fn pod_sandbox_status<'a>(
        &'a self,
        id: &'a SandboxId,
    ) -> BoxFuture<'a, Result<PodSandboxStatus>> {
        self.0.pod_sandbox_status(id)
    }
    fn list_pod_sandboxes<'a>(
        &'a self,
        f: SandboxFilter,
    ) -> BoxFuture<'a, Result<Vec<PodSandboxStatus>>> {
        self.0.list_pod_sandboxes(f)
    }
    fn create_container<'a>(
        &'a self,
        sb: &'a SandboxId,
        c: ContainerConfig,
    ) -> BoxFuture<'a, Result<ContainerId>> {
        self.0.create_container(sb, c)
    }
    fn start_container<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<()>> {
        self.0.start_container(id)
    }
    fn stop_container<'a>(&'a self, id: &'a ContainerId, t: Duration) -> BoxFuture<'a, Result<()>> {
        self.0.stop_container(id, t)
    }
    fn remove_container<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<()>> {
        self.0.remove_container(id)
    }
    fn container_status<'a>(
        &'a self,
        id: &'a ContainerId,
    ) -> BoxFuture<'a, Result<ContainerStatus>> {
        self.0.container_status(id)
    }
    fn list_containers<'a>(
        &'a self,
        f: ContainerFilter,
    ) -> BoxFuture<'a, Result<Vec<ContainerStatus>>> {
        self.0.list_containers(f)
    }
    fn wait_container<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<ContainerStatus>> {
        self.0.wait_container(id)
    }
    fn events(&self) -> broadcast::Receiver<ContainerEvent> {
        self.0.events()
    }
    fn exec_sync<'a>(
        &'a self,
        id: &'a ContainerId,
        cmd: Vec<String>,
        t: Duration,
    ) -> BoxFuture<'a, Result<ExecSyncResult>> {
        self.0.exec_sync(id, cmd, t)
    }
    fn exec<'a>(
        &'a self,
        id: &'a ContainerId,
        cmd: Vec<String>,
        s: StreamOptions,
    ) -> BoxFuture<'a, Result<StreamSession>> {
        self.0.exec(id, cmd, s)
    }
    fn attach<'a>(
        &'a self,
        id: &'a ContainerId,
        s: StreamOptions,
    ) -> BoxFuture<'a, Result<StreamSession>> {
        self.0.attach(id, s)
    }
    fn port_forward<'a>(
        &'a self,
        sandbox: &'a SandboxId,
        port: u16,
    ) -> BoxFuture<'a, Result<PortStream>> {
        async move {
            self.0.pod_sandbox_status(sandbox).await?;
            let s = TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| Error::Io {
                    context: format!("connect to port {port} of the pod"),
                    source: e,
                })?;
            Ok(Box::new(s) as PortStream)
        }
        .boxed()
    }
    fn reopen_container_log<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<()>> {
        self.0.reopen_container_log(id)
    }
}

// ---------------------------------------------------------------------------
// Harness

struct Agent {
    addr: SocketAddr,
    pki: Pki,
    cancel: CancellationToken,
    _logs: tempfile::TempDir,
    logs: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn start(runtime: Arc<dyn Runtime>) -> Agent {
    let pki = pki();
    let cfg = server::tls_config(&pki.ca_pem, &pki.serving.0, &pki.serving.1).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(server::serve(
        listener,
        Arc::new(cfg),
        runtime,
        cancel.clone(),
    ));
    let logs = tempfile::tempdir().unwrap();
    Agent {
        addr,
        pki,
        cancel,
        logs: logs.path().to_owned(),
        _logs: logs,
    }
}

fn client_config(pki: &Pki, identity: Option<&(String, String)>) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pki.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match identity {
        Some((cert, key)) => {
            let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert.as_bytes())
                .collect::<std::result::Result<_, _>>()
                .unwrap();
            let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key.as_bytes())
                .unwrap()
                .unwrap();
            b.with_client_auth_cert(certs, key).unwrap()
        }
        None => b.with_no_client_auth(),
    }
}

impl Agent {
    async fn connect_as(
        &self,
        identity: Option<&(String, String)>,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let cfg = client_config(&self.pki, identity);
        let tcp = TcpStream::connect(self.addr).await?;
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    /// A TLS connection as the API server.
    async fn tls(&self) -> TlsStream<TcpStream> {
        self.connect_as(Some(&self.pki.apiserver)).await.unwrap()
    }

    async fn get_as(
        &self,
        identity: Option<&(String, String)>,
        path: &str,
    ) -> std::result::Result<(u16, String), String> {
        let io = self.connect_as(identity).await.map_err(|e| e.to_string())?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    async fn get(&self, path: &str) -> (u16, String) {
        self.get_as(Some(&self.pki.apiserver), path).await.unwrap()
    }
}

fn status_json(body: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["kind"], "Status", "{body}");
    assert_eq!(v["apiVersion"], "v1", "{body}");
    assert_eq!(v["status"], "Failure", "{body}");
    v
}

fn pod_labels(ns: &str, pod: &str, uid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::POD_NAMESPACE.to_owned(), ns.to_owned()),
        (labels::POD_NAME.to_owned(), pod.to_owned()),
        (labels::POD_UID.to_owned(), uid.to_owned()),
    ])
}

/// A sandbox for `default/web` (uid `uid-web`) logging under `logs`.
async fn pod(rt: &dyn Runtime, logs: &std::path::Path) -> SandboxId {
    rt.run_pod_sandbox(PodSandboxConfig {
        name: "web".into(),
        namespace: "default".into(),
        uid: "uid-web".into(),
        log_directory: logs.join("default_web_uid-web"),
        labels: pod_labels("default", "web", "uid-web"),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn container(rt: &dyn Runtime, sb: &SandboxId, name: &str, attempt: u32) -> ContainerId {
    let mut labels = pod_labels("default", "web", "uid-web");
    labels.insert(labels::CONTAINER_NAME.to_owned(), name.to_owned());
    let id = rt
        .create_container(
            sb,
            ContainerConfig {
                name: name.into(),
                attempt,
                command: vec!["app".into()],
                log_path: format!("{name}/{attempt}.log").into(),
                labels,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    rt.start_container(&id).await.unwrap();
    id
}

async fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    port
}

async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------
// Authentication

#[tokio::test]
async fn only_the_api_server_certificate_is_served() {
    timeout(TEST_TIMEOUT, async {
        let agent = start(Arc::new(FakeRuntime::new())).await;
        assert_eq!(agent.get("/healthz").await, (200, "ok".into()));

        let stranger = agent.pki.stranger.clone();
        let (code, body) = agent.get_as(Some(&stranger), "/healthz").await.unwrap();
        assert_eq!(code, 403);
        let v = status_json(&body);
        assert_eq!(v["reason"], "Forbidden");
        assert_eq!(v["code"], 403);
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("system:node:node-2"),
            "{body}"
        );

        // No client certificate: the handshake (or the first request) fails.
        let r = agent.get_as(None, "/healthz").await;
        assert!(r.is_err(), "{r:?}");

        // A certificate from another CA is refused too.
        let other = pki();
        let r = agent.get_as(Some(&other.apiserver), "/healthz").await;
        assert!(r.is_err(), "{r:?}");
    })
    .await
    .unwrap();
}

#[test]
fn tls_config_reports_bad_input() {
    let p = pki();
    assert!(server::tls_config(&p.ca_pem, &p.serving.0, &p.serving.1).is_ok());
    let e = server::tls_config("", &p.serving.0, &p.serving.1).unwrap_err();
    assert_eq!(e.to_string(), "ca: no certificate found");
    let e = server::tls_config(&p.ca_pem, &p.serving.0, "").unwrap_err();
    assert_eq!(e.to_string(), "key: no private key found");
    // A key that does not belong to the certificate.
    assert!(server::tls_config(&p.ca_pem, &p.serving.0, &p.apiserver.1).is_err());
}

// ---------------------------------------------------------------------------
// Logs

#[tokio::test]
async fn logs_tail_limit_timestamps_and_errors() {
    timeout(TEST_TIMEOUT, async {
        let rt = FakeRuntime::new();
        rt.set_behavior(
            "app",
            FakeBehavior::run_forever().with_output(&["one", "two", "three"]),
        );
        let agent = start(Arc::new(rt.clone())).await;
        let sb = pod(&rt, &agent.logs).await;
        container(&rt, &sb, "app", 0).await;

        let base = "/containerLogs/default/web/app";
        assert_eq!(agent.get(base).await, (200, "one\ntwo\nthree\n".into()));
        assert_eq!(
            agent
                .get(&format!("{base}?podUID=uid-web&tailLines=2"))
                .await,
            (200, "two\nthree\n".into())
        );
        assert_eq!(
            agent.get(&format!("{base}?limitBytes=6")).await,
            (200, "one\ntw".into())
        );
        let (code, body) = agent
            .get(&format!("{base}?timestamps=true&tailLines=1"))
            .await;
        assert_eq!(code, 200);
        let (ts, rest) = body.split_once(' ').unwrap();
        assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{body}");
        assert_eq!(rest, "three\n");
        assert_eq!(
            agent.get(&format!("{base}?sinceSeconds=3600")).await.1,
            "one\ntwo\nthree\n"
        );
        assert_eq!(
            agent
                .get(&format!("{base}?sinceTime=2999-01-01T00:00:00Z"))
                .await,
            (200, "".into())
        );

        // Another pod uid: nothing there.
        let (code, body) = agent.get(&format!("{base}?podUID=other")).await;
        assert_eq!(code, 404, "{body}");
        let (code, body) = agent.get("/containerLogs/default/web/nope").await;
        assert_eq!(code, 404);
        let v = status_json(&body);
        assert_eq!(v["reason"], "NotFound");
        assert_eq!(
            v["message"],
            "container \"nope\" in pod \"web\" is not available"
        );

        let (code, body) = agent.get(&format!("{base}?tailLines=abc")).await;
        assert_eq!(code, 400);
        let v = status_json(&body);
        assert_eq!(v["reason"], "BadRequest");
        assert!(
            v["message"].as_str().unwrap().contains("\"tailLines\""),
            "{body}"
        );

        let (code, body) = agent.get(&format!("{base}?previous=true")).await;
        assert_eq!(code, 400);
        assert_eq!(
            status_json(&body)["message"],
            "previous terminated container \"app\" in pod \"web\" not found"
        );

        let (code, body) = agent.get("/nowhere").await;
        assert_eq!(
            (code, status_json(&body)["reason"].clone()),
            (404, "NotFound".into())
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn logs_previous_and_follow_until_exit() {
    timeout(TEST_TIMEOUT, async {
        let rt = FakeRuntime::new();
        rt.push_behaviors(
            "app",
            [
                FakeBehavior::crash(1).with_output(&["first run"]),
                FakeBehavior::exit_after(Duration::from_millis(1500), 0)
                    .with_output(&["second run"]),
            ],
        );
        let agent = start(Arc::new(rt.clone())).await;
        let sb = pod(&rt, &agent.logs).await;
        let first = container(&rt, &sb, "app", 0).await;
        rt.wait_container(&first).await.unwrap();
        container(&rt, &sb, "app", 1).await;

        let base = "/containerLogs/default/web/app";
        assert_eq!(
            agent.get(&format!("{base}?previous=true")).await,
            (200, "first run\n".into())
        );
        // Follow returns what is there and ends when the container exits.
        let t0 = Instant::now();
        assert_eq!(
            agent.get(&format!("{base}?follow=true")).await,
            (200, "second run\n".into())
        );
        assert!(
            t0.elapsed() >= Duration::from_millis(1000),
            "{:?}",
            t0.elapsed()
        );
        // Following an exited container ends at once.
        let t0 = Instant::now();
        assert_eq!(
            agent.get(&format!("{base}?follow=true&previous=1")).await,
            (200, "first run\n".into())
        );
        assert!(t0.elapsed() < Duration::from_secs(1));
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------
// Exec

fn exec_fake() -> FakeRuntime {
    let rt = FakeRuntime::new();
    rt.set_exec_handler(|_, cmd| FakeExec {
        exit_code: if cmd[0] == "fail" { 3 } else { 0 },
        stdout: format!("out:{}", cmd.join(" ")).into_bytes(),
        stderr: b"err".to_vec(),
        duration: Duration::from_millis(50),
    });
    rt
}

#[tokio::test]
async fn exec_over_websocket_v5() {
    timeout(TEST_TIMEOUT, async {
        let rt = exec_fake();
        let agent = start(Arc::new(rt.clone())).await;
        let sb = pod(&rt, &agent.logs).await;
        container(&rt, &sb, "app", 0).await;

        let c = ExecClient::connect(
            agent.tls().await,
            "/exec/default/web/app?podUID=uid-web&command=fail&command=a+b&stdout=true&stderr=true",
            &["v5.channel.k8s.io", "v4.channel.k8s.io"],
        )
        .await
        .unwrap();
        assert_eq!(c.protocol().name(), Some("v5.channel.k8s.io"));
        let out = c.collect().await.unwrap();
        assert_eq!(out.stdout, b"out:fail a b");
        assert_eq!(out.stderr, b"err");
        let status = out.status.unwrap();
        assert_eq!(status.exit_code(), Some(3));

        let c = ExecClient::connect(
            agent.tls().await,
            "/exec/default/web/app?command=true&stdin=true&stdout=true",
            &["v5.channel.k8s.io"],
        )
        .await
        .unwrap();
        let out = c.collect().await.unwrap();
        assert_eq!(out.stdout, b"out:true");
        assert_eq!(out.status, Some(ExitStatus::Success));
        assert!(rt
            .calls()
            .iter()
            .any(|c| matches!(c, FakeCall::Exec(_, cmd) if cmd == &["fail", "a b"])));

        // Errors before the upgrade are plain HTTP Status responses.
        let e = ExecClient::connect(
            agent.tls().await,
            "/exec/default/web/nope?command=true&stdout=true",
            &["v5.channel.k8s.io"],
        )
        .await
        .unwrap_err();
        match e {
            navarch_stream::Error::UpgradeRefused { status, body } => {
                assert_eq!(status, 404);
                assert_eq!(
                    status_json(&body)["message"],
                    "container not found (\"nope\")"
                );
            }
            e => panic!("{e}"),
        }
        let e = ExecClient::connect(
            agent.tls().await,
            "/exec/default/web/app?stdout=true",
            &["v5.channel.k8s.io"],
        )
        .await
        .unwrap_err();
        match e {
            navarch_stream::Error::UpgradeRefused { status, body } => {
                assert_eq!(status, 400);
                assert!(body.contains("\\\"command\\\""), "{body}");
            }
            e => panic!("{e}"),
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn exec_in_a_stopped_container_is_refused() {
    timeout(TEST_TIMEOUT, async {
        let rt = exec_fake();
        rt.set_behavior("done", FakeBehavior::crash(0));
        let agent = start(Arc::new(rt.clone())).await;
        let sb = pod(&rt, &agent.logs).await;
        let id = container(&rt, &sb, "done", 0).await;
        rt.wait_container(&id).await.unwrap();
        let e = ExecClient::connect(
            agent.tls().await,
            "/exec/default/web/done?command=true&stdout=true",
            &["v5.channel.k8s.io"],
        )
        .await
        .unwrap_err();
        match e {
            navarch_stream::Error::UpgradeRefused { status, body } => {
                assert_eq!(status, 400);
                assert_eq!(
                    status_json(&body)["message"],
                    "container not found (\"done\")"
                );
            }
            e => panic!("{e}"),
        }
    })
    .await
    .unwrap();
}

fn stream_headers(kind: &str) -> SpdyHeaders {
    [("streamtype", kind)].into_iter().collect()
}

#[tokio::test]
async fn exec_over_spdy() {
    timeout(TEST_TIMEOUT, async {
        let rt = exec_fake();
        let agent = start(Arc::new(rt.clone())).await;
        let sb = pod(&rt, &agent.logs).await;
        container(&rt, &sb, "app", 0).await;

        let (conn, chosen) = spdy_connect(
            agent.tls().await,
            "/exec/default/web/app?command=fail&stdin=true&stdout=true&stderr=true",
            &["v4.channel.k8s.io", "v3.channel.k8s.io"],
        )
        .await
        .unwrap();
        assert_eq!(chosen.as_deref(), Some("v4.channel.k8s.io"));
        let error = conn.open_stream(stream_headers("error")).await.unwrap();
        let stdin = conn.open_stream(stream_headers("stdin")).await.unwrap();
        let stdout = conn.open_stream(stream_headers("stdout")).await.unwrap();
        let stderr = conn.open_stream(stream_headers("stderr")).await.unwrap();
        let (mut error_r, _e) = error.io.into_split();
        let (_, mut stdin_w) = stdin.io.into_split();
        let (mut stdout_r, _o) = stdout.io.into_split();
        let (mut stderr_r, _r) = stderr.io.into_split();
        stdin_w.write_all(b"ignored").await.unwrap();
        stdin_w.shutdown().await.unwrap();
        let mut out = Vec::new();
        stdout_r.read_to_end(&mut out).await.unwrap();
        let mut err = Vec::new();
        stderr_r.read_to_end(&mut err).await.unwrap();
        let mut status = Vec::new();
        error_r.read_to_end(&mut status).await.unwrap();
        assert_eq!(out, b"out:fail");
        assert_eq!(err, b"err");
        let status = ExitStatus::parse(&status);
        assert_eq!(status.exit_code(), Some(3));
        conn.close().await.unwrap();
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------
// Port-forward

#[tokio::test]
async fn port_forward_over_websocket_v4() {
    timeout(TEST_TIMEOUT, async {
        let rt = FakeRuntime::new();
        let agent = start(Arc::new(TcpFake(rt.clone()))).await;
        pod(&rt, &agent.logs).await;
        let echo = echo_server().await;
        let refused = closed_port().await;

        let (mut ws, proto) = websocket_connect(
            agent.tls().await,
            &format!("/portForward/default/web?podUID=uid-web&port={echo}&port={refused}"),
            &["v4.channel.k8s.io"],
        )
        .await
        .unwrap();
        assert_eq!(proto.as_deref(), Some("v4.channel.k8s.io"));
        let p = ChannelProtocol::binary(StreamVersion::V4);
        let mut next = async || loop {
            let m = ws.next().await.expect("open").expect("message");
            if let Some(d) = decode_message(p, &m) {
                return d;
            }
        };
        let mut initial = Vec::new();
        for _ in 0..4 {
            initial.push(next().await);
        }
        let le = |port: u16| Bytes::copy_from_slice(&port.to_le_bytes());
        assert_eq!(
            initial,
            vec![
                (0, le(echo)),
                (1, le(echo)),
                (2, le(refused)),
                (3, le(refused))
            ]
        );
        ws.send(encode_message(p, 0, b"ping")).await.unwrap();
        let mut echoed = Vec::new();
        let mut refusal = None;
        while echoed.len() < 4 || refusal.is_none() {
            let m = ws.next().await.expect("open").expect("message");
            let Some((ch, data)) = decode_message(p, &m) else {
                continue;
            };
            match ch {
                0 => echoed.extend_from_slice(&data),
                3 => refusal = Some(String::from_utf8(data.to_vec()).unwrap()),
                _ => panic!("channel {ch}: {data:?}"),
            }
        }
        assert_eq!(echoed, b"ping");
        let refusal = refusal.unwrap();
        assert!(
            refusal.starts_with(&format!("error forwarding port {refused} to pod ")),
            "{refusal}"
        );
        assert!(refusal.contains("uid uid-web: "), "{refusal}");
        let _ = ws.close(None).await;
    })
    .await
    .unwrap();
}

async fn exercise_spdy(client: PortForwardClient, echo: u16, refused: u16) {
    for payload in [&b"hello"[..], &b"again"[..]] {
        let mut conn = client.forward(echo).await.unwrap();
        conn.data.writer.write_all(payload).await.unwrap();
        let mut buf = vec![0; payload.len()];
        conn.data.reader.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, payload);
    }
    let mut conn = client.forward(refused).await.unwrap();
    let mut msg = String::new();
    conn.error.read_to_string(&mut msg).await.unwrap();
    assert!(
        msg.starts_with(&format!("error forwarding port {refused} to pod ")),
        "{msg}"
    );
    client.connection().close().await.unwrap();
}

#[tokio::test]
async fn port_forward_over_spdy_and_spdy_in_websocket() {
    timeout(TEST_TIMEOUT, async {
        let rt = FakeRuntime::new();
        let agent = start(Arc::new(TcpFake(rt.clone()))).await;
        pod(&rt, &agent.logs).await;
        let echo = echo_server().await;
        let refused = closed_port().await;

        let path = format!("/portForward/default/web?ports={echo}");
        let client = PortForwardClient::connect(agent.tls().await, &path)
            .await
            .unwrap();
        exercise_spdy(client, echo, refused).await;
        // kubectl ≥ 1.31 tunnels SPDY in WebSocket, without ports in the URL.
        let client =
            PortForwardClient::connect_tunnel(agent.tls().await, "/portForward/default/web")
                .await
                .unwrap();
        exercise_spdy(client, echo, refused).await;

        // The v4 WebSocket protocol needs its ports up front.
        let e = websocket_connect(
            agent.tls().await,
            "/portForward/default/web",
            &["v4.channel.k8s.io"],
        )
        .await
        .unwrap_err();
        match e {
            navarch_stream::Error::UpgradeRefused { status, body } => {
                assert_eq!(status, 400);
                assert_eq!(
                    status_json(&body)["message"],
                    "query parameter \"port\" is required"
                );
            }
            e => panic!("{e}"),
        }
        let e = PortForwardClient::connect(agent.tls().await, "/portForward/default/ghost")
            .await
            .unwrap_err();
        match e {
            navarch_stream::Error::UpgradeRefused { status, body } => {
                assert_eq!(status, 404);
                assert_eq!(status_json(&body)["message"], "pod does not exist");
            }
            e => panic!("{e}"),
        }
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------
// Shutdown

#[tokio::test]
async fn cancel_ends_follows_and_the_server() {
    timeout(TEST_TIMEOUT, async {
        let rt = FakeRuntime::new();
        rt.set_behavior("app", FakeBehavior::run_forever().with_output(&["up"]));
        let pki = pki();
        let cfg = server::tls_config(&pki.ca_pem, &pki.serving.0, &pki.serving.1).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let served = tokio::spawn(server::serve(
            listener,
            Arc::new(cfg),
            Arc::new(rt.clone()),
            cancel.clone(),
        ));
        let logs = tempfile::tempdir().unwrap();
        let agent = Agent {
            addr,
            pki,
            cancel: cancel.clone(),
            logs: logs.path().to_owned(),
            _logs: logs,
        };
        let sb = pod(&rt, &agent.logs).await;
        container(&rt, &sb, "app", 0).await;
        let follow = tokio::spawn(async move {
            let r = agent
                .get("/containerLogs/default/web/app?follow=true")
                .await;
            (r, agent)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!follow.is_finished());
        let t0 = Instant::now();
        cancel.cancel();
        let ((code, body), _agent) = follow.await.unwrap();
        assert_eq!((code, body.as_str()), (200, "up\n"));
        served.await.unwrap();
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        assert!(TcpStream::connect(addr).await.is_err());
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------------------
// The process runtime: real exec and attach (root and the shim binary).

/// The shim next to the test binary's target directory, if built
/// (`cargo build -p navarch-runtime --bin navarch-runtime-shim`).
fn shim_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let shim = profile_dir.join("navarch-runtime-shim");
    shim.exists().then_some(shim)
}

async fn process_runtime(test: &str) -> Option<(ProcessRuntime, tempfile::TempDir)> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping {test}: needs root for the process runtime");
        return None;
    }
    let Some(shim) = shim_binary() else {
        eprintln!(
            "skipping {test}: build the shim first (cargo build -p navarch-runtime --bin navarch-runtime-shim)"
        );
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = ProcessRuntimeConfig::new(
        dir.path().join("state"),
        ShimCommand {
            program: shim,
            args: vec![],
        },
    );
    config.cgroups.mode = navarch_runtime::cgroup::CgroupMode::Disabled;
    let rt = ProcessRuntime::open(config).await.unwrap();
    Some((rt, dir))
}

#[tokio::test]
async fn process_runtime_exec_attach_and_start_failure() {
    let Some((rt, dir)) = process_runtime("process_runtime_exec_attach_and_start_failure").await
    else {
        return;
    };
    timeout(TEST_TIMEOUT, async {
        let rt = Arc::new(rt);
        let agent = start(rt.clone()).await;
        let sb = pod(rt.as_ref(), dir.path()).await;
        let mut labels = pod_labels("default", "web", "uid-web");
        labels.insert(labels::CONTAINER_NAME.to_owned(), "sh".into());
        let id = rt
            .create_container(
                &sb,
                ContainerConfig {
                    name: "sh".into(),
                    command: vec!["/bin/sh".into(), "-c".into()],
                    args: vec!["while read l; do echo \"got $l\"; done; echo bye >&2".into()],
                    log_path: "sh/0.log".into(),
                    stdin: true,
                    labels,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        rt.start_container(&id).await.unwrap();

        // exec: stdin, stdout, stderr and the exit code.
        let mut c = ExecClient::connect(
            agent.tls().await,
            "/exec/default/web/sh?command=sh&command=-c&command=cat%3B+echo+oops+%3E%262%3B+exit+7&stdin=true&stdout=true&stderr=true",
            &["v5.channel.k8s.io"],
        )
        .await
        .unwrap();
        c.send_stdin(b"typed").await.unwrap();
        c.close_stdin().await.unwrap();
        let out = c.collect().await.unwrap();
        assert_eq!(out.stdout, b"typed");
        assert_eq!(out.stderr, b"oops\n");
        assert_eq!(out.status.unwrap().exit_code(), Some(7));

        // A terminal: resize events reach the pty.
        let mut c = ExecClient::connect(
            agent.tls().await,
            "/exec/default/web/sh?command=sh&command=-c&command=read+x%3B+stty+size&stdin=true&stdout=true&tty=true",
            &["v5.channel.k8s.io"],
        )
        .await
        .unwrap();
        c.resize(navarch_stream::TerminalSize {
            width: 123,
            height: 45,
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.send_stdin(b"go\n").await.unwrap();
        let out = c.collect().await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("45 123"), "{text:?}");
        assert!(out.stderr.is_empty());
        assert_eq!(out.status, Some(ExitStatus::Success));

        // A command that cannot start: the runtime's runc-style message.
        let c = ExecClient::connect(
            agent.tls().await,
            "/exec/default/web/sh?command=nope-not-here&stdout=true",
            &["v5.channel.k8s.io"],
        )
        .await
        .unwrap();
        let out = c.collect().await.unwrap();
        match out.status.unwrap() {
            ExitStatus::Failure { message } => assert_eq!(
                message,
                "Internal error occurred: error executing command in container: failed to exec in container: exec: \"nope-not-here\": executable file not found in $PATH"
            ),
            s => panic!("{s:?}"),
        }

        // attach: the container's own stdin and stdout, then its logs.
        let mut c = ExecClient::connect(
            agent.tls().await,
            "/attach/default/web/sh?stdin=true&stdout=true&stderr=true",
            &["v5.channel.k8s.io"],
        )
        .await
        .unwrap();
        // Give the attach a moment to be connected before typing.
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.send_stdin(b"hello\n").await.unwrap();
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("got hello") {
            match c.next_event().await.unwrap() {
                Some(navarch_stream::client::ExecEvent::Stdout(b)) => seen.extend_from_slice(&b),
                Some(_) => {}
                None => panic!("attach ended early: {seen:?}"),
            }
        }
        drop(c);
        let (code, body) = agent.get("/containerLogs/default/web/sh").await;
        assert_eq!(code, 200);
        assert!(body.contains("got hello\n"), "{body}");
        rt.stop_container(&id, Duration::ZERO).await.unwrap();
    })
    .await
    .unwrap();
}
