//! Pure pod placement for Navarch: one cluster ledger, upstream
//! kube-scheduler's filters, scores and preemption, no IO.
//!
//! # The ledger
//!
//! [`Ledger`] is the one record of what each node has and what is placed on
//! it, shared by the pod scheduler and (later) the Mesos offer allocator:
//! nodes (labels, taints, cordon, allocatable cpu / memory /
//! ephemeral-storage / pods / extended resources, and whether pods share
//! the node's network — label `navarch.io/host-network-pods=true`, the
//! process runtime, where every `containerPort` is a host port), the pods
//! bound to them (requests as upstream sums them, init containers, sidecars
//! and overhead included; host ports; labels and affinity terms for
//! inter-pod affinity, spreading and preemption), **holds**: resources
//! held by outstanding offers, which count as used, and **nominations**:
//! pending pods that preemption made room for on a node
//! (`status.nominatedNodeName`), whose room less important pods may not
//! take ([`Ledger::nominate`]).
//!
//! It is fed one watch event at a time — [`Ledger::add_node`],
//! [`Ledger::update_node`], [`Ledger::remove_node`], [`Ledger::add_pod`] /
//! [`Ledger::update_pod`] ([`Ledger::apply_pod`]), [`Ledger::remove_pod`],
//! [`Ledger::add_hold`], [`Ledger::remove_hold`],
//! [`Ledger::set_namespace`], [`Ledger::nominate`],
//! [`Ledger::remove_nomination`] — each O(1) amortised in the number of
//! nodes and pods (O(labels + ports) of the object, O(nominations on the
//! node) for nominations), never a rebuild.
//!
//! # Placement
//!
//! Placement is a pure function of a snapshot, and a borrowed `&Ledger` is
//! that snapshot:
//!
//! * [`schedule`]`(&ledger, &pod, &config, start_index)` returns a
//!   [`Placement`] or an [`Unschedulable`] diagnosis whose `message` is
//!   upstream's (`0/3 nodes are available: 1 Insufficient memory, 2
//!   node(s) didn't match Pod's node affinity/selector.`).
//! * [`preempt`]`(&ledger, &pod, &diagnosis, &pdbs, &config)` returns the
//!   node and victims, or the `preemption: ...` half of the message.
//! * [`Ledger::check_fit`] is the commit-time re-check (optimistic
//!   concurrency, as Omega and Nomad do it): a stale decision is rejected,
//!   never applied. [`Ledger::reserve`] re-checks and places the pod as
//!   *assumed*; [`Ledger::forget`] undoes that if binding fails; the bound
//!   pod's watch event confirms it. [`Ledger::add_hold`] applies the same
//!   check to offers, so nothing is ever overbooked.
//! * [`queue_order`] / [`ActiveQueue`]: upstream's PrioritySort order.
//! * Nominated pods, as upstream: [`Ledger::nominate`] records that
//!   preemption freed room on a node for a pod. Filtering a node for any
//!   other pod whose priority is not above a nominated pod's runs twice,
//!   with the nominated pods counted as running there (requests, slots,
//!   ports, labels and terms) and without them, and must pass both
//!   (`RunFilterPluginsWithNominatedPods`); [`Ledger::check_fit`] and
//!   [`Ledger::reserve`] hold the room the same way, and preemption's dry
//!   runs too. The nominated pod itself ignores its own nomination, and
//!   [`schedule`] tries its nominated node first (PreferNominatedNode).
//!   Placing the pod (a reserve or its bound event) or deleting it drops
//!   the nomination; pod events follow `status.nominatedNodeName`
//!   ([`Ledger::apply_pod`]).
//!
//! A driver loop looks like:
//!
//! ```
//! use std::sync::Arc;
//! use navarch_scheduler::{schedule, preempt, Check, Config, Ledger, PodInfo, PreemptOutcome};
//! use serde_json::json;
//!
//! let mut ledger = Ledger::new();
//! ledger.add_node(&json!({"metadata": {"name": "n1"},
//!     "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}})).unwrap();
//! let pod = Arc::new(PodInfo::from_json(&json!({
//!     "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
//!     "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "500m"}}}]}})).unwrap());
//! let config = Config::default();
//! let mut start = 0;
//! match schedule(&ledger, &pod, &config, start) {
//!     Ok(p) => {
//!         start = p.next_start_index;
//!         ledger.reserve(&p.node, pod.clone(), Check::Resources).unwrap(); // then bind via the API
//!     }
//!     Err(u) => {
//!         let outcome = preempt(&ledger, &pod, &u, &[], &config);
//!         if outcome.clears_nomination() {
//!             ledger.remove_nomination(&pod.key); // and clear the status
//!         }
//!         let post = match outcome {
//!             PreemptOutcome::Preempt(p) => {
//!                 // Evict p.victims through the API, then keep the room:
//!                 for key in ledger.nominated_below(&p.node, pod.priority) {
//!                     ledger.remove_nomination(&key); // they may not fit now
//!                 }
//!                 ledger.nominate(&p.node, pod.clone()); // and set the status
//!                 None
//!             }
//!             PreemptOutcome::NotPossible { message } => Some(message),
//!         };
//!         let _event = u.failed_scheduling_message(post.as_deref());
//!     }
//! }
//! # let _ = start;
//! ```
//!
//! # Upstream behaviour implemented
//!
//! Filters, in the default profile's order: NodeUnschedulable, NodeName,
//! TaintToleration (NoSchedule, NoExecute), NodeAffinity (nodeSelector,
//! required terms ORed; In, NotIn, Exists, DoesNotExist, Gt, Lt;
//! `metadata.name` fields, with the PreFilter narrowing to pinned nodes),
//! NodePorts, NodeResourcesFit (requests over allocatable is unresolvable,
//! as upstream 1.33), PodTopologySpread (DoNotSchedule, maxSkew, minDomains,
//! nodeAffinityPolicy / nodeTaintsPolicy, matchLabelKeys) and
//! InterPodAffinity (required affinity with the first-pod exception,
//! anti-affinity, existing pods' anti-affinity; namespaces and
//! namespaceSelector against labels given by [`Ledger::set_namespace`];
//! matchLabelKeys / mismatchLabelKeys are merged as the API server does).
//!
//! Scores with default weights: TaintToleration PreferNoSchedule (3),
//! NodeAffinity preferred (2), NodeResourcesFit LeastAllocated or
//! MostAllocated (1), PodTopologySpread ScheduleAnyway and cluster
//! defaults (2), InterPodAffinity preferred (2),
//! NodeResourcesBalancedAllocation (1), each normalised to 0..100 as
//! upstream. ImageLocality is not implemented: the ledger tracks no images.
//! Upstream's non-zero requests (100m cpu, 200Mi memory for containers
//! that set none) are used for scoring only; fit counts missing requests
//! as zero.
//!
//! `tests/docs_examples.rs` holds one table per filter and score, each case
//! reproducing behaviour the Kubernetes documentation describes;
//! `tests/placement.rs` the scenarios, `tests/nominations.rs` nominated
//! pods, `tests/props.rs` the invariants.
//!
//! Sampling: upstream `percentageOfNodesToScore` (adaptive by default: 50%
//! minus 1% per 125 nodes, at least 5%, at least 100 nodes), starting where
//! the previous cycle stopped. Ties between equal totals go to the node
//! with the lowest hash of (pod key, node name), then name: deterministic
//! and still spreading identical pods.
//!
//! # Complexity
//!
//! With N nodes, P pods, and k the pods or terms a selector can match:
//! * watch events: O(1) amortised each in N and P (slabs, hash maps,
//!   swap-removal), O(labels + ports + affinity terms) of the object, plus
//!   the aggregates' upkeep below (O(cached selector aggregates) per pod
//!   event, bounded by the cache size);
//! * a cycle for a plain pod: O(nodes evaluated) filters + O(feasible)
//!   scores, nothing proportional to P;
//! * nominations cost only on nodes that have them: such a node is
//!   filtered twice, with a copy of its usage (and of the cycle's spread /
//!   inter-pod affinity state, when the pod has any) plus the nominated
//!   pods that count, O(those pods × their terms); nodes without
//!   nominations pay one emptiness check;
//! * aggregates, kept current by every event (see `aggregate.rs`):
//!   - selector aggregates: for each (namespaces or namespaceSelector,
//!     label selector, topology key) a cycle asked about, the number of
//!     matching placed pods per topology value. Built once from the label
//!     index `namespace -> key -> value -> pods` (the narrowest posting list
//!     among the selector's `=`/`in`/`exists` requirements), O(k); cached
//!     (at most 256, least recently used dropped); each pod event then
//!     costs O(cached aggregates), a node label change O(its pods ×
//!     aggregates), a namespace label change drops those with a
//!     namespaceSelector;
//!   - term signatures: placed pods' affinity terms grouped by identical
//!     (kind, weight, term, namespaces defaulted from the owning pod), each
//!     with counts per topology value, O(terms of the pod) per pod event,
//!     and indexed by what their selector requires (each filed under one
//!     `=`/`in`/`exists` requirement) so the signatures that may select an
//!     incoming pod are found from its labels;
//! * inter-pod affinity: the incoming pod's terms read selector aggregates
//!   (O(1) after the first cycle that asks); placed pods' terms are read
//!   per matching signature, O(distinct signatures that may select the
//!   pod), not per pod carrying them. A node is then checked and scored in
//!   O(terms + matching signatures). Exceptions that count per cycle as
//!   before, O(k): several required affinity terms (pods must match all of
//!   them), and a pod the ledger already holds (the re-check must not count
//!   it against itself);
//! * topology spreading (`DoNotSchedule`): when every constraint has the
//!   same topology key and the inclusion policies admit every node with it,
//!   the eligible domains come from the node-label index in O(1) and the
//!   counts are the selector aggregate, shared, not copied: O(1) per cycle
//!   and O(constraints) per node, the global minimum from an ordered
//!   multiset in O(log domains) (preemption dry runs copy the counts on
//!   write). Otherwise one O(N) pass finds the eligible domains and
//!   matching pods are counted from the label index, O(k). `ScheduleAnyway`
//!   scoring still counts from the label index, O(k), over the feasible
//!   nodes;
//! * never O(N × P) per pod;
//! * preemption: O(potential nodes × (victims on a node) × filters).
//!
//! Measured on this crate's `tests/bench.rs` (release, 2 shared cores):
//! 5,000 nodes × 10,000 SchedulingBasic pods (100m / 500Mi) through
//! schedule + reserve at about 33,000 pods/s; the same with per-app
//! hostname anti-affinity and zone spreading (maxSkew 1) at about 2,900
//! pods/s (there most cycles must filter every node to find enough
//! feasible ones). Upstream's TopologySpreading shape (5,000 plain pods,
//! then 10,000 pods spread over 3 zones, maxSkew 5) about 10,000 pods/s
//! measured (about 370 before the aggregates);
//! SchedulingPreferredPodAffinity (5,000 + 5,000 pods, all labelled
//! `color: red` with one preferred hostname affinity term to that label)
//! about 11,000 pods/s (about 150 before). Threaded filtering
//! (`Config::parallelism`) did not pay on that machine: it spawns scoped
//! threads per cycle, so it is off by default.
//!
//! # Not implemented
//!
//! Volumes (VolumeBinding, VolumeZone, limits), DRA, ImageLocality,
//! pod-level resources and in-place resize, extenders, scheduling gates
//! (the queue's job: check [`PodInfo::scheduling_gated`]), offers as
//! preemption victims, offers yielding to nominations (holds neither see
//! nor block nominated pods' room: [`Ledger::add_hold`] checks placed pods
//! and holds only).

mod affinity;
mod aggregate;
mod config;
mod filter;
mod json;
mod ledger;
mod node;
mod pod;
mod ports;
mod preempt;
pub mod quantity;
mod queue;
mod resources;
mod schedule;
mod score;
mod selector;
mod spread;

pub use config::{Config, DefaultConstraint, DefaultSpreading, ScoringStrategy, Weights};
pub use filter::{Code, NodeStatus};
pub use ledger::{Hold, Ledger, PodChange, Rejected};
pub use node::NodeInfo;
pub use pod::{
    AffinityTerm, HostPort, InclusionPolicy, PodAffinity, PodInfo, PortSpec, SpreadConstraint,
    WeightedAffinityTerm, WhenUnsatisfiable, HOST_NETWORK_NODE_LABEL,
};
pub use preempt::{preempt, Pdb, PreemptOutcome, Preemption, Victim};
pub use queue::{queue_order, ActiveQueue};
pub use resources::{Resources, DEFAULT_MEMORY_REQUEST, DEFAULT_MILLI_CPU_REQUEST};
pub use schedule::{fit_error_message, schedule, Check, Placement, Unschedulable};
pub use selector::{
    Effect, Labels, NodeSelectorTerm, PreferredNodeTerm, RequiredNodeAffinity, Taint, Toleration,
};

/// Errors reading objects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid {kind} field {field}: {message}")]
    Invalid {
        kind: &'static str,
        field: String,
        message: String,
    },
    #[error("invalid {kind} field {field}")]
    Quantity {
        kind: &'static str,
        field: String,
        #[source]
        source: quantity::QuantityError,
    },
}

impl Error {
    pub(crate) fn invalid(kind: &'static str, field: &str, message: impl Into<String>) -> Error {
        Error::Invalid {
            kind,
            field: field.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn quantity(
        kind: &'static str,
        field: &str,
        source: quantity::QuantityError,
    ) -> Error {
        Error::Quantity {
            kind,
            field: field.to_string(),
            source,
        }
    }

    pub(crate) fn with_kind(self, kind: &'static str) -> Error {
        match self {
            Error::Invalid { field, message, .. } => Error::Invalid {
                kind,
                field,
                message,
            },
            Error::Quantity { field, source, .. } => Error::Quantity {
                kind,
                field,
                source,
            },
        }
    }
}
