//! The namespace and ServiceAccount controllers in an in-process cluster:
//! every namespace gets (and keeps) its `default` ServiceAccount; deleting
//! a namespace with 10,000 objects of several kinds, pods on hollow nodes
//! among them, empties it and then removes it.

mod common;

use common::{opts, rt, Cluster};
use navarch_apiserver::cache::Filter;
use navarch_apiserver::DeleteOptions;
use navarch_controllers::namespace;
use serde_json::json;
use std::time::Duration;

fn list(
    c: &Cluster,
    group: &str,
    plural: &str,
    ns: &str,
) -> Vec<std::sync::Arc<navarch_apiserver::cache::CachedObject>> {
    c.server
        .cache
        .kind(rt(group, plural))
        .list(
            &Filter {
                namespace: Some(ns.into()),
                ..Default::default()
            },
            0,
        )
        .items
}

fn count(c: &Cluster, group: &str, plural: &str, ns: &str) -> usize {
    list(c, group, plural, ns).len()
}

async fn create_ns(c: &Cluster, name: &str) {
    c.server
        .create(
            rt("", "namespaces"),
            None,
            json!({"metadata": {"name": name}}),
            &opts(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_gets_and_keeps_its_default_service_account() {
    let c = Cluster::start_with(false).await;
    namespace::spawn(c.server.clone(), c.shutdown.clone());
    create_ns(&c, "team").await;
    c.wait("default SA in team", |c| {
        count(c, "", "serviceaccounts", "team") == 1
    })
    .await;
    let first = list(&c, "", "serviceaccounts", "team")[0].mod_revision;
    c.server
        .delete(
            rt("", "serviceaccounts"),
            Some("team"),
            "default",
            &DeleteOptions::default(),
        )
        .await
        .unwrap();
    // The cache may still hold the deleted SA for a moment: wait for a new one.
    c.wait("default SA back", |c| {
        list(c, "", "serviceaccounts", "team")
            .iter()
            .any(|sa| sa.mod_revision > first)
    })
    .await;
    // A pod may use it.
    c.server
        .create(
            common::pods(),
            Some("team"),
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "pause"}]}}),
            &opts(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_with_ten_thousand_objects_empties_and_removes_it() {
    let c = Cluster::start_with(false).await;
    namespace::spawn(c.server.clone(), c.shutdown.clone());
    navarch_controllers::gc::spawn(c.server.clone(), c.shutdown.clone());
    let _nodes = c.sim(3).await;
    create_ns(&c, "big").await;
    c.wait("default SA", |c| {
        count(c, "", "serviceaccounts", "big") == 1
    })
    .await;
    // 9,900 ConfigMaps, 50 Secrets, a ReplicaSet of 40 pods, 10 Services.
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..33 {
        let server = c.server.clone();
        tasks.spawn(async move {
            for i in 0..300 {
                let n = chunk * 300 + i;
                server
                    .create(
                        rt("", "configmaps"),
                        Some("big"),
                        json!({"metadata": {"name": format!("cm-{n}")}, "data": {"k": "v"}}),
                        &opts(),
                    )
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    for i in 0..50 {
        c.server
            .create(
                rt("", "secrets"),
                Some("big"),
                json!({"metadata": {"name": format!("s-{i}")}, "stringData": {"k": "v"}}),
                &opts(),
            )
            .await
            .unwrap();
    }
    for i in 0..10 {
        c.server
            .create(
                rt("", "services"),
                Some("big"),
                json!({"metadata": {"name": format!("svc-{i}")},
                    "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}),
                &opts(),
            )
            .await
            .unwrap();
    }
    let mut set = common::rs("web", 40);
    set["metadata"]["namespace"] = json!("big");
    c.server
        .create(rt("apps", "replicasets"), Some("big"), set, &opts())
        .await
        .unwrap();
    c.wait("40 running pods", |c| {
        c.all_pods()
            .iter()
            .filter(|p| p["metadata"]["namespace"] == "big" && p["status"]["phase"] == "Running")
            .count()
            == 40
    })
    .await;
    let total = count(&c, "", "configmaps", "big")
        + count(&c, "", "secrets", "big")
        + count(&c, "", "services", "big")
        + count(&c, "", "pods", "big")
        + count(&c, "apps", "replicasets", "big");
    assert!(total >= 10_000, "{total}");

    c.server
        .delete(rt("", "namespaces"), None, "big", &DeleteOptions::default())
        .await
        .unwrap();
    // New objects are refused while it terminates (admission reads the
    // watch cache, which shows the deletion a moment later).
    c.wait("Terminating in the cache", |c| {
        c.server
            .cache
            .kind(rt("", "namespaces"))
            .get(&rt("", "namespaces").key(None, "big"))
            .is_some_and(|o| o.field("status.phase").as_deref() == Some("Terminating"))
    })
    .await;
    let refused = c
        .server
        .create(
            rt("", "configmaps"),
            Some("big"),
            json!({"metadata": {"name": "late"}}),
            &opts(),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code, 403, "{refused:?}");
    for _ in 0..600 {
        if c.server
            .read(rt("", "namespaces"), None, "big")
            .await
            .is_err_and(|e| e.code == 404)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone = c.server.read(rt("", "namespaces"), None, "big").await;
    assert!(gone.is_err_and(|e| e.code == 404), "namespace still there");
    for (g, p) in [
        ("", "configmaps"),
        ("", "secrets"),
        ("", "services"),
        ("", "pods"),
        ("", "serviceaccounts"),
        ("apps", "replicasets"),
    ] {
        assert_eq!(count(&c, g, p, "big"), 0, "{p} left");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminating_namespace_reports_what_remains() {
    let c = Cluster::start_with(false).await;
    namespace::spawn(c.server.clone(), c.shutdown.clone());
    create_ns(&c, "held").await;
    c.server
        .create(
            rt("", "configmaps"),
            Some("held"),
            json!({"metadata": {"name": "kept", "finalizers": ["example.com/hold"]}}),
            &opts(),
        )
        .await
        .unwrap();
    c.server
        .delete(
            rt("", "namespaces"),
            None,
            "held",
            &DeleteOptions::default(),
        )
        .await
        .unwrap();
    let mut last = serde_json::Value::Null;
    for _ in 0..200 {
        let (ns, _) = c
            .server
            .read(rt("", "namespaces"), None, "held")
            .await
            .unwrap();
        let conds = ns["status"]["conditions"].clone();
        let has = |t: &str, m: &str| {
            conds.as_array().into_iter().flatten().any(|c| {
                c["type"] == t
                    && c["status"] == "True"
                    && c["message"].as_str().unwrap_or("").contains(m)
            })
        };
        if has(
            "NamespaceContentRemaining",
            "configmaps has 1 resource instances",
        ) && has(
            "NamespaceFinalizersRemaining",
            "example.com/hold in 1 resource instances",
        ) {
            // Release the finalizer: the namespace goes.
            c.server
                .patch(
                    rt("", "configmaps"),
                    Some("held"),
                    "kept",
                    None,
                    navarch_api::patch::PatchType::Merge,
                    json!({"metadata": {"finalizers": null}}),
                    &opts(),
                )
                .await
                .unwrap();
            for _ in 0..200 {
                if c.server
                    .read(rt("", "namespaces"), None, "held")
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("namespace not removed after its content went");
        }
        last = conds;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("conditions not reported: {last:#}");
}
