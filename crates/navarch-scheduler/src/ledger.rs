//! The ledger: nodes, what is placed on them, and what offers hold.
//!
//! One ledger serves the pod scheduler and (later) the Mesos allocator. It
//! is fed by watch events, one call per event, each O(1) or O(labels + ports
//! of the object) amortised — never a rebuild — and it is the snapshot the
//! pure functions ([`crate::schedule`], [`crate::preempt`]) read through a
//! shared borrow.
//!
//! Layout: nodes and pods live in slabs addressed by small integer ids;
//! `node_list` holds the schedulable (known) nodes in arrival order with
//! swap-removal, which is the order filtering walks. Per node the ledger
//! keeps the summed requests of its pods and holds (`requested.pods` counts
//! pod slots), the upstream "non-zero" cpu/memory sums used by scoring, the
//! host ports in use, and the ids of its pods. Across nodes it keeps a label
//! index `namespace -> key -> value -> pods`, so inter-pod affinity and
//! topology spreading touch only the pods a selector can match, and the
//! sets of pods carrying pod (anti-)affinity terms. Pending pods nominated
//! to a node are kept on that node (usually none) and by key. It also
//! keeps the aggregates of [`crate::aggregate`] current: cached selector
//! counts and placed pods' terms grouped by signature.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use navarch_api::selector::{LabelSelector, Operator};
use serde_json::{Map, Value};

use crate::aggregate::{for_each_term, signature_key, value_of, Agg, SelectorCache, Signature};
use crate::json;
use crate::node::NodeInfo;
use crate::pod::{AffinityTerm, HostPort, PodInfo};
use crate::ports::PortTable;
use crate::resources::Resources;
use crate::Error;

pub(crate) type NodeId = u32;
pub(crate) type PodId = u32;

/// Resources held by an outstanding offer: unavailable to everyone else
/// until the offer is accepted (then they become pods), declined,
/// rescinded or timed out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hold {
    /// `pods` counts the pod slots the offer holds.
    pub resources: Resources,
    pub host_ports: Vec<HostPort>,
}

/// What a node has in use: the sums the filters and scores read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Pods' requests plus holds; `pods` is the number of pod slots used.
    pub requested: Resources,
    /// Upstream `NonZeroRequested` (cpu, memory), holds included.
    pub non_zero_milli_cpu: i64,
    pub non_zero_memory: i64,
    pub ports: PortTable,
}

impl Usage {
    pub(crate) fn add_pod(&mut self, pod: &PodInfo, ports: &[HostPort]) {
        self.requested.add(&pod.requests);
        self.requested.pods += 1;
        self.non_zero_milli_cpu += pod.non_zero_milli_cpu;
        self.non_zero_memory += pod.non_zero_memory;
        for p in ports {
            self.ports.add(p);
        }
    }

    pub(crate) fn remove_pod(&mut self, pod: &PodInfo, ports: &[HostPort]) {
        self.requested.sub(&pod.requests);
        self.requested.pods -= 1;
        self.non_zero_milli_cpu -= pod.non_zero_milli_cpu;
        self.non_zero_memory -= pod.non_zero_memory;
        for p in ports {
            self.ports.remove(p);
        }
    }

    fn add_hold(&mut self, h: &Hold) {
        self.requested.add(&h.resources);
        self.non_zero_milli_cpu += h.resources.milli_cpu;
        self.non_zero_memory += h.resources.memory;
        for p in &h.host_ports {
            self.ports.add(p);
        }
    }

    fn remove_hold(&mut self, h: &Hold) {
        self.requested.sub(&h.resources);
        self.non_zero_milli_cpu -= h.resources.milli_cpu;
        self.non_zero_memory -= h.resources.memory;
        for p in &h.host_ports {
            self.ports.remove(p);
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct NodeSlot {
    pub name: Arc<str>,
    /// `None` for a placeholder: pods name a node the ledger has not seen
    /// (events arrive in any order), or a node deleted before its pods.
    pub info: Option<Arc<NodeInfo>>,
    pub usage: Usage,
    pub pods: Vec<PodId>,
    pub holds: u32,
    /// Pending pods nominated to this node (upstream
    /// `status.nominatedNodeName`): filtering counts those of equal or
    /// higher priority as if they ran here. Usually empty.
    pub nominated: Vec<Arc<PodInfo>>,
    /// Position in `node_list`, when listed.
    pub list_pos: Option<usize>,
}

#[derive(Debug, Clone)]
pub(crate) struct PodSlot {
    pub info: Arc<PodInfo>,
    pub node: NodeId,
    /// Position in the node's `pods`.
    pub pos: usize,
    /// Placed by [`Ledger::reserve`] and not yet seen bound in the store.
    pub assumed: bool,
    /// Host ports as counted on this node.
    pub ports: Vec<HostPort>,
}

/// Pods by namespace and label, for selector queries.
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelIndex {
    namespaces: HashMap<String, NsIndex>,
}

#[derive(Debug, Clone, Default)]
struct NsIndex {
    all: HashSet<PodId>,
    by_label: HashMap<String, HashMap<String, HashSet<PodId>>>,
}

impl LabelIndex {
    fn insert(&mut self, id: PodId, pod: &PodInfo) {
        let ns = self.namespaces.entry(pod.namespace.clone()).or_default();
        ns.all.insert(id);
        for (k, v) in &pod.labels {
            let v = v.as_str().unwrap_or("");
            ns.by_label
                .entry(k.clone())
                .or_default()
                .entry(v.to_string())
                .or_default()
                .insert(id);
        }
    }

    fn remove(&mut self, id: PodId, pod: &PodInfo) {
        let Some(ns) = self.namespaces.get_mut(&pod.namespace) else {
            return;
        };
        ns.all.remove(&id);
        for (k, v) in &pod.labels {
            let v = v.as_str().unwrap_or("");
            if let Some(values) = ns.by_label.get_mut(k) {
                if let Some(set) = values.get_mut(v) {
                    set.remove(&id);
                    if set.is_empty() {
                        values.remove(v);
                    }
                }
                if values.is_empty() {
                    ns.by_label.remove(k);
                }
            }
        }
        if ns.all.is_empty() {
            self.namespaces.remove(&pod.namespace);
        }
    }

    /// Calls `f` with every pod of `namespace` that may match `selector`
    /// (a superset: the caller checks the selector). Picks the narrowest
    /// posting list among the selector's `=`/`in`/`exists` requirements;
    /// falls back to every pod of the namespace.
    pub(crate) fn for_each_candidate(
        &self,
        namespace: &str,
        selector: &LabelSelector,
        mut f: impl FnMut(PodId),
    ) {
        if selector.is_nothing() {
            return;
        }
        let Some(ns) = self.namespaces.get(namespace) else {
            return;
        };
        let mut best: Option<(usize, Vec<&HashSet<PodId>>)> = None;
        for r in selector.requirements() {
            let sets: Vec<&HashSet<PodId>> = match r.operator() {
                Operator::Equals | Operator::DoubleEquals | Operator::In => {
                    let Some(values) = ns.by_label.get(r.key()) else {
                        return;
                    };
                    r.values().iter().filter_map(|v| values.get(v)).collect()
                }
                Operator::Exists => {
                    let Some(values) = ns.by_label.get(r.key()) else {
                        return;
                    };
                    values.values().collect()
                }
                _ => continue,
            };
            let size: usize = sets.iter().map(|s| s.len()).sum();
            if size == 0 {
                return;
            }
            if best.as_ref().is_none_or(|(b, _)| size < *b) {
                best = Some((size, sets));
            }
        }
        match best {
            Some((_, sets)) => sets.iter().flat_map(|s| s.iter()).for_each(|id| f(*id)),
            None => ns.all.iter().for_each(|id| f(*id)),
        }
    }

    pub(crate) fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespaces.keys().map(String::as_str)
    }
}

/// Which list of a pod's affinity terms an indexed term comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TermKind {
    RequiredAffinity,
    RequiredAnti,
    Preferred,
    PreferredAnti,
}

/// A term of a placed pod: `(pod, kind, index in that list)`.
pub(crate) type TermRef = (PodId, TermKind, u16);

/// Placed pods' affinity terms, indexed by what their label selector
/// requires, so that the terms that may select an incoming pod are found
/// from the incoming pod's labels: a term is filed under one `=`/`in`
/// requirement (each value), else one `exists` requirement (the key), else
/// with the terms that must always be checked.
#[derive(Debug, Clone)]
pub(crate) struct TermIndex<T = TermRef> {
    by_pair: HashMap<String, HashMap<String, HashSet<T>>>,
    by_key: HashMap<String, HashSet<T>>,
    always: HashSet<T>,
}

impl<T> Default for TermIndex<T> {
    fn default() -> Self {
        TermIndex {
            by_pair: HashMap::new(),
            by_key: HashMap::new(),
            always: HashSet::new(),
        }
    }
}

enum Anchor<'a> {
    Pairs(&'a str, &'a [String]),
    Key(&'a str),
    Always,
    Never,
}

fn anchor(selector: &LabelSelector) -> Anchor<'_> {
    if selector.is_nothing() {
        return Anchor::Never;
    }
    let reqs = selector.requirements();
    if let Some(r) = reqs.iter().find(|r| {
        matches!(
            r.operator(),
            Operator::Equals | Operator::DoubleEquals | Operator::In
        )
    }) {
        return Anchor::Pairs(r.key(), r.values());
    }
    if let Some(r) = reqs.iter().find(|r| r.operator() == Operator::Exists) {
        return Anchor::Key(r.key());
    }
    Anchor::Always
}

impl<T: Copy + Eq + std::hash::Hash> TermIndex<T> {
    fn update(&mut self, t: T, selector: &LabelSelector, insert: bool) {
        fn apply<T: Eq + std::hash::Hash>(set: &mut HashSet<T>, t: T, insert: bool) -> bool {
            if insert {
                set.insert(t);
            } else {
                set.remove(&t);
            }
            set.is_empty()
        }
        match anchor(selector) {
            Anchor::Never => {}
            Anchor::Always => {
                apply(&mut self.always, t, insert);
            }
            Anchor::Key(k) => {
                let set = self.by_key.entry(k.to_string()).or_default();
                if apply(set, t, insert) {
                    self.by_key.remove(k);
                }
            }
            Anchor::Pairs(k, values) => {
                let by_value = self.by_pair.entry(k.to_string()).or_default();
                for v in values {
                    let set = by_value.entry(v.clone()).or_default();
                    if apply(set, t, insert) {
                        by_value.remove(v);
                    }
                }
                if by_value.is_empty() {
                    self.by_pair.remove(k);
                }
            }
        }
    }

    /// Calls `f` with every indexed term that may select a pod with these
    /// labels (a superset: the caller checks the term).
    pub(crate) fn for_each_candidate(&self, labels: &Map<String, Value>, mut f: impl FnMut(T)) {
        self.always.iter().for_each(|t| f(*t));
        if self.by_key.is_empty() && self.by_pair.is_empty() {
            return;
        }
        for (k, v) in labels {
            if let Some(set) = self.by_key.get(k) {
                set.iter().for_each(|t| f(*t));
            }
            if let Some(set) = self
                .by_pair
                .get(k)
                .and_then(|m| m.get(v.as_str().unwrap_or("")))
            {
                set.iter().for_each(|t| f(*t));
            }
        }
    }
}

impl TermIndex {
    fn pod(&mut self, id: PodId, pod: &PodInfo, kinds: &[TermKind], insert: bool) {
        let a = &pod.affinity;
        for &kind in kinds {
            let selectors: Vec<&LabelSelector> = match kind {
                TermKind::RequiredAffinity => a.required.iter().map(|t| &t.selector).collect(),
                TermKind::RequiredAnti => a.required_anti.iter().map(|t| &t.selector).collect(),
                TermKind::Preferred => a.preferred.iter().map(|t| &t.term.selector).collect(),
                TermKind::PreferredAnti => {
                    a.preferred_anti.iter().map(|t| &t.term.selector).collect()
                }
            };
            for (i, sel) in selectors.into_iter().enumerate() {
                self.update((id, kind, i as u16), sel, insert);
            }
        }
    }
}

/// What [`Ledger::apply_pod`] did with a pod event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodChange {
    /// The pod now consumes resources on a node.
    Placed,
    /// The pod was removed (unbound, terminal) or was never placed.
    NotPlaced,
}

/// Why a placement or a hold was refused at commit time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{node}: {}", reasons.join(", "))]
pub struct Rejected {
    pub node: String,
    /// Upstream-style reasons (`Insufficient cpu`, `node(s) didn't have
    /// free ports for the requested pod ports`, `node "x" not found`).
    pub reasons: Vec<String>,
}

/// The cluster snapshot and resource ledger. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub(crate) nodes: Vec<Option<NodeSlot>>,
    free_nodes: Vec<NodeId>,
    node_by_name: HashMap<Arc<str>, NodeId>,
    pub(crate) node_list: Vec<NodeId>,
    pub(crate) pods: Vec<Option<PodSlot>>,
    free_pods: Vec<PodId>,
    pod_by_key: HashMap<String, PodId>,
    pub(crate) index: LabelIndex,
    /// Placed pods' required anti-affinity terms (filtering).
    pub(crate) anti_terms: TermIndex,
    /// Placed pods' required affinity and preferred terms (scoring).
    pub(crate) score_terms: TermIndex,
    /// Known nodes per label: `key -> value -> number of nodes`.
    pub(crate) node_labels: HashMap<String, HashMap<String, usize>>,
    holds: HashMap<String, (NodeId, Hold)>,
    namespaces: HashMap<String, Map<String, Value>>,
    /// Nominated pods by key, with the node they are nominated to.
    nominations: HashMap<String, NodeId>,
    /// Selector aggregates (see [`crate::aggregate`]).
    pub(crate) selector_aggs: SelectorCache,
    /// Placed pods' terms grouped by signature.
    pub(crate) sigs: Vec<Option<Signature>>,
    free_sigs: Vec<u32>,
    sig_by_key: HashMap<String, u32>,
    /// Signatures of required anti-affinity terms (filtering).
    pub(crate) anti_sigs: TermIndex<u32>,
    /// Signatures of required affinity and preferred terms (scoring).
    pub(crate) score_sigs: TermIndex<u32>,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    // ----- nodes -----------------------------------------------------------

    /// Adds or replaces a node from its upstream JSON.
    pub fn add_node(&mut self, node: &Value) -> Result<(), Error> {
        let info = NodeInfo::from_json(node)?;
        self.upsert_node(info);
        Ok(())
    }

    /// Same as [`Ledger::add_node`] (a node update replaces the old view).
    pub fn update_node(&mut self, node: &Value) -> Result<(), Error> {
        self.add_node(node)
    }

    /// Adds or replaces a node. O(1), plus O(pods on the node) when its
    /// host-network flag changes (their host ports are recounted).
    pub fn upsert_node(&mut self, info: NodeInfo) {
        let id = self.node_slot(&info.name);
        self.count_node_labels(&info, 1);
        let info = Arc::new(info);
        let prev = self.node(id).info.clone();
        if prev.as_ref().map(|p| &p.labels) != Some(&info.labels) {
            self.recount_node(id, prev, Some(info.clone()));
        }
        let slot = self.nodes[id as usize].as_mut().expect("slot");
        let old = slot.info.replace(info);
        let was_host_network = old.as_ref().is_some_and(|i| i.host_network);
        let host_network = slot.info.as_ref().is_some_and(|i| i.host_network);
        if let Some(old) = old {
            self.count_node_labels(&old, -1);
        }
        let slot = self.nodes[id as usize].as_mut().expect("slot");
        if slot.list_pos.is_none() {
            slot.list_pos = Some(self.node_list.len());
            self.node_list.push(id);
        }
        if was_host_network != host_network {
            self.recount_ports(id);
        }
    }

    /// Removes a node. Its pods (if the store still has them) stay
    /// accounted on a placeholder until they are removed too.
    pub fn remove_node(&mut self, name: &str) -> bool {
        let Some(&id) = self.node_by_name.get(name) else {
            return false;
        };
        let prev = self.node(id).info.clone();
        if prev.is_some() {
            self.recount_node(id, prev, None);
        }
        let slot = self.nodes[id as usize].as_mut().expect("slot");
        let Some(old) = slot.info.take() else {
            return false;
        };
        if let Some(pos) = slot.list_pos.take() {
            self.node_list.swap_remove(pos);
            if let Some(&moved) = self.node_list.get(pos) {
                self.nodes[moved as usize].as_mut().expect("slot").list_pos = Some(pos);
            }
        }
        self.count_node_labels(&old, -1);
        // Pods left on a placeholder count as on a normal node, as they
        // would in a ledger rebuilt from the store.
        if old.host_network {
            self.recount_ports(id);
        }
        self.drop_node_if_unused(id);
        true
    }

    fn node_slot(&mut self, name: &str) -> NodeId {
        if let Some(&id) = self.node_by_name.get(name) {
            return id;
        }
        let name: Arc<str> = Arc::from(name);
        let slot = NodeSlot {
            name: name.clone(),
            info: None,
            usage: Usage::default(),
            pods: Vec::new(),
            holds: 0,
            nominated: Vec::new(),
            list_pos: None,
        };
        let id = match self.free_nodes.pop() {
            Some(id) => {
                self.nodes[id as usize] = Some(slot);
                id
            }
            None => {
                self.nodes.push(Some(slot));
                (self.nodes.len() - 1) as NodeId
            }
        };
        self.node_by_name.insert(name, id);
        id
    }

    fn drop_node_if_unused(&mut self, id: NodeId) {
        let slot = self.nodes[id as usize].as_ref().expect("slot");
        if slot.info.is_none()
            && slot.pods.is_empty()
            && slot.holds == 0
            && slot.nominated.is_empty()
        {
            let name = slot.name.clone();
            self.nodes[id as usize] = None;
            self.node_by_name.remove(&name);
            self.free_nodes.push(id);
        }
    }

    fn recount_ports(&mut self, id: NodeId) {
        let host_network = self.node(id).info.as_ref().is_some_and(|i| i.host_network);
        let pods = self.node(id).pods.clone();
        for pid in pods {
            let pslot = self.pods[pid as usize].as_mut().expect("pod");
            let new_ports = pslot.info.host_ports(host_network);
            let old_ports = std::mem::replace(&mut pslot.ports, new_ports.clone());
            let usage = &mut self.nodes[id as usize].as_mut().expect("slot").usage;
            for p in &old_ports {
                usage.ports.remove(p);
            }
            for p in &new_ports {
                usage.ports.add(p);
            }
        }
    }

    /// Moves the aggregate counts of a node's pods from the node's old view
    /// to its new one (labels changed, node added or removed).
    fn recount_node(&mut self, id: NodeId, old: Option<Arc<NodeInfo>>, new: Option<Arc<NodeInfo>>) {
        if self.node(id).pods.is_empty()
            || (self.sig_by_key.is_empty() && self.selector_aggs.get_mut().entries.is_empty())
        {
            return;
        }
        for pid in self.node(id).pods.clone() {
            let info = self.pod(pid).info.clone();
            self.contribute(&info, old.as_deref(), -1, false);
            self.contribute(&info, new.as_deref(), 1, false);
        }
    }

    /// Adds (`sign` 1) or removes (-1) a placed pod's contribution to the
    /// selector aggregates and its terms' signatures, at `node`'s values.
    /// `refs`: the pod itself is placed or unplaced (signatures are
    /// created and dropped with their first and last instance).
    fn contribute(&mut self, info: &PodInfo, node: Option<&NodeInfo>, sign: i64, refs: bool) {
        let ns_labels = self.namespaces.get(&info.namespace);
        for e in self.selector_aggs.get_mut().entries.values_mut() {
            if let Some(v) = value_of(node, &e.term.topology_key) {
                if e.matches(info, ns_labels) {
                    Arc::make_mut(&mut e.agg).add(v, sign);
                }
            }
        }
        if info.affinity.is_empty() {
            return;
        }
        for_each_term(info, |kind, weight, term| {
            let key = signature_key(kind, weight, term);
            let sid = match self.sig_by_key.get(&key) {
                Some(&sid) => sid,
                None => {
                    debug_assert!(refs && sign > 0, "unknown signature");
                    let sig = Signature {
                        kind,
                        weight,
                        term: term.clone(),
                        refs: 0,
                        agg: Arc::new(Agg::default()),
                    };
                    let sid = match self.free_sigs.pop() {
                        Some(sid) => {
                            self.sigs[sid as usize] = Some(sig);
                            sid
                        }
                        None => {
                            self.sigs.push(Some(sig));
                            (self.sigs.len() - 1) as u32
                        }
                    };
                    match kind {
                        TermKind::RequiredAnti => self.anti_sigs.update(sid, &term.selector, true),
                        _ => self.score_sigs.update(sid, &term.selector, true),
                    }
                    self.sig_by_key.insert(key.clone(), sid);
                    sid
                }
            };
            let sig = self.sigs[sid as usize].as_mut().expect("signature");
            if let Some(v) = value_of(node, &term.topology_key) {
                Arc::make_mut(&mut sig.agg).add(v, sign);
            }
            if refs {
                if sign > 0 {
                    sig.refs += 1;
                } else {
                    sig.refs -= 1;
                }
                if sig.refs == 0 {
                    match kind {
                        TermKind::RequiredAnti => self.anti_sigs.update(sid, &term.selector, false),
                        _ => self.score_sigs.update(sid, &term.selector, false),
                    }
                    self.sig_by_key.remove(&key);
                    self.sigs[sid as usize] = None;
                    self.free_sigs.push(sid);
                }
            }
        });
    }

    /// A live term signature.
    pub(crate) fn sig(&self, id: u32) -> &Signature {
        self.sigs[id as usize].as_ref().expect("live signature")
    }

    /// Whether a pod (by key) is placed.
    pub(crate) fn is_placed(&self, key: &str) -> bool {
        self.pod_by_key.contains_key(key)
    }

    /// Placed pods matching `term` (terminating ones too unless
    /// `live_only`) per value of its topology key on their nodes, from the
    /// aggregate cache (built on first use, O(matching pods), then kept
    /// current by every event).
    pub(crate) fn selector_counts(&self, term: &AffinityTerm, live_only: bool) -> Arc<Agg> {
        self.selector_aggs.get_or_build(term, live_only, || {
            let mut agg = Agg::default();
            crate::affinity::for_each_matching(self, term, "", |id| {
                let slot = self.pod(id);
                if live_only && slot.info.terminating {
                    return;
                }
                if let Some(v) = value_of(self.node_info(slot.node), &term.topology_key) {
                    agg.add(v, 1);
                }
            });
            agg
        })
    }

    /// Drops cached aggregates that depend on namespace labels.
    fn namespaces_changed(&mut self) {
        self.selector_aggs
            .get_mut()
            .entries
            .retain(|_, e| e.term.namespace_selector.is_none());
    }

    pub(crate) fn node(&self, id: NodeId) -> &NodeSlot {
        self.nodes[id as usize].as_ref().expect("live node id")
    }

    pub(crate) fn pod(&self, id: PodId) -> &PodSlot {
        self.pods[id as usize].as_ref().expect("live pod id")
    }

    pub(crate) fn node_id(&self, name: &str) -> Option<NodeId> {
        self.node_by_name.get(name).copied()
    }

    /// Node labels for topology lookups; `None` for placeholders.
    pub(crate) fn node_info(&self, id: NodeId) -> Option<&NodeInfo> {
        self.node(id).info.as_deref()
    }

    /// The number of known nodes.
    pub fn node_count(&self) -> usize {
        self.node_list.len()
    }

    /// The number of pods the ledger accounts (bound and assumed).
    pub fn pod_count(&self) -> usize {
        self.pod_by_key.len()
    }

    /// Known node names, in the order filtering walks them.
    pub fn node_names(&self) -> Vec<String> {
        self.node_list
            .iter()
            .map(|id| self.node(*id).name.to_string())
            .collect()
    }

    /// A node's view, if known.
    pub fn node_view(&self, name: &str) -> Option<&NodeInfo> {
        self.node_id(name).and_then(|id| self.node_info(id))
    }

    /// What is in use on a node (pods and holds); `pods` counts pod slots.
    pub fn requested(&self, name: &str) -> Option<&Resources> {
        self.node_id(name).map(|id| &self.node(id).usage.requested)
    }

    /// Allocatable minus requested: what an offer for this node may carry.
    pub fn free(&self, name: &str) -> Option<Resources> {
        let id = self.node_id(name)?;
        let slot = self.node(id);
        let mut free = slot.info.as_ref()?.allocatable.clone();
        free.sub(&slot.usage.requested);
        Some(free)
    }

    /// Host ports in use on a node, sorted.
    pub fn used_host_ports(&self, name: &str) -> Vec<HostPort> {
        self.node_id(name)
            .map(|id| self.node(id).usage.ports.iter())
            .unwrap_or_default()
    }

    /// Keys of the pods on a node (bound and assumed), sorted.
    pub fn pods_on(&self, name: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .node_id(name)
            .map(|id| {
                self.node(id)
                    .pods
                    .iter()
                    .map(|p| self.pod(*p).info.key.clone())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// A placed pod by key, with its node.
    pub fn placed_pod(&self, key: &str) -> Option<(&PodInfo, &str)> {
        let id = *self.pod_by_key.get(key)?;
        let slot = self.pod(id);
        Some((&slot.info, &self.node(slot.node).name))
    }

    /// Whether the pod is placed by [`Ledger::reserve`] and not yet
    /// confirmed by a watch event.
    pub fn is_assumed(&self, key: &str) -> bool {
        self.pod_by_key
            .get(key)
            .is_some_and(|id| self.pod(*id).assumed)
    }

    // ----- namespaces ------------------------------------------------------

    /// Records a Namespace's labels (for `namespaceSelector` in pod
    /// affinity terms). Unknown namespaces have no labels.
    pub fn set_namespace(&mut self, namespace: &Value) -> Result<(), Error> {
        let meta = json::obj("Namespace", "metadata", namespace.get("metadata"))?;
        let name = json::string(
            "Namespace",
            "metadata.name",
            meta.and_then(|m| m.get("name")),
        )?
        .unwrap_or("");
        let labels = json::obj(
            "Namespace",
            "metadata.labels",
            meta.and_then(|m| m.get("labels")),
        )?
        .cloned()
        .unwrap_or_default();
        self.namespaces.insert(name.to_string(), labels);
        self.namespaces_changed();
        Ok(())
    }

    pub fn set_namespace_labels(&mut self, name: &str, labels: Map<String, Value>) {
        self.namespaces.insert(name.to_string(), labels);
        self.namespaces_changed();
    }

    pub fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
        self.namespaces_changed();
    }

    pub(crate) fn namespace_labels(&self, name: &str) -> Option<&Map<String, Value>> {
        self.namespaces.get(name)
    }

    /// Namespaces known to the ledger: those with labels recorded and those
    /// with pods.
    pub(crate) fn all_namespaces(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.namespaces.keys().map(String::as_str).collect();
        out.extend(self.index.namespaces());
        out.sort_unstable();
        out.dedup();
        out
    }

    // ----- pods ------------------------------------------------------------

    /// Applies a pod add or update event: a pod bound to a node
    /// (`spec.nodeName`) and not terminal (`Succeeded`/`Failed`) is placed
    /// there, replacing any earlier version (an assumed pod becomes bound)
    /// and dropping its nomination; a terminal pod is removed with its
    /// nomination. A pending pod is unplaced (if it was placed) and its
    /// nomination follows `status.nominatedNodeName` as upstream's
    /// nominator does: set, it nominates the pod there (so nominations
    /// survive a restart of the driver); cleared after the ledger had seen
    /// it set, it removes the nomination; absent on both sides, a
    /// nomination made through [`Ledger::nominate`] is kept (the status
    /// write may not have landed yet) with the pod's new version. Bound
    /// pods are recorded even when they overbook a node (the store is the
    /// truth; only placements through [`Ledger::reserve`] and holds are
    /// checked).
    pub fn apply_pod(&mut self, pod: &Value) -> Result<PodChange, Error> {
        let info = PodInfo::from_json(pod)?;
        Ok(self.apply_pod_info(Arc::new(info)))
    }

    /// Same as [`Ledger::apply_pod`].
    pub fn add_pod(&mut self, pod: &Value) -> Result<PodChange, Error> {
        self.apply_pod(pod)
    }

    /// Same as [`Ledger::apply_pod`].
    pub fn update_pod(&mut self, pod: &Value) -> Result<PodChange, Error> {
        self.apply_pod(pod)
    }

    /// [`Ledger::apply_pod`] for an already parsed pod.
    pub fn apply_pod_info(&mut self, info: Arc<PodInfo>) -> PodChange {
        if info.terminal {
            self.remove_pod(&info.key);
            return PodChange::NotPlaced;
        }
        match info.node_name.clone() {
            Some(node) => {
                self.place(info, &node, false);
                PodChange::Placed
            }
            None => {
                self.unplace(&info.key);
                self.follow_nomination(info);
                PodChange::NotPlaced
            }
        }
    }

    /// Removes a pod by key (`metadata.uid`, or `namespace/name`), and its
    /// nomination if it has one. True when a placed pod was removed.
    pub fn remove_pod(&mut self, key: &str) -> bool {
        self.remove_nomination(key);
        self.unplace(key)
    }

    /// Removes a pod's placement (not its nomination).
    fn unplace(&mut self, key: &str) -> bool {
        let Some(id) = self.pod_by_key.remove(key) else {
            return false;
        };
        let info = self.pod(id).info.clone();
        let node_info = self.node(self.pod(id).node).info.clone();
        self.contribute(&info, node_info.as_deref(), -1, true);
        let slot = self.pods[id as usize].take().expect("pod");
        self.free_pods.push(id);
        self.index.remove(id, &slot.info);
        self.index_terms(id, &slot.info, false);
        let node = self.nodes[slot.node as usize].as_mut().expect("slot");
        node.usage.remove_pod(&slot.info, &slot.ports);
        node.pods.swap_remove(slot.pos);
        if let Some(&moved) = node.pods.get(slot.pos) {
            self.pods[moved as usize].as_mut().expect("pod").pos = slot.pos;
        }
        self.drop_node_if_unused(slot.node);
        true
    }

    fn place(&mut self, info: Arc<PodInfo>, node: &str, assumed: bool) {
        self.remove_pod(&info.key);
        debug_assert!(!self.nominations.contains_key(&info.key));
        let nid = self.node_slot(node);
        let host_network = self.node(nid).info.as_ref().is_some_and(|i| i.host_network);
        let ports = info.host_ports(host_network);
        let slot_node = self.nodes[nid as usize].as_mut().expect("slot");
        slot_node.usage.add_pod(&info, &ports);
        let pos = slot_node.pods.len();
        let slot = PodSlot {
            info: info.clone(),
            node: nid,
            pos,
            assumed,
            ports,
        };
        let id = match self.free_pods.pop() {
            Some(id) => {
                self.pods[id as usize] = Some(slot);
                id
            }
            None => {
                self.pods.push(Some(slot));
                (self.pods.len() - 1) as PodId
            }
        };
        self.nodes[nid as usize]
            .as_mut()
            .expect("slot")
            .pods
            .push(id);
        self.pod_by_key.insert(info.key.clone(), id);
        self.index.insert(id, &info);
        self.index_terms(id, &info, true);
        let node_info = self.node(nid).info.clone();
        self.contribute(&info, node_info.as_deref(), 1, true);
    }

    fn index_terms(&mut self, id: PodId, info: &PodInfo, insert: bool) {
        if info.affinity.is_empty() {
            return;
        }
        self.anti_terms
            .pod(id, info, &[TermKind::RequiredAnti], insert);
        self.score_terms.pod(
            id,
            info,
            &[
                TermKind::RequiredAffinity,
                TermKind::Preferred,
                TermKind::PreferredAnti,
            ],
            insert,
        );
    }

    /// A term of a placed pod, as indexed.
    pub(crate) fn term(&self, t: TermRef) -> (&PodSlot, &crate::pod::AffinityTerm, i64) {
        let slot = self.pod(t.0);
        let a = &slot.info.affinity;
        let i = t.2 as usize;
        match t.1 {
            TermKind::RequiredAffinity => (slot, &a.required[i], 0),
            TermKind::RequiredAnti => (slot, &a.required_anti[i], 0),
            TermKind::Preferred => (slot, &a.preferred[i].term, a.preferred[i].weight),
            TermKind::PreferredAnti => {
                (slot, &a.preferred_anti[i].term, a.preferred_anti[i].weight)
            }
        }
    }

    fn count_node_labels(&mut self, info: &NodeInfo, delta: isize) {
        for (k, v) in &info.labels {
            let values = self.node_labels.entry(k.clone()).or_default();
            let n = values.entry(v.clone()).or_insert(0);
            *n = n.saturating_add_signed(delta);
            if *n == 0 {
                values.remove(v);
                if values.is_empty() {
                    self.node_labels.remove(k);
                }
            }
        }
    }

    // ----- commit ----------------------------------------------------------

    /// The bind-time re-check (optimistic concurrency): does `pod` still fit
    /// on `node` in the ledger as it is now? `Check::Resources` verifies
    /// what the ledger guarantees (resources, pod slots, host ports);
    /// `Check::All` runs every filter again. A pod already placed under the
    /// same key is not counted against itself. Either way the pods
    /// nominated to `node` that `pod` must not displace (priority at least
    /// its own; see [`Ledger::nominate`]) count as placed, so a decision
    /// taken before a preemption nominated the node cannot take the room
    /// freed for the preemptor.
    pub fn check_fit(
        &self,
        node: &str,
        pod: &PodInfo,
        check: crate::Check,
    ) -> Result<(), Rejected> {
        crate::schedule::check_fit(self, node, pod, check)
    }

    /// Re-checks (see [`Ledger::check_fit`]) and places the pod as assumed.
    /// A later [`Ledger::apply_pod`] of the bound pod confirms it;
    /// [`Ledger::forget`] undoes it if binding fails.
    pub fn reserve(
        &mut self,
        node: &str,
        pod: Arc<PodInfo>,
        check: crate::Check,
    ) -> Result<(), Rejected> {
        self.check_fit(node, &pod, check)?;
        self.place(pod, node, true);
        Ok(())
    }

    /// Undoes [`Ledger::reserve`]: removes the pod if it is still assumed.
    pub fn forget(&mut self, key: &str) -> bool {
        if self.is_assumed(key) {
            self.unplace(key)
        } else {
            false
        }
    }

    // ----- nominations -----------------------------------------------------

    /// Nominates a pending pod to `node`, as upstream does when preemption
    /// picks that node for it (and writes `status.nominatedNodeName`).
    /// Until the pod is placed ([`Ledger::reserve`], or a bound pod event)
    /// or removed, filtering `node` for any *other* pod whose priority is
    /// not above the nominated pod's counts the nominated pod as running
    /// there — its requests, pod slot, host ports, labels and affinity —
    /// and the other pod must fit both with and without it (upstream's two
    /// passes). So the room preemption freed is not taken by a less (or
    /// equally) important pod, while more important pods ignore the
    /// nomination. The pod's own nomination never counts against it, and
    /// [`crate::schedule`] tries its nominated node first.
    ///
    /// Replaces any earlier nomination of the pod (and the stored
    /// `PodInfo`, whose priority and labels are the ones counted). `node`
    /// need not be known yet. Returns false, recording nothing, when the
    /// pod is placed already (a scheduled pod has no nomination).
    /// O(nominations on the old node).
    pub fn nominate(&mut self, node: &str, pod: Arc<PodInfo>) -> bool {
        if self.pod_by_key.contains_key(&pod.key) {
            return false;
        }
        self.remove_nomination(&pod.key);
        let nid = self.node_slot(node);
        self.nominations.insert(pod.key.clone(), nid);
        self.nodes[nid as usize]
            .as_mut()
            .expect("slot")
            .nominated
            .push(pod);
        true
    }

    /// Removes a pod's nomination (by pod key); true if it had one. Placing
    /// the pod ([`Ledger::reserve`], [`Ledger::apply_pod`] of the bound
    /// pod) and [`Ledger::remove_pod`] do this on their own.
    pub fn remove_nomination(&mut self, key: &str) -> bool {
        let Some(nid) = self.nominations.remove(key) else {
            return false;
        };
        let slot = self.nodes[nid as usize].as_mut().expect("slot");
        if let Some(i) = slot.nominated.iter().position(|p| p.key == key) {
            slot.nominated.swap_remove(i);
        }
        self.drop_node_if_unused(nid);
        true
    }

    /// The node a pod (by key) is nominated to.
    pub fn nomination(&self, key: &str) -> Option<&str> {
        self.nominations.get(key).map(|nid| &*self.node(*nid).name)
    }

    /// A nominated pod as recorded, with its node.
    pub fn nominated_pod(&self, key: &str) -> Option<(&PodInfo, &str)> {
        let nid = *self.nominations.get(key)?;
        let slot = self.node(nid);
        let pod = slot.nominated.iter().find(|p| p.key == key)?;
        Some((pod, &slot.name))
    }

    /// Keys of the pods nominated to a node, sorted.
    pub fn nominated_to(&self, node: &str) -> Vec<String> {
        self.nominated_keys(node, |_| true)
    }

    /// Keys of the pods nominated to `node` with a priority below
    /// `priority`, sorted: upstream's `getLowerPriorityNominatedPods`.
    /// After preempting on `node` for a pod of that priority, upstream
    /// clears these pods' nominations (they may no longer fit) and sends
    /// them back to the active queue; call [`Ledger::remove_nomination`]
    /// for each.
    pub fn nominated_below(&self, node: &str, priority: i32) -> Vec<String> {
        self.nominated_keys(node, |p| p < priority)
    }

    fn nominated_keys(&self, node: &str, keep: impl Fn(i32) -> bool) -> Vec<String> {
        let mut out: Vec<String> = self
            .node_id(node)
            .map(|id| {
                self.node(id)
                    .nominated
                    .iter()
                    .filter(|p| keep(p.priority))
                    .map(|p| p.key.clone())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// The number of nominated pods.
    pub fn nomination_count(&self) -> usize {
        self.nominations.len()
    }

    /// The node id a pod is nominated to.
    pub(crate) fn nominated_node(&self, key: &str) -> Option<NodeId> {
        self.nominations.get(key).copied()
    }

    /// Follows a pending pod's `status.nominatedNodeName` (see
    /// [`Ledger::apply_pod`]).
    fn follow_nomination(&mut self, info: Arc<PodInfo>) {
        if let Some(node) = info.nominated_node_name.clone() {
            self.nominate(&node, info);
            return;
        }
        let Some(&nid) = self.nominations.get(&info.key) else {
            return;
        };
        let slot = self.nodes[nid as usize].as_mut().expect("slot");
        let Some(i) = slot.nominated.iter().position(|p| p.key == info.key) else {
            return;
        };
        if slot.nominated[i].nominated_node_name.is_some() {
            // The status had it and now does not: cleared on purpose.
            self.remove_nomination(&info.key);
        } else {
            slot.nominated[i] = info;
        }
    }

    // ----- holds -----------------------------------------------------------

    /// Holds resources on a node for an outstanding offer. Refused unless
    /// the node exists and the hold fits in what is free (resources, pod
    /// slots, host ports): holds never overbook either.
    pub fn add_hold(&mut self, id: &str, node: &str, hold: Hold) -> Result<(), Rejected> {
        let reject = |reasons: Vec<String>| Rejected {
            node: node.to_string(),
            reasons,
        };
        if self.holds.contains_key(id) {
            return Err(reject(vec![format!("hold {id:?} already exists")]));
        }
        let Some(nid) = self.node_id(node).filter(|n| self.node(*n).info.is_some()) else {
            return Err(reject(vec![format!("node {node:?} not found")]));
        };
        let slot = self.node(nid);
        let alloc = &slot.info.as_ref().expect("info").allocatable;
        let mut after = slot.usage.requested.clone();
        after.add(&hold.resources);
        let mut reasons = crate::filter::insufficient(&after, alloc);
        for p in &hold.host_ports {
            if slot.usage.ports.conflicts(p) {
                reasons.push(format!(
                    "host port {}/{}:{} in use",
                    p.protocol, p.ip, p.port
                ));
            }
        }
        if !reasons.is_empty() {
            return Err(reject(reasons));
        }
        let slot = self.nodes[nid as usize].as_mut().expect("slot");
        slot.usage.add_hold(&hold);
        slot.holds += 1;
        self.holds.insert(id.to_string(), (nid, hold));
        Ok(())
    }

    /// Releases a hold (offer accepted, declined, rescinded or timed out).
    pub fn remove_hold(&mut self, id: &str) -> Option<Hold> {
        let (nid, hold) = self.holds.remove(id)?;
        let slot = self.nodes[nid as usize].as_mut().expect("slot");
        slot.usage.remove_hold(&hold);
        slot.holds -= 1;
        self.drop_node_if_unused(nid);
        Some(hold)
    }

    /// Outstanding holds on a node, by id (sorted).
    pub fn holds_on(&self, node: &str) -> Vec<String> {
        let Some(nid) = self.node_id(node) else {
            return Vec::new();
        };
        let mut out: Vec<String> = self
            .holds
            .iter()
            .filter(|(_, (n, _))| *n == nid)
            .map(|(k, _)| k.clone())
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str, pods: i64) -> Value {
        json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
               "status": {"allocatable": {"cpu": cpu, "memory": "4Gi", "pods": pods.to_string()}}})
    }

    fn pod(uid: &str, node: Option<&str>, cpu: &str) -> Value {
        json!({"metadata": {"name": uid, "namespace": "default", "uid": uid, "labels": {"app": "a"}},
               "spec": {"nodeName": node,
                        "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}},
                                        "ports": [{"containerPort": 80, "hostPort": 80}]}]}})
    }

    #[test]
    fn incremental_accounting() {
        let mut l = Ledger::new();
        l.add_node(&node("n1", "2", 10)).unwrap();
        assert_eq!(
            l.apply_pod(&pod("p1", Some("n1"), "500m")).unwrap(),
            PodChange::Placed
        );
        assert_eq!(l.requested("n1").unwrap().milli_cpu, 500);
        assert_eq!(l.requested("n1").unwrap().pods, 1);
        assert_eq!(l.used_host_ports("n1").len(), 1);
        // Update in place (same uid): no double counting.
        l.apply_pod(&pod("p1", Some("n1"), "700m")).unwrap();
        assert_eq!(l.requested("n1").unwrap().milli_cpu, 700);
        // Unbound or terminal pods do not count.
        assert_eq!(
            l.apply_pod(&pod("p2", None, "1")).unwrap(),
            PodChange::NotPlaced
        );
        let mut done = pod("p1", Some("n1"), "700m");
        done["status"] = json!({"phase": "Succeeded"});
        assert_eq!(l.apply_pod(&done).unwrap(), PodChange::NotPlaced);
        assert!(l.requested("n1").unwrap().is_zero());
        assert!(l.used_host_ports("n1").is_empty());
        assert_eq!(l.pod_count(), 0);
    }

    #[test]
    fn pods_before_their_node_and_after_it() {
        let mut l = Ledger::new();
        l.apply_pod(&pod("p1", Some("n1"), "1")).unwrap();
        assert_eq!(l.node_count(), 0);
        l.add_node(&node("n1", "2", 10)).unwrap();
        assert_eq!(l.free("n1").unwrap().milli_cpu, 1000);
        assert!(l.remove_node("n1"));
        assert_eq!(l.node_count(), 0);
        assert!(l.free("n1").is_none());
        assert!(l.remove_pod("p1"));
        assert!(l.node_id("n1").is_none());
    }

    #[test]
    fn holds_count_as_used_and_never_overbook() {
        let mut l = Ledger::new();
        l.add_node(&node("n1", "2", 10)).unwrap();
        let hold = |cpu| Hold {
            resources: Resources {
                milli_cpu: cpu,
                pods: 1,
                ..Default::default()
            },
            host_ports: vec![HostPort::new("TCP", "", 31000)],
        };
        l.add_hold("o1", "n1", hold(1500)).unwrap();
        assert_eq!(l.free("n1").unwrap().milli_cpu, 500);
        let err = l.add_hold("o2", "n1", hold(600)).unwrap_err();
        assert_eq!(err.reasons[0], "Insufficient cpu");
        assert!(err.reasons[1].contains("31000"));
        assert!(l.add_hold("o3", "nope", hold(1)).is_err());
        assert_eq!(l.remove_hold("o1").unwrap().resources.milli_cpu, 1500);
        assert_eq!(l.free("n1").unwrap().milli_cpu, 2000);
        l.add_hold("o2", "n1", hold(600)).unwrap();
        assert_eq!(l.holds_on("n1"), vec!["o2".to_string()]);
    }

    #[test]
    fn host_network_flag_recounts_ports() {
        let mut l = Ledger::new();
        l.add_node(&node("n1", "2", 10)).unwrap();
        let p = json!({"metadata": {"name": "p", "uid": "p"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]}});
        l.apply_pod(&p).unwrap();
        assert!(l.used_host_ports("n1").is_empty());
        let mut n = node("n1", "2", 10);
        n["metadata"]["labels"]["navarch.io/host-network-pods"] = json!("true");
        l.update_node(&n).unwrap();
        assert_eq!(
            l.used_host_ports("n1"),
            vec![HostPort::new("TCP", "", 8080)]
        );
        l.update_node(&node("n1", "2", 10)).unwrap();
        assert!(l.used_host_ports("n1").is_empty());
    }

    #[test]
    fn label_index_candidates() {
        let mut l = Ledger::new();
        l.add_node(&node("n1", "2", 10)).unwrap();
        for (uid, app) in [("a", "web"), ("b", "web"), ("c", "db")] {
            l.apply_pod(&json!({"metadata": {"name": uid, "uid": uid, "namespace": "ns", "labels": {"app": app}},
                                "spec": {"nodeName": "n1", "containers": []}}))
                .unwrap();
        }
        fn count(l: &Ledger, sel: &str) -> usize {
            let sel = LabelSelector::parse(sel).unwrap();
            let mut n = 0;
            l.index.for_each_candidate("ns", &sel, |id| {
                if sel.matches(Some(&l.pod(id).info.labels)) {
                    n += 1
                }
            });
            n
        }
        assert_eq!(count(&l, "app=web"), 2);
        assert_eq!(count(&l, "app in (web, db)"), 3);
        assert_eq!(count(&l, "app"), 3);
        assert_eq!(count(&l, "app!=web"), 1);
        assert_eq!(count(&l, "tier=x"), 0);
        assert_eq!(count(&l, ""), 3);
        l.remove_pod("a");
        assert_eq!(count(&l, "app=web"), 1);
    }
}
