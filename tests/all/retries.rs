//! Retries follow the policy: attempts, delays and non-retryable classes.

use crate::support;
use serde_json::json;
use settle::app::Host;
use settle::model::{EventKind, FailureClass, RunState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_back_off_then_succeed() {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    let flow = support::flow(
        r#"
name: retrying
steps:
  - name: shaky
    plugin: flaky
    input: { mode: fail-times, times: 2 }
    retry: { max_attempts: 5, initial_interval: 100ms, backoff_coefficient: 2, max_interval: 1s, jitter: 0 }
"#,
    );
    let run = support::run_to_end(&host, &flow, json!({})).await;
    assert_eq!(run.state, RunState::Settled);
    let events = support::events(&host, run.run_id);

    let failed: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StepFailed {
                failure,
                retry_at_ms,
                ..
            } => Some((e.at_ms, e.attempt, failure.clone(), *retry_at_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 2, "two planned failures");
    assert_eq!(failed[0].1, Some(1));
    assert_eq!(failed[1].1, Some(2));
    assert_eq!(failed[0].2.class, FailureClass::Retryable);
    // Delays follow the policy exactly (no jitter): 100 ms, then 200 ms.
    assert_eq!(failed[0].3.unwrap() - failed[0].0, 100);
    assert_eq!(failed[1].3.unwrap() - failed[1].0, 200);

    let completed = events
        .iter()
        .find(|e| matches!(e.kind, EventKind::StepCompleted { .. }))
        .unwrap();
    assert_eq!(completed.attempt, Some(3));
    assert!(
        completed.at_ms >= failed[0].0 + 300,
        "the host waited the delays out"
    );
    let EventKind::StepCompleted { output, .. } = &completed.kind else {
        unreachable!()
    };
    assert_eq!(output["attempt"], 3, "the plugin saw attempt 3");
    assert_eq!(run.attempts_total, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_from_the_plugin_is_a_floor() {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    let flow = support::flow(
        r#"
name: told-to-wait
steps:
  - name: shaky
    plugin: flaky
    input: { mode: fail-times, times: 1, retry_after_ms: 400 }
    retry: { max_attempts: 3, initial_interval: 10ms, jitter: 0 }
"#,
    );
    let run = support::run_to_end(&host, &flow, json!({})).await;
    assert_eq!(run.state, RunState::Settled);
    let events = support::events(&host, run.run_id);
    let (at, retry_at) = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::StepFailed { retry_at_ms, .. } => Some((e.at_ms, retry_at_ms.unwrap())),
            _ => None,
        })
        .unwrap();
    assert_eq!(retry_at - at, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retryable_failures_are_not_retried() {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    for (mode, class, extra) in [
        ("invalid", FailureClass::InvalidInput, ""),
        ("permanent", FailureClass::Permanent, ""),
        ("loop", FailureClass::Timeout, "non_retryable: [timeout]"),
    ] {
        let flow = support::flow(&format!(
            r#"
name: once-{mode}
steps:
  - name: only
    plugin: flaky
    input: {{ mode: {mode} }}
    timeout: 100ms
    retry: {{ max_attempts: 5, initial_interval: 10ms, {extra} }}
"#
        ));
        let run = support::run_to_end(&host, &flow, json!({})).await;
        assert_eq!(run.state, RunState::Compensated, "{mode}");
        let failures: Vec<_> = support::events(&host, run.run_id)
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::StepFailed {
                    failure,
                    retry_at_ms,
                    ..
                } => Some((failure, retry_at_ms)),
                _ => None,
            })
            .collect();
        assert_eq!(failures.len(), 1, "{mode}: exactly one attempt");
        assert_eq!(failures[0].0.class, class, "{mode}");
        assert_eq!(failures[0].1, None, "{mode}: no retry scheduled");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_max_attempts() {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    let flow = support::flow(
        r#"
name: gives-up
steps:
  - name: hopeless
    plugin: flaky
    input: { mode: fail-times, times: 100 }
    retry: { max_attempts: 4, initial_interval: 5ms, jitter: 0 }
"#,
    );
    let run = support::run_to_end(&host, &flow, json!({})).await;
    assert_eq!(run.state, RunState::Compensated);
    let attempts: Vec<Option<u32>> = support::events(&host, run.run_id)
        .iter()
        .filter(|e| matches!(e.kind, EventKind::StepFailed { .. }))
        .map(|e| e.attempt)
        .collect();
    assert_eq!(attempts, [Some(1), Some(2), Some(3), Some(4)]);
}

/// A retry scheduled before the host stops fires after it starts again, at
/// the time recorded in the log (the run's summary names it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_timer_survives_a_restart() {
    let dir = support::tempdir();
    let config = support::config(dir.path());
    let flow = support::flow(
        r#"
name: timer
steps:
  - name: later
    plugin: flaky
    input: { mode: fail-times, times: 1 }
    retry: { max_attempts: 3, initial_interval: 1500ms, jitter: 0 }
"#,
    );
    let (run, due) = {
        let host = Host::start(&config).await.unwrap();
        let run = support::submit(&host, &flow, json!({})).await;
        let mut due = None;
        for _ in 0..200 {
            let summary = host.store.summary_now(run).unwrap().unwrap();
            if summary.state == RunState::Retrying {
                due = summary.next.due_ms();
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let due = due.expect("the retry is recorded with its due time");
        // The host stops here, with the retry pending.
        host.shutdown().await.unwrap();
        (run, due)
    };
    let host = crate::idempotency::reopen(&config).await;
    assert_eq!(host.resumed.runs, vec![run]);
    let status = host.engine.status(run).await.unwrap().unwrap();
    assert!(
        status
            .phrase
            .starts_with("Retrying later (attempt 2 of 3) in"),
        "{}",
        status.phrase
    );
    let s = host.engine.wait(run).await.unwrap().unwrap();
    assert_eq!(s.state, RunState::Settled);
    let completed = support::events(&host, run)
        .into_iter()
        .find(|e| matches!(e.kind, EventKind::StepCompleted { .. }))
        .unwrap();
    assert!(
        completed.at_ms >= due,
        "fired at the recorded time, not before"
    );
    assert_eq!(completed.attempt, Some(2));
}

/// A plugin asking to be retried after u64::MAX ms used to overflow the
/// engine's clock arithmetic (a panic, and `settle run` hung): the wait is
/// now clamped to the step's `max_interval`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_retry_after_is_clamped_not_a_panic() {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    let flow = support::flow(
        r#"
name: greedy
steps:
  - name: later
    plugin: flaky
    input: { mode: fail-times, times: 1, retry_after_ms: "${{ input.after }}" }
    retry: { max_attempts: 3, initial_interval: 10ms, max_interval: 200ms, jitter: 0 }
"#,
    );
    let run = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        support::run_to_end(&host, &flow, json!({ "after": u64::MAX })),
    )
    .await
    .expect("the run ends");
    assert_eq!(run.state, RunState::Settled);
    let (at, retry_at) = support::events(&host, run.run_id)
        .into_iter()
        .find_map(|e| match e.kind {
            EventKind::StepFailed { retry_at_ms, .. } => Some((e.at_ms, retry_at_ms.unwrap())),
            _ => None,
        })
        .unwrap();
    assert_eq!(retry_at - at, 200, "clamped to max_interval");
}

/// The engine reads the time of its decisions from its clock: a test's
/// clock stamps every event and sets when a retry is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engines_clock_stamps_every_event_and_due_time() {
    struct Fixed(u64);
    impl settle::model::clock::Clock for Fixed {
        fn now_ms(&self) -> u64 {
            self.0
        }
    }
    // An hour behind the wall clock: retries it schedules are due at once
    // by the wall clock's sleep, and stamped by this one.
    let fixed = settle::model::now_ms() - 3_600_000;
    let dir = support::tempdir();
    let base = Host::start_with(&support::config(dir.path()), settle::app::OnStart::Leave)
        .await
        .unwrap();
    let engine = settle::engine::Engine::new(
        base.store.clone(),
        base.runtime.clone(),
        settle::engine::EngineOptions {
            clock: settle::engine::EngineClock(std::sync::Arc::new(Fixed(fixed))),
            ..settle::engine::EngineOptions::default()
        },
    );
    let flow = support::flow(
        "name: clocked\nsteps:\n  - name: a\n    plugin: flaky\n    input: { mode: fail-times, times: 1 }\n    retry: { max_attempts: 3, initial_interval: 1s, jitter: 0 }\n",
    );
    let run = engine.submit(&flow, json!({}), None).await.unwrap().run_id;
    let done = engine.wait(run).await.unwrap().unwrap();
    assert_eq!(done.state, settle::model::RunState::Settled);
    let events = base.store.events_now(run).unwrap();
    assert!(events.len() >= 5, "{events:?}");
    for e in &events {
        assert_eq!(
            e.at_ms,
            fixed,
            "event {} {} stamped by another clock",
            e.seq,
            e.kind.name()
        );
    }
    let retry_at = events.iter().find_map(|e| match &e.kind {
        settle::model::EventKind::StepFailed { retry_at_ms, .. } => *retry_at_ms,
        _ => None,
    });
    assert_eq!(retry_at, Some(fixed + 1_000));
    drop(engine);
    base.shutdown().await.unwrap();
}
