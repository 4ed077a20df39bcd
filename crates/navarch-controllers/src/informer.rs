//! Informers on the API server's watch cache: in-process list + watch,
//! with client-go's guarantees and none of its HTTP.
//!
//! An [`Informer`] delivers, per kind, every object once ([`Change::Upsert`])
//! then every change, with a local store of the latest version of each
//! object, and [`Change::Synced`] after the initial list. When its cache
//! watcher is closed (it fell behind), it resumes from the last revision it
//! saw; when that revision is no longer in the cache's history, it relists
//! and reports the objects that vanished meanwhile as deleted. Consumers
//! are level-triggered: they are told *what* changed, never *why*.
//!
//! Consistency of a (re)list: the cache's revision `R` is read before the
//! list, so the list holds every change up to `R`; the watch then resumes
//! from `R`. Events the list already reflects are dropped by comparing
//! `mod_revision`s with the local store.

use navarch_api::ResourceType;
use navarch_apiserver::cache::{Cache, CacheError, CachedObject, EventType, Filter, WatchItem};
use navarch_store::Revision;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Events delivered to a consumer at once, at most.
const BATCH: usize = 512;

/// One change to one object.
#[derive(Debug, Clone)]
pub enum Change {
    /// The object was added or modified; this is its latest version.
    Upsert(Arc<CachedObject>),
    /// The object was deleted (its last known version).
    Delete(Arc<CachedObject>),
    /// The initial list has been delivered.
    Synced,
}

/// Changes to objects of one kind, as delivered to a consumer.
pub struct Batch {
    pub rt: &'static ResourceType,
    pub changes: Vec<Change>,
}

/// Informers: each follows one kind and sends [`Batch`]es to a channel,
/// which several informers may share.
pub struct Informer;

impl Informer {
    /// Starts following every object of `rt`. The task ends with
    /// `shutdown` or when the receiver is dropped.
    pub fn start(
        cache: Arc<Cache>,
        rt: &'static ResourceType,
        tx: mpsc::Sender<Batch>,
        shutdown: CancellationToken,
    ) {
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = run(cache, rt, tx) => {}
            }
        });
    }
}

async fn run(cache: Arc<Cache>, rt: &'static ResourceType, tx: mpsc::Sender<Batch>) {
    let send = |changes: Vec<Change>| tx.send(Batch { rt, changes });
    let kind = cache.kind(rt).clone();
    let mut known: HashMap<String, Arc<CachedObject>> = HashMap::new();
    let mut from: Option<Revision> = None;
    let mut synced = false;
    loop {
        let (mut rx, start) = match from {
            Some(r) => match kind.watch(Filter::default(), Some(r), true) {
                Ok(rx) => (rx, r),
                Err(CacheError::Expired { .. }) => {
                    tracing::info!(kind = rt.kind, revision = r, "informer relists");
                    from = None;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(kind = rt.kind, error = %e, "informer watch failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
            },
            None => {
                let r = cache.revision();
                let list = kind.list(&Filter::default(), 0);
                let mut batch = Vec::with_capacity(list.items.len().min(BATCH));
                let mut present: HashMap<String, Arc<CachedObject>> =
                    HashMap::with_capacity(list.items.len());
                for o in list.items {
                    let changed = known
                        .get(&o.key)
                        .is_none_or(|k| k.mod_revision != o.mod_revision);
                    if changed {
                        batch.push(Change::Upsert(o.clone()));
                    }
                    present.insert(o.key.clone(), o);
                    if batch.len() >= BATCH && send(std::mem::take(&mut batch)).await.is_err() {
                        return;
                    }
                }
                for (k, o) in known.drain() {
                    if !present.contains_key(&k) {
                        batch.push(Change::Delete(o));
                    }
                }
                known = present;
                if !synced {
                    batch.push(Change::Synced);
                    synced = true;
                }
                if !batch.is_empty() && send(batch).await.is_err() {
                    return;
                }
                from = Some(r);
                continue;
            }
        };
        let mut last = start;
        // Relay events in batches: whatever is ready, up to BATCH.
        while let Some(item) = rx.recv().await {
            let mut batch = Vec::new();
            let mut next = Some(item);
            while let Some(item) = next.take() {
                match item {
                    WatchItem::Bookmark(r) => last = last.max(r),
                    WatchItem::Event(ty, o) => {
                        last = last.max(o.mod_revision);
                        if let Some(c) = apply(&mut known, ty, o) {
                            batch.push(c);
                        }
                    }
                }
                if batch.len() < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() && send(batch).await.is_err() {
                return;
            }
        }
        // The cache closed this watcher (it fell behind): resume.
        tracing::debug!(
            kind = rt.kind,
            revision = last,
            "informer resumes its watch"
        );
        from = Some(last);
    }
}

/// Folds one watch event into the local store; `None` when the store
/// already reflects it.
fn apply(
    known: &mut HashMap<String, Arc<CachedObject>>,
    ty: EventType,
    o: Arc<CachedObject>,
) -> Option<Change> {
    if let Some(k) = known.get(&o.key) {
        if k.mod_revision >= o.mod_revision {
            return None;
        }
    }
    match ty {
        EventType::Deleted => known.remove(&o.key).map(|_| Change::Delete(o)),
        EventType::Added | EventType::Modified => {
            known.insert(o.key.clone(), o.clone());
            Some(Change::Upsert(o))
        }
    }
}
