//! The node agent (Navarch's kubelet).
//!
//! An agent joins a server with the node token ([`join`]), registers its
//! Node and renews its Lease ([`node`]), runs the pods bound to its node
//! through a [`navarch_runtime::Runtime`] ([`pods`]), with their
//! configuration ([`env`], [`volumes`]) and probes ([`probe`]), writes their
//! status ([`status`]), and serves logs, exec, attach and port-forward over
//! its own HTTPS port to the API server ([`server`]).

pub mod agent;
pub mod api;
pub mod env;
pub mod join;
pub mod node;
pub mod pods;
pub mod probe;
pub mod server;
pub mod status;
pub mod volumes;
pub mod worker;

#[cfg(test)]
mod worker_tests;

/// Labels the agent puts on sandboxes and containers in the runtime, as the
/// kubelet does. The streaming server finds a pod's containers by them.
pub mod labels {
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    /// `"init"` for init containers, `"regular"` otherwise.
    pub const CONTAINER_TYPE: &str = "navarch.io/container-type";
}

/// Common name of the client certificate the API server presents to
/// agents; the agent's HTTPS port serves no one else.
pub const APISERVER_CLIENT_CN: &str = "kube-apiserver-kubelet-client";

/// The node label that tells the scheduler container ports are host ports
/// on this node (pods share the node's network).
pub const HOST_NETWORK_PODS_LABEL: &str = "navarch.io/host-network-pods";
