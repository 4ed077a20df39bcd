//! `navarch`: the one binary. Each subcommand is a thin shell over a library crate.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

mod bench;

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
    /// Benchmarks: `navarch bench api [--kubeconfig PATH] [--json]`.
    Bench(bench::BenchArgs),
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
    /// Name of this node (for the built-in agent).
    #[arg(long)]
    node_name: Option<String>,
}

fn main() -> Result<()> {
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
            Command::Bench(args) => bench::run(args).await,
        }
    })
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
    let store = open_store(args.datastore.as_deref(), &args.data_dir)?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut config = navarch_apiserver::Config::new(&args.data_dir, &args.listen);
    config.tls_sans = args.tls_san;
    config.write_kubeconfig = args.write_kubeconfig;
    if !args.disable_agent {
        // The flag is part of the CLI contract; the agent itself is not built yet.
        tracing::warn!(
            node = args.node_name.as_deref().unwrap_or(""),
            "this build has no node agent: pods are stored and scheduled nowhere, not run"
        );
    }
    let running = navarch_apiserver::start(config, store, shutdown.clone()).await?;
    eprintln!(
        "navarch server ready at {} (KUBECONFIG={})",
        running.url,
        running.kubeconfig.display()
    );
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
