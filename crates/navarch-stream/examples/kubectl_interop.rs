//! A minimal fake API server to check this crate against a real `kubectl`.
//!
//! It serves discovery, one pod (`GET /api/v1/namespaces/<ns>/pods/<name>`, always Running),
//! `exec`/`attach` (runs the command locally with piped stdio) and `port-forward` (to
//! 127.0.0.1:<port>), using every transport kubectl may pick.
//!
//! ```sh
//! cargo run -p navarch-stream --example kubectl_interop -- 127.0.0.1:8089 v1.32.0
//! kubectl --server http://127.0.0.1:8089 exec demo -- sh -c 'echo hi; exit 3'
//! kubectl --server http://127.0.0.1:8089 port-forward pod/demo 9000:8080
//! ```
//! The second argument is the `/version` reported, which decides the kubectl version the
//! gcloud kubectl dispatcher runs.

use std::convert::Infallible;
use std::process::Stdio;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use navarch_stream::{
    serve_exec, serve_port_forward, upgrade_response, upgraded, ExecStreams, ExitStatus, StreamKind,
};
use serde_json::json;
use tokio::net::TcpListener;

fn json_response(v: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("valid response")
}

fn status(code: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut r = json_response(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "code": code.as_u16(),
    }));
    *r.status_mut() = code;
    r
}

async fn handle(
    mut req: Request<Incoming>,
    version: String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    eprintln!("{} {}", req.method(), req.uri());
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let resp = match parts.as_slice() {
        ["version"] => json_response(json!({
            "major": "1", "minor": version.split('.').nth(1).unwrap_or("32"),
            "gitVersion": version, "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23",
            "compiler": "gc", "platform": "linux/amd64",
        })),
        ["api"] => json_response(json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})),
        ["apis"] => {
            json_response(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}))
        }
        ["api", "v1"] => json_response(json!({
        "kind": "APIResourceList", "groupVersion": "v1",
        "resources": [
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
             "verbs": ["get", "list"], "shortNames": ["po"]},
            {"name": "pods/exec", "singularName": "", "namespaced": true, "kind": "PodExecOptions", "verbs": ["create", "get"]},
            {"name": "pods/attach", "singularName": "", "namespaced": true, "kind": "PodAttachOptions", "verbs": ["create", "get"]},
            {"name": "pods/portforward", "singularName": "", "namespaced": true, "kind": "PodPortForwardOptions", "verbs": ["create", "get"]},
        ]})),
        ["api", "v1", "namespaces", ns, "pods", name] => json_response(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": "00000000-0000-0000-0000-000000000001",
                         "resourceVersion": "1", "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "main", "image": "local"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "main", "ready": true,
                "restartCount": 0, "image": "local", "imageID": "", "state": {"running": {}}}]},
        })),
        ["api", "v1", "namespaces", _, "pods", _, sub @ ("exec" | "attach" | "portforward")] => {
            let kind = match *sub {
                "exec" => StreamKind::Exec,
                "attach" => StreamKind::Attach,
                _ => StreamKind::PortForward,
            };
            match upgrade_response(&req, kind) {
                Err(e) => {
                    eprintln!("  upgrade refused: {e}");
                    status(e.status_code(), &e.to_string())
                }
                Ok((resp, negotiated)) => {
                    eprintln!("  negotiated {:?}", negotiated.transport);
                    let command: Vec<String> =
                        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                            .filter(|(k, _)| k == "command")
                            .map(|(_, v)| v.into_owned())
                            .collect();
                    let on_upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        let result = async {
                            let io = upgraded(on_upgrade).await?;
                            if kind == StreamKind::PortForward {
                                let server = serve_port_forward(io, &negotiated).await?;
                                server
                                    .forward_all(|port| ([127, 0, 0, 1], port).into())
                                    .await;
                            } else {
                                let streams = serve_exec(io, &negotiated).await?;
                                run_command(streams, command).await?;
                            }
                            Ok::<_, navarch_stream::Error>(())
                        }
                        .await;
                        eprintln!("  session ended: {result:?}");
                    });
                    let (p, _) = resp.into_parts();
                    Response::from_parts(p, Full::new(Bytes::new()))
                }
            }
        }
        _ => status(StatusCode::NOT_FOUND, "not found"),
    };
    Ok(resp)
}

/// Run `command` locally with the session's stdio (attach without a command runs `cat`).
async fn run_command(
    mut s: ExecStreams,
    command: Vec<String>,
) -> Result<(), navarch_stream::Error> {
    let command = if command.is_empty() {
        vec!["cat".to_owned()]
    } else {
        command
    };
    let mut child = match tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .stdin(if s.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return s
                .finish(ExitStatus::Failure {
                    message: format!("cannot run {command:?}: {e}"),
                })
                .await
        }
    };
    let mut tasks = Vec::new();
    if let (Some(mut from), Some(mut to)) = (s.stdin.take(), child.stdin.take()) {
        tasks.push(tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from, &mut to).await;
        }));
    }
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let stdout = s.stdout.take();
    let stderr = s.stderr.take().or_else(|| None);
    let copy_out = tokio::spawn(async move {
        match stdout {
            Some(mut w) => {
                let _ = tokio::io::copy(&mut out, &mut w).await;
            }
            None => {
                let _ = tokio::io::copy(&mut out, &mut tokio::io::sink()).await;
            }
        }
    });
    let copy_err = tokio::spawn(async move {
        match stderr {
            Some(mut w) => {
                let _ = tokio::io::copy(&mut err, &mut w).await;
            }
            None => {
                let _ = tokio::io::copy(&mut err, &mut tokio::io::sink()).await;
            }
        }
    });
    let code = child.wait().await?.code().unwrap_or(1);
    let _ = copy_out.await;
    let _ = copy_err.await;
    for t in tasks {
        t.abort();
    }
    s.finish(ExitStatus::from_code(code, &command)).await
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8089".into());
    let version = args.next().unwrap_or_else(|| "v1.32.0".into());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("listening on http://{addr}, reporting {version}");
    loop {
        let (tcp, _) = listener.accept().await?;
        let version = version.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, version.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades()
                .await;
        });
    }
}
