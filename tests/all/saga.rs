//! A flow settles; a flow whose last step fails for good is compensated in
//! reverse order, in the log and in the outside world.

use crate::support::{self, Service};
use serde_json::json;
use settle::app::Host;
use settle::model::{EventKind, RunState};

const THREE_STEPS: &str = r#"
name: three-steps
steps:
  - name: charge
    plugin: transfer
    input: { from: "${{ input.customer }}", to: shop, amount: "${{ input.amount }}" }
  - name: reserve
    plugin: reserve-stock
    input: { sku: widget, quantity: 2 }
  - name: finish
    plugin: flaky
    input: { mode: "${{ input.finish }}" }
    retry: { max_attempts: 3, initial_interval: 10ms, jitter: 0 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_steps_settle() {
    let dir = support::tempdir();
    let service = Service::start(&dir.path().join("world"));
    let mut config = support::config(dir.path());
    service.grant(&mut config);
    let host = Host::start(&config).await.unwrap();
    let flow = support::flow(THREE_STEPS);

    let run = support::run_to_end(
        &host,
        &flow,
        json!({"customer": "ann", "amount": 700, "finish": "ok"}),
    )
    .await;
    assert_eq!(run.state, RunState::Settled, "{run:#?}");
    assert_eq!(run.phrase(0, false), "Completed and confirmed");
    let names = support::event_names(&host, run.run_id);
    assert_eq!(
        names,
        [
            "run-accepted",
            "step-scheduled",
            "step-completed",
            "step-scheduled",
            "step-completed",
            "step-scheduled",
            "step-completed",
            "reconciliation-scheduled",
            "step-reconciled",
            "step-reconciled",
            "run-settled"
        ]
    );
    let state = service.state();
    assert_eq!(state["accounts"]["ann"], -700);
    assert_eq!(state["accounts"]["shop"], 700);
    assert_eq!(state["reservations"].as_object().unwrap().len(), 1);

    // Lineage: every event names its run, chains to the one before, and
    // plugin events name the plugin with version and digest.
    let events = support::events(&host, run.run_id);
    for pair in events.windows(2) {
        assert_eq!(pair[1].causation, Some(pair[0].id));
        assert_eq!(pair[1].seq, pair[0].seq + 1);
        assert_eq!(pair[1].trace_id, run.run_id.trace_id());
    }
    let charged = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::StepCompleted { index: 0, .. }))
        .unwrap();
    assert!(
        charged.source.0.starts_with("transfer@1.0.0#"),
        "{:?}",
        charged.source
    );
    assert_eq!(
        charged.operation_id.as_deref(),
        Some(format!("{}/charge", run.run_id).as_str())
    );
    assert_eq!(charged.attempt, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_compensates_in_reverse_order() {
    let dir = support::tempdir();
    let service = Service::start(&dir.path().join("world"));
    let mut config = support::config(dir.path());
    service.grant(&mut config);
    let host = Host::start(&config).await.unwrap();
    let flow = support::flow(THREE_STEPS);

    let run = support::run_to_end(
        &host,
        &flow,
        json!({"customer": "bo", "amount": 300, "finish": "permanent"}),
    )
    .await;
    assert_eq!(run.state, RunState::Compensated, "{run:#?}");
    assert_eq!(
        run.phrase(0, false),
        "Could not complete; all changes were undone"
    );

    let events = support::events(&host, run.run_id);
    // The permanent failure is not retried.
    let failures: Vec<_> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::StepFailed { .. }))
        .collect();
    assert_eq!(failures.len(), 1);
    // Undone in reverse: reserve (index 1), then charge (index 0).
    let undone: Vec<u32> = events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::CompensationCompleted { index, .. } => Some(index),
            _ => None,
        })
        .collect();
    assert_eq!(undone, [1, 0]);
    assert_eq!(events.last().unwrap().kind, EventKind::RunCompensated);

    // The outside world agrees: money back, stock released.
    let state = service.state();
    assert_eq!(state["accounts"]["bo"], 0);
    assert_eq!(state["accounts"]["shop"], 0);
    let reservation = state["reservations"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(reservation["released"], true);
    let transfer = state["transfers"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(transfer["refunded"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_compensation_needs_attention() {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    let flow = support::flow(
        r#"
name: stuck
steps:
  - { name: first, plugin: flaky, input: { mode: fail-compensate } }
  - name: second
    plugin: flaky
    input: { mode: permanent }
"#,
    );
    let run = support::run_to_end(&host, &flow, json!({})).await;
    assert_eq!(run.state, RunState::NeedsAttention);
    assert_eq!(run.hold, Some(settle::model::HoldCause::CompensationFailed));
    assert!(
        run.phrase(0, false)
            .starts_with("Stopped: an operator must act: compensation of step 'first'"),
        "{}",
        run.phrase(0, false)
    );
    let detail = run.detail.unwrap();
    assert!(detail.contains("compensation of step 'first'"), "{detail}");
    assert!(detail.contains("planned compensation failure"), "{detail}");
}

/// An attempt that timed out after the ledger made the transfer: its outcome
/// is unknown, so when the run is undone that step is compensated too (with
/// no output), and the money comes back. The old host left it charged while
/// saying "all changes were undone".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_outcome_is_unknown_is_compensated_too() {
    let dir = support::tempdir();
    let service = Service::start(&dir.path().join("world"));
    let mut config = support::config(dir.path());
    service.grant(&mut config);
    let host = Host::start(&config).await.unwrap();
    let flow = support::flow(
        r#"
name: slow-ledger
steps:
  - name: charge
    plugin: transfer
    input: { from: cy, to: shop, amount: 90, answer_after_ms: 1500 }
    timeout: 300ms
    retry: { max_attempts: 1 }
"#,
    );
    let run = support::run_to_end(&host, &flow, json!({})).await;
    assert_eq!(run.state, RunState::Compensated, "{run:#?}");
    assert!(run.outputs[0].is_none(), "the step never completed");
    assert_eq!(
        run.phrase(0, false),
        "Could not complete; all changes were undone"
    );
    let events = support::events(&host, run.run_id);
    let failed = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::StepFailed {
                failure,
                may_have_effect,
                ..
            } => Some((failure.class, *may_have_effect)),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        failed,
        (settle::model::FailureClass::Timeout, true),
        "a timed-out attempt may have had its effect"
    );
    let undone = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::CompensationCompleted { index: 0, .. }))
        .expect("the uncertain step was compensated");
    // Each action has its own operation id; the step id is shared.
    assert_eq!(
        undone.operation_id.as_deref(),
        Some(format!("{}/charge/compensate", run.run_id).as_str())
    );
    let state = service.state();
    assert_eq!(state["accounts"]["cy"], 0, "{state:#}");
    assert_eq!(state["accounts"]["shop"], 0, "{state:#}");
    let transfer = state["transfers"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap();
    assert_eq!(transfer["refunded"], true);
    assert_eq!(
        transfer["idempotency_key"],
        format!("{}/charge", run.run_id),
        "the charge went out under the step id"
    );
}

/// A compensation that finds nothing (the timed-out request never arrived)
/// voids the key: the request, arriving late, cannot take effect after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compensation_of_an_effect_that_never_happened_voids_its_key() {
    let dir = support::tempdir();
    let service = Service::start(&dir.path().join("world"));
    let key = "run-x/charge";
    let post = |path: &str, idem: &str, body: serde_json::Value| {
        ureq::post(&format!("{}{path}", service.base_url))
            .header("Idempotency-Key", idem)
            .config()
            .http_status_as_error(false)
            .build()
            .send_json(body)
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(
        post(
            "/ledger/refunds",
            "run-x/charge/compensate",
            json!({"transfer_key": key})
        ),
        200
    );
    assert_eq!(
        post(
            "/ledger/transfers",
            key,
            json!({"from": "a", "to": "b", "amount": 5})
        ),
        409,
        "a voided key is refused"
    );
    assert_eq!(service.state()["accounts"]["a"], serde_json::Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phrases_say_what_was_left_in_place_and_what_was_confirmed() {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    // No step can reconcile: settled, but not "confirmed".
    let plain = support::flow("name: plain\nsteps:\n  - { name: a, plugin: noop }\n");
    let run = support::run_to_end(&host, &plain, json!({})).await;
    assert_eq!(run.state, RunState::Settled);
    assert_eq!(
        run.phrase(0, false),
        "Completed (not independently confirmed)"
    );
    // A step that may not be undone stays, and the phrase says so.
    let partial = support::flow(
        r#"
name: partial
steps:
  - { name: sent, plugin: noop, compensate: false }
  - { name: kept, plugin: noop }
  - { name: fails, plugin: flaky, input: { mode: permanent } }
"#,
    );
    let run = support::run_to_end(&host, &partial, json!({})).await;
    assert_eq!(run.state, RunState::Compensated);
    assert_eq!(
        run.phrase(0, false),
        "Could not complete; undone: kept; left in place: sent"
    );
    // Nothing completed: nothing to undo, and the phrase does not claim more.
    let first_fails = support::flow(
        "name: early\nsteps:\n  - { name: fails, plugin: flaky, input: { mode: permanent } }\n",
    );
    let run = support::run_to_end(&host, &first_fails, json!({})).await;
    assert_eq!(
        run.phrase(0, false),
        "Could not complete; nothing had been changed"
    );
}

/// The plugin sees the attempt's real deadline (the step's lower timeout),
/// its action's own operation id and the shared step id; the submit-time
/// check renders `${{ run.id }}` as the real id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_context_tells_the_plugin_the_truth() {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    let flow = support::flow(
        "name: ctx\nsteps:\n  - { name: look, plugin: flaky, input: { mode: ctx }, timeout: 2s }\n",
    );
    let run = support::run_to_end(&host, &flow, json!({})).await;
    let payload: serde_json::Value = serde_json::from_str(
        run.outputs[0].as_ref().unwrap()["payload"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let step_id = format!("{}/look", run.run_id);
    assert_eq!(payload["step_id"], step_id.as_str());
    assert_eq!(
        payload["operation_id"],
        step_id.as_str(),
        "run's id is the step id"
    );
    let completed = support::events(&host, run.run_id)
        .into_iter()
        .find(|e| matches!(e.kind, EventKind::StepCompleted { .. }))
        .unwrap();
    let deadline = payload["deadline_ms"].as_u64().unwrap();
    let left = deadline.saturating_sub(completed.at_ms);
    assert!(
        (1_000..=2_000).contains(&left),
        "the deadline is the step's 2 s timeout, not the plugin's 10 s: {left} ms left"
    );

    // `transfer` requires a non-empty `from`: the real run id passes the
    // submit-time check (an empty string used to fail it).
    host.engine.set_paused(true);
    let by_id = support::flow(
        "name: by-id\nsteps:\n  - name: pay\n    plugin: transfer\n    input: { from: \"${{ run.id }}\", to: shop, amount: 1 }\n",
    );
    host.engine
        .submit(&by_id, json!({}), None)
        .await
        .expect("accepted");
}
