//! Settled runs are checked against the outside world again while their
//! flow's `reconcile:` window lasts: drift made behind Settle's back (the
//! demo service's drift hook) is found, alerted or undone as the flow says,
//! and can be accepted by an operator; a check without an answer never
//! counts as in sync.

use crate::support::{self, Service};
use serde_json::{Value, json};
use settle::app::Host;
use settle::engine::OperatorCommand;
use settle::model::{Event, EventKind, OperatorAction, RunId, RunState, RunSummary};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(10);

fn paid(extra: &str) -> String {
    format!(
        r#"
name: paid
reconcile: {{ after: 200ms, every: 1s, for: 60s }}
{extra}
steps:
  - name: charge
    plugin: transfer
    input: {{ from: ann, to: shop, amount: 700 }}
"#
    )
}

/// Polls the run's summary until `done` holds.
async fn until(host: &Host, run: RunId, what: &str, done: impl Fn(&RunSummary) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let summary = host.store.summary_now(run).unwrap().unwrap();
        if done(&summary) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {summary:#?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn reconciled(events: &[Event]) -> Vec<&EventKind> {
    events
        .iter()
        .map(|e| &e.kind)
        .filter(|k| matches!(k, EventKind::StepReconciled { .. }))
        .collect()
}

/// Edits the run's transfer on the ledger behind Settle's back.
fn drift(service: &Service, run: &RunSummary, change: Value) {
    let mut body = change;
    body["transfer_id"] = run.outputs[0].as_ref().unwrap()["transfer_id"].clone();
    let reply = ureq::post(&format!("{}/drift/transfers", service.base_url))
        .header("Idempotency-Key", &format!("drift-{}", run.run_id))
        .send_json(&body)
        .expect("the drift hook answers");
    assert_eq!(reply.status(), 200);
}

async fn start(
    dir: &std::path::Path,
    flow: &str,
) -> (Service, Host, std::sync::Arc<settle::flow::Flow>) {
    let service = Service::start(&dir.join("world"));
    let mut config = support::config(dir);
    service.grant(&mut config);
    let host = Host::start(&config).await.unwrap();
    host.engine.start_rechecks();
    (service, host, support::flow(flow))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_found_by_a_later_check_is_alerted_then_accepted() {
    let dir = support::tempdir();
    let (service, host, flow) = start(dir.path(), &paid("")).await;
    let metrics = std::sync::Arc::new(settle::telemetry::metrics::Metrics::new());
    host.engine.observe(metrics.clone());
    let run = support::run_to_end(&host, &flow, json!({})).await;
    assert_eq!(run.state, RunState::Settled, "{run:#?}");
    assert!(run.recheck.is_some(), "a check is scheduled: {run:#?}");

    // Checked again while nothing changed: an event only, still settled.
    until(&host, run.run_id, "a second in-sync check", |s| {
        s.state == RunState::Settled && reconciled(&support::events(&host, s.run_id)).len() >= 2
    })
    .await;
    let checks = reconciled(&support::events(&host, run.run_id))
        .iter()
        .all(|k| {
            matches!(
                k,
                EventKind::StepReconciled {
                    verdict: settle::model::Verdict::InSync,
                    ..
                }
            )
        });
    assert!(checks, "every check so far found it in sync");

    // Someone edits the ledger: the next check finds it.
    let injected = Instant::now();
    drift(&service, &run, json!({"amount": 1}));
    until(&host, run.run_id, "drift found", |s| {
        s.state == RunState::Drifted
    })
    .await;
    let found_after = injected.elapsed();
    assert!(
        found_after < Duration::from_millis(2_500),
        "found within one `every` (1 s, plus up to a tenth) and a poll: {found_after:?}"
    );
    let drifted = host.store.summary_now(run.run_id).unwrap().unwrap();
    let detail = drifted.detail.clone().unwrap_or_default();
    assert!(
        detail.contains("found by a later check")
            && detail.contains("ledger says 1 but the step recorded 700"),
        "{detail}"
    );
    assert_eq!(drifted.recheck, None, "a drifted run is not checked on");
    assert_eq!(metrics.drifts.with_label_values(&["paid"]).get(), 1);
    let verdicts = |v: &str| {
        metrics
            .verdicts
            .with_label_values(&["paid", "charge", v])
            .get()
    };
    assert_eq!(verdicts("drifted"), 1);
    assert!(
        verdicts("in-sync") >= 2,
        "the confirmation and a later check"
    );

    // An operator accepts it: settled again, no longer checked.
    let accepted = host
        .engine
        .act(
            run.run_id,
            OperatorCommand {
                action: OperatorAction::AcceptDrift,
                by: "ops-test".into(),
                reason: "the back office corrected the amount on purpose".into(),
                step: None,
            },
        )
        .await
        .expect("accepted");
    assert_eq!(accepted.state, RunState::Settled);
    assert_eq!(accepted.recheck, None);
    let before = support::events(&host, run.run_id).len();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        support::events(&host, run.run_id).len(),
        before,
        "no check after the drift was accepted"
    );
    // Accepting again is refused: it is not drifted any more.
    let again = host
        .engine
        .act(
            run.run_id,
            OperatorCommand {
                action: OperatorAction::AcceptDrift,
                by: "ops-test".into(),
                reason: "twice".into(),
                step: None,
            },
        )
        .await;
    assert!(again.is_err());
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_drift_compensate_undoes_the_run_when_a_check_finds_drift() {
    let dir = support::tempdir();
    let (service, host, flow) = start(dir.path(), &paid("on_drift: compensate")).await;
    let run = support::run_to_end(&host, &flow, json!({})).await;
    assert_eq!(run.state, RunState::Settled, "{run:#?}");
    drift(&service, &run, json!({"amount": 650}));
    until(&host, run.run_id, "undone after drift", |s| {
        s.state == RunState::Compensated
    })
    .await;
    let names = support::event_names(&host, run.run_id);
    let drifted = names
        .iter()
        .position(|n| n == "run-drifted")
        .expect("drifted first");
    assert_eq!(
        &names[drifted..],
        [
            "run-drifted",
            "compensation-scheduled",
            "compensation-completed",
            "run-compensated"
        ]
    );
    let transfer = run.outputs[0].as_ref().unwrap()["transfer_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        service.state()["transfers"][&transfer]["refunded"],
        true,
        "the ledger shows the refund"
    );
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_drift_reapply_puts_the_transfer_back_under_the_same_operation_id() {
    let dir = support::tempdir();
    let (service, host, flow) = start(dir.path(), &paid("on_drift: reapply")).await;
    let run = support::run_to_end(&host, &flow, json!({})).await;
    assert_eq!(run.state, RunState::Settled, "{run:#?}");
    let transfer = run.outputs[0].as_ref().unwrap()["transfer_id"]
        .as_str()
        .unwrap()
        .to_string();
    drift(&service, &run, json!({"amount": 1}));
    until(&host, run.run_id, "repaired and confirmed again", |s| {
        s.reapplies == 1 && s.state == RunState::Settled && s.confirmed()
    })
    .await;
    let events = support::events(&host, run.run_id);
    let names: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    let drifted = names.iter().position(|n| *n == "run-drifted").unwrap();
    assert_eq!(
        &names[drifted..drifted + 7],
        [
            "run-drifted",
            "run-reapplied",
            "step-scheduled",
            "step-completed",
            "reconciliation-scheduled",
            "step-reconciled",
            "run-settled"
        ]
    );
    // The step ran again under the operation id of its first run.
    let ops: Vec<String> = events
        .iter()
        .filter(|e| e.kind.name() == "step-completed")
        .filter_map(|e| e.operation_id.as_ref().map(|o| o.to_string()))
        .collect();
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert_eq!(ops[0], ops[1], "same operation id");
    assert!(
        matches!(
            events[drifted + 1].kind,
            EventKind::RunReapplied {
                from_index: 0,
                automatic: true
            }
        ),
        "{:?}",
        events[drifted + 1]
    );
    // The ledger shows the amount asked for again, put back once, and the
    // transfer request itself was applied once.
    let state = service.state();
    assert_eq!(state["transfers"][&transfer]["amount"], 700, "{state}");
    assert_eq!(state["restored"], 1);
    let applied: Vec<u64> = service
        .requests()
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/ledger/transfers")
        .map(|r| r["applied"].as_u64().unwrap())
        .collect();
    assert_eq!(applied, [1], "one transfer applied once");
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_without_an_answer_never_counts_as_in_sync() {
    let dir = support::tempdir();
    let (service, host, flow) = start(dir.path(), &paid("")).await;
    let run = support::run_to_end(&host, &flow, json!({})).await;
    assert_eq!(run.state, RunState::Settled, "{run:#?}");
    let answered = reconciled(&support::events(&host, run.run_id)).len();
    // The ledger goes away: checks get no answer.
    drop(service);
    until(&host, run.run_id, "a check without an answer", |s| {
        s.recheck.is_some_and(|r| r.attempt >= 2)
    })
    .await;
    let events = support::events(&host, run.run_id);
    assert_eq!(
        reconciled(&events).len(),
        answered,
        "no verdict is recorded without an answer"
    );
    let summary = host.store.summary_now(run.run_id).unwrap().unwrap();
    assert_eq!(summary.state, RunState::Settled);
    assert_eq!(
        summary.phrase(0, false),
        "Completed (not independently confirmed)",
        "confirmed before, but the latest check got no answer"
    );
    host.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_end_when_the_window_closes() {
    let dir = support::tempdir();
    let flow = "
name: short
reconcile: { after: 100ms, every: 1s, for: 1800ms }
steps:
  - { name: charge, plugin: transfer, input: { from: ann, to: shop, amount: 5 } }
";
    let (_service, host, flow) = start(dir.path(), flow).await;
    let run = support::run_to_end(&host, &flow, json!({})).await;
    until(&host, run.run_id, "the window to close", |s| {
        s.recheck.is_none()
    })
    .await;
    let events = support::events(&host, run.run_id);
    let ended = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::RechecksEnded { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .expect("rechecks-ended recorded");
    assert_eq!(ended, "its reconcile window closed");
    // Checked first 0.1–0.15 s after it settled (the reconciler polls every
    // 50 ms), again 1–1.1 s after that; the next would fall after 2.1 s,
    // past the 1.8 s window.
    assert_eq!(reconciled(&events).len(), 3, "confirmation plus two checks");
    host.shutdown().await.unwrap();
}

#[test]
fn a_server_checks_settled_runs_and_an_operator_accepts_the_drift_over_http() {
    let dir = support::tempdir();
    let service = Service::start(&dir.path().join("world"));
    let grants = format!(
        "[plugins.transfer]\nallowed_outbound_hosts = [\"{}\"]\n[plugins.transfer.config]\nbase_url = \"{}\"\n",
        service.addr, service.base_url
    );
    let server = support::Server::start(dir.path(), &[("paid", &paid(""))], &grants);
    let reply = server.post("/v1/flows/paid/runs?wait=10s", &json!({}));
    assert_eq!(reply.status, 200, "{reply}");
    assert_eq!(reply.json["state"], "settled", "{reply}");
    let run = reply.json["run_id"].as_str().unwrap().to_string();
    let summary: RunSummary = {
        let events = server.get(&format!("/v1/runs/{run}/events")).json;
        let events: Vec<Event> = serde_json::from_value(events["events"].clone()).unwrap();
        RunSummary::fold(&events).unwrap()
    };
    drift(&service, &summary, json!({"refunded": true}));
    let drifted = server.poll(&format!("/v1/runs/{run}"), PATIENCE, |s| {
        s["state"] == "drifted"
    });
    let phrase = drifted["phrase"].as_str().unwrap();
    assert!(
        phrase.starts_with(
            "Completed, but a downstream system disagrees (found by a later check: charge: transfer"
        ) && phrase.contains("was refunded on the ledger")
            && phrase.ends_with("waiting for an operator to decide"),
        "{phrase}"
    );
    assert_eq!(drifted["stage"], "done");

    let reply = server.post(
        &format!("/v1/runs/{run}/accept-drift"),
        &json!({"reason": "refunded by support on purpose"}),
    );
    assert_eq!(reply.status, 200, "{reply}");
    let accepted = server.get(&format!("/v1/runs/{run}")).json;
    assert_eq!(accepted["state"], "settled", "{accepted}");
    assert_eq!(
        accepted["phrase"], "Completed (not independently confirmed)",
        "it is settled by decision, not confirmed"
    );
    let again = server.post(
        &format!("/v1/runs/{run}/accept-drift"),
        &json!({"reason": "twice"}),
    );
    assert_eq!(again.status, 409, "{again}");

    // A second run drifts; an operator re-applies it instead.
    let reply = server.post("/v1/flows/paid/runs?wait=10s", &json!({}));
    assert_eq!(reply.json["state"], "settled", "{reply}");
    let run = reply.json["run_id"].as_str().unwrap().to_string();
    let events = server.get(&format!("/v1/runs/{run}/events")).json;
    let events: Vec<Event> = serde_json::from_value(events["events"].clone()).unwrap();
    drift(
        &service,
        &RunSummary::fold(&events).unwrap(),
        json!({"amount": 3}),
    );
    server.poll(&format!("/v1/runs/{run}"), PATIENCE, |s| {
        s["state"] == "drifted"
    });
    let refused = server.post(
        &format!("/v1/runs/{settled}/reapply", settled = summary.run_id),
        &json!({"reason": "not drifted"}),
    );
    assert_eq!(refused.status, 409, "{refused}");
    let reply = server.post(
        &format!("/v1/runs/{run}/reapply"),
        &json!({"reason": "the ledger edit was a mistake"}),
    );
    assert_eq!(reply.status, 200, "{reply}");
    let repaired = server.poll(&format!("/v1/runs/{run}"), PATIENCE, |s| {
        s["state"] == "settled"
    });
    assert_eq!(repaired["phrase"], "Completed and confirmed", "{repaired}");
    assert_eq!(repaired["reapplies"], 1, "{repaired}");
    let events = server.get(&format!("/v1/runs/{run}/events")).json;
    let audit = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"]["type"] == "operator-acted")
        .expect("the re-apply is audited");
    assert_eq!(audit["kind"]["action"], "reapply", "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_due_while_the_host_was_down_runs_after_it_starts_again() {
    let dir = support::tempdir();
    let service = Service::start(&dir.path().join("world"));
    let mut config = support::config(dir.path());
    service.grant(&mut config);
    let flow = support::flow(&paid("").replace("after: 200ms", "after: 1s"));
    let run = {
        // No reconciler here: the host stops before the check is due.
        let host = Host::start(&config).await.unwrap();
        let run = support::run_to_end(&host, &flow, json!({})).await;
        assert!(run.recheck.is_some());
        host.shutdown().await.unwrap();
        run
    };
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let host = crate::idempotency::reopen(&config).await;
    host.engine.start_rechecks();
    let before = reconciled(&support::events(&host, run.run_id)).len();
    until(&host, run.run_id, "the check read from the index", |s| {
        reconciled(&support::events(&host, s.run_id)).len() > before
    })
    .await;
    host.shutdown().await.unwrap();
}
