//! A revisioned key-value store with etcd v3 semantics.
//!
//! One global revision counter orders every write; it is the Kubernetes
//! `resourceVersion`. Each operation maps one to one onto an etcd v3 call:
//! `create` = Txn(If create_revision(key) = 0, Then Put), `update` =
//! Txn(If mod_revision(key) = expected, Then Put), `delete` = Txn(If
//! mod_revision = expected, Then DeleteRange), `range` = Range at a revision,
//! `watch` = Watch from a revision with prev_kv, `compact` = Compact.

use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;

/// A store revision (etcd's `revision`, Kubernetes' `resourceVersion`).
pub type Revision = i64;

/// One key at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created this key (since its last deletion).
    pub create_revision: Revision,
    /// Revision of the last write to this key.
    pub mod_revision: Revision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change, delivered by `watch` in revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// For `Put`: the new value. For `Delete`: key with the value it had,
    /// `mod_revision` = the revision of the delete.
    pub kv: KeyValue,
    /// The previous value, if the key existed before this event.
    pub prev: Option<KeyValue>,
}

#[derive(Debug, Clone)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// The store revision the range was read at.
    pub revision: Revision,
    /// More keys follow the last one returned (limit reached).
    pub more: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key already exists")]
    AlreadyExists,
    #[error("key not found")]
    NotFound,
    /// Compare-and-swap failed; carries the current value.
    #[error("revision mismatch (current mod_revision {})", current.mod_revision)]
    Conflict { current: KeyValue },
    /// The requested revision was compacted away.
    #[error("required revision {requested} has been compacted (compacted at {compacted})")]
    Compacted { requested: Revision, compacted: Revision },
    /// The requested revision is newer than the store's.
    #[error("required revision {requested} is a future revision (current {current})")]
    FutureRevision { requested: Revision, current: Revision },
    #[error("store is closed")]
    Closed,
    #[error("storage backend error: {0}")]
    Backend(String),
}

pub type Result<T> = std::result::Result<T, Error>;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A stream of watch events; ends when the store closes. An event batch
/// shares one revision only for multi-key transactions (none yet).
pub type WatchStream = tokio::sync::mpsc::Receiver<Result<Event>>;

/// The store contract. Every write is durable when its future resolves.
pub trait Store: Send + Sync + 'static {
    /// Reads one key at the current revision.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>>>;

    /// Lists keys with `prefix`, in key order, starting after `start_after`
    /// (exclusive; empty = from the start), at most `limit` (0 = no limit), as
    /// of `revision` (None = current). A compacted revision is `Compacted`.
    fn range<'a>(
        &'a self,
        prefix: &'a str,
        start_after: &'a str,
        limit: usize,
        revision: Option<Revision>,
    ) -> BoxFuture<'a, Result<RangeResult>>;

    /// Creates `key` if absent; returns the new revision.
    fn create<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, Result<Revision>>;

    /// Replaces `key` if its `mod_revision` equals `expected`; returns the new revision.
    /// `NotFound` if absent, `Conflict` on mismatch.
    fn update<'a>(&'a self, key: &'a str, value: Bytes, expected: Revision) -> BoxFuture<'a, Result<Revision>>;

    /// Deletes `key`, if `expected` is Some only when its `mod_revision` matches.
    /// Returns the revision of the delete and the deleted value.
    fn delete<'a>(&'a self, key: &'a str, expected: Option<Revision>) -> BoxFuture<'a, Result<(Revision, KeyValue)>>;

    /// Watches keys with `prefix`, delivering every event with revision
    /// `> after` in order, then live events. `Compacted` if `after` is older
    /// than the retained history.
    fn watch<'a>(&'a self, prefix: &'a str, after: Revision) -> BoxFuture<'a, Result<WatchStream>>;

    /// The current revision (of the last acknowledged write).
    fn current_revision(&self) -> Revision;

    /// The oldest revision still available for `range` and `watch`
    /// (events with revision > this can be watched).
    fn compacted_revision(&self) -> Revision;

    /// Drops history at or below `revision`; current values stay.
    fn compact<'a>(&'a self, revision: Revision) -> BoxFuture<'a, Result<()>>;
}
