use super::*;
use crate::patch::strategic::FieldMeta;
use crate::registry::lookup;
use proptest::prelude::*;
use std::sync::OnceLock;

/// Upstream's list metadata for the fields these tests exercise, so the
/// tests do not depend on how far `FIELD_META` is filled in.
const META: &[FieldMeta] = &[
    FieldMeta {
        owner: "io.k8s.api.core.v1.PodSpec",
        field: "containers",
        patch_strategy: "merge",
        merge_key: "name",
        list_type: "map",
        list_map_keys: &["name"],
    },
    FieldMeta {
        owner: "io.k8s.api.core.v1.Container",
        field: "ports",
        patch_strategy: "merge",
        merge_key: "containerPort",
        list_type: "map",
        list_map_keys: &["containerPort", "protocol"],
    },
    FieldMeta {
        owner: "io.k8s.api.core.v1.Container",
        field: "env",
        patch_strategy: "merge",
        merge_key: "name",
        list_type: "map",
        list_map_keys: &["name"],
    },
    FieldMeta {
        owner: "io.k8s.api.core.v1.Container",
        field: "args",
        patch_strategy: "",
        merge_key: "",
        list_type: "atomic",
        list_map_keys: &[],
    },
    FieldMeta {
        owner: "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        field: "finalizers",
        patch_strategy: "merge",
        merge_key: "",
        list_type: "set",
        list_map_keys: &[],
    },
    // Patch strategy only: server-side apply falls back to it.
    FieldMeta {
        owner: "io.k8s.api.core.v1.PodSpec",
        field: "volumes",
        patch_strategy: "merge,retainKeys",
        merge_key: "name",
        list_type: "",
        list_map_keys: &[],
    },
];

fn schemas() -> Schemas<'static> {
    static DEFS: OnceLock<Map<String, Value>> = OnceLock::new();
    Schemas {
        defs: DEFS.get_or_init(|| crate::openapi::build_schemas(META)),
    }
}

fn deployments() -> &'static ResourceType {
    lookup("apps", "v1", "deployments").unwrap()
}

fn pods() -> &'static ResourceType {
    lookup("", "v1", "pods").unwrap()
}

fn apply_to(
    rt: &ResourceType,
    sub: Option<Subresource>,
    live: Option<&Value>,
    cfg: &Value,
    mgr: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    let op = Op {
        rt,
        subresource: sub,
        manager: mgr,
        now,
    };
    apply_with(schemas(), live, cfg, &op, force)
}

fn apply(
    live: Option<&Value>,
    cfg: &Value,
    mgr: &str,
    force: bool,
    now: &str,
) -> Result<Value, ApplyError> {
    apply_to(deployments(), None, live, cfg, mgr, force, now)
}

fn update(
    old: Option<&Value>,
    mut new: Value,
    mgr: &str,
    sub: Option<Subresource>,
    now: &str,
) -> Value {
    let op = Op {
        rt: deployments(),
        subresource: sub,
        manager: mgr,
        now,
    };
    track_with(schemas(), old, &mut new, &op);
    new
}

fn entry<'v>(obj: &'v Value, mgr: &str, op: &str) -> Option<&'v Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == mgr && e["operation"] == op)
}

fn fields<'v>(obj: &'v Value, mgr: &str, op: &str) -> &'v Value {
    &entry(obj, mgr, op).unwrap_or_else(|| panic!("no {op} entry for {mgr} in {obj:#}"))["fieldsV1"]
}

fn deployment(replicas: Option<i64>, labels: Value, containers: Value) -> Value {
    let mut spec = json!({
        "selector": { "matchLabels": { "app": "web" } },
        "template": {
            "metadata": { "labels": { "app": "web" } },
            "spec": { "containers": containers },
        },
    });
    if let Some(r) = replicas {
        spec["replicas"] = json!(r);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web", "namespace": "default", "labels": labels },
        "spec": spec,
    })
}

fn nginx() -> Value {
    json!([{ "name": "nginx", "image": "nginx:1.25", "ports": [{ "containerPort": 80 }] }])
}

/// What the store would hand back: the object plus server-set metadata.
fn stored(mut v: Value) -> Value {
    v["metadata"]["uid"] = json!("u-1");
    v["metadata"]["resourceVersion"] = json!("7");
    v["metadata"]["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
    v
}

const T1: &str = "2025-01-01T00:00:00Z";
const T2: &str = "2025-01-01T00:01:00Z";
const T3: &str = "2025-01-01T00:02:00Z";

#[test]
fn apply_creates_with_upstream_fields_v1() {
    let cfg = deployment(Some(3), json!({ "app": "web" }), nginx());
    let out = apply(None, &cfg, "kubectl", false, T1).unwrap();
    assert_eq!(out["spec"]["replicas"], 3);
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.25"
    );
    let mf = out["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(mf.len(), 1);
    let e = &mf[0];
    assert_eq!(e["manager"], "kubectl");
    assert_eq!(e["operation"], "Apply");
    assert_eq!(e["apiVersion"], "apps/v1");
    assert_eq!(e["time"], T1);
    assert_eq!(e["fieldsType"], "FieldsV1");
    assert!(e.get("subresource").is_none());
    let expected = json!({
        "f:metadata": { "f:labels": { "f:app": {} } },
        "f:spec": {
            "f:replicas": {},
            "f:selector": {},
            "f:template": {
                "f:metadata": { "f:labels": { "f:app": {} } },
                "f:spec": { "f:containers": { "k:{\"name\":\"nginx\"}": {
                    ".": {},
                    "f:image": {},
                    "f:name": {},
                    "f:ports": { "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": { ".": {}, "f:containerPort": {} } },
                } } },
            },
        },
    });
    assert_eq!(e["fieldsV1"], expected);
    // Same bytes as upstream, key order included.
    assert_eq!(e["fieldsV1"].to_string(), expected.to_string());
}

#[test]
fn reapply_is_a_noop_except_time() {
    let cfg = deployment(Some(3), json!({ "app": "web" }), nginx());
    let live = stored(apply(None, &cfg, "kubectl", false, T1).unwrap());
    let mut again = apply(Some(&live), &cfg, "kubectl", false, T2).unwrap();
    assert_eq!(entry(&again, "kubectl", "Apply").unwrap()["time"], T2);
    let mut a = again.clone();
    let mut b = live.clone();
    a["metadata"]["managedFields"][0]["time"] = json!(null);
    b["metadata"]["managedFields"][0]["time"] = json!(null);
    assert_eq!(a, b);
    keep_timestamps_if_unchanged(&live, &mut again);
    assert_eq!(again, live);
}

#[test]
fn removed_fields_are_pruned_when_solely_owned() {
    let two = json!([
        { "name": "nginx", "image": "nginx:1.25" },
        { "name": "sidecar", "image": "busybox" },
    ]);
    let cfg = deployment(Some(3), json!({ "app": "web", "tier": "front" }), two);
    let live = stored(apply(None, &cfg, "kubectl", false, T1).unwrap());
    let cfg2 = deployment(
        None,
        json!({ "app": "web" }),
        json!([{ "name": "nginx", "image": "nginx:1.25" }]),
    );
    let out = apply(Some(&live), &cfg2, "kubectl", false, T2).unwrap();
    assert_eq!(out["metadata"]["labels"], json!({ "app": "web" }));
    assert!(out["spec"].get("replicas").is_none(), "{out:#}");
    let containers = out["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["name"], "nginx");
    // Identity and server-set metadata survive.
    assert_eq!(out["metadata"]["name"], "web");
    assert_eq!(out["metadata"]["uid"], "u-1");
    assert_eq!(out["metadata"]["creationTimestamp"], "2025-01-01T00:00:00Z");
    let f = fields(&out, "kubectl", "Apply");
    assert!(f["f:spec"].get("f:replicas").is_none());
    assert!(f["f:metadata"]["f:labels"].get("f:tier").is_none());
}

#[test]
fn removed_fields_stay_when_another_manager_owns_them() {
    let cfg = deployment(Some(3), json!({ "app": "web", "tier": "front" }), nginx());
    let live = stored(apply(None, &cfg, "a", false, T1).unwrap());
    // Manager b applies the same label value: shared ownership, no conflict.
    let b_cfg = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web", "labels": { "tier": "front" } } });
    let live = apply(Some(&live), &b_cfg, "b", false, T2).unwrap();
    let cfg2 = deployment(Some(3), json!({ "app": "web" }), nginx());
    let out = apply(Some(&live), &cfg2, "a", false, T3).unwrap();
    assert_eq!(out["metadata"]["labels"]["tier"], "front");
    assert_eq!(
        fields(&out, "b", "Apply"),
        &json!({ "f:metadata": { "f:labels": { "f:tier": {} } } })
    );
}

#[test]
fn fields_owned_by_an_updater_are_not_pruned() {
    let cfg = deployment(Some(3), json!({ "app": "web" }), nginx());
    let live = stored(apply(None, &cfg, "kubectl", false, T1).unwrap());
    // A controller adds an annotation and changes nothing the applier owns.
    let mut new = live.clone();
    new["metadata"]["annotations"] = json!({ "deployment.kubernetes.io/revision": "1" });
    let live = update(Some(&live), new, "kube-controller-manager", None, T2);
    let out = apply(
        Some(&live),
        &deployment(Some(3), json!({}), nginx()),
        "kubectl",
        false,
        T3,
    )
    .unwrap();
    assert_eq!(
        out["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
}

#[test]
fn two_appliers_conflict_on_replicas() {
    let live = stored(
        apply(
            None,
            &deployment(Some(3), json!({ "app": "web" }), nginx()),
            "a",
            false,
            T1,
        )
        .unwrap(),
    );
    let b = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web" }, "spec": { "replicas": 5 } });
    let err = apply(Some(&live), &b, "b", false, T2).unwrap_err();
    let ApplyError::Conflict { message, causes } = err.clone() else {
        panic!("{err:?}")
    };
    assert_eq!(
        message,
        "Apply failed with 1 conflict: conflict with \"a\": .spec.replicas"
    );
    assert_eq!(
        causes,
        vec![Cause {
            reason: "FieldManagerConflict",
            field: ".spec.replicas".into(),
            message: "conflict with \"a\"".into()
        }]
    );
    let api: ApiError = err.into();
    assert_eq!(api.code, 409);
    assert_eq!(api.reason, "Conflict");
    assert_eq!(
        api.to_status()["details"]["causes"][0]["reason"],
        "FieldManagerConflict"
    );

    // The same value is no conflict: both own it.
    let same = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web" }, "spec": { "replicas": 3 } });
    let out = apply(Some(&live), &same, "b", false, T2).unwrap();
    assert_eq!(
        fields(&out, "b", "Apply"),
        &json!({ "f:spec": { "f:replicas": {} } })
    );
    assert!(fields(&out, "a", "Apply")["f:spec"]
        .get("f:replicas")
        .is_some());
}

#[test]
fn conflict_with_an_updater_names_its_version() {
    // Created by client-side apply (an Update), then applied server-side.
    let mut created = deployment(Some(3), json!({ "app": "web" }), nginx());
    created = stored(update(None, created, "kubectl-client-side-apply", None, T1));
    let e = entry(&created, "kubectl-client-side-apply", "Update").unwrap();
    assert_eq!(e["apiVersion"], "apps/v1");
    // New maps are owned with their "." marker, as upstream records updates.
    assert_eq!(
        e["fieldsV1"]["f:metadata"]["f:labels"],
        json!({ ".": {}, "f:app": {} })
    );
    let cfg = deployment(
        Some(5),
        json!({ "app": "web" }),
        json!([{ "name": "nginx", "image": "nginx:1.26" }]),
    );
    let err = apply(Some(&created), &cfg, "kubectl", false, T2).unwrap_err();
    let ApplyError::Conflict { message, causes } = err else {
        panic!()
    };
    assert_eq!(causes.len(), 2);
    assert_eq!(
        causes[0].message,
        "conflict with \"kubectl-client-side-apply\" using apps/v1"
    );
    let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
    assert!(fields.contains(&".spec.replicas"));
    assert!(fields.contains(&".spec.template.spec.containers[name=\"nginx\"].image"));
    assert_eq!(
        message,
        "Apply failed with 2 conflicts: conflicts with \"kubectl-client-side-apply\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"nginx\"].image"
    );
}

#[test]
fn force_takes_ownership() {
    let live = stored(
        apply(
            None,
            &deployment(Some(3), json!({ "app": "web" }), nginx()),
            "a",
            false,
            T1,
        )
        .unwrap(),
    );
    let b = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web" }, "spec": { "replicas": 5 } });
    let out = stored(apply(Some(&live), &b, "b", true, T2).unwrap());
    assert_eq!(out["spec"]["replicas"], 5);
    assert!(fields(&out, "a", "Apply")["f:spec"]
        .get("f:replicas")
        .is_none());
    assert_eq!(
        fields(&out, "b", "Apply"),
        &json!({ "f:spec": { "f:replicas": {} } })
    );
    // Entries sorted like upstream: applies first, then by time.
    let managers: Vec<&str> = out["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["a", "b"]);
    // a now conflicts with b.
    let err = apply(
        Some(&out),
        &deployment(Some(3), json!({ "app": "web" }), nginx()),
        "a",
        false,
        T3,
    )
    .unwrap_err();
    assert!(
        matches!(&err, ApplyError::Conflict { message, .. } if message.ends_with("conflict with \"b\": .spec.replicas")),
        "{err:?}"
    );
    // Without replicas, a applies cleanly and replicas stay b's.
    let out = apply(
        Some(&out),
        &deployment(None, json!({ "app": "web" }), nginx()),
        "a",
        false,
        T3,
    )
    .unwrap();
    assert_eq!(out["spec"]["replicas"], 5);
}

#[test]
fn scale_after_apply_conflicts_unless_forced() {
    let cfg = deployment(Some(3), json!({ "app": "web" }), nginx());
    let live = stored(apply(None, &cfg, "kubectl", false, T1).unwrap());
    let mut scaled = live.clone();
    scaled["spec"]["replicas"] = json!(5);
    let live = update(Some(&live), scaled, "kubectl", Some(Subresource::Scale), T2);
    let e = entry(&live, "kubectl", "Update").unwrap();
    assert_eq!(e["subresource"], "scale");
    assert_eq!(e["fieldsV1"], json!({ "f:spec": { "f:replicas": {} } }));
    assert!(fields(&live, "kubectl", "Apply")["f:spec"]
        .get("f:replicas")
        .is_none());

    let err = apply(Some(&live), &cfg, "kubectl", false, T3).unwrap_err();
    let ApplyError::Conflict { message, .. } = err else {
        panic!()
    };
    assert_eq!(
        message,
        "Apply failed with 1 conflict: conflict with \"kubectl\" with subresource \"scale\" using apps/v1: .spec.replicas"
    );
    let out = apply(Some(&live), &cfg, "kubectl", true, T3).unwrap();
    assert_eq!(out["spec"]["replicas"], 3);
    assert!(
        entry(&out, "kubectl", "Update").is_none(),
        "the scale entry lost its only field"
    );
    assert!(fields(&out, "kubectl", "Apply")["f:spec"]
        .get("f:replicas")
        .is_some());
}

#[test]
fn lists_merge_by_key_and_keep_live_order() {
    let live = stored(
        apply(
            None,
            &deployment(
                None,
                json!({}),
                json!([{ "name": "a", "image": "a" }, { "name": "b", "image": "b" }]),
            ),
            "one",
            false,
            T1,
        )
        .unwrap(),
    );
    // Another manager adds container c before b and sets b's env.
    let cfg = deployment(
        None,
        json!({}),
        json!([{ "name": "c", "image": "c" }, { "name": "b", "env": [{ "name": "X", "value": "1" }] }]),
    );
    let out = apply(Some(&live), &cfg, "two", false, T2).unwrap();
    let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "c", "b"]);
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][2]["image"],
        "b"
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][2]["env"][0]["value"],
        "1"
    );
}

#[test]
fn atomic_lists_and_sets() {
    let mut cfg = deployment(
        None,
        json!({}),
        json!([{ "name": "a", "image": "a", "args": ["x", "y"] }]),
    );
    cfg["metadata"]["finalizers"] = json!(["example.com/one"]);
    let live = stored(apply(None, &cfg, "one", false, T1).unwrap());
    let f = fields(&live, "one", "Apply");
    assert_eq!(
        f["f:metadata"]["f:finalizers"],
        json!({ "v:\"example.com/one\"": {} })
    );
    assert_eq!(
        f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"a\"}"]["f:args"],
        json!({})
    );
    // A second manager adds a finalizer: sets merge.
    let two = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web", "finalizers": ["example.com/two"] } });
    let out = apply(Some(&live), &two, "two", false, T2).unwrap();
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["example.com/one", "example.com/two"])
    );
    // Changing an atomic list owned by someone else conflicts on the whole list.
    let args = deployment(None, json!({}), json!([{ "name": "a", "args": ["z"] }]));
    let err = apply(Some(&out), &args, "two", false, T3).unwrap_err();
    let ApplyError::Conflict { causes, .. } = err else {
        panic!()
    };
    assert_eq!(
        causes[0].field,
        ".spec.template.spec.containers[name=\"a\"].args"
    );
}

#[test]
fn patch_strategy_fallback_makes_a_map_list() {
    let mut cfg = deployment(None, json!({}), json!([{ "name": "a", "image": "a" }]));
    cfg["spec"]["template"]["spec"]["volumes"] = json!([{ "name": "data", "emptyDir": {} }]);
    let out = apply(None, &cfg, "one", false, T1).unwrap();
    let f = fields(&out, "one", "Apply");
    assert_eq!(
        f["f:spec"]["f:template"]["f:spec"]["f:volumes"],
        json!({ "k:{\"name\":\"data\"}": { ".": {}, "f:emptyDir": {}, "f:name": {} } })
    );
}

#[test]
fn status_is_ignored_on_the_main_resource() {
    let mut cfg = deployment(Some(1), json!({}), nginx());
    cfg["status"] = json!({ "replicas": 9 });
    let out = apply(None, &cfg, "kubectl", false, T1).unwrap();
    assert!(out.get("status").is_none());
    assert!(fields(&out, "kubectl", "Apply").get("f:status").is_none());

    // Through the status subresource only status is taken and owned.
    let mut live = stored(out);
    live["status"] = json!({ "replicas": 1 });
    let st = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": "web", "labels": { "ignored": "yes" } },
        "spec": { "replicas": 7 },
        "status": { "replicas": 2 },
    });
    let out = apply_to(
        deployments(),
        Some(Subresource::Status),
        Some(&live),
        &st,
        "ctrl",
        false,
        T2,
    )
    .unwrap();
    assert_eq!(out["status"]["replicas"], 2);
    assert_eq!(out["spec"]["replicas"], 1);
    assert!(out["metadata"]["labels"].get("ignored").is_none());
    let e = out["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "ctrl")
        .unwrap();
    assert_eq!(e["subresource"], "status");
    assert_eq!(e["fieldsV1"], json!({ "f:status": { "f:replicas": {} } }));

    // Status updates through the main resource are not tracked either.
    let mut new = live.clone();
    new["status"]["replicas"] = json!(4);
    new["spec"]["replicas"] = json!(2);
    let out = update(Some(&live), new, "editor", None, T3);
    assert_eq!(
        fields(&out, "editor", "Update"),
        &json!({ "f:spec": { "f:replicas": {} } })
    );
}

#[test]
fn invalid_configurations() {
    let no_name = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {} });
    assert!(
        matches!(apply(None, &no_name, "m", false, T1), Err(ApplyError::Invalid(m)) if m.contains("metadata.name"))
    );
    assert!(matches!(
        apply(None, &json!([1]), "m", false, T1),
        Err(ApplyError::Invalid(_))
    ));
    let mut with_mf = deployment(None, json!({}), nginx());
    with_mf["metadata"]["managedFields"] = json!([{ "manager": "x" }]);
    assert!(
        matches!(apply(None, &with_mf, "m", false, T1), Err(ApplyError::Invalid(m)) if m == "metadata.managedFields must be nil")
    );
    let no_key = deployment(None, json!({}), json!([{ "image": "nginx" }]));
    let err = apply(None, &no_key, "m", false, T1).unwrap_err();
    assert_eq!(
        err,
        ApplyError::Invalid(
            "failed to create typed patch object (apps/v1, Kind=Deployment): .spec.template.spec.containers: element 0: associative list with keys has an element that omits key field \"name\" (and doesn't have default value)".into()
        )
    );
    let dup = deployment(None, json!({}), json!([{ "name": "a" }, { "name": "a" }]));
    let err = apply(None, &dup, "m", false, T1).unwrap_err();
    assert!(
        matches!(&err, ApplyError::Invalid(m) if m.ends_with("duplicate entries for key [name=\"a\"]")),
        "{err:?}"
    );
    assert_eq!(ApiError::from(err).code, 400);
}

#[test]
fn updates_move_ownership() {
    let created = stored(update(
        None,
        deployment(Some(2), json!({ "app": "web" }), nginx()),
        "kubectl-create",
        None,
        T1,
    ));
    let f = fields(&created, "kubectl-create", "Update");
    assert!(f["f:spec"].get("f:replicas").is_some());
    assert!(f.get("f:apiVersion").is_none() && f.get("f:kind").is_none());
    assert!(f["f:metadata"].get("f:name").is_none() && f["f:metadata"].get(".").is_none());
    let mut new = created.clone();
    new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.26");
    let out = update(Some(&created), new.clone(), "kubectl-set", None, T2);
    assert_eq!(
        fields(&out, "kubectl-set", "Update"),
        &json!({ "f:spec": { "f:template": { "f:spec": { "f:containers": { "k:{\"name\":\"nginx\"}": { "f:image": {} } } } } } })
    );
    let old_owner = fields(&out, "kubectl-create", "Update");
    assert!(
        old_owner["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"]
            .get("f:image")
            .is_none()
    );
    // A no-op update records nothing for a new manager.
    let again = update(Some(&out), out.clone(), "someone", None, T3);
    assert!(entry(&again, "someone", "Update").is_none());
    assert_eq!(
        again["metadata"]["managedFields"],
        out["metadata"]["managedFields"]
    );
    // Clients may reset managed fields with [{}].
    let mut reset = out.clone();
    reset["metadata"]["managedFields"] = json!([{}]);
    reset["metadata"]["labels"]["x"] = json!("y");
    let out = update(Some(&out), reset, "kubectl-edit", None, T3);
    let mf = out["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(
        mf[0]["fieldsV1"],
        json!({ "f:metadata": { "f:labels": { "f:x": {} } } })
    );
}

#[test]
fn first_apply_to_an_untracked_object_conflicts_with_before_first_apply() {
    let live = stored(deployment(Some(3), json!({ "app": "web" }), nginx()));
    let err = apply(
        Some(&live),
        &deployment(Some(4), json!({ "app": "web" }), nginx()),
        "kubectl",
        false,
        T1,
    )
    .unwrap_err();
    let ApplyError::Conflict { message, .. } = err else {
        panic!()
    };
    assert_eq!(message, "Apply failed with 1 conflict: conflict with \"before-first-apply\" using apps/v1: .spec.replicas");
    let out = apply(
        Some(&live),
        &deployment(Some(3), json!({ "app": "web" }), nginx()),
        "kubectl",
        false,
        T1,
    )
    .unwrap();
    assert!(entry(&out, "before-first-apply", "Update").is_some());
}

#[test]
fn update_managers_are_capped() {
    let mut obj = stored(update(
        None,
        deployment(Some(1), json!({}), nginx()),
        "creator",
        None,
        T1,
    ));
    for i in 0..12 {
        let mut new = obj.clone();
        new["metadata"]["labels"][format!("l{i}")] = json!("v");
        obj = update(
            Some(&obj),
            new,
            &format!("m{i:02}"),
            None,
            &format!("2025-01-01T01:{i:02}:00Z"),
        );
    }
    let mf = obj["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(mf.len(), 10);
    let ancient = mf
        .iter()
        .find(|e| e["manager"] == "ancient-changes")
        .expect("bucket");
    assert!(ancient["fieldsV1"]["f:spec"].is_object());
    assert!(mf.iter().any(|e| e["manager"] == "m11"));
}

#[test]
fn fields_v1_round_trips() {
    let v = json!({
        ".": {},
        "f:metadata": { "f:labels": { ".": {}, "f:app": {}, "f:tier": {} }, "f:finalizers": { "v:\"a\"": {}, "v:\"b\"": {} } },
        "f:spec": { "f:containers": {
            "k:{\"name\":\"nginx\"}": {
                ".": {},
                "f:image": {},
                "f:ports": { "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": { ".": {}, "f:containerPort": {} } },
            },
        } },
        "i:3": {},
    });
    let set = FieldSet::from_fields_v1(&v).unwrap();
    assert_eq!(set.to_fields_v1(), v);
    assert!(set.contains(&[
        PathElement::Field("spec".into()),
        PathElement::Field("containers".into()),
        PathElement::Key("{\"name\":\"nginx\"}".into()),
    ]));
    // Keys are canonicalised (sorted, compact) when decoded.
    let unsorted = json!({ "k:{\"protocol\": \"TCP\", \"containerPort\": 80}": {} });
    let set = FieldSet::from_fields_v1(&unsorted).unwrap();
    assert_eq!(
        set.to_fields_v1(),
        json!({ "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {} })
    );
    let path = &set.paths()[0];
    assert_eq!(
        fieldset::path_string(path),
        "[containerPort=80,protocol=\"TCP\"]"
    );
    assert!(FieldSet::from_fields_v1(&json!({ "x:y": {} })).is_err());
    assert!(FieldSet::from_fields_v1(&json!([])).is_err());
}

#[test]
fn public_api_uses_the_served_schemas() {
    let rt = deployments();
    let cfg = deployment(Some(3), json!({ "app": "web" }), nginx());
    let out = server_side_apply(None, &cfg, rt, "kubectl", false, T1).unwrap();
    assert_eq!(
        fields(&out, "kubectl", "Apply")["f:spec"]["f:selector"],
        json!({})
    );
    let mut new = stored(out.clone());
    new["spec"]["replicas"] = json!(4);
    let old = stored(out);
    track_update_subresource(
        Some(&old),
        &mut new,
        rt,
        Some(Subresource::Scale),
        "hpa",
        T2,
    );
    assert_eq!(
        entry(&new, "hpa", "Update").unwrap()["subresource"],
        "scale"
    );
    let err = server_side_apply(Some(&new), &cfg, rt, "kubectl", false, T3).unwrap_err();
    assert!(matches!(err, ApplyError::Conflict { .. }));
    // With FIELD_META's container metadata, containers are owned by key.
    if crate::patch::strategic::field_meta("io.k8s.api.core.v1.PodSpec", "containers")
        .is_some_and(|m| m.list_type == "map")
    {
        let f = fields(&new, "kubectl", "Apply");
        assert!(f["f:spec"]["f:template"]["f:spec"]["f:containers"]
            .get("k:{\"name\":\"nginx\"}")
            .is_some());
    }
}

#[test]
fn pods_apply() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "p" },
        "spec": { "containers": [{ "name": "c", "image": "i", "resources": { "limits": { "cpu": "1" } } }] },
    });
    let out = apply_to(pods(), None, None, &pod, "m", false, T1).unwrap();
    let f = fields(&out, "m", "Apply");
    assert_eq!(
        f["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["f:resources"],
        json!({ "f:limits": { "f:cpu": {} } })
    );
}

fn arb_json() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        "apiVersion",
        "kind",
        "metadata",
        "name",
        "labels",
        "app",
        "spec",
        "replicas",
        "template",
        "containers",
        "image",
        "ports",
        "containerPort",
        "protocol",
        "env",
        "value",
        "status",
        "finalizers",
        "selector",
        "managedFields",
        "args",
        "volumes",
        "x",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..100).prop_map(|n| json!(n)),
        "[a-c]{0,2}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..5).prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn apply_and_track_never_panic(live in arb_json(), cfg in arb_json(), named in any::<bool>(), force in any::<bool>()) {
        let mut cfg = cfg;
        if named {
            if let Some(o) = cfg.as_object_mut() {
                o.insert("metadata".into(), json!({ "name": "n", "labels": { "a": "b" } }));
            }
        }
        for rt in [deployments(), pods()] {
            let first = apply_to(rt, None, Some(&live), &cfg, "m1", force, T1);
            if let Ok(obj) = &first {
                let _ = apply_to(rt, None, Some(obj), &cfg, "m2", force, T2);
                let _ = apply_to(rt, None, Some(obj), &json!({ "metadata": { "name": "n" } }), "m1", force, T2);
            }
            let _ = apply_to(rt, None, None, &cfg, "m1", force, T1);
            let _ = apply_to(rt, Some(Subresource::Status), Some(&live), &cfg, "m1", force, T1);
            let mut new = cfg.clone();
            let op = Op { rt, subresource: None, manager: "u", now: T1 };
            track_with(schemas(), Some(&live), &mut new, &op);
        }
    }
}

fn named(cfg: Value) -> Value {
    let mut cfg = match cfg {
        Value::Object(o) => Value::Object(o),
        _ => json!({}),
    };
    let md = cfg
        .as_object_mut()
        .unwrap()
        .entry("metadata")
        .or_insert_with(|| json!({}));
    if !md.is_object() {
        *md = json!({});
    }
    md["name"] = json!("n");
    cfg
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn reapplying_is_idempotent(cfg in arb_json()) {
        let cfg = named(cfg);
        for rt in [deployments(), pods()] {
            if let Ok(out) = apply_to(rt, None, None, &cfg, "m", false, T1) {
                let mut again = apply_to(rt, None, Some(&out), &cfg, "m", false, T2).unwrap();
                keep_timestamps_if_unchanged(&out, &mut again);
                prop_assert_eq!(&again, &out);
            }
        }
    }

    #[test]
    fn field_sets_round_trip_through_fields_v1(cfg in arb_json()) {
        let s = schemas();
        let root = s.named(deployments().schema_name);
        let mut set = FieldSet::new();
        s.field_set(&cfg, root, &mut Vec::new(), &mut set);
        let encoded = set.to_fields_v1();
        prop_assert_eq!(FieldSet::from_fields_v1(&encoded).unwrap(), set);
    }
}
