//! Resource vectors and how upstream sums a pod's requests.

use std::collections::BTreeMap;

/// Upstream's default cpu request for a container that sets none, used only
/// for scoring (`schedutil.DefaultMilliCPURequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Upstream's default memory request for scoring (`DefaultMemoryRequest`, 200Mi).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// A resource vector in the scheduler's units: milli-cpu, bytes, counts.
///
/// `pods` is a count of pod slots: a node's allocatable `pods`, one per pod
/// placed on it, or the slots an offer holds. `scalar` holds extended
/// resources (`example.com/gpu`), hugepages and other prefixed resources,
/// by their full name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub pods: i64,
    pub scalar: BTreeMap<String, i64>,
}

/// How upstream treats a resource name in a `ResourceList`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    Cpu,
    Memory,
    EphemeralStorage,
    Pods,
    /// Extended, hugepages-*, attachable-volumes-* or `*kubernetes.io/*`.
    Scalar,
    /// Native names the scheduler does not account (`storage`, unknown).
    Ignored,
}

/// Upstream `schedutil.IsScalarResourceName` and the native names.
pub fn resource_kind(name: &str) -> ResourceKind {
    match name {
        "cpu" => ResourceKind::Cpu,
        "memory" => ResourceKind::Memory,
        "ephemeral-storage" => ResourceKind::EphemeralStorage,
        "pods" => ResourceKind::Pods,
        _ if name.starts_with("hugepages-") || name.starts_with("attachable-volumes-") => {
            ResourceKind::Scalar
        }
        // Prefixed native resources (`kubernetes.io/...`) and extended
        // resources (any other name with a domain) are scalar; so are
        // `requests.`-prefixed names excluded by upstream's extended check.
        _ if name.contains('/') && !name.starts_with("requests.") => ResourceKind::Scalar,
        _ => ResourceKind::Ignored,
    }
}

impl Resources {
    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.pods == 0
            && self.scalar.values().all(|v| *v == 0)
    }

    /// Adds `other` into `self` (saturating).
    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_add(other.ephemeral_storage);
        self.pods = self.pods.saturating_add(other.pods);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = e.saturating_add(*v);
        }
    }

    /// Subtracts `other` from `self`, dropping scalar entries that reach 0.
    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(other.milli_cpu);
        self.memory = self.memory.saturating_sub(other.memory);
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_sub(other.ephemeral_storage);
        self.pods = self.pods.saturating_sub(other.pods);
        for (k, v) in &other.scalar {
            if let Some(e) = self.scalar.get_mut(k) {
                *e = e.saturating_sub(*v);
                if *e == 0 {
                    self.scalar.remove(k);
                }
            } else if *v != 0 {
                self.scalar.insert(k.clone(), v.saturating_neg());
            }
        }
    }

    /// Element-wise maximum (upstream `maxResourceList`).
    pub fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.pods = self.pods.max(other.pods);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(*v);
            *e = (*e).max(*v);
        }
    }

    /// The amount of a scalar resource (0 when absent).
    pub fn scalar(&self, name: &str) -> i64 {
        self.scalar.get(name).copied().unwrap_or(0)
    }

    /// True when every dimension of `self` is ≤ the one in `limit`.
    pub fn fits_within(&self, limit: &Resources) -> bool {
        self.milli_cpu <= limit.milli_cpu
            && self.memory <= limit.memory
            && self.ephemeral_storage <= limit.ephemeral_storage
            && self.pods <= limit.pods
            && self.scalar.iter().all(|(k, v)| *v <= limit.scalar(k))
    }
}

/// One container's requests as the scheduler sees them, plus whether cpu
/// and memory were *set* (upstream's non-zero defaults apply only to missing
/// entries, not to explicit zeros).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerRequests {
    pub requests: Resources,
    pub has_cpu: bool,
    pub has_memory: bool,
}

impl ContainerRequests {
    /// The requests with upstream's scoring defaults filled in for missing
    /// cpu / memory.
    fn non_zero(&self) -> Resources {
        let mut r = self.requests.clone();
        if !self.has_cpu {
            r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
        }
        if !self.has_memory {
            r.memory = DEFAULT_MEMORY_REQUEST;
        }
        r
    }
}

/// Upstream `resourcehelper.PodRequests` (no in-place resize, no pod-level
/// resources): the sum of the app containers and of the sidecars
/// (`restartPolicy: Always` init containers), or, if larger per resource,
/// the peak while each init container runs (a regular init container
/// alongside the sidecars started before it); then the overhead.
///
/// `init` is in spec order with a flag saying whether it is a sidecar.
pub fn pod_requests(
    containers: &[ContainerRequests],
    init: &[(ContainerRequests, bool)],
    overhead: &Resources,
    non_zero: bool,
) -> Resources {
    let req = |c: &ContainerRequests| {
        if non_zero {
            c.non_zero()
        } else {
            c.requests.clone()
        }
    };
    let mut total = Resources::default();
    for c in containers {
        total.add(&req(c));
    }
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for (c, sidecar) in init {
        let r = req(c);
        let in_use = if *sidecar {
            total.add(&r);
            sidecars.add(&r);
            sidecars.clone()
        } else {
            let mut t = r;
            t.add(&sidecars);
            t
        };
        init_peak.max_with(&in_use);
    }
    total.max_with(&init_peak);
    total.add(overhead);
    total.pods = 0;
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(cpu: Option<i64>, mem: Option<i64>) -> ContainerRequests {
        ContainerRequests {
            requests: Resources {
                milli_cpu: cpu.unwrap_or(0),
                memory: mem.unwrap_or(0),
                ..Default::default()
            },
            has_cpu: cpu.is_some(),
            has_memory: mem.is_some(),
        }
    }

    #[test]
    fn app_plus_init_max() {
        // Two app containers 100m+200m; one init container 500m: max(300, 500).
        let r = pod_requests(
            &[c(Some(100), Some(10)), c(Some(200), Some(10))],
            &[(c(Some(500), Some(5)), false)],
            &Resources::default(),
            false,
        );
        assert_eq!((r.milli_cpu, r.memory), (500, 20));
    }

    #[test]
    fn sidecars_add_to_app_and_to_later_inits() {
        // Upstream KEP-753 example: sidecar 100m, then init 200m, app 300m.
        // Init phase peak: 100+200 = 300; running: 300 + 100 = 400.
        let r = pod_requests(
            &[c(Some(300), None)],
            &[(c(Some(100), None), true), (c(Some(200), None), false)],
            &Resources::default(),
            false,
        );
        assert_eq!(r.milli_cpu, 400);
        // A large regular init container after the sidecar dominates.
        let r = pod_requests(
            &[c(Some(300), None)],
            &[(c(Some(100), None), true), (c(Some(1000), None), false)],
            &Resources::default(),
            false,
        );
        assert_eq!(r.milli_cpu, 1100);
        // An init container before the sidecar does not see it.
        let r = pod_requests(
            &[c(Some(300), None)],
            &[(c(Some(1000), None), false), (c(Some(100), None), true)],
            &Resources::default(),
            false,
        );
        assert_eq!(r.milli_cpu, 1000);
    }

    #[test]
    fn overhead_is_added() {
        let r = pod_requests(
            &[c(Some(100), Some(1))],
            &[],
            &Resources {
                milli_cpu: 250,
                memory: 120,
                ..Default::default()
            },
            false,
        );
        assert_eq!((r.milli_cpu, r.memory), (350, 121));
    }

    #[test]
    fn non_zero_defaults_only_for_missing() {
        let r = pod_requests(
            &[c(None, None), c(Some(0), Some(0))],
            &[],
            &Resources::default(),
            true,
        );
        assert_eq!((r.milli_cpu, r.memory), (100, DEFAULT_MEMORY_REQUEST));
        let r = pod_requests(&[c(None, None)], &[], &Resources::default(), false);
        assert!(r.is_zero());
    }

    #[test]
    fn kinds() {
        assert_eq!(resource_kind("cpu"), ResourceKind::Cpu);
        assert_eq!(resource_kind("nvidia.com/gpu"), ResourceKind::Scalar);
        assert_eq!(resource_kind("hugepages-2Mi"), ResourceKind::Scalar);
        assert_eq!(
            resource_kind("kubernetes.io/batch-cpu"),
            ResourceKind::Scalar
        );
        assert_eq!(resource_kind("storage"), ResourceKind::Ignored);
        assert_eq!(
            resource_kind("requests.example.com/x"),
            ResourceKind::Ignored
        );
    }
}
