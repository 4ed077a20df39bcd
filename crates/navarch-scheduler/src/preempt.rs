//! DefaultPreemption: when no node fits, find the node where evicting the
//! fewest, least important lower-priority pods makes the pod fit.

use std::collections::HashSet;

use navarch_api::selector::LabelSelector;
use serde_json::Value;

use crate::config::Config;
use crate::filter::{Code, NodeStatus, PodFilter, REASON_NOT_HELPFUL, REASON_NO_VICTIMS};
use crate::json;
use crate::ledger::{Ledger, NodeId, PodId};
use crate::pod::PodInfo;
use crate::schedule::{filter_with_nominated, fit_error_message, pod_filter, Unschedulable};
use crate::Error;

/// Upstream `MinCandidateNodesPercentage` / `MinCandidateNodesAbsolute`.
const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

/// A PodDisruptionBudget as preemption reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pdb {
    pub namespace: String,
    /// `None`: null, empty or invalid selector, which matches no pod.
    pub selector: Option<LabelSelector>,
    pub disruptions_allowed: i64,
    /// `status.disruptedPods` names: already being evicted, not counted again.
    pub disrupted_pods: HashSet<String>,
}

impl Pdb {
    pub fn from_json(pdb: &Value) -> Result<Pdb, Error> {
        const KIND: &str = "PodDisruptionBudget";
        let meta = json::obj(KIND, "metadata", pdb.get("metadata"))?;
        let spec = json::obj(KIND, "spec", pdb.get("spec"))?;
        let status = json::obj(KIND, "status", pdb.get("status"))?;
        let selector = match spec.and_then(|s| s.get("selector")) {
            None | Some(Value::Null) => None,
            Some(v) => LabelSelector::from_label_selector(v)
                .ok()
                .filter(|s| !s.is_empty()),
        };
        let disrupted = json::obj(
            KIND,
            "status.disruptedPods",
            status.and_then(|s| s.get("disruptedPods")),
        )?
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
        Ok(Pdb {
            namespace: json::string(
                KIND,
                "metadata.namespace",
                meta.and_then(|m| m.get("namespace")),
            )?
            .unwrap_or("default")
            .to_string(),
            selector,
            disruptions_allowed: json::int(
                KIND,
                "status.disruptionsAllowed",
                status.and_then(|s| s.get("disruptionsAllowed")),
            )?
            .unwrap_or(0),
            disrupted_pods: disrupted,
        })
    }

    fn covers(&self, pod: &PodInfo) -> bool {
        !pod.labels.is_empty()
            && pod.namespace == self.namespace
            && self
                .selector
                .as_ref()
                .is_some_and(|s| s.matches(Some(&pod.labels)))
            && !self.disrupted_pods.contains(&pod.name)
    }
}

/// A pod to evict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub priority: i32,
}

/// The chosen node and the pods to evict there, most important first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preemption {
    pub node: String,
    pub victims: Vec<Victim>,
    /// Victims whose eviction violates a PodDisruptionBudget (upstream
    /// prefers nodes with fewer, but does not forbid them).
    pub pdb_violations: usize,
}

/// What preemption concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreemptOutcome {
    Preempt(Preemption),
    /// No preemption; `message` is the PostFilter part of the
    /// `FailedScheduling` message (`preemption: ...`).
    NotPossible {
        message: String,
    },
}

/// How the PostFilter message starts when the pod may not preempt at all.
const NOT_ELIGIBLE: &str = "preemption: not eligible";

impl PreemptOutcome {
    /// What upstream does with the pod's nomination after this outcome:
    /// `Preempt` nominates the pod to the chosen node (replacing any
    /// earlier nomination, see [`crate::Ledger::nominate`]); a search that
    /// found no node clears the nomination, which is stale; a pod not
    /// eligible to preempt (`preemptionPolicy: Never`, or lower-priority
    /// victims still terminating on its nominated node) keeps it, to wait
    /// for that node. True when the driver should call
    /// [`crate::Ledger::remove_nomination`] and clear
    /// `status.nominatedNodeName`.
    pub fn clears_nomination(&self) -> bool {
        match self {
            PreemptOutcome::Preempt(_) => false,
            PreemptOutcome::NotPossible { message } => !message.starts_with(NOT_ELIGIBLE),
        }
    }
}

/// Upstream `MoreImportantPod`: higher priority, then earlier start.
fn more_important(a: &PodInfo, b: &PodInfo) -> std::cmp::Ordering {
    b.priority
        .cmp(&a.priority)
        .then(a.start_time().cmp(&b.start_time()))
        .then_with(|| a.key.cmp(&b.key))
}

struct Candidate {
    node: NodeId,
    victims: Vec<PodId>,
    pdb_violations: usize,
}

/// PostFilter: finds a preemption for a pod [`crate::schedule`] could not
/// place, given that cycle's diagnosis. Victims always have a priority
/// strictly below the pod's; PodDisruptionBudgets are honoured as upstream
/// does (nodes needing fewer violations win; violating victims are
/// reprieved first). Candidate nodes are tried in node-list order and the
/// search stops, as upstream's, once max(10%, 100) candidates are found.
/// The dry runs filter with the pods nominated to each node, as
/// [`crate::schedule`] does.
///
/// After a [`PreemptOutcome::Preempt`], upstream evicts the victims,
/// nominates the pod to the node ([`Ledger::nominate`] and
/// `status.nominatedNodeName`) and clears the nominations of the
/// lower-priority pods nominated there ([`Ledger::nominated_below`]);
/// after a `NotPossible`, see [`PreemptOutcome::clears_nomination`].
pub fn preempt(
    ledger: &Ledger,
    pod: &PodInfo,
    diagnosis: &Unschedulable,
    pdbs: &[Pdb],
    config: &Config,
) -> PreemptOutcome {
    let not_possible = |m: String| PreemptOutcome::NotPossible {
        message: format!("preemption: {m}"),
    };
    if pod.preemption_never {
        return not_possible("not eligible due to preemptionPolicy=Never.".into());
    }
    // The node the pod is nominated to: the ledger's record, else the
    // pod's status.
    let nominated = ledger
        .nomination(&pod.key)
        .or(pod.nominated_node_name.as_deref());
    if let Some(nominated) = nominated {
        let unresolvable = diagnosis
            .status_of(nominated)
            .is_some_and(|s| s.code == Code::UnschedulableAndUnresolvable);
        if !unresolvable {
            if let Some(id) = ledger.node_id(nominated) {
                let terminating = ledger.node(id).pods.iter().any(|p| {
                    let info = &ledger.pod(*p).info;
                    info.priority < pod.priority && info.terminating_by_preemption
                });
                if terminating {
                    return not_possible(
                        "not eligible due to a terminating pod on the nominated node.".into(),
                    );
                }
            }
        }
    }
    let num_all = ledger.node_list.len();
    let mut statuses: Vec<NodeStatus> = Vec::new();
    let mut potential = Vec::new();
    for &id in &ledger.node_list {
        let unresolvable = diagnosis
            .status_of(&ledger.node(id).name)
            .is_some_and(|s| s.code == Code::UnschedulableAndUnresolvable);
        if unresolvable {
            statuses.push(NodeStatus::unresolvable(REASON_NOT_HELPFUL));
        } else {
            potential.push(id);
        }
    }
    if potential.is_empty() {
        return not_possible(fit_error_message(num_all, &statuses));
    }
    let pf = pod_filter(ledger, pod, config);
    let wanted = (potential.len() * MIN_CANDIDATE_NODES_PERCENTAGE / 100)
        .max(MIN_CANDIDATE_NODES_ABSOLUTE)
        .min(potential.len());
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut non_violating = 0;
    for &id in &potential {
        match select_victims(ledger, &pf, pod, id, pdbs) {
            Ok(c) => {
                if c.pdb_violations == 0 {
                    non_violating += 1;
                }
                candidates.push(c);
                if non_violating > 0 && candidates.len() >= wanted {
                    break;
                }
            }
            Err(st) => statuses.push(st),
        }
    }
    if candidates.is_empty() {
        return not_possible(fit_error_message(num_all, &statuses));
    }
    let best = pick_candidate(ledger, candidates);
    let victims = best
        .victims
        .iter()
        .map(|p| {
            let info = &ledger.pod(*p).info;
            Victim {
                key: info.key.clone(),
                namespace: info.namespace.clone(),
                name: info.name.clone(),
                priority: info.priority,
            }
        })
        .collect();
    PreemptOutcome::Preempt(Preemption {
        node: ledger.node(best.node).name.to_string(),
        victims,
        pdb_violations: best.pdb_violations,
    })
}

/// Upstream `SelectVictimsOnNode`: remove every lower-priority pod; if the
/// pod then fits, add them back most important first (PDB-violating ones
/// before the others) as long as it still fits; the rest are the victims.
fn select_victims(
    ledger: &Ledger,
    pf: &PodFilter<'_>,
    pod: &PodInfo,
    id: NodeId,
    pdbs: &[Pdb],
) -> Result<Candidate, NodeStatus> {
    let slot = ledger.node(id);
    let info = slot.info.as_deref().expect("listed nodes are known");
    let mut potential: Vec<PodId> = slot
        .pods
        .iter()
        .copied()
        .filter(|p| ledger.pod(*p).info.priority < pod.priority)
        .collect();
    if potential.is_empty() {
        return Err(NodeStatus::unresolvable(REASON_NO_VICTIMS));
    }
    let mut usage = slot.usage.clone();
    let mut local = PodFilter {
        pod,
        ports: pf.ports.clone(),
        ports_host_network: pf.ports_host_network.clone(),
        spread: pf.spread.clone(),
        affinity: pf.affinity.clone(),
    };
    let change =
        |local: &mut PodFilter<'_>, usage: &mut crate::ledger::Usage, p: PodId, delta: i64| {
            let ps = ledger.pod(p);
            if delta < 0 {
                usage.remove_pod(&ps.info, &ps.ports);
            } else {
                usage.add_pod(&ps.info, &ps.ports);
            }
            if let Some(s) = local.spread.as_mut() {
                s.update_with_pod(pod, &ps.info, info, delta);
            }
            if let Some(a) = local.affinity.as_mut() {
                a.update_with_pod(ledger, &ps.info, info, delta);
            }
        };
    for &p in &potential {
        change(&mut local, &mut usage, p, -1);
    }
    filter_with_nominated(ledger, &local, &slot.nominated, info, &usage)?;
    potential.sort_by(|a, b| more_important(&ledger.pod(*a).info, &ledger.pod(*b).info));
    // Split by PDB violation, as upstream `filterPodsWithPDBViolation`.
    let mut allowed: Vec<i64> = pdbs.iter().map(|p| p.disruptions_allowed).collect();
    let mut violating = Vec::new();
    let mut non_violating = Vec::new();
    for &p in &potential {
        let info = &ledger.pod(p).info;
        let mut violated = false;
        for (i, pdb) in pdbs.iter().enumerate() {
            if pdb.covers(info) {
                allowed[i] -= 1;
                if allowed[i] < 0 {
                    violated = true;
                }
            }
        }
        if violated {
            violating.push(p);
        } else {
            non_violating.push(p);
        }
    }
    let mut victims = Vec::new();
    let mut pdb_violations = 0;
    for (list, counts) in [(&violating, true), (&non_violating, false)] {
        for &p in list {
            change(&mut local, &mut usage, p, 1);
            if filter_with_nominated(ledger, &local, &slot.nominated, info, &usage).is_err() {
                change(&mut local, &mut usage, p, -1);
                victims.push(p);
                if counts {
                    pdb_violations += 1;
                }
            }
        }
    }
    victims.sort_by(|a, b| more_important(&ledger.pod(*a).info, &ledger.pod(*b).info));
    Ok(Candidate {
        node: id,
        victims,
        pdb_violations,
    })
}

/// Upstream `pickOneNodeForPreemption`: fewest PDB violations, lowest
/// highest-priority victim, lowest sum of priorities, fewest victims,
/// latest start of the highest-priority victims; then node name.
fn pick_candidate(ledger: &Ledger, mut candidates: Vec<Candidate>) -> Candidate {
    if let Some(i) = candidates.iter().position(|c| c.victims.is_empty()) {
        return candidates.swap_remove(i);
    }
    let info = |p: &PodId| &ledger.pod(*p).info;
    let key = |c: &Candidate| {
        let highest = info(&c.victims[0]).priority;
        let sum: i64 = c
            .victims
            .iter()
            .map(|p| i64::from(info(p).priority) + i64::from(i32::MAX) + 1)
            .sum();
        let earliest_top = c
            .victims
            .iter()
            .filter(|p| info(p).priority == highest)
            .map(|p| info(p).start_time())
            .min()
            .unwrap_or(i128::MAX);
        (
            c.pdb_violations,
            highest,
            sum,
            c.victims.len(),
            std::cmp::Reverse(earliest_top),
            ledger.node(c.node).name.clone(),
        )
    };
    candidates.sort_by_cached_key(key);
    candidates.swap_remove(0)
}
