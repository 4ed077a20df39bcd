//! `navarch bench controllers`: the controllers end to end on hollow nodes,
//! through the public API only (so `--kubeconfig` can point it at any
//! cluster):
//!
//! 1. **rollout**: a Deployment of `--pods` replicas, from create to every
//!    replica available;
//! 2. **rolling update**: a template change (maxSurge 25 %, maxUnavailable
//!    25 %), to every replica updated and available and the old ReplicaSet
//!    at zero;
//! 3. **node failure**: one hollow node cut off; from its last Lease
//!    renewal to its pods evicted and replaced, every replica available
//!    again (with the server started here: grace 20 s, toleration 5 s);
//! 4. **namespace deletion**: from the DELETE to the namespace gone.

use crate::bench::{rss_of, ChildServer, Target};
use anyhow::{bail, Context, Result};
use navarch_sim::{Sim, SimConfig};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const NS: &str = "navarch-bench-controllers";
const NAME: &str = "bench";
/// Server settings for the node failure phase (started here).
const GRACE_SECONDS: u64 = 20;
const TOLERATION_SECONDS: u64 = 5;

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn get(&self, path: &str) -> Result<(u16, Value)> {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await?;
        let code = r.status().as_u16();
        Ok((code, r.json().await.unwrap_or(Value::Null)))
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<Value> {
        let r = req.send().await.with_context(|| what.to_string())?;
        let code = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if !code.is_success() {
            bail!("{what}: {code} {}", body["message"]);
        }
        Ok(body)
    }

    fn deployment_path(&self) -> String {
        format!("/apis/apps/v1/namespaces/{NS}/deployments/{NAME}")
    }

    async fn deployment(&self) -> Result<Value> {
        let (code, d) = self.get(&self.deployment_path()).await?;
        if code != 200 {
            bail!("reading the deployment: {code}");
        }
        Ok(d)
    }
}

/// Every replica updated and available, and no old one left.
fn complete(d: &Value, n: i64) -> bool {
    let s = &d["status"];
    s["observedGeneration"] == d["metadata"]["generation"]
        && s["updatedReplicas"].as_i64() == Some(n)
        && s["availableReplicas"].as_i64() == Some(n)
        && s["replicas"].as_i64() == Some(n)
}

async fn wait<F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let t0 = Instant::now();
    loop {
        if f().await? {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > timeout {
            bail!("{what}: not done in {} s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(args: crate::bench::BenchArgs) -> Result<()> {
    let replicas = args.pods.unwrap_or(10_000) as i64;
    let nodes = args.nodes;
    if nodes < 2 || replicas < 1 {
        bail!("--nodes must be at least 2 and --pods at least 1");
    }
    let grace = format!("{GRACE_SECONDS}s");
    let toleration = TOLERATION_SECONDS.to_string();
    let (child, target) = match &args.kubeconfig {
        Some(k) => (None, Target::from_kubeconfig(k)?),
        None => {
            let c = ChildServer::start(&[
                "--node-monitor-grace-period",
                &grace,
                "--default-unreachable-toleration-seconds",
                &toleration,
                "--default-not-ready-toleration-seconds",
                &toleration,
            ])
            .await?;
            let t = Target::from_kubeconfig(&c.kubeconfig)?;
            (Some(c), t)
        }
    };
    let api = Api {
        client: target.client()?,
        base: target.server.clone(),
    };
    let log = |s: String| {
        if !args.json {
            eprintln!("{s}");
        }
    };

    let mut sim_config = SimConfig::new(nodes);
    sim_config.prefix = "bench-ctl-node-".into();
    // Well inside the grace period, at a write rate the server notices
    // (nodes / 5 renewals a second).
    sim_config.lease_renew = Duration::from_secs(5);
    sim_config.pod_workers = 64;
    sim_config.delete_on_stop = args.kubeconfig.is_some();
    let sim = Sim::start(target.clone(), sim_config)
        .await
        .context("starting hollow nodes")?;
    log(format!(
        "registered {nodes} hollow nodes in {} ms",
        sim.registered_in().as_millis()
    ));
    let result = phases(&api, &sim, replicas, &log).await;
    // Clean up what is left (after a failure, or the namespace of a target
    // cluster).
    let _ = api
        .client
        .delete(format!("{}/api/v1/namespaces/{NS}", api.base))
        .send()
        .await;
    if let Err(e) = sim.stop().await {
        eprintln!("stopping hollow nodes: {e:#}");
    }
    let mut out = result?;
    out["nodes"] = json!(nodes);
    out["replicas"] = json!(replicas);
    if let Some(c) = &child {
        out["server_rss_mb"] = json!(rss_of(c.child.id()).unwrap_or(0) / (1024 * 1024));
        out["grace_seconds"] = json!(GRACE_SECONDS);
        out["toleration_seconds"] = json!(TOLERATION_SECONDS);
    }
    println!("{out}");
    Ok(())
}

async fn phases(api: &Api, sim: &Sim, n: i64, log: &dyn Fn(String)) -> Result<Value> {
    let base = &api.base;
    api.send(
        api.client
            .post(format!("{base}/api/v1/namespaces"))
            .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})),
        "creating the namespace (left from an earlier run? delete it first)",
    )
    .await?;
    wait(
        "the default ServiceAccount",
        Duration::from_secs(30),
        || async {
            let (code, _) = api
                .get(&format!("/api/v1/namespaces/{NS}/serviceaccounts/default"))
                .await?;
            Ok(code == 200)
        },
    )
    .await?;
    let timeout = Duration::from_secs(300);

    // 1. Rollout.
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {"replicas": n, "selector": {"matchLabels": {"app": NAME}},
            "strategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"metadata": {"labels": {"app": NAME}},
                "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}});
    let t0 = Instant::now();
    api.send(
        api.client
            .post(format!("{base}/apis/apps/v1/namespaces/{NS}/deployments"))
            .json(&deployment),
        "creating the deployment",
    )
    .await?;
    wait("rollout", timeout, || async {
        Ok(complete(&api.deployment().await?, n))
    })
    .await?;
    let rollout = t0.elapsed();
    log(format!(
        "rollout: {n} replicas available in {:.2} s",
        rollout.as_secs_f64()
    ));

    // 2. Rolling update (what `kubectl rollout restart` writes).
    let t0 = Instant::now();
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": navarch_api::meta::rfc3339(jiff::Timestamp::now())}}}}});
    api.send(
        api.client
            .patch(format!("{base}{}", api.deployment_path()))
            .header("content-type", "application/strategic-merge-patch+json")
            .body(patch.to_string()),
        "updating the template",
    )
    .await?;
    // The new generation first, then completion.
    wait("rolling update", timeout, || async {
        let d = api.deployment().await?;
        Ok(d["metadata"]["generation"].as_i64() >= Some(2) && complete(&d, n))
    })
    .await?;
    let update = t0.elapsed();
    log(format!(
        "rolling update: {n} replicas replaced in {:.2} s",
        update.as_secs_f64()
    ));

    // 3. Node failure: the node with the most of the deployment's pods.
    let (_, pods) = api
        .get(&format!(
            "/api/v1/namespaces/{NS}/pods?labelSelector=app%3D{NAME}"
        ))
        .await?;
    let mut per_node: std::collections::HashMap<String, usize> = Default::default();
    for p in pods["items"].as_array().into_iter().flatten() {
        if p["metadata"]["deletionTimestamp"].is_null() {
            if let Some(node) = p["spec"]["nodeName"].as_str() {
                *per_node.entry(node.to_string()).or_default() += 1;
            }
        }
    }
    let (victim, on_victim) = per_node
        .into_iter()
        .max_by_key(|(name, c)| (*c, std::cmp::Reverse(name.clone())))
        .context("no pod is bound to a node")?;
    sim.partition(&[victim.as_str()])?;
    let cut_at = jiff::Timestamp::now();
    let t0 = Instant::now();
    let (_, lease) = api
        .get(&format!(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{victim}"
        ))
        .await?;
    let last_renewal: jiff::Timestamp = lease["spec"]["renewTime"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(cut_at);
    let before_cut = cut_at.duration_since(last_renewal);
    let field = format!("spec.nodeName%3D{victim}");
    wait("replacement of the failed node's pods", timeout, || async {
        let (_, on_node) = api
            .get(&format!(
                "/api/v1/namespaces/{NS}/pods?labelSelector=app%3D{NAME}&fieldSelector={field}"
            ))
            .await?;
        let evicted = on_node["items"].as_array().is_some_and(|ps| {
            ps.iter()
                .all(|p| !p["metadata"]["deletionTimestamp"].is_null())
        });
        let d = api.deployment().await?;
        Ok(evicted && d["status"]["availableReplicas"].as_i64() == Some(n))
    })
    .await?;
    let since_cut = t0.elapsed();
    let since_heartbeat = since_cut.as_secs_f64() + before_cut.as_secs_f64().max(0.0);
    log(format!(
        "node failure: {on_victim} pods of {victim} replaced and available {since_heartbeat:.2} s after its last heartbeat ({:.2} s after the cut)",
        since_cut.as_secs_f64()
    ));

    // 4. Namespace deletion.
    let t0 = Instant::now();
    api.send(
        api.client.delete(format!("{base}/api/v1/namespaces/{NS}")),
        "deleting the namespace",
    )
    .await?;
    // The failed node's pods are Terminating with no kubelet to finish
    // them: heal the node so its kubelet does, as a returning node would.
    sim.heal(&[victim.as_str()]).await?;
    wait("namespace deletion", timeout, || async {
        let (code, _) = api.get(&format!("/api/v1/namespaces/{NS}")).await?;
        Ok(code == 404)
    })
    .await?;
    let ns_delete = t0.elapsed();
    log(format!(
        "namespace deletion: {:.2} s",
        ns_delete.as_secs_f64()
    ));
    Ok(json!({
        "rollout_s": round(rollout.as_secs_f64()),
        "rolling_update_s": round(update.as_secs_f64()),
        "node_failure_pods": on_victim,
        "node_failure_from_heartbeat_s": round(since_heartbeat),
        "namespace_delete_s": round(ns_delete.as_secs_f64()),
    }))
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
