//! The same idempotency key for the same flow gives one run, never two.

use crate::support;
use serde_json::json;
use settle::app::Host;
use std::time::Duration;

const FLOW: &str = r#"
name: once
idempotency_window: 300ms
steps:
  - { name: only, plugin: noop }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_same_run() {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    let flow = support::flow(FLOW);

    let first = host
        .engine
        .submit(&flow, json!({"n": 1}), Some("order-42".into()))
        .await
        .unwrap();
    let again = host
        .engine
        .submit(&flow, json!({"n": 1}), Some("order-42".into()))
        .await
        .unwrap();
    assert!(!first.existing);
    assert!(again.existing);
    assert_eq!(first.run_id, again.run_id);

    // Concurrent submissions with one fresh key: exactly one run.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (engine, flow) = (host.engine.clone(), flow.clone());
        tasks.push(tokio::spawn(async move {
            engine
                .submit(&flow, json!({}), Some("burst".into()))
                .await
                .unwrap()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    assert_eq!(
        ids.iter().filter(|s| !s.existing).count(),
        1,
        "exactly one new run"
    );
    assert!(ids.iter().all(|s| s.run_id == ids[0].run_id));

    // A different key is a different run.
    let other = host
        .engine
        .submit(&flow, json!({}), Some("order-43".into()))
        .await
        .unwrap();
    assert_ne!(other.run_id, first.run_id);
    for id in [first.run_id, ids[0].run_id, other.run_id] {
        host.engine.wait(id).await.unwrap();
    }
    assert_eq!(
        host.store
            .list_runs_now(&Default::default(), 100)
            .unwrap()
            .items
            .len(),
        3
    );
}

/// A key survives a restart: checked with an hour-long window, so the test
/// does not depend on how fast the store reopens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_survives_a_restart() {
    let dir = support::tempdir();
    let config = support::config(dir.path());
    let flow = support::flow(&FLOW.replace("300ms", "1h"));
    let first = {
        let host = Host::start(&config).await.unwrap();
        let s = host
            .engine
            .submit(&flow, json!({}), Some("k".into()))
            .await
            .unwrap();
        host.engine.wait(s.run_id).await.unwrap();
        host.shutdown().await.unwrap();
        s.run_id
    };
    let host = reopen(&config).await;
    let again = host
        .engine
        .submit(&flow, json!({}), Some("k".into()))
        .await
        .unwrap();
    assert!(again.existing);
    assert_eq!(again.run_id, first);
}

/// A key expires after its window (checked within one host).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_expires_after_its_window() {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    let flow = support::flow(FLOW);
    let first = host
        .engine
        .submit(&flow, json!({}), Some("k".into()))
        .await
        .unwrap();
    assert!(!first.existing);
    host.engine.wait(first.run_id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let later = host
        .engine
        .submit(&flow, json!({}), Some("k".into()))
        .await
        .unwrap();
    assert!(
        !later.existing,
        "outside the 300 ms window the key starts a new run"
    );
    assert_ne!(later.run_id, first.run_id);
}

pub async fn reopen(config: &settle::config::Config) -> Host {
    for _ in 0..200 {
        match Host::start(config).await {
            Ok(h) => return h,
            Err(e) if e.to_string().contains("in use") => {
                tokio::time::sleep(Duration::from_millis(25)).await
            }
            Err(e) => panic!("{e:#}"),
        }
    }
    panic!("store still locked after 5 s")
}
