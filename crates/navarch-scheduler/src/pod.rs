//! The scheduler's view of a Pod, read once from its upstream JSON.

use navarch_api::selector::LabelSelector;
use serde_json::{Map, Value};

use crate::json;
use crate::quantity;
use crate::resources::{pod_requests, resource_kind, ContainerRequests, ResourceKind, Resources};
use crate::selector::{
    label_selector, with_label_keys, NodeSelectorTerm, PodLabels, PreferredNodeTerm,
    RequiredNodeAffinity, Toleration,
};
use crate::Error;

const KIND: &str = "Pod";

/// The label that marks a node whose pods share the node's network (the
/// process runtime): on such a node every `containerPort` is a host port.
pub const HOST_NETWORK_NODE_LABEL: &str = "navarch.io/host-network-pods";

/// A host port a pod binds: upstream `HostPortInfo` keys, sanitised
/// (empty IP is `0.0.0.0`, empty protocol is `TCP`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    pub fn new(protocol: &str, ip: &str, port: i32) -> HostPort {
        HostPort {
            protocol: if protocol.is_empty() {
                "TCP".into()
            } else {
                protocol.to_string()
            },
            ip: if ip.is_empty() {
                "0.0.0.0".into()
            } else {
                ip.to_string()
            },
            port,
        }
    }
}

/// A container port of an app container or a sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub container_port: i32,
    pub host_port: i32,
    pub protocol: String,
    pub host_ip: String,
}

/// A processed `PodAffinityTerm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffinityTerm {
    /// Explicit namespaces; the pod's own when neither these nor a
    /// namespace selector are given.
    pub namespaces: Vec<String>,
    /// `None`: no namespace selector (selects no namespace).
    pub namespace_selector: Option<LabelSelector>,
    /// The label selector, with `matchLabelKeys` / `mismatchLabelKeys`
    /// merged in; a null selector selects nothing.
    pub selector: LabelSelector,
    pub topology_key: String,
}

impl AffinityTerm {
    /// Upstream `AffinityTerm.Matches`: the pod's namespace is listed or
    /// selected, and its labels match.
    pub fn matches(
        &self,
        namespace: &str,
        labels: &PodLabels,
        ns_labels: Option<&Map<String, Value>>,
    ) -> bool {
        self.namespace_matches(namespace, ns_labels) && self.selector.matches(Some(labels))
    }

    pub fn namespace_matches(
        &self,
        namespace: &str,
        ns_labels: Option<&Map<String, Value>>,
    ) -> bool {
        self.namespaces.iter().any(|n| n == namespace)
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|s| s.matches(ns_labels))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedAffinityTerm {
    pub weight: i64,
    pub term: AffinityTerm,
}

/// `spec.affinity.podAffinity` and `podAntiAffinity`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodAffinity {
    pub required: Vec<AffinityTerm>,
    pub required_anti: Vec<AffinityTerm>,
    pub preferred: Vec<WeightedAffinityTerm>,
    pub preferred_anti: Vec<WeightedAffinityTerm>,
}

impl PodAffinity {
    pub fn is_empty(&self) -> bool {
        self.required.is_empty()
            && self.required_anti.is_empty()
            && self.preferred.is_empty()
            && self.preferred_anti.is_empty()
    }
}

/// `whenUnsatisfiable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenUnsatisfiable {
    DoNotSchedule,
    ScheduleAnyway,
}

/// `nodeAffinityPolicy` / `nodeTaintsPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InclusionPolicy {
    Honor,
    Ignore,
}

/// A processed `TopologySpreadConstraint`, defaults applied (minDomains 1,
/// nodeAffinityPolicy Honor, nodeTaintsPolicy Ignore) and `matchLabelKeys`
/// merged into the selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpreadConstraint {
    pub max_skew: i64,
    pub topology_key: String,
    pub when_unsatisfiable: WhenUnsatisfiable,
    pub selector: LabelSelector,
    pub min_domains: i64,
    pub node_affinity_policy: InclusionPolicy,
    pub node_taints_policy: InclusionPolicy,
}

/// Everything placement needs to know about a pod, parsed once.
///
/// Build it with [`PodInfo::from_json`]; the ledger keeps bound pods as
/// `Arc<PodInfo>`.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    /// The ledger key: `metadata.uid`, or `namespace/name` without one.
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub labels: PodLabels,
    /// `spec.priority` (0 when unset).
    pub priority: i32,
    /// `spec.preemptionPolicy: Never`.
    pub preemption_never: bool,
    pub node_name: Option<String>,
    pub nominated_node_name: Option<String>,
    /// `metadata.creationTimestamp`, ns since the epoch.
    pub created: Option<i128>,
    /// `status.startTime`, ns since the epoch.
    pub started: Option<i128>,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
    /// Terminating with a `DisruptionTarget` condition from preemption.
    pub terminating_by_preemption: bool,
    /// `status.phase` is `Succeeded` or `Failed`.
    pub terminal: bool,
    /// `spec.schedulingGates` is not empty.
    pub scheduling_gated: bool,
    /// Requests for fit: max(app + sidecars, init peak) + overhead.
    pub requests: Resources,
    /// Requests with upstream's scoring defaults (100m, 200Mi) for
    /// containers that set no cpu / memory; cpu and memory only.
    pub non_zero_milli_cpu: i64,
    pub non_zero_memory: i64,
    pub host_network: bool,
    /// Ports of app containers and sidecars.
    pub ports: Vec<PortSpec>,
    pub tolerations: Vec<Toleration>,
    pub required_node_affinity: RequiredNodeAffinity,
    pub preferred_node_affinity: Vec<PreferredNodeTerm>,
    pub affinity: PodAffinity,
    pub spread_constraints: Vec<SpreadConstraint>,
    /// For upstream's cluster-default spreading (applied only when the
    /// pod has no constraints of its own): the selector of the services,
    /// replication controllers, replica sets and stateful sets that select
    /// this pod, as the driver computes it. `None`: no default spreading.
    pub default_spread_selector: Option<LabelSelector>,
}

impl PodInfo {
    /// Reads a Pod object (upstream JSON).
    pub fn from_json(pod: &Value) -> Result<PodInfo, Error> {
        let meta = json::obj(KIND, "metadata", pod.get("metadata"))?;
        let spec = json::obj(KIND, "spec", pod.get("spec"))?;
        let status = json::obj(KIND, "status", pod.get("status"))?;
        let m = |k: &str| meta.and_then(|m| m.get(k));
        let s = |k: &str| spec.and_then(|m| m.get(k));
        let st = |k: &str| status.and_then(|m| m.get(k));

        let namespace = json::string(KIND, "metadata.namespace", m("namespace"))?
            .unwrap_or("default")
            .to_string();
        let name = json::string(KIND, "metadata.name", m("name"))?
            .unwrap_or("")
            .to_string();
        let uid = json::string(KIND, "metadata.uid", m("uid"))?.unwrap_or("");
        let key = if uid.is_empty() {
            format!("{namespace}/{name}")
        } else {
            uid.to_string()
        };
        let labels = match json::obj(KIND, "metadata.labels", m("labels"))? {
            Some(l) => {
                for (k, v) in l {
                    if !v.is_string() {
                        return Err(Error::invalid(
                            KIND,
                            &format!("metadata.labels.{k}"),
                            "must be a string",
                        ));
                    }
                }
                l.clone()
            }
            None => Map::new(),
        };
        let priority = json::int(KIND, "spec.priority", s("priority"))?.unwrap_or(0);
        let priority = i32::try_from(priority)
            .map_err(|_| Error::invalid(KIND, "spec.priority", "must fit in 32 bits"))?;
        let preemption_never =
            json::string(KIND, "spec.preemptionPolicy", s("preemptionPolicy"))? == Some("Never");
        let node_name = json::string(KIND, "spec.nodeName", s("nodeName"))?
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let nominated_node_name =
            json::string(KIND, "status.nominatedNodeName", st("nominatedNodeName"))?
                .filter(|n| !n.is_empty())
                .map(str::to_string);
        let created = json::timestamp(KIND, "metadata.creationTimestamp", m("creationTimestamp"))?;
        let started = json::timestamp(KIND, "status.startTime", st("startTime"))?;
        let terminating = !matches!(m("deletionTimestamp"), None | Some(Value::Null));
        let mut terminating_by_preemption = false;
        if terminating {
            for c in json::arr(KIND, "status.conditions", st("conditions"))? {
                if c.get("type").and_then(Value::as_str) == Some("DisruptionTarget")
                    && c.get("status").and_then(Value::as_str) == Some("True")
                    && c.get("reason").and_then(Value::as_str) == Some("PreemptionByScheduler")
                {
                    terminating_by_preemption = true;
                }
            }
        }
        let terminal = matches!(
            json::string(KIND, "status.phase", st("phase"))?,
            Some("Succeeded") | Some("Failed")
        );
        let scheduling_gated =
            !json::arr(KIND, "spec.schedulingGates", s("schedulingGates"))?.is_empty();
        let host_network = json::boolean(KIND, "spec.hostNetwork", s("hostNetwork"))?;

        // Containers: requests and ports.
        let mut ports = Vec::new();
        let mut app = Vec::new();
        for (i, c) in json::arr(KIND, "spec.containers", s("containers"))?
            .iter()
            .enumerate()
        {
            let path = format!("spec.containers[{i}]");
            app.push(container_requests(&path, c)?);
            container_ports(&path, c, &mut ports)?;
        }
        let mut init = Vec::new();
        for (i, c) in json::arr(KIND, "spec.initContainers", s("initContainers"))?
            .iter()
            .enumerate()
        {
            let path = format!("spec.initContainers[{i}]");
            let sidecar = json::string(
                KIND,
                &format!("{path}.restartPolicy"),
                c.get("restartPolicy"),
            )? == Some("Always");
            init.push((container_requests(&path, c)?, sidecar));
            if sidecar {
                container_ports(&path, c, &mut ports)?;
            }
        }
        let overhead = resource_list("spec.overhead", s("overhead"))?.requests;
        let requests = pod_requests(&app, &init, &overhead, false);
        let non_zero = pod_requests(&app, &init, &overhead, true);

        let mut tolerations = Vec::new();
        for (i, t) in json::arr(KIND, "spec.tolerations", s("tolerations"))?
            .iter()
            .enumerate()
        {
            if let Some(t) = Toleration::parse(KIND, &format!("spec.tolerations[{i}]"), t)? {
                tolerations.push(t);
            }
        }

        let node_selector = json::string_map(KIND, "spec.nodeSelector", s("nodeSelector"))?;
        let affinity = json::obj(KIND, "spec.affinity", s("affinity"))?;
        let a = |k: &str| affinity.and_then(|m| m.get(k));
        let node_aff = json::obj(KIND, "spec.affinity.nodeAffinity", a("nodeAffinity"))?;
        let mut required_terms = None;
        let mut preferred_node_affinity = Vec::new();
        if let Some(na) = node_aff {
            let rp = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution";
            if let Some(req) = json::obj(
                KIND,
                rp,
                na.get("requiredDuringSchedulingIgnoredDuringExecution"),
            )? {
                let tp = format!("{rp}.nodeSelectorTerms");
                let mut terms = Vec::new();
                for (i, t) in json::arr(KIND, &tp, req.get("nodeSelectorTerms"))?
                    .iter()
                    .enumerate()
                {
                    terms.push(NodeSelectorTerm::parse(KIND, &format!("{tp}[{i}]"), t)?);
                }
                required_terms = Some(terms);
            }
            let pp = "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution";
            for (i, t) in json::arr(
                KIND,
                pp,
                na.get("preferredDuringSchedulingIgnoredDuringExecution"),
            )?
            .iter()
            .enumerate()
            {
                let p = format!("{pp}[{i}]");
                let weight = json::int(KIND, &format!("{p}.weight"), t.get("weight"))?.unwrap_or(0);
                let term = NodeSelectorTerm::parse(
                    KIND,
                    &format!("{p}.preference"),
                    t.get("preference").unwrap_or(&Value::Null),
                )?;
                if weight != 0 {
                    preferred_node_affinity.push(PreferredNodeTerm { weight, term });
                }
            }
        }
        let required_node_affinity = RequiredNodeAffinity {
            node_selector,
            terms: required_terms,
        };

        let mut pod_affinity = PodAffinity::default();
        for (field, anti) in [("podAffinity", false), ("podAntiAffinity", true)] {
            let base = format!("spec.affinity.{field}");
            let Some(pa) = json::obj(KIND, &base, a(field))? else {
                continue;
            };
            let rp = format!("{base}.requiredDuringSchedulingIgnoredDuringExecution");
            for (i, t) in json::arr(
                KIND,
                &rp,
                pa.get("requiredDuringSchedulingIgnoredDuringExecution"),
            )?
            .iter()
            .enumerate()
            {
                let term = affinity_term(&format!("{rp}[{i}]"), t, &namespace, &labels)?;
                if anti {
                    pod_affinity.required_anti.push(term);
                } else {
                    pod_affinity.required.push(term);
                }
            }
            let pp = format!("{base}.preferredDuringSchedulingIgnoredDuringExecution");
            for (i, t) in json::arr(
                KIND,
                &pp,
                pa.get("preferredDuringSchedulingIgnoredDuringExecution"),
            )?
            .iter()
            .enumerate()
            {
                let p = format!("{pp}[{i}]");
                let weight = json::int(KIND, &format!("{p}.weight"), t.get("weight"))?.unwrap_or(0);
                let term = affinity_term(
                    &format!("{p}.podAffinityTerm"),
                    t.get("podAffinityTerm").unwrap_or(&Value::Null),
                    &namespace,
                    &labels,
                )?;
                let w = WeightedAffinityTerm { weight, term };
                if anti {
                    pod_affinity.preferred_anti.push(w);
                } else {
                    pod_affinity.preferred.push(w);
                }
            }
        }

        let mut spread_constraints = Vec::new();
        let sp = "spec.topologySpreadConstraints";
        for (i, c) in json::arr(KIND, sp, s("topologySpreadConstraints"))?
            .iter()
            .enumerate()
        {
            let p = format!("{sp}[{i}]");
            spread_constraints.push(spread_constraint(&p, c, &labels)?);
        }

        Ok(PodInfo {
            key,
            namespace,
            name,
            labels,
            priority,
            preemption_never,
            node_name,
            nominated_node_name,
            created,
            started,
            terminating,
            terminating_by_preemption,
            terminal,
            scheduling_gated,
            requests,
            non_zero_milli_cpu: non_zero.milli_cpu,
            non_zero_memory: non_zero.memory,
            host_network,
            ports,
            tolerations,
            required_node_affinity,
            preferred_node_affinity,
            affinity: pod_affinity,
            spread_constraints,
            default_spread_selector: None,
        })
    }

    /// Sets the selector for cluster-default topology spreading (see
    /// [`PodInfo::default_spread_selector`]).
    pub fn with_default_spread_selector(mut self, selector: Option<LabelSelector>) -> PodInfo {
        self.default_spread_selector = selector;
        self
    }

    /// The host ports this pod binds on a node. On a host-network node (the
    /// process runtime) every container port is bound on the host, and an
    /// explicit different `hostPort` is counted too, conservatively.
    pub fn host_ports(&self, host_network_node: bool) -> Vec<HostPort> {
        let mut out = Vec::new();
        for p in &self.ports {
            if p.host_port > 0 {
                out.push(HostPort::new(&p.protocol, &p.host_ip, p.host_port));
            }
            if (host_network_node || self.host_network)
                && p.container_port > 0
                && p.container_port != p.host_port
            {
                out.push(HostPort::new(&p.protocol, &p.host_ip, p.container_port));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Whether any container declares a port that could become a host port.
    pub(crate) fn has_ports(&self) -> bool {
        !self.ports.is_empty()
    }

    /// Upstream `GetPodStartTime`: `status.startTime`; a pod not started
    /// yet counts as starting now, i.e. later than every started pod.
    pub fn start_time(&self) -> i128 {
        self.started.unwrap_or(i128::MAX)
    }
}

fn container_requests(path: &str, c: &Value) -> Result<ContainerRequests, Error> {
    let resources = json::obj(KIND, &format!("{path}.resources"), c.get("resources"))?;
    resource_list(
        &format!("{path}.resources.requests"),
        resources.and_then(|r| r.get("requests")),
    )
}

/// A `ResourceList` as requests: the scheduler's units, and which of cpu /
/// memory were present.
pub(crate) fn resource_list(path: &str, v: Option<&Value>) -> Result<ContainerRequests, Error> {
    let mut out = ContainerRequests::default();
    let Some(list) = json::obj(KIND, path, v)? else {
        return Ok(out);
    };
    for (name, q) in list {
        let field = format!("{path}.{name}");
        let q = quantity::parse_json(q).map_err(|e| Error::quantity(KIND, &field, e))?;
        let r = &mut out.requests;
        match resource_kind(name) {
            ResourceKind::Cpu => {
                r.milli_cpu = q.milli_value();
                out.has_cpu = true;
            }
            ResourceKind::Memory => {
                r.memory = q.value();
                out.has_memory = true;
            }
            ResourceKind::EphemeralStorage => r.ephemeral_storage = q.value(),
            ResourceKind::Pods => r.pods = q.value(),
            ResourceKind::Scalar => {
                let v = q.value();
                if v != 0 {
                    r.scalar.insert(name.clone(), v);
                }
            }
            ResourceKind::Ignored => {}
        }
    }
    Ok(out)
}

fn container_ports(path: &str, c: &Value, out: &mut Vec<PortSpec>) -> Result<(), Error> {
    let pp = format!("{path}.ports");
    for (i, p) in json::arr(KIND, &pp, c.get("ports"))?.iter().enumerate() {
        let p_path = format!("{pp}[{i}]");
        let Some(o) = json::obj(KIND, &p_path, Some(p))? else {
            continue;
        };
        let port = |k: &str| -> Result<i32, Error> {
            let f = format!("{p_path}.{k}");
            let v = json::int(KIND, &f, o.get(k))?.unwrap_or(0);
            i32::try_from(v).map_err(|_| Error::invalid(KIND, &f, "must be a port number"))
        };
        out.push(PortSpec {
            container_port: port("containerPort")?,
            host_port: port("hostPort")?,
            protocol: json::string(KIND, &format!("{p_path}.protocol"), o.get("protocol"))?
                .unwrap_or("")
                .to_string(),
            host_ip: json::string(KIND, &format!("{p_path}.hostIP"), o.get("hostIP"))?
                .unwrap_or("")
                .to_string(),
        });
    }
    Ok(())
}

fn affinity_term(
    path: &str,
    t: &Value,
    namespace: &str,
    labels: &PodLabels,
) -> Result<AffinityTerm, Error> {
    let Some(o) = json::obj(KIND, path, Some(t))? else {
        return Err(Error::invalid(KIND, path, "must be an object"));
    };
    let selector = label_selector(
        KIND,
        &format!("{path}.labelSelector"),
        o.get("labelSelector"),
    )?;
    let match_keys = json::strings(
        KIND,
        &format!("{path}.matchLabelKeys"),
        o.get("matchLabelKeys"),
    )?;
    let mismatch_keys = json::strings(
        KIND,
        &format!("{path}.mismatchLabelKeys"),
        o.get("mismatchLabelKeys"),
    )?;
    let selector = with_label_keys(KIND, path, selector, labels, &match_keys, &mismatch_keys)?;
    let mut namespaces = json::strings(KIND, &format!("{path}.namespaces"), o.get("namespaces"))?;
    let namespace_selector = match o.get("namespaceSelector") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            LabelSelector::from_label_selector(v)
                .map_err(|e| Error::invalid(KIND, &format!("{path}.namespaceSelector"), e.0))?,
        ),
    };
    if namespaces.is_empty() && namespace_selector.is_none() {
        namespaces.push(namespace.to_string());
    }
    namespaces.sort();
    namespaces.dedup();
    let topology_key = json::string(KIND, &format!("{path}.topologyKey"), o.get("topologyKey"))?
        .unwrap_or("")
        .to_string();
    Ok(AffinityTerm {
        namespaces,
        namespace_selector,
        selector,
        topology_key,
    })
}

fn spread_constraint(path: &str, c: &Value, labels: &PodLabels) -> Result<SpreadConstraint, Error> {
    let Some(o) = json::obj(KIND, path, Some(c))? else {
        return Err(Error::invalid(KIND, path, "must be an object"));
    };
    let f = |k: &str| format!("{path}.{k}");
    let max_skew = json::int(KIND, &f("maxSkew"), o.get("maxSkew"))?.unwrap_or(1);
    let when_unsatisfiable =
        match json::string(KIND, &f("whenUnsatisfiable"), o.get("whenUnsatisfiable"))? {
            Some("ScheduleAnyway") => WhenUnsatisfiable::ScheduleAnyway,
            Some("DoNotSchedule") | None => WhenUnsatisfiable::DoNotSchedule,
            Some(other) => {
                return Err(Error::invalid(
                    KIND,
                    &f("whenUnsatisfiable"),
                    format!("unsupported value {other:?}"),
                ))
            }
        };
    let selector = label_selector(KIND, &f("labelSelector"), o.get("labelSelector"))?;
    let keys = json::strings(KIND, &f("matchLabelKeys"), o.get("matchLabelKeys"))?;
    let selector = with_label_keys(KIND, path, selector, labels, &keys, &[])?;
    let policy = |k: &str, default| -> Result<InclusionPolicy, Error> {
        Ok(match json::string(KIND, &f(k), o.get(k))? {
            None => default,
            Some("Honor") => InclusionPolicy::Honor,
            Some("Ignore") => InclusionPolicy::Ignore,
            Some(other) => {
                return Err(Error::invalid(
                    KIND,
                    &f(k),
                    format!("unsupported value {other:?}"),
                ))
            }
        })
    };
    Ok(SpreadConstraint {
        max_skew,
        topology_key: json::string(KIND, &f("topologyKey"), o.get("topologyKey"))?
            .unwrap_or("")
            .to_string(),
        when_unsatisfiable,
        selector,
        min_domains: json::int(KIND, &f("minDomains"), o.get("minDomains"))?.unwrap_or(1),
        node_affinity_policy: policy("nodeAffinityPolicy", InclusionPolicy::Honor)?,
        node_taints_policy: policy("nodeTaintsPolicy", InclusionPolicy::Ignore)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_requests_ports_and_defaults() {
        let p = PodInfo::from_json(&json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
            "spec": {
                "priority": 10,
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi", "example.com/gpu": "1"}},
                     "ports": [{"containerPort": 80, "hostPort": 8080}, {"containerPort": 53, "protocol": "UDP"}]},
                    {"name": "b"}
                ],
                "initContainers": [
                    {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}},
                     "ports": [{"containerPort": 9000}]},
                    {"name": "init", "resources": {"requests": {"cpu": "2"}}, "ports": [{"containerPort": 1, "hostPort": 1}]}
                ],
                "overhead": {"cpu": "10m"}
            }
        }))
        .unwrap();
        assert_eq!(p.key, "u1");
        assert_eq!(p.priority, 10);
        // max(250 + 100, 2000 + 100) + 10
        assert_eq!(p.requests.milli_cpu, 2110);
        assert_eq!(p.requests.memory, 64 << 20);
        assert_eq!(p.requests.scalar("example.com/gpu"), 1);
        // Non-zero: container b gets 100m/200Mi, the sidecar 200Mi.
        assert_eq!(p.non_zero_milli_cpu, 2110);
        assert_eq!(p.non_zero_memory, (64 << 20) + 2 * (200 << 20));
        // Only hostPort counts on a normal node; the init container's ports never do.
        assert_eq!(p.host_ports(false), vec![HostPort::new("TCP", "", 8080)]);
        // On a host-network node every container port is a host port.
        let hn: Vec<i32> = p.host_ports(true).iter().map(|h| h.port).collect();
        assert_eq!(hn, vec![80, 8080, 9000, 53]);
    }

    #[test]
    fn bad_quantity_names_the_field() {
        let err = PodInfo::from_json(&json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1 core"}}}]}
        }))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("spec.containers[0].resources.requests.cpu"),
            "{err}"
        );
    }

    #[test]
    fn affinity_term_namespaces_and_label_keys() {
        let p = PodInfo::from_json(&json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web", "rev": "7"}},
            "spec": {"containers": [], "affinity": {"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "web"}}, "matchLabelKeys": ["rev", "absent"],
                     "topologyKey": "kubernetes.io/hostname"},
                    {"labelSelector": {"matchLabels": {"app": "web"}}, "namespaceSelector": {},
                     "topologyKey": "zone"}
                ]}}}
        }))
        .unwrap();
        let t = &p.affinity.required_anti[0];
        assert_eq!(t.namespaces, vec!["ns".to_string()]);
        assert_eq!(t.selector.to_string(), "app=web,rev in (7)");
        let t2 = &p.affinity.required_anti[1];
        assert!(t2.namespaces.is_empty());
        assert!(t2.namespace_matches("other", None));
    }
}
