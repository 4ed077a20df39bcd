//! Hollow nodes: thousands of fake Nodes held by one process, for scale work
//! on the control plane (`navarch sim`, and `navarch bench scheduler`).
//!
//! A hollow node looks like a node the agent registered (labels, capacity =
//! allocatable, conditions, addresses, `nodeInfo`, the `navarch.io/hollow`
//! label), renews its Lease in `kube-node-lease`, and — unless
//! [`SimConfig::report_pods`] is off — reports the pods bound to it
//! `Running` without running anything, and finishes their graceful deletion.
//! Only the public Kubernetes API is used (Nodes, Leases, `pods/status`, pod
//! delete), so a sim also works against upstream Kubernetes.
//!
//! What makes 5,000 nodes cheap:
//! - one HTTP client (one connection pool) for every write, with at most
//!   [`SimConfig::concurrency`] requests in flight, so connections are few
//!   and reused; no per-node connection or task;
//! - one heartbeat loop on a 100 ms tick that renews a slice of the Leases
//!   on each tick, so renewals are spread evenly over the renewal interval
//!   (Node status is re-posted the same way every [`SimConfig::status_refresh`]);
//! - one watch on all bound pods (`fieldSelector=spec.nodeName!=`), list then
//!   watch from its resourceVersion, relisting on `410 Gone`; pod writes go
//!   through a de-duplicated work queue served by [`SimConfig::pod_workers`]
//!   concurrent writes, retried with back-off. Writes are level-triggered: a
//!   pod already `Running` (or terminal) is never written again.
//!
//! ```no_run
//! # async fn f() -> Result<(), navarch_sim::Error> {
//! use navarch_sim::{Sim, SimConfig, Target};
//! let target = Target::from_kubeconfig(std::path::Path::new("kubeconfig.yaml"))?;
//! let mut config = SimConfig::new(100);
//! config.report_pods = false; // a scheduler benchmark: no kubelets
//! let sim = Sim::start(target, config).await?; // nodes and leases exist now
//! assert_eq!(sim.node_names().len(), 100);
//! sim.stop().await?;
//! # Ok(()) }
//! ```

mod heartbeat;
mod node;
mod pods;
mod target;

pub use node::{NodeTemplate, Taint};
pub use target::Target;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The label every hollow node carries (`true`).
pub const HOLLOW_LABEL: &str = "navarch.io/hollow";
/// Namespace of the node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// `leaseDurationSeconds` of a hollow node's Lease.
pub const LEASE_DURATION_SECONDS: u32 = 40;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("reading {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("joining the cluster as node {node}")]
    Join {
        node: String,
        #[source]
        source: navarch_agent::join::JoinError,
    },
    #[error("the bearer token is not a valid HTTP header value")]
    InvalidToken,
    #[error("building the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("{what}")]
    Http {
        what: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{what}: the server answered {status}: {message}")]
    Api {
        what: String,
        status: u16,
        message: String,
    },
    #[error("invalid {field} {value:?}: {reason}")]
    Config {
        field: &'static str,
        value: String,
        reason: String,
    },
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Nodes are named `<prefix><i>`, `i` in `0..nodes`.
    pub prefix: String,
    pub nodes: usize,
    pub template: NodeTemplate,
    /// Report the pods bound to hollow nodes `Running`, and delete the ones
    /// being deleted. Off for scheduler benchmarks (no kubelets, as in
    /// upstream's scheduler_perf).
    pub report_pods: bool,
    /// How often each Lease is renewed.
    pub lease_renew: Duration,
    /// How often each Node's status (its conditions' `lastHeartbeatTime`)
    /// is re-posted.
    pub status_refresh: Duration,
    /// Requests in flight at most for registration and heartbeats.
    pub concurrency: usize,
    /// Pod status writes and deletes in flight at most.
    pub pod_workers: usize,
    /// Delete the nodes and their Leases on [`Sim::stop`].
    pub delete_on_stop: bool,
}

impl SimConfig {
    /// `nodes` hollow nodes named `hollow-<i>` with the default template,
    /// reporting pods, renewing Leases every 10 s and status every 5 min.
    pub fn new(nodes: usize) -> SimConfig {
        SimConfig {
            prefix: "hollow-".into(),
            nodes,
            template: NodeTemplate::default(),
            report_pods: true,
            lease_renew: Duration::from_secs(10),
            status_refresh: Duration::from_secs(300),
            concurrency: 32,
            pod_workers: 32,
            delete_on_stop: false,
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |field, value: String, reason: &str| Error::Config {
            field,
            value,
            reason: reason.into(),
        };
        if self.nodes > node::MAX_NODES {
            return Err(bad(
                "nodes",
                self.nodes.to_string(),
                "at most 4,000,000 hollow nodes (their IPs come from 10.64.0.0/10)",
            ));
        }
        let name_ok = !self.prefix.is_empty()
            && self.prefix.len() <= 240
            && self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && self.prefix.as_bytes()[0].is_ascii_alphanumeric();
        if !name_ok {
            return Err(bad(
                "prefix",
                self.prefix.clone(),
                "node names need lowercase letters, digits, '-' or '.', starting with a letter or digit",
            ));
        }
        if self.lease_renew.is_zero() || self.status_refresh.is_zero() {
            return Err(bad(
                "interval",
                format!("{:?}/{:?}", self.lease_renew, self.status_refresh),
                "renewal intervals must be positive",
            ));
        }
        if self.concurrency == 0 || self.pod_workers == 0 {
            return Err(bad("concurrency", "0".into(), "must be at least 1"));
        }
        self.template.validate()
    }
}

/// A running simulation. Dropping it without [`Sim::stop`] cancels its
/// loops but does not wait for them.
pub struct Sim {
    shared: Arc<node::Shared>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    registered_in: Duration,
}

impl Sim {
    /// Registers every node (creating it, or taking over an existing Node of
    /// that name) and its Lease, then starts the heartbeat loop and, with
    /// `report_pods`, the pod reporter. Returns once all nodes and Leases
    /// exist.
    pub async fn start(target: Target, config: SimConfig) -> Result<Sim, Error> {
        config.validate()?;
        let started = Instant::now();
        let shared = Arc::new(node::Shared::new(&target, config)?);
        node::register_all(&shared).await?;
        let registered_in = started.elapsed();
        tracing::info!(
            nodes = shared.config.nodes,
            ms = registered_in.as_millis() as u64,
            "hollow nodes registered"
        );
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(heartbeat::run(
            shared.clone(),
            tasks.clone(),
            cancel.clone(),
        ));
        if shared.config.report_pods {
            let watch_client = target
                .client_builder()?
                .pool_max_idle_per_host(1)
                .tcp_keepalive(Duration::from_secs(30))
                .build()
                .map_err(Error::Client)?;
            tasks.spawn(pods::run(
                shared.clone(),
                watch_client,
                tasks.clone(),
                cancel.clone(),
            ));
        }
        Ok(Sim {
            shared,
            cancel,
            tasks,
            registered_in,
        })
    }

    /// The hollow nodes' names, in index order.
    pub fn node_names(&self) -> Vec<String> {
        self.shared.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// Cuts the named nodes off from the API server, as a network
    /// partition or a dead kubelet would: their Leases are no longer
    /// renewed, their status no longer posted, their pods no longer
    /// reported. Unknown names are an error.
    pub fn partition(&self, names: &[&str]) -> Result<(), Error> {
        for i in self.indices(names)? {
            self.shared.nodes[i]
                .cut_off
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Reconnects partitioned nodes: each posts its status (Ready again)
    /// and renews its Lease at once, and their pods are reported again.
    pub async fn heal(&self, names: &[&str]) -> Result<(), Error> {
        let now = node::rfc3339(jiff::Timestamp::now());
        for i in self.indices(names)? {
            self.shared.nodes[i]
                .cut_off
                .store(false, std::sync::atomic::Ordering::Relaxed);
            self.shared.post_status(i, &now).await?;
            heartbeat::renew_lease(&self.shared, i).await;
        }
        Ok(())
    }

    fn indices(&self, names: &[&str]) -> Result<Vec<usize>, Error> {
        names
            .iter()
            .map(|n| {
                self.shared.node_index(n).ok_or_else(|| Error::Config {
                    field: "node",
                    value: n.to_string(),
                    reason: "no hollow node of that name".into(),
                })
            })
            .collect()
    }

    /// How long registering every node and Lease took.
    pub fn registered_in(&self) -> Duration {
        self.registered_in
    }

    /// Stops the loops and waits for writes in flight; with
    /// `delete_on_stop`, then deletes the nodes and their Leases.
    pub async fn stop(self) -> Result<(), Error> {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if self.shared.config.delete_on_stop {
            node::delete_all(&self.shared).await?;
        }
        Ok(())
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
