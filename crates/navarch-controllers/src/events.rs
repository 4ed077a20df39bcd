//! Events, written the way client-go's recorder writes them: core/v1
//! `Event`s named `<object>.<hex nanoseconds>`, repeats of the same
//! (object, type, reason, message) folded into `count` and
//! `lastTimestamp`, and never a wait for the caller.
//!
//! Correlated as client-go's `EventCorrelator` does, so that a controller
//! acting on thousands of pods does not write thousands of events:
//! * aggregation: from the 10th distinct message with the same object,
//!   type and reason within 10 minutes, events become one
//!   `(combined from similar events): <latest message>` event whose count
//!   grows;
//! * spam filter: per object, a token bucket of 25 writes refilled one per
//!   5 minutes; writes beyond it are dropped.
//!
//! [`Recorder::normal`] and [`Recorder::warning`] queue; one task writes. When the queue is full the
//! event is dropped and counted, as upstream's broadcaster drops events
//! under overload rather than slowing the component that emits them.

use navarch_api::patch::PatchType;
use navarch_api::registry::lookup;
use navarch_apiserver::{ApiServer, WriteOptions};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Events waiting to be written, at most.
const QUEUE: usize = 4096;
/// Distinct events (and objects, and aggregates) remembered.
const REMEMBERED: usize = 4096;
/// Upstream `defaultAggregateMaxEvents` and `defaultAggregateIntervalInSeconds`.
const AGGREGATE_MAX: usize = 10;
const AGGREGATE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);
/// Upstream `defaultSpamBurst` and `defaultSpamQPS`.
const SPAM_BURST: f64 = 25.0;
const SPAM_QPS: f64 = 1.0 / 300.0;
/// The message key of a combined event.
const COMBINED: &str = "(combined from similar events)";

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

/// What to write for one recorded event, decided by the [`Correlator`].
#[derive(Debug, PartialEq)]
enum Decision {
    Create {
        name: String,
        message: String,
    },
    Fold {
        name: String,
        count: i64,
        message: String,
    },
    /// Over the object's spam budget: not written.
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AggKey {
    object: ObjectRef,
    warning: bool,
    reason: &'static str,
}

/// Upstream `EventCorrelator`: aggregation, then folding of repeats, then
/// the spam filter. Pure state; time is passed in.
#[derive(Default)]
struct Correlator {
    /// Event name and count by what it says (the message, or
    /// [`COMBINED`] for an aggregate).
    seen: HashMap<Key, (String, i64)>,
    /// Distinct messages per (object, type, reason) and when last seen.
    aggregates: HashMap<AggKey, (HashSet<String>, Instant)>,
    /// Spam tokens per object and when they were counted.
    tokens: HashMap<ObjectRef, (f64, Instant)>,
}

impl Correlator {
    fn correlate(&mut self, mut key: Key, now: Instant, nanos: i128) -> (Key, Decision) {
        // Aggregation.
        let agg = AggKey {
            object: key.object.clone(),
            warning: key.warning,
            reason: key.reason,
        };
        if self.aggregates.len() >= REMEMBERED && !self.aggregates.contains_key(&agg) {
            self.aggregates.clear();
        }
        let (messages, last) = self
            .aggregates
            .entry(agg)
            .or_insert_with(|| (HashSet::new(), now));
        if now.duration_since(*last) > AGGREGATE_INTERVAL {
            messages.clear();
        }
        *last = now;
        messages.insert(key.message.clone());
        let message = if messages.len() < AGGREGATE_MAX {
            key.message.clone()
        } else {
            // Keep the set at its bound; every new message is combined.
            if let Some(any) = messages.iter().next().cloned() {
                messages.remove(&any);
            }
            let m = format!("{COMBINED}: {}", key.message);
            key.message = COMBINED.to_string();
            m
        };
        // Spam filter, per object.
        if self.tokens.len() >= REMEMBERED && !self.tokens.contains_key(&key.object) {
            self.tokens.clear();
        }
        let (tokens, at) = self
            .tokens
            .entry(key.object.clone())
            .or_insert((SPAM_BURST, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * SPAM_QPS).min(SPAM_BURST);
        *at = now;
        if *tokens < 1.0 {
            return (key, Decision::Drop);
        }
        *tokens -= 1.0;
        // Folding.
        let decision = match self.seen.get_mut(&key) {
            Some((name, count)) => {
                *count += 1;
                Decision::Fold {
                    name: name.clone(),
                    count: *count,
                    message,
                }
            }
            None => {
                if self.seen.len() >= REMEMBERED {
                    self.seen.clear();
                }
                let name = format!("{}.{:x}", key.object.name, nanos);
                self.seen.insert(key.clone(), (name.clone(), 1));
                Decision::Create { name, message }
            }
        };
        (key, decision)
    }
}

async fn write_events(server: Arc<ApiServer>, component: String, mut rx: mpsc::Receiver<Key>) {
    let component: Arc<str> = component.into();
    let mut correlator = Correlator::default();
    let mut inflight = tokio::task::JoinSet::new();
    while let Some(key) = rx.recv().await {
        let nanos = jiff::Timestamp::now().as_nanosecond();
        let (key, decision) = correlator.correlate(key, Instant::now(), nanos);
        if decision == Decision::Drop {
            continue;
        }
        while inflight.len() >= IN_FLIGHT {
            inflight.join_next().await;
        }
        while inflight.try_join_next().is_some() {}
        let now = navarch_api::meta::rfc3339(jiff::Timestamp::now());
        inflight.spawn(write_one(
            server.clone(),
            component.clone(),
            key,
            decision,
            now,
        ));
    }
}

/// Concurrent event writes, at most.
const IN_FLIGHT: usize = 16;

async fn write_one(
    server: Arc<ApiServer>,
    component: Arc<str>,
    key: Key,
    decision: Decision,
    now: String,
) {
    let rt = lookup("", "v1", "events").expect("events are served");
    let opts = WriteOptions {
        field_manager: Some(component.to_string()),
        ..Default::default()
    };
    let ns = event_namespace(&key.object).to_string();
    let (name, message) = match decision {
        Decision::Drop => return,
        Decision::Fold {
            name,
            count,
            message,
        } => {
            let patch = json!({"count": count, "lastTimestamp": now, "message": message});
            match server
                .patch(rt, Some(&ns), &name, None, PatchType::Merge, patch, &opts)
                .await
            {
                Ok(_) => return,
                // Gone (expired, deleted, or its create failed): write it anew.
                Err(e) if e.code == 404 => (name, message),
                Err(e) => {
                    tracing::debug!(error = %e, "updating an event failed");
                    return;
                }
            }
        }
        Decision::Create { name, message } => (name, message),
    };
    let event = event_object(&component, &name, &key, &message, &now);
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

fn event_object(component: &str, name: &str, key: &Key, message: &str, now: &str) -> Value {
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
        "message": message,
        "type": if key.warning { "Warning" } else { "Normal" },
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(object: &str, message: &str) -> Key {
        Key {
            object: ObjectRef::pod("ns", object, "uid"),
            warning: false,
            reason: "SuccessfulCreate",
            message: message.to_string(),
        }
    }

    #[test]
    fn repeats_fold_similar_events_combine_and_spam_is_dropped() {
        let mut c = Correlator::default();
        let t0 = Instant::now();
        let mut decisions = Vec::new();
        for i in 0..40 {
            let (_, d) = c.correlate(key("rs", &format!("Created pod: p{i}")), t0, i);
            decisions.push(d);
        }
        // Nine distinct messages as themselves.
        for (i, d) in decisions[..9].iter().enumerate() {
            assert_eq!(
                *d,
                Decision::Create {
                    name: format!("rs.{i:x}"),
                    message: format!("Created pod: p{i}")
                }
            );
        }
        // Then one combined event, folded with its latest message...
        assert_eq!(
            decisions[9],
            Decision::Create {
                name: "rs.9".into(),
                message: "(combined from similar events): Created pod: p9".into()
            }
        );
        assert_eq!(
            decisions[10],
            Decision::Fold {
                name: "rs.9".into(),
                count: 2,
                message: "(combined from similar events): Created pod: p10".into()
            }
        );
        // ...until the object's 25 writes are spent.
        assert!(decisions[..25].iter().all(|d| *d != Decision::Drop));
        assert!(decisions[25..].iter().all(|d| *d == Decision::Drop));
        // Another object has its own budget.
        let (_, d) = c.correlate(key("other", "Created pod: x"), t0, 99);
        assert!(matches!(d, Decision::Create { .. }));
        // One token comes back every 5 minutes.
        let later = t0 + Duration::from_secs(300);
        let (_, d) = c.correlate(key("rs", "Created pod: late"), later, 100);
        assert_eq!(
            d,
            Decision::Fold {
                name: "rs.9".into(),
                count: 17,
                message: "(combined from similar events): Created pod: late".into()
            }
        );
        let (_, d) = c.correlate(key("rs", "Created pod: later"), later, 101);
        assert_eq!(d, Decision::Drop);
    }

    #[test]
    fn identical_events_fold_into_one() {
        let mut c = Correlator::default();
        let t0 = Instant::now();
        for i in 0..5 {
            let (_, d) = c.correlate(key("n", "Node n is not ready"), t0, 7);
            if i == 0 {
                assert!(matches!(d, Decision::Create { .. }));
            } else {
                assert!(matches!(d, Decision::Fold { count, .. } if count == i + 1));
            }
        }
    }
}
