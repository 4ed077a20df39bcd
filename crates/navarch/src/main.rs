//! `navarch`: the one binary. Each subcommand is a thin shell over a library crate.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use navarch_controllers::leader::ElectionConfig;
use std::path::PathBuf;
use std::sync::Arc;

mod bench;
mod bench_agent;
mod bench_controllers;
mod bench_scheduler;
mod sim;

/// mimalloc: the API server's hot path is allocation-heavy JSON work, where
/// glibc malloc cost ~17% of CPU under load (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "navarch",
    version,
    about = "Navarch: many machines, one computer"
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `navarch_apiserver=debug`.
    #[arg(long, global = true, env = "NAVARCH_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane (Kubernetes API over HTTPS).
    Server(ServerArgs),
    /// Run a node agent that joins a server and runs the pods bound to its node.
    Agent(AgentArgs),
    /// Hollow nodes for scale work: N fake nodes that register, heartbeat,
    /// and report their bound pods Running without running anything.
    Sim(sim::SimArgs),
    /// Benchmarks: `navarch bench api|agent|scheduler [--kubeconfig PATH] [--json]`.
    Bench(bench::BenchArgs),
    /// The per-container shim of the process runtime (started by the agent).
    #[command(hide = true)]
    RuntimeShim {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

/// Shared by `navarch agent` and the server's built-in agent.
#[derive(clap::Args, Clone)]
struct AgentRuntimeArgs {
    /// Container runtime: `process` (host processes). `cri` (containerd) is
    /// not built yet.
    #[arg(long, default_value = "process")]
    runtime: String,
    /// The node's IP (pod IPs on this node); detected from the default route.
    #[arg(long)]
    node_ip: Option<std::net::IpAddr>,
    /// Port of the agent's HTTPS streaming endpoint (logs, exec,
    /// port-forward); default 10250, or a free port when that is taken.
    #[arg(long)]
    agent_port: Option<u16>,
    /// Extra node labels, `key=value` (repeatable).
    #[arg(long = "node-label")]
    node_labels: Vec<String>,
    /// `leaseDurationSeconds` of the node's Lease, renewed every quarter
    /// of it; keep it under the server's `--node-monitor-grace-period`.
    #[arg(long, default_value_t = navarch_agent::node::LEASE_DURATION_SECONDS,
          value_parser = clap::value_parser!(u32).range(4..))]
    node_lease_duration_seconds: u32,
}

#[derive(clap::Args)]
struct AgentArgs {
    /// URL of the server, e.g. `https://10.0.0.1:6443`.
    #[arg(long)]
    server: String,
    /// The server's node token (the contents of its `DIR/node-token`).
    #[arg(long, env = "NAVARCH_TOKEN", hide_env_values = true)]
    token: String,
    /// Name of this node; defaults to the hostname.
    #[arg(long)]
    node_name: Option<String>,
    /// Where the agent keeps credentials, pods, container state and logs.
    #[arg(long, default_value = "/var/lib/navarch-agent")]
    data_dir: PathBuf,
    #[command(flatten)]
    runtime: AgentRuntimeArgs,
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Where the server keeps its state, certificates and kubeconfig.
    #[arg(long, default_value = "/var/lib/navarch")]
    data_dir: PathBuf,
    /// HTTPS listen address.
    #[arg(long, default_value = "0.0.0.0:6443")]
    listen: String,
    /// Extra names or IPs for the serving certificate (repeatable).
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
    /// Also write the admin kubeconfig to this path.
    #[arg(long)]
    write_kubeconfig: Option<PathBuf>,
    /// Datastore: `sqlite://PATH` (default: DIR/state.db).
    #[arg(long)]
    datastore: Option<String>,
    /// Do not run the built-in agent for this node.
    #[arg(long)]
    disable_agent: bool,
    /// Name of this node (for the built-in agent); defaults to the hostname.
    #[arg(long)]
    node_name: Option<String>,
    /// Do not run the built-in pod scheduler (pods naming
    /// `default-scheduler` then wait for another one).
    #[arg(long)]
    disable_scheduler: bool,
    /// Do not run the controllers (Deployments, ReplicaSets, DaemonSets,
    /// StatefulSets, Jobs, CronJobs, endpoints, disruption budgets, garbage
    /// collection, namespaces and service accounts, node lifecycle).
    #[arg(long)]
    disable_controllers: bool,
    /// How long a node may go without renewing its Lease before it is
    /// marked Unknown and tainted unreachable (e.g. `40s`, `2m`).
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// How often the node controller checks node health (upstream's
    /// default is 5s; the check is cheap, so 1s here).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    node_monitor_period: std::time::Duration,
    /// `tolerationSeconds` of the `node.kubernetes.io/not-ready:NoExecute`
    /// toleration added to every pod without one.
    #[arg(long, default_value_t = 300)]
    default_not_ready_toleration_seconds: i64,
    /// `tolerationSeconds` of the `node.kubernetes.io/unreachable:NoExecute`
    /// toleration added to every pod without one.
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_seconds: i64,
    /// Nodes per second, per zone, that may be tainted NoExecute (their
    /// pods evicted) when nodes fail.
    #[arg(long, default_value_t = 0.1)]
    node_eviction_rate: f64,
    /// The rate in a zone where more than `--unhealthy-zone-threshold` of
    /// the nodes are down (0 for zones up to
    /// `--large-cluster-size-threshold` nodes).
    #[arg(long, default_value_t = 0.01)]
    secondary_node_eviction_rate: f64,
    /// Fraction of not-Ready nodes (at least 3) that makes a zone unhealthy.
    #[arg(long, default_value_t = 0.55)]
    unhealthy_zone_threshold: f64,
    /// Zones up to this many nodes stop evicting when unhealthy.
    #[arg(long, default_value_t = 50)]
    large_cluster_size_threshold: usize,
    /// Terminated pods kept before the oldest are deleted (0: never).
    #[arg(long, default_value_t = 12_500)]
    terminated_pod_gc_threshold: usize,
    /// Scheduler settings: a `KubeSchedulerConfiguration` file
    /// (kubescheduler.config.k8s.io/v1; profiles, percentageOfNodesToScore,
    /// NodeResourcesFit scoring strategy, PodTopologySpread defaults).
    #[arg(long)]
    scheduler_config: Option<PathBuf>,
    #[command(flatten)]
    runtime: AgentRuntimeArgs,
}

fn main() -> Result<()> {
    // The shim daemonizes (forks): it must run before any thread exists.
    let mut raw = std::env::args_os();
    if raw.nth(1).as_deref() == Some(std::ffi::OsStr::new("runtime-shim")) {
        navarch_runtime::shim_main(raw);
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Server(args) => server(args).await,
            Command::Agent(args) => agent(args).await,
            Command::Sim(args) => sim::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::RuntimeShim { .. } => unreachable!("handled before the runtime starts"),
        }
    })
}

/// `40s`, `500ms`, `2m`, `1h`, or plain seconds.
fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 40s, 500ms, 2m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration {s:?}: unknown unit {unit:?} (ms, s, m, h)"
            ))
        }
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("invalid duration {s:?}: must be positive"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// This server's leader-election identity: `<hostname>_<id>`, the id kept
/// in `DIR/server-id` so that a restarted server is the same candidate.
fn server_identity(data_dir: &std::path::Path) -> Result<String> {
    let path = data_dir.join("server-id");
    let id = match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => id.trim().to_string(),
        _ => {
            let id = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
            std::fs::write(&path, &id).with_context(|| format!("writing {}", path.display()))?;
            id
        }
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "navarch".into());
    Ok(format!("{host}_{id}"))
}

/// Opens the datastore named by `--datastore`.
pub fn open_store(
    url: Option<&str>,
    data_dir: &std::path::Path,
) -> Result<Arc<dyn navarch_store::Store>> {
    let url = url
        .map(str::to_string)
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("state.db").display()));
    if let Some(path) = url.strip_prefix("sqlite://") {
        let path = PathBuf::from(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let store = navarch_store::SqliteStore::open(&path)
            .with_context(|| format!("opening SQLite datastore {}", path.display()))?;
        return Ok(Arc::new(store));
    }
    if url.starts_with("etcd://") {
        bail!("--datastore {url}: the etcd datastore is not built yet; use sqlite://PATH");
    }
    bail!("--datastore {url}: unknown scheme; expected sqlite://PATH")
}

async fn server(args: ServerArgs) -> Result<()> {
    let scheduler = match &args.scheduler_config {
        Some(path) => navarch_controllers::config::load(path)?,
        None => navarch_controllers::SchedulerOptions::default(),
    };
    let store = open_store(args.datastore.as_deref(), &args.data_dir)?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut config = navarch_apiserver::Config::new(&args.data_dir, &args.listen);
    config.tls_sans = args.tls_san;
    config.write_kubeconfig = args.write_kubeconfig;
    config.default_toleration_seconds = navarch_apiserver::DefaultTolerations {
        not_ready: args.default_not_ready_toleration_seconds,
        unreachable: args.default_unreachable_toleration_seconds,
    };
    let running = navarch_apiserver::start(config, store, shutdown.clone()).await?;
    eprintln!(
        "navarch server ready at {} (KUBECONFIG={})",
        running.url,
        running.kubeconfig.display()
    );
    // With several servers on one store only the Lease holder runs the
    // scheduler and the controllers; a restarted server keeps its identity.
    let identity = server_identity(&args.data_dir)?;
    if !args.disable_scheduler {
        let server = running.server.clone();
        navarch_controllers::leader::run(
            running.server.clone(),
            ElectionConfig::new("kube-scheduler", &identity),
            shutdown.clone(),
            move |leading| {
                navarch_controllers::scheduler::spawn(server.clone(), scheduler.clone(), leading);
            },
        );
    }
    if !args.disable_controllers {
        let node_lifecycle = navarch_controllers::nodelifecycle::NodeLifecycleOptions {
            grace_period: args.node_monitor_grace_period,
            monitor_period: args.node_monitor_period,
            eviction_rate: args.node_eviction_rate,
            secondary_eviction_rate: args.secondary_node_eviction_rate,
            unhealthy_zone_threshold: args.unhealthy_zone_threshold,
            large_cluster_threshold: args.large_cluster_size_threshold,
        };
        let pod_gc = navarch_controllers::podgc::PodGcOptions {
            threshold: args.terminated_pod_gc_threshold,
            ..Default::default()
        };
        let server = running.server.clone();
        navarch_controllers::leader::run(
            running.server.clone(),
            ElectionConfig::new("kube-controller-manager", &identity),
            shutdown.clone(),
            move |leading| {
                let s = || server.clone();
                navarch_controllers::replicaset::spawn(s(), leading.clone());
                navarch_controllers::endpoints::spawn(s(), leading.clone());
                navarch_controllers::daemonset::spawn(s(), leading.clone());
                navarch_controllers::statefulset::spawn(s(), leading.clone());
                navarch_controllers::job::spawn(s(), leading.clone());
                navarch_controllers::cronjob::spawn(s(), leading.clone());
                navarch_controllers::disruption::spawn(s(), leading.clone());
                navarch_controllers::deployment::spawn(s(), leading.clone());
                navarch_controllers::gc::spawn(s(), leading.clone());
                navarch_controllers::namespace::spawn(s(), leading.clone());
                navarch_controllers::nodelifecycle::spawn(
                    s(),
                    node_lifecycle.clone(),
                    leading.clone(),
                );
                navarch_controllers::podgc::spawn(s(), pod_gc.clone(), leading.clone());
            },
        );
    }
    if !args.disable_agent {
        // The built-in agent joins over loopback like any other agent.
        let config = agent_config(
            format!("https://127.0.0.1:{}", running.addr.port()),
            running.node_token.clone(),
            args.node_name,
            args.data_dir.join("agent"),
            &args.runtime,
        )?;
        let rt = open_runtime(&args.runtime, &config).await?;
        navarch_agent::agent::start(config, rt, shutdown.clone())
            .await
            .context("starting the built-in agent")?;
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn agent_config(
    server: String,
    token: String,
    node_name: Option<String>,
    data_dir: PathBuf,
    args: &AgentRuntimeArgs,
) -> Result<navarch_agent::agent::AgentConfig> {
    let node_name = match node_name {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading the hostname (use --node-name)")?
            .trim()
            .to_lowercase(),
    };
    let mut labels = std::collections::BTreeMap::new();
    for l in &args.node_labels {
        let Some((k, v)) = l.split_once('=') else {
            bail!("--node-label {l:?}: expected key=value");
        };
        labels.insert(k.to_string(), v.to_string());
    }
    Ok(navarch_agent::agent::AgentConfig {
        server,
        token: token.trim().to_string(),
        node_name,
        data_dir,
        node_ip: args.node_ip,
        port: args.agent_port,
        labels,
        lease_duration_seconds: args.node_lease_duration_seconds,
    })
}

async fn open_runtime(
    args: &AgentRuntimeArgs,
    config: &navarch_agent::agent::AgentConfig,
) -> Result<Arc<dyn navarch_runtime::Runtime>> {
    match args.runtime.as_str() {
        "process" => {
            let shim = navarch_runtime::ShimCommand {
                program: std::env::current_exe().context("locating the navarch binary")?,
                args: vec!["runtime-shim".into()],
            };
            let mut rc =
                navarch_runtime::ProcessRuntimeConfig::new(config.data_dir.join("runtime"), shim);
            // One cgroup parent per node, so several agents on one machine
            // keep apart.
            rc.cgroups.parent = format!("navarch-{}", config.node_name);
            let rt = navarch_runtime::ProcessRuntime::open(rc)
                .await
                .context("opening the process runtime")?;
            Ok(Arc::new(rt))
        }
        "cri" => bail!(
            "--runtime cri: the containerd (CRI) runtime is not built yet; use --runtime process"
        ),
        other => bail!("--runtime {other}: unknown runtime; expected process or cri"),
    }
}

async fn agent(args: AgentArgs) -> Result<()> {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let config = agent_config(
        args.server,
        args.token,
        args.node_name,
        args.data_dir,
        &args.runtime,
    )?;
    let rt = open_runtime(&args.runtime, &config).await?;
    let running = navarch_agent::agent::start(config, rt, shutdown.clone()).await?;
    eprintln!(
        "navarch agent {} ready (ip {}, port {})",
        running.node_name, running.node_ip, running.port
    );
    wait_for_signal().await;
    tracing::info!("shutting down; containers keep running");
    shutdown.cancel();
    running.wait().await;
    Ok(())
}
