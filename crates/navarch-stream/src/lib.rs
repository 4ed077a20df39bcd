//! Kubernetes streaming protocols for `exec`, `attach` and `port-forward`.
//!
//! What clients send (kubectl 1.28–1.33, the Python client, kube-rs) and what this crate
//! answers:
//!
//! | request | transport |
//! |---|---|
//! | exec/attach, `GET` + `Upgrade: websocket` | channel protocol v5 → v4 → … → `channel.k8s.io` ([`ws`]) |
//! | exec/attach, `POST` + `Upgrade: SPDY/3.1` | SPDY streams typed by `streamtype` ([`spdy`]) |
//! | port-forward, WebSocket `v4.channel.k8s.io` | data channel 2i, error channel 2i+1 ([`ws`]) |
//! | port-forward, `POST` + `Upgrade: SPDY/3.1` | SPDY `error`/`data` stream pairs ([`spdy`]) |
//! | port-forward, WebSocket `SPDY/3.1+portforward.k8s.io` | the same SPDY, tunnelled in binary messages |
//!
//! # Interoperability
//!
//! Checked by hand with `examples/kubectl_interop.rs` (a fake API server whose one pod runs
//! local commands and forwards to 127.0.0.1): kubectl 1.28 (SPDY v4 exec, SPDY
//! port-forward), 1.30, 1.32 and 1.33 (WebSocket v5 exec, SPDY v5 exec fallback, tunnelled
//! and plain SPDY port-forward), the Python client 37 and kube-rs 5 (v5 exec, v4
//! port-forward). Behaviours those clients depend on, each with a regression test:
//!
//! - SPDY: the server keeps the stdin stream open (client-go stops sending input when the
//!   server half-closes it) and, when closing, waits for the client to finish with its
//!   streams before shutting the connection down (spdystream drops queued frames on EOF).
//! - WebSocket: text messages carry data on binary protocols too (Python sends `str` stdin
//!   that way).
//! - Port-forward: a forwarded connection ends shortly after either side ends
//!   ([`PortForwardRequest::splice`]), otherwise v4 WebSocket clients never see EOF.
//!
//! Server side, with hyper 1:
//!
//! ```no_run
//! # use bytes::Bytes;
//! # use http_body_util::Empty;
//! # use hyper::{Request, Response};
//! use navarch_stream::{upgrade_response, serve_exec, upgraded, ExitStatus, StreamKind};
//!
//! async fn exec(mut req: Request<hyper::body::Incoming>) -> Response<Empty<Bytes>> {
//!     let (resp, negotiated) = match upgrade_response(&req, StreamKind::Exec) {
//!         Ok(ok) => ok,
//!         Err(e) => {
//!             let mut r = Response::new(Empty::new());
//!             *r.status_mut() = e.status_code();
//!             return r;
//!         }
//!     };
//!     let on_upgrade = hyper::upgrade::on(&mut req);
//!     tokio::spawn(async move {
//!         let io = upgraded(on_upgrade).await?;
//!         let mut streams = serve_exec(io, &negotiated).await?;
//!         let mut stdin = streams.stdin.take();
//!         let mut stdout = streams.stdout.take();
//!         if let (Some(i), Some(o)) = (stdin.as_mut(), stdout.as_mut()) {
//!             tokio::io::copy(i, o).await?;
//!         }
//!         drop(stdout);
//!         streams.finish(ExitStatus::Success).await?;
//!         Ok::<_, navarch_stream::Error>(())
//!     });
//!     resp
//! }
//! ```

pub mod client;
mod error;
mod exec;
mod negotiate;
mod pipe;
mod portforward;
pub mod spdy;
mod status;
pub mod ws;

use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

pub use error::{Error, UpgradeError};
pub use exec::{ExecStreams, ResizeEvents};
pub use negotiate::{
    is_spdy_request, is_websocket_request, ports_from_query, upgrade_response, ChannelProtocol,
    ExecOptions, Negotiated, StreamKind, StreamVersion, Transport, PORT_FORWARD_PROTOCOL, SPDY_31,
    SPDY_TUNNEL_PORT_FORWARD, X_STREAM_PROTOCOL_VERSION,
};
pub use pipe::{ChannelReader, ChannelWriter, DuplexChannel};
pub use portforward::{PortForwardRequest, PortForwardServer, SPLICE_LINGER};
pub use status::{ExitStatus, TerminalSize};

/// The upgraded connection of a hyper 1 request, ready for [`serve_exec`] or
/// [`serve_port_forward`].
pub type UpgradedIo = TokioIo<hyper::upgrade::Upgraded>;

/// Wait for hyper to hand over the connection after the 101 response.
pub async fn upgraded(on_upgrade: hyper::upgrade::OnUpgrade) -> Result<UpgradedIo, Error> {
    let up = on_upgrade
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?;
    Ok(TokioIo::new(up))
}

/// How long an exec client may take to open its SPDY streams.
pub const STREAM_CREATION_TIMEOUT: Duration = spdy::exec::STREAM_CREATION_TIMEOUT;

/// Serve an exec/attach session on an upgraded connection negotiated by [`upgrade_response`].
///
/// For SPDY this waits (up to [`STREAM_CREATION_TIMEOUT`]) for the client's streams.
pub async fn serve_exec<T>(io: T, negotiated: &Negotiated) -> Result<ExecStreams, Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if negotiated.kind == StreamKind::PortForward {
        return Err(Error::Protocol(
            "negotiated for port-forward, not exec".into(),
        ));
    }
    match negotiated.transport {
        Transport::WebSocket(p) => ws::serve_exec(io, p, negotiated.exec).await,
        Transport::Spdy(Some(v)) => {
            spdy::exec::serve(io, v, negotiated.exec, STREAM_CREATION_TIMEOUT).await
        }
        Transport::Spdy(None) | Transport::SpdyOverWebSocket => Err(Error::Protocol(
            "port-forward transport used for exec".into(),
        )),
    }
}

/// Serve a port-forward session on an upgraded connection negotiated by [`upgrade_response`].
pub async fn serve_port_forward<T>(
    io: T,
    negotiated: &Negotiated,
) -> Result<PortForwardServer, Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if negotiated.kind != StreamKind::PortForward {
        return Err(Error::Protocol(
            "negotiated for exec, not port-forward".into(),
        ));
    }
    match negotiated.transport {
        Transport::WebSocket(p) => ws::serve_port_forward(io, p, &negotiated.ports).await,
        Transport::Spdy(None) => Ok(spdy::portforward::serve(io)),
        Transport::SpdyOverWebSocket => {
            Ok(spdy::portforward::serve(ws::WsByteStream::server(io).await))
        }
        Transport::Spdy(Some(_)) => Err(Error::Protocol(
            "exec transport used for port-forward".into(),
        )),
    }
}
