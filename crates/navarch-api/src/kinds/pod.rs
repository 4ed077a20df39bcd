//! Pods and the pod spec shared by every workload's template: defaults
//! (`SetDefaults_Pod`, `SetDefaults_PodSpec`, containers, probes, volumes),
//! validation, QoS class, the kubectl status column and field selectors.

use super::util::{
    arr, each_obj_mut, flag, has, int, obj_mut, parse_quantity, q, s, set_default, set_default_str,
    show,
};
use super::validation::{
    invalid_all, is_dns1123_label, is_dns1123_subdomain, is_env_var_name, is_ip, is_qualified_name,
    is_valid_port_name, not_found, required_because, validate_annotations, validate_enum,
    validate_labels, validate_nonnegative, validate_port_num_or_name, validate_range,
    validate_resource_list, wrong_type,
};
use super::{Column, AGE_COLUMN, NAME_COLUMN};
use crate::error::Cause;
use jiff::Timestamp;
use serde_json::{json, Value};

// ---------------------------------------------------------------- defaults

/// `SetDefaults_Container` plus the defaults of everything a container holds.
fn default_container(c: &mut Value) {
    let image = s(c, "image").to_string();
    let Some(m) = c.as_object_mut() else { return };
    if matches!(m.get("imagePullPolicy"), None | Some(Value::Null))
        || m.get("imagePullPolicy") == Some(&json!(""))
    {
        let policy = if image_tag(&image) == "latest" {
            "Always"
        } else {
            "IfNotPresent"
        };
        m.insert("imagePullPolicy".into(), json!(policy));
    }
    set_default_str(m, "terminationMessagePath", "/dev/termination-log");
    set_default_str(m, "terminationMessagePolicy", "File");
    set_default(m, "resources", json!({}));
    each_obj_mut(c, "ports", |p| {
        if let Some(p) = p.as_object_mut() {
            set_default_str(p, "protocol", "TCP");
        }
    });
    each_obj_mut(c, "env", |e| {
        if let Some(fr) = e
            .get_mut("valueFrom")
            .and_then(|v| v.get_mut("fieldRef"))
            .and_then(Value::as_object_mut)
        {
            set_default_str(fr, "apiVersion", "v1");
        }
    });
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
            for (k, d) in [
                ("timeoutSeconds", 1),
                ("periodSeconds", 10),
                ("successThreshold", 1),
                ("failureThreshold", 3),
            ] {
                if matches!(p.get(k), None | Some(Value::Null)) || p.get(k) == Some(&json!(0)) {
                    p.insert(k.into(), json!(d));
                }
            }
        }
        if let Some(p) = c.get_mut(probe) {
            default_handler(p);
        }
    }
    if let Some(lc) = c.get_mut("lifecycle") {
        for h in ["postStart", "preStop"] {
            if let Some(h) = lc.get_mut(h) {
                default_handler(h);
            }
        }
    }
}

/// `SetDefaults_HTTPGetAction` inside a probe or lifecycle handler.
fn default_handler(h: &mut Value) {
    if let Some(g) = h.get_mut("httpGet").and_then(Value::as_object_mut) {
        set_default_str(g, "path", "/");
        set_default_str(g, "scheme", "HTTP");
    }
}

/// The tag `ParseImageName` would find: `latest` when neither tag nor
/// digest is given.
fn image_tag(image: &str) -> &str {
    if image.is_empty() {
        return "";
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag,
        None if digest.is_some() => "",
        None => "latest",
    }
}

/// `SetDefaults_Volume` and the volume sources' defaults.
fn default_volume(v: &mut Value) {
    let Some(m) = v.as_object_mut() else { return };
    let has_source = m.iter().any(|(k, x)| k != "name" && !x.is_null());
    if !has_source {
        m.insert("emptyDir".into(), json!({}));
    }
    for src in ["configMap", "secret", "downwardAPI", "projected"] {
        if let Some(x) = m.get_mut(src).and_then(Value::as_object_mut) {
            set_default(x, "defaultMode", json!(420));
        }
    }
    if let Some(items) = m
        .get_mut("downwardAPI")
        .and_then(|d| d.get_mut("items"))
        .and_then(Value::as_array_mut)
    {
        for it in items {
            if let Some(fr) = it.get_mut("fieldRef").and_then(Value::as_object_mut) {
                set_default_str(fr, "apiVersion", "v1");
            }
        }
    }
    if let Some(sources) = m
        .get_mut("projected")
        .and_then(|p| p.get_mut("sources"))
        .and_then(Value::as_array_mut)
    {
        for src in sources {
            if let Some(t) = src
                .get_mut("serviceAccountToken")
                .and_then(Value::as_object_mut)
            {
                set_default(t, "expirationSeconds", json!(3600));
            }
            if let Some(items) = src
                .get_mut("downwardAPI")
                .and_then(|d| d.get_mut("items"))
                .and_then(Value::as_array_mut)
            {
                for it in items {
                    if let Some(fr) = it.get_mut("fieldRef").and_then(Value::as_object_mut) {
                        set_default_str(fr, "apiVersion", "v1");
                    }
                }
            }
        }
    }
    if let Some(h) = m.get_mut("hostPath").and_then(Value::as_object_mut) {
        set_default(h, "type", json!(""));
    }
    if let Some(spec) = m
        .get_mut("ephemeral")
        .and_then(|e| e.get_mut("volumeClaimTemplate"))
        .and_then(|t| t.get_mut("spec"))
        .and_then(Value::as_object_mut)
    {
        set_default_str(spec, "volumeMode", "Filesystem");
    }
}

/// `SetDefaults_PodSpec` and everything nested in it, as applied to pods and
/// to pod templates alike.
pub fn default_pod_spec(spec: &mut Value) {
    let Some(m) = spec.as_object_mut() else {
        return;
    };
    set_default_str(m, "dnsPolicy", "ClusterFirst");
    set_default_str(m, "restartPolicy", "Always");
    set_default(m, "securityContext", json!({}));
    set_default(m, "terminationGracePeriodSeconds", json!(30));
    set_default_str(m, "schedulerName", "default-scheduler");
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        each_obj_mut(spec, list, default_container);
    }
    each_obj_mut(spec, "volumes", default_volume);
}

/// Defaults of a `PodTemplateSpec` (the pod spec inside a workload).
pub fn default_template(template: &mut Value) {
    if let Some(spec) = template.get_mut("spec").filter(|s| s.is_object()) {
        default_pod_spec(spec);
    }
}

/// `SetDefaults_Pod`: the pod spec defaults plus what only pods get.
pub fn defaults(pod: &mut Value) {
    let Some(spec) = super::util::existing_obj_mut(pod, "spec") else {
        return;
    };
    default_pod_spec(spec);
    let host_network = flag(spec, "hostNetwork");
    for list in ["containers", "initContainers"] {
        each_obj_mut(spec, list, |c| {
            // Requests default to limits, per resource.
            let limits = c
                .get("resources")
                .and_then(|r| r.get("limits"))
                .and_then(Value::as_object)
                .cloned();
            if let (Some(limits), Some(res)) = (limits, obj_mut(c, "resources")) {
                let req = res.entry("requests").or_insert(Value::Null);
                if req.is_null() {
                    *req = json!({});
                }
                if let Some(req) = req.as_object_mut() {
                    for (k, v) in limits {
                        req.entry(k).or_insert(v);
                    }
                }
            }
            if host_network {
                each_obj_mut(c, "ports", |p| {
                    let cp = p.get("containerPort").cloned().unwrap_or(Value::Null);
                    if let Some(p) = p.as_object_mut() {
                        if matches!(p.get("hostPort"), None | Some(Value::Null))
                            || p.get("hostPort") == Some(&json!(0))
                        {
                            p.insert("hostPort".into(), cp);
                        }
                    }
                });
            }
        });
    }
    if let Some(m) = spec.as_object_mut() {
        set_default(m, "enableServiceLinks", json!(true));
    }
}

/// `PrepareForCreate`: a new pod starts `Pending` with its QoS class.
pub fn prepare_create(pod: &mut Value) {
    defaults(pod);
    let qos = qos_class(&pod["spec"]);
    let mut status = json!({"phase": "Pending", "qosClass": qos});
    if !arr(&pod["spec"], "schedulingGates").is_empty() {
        status["conditions"] = json!([{
            "type": "PodScheduled", "status": "False", "reason": "SchedulingGated",
            "message": "Scheduling is blocked due to non-empty scheduling gates",
            "lastProbeTime": null, "lastTransitionTime": null,
        }]);
    }
    if let Some(m) = pod.as_object_mut() {
        m.insert("status".into(), status);
    }
}

/// `GetPodQOS`: `Guaranteed`, `Burstable` or `BestEffort` from the cpu and
/// memory requests and limits of all (init) containers.
pub fn qos_class(spec: &Value) -> &'static str {
    let mut requests: Vec<(&str, i128)> = Vec::new();
    let mut limits: Vec<(&str, i128)> = Vec::new();
    let mut guaranteed = true;
    let add = |acc: &mut Vec<(&str, i128)>, name: &'static str, n: i128| match acc
        .iter_mut()
        .find(|(k, _)| *k == name)
    {
        Some((_, v)) => *v += n,
        None => acc.push((name, n)),
    };
    let containers = arr(spec, "containers")
        .iter()
        .chain(arr(spec, "initContainers"));
    for c in containers {
        let res = &c["resources"];
        let mut found = 0;
        for name in ["cpu", "memory"] {
            if let Some(n) = quantity(&res["requests"][name]).filter(|n| *n > 0) {
                add(&mut requests, name, n);
            }
            if let Some(n) = quantity(&res["limits"][name]).filter(|n| *n > 0) {
                add(&mut limits, name, n);
                found += 1;
            }
        }
        if found < 2 {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed {
        for (name, req) in &requests {
            if limits.iter().find(|(k, _)| k == name).map(|(_, l)| l) != Some(req) {
                guaranteed = false;
                break;
            }
        }
    }
    if guaranteed && requests.len() == limits.len() {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn quantity(v: &Value) -> Option<i128> {
    match v {
        Value::String(t) => parse_quantity(t),
        Value::Number(n) => parse_quantity(&n.to_string()),
        _ => None,
    }
}

// -------------------------------------------------------------- validation

/// What kind of object holds the pod spec being validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecOf {
    /// A Pod: stricter image rules, no ephemeral containers on create.
    Pod,
    /// A pod template inside a workload.
    Template,
}

const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// `ValidatePodSpec` (the commonly relevant part) at `path` (`spec`,
/// `spec.template.spec`, …).
pub fn validate_pod_spec(spec: &Value, path: &str, of: SpecOf) -> Vec<Cause> {
    let mut out = Vec::new();
    if !spec.is_object() {
        if !spec.is_null() {
            out.push(wrong_type(path, spec, "an object"));
        }
        out.push(Cause::required(format!("{path}.containers")));
        return out;
    }
    // Volumes.
    let mut volume_names: Vec<&str> = Vec::new();
    for (i, v) in arr(spec, "volumes").iter().enumerate() {
        let p = format!("{path}.volumes[{i}]");
        out.extend(validate_volume(v, &p));
        let name = s(v, "name");
        if !name.is_empty() {
            if volume_names.contains(&name) {
                out.push(Cause::duplicate(format!("{p}.name"), q(name)));
            }
            volume_names.push(name);
        }
    }
    // Containers.
    match spec.get("containers") {
        Some(Value::Array(a)) if !a.is_empty() => {}
        Some(Value::Array(_)) | None | Some(Value::Null) => {
            out.push(Cause::required(format!("{path}.containers")))
        }
        Some(other) => out.push(wrong_type(
            &format!("{path}.containers"),
            other,
            "a list of containers",
        )),
    }
    if of == SpecOf::Pod && !arr(spec, "ephemeralContainers").is_empty() {
        out.push(Cause::forbidden(
            format!("{path}.ephemeralContainers"),
            "cannot be set on create",
        ));
    }
    let host_network = flag(spec, "hostNetwork");
    let mut names: Vec<&str> = Vec::new();
    for list in CONTAINER_LISTS {
        for (i, c) in arr(spec, list).iter().enumerate() {
            let p = format!("{path}.{list}[{i}]");
            let name = s(c, "name");
            if !name.is_empty() {
                if names.contains(&name) {
                    out.push(Cause::duplicate(format!("{p}.name"), q(name)));
                }
                names.push(name);
            }
            out.extend(validate_container(
                c,
                &p,
                list,
                of,
                &volume_names,
                host_network,
            ));
        }
    }
    out.extend(validate_enum(
        &spec["restartPolicy"],
        &format!("{path}.restartPolicy"),
        &["Always", "OnFailure", "Never"],
        true,
    ));
    out.extend(validate_enum(
        &spec["dnsPolicy"],
        &format!("{path}.dnsPolicy"),
        &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
        true,
    ));
    if s(spec, "dnsPolicy") == "None" && !has(spec, "dnsConfig") {
        out.push(required_because(
            &format!("{path}.dnsConfig"),
            "must provide `dnsConfig` when `dnsPolicy` is None",
        ));
    }
    out.extend(validate_labels(
        &spec["nodeSelector"],
        &format!("{path}.nodeSelector"),
    ));
    for f in [
        "serviceAccountName",
        "serviceAccount",
        "nodeName",
        "priorityClassName",
    ] {
        let v = s(spec, f);
        if !v.is_empty() {
            out.extend(invalid_all(
                &format!("{path}.{f}"),
                v,
                is_dns1123_subdomain(v),
            ));
        }
    }
    for f in ["hostname", "subdomain"] {
        let v = s(spec, f);
        if !v.is_empty() {
            out.extend(invalid_all(&format!("{path}.{f}"), v, is_dns1123_label(v)));
        }
    }
    out.extend(validate_range(
        &spec["activeDeadlineSeconds"],
        &format!("{path}.activeDeadlineSeconds"),
        1,
        i64::from(i32::MAX),
    ));
    for (i, t) in arr(spec, "tolerations").iter().enumerate() {
        out.extend(validate_toleration(t, &format!("{path}.tolerations[{i}]")));
    }
    for (i, g) in arr(spec, "readinessGates").iter().enumerate() {
        let ct = s(g, "conditionType");
        out.extend(invalid_all(
            &format!("{path}.readinessGates[{i}].conditionType"),
            ct,
            is_qualified_name(ct),
        ));
    }
    for (i, g) in arr(spec, "schedulingGates").iter().enumerate() {
        let n = s(g, "name");
        out.extend(invalid_all(
            &format!("{path}.schedulingGates[{i}].name"),
            n,
            is_qualified_name(n),
        ));
    }
    out
}

fn validate_volume(v: &Value, p: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    let Some(m) = v.as_object() else {
        out.push(wrong_type(p, v, "a volume"));
        return out;
    };
    let name = s(v, "name");
    if name.is_empty() {
        out.push(Cause::required(format!("{p}.name")));
    } else {
        out.extend(invalid_all(
            &format!("{p}.name"),
            name,
            is_dns1123_label(name),
        ));
    }
    let sources: Vec<&String> = m
        .iter()
        .filter(|(k, x)| k.as_str() != "name" && !x.is_null())
        .map(|(k, _)| k)
        .collect();
    match sources.len() {
        0 => out.push(required_because(p, "must specify a volume type")),
        1 => {}
        _ => out.push(Cause::forbidden(
            format!("{p}.{}", sources[1]),
            "may not specify more than 1 volume type",
        )),
    }
    let required = [
        ("configMap", "name"),
        ("secret", "secretName"),
        ("hostPath", "path"),
        ("persistentVolumeClaim", "claimName"),
    ];
    for (src, field) in required {
        if let Some(x) = m.get(src).filter(|x| x.is_object()) {
            if s(x, field).is_empty() {
                out.push(Cause::required(format!("{p}.{src}.{field}")));
            }
        }
    }
    for src in ["configMap", "secret", "downwardAPI", "projected"] {
        if let Some(mode) = m.get(src).and_then(|x| x.get("defaultMode")) {
            if !mode.is_null() && !mode.as_i64().is_some_and(|n| (0..=0o777).contains(&n)) {
                out.push(Cause::invalid(
                    format!("{p}.{src}.defaultMode"),
                    show(mode),
                    "must be a number between 0 and 0777 (octal), both inclusive",
                ));
            }
        }
    }
    out
}

fn validate_container(
    c: &Value,
    p: &str,
    list: &str,
    of: SpecOf,
    volumes: &[&str],
    host_network: bool,
) -> Vec<Cause> {
    let mut out = Vec::new();
    if !c.is_object() {
        out.push(wrong_type(p, c, "a container"));
        return out;
    }
    let name = s(c, "name");
    if name.is_empty() {
        out.push(Cause::required(format!("{p}.name")));
    } else {
        out.extend(invalid_all(
            &format!("{p}.name"),
            name,
            is_dns1123_label(name),
        ));
    }
    let image = s(c, "image");
    if image.is_empty() {
        out.push(Cause::required(format!("{p}.image")));
    } else if of == SpecOf::Pod && image.trim() != image {
        out.push(Cause::invalid(
            format!("{p}.image"),
            q(image),
            "must not have leading or trailing whitespace",
        ));
    }
    out.extend(validate_enum(
        &c["imagePullPolicy"],
        &format!("{p}.imagePullPolicy"),
        &["Always", "IfNotPresent", "Never"],
        true,
    ));
    out.extend(validate_enum(
        &c["terminationMessagePolicy"],
        &format!("{p}.terminationMessagePolicy"),
        &["File", "FallbackToLogsOnError"],
        true,
    ));
    // Ports.
    let mut port_names: Vec<&str> = Vec::new();
    for (i, port) in arr(c, "ports").iter().enumerate() {
        let pp = format!("{p}.ports[{i}]");
        let pname = s(port, "name");
        if !pname.is_empty() {
            out.extend(invalid_all(
                &format!("{pp}.name"),
                pname,
                is_valid_port_name(pname),
            ));
            if port_names.contains(&pname) {
                out.push(Cause::duplicate(format!("{pp}.name"), q(pname)));
            }
            port_names.push(pname);
        }
        match port.get("containerPort") {
            None | Some(Value::Null) => out.push(Cause::required(format!("{pp}.containerPort"))),
            Some(v) if v.as_i64() == Some(0) => {
                out.push(Cause::required(format!("{pp}.containerPort")))
            }
            Some(v) => out.extend(validate_range(v, &format!("{pp}.containerPort"), 1, 65535)),
        }
        let host_port = &port["hostPort"];
        if host_port.as_i64().is_some_and(|n| n != 0) {
            out.extend(validate_range(
                host_port,
                &format!("{pp}.hostPort"),
                1,
                65535,
            ));
            if host_network && host_port != &port["containerPort"] {
                out.push(Cause::invalid(
                    format!("{pp}.hostPort"),
                    show(host_port),
                    "must match `containerPort` when `hostNetwork` is true",
                ));
            }
        }
        out.extend(validate_enum(
            &port["protocol"],
            &format!("{pp}.protocol"),
            &["SCTP", "TCP", "UDP"],
            true,
        ));
        let host_ip = s(port, "hostIP");
        if !host_ip.is_empty() && !is_ip(host_ip) {
            out.push(Cause::invalid(
                format!("{pp}.hostIP"),
                q(host_ip),
                "must be a valid IP address",
            ));
        }
    }
    // Environment.
    for (i, e) in arr(c, "env").iter().enumerate() {
        out.extend(validate_env_var(e, &format!("{p}.env[{i}]")));
    }
    for (i, e) in arr(c, "envFrom").iter().enumerate() {
        let ep = format!("{p}.envFrom[{i}]");
        let prefix = s(e, "prefix");
        if !prefix.is_empty() {
            out.extend(invalid_all(
                &format!("{ep}.prefix"),
                prefix,
                is_env_var_name(prefix),
            ));
        }
        let n = ["configMapRef", "secretRef"]
            .iter()
            .filter(|k| has(e, k))
            .count();
        if n == 0 {
            out.push(required_because(
                &ep,
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if n > 1 {
            out.push(Cause::forbidden(
                ep.clone(),
                "may not have more than one field specified at a time",
            ));
        }
    }
    // Volume mounts.
    let mut mount_paths: Vec<&str> = Vec::new();
    for (i, m) in arr(c, "volumeMounts").iter().enumerate() {
        let mp = format!("{p}.volumeMounts[{i}]");
        let vname = s(m, "name");
        if vname.is_empty() {
            out.push(Cause::required(format!("{mp}.name")));
        } else if !volumes.contains(&vname) {
            out.push(not_found(&format!("{mp}.name"), vname));
        }
        let path = s(m, "mountPath");
        if path.is_empty() {
            out.push(Cause::required(format!("{mp}.mountPath")));
        } else if mount_paths.contains(&path) {
            out.push(Cause::invalid(
                format!("{mp}.mountPath"),
                q(path),
                "must be unique",
            ));
        } else {
            mount_paths.push(path);
        }
    }
    // Probes.
    let sidecar = list == "initContainers" && s(c, "restartPolicy") == "Always";
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let pr = &c[probe];
        if pr.is_null() {
            continue;
        }
        let pp = format!("{p}.{probe}");
        if (list == "initContainers" && !sidecar) || list == "ephemeralContainers" {
            let what = if list == "initContainers" {
                "init containers"
            } else {
                "ephemeral containers"
            };
            out.push(Cause::forbidden(pp, format!("may not be set for {what}")));
            continue;
        }
        out.extend(validate_probe(pr, &pp, probe != "readinessProbe"));
    }
    // Resources.
    let res = &c["resources"];
    out.extend(validate_resource_list(
        &res["limits"],
        &format!("{p}.resources.limits"),
    ));
    out.extend(validate_resource_list(
        &res["requests"],
        &format!("{p}.resources.requests"),
    ));
    if let (Some(req), Some(lim)) = (res["requests"].as_object(), res["limits"].as_object()) {
        for (k, rv) in req {
            let (Some(r), Some(l)) = (quantity(rv), lim.get(k).and_then(quantity)) else {
                continue;
            };
            if r > l {
                let rq = super::validation::quantity_text(rv).unwrap_or_default();
                let lq = lim
                    .get(k)
                    .and_then(super::validation::quantity_text)
                    .unwrap_or_default();
                out.push(Cause::invalid(
                    format!("{p}.resources.requests"),
                    q(&rq),
                    format!("must be less than or equal to {k} limit of {lq}"),
                ));
            }
        }
    }
    // Container restart policy: only init containers may be sidecars.
    let rp = &c["restartPolicy"];
    if !rp.is_null() && rp != &json!("") {
        if list == "initContainers" {
            out.extend(validate_enum(
                rp,
                &format!("{p}.restartPolicy"),
                &["Always"],
                false,
            ));
        } else {
            let what = if list == "containers" {
                "non-init containers"
            } else {
                "ephemeral containers"
            };
            out.push(Cause::forbidden(
                format!("{p}.restartPolicy"),
                format!("may not be set for {what}"),
            ));
        }
    }
    out
}

fn validate_env_var(e: &Value, p: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    let name = s(e, "name");
    if name.is_empty() {
        out.push(Cause::required(format!("{p}.name")));
    } else {
        out.extend(invalid_all(
            &format!("{p}.name"),
            name,
            is_env_var_name(name),
        ));
    }
    let from = &e["valueFrom"];
    if from.is_null() {
        return out;
    }
    if !s(e, "value").is_empty() {
        out.push(Cause::invalid(
            format!("{p}.valueFrom"),
            q(""),
            "may not be specified when `value` is not empty",
        ));
    }
    let kinds = [
        "fieldRef",
        "resourceFieldRef",
        "configMapKeyRef",
        "secretKeyRef",
        "fileKeyRef",
    ];
    let n = kinds.iter().filter(|k| has(from, k)).count();
    if n == 0 {
        out.push(Cause::invalid(
            format!("{p}.valueFrom"),
            q(""),
            "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
        ));
    } else if n > 1 {
        out.push(Cause::invalid(
            format!("{p}.valueFrom"),
            q(""),
            "may not have more than one field specified at a time",
        ));
    }
    if let Some(fr) = from.get("fieldRef").filter(|x| x.is_object()) {
        let fp = s(fr, "fieldPath");
        let path = format!("{p}.valueFrom.fieldRef.fieldPath");
        if fp.is_empty() {
            out.push(Cause::required(path));
        } else {
            let supported = [
                "metadata.name",
                "metadata.namespace",
                "metadata.uid",
                "spec.nodeName",
                "spec.serviceAccountName",
                "status.hostIP",
                "status.hostIPs",
                "status.podIP",
                "status.podIPs",
            ];
            let subscripted =
                fp.starts_with("metadata.labels[") || fp.starts_with("metadata.annotations[");
            if !subscripted
                && !supported.contains(&fp)
                && fp != "metadata.labels"
                && fp != "metadata.annotations"
            {
                out.push(Cause::not_supported(path, fp, &supported));
            }
        }
    }
    for (k, key_field) in [("configMapKeyRef", "key"), ("secretKeyRef", "key")] {
        if let Some(r) = from.get(k).filter(|x| x.is_object()) {
            if s(r, key_field).is_empty() {
                out.push(Cause::required(format!("{p}.valueFrom.{k}.key")));
            }
        }
    }
    if let Some(r) = from.get("resourceFieldRef").filter(|x| x.is_object()) {
        if s(r, "resource").is_empty() {
            out.push(Cause::required(format!(
                "{p}.valueFrom.resourceFieldRef.resource"
            )));
        }
    }
    out
}

fn validate_probe(pr: &Value, p: &str, success_must_be_one: bool) -> Vec<Cause> {
    let mut out = Vec::new();
    if !pr.is_object() {
        out.push(wrong_type(p, pr, "a probe"));
        return out;
    }
    out.extend(validate_handler(pr, p, true));
    for f in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
        "terminationGracePeriodSeconds",
    ] {
        out.extend(validate_nonnegative(&pr[f], &format!("{p}.{f}")));
    }
    if success_must_be_one {
        if let Some(n) = int(pr, "successThreshold").filter(|n| *n != 1) {
            out.push(Cause::invalid(
                format!("{p}.successThreshold"),
                n,
                "must be 1",
            ));
        }
    }
    out
}

fn validate_handler(h: &Value, p: &str, probe: bool) -> Vec<Cause> {
    let mut out = Vec::new();
    let kinds: &[&str] = if probe {
        &["exec", "httpGet", "tcpSocket", "grpc"]
    } else {
        &["exec", "httpGet", "tcpSocket", "sleep"]
    };
    let set: Vec<&&str> = kinds.iter().filter(|k| has(h, k)).collect();
    match set.len() {
        0 => out.push(required_because(p, "must specify a handler type")),
        1 => {}
        _ => out.push(Cause::forbidden(
            format!("{p}.{}", set[1]),
            "may not specify more than 1 handler type",
        )),
    }
    for k in ["httpGet", "tcpSocket"] {
        if let Some(x) = h.get(k).filter(|x| x.is_object()) {
            out.extend(validate_port_num_or_name(
                &x["port"],
                &format!("{p}.{k}.port"),
            ));
        }
    }
    if let Some(g) = h.get("httpGet").filter(|x| x.is_object()) {
        out.extend(validate_enum(
            &g["scheme"],
            &format!("{p}.httpGet.scheme"),
            &["HTTP", "HTTPS"],
            false,
        ));
    }
    if let Some(g) = h.get("grpc").filter(|x| x.is_object()) {
        out.extend(validate_range(
            &g["port"],
            &format!("{p}.grpc.port"),
            1,
            65535,
        ));
    }
    out
}

fn validate_toleration(t: &Value, p: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    let key = s(t, "key");
    if !key.is_empty() {
        out.extend(invalid_all(
            &format!("{p}.key"),
            key,
            is_qualified_name(key),
        ));
    }
    let op = s(t, "operator");
    match op {
        "" | "Equal" => {
            if key.is_empty() {
                out.push(Cause::invalid(
                    format!("{p}.operator"),
                    q(op),
                    "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
                ));
            }
            let val = s(t, "value");
            out.extend(invalid_all(
                &format!("{p}.value"),
                val,
                super::validation::is_valid_label_value(val),
            ));
        }
        "Exists" => {
            if !s(t, "value").is_empty() {
                out.push(Cause::invalid(
                    format!("{p}.operator"),
                    q(op),
                    "value must be empty when `operator` is 'Exists'",
                ));
            }
        }
        other => out.push(Cause::not_supported(
            format!("{p}.operator"),
            other,
            &["Equal", "Exists"],
        )),
    }
    out.extend(validate_enum(
        &t["effect"],
        &format!("{p}.effect"),
        &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        false,
    ));
    if has(t, "tolerationSeconds") && s(t, "effect") != "NoExecute" {
        out.push(Cause::invalid(
            format!("{p}.effect"),
            q(s(t, "effect")),
            "effect must be 'NoExecute' when `tolerationSeconds` is set",
        ));
    }
    out
}

/// `ValidatePodTemplateSpec` at `path` (`spec.template`).
pub fn validate_template(t: &Value, path: &str) -> Vec<Cause> {
    let mut out = Vec::new();
    if !t.is_object() {
        if !t.is_null() {
            out.push(wrong_type(path, t, "a pod template"));
        }
        out.push(Cause::required(format!("{path}.spec.containers")));
        return out;
    }
    let meta = &t["metadata"];
    out.extend(validate_labels(
        &meta["labels"],
        &format!("{path}.metadata.labels"),
    ));
    out.extend(validate_annotations(
        &meta["annotations"],
        &format!("{path}.metadata.annotations"),
    ));
    out.extend(validate_pod_spec(
        &t["spec"],
        &format!("{path}.spec"),
        SpecOf::Template,
    ));
    out
}

/// The rules a controller's pod template follows (`ValidatePodTemplateSpecForReplicaSet`
/// and friends): restart policy `Always`, no `activeDeadlineSeconds`.
pub fn validate_controller_template(t: &Value, path: &str, kind: &str) -> Vec<Cause> {
    let mut out = validate_template(t, path);
    let spec = &t["spec"];
    let rp = s(spec, "restartPolicy");
    if !rp.is_empty() && rp != "Always" {
        out.push(Cause::not_supported(
            format!("{path}.spec.restartPolicy"),
            rp,
            &["Always"],
        ));
    }
    if has(spec, "activeDeadlineSeconds") {
        out.push(Cause::forbidden(
            format!("{path}.spec.activeDeadlineSeconds"),
            format!("activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
    out
}

const POD_UPDATE_MSG: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Pod validation: metadata, spec, status; on update, the spec's immutability.
pub fn validate(pod: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut out =
        super::validation::validate_object_meta(pod, old, super::validation::NameRule::Subdomain);
    let spec = &pod["spec"];
    // Updates skip the create-only rules (image whitespace, ephemeral containers).
    let of = if old.is_some() {
        SpecOf::Template
    } else {
        SpecOf::Pod
    };
    out.extend(validate_pod_spec(spec, "spec", of));
    let status = &pod["status"];
    if status.is_object() {
        out.extend(validate_enum(
            &status["phase"],
            "status.phase",
            &["Pending", "Running", "Succeeded", "Failed", "Unknown"],
            false,
        ));
        out.extend(validate_enum(
            &status["qosClass"],
            "status.qosClass",
            &["Guaranteed", "Burstable", "BestEffort"],
            false,
        ));
        for (i, c) in arr(status, "conditions").iter().enumerate() {
            if s(c, "type").is_empty() {
                out.push(Cause::required(format!("status.conditions[{i}].type")));
            }
        }
        for f in ["podIP", "hostIP"] {
            let ip = s(status, f);
            if !ip.is_empty() && !is_ip(ip) {
                out.push(Cause::invalid(
                    format!("status.{f}"),
                    q(ip),
                    "must be a valid IP address",
                ));
            }
        }
    }
    if let Some(old) = old {
        out.extend(validate_spec_update(spec, &old["spec"]));
    }
    out
}

/// `ValidatePodUpdate`: only images, `activeDeadlineSeconds`, added
/// tolerations, removed scheduling gates and a negative grace period may change.
fn validate_spec_update(new: &Value, old: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    if !new.is_object() || !old.is_object() {
        return out;
    }
    // activeDeadlineSeconds: may be set or lowered, never unset or raised.
    match (
        int(old, "activeDeadlineSeconds"),
        &new["activeDeadlineSeconds"],
    ) {
        (Some(_), Value::Null) => out.push(Cause::invalid(
            "spec.activeDeadlineSeconds",
            "null",
            "must not update from a positive integer to nil value",
        )),
        (Some(o), n) if n.as_i64().is_some_and(|n| n > o) => {
            out.push(Cause::invalid(
                "spec.activeDeadlineSeconds",
                show(n),
                "must be less than or equal to previous value",
            ));
        }
        _ => {}
    }
    let mut mutated = old.clone();
    for list in ["containers", "initContainers"] {
        let new_list = arr(new, list);
        if let Some(items) = mutated.get_mut(list).and_then(Value::as_array_mut) {
            if items.len() == new_list.len() {
                for (o, n) in items.iter_mut().zip(new_list) {
                    if let (Some(o), Some(img)) = (o.as_object_mut(), n.get("image")) {
                        o.insert("image".into(), img.clone());
                    }
                }
            }
        }
    }
    let m = mutated.as_object_mut().expect("checked to be an object");
    for f in ["activeDeadlineSeconds", "ephemeralContainers"] {
        match new.get(f) {
            Some(v) => m.insert(f.into(), v.clone()),
            None => m.remove(f),
        };
    }
    // Tolerations: additions only.
    let old_t = arr(old, "tolerations");
    let new_t = arr(new, "tolerations");
    if old_t.iter().all(|t| new_t.contains(t)) {
        match new.get("tolerations") {
            Some(v) => m.insert("tolerations".into(), v.clone()),
            None => m.remove("tolerations"),
        };
    }
    // Scheduling gates: removals only.
    let old_g = arr(old, "schedulingGates");
    let new_g = arr(new, "schedulingGates");
    if new_g.iter().all(|g| old_g.contains(g)) {
        match new.get("schedulingGates") {
            Some(v) => m.insert("schedulingGates".into(), v.clone()),
            None => m.remove("schedulingGates"),
        };
    }
    // A negative grace period may be raised to 1.
    if int(old, "terminationGracePeriodSeconds").is_some_and(|g| g < 0)
        && int(new, "terminationGracePeriodSeconds") == Some(1)
    {
        m.insert("terminationGracePeriodSeconds".into(), json!(1));
    }
    if &mutated != new {
        out.push(Cause::forbidden("spec", POD_UPDATE_MSG));
    }
    out
}

// ------------------------------------------------------------------- table

pub const COLUMNS: &[Column] = &[
    NAME_COLUMN,
    Column { name: "Ready", kind: "string", format: "", description: "The aggregate readiness state of this pod for accepting traffic.", priority: 0 },
    Column { name: "Status", kind: "string", format: "", description: "The aggregate status of the containers in this pod.", priority: 0 },
    Column {
        name: "Restarts",
        kind: "string",
        format: "",
        description: "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        priority: 0,
    },
    AGE_COLUMN,
    Column { name: "IP", kind: "string", format: "", description: "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.", priority: 1 },
    Column { name: "Node", kind: "string", format: "", description: "NodeName indicates in which node this pod is scheduled.", priority: 1 },
    Column { name: "Nominated Node", kind: "string", format: "", description: "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods.", priority: 1 },
    Column { name: "Readiness Gates", kind: "string", format: "", description: "If specified, all readiness gates will be evaluated for pod readiness.", priority: 1 },
];

fn condition_true(conds: &[Value], ty: &str) -> bool {
    conds
        .iter()
        .any(|c| s(c, "type") == ty && s(c, "status") == "True")
}

/// The first condition of a type, as upstream's `isPodInitializedConditionTrue` reads it.
fn first_condition_true(conds: &[Value], ty: &str) -> bool {
    conds
        .iter()
        .find(|c| s(c, "type") == ty)
        .is_some_and(|c| s(c, "status") == "True")
}

fn later(a: Option<Timestamp>, b: &Value) -> Option<Timestamp> {
    let t = b.as_str().and_then(|t| t.parse::<Timestamp>().ok());
    match (a, t) {
        (Some(a), Some(t)) if t > a => Some(t),
        (None, Some(t)) => Some(t),
        (a, _) => a,
    }
}

/// kubectl's pod row: ready count, status reason, restarts, age, and the
/// wide columns.
pub fn row(pod: &Value, now: Timestamp) -> Vec<Value> {
    let spec = &pod["spec"];
    let status = &pod["status"];
    let conds = arr(status, "conditions");
    let init_specs = arr(spec, "initContainers");
    let is_sidecar = |name: &str| {
        init_specs
            .iter()
            .any(|c| s(c, "name") == name && s(c, "restartPolicy") == "Always")
    };
    let total = arr(spec, "containers").len()
        + init_specs
            .iter()
            .filter(|c| s(c, "restartPolicy") == "Always")
            .count();
    let mut ready = 0;
    let mut restarts: i64 = 0;
    let mut sidecar_restarts: i64 = 0;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_sidecar_restart: Option<Timestamp> = None;
    let phase = s(status, "phase");
    let mut reason = if s(status, "reason").is_empty() {
        phase.to_string()
    } else {
        s(status, "reason").to_string()
    };
    if conds
        .iter()
        .any(|c| s(c, "type") == "PodScheduled" && s(c, "reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }

    let init_statuses = arr(status, "initContainerStatuses");
    let mut initializing = false;
    for (i, c) in init_statuses.iter().enumerate() {
        let rc = int(c, "restartCount").unwrap_or(0);
        restarts += rc;
        let finished = &c["lastState"]["terminated"]["finishedAt"];
        if c["lastState"]["terminated"].is_object() {
            last_restart = later(last_restart, finished);
        }
        let sidecar = is_sidecar(s(c, "name"));
        if sidecar {
            sidecar_restarts += rc;
            if c["lastState"]["terminated"].is_object() {
                last_sidecar_restart = later(last_sidecar_restart, finished);
            }
        }
        let term = &c["state"]["terminated"];
        let waiting = &c["state"]["waiting"];
        if term.is_object() && int(term, "exitCode").unwrap_or(0) == 0 {
            continue;
        }
        if sidecar && flag(c, "started") {
            if flag(c, "ready") {
                ready += 1;
            }
            continue;
        }
        if term.is_object() {
            reason = if s(term, "reason").is_empty() {
                match int(term, "signal").filter(|n| *n != 0) {
                    Some(sig) => format!("Init:Signal:{sig}"),
                    None => format!("Init:ExitCode:{}", int(term, "exitCode").unwrap_or(0)),
                }
            } else {
                format!("Init:{}", s(term, "reason"))
            };
        } else if waiting.is_object()
            && !s(waiting, "reason").is_empty()
            && s(waiting, "reason") != "PodInitializing"
        {
            reason = format!("Init:{}", s(waiting, "reason"));
        } else {
            reason = format!("Init:{}/{}", i, init_specs.len());
        }
        initializing = true;
        break;
    }

    if !initializing || first_condition_true(conds, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for c in arr(status, "containerStatuses").iter().rev() {
            restarts += int(c, "restartCount").unwrap_or(0);
            if c["lastState"]["terminated"].is_object() {
                last_restart = later(last_restart, &c["lastState"]["terminated"]["finishedAt"]);
            }
            let waiting = &c["state"]["waiting"];
            let term = &c["state"]["terminated"];
            if waiting.is_object() && !s(waiting, "reason").is_empty() {
                reason = s(waiting, "reason").to_string();
            } else if term.is_object() && !s(term, "reason").is_empty() {
                reason = s(term, "reason").to_string();
            } else if term.is_object() {
                reason = match int(term, "signal").filter(|n| *n != 0) {
                    Some(sig) => format!("Signal:{sig}"),
                    None => format!("ExitCode:{}", int(term, "exitCode").unwrap_or(0)),
                };
            } else if flag(c, "ready") && c["state"]["running"].is_object() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(conds, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    let deleting = !pod["metadata"]["deletionTimestamp"].is_null();
    if deleting && s(status, "reason") == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!(
            "{restarts} ({} ago)",
            crate::meta::human_duration(now.as_second() - t.as_second())
        ),
        _ => restarts.to_string(),
    };

    let mut ip = arr(status, "podIPs")
        .first()
        .map(|p| s(p, "ip"))
        .unwrap_or("")
        .to_string();
    if ip.is_empty() {
        ip = s(status, "podIP").to_string();
    }
    let none = |v: &str| {
        if v.is_empty() {
            "<none>".to_string()
        } else {
            v.to_string()
        }
    };
    let gates = arr(spec, "readinessGates");
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| {
                conds
                    .iter()
                    .find(|c| s(c, "type") == s(g, "conditionType"))
                    .is_some_and(|c| s(c, "status") == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    vec![
        json!(crate::meta::name(pod)),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(crate::meta::age(pod, now)),
        json!(none(&ip)),
        json!(none(s(spec, "nodeName"))),
        json!(none(s(status, "nominatedNodeName"))),
        json!(gates_cell),
    ]
}

// ------------------------------------------------------------------ fields

pub const FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

pub fn field(pod: &Value, label: &str) -> Option<String> {
    let spec = &pod["spec"];
    let status = &pod["status"];
    Some(match label {
        "spec.nodeName" => s(spec, "nodeName").to_string(),
        "spec.restartPolicy" => s(spec, "restartPolicy").to_string(),
        "spec.schedulerName" => s(spec, "schedulerName").to_string(),
        "spec.serviceAccountName" => s(spec, "serviceAccountName").to_string(),
        "spec.hostNetwork" => flag(spec, "hostNetwork").to_string(),
        "status.phase" => s(status, "phase").to_string(),
        "status.podIP" => match arr(status, "podIPs").first() {
            Some(p) => s(p, "ip").to_string(),
            None => s(status, "podIP").to_string(),
        },
        "status.nominatedNodeName" => s(status, "nominatedNodeName").to_string(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-01-01T00:10:00Z".parse().unwrap()
    }

    fn pod(spec: Value, status: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"}, "spec": spec, "status": status})
    }

    #[test]
    fn minimal_pod_gets_upstream_defaults() {
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        defaults(&mut p);
        assert_eq!(
            p["spec"],
            json!({
                "containers": [{"name": "c", "image": "nginx", "imagePullPolicy": "Always", "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File", "resources": {}}],
                "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "securityContext": {}, "terminationGracePeriodSeconds": 30,
                "schedulerName": "default-scheduler", "enableServiceLinks": true
            })
        );
        prepare_create(&mut p);
        assert_eq!(
            p["status"],
            json!({"phase": "Pending", "qosClass": "BestEffort"})
        );
    }

    #[test]
    fn container_defaults() {
        let mut p = json!({"spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "nginx:1.25",
            "ports": [{"containerPort": 80}],
            "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
            "livenessProbe": {"httpGet": {"port": 80}},
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}}}],
            "volumes": [{"name": "a"}, {"name": "b", "configMap": {"name": "x"}}]}});
        defaults(&mut p);
        let c = &p["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(
            c["ports"][0],
            json!({"containerPort": 80, "protocol": "TCP", "hostPort": 80})
        );
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(
            c["resources"]["requests"],
            json!({"cpu": "500m", "memory": "1Gi"})
        );
        assert_eq!(
            p["spec"]["volumes"][0],
            json!({"name": "a", "emptyDir": {}})
        );
        assert_eq!(p["spec"]["volumes"][1]["configMap"]["defaultMode"], 420);
        assert_eq!(qos_class(&p["spec"]), "Burstable");
        assert_eq!(image_tag("reg:5000/app"), "latest");
        assert_eq!(image_tag("app@sha256:abc"), "");
        assert_eq!(image_tag("app:latest"), "latest");
    }

    #[test]
    fn qos() {
        let g = json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1000m", "memory": "1Gi"}}}]});
        assert_eq!(qos_class(&g), "Guaranteed");
        let b = json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]});
        assert_eq!(qos_class(&b), "Burstable");
        assert_eq!(qos_class(&json!({"containers": [{}]})), "BestEffort");
    }

    fn fields_of(c: &[Cause]) -> Vec<&str> {
        c.iter().map(|c| c.field.as_str()).collect()
    }

    fn valid_pod() -> Value {
        let mut p = json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        defaults(&mut p);
        p
    }

    #[test]
    fn validation_rules() {
        assert!(validate(&valid_pod(), None).is_empty());
        type Mutation = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|p| p["spec"]["containers"] = json!([])),
                "spec.containers",
            ),
            (
                Box::new(|p| p["spec"]["containers"][0]["image"] = json!("")),
                "spec.containers[0].image",
            ),
            (
                Box::new(|p| p["spec"]["containers"][0]["image"] = json!(" nginx")),
                "spec.containers[0].image",
            ),
            (
                Box::new(|p| p["spec"]["containers"][0]["name"] = json!("Bad_Name")),
                "spec.containers[0].name",
            ),
            (
                Box::new(|p| {
                    p["spec"]["containers"][0]["ports"] =
                        json!([{"containerPort": 70000, "protocol": "TCP"}])
                }),
                "spec.containers[0].ports[0].containerPort",
            ),
            (
                Box::new(|p| {
                    p["spec"]["containers"][0]["ports"] =
                        json!([{"containerPort": 80, "protocol": "TCPX"}])
                }),
                "spec.containers[0].ports[0].protocol",
            ),
            (
                Box::new(|p| p["spec"]["restartPolicy"] = json!("Sometimes")),
                "spec.restartPolicy",
            ),
            (
                Box::new(|p| p["spec"]["dnsPolicy"] = json!("Whatever")),
                "spec.dnsPolicy",
            ),
            (
                Box::new(|p| {
                    p["spec"]["containers"][0]["volumeMounts"] =
                        json!([{"name": "nope", "mountPath": "/x"}])
                }),
                "spec.containers[0].volumeMounts[0].name",
            ),
            (
                Box::new(|p| {
                    p["spec"]["containers"][0]["resources"] =
                        json!({"limits": {"cpu": "1"}, "requests": {"cpu": "2"}})
                }),
                "spec.containers[0].resources.requests",
            ),
            (
                Box::new(|p| p["spec"]["containers"][0]["env"] = json!([{"name": "1BAD"}])),
                "spec.containers[0].env[0].name",
            ),
            (
                Box::new(|p| p["spec"]["activeDeadlineSeconds"] = json!(0)),
                "spec.activeDeadlineSeconds",
            ),
            (
                Box::new(|p| p["metadata"]["name"] = json!("Not_OK")),
                "metadata.name",
            ),
            (
                Box::new(|p| p["metadata"]["labels"] = json!({"a": "b c"})),
                "metadata.labels",
            ),
        ];
        for (mutate, field) in cases {
            let mut p = valid_pod();
            mutate(&mut p);
            let c = validate(&p, None);
            assert_eq!(fields_of(&c), vec![field], "{field}: {c:?}");
        }
        let mut dup = valid_pod();
        dup["spec"]["containers"] =
            json!([{"name": "c", "image": "a"}, {"name": "c", "image": "b"}]);
        defaults(&mut dup);
        let c = validate(&dup, None);
        assert_eq!(
            c[0].render(),
            "spec.containers[1].name: Duplicate value: \"c\""
        );
    }

    #[test]
    fn update_rules() {
        let old = valid_pod();
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("nginx:2");
        new["spec"]["activeDeadlineSeconds"] = json!(30);
        new["spec"]["tolerations"] = json!([{"key": "a", "operator": "Exists"}]);
        assert!(validate(&new, Some(&old)).is_empty());
        let mut bad = old.clone();
        bad["spec"]["restartPolicy"] = json!("Never");
        let c = validate(&bad, Some(&old));
        assert_eq!(fields_of(&c), vec!["spec"]);
        assert!(c[0]
            .message
            .starts_with("Forbidden: pod updates may not change fields other than"));
    }

    #[test]
    fn status_column() {
        let spec = json!({"containers": [{"name": "a"}, {"name": "b"}]});
        let running = pod(
            spec.clone(),
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 3, "state": {"running": {}}, "lastState": {"terminated": {"finishedAt": "2024-01-01T00:05:00Z", "exitCode": 1}}},
                {"name": "b", "ready": true, "restartCount": 0, "state": {"running": {}}}]}),
        );
        let r = row(&running, now());
        assert_eq!(
            r[..5],
            [
                json!("p"),
                json!("2/2"),
                json!("Running"),
                json!("3 (5m ago)"),
                json!("10m")
            ]
        );
        assert_eq!(
            r[5..],
            [
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>")
            ]
        );

        let pending = pod(spec.clone(), json!({"phase": "Pending"}));
        assert_eq!(row(&pending, now())[2], "Pending");
        let creating = pod(
            spec.clone(),
            json!({"phase": "Pending", "containerStatuses": [
            {"name": "a", "state": {"waiting": {"reason": "ContainerCreating"}}}, {"name": "b", "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert_eq!(row(&creating, now())[2], "ContainerCreating");
        let crash = pod(
            json!({"containers": [{"name": "a"}]}),
            json!({"phase": "Running", "containerStatuses": [
            {"name": "a", "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
        );
        let r = row(&crash, now());
        assert_eq!(
            (r[1].clone(), r[2].clone(), r[3].clone()),
            (json!("0/1"), json!("CrashLoopBackOff"), json!("4"))
        );
        let done = pod(
            json!({"containers": [{"name": "a"}]}),
            json!({"phase": "Succeeded", "containerStatuses": [
            {"name": "a", "state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]}),
        );
        assert_eq!(row(&done, now())[2], "Completed");
        let init = pod(
            json!({"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]}),
            json!({"phase": "Pending",
            "initContainerStatuses": [{"name": "i", "state": {"running": {}}}], "containerStatuses": [{"name": "a", "state": {"waiting": {"reason": "PodInitializing"}}}]}),
        );
        assert_eq!(row(&init, now())[2], "Init:0/1");
        let init_err = pod(
            json!({"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]}),
            json!({"phase": "Pending",
            "initContainerStatuses": [{"name": "i", "state": {"terminated": {"exitCode": 2}}}]}),
        );
        assert_eq!(row(&init_err, now())[2], "Init:ExitCode:2");
        let mut term = running.clone();
        term["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:09:00Z");
        assert_eq!(row(&term, now())[2], "Terminating");
        let gated = pod(
            spec,
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
        );
        assert_eq!(row(&gated, now())[2], "SchedulingGated");
        let wide = pod(
            json!({"nodeName": "n1", "containers": [], "readinessGates": [{"conditionType": "x"}]}),
            json!({"podIPs": [{"ip": "10.0.0.1"}], "conditions": [{"type": "x", "status": "True"}]}),
        );
        assert_eq!(
            row(&wide, now())[5..],
            [
                json!("10.0.0.1"),
                json!("n1"),
                json!("<none>"),
                json!("1/1")
            ]
        );
    }

    #[test]
    fn field_values() {
        let p = pod(
            json!({"nodeName": "n1", "hostNetwork": true, "restartPolicy": "Always"}),
            json!({"phase": "Running", "podIP": "10.0.0.2"}),
        );
        assert_eq!(field(&p, "spec.nodeName").as_deref(), Some("n1"));
        assert_eq!(field(&p, "spec.hostNetwork").as_deref(), Some("true"));
        assert_eq!(field(&p, "status.podIP").as_deref(), Some("10.0.0.2"));
        assert_eq!(field(&p, "spec.schedulerName").as_deref(), Some(""));
        assert_eq!(field(&p, "nope"), None);
    }
}
