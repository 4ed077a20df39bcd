//! Remote command (exec/attach) over SPDY: streams typed by `streamtype`.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::conn::SpdyConnection;
use super::{rst, HEADER_STREAM_TYPE};
use crate::error::Error;
use crate::exec::{ExecStreams, Finisher, ResizeEvents};
use crate::negotiate::{ExecOptions, StreamVersion};
use crate::pipe::ChannelWriter;
use crate::status::{ExitStatus, ResizeDecoder};

/// How long the client may take to open all announced streams (kubelet default: 30 s).
pub(crate) const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Finishes a SPDY exec session: status on the error stream, then FIN on every stream.
#[derive(Debug)]
pub(crate) struct SpdyFinisher {
    conn: SpdyConnection,
    error: Option<ChannelWriter>,
    json_status: bool,
    /// Write halves we never use (stdin, resize), kept open until the end: client-go takes
    /// the server half-closing stdin as the end of the session and stops sending input.
    _unused: Vec<ChannelWriter>,
}

impl SpdyFinisher {
    pub(crate) async fn finish(mut self, status: ExitStatus) -> Result<(), Error> {
        if let Some(mut e) = self.error.take() {
            let payload = status.encode(self.json_status);
            if !payload.is_empty() {
                e.write_all(&payload).await.map_err(|_| Error::Closed)?;
            }
        }
        self.conn.close().await
    }
}

impl Drop for SpdyFinisher {
    fn drop(&mut self) {
        self.conn.start_close();
    }
}

/// Wait for the client's streams, then hand them out as [`ExecStreams`].
pub(crate) async fn serve<T>(
    io: T,
    version: StreamVersion,
    opts: ExecOptions,
    timeout: Duration,
) -> Result<ExecStreams, Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (conn, mut incoming) = SpdyConnection::server(io);
    let expected = 1
        + usize::from(opts.stdin)
        + usize::from(opts.stdout)
        + usize::from(opts.stderr)
        + usize::from(opts.tty && version.spdy_resize());
    let mut streams = ExecStreams::new(opts.tty);
    let mut error = None;
    let mut resize = None;
    let mut unused = Vec::new();
    let mut received = 0;
    let collect = async {
        while received < expected {
            let Some(s) = incoming.next().await else {
                return Err(Error::Closed);
            };
            let kind = s.headers.get(HEADER_STREAM_TYPE).unwrap_or("").to_owned();
            match kind.as_str() {
                "error" | "stdin" | "stdout" | "stderr" | "resize" => {}
                _ => {
                    tracing::debug!(stream_type = %kind, "unexpected exec stream type");
                    s.reject(rst::PROTOCOL_ERROR);
                    continue;
                }
            }
            let (reader, writer) = s.accept().io.into_split();
            match kind.as_str() {
                "error" => error = Some(writer),
                "stdin" => {
                    streams.stdin = Some(reader);
                    // The v1 kubelet closed stdin at once; later versions keep it open.
                    if version > StreamVersion::V1 {
                        unused.push(writer);
                    }
                }
                "stdout" => streams.stdout = Some(writer),
                "stderr" => streams.stderr = Some(writer),
                _ => {
                    resize = Some(reader);
                    unused.push(writer);
                }
            }
            received += 1;
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, collect).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            conn.start_close();
            return Err(Error::StreamTimeout);
        }
    }
    // Further streams are refused.
    drop(incoming);
    if let Some(mut r) = resize {
        let (tx, rx) = mpsc::channel(16);
        streams.resize = ResizeEvents::new(rx);
        tokio::spawn(async move {
            let mut dec = ResizeDecoder::default();
            while let Ok(Some(chunk)) = r.next_chunk().await {
                for size in dec.push(&chunk) {
                    if tx.send(size).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    streams.finisher = Finisher::Spdy(SpdyFinisher {
        conn,
        error,
        json_status: version.json_status(),
        _unused: unused,
    });
    Ok(streams)
}
