//! Schema-aware operations on JSON objects, as structured-merge-diff does
//! them: merge, compare, field sets and item removal.
//!
//! The schema is the OpenAPI v3 one (`crate::openapi::schemas`): objects with
//! `properties` are structs (fields owned one by one), objects with
//! `additionalProperties` are maps (keys owned one by one), either may be
//! `x-kubernetes-map-type: atomic` (owned whole). Arrays follow
//! `x-kubernetes-list-type` (`map` merged by `x-kubernetes-list-map-keys`,
//! `set` merged by value, `atomic` replaced whole), falling back to the patch
//! strategy (`merge` with a merge key is a map list) and then to atomic.
//! Parts the schema does not describe are "deduced": objects are granular,
//! arrays atomic.

use super::fieldset::{canonical_key, FieldSet, PathElement};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

const REF_PREFIX: &str = "#/components/schemas/";

/// The schemas one operation works against.
#[derive(Clone, Copy)]
pub struct Schemas<'a> {
    pub defs: &'a Map<String, Value>,
}

/// The key fields of an associative list.
#[derive(Clone, Copy, Debug)]
pub enum Keys<'a> {
    /// `x-kubernetes-list-map-keys`.
    Many(&'a [Value]),
    /// `x-kubernetes-patch-merge-key`.
    One(&'a str),
}

impl<'a> Keys<'a> {
    fn names(&self) -> Vec<&'a str> {
        match self {
            Keys::Many(v) => v.iter().filter_map(Value::as_str).collect(),
            Keys::One(k) => vec![k],
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum ListKind<'a> {
    Atomic,
    Set,
    Map(Keys<'a>),
}

/// The shape of one node.
#[derive(Clone, Copy, Debug)]
pub enum Ty<'a> {
    /// An object with declared fields; `true` when atomic.
    Struct(&'a Map<String, Value>, bool),
    /// An object with arbitrary keys; element schema, atomic.
    Map(Option<&'a Value>, bool),
    /// An array: item schema and list kind.
    List(Option<&'a Value>, ListKind<'a>),
    Scalar,
    Deduced,
}

impl<'a> Schemas<'a> {
    fn ref_target(&self, node: &'a Value) -> Option<&'a Value> {
        let r = node.get("$ref").and_then(Value::as_str).or_else(|| {
            let all = node.get("allOf")?.as_array()?;
            if all.len() == 1 {
                all[0].get("$ref")?.as_str()
            } else {
                None
            }
        })?;
        self.defs.get(r.strip_prefix(REF_PREFIX).unwrap_or(r))
    }

    /// The type of a named schema (`io.k8s.api.core.v1.Pod`).
    pub fn named(&self, name: &str) -> Ty<'a> {
        match self.defs.get(name) {
            Some(s) => self.resolve(s),
            None => Ty::Deduced,
        }
    }

    /// The type a schema node describes, following `$ref`s.
    pub fn resolve(&self, node: &'a Value) -> Ty<'a> {
        let mut n = node;
        let mut atomic_map = is_atomic_map(n);
        for _ in 0..16 {
            if n.get("type").and_then(Value::as_str) == Some("array") {
                return Ty::List(n.get("items"), list_kind(n));
            }
            match self.ref_target(n) {
                Some(t) => {
                    n = t;
                    atomic_map |= is_atomic_map(n);
                }
                None => break,
            }
        }
        if let Some(p) = n.get("properties").and_then(Value::as_object) {
            return Ty::Struct(p, atomic_map);
        }
        match n.get("additionalProperties") {
            Some(ap @ Value::Object(_)) => return Ty::Map(Some(ap), atomic_map),
            Some(Value::Bool(true)) => return Ty::Map(None, atomic_map),
            _ => {}
        }
        match n.get("type").and_then(Value::as_str) {
            Some("object") => Ty::Deduced,
            Some("string" | "integer" | "number" | "boolean") => Ty::Scalar,
            _ if n.get("oneOf").is_some() || n.get("anyOf").is_some() => Ty::Scalar,
            _ => Ty::Deduced,
        }
    }

    /// The type of field `k` of an object of type `ty`.
    pub fn field(&self, ty: Ty<'a>, k: &str) -> Ty<'a> {
        match ty {
            Ty::Struct(p, _) => p.get(k).map(|s| self.resolve(s)).unwrap_or(Ty::Deduced),
            Ty::Map(Some(e), _) => self.resolve(e),
            _ => Ty::Deduced,
        }
    }

    /// The type of the items of a list of type `ty`.
    pub fn item(&self, ty: Ty<'a>) -> Ty<'a> {
        match ty {
            Ty::List(Some(i), _) => self.resolve(i),
            _ => Ty::Deduced,
        }
    }

    /// The default of key field `k` of list items of type `item`, if declared.
    fn key_default(&self, item: Ty<'a>, k: &str) -> Option<&'a Value> {
        match item {
            Ty::Struct(p, _) => p.get(k)?.get("default"),
            _ => None,
        }
    }

    /// The path element naming `item` in a list of kind `kind`.
    pub fn item_pe(
        &self,
        item: &Value,
        kind: ListKind<'a>,
        item_ty: Ty<'a>,
    ) -> Result<PathElement, String> {
        match kind {
            ListKind::Set => Ok(PathElement::Value(item.to_string())),
            ListKind::Map(keys) => {
                let obj = item.as_object().ok_or_else(|| {
                    "associative list with keys has an element that is not a map".to_string()
                })?;
                let mut fields: Vec<(String, Value)> = Vec::new();
                for k in keys.names() {
                    let v = match obj.get(k) {
                        Some(v) if !v.is_null() => v.clone(),
                        _ => match self.key_default(item_ty, k) {
                            Some(d) => d.clone(),
                            None => {
                                return Err(format!(
                                    "associative list with keys has an element that omits key field {k:?} (and doesn't have default value)"
                                ))
                            }
                        },
                    };
                    if v.is_object() || v.is_array() {
                        return Err(format!("associative list with keys has an element with a non-scalar key field {k:?}"));
                    }
                    fields.push((k.to_string(), v));
                }
                Ok(PathElement::Key(canonical_key(
                    fields.iter().map(|(k, v)| (k, v)),
                )))
            }
            ListKind::Atomic => Err("atomic lists have no item paths".into()),
        }
    }

    /// Path elements of every item, or an error for a missing key or a duplicate.
    pub fn item_pes(
        &self,
        items: &[Value],
        kind: ListKind<'a>,
        item_ty: Ty<'a>,
    ) -> Result<Vec<PathElement>, String> {
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let pe = self
                .item_pe(item, kind, item_ty)
                .map_err(|e| format!("element {i}: {e}"))?;
            if !seen.insert(pe.clone()) {
                return Err(format!("duplicate entries for key {pe}"));
            }
            out.push(pe);
        }
        Ok(out)
    }
}

fn is_atomic_map(n: &Value) -> bool {
    n.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
}

fn list_kind(n: &Value) -> ListKind<'_> {
    match n.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => ListKind::Set,
        Some("map") => match n
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
        {
            Some(keys) if !keys.is_empty() => ListKind::Map(Keys::Many(keys)),
            _ => ListKind::Atomic,
        },
        Some(_) => ListKind::Atomic,
        None => match n.get("x-kubernetes-patch-strategy").and_then(Value::as_str) {
            Some("merge" | "merge,retainKeys") => match n
                .get("x-kubernetes-patch-merge-key")
                .and_then(Value::as_str)
            {
                Some(k) => ListKind::Map(Keys::One(k)),
                None => ListKind::Set,
            },
            _ => ListKind::Atomic,
        },
    }
}

/// How a value is walked: as a granular object, as an associative list, or whole.
enum Node<'v, 'a> {
    Obj(&'v Map<String, Value>),
    Arr(&'v [Value], ListKind<'a>),
    Leaf,
}

fn node<'v, 'a>(v: &'v Value, ty: Ty<'a>) -> Node<'v, 'a> {
    match (v, ty) {
        (Value::Object(m), Ty::Struct(_, false) | Ty::Map(_, false) | Ty::Deduced) => Node::Obj(m),
        (Value::Array(a), Ty::List(_, k @ (ListKind::Set | ListKind::Map(_)))) => Node::Arr(a, k),
        _ => Node::Leaf,
    }
}

fn is_declared(ty: Ty<'_>, k: &str) -> bool {
    matches!(ty, Ty::Struct(p, _) if p.contains_key(k))
}

impl<'a> Schemas<'a> {
    /// Checks that every associative list has its keys and no duplicates;
    /// the first problem is returned as `.path: element 0: message`.
    pub fn validate(
        &self,
        v: &Value,
        ty: Ty<'a>,
        path: &mut Vec<PathElement>,
    ) -> Result<(), String> {
        match node(v, ty) {
            Node::Obj(m) => {
                for (k, cv) in m {
                    path.push(PathElement::Field(k.clone()));
                    self.validate(cv, self.field(ty, k), path)?;
                    path.pop();
                }
            }
            Node::Arr(items, kind) => {
                let ity = self.item(ty);
                let pes = self
                    .item_pes(items, kind, ity)
                    .map_err(|e| format!("{}: {e}", super::fieldset::path_string(path)))?;
                for (item, pe) in items.iter().zip(pes) {
                    path.push(pe);
                    self.validate(item, ity, path)?;
                    path.pop();
                }
            }
            Node::Leaf => {}
        }
        Ok(())
    }

    /// The fields a configuration sets (upstream's `ToFieldSet`): leaves,
    /// atomic values, list items, map keys, and null or empty struct fields.
    pub fn field_set(
        &self,
        v: &Value,
        ty: Ty<'a>,
        path: &mut Vec<PathElement>,
        out: &mut FieldSet,
    ) {
        match node(v, ty) {
            Node::Obj(m) => {
                for (k, cv) in m {
                    path.push(PathElement::Field(k.clone()));
                    self.field_set(cv, self.field(ty, k), path, out);
                    let empty = cv.is_null() || cv.as_object().is_some_and(|o| o.is_empty());
                    if empty || !is_declared(ty, k) {
                        out.insert(path);
                    }
                    path.pop();
                }
            }
            Node::Arr(items, kind) => {
                let ity = self.item(ty);
                match self.item_pes(items, kind, ity) {
                    Ok(pes) => {
                        for (item, pe) in items.iter().zip(pes) {
                            path.push(pe);
                            self.field_set(item, ity, path, out);
                            out.insert(path);
                            path.pop();
                        }
                    }
                    Err(_) => out.insert(path),
                }
            }
            Node::Leaf => out.insert(path),
        }
    }

    /// Merges `rhs` into `lhs` (upstream's `Merge`): objects by key,
    /// associative lists by item, everything else replaced by `rhs`.
    pub fn merge(&self, lhs: &Value, rhs: &Value, ty: Ty<'a>) -> Value {
        match (node(lhs, ty), node(rhs, ty)) {
            (Node::Obj(l), Node::Obj(r)) => {
                let mut out = l.clone();
                for (k, rv) in r {
                    let merged = match l.get(k) {
                        Some(lv) => self.merge(lv, rv, self.field(ty, k)),
                        None => rv.clone(),
                    };
                    out.insert(k.clone(), merged);
                }
                Value::Object(out)
            }
            (Node::Arr(l, kind), Node::Arr(r, _)) => {
                let ity = self.item(ty);
                match (self.item_pes(l, kind, ity), self.item_pes(r, kind, ity)) {
                    (Ok(lp), Ok(rp)) => Value::Array(self.merge_items(l, &lp, r, &rp, ity)),
                    _ => rhs.clone(),
                }
            }
            _ => rhs.clone(),
        }
    }

    /// Merges list items: the live order is kept, items only in `r` go
    /// before the next shared item they precede in `r`, or at the end.
    fn merge_items(
        &self,
        l: &[Value],
        lp: &[PathElement],
        r: &[Value],
        rp: &[PathElement],
        ity: Ty<'a>,
    ) -> Vec<Value> {
        let rpos: HashMap<&PathElement, usize> =
            rp.iter().enumerate().map(|(i, p)| (p, i)).collect();
        let lset: HashSet<&PathElement> = lp.iter().collect();
        let mut out = Vec::with_capacity(l.len() + r.len());
        let mut done = vec![false; r.len()];
        let mut next = 0;
        for (li, item) in l.iter().enumerate() {
            match rpos.get(&lp[li]) {
                Some(&j) => {
                    while next < j {
                        if !done[next] && !lset.contains(&rp[next]) {
                            out.push(r[next].clone());
                            done[next] = true;
                        }
                        next += 1;
                    }
                    out.push(self.merge(item, &r[j], ity));
                    done[j] = true;
                    next = next.max(j + 1);
                }
                None => out.push(item.clone()),
            }
        }
        for (j, item) in r.iter().enumerate() {
            if !done[j] && !lset.contains(&rp[j]) {
                out.push(item.clone());
            }
        }
        out
    }

    /// Compares two versions of a node (upstream's `Compare`): leaves are
    /// added, modified or removed; granular nodes that appear or disappear are
    /// added or removed themselves too.
    pub fn compare(
        &self,
        l: Option<&Value>,
        r: Option<&Value>,
        ty: Ty<'a>,
        path: &mut Vec<PathElement>,
        c: &mut Comparison,
    ) {
        let ln = l.map(|v| node(v, ty));
        let rn = r.map(|v| node(v, ty));
        let granular = match (&ln, &rn) {
            (None, None) => return,
            (Some(Node::Obj(a)), Some(Node::Obj(b))) => !(a.is_empty() && b.is_empty()),
            (Some(Node::Obj(a)), None) | (None, Some(Node::Obj(a))) => !a.is_empty(),
            (Some(Node::Arr(a, _)), Some(Node::Arr(b, _))) => !(a.is_empty() && b.is_empty()),
            (Some(Node::Arr(a, _)), None) | (None, Some(Node::Arr(a, _))) => !a.is_empty(),
            _ => false,
        };
        let mut walked = false;
        if granular {
            walked = match (&ln, &rn) {
                (Some(Node::Arr(..)) | None, Some(Node::Arr(..)) | None) => {
                    self.compare_items(l, r, ty, path, c)
                }
                _ => {
                    self.compare_fields(l, r, ty, path, c);
                    true
                }
            };
        }
        if path.is_empty() {
            return;
        }
        match (l, r) {
            (None, Some(_)) => c.added.insert(path),
            (Some(_), None) => c.removed.insert(path),
            (Some(a), Some(b)) if !walked && a != b => c.modified.insert(path),
            _ => {}
        }
    }

    fn compare_fields(
        &self,
        l: Option<&Value>,
        r: Option<&Value>,
        ty: Ty<'a>,
        path: &mut Vec<PathElement>,
        c: &mut Comparison,
    ) {
        let empty = Map::new();
        let lm = l.and_then(Value::as_object).unwrap_or(&empty);
        let rm = r.and_then(Value::as_object).unwrap_or(&empty);
        for (k, lv) in lm {
            path.push(PathElement::Field(k.clone()));
            self.compare(Some(lv), rm.get(k), self.field(ty, k), path, c);
            path.pop();
        }
        for (k, rv) in rm {
            if !lm.contains_key(k) {
                path.push(PathElement::Field(k.clone()));
                self.compare(None, Some(rv), self.field(ty, k), path, c);
                path.pop();
            }
        }
    }

    /// Compares associative lists item by item; `false` (compare whole) when
    /// an item has no usable key.
    fn compare_items(
        &self,
        l: Option<&Value>,
        r: Option<&Value>,
        ty: Ty<'a>,
        path: &mut Vec<PathElement>,
        c: &mut Comparison,
    ) -> bool {
        let Ty::List(_, kind) = ty else { return false };
        let ity = self.item(ty);
        let la: &[Value] = l
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let ra: &[Value] = r
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let (Ok(lp), Ok(rp)) = (self.item_pes(la, kind, ity), self.item_pes(ra, kind, ity)) else {
            return false;
        };
        let rmap: HashMap<&PathElement, &Value> = rp.iter().zip(ra).collect();
        let lset: HashSet<&PathElement> = lp.iter().collect();
        for (pe, lv) in lp.iter().zip(la) {
            path.push(pe.clone());
            self.compare(Some(lv), rmap.get(pe).copied(), ity, path, c);
            path.pop();
        }
        for (pe, rv) in rp.iter().zip(ra) {
            if !lset.contains(pe) {
                path.push(pe.clone());
                self.compare(None, Some(rv), ity, path, c);
                path.pop();
            }
        }
        true
    }

    /// Removes the members of `set` (with everything below them) from `v`.
    pub fn remove_items(&self, v: &mut Value, set: &FieldSet, ty: Ty<'a>) {
        match v {
            Value::Object(m) if matches!(node_kind(ty), Some(true)) => {
                for (pe, child) in set.children() {
                    let PathElement::Field(k) = pe else { continue };
                    if child.is_member() {
                        m.shift_remove(k);
                    } else if let Some(cv) = m.get_mut(k) {
                        self.remove_items(cv, child, self.field(ty, k));
                    }
                }
            }
            Value::Array(items) => {
                let Ty::List(_, kind @ (ListKind::Set | ListKind::Map(_))) = ty else {
                    return;
                };
                let ity = self.item(ty);
                let Ok(pes) = self.item_pes(items, kind, ity) else {
                    return;
                };
                let mut keep = Vec::with_capacity(items.len());
                for (mut item, pe) in std::mem::take(items).into_iter().zip(pes) {
                    match set.child(&pe) {
                        Some(child) if child.is_member() => continue,
                        Some(child) => self.remove_items(&mut item, child, ity),
                        None => {}
                    }
                    keep.push(item);
                }
                *items = keep;
            }
            _ => {}
        }
    }
}

/// `Some(true)` for granular objects.
fn node_kind(ty: Ty<'_>) -> Option<bool> {
    match ty {
        Ty::Struct(_, atomic) | Ty::Map(_, atomic) => Some(!atomic),
        Ty::Deduced => Some(true),
        _ => None,
    }
}

/// What changed between two versions of an object.
#[derive(Debug, Default)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}
