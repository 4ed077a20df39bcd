//! The garbage collector against a real in-process API server: owners
//! deleted with each propagation policy, dangling and shared references.

use navarch_api::registry::lookup;
use navarch_api::ResourceType;
use navarch_apiserver::{ApiServer, DeleteOptions, WriteOptions};
use navarch_store::{MemoryStore, Store};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

struct Cluster {
    server: Arc<ApiServer>,
    _dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn cm() -> &'static ResourceType {
    lookup("", "v1", "configmaps").unwrap()
}

fn pods() -> &'static ResourceType {
    lookup("", "v1", "pods").unwrap()
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let shutdown = CancellationToken::new();
        let running = navarch_apiserver::start(
            navarch_apiserver::Config::new(dir.path(), "127.0.0.1:0"),
            store,
            shutdown.clone(),
        )
        .await
        .unwrap();
        navarch_controllers::gc::spawn(running.server.clone(), shutdown.clone());
        Cluster {
            server: running.server,
            _dir: dir,
            shutdown,
        }
    }

    /// Creates a ConfigMap owned by `owners` (name, uid, blockOwnerDeletion).
    async fn configmap(&self, name: &str, owners: &[(&str, &str, bool)]) -> String {
        let refs: Vec<Value> = owners
            .iter()
            .map(|(n, uid, block)| {
                json!({"apiVersion": "v1", "kind": "ConfigMap", "name": n, "uid": uid,
                       "blockOwnerDeletion": block})
            })
            .collect();
        let mut obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"}});
        if !refs.is_empty() {
            obj["metadata"]["ownerReferences"] = json!(refs);
        }
        let w = self
            .server
            .create(cm(), Some("default"), obj, &WriteOptions::default())
            .await
            .unwrap();
        w.object["metadata"]["uid"].as_str().unwrap().to_string()
    }

    async fn get(&self, rt: &'static ResourceType, name: &str) -> Option<Value> {
        self.server
            .read(rt, Some("default"), name)
            .await
            .ok()
            .map(|(v, _)| v)
    }

    async fn delete(&self, rt: &'static ResourceType, name: &str, policy: &str) {
        let opts = DeleteOptions {
            propagation: Some(policy.into()),
            ..Default::default()
        };
        self.server
            .delete(rt, Some("default"), name, &opts)
            .await
            .unwrap();
    }

    async fn wait(&self, what: &str, mut f: impl AsyncFnMut() -> bool) {
        for _ in 0..500 {
            if f().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not reached: {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_deletes_dependents_whose_owners_are_all_gone() {
    let c = Cluster::start().await;
    let a = c.configmap("owner-a", &[]).await;
    let b = c.configmap("owner-b", &[]).await;
    c.configmap("only-a", &[("owner-a", &a, false)]).await;
    c.configmap("a-and-b", &[("owner-a", &a, false), ("owner-b", &b, false)])
        .await;
    c.configmap("unrelated", &[]).await;
    c.delete(cm(), "owner-a", "Background").await;
    c.wait("only-a collected", async || {
        c.get(cm(), "only-a").await.is_none()
    })
    .await;
    // A dependent with a live owner stays and loses the dangling reference.
    c.wait("dangling reference dropped", async || {
        c.get(cm(), "a-and-b")
            .await
            .is_some_and(|v| v["metadata"]["ownerReferences"].as_array().map(Vec::len) == Some(1))
    })
    .await;
    let kept = c.get(cm(), "a-and-b").await.unwrap();
    assert_eq!(kept["metadata"]["ownerReferences"][0]["uid"], b.as_str());
    assert!(c.get(cm(), "unrelated").await.is_some());
    // A reference to an owner that never existed is dangling from the start.
    c.configmap("stray", &[("ghost", "no-such-uid", false)])
        .await;
    c.wait("stray collected", async || {
        c.get(cm(), "stray").await.is_none()
    })
    .await;
    // Same name, other uid: the owner it named is gone.
    c.configmap("owner-a", &[]).await;
    c.configmap("old-a", &[("owner-a", &a, false)]).await;
    c.wait("old-a collected", async || {
        c.get(cm(), "old-a").await.is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_keeps_dependents_and_removes_their_references() {
    let c = Cluster::start().await;
    let o = c.configmap("owner", &[]).await;
    c.configmap("dep-1", &[("owner", &o, true)]).await;
    c.configmap("dep-2", &[("owner", &o, false)]).await;
    c.delete(cm(), "owner", "Orphan").await;
    c.wait("owner gone", async || c.get(cm(), "owner").await.is_none())
        .await;
    for d in ["dep-1", "dep-2"] {
        let v = c.get(cm(), d).await.expect("orphaned, not deleted");
        assert!(v["metadata"].get("ownerReferences").is_none(), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_waits_for_blocking_dependents() {
    let c = Cluster::start().await;
    let o = c.configmap("owner", &[]).await;
    c.configmap("plain-dep", &[("owner", &o, false)]).await;
    // A pod bound to a node is deleted gracefully: it blocks its owner
    // until its kubelet finishes it.
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "worker", "namespace": "default",
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": o,
                                  "blockOwnerDeletion": true}]},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "pause"}]}});
    c.server
        .create(pods(), Some("default"), pod, &WriteOptions::default())
        .await
        .unwrap();
    c.delete(cm(), "owner", "Foreground").await;
    c.wait("dependents deleted", async || {
        c.get(cm(), "plain-dep").await.is_none()
            && c.get(pods(), "worker")
                .await
                .is_some_and(|p| p["metadata"]["deletionTimestamp"].is_string())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let owner = c.get(cm(), "owner").await.expect("waits for the pod");
    assert!(owner["metadata"]["deletionTimestamp"].is_string());
    // The kubelet finishes the pod: the owner goes.
    let del = DeleteOptions {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    // Its own foregroundDeletion finalizer (no dependents) goes first.
    c.wait("pod finalizer removed", async || {
        let _ = c
            .server
            .delete(pods(), Some("default"), "worker", &del)
            .await;
        c.get(pods(), "worker").await.is_none()
    })
    .await;
    c.wait("owner gone", async || c.get(cm(), "owner").await.is_none())
        .await;
}
