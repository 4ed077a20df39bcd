//! The Kubernetes API server of Navarch.
//!
//! Requests enter through `http` (TLS, authentication, routing), become
//! calls to the verbs in `handlers` (admission, defaulting, validation,
//! optimistic concurrency against the store), and are read back through the
//! `cache` (lists and watches from memory).

// `ApiError` carries a full `Status` (message, details, causes); it is
// the cold path of every handler, and boxing it would add noise at each of
// hundreds of call sites for no measurable gain.
#![allow(clippy::result_large_err)]

pub mod auth;
mod builtin;
pub mod cache;
pub mod discovery;
pub mod eviction;
mod handlers;
mod http;
mod ips;
pub mod join;
pub mod pki;
mod proxy;
mod table;

pub use handlers::{DeleteOptions, FieldValidation, WriteOptions, Written};

use anyhow::{Context, Result};
use auth::{AllowAuthenticated, Authorizer, TokenAuthenticator, User};
use bytes::Bytes;
use cache::Cache;
use hyper_util::rt::{TokioExecutor, TokioIo};
use navarch_store::Store;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How to run the API server.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// `HOST:PORT` to listen on.
    pub listen: String,
    /// Extra names and addresses for the serving certificate.
    pub tls_sans: Vec<String>,
    /// Also write the admin kubeconfig here.
    pub write_kubeconfig: Option<PathBuf>,
    /// History kept for watches and paginated lists.
    pub history: Duration,
    /// `tolerationSeconds` of the `node.kubernetes.io/not-ready` and
    /// `node.kubernetes.io/unreachable` NoExecute tolerations admission
    /// adds to pods without one (kube-apiserver's
    /// `--default-not-ready-toleration-seconds` and
    /// `--default-unreachable-toleration-seconds`, both 300).
    pub default_toleration_seconds: DefaultTolerations,
}

/// See [`Config::default_toleration_seconds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultTolerations {
    pub not_ready: i64,
    pub unreachable: i64,
}

impl Default for DefaultTolerations {
    fn default() -> Self {
        DefaultTolerations {
            not_ready: 300,
            unreachable: 300,
        }
    }
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>, listen: impl Into<String>) -> Config {
        Config {
            data_dir: data_dir.into(),
            listen: listen.into(),
            tls_sans: Vec::new(),
            write_kubeconfig: None,
            history: Duration::from_secs(300),
            default_toleration_seconds: DefaultTolerations::default(),
        }
    }
}

/// Shared state of the API server.
pub struct ApiServer {
    pub(crate) store: Arc<dyn Store>,
    pub cache: Arc<Cache>,
    pub(crate) tokens: TokenAuthenticator,
    pub(crate) authorizer: Box<dyn Authorizer>,
    pub(crate) ips: ips::Allocator,
    pub(crate) ready: AtomicBool,
    pub(crate) discovery_cache: [OnceLock<Bytes>; 4],
    pub(crate) joiner: join::Joiner,
    pub(crate) dialer: proxy::Dialer,
    pub(crate) default_tolerations: DefaultTolerations,
}

/// A started server.
pub struct Running {
    pub addr: SocketAddr,
    pub server: Arc<ApiServer>,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The agent join token.
    pub node_token: String,
    /// Server URL clients use (`https://127.0.0.1:PORT` for a wildcard listen).
    pub url: String,
}

fn client_url(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    if ip.contains(':') {
        format!("https://[{ip}]:{}", addr.port())
    } else {
        format!("https://{ip}:{}", addr.port())
    }
}

/// Starts the server: PKI, cache, built-in objects, then the HTTPS listener.
/// Returns once it is ready (`/readyz` answers 200).
pub async fn start(
    config: Config,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> Result<Running> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let sans = pki::default_sans(&addr.to_string(), &config.tls_sans);
    let pki = pki::load_or_create(&config.data_dir, &sans)?;
    let url = client_url(addr);
    let kubeconfig = config.data_dir.join("kubeconfig.yaml");
    pki::write_kubeconfig(&kubeconfig, &url, &pki)?;
    if let Some(extra) = &config.write_kubeconfig {
        pki::write_kubeconfig(extra, &url, &pki)?;
    }

    let mut tokens = TokenAuthenticator::default();
    tokens.add(
        &pki.admin_token,
        User {
            name: "admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        },
    );

    let cache = Cache::start(store.clone())
        .await
        .context("loading the watch cache")?;
    let server = Arc::new(ApiServer {
        store: store.clone(),
        cache,
        tokens,
        authorizer: Box::new(AllowAuthenticated),
        ips: ips::Allocator::default(),
        ready: AtomicBool::new(false),
        discovery_cache: Default::default(),
        joiner: join::Joiner::new(&pki),
        dialer: proxy::Dialer::new(&pki).context("building the agent client TLS config")?,
        default_tolerations: config.default_toleration_seconds,
    });

    let advertise = match addr.ip() {
        ip if ip.is_unspecified() || ip.is_loopback() => pki::local_ips()
            .into_iter()
            .find(|i| !i.is_loopback())
            .map(|i| i.to_string())
            .unwrap_or_else(|| "127.0.0.1".into()),
        ip => ip.to_string(),
    };
    builtin::bootstrap(&server, &advertise, addr.port()).await;
    spawn_compactor(store.clone(), config.history, shutdown.clone());

    let tls = tls_acceptor(&pki)?;
    let srv = server.clone();
    let token = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = token.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => { tracing::warn!(error = %e, "accept failed"); tokio::time::sleep(Duration::from_millis(50)).await; continue; }
                },
            };
            let _ = tcp.set_nodelay(true);
            let tls = tls.clone();
            let srv = srv.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let stream =
                    match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                let cert_user = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| auth::user_from_certificate(c));
                let svc = hyper::service::service_fn(move |req| {
                    let srv = srv.clone();
                    let cu = cert_user.clone();
                    async move { Ok::<_, std::convert::Infallible>(srv.serve_request(req, cu).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                tokio::select! {
                    r = conn => { if let Err(e) = r { tracing::debug!(%peer, error = %e, "connection ended with error"); } }
                    _ = token.cancelled() => {}
                }
            });
        }
    });
    server
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    tracing::info!(%addr, kubeconfig = %kubeconfig.display(), "API server ready");
    Ok(Running {
        addr,
        server,
        kubeconfig,
        node_token: pki.node_token.clone(),
        url,
    })
}

fn tls_acceptor(pki: &pki::Pki) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut pki.cert_pem.as_bytes()).collect::<Result<_, _>>()?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pki.key_pem.as_bytes())?
        .context("no private key in tls/server.key")?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pki.ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Compacts store history older than `keep`, once a minute.
fn spawn_compactor(store: Arc<dyn Store>, keep: Duration, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut samples: std::collections::VecDeque<(tokio::time::Instant, i64)> =
            Default::default();
        let mut tick = tokio::time::interval(Duration::from_secs(60).min(keep));
        loop {
            tokio::select! { _ = shutdown.cancelled() => return, _ = tick.tick() => {} }
            let now = tokio::time::Instant::now();
            samples.push_back((now, store.current_revision()));
            let mut target = None;
            while let Some((t, rev)) = samples.front().copied() {
                if now.duration_since(t) >= keep {
                    target = Some(rev);
                    samples.pop_front();
                } else {
                    break;
                }
            }
            if let Some(rev) = target {
                if rev > store.compacted_revision() {
                    if let Err(e) = store.compact(rev).await {
                        tracing::warn!(error = %e, revision = rev, "compaction failed");
                    }
                }
            }
        }
    });
}
