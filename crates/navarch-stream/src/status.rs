//! The remote-command result (`metav1.Status` on the error channel) and terminal resize events.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How a remote command ended, as reported to the client on the error channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// The command exited with code 0.
    Success,
    /// The command exited with a non-zero code. kubectl exits with the same code.
    NonZeroExit {
        /// Exit code of the process.
        code: i32,
        /// The command line, shown in the message as Go formats a `[]string`.
        command: Vec<String>,
    },
    /// The command could not be run at all (container not found, runtime error, …).
    Failure {
        /// Human readable message, printed by kubectl as `error: <message>`.
        message: String,
    },
}

impl ExitStatus {
    /// `Success` for 0, `NonZeroExit` otherwise.
    pub fn from_code(code: i32, command: &[String]) -> Self {
        if code == 0 {
            ExitStatus::Success
        } else {
            ExitStatus::NonZeroExit {
                code,
                command: command.to_vec(),
            }
        }
    }

    /// The exit code a client derives from this status (`None` for [`ExitStatus::Failure`]).
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            ExitStatus::Success => Some(0),
            ExitStatus::NonZeroExit { code, .. } => Some(*code),
            ExitStatus::Failure { .. } => None,
        }
    }

    /// The human readable message of a failed status.
    pub fn message(&self) -> Option<String> {
        match self {
            ExitStatus::Success => None,
            ExitStatus::NonZeroExit { code, command } => Some(format!(
                "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                command.join(" ")
            )),
            ExitStatus::Failure { message } => Some(message.clone()),
        }
    }

    /// The `metav1.Status` object sent on the error channel by protocols v4 and v5.
    pub fn to_status_json(&self) -> Value {
        match self {
            ExitStatus::Success => json!({"metadata": {}, "status": "Success"}),
            ExitStatus::NonZeroExit { code, .. } => json!({
                "metadata": {},
                "status": "Failure",
                "message": self.message(),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            ExitStatus::Failure { message } => json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "InternalError",
                "code": 500,
            }),
        }
    }

    /// Bytes to write on the error channel for the given protocol generation:
    /// JSON for v4 and later, the bare message (nothing on success) before.
    pub fn encode(&self, json_status: bool) -> Vec<u8> {
        if json_status {
            serde_json::to_vec(&self.to_status_json()).unwrap_or_default()
        } else {
            self.message().unwrap_or_default().into_bytes()
        }
    }

    /// Parse what a server wrote on the error channel (client side).
    ///
    /// An empty payload means success (pre-v4 servers write nothing on success).
    /// Non-JSON text is taken as the failure message of a pre-v4 server.
    pub fn parse(payload: &[u8]) -> ExitStatus {
        if payload.iter().all(u8::is_ascii_whitespace) {
            return ExitStatus::Success;
        }
        let Ok(v) = serde_json::from_slice::<Value>(payload) else {
            return ExitStatus::Failure {
                message: String::from_utf8_lossy(payload).into_owned(),
            };
        };
        if v.get("status").and_then(Value::as_str) == Some("Success") {
            return ExitStatus::Success;
        }
        let message = v
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if v.get("reason").and_then(Value::as_str) == Some("NonZeroExitCode") {
            let code = v
                .pointer("/details/causes")
                .and_then(Value::as_array)
                .and_then(|causes| {
                    causes
                        .iter()
                        .find(|c| c.get("reason").and_then(Value::as_str) == Some("ExitCode"))
                })
                .and_then(|c| c.get("message").and_then(Value::as_str))
                .and_then(|m| m.parse::<i32>().ok());
            if let Some(code) = code {
                return ExitStatus::NonZeroExit {
                    code,
                    command: Vec::new(),
                };
            }
        }
        ExitStatus::Failure { message }
    }
}

/// A terminal size change sent by the client on the resize channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// Incremental decoder for the resize channel: a byte stream of concatenated JSON objects,
/// possibly split anywhere.
#[derive(Debug, Default)]
pub(crate) struct ResizeDecoder {
    buf: Vec<u8>,
}

/// Bound on buffered, not yet decodable resize bytes.
const MAX_RESIZE_BUFFER: usize = 4096;

impl ResizeDecoder {
    /// Feed bytes, returning every complete size event they finish.
    pub(crate) fn push(&mut self, data: &[u8]) -> Vec<TerminalSize> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut consumed = 0;
        let mut iter = serde_json::Deserializer::from_slice(&self.buf).into_iter::<TerminalSize>();
        loop {
            match iter.next() {
                Some(Ok(size)) => {
                    out.push(size);
                    consumed = iter.byte_offset();
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "discarding undecodable resize data");
                    consumed = self.buf.len();
                    break;
                }
                None => {
                    consumed = self.buf.len();
                    break;
                }
            }
        }
        self.buf.drain(..consumed);
        if self.buf.len() > MAX_RESIZE_BUFFER {
            self.buf.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_status_is_exact() {
        assert_eq!(
            String::from_utf8(ExitStatus::Success.encode(true)).unwrap(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        assert!(ExitStatus::Success.encode(false).is_empty());
    }

    #[test]
    fn non_zero_status_is_exact() {
        let st = ExitStatus::from_code(3, &["sh".into(), "-c".into(), "exit 3".into()]);
        assert_eq!(
            String::from_utf8(st.encode(true)).unwrap(),
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
        assert_eq!(ExitStatus::parse(&st.encode(true)).exit_code(), Some(3));
        assert_eq!(
            String::from_utf8(st.encode(false)).unwrap(),
            "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
    }

    #[test]
    fn parse_round_trips() {
        assert_eq!(ExitStatus::parse(b""), ExitStatus::Success);
        assert_eq!(
            ExitStatus::parse(&ExitStatus::Success.encode(true)),
            ExitStatus::Success
        );
        let f = ExitStatus::Failure {
            message: "container not found".into(),
        };
        assert_eq!(ExitStatus::parse(&f.encode(true)), f);
        assert_eq!(ExitStatus::parse(&f.encode(false)), f);
    }

    #[test]
    fn resize_decoder_handles_splits_and_concatenation() {
        let mut d = ResizeDecoder::default();
        assert!(d.push(br#"{"Width":80,"#).is_empty());
        assert_eq!(
            d.push(br#""Height":24}{"Width":100,"Height":40}"#),
            vec![
                TerminalSize {
                    width: 80,
                    height: 24
                },
                TerminalSize {
                    width: 100,
                    height: 40
                }
            ]
        );
        assert!(d.push(b"garbage").is_empty());
        assert_eq!(
            d.push(br#" {"Width":1,"Height":2}"#),
            vec![TerminalSize {
                width: 1,
                height: 2
            }]
        );
    }
}
