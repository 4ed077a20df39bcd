//! Lease, EndpointSlice, PriorityClass and PodDisruptionBudget.

use super::util::{arr, each_obj_mut, has, int, int_or_string, q, s, set_default, set_default_str};
use super::validation::{
    immutable, invalid_all, is_dns1123_label, is_dns1123_subdomain, required_because,
    validate_enum, validate_int_or_percent, validate_label_selector, validate_nonnegative,
    validate_object_meta, validate_range, NameRule,
};
use super::{Column, AGE_COLUMN, NAME_COLUMN};
use crate::error::Cause;
use jiff::Timestamp;
use serde_json::{json, Value};

// ------------------------------------------------------------------- Lease

pub fn lease_validate(lease: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(lease, old, NameRule::Subdomain);
    let spec = &lease["spec"];
    if let Some(d) = spec.get("leaseDurationSeconds").filter(|v| !v.is_null()) {
        if d.as_i64().is_none_or(|n| n <= 0) {
            out.push(Cause::invalid(
                "spec.leaseDurationSeconds",
                d.to_string(),
                "must be greater than 0",
            ));
        }
    }
    out.extend(validate_nonnegative(
        &spec["leaseTransitions"],
        "spec.leaseTransitions",
    ));
    if has(spec, "preferredHolder") && !has(spec, "strategy") {
        out.push(Cause::forbidden(
            "spec.preferredHolder",
            "may only be specified if `strategy` is defined",
        ));
    }
    out
}

pub const LEASE_COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column {
        name: "Holder",
        kind: "string",
        format: "",
        description: "holderIdentity contains the identity of the holder of a current lease.",
        priority: 0,
    },
    AGE_COLUMN,
];

pub fn lease_row(lease: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        json!(crate::meta::name(lease)),
        json!(s(&lease["spec"], "holderIdentity")),
        json!(crate::meta::age(lease, now)),
    ]
}

// ----------------------------------------------------------- EndpointSlice

pub fn endpoint_slice_defaults(es: &mut Value) {
    each_obj_mut(es, "ports", |p| {
        if let Some(p) = p.as_object_mut() {
            set_default(p, "name", json!(""));
            set_default_str(p, "protocol", "TCP");
        }
    });
}

pub fn endpoint_slice_validate(es: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(es, old, NameRule::Subdomain);
    let address_type = s(es, "addressType");
    out.extend(validate_enum(
        &es["addressType"],
        "addressType",
        &["IPv4", "IPv6", "FQDN"],
        true,
    ));
    let endpoints = arr(es, "endpoints");
    if endpoints.len() > 1000 {
        out.push(Cause {
            reason: "FieldValueTooMany",
            field: "endpoints".into(),
            message: format!(
                "Too many: {}: must have at most 1000 items",
                endpoints.len()
            ),
        });
    }
    for (i, ep) in endpoints.iter().enumerate() {
        let p = format!("endpoints[{i}]");
        let addrs = arr(ep, "addresses");
        if addrs.is_empty() {
            out.push(required_because(
                &format!("{p}.addresses"),
                "must contain at least 1 address",
            ));
        } else if addrs.len() > 100 {
            out.push(Cause {
                reason: "FieldValueTooMany",
                field: format!("{p}.addresses"),
                message: format!("Too many: {}: must have at most 100 items", addrs.len()),
            });
        }
        for (j, a) in addrs.iter().enumerate() {
            let a = a.as_str().unwrap_or("");
            let ap = format!("{p}.addresses[{j}]");
            match address_type {
                "IPv4" if a.parse::<std::net::Ipv4Addr>().is_err() => {
                    out.push(Cause::invalid(ap, q(a), "must be a valid IPv4 address"))
                }
                "IPv6" if a.parse::<std::net::Ipv6Addr>().is_err() => {
                    out.push(Cause::invalid(ap, q(a), "must be a valid IPv6 address"))
                }
                "FQDN" => out.extend(invalid_all(&ap, a, is_dns1123_subdomain(a))),
                _ => {}
            }
        }
        let host = s(ep, "hostname");
        if !host.is_empty() {
            out.extend(invalid_all(
                &format!("{p}.hostname"),
                host,
                is_dns1123_label(host),
            ));
        }
        let node = s(ep, "nodeName");
        if !node.is_empty() {
            out.extend(invalid_all(
                &format!("{p}.nodeName"),
                node,
                is_dns1123_subdomain(node),
            ));
        }
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, port) in arr(es, "ports").iter().enumerate() {
        let p = format!("ports[{i}]");
        let name = s(port, "name");
        if !name.is_empty() {
            out.extend(invalid_all(
                &format!("{p}.name"),
                name,
                is_dns1123_label(name),
            ));
        }
        if names.contains(&name) {
            out.push(Cause::duplicate(format!("{p}.name"), q(name)));
        }
        names.push(name);
        if port["port"].as_i64() != Some(0) {
            out.extend(validate_range(
                &port["port"],
                &format!("{p}.port"),
                1,
                65535,
            ));
        }
        out.extend(validate_enum(
            &port["protocol"],
            &format!("{p}.protocol"),
            &["SCTP", "TCP", "UDP"],
            true,
        ));
    }
    if let Some(old) = old {
        out.extend(immutable(
            &es["addressType"],
            &old["addressType"],
            "addressType",
        ));
    }
    out
}

pub const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column {
        name: "AddressType",
        kind: "string",
        format: "",
        description: "addressType specifies the type of address carried by this EndpointSlice.",
        priority: 0,
    },
    Column {
        name: "Ports",
        kind: "string",
        format: "",
        description:
            "ports specifies the list of network ports exposed by each endpoint in this slice.",
        priority: 0,
    },
    Column {
        name: "Endpoints",
        kind: "string",
        format: "",
        description: "endpoints is a list of unique endpoints in this slice.",
        priority: 0,
    },
    AGE_COLUMN,
];

fn list_with_more(list: Vec<String>, count: usize) -> String {
    const MAX: usize = 3;
    let joined = list.join(",");
    if count > MAX {
        format!("{joined} + {} more...", count - MAX)
    } else if joined.is_empty() {
        "<unset>".to_string()
    } else {
        joined
    }
}

pub fn endpoint_slice_row(es: &Value, now: Timestamp) -> Vec<Value> {
    let ports = arr(es, "ports");
    let port_list: Vec<String> = ports
        .iter()
        .take(3)
        .map(|p| match (int(p, "port"), p["name"].as_str()) {
            (Some(n), _) => n.to_string(),
            (None, Some(name)) => name.to_string(),
            (None, None) => "*".to_string(),
        })
        .collect();
    let addrs: Vec<&Value> = arr(es, "endpoints")
        .iter()
        .flat_map(|e| arr(e, "addresses"))
        .collect();
    let addr_list: Vec<String> = addrs
        .iter()
        .take(3)
        .map(|a| a.as_str().unwrap_or("").to_string())
        .collect();
    vec![
        json!(crate::meta::name(es)),
        json!(s(es, "addressType")),
        json!(list_with_more(port_list, ports.len())),
        json!(list_with_more(addr_list, addrs.len())),
        json!(crate::meta::age(es, now)),
    ]
}

// ----------------------------------------------------------- PriorityClass

pub const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;
const SYSTEM_CLASSES: [(&str, i64); 2] = [
    ("system-node-critical", 2_000_001_000),
    ("system-cluster-critical", 2_000_000_000),
];

pub fn priority_class_defaults(pc: &mut Value) {
    if let Some(m) = pc.as_object_mut() {
        set_default_str(m, "preemptionPolicy", "PreemptLowerPriority");
    }
}

pub fn priority_class_validate(pc: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(pc, old, NameRule::Subdomain);
    let name = crate::meta::name(pc);
    let value = int(pc, "value").unwrap_or(0);
    if !pc["value"].is_null() && !pc["value"].is_i64() {
        out.push(super::validation::wrong_type(
            "value",
            &pc["value"],
            "an integer",
        ));
    }
    if name.starts_with("system-") {
        let err = match SYSTEM_CLASSES.iter().find(|(n, _)| *n == name) {
            Some((_, v)) if *v != value => {
                Some(format!("value of {name} PriorityClass must be {v}"))
            }
            Some(_) if pc["globalDefault"] == json!(true) => Some(format!(
                "globalDefault of {name} PriorityClass must be false"
            )),
            Some(_) => None,
            None => Some(format!("{name} is not a known system priority class")),
        };
        if let Some(err) = err {
            out.push(Cause::forbidden("metadata.name", format!("priority class names with 'system-' prefix are reserved for system use only. error: {err}")));
        }
    } else if value > HIGHEST_USER_PRIORITY {
        out.push(Cause::forbidden(
            "value",
            format!("maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"),
        ));
    }
    out.extend(validate_enum(
        &pc["preemptionPolicy"],
        "preemptionPolicy",
        &["Never", "PreemptLowerPriority"],
        false,
    ));
    if let Some(old) = old {
        if pc["value"] != old["value"] {
            out.push(Cause::forbidden(
                "value",
                "may not be changed in an update.",
            ));
        }
        out.extend(immutable(
            &pc["preemptionPolicy"],
            &old["preemptionPolicy"],
            "preemptionPolicy",
        ));
    }
    out
}

pub const PRIORITY_CLASS_COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column { name: "Value", kind: "integer", format: "", description: "value represents the integer value of this priority class.", priority: 0 },
    Column { name: "Global-Default", kind: "boolean", format: "", description: "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class.", priority: 0 },
    AGE_COLUMN,
    Column { name: "PreemptionPolicy", kind: "string", format: "", description: "preemptionPolicy is the Policy for preempting pods with lower priority.", priority: 0 },
];

pub fn priority_class_row(pc: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        json!(crate::meta::name(pc)),
        json!(int(pc, "value").unwrap_or(0)),
        json!(pc["globalDefault"].as_bool().unwrap_or(false)),
        json!(crate::meta::age(pc, now)),
        json!(s(pc, "preemptionPolicy")),
    ]
}

// ----------------------------------------------------- PodDisruptionBudget

pub fn pdb_prepare(pdb: &mut Value) {
    if let Some(m) = pdb.as_object_mut() {
        m.insert("status".into(), json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}));
    }
}

pub fn pdb_validate(pdb: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out = validate_object_meta(pdb, old, NameRule::Subdomain);
    let spec = &pdb["spec"];
    if has(spec, "minAvailable") && has(spec, "maxUnavailable") {
        out.push(Cause::invalid(
            "spec",
            "policy.PodDisruptionBudgetSpec{...}",
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    out.extend(validate_int_or_percent(
        &spec["minAvailable"],
        "spec.minAvailable",
        true,
    ));
    out.extend(validate_int_or_percent(
        &spec["maxUnavailable"],
        "spec.maxUnavailable",
        true,
    ));
    out.extend(validate_label_selector(&spec["selector"], "spec.selector"));
    out.extend(validate_enum(
        &spec["unhealthyPodEvictionPolicy"],
        "spec.unhealthyPodEvictionPolicy",
        &["AlwaysAllow", "IfHealthyBudget"],
        false,
    ));
    let st = &pdb["status"];
    if st.is_object() {
        for f in [
            "disruptionsAllowed",
            "currentHealthy",
            "desiredHealthy",
            "expectedPods",
            "observedGeneration",
        ] {
            out.extend(validate_nonnegative(&st[f], &format!("status.{f}")));
        }
    }
    out
}

pub const PDB_COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column {
        name: "Min Available",
        kind: "string",
        format: "",
        description: "The minimum number of pods that must be available.",
        priority: 0,
    },
    Column {
        name: "Max Unavailable",
        kind: "string",
        format: "",
        description: "The maximum number of pods that may be unavailable.",
        priority: 0,
    },
    Column {
        name: "Allowed Disruptions",
        kind: "integer",
        format: "",
        description: "Calculated number of pods that may be disrupted at this time.",
        priority: 0,
    },
    AGE_COLUMN,
];

pub fn pdb_row(pdb: &Value, now: Timestamp) -> Vec<Value> {
    let spec = &pdb["spec"];
    let show = |v: &Value| {
        if v.is_null() {
            "N/A".to_string()
        } else {
            int_or_string(v)
        }
    };
    vec![
        json!(crate::meta::name(pdb)),
        json!(show(&spec["minAvailable"])),
        json!(show(&spec["maxUnavailable"])),
        json!(int(&pdb["status"], "disruptionsAllowed").unwrap_or(0)),
        json!(crate::meta::age(pdb, now)),
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
    fn leases() {
        let l = json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}});
        assert!(lease_validate(&l, None).is_empty());
        assert_eq!(lease_row(&l, now())[1], "me");
        let bad = json!({"metadata": {"name": "l"}, "spec": {"leaseDurationSeconds": 0}});
        assert_eq!(
            lease_validate(&bad, None)[0].render(),
            "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"
        );
    }

    #[test]
    fn endpoint_slices() {
        let mut es = json!({"metadata": {"name": "web-abc"}, "addressType": "IPv4", "ports": [{"port": 80}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}, {"addresses": ["10.0.0.3", "10.0.0.4"]}]});
        endpoint_slice_defaults(&mut es);
        assert_eq!(
            es["ports"][0],
            json!({"port": 80, "name": "", "protocol": "TCP"})
        );
        assert!(endpoint_slice_validate(&es, None).is_empty());
        assert_eq!(
            endpoint_slice_row(&es, now())[1..4],
            [
                json!("IPv4"),
                json!("80"),
                json!("10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...")
            ]
        );
        let mut bad = es.clone();
        bad["endpoints"][0]["addresses"][0] = json!("fd00::1");
        assert_eq!(
            fields(&endpoint_slice_validate(&bad, None)),
            vec!["endpoints[0].addresses[0]"]
        );
        let mut v6 = es.clone();
        v6["addressType"] = json!("IPv6");
        v6["endpoints"] = json!([]);
        assert_eq!(
            fields(&endpoint_slice_validate(&v6, Some(&es))),
            vec!["addressType"]
        );
        assert_eq!(
            endpoint_slice_row(&json!({"metadata": {"name": "e"}}), now())[2..4],
            [json!("<unset>"), json!("<unset>")]
        );
    }

    #[test]
    fn priority_classes() {
        let mut pc = json!({"metadata": {"name": "high"}, "value": 1000});
        priority_class_defaults(&mut pc);
        assert_eq!(pc["preemptionPolicy"], "PreemptLowerPriority");
        assert!(priority_class_validate(&pc, None).is_empty());
        assert_eq!(
            priority_class_row(&pc, now())[1..],
            [
                json!(1000),
                json!(false),
                json!("<unknown>"),
                json!("PreemptLowerPriority")
            ]
        );
        let too_high = json!({"metadata": {"name": "x"}, "value": 2_000_000_000});
        assert_eq!(
            priority_class_validate(&too_high, None)[0].render(),
            "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"
        );
        let system = json!({"metadata": {"name": "system-node-critical"}, "value": 2_000_001_000});
        assert!(priority_class_validate(&system, None).is_empty());
        let fake = json!({"metadata": {"name": "system-mine"}, "value": 1});
        assert_eq!(
            fields(&priority_class_validate(&fake, None)),
            vec!["metadata.name"]
        );
        let mut changed = pc.clone();
        changed["value"] = json!(5);
        assert_eq!(
            fields(&priority_class_validate(&changed, Some(&pc))),
            vec!["value"]
        );
    }

    #[test]
    fn pdbs() {
        let pdb = json!({"metadata": {"name": "p"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}, "status": {"disruptionsAllowed": 2}});
        assert!(pdb_validate(&pdb, None).is_empty());
        assert_eq!(
            pdb_row(&pdb, now())[1..4],
            [json!("1"), json!("N/A"), json!(2)]
        );
        let both = json!({"metadata": {"name": "p"}, "spec": {"minAvailable": 1, "maxUnavailable": "150%"}});
        assert_eq!(
            fields(&pdb_validate(&both, None)),
            vec!["spec", "spec.maxUnavailable"]
        );
        let mut fresh = pdb.clone();
        pdb_prepare(&mut fresh);
        assert_eq!(fresh["status"]["expectedPods"], 0);
    }
}
