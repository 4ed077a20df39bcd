//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's
//! `leaderelection` with the Lease lock: with several servers on one
//! store, only the holder of the Lease runs what it guards.
//!
//! A candidate takes the Lease when it does not exist, when it already
//! holds it, or when the holder has not renewed it for
//! `leaseDurationSeconds` as measured by the candidate's own clock (the
//! time it last *saw* the record change, not the remote timestamps). Every
//! write is guarded by the Lease's resourceVersion, so two candidates
//! never both win. The leader renews every `retry_period`; if it cannot
//! renew within `renew_deadline` it stops leading (its work is cancelled)
//! and becomes a candidate again. On shutdown the leader releases the
//! Lease (holder cleared, duration 1 s) so a successor need not wait.
//!
//! `navarch server` guards its controllers with the Lease
//! `kube-system/kube-controller-manager` and the scheduler with
//! `kube-system/kube-scheduler`, the names upstream's components use.

use navarch_api::patch::PatchType;
use navarch_api::registry::lookup;
use navarch_api::{ApiError, ResourceType};
use navarch_apiserver::{ApiServer, WriteOptions};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Timings (client-go's defaults for kube-controller-manager).
#[derive(Debug, Clone)]
pub struct ElectionConfig {
    pub namespace: String,
    pub name: String,
    /// This candidate's identity (`holderIdentity`).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl ElectionConfig {
    /// A Lease `name` in `kube-system` with client-go's default timings
    /// (15 s, 10 s, 2 s). Give `identity` a value stable across restarts of
    /// one server (a restarted server then takes its Lease back at once
    /// instead of waiting for it to expire) and distinct between servers.
    pub fn new(name: &str, identity: &str) -> ElectionConfig {
        ElectionConfig {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

fn leases() -> &'static ResourceType {
    lookup("coordination.k8s.io", "v1", "leases").expect("served")
}

fn micro_now() -> String {
    navarch_api::meta::rfc3339_micro(jiff::Timestamp::now())
}

/// Runs an election until `shutdown`. Each time this candidate becomes the
/// leader, `lead` is called with a token that is cancelled when the
/// leadership is lost (or at shutdown); it should start the guarded work
/// on that token and return.
pub fn run<F>(
    server: Arc<ApiServer>,
    config: ElectionConfig,
    shutdown: CancellationToken,
    lead: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(CancellationToken) + Send + 'static,
{
    tokio::spawn(async move {
        let mut elector = Elector {
            server,
            config,
            observed: None,
        };
        loop {
            // Candidate: try until the Lease is ours.
            loop {
                match elector.try_acquire_or_renew().await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::debug!(lease = %elector.config.name, error = %e, "leader election attempt failed")
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(elector.config.retry_period) => {}
                }
            }
            tracing::info!(lease = %elector.config.name, identity = %elector.config.identity, "became leader");
            let leading = shutdown.child_token();
            lead(leading.clone());
            // Leader: renew until a renewal deadline is missed.
            let mut last_renew = Instant::now();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        leading.cancel();
                        elector.release().await;
                        return;
                    }
                    _ = tokio::time::sleep(elector.config.retry_period) => {}
                }
                match elector.try_acquire_or_renew().await {
                    Ok(true) => last_renew = Instant::now(),
                    Ok(false) => {
                        tracing::warn!(lease = %elector.config.name, "leadership taken by another candidate");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(lease = %elector.config.name, error = %e, "renewing leadership failed");
                        if last_renew.elapsed() >= elector.config.renew_deadline {
                            break;
                        }
                    }
                }
            }
            tracing::warn!(lease = %elector.config.name, "lost leadership: stopping");
            leading.cancel();
        }
    })
}

struct Elector {
    server: Arc<ApiServer>,
    config: ElectionConfig,
    /// The record last seen (holder, renewTime) and when it was seen.
    observed: Option<(String, String, Instant)>,
}

impl Elector {
    /// Takes or renews the Lease; `Ok(false)` when another candidate
    /// holds it and it has not expired.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, ApiError> {
        let ns = Some(self.config.namespace.as_str());
        let now = micro_now();
        let secs = self.config.lease_duration.as_secs().max(1) as i64;
        let (cur, rv) = match self.server.read(leases(), ns, &self.config.name).await {
            Ok(x) => x,
            Err(e) if e.code == 404 => {
                let lease = json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.config.name, "namespace": self.config.namespace},
                    "spec": {"holderIdentity": self.config.identity, "leaseDurationSeconds": secs,
                        "acquireTime": now, "renewTime": now, "leaseTransitions": 0}});
                self.server
                    .create(leases(), ns, lease, &WriteOptions::default())
                    .await?;
                self.observed = Some((self.config.identity.clone(), now, Instant::now()));
                return Ok(true);
            }
            Err(e) => return Err(e),
        };
        let spec = &cur["spec"];
        let holder = spec["holderIdentity"].as_str().unwrap_or("").to_string();
        let renew = spec["renewTime"].as_str().unwrap_or("").to_string();
        let duration = Duration::from_secs(spec["leaseDurationSeconds"].as_u64().unwrap_or(0));
        let seen_at = match &self.observed {
            Some((h, r, at)) if *h == holder && *r == renew => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((holder.clone(), renew.clone(), at));
                at
            }
        };
        let mine = holder == self.config.identity;
        let expired = holder.is_empty() || seen_at.elapsed() >= duration;
        if !mine && !expired {
            return Ok(false);
        }
        let transitions = spec["leaseTransitions"].as_i64().unwrap_or(0) + i64::from(!mine);
        let mut patch = json!({"metadata": {"resourceVersion": rv.to_string()},
            "spec": {"holderIdentity": self.config.identity, "leaseDurationSeconds": secs,
                "renewTime": now, "leaseTransitions": transitions}});
        if !mine {
            patch["spec"]["acquireTime"] = Value::String(now.clone());
        }
        match self
            .server
            .patch(
                leases(),
                ns,
                &self.config.name,
                None,
                PatchType::Merge,
                patch,
                &WriteOptions::default(),
            )
            .await
        {
            Ok(_) => {
                self.observed = Some((self.config.identity.clone(), now, Instant::now()));
                Ok(true)
            }
            // Someone else wrote first.
            Err(e) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (client-go's `ReleaseOnCancel`).
    async fn release(&self) {
        let ns = Some(self.config.namespace.as_str());
        let Ok((cur, rv)) = self.server.read(leases(), ns, &self.config.name).await else {
            return;
        };
        if cur["spec"]["holderIdentity"] != self.config.identity.as_str() {
            return;
        }
        let now = micro_now();
        let patch = json!({"metadata": {"resourceVersion": rv.to_string()},
            "spec": {"holderIdentity": Value::Null, "leaseDurationSeconds": 1, "renewTime": now}});
        let r = self
            .server
            .patch(
                leases(),
                ns,
                &self.config.name,
                None,
                PatchType::Merge,
                patch,
                &WriteOptions::default(),
            )
            .await;
        if let Err(e) = r {
            tracing::debug!(lease = %self.config.name, error = %e, "releasing the lease failed");
        }
    }
}
