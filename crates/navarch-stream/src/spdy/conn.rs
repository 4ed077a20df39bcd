//! A multiplexed SPDY/3.1 connection (either side), spdystream-compatible.
//!
//! Three kinds of tasks cooperate:
//! - the *connection task* reads frames, owns the stream table and the header decompressor;
//! - the *writer task* owns the write half and the header compressor, so header blocks are
//!   compressed in exactly the order they go on the wire;
//! - one *pump* per open stream moves what the application writes into DATA frames and
//!   ends with an empty DATA + FIN.
//!
//! Incoming data is delivered into per-stream pipes; when one is full the connection task
//! stops reading (TCP back-pressure, like spdystream) but keeps serving control requests.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::frame::{decode_header_block, encode_header_block, Frame, SpdyHeaders, FLAG_FIN};
use super::zlib::{HeaderCompressor, HeaderDecompressor};
use super::{rst, SpdyError};
use crate::error::Error;
use crate::pipe::{pipe, ChannelReader, ChannelWriter, DuplexChannel};

/// How long a closing connection waits for the peer to hang up after our write side is shut.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long a closing connection waits, after every stream has sent its FIN, for the peer to
/// close its side of the streams before the connection is shut down anyway.
///
/// spdystream discards frames still queued for its stream workers when it reads EOF (or a
/// GOAWAY), so shutting down right after the last DATA frame loses output at random; like
/// spdystream's own `Close`, wait for the peer to be done first.
pub const CLOSE_LINGER: Duration = Duration::from_secs(30);
/// Bytes batched by the writer before it writes to the socket.
const WRITE_BATCH: usize = 64 * 1024;

/// One open SPDY stream: its headers and a duplex byte channel.
///
/// Reading yields the peer's DATA until its FIN (EOF) or RST. Shutting down (or dropping)
/// the writer sends an empty DATA frame with FIN.
#[derive(Debug)]
pub struct SpdyStream {
    /// Stream id.
    pub id: u32,
    /// Headers of the SYN_STREAM that opened it.
    pub headers: SpdyHeaders,
    /// Payload in both directions.
    pub io: DuplexChannel,
}

impl AsyncRead for SpdyStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for SpdyStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A stream opened by the peer, not yet answered. [`IncomingStream::accept`] sends the
/// SYN_REPLY (spdystream clients block until it arrives); dropping it resets the stream.
#[derive(Debug)]
pub struct IncomingStream {
    /// Stream id.
    pub id: u32,
    /// Decoded SYN_STREAM headers.
    pub headers: SpdyHeaders,
    parts: Option<(DuplexChannel, ChannelReader)>,
    ctrl: mpsc::UnboundedSender<Ctrl>,
}

impl IncomingStream {
    /// Reply to the stream and start moving its data.
    pub fn accept(mut self) -> SpdyStream {
        let (io, src) = self
            .parts
            .take()
            .expect("parts present until accept or drop");
        let _ = self.ctrl.send(Ctrl::Accept { id: self.id, src });
        SpdyStream {
            id: self.id,
            headers: std::mem::take(&mut self.headers),
            io,
        }
    }

    /// Refuse the stream with RST_STREAM.
    pub fn reject(mut self, status: u32) {
        self.parts = None;
        let _ = self.ctrl.send(Ctrl::Reset {
            id: self.id,
            status,
        });
    }
}

impl Drop for IncomingStream {
    fn drop(&mut self) {
        if self.parts.take().is_some() {
            let _ = self.ctrl.send(Ctrl::Reset {
                id: self.id,
                status: rst::REFUSED_STREAM,
            });
        }
    }
}

/// Streams opened by the peer, in order. Ends when the connection ends.
#[derive(Debug)]
pub struct IncomingStreams {
    rx: mpsc::Receiver<IncomingStream>,
}

impl IncomingStreams {
    /// The next stream the peer opened.
    pub async fn next(&mut self) -> Option<IncomingStream> {
        self.rx.recv().await
    }
}

/// Handle to a SPDY connection. Cheap to clone; the connection lives until the peer hangs
/// up or [`SpdyConnection::close`] completes.
#[derive(Debug, Clone)]
pub struct SpdyConnection {
    ctrl: mpsc::UnboundedSender<Ctrl>,
}

enum Ctrl {
    Accept {
        id: u32,
        src: ChannelReader,
    },
    Reset {
        id: u32,
        status: u32,
    },
    Open {
        headers: SpdyHeaders,
        reply: oneshot::Sender<Result<SpdyStream, Error>>,
    },
    LocalClosed(u32),
    Ping(oneshot::Sender<()>),
    Close(Option<oneshot::Sender<()>>),
}

enum Out {
    SynStream { id: u32, headers: SpdyHeaders },
    SynReply { id: u32 },
    Data { id: u32, data: Bytes, fin: bool },
    Rst { id: u32, status: u32 },
    Ping(u32),
    GoAway(u32),
    Shutdown(oneshot::Sender<()>),
}

impl SpdyConnection {
    /// Serve a connection whose upgrade response has been sent. Streams opened by the
    /// client arrive on the returned [`IncomingStreams`].
    pub fn server<T>(io: T) -> (SpdyConnection, IncomingStreams)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(64);
        let conn = Self::start(io, false, Some(tx));
        (conn, IncomingStreams { rx })
    }

    /// Client side of an upgraded connection. Streams the server opens are refused.
    pub fn client<T>(io: T) -> SpdyConnection
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        Self::start(io, true, None)
    }

    fn start<T>(io: T, is_client: bool, incoming: Option<mpsc::Sender<IncomingStream>>) -> Self
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read, write) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(256);
        let (ctrl_tx, ctrl_rx) = mpsc::unbounded_channel();
        tokio::spawn(writer_task(write, out_rx));
        let task = ConnTask {
            buf: BytesMut::with_capacity(16 * 1024),
            decompressor: HeaderDecompressor::new(),
            streams: HashMap::new(),
            out: out_tx,
            ctrl_tx: ctrl_tx.clone(),
            incoming,
            is_client,
            next_stream_id: if is_client { 1 } else { 2 },
            next_ping_id: if is_client { 1 } else { 2 },
            pings: HashMap::new(),
            closing: None,
            shutdown_sent: false,
            goaway_received: false,
            linger_until: None,
        };
        tokio::spawn(task.run(read, ctrl_rx));
        SpdyConnection { ctrl: ctrl_tx }
    }

    /// Open a stream with the given headers and wait for the peer's SYN_REPLY.
    pub async fn open_stream(&self, headers: SpdyHeaders) -> Result<SpdyStream, Error> {
        let (reply, rx) = oneshot::channel();
        self.ctrl
            .send(Ctrl::Open { headers, reply })
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Send a PING and wait for its echo.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let start = Instant::now();
        let (tx, rx) = oneshot::channel();
        self.ctrl.send(Ctrl::Ping(tx)).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?;
        Ok(start.elapsed())
    }

    /// Gracefully close: every open stream sends what it has buffered and a FIN, then the
    /// write side of the connection is shut down. Resolves once that is on the wire.
    /// Closing a connection that has already ended succeeds.
    pub async fn close(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        if self.ctrl.send(Ctrl::Close(Some(tx))).is_err() {
            return Ok(());
        }
        let _ = rx.await;
        Ok(())
    }

    /// Start a graceful close without waiting for it.
    pub fn start_close(&self) {
        let _ = self.ctrl.send(Ctrl::Close(None));
    }

    /// Whether the connection task has stopped.
    pub fn is_closed(&self) -> bool {
        self.ctrl.is_closed()
    }
}

async fn writer_task<W: AsyncWrite>(write: W, mut rx: mpsc::Receiver<Out>) {
    tokio::pin!(write);
    let mut compressor = HeaderCompressor::new();
    let mut buf = BytesMut::with_capacity(WRITE_BATCH);
    let mut shutdown: Option<oneshot::Sender<()>> = None;
    'outer: while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(item) = next.take() {
            let frame = match item {
                Out::SynStream { id, headers } => {
                    match compressor.compress(&encode_header_block(&headers)) {
                        Ok(block) => Frame::SynStream {
                            stream_id: id,
                            associated_id: 0,
                            priority: 0,
                            slot: 0,
                            flags: 0,
                            header_block: block.into(),
                        },
                        Err(e) => {
                            tracing::warn!(error = %e, "spdy header compression failed");
                            break 'outer;
                        }
                    }
                }
                Out::SynReply { id } => {
                    match compressor.compress(&encode_header_block(&SpdyHeaders::default())) {
                        Ok(block) => Frame::SynReply {
                            stream_id: id,
                            flags: 0,
                            header_block: block.into(),
                        },
                        Err(e) => {
                            tracing::warn!(error = %e, "spdy header compression failed");
                            break 'outer;
                        }
                    }
                }
                Out::Data { id, data, fin } => Frame::Data {
                    stream_id: id,
                    flags: if fin { FLAG_FIN } else { 0 },
                    data,
                },
                Out::Rst { id, status } => Frame::RstStream {
                    stream_id: id,
                    status,
                },
                Out::Ping(id) => Frame::Ping { id },
                Out::GoAway(last) => Frame::GoAway {
                    last_good_stream_id: last,
                    status: 0,
                },
                Out::Shutdown(done) => {
                    shutdown = Some(done);
                    break;
                }
            };
            frame.encode(&mut buf);
            if buf.len() < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !buf.is_empty() {
            if let Err(e) = async {
                write.write_all(&buf).await?;
                write.flush().await
            }
            .await
            {
                tracing::debug!(error = %e, "spdy connection write failed");
                break;
            }
            buf.clear();
        }
        if shutdown.is_some() {
            break;
        }
    }
    let _ = write.shutdown().await;
    if let Some(done) = shutdown {
        let _ = done.send(());
    }
    // Keep receiving so senders never block on a dead writer; frames are dropped.
    while rx.recv().await.is_some() {}
}

/// Move what the application writes into DATA frames; FIN at EOF or when asked to close.
async fn pump(
    id: u32,
    mut src: ChannelReader,
    out: mpsc::Sender<Out>,
    ctrl: mpsc::UnboundedSender<Ctrl>,
    mut close: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            chunk = src.next_chunk() => match chunk {
                Ok(Some(data)) => {
                    if out.send(Out::Data { id, data, fin: false }).await.is_err() {
                        return;
                    }
                }
                _ => break,
            },
            _ = &mut close => {
                while let Some(Ok(Some(data))) = src.try_chunk() {
                    if out.send(Out::Data { id, data, fin: false }).await.is_err() {
                        return;
                    }
                }
                break;
            }
        }
    }
    let _ = out
        .send(Out::Data {
            id,
            data: Bytes::new(),
            fin: true,
        })
        .await;
    let _ = ctrl.send(Ctrl::LocalClosed(id));
}

#[derive(Default)]
struct StreamEntry {
    /// Where the peer's DATA goes; `None` once the peer sent FIN or the reader is gone.
    inbound: Option<ChannelWriter>,
    /// Whether the peer has half-closed (FIN).
    remote_closed: bool,
    /// Whether our FIN has been queued.
    local_closed: bool,
    /// Running pump: graceful-close signal and abort handle.
    pump: Option<(oneshot::Sender<()>, AbortHandle)>,
    /// A stream we opened, waiting for SYN_REPLY.
    opening: Option<Opening>,
    /// An incoming stream not yet accepted.
    unanswered: bool,
}

struct Opening {
    reply: oneshot::Sender<Result<SpdyStream, Error>>,
    stream: SpdyStream,
    src: ChannelReader,
}

struct ConnTask {
    buf: BytesMut,
    decompressor: HeaderDecompressor,
    streams: HashMap<u32, StreamEntry>,
    out: mpsc::Sender<Out>,
    ctrl_tx: mpsc::UnboundedSender<Ctrl>,
    incoming: Option<mpsc::Sender<IncomingStream>>,
    is_client: bool,
    next_stream_id: u32,
    next_ping_id: u32,
    pings: HashMap<u32, oneshot::Sender<()>>,
    closing: Option<Vec<oneshot::Sender<()>>>,
    shutdown_sent: bool,
    goaway_received: bool,
    /// When our FINs are out and we wait for the peer (see [`CLOSE_LINGER`]).
    linger_until: Option<tokio::time::Instant>,
}

/// Why the connection task stopped.
enum Stop {
    Eof,
    Fatal(SpdyError),
}

async fn write_pending(
    streams: &mut HashMap<u32, StreamEntry>,
    pending: Option<&(u32, Bytes, bool)>,
) -> io::Result<usize> {
    let Some((id, data, _)) = pending else {
        return futures::future::pending().await;
    };
    match streams.get_mut(id).and_then(|e| e.inbound.as_mut()) {
        Some(w) if !data.is_empty() => w.write(data).await,
        _ => Ok(data.len()),
    }
}

impl ConnTask {
    async fn run<R: AsyncRead + Unpin>(
        mut self,
        mut read: R,
        mut ctrl_rx: mpsc::UnboundedReceiver<Ctrl>,
    ) {
        let mut pending: Option<(u32, Bytes, bool)> = None;
        let mut eof = false;
        let mut deadline: Option<tokio::time::Instant> = None;
        let stop = loop {
            if pending.is_none() {
                match Frame::decode(&mut self.buf) {
                    Ok(Some(frame)) => {
                        match self.handle_frame(frame).await {
                            Ok(p) => pending = p,
                            Err(e) => break Stop::Fatal(e),
                        }
                        continue;
                    }
                    Ok(None) if eof => break Stop::Eof,
                    Ok(None) => {}
                    Err(e) => break Stop::Fatal(e),
                }
            }
            if self.closing.is_some() && !self.shutdown_sent {
                self.maybe_finish_close().await;
            }
            if self.shutdown_sent && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + CLOSE_GRACE);
            }
            let grace = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => futures::future::pending().await,
                }
            };
            let linger_at = self.linger_until.filter(|_| !self.shutdown_sent);
            let linger = async move {
                match linger_at {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                c = ctrl_rx.recv() => {
                    // The task holds a sender itself, so the channel never ends here.
                    if let Some(c) = c {
                        self.handle_ctrl(c).await;
                    }
                }
                res = write_pending(&mut self.streams, pending.as_ref()) => {
                    let (id, data, fin) = pending.take().expect("branch only runs with pending data");
                    match res {
                        Ok(n) if n > 0 && n < data.len() => pending = Some((id, data.slice(n..), fin)),
                        Ok(n) if n > 0 || data.is_empty() => {
                            if fin {
                                self.remote_fin(id);
                            }
                        }
                        _ => {
                            // Reader gone: stop delivering to this stream.
                            if let Some(e) = self.streams.get_mut(&id) {
                                e.inbound = None;
                            }
                            if fin {
                                self.remote_fin(id);
                            }
                        }
                    }
                }
                n = read.read_buf(&mut self.buf), if pending.is_none() && !eof => {
                    match n {
                        Ok(0) => eof = true,
                        Ok(_) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "spdy connection read failed");
                            eof = true;
                        }
                    }
                }
                _ = grace => break Stop::Eof,
                _ = linger => {
                    tracing::debug!("peer did not close its streams in time; shutting down");
                    self.shutdown_write().await;
                }
            }
        };
        if let Stop::Fatal(e) = &stop {
            tracing::debug!(error = %e, "spdy protocol error, closing connection");
            let _ = self.out.try_send(Out::GoAway(0));
        }
        self.teardown();
    }

    fn teardown(&mut self) {
        for (_, e) in self.streams.drain() {
            if let Some((_, abort)) = e.pump {
                abort.abort();
            }
            if let Some(o) = e.opening {
                let _ = o.reply.send(Err(Error::Closed));
            }
        }
        self.incoming = None;
        self.pings.clear();
        if let Some(waiters) = self.closing.take() {
            for w in waiters {
                let _ = w.send(());
            }
        }
    }

    async fn send(&self, out: Out) {
        // A dead writer drains and drops; nothing to do on error.
        let _ = self.out.send(out).await;
    }

    fn start_pump(&mut self, id: u32, src: ChannelReader) {
        let (close_tx, close_rx) = oneshot::channel();
        let handle = tokio::spawn(pump(
            id,
            src,
            self.out.clone(),
            self.ctrl_tx.clone(),
            close_rx,
        ));
        if let Some(e) = self.streams.get_mut(&id) {
            if self.closing.is_some() {
                let _ = close_tx.send(());
                e.pump = Some((oneshot::channel().0, handle.abort_handle()));
            } else {
                e.pump = Some((close_tx, handle.abort_handle()));
            }
        }
    }

    /// The peer finished sending on `id`.
    fn remote_fin(&mut self, id: u32) {
        if let Some(e) = self.streams.get_mut(&id) {
            e.remote_closed = true;
            e.inbound = None;
            if e.local_closed {
                self.streams.remove(&id);
            }
        }
    }

    fn reset_stream(&mut self, id: u32) {
        if let Some(e) = self.streams.remove(&id) {
            if let Some((_, abort)) = e.pump {
                abort.abort();
            }
            if let Some(o) = e.opening {
                let _ = o.reply.send(Err(Error::UnexpectedStream(format!(
                    "stream {id} was reset"
                ))));
            }
        }
    }

    async fn handle_ctrl(&mut self, c: Ctrl) {
        match c {
            Ctrl::Accept { id, src } => {
                let Some(e) = self.streams.get_mut(&id) else {
                    return;
                };
                e.unanswered = false;
                self.send(Out::SynReply { id }).await;
                self.start_pump(id, src);
            }
            Ctrl::Reset { id, status } => {
                if self.streams.contains_key(&id) {
                    self.reset_stream(id);
                    self.send(Out::Rst { id, status }).await;
                }
                self.maybe_finish_close().await;
            }
            Ctrl::Open { headers, reply } => {
                if self.closing.is_some()
                    || self.goaway_received
                    || self.next_stream_id > 0x7fff_ffff
                {
                    let _ = reply.send(Err(Error::Closed));
                    return;
                }
                let id = self.next_stream_id;
                self.next_stream_id += 2;
                let (in_w, in_r) = pipe();
                let (out_w, out_r) = pipe();
                self.streams.insert(
                    id,
                    StreamEntry {
                        inbound: Some(in_w),
                        opening: Some(Opening {
                            reply,
                            stream: SpdyStream {
                                id,
                                headers: headers.clone(),
                                io: DuplexChannel {
                                    reader: in_r,
                                    writer: out_w,
                                },
                            },
                            src: out_r,
                        }),
                        ..StreamEntry::default()
                    },
                );
                self.send(Out::SynStream { id, headers }).await;
            }
            Ctrl::LocalClosed(id) => {
                if let Some(e) = self.streams.get_mut(&id) {
                    e.local_closed = true;
                    e.pump = None;
                    if e.remote_closed {
                        self.streams.remove(&id);
                    }
                }
                self.maybe_finish_close().await;
            }
            Ctrl::Ping(done) => {
                let id = self.next_ping_id;
                self.next_ping_id = self.next_ping_id.wrapping_add(2);
                self.pings.insert(id, done);
                self.send(Out::Ping(id)).await;
            }
            Ctrl::Close(done) => {
                let first = self.closing.is_none();
                self.closing.get_or_insert_with(Vec::new).extend(done);
                if first {
                    let ids: Vec<u32> = self.streams.keys().copied().collect();
                    for id in ids {
                        let e = self.streams.get_mut(&id).expect("listed above");
                        if e.unanswered || e.opening.is_some() {
                            self.reset_stream(id);
                            self.send(Out::Rst {
                                id,
                                status: rst::CANCEL,
                            })
                            .await;
                        } else if let Some((close, _)) = e.pump.as_mut() {
                            let close = std::mem::replace(close, oneshot::channel().0);
                            let _ = close.send(());
                        }
                    }
                }
                self.maybe_finish_close().await;
            }
        }
    }

    /// Once closing, every pump has sent its FIN and the peer is done with the streams (all
    /// closed or reset, or a GOAWAY), shut the write side down.
    async fn maybe_finish_close(&mut self) {
        if self.shutdown_sent || self.closing.is_none() {
            return;
        }
        if self.streams.values().any(|e| e.pump.is_some()) {
            return;
        }
        if !self.streams.is_empty() && !self.goaway_received {
            if self.linger_until.is_none() {
                self.linger_until = Some(tokio::time::Instant::now() + CLOSE_LINGER);
            }
            return;
        }
        self.shutdown_write().await;
    }

    async fn shutdown_write(&mut self) {
        if self.shutdown_sent {
            return;
        }
        self.shutdown_sent = true;
        let (tx, rx) = oneshot::channel();
        self.send(Out::Shutdown(tx)).await;
        let waiters = self.closing.take().unwrap_or_default();
        self.closing = Some(Vec::new());
        tokio::spawn(async move {
            let _ = rx.await;
            for w in waiters {
                let _ = w.send(());
            }
        });
    }

    fn decode_headers(
        &mut self,
        block: &[u8],
    ) -> Result<Result<SpdyHeaders, SpdyError>, SpdyError> {
        // A decompression failure desynchronises the shared zlib stream: fatal.
        let raw = self.decompressor.decompress(block)?;
        Ok(decode_header_block(&raw))
    }

    /// Handle one frame; returns data to deliver before reading further.
    async fn handle_frame(
        &mut self,
        frame: Frame,
    ) -> Result<Option<(u32, Bytes, bool)>, SpdyError> {
        match frame {
            Frame::SynStream {
                stream_id: id,
                flags,
                header_block,
                ..
            } => {
                let headers = self.decode_headers(&header_block)?;
                let acceptable = id != 0
                    && (id % 2 == 1) != self.is_client
                    && !self.streams.contains_key(&id)
                    && self.closing.is_none();
                let (Ok(headers), true, Some(incoming)) =
                    (headers, acceptable, self.incoming.clone())
                else {
                    let status = if self.streams.contains_key(&id) {
                        rst::STREAM_IN_USE
                    } else {
                        rst::REFUSED_STREAM
                    };
                    tracing::debug!(stream = id, "refusing spdy stream");
                    if id != 0 && !self.streams.contains_key(&id) {
                        self.send(Out::Rst { id, status }).await;
                    }
                    return Ok(None);
                };
                let (in_w, in_r) = pipe();
                let (out_w, out_r) = pipe();
                let fin = flags & FLAG_FIN != 0;
                self.streams.insert(
                    id,
                    StreamEntry {
                        inbound: (!fin).then_some(in_w),
                        remote_closed: fin,
                        unanswered: true,
                        ..StreamEntry::default()
                    },
                );
                let stream = IncomingStream {
                    id,
                    headers,
                    parts: Some((
                        DuplexChannel {
                            reader: in_r,
                            writer: out_w,
                        },
                        out_r,
                    )),
                    ctrl: self.ctrl_tx.clone(),
                };
                if incoming.send(stream).await.is_err() {
                    // Nobody listens: the dropped IncomingStream queues a reset.
                    self.incoming = None;
                }
                Ok(None)
            }
            Frame::SynReply {
                stream_id: id,
                flags,
                header_block,
            } => {
                let _ = self.decode_headers(&header_block)?;
                let Some(opening) = self.streams.get_mut(&id).and_then(|e| e.opening.take()) else {
                    return Ok(None);
                };
                let Opening { reply, stream, src } = opening;
                self.start_pump(id, src);
                if reply.send(Ok(stream)).is_err() {
                    self.reset_stream(id);
                    self.send(Out::Rst {
                        id,
                        status: rst::CANCEL,
                    })
                    .await;
                    return Ok(None);
                }
                if flags & FLAG_FIN != 0 {
                    self.remote_fin(id);
                }
                Ok(None)
            }
            Frame::Headers {
                stream_id: id,
                flags,
                header_block,
            } => {
                let _ = self.decode_headers(&header_block)?;
                if flags & FLAG_FIN != 0 {
                    return Ok(Some((id, Bytes::new(), true)));
                }
                Ok(None)
            }
            Frame::RstStream {
                stream_id: id,
                status,
            } => {
                tracing::debug!(stream = id, status, "spdy stream reset by peer");
                self.reset_stream(id);
                self.maybe_finish_close().await;
                Ok(None)
            }
            Frame::Ping { id } => {
                if (id % 2 == 1) == self.is_client {
                    if let Some(done) = self.pings.remove(&id) {
                        let _ = done.send(());
                    }
                } else {
                    self.send(Out::Ping(id)).await;
                }
                Ok(None)
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                tracing::debug!(last_good_stream_id, status, "spdy GOAWAY received");
                self.goaway_received = true;
                Ok(None)
            }
            Frame::Data {
                stream_id: id,
                flags,
                data,
            } => {
                let fin = flags & FLAG_FIN != 0;
                if !self.streams.contains_key(&id) {
                    tracing::trace!(stream = id, "data for unknown spdy stream ignored");
                    return Ok(None);
                }
                Ok(Some((id, data, fin)))
            }
            Frame::Settings { .. } | Frame::WindowUpdate { .. } | Frame::Unknown { .. } => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_ping_and_close_in_memory() {
        let (a, b) = tokio::io::duplex(1024);
        let (server, mut incoming) = SpdyConnection::server(a);
        let client = SpdyConnection::client(b);

        let echo = tokio::spawn(async move {
            while let Some(s) = incoming.next().await {
                let mut s = s.accept();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.io.into_split();
                    tokio::io::copy(&mut r, &mut w).await.unwrap();
                    w.shutdown().await.unwrap();
                    let _ = &mut s.headers;
                });
            }
        });

        client.ping().await.unwrap();
        let headers: SpdyHeaders = [("streamtype", "data")].into_iter().collect();
        let mut s = client.open_stream(headers).await.unwrap();
        assert_eq!(s.id, 1);
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        let (mut r, mut w) = s.io.into_split();
        let p2 = payload.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&p2).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, payload);
        s.id = 0;

        client.close().await.unwrap();
        server.close().await.unwrap();
        echo.await.unwrap();
    }
}
