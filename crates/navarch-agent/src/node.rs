//! The Node object: registration, status kept true to the machine, and the
//! Lease heartbeat in `kube-node-lease`.
//!
//! The Lease is renewed every quarter of its duration (10 s of
//! [`LEASE_DURATION_SECONDS`] by default); the Node's status is written
//! when it changes (a condition flips, capacity changes) and otherwise only
//! every [`STATUS_REFRESH`], as the kubelet does since node leases exist.

use crate::env::NodeAllocatable;
use crate::pods::MAX_PODS;
use crate::worker::rfc3339;
use crate::HOST_NETWORK_PODS_LABEL;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Default `leaseDurationSeconds` of the node Lease (the kubelet's).
pub const LEASE_DURATION_SECONDS: u32 = 40;
/// How often the Node status is written when nothing changed.
pub const STATUS_REFRESH: Duration = Duration::from_secs(300);
/// Memory kept back from allocatable (the kubelet's default hard eviction
/// threshold, `memory.available<100Mi`).
const MEMORY_RESERVE: i64 = 100 * 1024 * 1024;

/// The Kubernetes version this agent reports (the server's).
pub const KUBELET_VERSION: &str = "v1.33.0";

/// What the node is, for its Node object.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub ip: IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    pub labels: BTreeMap<String, String>,
    pub runtime_version: String,
    /// The Lease's duration; it is renewed every quarter of it.
    pub lease_duration_seconds: u32,
}

/// Facts read from the machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub cpus: i64,
    pub memory_bytes: i64,
    pub memory_available_bytes: i64,
    pub disk_bytes: i64,
    pub disk_available_bytes: i64,
    pub pid_max: i64,
    pub pids: i64,
}

impl Machine {
    pub fn read(data_dir: &Path) -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kb = |key: &str| -> i64 {
            meminfo
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
                * 1024
        };
        let (disk, disk_avail) = match nix::sys::statvfs::statvfs(data_dir) {
            Ok(s) => (
                (s.blocks() as i64) * (s.fragment_size() as i64),
                (s.blocks_available() as i64) * (s.fragment_size() as i64),
            ),
            Err(_) => (0, 0),
        };
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(32768);
        let pids = std::fs::read_dir("/proc")
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| {
                        e.file_name()
                            .to_string_lossy()
                            .bytes()
                            .all(|b| b.is_ascii_digit())
                    })
                    .count() as i64
            })
            .unwrap_or(0);
        Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as i64)
                .unwrap_or(1),
            memory_bytes: kb("MemTotal:"),
            memory_available_bytes: kb("MemAvailable:"),
            disk_bytes: disk,
            disk_available_bytes: disk_avail,
            pid_max,
            pids,
        }
    }

    pub fn allocatable(&self) -> NodeAllocatable {
        NodeAllocatable {
            cpu_millis: self.cpus * 1000,
            memory_bytes: (self.memory_bytes - MEMORY_RESERVE).max(0),
            ephemeral_storage_bytes: self.disk_bytes - self.disk_bytes / 10,
        }
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `GOARCH` spelling of this machine's architecture.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

/// The labels the kubelet puts on its Node, plus ours.
pub fn node_labels(spec: &NodeSpec) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("kubernetes.io/hostname".into(), spec.name.clone());
    l.insert("kubernetes.io/os".into(), "linux".into());
    l.insert("kubernetes.io/arch".into(), go_arch().into());
    l.insert("beta.kubernetes.io/os".into(), "linux".into());
    l.insert("beta.kubernetes.io/arch".into(), go_arch().into());
    l.insert(HOST_NETWORK_PODS_LABEL.into(), "true".into());
    l.extend(spec.labels.clone());
    l
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Value {
    json!({
        "type": type_,
        "status": if status { "True" } else { "False" },
        "reason": reason,
        "message": message,
    })
}

/// The Node status without timestamps (those are added when written).
pub fn node_status(spec: &NodeSpec, m: &Machine) -> Value {
    let alloc = m.allocatable();
    let hostname = read_trimmed("/proc/sys/kernel/hostname");
    let machine_id = read_trimmed("/etc/machine-id");
    let system_uuid = {
        let u = read_trimmed("/sys/class/dmi/id/product_uuid");
        if u.is_empty() {
            machine_id.clone()
        } else {
            u
        }
    };
    let memory_pressure = m.memory_available_bytes > 0 && m.memory_available_bytes < MEMORY_RESERVE;
    let disk_pressure = m.disk_bytes > 0 && m.disk_available_bytes < m.disk_bytes / 10;
    let pid_pressure = m.pid_max > 0 && m.pid_max - m.pids < m.pid_max / 10;
    let mut addresses = vec![json!({"type": "InternalIP", "address": spec.ip.to_string()})];
    if !hostname.is_empty() {
        addresses.push(json!({"type": "Hostname", "address": hostname}));
    }
    let capacity = json!({
        "cpu": m.cpus.to_string(),
        "memory": format!("{}Ki", m.memory_bytes / 1024),
        "ephemeral-storage": format!("{}Ki", m.disk_bytes / 1024),
        "pods": MAX_PODS.to_string(),
    });
    let allocatable = json!({
        "cpu": format!("{}m", alloc.cpu_millis),
        "memory": format!("{}Ki", alloc.memory_bytes / 1024),
        "ephemeral-storage": alloc.ephemeral_storage_bytes.to_string(),
        "pods": MAX_PODS.to_string(),
    });
    json!({
        "capacity": capacity,
        "allocatable": allocatable,
        "conditions": [
            if memory_pressure {
                condition("MemoryPressure", true, "KubeletHasInsufficientMemory", "kubelet has insufficient memory available")
            } else {
                condition("MemoryPressure", false, "KubeletHasSufficientMemory", "kubelet has sufficient memory available")
            },
            if disk_pressure {
                condition("DiskPressure", true, "KubeletHasDiskPressure", "kubelet has disk pressure")
            } else {
                condition("DiskPressure", false, "KubeletHasNoDiskPressure", "kubelet has no disk pressure")
            },
            if pid_pressure {
                condition("PIDPressure", true, "KubeletHasInsufficientPID", "kubelet has insufficient PID available")
            } else {
                condition("PIDPressure", false, "KubeletHasSufficientPID", "kubelet has sufficient PID available")
            },
            condition("Ready", true, "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": addresses,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": spec.port}},
        "nodeInfo": {
            "machineID": machine_id,
            "systemUUID": system_uuid,
            "bootID": read_trimmed("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": read_trimmed("/proc/sys/kernel/osrelease"),
            "osImage": os_image(),
            "containerRuntimeVersion": spec.runtime_version,
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": go_arch(),
        },
    })
}

/// Adds heartbeat and transition times to the conditions, keeping the
/// transition time of conditions whose status did not change.
/// Each condition's type and status, sorted.
fn condition_states(status: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = status["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c["type"].as_str().unwrap_or("").to_string(),
                        c["status"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn stamp(status: &mut Value, previous: Option<&Value>, now: &str) {
    let Some(conds) = status["conditions"].as_array_mut() else {
        return;
    };
    for c in conds {
        let old = previous
            .and_then(|p| p["conditions"].as_array())
            .and_then(|cs| cs.iter().find(|o| o["type"] == c["type"]));
        let transition = match old {
            Some(o) if o["status"] == c["status"] => o["lastTransitionTime"].clone(),
            _ => json!(now),
        };
        c["lastHeartbeatTime"] = json!(now);
        c["lastTransitionTime"] = transition;
    }
}

/// Creates the Node, or updates an existing one's labels.
pub async fn register(client: &kube::Client, spec: &NodeSpec) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let labels = node_labels(spec);
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels},
    }))
    .expect("valid node");
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => info!(node = %spec.name, "registered node"),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let patch = json!({"metadata": {"labels": labels}});
            nodes
                .patch(&spec.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            info!(node = %spec.name, "node already registered, labels updated");
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Renews the Lease and keeps the Node status up to date until cancelled.
/// API errors are logged and retried; they never stop the agent.
pub async fn heartbeat(client: kube::Client, spec: NodeSpec, cancel: CancellationToken) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let mut written: Option<(Value, Instant)> = None;
    let lease_seconds = spec.lease_duration_seconds.max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(u64::from(lease_seconds) * 250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = rfc3339(Timestamp::now());
        let machine = Machine::read(&spec.data_dir);
        let status = node_status(&spec, &machine);
        // The server's copy, as the kubelet reads its own Node every sync:
        // when the node controller marked it Unknown while this agent was
        // cut off, the conditions differ and are posted again at once.
        let mut node_uid = None;
        let previous = nodes.get_status(&spec.name).await.ok().and_then(|n| {
            node_uid = n.metadata.uid.clone();
            serde_json::to_value(n.status).ok()
        });
        let due = match &written {
            None => true,
            Some((last, at)) => {
                last != &status
                    || at.elapsed() >= STATUS_REFRESH
                    || previous
                        .as_ref()
                        .is_some_and(|p| condition_states(p) != condition_states(&status))
            }
        };
        if due {
            let mut stamped = status.clone();
            stamp(&mut stamped, previous.as_ref(), &now);
            match nodes
                .patch_status(
                    &spec.name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"status": stamped})),
                )
                .await
            {
                Ok(_) => written = Some((status, Instant::now())),
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    warn!(node = %spec.name, "node object was deleted, registering again");
                    if let Err(e) = register(&client, &spec).await {
                        warn!(error = %e, "registering node failed");
                    }
                    written = None;
                    continue;
                }
                Err(e) => warn!(error = %e, "updating node status failed"),
            }
        }
        renew_lease(&leases, &spec.name, node_uid, lease_seconds).await;
    }
}

async fn renew_lease(leases: &Api<Lease>, node: &str, node_uid: Option<String>, seconds: u32) {
    // Leases carry MicroTime.
    let micro = format!(
        "{}Z",
        jiff::tz::Offset::UTC
            .to_datetime(Timestamp::now())
            .strftime("%Y-%m-%dT%H:%M:%S%.6f")
    );
    let patch = json!({"spec": {"holderIdentity": node, "leaseDurationSeconds": seconds, "renewTime": micro}});
    match leases
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {
            let mut meta = json!({"name": node, "namespace": "kube-node-lease"});
            if let Some(uid) = node_uid {
                meta["ownerReferences"] =
                    json!([{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}]);
            }
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": meta,
                "spec": patch["spec"],
            }))
            .expect("valid lease");
            if let Err(e) = leases.create(&PostParams::default(), &lease).await {
                warn!(error = %e, "creating node lease failed");
            }
        }
        Err(e) => warn!(error = %e, "renewing node lease failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_has_what_clients_need() {
        let spec = NodeSpec {
            name: "n1".into(),
            ip: "10.0.0.5".parse().unwrap(),
            port: 10250,
            data_dir: std::env::temp_dir(),
            labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
            runtime_version: "process://0.1.0".into(),
            lease_duration_seconds: LEASE_DURATION_SECONDS,
        };
        let m = Machine::read(&spec.data_dir);
        assert!(m.cpus >= 1 && m.memory_bytes > 0);
        let st = node_status(&spec, &m);
        let node: Node =
            serde_json::from_value(json!({"metadata": {"name": "n1"}, "status": st})).unwrap();
        let status = node.status.unwrap();
        assert_eq!(status.capacity.as_ref().unwrap()["pods"].0, "110");
        let types: Vec<_> = status
            .conditions
            .unwrap()
            .into_iter()
            .map(|c| c.type_)
            .collect();
        assert_eq!(
            types,
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        assert_eq!(
            status
                .daemon_endpoints
                .unwrap()
                .kubelet_endpoint
                .unwrap()
                .port,
            10250
        );
        assert_eq!(status.node_info.unwrap().operating_system, "linux");
        let labels = node_labels(&spec);
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels[HOST_NETWORK_PODS_LABEL], "true");
        assert_eq!(labels["zone"], "a");
    }

    #[test]
    fn conditions_set_unknown_by_the_controller_count_as_drift() {
        let ours = json!({"conditions": [{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}]});
        let server = json!({"conditions": [{"type": "DiskPressure", "status": "False", "lastHeartbeatTime": "t0"}, {"type": "Ready", "status": "True", "lastHeartbeatTime": "t0"}]});
        assert_eq!(condition_states(&ours), condition_states(&server));
        let marked = json!({"conditions": [{"type": "Ready", "status": "Unknown"}, {"type": "DiskPressure", "status": "Unknown"}]});
        assert_ne!(condition_states(&ours), condition_states(&marked));
    }

    #[test]
    fn stamping_keeps_transition_times() {
        let mut a = json!({"conditions": [{"type": "Ready", "status": "True"}]});
        stamp(&mut a, None, "t1");
        let mut b = json!({"conditions": [{"type": "Ready", "status": "True"}]});
        stamp(&mut b, Some(&a), "t2");
        assert_eq!(b["conditions"][0]["lastTransitionTime"], "t1");
        assert_eq!(b["conditions"][0]["lastHeartbeatTime"], "t2");
    }
}
