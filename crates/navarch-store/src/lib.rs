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

mod memory;
mod sqlite;
mod watch;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

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

/// What a watch event did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
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

/// The answer to [`Store::range`].
#[derive(Debug, Clone)]
pub struct RangeResult {
    /// The keys found, in key order.
    pub kvs: Vec<KeyValue>,
    /// The store revision the range was read at.
    pub revision: Revision,
    /// More keys follow the last one returned (limit reached).
    pub more: bool,
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `create` found the key present.
    #[error("key already exists")]
    AlreadyExists,
    /// `update` or `delete` found the key absent.
    #[error("key not found")]
    NotFound,
    /// Compare-and-swap failed; carries the current value.
    #[error("revision mismatch (current mod_revision {})", current.mod_revision)]
    Conflict { current: KeyValue },
    /// The requested revision was compacted away.
    #[error("required revision {requested} has been compacted (compacted at {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The requested revision is newer than the store's.
    #[error("required revision {requested} is a future revision (current {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    /// The store was closed (dropped) or its writer stopped.
    #[error("store is closed")]
    Closed,
    /// Anything else: an I/O or database error, or a watcher closed because
    /// it could not keep up (see [`WatchStream`]).
    #[error("storage backend error: {0}")]
    Backend(String),
}

/// The result type of every store call.
pub type Result<T> = std::result::Result<T, Error>;

/// A boxed, sendable future, as returned by the [`Store`] methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A stream of watch events; ends when the store closes. An event batch
/// shares one revision only for multi-key transactions (none yet).
///
/// Each watcher has a bounded channel ([`Options::watch_capacity`] events).
/// The store never waits for a watcher: when a live event finds the channel
/// full (one slot is kept for this), the watcher receives
/// `Err(Error::Backend("watcher too slow ..."))` as its last item and the
/// stream ends. The client resumes by watching again from the last revision
/// it received (or relists if that revision was compacted meanwhile).
pub type WatchStream = tokio::sync::mpsc::Receiver<Result<Event>>;

/// The store contract. Every write is durable when its future resolves.
pub trait Store: Send + Sync + 'static {
    /// Reads one key at the current revision.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>>>;

    /// Lists keys with `prefix`, in key order, starting after `start_after`
    /// (exclusive; empty = from the start), at most `limit` (0 = no limit), as
    /// of `revision` (None = current). A compacted revision is `Compacted`, one
    /// beyond the current revision is `FutureRevision`. The whole answer is
    /// one consistent snapshot; `RangeResult::revision` is the revision read.
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
    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        expected: Revision,
    ) -> BoxFuture<'a, Result<Revision>>;

    /// Deletes `key`, if `expected` is Some only when its `mod_revision` matches.
    /// Returns the revision of the delete and the deleted value (the key as it
    /// was, so its `mod_revision` is that of the last write before the delete).
    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<Revision>,
    ) -> BoxFuture<'a, Result<(Revision, KeyValue)>>;

    /// Watches keys with `prefix`, delivering every event with revision
    /// `> after` in order, then live events. `Compacted` if `after` is older
    /// than the retained history. `after` may be beyond the current revision
    /// (as in etcd): the stream then starts with the first event past it.
    fn watch<'a>(&'a self, prefix: &'a str, after: Revision) -> BoxFuture<'a, Result<WatchStream>>;

    /// The current revision (of the last acknowledged write).
    fn current_revision(&self) -> Revision;

    /// The oldest revision still available for `range` and `watch`
    /// (events with revision > this can be watched).
    fn compacted_revision(&self) -> Revision;

    /// Drops history at or below `revision`; current values stay. After
    /// `compact(r)`, `range` at `r` still works and `watch` from `after >= r`
    /// still works. A `revision` at or below the compacted revision is a
    /// no-op (`Ok`); one above the current revision is `FutureRevision`.
    fn compact<'a>(&'a self, revision: Revision) -> BoxFuture<'a, Result<()>>;
}

/// Default capacity of each watcher's channel, in events.
pub const DEFAULT_WATCH_CAPACITY: usize = 16 * 1024;

/// Tuning knobs shared by both backends.
#[derive(Debug, Clone)]
pub struct Options {
    /// Capacity of each watcher's channel, in events (at least 2). A watcher
    /// whose channel fills up is closed with an error; see [`WatchStream`].
    pub watch_capacity: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            watch_capacity: DEFAULT_WATCH_CAPACITY,
        }
    }
}

/// The lower end of a range: the prefix itself (inclusive) or `start_after`
/// (exclusive) when that lies at or beyond the prefix.
pub(crate) enum Lower<'a> {
    Inclusive(&'a str),
    Exclusive(&'a str),
}

pub(crate) fn lower_bound<'a>(prefix: &'a str, start_after: &'a str) -> Lower<'a> {
    if !start_after.is_empty() && start_after >= prefix {
        Lower::Exclusive(start_after)
    } else {
        Lower::Inclusive(prefix)
    }
}

/// The smallest byte string greater than every string starting with
/// `prefix`, or `None` when there is none (empty prefix).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
