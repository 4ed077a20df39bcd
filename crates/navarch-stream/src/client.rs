//! Client sides of the protocols: enough to test the servers in-process, and to let the
//! API server open sessions to agents.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::error::Error;
use crate::negotiate::{
    ChannelProtocol, PORT_FORWARD_PROTOCOL, SPDY_31, SPDY_TUNNEL_PORT_FORWARD,
    X_STREAM_PROTOCOL_VERSION,
};
use crate::pipe::{ChannelReader, DuplexChannel};
use crate::spdy::{
    SpdyConnection, SpdyHeaders, HEADER_PORT, HEADER_REQUEST_ID, HEADER_STREAM_TYPE,
};
use crate::status::{ExitStatus, TerminalSize};
use crate::ws::{channel, decode_message, encode_message, WsByteStream};

const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Send an HTTP/1.1 upgrade request on `io` and read the response head. Returns the
/// response headers of a `101`; any other status is [`Error::UpgradeRefused`].
pub async fn http_upgrade<T>(
    io: &mut T,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HeaderMap, Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    io.write_all(req.as_bytes()).await?;
    io.flush().await?;

    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_RESPONSE_HEAD {
            return Err(Error::Protocol("response head too large".into()));
        }
        head.push(io.read_u8().await?);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| Error::Protocol("malformed status line".into()))?;
    let mut map = HeaderMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        if let Some((k, v)) = line.split_once(':') {
            if let (Ok(k), Ok(v)) = (
                http::header::HeaderName::from_bytes(k.trim().as_bytes()),
                http::header::HeaderValue::from_str(v.trim()),
            ) {
                map.append(k, v);
            }
        }
    }
    if status != 101 {
        let len = map
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
            .min(4096);
        let mut body = vec![0; len];
        let _ = io.read_exact(&mut body).await;
        return Err(Error::UpgradeRefused {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    Ok(map)
}

/// Upgrade to SPDY/3.1 (`POST`), offering `protocols` in `X-Stream-Protocol-Version`.
/// Returns the connection and the protocol the server chose.
pub async fn spdy_connect<T>(
    mut io: T,
    path: &str,
    protocols: &[&str],
) -> Result<(SpdyConnection, Option<String>), Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut headers = vec![("Connection", "Upgrade"), ("Upgrade", SPDY_31)];
    headers.extend(protocols.iter().map(|p| ("X-Stream-Protocol-Version", *p)));
    let resp = http_upgrade(&mut io, "POST", path, &headers).await?;
    let chosen = resp
        .get(X_STREAM_PROTOCOL_VERSION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((SpdyConnection::client(io), chosen))
}

/// Open a WebSocket offering `protocols`; returns it and the subprotocol the server chose.
pub async fn websocket_connect<T>(
    io: T,
    path: &str,
    protocols: &[&str],
) -> Result<(WebSocketStream<T>, Option<String>), Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut req = http::Request::get(format!("ws://localhost{path}"))
        .header("Host", "localhost")
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", generate_key());
    if !protocols.is_empty() {
        req = req.header("Sec-WebSocket-Protocol", protocols.join(", "));
    }
    let req = req
        .body(())
        .map_err(|e| Error::Protocol(format!("bad request: {e}")))?;
    let (ws, resp) = match tokio_tungstenite::client_async(req, io).await {
        Ok(ok) => ok,
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            return Err(Error::UpgradeRefused {
                status: resp.status().as_u16(),
                body,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let chosen = resp
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((ws, chosen))
}

/// What an exec server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// A chunk of standard output.
    Stdout(Bytes),
    /// A chunk of standard error.
    Stderr(Bytes),
    /// The final status.
    Status(ExitStatus),
}

/// Everything an exec session produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Status, if the server sent one (pre-v4 servers send none on success).
    pub status: Option<ExitStatus>,
}

/// WebSocket exec/attach client (what kubectl ≥ 1.30 and the Python client do).
#[derive(Debug)]
pub struct ExecClient<S> {
    ws: WebSocketStream<S>,
    proto: ChannelProtocol,
}

impl<S> ExecClient<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Connect to an exec/attach `path` (with its query), offering `protocols` in order.
    pub async fn connect(io: S, path: &str, protocols: &[&str]) -> Result<Self, Error> {
        let (ws, chosen) = websocket_connect(io, path, protocols).await?;
        let proto = match chosen {
            Some(name) => ChannelProtocol::from_name(&name).ok_or_else(|| {
                Error::Protocol(format!("server chose unknown protocol {name:?}"))
            })?,
            None => ChannelProtocol {
                version: crate::StreamVersion::V1,
                base64: false,
                named: false,
            },
        };
        Ok(ExecClient { ws, proto })
    }

    /// The negotiated protocol.
    pub fn protocol(&self) -> ChannelProtocol {
        self.proto
    }

    /// Send standard input.
    pub async fn send_stdin(&mut self, data: &[u8]) -> Result<(), Error> {
        self.send(channel::STDIN, data).await
    }

    /// Close standard input (v5 only: the close signal on channel 255).
    pub async fn close_stdin(&mut self) -> Result<(), Error> {
        if self.proto.version < crate::StreamVersion::V5 {
            return Err(Error::Protocol(
                "closing stdin needs v5.channel.k8s.io".into(),
            ));
        }
        self.send(channel::CLOSE, &[channel::STDIN]).await
    }

    /// Send a terminal size.
    pub async fn resize(&mut self, size: TerminalSize) -> Result<(), Error> {
        let json = serde_json::to_vec(&size).map_err(|e| Error::Protocol(e.to_string()))?;
        self.send(channel::RESIZE, &json).await
    }

    async fn send(&mut self, ch: u8, data: &[u8]) -> Result<(), Error> {
        self.ws.send(encode_message(self.proto, ch, data)).await?;
        Ok(())
    }

    /// The next non-empty output chunk or the status; `None` once the server closed.
    pub async fn next_event(&mut self) -> Result<Option<ExecEvent>, Error> {
        while let Some(msg) = self.ws.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(
                    tokio_tungstenite::tungstenite::Error::ConnectionClosed
                    | tokio_tungstenite::tungstenite::Error::Protocol(_),
                ) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            if let Message::Close(_) = msg {
                continue;
            }
            let Some((ch, data)) = decode_message(self.proto, &msg) else {
                continue;
            };
            match ch {
                channel::STDOUT if !data.is_empty() => return Ok(Some(ExecEvent::Stdout(data))),
                channel::STDERR if !data.is_empty() => return Ok(Some(ExecEvent::Stderr(data))),
                channel::ERROR if !data.is_empty() => {
                    return Ok(Some(ExecEvent::Status(ExitStatus::parse(&data))))
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// Read until the server closes the connection.
    pub async fn collect(mut self) -> Result<ExecOutput, Error> {
        let mut out = ExecOutput::default();
        while let Some(ev) = self.next_event().await? {
            match ev {
                ExecEvent::Stdout(b) => out.stdout.extend_from_slice(&b),
                ExecEvent::Stderr(b) => out.stderr.extend_from_slice(&b),
                ExecEvent::Status(s) => out.status = Some(s),
            }
        }
        Ok(out)
    }
}

/// One forwarded connection opened by a [`PortForwardClient`].
#[derive(Debug)]
pub struct ForwardedConnection {
    /// The request id sent in the stream headers.
    pub request_id: String,
    /// Bytes to and from the pod port.
    pub data: DuplexChannel,
    /// Error text from the server (EOF without text means no error).
    pub error: ChannelReader,
}

/// SPDY port-forward client, opening streams the way kubectl does.
#[derive(Debug)]
pub struct PortForwardClient {
    conn: SpdyConnection,
    next_request: AtomicU64,
}

impl PortForwardClient {
    /// Wrap an established SPDY client connection.
    pub fn new(conn: SpdyConnection) -> Self {
        PortForwardClient {
            conn,
            next_request: AtomicU64::new(0),
        }
    }

    /// `POST` upgrade to SPDY/3.1 with `portforward.k8s.io` (kubectl ≤ 1.30, or the fallback).
    pub async fn connect<T>(io: T, path: &str) -> Result<Self, Error>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (conn, _) = spdy_connect(io, path, &[PORT_FORWARD_PROTOCOL]).await?;
        Ok(Self::new(conn))
    }

    /// WebSocket upgrade with `SPDY/3.1+portforward.k8s.io` (kubectl ≥ 1.31).
    pub async fn connect_tunnel<T>(io: T, path: &str) -> Result<Self, Error>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (ws, chosen) = websocket_connect(io, path, &[SPDY_TUNNEL_PORT_FORWARD]).await?;
        if chosen.as_deref() != Some(SPDY_TUNNEL_PORT_FORWARD) {
            return Err(Error::Protocol(format!("server chose {chosen:?}")));
        }
        Ok(Self::new(SpdyConnection::client(WsByteStream::new(ws))))
    }

    /// The underlying connection (ping, close).
    pub fn connection(&self) -> &SpdyConnection {
        &self.conn
    }

    /// Forward one connection to `port`: open the error stream (and half-close it), then
    /// the data stream.
    pub async fn forward(&self, port: u16) -> Result<ForwardedConnection, Error> {
        let request_id = self
            .next_request
            .fetch_add(1, Ordering::Relaxed)
            .to_string();
        let headers = |kind: &str| -> SpdyHeaders {
            [
                (HEADER_STREAM_TYPE, kind.to_owned()),
                (HEADER_PORT, port.to_string()),
                (HEADER_REQUEST_ID, request_id.clone()),
            ]
            .into_iter()
            .collect()
        };
        let error = self.conn.open_stream(headers("error")).await?;
        let (error_reader, mut error_writer) = error.io.into_split();
        error_writer.shutdown().await?;
        let data = self.conn.open_stream(headers("data")).await?;
        Ok(ForwardedConnection {
            request_id,
            data: data.io,
            error: error_reader,
        })
    }
}
