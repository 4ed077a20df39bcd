//! The `paths` of a group-version document: collection and item paths of
//! every resource, their subresources, and the group-version's resource list.

use super::REF_PREFIX;
use crate::registry::{ResourceType, Scope, Subresource, REGISTRY};
use serde_json::{json, Map, Value};

const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const API_RESOURCE_LIST: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList";

const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

/// `CoreV1`, `AppsV1`, `CoordinationV1`, `RbacAuthorizationV1`.
fn op_group(group: &str, version: &str) -> String {
    let g = if group.is_empty() {
        "core"
    } else {
        group.strip_suffix(".k8s.io").unwrap_or(group)
    };
    let mut out: String = g.split('.').map(capitalize).collect();
    out.push_str(&capitalize(version));
    out
}

/// `core_v1`, `apps_v1`, `rbacAuthorization_v1`.
fn tag(group: &str, version: &str) -> String {
    let g = if group.is_empty() {
        "core"
    } else {
        group.strip_suffix(".k8s.io").unwrap_or(group)
    };
    let mut parts = g.split('.');
    let mut out = parts.next().unwrap_or("").to_string();
    for p in parts {
        out.push_str(&capitalize(p));
    }
    format!("{out}_{version}")
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("{REF_PREFIX}{name}") })
}

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({ "name": name, "in": "query", "description": description, "schema": { "type": ty } })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "required": true, "description": description, "schema": { "type": "string" } })
}

fn pretty() -> Value {
    query(
        "pretty",
        "string",
        "If 'true', the output is pretty printed.",
    )
}

fn namespace_param() -> Value {
    path_param(
        "namespace",
        "object name and auth scope, such as for teams and projects",
    )
}

fn name_param(kind: &str) -> Value {
    path_param("name", &format!("name of the {kind}"))
}

fn dry_run() -> Value {
    query("dryRun", "string", "When present, modifications are not persisted. Valid value: All (run every dry-run stage).")
}

fn field_manager() -> Value {
    query("fieldManager", "string", "Name of the actor making the change, recorded in managedFields. Required for apply patches.")
}

fn field_validation() -> Value {
    query(
        "fieldValidation",
        "string",
        "How the server treats unknown or duplicate fields: Ignore, Warn (warning headers) or Strict (the request fails).",
    )
}

fn selectors() -> Vec<Value> {
    vec![
        query(
            "continue",
            "string",
            "The continue token returned by a previous chunked list.",
        ),
        query(
            "fieldSelector",
            "string",
            "Restricts the objects returned by their fields. Defaults to everything.",
        ),
        query(
            "labelSelector",
            "string",
            "Restricts the objects returned by their labels. Defaults to everything.",
        ),
        query(
            "limit",
            "integer",
            "Maximum number of objects to return; more are signalled by a continue token.",
        ),
        query(
            "resourceVersion",
            "string",
            "Constrains which resource versions the request may be served from.",
        ),
        query(
            "resourceVersionMatch",
            "string",
            "How resourceVersion applies to list calls: Exact or NotOlderThan.",
        ),
        query(
            "sendInitialEvents",
            "boolean",
            "With watch=true, start the watch with synthetic events for the current objects.",
        ),
        query(
            "timeoutSeconds",
            "integer",
            "Timeout for the list or watch call.",
        ),
    ]
}

fn list_params() -> Vec<Value> {
    let mut p = vec![query(
        "allowWatchBookmarks",
        "boolean",
        "Request watch events of type BOOKMARK.",
    )];
    p.extend(selectors());
    p.push(query(
        "watch",
        "boolean",
        "Watch for changes to the described resources and return them as a stream of events.",
    ));
    p
}

fn delete_params() -> Vec<Value> {
    vec![
        dry_run(),
        query(
            "gracePeriodSeconds",
            "integer",
            "Seconds before the object is deleted; zero means immediately.",
        ),
        query(
            "ignoreStoreReadErrorWithClusterBreakingPotential",
            "boolean",
            "Delete an object that cannot be read from storage (unsafe).",
        ),
        query(
            "orphanDependents",
            "boolean",
            "Deprecated: use propagationPolicy. Whether dependents are orphaned.",
        ),
        query(
            "propagationPolicy",
            "string",
            "Garbage collection policy: Orphan, Background or Foreground.",
        ),
    ]
}

/// `application/json`, `application/yaml`, `application/vnd.kubernetes.protobuf`
/// (plus the `;stream=watch` forms for lists).
fn content(schema: &str, watch: bool) -> Value {
    let mut c = Map::new();
    let mut types = vec![
        "application/json",
        "application/yaml",
        "application/vnd.kubernetes.protobuf",
    ];
    if watch {
        types.extend([
            "application/json;stream=watch",
            "application/vnd.kubernetes.protobuf;stream=watch",
        ]);
    }
    for t in types {
        c.insert(t.to_string(), json!({ "schema": schema_ref(schema) }));
    }
    Value::Object(c)
}

fn responses(codes: &[&str], schema: &str, watch: bool) -> Value {
    let mut r = Map::new();
    for code in codes {
        let description = match *code {
            "200" => "OK",
            "201" => "Created",
            "202" => "Accepted",
            _ => "",
        };
        r.insert(
            code.to_string(),
            json!({ "description": description, "content": content(schema, watch) }),
        );
    }
    r.insert("401".into(), json!({ "description": "Unauthorized" }));
    Value::Object(r)
}

fn body(schema: &str) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema_ref(schema) }, "application/yaml": { "schema": schema_ref(schema) } } })
}

fn patch_body() -> Value {
    let mut c = Map::new();
    for t in PATCH_TYPES {
        c.insert(t.to_string(), json!({ "schema": schema_ref(PATCH) }));
    }
    json!({ "required": true, "content": c })
}

/// What an operation is about: its GVK extension and names.
struct Target<'a> {
    group: &'a str,
    version: &'a str,
    kind: &'a str,
    tag: String,
}

struct Operation {
    id: String,
    description: String,
    action: &'static str,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Value,
}

impl Operation {
    fn into_json(self, t: &Target<'_>) -> Value {
        let mut m = Map::new();
        m.insert("description".into(), json!(self.description));
        m.insert("operationId".into(), json!(self.id));
        if !self.params.is_empty() {
            m.insert("parameters".into(), Value::Array(self.params));
        }
        if let Some(b) = self.body {
            m.insert("requestBody".into(), b);
        }
        m.insert("responses".into(), self.responses);
        m.insert("tags".into(), json!([t.tag]));
        m.insert("x-kubernetes-action".into(), json!(self.action));
        m.insert(
            "x-kubernetes-group-version-kind".into(),
            super::gvk(t.group, t.version, t.kind),
        );
        Value::Object(m)
    }
}

fn path_item(params: Vec<Value>, ops: Vec<(&str, Operation)>, t: &Target<'_>) -> Value {
    let mut m = Map::new();
    for (method, op) in ops {
        m.insert(method.to_string(), op.into_json(t));
    }
    m.insert("parameters".into(), Value::Array(params));
    Value::Object(m)
}

/// Every path of one group-version.
pub(super) fn paths(group: &str, version: &str) -> Value {
    let prefix = format!("/{}", super::gv_path(group, version));
    let opg = op_group(group, version);
    let tag = tag(group, version);
    let mut out = Map::new();
    out.insert(
        format!("{prefix}/"),
        json!({ "get": {
            "description": "get available resources",
            "operationId": format!("get{opg}APIResources"),
            "responses": { "200": { "description": "OK", "content": content(API_RESOURCE_LIST, false) }, "401": { "description": "Unauthorized" } },
            "tags": [tag],
        }}),
    );
    for rt in REGISTRY
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        resource_paths(rt, &prefix, &opg, &tag, &mut out);
    }
    let mut sorted: Vec<(String, Value)> = out.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Object(sorted.into_iter().collect())
}

fn resource_paths(
    rt: &ResourceType,
    prefix: &str,
    opg: &str,
    tag: &str,
    out: &mut Map<String, Value>,
) {
    let kind = rt.kind;
    let schema = rt.schema_name;
    let list_schema = format!("{schema}List");
    let t = Target {
        group: rt.group,
        version: rt.version,
        kind,
        tag: tag.to_string(),
    };
    let namespaced = rt.scope == Scope::Namespaced;
    let (scoped, id_kind) = if namespaced {
        (
            format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural),
            format!("Namespaced{kind}"),
        )
    } else {
        (format!("{prefix}/{}", rt.plural), kind.to_string())
    };
    let scope_params = || {
        if namespaced {
            vec![namespace_param(), pretty()]
        } else {
            vec![pretty()]
        }
    };
    let item_params = || {
        let mut p = vec![name_param(kind)];
        p.extend(scope_params());
        p
    };

    let mut deletecollection_params = delete_params();
    deletecollection_params.extend(selectors());
    let collection = vec![
        (
            "get",
            Operation {
                id: format!("list{opg}{id_kind}"),
                description: format!("list or watch objects of kind {kind}"),
                action: "list",
                params: list_params(),
                body: None,
                responses: responses(&["200"], &list_schema, true),
            },
        ),
        (
            "post",
            Operation {
                id: format!("create{opg}{id_kind}"),
                description: format!("create a {kind}"),
                action: "post",
                params: vec![dry_run(), field_manager(), field_validation()],
                body: Some(body(schema)),
                responses: responses(&["200", "201", "202"], schema, false),
            },
        ),
        (
            "delete",
            Operation {
                id: format!("delete{opg}Collection{id_kind}"),
                description: format!("delete collection of {kind}"),
                action: "deletecollection",
                params: deletecollection_params,
                body: Some(
                    json!({ "content": { "application/json": { "schema": schema_ref(DELETE_OPTIONS) } } }),
                ),
                responses: responses(&["200"], STATUS, false),
            },
        ),
    ];
    out.insert(scoped.clone(), path_item(scope_params(), collection, &t));

    if namespaced {
        let all = vec![(
            "get",
            Operation {
                id: format!("list{opg}{kind}ForAllNamespaces"),
                description: format!("list or watch objects of kind {kind}"),
                action: "list",
                params: Vec::new(),
                body: None,
                responses: responses(&["200"], &list_schema, true),
            },
        )];
        let mut params = list_params();
        params.push(pretty());
        out.insert(
            format!("{prefix}/{}", rt.plural),
            path_item(params, all, &t),
        );
    }

    let item = format!("{scoped}/{{name}}");
    out.insert(
        item.clone(),
        path_item(
            item_params(),
            rw_ops(opg, &id_kind, "", kind, schema, true),
            &t,
        ),
    );

    for sub in rt.subresources {
        let path = format!("{item}/{}", sub.name());
        match sub {
            Subresource::Status => {
                let ops = rw_ops(
                    opg,
                    &id_kind,
                    "Status",
                    &format!("status of the specified {kind}"),
                    schema,
                    false,
                );
                out.insert(path, path_item(item_params(), ops, &t));
            }
            Subresource::Scale => {
                let st = Target {
                    group: "autoscaling",
                    version: "v1",
                    kind: "Scale",
                    tag: tag.to_string(),
                };
                let ops = rw_ops(
                    opg,
                    &id_kind,
                    "Scale",
                    &format!("scale of the specified {kind}"),
                    "io.k8s.api.autoscaling.v1.Scale",
                    false,
                );
                out.insert(path, path_item(item_params(), ops, &st));
            }
            Subresource::Finalize => {
                let op = Operation {
                    id: format!("replace{opg}{id_kind}Finalize"),
                    description: format!("replace finalize of the specified {kind}"),
                    action: "put",
                    params: vec![dry_run(), field_manager(), field_validation()],
                    body: Some(body(schema)),
                    responses: responses(&["200", "201"], schema, false),
                };
                out.insert(path, path_item(item_params(), vec![("put", op)], &t));
            }
            Subresource::Eviction | Subresource::Binding => {
                let (name, sg, sv, sk, sschema) = if *sub == Subresource::Eviction {
                    (
                        "Eviction",
                        "policy",
                        "v1",
                        "Eviction",
                        "io.k8s.api.policy.v1.Eviction",
                    )
                } else {
                    ("Binding", "", "v1", "Binding", "io.k8s.api.core.v1.Binding")
                };
                let st = Target {
                    group: sg,
                    version: sv,
                    kind: sk,
                    tag: tag.to_string(),
                };
                let op = Operation {
                    id: format!("create{opg}{id_kind}{name}"),
                    description: format!("create {} of a {kind}", name.to_lowercase()),
                    action: "post",
                    params: vec![dry_run(), field_manager(), field_validation()],
                    body: Some(body(sschema)),
                    responses: responses(&["200", "201", "202"], sschema, false),
                };
                out.insert(path, path_item(item_params(), vec![("post", op)], &st));
            }
            Subresource::Log => {
                let mut params = vec![
                    query(
                        "container",
                        "string",
                        "The container to stream logs of; optional with one container.",
                    ),
                    query("follow", "boolean", "Follow the log stream."),
                    query("limitBytes", "integer", "Maximum bytes of log to return."),
                    query(
                        "previous",
                        "boolean",
                        "Logs of the previous, terminated container instance.",
                    ),
                    query(
                        "sinceSeconds",
                        "integer",
                        "Only logs newer than this many seconds.",
                    ),
                    query(
                        "tailLines",
                        "integer",
                        "Number of lines from the end of the log to show.",
                    ),
                    query(
                        "timestamps",
                        "boolean",
                        "Prefix every line with an RFC 3339 timestamp.",
                    ),
                ];
                params.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
                let op = json!({
                    "description": format!("read log of the specified {kind}"),
                    "operationId": format!("read{opg}{id_kind}Log"),
                    "parameters": params,
                    "responses": {
                        "200": { "description": "OK", "content": { "text/plain": { "schema": { "type": "string" } } } },
                        "401": { "description": "Unauthorized" },
                    },
                    "tags": [tag],
                    "x-kubernetes-action": "get",
                    "x-kubernetes-group-version-kind": super::gvk(rt.group, rt.version, kind),
                });
                let mut item = Map::new();
                item.insert("get".into(), op);
                item.insert("parameters".into(), Value::Array(item_params()));
                out.insert(path, Value::Object(item));
            }
            // Streaming upgrades (exec, attach, port-forward) are not described.
            Subresource::Exec | Subresource::Attach | Subresource::PortForward => {}
        }
    }
}

/// read, replace, patch (and, for the object itself, delete) of one path.
/// `what` is the kind, or e.g. `status of the specified Pod` for subresources.
fn rw_ops(
    opg: &str,
    id_kind: &str,
    suffix: &str,
    what: &str,
    schema: &str,
    with_delete: bool,
) -> Vec<(&'static str, Operation)> {
    let (read, replace, patch) = if suffix.is_empty() {
        (
            format!("read the specified {what}"),
            format!("replace the specified {what}"),
            format!("partially update the specified {what}"),
        )
    } else {
        (
            format!("read {what}"),
            format!("replace {what}"),
            format!("partially update {what}"),
        )
    };
    let mut patch_params = vec![dry_run(), field_manager(), field_validation()];
    patch_params.push(query(
        "force",
        "boolean",
        "Force an apply patch: take ownership of conflicting fields. Only for apply patches.",
    ));
    let mut ops = vec![
        (
            "get",
            Operation {
                id: format!("read{opg}{id_kind}{suffix}"),
                description: read,
                action: "get",
                params: Vec::new(),
                body: None,
                responses: responses(&["200"], schema, false),
            },
        ),
        (
            "put",
            Operation {
                id: format!("replace{opg}{id_kind}{suffix}"),
                description: replace,
                action: "put",
                params: vec![dry_run(), field_manager(), field_validation()],
                body: Some(body(schema)),
                responses: responses(&["200", "201"], schema, false),
            },
        ),
        (
            "patch",
            Operation {
                id: format!("patch{opg}{id_kind}{suffix}"),
                description: patch,
                action: "patch",
                params: patch_params,
                body: Some(patch_body()),
                responses: responses(&["200", "201"], schema, false),
            },
        ),
    ];
    if with_delete {
        ops.push((
            "delete",
            Operation {
                id: format!("delete{opg}{id_kind}"),
                description: format!("delete a {what}"),
                action: "delete",
                params: delete_params(),
                body: Some(json!({ "content": { "application/json": { "schema": schema_ref(DELETE_OPTIONS) } } })),
                responses: responses(&["200", "202"], STATUS, false),
            },
        ));
    }
    ops
}
