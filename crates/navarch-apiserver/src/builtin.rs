//! What a fresh cluster has from the first second, and the two pieces of
//! lifecycle the API itself promises: a `default` ServiceAccount in every
//! namespace, and namespace deletion (contents first, then the namespace).
//! (The controllers issue moves the latter into `navarch-controllers`.)

use crate::handlers::{DeleteOptions, WriteOptions};
use crate::ApiServer;
use navarch_api::registry::lookup;
use navarch_api::REGISTRY;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

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

/// Boxed: creating a namespace creates its ServiceAccount through the same create path.
pub fn ensure_default_service_account<'a>(
    server: &'a ApiServer,
    ns: &'a str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
    Box::pin(ensure(
        server,
        "",
        "serviceaccounts",
        Some(ns),
        json!({"metadata": {"name": "default"}}),
    ))
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
}

/// Finalizes terminating namespaces: deletes everything in them, then
/// removes the `kubernetes` finalizer so the namespace goes.
pub fn spawn_namespace_finalizer(server: Arc<ApiServer>) {
    tokio::spawn(async move {
        let nsrt = lookup("", "v1", "namespaces").expect("served");
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let list = server.cache.kind(nsrt).list(&Default::default(), 0);
            for o in list.items {
                // Deletion sets phase Terminating with the deletionTimestamp.
                if o.field("status.phase").as_deref() != Some("Terminating") {
                    continue;
                }
                let ns = o.name.clone();
                if let Err(e) = finalize_namespace(&server, &ns).await {
                    tracing::warn!(namespace = %ns, error = %e, "namespace finalization incomplete; will retry");
                }
            }
        }
    });
}

async fn finalize_namespace(server: &ApiServer, ns: &str) -> Result<(), navarch_api::ApiError> {
    let mut remaining = 0usize;
    for rt in REGISTRY
        .iter()
        .filter(|r| r.namespaced() && r.ops.to_storage.is_none())
    {
        let list = server.cache.kind(rt).list(
            &crate::cache::Filter {
                namespace: Some(ns.to_string()),
                ..Default::default()
            },
            0,
        );
        for o in list.items {
            remaining += 1;
            let opts = DeleteOptions {
                grace_period_seconds: None,
                propagation: Some("Background".into()),
                ..Default::default()
            };
            match server.delete(rt, Some(ns), &o.name, &opts).await {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    if remaining > 0 {
        return Ok(());
    }
    let nsrt = lookup("", "v1", "namespaces").expect("served");
    let (cur, _) = server.read(nsrt, None, ns).await?;
    let mut body = cur.clone();
    body["spec"]["finalizers"] = json!([]);
    server
        .update(
            nsrt,
            None,
            ns,
            Some(navarch_api::Subresource::Finalize),
            body,
            &WriteOptions::default(),
        )
        .await?;
    Ok(())
}
