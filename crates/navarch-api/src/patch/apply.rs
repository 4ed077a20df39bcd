//! Server-side apply and `metadata.managedFields` bookkeeping, with
//! structured-merge-diff semantics.
//!
//! Every write records who set which fields:
//! - an apply (`PATCH` with `application/apply-patch+yaml`) goes through
//!   [`server_side_apply`]: the configuration is merged into the live object,
//!   the manager's `Apply` entry becomes exactly the fields it applied, fields
//!   it applied before and no longer does are removed (unless another manager
//!   owns them too), and changing a field another manager owns is a conflict
//!   unless forced;
//! - every other write (create, update, JSON/merge/strategic patch) goes
//!   through [`track_update`] with the final object (after defaulting, as
//!   upstream attributes defaults to the writer): the fields that changed go
//!   to the writer's `Update` entry and are taken from everyone else.
//!
//! Writes to the `status` subresource track only `status`; writes to the
//! main resource of a kind with a status subresource ignore `status`. Type
//! and identity fields (`apiVersion`, `kind`, `metadata.name`, `uid`,
//! `resourceVersion`, …) are never owned.
//!
//! List and map semantics come from the OpenAPI schemas
//! ([`crate::openapi::schemas`]), so they follow the `FIELD_META` table.
//!
//! Not modelled: conversion between versions (entries recorded at another
//! version of the same kind are compared path for path), unions, the
//! `last-applied-configuration` annotation upgrade from client-side apply.

mod fieldset;
mod managers;
mod typed;

#[cfg(test)]
mod tests;

pub use fieldset::{FieldSet, PathElement};

use crate::error::{ApiError, Cause};
use crate::registry::{ResourceType, Subresource};
use managers::{Entry, Operation};
use serde_json::{json, Map, Value};
use typed::{Comparison, Schemas, Ty};

/// Why an apply was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplyError {
    /// Fields owned by other managers would change (409). `message` is
    /// upstream's (`Apply failed with 1 conflict: conflict with "kubectl"
    /// using apps/v1: .spec.replicas`); each cause has reason
    /// `FieldManagerConflict`, the field path and `conflict with <manager>`.
    #[error("{message}")]
    Conflict { message: String, causes: Vec<Cause> },
    /// The configuration cannot be applied (400): not an object, no name,
    /// `managedFields` set, an associative list item without its key, …
    #[error("{0}")]
    Invalid(String),
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> ApiError {
        match e {
            ApplyError::Conflict { message, causes } => {
                let mut err = ApiError::new(409, "Conflict", message);
                err.causes = causes;
                err
            }
            ApplyError::Invalid(m) => ApiError::bad_request(m),
        }
    }
}

/// Server-side apply of `applied` (the request body: apiVersion, kind,
/// metadata.name and the fields the manager cares about) by `manager` onto
/// `live` (`None`: the object does not exist and is created). `now` is the
/// RFC 3339 time recorded on the manager's entry. Returns the new object with
/// its `metadata.managedFields`; defaulting and validation are the caller's.
pub fn server_side_apply(
    live: Option<&Value>,
    applied: &Value,
    rt: &ResourceType,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    server_side_apply_subresource(live, applied, rt, None, manager, force, now)
}

/// [`server_side_apply`] on a subresource (`Some(Subresource::Status)`:
/// only `status` is taken from `applied` and owned).
pub fn server_side_apply_subresource(
    live: Option<&Value>,
    applied: &Value,
    rt: &ResourceType,
    subresource: Option<Subresource>,
    manager: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    let op = Op {
        rt,
        subresource,
        manager,
        now,
    };
    apply_with(
        Schemas {
            defs: crate::openapi::schemas(),
        },
        live,
        applied,
        &op,
        force,
    )
}

/// Records an update by `manager` (create, update, or a non-apply patch):
/// the fields that differ between `old` (`None` on create) and `new` become
/// the manager's (`Update` entry) and are taken from other managers. `new`
/// is the object about to be stored; its `managedFields` are rewritten.
/// Managed fields the client sent in `new` (different from `old`'s) replace
/// the stored ones, as upstream allows (`[{}]` clears them).
pub fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    rt: &ResourceType,
    manager: &str,
    now: &str,
) {
    track_update_subresource(old, new, rt, None, manager, now)
}

/// [`track_update`] for a write through a subresource (`status`, `scale`):
/// the entry carries `subresource`; for `status` only `status` is tracked.
pub fn track_update_subresource(
    old: Option<&Value>,
    new: &mut Value,
    rt: &ResourceType,
    subresource: Option<Subresource>,
    manager: &str,
    now: &str,
) {
    let op = Op {
        rt,
        subresource,
        manager,
        now,
    };
    track_with(
        Schemas {
            defs: crate::openapi::schemas(),
        },
        old,
        new,
        &op,
    )
}

/// Upstream's "ignore managed-fields timestamps" rule: when `new` equals
/// `old` except for the `time` of managed-fields entries, `new` gets `old`'s
/// managed fields back, so a repeated identical apply is a no-op write.
pub fn keep_timestamps_if_unchanged(old: &Value, new: &mut Value) {
    fn split(v: &Value) -> (Value, Option<Vec<String>>) {
        let mut v = v.clone();
        let mf = take_managed_fields(&mut v).and_then(|mf| {
            let mut entries: Vec<String> = mf
                .as_array()?
                .iter()
                .map(|e| {
                    let mut e = e.clone();
                    if let Some(m) = e.as_object_mut() {
                        m.remove("time");
                    }
                    e.to_string()
                })
                .collect();
            entries.sort();
            Some(entries)
        });
        (v, mf)
    }
    let old_mf = old.get("metadata").and_then(|m| m.get("managedFields"));
    let Some(old_mf) = old_mf.cloned() else {
        return;
    };
    let (o, omf) = split(old);
    let (n, nmf) = split(new);
    if o == n && omf == nmf {
        if let Some(md) = new.get_mut("metadata").and_then(Value::as_object_mut) {
            md.insert("managedFields".into(), old_mf);
        }
    }
}

/// The parameters of one tracked operation.
struct Op<'a> {
    rt: &'a ResourceType,
    subresource: Option<Subresource>,
    manager: &'a str,
    now: &'a str,
}

impl Op<'_> {
    fn entry(&self, operation: Operation) -> Entry {
        Entry {
            manager: self.manager.to_string(),
            operation,
            api_version: self.rt.api_version(),
            time: Some(self.now.to_string()),
            subresource: self
                .subresource
                .map(|s| s.name().to_string())
                .unwrap_or_default(),
            set: FieldSet::new(),
        }
    }

    fn status_only(&self) -> bool {
        self.subresource == Some(Subresource::Status)
    }

    /// Whether the main resource ignores `status` (it has a status subresource).
    fn ignores_status(&self) -> bool {
        !self.status_only() && self.rt.has_status && self.rt.has_subresource(Subresource::Status)
    }
}

/// `metadata` fields nobody owns (upstream's strip set).
const STRIPPED_META: &[&str] = &[
    "name",
    "namespace",
    "creationTimestamp",
    "selfLink",
    "uid",
    "clusterName",
    "generation",
    "managedFields",
    "resourceVersion",
];

fn field(name: &str) -> PathElement {
    PathElement::Field(name.to_string())
}

/// Removes what the operation does not track from a field set.
fn filter(set: &mut FieldSet, op: &Op<'_>) {
    if op.status_only() {
        set.retain_child(&field("status"));
        return;
    }
    if op.ignores_status() {
        set.remove_child(&field("status"));
    }
    set.remove_child(&field("apiVersion"));
    set.remove_child(&field("kind"));
    if let Some(md) = set.child_mut(&field("metadata")) {
        for k in STRIPPED_META {
            md.remove_child(&field(k));
        }
    }
    set.unmark_child(&field("metadata"));
}

/// The part of the applied configuration the operation takes.
fn effective_config(applied: &Map<String, Value>, op: &Op<'_>) -> Value {
    let mut out = applied.clone();
    if op.status_only() {
        out.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
        if let Some(Value::Object(md)) = out.get_mut("metadata") {
            md.retain(|k, _| k == "name" || k == "namespace");
        }
    } else if op.ignores_status() {
        out.shift_remove("status");
    }
    Value::Object(out)
}

fn take_managed_fields(obj: &mut Value) -> Option<Value> {
    obj.get_mut("metadata")?
        .as_object_mut()?
        .shift_remove("managedFields")
}

fn set_managed_fields(obj: &mut Value, entries: Vec<Entry>) {
    let encoded = managers::encode(entries);
    let Some(o) = obj.as_object_mut() else { return };
    if encoded.is_empty() {
        if let Some(Value::Object(md)) = o.get_mut("metadata") {
            md.shift_remove("managedFields");
        }
        return;
    }
    let md = o.entry("metadata").or_insert_with(|| json!({}));
    if !md.is_object() {
        *md = json!({});
    }
    if let Some(md) = md.as_object_mut() {
        md.insert("managedFields".into(), Value::Array(encoded));
    }
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, cv| !cv.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Metadata the server sets: taken from the live object, whatever was applied.
const SYSTEM_META: &[&str] = &[
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];
/// Metadata an apply may state (as a precondition) but not clear.
const PRECONDITION_META: &[&str] = &["uid", "resourceVersion"];

fn restore_system_meta(merged: &mut Value, live: Option<&Value>) {
    let Some(md) = merged.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let live_md = live
        .and_then(|l| l.get("metadata"))
        .and_then(Value::as_object);
    for k in SYSTEM_META {
        match live_md.and_then(|l| l.get(*k)) {
            Some(v) => {
                md.insert(k.to_string(), v.clone());
            }
            None => {
                md.shift_remove(*k);
            }
        }
    }
    for k in PRECONDITION_META {
        if md.get(*k).is_none_or(Value::is_null) {
            match live_md.and_then(|l| l.get(*k)) {
                Some(v) => {
                    md.insert(k.to_string(), v.clone());
                }
                None => {
                    md.shift_remove(*k);
                }
            }
        }
    }
}

fn conflict_error(conflicts: Vec<(String, FieldSet)>) -> ApplyError {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (who, set) in &conflicts {
        for p in set.paths() {
            pairs.push((who.clone(), fieldset::path_string(&p)));
        }
    }
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let causes = pairs
        .iter()
        .map(|(who, path)| Cause {
            reason: "FieldManagerConflict",
            field: path.clone(),
            message: format!("conflict with {who}"),
        })
        .collect();
    let message = if pairs.len() == 1 {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            pairs[0].0, pairs[0].1
        )
    } else {
        let mut lines: Vec<String> = Vec::new();
        let mut last: Option<&str> = None;
        for (who, path) in &pairs {
            if last != Some(who.as_str()) {
                lines.push(format!("conflicts with {who}:"));
                last = Some(who);
            }
            lines.push(format!("- {path}"));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            pairs.len(),
            lines.join("\n")
        )
    };
    ApplyError::Conflict { message, causes }
}

fn apply_with(
    s: Schemas<'_>,
    live: Option<&Value>,
    applied: &Value,
    op: &Op<'_>,
    force: bool,
) -> Result<Value, ApplyError> {
    let Some(cfg) = applied.as_object() else {
        return Err(ApplyError::Invalid(
            "the applied configuration must be a JSON object".into(),
        ));
    };
    if applied["metadata"]["name"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        return Err(ApplyError::Invalid(
            "metadata.name: Required value: name is required".into(),
        ));
    }
    match &applied["metadata"]["managedFields"] {
        Value::Null => {}
        Value::Array(a) if a.is_empty() => {}
        _ => {
            return Err(ApplyError::Invalid(
                "metadata.managedFields must be nil".into(),
            ))
        }
    }
    let root: Ty<'_> = s.named(op.rt.schema_name);
    let config_obj = effective_config(cfg, op);
    s.validate(&config_obj, root, &mut Vec::new())
        .map_err(|e| {
            ApplyError::Invalid(format!(
                "failed to create typed patch object ({}, Kind={}): {e}",
                op.rt.api_version(),
                op.rt.kind
            ))
        })?;

    let mut live_obj = live.cloned().unwrap_or_else(|| json!({}));
    let live_mf = take_managed_fields(&mut live_obj);
    let mut entries = managers::decode(live_mf.as_ref());
    if live.is_some() && entries.is_empty() {
        // An object nobody is recorded as managing: everything in it belongs
        // to "before-first-apply", as upstream does on the first apply.
        let mut c = Comparison::default();
        s.compare(
            Some(&json!({})),
            Some(&live_obj),
            root,
            &mut Vec::new(),
            &mut c,
        );
        let mut e = op.entry(Operation::Update);
        e.manager = "before-first-apply".into();
        e.subresource.clear();
        e.set = c.added.union(&c.modified);
        filter(&mut e.set, op);
        entries.push(e);
    }

    let mut merged = s.merge(&live_obj, &config_obj, root);
    let mut config_full = FieldSet::new();
    s.field_set(&config_obj, root, &mut Vec::new(), &mut config_full);
    let mut me = op.entry(Operation::Apply);
    me.set = config_full.clone();
    filter(&mut me.set, op);
    let last = match entries.iter().position(|e| e.same_manager(&me)) {
        Some(i) => entries.remove(i).set,
        None => FieldSet::new(),
    };

    if live.is_some() {
        let mut c = Comparison::default();
        s.compare(
            Some(&live_obj),
            Some(&merged),
            root,
            &mut Vec::new(),
            &mut c,
        );
        let mut changed = c.modified.union(&c.added);
        filter(&mut changed, op);
        let mut removed = c.removed;
        filter(&mut removed, op);
        let conflicts: Vec<(String, FieldSet)> = entries
            .iter()
            .map(|e| (e.describe(), e.set.intersection(&changed)))
            .filter(|(_, x)| !x.is_empty())
            .collect();
        if !force && !conflicts.is_empty() {
            return Err(conflict_error(conflicts));
        }
        for e in &mut entries {
            e.set = e.set.difference(&changed).difference(&removed);
        }
    }

    if !last.is_empty() {
        let mut managed = config_full;
        for e in &entries {
            managed.union_with(&e.set);
        }
        let prune = last
            .with_named_fields()
            .difference(&managed.with_named_fields());
        s.remove_items(&mut merged, &prune, root);
    }

    entries.push(me);
    restore_system_meta(&mut merged, live);
    strip_nulls(&mut merged);
    set_managed_fields(&mut merged, entries);
    Ok(merged)
}

fn track_with(s: Schemas<'_>, old: Option<&Value>, new: &mut Value, op: &Op<'_>) {
    let root = s.named(op.rt.schema_name);
    let mut old_obj = old.cloned().unwrap_or_else(|| json!({}));
    let old_mf = take_managed_fields(&mut old_obj);
    let new_mf = take_managed_fields(new);
    let client_set = op.subresource.is_none()
        && new_mf
            .as_ref()
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        && new_mf != old_mf;
    let mut entries = managers::decode(if client_set {
        new_mf.as_ref()
    } else {
        old_mf.as_ref()
    });

    let mut c = Comparison::default();
    s.compare(Some(&old_obj), Some(new), root, &mut Vec::new(), &mut c);
    let mut changed = c.modified.union(&c.added);
    filter(&mut changed, op);
    let mut removed = c.removed;
    filter(&mut removed, op);

    let mut me = op.entry(Operation::Update);
    let mine = entries.iter().position(|e| e.same_manager(&me));
    for (i, e) in entries.iter_mut().enumerate() {
        e.set = if Some(i) == mine {
            e.set.difference(&removed)
        } else {
            e.set.difference(&changed).difference(&removed)
        };
    }
    if !changed.is_empty() {
        match mine {
            Some(i) => {
                entries[i].set.union_with(&changed);
                entries[i].time = me.time.take();
            }
            None => {
                me.set = changed;
                entries.push(me);
            }
        }
    }
    set_managed_fields(new, entries);
}
