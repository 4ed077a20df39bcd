//! Pod status: the pure parts (phase, conditions, JSON merge-patch diff).

use serde_json::{Map, Value};

/// What the worker knows of one container, for phase and conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerPhase {
    /// Not started yet (or waiting to be started for the first time).
    Waiting,
    Running,
    /// Waiting to be restarted after it ran (back-off, or restart pending).
    Restarting,
    Succeeded,
    Failed,
}

/// The pod phase from its regular containers, as the kubelet's `getPhase`
/// derives it once the init containers are done.
pub fn pod_phase(restart_policy: &str, containers: &[ContainerPhase]) -> &'static str {
    let mut running = 0;
    let mut waiting = 0;
    let mut restarting = 0;
    let mut succeeded = 0;
    let mut failed = 0;
    for c in containers {
        match c {
            ContainerPhase::Waiting => waiting += 1,
            ContainerPhase::Running => running += 1,
            ContainerPhase::Restarting => restarting += 1,
            ContainerPhase::Succeeded => succeeded += 1,
            ContainerPhase::Failed => failed += 1,
        }
    }
    if containers.is_empty() {
        return "Pending";
    }
    // A container that never started keeps the pod Pending, as upstream's
    // getPhase has it ("one or more containers has not been started").
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 || restarting > 0 {
        return "Running";
    }
    // Everything has stopped.
    match restart_policy {
        "Always" => "Running",
        "OnFailure" if failed > 0 => "Running",
        _ if failed > 0 => "Failed",
        _ => {
            debug_assert_eq!(succeeded, containers.len());
            "Succeeded"
        }
    }
}

/// A JSON merge patch (RFC 7386) that turns `old` into `new`: changed
/// values replace, removed keys become `null`, arrays are replaced whole.
/// `None` when nothing changed.
pub fn merge_diff(old: &Value, new: &Value) -> Option<Value> {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = Map::new();
            for (k, nv) in n {
                match o.get(k) {
                    Some(ov) => {
                        if let Some(p) = merge_diff(ov, nv) {
                            patch.insert(k.clone(), p);
                        }
                    }
                    None => {
                        patch.insert(k.clone(), nv.clone());
                    }
                }
            }
            for k in o.keys() {
                if !n.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                }
            }
            (!patch.is_empty()).then_some(Value::Object(patch))
        }
        _ if old == new => None,
        // A non-object replacing an object (or the reverse) is a plain
        // replacement; an object value must not contain nulls meant
        // literally, which status never does.
        _ => Some(new.clone()),
    }
}

/// Sets `conditions[type]`, keeping `lastTransitionTime` when the status did
/// not change. Conditions of other types (the scheduler's, disruption
/// targets) are left alone.
pub fn set_condition(
    conditions: &mut Vec<Value>,
    type_: &str,
    status: bool,
    reason: Option<&str>,
    message: Option<&str>,
    now: &str,
) {
    let status_s = if status { "True" } else { "False" };
    let mut c = Map::new();
    c.insert("type".into(), type_.into());
    c.insert("status".into(), status_s.into());
    let mut transition = now.to_string();
    if let Some(old) = conditions.iter().find(|c| c["type"] == type_) {
        if old["status"] == status_s {
            if let Some(t) = old["lastTransitionTime"].as_str() {
                transition = t.to_string();
            }
        }
    }
    c.insert("lastProbeTime".into(), Value::Null);
    c.insert("lastTransitionTime".into(), transition.into());
    if let Some(r) = reason {
        c.insert("reason".into(), r.into());
    }
    if let Some(m) = message {
        c.insert("message".into(), m.into());
    }
    let c = Value::Object(c);
    match conditions.iter_mut().find(|x| x["type"] == type_) {
        Some(slot) => *slot = c,
        None => conditions.push(c),
    }
}

/// Applies a JSON merge patch as the API server does (for tests).
#[cfg(test)]
pub(crate) fn apply_merge_patch(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = Value::Object(Map::new());
        }
        let t = target.as_object_mut().expect("object");
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                apply_merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use ContainerPhase::*;

    #[test]
    fn phases() {
        assert_eq!(pod_phase("Always", &[Waiting]), "Pending");
        assert_eq!(pod_phase("Always", &[Running, Waiting]), "Pending");
        assert_eq!(pod_phase("Always", &[Running, Restarting]), "Running");
        assert_eq!(pod_phase("Always", &[Succeeded]), "Running");
        assert_eq!(pod_phase("Always", &[Restarting]), "Running");
        assert_eq!(pod_phase("OnFailure", &[Succeeded, Succeeded]), "Succeeded");
        assert_eq!(pod_phase("OnFailure", &[Succeeded, Failed]), "Running");
        assert_eq!(pod_phase("Never", &[Succeeded, Failed]), "Failed");
        assert_eq!(pod_phase("Never", &[Succeeded]), "Succeeded");
        assert_eq!(pod_phase("Never", &[Running, Failed]), "Running");
        assert_eq!(pod_phase("Never", &[]), "Pending");
    }

    #[test]
    fn merge_diff_round_trips() {
        let old = json!({"phase": "Pending", "containerStatuses": [{"state": {"waiting": {"reason": "x"}}}], "a": {"b": 1, "c": 2}});
        let new = json!({"phase": "Running", "containerStatuses": [{"state": {"running": {}}}], "a": {"b": 1}});
        let patch = merge_diff(&old, &new).unwrap();
        assert_eq!(
            patch,
            json!({"phase": "Running", "containerStatuses": [{"state": {"running": {}}}], "a": {"c": null}})
        );
        let mut applied = old.clone();
        apply_merge_patch(&mut applied, &patch);
        assert_eq!(applied, new);
        assert_eq!(merge_diff(&new, &new), None);
    }

    #[test]
    fn conditions_keep_transition_time() {
        let mut cs = vec![json!({"type": "PodScheduled", "status": "True"})];
        set_condition(&mut cs, "Ready", false, Some("R"), None, "t1");
        set_condition(&mut cs, "Ready", false, Some("R"), None, "t2");
        assert_eq!(cs[1]["lastTransitionTime"], "t1");
        set_condition(&mut cs, "Ready", true, None, None, "t3");
        assert_eq!(cs[1]["lastTransitionTime"], "t3");
        assert_eq!(cs[0]["type"], "PodScheduled");
        assert_eq!(cs.len(), 2);
    }
}
