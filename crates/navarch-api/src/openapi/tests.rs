use super::*;
use crate::patch::strategic::field_meta;
use crate::registry::group_versions;

fn doc(path: &str) -> Value {
    let (bytes, _) = document(path).unwrap_or_else(|| panic!("no document {path}"));
    serde_json::from_slice(bytes).unwrap()
}

fn all_docs() -> Vec<(String, Value)> {
    group_versions()
        .into_iter()
        .map(|(g, v)| (gv_path(g, v), doc(&gv_path(g, v))))
        .collect()
}

#[test]
fn root_lists_every_group_version() {
    let root = root();
    let paths = root["paths"].as_object().unwrap();
    assert_eq!(paths.len(), group_versions().len());
    for (g, v) in group_versions() {
        let p = gv_path(g, v);
        let url = paths[&p]["serverRelativeURL"].as_str().unwrap();
        let (_, hash) = document(&p).unwrap();
        assert_eq!(url, format!("/openapi/v3/{p}?hash={hash}"));
        assert_eq!(hash.len(), 32);
        assert!(hash
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
    }
    assert!(paths.contains_key("api/v1") && paths.contains_key("apis/apps/v1"));
    assert!(document("/api/v1").is_some());
    assert!(document("apis/nope/v1").is_none());
}

#[test]
fn documents_are_self_contained() {
    for (path, d) in all_docs() {
        assert_eq!(d["openapi"], "3.0.0", "{path}");
        assert_eq!(d["info"]["version"], KUBERNETES_VERSION);
        let schemas = d["components"]["schemas"].as_object().unwrap();
        let mut refs = BTreeSet::new();
        collect_refs(&d, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            assert!(schemas.contains_key(&r), "{path}: dangling $ref {r}");
        }
        // Every $ref is a components reference.
        let text = serde_json::to_string(&d).unwrap();
        assert_eq!(
            text.matches("\"$ref\":\"#/components/schemas/").count(),
            text.matches("\"$ref\"").count(),
            "{path}"
        );
    }
}

#[test]
fn every_kind_has_a_schema_with_its_gvk() {
    for r in REGISTRY {
        let d = doc(&gv_path(r.group, r.version));
        let schemas = &d["components"]["schemas"];
        let want = json!({ "group": r.group, "kind": r.kind, "version": r.version });
        let gvks = schemas[r.schema_name]["x-kubernetes-group-version-kind"]
            .as_array()
            .unwrap_or_else(|| panic!("{}", r.kind));
        assert!(gvks.contains(&want), "{}", r.kind);
        let list = &schemas[format!("{}List", r.schema_name)];
        assert_eq!(
            list["x-kubernetes-group-version-kind"][0]["kind"],
            r.list_kind()
        );
        assert_eq!(
            list["properties"]["items"]["items"]["$ref"],
            format!("{REF_PREFIX}{}", r.schema_name)
        );
        // metadata is optional, as upstream.
        let req = schemas[r.schema_name]["required"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(!req.contains(&json!("metadata")), "{}", r.kind);
        assert!(
            schemas[r.schema_name]["properties"]["metadata"]["$ref"].is_string(),
            "{}",
            r.kind
        );
    }
}

fn operations(d: &Value) -> Vec<(&str, &str, &Value)> {
    let mut out = Vec::new();
    for (path, item) in d["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method != "parameters" {
                out.push((path.as_str(), method.as_str(), op));
            }
        }
    }
    out
}

#[test]
fn patch_operations_advertise_field_validation_and_patch_types() {
    for r in REGISTRY {
        let d = doc(&gv_path(r.group, r.version));
        let want = json!({ "group": r.group, "kind": r.kind, "version": r.version });
        let patches: Vec<_> = operations(&d)
            .into_iter()
            .filter(|(_, m, op)| *m == "patch" && op["x-kubernetes-group-version-kind"] == want)
            .collect();
        assert!(!patches.is_empty(), "{}", r.kind);
        for (path, _, op) in patches {
            let names: Vec<&str> = op["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            for n in ["fieldValidation", "fieldManager", "dryRun", "force"] {
                assert!(names.contains(&n), "{path}: {n}");
            }
            let content = op["requestBody"]["content"].as_object().unwrap();
            for t in [
                "application/apply-patch+yaml",
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            ] {
                assert!(content.contains_key(t), "{path}: {t}");
            }
            assert_eq!(op["x-kubernetes-action"], "patch");
        }
    }
}

#[test]
fn operations_are_named_like_upstream() {
    let core = doc("api/v1");
    let apps = doc("apis/apps/v1");
    let coord = doc("apis/coordination.k8s.io/v1");
    let ids = |d: &Value| -> Vec<String> {
        operations(d)
            .iter()
            .map(|(_, _, op)| op["operationId"].as_str().unwrap().to_string())
            .collect()
    };
    let core_ids = ids(&core);
    for id in [
        "patchCoreV1NamespacedPod",
        "readCoreV1NamespacedPod",
        "listCoreV1PodForAllNamespaces",
        "listCoreV1NamespacedPod",
        "createCoreV1NamespacedPod",
        "deleteCoreV1CollectionNamespacedPod",
        "readCoreV1NamespacedPodStatus",
        "createCoreV1NamespacedPodEviction",
        "createCoreV1NamespacedPodBinding",
        "readCoreV1NamespacedPodLog",
        "listCoreV1Node",
        "deleteCoreV1Node",
        "replaceCoreV1NamespaceFinalize",
        "getCoreV1APIResources",
    ] {
        assert!(core_ids.contains(&id.to_string()), "{id}");
    }
    let apps_ids = ids(&apps);
    for id in [
        "readAppsV1NamespacedDeployment",
        "patchAppsV1NamespacedDeploymentScale",
        "replaceAppsV1NamespacedReplicaSetStatus",
    ] {
        assert!(apps_ids.contains(&id.to_string()), "{id}");
    }
    assert!(ids(&coord).contains(&"patchCoordinationV1NamespacedLease".to_string()));
    let ids: Vec<String> = core_ids.iter().chain(&apps_ids).cloned().collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "operationIds are unique");

    let dep = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
    assert_eq!(dep["get"]["x-kubernetes-action"], "get");
    assert_eq!(
        dep["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/io.k8s.api.apps.v1.Deployment"
    );
    assert_eq!(dep["delete"]["x-kubernetes-action"], "delete");
    let scale = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
    assert_eq!(
        scale["patch"]["x-kubernetes-group-version-kind"]["group"],
        "autoscaling"
    );
    let nodes = &core["paths"]["/api/v1/nodes"];
    assert_eq!(nodes["delete"]["x-kubernetes-action"], "deletecollection");
    assert_eq!(nodes["get"]["x-kubernetes-action"], "list");
    let names: Vec<&str> = nodes["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"watch") && names.contains(&"labelSelector"));
    assert!(apps["components"]["schemas"]["io.k8s.api.autoscaling.v1.Scale"].is_object());
}

#[test]
fn field_meta_extensions_are_present() {
    let all = schemas();
    for m in FIELD_META {
        let Some(p) = all.get(m.owner).and_then(|s| s["properties"].get(m.field)) else {
            continue;
        };
        if !m.patch_strategy.is_empty() {
            assert_eq!(
                p["x-kubernetes-patch-strategy"], m.patch_strategy,
                "{}.{}",
                m.owner, m.field
            );
        }
        if !m.merge_key.is_empty() {
            assert_eq!(
                p["x-kubernetes-patch-merge-key"], m.merge_key,
                "{}.{}",
                m.owner, m.field
            );
        }
        if !m.list_type.is_empty() {
            assert_eq!(
                p["x-kubernetes-list-type"], m.list_type,
                "{}.{}",
                m.owner, m.field
            );
        }
        if !m.list_map_keys.is_empty() {
            assert_eq!(
                p["x-kubernetes-list-map-keys"],
                json!(m.list_map_keys),
                "{}.{}",
                m.owner,
                m.field
            );
        }
    }
    if let Some(m) = field_meta("io.k8s.api.core.v1.PodSpec", "containers") {
        let d = doc("api/v1");
        let c =
            &d["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(c["x-kubernetes-patch-merge-key"], m.merge_key);
        assert_eq!(m.merge_key, "name");
    }
    // The injection itself, with a table of our own.
    let meta = [FieldMeta {
        owner: "io.k8s.api.core.v1.PodSpec",
        field: "containers",
        patch_strategy: "merge",
        merge_key: "name",
        list_type: "map",
        list_map_keys: &["name"],
    }];
    let defs = build_schemas(&meta);
    let c = &defs["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(c["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(c["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(c["x-kubernetes-list-type"], "map");
    assert_eq!(c["x-kubernetes-list-map-keys"], json!(["name"]));
}

#[test]
fn special_types_match_upstream() {
    let s = schemas();
    let q = &s["io.k8s.apimachinery.pkg.api.resource.Quantity"];
    assert_eq!(
        q["oneOf"],
        json!([{ "type": "string" }, { "type": "number" }])
    );
    assert!(q.get("type").is_none());
    let ios = &s["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
    assert_eq!(ios["format"], "int-or-string");
    assert_eq!(
        ios["oneOf"],
        json!([{ "type": "integer" }, { "type": "string" }])
    );
    assert_eq!(ios["x-kubernetes-int-or-string"], true);
    for t in ["Time", "MicroTime"] {
        let ts = &s[&format!("io.k8s.apimachinery.pkg.apis.meta.v1.{t}")];
        assert_eq!(ts["type"], "string");
        assert_eq!(ts["format"], "date-time");
    }
    assert_eq!(
        s["io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"]["x-kubernetes-map-type"],
        "atomic"
    );
    assert_eq!(
        s["io.k8s.api.core.v1.ContainerPort"]["properties"]["protocol"]["default"],
        "TCP"
    );
    let status =
        &s["io.k8s.apimachinery.pkg.apis.meta.v1.Status"]["x-kubernetes-group-version-kind"];
    assert_eq!(
        status,
        &json!([{ "group": "", "kind": "Status", "version": "v1" }])
    );
    let del = s["io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"]
        ["x-kubernetes-group-version-kind"]
        .as_array()
        .unwrap();
    assert!(del.contains(&json!({ "group": "apps", "kind": "DeleteOptions", "version": "v1" })));
    // Properties reference schemas with `$ref` and siblings, as upstream.
    let meta = &s["io.k8s.api.apps.v1.Deployment"]["properties"]["metadata"];
    assert_eq!(
        meta["$ref"],
        "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    assert!(meta["description"].is_string());
}

/// Walks every schema node (not property-name maps) and reports what
/// OpenAPI 3.0 does not allow.
fn check_schema(s: &Value, at: &str, problems: &mut Vec<String>) {
    let Some(m) = s.as_object() else {
        problems.push(format!("{at}: schema is not an object: {s}"));
        return;
    };
    for k in [
        "$defs",
        "$schema",
        "$id",
        "const",
        "definitions",
        "prefixItems",
        "unevaluatedProperties",
        "examples",
        "if",
        "then",
        "else",
    ] {
        if m.contains_key(k) {
            problems.push(format!("{at}: {k}"));
        }
    }
    match m.get("type") {
        None | Some(Value::String(_)) => {}
        Some(t) => problems.push(format!("{at}: type {t}")),
    }
    if let Some(Value::Object(props)) = m.get("properties") {
        for (k, p) in props {
            check_schema(p, &format!("{at}.{k}"), problems);
        }
    }
    match m.get("additionalProperties") {
        Some(ap @ Value::Object(_)) => check_schema(ap, &format!("{at}[*]"), problems),
        None | Some(Value::Bool(_)) => {}
        Some(other) => problems.push(format!("{at}: additionalProperties {other}")),
    }
    if let Some(i) = m.get("items") {
        check_schema(i, &format!("{at}[]"), problems);
    }
    for k in ["allOf", "anyOf", "oneOf"] {
        if let Some(a) = m.get(k) {
            match a.as_array() {
                Some(a) => a
                    .iter()
                    .for_each(|x| check_schema(x, &format!("{at}/{k}"), problems)),
                None => problems.push(format!("{at}: {k} not an array")),
            }
        }
    }
    if let Some(n) = m.get("not") {
        check_schema(n, &format!("{at}/not"), problems);
    }
}

#[test]
fn no_json_schema_2020_constructs_remain() {
    let mut problems = Vec::new();
    for (path, d) in all_docs() {
        for (name, s) in d["components"]["schemas"].as_object().unwrap() {
            check_schema(s, &format!("{path}:{name}"), &mut problems);
        }
        for (p, m, op) in operations(&d) {
            for param in op["parameters"].as_array().into_iter().flatten() {
                check_schema(
                    &param["schema"],
                    &format!("{p} {m} {}", param["name"]),
                    &mut problems,
                );
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn fix_schema_rewrites_2020_constructs() {
    let mut s = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": { "x": {} },
        "type": "object",
        "properties": {
            "a": { "type": ["string", "null"] },
            "b": { "const": "x", "examples": ["x"] },
            "c": true,
            "d": { "allOf": [{ "$ref": "#/components/schemas/X" }], "description": "d" },
            "e": { "type": "array", "items": [{ "type": "integer", "exclusiveMinimum": 0 }] },
            "f": { "type": ["integer", "string"] },
        },
    });
    fix_schema(&mut s);
    assert_eq!(
        s,
        json!({
            "type": "object",
            "properties": {
                "a": { "type": "string", "nullable": true },
                "b": { "enum": ["x"], "example": "x" },
                "c": {},
                "d": { "description": "d", "$ref": "#/components/schemas/X" },
                "e": { "type": "array", "items": { "type": "integer", "exclusiveMinimum": true, "minimum": 0 } },
                "f": {},
            },
        })
    );
    let mut problems = Vec::new();
    check_schema(&s, "s", &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn hashes_are_stable() {
    assert_eq!(content_hash(b""), "6C62272E07BB014262B821756295C58D");
    assert_ne!(content_hash(b"a"), content_hash(b"b"));
    let a = build_document("apps", "v1", schemas());
    let b = build_document("apps", "v1", schemas());
    assert_eq!(
        serde_json::to_vec(&a).unwrap(),
        serde_json::to_vec(&b).unwrap()
    );
}
