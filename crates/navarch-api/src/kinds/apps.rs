//! Controllers of pods: Deployment, ReplicaSet, ReplicationController,
//! DaemonSet, StatefulSet, and ControllerRevision.

use super::pod::{default_template, validate_controller_template};
use super::util::{
    arr, container_cells, existing_obj_mut, format_label_selector, format_labels, int,
    int_or_string, obj_mut, s, selector_is_empty, selector_string, set_default, set_default_str,
    string_map,
};
use super::validation::{
    immutable, int_or_percent_is_zero, selector_matches_template, validate_enum,
    validate_int_or_percent, validate_label_selector, validate_labels, validate_nonnegative,
    validate_object_meta, NameRule,
};
use super::{Column, AGE_COLUMN, NAME_COLUMN};
use crate::error::Cause;
use jiff::Timestamp;
use serde_json::{json, Value};

fn spec_mut(obj: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    existing_obj_mut(obj, "spec").and_then(Value::as_object_mut)
}

fn default_spec_template(obj: &mut Value) {
    if let Some(t) = existing_obj_mut(obj, "spec").and_then(|s| existing_obj_mut(s, "template")) {
        default_template(t);
    }
}

/// Replaces `status` with what a new object starts with.
fn reset_status(obj: &mut Value, status: Value) {
    if let Some(m) = obj.as_object_mut() {
        m.insert("status".into(), status);
    }
}

/// An empty selector is invalid for these controllers (upstream's wording).
fn validate_selector_and_template(spec: &Value, empty_msg: &str, kind: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    let sel = &spec["selector"];
    if sel.is_null() {
        out.push(Cause::required("spec.selector"));
    } else {
        out.extend(validate_label_selector(sel, "spec.selector"));
        if sel.is_object() && selector_is_empty(sel) {
            out.push(Cause::invalid(
                "spec.selector",
                "v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}",
                empty_msg,
            ));
        } else if sel.is_object() {
            out.extend(selector_matches_template(
                sel,
                &spec["template"]["metadata"]["labels"],
                "spec.template.metadata.labels",
            ));
        }
    }
    out.extend(validate_controller_template(
        &spec["template"],
        "spec.template",
        kind,
    ));
    out
}

fn replicas_cell(v: &Value) -> Value {
    json!(v.as_i64().unwrap_or(0))
}

fn wide_cells(spec: &Value, selector: String) -> [Value; 3] {
    let (names, images) = container_cells(&spec["template"]["spec"]);
    [json!(names), json!(images), json!(selector)]
}

const CONTAINERS_COLUMN: Column = Column {
    name: "Containers",
    kind: "string",
    format: "",
    description: "Names of each container in the template.",
    priority: 1,
};
const IMAGES_COLUMN: Column = Column {
    name: "Images",
    kind: "string",
    format: "",
    description: "Images referenced by each container in the template.",
    priority: 1,
};
const fn selector_column(description: &'static str) -> Column {
    Column {
        name: "Selector",
        kind: "string",
        format: "",
        description,
        priority: 1,
    }
}

// -------------------------------------------------------------- Deployment

pub fn deployment_defaults(d: &mut Value) {
    if let Some(spec) = spec_mut(d) {
        set_default(spec, "replicas", json!(1));
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(spec, "progressDeadlineSeconds", json!(600));
    }
    if let Some(strategy) = existing_obj_mut(d, "spec").and_then(|s| obj_mut(s, "strategy")) {
        set_default_str(strategy, "type", "RollingUpdate");
        if strategy.get("type") == Some(&json!("RollingUpdate")) {
            let ru = strategy.entry("rollingUpdate").or_insert(Value::Null);
            if ru.is_null() {
                *ru = json!({});
            }
            if let Some(ru) = ru.as_object_mut() {
                set_default(ru, "maxUnavailable", json!("25%"));
                set_default(ru, "maxSurge", json!("25%"));
            }
        }
    }
    default_spec_template(d);
}

pub fn deployment_prepare(d: &mut Value) {
    reset_status(d, json!({}));
}

pub fn deployment_validate(d: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(d, old, NameRule::Subdomain);
    let spec = &d["spec"];
    out.extend(validate_nonnegative(&spec["replicas"], "spec.replicas"));
    out.extend(validate_selector_and_template(
        spec,
        "empty selector is invalid for deployment",
        "ReplicaSet",
    ));
    let strategy = &spec["strategy"];
    out.extend(validate_enum(
        &strategy["type"],
        "spec.strategy.type",
        &["Recreate", "RollingUpdate"],
        true,
    ));
    let ru = &strategy["rollingUpdate"];
    if s(strategy, "type") == "Recreate" && !ru.is_null() {
        out.push(Cause::forbidden(
            "spec.strategy.rollingUpdate",
            "may not be specified when strategy `type` is 'Recreate'",
        ));
    }
    if ru.is_object() {
        out.extend(validate_int_or_percent(
            &ru["maxUnavailable"],
            "spec.strategy.rollingUpdate.maxUnavailable",
            true,
        ));
        out.extend(validate_int_or_percent(
            &ru["maxSurge"],
            "spec.strategy.rollingUpdate.maxSurge",
            false,
        ));
        if int_or_percent_is_zero(&ru["maxUnavailable"]) && int_or_percent_is_zero(&ru["maxSurge"])
        {
            out.push(Cause::invalid(
                "spec.strategy.rollingUpdate.maxUnavailable",
                int_or_string(&ru["maxUnavailable"]),
                "may not be 0 when `maxSurge` is 0",
            ));
        }
    }
    out.extend(validate_nonnegative(
        &spec["revisionHistoryLimit"],
        "spec.revisionHistoryLimit",
    ));
    out.extend(validate_nonnegative(
        &spec["minReadySeconds"],
        "spec.minReadySeconds",
    ));
    out.extend(validate_nonnegative(
        &spec["progressDeadlineSeconds"],
        "spec.progressDeadlineSeconds",
    ));
    if let Some(pds) = int(spec, "progressDeadlineSeconds") {
        if pds <= int(spec, "minReadySeconds").unwrap_or(0) {
            out.push(Cause::invalid(
                "spec.progressDeadlineSeconds",
                pds,
                "must be greater than minReadySeconds",
            ));
        }
    }
    out.extend(validate_workload_status(
        &d["status"],
        &[
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
            "unavailableReplicas",
        ],
    ));
    if let Some(old) = old {
        out.extend(immutable(
            &spec["selector"],
            &old["spec"]["selector"],
            "spec.selector",
        ));
    }
    out
}

fn validate_workload_status(status: &Value, counters: &[&str]) -> Vec<Cause> {
    let mut out = Vec::new();
    if status.is_object() {
        for c in counters {
            out.extend(validate_nonnegative(&status[*c], &format!("status.{c}")));
        }
        out.extend(validate_nonnegative(
            &status["observedGeneration"],
            "status.observedGeneration",
        ));
    }
    out
}

pub const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column { name: "Ready", kind: "string", format: "", description: "Number of the pod with ready state", priority: 0 },
    Column { name: "Up-to-date", kind: "string", format: "", description: "Total number of non-terminated pods targeted by this deployment that have the desired template spec.", priority: 0 },
    Column { name: "Available", kind: "string", format: "", description: "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.", priority: 0 },
    AGE_COLUMN,
    CONTAINERS_COLUMN,
    IMAGES_COLUMN,
    selector_column("Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
];

pub fn deployment_row(d: &Value, now: Timestamp) -> Vec<Value> {
    let spec = &d["spec"];
    let status = &d["status"];
    let selector = selector_string(&spec["selector"]).unwrap_or_else(|| "<invalid>".to_string());
    let mut row = vec![
        json!(crate::meta::name(d)),
        json!(format!(
            "{}/{}",
            int(status, "readyReplicas").unwrap_or(0),
            int(spec, "replicas").unwrap_or(0)
        )),
        replicas_cell(&status["updatedReplicas"]),
        replicas_cell(&status["availableReplicas"]),
        json!(crate::meta::age(d, now)),
    ];
    row.extend(wide_cells(spec, selector));
    row
}

// -------------------------------------------------------------- ReplicaSet

pub fn replica_set_defaults(rs: &mut Value) {
    if let Some(spec) = spec_mut(rs) {
        set_default(spec, "replicas", json!(1));
    }
    default_spec_template(rs);
}

pub fn replica_set_prepare(rs: &mut Value) {
    reset_status(rs, json!({"replicas": 0}));
}

pub fn replica_set_validate(rs: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(rs, old, NameRule::Subdomain);
    let spec = &rs["spec"];
    out.extend(validate_nonnegative(&spec["replicas"], "spec.replicas"));
    out.extend(validate_nonnegative(
        &spec["minReadySeconds"],
        "spec.minReadySeconds",
    ));
    out.extend(validate_selector_and_template(
        spec,
        "empty selector is invalid for deployment",
        "ReplicaSet",
    ));
    out.extend(validate_workload_status(
        &rs["status"],
        &[
            "replicas",
            "fullyLabeledReplicas",
            "readyReplicas",
            "availableReplicas",
        ],
    ));
    if let Some(old) = old {
        out.extend(immutable(
            &spec["selector"],
            &old["spec"]["selector"],
            "spec.selector",
        ));
    }
    out
}

const DESIRED_CURRENT_READY: [Column; 3] = [
    Column {
        name: "Desired",
        kind: "integer",
        format: "",
        description: "Replicas is the number of desired pods.",
        priority: 0,
    },
    Column {
        name: "Current",
        kind: "integer",
        format: "",
        description: "Replicas is the most recently observed number of replicas.",
        priority: 0,
    },
    Column {
        name: "Ready",
        kind: "integer",
        format: "",
        description: "The number of ready replicas for this replica set.",
        priority: 0,
    },
];

pub const REPLICA_SET_COLUMNS: &[Column] = &[
    NAME_COLUMN,
    DESIRED_CURRENT_READY[0],
    DESIRED_CURRENT_READY[1],
    DESIRED_CURRENT_READY[2],
    AGE_COLUMN,
    CONTAINERS_COLUMN,
    IMAGES_COLUMN,
    selector_column("Selector is a label query over pods that should match the replica count."),
];

pub fn replica_set_row(rs: &Value, now: Timestamp) -> Vec<Value> {
    let spec = &rs["spec"];
    let status = &rs["status"];
    let mut row = vec![
        json!(crate::meta::name(rs)),
        replicas_cell(&spec["replicas"]),
        replicas_cell(&status["replicas"]),
        replicas_cell(&status["readyReplicas"]),
        json!(crate::meta::age(rs, now)),
    ];
    row.extend(wide_cells(spec, format_label_selector(&spec["selector"])));
    row
}

/// `status.replicas` for field selectors of ReplicaSets and ReplicationControllers.
pub fn replicas_field(obj: &Value, label: &str) -> Option<String> {
    match label {
        "status.replicas" => Some(int(&obj["status"], "replicas").unwrap_or(0).to_string()),
        _ => None,
    }
}

// --------------------------------------------------- ReplicationController

pub fn rc_defaults(rc: &mut Value) {
    let labels = rc["spec"]["template"]["metadata"]["labels"].clone();
    if labels.is_object() {
        if let Some(spec) = spec_mut(rc) {
            let empty = spec
                .get("selector")
                .and_then(Value::as_object)
                .is_none_or(|m| m.is_empty());
            if empty {
                spec.insert("selector".into(), labels.clone());
            }
        }
        let meta_empty = rc["metadata"]["labels"]
            .as_object()
            .is_none_or(|m| m.is_empty());
        if meta_empty {
            if let Some(meta) = obj_mut(rc, "metadata") {
                meta.insert("labels".into(), labels);
            }
        }
    }
    if let Some(spec) = spec_mut(rc) {
        set_default(spec, "replicas", json!(1));
    }
    default_spec_template(rc);
}

pub fn rc_validate(rc: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(rc, old, NameRule::Subdomain);
    let spec = &rc["spec"];
    out.extend(validate_nonnegative(&spec["replicas"], "spec.replicas"));
    out.extend(validate_nonnegative(
        &spec["minReadySeconds"],
        "spec.minReadySeconds",
    ));
    let sel = &spec["selector"];
    if string_map(sel).is_empty() {
        out.push(Cause::required("spec.selector"));
    } else {
        out.extend(validate_labels(sel, "spec.selector"));
    }
    let t = &spec["template"];
    if t.is_null() {
        out.push(Cause::required("spec.template"));
    } else {
        let labels = &t["metadata"]["labels"];
        let matches = string_map(sel)
            .iter()
            .all(|(k, v)| labels.get(*k).and_then(Value::as_str) == Some(*v));
        if !string_map(sel).is_empty() && !matches {
            out.push(Cause::invalid(
                "spec.template.metadata.labels",
                super::util::go_map(labels),
                "`selector` does not match template `labels`",
            ));
        }
        out.extend(validate_controller_template(
            t,
            "spec.template",
            "ReplicationController",
        ));
    }
    out.extend(validate_workload_status(
        &rc["status"],
        &[
            "replicas",
            "fullyLabeledReplicas",
            "readyReplicas",
            "availableReplicas",
        ],
    ));
    out
}

pub const RC_COLUMNS: &[Column] = &[
    NAME_COLUMN,
    DESIRED_CURRENT_READY[0],
    DESIRED_CURRENT_READY[1],
    DESIRED_CURRENT_READY[2],
    AGE_COLUMN,
    CONTAINERS_COLUMN,
    IMAGES_COLUMN,
    selector_column("Selector is a label query over pods that should match the Replicas count."),
];

pub fn rc_row(rc: &Value, now: Timestamp) -> Vec<Value> {
    let spec = &rc["spec"];
    let status = &rc["status"];
    let mut row = vec![
        json!(crate::meta::name(rc)),
        replicas_cell(&spec["replicas"]),
        replicas_cell(&status["replicas"]),
        replicas_cell(&status["readyReplicas"]),
        json!(crate::meta::age(rc, now)),
    ];
    row.extend(wide_cells(spec, format_labels(&spec["selector"])));
    row
}

// --------------------------------------------------------------- DaemonSet

pub fn daemon_set_defaults(ds: &mut Value) {
    if let Some(spec) = spec_mut(ds) {
        set_default(spec, "revisionHistoryLimit", json!(10));
    }
    if let Some(us) = existing_obj_mut(ds, "spec").and_then(|s| obj_mut(s, "updateStrategy")) {
        set_default_str(us, "type", "RollingUpdate");
        if us.get("type") == Some(&json!("RollingUpdate")) {
            let ru = us.entry("rollingUpdate").or_insert(Value::Null);
            if ru.is_null() {
                *ru = json!({});
            }
            if let Some(ru) = ru.as_object_mut() {
                set_default(ru, "maxUnavailable", json!(1));
                set_default(ru, "maxSurge", json!(0));
            }
        }
    }
    default_spec_template(ds);
}

pub fn daemon_set_prepare(ds: &mut Value) {
    reset_status(
        ds,
        json!({"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0, "numberReady": 0}),
    );
}

pub fn daemon_set_validate(ds: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(ds, old, NameRule::Subdomain);
    let spec = &ds["spec"];
    out.extend(validate_selector_and_template(
        spec,
        "empty selector is invalid for daemonset",
        "DaemonSet",
    ));
    let us = &spec["updateStrategy"];
    out.extend(validate_enum(
        &us["type"],
        "spec.updateStrategy.type",
        &["OnDelete", "RollingUpdate"],
        true,
    ));
    let ru = &us["rollingUpdate"];
    if ru.is_object() {
        out.extend(validate_int_or_percent(
            &ru["maxUnavailable"],
            "spec.updateStrategy.rollingUpdate.maxUnavailable",
            true,
        ));
        out.extend(validate_int_or_percent(
            &ru["maxSurge"],
            "spec.updateStrategy.rollingUpdate.maxSurge",
            true,
        ));
        if int_or_percent_is_zero(&ru["maxUnavailable"]) && int_or_percent_is_zero(&ru["maxSurge"])
        {
            out.push(Cause::invalid(
                "spec.updateStrategy.rollingUpdate.maxUnavailable",
                int_or_string(&ru["maxUnavailable"]),
                "may not be 0 when `maxSurge` is 0",
            ));
        }
    }
    out.extend(validate_nonnegative(
        &spec["revisionHistoryLimit"],
        "spec.revisionHistoryLimit",
    ));
    out.extend(validate_nonnegative(
        &spec["minReadySeconds"],
        "spec.minReadySeconds",
    ));
    out.extend(validate_workload_status(
        &ds["status"],
        &[
            "currentNumberScheduled",
            "numberMisscheduled",
            "desiredNumberScheduled",
            "numberReady",
            "updatedNumberScheduled",
            "numberAvailable",
            "numberUnavailable",
        ],
    ));
    if let Some(old) = old {
        out.extend(immutable(
            &spec["selector"],
            &old["spec"]["selector"],
            "spec.selector",
        ));
    }
    out
}

pub const DAEMON_SET_COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column { name: "Desired", kind: "integer", format: "", description: "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod).", priority: 0 },
    Column { name: "Current", kind: "integer", format: "", description: "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.", priority: 0 },
    Column { name: "Ready", kind: "integer", format: "", description: "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.", priority: 0 },
    Column { name: "Up-to-date", kind: "integer", format: "", description: "The total number of nodes that are running updated daemon pod", priority: 0 },
    Column { name: "Available", kind: "integer", format: "", description: "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)", priority: 0 },
    Column { name: "Node Selector", kind: "string", format: "", description: "NodeSelector is a selector which must be true for the pod to fit on a node.", priority: 0 },
    AGE_COLUMN,
    CONTAINERS_COLUMN,
    IMAGES_COLUMN,
    selector_column("A label query over pods that are managed by the daemon set."),
];

pub fn daemon_set_row(ds: &Value, now: Timestamp) -> Vec<Value> {
    let spec = &ds["spec"];
    let st = &ds["status"];
    let mut row = vec![json!(crate::meta::name(ds))];
    for f in [
        "desiredNumberScheduled",
        "currentNumberScheduled",
        "numberReady",
        "updatedNumberScheduled",
        "numberAvailable",
    ] {
        row.push(replicas_cell(&st[f]));
    }
    row.push(json!(format_labels(
        &spec["template"]["spec"]["nodeSelector"]
    )));
    row.push(json!(crate::meta::age(ds, now)));
    row.extend(wide_cells(spec, format_label_selector(&spec["selector"])));
    row
}

// ------------------------------------------------------------- StatefulSet

pub fn stateful_set_defaults(sts: &mut Value) {
    if let Some(spec) = spec_mut(sts) {
        set_default_str(spec, "podManagementPolicy", "OrderedReady");
        set_default(spec, "replicas", json!(1));
        set_default(spec, "revisionHistoryLimit", json!(10));
        let us = spec.entry("updateStrategy").or_insert(Value::Null);
        if us.is_null() {
            *us = json!({});
        }
        if let Some(us) = us.as_object_mut() {
            if matches!(us.get("type"), None | Some(Value::Null))
                || us.get("type") == Some(&json!(""))
            {
                us.insert("type".into(), json!("RollingUpdate"));
                set_default(us, "rollingUpdate", json!({}));
            }
            if us.get("type") == Some(&json!("RollingUpdate")) {
                if let Some(ru) = us.get_mut("rollingUpdate").and_then(Value::as_object_mut) {
                    set_default(ru, "partition", json!(0));
                }
            }
        }
        let pol = spec
            .entry("persistentVolumeClaimRetentionPolicy")
            .or_insert(Value::Null);
        if pol.is_null() {
            *pol = json!({});
        }
        if let Some(pol) = pol.as_object_mut() {
            set_default_str(pol, "whenDeleted", "Retain");
            set_default_str(pol, "whenScaled", "Retain");
        }
        if let Some(templates) = spec
            .get_mut("volumeClaimTemplates")
            .and_then(Value::as_array_mut)
        {
            for t in templates.iter_mut().filter(|t| t.is_object()) {
                if let Some(m) = t.as_object_mut() {
                    set_default_str(m, "apiVersion", "v1");
                    set_default_str(m, "kind", "PersistentVolumeClaim");
                }
                if let Some(ps) = obj_mut(t, "spec") {
                    set_default_str(ps, "volumeMode", "Filesystem");
                }
                if let Some(st) = obj_mut(t, "status") {
                    set_default_str(st, "phase", "Pending");
                }
            }
        }
    }
    default_spec_template(sts);
}

pub fn stateful_set_prepare(sts: &mut Value) {
    reset_status(sts, json!({"replicas": 0, "availableReplicas": 0}));
}

const STS_MUTABLE: [&str; 7] = [
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

pub fn stateful_set_validate(sts: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(sts, old, NameRule::Subdomain);
    let spec = &sts["spec"];
    out.extend(validate_enum(
        &spec["podManagementPolicy"],
        "spec.podManagementPolicy",
        &["OrderedReady", "Parallel"],
        true,
    ));
    let us = &spec["updateStrategy"];
    out.extend(validate_enum(
        &us["type"],
        "spec.updateStrategy.type",
        &["OnDelete", "RollingUpdate"],
        true,
    ));
    if s(us, "type") == "OnDelete" && !us["rollingUpdate"].is_null() {
        out.push(Cause::invalid(
            "spec.updateStrategy.rollingUpdate",
            "{}",
            "only allowed for updateStrategy 'RollingUpdate'",
        ));
    }
    out.extend(validate_nonnegative(
        &us["rollingUpdate"]["partition"],
        "spec.updateStrategy.rollingUpdate.partition",
    ));
    let pol = &spec["persistentVolumeClaimRetentionPolicy"];
    for f in ["whenDeleted", "whenScaled"] {
        out.extend(validate_enum(
            &pol[f],
            &format!("spec.persistentVolumeClaimRetentionPolicy.{f}"),
            &["Retain", "Delete"],
            false,
        ));
    }
    out.extend(validate_nonnegative(&spec["replicas"], "spec.replicas"));
    out.extend(validate_nonnegative(
        &spec["minReadySeconds"],
        "spec.minReadySeconds",
    ));
    out.extend(validate_nonnegative(
        &spec["ordinals"]["start"],
        "spec.ordinals.start",
    ));
    out.extend(validate_selector_and_template(
        spec,
        "empty selector is invalid for statefulset",
        "StatefulSet",
    ));
    for (i, t) in arr(spec, "volumeClaimTemplates").iter().enumerate() {
        let name = s(&t["metadata"], "name");
        let p = format!("spec.volumeClaimTemplates[{i}].metadata.name");
        if name.is_empty() {
            out.push(Cause::required(p));
        } else {
            out.extend(super::validation::invalid_all(
                &p,
                name,
                super::validation::is_dns1123_subdomain(name),
            ));
        }
    }
    out.extend(validate_workload_status(
        &sts["status"],
        &[
            "replicas",
            "readyReplicas",
            "currentReplicas",
            "updatedReplicas",
            "availableReplicas",
        ],
    ));
    if let Some(old) = old {
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                for f in STS_MUTABLE {
                    m.remove(f);
                }
            }
            v
        };
        if strip(spec) != strip(&old["spec"]) {
            out.push(Cause::forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            ));
        }
    }
    out
}

pub const STATEFUL_SET_COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column {
        name: "Ready",
        kind: "string",
        format: "",
        description: "Number of the pod with ready state",
        priority: 0,
    },
    AGE_COLUMN,
    CONTAINERS_COLUMN,
    IMAGES_COLUMN,
];

pub fn stateful_set_row(sts: &Value, now: Timestamp) -> Vec<Value> {
    let spec = &sts["spec"];
    let (names, images) = container_cells(&spec["template"]["spec"]);
    vec![
        json!(crate::meta::name(sts)),
        json!(format!(
            "{}/{}",
            int(&sts["status"], "readyReplicas").unwrap_or(0),
            int(spec, "replicas").unwrap_or(0)
        )),
        json!(crate::meta::age(sts, now)),
        json!(names),
        json!(images),
    ]
}

// ------------------------------------------------------ ControllerRevision

pub fn controller_revision_validate(cr: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(cr, old, NameRule::Subdomain);
    if cr["revision"].is_null() {
        out.push(Cause::required("revision"));
    }
    out.extend(validate_nonnegative(&cr["revision"], "revision"));
    if let Some(old) = old {
        out.extend(immutable(&cr["data"], &old["data"], "data"));
    }
    out
}

pub const CONTROLLER_REVISION_COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column {
        name: "Controller",
        kind: "string",
        format: "",
        description: "Controller of the object",
        priority: 0,
    },
    Column {
        name: "Revision",
        kind: "string",
        format: "",
        description: "Revision indicates the revision of the state represented by Data.",
        priority: 0,
    },
    AGE_COLUMN,
];

pub fn controller_revision_row(cr: &Value, now: Timestamp) -> Vec<Value> {
    let owner = arr(&cr["metadata"], "ownerReferences")
        .iter()
        .find(|r| r["controller"] == json!(true));
    let controller = match owner {
        Some(r) => {
            let group = s(r, "apiVersion")
                .rsplit_once('/')
                .map(|(g, _)| g)
                .unwrap_or("");
            let kind = s(r, "kind");
            let gk = if kind.is_empty() && group.is_empty() {
                String::new()
            } else if group.is_empty() {
                kind.to_string()
            } else {
                format!("{kind}.{group}")
            };
            if gk.is_empty() {
                s(r, "name").to_string()
            } else {
                format!("{}/{}", gk.to_lowercase(), s(r, "name"))
            }
        }
        None => "<none>".to_string(),
    };
    vec![
        json!(crate::meta::name(cr)),
        json!(controller),
        json!(int(cr, "revision").unwrap_or(0)),
        json!(crate::meta::age(cr, now)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-01-01T01:00:00Z".parse().unwrap()
    }

    fn template() -> Value {
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}})
    }

    fn defaulted_template() -> Value {
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {
            "containers": [{"name": "c", "image": "nginx:1", "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File", "resources": {}}],
            "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "securityContext": {}, "terminationGracePeriodSeconds": 30,
            "schedulerName": "default-scheduler"}})
    }

    fn fields(c: &[Cause]) -> Vec<&str> {
        c.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn deployment_defaults_match_upstream() {
        let mut d = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template()}});
        deployment_defaults(&mut d);
        assert_eq!(
            d["spec"],
            json!({"selector": {"matchLabels": {"app": "web"}}, "template": defaulted_template(), "replicas": 1, "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}})
        );
        assert!(
            deployment_validate(&d, None).is_empty(),
            "{:?}",
            deployment_validate(&d, None)
        );
        let mut recreate = json!({"spec": {"strategy": {"type": "Recreate"}}});
        deployment_defaults(&mut recreate);
        assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn deployment_validation() {
        let mut d = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "other"}}, "template": template()}});
        deployment_defaults(&mut d);
        let c = deployment_validate(&d, None);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].render(), "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`");
        let mut d2 = d.clone();
        d2["spec"]["selector"] = Value::Null;
        d2["spec"]["replicas"] = json!(-1);
        assert_eq!(
            fields(&deployment_validate(&d2, None)),
            vec!["spec.replicas", "spec.selector"]
        );
        let mut d3 = d.clone();
        d3["spec"]["selector"] = json!({"matchLabels": {"app": "web"}});
        d3["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        assert_eq!(
            fields(&deployment_validate(&d3, None)),
            vec!["spec.template.spec.restartPolicy"]
        );
        let mut d4 = d3.clone();
        d4["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        let mut d5 = d4.clone();
        d5["spec"]["selector"] = json!({"matchLabels": {"app": "web", "x": "y"}});
        d5["spec"]["template"]["metadata"]["labels"]["x"] = json!("y");
        assert_eq!(
            fields(&deployment_validate(&d5, Some(&d4))),
            vec!["spec.selector"]
        );
        let mut d6 = d4.clone();
        d6["spec"]["strategy"]["rollingUpdate"] = json!({"maxUnavailable": 0, "maxSurge": "0%"});
        assert_eq!(
            fields(&deployment_validate(&d6, None)),
            vec!["spec.strategy.rollingUpdate.maxUnavailable"]
        );
    }

    #[test]
    fn other_controllers() {
        let mut rs = json!({"metadata": {"name": "rs"}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template()}});
        replica_set_defaults(&mut rs);
        assert_eq!(rs["spec"]["replicas"], 1);
        assert!(replica_set_validate(&rs, None).is_empty());
        let mut rc = json!({"metadata": {"name": "rc"}, "spec": {"template": template()}});
        rc_defaults(&mut rc);
        assert_eq!(rc["spec"]["selector"], json!({"app": "web"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "web"}));
        assert!(
            rc_validate(&rc, None).is_empty(),
            "{:?}",
            rc_validate(&rc, None)
        );
        let mut ds = json!({"metadata": {"name": "ds"}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template()}});
        daemon_set_defaults(&mut ds);
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
        assert!(daemon_set_validate(&ds, None).is_empty());
        let mut empty_sel = ds.clone();
        empty_sel["spec"]["selector"] = json!({});
        assert!(daemon_set_validate(&empty_sel, None)[0]
            .message
            .ends_with("empty selector is invalid for daemonset"));
    }

    #[test]
    fn stateful_sets() {
        let mut sts = json!({"metadata": {"name": "db"}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "serviceName": "db", "template": template(),
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}});
        stateful_set_defaults(&mut sts);
        let spec = &sts["spec"];
        assert_eq!(spec["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            spec["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            spec["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(
            (
                spec["replicas"].clone(),
                spec["revisionHistoryLimit"].clone()
            ),
            (json!(1), json!(10))
        );
        assert_eq!(
            spec["volumeClaimTemplates"][0]["spec"]["volumeMode"],
            "Filesystem"
        );
        assert_eq!(
            spec["volumeClaimTemplates"][0]["status"]["phase"],
            "Pending"
        );
        assert!(
            stateful_set_validate(&sts, None).is_empty(),
            "{:?}",
            stateful_set_validate(&sts, None)
        );
        let mut scaled = sts.clone();
        scaled["spec"]["replicas"] = json!(3);
        assert!(stateful_set_validate(&scaled, Some(&sts)).is_empty());
        let mut renamed = sts.clone();
        renamed["spec"]["serviceName"] = json!("other");
        assert_eq!(
            fields(&stateful_set_validate(&renamed, Some(&sts))),
            vec!["spec"]
        );
    }

    #[test]
    fn rows() {
        let d = json!({"metadata": {"name": "web", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template()},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        assert_eq!(
            deployment_row(&d, now()),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("60m"),
                json!("c"),
                json!("nginx:1"),
                json!("app=web")
            ]
        );
        assert_eq!(
            replica_set_row(&d, now())[1..4],
            [json!(3), json!(0), json!(2)]
        );
        assert_eq!(stateful_set_row(&d, now())[1], "2/3");
        let ds = json!({"metadata": {"name": "ds"}, "spec": {"template": {"spec": {"nodeSelector": {"os": "linux"}}}}, "status": {"desiredNumberScheduled": 2}});
        assert_eq!(
            daemon_set_row(&ds, now())[1..8],
            [
                json!(2),
                json!(0),
                json!(0),
                json!(0),
                json!(0),
                json!("os=linux"),
                json!("<unknown>")
            ]
        );
        let cr = json!({"metadata": {"name": "r", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "uid": "u", "controller": true}]}, "revision": 2});
        assert_eq!(
            controller_revision_row(&cr, now())[1..3],
            [json!("daemonset.apps/ds"), json!(2)]
        );
        assert_eq!(
            replicas_field(&json!({"status": {"replicas": 4}}), "status.replicas").as_deref(),
            Some("4")
        );
    }
}
