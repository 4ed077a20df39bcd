"""Exec and port-forward through the Python `kubernetes` client.

Run by crates/navarch/tests/e2e_agent.rs: `agent_test.py KUBECONFIG PORT`,
with pod `pyweb` in `default` running an HTTP server on 127.0.0.1:PORT.
Exits non-zero with a message on the first failure.
"""
import sys

from kubernetes import client, config
from kubernetes.stream import portforward, stream


def check(cond, msg):
    if not cond:
        print(f"FAIL: {msg}", file=sys.stderr)
        sys.exit(1)


def main():
    config.load_kube_config(sys.argv[1])
    port = int(sys.argv[2])
    core = client.CoreV1Api()

    # One-shot exec: output collected.
    out = stream(
        core.connect_get_namespaced_pod_exec,
        "pyweb",
        "default",
        command=["sh", "-c", "echo out; echo err >&2"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    )
    check("out" in out, f"exec output {out!r}")

    # Interactive exec with the exit code on the status channel.
    resp = stream(
        core.connect_get_namespaced_pod_exec,
        "pyweb",
        "default",
        command=["sh", "-c", "read line; echo got-$line; exit 4"],
        stderr=True,
        stdin=True,
        stdout=True,
        tty=False,
        _preload_content=False,
    )
    resp.write_stdin("ping\n")
    got = ""
    while resp.is_open():
        resp.update(timeout=5)
        if resp.peek_stdout():
            got += resp.read_stdout()
    check("got-ping" in got, f"interactive exec output {got!r}")
    code = resp.returncode
    check(code == 4, f"exit code {code}")

    # Port-forward (v4.channel.k8s.io WebSocket).
    pf = portforward(
        core.connect_get_namespaced_pod_portforward,
        "pyweb",
        "default",
        ports=str(port),
    )
    sock = pf.socket(port)
    sock.setblocking(True)
    sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    sock.close()
    check(data.startswith(b"HTTP/1.0 200"), f"port-forward response {data[:80]!r}")
    err = pf.error(port)
    check(err is None, f"port-forward error {err!r}")
    print("ok")


if __name__ == "__main__":
    main()
