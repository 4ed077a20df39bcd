//! The transport-independent port-forward session handed to the agent.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

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

    /// Copy bytes between the client and `io`.
    ///
    /// Like the container runtimes' port-forward, once one direction ends the other gets
    /// [`SPLICE_LINGER`] to finish, then the forwarded connection is closed. WebSocket (v4)
    /// clients have no per-stream close: they only learn that the pod closed its side when
    /// this returns and the session ends.
    pub async fn splice<T>(self, io: T) -> io::Result<()>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite,
    {
        let PortForwardRequest { stream, error, .. } = self;
        let (mut client_r, mut client_w) = stream.into_split();
        let (mut pod_r, mut pod_w) = tokio::io::split(io);
        let up = async {
            let r = tokio::io::copy(&mut client_r, &mut pod_w).await;
            let _ = pod_w.shutdown().await;
            r
        };
        let down = async {
            let r = tokio::io::copy(&mut pod_r, &mut client_w).await;
            let _ = client_w.shutdown().await;
            r
        };
        tokio::pin!(up, down);
        let res = tokio::select! {
            r = &mut up => {
                let _ = tokio::time::timeout(SPLICE_LINGER, &mut down).await;
                r
            }
            r = &mut down => {
                let _ = tokio::time::timeout(SPLICE_LINGER, &mut up).await;
                r
            }
        };
        drop(error);
        res.map(|_| ())
    }
}

/// How long [`PortForwardRequest::splice`] lets the second direction finish after the first.
pub const SPLICE_LINGER: Duration = Duration::from_secs(1);

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
