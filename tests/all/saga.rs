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
