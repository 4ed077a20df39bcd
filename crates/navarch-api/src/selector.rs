//! Label and field selectors (placeholder: being written; see helper brief).
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {}

impl LabelSelector {
    pub fn parse(_s: &str) -> Result<Self, SelectorError> {
        Ok(LabelSelector {})
    }
    pub fn is_empty(&self) -> bool {
        true
    }
    pub fn matches(&self, _labels: Option<&serde_json::Map<String, Value>>) -> bool {
        true
    }
    pub fn from_label_selector(_v: &Value) -> Result<Self, SelectorError> {
        Ok(LabelSelector {})
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOp {
    Eq,
    NotEq,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub op: FieldOp,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    pub fn parse(_s: &str) -> Result<Self, SelectorError> {
        Ok(FieldSelector::default())
    }
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
    pub fn matches(&self, _get: impl Fn(&str) -> Option<String>) -> bool {
        true
    }
    pub fn exact(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.op == FieldOp::Eq)
            .map(|r| r.value.as_str())
    }
}
