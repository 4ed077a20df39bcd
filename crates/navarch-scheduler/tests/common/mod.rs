//! Builders for upstream Node and Pod JSON in tests.
#![allow(dead_code)]

use std::sync::Arc;

use navarch_scheduler::{Check, Ledger, PodInfo};
use serde_json::{json, Value};

pub fn node(name: &str, cpu: &str, memory: &str, labels: Value) -> Value {
    let mut labels = labels;
    if labels.is_null() {
        labels = json!({});
    }
    labels["kubernetes.io/hostname"] = json!(name);
    json!({
        "metadata": {"name": name, "uid": format!("uid-{name}"), "labels": labels},
        "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"}}
    })
}

pub struct PodBuilder(pub Value);

pub fn pod(name: &str) -> PodBuilder {
    PodBuilder(json!({
        "metadata": {"name": name, "namespace": "default", "uid": name, "labels": {}},
        "spec": {"containers": [{"name": "c"}]}
    }))
}

impl PodBuilder {
    pub fn ns(mut self, ns: &str) -> Self {
        self.0["metadata"]["namespace"] = json!(ns);
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.0["metadata"]["labels"][k] = json!(v);
        self
    }
    pub fn req(mut self, cpu: &str, memory: &str) -> Self {
        self.0["spec"]["containers"][0]["resources"] =
            json!({"requests": {"cpu": cpu, "memory": memory}});
        self
    }
    pub fn priority(mut self, p: i32) -> Self {
        self.0["spec"]["priority"] = json!(p);
        self
    }
    pub fn node(mut self, n: &str) -> Self {
        self.0["spec"]["nodeName"] = json!(n);
        self
    }
    pub fn started(mut self, t: &str) -> Self {
        self.0["status"]["startTime"] = json!(t);
        self
    }
    pub fn spec(mut self, k: &str, v: Value) -> Self {
        self.0["spec"][k] = v;
        self
    }
    pub fn host_port(mut self, container: i64, host: i64) -> Self {
        self.0["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": container, "hostPort": host}]);
        self
    }
    pub fn affinity(mut self, v: Value) -> Self {
        self.0["spec"]["affinity"] = v;
        self
    }
    pub fn json(self) -> Value {
        self.0
    }
    pub fn info(self) -> Arc<PodInfo> {
        Arc::new(PodInfo::from_json(&self.0).unwrap())
    }
}

pub fn ledger(nodes: &[Value], pods: &[Value]) -> Ledger {
    let mut l = Ledger::new();
    for n in nodes {
        l.add_node(n).unwrap();
    }
    for p in pods {
        l.apply_pod(p).unwrap();
    }
    l
}

/// Schedules and reserves, returning the node name.
pub fn place(
    l: &mut Ledger,
    pod: Arc<PodInfo>,
) -> Result<String, navarch_scheduler::Unschedulable> {
    let cfg = navarch_scheduler::Config::default();
    let p = navarch_scheduler::schedule(l, &pod, &cfg, 0)?;
    l.reserve(&p.node, pod, Check::Resources).unwrap();
    Ok(p.node)
}
