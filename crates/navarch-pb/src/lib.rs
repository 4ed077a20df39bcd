//! Decodes Kubernetes protobuf request bodies into the JSON that upstream's
//! JSON encoding of the same object would be.
//!
//! kubectl ≥ 1.32 sends the bodies of `kubectl create <generator>`,
//! `kubectl auth can-i` and `kubectl auth whoami` as
//! `application/vnd.kubernetes.protobuf`: the magic `k8s\0`, then a
//! `k8s.io.apimachinery.pkg.runtime.Unknown` whose `typeMeta` names the
//! apiVersion and kind and whose `raw` holds the object's message (for example
//! `k8s.io.api.apps.v1.Deployment`). [`decode`] turns that into a JSON object.
//!
//! # Design
//!
//! The decoder is driven by a schema table, `data/schema.txt`, embedded in the
//! crate and parsed once on first use. The table lists every message of the
//! Kubernetes protobuf API (all of the `k8s-pb` crate: core, apps, batch, rbac,
//! networking, apiextensions, apiregistration, metrics, ...): for each field its
//! number, JSON name, cardinality (single, repeated, `map<string, T>`), type, and
//! how upstream's Go JSON marshalling treats it. The table is generated, not
//! hand-written (see `tests/schema_table.rs`):
//!
//! * message structure and field types come from the `k8s-pb` crate's prost
//!   sources, and a test checks the table against the locked `k8s-pb` on every
//!   run, so it cannot drift silently;
//! * JSON names and marshalling rules come from upstream's Go types, whose tags
//!   give the exact JSON name (`podIPs`, `hostPID`, `$ref`; prost's snake case
//!   loses these), whether the field is a pointer, whether it is `omitempty`,
//!   and whether it is an embedded struct whose keys JSON inlines
//!   (`Volume.volumeSource`, `Probe.handler`, ...).
//!
//! This keeps the server free of `k8s-pb`/`prost` (a large compile) and of any
//! build script: the crate's only dependencies are `serde_json`, `base64` and
//! `thiserror`.
//!
//! # Semantics
//!
//! Protobuf here is proto2 as written by gogo-protobuf: Go pointer fields are on
//! the wire only when set, Go value fields always are, zero or not. So a field
//! on the wire is emitted, except that a zero value (`""`, `0`, `false`, empty
//! bytes) of a Go value field tagged `omitempty` is dropped, as Go's JSON would;
//! `replicas: 0` (a pointer) is kept. Where the table has no Go information,
//! empty strings are dropped and other values kept. A zero `Time` is dropped
//! (upstream writes `null`, e.g. `creationTimestamp`), and so is a zero
//! `IntOrString` in a non-pointer field (an unset `targetPort`).
//!
//! Types whose JSON is not their message structure follow upstream's
//! marshallers: `Time` → RFC 3339 at second precision, `MicroTime` → with
//! microseconds, `Duration` → Go's duration string, `Quantity` → its string,
//! `IntOrString` → number or string, `RawExtension` → the embedded JSON (an
//! embedded protobuf envelope is decoded; anything else is base64), `FieldsV1`
//! and apiextensions `JSON` → their JSON, the apiextensions
//! `JSONSchemaPropsOr{Array,Bool,StringArray}` unions, Go named slices such as
//! `ExtraValue` → arrays; `bytes` → base64; maps → objects with sorted keys.
//! Fields unknown to the table are skipped, as protobuf readers do.

mod schema;
mod wire;

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use schema::{Card, Msg, Rule, Schema, Special, Ty};
use wire::{Raw, Reader};

/// The magic that starts a Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// How deeply messages may nest (including embedded envelopes).
const MAX_DEPTH: usize = 100;

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("bad magic: body does not start with k8s\\0")]
    BadMagic,
    #[error("truncated varint at byte {offset}")]
    TruncatedVarint { offset: usize },
    #[error("varint longer than 10 bytes at byte {offset}")]
    VarintTooLong { offset: usize },
    #[error(
        "truncated field {field} at byte {offset}: {needed} bytes needed, {available} available"
    )]
    Truncated {
        field: u32,
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("invalid field number {field} at byte {offset}")]
    InvalidFieldNumber { field: u64, offset: usize },
    #[error("unsupported wire type {wire_type} for field {field} at byte {offset}")]
    UnsupportedWireType {
        wire_type: u8,
        field: u32,
        offset: usize,
    },
    #[error("wire type mismatch for field {field} of {message}: got {got}, expected {expected}")]
    WireTypeMismatch {
        field: u32,
        message: &'static str,
        got: u8,
        expected: u8,
    },
    #[error("invalid utf-8 in field {field} of {message}")]
    InvalidUtf8 { field: u32, message: &'static str },
    #[error("invalid json in field {field} of {message}: {reason}")]
    InvalidJson {
        field: u32,
        message: &'static str,
        reason: String,
    },
    #[error("time out of range in {message}: {seconds} seconds")]
    TimeOutOfRange { message: &'static str, seconds: i64 },
    #[error("envelope has no {0}")]
    MissingTypeMeta(&'static str),
    #[error("unsupported content encoding \"{0}\"")]
    UnsupportedContentEncoding(String),
    #[error("unknown kind \"{kind}\" in apiVersion \"{api_version}\"")]
    UnknownKind { api_version: String, kind: String },
    #[error("messages nested deeper than {0} levels")]
    TooDeep(usize),
}

/// True if the body starts with the magic `k8s\0`.
pub fn is_envelope(body: &[u8]) -> bool {
    body.starts_with(MAGIC)
}

/// Decodes a `k8s\0`-enveloped protobuf body into the JSON object upstream's
/// JSON form would be, with `apiVersion` and `kind` set from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, Error> {
    Decoder {
        schema: Schema::get(),
    }
    .envelope(body, 0, 0)
}

/// The full protobuf message name for an apiVersion and kind, if supported
/// (e.g. `("apps/v1", "Deployment")` → `k8s.io.api.apps.v1.Deployment`).
pub fn message_name(api_version: &str, kind: &str) -> Option<&'static str> {
    schema::message_for(api_version, kind).map(|i| Schema::get().msgs[i].name)
}

/// Whether [`decode`] knows the message for this apiVersion and kind.
pub fn supports(api_version: &str, kind: &str) -> bool {
    message_name(api_version, kind).is_some()
}

const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";
const TYPE_META: &str = "k8s.io.apimachinery.pkg.runtime.TypeMeta";

struct Decoder {
    schema: &'static Schema,
}

fn mismatch(field: u32, message: &'static str, raw: &Raw, expected: u8) -> Error {
    Error::WireTypeMismatch {
        field,
        message,
        got: raw.wire_type(),
        expected,
    }
}

fn utf8<'a>(b: &'a [u8], field: u32, message: &'static str) -> Result<&'a str, Error> {
    std::str::from_utf8(b).map_err(|_| Error::InvalidUtf8 { field, message })
}

/// A string field of a small fixed message (TypeMeta, Unknown).
fn string_field(raw: Raw, field: u32, message: &'static str) -> Result<String, Error> {
    match raw {
        Raw::Len(b, _) => Ok(utf8(b, field, message)?.to_owned()),
        other => Err(mismatch(field, message, &other, 2)),
    }
}

impl Decoder {
    fn envelope(&self, body: &[u8], base: usize, depth: usize) -> Result<Value, Error> {
        let inner = body.strip_prefix(MAGIC).ok_or(Error::BadMagic)?;
        let mut r = Reader::new(inner, base + MAGIC.len());
        let (mut api_version, mut kind) = (String::new(), String::new());
        let mut raw: (&[u8], usize) = (&[], base + body.len());
        let mut encoding = String::new();
        while let Some((num, value)) = r.field()? {
            match num {
                1 => {
                    let Raw::Len(tm, at) = value else {
                        return Err(mismatch(1, UNKNOWN, &value, 2));
                    };
                    let mut t = Reader::new(tm, at);
                    while let Some((n, v)) = t.field()? {
                        match n {
                            1 => api_version = string_field(v, 1, TYPE_META)?,
                            2 => kind = string_field(v, 2, TYPE_META)?,
                            _ => {}
                        }
                    }
                }
                2 => match value {
                    Raw::Len(b, at) => raw = (b, at),
                    other => return Err(mismatch(2, UNKNOWN, &other, 2)),
                },
                3 => encoding = string_field(value, 3, UNKNOWN)?,
                4 => {
                    string_field(value, 4, UNKNOWN)?;
                }
                _ => {}
            }
        }
        if !encoding.is_empty() {
            return Err(Error::UnsupportedContentEncoding(encoding));
        }
        if api_version.is_empty() {
            return Err(Error::MissingTypeMeta("apiVersion"));
        }
        if kind.is_empty() {
            return Err(Error::MissingTypeMeta("kind"));
        }
        let Some(idx) = schema::message_for(&api_version, &kind) else {
            return Err(Error::UnknownKind { api_version, kind });
        };
        let body = self.message(idx, raw.0, raw.1, depth + 1, false)?;
        let mut out = Map::new();
        out.insert("apiVersion".into(), Value::String(api_version));
        out.insert("kind".into(), Value::String(kind));
        if let Some(Value::Object(fields)) = body {
            for (k, v) in fields {
                if k != "apiVersion" && k != "kind" {
                    out.insert(k, v);
                }
            }
        }
        Ok(Value::Object(out))
    }

    /// Reads a message's fields into per-field slots (in `msg.fields` order),
    /// checking wire types and skipping unknown fields.
    fn collect<'a>(
        &self,
        msg: &Msg,
        buf: &'a [u8],
        base: usize,
    ) -> Result<Vec<Vec<Raw<'a>>>, Error> {
        let mut slots: Vec<Vec<Raw<'a>>> = msg.fields.iter().map(|_| Vec::new()).collect();
        let mut r = Reader::new(buf, base);
        while let Some((num, raw)) = r.field()? {
            let Some(i) = msg.field_index(num) else {
                continue;
            };
            let f = &msg.fields[i];
            let wt = raw.wire_type();
            let (expected, packed_ok) = match f.ty {
                Ty::Str | Ty::Bytes | Ty::Msg(_) => (2, false),
                Ty::Bool | Ty::I32 | Ty::I64 => (0, f.card == Card::Rep),
                Ty::F64 => (1, f.card == Card::Rep),
            };
            let expected = if f.card == Card::Map { 2 } else { expected };
            if wt != expected && !(packed_ok && wt == 2) {
                return Err(mismatch(num, msg.name, &raw, expected));
            }
            slots[i].push(raw);
        }
        Ok(slots)
    }

    /// Decodes a message. `None` means upstream's JSON would be null or absent
    /// (a zero Time, an unset union). `keep_zero` is set for fields that are Go
    /// pointers or not `omitempty`.
    fn message(
        &self,
        idx: usize,
        buf: &[u8],
        base: usize,
        depth: usize,
        keep_zero: bool,
    ) -> Result<Option<Value>, Error> {
        if depth > MAX_DEPTH {
            return Err(Error::TooDeep(MAX_DEPTH));
        }
        let msg = &self.schema.msgs[idx];
        if msg.special != Special::None {
            return self.special(msg, buf, base, depth, keep_zero);
        }
        let slots = self.collect(msg, buf, base)?;
        if msg.slice {
            // A Go named slice: `message X { repeated T items = 1; }`.
            for (f, raws) in msg.fields.iter().zip(&slots) {
                if f.card == Card::Rep {
                    let v = self.field(msg, f, raws, depth)?;
                    return Ok(Some(v.unwrap_or_else(|| Value::Array(Vec::new()))));
                }
            }
            return Ok(Some(Value::Array(Vec::new())));
        }
        let mut obj = Map::new();
        for (f, raws) in msg.fields.iter().zip(&slots) {
            if raws.is_empty() || f.rule == Rule::Skip {
                continue;
            }
            let Some(v) = self.field(msg, f, raws, depth)? else {
                continue;
            };
            if f.rule == Rule::Inline {
                if let Value::Object(inner) = v {
                    obj.extend(inner);
                }
            } else {
                obj.insert(f.json.to_owned(), v);
            }
        }
        Ok(Some(Value::Object(obj)))
    }

    /// The JSON value of one field from its occurrences on the wire.
    fn field(
        &self,
        msg: &Msg,
        f: &schema::Field,
        raws: &[Raw],
        depth: usize,
    ) -> Result<Option<Value>, Error> {
        let keep_zero = matches!(f.rule, Rule::Ptr | Rule::Keep);
        match (f.card, f.ty) {
            (_, _) if raws.is_empty() => Ok(None),
            (Card::One, Ty::Msg(t)) => {
                // Protobuf merges repeated occurrences of a singular message,
                // which is the same as decoding their concatenation.
                if let [Raw::Len(b, at)] = raws {
                    return self.message(t, b, *at, depth + 1, keep_zero);
                }
                let mut joined = Vec::new();
                let mut at = 0;
                for r in raws {
                    if let Raw::Len(b, a) = r {
                        if joined.is_empty() {
                            at = *a;
                        }
                        joined.extend_from_slice(b);
                    }
                }
                self.message(t, &joined, at, depth + 1, keep_zero)
            }
            (Card::One, ty) => {
                let v = self.scalar(msg, f.num, ty, raws[raws.len() - 1])?;
                if f.rule.drops_zero(ty) && is_zero(&v) {
                    return Ok(None);
                }
                Ok(Some(v))
            }
            (Card::Rep, Ty::Msg(t)) => {
                let mut items = Vec::with_capacity(raws.len());
                for r in raws {
                    if let Raw::Len(b, at) = r {
                        items.push(
                            self.message(t, b, *at, depth + 1, true)?
                                .unwrap_or(Value::Null),
                        );
                    }
                }
                Ok(Some(Value::Array(items)))
            }
            (Card::Rep, ty) => {
                let mut items = Vec::with_capacity(raws.len());
                for r in raws {
                    match (ty, r) {
                        (Ty::Bool | Ty::I32 | Ty::I64, Raw::Len(b, at)) => {
                            let mut p = Reader::new(b, *at);
                            while !p.at_end() {
                                let v = p.varint()?;
                                items.push(self.scalar(msg, f.num, ty, Raw::Varint(v))?);
                            }
                        }
                        (Ty::F64, Raw::Len(b, at)) => {
                            if b.len() % 8 != 0 {
                                return Err(Error::Truncated {
                                    field: f.num,
                                    offset: at + b.len() / 8 * 8,
                                    needed: 8,
                                    available: b.len() % 8,
                                });
                            }
                            for c in b.chunks_exact(8) {
                                let bits = u64::from_le_bytes(c.try_into().expect("8 bytes"));
                                items.push(self.scalar(msg, f.num, ty, Raw::Fixed64(bits))?);
                            }
                        }
                        _ => items.push(self.scalar(msg, f.num, ty, *r)?),
                    }
                }
                if items.is_empty() {
                    return Ok(None);
                }
                Ok(Some(Value::Array(items)))
            }
            (Card::Map, ty) => {
                let mut entries = BTreeMap::new();
                for r in raws {
                    let Raw::Len(b, at) = r else { continue };
                    let mut key = String::new();
                    let mut value: Option<Value> = None;
                    let mut e = Reader::new(b, *at);
                    while let Some((n, raw)) = e.field()? {
                        match n {
                            1 => key = string_field(raw, f.num, msg.name)?,
                            2 => {
                                value = Some(match (ty, raw) {
                                    (Ty::Msg(t), Raw::Len(b, at)) => self
                                        .message(t, b, at, depth + 1, true)?
                                        .unwrap_or(Value::Null),
                                    (Ty::Msg(_), other) => {
                                        return Err(mismatch(f.num, msg.name, &other, 2))
                                    }
                                    (ty, raw) => self.scalar(msg, f.num, ty, raw)?,
                                });
                            }
                            _ => {}
                        }
                    }
                    let value = match value {
                        Some(v) => v,
                        None => match ty {
                            Ty::Msg(t) => self
                                .message(t, &[], *at, depth + 1, true)?
                                .unwrap_or(Value::Null),
                            Ty::Str | Ty::Bytes => Value::String(String::new()),
                            Ty::Bool => Value::Bool(false),
                            Ty::I32 | Ty::I64 | Ty::F64 => Value::from(0),
                        },
                    };
                    entries.insert(key, value);
                }
                Ok(Some(Value::Object(entries.into_iter().collect())))
            }
        }
    }

    fn scalar(&self, msg: &Msg, field: u32, ty: Ty, raw: Raw) -> Result<Value, Error> {
        Ok(match (ty, raw) {
            (Ty::Str, Raw::Len(b, _)) => Value::String(utf8(b, field, msg.name)?.to_owned()),
            (Ty::Bytes, Raw::Len(b, _)) => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(b))
            }
            (Ty::Bool, Raw::Varint(v)) => Value::Bool(v != 0),
            (Ty::I32, Raw::Varint(v)) => Value::from(i64::from(v as i32)),
            (Ty::I64, Raw::Varint(v)) => Value::from(v as i64),
            (Ty::F64, Raw::Fixed64(bits)) => {
                Number::from_f64(f64::from_bits(bits)).map_or(Value::Null, Value::Number)
            }
            (Ty::Str | Ty::Bytes | Ty::Msg(_), other) => {
                return Err(mismatch(field, msg.name, &other, 2))
            }
            (Ty::F64, other) => return Err(mismatch(field, msg.name, &other, 1)),
            (_, other) => return Err(mismatch(field, msg.name, &other, 0)),
        })
    }

    fn special(
        &self,
        msg: &Msg,
        buf: &[u8],
        base: usize,
        depth: usize,
        keep_zero: bool,
    ) -> Result<Option<Value>, Error> {
        let name = msg.name;
        // Fields of the special messages, by number (last occurrence wins).
        let mut fields: Vec<(u32, Raw)> = Vec::new();
        let mut r = Reader::new(buf, base);
        while let Some(f) = r.field()? {
            fields.push(f);
        }
        let last = |n: u32| {
            fields
                .iter()
                .rev()
                .find(|(num, _)| *num == n)
                .map(|(_, r)| *r)
        };
        let varint = |n: u32| -> Result<u64, Error> {
            match last(n) {
                None => Ok(0),
                Some(Raw::Varint(v)) => Ok(v),
                Some(other) => Err(mismatch(n, name, &other, 0)),
            }
        };
        let bytes = |n: u32| -> Result<Option<(&[u8], usize)>, Error> {
            match last(n) {
                None => Ok(None),
                Some(Raw::Len(b, at)) => Ok(Some((b, at))),
                Some(other) => Err(mismatch(n, name, &other, 2)),
            }
        };
        match msg.special {
            Special::None => unreachable!("special() called for a plain message"),
            Special::Time | Special::MicroTime => {
                let seconds = varint(1)? as i64;
                let nanos = i64::from(varint(2)? as i32);
                if seconds == 0 && nanos == 0 {
                    return Ok(None);
                }
                let micro = msg.special == Special::MicroTime;
                rfc3339(seconds, nanos, micro)
                    .map(|s| Some(Value::String(s)))
                    .ok_or(Error::TimeOutOfRange {
                        message: name,
                        seconds,
                    })
            }
            Special::Duration => Ok(Some(Value::String(go_duration(varint(1)? as i64)))),
            Special::Quantity => Ok(Some(Value::String(match bytes(1)? {
                Some((b, _)) if !b.is_empty() => utf8(b, 1, name)?.to_owned(),
                _ => "0".to_owned(),
            }))),
            Special::IntOrString => {
                let ty = varint(1)?;
                let int_val = varint(2)? as i32;
                let str_val = match bytes(3)? {
                    Some((b, _)) => utf8(b, 3, name)?.to_owned(),
                    None => String::new(),
                };
                if ty == 1 {
                    Ok(Some(Value::String(str_val)))
                } else if int_val == 0 && !keep_zero {
                    Ok(None)
                } else {
                    Ok(Some(Value::from(int_val)))
                }
            }
            Special::RawExtension => {
                let Some((raw, at)) = bytes(1)?.filter(|(b, _)| !b.is_empty()) else {
                    return Ok(None);
                };
                if is_envelope(raw) {
                    return self.envelope(raw, at, depth).map(Some);
                }
                Ok(Some(serde_json::from_slice(raw).unwrap_or_else(|_| {
                    Value::String(base64::engine::general_purpose::STANDARD.encode(raw))
                })))
            }
            Special::RawJson => {
                let Some((raw, _)) = bytes(1)?.filter(|(b, _)| !b.is_empty()) else {
                    return Ok(None);
                };
                serde_json::from_slice(raw)
                    .map(Some)
                    .map_err(|e| Error::InvalidJson {
                        field: 1,
                        message: name,
                        reason: e.to_string(),
                    })
            }
            Special::SchemaOrArray | Special::SchemaOrBool | Special::SchemaOrStringArray => {
                let slots = self.collect(msg, buf, base)?;
                let value = |num: u32| -> Result<Option<Value>, Error> {
                    match msg.field_index(num) {
                        Some(i) => self.field(msg, &msg.fields[i], &slots[i], depth),
                        None => Ok(None),
                    }
                };
                match msg.special {
                    Special::SchemaOrBool => {
                        // allows = 1, schema = 2
                        if let Some(schema) = value(2)? {
                            return Ok(Some(schema));
                        }
                        Ok(Some(Value::Bool(varint(1)? != 0)))
                    }
                    _ => {
                        // schema = 1, then the array alternative = 2
                        if let Some(Value::Array(a)) = value(2)? {
                            if !a.is_empty() {
                                return Ok(Some(Value::Array(a)));
                            }
                        }
                        value(1)
                    }
                }
            }
        }
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Null => true,
        _ => false,
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// RFC 3339 in UTC as Go's metav1.Time (seconds) or MicroTime (microseconds)
/// marshal it; `None` outside years 0..=9999, which Go refuses to marshal.
fn rfc3339(seconds: i64, nanos: i64, micro: bool) -> Option<String> {
    let seconds = seconds.checked_add(nanos.div_euclid(1_000_000_000))?;
    let nanos = nanos.rem_euclid(1_000_000_000);
    const MIN: i64 = -62_167_219_200; // 0000-01-01T00:00:00Z
    const MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    if !(MIN..=MAX).contains(&seconds) {
        return None;
    }
    let (y, mo, d) = civil_from_days(seconds.div_euclid(86_400));
    let s = seconds.rem_euclid(86_400);
    let (h, mi, se) = (s / 3600, s / 60 % 60, s % 60);
    Some(if micro {
        format!(
            "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}.{:06}Z",
            nanos / 1000
        )
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}Z")
    })
}

/// Go's `time.Duration.String()`.
fn go_duration(d: i64) -> String {
    let neg = d < 0;
    let u = d.unsigned_abs();
    // value with `prec` fractional digits, trailing zeros trimmed
    let frac = |v: u64, prec: u32| -> String {
        let p = 10u64.pow(prec);
        let (int, f) = (v / p, v % p);
        if f == 0 {
            return int.to_string();
        }
        let digits = format!("{f:0width$}", width = prec as usize);
        format!("{int}.{}", digits.trim_end_matches('0'))
    };
    let body = if u == 0 {
        "0s".to_owned()
    } else if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", frac(u, 3))
    } else if u < 1_000_000_000 {
        format!("{}ms", frac(u, 6))
    } else {
        let secs = u / 1_000_000_000;
        let sub = u % 1_000_000_000;
        let s = frac((secs % 60) * 1_000_000_000 + sub, 9);
        let (m, h) = (secs / 60 % 60, secs / 3600);
        if h > 0 {
            format!("{h}h{m}m{s}s")
        } else if m > 0 {
            format!("{m}m{s}s")
        } else {
            format!("{s}s")
        }
    };
    if neg {
        format!("-{body}")
    } else {
        body
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn durations_match_go() {
        for (d, s) in [
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1µs"),
            (2_200_000, "2.2ms"),
            (1_000_000_000, "1s"),
            (1_500_000_000, "1.5s"),
            (60_000_000_000, "1m0s"),
            (3_600_000_000_000, "1h0m0s"),
            (5_445_000_000_000, "1h30m45s"),
            (-90_000_000_000, "-1m30s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
        ] {
            assert_eq!(go_duration(d), s, "{d}");
        }
    }

    #[test]
    fn times_match_go() {
        assert_eq!(
            rfc3339(1_704_067_200, 0, false).unwrap(),
            "2024-01-01T00:00:00Z"
        );
        assert_eq!(
            rfc3339(1_709_210_096, 123_456_789, true).unwrap(),
            "2024-02-29T12:34:56.123456Z"
        );
        assert_eq!(rfc3339(-1, 0, false).unwrap(), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(0, -1, true).unwrap(), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            rfc3339(253_402_300_799, 0, false).unwrap(),
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(
            rfc3339(-62_167_219_200, 0, false).unwrap(),
            "0000-01-01T00:00:00Z"
        );
        assert!(rfc3339(253_402_300_800, 0, false).is_none());
        assert!(rfc3339(i64::MAX, i64::MAX, false).is_none());
    }
}
