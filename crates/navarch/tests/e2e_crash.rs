//! Crash safety of the whole server: `kill -9` during a write load, restart,
//! every acknowledged write is present and revisions keep increasing.
mod common;
use common::*;

use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn client(s: &TestServer) -> reqwest::Client {
    let ca = std::fs::read(s.dir.path().join("tls/ca.crt")).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let s = TestServer::start();
    let token = s.token();
    let base = s.url();
    let acked: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..16 {
        let c = client(&s);
        let acked = acked.clone();
        let url = format!("{base}/api/v1/namespaces/default/configmaps");
        let token = token.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{w}-{i}");
                let body = json!({"metadata": {"name": name}, "data": {"i": i.to_string()}});
                match c.post(&url).bearer_auth(&token).json(&body).send().await {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let v: Value = match r.json().await {
                            Ok(v) => v,
                            Err(_) => return,
                        };
                        let rv: i64 = v["metadata"]["resourceVersion"]
                            .as_str()
                            .unwrap()
                            .parse()
                            .unwrap();
                        acked.lock().unwrap().push((name, rv));
                    }
                    _ => return,
                }
            }
        }));
    }
    // Let the load run, then crash the server mid-flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 400 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (dir, port) = s.crash();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "too few writes acknowledged before the crash: {}",
        acked.len()
    );
    let max_rv = acked.iter().map(|(_, rv)| *rv).max().unwrap();

    let s = TestServer::start_in(dir, port);
    let c = client(&s);
    let list: Value = c
        .get(format!("{}/api/v1/namespaces/default/configmaps", s.url()))
        .bearer_auth(s.token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let present: std::collections::HashMap<String, i64> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["metadata"]["name"].as_str().unwrap().to_string(),
                i["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap(),
            )
        })
        .collect();
    for (name, rv) in &acked {
        assert_eq!(
            present.get(name),
            Some(rv),
            "acknowledged write {name} (rv {rv}) lost or changed after kill -9"
        );
    }
    let r: Value = c
        .post(format!("{}/api/v1/namespaces/default/configmaps", s.url()))
        .bearer_auth(s.token())
        .json(&json!({"metadata": {"name": "after-crash"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rv: i64 = r["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        rv > max_rv,
        "revision went backwards after restart: {rv} <= {max_rv}"
    );
}
