//! Shared validation rules with upstream's messages: names, labels,
//! annotations, object metadata, label selectors, ports, quantities.
//!
//! The `is_*` functions return upstream's error strings (empty when valid);
//! the `validate_*` functions return field causes.

use super::util::{arr, go_map, parse_quantity, q, s, show};
use crate::error::Cause;
use serde_json::Value;

pub const DNS1123_LABEL_MAX: usize = 63;
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;
pub const LABEL_VALUE_MAX: usize = 63;
pub const QUALIFIED_NAME_MAX: usize = 63;
/// Total size of all annotations of an object.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
/// Total size of a ConfigMap's or Secret's data.
pub const MAX_DATA_SIZE: usize = 1024 * 1024;

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const CONFIG_KEY_FMT: &str = "[-._a-zA-Z0-9]+";
const CONFIG_KEY_MSG: &str =
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'";
const ENV_VAR_FMT: &str = "[-._a-zA-Z][-._a-zA-Z0-9]*";
const ENV_VAR_MSG: &str = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit";

/// Upstream's `RegexError`: the message, examples and the regex.
pub fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let ex: Vec<String> = examples.iter().map(|e| format!("'{e}', ")).collect();
    format!(
        "{msg} (e.g. {}regex used for validation is '{fmt}')",
        ex.join(" or ")
    )
}

pub fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn is_alnum_lower(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn matches_dns_label(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && is_alnum_lower(b[0])
        && is_alnum_lower(b[b.len() - 1])
        && b.iter().all(|&c| is_alnum_lower(c) || c == b'-')
}

fn matches_subdomain(v: &str) -> bool {
    !v.is_empty() && v.split('.').all(matches_dns_label)
}

fn matches_qualified_name_part(v: &str) -> bool {
    let b = v.as_bytes();
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    !b.is_empty()
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter()
            .all(|&c| alnum(c) || c == b'-' || c == b'_' || c == b'.')
}

/// `IsDNS1123Label`.
pub fn is_dns1123_label(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > DNS1123_LABEL_MAX {
        errs.push(max_len_error(DNS1123_LABEL_MAX));
    }
    if !matches_dns_label(v) {
        if matches_subdomain(v) {
            errs.push("must not contain dots".to_string());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_MSG,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// `IsDNS1123Subdomain`.
pub fn is_dns1123_subdomain(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    if !matches_subdomain(v) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// `IsDNS1035Label` (Service names).
pub fn is_dns1035_label(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > DNS1123_LABEL_MAX {
        errs.push(max_len_error(DNS1123_LABEL_MAX));
    }
    if !(matches_dns_label(v) && v.as_bytes()[0].is_ascii_lowercase()) {
        errs.push(regex_error(
            DNS1035_LABEL_MSG,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// `IsQualifiedName`: an optional DNS subdomain prefix and `/`, then a name
/// of at most 63 characters.
pub fn is_qualified_name(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = v.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                for m in is_dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part {m}"));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX {
        errs.push(format!("name part {}", max_len_error(QUALIFIED_NAME_MAX)));
    }
    if !name.is_empty() && !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `IsValidLabelValue`.
pub fn is_valid_label_value(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > LABEL_VALUE_MAX {
        errs.push(max_len_error(LABEL_VALUE_MAX));
    }
    if !v.is_empty() && !matches_qualified_name_part(v) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// `IsConfigMapKey` (also Secret keys).
pub fn is_config_map_key(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(max_len_error(DNS1123_SUBDOMAIN_MAX));
    }
    if v.is_empty()
        || !v
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_')
    {
        errs.push(regex_error(
            CONFIG_KEY_MSG,
            CONFIG_KEY_FMT,
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if v == "." {
        errs.push("must not be '.'".to_string());
    } else if v == ".." {
        errs.push("must not be '..'".to_string());
    } else if v.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

/// `IsValidPortName` (IANA_SVC_NAME).
pub fn is_valid_port_name(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 15 {
        errs.push(max_len_error(15));
    }
    if !v
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if !v.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if v.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if v.starts_with('-') || v.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

/// `IsEnvVarName`.
pub fn is_env_var_name(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let b = v.as_bytes();
    let ok = !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_');
    if !ok {
        errs.push(regex_error(
            ENV_VAR_MSG,
            ENV_VAR_FMT,
            &["my.env-name", "MY_ENV.NAME", "MyEnvName1"],
        ));
    }
    if v == "." {
        errs.push("must not be '.'".to_string());
    } else if v == ".." {
        errs.push("must not be '..'".to_string());
    } else if v.starts_with("..") {
        errs.push("must not start with '..'".to_string());
    }
    errs
}

/// Whether a string is an IPv4 or IPv6 address.
pub fn is_ip(v: &str) -> bool {
    v.parse::<std::net::IpAddr>().is_ok()
}

/// Whether a string is a CIDR (`10.0.0.0/24`, `fd00::/64`).
pub fn is_cidr(v: &str) -> bool {
    match v.split_once('/') {
        Some((ip, bits)) => match (ip.parse::<std::net::IpAddr>(), bits.parse::<u8>()) {
            (Ok(std::net::IpAddr::V4(_)), Ok(b)) => b <= 32 && !bits.starts_with('+'),
            (Ok(std::net::IpAddr::V6(_)), Ok(b)) => b <= 128 && !bits.starts_with('+'),
            _ => false,
        },
        None => false,
    }
}

/// Which name rule a kind's `metadata.name` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain: most kinds.
    Subdomain,
    /// DNS-1123 label: Namespace.
    Label,
    /// DNS-1035 label: Service.
    Dns1035,
    /// Any non-empty name (legacy Events).
    Any,
}

fn name_errors(rule: NameRule, name: &str) -> Vec<String> {
    match rule {
        NameRule::Subdomain => is_dns1123_subdomain(name),
        NameRule::Label => is_dns1123_label(name),
        NameRule::Dns1035 => is_dns1035_label(name),
        NameRule::Any => Vec::new(),
    }
}

/// Invalid-value causes for each message.
pub fn invalid_all(field: &str, value: &str, msgs: Vec<String>) -> Vec<Cause> {
    msgs.into_iter()
        .map(|m| Cause::invalid(field, q(value), m))
        .collect()
}

/// A `FieldValueTooLong` cause.
pub fn too_long(field: &str, max: usize) -> Cause {
    Cause {
        reason: "FieldValueTooLong",
        field: field.to_string(),
        message: format!("Too long: must have at most {max} bytes"),
    }
}

/// A `FieldValueRequired` cause with a detail.
pub fn required_because(field: &str, detail: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired",
        field: field.to_string(),
        message: format!("Required value: {detail}"),
    }
}

/// A `FieldValueNotFound` cause.
pub fn not_found(field: &str, value: &str) -> Cause {
    Cause {
        reason: "FieldValueNotFound",
        field: field.to_string(),
        message: format!("Not found: {}", q(value)),
    }
}

/// A field holding a value of the wrong JSON type.
pub fn wrong_type(field: &str, v: &Value, want: &str) -> Cause {
    Cause::invalid(field, show(v), format!("must be {want}"))
}

/// `ValidateLabels` for a string map at `field`.
pub fn validate_labels(v: &Value, field: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    let Some(m) = v.as_object() else {
        if !v.is_null() {
            out.push(wrong_type(field, v, "a map of strings"));
        }
        return out;
    };
    for (k, val) in m {
        out.extend(invalid_all(field, k, is_qualified_name(k)));
        match val.as_str() {
            Some(val) => out.extend(invalid_all(field, val, is_valid_label_value(val))),
            None => out.push(wrong_type(&format!("{field}[{k}]"), val, "a string")),
        }
    }
    out
}

/// `ValidateAnnotations`: qualified keys (case-insensitive) and the total size.
pub fn validate_annotations(v: &Value, field: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    let Some(m) = v.as_object() else {
        if !v.is_null() {
            out.push(wrong_type(field, v, "a map of strings"));
        }
        return out;
    };
    let mut total = 0usize;
    for (k, val) in m {
        out.extend(invalid_all(field, k, is_qualified_name(&k.to_lowercase())));
        match val.as_str() {
            Some(val) => total += k.len() + val.len(),
            None => out.push(wrong_type(&format!("{field}[{k}]"), val, "a string")),
        }
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        out.push(too_long(field, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    out
}

/// `ValidateObjectMeta` (and `ValidateObjectMetaUpdate` when `old` is given)
/// for a top-level object.
pub fn validate_object_meta(obj: &Value, old: Option<&Value>, rule: NameRule) -> Vec<Cause> {
    let meta = &obj["metadata"];
    let mut out = validate_meta_at(meta, "metadata", rule, true);
    if let Some(old) = old {
        let om = &old["metadata"];
        for f in ["name", "namespace", "uid"] {
            let (n, o) = (s(meta, f), s(om, f));
            if n != o && !(f == "uid" && n.is_empty()) {
                out.push(Cause::immutable(format!("metadata.{f}")));
            }
        }
        if !om["deletionTimestamp"].is_null() {
            let olds: Vec<&str> = arr(om, "finalizers")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let added: Vec<&str> = arr(meta, "finalizers")
                .iter()
                .filter_map(Value::as_str)
                .filter(|f| !olds.contains(f))
                .collect();
            if !added.is_empty() {
                let list: Vec<String> = added.iter().map(|f| q(f)).collect();
                out.push(Cause::forbidden(
                    "metadata.finalizers",
                    format!("no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}", list.join(", ")),
                ));
            }
        }
    }
    out
}

/// Metadata checks at any path (also used for pod templates, where the name
/// is not required).
pub fn validate_meta_at(
    meta: &Value,
    path: &str,
    rule: NameRule,
    name_required: bool,
) -> Vec<Cause> {
    let mut out = Vec::new();
    if !meta.is_object() {
        if name_required {
            out.push(required_because(
                &format!("{path}.name"),
                "name or generateName is required",
            ));
        }
        if !meta.is_null() {
            out.push(wrong_type(path, meta, "an object"));
        }
        return out;
    }
    let name = s(meta, "name");
    if name.is_empty() {
        if name_required {
            out.push(required_because(
                &format!("{path}.name"),
                "name or generateName is required",
            ));
        }
    } else {
        out.extend(invalid_all(
            &format!("{path}.name"),
            name,
            name_errors(rule, name),
        ));
    }
    let gen = s(meta, "generateName");
    if !gen.is_empty() && name_required {
        // generateName is validated as a prefix: strip a trailing dash.
        let base = gen.strip_suffix('-').unwrap_or(gen);
        if !base.is_empty() {
            out.extend(invalid_all(
                &format!("{path}.generateName"),
                gen,
                name_errors(rule, base),
            ));
        }
    }
    let ns = s(meta, "namespace");
    if !ns.is_empty() {
        out.extend(invalid_all(
            &format!("{path}.namespace"),
            ns,
            is_dns1123_label(ns),
        ));
    }
    out.extend(validate_labels(&meta["labels"], &format!("{path}.labels")));
    out.extend(validate_annotations(
        &meta["annotations"],
        &format!("{path}.annotations"),
    ));
    // Owner references: required fields and at most one controller.
    let mut controllers = Vec::new();
    for (i, r) in arr(meta, "ownerReferences").iter().enumerate() {
        let p = format!("{path}.ownerReferences[{i}]");
        for f in ["apiVersion", "kind", "name", "uid"] {
            if s(r, f).is_empty() {
                out.push(Cause::invalid(
                    format!("{p}.{f}"),
                    q(""),
                    format!("{f} must not be empty"),
                ));
            }
        }
        if r["controller"] == Value::Bool(true) {
            controllers.push(format!("{}/{}", s(r, "kind"), s(r, "name")));
        }
    }
    if controllers.len() > 1 {
        out.push(Cause::invalid(
            format!("{path}.ownerReferences"),
            "[]",
            format!("Only one reference can have Controller set to true. Found \"true\" in references for {}", controllers.join(" and ")),
        ));
    }
    for (i, f) in arr(meta, "finalizers").iter().enumerate() {
        let p = format!("{path}.finalizers[{i}]");
        match f.as_str() {
            Some(f) => out.extend(invalid_all(&p, f, is_qualified_name(f))),
            None => out.push(wrong_type(&p, f, "a string")),
        }
    }
    out
}

/// `ValidateLabelSelector` for a `metav1.LabelSelector` at `path`.
pub fn validate_label_selector(sel: &Value, path: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    if sel.is_null() {
        return out;
    }
    if !sel.is_object() {
        out.push(wrong_type(path, sel, "a label selector"));
        return out;
    }
    out.extend(validate_labels(
        &sel["matchLabels"],
        &format!("{path}.matchLabels"),
    ));
    for (i, e) in arr(sel, "matchExpressions").iter().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        let values = arr(e, "values");
        match s(e, "operator") {
            "In" | "NotIn" => {
                if values.is_empty() {
                    out.push(required_because(
                        &format!("{p}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    out.push(Cause::forbidden(
                        format!("{p}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            op => out.push(Cause::invalid(
                format!("{p}.operator"),
                q(op),
                "not a valid selector operator",
            )),
        }
        let key = s(e, "key");
        out.extend(invalid_all(
            &format!("{p}.key"),
            key,
            is_qualified_name(key),
        ));
        for (j, v) in values.iter().enumerate() {
            let vp = format!("{p}.values[{j}]");
            match v.as_str() {
                Some(v) => out.extend(invalid_all(&vp, v, is_valid_label_value(v))),
                None => out.push(wrong_type(&vp, v, "a string")),
            }
        }
    }
    out
}

/// Required and supported value of an enum field (`""` counts as absent).
pub fn validate_enum(v: &Value, path: &str, supported: &[&str], required: bool) -> Vec<Cause> {
    match v {
        Value::Null => {
            if required {
                vec![Cause::required(path)]
            } else {
                Vec::new()
            }
        }
        Value::String(x) if x.is_empty() => {
            if required {
                vec![Cause::required(path)]
            } else {
                Vec::new()
            }
        }
        Value::String(x) if supported.contains(&x.as_str()) => Vec::new(),
        Value::String(x) => vec![Cause::not_supported(path, x, supported)],
        other => vec![Cause::not_supported(
            path,
            show(other).trim_matches('"'),
            supported,
        )],
    }
}

/// `ValidateNonnegativeField` for an optional integer.
pub fn validate_nonnegative(v: &Value, path: &str) -> Vec<Cause> {
    match v {
        Value::Null => Vec::new(),
        Value::Number(_) => match v.as_i64() {
            Some(n) if n >= 0 => Vec::new(),
            _ => vec![Cause::invalid(
                path,
                show(v),
                "must be greater than or equal to 0",
            )],
        },
        other => vec![wrong_type(path, other, "an integer")],
    }
}

/// An optional integer that must be in `[lo, hi]`.
pub fn validate_range(v: &Value, path: &str, lo: i64, hi: i64) -> Vec<Cause> {
    match v {
        Value::Null => Vec::new(),
        Value::Number(_) => match v.as_i64() {
            Some(n) if (lo..=hi).contains(&n) => Vec::new(),
            _ => vec![Cause::invalid(
                path,
                show(v),
                format!("must be between {lo} and {hi}, inclusive"),
            )],
        },
        other => vec![wrong_type(path, other, "an integer")],
    }
}

/// A port number (1-65535), required.
pub fn validate_port_number(v: &Value, path: &str) -> Vec<Cause> {
    match v {
        Value::Null => vec![Cause::required(path)],
        Value::Number(_) if v.as_i64() == Some(0) => vec![Cause::required(path)],
        _ => validate_range(v, path, 1, 65535),
    }
}

/// An `IntOrString` port: a number in range or an IANA service name.
pub fn validate_port_num_or_name(v: &Value, path: &str) -> Vec<Cause> {
    match v {
        Value::String(name) => {
            if name.is_empty() {
                vec![Cause::required(path)]
            } else {
                invalid_all(path, name, is_valid_port_name(name))
            }
        }
        Value::Null => vec![Cause::required(path)],
        _ => validate_range(v, path, 1, 65535),
    }
}

/// An `IntOrString` that must be a non-negative integer or a percentage
/// (`ValidatePositiveIntOrPercent`); `max_percent` also bounds it by 100%.
pub fn validate_int_or_percent(v: &Value, path: &str, max_percent: bool) -> Vec<Cause> {
    match v {
        Value::Null => Vec::new(),
        Value::String(p) => match p.strip_suffix('%').and_then(|n| n.parse::<i64>().ok()) {
            Some(n) if n < 0 => vec![Cause::invalid(path, q(p), "must be greater than or equal to 0")],
            Some(n) if max_percent && n > 100 => vec![Cause::invalid(path, q(p), "must not be greater than 100%")],
            Some(_) => Vec::new(),
            None => vec![Cause::invalid(path, q(p), "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")],
        },
        Value::Number(_) => validate_nonnegative(v, path),
        other => vec![wrong_type(path, other, "an integer or a percentage")],
    }
}

/// Whether an `IntOrString` is zero (`0` or `"0%"`).
pub fn int_or_percent_is_zero(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_i64() == Some(0),
        Value::String(p) => p.strip_suffix('%').and_then(|n| n.parse::<i64>().ok()) == Some(0),
        _ => false,
    }
}

/// A resource list (`requests`, `limits`): valid, non-negative quantities.
pub fn validate_resource_list(v: &Value, path: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    let Some(m) = v.as_object() else {
        if !v.is_null() {
            out.push(wrong_type(path, v, "a map of quantities"));
        }
        return out;
    };
    for (name, qv) in m {
        let p = format!("{path}[{name}]");
        out.extend(invalid_all(&p, name, is_qualified_name(name)));
        let text = match qv {
            Value::String(t) => t.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                out.push(wrong_type(&p, other, "a quantity"));
                continue;
            }
        };
        match parse_quantity(&text) {
            None => out.push(Cause::invalid(p, q(&text), "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")),
            Some(n) if n < 0 => out.push(Cause::invalid(p, q(&text), "must be greater than or equal to 0")),
            Some(_) => {}
        }
    }
    out
}

/// A quantity field's text (`"1Gi"` or a bare number).
pub fn quantity_text(v: &Value) -> Option<String> {
    match v {
        Value::String(t) => Some(t.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Causes for a field that may not change once the object exists.
pub fn immutable(new: &Value, old: &Value, path: &str) -> Vec<Cause> {
    if new != old {
        vec![Cause::immutable(path)]
    } else {
        Vec::new()
    }
}

/// A `selector` that must match a pod template's labels.
pub fn selector_matches_template(
    sel: &Value,
    template_labels: &Value,
    labels_path: &str,
) -> Vec<Cause> {
    if super::util::selector_string(sel).is_some()
        && !super::util::selector_matches(sel, template_labels)
    {
        vec![Cause::invalid(
            labels_path,
            go_map(template_labels),
            "`selector` does not match template `labels`",
        )]
    } else {
        Vec::new()
    }
}

/// The map of key sizes of `data`-like fields, with key validation.
pub fn validate_data_keys(v: &Value, path: &str, base64: bool) -> (Vec<Cause>, usize) {
    let mut out = Vec::new();
    let mut size = 0;
    if let Some(m) = v.as_object() {
        for (k, val) in m {
            let p = format!("{path}[{k}]");
            out.extend(invalid_all(&p, k, is_config_map_key(k)));
            match val.as_str() {
                Some(t) => size += if base64 { t.len() / 4 * 3 } else { t.len() },
                None => out.push(wrong_type(&p, val, "a string")),
            }
        }
    } else if !v.is_null() {
        out.push(wrong_type(path, v, "a map of strings"));
    }
    (out, size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn name_rules() {
        assert!(is_dns1123_subdomain("a.b-c").is_empty());
        assert_eq!(is_dns1123_label("a.b"), vec!["must not contain dots"]);
        assert!(is_dns1123_label("Ab")[0].contains("(e.g. 'my-name',  or '123-abc', regex used"));
        assert!(!is_dns1035_label("1abc").is_empty());
        assert!(is_dns1035_label("abc-1").is_empty());
        assert_eq!(
            is_dns1123_subdomain(&"a".repeat(254)),
            vec![max_len_error(253)]
        );
    }

    #[test]
    fn qualified_names_and_values() {
        assert!(is_qualified_name("app.kubernetes.io/name").is_empty());
        assert!(is_qualified_name("Foo_bar").is_empty());
        assert_eq!(
            is_qualified_name("/x"),
            vec!["prefix part must be non-empty"]
        );
        assert_eq!(is_qualified_name("a/"), vec!["name part must be non-empty"]);
        assert!(is_qualified_name("a/b/c")[0].starts_with("a qualified name must consist"));
        assert!(is_qualified_name("-x")[0].starts_with("name part must consist"));
        assert!(is_valid_label_value("").is_empty());
        assert_eq!(
            is_valid_label_value(&"a".repeat(64)),
            vec![max_len_error(63)]
        );
        assert!(!is_valid_label_value("a b").is_empty());
    }

    #[test]
    fn metadata() {
        let obj = json!({"metadata": {"name": "Bad_Name", "labels": {"ok": "fine", "bad key": "v", "k": "bad value"}}});
        let causes = validate_object_meta(&obj, None, NameRule::Subdomain);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["metadata.name", "metadata.labels", "metadata.labels"]
        );
        assert!(causes[0]
            .message
            .starts_with("Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"));
        let none = validate_object_meta(&json!({"metadata": {}}), None, NameRule::Subdomain);
        assert_eq!(
            none[0].render(),
            "metadata.name: Required value: name or generateName is required"
        );
        let big = json!({"metadata": {"name": "a", "annotations": {"k": "x".repeat(300 * 1024)}}});
        assert_eq!(
            validate_object_meta(&big, None, NameRule::Subdomain)[0].render(),
            "metadata.annotations: Too long: must have at most 262144 bytes"
        );
        let old = json!({"metadata": {"name": "a", "namespace": "x"}});
        let new = json!({"metadata": {"name": "a", "namespace": "y"}});
        assert_eq!(
            validate_object_meta(&new, Some(&old), NameRule::Subdomain)[0].field,
            "metadata.namespace"
        );
    }

    #[test]
    fn selectors_and_ports() {
        let sel = json!({"matchExpressions": [{"key": "a", "operator": "In"}, {"key": "b", "operator": "Exists", "values": ["x"]}, {"key": "c", "operator": "Nope"}]});
        let c = validate_label_selector(&sel, "spec.selector");
        let fields: Vec<&str> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "spec.selector.matchExpressions[0].values",
                "spec.selector.matchExpressions[1].values",
                "spec.selector.matchExpressions[2].operator"
            ]
        );
        assert_eq!(
            validate_port_number(&json!(70000), "p")[0].render(),
            "p: Invalid value: 70000: must be between 1 and 65535, inclusive"
        );
        assert!(validate_port_num_or_name(&json!("http"), "p").is_empty());
        assert!(!validate_port_num_or_name(&json!("HTTP"), "p").is_empty());
        assert!(validate_int_or_percent(&json!("25%"), "p", true).is_empty());
        assert!(!validate_int_or_percent(&json!("125%"), "p", true).is_empty());
        assert!(!validate_int_or_percent(&json!(-1), "p", true).is_empty());
        assert!(is_config_map_key("a.b_c-D").is_empty());
        assert!(!is_config_map_key("a/b").is_empty());
        assert!(is_cidr("10.0.0.0/24") && !is_cidr("10.0.0.0/33") && is_cidr("fd00::/64"));
    }
}
