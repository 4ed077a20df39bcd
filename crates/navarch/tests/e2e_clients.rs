//! End-to-end: the Python `kubernetes` client and kube-rs against the real server.
mod common;
use common::*;

/// The Python interpreter with the `kubernetes` package (`NAVARCH_PYTHON`,
/// set by scripts/test.sh to its virtualenv), else `python3`.
fn python() -> String {
    std::env::var("NAVARCH_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[test]
fn python_kubernetes_client() {
    let s = TestServer::start();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/python/client_test.py"
    );
    let o = std::process::Command::new(python())
        .arg(script)
        .env("KUBECONFIG", &s.kubeconfig)
        .output()
        .expect("running python");
    assert!(
        o.status.success(),
        "python client test failed (is the `kubernetes` package installed? scripts/test.sh installs it):\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
}
