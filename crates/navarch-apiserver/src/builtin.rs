//! What a fresh cluster has from the first second: the system namespaces
//! with their `default` ServiceAccounts, the `kubernetes` Service and its
//! Endpoints. (Every later namespace gets its ServiceAccount, and deleted
//! namespaces are emptied, by the controllers in `navarch-controllers`.)

use crate::handlers::WriteOptions;
use crate::ApiServer;
use navarch_api::registry::lookup;
use serde_json::json;

pub const SYSTEM_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

async fn ensure(
    server: &ApiServer,
    group: &str,
    plural: &str,
    ns: Option<&str>,
    obj: serde_json::Value,
) {
    let rt = lookup(group, "v1", plural).expect("built-in kind served");
    match server
        .create(
            rt,
            ns,
            obj,
            &WriteOptions {
                field_manager: Some("navarch-apiserver".into()),
                ..Default::default()
            },
        )
        .await
    {
        Ok(_) => {}
        Err(e) if e.code == 409 => {}
        Err(e) => tracing::warn!(kind = rt.kind, error = %e, "creating built-in object failed"),
    }
}

async fn ensure_default_service_account(server: &ApiServer, ns: &str) {
    ensure(
        server,
        "",
        "serviceaccounts",
        Some(ns),
        json!({"metadata": {"name": "default"}}),
    )
    .await
}

/// Creates the system namespaces and the `kubernetes` Service.
pub async fn bootstrap(server: &ApiServer, advertise_ip: &str, port: u16) {
    for ns in SYSTEM_NAMESPACES {
        ensure(
            server,
            "",
            "namespaces",
            None,
            json!({"metadata": {"name": ns}}),
        )
        .await;
        ensure_default_service_account(server, ns).await;
    }
    ensure(
        server,
        "",
        "services",
        Some("default"),
        json!({"metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
               "spec": {"type": "ClusterIP", "clusterIP": crate::ips::KUBERNETES_SERVICE_IP, "sessionAffinity": "None",
                        "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}}),
    )
    .await;
    let subsets = json!([{"addresses": [{"ip": advertise_ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]);
    let eprt = lookup("", "v1", "endpoints").expect("served");
    match server.read(eprt, Some("default"), "kubernetes").await {
        Ok((cur, _)) if cur["subsets"] == subsets => {}
        Ok(_) => {
            let body = json!({"metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}}, "subsets": subsets});
            if let Err(e) = server
                .update(
                    eprt,
                    Some("default"),
                    "kubernetes",
                    None,
                    body,
                    &WriteOptions::default(),
                )
                .await
            {
                tracing::warn!(error = %e, "updating kubernetes endpoints failed");
            }
        }
        Err(_) => {
            ensure(server, "", "endpoints", Some("default"), json!({"metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}}, "subsets": subsets})).await;
        }
    }
    // Its EndpointSlice, as upstream's endpoints reconciler writes it (the
    // Service has no selector: no controller writes either).
    let address_type = if advertise_ip.contains(':') {
        "IPv6"
    } else {
        "IPv4"
    };
    let slice = json!({"metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": address_type, "endpoints": [{"addresses": [advertise_ip], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]});
    let esrt = lookup("discovery.k8s.io", "v1", "endpointslices").expect("served");
    let same = |cur: &serde_json::Value| {
        cur["metadata"]["labels"] == slice["metadata"]["labels"]
            && ["addressType", "endpoints", "ports"]
                .iter()
                .all(|f| cur[f] == slice[f])
    };
    match server.read(esrt, Some("default"), "kubernetes").await {
        Ok((cur, _)) if same(&cur) => {}
        // The address type is immutable: a changed one is a new slice.
        Ok((cur, _)) if cur["addressType"] != address_type => {
            let _ = server
                .delete(esrt, Some("default"), "kubernetes", &Default::default())
                .await;
            ensure(
                server,
                "discovery.k8s.io",
                "endpointslices",
                Some("default"),
                slice,
            )
            .await;
        }
        Ok(_) => {
            if let Err(e) = server
                .update(
                    esrt,
                    Some("default"),
                    "kubernetes",
                    None,
                    slice,
                    &WriteOptions::default(),
                )
                .await
            {
                tracing::warn!(error = %e, "updating the kubernetes endpoint slice failed");
            }
        }
        Err(_) => {
            ensure(
                server,
                "discovery.k8s.io",
                "endpointslices",
                Some("default"),
                slice,
            )
            .await
        }
    }
}
