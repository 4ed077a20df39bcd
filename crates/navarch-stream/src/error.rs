//! Error types of the crate.

use http::StatusCode;

/// Why an HTTP request could not be upgraded to a streaming connection.
///
/// Every variant maps to a plain HTTP error response (see [`UpgradeError::status_code`]).
/// kubectl falls back from WebSocket to SPDY on any non-101 answer, so a 400 is the
/// right reply when a transport is not supported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// The request asked for no upgrade, or for one we do not speak.
    #[error("unable to upgrade: request is not a WebSocket or SPDY/3.1 upgrade")]
    NotAnUpgrade,
    /// A required upgrade header is missing or malformed.
    #[error("unable to upgrade: {header} header {problem}")]
    BadHeader {
        /// Header name.
        header: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// No protocol offered by the client is supported for this kind of stream.
    #[error("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}")]
    NoCommonProtocol {
        /// What the client offered.
        offered: Vec<String>,
        /// What we accept for this kind of request.
        supported: Vec<&'static str>,
    },
    /// A query parameter is missing or invalid.
    #[error("{0}")]
    BadQuery(String),
}

impl UpgradeError {
    /// HTTP status code to answer with.
    pub fn status_code(&self) -> StatusCode {
        match self {
            UpgradeError::NoCommonProtocol { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Errors of an established streaming session.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Upgrade negotiation failed.
    #[error(transparent)]
    Upgrade(#[from] UpgradeError),
    /// The underlying connection failed.
    #[error("stream connection i/o: {0}")]
    Io(#[from] std::io::Error),
    /// WebSocket protocol error.
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// SPDY framing or header compression error.
    #[error("spdy: {0}")]
    Spdy(#[from] crate::spdy::SpdyError),
    /// The peer closed the connection (or the session driver stopped) before the operation completed.
    #[error("connection closed")]
    Closed,
    /// The client did not open the streams the request announced in time.
    #[error("timed out waiting for client to create streams")]
    StreamTimeout,
    /// The client opened a stream we do not understand.
    #[error("unexpected stream: {0}")]
    UnexpectedStream(String),
    /// The server answered an upgrade with something else than 101.
    #[error("upgrade refused: {status} {body}")]
    UpgradeRefused {
        /// HTTP status of the response.
        status: u16,
        /// Start of the response body, if any.
        body: String,
    },
    /// Malformed data from the peer (for example an invalid initial port frame).
    #[error("protocol violation: {0}")]
    Protocol(String),
}
