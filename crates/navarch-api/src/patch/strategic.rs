//! Strategic merge patch (placeholder body: being written; see helper brief).
use super::PatchError;
use crate::registry::ResourceType;
use serde_json::Value;

/// Patch metadata of one list (or map) field of one API type, as upstream's
/// Go struct tags `patchStrategy` / `patchMergeKey` and the OpenAPI
/// extensions `x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`,
/// `x-kubernetes-list-type`, `x-kubernetes-list-map-keys` say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldMeta {
    /// Schema name of the owning type, e.g. `io.k8s.api.core.v1.PodSpec`.
    pub owner: &'static str,
    /// JSON field name, e.g. `containers`.
    pub field: &'static str,
    /// `x-kubernetes-patch-strategy`: "merge", "retainKeys", "merge,retainKeys", "replace", or "" (none).
    pub patch_strategy: &'static str,
    /// `x-kubernetes-patch-merge-key`, or "".
    pub merge_key: &'static str,
    /// `x-kubernetes-list-type`: "map", "set", "atomic", or "" (none).
    pub list_type: &'static str,
    /// `x-kubernetes-list-map-keys` for list_type "map".
    pub list_map_keys: &'static [&'static str],
}

/// Every annotated field of the served kinds (filled in by the SMP work).
pub static FIELD_META: &[FieldMeta] = &[];

/// Looks up the metadata of `owner.field`.
pub fn field_meta(owner: &str, field: &str) -> Option<&'static FieldMeta> {
    FIELD_META.iter().find(|m| m.owner == owner && m.field == field)
}

pub fn strategic_merge_patch(doc: &Value, patch: &Value, _rt: &ResourceType) -> Result<Value, PatchError> {
    super::merge_patch(doc, patch)
}
