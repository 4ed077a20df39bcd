//! Incrementally maintained pod counts per topology value.
//!
//! Two kinds live in the ledger and follow every pod and node event:
//! * selector aggregates: for a term (namespaces or namespace selector,
//!   label selector, topology key) seen by a cycle, the number of placed
//!   pods it matches per value of the topology key. Built once from the
//!   label index, cached (at most [`MAX_SELECTOR_AGGREGATES`], the least
//!   recently used dropped), then kept current on each pod place / unplace
//!   and node label change;
//! * term signatures: placed pods' affinity terms grouped by identical
//!   (kind, weight, term); per signature the number of placed term
//!   instances per topology value of their pods' nodes.
//!
//! Cycles read them through `Arc`s: a cycle that must adjust a count
//! (preemption dry runs) copies on write.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::ledger::TermKind;
use crate::node::NodeInfo;
use crate::pod::{AffinityTerm, PodInfo};

/// Cached selector aggregates kept at most.
pub(crate) const MAX_SELECTOR_AGGREGATES: usize = 256;

/// Non-zero counts per topology value, with a `count -> values` multiset
/// for the minimum and the total.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Agg {
    nonzero: HashMap<String, i64>,
    by_count: BTreeMap<i64, usize>,
    total: i64,
}

impl Agg {
    pub(crate) fn add(&mut self, value: &str, delta: i64) {
        if delta == 0 {
            return;
        }
        let old = self.nonzero.get(value).copied().unwrap_or(0);
        let new = old + delta;
        self.total += delta;
        if old > 0 {
            if let Some(n) = self.by_count.get_mut(&old) {
                *n -= 1;
                if *n == 0 {
                    self.by_count.remove(&old);
                }
            }
        }
        if new > 0 {
            *self.by_count.entry(new).or_insert(0) += 1;
            self.nonzero.insert(value.to_string(), new);
        } else {
            self.nonzero.remove(value);
        }
    }

    pub(crate) fn get(&self, value: &str) -> i64 {
        self.nonzero.get(value).copied().unwrap_or(0)
    }

    /// Values with a non-zero count.
    pub(crate) fn len(&self) -> usize {
        self.nonzero.len()
    }

    pub(crate) fn total(&self) -> i64 {
        self.total
    }

    /// The smallest non-zero count.
    pub(crate) fn min(&self) -> Option<i64> {
        self.by_count.keys().next().copied()
    }

    #[cfg(test)]
    pub(crate) fn entries(&self) -> BTreeMap<String, i64> {
        self.nonzero.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SelectorAgg {
    pub term: AffinityTerm,
    /// Terminating pods are not counted (topology spreading).
    pub live_only: bool,
    pub agg: Arc<Agg>,
    last_used: u64,
}

impl SelectorAgg {
    pub(crate) fn matches(
        &self,
        pod: &PodInfo,
        ns_labels: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> bool {
        !(self.live_only && pod.terminating)
            && self.term.matches(&pod.namespace, &pod.labels, ns_labels)
    }
}

/// The selector aggregate cache. Filled through a shared borrow during a
/// cycle, hence the lock (uncontended: placement is single-threaded where
/// it reads the cache, events hold `&mut`).
#[derive(Debug, Default)]
pub(crate) struct SelectorCache {
    inner: Mutex<SelectorCacheInner>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct SelectorCacheInner {
    pub entries: HashMap<String, SelectorAgg>,
    tick: u64,
}

impl Clone for SelectorCache {
    fn clone(&self) -> Self {
        SelectorCache {
            inner: Mutex::new(self.lock().clone()),
        }
    }
}

pub(crate) fn selector_key(term: &AffinityTerm, live_only: bool) -> String {
    format!("{live_only}{term:?}")
}

impl SelectorCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, SelectorCacheInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get_mut(&mut self) -> &mut SelectorCacheInner {
        self.inner.get_mut().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached aggregate for `term`, or `build()` cached.
    pub(crate) fn get_or_build(
        &self,
        term: &AffinityTerm,
        live_only: bool,
        build: impl FnOnce() -> Agg,
    ) -> Arc<Agg> {
        let key = selector_key(term, live_only);
        let mut c = self.lock();
        c.tick += 1;
        let tick = c.tick;
        if let Some(e) = c.entries.get_mut(&key) {
            e.last_used = tick;
            return e.agg.clone();
        }
        drop(c);
        let agg = Arc::new(build());
        let mut c = self.lock();
        if c.entries.len() >= MAX_SELECTOR_AGGREGATES {
            if let Some(oldest) = c
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            {
                c.entries.remove(&oldest);
            }
        }
        c.entries.insert(
            key,
            SelectorAgg {
                term: term.clone(),
                live_only,
                agg: agg.clone(),
                last_used: tick,
            },
        );
        agg
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

/// A group of identical placed-pod terms.
#[derive(Debug, Clone)]
pub(crate) struct Signature {
    pub kind: TermKind,
    pub weight: i64,
    pub term: AffinityTerm,
    /// Placed term instances carrying it (on any node).
    pub refs: usize,
    /// Instances per topology value of their pods' nodes.
    pub agg: Arc<Agg>,
}

pub(crate) fn signature_key(kind: TermKind, weight: i64, term: &AffinityTerm) -> String {
    format!("{kind:?}/{weight}/{term:?}")
}

/// Calls `f` with each of the pod's terms as (kind, weight, term).
pub(crate) fn for_each_term(pod: &PodInfo, mut f: impl FnMut(TermKind, i64, &AffinityTerm)) {
    let a = &pod.affinity;
    for t in &a.required {
        f(TermKind::RequiredAffinity, 0, t);
    }
    for t in &a.required_anti {
        f(TermKind::RequiredAnti, 0, t);
    }
    for t in &a.preferred {
        f(TermKind::Preferred, t.weight, &t.term);
    }
    for t in &a.preferred_anti {
        f(TermKind::PreferredAnti, t.weight, &t.term);
    }
}

/// The topology value of `node` for `key`.
pub(crate) fn value_of<'a>(node: Option<&'a NodeInfo>, key: &str) -> Option<&'a str> {
    node.and_then(|n| n.labels.get(key)).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Ledger;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    #[derive(Debug, Clone)]
    enum Op {
        Node(u8, Option<u8>),
        RemoveNode(u8),
        Pod(u8, u8, u8, u8, u8, bool),
        RemovePod(u8),
        Namespace(u8, bool),
        Warm(u8, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..6u8, proptest::option::of(0..3u8)).prop_map(|(n, z)| Op::Node(n, z)),
            (0..6u8).prop_map(Op::RemoveNode),
            (0..12u8, 0..7u8, 0..2u8, 0..3u8, 0..6u8, any::<bool>())
                .prop_map(|(p, n, ns, c, t, term)| Op::Pod(p, n, ns, c, t, term)),
            (0..12u8).prop_map(Op::RemovePod),
            (0..2u8, any::<bool>()).prop_map(|(n, l)| Op::Namespace(n, l)),
            (0..6u8, any::<bool>()).prop_map(|(t, l)| Op::Warm(t, l)),
        ]
    }

    /// Term shapes: kinds, keys, namespaces and namespace selectors.
    fn term_json(t: u8) -> (&'static str, Value) {
        let key = if t % 2 == 0 {
            "topology.kubernetes.io/zone"
        } else {
            "kubernetes.io/hostname"
        };
        let mut term =
            json!({"labelSelector": {"matchLabels": {"color": "red"}}, "topologyKey": key});
        match t % 3 {
            0 => term["namespaces"] = json!(["ns0", "ns1"]),
            1 => term["namespaceSelector"] = json!({"matchLabels": {"team": "x"}}),
            _ => {}
        }
        match t {
            0 | 3 => (
                "podAffinity",
                json!({"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 1 + t as i64, "podAffinityTerm": term}]}),
            ),
            1 | 4 => (
                "podAntiAffinity",
                json!({"requiredDuringSchedulingIgnoredDuringExecution": [term]}),
            ),
            _ => (
                "podAffinity",
                json!({"requiredDuringSchedulingIgnoredDuringExecution": [term.clone(), term]}),
            ),
        }
    }

    fn warm_term(t: u8) -> AffinityTerm {
        let (_, v) = term_json(t);
        let pod = PodInfo::from_json(&json!({"metadata": {"name": "w", "namespace": "ns0"},
            "spec": {"affinity": {"podAffinity": v}}}))
        .unwrap();
        let a = &pod.affinity;
        a.required
            .first()
            .or(a.required_anti.first())
            .or(a.preferred.first().map(|w| &w.term))
            .cloned()
            .unwrap()
    }

    fn apply(l: &mut Ledger, op: &Op) {
        match op {
            Op::Node(n, z) => {
                let mut labels = json!({"kubernetes.io/hostname": format!("n{n}")});
                if let Some(z) = z {
                    labels["topology.kubernetes.io/zone"] = json!(format!("z{z}"));
                }
                l.add_node(
                    &json!({"metadata": {"name": format!("n{n}"), "labels": labels},
                    "status": {"allocatable": {"cpu": "100", "memory": "100Gi", "pods": "1000"}}}),
                )
                .unwrap();
            }
            Op::RemoveNode(n) => {
                l.remove_node(&format!("n{n}"));
            }
            Op::Pod(p, n, ns, c, t, with_term) => {
                let color = ["red", "blue", "red"][*c as usize];
                let mut pod = json!({"metadata": {"name": format!("p{p}"), "namespace": format!("ns{ns}"),
                    "uid": format!("p{p}"), "labels": {"color": color}},
                    "spec": {"nodeName": format!("n{n}"), "containers": []}});
                if *c == 2 {
                    pod["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
                }
                if *with_term {
                    let (kind, v) = term_json(*t);
                    pod["spec"]["affinity"] = json!({kind: v});
                }
                l.apply_pod(&pod).unwrap();
            }
            Op::RemovePod(p) => {
                l.remove_pod(&format!("p{p}"));
            }
            Op::Namespace(n, labelled) => {
                let labels = if *labelled {
                    json!({"team": "x"})
                } else {
                    json!({})
                };
                l.set_namespace(&json!({"metadata": {"name": format!("ns{n}"), "labels": labels}}))
                    .unwrap();
            }
            Op::Warm(t, live) => {
                l.selector_counts(&warm_term(*t), *live);
            }
        }
    }

    fn recount_selector(l: &Ledger, term: &AffinityTerm, live_only: bool) -> Agg {
        let mut agg = Agg::default();
        crate::affinity::for_each_matching(l, term, "", |id| {
            let slot = l.pod(id);
            if live_only && slot.info.terminating {
                return;
            }
            if let Some(v) = value_of(l.node_info(slot.node), &term.topology_key) {
                agg.add(v, 1);
            }
        });
        agg
    }

    fn check(l: &mut Ledger) {
        let entries: Vec<SelectorAgg> = l
            .selector_aggs
            .get_mut()
            .entries
            .values()
            .cloned()
            .collect();
        for e in entries {
            assert_eq!(
                e.agg.entries(),
                recount_selector(l, &e.term, e.live_only).entries(),
                "{e:?}"
            );
            assert_eq!(e.agg.total(), e.agg.entries().values().sum::<i64>());
        }
        // Signatures: recount from every placed pod's terms.
        let mut want: HashMap<String, (usize, Agg)> = HashMap::new();
        for slot in l.pods.iter().flatten() {
            let node = l.node_info(slot.node);
            for_each_term(&slot.info, |kind, weight, term| {
                let e = want.entry(signature_key(kind, weight, term)).or_default();
                e.0 += 1;
                if let Some(v) = value_of(node, &term.topology_key) {
                    e.1.add(v, 1);
                }
            });
        }
        let mut have: HashMap<String, (usize, Agg)> = HashMap::new();
        for sig in l.sigs.iter().flatten() {
            let k = signature_key(sig.kind, sig.weight, &sig.term);
            assert!(have.insert(k, (sig.refs, (*sig.agg).clone())).is_none());
        }
        assert_eq!(have, want);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn aggregates_equal_a_recount(ops in proptest::collection::vec(op(), 1..80)) {
            let mut l = Ledger::new();
            for (i, op) in ops.iter().enumerate() {
                apply(&mut l, op);
                if i % 7 == 0 {
                    check(&mut l);
                }
            }
            check(&mut l);
            for p in 0..12 {
                l.remove_pod(&format!("p{p}"));
            }
            check(&mut l);
            prop_assert!(l.sigs.iter().all(Option::is_none));
        }
    }

    #[test]
    fn selector_cache_is_bounded() {
        let l = Ledger::new();
        for i in 0..(MAX_SELECTOR_AGGREGATES + 10) {
            let mut t = warm_term(0);
            t.topology_key = format!("key-{i}");
            l.selector_counts(&t, false);
        }
        assert_eq!(l.selector_aggs.len(), MAX_SELECTOR_AGGREGATES);
    }
}
