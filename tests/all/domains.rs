//! Failure domains beyond a plugin's own breaker: a breaker per downstream
//! host (learnt from the requests the runtime sees), a retry budget, and a
//! bulkhead that keeps a slow plugin from holding every worker.

use crate::support::{self, Service};
use serde_json::json;
use settle::app::Host;
use settle::engine::breakers::BreakerPolicy;
use settle::engine::retry_budget::RetryBudgetPolicy;
use settle::model::{EventKind, RunId, RunState};
use std::time::{Duration, Instant};

const PAY: &str = "
name: pay
steps:
  - name: charge
    plugin: transfer
    input: { from: ann, to: shop, amount: 5 }
    retry: { max_attempts: 20, initial_interval: 10ms, backoff_coefficient: 1, jitter: 0 }
";

const QUICK: &str = "
name: quick
steps:
  - { name: one, plugin: noop }
";

fn failed_attempts(host: &Host, runs: &[RunId]) -> usize {
    runs.iter()
        .flat_map(|r| support::events(host, *r))
        .filter(|e| matches!(e.kind, EventKind::StepFailed { .. }))
        .count()
}

/// Polls until some run's phrase starts with `prefix`; returns it.
async fn phrase_starting(host: &Host, runs: &[RunId], prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for run in runs {
            let status = host.engine.status(*run).await.unwrap().unwrap();
            if status.phrase.starts_with(prefix) {
                return status.phrase;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no run said '{prefix}…'; domains: {:?}",
            host.engine.domains()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_host_that_is_down_opens_its_own_breaker() {
    let dir = support::tempdir();
    let mut config = support::config(dir.path());
    let service = Service::start(&dir.path().join("world"));
    service.grant(&mut config);
    let authority = service.addr.clone();
    // The ledger goes away: every request to it is refused.
    drop(service);
    config.breakers.insert(
        "host:*".into(),
        BreakerPolicy {
            failure_rate: 0.5,
            min_calls: 3,
            window: Duration::from_secs(30),
            open_for: Duration::from_secs(60),
        },
    );
    let host = Host::start(&config).await.unwrap();
    let (pay, quick) = (support::flow(PAY), support::flow(QUICK));
    let mut runs = Vec::new();
    for _ in 0..6 {
        runs.push(support::submit(&host, &pay, json!({})).await);
    }
    let phrase = phrase_starting(
        &host,
        &runs,
        &format!("Waiting: downstream host '{authority}' is failing; its circuit breaker is open"),
    )
    .await;
    assert!(phrase.contains("next try in"), "{phrase}");
    let breakers = host.engine.domains().breakers;
    assert!(
        breakers
            .iter()
            .any(|b| b.domain == format!("host:{authority}") && b.state == "open"),
        "{breakers:?}"
    );
    assert!(
        !breakers.iter().any(|b| b.domain == "transfer"),
        "no breaker of the plugin itself was configured: {breakers:?}"
    );
    // The attempts stop: a handful reached the host before the breaker
    // opened (at most one per run in flight then), none after.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spent = failed_attempts(&host, &runs);
    assert!(
        (3..=3 + runs.len()).contains(&spent),
        "{spent} attempts failed"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        failed_attempts(&host, &runs),
        spent,
        "none while it is open"
    );
    // A plugin that reaches no such host is not held back.
    let started = Instant::now();
    for _ in 0..10 {
        let done = support::run_to_end(&host, &quick, json!({})).await;
        assert_eq!(done.state, RunState::Settled);
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_over_their_budget_wait_while_first_attempts_go() {
    let dir = support::tempdir();
    let mut config = support::config(dir.path());
    config.retry_budgets.insert(
        "flaky".into(),
        RetryBudgetPolicy {
            share: 0.0,
            min_retries: 2,
            window: Duration::from_secs(60),
        },
    );
    let host = Host::start(&config).await.unwrap();
    let flow = support::flow(
        "
name: shaky
steps:
  - name: pay
    plugin: flaky
    input: { mode: fail-times, times: 3 }
    retry: { max_attempts: 10, initial_interval: 10ms, backoff_coefficient: 1, jitter: 0 }
",
    );
    let mut runs = Vec::new();
    for _ in 0..5 {
        runs.push(support::submit(&host, &flow, json!({})).await);
    }
    let phrase = phrase_starting(
        &host,
        &runs,
        "Waiting: retries to plugin 'flaky' are over their budget",
    )
    .await;
    assert!(phrase.contains("first attempts in 1m"), "{phrase}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Five first attempts and two retries were made, no more.
    assert_eq!(failed_attempts(&host, &runs), 7);
    let budget = &host.engine.domains().retry_budgets[0];
    assert_eq!(
        (budget.first_attempts, budget.retries),
        (5, 2),
        "{budget:?}"
    );
    // A new run's first attempt is not held back.
    let other = support::submit(&host, &flow, json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(failed_attempts(&host, &[other]), 1);
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulkhead_keeps_a_slow_plugin_from_taking_every_worker() {
    let dir = support::tempdir();
    let mut config = support::config(dir.path());
    let service = Service::start(&dir.path().join("world"));
    service.grant(&mut config);
    config.engine.max_runs_in_flight = 3;
    config.bulkheads.insert("transfer".into(), 2);
    let host = Host::start(&config).await.unwrap();
    let slow = support::flow(
        "
name: slow
steps:
  - { name: charge, plugin: transfer, input: { from: ann, to: shop, amount: 5, answer_after_ms: 800 } }
",
    );
    let quick = support::flow(QUICK);
    let mut runs = Vec::new();
    for _ in 0..6 {
        runs.push(support::submit(&host, &slow, json!({})).await);
    }
    // Two slow calls at a time, never more; the third worker stays free.
    let started = Instant::now();
    let mut most = 0;
    for _ in 0..10 {
        let done = support::run_to_end(&host, &quick, json!({})).await;
        assert_eq!(done.state, RunState::Settled);
        most = most.max(host.engine.domains().bulkheads[0].in_flight);
    }
    let quick_took = started.elapsed();
    assert!(
        quick_took < Duration::from_millis(700),
        "10 quick runs took {quick_took:?} beside the slow plugin"
    );
    for run in &runs {
        let done = host.engine.wait(*run).await.unwrap().unwrap();
        assert_eq!(done.state, RunState::Settled, "{done:#?}");
        most = most.max(host.engine.domains().bulkheads[0].in_flight);
    }
    assert!(most <= 2, "at most two calls in flight: {most}");
    assert!(
        started.elapsed() >= Duration::from_millis(3 * 800),
        "six calls of 0.8 s, two at a time: {:?}",
        started.elapsed()
    );
    host.shutdown().await.unwrap();
}

#[test]
fn the_server_shows_every_guard_over_http_in_metrics_and_in_settle_status() {
    let dir = support::tempdir();
    let extra = r#"
[bulkheads]
noop = 3
[breakers."host:*"]
min_calls = 5
[retry_budgets.flaky]
share = 0.5
min_retries = 4
window = "2m"
"#;
    let server = support::Server::start(dir.path(), &[("quick", QUICK)], extra);
    let reply = server.post("/v1/flows/quick/runs?wait=10s", &json!({}));
    assert_eq!(reply.json["state"], "settled", "{reply}");
    let domains = server.get("/v1/breakers").json;
    assert_eq!(
        domains["bulkheads"],
        json!([{"plugin": "noop", "in_flight": 0, "max_in_flight": 3}])
    );
    assert_eq!(domains["retry_budgets"][0]["domain"], "flaky", "{domains}");
    assert_eq!(domains["retry_budgets"][0]["allowed"], 4.0, "{domains}");
    assert_eq!(domains["retry_budgets"][0]["window_ms"], 120_000);
    let metrics = server.get("/metrics").text;
    for line in [
        "settle_bulkhead_limit{plugin=\"noop\"} 3",
        "settle_bulkhead_in_flight{plugin=\"noop\"} 0",
        "settle_retry_budget_allowed{domain=\"flaky\"} 4",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    let (code, out, err) = support::settle(&["status", "--server", &server.base_url]).unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("budget   flaky")
            && out.contains("0 retries of 4 allowed for 0 first attempts in 120 s"),
        "{out}"
    );
    assert!(
        out.contains("bulkhead noop") && out.contains("0 of at most 3 calls in flight"),
        "{out}"
    );
    // Without a server there is nothing to read them from.
    let (code, _, err) = support::settle(&["status"]).unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("failure domains"), "{err}");
}
