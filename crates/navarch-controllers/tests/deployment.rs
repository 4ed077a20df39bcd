//! The Deployment controller against a real in-process API server
//! (memory store), with the scheduler, the replication controller and
//! hollow nodes (`navarch_sim`) that report pods Running and Ready.

#![allow(dead_code)]

use navarch_api::registry::lookup;
use navarch_api::ResourceType;
use navarch_apiserver::cache::Filter;
use navarch_apiserver::ApiServer;
use navarch_controllers::deployment;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::*;

fn deployments() -> &'static ResourceType {
    lookup("apps", "v1", "deployments").unwrap()
}

fn replicasets() -> &'static ResourceType {
    lookup("apps", "v1", "replicasets").unwrap()
}

fn deploy(name: &str, replicas: i64, image: &str, strategy: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "strategy": strategy,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image,
                    "resources": {"requests": {"cpu": "10m"}}}]}}}})
}

fn cached(server: &ApiServer, rt: &'static ResourceType) -> Vec<Value> {
    server
        .cache
        .kind(rt)
        .list(&Filter::default(), 0)
        .items
        .iter()
        .map(|o| o.value())
        .collect()
}

/// ReplicaSets controlled by `uid`, oldest first.
fn sets_of(server: &ApiServer, uid: &str) -> Vec<Value> {
    let mut v: Vec<Value> = cached(server, replicasets())
        .into_iter()
        .filter(|s| controller_uid(s) == Some(uid))
        .collect();
    v.sort_by_key(|s| {
        s["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
            .as_str()
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(0)
    });
    v
}

fn revision(o: &Value) -> &str {
    o["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        .as_str()
        .unwrap_or("")
}

fn condition<'a>(d: &'a Value, ty: &str) -> &'a Value {
    d["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
        .unwrap_or(&Value::Null)
}

fn image(o: &Value) -> &str {
    o["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
}

impl Cluster {
    /// Waits until `name` has rolled out `replicas` at `generation` as
    /// `kubectl rollout status` reads it.
    async fn rolled_out(&self, name: &str, generation: i64, replicas: i64) -> Value {
        self.rolled_out_within(name, generation, replicas, Duration::from_secs(30))
            .await
    }

    async fn rolled_out_within(
        &self,
        name: &str,
        generation: i64,
        replicas: i64,
        limit: Duration,
    ) -> Value {
        let mut last = Value::Null;
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            let d = self.read(deployments(), name).await;
            let s = &d["status"];
            let n = |f: &str| s[f].as_i64().unwrap_or(0);
            if n("observedGeneration") >= generation
                && d["metadata"]["generation"].as_i64() == Some(generation)
                && n("updatedReplicas") == replicas
                && n("replicas") == replicas
                && n("availableReplicas") == replicas
                && condition(&d, "Progressing")["reason"] == "NewReplicaSetAvailable"
            {
                return d;
            }
            last = s.clone();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{name} not rolled out at generation {generation}: {last:#}");
    }

    /// Changes the image of the only container (the rest of the
    /// template unchanged, as `kubectl set image` does).
    async fn set_image(&self, name: &str, image: &str) {
        let d = self.read(deployments(), name).await;
        let mut containers = d["spec"]["template"]["spec"]["containers"].clone();
        containers[0]["image"] = json!(image);
        self.patch(
            deployments(),
            name,
            json!({"spec": {"template": {"spec": {"containers": containers}}}}),
        )
        .await;
    }
}

/// Samples the cluster while a rollout runs: violations of the rolling
/// update's bounds, and how many samples were taken.
struct Sampler {
    stop: Arc<AtomicBool>,
    violations: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<usize>,
}

impl Sampler {
    /// `check(sets, pods)` returns a violation, if any.
    fn start(
        server: Arc<ApiServer>,
        uid: String,
        check: impl Fn(&[Value], &[Value]) -> Option<String> + Send + 'static,
    ) -> Sampler {
        Sampler::start_every(server, uid, Duration::from_millis(1), check)
    }

    /// As [`Sampler::start`], one sample per `every`.
    fn start_every(
        server: Arc<ApiServer>,
        uid: String,
        every: Duration,
        check: impl Fn(&[Value], &[Value]) -> Option<String> + Send + 'static,
    ) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let violations = Arc::new(Mutex::new(Vec::new()));
        let (s, v) = (stop.clone(), violations.clone());
        let task = tokio::spawn(async move {
            let mut n = 0;
            while !s.load(Ordering::Relaxed) {
                let sets = sets_of(&server, &uid);
                let uids: Vec<&str> = sets
                    .iter()
                    .map(|s| s["metadata"]["uid"].as_str().unwrap())
                    .collect();
                let pods: Vec<Value> = cached(&server, lookup("", "v1", "pods").unwrap())
                    .into_iter()
                    .filter(|p| controller_uid(p).is_some_and(|u| uids.contains(&u)))
                    .collect();
                if let Some(e) = check(&sets, &pods) {
                    v.lock().unwrap().push(e);
                }
                n += 1;
                tokio::time::sleep(every).await;
            }
            n
        });
        Sampler {
            stop,
            violations,
            task,
        }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let n = self.task.await.unwrap();
        let v = self.violations.lock().unwrap().clone();
        (n, v)
    }
}

fn ready(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn spec_replicas(s: &Value) -> i64 {
    s["spec"]["replicas"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_honours_surge_and_unavailable_then_rolls_back() {
    let c = Cluster::start_with(true).await;
    let _sim = c.sim(3).await;
    let d = c
        .create(
            deployments(),
            deploy("web", 5, "nginx:1", json!({"type": "RollingUpdate"})),
        )
        .await;
    let id = uid(&d);
    let d = c.rolled_out("web", 1, 5).await;
    assert_eq!(revision(&d), "1");
    let avail = condition(&d, "Available");
    assert_eq!(avail["status"], "True");
    assert_eq!(avail["reason"], "MinimumReplicasAvailable");
    assert_eq!(condition(&d, "Progressing")["status"], "True");
    assert_eq!(d["status"]["readyReplicas"], 5);
    let sets = sets_of(&c.server, &id);
    assert_eq!(sets.len(), 1);
    let first = sets[0].clone();
    let hash = first["metadata"]["labels"]["pod-template-hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(first["metadata"]["name"], format!("web-{hash}"));
    assert_eq!(
        first["spec"]["selector"]["matchLabels"]["pod-template-hash"],
        hash
    );
    assert_eq!(
        first["spec"]["template"]["metadata"]["labels"]["pod-template-hash"],
        hash
    );
    assert_eq!(revision(&first), "1");
    let ann = &first["metadata"]["annotations"];
    assert_eq!(ann["deployment.kubernetes.io/desired-replicas"], "5");
    // 25% of 5: surge rounds up to 2, unavailable down to 1.
    assert_eq!(ann["deployment.kubernetes.io/max-replicas"], "7");
    let r = &first["metadata"]["ownerReferences"][0];
    assert_eq!(
        (r["kind"].as_str(), r["name"].as_str()),
        (Some("Deployment"), Some("web"))
    );
    c.wait_event("web", "ScalingReplicaSet").await;
    let msgs: Vec<String> = c
        .events_for("web")
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        msgs.contains(&format!("Scaled up replica set web-{hash} to 5")),
        "{msgs:?}"
    );

    // A new image: a second ReplicaSet, bounds held at every sample.
    let mixed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let m = mixed.clone();
    let sampler = Sampler::start(c.server.clone(), id.clone(), move |sets, pods| {
        if sets.len() == 2 && sets.iter().all(|s| spec_replicas(s) > 0) {
            m.fetch_add(1, Ordering::Relaxed);
        }
        let total: i64 = sets.iter().map(spec_replicas).sum();
        let ready = pods.iter().filter(|p| ready(p)).count();
        if total > 7 {
            return Some(format!("{total} replicas wanted, more than 5 + 2"));
        }
        if ready < 4 {
            return Some(format!("{ready} ready pods, fewer than 5 - 1"));
        }
        None
    });
    c.set_image("web", "nginx:2").await;
    let d = c.rolled_out("web", 2, 5).await;
    let (samples, violations) = sampler.finish().await;
    // The sampler saw the rollout midway: both ReplicaSets scaled up.
    assert!(
        mixed.load(Ordering::Relaxed) > 0,
        "no mixed state in {samples} samples"
    );
    assert!(violations.is_empty(), "{violations:#?}");
    assert_eq!(revision(&d), "2");
    let sets = sets_of(&c.server, &id);
    assert_eq!(sets.len(), 2);
    assert_eq!(sets[0]["metadata"]["name"], first["metadata"]["name"]);
    assert_eq!(spec_replicas(&sets[0]), 0);
    assert_eq!(image(&sets[1]), "nginx:2");
    assert_eq!(spec_replicas(&sets[1]), 5);
    assert_eq!(revision(&sets[1]), "2");
    let second = sets[1]["metadata"]["name"].as_str().unwrap().to_string();
    let msgs: Vec<String> = c
        .events_for("web")
        .iter()
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        msgs.iter()
            .any(|m| m.starts_with(&format!("Scaled down replica set web-{hash} to "))),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.starts_with(&format!("Scaled up replica set {second} to "))),
        "{msgs:?}"
    );

    // kubectl rollout status reads the status as written.
    let out = std::process::Command::new("kubectl")
        .args([
            "--kubeconfig",
            c.kubeconfig.to_str().unwrap(),
            "rollout",
            "status",
            "deployment/web",
            "--timeout=20s",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("deployment \"web\" successfully rolled out"),
        "{stdout}"
    );

    // Rollback (as kubectl rollout undo does): the template back, the
    // first ReplicaSet reused with a new revision.
    c.set_image("web", "nginx:1").await;
    let d = c.rolled_out("web", 3, 5).await;
    assert_eq!(revision(&d), "3");
    let sets = sets_of(&c.server, &id);
    assert_eq!(sets.len(), 2, "no third ReplicaSet");
    assert_eq!(sets[1]["metadata"]["name"], first["metadata"]["name"]);
    assert_eq!(revision(&sets[1]), "3");
    assert_eq!(
        sets[1]["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"],
        "1"
    );
    assert_eq!(spec_replicas(&sets[1]), 5);
    assert_eq!(spec_replicas(&sets[0]), 0);
    assert_eq!(d["status"]["unavailableReplicas"].as_i64().unwrap_or(0), 0);
}

/// The scale test: 1,000 replicas on 25 hollow nodes roll out,
/// roll to a new image within the surge and unavailability bounds, and
/// roll back to the first ReplicaSet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_replicas_roll_out_update_and_roll_back() {
    const N: i64 = 1000;
    let limit = Duration::from_secs(240);
    let c = Cluster::start_with(true).await;
    let _sim = c.sim(25).await;
    let d = c
        .create(
            deployments(),
            deploy("big", N, "nginx:1", json!({"type": "RollingUpdate"})),
        )
        .await;
    let id = uid(&d);
    let d = c.rolled_out_within("big", 1, N, limit).await;
    assert_eq!(d["status"]["readyReplicas"], N);
    let first = sets_of(&c.server, &id)[0]["metadata"]["name"].clone();

    // 25% of 1,000: at most 1,250 pods wanted, at least 750 ready.
    let every = Duration::from_millis(50);
    let sampler = Sampler::start_every(c.server.clone(), id.clone(), every, move |sets, pods| {
        let total: i64 = sets.iter().map(spec_replicas).sum();
        let ready = pods.iter().filter(|p| ready(p)).count();
        if total > N + N / 4 {
            return Some(format!("{total} replicas wanted"));
        }
        if (ready as i64) < N - N / 4 {
            return Some(format!("{ready} ready pods"));
        }
        None
    });
    c.set_image("big", "nginx:2").await;
    let d = c.rolled_out_within("big", 2, N, limit).await;
    let (samples, violations) = sampler.finish().await;
    assert!(samples > 0);
    assert!(violations.is_empty(), "{violations:#?}");
    assert_eq!(revision(&d), "2");
    let sets = sets_of(&c.server, &id);
    assert_eq!(sets.len(), 2);
    assert_eq!((spec_replicas(&sets[0]), spec_replicas(&sets[1])), (0, N));
    assert_eq!(image(&sets[1]), "nginx:2");

    // Roll back: the first ReplicaSet again, revision 3, every pod on it.
    c.set_image("big", "nginx:1").await;
    let d = c.rolled_out_within("big", 3, N, limit).await;
    assert_eq!(revision(&d), "3");
    let sets = sets_of(&c.server, &id);
    assert_eq!(sets.len(), 2, "no third ReplicaSet");
    assert_eq!(sets[1]["metadata"]["name"], first);
    assert_eq!(spec_replicas(&sets[1]), N);
    let back = uid(&sets[1]);
    c.wait("only the first ReplicaSet's pods are left", |c| {
        let pods = c.all_pods();
        pods.len() == N as usize
            && pods
                .iter()
                .all(|p| controller_uid(p) == Some(back.as_str()) && ready(p))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_stops_old_pods_before_starting_new_ones() {
    let c = Cluster::start_with(true).await;
    let _sim = c.sim(2).await;
    let d = c
        .create(
            deployments(),
            deploy("db", 3, "pg:1", json!({"type": "Recreate"})),
        )
        .await;
    let id = uid(&d);
    c.rolled_out("db", 1, 3).await;
    let sampler = Sampler::start(c.server.clone(), id.clone(), |sets, pods| {
        let mut with_pods = 0;
        for s in sets {
            let u = s["metadata"]["uid"].as_str().unwrap();
            if pods.iter().any(|p| controller_uid(p) == Some(u)) {
                with_pods += 1;
            }
        }
        (with_pods > 1).then(|| format!("pods of {with_pods} ReplicaSets at once"))
    });
    c.set_image("db", "pg:2").await;
    let d = c.rolled_out("db", 2, 3).await;
    let (samples, violations) = sampler.finish().await;
    assert!(samples > 3, "{samples} samples");
    assert!(violations.is_empty(), "{violations:#?}");
    assert_eq!(revision(&d), "2");
    let sets = sets_of(&c.server, &id);
    assert_eq!(sets.len(), 2);
    assert_eq!(spec_replicas(&sets[0]), 0);
    assert_eq!(image(&sets[1]), "pg:2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_deployment_scales_but_does_not_roll_out_until_resumed() {
    let c = Cluster::start_with(true).await;
    let _sim = c.sim(2).await;
    let d = c
        .create(
            deployments(),
            deploy("api", 2, "app:1", json!({"type": "RollingUpdate"})),
        )
        .await;
    let id = uid(&d);
    c.rolled_out("api", 1, 2).await;
    c.patch(deployments(), "api", json!({"spec": {"paused": true}}))
        .await;
    c.set_image("api", "app:2").await;
    c.patch(deployments(), "api", json!({"spec": {"replicas": 3}}))
        .await;
    // Scaling still applies to the one ReplicaSet; no new one.
    c.wait("scaled while paused", |c| {
        let sets = sets_of(&c.server, &id);
        sets.len() == 1 && spec_replicas(&sets[0]) == 3
    })
    .await;
    c.wait_status(
        deployments(),
        "api",
        json!({"observedGeneration": 4, "availableReplicas": 3}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sets_of(&c.server, &id).len(), 1, "no rollout while paused");
    let d = c.read(deployments(), "api").await;
    let p = condition(&d, "Progressing");
    assert_eq!(
        (p["status"].as_str(), p["reason"].as_str()),
        (Some("Unknown"), Some("DeploymentPaused"))
    );

    c.patch(deployments(), "api", json!({"spec": {"paused": false}}))
        .await;
    let d = c.rolled_out("api", 5, 3).await;
    assert_eq!(revision(&d), "2");
    let sets = sets_of(&c.server, &id);
    assert_eq!(sets.len(), 2);
    assert_eq!(image(&sets[1]), "app:2");
    assert_eq!(spec_replicas(&sets[1]), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_history_limit_prunes_the_oldest_replica_sets() {
    let c = Cluster::start_with(true).await;
    let _sim = c.sim(2).await;
    let mut d = deploy("h", 1, "v:1", json!({"type": "RollingUpdate"}));
    d["spec"]["revisionHistoryLimit"] = json!(1);
    let d = c.create(deployments(), d).await;
    let id = uid(&d);
    c.rolled_out("h", 1, 1).await;
    for (i, img) in ["v:2", "v:3", "v:4"].into_iter().enumerate() {
        c.set_image("h", img).await;
        c.rolled_out("h", i as i64 + 2, 1).await;
    }
    c.wait("pruned to the new one and one old", |c| {
        sets_of(&c.server, &id).len() == 2
    })
    .await;
    let sets = sets_of(&c.server, &id);
    assert_eq!(image(&sets[0]), "v:3");
    assert_eq!(revision(&sets[0]), "3");
    assert_eq!(image(&sets[1]), "v:4");
    assert_eq!(revision(&sets[1]), "4");
}

fn uid(o: &Value) -> String {
    o["metadata"]["uid"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_deadline_exceeded_when_pods_never_become_available() {
    let c = Cluster::start_with(true).await;
    // No nodes: the pods stay Pending.
    let mut d = deploy("stuck", 2, "x:1", json!({"type": "RollingUpdate"}));
    d["spec"]["progressDeadlineSeconds"] = json!(1);
    c.create(deployments(), d).await;
    let mut last = Value::Null;
    for _ in 0..1000 {
        let d = c.read(deployments(), "stuck").await;
        if condition(&d, "Progressing")["reason"] == "ProgressDeadlineExceeded" {
            let p = condition(&d, "Progressing");
            assert_eq!(p["status"], "False");
            assert!(
                p["message"]
                    .as_str()
                    .unwrap()
                    .ends_with("has timed out progressing."),
                "{p}"
            );
            let a = condition(&d, "Available");
            assert_eq!(a["status"], "False");
            assert_eq!(a["reason"], "MinimumReplicasUnavailable");
            assert_eq!(d["status"]["unavailableReplicas"], 2);
            assert_eq!(d["status"]["updatedReplicas"], 2);
            return;
        }
        last = d["status"].clone();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no ProgressDeadlineExceeded: {last:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_mid_rollout_is_shared_in_proportion() {
    let c = Cluster::start_with(true).await;
    let _sim = c.sim(2).await;
    let d = deploy(
        "p",
        10,
        "v:1",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 0}}),
    );
    let d = c.create(deployments(), d).await;
    let id = uid(&d);
    c.rolled_out("p", 1, 10).await;
    // A template whose pods cannot be scheduled: the rollout stops at
    // the surge (new 3, old 10).
    c.patch(
        deployments(),
        "p",
        json!({"spec": {"template": {"spec": {"nodeSelector": {"nowhere": "true"}}}}}),
    )
    .await;
    c.wait("stuck at the surge", |c| {
        let s = sets_of(&c.server, &id);
        s.len() == 2 && spec_replicas(&s[0]) == 10 && spec_replicas(&s[1]) == 3
    })
    .await;
    c.patch(deployments(), "p", json!({"spec": {"replicas": 20}}))
        .await;
    // 20 + 3 shared 10:3 (old 10 + 7 and the remainder, new 3 + 2).
    c.wait("scaled in proportion", |c| {
        let s = sets_of(&c.server, &id);
        s.len() == 2 && spec_replicas(&s[0]) == 18 && spec_replicas(&s[1]) == 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let s = sets_of(&c.server, &id);
    assert_eq!((spec_replicas(&s[0]), spec_replicas(&s[1])), (18, 5));
    for rs in &s {
        let a = &rs["metadata"]["annotations"];
        assert_eq!(a["deployment.kubernetes.io/desired-replicas"], "20");
        assert_eq!(a["deployment.kubernetes.io/max-replicas"], "23");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_name_bumps_the_collision_count() {
    let c = Cluster::start_with(true).await;
    let _sim = c.sim(1).await;
    // Paused from the start: no ReplicaSet yet, the stored template known.
    let mut d = deploy("col", 1, "v:1", json!({"type": "RollingUpdate"}));
    d["spec"]["paused"] = json!(true);
    let d = c.create(deployments(), d).await;
    let id = uid(&d);
    let hash = deployment::template_hash(&d["spec"]["template"], None);
    // Someone else's ReplicaSet under the name the controller would use
    // (labels the selector does not match: not adopted).
    let mut other = rs(&format!("col-{hash}"), 0);
    other["spec"]["selector"] = json!({"matchLabels": {"other": "x"}});
    other["spec"]["template"]["metadata"]["labels"] = json!({"other": "x"});
    c.create(replicasets(), other).await;
    c.patch(deployments(), "col", json!({"spec": {"paused": false}}))
        .await;
    let d = c.rolled_out("col", 2, 1).await;
    assert_eq!(d["status"]["collisionCount"], 1);
    let sets = sets_of(&c.server, &id);
    assert_eq!(sets.len(), 1);
    let h1 = deployment::template_hash(&d["spec"]["template"], Some(1));
    assert_eq!(sets[0]["metadata"]["name"], format!("col-{h1}"));
    assert_ne!(h1, hash);
    let theirs = c.read(replicasets(), &format!("col-{hash}")).await;
    assert!(theirs["metadata"]["ownerReferences"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_to_create_show_in_the_deployment_status() {
    let c = Cluster::start_with(true).await;
    let _sim = c.sim(1).await;
    // A name with no room left for the hash: its ReplicaSet is refused.
    let long = "x".repeat(250);
    let mut d = deploy("long", 1, "v:1", json!({"type": "RollingUpdate"}));
    d["metadata"]["name"] = json!(long);
    c.create(deployments(), d).await;
    let mut last = Value::Null;
    for _ in 0..500 {
        last = c.read(deployments(), &long).await;
        if condition(&last, "Progressing")["reason"] == "ReplicaSetCreateError" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let p = condition(&last, "Progressing");
    assert_eq!(p["status"], "False", "{last:#}");
    assert_eq!(p["reason"], "ReplicaSetCreateError");
    assert!(
        p["message"]
            .as_str()
            .unwrap()
            .starts_with("Failed to create new replica set"),
        "{p}"
    );
    let e = c.wait_event(&long, "ReplicaSetCreateError").await;
    assert_eq!(e["type"], "Warning");

    // Pods the API server refuses (no such ServiceAccount): the
    // ReplicaSet's ReplicaFailure shows on the Deployment, and goes
    // when the template is fixed.
    let mut d = deploy("sa", 2, "v:1", json!({"type": "RollingUpdate"}));
    d["spec"]["template"]["spec"]["serviceAccountName"] = json!("missing");
    c.create(deployments(), d).await;
    let mut last = Value::Null;
    for _ in 0..500 {
        last = c.read(deployments(), "sa").await;
        if condition(&last, "ReplicaFailure")["status"] == "True" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let f = condition(&last, "ReplicaFailure");
    assert_eq!(f["reason"], "FailedCreate", "{last:#}");
    c.patch(
        deployments(),
        "sa",
        json!({"spec": {"template": {"spec": {"serviceAccountName": null}}}}),
    )
    .await;
    c.rolled_out("sa", 2, 2).await;
    // Once the failing ReplicaSet is scaled to zero (after its create
    // backoff), its failure is cleared, and the Deployment's with it.
    let mut last = Value::Null;
    for _ in 0..1000 {
        last = c.read(deployments(), "sa").await;
        if condition(&last, "ReplicaFailure").is_null() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("ReplicaFailure stays: {:#}", last["status"]);
}
