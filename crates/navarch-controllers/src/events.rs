//! Events, written the way client-go's recorder writes them: core/v1
//! `Event`s named `<object>.<hex nanoseconds>`, repeats of the same
//! (object, type, reason, message) folded into `count` and
//! `lastTimestamp`, and never a wait for the caller.
//!
//! [`Recorder::normal`] and [`Recorder::warning`] queue; one task writes. When the queue is full the
//! event is dropped and counted, as upstream's broadcaster drops events
//! under overload rather than slowing the component that emits them.

use navarch_api::patch::PatchType;
use navarch_api::registry::lookup;
use navarch_apiserver::{ApiServer, WriteOptions};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Events waiting to be written, at most.
const QUEUE: usize = 4096;
/// Distinct events remembered for folding repeats.
const REMEMBERED: usize = 4096;

/// What an event is about (upstream `ObjectReference`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl ObjectRef {
    pub fn pod(namespace: &str, name: &str, uid: &str) -> ObjectRef {
        ObjectRef {
            kind: "Pod",
            api_version: "v1",
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: uid.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    object: ObjectRef,
    warning: bool,
    reason: &'static str,
    message: String,
}

/// Queues events for one component (`source.component`).
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Key>,
    dropped: Arc<AtomicU64>,
}

impl Recorder {
    /// Starts the writer task for `component` (e.g. `default-scheduler`).
    pub fn spawn(server: Arc<ApiServer>, component: &str) -> Recorder {
        let (tx, rx) = mpsc::channel(QUEUE);
        let component = component.to_string();
        tokio::spawn(write_events(server, component, rx));
        Recorder {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Records a `Normal` event.
    pub fn normal(&self, object: &ObjectRef, reason: &'static str, message: String) {
        self.record(object, false, reason, message)
    }

    /// Records a `Warning` event.
    pub fn warning(&self, object: &ObjectRef, reason: &'static str, message: String) {
        self.record(object, true, reason, message)
    }

    fn record(&self, object: &ObjectRef, warning: bool, reason: &'static str, message: String) {
        let key = Key {
            object: object.clone(),
            warning,
            reason,
            message,
        };
        if self.tx.try_send(key).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "event queue full; events dropped");
            }
        }
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn write_events(server: Arc<ApiServer>, component: String, mut rx: mpsc::Receiver<Key>) {
    let component: Arc<str> = component.into();
    // Event name and count by what it says.
    let mut seen: HashMap<Key, (String, i64)> = HashMap::new();
    let mut inflight = tokio::task::JoinSet::new();
    while let Some(key) = rx.recv().await {
        while inflight.len() >= IN_FLIGHT {
            inflight.join_next().await;
        }
        while inflight.try_join_next().is_some() {}
        let now = navarch_api::meta::rfc3339(jiff::Timestamp::now());
        let write = match seen.get_mut(&key) {
            Some((name, count)) => {
                *count += 1;
                Write::Fold {
                    name: name.clone(),
                    count: *count,
                }
            }
            None => {
                if seen.len() >= REMEMBERED {
                    seen.clear();
                }
                let nanos = jiff::Timestamp::now().as_nanosecond();
                let name = format!("{}.{:x}", key.object.name, nanos);
                seen.insert(key.clone(), (name.clone(), 1));
                Write::Create { name }
            }
        };
        inflight.spawn(write_one(
            server.clone(),
            component.clone(),
            key,
            write,
            now,
        ));
    }
}

/// Concurrent event writes, at most.
const IN_FLIGHT: usize = 16;

enum Write {
    Create { name: String },
    Fold { name: String, count: i64 },
}

async fn write_one(
    server: Arc<ApiServer>,
    component: Arc<str>,
    key: Key,
    write: Write,
    now: String,
) {
    let rt = lookup("", "v1", "events").expect("events are served");
    let opts = WriteOptions {
        field_manager: Some(component.to_string()),
        ..Default::default()
    };
    let ns = event_namespace(&key.object).to_string();
    let name = match write {
        Write::Fold { name, count } => {
            let patch = json!({"count": count, "lastTimestamp": now});
            match server
                .patch(rt, Some(&ns), &name, None, PatchType::Merge, patch, &opts)
                .await
            {
                Ok(_) => return,
                // Gone (expired, deleted, or its create failed): write it anew.
                Err(e) if e.code == 404 => name,
                Err(e) => {
                    tracing::debug!(error = %e, "updating an event failed");
                    return;
                }
            }
        }
        Write::Create { name } => name,
    };
    let event = event_object(&component, &name, &key, &now);
    if let Err(e) = server.create(rt, Some(&ns), event, &opts).await {
        if e.code != 409 {
            tracing::debug!(error = %e, "writing an event failed");
        }
    }
}

/// Events about cluster-scoped objects (nodes) live in `default`, as
/// upstream's recorder puts them.
fn event_namespace(o: &ObjectRef) -> &str {
    if o.namespace.is_empty() {
        "default"
    } else {
        &o.namespace
    }
}

fn event_object(component: &str, name: &str, key: &Key, now: &str) -> Value {
    let o = &key.object;
    let involved = if o.namespace.is_empty() {
        json!({"kind": o.kind, "apiVersion": o.api_version, "name": o.name, "uid": o.uid})
    } else {
        json!({"kind": o.kind, "apiVersion": o.api_version,
               "namespace": o.namespace, "name": o.name, "uid": o.uid})
    };
    json!({
        "metadata": {"name": name, "namespace": event_namespace(o)},
        "involvedObject": involved,
        "reason": key.reason,
        "message": key.message,
        "type": if key.warning { "Warning" } else { "Normal" },
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    })
}
