//! The `pods/eviction` subresource: a pod delete that respects the
//! PodDisruptionBudget covering the pod, as upstream's `EvictionREST`.
//!
//! * A pod that is terminal (`Succeeded`, `Failed`), `Pending`, or already
//!   terminating is deleted without looking at budgets (guarded by its
//!   resourceVersion unless terminal or terminating, and retried on
//!   conflict unless the client gave a resourceVersion precondition).
//! * Otherwise the PodDisruptionBudgets of its namespace whose selector
//!   matches it are read (a null or empty selector matches nothing here):
//!   none → delete; more than one → a 500 `Status`; one → the budget
//!   decides. A pod that is not Ready is deleted without spending the
//!   budget when the budget's `unhealthyPodEvictionPolicy` is
//!   `AlwaysAllow`, or (`IfHealthyBudget`, the default) when the
//!   application is healthy (`currentHealthy >= desiredHealthy > 0`); that
//!   delete is guarded by the pod's resourceVersion (a 429 if the pod
//!   changed meanwhile). Otherwise the budget is checked and decremented:
//!   stale budgets (`observedGeneration < generation`) and spent ones
//!   (`disruptionsAllowed == 0`) are 429s with a `DisruptionBudget` cause;
//!   a granted eviction lowers `disruptionsAllowed` and records the pod in
//!   `status.disruptedPods`, in one status update guarded by the budget's
//!   resourceVersion and retried on conflict, so concurrent evictions never
//!   exceed the budget. The disruption controller (`navarch-controllers`)
//!   then drops the entry once it sees the pod terminating, or after
//!   [`DELETION_TIMEOUT`].
//! * Before the delete, the pod gets the `DisruptionTarget` condition
//!   (reason `EvictionByEvictionAPI`), as upstream since 1.26; the delete
//!   takes the eviction's `deleteOptions` (grace period, preconditions),
//!   and a dry run writes nothing.

use crate::handlers::{now_rfc3339, DeleteOptions, WriteOptions};
use crate::ApiServer;
use navarch_api::registry::lookup;
use navarch_api::selector::LabelSelector;
use navarch_api::{ApiError, Cause, ResourceType, Subresource};
use serde_json::{json, Value};
use std::time::Duration;

/// Upstream `MaxDisruptedPodSize`: evictions granted but not yet seen by
/// the disruption controller, at most, per budget.
pub const MAX_DISRUPTED_PODS: usize = 2000;
/// Upstream `DeletionTimeout`: how long an entry of `status.disruptedPods`
/// holds a pod out of `currentHealthy` while it is not seen terminating.
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);
/// Upstream `EvictionsRetry`: attempts at a write that lost a race, and the
/// pause between them (plus up to 10 % jitter).
const RETRIES: usize = 20;
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The cause type of budget refusals (upstream `DisruptionBudgetCause`).
pub const DISRUPTION_BUDGET_CAUSE: &str = "DisruptionBudget";
/// The budget's condition and its reasons (upstream `policy/v1`).
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";
pub const SUFFICIENT_PODS: &str = "SufficientPods";
pub const INSUFFICIENT_PODS: &str = "InsufficientPods";
pub const SYNC_FAILED: &str = "SyncFailed";

const FIELD_MANAGER: &str = "kube-apiserver";

fn pods_rt() -> &'static ResourceType {
    lookup("", "v1", "pods").expect("pods are served")
}

fn pdb_rt() -> &'static ResourceType {
    lookup("policy", "v1", "poddisruptionbudgets").expect("poddisruptionbudgets are served")
}

/// Upstream `meta.SetStatusCondition` on a `metav1.Condition` list: the
/// transition time moves only when the status changes.
pub fn set_status_condition(
    conditions: &mut Vec<Value>,
    ty: &str,
    status: &str,
    reason: &str,
    message: &str,
    observed_generation: i64,
) {
    let mut c = json!({"type": ty, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": now_rfc3339()});
    if observed_generation != 0 {
        c["observedGeneration"] = json!(observed_generation);
    }
    match conditions.iter_mut().find(|c| c["type"] == ty) {
        Some(old) => {
            if old["status"] == status && !old["lastTransitionTime"].is_null() {
                c["lastTransitionTime"] = old["lastTransitionTime"].clone();
            }
            *old = c;
        }
        None => conditions.push(c),
    }
}

/// Upstream `UpdateDisruptionAllowedCondition`: `DisruptionAllowed` is
/// True (`SufficientPods`) while `disruptionsAllowed > 0`, else False
/// (`InsufficientPods`).
pub fn update_disruption_allowed_condition(status: &mut Value) {
    let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
    let generation = status["observedGeneration"].as_i64().unwrap_or(0);
    let mut conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    let (st, reason) = if allowed > 0 {
        ("True", SUFFICIENT_PODS)
    } else {
        ("False", INSUFFICIENT_PODS)
    };
    set_status_condition(
        &mut conditions,
        DISRUPTION_ALLOWED,
        st,
        reason,
        "",
        generation,
    );
    status["conditions"] = Value::Array(conditions);
}

/// Upstream `IsPodReady`.
pub fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Upstream `canIgnorePDB`.
fn can_ignore_pdb(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed" | "Pending")
    ) || terminating(pod)
}

/// Upstream `shouldEnforceResourceVersion`.
fn should_enforce_resource_version(pod: &Value) -> bool {
    !matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    ) && !terminating(pod)
}

fn terminating(o: &Value) -> bool {
    !o["metadata"]["deletionTimestamp"].is_null()
}

fn rv_of(o: &Value) -> String {
    o["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn too_many_requests(retry_after: u32, cause: String) -> ApiError {
    let mut e = ApiError::new(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
    );
    e.retry_after = Some(retry_after).filter(|s| *s > 0);
    e.causes.push(Cause {
        reason: DISRUPTION_BUDGET_CAUSE,
        field: String::new(),
        message: cause,
    });
    e
}

/// Upstream `createTooManyRequestsError`: the budget is not settled yet.
fn budget_being_processed(pdb: &str) -> ApiError {
    too_many_requests(
        10,
        format!("The disruption budget {pdb} is still being processed by the server."),
    )
}

fn forbidden(pdb: &str, why: &str) -> ApiError {
    ApiError::forbidden(format!(
        "poddisruptionbudget.policy \"{pdb}\" is forbidden: {why}"
    ))
    .with_details("policy", "poddisruptionbudget", pdb)
}

fn is_conflict(e: &ApiError) -> bool {
    e.code == 409 && e.reason == "Conflict"
}

async fn pause() {
    use rand::Rng;
    let jitter = rand::rng().random_range(0.0..0.1);
    tokio::time::sleep(RETRY_PAUSE.mul_f64(1.0 + jitter)).await;
}

/// The `Status` of a granted eviction (HTTP 201).
fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

impl ApiServer {
    /// `POST pods/{name}/eviction` with a decoded `policy/v1` or
    /// `policy/v1beta1` Eviction. Returns the `Status` to send: `Success`
    /// (201), or the `Failure` upstream returns as an object (500, a pod
    /// under several budgets); refusals are errors (429 and others).
    pub async fn evict(
        &self,
        ns: &str,
        name: &str,
        eviction: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut opts = check_eviction(ns, name, eviction)?;
        opts.dry_run |= dry_run;
        let user_rv = opts.precondition_rv.is_some();

        // Pods the budgets need not protect are deleted straight away.
        let mut attempt = 0;
        let pod = loop {
            attempt += 1;
            let pod = self.read_pod(ns, name).await?;
            if !can_ignore_pdb(&pod) {
                break pod;
            }
            let mut del = opts.clone();
            if should_enforce_resource_version(&pod) && !user_rv {
                del.precondition_rv = Some(rv_of(&pod));
            }
            match self.add_condition_and_delete(ns, name, del).await {
                Ok(()) => return Ok(success()),
                Err(e) if is_conflict(&e) && !user_rv && attempt < RETRIES => pause().await,
                Err(e) => return Err(e),
            }
        };

        let pdbs = self.budgets_for(&pod).await?;
        if pdbs.len() > 1 {
            return Ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "code": 500,
                "message": "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."}));
        }
        let mut guard_rv = false;
        let mut pdb_name = String::new();
        if let Some(mut pdb) = pdbs.into_iter().next() {
            pdb_name = pdb["metadata"]["name"].as_str().unwrap_or("").to_string();
            let st = &pdb["status"];
            let healthy_enough = st["currentHealthy"].as_i64().unwrap_or(0)
                >= st["desiredHealthy"].as_i64().unwrap_or(0)
                && st["desiredHealthy"].as_i64().unwrap_or(0) > 0;
            let always = pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
            if !pod_ready(&pod) && (always || healthy_enough) {
                // An unready pod does not count as healthy: deleting it
                // spends nothing, as long as it is still the pod we saw.
                guard_rv = true;
            } else {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match self.check_and_decrement(ns, name, &pdb, opts.dry_run).await {
                        Ok(()) => break,
                        Err(e) if is_conflict(&e) => {
                            if attempt >= RETRIES {
                                let mut e = ApiError::timeout(format!(
                                    "couldn't update PodDisruptionBudget \"{pdb_name}\" due to conflicts"
                                ));
                                e.retry_after = Some(10);
                                return Err(e);
                            }
                            pause().await;
                            pdb = self.read_object(pdb_rt(), ns, &pdb_name).await?;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }

        let mut del = opts;
        if guard_rv {
            del.precondition_rv = Some(rv_of(&pod));
        }
        match self.add_condition_and_delete(ns, name, del).await {
            Ok(()) => Ok(success()),
            Err(e) if is_conflict(&e) && guard_rv && !user_rv => {
                Err(budget_being_processed(&pdb_name))
            }
            Err(e) => Err(e),
        }
    }

    async fn read_object(
        &self,
        rt: &'static ResourceType,
        ns: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let (mut v, rev) = self.read(rt, Some(ns), name).await?;
        v["metadata"]["resourceVersion"] = json!(rev.to_string());
        Ok(v)
    }

    async fn read_pod(&self, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.read_object(pods_rt(), ns, name).await
    }

    /// The budgets of the pod's namespace whose selector matches it (a
    /// null or empty selector matches nothing, as upstream's eviction
    /// handler; invalid selectors match nothing either).
    async fn budgets_for(&self, pod: &Value) -> Result<Vec<Value>, ApiError> {
        self.cache
            .sync()
            .await
            .map_err(|e| ApiError::timeout(e.to_string()))?;
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("");
        let labels = pod["metadata"]["labels"].as_object();
        let filter = crate::cache::Filter {
            namespace: Some(ns.to_string()),
            ..Default::default()
        };
        let mut out = Vec::new();
        for o in self.cache.kind(pdb_rt()).list(&filter, 0).items {
            let pdb = o.value();
            let Ok(sel) = LabelSelector::from_label_selector_or_nothing(&pdb["spec"]["selector"])
            else {
                continue;
            };
            if sel.is_empty() || !sel.matches(labels) {
                continue;
            }
            out.push(pdb);
        }
        Ok(out)
    }

    /// Upstream `checkAndDecrement`: refuses when the budget is stale or
    /// spent, else records the eviction in the budget's status (guarded by
    /// the budget's resourceVersion: a 409 means "read it again").
    async fn check_and_decrement(
        &self,
        ns: &str,
        pod: &str,
        pdb: &Value,
        dry_run: bool,
    ) -> Result<(), ApiError> {
        let name = pdb["metadata"]["name"].as_str().unwrap_or("");
        let st = &pdb["status"];
        let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(0);
        if st["observedGeneration"].as_i64().unwrap_or(0) < generation {
            return Err(budget_being_processed(name));
        }
        let allowed = st["disruptionsAllowed"].as_i64().unwrap_or(0);
        if allowed < 0 {
            return Err(forbidden(name, "pdb disruptions allowed is negative"));
        }
        let disrupted = st["disruptedPods"]
            .as_object()
            .map(|m| m.len())
            .unwrap_or(0);
        if disrupted > MAX_DISRUPTED_PODS {
            return Err(forbidden(
                name,
                "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
            ));
        }
        if allowed == 0 {
            return Err(too_many_requests(
                0,
                format!(
                    "The disruption budget {name} needs {} healthy pods and has {} currently",
                    st["desiredHealthy"].as_i64().unwrap_or(0),
                    st["currentHealthy"].as_i64().unwrap_or(0)
                ),
            ));
        }
        if dry_run {
            return Ok(());
        }
        let mut new = pdb.clone();
        new["status"]["disruptionsAllowed"] = json!(allowed - 1);
        if allowed - 1 == 0 {
            update_disruption_allowed_condition(&mut new["status"]);
        }
        if !new["status"]["disruptedPods"].is_object() {
            new["status"]["disruptedPods"] = json!({});
        }
        new["status"]["disruptedPods"][pod] = json!(now_rfc3339());
        let opts = WriteOptions {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        // `new` carries the resourceVersion read: a precondition.
        self.update(
            pdb_rt(),
            Some(ns),
            name,
            Some(Subresource::Status),
            new,
            &opts,
        )
        .await?;
        Ok(())
    }

    /// Upstream `addConditionAndDeletePod`: the `DisruptionTarget`
    /// condition on the pod as it is now (if it still meets the delete's
    /// preconditions), then the delete, whose resourceVersion precondition
    /// follows the condition's write.
    async fn add_condition_and_delete(
        &self,
        ns: &str,
        name: &str,
        mut opts: DeleteOptions,
    ) -> Result<(), ApiError> {
        if !opts.dry_run {
            let mut attempt = 0;
            let written = loop {
                attempt += 1;
                let mut pod = self.read_pod(ns, name).await?;
                let (uid, rv) = (
                    pod["metadata"]["uid"].as_str().unwrap_or("").to_string(),
                    rv_of(&pod),
                );
                if let Some(want) = opts.precondition_uid.as_deref().filter(|u| !u.is_empty()) {
                    if want != uid {
                        return Err(ApiError::conflict("", "Pod", name, &format!(
                            "the UID in the precondition ({want}) does not match the UID in record ({uid}). The object might have been deleted and then recreated"
                        )));
                    }
                }
                if let Some(want) = opts.precondition_rv.as_deref().filter(|r| !r.is_empty()) {
                    if want != rv {
                        return Err(ApiError::conflict("", "Pod", name, &format!(
                            "the ResourceVersion in the precondition ({want}) does not match the ResourceVersion in record ({rv}). The object might have been modified"
                        )));
                    }
                }
                set_pod_condition(
                    &mut pod,
                    "DisruptionTarget",
                    "True",
                    "EvictionByEvictionAPI",
                    "Eviction API: evicting",
                );
                let wopts = WriteOptions {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                };
                match self
                    .update(
                        pods_rt(),
                        Some(ns),
                        name,
                        Some(Subresource::Status),
                        pod,
                        &wopts,
                    )
                    .await
                {
                    Ok(w) => break w.object,
                    Err(e) if is_conflict(&e) && attempt < RETRIES => continue,
                    Err(e) => return Err(e),
                }
            };
            if opts.precondition_rv.is_some() {
                opts.precondition_rv = Some(rv_of(&written));
            }
        }
        self.delete(pods_rt(), Some(ns), name, &opts).await?;
        Ok(())
    }
}

/// Upstream `UpdatePodCondition`: the condition replaced whole, its
/// transition time kept while the status stays.
fn set_pod_condition(pod: &mut Value, ty: &str, status: &str, reason: &str, message: &str) {
    let mut conditions = pod["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut c = json!({"type": ty, "status": status, "lastProbeTime": null,
        "lastTransitionTime": now_rfc3339(), "reason": reason, "message": message});
    match conditions.iter_mut().find(|c| c["type"] == ty) {
        Some(old) => {
            if old["status"] == status {
                c["lastTransitionTime"] = old["lastTransitionTime"].clone();
            }
            *old = c;
        }
        None => conditions.push(c),
    }
    if !pod["status"].is_object() {
        pod["status"] = json!({});
    }
    pod["status"]["conditions"] = Value::Array(conditions);
}

/// The Eviction's type, name and namespace against the URL; its
/// `deleteOptions`.
fn check_eviction(ns: &str, name: &str, ev: &Value) -> Result<DeleteOptions, ApiError> {
    if !ev.is_object() {
        return Err(ApiError::bad_request("Eviction must be a JSON object"));
    }
    let api_version = ev["apiVersion"].as_str().unwrap_or("");
    let kind = ev["kind"].as_str().unwrap_or("");
    if !matches!(api_version, "" | "policy/v1" | "policy/v1beta1")
        || !matches!(kind, "" | "Eviction")
    {
        return Err(ApiError::bad_request(format!(
            "not a Eviction object: {api_version}, Kind={kind} (policy/v1 and policy/v1beta1 Evictions are accepted)"
        )));
    }
    let body_ns = ev["metadata"]["namespace"].as_str().unwrap_or("");
    if !body_ns.is_empty() && body_ns != ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if ev["metadata"]["name"].as_str().unwrap_or("") != name {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    DeleteOptions::from_json(&ev["deleteOptions"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evictions_of_both_versions_are_accepted_and_names_must_match() {
        for v in ["policy/v1", "policy/v1beta1"] {
            let ev = json!({"apiVersion": v, "kind": "Eviction",
                "metadata": {"name": "p", "namespace": "default"},
                "deleteOptions": {"gracePeriodSeconds": 5, "preconditions": {"uid": "u"}}});
            let o = check_eviction("default", "p", &ev).unwrap();
            assert_eq!(o.grace_period_seconds, Some(5));
            assert_eq!(o.precondition_uid.as_deref(), Some("u"));
        }
        let e = check_eviction("default", "q", &json!({"metadata": {"name": "p"}})).unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "name in URL does not match name in Eviction object"
        );
        let e = check_eviction(
            "default",
            "p",
            &json!({"metadata": {"name": "p", "namespace": "other"}}),
        )
        .unwrap_err();
        assert_eq!(e.code, 400);
        let e = check_eviction(
            "default",
            "p",
            &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}),
        )
        .unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn budgets_skip_only_for_terminal_pending_or_terminating_pods() {
        let pod = |phase: &str, deleting: bool| {
            let mut p = json!({"metadata": {}, "status": {"phase": phase}});
            if deleting {
                p["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
            }
            p
        };
        for ph in ["Succeeded", "Failed", "Pending"] {
            assert!(can_ignore_pdb(&pod(ph, false)), "{ph}");
        }
        assert!(!can_ignore_pdb(&pod("Running", false)));
        assert!(can_ignore_pdb(&pod("Running", true)));
        assert!(should_enforce_resource_version(&pod("Pending", false)));
        assert!(!should_enforce_resource_version(&pod("Failed", false)));
        assert!(!should_enforce_resource_version(&pod("Running", true)));
    }

    #[test]
    fn disruption_allowed_condition_keeps_its_transition_time_while_the_status_stays() {
        let mut st = json!({"disruptionsAllowed": 2, "observedGeneration": 3});
        update_disruption_allowed_condition(&mut st);
        let c = st["conditions"][0].clone();
        assert_eq!(c["type"], "DisruptionAllowed");
        assert_eq!(c["status"], "True");
        assert_eq!(c["reason"], "SufficientPods");
        assert_eq!(c["message"], "");
        assert_eq!(c["observedGeneration"], 3);
        let mut old = st.clone();
        old["conditions"][0]["lastTransitionTime"] = json!("2020-01-01T00:00:00Z");
        old["disruptionsAllowed"] = json!(1);
        update_disruption_allowed_condition(&mut old);
        assert_eq!(
            old["conditions"][0]["lastTransitionTime"],
            "2020-01-01T00:00:00Z"
        );
        old["disruptionsAllowed"] = json!(0);
        update_disruption_allowed_condition(&mut old);
        let c = &old["conditions"][0];
        assert_eq!(old["conditions"].as_array().unwrap().len(), 1);
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("False"), Some("InsufficientPods"))
        );
        assert_ne!(c["lastTransitionTime"], "2020-01-01T00:00:00Z");
    }

    #[test]
    fn refusals_carry_upstream_messages() {
        let e = budget_being_processed("web");
        assert_eq!(e.code, 429);
        assert_eq!(e.retry_after, Some(10));
        let s = e.to_status();
        assert_eq!(s["reason"], "TooManyRequests");
        assert_eq!(
            s["message"],
            "Cannot evict pod as it would violate the pod's disruption budget."
        );
        assert_eq!(s["details"]["causes"][0]["reason"], "DisruptionBudget");
        assert_eq!(
            s["details"]["causes"][0]["message"],
            "The disruption budget web is still being processed by the server."
        );
        let f = forbidden("web", "pdb disruptions allowed is negative");
        assert_eq!(f.code, 403);
        assert_eq!(
            f.message,
            "poddisruptionbudget.policy \"web\" is forbidden: pdb disruptions allowed is negative"
        );
    }
}
