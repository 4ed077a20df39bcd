//! The pod reporter: one list+watch of every bound pod, a de-duplicated
//! work queue (client-go's workqueue semantics: a pod is queued at most once
//! and never worked on twice at a time), and a bounded set of writers.
//!
//! For a pod bound to a hollow node:
//! - not yet `Running` and not terminal → merge-patch `pods/status` to
//!   `Running` with the conditions, container statuses, host and pod IPs a
//!   kubelet would report;
//! - being deleted (`deletionTimestamp` set) → delete it with
//!   `gracePeriodSeconds: 0` and a uid precondition, as a kubelet does once
//!   the containers have stopped.
//!
//! A pod reported `Running` is remembered until the watch shows it so, so
//! an older event still in flight does not trigger a second write.

use crate::node::{rfc3339, transient, Shared, JSON, MERGE_PATCH};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Pod IPs come from 10.128.0.0/9.
const POD_NET: u32 = u32::from_be_bytes([10, 128, 0, 0]);
const POD_NET_SIZE: u32 = 1 << 23;
/// Items per page of the (re)list.
const PAGE: usize = 500;

#[derive(Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    type_: String,
    object: PodLite,
}

/// The parts of a pod (or of a `Status` in an `ERROR` event) the sim reads.
#[derive(Deserialize, Default)]
#[serde(default)]
struct PodLite {
    metadata: Meta,
    spec: Spec,
    /// A pod's status object, or a Status's `"Failure"`.
    status: Value,
    /// A Status's HTTP code.
    code: Option<u16>,
    message: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Meta {
    name: String,
    namespace: String,
    uid: String,
    resource_version: String,
    #[serde(rename = "continue")]
    continue_: String,
    deletion_timestamp: Option<String>,
    deletion_grace_period_seconds: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Spec {
    node_name: String,
    host_network: bool,
    containers: Vec<Container>,
    init_containers: Vec<Container>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(default)]
struct Container {
    name: String,
    image: String,
    resources: Value,
}

#[derive(Deserialize)]
struct PodList {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    items: Vec<PodLite>,
}

/// A pod with work to do.
#[derive(Clone)]
struct Work {
    namespace: String,
    name: String,
    uid: String,
    node: usize,
    host_network: bool,
    containers: Vec<Container>,
    init_containers: Vec<Container>,
    /// `status.qosClass`, when the server set it.
    qos: Option<String>,
    /// `status.podIP` already set (reused).
    pod_ip: Option<Ipv4Addr>,
    deleting: bool,
    /// `pod_ip` was taken from the pool by this sim.
    allocated: bool,
    /// Written `Running`; the watch has not shown it yet.
    reported: bool,
    attempts: u32,
}

/// Pod IPs in use, and where to look for the next free one.
struct IpPool {
    used: HashSet<u32>,
    next: u32,
}

impl IpPool {
    fn offset(ip: Ipv4Addr) -> Option<u32> {
        let v = u32::from(ip);
        (v & !(POD_NET_SIZE - 1) == POD_NET).then_some(v - POD_NET)
    }
    fn mark(&mut self, ip: Ipv4Addr) {
        if let Some(o) = Self::offset(ip) {
            self.used.insert(o);
        }
    }
    fn free(&mut self, ip: Ipv4Addr) {
        if let Some(o) = Self::offset(ip) {
            self.used.remove(&o);
        }
    }
    fn take(&mut self) -> Option<Ipv4Addr> {
        // Offsets 1 .. size-2: no network or broadcast address.
        let usable = POD_NET_SIZE - 2;
        if self.used.len() as u32 >= usable {
            return None;
        }
        loop {
            self.next = self.next % usable + 1;
            if self.used.insert(self.next) {
                return Some(Ipv4Addr::from(POD_NET + self.next));
            }
        }
    }
}

struct State {
    work: HashMap<String, Work>,
    /// Queued (or to be queued again once its worker is done).
    dirty: HashSet<String>,
    /// Being worked on.
    processing: HashSet<String>,
    ips: IpPool,
}

struct Reporter {
    shared: Arc<Shared>,
    state: parking_lot::Mutex<State>,
    queue: mpsc::UnboundedSender<String>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

fn is_terminal_or_running(phase: &str) -> bool {
    matches!(phase, "Running" | "Succeeded" | "Failed")
}

fn is_ready(status: &Value) -> bool {
    status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True")
}

fn parse_ip(v: &Value) -> Option<Ipv4Addr> {
    v.as_str()?.parse().ok()
}

impl Reporter {
    fn enqueue(&self, st: &mut State, uid: &str) {
        if !st.dirty.insert(uid.to_string()) || st.processing.contains(uid) {
            return;
        }
        let _ = self.queue.send(uid.to_string());
    }

    /// Folds one observed pod into the state; `deleted` for DELETED events.
    fn observe(&self, st: &mut State, pod: PodLite, deleted: bool) {
        let uid = pod.metadata.uid.clone();
        let pod_ip = parse_ip(&pod.status["podIP"]);
        let Some(node) = self.shared.node_index(&pod.spec.node_name) else {
            st.work.remove(&uid);
            return;
        };
        if deleted {
            st.work.remove(&uid);
            if let Some(ip) = pod_ip {
                st.ips.free(ip);
            }
            return;
        }
        if let Some(ip) = pod_ip {
            st.ips.mark(ip);
        }
        let phase = pod.status["phase"].as_str().unwrap_or("");
        // A grace-0 delete was done already; finalizers hold the pod.
        let deleting = pod.metadata.deletion_timestamp.is_some()
            && pod.metadata.deletion_grace_period_seconds != Some(0);
        // A Running pod marked not ready by someone else (the node
        // controller, while this node was cut off) is reported again, as
        // the kubelet's status manager does.
        let settled =
            is_terminal_or_running(phase) && (phase != "Running" || is_ready(&pod.status));
        if !deleting && (settled || pod.metadata.deletion_timestamp.is_some()) {
            st.work.remove(&uid);
            return;
        }
        let prev = st.work.get(&uid);
        if prev.is_some_and(|w| w.reported && !deleting) {
            // An event from before our write.
            return;
        }
        let w = Work {
            namespace: pod.metadata.namespace,
            name: pod.metadata.name,
            uid: uid.clone(),
            node,
            host_network: pod.spec.host_network,
            containers: pod.spec.containers,
            init_containers: pod.spec.init_containers,
            qos: pod.status["qosClass"].as_str().map(str::to_string),
            pod_ip: pod_ip.or_else(|| prev.and_then(|p| p.pod_ip)),
            allocated: pod_ip.is_none() && prev.is_some_and(|p| p.allocated),
            deleting,
            reported: false,
            attempts: prev.map_or(0, |p| p.attempts),
        };
        st.work.insert(uid.clone(), w);
        self.enqueue(st, &uid);
    }

    /// Works on one queued pod.
    async fn process(self: Arc<Self>, uid: String) {
        let job = {
            let mut st = self.state.lock();
            st.dirty.remove(&uid);
            st.processing.insert(uid.clone());
            st.work.get(&uid).filter(|w| !w.reported).cloned()
        };
        let outcome = match job {
            None => None,
            // A partitioned kubelet reports nothing; retried after healing.
            Some(w) if self.shared.nodes[w.node].is_cut_off() => Some(Outcome::Retry),
            Some(w) if w.deleting => Some(self.delete(&w).await),
            Some(w) => Some(self.report_running(&w).await),
        };
        let mut st = self.state.lock();
        st.processing.remove(&uid);
        match outcome {
            None => {}
            // Finished with the pod as it was seen, unless a newer event
            // queued it again meanwhile.
            Some(Outcome::Done) if !st.dirty.contains(&uid) => {
                if let Some(w) = st.work.remove(&uid) {
                    if let (true, Some(ip)) = (w.allocated, w.pod_ip) {
                        st.ips.free(ip);
                    }
                }
            }
            Some(Outcome::Done) => {}
            Some(Outcome::Reported) => {
                if let Some(w) = st.work.get_mut(&uid) {
                    w.reported = !w.deleting;
                }
            }
            Some(Outcome::Retry) => {
                let Some(w) = st.work.get_mut(&uid) else {
                    return;
                };
                w.attempts += 1;
                let delay = Duration::from_millis(100 << w.attempts.min(7));
                if !st.dirty.contains(&uid) {
                    let this = self.clone();
                    self.tasks.spawn(async move {
                        tokio::select! {
                            _ = this.cancel.cancelled() => {}
                            _ = tokio::time::sleep(delay) => {
                                let mut st = this.state.lock();
                                this.enqueue(&mut st, &uid);
                            }
                        }
                    });
                    return;
                }
            }
        }
        if st.dirty.contains(&uid) {
            let _ = self.queue.send(uid);
        }
    }

    async fn delete(&self, w: &Work) -> Outcome {
        let body = json!({"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                          "preconditions": {"uid": w.uid}});
        let path = format!("/api/v1/namespaces/{}/pods/{}", w.namespace, w.name);
        let r = self
            .shared
            .call(
                None,
                reqwest::Method::DELETE,
                &path,
                JSON,
                Some(serde_json::to_vec(&body).expect("json")),
                1,
            )
            .await;
        match r {
            // 404: gone already; 409: a different pod of that name now.
            Ok(r) if r.ok() || r.status == 404 || r.status == 409 => Outcome::Done,
            Ok(r) if transient(r.status) => Outcome::Retry,
            Ok(r) => {
                self.shared.warn(format_args!(
                    "deleting pod {}/{}: {} {}",
                    w.namespace,
                    w.name,
                    r.status,
                    r.message()
                ));
                Outcome::Done
            }
            Err(_) => Outcome::Retry,
        }
    }

    /// The pod's IP: the node's for host-network pods, the one it has (or
    /// was given on an earlier try), else a fresh one.
    fn pod_ip(&self, w: &Work) -> Option<Ipv4Addr> {
        if w.host_network {
            return Some(self.shared.nodes[w.node].ip);
        }
        if w.pod_ip.is_some() {
            return w.pod_ip;
        }
        let mut st = self.state.lock();
        let ip = st.ips.take()?;
        match st.work.get_mut(&w.uid) {
            Some(e) => {
                e.pod_ip = Some(ip);
                e.allocated = true;
            }
            None => st.ips.free(ip),
        }
        Some(ip)
    }

    async fn report_running(&self, w: &Work) -> Outcome {
        let Some(ip) = self.pod_ip(w) else {
            self.shared.warn(format_args!(
                "no pod IP left in 10.128.0.0/9 for {}/{}",
                w.namespace, w.name
            ));
            return Outcome::Retry;
        };
        let host_ip = self.shared.nodes[w.node].ip;
        let patch = running_patch(w, host_ip, ip, &rfc3339(jiff::Timestamp::now()));
        let path = format!("/api/v1/namespaces/{}/pods/{}/status", w.namespace, w.name);
        let r = self
            .shared
            .call(
                None,
                reqwest::Method::PATCH,
                &path,
                MERGE_PATCH,
                Some(serde_json::to_vec(&patch).expect("json")),
                1,
            )
            .await;
        match r {
            Ok(r) if r.ok() => Outcome::Reported,
            Ok(r) if r.status == 404 => Outcome::Done,
            Ok(r) if transient(r.status) => Outcome::Retry,
            Ok(r) => {
                self.shared.warn(format_args!(
                    "reporting pod {}/{} Running: {} {}",
                    w.namespace,
                    w.name,
                    r.status,
                    r.message()
                ));
                Outcome::Done
            }
            Err(_) => Outcome::Retry,
        }
    }
}

enum Outcome {
    /// Nothing more to do for this pod (as last seen).
    Done,
    /// Written `Running`.
    Reported,
    /// Try again after a back-off.
    Retry,
}

/// The `pods/status` merge patch that reports a pod `Running`.
fn running_patch(w: &Work, host_ip: Ipv4Addr, pod_ip: Ipv4Addr, now: &str) -> Value {
    let cond = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    let container_id = |c: &Container| format!("hollow://{}-{}", w.uid, c.name);
    let init: Vec<Value> = w
        .init_containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image, "imageID": c.image,
                "containerID": container_id(c),
                "ready": true, "started": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                    "startedAt": now, "finishedAt": now, "containerID": container_id(c)}},
                "lastState": {},
            })
        })
        .collect();
    let containers: Vec<Value> = w
        .containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image, "imageID": c.image,
                "containerID": container_id(c),
                "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": now}},
                "lastState": {},
            })
        })
        .collect();
    let mut status = json!({
        "phase": "Running",
        "conditions": [
            cond("PodReadyToStartContainers"),
            cond("Initialized"),
            cond("Ready"),
            cond("ContainersReady"),
            cond("PodScheduled"),
        ],
        "hostIP": host_ip.to_string(),
        "hostIPs": [{"ip": host_ip.to_string()}],
        "podIP": pod_ip.to_string(),
        "podIPs": [{"ip": pod_ip.to_string()}],
        "startTime": now,
        "containerStatuses": containers,
    });
    if !init.is_empty() {
        status["initContainerStatuses"] = Value::Array(init);
    }
    if w.qos.is_none() {
        let resources = |cs: &[Container]| -> Vec<Value> {
            cs.iter()
                .map(|c| json!({"resources": c.resources}))
                .collect()
        };
        let spec = json!({"containers": resources(&w.containers),
                          "initContainers": resources(&w.init_containers)});
        status["qosClass"] = json!(navarch_api::kinds::qos_class(&spec));
    }
    json!({"metadata": {"uid": w.uid}, "status": status})
}

/// Runs the reporter until cancelled.
pub(crate) async fn run(
    shared: Arc<Shared>,
    watch_client: reqwest::Client,
    tasks: TaskTracker,
    cancel: CancellationToken,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let reporter = Arc::new(Reporter {
        shared: shared.clone(),
        state: parking_lot::Mutex::new(State {
            work: HashMap::new(),
            dirty: HashSet::new(),
            processing: HashSet::new(),
            ips: IpPool {
                used: HashSet::new(),
                next: 0,
            },
        }),
        queue: tx,
        tasks: tasks.clone(),
        cancel: cancel.clone(),
    });
    // The writers: at most `pod_workers` at a time.
    let workers = Arc::new(Semaphore::new(shared.config.pod_workers));
    let dispatch = {
        let (reporter, tasks, cancel) = (reporter.clone(), tasks.clone(), cancel.clone());
        async move {
            loop {
                let uid = tokio::select! {
                    _ = cancel.cancelled() => return,
                    uid = rx.recv() => match uid { Some(u) => u, None => return },
                };
                let permit = tokio::select! {
                    _ = cancel.cancelled() => return,
                    p = workers.clone().acquire_owned() => p.expect("semaphore never closed"),
                };
                let (r, cancel) = (reporter.clone(), cancel.clone());
                tasks.spawn(async move {
                    let _permit = permit;
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = r.process(uid) => {}
                    }
                });
            }
        }
    };
    tasks.spawn(dispatch);
    watch_loop(&reporter, &watch_client, &cancel).await;
}

/// Why a watch ended.
enum WatchEnd {
    /// Closed by the server (timeout): watch again from the last version.
    Closed,
    /// 410 Gone, or the version is unusable: list again.
    Expired,
    /// Something failed: back off, then list again.
    Failed(String),
}

async fn watch_loop(r: &Reporter, client: &reqwest::Client, cancel: &CancellationToken) {
    // `spec.nodeName!=` selects bound pods; a server without that field
    // selector gets every pod, filtered here.
    let mut selector = Some("fieldSelector=spec.nodeName%21%3D");
    let mut backoff = Duration::from_millis(200);
    'relist: loop {
        if cancel.is_cancelled() {
            return;
        }
        let listed = tokio::select! {
            _ = cancel.cancelled() => return,
            l = list(r, client, selector) => l,
        };
        let mut rv = match listed {
            Ok(rv) => {
                backoff = Duration::from_millis(200);
                rv
            }
            Err(ListError::BadSelector) => {
                tracing::warn!(
                    "the server does not support fieldSelector=spec.nodeName!=; watching every pod"
                );
                selector = None;
                continue;
            }
            Err(ListError::Other(e)) => {
                r.shared.warn(format_args!("listing pods: {e}"));
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        loop {
            let end = tokio::select! {
                _ = cancel.cancelled() => return,
                e = watch(r, client, selector, &mut rv) => e,
            };
            match end {
                WatchEnd::Closed => continue,
                WatchEnd::Expired => continue 'relist,
                WatchEnd::Failed(e) => {
                    r.shared.warn(format_args!("watching pods: {e}"));
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue 'relist;
                }
            }
        }
    }
}

enum ListError {
    /// The server refused the field selector.
    BadSelector,
    Other(String),
}

/// Lists every (bound) pod page by page, replaces the state with what is
/// there, and returns the list's resourceVersion.
async fn list(
    r: &Reporter,
    client: &reqwest::Client,
    selector: Option<&str>,
) -> Result<String, ListError> {
    let mut cont = String::new();
    let mut seen: Vec<PodLite> = Vec::new();
    let rv = loop {
        let mut url = format!("{}/api/v1/pods?limit={PAGE}", r.shared.base);
        if let Some(s) = selector {
            url.push('&');
            url.push_str(s);
        }
        if !cont.is_empty() {
            url.push_str("&continue=");
            url.push_str(&percent_escape(&cont));
        }
        let resp = client
            .get(&url)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .map_err(|e| ListError::Other(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .map_err(|e| ListError::Other(e.to_string()))?;
        if status == 400 && selector.is_some() {
            return Err(ListError::BadSelector);
        }
        if status == 410 {
            // The continue token expired: start over.
            cont.clear();
            seen.clear();
            continue;
        }
        if !(200..300).contains(&status) {
            let msg: String = String::from_utf8_lossy(&body).chars().take(300).collect();
            return Err(ListError::Other(format!("{status} {msg}")));
        }
        let page: PodList = serde_json::from_slice(&body)
            .map_err(|e| ListError::Other(format!("decoding the pod list: {e}")))?;
        seen.extend(page.items);
        if page.metadata.continue_.is_empty() {
            break page.metadata.resource_version;
        }
        cont = page.metadata.continue_;
    };
    let mut st = r.state.lock();
    let present: HashSet<String> = seen.iter().map(|p| p.metadata.uid.clone()).collect();
    st.work.retain(|uid, _| present.contains(uid));
    let reported_ips: Vec<Ipv4Addr> = st.work.values().filter_map(|w| w.pod_ip).collect();
    st.ips.used.clear();
    for ip in reported_ips {
        st.ips.mark(ip);
    }
    for pod in seen {
        r.observe(&mut st, pod, false);
    }
    Ok(rv)
}

fn percent_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One watch from `rv`, which is advanced as events arrive.
async fn watch(
    r: &Reporter,
    client: &reqwest::Client,
    selector: Option<&str>,
    rv: &mut String,
) -> WatchEnd {
    let mut url = format!(
        "{}/api/v1/pods?watch=true&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion={}",
        r.shared.base,
        percent_escape(rv)
    );
    if let Some(s) = selector {
        url.push('&');
        url.push_str(s);
    }
    let mut resp = match client.get(&url).send().await {
        Ok(resp) => resp,
        Err(e) => return WatchEnd::Failed(e.to_string()),
    };
    match resp.status().as_u16() {
        200 => {}
        410 => return WatchEnd::Expired,
        s => {
            let text = resp.text().await.unwrap_or_default();
            return WatchEnd::Failed(format!(
                "{s} {}",
                text.chars().take(300).collect::<String>()
            ));
        }
    }
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => return WatchEnd::Closed,
            Err(e) => return WatchEnd::Failed(e.to_string()),
        };
        buf.extend_from_slice(&chunk);
        let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
            continue;
        };
        let lines: Vec<u8> = buf.drain(..=end).collect();
        let mut events = Vec::new();
        for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<WatchEvent>(line) {
                Ok(ev) => events.push(ev),
                Err(e) => return WatchEnd::Failed(format!("decoding a watch event: {e}")),
            }
        }
        let mut st = r.state.lock();
        for ev in events {
            match ev.type_.as_str() {
                "ADDED" | "MODIFIED" | "DELETED" => {
                    if !ev.object.metadata.resource_version.is_empty() {
                        rv.clone_from(&ev.object.metadata.resource_version);
                    }
                    r.observe(&mut st, ev.object, ev.type_ == "DELETED");
                }
                "BOOKMARK" => {
                    if !ev.object.metadata.resource_version.is_empty() {
                        rv.clone_from(&ev.object.metadata.resource_version);
                    }
                }
                "ERROR" => {
                    return if ev.object.code == Some(410) {
                        WatchEnd::Expired
                    } else {
                        WatchEnd::Failed(ev.object.message.unwrap_or_default())
                    };
                }
                other => return WatchEnd::Failed(format!("unknown watch event type {other:?}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work() -> Work {
        Work {
            namespace: "default".into(),
            name: "p".into(),
            uid: "u1".into(),
            node: 0,
            host_network: false,
            containers: vec![Container {
                name: "main".into(),
                image: "busybox".into(),
                resources: json!({"requests": {"cpu": "100m"}}),
            }],
            init_containers: vec![Container {
                name: "setup".into(),
                image: "busybox".into(),
                resources: Value::Null,
            }],
            qos: None,
            pod_ip: None,
            allocated: false,
            deleting: false,
            reported: false,
            attempts: 0,
        }
    }

    #[test]
    fn running_patch_looks_like_a_kubelet() {
        let p = running_patch(
            &work(),
            Ipv4Addr::new(10, 64, 0, 1),
            Ipv4Addr::new(10, 128, 0, 7),
            "2026-11-24T10:00:00Z",
        );
        let s = &p["status"];
        assert_eq!(p["metadata"]["uid"], "u1");
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["podIP"], "10.128.0.7");
        assert_eq!(s["podIPs"][0]["ip"], "10.128.0.7");
        assert_eq!(s["hostIPs"][0]["ip"], "10.64.0.1");
        assert_eq!(s["qosClass"], "Burstable");
        let types: Vec<_> = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            [
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled"
            ]
        );
        let c = &s["containerStatuses"][0];
        assert_eq!(c["containerID"], "hollow://u1-main");
        assert_eq!(
            (c["ready"].as_bool(), c["started"].as_bool()),
            (Some(true), Some(true))
        );
        assert!(c["state"]["running"]["startedAt"].is_string());
        assert_eq!(
            s["initContainerStatuses"][0]["state"]["terminated"]["reason"],
            "Completed"
        );
        // The server's qosClass is kept (it is immutable upstream).
        let mut w = work();
        w.qos = Some("Burstable".into());
        let p = running_patch(&w, Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, "t");
        assert!(p["status"].get("qosClass").is_none());
    }

    #[test]
    fn pod_ips_are_unique_and_skip_the_ones_in_use() {
        let mut pool = IpPool {
            used: HashSet::new(),
            next: 0,
        };
        pool.mark(Ipv4Addr::new(10, 128, 0, 2));
        pool.mark(Ipv4Addr::new(192, 168, 0, 2)); // not ours: ignored
        assert_eq!(pool.take(), Some(Ipv4Addr::new(10, 128, 0, 1)));
        assert_eq!(pool.take(), Some(Ipv4Addr::new(10, 128, 0, 3)));
        pool.free(Ipv4Addr::new(10, 128, 0, 1));
        assert_eq!(pool.used.len(), 2);
        // Wraps around to the lowest free offset once the end is reached.
        pool.next = POD_NET_SIZE - 3;
        assert_eq!(
            pool.take(),
            Some(Ipv4Addr::from(POD_NET + POD_NET_SIZE - 2))
        );
        assert_eq!(pool.take(), Some(Ipv4Addr::new(10, 128, 0, 1)));
    }

    #[test]
    fn watch_events_decode_pods_and_statuses() {
        let ev: WatchEvent = serde_json::from_str(
            r#"{"type":"MODIFIED","object":{"kind":"Pod","metadata":{"name":"p","namespace":"d","uid":"u","resourceVersion":"7","deletionTimestamp":"2026-11-24T10:00:00Z","deletionGracePeriodSeconds":30},"spec":{"nodeName":"hollow-1","containers":[{"name":"c","image":"i"}]},"status":{"phase":"Running","podIP":"10.128.0.9"}}}"#,
        )
        .unwrap();
        assert_eq!(ev.object.spec.node_name, "hollow-1");
        assert_eq!(ev.object.metadata.deletion_grace_period_seconds, Some(30));
        assert_eq!(
            parse_ip(&ev.object.status["podIP"]),
            Some(Ipv4Addr::new(10, 128, 0, 9))
        );
        let ev: WatchEvent = serde_json::from_str(
            r#"{"type":"ERROR","object":{"kind":"Status","status":"Failure","code":410,"message":"too old"}}"#,
        )
        .unwrap();
        assert_eq!(ev.object.code, Some(410));
        assert_eq!(percent_escape("a b/=="), "a%20b%2F%3D%3D");
    }
}
