//! Putting an agent together: join, listen, register, heartbeat, run pods.

use crate::api::KubeApi;
use crate::join::{self, JoinOptions};
use crate::node::{self, Machine, NodeSpec};
use crate::pods::PodManager;
use crate::server;
use crate::worker::NodeContext;
use navarch_runtime::Runtime;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The kubelet's port; an agent falls back to a free port when it is taken
/// (several agents on one machine) unless a port was asked for.
pub const DEFAULT_PORT: u16 = 10250;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `https://host:port` of the API server.
    pub server: String,
    /// The server's node token (`DIR/node-token`).
    pub token: String,
    pub node_name: String,
    /// Where credentials, pod directories and logs live.
    pub data_dir: PathBuf,
    /// The node's address (pod IP of every pod here); detected when unset.
    pub node_ip: Option<IpAddr>,
    /// The streaming port; `None` = 10250, or a free port if taken.
    pub port: Option<u16>,
    /// Extra Node labels.
    pub labels: BTreeMap<String, String>,
    /// `leaseDurationSeconds` of the node Lease; renewed every quarter of
    /// it (the kubelet's `nodeLeaseDurationSeconds`, default 40).
    pub lease_duration_seconds: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Join(#[from] join::JoinError),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("agent tls configuration: {0}")]
    Tls(String),
    #[error("creating {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A started agent.
pub struct RunningAgent {
    pub node_name: String,
    pub node_ip: IpAddr,
    /// The streaming port the agent listens on.
    pub port: u16,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningAgent {
    /// Waits until the agent stops (its cancellation token fired).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// The address other machines reach this one on: the source address of
/// the default route, else loopback. No packet is sent.
pub fn detect_node_ip() -> IpAddr {
    let probe = || -> std::io::Result<IpAddr> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.connect("10.255.255.254:9")?;
        Ok(s.local_addr()?.ip())
    };
    match probe() {
        Ok(ip) if !ip.is_unspecified() => ip,
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

/// Joins the server and starts everything; returns once the agent is
/// listening and joined (registration and pods carry on in the background,
/// retrying while the server is unreachable).
pub async fn start(
    config: AgentConfig,
    runtime: Arc<dyn Runtime>,
    cancel: CancellationToken,
) -> Result<RunningAgent, AgentError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| AgentError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let node_ip = config.node_ip.unwrap_or_else(detect_node_ip);
    let listener = match config.port {
        Some(p) => {
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p);
            TcpListener::bind(addr)
                .await
                .map_err(|source| AgentError::Listen { addr, source })?
        }
        None => {
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), DEFAULT_PORT);
            match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    info!(error = %e, "port {DEFAULT_PORT} is taken, using a free port");
                    let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
                    TcpListener::bind(any)
                        .await
                        .map_err(|source| AgentError::Listen { addr: any, source })?
                }
            }
        }
    };
    let port = listener
        .local_addr()
        .map_err(|source| AgentError::Listen {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            source,
        })?
        .port();
    let mut sans = vec![node_ip.to_string(), "127.0.0.1".into(), "localhost".into()];
    if !sans.contains(&config.node_name) {
        sans.push(config.node_name.clone());
    }
    let creds = join::join(&JoinOptions {
        server: config.server.clone(),
        token: config.token.clone(),
        node_name: config.node_name.clone(),
        serving_sans: sans,
        data_dir: config.data_dir.clone(),
    })
    .await?;
    let client = creds.kube_client().await?;
    let tls = server::tls_config(
        &creds.ca_pem,
        &creds.serving_cert_pem,
        &creds.serving_key_pem,
    )
    .map_err(|e| AgentError::Tls(e.to_string()))?;
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(server::serve(
        listener,
        Arc::new(tls),
        runtime.clone(),
        cancel.clone(),
    )));

    let machine = Machine::read(&config.data_dir);
    let spec = NodeSpec {
        name: config.node_name.clone(),
        ip: node_ip,
        port,
        data_dir: config.data_dir.clone(),
        labels: config.labels.clone(),
        runtime_version: runtime.version(),
        lease_duration_seconds: config.lease_duration_seconds,
    };
    let ctx = Arc::new(NodeContext {
        node_name: config.node_name.clone(),
        host_ip: node_ip.to_string(),
        data_dir: config.data_dir.clone(),
        allocatable: machine.allocatable(),
        runtime_scheme: runtime
            .version()
            .split("://")
            .next()
            .unwrap_or("process")
            .to_string(),
    });
    {
        let client = client.clone();
        let cancel = cancel.clone();
        tasks.push(tokio::spawn(async move {
            // Register (retrying while the server is unreachable), then
            // heartbeat.
            let mut delay = std::time::Duration::from_millis(200);
            loop {
                match node::register(&client, &spec).await {
                    Ok(()) => break,
                    Err(e) => warn!(error = %e, "registering node failed, retrying"),
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(std::time::Duration::from_secs(10));
            }
            node::heartbeat(client, spec, cancel).await;
        }));
    }
    let api = KubeApi::new(client.clone(), config.node_name.clone());
    let manager = PodManager::new(ctx, runtime, api, cancel.clone());
    tasks.push(tokio::spawn(manager.run(client)));
    info!(node = %config.node_name, ip = %node_ip, port, "agent started");
    Ok(RunningAgent {
        node_name: config.node_name,
        node_ip,
        port,
        tasks,
    })
}
