//! The in-memory backend, for tests: a `BTreeMap` of current values and a log
//! of every event since the compacted revision.

use crate::watch::{History, Hub};
use crate::{
    lower_bound, BoxFuture, Error, Event, EventKind, KeyValue, Lower, Options, RangeResult, Result,
    Revision, Store, WatchStream,
};
use bytes::Bytes;
use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

/// An in-memory [`Store`]. Nothing is persisted; history grows until
/// [`Store::compact`] is called. Writes are applied under one lock, so every
/// call completes immediately.
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    hub: Arc<Hub>,
}

#[derive(Default)]
struct State {
    kv: BTreeMap<String, KeyValue>,
    /// Every event with revision > `compacted`, in revision order.
    history: VecDeque<Event>,
    revision: Revision,
    compacted: Revision,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store at revision 0 with default [`Options`].
    pub fn new() -> Self {
        Self::with_options(Options::default())
    }

    /// An empty store at revision 0.
    pub fn with_options(options: Options) -> Self {
        MemoryStore {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                hub: Arc::new(Hub::new(options.watch_capacity)),
            }),
        }
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        self.inner.hub.close();
    }
}

/// Up to `limit` (0 = all) entries of `map` within `prefix` after
/// `start_after`, and whether more follow.
fn page(
    map: &BTreeMap<String, KeyValue>,
    prefix: &str,
    start_after: &str,
    limit: usize,
) -> (Vec<KeyValue>, bool) {
    let lower = match lower_bound(prefix, start_after) {
        Lower::Inclusive(k) => Bound::Included(k),
        Lower::Exclusive(k) => Bound::Excluded(k),
    };
    let mut kvs = Vec::new();
    for (k, kv) in map.range::<str, _>((lower, Bound::Unbounded)) {
        if !k.starts_with(prefix) {
            break;
        }
        if limit != 0 && kvs.len() == limit {
            return (kvs, true);
        }
        kvs.push(kv.clone());
    }
    (kvs, false)
}

impl State {
    fn commit(&mut self, hub: &Hub, ev: Event) -> Revision {
        let rev = ev.kv.mod_revision;
        self.revision = rev;
        match ev.kind {
            EventKind::Put => {
                self.kv.insert(ev.kv.key.clone(), ev.kv.clone());
            }
            EventKind::Delete => {
                self.kv.remove(&ev.kv.key);
            }
        }
        // Published under the state lock, so watchers see revision order.
        hub.publish(std::slice::from_ref(&ev));
        self.history.push_back(ev);
        rev
    }

    fn range(
        &self,
        prefix: &str,
        start_after: &str,
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<RangeResult> {
        let rev = revision.unwrap_or(self.revision);
        if rev > self.revision {
            return Err(Error::FutureRevision {
                requested: rev,
                current: self.revision,
            });
        }
        if rev < self.compacted {
            return Err(Error::Compacted {
                requested: rev,
                compacted: self.compacted,
            });
        }
        let (kvs, more) = if rev == self.revision {
            page(&self.kv, prefix, start_after, limit)
        } else {
            // Undo, newest first, every event after `rev` on this prefix.
            let mut snapshot: BTreeMap<String, KeyValue> = self
                .kv
                .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for ev in self.history.iter().rev() {
                if ev.kv.mod_revision <= rev {
                    break;
                }
                if !ev.kv.key.starts_with(prefix) {
                    continue;
                }
                match &ev.prev {
                    Some(prev) => snapshot.insert(prev.key.clone(), prev.clone()),
                    None => snapshot.remove(&ev.kv.key),
                };
            }
            page(&snapshot, prefix, start_after, limit)
        };
        Ok(RangeResult {
            kvs,
            revision: rev,
            more,
        })
    }
}

impl History for Inner {
    fn events_after(
        self: Arc<Self>,
        prefix: String,
        after: Revision,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<Event>>> {
        Box::pin(async move {
            let state = self.state.lock();
            if after < state.compacted {
                return Err(Error::Compacted {
                    requested: after,
                    compacted: state.compacted,
                });
            }
            let start = state
                .history
                .partition_point(|e| e.kv.mod_revision <= after);
            Ok(state
                .history
                .range(start..)
                .filter(|e| e.kv.key.starts_with(prefix.as_str()))
                .take(limit)
                .cloned()
                .collect())
        })
    }
}

impl Store for MemoryStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>>> {
        Box::pin(async move { Ok(self.inner.state.lock().kv.get(key).cloned()) })
    }

    fn range<'a>(
        &'a self,
        prefix: &'a str,
        start_after: &'a str,
        limit: usize,
        revision: Option<Revision>,
    ) -> BoxFuture<'a, Result<RangeResult>> {
        Box::pin(async move {
            self.inner
                .state
                .lock()
                .range(prefix, start_after, limit, revision)
        })
    }

    fn create<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, Result<Revision>> {
        Box::pin(async move {
            let mut state = self.inner.state.lock();
            if state.kv.contains_key(key) {
                return Err(Error::AlreadyExists);
            }
            let rev = state.revision + 1;
            let kv = KeyValue {
                key: key.to_owned(),
                value,
                create_revision: rev,
                mod_revision: rev,
            };
            Ok(state.commit(
                &self.inner.hub,
                Event {
                    kind: EventKind::Put,
                    kv,
                    prev: None,
                },
            ))
        })
    }

    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        expected: Revision,
    ) -> BoxFuture<'a, Result<Revision>> {
        Box::pin(async move {
            let mut state = self.inner.state.lock();
            let prev = match state.kv.get(key) {
                None => return Err(Error::NotFound),
                Some(cur) if cur.mod_revision != expected => {
                    return Err(Error::Conflict {
                        current: cur.clone(),
                    })
                }
                Some(cur) => cur.clone(),
            };
            let rev = state.revision + 1;
            let kv = KeyValue {
                key: key.to_owned(),
                value,
                create_revision: prev.create_revision,
                mod_revision: rev,
            };
            Ok(state.commit(
                &self.inner.hub,
                Event {
                    kind: EventKind::Put,
                    kv,
                    prev: Some(prev),
                },
            ))
        })
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<Revision>,
    ) -> BoxFuture<'a, Result<(Revision, KeyValue)>> {
        Box::pin(async move {
            let mut state = self.inner.state.lock();
            let prev = match state.kv.get(key) {
                None => return Err(Error::NotFound),
                Some(cur) if expected.is_some_and(|e| e != cur.mod_revision) => {
                    return Err(Error::Conflict {
                        current: cur.clone(),
                    })
                }
                Some(cur) => cur.clone(),
            };
            let rev = state.revision + 1;
            let kv = KeyValue {
                mod_revision: rev,
                ..prev.clone()
            };
            state.commit(
                &self.inner.hub,
                Event {
                    kind: EventKind::Delete,
                    kv,
                    prev: Some(prev.clone()),
                },
            );
            Ok((rev, prev))
        })
    }

    fn watch<'a>(&'a self, prefix: &'a str, after: Revision) -> BoxFuture<'a, Result<WatchStream>> {
        Box::pin(async move {
            let compacted = self.compacted_revision();
            if after < compacted {
                return Err(Error::Compacted {
                    requested: after,
                    compacted,
                });
            }
            self.inner
                .hub
                .watch(self.inner.clone(), prefix.to_owned(), after)
        })
    }

    fn current_revision(&self) -> Revision {
        self.inner.state.lock().revision
    }

    fn compacted_revision(&self) -> Revision {
        self.inner.state.lock().compacted
    }

    fn compact<'a>(&'a self, revision: Revision) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut state = self.inner.state.lock();
            if revision > state.revision {
                return Err(Error::FutureRevision {
                    requested: revision,
                    current: state.revision,
                });
            }
            if revision <= state.compacted {
                return Ok(());
            }
            state.compacted = revision;
            let keep_from = state
                .history
                .partition_point(|e| e.kv.mod_revision <= revision);
            state.history.drain(..keep_from);
            Ok(())
        })
    }
}
