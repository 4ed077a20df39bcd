//! Per-kind behaviour: defaulting, validation, table columns and field
//! selectors, as upstream's registry strategies do it.
//!
//! Every hook takes untyped JSON and never panics, whatever it is given:
//! fields of the wrong type are reported by `validate` (or left alone by
//! `defaults`), and normalisation through `k8s-openapi` rejects the rest.

mod apps;
mod batch;
mod core;
mod events;
mod other;
pub mod pod;
pub mod util;
pub mod validation;

pub use events::{
    from_storage as event_from_storage, to_storage as event_to_storage,
    v1_field_to_core as event_v1_field_to_core,
};
pub use pod::qos_class;
pub use validation::{
    validate_annotations, validate_label_selector, validate_labels, validate_object_meta, NameRule,
};

use crate::error::Cause;
use jiff::Timestamp;
use serde_json::Value;

/// One column of a server-side Table (`meta.k8s.io/v1`).
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub kind: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    /// 0 = always shown, 1 = only with `-o wide`.
    pub priority: u8,
}

/// Behaviour hooks of one kind. All functions are pure.
pub struct KindOps {
    /// Sets upstream defaults (`SetDefaults_*`); run on every create and update.
    pub defaults: fn(&mut Value),
    /// Sets what a create always starts with (e.g. a Pod's `status.phase: Pending`).
    pub prepare_create: fn(&mut Value),
    /// Validates an object; `old` is the stored object on update.
    pub validate: fn(&Value, Option<&Value>) -> Vec<Cause>,
    /// Table columns after `Name`... all of them, `Name` included.
    pub columns: &'static [Column],
    /// Table cells, one per column.
    pub row: fn(&Value, Timestamp) -> Vec<Value>,
    /// Field selector labels supported beyond `metadata.name`/`metadata.namespace`.
    pub fields: &'static [&'static str],
    /// The value of a supported field label, as upstream's field set renders it.
    pub field: fn(&Value, &str) -> Option<String>,
    /// Conversion for kinds sharing storage with another version (events.k8s.io).
    pub to_storage: Option<fn(Value) -> Value>,
    pub from_storage: Option<fn(Value) -> Value>,
}

pub const NAME_COLUMN: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    priority: 0,
};

pub const AGE_COLUMN: Column = Column {
    name: "Age",
    kind: "string",
    format: "",
    description: "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
    priority: 0,
};

fn no_defaults(_: &mut Value) {}
fn no_validation(_: &Value, _: Option<&Value>) -> Vec<Cause> {
    Vec::new()
}
fn no_field(_: &Value, _: &str) -> Option<String> {
    None
}

/// `Name`, `Age` cells.
pub fn name_age_row(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        Value::String(obj["metadata"]["name"].as_str().unwrap_or("").to_string()),
        Value::String(crate::meta::age(obj, now)),
    ]
}

const GENERIC: KindOps = KindOps {
    defaults: no_defaults,
    prepare_create: no_defaults,
    validate: no_validation,
    columns: &[NAME_COLUMN, AGE_COLUMN],
    row: name_age_row,
    fields: &[],
    field: no_field,
    to_storage: None,
    from_storage: None,
};

pub static NAMESPACE: KindOps = KindOps {
    defaults: core::namespace_defaults,
    prepare_create: core::namespace_prepare,
    validate: core::namespace_validate,
    columns: core::NAMESPACE_COLUMNS,
    row: core::namespace_row,
    fields: core::NAMESPACE_FIELDS,
    field: core::namespace_field,
    ..GENERIC
};

pub static NODE: KindOps = KindOps {
    defaults: core::node_defaults,
    validate: core::node_validate,
    columns: core::NODE_COLUMNS,
    row: core::node_row,
    fields: core::NODE_FIELDS,
    field: core::node_field,
    ..GENERIC
};

pub static POD: KindOps = KindOps {
    defaults: pod::defaults,
    prepare_create: pod::prepare_create,
    validate: pod::validate,
    columns: pod::COLUMNS,
    row: pod::row,
    fields: pod::FIELDS,
    field: pod::field,
    ..GENERIC
};

pub static SERVICE: KindOps = KindOps {
    defaults: core::service_defaults,
    prepare_create: core::service_prepare,
    validate: core::service_validate,
    columns: core::SERVICE_COLUMNS,
    row: core::service_row,
    fields: core::SERVICE_FIELDS,
    field: core::service_field,
    ..GENERIC
};

pub static ENDPOINTS: KindOps = KindOps {
    defaults: core::endpoints_defaults,
    validate: core::endpoints_validate,
    columns: core::ENDPOINTS_COLUMNS,
    row: core::endpoints_row,
    ..GENERIC
};

pub static REPLICATION_CONTROLLER: KindOps = KindOps {
    defaults: apps::rc_defaults,
    prepare_create: apps::replica_set_prepare,
    validate: apps::rc_validate,
    columns: apps::RC_COLUMNS,
    row: apps::rc_row,
    fields: REPLICAS_FIELDS,
    field: apps::replicas_field,
    ..GENERIC
};

pub static CONFIG_MAP: KindOps = KindOps {
    validate: core::config_map_validate,
    columns: core::CONFIG_MAP_COLUMNS,
    row: core::config_map_row,
    ..GENERIC
};

pub static SECRET: KindOps = KindOps {
    defaults: core::secret_defaults,
    validate: core::secret_validate,
    columns: core::SECRET_COLUMNS,
    row: core::secret_row,
    fields: core::SECRET_FIELDS,
    field: core::secret_field,
    ..GENERIC
};

pub static SERVICE_ACCOUNT: KindOps = KindOps {
    validate: core::service_account_validate,
    columns: core::SERVICE_ACCOUNT_COLUMNS,
    row: core::service_account_row,
    ..GENERIC
};

pub static EVENT: KindOps = KindOps {
    validate: events::validate,
    columns: events::COLUMNS,
    row: events::row,
    fields: events::FIELDS,
    field: events::field,
    ..GENERIC
};

pub static EVENT_V1: KindOps = KindOps {
    validate: events::validate_v1,
    columns: events::COLUMNS,
    row: events::row,
    fields: events::V1_FIELDS,
    field: events::field_v1,
    to_storage: Some(events::to_storage),
    from_storage: Some(events::from_storage),
    ..GENERIC
};

pub static LEASE: KindOps = KindOps {
    validate: other::lease_validate,
    columns: other::LEASE_COLUMNS,
    row: other::lease_row,
    ..GENERIC
};

pub static DEPLOYMENT: KindOps = KindOps {
    defaults: apps::deployment_defaults,
    prepare_create: apps::deployment_prepare,
    validate: apps::deployment_validate,
    columns: apps::DEPLOYMENT_COLUMNS,
    row: apps::deployment_row,
    ..GENERIC
};

const REPLICAS_FIELDS: &[&str] = &["status.replicas"];

pub static REPLICA_SET: KindOps = KindOps {
    defaults: apps::replica_set_defaults,
    prepare_create: apps::replica_set_prepare,
    validate: apps::replica_set_validate,
    columns: apps::REPLICA_SET_COLUMNS,
    row: apps::replica_set_row,
    fields: REPLICAS_FIELDS,
    field: apps::replicas_field,
    ..GENERIC
};

pub static DAEMON_SET: KindOps = KindOps {
    defaults: apps::daemon_set_defaults,
    prepare_create: apps::daemon_set_prepare,
    validate: apps::daemon_set_validate,
    columns: apps::DAEMON_SET_COLUMNS,
    row: apps::daemon_set_row,
    ..GENERIC
};

pub static STATEFUL_SET: KindOps = KindOps {
    defaults: apps::stateful_set_defaults,
    prepare_create: apps::stateful_set_prepare,
    validate: apps::stateful_set_validate,
    columns: apps::STATEFUL_SET_COLUMNS,
    row: apps::stateful_set_row,
    ..GENERIC
};

pub static CONTROLLER_REVISION: KindOps = KindOps {
    validate: apps::controller_revision_validate,
    columns: apps::CONTROLLER_REVISION_COLUMNS,
    row: apps::controller_revision_row,
    ..GENERIC
};

pub static JOB: KindOps = KindOps {
    defaults: batch::job_defaults,
    prepare_create: batch::job_prepare,
    validate: batch::job_validate,
    columns: batch::JOB_COLUMNS,
    row: batch::job_row,
    fields: batch::JOB_FIELDS,
    field: batch::job_field,
    ..GENERIC
};

pub static CRON_JOB: KindOps = KindOps {
    defaults: batch::cron_job_defaults,
    prepare_create: batch::cron_job_prepare,
    validate: batch::cron_job_validate,
    columns: batch::CRON_JOB_COLUMNS,
    row: batch::cron_job_row,
    ..GENERIC
};

pub static ENDPOINT_SLICE: KindOps = KindOps {
    defaults: other::endpoint_slice_defaults,
    validate: other::endpoint_slice_validate,
    columns: other::ENDPOINT_SLICE_COLUMNS,
    row: other::endpoint_slice_row,
    ..GENERIC
};

pub static PRIORITY_CLASS: KindOps = KindOps {
    defaults: other::priority_class_defaults,
    validate: other::priority_class_validate,
    columns: other::PRIORITY_CLASS_COLUMNS,
    row: other::priority_class_row,
    ..GENERIC
};

pub static POD_DISRUPTION_BUDGET: KindOps = KindOps {
    prepare_create: other::pdb_prepare,
    validate: other::pdb_validate,
    columns: other::PDB_COLUMNS,
    row: other::pdb_row,
    ..GENERIC
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::REGISTRY;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn every_kind_has_one_cell_per_column() {
        let now: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        for rt in REGISTRY {
            let obj = json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": {"name": "x", "creationTimestamp": "2023-12-31T00:00:00Z"}});
            let row = (rt.ops.row)(&obj, now);
            assert_eq!(row.len(), rt.ops.columns.len(), "{}", rt.kind);
            let names: Vec<&str> = rt.ops.columns.iter().map(|c| c.name).collect();
            assert!(names.contains(&"Name"), "{}", rt.kind);
            for f in rt.ops.fields {
                assert!((rt.ops.field)(&obj, f).is_some(), "{} {f}", rt.kind);
            }
        }
    }

    /// A minimal valid object of each served kind.
    fn sample_objects() -> Vec<(&'static crate::registry::ResourceType, Value)> {
        let tmpl = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        let job_tmpl = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}});
        let sel = json!({"matchLabels": {"app": "x"}});
        let bodies = [
            ("Namespace", json!({})),
            ("Node", json!({})),
            ("Pod", json!({"spec": tmpl["spec"]})),
            ("Service", json!({"spec": {"ports": [{"port": 80}]}})),
            (
                "Endpoints",
                json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]}),
            ),
            ("ReplicationController", json!({"spec": {"template": tmpl}})),
            ("ConfigMap", json!({"data": {"a": "b"}})),
            ("Secret", json!({"stringData": {"a": "b"}})),
            ("ServiceAccount", json!({})),
            (
                "Event",
                json!({"involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "R", "message": "m"}),
            ),
            (
                "Lease",
                json!({"spec": {"holderIdentity": "h", "leaseDurationSeconds": 10}}),
            ),
            (
                "Deployment",
                json!({"spec": {"selector": sel, "template": tmpl}}),
            ),
            (
                "ReplicaSet",
                json!({"spec": {"selector": sel, "template": tmpl}}),
            ),
            (
                "DaemonSet",
                json!({"spec": {"selector": sel, "template": tmpl}}),
            ),
            (
                "StatefulSet",
                json!({"spec": {"selector": sel, "template": tmpl, "serviceName": "x"}}),
            ),
            ("ControllerRevision", json!({"revision": 1, "data": {}})),
            ("Job", json!({"spec": {"template": job_tmpl}})),
            (
                "CronJob",
                json!({"spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": job_tmpl}}}}),
            ),
            (
                "EndpointSlice",
                json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 80}]}),
            ),
            ("PriorityClass", json!({"value": 100})),
            (
                "PodDisruptionBudget",
                json!({"spec": {"minAvailable": 1, "selector": sel}}),
            ),
        ];
        REGISTRY
            .iter()
            .map(|rt| {
                let body = if rt.group == "events.k8s.io" {
                    json!({"eventTime": "2024-01-01T00:00:00.000000Z", "reportingController": "x.io/c", "reportingInstance": "i", "action": "A", "reason": "R",
                        "type": "Normal", "regarding": {"kind": "Pod", "name": "p", "namespace": "default"}})
                } else {
                    bodies.iter().find(|(k, _)| *k == rt.kind).unwrap_or_else(|| panic!("no body for {}", rt.kind)).1.clone()
                };
                let mut obj = body;
                obj["apiVersion"] = json!(rt.api_version());
                obj["kind"] = json!(rt.kind);
                obj["metadata"] = json!({"name": "x", "uid": "0000-1111", "creationTimestamp": "2024-01-01T00:00:00Z"});
                if rt.namespaced() {
                    obj["metadata"]["namespace"] = json!("default");
                }
                (rt, obj)
            })
            .collect()
    }

    /// Minimal valid objects of every kind pass defaulting, validation and
    /// normalisation through the typed form.
    #[test]
    fn minimal_objects_are_valid_after_defaults() {
        for (rt, mut obj) in sample_objects() {
            (rt.ops.prepare_create)(&mut obj);
            (rt.ops.defaults)(&mut obj);
            let causes = (rt.ops.validate)(&obj, None);
            assert!(causes.is_empty(), "{}: {causes:?}", rt.kind);
            let stored = match rt.ops.to_storage {
                Some(f) => f(obj.clone()),
                None => obj.clone(),
            };
            let normalized =
                (rt.normalize)(obj.clone()).unwrap_or_else(|e| panic!("{}: {e}", rt.kind));
            assert!(normalized.is_object());
            if let Some(back) = rt.ops.from_storage {
                let view = back(stored);
                assert_eq!(view["regarding"], obj["regarding"]);
            }
            // Normalisation keeps what the hooks produced.
            if rt.ops.to_storage.is_none() {
                let mut renormalized = normalized.clone();
                (rt.ops.defaults)(&mut renormalized);
                assert_eq!(
                    renormalized, normalized,
                    "{} defaults changed after normalisation",
                    rt.kind
                );
            }
            // An unchanged update is valid too.
            let again = (rt.ops.validate)(&obj, Some(&obj));
            assert!(again.is_empty(), "{} update: {again:?}", rt.kind);
        }
    }

    /// Every JSON pointer of a value (containers and leaves).
    fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    pointers(
                        x,
                        format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                        out,
                    );
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    pointers(x, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
        out.push(at);
    }

    /// Runs every hook of `rt` on `obj`, with `old` as the previous object.
    fn exercise(
        rt: &crate::registry::ResourceType,
        obj: &Value,
        old: &Value,
    ) -> Result<(), TestCaseError> {
        let now: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let ops = rt.ops;
        let mut a = obj.clone();
        (ops.prepare_create)(&mut a);
        (ops.defaults)(&mut a);
        let _ = (ops.validate)(&a, None);
        let _ = (ops.validate)(&a, Some(old));
        let _ = (ops.validate)(obj, Some(old));
        let _ = (ops.validate)(old, Some(obj));
        prop_assert_eq!((ops.row)(obj, now).len(), ops.columns.len());
        let _ = (ops.row)(&a, now);
        for f in ops.fields {
            let _ = (ops.field)(obj, f);
        }
        if let (Some(to), Some(from)) = (ops.to_storage, ops.from_storage) {
            let _ = from(to(obj.clone()));
            let _ = to(from(obj.clone()));
        }
        // Defaults are idempotent.
        let mut b = a.clone();
        (ops.defaults)(&mut b);
        prop_assert_eq!(&a, &b, "{} defaults not idempotent", rt.kind);
        Ok(())
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let keys = prop::sample::select(vec![
            "metadata",
            "name",
            "namespace",
            "labels",
            "annotations",
            "spec",
            "status",
            "template",
            "containers",
            "initContainers",
            "image",
            "ports",
            "port",
            "nodePort",
            "targetPort",
            "protocol",
            "selector",
            "matchLabels",
            "matchExpressions",
            "operator",
            "values",
            "key",
            "replicas",
            "strategy",
            "rollingUpdate",
            "maxSurge",
            "maxUnavailable",
            "volumes",
            "volumeMounts",
            "env",
            "valueFrom",
            "fieldRef",
            "resources",
            "limits",
            "requests",
            "cpu",
            "memory",
            "restartPolicy",
            "type",
            "data",
            "stringData",
            "binaryData",
            "subsets",
            "addresses",
            "endpoints",
            "conditions",
            "containerStatuses",
            "initContainerStatuses",
            "state",
            "waiting",
            "terminated",
            "running",
            "lastState",
            "reason",
            "exitCode",
            "restartCount",
            "finishedAt",
            "deletionTimestamp",
            "involvedObject",
            "regarding",
            "series",
            "count",
            "jobTemplate",
            "schedule",
            "updateStrategy",
            "volumeClaimTemplates",
            "clusterIP",
            "clusterIPs",
            "externalIPs",
            "loadBalancer",
            "ingress",
            "tolerations",
            "livenessProbe",
            "httpGet",
            "podIPs",
            "ip",
            "nodeInfo",
            "capacity",
            "allocatable",
            "ownerReferences",
            "controller",
            "finalizers",
            "value",
            "minAvailable",
            "immutable",
            "eventTime",
            "note",
            "source",
            "taints",
            "effect",
            "readinessGates",
            "hostNetwork",
            "completions",
            "parallelism",
            "startTime",
            "emptyDir",
            "configMap",
            "defaultMode",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            (-5i64..70000).prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-zA-Z0-9%./:_ -]{0,12}".prop_map(Value::String),
            prop::sample::select(vec![
                "Always",
                "None",
                "True",
                "Ready",
                "25%",
                "1Gi",
                "500m",
                "TCP",
                "In",
                "Exists",
                "2024-01-01T00:00:00Z",
                "@daily",
                "* * * * *",
                "Completed",
                "NodePort"
            ])
            .prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(5, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn hooks_never_panic_on_arbitrary_json(obj in arb_json(), old in arb_json()) {
            for rt in REGISTRY {
                exercise(rt, &obj, &old)?;
            }
        }

        /// Valid objects with one subtree replaced by arbitrary JSON.
        #[test]
        fn hooks_never_panic_on_mutated_objects(which in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(), v in arb_json()) {
            let samples = sample_objects();
            let (_, base) = &samples[which.index(samples.len())];
            let mut base = base.clone();
            for (rt, _) in &samples {
                if rt.kind == base["kind"] {
                    (rt.ops.prepare_create)(&mut base);
                    (rt.ops.defaults)(&mut base);
                }
            }
            let mut paths = Vec::new();
            pointers(&base, String::new(), &mut paths);
            let path = &paths[at.index(paths.len())];
            let mut mutated = base.clone();
            if let Some(slot) = mutated.pointer_mut(path) {
                *slot = v;
            }
            for (rt, _) in &samples {
                exercise(rt, &mutated, &base)?;
            }
        }
    }
}
