//! The Endpoints and EndpointSlice controllers against a real in-process
//! API server (memory store). Nodes are plain Node objects and pods are
//! created bound to them; the tests play the kubelet, reporting each pod's
//! IP and readiness through the `status` subresource.

use navarch_api::patch::PatchType;
use navarch_api::{ResourceType, Subresource};
use navarch_apiserver::DeleteOptions;
use navarch_controllers::{endpoints, gc};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

mod common;

use common::*;

fn services() -> &'static ResourceType {
    rt("", "services")
}
fn eps() -> &'static ResourceType {
    rt("", "endpoints")
}
fn slices() -> &'static ResourceType {
    rt("discovery.k8s.io", "endpointslices")
}

async fn start() -> Cluster {
    let c = Cluster::start_with(false).await;
    endpoints::spawn(c.server.clone(), c.shutdown.clone());
    gc::spawn(c.server.clone(), c.shutdown.clone());
    c
}

async fn zone_node(c: &Cluster, name: &str, zone: &str) {
    let node = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": zone}},
        "status": {"capacity": {"cpu": "8", "memory": "8Gi", "pods": "500"},
                   "allocatable": {"cpu": "8", "memory": "8Gi", "pods": "500"},
                   "conditions": [{"type": "Ready", "status": "True"}]}});
    c.server
        .create(rt("", "nodes"), None, node, &opts())
        .await
        .unwrap();
}

/// A pod bound to `node` whose container names `http` port `port`.
async fn pod(c: &Cluster, name: &str, app: &str, node: &str, port: i64) {
    c.create(
        pods(),
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "pause",
                "ports": [{"name": "http", "containerPort": port}]}]}}),
    )
    .await;
}

/// Reports a pod Running with `ip`, Ready or not, as a kubelet would.
async fn report(c: &Cluster, name: &str, ip: &str, ready: bool) {
    let now = navarch_api::meta::rfc3339(jiff::Timestamp::now());
    c.server
        .patch(
            pods(),
            Some("default"),
            name,
            Some(Subresource::Status),
            PatchType::Merge,
            json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                    "lastTransitionTime": now}]}}),
            &opts(),
        )
        .await
        .unwrap();
}

fn cached(c: &Cluster, rt: &'static ResourceType, name: &str) -> Option<Value> {
    c.server
        .cache
        .kind(rt)
        .get(&rt.key(Some("default"), name))
        .map(|o| o.value())
}

/// `ip:port` of the ready and the not-ready addresses, over all subsets
/// and ports (`port` is `name/number`).
fn addresses(ep: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut ready = BTreeSet::new();
    let mut not_ready = BTreeSet::new();
    for ss in ep["subsets"].as_array().into_iter().flatten() {
        for p in ss["ports"].as_array().into_iter().flatten() {
            let port = format!("{}/{}", p["name"].as_str().unwrap_or(""), p["port"]);
            for (list, out) in [
                ("addresses", &mut ready),
                ("notReadyAddresses", &mut not_ready),
            ] {
                for a in ss[list].as_array().into_iter().flatten() {
                    out.insert(format!("{}:{port}", a["ip"].as_str().unwrap()));
                }
            }
        }
    }
    (ready, not_ready)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn wait_addresses(c: &Cluster, svc: &str, ready: &[&str], not_ready: &[&str]) -> Value {
    let want = (set(ready), set(not_ready));
    let mut last = Value::Null;
    for _ in 0..2000 {
        if let Some(ep) = cached(c, eps(), svc) {
            if addresses(&ep) == want {
                return ep;
            }
            last = ep;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{svc}: endpoints {want:?} not reached: {last:#}");
}

/// The controller's slices of `svc`, by name.
fn slices_of(c: &Cluster, svc: &str) -> Vec<Value> {
    c.server
        .cache
        .kind(slices())
        .list(&Default::default(), 0)
        .items
        .iter()
        .map(|o| o.value())
        .filter(|s| {
            s["metadata"]["labels"]["kubernetes.io/service-name"] == svc
                && s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
                    == "endpointslice-controller.k8s.io"
        })
        .collect()
}

fn slice_endpoints(slices: &[Value]) -> Vec<Value> {
    slices
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn names(slices: &[Value]) -> BTreeSet<String> {
    slices
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn web_service(name: &str, selector: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": {"team": "blue"}},
        "spec": {"selector": selector, "ports": [
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "metrics", "port": 9090, "protocol": "TCP", "targetPort": 9090}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_pods_readiness_and_the_selector() {
    let c = start().await;
    zone_node(&c, "n1", "zone-a").await;
    c.wait("kubernetes endpoints", |c| {
        cached(c, eps(), "kubernetes").is_some()
    })
    .await;
    let builtin = cached(&c, eps(), "kubernetes").unwrap();

    pod(&c, "a", "web", "n1", 8080).await;
    pod(&c, "b", "web", "n1", 8080).await;
    pod(&c, "c", "web", "n1", 8081).await;
    pod(&c, "d", "other", "n1", 8080).await;
    // Created before it has an IP: left out.
    pod(&c, "e", "web", "n1", 8080).await;
    report(&c, "a", "10.1.0.1", true).await;
    report(&c, "b", "10.1.0.2", false).await;
    report(&c, "c", "10.1.0.3", true).await;
    report(&c, "d", "10.1.0.4", true).await;
    c.create(services(), web_service("web", json!({"app": "web"})))
        .await;

    // Named targetPort resolved per pod: c's http is 8081.
    let ep = wait_addresses(
        &c,
        "web",
        &[
            "10.1.0.1:http/8080",
            "10.1.0.3:http/8081",
            "10.1.0.1:metrics/9090",
            "10.1.0.3:metrics/9090",
        ],
        &["10.1.0.2:http/8080", "10.1.0.2:metrics/9090"],
    )
    .await;
    // Pods with different numbers for `http` are in different subsets.
    let subsets = ep["subsets"].as_array().unwrap();
    let with_http = subsets
        .iter()
        .filter(|s| {
            s["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "http")
        })
        .count();
    assert_eq!(with_http, 2, "{ep:#}");
    let a = subsets
        .iter()
        .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
        .find(|x| x["ip"] == "10.1.0.1")
        .unwrap();
    assert_eq!(a["nodeName"], "n1");
    assert_eq!(a["targetRef"]["kind"], "Pod");
    assert_eq!(a["targetRef"]["name"], "a");
    assert_eq!(a["targetRef"]["namespace"], "default");
    assert!(a["targetRef"]["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty()));
    let port = subsets
        .iter()
        .flat_map(|s| s["ports"].as_array().cloned().unwrap_or_default())
        .find(|p| p["name"] == "metrics")
        .unwrap();
    assert_eq!(port["protocol"], "TCP");
    assert_eq!(ep["metadata"]["labels"]["team"], "blue");
    assert!(
        ep["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"]
            .is_string()
    );
    assert!(ep["metadata"]["ownerReferences"].is_null());

    // b becomes ready: it moves to the ready addresses; e gets an IP.
    report(&c, "b", "10.1.0.2", true).await;
    report(&c, "e", "10.1.0.5", false).await;
    wait_addresses(
        &c,
        "web",
        &[
            "10.1.0.1:http/8080",
            "10.1.0.2:http/8080",
            "10.1.0.3:http/8081",
            "10.1.0.1:metrics/9090",
            "10.1.0.2:metrics/9090",
            "10.1.0.3:metrics/9090",
        ],
        &["10.1.0.5:http/8080", "10.1.0.5:metrics/9090"],
    )
    .await;

    // a is deleted (terminating: out at once), c is gone.
    c.server
        .delete(pods(), Some("default"), "a", &DeleteOptions::default())
        .await
        .unwrap();
    let now = DeleteOptions {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    c.server
        .delete(pods(), Some("default"), "c", &now)
        .await
        .unwrap();
    let ep = wait_addresses(
        &c,
        "web",
        &["10.1.0.2:http/8080", "10.1.0.2:metrics/9090"],
        &["10.1.0.5:http/8080", "10.1.0.5:metrics/9090"],
    )
    .await;
    let rv = ep["metadata"]["resourceVersion"].clone();

    // Unrelated pod changes write nothing.
    c.patch(
        pods(),
        "b",
        json!({"metadata": {"annotations": {"x": "y"}}}),
    )
    .await;
    pod(&c, "f", "unrelated", "n1", 8080).await;
    report(&c, "f", "10.1.0.9", true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cached(&c, eps(), "web").unwrap()["metadata"]["resourceVersion"],
        rv
    );

    // The selector changes to d's label.
    c.patch(
        services(),
        "web",
        json!({"spec": {"selector": {"app": "other"}}}),
    )
    .await;
    wait_addresses(
        &c,
        "web",
        &["10.1.0.4:http/8080", "10.1.0.4:metrics/9090"],
        &[],
    )
    .await;

    // A Service without a selector: its Endpoints are the user's.
    c.create(
        services(),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "manual"},
            "spec": {"ports": [{"port": 5432}]}}),
    )
    .await;
    let manual = c
        .create(
            eps(),
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "manual"},
                "subsets": [{"addresses": [{"ip": "192.168.7.7"}], "ports": [{"port": 5432}]}]}),
        )
        .await;

    // The Service goes: its Endpoints go with it.
    c.server
        .delete(
            services(),
            Some("default"),
            "web",
            &DeleteOptions::default(),
        )
        .await
        .unwrap();
    c.wait("web endpoints deleted", |c| {
        cached(c, eps(), "web").is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now = cached(&c, eps(), "manual").expect("manual endpoints kept");
    assert_eq!(
        now["metadata"]["resourceVersion"],
        manual["metadata"]["resourceVersion"]
    );
    assert!(slices_of(&c, "manual").is_empty());
    // The built-in `kubernetes` Endpoints are the API server's.
    assert_eq!(
        cached(&c, eps(), "kubernetes").unwrap()["metadata"]["resourceVersion"],
        builtin["metadata"]["resourceVersion"]
    );
    let k = cached(&c, slices(), "kubernetes").expect("kubernetes endpoint slice");
    assert_eq!(
        k["metadata"]["labels"]["kubernetes.io/service-name"],
        "kubernetes"
    );
    assert_eq!(k["endpoints"][0]["conditions"]["ready"], true);
    assert_eq!(k["ports"][0]["name"], "https");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slices_mirror_pods_in_slices_of_at_most_100() {
    let c = start().await;
    zone_node(&c, "n1", "zone-a").await;
    zone_node(&c, "n2", "zone-b").await;
    let svc = c
        .create(services(), web_service("big", json!({"app": "big"})))
        .await;
    let uid = svc["metadata"]["uid"].as_str().unwrap().to_string();

    // No pods yet: one empty placeholder slice.
    c.wait("placeholder slice", |c| slices_of(c, "big").len() == 1)
        .await;
    let placeholder = slices_of(&c, "big").remove(0);
    assert!(placeholder["endpoints"]
        .as_array()
        .is_none_or(|e| e.is_empty()));
    assert!(placeholder["metadata"]["name"]
        .as_str()
        .unwrap()
        .starts_with("big-"));
    let r = &placeholder["metadata"]["ownerReferences"][0];
    assert_eq!(r["kind"], "Service");
    assert_eq!(r["uid"], uid.as_str());
    assert_eq!(r["controller"], true);
    assert_eq!(placeholder["metadata"]["labels"]["team"], "blue");
    assert_eq!(placeholder["addressType"], "IPv4");

    // 250 pods over two nodes: three slices.
    for i in 0..250 {
        let node = if i % 2 == 0 { "n1" } else { "n2" };
        let name = format!("p{i:03}");
        pod(&c, &name, "big", node, 8080).await;
        report(
            &c,
            &name,
            &format!("10.2.{}.{}", i / 200, i % 200 + 1),
            true,
        )
        .await;
    }
    c.wait("250 endpoints in 3 slices", |c| {
        let s = slices_of(c, "big");
        s.len() == 3 && slice_endpoints(&s).len() == 250
    })
    .await;
    let all = slices_of(&c, "big");
    // The placeholder was reused, not replaced.
    assert!(names(&all).contains(placeholder["metadata"]["name"].as_str().unwrap()));
    for s in &all {
        assert!(s["endpoints"].as_array().unwrap().len() <= 100);
        let mut ports: Vec<(String, i64)> = s["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["port"].as_i64().unwrap(),
                )
            })
            .collect();
        ports.sort();
        assert_eq!(ports, vec![("http".into(), 8080), ("metrics".into(), 9090)]);
        assert_eq!(s["ports"][0]["protocol"], "TCP");
    }
    let e = slice_endpoints(&all)
        .into_iter()
        .find(|e| e["targetRef"]["name"] == "p001")
        .unwrap();
    assert_eq!(e["addresses"], json!(["10.2.0.2"]));
    assert_eq!(
        e["conditions"],
        json!({"ready": true, "serving": true, "terminating": false})
    );
    assert_eq!(e["nodeName"], "n2");
    assert_eq!(e["zone"], "zone-b");
    assert_eq!(e["targetRef"]["kind"], "Pod");
    // Endpoints list them too.
    c.wait("250 addresses", |c| {
        cached(c, eps(), "big").is_some_and(|ep| addresses(&ep).0.len() == 500)
    })
    .await;

    // A terminating pod: in the slices (not ready, serving, terminating),
    // out of the Endpoints.
    c.server
        .delete(pods(), Some("default"), "p000", &DeleteOptions::default())
        .await
        .unwrap();
    c.wait("p000 terminating in its slice", |c| {
        slice_endpoints(&slices_of(c, "big")).iter().any(|e| {
            e["targetRef"]["name"] == "p000"
                && e["conditions"] == json!({"ready": false, "serving": true, "terminating": true})
        })
    })
    .await;
    c.wait("p000 out of the endpoints", |c| {
        cached(c, eps(), "big").is_some_and(|ep| addresses(&ep).0.len() == 498)
    })
    .await;

    // Scale down to 50: slices shrink, rewritten in place or deleted;
    // no new names.
    let before = names(&slices_of(&c, "big"));
    let now = DeleteOptions {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    for i in 50..250 {
        c.server
            .delete(pods(), Some("default"), &format!("p{i:03}"), &now)
            .await
            .unwrap();
    }
    c.wait("50 endpoints", |c| {
        slice_endpoints(&slices_of(c, "big")).len() == 50
    })
    .await;
    let after = slices_of(&c, "big");
    assert!(
        names(&after).is_subset(&before),
        "{before:?} {:?}",
        names(&after)
    );

    // The Service goes: the garbage collector takes the slices, the
    // controller the Endpoints.
    c.server
        .delete(
            services(),
            Some("default"),
            "big",
            &DeleteOptions::default(),
        )
        .await
        .unwrap();
    c.wait("slices and endpoints gone", |c| {
        slices_of(c, "big").is_empty() && cached(c, eps(), "big").is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_on_an_unknown_node_is_left_out_until_the_node_exists() {
    let c = start().await;
    zone_node(&c, "n1", "zone-a").await;
    pod(&c, "a", "web", "n1", 8080).await;
    pod(&c, "b", "web", "ghost", 8080).await;
    report(&c, "a", "10.3.0.1", true).await;
    report(&c, "b", "10.3.0.2", true).await;
    c.create(services(), web_service("web", json!({"app": "web"})))
        .await;
    c.wait("a alone in the slices", |c| {
        let e = slice_endpoints(&slices_of(c, "web"));
        e.len() == 1 && e[0]["targetRef"]["name"] == "a"
    })
    .await;
    let ev = c.wait_event("web", "FailedToUpdateEndpointSlices").await;
    assert_eq!(ev["type"], "Warning");
    assert!(
        ev["message"]
            .as_str()
            .unwrap()
            .contains("skipping Pod b for Service default/web: Node ghost Not Found"),
        "{ev:#}"
    );
    // The Endpoints do not need the node.
    wait_addresses(
        &c,
        "web",
        &[
            "10.3.0.1:http/8080",
            "10.3.0.2:http/8080",
            "10.3.0.1:metrics/9090",
            "10.3.0.2:metrics/9090",
        ],
        &[],
    )
    .await;
    zone_node(&c, "ghost", "zone-c").await;
    c.wait("b in the slices", |c| {
        slice_endpoints(&slices_of(c, "web"))
            .iter()
            .any(|e| e["targetRef"]["name"] == "b" && e["zone"] == "zone-c")
    })
    .await;
}
