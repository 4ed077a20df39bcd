//! `--scheduler-config`: the part of upstream's `KubeSchedulerConfiguration`
//! (`kubescheduler.config.k8s.io/v1`) that this scheduler implements.
//!
//! Read: `percentageOfNodesToScore` (global and per profile),
//! `podInitialBackoffSeconds`, `podMaxBackoffSeconds`,
//! `profiles[].schedulerName`, score plugin weights
//! (`profiles[].plugins.score.enabled[].weight`, and `disabled`, `*`
//! included), and `pluginConfig` args of NodeResourcesFit
//! (`scoringStrategy.type` LeastAllocated / MostAllocated), PodTopologySpread
//! (`defaultingType`, `defaultConstraints`) and InterPodAffinity
//! (`hardPodAffinityWeight`). Fields about running a separate process
//! (`clientConnection`, `leaderElection`, bind addresses, profiling,
//! `parallelism`) are accepted and have no effect here. Anything else is an
//! error that names the field, as upstream's strict decoding does.

use crate::scheduler::{Profile, SchedulerOptions, DEFAULT_SCHEDULER_NAME};
use anyhow::{anyhow, bail, Context, Result};
use navarch_scheduler::{
    Config, DefaultConstraint, DefaultSpreading, ScoringStrategy, WhenUnsatisfiable,
};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const API_VERSION: &str = "kubescheduler.config.k8s.io/v1";

/// Reads a `KubeSchedulerConfiguration` file.
pub fn load(path: &Path) -> Result<SchedulerOptions> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading scheduler config {}", path.display()))?;
    parse(&text).with_context(|| format!("scheduler config {}", path.display()))
}

/// Parses a `KubeSchedulerConfiguration` (YAML or JSON).
pub fn parse(text: &str) -> Result<SchedulerOptions> {
    let v: Value = serde_saphyr::from_str(text).map_err(|e| anyhow!("invalid YAML: {e}"))?;
    let Some(top) = v.as_object() else {
        bail!("expected a KubeSchedulerConfiguration object");
    };
    if v["apiVersion"] != API_VERSION || v["kind"] != "KubeSchedulerConfiguration" {
        bail!("expected apiVersion {API_VERSION} and kind KubeSchedulerConfiguration");
    }
    let mut opts = SchedulerOptions::default();
    let mut global_pct = None;
    for (k, val) in top {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "percentageOfNodesToScore" => global_pct = Some(percentage(k, val)?),
            "podInitialBackoffSeconds" => opts.initial_backoff = seconds(k, val)?,
            "podMaxBackoffSeconds" => opts.max_backoff = seconds(k, val)?,
            "clientConnection"
            | "leaderElection"
            | "healthzBindAddress"
            | "metricsBindAddress"
            | "enableProfiling"
            | "enableContentionProfiling"
            | "parallelism"
            | "delayCacheUntilActive"
            | "featureGates" => {}
            "profiles" => {}
            other => bail!("unknown or unsupported field {other:?}"),
        }
    }
    if opts.initial_backoff > opts.max_backoff {
        bail!("podInitialBackoffSeconds must not exceed podMaxBackoffSeconds");
    }
    if let Some(profiles) = v.get("profiles") {
        let Some(list) = profiles.as_array() else {
            bail!("profiles: expected a list");
        };
        if !list.is_empty() {
            opts.profiles = list
                .iter()
                .enumerate()
                .map(|(i, p)| profile(i, p, global_pct))
                .collect::<Result<_>>()?;
        }
    }
    let explicit = v["profiles"].as_array().is_some_and(|l| !l.is_empty());
    if let (false, Some(pct)) = (explicit, global_pct) {
        for p in &mut opts.profiles {
            p.config.percentage_of_nodes_to_score = pct;
        }
    }
    let mut names: Vec<&str> = opts.profiles.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        bail!("profiles: duplicate schedulerName {:?}", w[0]);
    }
    Ok(opts)
}

fn percentage(field: &str, v: &Value) -> Result<u32> {
    match v.as_u64() {
        Some(n) if n <= 100 => Ok(n as u32),
        _ => bail!("{field}: must be an integer from 0 to 100"),
    }
}

fn seconds(field: &str, v: &Value) -> Result<Duration> {
    match v.as_u64() {
        Some(n) if n > 0 => Ok(Duration::from_secs(n)),
        _ => bail!("{field}: must be a positive integer"),
    }
}

const SCORE_PLUGINS: [&str; 6] = [
    "TaintToleration",
    "NodeAffinity",
    "NodeResourcesFit",
    "PodTopologySpread",
    "InterPodAffinity",
    "NodeResourcesBalancedAllocation",
];

fn profile(i: usize, p: &Value, global_pct: Option<u32>) -> Result<Profile> {
    let at = |f: &str| format!("profiles[{i}].{f}");
    let Some(obj) = p.as_object() else {
        bail!("profiles[{i}]: expected an object");
    };
    let mut config = Config::default();
    if let Some(pct) = global_pct {
        config.percentage_of_nodes_to_score = pct;
    }
    let mut name = DEFAULT_SCHEDULER_NAME.to_string();
    for (k, v) in obj {
        match k.as_str() {
            "schedulerName" => {
                name = v
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| anyhow!("{}: must be a non-empty string", at(k)))?
                    .to_string()
            }
            "percentageOfNodesToScore" => {
                config.percentage_of_nodes_to_score = percentage(&at(k), v)?
            }
            "plugins" => plugins(&at(k), v, &mut config)?,
            "pluginConfig" => {
                let Some(list) = v.as_array() else {
                    bail!("{}: expected a list", at(k));
                };
                for (j, pc) in list.iter().enumerate() {
                    plugin_config(&format!("{}[{j}]", at(k)), pc, &mut config)?;
                }
            }
            other => bail!("{}: unknown or unsupported field", at(other)),
        }
    }
    Ok(Profile { name, config })
}

fn plugins(path: &str, v: &Value, config: &mut Config) -> Result<()> {
    let Some(obj) = v.as_object() else {
        bail!("{path}: expected an object");
    };
    for (point, set) in obj {
        if point != "score" {
            // Other extension points are not configurable here: only the
            // default set of filters exists.
            bail!("{path}.{point}: only the score plugins' weights can be configured");
        }
        if let Some(disabled) = set.get("disabled").and_then(Value::as_array) {
            for d in disabled {
                match d["name"].as_str() {
                    Some("*") => SCORE_PLUGINS
                        .iter()
                        .for_each(|n| *weight_of(config, n).expect("known") = 0),
                    Some(n) => {
                        *weight_of(config, n).ok_or_else(|| {
                            anyhow!("{path}.score.disabled: unknown score plugin {n:?}")
                        })? = 0
                    }
                    None => bail!("{path}.score.disabled: each entry needs a name"),
                }
            }
        }
        if let Some(enabled) = set.get("enabled").and_then(Value::as_array) {
            for e in enabled {
                let n = e["name"]
                    .as_str()
                    .ok_or_else(|| anyhow!("{path}.score.enabled: each entry needs a name"))?;
                let w = match &e["weight"] {
                    Value::Null => 1,
                    w => w
                        .as_i64()
                        .filter(|w| (1..=100).contains(w))
                        .ok_or_else(|| {
                            anyhow!("{path}.score.enabled[{n}].weight: must be 1 to 100")
                        })?,
                };
                *weight_of(config, n)
                    .ok_or_else(|| anyhow!("{path}.score.enabled: unknown score plugin {n:?}"))? =
                    w;
            }
        }
    }
    Ok(())
}

fn weight_of<'a>(config: &'a mut Config, plugin: &str) -> Option<&'a mut i64> {
    let w = &mut config.weights;
    Some(match plugin {
        "TaintToleration" => &mut w.taint_toleration,
        "NodeAffinity" => &mut w.node_affinity,
        "NodeResourcesFit" => &mut w.node_resources_fit,
        "PodTopologySpread" => &mut w.pod_topology_spread,
        "InterPodAffinity" => &mut w.inter_pod_affinity,
        "NodeResourcesBalancedAllocation" => &mut w.balanced_allocation,
        _ => return None,
    })
}

fn plugin_config(path: &str, pc: &Value, config: &mut Config) -> Result<()> {
    let name = pc["name"]
        .as_str()
        .ok_or_else(|| anyhow!("{path}.name: required"))?;
    let args = &pc["args"];
    match name {
        "NodeResourcesFit" => {
            if let Some(s) = args.get("scoringStrategy") {
                config.scoring_strategy = match s["type"].as_str() {
                    None | Some("LeastAllocated") => ScoringStrategy::LeastAllocated,
                    Some("MostAllocated") => ScoringStrategy::MostAllocated,
                    Some(other) => bail!(
                        "{path}.args.scoringStrategy.type: {other:?} is not supported (LeastAllocated, MostAllocated)"
                    ),
                };
            }
        }
        "PodTopologySpread" => {
            let defaulting = args["defaultingType"].as_str().unwrap_or("System");
            let constraints = args["defaultConstraints"].as_array();
            config.default_spreading = match defaulting {
                "System" => {
                    if constraints.is_some_and(|c| !c.is_empty()) {
                        bail!("{path}.args.defaultConstraints: must be empty with defaultingType System");
                    }
                    DefaultSpreading::System
                }
                "List" => {
                    let list = constraints
                        .map(|c| {
                            c.iter()
                                .enumerate()
                                .map(|(j, c)| {
                                    default_constraint(
                                        &format!("{path}.args.defaultConstraints[{j}]"),
                                        c,
                                    )
                                })
                                .collect::<Result<Vec<_>>>()
                        })
                        .transpose()?
                        .unwrap_or_default();
                    if list.is_empty() {
                        DefaultSpreading::Disabled
                    } else {
                        DefaultSpreading::List(list)
                    }
                }
                other => bail!("{path}.args.defaultingType: {other:?} is not System or List"),
            };
        }
        "InterPodAffinity" => {
            if let Some(w) = args.get("hardPodAffinityWeight") {
                config.hard_pod_affinity_weight = w
                    .as_i64()
                    .filter(|w| (0..=100).contains(w))
                    .ok_or_else(|| {
                        anyhow!("{path}.args.hardPodAffinityWeight: must be 0 to 100")
                    })?;
            }
        }
        // Their defaults are the only behaviour implemented.
        "DefaultPreemption" | "NodeResourcesBalancedAllocation" | "NodeAffinity" => {}
        other => bail!("{path}: plugin {other:?} has no configurable args here"),
    }
    Ok(())
}

fn default_constraint(path: &str, c: &Value) -> Result<DefaultConstraint> {
    let max_skew = c["maxSkew"]
        .as_i64()
        .filter(|n| *n > 0)
        .ok_or_else(|| anyhow!("{path}.maxSkew: must be a positive integer"))?;
    let topology_key = c["topologyKey"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| anyhow!("{path}.topologyKey: required"))?
        .to_string();
    let when_unsatisfiable = match c["whenUnsatisfiable"].as_str() {
        Some("DoNotSchedule") => WhenUnsatisfiable::DoNotSchedule,
        Some("ScheduleAnyway") => WhenUnsatisfiable::ScheduleAnyway,
        _ => bail!("{path}.whenUnsatisfiable: DoNotSchedule or ScheduleAnyway"),
    };
    if c.get("labelSelector").is_some() {
        bail!("{path}.labelSelector: not allowed in default constraints");
    }
    Ok(DefaultConstraint {
        max_skew,
        topology_key,
        when_unsatisfiable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_profiles() {
        let o =
            parse("apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n")
                .unwrap();
        assert_eq!(o, SchedulerOptions::default());
    }

    #[test]
    fn reads_profiles_weights_and_args() {
        let o = parse(
            r#"
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
percentageOfNodesToScore: 30
podMaxBackoffSeconds: 20
leaderElection: {leaderElect: false}
profiles:
- schedulerName: default-scheduler
- schedulerName: bin-packer
  percentageOfNodesToScore: 100
  plugins:
    score:
      disabled: [{name: "*"}]
      enabled: [{name: NodeResourcesFit, weight: 5}]
  pluginConfig:
  - name: NodeResourcesFit
    args: {scoringStrategy: {type: MostAllocated}}
  - name: PodTopologySpread
    args:
      defaultingType: List
      defaultConstraints: [{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}]
"#,
        )
        .unwrap();
        assert_eq!(o.max_backoff, Duration::from_secs(20));
        assert_eq!(o.profiles.len(), 2);
        assert_eq!(o.profiles[0].name, "default-scheduler");
        assert_eq!(o.profiles[0].config.percentage_of_nodes_to_score, 30);
        let b = &o.profiles[1];
        assert_eq!(b.name, "bin-packer");
        assert_eq!(b.config.percentage_of_nodes_to_score, 100);
        assert_eq!(b.config.scoring_strategy, ScoringStrategy::MostAllocated);
        assert_eq!(b.config.weights.node_resources_fit, 5);
        assert_eq!(b.config.weights.taint_toleration, 0);
        assert!(matches!(&b.config.default_spreading, DefaultSpreading::List(l) if l.len() == 1));
    }

    #[test]
    fn errors_name_the_field() {
        let bad = [
            ("percentageOfNodesToScore: 150", "percentageOfNodesToScore"),
            ("extenders: []", "extenders"),
            ("profiles: [{schedulerName: a}, {schedulerName: a}]", "duplicate"),
            ("profiles: [{plugins: {filter: {}}}]", "profiles[0].plugins.filter"),
            (
                "profiles: [{pluginConfig: [{name: NodeResourcesFit, args: {scoringStrategy: {type: RequestedToCapacityRatio}}}]}]",
                "RequestedToCapacityRatio",
            ),
            ("profiles: [{plugins: {score: {enabled: [{name: Nope}]}}}]", "Nope"),
        ];
        for (body, needle) in bad {
            let text = format!(
                "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n{body}\n"
            );
            let err = format!("{:#}", parse(&text).unwrap_err());
            assert!(err.contains(needle), "{body}: {err}");
        }
        assert!(parse("kind: Pod").is_err());
    }
}
