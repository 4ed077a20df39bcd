//! Strategic merge patch (`application/strategic-merge-patch+json`), with the
//! semantics of `k8s.io/apimachinery/pkg/util/strategicpatch` as the API
//! server applies it (patch format v2, what kubectl sends).
//!
//! * Maps merge recursively; `null` deletes a key.
//! * Lists are replaced, unless the field's patch strategy is `merge`:
//!   lists of objects then merge by the field's merge key, lists of scalars
//!   become the union of both.
//! * Directives: `$patch: replace | delete | merge` (in a map, or as a list
//!   element), `$retainKeys`, `$setElementOrder/<list>`,
//!   `$deleteFromPrimitiveList/<list>`. Any other key starting with `$` in a
//!   typed object is rejected.
//!
//! Which fields merge and by what key comes from [`FIELD_META`] (upstream's
//! `patchStrategy`/`patchMergeKey` tags); the type of each field at each level
//! comes from the `k8s-openapi` schemas, indexed once per process.
//!
//! Deliberate differences from upstream, all on inputs upstream mishandles:
//! `$patch: merge` is accepted as a no-op (upstream rejects it); a value added
//! where the original has none is stripped of all directives (upstream keeps
//! `$retainKeys` and such, which then fail strict decoding) and a
//! `$patch: replace` map added there is kept (upstream drops it); list items
//! of the original that lack the merge key do not fail the patch.

use super::PatchError;
use crate::registry::{ResourceType, REGISTRY};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::LazyLock;

/// Patch metadata of one list (or map) field of one API type, as upstream's
/// Go struct tags `patchStrategy` / `patchMergeKey` and the OpenAPI
/// extensions `x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`,
/// `x-kubernetes-list-type`, `x-kubernetes-list-map-keys` say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldMeta {
    /// Schema name of the owning type, e.g. `io.k8s.api.core.v1.PodSpec`.
    pub owner: &'static str,
    /// JSON field name, e.g. `containers`.
    pub field: &'static str,
    /// `x-kubernetes-patch-strategy`: "merge", "retainKeys", "merge,retainKeys", "replace", or "" (none).
    pub patch_strategy: &'static str,
    /// `x-kubernetes-patch-merge-key`, or "".
    pub merge_key: &'static str,
    /// `x-kubernetes-list-type`: "map", "set", "atomic", or "" (none).
    pub list_type: &'static str,
    /// `x-kubernetes-list-map-keys` for list_type "map".
    pub list_map_keys: &'static [&'static str],
}

impl FieldMeta {
    /// Whether the patch strategy includes `merge`.
    pub fn merges(&self) -> bool {
        self.patch_strategy.split(',').any(|s| s == "merge")
    }
    /// Whether the patch strategy includes `replace`.
    pub fn replaces(&self) -> bool {
        self.patch_strategy.split(',').any(|s| s == "replace")
    }
    /// Whether the patch strategy includes `retainKeys`.
    pub fn retains_keys(&self) -> bool {
        self.patch_strategy.split(',').any(|s| s == "retainKeys")
    }
}

const fn fm(
    owner: &'static str,
    field: &'static str,
    patch_strategy: &'static str,
    merge_key: &'static str,
    list_type: &'static str,
    list_map_keys: &'static [&'static str],
) -> FieldMeta {
    FieldMeta {
        owner,
        field,
        patch_strategy,
        merge_key,
        list_type,
        list_map_keys,
    }
}

/// Every annotated field of the types reachable from the served kinds, as the
/// Kubernetes 1.33 API types declare them (struct tags `patchStrategy`,
/// `patchMergeKey`; markers `+listType`, `+listMapKey`). Fields of embedded
/// structs are listed under the embedding type (e.g. `EphemeralContainer`).
/// Lists not listed here are atomic and replaced by a patch.
#[rustfmt::skip]
pub static FIELD_META: &[FieldMeta] = &[
    fm("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", "merge", "type", "map", &["type"]),
    fm("io.k8s.api.apps.v1.DeploymentSpec", "strategy", "retainKeys", "", "", &[]),
    fm("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "merge", "type", "map", &["type"]),
    fm("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "merge", "type", "map", &["type"]),
    fm("io.k8s.api.apps.v1.StatefulSetSpec", "volumeClaimTemplates", "", "", "atomic", &[]),
    fm("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", "merge", "type", "map", &["type"]),
    fm("io.k8s.api.batch.v1.CronJobStatus", "active", "", "", "atomic", &[]),
    fm("io.k8s.api.batch.v1.JobStatus", "conditions", "merge", "type", "atomic", &[]),
    fm("io.k8s.api.batch.v1.PodFailurePolicy", "rules", "", "", "atomic", &[]),
    fm("io.k8s.api.batch.v1.PodFailurePolicyOnExitCodesRequirement", "values", "", "", "set", &[]),
    fm("io.k8s.api.batch.v1.PodFailurePolicyRule", "onPodConditions", "", "", "atomic", &[]),
    fm("io.k8s.api.batch.v1.SuccessPolicy", "rules", "", "", "atomic", &[]),
    fm("io.k8s.api.batch.v1.UncountedTerminatedPods", "succeeded", "", "", "set", &[]),
    fm("io.k8s.api.batch.v1.UncountedTerminatedPods", "failed", "", "", "set", &[]),
    fm("io.k8s.api.core.v1.Capabilities", "add", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.Capabilities", "drop", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.CephFSVolumeSource", "monitors", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.ConfigMapProjection", "items", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.ConfigMapVolumeSource", "items", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.Container", "command", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.Container", "args", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.Container", "ports", "merge", "containerPort", "map", &["containerPort", "protocol"]),
    fm("io.k8s.api.core.v1.Container", "envFrom", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.Container", "env", "merge", "name", "map", &["name"]),
    fm("io.k8s.api.core.v1.Container", "resizePolicy", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.Container", "volumeMounts", "merge", "mountPath", "map", &["mountPath"]),
    fm("io.k8s.api.core.v1.Container", "volumeDevices", "merge", "devicePath", "map", &["devicePath"]),
    fm("io.k8s.api.core.v1.ContainerImage", "names", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.ContainerStatus", "volumeMounts", "merge", "mountPath", "map", &["mountPath"]),
    fm("io.k8s.api.core.v1.ContainerStatus", "allocatedResourcesStatus", "merge", "name", "map", &["name"]),
    fm("io.k8s.api.core.v1.DownwardAPIProjection", "items", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.DownwardAPIVolumeSource", "items", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.EndpointSubset", "addresses", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.EndpointSubset", "notReadyAddresses", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.EndpointSubset", "ports", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.Endpoints", "subsets", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.EphemeralContainer", "command", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.EphemeralContainer", "args", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.EphemeralContainer", "ports", "merge", "containerPort", "map", &["containerPort", "protocol"]),
    fm("io.k8s.api.core.v1.EphemeralContainer", "envFrom", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.EphemeralContainer", "env", "merge", "name", "map", &["name"]),
    fm("io.k8s.api.core.v1.EphemeralContainer", "resizePolicy", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.EphemeralContainer", "volumeMounts", "merge", "mountPath", "map", &["mountPath"]),
    fm("io.k8s.api.core.v1.EphemeralContainer", "volumeDevices", "merge", "devicePath", "map", &["devicePath"]),
    fm("io.k8s.api.core.v1.ExecAction", "command", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.FCVolumeSource", "targetWWNs", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.FCVolumeSource", "wwids", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.HTTPGetAction", "httpHeaders", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.HostAlias", "hostnames", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.ISCSIVolumeSource", "portals", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.LinuxContainerUser", "supplementalGroups", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.LoadBalancerIngress", "ports", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.LoadBalancerStatus", "ingress", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.NamespaceSpec", "finalizers", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.NamespaceStatus", "conditions", "merge", "type", "map", &["type"]),
    fm("io.k8s.api.core.v1.NodeAffinity", "preferredDuringSchedulingIgnoredDuringExecution", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.NodeSelector", "nodeSelectorTerms", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.NodeSelectorRequirement", "values", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.NodeSelectorTerm", "matchExpressions", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.NodeSelectorTerm", "matchFields", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", "", "set", &[]),
    fm("io.k8s.api.core.v1.NodeSpec", "taints", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.NodeStatus", "conditions", "merge", "type", "map", &["type"]),
    fm("io.k8s.api.core.v1.NodeStatus", "addresses", "merge", "type", "map", &["type"]),
    fm("io.k8s.api.core.v1.NodeStatus", "images", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.NodeStatus", "volumesInUse", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.NodeStatus", "volumesAttached", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.NodeStatus", "runtimeHandlers", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.PersistentVolumeClaimSpec", "accessModes", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "accessModes", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "conditions", "merge", "type", "map", &["type"]),
    fm("io.k8s.api.core.v1.PodAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.PodAffinity", "preferredDuringSchedulingIgnoredDuringExecution", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.PodAffinityTerm", "namespaces", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.PodAffinityTerm", "matchLabelKeys", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.PodAffinityTerm", "mismatchLabelKeys", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.PodAntiAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.PodAntiAffinity", "preferredDuringSchedulingIgnoredDuringExecution", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.PodDNSConfig", "nameservers", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.PodDNSConfig", "searches", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.PodDNSConfig", "options", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.PodSecurityContext", "supplementalGroups", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.PodSecurityContext", "sysctls", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.PodSpec", "volumes", "merge,retainKeys", "name", "map", &["name"]),
    fm("io.k8s.api.core.v1.PodSpec", "initContainers", "merge", "name", "map", &["name"]),
    fm("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name", "map", &["name"]),
    fm("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "merge", "name", "map", &["name"]),
    fm("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "merge", "name", "map", &["name"]),
    fm("io.k8s.api.core.v1.PodSpec", "tolerations", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", "ip", "map", &["ip"]),
    fm("io.k8s.api.core.v1.PodSpec", "readinessGates", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", "merge", "topologyKey", "map", &["topologyKey", "whenUnsatisfiable"]),
    fm("io.k8s.api.core.v1.PodSpec", "schedulingGates", "merge", "name", "map", &["name"]),
    fm("io.k8s.api.core.v1.PodSpec", "resourceClaims", "merge,retainKeys", "name", "map", &["name"]),
    fm("io.k8s.api.core.v1.PodStatus", "conditions", "merge", "type", "map", &["type"]),
    fm("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", "ip", "atomic", &[]),
    fm("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", "ip", "map", &["ip"]),
    fm("io.k8s.api.core.v1.PodStatus", "initContainerStatuses", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.PodStatus", "containerStatuses", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.PodStatus", "ephemeralContainerStatuses", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.PodStatus", "resourceClaimStatuses", "merge,retainKeys", "name", "map", &["name"]),
    fm("io.k8s.api.core.v1.ProjectedVolumeSource", "sources", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.RBDVolumeSource", "monitors", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.ReplicationControllerStatus", "conditions", "merge", "type", "map", &["type"]),
    fm("io.k8s.api.core.v1.ResourceRequirements", "claims", "", "", "map", &["name"]),
    fm("io.k8s.api.core.v1.ResourceStatus", "resources", "", "", "map", &["resourceID"]),
    fm("io.k8s.api.core.v1.SecretProjection", "items", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.SecretVolumeSource", "items", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.ServiceAccount", "secrets", "merge", "name", "map", &["name"]),
    fm("io.k8s.api.core.v1.ServiceAccount", "imagePullSecrets", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port", "map", &["port", "protocol"]),
    fm("io.k8s.api.core.v1.ServiceSpec", "clusterIPs", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.ServiceSpec", "externalIPs", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.ServiceSpec", "loadBalancerSourceRanges", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.ServiceSpec", "ipFamilies", "", "", "atomic", &[]),
    fm("io.k8s.api.core.v1.ServiceStatus", "conditions", "merge", "type", "map", &["type"]),
    fm("io.k8s.api.core.v1.TopologySpreadConstraint", "matchLabelKeys", "", "", "atomic", &[]),
    fm("io.k8s.api.discovery.v1.Endpoint", "addresses", "", "", "set", &[]),
    fm("io.k8s.api.discovery.v1.EndpointHints", "forZones", "", "", "atomic", &[]),
    fm("io.k8s.api.discovery.v1.EndpointHints", "forNodes", "", "", "atomic", &[]),
    fm("io.k8s.api.discovery.v1.EndpointSlice", "endpoints", "", "", "atomic", &[]),
    fm("io.k8s.api.discovery.v1.EndpointSlice", "ports", "", "", "atomic", &[]),
    fm("io.k8s.api.policy.v1.PodDisruptionBudgetSpec", "selector", "replace", "", "", &[]),
    fm("io.k8s.api.policy.v1.PodDisruptionBudgetStatus", "conditions", "merge", "type", "map", &["type"]),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector", "matchExpressions", "", "", "atomic", &[]),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelectorRequirement", "values", "", "", "atomic", &[]),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", "merge", "uid", "map", &["uid"]),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", "merge", "", "set", &[]),
    fm("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "managedFields", "", "", "atomic", &[]),
];

/// Looks up the metadata of `owner.field`.
pub fn field_meta(owner: &str, field: &str) -> Option<&'static FieldMeta> {
    FIELD_META
        .iter()
        .find(|m| m.owner == owner && m.field == field)
}

/// The schema name of the object type held by `owner.field` (for a list or
/// map field, of its items or values), e.g. `("io.k8s.api.core.v1.PodSpec",
/// "containers")` → `io.k8s.api.core.v1.Container`. `None` for scalars,
/// free-form values, unknown types and unknown fields. With [`field_meta`]
/// this lets a caller walk any served object type by type.
pub fn field_type(owner: &str, field: &str) -> Option<&'static str> {
    let index: &'static Index = &INDEX;
    let s = &index.structs[*index.by_name.get(owner)?];
    let mut ty = &s.fields.get(field)?.ty;
    while let Ty::List(inner) | Ty::Map(inner) = ty {
        ty = inner;
    }
    match ty {
        Ty::Struct(i) => Some(index.structs[*i].name.as_str()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// The type index: for each schema, the type of each of its fields.

/// The shape of a value at some place of an object.
#[derive(Debug)]
enum Ty {
    /// Unknown or free-form (RawExtension, FieldsV1, unknown fields).
    Any,
    /// A string, number, boolean (or int-or-string, quantity, time).
    Scalar,
    /// An object with declared properties: index into `Index::structs`.
    Struct(usize),
    /// A list with elements of this type.
    List(Box<Ty>),
    /// A string-keyed map with values of this type.
    Map(Box<Ty>),
}

static ANY: Ty = Ty::Any;

#[derive(Debug)]
struct Field {
    ty: Ty,
    meta: Option<&'static FieldMeta>,
}

#[derive(Debug)]
struct Struct {
    name: String,
    fields: HashMap<String, Field>,
}

#[derive(Debug, Default)]
struct Index {
    structs: Vec<Struct>,
    by_name: HashMap<String, usize>,
}

static INDEX: LazyLock<Index> = LazyLock::new(build_index);

fn build_index() -> Index {
    let mut generator =
        schemars::SchemaGenerator::new(schemars::generate::SchemaSettings::openapi3());
    for rt in REGISTRY {
        let _ = (rt.schema)(&mut generator);
    }
    let defs = generator.take_definitions(true);
    let mut index = Index::default();
    // First give every object type with properties a slot, so that fields
    // can refer to types defined later.
    for (name, def) in &defs {
        if def.get("properties").is_some_and(Value::is_object) {
            index.by_name.insert(name.clone(), index.structs.len());
            index.structs.push(Struct {
                name: name.clone(),
                fields: HashMap::new(),
            });
        }
    }
    for (name, def) in &defs {
        let Some(&slot) = index.by_name.get(name) else {
            continue;
        };
        let Some(props) = def.get("properties").and_then(Value::as_object) else {
            continue;
        };
        let mut fields = HashMap::with_capacity(props.len());
        for (field, schema) in props {
            let ty = resolve(schema, &defs, &index.by_name, 0);
            fields.insert(
                field.clone(),
                Field {
                    ty,
                    meta: field_meta(name, field),
                },
            );
        }
        index.structs[slot].fields = fields;
    }
    index
}

/// The type a (sub)schema describes.
fn resolve(
    schema: &Value,
    defs: &Map<String, Value>,
    by_name: &HashMap<String, usize>,
    depth: usize,
) -> Ty {
    if depth > 16 {
        return Ty::Any;
    }
    let Some(obj) = schema.as_object() else {
        return Ty::Any;
    };
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        if let Some(&slot) = by_name.get(name) {
            return Ty::Struct(slot);
        }
        return match defs.get(name) {
            Some(def) => resolve(def, defs, by_name, depth + 1),
            None => Ty::Any,
        };
    }
    for combinator in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = obj.get(combinator).and_then(Value::as_array) {
            let candidates: Vec<&Value> = list
                .iter()
                .filter(|s| s.get("type") != Some(&Value::from("null")))
                .collect();
            if let [only] = candidates.as_slice() {
                return resolve(only, defs, by_name, depth + 1);
            }
            return Ty::Any;
        }
    }
    if obj.contains_key("x-kubernetes-int-or-string") {
        return Ty::Scalar;
    }
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or(""),
        _ => "",
    };
    match ty {
        "array" => Ty::List(Box::new(
            obj.get("items")
                .map_or(Ty::Any, |s| resolve(s, defs, by_name, depth + 1)),
        )),
        "object" => match obj.get("additionalProperties") {
            Some(ap @ Value::Object(_)) => Ty::Map(Box::new(resolve(ap, defs, by_name, depth + 1))),
            _ => Ty::Any,
        },
        "string" | "integer" | "number" | "boolean" => Ty::Scalar,
        _ => Ty::Any,
    }
}

impl Ty {
    /// The type and patch metadata of field `key` of a value of this type.
    fn field(&self, key: &str) -> (&Ty, Option<&'static FieldMeta>) {
        match self {
            Ty::Struct(i) => match INDEX.structs[*i].fields.get(key) {
                Some(f) => (&f.ty, f.meta),
                None => (&ANY, None),
            },
            Ty::Map(v) => (v, None),
            _ => (&ANY, None),
        }
    }
    fn elem(&self) -> &Ty {
        match self {
            Ty::List(e) => e,
            _ => &ANY,
        }
    }
    /// Whether keys of this object are known, so that unknown `$` keys are errors.
    fn typed(&self) -> bool {
        matches!(self, Ty::Struct(_) | Ty::Map(_))
    }
    fn name(&self) -> &str {
        match self {
            Ty::Struct(i) => &INDEX.structs[*i].name,
            Ty::Map(_) => "a map",
            _ => "a value of unknown type",
        }
    }
}

// ---------------------------------------------------------------------------
// Applying a patch.

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

type Res<T> = Result<T, PatchError>;

fn bad<T>(msg: impl Into<String>) -> Res<T> {
    Err(PatchError::BadPatch(msg.into()))
}

/// Applies a strategic merge patch to `doc`, an object of kind `rt`.
///
/// Errors are [`PatchError::BadPatch`] for malformed patches (not an object,
/// directives of the wrong type, unknown directives, list items without
/// their merge key, ...).
pub fn strategic_merge_patch(
    doc: &Value,
    patch: &Value,
    rt: &ResourceType,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return bad("strategic merge patch must be a JSON object");
    };
    let original = match doc {
        Value::Object(o) => o.clone(),
        _ => Map::new(),
    };
    let root = match INDEX.by_name.get(rt.schema_name) {
        Some(&i) => Ty::Struct(i),
        None => Ty::Any,
    };
    Ok(Value::Object(merge_map(original, patch.clone(), &root)?))
}

/// Renders a value for an error message, shortened.
fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 200 {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

fn show_map(m: &Map<String, Value>) -> String {
    show(&Value::Object(m.clone()))
}

/// Value equality as Go compares decoded JSON: numbers by value.
fn veq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || (x.as_f64().is_some() && x.as_f64() == y.as_f64())
        }
        _ => a == b,
    }
}

fn opt_eq(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => veq(a, b),
        (None, None) => true,
        _ => false,
    }
}

fn merges(meta: Option<&FieldMeta>) -> bool {
    meta.is_some_and(FieldMeta::merges)
}

fn merge_key(meta: Option<&FieldMeta>) -> &'static str {
    meta.map_or("", |m| m.merge_key)
}

/// Merges `patch` into `original` (upstream `mergeMap`).
fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    ty: &Ty,
) -> Res<Map<String, Value>> {
    if let Some(directive) = patch.shift_remove(DIRECTIVE) {
        match directive.as_str() {
            Some("replace") => return merge_map(Map::new(), patch, ty),
            Some("delete") => return Ok(Map::new()),
            Some("merge") => {}
            _ => {
                return bad(format!(
                    "unknown patch type: {} in map: {}",
                    show(&directive),
                    show_map(&patch)
                ))
            }
        }
    }
    if let Some(retain) = patch.shift_remove(RETAIN_KEYS) {
        apply_retain_keys(&mut original, &patch, &retain)?;
    }
    let order_keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for key in order_keys {
        let order = patch.shift_remove(&key).unwrap_or(Value::Null);
        set_element_order(
            &mut original,
            &mut patch,
            &key[SET_ELEMENT_ORDER.len()..],
            order,
            ty,
        )?;
    }
    for (key, patch_value) in patch {
        if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            delete_from_primitive_list(&mut original, field, patch_value)?;
            continue;
        }
        if key.starts_with('$') && ty.typed() {
            return bad(format!(
                "unknown patch directive or field {key:?} in {}",
                ty.name()
            ));
        }
        if patch_value.is_null() {
            original.shift_remove(&key);
            continue;
        }
        let (field_ty, meta) = ty.field(&key);
        match original.get_mut(&key) {
            None => {
                if let Some(v) = materialize(patch_value, field_ty)? {
                    original.insert(key, v);
                }
            }
            Some(current) => match merge_value(current.take(), patch_value, field_ty, meta)? {
                Some(v) => *current = v,
                None => {
                    original.shift_remove(&key);
                }
            },
        }
    }
    Ok(original)
}

/// Merges one field's patch value into its current value; `None` removes the field.
fn merge_value(
    current: Value,
    patch: Value,
    ty: &Ty,
    meta: Option<&FieldMeta>,
) -> Res<Option<Value>> {
    match (current, patch) {
        (Value::Object(c), Value::Object(p)) => {
            if meta.is_some_and(FieldMeta::replaces) {
                Ok(Some(Value::Object(merge_map(Map::new(), p, ty)?)))
            } else {
                Ok(Some(Value::Object(merge_map(c, p, ty)?)))
            }
        }
        (Value::Array(c), Value::Array(p)) => {
            if merges(meta) {
                Ok(Some(Value::Array(merge_list(
                    c,
                    p,
                    ty.elem(),
                    merge_key(meta),
                )?)))
            } else {
                Ok(Some(Value::Array(materialize_list(p, ty.elem())?)))
            }
        }
        (_, p) => materialize(p, ty),
    }
}

/// A patch value set where the original has nothing: directives applied to
/// nothing, nulls dropped. `None` when nothing remains (a null, or a map
/// with `$patch: delete`).
fn materialize(patch: Value, ty: &Ty) -> Res<Option<Value>> {
    match patch {
        Value::Null => Ok(None),
        Value::Object(p) => {
            if p.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                return Ok(None);
            }
            Ok(Some(Value::Object(merge_map(Map::new(), p, ty)?)))
        }
        Value::Array(p) => Ok(Some(Value::Array(materialize_list(p, ty.elem())?))),
        scalar => Ok(Some(scalar)),
    }
}

/// A patch list taken as the new value: elements carrying `$patch: replace`
/// or `$patch: delete` (list markers, deletions) are dropped, the rest
/// materialized.
fn materialize_list(patch: Vec<Value>, elem: &Ty) -> Res<Vec<Value>> {
    let mut out = Vec::with_capacity(patch.len());
    for item in patch {
        match item {
            Value::Object(mut m) if m.contains_key(DIRECTIVE) => match m[DIRECTIVE].as_str() {
                Some("replace" | "delete") => {}
                Some("merge") => {
                    m.shift_remove(DIRECTIVE);
                    if !m.is_empty() {
                        out.push(Value::Object(merge_map(Map::new(), m, elem)?));
                    }
                }
                _ => {
                    return bad(format!(
                        "unknown patch type: {} in map: {}",
                        show(&m[DIRECTIVE]),
                        show_map(&m)
                    ))
                }
            },
            Value::Object(m) => out.push(Value::Object(merge_map(Map::new(), m, elem)?)),
            Value::Array(a) => out.push(Value::Array(materialize_list(a, elem.elem())?)),
            other => out.push(other),
        }
    }
    Ok(out)
}

/// `$retainKeys`: keys of the original not listed are cleared; every key the
/// patch sets must be listed.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    retain: &Value,
) -> Res<()> {
    let Value::Array(list) = retain else {
        return bad(format!(
            "invalid patch format of retainKeys: expected a list, got {}",
            show(retain)
        ));
    };
    let listed = |k: &str| list.iter().any(|v| v.as_str() == Some(k));
    for (k, v) in patch {
        if v.is_null()
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || k.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !listed(k) {
            return bad(format!("invalid patch format of retainKeys: {k:?} is set by the patch but not listed in $retainKeys"));
        }
    }
    original.retain(|k, _| listed(k));
    Ok(())
}

/// `$deleteFromPrimitiveList/<field>: [...]` removes those values from the list.
fn delete_from_primitive_list(
    original: &mut Map<String, Value>,
    field: &str,
    patch: Value,
) -> Res<()> {
    match patch {
        Value::Null => {
            original.shift_remove(field);
        }
        Value::Array(remove) => {
            if remove.iter().any(|v| v.is_object() || v.is_array()) {
                return bad(format!("invalid patch format of primitive list: $deleteFromPrimitiveList/{field} must list scalars"));
            }
            if let Some(Value::Array(current)) = original.get_mut(field) {
                current.retain(|x| !remove.iter().any(|r| veq(x, r)));
            }
        }
        other => {
            return bad(format!(
                "invalid patch format of primitive list: $deleteFromPrimitiveList/{field} must be a list, got {}",
                show(&other)
            ))
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ElemKind {
    Objects,
    Scalars,
}

/// The kind of the elements of both lists: all objects or all scalars.
fn element_kind(a: &[Value], b: &[Value]) -> Res<ElemKind> {
    let mut kind = None;
    for v in a.iter().chain(b) {
        let k = match v {
            Value::Array(_) => return bad("lists of lists are not supported"),
            Value::Object(_) => ElemKind::Objects,
            _ => ElemKind::Scalars,
        };
        match kind {
            None => kind = Some(k),
            Some(prev) if prev != k => {
                return bad(format!(
                    "list element types are not identical: {} and {}",
                    show(&Value::Array(a.to_vec())),
                    show(&Value::Array(b.to_vec()))
                ))
            }
            _ => {}
        }
    }
    Ok(kind.unwrap_or(ElemKind::Scalars))
}

/// Merges a patch list into a list with patch strategy `merge` (upstream `mergeSlice`).
fn merge_list(original: Vec<Value>, patch: Vec<Value>, elem: &Ty, key: &str) -> Res<Vec<Value>> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    if element_kind(&original, &patch)? == ElemKind::Scalars {
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(&patch) {
            if !merged.iter().any(|m| veq(m, v)) {
                merged.push(v.clone());
            }
        }
        return Ok(order_list(merged, &patch, &original, None));
    }
    if key.is_empty() {
        return bad(format!(
            "cannot merge lists without merge key for {}",
            elem.name()
        ));
    }
    let mut original = original;
    let mut replace = false;
    let mut plain: Vec<Map<String, Value>> = Vec::with_capacity(patch.len());
    for item in patch {
        let Value::Object(mut m) = item else { continue };
        let Some(directive) = m.get(DIRECTIVE) else {
            plain.push(m);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let Some(kv) = m.get(key) else {
                    return bad(format!(
                        "map: {} does not contain declared merge key: {key}",
                        show_map(&m)
                    ));
                };
                original.retain(|o| !opt_eq(o.get(key), Some(kv)));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                m.shift_remove(DIRECTIVE);
                if !m.is_empty() {
                    plain.push(m);
                }
            }
            _ => {
                return bad(format!(
                    "unknown patch type: {} in map: {}",
                    show(directive),
                    show_map(&m)
                ))
            }
        }
    }
    if replace {
        return plain
            .into_iter()
            .map(|m| merge_map(Map::new(), m, elem).map(Value::Object))
            .collect();
    }
    let mut patch_order: Vec<Value> = Vec::with_capacity(plain.len());
    let server_order = original.clone();
    for m in plain {
        let Some(kv) = m.get(key).cloned() else {
            return bad(format!(
                "map: {} does not contain declared merge key: {key}",
                show_map(&m)
            ));
        };
        patch_order.push(Value::Object(Map::from_iter([(
            key.to_string(),
            kv.clone(),
        )])));
        match original.iter().position(|o| opt_eq(o.get(key), Some(&kv))) {
            Some(pos) => {
                let current = match original[pos].take() {
                    Value::Object(o) => o,
                    _ => Map::new(),
                };
                original[pos] = Value::Object(merge_map(current, m, elem)?);
            }
            None => original.push(Value::Object(merge_map(Map::new(), m, elem)?)),
        }
    }
    Ok(order_list(original, &patch_order, &server_order, Some(key)))
}

/// Orders a merged list as upstream does: items named by `patch_order` in
/// that order, the others in `server_order`'s order, interleaved so that
/// each keeps its place relative to the items around it in `server_order`.
fn order_list(
    merged: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let position =
        |list: &[Value], id: Option<&Value>| list.iter().position(|x| opt_eq(ident(x, key), id));
    let mut in_patch: Vec<(usize, Option<usize>, Value)> = Vec::new();
    let mut server_only: Vec<(Option<usize>, Value)> = Vec::new();
    for v in merged {
        let server_pos = position(server_order, ident(&v, key));
        match position(patch_order, ident(&v, key)) {
            Some(i) => in_patch.push((i, server_pos, v)),
            None => server_only.push((server_pos, v)),
        }
    }
    in_patch.sort_by_key(|(i, _, _)| *i);
    server_only.sort_by_key(|(i, _)| i.unwrap_or(usize::MAX));
    // Interleave: a server-only item goes first when both it and the next
    // patch item are in the server list and it comes before there.
    let mut out = Vec::with_capacity(in_patch.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = in_patch.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((l, _)), Some((_, r, _))) => matches!((l, r), (Some(l), Some(r)) if l < r),
        };
        if take_left {
            out.extend(left.next().map(|(_, v)| v));
        } else {
            out.extend(right.next().map(|(_, _, v)| v));
        }
    }
    out
}

/// What identifies a list item: its merge key's value, or itself.
fn ident<'a>(v: &'a Value, key: Option<&str>) -> Option<&'a Value> {
    match key {
        Some(k) => v.get(k),
        None => Some(v),
    }
}

/// `$setElementOrder/<field>`: merges the field's patch list (if any) and
/// orders the result by the directive's list (upstream `mergePatchIntoOriginal`).
fn set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    field: &str,
    order: Value,
    ty: &Ty,
) -> Res<()> {
    let Value::Array(order) = order else {
        return bad(format!(
            "invalid patch format of setElementOrder list: $setElementOrder/{field} must be a list"
        ));
    };
    let (field_ty, meta) = ty.field(field);
    let key = merge_key(meta);
    let original_list = match original.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(a.clone()),
        Some(other) => {
            return bad(format!(
                "$setElementOrder/{field}: the object's {field} is not a list but {}",
                show(other)
            ))
        }
    };
    let patch_list = match patch.get(field) {
        None => None,
        // A null deletes the field; the main loop does that.
        Some(Value::Null) => return Ok(()),
        Some(Value::Array(_)) => match patch.shift_remove(field) {
            Some(Value::Array(a)) => Some(a),
            _ => None,
        },
        Some(other) => {
            return bad(format!(
                "$setElementOrder/{field}: the patch's {field} is not a list but {}",
                show(other)
            ))
        }
    };
    if !key.is_empty() {
        for item in &order {
            if item.get(key).is_none() {
                return bad(format!(
                    "$setElementOrder/{field}: {} does not contain declared merge key: {key}",
                    show(item)
                ));
            }
        }
    }
    if let Some(p) = &patch_list {
        validate_order(p, &order, key, field)?;
    }
    let merged = match (original_list.clone(), patch_list) {
        (Some(o), None) => o,
        (None, Some(p)) => materialize_list(p, field_ty.elem())?,
        (Some(o), Some(p)) => {
            if merges(meta) {
                merge_list(o, p, field_ty.elem(), key)?
            } else {
                materialize_list(p, field_ty.elem())?
            }
        }
        (None, None) => return Ok(()),
    };
    let key_opt = (!key.is_empty()).then_some(key);
    let ordered = order_list(
        merged,
        &order,
        original_list.as_deref().unwrap_or(&[]),
        key_opt,
    );
    original.insert(field.to_string(), Value::Array(ordered));
    Ok(())
}

/// The non-deleting items of the patch list must appear in the
/// `$setElementOrder` list, in the same relative order.
fn validate_order(patch: &[Value], order: &[Value], key: &str, field: &str) -> Res<()> {
    let same = |a: &Value, b: &Value| -> Res<bool> {
        if key.is_empty() {
            return Ok(veq(a, b));
        }
        match (a.get(key), b.get(key)) {
            (Some(x), Some(y)) => Ok(veq(x, y)),
            _ => bad(format!(
                "map: {} does not contain declared merge key: {key}",
                show(a)
            )),
        }
    };
    let items: Vec<&Value> = patch
        .iter()
        .filter(|v| v.get(DIRECTIVE).is_none())
        .collect();
    let (mut p, mut o) = (0, 0);
    while p < items.len() && o < order.len() {
        if same(items[p], &order[o])? {
            p += 1;
        }
        o += 1;
    }
    if p < items.len() {
        return bad(format!(
            "the order in patch list {} doesn't match $setElementOrder/{field} list {}",
            show(&Value::Array(patch.to_vec())),
            show(&Value::Array(order.to_vec()))
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
