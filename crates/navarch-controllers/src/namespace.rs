//! The namespace controller and the ServiceAccount controller, both driven
//! by namespaces (upstream's `namespace-controller` and
//! `serviceaccount-controller`).
//!
//! **Namespace deletion.** Deleting a namespace sets its phase to
//! `Terminating` and leaves the `kubernetes` finalizer in `spec.finalizers`.
//! This controller then deletes everything in it, every namespaced kind,
//! many deletes in flight at once (background propagation; pods
//! gracefully, their kubelets finish them). While objects remain it reports
//! upstream's status conditions (`NamespaceContentRemaining`,
//! `NamespaceFinalizersRemaining`, `NamespaceDeletionContentFailure`) and
//! looks again shortly; once nothing is left it removes its finalizer
//! through the `finalize` subresource and the API server removes the
//! namespace.
//!
//! **ServiceAccounts.** Every active namespace has a ServiceAccount named
//! `default`; it is created when the namespace appears and again if it is
//! deleted. Pod admission requires the pod's service account to exist,
//! as upstream, so a pod created in the instant between a namespace and its
//! `default` account is refused with upstream's message.

use crate::events::Recorder;
use crate::informer::{Batch, Change, Informer};
use crate::queue::{Backoff, WorkQueue};
use crate::rt;
use navarch_api::patch::PatchType;
use navarch_api::{ApiError, Subresource, REGISTRY};
use navarch_apiserver::cache::Filter;
use navarch_apiserver::{ApiServer, DeleteOptions, WriteOptions};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const COMPONENT: &str = "namespace-controller";
/// Deletes in flight at once, per namespace being finalized.
const DELETE_CONCURRENCY: usize = 128;
/// How soon a namespace with objects still going away is looked at again.
const RECHECK: Duration = Duration::from_millis(200);

/// Starts both controllers on `server`'s watch cache; they stop with
/// `shutdown`.
pub fn spawn(server: Arc<ApiServer>, shutdown: CancellationToken) {
    let (tx, rx) = mpsc::channel(64);
    for r in [rt("", "namespaces"), rt("", "serviceaccounts")] {
        Informer::start(server.cache.clone(), r, tx.clone(), shutdown.clone());
    }
    drop(tx);
    let recorder = Recorder::spawn(server.clone(), COMPONENT);
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let c = Controller {
        server,
        _recorder: recorder,
        namespaces: HashMap::new(),
        accounts: HashSet::new(),
        queue: WorkQueue::default(),
        backoff: Backoff::default(),
        busy: HashSet::new(),
        synced: HashSet::new(),
        done_tx,
    };
    tokio::spawn(c.run(rx, done_rx));
}

/// A namespace as the controllers need it.
struct Ns {
    terminating: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    /// Finalize a terminating namespace.
    Finalize(String),
    /// Make sure the namespace has its `default` ServiceAccount.
    Account(String),
}

/// The outcome of one pass over a terminating namespace.
struct Done {
    key: Key,
    result: Result<Pass, ApiError>,
}

enum Pass {
    /// Objects remain (being deleted): look again soon.
    Remaining,
    /// Finalized, or nothing to do.
    Finished,
}

struct Controller {
    server: Arc<ApiServer>,
    _recorder: Recorder,
    namespaces: HashMap<String, Ns>,
    /// `namespace` of every ServiceAccount named `default`.
    accounts: HashSet<String>,
    queue: WorkQueue<Key>,
    backoff: Backoff<Key>,
    busy: HashSet<Key>,
    synced: HashSet<&'static str>,
    done_tx: mpsc::UnboundedSender<Done>,
}

impl Controller {
    async fn run(
        mut self,
        mut informers: mpsc::Receiver<Batch>,
        mut done: mpsc::UnboundedReceiver<Done>,
    ) {
        loop {
            if self.synced.len() == 2 {
                while let Some(key) = self.queue.pop() {
                    if !self.busy.contains(&key) {
                        self.sync(key);
                    }
                }
            }
            tokio::select! {
                b = informers.recv() => match b {
                    Some(b) => self.apply(b),
                    None => return,
                },
                Some(d) = done.recv() => self.done(d),
                _ = tokio::time::sleep_until(self.queue.next_wake()) => {}
            }
        }
    }

    fn apply(&mut self, batch: Batch) {
        for change in batch.changes {
            match (batch.rt.kind, change) {
                (k, Change::Synced) => {
                    self.synced.insert(k);
                }
                ("Namespace", Change::Upsert(o)) => {
                    let terminating = o.field("status.phase").as_deref() == Some("Terminating");
                    self.namespaces.insert(o.name.clone(), Ns { terminating });
                    if terminating {
                        self.queue.add(Key::Finalize(o.name.clone()));
                    } else {
                        self.queue.add(Key::Account(o.name.clone()));
                    }
                }
                ("Namespace", Change::Delete(o)) => {
                    self.namespaces.remove(&o.name);
                }
                ("ServiceAccount", Change::Upsert(o)) if o.name == "default" => {
                    self.accounts.insert(o.namespace.clone());
                }
                ("ServiceAccount", Change::Delete(o)) if o.name == "default" => {
                    self.accounts.remove(&o.namespace);
                    self.queue.add(Key::Account(o.namespace.clone()));
                }
                _ => {}
            }
        }
    }

    fn done(&mut self, d: Done) {
        self.busy.remove(&d.key);
        match d.result {
            Ok(Pass::Finished) => self.backoff.forget(&d.key),
            Ok(Pass::Remaining) => {
                self.backoff.forget(&d.key);
                self.queue.add_after(d.key, RECHECK);
            }
            Err(e) => {
                tracing::warn!(key = ?d.key, error = %e, "namespace controller: will retry");
                let delay = self.backoff.fail(d.key.clone());
                self.queue.add_after(d.key, delay);
            }
        }
    }

    fn sync(&mut self, key: Key) {
        match &key {
            Key::Account(ns) => {
                let active = self.namespaces.get(ns).is_some_and(|n| !n.terminating);
                if !active || self.accounts.contains(ns) {
                    return;
                }
                let (server, ns) = (self.server.clone(), ns.clone());
                self.spawn(key, async move {
                    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                        "metadata": {"name": "default", "namespace": ns}});
                    match server
                        .create(rt("", "serviceaccounts"), Some(&ns), sa, &write_options())
                        .await
                    {
                        Ok(_) => Ok(Pass::Finished),
                        // Exists already, or the namespace is going away.
                        Err(e) if e.code == 409 || e.code == 404 || e.code == 403 => {
                            Ok(Pass::Finished)
                        }
                        Err(e) => Err(e),
                    }
                });
            }
            Key::Finalize(ns) => {
                if !self.namespaces.get(ns).is_some_and(|n| n.terminating) {
                    return;
                }
                let (server, ns) = (self.server.clone(), ns.clone());
                self.spawn(key, async move { finalize(&server, &ns).await });
            }
        }
    }

    fn spawn<F>(&mut self, key: Key, work: F)
    where
        F: std::future::Future<Output = Result<Pass, ApiError>> + Send + 'static,
    {
        self.busy.insert(key.clone());
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let result = work.await;
            let _ = done.send(Done { key, result });
        });
    }
}

fn write_options() -> WriteOptions {
    WriteOptions {
        field_manager: Some(COMPONENT.into()),
        ..Default::default()
    }
}

/// What is left in a namespace: objects per resource, and finalizers
/// holding them.
#[derive(Default)]
struct Remaining {
    by_resource: BTreeMap<String, usize>,
    finalizers: BTreeMap<String, usize>,
}

/// One pass: delete what is not yet being deleted; finalize when empty.
async fn finalize(server: &Arc<ApiServer>, ns: &str) -> Result<Pass, ApiError> {
    let mut left = Remaining::default();
    let mut deletes: JoinSet<Result<(), ApiError>> = JoinSet::new();
    let mut failures: Vec<String> = Vec::new();
    for r in REGISTRY
        .iter()
        .filter(|r| r.namespaced() && r.ops.to_storage.is_none())
    {
        let list = server.cache.kind(r).list(
            &Filter {
                namespace: Some(ns.to_string()),
                ..Default::default()
            },
            0,
        );
        for o in list.items {
            let resource = if r.group.is_empty() {
                r.plural.to_string()
            } else {
                format!("{}.{}", r.plural, r.group)
            };
            *left.by_resource.entry(resource).or_default() += 1;
            if crate::deleting(&o) {
                let v = o.shared_value();
                for f in v["metadata"]["finalizers"].as_array().into_iter().flatten() {
                    if let Some(f) = f.as_str() {
                        *left.finalizers.entry(f.to_string()).or_default() += 1;
                    }
                }
                continue;
            }
            while deletes.len() >= DELETE_CONCURRENCY {
                if let Some(Ok(Err(e))) = deletes.join_next().await {
                    failures.push(e.message);
                }
            }
            let (server, ns, name) = (server.clone(), ns.to_string(), o.name.clone());
            deletes.spawn(async move {
                let opts = DeleteOptions {
                    propagation: Some("Background".into()),
                    ..Default::default()
                };
                match server.delete(r, Some(&ns), &name, &opts).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.code == 404 || e.code == 409 => Ok(()),
                    Err(e) => Err(e),
                }
            });
        }
    }
    while let Some(r) = deletes.join_next().await {
        if let Ok(Err(e)) = r {
            failures.push(e.message);
        }
    }
    let empty = left.by_resource.is_empty();
    set_conditions(server, ns, &left, &failures).await?;
    if !empty {
        return Ok(Pass::Remaining);
    }
    let nsrt = rt("", "namespaces");
    let (cur, _) = match server.read(nsrt, None, ns).await {
        Ok(x) => x,
        Err(e) if e.code == 404 => return Ok(Pass::Finished),
        Err(e) => return Err(e),
    };
    let mut body = cur.clone();
    let finalizers: Vec<Value> = cur["spec"]["finalizers"]
        .as_array()
        .map(|f| f.iter().filter(|f| *f != "kubernetes").cloned().collect())
        .unwrap_or_default();
    body["spec"]["finalizers"] = Value::Array(finalizers);
    server
        .update(
            nsrt,
            None,
            ns,
            Some(Subresource::Finalize),
            body,
            &write_options(),
        )
        .await?;
    Ok(Pass::Finished)
}

/// Upstream's namespace deletion conditions, written only on change.
async fn set_conditions(
    server: &ApiServer,
    ns: &str,
    left: &Remaining,
    failures: &[String],
) -> Result<(), ApiError> {
    let nsrt = rt("", "namespaces");
    let Some(cur) = server.cache.kind(nsrt).get(&nsrt.key(None, ns)) else {
        return Ok(());
    };
    let cur = cur.value();
    let content = if left.by_resource.is_empty() {
        (
            "False",
            "ContentRemoved",
            "All content successfully removed".to_string(),
        )
    } else {
        let parts: Vec<String> = left
            .by_resource
            .iter()
            .map(|(r, n)| format!("{r} has {n} resource instances"))
            .collect();
        (
            "True",
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", parts.join(", ")),
        )
    };
    let finalizers = if left.finalizers.is_empty() {
        (
            "False",
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished".to_string(),
        )
    } else {
        let parts: Vec<String> = left
            .finalizers
            .iter()
            .map(|(f, n)| format!("{f} in {n} resource instances"))
            .collect();
        (
            "True",
            "SomeFinalizersRemain",
            format!(
                "Some content in the namespace has finalizers remaining: {}",
                parts.join(", ")
            ),
        )
    };
    let failure = if failures.is_empty() {
        (
            "False",
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".to_string(),
        )
    } else {
        (
            "True",
            "ContentDeletionFailed",
            format!(
                "Failed to delete all resource types, {} remaining: {}",
                failures.len(),
                failures[0]
            ),
        )
    };
    let wanted = [
        ("NamespaceContentRemaining", content),
        ("NamespaceFinalizersRemaining", finalizers),
        ("NamespaceDeletionContentFailure", failure),
    ];
    let have = cur["status"]["conditions"].as_array();
    let same = wanted.iter().all(|(t, (status, reason, message))| {
        have.and_then(|cs| cs.iter().find(|c| c["type"] == *t))
            .is_some_and(|c| {
                c["status"] == *status && c["reason"] == *reason && c["message"] == message.as_str()
            })
    });
    if same {
        return Ok(());
    }
    let now = navarch_api::meta::rfc3339(jiff::Timestamp::now());
    let conditions: Vec<Value> = wanted
        .iter()
        .map(|(t, (status, reason, message))| {
            json!({"type": t, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": now})
        })
        .collect();
    match server
        .patch(
            nsrt,
            None,
            ns,
            Some(Subresource::Status),
            PatchType::Strategic,
            json!({"status": {"conditions": conditions}}),
            &write_options(),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
