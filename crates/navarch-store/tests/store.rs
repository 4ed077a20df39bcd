//! The `Store` contract, run against both backends, plus SQLite-only tests:
//! persistence across reopen, a kill -9 crash test, a model-equivalence
//! property test, and a throughput benchmark (ignored by default).

use bytes::Bytes;
use navarch_store::{
    Error, Event, EventKind, KeyValue, MemoryStore, Options, RangeResult, Revision, SqliteStore,
    Store, WatchStream,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Fixtures and helpers.

#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Sqlite,
}

/// A store and the directory holding its files (dropped after the store).
struct Fx {
    store: Arc<dyn Store>,
    _dir: Option<TempDir>,
}

impl Backend {
    fn open(self) -> Fx {
        self.open_with(Options::default())
    }

    fn open_with(self, options: Options) -> Fx {
        match self {
            Backend::Memory => Fx {
                store: Arc::new(MemoryStore::with_options(options)),
                _dir: None,
            },
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = SqliteStore::open_with_options(dir.path().join("store.db"), options)
                    .expect("open sqlite store");
                Fx {
                    store: Arc::new(store),
                    _dir: Some(dir),
                }
            }
        }
    }
}

fn val(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

const WAIT: Duration = Duration::from_secs(20);

async fn next_item(w: &mut WatchStream) -> Option<navarch_store::Result<Event>> {
    tokio::time::timeout(WAIT, w.recv())
        .await
        .expect("timed out waiting for a watch event")
}

async fn next_event(w: &mut WatchStream) -> Event {
    next_item(w)
        .await
        .expect("watch stream ended")
        .expect("watch stream error")
}

async fn collect(w: &mut WatchStream, n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next_event(w).await);
    }
    out
}

fn rev_of(e: &Event) -> Revision {
    e.kv.mod_revision
}

fn keys(r: &RangeResult) -> Vec<&str> {
    r.kvs.iter().map(|kv| kv.key.as_str()).collect()
}

/// Asserts that nothing more arrives on `w` for a short while.
async fn assert_quiet(w: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(100), w.recv()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

// ---------------------------------------------------------------------------
// The contract, as functions of the backend.

async fn create_get_exists(b: Backend) {
    let fx = b.open();
    let s = &fx.store;
    assert_eq!(s.current_revision(), 0);
    assert_eq!(s.compacted_revision(), 0);
    assert_eq!(s.create("/a/1", val("one")).await.unwrap(), 1);
    assert_eq!(s.create("/a/2", val("two")).await.unwrap(), 2);
    assert!(matches!(
        s.create("/a/1", val("again")).await,
        Err(Error::AlreadyExists)
    ));
    assert_eq!(s.current_revision(), 2, "a failed create takes no revision");
    let kv = s.get("/a/1").await.unwrap().unwrap();
    assert_eq!(
        kv,
        KeyValue {
            key: "/a/1".into(),
            value: val("one"),
            create_revision: 1,
            mod_revision: 1
        }
    );
    assert_eq!(s.get("/a/3").await.unwrap(), None);
    // Arbitrary UTF-8 keys and arbitrary bytes.
    let odd_keys = [
        "",
        "ü/ñ",
        "a\0b",
        "🦀/x",
        "\u{10FFFF}",
        "/a/1\u{7f}",
        "'; DROP TABLE kv; --",
    ];
    for (i, key) in odd_keys.iter().enumerate() {
        let value = Bytes::from(vec![0u8, 0xff, 0xfe, i as u8, b'\n']);
        let rev = s.create(key, value.clone()).await.unwrap();
        let kv = s
            .get(key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("key {key:?} missing"));
        assert_eq!(
            kv,
            KeyValue {
                key: key.to_string(),
                value,
                create_revision: rev,
                mod_revision: rev
            }
        );
    }
    let all = s.range("", "", 0, None).await.unwrap();
    let mut expected: Vec<String> = odd_keys
        .iter()
        .map(|k| k.to_string())
        .chain(["/a/1".into(), "/a/2".into()])
        .collect();
    expected.sort();
    assert_eq!(keys(&all), expected);
    let big = Bytes::from(vec![7u8; 1 << 20]);
    let rev = s.create("/big", big.clone()).await.unwrap();
    assert_eq!(s.get("/big").await.unwrap().unwrap().value, big);
    assert_eq!(s.current_revision(), rev);
}

async fn update_cas(b: Backend) {
    let fx = b.open();
    let s = &fx.store;
    let r1 = s.create("/u/k", val("v1")).await.unwrap();
    let r2 = s.update("/u/k", val("v2"), r1).await.unwrap();
    assert_eq!(r2, r1 + 1);
    let cur = s.get("/u/k").await.unwrap().unwrap();
    assert_eq!(
        cur,
        KeyValue {
            key: "/u/k".into(),
            value: val("v2"),
            create_revision: r1,
            mod_revision: r2
        }
    );
    match s.update("/u/k", val("v3"), r1).await {
        Err(Error::Conflict { current }) => assert_eq!(current, cur),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(matches!(
        s.update("/u/missing", val("x"), 1).await,
        Err(Error::NotFound)
    ));
    assert!(matches!(
        s.update("/u/missing", val("x"), 0).await,
        Err(Error::NotFound)
    ));
    assert_eq!(s.current_revision(), r2, "failed updates take no revision");
    assert_eq!(s.get("/u/k").await.unwrap().unwrap().value, val("v2"));
    let r3 = s.update("/u/k", val("v3"), r2).await.unwrap();
    assert_eq!(r3, r2 + 1);
}

async fn delete_preconditions(b: Backend) {
    let fx = b.open();
    let s = &fx.store;
    let r1 = s.create("/d/k", val("v1")).await.unwrap();
    let before = s.get("/d/k").await.unwrap().unwrap();
    match s.delete("/d/k", Some(r1 + 100)).await {
        Err(Error::Conflict { current }) => assert_eq!(current, before),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(s.get("/d/k").await.unwrap(), Some(before.clone()));
    let (r2, deleted) = s.delete("/d/k", Some(r1)).await.unwrap();
    assert_eq!(r2, r1 + 1);
    assert_eq!(deleted, before, "delete returns the value as it was");
    assert_eq!(s.get("/d/k").await.unwrap(), None);
    assert!(matches!(s.delete("/d/k", None).await, Err(Error::NotFound)));
    assert!(matches!(
        s.delete("/d/k", Some(r2)).await,
        Err(Error::NotFound)
    ));
    assert_eq!(s.current_revision(), r2);
    let r3 = s.create("/d/k", val("v3")).await.unwrap();
    let again = s.get("/d/k").await.unwrap().unwrap();
    assert_eq!(
        (again.create_revision, again.mod_revision),
        (r3, r3),
        "re-creation starts a new life"
    );
    let r4 = s.update("/d/k", val("v4"), r3).await.unwrap();
    let (r5, deleted) = s.delete("/d/k", None).await.unwrap();
    assert_eq!(r5, r4 + 1);
    assert_eq!(
        deleted,
        KeyValue {
            key: "/d/k".into(),
            value: val("v4"),
            create_revision: r3,
            mod_revision: r4
        }
    );
}

async fn range_pagination(b: Backend) {
    let fx = b.open();
    let s = &fx.store;
    for k in ["/q/1", "/p", "/pa/x", "/o/1", "/p/"] {
        s.create(k, val(k)).await.unwrap();
    }
    for i in (0..10).rev() {
        let k = format!("/p/{i:02}");
        s.create(&k, val(&k)).await.unwrap();
    }
    let mut expected = vec!["/p/".to_string()];
    expected.extend((0..10).map(|i| format!("/p/{i:02}")));

    let all = s.range("/p/", "", 0, None).await.unwrap();
    assert_eq!(keys(&all), expected);
    assert!(!all.more);
    assert_eq!(all.revision, s.current_revision());
    for kv in &all.kvs {
        assert_eq!(kv.value, val(&kv.key));
    }

    for limit in 1..=12 {
        let mut got = Vec::new();
        let mut after = String::new();
        loop {
            let page = s.range("/p/", &after, limit, None).await.unwrap();
            assert!(page.kvs.len() <= limit);
            got.extend(page.kvs.iter().map(|kv| kv.key.clone()));
            if !page.more {
                break;
            }
            assert_eq!(page.kvs.len(), limit, "a page with more after it is full");
            after = page.kvs.last().unwrap().key.clone();
        }
        assert_eq!(got, expected, "limit {limit}");
    }
    let exact = s.range("/p/", "", 11, None).await.unwrap();
    assert_eq!(exact.kvs.len(), 11);
    assert!(!exact.more, "exactly limit keys: no more");

    let mid = s.range("/p/", "/p/05", 2, None).await.unwrap();
    assert_eq!(keys(&mid), ["/p/06", "/p/07"]);
    assert!(mid.more);
    // start_after not itself a key, before the prefix, after the prefix.
    assert_eq!(
        keys(&s.range("/p/", "/p/055", 1, None).await.unwrap()),
        ["/p/06"]
    );
    assert_eq!(
        keys(&s.range("/p/", "/a", 0, None).await.unwrap()),
        expected
    );
    assert!(s.range("/p/", "/q", 0, None).await.unwrap().kvs.is_empty());
    assert!(s
        .range("/p/", "/p/09", 0, None)
        .await
        .unwrap()
        .kvs
        .is_empty());
    assert!(s
        .range("/nothing/", "", 0, None)
        .await
        .unwrap()
        .kvs
        .is_empty());

    let everything = s.range("", "", 0, None).await.unwrap();
    let mut all_keys: Vec<String> = expected.clone();
    all_keys.extend(["/q/1", "/p", "/pa/x", "/o/1"].map(String::from));
    all_keys.sort();
    assert_eq!(keys(&everything), all_keys);
}

async fn range_at_revision_and_compaction(b: Backend) {
    let fx = b.open();
    let s = &fx.store;
    let mut snapshots: BTreeMap<Revision, Vec<KeyValue>> = BTreeMap::new();
    snapshots.insert(0, Vec::new());
    let mut record = |rev: Revision, kvs: Vec<KeyValue>| {
        snapshots.insert(rev, kvs);
    };
    // A history with creates, updates, deletes, re-creates and noise.
    for step in 0..60i64 {
        let key = format!("/r/{}", step % 7);
        let rev = match s.get(&key).await.unwrap() {
            None => s.create(&key, val(&format!("c{step}"))).await.unwrap(),
            Some(kv) if step % 3 == 0 => s.delete(&key, Some(kv.mod_revision)).await.unwrap().0,
            Some(kv) => s
                .update(&key, val(&format!("u{step}")), kv.mod_revision)
                .await
                .unwrap(),
        };
        if step % 5 == 0 {
            s.create(&format!("/other/{step}"), val("noise"))
                .await
                .unwrap();
            let cur = s.current_revision();
            record(cur, s.range("/r/", "", 0, None).await.unwrap().kvs);
        }
        let now = s.range("/r/", "", 0, None).await.unwrap();
        assert_eq!(now.revision, s.current_revision());
        record(rev, now.kvs);
    }
    let current = s.current_revision();
    // Fill in revisions without a /r/ write (the noise): same as the one before.
    let mut last = Vec::new();
    for r in 0..=current {
        match snapshots.get(&r) {
            Some(kvs) => last = kvs.clone(),
            None => {
                snapshots.insert(r, last.clone());
            }
        }
    }
    let check_from = |from: Revision| {
        let snapshots = &snapshots;
        async move {
            for (&r, kvs) in snapshots.range(from..) {
                let got = s.range("/r/", "", 0, Some(r)).await.unwrap();
                assert_eq!(got.revision, r);
                assert_eq!(&got.kvs, kvs, "state at revision {r}");
                assert!(!got.more);
                // Paginated, one key a page.
                let mut paged = Vec::new();
                let mut after = String::new();
                loop {
                    let page = s.range("/r/", &after, 1, Some(r)).await.unwrap();
                    paged.extend(page.kvs.iter().cloned());
                    if !page.more {
                        break;
                    }
                    after = page.kvs.last().unwrap().key.clone();
                }
                assert_eq!(&paged, kvs, "paged state at revision {r}");
            }
        }
    };
    check_from(0).await;
    match s.range("/r/", "", 0, Some(current + 1)).await {
        Err(Error::FutureRevision {
            requested,
            current: c,
        }) => assert_eq!((requested, c), (current + 1, current)),
        other => panic!("expected FutureRevision, got {other:?}"),
    }

    let mid = current / 2;
    s.compact(mid).await.unwrap();
    assert_eq!(s.compacted_revision(), mid);
    match s.range("/r/", "", 0, Some(mid - 1)).await {
        Err(Error::Compacted {
            requested,
            compacted,
        }) => assert_eq!((requested, compacted), (mid - 1, mid)),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(matches!(
        s.range("/r/", "", 0, Some(0)).await,
        Err(Error::Compacted { .. })
    ));
    check_from(mid).await;
    // Compacting again below is a no-op; beyond the current is refused.
    s.compact(mid - 3).await.unwrap();
    assert_eq!(s.compacted_revision(), mid);
    assert!(matches!(
        s.compact(current + 1).await,
        Err(Error::FutureRevision { .. })
    ));
    // Current values stay.
    assert_eq!(
        s.range("/r/", "", 0, None).await.unwrap().kvs,
        snapshots[&current]
    );
    // Compact up to the current revision: that revision stays readable.
    s.compact(current - 1).await.unwrap();
    check_from(current - 1).await;
    s.compact(current).await.unwrap();
    check_from(current).await;
    assert!(matches!(
        s.range("/r/", "", 0, Some(current - 1)).await,
        Err(Error::Compacted { .. })
    ));
    assert_eq!(
        s.current_revision(),
        current,
        "compaction takes no revision"
    );
}

async fn watch_concurrent_writers(b: Backend) {
    let fx = b.open();
    let s = fx.store.clone();
    s.create("/x/before", val("x")).await.unwrap();
    let start = s.current_revision();
    let mut all = s.watch("", start).await.unwrap();
    let mut only_w = s.watch("/w/", 0).await.unwrap();
    const WRITERS: usize = 8;
    const ROUNDS: usize = 40;
    let mut tasks = Vec::new();
    for t in 0..WRITERS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..ROUNDS {
                let key = format!("/w/{t}/{i}");
                let rev = s.create(&key, val("a")).await.unwrap();
                acked.push((key.clone(), rev, EventKind::Put));
                s.create(&format!("/x/{t}/{i}"), val("noise"))
                    .await
                    .unwrap();
                if i % 4 == 0 {
                    let rev = s.update(&key, val("b"), rev).await.unwrap();
                    acked.push((key.clone(), rev, EventKind::Put));
                    let (rev, _) = s.delete(&key, Some(rev)).await.unwrap();
                    acked.push((key, rev, EventKind::Delete));
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let total = (s.current_revision() - start) as usize;
    let events = collect(&mut all, total).await;
    let revs: Vec<Revision> = events.iter().map(rev_of).collect();
    let expected: Vec<Revision> = (start + 1..=s.current_revision()).collect();
    assert_eq!(
        revs, expected,
        "the unfiltered watch sees every revision once, in order"
    );

    let events = collect(&mut only_w, acked.len()).await;
    for pair in events.windows(2) {
        assert!(
            rev_of(&pair[0]) < rev_of(&pair[1]),
            "revisions strictly increase"
        );
    }
    let seen: BTreeSet<(String, Revision, String)> = events
        .iter()
        .map(|e| (e.kv.key.clone(), rev_of(e), format!("{:?}", e.kind)))
        .collect();
    let want: BTreeSet<(String, Revision, String)> = acked
        .iter()
        .map(|(k, r, kind)| (k.clone(), *r, format!("{kind:?}")))
        .collect();
    assert_eq!(seen.len(), events.len(), "each event once");
    assert_eq!(seen, want, "exactly the acknowledged writes under /w/");
    assert_quiet(&mut only_w).await;
}

async fn watch_event_shapes(b: Backend) {
    let fx = b.open();
    let s = &fx.store;
    let mut live = s.watch("/e/", 0).await.unwrap();
    let r1 = s.create("/e/k", val("v1")).await.unwrap();
    let r2 = s.update("/e/k", val("v2"), r1).await.unwrap();
    let (r3, _) = s.delete("/e/k", None).await.unwrap();
    let v1 = KeyValue {
        key: "/e/k".into(),
        value: val("v1"),
        create_revision: r1,
        mod_revision: r1,
    };
    let v2 = KeyValue {
        key: "/e/k".into(),
        value: val("v2"),
        create_revision: r1,
        mod_revision: r2,
    };
    let expected = vec![
        Event {
            kind: EventKind::Put,
            kv: v1.clone(),
            prev: None,
        },
        Event {
            kind: EventKind::Put,
            kv: v2.clone(),
            prev: Some(v1),
        },
        Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                mod_revision: r3,
                ..v2.clone()
            },
            prev: Some(v2),
        },
    ];
    assert_eq!(collect(&mut live, 3).await, expected, "live events");
    let mut replayed = s.watch("/e/", 0).await.unwrap();
    assert_eq!(collect(&mut replayed, 3).await, expected, "replayed events");
    let mut tail = s.watch("/e/", r2).await.unwrap();
    assert_eq!(
        collect(&mut tail, 1).await,
        expected[2..],
        "replay after a revision"
    );
    assert_quiet(&mut tail).await;
}

async fn watch_replay_then_live(b: Backend) {
    let fx = b.open();
    let s = fx.store.clone();
    for i in 0..30 {
        s.create(&format!("/h/{i}"), val("v")).await.unwrap();
    }
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut done = Vec::new();
            for i in 0..300 {
                let key = format!("/h/{}", i % 40);
                let rev = match s.get(&key).await.unwrap() {
                    None => s.create(&key, val(&format!("c{i}"))).await.unwrap(),
                    Some(_) if i % 5 == 0 => s.delete(&key, None).await.unwrap().0,
                    Some(kv) => s
                        .update(&key, val(&format!("u{i}")), kv.mod_revision)
                        .await
                        .unwrap(),
                };
                done.push(rev);
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            done
        })
    };
    // Start watching while the writer runs: replay then live.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut w = s.watch("/h/", 10).await.unwrap();
    let done = writer.await.unwrap();
    let last = *done.last().unwrap();
    assert_eq!(last, s.current_revision());
    let events = collect(&mut w, (last - 10) as usize).await;
    let revs: Vec<Revision> = events.iter().map(rev_of).collect();
    assert_eq!(
        revs,
        (11..=last).collect::<Vec<_>>(),
        "no gap, no duplicate between replay and live"
    );
    assert_quiet(&mut w).await;
    // A pure replay gives the same events.
    let mut again = s.watch("/h/", 10).await.unwrap();
    assert_eq!(collect(&mut again, events.len()).await, events);
    // Live events keep coming after the replay.
    let rev = s.create("/h/new", val("n")).await.unwrap();
    assert_eq!(rev_of(&next_event(&mut w).await), rev);
    assert_eq!(rev_of(&next_event(&mut again).await), rev);
}

/// Writes land while the replay is stuck on a full channel (the client is
/// not reading yet): they must be delivered after the replay, without a gap.
async fn watch_replay_blocked_then_live(b: Backend) {
    let fx = b.open_with(Options { watch_capacity: 64 });
    let s = &fx.store;
    for i in 0..200 {
        s.create(&format!("/g/{i}"), val("v")).await.unwrap();
    }
    let mut w = s.watch("/g/", 0).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 200..240 {
        s.create(&format!("/g/{i}"), val("v")).await.unwrap();
    }
    let revs: Vec<Revision> = collect(&mut w, 240).await.iter().map(rev_of).collect();
    assert_eq!(revs, (1..=240).collect::<Vec<_>>());
    let rev = s.create("/g/live", val("v")).await.unwrap();
    assert_eq!(rev_of(&next_event(&mut w).await), rev);
    assert_quiet(&mut w).await;
}

async fn watch_compacted(b: Backend) {
    let fx = b.open();
    let s = &fx.store;
    for i in 1..=9 {
        s.create(&format!("/c/{i}"), val(&format!("v{i}")))
            .await
            .unwrap();
    }
    s.create("/c/10", val("v10")).await.unwrap(); // rev 10
    s.compact(10).await.unwrap();
    let r11 = s.update("/c/3", val("w3"), 3).await.unwrap();
    let (r12, _) = s.delete("/c/5", Some(5)).await.unwrap();
    let r13 = s.update("/c/10", val("w10"), 10).await.unwrap();
    assert_eq!((r11, r12, r13), (11, 12, 13));
    match s.watch("", 9).await {
        Err(Error::Compacted {
            requested,
            compacted,
        }) => assert_eq!((requested, compacted), (9, 10)),
        other => panic!("expected Compacted, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        s.watch("/c/", 0).await,
        Err(Error::Compacted { .. })
    ));
    let mut w = s.watch("", 10).await.unwrap();
    let events = collect(&mut w, 3).await;
    assert_eq!(
        events[0].prev,
        Some(KeyValue {
            key: "/c/3".into(),
            value: val("v3"),
            create_revision: 3,
            mod_revision: 3
        })
    );
    assert_eq!(events[0].kv.value, val("w3"));
    assert_eq!(events[1].kind, EventKind::Delete);
    assert_eq!(
        events[1].kv,
        KeyValue {
            key: "/c/5".into(),
            value: val("v5"),
            create_revision: 5,
            mod_revision: 12
        }
    );
    assert_eq!(events[2].prev.as_ref().map(|p| p.mod_revision), Some(10));
    // Compact past a watcher still replaying from before it is refused at
    // the start; a live watcher is unaffected by later compaction.
    s.compact(12).await.unwrap();
    let r14 = s.create("/c/new", val("n")).await.unwrap();
    assert_eq!(rev_of(&next_event(&mut w).await), r14);
    assert!(matches!(
        s.watch("", 11).await,
        Err(Error::Compacted { .. })
    ));
    let mut w12 = s.watch("", 12).await.unwrap();
    assert_eq!(
        collect(&mut w12, 2)
            .await
            .iter()
            .map(rev_of)
            .collect::<Vec<_>>(),
        [13, 14]
    );
}

async fn watch_future_revision(b: Backend) {
    let fx = b.open();
    let s = &fx.store;
    s.create("/f/0", val("x")).await.unwrap();
    let cur = s.current_revision();
    let mut w = s.watch("/f/", cur + 3).await.unwrap();
    for i in 1..=5 {
        s.create(&format!("/f/{i}"), val("x")).await.unwrap();
    }
    assert_eq!(
        collect(&mut w, 2)
            .await
            .iter()
            .map(rev_of)
            .collect::<Vec<_>>(),
        [cur + 4, cur + 5]
    );
    assert_quiet(&mut w).await;
}

async fn prefix_isolation(b: Backend) {
    let fx = b.open();
    let s = &fx.store;
    let mut wa = s.watch("/a/", 0).await.unwrap();
    let mut wab = s.watch("/ab/", 0).await.unwrap();
    for k in ["/a/1", "/ab/1", "/a", "/a/b/c", "/ab", "/b/1", "/a0"] {
        s.create(k, val(k)).await.unwrap();
    }
    assert_eq!(
        keys(&s.range("/a/", "", 0, None).await.unwrap()),
        ["/a/1", "/a/b/c"]
    );
    assert_eq!(
        keys(&s.range("/ab/", "", 0, None).await.unwrap()),
        ["/ab/1"]
    );
    let got: Vec<String> = collect(&mut wa, 2)
        .await
        .into_iter()
        .map(|e| e.kv.key)
        .collect();
    assert_eq!(got, ["/a/1", "/a/b/c"]);
    assert_quiet(&mut wa).await;
    assert_eq!(next_event(&mut wab).await.kv.key, "/ab/1");
    assert_quiet(&mut wab).await;
    // Replay respects prefixes too.
    let mut replay = s.watch("/a/", 0).await.unwrap();
    let got: Vec<String> = collect(&mut replay, 2)
        .await
        .into_iter()
        .map(|e| e.kv.key)
        .collect();
    assert_eq!(got, ["/a/1", "/a/b/c"]);
    assert_quiet(&mut replay).await;
}

async fn slow_watcher_is_closed(b: Backend) {
    let fx = b.open_with(Options { watch_capacity: 8 });
    let s = &fx.store;
    let mut slow = s.watch("", 0).await.unwrap();
    let mut fast = s.watch("", 0).await.unwrap();
    let mut fast_seen = Vec::new();
    for i in 0..40 {
        // Writers never wait for a slow watcher.
        tokio::time::timeout(WAIT, s.create(&format!("/s/{i}"), val("x")))
            .await
            .expect("write blocked")
            .unwrap();
        fast_seen.push(rev_of(&next_event(&mut fast).await));
    }
    assert_eq!(fast_seen, (1..=40).collect::<Vec<_>>());
    let mut revs = Vec::new();
    loop {
        match next_item(&mut slow).await {
            Some(Ok(e)) => revs.push(rev_of(&e)),
            Some(Err(Error::Backend(msg))) => {
                assert!(msg.contains("too slow"), "{msg}");
                break;
            }
            other => panic!("expected a too-slow error, got {other:?}"),
        }
    }
    assert!(!revs.is_empty() && revs.len() < 40);
    assert_eq!(
        revs,
        (1..=revs.len() as Revision).collect::<Vec<_>>(),
        "events before the error have no gap"
    );
    assert!(
        next_item(&mut slow).await.is_none(),
        "the stream ends after the error"
    );
    // A dropped watcher does not disturb writes.
    drop(fast);
    s.create("/s/after", val("x")).await.unwrap();
}

async fn read_your_writes(b: Backend) {
    let fx = b.open();
    let s = fx.store.clone();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let key = format!("/ryw/{t}/{i}");
                let rev = s.create(&key, val(&key)).await.unwrap();
                assert!(s.current_revision() >= rev);
                let kv = s
                    .get(&key)
                    .await
                    .unwrap()
                    .expect("acknowledged write is readable");
                assert_eq!(kv.mod_revision, rev);
                let page = s.range(&format!("/ryw/{t}/"), "", 0, None).await.unwrap();
                assert!(page.revision >= rev);
                assert_eq!(page.kvs.len(), i + 1);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        s.range("/ryw/", "", 0, None).await.unwrap().kvs.len(),
        16 * 25
    );
}

async fn close_ends_watch(b: Backend) {
    let fx = b.open();
    let mut w = fx.store.watch("", 0).await.unwrap();
    fx.store.create("/z", val("z")).await.unwrap();
    assert_eq!(rev_of(&next_event(&mut w).await), 1);
    drop(fx);
    assert!(
        next_item(&mut w).await.is_none(),
        "closing the store ends its watches"
    );
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Memory).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await;
                }
            )*
        }
    };
}

suite!(
    create_get_exists,
    update_cas,
    delete_preconditions,
    range_pagination,
    range_at_revision_and_compaction,
    watch_concurrent_writers,
    watch_event_shapes,
    watch_replay_then_live,
    watch_replay_blocked_then_live,
    watch_compacted,
    watch_future_revision,
    prefix_isolation,
    slow_watcher_is_closed,
    read_your_writes,
    close_ends_watch,
);

// ---------------------------------------------------------------------------
// SQLite only.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reopen_keeps_data_revision_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (current, full, at_old, events) = {
        let s = SqliteStore::open(&path).unwrap();
        for i in 0..20 {
            s.create(&format!("/p/{i}"), val(&format!("v{i}")))
                .await
                .unwrap();
        }
        s.update("/p/3", val("new"), 4).await.unwrap();
        s.delete("/p/7", None).await.unwrap();
        s.compact(15).await.unwrap();
        s.delete("/p/9", Some(10)).await.unwrap();
        let current = s.current_revision();
        let mut w = s.watch("/p/", 15).await.unwrap();
        let events = collect(&mut w, (current - 15) as usize).await;
        let full = s.range("/p/", "", 0, None).await.unwrap().kvs;
        let at_old = s.range("/p/", "", 0, Some(16)).await.unwrap().kvs;
        (current, full, at_old, events)
    };
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.current_revision(), current);
    assert_eq!(s.compacted_revision(), 15);
    assert_eq!(s.range("/p/", "", 0, None).await.unwrap().kvs, full);
    assert_eq!(s.range("/p/", "", 0, Some(16)).await.unwrap().kvs, at_old);
    assert!(matches!(
        s.range("/p/", "", 0, Some(14)).await,
        Err(Error::Compacted { .. })
    ));
    assert!(matches!(
        s.watch("/p/", 14).await,
        Err(Error::Compacted { .. })
    ));
    let mut w = s.watch("/p/", 15).await.unwrap();
    assert_eq!(collect(&mut w, events.len()).await, events);
    assert_eq!(s.create("/p/next", val("n")).await.unwrap(), current + 1);
    assert_eq!(rev_of(&next_event(&mut w).await), current + 1);
}

#[test]
fn sqlite_open_errors_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    // A directory is not a database.
    assert!(SqliteStore::open(dir.path()).is_err());
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![0x5a; 8192]).unwrap();
    assert!(SqliteStore::open(&garbage).is_err());
}

/// Outside a tokio runtime, reads run inline and writes still work.
#[test]
fn sqlite_without_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(dir.path().join("s.db")).unwrap();
    let rev = futures::executor::block_on(s.create("/k", val("v"))).unwrap();
    let kv = futures::executor::block_on(s.get("/k")).unwrap().unwrap();
    assert_eq!(kv.mod_revision, rev);
    assert!(
        futures::executor::block_on(s.watch("", 0)).is_err(),
        "watch needs a runtime"
    );
}

// ---------------------------------------------------------------------------
// Crash test: kill -9 during a write load.

const CRASH_ENV: &str = "NAVARCH_STORE_CRASH_CHILD";
const CRASH_CHILD_TEST: &str = "crash_child";

fn crash_value(key: &str) -> Bytes {
    Bytes::from(format!("{key}|{}|{key}", key.len()).repeat(8))
}

/// The child half of the crash test: only does something when run by
/// `crash_kill9_keeps_acknowledged_writes` with `NAVARCH_STORE_CRASH_CHILD`
/// set to a database path. Writes until killed (or for 60 s).
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CRASH_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut tasks = Vec::new();
        for w in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while std::time::Instant::now() < deadline {
                    let key = format!("/crash/{w}/{i}");
                    let rev = store.create(&key, crash_value(&key)).await.unwrap();
                    println!("ACK {key} {rev}");
                    i += 1;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn crash_kill9_keeps_acknowledged_writes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    if std::env::var_os(CRASH_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            CRASH_CHILD_TEST,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_ENV, &path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut acked: Vec<(String, Revision)> = Vec::new();
    // Nothing here may panic before the child is killed.
    for line in stdout.lines().map_while(std::io::Result::ok) {
        let Some((key, rev)) = line
            .strip_prefix("ACK ")
            .and_then(|rest| rest.rsplit_once(' '))
        else {
            continue;
        };
        let Ok(rev) = rev.parse() else {
            continue;
        };
        acked.push((key.to_string(), rev));
        if acked.len() >= 500 {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        acked.len() >= 500,
        "the child stopped after {} acknowledged writes",
        acked.len()
    );
    let max_acked = acked.iter().map(|(_, r)| *r).max().unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let s = SqliteStore::open(&path).unwrap();
        let current = s.current_revision();
        assert!(current >= max_acked, "recovered revision {current} < acknowledged {max_acked}");
        for (key, rev) in &acked {
            let kv = s.get(key).await.unwrap().unwrap_or_else(|| panic!("acknowledged {key} at {rev} lost"));
            assert_eq!((kv.create_revision, kv.mod_revision), (*rev, *rev), "{key}");
            assert_eq!(kv.value, crash_value(key), "{key} intact");
        }
        // The history is whole: one event per revision, 1..=current.
        let mut w = s.watch("", 0).await.unwrap();
        let events = collect(&mut w, current as usize).await;
        for (i, e) in events.iter().enumerate() {
            assert_eq!(rev_of(e), i as Revision + 1);
            assert_eq!(e.kv.value, crash_value(&e.kv.key));
        }
        assert_eq!(s.range("/crash/", "", 0, None).await.unwrap().kvs.len(), current as usize);
        let next = s.create("/after-crash", val("x")).await.unwrap();
        assert_eq!(next, current + 1);
        assert!(next > max_acked);
        println!("crash test: {} acknowledged writes (max revision {max_acked}) survived kill -9; recovered revision {current}", acked.len());
    });
}

// ---------------------------------------------------------------------------
// Model equivalence: random operations on both backends agree.

mod model {
    use super::*;
    use proptest::prelude::*;

    const KEYS: [&str; 8] = ["/k/a", "/k/b", "/k/c", "/k/a/x", "/ka", "", "/k/ü", "/k/\0"];
    const PREFIXES: [&str; 6] = ["", "/k/", "/k/a", "/k/a/", "/z/", "/k/\u{fc}"];
    const AFTERS: [&str; 5] = ["", "/k/a", "/k/b", "/k/", "/ka"];

    #[derive(Debug, Clone)]
    enum Expect {
        /// The key's current mod_revision (0 when absent).
        Current,
        Fixed(Revision),
    }

    #[derive(Debug, Clone)]
    enum Op {
        Create(usize, Vec<u8>),
        Update(usize, Vec<u8>, Expect),
        Delete(usize, Option<Expect>),
        Get(usize),
        Range(usize, usize, usize, Option<i64>),
        Compact(i64),
    }

    fn expect() -> impl Strategy<Value = Expect> {
        prop_oneof![3 => Just(Expect::Current), 1 => (0i64..20).prop_map(Expect::Fixed)]
    }

    fn op() -> impl Strategy<Value = Op> {
        let key = 0..KEYS.len();
        let value = proptest::collection::vec(any::<u8>(), 0..6);
        prop_oneof![
            4 => (key.clone(), value.clone()).prop_map(|(k, v)| Op::Create(k, v)),
            4 => (key.clone(), value, expect()).prop_map(|(k, v, e)| Op::Update(k, v, e)),
            2 => (key.clone(), proptest::option::of(expect())).prop_map(|(k, e)| Op::Delete(k, e)),
            1 => key.prop_map(Op::Get),
            3 => (0..PREFIXES.len(), 0..AFTERS.len(), 0usize..4, proptest::option::of(-1i64..8)).prop_map(|(p, a, l, r)| Op::Range(p, a, l, r)),
            1 => (-1i64..6).prop_map(Op::Compact),
        ]
    }

    fn show<T: std::fmt::Debug>(r: navarch_store::Result<T>) -> String {
        match r {
            Ok(v) => format!("Ok({v:?})"),
            Err(e) => format!("Err({e:?})"),
        }
    }

    /// Applies `op` to `s`; `Expect::Current` is read from `s` itself (the
    /// two stores must agree on it anyway).
    async fn apply(s: &dyn Store, op: &Op) -> String {
        let expected = |key: &str, e: &Expect| {
            let key = key.to_string();
            let e = e.clone();
            async move {
                match e {
                    Expect::Fixed(r) => r,
                    Expect::Current => s.get(&key).await.unwrap().map_or(0, |kv| kv.mod_revision),
                }
            }
        };
        match op {
            Op::Create(k, v) => show(s.create(KEYS[*k], Bytes::from(v.clone())).await),
            Op::Update(k, v, e) => {
                let e = expected(KEYS[*k], e).await;
                show(s.update(KEYS[*k], Bytes::from(v.clone()), e).await)
            }
            Op::Delete(k, e) => {
                let e = match e {
                    Some(e) => Some(expected(KEYS[*k], e).await),
                    None => None,
                };
                show(s.delete(KEYS[*k], e).await)
            }
            Op::Get(k) => show(s.get(KEYS[*k]).await),
            Op::Range(p, a, limit, back) => {
                let rev = back.map(|b| s.current_revision() - b);
                show(
                    s.range(PREFIXES[*p], AFTERS[*a], *limit, rev)
                        .await
                        .map(|r| (r.kvs, r.revision, r.more)),
                )
            }
            Op::Compact(back) => show(s.compact(s.current_revision() - back).await),
        }
    }

    fn run(ops: Vec<Op>) -> std::result::Result<(), TestCaseError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let memory = Backend::Memory.open();
            let sqlite = Backend::Sqlite.open();
            let (m, q) = (memory.store.as_ref(), sqlite.store.as_ref());
            let mut mw = m.watch("", 0).await.unwrap();
            let mut qw = q.watch("", 0).await.unwrap();
            for (i, op) in ops.iter().enumerate() {
                let a = apply(m, op).await;
                let b = apply(q, op).await;
                prop_assert_eq!(&a, &b, "op #{} {:?}", i, op);
                prop_assert_eq!(m.current_revision(), q.current_revision());
                prop_assert_eq!(m.compacted_revision(), q.compacted_revision());
            }
            let n = m.current_revision() as usize;
            let me = collect(&mut mw, n).await;
            let qe = collect(&mut qw, n).await;
            prop_assert_eq!(&me, &qe, "live event streams");
            let from = m.compacted_revision();
            let mut mr = m.watch("", from).await.unwrap();
            let mut qr = q.watch("", from).await.unwrap();
            let mr = collect(&mut mr, n - from as usize).await;
            prop_assert_eq!(
                &mr,
                &collect(&mut qr, n - from as usize).await,
                "replayed event streams"
            );
            prop_assert_eq!(
                &mr[..],
                &me[from as usize..],
                "replay equals the live stream"
            );
            // Replay per prefix: exactly the matching events.
            for prefix in PREFIXES {
                let want: Vec<&Event> =
                    mr.iter().filter(|e| e.kv.key.starts_with(prefix)).collect();
                let mut mp = m.watch(prefix, from).await.unwrap();
                let mut qp = q.watch(prefix, from).await.unwrap();
                let got_m = collect(&mut mp, want.len()).await;
                let got_q = collect(&mut qp, want.len()).await;
                prop_assert_eq!(
                    got_m.iter().collect::<Vec<_>>(),
                    want.clone(),
                    "memory replay of {:?}",
                    prefix
                );
                prop_assert_eq!(
                    got_q.iter().collect::<Vec<_>>(),
                    want,
                    "sqlite replay of {:?}",
                    prefix
                );
            }
            Ok(())
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
        #[test]
        fn memory_and_sqlite_agree(ops in proptest::collection::vec(op(), 1..40)) {
            run(ops)?;
        }
    }
}

// ---------------------------------------------------------------------------
// Benchmark: run with
// `cargo test --release -p navarch-store --test store -- --ignored --nocapture bench_`

#[test]
#[ignore = "benchmark"]
fn bench_sqlite_group_commit() {
    const WRITERS: usize = 64;
    let per_writer: usize = std::env::var("NAVARCH_STORE_BENCH_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("bench.db")).unwrap());
        let mut w = store.watch("/bench/", 0).await.unwrap();
        let watcher = tokio::spawn(async move {
            let mut n = 0usize;
            while let Some(Ok(_)) = w.recv().await {
                n += 1;
                if n == WRITERS * per_writer {
                    break;
                }
            }
            n
        });
        let start = std::time::Instant::now();
        let mut tasks = Vec::new();
        for t in 0..WRITERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let value = Bytes::from(vec![b'x'; 200]);
                for i in 0..per_writer {
                    store.create(&format!("/bench/{t}/{i}"), value.clone()).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = start.elapsed();
        let total = WRITERS * per_writer;
        println!(
            "sqlite group commit: {total} creates (200-byte values) by {WRITERS} concurrent writers in {:.2?}: {:.0} creates/s",
            elapsed,
            total as f64 / elapsed.as_secs_f64()
        );
        assert_eq!(watcher.await.unwrap(), total, "the watcher saw every create");
    });
}
