//! A container's environment, built the way the kubelet builds it.
//!
//! Order of work (kubelet's `makeEnvironmentVariables`, without service
//! links, which are out of scope):
//!
//! 1. `envFrom` sources in order: every key of the ConfigMap's `data` or the
//!    Secret's `data`, with the source's `prefix`. A prefixed key that is not
//!    a valid environment variable name (`[-._a-zA-Z][-._a-zA-Z0-9]*`) is
//!    skipped; the skipped keys are reported in [`ContainerEnv::warnings`]
//!    with the kubelet's `InvalidEnvironmentVariableNames` event text. A
//!    missing source fails unless `optional`.
//! 2. `env` in order. Literal values are `$(VAR)`-expanded against
//!    everything defined so far; `valueFrom` values are never expanded.
//!
//! A later definition of a name replaces the value of an earlier one (the
//! name keeps its first position in the result).
//!
//! Secret values are bytes; they become environment strings lossily
//! (invalid UTF-8 is replaced), as the process runtime takes strings.

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, Pod, ResourceFieldSelector, Secret,
};
use navarch_api::kinds::util::parse_quantity;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Node facts the downward API and resourceFieldRef defaults need.
#[derive(Debug, Clone, Default)]
pub struct NodeAllocatable {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub ephemeral_storage_bytes: i64,
}

/// What the agent knows of a pod besides its spec.
pub struct PodContext<'a> {
    pub pod: &'a Pod,
    pub host_ip: &'a str,
    pub pod_ips: &'a [String],
    pub node_allocatable: &'a NodeAllocatable,
}

/// Names of the ConfigMaps and Secrets a pod refers to (env, envFrom of all
/// containers incl. init and ephemeral; volumes; projected sources),
/// optional or not.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct References {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
}

/// The fetched objects (same namespace as the pod); a name missing from the
/// map does not exist.
#[derive(Debug, Default, Clone)]
pub struct ConfigObjects {
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
}

/// Why a container's configuration could not be built: reported as the
/// waiting reason `CreateContainerConfigError` with this message, which is
/// worded as the kubelet words it (`configmap "x" not found`, `couldn't
/// find key k in ConfigMap ns/x`, `secret "s" not found`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    pub message: String,
}

impl ConfigError {
    fn new(message: impl Into<String>) -> Self {
        ConfigError {
            message: message.into(),
        }
    }
}

/// A container's environment plus what the kubelet would report as
/// warning events while building it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContainerEnv {
    pub env: Vec<(String, String)>,
    /// Messages for `InvalidEnvironmentVariableNames` warning events on the
    /// pod (envFrom keys that were skipped), in the kubelet's words.
    pub warnings: Vec<String>,
}

/// The ConfigMaps and Secrets `pod` refers to.
pub fn references(pod: &Pod) -> References {
    let mut refs = References::default();
    let Some(spec) = &pod.spec else {
        return refs;
    };
    let mut env_lists: Vec<(&Option<Vec<EnvVar>>, &Option<Vec<_>>)> = Vec::new();
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
    {
        env_lists.push((&c.env, &c.env_from));
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        env_lists.push((&c.env, &c.env_from));
    }
    for (env, env_from) in env_lists {
        for e in env_from.iter().flatten() {
            if let Some(r) = &e.config_map_ref {
                refs.config_maps.insert(r.name.clone());
            }
            if let Some(r) = &e.secret_ref {
                refs.secrets.insert(r.name.clone());
            }
        }
        for e in env.iter().flatten() {
            let Some(from) = &e.value_from else { continue };
            if let Some(r) = &from.config_map_key_ref {
                refs.config_maps.insert(r.name.clone());
            }
            if let Some(r) = &from.secret_key_ref {
                refs.secrets.insert(r.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            refs.config_maps.insert(cm.name.clone());
        }
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.as_ref()) {
            refs.secrets.insert(name.clone());
        }
        if let Some(p) = &v.projected {
            for s in p.sources.iter().flatten() {
                if let Some(cm) = &s.config_map {
                    refs.config_maps.insert(cm.name.clone());
                }
                if let Some(sec) = &s.secret {
                    refs.secrets.insert(sec.name.clone());
                }
            }
        }
    }
    refs.config_maps.remove("");
    refs.secrets.remove("");
    refs
}

/// The container's environment as the kubelet builds it: envFrom (with
/// prefix; invalid keys skipped as kubelet does), then env in order,
/// `valueFrom` configMapKeyRef / secretKeyRef (honouring `optional`),
/// fieldRef, resourceFieldRef (limits default to node allocatable, values
/// rounded up), `$(VAR)` expansion of literal values against earlier
/// entries. See [`container_env_report`] for the skipped-key warnings.
pub fn container_env(
    ctx: &PodContext<'_>,
    container: &Container,
    objects: &ConfigObjects,
) -> Result<Vec<(String, String)>, ConfigError> {
    container_env_report(ctx, container, objects).map(|r| r.env)
}

/// [`container_env`] with the warnings the kubelet would record as events.
pub fn container_env_report(
    ctx: &PodContext<'_>,
    container: &Container,
    objects: &ConfigObjects,
) -> Result<ContainerEnv, ConfigError> {
    let namespace = ctx.pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut out = EnvBuilder::default();
    let mut warnings = Vec::new();

    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.as_deref().unwrap_or_default();
        let (kind, name, values): (&str, &str, Vec<(String, String)>) =
            if let Some(r) = &source.config_map_ref {
                match objects.config_maps.get(&r.name) {
                    Some(cm) => (
                        "configMap",
                        &r.name,
                        cm.data
                            .iter()
                            .flatten()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    ),
                    None if r.optional == Some(true) => continue,
                    None => {
                        return Err(ConfigError::new(format!(
                            "configmap {:?} not found",
                            r.name
                        )))
                    }
                }
            } else if let Some(r) = &source.secret_ref {
                match objects.secrets.get(&r.name) {
                    Some(s) => (
                        "secret",
                        &r.name,
                        secret_data(s)
                            .into_iter()
                            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                            .collect(),
                    ),
                    None if r.optional == Some(true) => continue,
                    None => return Err(ConfigError::new(format!("secret {:?} not found", r.name))),
                }
            } else {
                continue;
            };
        let mut invalid = Vec::new();
        for (k, v) in values {
            let key = format!("{prefix}{k}");
            if !is_env_var_name(&key) {
                invalid.push(key);
                continue;
            }
            out.set(key, v);
        }
        if !invalid.is_empty() {
            invalid.sort();
            warnings.push(format!(
                "Keys [{}] from the EnvFrom {kind} {namespace}/{name} were skipped since they are considered invalid environment variable names.",
                invalid.join(", ")
            ));
        }
    }

    for var in container.env.iter().flatten() {
        let Some(from) = &var.value_from else {
            let value = expand(var.value.as_deref().unwrap_or_default(), &out.vars);
            out.set(var.name.clone(), value);
            continue;
        };
        let value = if let Some(sel) = &from.config_map_key_ref {
            let optional = sel.optional == Some(true);
            let Some(cm) = objects.config_maps.get(&sel.name) else {
                if optional {
                    continue;
                }
                return Err(ConfigError::new(format!(
                    "configmap {:?} not found",
                    sel.name
                )));
            };
            match cm.data.as_ref().and_then(|d| d.get(&sel.key)) {
                Some(v) => v.clone(),
                None if optional => continue,
                None => {
                    return Err(ConfigError::new(format!(
                        "couldn't find key {} in ConfigMap {namespace}/{}",
                        sel.key, sel.name
                    )))
                }
            }
        } else if let Some(sel) = &from.secret_key_ref {
            let optional = sel.optional == Some(true);
            let Some(secret) = objects.secrets.get(&sel.name) else {
                if optional {
                    continue;
                }
                return Err(ConfigError::new(format!("secret {:?} not found", sel.name)));
            };
            match secret_data(secret).remove(&sel.key) {
                Some(v) => String::from_utf8_lossy(&v).into_owned(),
                None if optional => continue,
                None => {
                    return Err(ConfigError::new(format!(
                        "couldn't find key {} in Secret {namespace}/{}",
                        sel.key, sel.name
                    )))
                }
            }
        } else if let Some(sel) = &from.field_ref {
            env_field_value(ctx, &sel.field_path).map_err(ConfigError::new)?
        } else if let Some(sel) = &from.resource_field_ref {
            resource_field_value(ctx, Some(container), sel).map_err(ConfigError::new)?
        } else {
            String::new()
        };
        out.set(var.name.clone(), value);
    }
    Ok(ContainerEnv {
        env: out.vars,
        warnings,
    })
}

#[derive(Default)]
struct EnvBuilder {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl EnvBuilder {
    fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }
}

/// A Secret's `data`, with `stringData` folded in (the API server does that
/// on write; objects built elsewhere may still carry it).
pub(crate) fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    data
}

/// Kubernetes' `IsEnvVarName`: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_') => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// Kubelet's `$(VAR)` expansion (`$$` escapes, unknown refs left as-is), for
/// command/args too. A later definition of a name in `env` wins.
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    expand_with(text, |name| {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
}

/// The expansion algorithm, with a lookup that may decline a name (the
/// reference is then kept verbatim).
pub(crate) fn expand_with(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let input = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'$' || i + 1 >= input.len() {
            out.push(input[i]);
            i += 1;
            continue;
        }
        match input[i + 1] {
            b'$' => {
                out.push(b'$');
                i += 2;
            }
            b'(' => match input[i + 2..].iter().position(|&b| b == b')') {
                Some(len) => {
                    let name = &text[i + 2..i + 2 + len];
                    match lookup(name) {
                        Some(v) => out.extend_from_slice(v.as_bytes()),
                        None => out.extend_from_slice(&input[i..i + 3 + len]),
                    }
                    i += 3 + len;
                }
                None => {
                    out.extend_from_slice(b"$(");
                    i += 2;
                }
            },
            other => {
                out.push(b'$');
                out.push(other);
                i += 2;
            }
        }
    }
    // Only whole ASCII bytes were removed or inserted next to ASCII bytes,
    // so the result is valid UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A `fieldRef` value for an environment variable: the downward API fields
/// of volumes plus `spec.nodeName`, `spec.serviceAccountName`,
/// `status.hostIP(s)`, `status.podIP(s)`.
pub(crate) fn env_field_value(ctx: &PodContext<'_>, path: &str) -> Result<String, String> {
    let spec = ctx.pod.spec.as_ref();
    Ok(match path {
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => ctx.host_ip.to_owned(),
        "status.podIP" => ctx.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => ctx.pod_ips.join(","),
        _ => return pod_field_value(ctx.pod, path),
    })
}

/// A `fieldRef` value as the downward API volume knows them (kubelet's
/// `ExtractFieldPathAsString`): `metadata.name`, `metadata.namespace`,
/// `metadata.uid`, `metadata.labels`, `metadata.annotations` (whole maps as
/// sorted `key="value"` lines) and `metadata.labels['k']` /
/// `metadata.annotations['k']`.
pub(crate) fn pod_field_value(pod: &Pod, path: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    if let Some((base, key)) = split_subscript(path) {
        let map = match base {
            "metadata.labels" => &meta.labels,
            "metadata.annotations" => &meta.annotations,
            _ => return Err(format!("field label not supported: {path}")),
        };
        return Ok(map
            .as_ref()
            .and_then(|m| m.get(key))
            .cloned()
            .unwrap_or_default());
    }
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        _ => return Err(format!("field label not supported: {path}")),
    })
}

/// `metadata.labels['key']` → (`metadata.labels`, `key`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let open = path.find("['")?;
    let rest = path[open + 2..].strip_suffix("']")?;
    Some((&path[..open], rest))
}

/// Kubelet's `FormatMap`: `key="value"` lines sorted by key, values quoted
/// as Go's `%q` does, no trailing newline.
pub(crate) fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    let mut lines = Vec::new();
    for (k, v) in map.into_iter().flatten() {
        lines.push(format!("{k}={}", go_quote(v)));
    }
    lines.join("\n")
}

/// Go's `strconv.Quote` for valid UTF-8.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() || (c.is_whitespace() && c != ' ') => {
                if (c as u32) <= 0xffff {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A `resourceFieldRef` value (kubelet's `ExtractContainerResourceValue`
/// after defaulting limits to node allocatable). `container` is the
/// container being configured (env); `containerName` in the selector wins
/// when set (required in volumes).
pub(crate) fn resource_field_value(
    ctx: &PodContext<'_>,
    container: Option<&Container>,
    sel: &ResourceFieldSelector,
) -> Result<String, String> {
    let named;
    let container = match sel.container_name.as_deref().filter(|n| !n.is_empty()) {
        Some(name) => {
            named = find_container(ctx.pod, name)
                .ok_or_else(|| format!("container {name} not found"))?;
            named
        }
        None => container.ok_or_else(|| "resourceFieldRef needs a containerName".to_owned())?,
    };
    let divisor_nanos = match sel.divisor.as_ref().map(|q| q.0.as_str()) {
        None | Some("") => 1_000_000_000,
        Some(q) => match parse_quantity(q) {
            Some(0) => 1_000_000_000,
            Some(n) if n > 0 => n,
            _ => return Err(format!("invalid divisor {q:?}")),
        },
    };
    let (section, resource) = sel
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported container resource : {}", sel.resource))?;
    let res = container.resources.as_ref();
    let map = match section {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return Err(format!("unsupported container resource : {}", sel.resource)),
    };
    let is_hugepages = resource.starts_with("hugepages-");
    if !matches!(resource, "cpu" | "memory" | "ephemeral-storage") && !is_hugepages {
        return Err(format!("unsupported container resource : {}", sel.resource));
    }
    let mut nanos = match map.and_then(|m| m.get(resource)) {
        Some(q) => parse_quantity(&q.0)
            .ok_or_else(|| format!("invalid quantity {:?} for {}", q.0, sel.resource))?,
        None => 0,
    };
    if section == "limits" && nanos == 0 {
        let a = ctx.node_allocatable;
        nanos = match resource {
            "cpu" => i128::from(a.cpu_millis) * 1_000_000,
            "memory" => i128::from(a.memory_bytes) * 1_000_000_000,
            "ephemeral-storage" => i128::from(a.ephemeral_storage_bytes) * 1_000_000_000,
            _ => 0,
        };
    }
    let value = if resource == "cpu" {
        // Milli-values, each rounded up, then the quotient rounded up.
        ceil_div(
            ceil_div(nanos, 1_000_000),
            ceil_div(divisor_nanos, 1_000_000).max(1),
        )
    } else {
        ceil_div(
            ceil_div(nanos, 1_000_000_000),
            ceil_div(divisor_nanos, 1_000_000_000).max(1),
        )
    };
    Ok(value.to_string())
}

fn ceil_div(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && (a > 0) == (b > 0) {
        q + 1
    } else {
        q
    }
}

fn find_container<'p>(pod: &'p Pod, name: &str) -> Option<&'p Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVarSource, ObjectFieldSelector,
        PodSpec, ResourceRequirements, SecretEnvSource, SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;

    fn pod(container: Container) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("u-1".into()),
                labels: Some([("app".to_owned(), "web".to_owned())].into()),
                annotations: Some([("a".to_owned(), "x\"y".to_owned())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                service_account_name: Some("sa".into()),
                containers: vec![container],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn objects() -> ConfigObjects {
        let mut o = ConfigObjects::default();
        o.config_maps.insert(
            "cm".into(),
            ConfigMap {
                metadata: ObjectMeta {
                    name: Some("cm".into()),
                    ..Default::default()
                },
                data: Some(
                    [
                        ("A".to_owned(), "a".to_owned()),
                        ("1bad".to_owned(), "x".to_owned()),
                        ("B".to_owned(), "b".to_owned()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
        );
        o.secrets.insert(
            "s".into(),
            Secret {
                data: Some([("PASS".to_owned(), ByteString(b"hunter2".to_vec()))].into()),
                ..Default::default()
            },
        );
        o
    }

    fn lit(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    fn from(name: &str, src: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(src),
            ..Default::default()
        }
    }

    fn field(name: &str, path: &str) -> EnvVar {
        from(
            name,
            EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
    }

    fn res(name: &str, resource: &str, divisor: Option<&str>) -> EnvVar {
        from(
            name,
            EnvVarSource {
                resource_field_ref: Some(ResourceFieldSelector {
                    resource: resource.into(),
                    divisor: divisor.map(|d| Quantity(d.into())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
    }

    fn cm_key(name: &str, cm: &str, key: &str, optional: bool) -> EnvVar {
        from(
            name,
            EnvVarSource {
                config_map_key_ref: Some(ConfigMapKeySelector {
                    name: cm.into(),
                    key: key.into(),
                    optional: Some(optional),
                }),
                ..Default::default()
            },
        )
    }

    fn secret_key(name: &str, s: &str, key: &str, optional: bool) -> EnvVar {
        from(
            name,
            EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: s.into(),
                    key: key.into(),
                    optional: Some(optional),
                }),
                ..Default::default()
            },
        )
    }

    fn run(c: Container) -> Result<ContainerEnv, ConfigError> {
        let p = pod(c.clone());
        let alloc = NodeAllocatable {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            ephemeral_storage_bytes: 100 << 30,
        };
        let ips = vec!["10.0.0.5".to_owned(), "fd00::5".to_owned()];
        let ctx = PodContext {
            pod: &p,
            host_ip: "10.0.0.5",
            pod_ips: &ips,
            node_allocatable: &alloc,
        };
        container_env_report(&ctx, &c, &objects())
    }

    fn container(env: Vec<EnvVar>) -> Container {
        Container {
            name: "app".into(),
            env: Some(env),
            ..Default::default()
        }
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn value_from_every_kind() {
        let env = run(container(vec![
            cm_key("CM", "cm", "A", false),
            secret_key("SEC", "s", "PASS", false),
            field("NAME", "metadata.name"),
            field("NS", "metadata.namespace"),
            field("UID", "metadata.uid"),
            field("LBL", "metadata.labels['app']"),
            field("ANN", "metadata.annotations['a']"),
            field("MISSING_LBL", "metadata.labels['nope']"),
            field("NODE", "spec.nodeName"),
            field("SA", "spec.serviceAccountName"),
            field("HOST", "status.hostIP"),
            field("HOSTS", "status.hostIPs"),
            field("IP", "status.podIP"),
            field("IPS", "status.podIPs"),
        ]))
        .unwrap()
        .env;
        let want = [
            ("CM", "a"),
            ("SEC", "hunter2"),
            ("NAME", "web"),
            ("NS", "ns"),
            ("UID", "u-1"),
            ("LBL", "web"),
            ("ANN", "x\"y"),
            ("MISSING_LBL", ""),
            ("NODE", "node-1"),
            ("SA", "sa"),
            ("HOST", "10.0.0.5"),
            ("HOSTS", "10.0.0.5"),
            ("IP", "10.0.0.5"),
            ("IPS", "10.0.0.5,fd00::5"),
        ];
        let got: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, want);
        let err = run(container(vec![field("X", "status.phase")])).unwrap_err();
        assert_eq!(err.message, "field label not supported: status.phase");
    }

    #[test]
    fn missing_references() {
        let e = run(container(vec![cm_key("X", "nope", "A", false)])).unwrap_err();
        assert_eq!(e.to_string(), "configmap \"nope\" not found");
        let e = run(container(vec![cm_key("X", "cm", "Z", false)])).unwrap_err();
        assert_eq!(e.message, "couldn't find key Z in ConfigMap ns/cm");
        let e = run(container(vec![secret_key("X", "nope", "A", false)])).unwrap_err();
        assert_eq!(e.message, "secret \"nope\" not found");
        let e = run(container(vec![secret_key("X", "s", "Z", false)])).unwrap_err();
        assert_eq!(e.message, "couldn't find key Z in Secret ns/s");
        // Optional: skipped, not even defined as empty.
        let env = run(container(vec![
            cm_key("A", "nope", "A", true),
            cm_key("B", "cm", "Z", true),
            secret_key("C", "nope", "A", true),
            secret_key("D", "s", "Z", true),
            lit("E", "e"),
        ]))
        .unwrap()
        .env;
        assert_eq!(env, vec![("E".to_owned(), "e".to_owned())]);
    }

    #[test]
    fn env_from_prefix_invalid_keys_and_precedence() {
        let mut c = container(vec![lit("P_A", "override"), lit("REF", "$(P_B)-$(PASS)")]);
        c.env_from = Some(vec![
            EnvFromSource {
                prefix: Some("P_".into()),
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "cm".into(),
                    optional: None,
                }),
                ..Default::default()
            },
            EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: "s".into(),
                    optional: None,
                }),
                ..Default::default()
            },
            EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "cm".into(),
                    optional: None,
                }),
                ..Default::default()
            },
            EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: "gone".into(),
                    optional: Some(true),
                }),
                ..Default::default()
            },
        ]);
        let r = run(c.clone()).unwrap();
        assert_eq!(get(&r.env, "P_A"), Some("override"));
        assert_eq!(get(&r.env, "P_1bad"), Some("x"), "prefix makes it valid");
        assert_eq!(get(&r.env, "1bad"), None);
        assert_eq!(get(&r.env, "A"), Some("a"));
        assert_eq!(get(&r.env, "REF"), Some("b-hunter2"));
        assert_eq!(
            r.warnings,
            vec!["Keys [1bad] from the EnvFrom configMap ns/cm were skipped since they are considered invalid environment variable names."]
        );
        // The name keeps its first position.
        assert_eq!(r.env[0].0, "P_1bad");

        c.env_from = Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: "gone".into(),
                optional: None,
            }),
            ..Default::default()
        }]);
        assert_eq!(run(c).unwrap_err().message, "secret \"gone\" not found");
    }

    #[test]
    fn expansion() {
        let env: Vec<(String, String)> = vec![("A".into(), "1".into()), ("B".into(), "2".into())];
        assert_eq!(expand("$(A)-$(B)", &env), "1-2");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("$$$(A)", &env), "$1");
        assert_eq!(expand("$(C)", &env), "$(C)");
        assert_eq!(expand("$(A", &env), "$(A");
        assert_eq!(expand("$A $", &env), "$A $");
        assert_eq!(expand("é$(A)ü$é", &env), "é1ü$é");
        assert_eq!(expand("$()", &env), "$()");
        // Only earlier entries count; valueFrom values are not expanded.
        let r = run(container(vec![
            lit("X", "$(Y)"),
            lit("Y", "y"),
            lit("Z", "$(Y)$(Y)"),
            field("ANN", "metadata.annotations['a']"),
        ]))
        .unwrap()
        .env;
        assert_eq!(get(&r, "X"), Some("$(Y)"));
        assert_eq!(get(&r, "Z"), Some("yy"));
    }

    #[test]
    fn resource_field_refs() {
        let mut c = container(vec![
            res("LCPU", "limits.cpu", None),
            res("LCPU_M", "limits.cpu", Some("1m")),
            res("LMEM", "limits.memory", None),
            res("LMEM_MI", "limits.memory", Some("1Mi")),
            res("RCPU", "requests.cpu", None),
            res("RMEM", "requests.memory", Some("1Mi")),
            res("LEPH", "limits.ephemeral-storage", Some("1Gi")),
            res("REPH", "requests.ephemeral-storage", None),
        ]);
        c.resources = Some(ResourceRequirements {
            limits: Some([("cpu".to_owned(), Quantity("1500m".into()))].into()),
            requests: Some(
                [
                    ("cpu".to_owned(), Quantity("250m".into())),
                    ("memory".to_owned(), Quantity("1500k".into())),
                ]
                .into(),
            ),
            ..Default::default()
        });
        let env = run(c).unwrap().env;
        assert_eq!(get(&env, "LCPU"), Some("2"), "1.5 cores round up");
        assert_eq!(get(&env, "LCPU_M"), Some("1500"));
        assert_eq!(
            get(&env, "LMEM"),
            Some(&*(8u64 << 30).to_string()),
            "node allocatable"
        );
        assert_eq!(get(&env, "LMEM_MI"), Some("8192"));
        assert_eq!(get(&env, "RCPU"), Some("1"));
        assert_eq!(get(&env, "RMEM"), Some("2"), "1500k / 1Mi rounds up");
        assert_eq!(get(&env, "LEPH"), Some("100"));
        assert_eq!(get(&env, "REPH"), Some("0"));
        let e = run(container(vec![res("X", "limits.gpu", None)])).unwrap_err();
        assert_eq!(e.message, "unsupported container resource : limits.gpu");
    }

    #[test]
    fn references_cover_everything() {
        let mut c = container(vec![
            cm_key("A", "cm1", "k", true),
            secret_key("B", "s1", "k", false),
        ]);
        c.env_from = Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: "cm2".into(),
                optional: None,
            }),
            ..Default::default()
        }]);
        let mut p = pod(c);
        let spec = p.spec.as_mut().unwrap();
        spec.init_containers = Some(vec![container(vec![secret_key("C", "s2", "k", false)])]);
        spec.volumes = Some(vec![
            serde_json::from_value(serde_json::json!({"name": "v1", "configMap": {"name": "cm3"}}))
                .unwrap(),
            serde_json::from_value(
                serde_json::json!({"name": "v2", "secret": {"secretName": "s3"}}),
            )
            .unwrap(),
            serde_json::from_value(serde_json::json!({"name": "v3", "projected": {"sources": [
                {"configMap": {"name": "cm4"}}, {"secret": {"name": "s4"}}]}}))
            .unwrap(),
        ]);
        let r = references(&p);
        assert_eq!(
            r.config_maps.into_iter().collect::<Vec<_>>(),
            ["cm1", "cm2", "cm3", "cm4"]
        );
        assert_eq!(
            r.secrets.into_iter().collect::<Vec<_>>(),
            ["s1", "s2", "s3", "s4"]
        );
    }

    #[test]
    fn format_map_quotes_like_go() {
        let m: BTreeMap<String, String> = [
            ("b".to_owned(), "two\nlines".to_owned()),
            ("a".to_owned(), "q\"\\ é\u{1}".to_owned()),
        ]
        .into();
        assert_eq!(
            format_map(Some(&m)),
            "a=\"q\\\"\\\\ é\\x01\"\nb=\"two\\nlines\""
        );
        assert_eq!(format_map(None), "");
    }
}
