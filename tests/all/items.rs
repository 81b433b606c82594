//! `for_each` steps: one call per item, at most `concurrency` at a time,
//! each item's output recorded as it comes; a retry calls only the items
//! without one; undoing the step undoes its items, newest first.

use crate::support;
use serde_json::json;
use settle::model::{EventKind, RunState};

fn items_completed(host: &settle::app::Host, run: settle::model::RunId) -> Vec<u32> {
    support::events(host, run)
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::ItemCompleted { item, .. } => Some(item),
            _ => None,
        })
        .collect()
}

const EACH: &str = r#"
name: each
steps:
  - name: ship
    plugin: noop
    for_each: "${{ input.orders }}"
    concurrency: 2
    input: { order: "${{ item.id }}", position: "${{ item_index }}", run: "${{ run.id }}" }
  - name: count
    plugin: noop
    input: { shipped: "${{ steps.ship.output | length }}" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_item_is_called_once_and_the_step_gives_their_outputs_in_order() {
    let dir = support::tempdir();
    let host = settle::app::Host::start(&support::config(dir.path()))
        .await
        .unwrap();
    let flow = support::flow(EACH);
    let orders: Vec<_> = (0..5).map(|i| json!({"id": format!("o{i}")})).collect();
    let done = support::run_to_end(&host, &flow, json!({ "orders": orders })).await;
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    let run = done.run_id.to_string();
    let expected: Vec<_> = (0..5)
        .map(|i| json!({"order": format!("o{i}"), "position": i, "run": run}))
        .collect();
    assert_eq!(done.outputs[0], Some(json!(expected)));
    assert_eq!(done.outputs[1], Some(json!({"shipped": 5})));
    let mut called = items_completed(&host, done.run_id);
    called.sort_unstable();
    assert_eq!(called, vec![0, 1, 2, 3, 4], "each item once");
    // Calls are written down before they go out, at most 2 at a time.
    let batches: Vec<Vec<u32>> = support::events(&host, done.run_id)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ItemsStarted { items, .. } => Some(items),
            _ => None,
        })
        .collect();
    assert_eq!(batches[0], vec![0, 1], "{batches:?}");
    assert!(batches.iter().all(|b| b.len() <= 2), "{batches:?}");
    assert_eq!(batches.concat().len(), 5, "{batches:?}");
    host.shutdown().await.unwrap();
}

const SOME_FAIL: &str = r#"
name: some-fail
steps:
  - { name: charge, plugin: noop, input: { amount: 5 } }
  - name: ship
    plugin: flaky
    for_each: "${{ input.modes }}"
    input: { mode: "${{ item }}", times: 1 }
    retry: { max_attempts: 3, initial_interval: 10ms, jitter: 0 }
"#;

/// A retryable item is retried alone: the items that completed are not
/// called again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_calls_only_the_items_without_an_output() {
    let dir = support::tempdir();
    let host = settle::app::Host::start(&support::config(dir.path()))
        .await
        .unwrap();
    let flow = support::flow(SOME_FAIL);
    let done =
        support::run_to_end(&host, &flow, json!({"modes": ["ok", "fail-times", "ok"]})).await;
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    let mut called = items_completed(&host, done.run_id);
    called.sort_unstable();
    assert_eq!(called, vec![0, 1, 2], "no item completed twice");
    let failed = support::event_names(&host, done.run_id)
        .iter()
        .filter(|n| *n == "step-failed")
        .count();
    assert_eq!(failed, 1);
    host.shutdown().await.unwrap();
}

/// An item that fails for good undoes the items that completed, newest
/// first, then the steps before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_failing_for_good_undoes_the_items_done_newest_first() {
    let dir = support::tempdir();
    let host = settle::app::Host::start(&support::config(dir.path()))
        .await
        .unwrap();
    let flow = support::flow(SOME_FAIL);
    let done = support::run_to_end(
        &host,
        &flow,
        json!({"modes": ["ok", "ok", "permanent", "ok"]}),
    )
    .await;
    assert_eq!(done.state, RunState::Compensated, "{done:#?}");
    let events = support::events(&host, done.run_id);
    let undone: Vec<String> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::ItemCompensated { item, .. } => Some(format!("ship[{item}]")),
            EventKind::CompensationCompleted { index: 0, .. } => Some("charge".into()),
            _ => None,
        })
        .collect();
    assert_eq!(undone, vec!["ship[1]", "ship[0]", "charge"]);
    // Item 3 was never called: the first failure stops new calls.
    assert_eq!(items_completed(&host, done.run_id), vec![0, 1]);
    let status = host.engine.status(done.run_id).await.unwrap().unwrap();
    assert!(
        status.phrase.contains("all changes were undone"),
        "{}",
        status.phrase
    );
    host.shutdown().await.unwrap();
}

const UNKNOWN: &str = r#"
name: unknown-outcome
steps:
  - name: ship
    plugin: flaky
    for_each: "${{ input.modes }}"
    input: { mode: "${{ item }}" }
    retry: { max_attempts: 1 }
"#;

/// An item whose call trapped may have had its effect: it is undone with
/// the completed ones (with no output), not left in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_whose_outcome_is_unknown_is_undone_too() {
    let dir = support::tempdir();
    let host = settle::app::Host::start(&support::config(dir.path()))
        .await
        .unwrap();
    let flow = support::flow(UNKNOWN);
    let done = support::run_to_end(&host, &flow, json!({"modes": ["ok", "trap", "ok"]})).await;
    assert_eq!(done.state, RunState::Compensated, "{done:#?}");
    let undone: Vec<u32> = support::events(&host, done.run_id)
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::ItemCompensated { item, .. } => Some(item),
            _ => None,
        })
        .collect();
    assert_eq!(
        undone,
        vec![0, 1],
        "the completed item, then the trapped one"
    );
    host.shutdown().await.unwrap();
}
