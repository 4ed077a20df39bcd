//! OpenAPI v3 documents, as `GET /openapi/v3` and `GET /openapi/v3/<gv>`
//! serve them: one document per served group-version with its paths and
//! the schemas they reach, and a root listing the documents by hash.
//!
//! Schemas come from `k8s-openapi` (schemars, OpenAPI 3.0 settings), fixed up
//! where kube-openapi expects upstream's forms (`Quantity`, `IntOrString`,
//! `$ref` with siblings) and annotated with the Kubernetes extensions:
//! `x-kubernetes-group-version-kind` on kinds, the patch and list extensions
//! of the `FIELD_META` table on properties, `x-kubernetes-map-type` on atomic
//! structs. Server-side apply reads its list and map semantics from
//! [`schemas`] too.

mod paths;
#[cfg(test)]
mod tests;

use crate::patch::strategic::{FieldMeta, FIELD_META};
use crate::registry::{self, REGISTRY};
use k8s_openapi::api::{autoscaling, core, policy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

/// The Kubernetes version the documents describe (`info.version`).
pub const KUBERNETES_VERSION: &str = "v1.33.0";

const REF_PREFIX: &str = "#/components/schemas/";
const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// Every schema of every served group-version, keyed by name
/// (`io.k8s.api.core.v1.PodSpec`), with the Kubernetes extensions. Built
/// once, on first use.
pub fn schemas() -> &'static Map<String, Value> {
    static SCHEMAS: OnceLock<Map<String, Value>> = OnceLock::new();
    SCHEMAS.get_or_init(|| build_schemas(FIELD_META))
}

/// The root document: `{"paths": {"api/v1": {"serverRelativeURL":
/// "/openapi/v3/api/v1?hash=<HASH>"}, "apis/apps/v1": {…}, …}}`, one entry
/// per served group-version; the hash is that document's content hash.
pub fn root() -> &'static Value {
    static ROOT: OnceLock<Value> = OnceLock::new();
    ROOT.get_or_init(|| {
        let mut paths = Map::new();
        for (path, (_, hash)) in documents() {
            paths.insert(
                path.clone(),
                json!({ "serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}") }),
            );
        }
        json!({ "paths": paths })
    })
}

/// The serialised document of one group-version (`api/v1`,
/// `apis/apps/v1`) and its hash, or `None` when the path is not served.
pub fn document(path: &str) -> Option<&'static (Vec<u8>, String)> {
    documents().get(path.trim_matches('/'))
}

/// The document path of a group-version: `api/v1`, `apis/apps/v1`.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn documents() -> &'static BTreeMap<String, (Vec<u8>, String)> {
    static DOCS: OnceLock<BTreeMap<String, (Vec<u8>, String)>> = OnceLock::new();
    DOCS.get_or_init(|| {
        registry::group_versions()
            .into_iter()
            .map(|(g, v)| {
                let doc = build_document(g, v, schemas());
                let bytes = serde_json::to_vec(&doc).unwrap_or_default();
                let hash = content_hash(&bytes);
                (gv_path(g, v), (bytes, hash))
            })
            .collect()
    })
}

/// FNV-1a, 128 bits, as uppercase hex: stable across runs and builds.
fn content_hash(bytes: &[u8]) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let h = bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u128::from(*b)).wrapping_mul(PRIME));
    format!("{h:032X}")
}

/// One group-version's document: its paths and every schema they reach.
pub(crate) fn build_document(group: &str, version: &str, all: &Map<String, Value>) -> Value {
    let paths = paths::paths(group, version);
    let mut wanted = BTreeSet::new();
    collect_refs(&paths, &mut wanted);
    let mut done = BTreeSet::new();
    let mut components = BTreeMap::new();
    while let Some(name) = wanted.pop_first() {
        if !done.insert(name.clone()) {
            continue;
        }
        if let Some(s) = all.get(&name) {
            collect_refs(s, &mut wanted);
            components.insert(name, s.clone());
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": KUBERNETES_VERSION },
        "paths": paths,
        "components": { "schemas": components },
    })
}

fn collect_refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, cv) in m {
                match (k.as_str(), cv) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix(REF_PREFIX) {
                            out.insert(name.to_string());
                        }
                    }
                    _ => collect_refs(cv, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

/// Structs upstream marks `+structType=atomic` (owned and replaced whole).
const ATOMIC_STRUCTS: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    "io.k8s.api.core.v1.ConfigMapKeySelector",
    "io.k8s.api.core.v1.LocalObjectReference",
    "io.k8s.api.core.v1.NodeSelector",
    "io.k8s.api.core.v1.NodeSelectorTerm",
    "io.k8s.api.core.v1.ObjectFieldSelector",
    "io.k8s.api.core.v1.ObjectReference",
    "io.k8s.api.core.v1.ResourceFieldSelector",
    "io.k8s.api.core.v1.SecretKeySelector",
    "io.k8s.api.core.v1.SecretReference",
    "io.k8s.api.core.v1.TopologySelectorTerm",
    "io.k8s.api.core.v1.TypedLocalObjectReference",
];

/// Declared defaults of list-map key fields (server-side apply fills a
/// missing key from them: a port without `protocol` is `TCP`).
const KEY_DEFAULTS: &[(&str, &str, &str)] = &[
    ("io.k8s.api.core.v1.ContainerPort", "protocol", "TCP"),
    ("io.k8s.api.core.v1.ServicePort", "protocol", "TCP"),
];

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "kind": kind, "version": version })
}

fn add_gvk(defs: &mut Map<String, Value>, name: &str, g: Value) {
    let Some(Value::Object(s)) = defs.get_mut(name) else {
        return;
    };
    let list = s
        .entry("x-kubernetes-group-version-kind")
        .or_insert_with(|| json!([]));
    if let Value::Array(a) = list {
        if !a.contains(&g) {
            a.push(g);
        }
    }
}

/// Builds every schema, with `metas` as the patch/list metadata table.
pub(crate) fn build_schemas(metas: &[FieldMeta]) -> Map<String, Value> {
    let mut g = SchemaGenerator::new(SchemaSettings::openapi3());
    for r in REGISTRY {
        let _ = (r.schema)(&mut g);
    }
    let _ = g.subschema_for::<meta::DeleteOptions>();
    let _ = g.subschema_for::<meta::Status>();
    let _ = g.subschema_for::<meta::WatchEvent<Value>>();
    let _ = g.subschema_for::<meta::APIResourceList>();
    let _ = g.subschema_for::<meta::ListMeta>();
    let _ = g.subschema_for::<meta::Patch>();
    let _ = g.subschema_for::<autoscaling::v1::Scale>();
    let _ = g.subschema_for::<policy::v1::Eviction>();
    let _ = g.subschema_for::<core::v1::Binding>();
    let mut defs: Map<String, Value> = g.take_definitions(true);
    for s in defs.values_mut() {
        fix_schema(s);
    }

    if let Some(Value::Object(q)) = defs.get_mut("io.k8s.apimachinery.pkg.api.resource.Quantity") {
        q.retain(|k, _| k == "description");
        q.insert(
            "oneOf".into(),
            json!([{ "type": "string" }, { "type": "number" }]),
        );
    }
    if let Some(Value::Object(q)) = defs.get_mut("io.k8s.apimachinery.pkg.util.intstr.IntOrString")
    {
        q.retain(|k, _| k == "description");
        q.insert("format".into(), json!("int-or-string"));
        q.insert(
            "oneOf".into(),
            json!([{ "type": "integer" }, { "type": "string" }]),
        );
        q.insert("x-kubernetes-int-or-string".into(), json!(true));
    }
    for name in ATOMIC_STRUCTS {
        if let Some(Value::Object(s)) = defs.get_mut(*name) {
            s.insert("x-kubernetes-map-type".into(), json!("atomic"));
        }
    }
    for (owner, field, default) in KEY_DEFAULTS {
        if let Some(Value::Object(p)) = defs
            .get_mut(*owner)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(*field))
        {
            p.insert("default".into(), json!(default));
        }
    }
    // `metadata` is optional on the wire (k8s-openapi's struct field is not).
    for s in defs.values_mut() {
        let refs_meta = s["properties"]["metadata"]["$ref"].as_str()
            == Some(&format!("{REF_PREFIX}{OBJECT_META}"));
        if let (true, Some(Value::Array(req))) = (refs_meta, s.get_mut("required")) {
            req.retain(|r| r != "metadata");
            if req.is_empty() {
                s.as_object_mut().map(|o| o.shift_remove("required"));
            }
        }
    }

    for r in REGISTRY {
        add_gvk(&mut defs, r.schema_name, gvk(r.group, r.version, r.kind));
        let list_name = format!("{}List", r.schema_name);
        if !defs.contains_key(&list_name) {
            let list = list_schema(&defs, r.schema_name, r.kind);
            defs.insert(list_name.clone(), list);
        }
        add_gvk(
            &mut defs,
            &list_name,
            gvk(r.group, r.version, &r.list_kind()),
        );
    }
    let mut gvs = vec![("", "v1")];
    gvs.extend(
        registry::group_versions()
            .into_iter()
            .filter(|(g, _)| !g.is_empty()),
    );
    for (g, v) in &gvs {
        add_gvk(
            &mut defs,
            "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
            gvk(g, v, "DeleteOptions"),
        );
        add_gvk(
            &mut defs,
            "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent",
            gvk(g, v, "WatchEvent"),
        );
    }
    add_gvk(
        &mut defs,
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
        gvk("", "v1", "Status"),
    );
    add_gvk(
        &mut defs,
        "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList",
        gvk("", "v1", "APIResourceList"),
    );
    add_gvk(
        &mut defs,
        "io.k8s.api.autoscaling.v1.Scale",
        gvk("autoscaling", "v1", "Scale"),
    );
    add_gvk(
        &mut defs,
        "io.k8s.api.policy.v1.Eviction",
        gvk("policy", "v1", "Eviction"),
    );
    add_gvk(
        &mut defs,
        "io.k8s.api.core.v1.Binding",
        gvk("", "v1", "Binding"),
    );

    apply_field_meta(&mut defs, metas);

    let mut sorted: Vec<(String, Value)> = defs.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.into_iter().collect()
}

/// Puts each entry's extensions on `owner.properties[field]`.
pub(crate) fn apply_field_meta(defs: &mut Map<String, Value>, metas: &[FieldMeta]) {
    for m in metas {
        let Some(Value::Object(p)) = defs
            .get_mut(m.owner)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(m.field))
        else {
            continue;
        };
        if !m.patch_strategy.is_empty() {
            p.insert(
                "x-kubernetes-patch-strategy".into(),
                json!(m.patch_strategy),
            );
        }
        if !m.merge_key.is_empty() {
            p.insert("x-kubernetes-patch-merge-key".into(), json!(m.merge_key));
        }
        if !m.list_type.is_empty() {
            p.insert("x-kubernetes-list-type".into(), json!(m.list_type));
        }
        if !m.list_map_keys.is_empty() {
            p.insert("x-kubernetes-list-map-keys".into(), json!(m.list_map_keys));
        }
    }
}

/// `<Kind>List`: apiVersion, items, kind, metadata.
fn list_schema(defs: &Map<String, Value>, item: &str, kind: &str) -> Value {
    let props = &defs
        .get(item)
        .map(|s| s["properties"].clone())
        .unwrap_or(Value::Null);
    let mut p = Map::new();
    p.insert(
        "apiVersion".into(),
        props
            .get("apiVersion")
            .cloned()
            .unwrap_or_else(|| json!({ "type": "string" })),
    );
    p.insert(
        "items".into(),
        json!({
            "description": format!("List of {kind} objects."),
            "type": "array",
            "items": { "$ref": format!("{REF_PREFIX}{item}") },
        }),
    );
    p.insert(
        "kind".into(),
        props
            .get("kind")
            .cloned()
            .unwrap_or_else(|| json!({ "type": "string" })),
    );
    p.insert(
        "metadata".into(),
        json!({ "$ref": format!("{REF_PREFIX}{LIST_META}"), "description": "Standard list metadata." }),
    );
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "type": "object",
        "properties": p,
        "required": ["items"],
    })
}

/// JSON Schema keywords OpenAPI 3.0 does not have.
const DROPPED_KEYWORDS: &[&str] = &[
    "$schema",
    "$id",
    "$anchor",
    "$comment",
    "$defs",
    "$dynamicRef",
    "$dynamicAnchor",
    "definitions",
    "unevaluatedProperties",
    "unevaluatedItems",
    "dependentRequired",
    "dependentSchemas",
    "prefixItems",
    "contains",
    "minContains",
    "maxContains",
    "propertyNames",
    "contentEncoding",
    "contentMediaType",
    "if",
    "then",
    "else",
];

/// Rewrites one schema (and its subschemas) into OpenAPI 3.0 as kube-openapi
/// reads it: no type arrays, `const`, boolean subschemas or 2020-12 keywords;
/// `$ref` with siblings rather than a one-element `allOf`.
pub(crate) fn fix_schema(s: &mut Value) {
    match s {
        Value::Bool(true) => *s = json!({}),
        Value::Bool(false) => *s = json!({ "not": {} }),
        _ => {}
    }
    let Value::Object(m) = s else { return };
    for k in DROPPED_KEYWORDS {
        m.shift_remove(*k);
    }
    if let Some(Value::Array(types)) = m.get("type").cloned() {
        let nullable = types.iter().any(|t| t == "null");
        let rest: Vec<&Value> = types.iter().filter(|t| *t != "null").collect();
        match rest.as_slice() {
            [one] => {
                m.insert("type".into(), (*one).clone());
            }
            _ => {
                m.shift_remove("type");
            }
        }
        if nullable {
            m.insert("nullable".into(), json!(true));
        }
    }
    if let Some(c) = m.shift_remove("const") {
        m.insert("enum".into(), json!([c]));
    }
    if let Some(ex) = m.shift_remove("examples") {
        if let Some(first) = ex.as_array().and_then(|a| a.first()) {
            m.entry("example").or_insert_with(|| first.clone());
        }
    }
    for (bound, flag) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        if let Some(n) = m.get(bound).filter(|v| v.is_number()).cloned() {
            m.insert(flag.into(), n);
            m.insert(bound.into(), json!(true));
        }
    }
    let single_ref = match m.get("allOf") {
        Some(Value::Array(all)) if all.len() == 1 => all[0]
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.get("$ref"))
            .cloned(),
        _ => None,
    };
    if let Some(r) = single_ref {
        m.shift_remove("allOf");
        m.insert("$ref".into(), r);
    }
    if let Some(Value::Object(props)) = m.get_mut("properties") {
        props.values_mut().for_each(fix_schema);
    }
    if let Some(Value::Object(props)) = m.get_mut("patternProperties") {
        props.values_mut().for_each(fix_schema);
    }
    if let Some(ap @ Value::Object(_)) = m.get_mut("additionalProperties") {
        fix_schema(ap);
    }
    match m.get_mut("items") {
        Some(Value::Array(items)) => {
            // Tuple form: OpenAPI 3.0 has one item schema.
            let first = items.first().cloned().unwrap_or_else(|| json!({}));
            m.insert("items".into(), first);
            if let Some(i) = m.get_mut("items") {
                fix_schema(i);
            }
        }
        Some(i) => fix_schema(i),
        None => {}
    }
    for k in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(a)) = m.get_mut(k) {
            a.iter_mut().for_each(fix_schema);
        }
    }
    if let Some(n) = m.get_mut("not") {
        fix_schema(n);
    }
}
