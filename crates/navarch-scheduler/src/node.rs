//! The scheduler's view of a Node, read from its upstream JSON.

use serde_json::Value;

use crate::json;
use crate::pod::{resource_list, HOST_NETWORK_NODE_LABEL};
use crate::resources::Resources;
use crate::selector::{Labels, Taint};
use crate::Error;

const KIND: &str = "Node";

/// What placement reads from a Node object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub uid: String,
    pub labels: Labels,
    pub taints: Vec<Taint>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// `status.allocatable` in scheduler units; `pods` is the pod limit.
    pub allocatable: Resources,
    /// Label `navarch.io/host-network-pods=true`: pods share the node's
    /// network, so every container port is a host port.
    pub host_network: bool,
}

impl NodeInfo {
    pub fn from_json(node: &Value) -> Result<NodeInfo, Error> {
        let meta = json::obj(KIND, "metadata", node.get("metadata"))?;
        let spec = json::obj(KIND, "spec", node.get("spec"))?;
        let status = json::obj(KIND, "status", node.get("status"))?;
        let m = |k: &str| meta.and_then(|m| m.get(k));
        let s = |k: &str| spec.and_then(|m| m.get(k));
        let name = json::string(KIND, "metadata.name", m("name"))?.unwrap_or("");
        if name.is_empty() {
            return Err(Error::invalid(KIND, "metadata.name", "must not be empty"));
        }
        let labels: Labels = json::string_map(KIND, "metadata.labels", m("labels"))?
            .into_iter()
            .collect();
        let mut taints = Vec::new();
        for (i, t) in json::arr(KIND, "spec.taints", s("taints"))?
            .iter()
            .enumerate()
        {
            if let Some(t) = Taint::parse(KIND, &format!("spec.taints[{i}]"), t)? {
                taints.push(t);
            }
        }
        let allocatable = resource_list(
            "status.allocatable",
            status.and_then(|s| s.get("allocatable")),
        )
        .map_err(|e| e.with_kind(KIND))?
        .requests;
        let host_network = labels
            .get(HOST_NETWORK_NODE_LABEL)
            .is_some_and(|v| v == "true");
        Ok(NodeInfo {
            name: name.to_string(),
            uid: json::string(KIND, "metadata.uid", m("uid"))?
                .unwrap_or("")
                .to_string(),
            labels,
            taints,
            unschedulable: json::boolean(KIND, "spec.unschedulable", s("unschedulable"))?,
            allocatable,
            host_network,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_allocatable_and_flags() {
        let n = NodeInfo::from_json(&json!({
            "metadata": {"name": "n1", "labels": {"navarch.io/host-network-pods": "true", "zone": "a"}},
            "spec": {"unschedulable": true, "taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "3800m", "memory": "15Gi", "pods": "110",
                                        "ephemeral-storage": "100G", "nvidia.com/gpu": "2", "storage": "1"}}
        }))
        .unwrap();
        assert!(n.host_network && n.unschedulable);
        assert_eq!(n.allocatable.milli_cpu, 3800);
        assert_eq!(n.allocatable.memory, 15 << 30);
        assert_eq!(n.allocatable.pods, 110);
        assert_eq!(n.allocatable.ephemeral_storage, 100_000_000_000);
        assert_eq!(n.allocatable.scalar("nvidia.com/gpu"), 2);
        assert_eq!(n.taints.len(), 1);
    }

    #[test]
    fn errors_name_node_fields() {
        let e = NodeInfo::from_json(
            &json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "x"}}}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("Node") && e.contains("status.allocatable.cpu"),
            "{e}"
        );
    }
}
