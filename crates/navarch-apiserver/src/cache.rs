//! The watch cache: every object in memory, fed by one store watch, serving
//! lists and watches without touching the store.
//!
//! Invariants:
//! - `revision()` is the store revision up to which every event has been
//!   applied; every store revision produces exactly one event, so waiting for
//!   `revision() >= store.current_revision()` gives read-your-writes.
//! - Per kind, `history` holds every event with revision > `history_start`,
//!   so a watch from any revision >= `history_start` misses nothing; older
//!   revisions get 410 Expired and the client relists.
//! - A watcher's events arrive in revision order, through one bounded
//!   channel; a watcher that falls behind is closed (it resumes from its last
//!   revision), never the dispatcher blocked.

use bytes::Bytes;
use navarch_api::selector::{FieldSelector, LabelSelector};
use navarch_api::ResourceType;
use navarch_store::{EventKind, KeyValue, Revision, Store};
use parking_lot::RwLock;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Events kept per kind for resuming watches.
const HISTORY_PER_KIND: usize = 100_000;
/// Buffer of one watcher before it is considered too slow and closed.
const WATCHER_BUFFER: usize = 10_000;

/// One object as served: JSON bytes with `metadata.resourceVersion` set, plus
/// what selectors need, extracted once.
/// Decoded objects kept for [`CachedObject::shared_value`].
pub const RECENT_DECODES: usize = 4096;

/// Recently decoded objects, by address (each entry holds its object).
#[derive(Default)]
struct Recent {
    map: HashMap<usize, (Arc<CachedObject>, Arc<Value>)>,
    order: VecDeque<usize>,
}

static RECENT: std::sync::LazyLock<parking_lot::Mutex<Recent>> =
    std::sync::LazyLock::new(Default::default);

#[derive(Debug)]
pub struct CachedObject {
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub mod_revision: Revision,
    pub bytes: Bytes,
    pub labels: Option<serde_json::Map<String, Value>>,
    /// Values of the kind's supported field labels (for field selectors).
    pub fields: Vec<(&'static str, String)>,
}

impl CachedObject {
    /// Decodes a store value and prepares it for serving.
    pub fn from_kv(rt: &'static ResourceType, kv: &KeyValue) -> Option<CachedObject> {
        let mut v: Value = serde_json::from_slice(&kv.value).ok()?;
        Some(Self::from_value(rt, &kv.key, kv.mod_revision, &mut v))
    }

    pub fn from_value(
        rt: &'static ResourceType,
        key: &str,
        rev: Revision,
        v: &mut Value,
    ) -> CachedObject {
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
        }
        let fields = rt
            .ops
            .fields
            .iter()
            .map(|f| (*f, (rt.ops.field)(v, f).unwrap_or_default()))
            .collect();
        CachedObject {
            key: key.to_string(),
            namespace: v["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            name: v["metadata"]["name"].as_str().unwrap_or("").to_string(),
            mod_revision: rev,
            labels: v["metadata"]["labels"].as_object().cloned(),
            fields,
            bytes: Bytes::from(serde_json::to_vec(v).unwrap_or_default()),
        }
    }

    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }

    /// The decoded object, shared: every in-process consumer of one event
    /// (a dozen controllers' informers see each pod change) decodes it
    /// once. Recent decodes are kept, [`RECENT_DECODES`] at most, so a
    /// consumer that lags further behind decodes again.
    pub fn shared_value(self: &Arc<Self>) -> Arc<Value> {
        let id = Arc::as_ptr(self) as usize;
        if let Some((_, v)) = RECENT.lock().map.get(&id) {
            // The table holds the object, so its address is not reused
            // by another while the entry exists.
            return v.clone();
        }
        let v = Arc::new(self.value());
        let mut recent = RECENT.lock();
        if recent.map.insert(id, (self.clone(), v.clone())).is_none() {
            recent.order.push_back(id);
            if recent.order.len() > RECENT_DECODES {
                if let Some(old) = recent.order.pop_front() {
                    recent.map.remove(&old);
                }
            }
        }
        v
    }

    /// The value of a field label on this object.
    pub fn field(&self, label: &str) -> Option<String> {
        match label {
            "metadata.name" => Some(self.name.clone()),
            "metadata.namespace" => Some(self.namespace.clone()),
            _ => self
                .fields
                .iter()
                .find(|(f, _)| *f == label)
                .map(|(_, v)| v.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
pub struct CacheEvent {
    pub revision: Revision,
    pub kind: EventType,
    /// The object after the event (for Deleted: its last state, at the delete revision).
    pub object: Arc<CachedObject>,
    pub prev: Option<Arc<CachedObject>>,
}

/// What a watcher receives.
#[derive(Debug, Clone)]
pub enum WatchItem {
    Event(EventType, Arc<CachedObject>),
    /// All events up to this revision have been delivered.
    Bookmark(Revision),
}

/// Which objects a list or watch wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, o: &CachedObject) -> bool {
        if let Some(ns) = &self.namespace {
            if &o.namespace != ns {
                return false;
            }
        }
        if !self.labels.is_empty() && !self.labels.matches(o.labels.as_ref()) {
            return false;
        }
        if !self.fields.is_empty() && !self.fields.matches(|f| o.field(f)) {
            return false;
        }
        true
    }
}

struct Watcher {
    filter: Filter,
    tx: mpsc::Sender<WatchItem>,
    bookmarks: bool,
}

struct KindState {
    objects: BTreeMap<String, Arc<CachedObject>>,
    history: VecDeque<Arc<CacheEvent>>,
    history_start: Revision,
    watchers: Vec<Watcher>,
}

pub struct KindCache {
    pub rt: &'static ResourceType,
    state: RwLock<KindState>,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("too old resource version: {requested} ({oldest})")]
    Expired {
        requested: Revision,
        oldest: Revision,
    },
    #[error("Too large resource version: {requested}, current resource version: {current}")]
    TooLarge {
        requested: Revision,
        current: Revision,
    },
    #[error("store: {0}")]
    Store(#[from] navarch_store::Error),
}

/// A page of a list: the items, and the key of the last one when more follow.
pub struct ListResult {
    pub items: Vec<Arc<CachedObject>>,
    pub continue_after: Option<String>,
}

impl KindCache {
    fn apply(&self, ev: Arc<CacheEvent>) {
        let mut st = self.state.write();
        match ev.kind {
            EventType::Deleted => {
                st.objects.remove(&ev.object.key);
            }
            _ => {
                st.objects.insert(ev.object.key.clone(), ev.object.clone());
            }
        }
        if st.history.len() >= HISTORY_PER_KIND {
            if let Some(old) = st.history.pop_front() {
                st.history_start = old.revision;
            }
        }
        st.history.push_back(ev.clone());
        st.watchers.retain(|w| dispatch(w, &ev));
    }

    /// Objects matching `filter`, in key order, at most `limit` (0 = all).
    pub fn list(&self, filter: &Filter, limit: usize) -> ListResult {
        let st = self.state.read();
        let prefix = match &filter.namespace {
            Some(ns) if self.rt.namespaced() => self.rt.namespace_prefix(ns),
            _ => self.rt.key_prefix(),
        };
        let mut items = Vec::new();
        let mut continue_after = None;
        for (k, o) in st.objects.range(prefix.clone()..) {
            if !k.starts_with(&prefix) {
                break;
            }
            if !filter.matches(o) {
                continue;
            }
            if limit > 0 && items.len() >= limit {
                // One more match exists: the page ends here.
                continue_after = items.last().map(|o: &Arc<CachedObject>| o.key.clone());
                break;
            }
            items.push(o.clone());
        }
        ListResult {
            items,
            continue_after,
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        self.state.read().objects.get(key).cloned()
    }

    /// Number of objects (all namespaces).
    pub fn len(&self) -> usize {
        self.state.read().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a watch. `from` None: synthetic ADDED for every current
    /// matching object, then changes. `from` Some(r): every change after r.
    pub fn watch(
        &self,
        filter: Filter,
        from: Option<Revision>,
        bookmarks: bool,
    ) -> Result<mpsc::Receiver<WatchItem>, CacheError> {
        let mut st = self.state.write();
        let (tx, rx) = mpsc::channel(WATCHER_BUFFER);
        match from {
            None => {
                let prefix = match &filter.namespace {
                    Some(ns) if self.rt.namespaced() => self.rt.namespace_prefix(ns),
                    _ => self.rt.key_prefix(),
                };
                let initial: Vec<Arc<CachedObject>> = st
                    .objects
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .filter(|(_, o)| filter.matches(o))
                    .map(|(_, o)| o.clone())
                    .collect();
                // Initial events can exceed the buffer; spawn a feeder that
                // sends them first, then relays live events.
                let (live_tx, mut live_rx) = mpsc::channel(WATCHER_BUFFER);
                st.watchers.push(Watcher {
                    filter,
                    tx: live_tx,
                    bookmarks,
                });
                drop(st);
                tokio::spawn(async move {
                    for o in initial {
                        if tx
                            .send(WatchItem::Event(EventType::Added, o))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    while let Some(item) = live_rx.recv().await {
                        if tx.send(item).await.is_err() {
                            return;
                        }
                    }
                });
                return Ok(rx);
            }
            Some(r) => {
                if r < st.history_start {
                    return Err(CacheError::Expired {
                        requested: r,
                        oldest: st.history_start,
                    });
                }
                let w = Watcher {
                    filter,
                    tx,
                    bookmarks,
                };
                let idx = st.history.partition_point(|e| e.revision <= r);
                let mut ok = true;
                for ev in st.history.iter().skip(idx) {
                    if !dispatch(&w, ev) {
                        ok = false;
                        break;
                    }
                }
                if ok {
                    st.watchers.push(w);
                }
            }
        }
        Ok(rx)
    }

    fn bookmark(&self, revision: Revision) {
        let mut st = self.state.write();
        st.watchers.retain(|w| {
            if w.tx.is_closed() {
                return false;
            }
            // A full channel means a slow watcher: close it, it resumes later.
            !w.bookmarks || w.tx.try_send(WatchItem::Bookmark(revision)).is_ok()
        });
    }
}

/// Sends an event to a watcher if it concerns it; false if the watcher is gone or too slow.
fn dispatch(w: &Watcher, ev: &CacheEvent) -> bool {
    let now = w.filter.matches(&ev.object);
    let before = ev
        .prev
        .as_ref()
        .map(|p| w.filter.matches(p))
        .unwrap_or(false);
    let item = match (ev.kind, before, now) {
        (_, false, false) => return !w.tx.is_closed(),
        (EventType::Deleted, _, _) => WatchItem::Event(EventType::Deleted, ev.object.clone()),
        (_, false, true) => WatchItem::Event(EventType::Added, ev.object.clone()),
        (_, true, true) => WatchItem::Event(EventType::Modified, ev.object.clone()),
        // No longer matches: to this watcher the object is gone.
        (_, true, false) => WatchItem::Event(EventType::Deleted, ev.object.clone()),
    };
    w.tx.try_send(item).is_ok()
}

/// All kind caches plus the revision they have reached.
pub struct Cache {
    store: Arc<dyn Store>,
    kinds: Vec<Arc<KindCache>>,
    revision: AtomicI64,
    progress: tokio::sync::watch::Sender<Revision>,
}

impl Cache {
    /// Loads everything from the store and starts following it.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<Cache>, CacheError> {
        let mut kinds: Vec<Arc<KindCache>> = Vec::new();
        let snapshot = store.range("/registry/", "", 0, None).await?;
        let rev = snapshot.revision;
        for rt in navarch_api::REGISTRY.iter() {
            // Kinds sharing storage (events) share one cache: the first served wins.
            if kinds.iter().any(|k| k.rt.storage == rt.storage) {
                continue;
            }
            kinds.push(Arc::new(KindCache {
                rt,
                state: RwLock::new(KindState {
                    objects: BTreeMap::new(),
                    history: VecDeque::new(),
                    history_start: rev,
                    watchers: Vec::new(),
                }),
            }));
        }
        let (progress, _) = tokio::sync::watch::channel(rev);
        let cache = Arc::new(Cache {
            store: store.clone(),
            kinds,
            revision: AtomicI64::new(rev),
            progress,
        });
        for kv in &snapshot.kvs {
            if let Some(k) = cache.kind_for_key(&kv.key) {
                if let Some(o) = CachedObject::from_kv(k.rt, kv) {
                    k.state.write().objects.insert(kv.key.clone(), Arc::new(o));
                }
            } else {
                tracing::warn!(key = %kv.key, "stored key belongs to no served kind");
            }
        }
        let mut stream = store.watch("/registry/", rev).await?;
        let c = cache.clone();
        tokio::spawn(async move {
            loop {
                let lost = loop {
                    match stream.recv().await {
                        Some(Ok(ev)) => c.apply(ev),
                        Some(Err(e)) => break e,
                        // The store closed: shutting down.
                        None => return,
                    }
                };
                // Fell behind (a burst of writes filled the watch channel):
                // resume from the last revision applied; the store's
                // history holds everything since.
                let from = c.revision();
                tracing::warn!(error = %lost, revision = from, "watch cache resumes its store watch");
                stream = match c.store.watch("/registry/", from).await {
                    Ok(s) => s,
                    Err(e) => {
                        // Only when the history since `from` was compacted
                        // away: the cache cannot be made whole again.
                        tracing::error!(error = %e, revision = from, "watch cache cannot resume its store watch; exiting");
                        std::process::exit(1);
                    }
                };
            }
        });
        let c = cache.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                let rev = c.revision();
                for k in &c.kinds {
                    k.bookmark(rev);
                }
            }
        });
        Ok(cache)
    }

    fn kind_for_key(&self, key: &str) -> Option<&Arc<KindCache>> {
        self.kinds
            .iter()
            .find(|k| key.starts_with(&k.rt.key_prefix()))
    }

    fn apply(&self, ev: navarch_store::Event) {
        let rev = ev.kv.mod_revision;
        if let Some(k) = self.kind_for_key(&ev.kv.key) {
            let prev = ev.prev.as_ref().and_then(|p| {
                k.get(&p.key)
                    .filter(|o| o.mod_revision == p.mod_revision)
                    .or_else(|| CachedObject::from_kv(k.rt, p).map(Arc::new))
            });
            let (kind, object) = match ev.kind {
                EventKind::Put => (
                    if prev.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    },
                    CachedObject::from_kv(k.rt, &ev.kv).map(Arc::new),
                ),
                EventKind::Delete => (
                    EventType::Deleted,
                    CachedObject::from_kv(k.rt, &ev.kv).map(Arc::new),
                ),
            };
            match object {
                Some(object) => k.apply(Arc::new(CacheEvent {
                    revision: rev,
                    kind,
                    object,
                    prev,
                })),
                None => tracing::error!(key = %ev.kv.key, "undecodable object in store; skipped"),
            }
        }
        self.revision.store(rev, Ordering::Release);
        self.progress.send_replace(rev);
    }

    /// The revision every applied event has reached.
    pub fn revision(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The cache of a resource type (shared-storage kinds share one).
    pub fn kind(&self, rt: &ResourceType) -> &Arc<KindCache> {
        self.kinds
            .iter()
            .find(|k| k.rt.storage == rt.storage)
            .expect("every registry kind has a cache")
    }

    /// Waits until the cache has applied revision `rev`.
    pub async fn wait_for(&self, rev: Revision, timeout: Duration) -> Result<(), CacheError> {
        if self.revision() >= rev {
            return Ok(());
        }
        let mut rx = self.progress.subscribe();
        let res = tokio::time::timeout(timeout, rx.wait_for(|r| *r >= rev)).await;
        match res {
            Ok(Ok(_)) => Ok(()),
            _ => Err(CacheError::TooLarge {
                requested: rev,
                current: self.revision(),
            }),
        }
    }

    /// Waits until everything the store has acknowledged is visible.
    pub async fn sync(&self) -> Result<Revision, CacheError> {
        let rev = self.store.current_revision();
        self.wait_for(rev, Duration::from_secs(10)).await?;
        Ok(self.revision())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use navarch_store::{MemoryStore, Options};

    /// A burst of writes larger than the watch channel, with the cache
    /// unable to run meanwhile (one thread): its store watch ends "too
    /// slow", and the cache resumes from its revision and misses nothing.
    #[tokio::test(flavor = "current_thread")]
    async fn a_cache_that_falls_behind_resumes_and_misses_nothing() {
        let store: Arc<dyn Store> =
            Arc::new(MemoryStore::with_options(Options { watch_capacity: 8 }));
        let cache = Cache::start(store.clone()).await.unwrap();
        let rt = navarch_api::registry::lookup("", "v1", "configmaps").unwrap();
        let write = |i: usize| {
            let name = format!("cm-{i}");
            let v = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "default", "uid": format!("u{i}")}});
            let (store, key) = (store.clone(), rt.key(Some("default"), &name));
            async move {
                store
                    .create(&key, serde_json::to_vec(&v).unwrap().into())
                    .await
                    .unwrap()
            }
        };
        let caught_up = |want: Revision| {
            let mut progress = cache.progress.subscribe();
            async move {
                tokio::time::timeout(Duration::from_secs(10), progress.wait_for(|r| *r >= want))
                    .await
                    .expect("the cache caught up")
                    .unwrap();
            }
        };
        // First the watch goes live (history replayed)...
        let first = write(0).await;
        caught_up(first).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // ...then 200 writes while the cache cannot run.
        for i in 1..200 {
            write(i).await;
        }
        caught_up(store.current_revision()).await;
        let items = cache.kind(rt).list(&Filter::default(), 0).items;
        assert_eq!(items.len(), 200);
    }

    #[test]
    fn one_event_is_decoded_once_for_every_consumer() {
        let rt = navarch_api::registry::lookup("", "v1", "configmaps").unwrap();
        let object = |i: usize| {
            let mut v = serde_json::json!({"metadata": {"name": format!("cm-{i}"), "namespace": "default"}});
            Arc::new(CachedObject::from_value(
                rt,
                &format!("/k/{i}"),
                i as i64,
                &mut v,
            ))
        };
        let a = object(1);
        let first = a.shared_value();
        assert!(Arc::ptr_eq(&first, &a.shared_value()));
        assert_eq!(first["metadata"]["name"], "cm-1");
        let b = object(2);
        assert_eq!(b.shared_value()["metadata"]["name"], "cm-2");
        // Pushed out by later decodes, it is decoded again, the same.
        for i in 0..RECENT_DECODES + 1 {
            object(10 + i).shared_value();
        }
        let again = a.shared_value();
        assert!(!Arc::ptr_eq(&first, &again));
        assert_eq!(first, again);
    }
}
