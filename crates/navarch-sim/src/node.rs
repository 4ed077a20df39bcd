//! The hollow Node objects, their Leases, and the HTTP plumbing every part
//! of the sim shares.

use crate::{Error, SimConfig, Target, HOLLOW_LABEL, LEASE_DURATION_SECONDS, LEASE_NAMESPACE};
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Hollow node IPs come from 10.64.0.0/10.
const NODE_NET: u32 = u32::from_be_bytes([10, 64, 0, 0]);
pub(crate) const MAX_NODES: usize = (1 << 22) - 2;
/// Zone label key (`--zones`).
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Region label key, set with the zone label.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";

/// What every hollow node looks like. Capacity and allocatable are equal.
#[derive(Debug, Clone)]
pub struct NodeTemplate {
    /// CPU quantity, e.g. `32` or `3500m`.
    pub cpu: String,
    /// Memory quantity, e.g. `256Gi`.
    pub memory: String,
    /// Ephemeral storage quantity, e.g. `1Ti`.
    pub ephemeral_storage: String,
    /// Maximum pods.
    pub pods: u32,
    /// Extra labels on every node.
    pub labels: BTreeMap<String, String>,
    /// Taints every node is created with (an existing node that is taken
    /// over keeps its taints, as with the kubelet's `--register-with-taints`).
    pub taints: Vec<Taint>,
    /// Node `i` gets `topology.kubernetes.io/zone=zones[i % zones.len()]`
    /// and `topology.kubernetes.io/region=region-0`; no zone labels when empty.
    pub zones: Vec<String>,
}

impl Default for NodeTemplate {
    fn default() -> NodeTemplate {
        NodeTemplate {
            cpu: "32".into(),
            memory: "256Gi".into(),
            ephemeral_storage: "1Ti".into(),
            pods: 110,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            zones: Vec::new(),
        }
    }
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

impl Taint {
    /// `key=value:Effect` or `key:Effect`, as `kubectl taint` writes them.
    pub fn parse(s: &str) -> Result<Taint, Error> {
        let bad = |reason: &str| Error::Config {
            field: "taint",
            value: s.to_string(),
            reason: reason.to_string(),
        };
        let (kv, effect) = s
            .rsplit_once(':')
            .ok_or_else(|| bad("expected key=value:Effect"))?;
        if !EFFECTS.contains(&effect) {
            return Err(bad(
                "the effect must be NoSchedule, PreferNoSchedule or NoExecute",
            ));
        }
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        if key.is_empty() {
            return Err(bad("the key is empty"));
        }
        Ok(Taint {
            key: key.into(),
            value: value.into(),
            effect: effect.into(),
        })
    }

    fn to_json(&self) -> Value {
        let mut t = json!({"key": self.key, "effect": self.effect});
        if !self.value.is_empty() {
            t["value"] = json!(self.value);
        }
        t
    }
}

impl NodeTemplate {
    /// Parses a `key=value` label.
    pub fn parse_label(s: &str) -> Result<(String, String), Error> {
        match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::Config {
                field: "node label",
                value: s.to_string(),
                reason: "expected key=value".into(),
            }),
        }
    }

    /// `count` zones named `zone-0` … `zone-<count-1>`.
    pub fn numbered_zones(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("zone-{i}")).collect()
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        for (field, q) in [
            ("cpu", &self.cpu),
            ("memory", &self.memory),
            ("ephemeral-storage", &self.ephemeral_storage),
        ] {
            match navarch_api::kinds::util::parse_quantity(q) {
                Some(v) if v > 0 => {}
                _ => {
                    return Err(Error::Config {
                        field,
                        value: q.clone(),
                        reason: "expected a positive quantity such as 32, 500m, 256Gi".into(),
                    })
                }
            }
        }
        if self.pods == 0 {
            return Err(Error::Config {
                field: "pods",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        if let Some(z) = self.zones.iter().find(|z| z.is_empty()) {
            return Err(Error::Config {
                field: "zone",
                value: z.clone(),
                reason: "zone names must not be empty".into(),
            });
        }
        Ok(())
    }
}

/// One hollow node.
pub(crate) struct HollowNode {
    pub name: String,
    pub ip: Ipv4Addr,
    /// The Node's uid, for the Lease's owner reference.
    pub uid: parking_lot::Mutex<Option<String>>,
    /// Cut off from the API server ([`crate::Sim::partition`]): no Lease
    /// renewals, no status, no pod reports.
    pub cut_off: std::sync::atomic::AtomicBool,
}

impl HollowNode {
    pub fn is_cut_off(&self) -> bool {
        self.cut_off.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A response: status code and body.
pub(crate) struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The `message` of a Status body, or the body itself.
    pub fn message(&self) -> String {
        match self.json()["message"].as_str() {
            Some(m) => m.to_string(),
            None => String::from_utf8_lossy(&self.body)
                .chars()
                .take(300)
                .collect(),
        }
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Worth retrying: overload, server errors.
pub(crate) fn transient(status: u16) -> bool {
    status == 429 || status >= 500
}

pub(crate) const JSON: &str = "application/json";
pub(crate) const MERGE_PATCH: &str = "application/merge-patch+json";

/// State every part of the sim shares.
pub(crate) struct Shared {
    pub client: reqwest::Client,
    pub base: String,
    pub config: SimConfig,
    pub nodes: Vec<HollowNode>,
    /// Bounds the node and Lease requests in flight.
    pub limit: Semaphore,
    /// `lastTransitionTime` of the conditions this sim posts.
    pub since: String,
    /// Identifies this sim run in `nodeInfo.bootID`.
    boot_id: String,
    /// When a warning was last logged, and how many were held back since.
    warned: parking_lot::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Shared {
    pub fn new(target: &Target, config: SimConfig) -> Result<Shared, Error> {
        let client = target
            .client_builder()?
            .pool_max_idle_per_host(config.concurrency + config.pod_workers)
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(Error::Client)?;
        let nodes = (0..config.nodes)
            .map(|i| HollowNode {
                name: format!("{}{i}", config.prefix),
                ip: Ipv4Addr::from(NODE_NET + 1 + i as u32),
                uid: parking_lot::Mutex::new(None),
                cut_off: Default::default(),
            })
            .collect();
        let now = jiff::Timestamp::now();
        Ok(Shared {
            client,
            base: target.server.clone(),
            limit: Semaphore::new(config.concurrency),
            since: rfc3339(now),
            boot_id: format!("{:032x}", now.as_nanosecond()),
            config,
            nodes,
            warned: parking_lot::Mutex::new((None, 0)),
        })
    }

    /// Logs a failed background write, at most once a second (the rest are
    /// counted), so an unreachable server does not flood the log.
    pub fn warn(&self, what: std::fmt::Arguments<'_>) {
        let mut w = self.warned.lock();
        match w.0 {
            Some(at) if at.elapsed() < Duration::from_secs(1) => w.1 += 1,
            _ => {
                tracing::warn!(suppressed = w.1, "{what}");
                *w = (Some(std::time::Instant::now()), 0);
            }
        }
    }

    /// The index of the hollow node called `name`, if it is one of ours.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        let i: usize = name.strip_prefix(&self.config.prefix)?.parse().ok()?;
        (self.nodes.get(i)?.name == name).then_some(i)
    }

    /// One request, with at most `attempts` tries on transport errors and
    /// transient statuses (back-off from 100 ms); `limit` bounds the
    /// requests in flight.
    pub async fn call(
        &self,
        limit: Option<&Semaphore>,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: Option<Vec<u8>>,
        attempts: u32,
    ) -> Result<Reply, reqwest::Error> {
        let url = format!("{}{path}", self.base);
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let result = {
                let _permit = match limit {
                    Some(l) => Some(l.acquire().await.expect("semaphore never closed")),
                    None => None,
                };
                let mut req = self.client.request(method.clone(), &url);
                if let Some(b) = &body {
                    req = req.header("content-type", content_type).body(b.clone());
                }
                match req.send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        r.bytes().await.map(|b| Reply {
                            status,
                            body: b.to_vec(),
                        })
                    }
                    Err(e) => Err(e),
                }
            };
            let retry = match &result {
                Ok(r) => transient(r.status),
                Err(_) => true,
            };
            if !retry || attempt >= attempts {
                return result;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            attempt += 1;
        }
    }

    /// A call whose failure ends the operation: transport errors and
    /// statuses other than 2xx and `accept` become [`Error`]s.
    pub async fn must_call(
        &self,
        what: impl Fn() -> String,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: Option<Vec<u8>>,
        accept: &[u16],
    ) -> Result<Reply, Error> {
        let r = self
            .call(Some(&self.limit), method, path, content_type, body, 5)
            .await
            .map_err(|source| Error::Http {
                what: what(),
                source,
            })?;
        if r.ok() || accept.contains(&r.status) {
            Ok(r)
        } else {
            Err(Error::Api {
                what: what(),
                status: r.status,
                message: r.message(),
            })
        }
    }

    pub fn labels(&self, i: usize) -> Map<String, Value> {
        let t = &self.config.template;
        let name = &self.nodes[i].name;
        let arch = navarch_agent::node::go_arch();
        let mut l = Map::new();
        for (k, v) in [
            ("kubernetes.io/hostname", name.as_str()),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", arch),
            ("beta.kubernetes.io/os", "linux"),
            ("beta.kubernetes.io/arch", arch),
            (HOLLOW_LABEL, "true"),
        ] {
            l.insert(k.into(), json!(v));
        }
        if !t.zones.is_empty() {
            l.insert(ZONE_LABEL.into(), json!(t.zones[i % t.zones.len()]));
            l.insert(REGION_LABEL.into(), json!("region-0"));
        }
        for (k, v) in &t.labels {
            l.insert(k.clone(), json!(v));
        }
        l
    }

    /// The Node status, conditions stamped with `now`.
    pub fn status(&self, i: usize, now: &str) -> Value {
        let t = &self.config.template;
        let n = &self.nodes[i];
        let resources = json!({
            "cpu": t.cpu,
            "memory": t.memory,
            "ephemeral-storage": t.ephemeral_storage,
            "pods": t.pods.to_string(),
        });
        let cond = |type_: &str, status: &str, reason: &str, message: &str| {
            json!({"type": type_, "status": status, "reason": reason, "message": message,
                   "lastHeartbeatTime": now, "lastTransitionTime": self.since})
        };
        json!({
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": n.ip.to_string()},
                {"type": "Hostname", "address": n.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": format!("{:032x}", i),
                "systemUUID": format!("00000000-0000-4000-8000-{:012x}", i),
                "bootID": self.boot_id,
                "kernelVersion": "hollow",
                "osImage": "Navarch hollow node",
                "containerRuntimeVersion": concat!("hollow://", env!("CARGO_PKG_VERSION")),
                "kubeletVersion": navarch_agent::node::KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": navarch_agent::node::go_arch(),
            },
        })
    }

    fn node_object(&self, i: usize, now: &str) -> Value {
        let mut node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.nodes[i].name, "labels": self.labels(i)},
            "spec": {},
            "status": self.status(i, now),
        });
        let taints = &self.config.template.taints;
        if !taints.is_empty() {
            node["spec"]["taints"] = taints.iter().map(Taint::to_json).collect();
        }
        node
    }

    pub fn lease_path(&self, i: usize) -> String {
        format!(
            "/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{}",
            self.nodes[i].name
        )
    }

    pub fn lease_spec(&self, i: usize) -> Value {
        json!({
            "holderIdentity": self.nodes[i].name,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": micro_time(jiff::Timestamp::now()),
        })
    }

    /// Creates the Node, or takes over an existing one (its labels are
    /// updated, its taints kept) and posts its status; records its uid.
    pub async fn register_node(&self, i: usize) -> Result<(), Error> {
        let name = &self.nodes[i].name;
        let now = rfc3339(jiff::Timestamp::now());
        let what = || format!("registering node {name}");
        let body = serde_json::to_vec(&self.node_object(i, &now)).expect("json");
        let r = self
            .must_call(
                what,
                reqwest::Method::POST,
                "/api/v1/nodes",
                JSON,
                Some(body),
                &[409],
            )
            .await?;
        let mut node = r.json();
        if r.status == 409 {
            let patch = json!({"metadata": {"labels": self.labels(i)}});
            node = self
                .must_call(
                    || format!("taking over node {name}"),
                    reqwest::Method::PATCH,
                    &format!("/api/v1/nodes/{name}"),
                    MERGE_PATCH,
                    Some(serde_json::to_vec(&patch).expect("json")),
                    &[],
                )
                .await?
                .json();
        }
        // A server that drops status on create (or a node taken over) gets
        // it through the status subresource.
        if r.status == 409 || node["status"]["conditions"].as_array().is_none() {
            self.post_status(i, &now).await?;
        }
        *self.nodes[i].uid.lock() = node["metadata"]["uid"].as_str().map(str::to_string);
        Ok(())
    }

    /// Writes the Node's status (conditions heartbeat `now`).
    pub async fn post_status(&self, i: usize, now: &str) -> Result<(), Error> {
        let name = &self.nodes[i].name;
        let patch = json!({"status": self.status(i, now)});
        self.must_call(
            || format!("updating the status of node {name}"),
            reqwest::Method::PATCH,
            &format!("/api/v1/nodes/{name}/status"),
            MERGE_PATCH,
            Some(serde_json::to_vec(&patch).expect("json")),
            &[],
        )
        .await?;
        Ok(())
    }

    /// Creates the node's Lease (owned by the Node), or renews it when it
    /// exists.
    pub async fn create_lease(&self, i: usize) -> Result<(), Error> {
        let name = &self.nodes[i].name;
        let mut meta = json!({"name": name, "namespace": LEASE_NAMESPACE});
        if let Some(uid) = self.nodes[i].uid.lock().clone() {
            meta["ownerReferences"] =
                json!([{"apiVersion": "v1", "kind": "Node", "name": name, "uid": uid}]);
        }
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": self.lease_spec(i),
        });
        let r = self
            .must_call(
                || format!("creating the lease of node {name}"),
                reqwest::Method::POST,
                &format!("/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases"),
                JSON,
                Some(serde_json::to_vec(&lease).expect("json")),
                &[409],
            )
            .await?;
        if r.status == 409 {
            self.must_call(
                || format!("renewing the lease of node {name}"),
                reqwest::Method::PATCH,
                &self.lease_path(i),
                MERGE_PATCH,
                Some(serde_json::to_vec(&json!({"spec": self.lease_spec(i)})).expect("json")),
                &[],
            )
            .await?;
        }
        Ok(())
    }
}

/// Registers every node and its Lease, `concurrency` at a time.
pub(crate) async fn register_all(shared: &Shared) -> Result<(), Error> {
    futures::stream::iter(0..shared.nodes.len())
        .map(|i| async move {
            shared.register_node(i).await?;
            shared.create_lease(i).await
        })
        .buffer_unordered(shared.config.concurrency)
        .try_collect::<()>()
        .await
}

/// Deletes every node and its Lease (already gone is fine).
pub(crate) async fn delete_all(shared: &Shared) -> Result<(), Error> {
    futures::stream::iter(0..shared.nodes.len())
        .map(|i| async move {
            let name = &shared.nodes[i].name;
            shared
                .must_call(
                    || format!("deleting node {name}"),
                    reqwest::Method::DELETE,
                    &format!("/api/v1/nodes/{name}"),
                    JSON,
                    None,
                    &[404],
                )
                .await?;
            shared
                .must_call(
                    || format!("deleting the lease of node {name}"),
                    reqwest::Method::DELETE,
                    &shared.lease_path(i),
                    JSON,
                    None,
                    &[404],
                )
                .await
                .map(drop)
        })
        .buffer_unordered(shared.config.concurrency)
        .try_collect::<()>()
        .await
}

/// RFC 3339 with whole seconds (`metav1.Time`).
pub(crate) fn rfc3339(t: jiff::Timestamp) -> String {
    jiff::Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

/// RFC 3339 with microseconds (`metav1.MicroTime`).
pub(crate) fn micro_time(t: jiff::Timestamp) -> String {
    format!(
        "{}Z",
        jiff::tz::Offset::UTC
            .to_datetime(t)
            .strftime("%Y-%m-%dT%H:%M:%S%.6f")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(n: usize) -> Shared {
        let target = Target {
            server: "https://127.0.0.1:1".into(),
            ca_pem: None,
            token: None,
            identity_pem: None,
            insecure: true,
        };
        let mut c = SimConfig::new(n);
        c.template.zones = vec!["a".into(), "b".into(), "c".into()];
        c.template.labels.insert("pool".into(), "x".into());
        Shared::new(&target, c).unwrap()
    }

    #[test]
    fn taints_parse_like_kubectl() {
        assert_eq!(
            Taint::parse("gpu=true:NoSchedule").unwrap(),
            Taint {
                key: "gpu".into(),
                value: "true".into(),
                effect: "NoSchedule".into()
            }
        );
        let t = Taint::parse("dedicated:NoExecute").unwrap();
        assert_eq!((t.key.as_str(), t.value.as_str()), ("dedicated", ""));
        assert!(Taint::parse("gpu=true").is_err());
        assert!(Taint::parse("gpu=true:Sometimes").is_err());
        assert!(Taint::parse("=x:NoSchedule").is_err());
    }

    #[test]
    fn templates_validate_quantities() {
        let mut t = NodeTemplate::default();
        t.validate().unwrap();
        t.memory = "lots".into();
        let e = t.validate().unwrap_err().to_string();
        assert!(e.contains("memory") && e.contains("lots"), "{e}");
        assert!(NodeTemplate::parse_label("a=b").is_ok());
        assert!(NodeTemplate::parse_label("ab").is_err());
    }

    #[test]
    fn nodes_get_unique_ips_zones_and_labels() {
        let s = shared(300);
        assert_eq!(s.nodes[0].ip, Ipv4Addr::new(10, 64, 0, 1));
        assert_eq!(s.nodes[299].ip, Ipv4Addr::new(10, 64, 1, 44));
        let ips: std::collections::HashSet<_> = s.nodes.iter().map(|n| n.ip).collect();
        assert_eq!(ips.len(), 300);
        let l = s.labels(4);
        assert_eq!(l[ZONE_LABEL], "b");
        assert_eq!(l[REGION_LABEL], "region-0");
        assert_eq!(l["kubernetes.io/hostname"], "hollow-4");
        assert_eq!(l[HOLLOW_LABEL], "true");
        assert_eq!(l["pool"], "x");
        assert_eq!(s.node_index("hollow-299"), Some(299));
        assert_eq!(s.node_index("hollow-300"), None);
        assert_eq!(s.node_index("hollow-07"), None);
        assert_eq!(s.node_index("other-1"), None);
    }

    #[test]
    fn status_is_ready_with_capacity_equal_to_allocatable() {
        let s = shared(2);
        let st = s.status(1, "2026-11-24T10:00:00Z");
        assert_eq!(st["capacity"], st["allocatable"]);
        assert_eq!(st["capacity"]["pods"], "110");
        let ready = st["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        assert_eq!(ready["reason"], "KubeletReady");
        assert_eq!(ready["lastHeartbeatTime"], "2026-11-24T10:00:00Z");
        assert_eq!(st["addresses"][0]["address"], "10.64.0.2");
    }

    #[test]
    fn times_have_the_kubernetes_shapes() {
        let t = jiff::Timestamp::from_microsecond(1_795_000_000_123_456).unwrap();
        assert_eq!(micro_time(t), "2026-11-18T11:06:40.123456Z");
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
    }
}
