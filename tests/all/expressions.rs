//! jq expressions run in the sandboxed evaluator: answers, and hostile
//! programs stopped by the sandbox's limits without harm to the host.

use crate::hostile::runtime;
use serde_json::json;
use settle::runtime::Limits;
use std::time::{Duration, Instant};

fn context() -> serde_json::Value {
    json!({"input": {"amount": 12, "items": [{"p": 2}, {"p": 3}]},
           "steps": {"reserve": {"output": {"id": "r1"}}}, "run": {"id": "run-1"}})
}

#[tokio::test]
async fn expressions_answer_in_order_each_for_itself() {
    let rt = runtime(Limits::default());
    let programs: Vec<String> = [
        "input.amount * 100",
        "steps.reserve.output.id + \"-\" + run.id",
        "[input.items[].p] | add",
        "input.items[]",
        "error(\"no stock\")",
        "input.amount",
        "[1200 / 100, 1 / 3, -0.0, 1e300]",
    ]
    .map(String::from)
    .to_vec();
    let answers = rt.evaluate(&programs, &context()).await.unwrap();
    assert_eq!(answers[0], Ok(json!(1200)));
    assert_eq!(answers[1], Ok(json!("r1-run-1")));
    assert_eq!(answers[2], Ok(json!(5)));
    assert!(
        answers[3]
            .as_ref()
            .unwrap_err()
            .contains("more than one value"),
        "{answers:?}"
    );
    assert!(
        answers[4].as_ref().unwrap_err().contains("no stock"),
        "{answers:?}"
    );
    assert_eq!(answers[5], Ok(json!(12)));
    // Whole numbers stay whole (jq computes in doubles).
    let numbers = answers[6].as_ref().unwrap();
    assert_eq!(numbers[0], json!(12), "{numbers}");
    assert!(
        numbers[0].is_i64() && numbers[1].is_f64() && numbers[3].is_f64(),
        "{numbers}"
    );
}

/// Loops, recursion, memory growth and huge outputs are each stopped by a
/// limit of the sandbox and named; the runtime goes on answering.
#[tokio::test]
async fn hostile_programs_are_stopped_by_the_sandbox() {
    let rt = runtime(Limits::default());
    let cases = [
        ("def f: f; f", "stopped"),
        ("last(repeat(1))", "time limit"),
        (
            "[limit(100000000; repeat(\"xxxxxxxx\"))] | length",
            "stopped",
        ),
        ("\"x\" * 100000000 | length", "stopped"),
        ("\"x\" * 300000 | [., ., ., .]", "output limit"),
        (
            "def f(x): [x, x]; f(f(f(f(f(f(f(f(f(f(f(f(f(f(f(f(f(f(f(f(f(f(f(f(1))))))))))))))))))))))))",
            "stopped",
        ),
    ];
    for (program, expected) in cases {
        let started = Instant::now();
        let result = rt.evaluate(&[program.to_string()], &context()).await;
        let took = started.elapsed();
        let message = match &result {
            // A limit of the sandbox is the flow's, never the host's.
            Err(e) => {
                assert!(
                    matches!(e, settle::runtime::EvalFailure::Limit(_)),
                    "{program}: {e:?}"
                );
                e.to_string()
            }
            Ok(answers) => answers[0].clone().err().unwrap_or_default(),
        };
        eprintln!("{program}: {message} in {took:?}");
        assert!(
            message.contains(expected),
            "{program}: expected '{expected}', got {result:?}"
        );
        assert!(took < Duration::from_secs(5), "{program} took {took:?}");
    }
    let answers = rt
        .evaluate(&["input.amount".to_string()], &context())
        .await
        .unwrap();
    assert_eq!(answers[0], Ok(json!(12)));
}

const PRICED: &str = r#"
name: priced
steps:
  - name: quote
    plugin: noop
    input:
      cents: "${{ input.amount * 100 }}"
      skus: "${{ [input.items[].sku] }}"
      label: "order ${{ input.id | ascii_upcase }} of ${{ input.items | length }} items"
      nested: "${{ {total: {cents: (input.amount * 100)}} }}"
  - name: review
    if: "${{ steps.quote.output.cents > 10000 }}"
    plugin: noop
    input: { why: "large order" }
  - name: ship
    plugin: noop
    input:
      reviewed: "${{ steps.review.output.why // \"not needed\" }}"
      run: "${{ run.id }}"
"#;

/// Step inputs computed by jq in the sandbox, and a step whose `if:` is
/// false passed over: no call, no output, nothing undone, the run settles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jq_mappings_and_conditions_drive_a_run() {
    let dir = crate::support::tempdir();
    let config = crate::support::config(dir.path());
    let flow = crate::support::flow(PRICED);
    let host = settle::app::Host::start(&config).await.unwrap();

    let small = json!({"id": "o1", "amount": 12, "items": [{"sku": "a"}, {"sku": "b"}]});
    let done = crate::support::run_to_end(&host, &flow, small).await;
    assert_eq!(done.state, settle::model::RunState::Settled, "{done:#?}");
    assert_eq!(
        done.outputs[0],
        Some(
            json!({"cents": 1200, "skus": ["a", "b"], "label": "order O1 of 2 items",
                    "nested": {"total": {"cents": 1200}}})
        )
    );
    assert_eq!(done.outputs[1], None, "review was skipped");
    assert!(done.was_skipped(1));
    assert_eq!(
        done.outputs[2],
        Some(json!({"reviewed": "not needed", "run": done.run_id.to_string()}))
    );
    let names = crate::support::event_names(&host, done.run_id);
    assert_eq!(
        names.iter().filter(|n| *n == "step-skipped").count(),
        1,
        "{names:?}"
    );
    // Each step's scheduling is recorded as that step's, the skip included.
    for e in crate::support::events(&host, done.run_id) {
        if let settle::model::EventKind::StepScheduled { index, .. } = e.kind {
            assert_eq!(
                e.step.as_deref(),
                Some(done.steps[index as usize].as_str()),
                "{e:?}"
            );
        }
    }
    let status = host.engine.status(done.run_id).await.unwrap().unwrap();
    assert_eq!((status.completed_steps, status.skipped_steps), (2, 1));

    let large = json!({"id": "o2", "amount": 250, "items": []});
    let done = crate::support::run_to_end(&host, &flow, large).await;
    assert_eq!(done.state, settle::model::RunState::Settled, "{done:#?}");
    assert!(!done.was_skipped(1));
    assert_eq!(
        done.outputs[2].as_ref().unwrap()["reviewed"],
        json!("large order")
    );
    host.shutdown().await.unwrap();
}

const FAILING: &str = r#"
name: failing-expression
steps:
  - { name: charge, plugin: noop, input: { amount: "${{ input.amount }}" } }
  - name: ship
    plugin: noop
    input: { weight: "${{ input.amount + \"kg\" }}" }
"#;

/// An expression that fails when the step runs fails the step for good
/// (the flow's mistake: retrying gives the same answer) and undoes what
/// came before; the message names the expression and the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_expression_fails_its_step_and_undoes_the_run() {
    let dir = crate::support::tempdir();
    let config = crate::support::config(dir.path());
    let flow = crate::support::flow(FAILING);
    let host = settle::app::Host::start(&config).await.unwrap();
    let done = crate::support::run_to_end(&host, &flow, json!({"amount": 3})).await;
    assert_eq!(
        done.state,
        settle::model::RunState::Compensated,
        "{done:#?}"
    );
    let failure = done
        .last_failure
        .clone()
        .map(|f| f.message)
        .unwrap_or_default();
    assert!(
        failure.contains("input.amount + \"kg\"")
            && failure.contains("cannot calculate 3 + \"kg\""),
        "{failure}"
    );
    assert!(done.compensated[0]);
    // The flow's mistake: invalid-input, one attempt, no retry.
    let failure = done.last_failure.clone().unwrap();
    assert_eq!(failure.class, settle::model::FailureClass::InvalidInput);
    let attempts = crate::support::event_names(&host, done.run_id)
        .iter()
        .filter(|n| *n == "step-failed")
        .count();
    assert_eq!(attempts, 1);
    host.shutdown().await.unwrap();
}

const SKIP_THEN_FAIL: &str = r#"
name: skip-then-fail
steps:
  - { name: charge, plugin: noop, input: { amount: 5 } }
  - name: rush
    if: "${{ input.expedite }}"
    plugin: noop
  - name: ship
    plugin: flaky
    input: { mode: permanent }
"#;

/// A condition on a field the input does not have is false (jq's null), not
/// a failure; a skipped step is not undone when a later one fails, and the
/// final phrase says every change was undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skipped_step_is_not_undone() {
    let dir = crate::support::tempdir();
    let config = crate::support::config(dir.path());
    let flow = crate::support::flow(SKIP_THEN_FAIL);
    let host = settle::app::Host::start(&config).await.unwrap();
    let done = crate::support::run_to_end(&host, &flow, json!({})).await;
    assert_eq!(
        done.state,
        settle::model::RunState::Compensated,
        "{done:#?}"
    );
    assert!(done.was_skipped(1));
    assert!(done.compensated[0] && !done.compensated[1]);
    let undone: Vec<u32> = crate::support::events(&host, done.run_id)
        .iter()
        .filter_map(|e| match e.kind {
            settle::model::EventKind::CompensationScheduled { index, .. } => Some(index),
            _ => None,
        })
        .collect();
    assert_eq!(undone, vec![0], "only the charge is undone");
    let status = host.engine.status(done.run_id).await.unwrap().unwrap();
    assert!(
        status.phrase.contains("all changes were undone"),
        "{}",
        status.phrase
    );
    host.shutdown().await.unwrap();
}
