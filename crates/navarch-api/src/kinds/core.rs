//! Core kinds other than pods and controllers: Namespace, Node, Service,
//! Endpoints, ConfigMap, Secret, ServiceAccount.

use super::util::{
    arr, count, each_obj_mut, existing_obj_mut, flag, format_labels, has, int, obj_mut, q, s,
    set_default, set_default_str,
};
use super::validation::{
    immutable, invalid_all, is_cidr, is_dns1123_label, is_dns1123_subdomain, is_ip,
    is_qualified_name, is_valid_label_value, required_because, too_long, validate_data_keys,
    validate_enum, validate_object_meta, validate_port_num_or_name, validate_port_number,
    validate_range, NameRule, MAX_DATA_SIZE,
};
use super::{Column, AGE_COLUMN, NAME_COLUMN};
use crate::error::Cause;
use base64::Engine;
use jiff::Timestamp;
use serde_json::{json, Value};

// --------------------------------------------------------------- Namespace

pub fn namespace_defaults(ns: &mut Value) {
    let name = crate::meta::name(ns).to_string();
    if !name.is_empty() {
        if let Some(labels) = obj_mut(ns, "metadata").and_then(|m| {
            let l = m.entry("labels").or_insert(Value::Null);
            if l.is_null() {
                *l = json!({});
            }
            l.as_object_mut()
        }) {
            labels.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }
    if let Some(st) = existing_obj_mut(ns, "status").and_then(Value::as_object_mut) {
        set_default_str(st, "phase", "Active");
    }
}

pub fn namespace_prepare(ns: &mut Value) {
    if let Some(spec) = obj_mut(ns, "spec") {
        let fins = spec.entry("finalizers").or_insert(Value::Null);
        if !fins.is_array() {
            *fins = json!([]);
        }
        if let Some(list) = fins.as_array_mut() {
            if !list.iter().any(|f| f == "kubernetes") {
                list.push(json!("kubernetes"));
            }
        }
    }
    if let Some(m) = ns.as_object_mut() {
        m.insert("status".into(), json!({"phase": "Active"}));
    }
}

pub fn namespace_validate(ns: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(ns, old, NameRule::Label);
    for (i, f) in arr(&ns["spec"], "finalizers").iter().enumerate() {
        let p = format!("spec.finalizers[{i}]");
        let f = f.as_str().unwrap_or("");
        out.extend(invalid_all(&p, f, is_qualified_name(f)));
    }
    out.extend(validate_enum(
        &ns["status"]["phase"],
        "status.phase",
        &["Active", "Terminating"],
        false,
    ));
    out
}

pub const NAMESPACE_COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column {
        name: "Status",
        kind: "string",
        format: "",
        description: "The status of the namespace",
        priority: 0,
    },
    AGE_COLUMN,
];

pub fn namespace_row(ns: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        json!(crate::meta::name(ns)),
        json!(s(&ns["status"], "phase")),
        json!(crate::meta::age(ns, now)),
    ]
}

pub const NAMESPACE_FIELDS: &[&str] = &["status.phase", "name"];

pub fn namespace_field(ns: &Value, label: &str) -> Option<String> {
    match label {
        "status.phase" => Some(s(&ns["status"], "phase").to_string()),
        "name" => Some(crate::meta::name(ns).to_string()),
        _ => None,
    }
}

// -------------------------------------------------------------------- Node

pub fn node_defaults(node: &mut Value) {
    if let Some(st) = existing_obj_mut(node, "status").and_then(Value::as_object_mut) {
        if st.get("capacity").is_some_and(Value::is_object) && !has_value(st, "allocatable") {
            let cap = st["capacity"].clone();
            st.insert("allocatable".into(), cap);
        }
    }
}

fn has_value(m: &serde_json::Map<String, Value>, k: &str) -> bool {
    m.get(k).is_some_and(|v| !v.is_null())
}

pub fn node_validate(node: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(node, old, NameRule::Subdomain);
    let spec = &node["spec"];
    let cidrs = arr(spec, "podCIDRs");
    for (i, c) in cidrs.iter().enumerate() {
        let c = c.as_str().unwrap_or("");
        if !is_cidr(c) {
            out.push(Cause::invalid(
                format!("spec.podCIDRs[{i}]"),
                q(c),
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ));
        }
    }
    if cidrs.len() > 2 {
        out.push(Cause::invalid(
            "spec.podCIDRs",
            "[...]",
            "may specify no more than one CIDR for each IP family",
        ));
    }
    let pod_cidr = s(spec, "podCIDR");
    if !pod_cidr.is_empty() && !is_cidr(pod_cidr) {
        out.push(Cause::invalid(
            "spec.podCIDR",
            q(pod_cidr),
            "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        ));
    }
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (i, t) in arr(spec, "taints").iter().enumerate() {
        let p = format!("spec.taints[{i}]");
        let key = s(t, "key");
        if key.is_empty() {
            out.push(Cause::required(format!("{p}.key")));
        } else {
            out.extend(invalid_all(
                &format!("{p}.key"),
                key,
                is_qualified_name(key),
            ));
        }
        let value = s(t, "value");
        out.extend(invalid_all(
            &format!("{p}.value"),
            value,
            is_valid_label_value(value),
        ));
        out.extend(validate_enum(
            &t["effect"],
            &format!("{p}.effect"),
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
            true,
        ));
        let k = (key, s(t, "effect"));
        if seen.contains(&k) {
            out.push(Cause::duplicate(
                p,
                format!(
                    "taints must be unique by key and effect pair: {}:{}",
                    k.0, k.1
                ),
            ));
        }
        seen.push(k);
    }
    if let Some(old) = old {
        let os = &old["spec"];
        let old_cidrs = arr(os, "podCIDRs");
        if !old_cidrs.is_empty() && old_cidrs != cidrs {
            out.push(Cause::forbidden(
                "spec.podCIDRs",
                "node updates may not change podCIDR except from \"\" to valid",
            ));
        }
        let old_pid = s(os, "providerID");
        if !old_pid.is_empty() && old_pid != s(spec, "providerID") {
            out.push(Cause::forbidden(
                "spec.providerID",
                "node updates may not change providerID except from \"\" to valid",
            ));
        }
    }
    out
}

pub const NODE_COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column { name: "Status", kind: "string", format: "", description: "The status of the node", priority: 0 },
    Column { name: "Roles", kind: "string", format: "", description: "The roles of the node", priority: 0 },
    AGE_COLUMN,
    Column { name: "Version", kind: "string", format: "", description: "Kubelet Version reported by the node.", priority: 0 },
    Column { name: "Internal-IP", kind: "string", format: "", description: "List of addresses reachable to the node.", priority: 1 },
    Column { name: "External-IP", kind: "string", format: "", description: "List of addresses reachable to the node.", priority: 1 },
    Column { name: "OS-Image", kind: "string", format: "", description: "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).", priority: 1 },
    Column { name: "Kernel-Version", kind: "string", format: "", description: "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).", priority: 1 },
    Column { name: "Container-Runtime", kind: "string", format: "", description: "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).", priority: 1 },
];

pub fn node_row(node: &Value, now: Timestamp) -> Vec<Value> {
    let status = &node["status"];
    // The last Ready condition wins, as in upstream's condition map.
    let ready = arr(status, "conditions")
        .iter()
        .rev()
        .find(|c| s(c, "type") == "Ready");
    let mut st = vec![match ready {
        Some(c) if s(c, "status") == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    }];
    if flag(&node["spec"], "unschedulable") {
        st.push("SchedulingDisabled".to_string());
    }
    let mut roles: Vec<String> = Vec::new();
    for (k, v) in crate::meta::labels(node) {
        let role = if let Some(r) = k.strip_prefix("node-role.kubernetes.io/") {
            r
        } else if k == "kubernetes.io/role" {
            v
        } else {
            ""
        };
        if !role.is_empty() && !roles.iter().any(|x| x == role) {
            roles.push(role.to_string());
        }
    }
    roles.sort();
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    };
    let addr = |ty: &str| {
        arr(status, "addresses")
            .iter()
            .find(|a| s(a, "type") == ty)
            .map(|a| s(a, "address").to_string())
            .unwrap_or_else(|| "<none>".to_string())
    };
    let info = &status["nodeInfo"];
    let unknown = |k: &str| {
        let v = s(info, k);
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v.to_string()
        }
    };
    vec![
        json!(crate::meta::name(node)),
        json!(st.join(",")),
        json!(roles),
        json!(crate::meta::age(node, now)),
        json!(s(info, "kubeletVersion")),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(unknown("osImage")),
        json!(unknown("kernelVersion")),
        json!(unknown("containerRuntimeVersion")),
    ]
}

pub const NODE_FIELDS: &[&str] = &["spec.unschedulable"];

pub fn node_field(node: &Value, label: &str) -> Option<String> {
    match label {
        "spec.unschedulable" => Some(flag(&node["spec"], "unschedulable").to_string()),
        _ => None,
    }
}

// ----------------------------------------------------------------- Service

/// Headless services without a selector default to `RequireDualStack`.
fn is_headless_without_selector(spec: &Value) -> bool {
    s(spec, "clusterIP") == "None" && spec["selector"].as_object().is_none_or(|m| m.is_empty())
}

pub fn service_defaults(svc: &mut Value) {
    let Some(spec) = existing_obj_mut(svc, "spec") else {
        return;
    };
    let headless_no_selector = is_headless_without_selector(spec);
    let Some(m) = spec.as_object_mut() else {
        return;
    };
    set_default_str(m, "type", "ClusterIP");
    set_default_str(m, "sessionAffinity", "None");
    let ty = m
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match m.get("sessionAffinity").and_then(Value::as_str) {
        Some("None") => {
            m.remove("sessionAffinityConfig");
        }
        Some("ClientIP") => {
            let has_timeout = m
                .get("sessionAffinityConfig")
                .and_then(|c| c.get("clientIP"))
                .and_then(|c| c.get("timeoutSeconds"))
                .is_some_and(|t| !t.is_null());
            if !has_timeout {
                m.insert(
                    "sessionAffinityConfig".into(),
                    json!({"clientIP": {"timeoutSeconds": 10800}}),
                );
            }
        }
        _ => {}
    }
    if let Some(ports) = m.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default_str(p, "protocol", "TCP");
            let empty_target = match p.get("targetPort") {
                None | Some(Value::Null) => true,
                Some(Value::Number(n)) => n.as_i64() == Some(0),
                Some(Value::String(t)) => t.is_empty(),
                _ => false,
            };
            if empty_target {
                if let Some(port) = p.get("port").cloned() {
                    p.insert("targetPort".into(), port);
                }
            }
        }
    }
    let external_ips = m
        .get("externalIPs")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    // Fields that only fit other types are dropped (upstream's strategy drops
    // them when the type changes; without the old object, drop them always).
    let externally_accessible =
        ty == "NodePort" || ty == "LoadBalancer" || (ty == "ClusterIP" && external_ips);
    if externally_accessible {
        set_default_str(m, "externalTrafficPolicy", "Cluster");
    } else {
        m.remove("externalTrafficPolicy");
    }
    if ty != "NodePort" && ty != "LoadBalancer" {
        if let Some(ports) = m.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                p.remove("nodePort");
            }
        }
    }
    if ty != "LoadBalancer" || m.get("externalTrafficPolicy") != Some(&json!("Local")) {
        m.remove("healthCheckNodePort");
    }
    if matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        set_default_str(m, "internalTrafficPolicy", "Cluster");
    }
    if ty == "LoadBalancer" {
        set_default(m, "allocateLoadBalancerNodePorts", json!(true));
    } else {
        m.remove("allocateLoadBalancerNodePorts");
    }
    if ty == "ExternalName" {
        for f in [
            "clusterIP",
            "clusterIPs",
            "ipFamilies",
            "ipFamilyPolicy",
            "internalTrafficPolicy",
        ] {
            m.remove(f);
        }
        return;
    }
    let v6 = m
        .get("clusterIP")
        .and_then(Value::as_str)
        .is_some_and(|ip| ip.contains(':'));
    let families = m
        .get("ipFamilies")
        .and_then(Value::as_array)
        .map(Vec::len)
        .unwrap_or(0);
    if families == 0 {
        m.insert(
            "ipFamilies".into(),
            json!([if v6 { "IPv6" } else { "IPv4" }]),
        );
    }
    let policy = if headless_no_selector {
        "RequireDualStack"
    } else if families > 1 {
        "PreferDualStack"
    } else {
        "SingleStack"
    };
    set_default_str(m, "ipFamilyPolicy", policy);
}

pub fn service_prepare(svc: &mut Value) {
    if let Some(m) = svc.as_object_mut() {
        m.insert("status".into(), json!({"loadBalancer": {}}));
    }
}

pub fn service_validate(svc: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(svc, old, NameRule::Dns1035);
    let spec = &svc["spec"];
    out.extend(validate_enum(
        &spec["type"],
        "spec.type",
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        true,
    ));
    let ty = s(spec, "type");
    let cluster_ip = s(spec, "clusterIP");
    let headless = cluster_ip == "None";
    if !cluster_ip.is_empty() && !headless && !is_ip(cluster_ip) {
        out.push(Cause::invalid(
            "spec.clusterIPs[0]",
            q(cluster_ip),
            "must be empty, 'None', or a valid IP address",
        ));
    }
    if headless && (ty == "NodePort" || ty == "LoadBalancer") {
        out.push(Cause::invalid(
            "spec.clusterIPs[0]",
            q(cluster_ip),
            format!("may not be set to 'None' for {ty} services"),
        ));
    }
    if ty == "ExternalName" {
        let en = s(spec, "externalName");
        if en.is_empty() {
            out.push(Cause::required("spec.externalName"));
        } else {
            let trimmed = en.strip_suffix('.').unwrap_or(en);
            out.extend(invalid_all(
                "spec.externalName",
                en,
                is_dns1123_subdomain(trimmed),
            ));
        }
        if !cluster_ip.is_empty() && !headless {
            out.push(Cause::forbidden(
                "spec.clusterIP",
                "may not be set for ExternalName services",
            ));
        }
    }
    let ports = arr(spec, "ports");
    if ports.is_empty() && ty != "ExternalName" && !headless {
        out.push(Cause::required("spec.ports"));
    }
    let mut names: Vec<&str> = Vec::new();
    let mut keys: Vec<(i64, &str)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let name = s(p, "name");
        if ports.len() > 1 && name.is_empty() {
            out.push(Cause::required(format!("{pp}.name")));
        } else if !name.is_empty() {
            out.extend(invalid_all(
                &format!("{pp}.name"),
                name,
                is_dns1123_label(name),
            ));
            if names.contains(&name) {
                out.push(Cause::duplicate(format!("{pp}.name"), q(name)));
            }
            names.push(name);
        }
        out.extend(validate_port_number(&p["port"], &format!("{pp}.port")));
        out.extend(validate_enum(
            &p["protocol"],
            &format!("{pp}.protocol"),
            &["SCTP", "TCP", "UDP"],
            true,
        ));
        out.extend(validate_port_num_or_name(
            &p["targetPort"],
            &format!("{pp}.targetPort"),
        ));
        let node_port = int(p, "nodePort").unwrap_or(0);
        if node_port != 0 {
            out.extend(validate_range(
                &p["nodePort"],
                &format!("{pp}.nodePort"),
                1,
                65535,
            ));
            if ty == "ClusterIP" || ty == "ExternalName" {
                out.push(Cause::forbidden(
                    format!("{pp}.nodePort"),
                    format!("may not be used when `type` is '{ty}'"),
                ));
            }
        }
        let key = (int(p, "port").unwrap_or(0), s(p, "protocol"));
        if keys.contains(&key) {
            out.push(Cause::duplicate(pp, format!("{}/{}", key.0, key.1)));
        }
        keys.push(key);
    }
    out.extend(validate_enum(
        &spec["sessionAffinity"],
        "spec.sessionAffinity",
        &["ClientIP", "None"],
        true,
    ));
    let timeout = &spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"];
    if s(spec, "sessionAffinity") == "ClientIP" {
        out.extend(validate_range(
            timeout,
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            1,
            86400,
        ));
    } else if has(spec, "sessionAffinityConfig") && s(spec, "sessionAffinity") == "None" {
        out.push(Cause::invalid(
            "spec.sessionAffinityConfig",
            "{}",
            "must not be set when session affinity is None",
        ));
    }
    for (i, ip) in arr(spec, "externalIPs").iter().enumerate() {
        let ip = ip.as_str().unwrap_or("");
        if !is_ip(ip) {
            out.push(Cause::invalid(
                format!("spec.externalIPs[{i}]"),
                q(ip),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
    }
    out.extend(validate_enum(
        &spec["externalTrafficPolicy"],
        "spec.externalTrafficPolicy",
        &["Cluster", "Local"],
        false,
    ));
    out.extend(validate_enum(
        &spec["internalTrafficPolicy"],
        "spec.internalTrafficPolicy",
        &["Cluster", "Local"],
        false,
    ));
    out.extend(validate_enum(
        &spec["ipFamilyPolicy"],
        "spec.ipFamilyPolicy",
        &["PreferDualStack", "RequireDualStack", "SingleStack"],
        false,
    ));
    for (i, f) in arr(spec, "ipFamilies").iter().enumerate() {
        out.extend(validate_enum(
            f,
            &format!("spec.ipFamilies[{i}]"),
            &["IPv4", "IPv6"],
            true,
        ));
    }
    out.extend(super::validation::validate_labels(
        &spec["selector"],
        "spec.selector",
    ));
    if let Some(old) = old {
        let os = &old["spec"];
        let external = ty == "ExternalName" || s(os, "type") == "ExternalName";
        let both_headless = headless && s(os, "clusterIP") == "None";
        let old_ip = s(os, "clusterIP");
        if !external && !both_headless && !old_ip.is_empty() && cluster_ip != old_ip {
            out.push(Cause::invalid(
                "spec.clusterIPs[0]",
                format!("[]string{{{}}}", q(cluster_ip)),
                "may not change once set",
            ));
        }
    }
    out
}

pub const SERVICE_COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column { name: "Type", kind: "string", format: "", description: "type determines how the Service is exposed. Defaults to ClusterIP.", priority: 0 },
    Column { name: "Cluster-IP", kind: "string", format: "", description: "clusterIP is the IP address of the service and is usually assigned randomly.", priority: 0 },
    Column { name: "External-IP", kind: "string", format: "", description: "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.", priority: 0 },
    Column { name: "Port(s)", kind: "string", format: "", description: "The list of ports that are exposed by this service.", priority: 0 },
    AGE_COLUMN,
    Column { name: "Selector", kind: "string", format: "", description: "Route service traffic to pods with label keys and values matching this selector.", priority: 1 },
];

fn external_ip(svc: &Value) -> String {
    let spec = &svc["spec"];
    let ext: Vec<&str> = arr(spec, "externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match s(spec, "type") {
        "ClusterIP" | "NodePort" => {
            if ext.is_empty() {
                "<none>".to_string()
            } else {
                ext.join(",")
            }
        }
        "LoadBalancer" => {
            let mut lb: Vec<&str> = arr(&svc["status"]["loadBalancer"], "ingress")
                .iter()
                .map(|i| {
                    if !s(i, "ip").is_empty() {
                        s(i, "ip")
                    } else {
                        s(i, "hostname")
                    }
                })
                .filter(|x| !x.is_empty())
                .collect();
            lb.sort();
            lb.dedup();
            let mut all: Vec<&str> = lb.clone();
            all.extend(ext.iter().copied());
            if !all.is_empty() {
                all.join(",")
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => s(spec, "externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// `makePortString`: `80/TCP`, `80:30080/TCP`.
pub fn port_string(ports: &[Value]) -> String {
    let pieces: Vec<String> = ports
        .iter()
        .map(|p| {
            let port = int(p, "port").unwrap_or(0);
            let proto = s(p, "protocol");
            match int(p, "nodePort").filter(|n| *n > 0) {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect();
    pieces.join(",")
}

pub fn service_row(svc: &Value, now: Timestamp) -> Vec<Value> {
    let spec = &svc["spec"];
    let cluster_ip = arr(spec, "clusterIPs")
        .first()
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            let ip = s(spec, "clusterIP");
            if ip.is_empty() {
                "<none>".to_string()
            } else {
                ip.to_string()
            }
        });
    let mut ports = port_string(arr(spec, "ports"));
    if ports.is_empty() {
        ports = "<none>".to_string();
    }
    vec![
        json!(crate::meta::name(svc)),
        json!(s(spec, "type")),
        json!(cluster_ip),
        json!(external_ip(svc)),
        json!(ports),
        json!(crate::meta::age(svc, now)),
        json!(format_labels(&spec["selector"])),
    ]
}

pub const SERVICE_FIELDS: &[&str] = &["spec.clusterIP", "spec.type"];

pub fn service_field(svc: &Value, label: &str) -> Option<String> {
    match label {
        "spec.clusterIP" => Some(s(&svc["spec"], "clusterIP").to_string()),
        "spec.type" => Some(s(&svc["spec"], "type").to_string()),
        _ => None,
    }
}

// --------------------------------------------------------------- Endpoints

pub fn endpoints_defaults(ep: &mut Value) {
    each_obj_mut(ep, "subsets", |ss| {
        each_obj_mut(ss, "ports", |p| {
            if let Some(p) = p.as_object_mut() {
                set_default_str(p, "protocol", "TCP");
            }
        })
    });
}

pub fn endpoints_validate(ep: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(ep, old, NameRule::Subdomain);
    for (i, ss) in arr(ep, "subsets").iter().enumerate() {
        let p = format!("subsets[{i}]");
        if arr(ss, "addresses").is_empty() && arr(ss, "notReadyAddresses").is_empty() {
            out.push(required_because(
                &p,
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for list in ["addresses", "notReadyAddresses"] {
            for (j, a) in arr(ss, list).iter().enumerate() {
                let ip = s(a, "ip");
                if !is_ip(ip) {
                    out.push(Cause::invalid(
                        format!("{p}.{list}[{j}].ip"),
                        q(ip),
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    ));
                }
                let host = s(a, "hostname");
                if !host.is_empty() {
                    out.extend(invalid_all(
                        &format!("{p}.{list}[{j}].hostname"),
                        host,
                        is_dns1123_label(host),
                    ));
                }
            }
        }
        let ports = arr(ss, "ports");
        for (j, port) in ports.iter().enumerate() {
            let pp = format!("{p}.ports[{j}]");
            let name = s(port, "name");
            if ports.len() > 1 && name.is_empty() {
                out.push(Cause::required(format!("{pp}.name")));
            } else if !name.is_empty() {
                out.extend(invalid_all(
                    &format!("{pp}.name"),
                    name,
                    is_dns1123_label(name),
                ));
            }
            out.extend(validate_port_number(&port["port"], &format!("{pp}.port")));
            out.extend(validate_enum(
                &port["protocol"],
                &format!("{pp}.protocol"),
                &["SCTP", "TCP", "UDP"],
                true,
            ));
        }
    }
    out
}

pub const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column {
        name: "Endpoints",
        kind: "string",
        format: "",
        description: "The set of all endpoints is the union of all subsets.",
        priority: 0,
    },
    AGE_COLUMN,
];

/// `formatEndpoints`: at most three `ip:port`, then `+ N more...`.
pub fn format_endpoints(ep: &Value) -> String {
    let subsets = arr(ep, "subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut total = 0;
    for ss in subsets {
        let addrs = arr(ss, "addresses");
        let ports = arr(ss, "ports");
        if ports.is_empty() {
            total += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(s(a, "ip").to_string());
            }
            continue;
        }
        for port in ports {
            total += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                let ip = s(a, "ip");
                let n = int(port, "port").unwrap_or(0);
                list.push(if ip.contains(':') {
                    format!("[{ip}]:{n}")
                } else {
                    format!("{ip}:{n}")
                });
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", total - MAX)
    } else {
        joined
    }
}

pub fn endpoints_row(ep: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        json!(crate::meta::name(ep)),
        json!(format_endpoints(ep)),
        json!(crate::meta::age(ep, now)),
    ]
}

// --------------------------------------------------------------- ConfigMap

fn validate_immutable_data(obj: &Value, old: Option<&Value>, fields: &[&str]) -> Vec<Cause> {
    let mut out = Vec::new();
    let Some(old) = old else { return out };
    if old["immutable"] == json!(true) {
        for f in fields {
            if obj[*f] != old[*f] {
                out.push(Cause::forbidden(
                    *f,
                    "field is immutable when `immutable` is set",
                ));
            }
        }
        if obj["immutable"] != json!(true) {
            out.push(Cause::forbidden(
                "immutable",
                "field is immutable when `immutable` is set",
            ));
        }
    }
    out
}

pub fn config_map_validate(cm: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(cm, old, NameRule::Subdomain);
    let (c1, n1) = validate_data_keys(&cm["data"], "data", false);
    let (c2, n2) = validate_data_keys(&cm["binaryData"], "binaryData", true);
    out.extend(c1);
    out.extend(c2);
    if let (Some(d), Some(b)) = (cm["data"].as_object(), cm["binaryData"].as_object()) {
        for k in d.keys().filter(|k| b.contains_key(*k)) {
            out.push(Cause::invalid(
                format!("data[{k}]"),
                q(k),
                "duplicate of key present in binaryData",
            ));
        }
    }
    if n1 + n2 > MAX_DATA_SIZE {
        out.push(too_long("", MAX_DATA_SIZE));
    }
    out.extend(validate_immutable_data(cm, old, &["data", "binaryData"]));
    out
}

pub const CONFIG_MAP_COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column {
        name: "Data",
        kind: "string",
        format: "",
        description: "Data contains the configuration data.",
        priority: 0,
    },
    AGE_COLUMN,
];

pub fn config_map_row(cm: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        json!(crate::meta::name(cm)),
        json!(count(cm, "data") + count(cm, "binaryData")),
        json!(crate::meta::age(cm, now)),
    ]
}

// ------------------------------------------------------------------ Secret

/// `type` defaults to `Opaque`; `stringData` is merged into `data`.
pub fn secret_defaults(secret: &mut Value) {
    let Some(m) = secret.as_object_mut() else {
        return;
    };
    set_default_str(m, "type", "Opaque");
    let string_data = match m.remove("stringData") {
        Some(Value::Object(sd)) => sd,
        Some(Value::Null) | None => return,
        Some(other) => {
            // Keep a malformed value for validation to report.
            m.insert("stringData".into(), other);
            return;
        }
    };
    let data = m.entry("data").or_insert(Value::Null);
    if data.is_null() {
        *data = json!({});
    }
    if let Some(data) = data.as_object_mut() {
        for (k, v) in string_data {
            let text = match v {
                Value::String(t) => t,
                other => other.to_string(),
            };
            data.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(text)),
            );
        }
    }
}

pub fn secret_validate(secret: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(secret, old, NameRule::Subdomain);
    let (c, _) = validate_data_keys(&secret["data"], "data", true);
    out.extend(c);
    if has(secret, "stringData") {
        out.push(super::validation::wrong_type(
            "stringData",
            &secret["stringData"],
            "a map of strings",
        ));
    }
    let mut size = 0;
    if let Some(d) = secret["data"].as_object() {
        for (k, v) in d {
            if let Some(t) = v.as_str() {
                match base64::engine::general_purpose::STANDARD.decode(t) {
                    Ok(bytes) => size += bytes.len(),
                    Err(_) => out.push(Cause::invalid(
                        format!("data[{k}]"),
                        "\"<secret contents redacted>\"",
                        "a valid base64 string is required",
                    )),
                }
            }
        }
    }
    if size > MAX_DATA_SIZE {
        out.push(too_long("data", MAX_DATA_SIZE));
    }
    let data = &secret["data"];
    let has_key = |k: &str| data.get(k).is_some();
    match s(secret, "type") {
        "kubernetes.io/service-account-token" => {
            if s(
                &secret["metadata"]["annotations"],
                "kubernetes.io/service-account.name",
            )
            .is_empty()
            {
                out.push(Cause::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                ));
            }
        }
        "kubernetes.io/dockercfg" => {
            if !has_key(".dockercfg") {
                out.push(Cause::required("data[.dockercfg]"));
            }
        }
        "kubernetes.io/dockerconfigjson" => {
            if !has_key(".dockerconfigjson") {
                out.push(Cause::required("data[.dockerconfigjson]"));
            }
        }
        "kubernetes.io/basic-auth" => {
            if !has_key("username") && !has_key("password") {
                out.push(Cause::required("data[username]"));
                out.push(Cause::required("data[password]"));
            }
        }
        "kubernetes.io/ssh-auth" => {
            if s(data, "ssh-privatekey").is_empty() {
                out.push(Cause::required("data[ssh-privatekey]"));
            }
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !has_key(k) {
                    out.push(Cause::required(format!("data[{k}]")));
                }
            }
        }
        "" => out.push(Cause::required("type")),
        t => out.extend(invalid_all("type", t, is_qualified_name(t))),
    }
    if let Some(old) = old {
        out.extend(immutable(&secret["type"], &old["type"], "type"));
    }
    out.extend(validate_immutable_data(secret, old, &["data"]));
    out
}

pub const SECRET_COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column {
        name: "Type",
        kind: "string",
        format: "",
        description: "Used to facilitate programmatic handling of secret data.",
        priority: 0,
    },
    Column {
        name: "Data",
        kind: "string",
        format: "",
        description: "Data contains the secret data.",
        priority: 0,
    },
    AGE_COLUMN,
];

pub fn secret_row(secret: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        json!(crate::meta::name(secret)),
        json!(s(secret, "type")),
        json!(count(secret, "data")),
        json!(crate::meta::age(secret, now)),
    ]
}

pub const SECRET_FIELDS: &[&str] = &["type"];

pub fn secret_field(secret: &Value, label: &str) -> Option<String> {
    match label {
        "type" => Some(s(secret, "type").to_string()),
        _ => None,
    }
}

// ---------------------------------------------------------- ServiceAccount

pub fn service_account_validate(sa: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(sa, old, NameRule::Subdomain);
    for (i, sec) in arr(sa, "secrets").iter().enumerate() {
        let n = s(sec, "name");
        if !n.is_empty() {
            out.extend(invalid_all(
                &format!("secrets[{i}].name"),
                n,
                is_dns1123_subdomain(n),
            ));
        }
    }
    out
}

pub const SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column { name: "Secrets", kind: "string", format: "", description: "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.", priority: 0 },
    AGE_COLUMN,
];

pub fn service_account_row(sa: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        json!(crate::meta::name(sa)),
        json!(count(sa, "secrets")),
        json!(crate::meta::age(sa, now)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-01-01T00:10:00Z".parse().unwrap()
    }

    fn fields(c: &[Cause]) -> Vec<&str> {
        c.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn namespaces() {
        let mut ns = json!({"metadata": {"name": "team-a"}});
        namespace_prepare(&mut ns);
        namespace_defaults(&mut ns);
        assert_eq!(
            ns["metadata"]["labels"],
            json!({"kubernetes.io/metadata.name": "team-a"})
        );
        assert_eq!(ns["spec"], json!({"finalizers": ["kubernetes"]}));
        assert_eq!(ns["status"], json!({"phase": "Active"}));
        assert!(namespace_validate(&ns, None).is_empty());
        let bad = json!({"metadata": {"name": "a.b"}});
        assert_eq!(
            namespace_validate(&bad, None)[0].render(),
            "metadata.name: Invalid value: \"a.b\": must not contain dots"
        );
        assert_eq!(namespace_row(&ns, now())[1], "Active");
        assert_eq!(
            namespace_field(&ns, "status.phase").as_deref(),
            Some("Active")
        );
    }

    #[test]
    fn services() {
        let mut svc = json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}});
        service_defaults(&mut svc);
        assert_eq!(
            svc["spec"],
            json!({"selector": {"app": "web"}, "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}], "type": "ClusterIP",
                "sessionAffinity": "None", "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack"})
        );
        assert!(
            service_validate(&svc, None).is_empty(),
            "{:?}",
            service_validate(&svc, None)
        );
        let mut np = json!({"metadata": {"name": "np"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": "http"}]}});
        service_defaults(&mut np);
        assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
        assert_eq!(np["spec"]["ports"][0]["targetPort"], "http");
        let mut headless = json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "selector": {"a": "b"}}});
        service_defaults(&mut headless);
        assert_eq!(headless["spec"]["ipFamilyPolicy"], "SingleStack");
        assert!(service_validate(&headless, None).is_empty());
        let mut bare = json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}});
        service_defaults(&mut bare);
        assert_eq!(bare["spec"]["ipFamilyPolicy"], "RequireDualStack");
        // Switching a NodePort service to ClusterIP drops its node ports.
        let mut to_cip = np.clone();
        to_cip["spec"]["type"] = json!("ClusterIP");
        to_cip["spec"]["ports"][0]["nodePort"] = json!(30001);
        service_defaults(&mut to_cip);
        assert!(to_cip["spec"]["ports"][0].get("nodePort").is_none());
        assert!(to_cip["spec"].get("externalTrafficPolicy").is_none());

        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"metadata": {"name": "1web"}, "spec": {"ports": [{"port": 80}]}}),
                "metadata.name",
            ),
            (
                json!({"metadata": {"name": "web"}, "spec": {}}),
                "spec.ports",
            ),
            (
                json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 0, "targetPort": 80}]}}),
                "spec.ports[0].port",
            ),
            (
                json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 70000}]}}),
                "spec.ports[0].nodePort",
            ),
            (
                json!({"metadata": {"name": "web"}, "spec": {"type": "Fancy", "ports": [{"port": 80}]}}),
                "spec.type",
            ),
            (
                json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80, "name": "a"}, {"port": 81}]}}),
                "spec.ports[1].name",
            ),
            (
                json!({"metadata": {"name": "web"}, "spec": {"type": "ExternalName"}}),
                "spec.externalName",
            ),
        ];
        for (mut svc, field) in cases {
            service_defaults(&mut svc);
            assert_eq!(fields(&service_validate(&svc, None)), vec![field], "{svc}");
        }
        let mut old = json!({"metadata": {"name": "web"}, "spec": {"clusterIP": "10.0.0.5", "ports": [{"port": 80}]}});
        service_defaults(&mut old);
        let mut new = old.clone();
        new["spec"]["clusterIP"] = json!("10.0.0.6");
        assert_eq!(
            service_validate(&new, Some(&old))[0].render(),
            "spec.clusterIPs[0]: Invalid value: []string{\"10.0.0.6\"}: may not change once set"
        );
    }

    #[test]
    fn service_rows() {
        let svc = json!({"metadata": {"name": "web", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"type": "NodePort", "clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}], "selector": {"app": "web"}}});
        assert_eq!(
            service_row(&svc, now()),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.0.0.1"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP"),
                json!("10m"),
                json!("app=web")
            ]
        );
        let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {}}});
        assert_eq!(
            service_row(&lb, now())[2..5],
            [json!("<none>"), json!("<pending>"), json!("<none>")]
        );
        assert_eq!(
            service_field(&svc, "spec.type").as_deref(),
            Some("NodePort")
        );
    }

    #[test]
    fn endpoints() {
        let ep = json!({"metadata": {"name": "e"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}], "ports": [{"port": 80}, {"port": 443}]}]});
        assert_eq!(
            format_endpoints(&ep),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 3 more..."
        );
        let few =
            json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]});
        assert_eq!(format_endpoints(&few), "10.0.0.1:80");
        assert_eq!(format_endpoints(&json!({})), "<none>");
        let mut ep2 = ep.clone();
        endpoints_defaults(&mut ep2);
        assert_eq!(ep2["subsets"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(
            fields(&endpoints_validate(&ep2, None)),
            vec!["subsets[0].ports[0].name", "subsets[0].ports[1].name"]
        );
    }

    #[test]
    fn nodes() {
        let node = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "worker"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "addresses": [{"type": "InternalIP", "address": "10.1.0.1"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian"}}});
        let r = node_row(&node, now());
        assert_eq!(
            r[1..3],
            [
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,worker")
            ]
        );
        assert_eq!(
            r[4..],
            [
                json!("v1.33.0"),
                json!("10.1.0.1"),
                json!("<none>"),
                json!("Debian"),
                json!("<unknown>"),
                json!("<unknown>")
            ]
        );
        let not_ready = json!({"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        assert_eq!(
            node_row(&not_ready, now())[1..3],
            [json!("NotReady"), json!("<none>")]
        );
        assert_eq!(
            node_row(&json!({"metadata": {"name": "n"}}), now())[1],
            "Unknown"
        );
        assert_eq!(
            node_field(&node, "spec.unschedulable").as_deref(),
            Some("true")
        );
        let mut n = json!({"metadata": {"name": "n"}, "status": {"capacity": {"cpu": "4"}}});
        node_defaults(&mut n);
        assert_eq!(n["status"]["allocatable"], json!({"cpu": "4"}));
        let bad =
            json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "a", "effect": "Bad"}]}});
        assert_eq!(
            fields(&node_validate(&bad, None)),
            vec!["spec.taints[0].effect"]
        );
    }

    #[test]
    fn config_maps_and_secrets() {
        let cm = json!({"metadata": {"name": "c"}, "data": {"a.b": "x", "bad/key": "y"}, "binaryData": {"a.b": "eA=="}});
        assert_eq!(
            fields(&config_map_validate(&cm, None)),
            vec!["data[bad/key]", "data[a.b]"]
        );
        let old = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "1"}});
        let new = json!({"metadata": {"name": "c"}, "immutable": true, "data": {"a": "2"}});
        assert_eq!(
            config_map_validate(&new, Some(&old))[0].render(),
            "data: Forbidden: field is immutable when `immutable` is set"
        );
        assert_eq!(config_map_row(&cm, now())[1], 3);

        let mut sec = json!({"metadata": {"name": "s"}, "data": {"a": "eA=="}, "stringData": {"b": "hello", "a": "y"}});
        secret_defaults(&mut sec);
        assert_eq!(
            sec,
            json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "eQ==", "b": "aGVsbG8="}})
        );
        assert!(secret_validate(&sec, None).is_empty());
        let tls = json!({"metadata": {"name": "t"}, "type": "kubernetes.io/tls", "data": {"tls.crt": ""}});
        assert_eq!(fields(&secret_validate(&tls, None)), vec!["data[tls.key]"]);
        let mut changed = sec.clone();
        changed["type"] = json!("kubernetes.io/tls");
        changed["data"] = json!({"tls.crt": "", "tls.key": ""});
        assert_eq!(fields(&secret_validate(&changed, Some(&sec))), vec!["type"]);
        assert_eq!(secret_row(&sec, now())[1..3], [json!("Opaque"), json!(2)]);
        assert_eq!(secret_field(&sec, "type").as_deref(), Some("Opaque"));
        let sa = json!({"metadata": {"name": "default"}, "secrets": [{"name": "x"}]});
        assert_eq!(service_account_row(&sa, now())[1], 1);
    }
}
