//! One scheduling cycle: prefilter, filter (a fair sample of the nodes),
//! score, pick. Pure: the same ledger, pod, config and start index give the
//! same answer.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::affinity::{self, AffinityFilter, AffinityScore};
use crate::config::Config;
use crate::filter::{
    node_ports, resources_fit, run_filters, Code, NodeStatus, PodFilter, REASON_AFFINITY_CONFLICT,
    REASON_PREFILTER_NODE_AFFINITY,
};
use crate::ledger::{Ledger, NodeId, Rejected, Usage};
use crate::node::NodeInfo;
use crate::pod::PodInfo;
use crate::score;
use crate::spread::{self, SpreadFilter, SpreadScore};

/// How much [`Ledger::check_fit`] re-verifies at commit time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Resources, pod slots and host ports: the ledger's invariant. Pods
    /// nominated to the node whose priority is at least the pod's count as
    /// placed (see [`Ledger::nominate`]).
    Resources,
    /// Every filter, as a fresh scheduling cycle would run them (with the
    /// default profile's cluster-default spreading and the two passes for
    /// nominated pods).
    All,
}

/// A decision: bind the pod to `node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub node: String,
    /// The weighted score sum (0 when only one node was feasible, which is
    /// then taken without scoring, as upstream does).
    pub score: i64,
    pub feasible_nodes: usize,
    /// Nodes the filters ran on (feasible or not).
    pub evaluated_nodes: usize,
    /// Where the next cycle should start filtering (upstream
    /// `nextStartNodeIndex`), so every node gets its turn in the sample.
    pub next_start_index: usize,
}

/// No node can take the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    /// Upstream `FitError`: `0/3 nodes are available: 1 Insufficient
    /// memory, 2 node(s) didn't match Pod's node affinity/selector.`
    /// Combine with the preemption outcome through
    /// [`Unschedulable::failed_scheduling_message`].
    pub message: String,
    pub num_all_nodes: usize,
    /// A PreFilter rejection, which applies to every node.
    pub prefilter: Option<NodeStatus>,
    /// Why each node was rejected, by node name.
    pub node_statuses: BTreeMap<String, NodeStatus>,
    /// Some node failed only for reasons removing pods could fix, and the
    /// pod may preempt (`preemptionPolicy` is not `Never`).
    pub preemption_may_help: bool,
    pub next_start_index: usize,
}

impl Unschedulable {
    /// The `FailedScheduling` event message: the filter message followed by
    /// the preemption message (`preemption: ...`) when there is one.
    pub fn failed_scheduling_message(&self, preemption: Option<&str>) -> String {
        match preemption {
            Some(p) if !p.is_empty() => format!("{} {}", self.message, p),
            _ => self.message.clone(),
        }
    }

    /// The status of a node in this diagnosis.
    pub fn status_of(&self, node: &str) -> Option<&NodeStatus> {
        self.prefilter
            .as_ref()
            .or_else(|| self.node_statuses.get(node))
    }
}

/// Upstream `FitError.Error()`: reasons counted over nodes, each entry
/// `"<count> <reason>"`, entries sorted as strings.
pub fn fit_error_message<'a>(
    num_all_nodes: usize,
    statuses: impl IntoIterator<Item = &'a NodeStatus>,
) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for st in statuses {
        for r in &st.reasons {
            *counts.entry(r.as_ref()).or_insert(0) += 1;
        }
    }
    let mut entries: Vec<String> = counts
        .into_iter()
        .map(|(r, n)| format!("{n} {r}"))
        .collect();
    entries.sort();
    let mut msg = format!("0/{num_all_nodes} nodes are available:");
    if !entries.is_empty() {
        msg.push(' ');
        msg.push_str(&entries.join(", "));
        msg.push('.');
    }
    msg
}

/// The pod's PreFilter outcome: the nodes to filter, the status of the
/// others, or a rejection for all.
pub(crate) enum PreFilter {
    All,
    Only(Vec<NodeId>, NodeStatus),
    Reject(NodeStatus),
}

pub(crate) fn prefilter_nodes(ledger: &Ledger, pod: &PodInfo) -> PreFilter {
    let Some(names) = pod.required_node_affinity.pinned_node_names() else {
        return PreFilter::All;
    };
    if names.is_empty() {
        return PreFilter::Reject(NodeStatus::unresolvable(REASON_AFFINITY_CONFLICT));
    }
    let mut ids: Vec<(usize, NodeId)> = names
        .iter()
        .filter_map(|n| ledger.node_id(n))
        .filter_map(|id| ledger.node(id).list_pos.map(|p| (p, id)))
        .collect();
    ids.sort_unstable();
    PreFilter::Only(
        ids.into_iter().map(|(_, id)| id).collect(),
        NodeStatus::unresolvable(REASON_PREFILTER_NODE_AFFINITY),
    )
}

pub(crate) fn pod_filter<'a>(ledger: &Ledger, pod: &'a PodInfo, config: &Config) -> PodFilter<'a> {
    PodFilter {
        pod,
        ports: if pod.has_ports() {
            pod.host_ports(false)
        } else {
            Vec::new()
        },
        ports_host_network: if pod.has_ports() {
            pod.host_ports(true)
        } else {
            Vec::new()
        },
        spread: SpreadFilter::new(ledger, pod, config),
        affinity: AffinityFilter::new(ledger, pod),
    }
}

fn unschedulable(
    ledger: &Ledger,
    pod: &PodInfo,
    prefilter: Option<NodeStatus>,
    statuses: Vec<(NodeId, NodeStatus)>,
    absent: Option<(&[NodeId], NodeStatus)>,
    next_start_index: usize,
) -> Unschedulable {
    let num_all_nodes = ledger.node_list.len();
    let mut node_statuses: BTreeMap<String, NodeStatus> = BTreeMap::new();
    for (id, st) in statuses {
        node_statuses.insert(ledger.node(id).name.to_string(), st);
    }
    if let Some((evaluated, st)) = absent {
        let mut evaluated = evaluated.to_vec();
        evaluated.sort_unstable();
        for &id in &ledger.node_list {
            if evaluated.binary_search(&id).is_err() {
                node_statuses.insert(ledger.node(id).name.to_string(), st.clone());
            }
        }
    }
    let message = match &prefilter {
        Some(p) => format!(
            "0/{num_all_nodes} nodes are available: {}.",
            p.reasons.join(", ")
        ),
        None => fit_error_message(num_all_nodes, node_statuses.values()),
    };
    let preemption_may_help = !pod.preemption_never
        && prefilter.is_none()
        && node_statuses
            .values()
            .any(|s| s.code == Code::Unschedulable);
    Unschedulable {
        message,
        num_all_nodes,
        prefilter,
        node_statuses,
        preemption_may_help,
        next_start_index,
    }
}

/// Finds a node for `pod`. `start_index` is where filtering starts in the
/// node list (pass the previous result's `next_start_index`; 0 at first).
///
/// Upstream's algorithm: PreFilter (NodeAffinity `metadata.name` pins,
/// PodTopologySpread and InterPodAffinity pre-computations); the node the
/// pod is nominated to ([`Ledger::nominate`], else its
/// `status.nominatedNodeName`), if it passes the filters, is taken at once
/// without scoring; otherwise the filters run over the nodes from
/// `start_index` on, stopping once `percentageOfNodesToScore` feasible
/// nodes are found; then scoring and picking the highest total. Ties are
/// broken by a hash of the pod key and node name (deterministic, yet
/// spreading equal pods over equal nodes), then by node name. A node with
/// other pods nominated to it is filtered as upstream's
/// `RunFilterPluginsWithNominatedPods` does (see [`Ledger::nominate`]).
pub fn schedule(
    ledger: &Ledger,
    pod: &PodInfo,
    config: &Config,
    start_index: usize,
) -> Result<Placement, Unschedulable> {
    let num_all = ledger.node_list.len();
    if num_all == 0 {
        return Err(Unschedulable {
            message: "no nodes available to schedule pods".into(),
            num_all_nodes: 0,
            prefilter: None,
            node_statuses: BTreeMap::new(),
            preemption_may_help: false,
            next_start_index: 0,
        });
    }
    let (nodes, absent): (Cow<'_, [NodeId]>, Option<NodeStatus>) =
        match prefilter_nodes(ledger, pod) {
            PreFilter::All => (Cow::Borrowed(&ledger.node_list), None),
            PreFilter::Only(ids, st) => (Cow::Owned(ids), Some(st)),
            PreFilter::Reject(st) => {
                return Err(unschedulable(
                    ledger,
                    pod,
                    Some(st),
                    Vec::new(),
                    None,
                    start_index % num_all,
                ));
            }
        };
    let pf = pod_filter(ledger, pod, config);
    // Upstream: a node nominated for the pod (by an earlier preemption) is
    // tried first, and taken without scoring if it fits.
    let nominated = ledger.nominated_node(&pod.key).or_else(|| {
        pod.nominated_node_name
            .as_deref()
            .and_then(|n| ledger.node_id(n))
    });
    if let Some(id) = nominated.filter(|id| ledger.node(*id).list_pos.is_some()) {
        if eval(ledger, &pf, id).is_ok() {
            return Ok(Placement {
                node: ledger.node(id).name.to_string(),
                score: 0,
                feasible_nodes: 1,
                evaluated_nodes: 1,
                next_start_index: start_index % num_all,
            });
        }
    }
    let to_find = config.num_feasible_nodes_to_find(nodes.len());
    let (feasible, statuses) = find_feasible(ledger, &pf, &nodes, start_index, to_find, config);
    let next_start_index = (start_index + feasible.len() + statuses.len()) % num_all;
    let evaluated_nodes = feasible.len() + statuses.len();
    if feasible.is_empty() {
        let absent = absent.map(|st| (&nodes[..], st));
        return Err(unschedulable(
            ledger,
            pod,
            None,
            statuses,
            absent,
            next_start_index,
        ));
    }
    if feasible.len() == 1 {
        return Ok(Placement {
            node: ledger.node(feasible[0]).name.to_string(),
            score: 0,
            feasible_nodes: 1,
            evaluated_nodes,
            next_start_index,
        });
    }
    let totals = score_nodes(ledger, pod, config, &feasible);
    let mut best: Option<(i64, u64, &str, NodeId)> = None;
    for (i, &id) in feasible.iter().enumerate() {
        let name: &str = &ledger.node(id).name;
        let key = (totals[i], tie_hash(&pod.key, name), name, id);
        let better = match &best {
            None => true,
            Some(b) => key.0 > b.0 || (key.0 == b.0 && (key.1, key.2) < (b.1, b.2)),
        };
        if better {
            best = Some(key);
        }
    }
    let (score, _, name, _) = best.expect("feasible is not empty");
    Ok(Placement {
        node: name.to_string(),
        score,
        feasible_nodes: feasible.len(),
        evaluated_nodes,
        next_start_index,
    })
}

/// FNV-1a over the pod key and node name: a fixed pseudo-random order of
/// nodes per pod, standing in for upstream's random choice among ties.
fn tie_hash(pod: &str, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in pod.bytes().chain([0xff]).chain(node.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn eval(ledger: &Ledger, pf: &PodFilter<'_>, id: NodeId) -> Result<(), NodeStatus> {
    let slot = ledger.node(id);
    let info = slot.info.as_deref().expect("listed nodes are known");
    if slot.nominated.is_empty() {
        run_filters(pf, info, &slot.usage)
    } else {
        filter_with_nominated(ledger, pf, &slot.nominated, info, &slot.usage)
    }
}

/// Upstream `RunFilterPluginsWithNominatedPods`: the pods nominated to the
/// node with a priority at least the pod's (other than the pod itself) are
/// added to the node and to the PreFilter state, and the pod must pass the
/// filters both with them and without them. Resources and anti-affinity
/// are stricter with them, pod affinity may be stricter without them. When
/// no nominated pod qualifies this is one plain pass.
pub(crate) fn filter_with_nominated(
    ledger: &Ledger,
    pf: &PodFilter<'_>,
    nominated: &[Arc<PodInfo>],
    node: &NodeInfo,
    usage: &Usage,
) -> Result<(), NodeStatus> {
    let pod = pf.pod;
    let mut added = nominated
        .iter()
        .filter(|p| p.priority >= pod.priority && p.key != pod.key)
        .peekable();
    if added.peek().is_none() {
        return run_filters(pf, node, usage);
    }
    let mut with_usage = usage.clone();
    let mut with = PodFilter {
        pod,
        ports: pf.ports.clone(),
        ports_host_network: pf.ports_host_network.clone(),
        spread: pf.spread.clone(),
        affinity: pf.affinity.clone(),
    };
    for p in added {
        with_usage.add_pod(p, &p.host_ports(node.host_network));
        if let Some(s) = with.spread.as_mut() {
            s.update_with_pod(pod, p, node, 1);
        }
        if let Some(a) = with.affinity.as_mut() {
            a.update_with_pod(ledger, p, node, 1);
        }
    }
    run_filters(&with, node, &with_usage)?;
    run_filters(pf, node, usage)
}

type Feasible = (Vec<NodeId>, Vec<(NodeId, NodeStatus)>);

/// Filters `nodes` from `start` (rotating) until `to_find` feasible nodes
/// are found. With `parallelism > 1` and enough nodes, rounds of nodes are
/// filtered on scoped threads and merged in order, so the outcome is the
/// same as the sequential walk.
fn find_feasible(
    ledger: &Ledger,
    pf: &PodFilter<'_>,
    nodes: &[NodeId],
    start: usize,
    to_find: usize,
    config: &Config,
) -> Feasible {
    let n = nodes.len();
    let mut feasible = Vec::with_capacity(to_find.min(n));
    let mut statuses = Vec::new();
    if n == 0 {
        return (feasible, statuses);
    }
    let start = start % n;
    let at = |i: usize| nodes[(start + i) % n];
    let threads = config.parallelism.max(1);
    if threads == 1 || n < config.parallel_threshold {
        for i in 0..n {
            let id = at(i);
            match eval(ledger, pf, id) {
                Ok(()) => {
                    feasible.push(id);
                    if feasible.len() >= to_find {
                        break;
                    }
                }
                Err(st) => statuses.push((id, st)),
            }
        }
        return (feasible, statuses);
    }
    // Rounds start at twice the feasible nodes still wanted and double, so
    // a sparse fit costs a few thread spawns, not one per small chunk.
    let mut i = 0;
    let mut round = 0;
    while i < n && feasible.len() < to_find {
        round = (2 * (to_find - feasible.len()))
            .max(2 * round)
            .max(64 * threads)
            .min(n - i);
        let results: Vec<Result<(), NodeStatus>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let lo = i + (t * round) / threads;
                    let hi = i + ((t + 1) * round) / threads;
                    s.spawn(move || {
                        (lo..hi)
                            .map(|j| eval(ledger, pf, at(j)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("filter threads do not panic"))
                .collect()
        });
        for (j, r) in (i..i + round).zip(results) {
            let id = at(j);
            match r {
                Ok(()) => {
                    feasible.push(id);
                    if feasible.len() >= to_find {
                        break;
                    }
                }
                Err(st) => statuses.push((id, st)),
            }
        }
        i += round;
    }
    (feasible, statuses)
}

/// Runs the score plugins over the feasible nodes and returns the weighted
/// totals, in the order of `feasible`.
pub(crate) fn score_nodes(
    ledger: &Ledger,
    pod: &PodInfo,
    config: &Config,
    feasible: &[NodeId],
) -> Vec<i64> {
    let w = &config.weights;
    let n = feasible.len();
    let node = |id: NodeId| -> (&NodeInfo, &Usage) {
        let slot = ledger.node(id);
        (
            slot.info.as_deref().expect("feasible nodes are known"),
            &slot.usage,
        )
    };
    let mut totals = vec![0i64; n];
    let mut add = |scores: &[i64], weight: i64| {
        for (t, s) in totals.iter_mut().zip(scores) {
            *t += s * weight;
        }
    };

    // NodeResourcesFit (no normalisation).
    let fit: Vec<i64> = feasible
        .iter()
        .map(|&id| {
            let (info, usage) = node(id);
            score::resources_fit(config.scoring_strategy, pod, info, usage)
        })
        .collect();
    add(&fit, w.node_resources_fit);

    // NodeResourcesBalancedAllocation (skipped for best-effort pods).
    if !score::balanced_skips(pod) {
        let bal: Vec<i64> = feasible
            .iter()
            .map(|&id| {
                let (info, usage) = node(id);
                score::balanced_allocation(pod, info, usage)
            })
            .collect();
        add(&bal, w.balanced_allocation);
    }

    // TaintToleration (reverse-normalised).
    let tolerations = score::prefer_no_schedule_tolerations(pod);
    let mut taint: Vec<i64> = feasible
        .iter()
        .map(|&id| score::taint_toleration(&tolerations, node(id).0))
        .collect();
    score::default_normalize(&mut taint, true);
    add(&taint, w.taint_toleration);

    // NodeAffinity preferred terms.
    if !pod.preferred_node_affinity.is_empty() {
        let mut na: Vec<i64> = feasible
            .iter()
            .map(|&id| score::node_affinity(pod, node(id).0))
            .collect();
        score::default_normalize(&mut na, false);
        add(&na, w.node_affinity);
    }

    // PodTopologySpread ScheduleAnyway constraints and cluster defaults.
    if let Some(ss) = SpreadScore::new(ledger, pod, config, feasible) {
        let mut raw: Vec<i64> = feasible
            .iter()
            .map(|&id| ss.score(id, node(id).0))
            .collect();
        let ignored: Vec<bool> = feasible.iter().map(|&id| ss.is_ignored(id)).collect();
        spread::normalize(&mut raw, &ignored);
        add(&raw, w.pod_topology_spread);
    }

    // InterPodAffinity preferred terms (and existing pods' terms).
    if let Some(ascore) = AffinityScore::new(ledger, pod, config.hard_pod_affinity_weight) {
        let mut raw: Vec<i64> = feasible
            .iter()
            .map(|&id| ascore.score(node(id).0))
            .collect();
        affinity::normalize(&mut raw);
        add(&raw, w.inter_pod_affinity);
    }
    totals
}

/// [`Ledger::check_fit`].
pub(crate) fn check_fit(
    ledger: &Ledger,
    node: &str,
    pod: &PodInfo,
    check: Check,
) -> Result<(), Rejected> {
    let reject = |reasons: Vec<String>| Rejected {
        node: node.to_string(),
        reasons,
    };
    let Some(id) = ledger.node_id(node) else {
        return Err(reject(vec![format!("node {node:?} not found")]));
    };
    let slot = ledger.node(id);
    let Some(info) = slot.info.as_deref() else {
        return Err(reject(vec![format!("node {node:?} not found")]));
    };
    // A pod already placed here (re-reserve, or a confirmed bind) does not
    // compete with itself.
    let mut own = None;
    if let Some((placed, on)) = ledger.placed_pod(&pod.key) {
        if on == node {
            let pid = slot
                .pods
                .iter()
                .copied()
                .find(|p| ledger.pod(*p).info.key == pod.key);
            if let Some(pid) = pid {
                let mut u = slot.usage.clone();
                u.remove_pod(placed, &ledger.pod(pid).ports);
                own = Some(u);
            }
        }
    }
    let usage = own.as_ref().unwrap_or(&slot.usage);
    let to_reasons = |st: NodeStatus| {
        st.reasons
            .into_iter()
            .map(|r| r.into_owned())
            .collect::<Vec<_>>()
    };
    match check {
        Check::Resources => {
            let pf = PodFilter {
                pod,
                ports: pod.host_ports(false),
                ports_host_network: pod.host_ports(true),
                spread: None,
                affinity: None,
            };
            // Pods nominated here that this one must not displace hold
            // their room (the first of upstream's two passes; for
            // resources and ports the second adds nothing).
            let mut held = None;
            for p in slot
                .nominated
                .iter()
                .filter(|p| p.priority >= pod.priority && p.key != pod.key)
            {
                held.get_or_insert_with(|| usage.clone())
                    .add_pod(p, &p.host_ports(info.host_network));
            }
            let usage = held.as_ref().unwrap_or(usage);
            node_ports(&pf, info, usage).map_err(|st| reject(to_reasons(st)))?;
            resources_fit(&pod.requests, info, usage).map_err(|st| reject(to_reasons(st)))
        }
        Check::All => {
            let config = Config::default();
            let pf = pod_filter(ledger, pod, &config);
            filter_with_nominated(ledger, &pf, &slot.nominated, info, usage)
                .map_err(|st| reject(to_reasons(st)))
        }
    }
}
