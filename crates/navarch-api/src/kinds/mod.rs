//! Per-kind behaviour: defaulting, validation, table columns and field
//! selectors, as upstream's registry strategies do it.

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

pub static NAMESPACE: KindOps = GENERIC;
pub static NODE: KindOps = GENERIC;
pub static POD: KindOps = GENERIC;
pub static SERVICE: KindOps = GENERIC;
pub static ENDPOINTS: KindOps = GENERIC;
pub static REPLICATION_CONTROLLER: KindOps = GENERIC;
pub static CONFIG_MAP: KindOps = GENERIC;
pub static SECRET: KindOps = GENERIC;
pub static SERVICE_ACCOUNT: KindOps = GENERIC;
pub static EVENT: KindOps = GENERIC;
pub static EVENT_V1: KindOps = GENERIC;
pub static LEASE: KindOps = GENERIC;
pub static DEPLOYMENT: KindOps = GENERIC;
pub static REPLICA_SET: KindOps = GENERIC;
pub static DAEMON_SET: KindOps = GENERIC;
pub static STATEFUL_SET: KindOps = GENERIC;
pub static CONTROLLER_REVISION: KindOps = GENERIC;
pub static JOB: KindOps = GENERIC;
pub static CRON_JOB: KindOps = GENERIC;
pub static ENDPOINT_SLICE: KindOps = GENERIC;
pub static PRIORITY_CLASS: KindOps = GENERIC;
pub static POD_DISRUPTION_BUDGET: KindOps = GENERIC;
