//! `parallel` steps: branches called side by side, each its own plugin
//! and input, joined when all (or the first N) gave an output; undone
//! branch by branch.

use crate::support;
use serde_json::{Value, json};
use settle::model::{EventKind, RunState};

/// (branch position, output) of each branch that completed, in order.
fn completed(host: &settle::app::Host, run: settle::model::RunId) -> Vec<(u32, Value)> {
    support::events(host, run)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ItemCompleted { item, output, .. } => Some((item, output)),
            _ => None,
        })
        .collect()
}

const ALL: &str = r#"
name: all-branches
steps:
  - { name: charge, plugin: noop, input: { amount: 5 } }
  - name: tell
    parallel:
      branches:
        - { name: mail, plugin: noop, input: { to: "${{ input.email }}" } }
        - { name: ids, plugin: flaky, input: { mode: ctx } }
        - { name: sms, plugin: flaky, input: { mode: "${{ input.sms }}", times: 1 } }
    retry: { max_attempts: 3, initial_interval: 10ms, jitter: 0 }
  - name: after
    plugin: noop
    input: { mailed: "${{ steps.tell.output.mail.to }}", sms_attempt: "${{ steps.tell.output.sms.attempt }}" }
"#;

/// Every branch gives its output under its name; each calls its own
/// plugin under an id ending in the branch's name; a retry calls only the
/// branch that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branches_join_under_their_names_and_a_retry_calls_only_the_failed_one() {
    let dir = support::tempdir();
    let host = settle::app::Host::start(&support::config(dir.path()))
        .await
        .unwrap();
    let flow = support::flow(ALL);
    let done = support::run_to_end(
        &host,
        &flow,
        json!({"email": "ann@example.org", "sms": "fail-times"}),
    )
    .await;
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    let output = done.outputs[1].clone().unwrap();
    assert_eq!(output["mail"], json!({"to": "ann@example.org"}), "{output}");
    assert_eq!(output["sms"]["attempt"], json!(2), "{output}");
    assert_eq!(
        done.outputs[2],
        Some(json!({"mailed": "ann@example.org", "sms_attempt": 2}))
    );
    // The branch's ids end in its name.
    let ctx: Value = serde_json::from_str(output["ids"]["payload"].as_str().unwrap()).unwrap();
    let op = ctx["operation_id"].as_str().unwrap();
    assert!(op.ends_with("/ids"), "{op}");
    assert!(ctx["step_id"].as_str().unwrap().ends_with("/ids"), "{ctx}");
    // Each branch completed once: the retry called only `sms`.
    let mut once: Vec<u32> = completed(&host, done.run_id)
        .iter()
        .map(|(p, _)| *p)
        .collect();
    once.sort_unstable();
    assert_eq!(once, vec![0, 1, 2]);
    let started: Vec<Vec<u32>> = support::events(&host, done.run_id)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ItemsStarted { items, .. } => Some(items),
            _ => None,
        })
        .collect();
    assert_eq!(
        started,
        vec![vec![0, 1, 2], vec![2]],
        "all at once, then the retry"
    );
    host.shutdown().await.unwrap();
}

/// A branch failing for good undoes the branches that completed, then the
/// steps before, newest first; the status does not claim more than the
/// log shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_failing_for_good_undoes_the_completed_branches_then_earlier_steps() {
    let dir = support::tempdir();
    let host = settle::app::Host::start(&support::config(dir.path()))
        .await
        .unwrap();
    let flow = support::flow(ALL);
    let done = support::run_to_end(
        &host,
        &flow,
        json!({"email": "ann@example.org", "sms": "permanent"}),
    )
    .await;
    assert_eq!(done.state, RunState::Compensated, "{done:#?}");
    let events = support::events(&host, done.run_id);
    let mut undone_branches: Vec<u32> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::ItemCompensated { item, .. } => Some(item),
            _ => None,
        })
        .collect();
    // Newest first: the reverse of the order they completed in.
    let mut completed_order: Vec<u32> = completed(&host, done.run_id)
        .iter()
        .map(|(p, _)| *p)
        .collect();
    completed_order.reverse();
    assert_eq!(undone_branches, completed_order, "undone newest first");
    let charge_undone = events
        .iter()
        .position(|e| matches!(e.kind, EventKind::CompensationCompleted { index: 0, .. }))
        .expect("charge undone");
    let last_branch_undone = events
        .iter()
        .rposition(|e| matches!(e.kind, EventKind::ItemCompensated { .. }))
        .expect("branches undone");
    assert!(last_branch_undone < charge_undone, "branches before charge");
    undone_branches.sort_unstable();
    assert_eq!(
        undone_branches,
        vec![0, 1],
        "mail and ids, not the failed sms"
    );
    let failure = done.last_failure.clone().unwrap();
    assert!(
        failure.message.contains("branch 'sms'"),
        "{}",
        failure.message
    );
    host.shutdown().await.unwrap();
}

const FALLBACK: &str = r#"
name: fallback
steps:
  - name: reserve
    parallel:
      join: any
      concurrency: 1
      branches:
        - { name: east, plugin: flaky, input: { mode: "${{ input.east }}" } }
        - { name: west, plugin: noop, input: { warehouse: west } }
        - { name: north, plugin: noop, input: { warehouse: north } }
    retry: { max_attempts: 2, initial_interval: 10ms, jitter: 0 }
  - name: ship
    plugin: noop
    input: { from: "${{ steps.reserve.output.east.attempt // steps.reserve.output.west.warehouse }}" }
"#;

/// `join: any` with `concurrency: 1` is a fallback chain: a branch is
/// called only when the ones before failed, and none after the first that
/// gives an output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_one_at_a_time_tries_the_next_branch_only_when_one_failed() {
    let dir = support::tempdir();
    let host = settle::app::Host::start(&support::config(dir.path()))
        .await
        .unwrap();
    let flow = support::flow(FALLBACK);
    let done = support::run_to_end(&host, &flow, json!({"east": "permanent"})).await;
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    assert_eq!(
        done.outputs[0],
        Some(json!({"east": null, "west": {"warehouse": "west"}, "north": null}))
    );
    assert_eq!(done.outputs[1], Some(json!({"from": "west"})));
    let called: Vec<u32> = completed(&host, done.run_id)
        .iter()
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(called, vec![1], "north is never called");
    // When the first branch works, it is the only one called.
    let done = support::run_to_end(&host, &flow, json!({"east": "ok"})).await;
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    assert_eq!(done.outputs[0].as_ref().unwrap()["west"], Value::Null);
    assert_eq!(
        completed(&host, done.run_id)
            .iter()
            .map(|(p, _)| *p)
            .collect::<Vec<_>>(),
        vec![0]
    );
    host.shutdown().await.unwrap();
}

const QUORUM: &str = r#"
name: quorum
steps:
  - { name: charge, plugin: noop, input: { amount: 5 } }
  - name: quotes
    parallel:
      join: { first: 2 }
      branches:
        - { name: a, plugin: flaky, input: { mode: "${{ input.a }}" } }
        - { name: b, plugin: flaky, input: { mode: "${{ input.b }}" } }
        - { name: c, plugin: flaky, input: { mode: "${{ input.c }}" } }
    retry: { max_attempts: 2, initial_interval: 10ms, jitter: 0 }
"#;

/// `first: 2` of 3 tolerates one failed branch; with two failed for good
/// the step fails, and the branch that completed is undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_n_tolerates_failed_branches_until_n_cannot_be_reached() {
    let dir = support::tempdir();
    let host = settle::app::Host::start(&support::config(dir.path()))
        .await
        .unwrap();
    let flow = support::flow(QUORUM);
    let done = support::run_to_end(
        &host,
        &flow,
        json!({"a": "ok", "b": "permanent", "c": "ok"}),
    )
    .await;
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    let output = done.outputs[1].clone().unwrap();
    assert_eq!(output["b"], Value::Null, "{output}");
    assert_eq!(output["a"]["attempt"], json!(1), "{output}");
    assert_eq!(output["c"]["attempt"], json!(1), "{output}");

    let done = support::run_to_end(
        &host,
        &flow,
        json!({"a": "permanent", "b": "ok", "c": "permanent"}),
    )
    .await;
    assert_eq!(done.state, RunState::Compensated, "{done:#?}");
    let failure = done.last_failure.clone().unwrap();
    assert!(
        failure.message.contains("1 of the 2 branches needed"),
        "{}",
        failure.message
    );
    let undone: Vec<u32> = support::events(&host, done.run_id)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ItemCompensated { item, .. } => Some(item),
            _ => None,
        })
        .collect();
    assert_eq!(undone, vec![1], "only b, the branch that completed");
    host.shutdown().await.unwrap();
}

/// A retryable failure among failed branches makes the attempt retryable:
/// the retry calls the branches without an output and reaches N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_n_short_of_n_retries_when_a_branch_may_still_succeed() {
    let dir = support::tempdir();
    let host = settle::app::Host::start(&support::config(dir.path()))
        .await
        .unwrap();
    let flow = support::flow(&QUORUM.replace(
        "input: { mode: \"${{ input.b }}\" }",
        "input: { mode: \"${{ input.b }}\", times: 1 }",
    ));
    let done = support::run_to_end(
        &host,
        &flow,
        json!({"a": "permanent", "b": "fail-times", "c": "ok"}),
    )
    .await;
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    let output = done.outputs[1].clone().unwrap();
    assert_eq!(output["b"]["attempt"], json!(2), "{output}");
    assert_eq!(output["a"], Value::Null, "{output}");
    host.shutdown().await.unwrap();
}

const RACE: &str = r#"
name: race
steps:
  - name: reserve
    parallel:
      join: any
      branches:
        - { name: east, plugin: flaky, input: { mode: ok } }
        - { name: west, plugin: flaky, input: { mode: ok } }
        - { name: north, plugin: flaky, input: { mode: ok } }
"#;

/// `join: any` with every branch at once: the first to complete is kept,
/// the others (which also made their change) are undone before the step
/// completes, and the output has only the one kept. With `compensate:
/// false` nothing is undone and every output stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_join_undoes_the_branches_past_it() {
    let dir = support::tempdir();
    let host = settle::app::Host::start(&support::config(dir.path()))
        .await
        .unwrap();
    let done = support::run_to_end(&host, &support::flow(RACE), json!({})).await;
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    let order: Vec<u32> = completed(&host, done.run_id)
        .iter()
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(order.len(), 3, "all three were called: {order:?}");
    let undone: Vec<u32> = support::events(&host, done.run_id)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ItemCompensated { item, .. } => Some(item),
            _ => None,
        })
        .collect();
    assert_eq!(
        undone,
        vec![order[2], order[1]],
        "the surplus, newest first"
    );
    let output = done.outputs[0].clone().unwrap();
    let kept: Vec<&str> = ["east", "west", "north"]
        .into_iter()
        .filter(|b| !output[*b].is_null())
        .collect();
    assert_eq!(kept.len(), 1, "{output}");
    assert_eq!(kept[0], ["east", "west", "north"][order[0] as usize]);

    let left = RACE.replace("join: any", "join: any\n    compensate: false");
    let left = left.replace(
        "    parallel:\n      join: any\n    compensate: false",
        "    compensate: false\n    parallel:\n      join: any",
    );
    let done = support::run_to_end(&host, &support::flow(&left), json!({})).await;
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    assert!(!support::event_names(&host, done.run_id).contains(&"item-compensated".to_string()));
    let output = done.outputs[0].clone().unwrap();
    assert!(
        ["east", "west", "north"]
            .iter()
            .all(|b| !output[*b].is_null()),
        "{output}"
    );
    host.shutdown().await.unwrap();
}

const RACE_UNKNOWN: &str = r#"
name: race-unknown
steps:
  - name: reserve
    timeout: 300ms
    retry: { max_attempts: 1 }
    parallel:
      join: any
      branches:
        - { name: east, plugin: flaky, input: { mode: loop } }
        - { name: west, plugin: flaky, input: { mode: ok } }
"#;

/// A branch whose call ended with its outcome unknown (it timed out) after
/// the join was met is undone, not called again; the kept branch is the
/// one that completed, whatever its place in the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_of_unknown_outcome_past_the_join_is_undone_not_called_again() {
    let dir = support::tempdir();
    let host = settle::app::Host::start(&support::config(dir.path()))
        .await
        .unwrap();
    let done = support::run_to_end(&host, &support::flow(RACE_UNKNOWN), json!({})).await;
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    let events = support::events(&host, done.run_id);
    let started: Vec<Vec<u32>> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ItemsStarted { items, .. } => Some(items.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(started, vec![vec![0, 1]], "east is called once");
    let undone: Vec<u32> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::ItemCompensated { item, .. } => Some(item),
            _ => None,
        })
        .collect();
    assert_eq!(undone, vec![0], "east, of unknown outcome, is undone");
    let output = done.outputs[0].clone().unwrap();
    assert!(
        output["east"].is_null() && !output["west"].is_null(),
        "{output}"
    );
    host.shutdown().await.unwrap();
}
