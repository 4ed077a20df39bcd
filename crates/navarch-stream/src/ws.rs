//! Kubernetes WebSocket channel protocols (`channel.k8s.io` … `v5.channel.k8s.io`, and the
//! base64 variants): framing, the server-side session driver, and a byte-stream adapter
//! used to tunnel SPDY through binary messages.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt, Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use crate::error::Error;
use crate::exec::{ExecStreams, FinishRequest, Finisher, ResizeEvents};
use crate::negotiate::{ChannelProtocol, ExecOptions, StreamVersion};
use crate::pipe::{pipe, ChannelReader, ChannelWriter, DuplexChannel};
use crate::portforward::{PortForwardRequest, PortForwardServer};
use crate::status::{ResizeDecoder, TerminalSize};

/// Channel numbers of the remote-command protocols.
pub mod channel {
    /// Client → server standard input.
    pub const STDIN: u8 = 0;
    /// Server → client standard output.
    pub const STDOUT: u8 = 1;
    /// Server → client standard error.
    pub const STDERR: u8 = 2;
    /// Server → client error / `Status`.
    pub const ERROR: u8 = 3;
    /// Client → server terminal size.
    pub const RESIZE: u8 = 4;
    /// v5 close signal; payload is the channel being closed.
    pub const CLOSE: u8 = 255;
}

/// How long to wait for the peer's close frame after sending ours.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Encode one channel message.
pub fn encode_message(proto: ChannelProtocol, ch: u8, data: &[u8]) -> Message {
    if proto.base64 {
        let mut s = String::with_capacity(1 + data.len().div_ceil(3) * 4);
        s.push(char::from(b'0' + ch % 10));
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
        Message::text(s)
    } else {
        let mut v = Vec::with_capacity(1 + data.len());
        v.push(ch);
        v.extend_from_slice(data);
        Message::binary(v)
    }
}

/// Decode a data message into `(channel, payload)`. `None` for control messages, empty
/// messages and undecodable payloads.
///
/// Like the kubelet, the framing follows the protocol, not the message type: the Python
/// client sends `str` stdin as text messages even on binary protocols.
pub fn decode_message(proto: ChannelProtocol, msg: &Message) -> Option<(u8, Bytes)> {
    let payload: Bytes = match msg {
        Message::Binary(b) => b.clone(),
        Message::Text(t) => Bytes::from(t.clone()),
        _ => return None,
    };
    let (&first, rest) = payload.split_first()?;
    if proto.base64 {
        let ch = first.checked_sub(b'0').filter(|c| *c <= 9)?;
        let data = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        Some((ch, Bytes::from(data)))
    } else {
        Some((first, payload.slice(1..)))
    }
}

/// Where a client → server channel goes.
enum Inbound {
    Pipe(ChannelWriter),
    Resize(ResizeDecoder, mpsc::Sender<TerminalSize>),
}

type Outbound = SelectAll<BoxStream<'static, (u8, Bytes)>>;

/// Stream the chunks written into a pipe, tagged with their channel, until EOF.
fn outbound_stream(ch: u8, reader: ChannelReader) -> BoxStream<'static, (u8, Bytes)> {
    futures::stream::unfold(reader, move |mut r| async move {
        match r.next_chunk().await {
            Ok(Some(b)) => Some(((ch, b), r)),
            _ => None,
        }
    })
    .boxed()
}

/// Why [`ChannelDriver::run`] returned.
enum RunEnd<T> {
    Stopped(T),
    PeerClosed,
    OutboundDone,
}

/// Server-side multiplexer of one channel-protocol WebSocket.
struct ChannelDriver<S> {
    ws: WebSocketStream<S>,
    proto: ChannelProtocol,
    inbound: HashMap<u8, Inbound>,
    outbound: Outbound,
    outbound_open: bool,
}

async fn write_pending(
    inbound: &mut HashMap<u8, Inbound>,
    pending: Option<&(u8, Bytes)>,
) -> io::Result<usize> {
    let Some((ch, data)) = pending else {
        return futures::future::pending().await;
    };
    match inbound.get_mut(ch) {
        Some(Inbound::Pipe(w)) => w.write(data).await,
        _ => Ok(data.len()),
    }
}

impl<S> ChannelDriver<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn send(&mut self, ch: u8, data: &[u8]) -> Result<(), tungstenite::Error> {
        self.ws.send(encode_message(self.proto, ch, data)).await
    }

    /// Move bytes both ways until `stop` resolves, the peer goes away, or (if asked) every
    /// outbound pipe has reached EOF.
    async fn run<F: Future>(
        &mut self,
        stop: F,
        stop_when_outbound_done: bool,
    ) -> RunEnd<F::Output> {
        let Self {
            ws,
            proto,
            inbound,
            outbound,
            outbound_open,
        } = self;
        let proto = *proto;
        let mut pending: Option<(u8, Bytes)> = None;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                r = &mut stop => return RunEnd::Stopped(r),
                res = write_pending(inbound, pending.as_ref()) => {
                    let (ch, data) = pending.take().expect("branch only runs with pending data");
                    match res {
                        Ok(n) if n > 0 && n < data.len() => pending = Some((ch, data.slice(n..))),
                        Ok(n) if n > 0 => {}
                        // Reader gone: discard what it will never read.
                        _ => { inbound.remove(&ch); }
                    }
                }
                msg = ws.next(), if pending.is_none() => {
                    let msg = match msg {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "websocket read failed");
                            return RunEnd::PeerClosed;
                        }
                        None => return RunEnd::PeerClosed,
                    };
                    if let Message::Close(_) = msg {
                        return RunEnd::PeerClosed;
                    }
                    let Some((ch, data)) = decode_message(proto, &msg) else { continue };
                    if ch == channel::CLOSE && proto.version >= StreamVersion::V5 {
                        if let Some(&closed) = data.first() {
                            tracing::debug!(channel = closed, "client closed channel");
                            inbound.remove(&closed);
                        }
                        continue;
                    }
                    match inbound.get_mut(&ch) {
                        Some(Inbound::Pipe(_)) if !data.is_empty() => pending = Some((ch, data)),
                        Some(Inbound::Resize(dec, tx)) => {
                            for size in dec.push(&data) {
                                if tx.try_send(size).is_err() {
                                    tracing::debug!("resize event dropped: receiver full or gone");
                                }
                            }
                        }
                        _ => {}
                    }
                }
                item = outbound.next(), if *outbound_open => match item {
                    Some((ch, data)) => {
                        if let Err(e) = ws.send(encode_message(proto, ch, &data)).await {
                            tracing::debug!(error = %e, "websocket write failed");
                            return RunEnd::PeerClosed;
                        }
                    }
                    None => {
                        *outbound_open = false;
                        if stop_when_outbound_done {
                            return RunEnd::OutboundDone;
                        }
                    }
                },
            }
        }
    }

    /// Send what outbound pipes already hold, without waiting for more.
    async fn drain_outbound(&mut self) -> Result<(), tungstenite::Error> {
        while self.outbound_open {
            match self.outbound.next().now_or_never() {
                Some(Some((ch, data))) => self.send(ch, &data).await?,
                Some(None) => self.outbound_open = false,
                None => break,
            }
        }
        Ok(())
    }

    /// Send a close frame and wait (bounded) for the peer's.
    async fn close(mut self) {
        self.inbound.clear();
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        if self.ws.close(Some(frame)).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// Serve an exec/attach session over an upgraded WebSocket connection.
pub(crate) async fn serve_exec<S>(
    io: S,
    proto: ChannelProtocol,
    opts: ExecOptions,
) -> Result<ExecStreams, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let mut driver = ChannelDriver {
        ws,
        proto,
        inbound: HashMap::new(),
        outbound: SelectAll::new(),
        outbound_open: true,
    };
    let mut streams = ExecStreams::new(opts.tty);
    if opts.stdin {
        let (w, r) = pipe();
        driver.inbound.insert(channel::STDIN, Inbound::Pipe(w));
        streams.stdin = Some(r);
    }
    for (enabled, ch, slot) in [
        (opts.stdout, channel::STDOUT, &mut streams.stdout),
        (opts.stderr, channel::STDERR, &mut streams.stderr),
    ] {
        if enabled {
            let (w, r) = pipe();
            driver.outbound.push(outbound_stream(ch, r));
            *slot = Some(w);
        }
    }
    let (resize_tx, resize_rx) = mpsc::channel(16);
    driver.inbound.insert(
        channel::RESIZE,
        Inbound::Resize(ResizeDecoder::default(), resize_tx),
    );
    streams.resize = ResizeEvents::new(resize_rx);

    // Like the kubelet: an empty message on the lowest writable channel tells the client
    // the session is established.
    let first = if opts.stdout {
        channel::STDOUT
    } else if opts.stderr {
        channel::STDERR
    } else {
        channel::ERROR
    };
    driver.send(first, &[]).await?;

    let (finish_tx, finish_rx) = oneshot::channel::<FinishRequest>();
    streams.finisher = Finisher::WebSocket(finish_tx);
    tokio::spawn(async move {
        match driver.run(finish_rx, false).await {
            RunEnd::Stopped(Ok(FinishRequest { status, done })) => {
                let result = async {
                    driver.drain_outbound().await?;
                    let payload = status.encode(proto.version.json_status());
                    if !payload.is_empty() {
                        driver.send(channel::ERROR, &payload).await?;
                    }
                    Ok::<_, tungstenite::Error>(())
                }
                .await
                .map_err(Error::from);
                driver.close().await;
                let _ = done.send(result);
            }
            // ExecStreams dropped without finish: just close.
            RunEnd::Stopped(Err(_)) | RunEnd::OutboundDone => driver.close().await,
            RunEnd::PeerClosed => {
                tracing::debug!("exec client went away");
            }
        }
    });
    Ok(streams)
}

/// Serve a v4 channel-protocol port-forward over an upgraded WebSocket connection.
///
/// For the i-th port, channel 2i carries data and 2i+1 errors; each starts with the
/// port number (little endian). The WebSocket closes once every request's data and error
/// writers are dropped or shut down, or when the client goes away.
pub(crate) async fn serve_port_forward<S>(
    io: S,
    proto: ChannelProtocol,
    ports: &[u16],
) -> Result<PortForwardServer, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if ports.len() > 127 {
        return Err(Error::Protocol(format!(
            "too many ports for the channel protocol: {}",
            ports.len()
        )));
    }
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    let mut driver = ChannelDriver {
        ws,
        proto,
        inbound: HashMap::new(),
        outbound: SelectAll::new(),
        outbound_open: true,
    };
    let mut requests = Vec::with_capacity(ports.len());
    for (i, &port) in ports.iter().enumerate() {
        let data_ch = (2 * i) as u8;
        let err_ch = data_ch + 1;
        let (in_w, in_r) = pipe();
        let (out_w, out_r) = pipe();
        let (err_w, err_r) = pipe();
        driver.inbound.insert(data_ch, Inbound::Pipe(in_w));
        driver.outbound.push(outbound_stream(data_ch, out_r));
        driver.outbound.push(outbound_stream(err_ch, err_r));
        driver.send(data_ch, &port.to_le_bytes()).await?;
        driver.send(err_ch, &port.to_le_bytes()).await?;
        requests.push(PortForwardRequest {
            port,
            request_id: i.to_string(),
            stream: DuplexChannel {
                reader: in_r,
                writer: out_w,
            },
            error: err_w,
        });
    }
    tokio::spawn(async move {
        match driver.run(futures::future::pending::<()>(), true).await {
            RunEnd::PeerClosed => tracing::debug!("port-forward client went away"),
            RunEnd::OutboundDone | RunEnd::Stopped(()) => driver.close().await,
        }
    });
    Ok(PortForwardServer::fixed(requests))
}

/// A WebSocket seen as a byte stream: each write is one binary message, reads concatenate
/// the payloads of received messages. Empty messages are skipped (they are not EOF); a close
/// frame or the end of the connection is EOF.
///
/// This is how kubectl ≥ 1.31 tunnels SPDY port-forward (`SPDY/3.1+portforward.k8s.io`).
pub struct WsByteStream<S> {
    ws: WebSocketStream<S>,
    read_buf: Bytes,
}

impl<S> WsByteStream<S> {
    /// Wrap an established WebSocket.
    pub fn new(ws: WebSocketStream<S>) -> Self {
        WsByteStream {
            ws,
            read_buf: Bytes::new(),
        }
    }
}

impl<S> WsByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Server side over an upgraded connection whose 101 response has been sent.
    pub async fn server(io: S) -> Self {
        Self::new(WebSocketStream::from_raw_socket(io, Role::Server, None).await)
    }
}

fn ws_io_error(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, e)
        }
        e => io::Error::other(e),
    }
}

impl<S> AsyncRead for WsByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.read_buf.is_empty() {
                let n = self.read_buf.len().min(buf.remaining());
                let chunk = self.read_buf.split_to(n);
                buf.put_slice(&chunk);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(b))) => self.read_buf = b,
                Some(Ok(Message::Text(t))) => self.read_buf = Bytes::from(t),
                Some(Ok(_)) => {}
                Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                )) => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(ws_io_error(e))),
            }
        }
    }
}

impl<S> AsyncWrite for WsByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(ws_io_error)?;
        Pin::new(&mut self.ws)
            .start_send(Message::binary(Bytes::copy_from_slice(buf)))
            .map_err(ws_io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(ws_io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.ws).poll_close(cx)) {
            Ok(())
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(ws_io_error(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_base64_framing_round_trip() {
        for proto in [
            ChannelProtocol::binary(StreamVersion::V5),
            ChannelProtocol {
                version: StreamVersion::V4,
                base64: true,
                named: true,
            },
        ] {
            let m = encode_message(proto, 2, b"hello\x00\xff");
            assert_eq!(
                decode_message(proto, &m),
                Some((2, Bytes::from_static(b"hello\x00\xff")))
            );
        }
        let b64 = ChannelProtocol {
            version: StreamVersion::V1,
            base64: true,
            named: true,
        };
        assert_eq!(encode_message(b64, 1, b"hi"), Message::text("1aGk="));
        assert_eq!(
            encode_message(ChannelProtocol::binary(StreamVersion::V4), 1, b""),
            Message::binary(vec![1u8])
        );
        assert_eq!(
            decode_message(
                ChannelProtocol::binary(StreamVersion::V4),
                &Message::binary(Vec::<u8>::new())
            ),
            None
        );
        assert_eq!(decode_message(b64, &Message::text("x")), None);
        // Text frames on binary protocols (Python's str stdin) carry the channel byte too.
        assert_eq!(
            decode_message(
                ChannelProtocol::binary(StreamVersion::V5),
                &Message::text("\u{0}hi")
            ),
            Some((0, Bytes::from_static(b"hi")))
        );
    }
}
