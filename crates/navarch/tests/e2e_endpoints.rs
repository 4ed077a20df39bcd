//! The Endpoints and EndpointSlice controllers through the real binary and
//! kubectl: pods bound to a plain Node (no agent), their IPs and readiness
//! reported with `kubectl patch --subresource=status`, read back with
//! `kubectl get endpoints`, `kubectl describe svc` and `kubectl get
//! endpointslices`.

mod common;

use common::{wait_for, TestServer};

const NODE: &str = "apiVersion: v1\nkind: Node\nmetadata:\n  name: node-a\n  labels:\n    kubernetes.io/hostname: node-a\n    topology.kubernetes.io/zone: zone-1\nstatus:\n  capacity: {cpu: \"8\", memory: 8Gi, pods: \"110\"}\n  allocatable: {cpu: \"8\", memory: 8Gi, pods: \"110\"}\n  conditions: [{type: Ready, status: \"True\"}]\n";

const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n";

fn pod(name: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: web}}\nspec:\n  nodeName: node-a\n  containers:\n  - name: c\n    image: nginx\n    ports: [{{name: http, containerPort: 8080}}]\n")
}

fn report(s: &TestServer, name: &str, ip: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let patch = format!(
        r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"{status}"}}]}}}}"#
    );
    s.must_kubectl(&[
        "patch",
        "pod",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ]);
}

/// The value of `Endpoints:` in `kubectl describe svc web`.
fn described_endpoints(s: &TestServer) -> String {
    let d = s.must_kubectl(&["describe", "svc", "web"]);
    d.lines()
        .find_map(|l| l.strip_prefix("Endpoints:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no Endpoints: line in\n{d}"))
}

#[test]
fn kubectl_shows_endpoints_and_endpoint_slices_of_a_service() {
    let s = TestServer::start();
    s.must_kubectl_stdin(&["apply", "-f", "-"], NODE);
    for p in ["web-1", "web-2", "web-3"] {
        s.must_kubectl_stdin(&["create", "-f", "-"], &pod(p));
    }
    report(&s, "web-1", "10.244.0.11", true);
    report(&s, "web-2", "10.244.0.12", true);
    report(&s, "web-3", "10.244.0.13", false);
    s.must_kubectl_stdin(&["create", "-f", "-"], SVC);

    // Ready addresses with the named targetPort resolved.
    let row = wait_for(20, "endpoints of web", || {
        let out = s.must_kubectl(&["get", "endpoints", "web", "--no-headers"]);
        (out.contains("10.244.0.11:8080") && out.contains("10.244.0.12:8080")).then_some(out)
    });
    assert!(!row.contains("10.244.0.13"), "{row}");
    let nr = s.must_kubectl(&[
        "get",
        "endpoints",
        "web",
        "-o",
        "jsonpath={.subsets[*].notReadyAddresses[*].ip}",
    ]);
    assert_eq!(nr.trim(), "10.244.0.13");

    let line = wait_for(20, "describe svc shows the endpoints", || {
        let v = described_endpoints(&s);
        (v.contains("10.244.0.11:8080") && v.contains("10.244.0.12:8080")).then_some(v)
    });
    assert!(!line.contains("10.244.0.13"), "{line}");

    let slices = wait_for(20, "endpoint slices of web", || {
        let out = s.must_kubectl(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
        ]);
        out.contains("10.244.0.11").then_some(out)
    });
    let rows: Vec<&str> = slices.lines().collect();
    assert!(
        rows[0].starts_with("NAME") && rows[0].contains("ADDRESSTYPE"),
        "{slices}"
    );
    assert_eq!(rows.len(), 2, "{slices}");
    let cols: Vec<&str> = rows[1].split_whitespace().collect();
    assert!(cols[0].starts_with("web-"), "{slices}");
    assert_eq!(cols[1], "IPv4", "{slices}");
    assert_eq!(cols[2], "8080", "{slices}");
    let zones = s.must_kubectl(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "jsonpath={.items[0].endpoints[*].zone}",
    ]);
    assert_eq!(
        zones.split_whitespace().collect::<Vec<_>>(),
        vec!["zone-1"; 3]
    );

    // web-3 becomes ready, web-1 goes.
    report(&s, "web-3", "10.244.0.13", true);
    s.must_kubectl(&["delete", "pod", "web-1", "--grace-period=0", "--force"]);
    wait_for(20, "endpoints follow", || {
        let v = described_endpoints(&s);
        (v.contains("10.244.0.13:8080") && !v.contains("10.244.0.11")).then_some(())
    });

    // The Service goes, and its Endpoints with it.
    s.must_kubectl(&["delete", "svc", "web"]);
    wait_for(20, "endpoints deleted", || {
        let out = s.kubectl(&["get", "endpoints", "web"]);
        (!out.status.success()).then_some(())
    });
}
