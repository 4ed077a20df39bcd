//! The agent's HTTPS port: container logs, exec, attach and port-forward
//! for the API server.
//!
//! The API server proxies `pods/log`, `pods/exec`, `pods/attach` and
//! `pods/portforward` here (forwarding the client's upgrade headers
//! unchanged and splicing bytes after the 101), so this speaks the kubelet's
//! paths and the Kubernetes streaming protocols of [`navarch_stream`].
//! Only a client certificate signed by the cluster CA with the common name
//! [`crate::APISERVER_CLIENT_CN`] is served.
//!
//! Routes:
//!
//! | route | what |
//! |---|---|
//! | `GET /healthz` | `ok` |
//! | `GET /containerLogs/{ns}/{pod}/{container}` | the container's log (`follow`, `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`, `previous`, `limitBytes`, `stream`) |
//! | `GET\|POST /exec/{ns}/{pod}[/{uid}]/{container}` | exec (`command` repeated, `stdin`, `stdout`, `stderr`, `tty`) |
//! | `GET\|POST /attach/{ns}/{pod}[/{uid}]/{container}` | attach |
//! | `GET\|POST /portForward/{ns}/{pod}[/{uid}]` | port-forward (`port` repeated, or `ports`) |
//!
//! Every route takes an optional `podUID` query parameter that restricts
//! the lookup to that pod instance. Containers and sandboxes are found in
//! the runtime by the [`crate::labels`] the agent puts on them. Errors are
//! Kubernetes `Status` objects.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use navarch_runtime::cri_log::{LogOptions, LogReader};
use navarch_runtime::{
    ContainerFilter, ContainerId, ContainerState, ContainerStatus, PodSandboxStatus, Runtime,
    SandboxFilter, SandboxId, SandboxState, StreamOptions, StreamSession,
};
use navarch_stream::{
    serve_exec, serve_port_forward, upgrade_response, upgraded, ExecStreams, ExitStatus,
    Negotiated, StreamKind,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{labels, APISERVER_CLIENT_CN};

/// Why the agent's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A PEM input could not be read.
    #[error("{what}: invalid PEM: {source}")]
    Pem {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A PEM input holds no certificate.
    #[error("{what}: no certificate found")]
    NoCertificate { what: &'static str },
    /// The key PEM holds no private key.
    #[error("key: no private key found")]
    NoPrivateKey,
    /// A CA certificate was refused as a trust anchor.
    #[error("ca: {0}")]
    Ca(#[source] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// rustls refused the configuration (for example a key that does not
    /// match the certificate).
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
}

/// rustls config for the agent's port: serves `cert_pem`/`key_pem`,
/// requires a client certificate verified against `ca_pem`, ALPN http/1.1.
pub fn tls_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ServerConfig, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = pem_certs(cert_pem, "certificate")?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|source| ServerError::Pem {
            what: "key",
            source,
        })?
        .ok_or(ServerError::NoPrivateKey)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(ca_pem, "ca")? {
        roots.add(c).map_err(ServerError::Ca)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

fn pem_certs(
    pem: &str,
    what: &'static str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ServerError> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ServerError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(ServerError::NoCertificate { what });
    }
    Ok(certs)
}

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connections and sessions get to end after `cancel`.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// After an exec'd process exited, how long its output may take to drain
/// (a background child may keep the pipes open forever).
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

struct Shared {
    runtime: Arc<dyn Runtime>,
    cancel: CancellationToken,
    sessions: TaskTracker,
}

/// Serves until `cancel`; every request must present a client certificate
/// whose CN is [`APISERVER_CLIENT_CN`] (else 403 with a Kubernetes Status
/// JSON body). Connection errors are logged, never fatal. After `cancel`,
/// open connections and streaming sessions get a few seconds to end.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    runtime: Arc<dyn Runtime>,
    cancel: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let shared = Arc::new(Shared {
        runtime,
        cancel: cancel.clone(),
        sessions: TaskTracker::new(),
    });
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off a little.
                    tracing::warn!(error = %e, "agent server: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        connections.spawn(serve_connection(
            shared.clone(),
            acceptor.clone(),
            tcp,
            peer,
        ));
    }
    connections.close();
    shared.sessions.close();
    let done = async {
        connections.wait().await;
        shared.sessions.wait().await;
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, done).await.is_err() {
        tracing::debug!("agent server: connections still open at shutdown");
    }
}

async fn serve_connection(
    shared: Arc<Shared>,
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "agent server: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "agent server: TLS handshake timed out");
            return;
        }
    };
    let refusal: Option<Arc<str>> = authorize(tls.get_ref().1.peer_certificates()).map(Into::into);
    if let Some(why) = &refusal {
        tracing::warn!(%peer, reason = %why, "agent server: refusing client");
    }
    let svc_shared = shared.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let shared = svc_shared.clone();
        let refusal = refusal.clone();
        async move {
            let resp = match refusal {
                Some(why) => status_response(StatusCode::FORBIDDEN, "Forbidden", &why),
                None => route(shared, req).await,
            };
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "agent server: connection ended with error");
            }
        }
        _ = shared.cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

/// `None` when the client certificate is the API server's, else why not.
fn authorize(certs: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> Option<String> {
    let Some(leaf) = certs.and_then(|c| c.first()) else {
        return Some("forbidden: no client certificate".into());
    };
    let cn = x509_parser::parse_x509_certificate(leaf.as_ref())
        .ok()
        .and_then(|(_, cert)| {
            cert.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_owned)
        });
    match cn {
        Some(cn) if cn == APISERVER_CLIENT_CN => None,
        Some(cn) => Some(format!(
            "forbidden: user \"{cn}\" is not allowed to use the node agent, only {APISERVER_CLIENT_CN:?} is"
        )),
        None => Some("forbidden: client certificate has no common name".into()),
    }
}

// ---------------------------------------------------------------------------
// Routing and responses

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|s| percent_decode(s, false))
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let method = req.method().clone();
    let get_or_post = method == Method::GET || method == Method::POST;
    match segs.as_slice() {
        ["healthz"] if method == Method::GET => text_response("ok"),
        ["containerLogs", ns, pod, container] if method == Method::GET => {
            let target = Target::new(ns, pod, None, Some(container), &req);
            container_logs(&shared, target).await
        }
        [op @ ("exec" | "attach"), ns, pod, container] if get_or_post => {
            let kind = stream_kind(op);
            let target = Target::new(ns, pod, None, Some(container), &req);
            exec_or_attach(&shared, kind, target, req).await
        }
        [op @ ("exec" | "attach"), ns, pod, uid, container] if get_or_post => {
            let kind = stream_kind(op);
            let target = Target::new(ns, pod, Some(uid), Some(container), &req);
            exec_or_attach(&shared, kind, target, req).await
        }
        ["portForward", ns, pod] if get_or_post => {
            let target = Target::new(ns, pod, None, None, &req);
            port_forward(&shared, target, req).await
        }
        ["portForward", ns, pod, uid] if get_or_post => {
            let target = Target::new(ns, pod, Some(uid), None, &req);
            port_forward(&shared, target, req).await
        }
        ["healthz"]
        | ["containerLogs", _, _, _]
        | ["exec" | "attach", _, _, _]
        | ["exec" | "attach", _, _, _, _]
        | ["portForward", _, _]
        | ["portForward", _, _, _] => status_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("method {method} is not allowed on {path}"),
        ),
        _ => status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        ),
    }
}

fn stream_kind(op: &str) -> StreamKind {
    if op == "exec" {
        StreamKind::Exec
    } else {
        StreamKind::Attach
    }
}

fn full_body(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn text_response(s: &'static str) -> Response<Body> {
    let mut r = Response::new(full_body(s));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// A Kubernetes `Status` failure with `code`, `reason` and `message`.
fn status_response(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    let mut r = Response::new(full_body(body.to_string()));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn bad_request(message: &str) -> Response<Body> {
    status_response(StatusCode::BAD_REQUEST, "BadRequest", message)
}

fn not_found(message: &str) -> Response<Body> {
    status_response(StatusCode::NOT_FOUND, "NotFound", message)
}

fn internal_error(message: &str) -> Response<Body> {
    status_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        &format!("Internal error occurred: {message}"),
    )
}

/// Decodes `%XX` escapes (and `+` as a space in query strings); invalid
/// escapes are kept as they are.
fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request's query parameters, in order.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Query {
        Query(
            q.unwrap_or("")
                .split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (percent_decode(k, true), percent_decode(v, true))
                })
                .collect(),
        )
    }

    /// The first value of `key` (as Go's `url.Values.Get`).
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A boolean parameter the way Kubernetes converts query values: absent
    /// is false, `0`, `f`, `false`, `n`, `no` (any case) are false,
    /// anything else is true.
    fn flag(&self, key: &str) -> bool {
        match self.get(key) {
            None => false,
            Some(v) => !["0", "f", "false", "n", "no"]
                .iter()
                .any(|f| v.eq_ignore_ascii_case(f)),
        }
    }

    /// An integer parameter; a malformed value is a 400 naming it.
    fn int(&self, key: &str) -> Result<Option<i64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                v.trim().parse::<i64>().map(Some).map_err(|_| {
                    format!("invalid query parameter \"{key}\": {v:?} is not an integer")
                })
            }
        }
    }
}

/// Which pod (and container) a request is about.
struct Target {
    namespace: String,
    pod: String,
    uid: Option<String>,
    container: String,
    query: Query,
}

impl Target {
    fn new<B>(
        ns: &str,
        pod: &str,
        uid: Option<&str>,
        container: Option<&str>,
        req: &Request<B>,
    ) -> Target {
        let query = Query::parse(req.uri().query());
        let uid = uid
            .map(str::to_owned)
            .or_else(|| query.get("podUID").map(str::to_owned))
            .filter(|u| !u.is_empty());
        Target {
            namespace: ns.to_owned(),
            pod: pod.to_owned(),
            uid,
            container: container.unwrap_or_default().to_owned(),
            query,
        }
    }

    fn pod_labels(&self) -> std::collections::BTreeMap<String, String> {
        let mut l = std::collections::BTreeMap::new();
        l.insert(labels::POD_NAMESPACE.to_owned(), self.namespace.clone());
        l.insert(labels::POD_NAME.to_owned(), self.pod.clone());
        if let Some(uid) = &self.uid {
            l.insert(labels::POD_UID.to_owned(), uid.clone());
        }
        l
    }

    /// Every runtime instance of the container, any state.
    async fn containers(&self, rt: &dyn Runtime) -> Result<Vec<ContainerStatus>, Response<Body>> {
        let mut labels = self.pod_labels();
        labels.insert(labels::CONTAINER_NAME.to_owned(), self.container.clone());
        rt.list_containers(ContainerFilter {
            labels,
            ..Default::default()
        })
        .await
        .map_err(|e| internal_error(&format!("listing containers: {e}")))
    }

    /// The pod's sandbox: a ready one before others, the newest first.
    async fn sandbox(&self, rt: &dyn Runtime) -> Result<Option<PodSandboxStatus>, Response<Body>> {
        let sandboxes = rt
            .list_pod_sandboxes(SandboxFilter {
                labels: self.pod_labels(),
                ..Default::default()
            })
            .await
            .map_err(|e| internal_error(&format!("listing pod sandboxes: {e}")))?;
        Ok(sandboxes
            .into_iter()
            .max_by_key(|s| (s.state == SandboxState::Ready, s.created_at)))
    }
}

/// The current instance of a container: the running one with the highest
/// attempt, else the one with the highest attempt.
fn current_instance(cs: &[ContainerStatus]) -> Option<&ContainerStatus> {
    cs.iter()
        .max_by_key(|c| (c.state == ContainerState::Running, c.attempt, c.created_at))
}

/// The previous instance: the exited one with the highest attempt below
/// the current one's.
fn previous_instance<'a>(
    cs: &'a [ContainerStatus],
    current: &ContainerStatus,
) -> Option<&'a ContainerStatus> {
    cs.iter()
        .filter(|c| c.state == ContainerState::Exited && c.attempt < current.attempt)
        .max_by_key(|c| (c.attempt, c.created_at))
}

// ---------------------------------------------------------------------------
// Logs

/// The log options of a `containerLogs` query; the error names the bad
/// parameter.
fn log_options(q: &Query) -> Result<LogOptions, String> {
    let mut opts = LogOptions {
        follow: q.flag("follow"),
        timestamps: q.flag("timestamps"),
        ..Default::default()
    };
    if let Some(n) = q.int("tailLines")? {
        if n < 0 {
            return Err(format!(
                "tailLines: Invalid value: {n}: must be greater than or equal to 0"
            ));
        }
        opts.tail_lines = Some(n as u64);
    }
    if let Some(n) = q.int("limitBytes")? {
        if n < 1 {
            return Err(format!(
                "limitBytes: Invalid value: {n}: must be greater than 0"
            ));
        }
        opts.limit_bytes = Some(n as u64);
    }
    let since_seconds = q.int("sinceSeconds")?;
    let since_time = q.get("sinceTime").filter(|s| !s.is_empty());
    if since_seconds.is_some() && since_time.is_some() {
        return Err("at most one of `sinceTime` or `sinceSeconds` may be specified".into());
    }
    if let Some(n) = since_seconds {
        if n < 1 {
            return Err(format!(
                "sinceSeconds: Invalid value: {n}: must be greater than 0"
            ));
        }
        let ago = jiff::SignedDuration::from_secs(n);
        opts.since = Some(Timestamp::now().checked_sub(ago).unwrap_or(Timestamp::MIN));
    }
    if let Some(t) = since_time {
        let t = t.parse::<Timestamp>().map_err(|_| {
            format!("invalid query parameter \"sinceTime\": {t:?} is not an RFC 3339 time")
        })?;
        opts.since = Some(t);
    }
    match q.get("stream") {
        None | Some("") | Some("All") => {}
        Some("Stdout") => opts.stdout = true,
        Some("Stderr") => opts.stderr = true,
        Some(other) => {
            return Err(format!(
                "stream: Unsupported value: {other:?}: supported values: \"All\", \"Stderr\", \"Stdout\""
            ))
        }
    }
    Ok(opts)
}

async fn container_logs(shared: &Shared, t: Target) -> Response<Body> {
    let opts = match log_options(&t.query) {
        Ok(o) => o,
        Err(msg) => return bad_request(&msg),
    };
    let previous = t.query.flag("previous");
    let containers = match t.containers(shared.runtime.as_ref()).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(current) = current_instance(&containers) else {
        return not_found(&format!(
            "container {:?} in pod {:?} is not available",
            t.container, t.pod
        ));
    };
    let target = if previous {
        match previous_instance(&containers, current) {
            Some(p) => p,
            None => {
                return bad_request(&format!(
                    "previous terminated container {:?} in pod {:?} not found",
                    t.container, t.pod
                ))
            }
        }
    } else {
        current
    };
    let stop: BoxFuture<'static, ()> = if opts.follow {
        let rt = shared.runtime.clone();
        let cancel = shared.cancel.clone();
        let id = target.id.clone();
        async move {
            tokio::select! {
                _ = rt.wait_container(&id) => {}
                _ = cancel.cancelled() => {}
            }
        }
        .boxed()
    } else {
        futures::future::ready(()).boxed()
    };
    let path = target.log_path.clone();
    // Counting lines for `tailLines` reads the files: off the async threads.
    let reader = match tokio::task::spawn_blocking(move || LogReader::new(path, opts, stop)).await {
        Ok(r) => r,
        Err(e) => return internal_error(&format!("opening the log: {e}")),
    };
    let body = StreamBody::new(reader.into_stream().map_ok(Frame::data)).boxed_unsync();
    let mut r = Response::new(body);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

// ---------------------------------------------------------------------------
// Upgraded connections

/// An upgraded connection that is shut down when dropped, so that the TLS
/// session ends with a `close_notify` (the streaming sessions just drop
/// their connection when done, which TLS clients report as an unexpected
/// EOF).
struct CloseNotify<T: tokio::io::AsyncWrite + Unpin + Send + 'static> {
    inner: Option<T>,
}

/// How long the final shutdown of a dropped connection may take.
const CLOSE_NOTIFY_TIMEOUT: Duration = Duration::from_secs(2);

impl<T: tokio::io::AsyncWrite + Unpin + Send + 'static> CloseNotify<T> {
    fn new(inner: T) -> Self {
        CloseNotify { inner: Some(inner) }
    }

    fn get(&mut self) -> Pin<&mut T> {
        Pin::new(self.inner.as_mut().expect("present until dropped"))
    }
}

impl<T: tokio::io::AsyncWrite + Unpin + Send + 'static> Drop for CloseNotify<T> {
    fn drop(&mut self) {
        let (Some(mut inner), Ok(rt)) = (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        rt.spawn(async move {
            let _ = tokio::time::timeout(CLOSE_NOTIFY_TIMEOUT, inner.shutdown()).await;
        });
    }
}

impl<T> tokio::io::AsyncRead for CloseNotify<T>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.get().poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin + Send + 'static> tokio::io::AsyncWrite for CloseNotify<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.get().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.is_write_vectored())
    }
}

// ---------------------------------------------------------------------------
// Exec and attach

async fn exec_or_attach(
    shared: &Arc<Shared>,
    kind: StreamKind,
    t: Target,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let command = t.query.all("command");
    if kind == StreamKind::Exec && command.is_empty() {
        return bad_request("required query parameter \"command\" is missing");
    }
    let containers = match t.containers(shared.runtime.as_ref()).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    // As the kubelet, which only looks at running containers.
    let not_found_msg = format!("container not found ({:?})", t.container);
    let Some(current) = current_instance(&containers) else {
        return not_found(&not_found_msg);
    };
    if current.state != ContainerState::Running {
        return bad_request(&not_found_msg);
    }
    let id = current.id.clone();
    let (resp, negotiated) = match upgrade_response(&req, kind) {
        Ok(ok) => ok,
        Err(e) => return status_for_upgrade_error(&e),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let shared2 = shared.clone();
    shared.sessions.spawn(async move {
        let io = match upgraded(on_upgrade).await {
            Ok(io) => io,
            Err(e) => {
                tracing::debug!(error = %e, "exec: upgrade failed");
                return;
            }
        };
        let streams = match serve_exec(CloseNotify::new(io), &negotiated).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "exec: session setup failed");
                return;
            }
        };
        run_session(&shared2, kind, &id, command, streams, &negotiated).await;
    });
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, full_body(Bytes::new()))
}

fn status_for_upgrade_error(e: &navarch_stream::UpgradeError) -> Response<Body> {
    let code = e.status_code();
    let reason = if code == StatusCode::FORBIDDEN {
        "Forbidden"
    } else {
        "BadRequest"
    };
    status_response(code, reason, &e.to_string())
}

async fn run_session(
    shared: &Shared,
    kind: StreamKind,
    id: &ContainerId,
    command: Vec<String>,
    mut streams: ExecStreams,
    negotiated: &Negotiated,
) {
    let opts = StreamOptions {
        stdin: streams.stdin.is_some(),
        stdout: streams.stdout.is_some(),
        stderr: streams.stderr.is_some(),
        tty: streams.tty || negotiated.exec.tty,
        size: None,
    };
    let rt = shared.runtime.as_ref();
    let started = match kind {
        StreamKind::Exec => rt.exec(id, command.clone(), opts).await,
        _ => rt.attach(id, opts).await,
    };
    let session = match started {
        Ok(s) => s,
        Err(e) => {
            let message = match (&e, kind) {
                (navarch_runtime::Error::ExecFailed { failure, .. }, _) => format!(
                    "Internal error occurred: error executing command in container: failed to exec in container: {failure}"
                ),
                (_, StreamKind::Exec) => format!(
                    "Internal error occurred: error executing command in container: {e}"
                ),
                _ => format!("Internal error occurred: error attaching to container: {e}"),
            };
            tracing::info!(container = %id, error = %e, "exec/attach could not start");
            let _ = streams.finish(ExitStatus::Failure { message }).await;
            return;
        }
    };
    let status = tokio::select! {
        s = pump(kind, &command, &mut streams, session) => s,
        _ = shared.cancel.cancelled() => ExitStatus::Failure {
            message: "Internal error occurred: the node agent is shutting down".into(),
        },
    };
    if let Err(e) = streams.finish(status).await {
        tracing::debug!(container = %id, error = %e, "exec/attach: could not send the status");
    }
}

/// Copies the streams of an exec/attach session until it ends; returns the
/// status to report.
async fn pump(
    kind: StreamKind,
    command: &[String],
    streams: &mut ExecStreams,
    mut session: StreamSession,
) -> ExitStatus {
    let mut tasks = tokio::task::JoinSet::new();
    if let (Some(mut from), Some(mut to)) = (streams.stdin.take(), session.stdin.take()) {
        tasks.spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut to).await;
            let _ = to.shutdown().await;
        });
    }
    if let Some(tx) = session.resize.take() {
        let mut sizes = std::mem::take(&mut streams.resize);
        tasks.spawn(async move {
            while let Some(s) = sizes.recv().await {
                let size = navarch_runtime::TerminalSize {
                    width: s.width,
                    height: s.height,
                };
                if tx.send(size).await.is_err() {
                    return;
                }
            }
        });
    }
    let mut outputs = tokio::task::JoinSet::new();
    for (from, to) in [
        (session.stdout.take(), streams.stdout.take()),
        (session.stderr.take(), streams.stderr.take()),
    ] {
        if let (Some(mut from), Some(mut to)) = (from, to) {
            outputs.spawn(async move {
                let _ = tokio::io::copy(&mut from, &mut to).await;
                let _ = to.shutdown().await;
            });
        }
    }
    let has_outputs = !outputs.is_empty();
    let outputs_done = async { while outputs.join_next().await.is_some() {} };
    tokio::pin!(outputs_done);
    let status = match kind {
        StreamKind::Exec => {
            let exit = session.exit.await;
            // Whatever the process wrote before exiting still goes out.
            let _ = tokio::time::timeout(OUTPUT_DRAIN, &mut outputs_done).await;
            match exit {
                Ok(code) => ExitStatus::from_code(code, command),
                Err(e) => ExitStatus::Failure {
                    message: format!(
                        "Internal error occurred: error executing command in container: {e}"
                    ),
                },
            }
        }
        // As the kubelet: an attach that ends (container exited, or its
        // output closed) is a success.
        _ => {
            if has_outputs {
                tokio::select! {
                    _ = session.exit => {
                        let _ = tokio::time::timeout(OUTPUT_DRAIN, &mut outputs_done).await;
                    }
                    _ = &mut outputs_done => {}
                }
            } else {
                let _ = session.exit.await;
            }
            ExitStatus::Success
        }
    };
    tasks.abort_all();
    status
}

// ---------------------------------------------------------------------------
// Port-forward

async fn port_forward(
    shared: &Arc<Shared>,
    t: Target,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let sandbox = match t.sandbox(shared.runtime.as_ref()).await {
        Ok(Some(s)) => s,
        Ok(None) => return not_found("pod does not exist"),
        Err(r) => return r,
    };
    // The kubelet's parameter is `port`, the API's `ports`; navarch-stream
    // reads `ports` (and needs them only for the WebSocket v4 protocol, not
    // for SPDY or SPDY tunnelled in WebSocket).
    let mut ports = t.query.all("port");
    ports.extend(t.query.all("ports"));
    let mut query = String::new();
    for p in &ports {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str("ports=");
        query.push_str(
            &p.replace('%', "%25")
                .replace('&', "%26")
                .replace('#', "%23"),
        );
    }
    let mut negotiation = Request::new(());
    *negotiation.method_mut() = req.method().clone();
    *negotiation.headers_mut() = req.headers().clone();
    *negotiation.uri_mut() = match format!("/portForward?{query}").parse() {
        Ok(u) => u,
        Err(_) => return bad_request("query parameter \"port\" is malformed"),
    };
    let (resp, negotiated) = match upgrade_response(&negotiation, StreamKind::PortForward) {
        Ok(ok) => ok,
        Err(e) => {
            let msg = e.to_string().replace("\"ports\"", "\"port\"");
            return status_response(
                e.status_code(),
                if e.status_code() == StatusCode::FORBIDDEN {
                    "Forbidden"
                } else {
                    "BadRequest"
                },
                &msg,
            );
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let shared2 = shared.clone();
    shared.sessions.spawn(async move {
        let io = match upgraded(on_upgrade).await {
            Ok(io) => io,
            Err(e) => {
                tracing::debug!(error = %e, "port-forward: upgrade failed");
                return;
            }
        };
        let server = match serve_port_forward(CloseNotify::new(io), &negotiated).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "port-forward: session setup failed");
                return;
            }
        };
        forward(&shared2, sandbox, server).await;
    });
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, full_body(Bytes::new()))
}

async fn forward(
    shared: &Shared,
    sandbox: PodSandboxStatus,
    mut server: navarch_stream::PortForwardServer,
) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let req = tokio::select! {
            r = server.next() => match r {
                Some(r) => r,
                None => break,
            },
            _ = shared.cancel.cancelled() => {
                tasks.abort_all();
                server.close().await;
                return;
            }
        };
        let rt = shared.runtime.clone();
        let id: SandboxId = sandbox.id.clone();
        let uid = sandbox.config.uid.clone();
        tasks.spawn(async move {
            let port = req.port;
            match rt.port_forward(&id, port).await {
                Ok(stream) => {
                    if let Err(e) = req.splice(stream).await {
                        tracing::debug!(sandbox = %id, port, error = %e, "port-forward: connection ended with error");
                    }
                }
                Err(e) => {
                    // The kubelet's wording, with the runtime's reason.
                    let msg = format!("error forwarding port {port} to pod {id}, uid {uid}: {e}");
                    tracing::debug!(sandbox = %id, port, error = %e, "port-forward: cannot connect");
                    req.fail(&msg).await;
                }
            }
        });
    }
    tokio::select! {
        _ = async { while tasks.join_next().await.is_some() {} } => {}
        _ = shared.cancel.cancelled() => tasks.abort_all(),
    }
    server.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing_follows_kubernetes() {
        let q = Query::parse(Some(
            "command=sh&command=-c&command=echo+a%20b%26&follow&previous=false&timestamps=1&x=%zz",
        ));
        assert_eq!(q.all("command"), vec!["sh", "-c", "echo a b&"]);
        assert!(q.flag("follow"));
        assert!(!q.flag("previous"));
        assert!(q.flag("timestamps"));
        assert!(!q.flag("absent"));
        assert_eq!(q.get("x"), Some("%zz"));
        assert_eq!(percent_decode("a%2", false), "a%2");
        assert_eq!(percent_decode("%41%", false), "A%");
    }

    #[test]
    fn bad_log_options_name_the_parameter() {
        for (q, want) in [
            ("tailLines=abc", "tailLines"),
            ("tailLines=-1", "tailLines"),
            ("limitBytes=0", "limitBytes"),
            ("sinceSeconds=0", "sinceSeconds"),
            (
                "sinceSeconds=5&sinceTime=2024-01-01T00:00:00Z",
                "sinceSeconds",
            ),
            ("sinceTime=yesterday", "sinceTime"),
            ("stream=both", "stream"),
        ] {
            let err = log_options(&Query::parse(Some(q))).unwrap_err();
            assert!(err.contains(want), "{q}: {err}");
        }
        let o = log_options(&Query::parse(Some(
            "tailLines=3&limitBytes=10&sinceTime=2024-01-01T00:00:00Z&follow=true&stream=Stderr",
        )))
        .unwrap();
        assert_eq!(o.tail_lines, Some(3));
        assert_eq!(o.limit_bytes, Some(10));
        assert!(o.follow && o.stderr && !o.stdout);
        assert_eq!(o.since, Some("2024-01-01T00:00:00Z".parse().unwrap()));
    }
}
