//! `navarch sim`: hollow nodes (a shell over `navarch-sim`).

use anyhow::{bail, Context, Result};
use navarch_sim::{NodeTemplate, Sim, SimConfig, Taint, Target};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SimArgs {
    /// URL of the server, e.g. `https://10.0.0.1:6443` (with `--token`).
    #[arg(long, requires = "token", conflicts_with = "kubeconfig")]
    server: Option<String>,
    /// The server's node token (the contents of its `DIR/node-token`); the
    /// sim joins once, as node `<prefix>sim`.
    #[arg(long, env = "NAVARCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Call the API with this kubeconfig's credentials instead (any
    /// Kubernetes API server).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// How many hollow nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Node names are `<prefix><i>`.
    #[arg(long, default_value = "hollow-")]
    prefix: String,
    /// Where the join credentials are kept (default: a directory under the
    /// system temp dir, named after the prefix, reused across restarts).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// CPU capacity of each node.
    #[arg(long, default_value = "32")]
    cpu: String,
    /// Memory capacity of each node.
    #[arg(long, default_value = "256Gi")]
    memory: String,
    /// Pod capacity of each node.
    #[arg(long, default_value_t = 110)]
    pods: u32,
    /// Ephemeral storage capacity of each node.
    #[arg(long, default_value = "1Ti")]
    ephemeral_storage: String,
    /// Extra node labels, `key=value` (repeatable).
    #[arg(long = "node-label")]
    node_labels: Vec<String>,
    /// Spread the nodes over Z zones (`topology.kubernetes.io/zone=zone-<i % Z>`).
    #[arg(long, default_value_t = 0)]
    zones: usize,
    /// Taint for new nodes, `key=value:Effect` (repeatable); nodes taken
    /// over keep the taints they have.
    #[arg(long = "taint")]
    taints: Vec<String>,
    /// Do not report bound pods Running (nor finish their deletion).
    #[arg(long)]
    no_report_pods: bool,
    /// Requests in flight at most for node registration and heartbeats.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Pod status writes in flight at most.
    #[arg(long, default_value_t = 32)]
    pod_workers: usize,
    /// Delete the nodes and their Leases on exit (SIGINT/SIGTERM).
    #[arg(long)]
    delete_on_exit: bool,
}

impl SimArgs {
    fn config(&self) -> Result<SimConfig> {
        let mut template = NodeTemplate {
            cpu: self.cpu.clone(),
            memory: self.memory.clone(),
            ephemeral_storage: self.ephemeral_storage.clone(),
            pods: self.pods,
            zones: NodeTemplate::numbered_zones(self.zones),
            ..NodeTemplate::default()
        };
        for l in &self.node_labels {
            let (k, v) = NodeTemplate::parse_label(l)?;
            template.labels.insert(k, v);
        }
        for t in &self.taints {
            template.taints.push(Taint::parse(t)?);
        }
        let mut c = SimConfig::new(self.nodes);
        c.prefix = self.prefix.clone();
        c.template = template;
        c.report_pods = !self.no_report_pods;
        c.concurrency = self.concurrency;
        c.pod_workers = self.pod_workers;
        c.delete_on_stop = self.delete_on_exit;
        Ok(c)
    }
}

pub async fn run(args: SimArgs) -> Result<()> {
    let config = args.config()?;
    let target = match (&args.kubeconfig, &args.server, &args.token) {
        (Some(k), _, _) => Target::from_kubeconfig(k)?,
        (None, Some(server), Some(token)) => {
            let data_dir = args.data_dir.clone().unwrap_or_else(|| {
                std::env::temp_dir().join(format!(
                    "navarch-sim-{}",
                    args.prefix.trim_end_matches(['-', '.'])
                ))
            });
            Target::join(server, token, &format!("{}sim", args.prefix), &data_dir).await?
        }
        _ => bail!("give --server and --token, or --kubeconfig"),
    };
    let sim = Sim::start(target, config)
        .await
        .context("starting hollow nodes")?;
    println!(
        "registered {} hollow nodes in {} ms",
        args.nodes,
        sim.registered_in().as_millis()
    );
    crate::wait_for_signal().await;
    tracing::info!("stopping hollow nodes");
    sim.stop().await?;
    Ok(())
}
