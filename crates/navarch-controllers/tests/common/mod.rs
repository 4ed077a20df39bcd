//! The in-process cluster the controller tests share: a real API server
//! (memory store), the scheduler and the controllers under test, and, where
//! pods must run, hollow nodes (`navarch_sim`) that report them Running and
//! Ready and finish their graceful deletions.
#![allow(dead_code)]

use navarch_api::registry::lookup;
use navarch_api::ResourceType;
use navarch_apiserver::cache::Filter;
use navarch_apiserver::{ApiServer, WriteOptions};
use navarch_controllers::{deployment, replicaset, scheduler};
use navarch_store::{MemoryStore, Store};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct Cluster {
    pub server: Arc<ApiServer>,
    pub kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
    pub shutdown: CancellationToken,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn rt(group: &str, plural: &str) -> &'static ResourceType {
    lookup(group, "v1", plural).expect("served")
}

pub fn pods() -> &'static ResourceType {
    rt("", "pods")
}

pub fn opts() -> WriteOptions {
    WriteOptions::default()
}

pub fn rs(name: &str, replicas: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name, "tier": "web"}},
                "spec": {"containers": [{"name": "c", "image": "pause",
                    "resources": {"requests": {"cpu": "100m"}}}]}}}})
}

impl Cluster {
    /// The API server, the scheduler and the replication controller;
    /// with `deployments`, the Deployment controller too.
    pub async fn start_with(deployments: bool) -> Cluster {
        Cluster::start_configured(deployments, |_| {}).await
    }

    /// As [`Cluster::start_with`], with the API server's configuration
    /// adjusted by `tweak` first.
    pub async fn start_configured(
        deployments: bool,
        tweak: impl FnOnce(&mut navarch_apiserver::Config),
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let shutdown = CancellationToken::new();
        let mut config = navarch_apiserver::Config::new(dir.path(), "127.0.0.1:0");
        tweak(&mut config);
        let running = navarch_apiserver::start(config, store, shutdown.clone())
            .await
            .unwrap();
        scheduler::spawn(
            running.server.clone(),
            scheduler::SchedulerOptions {
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(200),
                ..Default::default()
            },
            shutdown.clone(),
        );
        replicaset::spawn(running.server.clone(), shutdown.clone());
        if deployments {
            deployment::spawn(running.server.clone(), shutdown.clone());
        }
        Cluster {
            server: running.server,
            kubeconfig: running.kubeconfig,
            _dir: dir,
            shutdown,
        }
    }

    pub async fn sim(&self, nodes: usize) -> navarch_sim::Sim {
        let target = navarch_sim::Target::from_kubeconfig(&self.kubeconfig).unwrap();
        navarch_sim::Sim::start(target, navarch_sim::SimConfig::new(nodes))
            .await
            .unwrap()
    }

    /// A plain Node object (no agent, no sim): pods bound to it stay
    /// Pending until the test reports them.
    pub async fn node(&self, name: &str, cpu: &str) {
        let node = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                       "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}});
        self.server
            .create(rt("", "nodes"), None, node, &opts())
            .await
            .unwrap();
    }

    pub async fn create(&self, rt: &'static ResourceType, obj: Value) -> Value {
        self.server
            .create(rt, Some("default"), obj, &opts())
            .await
            .unwrap()
            .object
    }

    pub async fn patch(&self, rt: &'static ResourceType, name: &str, patch: Value) {
        self.server
            .patch(
                rt,
                Some("default"),
                name,
                None,
                navarch_api::patch::PatchType::Merge,
                patch,
                &opts(),
            )
            .await
            .unwrap();
    }

    pub async fn read(&self, rt: &'static ResourceType, name: &str) -> Value {
        self.server.read(rt, Some("default"), name).await.unwrap().0
    }

    /// Every pod in `default` (from the watch cache).
    pub fn all_pods(&self) -> Vec<Value> {
        self.server
            .cache
            .kind(pods())
            .list(&Filter::default(), 0)
            .items
            .iter()
            .map(|o| o.value())
            .collect()
    }

    /// Active pods (not being deleted, not terminal) controlled by `uid`.
    pub fn owned(&self, uid: &str) -> Vec<Value> {
        self.all_pods()
            .into_iter()
            .filter(|p| {
                p["metadata"]["deletionTimestamp"].is_null()
                    && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                    && controller_uid(p) == Some(uid)
            })
            .collect()
    }

    pub async fn wait(&self, what: &str, mut f: impl FnMut(&Cluster) -> bool) {
        for _ in 0..2000 {
            if f(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not reached in 20 s: {what}");
    }

    /// Waits for `n` active owned pods, and for them to stay `n` for a
    /// while (nothing more is coming).
    pub async fn settle(&self, uid: &str, n: usize) {
        self.wait(&format!("{n} pods"), |c| c.owned(uid).len() == n)
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(self.owned(uid).len(), n, "pods after settling");
    }

    pub async fn wait_status(&self, rt: &'static ResourceType, name: &str, want: Value) -> Value {
        let mut last = Value::Null;
        for _ in 0..2000 {
            let o = self.read(rt, name).await;
            let s = &o["status"];
            if want
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| s[k].as_i64().unwrap_or(0) == v.as_i64().unwrap())
            {
                return o;
            }
            last = s.clone();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{name}: status {want} not reached: {last:#}");
    }

    pub fn events_for(&self, name: &str) -> Vec<Value> {
        self.server
            .cache
            .kind(rt("", "events"))
            .list(&Filter::default(), 0)
            .items
            .iter()
            .map(|o| o.value())
            .filter(|e| e["involvedObject"]["name"] == name)
            .collect()
    }

    pub async fn wait_event(&self, owner: &str, reason: &str) -> Value {
        for _ in 0..2000 {
            if let Some(e) = self
                .events_for(owner)
                .into_iter()
                .find(|e| e["reason"] == reason)
            {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "no {reason} event for {owner}: {:#?}",
            self.events_for(owner)
        );
    }

    /// Reports a pod Running (and Ready, if `ready`) as a kubelet would.
    pub async fn report(&self, name: &str, ready: bool) {
        let now = navarch_api::meta::rfc3339(jiff::Timestamp::now());
        let status = if ready { "True" } else { "False" };
        self.server
            .patch(
                pods(),
                Some("default"),
                name,
                Some(navarch_api::Subresource::Status),
                navarch_api::patch::PatchType::Merge,
                json!({"status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": status, "lastTransitionTime": now}]}}),
                &opts(),
            )
            .await
            .unwrap();
    }
}

pub fn controller_uid(p: &Value) -> Option<&str> {
    p["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)?["uid"]
        .as_str()
}
