//! Field paths and field sets, and their `FieldsV1` encoding (the trie of
//! `f:`/`k:`/`v:`/`i:` keys stored in `metadata.managedFields[].fieldsV1`).

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// One step of a field path.
///
/// The derived order (fields, then keys, then values, then indexes) is the
/// order in which `FieldsV1` lists its keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// `f:<name>`: a struct field or a map key.
    Field(String),
    /// `k:<json>`: an item of an associative list, named by its key fields
    /// (a compact JSON object with the keys in name order).
    Key(String),
    /// `v:<json>`: an item of a set, named by its compact JSON value.
    Value(String),
    /// `i:<n>`: an item by position. Only ever decoded, never produced.
    Index(usize),
}

impl PathElement {
    /// The `FieldsV1` key: `f:name`, `k:{"name":"x"}`, `v:"a"`, `i:0`.
    pub fn encode(&self) -> String {
        match self {
            PathElement::Field(n) => format!("f:{n}"),
            PathElement::Key(k) => format!("k:{k}"),
            PathElement::Value(v) => format!("v:{v}"),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a `FieldsV1` key; JSON parts are re-serialised canonically.
    pub fn decode(s: &str) -> Result<PathElement, String> {
        let (prefix, rest) = s.split_at(s.len().min(2));
        match prefix {
            "f:" => Ok(PathElement::Field(rest.to_string())),
            "k:" => {
                let v: Value =
                    serde_json::from_str(rest).map_err(|e| format!("invalid key {rest:?}: {e}"))?;
                match v {
                    Value::Object(m) => Ok(PathElement::Key(canonical_key(m.iter()))),
                    _ => Err(format!("invalid key {rest:?}: not an object")),
                }
            }
            "v:" => {
                let v: Value = serde_json::from_str(rest)
                    .map_err(|e| format!("invalid value {rest:?}: {e}"))?;
                Ok(PathElement::Value(v.to_string()))
            }
            "i:" => rest
                .parse()
                .map(PathElement::Index)
                .map_err(|e| format!("invalid index {rest:?}: {e}")),
            _ => Err(format!("unknown path element {s:?}")),
        }
    }
}

/// The compact JSON object of key fields, in name order.
pub fn canonical_key<'a>(fields: impl Iterator<Item = (&'a String, &'a Value)>) -> String {
    let mut sorted: Vec<(&String, &Value)> = fields.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut m = Map::new();
    for (k, v) in sorted {
        m.insert(k.clone(), v.clone());
    }
    Value::Object(m).to_string()
}

impl fmt::Display for PathElement {
    /// Upstream's path syntax: `.name`, `[name="nginx"]`, `[=value]`, `[0]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(n) => write!(f, ".{n}"),
            PathElement::Key(k) => {
                let parts: Vec<String> = match serde_json::from_str::<Value>(k) {
                    Ok(Value::Object(m)) => m.iter().map(|(k, v)| format!("{k}={v}")).collect(),
                    _ => vec![k.clone()],
                };
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(v) => write!(f, "[={v}]"),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// Renders a path the way upstream conflict messages do: `.spec.replicas`.
pub fn path_string(path: &[PathElement]) -> String {
    path.iter().map(|pe| pe.to_string()).collect()
}

/// A set of field paths, stored as a trie. A node is a *member* when its own
/// path is in the set; nodes without members below them are never kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// Adds a path (the empty path is the root and is never a member).
    pub fn insert(&mut self, path: &[PathElement]) {
        let mut node = self;
        for pe in path {
            node = node.children.entry(pe.clone()).or_default();
        }
        if !path.is_empty() {
            node.member = true;
        }
    }

    pub fn contains(&self, path: &[PathElement]) -> bool {
        let mut node = self;
        for pe in path {
            match node.children.get(pe) {
                Some(c) => node = c,
                None => return false,
            }
        }
        !path.is_empty() && node.member
    }

    pub(crate) fn is_member(&self) -> bool {
        self.member
    }

    pub(crate) fn children(&self) -> &BTreeMap<PathElement, FieldSet> {
        &self.children
    }

    pub(crate) fn child(&self, pe: &PathElement) -> Option<&FieldSet> {
        self.children.get(pe)
    }

    /// Removes a child and everything below it.
    pub(crate) fn remove_child(&mut self, pe: &PathElement) {
        self.children.remove(pe);
    }

    /// Keeps only the child `pe` (and what is below it).
    pub(crate) fn retain_child(&mut self, pe: &PathElement) {
        self.children.retain(|k, _| k == pe);
        self.member = false;
    }

    pub(crate) fn child_mut(&mut self, pe: &PathElement) -> Option<&mut FieldSet> {
        self.children.get_mut(pe)
    }

    /// Drops the member flag of a child, keeping what is below it.
    pub(crate) fn unmark_child(&mut self, pe: &PathElement) {
        if let Some(c) = self.children.get_mut(pe) {
            c.member = false;
            if c.is_empty() {
                self.children.remove(pe);
            }
        }
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.union_with(other);
        out
    }

    pub fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (pe, oc) in &other.children {
            self.children.entry(pe.clone()).or_default().union_with(oc);
        }
    }

    /// Paths in `self` and not in `other` (path by path: a member of `other`
    /// does not take away what is below it).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            let d = match other.children.get(pe) {
                Some(oc) => c.difference(oc),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(pe.clone(), d);
            }
        }
        out
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            if let Some(oc) = other.children.get(pe) {
                let i = c.intersection(oc);
                if !i.is_empty() {
                    out.children.insert(pe.clone(), i);
                }
            }
        }
        out
    }

    /// Every member path, in `FieldsV1` order.
    pub fn paths(&self) -> Vec<Vec<PathElement>> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect(&mut prefix, &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Vec<PathElement>>) {
        if self.member && !prefix.is_empty() {
            out.push(prefix.clone());
        }
        for (pe, c) in &self.children {
            prefix.push(pe.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    /// Makes every field that has members below it a member itself (upstream's
    /// `EnsureNamedFieldsAreMembers`, applied to map keys as well).
    pub(crate) fn with_named_fields(&self) -> FieldSet {
        let mut out = FieldSet {
            member: self.member,
            children: BTreeMap::new(),
        };
        for (pe, c) in &self.children {
            let mut nc = c.with_named_fields();
            if matches!(pe, PathElement::Field(_)) && !nc.children.is_empty() {
                nc.member = true;
            }
            out.children.insert(pe.clone(), nc);
        }
        out
    }

    /// The `FieldsV1` JSON: `{"f:spec":{"f:replicas":{}}}`, with `".":{}`
    /// marking a member that also has children.
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (pe, c) in &self.children {
            m.insert(pe.encode(), c.to_fields_v1());
        }
        Value::Object(m)
    }

    /// Parses `FieldsV1` JSON.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let m = v
            .as_object()
            .ok_or_else(|| "fieldsV1 must be an object".to_string())?;
        let mut out = FieldSet::new();
        for (k, cv) in m {
            if k == "." {
                out.member = true;
                continue;
            }
            let pe = PathElement::decode(k)?;
            let mut c = FieldSet::from_fields_v1(cv)?;
            if cv.as_object().is_some_and(|o| o.is_empty()) {
                c.member = true;
            }
            if !c.is_empty() {
                out.children.entry(pe).or_default().union_with(&c);
            }
        }
        Ok(out)
    }
}
