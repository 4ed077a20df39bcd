//! Port-forward over SPDY (`portforward.k8s.io`): pair each forwarded connection's `error`
//! and `data` streams by `requestid`.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::conn::{IncomingStream, SpdyConnection, SpdyStream};
use super::{rst, HEADER_PORT, HEADER_REQUEST_ID, HEADER_STREAM_TYPE};
use crate::portforward::{PortForwardRequest, PortForwardServer};

/// How long the second stream of a pair may take to arrive (kubelet default: 30 s).
pub(crate) const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Pair {
    error: Option<SpdyStream>,
    data: Option<SpdyStream>,
    deadline: Option<Instant>,
}

/// Validate headers the way the kubelet does; returns (stream type, port).
fn classify(s: &IncomingStream) -> Result<(bool, u16), String> {
    let port = s
        .headers
        .get(HEADER_PORT)
        .ok_or_else(|| format!("{HEADER_PORT:?} header is required"))?;
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        Ok(_) => return Err(format!("port {port:?} must be > 0")),
        Err(e) => return Err(format!("unable to parse {port:?} as a port: {e}")),
    };
    match s.headers.get(HEADER_STREAM_TYPE) {
        Some("error") => Ok((true, port)),
        Some("data") => Ok((false, port)),
        Some(t) => Err(format!("invalid stream type {t:?}")),
        None => Err(format!("{HEADER_STREAM_TYPE:?} header is required")),
    }
}

/// Start serving port-forward streams on an upgraded SPDY (or tunnelled) connection.
pub(crate) fn serve<T>(io: T) -> PortForwardServer
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (conn, incoming) = SpdyConnection::server(io);
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(pair_streams(
        conn.clone(),
        incoming,
        tx,
        STREAM_CREATION_TIMEOUT,
    ));
    PortForwardServer::dynamic(rx, conn)
}

async fn pair_streams(
    conn: SpdyConnection,
    mut incoming: super::conn::IncomingStreams,
    tx: mpsc::Sender<PortForwardRequest>,
    timeout: Duration,
) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    loop {
        let next_deadline = pairs.values().filter_map(|p| p.deadline).min();
        let expire = async {
            match next_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => futures::future::pending().await,
            }
        };
        tokio::select! {
            s = incoming.next() => {
                let Some(s) = s else { break };
                let (is_error, port) = match classify(&s) {
                    Ok(c) => c,
                    Err(msg) => {
                        tracing::debug!(stream = s.id, error = %msg, "rejecting port-forward stream");
                        s.reject(rst::PROTOCOL_ERROR);
                        continue;
                    }
                };
                // Old clients send no request id: pair consecutive error/data stream ids.
                let request_id = match s.headers.get(HEADER_REQUEST_ID) {
                    Some(id) => id.to_owned(),
                    None if is_error => s.id.to_string(),
                    None => s.id.saturating_sub(2).to_string(),
                };
                let stream = s.accept();
                let pair = pairs.entry(request_id.clone()).or_insert_with(|| Pair {
                    deadline: Some(Instant::now() + timeout),
                    ..Pair::default()
                });
                let slot = if is_error { &mut pair.error } else { &mut pair.data };
                if slot.is_some() {
                    tracing::debug!(request = %request_id, "duplicate port-forward stream");
                    let mut dup = stream;
                    let _ = dup
                        .io
                        .writer
                        .write_all(format!("error processing stream for request {request_id}: stream already assigned").as_bytes())
                        .await;
                    continue;
                }
                *slot = Some(stream);
                if pair.error.is_some() && pair.data.is_some() {
                    let pair = pairs.remove(&request_id).expect("present");
                    let (error, data) = (pair.error.expect("checked"), pair.data.expect("checked"));
                    let port = data
                        .headers
                        .get(HEADER_PORT)
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(port);
                    // The client only half-closes the error stream; its read side is unused.
                    let (_, error_writer) = error.io.into_split();
                    let req = PortForwardRequest {
                        port,
                        request_id,
                        stream: data.io,
                        error: error_writer,
                    };
                    if tx.send(req).await.is_err() {
                        break;
                    }
                }
            }
            _ = expire => {
                let now = Instant::now();
                let expired: Vec<String> = pairs
                    .iter()
                    .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
                    .map(|(k, _)| k.clone())
                    .collect();
                for id in expired {
                    let pair = pairs.remove(&id).expect("listed");
                    tracing::debug!(request = %id, "timed out waiting for port-forward stream pair");
                    if let Some(mut e) = pair.error {
                        let _ = e
                            .io
                            .writer
                            .write_all(format!("timed out waiting for streams of request {id}").as_bytes())
                            .await;
                    }
                }
            }
            _ = tx.closed() => break,
        }
    }
    drop(pairs);
    if tx.is_closed() {
        conn.start_close();
    }
}
