//! Control loops that run inside `navarch server`, on the API server's
//! watch cache and verbs directly (no HTTP, no TLS, no JSON over the wire),
//! with the same admission and validation as every API client.
//!
//! * [`informer`]: list + watch of one kind from the watch cache, with a
//!   local store, resume after falling behind, relist after expiry.
//! * [`queue`]: the de-duplicating work queue with delayed keys and the
//!   per-key failure backoff every reconciler uses.
//! * [`events`]: the Event recorder (repeats folded into `count`).
//! * [`gc`]: the garbage collector (ownerReferences; background, orphan
//!   and foreground propagation).
//! * [`replicaset`]: ReplicaSets and ReplicationControllers (one
//!   reconciler), with upstream's expectations and slow-start creates.
//! * [`deployment`]: Deployments (RollingUpdate and Recreate over one
//!   ReplicaSet per template hash, revisions, status conditions).
//! * [`disruption`]: PodDisruptionBudget status (healthy, desired and
//!   expected pods, disruptions allowed) for the eviction subresource.
//! * [`namespace`]: namespace deletion (contents first) and the `default`
//!   ServiceAccount in every namespace.
//! * [`nodelifecycle`]: node health from Leases, the not-ready/unreachable
//!   taints with per-zone rate limits, and taint-based pod eviction.
//! * [`podgc`]: the pod garbage collector (terminated, orphaned,
//!   unscheduled terminating pods).
//! * [`leader`]: leader election on a Lease, guarding the controllers and
//!   the scheduler.
//! * [`job`]: Jobs (tracking with finalizers, completions, parallelism,
//!   Indexed, backoff limit and delay, deadline, suspend) and the
//!   TTL-after-finished controller.
//! * [`cronjob`]: CronJobs (our cron parser with time zones, missed
//!   schedules, concurrency policies, history limits).
//! * [`daemonset`], [`statefulset`]: DaemonSets (one pod per fitting
//!   node, pinned by node affinity) and StatefulSets (ordinal pods, ordered
//!   or parallel), with RollingUpdate/OnDelete over ControllerRevisions
//!   ([`revision`]).
//! * [`endpoints`], [`endpointslice`]: Endpoints and EndpointSlices for
//!   Services with a selector (one task, shared pod index; slices packed
//!   at most 100 endpoints each, updated in place).
//! * [`scheduler`]: the pod scheduler's driver around the pure
//!   `navarch-scheduler` placement and its ledger.

pub mod config;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod events;
pub mod gc;
pub mod informer;
pub mod job;
pub mod leader;
pub mod namespace;
pub mod nodelifecycle;
pub mod podgc;
pub mod queue;
pub mod replicaset;
pub mod revision;
pub mod scheduler;
pub mod statefulset;

pub use scheduler::{Profile, Scheduler, SchedulerOptions, DEFAULT_SCHEDULER_NAME};

/// A built-in `v1` resource type of `group` (`""` for the core group).
pub(crate) fn rt(group: &str, plural: &str) -> &'static navarch_api::ResourceType {
    navarch_api::registry::lookup(group, "v1", plural).expect("built-in kind served")
}

pub(crate) fn pods_rt() -> &'static navarch_api::ResourceType {
    rt("", "pods")
}

/// Whether a cached object is being deleted; only objects whose bytes
/// mention `deletionTimestamp` are parsed.
pub(crate) fn deleting(o: &navarch_apiserver::cache::CachedObject) -> bool {
    o.bytes.windows(17).any(|w| w == b"deletionTimestamp")
        && !o.value()["metadata"]["deletionTimestamp"].is_null()
}
