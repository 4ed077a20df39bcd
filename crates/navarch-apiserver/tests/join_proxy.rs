//! Node join (agent side against the real server) and the pods/log, exec,
//! attach, portforward proxy against a fake agent speaking HTTPS with the
//! joined serving certificate.

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use navarch_agent::join::{join, Credentials, JoinError, JoinOptions};
use navarch_apiserver::{Config, Running};
use navarch_store::{MemoryStore, Store};
use parking_lot::Mutex;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct Server {
    dir: tempfile::TempDir,
    running: Running,
    admin_token: String,
    ca_pem: String,
    _cancel: tokio_util::sync::DropGuard,
}

async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let cancel = CancellationToken::new();
    let running = navarch_apiserver::start(
        Config::new(dir.path(), "127.0.0.1:0"),
        store,
        cancel.clone(),
    )
    .await
    .unwrap();
    let admin_token = std::fs::read_to_string(dir.path().join("tls/admin-token"))
        .unwrap()
        .trim()
        .to_string();
    let ca_pem = std::fs::read_to_string(dir.path().join("tls/ca.crt")).unwrap();
    Server {
        dir,
        running,
        admin_token,
        ca_pem,
        _cancel: cancel.drop_guard(),
    }
}

impl Server {
    fn join_options(&self, node: &str, data_dir: &std::path::Path) -> JoinOptions {
        JoinOptions {
            server: self.running.url.clone(),
            token: self.running.node_token.clone(),
            node_name: node.to_string(),
            serving_sans: vec!["127.0.0.1".into(), node.to_string()],
            data_dir: data_dir.to_path_buf(),
        }
    }

    async fn admin(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(&self.running.kubeconfig).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        kube::Client::try_from(cfg).unwrap()
    }

    /// One raw HTTP/1.1 exchange over TLS; returns the stream after the
    /// request is written.
    async fn raw(&self, request: &str) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut self.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(self.running.addr)
            .await
            .unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(request.as_bytes()).await.unwrap();
        tls
    }

    /// A request with `Connection: close`; the status and the whole answer.
    async fn call(&self, method: &str, path: &str, extra: &str) -> (u16, String) {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n{extra}\r\n",
            self.admin_token
        );
        let mut s = self.raw(&req).await;
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
            .await
            .expect("answer in time")
            .ok();
        let text = String::from_utf8_lossy(&out).to_string();
        (status_of(&text), text)
    }
}

fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Reads until `needle` shows up; everything read so far.
async fn read_until<S: tokio::io::AsyncRead + Unpin>(s: &mut S, acc: &mut Vec<u8>, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(acc).contains(needle) {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out waiting for {needle:?}, got {:?}",
                    String::from_utf8_lossy(acc)
                )
            })
            .unwrap();
        assert!(
            n > 0,
            "eof before {needle:?}: {:?}",
            String::from_utf8_lossy(acc)
        );
        acc.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn join_gives_a_node_identity_and_reuses_saved_credentials() {
    let s = server().await;
    let agent_dir = tempfile::tempdir().unwrap();
    let opts = s.join_options("node-1", agent_dir.path());
    let creds = join(&opts).await.unwrap();

    // The node's own client certificate: identity system:node:node-1.
    let client = creds.kube_client().await.unwrap();
    let review: Value = client
        .request(
            http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
                .header("content-type", "application/json")
                .body(
                    serde_json::to_vec(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}))
                        .unwrap(),
                )
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        review["status"]["userInfo"]["username"],
        "system:node:node-1"
    );
    assert_eq!(
        review["status"]["userInfo"]["groups"],
        json!(["system:nodes"])
    );
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    assert!(!ns.list(&Default::default()).await.unwrap().items.is_empty());

    // Saved privately, and reused as long as they fit.
    use std::os::unix::fs::PermissionsExt;
    let pki = agent_dir.path().join("pki");
    assert_eq!(
        std::fs::metadata(&pki).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for key in ["client.key", "serving.key"] {
        let mode = std::fs::metadata(pki.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let again = join(&opts).await.unwrap();
    assert_eq!(again.client_cert_pem, creds.client_cert_pem);
    assert_eq!(again.serving_cert_pem, creds.serving_cert_pem);
    // Other serving names: a new join.
    let mut more = opts.clone();
    more.serving_sans.push("10.1.2.3".into());
    let renewed = join(&more).await.unwrap();
    assert_ne!(renewed.serving_cert_pem, creds.serving_cert_pem);
    assert_ne!(renewed.client_cert_pem, creds.client_cert_pem);

    // The CA endpoint is public.
    let (code, text) = s.call("GET", "/cacerts", "").await;
    assert_eq!(code, 200);
    assert!(text.contains(&s.ca_pem));
}

#[tokio::test]
async fn join_refuses_wrong_tokens_and_the_node_token_is_no_api_credential() {
    let s = server().await;
    let agent_dir = tempfile::tempdir().unwrap();
    let mut opts = s.join_options("node-1", agent_dir.path());
    let (hash_part, _) = s.running.node_token.split_once("::node:").unwrap();

    opts.token = format!("{hash_part}::node:wrong");
    let e = join(&opts).await.unwrap_err();
    assert!(matches!(e, JoinError::Rejected), "{e}");
    assert_eq!(e.to_string(), "the server rejected the node token");

    opts.token = format!("N10{}::node:whatever", "0".repeat(64));
    let e = join(&opts).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "the server's CA does not match the token: wrong token or wrong server"
    );

    opts.token = "not-a-token".into();
    assert!(matches!(
        join(&opts).await.unwrap_err(),
        JoinError::MalformedToken
    ));

    let mut down = s.join_options("node-1", agent_dir.path());
    down.server = "https://127.0.0.1:1".into();
    let e = join(&down).await.unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot reach the server at https://127.0.0.1:1/cacerts"),
        "{e}"
    );
    assert!(!agent_dir.path().join("pki/ca.crt").exists());

    // The node token opens the join endpoint only.
    let node_auth = format!("Bearer {}", s.running.node_token);
    let req = format!(
        "GET /api/v1/pods HTTP/1.1\r\nHost: x\r\nAuthorization: {node_auth}\r\nConnection: close\r\n\r\n"
    );
    let mut st = s.raw(&req).await;
    let mut out = Vec::new();
    st.read_to_end(&mut out).await.ok();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&text), 401, "{text}");
    assert!(text.contains("\"kind\":\"Status\""));

    // Join errors are Statuses.
    let body = r#"{"nodeName":"n","clientCsr":"x","servingCsr":"y"}"#;
    let req = format!(
        "POST /navarch/v1/join HTTP/1.1\r\nHost: x\r\nAuthorization: {node_auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut st = s.raw(&req).await;
    let mut out = Vec::new();
    st.read_to_end(&mut out).await.ok();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(status_of(&text), 400, "{text}");
    assert!(
        text.contains("clientCsr is not a valid PEM certificate signing request"),
        "{text}"
    );
    let _ = &s.dir;
}

/// What the fake agent saw.
#[derive(Default)]
struct Seen {
    requests: Vec<(String, String, http::HeaderMap)>,
    client_cns: Vec<String>,
}

/// A fake agent: HTTPS with the joined serving certificate, client
/// certificates required from the cluster CA.
async fn fake_agent(
    creds: &Credentials,
    release: Arc<tokio::sync::Notify>,
) -> (u16, Arc<Mutex<Seen>>) {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut creds.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut creds.serving_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut creds.serving_key_pem.as_bytes())
            .unwrap()
            .unwrap();
    let cfg = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let seen = seen2.clone();
            let release = release.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
                let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
                let cn = cert
                    .subject()
                    .iter_common_name()
                    .next()
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string();
                seen.lock().client_cns.push(cn);
                let svc = hyper::service::service_fn(move |req| {
                    let seen = seen.clone();
                    let release = release.clone();
                    async move { Ok::<_, std::convert::Infallible>(agent_answer(req, seen, release)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (port, seen)
}

type AgentBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn agent_answer(
    mut req: http::Request<Incoming>,
    seen: Arc<Mutex<Seen>>,
    release: Arc<tokio::sync::Notify>,
) -> http::Response<AgentBody> {
    let pq = req.uri().path_and_query().unwrap().to_string();
    seen.lock()
        .requests
        .push((req.method().to_string(), pq.clone(), req.headers().clone()));
    if pq.starts_with("/containerLogs/default/web/b?") {
        let mut r = http::Response::new(
            http_body_util::Full::new(Bytes::from(
                "container \"b\" in pod \"web\" is waiting to start: ContainerCreating",
            ))
            .map_err(|n| match n {})
            .boxed(),
        );
        *r.status_mut() = http::StatusCode::BAD_REQUEST;
        return r;
    }
    if pq.starts_with("/containerLogs/") {
        // Line one at once, line two only when the test says so.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(Frame::data(Bytes::from(format!("line1 {pq}\n")))))
                .await;
            release.notified().await;
            let _ = tx.send(Ok(Frame::data(Bytes::from("line2\n")))).await;
        });
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        return http::Response::new(StreamBody::new(stream).boxed());
    }
    // exec, attach, portForward: upgrade and echo.
    let on = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(up) = on.await else { return };
        let mut io = TokioIo::new(up);
        let mut buf = [0u8; 1024];
        loop {
            let n = match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut out = b"echo:".to_vec();
            out.extend_from_slice(&buf[..n]);
            if io.write_all(&out).await.is_err() {
                return;
            }
        }
    });
    let mut r = http::Response::new(http_body_util::Empty::new().map_err(|n| match n {}).boxed());
    *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("connection", "Upgrade".parse().unwrap());
    h.insert("upgrade", "SPDY/3.1".parse().unwrap());
    h.insert(
        "x-stream-protocol-version",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    r
}

async fn register_node(admin: &kube::Client, name: &str, port: Option<u16>) {
    let nodes: Api<Node> = Api::all(admin.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let mut status = json!({"addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": "127.0.0.1"}]});
    if let Some(p) = port {
        status["daemonEndpoints"] = json!({"kubeletEndpoint": {"Port": p}});
    }
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .unwrap();
}

async fn create_pod(
    admin: &kube::Client,
    name: &str,
    node: Option<&str>,
    containers: &[&str],
) -> String {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let cs: Vec<Value> = containers
        .iter()
        .map(|c| json!({"name": c, "image": "busybox"}))
        .collect();
    let mut spec = json!({"containers": cs});
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    let pod: Pod =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    let p = pods.create(&PostParams::default(), &pod).await.unwrap();
    p.metadata.uid.unwrap()
}

#[tokio::test]
async fn pod_streams_are_proxied_to_the_nodes_agent() {
    let s = server().await;
    let agent_dir = tempfile::tempdir().unwrap();
    let creds = join(&s.join_options("node-1", agent_dir.path()))
        .await
        .unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let (port, seen) = fake_agent(&creds, release.clone()).await;
    let admin = s.admin().await;
    register_node(&admin, "node-1", Some(port)).await;
    let uid = create_pod(&admin, "one", Some("node-1"), &["c"]).await;
    create_pod(&admin, "web", Some("node-1"), &["a", "b"]).await;
    create_pod(&admin, "pending", None, &["c"]).await;

    // (a) Logs stream through as the agent writes them, with the query and podUID.
    let req = format!(
        "GET /api/v1/namespaces/default/pods/one/log?follow=true&tailLines=3&timestamps=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        s.admin_token
    );
    let mut st = s.raw(&req).await;
    let mut acc = Vec::new();
    read_until(&mut st, &mut acc, "line1").await;
    let text = String::from_utf8_lossy(&acc).to_string();
    assert_eq!(status_of(&text), 200, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{text}"
    );
    assert!(!text.contains("line2"));
    read_until(&mut st, &mut acc, "\n").await;
    let text = String::from_utf8_lossy(&acc).to_string();
    assert!(
        text.contains(&format!("line1 /containerLogs/default/one/c?podUID={uid}&follow=true&tailLines=3&timestamps=true")),
        "{text}"
    );
    release.notify_one();
    read_until(&mut st, &mut acc, "line2").await;
    {
        let seen = seen.lock();
        assert!(seen
            .client_cns
            .iter()
            .all(|cn| cn == "kube-apiserver-kubelet-client"));
        let (_, _, headers) = &seen.requests[0];
        assert!(headers.get("authorization").is_none());
    }

    // The agent's errors come back as Statuses with its code and message.
    let (code, text) = s
        .call(
            "GET",
            "/api/v1/namespaces/default/pods/web/log?container=b",
            "",
        )
        .await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("\"kind\":\"Status\""), "{text}");
    assert!(
        text.contains(r#"container \"b\" in pod \"web\" is waiting to start: ContainerCreating"#),
        "{text}"
    );

    // (b) An upgrade: 101 with the agent's headers, then bytes both ways.
    let req = format!(
        "POST /api/v1/namespaces/default/pods/one/exec?command=sh&command=-c&command=echo%20hi&stdout=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\nX-Stream-Protocol-Version: v3.channel.k8s.io\r\n\r\n",
        s.admin_token
    );
    let mut st = s.raw(&req).await;
    let mut acc = Vec::new();
    read_until(&mut st, &mut acc, "\r\n\r\n").await;
    let head = String::from_utf8_lossy(&acc).to_ascii_lowercase();
    assert_eq!(status_of(&head), 101, "{head}");
    assert!(head.contains("upgrade: spdy/3.1"), "{head}");
    assert!(
        head.contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );
    st.write_all(b"ping").await.unwrap();
    let mut acc = Vec::new();
    read_until(&mut st, &mut acc, "echo:ping").await;
    st.write_all(b"pong").await.unwrap();
    read_until(&mut st, &mut acc, "echo:pong").await;
    {
        let seen = seen.lock();
        let (method, pq, headers) = seen.requests.last().unwrap();
        assert_eq!(method, "POST");
        assert_eq!(
            pq,
            &format!("/exec/default/one/c?podUID={uid}&command=sh&command=-c&command=echo+hi&stdout=true")
        );
        let versions: Vec<_> = headers
            .get_all("x-stream-protocol-version")
            .iter()
            .collect();
        assert_eq!(versions.len(), 2);
        assert!(headers.get("authorization").is_none());
        assert_eq!(headers.get("upgrade").unwrap(), "SPDY/3.1");
    }
    drop(st);

    // Port-forward: WebSocket-style GET upgrade to /portForward/{ns}/{pod}.
    let req = format!(
        "GET /api/v1/namespaces/default/pods/one/portforward?ports=80 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io\r\n\r\n",
        s.admin_token
    );
    let mut st = s.raw(&req).await;
    let mut acc = Vec::new();
    read_until(&mut st, &mut acc, "\r\n\r\n").await;
    assert_eq!(status_of(&String::from_utf8_lossy(&acc)), 101);
    {
        let seen = seen.lock();
        let (method, pq, headers) = seen.requests.last().unwrap();
        assert_eq!(
            (method.as_str(), pq.as_str()),
            (
                "GET",
                format!("/portForward/default/one?podUID={uid}&ports=80").as_str()
            )
        );
        assert_eq!(
            headers.get("sec-websocket-protocol").unwrap(),
            "SPDY/3.1+portforward.k8s.io"
        );
        assert_eq!(
            headers.get("sec-websocket-key").unwrap(),
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
    }
    drop(st);

    // (c) Container resolution, hosts and upgrades, as upstream.
    let cases = [
        (
            "GET",
            "/api/v1/namespaces/default/pods/web/log",
            "",
            400,
            "a container name must be specified for pod web, choose one of: [a b]",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/web/log?container=x",
            "",
            400,
            "container x is not valid for pod web",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/web/exec?container=x&command=ls",
            "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n",
            400,
            "container x is not valid for pod web",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/pending/exec?command=ls",
            "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n",
            400,
            "pod pending does not have a host assigned",
        ),
        (
            "POST",
            "/api/v1/namespaces/default/pods/one/exec?command=ls",
            "",
            400,
            "Upgrade request required",
        ),
        (
            "PUT",
            "/api/v1/namespaces/default/pods/one/log",
            "",
            405,
            "MethodNotAllowed",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/pods/nope/log",
            "",
            404,
            "pods \\\"nope\\\" not found",
        ),
    ];
    for (method, path, extra, want_code, want) in cases {
        let (code, text) = s.call(method, path, extra).await;
        assert_eq!(code, want_code, "{method} {path}: {text}");
        assert!(text.contains(want), "{method} {path}: {text}");
        assert!(text.contains("\"kind\":\"Status\""), "{text}");
    }
    // A pod not yet on a node has no logs.
    let (code, text) = s
        .call("GET", "/api/v1/namespaces/default/pods/pending/log", "")
        .await;
    assert_eq!(code, 200, "{text}");

    // (d) An agent that is down, or a node without an agent endpoint: 503.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    register_node(&admin, "node-2", Some(closed)).await;
    register_node(&admin, "node-3", None).await;
    create_pod(&admin, "two", Some("node-2"), &["c"]).await;
    create_pod(&admin, "three", Some("node-3"), &["c"]).await;
    let (code, text) = s
        .call("GET", "/api/v1/namespaces/default/pods/two/log", "")
        .await;
    assert_eq!(code, 503, "{text}");
    assert!(
        text.contains(&format!(
            "error dialing backend: dial tcp 127.0.0.1:{closed}"
        )),
        "{text}"
    );
    let (code, text) = s
        .call(
            "POST",
            "/api/v1/namespaces/default/pods/two/exec?command=ls",
            "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n",
        )
        .await;
    assert_eq!(code, 503, "{text}");
    let (code, text) = s
        .call("GET", "/api/v1/namespaces/default/pods/three/log", "")
        .await;
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("no agent endpoint for node node-3"), "{text}");
}
