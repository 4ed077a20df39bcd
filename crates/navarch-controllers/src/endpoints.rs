//! The Endpoints and EndpointSlice controllers, as upstream's `endpoint`
//! and `endpointslice` controllers: for every Service with a selector (not
//! `ExternalName`), a v1 `Endpoints` object of the same name and a set of
//! `discovery.k8s.io/v1` EndpointSlices listing the selected pods.
//!
//! One task owns one local view (Services, Pods, Nodes, Endpoints and
//! EndpointSlices from the informers) and one work queue whose keys are a
//! Service and which of the two objects to sync, so each controller keeps
//! its own retries and events while the pods are parsed and indexed once.
//!
//! Scale: pods are indexed by namespace, and every Service keeps the set
//! of pods its selector matches (updated when a pod's labels or a
//! selector change). A pod change queues only the Services it belongs to,
//! and only when something endpoints show changed (IPs, readiness,
//! deletion, phase, node, hostname, named ports); a sync reads only the
//! Service's own pods. The queue holds a key once, so a burst of pod
//! changes (a Deployment rolling 10,000 pods) costs one sync per Service
//! per turn of the loop, and a Service with writes in flight is synced
//! again only after they finish. Writes happen only when the result
//! differs from what is stored. Upstream's `--endpoint-updates-batch-period`
//! defaults to 0 and is not offered.
//!
//! **Endpoints** (upstream `syncService` of the endpoint controller):
//! pods with an IP of the Service's family that are not terminal and not
//! being deleted (with `publishNotReadyAddresses`, terminating pods too,
//! and all of them as ready) become addresses (`ip`, `nodeName`,
//! `targetRef`, `hostname` when the pod's `subdomain` is the Service's
//! name), ready ones in `addresses`, the others in `notReadyAddresses`.
//! Ports resolve the Service's `targetPort`: a number as is, a name through
//! the pod's container (and sidecar) ports of the same protocol, per pod,
//! so pods with different numbers land in different subsets
//! (upstream's `RepackSubsets`: one subset per distinct set of addresses).
//! A headless Service without ports gets port-less subsets. Labels mirror
//! the Service's, plus `service.kubernetes.io/headless` without a cluster
//! IP; `endpoints.kubernetes.io/last-change-trigger-time` is upstream's
//! trigger time (the earliest pod readiness change or Service creation not
//! yet reflected). More than 1,000 addresses are truncated as upstream
//! (ready ones first, in proportion per subset) and annotated
//! `endpoints.kubernetes.io/over-capacity: truncated`. A Service deleted
//! takes its Endpoints with it (they carry no ownerReference); at start,
//! Endpoints without a Service (and without a leader-election annotation)
//! are deleted. Services without a selector are left alone: their
//! Endpoints belong to the user (the built-in `kubernetes` Service is one).
//! Write failures are `FailedToCreateEndpoint` / `FailedToUpdateEndpoint`
//! warnings on the Endpoints.
//!
//! **EndpointSlices** (upstream's endpointslice controller; the packing is
//! [`crate::endpointslice`]): per address type of the Service, endpoints
//! for every pod with an IP that is not terminal, terminating ones
//! included (`ready` false unless `publishNotReadyAddresses`, `serving`
//! from readiness, `terminating`), with `nodeName`, `zone` (the node's
//! `topology.kubernetes.io/zone`), `hostname` and `targetRef`, grouped by
//! resolved ports, at most 100 per slice. Slices are named
//! `<service>-<random>`, labelled `kubernetes.io/service-name` and
//! `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`
//! (plus the Service's labels), and controlled by the Service, so the
//! garbage collector removes them with it. A pod whose Node is unknown is
//! left out and the Service retried, as upstream. Every write this
//! controller makes is remembered until the informer shows it, so a sync
//! never plans on slices older than its own writes and its own writes do
//! not queue the Service again. Failures are `FailedToUpdateEndpointSlices`
//! warnings on the Service, retried with upstream's backoff (1 s doubling).
//!
//! Not done: topology hints and `trafficDistribution`, the EndpointSlice
//! mirroring controller (Endpoints of selectorless Services copied to
//! slices), upstream's overall retry token bucket and its fifteen-retry
//! limit.
//!
//! Ours: upstream compares the stored Endpoints with the untruncated
//! result, so a Service over 1,000 addresses is rewritten on every sync;
//! here the truncated result is compared. A subset left without addresses
//! by truncation is dropped (upstream would write an invalid object). A
//! Node added or relabelled with another zone queues the Services of its
//! pods.

use crate::endpointslice::{
    self, AddressType, Desired, Endpoint, Existing, Plan, SliceContent, SlicePort, CONTROLLER_NAME,
    LABEL_HEADLESS, LABEL_MANAGED_BY, LABEL_SERVICE_NAME, MAX_ENDPOINTS_PER_SLICE,
};
use crate::events::{ObjectRef, Recorder};
use crate::informer::{Batch, Change, Informer};
use crate::queue::{Backoff, WorkQueue};
use crate::{pods_rt, rt};
use jiff::Timestamp;
use navarch_api::ResourceType;
use navarch_apiserver::cache::CachedObject;
use navarch_apiserver::{ApiServer, DeleteOptions, WriteOptions};
use navarch_store::Revision;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Upstream `maxCapacity`: addresses an Endpoints object holds at most.
pub const MAX_CAPACITY: usize = 1000;
pub const TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";
pub const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
const LEADER: &str = "control-plane.alpha.kubernetes.io/leader";
const ZONE: &str = "topology.kubernetes.io/zone";
const EP_COMPONENT: &str = "endpoint-controller";
const SLICE_COMPONENT: &str = "endpoint-slice-controller";
/// Upstream `endpointSliceChangeMinSyncDelay`: a slice changed by someone
/// else queues its Service this much later.
const SLICE_CHANGE_DELAY: Duration = Duration::from_secs(1);
/// Own writes not seen by the informer after this long are forgotten.
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts both controllers on `server`'s watch cache; they stop with
/// `shutdown`.
pub fn spawn(server: Arc<ApiServer>, shutdown: CancellationToken) {
    let (tx, rx) = mpsc::channel(256);
    for rt in [
        services_rt(),
        pods_rt(),
        nodes_rt(),
        endpoints_rt(),
        slices_rt(),
    ] {
        Informer::start(server.cache.clone(), rt, tx.clone(), shutdown.clone());
    }
    drop(tx);
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let c = Controller {
        ep_recorder: Recorder::spawn(server.clone(), EP_COMPONENT),
        slice_recorder: Recorder::spawn(server.clone(), SLICE_COMPONENT),
        server,
        services: HashMap::new(),
        services_by_ns: HashMap::new(),
        pods: HashMap::new(),
        pods_by_ns: HashMap::new(),
        pods_by_node: HashMap::new(),
        pod_services: HashMap::new(),
        members: HashMap::new(),
        nodes: HashMap::new(),
        endpoints: HashMap::new(),
        slices: HashMap::new(),
        slice_service: HashMap::new(),
        queue: WorkQueue::default(),
        busy: HashSet::new(),
        deferred: HashSet::new(),
        stale: HashSet::new(),
        expect: HashMap::new(),
        pending: HashMap::new(),
        ep_backoff: Backoff::default(),
        slice_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(1000)),
        ep_trigger: TriggerTimes::default(),
        slice_trigger: TriggerTimes::default(),
        synced: HashSet::new(),
        leftovers_checked: false,
        done_tx,
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = c.run(rx, done_rx) => {}
        }
    });
}

fn services_rt() -> &'static ResourceType {
    rt("", "services")
}
fn nodes_rt() -> &'static ResourceType {
    rt("", "nodes")
}
fn endpoints_rt() -> &'static ResourceType {
    rt("", "endpoints")
}
fn slices_rt() -> &'static ResourceType {
    rt("discovery.k8s.io", "endpointslices")
}

// ----- the model --------------------------------------------------------------

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn timestamp(v: &Value) -> Option<Timestamp> {
    v.as_str()?.parse().ok()
}

/// An object reference as Endpoints and slices carry it (upstream ignores
/// its resourceVersion when comparing, so it is not kept).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl TargetRef {
    fn pod(p: &Pod) -> TargetRef {
        TargetRef {
            kind: "Pod".into(),
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            uid: p.view.uid.clone(),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({"kind": self.kind, "namespace": self.namespace, "name": self.name, "uid": self.uid})
    }

    pub fn from_json(v: &Value) -> Option<TargetRef> {
        let s = |f: &str| v[f].as_str().unwrap_or("").to_string();
        v.is_object().then(|| TargetRef {
            kind: s("kind"),
            namespace: s("namespace"),
            name: s("name"),
            uid: s("uid"),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TargetPort {
    Number(i64),
    Name(String),
}

/// What the controllers read of a Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServicePort {
    name: String,
    protocol: String,
    target: TargetPort,
    app_protocol: Option<String>,
}

/// What the controllers read of a Service.
#[derive(Debug, Clone, PartialEq)]
struct Service {
    uid: String,
    labels: BTreeMap<String, String>,
    /// `None`: no selector (the Service's endpoints are the user's).
    selector: Option<BTreeMap<String, String>>,
    external_name: bool,
    cluster_ip: String,
    ip_families: Vec<AddressType>,
    publish_not_ready: bool,
    ports: Vec<ServicePort>,
    created: Option<Timestamp>,
    deleting: bool,
}

impl Service {
    fn from_json(v: &Value) -> Service {
        let spec = &v["spec"];
        // An empty selector is stored as none (upstream's protobuf storage
        // drops empty maps): it selects nothing.
        let selector = Some(string_map(&spec["selector"])).filter(|m| !m.is_empty());
        let ports = spec["ports"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| ServicePort {
                        name: p["name"].as_str().unwrap_or("").to_string(),
                        protocol: p["protocol"].as_str().unwrap_or("TCP").to_string(),
                        target: match &p["targetPort"] {
                            Value::String(s) => TargetPort::Name(s.clone()),
                            Value::Number(n) => TargetPort::Number(n.as_i64().unwrap_or(0)),
                            _ => TargetPort::Number(p["port"].as_i64().unwrap_or(0)),
                        },
                        app_protocol: p["appProtocol"].as_str().map(str::to_string),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut ip_families = Vec::new();
        for f in spec["ipFamilies"].as_array().into_iter().flatten() {
            let t = match f.as_str() {
                Some("IPv4") => AddressType::IPv4,
                Some("IPv6") => AddressType::IPv6,
                _ => continue,
            };
            if !ip_families.contains(&t) {
                ip_families.push(t);
            }
        }
        Service {
            uid: v["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            labels: string_map(&v["metadata"]["labels"]),
            selector,
            external_name: spec["type"] == "ExternalName",
            cluster_ip: spec["clusterIP"].as_str().unwrap_or("").to_string(),
            ip_families,
            publish_not_ready: spec["publishNotReadyAddresses"] == true,
            ports,
            created: timestamp(&v["metadata"]["creationTimestamp"]),
            deleting: v["metadata"]["deletionTimestamp"].is_string(),
        }
    }

    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }

    /// Has a cluster IP (not `None`, not empty).
    fn ip_set(&self) -> bool {
        !self.cluster_ip.is_empty() && self.cluster_ip != "None"
    }

    fn headless(&self) -> bool {
        self.cluster_ip == "None"
    }

    /// The family of the Endpoints' addresses: the first IP family, else
    /// the cluster IP's, else (headless, no families) the pod's own.
    fn endpoints_family(&self, pod: &Pod) -> AddressType {
        if let Some(f) = self.ip_families.first() {
            *f
        } else if self.ip_set() {
            AddressType::of(&self.cluster_ip)
        } else {
            pod.view
                .ips
                .first()
                .map_or(AddressType::IPv4, |ip| AddressType::of(ip))
        }
    }

    /// The slices' address types (upstream `getAddressTypesForService`).
    fn address_types(&self) -> Vec<AddressType> {
        if !self.ip_families.is_empty() {
            let mut t = self.ip_families.clone();
            t.sort();
            t
        } else if self.ip_set() {
            vec![AddressType::of(&self.cluster_ip)]
        } else {
            vec![AddressType::IPv4, AddressType::IPv6]
        }
    }
}

/// A container port with a name (what a named `targetPort` looks up).
#[derive(Debug, Clone, PartialEq, Eq)]
struct NamedPort {
    name: String,
    port: i64,
    protocol: String,
}

/// What endpoints show of a pod; a change to anything here (or to the
/// labels) queues its Services.
#[derive(Debug, Clone, PartialEq)]
struct PodView {
    uid: String,
    node_name: String,
    hostname: String,
    subdomain: String,
    /// `status.podIPs`, else `status.podIP`.
    ips: Vec<String>,
    ready: bool,
    /// The `Ready` condition's last transition (the trigger time).
    ready_since: Option<Timestamp>,
    deleting: bool,
    terminal: bool,
    ports: Vec<NamedPort>,
}

#[derive(Debug, Clone)]
struct Pod {
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
    view: PodView,
}

impl Pod {
    fn from_json(v: &Value) -> Pod {
        let m = &v["metadata"];
        let spec = &v["spec"];
        let status = &v["status"];
        let mut ips: Vec<String> = status["podIPs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["ip"].as_str())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if ips.is_empty() {
            if let Some(ip) = status["podIP"].as_str().filter(|s| !s.is_empty()) {
                ips.push(ip.to_string());
            }
        }
        let ready_cond = status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
        let mut ports = Vec::new();
        let mut add_ports = |c: &Value| {
            for p in c["ports"].as_array().into_iter().flatten() {
                if let Some(name) = p["name"].as_str().filter(|n| !n.is_empty()) {
                    ports.push(NamedPort {
                        name: name.to_string(),
                        port: p["containerPort"].as_i64().unwrap_or(0),
                        protocol: p["protocol"].as_str().unwrap_or("TCP").to_string(),
                    });
                }
            }
        };
        for c in spec["containers"].as_array().into_iter().flatten() {
            add_ports(c);
        }
        // Sidecars: init containers that keep running.
        for c in spec["initContainers"].as_array().into_iter().flatten() {
            if c["restartPolicy"] == "Always" {
                add_ports(c);
            }
        }
        let phase = status["phase"].as_str().unwrap_or("");
        Pod {
            namespace: m["namespace"].as_str().unwrap_or("").to_string(),
            name: m["name"].as_str().unwrap_or("").to_string(),
            labels: string_map(&m["labels"]),
            view: PodView {
                uid: m["uid"].as_str().unwrap_or("").to_string(),
                node_name: spec["nodeName"].as_str().unwrap_or("").to_string(),
                hostname: spec["hostname"].as_str().unwrap_or("").to_string(),
                subdomain: spec["subdomain"].as_str().unwrap_or("").to_string(),
                ips,
                ready: ready_cond.is_some_and(|c| c["status"] == "True"),
                ready_since: ready_cond.and_then(|c| timestamp(&c["lastTransitionTime"])),
                deleting: m["deletionTimestamp"].is_string(),
                terminal: phase == "Succeeded" || phase == "Failed",
                ports,
            },
        }
    }

    /// Upstream `ShouldPodBeInEndpoints`.
    fn in_endpoints(&self, include_terminating: bool) -> bool {
        !self.view.terminal
            && !self.view.ips.is_empty()
            && (include_terminating || !self.view.deleting)
    }

    /// Upstream `ShouldSetHostname`.
    fn hostname_for(&self, svc_name: &str) -> Option<String> {
        (!self.view.hostname.is_empty() && self.view.subdomain == svc_name)
            .then(|| self.view.hostname.clone())
    }

    fn node(&self) -> Option<String> {
        Some(self.view.node_name.clone()).filter(|n| !n.is_empty())
    }

    /// Upstream `FindPort`: a number as is; a name through the container
    /// (and sidecar) ports with the Service port's protocol.
    fn find_port(&self, sp: &ServicePort) -> Option<i64> {
        match &sp.target {
            TargetPort::Number(n) => Some(*n),
            TargetPort::Name(name) => self
                .view
                .ports
                .iter()
                .find(|p| p.name == *name && p.protocol == sp.protocol)
                .map(|p| p.port),
        }
    }
}

// ----- Endpoints (pure) -------------------------------------------------------

/// One address of an Endpoints subset.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Address {
    ip: String,
    hostname: Option<String>,
    node_name: Option<String>,
    target: Option<TargetRef>,
}

impl Address {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("ip".into(), json!(self.ip));
        if let Some(h) = &self.hostname {
            m.insert("hostname".into(), json!(h));
        }
        if let Some(n) = &self.node_name {
            m.insert("nodeName".into(), json!(n));
        }
        if let Some(t) = &self.target {
            m.insert("targetRef".into(), t.to_json());
        }
        Value::Object(m)
    }

    fn from_json(v: &Value) -> Address {
        Address {
            ip: v["ip"].as_str().unwrap_or("").to_string(),
            hostname: v["hostname"].as_str().map(str::to_string),
            node_name: v["nodeName"].as_str().map(str::to_string),
            target: TargetRef::from_json(&v["targetRef"]),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct EndpointPort {
    name: String,
    port: i64,
    protocol: String,
    app_protocol: Option<String>,
}

impl EndpointPort {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.name.is_empty() {
            m.insert("name".into(), json!(self.name));
        }
        m.insert("port".into(), json!(self.port));
        m.insert("protocol".into(), json!(self.protocol));
        if let Some(a) = &self.app_protocol {
            m.insert("appProtocol".into(), json!(a));
        }
        Value::Object(m)
    }

    fn from_json(v: &Value) -> EndpointPort {
        EndpointPort {
            name: v["name"].as_str().unwrap_or("").to_string(),
            port: v["port"].as_i64().unwrap_or(0),
            protocol: v["protocol"].as_str().unwrap_or("TCP").to_string(),
            app_protocol: v["appProtocol"].as_str().map(str::to_string),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Subset {
    addresses: Vec<Address>,
    not_ready: Vec<Address>,
    ports: Vec<EndpointPort>,
}

fn subsets_json(subsets: &[Subset]) -> Value {
    let all = |a: &[Address]| Value::Array(a.iter().map(Address::to_json).collect());
    Value::Array(
        subsets
            .iter()
            .map(|s| {
                let mut m = Map::new();
                if !s.addresses.is_empty() {
                    m.insert("addresses".into(), all(&s.addresses));
                }
                if !s.not_ready.is_empty() {
                    m.insert("notReadyAddresses".into(), all(&s.not_ready));
                }
                if !s.ports.is_empty() {
                    m.insert(
                        "ports".into(),
                        Value::Array(s.ports.iter().map(EndpointPort::to_json).collect()),
                    );
                }
                Value::Object(m)
            })
            .collect(),
    )
}

fn parse_subsets(v: &Value) -> Vec<Subset> {
    let list = |v: &Value| -> Vec<Address> {
        v.as_array()
            .map(|a| a.iter().map(Address::from_json).collect())
            .unwrap_or_default()
    };
    v.as_array()
        .map(|ss| {
            ss.iter()
                .map(|s| Subset {
                    addresses: list(&s["addresses"]),
                    not_ready: list(&s["notReadyAddresses"]),
                    ports: s["ports"]
                        .as_array()
                        .map(|ps| ps.iter().map(EndpointPort::from_json).collect())
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Addresses sort by IP, then by the pod's uid (upstream
/// `addrsByIPAndUID`).
type AddressKey = (Option<IpAddr>, String, String);

/// The Service's subsets from its pods (upstream's per-pod subsets folded
/// by `RepackSubsets`): each distinct set of addresses (with their
/// readiness) gets the ports all of them offer. Sorted: addresses by IP
/// and uid, ports by name and number, subsets by their addresses.
fn desired_subsets(svc: &Service, svc_name: &str, pods: &[&Pod]) -> Vec<Subset> {
    // Port (None: a headless Service without ports) → address → ready.
    type Addrs = BTreeMap<AddressKey, (Address, bool)>;
    let mut by_port: BTreeMap<Option<EndpointPort>, Addrs> = BTreeMap::new();
    for pod in pods {
        if !pod.in_endpoints(svc.publish_not_ready) {
            continue;
        }
        let family = svc.endpoints_family(pod);
        let Some(ip) = pod.view.ips.iter().find(|ip| AddressType::of(ip) == family) else {
            continue;
        };
        let address = Address {
            ip: ip.clone(),
            hostname: pod.hostname_for(svc_name),
            node_name: pod.node(),
            target: Some(TargetRef::pod(pod)),
        };
        let ready = svc.publish_not_ready || pod.view.ready;
        let key: AddressKey = (ip.parse().ok(), ip.clone(), pod.view.uid.clone());
        let mut add = |port: Option<EndpointPort>| {
            let e = by_port
                .entry(port)
                .or_default()
                .entry(key.clone())
                .or_insert_with(|| (address.clone(), ready));
            e.1 |= ready;
        };
        if svc.ports.is_empty() {
            if svc.headless() {
                add(None);
            }
            continue;
        }
        for sp in &svc.ports {
            if let Some(port) = pod.find_port(sp) {
                add(Some(EndpointPort {
                    name: sp.name.clone(),
                    port,
                    protocol: sp.protocol.clone(),
                    app_protocol: sp.app_protocol.clone(),
                }));
            }
        }
    }
    // Group the ports by the exact set of addresses offering them.
    type Signature = Vec<(AddressKey, bool)>;
    let mut groups: BTreeMap<Signature, (Vec<EndpointPort>, Addrs)> = BTreeMap::new();
    for (port, addrs) in by_port {
        let sig: Vec<(AddressKey, bool)> =
            addrs.iter().map(|(k, (_, r))| (k.clone(), *r)).collect();
        let g = groups.entry(sig).or_insert_with(|| (Vec::new(), addrs));
        g.0.extend(port);
    }
    groups
        .into_values()
        .map(|(ports, addrs)| {
            let mut s = Subset {
                ports,
                ..Default::default()
            };
            for (address, ready) in addrs.into_values() {
                if ready {
                    s.addresses.push(address);
                } else {
                    s.not_ready.push(address);
                }
            }
            s
        })
        .collect()
}

/// Upstream `truncateEndpoints`: over [`MAX_CAPACITY`] addresses, keep
/// ready ones first, each subset its share (rounded up) of what is kept.
/// Returns whether anything was cut.
fn truncate(subsets: &mut Vec<Subset>) -> bool {
    let ready: usize = subsets.iter().map(|s| s.addresses.len()).sum();
    let not_ready: usize = subsets.iter().map(|s| s.not_ready.len()).sum();
    if ready + not_ready <= MAX_CAPACITY {
        return false;
    }
    let cut_ready = ready > MAX_CAPACITY;
    let (max, total) = if cut_ready {
        (MAX_CAPACITY, ready)
    } else {
        (MAX_CAPACITY - ready, not_ready)
    };
    let mut room = max;
    for s in subsets.iter_mut() {
        let n = if cut_ready {
            s.addresses.len()
        } else {
            s.not_ready.len()
        };
        let share = (n * max).div_ceil(total).min(room);
        if cut_ready {
            s.addresses.truncate(share);
            s.not_ready.clear();
            room -= s.addresses.len();
        } else {
            s.not_ready.truncate(share);
            room -= s.not_ready.len();
        }
    }
    subsets.retain(|s| !s.addresses.is_empty() || !s.not_ready.is_empty());
    true
}

// ----- EndpointSlices (per pod) ------------------------------------------------

/// The slice ports of `pod` for the Service, in [`endpointslice::PortKey`]
/// order (upstream `getEndpointPorts`).
fn slice_ports(svc: &Service, pod: &Pod) -> Vec<SlicePort> {
    let mut ports: Vec<SlicePort> = svc
        .ports
        .iter()
        .filter_map(|sp| {
            Some(SlicePort {
                name: Some(sp.name.clone()),
                port: Some(pod.find_port(sp)?),
                protocol: Some(sp.protocol.clone()),
                app_protocol: sp.app_protocol.clone(),
            })
        })
        .collect();
    ports.sort();
    ports
}

/// Upstream `podToEndpoint`.
fn slice_endpoint(
    svc: &Service,
    svc_name: &str,
    pod: &Pod,
    zone: Option<String>,
    t: AddressType,
) -> Endpoint {
    let serving = pod.view.ready;
    let terminating = pod.view.deleting;
    Endpoint {
        addresses: pod
            .view
            .ips
            .iter()
            .filter(|ip| AddressType::of(ip) == t)
            .cloned()
            .collect(),
        ready: Some(svc.publish_not_ready || (serving && !terminating)),
        serving: Some(serving),
        terminating: Some(terminating),
        hostname: pod.hostname_for(svc_name),
        node_name: pod.node(),
        zone,
        target: Some(TargetRef::pod(pod)),
    }
}

const RESERVED: [&str; 3] = [LABEL_SERVICE_NAME, LABEL_MANAGED_BY, LABEL_HEADLESS];

fn unreserved(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| !RESERVED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Upstream `setEndpointSliceLabels`: the Service's labels, the headless
/// label without a cluster IP, the service name and the manager.
fn slice_labels(svc: &Service, svc_name: &str) -> BTreeMap<String, String> {
    let mut l = unreserved(&svc.labels);
    if !svc.ip_set() {
        l.insert(LABEL_HEADLESS.into(), String::new());
    }
    l.insert(LABEL_SERVICE_NAME.into(), svc_name.to_string());
    l.insert(LABEL_MANAGED_BY.into(), CONTROLLER_NAME.into());
    l
}

// ----- trigger times ------------------------------------------------------------

/// Upstream's `TriggerTimeTracker`: per Service, the trigger times seen at
/// the last sync, so a sync can tell the earliest change it is the first
/// to reflect.
#[derive(Default)]
struct TriggerTimes {
    services: HashMap<SvcKey, TriggerState>,
}

struct TriggerState {
    pods: HashMap<String, Timestamp>,
    service: Option<Timestamp>,
}

impl TriggerTimes {
    /// The trigger time of this sync: the Service's creation for a Service
    /// not seen before, else the earliest pod readiness change (or Service
    /// creation) newer than at the last sync; `None` when nothing is newer.
    fn compute(&mut self, key: &SvcKey, svc: &Service, pods: &[&Pod]) -> Option<Timestamp> {
        let known = self.services.remove(key);
        let mut earliest: Option<Timestamp> = None;
        let mut changed = |t: Timestamp| {
            earliest = Some(earliest.map_or(t, |e| e.min(t)));
        };
        let mut now = HashMap::with_capacity(pods.len());
        for p in pods {
            if let Some(t) = p.view.ready_since {
                let last = known.as_ref().and_then(|k| k.pods.get(&p.name));
                if last.is_none_or(|l| t > *l) {
                    changed(t);
                }
                now.insert(p.name.clone(), t);
            }
        }
        if let Some(t) = svc.created {
            let last = known.as_ref().and_then(|k| k.service);
            if last.is_none_or(|l| t > l) {
                changed(t);
            }
        }
        self.services.insert(
            key.clone(),
            TriggerState {
                pods: now,
                service: svc.created,
            },
        );
        if known.is_none() {
            svc.created
        } else {
            earliest
        }
    }

    fn forget(&mut self, key: &SvcKey) {
        self.services.remove(key);
    }
}

// ----- the controller -------------------------------------------------------------

/// Which of a Service's objects a queue key syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Target {
    Endpoints,
    Slices,
}

/// A Service: namespace, name.
type SvcKey = (String, String);
/// A queue key: what to sync, of which Service.
type Key = (Target, String, String);
/// A pod: namespace, name.
type PodKey = (String, String);

/// An Endpoints object as stored.
struct Current {
    rv: Revision,
    uid: String,
    object: Value,
    subsets: Vec<Subset>,
    labels: BTreeMap<String, String>,
    over_capacity: bool,
    leader: bool,
}

/// An EndpointSlice managed by this controller, as stored.
struct Slice {
    rv: Revision,
    metadata: Value,
    owners: Vec<String>,
    address_type: Option<AddressType>,
    ports: Vec<SlicePort>,
    endpoints: Vec<Endpoint>,
    labels: BTreeMap<String, String>,
    deleting: bool,
}

impl Slice {
    fn from_json(v: &Value, rv: Revision) -> Slice {
        let m = &v["metadata"];
        let owners = m["ownerReferences"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .filter(|r| r["apiVersion"] == "v1" && r["kind"] == "Service")
                    .filter_map(|r| r["uid"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut ports: Vec<SlicePort> = v["ports"]
            .as_array()
            .map(|ps| ps.iter().map(SlicePort::from_json).collect())
            .unwrap_or_default();
        ports.sort();
        Slice {
            rv,
            metadata: m.clone(),
            owners,
            address_type: v["addressType"].as_str().and_then(AddressType::parse),
            ports,
            endpoints: v["endpoints"]
                .as_array()
                .map(|es| es.iter().map(Endpoint::from_json).collect())
                .unwrap_or_default(),
            labels: string_map(&m["labels"]),
            deleting: m["deletionTimestamp"].is_string(),
        }
    }
}

/// Own writes not yet seen by the informer, per queue key.
struct Expected {
    written: HashMap<String, Revision>,
    deleted: HashSet<String>,
    since: Instant,
}

/// The outcome of a key's writes, back to the loop.
struct Done {
    key: Key,
    /// Objects written, with the revision each got.
    written: Vec<(String, Revision)>,
    deleted: Vec<String>,
    failed: bool,
}

struct Controller {
    server: Arc<ApiServer>,
    ep_recorder: Recorder,
    slice_recorder: Recorder,
    services: HashMap<SvcKey, Service>,
    services_by_ns: HashMap<String, BTreeSet<String>>,
    pods: HashMap<PodKey, Pod>,
    pods_by_ns: HashMap<String, HashSet<String>>,
    pods_by_node: HashMap<String, HashSet<PodKey>>,
    /// The Services (names, same namespace) whose selector matches a pod.
    pod_services: HashMap<PodKey, BTreeSet<String>>,
    /// The pods (names) a Service's selector matches.
    members: HashMap<SvcKey, BTreeSet<String>>,
    /// Node name → its zone label.
    nodes: HashMap<String, Option<String>>,
    endpoints: HashMap<SvcKey, Current>,
    /// Managed slices by Service, then by name.
    slices: HashMap<SvcKey, BTreeMap<String, Slice>>,
    /// Managed slice (namespace, name) → its Service's name.
    slice_service: HashMap<(String, String), String>,
    queue: WorkQueue<Key>,
    /// Keys with writes in flight.
    busy: HashSet<Key>,
    /// Busy keys queued meanwhile: synced when their writes are done.
    deferred: HashSet<Key>,
    /// Keys waiting for the informer to show their own writes.
    stale: HashSet<Key>,
    expect: HashMap<Key, Expected>,
    /// Changes to a busy key's objects seen before its writes returned:
    /// (name, revision, or none when deleted), judged when they do.
    pending: HashMap<Key, Vec<(String, Option<Revision>)>>,
    ep_backoff: Backoff<Key>,
    slice_backoff: Backoff<Key>,
    ep_trigger: TriggerTimes,
    slice_trigger: TriggerTimes,
    synced: HashSet<&'static str>,
    leftovers_checked: bool,
    done_tx: mpsc::UnboundedSender<Done>,
}

fn write_options(component: &str) -> WriteOptions {
    WriteOptions {
        field_manager: Some(component.into()),
        ..Default::default()
    }
}

fn revision_of(o: &Value) -> Revision {
    navarch_api::meta::resource_version(o).parse().unwrap_or(0)
}

/// Upstream's aggregate error text: one message, or `[a, b]`.
fn aggregate(errors: &[String]) -> String {
    let mut seen = Vec::new();
    for e in errors {
        if !seen.contains(e) {
            seen.push(e.clone());
        }
    }
    match seen.len() {
        1 => seen.remove(0),
        _ => format!("[{}]", seen.join(", ")),
    }
}

fn namespace_terminating(e: &navarch_api::ApiError) -> bool {
    e.code == 403 && e.message.contains("is being terminated")
}

impl Controller {
    async fn run(
        mut self,
        mut informers: mpsc::Receiver<Batch>,
        mut done: mpsc::UnboundedReceiver<Done>,
    ) {
        loop {
            while let Ok(b) = informers.try_recv() {
                self.apply(b);
            }
            while let Ok(d) = done.try_recv() {
                self.done(d);
            }
            if self.synced.len() == 5 {
                if !self.leftovers_checked {
                    self.leftovers_checked = true;
                    self.check_leftovers();
                }
                let mut n = 0;
                while let Some(key) = self.queue.pop() {
                    if self.busy.contains(&key) {
                        self.deferred.insert(key);
                        continue;
                    }
                    self.sync(key);
                    n += 1;
                    if n >= 64 {
                        break;
                    }
                }
                if !self.queue.is_empty() {
                    tokio::task::yield_now().await;
                    continue;
                }
            }
            let wake = self.queue.next_wake();
            tokio::select! {
                b = informers.recv() => match b {
                    Some(b) => self.apply(b),
                    None => return,
                },
                Some(d) = done.recv() => self.done(d),
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn enqueue(&mut self, (ns, name): &SvcKey) {
        self.queue
            .add((Target::Endpoints, ns.clone(), name.clone()));
        self.queue.add((Target::Slices, ns.clone(), name.clone()));
    }

    /// Upstream `checkLeftoverEndpoints`: Endpoints whose Service is gone
    /// (missed while not running) are queued, to be deleted.
    fn check_leftovers(&mut self) {
        let orphans: Vec<SvcKey> = self
            .endpoints
            .iter()
            .filter(|(k, c)| !c.leader && !self.services.contains_key(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for (ns, name) in orphans {
            self.queue.add((Target::Endpoints, ns, name));
        }
    }

    // ----- informer events -----------------------------------------------------

    fn apply(&mut self, batch: Batch) {
        let kind = batch.rt.kind;
        for change in batch.changes {
            match (kind, change) {
                (_, Change::Synced) => {
                    self.synced.insert(kind);
                }
                ("Service", Change::Upsert(o)) => self.service_upsert(&o),
                ("Service", Change::Delete(o)) => self.service_delete(&o),
                ("Pod", Change::Upsert(o)) => self.pod_upsert(&o),
                ("Pod", Change::Delete(o)) => self.pod_delete(&o),
                ("Node", Change::Upsert(o)) => self.node_upsert(&o),
                ("Node", Change::Delete(o)) => self.node_delete(&o),
                ("Endpoints", Change::Upsert(o)) => self.endpoints_upsert(&o),
                ("Endpoints", Change::Delete(o)) => self.endpoints_delete(&o),
                ("EndpointSlice", Change::Upsert(o)) => self.slice_upsert(&o),
                ("EndpointSlice", Change::Delete(o)) => self.slice_delete(&o),
                _ => {}
            }
        }
    }

    fn service_upsert(&mut self, o: &Arc<CachedObject>) {
        let key: SvcKey = (o.namespace.clone(), o.name.clone());
        let svc = Service::from_json(&o.shared_value());
        let selector_changed = self
            .services
            .get(&key)
            .is_none_or(|old| old.selector != svc.selector);
        self.services.insert(key.clone(), svc);
        self.services_by_ns
            .entry(key.0.clone())
            .or_default()
            .insert(key.1.clone());
        if selector_changed {
            self.rematch(&key);
        }
        self.enqueue(&key);
    }

    fn service_delete(&mut self, o: &Arc<CachedObject>) {
        let key: SvcKey = (o.namespace.clone(), o.name.clone());
        self.services.remove(&key);
        if let Some(names) = self.services_by_ns.get_mut(&key.0) {
            names.remove(&key.1);
        }
        for pod in self.members.remove(&key).unwrap_or_default() {
            if let Some(s) = self.pod_services.get_mut(&(key.0.clone(), pod)) {
                s.remove(&key.1);
            }
        }
        self.enqueue(&key);
    }

    /// Recomputes which pods a Service's selector matches.
    fn rematch(&mut self, key: &SvcKey) {
        let (ns, name) = key;
        let old = self.members.remove(key).unwrap_or_default();
        let mut new = BTreeSet::new();
        if let Some(svc) = self.services.get(key).filter(|s| s.selector.is_some()) {
            for pod in self.pods_by_ns.get(ns).into_iter().flatten() {
                let p = &self.pods[&(ns.clone(), pod.clone())];
                if svc.selects(&p.labels) {
                    new.insert(pod.clone());
                }
            }
        }
        for pod in old.difference(&new) {
            if let Some(s) = self.pod_services.get_mut(&(ns.clone(), pod.clone())) {
                s.remove(name);
            }
        }
        for pod in new.difference(&old) {
            self.pod_services
                .entry((ns.clone(), pod.clone()))
                .or_default()
                .insert(name.clone());
        }
        self.members.insert(key.clone(), new);
    }

    /// The Services in `ns` whose selector matches `labels`.
    fn matching(&self, ns: &str, labels: &BTreeMap<String, String>) -> BTreeSet<String> {
        self.services_by_ns
            .get(ns)
            .into_iter()
            .flatten()
            .filter(|name| {
                self.services
                    .get(&(ns.to_string(), (*name).clone()))
                    .is_some_and(|s| s.selects(labels))
            })
            .cloned()
            .collect()
    }

    fn pod_upsert(&mut self, o: &Arc<CachedObject>) {
        let key: PodKey = (o.namespace.clone(), o.name.clone());
        let pod = Pod::from_json(&o.shared_value());
        let old = self.pods.get(&key);
        let view_changed = old.is_none_or(|p| p.view != pod.view);
        let labels_changed = old.is_none_or(|p| p.labels != pod.labels);
        if !view_changed && !labels_changed {
            return;
        }
        let old_node = old.map(|p| p.view.node_name.clone());
        let before = self.pod_services.get(&key).cloned().unwrap_or_default();
        // Upstream `GetServicesToUpdateOnPodChange`: the Services it is in;
        // after a label change only, those it joined or left.
        let affected: BTreeSet<String> = if labels_changed {
            let after = self.matching(&key.0, &pod.labels);
            for s in before.difference(&after) {
                if let Some(m) = self.members.get_mut(&(key.0.clone(), s.clone())) {
                    m.remove(&key.1);
                }
            }
            for s in after.difference(&before) {
                self.members
                    .entry((key.0.clone(), s.clone()))
                    .or_default()
                    .insert(key.1.clone());
            }
            let affected = if view_changed {
                before.union(&after).cloned().collect()
            } else {
                before.symmetric_difference(&after).cloned().collect()
            };
            self.pod_services.insert(key.clone(), after);
            affected
        } else {
            before
        };
        if old_node.as_deref() != Some(pod.view.node_name.as_str()) {
            if let Some(n) = old_node {
                if let Some(s) = self.pods_by_node.get_mut(&n) {
                    s.remove(&key);
                }
            }
            self.pods_by_node
                .entry(pod.view.node_name.clone())
                .or_default()
                .insert(key.clone());
        }
        self.pods_by_ns
            .entry(key.0.clone())
            .or_default()
            .insert(key.1.clone());
        self.pods.insert(key.clone(), pod);
        for s in affected {
            self.enqueue(&(key.0.clone(), s));
        }
    }

    fn pod_delete(&mut self, o: &Arc<CachedObject>) {
        let key: PodKey = (o.namespace.clone(), o.name.clone());
        let Some(pod) = self.pods.remove(&key) else {
            return;
        };
        if let Some(s) = self.pods_by_ns.get_mut(&key.0) {
            s.remove(&key.1);
        }
        if let Some(s) = self.pods_by_node.get_mut(&pod.view.node_name) {
            s.remove(&key);
        }
        for s in self.pod_services.remove(&key).unwrap_or_default() {
            let svc = (key.0.clone(), s);
            if let Some(m) = self.members.get_mut(&svc) {
                m.remove(&key.1);
            }
            self.enqueue(&svc);
        }
    }

    fn node_upsert(&mut self, o: &Arc<CachedObject>) {
        let zone = o
            .labels
            .as_ref()
            .and_then(|l| l.get(ZONE))
            .and_then(Value::as_str)
            .map(str::to_string);
        if self.nodes.get(&o.name) == Some(&zone) {
            return;
        }
        self.nodes.insert(o.name.clone(), zone);
        self.node_changed(&o.name);
    }

    fn node_delete(&mut self, o: &Arc<CachedObject>) {
        if self.nodes.remove(&o.name).is_some() {
            self.node_changed(&o.name);
        }
    }

    /// A node appeared, went or changed zone: its pods' slices change.
    fn node_changed(&mut self, node: &str) {
        let mut services = BTreeSet::new();
        for pod in self.pods_by_node.get(node).into_iter().flatten() {
            for s in self.pod_services.get(pod).into_iter().flatten() {
                services.insert((pod.0.clone(), s.clone()));
            }
        }
        for (ns, name) in services {
            self.queue.add((Target::Slices, ns, name));
        }
    }

    fn endpoints_upsert(&mut self, o: &Arc<CachedObject>) {
        let key: SvcKey = (o.namespace.clone(), o.name.clone());
        let v = o.value();
        let annotations = &v["metadata"]["annotations"];
        self.endpoints.insert(
            key.clone(),
            Current {
                rv: o.mod_revision,
                uid: navarch_api::meta::uid(&v).to_string(),
                subsets: parse_subsets(&v["subsets"]),
                labels: string_map(&v["metadata"]["labels"]),
                over_capacity: annotations.get(OVER_CAPACITY).is_some(),
                leader: annotations.get(LEADER).is_some(),
                object: v,
            },
        );
        let qk = (Target::Endpoints, key.0.clone(), key.1.clone());
        if !self.observe(&qk, &key.1, Some(o.mod_revision)) {
            self.changed_by_others(qk);
        }
    }

    fn endpoints_delete(&mut self, o: &Arc<CachedObject>) {
        let key: SvcKey = (o.namespace.clone(), o.name.clone());
        self.endpoints.remove(&key);
        let qk = (Target::Endpoints, key.0.clone(), key.1.clone());
        if !self.observe(&qk, &key.1, None) {
            self.changed_by_others(qk);
        }
    }

    fn slice_upsert(&mut self, o: &Arc<CachedObject>) {
        let sk = (o.namespace.clone(), o.name.clone());
        let label = |k: &str| {
            o.labels
                .as_ref()
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let svc = label(LABEL_SERVICE_NAME).filter(|s| {
            !s.is_empty() && label(LABEL_MANAGED_BY).as_deref() == Some(CONTROLLER_NAME)
        });
        let old = self.slice_service.get(&sk).cloned();
        if old.is_some() && old != svc {
            // No longer this Service's (or no longer managed here).
            self.slice_delete(o);
        }
        let Some(svc) = svc else {
            return;
        };
        let slice = Slice::from_json(&o.value(), o.mod_revision);
        self.slices
            .entry((sk.0.clone(), svc.clone()))
            .or_default()
            .insert(sk.1.clone(), slice);
        self.slice_service.insert(sk.clone(), svc.clone());
        let qk = (Target::Slices, sk.0.clone(), svc);
        if !self.observe(&qk, &sk.1, Some(o.mod_revision)) {
            self.changed_by_others(qk);
        }
    }

    fn slice_delete(&mut self, o: &Arc<CachedObject>) {
        let sk = (o.namespace.clone(), o.name.clone());
        let Some(svc) = self.slice_service.remove(&sk) else {
            return;
        };
        let key = (sk.0.clone(), svc.clone());
        if let Some(m) = self.slices.get_mut(&key) {
            m.remove(&sk.1);
            if m.is_empty() {
                self.slices.remove(&key);
            }
        }
        let qk = (Target::Slices, sk.0, svc);
        if !self.observe(&qk, &sk.1, None) {
            self.changed_by_others(qk);
        }
    }

    /// The informer showed object `name` of `key` at `rv` (`None`:
    /// deleted). Returns whether that is (or may be) a write of this
    /// controller's own, which must not queue the key again.
    fn observe(&mut self, key: &Key, name: &str, rv: Option<Revision>) -> bool {
        if let Some(e) = self.expect.get_mut(key) {
            let own = match rv {
                Some(rv) => match e.written.get(name).copied() {
                    Some(want) => {
                        if rv >= want {
                            e.written.remove(name);
                        }
                        Some(rv <= want)
                    }
                    None => None,
                },
                None => {
                    e.written.remove(name);
                    Some(e.deleted.remove(name))
                }
            };
            if e.written.is_empty() && e.deleted.is_empty() {
                self.expect.remove(key);
                if self.stale.remove(key) {
                    self.queue.add(key.clone());
                }
            }
            if let Some(own) = own {
                return own;
            }
        }
        if self.busy.contains(key) {
            self.pending
                .entry(key.clone())
                .or_default()
                .push((name.to_string(), rv));
            return true;
        }
        false
    }

    /// Someone else changed (or deleted) one of a Service's objects.
    fn changed_by_others(&mut self, key: Key) {
        match key.0 {
            // Upstream queues only on deletes; any change is repaired here.
            Target::Endpoints => {
                if self.services.contains_key(&(key.1.clone(), key.2.clone())) {
                    self.queue.add(key);
                }
            }
            Target::Slices => self.queue.add_after(key, SLICE_CHANGE_DELAY),
        }
    }

    fn done(&mut self, d: Done) {
        let key = d.key;
        self.busy.remove(&key);
        let svc: SvcKey = (key.1.clone(), key.2.clone());
        let local = |c: &Controller, name: &str| -> Option<Revision> {
            match key.0 {
                Target::Endpoints => c.endpoints.get(&svc).map(|e| e.rv),
                Target::Slices => c.slices.get(&svc).and_then(|m| m.get(name)).map(|s| s.rv),
            }
        };
        let mut e = Expected {
            written: HashMap::new(),
            deleted: HashSet::new(),
            since: Instant::now(),
        };
        for (name, rv) in &d.written {
            if local(self, name).is_none_or(|l| l < *rv) {
                e.written.insert(name.clone(), *rv);
            }
        }
        for name in &d.deleted {
            if local(self, name).is_some() {
                e.deleted.insert(name.clone());
            }
        }
        if !e.written.is_empty() || !e.deleted.is_empty() {
            self.expect.insert(key.clone(), e);
        }
        // Changes seen while the writes were in flight that are not them.
        if let Some(seen) = self.pending.remove(&key) {
            let foreign = seen.iter().any(|(name, rv)| match rv {
                Some(rv) => !d.written.iter().any(|(n, r)| n == name && r == rv),
                None => !d.deleted.contains(name),
            });
            if foreign {
                self.changed_by_others(key.clone());
            }
        }
        let backoff = match key.0 {
            Target::Endpoints => &mut self.ep_backoff,
            Target::Slices => &mut self.slice_backoff,
        };
        if d.failed {
            let delay = backoff.fail(key.clone());
            self.deferred.remove(&key);
            self.queue.add_after(key, delay);
        } else {
            backoff.forget(&key);
            if self.deferred.remove(&key) {
                self.queue.add(key);
            }
        }
    }

    /// Whether `key` waits for the informer to show its own writes; an
    /// expectation older than [`EXPECTATIONS_TIMEOUT`] is dropped.
    fn waiting(&mut self, key: &Key) -> bool {
        let Some(e) = self.expect.get(key) else {
            return false;
        };
        if e.since.elapsed() >= EXPECTATIONS_TIMEOUT {
            self.expect.remove(key);
            return false;
        }
        self.stale.insert(key.clone());
        self.queue
            .add_at(key.clone(), e.since + EXPECTATIONS_TIMEOUT);
        true
    }

    // ----- syncs ---------------------------------------------------------------

    fn sync(&mut self, key: Key) {
        let svc: SvcKey = (key.1.clone(), key.2.clone());
        if !self.services.contains_key(&svc) {
            self.expect.remove(&key);
            self.stale.remove(&key);
            match key.0 {
                Target::Endpoints => {
                    self.ep_trigger.forget(&svc);
                    self.ep_backoff.forget(&key);
                    self.delete_endpoints(key);
                }
                Target::Slices => {
                    // Its slices go with it (garbage collector).
                    self.slice_trigger.forget(&svc);
                    self.slice_backoff.forget(&key);
                }
            }
            return;
        }
        let s = &self.services[&svc];
        if s.external_name || s.selector.is_none() || self.waiting(&key) {
            return;
        }
        match key.0 {
            Target::Endpoints => self.sync_endpoints(key, svc),
            Target::Slices => self.sync_slices(key, svc),
        }
    }

    fn delete_endpoints(&mut self, key: Key) {
        self.busy.insert(key.clone());
        let (server, tx) = (self.server.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            let r = server
                .delete(
                    endpoints_rt(),
                    Some(&key.1),
                    &key.2,
                    &DeleteOptions::default(),
                )
                .await;
            let failed = match r {
                Ok(_) => false,
                Err(e) if e.code == 404 => false,
                Err(e) => {
                    tracing::warn!(endpoints = %key.2, namespace = %key.1, error = %e,
                        "deleting the Endpoints of a deleted Service failed");
                    true
                }
            };
            let deleted = if failed { vec![] } else { vec![key.2.clone()] };
            let _ = tx.send(Done {
                key,
                written: Vec::new(),
                deleted,
                failed,
            });
        });
    }

    fn sync_endpoints(&mut self, key: Key, svc_key: SvcKey) {
        let (ns, name) = &svc_key;
        let svc = &self.services[&svc_key];
        let pods = member_pods(&self.members, &self.pods, &svc_key);
        let trigger = self.ep_trigger.compute(&svc_key, svc, &pods);
        let mut subsets = desired_subsets(svc, name, &pods);
        let truncated = truncate(&mut subsets);
        let current = self.endpoints.get(&svc_key);
        if let Some(cur) = current {
            let mut labels = cur.labels.clone();
            labels.remove(LABEL_HEADLESS);
            if cur.subsets == subsets && labels == svc.labels && cur.over_capacity == truncated {
                return;
            }
        }
        let mut labels: Map<String, Value> = svc
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        if svc.ip_set() {
            labels.remove(LABEL_HEADLESS);
        } else {
            labels.insert(LABEL_HEADLESS.into(), json!(""));
        }
        let mut object = match current {
            Some(cur) => cur.object.clone(),
            None => json!({"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": name, "namespace": ns}}),
        };
        let meta = object["metadata"].as_object_mut().expect("metadata");
        let mut annotations = meta
            .get("annotations")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        match trigger {
            Some(t) => annotations.insert(TRIGGER_TIME.into(), json!(t.to_string())),
            None => annotations.remove(TRIGGER_TIME),
        };
        if truncated {
            annotations.insert(OVER_CAPACITY.into(), json!("truncated"));
        } else {
            annotations.remove(OVER_CAPACITY);
        }
        meta.insert("labels".into(), Value::Object(labels));
        if annotations.is_empty() {
            meta.remove("annotations");
        } else {
            meta.insert("annotations".into(), Value::Object(annotations));
        }
        if subsets.is_empty() {
            object.as_object_mut().expect("object").remove("subsets");
        } else {
            object["subsets"] = subsets_json(&subsets);
        }
        let create = current.is_none();
        let uid = current.map(|c| c.uid.clone()).unwrap_or_default();
        self.busy.insert(key.clone());
        let (server, recorder, tx) = (
            self.server.clone(),
            self.ep_recorder.clone(),
            self.done_tx.clone(),
        );
        let (ns, name) = svc_key;
        tokio::spawn(async move {
            let opts = write_options(EP_COMPONENT);
            let r = if create {
                server
                    .create(endpoints_rt(), Some(&ns), object, &opts)
                    .await
            } else {
                server
                    .update(endpoints_rt(), Some(&ns), &name, None, object, &opts)
                    .await
            };
            let (written, failed) = match r {
                Ok(w) => (vec![(name.clone(), revision_of(&w.object))], false),
                Err(e) if create && namespace_terminating(&e) => (vec![], false),
                Err(e) => {
                    let obj = ObjectRef {
                        kind: "Endpoints",
                        api_version: "v1",
                        namespace: ns.clone(),
                        name: name.clone(),
                        uid,
                    };
                    if create {
                        recorder.warning(
                            &obj,
                            "FailedToCreateEndpoint",
                            format!(
                                "Failed to create endpoint for service {ns}/{name}: {}",
                                e.message
                            ),
                        );
                    } else {
                        recorder.warning(
                            &obj,
                            "FailedToUpdateEndpoint",
                            format!("Failed to update endpoint {ns}/{name}: {}", e.message),
                        );
                    }
                    (vec![], true)
                }
            };
            let _ = tx.send(Done {
                key,
                written,
                deleted: Vec::new(),
                failed,
            });
        });
    }

    fn sync_slices(&mut self, key: Key, svc_key: SvcKey) {
        let (ns, name) = &svc_key;
        let svc = &self.services[&svc_key];
        let pods = member_pods(&self.members, &self.pods, &svc_key);
        let trigger = self.slice_trigger.compute(&svc_key, svc, &pods);
        let types = svc.address_types();
        let mut errors: Vec<String> = Vec::new();
        let mut desired = Desired::new();
        for pod in &pods {
            if !pod.in_endpoints(true) {
                continue;
            }
            let ports = slice_ports(svc, pod);
            for t in &types {
                desired
                    .entry(*t)
                    .or_default()
                    .entry(ports.clone())
                    .or_default();
            }
            let zone = match self.nodes.get(&pod.view.node_name) {
                Some(z) => z.clone(),
                None if svc.publish_not_ready => None,
                None => {
                    errors.push(format!(
                        "skipping Pod {} for Service {ns}/{name}: Node {} Not Found",
                        pod.name, pod.view.node_name
                    ));
                    continue;
                }
            };
            for t in &types {
                let ep = slice_endpoint(svc, name, pod, zone.clone(), *t);
                if !ep.addresses.is_empty() {
                    desired
                        .get_mut(t)
                        .and_then(|d| d.get_mut(&ports))
                        .expect("group made above")
                        .insert(ep.key(), ep);
                }
            }
        }
        let labels = slice_labels(svc, name);
        let mirror = unreserved(&svc.labels);
        let none = BTreeMap::new();
        let own = self.slices.get(&svc_key).unwrap_or(&none);
        let existing: Vec<Existing<'_>> = own
            .iter()
            .filter(|(_, s)| !s.deleting)
            .map(|(n, s)| Existing {
                name: n,
                owned: s.owners.contains(&svc.uid),
                address_type: s.address_type,
                ports: &s.ports,
                endpoints: &s.endpoints,
                labels_mirror: unreserved(&s.labels) == mirror,
                labels_exact: s.labels == labels,
            })
            .collect();
        let mut plan =
            endpointslice::reconcile(&existing, &types, &desired, MAX_ENDPOINTS_PER_SLICE);
        if svc.deleting {
            // Upstream creates nothing for a Service being deleted (the
            // garbage collector would race it).
            plan.create.clear();
        }
        let svc_ref = ObjectRef {
            kind: "Service",
            api_version: "v1",
            namespace: ns.clone(),
            name: name.clone(),
            uid: svc.uid.clone(),
        };
        if plan.is_empty() {
            if !errors.is_empty() {
                self.slices_failed(&key, &svc_ref, &errors);
            }
            return;
        }
        let writes = self.slice_writes(&svc_key, svc, plan, &labels, trigger);
        self.busy.insert(key.clone());
        let (server, recorder, tx) = (
            self.server.clone(),
            self.slice_recorder.clone(),
            self.done_tx.clone(),
        );
        let (ns, name) = svc_key;
        tokio::spawn(async move {
            let (written, deleted, error) = write_slices(&server, &ns, &name, writes).await;
            errors.extend(error);
            let failed = !errors.is_empty();
            if failed {
                recorder.warning(
                    &svc_ref,
                    "FailedToUpdateEndpointSlices",
                    format!(
                        "Error updating Endpoint Slices for Service {ns}/{name}: {}",
                        aggregate(&errors)
                    ),
                );
            }
            let _ = tx.send(Done {
                key,
                written,
                deleted,
                failed,
            });
        });
    }

    /// A slice sync that wrote nothing but failed: event, retry later.
    fn slices_failed(&mut self, key: &Key, svc: &ObjectRef, errors: &[String]) {
        self.slice_recorder.warning(
            svc,
            "FailedToUpdateEndpointSlices",
            format!(
                "Error updating Endpoint Slices for Service {}/{}: {}",
                svc.namespace,
                svc.name,
                aggregate(errors)
            ),
        );
        let delay = self.slice_backoff.fail(key.clone());
        self.queue.add_after(key.clone(), delay);
    }

    /// The objects a slice plan writes: creates, updates (the stored slice
    /// with new content, guarded by its resourceVersion), deletes.
    fn slice_writes(
        &self,
        svc_key: &SvcKey,
        svc: &Service,
        plan: Plan,
        labels: &BTreeMap<String, String>,
        trigger: Option<Timestamp>,
    ) -> SliceWrites {
        let (ns, name) = svc_key;
        let trigger = trigger.map(|t| t.to_string());
        let labels: Map<String, Value> =
            labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let build = |mut meta: Value, c: &SliceContent| -> Value {
            let mut annotations = meta["annotations"].as_object().cloned().unwrap_or_default();
            match &trigger {
                Some(t) => annotations.insert(TRIGGER_TIME.into(), json!(t)),
                None => annotations.remove(TRIGGER_TIME),
            };
            let m = meta.as_object_mut().expect("metadata");
            m.insert("labels".into(), Value::Object(labels.clone()));
            if annotations.is_empty() {
                m.remove("annotations");
            } else {
                m.insert("annotations".into(), Value::Object(annotations));
            }
            json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": meta,
                "addressType": c.address_type.as_str(),
                "endpoints": c.endpoints.iter().map(Endpoint::to_json).collect::<Vec<_>>(),
                "ports": c.ports.iter().map(SlicePort::to_json).collect::<Vec<_>>(),
            })
        };
        let fresh = json!({
            "generateName": format!("{name}-"),
            "namespace": ns,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name,
                "uid": svc.uid, "controller": true, "blockOwnerDeletion": true}],
        });
        let stored = self.slices.get(svc_key);
        SliceWrites {
            create: plan
                .create
                .iter()
                .map(|c| build(fresh.clone(), c))
                .collect(),
            update: plan
                .update
                .iter()
                .filter_map(|(n, c)| {
                    let meta = stored?.get(n)?.metadata.clone();
                    Some((n.clone(), build(meta, c)))
                })
                .collect(),
            delete: plan.delete,
        }
    }
}

/// The pods a Service's selector matches.
fn member_pods<'a>(
    members: &'a HashMap<SvcKey, BTreeSet<String>>,
    pods: &'a HashMap<PodKey, Pod>,
    svc: &SvcKey,
) -> Vec<&'a Pod> {
    members
        .get(svc)
        .into_iter()
        .flatten()
        .filter_map(|p| pods.get(&(svc.0.clone(), p.clone())))
        .collect()
}

struct SliceWrites {
    create: Vec<Value>,
    update: Vec<(String, Value)>,
    delete: Vec<String>,
}

/// Upstream `finalize`: creates, then updates, then deletes, one at a
/// time, stopping at the first error. Returns the slices written (name,
/// revision), the ones deleted, and the error.
async fn write_slices(
    server: &ApiServer,
    ns: &str,
    svc: &str,
    w: SliceWrites,
) -> (Vec<(String, Revision)>, Vec<String>, Option<String>) {
    let opts = write_options(SLICE_COMPONENT);
    let mut written = Vec::new();
    let mut deleted = Vec::new();
    for obj in w.create {
        match server.create(slices_rt(), Some(ns), obj, &opts).await {
            Ok(r) => written.push((
                navarch_api::meta::name(&r.object).to_string(),
                revision_of(&r.object),
            )),
            // The namespace is going: nothing to do.
            Err(e) if namespace_terminating(&e) => return (written, deleted, None),
            Err(e) => {
                let msg = format!(
                    "failed to create EndpointSlice for Service {ns}/{svc}: {}",
                    e.message
                );
                return (written, deleted, Some(msg));
            }
        }
    }
    for (name, obj) in w.update {
        match server
            .update(slices_rt(), Some(ns), &name, None, obj, &opts)
            .await
        {
            Ok(r) => written.push((name, revision_of(&r.object))),
            Err(e) => {
                let msg = format!(
                    "failed to update {name} EndpointSlice for Service {ns}/{svc}: {}",
                    e.message
                );
                return (written, deleted, Some(msg));
            }
        }
    }
    for name in w.delete {
        match server
            .delete(slices_rt(), Some(ns), &name, &DeleteOptions::default())
            .await
        {
            Ok(_) => deleted.push(name),
            Err(e) if e.code == 404 => deleted.push(name),
            Err(e) => {
                let msg = format!(
                    "failed to delete {name} EndpointSlice for Service {ns}/{svc}: {}",
                    e.message
                );
                return (written, deleted, Some(msg));
            }
        }
    }
    (written, deleted, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(v: Value) -> Service {
        Service::from_json(&v)
    }

    fn pod(name: &str, ip: &str, ready: bool, extra: Value) -> Pod {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c",
                "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready",
                "status": if ready { "True" } else { "False" },
                "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        });
        json_merge(&mut v, extra);
        Pod::from_json(&v)
    }

    fn json_merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    json_merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn web() -> Service {
        svc(
            json!({"metadata": {"name": "web", "uid": "s1", "labels": {"team": "a"}},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.10",
                "ipFamilies": ["IPv4"],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                          {"name": "metrics", "port": 9090, "protocol": "TCP", "targetPort": 9090}]}}),
        )
    }

    fn ips(addrs: &[Address]) -> Vec<&str> {
        addrs.iter().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn subsets_split_ready_and_pack_by_ports() {
        let s = web();
        let a = pod("a", "10.0.0.2", true, json!({}));
        let b = pod("b", "10.0.0.1", false, json!({}));
        let c = pod(
            "c",
            "10.0.0.3",
            true,
            json!({"spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 9000}]}]}}),
        );
        // No IP, terminal, terminating: left out.
        let d = pod("d", "", true, json!({}));
        let e = pod(
            "e",
            "10.0.0.5",
            true,
            json!({"status": {"phase": "Succeeded"}}),
        );
        let f = pod(
            "f",
            "10.0.0.6",
            true,
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
        );
        let subsets = desired_subsets(&s, "web", &[&a, &b, &c, &d, &e, &f]);
        // metrics:9090 on a, b, c; http:8080 on a, b; http:9000 on c.
        assert_eq!(subsets.len(), 3, "{subsets:#?}");
        let find = |port: i64, name: &str| {
            subsets
                .iter()
                .find(|s| s.ports.iter().any(|p| p.port == port && p.name == name))
                .unwrap()
        };
        let http = find(8080, "http");
        assert_eq!(ips(&http.addresses), vec!["10.0.0.2"]);
        assert_eq!(ips(&http.not_ready), vec!["10.0.0.1"]);
        assert_eq!(http.ports.len(), 1);
        let metrics = find(9090, "metrics");
        assert_eq!(ips(&metrics.addresses), vec!["10.0.0.2", "10.0.0.3"]);
        assert_eq!(ips(&find(9000, "http").addresses), vec!["10.0.0.3"]);
        let addr = &http.addresses[0];
        assert_eq!(addr.node_name.as_deref(), Some("n1"));
        assert_eq!(addr.target.as_ref().unwrap().uid, "uid-a");
        // JSON round trip is exact (what the comparison relies on).
        assert_eq!(parse_subsets(&subsets_json(&subsets)), subsets);
        // publishNotReadyAddresses: all ready, terminating included.
        let mut p = s.clone();
        p.publish_not_ready = true;
        let subsets = desired_subsets(&p, "web", &[&a, &b, &f]);
        let http = subsets
            .iter()
            .find(|s| s.ports.iter().any(|x| x.port == 8080))
            .unwrap();
        assert_eq!(
            ips(&http.addresses),
            vec!["10.0.0.1", "10.0.0.2", "10.0.0.6"]
        );
        assert!(http.not_ready.is_empty());
    }

    #[test]
    fn headless_without_ports_and_hostnames() {
        let s = svc(
            json!({"metadata": {"name": "db"}, "spec": {"selector": {"app": "web"},
            "clusterIP": "None"}}),
        );
        let a = pod(
            "a",
            "10.0.0.2",
            true,
            json!({"spec": {"hostname": "a", "subdomain": "db"}}),
        );
        let subsets = desired_subsets(&s, "db", &[&a]);
        assert_eq!(subsets.len(), 1);
        assert!(subsets[0].ports.is_empty());
        assert_eq!(subsets[0].addresses[0].hostname.as_deref(), Some("a"));
        // Not headless, no ports: nothing.
        let s = svc(
            json!({"metadata": {"name": "db"}, "spec": {"selector": {"app": "web"},
            "clusterIP": "10.96.0.3"}}),
        );
        assert!(desired_subsets(&s, "db", &[&a]).is_empty());
    }

    #[test]
    fn truncation_keeps_ready_first_in_proportion() {
        let addr = |i: usize| Address {
            ip: format!("10.1.{}.{}", i / 250, i % 250),
            hostname: None,
            node_name: None,
            target: None,
        };
        let mut subsets = vec![
            Subset {
                addresses: (0..600).map(addr).collect(),
                not_ready: (0..10).map(addr).collect(),
                ports: vec![],
            },
            Subset {
                addresses: (600..1200).map(addr).collect(),
                not_ready: vec![],
                ports: vec![],
            },
        ];
        assert!(truncate(&mut subsets));
        assert_eq!(subsets[0].addresses.len(), 500);
        assert!(subsets[0].not_ready.is_empty());
        assert_eq!(subsets[1].addresses.len(), 500);
        // Under the limit: untouched.
        let mut small = vec![Subset {
            addresses: (0..999).map(addr).collect(),
            not_ready: vec![addr(5000)],
            ports: vec![],
        }];
        assert!(!truncate(&mut small));
        // Ready fit; not-ready ones share the rest.
        let mut some = vec![Subset {
            addresses: (0..900).map(addr).collect(),
            not_ready: (900..1100).map(addr).collect(),
            ports: vec![],
        }];
        assert!(truncate(&mut some));
        assert_eq!(
            (some[0].addresses.len(), some[0].not_ready.len()),
            (900, 100)
        );
    }

    #[test]
    fn trigger_time_is_the_earliest_unseen_change() {
        let s = web();
        let key = ("default".to_string(), "web".to_string());
        let mut t = TriggerTimes::default();
        let mut s2 = s.clone();
        s2.created = "2026-01-01T00:00:00Z".parse().ok();
        let a = pod("a", "10.0.0.2", true, json!({}));
        // A Service seen for the first time: its creation.
        assert_eq!(t.compute(&key, &s2, &[&a]), s2.created);
        // Nothing new.
        assert_eq!(t.compute(&key, &s2, &[&a]), None);
        // A pod became ready later.
        let b = pod(
            "b",
            "10.0.0.3",
            true,
            json!({"status": {"conditions": [{"type": "Ready", "status": "True",
                "lastTransitionTime": "2026-01-01T00:05:00Z"}]}}),
        );
        assert_eq!(
            t.compute(&key, &s2, &[&a, &b]),
            "2026-01-01T00:05:00Z".parse().ok()
        );
    }

    #[test]
    fn slice_endpoints_and_labels() {
        let s = web();
        let f = pod(
            "f",
            "10.0.0.6",
            true,
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
        );
        let e = slice_endpoint(&s, "web", &f, Some("z1".into()), AddressType::IPv4);
        assert_eq!(
            (e.ready, e.serving, e.terminating),
            (Some(false), Some(true), Some(true))
        );
        assert_eq!(e.zone.as_deref(), Some("z1"));
        assert!(slice_endpoint(&s, "web", &f, None, AddressType::IPv6)
            .addresses
            .is_empty());
        let ports = slice_ports(&s, &f);
        assert_eq!(
            ports.iter().map(|p| p.port.unwrap()).collect::<Vec<_>>(),
            vec![8080, 9090]
        );
        let l = slice_labels(&s, "web");
        assert_eq!(l["team"], "a");
        assert_eq!(l[LABEL_SERVICE_NAME], "web");
        assert_eq!(l[LABEL_MANAGED_BY], CONTROLLER_NAME);
        assert!(!l.contains_key(LABEL_HEADLESS));
        assert_eq!(s.address_types(), vec![AddressType::IPv4]);
    }
}
