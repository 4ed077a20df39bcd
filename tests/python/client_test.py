"""The Python `kubernetes` client against a running navarch server.

Run by crates/navarch/tests/e2e_clients.rs with KUBECONFIG pointing at the
server. Exits non-zero with a message on the first failure.
"""
import os
import sys
import threading
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def check(cond, msg):
    if not cond:
        print(f"FAIL: {msg}", file=sys.stderr)
        sys.exit(1)


def main():
    config.load_kube_config(os.environ["KUBECONFIG"])
    version = client.VersionApi().get_code()
    check(version.git_version == "v1.33.0", f"version {version.git_version}")

    core = client.CoreV1Api()
    apps = client.AppsV1Api()
    ns = "pyclient"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    names = [n.metadata.name for n in core.list_namespace().items]
    check(ns in names and "default" in names, f"namespaces {names}")

    # Wait for the default service account (created with the namespace).
    for _ in range(50):
        try:
            core.read_namespaced_service_account("default", ns)
            break
        except ApiException:
            time.sleep(0.1)

    # Create, without apiVersion/kind in the body (the client leaves them out).
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "py", "labels": {"app": "py"}}, "data": {"a": "1"}})
    check(cm.metadata.uid and cm.metadata.resource_version, "create returns uid and resourceVersion")

    # Watch: synthetic ADDED for existing objects, then live changes.
    events = []

    def watcher():
        w = watch.Watch()
        for ev in w.stream(core.list_namespaced_config_map, ns, timeout_seconds=5):
            events.append((ev["type"], ev["object"].metadata.name))
            if ("ADDED", "py2") in events:
                w.stop()

    t = threading.Thread(target=watcher)
    t.start()
    time.sleep(0.5)
    core.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py2")))
    t.join(10)
    check(("ADDED", "py") in events, f"synthetic ADDED missing: {events}")
    check(("ADDED", "py2") in events, f"live ADDED missing: {events}")

    # List with a label selector and pagination.
    lst = core.list_namespaced_config_map(ns, label_selector="app=py")
    check([i.metadata.name for i in lst.items] == ["py"], f"selector list {lst.items}")
    page = core.list_namespaced_config_map(ns, limit=1)
    check(len(page.items) == 1 and page.metadata._continue, "first page has a continue token")
    page2 = core.list_namespaced_config_map(ns, limit=1, _continue=page.metadata._continue)
    check(len(page2.items) == 1 and page2.items[0].metadata.name != page.items[0].metadata.name, "second page")

    # Patches: a dict is a strategic merge patch, a list a JSON patch.
    core.patch_namespaced_config_map("py", ns, {"data": {"b": "2"}})
    core.patch_namespaced_config_map("py", ns, [{"op": "add", "path": "/data/c", "value": "3"}])
    got = core.read_namespaced_config_map("py", ns)
    check(got.data == {"a": "1", "b": "2", "c": "3"}, f"patched data {got.data}")

    # Deployment with required-field-strict decoding of the response.
    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels={"app": "web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx")]),
            ),
        ),
    )
    apps.create_namespaced_deployment(ns, dep)
    d = apps.read_namespaced_deployment("web", ns)
    check(d.spec.strategy.type == "RollingUpdate", f"defaulted strategy {d.spec.strategy}")
    apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 4}})
    check(apps.read_namespaced_deployment_scale("web", ns).spec.replicas == 4, "scale")

    # A stale update is a 409.
    stale = core.read_namespaced_config_map("py", ns)
    core.patch_namespaced_config_map("py", ns, {"data": {"d": "4"}})
    try:
        core.replace_namespaced_config_map("py", ns, stale)
        check(False, "stale replace succeeded")
    except ApiException as e:
        check(e.status == 409, f"stale replace status {e.status}")

    # Pods decode with all required fields.
    pod = core.create_namespaced_pod(ns, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    check(pod.status.phase == "Pending", f"pod phase {pod.status.phase}")
    check(pod.spec.service_account_name == "default", "service account defaulted")

    # Delete, then 404.
    core.delete_namespaced_config_map("py", ns)
    try:
        core.read_namespaced_config_map("py", ns)
        check(False, "deleted object still readable")
    except ApiException as e:
        check(e.status == 404, f"status after delete {e.status}")
    print("python client: ok")


if __name__ == "__main__":
    main()
