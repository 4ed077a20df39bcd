//! End-to-end: kube-rs (client, discovery, watcher, the four patch types).
mod common;
use common::*;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use serde_json::json;

async fn client(s: &TestServer) -> kube::Client {
    let kc = Kubeconfig::read_from(&s.kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_crud_watch_patch_discovery() {
    let s = TestServer::start();
    let c = client(&s).await;
    let v = c.apiserver_version().await.unwrap();
    assert_eq!(v.git_version, "v1.33.0");

    let discovery = kube::Discovery::new(c.clone()).run().await.unwrap();
    assert!(discovery.groups().any(|g| g.name() == "apps"));

    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    // Watcher first: it lists, then watches from the list's resourceVersion.
    let mut stream = watcher(cms.clone(), watcher::Config::default()).boxed();

    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "rs", "labels": {"x": "1"}}, "data": {"a": "1"}}),
    )
    .unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    assert!(created.metadata.uid.is_some());
    let again = cms.create(&PostParams::default(), &cm).await.unwrap_err();
    assert!(
        matches!(again, kube::Error::Api(ref e) if e.code == 409),
        "{again:?}"
    );

    let mut saw = false;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline && !saw {
        match tokio::time::timeout(std::time::Duration::from_secs(5), stream.next()).await {
            Ok(Some(Ok(watcher::Event::Apply(o)))) | Ok(Some(Ok(watcher::Event::InitApply(o)))) => {
                saw = o.metadata.name.as_deref() == Some("rs")
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("watcher ended: {other:?}"),
        }
    }
    assert!(saw, "watcher never delivered the configmap");

    // The four patch types.
    cms.patch(
        "rs",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"b": "2"}})),
    )
    .await
    .unwrap();
    cms.patch(
        "rs",
        &PatchParams::default(),
        &Patch::Strategic(json!({"data": {"c": "3"}})),
    )
    .await
    .unwrap();
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/data/d", "value": "4"}])).unwrap();
    cms.patch("rs", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    cms.patch("rs", &PatchParams::apply("rs-mgr").force(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rs"}, "data": {"e": "5"}})))
        .await
        .unwrap();
    let got = cms.get("rs").await.unwrap();
    let data = got.data.unwrap();
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")] {
        assert_eq!(data.get(k).map(String::as_str), Some(v), "{data:?}");
    }
    // Server-side apply creates when absent.
    cms.patch(
        "made-by-apply",
        &PatchParams::apply("rs-mgr"),
        &Patch::Apply(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "made-by-apply"}}),
        ),
    )
    .await
    .unwrap();

    let list = cms
        .list(&ListParams::default().labels("x=1"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);

    // Scale subresource through kube-rs.
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}))
    .unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    deps.patch_scale(
        "d",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    assert_eq!(
        deps.get_scale("d").await.unwrap().spec.unwrap().replicas,
        Some(3)
    );

    // deletecollection with a label selector removes exactly the matching objects.
    for n in ["dc-1", "dc-2"] {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": n, "labels": {"sweep": "yes"}}}))
                .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("sweep=yes"),
    )
    .await
    .unwrap();
    assert!(cms
        .list(&ListParams::default().labels("sweep=yes"))
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(
        cms.get_opt("rs").await.unwrap().is_some(),
        "deletecollection deleted an unselected object"
    );

    // A server-side dry run returns the would-be object and stores nothing.
    let dry: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "dry"}})).unwrap();
    let got = cms
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &dry,
        )
        .await
        .unwrap();
    assert_eq!(got.metadata.name.as_deref(), Some("dry"));
    assert!(cms.get_opt("dry").await.unwrap().is_none());

    cms.delete("rs", &DeleteParams::default()).await.unwrap();
    let gone = cms.get("rs").await.unwrap_err();
    assert!(
        matches!(gone, kube::Error::Api(ref e) if e.code == 404),
        "{gone:?}"
    );
}
