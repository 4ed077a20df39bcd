//! SPDY/3 frame encoding and decoding (header blocks stay compressed here; see
//! [`super::zlib`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::SpdyError;

/// The SPDY version of every control frame.
pub const VERSION: u16 = 3;
/// Bytes of a frame header.
pub const HEADER_LEN: usize = 8;
/// Largest payload a frame can carry (24-bit length).
pub const MAX_PAYLOAD: usize = 0xff_ffff;

/// FIN flag of DATA, SYN_STREAM, SYN_REPLY and HEADERS.
pub const FLAG_FIN: u8 = 0x01;
/// UNIDIRECTIONAL flag of SYN_STREAM.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// Control frame types.
pub mod kind {
    /// SYN_STREAM.
    pub const SYN_STREAM: u16 = 1;
    /// SYN_REPLY.
    pub const SYN_REPLY: u16 = 2;
    /// RST_STREAM.
    pub const RST_STREAM: u16 = 3;
    /// SETTINGS.
    pub const SETTINGS: u16 = 4;
    /// PING.
    pub const PING: u16 = 6;
    /// GOAWAY.
    pub const GOAWAY: u16 = 7;
    /// HEADERS.
    pub const HEADERS: u16 = 8;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u16 = 9;
}

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Per-setting flags.
    pub flags: u8,
    /// 24-bit id.
    pub id: u32,
    /// Value.
    pub value: u32,
}

/// A SPDY/3 frame. Header blocks are kept compressed: they must be passed through the
/// connection's single decompressor in frame order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Open a stream.
    SynStream {
        /// New stream id (odd from clients).
        stream_id: u32,
        /// Associated stream (server push), usually 0.
        associated_id: u32,
        /// 3-bit priority.
        priority: u8,
        /// Credential slot.
        slot: u8,
        /// FIN / UNIDIRECTIONAL.
        flags: u8,
        /// Compressed name/value block.
        header_block: Bytes,
    },
    /// Accept a stream.
    SynReply {
        /// Stream id.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// Compressed name/value block.
        header_block: Bytes,
    },
    /// Abort a stream.
    RstStream {
        /// Stream id.
        stream_id: u32,
        /// Status code (see [`super::rst`]).
        status: u32,
    },
    /// Connection settings.
    Settings {
        /// CLEAR_SETTINGS.
        flags: u8,
        /// Entries.
        entries: Vec<Setting>,
    },
    /// Liveness check; the receiver echoes pings initiated by the peer.
    Ping {
        /// Odd from clients, even from servers.
        id: u32,
    },
    /// The sender will accept no new streams.
    GoAway {
        /// Last stream the sender processed.
        last_good_stream_id: u32,
        /// Status (0 OK).
        status: u32,
    },
    /// Extra headers of a stream.
    Headers {
        /// Stream id.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// Compressed name/value block.
        header_block: Bytes,
    },
    /// Flow-control credit.
    WindowUpdate {
        /// Stream id.
        stream_id: u32,
        /// Credit in bytes.
        delta: u32,
    },
    /// Stream payload.
    Data {
        /// Stream id.
        stream_id: u32,
        /// FIN.
        flags: u8,
        /// Payload.
        data: Bytes,
    },
    /// A control frame type this implementation does not know (ignored, per the spec).
    Unknown {
        /// Control frame type.
        frame_type: u16,
        /// Flags.
        flags: u8,
        /// Raw payload.
        payload: Bytes,
    },
}

fn too_short(frame_type: u16, len: usize) -> SpdyError {
    SpdyError::InvalidControlFrame { frame_type, len }
}

impl Frame {
    /// Decode one frame from the front of `buf`, consuming it. `Ok(None)` when more bytes are
    /// needed. Never panics, whatever the input.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let w0 = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let len = usize::from(buf[5]) << 16 | usize::from(buf[6]) << 8 | usize::from(buf[7]);
        if buf.len() < HEADER_LEN + len {
            buf.reserve(HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(HEADER_LEN + len).freeze();
        frame.advance(HEADER_LEN);
        let mut p = frame;

        if w0 & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: w0 & 0x7fff_ffff,
                flags,
                data: p,
            }));
        }
        let version = ((w0 >> 16) & 0x7fff) as u16;
        let frame_type = (w0 & 0xffff) as u16;
        if version != VERSION {
            return Err(SpdyError::UnsupportedVersion(version));
        }
        let need = |n: usize| {
            if len < n {
                Err(too_short(frame_type, len))
            } else {
                Ok(())
            }
        };
        let frame = match frame_type {
            kind::SYN_STREAM => {
                need(10)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let associated_id = p.get_u32() & 0x7fff_ffff;
                let priority = p.get_u8() >> 5;
                let slot = p.get_u8();
                Frame::SynStream {
                    stream_id,
                    associated_id,
                    priority,
                    slot,
                    flags,
                    header_block: p,
                }
            }
            kind::SYN_REPLY | kind::HEADERS => {
                need(4)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                if frame_type == kind::SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        header_block: p,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        header_block: p,
                    }
                }
            }
            kind::RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    status: p.get_u32(),
                }
            }
            kind::SETTINGS => {
                need(4)?;
                let n = p.get_u32() as usize;
                if n > p.len() / 8 {
                    return Err(too_short(frame_type, len));
                }
                let entries = (0..n)
                    .map(|_| {
                        let w = p.get_u32();
                        Setting {
                            flags: (w >> 24) as u8,
                            id: w & 0xff_ffff,
                            value: p.get_u32(),
                        }
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            kind::PING => {
                need(4)?;
                Frame::Ping { id: p.get_u32() }
            }
            kind::GOAWAY => {
                need(4)?;
                let last_good_stream_id = p.get_u32() & 0x7fff_ffff;
                let status = if p.len() >= 4 { p.get_u32() } else { 0 };
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                }
            }
            kind::WINDOW_UPDATE => {
                need(8)?;
                Frame::WindowUpdate {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    delta: p.get_u32() & 0x7fff_ffff,
                }
            }
            _ => Frame::Unknown {
                frame_type,
                flags,
                payload: p,
            },
        };
        Ok(Some(frame))
    }

    /// Append the wire form of the frame to `out`. Payloads longer than [`MAX_PAYLOAD`] must
    /// be split by the caller.
    pub fn encode(&self, out: &mut BytesMut) {
        fn control(out: &mut BytesMut, frame_type: u16, flags: u8, len: usize) {
            debug_assert!(len <= MAX_PAYLOAD);
            out.put_u32(0x8000_0000 | u32::from(VERSION) << 16 | u32::from(frame_type));
            out.put_u32(u32::from(flags) << 24 | len as u32);
        }
        match self {
            Frame::SynStream {
                stream_id,
                associated_id,
                priority,
                slot,
                flags,
                header_block,
            } => {
                control(out, kind::SYN_STREAM, *flags, 10 + header_block.len());
                out.put_u32(*stream_id & 0x7fff_ffff);
                out.put_u32(*associated_id & 0x7fff_ffff);
                out.put_u8(priority << 5);
                out.put_u8(*slot);
                out.put_slice(header_block);
            }
            Frame::SynReply {
                stream_id,
                flags,
                header_block,
            } => {
                control(out, kind::SYN_REPLY, *flags, 4 + header_block.len());
                out.put_u32(*stream_id & 0x7fff_ffff);
                out.put_slice(header_block);
            }
            Frame::Headers {
                stream_id,
                flags,
                header_block,
            } => {
                control(out, kind::HEADERS, *flags, 4 + header_block.len());
                out.put_u32(*stream_id & 0x7fff_ffff);
                out.put_slice(header_block);
            }
            Frame::RstStream { stream_id, status } => {
                control(out, kind::RST_STREAM, 0, 8);
                out.put_u32(*stream_id & 0x7fff_ffff);
                out.put_u32(*status);
            }
            Frame::Settings { flags, entries } => {
                control(out, kind::SETTINGS, *flags, 4 + 8 * entries.len());
                out.put_u32(entries.len() as u32);
                for s in entries {
                    out.put_u32(u32::from(s.flags) << 24 | (s.id & 0xff_ffff));
                    out.put_u32(s.value);
                }
            }
            Frame::Ping { id } => {
                control(out, kind::PING, 0, 4);
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control(out, kind::GOAWAY, 0, 8);
                out.put_u32(*last_good_stream_id & 0x7fff_ffff);
                out.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control(out, kind::WINDOW_UPDATE, 0, 8);
                out.put_u32(*stream_id & 0x7fff_ffff);
                out.put_u32(*delta & 0x7fff_ffff);
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                debug_assert!(data.len() <= MAX_PAYLOAD);
                out.put_u32(*stream_id & 0x7fff_ffff);
                out.put_u32(u32::from(*flags) << 24 | data.len() as u32);
                out.put_slice(data);
            }
            Frame::Unknown {
                frame_type,
                flags,
                payload,
            } => {
                control(out, *frame_type, *flags, payload.len());
                out.put_slice(payload);
            }
        }
    }
}

/// Decoded name/value pairs of a header block. Names are lower case; a value holding
/// NUL-separated parts is split into several pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpdyHeaders(pub Vec<(String, String)>);

impl SpdyHeaders {
    /// First value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for SpdyHeaders {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        SpdyHeaders(
            iter.into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        )
    }
}

/// Serialize a name/value block (uncompressed). Names are lower-cased; repeated names are
/// joined with NUL as SPDY/3 requires.
pub fn encode_header_block(headers: &SpdyHeaders) -> Vec<u8> {
    let mut merged: Vec<(String, String)> = Vec::new();
    for (n, v) in headers.iter() {
        let n = n.to_ascii_lowercase();
        match merged.iter_mut().find(|(m, _)| *m == n) {
            Some((_, existing)) => {
                existing.push('\0');
                existing.push_str(v);
            }
            None => merged.push((n, v.to_owned())),
        }
    }
    let mut out = Vec::new();
    out.put_u32(merged.len() as u32);
    for (n, v) in &merged {
        out.put_u32(n.len() as u32);
        out.put_slice(n.as_bytes());
        out.put_u32(v.len() as u32);
        out.put_slice(v.as_bytes());
    }
    out
}

/// Parse a decompressed name/value block.
pub fn decode_header_block(mut raw: &[u8]) -> Result<SpdyHeaders, SpdyError> {
    fn take<'a>(raw: &mut &'a [u8]) -> Result<&'a [u8], SpdyError> {
        if raw.len() < 4 {
            return Err(SpdyError::HeaderBlock("truncated length"));
        }
        let n = raw.get_u32() as usize;
        if raw.len() < n {
            return Err(SpdyError::HeaderBlock("truncated string"));
        }
        let (s, rest) = raw.split_at(n);
        *raw = rest;
        Ok(s)
    }
    if raw.len() < 4 {
        return Err(SpdyError::HeaderBlock("missing pair count"));
    }
    let count = raw.get_u32() as usize;
    if count > raw.len() / 8 {
        return Err(SpdyError::HeaderBlock("pair count exceeds block size"));
    }
    let mut pairs = Vec::with_capacity(count);
    for _ in 0..count {
        let name = String::from_utf8_lossy(take(&mut raw)?).to_ascii_lowercase();
        if name.is_empty() {
            return Err(SpdyError::HeaderBlock("empty header name"));
        }
        let value = take(&mut raw)?;
        for part in value.split(|b| *b == 0) {
            pairs.push((name.clone(), String::from_utf8_lossy(part).into_owned()));
        }
    }
    Ok(SpdyHeaders(pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(f: Frame) {
        let mut b = BytesMut::new();
        f.encode(&mut b);
        let extra = b.len();
        b.extend_from_slice(b"\x00\x00"); // start of a next frame
        assert_eq!(Frame::decode(&mut b).unwrap(), Some(f));
        assert_eq!(b.len(), 2, "consumed exactly {extra} bytes");
    }

    #[test]
    fn frames_round_trip() {
        round_trip(Frame::SynStream {
            stream_id: 1,
            associated_id: 0,
            priority: 7,
            slot: 0,
            flags: FLAG_FIN,
            header_block: Bytes::from_static(b"abc"),
        });
        round_trip(Frame::SynReply {
            stream_id: 3,
            flags: 0,
            header_block: Bytes::from_static(b"z"),
        });
        round_trip(Frame::RstStream {
            stream_id: 5,
            status: 5,
        });
        round_trip(Frame::Settings {
            flags: 1,
            entries: vec![Setting {
                flags: 1,
                id: 7,
                value: 65536,
            }],
        });
        round_trip(Frame::Ping { id: 1 });
        round_trip(Frame::GoAway {
            last_good_stream_id: 9,
            status: 0,
        });
        round_trip(Frame::WindowUpdate {
            stream_id: 1,
            delta: 1000,
        });
        round_trip(Frame::Data {
            stream_id: 7,
            flags: FLAG_FIN,
            data: Bytes::new(),
        });
        round_trip(Frame::Data {
            stream_id: 7,
            flags: 0,
            data: Bytes::from_static(b"GET / HTTP/1.1\r\n"),
        });
    }

    #[test]
    fn wire_layout_of_ping_and_data() {
        let mut b = BytesMut::new();
        Frame::Ping { id: 1 }.encode(&mut b);
        assert_eq!(&b[..], &[0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1]);
        b.clear();
        Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"hi"),
        }
        .encode(&mut b);
        assert_eq!(&b[..], &[0, 0, 0, 3, 1, 0, 0, 2, b'h', b'i']);
    }

    #[test]
    fn partial_input_waits_and_bad_input_errors() {
        let mut b = BytesMut::from(&[0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 0, 0][..]);
        assert_eq!(Frame::decode(&mut b).unwrap(), None);
        let mut b = BytesMut::from(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 0][..]);
        assert_eq!(
            Frame::decode(&mut b).unwrap_err(),
            SpdyError::UnsupportedVersion(2)
        );
        let mut b = BytesMut::from(&[0x80, 0x03, 0x00, 0x03, 0, 0, 0, 1, 9][..]);
        assert!(Frame::decode(&mut b).is_err());
    }

    #[test]
    fn header_blocks() {
        let h: SpdyHeaders = [
            ("StreamType", "data"),
            ("port", "80"),
            ("x", "1"),
            ("x", "2"),
        ]
        .into_iter()
        .collect();
        let raw = encode_header_block(&h);
        let back = decode_header_block(&raw).unwrap();
        assert_eq!(back.get("streamtype"), Some("data"));
        assert_eq!(
            back.iter().filter(|(n, _)| *n == "x").count(),
            2,
            "NUL-joined values split again"
        );
        assert_eq!(
            encode_header_block(&SpdyHeaders::default()),
            vec![0, 0, 0, 0]
        );
        assert!(decode_header_block(&[0, 0, 0, 9, 0]).is_err());
        assert!(decode_header_block(&[0, 0, 0, 1, 0, 0, 0, 2, b'a']).is_err());
    }
}
