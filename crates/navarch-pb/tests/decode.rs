//! Bodies built the way kubectl builds them (gogo-protobuf writes every Go
//! value field, zero or not; pointer fields only when set), encoded with the
//! k8s-pb prost messages, wrapped in the `k8s\0` envelope, and decoded.

use std::collections::BTreeMap;

use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{RawExtension, TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use navarch_pb::{decode, is_envelope, Error};
use prost::Message;
use serde_json::{json, Value};

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn e() -> Option<String> {
    Some(String::new())
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The envelope as kubectl writes it: contentEncoding and contentType are Go
/// value strings, so present and empty.
fn wrap(api_version: &str, kind: &str, msg: &impl Message) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: s(api_version),
            kind: s(kind),
        }),
        raw: Some(msg.encode_to_vec()),
        content_encoding: e(),
        content_type: e(),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(unknown.encode_to_vec());
    body
}

fn zero_time() -> Option<meta::Time> {
    Some(meta::Time {
        seconds: None,
        nanos: None,
    })
}

/// ObjectMeta as a Go `metav1.ObjectMeta{Name: .., Namespace: .., Labels: ..}`
/// encodes: every value field present.
fn object_meta(name: &str, namespace: &str, labels: &[(&str, &str)]) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: s(name),
        generate_name: e(),
        namespace: s(namespace),
        self_link: e(),
        uid: e(),
        resource_version: e(),
        generation: Some(0),
        creation_timestamp: zero_time(),
        labels: map(labels),
        ..Default::default()
    }
}

fn container(name: &str, image: &str, command: &[&str]) -> core::Container {
    core::Container {
        name: s(name),
        image: s(image),
        command: command.iter().map(|c| c.to_string()).collect(),
        working_dir: e(),
        resources: Some(core::ResourceRequirements::default()),
        termination_message_path: e(),
        image_pull_policy: e(),
        stdin: Some(false),
        stdin_once: Some(false),
        tty: Some(false),
        termination_message_policy: e(),
        ..Default::default()
    }
}

fn pod_spec(containers: Vec<core::Container>, restart_policy: &str) -> core::PodSpec {
    core::PodSpec {
        containers,
        restart_policy: s(restart_policy),
        dns_policy: e(),
        service_account_name: e(),
        service_account: e(),
        node_name: e(),
        host_network: Some(false),
        host_pid: Some(false),
        host_ipc: Some(false),
        hostname: e(),
        subdomain: e(),
        scheduler_name: e(),
        priority_class_name: e(),
        ..Default::default()
    }
}

fn template(labels: &[(&str, &str)], spec: core::PodSpec) -> core::PodTemplateSpec {
    core::PodTemplateSpec {
        metadata: Some(object_meta("", "", labels)),
        spec: Some(spec),
    }
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

#[test]
fn envelope_prefix_is_what_kubectl_sends() {
    let body = wrap(
        "apps/v1",
        "Deployment",
        &k8s_pb::api::apps::v1::Deployment::default(),
    );
    assert!(body.starts_with(b"k8s\x00\n\x15\n\x07apps/v1\x12\nDeployment\x12"));
    assert!(is_envelope(&body));
    assert!(!is_envelope(b"{\"kind\":\"Pod\"}"));
    assert!(!is_envelope(b"k8s"));
}

#[test]
fn create_deployment() {
    use k8s_pb::api::apps::v1 as apps;
    // kubectl create deployment web --image=nginx --replicas=2 -- sleep 3600
    let labels = [("app", "web")];
    let d = apps::Deployment {
        metadata: Some(object_meta("web", "", &labels)),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(2),
            selector: Some(meta::LabelSelector {
                match_labels: map(&labels),
                match_expressions: vec![],
            }),
            template: Some(template(
                &labels,
                pod_spec(vec![container("nginx", "nginx", &["sleep", "3600"])], ""),
            )),
            strategy: Some(apps::DeploymentStrategy {
                r#type: e(),
                rolling_update: None,
            }),
            min_ready_seconds: Some(0),
            paused: Some(false),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus {
            observed_generation: Some(0),
            replicas: Some(0),
            updated_replicas: Some(0),
            ready_replicas: Some(0),
            available_replicas: Some(0),
            unavailable_replicas: Some(0),
            ..Default::default()
        }),
    };
    let got = decode(&wrap("apps/v1", "Deployment", &d)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "nginx",
                        "image": "nginx",
                        "command": ["sleep", "3600"],
                        "resources": {}
                    }]}
                },
                "strategy": {}
            },
            "status": {}
        })
    );
    assert_eq!(
        keys(&got),
        ["apiVersion", "kind", "metadata", "spec", "status"]
    );
    // Go struct order, not field-number order.
    assert_eq!(
        keys(&got["spec"]),
        ["replicas", "selector", "template", "strategy"]
    );
}

#[test]
fn zero_replicas_is_kept() {
    use k8s_pb::api::apps::v1 as apps;
    let d = apps::Deployment {
        metadata: Some(object_meta("web", "default", &[])),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(0),
            revision_history_limit: Some(0),
            paused: Some(false),
            ..Default::default()
        }),
        status: None,
    };
    let got = decode(&wrap("apps/v1", "Deployment", &d)).unwrap();
    assert_eq!(
        got["spec"],
        json!({"replicas": 0, "revisionHistoryLimit": 0})
    );
    assert_eq!(
        got["metadata"],
        json!({"name": "web", "namespace": "default"})
    );
}

#[test]
fn create_configmap_with_binary_data() {
    // kubectl create configmap cm --from-literal=a=1 --from-file=blob
    let cm = core::ConfigMap {
        metadata: Some(object_meta("cm", "", &[])),
        immutable: None,
        data: map(&[("a", "1"), ("b.txt", "hello\n")]),
        binary_data: [("blob".to_string(), vec![0u8, 159, 146, 150])].into(),
    };
    let got = decode(&wrap("v1", "ConfigMap", &cm)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cm"},
            "data": {"a": "1", "b.txt": "hello\n"},
            "binaryData": {"blob": "AJ+Slg=="}
        })
    );
}

#[test]
fn create_secret_generic() {
    // kubectl create secret generic s --from-literal=password=hunter2 --from-literal=empty=
    let secret = core::Secret {
        metadata: Some(object_meta("s", "", &[])),
        immutable: None,
        data: [
            ("password".to_string(), b"hunter2".to_vec()),
            ("empty".to_string(), vec![]),
        ]
        .into(),
        string_data: BTreeMap::new(),
        r#type: s("Opaque"),
    };
    let got = decode(&wrap("v1", "Secret", &secret)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s"},
            "data": {"empty": "", "password": "aHVudGVyMg=="},
            "type": "Opaque"
        })
    );
}

#[test]
fn create_namespace_and_serviceaccount() {
    let ns = core::Namespace {
        metadata: Some(object_meta("team-a", "", &[])),
        spec: Some(core::NamespaceSpec { finalizers: vec![] }),
        status: Some(core::NamespaceStatus {
            phase: e(),
            conditions: vec![],
        }),
    };
    assert_eq!(
        decode(&wrap("v1", "Namespace", &ns)).unwrap(),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}, "spec": {}, "status": {}})
    );
    let sa = core::ServiceAccount {
        metadata: Some(object_meta("robot", "", &[])),
        secrets: vec![],
        image_pull_secrets: vec![],
        automount_service_account_token: None,
    };
    assert_eq!(
        decode(&wrap("v1", "ServiceAccount", &sa)).unwrap(),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}})
    );
}

fn service_port(name: &str, port: i32, target: IntOrString) -> core::ServicePort {
    core::ServicePort {
        name: s(name),
        protocol: s("TCP"),
        app_protocol: None,
        port: Some(port),
        target_port: Some(target),
        node_port: Some(0),
    }
}

#[test]
fn create_service_clusterip() {
    // kubectl create service clusterip my-svc --tcp=5678:8080 --tcp=443:https
    let labels = [("app", "my-svc")];
    let svc = core::Service {
        metadata: Some(object_meta("my-svc", "", &labels)),
        spec: Some(core::ServiceSpec {
            ports: vec![
                service_port(
                    "5678-8080",
                    5678,
                    IntOrString {
                        r#type: Some(0),
                        int_val: Some(8080),
                        str_val: e(),
                    },
                ),
                service_port(
                    "443-https",
                    443,
                    IntOrString {
                        r#type: Some(1),
                        int_val: Some(0),
                        str_val: s("https"),
                    },
                ),
                // no target port: a zero IntOrString, which upstream defaults
                service_port(
                    "80",
                    80,
                    IntOrString {
                        r#type: Some(0),
                        int_val: Some(0),
                        str_val: e(),
                    },
                ),
            ],
            selector: map(&labels),
            cluster_ip: e(),
            r#type: s("ClusterIP"),
            session_affinity: e(),
            load_balancer_ip: e(),
            external_name: e(),
            external_traffic_policy: e(),
            health_check_node_port: Some(0),
            publish_not_ready_addresses: Some(false),
            ..Default::default()
        }),
        status: Some(core::ServiceStatus {
            load_balancer: Some(core::LoadBalancerStatus { ingress: vec![] }),
            conditions: vec![],
        }),
    };
    let got = decode(&wrap("v1", "Service", &svc)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "my-svc", "labels": {"app": "my-svc"}},
            "spec": {
                "ports": [
                    {"name": "5678-8080", "protocol": "TCP", "port": 5678, "targetPort": 8080},
                    {"name": "443-https", "protocol": "TCP", "port": 443, "targetPort": "https"},
                    {"name": "80", "protocol": "TCP", "port": 80}
                ],
                "selector": {"app": "my-svc"},
                "type": "ClusterIP"
            },
            "status": {"loadBalancer": {}}
        })
    );
}

#[test]
fn create_job_and_cronjob() {
    use k8s_pb::api::batch::v1 as batch;
    // kubectl create job j --image=busybox -- date
    let job_spec = || batch::JobSpec {
        template: Some(template(
            &[],
            pod_spec(vec![container("j", "busybox", &["date"])], "Never"),
        )),
        ..Default::default()
    };
    let job = batch::Job {
        metadata: Some(object_meta("j", "", &[])),
        spec: Some(job_spec()),
        status: Some(batch::JobStatus {
            active: Some(0),
            succeeded: Some(0),
            failed: Some(0),
            ..Default::default()
        }),
    };
    let pod = json!({
        "metadata": {},
        "spec": {
            "containers": [{"name": "j", "image": "busybox", "command": ["date"], "resources": {}}],
            "restartPolicy": "Never"
        }
    });
    assert_eq!(
        decode(&wrap("batch/v1", "Job", &job)).unwrap(),
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "j"},
            "spec": {"template": pod},
            "status": {}
        })
    );
    // kubectl create cronjob cj --image=busybox --schedule="*/1 * * * *" -- date
    let cj = batch::CronJob {
        metadata: Some(object_meta("cj", "", &[])),
        spec: Some(batch::CronJobSpec {
            schedule: s("*/1 * * * *"),
            concurrency_policy: e(),
            job_template: Some(batch::JobTemplateSpec {
                metadata: Some(object_meta("cj", "", &[])),
                spec: Some(job_spec()),
            }),
            ..Default::default()
        }),
        status: Some(batch::CronJobStatus::default()),
    };
    assert_eq!(
        decode(&wrap("batch/v1", "CronJob", &cj)).unwrap(),
        json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "cj"},
            "spec": {
                "schedule": "*/1 * * * *",
                "jobTemplate": {"metadata": {"name": "cj"}, "spec": {"template": pod}}
            },
            "status": {}
        })
    );
}

#[test]
fn create_token() {
    use k8s_pb::api::authentication::v1 as authn;
    // kubectl create token robot --duration=1h
    let tr = authn::TokenRequest {
        metadata: Some(object_meta("robot", "default", &[])),
        spec: Some(authn::TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            bound_object_ref: None,
        }),
        status: Some(authn::TokenRequestStatus {
            token: e(),
            expiration_timestamp: zero_time(),
        }),
    };
    assert_eq!(
        decode(&wrap("authentication.k8s.io/v1", "TokenRequest", &tr)).unwrap(),
        json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "metadata": {"name": "robot", "namespace": "default"},
            "spec": {"expirationSeconds": 3600},
            // TokenRequestStatus.Token is `json:"token"` (no omitempty)
            "status": {"token": ""}
        })
    );
}

#[test]
fn auth_can_i_and_whoami() {
    use k8s_pb::api::authentication::v1 as authn;
    use k8s_pb::api::authorization::v1 as authz;
    // kubectl auth can-i create pods -n default
    let ssar = authz::SelfSubjectAccessReview {
        metadata: Some(object_meta("", "", &[])),
        spec: Some(authz::SelfSubjectAccessReviewSpec {
            resource_attributes: Some(authz::ResourceAttributes {
                namespace: s("default"),
                verb: s("create"),
                group: e(),
                version: e(),
                resource: s("pods"),
                subresource: e(),
                name: e(),
                field_selector: None,
                label_selector: None,
            }),
            non_resource_attributes: None,
        }),
        status: Some(authz::SubjectAccessReviewStatus {
            allowed: Some(false),
            denied: Some(false),
            reason: e(),
            evaluation_error: e(),
        }),
    };
    assert_eq!(
        decode(&wrap(
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview",
            &ssar
        ))
        .unwrap(),
        json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "metadata": {},
            "spec": {"resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods"}},
            "status": {"allowed": false}
        })
    );
    // kubectl auth whoami
    let ssr = authn::SelfSubjectReview {
        metadata: Some(object_meta("", "", &[])),
        status: Some(authn::SelfSubjectReviewStatus {
            user_info: Some(authn::UserInfo {
                username: e(),
                uid: e(),
                groups: vec![],
                extra: [(
                    "scopes".to_string(),
                    authn::ExtraValue {
                        items: vec!["a".into(), "b".into()],
                    },
                )]
                .into(),
            }),
        }),
    };
    assert_eq!(
        decode(&wrap("authentication.k8s.io/v1", "SelfSubjectReview", &ssr)).unwrap(),
        json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
            "metadata": {},
            "status": {"userInfo": {"extra": {"scopes": ["a", "b"]}}}
        })
    );
}

fn q(v: &str) -> Quantity {
    Quantity { string: s(v) }
}

#[test]
fn pod_with_resources_status_and_inlined_structs() {
    let mut c = container("app", "nginx:1.27", &[]);
    c.resources = Some(core::ResourceRequirements {
        limits: [
            ("cpu".to_string(), q("500m")),
            ("memory".to_string(), q("128Mi")),
        ]
        .into(),
        requests: [("cpu".to_string(), q("250m"))].into(),
        claims: vec![],
    });
    c.ports = vec![core::ContainerPort {
        name: s("http"),
        host_port: Some(0),
        container_port: Some(80),
        protocol: s("TCP"),
        host_ip: e(),
    }];
    c.liveness_probe = Some(core::Probe {
        handler: Some(core::ProbeHandler {
            http_get: Some(core::HttpGetAction {
                path: s("/healthz"),
                port: Some(IntOrString {
                    r#type: Some(1),
                    int_val: Some(0),
                    str_val: s("http"),
                }),
                host: e(),
                scheme: s("HTTP"),
                http_headers: vec![],
            }),
            ..Default::default()
        }),
        initial_delay_seconds: Some(5),
        timeout_seconds: Some(0),
        period_seconds: Some(0),
        success_threshold: Some(0),
        failure_threshold: Some(0),
        termination_grace_period_seconds: None,
    });
    c.volume_mounts = vec![core::VolumeMount {
        name: s("cfg"),
        read_only: Some(true),
        mount_path: s("/etc/cfg"),
        sub_path: e(),
        mount_propagation: None,
        sub_path_expr: e(),
        recursive_read_only: None,
    }];
    let mut spec = pod_spec(vec![c], "Always");
    spec.host_pid = Some(true);
    spec.termination_grace_period_seconds = Some(0);
    spec.volumes = vec![core::Volume {
        name: s("cfg"),
        volume_source: Some(core::VolumeSource {
            config_map: Some(core::ConfigMapVolumeSource {
                local_object_reference: Some(core::LocalObjectReference { name: s("cm") }),
                items: vec![],
                default_mode: Some(420),
                optional: None,
            }),
            ..Default::default()
        }),
    }];
    let pod = core::Pod {
        metadata: Some(object_meta("p", "default", &[])),
        spec: Some(spec),
        status: Some(core::PodStatus {
            phase: s("Running"),
            host_ip: s("10.0.0.1"),
            host_ips: vec![core::HostIp { ip: s("10.0.0.1") }],
            pod_ip: s("10.1.0.5"),
            pod_ips: vec![
                core::PodIp { ip: s("10.1.0.5") },
                core::PodIp { ip: s("fd00::5") },
            ],
            start_time: Some(meta::Time {
                seconds: Some(1_704_067_200),
                nanos: Some(0),
            }),
            qos_class: s("Burstable"),
            ..Default::default()
        }),
    };
    let got = decode(&wrap("v1", "Pod", &pod)).unwrap();
    assert_eq!(
        got["spec"],
        json!({
            "volumes": [{"name": "cfg", "configMap": {"name": "cm", "defaultMode": 420}}],
            "containers": [{
                "name": "app",
                "image": "nginx:1.27",
                "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}],
                "resources": {
                    "limits": {"cpu": "500m", "memory": "128Mi"},
                    "requests": {"cpu": "250m"}
                },
                "volumeMounts": [{"name": "cfg", "readOnly": true, "mountPath": "/etc/cfg"}],
                "livenessProbe": {
                    "httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                    "initialDelaySeconds": 5
                }
            }],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 0,
            "hostPID": true
        })
    );
    assert_eq!(
        got["status"],
        json!({
            "phase": "Running",
            "hostIP": "10.0.0.1",
            "hostIPs": [{"ip": "10.0.0.1"}],
            "podIP": "10.1.0.5",
            "podIPs": [{"ip": "10.1.0.5"}, {"ip": "fd00::5"}],
            "startTime": "2024-01-01T00:00:00Z",
            "qosClass": "Burstable"
        })
    );
}

#[test]
fn rbac_kinds() {
    use k8s_pb::api::rbac::v1 as rbac;
    // kubectl create role r --verb=get,list --resource=pods
    let role = rbac::Role {
        metadata: Some(object_meta("r", "", &[])),
        rules: vec![rbac::PolicyRule {
            verbs: vec!["get".into(), "list".into()],
            api_groups: vec!["".into()],
            resources: vec!["pods".into()],
            resource_names: vec![],
            non_resource_ur_ls: vec![],
        }],
    };
    assert_eq!(
        decode(&wrap("rbac.authorization.k8s.io/v1", "Role", &role)).unwrap(),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "r"},
            "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}]
        })
    );
    let cr = rbac::ClusterRole {
        metadata: Some(object_meta("cr", "", &[])),
        rules: vec![rbac::PolicyRule {
            verbs: vec!["get".into()],
            non_resource_ur_ls: vec!["/healthz".into()],
            ..Default::default()
        }],
        aggregation_rule: None,
    };
    assert_eq!(
        decode(&wrap("rbac.authorization.k8s.io/v1", "ClusterRole", &cr)).unwrap()["rules"],
        json!([{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}])
    );
    // kubectl create clusterrolebinding b --clusterrole=cr --user=alice --serviceaccount=ns:sa
    let crb = rbac::ClusterRoleBinding {
        metadata: Some(object_meta("b", "", &[])),
        subjects: vec![
            rbac::Subject {
                kind: s("User"),
                api_group: s("rbac.authorization.k8s.io"),
                name: s("alice"),
                namespace: e(),
            },
            rbac::Subject {
                kind: s("ServiceAccount"),
                api_group: e(),
                name: s("sa"),
                namespace: s("ns"),
            },
        ],
        role_ref: Some(rbac::RoleRef {
            api_group: s("rbac.authorization.k8s.io"),
            kind: s("ClusterRole"),
            name: s("cr"),
        }),
    };
    let got = decode(&wrap(
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        &crb,
    ))
    .unwrap();
    assert_eq!(
        got["subjects"],
        json!([
            {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"},
            {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}
        ])
    );
    assert_eq!(
        got["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cr"})
    );
    let rb = rbac::RoleBinding {
        metadata: Some(object_meta("rb", "", &[])),
        subjects: vec![],
        role_ref: crb.role_ref.clone(),
    };
    assert!(decode(&wrap("rbac.authorization.k8s.io/v1", "RoleBinding", &rb)).is_ok());
}

#[test]
fn ingress_inlines_rule_value() {
    use k8s_pb::api::networking::v1 as net;
    // kubectl create ingress simple --rule="foo.com/bar=svc1:8080"
    let ing = net::Ingress {
        metadata: Some(object_meta("simple", "", &[])),
        spec: Some(net::IngressSpec {
            ingress_class_name: None,
            default_backend: None,
            tls: vec![],
            rules: vec![net::IngressRule {
                host: s("foo.com"),
                ingress_rule_value: Some(net::IngressRuleValue {
                    http: Some(net::HttpIngressRuleValue {
                        paths: vec![net::HttpIngressPath {
                            path: s("/bar"),
                            path_type: s("Exact"),
                            backend: Some(net::IngressBackend {
                                service: Some(net::IngressServiceBackend {
                                    name: s("svc1"),
                                    port: Some(net::ServiceBackendPort {
                                        name: e(),
                                        number: Some(8080),
                                    }),
                                }),
                                resource: None,
                            }),
                        }],
                    }),
                }),
            }],
        }),
        status: Some(net::IngressStatus {
            load_balancer: Some(net::IngressLoadBalancerStatus { ingress: vec![] }),
        }),
    };
    assert_eq!(
        decode(&wrap("networking.k8s.io/v1", "Ingress", &ing)).unwrap(),
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "simple"},
            "spec": {"rules": [{"host": "foo.com", "http": {"paths": [{
                "path": "/bar",
                "pathType": "Exact",
                "backend": {"service": {"name": "svc1", "port": {"number": 8080}}}
            }]}}]},
            "status": {"loadBalancer": {}}
        })
    );
}

#[test]
fn quota_priorityclass_pdb() {
    // kubectl create quota q --hard=cpu=1,memory=1G,pods=2
    let quota = core::ResourceQuota {
        metadata: Some(object_meta("q", "", &[])),
        spec: Some(core::ResourceQuotaSpec {
            hard: [
                ("pods".to_string(), q("2")),
                ("cpu".to_string(), q("1")),
                ("memory".to_string(), q("1G")),
            ]
            .into(),
            scopes: vec![],
            scope_selector: None,
        }),
        status: Some(core::ResourceQuotaStatus::default()),
    };
    let got = decode(&wrap("v1", "ResourceQuota", &quota)).unwrap();
    assert_eq!(
        got["spec"],
        json!({"hard": {"cpu": "1", "memory": "1G", "pods": "2"}})
    );
    assert_eq!(keys(&got["spec"]["hard"]), ["cpu", "memory", "pods"]);
    assert_eq!(got["status"], json!({}));

    // kubectl create priorityclass high --value=1000 --description="high"
    let pc = k8s_pb::api::scheduling::v1::PriorityClass {
        metadata: Some(object_meta("high", "", &[])),
        value: Some(1000),
        global_default: Some(false),
        description: s("high"),
        preemption_policy: s("PreemptLowerPriority"),
    };
    assert_eq!(
        decode(&wrap("scheduling.k8s.io/v1", "PriorityClass", &pc)).unwrap(),
        json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": "high"},
            "value": 1000,
            "description": "high",
            "preemptionPolicy": "PreemptLowerPriority"
        })
    );

    // kubectl create pdb p --selector=app=web --max-unavailable=0
    use k8s_pb::api::policy::v1 as policy;
    let pdb = policy::PodDisruptionBudget {
        metadata: Some(object_meta("p", "", &[])),
        spec: Some(policy::PodDisruptionBudgetSpec {
            min_available: None,
            selector: Some(meta::LabelSelector {
                match_labels: map(&[("app", "web")]),
                match_expressions: vec![],
            }),
            max_unavailable: Some(IntOrString {
                r#type: Some(0),
                int_val: Some(0),
                str_val: e(),
            }),
            unhealthy_pod_eviction_policy: None,
        }),
        status: None,
    };
    assert_eq!(
        decode(&wrap("policy/v1", "PodDisruptionBudget", &pdb)).unwrap()["spec"],
        // a pointer IntOrString: 0 is meaningful
        json!({"selector": {"matchLabels": {"app": "web"}}, "maxUnavailable": 0})
    );
}

#[test]
fn subresource_and_option_bodies() {
    // kubectl scale uses autoscaling/v1 Scale
    let scale = k8s_pb::api::autoscaling::v1::Scale {
        metadata: Some(object_meta("web", "default", &[])),
        spec: Some(k8s_pb::api::autoscaling::v1::ScaleSpec { replicas: Some(3) }),
        status: None,
    };
    assert_eq!(
        decode(&wrap("autoscaling/v1", "Scale", &scale)).unwrap()["spec"],
        json!({"replicas": 3})
    );
    // DeleteOptions, as sent with any group's version
    let opts = meta::DeleteOptions {
        grace_period_seconds: Some(0),
        preconditions: None,
        orphan_dependents: None,
        propagation_policy: s("Foreground"),
        dry_run: vec!["All".into()],
        ignore_store_read_error_with_cluster_breaking_potential: None,
    };
    for av in ["v1", "meta.k8s.io/v1", "apps/v1"] {
        assert_eq!(
            decode(&wrap(av, "DeleteOptions", &opts)).unwrap(),
            json!({
                "apiVersion": av, "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "propagationPolicy": "Foreground",
                "dryRun": ["All"]
            })
        );
    }
    // Eviction (policy/v1) embeds DeleteOptions
    let ev = k8s_pb::api::policy::v1::Eviction {
        metadata: Some(object_meta("p", "default", &[])),
        delete_options: Some(opts.clone()),
    };
    assert_eq!(
        decode(&wrap("policy/v1", "Eviction", &ev)).unwrap()["deleteOptions"]["gracePeriodSeconds"],
        json!(0)
    );
    let binding = core::Binding {
        metadata: Some(object_meta("p", "default", &[])),
        target: Some(core::ObjectReference {
            kind: s("Node"),
            namespace: e(),
            name: s("node-1"),
            uid: e(),
            api_version: e(),
            resource_version: e(),
            field_path: e(),
        }),
    };
    assert_eq!(
        decode(&wrap("v1", "Binding", &binding)).unwrap()["target"],
        json!({"kind": "Node", "name": "node-1"})
    );
}

#[test]
fn micro_time_duration_and_raw_extension() {
    use k8s_pb::api::coordination::v1 as coord;
    let lease = coord::Lease {
        metadata: Some(object_meta("l", "kube-system", &[])),
        spec: Some(coord::LeaseSpec {
            holder_identity: s("node-1"),
            lease_duration_seconds: Some(40),
            renew_time: Some(meta::MicroTime {
                seconds: Some(1_709_210_096),
                nanos: Some(123_456_789),
            }),
            ..Default::default()
        }),
    };
    assert_eq!(
        decode(&wrap("coordination.k8s.io/v1", "Lease", &lease)).unwrap()["spec"],
        json!({
            "holderIdentity": "node-1",
            "leaseDurationSeconds": 40,
            "renewTime": "2024-02-29T12:34:56.123456Z"
        })
    );

    // ControllerRevision.data is a RawExtension holding JSON.
    let cr = k8s_pb::api::apps::v1::ControllerRevision {
        metadata: Some(object_meta("rev", "", &[])),
        data: Some(RawExtension {
            raw: Some(br#"{"spec":{"template":{"x":1}}}"#.to_vec()),
        }),
        revision: Some(2),
    };
    assert_eq!(
        decode(&wrap("apps/v1", "ControllerRevision", &cr)).unwrap(),
        json!({
            "apiVersion": "apps/v1", "kind": "ControllerRevision",
            "metadata": {"name": "rev"},
            "data": {"spec": {"template": {"x": 1}}},
            "revision": 2
        })
    );
    // ... or an embedded protobuf object, or opaque bytes.
    let inner = wrap(
        "v1",
        "ConfigMap",
        &core::ConfigMap {
            metadata: Some(object_meta("inner", "", &[])),
            data: map(&[("k", "v")]),
            ..Default::default()
        },
    );
    let cr2 = k8s_pb::api::apps::v1::ControllerRevision {
        data: Some(RawExtension { raw: Some(inner) }),
        ..cr.clone()
    };
    assert_eq!(
        decode(&wrap("apps/v1", "ControllerRevision", &cr2)).unwrap()["data"],
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "inner"}, "data": {"k": "v"}})
    );
    let cr3 = k8s_pb::api::apps::v1::ControllerRevision {
        data: Some(RawExtension {
            raw: Some(vec![0xff, 0x00]),
        }),
        ..cr
    };
    assert_eq!(
        decode(&wrap("apps/v1", "ControllerRevision", &cr3)).unwrap()["data"],
        json!("/wA=")
    );

    // events.k8s.io Event: MicroTime, and FieldsV1 in managedFields.
    let ev = k8s_pb::api::events::v1::Event {
        metadata: Some(meta::ObjectMeta {
            managed_fields: vec![meta::ManagedFieldsEntry {
                manager: s("kubectl"),
                operation: s("Update"),
                api_version: s("events.k8s.io/v1"),
                time: Some(meta::Time {
                    seconds: Some(1_704_067_200),
                    nanos: Some(0),
                }),
                fields_type: s("FieldsV1"),
                fields_v1: Some(meta::FieldsV1 {
                    raw: Some(br#"{"f:note":{}}"#.to_vec()),
                }),
                subresource: e(),
            }],
            ..object_meta("e", "default", &[])
        }),
        event_time: Some(meta::MicroTime {
            seconds: Some(1_704_067_200),
            nanos: Some(5_000),
        }),
        reporting_controller: s("me"),
        reporting_instance: s("me-1"),
        action: s("Test"),
        reason: s("Testing"),
        note: s("hello"),
        r#type: s("Normal"),
        deprecated_count: Some(0),
        ..Default::default()
    };
    let got = decode(&wrap("events.k8s.io/v1", "Event", &ev)).unwrap();
    assert_eq!(got["eventTime"], json!("2024-01-01T00:00:00.000005Z"));
    assert_eq!(
        got["metadata"]["managedFields"],
        json!([{
            "manager": "kubectl",
            "operation": "Update",
            "apiVersion": "events.k8s.io/v1",
            "time": "2024-01-01T00:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:note": {}}
        }])
    );
    assert!(got.get("deprecatedCount").is_none());
}

#[test]
fn metrics_duration() {
    use k8s_pb::metrics::pkg::apis::metrics::v1beta1 as metrics;
    let nm = metrics::NodeMetrics {
        metadata: Some(object_meta("node-1", "", &[])),
        timestamp: Some(meta::Time {
            seconds: Some(1_704_067_200),
            nanos: Some(999_999_999),
        }),
        window: Some(meta::Duration {
            duration: Some(90_500_000_000),
        }),
        usage: [
            ("cpu".to_string(), q("250m")),
            ("memory".to_string(), q("1Gi")),
        ]
        .into(),
    };
    assert_eq!(
        decode(&wrap("metrics.k8s.io/v1beta1", "NodeMetrics", &nm)).unwrap(),
        json!({
            "apiVersion": "metrics.k8s.io/v1beta1", "kind": "NodeMetrics",
            "metadata": {"name": "node-1"},
            "timestamp": "2024-01-01T00:00:00Z",
            "window": "1m30.5s",
            "usage": {"cpu": "250m", "memory": "1Gi"}
        })
    );
}

#[test]
fn crd_schema_unions_and_json() {
    use k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
    let string = ext::JsonSchemaProps {
        r#type: s("string"),
        ..Default::default()
    };
    let props = ext::JsonSchemaProps {
        r#type: s("object"),
        properties: [
            ("name".to_string(), string.clone()),
            (
                "tags".to_string(),
                ext::JsonSchemaProps {
                    r#type: s("array"),
                    items: Some(Box::new(ext::JsonSchemaPropsOrArray {
                        schema: Some(Box::new(string.clone())),
                        j_son_schemas: vec![],
                    })),
                    ..Default::default()
                },
            ),
        ]
        .into(),
        additional_properties: Some(Box::new(ext::JsonSchemaPropsOrBool {
            allows: Some(false),
            schema: None,
        })),
        default: Some(ext::Json {
            raw: Some(br#"{"name":"x"}"#.to_vec()),
        }),
        x_kubernetes_preserve_unknown_fields: Some(true),
        ..Default::default()
    };
    let crd = ext::CustomResourceDefinition {
        metadata: Some(object_meta("widgets.example.com", "", &[])),
        spec: Some(ext::CustomResourceDefinitionSpec {
            group: s("example.com"),
            names: Some(ext::CustomResourceDefinitionNames {
                plural: s("widgets"),
                kind: s("Widget"),
                ..Default::default()
            }),
            scope: s("Namespaced"),
            versions: vec![ext::CustomResourceDefinitionVersion {
                name: s("v1"),
                served: Some(true),
                storage: Some(true),
                schema: Some(ext::CustomResourceValidation {
                    open_apiv3_schema: Some(props),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    let got = decode(&wrap(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        &crd,
    ))
    .unwrap();
    assert_eq!(
        got["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
        json!({
            "type": "object",
            "default": {"name": "x"},
            "properties": {
                "name": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}}
            },
            "additionalProperties": false,
            "x-kubernetes-preserve-unknown-fields": true
        })
    );
}

#[test]
fn message_names() {
    for (av, kind, name) in [
        ("v1", "Pod", "k8s.io.api.core.v1.Pod"),
        ("apps/v1", "Deployment", "k8s.io.api.apps.v1.Deployment"),
        ("events.k8s.io/v1", "Event", "k8s.io.api.events.v1.Event"),
        ("v1", "Event", "k8s.io.api.core.v1.Event"),
        (
            "apiregistration.k8s.io/v1",
            "APIService",
            "k8s.io.kube_aggregator.pkg.apis.apiregistration.v1.APIService",
        ),
        (
            "apps/v1",
            "DeleteOptions",
            "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions",
        ),
        (
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "k8s.io.api.discovery.v1.EndpointSlice",
        ),
        (
            "storage.k8s.io/v1",
            "CSIDriver",
            "k8s.io.api.storage.v1.CSIDriver",
        ),
    ] {
        assert_eq!(
            navarch_pb::message_name(av, kind),
            Some(name),
            "{av} {kind}"
        );
    }
    assert_eq!(navarch_pb::message_name("apps/v1", "Pod"), None);
    assert_eq!(navarch_pb::message_name("example.com/v1", "Widget"), None);
    assert!(!navarch_pb::supports("v1", "ObjectMeta2"));
}

#[test]
fn all_registry_kinds_supported() {
    for (av, kind) in [
        ("v1", "Namespace"),
        ("v1", "Node"),
        ("v1", "Pod"),
        ("v1", "Service"),
        ("v1", "Endpoints"),
        ("v1", "ReplicationController"),
        ("v1", "ConfigMap"),
        ("v1", "Secret"),
        ("v1", "ServiceAccount"),
        ("v1", "Event"),
        ("v1", "Binding"),
        ("v1", "ResourceQuota"),
        ("events.k8s.io/v1", "Event"),
        ("coordination.k8s.io/v1", "Lease"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "ReplicaSet"),
        ("apps/v1", "DaemonSet"),
        ("apps/v1", "StatefulSet"),
        ("apps/v1", "ControllerRevision"),
        ("batch/v1", "Job"),
        ("batch/v1", "CronJob"),
        ("discovery.k8s.io/v1", "EndpointSlice"),
        ("scheduling.k8s.io/v1", "PriorityClass"),
        ("policy/v1", "PodDisruptionBudget"),
        ("policy/v1", "Eviction"),
        ("authentication.k8s.io/v1", "TokenRequest"),
        ("authentication.k8s.io/v1", "SelfSubjectReview"),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
        ("autoscaling/v1", "Scale"),
        ("meta.k8s.io/v1", "DeleteOptions"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("networking.k8s.io/v1", "Ingress"),
    ] {
        assert!(navarch_pb::supports(av, kind), "{av} {kind}");
        // An object with only empty metadata decodes to just its type.
        let body = wrap(av, kind, &core::ConfigMap::default());
        assert_eq!(
            decode(&body).unwrap(),
            json!({"apiVersion": av, "kind": kind})
        );
    }
}

#[test]
fn errors() {
    let good = wrap(
        "v1",
        "ConfigMap",
        &core::ConfigMap {
            metadata: Some(object_meta("cm", "", &[])),
            data: map(&[("a", "1")]),
            ..Default::default()
        },
    );
    assert!(decode(&good).is_ok());

    assert_eq!(decode(b"{\"kind\":\"Pod\"}"), Err(Error::BadMagic));
    assert_eq!(decode(b""), Err(Error::BadMagic));
    assert_eq!(decode(b"k8s\0"), Err(Error::MissingTypeMeta("apiVersion")));

    // Every truncation of a valid body fails cleanly (or, at a field
    // boundary inside raw, still decodes).
    for n in 4..good.len() {
        let _ = decode(&good[..n]);
    }
    let err = decode(&good[..good.len() - 6]).unwrap_err();
    assert!(err.to_string().starts_with("truncated field"), "{err}");
    // a lone continuation byte: truncated varint
    let mut b = b"k8s\0".to_vec();
    b.push(0x8a);
    assert_eq!(decode(&b), Err(Error::TruncatedVarint { offset: 4 }));
    assert_eq!(
        Error::TruncatedVarint { offset: 4 }.to_string(),
        "truncated varint at byte 4"
    );

    let unknown = wrap("example.com/v1", "Widget", &core::ConfigMap::default());
    let err = decode(&unknown).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown kind \"Widget\" in apiVersion \"example.com/v1\""
    );

    // ConfigMap.data (field 2) sent as a varint
    let mut raw = vec![0x10, 0x01];
    let body = envelope_raw("v1", "ConfigMap", &raw);
    assert_eq!(
        decode(&body).unwrap_err().to_string(),
        "wire type mismatch for field 2 of k8s.io.api.core.v1.ConfigMap: got 0, expected 2"
    );
    // ObjectMeta.name with invalid UTF-8
    raw = vec![0x0a, 0x04, 0x0a, 0x02, 0xc3, 0x28];
    let body = envelope_raw("v1", "ConfigMap", &raw);
    assert_eq!(
        decode(&body).unwrap_err().to_string(),
        "invalid utf-8 in field 1 of k8s.io.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    // gzip content encoding is not supported
    let u = Unknown {
        type_meta: Some(TypeMeta {
            api_version: s("v1"),
            kind: s("Pod"),
        }),
        raw: Some(vec![]),
        content_encoding: s("gzip"),
        content_type: e(),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(u.encode_to_vec());
    assert_eq!(
        decode(&body),
        Err(Error::UnsupportedContentEncoding("gzip".into()))
    );
}

fn envelope_raw(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(TypeMeta {
            api_version: s(api_version),
            kind: s(kind),
        }),
        raw: Some(raw.to_vec()),
        content_encoding: e(),
        content_type: e(),
    };
    let mut body = b"k8s\0".to_vec();
    body.extend(u.encode_to_vec());
    body
}

#[test]
fn unknown_fields_are_skipped_and_repeats_merge() {
    // field 99 (varint), field 98 (fixed32), field 97 (fixed64) on a ConfigMap,
    // then metadata twice: protobuf merges them.
    let mut raw = vec![
        0x98, 0x06, 0x05, 0x95, 0x06, 1, 2, 3, 4, 0x89, 0x06, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    raw.extend([0x0a, 0x03, 0x0a, 0x01, b'a']); // metadata { name: "a" }
    raw.extend([0x0a, 0x03, 0x1a, 0x01, b'n']); // metadata { namespace: "n" }
    let got = decode(&envelope_raw("v1", "ConfigMap", &raw)).unwrap();
    assert_eq!(
        got,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "n"}})
    );
}

#[test]
fn deep_nesting_is_refused() {
    // JSONSchemaProps.not (field 28) nested 1000 deep.
    let mut inner: Vec<u8> = vec![];
    for _ in 0..1000 {
        let mut m = vec![0xe2, 0x01]; // tag: field 28, wire type 2
        prost::encoding::encode_varint(inner.len() as u64, &mut m);
        m.extend(&inner);
        inner = m;
    }
    // CustomResourceValidation { openAPIV3Schema(1): inner } inside
    // CRDVersion.schema(4) inside spec.versions(7) inside CRD.spec(2).
    let wrap_field = |tag: u8, body: &[u8]| {
        let mut m = vec![tag];
        prost::encoding::encode_varint(body.len() as u64, &mut m);
        m.extend(body);
        m
    };
    let v = wrap_field(0x0a, &inner);
    let v = wrap_field(0x22, &v);
    let v = wrap_field(0x3a, &v);
    let v = wrap_field(0x12, &v);
    let body = envelope_raw("apiextensions.k8s.io/v1", "CustomResourceDefinition", &v);
    assert!(matches!(decode(&body), Err(Error::TooDeep(_))));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<u8> {
        let mut c = container("app", "nginx", &["sh", "-c", "true"]);
        c.resources = Some(core::ResourceRequirements {
            limits: [("cpu".to_string(), q("1"))].into(),
            ..Default::default()
        });
        let pod = core::Pod {
            metadata: Some(object_meta("p", "default", &[("a", "b")])),
            spec: Some(pod_spec(vec![c], "Always")),
            status: None,
        };
        wrap("v1", "Pod", &pod)
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&body);
            let mut enveloped = b"k8s\0".to_vec();
            enveloped.extend(&body);
            let _ = decode(&enveloped);
        }

        #[test]
        fn random_raw_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..512),
                                   kind in prop::sample::select(vec!["Pod", "Deployment", "CustomResourceDefinition", "ConfigMap"])) {
            let av = match kind {
                "Deployment" => "apps/v1",
                "CustomResourceDefinition" => "apiextensions.k8s.io/v1",
                _ => "v1",
            };
            let _ = decode(&envelope_raw(av, kind, &raw));
        }

        #[test]
        fn mutated_bodies_never_panic(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                                      cut in any::<prop::sample::Index>()) {
            let mut body = sample();
            for (i, b) in edits {
                let at = i.index(body.len());
                body[at] = b;
            }
            let n = cut.index(body.len() + 1);
            let _ = decode(&body[..n]);
        }
    }
}
