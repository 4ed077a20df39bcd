//! Protobuf wire format reading.

use crate::Error;

/// One field value as it is on the wire.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Raw<'a> {
    Varint(u64),
    Fixed64(u64),
    /// Length-delimited bytes and the absolute offset where they start.
    Len(&'a [u8], usize),
    /// A 4-byte value; no Kubernetes field uses this wire type.
    Fixed32,
}

impl Raw<'_> {
    pub(crate) fn wire_type(&self) -> u8 {
        match self {
            Raw::Varint(_) => 0,
            Raw::Fixed64(_) => 1,
            Raw::Len(..) => 2,
            Raw::Fixed32 => 5,
        }
    }
}

/// Reads the fields of one message. `base` is the absolute offset of `buf` in
/// the request body, for error messages.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(crate) fn varint(&mut self) -> Result<u64, Error> {
        let start = self.base + self.pos;
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(Error::TruncatedVarint { offset: start });
            };
            self.pos += 1;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Error::VarintTooLong { offset: start })
    }

    fn take(&mut self, n: usize, field: u32) -> Result<(&'a [u8], usize), Error> {
        let available = self.buf.len() - self.pos;
        if n > available {
            return Err(Error::Truncated {
                field,
                offset: self.base + self.pos,
                needed: n,
                available,
            });
        }
        let at = self.base + self.pos;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok((s, at))
    }

    /// The next field: its number and value, or `None` at the end.
    pub(crate) fn field(&mut self) -> Result<Option<(u32, Raw<'a>)>, Error> {
        if self.at_end() {
            return Ok(None);
        }
        let offset = self.base + self.pos;
        let tag = self.varint()?;
        let wire_type = (tag & 7) as u8;
        let field = tag >> 3;
        if field == 0 || field > u64::from(u32::MAX) {
            return Err(Error::InvalidFieldNumber { field, offset });
        }
        let field = field as u32;
        let raw = match wire_type {
            0 => Raw::Varint(self.varint()?),
            1 => {
                let (b, _) = self.take(8, field)?;
                Raw::Fixed64(u64::from_le_bytes(b.try_into().expect("8 bytes")))
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                let (b, at) = self.take(len, field)?;
                Raw::Len(b, at)
            }
            5 => {
                self.take(4, field)?;
                Raw::Fixed32
            }
            _ => {
                return Err(Error::UnsupportedWireType {
                    wire_type,
                    field,
                    offset,
                })
            }
        };
        Ok(Some((field, raw)))
    }
}
