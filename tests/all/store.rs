//! The log is the source of truth: indexes rebuild from it, and the logs
//! written by earlier schema versions still read.

use crate::support;
use serde_json::json;
use settle::app::Host;
use settle::model::{Event, RunState, RunSummary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reindex_rebuilds_every_index_from_events() {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    let ok = support::flow("name: ok\nsteps:\n  - { name: a, plugin: noop }\n");
    let fails = support::flow(
        "name: fails\nsteps:\n  - { name: a, plugin: noop }\n  - { name: b, plugin: flaky, input: { mode: permanent } }\n",
    );
    let slow = support::flow(
        "name: slow\nsteps:\n  - name: a\n    plugin: flaky\n    input: { mode: fail-times, times: 5 }\n    retry: { max_attempts: 9, initial_interval: 1h }\n",
    );
    let mut runs = Vec::new();
    for i in 0..5 {
        runs.push(
            host.engine
                .submit(&ok, json!({}), Some(format!("k{i}")))
                .await
                .unwrap()
                .run_id,
        );
        runs.push(support::submit(&host, &fails, json!({})).await);
    }
    for r in &runs {
        host.engine.wait(*r).await.unwrap();
    }
    // One run waits an hour for its retry: it holds a timer.
    let waiting = support::submit(&host, &slow, json!({})).await;
    for _ in 0..200 {
        if host.store.summary_now(waiting).unwrap().unwrap().state == RunState::Retrying {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let before_runs = host
        .store
        .list_runs_now(&Default::default(), 100)
        .unwrap()
        .items;
    let before_active = host.store.active_runs_now().unwrap().items;
    assert_eq!(before_active.len(), 1);
    assert_eq!(before_active[0].run_id, waiting);

    let report = host.store.reindex_now().unwrap();
    assert_eq!(report.runs, 11);
    assert_eq!(report.active, 1);
    assert_eq!(report.idempotency_keys, 5);
    assert_eq!(report.dropped, 0, "nothing stale to drop");

    assert_eq!(
        host.store
            .list_runs_now(&Default::default(), 100)
            .unwrap()
            .items,
        before_runs
    );
    assert_eq!(host.store.active_runs_now().unwrap().items, before_active);
    assert_eq!(
        host.store
            .find_idempotent_now("ok", "k3", u64::MAX, 0)
            .unwrap(),
        Some(runs[6])
    );
    for r in &runs {
        let folded = RunSummary::fold(&host.store.events_now(*r).unwrap()).unwrap();
        assert_eq!(
            Some(folded),
            host.store.summary_now(*r).unwrap(),
            "summary is the fold of the log"
        );
    }
}

/// A log written by schema version 1, kept as bytes: every later host must
/// read it and fold it to the same summary.
#[test]
fn schema_v1_log_still_reads() {
    let text = include_str!("../fixtures/events-v1.jsonl");
    let events: Vec<Event> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("v1 event reads"))
        .collect();
    assert!(events.iter().all(|e| e.v == 1));
    let summary = RunSummary::fold(&events).unwrap();
    assert_eq!(summary.state, RunState::Settled);
    assert_eq!(summary.steps, ["charge", "reserve", "confirm"]);
    assert!(summary.outputs.iter().all(Option::is_some));
    assert_eq!(summary.next_seq, events.len() as u64);
}

/// With `sync = "fsync"` (the default) every acknowledged commit has been
/// `fdatasync`ed, large values (sled blobs) included; with `flush` none is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_are_fsynced_unless_configured_otherwise() {
    let flow = support::flow("name: ok\nsteps:\n  - { name: a, plugin: noop }\n");
    // Over sled's ~128 KiB log limit: stored as a blob file, synced too.
    let large = json!({ "note": "x".repeat(300 * 1024) });

    let dir = support::tempdir();
    let config = support::config(dir.path());
    assert_eq!(config.store.sync, settle::store::SyncMode::Fsync);
    let host = Host::start(&config).await.unwrap();
    let before = host.store.disk_syncs();
    let run = support::run_to_end(&host, &flow, large.clone()).await;
    assert_eq!(run.state, RunState::Settled);
    let synced = host.store.disk_syncs() - before;
    // Two commits, each waiting for the one before: the run accepted, then
    // its step completed together with the run settled.
    assert!(synced >= 2, "{synced} synced commits");
    let blobs = dir.path().join("data/store/blobs");
    assert!(
        std::fs::read_dir(&blobs).is_ok_and(|mut d| d.next().is_some()),
        "the large input went to a blob file"
    );
    assert!(
        host.store.blob_syncs() >= 1,
        "the blob holding the large input was fdatasynced"
    );
    drop(host);

    let dir = support::tempdir();
    let mut config = support::config(dir.path());
    config.store.sync = settle::store::SyncMode::Flush;
    let host = Host::start(&config).await.unwrap();
    let run = support::run_to_end(&host, &flow, large).await;
    assert_eq!(run.state, RunState::Settled);
    assert_eq!(host.store.disk_syncs(), 0);
    assert_eq!(host.store.blob_syncs(), 0);
}

/// A commit that cannot be made durable stops the store for good
/// (fail-stop): every later commit and idempotency lookup fails, the
/// drivers stop, and nothing is acknowledged that is not on disk. Here the
/// store's directory disappears under the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_stops_the_store_for_good() {
    let dir = support::tempdir();
    let config = support::config(dir.path());
    let host = Host::start(&config).await.unwrap();
    let flow = support::flow(
        "name: later\nsteps:\n  - name: a\n    plugin: flaky\n    input: { mode: fail-times, times: 1 }\n    retry: { max_attempts: 3, initial_interval: 300ms, jitter: 0 }\n",
    );
    let run = support::submit(&host, &flow, json!({})).await;
    std::fs::remove_dir_all(config.data_dir.join("store")).unwrap();
    let waited = tokio::time::timeout(std::time::Duration::from_secs(10), host.engine.wait(run))
        .await
        .expect("the driver stops instead of retrying forever");
    // Nothing more is read from sled's memory, which may be ahead of the disk.
    assert!(
        matches!(waited, Err(settle::store::StoreError::Stopped { .. })),
        "{waited:?}"
    );
    let reason = host.store.stopped().expect("the store stopped").to_string();
    assert!(
        reason.contains("No such file") || reason.contains("writer failed"),
        "{reason}"
    );
    let err = host
        .engine
        .submit(&flow, json!({}), Some("k".into()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the store stopped"), "{err}");
}
