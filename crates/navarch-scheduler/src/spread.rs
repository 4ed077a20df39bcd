//! PodTopologySpread: `DoNotSchedule` constraints filter, `ScheduleAnyway`
//! constraints (and the cluster defaults) score.
//!
//! Filter: when every node with the (single) topology key is eligible,
//! the domains come from the ledger's node-label index and the counts are
//! the ledger's selector aggregate, O(1) per cycle. Otherwise, per cycle
//! and constraint, one pass over the nodes finds the eligible domains
//! (nodes carrying every constraint's topology key and passing the
//! inclusion policies) and matching pods are counted from the ledger's
//! label index (O(pods the selector may match), not O(all pods)). Either
//! way counts are `value -> count` with a `count -> domains` multiset, so
//! the global minimum is O(log domains) to read and to maintain when
//! preemption dry runs remove pods.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::aggregate::Agg;
use crate::config::{Config, DefaultSpreading};
use crate::filter::{NodeStatus, REASON_SPREAD, REASON_SPREAD_LABEL};
use crate::ledger::{Ledger, NodeId};
use crate::node::NodeInfo;
use crate::pod::{AffinityTerm, InclusionPolicy, PodInfo, SpreadConstraint, WhenUnsatisfiable};
use crate::selector::first_untolerated;

pub(crate) const HOSTNAME_KEY: &str = "kubernetes.io/hostname";

/// The constraints that apply to `pod` for `when`: its own, or the
/// cluster defaults with the driver-supplied selector. Also returns
/// whether these are upstream's system defaults.
pub(crate) fn constraints_for(
    pod: &PodInfo,
    config: &Config,
    when: WhenUnsatisfiable,
) -> (Vec<SpreadConstraint>, bool) {
    if !pod.spread_constraints.is_empty() {
        let own = pod
            .spread_constraints
            .iter()
            .filter(|c| c.when_unsatisfiable == when)
            .cloned()
            .collect();
        return (own, false);
    }
    let Some(selector) = pod
        .default_spread_selector
        .as_ref()
        .filter(|s| !s.is_empty() && !s.is_nothing())
    else {
        return (
            Vec::new(),
            matches!(config.default_spreading, DefaultSpreading::System),
        );
    };
    let (list, system) = match &config.default_spreading {
        DefaultSpreading::System => (DefaultSpreading::system_constraints(), true),
        DefaultSpreading::List(l) => (l.clone(), false),
        DefaultSpreading::Disabled => (Vec::new(), false),
    };
    let out = list
        .into_iter()
        .filter(|d| d.when_unsatisfiable == when)
        .map(|d| SpreadConstraint {
            max_skew: d.max_skew,
            topology_key: d.topology_key,
            when_unsatisfiable: d.when_unsatisfiable,
            selector: selector.clone(),
            min_domains: 1,
            node_affinity_policy: InclusionPolicy::Honor,
            node_taints_policy: InclusionPolicy::Ignore,
        })
        .collect();
    (out, system)
}

fn has_all_keys(node: &NodeInfo, constraints: &[SpreadConstraint]) -> bool {
    constraints
        .iter()
        .all(|c| node.labels.contains_key(&c.topology_key))
}

/// Upstream `matchNodeInclusionPolicies`.
fn included(c: &SpreadConstraint, pod: &PodInfo, node: &NodeInfo) -> bool {
    if c.node_affinity_policy == InclusionPolicy::Honor
        && !pod.required_node_affinity.matches(&node.name, &node.labels)
    {
        return false;
    }
    if c.node_taints_policy == InclusionPolicy::Honor
        && first_untolerated(&node.taints, &pod.tolerations).is_some()
    {
        return false;
    }
    true
}

/// Whether no node is left out of `c` by its inclusion policies for `pod`
/// (then every node with the topology key counts).
fn includes_every_node(c: &SpreadConstraint, pod: &PodInfo) -> bool {
    (c.node_affinity_policy == InclusionPolicy::Ignore || pod.required_node_affinity.is_empty())
        && c.node_taints_policy == InclusionPolicy::Ignore
}

/// The ledger's aggregate of live pods in `pod`'s namespace matching
/// `c`'s selector, per value of its topology key.
fn live_counts(ledger: &Ledger, pod: &PodInfo, c: &SpreadConstraint) -> Arc<Agg> {
    let term = AffinityTerm {
        namespaces: vec![pod.namespace.clone()],
        namespace_selector: None,
        selector: c.selector.clone(),
        topology_key: c.topology_key.clone(),
    };
    ledger.selector_counts(&term, true)
}

/// Matching-pod counts per eligible domain: only non-zero counts are
/// stored (an [`Agg`]), with a `count -> domains` multiset, so the global
/// minimum is O(log domains) and hostname spreading over thousands of
/// nodes does not materialise a map entry per node. Shared with the
/// ledger's cached aggregate when that is exact; copied on write.
#[derive(Debug, Clone, Default)]
struct DomainCounts {
    /// Number of eligible domains.
    domains: usize,
    counts: Arc<Agg>,
}

impl DomainCounts {
    fn add(&mut self, value: &str, delta: i64) {
        Arc::make_mut(&mut self.counts).add(value, delta);
    }

    fn get(&self, value: &str) -> i64 {
        self.counts.get(value)
    }

    /// Upstream `minMatchNum`: 0 while there are fewer eligible domains
    /// than `minDomains`, or while some eligible domain has no match.
    fn min(&self, min_domains: i64) -> i64 {
        if (self.domains as i64) < min_domains || self.counts.len() < self.domains {
            return 0;
        }
        self.counts.min().unwrap_or(0)
    }
}

/// PreFilter state for `DoNotSchedule` constraints.
#[derive(Debug, Clone)]
pub(crate) struct SpreadFilter {
    constraints: Vec<SpreadConstraint>,
    counts: Vec<DomainCounts>,
    /// Whether the incoming pod matches each constraint's selector.
    self_match: Vec<i64>,
    namespace: String,
    key: String,
}

impl SpreadFilter {
    /// `None` when the pod has no hard constraints (upstream Skip).
    pub(crate) fn new(ledger: &Ledger, pod: &PodInfo, config: &Config) -> Option<SpreadFilter> {
        let (constraints, _) = constraints_for(pod, config, WhenUnsatisfiable::DoNotSchedule);
        if constraints.is_empty() {
            return None;
        }
        let mut counts = vec![DomainCounts::default(); constraints.len()];
        // Eligible domains. When every node with the (single) topology key
        // is eligible, the ledger's node-label index knows them: O(1).
        // Otherwise one pass over the nodes.
        let single_key = constraints
            .iter()
            .all(|c| c.topology_key == constraints[0].topology_key);
        let trivial = constraints.iter().all(|c| includes_every_node(c, pod));
        if single_key && trivial {
            let n = ledger
                .node_labels
                .get(&constraints[0].topology_key)
                .map_or(0, |v| v.len());
            counts.iter_mut().for_each(|c| c.domains = n);
        } else {
            let mut values: Vec<std::collections::HashSet<&str>> =
                vec![Default::default(); constraints.len()];
            for &nid in &ledger.node_list {
                let Some(node) = ledger.node_info(nid) else {
                    continue;
                };
                if !has_all_keys(node, &constraints) {
                    continue;
                }
                for (i, c) in constraints.iter().enumerate() {
                    if included(c, pod, node) {
                        values[i].insert(node.labels[&c.topology_key].as_str());
                    }
                }
            }
            for (c, v) in counts.iter_mut().zip(values) {
                c.domains = v.len();
            }
        }
        for (i, c) in constraints.iter().enumerate() {
            // Upstream `countPodsMatchSelector` counts nothing for an empty
            // (match-everything) selector, though the incoming pod still
            // matches it itself.
            if c.selector.is_empty() {
                continue;
            }
            // Every node with the key counts: the ledger's aggregate of
            // live pods in the namespace matching the selector is exact
            // (unless it holds the pod itself, which must not count).
            if single_key && trivial && !ledger.is_placed(&pod.key) {
                counts[i].counts = live_counts(ledger, pod, c);
                continue;
            }
            let mut per_value: HashMap<&str, i64> = HashMap::new();
            ledger
                .index
                .for_each_candidate(&pod.namespace, &c.selector, |id| {
                    let slot = ledger.pod(id);
                    if slot.info.terminating
                        || slot.info.key == pod.key
                        || !c.selector.matches(Some(&slot.info.labels))
                    {
                        return;
                    }
                    let Some(node) = ledger.node_info(slot.node) else {
                        return;
                    };
                    if has_all_keys(node, &constraints) && included(c, pod, node) {
                        *per_value
                            .entry(node.labels[&c.topology_key].as_str())
                            .or_insert(0) += 1;
                    }
                });
            for (v, n) in per_value {
                counts[i].add(v, n);
            }
        }
        let self_match = constraints
            .iter()
            .map(|c| i64::from(c.selector.matches(Some(&pod.labels))))
            .collect();
        Some(SpreadFilter {
            constraints,
            counts,
            self_match,
            namespace: pod.namespace.clone(),
            key: pod.key.clone(),
        })
    }

    /// Upstream `updateWithPod` for preemption dry runs.
    pub(crate) fn update_with_pod(
        &mut self,
        incoming: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        delta: i64,
    ) {
        if other.namespace != self.namespace
            || other.terminating
            || other.key == self.key
            || !has_all_keys(node, &self.constraints)
        {
            return;
        }
        for (i, c) in self.constraints.iter().enumerate() {
            if !c.selector.matches(Some(&other.labels)) || !included(c, incoming, node) {
                continue;
            }
            self.counts[i].add(&node.labels[&c.topology_key], delta);
        }
    }

    pub(crate) fn filter(&self, node: &NodeInfo) -> Result<(), NodeStatus> {
        for (i, c) in self.constraints.iter().enumerate() {
            let Some(value) = node.labels.get(&c.topology_key) else {
                return Err(NodeStatus::unresolvable(REASON_SPREAD_LABEL));
            };
            let skew =
                self.counts[i].get(value) + self.self_match[i] - self.counts[i].min(c.min_domains);
            if skew > c.max_skew {
                return Err(NodeStatus::unschedulable(REASON_SPREAD));
            }
        }
        Ok(())
    }
}

/// PreScore state for `ScheduleAnyway` constraints.
#[derive(Debug, Clone)]
pub(crate) struct SpreadScore {
    constraints: Vec<SpreadConstraint>,
    ignored: HashSet<NodeId>,
    /// Non-hostname constraints: counts for the values of scored nodes.
    topo: Vec<HashMap<String, i64>>,
    /// Hostname constraints: matching pods per node.
    per_node: Vec<HashMap<NodeId, i64>>,
    /// Where the ledger's selector aggregate is exact: matching pods per
    /// topology value, read instead of `topo` / `per_node`.
    shared: Vec<Option<Arc<Agg>>>,
    weights: Vec<f64>,
}

impl SpreadScore {
    /// `None` when there is nothing to score (upstream Skip).
    pub(crate) fn new(
        ledger: &Ledger,
        pod: &PodInfo,
        config: &Config,
        feasible: &[NodeId],
    ) -> Option<SpreadScore> {
        let (constraints, system) = constraints_for(pod, config, WhenUnsatisfiable::ScheduleAnyway);
        if constraints.is_empty() || ledger.node_list.is_empty() {
            return None;
        }
        // Only user-given (or non-system default) constraints require every
        // topology key; system defaults still spread by hostname on nodes
        // without a zone label.
        let require_all = !pod.spread_constraints.is_empty() || !system;
        let mut ignored = HashSet::new();
        let mut topo: Vec<HashMap<String, i64>> = vec![HashMap::new(); constraints.len()];
        let mut sizes = vec![0usize; constraints.len()];
        for &nid in feasible {
            let node = ledger.node_info(nid).expect("feasible nodes are known");
            if require_all && !has_all_keys(node, &constraints) {
                ignored.insert(nid);
                continue;
            }
            for (i, c) in constraints.iter().enumerate() {
                if c.topology_key == HOSTNAME_KEY {
                    continue;
                }
                // A node without the key (possible with the system
                // defaults only) counts as the domain "", as upstream's
                // label lookup makes it: it adds to the topology's size,
                // though such nodes are not scored for this constraint.
                let v = node.labels.get(&c.topology_key).map_or("", String::as_str);
                if !topo[i].contains_key(v) {
                    topo[i].insert(v.to_string(), 0);
                    sizes[i] += 1;
                }
            }
        }
        let weights = constraints
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let size = if c.topology_key == HOSTNAME_KEY {
                    feasible.len() - ignored.len()
                } else {
                    sizes[i]
                };
                ((size + 2) as f64).ln()
            })
            .collect();
        let mut per_node: Vec<HashMap<NodeId, i64>> = vec![HashMap::new(); constraints.len()];
        let mut shared: Vec<Option<Arc<Agg>>> = vec![None; constraints.len()];
        let single_key = constraints
            .iter()
            .all(|c| c.topology_key == constraints[0].topology_key);
        for (i, c) in constraints.iter().enumerate() {
            if c.selector.is_empty() {
                continue; // counts nothing, as in the filter
            }
            // The ledger's aggregate (live matching pods in the namespace
            // per topology value, kept as pods come and go) is exact when
            // every node with the key counts: always for hostname (counted
            // per node), else when no inclusion policy or missing key
            // excludes a node. It must not hold the pod itself.
            let hostname = c.topology_key == HOSTNAME_KEY;
            let trivial = includes_every_node(c, pod) && (!require_all || single_key);
            if (hostname || trivial) && !ledger.is_placed(&pod.key) {
                shared[i] = Some(live_counts(ledger, pod, c));
                continue;
            }
            ledger
                .index
                .for_each_candidate(&pod.namespace, &c.selector, |id| {
                    let slot = ledger.pod(id);
                    if slot.info.terminating || !c.selector.matches(Some(&slot.info.labels)) {
                        return;
                    }
                    let Some(node) = ledger.node_info(slot.node) else {
                        return;
                    };
                    if c.topology_key == HOSTNAME_KEY {
                        *per_node[i].entry(slot.node).or_insert(0) += 1;
                        return;
                    }
                    if require_all && !has_all_keys(node, &constraints) {
                        return;
                    }
                    if !included(c, pod, node) {
                        return;
                    }
                    if let Some(v) = node.labels.get(&c.topology_key) {
                        if let Some(n) = topo[i].get_mut(v) {
                            *n += 1;
                        }
                    }
                });
        }
        Some(SpreadScore {
            constraints,
            ignored,
            topo,
            per_node,
            shared,
            weights,
        })
    }

    pub(crate) fn is_ignored(&self, nid: NodeId) -> bool {
        self.ignored.contains(&nid)
    }

    /// The raw score: weighted matching pods in the node's domains.
    pub(crate) fn score(&self, nid: NodeId, node: &NodeInfo) -> i64 {
        if self.ignored.contains(&nid) {
            return 0;
        }
        let mut score = 0.0;
        for (i, c) in self.constraints.iter().enumerate() {
            let Some(v) = node.labels.get(&c.topology_key) else {
                continue;
            };
            let count = if let Some(agg) = &self.shared[i] {
                agg.get(v)
            } else if c.topology_key == HOSTNAME_KEY {
                self.per_node[i].get(&nid).copied().unwrap_or(0)
            } else {
                self.topo[i].get(v).copied().unwrap_or(0)
            };
            score += count as f64 * self.weights[i] + (c.max_skew - 1) as f64;
        }
        score.round() as i64
    }
}

/// Upstream PodTopologySpread NormalizeScore: fewer matching pods score
/// higher; ignored nodes score 0.
pub(crate) fn normalize(scores: &mut [i64], ignored: &[bool]) {
    let mut min = i64::MAX;
    let mut max = 0;
    for (s, ign) in scores.iter().zip(ignored) {
        if *ign {
            continue;
        }
        min = min.min(*s);
        max = max.max(*s);
    }
    for (s, ign) in scores.iter_mut().zip(ignored) {
        if *ign {
            *s = 0;
        } else if max == 0 {
            *s = crate::score::MAX_NODE_SCORE;
        } else {
            *s = crate::score::MAX_NODE_SCORE * (max + min - *s) / max;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use navarch_api::selector::LabelSelector;
    use serde_json::json;

    #[test]
    fn system_default_weights_count_nodes_without_a_zone_as_one_domain() {
        // Upstream's PreScore reads the zone of a node without the label as
        // "", a domain of its own for the topology size: zones A, B and ""
        // make size 3, weight ln(3 + 2); hostname counts the 4 nodes.
        let mut l = Ledger::new();
        for (name, zone) in [("a", Some("A")), ("b", Some("B")), ("c", None), ("d", None)] {
            let mut labels = json!({"kubernetes.io/hostname": name});
            if let Some(z) = zone {
                labels["topology.kubernetes.io/zone"] = json!(z);
            }
            l.add_node(&json!({"metadata": {"name": name, "labels": labels},
                "status": {"allocatable": {"cpu": "1", "memory": "1Gi", "pods": "10"}}}))
                .unwrap();
        }
        let pod = PodInfo::from_json(&json!({"metadata": {"name": "p", "labels": {"app": "svc"}}}))
            .unwrap()
            .with_default_spread_selector(Some(LabelSelector::parse("app=svc").unwrap()));
        let feasible: Vec<NodeId> = l.node_list.clone();
        let s = SpreadScore::new(&l, &pod, &Config::default(), &feasible).unwrap();
        assert_eq!(s.constraints[0].topology_key, HOSTNAME_KEY);
        assert_eq!(s.weights, vec![(6f64).ln(), (5f64).ln()]);
        assert!(feasible.iter().all(|id| !s.is_ignored(*id)));
        // With user constraints every key is required: zone-less nodes are
        // ignored and add no domain.
        let own = PodInfo::from_json(&json!({"metadata": {"name": "q", "labels": {"app": "svc"}},
            "spec": {"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "svc"}}}]}}))
        .unwrap();
        let s = SpreadScore::new(&l, &own, &Config::default(), &feasible).unwrap();
        assert_eq!(s.weights, vec![(4f64).ln()]);
        assert_eq!(feasible.iter().filter(|id| s.is_ignored(**id)).count(), 2);
    }
    /// Scores read from the ledger's aggregates equal a recount of the
    /// matching live pods per node and per zone.
    #[test]
    fn scores_equal_a_recount_of_matching_pods() {
        let mut l = Ledger::new();
        let zones = [Some("A"), Some("A"), Some("B"), Some("B"), None, None];
        for (i, zone) in zones.iter().enumerate() {
            let name = format!("n{i}");
            let mut labels = json!({"kubernetes.io/hostname": name});
            if let Some(z) = zone {
                labels["topology.kubernetes.io/zone"] = json!(z);
            }
            l.add_node(&json!({"metadata": {"name": name, "labels": labels},
                "status": {"allocatable": {"cpu": "10", "memory": "10Gi", "pods": "100"}}}))
                .unwrap();
        }
        // (node, namespace, app, terminating)
        let placed = [
            (0, "default", "svc", false),
            (0, "default", "svc", false),
            (1, "default", "svc", false),
            (2, "default", "svc", true),
            (3, "default", "other", false),
            (3, "team", "svc", false),
            (4, "default", "svc", false),
            (5, "default", "svc", false),
            (5, "default", "svc", false),
        ];
        let pod = |i: usize, node: usize, ns: &str, app: &str, terminating: bool| {
            let mut meta =
                json!({"name": format!("p{i}"), "namespace": ns, "labels": {"app": app}});
            if terminating {
                meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            json!({"metadata": meta, "spec": {"nodeName": format!("n{node}")}})
        };
        let check = |l: &Ledger, incoming: &PodInfo| {
            let feasible: Vec<NodeId> = l.node_list.clone();
            let s = SpreadScore::new(l, incoming, &Config::default(), &feasible).unwrap();
            for &nid in &feasible {
                let node = l.node_info(nid).unwrap();
                let mut want = 0.0;
                for (i, c) in s.constraints.iter().enumerate() {
                    let Some(v) = node.labels.get(&c.topology_key) else {
                        continue;
                    };
                    let count = placed_now(l)
                        .iter()
                        .filter(|(n, ns, app, t)| {
                            let other = l.node_view(n).unwrap();
                            *ns == "default"
                                && app == "svc"
                                && !t
                                && other.labels.get(&c.topology_key) == Some(v)
                        })
                        .count();
                    want += count as f64 * s.weights[i] + (c.max_skew - 1) as f64;
                }
                assert_eq!(s.score(nid, node), want.round() as i64, "{}", node.name);
            }
        };
        for (i, (node, ns, app, t)) in placed.iter().enumerate() {
            l.add_pod(&pod(i, *node, ns, app, *t)).unwrap();
        }
        let defaults =
            PodInfo::from_json(&json!({"metadata": {"name": "x", "labels": {"app": "svc"}}}))
                .unwrap()
                .with_default_spread_selector(Some(LabelSelector::parse("app=svc").unwrap()));
        let zone = PodInfo::from_json(&json!({"metadata": {"name": "y", "labels": {"app": "svc"}},
            "spec": {"topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app": "svc"}}}]}}))
        .unwrap();
        check(&l, &defaults);
        check(&l, &zone);
        // The aggregates follow removals and new pods.
        l.remove_pod("default/p0");
        l.add_pod(&pod(20, 2, "default", "svc", false)).unwrap();
        check(&l, &defaults);
        check(&l, &zone);
    }

    /// (node, namespace, app label, terminating) of every placed pod.
    fn placed_now(l: &Ledger) -> Vec<(String, String, String, bool)> {
        let mut out = Vec::new();
        for name in l.node_names() {
            for key in l.pods_on(&name) {
                let (p, _) = l.placed_pod(&key).unwrap();
                let app = p.labels.get("app").and_then(|v| v.as_str()).unwrap_or("");
                out.push((
                    name.clone(),
                    p.namespace.clone(),
                    app.to_string(),
                    p.terminating,
                ));
            }
        }
        out
    }
}
