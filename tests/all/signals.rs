//! `signal:` steps: a run waits for a named event from outside. A signal
//! sent before the run gets there is kept; its payload is checked against
//! the flow's schema; a repeat under the same key is taken once; with no
//! signal before the timeout the step fails for good or goes on, as the
//! flow says.

use crate::support::{self, Server};
use serde_json::json;
use std::time::Duration;

const APPROVAL: &str = "
name: approval
steps:
  - { name: prepare, plugin: noop }
  - name: approved
    signal:
      name: approved
      timeout: 1h
      schema: { type: object, required: [by], properties: { by: { type: string } } }
  - name: pause
    wait: 400ms
  - name: shipped
    signal: shipped
";

const QUICK_TIMEOUT: &str = "
name: deadline
steps:
  - name: answer
    signal: { name: answer, timeout: 300ms, on_timeout: continue }
  - name: must
    signal: { name: must, timeout: 300ms }
";

fn events_of(server: &Server, run: &str) -> Vec<serde_json::Value> {
    server.get(&format!("/v1/runs/{run}/events")).json["events"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_run_waits_for_its_signals_and_keeps_one_sent_early() {
    let dir = support::tempdir();
    let server = Server::start(dir.path(), &[("approval", APPROVAL)], "");
    let reply = server.post("/v1/flows/approval/runs", &json!({}));
    assert_eq!(reply.status, 202, "{reply}");
    let run = reply.json["run_id"].as_str().unwrap().to_string();
    let status = server.poll(&format!("/v1/runs/{run}"), Duration::from_secs(10), |s| {
        s["message"]["id"] == "run.awaiting-signal"
    });
    assert!(
        status["phrase"]
            .as_str()
            .unwrap()
            .starts_with("Waiting for 'approved' (step approved)"),
        "{status}"
    );
    // `shipped` comes early, before the run reaches its step: kept.
    let early = server.post(
        &format!("/v1/runs/{run}/signals/shipped"),
        &json!({"payload": {"tracking": "z1"}}),
    );
    assert_eq!(early.status, 201, "{early}");
    // A payload the flow's schema refuses: 422, nothing recorded.
    let bad = server.post(
        &format!("/v1/runs/{run}/signals/approved"),
        &json!({"payload": {"who": 1}}),
    );
    assert_eq!(bad.status, 422, "{bad}");
    assert!(
        bad.text.contains("does not match the flow's schema"),
        "{bad}"
    );
    // A name the flow does not wait for: 422, naming what it waits for.
    let unknown = server.post(&format!("/v1/runs/{run}/signals/aproved"), &json!({}));
    assert_eq!(unknown.status, 422, "{unknown}");
    assert!(
        unknown.text.contains("it waits for: approved, shipped"),
        "{unknown}"
    );
    // The approval, sent twice under one key: taken once.
    let body = json!({"payload": {"by": "finance"}, "idempotency_key": "appr-1"});
    let first = server.post(&format!("/v1/runs/{run}/signals/approved"), &body);
    assert_eq!(first.status, 201, "{first}");
    let again = server.post(&format!("/v1/runs/{run}/signals/approved"), &body);
    assert_eq!(again.status, 200, "{again}");
    assert_eq!(again.json["duplicate"], true);
    let done = server.wait_done(&run, Duration::from_secs(10));
    assert_eq!(done["state"], "settled", "{done}");
    let detail = server.get(&format!("/v1/runs/{run}")).json;
    let outputs: Vec<&serde_json::Value> = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["output"])
        .collect();
    assert_eq!(outputs[1], &json!({"by": "finance"}), "{detail}");
    assert_eq!(outputs[3], &json!({"tracking": "z1"}), "{detail}");
    let received = events_of(&server, &run)
        .iter()
        .filter(|e| e["kind"]["type"] == "signal-received")
        .count();
    assert_eq!(received, 2, "the repeat was not recorded");
    // An ended run takes no signal.
    let late = server.post(&format!("/v1/runs/{run}/signals/shipped"), &json!({}));
    assert_eq!(late.status, 409, "{late}");
}

#[test]
fn without_its_signal_a_step_goes_on_or_fails_as_the_flow_says() {
    let dir = support::tempdir();
    let server = Server::start(dir.path(), &[("deadline", QUICK_TIMEOUT)], "");
    let reply = server.post("/v1/flows/deadline/runs?wait=10s", &json!({}));
    assert_eq!(reply.status, 200, "{reply}");
    // `answer` went on with null; `must` failed for good.
    assert_eq!(reply.json["state"], "compensated", "{reply}");
    let run = reply.json["run_id"].as_str().unwrap();
    let events = events_of(&server, run);
    let failed = events
        .iter()
        .find(|e| e["kind"]["type"] == "step-failed")
        .expect("must failed");
    assert!(
        failed["kind"]["failure"]["message"]
            .as_str()
            .unwrap()
            .starts_with("no signal 'must' came within 300ms"),
        "{failed}"
    );
    let completed = events
        .iter()
        .find(|e| e["kind"]["type"] == "step-completed")
        .expect("answer completed");
    assert_eq!(completed["kind"]["output"], serde_json::Value::Null);
}

#[test]
fn settle_signal_delivers_over_the_server() {
    let dir = support::tempdir();
    let flow = "name: ok\nsteps:\n  - { name: go, signal: go }\n";
    let server = Server::start(dir.path(), &[("ok", flow)], "");
    let reply = server.post("/v1/flows/ok/runs", &json!({}));
    let run = reply.json["run_id"].as_str().unwrap().to_string();
    let send = || {
        support::settle(&[
            "signal",
            &run,
            "go",
            "--payload",
            r#"{"n": 1}"#,
            "--key",
            "k1",
            "--server",
            &server.base_url,
        ])
        .unwrap()
    };
    let (code, out, err) = send();
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("signal go recorded"), "{out}");
    let (code, out, _) = send();
    assert_eq!(code, 0);
    assert!(out.contains("already received under that key"), "{out}");
    let done = server.wait_done(&run, Duration::from_secs(10));
    assert_eq!(done["state"], "settled", "{done}");
    // Without a server: said plainly.
    let (code, _, err) = support::settle(&["signal", &run, "go"]).unwrap();
    assert_ne!(code, 0);
    assert!(err.contains("--server"), "{err}");
}

/// Signs a webhook body as a source would.
fn signed(secret: &str, timestamp: u64, body: &str) -> String {
    settle::model::signing::signature(secret, format!("{timestamp}.{body}").as_bytes())
}

#[test]
fn a_third_partys_webhook_delivers_a_signal_once_and_a_bad_one_is_refused_and_kept() {
    let dir = support::tempdir();
    let flow = "
name: checkout
steps:
  - name: paid
    signal: { name: paid, from: \"webhook:psp\", schema: { type: object, required: [amount] } }
";
    let extra = r#"
[api.webhooks.psp]
secret = "a-secret-of-16-or-more"
signal = "paid"
run_id = "/metadata/run_id"
delivery_id = "/id"
tolerance = "5m"
"#;
    let server = Server::start(dir.path(), &[("checkout", flow)], extra);
    let run = server.post("/v1/flows/checkout/runs", &json!({})).json["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let now = settle::model::now_ms() / 1000;
    let deliver = |body: &str, timestamp: u64, secret: &str| {
        server
            .call("POST", "/v1/hooks/psp")
            .header("Settle-Webhook-Timestamp", &timestamp.to_string())
            .header("Settle-Webhook-Signature", &signed(secret, timestamp, body))
            .body("application/json", body.as_bytes().to_vec())
            .token(None)
            .send()
    };
    let body = format!(r#"{{"id": "evt_1", "amount": 700, "metadata": {{"run_id": "{run}"}}}}"#);
    // Forged (another secret), and stale (10 minutes old): 401, kept.
    assert_eq!(deliver(&body, now, "not-the-secret-at-all").status, 401);
    let stale = deliver(&body, now - 600, "a-secret-of-16-or-more");
    assert_eq!(stale.status, 401, "{stale}");
    assert!(stale.text.contains("outside the 300 s"), "{stale}");
    // Not matching the signal's schema: 422.
    let no_amount = format!(r#"{{"id": "evt_0", "metadata": {{"run_id": "{run}"}}}}"#);
    assert_eq!(
        deliver(&no_amount, now, "a-secret-of-16-or-more").status,
        422
    );
    // The real one: recorded, and the run goes on; its replay changes nothing.
    let ok = deliver(&body, now, "a-secret-of-16-or-more");
    assert_eq!(ok.status, 201, "{ok}");
    let replay = deliver(&body, now, "a-secret-of-16-or-more");
    assert_eq!(replay.status, 200, "{replay}");
    assert_eq!(replay.json["duplicate"], true);
    let done = server.wait_done(&run, Duration::from_secs(10));
    assert_eq!(done["state"], "settled", "{done}");
    let rejected = server.get("/v1/hooks/rejected").json;
    let statuses: Vec<u64> = rejected["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    // The forged one could come from anyone: answered 401, not kept.
    assert_eq!(statuses, [422, 401], "newest first: {rejected}");
    // An unknown source answers as a bad signature does.
    let unknown = server
        .call("POST", "/v1/hooks/nobody")
        .header("Settle-Webhook-Timestamp", &now.to_string())
        .header("Settle-Webhook-Signature", "sha256=00")
        .body("application/json", b"{}".to_vec())
        .token(None)
        .send();
    assert_eq!(unknown.status, 401, "{unknown}");
    // A signal only the webhook may send cannot come with a token.
    let forged = server.post(
        &format!("/v1/runs/{run}/signals/paid"),
        &json!({"payload": {"amount": 1}}),
    );
    assert_ne!(forged.status, 201, "{forged}");
}

const APPROVE: &str = "
name: spend
steps:
  - name: finance
    approval:
      approvers: [ann, bob, cy]
      required: 2
      timeout: 1h
  - { name: pay, plugin: noop }
";

#[test]
fn an_approval_needs_n_of_m_named_people_never_the_submitter_and_one_no_fails_it() {
    let dir = support::tempdir();
    let (tokens, secrets) = support::api_tokens(&[
        ("ann", "viewer"),
        ("bob", "viewer"),
        ("cy", "operator"),
        ("eve", "operator"),
        ("shop", "submitter"),
    ]);
    let mut server = Server::start(dir.path(), &[("spend", APPROVE)], &tokens);
    let as_token = |server: &mut Server, i: usize| server.set_token(Some(secrets[i].as_str()));
    let decide = |server: &Server, run: &str, decision: &str| {
        server.post(
            &format!("/v1/runs/{run}/approvals/finance"),
            &json!({"decision": decision, "comment": "looked at it"}),
        )
    };
    // cy submits, so cy cannot approve this request.
    as_token(&mut server, 2);
    let run = server.post("/v1/flows/spend/runs", &json!({})).json["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let waiting = server.poll(&format!("/v1/runs/{run}"), Duration::from_secs(10), |s| {
        s["message"]["id"] == "run.awaiting-approval"
    });
    assert!(
        waiting["phrase"]
            .as_str()
            .unwrap()
            .starts_with("Waiting for approval (step finance): 0 of 2 given"),
        "{waiting}"
    );
    // cy submitted it: cy may not approve.
    let own = decide(&server, &run, "approve");
    assert_eq!(own.status, 403, "{own}");
    assert!(own.text.contains("cannot approve it"), "{own}");
    // eve is not named.
    as_token(&mut server, 3);
    assert_eq!(decide(&server, &run, "approve").status, 403);
    // ann, twice (counted once), then bob: 2 of 2.
    as_token(&mut server, 0);
    assert_eq!(decide(&server, &run, "approve").status, 201);
    assert_eq!(decide(&server, &run, "approve").status, 200);
    let one = server.get(&format!("/v1/runs/{run}")).json;
    assert!(
        one["phrase"].as_str().unwrap().contains("1 of 2 given"),
        "{one}"
    );
    as_token(&mut server, 1);
    assert_eq!(decide(&server, &run, "approve").status, 201);
    let done = server.wait_done(&run, Duration::from_secs(10));
    assert_eq!(done["state"], "settled", "{done}");
    let detail = server.get(&format!("/v1/runs/{run}")).json;
    assert_eq!(
        detail["steps"][0]["output"],
        json!({"approved_by": ["ann", "bob"]})
    );

    // Another request: one rejection undoes it.
    as_token(&mut server, 2);
    let run = server.post("/v1/flows/spend/runs", &json!({})).json["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Decisions are taken once the run waits at the step.
    server.poll(&format!("/v1/runs/{run}"), Duration::from_secs(10), |s| {
        s["message"]["id"] == "run.awaiting-approval"
    });
    as_token(&mut server, 1);
    assert_eq!(decide(&server, &run, "reject").status, 201);
    let done = server.wait_done(&run, Duration::from_secs(10));
    assert_eq!(done["state"], "compensated", "{done}");
    assert!(
        done["last_failure"]["message"]
            .as_str()
            .unwrap()
            .starts_with("rejected by bob: looked at it"),
        "{done}"
    );
}

#[test]
fn a_later_step_takes_a_signal_an_earlier_one_of_its_name_gave_up_on() {
    let dir = support::tempdir();
    let flow = "
name: twice
steps:
  - name: early
    signal: { name: x, timeout: 200ms, on_timeout: continue }
  - name: late
    signal: { name: x, timeout: 1h }
";
    let server = Server::start(dir.path(), &[("twice", flow)], "");
    let run = server.post("/v1/flows/twice/runs", &json!({})).json["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    server.poll(&format!("/v1/runs/{run}"), Duration::from_secs(10), |s| {
        s["phrase"]
            .as_str()
            .unwrap_or_default()
            .contains("(step late)")
    });
    let sent = server.post(&format!("/v1/runs/{run}/signals/x"), &json!({"payload": 7}));
    assert_eq!(sent.status, 201, "{sent}");
    let done = server.wait_done(&run, Duration::from_secs(10));
    assert_eq!(done["state"], "settled", "{done}");
    let detail = server.get(&format!("/v1/runs/{run}")).json;
    assert_eq!(detail["steps"][0]["output"], serde_json::Value::Null);
    assert_eq!(detail["steps"][1]["output"], 7);
    // Both steps are done: no step waits for another x.
    let more = server.post(&format!("/v1/runs/{run}/signals/x"), &json!({"payload": 8}));
    assert_eq!(more.status, 409, "{more}");
}

#[test]
fn a_signal_finds_its_run_by_the_value_it_correlates_on() {
    let dir = support::tempdir();
    let flow = "
name: orders
steps:
  - { name: prepare, plugin: noop }
  - name: shipped
    signal: { name: shipped, correlate: \"${{ input.order }}\" }
";
    let server = Server::start(dir.path(), &[("orders", flow)], "");
    let submit = |order: &str| {
        server
            .post("/v1/flows/orders/runs", &json!({"order": order}))
            .json["run_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a, b) = (submit("o-1"), submit("o-2"));
    let send = |value: &str| {
        server.post(
            "/v1/flows/orders/signals/shipped",
            &json!({"correlation": value, "payload": {"carrier": "z"}}),
        )
    };
    let sent = send("o-2");
    assert_eq!(sent.status, 201, "{sent}");
    assert_eq!(sent.json["run_id"], b.as_str());
    let done = server.wait_done(&b, Duration::from_secs(10));
    assert_eq!(done["state"], "settled", "{done}");
    let other = server.get(&format!("/v1/runs/{a}")).json;
    assert_ne!(
        other["state"], "settled",
        "the other order still waits: {other}"
    );
    let unknown = send("o-9");
    assert_eq!(unknown.status, 404, "{unknown}");
    assert!(unknown.text.contains("correlating on 'o-9'"), "{unknown}");
}

#[test]
fn without_tokens_an_approval_works_and_a_decision_waits_for_its_step() {
    let dir = support::tempdir();
    let flow = "
name: later
steps:
  - { name: first, wait: 600ms }
  - name: ok
    approval: { roles: [operator], timeout: 1h }
";
    let server = Server::start(dir.path(), &[("later", flow)], "");
    let run = server.post("/v1/flows/later/runs", &json!({})).json["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let decide = || {
        server.post(
            &format!("/v1/runs/{run}/approvals/ok"),
            &json!({"decision": "approve"}),
        )
    };
    // Still in the wait: no one has been asked yet.
    let early = decide();
    assert_eq!(early.status, 409, "{early}");
    assert!(
        early.text.contains("not waiting for approval at step 'ok'"),
        "{early}"
    );
    server.poll(&format!("/v1/runs/{run}"), Duration::from_secs(10), |s| {
        s["message"]["id"] == "run.awaiting-approval"
    });
    // Without tokens everyone is `local`, who also submitted: allowed.
    let given = decide();
    assert_eq!(given.status, 201, "{given}");
    let done = server.wait_done(&run, Duration::from_secs(10));
    assert_eq!(done["state"], "settled", "{done}");
}

/// One-time approval links: an operator gets one per named approver (not
/// the submitter); each opens a page and decides once, without a token, as
/// its approver; a forged or altered link is unknown; once the wait has
/// ended, a link is gone.
#[test]
fn approval_links_let_each_approver_decide_once_without_a_token() {
    let dir = support::tempdir();
    let (tokens, secrets) = support::api_tokens(&[
        ("ann", "viewer"),
        ("bob", "viewer"),
        ("cy", "operator"),
        ("shop", "submitter"),
    ]);
    let extra = format!("[api]\nlink_secret = \"links-secret-0123456789\"\n\n{tokens}");
    let mut server = Server::start(dir.path(), &[("spend", APPROVE)], &extra);
    server.set_token(Some(secrets[3].as_str()));
    let run = server.post("/v1/flows/spend/runs", &json!({})).json["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    server.set_token(Some(secrets[2].as_str()));
    server.poll(&format!("/v1/runs/{run}"), Duration::from_secs(10), |s| {
        s["message"]["id"] == "run.awaiting-approval"
    });
    let links_path = format!("/v1/runs/{run}/approvals/finance/links");
    let links = server.get(&links_path);
    assert_eq!(links.status, 200, "{links}");
    let path_of = |who: &str| -> String {
        links.json["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["approver"] == who)
            .and_then(|l| l["path"].as_str())
            .unwrap_or_else(|| panic!("no link for {who}: {links}"))
            .to_string()
    };
    let (ann, bob, cy) = (path_of("ann"), path_of("bob"), path_of("cy"));
    // Only operators hand out links.
    server.set_token(Some(secrets[0].as_str()));
    assert_eq!(server.get(&links_path).status, 403);

    // No token from here on: the link is the credential.
    server.set_token(None);
    let page = server.get(&ann);
    assert_eq!(page.status, 200, "{page}");
    assert!(page.text.contains("Approval asked of ann"), "{page}");
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let approve = json!({"decision": "approve", "comment": "from the mail"});
    assert_eq!(server.post(&ann, &approve).status, 201);
    assert_eq!(server.post(&ann, &approve).status, 200, "once per person");
    // Altered (one digit of the signature) or made up: unknown.
    let mut altered = ann.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == '0' { '1' } else { '0' });
    assert_eq!(server.post(&altered, &approve).status, 404);
    assert_eq!(server.get("/v1/approve/not-a-link").status, 404);

    assert_eq!(server.post(&bob, &approve).status, 201);
    server.set_token(Some(secrets[2].as_str()));
    let done = server.wait_done(&run, Duration::from_secs(10));
    assert_eq!(done["state"], "settled", "{done}");
    let detail = server.get(&format!("/v1/runs/{run}")).json;
    assert_eq!(
        detail["steps"][0]["output"],
        json!({"approved_by": ["ann", "bob"]})
    );
    // The log says the decisions came through links cy handed out.
    let events = server.get(&format!("/v1/runs/{run}/events")).json;
    let by: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"]["type"] == "signal-received")
        .filter_map(|e| e["kind"]["by"].as_str())
        .collect();
    assert_eq!(
        by,
        vec!["link:ann (issued by cy)", "link:bob (issued by cy)"]
    );
    // The wait is over: cy's link is gone.
    server.set_token(None);
    let late = server.post(&cy, &approve);
    assert_eq!(late.status, 410, "{late}");
}
