//! `navarch bench`: load generators that speak only the public Kubernetes
//! API, so the same run can target Navarch or upstream Kubernetes.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Which benchmark: `api` (API server writes, lists, watches), `agent`
    /// (pod startup on one node), `scheduler` (pods/s and creation-to-binding
    /// latency on hollow nodes, workloads after upstream's scheduler_perf) or
    /// `controllers` (a Deployment's rollout and rolling update, node
    /// failure and namespace deletion on hollow nodes).
    pub which: String,
    /// Target an existing cluster instead of starting a server.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
    /// Pods to create (default: api 150,000; agent 100; scheduler 10,000
    /// measured pods, plus the workload's init pods; controllers 10,000
    /// replicas).
    #[arg(long)]
    pub pods: Option<usize>,
    /// Hollow nodes (`bench scheduler`, `bench controllers`).
    #[arg(long, default_value_t = 5000)]
    pub nodes: usize,
    /// Workload (`bench scheduler`): SchedulingBasic, SchedulingNodeAffinity,
    /// SchedulingPodAntiAffinity, SchedulingPreferredPodAffinity,
    /// TopologySpreading, PreemptionBasic.
    #[arg(long, default_value = "SchedulingBasic")]
    pub workload: String,
    /// Concurrent HTTPS clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Namespace to create the pods in (created, and deleted afterwards when the bench started the server itself).
    #[arg(long, default_value = "navarch-bench")]
    pub namespace: String,
}

pub use navarch_sim::Target;

/// A `navarch server` child process on a free port with a temp data dir.
pub struct ChildServer {
    pub child: std::process::Child,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub ready_after: Duration,
}

impl ChildServer {
    /// Starts `navarch server --disable-agent` with `extra` arguments.
    pub async fn start(extra: &[&str]) -> Result<ChildServer> {
        let dir = std::env::temp_dir().join(format!("navarch-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let exe = std::env::current_exe()?;
        let started = Instant::now();
        let child = std::process::Command::new(exe)
            .args(["server", "--disable-agent"])
            .args(extra)
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("NAVARCH_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting navarch server")?;
        let kubeconfig = dir.join("kubeconfig.yaml");
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()?;
        let url = format!("https://127.0.0.1:{port}/readyz");
        loop {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("server did not become ready in 30 s");
            }
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() && kubeconfig.exists() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(ChildServer {
            ready_after: started.elapsed(),
            child,
            dir,
            kubeconfig,
        })
    }

    pub fn rss_bytes(&self) -> Option<u64> {
        rss_of(self.child.id())
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// User+system CPU time of a process, in milliseconds (from /proc/PID/stat).
pub fn cpu_ms_of(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // /proc reports clock ticks in USER_HZ, which is 100 on Linux.
    Some(ticks * 10.0)
}

pub fn rss_of(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Takes the complete watch events (one JSON object per line) out of `buf`,
/// leaving a partial last line for the next chunk.
pub fn watch_events(buf: &mut Vec<u8>) -> Vec<Value> {
    let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
        return Vec::new();
    };
    let lines: Vec<u8> = buf.drain(..=end).collect();
    lines
        .split(|b| *b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect()
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub async fn run(args: BenchArgs) -> Result<()> {
    match args.which.as_str() {
        "api" => api(args).await,
        "agent" => crate::bench_agent::run(args).await,
        "scheduler" => crate::bench_scheduler::run(args).await,
        "controllers" => crate::bench_controllers::run(args).await,
        other => {
            bail!("unknown benchmark {other:?}; available: api, agent, scheduler, controllers")
        }
    }
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "bench", "shard": (name.len() % 7).to_string()}},
           "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}})
}

async fn api(args: BenchArgs) -> Result<()> {
    let (child, target) = match &args.kubeconfig {
        Some(k) => (None, Target::from_kubeconfig(k)?),
        None => {
            // No scheduler: pure API numbers (the bench's pods name no node).
            let c = ChildServer::start(&["--disable-scheduler"]).await?;
            let t = Target::from_kubeconfig(&c.kubeconfig)?;
            (Some(c), t)
        }
    };
    let ready_ms = child.as_ref().map(|c| c.ready_after.as_secs_f64() * 1000.0);
    // Let the server settle before reading idle memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = child.as_ref().and_then(|c| c.rss_bytes());
    let client = target.client()?;
    let base = target.server.clone();
    let ns = args.namespace.clone();
    let r = client
        .post(format!("{base}/api/v1/namespaces"))
        .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
        .send()
        .await?;
    if !(r.status().is_success() || r.status().as_u16() == 409) {
        bail!(
            "creating namespace {ns}: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    // Wait for the default ServiceAccount (upstream creates it asynchronously).
    for _ in 0..100 {
        if client
            .get(format!(
                "{base}/api/v1/namespaces/{ns}/serviceaccounts/default"
            ))
            .send()
            .await?
            .status()
            .is_success()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Watch delivery: a watch open during the create phase stamps receipt times.
    let list0: Value = client
        .get(format!("{base}/api/v1/namespaces/{ns}/pods?limit=1"))
        .send()
        .await?
        .json()
        .await?;
    let rv0 = list0["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let acked: Arc<AckTimes> = Arc::new(AckTimes::default());
    let watch_client = target.client()?;
    let watch_url = format!(
        "{base}/api/v1/namespaces/{ns}/pods?watch=true&resourceVersion={rv0}&timeoutSeconds=3600"
    );
    let total = args.pods.unwrap_or(150_000);
    let watcher = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(total);
        let mut resp = match watch_client.get(&watch_url).send().await {
            Ok(r) => r,
            Err(_) => return lat,
        };
        let mut buf: Vec<u8> = Vec::new();
        let mut seen = 0usize;
        while let Ok(Some(chunk)) = resp.chunk().await {
            let now = Instant::now();
            buf.extend_from_slice(&chunk);
            for ev in watch_events(&mut buf) {
                if ev["type"] == "ADDED" {
                    seen += 1;
                    if let Some(name) = ev["object"]["metadata"]["name"].as_str() {
                        lat.push((name.to_string(), now));
                    }
                }
            }
            if seen >= total {
                break;
            }
        }
        lat
    });

    let cpu_before = child.as_ref().and_then(|c| cpu_ms_of(c.child.id()));
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.clients {
        let client = target.client()?;
        let next = next.clone();
        let url = format!("{base}/api/v1/namespaces/{ns}/pods");
        let acked = acked.clone();
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let name = format!("bench-{i:07}");
                let body = serde_json::to_vec(&pod(&name)).unwrap_or_default();
                let t0 = Instant::now();
                let ok = match client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) => {
                        let ok = r.status().as_u16() == 201;
                        let _ = r.bytes().await;
                        ok
                    }
                    Err(_) => false,
                };
                let t1 = Instant::now();
                if ok {
                    acked.put(name, t1);
                    lat.push((t1 - t0).as_secs_f64() * 1000.0);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::with_capacity(total);
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await?;
        lat.extend(l);
        errors += e;
    }
    let create_secs = started.elapsed().as_secs_f64();
    let cpu_after = child.as_ref().and_then(|c| cpu_ms_of(c.child.id()));
    let server_cpu_ms_per_1000 = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) if !lat.is_empty() => {
            Some(((a - b) / lat.len() as f64 * 1000.0 * 10.0).round() / 10.0)
        }
        _ => None,
    };
    lat.sort_by(|a, b| a.total_cmp(b));
    let creates_per_second = lat.len() as f64 / create_secs;

    // Delivery latency: from the create's acknowledgement to the event's
    // arrival (zero when the event beat the acknowledgement).
    let received = tokio::time::timeout(Duration::from_secs(60), watcher)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let mut watch_lat: Vec<f64> = received
        .iter()
        .filter_map(|(name, at)| {
            acked
                .take(name)
                .map(|sent| at.saturating_duration_since(sent).as_secs_f64() * 1000.0)
        })
        .collect();
    watch_lat.sort_by(|a, b| a.total_cmp(b));

    // Full list of every pod, in one request.
    let t0 = Instant::now();
    let body = client
        .get(format!("{base}/api/v1/pods"))
        .send()
        .await?
        .bytes()
        .await?;
    let list_secs = t0.elapsed().as_secs_f64();
    let listed: Value = serde_json::from_slice(&body)?;
    let listed_items = listed["items"].as_array().map(|a| a.len()).unwrap_or(0);
    let loaded_rss = child.as_ref().and_then(|c| c.rss_bytes());

    let mb = |b: Option<u64>| b.map(|b| (b as f64 / 1048576.0 * 10.0).round() / 10.0);
    let result = json!({
        "bench": "api",
        "target": if args.kubeconfig.is_some() { target.server.clone() } else { "navarch (child process)".to_string() },
        "pods": lat.len(),
        "errors": errors,
        "clients": args.clients,
        "creates_per_second": (creates_per_second * 10.0).round() / 10.0,
        "create_p50_ms": (percentile(&lat, 0.50) * 100.0).round() / 100.0,
        "create_p99_ms": (percentile(&lat, 0.99) * 100.0).round() / 100.0,
        "list_all_pods_ms": (list_secs * 1000.0 * 10.0).round() / 10.0,
        "list_items": listed_items,
        "list_bytes": body.len(),
        "watch_events": watch_lat.len(),
        "watch_p50_ms": (percentile(&watch_lat, 0.50) * 100.0).round() / 100.0,
        "watch_p99_ms": (percentile(&watch_lat, 0.99) * 100.0).round() / 100.0,
        "server_cpu_ms_per_1000_creates": server_cpu_ms_per_1000,
        "ready_ms": ready_ms.map(|m| (m * 10.0).round() / 10.0),
        "rss_idle_mb": mb(idle_rss),
        "rss_loaded_mb": mb(loaded_rss),
    });
    if !args.json {
        eprintln!("created {} pods in {:.2}s with {} clients: {:.0} creates/s, p50 {:.2} ms, p99 {:.2} ms, {} errors", lat.len(), create_secs, args.clients, creates_per_second, percentile(&lat, 0.5), percentile(&lat, 0.99), errors);
        if let Some(c) = server_cpu_ms_per_1000 {
            eprintln!(
                "server CPU per 1000 creates: {c} ms (about {:.0} creates/s per dedicated core)",
                1_000_000.0 / c
            );
        }
        eprintln!(
            "full list of {listed_items} pods ({} MB) in {:.0} ms",
            body.len() / 1048576,
            list_secs * 1000.0
        );
        eprintln!(
            "watch delivery p50 {:.2} ms, p99 {:.2} ms ({} events)",
            percentile(&watch_lat, 0.5),
            percentile(&watch_lat, 0.99),
            watch_lat.len()
        );
        if let (Some(i), Some(l)) = (mb(idle_rss), mb(loaded_rss)) {
            eprintln!(
                "server RSS idle {i} MB, with {listed_items} pods {l} MB; ready in {:.0} ms",
                ready_ms.unwrap_or(0.0)
            );
        }
    }
    println!("{result}");
    Ok(())
}

/// When each create was acknowledged, by pod name.
#[derive(Default)]
struct AckTimes(std::sync::Mutex<std::collections::HashMap<String, Instant>>);

impl AckTimes {
    pub fn put(&self, k: String, t: Instant) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(k, t);
    }
    pub fn take(&self, k: &str) -> Option<Instant> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(k)
    }
}
