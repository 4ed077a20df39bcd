//! Kubernetes API semantics, free of IO: which kinds exist and how each is
//! defaulted, validated, printed as a table and selected; label and field
//! selectors; JSON, merge and strategic merge patches; the `Status` error type.
//!
//! Objects are handled as `serde_json::Value` and normalised through the
//! `k8s-openapi` types, so every stored object has the shape real clients expect.

pub mod error;
pub mod kinds;
pub mod meta;
pub mod openapi;
pub mod patch;
pub mod registry;
pub mod selector;

pub use error::{ApiError, Cause};
pub use registry::{ResourceType, Scope, Subresource, REGISTRY};
