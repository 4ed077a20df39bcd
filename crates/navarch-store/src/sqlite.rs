//! The SQLite backend: the embedded production default.
//!
//! # Layout
//!
//! * `meta(name, value)`: `revision` (the revision of the last committed
//!   write) and `compacted` (the compacted revision).
//! * `log(rev, key, deleted, value, create_rev, prev_rev)`: one row per
//!   revision, appended in revision order. A put row holds the new value; a
//!   delete row holds none. `prev_rev` is the revision of the key's previous
//!   version (0 when the key did not exist), whose row gives the event's
//!   `prev` (and a delete's value).
//! * `kv(key, create_rev, mod_rev)`: the current version of every key; its
//!   value is the `log` row at `mod_rev`.
//!
//! Values are written once, to the append-only log, and the only B-tree
//! written at random positions is the small `kv` table: a commit dirties few
//! pages, which keeps each fsync short.
//!
//! Keys are stored as BLOBs so that SQL order is byte order, the same as
//! Rust's `str` order, and prefix ranges are `key >= prefix AND key < end`.
//!
//! A range at an older revision `r` reads the current keys of the range and
//! corrects them with the log rows after `r` (for each key changed since, the
//! `prev` of its first change after `r` is its version at `r`). Its cost grows
//! with the number of writes since `r` (scanned, filtered by key range).
//!
//! Compaction at `r` deletes every log row at or below `r` except, for each
//! key, the newest row at or below `r` when it is a put: every version
//! superseded by a write in (old compacted, `r`] is that write's `prev_rev`,
//! and tombstones there go too. So the state at `r` can still be read, every
//! event above `r` can still be replayed, and every `prev_rev` and `mod_rev`
//! still resolves.
//!
//! # Writes: group commit
//!
//! One writer thread owns the only read-write connection. It takes a request
//! and then every request that arrives while it applies them (up to
//! [`MAX_BATCH`], waiting briefly for stragglers when writers are
//! concurrent), applies them in one transaction (each op gets the next
//! revision; a failed precondition fails only its own op and takes no
//! revision), commits with one fsync (WAL, `synchronous=FULL`), publishes the
//! events to watchers in revision order, and then answers each request. A
//! write future that is dropped after its request was sent may still be
//! applied (as with etcd). A database error rolls back the whole batch, and
//! every request in it gets `Error::Backend`.
//!
//! # Reads
//!
//! `get`, `range` and watch replay run on a small pool of read connections on
//! tokio's blocking pool, each read in one read transaction (a consistent
//! snapshot of the last commit, which includes every acknowledged write).
//!
//! Only one process may open a database at a time (nothing enforces this).

use crate::watch::{History, Hub};
use crate::{
    lower_bound, prefix_end, BoxFuture, Error, Event, EventKind, KeyValue, Lower, Options,
    RangeResult, Result, Revision, Store, WatchStream,
};
use bytes::Bytes;
use parking_lot::Mutex;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, TransactionBehavior};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most requests applied in one transaction.
const MAX_BATCH: usize = 4096;
/// Longest wait for one more request before committing (see `run_batch`).
const LINGER_GAP: Duration = Duration::from_micros(100);
/// Longest total wait for more requests before committing.
const MAX_LINGER: Duration = Duration::from_micros(500);
/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;
/// The schema version in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
CREATE TABLE IF NOT EXISTS kv (
    key BLOB NOT NULL PRIMARY KEY,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    rev INTEGER PRIMARY KEY,
    key BLOB NOT NULL,
    deleted INTEGER NOT NULL,
    value BLOB,
    create_rev INTEGER NOT NULL,
    prev_rev INTEGER NOT NULL
);
";

fn backend(e: rusqlite::Error) -> Error {
    Error::Backend(format!("sqlite: {e}"))
}

fn utf8_key(bytes: Vec<u8>) -> rusqlite::Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(e))
    })
}

/// A [`Store`] in one SQLite database file (plus its `-wal` and `-shm`).
///
/// Dropping it lets the writer finish the requests already queued, closes
/// every watch stream, and waits for the writer thread to exit.
pub struct SqliteStore {
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    readers: Arc<Readers>,
}

/// State shared with the writer thread.
struct Shared {
    revision: AtomicI64,
    compacted: AtomicI64,
    hub: Arc<Hub>,
}

enum Op {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
}

enum Reply {
    Revision(Revision),
    Deleted(Revision, KeyValue),
    Done,
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Reply>>,
}

/// Why one op of a batch did not apply.
enum OpError {
    /// A failed precondition: only this op fails.
    Logical(Error),
    /// A database error: the whole batch is rolled back.
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for OpError {
    fn from(e: rusqlite::Error) -> Self {
        OpError::Sql(e)
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` with default
    /// [`Options`], recovering the revision and compacted revision.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_options(path, Options::default())
    }

    /// Opens (creating if needed) the database at `path`.
    pub fn open_with_options(path: impl AsRef<Path>, options: Options) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut conn = Connection::open(&path).map_err(backend)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(backend)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Backend(format!(
                "sqlite: {} cannot use WAL (journal_mode is {mode})",
                path.display()
            )));
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000; PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY;").map_err(backend)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(backend)?;
        if version > SCHEMA_VERSION {
            return Err(Error::Backend(format!(
                "sqlite: {} has schema version {version}, newer than this build's {SCHEMA_VERSION}",
                path.display()
            )));
        }
        {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            tx.execute_batch(SCHEMA).map_err(backend)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(backend)?;
            tx.commit().map_err(backend)?;
        }
        let (revision, compacted) = read_meta(&conn).map_err(backend)?;
        let readers = Arc::new(Readers {
            path,
            idle: Mutex::new(Vec::new()),
        });
        // Fail now, not on the first read, if readers cannot open.
        readers.with(|_| Ok(()))?;
        let shared = Arc::new(Shared {
            revision: AtomicI64::new(revision),
            compacted: AtomicI64::new(compacted),
            hub: Arc::new(Hub::new(options.watch_capacity)),
        });
        let (requests, rx) = mpsc::channel();
        let writer_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("navarch-store-writer".into())
            .spawn(move || writer_loop(conn, rx, &writer_shared))
            .map_err(|e| Error::Backend(format!("cannot start the store writer thread: {e}")))?;
        Ok(SqliteStore {
            requests: Some(requests),
            writer: Some(writer),
            shared,
            readers,
        })
    }

    async fn write(&self, op: Op) -> Result<Reply> {
        let (reply, rx) = oneshot::channel();
        let requests = self.requests.as_ref().ok_or(Error::Closed)?;
        requests
            .send(Request { op, reply })
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        blocking(move || readers.with(f)).await
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Closing the channel stops the writer once it has drained it.
        self.requests = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        self.shared.hub.close();
    }
}

/// Runs `f` on tokio's blocking pool, or inline outside a tokio runtime.
async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => rt
            .spawn_blocking(f)
            .await
            .map_err(|e| Error::Backend(format!("store read task failed: {e}")))?,
        Err(_) => f(),
    }
}

fn read_meta(conn: &Connection) -> rusqlite::Result<(Revision, Revision)> {
    let mut st = conn
        .prepare_cached("SELECT name, value FROM meta WHERE name IN ('revision', 'compacted')")?;
    let mut rows = st.query([])?;
    let (mut revision, mut compacted) = (0, 0);
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        let value: i64 = row.get(1)?;
        match name.as_str() {
            "revision" => revision = value,
            _ => compacted = value,
        }
    }
    Ok((revision, compacted))
}

// ---------------------------------------------------------------------------
// The writer.

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Request>, shared: &Shared) {
    let mut last_batch = 0;
    while let Ok(first) = rx.recv() {
        // A lone sequential client does not wait; concurrent ones do.
        last_batch = run_batch(&mut conn, first, &rx, shared, last_batch > 1);
    }
    shared.hub.close();
}

/// Applies `first` and whatever else arrives meanwhile in one transaction,
/// commits, publishes and answers. Returns the number of requests.
///
/// Requests are applied as they arrive. When the queue runs dry and
/// `linger` is set (the previous batch had company), the writer waits up to
/// [`LINGER_GAP`] for one more request, [`MAX_LINGER`] in all: clients
/// answered by the previous commit are typically about to send their next
/// request, and taking it into this commit spares it a whole fsync cycle.
fn run_batch(
    conn: &mut Connection,
    first: Request,
    rx: &mpsc::Receiver<Request>,
    shared: &Shared,
    linger: bool,
) -> usize {
    let mut batch = vec![first];
    let mut events = Vec::new();
    let outcome = (|| -> rusqlite::Result<(Vec<Result<Reply>>, Revision, Revision)> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // The database, not memory, is the authority on the revision.
        let (start_rev, start_compacted) = read_meta(&tx)?;
        let (mut rev, mut compacted) = (start_rev, start_compacted);
        let mut results = Vec::new();
        let deadline = Instant::now() + MAX_LINGER;
        loop {
            while let Some(req) = batch.get(results.len()) {
                match apply_op(&tx, &req.op, &mut rev, &mut compacted, &mut events) {
                    Ok(reply) => results.push(Ok(reply)),
                    Err(OpError::Logical(e)) => results.push(Err(e)),
                    Err(OpError::Sql(e)) => return Err(e),
                }
            }
            if batch.len() >= MAX_BATCH {
                break;
            }
            match rx.try_recv() {
                Ok(req) => batch.push(req),
                Err(_) if !linger => break,
                Err(_) => {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    match rx.recv_timeout(LINGER_GAP.min(deadline - now)) {
                        Ok(req) => batch.push(req),
                        Err(_) => break,
                    }
                }
            }
        }
        if rev != start_rev {
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'revision'")?
                .execute([rev])?;
        }
        if compacted != start_compacted {
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'compacted'")?
                .execute([compacted])?;
        }
        tx.commit()?;
        Ok((results, rev, compacted))
    })();
    let n = batch.len();
    match outcome {
        Ok((results, rev, compacted)) => {
            shared.revision.store(rev, Ordering::SeqCst);
            shared.compacted.store(compacted, Ordering::SeqCst);
            shared.hub.publish(&events);
            for (req, result) in batch.into_iter().zip(results) {
                let _ = req.reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, ops = n, "store write batch failed and was rolled back");
            let msg = format!("sqlite: {e}");
            for req in batch {
                let _ = req.reply.send(Err(Error::Backend(msg.clone())));
            }
        }
    }
    n
}

fn load(conn: &Connection, key: &str) -> rusqlite::Result<Option<KeyValue>> {
    let mut st = conn.prepare_cached(
        "SELECT l.value, k.create_rev, k.mod_rev FROM kv AS k JOIN log AS l ON l.rev = k.mod_rev WHERE k.key = ?1",
    )?;
    st.query_row([key.as_bytes()], |row| {
        Ok(KeyValue {
            key: key.to_owned(),
            value: Bytes::from(row.get::<_, Vec<u8>>(0)?),
            create_revision: row.get(1)?,
            mod_revision: row.get(2)?,
        })
    })
    .optional()
}

fn log_row(
    conn: &Connection,
    rev: Revision,
    key: &str,
    value: Option<&[u8]>,
    create_rev: Revision,
    prev_rev: Revision,
) -> rusqlite::Result<()> {
    conn.prepare_cached("INSERT INTO log (rev, key, deleted, value, create_rev, prev_rev) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?.execute(params![
        rev,
        key.as_bytes(),
        value.is_none(),
        value,
        create_rev,
        prev_rev
    ])?;
    Ok(())
}

fn apply_op(
    conn: &Connection,
    op: &Op,
    rev: &mut Revision,
    compacted: &mut Revision,
    events: &mut Vec<Event>,
) -> std::result::Result<Reply, OpError> {
    match op {
        Op::Create { key, value } => {
            if load(conn, key)?.is_some() {
                return Err(OpError::Logical(Error::AlreadyExists));
            }
            let new = *rev + 1;
            conn.prepare_cached("INSERT INTO kv (key, create_rev, mod_rev) VALUES (?1, ?2, ?2)")?
                .execute(params![key.as_bytes(), new])?;
            log_row(conn, new, key, Some(value), new, 0)?;
            *rev = new;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: new,
                mod_revision: new,
            };
            events.push(Event {
                kind: EventKind::Put,
                kv,
                prev: None,
            });
            Ok(Reply::Revision(new))
        }
        Op::Update {
            key,
            value,
            expected,
        } => {
            let prev = match load(conn, key)? {
                None => return Err(OpError::Logical(Error::NotFound)),
                Some(cur) if cur.mod_revision != *expected => {
                    return Err(OpError::Logical(Error::Conflict { current: cur }))
                }
                Some(cur) => cur,
            };
            let new = *rev + 1;
            conn.prepare_cached("UPDATE kv SET mod_rev = ?2 WHERE key = ?1")?
                .execute(params![key.as_bytes(), new])?;
            log_row(
                conn,
                new,
                key,
                Some(value),
                prev.create_revision,
                prev.mod_revision,
            )?;
            *rev = new;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: prev.create_revision,
                mod_revision: new,
            };
            events.push(Event {
                kind: EventKind::Put,
                kv,
                prev: Some(prev),
            });
            Ok(Reply::Revision(new))
        }
        Op::Delete { key, expected } => {
            let prev = match load(conn, key)? {
                None => return Err(OpError::Logical(Error::NotFound)),
                Some(cur) if expected.is_some_and(|e| e != cur.mod_revision) => {
                    return Err(OpError::Logical(Error::Conflict { current: cur }))
                }
                Some(cur) => cur,
            };
            let new = *rev + 1;
            conn.prepare_cached("DELETE FROM kv WHERE key = ?1")?
                .execute([key.as_bytes()])?;
            log_row(
                conn,
                new,
                key,
                None,
                prev.create_revision,
                prev.mod_revision,
            )?;
            *rev = new;
            let kv = KeyValue {
                mod_revision: new,
                ..prev.clone()
            };
            events.push(Event {
                kind: EventKind::Delete,
                kv,
                prev: Some(prev.clone()),
            });
            Ok(Reply::Deleted(new, prev))
        }
        Op::Compact { revision } => {
            let revision = *revision;
            if revision > *rev {
                return Err(OpError::Logical(Error::FutureRevision {
                    requested: revision,
                    current: *rev,
                }));
            }
            if revision <= *compacted {
                return Ok(Reply::Done);
            }
            // Every version superseded by a write in (compacted, revision]
            // is that write's prev_rev; tombstones there go too.
            conn.prepare_cached("DELETE FROM log WHERE rev IN (SELECT prev_rev FROM log WHERE rev > ?1 AND rev <= ?2 AND prev_rev > 0)")?.execute([*compacted, revision])?;
            conn.prepare_cached("DELETE FROM log WHERE rev > ?1 AND rev <= ?2 AND deleted <> 0")?
                .execute([*compacted, revision])?;
            *compacted = revision;
            Ok(Reply::Done)
        }
    }
}

// ---------------------------------------------------------------------------
// Reads.

struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn open(&self) -> Result<Connection> {
        let conn = Connection::open(&self.path).map_err(backend)?;
        conn.execute_batch(
            "PRAGMA busy_timeout = 10000; PRAGMA query_only = 1; PRAGMA cache_size = -16384;",
        )
        .map_err(backend)?;
        Ok(conn)
    }

    /// Runs `f` on an idle read connection (opening one if none is idle).
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let pooled = self.idle.lock().pop();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = f(&mut conn);
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }
}

fn row_kv(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: utf8_key(row.get(0)?)?,
        value: Bytes::from(row.get::<_, Vec<u8>>(1)?),
        create_revision: row.get(2)?,
        mod_revision: row.get(3)?,
    })
}

fn range_read(
    conn: &mut Connection,
    prefix: &str,
    start_after: &str,
    limit: usize,
    revision: Option<Revision>,
) -> Result<RangeResult> {
    let tx = conn.transaction().map_err(backend)?;
    let (current, compacted) = read_meta(&tx).map_err(backend)?;
    let rev = revision.unwrap_or(current);
    if rev > current {
        return Err(Error::FutureRevision {
            requested: rev,
            current,
        });
    }
    if rev < compacted {
        return Err(Error::Compacted {
            requested: rev,
            compacted,
        });
    }
    let (op, lower) = match lower_bound(prefix, start_after) {
        Lower::Inclusive(k) => (">=", k),
        Lower::Exclusive(k) => (">", k),
    };
    let upper = prefix_end(prefix.as_bytes());
    let bounds = |key_column: &str, upper_param: &str| match upper {
        Some(_) => format!("{key_column} {op} ?1 AND {key_column} < {upper_param}"),
        None => format!("{key_column} {op} ?1"),
    };
    let mut args = vec![Value::Blob(lower.as_bytes().to_vec())];

    // Keys in range changed after `rev`, each with its version as of `rev`:
    // the `prev` of its first change after `rev` (None: it did not exist).
    let mut changed: BTreeMap<String, Option<KeyValue>> = BTreeMap::new();
    if rev < current {
        let sql = format!(
            "SELECT l.key, l.prev_rev, p.value, p.create_rev FROM log AS l LEFT JOIN log AS p ON p.rev = l.prev_rev \
             WHERE {} AND l.rev > ?2 ORDER BY l.rev",
            bounds("l.key", "?3")
        );
        let mut history_args = args.clone();
        history_args.push(Value::Integer(rev));
        if let Some(end) = &upper {
            history_args.push(Value::Blob(end.clone()));
        }
        let mut st = tx.prepare_cached(&sql).map_err(backend)?;
        let mut rows = st.query(params_from_iter(history_args)).map_err(backend)?;
        while let Some(row) = rows.next().map_err(backend)? {
            let key = utf8_key(row.get(0).map_err(backend)?).map_err(backend)?;
            if changed.contains_key(&key) {
                continue;
            }
            let prev_rev: Revision = row.get(1).map_err(backend)?;
            let at_rev = if prev_rev > 0 {
                let value: Option<Vec<u8>> = row.get(2).map_err(backend)?;
                let Some(value) = value else {
                    return Err(corrupt(prev_rev, &key));
                };
                Some(KeyValue {
                    key: key.clone(),
                    value: Bytes::from(value),
                    create_revision: row.get(3).map_err(backend)?,
                    mod_revision: prev_rev,
                })
            } else {
                None
            };
            changed.insert(key, at_rev);
        }
    }

    // Current keys in range: unchanged ones are as they were at `rev`. One
    // more than asked (besides the changed ones) tells whether more follow.
    let fetch = if limit == 0 {
        -1
    } else {
        i64::try_from(limit.saturating_add(changed.len()).saturating_add(1)).unwrap_or(-1)
    };
    args.push(Value::Integer(fetch));
    if let Some(end) = upper.clone() {
        args.push(Value::Blob(end));
    }
    let sql = format!(
        "SELECT k.key, l.value, k.create_rev, k.mod_rev FROM kv AS k JOIN log AS l ON l.rev = k.mod_rev \
         WHERE {} ORDER BY k.key LIMIT ?2",
        bounds("k.key", "?3")
    );
    let mut kvs = {
        let mut st = tx.prepare_cached(&sql).map_err(backend)?;
        let rows = st
            .query_map(params_from_iter(args), row_kv)
            .map_err(backend)?;
        let mut kvs = Vec::new();
        for kv in rows {
            let kv = kv.map_err(backend)?;
            if !changed.contains_key(&kv.key) {
                kvs.push(kv);
            }
        }
        kvs
    };
    tx.commit().map_err(backend)?;
    if !changed.is_empty() {
        kvs.extend(changed.into_values().flatten());
        kvs.sort_by(|a, b| a.key.cmp(&b.key));
    }
    let more = limit != 0 && kvs.len() > limit;
    if limit != 0 {
        kvs.truncate(limit);
    }
    Ok(RangeResult {
        kvs,
        revision: rev,
        more,
    })
}

fn corrupt(rev: Revision, key: &str) -> Error {
    Error::Backend(format!(
        "sqlite: the version of {key:?} at revision {rev} is missing from the log"
    ))
}

fn history_read(
    conn: &mut Connection,
    prefix: &str,
    after: Revision,
    limit: usize,
) -> Result<Vec<Event>> {
    let tx = conn.transaction().map_err(backend)?;
    let (_, compacted) = read_meta(&tx).map_err(backend)?;
    if after < compacted {
        return Err(Error::Compacted {
            requested: after,
            compacted,
        });
    }
    let mut args = vec![
        Value::Integer(after),
        Value::Blob(prefix.as_bytes().to_vec()),
        Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)),
    ];
    let upper = match prefix_end(prefix.as_bytes()) {
        Some(end) => {
            args.push(Value::Blob(end));
            "AND l.key < ?4"
        }
        None => "",
    };
    let sql = format!(
        "SELECT l.rev, l.key, l.deleted, l.value, l.create_rev, p.rev, p.value, p.create_rev \
         FROM log AS l LEFT JOIN log AS p ON p.rev = l.prev_rev \
         WHERE l.rev > ?1 AND l.key >= ?2 {upper} ORDER BY l.rev LIMIT ?3"
    );
    let events = {
        let mut st = tx.prepare_cached(&sql).map_err(backend)?;
        let rows = st
            .query_map(params_from_iter(args), |row| {
                let rev: Revision = row.get(0)?;
                let key = utf8_key(row.get(1)?)?;
                let deleted: bool = row.get(2)?;
                let value: Option<Vec<u8>> = row.get(3)?;
                let create_revision: Revision = row.get(4)?;
                let prev_rev: Option<Revision> = row.get(5)?;
                let prev = match prev_rev {
                    Some(prev_rev) => Some(KeyValue {
                        key: key.clone(),
                        value: Bytes::from(row.get::<_, Option<Vec<u8>>>(6)?.unwrap_or_default()),
                        create_revision: row.get(7)?,
                        mod_revision: prev_rev,
                    }),
                    None => None,
                };
                Ok((rev, key, deleted, value, create_revision, prev))
            })
            .map_err(backend)?;
        let mut events = Vec::new();
        for row in rows {
            let (rev, key, deleted, value, create_revision, prev) = row.map_err(backend)?;
            let event = if deleted {
                let Some(prev) = prev else {
                    return Err(Error::Backend(format!(
                        "sqlite: log row {rev} deletes {key:?} but its previous version is missing"
                    )));
                };
                Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        key,
                        value: prev.value.clone(),
                        create_revision,
                        mod_revision: rev,
                    },
                    prev: Some(prev),
                }
            } else {
                Event {
                    kind: EventKind::Put,
                    kv: KeyValue {
                        key,
                        value: Bytes::from(value.unwrap_or_default()),
                        create_revision,
                        mod_revision: rev,
                    },
                    prev,
                }
            };
            events.push(event);
        }
        events
    };
    tx.commit().map_err(backend)?;
    Ok(events)
}

impl History for Readers {
    fn events_after(
        self: Arc<Self>,
        prefix: String,
        after: Revision,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<Event>>> {
        Box::pin(blocking(move || {
            self.with(|conn| history_read(conn, &prefix, after, limit))
        }))
    }
}

impl Store for SqliteStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>>> {
        let key = key.to_owned();
        Box::pin(self.read(move |conn| load(conn, &key).map_err(backend)))
    }

    fn range<'a>(
        &'a self,
        prefix: &'a str,
        start_after: &'a str,
        limit: usize,
        revision: Option<Revision>,
    ) -> BoxFuture<'a, Result<RangeResult>> {
        let (prefix, start_after) = (prefix.to_owned(), start_after.to_owned());
        Box::pin(self.read(move |conn| range_read(conn, &prefix, &start_after, limit, revision)))
    }

    fn create<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, Result<Revision>> {
        Box::pin(async move {
            match self
                .write(Op::Create {
                    key: key.to_owned(),
                    value,
                })
                .await?
            {
                Reply::Revision(rev) => Ok(rev),
                _ => Err(Error::Backend(
                    "unexpected reply from the store writer".into(),
                )),
            }
        })
    }

    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        expected: Revision,
    ) -> BoxFuture<'a, Result<Revision>> {
        Box::pin(async move {
            match self
                .write(Op::Update {
                    key: key.to_owned(),
                    value,
                    expected,
                })
                .await?
            {
                Reply::Revision(rev) => Ok(rev),
                _ => Err(Error::Backend(
                    "unexpected reply from the store writer".into(),
                )),
            }
        })
    }

    fn delete<'a>(
        &'a self,
        key: &'a str,
        expected: Option<Revision>,
    ) -> BoxFuture<'a, Result<(Revision, KeyValue)>> {
        Box::pin(async move {
            match self
                .write(Op::Delete {
                    key: key.to_owned(),
                    expected,
                })
                .await?
            {
                Reply::Deleted(rev, kv) => Ok((rev, kv)),
                _ => Err(Error::Backend(
                    "unexpected reply from the store writer".into(),
                )),
            }
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
            self.shared
                .hub
                .watch(self.readers.clone(), prefix.to_owned(), after)
        })
    }

    fn current_revision(&self) -> Revision {
        self.shared.revision.load(Ordering::SeqCst)
    }

    fn compacted_revision(&self) -> Revision {
        self.shared.compacted.load(Ordering::SeqCst)
    }

    fn compact<'a>(&'a self, revision: Revision) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match self.write(Op::Compact { revision }).await? {
                Reply::Done => Ok(()),
                _ => Err(Error::Backend(
                    "unexpected reply from the store writer".into(),
                )),
            }
        })
    }
}
