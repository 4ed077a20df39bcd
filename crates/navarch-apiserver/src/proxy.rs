//! `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`: proxied to
//! the agent of the pod's node over HTTPS, as the API server proxies to the
//! kubelet upstream.
//!
//! The agent is found through its Node: the first `InternalIP` (else
//! `Hostname`) address and `status.daemonEndpoints.kubeletEndpoint.Port`. The
//! server trusts only the cluster CA for the agent's serving certificate and
//! presents the `apiserver-kubelet-client` certificate.
//!
//! Agent paths (the contract with `navarch_agent::server`):
//! - `GET /containerLogs/{ns}/{pod}/{container}?podUID=…&<client query>`
//! - `/exec/{ns}/{pod}/{container}?podUID=…&<client query>`
//! - `/attach/{ns}/{pod}/{container}?podUID=…&<client query>`
//! - `/portForward/{ns}/{pod}?podUID=…&<client query>`
//!
//! Logs stream through unbuffered. Exec, attach and port-forward must be
//! HTTP/1.1 upgrade requests: the upgrade headers go to the agent, and on its
//! `101` the two upgraded connections are spliced byte for byte, so every
//! streaming protocol (SPDY/3.1, WebSocket channel protocols, SPDY in
//! WebSocket) passes through.

use crate::http::{full, json_response, Body};
use crate::pki::Pki;
use crate::ApiServer;
use anyhow::Context;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use navarch_api::{registry, ApiError, Subresource};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long dialing an agent (TCP and TLS) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// After one direction of a spliced stream ends, how long the other may
/// still drain before both are closed.
const SPLICE_LINGER: Duration = Duration::from_secs(1);
/// Most of an agent's error body kept for the `Status` message.
const MAX_ERROR_BODY: usize = 50_000;

/// Dials agents with the API server's client certificate.
pub(crate) struct Dialer {
    connector: tokio_rustls::TlsConnector,
}

impl Dialer {
    pub(crate) fn new(pki: &Pki) -> anyhow::Result<Dialer> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut pki.ca_pem.as_bytes()) {
            roots.add(c?)?;
        }
        let certs: Vec<CertificateDer<'static>> =
            rustls_pemfile::certs(&mut pki.kubelet_client_cert_pem.as_bytes())
                .collect::<Result<_, _>>()?;
        let key: PrivateKeyDer<'static> =
            rustls_pemfile::private_key(&mut pki.kubelet_client_key_pem.as_bytes())?
                .context("no private key in tls/apiserver-kubelet-client.key")?;
        let mut cfg = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Dialer {
            connector: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
        })
    }

    async fn connect(
        &self,
        agent: &Agent,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ApiError> {
        let dial = async {
            let tcp = TcpStream::connect((agent.host.as_str(), agent.port))
                .await
                .map_err(|e| format!("dial tcp {}: {e}", agent.authority()))?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(agent.host.clone())
                .map_err(|e| format!("invalid agent address {:?}: {e}", agent.host))?;
            self.connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("tls handshake with {}: {e}", agent.authority()))
        };
        match tokio::time::timeout(DIAL_TIMEOUT, dial).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(ApiError::unavailable(format!("error dialing backend: {e}"))),
            Err(_) => Err(ApiError::unavailable(format!(
                "error dialing backend: dial tcp {}: i/o timeout",
                agent.authority()
            ))),
        }
    }
}

/// Where a node's agent listens.
struct Agent {
    node: String,
    host: String,
    port: u16,
}

impl Agent {
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The agent endpoint a Node advertises.
    fn of_node(node: &Value) -> Result<Agent, ApiError> {
        let name = node["metadata"]["name"].as_str().unwrap_or("").to_string();
        let none = || ApiError::unavailable(format!("no agent endpoint for node {name}"));
        let addresses = node["status"]["addresses"].as_array();
        let find = |ty: &str| {
            addresses
                .into_iter()
                .flatten()
                .find(|a| a["type"] == ty)
                .and_then(|a| a["address"].as_str())
                .filter(|a| !a.is_empty())
                .map(str::to_string)
        };
        let host = find("InternalIP")
            .or_else(|| find("Hostname"))
            .ok_or_else(none)?;
        let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
            .as_u64()
            .filter(|p| (1..=65535).contains(p))
            .ok_or_else(none)? as u16;
        Ok(Agent {
            node: name,
            host,
            port,
        })
    }
}

/// The container a request is for: the one named, or the pod's only one.
pub(crate) fn resolve_container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or("");
    let spec = &pod["spec"];
    let names = |field: &str| -> Vec<String> {
        spec[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    };
    let containers = names("containers");
    match requested.filter(|c| !c.is_empty()) {
        Some(c) => {
            let known = containers.iter().any(|n| n == c)
                || names("initContainers").iter().any(|n| n == c)
                || names("ephemeralContainers").iter().any(|n| n == c);
            if known {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {pod_name}"
                )))
            }
        }
        None => match containers.len() {
            1 => Ok(containers[0].clone()),
            0 => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {pod_name}"
            ))),
            _ => {
                // Upstream lists every container: init, regular, ephemeral.
                let mut all = names("initContainers");
                all.extend(containers);
                all.extend(names("ephemeralContainers"));
                Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                    all.join(" ")
                )))
            }
        },
    }
}

/// Whether the request asks for a connection upgrade (`Connection: upgrade`).
fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Headers never forwarded to the agent: credentials and hop-by-hop headers
/// other than the upgrade ones.
fn forwarded(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "authorization"
            | "proxy-authorization"
            | "host"
            | "content-length"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "keep-alive"
            | "proxy-connection"
    )
}

/// The agent request path and query: `podUID` then the client's parameters
/// (less `container`, which is in the path).
fn agent_path(
    sub: Subresource,
    pod: &Value,
    container: &str,
    client_query: Option<&str>,
) -> String {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let uid = pod["metadata"]["uid"].as_str().unwrap_or("");
    let path = match sub {
        Subresource::Log => format!("/containerLogs/{ns}/{name}/{container}"),
        Subresource::Exec => format!("/exec/{ns}/{name}/{container}"),
        Subresource::Attach => format!("/attach/{ns}/{name}/{container}"),
        _ => format!("/portForward/{ns}/{name}"),
    };
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("podUID", uid);
    for (k, v) in form_urlencoded::parse(client_query.unwrap_or("").as_bytes()) {
        if !matches!(
            &*k,
            "" | "container" | "podUID" | "insecureSkipTLSVerifyBackend"
        ) {
            q.append_pair(&k, &v);
        }
    }
    format!("{path}?{}", q.finish())
}

/// A `Status` for an agent's error answer: its own `Status` if it sent one,
/// else one with its status code and body as the message.
fn agent_error(code: StatusCode, body: &[u8]) -> Response<Body> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if v["kind"] == "Status" {
            return json_response(code, &v);
        }
    }
    let reason = match code.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    };
    let text = String::from_utf8_lossy(body).trim().to_string();
    let message = if text.is_empty() {
        format!("the agent answered {code}")
    } else {
        text
    };
    crate::http::error_response(&ApiError::new(code.as_u16(), reason, message))
}

async fn read_error_body(body: Incoming) -> Bytes {
    match Limited::new(body, MAX_ERROR_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    }
}

impl ApiServer {
    /// Serves `pods/{log,exec,attach,portforward}` for `pod` (already read).
    pub(crate) async fn pod_stream(
        self: Arc<Self>,
        req: Request<Incoming>,
        sub: Subresource,
        pod: Value,
        container: Option<&str>,
    ) -> Result<Response<Body>, ApiError> {
        let method = req.method().clone();
        let allowed = match sub {
            Subresource::Log => method == Method::GET,
            _ => method == Method::GET || method == Method::POST,
        };
        if !allowed {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method})"
            )));
        }
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
        let container = match sub {
            Subresource::PortForward => String::new(),
            _ => resolve_container(&pod, container)?,
        };
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("").to_string();
        if node.is_empty() {
            if sub == Subresource::Log {
                // Upstream: a pod not yet on a node has no logs.
                return Ok(text_response(StatusCode::OK, full(Bytes::new())));
            }
            return Err(ApiError::bad_request(format!(
                "pod {name} does not have a host assigned"
            )));
        }
        if sub != Subresource::Log && !is_upgrade(req.headers()) {
            return Err(ApiError::bad_request("Upgrade request required"));
        }
        let nodes = registry::lookup("", "v1", "nodes").expect("nodes are served");
        let node_obj = self.get_cached(nodes, None, &node).await?;
        let agent = Agent::of_node(&crate::handlers::to_view(nodes, node_obj.value()))?;
        let path = agent_path(sub, &pod, &container, req.uri().query());
        let io = self.dialer.connect(&agent).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| ApiError::unavailable(format!("error dialing backend: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        let unreachable = |e: hyper::Error| {
            ApiError::unavailable(format!(
                "error trying to reach the agent of node {}: {e}",
                agent.node
            ))
        };

        if sub == Subresource::Log {
            let out = Request::get(&path)
                .header(header::HOST, agent.authority())
                .body(Empty::<Bytes>::new())
                .map_err(|e| ApiError::internal(format!("building the agent request: {e}")))?;
            let resp = sender.send_request(out).await.map_err(unreachable)?;
            let status = resp.status();
            if !status.is_success() {
                return Ok(agent_error(
                    status,
                    &read_error_body(resp.into_body()).await,
                ));
            }
            let body = resp
                .into_body()
                .map_err(std::io::Error::other)
                .boxed_unsync();
            return Ok(text_response(status, body));
        }

        let mut req = req;
        let client_upgrade = hyper::upgrade::on(&mut req);
        let mut out = Request::builder().method(method).uri(&path);
        for (k, v) in req.headers() {
            if forwarded(k) {
                out = out.header(k, v);
            }
        }
        let out = out
            .header(header::HOST, agent.authority())
            .body(Empty::<Bytes>::new())
            .map_err(|e| ApiError::internal(format!("building the agent request: {e}")))?;
        let resp = sender.send_request(out).await.map_err(unreachable)?;
        let status = resp.status();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            if status.is_success() {
                let (parts, body) = resp.into_parts();
                let body = body.map_err(std::io::Error::other).boxed_unsync();
                return Ok(Response::from_parts(parts, body));
            }
            return Ok(agent_error(
                status,
                &read_error_body(resp.into_body()).await,
            ));
        }
        let mut answer = Response::new(full(Bytes::new()));
        *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *answer.headers_mut() = resp.headers().clone();
        let agent_upgrade = hyper::upgrade::on(resp);
        let node = agent.node;
        tokio::spawn(async move {
            let (client, agent) = tokio::join!(client_upgrade, agent_upgrade);
            match (client, agent) {
                (Ok(client), Ok(agent)) => splice(TokioIo::new(client), TokioIo::new(agent)).await,
                (Err(e), _) | (_, Err(e)) => {
                    tracing::debug!(%node, error = %e, "stream upgrade failed")
                }
            }
        });
        Ok(answer)
    }
}

fn text_response(code: StatusCode, body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

/// Copies bytes both ways until one direction ends, lets the other drain
/// for `SPLICE_LINGER`, then closes both.
async fn splice<A, B>(a: A, b: B)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let up = async {
        let _ = tokio::io::copy(&mut ar, &mut bw).await;
        let _ = bw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut br, &mut aw).await;
        let _ = aw.shutdown().await;
    };
    tokio::pin!(up, down);
    tokio::select! {
        _ = &mut up => { let _ = tokio::time::timeout(SPLICE_LINGER, &mut down).await; }
        _ = &mut down => { let _ = tokio::time::timeout(SPLICE_LINGER, &mut up).await; }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u-1"},
               "spec": {"initContainers": [{"name": "init"}], "containers": [{"name": "a"}, {"name": "b"}],
                        "ephemeralContainers": [{"name": "dbg"}]}})
    }

    #[test]
    fn containers_resolve_as_upstream() {
        let p = pod();
        assert_eq!(resolve_container(&p, Some("b")).unwrap(), "b");
        assert_eq!(resolve_container(&p, Some("init")).unwrap(), "init");
        assert_eq!(resolve_container(&p, Some("dbg")).unwrap(), "dbg");
        assert_eq!(
            resolve_container(&p, None).unwrap_err().message,
            "a container name must be specified for pod web, choose one of: [init a b dbg]"
        );
        assert_eq!(
            resolve_container(&p, Some("x")).unwrap_err().message,
            "container x is not valid for pod web"
        );
        let one = json!({"metadata": {"name": "one"}, "spec": {"containers": [{"name": "c"}]}});
        assert_eq!(resolve_container(&one, Some("")).unwrap(), "c");
    }

    #[test]
    fn agent_paths_carry_the_pod_uid_and_client_query() {
        let p = pod();
        assert_eq!(
            agent_path(
                Subresource::Log,
                &p,
                "a",
                Some("container=a&follow=true&tailLines=5")
            ),
            "/containerLogs/ns/web/a?podUID=u-1&follow=true&tailLines=5"
        );
        assert_eq!(
            agent_path(
                Subresource::Exec,
                &p,
                "a",
                Some("command=sh&command=-c&command=echo+hi&stdout=true&podUID=evil")
            ),
            "/exec/ns/web/a?podUID=u-1&command=sh&command=-c&command=echo+hi&stdout=true"
        );
        assert_eq!(
            agent_path(Subresource::PortForward, &p, "", Some("ports=80")),
            "/portForward/ns/web?podUID=u-1&ports=80"
        );
    }

    #[test]
    fn agents_are_found_through_their_node() {
        let n = json!({"metadata": {"name": "n1"}, "status": {
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}});
        let a = Agent::of_node(&n).unwrap();
        assert_eq!(a.authority(), "10.0.0.5:10250");
        let n = json!({"metadata": {"name": "n1"}, "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.5"}]}});
        let e = Agent::of_node(&n).err().unwrap();
        assert_eq!(
            (e.code, e.message.as_str()),
            (503, "no agent endpoint for node n1")
        );
    }
}
