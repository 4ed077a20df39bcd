//! Small helpers for reading and writing untyped objects without panicking,
//! and for rendering values the way upstream's printers and validators do.

use serde_json::{Map, Value};

/// `v[key]` as a string, `""` when absent or not a string.
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `v[key]` as an array, empty when absent or not an array.
pub fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// `v[key]` as an integer, when it is one.
pub fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

/// `v[key]` as a bool, `false` when absent or not a bool.
pub fn flag(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// Whether `v[key]` is set to something other than `null`.
pub fn has(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

/// The object at `v[key]`, created when absent or `null`; `None` when `v` is
/// not an object or the field holds something else.
pub fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    let m = v.as_object_mut()?;
    let slot = m.entry(key.to_string()).or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

/// The object at `v[key]` when it already is one.
pub fn existing_obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    v.as_object_mut()?.get_mut(key).filter(|x| x.is_object())
}

/// Sets `m[key]` when it is absent or `null`.
pub fn set_default(m: &mut Map<String, Value>, key: &str, value: Value) {
    match m.get(key) {
        Some(x) if !x.is_null() => {}
        _ => {
            m.insert(key.to_string(), value);
        }
    }
}

/// Sets `m[key]` when it is absent, `null` or an empty string.
pub fn set_default_str(m: &mut Map<String, Value>, key: &str, value: &str) {
    match m.get(key) {
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(x) if !x.is_null() && !x.is_string() => {}
        _ => {
            m.insert(key.to_string(), Value::String(value.to_string()));
        }
    }
}

/// Calls `f` on every object element of the array at `v[key]`.
pub fn each_obj_mut(v: &mut Value, key: &str, mut f: impl FnMut(&mut Value)) {
    if let Some(items) = v.get_mut(key).and_then(Value::as_array_mut) {
        for item in items.iter_mut().filter(|i| i.is_object()) {
            f(item);
        }
    }
}

/// A string map (`labels`, `nodeSelector`) as sorted pairs; non-string values skipped.
pub fn string_map(v: &Value) -> Vec<(&str, &str)> {
    let mut out: Vec<(&str, &str)> = v
        .as_object()
        .into_iter()
        .flat_map(|m| m.iter())
        .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)))
        .collect();
    out.sort();
    out
}

/// `labels.FormatLabels`: `a=b,c=d`, `<none>` when empty.
pub fn format_labels(v: &Value) -> String {
    let pairs = string_map(v);
    if pairs.is_empty() {
        return "<none>".to_string();
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A `metav1.LabelSelector` rendered as `labels.Selector.String()`; `None`
/// when it does not convert (unknown operator, bad values).
pub fn selector_string(sel: &Value) -> Option<String> {
    if !sel.is_object() {
        return if sel.is_null() {
            Some(String::new())
        } else {
            None
        };
    }
    let mut reqs: Vec<(String, String)> = Vec::new();
    for (k, v) in string_map(&sel["matchLabels"]) {
        reqs.push((k.to_string(), format!("{k}={v}")));
    }
    for e in arr(sel, "matchExpressions") {
        let key = s(e, "key");
        let mut values: Vec<&str> = arr(e, "values").iter().filter_map(Value::as_str).collect();
        values.sort();
        values.dedup();
        let r = match s(e, "operator") {
            "In" if !values.is_empty() => format!("{key} in ({})", values.join(",")),
            "NotIn" if !values.is_empty() => format!("{key} notin ({})", values.join(",")),
            "Exists" if values.is_empty() => key.to_string(),
            "DoesNotExist" if values.is_empty() => format!("!{key}"),
            _ => return None,
        };
        reqs.push((key.to_string(), r));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Some(reqs.into_iter().map(|r| r.1).collect::<Vec<_>>().join(","))
}

/// `metav1.FormatLabelSelector`: `<none>` when empty, `<error>` when invalid.
pub fn format_label_selector(sel: &Value) -> String {
    match selector_string(sel) {
        Some(s) if s.is_empty() => "<none>".to_string(),
        Some(s) => s,
        None => "<error>".to_string(),
    }
}

/// Whether a `metav1.LabelSelector` matches a label map. An invalid selector
/// matches nothing; a null one matches nothing (as upstream's `Nothing()`).
pub fn selector_matches(sel: &Value, labels: &Value) -> bool {
    if !sel.is_object() {
        return false;
    }
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    for (k, v) in string_map(&sel["matchLabels"]) {
        if get(k) != Some(v) {
            return false;
        }
    }
    for e in arr(sel, "matchExpressions") {
        let key = s(e, "key");
        let values: Vec<&str> = arr(e, "values").iter().filter_map(Value::as_str).collect();
        let ok = match s(e, "operator") {
            "In" => get(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => get(key).is_some(),
            "DoesNotExist" => get(key).is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Whether a selector selects nothing in particular (no requirements).
pub fn selector_is_empty(sel: &Value) -> bool {
    string_map(&sel["matchLabels"]).is_empty() && arr(sel, "matchExpressions").is_empty()
}

/// A string map as Go's `%#v` prints it: `map[string]string{"a":"b", "c":"d"}`.
pub fn go_map(v: &Value) -> String {
    if !v.is_object() {
        return "map[string]string(nil)".to_string();
    }
    let pairs: Vec<String> = string_map(v)
        .iter()
        .map(|(k, v)| format!("{k:?}:{v:?}"))
        .collect();
    format!("map[string]string{{{}}}", pairs.join(", "))
}

/// A JSON value rendered for an `Invalid value:` message: strings quoted,
/// numbers and booleans bare, anything else as compact JSON.
pub fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}

/// A string quoted as upstream quotes string values in messages.
pub fn q(s: &str) -> String {
    format!("{s:?}")
}

/// `IntOrString.String()`.
pub fn int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// Containers' names and images joined by commas (`layoutContainerCells`).
pub fn container_cells(pod_spec: &Value) -> (String, String) {
    let cs = arr(pod_spec, "containers");
    let names: Vec<&str> = cs.iter().map(|c| s(c, "name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "image")).collect();
    (names.join(","), images.join(","))
}

/// The number of entries of an object field (`len(obj.Data)`).
pub fn count(v: &Value, key: &str) -> i64 {
    match v.get(key) {
        Some(Value::Object(m)) => m.len() as i64,
        Some(Value::Array(a)) => a.len() as i64,
        _ => 0,
    }
}

/// A resource quantity in nano-units (rounded up), or `None` when the string
/// is not a valid Kubernetes quantity or out of range.
pub fn parse_quantity(q: &str) -> Option<i128> {
    let bytes = q.as_bytes();
    let mut i = 0;
    let mut negative = false;
    if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
        negative = bytes[i] == b'-';
        i += 1;
    }
    let mut mantissa: i128 = 0;
    let mut scale: u32 = 0;
    let mut digits = 0;
    let mut seen_dot = false;
    while i < bytes.len() {
        match bytes[i] {
            b'0'..=b'9' => {
                if digits >= 30 {
                    return None;
                }
                mantissa = mantissa * 10 + i128::from(bytes[i] - b'0');
                if mantissa != 0 || seen_dot {
                    digits += 1;
                }
                if seen_dot {
                    scale += 1;
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => break,
        }
        i += 1;
    }
    let number_text = &q[usize::from(negative || q.starts_with('+'))..i];
    if !number_text.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    let suffix = &q[i..];
    // value = mantissa / 10^scale * 10^exp10 * 2^exp2, in nano units (+9).
    let (exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let rest = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))?;
            if rest.is_empty()
                || !rest
                    .trim_start_matches(['+', '-'])
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            {
                return None;
            }
            let e: i32 = rest.parse().ok()?;
            if !(-40..=40).contains(&e) {
                return None;
            }
            (e, 0)
        }
    };
    let mut value = mantissa.checked_mul(1i128.checked_shl(exp2)?)?;
    let shift = exp10 + 9 - scale as i32;
    if shift >= 0 {
        value = value.checked_mul(10i128.checked_pow(shift as u32)?)?;
    } else {
        let d = 10i128.checked_pow((-shift) as u32)?;
        value = (value + d - 1) / d;
    }
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("1"), Some(1_000_000_000));
        assert_eq!(parse_quantity("1000m"), parse_quantity("1"));
        assert_eq!(parse_quantity("0.5"), Some(500_000_000));
        assert_eq!(parse_quantity("1Ki"), Some(1024 * 1_000_000_000));
        assert_eq!(parse_quantity("1e3"), parse_quantity("1k"));
        assert_eq!(parse_quantity("-2"), Some(-2_000_000_000));
        assert_eq!(
            parse_quantity("128Mi"),
            Some(128 * (1 << 20) * 1_000_000_000)
        );
        for bad in ["", "abc", "1x", "Mi", "1.2.3", "--1", "1e"] {
            assert_eq!(parse_quantity(bad), None, "{bad}");
        }
    }

    #[test]
    fn selectors() {
        let sel = json!({"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [{"key": "c", "operator": "In", "values": ["y", "x"]}, {"key": "d", "operator": "DoesNotExist"}]});
        assert_eq!(selector_string(&sel).unwrap(), "a=1,b=2,c in (x,y),!d");
        assert!(selector_matches(
            &sel,
            &json!({"a": "1", "b": "2", "c": "x"})
        ));
        assert!(!selector_matches(
            &sel,
            &json!({"a": "1", "b": "2", "c": "x", "d": ""})
        ));
        assert_eq!(format_label_selector(&json!({})), "<none>");
        assert_eq!(
            format_label_selector(&json!({"matchExpressions": [{"key": "a", "operator": "Bad"}]})),
            "<error>"
        );
        assert_eq!(
            go_map(&json!({"app": "web", "a": "b"})),
            r#"map[string]string{"a":"b", "app":"web"}"#
        );
    }
}
