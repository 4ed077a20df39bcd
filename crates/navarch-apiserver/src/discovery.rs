//! Discovery documents: legacy (`APIVersions`, `APIGroupList`,
//! `APIResourceList`) and aggregated (`apidiscovery.k8s.io` v2 and v2beta1).

use navarch_api::{registry, ResourceType, Scope, Subresource, REGISTRY};
use serde_json::{json, Value};

/// The Kubernetes version whose types we build against (k8s-openapi `v1_33`).
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "33";
pub const KUBE_GIT_VERSION: &str = "v1.33.0";

pub fn version() -> Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": KUBE_GIT_VERSION,
        "gitCommit": format!("navarch-{}", env!("CARGO_PKG_VERSION")),
        "gitTreeState": "clean",
        "buildDate": "2026-11-24T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": format!("linux/{}", go_arch()),
    })
}

pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn sub_kind(
    rt: &ResourceType,
    s: Subresource,
) -> (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
) {
    match s {
        Subresource::Status => (rt.group, rt.version, rt.kind, &["get", "patch", "update"]),
        Subresource::Scale => ("autoscaling", "v1", "Scale", &["get", "patch", "update"]),
        Subresource::Binding => ("", "v1", "Binding", &["create"]),
        Subresource::Eviction => ("policy", "v1", "Eviction", &["create"]),
        Subresource::Log => ("", "v1", "Pod", &["get"]),
        Subresource::Exec => ("", "v1", "PodExecOptions", &["create", "get"]),
        Subresource::Attach => ("", "v1", "PodAttachOptions", &["create", "get"]),
        Subresource::PortForward => ("", "v1", "PodPortForwardOptions", &["create", "get"]),
        Subresource::Finalize => ("", "v1", "Namespace", &["update"]),
    }
}

fn storage_hash(rt: &ResourceType) -> String {
    use base64::Engine;
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("{}/{}/{}", rt.group, rt.version, rt.kind).as_bytes());
    base64::engine::general_purpose::STANDARD.encode(&h[..8])
}

/// `APIResourceList` for one group-version.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut resources = Vec::new();
    for rt in REGISTRY
        .iter()
        .filter(|r| r.group == group && r.version == version)
    {
        let mut r = json!({
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced(),
            "kind": rt.kind,
            "verbs": ALL_VERBS,
            "storageVersionHash": storage_hash(rt),
        });
        if !rt.short_names.is_empty() {
            r["shortNames"] = json!(rt.short_names);
        }
        if !rt.categories.is_empty() {
            r["categories"] = json!(rt.categories);
        }
        resources.push(r);
        for s in rt.subresources {
            let (g, v, k, verbs) = sub_kind(rt, *s);
            let mut sr = json!({
                "name": format!("{}/{}", rt.plural, s.name()),
                "singularName": "",
                "namespaced": rt.namespaced(),
                "kind": k,
                "verbs": verbs,
            });
            if g != rt.group || v != rt.version {
                sr["group"] = json!(g);
                sr["version"] = json!(v);
            }
            resources.push(sr);
        }
    }
    if resources.is_empty() {
        return None;
    }
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// Served group-versions grouped by group, core (`""`) or named groups only.
fn grouped(core: bool) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for (g, v) in registry::group_versions() {
        if g.is_empty() != core {
            continue;
        }
        match out.iter_mut().find(|(n, _)| *n == g) {
            Some((_, vs)) => vs.push(v),
            None => out.push((g, vec![v])),
        }
    }
    out
}

fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    grouped(false)
}

pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]})
}

fn api_group(name: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs[0]})
}

pub fn group_list() -> Value {
    let groups: Vec<Value> = groups().iter().map(|(g, vs)| api_group(g, vs)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn group(name: &str) -> Option<Value> {
    groups().iter().find(|(g, _)| *g == name).map(|(g, vs)| {
        let mut v = api_group(g, vs);
        v["kind"] = json!("APIGroup");
        v["apiVersion"] = json!("v1");
        v
    })
}

/// Aggregated discovery for `/api` (core) or `/apis` (named groups).
pub fn aggregated(core: bool, api_version: &str) -> Value {
    let mut items = Vec::new();
    let by_group = grouped(core);
    for (g, vs) in by_group {
        let versions: Vec<Value> = vs
            .iter()
            .map(|v| {
                let resources: Vec<Value> = REGISTRY
                    .iter()
                    .filter(|r| r.group == g && r.version == *v)
                    .map(|rt| {
                        let subs: Vec<Value> = rt
                            .subresources
                            .iter()
                            .map(|s| {
                                let (sg, sv, sk, verbs) = sub_kind(rt, *s);
                                json!({"subresource": s.name(), "responseKind": {"group": sg, "version": sv, "kind": sk}, "verbs": verbs})
                            })
                            .collect();
                        let mut r = json!({
                            "resource": rt.plural,
                            "responseKind": {"group": rt.group, "version": rt.version, "kind": rt.kind},
                            "scope": if rt.scope == Scope::Namespaced { "Namespaced" } else { "Cluster" },
                            "singularResource": rt.singular,
                            "verbs": ALL_VERBS,
                        });
                        if !rt.short_names.is_empty() {
                            r["shortNames"] = json!(rt.short_names);
                        }
                        if !rt.categories.is_empty() {
                            r["categories"] = json!(rt.categories);
                        }
                        if !subs.is_empty() {
                            r["subresources"] = json!(subs);
                        }
                        r
                    })
                    .collect();
                json!({"version": v, "resources": resources, "freshness": "Current"})
            })
            .collect();
        let metadata = if g.is_empty() {
            json!({"creationTimestamp": null})
        } else {
            json!({"name": g, "creationTimestamp": null})
        };
        items.push(json!({"metadata": metadata, "versions": versions}));
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": api_version, "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_resources_listed_with_subresources() {
        let l = resource_list("", "v1").unwrap();
        let names: Vec<&str> = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods"));
        assert!(names.contains(&"pods/eviction"));
        assert!(names.contains(&"replicationcontrollers/scale"));
        let ev = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods/eviction")
            .unwrap();
        assert_eq!(ev["group"], "policy");
    }

    #[test]
    fn aggregated_core_has_no_group_name() {
        let a = aggregated(true, "apidiscovery.k8s.io/v2");
        assert_eq!(a["items"].as_array().unwrap().len(), 1);
        assert!(a["items"][0]["metadata"].get("name").is_none());
        let b = aggregated(false, "apidiscovery.k8s.io/v2");
        assert!(b["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["metadata"]["name"] == "apps"));
    }
}
