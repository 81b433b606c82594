//! Honest timing in statuses: nothing is promised before 20 runs of a flow
//! have settled; then a run still moving says how long runs usually take,
//! and a run past that says it is taking longer than usual. The history is
//! read back from the store after a restart.

use crate::support;
use serde_json::json;
use settle::app::Host;
use std::time::Duration;

/// One step that takes ~100 ms in the plugin.
const SLOW: &str = "
name: slow
steps:
  - name: nap
    plugin: hostile
    input: { mode: sleep, ms: 100 }
    compensate: false
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_say_how_long_runs_usually_take_once_enough_have_settled() {
    let dir = support::tempdir();
    let config = support::config(dir.path());
    let flow = support::flow(SLOW);
    let host = Host::start(&config).await.unwrap();

    // Too few settled runs: the phrase promises nothing, and says why.
    support::run_to_end(&host, &flow, json!({})).await;
    host.engine.set_paused(true);
    let waiting = support::submit(&host, &flow, json!({})).await;
    let status = host.engine.status(waiting).await.unwrap().unwrap();
    assert_eq!(status.phrase, "Request accepted", "{status:?}");
    let said = status.expectation.expect("an expectation for a moving run");
    assert_eq!(said.usually_within_ms, None);
    assert!(
        said.text
            .starts_with("no estimate yet: 1 run(s) of this flow have settled"),
        "{}",
        said.text
    );
    host.engine.set_paused(false);
    host.engine.resume().await.unwrap();
    host.engine.wait(waiting).await.unwrap();

    // Twenty settled runs: now a moving run is told what to expect.
    let runs = futures_join(&host, &flow, 18).await;
    assert_eq!(runs, 18);
    host.engine.set_paused(true);
    let fresh = support::submit(&host, &flow, json!({})).await;
    let status = host.engine.status(fresh).await.unwrap().unwrap();
    let said = status.expectation.clone().unwrap();
    let within = said.usually_within_ms.expect("20 runs are enough");
    assert!(within >= 100, "each run naps 100 ms: {within}");
    assert_eq!(said.of_runs, 20);
    assert!(!said.overdue);
    // The step it is at has its own: nap takes its 100 ms every time.
    let step = said.step.clone().expect("20 runs did the step");
    assert_eq!((step.step.as_str(), step.of_runs), ("nap", 20));
    assert!(
        (100..within + 1).contains(&step.usually_within_ms),
        "{step:?}"
    );
    assert!(
        status
            .phrase
            .starts_with("Request accepted; usually completes within "),
        "{}",
        status.phrase
    );
    assert!(
        status.phrase.ends_with("(90 % of the last 20 runs)"),
        "{}",
        status.phrase
    );

    // Past that time, it says so instead of promising.
    tokio::time::sleep(Duration::from_millis(within + 50)).await;
    let late = host.engine.status(fresh).await.unwrap().unwrap();
    assert!(late.expectation.as_ref().unwrap().overdue);
    assert!(
        late.phrase
            .starts_with("Taking longer than usual (90 % of the last 20 runs completed within ")
            && late.phrase.ends_with(": Request accepted"),
        "{}",
        late.phrase
    );
    // A finished run carries no expectation.
    let done = host.engine.status(waiting).await.unwrap().unwrap();
    assert!(done.expectation.is_none());
    // Cancelled, so the restarted host does not finish it (and add a
    // sample) before the history is read back.
    host.engine
        .act(
            fresh,
            settle::engine::OperatorCommand {
                action: settle::model::OperatorAction::Cancel,
                by: "test".into(),
                reason: "not needed".into(),
                step: None,
            },
        )
        .await
        .unwrap();
    host.shutdown().await.unwrap();

    // After a restart the history is read back from the store.
    let host = crate::idempotency::reopen(&config).await;
    host.engine.set_paused(true);
    let after = support::submit(&host, &flow, json!({})).await;
    let status = host.engine.status(after).await.unwrap().unwrap();
    let said = status.expectation.unwrap();
    assert_eq!(said.of_runs, 20, "{said:?}");
    assert_eq!(said.usually_within_ms, Some(within));
    // The step's history is read back from the runs' logs.
    assert_eq!(
        said.step.map(|s| (s.step, s.of_runs)),
        Some(("nap".into(), 20))
    );
    host.shutdown().await.unwrap();
}

/// Runs `n` runs of `flow` to the end, all at once; how many settled.
async fn futures_join(host: &Host, flow: &std::sync::Arc<settle::flow::Flow>, n: usize) -> usize {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(support::submit(host, flow, json!({})).await);
    }
    let mut settled = 0;
    for id in ids {
        let s = host.engine.wait(id).await.unwrap().unwrap();
        settled += usize::from(s.state == settle::model::RunState::Settled);
    }
    settled
}
