//! The kinds registry: every served resource is one `ResourceType` entry.
//! Adding a kind means adding an entry here and, if it has special behaviour,
//! a `KindOps` in `kinds`.

use crate::kinds::{self, KindOps};
use k8s_openapi::api::{apps, batch, coordination, core, discovery, events, policy, scheduling};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Namespaced,
    Cluster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    Status,
    Scale,
    Binding,
    Eviction,
    Log,
    Exec,
    Attach,
    PortForward,
    Finalize,
}

impl Subresource {
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Eviction => "eviction",
            Subresource::Log => "log",
            Subresource::Exec => "exec",
            Subresource::Attach => "attach",
            Subresource::PortForward => "portforward",
            Subresource::Finalize => "finalize",
        }
    }

    pub fn parse(s: &str) -> Option<Subresource> {
        Some(match s {
            "status" => Subresource::Status,
            "scale" => Subresource::Scale,
            "binding" => Subresource::Binding,
            "eviction" => Subresource::Eviction,
            "log" => Subresource::Log,
            "exec" => Subresource::Exec,
            "attach" => Subresource::Attach,
            "portforward" => Subresource::PortForward,
            "finalize" => Subresource::Finalize,
            _ => return None,
        })
    }
}

/// Normalises a JSON object through its typed `k8s-openapi` form: unknown
/// fields dropped, required fields present, types checked.
pub type NormalizeFn = fn(Value) -> Result<Value, serde_json::Error>;

fn normalize<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: Value,
) -> Result<Value, serde_json::Error> {
    let typed: T = serde_json::from_value(v)?;
    serde_json::to_value(typed)
}

/// The JSON schema of a kind, from `k8s-openapi`, for OpenAPI documents.
pub type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

fn schema<T: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

/// One served resource.
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub scope: Scope,
    pub subresources: &'static [Subresource],
    /// Whether `metadata.generation` is bumped on spec changes.
    pub has_spec: bool,
    /// Whether a `status` field exists (and is owned by the status subresource).
    pub has_status: bool,
    /// Store prefix segment; kinds sharing storage (core and events.k8s.io
    /// Events) share it and convert with `ops.to_storage`/`from_storage`.
    pub storage: &'static str,
    pub normalize: NormalizeFn,
    pub schema: SchemaFn,
    /// Schema name in `components.schemas` (`io.k8s.api.core.v1.Pod`).
    pub schema_name: &'static str,
    pub ops: &'static KindOps,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    pub fn namespaced(&self) -> bool {
        self.scope == Scope::Namespaced
    }
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
    pub fn has_subresource(&self, s: Subresource) -> bool {
        self.subresources.contains(&s)
    }
    /// `deployments.apps`, or `pods` for the core group.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    /// Key prefix in the store for all objects of this resource.
    pub fn key_prefix(&self) -> String {
        format!("/registry/{}/", self.storage)
    }
    /// Store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced() => format!("/registry/{}/{ns}/{name}", self.storage),
            _ => format!("/registry/{}/{name}", self.storage),
        }
    }
    /// Key prefix of one namespace's objects.
    pub fn namespace_prefix(&self, namespace: &str) -> String {
        format!("/registry/{}/{namespace}/", self.storage)
    }
}

use Subresource::*;

macro_rules! rt {
    ($t:ty, $group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, $short:expr, $cats:expr, $scope:expr, $subs:expr, spec: $spec:expr, status: $status:expr, storage: $storage:expr, schema: $sname:expr, ops: $ops:expr) => {
        ResourceType {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            short_names: $short,
            categories: $cats,
            scope: $scope,
            subresources: $subs,
            has_spec: $spec,
            has_status: $status,
            storage: $storage,
            normalize: normalize::<$t>,
            schema: schema::<$t>,
            schema_name: $sname,
            ops: $ops,
        }
    };
}

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

/// Every served resource, in discovery order.
pub static REGISTRY: &[ResourceType] = &[
    rt!(core::v1::Namespace, "", "v1", "Namespace", "namespaces", "namespace", &["ns"], NONE, Scope::Cluster, &[Status, Finalize], spec: false, status: true, storage: "namespaces", schema: "io.k8s.api.core.v1.Namespace", ops: &kinds::NAMESPACE),
    rt!(core::v1::Node, "", "v1", "Node", "nodes", "node", &["no"], NONE, Scope::Cluster, &[Status], spec: false, status: true, storage: "minions", schema: "io.k8s.api.core.v1.Node", ops: &kinds::NODE),
    rt!(core::v1::Pod, "", "v1", "Pod", "pods", "pod", &["po"], ALL, Scope::Namespaced, &[Status, Binding, Eviction, Log, Exec, Attach, PortForward], spec: false, status: true, storage: "pods", schema: "io.k8s.api.core.v1.Pod", ops: &kinds::POD),
    rt!(core::v1::Service, "", "v1", "Service", "services", "service", &["svc"], ALL, Scope::Namespaced, &[Status], spec: false, status: true, storage: "services/specs", schema: "io.k8s.api.core.v1.Service", ops: &kinds::SERVICE),
    rt!(core::v1::Endpoints, "", "v1", "Endpoints", "endpoints", "endpoints", &["ep"], NONE, Scope::Namespaced, &[], spec: false, status: false, storage: "services/endpoints", schema: "io.k8s.api.core.v1.Endpoints", ops: &kinds::ENDPOINTS),
    rt!(core::v1::ReplicationController, "", "v1", "ReplicationController", "replicationcontrollers", "replicationcontroller", &["rc"], ALL, Scope::Namespaced, &[Status, Scale], spec: true, status: true, storage: "controllers", schema: "io.k8s.api.core.v1.ReplicationController", ops: &kinds::REPLICATION_CONTROLLER),
    rt!(core::v1::ConfigMap, "", "v1", "ConfigMap", "configmaps", "configmap", &["cm"], NONE, Scope::Namespaced, &[], spec: false, status: false, storage: "configmaps", schema: "io.k8s.api.core.v1.ConfigMap", ops: &kinds::CONFIG_MAP),
    rt!(core::v1::Secret, "", "v1", "Secret", "secrets", "secret", NONE, NONE, Scope::Namespaced, &[], spec: false, status: false, storage: "secrets", schema: "io.k8s.api.core.v1.Secret", ops: &kinds::SECRET),
    rt!(core::v1::ServiceAccount, "", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", &["sa"], NONE, Scope::Namespaced, &[], spec: false, status: false, storage: "serviceaccounts", schema: "io.k8s.api.core.v1.ServiceAccount", ops: &kinds::SERVICE_ACCOUNT),
    rt!(core::v1::Event, "", "v1", "Event", "events", "event", &["ev"], NONE, Scope::Namespaced, &[], spec: false, status: false, storage: "events", schema: "io.k8s.api.core.v1.Event", ops: &kinds::EVENT),
    rt!(events::v1::Event, "events.k8s.io", "v1", "Event", "events", "event", &["ev"], NONE, Scope::Namespaced, &[], spec: false, status: false, storage: "events", schema: "io.k8s.api.events.v1.Event", ops: &kinds::EVENT_V1),
    rt!(coordination::v1::Lease, "coordination.k8s.io", "v1", "Lease", "leases", "lease", NONE, NONE, Scope::Namespaced, &[], spec: false, status: false, storage: "leases", schema: "io.k8s.api.coordination.v1.Lease", ops: &kinds::LEASE),
    rt!(apps::v1::Deployment, "apps", "v1", "Deployment", "deployments", "deployment", &["deploy"], ALL, Scope::Namespaced, &[Status, Scale], spec: true, status: true, storage: "deployments", schema: "io.k8s.api.apps.v1.Deployment", ops: &kinds::DEPLOYMENT),
    rt!(apps::v1::ReplicaSet, "apps", "v1", "ReplicaSet", "replicasets", "replicaset", &["rs"], ALL, Scope::Namespaced, &[Status, Scale], spec: true, status: true, storage: "replicasets", schema: "io.k8s.api.apps.v1.ReplicaSet", ops: &kinds::REPLICA_SET),
    rt!(apps::v1::DaemonSet, "apps", "v1", "DaemonSet", "daemonsets", "daemonset", &["ds"], ALL, Scope::Namespaced, &[Status], spec: true, status: true, storage: "daemonsets", schema: "io.k8s.api.apps.v1.DaemonSet", ops: &kinds::DAEMON_SET),
    rt!(apps::v1::StatefulSet, "apps", "v1", "StatefulSet", "statefulsets", "statefulset", &["sts"], ALL, Scope::Namespaced, &[Status, Scale], spec: true, status: true, storage: "statefulsets", schema: "io.k8s.api.apps.v1.StatefulSet", ops: &kinds::STATEFUL_SET),
    rt!(apps::v1::ControllerRevision, "apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", NONE, NONE, Scope::Namespaced, &[], spec: false, status: false, storage: "controllerrevisions", schema: "io.k8s.api.apps.v1.ControllerRevision", ops: &kinds::CONTROLLER_REVISION),
    rt!(batch::v1::Job, "batch", "v1", "Job", "jobs", "job", NONE, ALL, Scope::Namespaced, &[Status], spec: true, status: true, storage: "jobs", schema: "io.k8s.api.batch.v1.Job", ops: &kinds::JOB),
    rt!(batch::v1::CronJob, "batch", "v1", "CronJob", "cronjobs", "cronjob", &["cj"], ALL, Scope::Namespaced, &[Status], spec: true, status: true, storage: "cronjobs", schema: "io.k8s.api.batch.v1.CronJob", ops: &kinds::CRON_JOB),
    rt!(discovery::v1::EndpointSlice, "discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", NONE, NONE, Scope::Namespaced, &[], spec: false, status: false, storage: "endpointslices", schema: "io.k8s.api.discovery.v1.EndpointSlice", ops: &kinds::ENDPOINT_SLICE),
    rt!(scheduling::v1::PriorityClass, "scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", "priorityclass", &["pc"], NONE, Scope::Cluster, &[], spec: false, status: false, storage: "priorityclasses", schema: "io.k8s.api.scheduling.v1.PriorityClass", ops: &kinds::PRIORITY_CLASS),
    rt!(policy::v1::PodDisruptionBudget, "policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", &["pdb"], NONE, Scope::Namespaced, &[Status], spec: true, status: true, storage: "poddisruptionbudgets", schema: "io.k8s.api.policy.v1.PodDisruptionBudget", ops: &kinds::POD_DISRUPTION_BUDGET),
];

/// Finds a resource by group and plural (or singular or short name, for CLI use).
pub fn lookup(group: &str, version: &str, resource: &str) -> Option<&'static ResourceType> {
    REGISTRY
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == resource)
}

/// Finds a resource by group and kind.
pub fn lookup_kind(group: &str, kind: &str) -> Option<&'static ResourceType> {
    REGISTRY.iter().find(|r| r.group == group && r.kind == kind)
}

/// The served group-versions, core (`""`) first, in discovery order.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in REGISTRY {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_normalizes_an_empty_object() {
        for r in REGISTRY {
            let v = serde_json::json!({"apiVersion": r.api_version(), "kind": r.kind, "metadata": {"name": "x"}});
            let out = (r.normalize)(v).unwrap_or_else(|e| panic!("{}: {e}", r.kind));
            assert_eq!(out["kind"], r.kind);
            assert_eq!(out["apiVersion"], r.api_version());
        }
    }

    #[test]
    fn keys_are_distinct_per_scope() {
        let pods = lookup("", "v1", "pods").unwrap();
        assert_eq!(pods.key(Some("default"), "a"), "/registry/pods/default/a");
        let nodes = lookup("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key(None, "n1"), "/registry/minions/n1");
        assert!(group_versions().starts_with(&[("", "v1")]));
    }
}
