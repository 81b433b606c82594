//! An operator restarts a run from one of its steps: the steps before keep
//! their outputs, that step and those after run again under new operation
//! ids, and what a restart cannot honestly do is refused before anything is
//! written.

use crate::support;
use serde_json::{Value, json};
use settle::app::Host;
use settle::engine::{ActError, OperatorCommand};
use settle::model::{EventKind, OperatorAction, RunState};

fn restart(from: &str, reason: &str) -> OperatorCommand {
    OperatorCommand {
        action: OperatorAction::Restart,
        by: "ops-test".into(),
        reason: reason.into(),
        step: Some(from.into()),
    }
}

/// The operation id a `ctx`-mode step saw, from its output.
fn seen_operation_id(output: &Option<Value>) -> String {
    let payload = output.as_ref().expect("completed")["payload"]
        .as_str()
        .expect("payload")
        .to_string();
    let ctx: Value = serde_json::from_str(&payload).expect("ctx json");
    ctx["operation_id"]
        .as_str()
        .expect("operation id")
        .to_string()
}

const THREE: &str = r#"
name: three
steps:
  - { name: a, plugin: flaky, input: { mode: ctx } }
  - { name: b, plugin: flaky, input: { mode: kv-count } }
  - { name: c, plugin: flaky, input: { mode: ctx } }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reruns_from_the_step_under_new_ids_and_keeps_what_came_before() {
    let dir = support::tempdir();
    let mut config = support::config(dir.path());
    // `b` counts its calls in its key-value state.
    config.plugin_mut("flaky").grants.kv = true;
    let host = Host::start(&config).await.unwrap();
    let flow = support::flow(THREE);
    let first = support::run_to_end(&host, &flow, json!({})).await;
    assert_eq!(first.state, RunState::Settled, "{first:#?}");
    let run = first.run_id;
    assert_eq!(first.outputs[1].as_ref().unwrap()["count"], 1);
    let c_before = seen_operation_id(&first.outputs[2]);

    host.engine
        .act(run, restart("b", "ledger lost the booking"))
        .await
        .expect("restart applies");
    let again = host.engine.wait(run).await.unwrap().unwrap();
    assert_eq!(again.state, RunState::Settled, "{again:#?}");
    assert_eq!(again.restarts, 1);
    // What the first runs of b and c did was not undone: the summary
    // keeps saying so, for the phrases.
    assert_eq!(again.superseded, ["b (run 1)", "c (run 1)"]);
    // `a` kept its output; `b` ran a second time; `c` ran again as a new
    // operation, so a downstream system does not replay the old answer.
    assert_eq!(again.outputs[0], first.outputs[0], "step a is not re-run");
    assert_eq!(again.outputs[1].as_ref().unwrap()["count"], 2);
    let c_after = seen_operation_id(&again.outputs[2]);
    assert_ne!(c_after, c_before, "a re-run is a new operation");
    assert_eq!(c_after, format!("{run}/c~1"));

    // The log says who restarted it, from where, and why; the earlier
    // events are all still there.
    let events = support::events(&host, run);
    let acted = events
        .iter()
        .position(|e| {
            matches!(
                &e.kind,
                EventKind::OperatorActed { action: OperatorAction::Restart, by, reason }
                    if by == "ops-test" && reason == "ledger lost the booking"
            )
        })
        .expect("the restart is audited");
    assert!(
        matches!(
            events[acted + 1].kind,
            EventKind::RunRestarted {
                from_index: 1,
                generation: 1
            }
        ),
        "{:?}",
        events[acted + 1]
    );
    let settled = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::RunSettled))
        .count();
    assert_eq!(settled, 2, "both endings stay in the log");
    let b_ids: Vec<&str> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::StepCompleted { index: 1, .. }))
        .filter_map(|e| e.operation_id.as_deref())
        .collect();
    assert_eq!(b_ids, [format!("{run}/b"), format!("{run}/b~1")]);

    // The status's step views show the run that counts now.
    let views = settle::engine::queries::step_views(&again.steps, &events);
    assert_eq!(views[0].generation, 0);
    assert_eq!(views[0].state, "completed");
    assert_eq!(views[1].generation, 1);
    assert_eq!(
        views[1].attempts, 1,
        "the earlier run's attempt is not counted"
    );
    assert_eq!(views[2].generation, 1);
    assert_eq!(views[2].state, "completed");

    // A second restart is generation 2.
    host.engine
        .act(run, restart("c", "once more"))
        .await
        .unwrap();
    let third = host.engine.wait(run).await.unwrap().unwrap();
    assert_eq!(third.state, RunState::Settled, "{third:#?}");
    assert_eq!(seen_operation_id(&third.outputs[2]), format!("{run}/c~2"));
    assert_eq!(third.outputs[1], again.outputs[1], "b is not re-run");
    assert_eq!(third.superseded, ["b (run 1)", "c (run 1)", "c (run 2)"]);
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_that_cannot_be_honest_are_refused_and_write_nothing() {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    let failing = support::flow(
        r#"
name: failing
steps:
  - { name: a, plugin: flaky, input: { mode: ok } }
  - { name: b, plugin: flaky, input: { mode: permanent } }
  - { name: c, plugin: flaky, input: { mode: ok } }
"#,
    );
    let undone = support::run_to_end(&host, &failing, json!({})).await;
    assert_eq!(undone.state, RunState::Compensated, "{undone:#?}");
    let run = undone.run_id;
    let before = support::events(&host, run).len();

    let refused = |e: ActError| e.to_string();
    let cases = [
        ("c", "step 'b' before it never completed"),
        ("b", "step 'a' before it was undone"),
        ("zz", "has no such step (its steps: a, b, c)"),
    ];
    for (from, expected) in cases {
        let err = host
            .engine
            .act(run, restart(from, "try"))
            .await
            .expect_err("refused");
        assert!(
            refused(err).contains(expected),
            "from {from}: expected {expected}"
        );
    }
    let mut unnamed = restart("a", "no step");
    unnamed.step = None;
    let err = host.engine.act(run, unnamed).await.unwrap_err();
    assert!(err.to_string().contains("name the step"), "{err}");
    assert_eq!(
        support::events(&host, run).len(),
        before,
        "a refused restart writes nothing"
    );

    // A run that is still moving (accepted here, not driven) is not
    // restarted under its driver's feet.
    host.engine.set_paused(true);
    let moving = support::submit(&host, &failing, json!({})).await;
    let err = host
        .engine
        .act(moving, restart("a", "too soon"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pause it first"), "{err}");
    host.engine.set_paused(false);

    // From the first step, an undone run runs again as a whole.
    host.engine
        .act(run, restart("a", "the provider is back"))
        .await
        .unwrap();
    let again = host.engine.wait(run).await.unwrap().unwrap();
    // `b` still fails for good: it is undone again, this time under the
    // new generation's compensation ids; nothing earlier was left behind.
    assert_eq!(again.state, RunState::Compensated, "{again:#?}");
    assert!(again.superseded.is_empty(), "{again:#?}");
    assert_eq!(
        again.phrase(0, false),
        "Could not complete; all changes were undone"
    );
    let undo_ids: Vec<String> = support::events(&host, run)
        .iter()
        .filter(|e| matches!(e.kind, EventKind::CompensationCompleted { index: 0, .. }))
        .filter_map(|e| e.operation_id.clone())
        .collect();
    assert_eq!(
        undo_ids,
        [
            format!("{run}/a/compensate"),
            format!("{run}/a~1/compensate")
        ]
    );
    host.shutdown().await.unwrap();
}
