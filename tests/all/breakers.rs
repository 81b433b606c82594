//! A plugin's circuit breaker: when its attempts keep failing, the breaker
//! opens and new attempts wait without spending their retries; a probe
//! closes it again; runs of other plugins are not slowed meanwhile.

use crate::support;
use serde_json::json;
use settle::app::Host;
use settle::engine::breakers::BreakerPolicy;
use settle::model::{EventKind, RunState};
use std::time::{Duration, Instant};

const SHAKY: &str = "
name: shaky
steps:
  - name: pay
    plugin: flaky
    input: { mode: fail-times, times: 2 }
    retry: { max_attempts: 5, initial_interval: 10ms, backoff_coefficient: 1, jitter: 0 }
";

const QUICK: &str = "
name: quick
steps:
  - { name: one, plugin: noop }
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_defers_attempts_without_spending_them_and_spares_other_plugins() {
    let dir = support::tempdir();
    let mut config = support::config(dir.path());
    config.breakers.insert(
        "flaky".into(),
        BreakerPolicy {
            failure_rate: 0.5,
            min_calls: 4,
            window: Duration::from_secs(10),
            open_for: Duration::from_millis(500),
        },
    );
    let host = Host::start(&config).await.unwrap();
    let metrics = std::sync::Arc::new(settle::telemetry::metrics::Metrics::new());
    host.engine.observe(metrics.clone());
    let (shaky, quick) = (support::flow(SHAKY), support::flow(QUICK));
    let mut runs = Vec::new();
    for _ in 0..8 {
        runs.push(support::submit(&host, &shaky, json!({})).await);
    }

    // The breaker opens, and a waiting run says why it waits.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut phrase = None;
    while phrase.is_none() {
        assert!(
            Instant::now() < deadline,
            "no run was seen waiting on the breaker"
        );
        for run in &runs {
            let status = host.engine.status(*run).await.unwrap().unwrap();
            if status
                .phrase
                .starts_with("Waiting: plugin 'flaky' is failing")
            {
                phrase = Some(status.phrase);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let phrase = phrase.unwrap();
    assert!(phrase.contains("; next try in "), "{phrase}");
    assert!(
        host.engine
            .breakers()
            .iter()
            .any(|b| b.domain == "flaky" && b.state != "closed"),
        "{:?}",
        host.engine.breakers()
    );

    // Meanwhile another plugin's runs settle at full speed.
    let started = Instant::now();
    for _ in 0..20 {
        let done = support::run_to_end(&host, &quick, json!({})).await;
        assert_eq!(done.state, RunState::Settled);
        assert!(!support::event_names(&host, done.run_id).contains(&"step-deferred".to_string()));
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "20 runs of noop took {:?} while flaky's breaker was open",
        started.elapsed()
    );

    // Every shaky run settles, having failed exactly its two planned
    // attempts: the waits spent none.
    let mut deferred = 0;
    for run in &runs {
        let done = host.engine.wait(*run).await.unwrap().unwrap();
        assert_eq!(done.state, RunState::Settled, "{done:#?}");
        let events = support::events(&host, *run);
        let failed = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::StepFailed { .. }))
            .count();
        assert_eq!(failed, 2, "only the planned failures were attempts");
        assert_eq!(done.outputs[0].as_ref().unwrap()["attempt"], 3);
        deferred += events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::StepDeferred { .. }))
            .count();
    }
    assert!(deferred > 0, "some attempts waited on the breaker");
    // A successful probe closed it (it may have opened again after, on
    // the failures still planned: what state it ends in is timing).
    let transitions = |state: &str| {
        metrics
            .breaker_transitions
            .with_label_values(&["flaky", state])
            .get()
    };
    assert!(transitions("open") >= 1, "it opened");
    assert!(transitions("half-open") >= 1, "a probe went through");
    assert!(transitions("closed") >= 1, "a successful probe closed it");
    host.shutdown().await.unwrap();
}
