//! The transport-independent port-forward session handed to the agent.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::pipe::{ChannelWriter, DuplexChannel};
use crate::spdy::SpdyConnection;

/// One forwarded connection to a pod port.
///
/// Splice `stream` to a connection to `port` in the pod (see [`PortForwardRequest::forward_tcp`]).
/// If that fails, write a message to `error`; the client prints it. Dropping or shutting
/// down `stream` ends the forwarded connection.
#[derive(Debug)]
pub struct PortForwardRequest {
    /// Pod port the client wants.
    pub port: u16,
    /// The client's request id (SPDY) or the port's index (WebSocket).
    pub request_id: String,
    /// Bytes from and to the client.
    pub stream: DuplexChannel,
    /// Error text for the client.
    pub error: ChannelWriter,
}

impl PortForwardRequest {
    /// Report a failure to the client and end this forwarded connection.
    pub async fn fail(mut self, message: &str) {
        let _ = self.error.write_all(message.as_bytes()).await;
        let _ = self.error.shutdown().await;
        let _ = self.stream.shutdown().await;
    }

    /// Connect to `addr` and copy bytes both ways until both directions are done.
    /// A refused connection is reported on the error stream, as the kubelet does.
    pub async fn forward_tcp(self, addr: SocketAddr) -> io::Result<()> {
        let tcp = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("error forwarding port {} to {addr}: {e}", self.port);
                self.fail(&msg).await;
                return Err(e);
            }
        };
        self.splice(tcp).await
    }

    /// Copy bytes between the client and `io` until both directions are done.
    pub async fn splice<T>(self, mut io: T) -> io::Result<()>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let PortForwardRequest {
            mut stream, error, ..
        } = self;
        let res = tokio::io::copy_bidirectional(&mut stream, &mut io).await;
        drop(error);
        res.map(|_| ())
    }
}

enum Source {
    Fixed(VecDeque<PortForwardRequest>),
    Dynamic(mpsc::Receiver<PortForwardRequest>),
}

/// Forwarded connections of one port-forward session.
///
/// WebSocket sessions carry one connection per requested port, known up front; SPDY
/// sessions carry any number, opened by the client over time. `next` returns `None` when
/// no more can come.
pub struct PortForwardServer {
    source: Source,
    conn: Option<SpdyConnection>,
}

impl std::fmt::Debug for PortForwardServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortForwardServer")
            .field("spdy", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

impl PortForwardServer {
    pub(crate) fn fixed(requests: Vec<PortForwardRequest>) -> Self {
        PortForwardServer {
            source: Source::Fixed(requests.into()),
            conn: None,
        }
    }

    pub(crate) fn dynamic(rx: mpsc::Receiver<PortForwardRequest>, conn: SpdyConnection) -> Self {
        PortForwardServer {
            source: Source::Dynamic(rx),
            conn: Some(conn),
        }
    }

    /// The next forwarded connection.
    pub async fn next(&mut self) -> Option<PortForwardRequest> {
        match &mut self.source {
            Source::Fixed(q) => q.pop_front(),
            Source::Dynamic(rx) => rx.recv().await,
        }
    }

    /// Serve every forwarded connection by connecting to `target(port)`, each in its own task,
    /// until the client goes away.
    pub async fn forward_all<F>(mut self, mut target: F)
    where
        F: FnMut(u16) -> SocketAddr,
    {
        let mut tasks = tokio::task::JoinSet::new();
        while let Some(req) = self.next().await {
            let addr = target(req.port);
            tasks.spawn(async move {
                if let Err(e) = req.forward_tcp(addr).await {
                    tracing::debug!(error = %e, %addr, "forwarded connection ended with error");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Close a SPDY session gracefully (no-op for WebSocket sessions, which close when all
    /// their requests are done).
    pub async fn close(&self) {
        if let Some(c) = &self.conn {
            let _ = c.close().await;
        }
    }
}
