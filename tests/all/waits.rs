//! `wait:` steps: a durable timer in the middle of a flow. The time it
//! waits until is recorded when it begins, so a host stopped meanwhile
//! finishes it at the same time; the status says until when; an `until`
//! that is not a time fails the step for good (and undoes what came before).

use crate::support;
use serde_json::json;
use settle::app::Host;
use settle::model::{EventKind, RunState};
use std::time::{Duration, Instant};

const PAUSED: &str = "
name: paused
steps:
  - { name: first, plugin: noop }
  - name: cool-off
    wait: 1500ms
  - { name: last, plugin: noop }
";

/// An operator's command, from the tests.
fn command(action: settle::model::OperatorAction) -> settle::engine::OperatorCommand {
    settle::engine::OperatorCommand {
        action,
        by: "test".into(),
        reason: "from the test".into(),
        step: None,
    }
}

/// Waits (at most 5 s) until the run's pause has begun.
async fn until_waiting(host: &Host, run: settle::model::RunId) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while waiting_until(host, run).is_empty() {
        assert!(Instant::now() < deadline, "the run never began to wait");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn waiting_until(host: &Host, run: settle::model::RunId) -> Vec<u64> {
    support::events(host, run)
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::StepWaiting { until_ms, .. } => Some(until_ms),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_step_holds_the_run_durably_and_says_until_when() {
    let dir = support::tempdir();
    let config = support::config(dir.path());
    let flow = support::flow(PAUSED);
    let host = Host::start(&config).await.unwrap();
    let started = Instant::now();
    let run = support::submit(&host, &flow, json!({})).await;
    // It reaches the pause and says so.
    let deadline = Instant::now() + Duration::from_secs(5);
    let phrase = loop {
        let status = host.engine.status(run).await.unwrap().unwrap();
        if status.phrase.starts_with("Waiting until ") {
            break status.phrase;
        }
        assert!(Instant::now() < deadline, "{status:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        phrase.contains("as the flow asks (step cool-off)"),
        "{phrase}"
    );
    let until = waiting_until(&host, run);
    assert_eq!(until.len(), 1);
    // The host stops during the pause; another finishes it, on time.
    host.shutdown().await.unwrap();
    let host = crate::idempotency::reopen(&config).await;
    let done = host.engine.wait(run).await.unwrap().unwrap();
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1_500),
        "it waited"
    );
    assert_eq!(
        waiting_until(&host, run),
        until,
        "the same time, recorded once"
    );
    assert!(
        done.finished_at_ms.unwrap() >= until[0],
        "not finished before the pause ended"
    );
    assert_eq!(
        done.outputs[1].as_ref().unwrap()["waited_until_ms"],
        until[0]
    );
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_until_a_time_from_the_input_and_one_that_is_not_a_time() {
    let dir = support::tempdir();
    let config = support::config(dir.path());
    let flow = support::flow(
        "
name: until
steps:
  - { name: first, plugin: noop }
  - name: hold-on
    wait: { until: \"${{ input.at }}\" }
",
    );
    let host = Host::start(&config).await.unwrap();
    let at = std::time::SystemTime::now() + Duration::from_millis(1_200);
    let at = humantime::format_rfc3339_millis(at).to_string();
    let done = support::run_to_end(&host, &flow, json!({ "at": at })).await;
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    // Not a time: the step fails for good and the run is undone.
    let bad = support::run_to_end(&host, &flow, json!({ "at": "soon" })).await;
    assert_eq!(bad.state, RunState::Compensated, "{bad:#?}");
    let failure = bad.last_failure.unwrap();
    assert!(
        failure.message.contains("'soon', not an RFC 3339 time"),
        "{failure:?}"
    );
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_and_resume_during_a_wait_keeps_its_time() {
    let dir = support::tempdir();
    let config = support::config(dir.path());
    let flow = support::flow(
        "name: long\nsteps:\n  - { name: first, plugin: noop }\n  - { name: cool-off, wait: 1500ms }\n",
    );
    let host = Host::start(&config).await.unwrap();
    let run = support::submit(&host, &flow, json!({})).await;
    until_waiting(&host, run).await;
    host.engine
        .request(run, command(settle::model::OperatorAction::Pause))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = host.store.summary_now(run).unwrap().unwrap();
        if s.state == RunState::NeedsAttention {
            break;
        }
        assert!(Instant::now() < deadline, "{s:#?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    host.engine
        .act(run, command(settle::model::OperatorAction::Resume))
        .await
        .unwrap();
    let done = host.engine.wait(run).await.unwrap().unwrap();
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    let until = waiting_until(&host, run);
    assert_eq!(
        until.len(),
        1,
        "the time was kept, not set again: {until:?}"
    );
    let finished = done.finished_at_ms.unwrap();
    assert!(
        finished >= until[0] && finished < until[0] + 1_000,
        "finished at {finished}, the wait ended at {}",
        until[0]
    );
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_waiting_run_does_not_blame_the_wait() {
    let dir = support::tempdir();
    let config = support::config(dir.path());
    let flow = support::flow(PAUSED);
    let host = Host::start(&config).await.unwrap();
    let run = support::submit(&host, &flow, json!({})).await;
    until_waiting(&host, run).await;
    host.engine
        .request(run, command(settle::model::OperatorAction::Cancel))
        .await
        .unwrap();
    let done = host.engine.wait(run).await.unwrap().unwrap();
    assert_eq!(done.state, RunState::Cancelled);
    let phrase = done.phrase(0, false);
    assert_eq!(phrase, "Cancelled; left in place: first", "{done:#?}");
    host.shutdown().await.unwrap();
}

/// A run starts on the plugin builds installed when it was accepted (it
/// records their digests); another build of `noop` (one that answers
/// `{"attempt": N}` where noop echoes its input) is installed while the
/// run waits, and the host restarts. Returns the run's last output, the
/// digest it was accepted with, and its `plugin-changed` events.
async fn swap_noop_under_a_waiting_run(
    flow: &str,
    lose_kept_builds: bool,
) -> (settle::model::RunSummary, String, Vec<(String, String)>) {
    let dir = support::tempdir();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        support::plugin_dir().join("noop.wasm"),
        plugins.join("noop.wasm"),
    )
    .unwrap();
    let mut config = support::config(dir.path());
    config.plugin_dirs = vec![plugins.clone()];
    let flow = support::flow(flow);
    let host = Host::start(&config).await.unwrap();
    let run = support::submit(&host, &flow, json!({})).await;
    until_waiting(&host, run).await;
    let accepted = settle::store::RunLog::summary(host.engine.store(), run)
        .await
        .unwrap()
        .unwrap();
    let before = accepted
        .plugins
        .get("noop")
        .cloned()
        .expect("noop's digest recorded");
    host.shutdown().await.unwrap();

    let other = support::plugin_dir().join("../dist-hostile/squat-noop.wasm");
    std::fs::copy(&other, plugins.join("noop.wasm")).unwrap();
    if lose_kept_builds {
        std::fs::remove_dir_all(config.data_dir.join("builds")).unwrap();
    }
    let host = crate::idempotency::reopen(&config).await;
    let done = host.engine.wait(run).await.unwrap().unwrap();
    let changes: Vec<(String, String)> = support::events(&host, run)
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::PluginChanged { from, to, .. } => Some((from.clone(), to.clone())),
            _ => None,
        })
        .collect();
    host.shutdown().await.unwrap();
    (done, before, changes)
}

/// By default a run keeps the build it started with: the kept copy is
/// called after another build is installed and the host restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_keeps_the_plugin_build_it_started_with() {
    let (done, _, changes) = swap_noop_under_a_waiting_run(PAUSED, false).await;
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    assert_eq!(
        done.outputs[2],
        Some(json!({})),
        "the old noop echoed its input"
    );
    assert!(changes.is_empty(), "{changes:?}");
}

/// A build the run needs that is no longer kept holds the run for an
/// operator, saying which; nothing is undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_build_holds_the_run_and_undoes_nothing() {
    let (done, before, _) = swap_noop_under_a_waiting_run(PAUSED, true).await;
    assert_eq!(done.state, RunState::NeedsAttention, "{done:#?}");
    assert_eq!(done.hold, Some(settle::model::HoldCause::HostSetup));
    let failure = done.last_failure.clone().expect("a failure");
    assert!(
        failure.message.contains("the build this run started with")
            && failure.message.contains(&before[..16]),
        "{}",
        failure.message
    );
    assert!(done.compensated.iter().all(|c| !c), "{done:#?}");
}

/// Under `upgrade: at-step-boundary` the next step calls the build
/// installed now, recorded first (`plugin-changed`, from and to), once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrading_flow_moves_to_the_new_build_and_records_it() {
    let flow = format!("upgrade: at-step-boundary\n{}", PAUSED.trim_start());
    let (done, before, changes) = swap_noop_under_a_waiting_run(&flow, false).await;
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    assert_eq!(
        done.outputs[2],
        Some(json!({"attempt": 1})),
        "the new build answered"
    );
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].0, before);
    assert_ne!(changes[0].1, before);
}
