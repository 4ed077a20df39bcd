use super::*;
use proptest::prelude::*;
use serde_json::json;

fn rt(group: &str, kind: &str) -> &'static ResourceType {
    REGISTRY
        .iter()
        .find(|r| r.group == group && r.kind == kind)
        .unwrap()
}

fn smp(kind: &str, doc: Value, patch: Value) -> Value {
    let group = match kind {
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "ControllerRevision" => "apps",
        "PodDisruptionBudget" => "policy",
        _ => "",
    };
    strategic_merge_patch(&doc, &patch, rt(group, kind))
        .unwrap_or_else(|e| panic!("patch failed: {e}"))
}

fn smp_err(kind: &str, doc: Value, patch: Value) -> String {
    let group = if kind == "Deployment" { "apps" } else { "" };
    match strategic_merge_patch(&doc, &patch, rt(group, kind)) {
        Err(PatchError::BadPatch(m)) => m,
        other => panic!("expected BadPatch, got {other:?}"),
    }
}

fn pod(containers: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}})
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "front"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "web",
                        "image": "nginx:1.24",
                        "args": ["-a", "-b"],
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                        "ports": [{"containerPort": 80, "protocol": "TCP"}]
                    }],
                    "tolerations": [{"key": "k1", "operator": "Exists", "effect": "NoSchedule"}],
                    "volumes": [{"name": "data", "emptyDir": {}}]
                }
            }
        }
    })
}

// --- maps -------------------------------------------------------------------

#[test]
fn maps_merge_recursively_and_null_deletes() {
    let out = smp(
        "Deployment",
        deployment(),
        json!({"metadata": {"labels": {"tier": null, "env": "prod"}, "annotations": {"a": "b"}}, "spec": {"replicas": 5}}),
    );
    assert_eq!(
        out["metadata"]["labels"],
        json!({"app": "web", "env": "prod"})
    );
    assert_eq!(out["metadata"]["annotations"], json!({"a": "b"}));
    assert_eq!(out["spec"]["replicas"], 5);
    assert_eq!(out["spec"]["template"], deployment()["spec"]["template"]);
    // Deleting something absent is fine; nulls inside new values are dropped.
    let out = smp(
        "Deployment",
        deployment(),
        json!({"metadata": {"nope": null, "annotations": {"x": null, "y": "1"}}}),
    );
    assert_eq!(out["metadata"]["annotations"], json!({"y": "1"}));
    assert!(out["metadata"].get("nope").is_none());
}

#[test]
fn empty_patch_is_identity() {
    assert_eq!(smp("Deployment", deployment(), json!({})), deployment());
}

#[test]
fn key_order_is_kept() {
    let out = smp(
        "Deployment",
        deployment(),
        json!({"metadata": {"labels": {"app": null}}, "apiVersion": "apps/v1"}),
    );
    let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["apiVersion", "kind", "metadata", "spec"]);
    let keys: Vec<&String> = out["metadata"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["name", "namespace", "labels"]);
}

#[test]
fn patch_replace_directive_in_map() {
    let out = smp(
        "Deployment",
        deployment(),
        json!({"metadata": {"labels": {"$patch": "replace", "only": "me"}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"only": "me"}));
    // Nested directives inside the replacement are applied too.
    let out = smp(
        "Deployment",
        deployment(),
        json!({"spec": {"template": {"spec": {"$patch": "replace", "containers": [{"name": "x", "image": "y", "$patch": "merge"}]}}}}),
    );
    assert_eq!(
        out["spec"]["template"]["spec"],
        json!({"containers": [{"name": "x", "image": "y"}]})
    );
}

#[test]
fn patch_delete_directive_in_map() {
    let out = smp(
        "Deployment",
        deployment(),
        json!({"spec": {"strategy": {"$patch": "delete"}}}),
    );
    // Upstream leaves an empty map behind.
    assert_eq!(out["spec"]["strategy"], json!({}));
    // Where there was nothing, nothing is added.
    let out = smp(
        "Deployment",
        deployment(),
        json!({"spec": {"template": {"spec": {"securityContext": {"$patch": "delete"}}}}}),
    );
    assert!(out["spec"]["template"]["spec"]
        .get("securityContext")
        .is_none());
}

#[test]
fn patch_merge_directive_is_the_default() {
    let out = smp(
        "Deployment",
        deployment(),
        json!({"metadata": {"labels": {"$patch": "merge", "x": "1"}}}),
    );
    assert_eq!(
        out["metadata"]["labels"],
        json!({"app": "web", "tier": "front", "x": "1"})
    );
}

#[test]
fn replace_strategy_field_replaces_map() {
    // PodDisruptionBudgetSpec.selector has patchStrategy "replace".
    let pdb = json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "x"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"a": "1"}}}});
    let out = smp(
        "PodDisruptionBudget",
        pdb,
        json!({"spec": {"selector": {"matchLabels": {"b": "2"}}}}),
    );
    assert_eq!(
        out["spec"],
        json!({"minAvailable": 1, "selector": {"matchLabels": {"b": "2"}}})
    );
}

// --- $retainKeys ------------------------------------------------------------

#[test]
fn retain_keys_switches_rolling_update_to_recreate() {
    // Kubernetes docs: "Use strategic merge patch to update a Deployment
    // using the retainKeys strategy".
    let out = smp(
        "Deployment",
        deployment(),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
    );
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    // Without the directive rollingUpdate stays (and validation would reject it).
    let out = smp(
        "Deployment",
        deployment(),
        json!({"spec": {"strategy": {"type": "Recreate"}}}),
    );
    assert_eq!(out["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
}

#[test]
fn retain_keys_in_merge_list_items() {
    // PodSpec.volumes is "merge,retainKeys": switching a volume's source.
    let out = smp(
        "Deployment",
        deployment(),
        json!({"spec": {"template": {"spec": {
            "$setElementOrder/volumes": [{"name": "data"}],
            "volumes": [{"$retainKeys": ["configMap", "name"], "name": "data", "configMap": {"name": "cm"}}]
        }}}}),
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["volumes"],
        json!([{"name": "data", "configMap": {"name": "cm"}}])
    );
}

#[test]
fn retain_keys_on_new_value_is_stripped() {
    let mut d = deployment();
    d["spec"].as_object_mut().unwrap().shift_remove("strategy");
    let out = smp(
        "Deployment",
        d,
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
    );
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn retain_keys_errors() {
    let e = smp_err(
        "Deployment",
        deployment(),
        json!({"spec": {"strategy": {"$retainKeys": "type", "type": "Recreate"}}}),
    );
    assert!(e.contains("invalid patch format of retainKeys"), "{e}");
    let e = smp_err(
        "Deployment",
        deployment(),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": {}}}}),
    );
    assert!(
        e.contains("invalid patch format of retainKeys") && e.contains("rollingUpdate"),
        "{e}"
    );
    // Keys set to null need not be listed.
    let out = smp(
        "Deployment",
        deployment(),
        json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}),
    );
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
}

// --- lists ------------------------------------------------------------------

#[test]
fn atomic_lists_are_replaced() {
    // Kubernetes docs: tolerations have no patch strategy; a patch replaces them.
    let out = smp(
        "Deployment",
        deployment(),
        json!({"spec": {"template": {"spec": {"tolerations": [{"effect": "NoSchedule", "key": "disktype", "value": "ssd"}]}}}}),
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["tolerations"],
        json!([{"effect": "NoSchedule", "key": "disktype", "value": "ssd"}])
    );
    let out = smp(
        "Deployment",
        deployment(),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "args": ["-c"]}]}}}}),
    );
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["-c"])
    );
}

#[test]
fn containers_merge_by_name() {
    // Kubernetes docs: "Use a strategic merge patch to update a Deployment":
    // the new container is added, the existing one kept, new one first.
    let out = smp(
        "Deployment",
        deployment(),
        json!({"spec": {"template": {"spec": {"containers": [{"name": "patch-demo-ctr-2", "image": "redis"}]}}}}),
    );
    let containers = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(containers), ["patch-demo-ctr-2", "web"]);
    assert_eq!(
        containers[1],
        deployment()["spec"]["template"]["spec"]["containers"][0]
    );
}

#[test]
fn kubectl_set_image() {
    let out = smp(
        "Deployment",
        deployment(),
        json!({"spec": {"template": {"spec": {"containers": [{"image": "nginx:1.25", "name": "web"}]}}}}),
    );
    let mut want = deployment();
    want["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.25");
    assert_eq!(out, want);
}

#[test]
fn kubectl_rollout_restart() {
    let out = smp(
        "Deployment",
        deployment(),
        json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2024-05-01T10:00:00Z"}}}}}),
    );
    assert_eq!(
        out["spec"]["template"]["metadata"],
        json!({"labels": {"app": "web"}, "annotations": {"kubectl.kubernetes.io/restartedAt": "2024-05-01T10:00:00Z"}})
    );
}

#[test]
fn kubectl_cordon() {
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {"podCIDR": "10.0.0.0/24"}});
    let out = smp("Node", node, json!({"spec": {"unschedulable": true}}));
    assert_eq!(
        out["spec"],
        json!({"podCIDR": "10.0.0.0/24", "unschedulable": true})
    );
}

#[test]
fn nested_merge_lists_env_and_ports() {
    let out = smp(
        "Deployment",
        deployment(),
        json!({"spec": {"template": {"spec": {"containers": [{
            "name": "web",
            "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
            "ports": [{"containerPort": 443}]
        }]}}}}),
    );
    let c = &out["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "3"}, {"name": "C", "value": "4"}])
    );
    assert_eq!(
        c["ports"],
        json!([{"containerPort": 443}, {"containerPort": 80, "protocol": "TCP"}])
    );
}

#[test]
fn service_ports_merge_by_port() {
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}], "selector": {"app": "x"}}});
    let out = smp(
        "Service",
        svc,
        json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}, {"name": "https", "port": 443}]}}),
    );
    assert_eq!(
        out["spec"]["ports"],
        json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 9090}, {"name": "https", "port": 443}])
    );
}

#[test]
fn status_conditions_merge_by_type_in_place() {
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "status": {
        "conditions": [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "DiskPressure", "status": "False"},
            {"type": "Ready", "status": "False"}
        ],
        "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]
    }});
    let out = smp(
        "Node",
        node,
        json!({"status": {"conditions": [{"type": "Ready", "status": "True"}], "addresses": [{"type": "Hostname", "address": "n1"}]}}),
    );
    assert_eq!(
        out["status"]["conditions"],
        json!([
            {"type": "MemoryPressure", "status": "False"},
            {"type": "DiskPressure", "status": "False"},
            {"type": "Ready", "status": "True"}
        ])
    );
    assert_eq!(
        out["status"]["addresses"],
        json!([{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.1"}])
    );
}

#[test]
fn patch_delete_directive_in_list() {
    let p = pod(
        json!([{"name": "a", "image": "x"}, {"name": "b", "image": "y"}, {"name": "c", "image": "z"}]),
    );
    let out = smp(
        "Pod",
        p.clone(),
        json!({"spec": {"containers": [{"name": "b", "$patch": "delete"}]}}),
    );
    assert_eq!(names(&out["spec"]["containers"]), ["a", "c"]);
    // Deleting an absent item is a no-op; the merge key is required.
    let out = smp(
        "Pod",
        p.clone(),
        json!({"spec": {"containers": [{"name": "q", "$patch": "delete"}]}}),
    );
    assert_eq!(names(&out["spec"]["containers"]), ["a", "b", "c"]);
    let e = smp_err(
        "Pod",
        p,
        json!({"spec": {"containers": [{"$patch": "delete"}]}}),
    );
    assert!(
        e.contains("does not contain declared merge key: name"),
        "{e}"
    );
}

#[test]
fn patch_replace_directive_in_list() {
    let p = pod(json!([{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]));
    let out = smp(
        "Pod",
        p,
        json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "z", "env": [{"name": "E", "value": "v", "$patch": "merge"}]}]}}),
    );
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "only", "image": "z", "env": [{"name": "E", "value": "v"}]}])
    );
}

#[test]
fn primitive_merge_list_union_and_delete() {
    let doc = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "finalizers": ["a", "b"]}});
    // Upstream puts patch items not yet present before the others.
    let out = smp(
        "Pod",
        doc.clone(),
        json!({"metadata": {"finalizers": ["c", "a"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
    let out = smp(
        "Pod",
        doc.clone(),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a", "zz"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
    // kubectl apply shape: order + additions + deletions.
    let out = smp(
        "Pod",
        doc.clone(),
        json!({"metadata": {
            "$setElementOrder/finalizers": ["b", "c"],
            "finalizers": ["c"],
            "$deleteFromPrimitiveList/finalizers": ["a"]
        }}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
    // Deleting from an absent list does nothing.
    let out = smp(
        "Pod",
        pod(json!([])),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
    );
    assert!(out["metadata"].get("finalizers").is_none());
    let e = smp_err(
        "Pod",
        doc,
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}),
    );
    assert!(e.contains("invalid patch format of primitive list"), "{e}");
}

// --- $setElementOrder (cases from upstream's patch tests, on real types) ----

#[test]
fn set_element_order_primitives_with_server_only_items() {
    // "add an item in a list of primitives and preserve order"
    let doc = json!({"metadata": {"name": "p", "finalizers": ["1", "4", "2"]}});
    let out = smp(
        "Pod",
        doc,
        json!({"metadata": {"$setElementOrder/finalizers": ["3", "1", "2"], "finalizers": ["3"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["3", "1", "4", "2"]));
}

#[test]
fn set_element_order_with_server_only_items() {
    let cases: &[(&[&str], &[&str], &[&str])] = &[
        // (current, $setElementOrder, result): "set elements order in a list with server-only items" 1..3
        (
            &["1", "3", "4", "2", "9"],
            &["4", "2", "3", "1"],
            &["4", "2", "3", "1", "9"],
        ),
        (
            &["1", "2", "9", "3", "4"],
            &["2", "1", "4", "3"],
            &["2", "1", "9", "4", "3"],
        ),
        (
            &["1", "2", "7", "9", "8", "3", "4"],
            &["2", "1", "4", "3"],
            &["2", "1", "7", "9", "8", "4", "3"],
        ),
    ];
    for (current, order, result) in cases {
        let containers: Vec<Value> = current.iter().map(|n| json!({"name": n})).collect();
        let order: Vec<Value> = order.iter().map(|n| json!({"name": n})).collect();
        let out = smp(
            "Pod",
            pod(json!(containers)),
            json!({"spec": {"$setElementOrder/containers": order}}),
        );
        assert_eq!(
            names(&out["spec"]["containers"]),
            *result,
            "current {current:?}"
        );
    }
}

#[test]
fn set_element_order_with_duplicates() {
    // "behavior of set element order for a merging list with duplicate"
    let p = pod(
        json!([{"name": "1"}, {"name": "2", "image": "dup1"}, {"name": "3"}, {"name": "2", "image": "dup2"}, {"name": "4"}]),
    );
    let out = smp(
        "Pod",
        p,
        json!({"spec": {"$setElementOrder/containers": [{"name": "2"}, {"name": "1"}, {"name": "4"}, {"name": "3"}, {"name": "2"}]}}),
    );
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "2", "image": "dup1"}, {"name": "2", "image": "dup2"}, {"name": "1"}, {"name": "4"}, {"name": "3"}])
    );
}

#[test]
fn kubectl_apply_three_way_patch() {
    // What client-side `kubectl apply` sends after the config dropped the
    // sidecar, changed the image, replaced env A by C and reordered.
    let mut d = deployment();
    d["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidecar", "image": "envoy"}));
    let patch = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"}},
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}],
            "containers": [
                {
                    "$setElementOrder/env": [{"name": "C"}, {"name": "B"}],
                    "env": [{"name": "C", "value": "3"}, {"$patch": "delete", "name": "A"}],
                    "image": "nginx:1.25",
                    "name": "web"
                },
                {"$patch": "delete", "name": "sidecar"}
            ]
        }}}
    });
    let out = smp("Deployment", d, patch);
    let containers = &out["spec"]["template"]["spec"]["containers"];
    assert_eq!(names(containers), ["web"]);
    assert_eq!(containers[0]["image"], "nginx:1.25");
    assert_eq!(
        containers[0]["env"],
        json!([{"name": "C", "value": "3"}, {"name": "B", "value": "2"}])
    );
    assert_eq!(
        containers[0]["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}])
    );
    assert_eq!(
        out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
        "{...}"
    );
}

#[test]
fn set_element_order_errors() {
    let p = pod(json!([{"name": "a"}, {"name": "b"}]));
    let e = smp_err(
        "Pod",
        p.clone(),
        json!({"spec": {"$setElementOrder/containers": "a"}}),
    );
    assert!(
        e.contains("invalid patch format of setElementOrder list"),
        "{e}"
    );
    let e = smp_err(
        "Pod",
        p.clone(),
        json!({"spec": {"$setElementOrder/containers": [{"name": "a"}], "containers": [{"name": "b", "image": "x"}]}}),
    );
    assert!(
        e.contains("doesn't match $setElementOrder/containers"),
        "{e}"
    );
    let e = smp_err(
        "Pod",
        p.clone(),
        json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}], "containers": [{"name": "a"}, {"name": "b"}]}}),
    );
    assert!(e.contains("doesn't match"), "{e}");
    let e = smp_err(
        "Pod",
        p,
        json!({"spec": {"$setElementOrder/containers": [{"image": "a"}]}}),
    );
    assert!(
        e.contains("does not contain declared merge key: name"),
        "{e}"
    );
}

// --- malformed patches ------------------------------------------------------

#[test]
fn malformed_patches_are_bad_requests() {
    let p = pod(json!([{"name": "a", "image": "x"}]));
    let cases: &[(Value, &str)] = &[
        (
            json!({"metadata": {"$patch": "explode"}}),
            "unknown patch type: \"explode\" in map",
        ),
        (
            json!({"metadata": {"$patch": 1}}),
            "unknown patch type: 1 in map",
        ),
        (
            json!({"spec": {"containers": [{"name": "a", "$patch": "nope"}]}}),
            "unknown patch type: \"nope\"",
        ),
        (
            json!({"spec": {"$frobnicate": 1}}),
            "unknown patch directive or field \"$frobnicate\"",
        ),
        (
            json!({"spec": {"containers": [{"image": "y"}]}}),
            "does not contain declared merge key: name",
        ),
        (
            json!({"spec": {"containers": [{"name": "a"}, "b"]}}),
            "list element types are not identical",
        ),
        (
            json!({"spec": {"containers": [["a"]]}}),
            "lists of lists are not supported",
        ),
        (
            json!({"spec": {"containers": [{"name": "a", "$deleteFromPrimitiveList/args": [{}]}]}}),
            "must list scalars",
        ),
    ];
    for (patch, want) in cases {
        let e = smp_err("Pod", p.clone(), patch.clone());
        assert!(e.contains(want), "{patch}:\n got  {e}\n want {want}");
    }
    for patch in [json!([]), json!("x"), json!(null), json!(1)] {
        let e = smp_err("Pod", p.clone(), patch);
        assert_eq!(e, "strategic merge patch must be a JSON object");
    }
}

#[test]
fn type_changes_take_the_patch_value() {
    let p = pod(json!([{"name": "a", "image": "x"}]));
    let out = smp(
        "Pod",
        p.clone(),
        json!({"spec": {"containers": {"weird": true}}}),
    );
    assert_eq!(out["spec"]["containers"], json!({"weird": true}));
    let out = smp(
        "Pod",
        p,
        json!({"metadata": {"name": {"x": {"$patch": "delete"}, "y": 1}}}),
    );
    assert_eq!(out["metadata"]["name"], json!({"y": 1}));
}

#[test]
fn free_form_values_keep_dollar_keys() {
    // ControllerRevision.data is a RawExtension: anything goes.
    let cr = json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "r"}, "revision": 1, "data": {"a": 1}});
    let out = smp(
        "ControllerRevision",
        cr,
        json!({"data": {"$ref": "x", "b": [1, 2]}}),
    );
    assert_eq!(out["data"], json!({"a": 1, "$ref": "x", "b": [1, 2]}));
}

// --- metadata table and type index --------------------------------------------

#[test]
fn field_meta_refers_to_real_fields() {
    for m in FIELD_META {
        let Some(&i) = INDEX.by_name.get(m.owner) else {
            panic!("{}: unknown type", m.owner)
        };
        let f = INDEX.structs[i]
            .fields
            .get(m.field)
            .unwrap_or_else(|| panic!("{}.{}: no such field", m.owner, m.field));
        assert_eq!(f.meta, Some(m));
        if m.merges() {
            assert!(
                matches!(f.ty, Ty::List(_)),
                "{}.{}: merge strategy on a non-list",
                m.owner,
                m.field
            );
        }
        if !m.list_type.is_empty() {
            assert!(
                matches!(m.list_type, "map" | "set" | "atomic"),
                "{}.{}",
                m.owner,
                m.field
            );
            assert!(
                matches!(f.ty, Ty::List(_)),
                "{}.{}: list type on a non-list",
                m.owner,
                m.field
            );
        }
        assert_eq!(
            m.list_type == "map",
            !m.list_map_keys.is_empty(),
            "{}.{}",
            m.owner,
            m.field
        );
    }
    let c = field_meta("io.k8s.api.core.v1.PodSpec", "containers").unwrap();
    assert_eq!(
        (c.patch_strategy, c.merge_key, c.list_type, c.list_map_keys),
        ("merge", "name", "map", &["name"][..])
    );
    let p = field_meta("io.k8s.api.core.v1.ServiceSpec", "ports").unwrap();
    assert_eq!(
        (p.merge_key, p.list_map_keys),
        ("port", &["port", "protocol"][..])
    );
    let t = field_meta("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints").unwrap();
    assert_eq!(
        (t.merge_key, t.list_map_keys),
        ("topologyKey", &["topologyKey", "whenUnsatisfiable"][..])
    );
    assert!(field_meta("io.k8s.api.core.v1.EphemeralContainer", "env")
        .unwrap()
        .merges());
    assert!(field_meta("io.k8s.api.core.v1.PodSpec", "volumes")
        .unwrap()
        .retains_keys());
    assert!(field_meta("io.k8s.api.apps.v1.DeploymentSpec", "strategy")
        .unwrap()
        .retains_keys());
    assert!(!field_meta("io.k8s.api.core.v1.PodSpec", "tolerations")
        .unwrap()
        .merges());
    assert_eq!(
        field_meta(
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "finalizers"
        )
        .unwrap()
        .list_type,
        "set"
    );
    assert_eq!(
        field_meta(
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "ownerReferences"
        )
        .unwrap()
        .merge_key,
        "uid"
    );
}

#[test]
fn field_type_walks_the_schemas() {
    assert_eq!(
        field_type("io.k8s.api.apps.v1.Deployment", "spec"),
        Some("io.k8s.api.apps.v1.DeploymentSpec")
    );
    assert_eq!(
        field_type("io.k8s.api.core.v1.PodSpec", "containers"),
        Some("io.k8s.api.core.v1.Container")
    );
    assert_eq!(
        field_type("io.k8s.api.core.v1.Container", "env"),
        Some("io.k8s.api.core.v1.EnvVar")
    );
    assert_eq!(field_type("io.k8s.api.core.v1.Container", "name"), None);
    assert_eq!(
        field_type("io.k8s.api.core.v1.Container", "resources"),
        Some("io.k8s.api.core.v1.ResourceRequirements")
    );
    assert_eq!(
        field_type("io.k8s.api.core.v1.ResourceRequirements", "limits"),
        None
    );
    assert_eq!(
        field_type("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "labels"),
        None
    );
    assert_eq!(field_type("io.k8s.api.core.v1.Container", "nope"), None);
    assert_eq!(field_type("nope", "spec"), None);
}

#[test]
fn every_served_kind_has_a_root_type() {
    for r in REGISTRY {
        assert!(
            INDEX.by_name.contains_key(r.schema_name),
            "{}",
            r.schema_name
        );
    }
    // Walk Deployment → containers[] → env[] and check the metadata found.
    let root = Ty::Struct(INDEX.by_name["io.k8s.api.apps.v1.Deployment"]);
    let (spec, _) = root.field("spec");
    let (template, _) = spec.field("template");
    let (pod_spec, _) = template.field("spec");
    let (containers, meta) = pod_spec.field("containers");
    assert_eq!(meta.unwrap().merge_key, "name");
    let (env, meta) = containers.elem().field("env");
    assert_eq!(meta.unwrap().merge_key, "name");
    assert_eq!(env.elem().name(), "io.k8s.api.core.v1.EnvVar");
    let (labels, _) = template.field("metadata").0.field("labels");
    assert!(matches!(labels, Ty::Map(_)));
}

#[test]
fn typical_patch_is_cheap() {
    let d = deployment();
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"image": "nginx:1.25", "name": "web"}]}}}});
    let r = rt("apps", "Deployment");
    let t = std::time::Instant::now();
    strategic_merge_patch(&d, &patch, r).unwrap(); // builds the index (unless another test did)
    eprintln!("first strategic merge patch: {:?}", t.elapsed());
    let start = std::time::Instant::now();
    for _ in 0..1000 {
        strategic_merge_patch(&d, &patch, r).unwrap();
    }
    let per_patch = start.elapsed() / 1000;
    eprintln!("strategic merge patch: {per_patch:?} per patch");
    // Generous for unoptimised builds on a busy machine; a few µs in release.
    assert!(
        per_patch < std::time::Duration::from_millis(2),
        "{per_patch:?} per patch"
    );
}

// --- properties ----------------------------------------------------------------

fn arb_key() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "metadata",
        "spec",
        "status",
        "template",
        "containers",
        "name",
        "image",
        "env",
        "value",
        "finalizers",
        "labels",
        "annotations",
        "ports",
        "containerPort",
        "protocol",
        "tolerations",
        "strategy",
        "type",
        "rollingUpdate",
        "volumes",
        "emptyDir",
        "selector",
        "matchLabels",
        "x",
        "$patch",
        "$retainKeys",
        "$setElementOrder/containers",
        "$setElementOrder/finalizers",
        "$setElementOrder/env",
        "$deleteFromPrimitiveList/finalizers",
        "$deleteFromPrimitiveList/args",
        "args",
    ])
    .prop_map(str::to_string)
}

fn arb_json(with_directives: bool) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-3i64..3).prop_map(Value::from),
        prop::sample::select(vec!["replace", "delete", "merge", "web", "name", "a", ""])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 48, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((arb_key(), inner), 0..5).prop_map(move |kv| {
                Value::Object(
                    kv.into_iter()
                        .filter(|(k, _)| with_directives || !k.starts_with('$'))
                        .collect(),
                )
            }),
        ]
    })
}

fn has_dollar_key(v: &Value) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| k.starts_with('$') || has_dollar_key(v)),
        Value::Array(a) => a.iter().any(has_dollar_key),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn empty_patch_is_identity_for_any_document(doc in arb_json(false)) {
        for kind in ["Deployment", "Pod"] {
            let group = if kind == "Deployment" { "apps" } else { "" };
            let out = strategic_merge_patch(&doc, &json!({}), rt(group, kind)).unwrap();
            if doc.is_object() {
                prop_assert_eq!(&out, &doc);
            } else {
                prop_assert_eq!(&out, &json!({}));
            }
        }
    }

    #[test]
    fn never_panics_and_leaves_no_directives(patch in arb_json(true), doc in arb_json(false)) {
        for (kind, base) in [("Deployment", deployment()), ("Pod", pod(json!([{"name": "web", "image": "x"}])))] {
            let group = if kind == "Deployment" { "apps" } else { "" };
            for d in [&base, &doc] {
                match strategic_merge_patch(d, &patch, rt(group, kind)) {
                    Ok(out) => prop_assert!(!has_dollar_key(&out), "{} left directives: {}", patch, out),
                    Err(PatchError::BadPatch(_)) => {}
                    Err(e) => prop_assert!(false, "unexpected error {e:?}"),
                }
            }
        }
    }

    #[test]
    fn patch_without_directives_sets_scalar_fields(image in "[a-z]{1,8}", replicas in 0i64..100) {
        let out = smp("Deployment", deployment(), json!({"spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "web", "image": image.clone()}]}}}}));
        prop_assert_eq!(&out["spec"]["replicas"], &json!(replicas));
        prop_assert_eq!(&out["spec"]["template"]["spec"]["containers"][0]["image"], &json!(image));
    }
}
