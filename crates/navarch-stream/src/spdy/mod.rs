//! SPDY/3.1 as used by Kubernetes (moby/spdystream semantics): framing, header
//! compression, a multiplexed connection, and the port-forward and remote-command servers.

pub mod conn;
pub(crate) mod exec;
pub mod frame;
pub(crate) mod portforward;
pub mod zlib;

pub use conn::{IncomingStream, IncomingStreams, SpdyConnection, SpdyStream};
pub use frame::{Frame, Setting, SpdyHeaders};

/// Header naming the role of a stream (`error`, `data`, `stdin`, `stdout`, `stderr`, `resize`).
pub const HEADER_STREAM_TYPE: &str = "streamtype";
/// Header naming the pod port of a port-forward stream.
pub const HEADER_PORT: &str = "port";
/// Header pairing the error and data streams of one forwarded connection.
pub const HEADER_REQUEST_ID: &str = "requestid";

/// RST_STREAM status codes.
pub mod rst {
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// INVALID_STREAM.
    pub const INVALID_STREAM: u32 = 2;
    /// REFUSED_STREAM.
    pub const REFUSED_STREAM: u32 = 3;
    /// CANCEL.
    pub const CANCEL: u32 = 5;
    /// STREAM_IN_USE.
    pub const STREAM_IN_USE: u32 = 8;
}

/// SPDY framing and compression errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpdyError {
    /// A control frame of another SPDY version.
    #[error("unsupported SPDY version {0}")]
    UnsupportedVersion(u16),
    /// A control frame too short for its type.
    #[error("invalid control frame of type {frame_type}: payload of {len} bytes")]
    InvalidControlFrame {
        /// Control frame type.
        frame_type: u16,
        /// Payload length.
        len: usize,
    },
    /// A malformed name/value header block.
    #[error("invalid header block: {0}")]
    HeaderBlock(&'static str),
    /// zlib failure (the connection's compression state is then unusable).
    #[error("header compression: {0}")]
    Compression(String),
}
