//! `metadata.managedFields` entries: decoding, identity, ordering, encoding.

use super::fieldset::FieldSet;
use serde_json::{json, Map, Value};

/// `operation` of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One manager's ownership, as one `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: Option<String>,
    /// "" for the main resource.
    pub subresource: String,
    pub set: FieldSet,
}

impl Entry {
    /// Upstream's manager identity: name, operation and subresource, plus the
    /// API version for updates (applies at any version are one manager).
    pub fn same_manager(&self, other: &Entry) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == Operation::Apply || self.api_version == other.api_version)
    }

    /// How conflict messages name the manager: `"kubectl"`,
    /// `"kube-controller-manager" with subresource "status" using apps/v1`.
    pub fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s = format!("{s} with subresource {:?}", self.subresource);
        }
        if self.operation == Operation::Update {
            s = format!("{s} using {}", self.api_version);
        }
        s
    }

    fn decode(v: &Value) -> Option<Entry> {
        let m = v.as_object()?;
        let operation = match m.get("operation").and_then(Value::as_str)? {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return None,
        };
        if m.get("fieldsType")
            .and_then(Value::as_str)
            .is_some_and(|t| t != "FieldsV1")
        {
            return None;
        }
        let set = match m.get("fieldsV1") {
            Some(f) => FieldSet::from_fields_v1(f).ok()?,
            None => FieldSet::new(),
        };
        let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        Some(Entry {
            manager: s("manager"),
            operation,
            api_version: s("apiVersion"),
            time: m.get("time").and_then(Value::as_str).map(str::to_string),
            subresource: s("subresource"),
            set,
        })
    }

    fn encode(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation.as_str()));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(m)
    }
}

/// Decodes `metadata.managedFields`; entries that cannot be read are
/// skipped, and entries of one manager are merged.
pub fn decode(v: Option<&Value>) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for e in v
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Entry::decode)
    {
        match out.iter_mut().find(|o| o.same_manager(&e)) {
            Some(o) => {
                o.set.union_with(&e.set);
                if e.time > o.time {
                    o.time = e.time;
                }
            }
            None => out.push(e),
        }
    }
    out
}

/// Most update entries kept; older ones are merged into `ancient-changes`.
const MAX_UPDATE_MANAGERS: usize = 10;

/// Drops empty entries, merges the oldest updates past the cap, sorts like
/// upstream (operation, time, manager, apiVersion, subresource) and encodes.
pub fn encode(mut entries: Vec<Entry>) -> Vec<Value> {
    entries.retain(|e| !e.set.is_empty());
    let updates = entries
        .iter()
        .filter(|e| e.operation == Operation::Update)
        .count();
    if updates > MAX_UPDATE_MANAGERS {
        let (mut old, mut keep): (Vec<Entry>, Vec<Entry>) = entries
            .into_iter()
            .partition(|e| e.operation == Operation::Update);
        old.sort_by(|a, b| (&a.time, &a.manager).cmp(&(&b.time, &b.manager)));
        let newest = old.split_off(updates - MAX_UPDATE_MANAGERS + 1);
        let mut bucket = Entry {
            manager: "ancient-changes".into(),
            operation: Operation::Update,
            api_version: String::new(),
            time: None,
            subresource: String::new(),
            set: FieldSet::new(),
        };
        for e in old {
            bucket.set.union_with(&e.set);
            bucket.api_version = e.api_version;
            bucket.time = e.time;
        }
        keep.extend(newest);
        keep.push(bucket);
        entries = keep;
    }
    entries.sort_by(|a, b| {
        (
            a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    entries.iter().map(Entry::encode).collect()
}
