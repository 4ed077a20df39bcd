//! Property tests: the SPDY frame parser and header decoding never panic, and framing is
//! independent of how the byte stream is split.

use bytes::{Bytes, BytesMut};
use navarch_stream::spdy::frame::{decode_header_block, encode_header_block, Frame};
use navarch_stream::spdy::zlib::{HeaderCompressor, HeaderDecompressor};
use navarch_stream::spdy::{SpdyError, SpdyHeaders};
use proptest::prelude::*;

/// Decode frames until the input is exhausted or an error stops the connection.
fn decode_all(input: &[u8], chunk: usize) -> (Vec<Frame>, Option<SpdyError>) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut dec = HeaderDecompressor::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match Frame::decode(&mut buf) {
                Ok(Some(f)) => {
                    if let Frame::SynStream { header_block, .. }
                    | Frame::SynReply { header_block, .. }
                    | Frame::Headers { header_block, .. } = &f
                    {
                        if let Ok(raw) = dec.decompress(header_block) {
                            let _ = decode_header_block(&raw);
                        }
                    }
                    frames.push(f);
                }
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

/// Bytes that look like SPDY often enough to reach deep paths: valid control headers with
/// random types, lengths and payloads.
fn spdyish() -> impl Strategy<Value = Vec<u8>> {
    let frame = (
        any::<bool>(),
        0u16..12,
        any::<u8>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(control, t, flags, payload)| {
            let mut v = Vec::new();
            if control {
                v.extend_from_slice(&[0x80, 0x03]);
                v.extend_from_slice(&t.to_be_bytes());
            } else {
                v.extend_from_slice(&[0, 0, 0, t as u8]);
            }
            v.push(flags);
            let len = payload.len() as u32;
            v.extend_from_slice(&len.to_be_bytes()[1..]);
            v.extend_from_slice(&payload);
            v
        });
    proptest::collection::vec(frame, 0..8).prop_map(|fs| fs.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parser_never_panics_on_arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..512), chunk in 1usize..64) {
        let _ = decode_all(&input, chunk);
    }

    #[test]
    fn parser_never_panics_on_spdy_shaped_bytes(input in spdyish(), chunk in 1usize..32) {
        let _ = decode_all(&input, chunk);
    }

    #[test]
    fn header_block_decoder_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_header_block(&raw);
        let _ = HeaderDecompressor::new().decompress(&raw);
    }

    #[test]
    fn splitting_does_not_change_frames(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..6),
        chunk in 1usize..50,
    ) {
        let frames: Vec<Frame> = payloads
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                [
                    Frame::Ping { id: i as u32 * 2 + 1 },
                    Frame::Data { stream_id: i as u32 * 2 + 1, flags: (i % 2) as u8, data: Bytes::from(p.clone()) },
                ]
            })
            .collect();
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire);
        }
        let (decoded, err) = decode_all(&wire, chunk);
        prop_assert!(err.is_none());
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn header_blocks_round_trip_through_one_zlib_stream(
        blocks in proptest::collection::vec(
            proptest::collection::vec(("[a-z][a-z0-9-]{0,15}", "[ -~]{0,40}"), 0..6), 1..8)
    ) {
        let mut c = HeaderCompressor::new();
        let mut d = HeaderDecompressor::new();
        for pairs in blocks {
            let mut seen = std::collections::HashSet::new();
            let pairs: Vec<(String, String)> =
                pairs.into_iter().filter(|(n, _)| seen.insert(n.clone())).collect();
            let headers = SpdyHeaders(pairs.clone());
            let z = c.compress(&encode_header_block(&headers)).unwrap();
            let back = decode_header_block(&d.decompress(&z).unwrap()).unwrap();
            prop_assert_eq!(back.0, pairs);
        }
    }
}
