//! `upgrade: at-step-boundary`: a run in flight moves, between two steps,
//! to the current version of its flow when that version asks for it and
//! its first steps are the run's; otherwise it keeps its version.

use crate::support;
use serde_json::json;
use settle::app::Host;
use settle::model::{EventKind, RunState};
use std::sync::Arc;

const V1: &str = "
name: upgraded
version: '1'
steps:
  - { name: first, plugin: noop, input: { v: 1 } }
  - name: cool-off
    wait: 400ms
  - { name: last, plugin: noop, input: { v: 1 } }
";

/// Runs `V1` while `v2` is registered as the flow's current version;
/// returns the finished run and its `flow-upgraded` events (from, to).
async fn run_while_registering(v2: &str) -> (settle::model::RunSummary, Vec<(String, String)>) {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    let catalog = Arc::new(settle::engine::catalog::FlowCatalog::new(None));
    let v1 = support::flow(V1);
    catalog.register("upgraded", (*v1).clone()).unwrap();
    host.engine.offer_upgrades(catalog.clone());
    let run = support::submit(&host, &v1, json!({})).await;
    // Registered while the run waits at its second step.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = settle::store::RunLog::summary(host.engine.store(), run)
            .await
            .unwrap()
            .unwrap();
        if now.pausing_until.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never reached the wait"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    catalog
        .register("upgraded", (*support::flow(v2)).clone())
        .unwrap();
    let done = host.engine.wait(run).await.unwrap().unwrap();
    let events = support::events(&host, run);
    let moves: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::FlowUpgraded {
                from_version,
                to_version,
                ..
            } => Some((from_version.clone(), to_version.clone())),
            _ => None,
        })
        .collect();
    // A move happens between steps: after the wait (step 2) ended.
    if let Some(at) = events
        .iter()
        .position(|e| matches!(e.kind, EventKind::FlowUpgraded { .. }))
    {
        let wait_ended = events
            .iter()
            .position(|e| matches!(e.kind, EventKind::StepCompleted { index: 1, .. }))
            .expect("the wait completed");
        assert!(at > wait_ended, "moved mid-step: {events:#?}");
    }
    host.shutdown().await.unwrap();
    (done, moves)
}

/// A version that asks for it takes the run over: the rest of the run
/// follows it, steps it added included, and the log says when it moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_moves_to_a_version_that_asks_for_it_between_steps() {
    let v2 = "
name: upgraded
version: '2'
upgrade: at-step-boundary
steps:
  - { name: first, plugin: noop, input: { v: 1 } }
  - name: cool-off
    wait: 400ms
  - { name: last, plugin: noop, input: { v: 2 } }
  - { name: audit, plugin: noop, input: { v: 2 } }
";
    let (done, moves) = run_while_registering(v2).await;
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    assert_eq!(moves, vec![("1".to_string(), "2".to_string())]);
    assert_eq!(done.flow_version, "2");
    assert_eq!(done.outputs.len(), 4);
    assert_eq!(done.outputs[2], Some(json!({"v": 2})), "{done:#?}");
    assert_eq!(done.outputs[3], Some(json!({"v": 2})), "{done:#?}");
}

/// Without `upgrade: at-step-boundary` the run keeps its version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_keeps_its_version_by_default() {
    let v2 = V1
        .replace("version: '1'", "version: '2'")
        .replace("v: 1", "v: 2");
    let (done, moves) = run_while_registering(&v2).await;
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    assert!(moves.is_empty(), "{moves:?}");
    assert_eq!(done.flow_version, "1");
    assert_eq!(done.outputs[2], Some(json!({"v": 1})));
}

/// A version whose first steps are not the run's cannot take it over
/// (what the run did would mean something else): the run keeps its own.
#[test]
fn a_version_whose_first_steps_differ_cannot_take_a_run_over() {
    let v1 = support::flow(V1);
    let renamed = support::flow(
        &V1.replace("version: '1'", "version: '2'\nupgrade: at-step-boundary")
            .replace("name: first", "name: opening"),
    );
    let why = settle::engine::upgrades::incompatible(&v1, &renamed, 2).expect("refused");
    assert!(
        why.contains("'first'") && why.contains("'opening'"),
        "{why}"
    );
    // At step 0 nothing is done yet: any version can take over.
    assert!(settle::engine::upgrades::incompatible(&v1, &renamed, 0).is_none());
    let shorter =
        support::flow("name: upgraded\nversion: '3'\nsteps:\n  - { name: first, plugin: noop }\n");
    let why = settle::engine::upgrades::incompatible(&v1, &shorter, 2).expect("refused");
    assert!(why.contains("has 1 step(s)"), "{why}");
    let other_plugin = support::flow(&V1.replace(
        "{ name: first, plugin: noop, input: { v: 1 } }",
        "{ name: first, plugin: flaky, input: { mode: ok } }",
    ));
    assert!(settle::engine::upgrades::incompatible(&v1, &other_plugin, 1).is_some());
}
