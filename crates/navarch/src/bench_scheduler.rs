//! `navarch bench scheduler`: scheduling throughput and creation-to-binding
//! latency through the API, on hollow nodes, with workloads shaped after
//! upstream's scheduler_perf (`test/integration/scheduler_perf/config/
//! performance-config.yaml`: its node and pod templates' requests,
//! affinities and spread constraints, and its init/measured pod ratios).
//!
//! 1. Hollow nodes (`navarch-sim`, pods not reported: no kubelets, as in
//!    scheduler_perf) with upstream's base node: 4 CPU, 32Gi, 110 pods.
//! 2. The workload's init pods (namespace `sched-0`), waited for until bound.
//! 3. The measured pods (namespace `sched-1`) from concurrent clients; each
//!    pod's create is timestamped when sent, and one watch (open before the
//!    first create) timestamps when each pod is first seen with
//!    `spec.nodeName`.
//!
//! Without `--kubeconfig` the bench starts `navarch server --disable-agent`
//! (scheduler on) as a child and also reports its RSS and CPU time.

use crate::bench::{cpu_ms_of, percentile, BenchArgs, ChildServer, Target};
use anyhow::{bail, Context, Result};
use navarch_sim::{NodeTemplate, Sim, SimConfig};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const INIT_NS: &str = "sched-0";
const MEASURED_NS: &str = "sched-1";
const LABEL: &str = "navarch.io/bench";
const LOW_PRIORITY: &str = "navarch-bench-low";
const HIGH_PRIORITY: &str = "navarch-bench-high";
const IMAGE: &str = "registry.k8s.io/pause:3.10";

/// The scheduler_perf workloads this bench knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    SchedulingBasic,
    SchedulingNodeAffinity,
    SchedulingPodAntiAffinity,
    SchedulingPreferredPodAffinity,
    TopologySpreading,
    PreemptionBasic,
}

const WORKLOADS: [Workload; 6] = [
    Workload::SchedulingBasic,
    Workload::SchedulingNodeAffinity,
    Workload::SchedulingPodAntiAffinity,
    Workload::SchedulingPreferredPodAffinity,
    Workload::TopologySpreading,
    Workload::PreemptionBasic,
];

/// Which pods of a run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Init,
    Measured,
}

impl Workload {
    fn parse(s: &str) -> Result<Workload> {
        WORKLOADS
            .into_iter()
            .find(|w| w.name().eq_ignore_ascii_case(s))
            .with_context(|| {
                let names: Vec<&str> = WORKLOADS.iter().map(|w| w.name()).collect();
                format!("unknown workload {s:?}; available: {}", names.join(", "))
            })
    }

    fn name(self) -> &'static str {
        match self {
            Workload::SchedulingBasic => "SchedulingBasic",
            Workload::SchedulingNodeAffinity => "SchedulingNodeAffinity",
            Workload::SchedulingPodAntiAffinity => "SchedulingPodAntiAffinity",
            Workload::SchedulingPreferredPodAffinity => "SchedulingPreferredPodAffinity",
            Workload::TopologySpreading => "TopologySpreading",
            Workload::PreemptionBasic => "PreemptionBasic",
        }
    }

    /// Init pods for `nodes` nodes, in upstream's ratio (its 5000Nodes
    /// cases; PreemptionBasic's 500Nodes case: 4 low-priority pods a node).
    fn init_pods(self, nodes: usize) -> usize {
        match self {
            Workload::SchedulingBasic | Workload::SchedulingPodAntiAffinity => nodes / 5,
            Workload::SchedulingNodeAffinity
            | Workload::SchedulingPreferredPodAffinity
            | Workload::TopologySpreading => nodes,
            Workload::PreemptionBasic => nodes * 4,
        }
    }

    /// Zone labels of the nodes (upstream's labelNodePrepareStrategy).
    fn zones(self) -> Vec<String> {
        match self {
            Workload::SchedulingNodeAffinity => vec!["zone1".into()],
            Workload::TopologySpreading => {
                vec!["moon-1".into(), "moon-2".into(), "moon-3".into()]
            }
            _ => Vec::new(),
        }
    }

    /// Refuses runs that cannot all be placed, so they fail at once rather
    /// than at the timeout.
    fn check(self, nodes: usize, init: usize, pods: usize) -> Result<()> {
        // Upstream's base node: 4 CPUs; the 100m pods fit 40 a node.
        let fits = match self {
            Workload::SchedulingPodAntiAffinity => nodes,
            Workload::PreemptionBasic => nodes * 4,
            _ => nodes * 40,
        };
        if self == Workload::PreemptionBasic && pods > nodes {
            bail!(
                "PreemptionBasic places one 3-CPU pod a node: --pods must be at most --nodes ({nodes})"
            );
        }
        if init + pods > fits && self != Workload::PreemptionBasic {
            bail!(
                "{}: {nodes} nodes hold at most {fits} pods of this workload, and it needs {init} init + {pods} measured",
                self.name()
            );
        }
        Ok(())
    }

    /// A pod of this workload (upstream's templates, named).
    fn pod(self, phase: Phase, name: &str) -> Value {
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {LABEL: "scheduler"}},
            "spec": {"containers": [{
                "name": "pause",
                "image": IMAGE,
                "ports": [{"containerPort": 80}],
                "resources": {
                    "requests": {"cpu": "100m", "memory": "500Mi"},
                    "limits": {"cpu": "100m", "memory": "500Mi"},
                },
            }]},
        });
        let set_cpu = |pod: &mut Value, cpu: &str| {
            let r = &mut pod["spec"]["containers"][0]["resources"];
            r["requests"]["cpu"] = json!(cpu);
            r["limits"]["cpu"] = json!(cpu);
        };
        let namespaces = json!([MEASURED_NS, INIT_NS]);
        match (self, phase) {
            (Workload::SchedulingBasic, _) => {}
            (Workload::SchedulingNodeAffinity, _) => {
                pod["spec"]["affinity"] = json!({"nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
                        "matchExpressions": [{"key": "topology.kubernetes.io/zone",
                            "operator": "In", "values": ["zone1", "zone2"]}]}]}}});
            }
            (Workload::SchedulingPodAntiAffinity, _) => {
                pod["metadata"]["labels"]["color"] = json!("green");
                pod["spec"]["affinity"] = json!({"podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [{
                        "labelSelector": {"matchLabels": {"color": "green"}},
                        "topologyKey": "kubernetes.io/hostname",
                        "namespaces": namespaces}]}});
            }
            (Workload::SchedulingPreferredPodAffinity, _) => {
                pod["metadata"]["labels"]["color"] = json!("red");
                pod["spec"]["affinity"] = json!({"podAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [{
                        "weight": 1,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": {"color": "red"}},
                            "topologyKey": "kubernetes.io/hostname",
                            "namespaces": namespaces}}]}});
            }
            (Workload::TopologySpreading, Phase::Init) => {}
            (Workload::TopologySpreading, Phase::Measured) => {
                pod["metadata"]["labels"]["color"] = json!("blue");
                pod["spec"]["topologySpreadConstraints"] = json!([{
                    "maxSkew": 5,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": {"color": "blue"}}}]);
            }
            (Workload::PreemptionBasic, Phase::Init) => {
                pod["spec"]["priorityClassName"] = json!(LOW_PRIORITY);
                pod["spec"]["terminationGracePeriodSeconds"] = json!(0);
                set_cpu(&mut pod, "900m");
            }
            (Workload::PreemptionBasic, Phase::Measured) => {
                pod["spec"]["priorityClassName"] = json!(HIGH_PRIORITY);
                set_cpu(&mut pod, "3000m");
            }
        }
        pod
    }
}

fn pod_name(phase: Phase, i: usize) -> String {
    match phase {
        Phase::Init => format!("init-{i:06}"),
        Phase::Measured => format!("pod-{i:06}"),
    }
}

fn parse_pod_name(name: &str) -> Option<(Phase, usize)> {
    if let Some(i) = name.strip_prefix("init-") {
        return Some((Phase::Init, i.parse().ok()?));
    }
    Some((Phase::Measured, name.strip_prefix("pod-")?.parse().ok()?))
}

/// When things happened to one set of pods, as nanoseconds since `t0`
/// (0: not yet).
struct Times {
    t0: Instant,
    sent: Vec<AtomicU64>,
    bound: Vec<AtomicU64>,
    unschedulable: Vec<AtomicBool>,
    bound_count: AtomicUsize,
}

impl Times {
    fn new(t0: Instant, n: usize) -> Times {
        Times {
            t0,
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            bound: (0..n).map(|_| AtomicU64::new(0)).collect(),
            unschedulable: (0..n).map(|_| AtomicBool::new(false)).collect(),
            bound_count: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        (self.t0.elapsed().as_nanos() as u64).max(1)
    }

    fn mark_bound(&self, i: usize, at: u64) {
        if let Some(b) = self.bound.get(i) {
            if b.compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                self.bound_count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn bound(&self) -> usize {
        self.bound_count.load(Ordering::Relaxed)
    }

    fn unschedulable(&self) -> usize {
        self.unschedulable
            .iter()
            .zip(&self.bound)
            .filter(|(u, b)| u.load(Ordering::Relaxed) && b.load(Ordering::Relaxed) == 0)
            .count()
    }
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    type_: String,
    object: EventPod,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EventPod {
    metadata: EventMeta,
    spec: EventSpec,
    status: EventStatus,
    code: Option<u16>,
    message: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct EventMeta {
    name: String,
    resource_version: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct EventSpec {
    node_name: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct EventStatus {
    conditions: Vec<Condition>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Condition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    reason: String,
}

/// Watches the bench's pods from `rv`, stamping bindings, until `stop`.
async fn watch_bindings(
    client: reqwest::Client,
    base: String,
    mut rv: String,
    init: Arc<Times>,
    measured: Arc<Times>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<()> {
    loop {
        let url = format!(
            "{base}/api/v1/pods?watch=true&labelSelector={LABEL}%3Dscheduler&resourceVersion={rv}&timeoutSeconds=3600&allowWatchBookmarks=true"
        );
        let mut resp = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = client.get(&url).send() => r.context("watching pods")?,
        };
        if !resp.status().is_success() {
            bail!(
                "watching pods: {} {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        let mut buf = Vec::new();
        loop {
            let chunk = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                c = resp.chunk() => c.context("reading the pod watch")?,
            };
            let Some(chunk) = chunk else { break };
            let now_init = init.now();
            buf.extend_from_slice(&chunk);
            let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
                continue;
            };
            let lines: Vec<u8> = buf.drain(..=end).collect();
            for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let ev: Event = serde_json::from_slice(line).context("decoding a watch event")?;
                if ev.type_ == "ERROR" {
                    bail!(
                        "the pod watch failed ({}): {}",
                        ev.object.code.unwrap_or(0),
                        ev.object.message.unwrap_or_default()
                    );
                }
                if !ev.object.metadata.resource_version.is_empty() {
                    rv = ev.object.metadata.resource_version.clone();
                }
                let Some((phase, i)) = parse_pod_name(&ev.object.metadata.name) else {
                    continue;
                };
                let times = match phase {
                    Phase::Init => &init,
                    Phase::Measured => &measured,
                };
                if !ev.object.spec.node_name.is_empty() {
                    // Both share t0, so one clock reading serves both.
                    times.mark_bound(i, now_init);
                } else if ev.object.status.conditions.iter().any(|c| {
                    c.type_ == "PodScheduled" && c.status == "False" && c.reason == "Unschedulable"
                }) {
                    if let Some(u) = times.unschedulable.get(i) {
                        u.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// Creates `times.sent.len()` pods of `phase` from `clients` connections.
async fn create_pods(
    target: &Target,
    clients: usize,
    workload: Workload,
    phase: Phase,
    times: &Arc<Times>,
) -> Result<()> {
    let ns = match phase {
        Phase::Init => INIT_NS,
        Phase::Measured => MEASURED_NS,
    };
    let url = format!("{}/api/v1/namespaces/{ns}/pods", target.server);
    let next = Arc::new(AtomicUsize::new(0));
    let total = times.sent.len();
    let mut workers = Vec::new();
    for _ in 0..clients.clamp(1, total.max(1)) {
        let (client, next, times, url) =
            (target.client()?, next.clone(), times.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                let name = pod_name(phase, i);
                let body = serde_json::to_vec(&workload.pod(phase, &name))?;
                // Latency counts from the first try.
                times.sent[i].store(times.now(), Ordering::Relaxed);
                let mut attempt = 0;
                loop {
                    let r = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    let (status, text) = match r {
                        Ok(r) => {
                            let s = r.status().as_u16();
                            (s, r.text().await.unwrap_or_default())
                        }
                        Err(e) => (0, e.to_string()),
                    };
                    if status == 201 {
                        break;
                    }
                    attempt += 1;
                    let transient = status == 0 || status == 429 || status >= 500;
                    if !transient || attempt >= 5 {
                        bail!("creating pod {ns}/{name}: {status} {text}");
                    }
                    tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                }
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    Ok(())
}

/// Waits until every pod of `times` is bound, or fails after `timeout`
/// saying how far it got.
async fn wait_bound(times: &Times, what: &str, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let total = times.bound.len();
    while times.bound() < total {
        if started.elapsed() > timeout {
            bail!(
                "timed out after {} s waiting for {what}: {} of {total} pods bound ({} unschedulable)",
                timeout.as_secs(),
                times.bound(),
                times.unschedulable()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Time allowed for `n` pods to be bound.
fn timeout_for(n: usize) -> Duration {
    Duration::from_secs(120) + Duration::from_millis(20 * n as u64)
}

async fn send_ok(req: reqwest::RequestBuilder, what: &str, accept: &[u16]) -> Result<()> {
    let r = req.send().await.with_context(|| what.to_string())?;
    let status = r.status();
    if !(status.is_success() || accept.contains(&status.as_u16())) {
        bail!("{what}: {status} {}", r.text().await.unwrap_or_default());
    }
    Ok(())
}

pub async fn run(args: BenchArgs) -> Result<()> {
    let workload = Workload::parse(&args.workload)?;
    let pods = args.pods.unwrap_or(10_000);
    let nodes = args.nodes;
    if nodes == 0 || pods == 0 {
        bail!("--nodes and --pods must be at least 1");
    }
    let init_count = workload.init_pods(nodes);
    workload.check(nodes, init_count, pods)?;

    let (child, target) = match &args.kubeconfig {
        Some(k) => (None, Target::from_kubeconfig(k)?),
        None => {
            // The scheduler is on: it is what is measured.
            let c = ChildServer::start(&[]).await?;
            let t = Target::from_kubeconfig(&c.kubeconfig)?;
            (Some(c), t)
        }
    };
    let client = target.client()?;
    let base = target.server.clone();

    // Namespaces, and for preemption the priority classes.
    for ns in [INIT_NS, MEASURED_NS] {
        let r = client
            .post(format!("{base}/api/v1/namespaces"))
            .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .send()
            .await?;
        if r.status().as_u16() == 409 {
            bail!("namespace {ns} exists (left from an earlier run?); delete it first");
        }
        if !r.status().is_success() {
            bail!(
                "creating namespace {ns}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
    }
    if workload == Workload::PreemptionBasic {
        for (name, value) in [(LOW_PRIORITY, 0), (HIGH_PRIORITY, 10)] {
            let pc = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                            "metadata": {"name": name}, "value": value});
            send_ok(
                client
                    .post(format!("{base}/apis/scheduling.k8s.io/v1/priorityclasses"))
                    .json(&pc),
                &format!("creating PriorityClass {name}"),
                &[409],
            )
            .await?;
        }
    }
    // The default ServiceAccount (upstream creates it asynchronously).
    for ns in [INIT_NS, MEASURED_NS] {
        for _ in 0..100 {
            let url = format!("{base}/api/v1/namespaces/{ns}/serviceaccounts/default");
            if client.get(url).send().await?.status().is_success() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // 1. Hollow nodes.
    let mut sim_config = SimConfig::new(nodes);
    // Apart from a `navarch sim` on the same cluster.
    sim_config.prefix = "bench-node-".into();
    sim_config.report_pods = false;
    sim_config.delete_on_stop = args.kubeconfig.is_some();
    sim_config.template = NodeTemplate {
        cpu: "4".into(),
        memory: "32Gi".into(),
        pods: 110,
        zones: workload.zones(),
        ..NodeTemplate::default()
    };
    let sim = Sim::start(target.clone(), sim_config)
        .await
        .context("starting hollow nodes")?;
    let nodes_ms = sim.registered_in().as_millis() as u64;
    if !args.json {
        eprintln!("registered {nodes} hollow nodes in {nodes_ms} ms");
    }

    let result = measure(&args, workload, &target, child.as_ref(), init_count, pods).await;
    if args.kubeconfig.is_some() {
        // Leave the target cluster as it was. No kubelet finishes these
        // pods' graceful deletion: delete them at once, before their nodes.
        for ns in [INIT_NS, MEASURED_NS] {
            let pods = format!("{base}/api/v1/namespaces/{ns}/pods");
            let grace0 =
                json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0});
            let ns_url = format!("{base}/api/v1/namespaces/{ns}");
            for (req, what) in [
                (
                    client.delete(pods).json(&grace0),
                    format!("deleting the pods in {ns}"),
                ),
                (client.delete(ns_url), format!("deleting namespace {ns}")),
            ] {
                if let Err(e) = send_ok(req, &what, &[404]).await {
                    eprintln!("cleaning up: {e:#}");
                }
            }
        }
        if workload == Workload::PreemptionBasic {
            for name in [LOW_PRIORITY, HIGH_PRIORITY] {
                let url = format!("{base}/apis/scheduling.k8s.io/v1/priorityclasses/{name}");
                let what = format!("deleting PriorityClass {name}");
                if let Err(e) = send_ok(client.delete(url), &what, &[404]).await {
                    eprintln!("cleaning up: {e:#}");
                }
            }
        }
    }
    if let Err(e) = sim.stop().await {
        eprintln!("stopping hollow nodes: {e:#}");
    }
    let mut result = result?;
    result["nodes_registered_ms"] = json!(nodes_ms);
    println!("{result}");
    Ok(())
}

async fn measure(
    args: &BenchArgs,
    workload: Workload,
    target: &Target,
    child: Option<&ChildServer>,
    init_count: usize,
    pods: usize,
) -> Result<Value> {
    let base = target.server.clone();
    let t0 = Instant::now();
    let init = Arc::new(Times::new(t0, init_count));
    let measured = Arc::new(Times::new(t0, pods));

    // The watch opens before the first create.
    let list: Value = target
        .client()?
        .get(format!(
            "{base}/api/v1/pods?labelSelector={LABEL}%3Dscheduler&limit=1"
        ))
        .send()
        .await?
        .json()
        .await?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .context("the pod list has no resourceVersion")?
        .to_string();
    let watch_client = target.client_builder()?.pool_max_idle_per_host(1).build()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = tokio::spawn(watch_bindings(
        watch_client,
        base.clone(),
        rv,
        init.clone(),
        measured.clone(),
        stop.clone(),
    ));
    let _stop_watch = stop.clone().drop_guard();

    // 2. Init pods, all bound before the measured ones start.
    if init_count > 0 {
        let started = Instant::now();
        create_pods(target, args.clients, workload, Phase::Init, &init).await?;
        wait_bound(&init, "the init pods", timeout_for(init_count)).await?;
        if !args.json {
            eprintln!(
                "{init_count} init pods bound in {} ms",
                started.elapsed().as_millis()
            );
        }
    }
    if watcher.is_finished() {
        return Err(watcher
            .await?
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("the pod watch ended")));
    }

    // 3. Measured pods.
    let cpu_before = child.and_then(|c| cpu_ms_of(c.child.id()));
    create_pods(target, args.clients, workload, Phase::Measured, &measured).await?;
    let waited = wait_bound(&measured, "the measured pods", timeout_for(pods)).await;
    let cpu_after = child.and_then(|c| cpu_ms_of(c.child.id()));
    if let Err(e) = waited {
        if watcher.is_finished() {
            if let Ok(Err(w)) = watcher.await {
                return Err(e.context(format!("the pod watch failed: {w:#}")));
            }
        }
        return Err(e);
    }
    stop.cancel();

    let first_sent = measured
        .sent
        .iter()
        .map(|t| t.load(Ordering::Relaxed))
        .min()
        .unwrap_or(0);
    let last_bound = measured
        .bound
        .iter()
        .map(|t| t.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let mut lat: Vec<f64> = measured
        .sent
        .iter()
        .zip(&measured.bound)
        .map(|(s, b)| {
            let (s, b) = (s.load(Ordering::Relaxed), b.load(Ordering::Relaxed));
            b.saturating_sub(s) as f64 / 1e6
        })
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let secs = (last_bound.saturating_sub(first_sent) as f64 / 1e9).max(1e-9);
    let pods_per_second = pods as f64 / secs;
    let round = |v: f64, d: f64| (v * d).round() / d;
    let server_cpu_ms = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => Some(round(a - b, 1.0)),
        _ => None,
    };
    let rss_mb = child
        .and_then(|c| c.rss_bytes())
        .map(|b| round(b as f64 / 1048576.0, 10.0));
    if !args.json {
        eprintln!(
            "{}: {pods} pods on {} nodes bound in {:.2} s: {:.0} pods/s, creation-to-binding p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            workload.name(),
            args.nodes,
            secs,
            pods_per_second,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or(0.0)
        );
        if let (Some(cpu), Some(rss)) = (server_cpu_ms, rss_mb) {
            eprintln!("server CPU {cpu:.0} ms during the measured pods, RSS {rss} MB at the end");
        }
    }
    Ok(json!({
        "bench": "scheduler",
        "workload": workload.name(),
        "target": if args.kubeconfig.is_some() { target.server.clone() } else { "navarch (child process)".to_string() },
        "nodes": args.nodes,
        "pods": pods,
        "init_pods": init_count,
        "bound": measured.bound(),
        "unschedulable": measured.unschedulable(),
        "clients": args.clients,
        "pods_per_second": round(pods_per_second, 10.0),
        "p50_ms": round(percentile(&lat, 0.50), 100.0),
        "p99_ms": round(percentile(&lat, 0.99), 100.0),
        "max_ms": round(lat.last().copied().unwrap_or(0.0), 100.0),
        "server_cpu_ms": server_cpu_ms,
        "server_rss_mb": rss_mb,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_parse_by_name() {
        for w in WORKLOADS {
            assert_eq!(Workload::parse(w.name()).unwrap(), w);
        }
        assert_eq!(
            Workload::parse("schedulingbasic").unwrap(),
            Workload::SchedulingBasic
        );
        let e = Workload::parse("Nope").unwrap_err().to_string();
        assert!(e.contains("TopologySpreading"), "{e}");
    }

    #[test]
    fn impossible_runs_are_refused() {
        let w = Workload::SchedulingPodAntiAffinity;
        assert!(w.check(100, w.init_pods(100), 80).is_ok());
        assert!(w.check(100, w.init_pods(100), 81).is_err());
        let p = Workload::PreemptionBasic;
        assert_eq!(p.init_pods(500), 2000);
        assert!(p.check(500, 2000, 500).is_ok());
        assert!(p.check(500, 2000, 501).is_err());
        assert!(Workload::SchedulingBasic.check(10, 2, 398).is_ok());
        assert!(Workload::SchedulingBasic.check(10, 2, 399).is_err());
    }

    #[test]
    fn pods_follow_the_upstream_templates() {
        let p = Workload::PreemptionBasic.pod(Phase::Measured, "pod-000001");
        assert_eq!(
            p["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "3000m"
        );
        assert_eq!(p["spec"]["priorityClassName"], HIGH_PRIORITY);
        let p = Workload::PreemptionBasic.pod(Phase::Init, "init-000001");
        assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 0);
        let p = Workload::TopologySpreading.pod(Phase::Measured, "pod-1");
        assert_eq!(p["spec"]["topologySpreadConstraints"][0]["maxSkew"], 5);
        let p = Workload::TopologySpreading.pod(Phase::Init, "init-1");
        assert!(p["spec"].get("topologySpreadConstraints").is_none());
        let p = Workload::SchedulingPodAntiAffinity.pod(Phase::Init, "init-1");
        assert_eq!(p["metadata"]["labels"]["color"], "green");
        assert_eq!(parse_pod_name("pod-000042").map(|(_, i)| i), Some(42));
        assert!(parse_pod_name("init-000007").is_some_and(|(p, i)| p == Phase::Init && i == 7));
        assert!(parse_pod_name("other").is_none());
    }
}
