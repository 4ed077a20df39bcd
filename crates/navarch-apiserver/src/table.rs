//! Server-side Table output (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`).

use navarch_api::ResourceType;
use serde_json::{json, Value};

/// What `rows[].object` carries (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    #[default]
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: &str) -> IncludeObject {
        match s {
            "None" => IncludeObject::None,
            "Object" => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

pub fn column_definitions(rt: &ResourceType) -> Vec<Value> {
    rt.ops
        .columns
        .iter()
        .map(|c| json!({"name": c.name, "type": c.kind, "format": c.format, "description": c.description, "priority": c.priority}))
        .collect()
}

/// `PartialObjectMetadata` of an object.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]})
}

pub fn row(rt: &ResourceType, obj: &Value, include: IncludeObject, now: jiff::Timestamp) -> Value {
    let cells = (rt.ops.row)(obj, now);
    let mut r = json!({"cells": cells});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => r["object"] = partial_metadata(obj),
        IncludeObject::Object => r["object"] = obj.clone(),
    }
    r
}

/// A whole Table for a list (or a single object).
pub fn table(
    rt: &ResourceType,
    objs: &[Value],
    include: IncludeObject,
    resource_version: &str,
    cont: Option<&str>,
    with_columns: bool,
) -> Value {
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = objs.iter().map(|o| row(rt, o, include, now)).collect();
    let mut meta = json!({"resourceVersion": resource_version});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    let cols = if with_columns {
        column_definitions(rt)
    } else {
        Vec::new()
    };
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "columnDefinitions": cols, "rows": rows})
}
