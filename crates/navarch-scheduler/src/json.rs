//! Small accessors over upstream JSON objects that name the field on error.

use serde_json::{Map, Value};

use crate::Error;

/// The object at `v`, or an error naming `path`. Null reads as absent.
pub(crate) fn obj<'a>(
    kind: &'static str,
    path: &str,
    v: Option<&'a Value>,
) -> Result<Option<&'a Map<String, Value>>, Error> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(Error::invalid(
            kind,
            path,
            format!("must be an object, got {}", type_name(other)),
        )),
    }
}

pub(crate) fn arr<'a>(
    kind: &'static str,
    path: &str,
    v: Option<&'a Value>,
) -> Result<&'a [Value], Error> {
    match v {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(Error::invalid(
            kind,
            path,
            format!("must be a list, got {}", type_name(other)),
        )),
    }
}

pub(crate) fn string<'a>(
    kind: &'static str,
    path: &str,
    v: Option<&'a Value>,
) -> Result<Option<&'a str>, Error> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Error::invalid(
            kind,
            path,
            format!("must be a string, got {}", type_name(other)),
        )),
    }
}

pub(crate) fn int(kind: &'static str, path: &str, v: Option<&Value>) -> Result<Option<i64>, Error> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| Error::invalid(kind, path, format!("must be an integer, got {n}"))),
        Some(other) => Err(Error::invalid(
            kind,
            path,
            format!("must be an integer, got {}", type_name(other)),
        )),
    }
}

pub(crate) fn boolean(kind: &'static str, path: &str, v: Option<&Value>) -> Result<bool, Error> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(Error::invalid(
            kind,
            path,
            format!("must be a boolean, got {}", type_name(other)),
        )),
    }
}

/// A `map[string]string` (labels, nodeSelector).
pub(crate) fn string_map(
    kind: &'static str,
    path: &str,
    v: Option<&Value>,
) -> Result<Vec<(String, String)>, Error> {
    let Some(m) = obj(kind, path, v)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(m.len());
    for (k, val) in m {
        match val {
            Value::String(s) => out.push((k.clone(), s.clone())),
            other => {
                return Err(Error::invalid(
                    kind,
                    &format!("{path}.{k}"),
                    format!("must be a string, got {}", type_name(other)),
                ))
            }
        }
    }
    Ok(out)
}

/// A list of strings.
pub(crate) fn strings(
    kind: &'static str,
    path: &str,
    v: Option<&Value>,
) -> Result<Vec<String>, Error> {
    let a = arr(kind, path, v)?;
    let mut out = Vec::with_capacity(a.len());
    for (i, s) in a.iter().enumerate() {
        match s {
            Value::String(s) => out.push(s.clone()),
            other => {
                return Err(Error::invalid(
                    kind,
                    &format!("{path}[{i}]"),
                    format!("must be a string, got {}", type_name(other)),
                ))
            }
        }
    }
    Ok(out)
}

/// An RFC 3339 timestamp as nanoseconds since the epoch.
pub(crate) fn timestamp(
    kind: &'static str,
    path: &str,
    v: Option<&Value>,
) -> Result<Option<i128>, Error> {
    let Some(s) = string(kind, path, v)? else {
        return Ok(None);
    };
    s.parse::<jiff::Timestamp>()
        .map(|t| Some(t.as_nanosecond()))
        .map_err(|e| Error::invalid(kind, path, format!("invalid timestamp {s:?}: {e}")))
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
