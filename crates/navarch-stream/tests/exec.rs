//! exec/attach end to end through a hyper server: WebSocket v5/v4/base64 and SPDY.

mod common;

use common::{start, TEST_TIMEOUT};
use navarch_stream::client::{spdy_connect, ExecClient, ExecEvent};
use navarch_stream::spdy::SpdyHeaders;
use navarch_stream::{ExitStatus, TerminalSize};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

#[tokio::test]
async fn ws_v5_stdin_echo_and_non_zero_exit() {
    timeout(TEST_TIMEOUT, async {
        let server = start().await;
        let mut c = ExecClient::connect(
            server.tcp().await,
            "/exec?command=sh&stdin=true&stdout=true&stderr=true&exit=3",
            &["v5.channel.k8s.io", "v4.channel.k8s.io"],
        )
        .await
        .unwrap();
        assert_eq!(c.protocol().name(), Some("v5.channel.k8s.io"));
        c.send_stdin(b"hello ").await.unwrap();
        c.send_stdin(b"world").await.unwrap();
        c.close_stdin().await.unwrap();
        let out = c.collect().await.unwrap();
        assert_eq!(out.stdout, b"hello world");
        assert_eq!(out.stderr, b"bye\n");
        let status = out.status.unwrap();
        assert_eq!(status.exit_code(), Some(3));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn ws_v5_status_json_is_what_kubectl_expects() {
    timeout(TEST_TIMEOUT, async {
        let server = start().await;
        let (mut ws, proto) = navarch_stream::client::websocket_connect(
            server.tcp().await,
            "/exec?command=false&stdout=true&exit=3",
            &["v5.channel.k8s.io"],
        )
        .await
        .unwrap();
        assert_eq!(proto.as_deref(), Some("v5.channel.k8s.io"));
        use futures::StreamExt;
        let mut frames = Vec::new();
        while let Some(Ok(m)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Binary(b) = m {
                frames.push(b.to_vec());
            }
        }
        // First the empty "connected" message on stdout, then output, then the status.
        assert_eq!(frames[0], vec![1u8]);
        assert_eq!(frames[1], b"\x01hello\n".to_vec());
        let last = frames.last().unwrap();
        assert_eq!(last[0], 3);
        assert_eq!(
            std::str::from_utf8(&last[1..]).unwrap(),
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn ws_v5_resize_events_reach_the_process() {
    timeout(TEST_TIMEOUT, async {
        let server = start().await;
        let mut c = ExecClient::connect(
            server.tcp().await,
            "/exec?command=sh&stdin=true&stdout=true&tty=true&stderr=true",
            &["v5.channel.k8s.io"],
        )
        .await
        .unwrap();
        c.resize(TerminalSize {
            width: 100,
            height: 40,
        })
        .await
        .unwrap();
        let ev = c.next_event().await.unwrap().unwrap();
        assert_eq!(ev, ExecEvent::Stdout("resize 100x40\n".into()));
        c.resize(TerminalSize {
            width: 80,
            height: 24,
        })
        .await
        .unwrap();
        c.send_stdin(b"x").await.unwrap();
        c.close_stdin().await.unwrap();
        let out = c.collect().await.unwrap();
        assert_eq!(out.stdout, b"resize 80x24\nx");
        assert!(out.stderr.is_empty(), "tty disables stderr");
        assert_eq!(out.status, Some(ExitStatus::Success));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn ws_v4_and_attach() {
    timeout(TEST_TIMEOUT, async {
        let server = start().await;
        let c = ExecClient::connect(
            server.tcp().await,
            "/attach?stdout=true&stderr=true",
            &["v4.channel.k8s.io"],
        )
        .await
        .unwrap();
        assert_eq!(c.protocol().name(), Some("v4.channel.k8s.io"));
        let out = c.collect().await.unwrap();
        assert_eq!(out.stdout, b"hello\n");
        assert_eq!(out.stderr, b"bye\n");
        assert_eq!(out.status, Some(ExitStatus::Success));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn ws_base64_v1_reports_plain_text_errors() {
    timeout(TEST_TIMEOUT, async {
        let server = start().await;
        let c = ExecClient::connect(
            server.tcp().await,
            "/exec?stdout=true&exit=2",
            &["base64.channel.k8s.io"],
        )
        .await
        .unwrap();
        assert!(c.protocol().base64);
        let out = c.collect().await.unwrap();
        assert_eq!(out.stdout, b"hello\n");
        assert_eq!(
            out.status,
            Some(ExitStatus::Failure {
                message: "command terminated with non-zero exit code: error executing command [sh -c exit 2], exit code 2".into()
            })
        );

        // v1 success: no status at all.
        let c = ExecClient::connect(server.tcp().await, "/exec?stdout=true", &["channel.k8s.io"])
            .await
            .unwrap();
        let out = c.collect().await.unwrap();
        assert_eq!(out.stdout, b"hello\n");
        assert_eq!(out.status, None);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn rejected_upgrades_answer_with_plain_http_errors() {
    timeout(TEST_TIMEOUT, async {
        let server = start().await;
        // No stream requested.
        let e = ExecClient::connect(
            server.tcp().await,
            "/exec?command=ls",
            &["v5.channel.k8s.io"],
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, navarch_stream::Error::UpgradeRefused { status: 400, .. }),
            "{e}"
        );
        // Unknown subprotocol only.
        let e = ExecClient::connect(server.tcp().await, "/exec?stdout=1", &["v9.channel.k8s.io"])
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

async fn read_all(r: &mut navarch_stream::ChannelReader) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).await.unwrap();
    v
}

fn stream_headers(kind: &str) -> SpdyHeaders {
    [("streamtype", kind)].into_iter().collect()
}

/// What kubectl ≤ 1.29 does: SPDY, streams error, stdin, stdout, stderr.
#[tokio::test]
async fn spdy_v4_exec_round_trip() {
    timeout(TEST_TIMEOUT, async {
        let server = start().await;
        let (conn, chosen) = spdy_connect(
            server.tcp().await,
            "/exec?command=sh&stdin=true&stdout=true&stderr=true&exit=3",
            &[
                "v4.channel.k8s.io",
                "v3.channel.k8s.io",
                "v2.channel.k8s.io",
                "channel.k8s.io",
            ],
        )
        .await
        .unwrap();
        assert_eq!(chosen.as_deref(), Some("v4.channel.k8s.io"));
        let error = conn.open_stream(stream_headers("error")).await.unwrap();
        let stdin = conn.open_stream(stream_headers("stdin")).await.unwrap();
        let stdout = conn.open_stream(stream_headers("stdout")).await.unwrap();
        let stderr = conn.open_stream(stream_headers("stderr")).await.unwrap();
        let (mut error_r, _error_w) = error.io.into_split();
        let (mut stdin_r, mut stdin_w) = stdin.io.into_split();
        let (mut stdout_r, _stdout_w) = stdout.io.into_split();
        let (mut stderr_r, _stderr_w) = stderr.io.into_split();
        // client-go stops sending input when the server half-closes stdin: it must stay open.
        let mut probe = [0u8; 1];
        assert!(
            timeout(Duration::from_millis(200), stdin_r.read(&mut probe))
                .await
                .is_err(),
            "server closed the stdin stream early"
        );
        stdin_w.write_all(b"over spdy").await.unwrap();
        stdin_w.shutdown().await.unwrap();
        assert_eq!(read_all(&mut stdout_r).await, b"over spdy");
        assert_eq!(read_all(&mut stderr_r).await, b"bye\n");
        let status = ExitStatus::parse(&read_all(&mut error_r).await);
        assert_eq!(status.exit_code(), Some(3));
        // spdystream drops queued frames on EOF, so the server must not hang up before the
        // client is done: the connection still answers pings after the status.
        conn.ping().await.unwrap();
        conn.close().await.unwrap();
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn spdy_v5_tty_exec_with_resize() {
    timeout(TEST_TIMEOUT, async {
        let server = start().await;
        let (conn, chosen) = spdy_connect(
            server.tcp().await,
            "/exec?command=sh&stdin=true&stdout=true&tty=true",
            &["v5.channel.k8s.io", "v4.channel.k8s.io"],
        )
        .await
        .unwrap();
        assert_eq!(chosen.as_deref(), Some("v5.channel.k8s.io"));
        let error = conn.open_stream(stream_headers("error")).await.unwrap();
        let stdin = conn.open_stream(stream_headers("stdin")).await.unwrap();
        let stdout = conn.open_stream(stream_headers("stdout")).await.unwrap();
        let resize = conn.open_stream(stream_headers("resize")).await.unwrap();
        let (mut error_r, _e) = error.io.into_split();
        let (_, mut stdin_w) = stdin.io.into_split();
        let (mut stdout_r, _o) = stdout.io.into_split();
        let (_, mut resize_w) = resize.io.into_split();
        resize_w
            .write_all(br#"{"Width":120,"Height":50}"#)
            .await
            .unwrap();
        let mut line = vec![0u8; "resize 120x50\n".len()];
        stdout_r.read_exact(&mut line).await.unwrap();
        assert_eq!(line, b"resize 120x50\n");
        stdin_w.write_all(b"typed").await.unwrap();
        stdin_w.shutdown().await.unwrap();
        assert_eq!(read_all(&mut stdout_r).await, b"typed");
        assert_eq!(
            ExitStatus::parse(&read_all(&mut error_r).await),
            ExitStatus::Success
        );
    })
    .await
    .unwrap();
}

/// The Python client sends `str` stdin as text messages on the binary v5 protocol.
#[tokio::test]
async fn ws_text_frames_carry_stdin_like_python_sends_them() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    timeout(TEST_TIMEOUT, async {
        let server = start().await;
        let (mut ws, _) = navarch_stream::client::websocket_connect(
            server.tcp().await,
            "/exec?command=cat&stdin=true&stdout=true",
            &["v5.channel.k8s.io", "v4.channel.k8s.io"],
        )
        .await
        .unwrap();
        ws.send(Message::text("\u{0}from python\n")).await.unwrap();
        ws.send(Message::binary(vec![255u8, 0])).await.unwrap();
        let mut stdout = Vec::new();
        let mut status = None;
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(b) = m {
                match b[0] {
                    1 => stdout.extend_from_slice(&b[1..]),
                    3 => status = Some(ExitStatus::parse(&b[1..])),
                    _ => {}
                }
            }
        }
        assert_eq!(stdout, b"from python\n");
        assert_eq!(status, Some(ExitStatus::Success));
    })
    .await
    .unwrap();
}
