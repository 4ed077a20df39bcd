//! What pod workers need from the API server, behind a trait so the worker
//! can be tested on a fake runtime with a recording fake API.
//!
//! [`KubeApi`] is the real implementation over a `kube::Client`; Events go
//! through a bounded queue to one background task that deduplicates them
//! (same object, reason and message → `count` + 1), so a worker never waits
//! on an Event write.

use crate::env::{ConfigObjects, References};
use futures::future::BoxFuture;
use futures::FutureExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Event, ObjectReference, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// A failed API call; the worker retries later.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ApiCallError(pub String);

impl From<kube::Error> for ApiCallError {
    fn from(e: kube::Error) -> Self {
        ApiCallError(e.to_string())
    }
}

/// An Event about a pod (or one of its containers).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodEvent {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    /// `spec.containers{name}` style field path, or empty.
    pub field_path: String,
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

pub trait PodApi: Send + Sync + 'static {
    /// Applies a JSON merge patch to the pod's `status` subresource.
    fn patch_status<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        patch: Value,
    ) -> BoxFuture<'a, Result<(), ApiCallError>>;
    /// Removes the pod from the API (grace period 0, precondition on the
    /// uid); a pod already gone is success.
    fn delete_pod<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<(), ApiCallError>>;
    /// The ConfigMaps and Secrets a pod refers to; missing ones are absent.
    fn config_objects<'a>(
        &'a self,
        namespace: &'a str,
        refs: &'a References,
    ) -> BoxFuture<'a, Result<ConfigObjects, ApiCallError>>;
    /// Records an Event; never blocks.
    fn event(&self, event: PodEvent);
}

/// [`PodApi`] over a kube client.
pub struct KubeApi {
    client: kube::Client,
    events: mpsc::Sender<PodEvent>,
}

impl KubeApi {
    /// Starts the Event writer task; it ends when the `KubeApi` is dropped.
    pub fn new(client: kube::Client, node_name: String) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(event_writer(client.clone(), node_name, rx));
        Arc::new(KubeApi { client, events: tx })
    }
}

impl PodApi for KubeApi {
    fn patch_status<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        patch: Value,
    ) -> BoxFuture<'a, Result<(), ApiCallError>> {
        async move {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            Ok(())
        }
        .boxed()
    }

    fn delete_pod<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<(), ApiCallError>> {
        async move {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid.to_string()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(name, &dp).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        .boxed()
    }

    fn config_objects<'a>(
        &'a self,
        namespace: &'a str,
        refs: &'a References,
    ) -> BoxFuture<'a, Result<ConfigObjects, ApiCallError>> {
        async move {
            let mut out = ConfigObjects::default();
            let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
            for name in &refs.config_maps {
                if let Some(cm) = cms.get_opt(name).await? {
                    out.config_maps.insert(name.clone(), cm);
                }
            }
            let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
            for name in &refs.secrets {
                if let Some(s) = secrets.get_opt(name).await? {
                    out.secrets.insert(name.clone(), s);
                }
            }
            Ok(out)
        }
        .boxed()
    }

    fn event(&self, event: PodEvent) {
        if self.events.try_send(event).is_err() {
            debug!("event queue full, dropping an event");
        }
    }
}

/// Writes Events, folding repeats into `count`.
async fn event_writer(client: kube::Client, node: String, mut rx: mpsc::Receiver<PodEvent>) {
    // (namespace, event name, count) by what the event is about.
    let mut seen: HashMap<PodEvent, (String, i32)> = HashMap::new();
    while let Some(ev) = rx.recv().await {
        let api: Api<Event> = Api::namespaced(client.clone(), &ev.namespace);
        let now = Timestamp::now();
        let now_json = json!(now.to_string());
        if let Some((name, count)) = seen.get_mut(&ev) {
            *count += 1;
            let patch = json!({"count": *count, "lastTimestamp": now_json});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => continue,
                Err(e) => debug!(error = %e, "event update failed, creating anew"),
            }
        }
        let name = format!(
            "{}.{:x}",
            ev.pod,
            now.as_nanosecond() as u128 & 0xffff_ffff_ffff_ffff
        );
        let event = Event {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ev.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some(ev.namespace.clone()),
                name: Some(ev.pod.clone()),
                uid: Some(ev.uid.clone()),
                field_path: (!ev.field_path.is_empty()).then(|| ev.field_path.clone()),
                ..Default::default()
            },
            reason: Some(ev.reason.clone()),
            message: Some(ev.message.clone()),
            type_: Some(if ev.warning { "Warning" } else { "Normal" }.into()),
            count: Some(1),
            first_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
            last_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some("kubelet".into()),
                host: Some(node.clone()),
            }),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(node.clone()),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                if seen.len() > 4096 {
                    seen.clear();
                }
                seen.insert(ev, (name, 1));
            }
            Err(e) => warn!(error = %e, reason = %ev.reason, "could not record event"),
        }
    }
}
