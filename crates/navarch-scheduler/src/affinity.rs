//! InterPodAffinity: required terms (filter) and preferred terms (score).
//!
//! Per cycle, counts are kept per topology pair `(key, value)`:
//! * `affinity`: existing pods matching *all* the incoming pod's required
//!   affinity terms, counted once per term at their node's value;
//! * `anti`: existing pods matching each required anti-affinity term;
//! * `existing_anti`: existing pods whose required anti-affinity terms
//!   match the incoming pod.
//!
//! The first two read the ledger's selector aggregates (one shared map per
//! term), the last the ledger's term signatures that may select the
//! incoming pod; a pod with several required affinity terms, or one the
//! ledger already holds, is counted per cycle from the label index instead
//! (O(pods that may match)). A node is then checked in O(terms +
//! signatures), never by walking pods.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::aggregate::Agg;
use crate::filter::{
    NodeStatus, REASON_AFFINITY, REASON_ANTI_AFFINITY, REASON_EXISTING_ANTI_AFFINITY,
};
use crate::ledger::{Ledger, PodId, TermKind};
use crate::node::NodeInfo;
use crate::pod::{AffinityTerm, PodInfo, WeightedAffinityTerm};

/// `topology key -> value -> count`, looked up without allocating.
type Counts = HashMap<String, HashMap<String, i64>>;

fn count(map: &Counts, key: &str, value: &str) -> i64 {
    map.get(key)
        .and_then(|m| m.get(value))
        .copied()
        .unwrap_or(0)
}

/// Calls `f` with each pod (id) matching `term` (namespaces and selector).
/// The pod being scheduled (`skip`) is never counted, should the ledger
/// already hold it (a re-check of a reserved pod).
pub(crate) fn for_each_matching(
    ledger: &Ledger,
    term: &AffinityTerm,
    skip: &str,
    mut f: impl FnMut(PodId),
) {
    let mut visit = |ns: &str| {
        ledger.index.for_each_candidate(ns, &term.selector, |id| {
            let info = &ledger.pod(id).info;
            if info.key != skip && term.selector.matches(Some(&info.labels)) {
                f(id)
            }
        })
    };
    if term.namespace_selector.is_some() {
        for ns in ledger.all_namespaces() {
            if term.namespace_matches(ns, ledger.namespace_labels(ns)) {
                visit(ns);
            }
        }
    } else {
        for ns in &term.namespaces {
            visit(ns);
        }
    }
}

fn bump(map: &mut Counts, key: &str, node: &NodeInfo, delta: i64) {
    let Some(v) = node.labels.get(key) else {
        return;
    };
    let values = map.entry(key.to_string()).or_default();
    let e = values.entry(v.clone()).or_insert(0);
    *e += delta;
    if *e == 0 {
        values.remove(v);
        if values.is_empty() {
            map.remove(key);
        }
    }
}

/// Counts per topology pair: shared ledger aggregates (each under its
/// topology key) plus owned counts (built per cycle, or adjustments by
/// preemption dry runs).
#[derive(Debug, Clone, Default)]
struct Counted {
    base: Vec<(String, Arc<Agg>)>,
    own: Counts,
}

impl Counted {
    fn get(&self, key: &str, value: &str) -> i64 {
        count(&self.own, key, value)
            + self
                .base
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, a)| a.get(value))
                .sum::<i64>()
    }

    /// No pair has a count (counts are never negative in sum).
    fn is_empty(&self) -> bool {
        let base: i64 = self.base.iter().map(|(_, a)| a.total()).sum();
        let own: i64 = self.own.values().flat_map(|m| m.values()).sum();
        base + own == 0
    }

    /// The distinct topology keys.
    fn keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self
            .base
            .iter()
            .map(|(k, _)| k.as_str())
            .chain(self.own.keys().map(String::as_str))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

/// Upstream `podMatchesAllAffinityTerms`.
fn matches_all(
    terms: &[AffinityTerm],
    pod: &PodInfo,
    ns_labels: Option<&Map<String, Value>>,
) -> bool {
    !terms.is_empty()
        && terms
            .iter()
            .all(|t| t.matches(&pod.namespace, &pod.labels, ns_labels))
}

/// PreFilter state for the required terms.
#[derive(Debug, Clone)]
pub(crate) struct AffinityFilter {
    required: Vec<AffinityTerm>,
    required_anti: Vec<AffinityTerm>,
    affinity: Counted,
    anti: Counted,
    existing_anti: Counted,
    /// The incoming pod matches all its own affinity terms.
    self_match: bool,
    /// The incoming pod, for updates during preemption.
    namespace: String,
    labels: Map<String, Value>,
    ns_labels: Option<Map<String, Value>>,
}

impl AffinityFilter {
    /// Upstream PreFilter; `None` when there is nothing to check (Skip).
    pub(crate) fn new(ledger: &Ledger, pod: &PodInfo) -> Option<AffinityFilter> {
        let ns_labels = ledger.namespace_labels(&pod.namespace);
        // The ledger's aggregates count every placed pod; when the ledger
        // holds the pod itself (a re-check), count without it instead.
        let exact = !ledger.is_placed(&pod.key);
        let mut existing_anti = Counted::default();
        if exact {
            ledger.anti_sigs.for_each_candidate(&pod.labels, |sid| {
                let sig = ledger.sig(sid);
                if sig.agg.total() != 0 && sig.term.matches(&pod.namespace, &pod.labels, ns_labels)
                {
                    existing_anti
                        .base
                        .push((sig.term.topology_key.clone(), sig.agg.clone()));
                }
            });
        } else {
            ledger.anti_terms.for_each_candidate(&pod.labels, |t| {
                let (slot, term, _) = ledger.term(t);
                if slot.info.key == pod.key {
                    return;
                }
                let Some(node) = ledger.node_info(slot.node) else {
                    return;
                };
                if term.matches(&pod.namespace, &pod.labels, ns_labels) {
                    bump(&mut existing_anti.own, &term.topology_key, node, 1);
                }
            });
        }
        let a = &pod.affinity;
        if existing_anti.is_empty() && a.required.is_empty() && a.required_anti.is_empty() {
            return None;
        }
        let mut affinity = Counted::default();
        if exact && a.required.len() == 1 {
            let t = &a.required[0];
            affinity
                .base
                .push((t.topology_key.clone(), ledger.selector_counts(t, false)));
        } else if !a.required.is_empty() {
            // Candidates from the first term; each must match every term.
            for_each_matching(ledger, &a.required[0], &pod.key, |id| {
                let slot = ledger.pod(id);
                let Some(node) = ledger.node_info(slot.node) else {
                    return;
                };
                let ns = ledger.namespace_labels(&slot.info.namespace);
                if matches_all(&a.required, &slot.info, ns) {
                    for t in &a.required {
                        bump(&mut affinity.own, &t.topology_key, node, 1);
                    }
                }
            });
        }
        let mut anti = Counted::default();
        for t in &a.required_anti {
            if exact {
                anti.base
                    .push((t.topology_key.clone(), ledger.selector_counts(t, false)));
                continue;
            }
            for_each_matching(ledger, t, &pod.key, |id| {
                let slot = ledger.pod(id);
                if let Some(node) = ledger.node_info(slot.node) {
                    bump(&mut anti.own, &t.topology_key, node, 1);
                }
            });
        }
        Some(AffinityFilter {
            required: a.required.clone(),
            required_anti: a.required_anti.clone(),
            affinity,
            anti,
            existing_anti,
            self_match: matches_all(&a.required, pod, ns_labels),
            namespace: pod.namespace.clone(),
            labels: pod.labels.clone(),
            ns_labels: ns_labels.cloned(),
        })
    }

    /// Upstream `updateWithPod`: account for `other` appearing (+1) or
    /// disappearing (-1) on `node` (preemption dry runs).
    pub(crate) fn update_with_pod(
        &mut self,
        ledger: &Ledger,
        other: &PodInfo,
        node: &NodeInfo,
        delta: i64,
    ) {
        for t in &other.affinity.required_anti {
            if t.matches(&self.namespace, &self.labels, self.ns_labels.as_ref()) {
                bump(&mut self.existing_anti.own, &t.topology_key, node, delta);
            }
        }
        let ns = ledger.namespace_labels(&other.namespace);
        if matches_all(&self.required, other, ns) {
            for t in &self.required {
                bump(&mut self.affinity.own, &t.topology_key, node, delta);
            }
        }
        for t in &self.required_anti {
            if t.matches(&other.namespace, &other.labels, ns) {
                bump(&mut self.anti.own, &t.topology_key, node, delta);
            }
        }
    }

    /// Upstream Filter: affinity, then anti-affinity, then existing pods'
    /// anti-affinity.
    pub(crate) fn filter(&self, node: &NodeInfo) -> Result<(), NodeStatus> {
        // Required affinity.
        let mut pods_exist = true;
        for t in &self.required {
            let Some(v) = node.labels.get(&t.topology_key) else {
                return Err(NodeStatus::unresolvable(REASON_AFFINITY));
            };
            if self.affinity.get(&t.topology_key, v) <= 0 {
                pods_exist = false;
            }
        }
        // The first pod of a group with affinity to itself may go anywhere
        // its topology keys exist.
        if !(pods_exist || self.affinity.is_empty() && self.self_match) {
            return Err(NodeStatus::unresolvable(REASON_AFFINITY));
        }
        if !self.anti.is_empty() {
            for t in &self.required_anti {
                if let Some(v) = node.labels.get(&t.topology_key) {
                    if self.anti.get(&t.topology_key, v) > 0 {
                        return Err(NodeStatus::unschedulable(REASON_ANTI_AFFINITY));
                    }
                }
            }
        }
        for k in self.existing_anti.keys() {
            if let Some(v) = node.labels.get(k) {
                if self.existing_anti.get(k, v) > 0 {
                    return Err(NodeStatus::unschedulable(REASON_EXISTING_ANTI_AFFINITY));
                }
            }
        }
        Ok(())
    }
}

/// PreScore state for preferred terms: a score per topology pair, as
/// weighted shared aggregates (the incoming pod's terms, placed pods'
/// term signatures) plus owned scores.
#[derive(Debug, Clone, Default)]
pub(crate) struct AffinityScore {
    by_key: HashMap<String, HashMap<String, i64>>,
    weighted: Vec<(String, i64, Arc<Agg>)>,
}

impl AffinityScore {
    /// `None` when no pair carries a score (upstream Skip).
    pub(crate) fn new(ledger: &Ledger, pod: &PodInfo, hard_weight: i64) -> Option<AffinityScore> {
        let mut s = AffinityScore::default();
        let add = |s: &mut AffinityScore, key: &str, node: &NodeInfo, w: i64| {
            if let Some(v) = node.labels.get(key) {
                *s.by_key
                    .entry(key.to_string())
                    .or_default()
                    .entry(v.clone())
                    .or_insert(0) += w;
            }
        };
        // The ledger's aggregates count every placed pod; when the ledger
        // holds the pod itself (a re-check), count without it instead.
        let exact = !ledger.is_placed(&pod.key);
        // The incoming pod's preferred terms against existing pods.
        let terms = |list: &[WeightedAffinityTerm], sign: i64, s: &mut AffinityScore| {
            for wt in list {
                if exact {
                    let agg = ledger.selector_counts(&wt.term, false);
                    if agg.total() != 0 {
                        s.weighted
                            .push((wt.term.topology_key.clone(), sign * wt.weight, agg));
                    }
                    continue;
                }
                for_each_matching(ledger, &wt.term, &pod.key, |id| {
                    if let Some(node) = ledger.node_info(ledger.pod(id).node) {
                        add(s, &wt.term.topology_key, node, sign * wt.weight);
                    }
                });
            }
        };
        terms(&pod.affinity.preferred, 1, &mut s);
        terms(&pod.affinity.preferred_anti, -1, &mut s);
        // Existing pods' terms against the incoming pod.
        let ns_labels = ledger.namespace_labels(&pod.namespace);
        let weight_of = |kind: TermKind, weight: i64| match kind {
            TermKind::RequiredAffinity => hard_weight,
            TermKind::Preferred => weight,
            TermKind::PreferredAnti => -weight,
            TermKind::RequiredAnti => 0,
        };
        if exact {
            ledger.score_sigs.for_each_candidate(&pod.labels, |sid| {
                let sig = ledger.sig(sid);
                let w = weight_of(sig.kind, sig.weight);
                if w == 0 || sig.agg.total() == 0 {
                    return;
                }
                if sig.term.matches(&pod.namespace, &pod.labels, ns_labels) {
                    s.weighted
                        .push((sig.term.topology_key.clone(), w, sig.agg.clone()));
                }
            });
        } else {
            ledger.score_terms.for_each_candidate(&pod.labels, |t| {
                let (slot, term, weight) = ledger.term(t);
                let w = weight_of(t.1, weight);
                if w == 0 || slot.info.key == pod.key {
                    return;
                }
                let Some(node) = ledger.node_info(slot.node) else {
                    return;
                };
                if term.matches(&pod.namespace, &pod.labels, ns_labels) {
                    add(&mut s, &term.topology_key, node, w);
                }
            });
        }
        if s.by_key.is_empty() && s.weighted.is_empty() {
            None
        } else {
            Some(s)
        }
    }

    pub(crate) fn score(&self, node: &NodeInfo) -> i64 {
        let mut total = 0;
        for (k, values) in &self.by_key {
            if let Some(v) = node.labels.get(k) {
                total += values.get(v).copied().unwrap_or(0);
            }
        }
        for (k, w, agg) in &self.weighted {
            if let Some(v) = node.labels.get(k) {
                total += w * agg.get(v);
            }
        }
        total
    }
}

/// Upstream InterPodAffinity NormalizeScore: min-max to 0..100.
pub(crate) fn normalize(scores: &mut [i64]) {
    let (Some(&min), Some(&max)) = (scores.iter().min(), scores.iter().max()) else {
        return;
    };
    let diff = max - min;
    for s in scores.iter_mut() {
        *s = if diff > 0 {
            (crate::score::MAX_NODE_SCORE as f64 * ((*s - min) as f64 / diff as f64)) as i64
        } else {
            0
        };
    }
}
