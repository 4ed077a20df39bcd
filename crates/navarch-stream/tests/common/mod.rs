//! In-process harness: a hyper 1 server routing exec and port-forward to this crate, a fake
//! "process" for exec, and TCP echo targets for port-forward.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use navarch_stream::{
    serve_exec, serve_port_forward, upgrade_response, upgraded, ExitStatus, StreamKind,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Pod port 80 → an echo server; 81 → a port nobody listens on; 82 → a server that says
/// "banner" and hangs up.
pub struct Server {
    pub addr: SocketAddr,
}

pub async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Writes a banner, then closes (like an HTTP/1.0 server after its response).
pub async fn banner_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let _ = s.write_all(b"banner").await;
            });
        }
    });
    addr
}

pub async fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

pub async fn start() -> Server {
    let echo = echo_server().await;
    let refused = refused_addr().await;
    let banner = banner_server().await;
    let targets = Arc::new(HashMap::from([
        (80u16, echo),
        (81u16, refused),
        (82u16, banner),
    ]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let targets = targets.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(req, targets.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Server { addr }
}

impl Server {
    pub async fn tcp(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<String> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

async fn handle(
    mut req: Request<Incoming>,
    targets: Arc<HashMap<u16, SocketAddr>>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let kind = match req.uri().path() {
        "/exec" => StreamKind::Exec,
        "/attach" => StreamKind::Attach,
        "/portforward" => StreamKind::PortForward,
        _ => {
            let mut r = Response::new(Empty::new());
            *r.status_mut() = hyper::StatusCode::NOT_FOUND;
            return Ok(r);
        }
    };
    let (resp, negotiated) = match upgrade_response(&req, kind) {
        Ok(ok) => ok,
        Err(e) => {
            let mut r = Response::new(Empty::new());
            *r.status_mut() = e.status_code();
            return Ok(r);
        }
    };
    let exit_code: i32 = query_param(&req, "exit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match upgraded(on_upgrade).await {
            Ok(io) => io,
            Err(e) => panic!("upgrade failed: {e}"),
        };
        if kind == StreamKind::PortForward {
            let server = serve_port_forward(io, &negotiated).await.unwrap();
            server
                .forward_all(|port| {
                    *targets
                        .get(&port)
                        .unwrap_or(&SocketAddr::from(([127, 0, 0, 1], 9)))
                })
                .await;
        } else {
            let streams = serve_exec(io, &negotiated).await.unwrap();
            fake_process(streams, exit_code).await;
        }
    });
    Ok(resp)
}

/// Echo stdin to stdout, report resizes on stdout, say "bye" on stderr, exit with `code`.
async fn fake_process(mut s: navarch_stream::ExecStreams, code: i32) {
    let mut stdin = s.stdin.take();
    let mut stdout = s.stdout.take();
    let stderr = s.stderr.take();
    let mut resize = std::mem::take(&mut s.resize);
    if let Some(out) = stdout.as_mut() {
        if stdin.is_none() {
            out.write_all(b"hello\n").await.unwrap();
        }
    }
    if let Some(input) = stdin.as_mut() {
        let mut buf = vec![0u8; 4096];
        let mut resize_open = true;
        loop {
            tokio::select! {
                n = input.read(&mut buf) => {
                    let n = n.unwrap_or(0);
                    if n == 0 { break }
                    if let Some(out) = stdout.as_mut() {
                        out.write_all(&buf[..n]).await.unwrap();
                    }
                }
                size = resize.recv(), if resize_open => match size {
                    Some(size) => {
                        if let Some(out) = stdout.as_mut() {
                            out.write_all(format!("resize {}x{}\n", size.width, size.height).as_bytes()).await.unwrap();
                        }
                    }
                    None => resize_open = false,
                }
            }
        }
    }
    if let Some(mut err) = stderr {
        err.write_all(b"bye\n").await.unwrap();
    }
    let command = vec!["sh".to_owned(), "-c".to_owned(), format!("exit {code}")];
    // Keep stdout alive across finish: buffered output must still arrive before the status.
    let _keep = stdout;
    s.finish(ExitStatus::from_code(code, &command))
        .await
        .unwrap();
}
