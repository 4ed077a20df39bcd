//! SPDY/3 header-block compression: zlib with the fixed SPDY/3 dictionary.
//!
//! One compressor and one decompressor per connection and direction; every header block
//! is ended with a sync flush so the peer can decode it from exactly the bytes of its frame.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::SpdyError;

/// Length-prefixed words of the SPDY/3 header dictionary (draft-mbelshe-httpbis-spdy-00, §2.6.10.1).
const DICTIONARY_WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The unprefixed remainder of the dictionary: status codes, reason phrases, dates, common values.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
    "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// Size of the SPDY/3 dictionary.
pub const DICTIONARY_LEN: usize = 1423;

/// The SPDY/3 zlib dictionary (Adler-32 `0xe3c6a7c2`).
pub static DICTIONARY: [u8; DICTIONARY_LEN] = build_dictionary();

const fn build_dictionary() -> [u8; DICTIONARY_LEN] {
    let mut out = [0u8; DICTIONARY_LEN];
    let mut pos = 0;
    let mut i = 0;
    while i < DICTIONARY_WORDS.len() {
        let w = DICTIONARY_WORDS[i].as_bytes();
        let len = (w.len() as u32).to_be_bytes();
        let mut j = 0;
        while j < 4 {
            out[pos] = len[j];
            pos += 1;
            j += 1;
        }
        j = 0;
        while j < w.len() {
            out[pos] = w[j];
            pos += 1;
            j += 1;
        }
        i += 1;
    }
    let tail = DICTIONARY_TAIL.as_bytes();
    let mut j = 0;
    while j < tail.len() {
        out[pos] = tail[j];
        pos += 1;
        j += 1;
    }
    assert!(pos == DICTIONARY_LEN);
    out
}

/// Upper bound on a decompressed header block.
pub const MAX_HEADER_BLOCK: usize = 1 << 20;

/// Compressor of outgoing header blocks (one per connection).
pub struct HeaderCompressor {
    z: Compress,
}

impl std::fmt::Debug for HeaderCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderCompressor").finish_non_exhaustive()
    }
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCompressor {
    /// A compressor primed with the SPDY/3 dictionary.
    pub fn new() -> Self {
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(&DICTIONARY)
            .expect("setting a dictionary on a fresh deflate stream succeeds");
        HeaderCompressor { z }
    }

    /// Compress one header block, ending it with a sync flush.
    pub fn compress(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(block.len() / 2 + 64);
        let start = self.z.total_in();
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let consumed = (self.z.total_in() - start) as usize;
            self.z
                .compress_vec(&block[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            let consumed = (self.z.total_in() - start) as usize;
            // After a sync flush, room left in the output means everything was emitted.
            if consumed == block.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// Decompressor of incoming header blocks (one per connection).
pub struct HeaderDecompressor {
    z: Decompress,
}

impl std::fmt::Debug for HeaderDecompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDecompressor").finish_non_exhaustive()
    }
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecompressor {
    /// A fresh decompressor; the dictionary is supplied when the stream asks for it.
    pub fn new() -> Self {
        HeaderDecompressor {
            z: Decompress::new(true),
        }
    }

    /// Decompress one header block (the whole compressed payload of one frame).
    pub fn decompress(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let start = self.z.total_in();
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(SpdyError::Compression("header block too large".into()));
                }
                out.reserve(out.capacity().max(256));
            }
            let (in_before, out_before) = (self.z.total_in(), self.z.total_out());
            let consumed = (in_before - start) as usize;
            let res = self
                .z
                .decompress_vec(&block[consumed..], &mut out, FlushDecompress::Sync);
            match res {
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(_) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(id) if id == adler32(&DICTIONARY) => {
                        self.z
                            .set_dictionary(&DICTIONARY)
                            .map_err(|e| SpdyError::Compression(e.to_string()))?;
                        continue;
                    }
                    Some(id) => {
                        return Err(SpdyError::Compression(format!(
                            "unknown dictionary {id:#x}"
                        )))
                    }
                    None => return Err(SpdyError::Compression(e.to_string())),
                },
            }
            let consumed = (self.z.total_in() - start) as usize;
            if consumed == block.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            let progressed = self.z.total_in() != in_before || self.z.total_out() != out_before;
            if !progressed && out.len() < out.capacity() {
                return Err(SpdyError::Compression("corrupt header block".into()));
            }
        }
    }
}

/// Adler-32 checksum (RFC 1950), the id of a zlib preset dictionary.
pub fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(adler32(&DICTIONARY), 0xe3c6_a7c2);
        assert_eq!(&DICTIONARY[..11], b"\0\0\0\x07options");
        assert!(DICTIONARY.ends_with(b"enq=0."));
    }

    /// Two consecutive blocks of one stream, produced by C zlib (level 9, SPDY/3 dictionary,
    /// Z_SYNC_FLUSH) — what a Go client's `compress/zlib` writer emits in shape.
    #[test]
    fn decodes_blocks_from_reference_zlib() {
        let b1 = hex("78f9e3c6a7c202253a48f95b044aab4c16064092b308125b99a054cc68004e872545a989b9d0a2863515141100000000ffff");
        let b2 = hex("224b2ba8944a04000000ffff");
        let mut d = HeaderDecompressor::new();
        let h1 = super::super::frame::decode_header_block(&d.decompress(&b1).unwrap()).unwrap();
        let h2 = super::super::frame::decode_header_block(&d.decompress(&b2).unwrap()).unwrap();
        assert_eq!(h1.get("streamtype"), Some("error"));
        assert_eq!(h1.get("requestid"), Some("0"));
        assert_eq!(h2.get("streamtype"), Some("data"));
        assert_eq!(h2.get("port"), Some("80"));
    }

    #[test]
    fn compressor_output_starts_with_dictionary_id_and_round_trips() {
        let mut c = HeaderCompressor::new();
        let mut d = HeaderDecompressor::new();
        let first = c.compress(&[0, 0, 0, 0]).unwrap();
        assert_eq!(&first[2..6], &0xe3c6_a7c2u32.to_be_bytes());
        assert!(first.ends_with(&[0, 0, 0xff, 0xff]), "sync flush marker");
        assert_eq!(d.decompress(&first).unwrap(), vec![0, 0, 0, 0]);
        for i in 0..50u32 {
            let block: Vec<u8> = (0..i * 37).map(|x| (x % 251) as u8).collect();
            let z = c.compress(&block).unwrap();
            assert_eq!(d.decompress(&z).unwrap(), block);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut d = HeaderDecompressor::new();
        assert!(d.decompress(b"\x78\x9cnot zlib at all").is_err());
        let mut d = HeaderDecompressor::new();
        assert!(d.decompress(b"\x78\xf9\x00\x00\x00\x01").is_err());
    }
}
