//! Filters: can the pod run on this node? Each returns pass or an
//! upstream status (code and reason strings), in the default profile's
//! order: NodeUnschedulable, NodeName, TaintToleration, NodeAffinity,
//! NodePorts, NodeResourcesFit, PodTopologySpread, InterPodAffinity.

use std::borrow::Cow;

use crate::affinity::AffinityFilter;
use crate::ledger::Usage;
use crate::node::NodeInfo;
use crate::pod::{HostPort, PodInfo};
use crate::resources::Resources;
use crate::selector::{first_untolerated, tolerated, Effect, Taint};
use crate::spread::SpreadFilter;

pub const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const REASON_NODE_NAME: &str = "node(s) didn't match the requested node name";
pub const REASON_NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const REASON_NODE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
pub const REASON_TOO_MANY_PODS: &str = "Too many pods";
pub const REASON_SPREAD: &str = "node(s) didn't match pod topology spread constraints";
pub const REASON_SPREAD_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
pub const REASON_AFFINITY_CONFLICT: &str = "pod affinity terms conflict";
pub const REASON_PREFILTER_NODE_AFFINITY: &str = "node(s) didn't satisfy plugin(s) [NodeAffinity]";
pub const REASON_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const REASON_NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// Upstream status codes for a rejected node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Code {
    /// Might pass if pods were removed (preemption may help).
    Unschedulable,
    /// Removing pods cannot help.
    UnschedulableAndUnresolvable,
}

/// Why a node was rejected: the first failing filter's reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub code: Code,
    pub reasons: Vec<Cow<'static, str>>,
}

impl NodeStatus {
    pub fn new(code: Code, reason: impl Into<Cow<'static, str>>) -> NodeStatus {
        NodeStatus {
            code,
            reasons: vec![reason.into()],
        }
    }

    pub fn unresolvable(reason: impl Into<Cow<'static, str>>) -> NodeStatus {
        NodeStatus::new(Code::UnschedulableAndUnresolvable, reason)
    }

    pub fn unschedulable(reason: impl Into<Cow<'static, str>>) -> NodeStatus {
        NodeStatus::new(Code::Unschedulable, reason)
    }
}

/// What the filters need to know about the pod, computed once per cycle.
pub(crate) struct PodFilter<'a> {
    pub pod: &'a PodInfo,
    /// Host ports wanted on a normal node and on a host-network node.
    pub ports: Vec<HostPort>,
    pub ports_host_network: Vec<HostPort>,
    pub spread: Option<SpreadFilter>,
    pub affinity: Option<AffinityFilter>,
}

/// Runs the filter chain on one node, stopping at the first failure, as
/// the framework does.
pub(crate) fn run_filters(
    pf: &PodFilter<'_>,
    node: &NodeInfo,
    usage: &Usage,
) -> Result<(), NodeStatus> {
    let pod = pf.pod;
    node_unschedulable(pod, node)?;
    node_name(pod, node)?;
    taint_toleration(pod, node)?;
    node_affinity(pod, node)?;
    node_ports(pf, node, usage)?;
    resources_fit(&pod.requests, node, usage)?;
    if let Some(s) = &pf.spread {
        s.filter(node)?;
    }
    if let Some(a) = &pf.affinity {
        a.filter(node)?;
    }
    Ok(())
}

/// NodeUnschedulable: a cordoned node takes only pods tolerating
/// `node.kubernetes.io/unschedulable:NoSchedule`.
pub(crate) fn node_unschedulable(pod: &PodInfo, node: &NodeInfo) -> Result<(), NodeStatus> {
    if !node.unschedulable {
        return Ok(());
    }
    let taint = Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        value: String::new(),
        effect: Effect::NoSchedule,
    };
    if tolerated(&pod.tolerations, &taint) {
        Ok(())
    } else {
        Err(NodeStatus::unresolvable(REASON_UNSCHEDULABLE))
    }
}

/// NodeName: `spec.nodeName`, when set, must be this node.
pub(crate) fn node_name(pod: &PodInfo, node: &NodeInfo) -> Result<(), NodeStatus> {
    match &pod.node_name {
        Some(n) if *n != node.name => Err(NodeStatus::unresolvable(REASON_NODE_NAME)),
        _ => Ok(()),
    }
}

/// TaintToleration: the first untolerated NoSchedule/NoExecute taint.
pub(crate) fn taint_toleration(pod: &PodInfo, node: &NodeInfo) -> Result<(), NodeStatus> {
    match first_untolerated(&node.taints, &pod.tolerations) {
        None => Ok(()),
        Some(t) => Err(NodeStatus::unresolvable(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key, t.value
        ))),
    }
}

/// NodeAffinity: `spec.nodeSelector` and required node affinity.
pub(crate) fn node_affinity(pod: &PodInfo, node: &NodeInfo) -> Result<(), NodeStatus> {
    if pod.required_node_affinity.matches(&node.name, &node.labels) {
        Ok(())
    } else {
        Err(NodeStatus::unresolvable(REASON_NODE_AFFINITY))
    }
}

/// NodePorts: every wanted host port must be free (on a host-network node
/// every container port is a host port).
pub(crate) fn node_ports(
    pf: &PodFilter<'_>,
    node: &NodeInfo,
    usage: &Usage,
) -> Result<(), NodeStatus> {
    let wanted = if node.host_network {
        &pf.ports_host_network
    } else {
        &pf.ports
    };
    if wanted.iter().any(|p| usage.ports.conflicts(p)) {
        Err(NodeStatus::unschedulable(REASON_NODE_PORTS))
    } else {
        Ok(())
    }
}

/// NodeResourcesFit: pod slots, cpu, memory, ephemeral storage, scalar
/// resources. Unresolvable when a request exceeds the node's allocatable
/// outright (no preemption can help).
pub(crate) fn resources_fit(
    req: &Resources,
    node: &NodeInfo,
    usage: &Usage,
) -> Result<(), NodeStatus> {
    let alloc = &node.allocatable;
    let used = &usage.requested;
    let mut reasons: Vec<Cow<'static, str>> = Vec::new();
    let mut unresolvable = false;
    if used.pods + 1 > alloc.pods {
        reasons.push(REASON_TOO_MANY_PODS.into());
    }
    let mut check = |want: i64, used: i64, cap: i64, reason: Cow<'static, str>| {
        if want > 0 && want > cap - used {
            unresolvable |= want > cap;
            reasons.push(reason);
        }
    };
    check(
        req.milli_cpu,
        used.milli_cpu,
        alloc.milli_cpu,
        "Insufficient cpu".into(),
    );
    check(
        req.memory,
        used.memory,
        alloc.memory,
        "Insufficient memory".into(),
    );
    check(
        req.ephemeral_storage,
        used.ephemeral_storage,
        alloc.ephemeral_storage,
        "Insufficient ephemeral-storage".into(),
    );
    for (name, want) in &req.scalar {
        check(
            *want,
            used.scalar(name),
            alloc.scalar(name),
            format!("Insufficient {name}").into(),
        );
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(NodeStatus {
            code: if unresolvable {
                Code::UnschedulableAndUnresolvable
            } else {
                Code::Unschedulable
            },
            reasons,
        })
    }
}

/// The reasons `used` (already including the new demand) exceeds `alloc`.
pub(crate) fn insufficient(used: &Resources, alloc: &Resources) -> Vec<String> {
    let mut out = Vec::new();
    if used.pods > alloc.pods {
        out.push(REASON_TOO_MANY_PODS.to_string());
    }
    if used.milli_cpu > alloc.milli_cpu {
        out.push("Insufficient cpu".into());
    }
    if used.memory > alloc.memory {
        out.push("Insufficient memory".into());
    }
    if used.ephemeral_storage > alloc.ephemeral_storage {
        out.push("Insufficient ephemeral-storage".into());
    }
    for (name, v) in &used.scalar {
        if *v > alloc.scalar(name) {
            out.push(format!("Insufficient {name}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn node(v: Value) -> NodeInfo {
        NodeInfo::from_json(&v).unwrap()
    }
    fn pod(v: Value) -> PodInfo {
        PodInfo::from_json(&v).unwrap()
    }

    #[test]
    fn unschedulable_nodes() {
        let n = node(json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}}));
        let plain = pod(json!({"metadata": {"name": "p"}}));
        assert_eq!(
            node_unschedulable(&plain, &n),
            Err(NodeStatus::unresolvable(REASON_UNSCHEDULABLE))
        );
        let tolerant = pod(json!({"metadata": {"name": "p"}, "spec": {"tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}));
        assert_eq!(node_unschedulable(&tolerant, &n), Ok(()));
    }

    #[test]
    fn node_name_filter() {
        let n = node(json!({"metadata": {"name": "n1"}}));
        assert!(node_name(&pod(json!({"spec": {"nodeName": "n1"}})), &n).is_ok());
        assert_eq!(
            node_name(&pod(json!({"spec": {"nodeName": "n2"}})), &n),
            Err(NodeStatus::unresolvable(REASON_NODE_NAME))
        );
        assert!(node_name(&pod(json!({})), &n).is_ok());
    }

    #[test]
    fn taints_docs_example() {
        // kubernetes.io/docs "Taints and Tolerations": three taints, the pod
        // tolerates the two key1 taints but not key2=value2:NoSchedule.
        let n = node(json!({"metadata": {"name": "node1"}, "spec": {"taints": [
            {"key": "key1", "value": "value1", "effect": "NoSchedule"},
            {"key": "key1", "value": "value1", "effect": "NoExecute"},
            {"key": "key2", "value": "value2", "effect": "NoSchedule"}]}}));
        let p = pod(json!({"spec": {"tolerations": [
            {"key": "key1", "operator": "Equal", "value": "value1", "effect": "NoSchedule"},
            {"key": "key1", "operator": "Equal", "value": "value1", "effect": "NoExecute"}]}}));
        assert_eq!(
            taint_toleration(&p, &n),
            Err(NodeStatus::unresolvable(
                "node(s) had untolerated taint {key2: value2}"
            ))
        );
        // PreferNoSchedule never filters.
        let soft = node(json!({"metadata": {"name": "n"}, "spec": {"taints": [
            {"key": "k", "effect": "PreferNoSchedule"}]}}));
        assert!(taint_toleration(&pod(json!({})), &soft).is_ok());
        // Empty value renders as "{key: }", as upstream prints it.
        let cp = node(json!({"metadata": {"name": "n"}, "spec": {"taints": [
            {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}}));
        assert_eq!(
            taint_toleration(&pod(json!({})), &cp).unwrap_err().reasons[0],
            "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"
        );
    }

    #[test]
    fn node_affinity_docs_examples() {
        // "Assign Pods to Nodes": required zone In [antarctica-east1, antarctica-west1].
        let p = pod(
            json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In",
                "values": ["antarctica-east1", "antarctica-west1"]}]}]}}}}}),
        );
        let zone = |z: &str| {
            node(json!({"metadata": {"name": "n", "labels": {"topology.kubernetes.io/zone": z}}}))
        };
        assert!(node_affinity(&p, &zone("antarctica-east1")).is_ok());
        assert_eq!(
            node_affinity(&p, &zone("europe-west1")),
            Err(NodeStatus::unresolvable(REASON_NODE_AFFINITY))
        );
        // nodeSelector (disktype: ssd) and NotIn / Gt, ORed terms.
        let p = pod(json!({"spec": {"nodeSelector": {"disktype": "ssd"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["bad"]},
                                      {"key": "cores", "operator": "Gt", "values": ["8"]}]},
                {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}]}}}}}));
        let n = |labels: Value| node(json!({"metadata": {"name": "n", "labels": labels}}));
        assert!(node_affinity(
            &p,
            &n(json!({"disktype": "ssd", "zone": "good", "cores": "16"}))
        )
        .is_ok());
        assert!(node_affinity(&p, &n(json!({"disktype": "ssd", "cores": "16"}))).is_ok());
        assert!(node_affinity(&p, &n(json!({"disktype": "ssd", "gpu": "1"}))).is_ok());
        assert!(node_affinity(
            &p,
            &n(json!({"disktype": "ssd", "zone": "bad", "cores": "16"}))
        )
        .is_err());
        assert!(node_affinity(&p, &n(json!({"disktype": "ssd", "cores": "8"}))).is_err());
        assert!(node_affinity(&p, &n(json!({"disktype": "hdd", "gpu": "1"}))).is_err());
    }

    #[test]
    fn resources_fit_reasons_and_codes() {
        let n = node(
            json!({"metadata": {"name": "n"}, "status": {"allocatable": {
            "cpu": "2", "memory": "1Gi", "pods": "2", "example.com/gpu": "1"}}}),
        );
        let mut usage = Usage::default();
        usage.requested.milli_cpu = 1500;
        usage.requested.pods = 2;
        let p = pod(
            json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {
            "cpu": "1", "memory": "2Gi", "example.com/gpu": "1", "example.com/fpga": "1"}}}]}}),
        );
        let st = resources_fit(&p.requests, &n, &usage).unwrap_err();
        assert_eq!(
            st.reasons,
            vec![
                "Too many pods",
                "Insufficient cpu",
                "Insufficient memory",
                "Insufficient example.com/fpga"
            ]
        );
        // memory (2Gi > 1Gi allocatable) and fpga (none) can never fit.
        assert_eq!(st.code, Code::UnschedulableAndUnresolvable);
        let small = pod(
            json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}}),
        );
        usage.requested.pods = 0;
        assert_eq!(
            resources_fit(&small.requests, &n, &usage).unwrap_err(),
            NodeStatus::unschedulable("Insufficient cpu")
        );
        // Best-effort pods only need a pod slot.
        let be = pod(json!({"spec": {"containers": [{"name": "c"}]}}));
        usage.requested.milli_cpu = 2000;
        assert!(resources_fit(&be.requests, &n, &usage).is_ok());
    }
}
