//! In-memory byte pipes between a session driver and the code using the session.
//!
//! Every stream handed to callers is one direction of a `tokio::io::duplex` pair, so
//! dropping either end closes the pipe: the reader sees EOF, the writer `BrokenPipe`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, DuplexStream, ReadBuf};

/// Buffer size of each pipe; writers wait when it is full.
pub(crate) const PIPE_CAPACITY: usize = 64 * 1024;

/// Largest chunk moved per frame.
pub(crate) const CHUNK: usize = 32 * 1024;

/// Readable end of a stream coming from the remote client (stdin, forwarded-port data).
#[derive(Debug)]
pub struct ChannelReader(DuplexStream);

/// Writable end of a stream going to the remote client (stdout, stderr, errors, forwarded-port data).
///
/// Dropping it or calling `shutdown` ends the stream (on SPDY: an empty DATA frame with FIN).
#[derive(Debug)]
pub struct ChannelWriter(DuplexStream);

/// Create a pipe; the driver keeps one end, the caller gets the other.
pub(crate) fn pipe() -> (ChannelWriter, ChannelReader) {
    let (a, b) = tokio::io::duplex(PIPE_CAPACITY);
    (ChannelWriter(a), ChannelReader(b))
}

impl ChannelReader {
    /// Read the next chunk (up to [`CHUNK`] bytes); `None` at EOF.
    pub(crate) async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        let mut buf = BytesMut::with_capacity(CHUNK);
        let n = self.0.read_buf(&mut buf).await?;
        Ok((n > 0).then(|| buf.freeze()))
    }

    /// A chunk already buffered, without waiting: `Some(Ok(None))` at EOF, `None` if nothing is ready.
    pub(crate) fn try_chunk(&mut self) -> Option<io::Result<Option<Bytes>>> {
        self.next_chunk().now_or_never()
    }
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ChannelWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A bidirectional byte stream: one forwarded connection (port-forward) or one SPDY stream.
///
/// Implements `AsyncRead + AsyncWrite`, so it can be spliced to a TCP connection with
/// `tokio::io::copy_bidirectional`. Shutting down the write side half-closes the stream.
#[derive(Debug)]
pub struct DuplexChannel {
    /// Bytes from the remote client.
    pub reader: ChannelReader,
    /// Bytes to the remote client.
    pub writer: ChannelWriter,
}

impl DuplexChannel {
    /// Separate the two directions.
    pub fn into_split(self) -> (ChannelReader, ChannelWriter) {
        (self.reader, self.writer)
    }
}

impl AsyncRead for DuplexChannel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for DuplexChannel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn dropping_either_end_closes() {
        let (mut w, mut r) = pipe();
        w.write_all(b"abc").await.unwrap();
        drop(w);
        assert_eq!(r.next_chunk().await.unwrap().unwrap(), &b"abc"[..]);
        assert!(r.next_chunk().await.unwrap().is_none());

        let (mut w, r) = pipe();
        drop(r);
        assert!(w.write_all(b"x").await.is_err());
    }

    #[tokio::test]
    async fn try_chunk_does_not_wait() {
        let (mut w, mut r) = pipe();
        assert!(r.try_chunk().is_none());
        w.write_all(b"x").await.unwrap();
        assert_eq!(r.try_chunk().unwrap().unwrap().unwrap(), &b"x"[..]);
        w.shutdown().await.unwrap();
        assert!(r.try_chunk().unwrap().unwrap().is_none());
    }
}
