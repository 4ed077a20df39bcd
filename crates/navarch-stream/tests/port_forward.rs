//! port-forward end to end: WebSocket v4 (Python/kube-rs), SPDY (kubectl ≤ 1.30) and SPDY
//! tunnelled in WebSocket (kubectl ≥ 1.31), against TCP echo targets.

mod common;

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use common::{start, TEST_TIMEOUT};
use futures::{Sink, SinkExt, Stream, StreamExt};
use navarch_stream::client::{websocket_connect, ForwardedConnection, PortForwardClient};
use navarch_stream::spdy::SpdyConnection;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

async fn next_binary(ws: &mut WebSocketStream<TcpStream>) -> Option<Vec<u8>> {
    while let Some(m) = ws.next().await {
        match m.ok()? {
            Message::Binary(b) => return Some(b.to_vec()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
    None
}

/// Python client: offers v5 and v4, must get v4; two ports, one refused.
#[tokio::test]
async fn websocket_v4_port_forward() {
    timeout(TEST_TIMEOUT, async {
        let server = start().await;
        let (mut ws, proto) = websocket_connect(
            server.tcp().await,
            "/portforward?ports=80,81",
            &["v5.channel.k8s.io", "v4.channel.k8s.io"],
        )
        .await
        .unwrap();
        assert_eq!(proto.as_deref(), Some("v4.channel.k8s.io"));
        // Initial frames: [channel, port lo, port hi] on every channel, in order.
        let mut initial = Vec::new();
        for _ in 0..4 {
            initial.push(next_binary(&mut ws).await.unwrap());
        }
        assert_eq!(
            initial,
            vec![
                vec![0, 80, 0],
                vec![1, 80, 0],
                vec![2, 81, 0],
                vec![3, 81, 0]
            ]
        );

        ws.send(Message::binary(b"\x00GET / HTTP/1.0\r\n\r\n".to_vec()))
            .await
            .unwrap();
        let mut echoed = Vec::new();
        let mut refused = None;
        while echoed.len() < 18 || refused.is_none() {
            let m = next_binary(&mut ws).await.expect("connection open");
            match m[0] {
                0 => echoed.extend_from_slice(&m[1..]),
                3 => refused = Some(String::from_utf8(m[1..].to_vec()).unwrap()),
                other => panic!("unexpected channel {other}: {m:?}"),
            }
        }
        assert_eq!(echoed, b"GET / HTTP/1.0\r\n\r\n");
        let refused = refused.unwrap();
        assert!(refused.starts_with("error forwarding port 81"), "{refused}");
        ws.close(None).await.unwrap();
    })
    .await
    .unwrap();
}

/// The pod closing its side must end a v4 WebSocket session (there is no per-stream close),
/// or clients such as Python's wait forever for EOF.
#[tokio::test]
async fn websocket_v4_closes_when_the_pod_hangs_up() {
    timeout(TEST_TIMEOUT, async {
        let server = start().await;
        let (mut ws, _) = websocket_connect(
            server.tcp().await,
            "/portforward?ports=82",
            &["v4.channel.k8s.io"],
        )
        .await
        .unwrap();
        assert_eq!(next_binary(&mut ws).await.unwrap(), vec![0, 82, 0]);
        assert_eq!(next_binary(&mut ws).await.unwrap(), vec![1, 82, 0]);
        let mut data = Vec::new();
        while let Some(m) = next_binary(&mut ws).await {
            assert_eq!(m[0], 0);
            data.extend_from_slice(&m[1..]);
        }
        assert_eq!(data, b"banner");
    })
    .await
    .unwrap();
}

async fn round_trip(conn: &mut ForwardedConnection, payload: &[u8]) -> Vec<u8> {
    let (r, w) = (&mut conn.data.reader, &mut conn.data.writer);
    let write = async {
        w.write_all(payload).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let read = async {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got) = tokio::join!(write, read);
    got
}

async fn exercise(client: PortForwardClient) {
    client.connection().ping().await.unwrap();

    // Two concurrent forwarded connections, interleaved.
    let mut a = client.forward(80).await.unwrap();
    let mut b = client.forward(80).await.unwrap();
    assert_eq!((a.request_id.as_str(), b.request_id.as_str()), ("0", "1"));
    let pa: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let pb: Vec<u8> = b"second connection".repeat(1000);
    let (ga, gb) = tokio::join!(round_trip(&mut a, &pa), round_trip(&mut b, &pb));
    assert_eq!(ga, pa);
    assert_eq!(gb, pb);
    for c in [&mut a, &mut b] {
        let mut err = String::new();
        c.error.read_to_string(&mut err).await.unwrap();
        assert_eq!(err, "");
    }

    // Refused pod port: message on the error stream, data stream ends.
    let mut c = client.forward(81).await.unwrap();
    let mut err = String::new();
    c.error.read_to_string(&mut err).await.unwrap();
    assert!(err.starts_with("error forwarding port 81"), "{err}");
    let mut rest = Vec::new();
    c.data.reader.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());

    // The connection is still usable afterwards.
    let mut d = client.forward(80).await.unwrap();
    assert_eq!(round_trip(&mut d, b"again").await, b"again");
    client.connection().ping().await.unwrap();
    client.connection().close().await.unwrap();
}

#[tokio::test]
async fn spdy_port_forward() {
    timeout(TEST_TIMEOUT, async {
        let server = start().await;
        let client = PortForwardClient::connect(server.tcp().await, "/portforward")
            .await
            .unwrap();
        exercise(client).await;
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn spdy_tunnelled_in_websocket() {
    timeout(TEST_TIMEOUT, async {
        let server = start().await;
        let client = PortForwardClient::connect_tunnel(server.tcp().await, "/portforward")
            .await
            .unwrap();
        exercise(client).await;
    })
    .await
    .unwrap();
}

/// A WebSocket byte stream that splits every write into small binary messages of varying
/// size and sprinkles empty messages in between, like gorilla's tunnelling writer did on
/// the wire (4-, 1-, 18-byte and empty messages).
struct Chopper {
    ws: WebSocketStream<TcpStream>,
    rng: u32,
    read_buf: Bytes,
}

impl Chopper {
    fn next_rand(&mut self) -> u32 {
        // xorshift32
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 17;
        self.rng ^= self.rng << 5;
        self.rng
    }
}

impl AsyncRead for Chopper {
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
                Some(Ok(Message::Binary(b))) => self.read_buf = b,
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
    }
}

impl AsyncWrite for Chopper {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io::Error::other)?;
        let r = self.next_rand();
        if r.is_multiple_of(4) {
            Pin::new(&mut self.ws)
                .start_send(Message::binary(Vec::<u8>::new()))
                .map_err(io::Error::other)?;
            ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io::Error::other)?;
        }
        let n = ((r >> 8) % 19 + 1) as usize;
        let n = n.min(buf.len());
        Pin::new(&mut self.ws)
            .start_send(Message::binary(buf[..n].to_vec()))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = ready!(Pin::new(&mut self.ws).poll_close(cx));
        Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn spdy_tunnel_survives_arbitrary_message_splitting() {
    timeout(TEST_TIMEOUT, async {
        let server = start().await;
        let (ws, proto) = websocket_connect(
            server.tcp().await,
            "/portforward",
            &["SPDY/3.1+portforward.k8s.io"],
        )
        .await
        .unwrap();
        assert_eq!(proto.as_deref(), Some("SPDY/3.1+portforward.k8s.io"));
        let chopper = Chopper {
            ws,
            rng: 0x9e37_79b9,
            read_buf: Bytes::new(),
        };
        let client = PortForwardClient::new(SpdyConnection::client(chopper));
        client.connection().ping().await.unwrap();
        let mut a = client.forward(80).await.unwrap();
        let payload: Vec<u8> = (0..5_000u32).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(round_trip(&mut a, &payload).await, payload);
        let mut c = client.forward(81).await.unwrap();
        let mut err = String::new();
        c.error.read_to_string(&mut err).await.unwrap();
        assert!(err.starts_with("error forwarding port 81"), "{err}");
        client.connection().close().await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn port_forward_rejections() {
    timeout(TEST_TIMEOUT, async {
        let server = start().await;
        // WebSocket without ports.
        let e = websocket_connect(server.tcp().await, "/portforward", &["v4.channel.k8s.io"])
            .await
            .unwrap_err();
        assert!(
            matches!(e, navarch_stream::Error::UpgradeRefused { status: 400, .. }),
            "{e}"
        );
        // SPDY with an exec protocol.
        let e = navarch_stream::client::spdy_connect(
            server.tcp().await,
            "/portforward",
            &["v4.channel.k8s.io"],
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, navarch_stream::Error::UpgradeRefused { status: 403, .. }),
            "{e}"
        );
    })
    .await
    .unwrap();
}
