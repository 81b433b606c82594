//! A run waits for an operator instead of undoing real work when the host's
//! own setup fails, when its flow says `on_exhausted: hold`, or when the host
//! itself fails on it; the operator's commands move it on, each recorded
//! with who and why.

use crate::support;
use serde_json::json;
use settle::app::{Host, OnStart};
use settle::engine::OperatorCommand;
use settle::model::{EventKind, HoldCause, OperatorAction, RunState};
use settle::runtime::{CallReport, CallRequest, Executor, PluginDescriptor, Runtime};
use std::path::Path;
use std::sync::Arc;

/// A plugin directory of its own, so a test can remove and restore files.
fn own_plugins(dir: &Path, names: &[&str]) -> std::path::PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for name in names {
        std::fs::copy(
            support::plugin_dir().join(format!("{name}.wasm")),
            plugins.join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    plugins
}

fn command(action: OperatorAction, reason: &str) -> OperatorCommand {
    OperatorCommand {
        action,
        by: "ops-test".into(),
        reason: reason.into(),
        step: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_plugin_at_restart_holds_then_resume_settles_with_nothing_undone() {
    let dir = support::tempdir();
    let plugins = own_plugins(dir.path(), &["noop", "flaky"]);
    let mut config = support::config(dir.path());
    config.plugin_dirs = vec![plugins.clone()];
    let flow = support::flow(
        "name: two\nsteps:\n  - { name: first, plugin: noop }\n  - { name: second, plugin: flaky, input: { mode: ok } }\n",
    );
    // Accepted while everything was installed, then the host stops.
    let run = {
        let host = Host::start(&config).await.unwrap();
        host.engine.set_paused(true);
        let run = support::submit(&host, &flow, json!({})).await;
        host.shutdown().await.unwrap();
        run
    };
    // An operator's slip: `flaky` is gone when the host starts again.
    std::fs::remove_file(plugins.join("flaky.wasm")).unwrap();
    {
        let host = crate::idempotency::reopen(&config).await;
        let held = host.engine.wait(run).await.unwrap().unwrap();
        assert_eq!(held.state, RunState::NeedsAttention, "{held:#?}");
        assert_eq!(held.hold, Some(HoldCause::HostSetup));
        let phrase = held.phrase(0, false);
        assert!(
            phrase.contains("waiting for an operator: plugin 'flaky' is not installed"),
            "{phrase}"
        );
        assert!(held.outputs[0].is_some(), "the first step's work stays");
        assert_eq!(host.engine.held_for_setup().await.unwrap(), vec![run]);
        host.shutdown().await.unwrap();
    }
    // The operator restores it and resumes: the run continues where it stopped.
    std::fs::copy(
        support::plugin_dir().join("flaky.wasm"),
        plugins.join("flaky.wasm"),
    )
    .unwrap();
    let host = crate::idempotency::reopen(&config).await;
    assert!(
        host.resumed.runs.is_empty(),
        "a held run is not resumed by itself"
    );
    host.engine
        .act(run, command(OperatorAction::Resume, "flaky reinstalled"))
        .await
        .unwrap();
    let done = host.engine.wait(run).await.unwrap().unwrap();
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    let names = support::event_names(&host, run);
    assert!(
        !names.iter().any(|n| n.starts_with("compensation")),
        "nothing was undone: {names:?}"
    );
    assert!(names.contains(&"run-held".to_string()));
    let acted = support::events(&host, run)
        .into_iter()
        .find_map(|e| match e.kind {
            EventKind::OperatorActed { action, by, reason } => Some((action, by, reason)),
            _ => None,
        })
        .expect("the release is recorded");
    assert_eq!(
        acted,
        (
            OperatorAction::Resume,
            "ops-test".to_string(),
            "flaky reinstalled".to_string()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_hold_when_the_flow_says_so_and_retry_settles() {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    let flow = support::flow(
        r#"
name: patient
defaults:
  on_exhausted: hold
steps:
  - { name: first, plugin: noop }
  - name: shaky
    plugin: flaky
    input: { mode: fail-times, times: 3 }
    retry: { max_attempts: 2, initial_interval: 10ms, jitter: 0 }
"#,
    );
    let run = support::run_to_end(&host, &flow, json!({})).await;
    assert_eq!(run.state, RunState::NeedsAttention, "{run:#?}");
    assert_eq!(run.hold, Some(HoldCause::RetriesExhausted));
    assert!(run.compensated.iter().all(|c| !c), "nothing undone");

    // Retrying the wrong step is refused; the right one settles.
    let mut wrong = command(OperatorAction::Retry, "oops");
    wrong.step = Some("first".into());
    let err = host.engine.act(run.run_id, wrong).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("stopped at step 'shaky', not 'first'"),
        "{err}"
    );
    let mut retry = command(OperatorAction::Retry, "provider fixed");
    retry.step = Some("shaky".into());
    host.engine.act(run.run_id, retry).await.unwrap();
    let done = host.engine.wait(run.run_id).await.unwrap().unwrap();
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    // A fresh budget of the step's two attempts: the third fails, the fourth passes.
    assert_eq!(done.outputs[1].as_ref().unwrap()["attempt"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_compensate_or_cancel_a_held_run_from_the_command_line() {
    let dir = support::tempdir();
    let config_path = support::write_config(dir.path(), None);
    let config = settle::config::Config::load(Some(&config_path)).unwrap();
    let flow = support::flow(
        r#"
name: held
defaults:
  on_exhausted: hold
steps:
  - { name: first, plugin: noop }
  - name: broken
    plugin: flaky
    input: { mode: fail-times, times: 99 }
    retry: { max_attempts: 1 }
"#,
    );
    let (a, b) = {
        let host = Host::start(&config).await.unwrap();
        let a = support::run_to_end(&host, &flow, json!({})).await;
        let b = support::run_to_end(&host, &flow, json!({})).await;
        assert_eq!(a.state, RunState::NeedsAttention);
        host.shutdown().await.unwrap();
        (a.run_id.to_string(), b.run_id.to_string())
    };
    let config_arg = config_path.to_str().unwrap();
    let (code, _, stderr) = support::settle(&["compensate", &a, "--config", config_arg]).unwrap();
    assert_eq!(code, 2, "--reason is required: {stderr}");

    let (code, stdout, stderr) = support::settle(&[
        "compensate",
        &a,
        "--reason",
        "customer gave up",
        "--config",
        config_arg,
    ])
    .unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("compensated"), "{stdout}");
    assert!(
        stdout.contains("Could not complete; all changes were undone"),
        "{stdout}"
    );

    let (code, stdout, stderr) = support::settle(&[
        "cancel",
        &b,
        "--reason",
        "duplicate order",
        "--config",
        config_arg,
    ])
    .unwrap();
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("Cancelled; left in place: first"),
        "{stdout}"
    );
    // A cancelled run cannot be cancelled again.
    let (code, _, stderr) =
        support::settle(&["cancel", &b, "--reason", "again", "--config", config_arg]).unwrap();
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("already ended"), "{stderr}");

    let (_, events, _) =
        support::settle(&["events", &b, "--json", "--config", config_arg]).unwrap();
    let events: Vec<settle::model::Event> = serde_json::from_str(&events).unwrap();
    let acted: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::OperatorActed { action, by, reason } => Some((*action, by, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(acted.len(), 1);
    assert_eq!(acted[0].0, OperatorAction::Cancel);
    assert_eq!(acted[0].2, "duplicate order");
    assert!(!acted[0].1.is_empty(), "the OS user is named");

    // The cancelled run, restarted from its broken step: `first` stays
    // done, `broken` fails again and holds the run (exit 3).
    let (code, _, stderr) = support::settle(&[
        "restart",
        &b,
        "--reason",
        "try again",
        "--config",
        config_arg,
    ])
    .unwrap();
    assert_eq!(code, 2, "--from-step is required: {stderr}");
    let (code, stdout, stderr) = support::settle(&[
        "restart",
        &b,
        "--from-step",
        "broken",
        "--reason",
        "provider fixed, they say",
        "--config",
        config_arg,
    ])
    .unwrap();
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(stdout.contains("needs-attention"), "{stdout}");
    let (_, events, _) =
        support::settle(&["events", &b, "--json", "--config", config_arg]).unwrap();
    let events: Vec<settle::model::Event> = serde_json::from_str(&events).unwrap();
    assert!(
        events.iter().any(|e| matches!(
            e.kind,
            EventKind::RunRestarted {
                from_index: 1,
                generation: 1
            }
        )),
        "{events:#?}"
    );
    let first_runs = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::StepCompleted { index: 0, .. }))
        .count();
    assert_eq!(first_runs, 1, "the step before is not run again");
}

/// Wraps the real runtime; panics instead of calling plugin `noop`.
struct PanicsOnNoop(Runtime);

impl Executor for PanicsOnNoop {
    async fn call(&self, request: CallRequest) -> CallReport {
        assert!(request.plugin != "noop", "injected host bug");
        self.0.call(request).await
    }
    fn plugin(&self, name: &str) -> Option<Arc<PluginDescriptor>> {
        Executor::plugin(&self.0, name)
    }
    fn plugins(&self) -> Vec<Arc<PluginDescriptor>> {
        Executor::plugins(&self.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_driving_one_run_holds_it_and_the_others_go_on() {
    let dir = support::tempdir();
    let config = support::config(dir.path());
    let base = Host::start_with(&config, OnStart::Leave).await.unwrap();
    let engine = settle::engine::Engine::new(
        base.store.clone(),
        PanicsOnNoop(base.runtime.clone()),
        settle::engine::EngineOptions::default(),
    );
    let bad = support::flow("name: bad\nsteps:\n  - { name: boom, plugin: noop }\n");
    let good = support::flow(
        "name: good\nsteps:\n  - { name: fine, plugin: flaky, input: { mode: ok } }\n",
    );
    let bad_run = engine.submit(&bad, json!({}), None).await.unwrap().run_id;
    let mut good_runs = Vec::new();
    for _ in 0..5 {
        good_runs.push(engine.submit(&good, json!({}), None).await.unwrap().run_id);
    }
    let waited = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let held = engine.wait(bad_run).await.unwrap().unwrap();
        let mut states = Vec::new();
        for r in &good_runs {
            states.push(engine.wait(*r).await.unwrap().unwrap().state);
        }
        (held, states)
    })
    .await
    .expect("wait never hangs on a run whose driver panicked");
    let (held, states) = waited;
    assert_eq!(held.state, RunState::NeedsAttention, "{held:#?}");
    assert_eq!(held.hold, Some(HoldCause::HostError));
    assert!(
        held.detail
            .as_deref()
            .unwrap_or("")
            .contains("injected host bug"),
        "{:?}",
        held.detail
    );
    assert!(states.iter().all(|s| *s == RunState::Settled), "{states:?}");
    tokio::time::timeout(std::time::Duration::from_secs(5), engine.shutdown())
        .await
        .expect("shutdown does not wait for the panicked run");
}

/// `settle run` with a key naming a run that waits for an operator prints
/// its status and exits 3 at once; it never waits on a run it does not drive.
#[test]
fn settle_run_on_a_held_run_exits_3_without_hanging() {
    let dir = support::tempdir();
    let config = support::write_config(dir.path(), None);
    let flow = dir.path().join("held.yaml");
    std::fs::write(
        &flow,
        "name: held\ndefaults:\n  on_exhausted: hold\nsteps:\n  - { name: broken, plugin: flaky, input: { mode: fail-times, times: 99 }, retry: { max_attempts: 1 } }\n",
    )
    .unwrap();
    let args = [
        "run",
        flow.to_str().unwrap(),
        "--input",
        "{}",
        "--idempotency-key",
        "order-1",
        "--quiet",
        "--config",
        config.to_str().unwrap(),
    ];
    let (code, stdout, stderr) = support::settle(&args).unwrap();
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(stdout.contains("needs-attention"), "{stdout}");
    let started = std::time::Instant::now();
    let (code, stdout, stderr) = support::settle(&args).unwrap();
    assert_eq!(code, 3, "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["existing"], true);
    assert_eq!(report["stage"], "waiting");
    assert!(
        report["phrase"]
            .as_str()
            .unwrap()
            .contains("retry it, compensate or cancel the run"),
        "{report:#}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

/// Where a flow sets no retry policy, the plugin's suggestion applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_suggested_retry_applies_where_the_flow_sets_none() {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    host.engine.set_paused(true);
    let open = support::flow(
        "name: open\nsteps:\n  - { name: pay, plugin: transfer, input: { from: a, to: b, amount: 1 } }\n",
    );
    let set = support::flow(
        "name: set\nsteps:\n  - { name: pay, plugin: transfer, input: { from: a, to: b, amount: 1 }, retry: { max_attempts: 2 } }\n",
    );
    for (flow, expected) in [(open, 5), (set, 2)] {
        let run = support::submit(&host, &flow, json!({})).await;
        let scheduled = support::events(&host, run)
            .into_iter()
            .find_map(|e| match e.kind {
                EventKind::StepScheduled { max_attempts, .. } => Some(max_attempts),
                _ => None,
            })
            .unwrap();
        assert_eq!(scheduled, expected, "transfer suggests 5 attempts");
    }
}

/// Hides plugin `transfer` once its `run` has answered, as if the operator
/// removed it between the step and its confirmation.
struct TransferVanishes {
    inner: Runtime,
    gone: std::sync::atomic::AtomicBool,
}

impl Executor for TransferVanishes {
    async fn call(&self, request: CallRequest) -> CallReport {
        use std::sync::atomic::Ordering;
        if request.plugin == "transfer" && self.gone.load(Ordering::SeqCst) {
            return CallReport {
                source: "transfer".into(),
                result: Err(settle::runtime::CallFailure::new(
                    settle::model::FailureClass::Unavailable,
                    "plugin 'transfer' is not installed",
                )),
                denials: Vec::new(),
                duration: std::time::Duration::ZERO,
                downstream: Vec::new(),
                exchanges: Vec::new(),
            };
        }
        let report = self.inner.call(request.clone()).await;
        if request.plugin == "transfer" {
            self.gone.store(true, Ordering::SeqCst);
        }
        report
    }
    fn plugin(&self, name: &str) -> Option<Arc<PluginDescriptor>> {
        if name == "transfer" && self.gone.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        Executor::plugin(&self.inner, name)
    }
    fn plugins(&self) -> Vec<Arc<PluginDescriptor>> {
        Executor::plugins(&self.inner)
    }
}

/// A confirmation that cannot run (its plugin is gone) holds the run for
/// an operator; it never skips to "settled".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_that_cannot_run_holds_the_run() {
    let dir = support::tempdir();
    let service = crate::support::Service::start(&dir.path().join("world"));
    let mut config = support::config(dir.path());
    service.grant(&mut config);
    let base = Host::start_with(&config, OnStart::Leave).await.unwrap();
    let engine = settle::engine::Engine::new(
        base.store.clone(),
        TransferVanishes {
            inner: base.runtime.clone(),
            gone: Default::default(),
        },
        settle::engine::EngineOptions::default(),
    );
    let flow = support::flow(
        "name: pay\nsteps:\n  - { name: charge, plugin: transfer, input: { from: dee, to: shop, amount: 3 } }\n",
    );
    let run = engine.submit(&flow, json!({}), None).await.unwrap().run_id;
    let held = engine.wait(run).await.unwrap().unwrap();
    assert_eq!(held.state, RunState::NeedsAttention, "{held:#?}");
    assert_eq!(held.hold, Some(HoldCause::HostSetup));
    assert!(held.outputs[0].is_some(), "the charge stands");
    assert!(
        held.phrase(0, false)
            .contains("plugin 'transfer' is not installed"),
        "{}",
        held.phrase(0, false)
    );
    engine.shutdown().await;
}
