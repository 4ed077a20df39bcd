//! Upgrade negotiation: pick a transport and protocol from the client's offer and build the
//! `101 Switching Protocols` response.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Empty;

use crate::error::UpgradeError;

/// `Sec-WebSocket-Protocol` header name.
pub const SEC_WEBSOCKET_PROTOCOL: &str = "sec-websocket-protocol";
/// `Sec-WebSocket-Key` header name.
pub const SEC_WEBSOCKET_KEY: &str = "sec-websocket-key";
/// `Sec-WebSocket-Accept` header name.
pub const SEC_WEBSOCKET_ACCEPT: &str = "sec-websocket-accept";
/// `Sec-WebSocket-Version` header name.
pub const SEC_WEBSOCKET_VERSION: &str = "sec-websocket-version";
/// Header carrying the offered / chosen protocol of a SPDY upgrade.
pub const X_STREAM_PROTOCOL_VERSION: &str = "x-stream-protocol-version";
/// `Upgrade` token of SPDY.
pub const SPDY_31: &str = "SPDY/3.1";
/// SPDY protocol of port-forward.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// WebSocket subprotocol that tunnels SPDY port-forward (kubectl ≥ 1.31).
pub const SPDY_TUNNEL_PORT_FORWARD: &str = "SPDY/3.1+portforward.k8s.io";

/// What the request is for: the subresource of the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// `pods/exec`.
    Exec,
    /// `pods/attach` (same protocols as exec).
    Attach,
    /// `pods/portforward`.
    PortForward,
}

/// Generation of the remote-command stream protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StreamVersion {
    /// `channel.k8s.io`: error channel carries a plain message.
    V1,
    /// `v2.channel.k8s.io`.
    V2,
    /// `v3.channel.k8s.io`: adds the resize stream.
    V3,
    /// `v4.channel.k8s.io`: error channel carries a JSON `Status` with the exit code.
    V4,
    /// `v5.channel.k8s.io`: adds the close signal (WebSocket channel 255).
    V5,
}

impl StreamVersion {
    /// The protocol name as used in `X-Stream-Protocol-Version` and `Sec-WebSocket-Protocol`.
    pub fn name(self) -> &'static str {
        match self {
            StreamVersion::V1 => "channel.k8s.io",
            StreamVersion::V2 => "v2.channel.k8s.io",
            StreamVersion::V3 => "v3.channel.k8s.io",
            StreamVersion::V4 => "v4.channel.k8s.io",
            StreamVersion::V5 => "v5.channel.k8s.io",
        }
    }

    /// Whether the error channel carries a JSON `Status` (v4+) instead of plain text.
    pub fn json_status(self) -> bool {
        self >= StreamVersion::V4
    }

    /// Whether the client sends terminal sizes on a resize stream (v3+ on SPDY; always on WebSocket).
    pub fn spdy_resize(self) -> bool {
        self >= StreamVersion::V3
    }
}

/// A WebSocket channel protocol: a stream version plus the framing of each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelProtocol {
    /// Protocol generation.
    pub version: StreamVersion,
    /// Text messages: an ASCII channel digit, then base64 (the `base64.channel.k8s.io` family).
    pub base64: bool,
    /// Whether the client named this protocol; `false` when it offered none at all
    /// (then the response carries no `Sec-WebSocket-Protocol`).
    pub named: bool,
}

impl ChannelProtocol {
    /// Binary framing of the given version.
    pub fn binary(version: StreamVersion) -> Self {
        ChannelProtocol {
            version,
            base64: false,
            named: true,
        }
    }

    /// Parse a `Sec-WebSocket-Protocol` value chosen by a server.
    pub fn from_name(name: &str) -> Option<Self> {
        WS_EXEC_PREFERENCE
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|&(_, version, base64)| ChannelProtocol {
                version,
                base64,
                named: true,
            })
    }

    /// `Sec-WebSocket-Protocol` value, if any.
    pub fn name(&self) -> Option<&'static str> {
        if !self.named {
            return None;
        }
        Some(match (self.version, self.base64) {
            (v, false) => v.name(),
            (StreamVersion::V4 | StreamVersion::V5, true) => "v4.base64.channel.k8s.io",
            (_, true) => "base64.channel.k8s.io",
        })
    }
}

/// The transport chosen for an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket carrying a Kubernetes channel protocol.
    WebSocket(ChannelProtocol),
    /// SPDY/3.1 directly on the upgraded connection. For exec/attach, the negotiated
    /// remote-command version; `None` for port-forward.
    Spdy(Option<StreamVersion>),
    /// SPDY/3.1 tunnelled in binary WebSocket messages (kubectl ≥ 1.31 port-forward).
    SpdyOverWebSocket,
}

/// Which standard streams an exec/attach session carries (from the request's query).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecOptions {
    /// `stdin=true`.
    pub stdin: bool,
    /// `stdout=true`.
    pub stdout: bool,
    /// `stderr=true` (forced off with a TTY, as the kubelet does).
    pub stderr: bool,
    /// `tty=true`.
    pub tty: bool,
}

impl ExecOptions {
    /// Parse `stdin`, `stdout`, `stderr` and `tty` from a query string (`true` or `1`).
    pub fn from_query(query: &str) -> Result<Self, UpgradeError> {
        let mut o = ExecOptions::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let on = v == "true" || v == "1";
            match &*k {
                "stdin" => o.stdin = on,
                "stdout" => o.stdout = on,
                "stderr" => o.stderr = on,
                "tty" => o.tty = on,
                _ => {}
            }
        }
        if o.tty {
            o.stderr = false;
        }
        if !o.stdin && !o.stdout && !o.stderr {
            return Err(UpgradeError::BadQuery(
                "you must specify at least 1 of stdin, stdout, stderr".into(),
            ));
        }
        Ok(o)
    }
}

/// Parse the `ports` query parameter(s) of a port-forward request (`ports=80,8080&ports=443`).
pub fn ports_from_query(query: &str) -> Result<Vec<u16>, UpgradeError> {
    let mut ports = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k != "ports" {
            continue;
        }
        if v.is_empty() {
            return Err(UpgradeError::BadQuery(
                "query parameter \"ports\" cannot be empty".into(),
            ));
        }
        for p in v.split(',') {
            match p.trim().parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                Ok(_) => return Err(UpgradeError::BadQuery(format!("port \"{p}\" must be > 0"))),
                Err(_) => {
                    return Err(UpgradeError::BadQuery(format!(
                        "unable to parse \"{p}\" as a port"
                    )))
                }
            }
        }
    }
    Ok(ports)
}

/// Result of a successful negotiation: everything needed to serve the upgraded connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// exec, attach or port-forward.
    pub kind: StreamKind,
    /// Transport and protocol.
    pub transport: Transport,
    /// Streams of an exec/attach session.
    pub exec: ExecOptions,
    /// Ports of a WebSocket (v4) port-forward, in channel order. Empty for SPDY, where each
    /// stream names its port.
    pub ports: Vec<u16>,
}

impl Negotiated {
    /// The protocol name put in the 101 response, if any.
    pub fn protocol(&self) -> Option<&'static str> {
        match self.transport {
            Transport::WebSocket(p) => p.name(),
            Transport::Spdy(Some(v)) => Some(v.name()),
            Transport::Spdy(None) => Some(PORT_FORWARD_PROTOCOL),
            Transport::SpdyOverWebSocket => Some(SPDY_TUNNEL_PORT_FORWARD),
        }
    }
}

/// Values of a possibly repeated, comma-separated header.
fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn header_has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether the request asks for a WebSocket upgrade.
pub fn is_websocket_request<B>(req: &Request<B>) -> bool {
    header_has_token(req.headers(), UPGRADE, "websocket")
}

/// Whether the request asks for a SPDY/3.1 upgrade.
pub fn is_spdy_request<B>(req: &Request<B>) -> bool {
    header_has_token(req.headers(), UPGRADE, SPDY_31)
}

/// Exec/attach WebSocket protocols, most preferred first.
const WS_EXEC_PREFERENCE: [(&str, StreamVersion, bool); 7] = [
    ("v5.channel.k8s.io", StreamVersion::V5, false),
    ("v4.channel.k8s.io", StreamVersion::V4, false),
    ("v4.base64.channel.k8s.io", StreamVersion::V4, true),
    ("v3.channel.k8s.io", StreamVersion::V3, false),
    ("v2.channel.k8s.io", StreamVersion::V2, false),
    ("channel.k8s.io", StreamVersion::V1, false),
    ("base64.channel.k8s.io", StreamVersion::V1, true),
];

/// Port-forward WebSocket protocols, most preferred first. v5 is deliberately absent:
/// clients offering v5 and v4 for port-forward speak v4 semantics.
const WS_PORT_FORWARD_PREFERENCE: [(&str, StreamVersion, bool); 2] = [
    ("v4.channel.k8s.io", StreamVersion::V4, false),
    ("v4.base64.channel.k8s.io", StreamVersion::V4, true),
];

const SPDY_EXEC_PREFERENCE: [StreamVersion; 5] = [
    StreamVersion::V5,
    StreamVersion::V4,
    StreamVersion::V3,
    StreamVersion::V2,
    StreamVersion::V1,
];

/// Choose a transport for `req` and build the 101 response.
///
/// Reply with the response, then serve the connection from `hyper::upgrade::on(req)`
/// with [`crate::serve_exec`] or [`crate::serve_port_forward`]. On error, answer with
/// [`UpgradeError::status_code`] (any non-101 makes kubectl fall back to SPDY).
pub fn upgrade_response<B>(
    req: &Request<B>,
    kind: StreamKind,
) -> Result<(Response<Empty<Bytes>>, Negotiated), UpgradeError> {
    let headers = req.headers();
    if !header_has_token(headers, CONNECTION, "upgrade") {
        return Err(UpgradeError::NotAnUpgrade);
    }
    let query = req.uri().query().unwrap_or("");
    let exec = match kind {
        StreamKind::PortForward => ExecOptions::default(),
        StreamKind::Exec | StreamKind::Attach => ExecOptions::from_query(query)?,
    };

    if is_websocket_request(req) {
        if req.method() != Method::GET {
            return Err(UpgradeError::BadHeader {
                header: "method",
                problem: "must be GET for a WebSocket upgrade",
            });
        }
        if headers
            .get(SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err(UpgradeError::BadHeader {
                header: "Sec-WebSocket-Version",
                problem: "must be 13",
            });
        }
        let key = headers
            .get(SEC_WEBSOCKET_KEY)
            .ok_or(UpgradeError::BadHeader {
                header: "Sec-WebSocket-Key",
                problem: "is missing",
            })?;
        let offered = header_list(headers, SEC_WEBSOCKET_PROTOCOL);
        let transport = choose_websocket(kind, &offered)?;
        let mut ports = Vec::new();
        if transport != Transport::SpdyOverWebSocket && kind == StreamKind::PortForward {
            ports = ports_from_query(query)?;
            if ports.is_empty() {
                return Err(UpgradeError::BadQuery(
                    "query parameter \"ports\" is required".into(),
                ));
            }
        }
        let negotiated = Negotiated {
            kind,
            transport,
            exec,
            ports,
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let mut resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(UPGRADE, "websocket")
            .header(CONNECTION, "Upgrade")
            .header(SEC_WEBSOCKET_ACCEPT, accept);
        if let Some(p) = negotiated.protocol() {
            resp = resp.header(SEC_WEBSOCKET_PROTOCOL, p);
        }
        let resp = resp.body(Empty::new()).expect("valid static response");
        return Ok((resp, negotiated));
    }

    if is_spdy_request(req) {
        let offered = header_list(headers, X_STREAM_PROTOCOL_VERSION);
        let version = match kind {
            StreamKind::PortForward => {
                if !offered.iter().any(|p| p == PORT_FORWARD_PROTOCOL) {
                    return Err(UpgradeError::NoCommonProtocol {
                        offered,
                        supported: vec![PORT_FORWARD_PROTOCOL],
                    });
                }
                None
            }
            StreamKind::Exec | StreamKind::Attach => {
                if offered.is_empty() {
                    // Old clients that do not negotiate speak v1; the reply then names no protocol.
                    Some(StreamVersion::V1)
                } else {
                    Some(
                        SPDY_EXEC_PREFERENCE
                            .into_iter()
                            .find(|v| offered.iter().any(|o| o == v.name()))
                            .ok_or_else(|| UpgradeError::NoCommonProtocol {
                                offered: offered.clone(),
                                supported: SPDY_EXEC_PREFERENCE.iter().map(|v| v.name()).collect(),
                            })?,
                    )
                }
            }
        };
        let negotiated = Negotiated {
            kind,
            transport: Transport::Spdy(version),
            exec,
            ports: Vec::new(),
        };
        let mut resp = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, SPDY_31);
        if !offered.is_empty() {
            if let Some(p) = negotiated.protocol() {
                resp = resp.header(X_STREAM_PROTOCOL_VERSION, HeaderValue::from_static(p));
            }
        }
        let resp = resp.body(Empty::new()).expect("valid static response");
        return Ok((resp, negotiated));
    }

    Err(UpgradeError::NotAnUpgrade)
}

fn choose_websocket(kind: StreamKind, offered: &[String]) -> Result<Transport, UpgradeError> {
    let table: &[(&str, StreamVersion, bool)] = match kind {
        StreamKind::PortForward => {
            if offered.iter().any(|p| p == SPDY_TUNNEL_PORT_FORWARD) {
                return Ok(Transport::SpdyOverWebSocket);
            }
            &WS_PORT_FORWARD_PREFERENCE
        }
        StreamKind::Exec | StreamKind::Attach => &WS_EXEC_PREFERENCE,
    };
    if offered.is_empty() {
        // No subprotocol offered: the legacy binary channel protocol, answered without a name.
        let version = match kind {
            StreamKind::PortForward => StreamVersion::V4,
            _ => StreamVersion::V1,
        };
        return Ok(Transport::WebSocket(ChannelProtocol {
            version,
            base64: false,
            named: false,
        }));
    }
    table
        .iter()
        .find(|(name, _, _)| offered.iter().any(|o| o == name))
        .map(|&(_, version, base64)| {
            Transport::WebSocket(ChannelProtocol {
                version,
                base64,
                named: true,
            })
        })
        .ok_or_else(|| UpgradeError::NoCommonProtocol {
            offered: offered.to_vec(),
            supported: table.iter().map(|(n, _, _)| *n).collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws_req(uri: &str, protocols: &[&str]) -> Request<()> {
        let mut b = Request::get(uri)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
        if !protocols.is_empty() {
            b = b.header("sec-websocket-protocol", protocols.join(", "));
        }
        b.body(()).unwrap()
    }

    fn spdy_req(uri: &str, protocols: &[&str]) -> Request<()> {
        let mut b = Request::post(uri)
            .header("connection", "Upgrade")
            .header("upgrade", "SPDY/3.1");
        for p in protocols {
            b = b.header("x-stream-protocol-version", *p);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn websocket_accept_key_matches_rfc6455_example() {
        let (resp, n) = upgrade_response(
            &ws_req("/exec?stdout=true", &["v5.channel.k8s.io"]),
            StreamKind::Exec,
        )
        .unwrap();
        assert_eq!(resp.status(), 101);
        assert_eq!(
            resp.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            resp.headers()["sec-websocket-protocol"],
            "v5.channel.k8s.io"
        );
        assert_eq!(resp.headers()["upgrade"], "websocket");
        assert_eq!(
            n.transport,
            Transport::WebSocket(ChannelProtocol::binary(StreamVersion::V5))
        );
        assert!(n.exec.stdout && !n.exec.stdin);
    }

    #[test]
    fn exec_prefers_newest_offered() {
        let (_, n) = upgrade_response(
            &ws_req(
                "/exec?stdin=true&stdout=1",
                &["channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io"],
            ),
            StreamKind::Exec,
        )
        .unwrap();
        assert_eq!(
            n.transport,
            Transport::WebSocket(ChannelProtocol::binary(StreamVersion::V4))
        );
        let (r, n) = upgrade_response(
            &ws_req("/attach?stdout=true", &["base64.channel.k8s.io"]),
            StreamKind::Attach,
        )
        .unwrap();
        assert_eq!(
            r.headers()["sec-websocket-protocol"],
            "base64.channel.k8s.io"
        );
        assert!(matches!(n.transport, Transport::WebSocket(p) if p.base64));
    }

    #[test]
    fn port_forward_answers_v4_even_when_v5_offered() {
        let (resp, n) = upgrade_response(
            &ws_req(
                "/portforward?ports=80,8080&ports=443",
                &["v5.channel.k8s.io", "v4.channel.k8s.io"],
            ),
            StreamKind::PortForward,
        )
        .unwrap();
        assert_eq!(
            resp.headers()["sec-websocket-protocol"],
            "v4.channel.k8s.io"
        );
        assert_eq!(n.ports, vec![80, 8080, 443]);
    }

    #[test]
    fn port_forward_tunnel_and_errors() {
        let (resp, n) = upgrade_response(
            &ws_req("/portforward", &["SPDY/3.1+portforward.k8s.io"]),
            StreamKind::PortForward,
        )
        .unwrap();
        assert_eq!(n.transport, Transport::SpdyOverWebSocket);
        assert_eq!(
            resp.headers()["sec-websocket-protocol"],
            "SPDY/3.1+portforward.k8s.io"
        );
        let e = upgrade_response(
            &ws_req("/portforward", &["v4.channel.k8s.io"]),
            StreamKind::PortForward,
        )
        .unwrap_err();
        assert_eq!(e.status_code(), 400);
        let e = upgrade_response(
            &ws_req("/portforward?ports=1", &["v5.channel.k8s.io"]),
            StreamKind::PortForward,
        )
        .unwrap_err();
        assert!(matches!(e, UpgradeError::NoCommonProtocol { .. }));
        let e = upgrade_response(
            &ws_req("/portforward?ports=0", &["v4.channel.k8s.io"]),
            StreamKind::PortForward,
        )
        .unwrap_err();
        assert!(matches!(e, UpgradeError::BadQuery(_)));
    }

    #[test]
    fn spdy_negotiation() {
        let (resp, n) = upgrade_response(
            &spdy_req("/portforward", &["portforward.k8s.io"]),
            StreamKind::PortForward,
        )
        .unwrap();
        assert_eq!(resp.headers()["upgrade"], "SPDY/3.1");
        assert_eq!(resp.headers()["connection"], "Upgrade");
        assert_eq!(
            resp.headers()["x-stream-protocol-version"],
            "portforward.k8s.io"
        );
        assert_eq!(n.transport, Transport::Spdy(None));

        let (resp, n) = upgrade_response(
            &spdy_req(
                "/exec?stdout=true&tty=true&stderr=true",
                &[
                    "v4.channel.k8s.io",
                    "v3.channel.k8s.io",
                    "v2.channel.k8s.io",
                    "channel.k8s.io",
                ],
            ),
            StreamKind::Exec,
        )
        .unwrap();
        assert_eq!(
            resp.headers()["x-stream-protocol-version"],
            "v4.channel.k8s.io"
        );
        assert_eq!(n.transport, Transport::Spdy(Some(StreamVersion::V4)));
        assert!(n.exec.tty && !n.exec.stderr);

        let (resp, n) =
            upgrade_response(&spdy_req("/exec?stdin=true", &[]), StreamKind::Exec).unwrap();
        assert!(resp.headers().get("x-stream-protocol-version").is_none());
        assert_eq!(n.transport, Transport::Spdy(Some(StreamVersion::V1)));
    }

    #[test]
    fn rejects_non_upgrades_and_empty_exec() {
        let plain = Request::get("/exec?stdout=true").body(()).unwrap();
        assert_eq!(
            upgrade_response(&plain, StreamKind::Exec).unwrap_err(),
            UpgradeError::NotAnUpgrade
        );
        let e = upgrade_response(&ws_req("/exec", &["v5.channel.k8s.io"]), StreamKind::Exec)
            .unwrap_err();
        assert_eq!(e.status_code(), 400);
    }
}
