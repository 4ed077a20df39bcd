//! Node selectors (nodeSelector, node affinity terms), taints and
//! tolerations, and helpers around pod label selectors.

use std::collections::BTreeMap;

use navarch_api::selector::{LabelSelector, Operator, Requirement};
use serde_json::{Map, Value};

use crate::json;
use crate::Error;

/// Node labels: sorted, so iteration is deterministic.
pub type Labels = BTreeMap<String, String>;

/// One `NodeSelectorRequirement` operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeOp {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

/// A checked `NodeSelectorRequirement` on labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRequirement {
    pub key: String,
    pub op: NodeOp,
    pub values: Vec<String>,
    /// The integer for `Gt` / `Lt`.
    bound: i64,
}

impl NodeRequirement {
    /// Validates as upstream `nodeSelectorRequirementsAsSelector` does;
    /// `None` for an invalid requirement (its term then matches nothing).
    fn new(key: &str, op: &str, values: Vec<String>) -> Option<NodeRequirement> {
        let op = match op {
            "In" => NodeOp::In,
            "NotIn" => NodeOp::NotIn,
            "Exists" => NodeOp::Exists,
            "DoesNotExist" => NodeOp::DoesNotExist,
            "Gt" => NodeOp::Gt,
            "Lt" => NodeOp::Lt,
            _ => return None,
        };
        let mut bound = 0;
        match op {
            NodeOp::In | NodeOp::NotIn if values.is_empty() => return None,
            NodeOp::Exists | NodeOp::DoesNotExist if !values.is_empty() => return None,
            NodeOp::Gt | NodeOp::Lt => {
                let [v] = values.as_slice() else { return None };
                bound = v.parse().ok()?;
            }
            _ => {}
        }
        Some(NodeRequirement {
            key: key.to_string(),
            op,
            values,
            bound,
        })
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.key);
        match self.op {
            NodeOp::In => v.is_some_and(|v| self.values.iter().any(|x| x == v)),
            NodeOp::NotIn => v.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            NodeOp::Exists => v.is_some(),
            NodeOp::DoesNotExist => v.is_none(),
            NodeOp::Gt => v
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|n| n > self.bound),
            NodeOp::Lt => v
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|n| n < self.bound),
        }
    }
}

/// A `NodeSelectorTerm`: its label requirements and `metadata.name` field
/// requirements are ANDed. An empty or invalid term matches nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSelectorTerm {
    pub labels: Vec<NodeRequirement>,
    /// `(In?, name)`: `metadata.name In [name]` or `NotIn [name]`.
    pub fields: Vec<(bool, String)>,
    valid: bool,
}

impl NodeSelectorTerm {
    pub fn parse(kind: &'static str, path: &str, v: &Value) -> Result<NodeSelectorTerm, Error> {
        let o = json::obj(kind, path, Some(v))?;
        let mut term = NodeSelectorTerm {
            labels: Vec::new(),
            fields: Vec::new(),
            valid: true,
        };
        let Some(o) = o else {
            term.valid = false;
            return Ok(term);
        };
        let exprs_path = format!("{path}.matchExpressions");
        for (i, e) in json::arr(kind, &exprs_path, o.get("matchExpressions"))?
            .iter()
            .enumerate()
        {
            let p = format!("{exprs_path}[{i}]");
            let e = json::obj(kind, &p, Some(e))?;
            let Some(e) = e else { continue };
            let key = json::string(kind, &format!("{p}.key"), e.get("key"))?.unwrap_or("");
            let op = json::string(kind, &format!("{p}.operator"), e.get("operator"))?.unwrap_or("");
            let values = json::strings(kind, &format!("{p}.values"), e.get("values"))?;
            match NodeRequirement::new(key, op, values) {
                Some(r) => term.labels.push(r),
                None => term.valid = false,
            }
        }
        let fields_path = format!("{path}.matchFields");
        for (i, e) in json::arr(kind, &fields_path, o.get("matchFields"))?
            .iter()
            .enumerate()
        {
            let p = format!("{fields_path}[{i}]");
            let Some(e) = json::obj(kind, &p, Some(e))? else {
                continue;
            };
            let key = json::string(kind, &format!("{p}.key"), e.get("key"))?.unwrap_or("");
            let op = json::string(kind, &format!("{p}.operator"), e.get("operator"))?.unwrap_or("");
            let values = json::strings(kind, &format!("{p}.values"), e.get("values"))?;
            // Upstream: only metadata.name, In/NotIn, exactly one value.
            match (key, op, values.as_slice()) {
                ("metadata.name", "In", [v]) => term.fields.push((true, v.clone())),
                ("metadata.name", "NotIn", [v]) => term.fields.push((false, v.clone())),
                _ => term.valid = false,
            }
        }
        if term.labels.is_empty() && term.fields.is_empty() {
            term.valid = false;
        }
        Ok(term)
    }

    pub fn matches(&self, name: &str, labels: &Labels) -> bool {
        self.valid
            && self.labels.iter().all(|r| r.matches(labels))
            && self.fields.iter().all(|(is_in, v)| (v == name) == *is_in)
    }

    /// The node names this term pins with `metadata.name In`, if any
    /// (upstream's NodeAffinity PreFilter result).
    fn pinned_names(&self) -> Option<Vec<&str>> {
        let mut out: Option<Vec<&str>> = None;
        for (is_in, v) in &self.fields {
            if *is_in {
                out = Some(match out {
                    None => vec![v.as_str()],
                    Some(prev) => prev.into_iter().filter(|x| x == v).collect(),
                });
            }
        }
        out
    }
}

/// What a pod requires of its node: `spec.nodeSelector` and the required
/// node affinity terms (upstream `RequiredNodeAffinity`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequiredNodeAffinity {
    pub node_selector: Vec<(String, String)>,
    /// `None` when the pod has no required node affinity; terms are ORed.
    pub terms: Option<Vec<NodeSelectorTerm>>,
}

impl RequiredNodeAffinity {
    pub fn is_empty(&self) -> bool {
        self.node_selector.is_empty() && self.terms.is_none()
    }

    pub fn matches(&self, name: &str, labels: &Labels) -> bool {
        self.node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self
                .terms
                .as_ref()
                .is_none_or(|terms| terms.iter().any(|t| t.matches(name, labels)))
    }

    /// Upstream NodeAffinity PreFilter: when every term pins node names
    /// with `metadata.name In`, the union of those names (possibly empty,
    /// which upstream reports as "pod affinity terms conflict").
    pub fn pinned_node_names(&self) -> Option<Vec<String>> {
        let terms = self.terms.as_ref()?;
        if terms.is_empty() {
            return None;
        }
        let mut names: Vec<String> = Vec::new();
        for t in terms {
            let pinned = t.pinned_names()?;
            for n in pinned {
                if !names.iter().any(|x| x == n) {
                    names.push(n.to_string());
                }
            }
        }
        names.sort();
        Some(names)
    }
}

/// A preferred node affinity term with its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferredNodeTerm {
    pub weight: i64,
    pub term: NodeSelectorTerm,
}

/// A taint's effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
    Other(String),
}

impl Effect {
    fn parse(s: &str) -> Effect {
        match s {
            "NoSchedule" => Effect::NoSchedule,
            "PreferNoSchedule" => Effect::PreferNoSchedule,
            "NoExecute" => Effect::NoExecute,
            other => Effect::Other(other.to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: String,
    pub effect: Effect,
}

impl Taint {
    pub fn parse(kind: &'static str, path: &str, v: &Value) -> Result<Option<Taint>, Error> {
        let Some(o) = json::obj(kind, path, Some(v))? else {
            return Ok(None);
        };
        Ok(Some(Taint {
            key: json::string(kind, &format!("{path}.key"), o.get("key"))?
                .unwrap_or("")
                .to_string(),
            value: json::string(kind, &format!("{path}.value"), o.get("value"))?
                .unwrap_or("")
                .to_string(),
            effect: Effect::parse(
                json::string(kind, &format!("{path}.effect"), o.get("effect"))?.unwrap_or(""),
            ),
        }))
    }

    /// Filtering considers `NoSchedule` and `NoExecute` taints only.
    pub fn blocks_scheduling(&self) -> bool {
        matches!(self.effect, Effect::NoSchedule | Effect::NoExecute)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TolerationOp {
    Equal,
    Exists,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toleration {
    pub key: String,
    pub op: TolerationOp,
    pub value: String,
    /// `None` tolerates every effect.
    pub effect: Option<Effect>,
}

impl Toleration {
    pub fn parse(kind: &'static str, path: &str, v: &Value) -> Result<Option<Toleration>, Error> {
        let Some(o) = json::obj(kind, path, Some(v))? else {
            return Ok(None);
        };
        let op = match json::string(kind, &format!("{path}.operator"), o.get("operator"))?
            .unwrap_or("")
        {
            "" | "Equal" => TolerationOp::Equal,
            "Exists" => TolerationOp::Exists,
            _ => TolerationOp::Other,
        };
        let effect = json::string(kind, &format!("{path}.effect"), o.get("effect"))?.unwrap_or("");
        Ok(Some(Toleration {
            key: json::string(kind, &format!("{path}.key"), o.get("key"))?
                .unwrap_or("")
                .to_string(),
            op,
            value: json::string(kind, &format!("{path}.value"), o.get("value"))?
                .unwrap_or("")
                .to_string(),
            effect: (!effect.is_empty()).then(|| Effect::parse(effect)),
        }))
    }

    /// Upstream `Toleration.ToleratesTaint`.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.as_ref().is_some_and(|e| *e != taint.effect) {
            return false;
        }
        if !self.key.is_empty() && self.key != taint.key {
            return false;
        }
        match self.op {
            TolerationOp::Equal => self.value == taint.value,
            TolerationOp::Exists => true,
            TolerationOp::Other => false,
        }
    }
}

/// Upstream `TolerationsTolerateTaint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| t.tolerates(taint))
}

/// The first `NoSchedule`/`NoExecute` taint no toleration covers
/// (upstream `FindMatchingUntoleratedTaint` with the do-not-schedule filter).
pub fn first_untolerated<'a>(taints: &'a [Taint], tolerations: &[Toleration]) -> Option<&'a Taint> {
    taints
        .iter()
        .find(|t| t.blocks_scheduling() && !tolerated(tolerations, t))
}

/// Pod labels as the API selector type reads them.
pub type PodLabels = Map<String, Value>;

/// A label selector with extra `key In (value)` / `key NotIn (value)`
/// requirements taken from the pod's own labels (`matchLabelKeys`,
/// `mismatchLabelKeys`). Keys the pod lacks are skipped, as upstream does.
pub(crate) fn with_label_keys(
    kind: &'static str,
    path: &str,
    selector: LabelSelector,
    pod_labels: &PodLabels,
    match_keys: &[String],
    mismatch_keys: &[String],
) -> Result<LabelSelector, Error> {
    if selector.is_nothing() || (match_keys.is_empty() && mismatch_keys.is_empty()) {
        return Ok(selector);
    }
    let mut reqs: Vec<Requirement> = selector.requirements().to_vec();
    for (keys, op) in [(match_keys, Operator::In), (mismatch_keys, Operator::NotIn)] {
        for k in keys {
            if let Some(v) = pod_labels.get(k).and_then(Value::as_str) {
                let r = Requirement::new(k.clone(), op, vec![v.to_string()])
                    .map_err(|e| Error::invalid(kind, path, e.0))?;
                reqs.push(r);
            }
        }
    }
    Ok(LabelSelector::from_requirements(reqs))
}

/// Parses a `metav1.LabelSelector` where null selects nothing.
pub(crate) fn label_selector(
    kind: &'static str,
    path: &str,
    v: Option<&Value>,
) -> Result<LabelSelector, Error> {
    LabelSelector::from_label_selector_or_nothing(v.unwrap_or(&Value::Null))
        .map_err(|e| Error::invalid(kind, path, e.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn term(v: Value) -> NodeSelectorTerm {
        NodeSelectorTerm::parse("Pod", "t", &v).unwrap()
    }

    #[test]
    fn operators() {
        let node = labels(&[("zone", "a"), ("cores", "8")]);
        let cases = [
            (
                json!({"key": "zone", "operator": "In", "values": ["a", "b"]}),
                true,
            ),
            (
                json!({"key": "zone", "operator": "In", "values": ["b"]}),
                false,
            ),
            (
                json!({"key": "zone", "operator": "NotIn", "values": ["b"]}),
                true,
            ),
            (
                json!({"key": "missing", "operator": "NotIn", "values": ["b"]}),
                true,
            ),
            (json!({"key": "zone", "operator": "Exists"}), true),
            (json!({"key": "zone", "operator": "DoesNotExist"}), false),
            (json!({"key": "missing", "operator": "DoesNotExist"}), true),
            (
                json!({"key": "cores", "operator": "Gt", "values": ["4"]}),
                true,
            ),
            (
                json!({"key": "cores", "operator": "Gt", "values": ["8"]}),
                false,
            ),
            (
                json!({"key": "cores", "operator": "Lt", "values": ["16"]}),
                true,
            ),
            (
                json!({"key": "zone", "operator": "Gt", "values": ["1"]}),
                false,
            ),
            (
                json!({"key": "missing", "operator": "Lt", "values": ["1"]}),
                false,
            ),
            // Invalid requirements make the term match nothing.
            (
                json!({"key": "cores", "operator": "Gt", "values": ["x"]}),
                false,
            ),
            (
                json!({"key": "cores", "operator": "Gt", "values": ["1", "2"]}),
                false,
            ),
            (
                json!({"key": "zone", "operator": "In", "values": []}),
                false,
            ),
            (
                json!({"key": "zone", "operator": "Exists", "values": ["a"]}),
                false,
            ),
            (
                json!({"key": "zone", "operator": "Like", "values": ["a"]}),
                false,
            ),
        ];
        for (expr, want) in cases {
            let t = term(json!({"matchExpressions": [expr.clone()]}));
            assert_eq!(t.matches("n1", &node), want, "{expr}");
        }
    }

    #[test]
    fn fields_and_empty_terms() {
        let node = labels(&[("zone", "a")]);
        assert!(term(
            json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]})
        )
        .matches("n1", &node));
        assert!(!term(
            json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]})
        )
        .matches("n1", &node));
        assert!(term(json!({"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n2"]}]}))
            .matches("n1", &node));
        // Two values for a field requirement are an error upstream.
        assert!(!term(json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1", "n2"]}]}))
            .matches("n1", &node));
        assert!(!term(json!({})).matches("n1", &node));
        assert!(!term(json!({"matchExpressions": []})).matches("n1", &node));
    }

    #[test]
    fn pinned_names() {
        let pinned = |terms: Vec<Value>| {
            RequiredNodeAffinity {
                node_selector: vec![],
                terms: Some(terms.into_iter().map(term).collect()),
            }
            .pinned_node_names()
        };
        let f = |n: &str| json!({"key": "metadata.name", "operator": "In", "values": [n]});
        assert_eq!(
            pinned(vec![
                json!({"matchFields": [f("a")]}),
                json!({"matchFields": [f("b")]})
            ]),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            pinned(vec![json!({"matchFields": [f("a"), f("b")]})]),
            Some(vec![])
        );
        assert_eq!(
            pinned(vec![
                json!({"matchFields": [f("a")]}),
                json!({"matchExpressions": [{"key": "x", "operator": "Exists"}]})
            ]),
            None
        );
    }

    #[test]
    fn tolerations_match_docs_examples() {
        // kubectl taint nodes node1 key1=value1:NoSchedule
        let taint = Taint {
            key: "key1".into(),
            value: "value1".into(),
            effect: Effect::NoSchedule,
        };
        let tol = |v: Value| Toleration::parse("Pod", "t", &v).unwrap().unwrap();
        assert!(tol(
            json!({"key": "key1", "operator": "Equal", "value": "value1", "effect": "NoSchedule"})
        )
        .tolerates(&taint));
        assert!(
            tol(json!({"key": "key1", "operator": "Exists", "effect": "NoSchedule"}))
                .tolerates(&taint)
        );
        assert!(tol(json!({"operator": "Exists"})).tolerates(&taint));
        assert!(tol(json!({"key": "key1", "operator": "Exists"})).tolerates(&taint));
        assert!(tol(json!({"key": "key1", "value": "value1"})).tolerates(&taint));
        assert!(!tol(
            json!({"key": "key1", "operator": "Equal", "value": "value2", "effect": "NoSchedule"})
        )
        .tolerates(&taint));
        assert!(
            !tol(json!({"key": "key1", "operator": "Exists", "effect": "NoExecute"}))
                .tolerates(&taint)
        );
        assert!(!tol(json!({"key": "key2", "operator": "Exists"})).tolerates(&taint));
    }
}
