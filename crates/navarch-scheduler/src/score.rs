//! Scores: how good is a feasible node? Each plugin yields 0..100 per node
//! (after its normalisation), multiplied by its weight and summed.
//! ImageLocality is not implemented (the ledger does not track images).

use crate::config::ScoringStrategy;
use crate::ledger::Usage;
use crate::node::NodeInfo;
use crate::pod::PodInfo;
use crate::selector::{tolerated, Effect, Toleration};

/// Upstream `framework.MaxNodeScore`.
pub const MAX_NODE_SCORE: i64 = 100;

fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

fn most_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 {
        return 0;
    }
    requested.min(capacity) * MAX_NODE_SCORE / capacity
}

/// NodeResourcesFit score over cpu and memory (weight 1 each), using the
/// non-zero requests (100m / 200Mi for containers that set none).
pub(crate) fn resources_fit(
    strategy: ScoringStrategy,
    pod: &PodInfo,
    node: &NodeInfo,
    usage: &Usage,
) -> i64 {
    let f = match strategy {
        ScoringStrategy::LeastAllocated => least_requested,
        ScoringStrategy::MostAllocated => most_requested,
    };
    let mut score = 0;
    let mut weights = 0;
    for (alloc, req) in [
        (
            node.allocatable.milli_cpu,
            usage.non_zero_milli_cpu + pod.non_zero_milli_cpu,
        ),
        (
            node.allocatable.memory,
            usage.non_zero_memory + pod.non_zero_memory,
        ),
    ] {
        if alloc == 0 {
            continue;
        }
        score += f(req, alloc);
        weights += 1;
    }
    if weights == 0 {
        0
    } else {
        score / weights
    }
}

/// Whether BalancedAllocation skips the pod (upstream: best-effort pods,
/// requesting neither cpu nor memory, are not scored by it).
pub(crate) fn balanced_skips(pod: &PodInfo) -> bool {
    pod.requests.milli_cpu == 0 && pod.requests.memory == 0
}

/// NodeResourcesBalancedAllocation: 100 × (1 − standard deviation of the
/// cpu and memory fractions), with actual requests.
pub(crate) fn balanced_allocation(pod: &PodInfo, node: &NodeInfo, usage: &Usage) -> i64 {
    let mut fractions = [0.0f64; 2];
    let mut n = 0;
    for (alloc, req) in [
        (
            node.allocatable.milli_cpu,
            usage.requested.milli_cpu + pod.requests.milli_cpu,
        ),
        (
            node.allocatable.memory,
            usage.requested.memory + pod.requests.memory,
        ),
    ] {
        if alloc == 0 {
            continue;
        }
        fractions[n] = (req as f64 / alloc as f64).min(1.0);
        n += 1;
    }
    let std = if n == 2 {
        ((fractions[0] - fractions[1]) / 2.0).abs()
    } else {
        0.0
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// The tolerations TaintToleration scoring considers: effect
/// PreferNoSchedule or empty.
pub(crate) fn prefer_no_schedule_tolerations(pod: &PodInfo) -> Vec<Toleration> {
    pod.tolerations
        .iter()
        .filter(|t| t.effect.is_none() || t.effect == Some(Effect::PreferNoSchedule))
        .cloned()
        .collect()
}

/// TaintToleration raw score: untolerated PreferNoSchedule taints
/// (normalised in reverse: fewer is better).
pub(crate) fn taint_toleration(tolerations: &[Toleration], node: &NodeInfo) -> i64 {
    node.taints
        .iter()
        .filter(|t| t.effect == Effect::PreferNoSchedule && !tolerated(tolerations, t))
        .count() as i64
}

/// NodeAffinity raw score: the summed weights of matching preferred terms.
pub(crate) fn node_affinity(pod: &PodInfo, node: &NodeInfo) -> i64 {
    pod.preferred_node_affinity
        .iter()
        .filter(|t| t.term.matches(&node.name, &node.labels))
        .map(|t| t.weight)
        .sum()
}

/// Upstream `helper.DefaultNormalizeScore`.
pub(crate) fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0).max(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        let v = MAX_NODE_SCORE * *s / max;
        *s = if reverse { MAX_NODE_SCORE - v } else { v };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn node(v: Value) -> NodeInfo {
        NodeInfo::from_json(&v).unwrap()
    }
    fn pod(v: Value) -> PodInfo {
        PodInfo::from_json(&v).unwrap()
    }
    fn usage(cpu: i64, mem: i64) -> Usage {
        let mut u = Usage::default();
        u.requested.milli_cpu = cpu;
        u.requested.memory = mem;
        u.non_zero_milli_cpu = cpu;
        u.non_zero_memory = mem;
        u
    }

    #[test]
    fn least_and_most_allocated_upstream_examples() {
        // Upstream least_allocated_test: node 4000m / 10000 bytes, pod
        // 3000m / 5000 (no existing pods): cpu (4000-3000)*100/4000 = 25,
        // mem (10000-5000)*100/10000 = 50 -> (25+50)/2 = 37.
        let n = node(
            json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "4", "memory": "10000"}}}),
        );
        let p = pod(
            json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "3", "memory": "5000"}}}]}}),
        );
        assert_eq!(
            resources_fit(ScoringStrategy::LeastAllocated, &p, &n, &usage(0, 0)),
            37
        );
        // MostAllocated: cpu 75, mem 50 -> 62.
        assert_eq!(
            resources_fit(ScoringStrategy::MostAllocated, &p, &n, &usage(0, 0)),
            62
        );
        // Over capacity scores 0 for least, caps at 100 for most.
        assert_eq!(
            resources_fit(ScoringStrategy::LeastAllocated, &p, &n, &usage(2000, 6000)),
            0
        );
        assert_eq!(
            resources_fit(ScoringStrategy::MostAllocated, &p, &n, &usage(2000, 6000)),
            100
        );
        // A best-effort pod counts as 100m / 200Mi for scoring.
        let be = pod(json!({"spec": {"containers": [{"name": "c"}]}}));
        let big = node(
            json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "1", "memory": "2000Mi"}}}),
        );
        assert_eq!(
            resources_fit(ScoringStrategy::LeastAllocated, &be, &big, &usage(0, 0)),
            90
        );
    }

    #[test]
    fn balanced_allocation_upstream_examples() {
        // cpu 3000/4000 = 0.75, memory 5000/10000 = 0.5 -> std 0.125 -> 87.
        let n = node(
            json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "4", "memory": "10000"}}}),
        );
        let p = pod(
            json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "3", "memory": "5000"}}}]}}),
        );
        assert_eq!(balanced_allocation(&p, &n, &usage(0, 0)), 87);
        // Perfectly balanced.
        let q = pod(
            json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "2", "memory": "5000"}}}]}}),
        );
        assert_eq!(balanced_allocation(&q, &n, &usage(0, 0)), 100);
        assert!(balanced_skips(&pod(
            json!({"spec": {"containers": [{"name": "c"}]}})
        )));
    }

    #[test]
    fn taint_and_node_affinity_scores() {
        let n = node(
            json!({"metadata": {"name": "n", "labels": {"label-1": "key-1", "label-2": "key-2"}},
            "spec": {"taints": [{"key": "a", "effect": "PreferNoSchedule"}, {"key": "b", "effect": "PreferNoSchedule"},
                                {"key": "c", "effect": "NoSchedule"}]}}),
        );
        let p = pod(
            json!({"spec": {"tolerations": [{"key": "a", "operator": "Exists", "effect": "PreferNoSchedule"},
                                                     {"key": "c", "operator": "Exists", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(taint_toleration(&prefer_no_schedule_tolerations(&p), &n), 1);
        // Docs "node affinity weight" example: label-1 weight 1, label-2 weight 50.
        let p = pod(
            json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [{"key": "label-1", "operator": "In", "values": ["key-1"]}]}},
                {"weight": 50, "preference": {"matchExpressions": [{"key": "label-2", "operator": "In", "values": ["key-2"]}]}}
            ]}}}}),
        );
        assert_eq!(node_affinity(&p, &n), 51);
    }

    #[test]
    fn normalization() {
        let mut s = vec![0, 1, 2];
        default_normalize(&mut s, true);
        assert_eq!(s, vec![100, 50, 0]);
        let mut s = vec![0, 0];
        default_normalize(&mut s, true);
        assert_eq!(s, vec![100, 100]);
        let mut s = vec![1, 51, 0];
        default_normalize(&mut s, false);
        assert_eq!(s, vec![1, 100, 0]);
    }
}
