//! Events: core `v1` and `events.k8s.io/v1`, both stored in core form.

use super::util::{has, int, q, s};
use super::validation::{
    immutable, invalid_all, is_dns1123_subdomain, is_qualified_name, validate_object_meta, NameRule,
};
use super::{Column, NAME_COLUMN};
use crate::error::Cause;
use jiff::Timestamp;
use serde_json::{json, Map, Value};

/// Fields with the same name in both versions.
const SHARED: [&str; 7] = [
    "eventTime",
    "series",
    "action",
    "related",
    "type",
    "reason",
    "reportingInstance",
];
/// `(events.k8s.io name, core name)` of renamed fields.
const RENAMED: [(&str, &str); 6] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedCount", "count"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedSource", "source"),
];

fn convert(obj: &Value, api_version: &str, to_core: bool) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(api_version));
    out.insert("kind".into(), json!("Event"));
    if let Some(m) = obj.get("metadata") {
        out.insert("metadata".into(), m.clone());
    }
    let copy = |out: &mut Map<String, Value>, from: &str, to: &str| {
        if let Some(v) = obj.get(from).filter(|v| !v.is_null()) {
            out.insert(to.to_string(), v.clone());
        }
    };
    for (v1, core) in RENAMED {
        if to_core {
            copy(&mut out, v1, core);
        } else {
            copy(&mut out, core, v1);
        }
    }
    if to_core {
        copy(&mut out, "reportingController", "reportingComponent");
    } else {
        copy(&mut out, "reportingComponent", "reportingController");
    }
    for f in SHARED {
        copy(&mut out, f, f);
    }
    Value::Object(out)
}

/// `events.k8s.io/v1` → stored core `v1` form.
pub fn to_storage(obj: Value) -> Value {
    let mut core = convert(&obj, "v1", true);
    if let Some(m) = core.as_object_mut() {
        m.entry("involvedObject").or_insert(json!({}));
    }
    core
}

/// Stored core `v1` form → `events.k8s.io/v1`.
pub fn from_storage(obj: Value) -> Value {
    let mut v1 = convert(&obj, "events.k8s.io/v1", false);
    if let Some(m) = v1.as_object_mut() {
        // Serialized without omitempty upstream.
        m.entry("eventTime").or_insert(Value::Null);
    }
    v1
}

/// Whether an object is in events.k8s.io form (rather than core form).
fn is_v1_form(obj: &Value) -> bool {
    s(obj, "apiVersion").starts_with("events.k8s.io/")
        || (obj.get("regarding").is_some() && obj.get("involvedObject").is_none())
}

fn core_form(obj: &Value) -> std::borrow::Cow<'_, Value> {
    if is_v1_form(obj) {
        std::borrow::Cow::Owned(to_storage(obj.clone()))
    } else {
        std::borrow::Cow::Borrowed(obj)
    }
}

// -------------------------------------------------------------- validation

/// Upstream's `legacyValidateEvent` on a core-form event: old-style events
/// (no `eventTime`) must agree with their involved object's namespace;
/// new-style ones need the reporting fields. `controller_field` names the
/// reporting controller as the request's version calls it.
fn legacy_validate(ev: &Value, controller_field: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    let ns = crate::meta::namespace(ev);
    let involved_ns = s(&ev["involvedObject"], "namespace");
    let mismatch = || {
        Cause::invalid(
            "involvedObject.namespace",
            q(involved_ns),
            "does not match event.namespace",
        )
    };
    if !has(ev, "eventTime") {
        if involved_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                out.push(mismatch());
            }
        } else if involved_ns != ns {
            out.push(mismatch());
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            out.push(mismatch());
        }
        let rc = s(ev, "reportingComponent");
        if rc.is_empty() {
            out.push(Cause::required(controller_field));
        }
        out.extend(invalid_all(
            controller_field,
            rc,
            if rc.is_empty() {
                Vec::new()
            } else {
                is_qualified_name(rc)
            },
        ));
        for (f, max) in [("reportingInstance", 128), ("action", 128), ("reason", 128)] {
            let v = s(ev, f);
            if v.is_empty() {
                out.push(Cause::required(f));
            }
            if v.len() > max {
                out.push(Cause::invalid(
                    f,
                    q(""),
                    format!("can have at most {max} characters"),
                ));
            }
        }
        if s(ev, "message").len() > 1024 {
            out.push(Cause::invalid(
                "message",
                q(""),
                "can have at most 1024 characters",
            ));
        }
    }
    if !ns.is_empty() {
        out.extend(invalid_all("namespace", ns, is_dns1123_subdomain(ns)));
    }
    out
}

/// Core `v1` Event validation (upstream applies only the legacy rules).
pub fn validate(ev: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(ev, old, NameRule::Any);
    out.extend(legacy_validate(ev, "reportingComponent"));
    out
}

fn validate_series(ev: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    if let Some(series) = ev.get("series").filter(|v| !v.is_null()) {
        if int(series, "count").unwrap_or(0) < 2 {
            out.push(Cause::invalid(
                "series.count",
                q(""),
                "should be at least 2",
            ));
        }
        if series["lastObservedTime"].is_null() {
            out.push(Cause::required("series.lastObservedTime"));
        }
    }
    out
}

/// `events.k8s.io/v1` validation (on the v1 form): the legacy rules plus the
/// strict ones; on update, only the series may change.
pub fn validate_v1(ev: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(ev, old, NameRule::Subdomain);
    out.extend(legacy_validate(
        &to_storage(ev.clone()),
        "reportingController",
    ));
    match old {
        None => {
            out.extend(validate_series(ev));
            if !has(ev, "eventTime") {
                out.push(Cause::required("eventTime"));
            }
            let ty = s(ev, "type");
            if ty != "Normal" && ty != "Warning" {
                out.push(Cause::invalid(
                    "type",
                    q(""),
                    format!("has invalid value: {ty}"),
                ));
            }
            let unset = [
                ("deprecatedFirstTimestamp", "firstTimestamp"),
                ("deprecatedLastTimestamp", "lastTimestamp"),
            ];
            for (f, path) in unset {
                if has(ev, f) {
                    out.push(Cause::invalid(path, q(""), "needs to be unset"));
                }
            }
            if int(ev, "deprecatedCount").is_some_and(|n| n != 0) {
                out.push(Cause::invalid("count", q(""), "needs to be unset"));
            }
            let src = &ev["deprecatedSource"];
            if !s(src, "component").is_empty() || !s(src, "host").is_empty() {
                out.push(Cause::invalid("source", q(""), "needs to be unset"));
            }
        }
        Some(old) => {
            if ev["series"] != old["series"] {
                out.extend(validate_series(ev));
            }
            let fields = [
                ("regarding", "involvedObject"),
                ("reason", "reason"),
                ("note", "note"),
                ("deprecatedSource", "source"),
                ("deprecatedFirstTimestamp", "firstTimestamp"),
                ("deprecatedLastTimestamp", "lastTimestamp"),
                ("deprecatedCount", "count"),
                ("type", "type"),
                ("eventTime", "eventTime"),
                ("action", "action"),
                ("related", "related"),
                ("reportingController", "reportingController"),
                ("reportingInstance", "reportingInstance"),
            ];
            for (f, path) in fields {
                out.extend(immutable(&ev[f], &old[f], path));
            }
        }
    }
    out
}

// ------------------------------------------------------------------- table

pub const COLUMNS: &[Column] = &[
    Column { name: "Last Seen", kind: "string", format: "", description: "The time at which the most recent occurrence of this event was recorded.", priority: 0 },
    Column { name: "Type", kind: "string", format: "", description: "Type of this event (Normal, Warning), new types could be added in the future", priority: 0 },
    Column { name: "Reason", kind: "string", format: "", description: "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.", priority: 0 },
    Column { name: "Object", kind: "string", format: "", description: "The object that this event is about.", priority: 0 },
    Column { name: "Subobject", kind: "string", format: "", description: "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.", priority: 1 },
    Column { name: "Source", kind: "string", format: "", description: "The component reporting this event. Should be a short machine understandable string.", priority: 1 },
    Column { name: "Message", kind: "string", format: "", description: "A human-readable description of the status of this operation.", priority: 0 },
    Column { name: "First Seen", kind: "string", format: "", description: "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)", priority: 1 },
    Column { name: "Count", kind: "string", format: "", description: "The number of times this event has occurred.", priority: 1 },
    Column { name: "Name", kind: "string", format: "name", description: NAME_COLUMN.description, priority: 1 },
];

fn is_set(v: &Value) -> bool {
    v.as_str().is_some_and(|t| !t.is_empty())
}

/// The event row (kubectl's wide form), from a core-form event.
pub fn row(obj: &Value, now: Timestamp) -> Vec<Value> {
    let ev = core_form(obj);
    let since = |v: &Value| crate::meta::since(v, now);
    let first = if is_set(&ev["firstTimestamp"]) {
        since(&ev["firstTimestamp"])
    } else {
        since(&ev["eventTime"])
    };
    let mut last = if is_set(&ev["lastTimestamp"]) {
        since(&ev["lastTimestamp"])
    } else {
        first.clone()
    };
    let mut count = int(&ev, "count").unwrap_or(0);
    if ev["series"].is_object() {
        last = since(&ev["series"]["lastObservedTime"]);
        count = int(&ev["series"], "count").unwrap_or(0);
    } else if count == 0 {
        count = 1;
    }
    let involved = &ev["involvedObject"];
    let kind = s(involved, "kind").to_lowercase();
    let target = if s(involved, "name").is_empty() {
        kind
    } else {
        format!("{kind}/{}", s(involved, "name"))
    };
    let component = if !s(&ev["source"], "component").is_empty() {
        s(&ev["source"], "component")
    } else {
        s(&ev, "reportingComponent")
    };
    let instance = if !s(&ev["source"], "host").is_empty() {
        s(&ev["source"], "host")
    } else {
        s(&ev, "reportingInstance")
    };
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(s(&ev, "type")),
        json!(s(&ev, "reason")),
        json!(target),
        json!(s(involved, "fieldPath")),
        json!(source),
        json!(s(&ev, "message").trim()),
        json!(first),
        json!(count),
        json!(crate::meta::name(&ev)),
    ]
}

// ------------------------------------------------------------------ fields

const CORE_FIELDS: [&str; 11] = [
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// Labels of core Events, followed by the events.k8s.io labels: both views
/// share one watch cache that computes field values with the core kind's
/// hooks, so the core kind must also know the events.k8s.io labels.
pub const FIELDS: &[&str] = &[
    CORE_FIELDS[0],
    CORE_FIELDS[1],
    CORE_FIELDS[2],
    CORE_FIELDS[3],
    CORE_FIELDS[4],
    CORE_FIELDS[5],
    CORE_FIELDS[6],
    CORE_FIELDS[7],
    CORE_FIELDS[8],
    CORE_FIELDS[9],
    CORE_FIELDS[10],
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reportingController",
];

/// Labels of events.k8s.io/v1 Events (upstream's field label conversion).
pub const V1_FIELDS: &[&str] = &[
    "reason",
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reportingController",
    "source",
    "type",
];

/// The core label an events.k8s.io/v1 label maps to (upstream's
/// `AddFieldLabelConversionsForEvent`).
pub fn v1_field_to_core(label: &str) -> Option<&'static str> {
    Some(match label {
        "reason" => "reason",
        "regarding.kind" => "involvedObject.kind",
        "regarding.namespace" => "involvedObject.namespace",
        "regarding.name" => "involvedObject.name",
        "regarding.uid" => "involvedObject.uid",
        "regarding.apiVersion" => "involvedObject.apiVersion",
        "regarding.resourceVersion" => "involvedObject.resourceVersion",
        "regarding.fieldPath" => "involvedObject.fieldPath",
        "reportingController" => "reportingComponent",
        "source" => "source",
        "type" => "type",
        "metadata.name" => "metadata.name",
        "metadata.namespace" => "metadata.namespace",
        _ => return None,
    })
}

/// Field values of a core-form event (events.k8s.io labels accepted too).
pub fn field(obj: &Value, label: &str) -> Option<String> {
    let ev = core_form(obj);
    let label = if CORE_FIELDS.contains(&label) {
        label
    } else {
        v1_field_to_core(label)?
    };
    let involved = &ev["involvedObject"];
    Some(match label {
        l if l.starts_with("involvedObject.") => {
            s(involved, &l["involvedObject.".len()..]).to_string()
        }
        "reason" => s(&ev, "reason").to_string(),
        "reportingComponent" => s(&ev, "reportingComponent").to_string(),
        "source" => {
            let c = s(&ev["source"], "component");
            if c.is_empty() {
                s(&ev, "reportingComponent").to_string()
            } else {
                c.to_string()
            }
        }
        "type" => s(&ev, "type").to_string(),
        "metadata.name" => crate::meta::name(&ev).to_string(),
        "metadata.namespace" => crate::meta::namespace(&ev).to_string(),
        _ => return None,
    })
}

/// Field values of an events.k8s.io event (either form).
pub fn field_v1(obj: &Value, label: &str) -> Option<String> {
    field(obj, v1_field_to_core(label)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_event() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web.17a", "namespace": "default"},
            "eventTime": "2024-01-01T00:00:00.000000Z",
            "series": {"count": 2, "lastObservedTime": "2024-01-01T00:05:00.000000Z"},
            "reportingController": "example.com/ctl", "reportingInstance": "ctl-1",
            "action": "Scale", "reason": "Scaled", "type": "Normal", "note": "scaled up",
            "regarding": {"kind": "Deployment", "namespace": "default", "name": "web", "apiVersion": "apps/v1", "uid": "u"},
            "related": {"kind": "ReplicaSet", "name": "web-1"},
            "deprecatedSource": {"component": "ctl"}, "deprecatedCount": 2,
            "deprecatedFirstTimestamp": "2024-01-01T00:00:00Z", "deprecatedLastTimestamp": "2024-01-01T00:05:00Z",
        })
    }

    #[test]
    fn conversion_round_trips() {
        let v1 = v1_event();
        let core = to_storage(v1.clone());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "web");
        assert_eq!(core["message"], "scaled up");
        assert_eq!(core["reportingComponent"], "example.com/ctl");
        assert_eq!(core["count"], 2);
        assert_eq!(core["source"], json!({"component": "ctl"}));
        assert_eq!(core["firstTimestamp"], "2024-01-01T00:00:00Z");
        assert!(core.get("note").is_none() && core.get("regarding").is_none());
        assert_eq!(from_storage(core), v1);

        let legacy = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "ns"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "ns"}, "reason": "Started", "message": "hi",
            "source": {"component": "kubelet", "host": "n1"}, "count": 3, "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:01:00Z", "type": "Normal"});
        let view = from_storage(legacy.clone());
        assert_eq!(view["eventTime"], Value::Null);
        assert_eq!(view["regarding"]["name"], "p");
        let mut back = to_storage(view);
        back.as_object_mut().unwrap().remove("eventTime");
        assert_eq!(back, legacy);
    }

    fn new_v1_event() -> Value {
        let mut e = v1_event();
        for f in [
            "deprecatedSource",
            "deprecatedCount",
            "deprecatedFirstTimestamp",
            "deprecatedLastTimestamp",
        ] {
            e.as_object_mut().unwrap().remove(f);
        }
        e
    }

    #[test]
    fn validation() {
        assert!(
            validate_v1(&new_v1_event(), None).is_empty(),
            "{:?}",
            validate_v1(&new_v1_event(), None)
        );
        let deprecated: Vec<String> = validate_v1(&v1_event(), None)
            .into_iter()
            .map(|c| c.render())
            .collect();
        assert_eq!(
            deprecated,
            vec![
                "firstTimestamp: Invalid value: \"\": needs to be unset",
                "lastTimestamp: Invalid value: \"\": needs to be unset",
                "count: Invalid value: \"\": needs to be unset",
                "source: Invalid value: \"\": needs to be unset"
            ]
        );
        let mut missing = new_v1_event();
        for f in ["reportingController", "action"] {
            missing.as_object_mut().unwrap().remove(f);
        }
        let fields: Vec<String> = validate_v1(&missing, None)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(fields, vec!["reportingController", "action"]);
        let mut changed = v1_event();
        changed["note"] = json!("other");
        assert_eq!(validate_v1(&changed, Some(&v1_event()))[0].field, "note");
        let mut bad_type = new_v1_event();
        bad_type["type"] = json!("Odd");
        assert_eq!(
            validate_v1(&bad_type, None)[0].render(),
            "type: Invalid value: \"\": has invalid value: Odd"
        );
        let mut series = v1_event();
        series["series"]["count"] = json!(3);
        assert!(validate_v1(&series, Some(&v1_event())).is_empty());
        let legacy = json!({"metadata": {"name": "e", "namespace": "a"}, "involvedObject": {"namespace": "b"}});
        assert_eq!(
            validate(&legacy, None)[0].render(),
            "involvedObject.namespace: Invalid value: \"b\": does not match event.namespace"
        );
        assert!(validate(&json!({"metadata": {"name": "e", "namespace": "default"}, "involvedObject": {"kind": "Node", "name": "n"}}), None).is_empty());
    }

    #[test]
    fn rows_and_fields() {
        let now: Timestamp = "2024-01-01T00:10:00Z".parse().unwrap();
        let core = json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{c}"}, "reason": "Pulled",
            "message": " done \n", "source": {"component": "kubelet", "host": "n1"}, "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:08:00Z", "type": "Normal", "count": 4});
        assert_eq!(
            row(&core, now),
            vec![
                json!("2m"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/p"),
                json!("spec.containers{c}"),
                json!("kubelet, n1"),
                json!("done"),
                json!("10m"),
                json!(4),
                json!("e")
            ]
        );
        let v1row = row(&v1_event(), now);
        assert_eq!(
            (
                v1row[0].clone(),
                v1row[3].clone(),
                v1row[5].clone(),
                v1row[8].clone()
            ),
            (
                json!("5m"),
                json!("deployment/web"),
                json!("ctl, ctl-1"),
                json!(2)
            )
        );
        let singleton = json!({"metadata": {"name": "s"}, "eventTime": "2024-01-01T00:09:00.000000Z", "reportingComponent": "ctl"});
        let r = row(&singleton, now);
        assert_eq!(
            (r[0].clone(), r[5].clone(), r[8].clone()),
            (json!("60s"), json!("ctl"), json!(1))
        );

        assert_eq!(field(&core, "involvedObject.kind").as_deref(), Some("Pod"));
        assert_eq!(field(&core, "source").as_deref(), Some("kubelet"));
        assert_eq!(field(&core, "regarding.name").as_deref(), Some("p"));
        assert_eq!(
            field_v1(&v1_event(), "regarding.kind").as_deref(),
            Some("Deployment")
        );
        assert_eq!(
            field_v1(&v1_event(), "reportingController").as_deref(),
            Some("example.com/ctl")
        );
        assert_eq!(field_v1(&core, "reportingController").as_deref(), Some(""));
        assert_eq!(field_v1(&core, "involvedObject.kind"), None);
        for f in V1_FIELDS {
            assert!(FIELDS.contains(f), "{f}");
        }
    }
}
