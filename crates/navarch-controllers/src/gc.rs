//! The garbage collector: `metadata.ownerReferences` and the three
//! propagation policies, as upstream's garbage collector applies them.
//!
//! * **Background** (the default, and what kubectl sends): the owner goes at
//!   once; a dependent whose owners are all gone is deleted (a dependent
//!   with some owners left only loses the dangling references).
//! * **Orphan**: the API server gives the owner the `orphan` finalizer; the
//!   collector removes the owner's reference from every dependent, then the
//!   finalizer, and the owner goes.
//! * **Foreground**: the owner keeps existing with `deletionTimestamp` and
//!   the `foregroundDeletion` finalizer; the collector deletes the
//!   dependents (in the foreground too, so chains wait level by level) and
//!   removes the finalizer once no dependent with `blockOwnerDeletion`
//!   remains.
//!
//! One task follows every kind but Events through informers and keeps the
//! reverse index owner uid → dependents. Objects are parsed only when their
//! bytes mention `ownerReferences` or a deletion finalizer, or when they
//! are deleted, so the pods of a scheduling burst cost a byte search each.
//! Every decision re-reads the objects from the store (linearizable), so a
//! dependent created just before its owner reached the watch cache is never
//! deleted by mistake: an owner is gone only when the store says so (404 or
//! another uid).

use crate::informer::{Batch, Change, Informer};
use navarch_api::patch::PatchType;
use navarch_api::registry::lookup_kind;
use navarch_api::{ApiError, ResourceType, REGISTRY};
use navarch_apiserver::cache::{CachedObject, Filter};
use navarch_apiserver::{ApiServer, DeleteOptions, WriteOptions};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const COMPONENT: &str = "garbage-collector";
const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";
/// How long an owner's finalization or a failed decision waits before it
/// is tried again (dependents still terminating, write conflicts).
const RETRY: Duration = Duration::from_millis(500);
/// Decisions in flight, at most.
const WORKERS: usize = 32;

/// An object: its kind (index into `REGISTRY`), namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Obj {
    kind: usize,
    namespace: String,
    name: String,
}

impl Obj {
    fn of(rt: &'static ResourceType, o: &Arc<CachedObject>) -> Obj {
        Obj {
            kind: REGISTRY
                .iter()
                .position(|r| std::ptr::eq(r, rt))
                .expect("a registry kind"),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
        }
    }

    fn rt(&self) -> &'static ResourceType {
        &REGISTRY[self.kind]
    }

    fn ns(&self) -> Option<&str> {
        self.rt().namespaced().then_some(self.namespace.as_str())
    }
}

/// Work for the collector's workers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Work {
    /// Are this dependent's owners still there?
    Dependent(Obj),
    /// An owner being deleted with `orphan` or `foregroundDeletion`, by uid.
    Owner(Obj, String),
}

/// Starts the collector; it stops with `shutdown`.
pub fn spawn(server: Arc<ApiServer>, shutdown: CancellationToken) {
    let (tx, rx) = mpsc::channel(256);
    for (i, rt) in REGISTRY.iter().enumerate() {
        if followed(i) {
            Informer::start(server.cache.clone(), rt, tx.clone(), shutdown.clone());
        }
    }
    drop(tx);
    let (work_tx, work_rx) = mpsc::unbounded_channel();
    let gc = Collector {
        server,
        dependents: HashMap::new(),
        owners_of: HashMap::new(),
        finalizing: HashMap::new(),
        work_tx,
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = gc.run(rx, work_rx) => {}
        }
    });
}

struct Collector {
    server: Arc<ApiServer>,
    /// Owner uid → its dependents.
    dependents: HashMap<String, HashSet<Obj>>,
    /// Dependent → the owner uids it references.
    owners_of: HashMap<Obj, Vec<String>>,
    /// Owners being finalized (orphan / foreground), by uid.
    finalizing: HashMap<String, Obj>,
    work_tx: mpsc::UnboundedSender<Work>,
}

impl Collector {
    async fn run(
        mut self,
        mut informers: mpsc::Receiver<Batch>,
        mut work: mpsc::UnboundedReceiver<Work>,
    ) {
        let mut pending: HashSet<Work> = HashSet::new();
        let mut running = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                b = informers.recv() => match b {
                    Some(b) => self.apply(b),
                    None => return,
                },
                Some(w) = work.recv() => {
                    pending.insert(w);
                }
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
            while let Ok(w) = work.try_recv() {
                pending.insert(w);
            }
            // Work is deduplicated while it waits for a worker.
            while running.len() < WORKERS {
                let Some(w) = pending.iter().next().cloned() else {
                    break;
                };
                pending.remove(&w);
                let dependents = match &w {
                    Work::Owner(_, uid) => self
                        .dependents
                        .get(uid)
                        .map(|s| s.iter().cloned().collect())
                        .unwrap_or_default(),
                    Work::Dependent(_) => Vec::new(),
                };
                let ctx = Ctx {
                    server: self.server.clone(),
                    work_tx: self.work_tx.clone(),
                };
                running.spawn(async move { ctx.process(w, dependents).await });
            }
        }
    }

    fn apply(&mut self, batch: Batch) {
        let rt = batch.rt;
        for change in batch.changes {
            match change {
                Change::Synced => {}
                Change::Upsert(o) => self.upsert(rt, &o),
                Change::Delete(o) => self.deleted(rt, &o),
            }
        }
    }

    fn upsert(&mut self, rt: &'static ResourceType, o: &Arc<CachedObject>) {
        let obj = Obj::of(rt, o);
        let has_refs = contains(&o.bytes, b"\"ownerReferences\"");
        let finalizing = contains(&o.bytes, b"\"deletionTimestamp\"")
            && (contains(&o.bytes, b"\"orphan\"") || contains(&o.bytes, b"\"foregroundDeletion\""));
        if !has_refs && !finalizing {
            self.unindex(&obj);
            return;
        }
        let v = o.shared_value();
        let uids: Vec<String> = owner_refs(&v)
            .iter()
            .filter_map(|r| r["uid"].as_str().map(str::to_string))
            .collect();
        if uids.is_empty() {
            self.unindex(&obj);
        } else if self.owners_of.get(&obj) != Some(&uids) {
            self.unindex(&obj);
            for u in &uids {
                self.dependents
                    .entry(u.clone())
                    .or_default()
                    .insert(obj.clone());
            }
            self.owners_of.insert(obj.clone(), uids);
            let _ = self.work_tx.send(Work::Dependent(obj.clone()));
        }
        let uid = v["metadata"]["uid"].as_str().unwrap_or("").to_string();
        if finalizing && has_finalizer(&v, &[ORPHAN, FOREGROUND]) && !uid.is_empty() {
            self.finalizing.insert(uid.clone(), obj.clone());
            let _ = self.work_tx.send(Work::Owner(obj, uid));
        }
    }

    fn deleted(&mut self, rt: &'static ResourceType, o: &Arc<CachedObject>) {
        let obj = Obj::of(rt, o);
        // Owners in foreground deletion may be done now that this is gone.
        if let Some(owners) = self.owners_of.get(&obj) {
            for uid in owners {
                if let Some(owner) = self.finalizing.get(uid) {
                    let _ = self.work_tx.send(Work::Owner(owner.clone(), uid.clone()));
                }
            }
        }
        self.unindex(&obj);
        let uid = o.value()["metadata"]["uid"]
            .as_str()
            .unwrap_or("")
            .to_string();
        self.finalizing.remove(&uid);
        // Background propagation: its dependents may have no owner left.
        if let Some(deps) = self.dependents.get(&uid) {
            for d in deps {
                let _ = self.work_tx.send(Work::Dependent(d.clone()));
            }
        }
    }

    fn unindex(&mut self, obj: &Obj) {
        if let Some(uids) = self.owners_of.remove(obj) {
            for u in uids {
                if let Some(set) = self.dependents.get_mut(&u) {
                    set.remove(obj);
                    if set.is_empty() {
                        self.dependents.remove(&u);
                    }
                }
            }
        }
    }
}

/// Kinds the collector follows: views of another kind's storage
/// (events.k8s.io) and kinds sharing storage once; Events are never owners
/// or collected.
fn followed(i: usize) -> bool {
    let rt = &REGISTRY[i];
    let shared = REGISTRY[..i].iter().any(|r| r.storage == rt.storage);
    rt.ops.to_storage.is_none() && !shared && rt.kind != "Event"
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn owner_refs(v: &Value) -> Vec<Value> {
    v["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn has_finalizer(v: &Value, names: &[&str]) -> bool {
    v["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| names.iter().any(|n| x == *n)))
}

/// `ownerReferences` as written: no references left means no field, as
/// upstream leaves it.
fn refs_value(refs: Vec<Value>) -> Value {
    if refs.is_empty() {
        Value::Null
    } else {
        Value::Array(refs)
    }
}

fn uid_of(v: &Value) -> &str {
    v["metadata"]["uid"].as_str().unwrap_or("")
}

fn opts() -> WriteOptions {
    WriteOptions {
        field_manager: Some(COMPONENT.into()),
        ..Default::default()
    }
}

/// What became of one owner reference.
enum OwnerState {
    Alive,
    /// Being deleted in the foreground: waiting for its dependents.
    Deleting,
    /// Gone (not found, or a different object of that name now).
    Gone,
}

struct Ctx {
    server: Arc<ApiServer>,
    work_tx: mpsc::UnboundedSender<Work>,
}

impl Ctx {
    async fn process(self, w: Work, dependents: Vec<Obj>) {
        let result = match &w {
            Work::Dependent(obj) => self.dependent(obj).await,
            Work::Owner(obj, uid) => self.owner(obj, uid, &dependents).await,
        };
        match result {
            Ok(true) => {}
            Ok(false) => self.later(w),
            Err(e) if e.code == 404 => {}
            Err(e) => {
                tracing::debug!(work = ?w, error = %e, "garbage collection step failed; retrying");
                self.later(w);
            }
        }
    }

    fn later(&self, w: Work) {
        let tx = self.work_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RETRY).await;
            let _ = tx.send(w);
        });
    }

    async fn read(&self, obj: &Obj) -> Result<Option<(Value, i64)>, ApiError> {
        match self.server.read(obj.rt(), obj.ns(), &obj.name).await {
            Ok(x) => Ok(Some(x)),
            Err(e) if e.code == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn owner_state(&self, dependent: &Obj, r: &Value) -> Result<OwnerState, ApiError> {
        let api_version = r["apiVersion"].as_str().unwrap_or("");
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let kind = r["kind"].as_str().unwrap_or("");
        let Some(rt) = lookup_kind(group, kind) else {
            // A kind this server does not serve: leave the reference be.
            return Ok(OwnerState::Alive);
        };
        let ns = rt.namespaced().then_some(dependent.namespace.as_str());
        let name = r["name"].as_str().unwrap_or("");
        match self.server.read(rt, ns, name).await {
            Ok((v, _)) if uid_of(&v) == r["uid"].as_str().unwrap_or("") => {
                if !v["metadata"]["deletionTimestamp"].is_null() && has_finalizer(&v, &[FOREGROUND])
                {
                    Ok(OwnerState::Deleting)
                } else {
                    Ok(OwnerState::Alive)
                }
            }
            Ok(_) => Ok(OwnerState::Gone),
            Err(e) if e.code == 404 => Ok(OwnerState::Gone),
            Err(e) => Err(e),
        }
    }

    /// A dependent whose owners are all gone is deleted (in the foreground
    /// when an owner waits for it); one with a live owner only loses its
    /// dangling references. True when done.
    async fn dependent(&self, obj: &Obj) -> Result<bool, ApiError> {
        let Some((v, rv)) = self.read(obj).await? else {
            return Ok(true);
        };
        let refs = owner_refs(&v);
        if refs.is_empty() || !v["metadata"]["deletionTimestamp"].is_null() {
            return Ok(true);
        }
        let mut alive = 0;
        let mut deleting = 0;
        let mut keep = Vec::new();
        for r in &refs {
            match self.owner_state(obj, r).await? {
                OwnerState::Alive => {
                    alive += 1;
                    keep.push(r.clone());
                }
                OwnerState::Deleting => {
                    deleting += 1;
                }
                OwnerState::Gone => {}
            }
        }
        let uid = uid_of(&v).to_string();
        if alive == 0 {
            let del = DeleteOptions {
                precondition_uid: Some(uid),
                propagation: Some(
                    if deleting > 0 {
                        "Foreground"
                    } else {
                        "Background"
                    }
                    .into(),
                ),
                ..Default::default()
            };
            tracing::debug!(kind = obj.rt().kind, name = %obj.name, "deleting an object whose owners are gone");
            return match self
                .server
                .delete(obj.rt(), obj.ns(), &obj.name, &del)
                .await
            {
                Ok(_) => Ok(true),
                Err(e) if e.code == 404 || e.code == 409 => Ok(true),
                Err(e) => Err(e),
            };
        }
        if keep.len() == refs.len() {
            return Ok(true);
        }
        // Some owners live: drop the references to the others.
        self.patch_metadata(obj, "ownerReferences", refs_value(keep), rv)
            .await
    }

    /// Orphan: strip the owner's references from its dependents, then its
    /// finalizer. Foreground: delete the dependents, and drop the finalizer
    /// once none that blocks remains. True when done.
    ///
    /// The reverse index may lag (informers of different kinds are not
    /// ordered with each other), so before a finalizer goes, the watch
    /// cache, caught up with the store, is searched for any object still
    /// naming the owner.
    async fn owner(&self, obj: &Obj, uid: &str, dependents: &[Obj]) -> Result<bool, ApiError> {
        let Some((v, _)) = self.read(obj).await? else {
            return Ok(true);
        };
        if uid_of(&v) != uid || v["metadata"]["deletionTimestamp"].is_null() {
            return Ok(true);
        }
        let (finalizer, orphan) = if has_finalizer(&v, &[ORPHAN]) {
            (ORPHAN, true)
        } else if has_finalizer(&v, &[FOREGROUND]) {
            (FOREGROUND, false)
        } else {
            return Ok(true);
        };
        let mut pending = false;
        for d in dependents {
            pending |= self.settle(d, uid, orphan).await?;
        }
        if pending {
            return Ok(false);
        }
        for d in self.referencing(uid).await? {
            pending |= self.settle(&d, uid, orphan).await?;
        }
        if pending {
            return Ok(false);
        }
        self.remove_finalizer(obj, finalizer).await
    }

    /// One dependent of an owner being finalized: orphaned (its reference
    /// removed) or deleted in the foreground. True while it still holds the
    /// owner back (a write to retry, or a `blockOwnerDeletion` dependent
    /// not gone yet).
    async fn settle(&self, d: &Obj, uid: &str, orphan: bool) -> Result<bool, ApiError> {
        let Some((dv, drv)) = self.read(d).await? else {
            return Ok(false);
        };
        let refs = owner_refs(&dv);
        let Some(r) = refs.iter().find(|r| r["uid"] == uid) else {
            return Ok(false);
        };
        if orphan {
            let keep: Vec<Value> = refs.iter().filter(|r| r["uid"] != uid).cloned().collect();
            let done = self
                .patch_metadata(d, "ownerReferences", refs_value(keep), drv)
                .await?;
            return Ok(!done);
        }
        let blocks = r["blockOwnerDeletion"] == json!(true);
        if !dv["metadata"]["deletionTimestamp"].is_null() {
            return Ok(blocks);
        }
        let del = DeleteOptions {
            precondition_uid: Some(uid_of(&dv).to_string()),
            propagation: Some("Foreground".into()),
            ..Default::default()
        };
        match self.server.delete(d.rt(), d.ns(), &d.name, &del).await {
            Ok((_, gone)) => Ok(blocks && !gone),
            Err(e) if e.code == 404 => Ok(false),
            Err(e) if e.code == 409 => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Sets one metadata field with a merge patch guarded by the
    /// resourceVersion it was read at. True when written (or the object is
    /// gone); false on a conflict, to be tried again.
    async fn patch_metadata(
        &self,
        obj: &Obj,
        field: &str,
        value: Value,
        rv: i64,
    ) -> Result<bool, ApiError> {
        let patch = json!({"metadata": {field: value, "resourceVersion": rv.to_string()}});
        match self
            .server
            .patch(
                obj.rt(),
                obj.ns(),
                &obj.name,
                None,
                PatchType::Merge,
                patch,
                &opts(),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.code == 404 => Ok(true),
            Err(e) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every object that names `uid` as an owner, from the watch cache once
    /// it has caught up with the store.
    async fn referencing(&self, uid: &str) -> Result<Vec<Obj>, ApiError> {
        self.server
            .cache
            .sync()
            .await
            .map_err(|e| ApiError::timeout(e.to_string()))?;
        let mut out = Vec::new();
        for (i, rt) in REGISTRY.iter().enumerate() {
            if !followed(i) {
                continue;
            }
            for o in self.server.cache.kind(rt).list(&Filter::default(), 0).items {
                if contains(&o.bytes, uid.as_bytes())
                    && owner_refs(&o.value()).iter().any(|r| r["uid"] == uid)
                {
                    out.push(Obj::of(rt, &o));
                }
            }
        }
        Ok(out)
    }

    async fn remove_finalizer(&self, obj: &Obj, name: &str) -> Result<bool, ApiError> {
        let Some((v, rv)) = self.read(obj).await? else {
            return Ok(true);
        };
        let left: Vec<Value> = v["metadata"]["finalizers"]
            .as_array()
            .map(|f| f.iter().filter(|x| *x != name).cloned().collect())
            .unwrap_or_default();
        self.patch_metadata(obj, "finalizers", Value::Array(left), rv)
            .await
    }
}
