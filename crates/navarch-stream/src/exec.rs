//! The transport-independent exec/attach session handed to the agent.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::{mpsc, oneshot};

use crate::error::Error;
use crate::pipe::{ChannelReader, ChannelWriter};
use crate::status::{ExitStatus, TerminalSize};

/// The standard streams of one exec/attach session, whatever the transport.
///
/// Take the streams you need (`streams.stdin.take()`), run the process, then call
/// [`ExecStreams::finish`] with its exit status: buffered output is sent first, then the
/// status on the error channel, then the connection is closed. Dropping `ExecStreams`
/// without finishing closes the connection without a status.
#[derive(Debug)]
pub struct ExecStreams {
    /// Standard input from the client, if requested. EOF when the client closes it
    /// (v5 close signal, SPDY FIN) or goes away.
    pub stdin: Option<ChannelReader>,
    /// Standard output to the client, if requested.
    pub stdout: Option<ChannelWriter>,
    /// Standard error to the client, if requested (never with a TTY).
    pub stderr: Option<ChannelWriter>,
    /// Terminal size changes from the client.
    pub resize: ResizeEvents,
    /// Whether the client asked for a TTY.
    pub tty: bool,
    pub(crate) finisher: Finisher,
}

#[derive(Debug)]
pub(crate) struct FinishRequest {
    pub(crate) status: ExitStatus,
    pub(crate) done: oneshot::Sender<Result<(), Error>>,
}

#[derive(Debug)]
pub(crate) enum Finisher {
    None,
    WebSocket(oneshot::Sender<FinishRequest>),
    Spdy(crate::spdy::exec::SpdyFinisher),
}

impl ExecStreams {
    pub(crate) fn new(tty: bool) -> Self {
        ExecStreams {
            stdin: None,
            stdout: None,
            stderr: None,
            resize: ResizeEvents::closed(),
            tty,
            finisher: Finisher::None,
        }
    }

    /// Report how the command ended and close the session.
    ///
    /// Output already written to `stdout`/`stderr` is delivered before the status, even if
    /// the writers are still held elsewhere; later writes fail.
    pub async fn finish(self, status: ExitStatus) -> Result<(), Error> {
        let ExecStreams {
            stdin,
            stdout,
            stderr,
            finisher,
            ..
        } = self;
        drop((stdin, stdout, stderr));
        match finisher {
            Finisher::None => Err(Error::Closed),
            Finisher::WebSocket(tx) => {
                let (done, rx) = oneshot::channel();
                tx.send(FinishRequest { status, done })
                    .map_err(|_| Error::Closed)?;
                rx.await.map_err(|_| Error::Closed)?
            }
            Finisher::Spdy(f) => f.finish(status).await,
        }
    }
}

/// Terminal size events (a `Stream`); ends when the client closes the resize channel or
/// the session ends. `Default` is an already ended stream, so `std::mem::take` can move the
/// events out of [`ExecStreams`].
#[derive(Debug)]
pub struct ResizeEvents {
    rx: mpsc::Receiver<TerminalSize>,
}

impl Default for ResizeEvents {
    fn default() -> Self {
        Self::closed()
    }
}

impl ResizeEvents {
    pub(crate) fn new(rx: mpsc::Receiver<TerminalSize>) -> Self {
        ResizeEvents { rx }
    }

    pub(crate) fn closed() -> Self {
        let (_, rx) = mpsc::channel(1);
        ResizeEvents { rx }
    }

    /// The next size change, or `None` once no more can come.
    pub async fn recv(&mut self) -> Option<TerminalSize> {
        self.rx.recv().await
    }
}

impl Stream for ResizeEvents {
    type Item = TerminalSize;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TerminalSize>> {
        self.rx.poll_recv(cx)
    }
}
