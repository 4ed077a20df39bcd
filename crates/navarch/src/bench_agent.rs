//! `navarch bench agent`: pod startup latency on one node (created with
//! `spec.nodeName` set → `Running` seen through a watch), and the agent's
//! memory and CPU, idle and with the pods running.
//!
//! Starts a server (no built-in agent) and a separate `navarch agent`
//! process, so the agent's own RSS and CPU are measured.

use crate::bench::{cpu_ms_of, percentile, rss_of, watch_events, BenchArgs, ChildServer, Target};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const NODE: &str = "bench-node";

pub async fn run(args: BenchArgs) -> Result<()> {
    if args.kubeconfig.is_some() {
        bail!("bench agent starts its own server and agent; --kubeconfig is not supported");
    }
    let server = ChildServer::start(&[]).await?;
    let target = Target::from_kubeconfig(&server.kubeconfig)?;
    let client = target.client()?;
    let base = target.server.clone();
    let token = std::fs::read_to_string(server.dir.join("node-token"))?;
    let agent_dir = server.dir.join("bench-agent");
    let mut agent = std::process::Command::new(std::env::current_exe()?)
        .args([
            "agent",
            "--server",
            &base,
            "--token",
            token.trim(),
            "--node-name",
            NODE,
        ])
        .args(["--agent-port", "0", "--node-ip", "127.0.0.1", "--data-dir"])
        .arg(&agent_dir)
        .env("NAVARCH_LOG", "warn")
        .spawn()
        .context("starting navarch agent")?;
    let agent_pid = agent.id();
    let result = measure(&args, &client, &base, agent_pid).await;
    // Pods are gone (or the run failed): stop the agent, then sweep what
    // is left of its containers.
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = std::process::Command::new("pkill")
        .args([
            "-9",
            "-f",
            &format!("runtime-shim.*{}", agent_dir.display()),
        ])
        .status();
    result
}

async fn measure(
    args: &BenchArgs,
    client: &reqwest::Client,
    base: &str,
    agent_pid: u32,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client
            .get(format!("{base}/api/v1/nodes/{NODE}"))
            .send()
            .await?;
        if r.status().is_success() {
            let n: Value = r.json().await?;
            let ready = n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            if ready {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("agent did not register a Ready node in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Idle: let start-up settle, then sample CPU over 10 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_of(agent_pid).unwrap_or(0);
    let c0 = cpu_ms_of(agent_pid).unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_cpu = (cpu_ms_of(agent_pid).unwrap_or(0.0) - c0) / 10.0;

    let ns = "default";
    let n = args.pods.unwrap_or(100);
    let list: Value = client
        .get(format!("{base}/api/v1/namespaces/{ns}/pods?limit=1"))
        .send()
        .await?
        .json()
        .await?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let watch_url = format!("{base}/api/v1/namespaces/{ns}/pods?watch=true&resourceVersion={rv}");
    let mut resp = client.get(&watch_url).send().await?;
    let mut created: HashMap<String, Instant> = HashMap::new();
    let create_client = client.clone();
    let url = format!("{base}/api/v1/namespaces/{ns}/pods");
    let creator = tokio::spawn(async move {
        let mut times = Vec::new();
        for i in 0..n {
            let name = format!("startup-{i}");
            let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}});
            let t = Instant::now();
            match create_client.post(&url).json(&pod).send().await {
                Ok(r) if r.status().is_success() => times.push((name, t)),
                Ok(r) => eprintln!("create {name}: {}", r.status()),
                Err(e) => eprintln!("create {name}: {e}"),
            }
        }
        times
    });
    let mut running: HashMap<String, Instant> = HashMap::new();
    let mut buf = Vec::new();
    let watch_deadline = Instant::now() + Duration::from_secs(120);
    while running.len() < n && Instant::now() < watch_deadline {
        let chunk = match tokio::time::timeout(Duration::from_secs(5), resp.chunk()).await {
            Ok(Ok(Some(c))) => c,
            Ok(_) => break,
            Err(_) => continue,
        };
        let now = Instant::now();
        buf.extend_from_slice(&chunk);
        for ev in watch_events(&mut buf) {
            let obj = &ev["object"];
            if obj["status"]["phase"] == "Running" {
                if let Some(name) = obj["metadata"]["name"].as_str() {
                    running.entry(name.to_string()).or_insert(now);
                }
            }
        }
    }
    for (name, t) in creator.await? {
        created.insert(name, t);
    }
    let mut lat: Vec<f64> = created
        .iter()
        .filter_map(|(name, t)| {
            running
                .get(name)
                .map(|r| r.duration_since(*t).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if lat.len() < n {
        eprintln!("only {} of {n} pods were seen Running", lat.len());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let busy_rss = rss_of(agent_pid).unwrap_or(0);
    let c1 = cpu_ms_of(agent_pid).unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let busy_cpu = (cpu_ms_of(agent_pid).unwrap_or(0.0) - c1) / 10.0;

    // Clean up: delete the pods and wait until the agent removed them.
    let _ = client
        .delete(format!("{base}/api/v1/namespaces/{ns}/pods"))
        .send()
        .await?;
    let gone_deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < gone_deadline {
        let l: Value = client
            .get(format!("{base}/api/v1/namespaces/{ns}/pods"))
            .send()
            .await?
            .json()
            .await?;
        if l["items"].as_array().is_none_or(|a| a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    let p50 = percentile(&lat, 0.50);
    let p99 = percentile(&lat, 0.99);
    let max = lat.last().copied().unwrap_or(0.0);
    println!("pods: {n} on one node, {} seen Running", lat.len());
    println!("startup latency (create → Running via watch): p50 {p50:.0} ms, p99 {p99:.0} ms, max {max:.0} ms");
    println!(
        "agent RSS: idle {:.1} MB, with {n} pods {:.1} MB",
        mb(idle_rss),
        mb(busy_rss)
    );
    println!("agent CPU: idle {idle_cpu:.1} ms/s, with {n} pods {busy_cpu:.1} ms/s");
    if args.json {
        println!(
            "{}",
            json!({"benchmark": "agent", "pods": n, "running": lat.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max,
                   "idle_rss_mb": mb(idle_rss), "busy_rss_mb": mb(busy_rss), "idle_cpu_ms_per_s": idle_cpu, "busy_cpu_ms_per_s": busy_cpu})
        );
    }
    Ok(())
}
