//! Scheduler profile settings (the subset of `KubeSchedulerConfiguration`
//! this crate implements).

use crate::pod::WhenUnsatisfiable;

/// NodeResourcesFit scoring strategy (cpu and memory, weight 1 each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScoringStrategy {
    /// Spread: prefer nodes with the most free cpu/memory (upstream default).
    #[default]
    LeastAllocated,
    /// Bin-pack: prefer the fullest nodes.
    MostAllocated,
}

/// A cluster-default topology spread constraint (upstream
/// `PodTopologySpreadArgs.defaultConstraints`), applied to pods that have
/// none, with the selector of the services / controllers that own them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultConstraint {
    pub max_skew: i64,
    pub topology_key: String,
    pub when_unsatisfiable: WhenUnsatisfiable,
}

/// `PodTopologySpreadArgs.defaultingType`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DefaultSpreading {
    /// Upstream's system defaults: hostname maxSkew 3 and zone maxSkew 5,
    /// both `ScheduleAnyway` (so they only score).
    #[default]
    System,
    /// Explicit defaults (`defaultingType: List`).
    List(Vec<DefaultConstraint>),
    /// No cluster defaults.
    Disabled,
}

impl DefaultSpreading {
    pub fn system_constraints() -> Vec<DefaultConstraint> {
        vec![
            DefaultConstraint {
                max_skew: 3,
                topology_key: "kubernetes.io/hostname".into(),
                when_unsatisfiable: WhenUnsatisfiable::ScheduleAnyway,
            },
            DefaultConstraint {
                max_skew: 5,
                topology_key: "topology.kubernetes.io/zone".into(),
                when_unsatisfiable: WhenUnsatisfiable::ScheduleAnyway,
            },
        ]
    }
}

/// Score plugin weights (default profile values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weights {
    pub taint_toleration: i64,
    pub node_affinity: i64,
    pub node_resources_fit: i64,
    pub pod_topology_spread: i64,
    pub inter_pod_affinity: i64,
    pub balanced_allocation: i64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            taint_toleration: 3,
            node_affinity: 2,
            node_resources_fit: 1,
            pod_topology_spread: 2,
            inter_pod_affinity: 2,
            balanced_allocation: 1,
        }
    }
}

/// Placement settings. `Config::default()` is upstream's default profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `percentageOfNodesToScore`: 0 is upstream's adaptive default
    /// (50% minus 1% per 125 nodes, at least 5%), and at least 100 feasible
    /// nodes are looked for either way.
    pub percentage_of_nodes_to_score: u32,
    pub scoring_strategy: ScoringStrategy,
    pub weights: Weights,
    pub default_spreading: DefaultSpreading,
    /// `InterPodAffinityArgs.hardPodAffinityWeight`.
    pub hard_pod_affinity_weight: i64,
    /// Threads for filtering; used only when at least
    /// `parallel_threshold` nodes are to be evaluated. 1 disables.
    pub parallelism: usize,
    pub parallel_threshold: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            percentage_of_nodes_to_score: 0,
            scoring_strategy: ScoringStrategy::LeastAllocated,
            weights: Weights::default(),
            default_spreading: DefaultSpreading::System,
            hard_pod_affinity_weight: 1,
            parallelism: 1,
            parallel_threshold: 1000,
        }
    }
}

/// Upstream `minFeasibleNodesToFind`.
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// Upstream `minFeasibleNodesPercentageToFind`.
pub const MIN_FEASIBLE_NODES_PERCENTAGE: u32 = 5;

impl Config {
    /// Upstream `numFeasibleNodesToFind`: how many feasible nodes to find
    /// before filtering stops.
    pub fn num_feasible_nodes_to_find(&self, num_all_nodes: usize) -> usize {
        if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND {
            return num_all_nodes;
        }
        let mut percentage = self.percentage_of_nodes_to_score;
        if percentage == 0 {
            percentage = 50u32
                .saturating_sub((num_all_nodes / 125) as u32)
                .max(MIN_FEASIBLE_NODES_PERCENTAGE);
        }
        let n = num_all_nodes * percentage.min(100) as usize / 100;
        n.max(MIN_FEASIBLE_NODES_TO_FIND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adaptive_sampling_as_upstream() {
        let c = Config::default();
        assert_eq!(c.num_feasible_nodes_to_find(50), 50);
        assert_eq!(c.num_feasible_nodes_to_find(100), 100); // 50% of 100 < 100
        assert_eq!(c.num_feasible_nodes_to_find(1000), 420); // 50 - 8 = 42%
        assert_eq!(c.num_feasible_nodes_to_find(5000), 500); // 50 - 40 = 10%
        assert_eq!(c.num_feasible_nodes_to_find(6000), 300); // 50 - 48 = 2% -> 5%
        assert_eq!(c.num_feasible_nodes_to_find(15000), 750);
        let all = Config {
            percentage_of_nodes_to_score: 100,
            ..Config::default()
        };
        assert_eq!(all.num_feasible_nodes_to_find(5000), 5000);
    }
}
