//! The HTTP API of `settle serve`, against a real server on 127.0.0.1 (a
//! child process on a free port, see [`support::Server`]): submitting and
//! reading runs, idempotency under concurrency, durability across SIGKILL,
//! the event stream and its resumption, operator actions, flows and their
//! versions, errors and a fuzz loop, roles on every route of the table the
//! router is built from, the OpenAPI document, and a graceful stop.

use crate::support::{self, Reply, Server};
use serde_json::{Value, json};
use settle::api::auth::{Need, Role};
use settle::api::routes::ROUTES;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

/// Two no-op steps: settles at once, unconfirmed (noop cannot reconcile).
const QUICK: &str = "name: quick
steps:
  - { name: first, plugin: noop }
  - { name: second, plugin: noop }
";

/// `first` (noop), then `flaky`, which fails the first `input.times`
/// attempts; retries INTERVAL apart, at most ATTEMPTS, then EXHAUSTED.
const FLAKY: &str = "name: NAME
defaults:
  on_exhausted: EXHAUSTED
  retry:
    max_attempts: ATTEMPTS
    initial_interval: INTERVAL
    backoff_coefficient: 1
    max_interval: INTERVAL
    jitter: 0
steps:
  - { name: first, plugin: noop }
  - name: flaky
    plugin: flaky
    input:
      mode: fail-times
      times: ${{ input.times }}
";

fn flaky_flow(name: &str, interval: &str, attempts: u32, on_exhausted: &str) -> String {
    FLAKY
        .replace("NAME", name)
        .replace("INTERVAL", interval)
        .replace("ATTEMPTS", &attempts.to_string())
        .replace("EXHAUSTED", on_exhausted)
}

const LIMIT: Duration = Duration::from_secs(15);

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn run_id(reply: &Reply) -> String {
    reply.json["run_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run_id in {reply}"))
        .to_string()
}

/// Submits `input` to `flow` and returns the run id; `query` is appended.
fn submit(server: &Server, flow: &str, query: &str, input: Value, status: u16) -> String {
    let reply = server.post(&format!("/v1/flows/{flow}/runs{query}"), &input);
    assert_eq!(reply.status, status, "submit to {flow}{query}: {reply}");
    run_id(&reply)
}

fn events(server: &Server, run: &str) -> Vec<Value> {
    let reply = server.get(&format!("/v1/runs/{run}/events"));
    assert_eq!(reply.status, 200, "{reply}");
    reply.json["events"].as_array().expect("events").clone()
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["kind"]["type"].as_str().unwrap())
        .collect()
}

/// Asserts an RFC 9457 problem document with `status`.
#[track_caller]
fn assert_problem(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{reply}");
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/problem+json")),
        "not a problem document: {:?} {reply}",
        reply.header("content-type")
    );
    for field in ["type", "title", "detail"] {
        assert!(
            reply.json[field].as_str().is_some_and(|s| !s.is_empty()),
            "problem without {field}: {reply}"
        );
    }
    assert_eq!(reply.json["status"], status, "{reply}");
}

/// Every run `query` lists, following `next_cursor` page by page (`limit`
/// a page), asserting that no page is over its limit and no run comes
/// twice; the runs and the number of pages.
fn page_through(server: &Server, query: &str, limit: usize) -> (Vec<Value>, usize) {
    let mut runs: Vec<Value> = Vec::new();
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!("/v1/runs?{query}&limit={limit}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let reply = server.get(&path);
        assert_eq!(reply.status, 200, "{path}: {reply}");
        pages += 1;
        let page = reply.json["runs"].as_array().expect("runs").clone();
        assert!(page.len() <= limit, "{path}: a page over its limit");
        for run in &page {
            let id = run["run_id"].as_str().unwrap().to_string();
            assert!(seen.insert(id.clone()), "{path}: run {id} listed twice");
        }
        runs.extend(page);
        match reply.json["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return (runs, pages),
        }
        assert!(pages < 1000, "paging does not end");
    }
}

fn ids(runs: &[Value]) -> Vec<String> {
    runs.iter()
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn submit_answers_202_then_status_events_and_pages_of_runs() {
    let dir = support::tempdir();
    let retrying = flaky_flow("retrying", "60s", 3, "compensate");
    let held = flaky_flow("held", "10ms", 1, "hold");
    let server = Server::start(
        dir.path(),
        &[("quick", QUICK), ("retrying", &retrying), ("held", &held)],
        "",
    );

    // Accepted: 202, where to look, and what is known.
    let reply = server.post("/v1/flows/quick/runs", &json!({"order": 1}));
    assert_eq!(reply.status, 202, "{reply}");
    let first = run_id(&reply);
    let status_url = format!("/v1/runs/{first}");
    assert_eq!(reply.header("location"), Some(status_url.as_str()));
    for field in [
        "run_id",
        "state",
        "stage",
        "phrase",
        "status_url",
        "stream_url",
    ] {
        assert!(reply.json[field].is_string(), "{field} missing: {reply}");
    }
    assert_eq!(reply.json["status_url"], status_url);
    assert_eq!(reply.json["stream_url"], format!("{status_url}/stream"));
    assert_eq!(reply.json["existing"], false);

    // `?wait`: 200 with the terminal summary.
    let reply = server.post("/v1/flows/quick/runs?wait=10s", &json!({"order": 2}));
    assert_eq!(reply.status, 200, "{reply}");
    assert_eq!(reply.json["state"], "settled", "{reply}");
    assert_eq!(reply.json["stage"], "done");
    assert_eq!(
        reply.json["phrase"],
        "Completed (not independently confirmed)"
    );
    let waited = run_id(&reply);

    // The status: per step what is known, with where its time went.
    let status = server.get(&format!("/v1/runs/{waited}"));
    assert_eq!(status.status, 200, "{status}");
    let s = &status.json;
    assert_eq!(s["state"], "settled");
    assert_eq!(s["completed_steps"], 2);
    assert!(s["finished_at_ms"].as_u64().unwrap() >= s["accepted_at_ms"].as_u64().unwrap());
    let steps = s["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{status}");
    for (step, name) in steps.iter().zip(["first", "second"]) {
        assert_eq!(step["name"], name);
        assert_eq!(step["state"], "completed", "{status}");
        assert_eq!(step["attempts"], 1);
        for t in ["backing_off_ms", "queued_and_committing_ms", "in_plugin_ms"] {
            assert!(step["timing"][t].is_u64(), "{t} missing: {status}");
        }
    }

    // The lineage log: numbered without gaps, each caused by the one before.
    let log = events(&server, &waited);
    assert_eq!(kinds(&log).first(), Some(&"run-accepted"));
    assert_eq!(kinds(&log).last(), Some(&"run-settled"));
    assert_eq!(log[0]["kind"]["input"], json!({"order": 2}));
    let trace = log[0]["trace_id"].as_str().unwrap();
    assert!(!trace.is_empty());
    let mut event_ids = HashSet::new();
    for (i, e) in log.iter().enumerate() {
        assert_eq!(e["seq"], i, "{e}");
        assert_eq!(e["run_id"], waited.as_str());
        assert_eq!(e["trace_id"], trace);
        assert!(e["source"].is_string(), "{e}");
        assert!(event_ids.insert(e["id"].as_str().unwrap().to_string()));
        if i > 0 {
            assert_eq!(e["causation"], log[i - 1]["id"], "{e}");
        }
        if e["kind"]["type"] == "step-completed" {
            assert!(e["operation_id"].is_string(), "{e}");
            assert_eq!(e["attempt"], 1);
            assert!(
                e["source"].as_str().unwrap().starts_with("noop@"),
                "a plugin's answer names the plugin: {e}"
            );
        }
    }

    // Pages without gaps or repeats, newest first.
    for order in 3..10 {
        submit(&server, "quick", "?wait=10s", json!({"order": order}), 200);
    }
    let (all, pages) = page_through(&server, "flow=quick", 4);
    assert_eq!(all.len(), 9);
    assert_eq!(pages, 3, "9 runs, 4 a page");
    let (one_page, _) = page_through(&server, "flow=quick", 500);
    assert_eq!(ids(&all), ids(&one_page));
    let listed = ids(&all);
    let mut newest_first = listed.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    assert_eq!(listed, newest_first, "newest first");
    assert!(listed.contains(&first) && listed.contains(&waited));
    // `since`, as Unix milliseconds and as RFC 3339.
    let t = all[4]["accepted_at_ms"].as_u64().unwrap();
    let expected: Vec<String> = all
        .iter()
        .filter(|r| r["accepted_at_ms"].as_u64().unwrap() >= t)
        .map(|r| r["run_id"].as_str().unwrap().to_string())
        .collect();
    assert!(expected.len() >= 5 && expected.len() < 9);
    let (since, _) = page_through(&server, &format!("flow=quick&since={t}"), 2);
    assert_eq!(ids(&since), expected);
    let rfc3339 =
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(t));
    let (since, _) = page_through(&server, &format!("flow=quick&since={rfc3339}"), 3);
    assert_eq!(ids(&since), expected);
    let (settled, _) = page_through(&server, "flow=quick&state=settled", 5);
    assert_eq!(settled.len(), 9);
    let (done, _) = page_through(&server, "flow=quick&stage=done", 2);
    assert_eq!(done.len(), 9);
    let (running, _) = page_through(&server, "flow=quick&stage=running", 2);
    assert!(running.is_empty());

    // A run waiting for its retry, and one held for an operator.
    let retrying = submit(&server, "retrying", "", json!({"times": 1}), 202);
    let r = server.poll(&format!("/v1/runs/{retrying}"), LIMIT, |s| {
        s["state"] == "retrying"
    });
    assert_eq!(r["stage"], "waiting", "{r}");
    assert!(
        r["phrase"]
            .as_str()
            .unwrap()
            .starts_with("Retrying flaky (attempt 2 of 3) in "),
        "{r}"
    );
    assert!(r["next_attempt_at_ms"].as_u64().unwrap() > now_ms());
    assert_eq!(r["steps"][1]["last_failure"], "planned failure 1 of 1");
    let reply = server.post("/v1/flows/held/runs?wait=10s", &json!({"times": 5}));
    assert_eq!(reply.status, 202, "held, not done: {reply}");
    assert_eq!(reply.json["state"], "needs-attention", "{reply}");
    assert_eq!(reply.json["stage"], "waiting");
    assert_eq!(reply.json["hold"], "retries-exhausted");
    assert!(
        reply.json["phrase"]
            .as_str()
            .unwrap()
            .starts_with("Stopped: an operator must act"),
        "{reply}"
    );
    let held = run_id(&reply);

    let (only, _) = page_through(&server, "state=retrying", 10);
    assert_eq!(ids(&only), [retrying.as_str()]);
    let (only, _) = page_through(&server, "state=needs-attention", 10);
    assert_eq!(ids(&only), [held.as_str()]);
    let (both, _) = page_through(&server, "state=retrying,needs-attention", 1);
    assert_eq!(ids(&both), [held.as_str(), retrying.as_str()]);
    let (waiting, _) = page_through(&server, "stage=waiting", 1);
    assert_eq!(ids(&waiting), [held.as_str(), retrying.as_str()]);
}

#[test]
fn an_idempotency_key_names_one_run_even_under_1000_concurrent_submissions() {
    let dir = support::tempdir();
    let dedup = QUICK.replace("name: quick", "name: dedup");
    let server = Server::start(dir.path(), &[("quick", QUICK), ("dedup", &dedup)], "");
    let keyed = |flow: &str, key: &str, body: Value| {
        server
            .call("POST", &format!("/v1/flows/{flow}/runs"))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };

    let first = keyed("quick", "order-1", json!({"n": 1}));
    assert_eq!(first.status, 202, "{first}");
    assert_eq!(first.json["existing"], false);
    let run = run_id(&first);
    let again = keyed("quick", "order-1", json!({"n": 1}));
    assert_eq!(again.status, 202, "{again}");
    assert_eq!(run_id(&again), run);
    assert_eq!(again.json["existing"], true);
    assert_eq!(again.header("location"), first.header("location"));
    let other_body = keyed("quick", "order-1", json!({"n": 2}));
    assert_problem(&other_body, 409);
    assert_eq!(other_body.json["run_id"], run.as_str());
    assert!(
        other_body.json["detail"]
            .as_str()
            .unwrap()
            .contains("different body"),
        "{other_body}"
    );
    let found = server.get("/v1/flows/quick/runs/by-key/order-1");
    assert_eq!(found.status, 200, "{found}");
    assert_eq!(run_id(&found), run);
    assert_problem(&server.get("/v1/flows/quick/runs/by-key/order-2"), 404);
    // Keys are per flow.
    assert_problem(&server.get("/v1/flows/dedup/runs/by-key/order-1"), 404);

    // 1,000 submissions from 32 threads carrying 100 keys.
    const SUBMISSIONS: usize = 1000;
    const THREADS: usize = 32;
    const KEYS: usize = 100;
    let answers: Vec<(String, String, bool)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let keyed = &keyed;
                scope.spawn(move || {
                    (t..SUBMISSIONS)
                        .step_by(THREADS)
                        .map(|i| {
                            let key = format!("key-{:03}", i % KEYS);
                            let reply = keyed("dedup", &key, json!({"key": i % KEYS}));
                            assert_eq!(reply.status, 202, "submission {i} ({key}): {reply}");
                            let existing = reply.json["existing"].as_bool().expect("existing");
                            (key, run_id(&reply), existing)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a submitting thread failed"))
            .collect()
    });
    assert_eq!(answers.len(), SUBMISSIONS);
    let mut by_key: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (key, run, _) in &answers {
        by_key.entry(key).or_default().insert(run);
    }
    assert_eq!(by_key.len(), KEYS);
    for (key, runs) in &by_key {
        assert_eq!(runs.len(), 1, "key {key} named several runs: {runs:?}");
    }
    let created = answers.iter().filter(|(_, _, existing)| !existing).count();
    assert_eq!(
        created, KEYS,
        "exactly one answer per key says it created the run"
    );
    // Counted through the listing, which knows nothing of keys.
    let (listed, _) = page_through(&server, "flow=dedup", 37);
    assert_eq!(listed.len(), KEYS, "runs of the flow");
    let listed: BTreeSet<String> = ids(&listed).into_iter().collect();
    let answered: BTreeSet<String> = answers.iter().map(|(_, r, _)| r.clone()).collect();
    assert_eq!(listed, answered);
    for (key, runs) in &by_key {
        let found = server.get(&format!("/v1/flows/dedup/runs/by-key/{key}"));
        assert_eq!(found.status, 200, "{found}");
        assert_eq!(Some(&run_id(&found).as_str()), runs.first(), "key {key}");
    }
}

#[test]
fn a_run_acknowledged_with_202_is_finished_after_sigkill_and_restart() {
    let dir = support::tempdir();
    // The second step fails twice, 400 ms apart: over 800 ms to settle.
    let slow = flaky_flow("slow", "400ms", 5, "compensate");
    let mut server = Server::start(dir.path(), &[("slow", &slow)], "");
    let mut runs = Vec::new();
    for _ in 0..5 {
        let reply = server.post("/v1/flows/slow/runs", &json!({"times": 2}));
        assert_eq!(reply.status, 202, "{reply}");
        assert_ne!(reply.json["stage"], "done", "{reply}");
        runs.push(run_id(&reply));
    }
    server.kill9();
    let killed_at = now_ms();
    server.restart();
    for run in &runs {
        let status = server.wait_done(run, LIMIT);
        assert_eq!(status["state"], "settled", "{status}");
        assert!(
            status["finished_at_ms"].as_u64().unwrap() > killed_at,
            "run {run} was finished before the kill: the test proves nothing ({status})"
        );
        let log = events(&server, run);
        let completions = kinds(&log)
            .iter()
            .filter(|k| **k == "step-completed")
            .count();
        assert_eq!(
            completions,
            2,
            "each step completed once: {:?}",
            kinds(&log)
        );
    }
}

#[test]
fn the_stream_resumes_after_a_dropped_connection_without_gap_or_repeat() {
    let dir = support::tempdir();
    let flow = flaky_flow("sse", "150ms", 6, "compensate");
    let server = Server::start(dir.path(), &[("sse", &flow)], "");
    let run = submit(&server, "sse", "", json!({"times": 4}), 202);
    let path = format!("/v1/runs/{run}/stream");

    let id_of =
        |e: &support::SseEvent| e.id.as_ref().map(|i| i.parse::<u64>().expect("numeric id"));
    let mut seen: Vec<u64> = Vec::new();
    let mut kinds_seen: Vec<String> = Vec::new();
    let check = |e: &support::SseEvent| {
        let data: Value = serde_json::from_str(&e.data).expect("data is JSON");
        if let Some(id) = id_of(e) {
            assert_eq!(data["seq"], id, "the id is the event's sequence number");
            assert_eq!(data["kind"]["type"], e.event.as_str());
        }
        data
    };
    {
        let mut stream = server.stream(&path, None);
        assert_eq!(stream.status, 200);
        assert!(stream.headers["content-type"].starts_with("text/event-stream"));
        while seen.len() < 4 {
            let e = stream.next_event().expect("the stream ended early");
            check(&e);
            if let Some(id) = id_of(&e) {
                seen.push(id);
                kinds_seen.push(e.event.clone());
            }
        }
        // Dropped here, mid-run.
    }
    let status = server.get(&format!("/v1/runs/{run}"));
    assert_ne!(
        status.json["stage"], "done",
        "the run must outlive the first connection: {status}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut stream = server.stream(&path, seen.last().copied());
    assert_eq!(stream.status, 200);
    let mut last_status = Value::Null;
    let deadline = Instant::now() + LIMIT;
    while let Some(e) = stream.next_event() {
        assert!(Instant::now() < deadline, "the stream does not end");
        let data = check(&e);
        match id_of(&e) {
            Some(id) => {
                seen.push(id);
                kinds_seen.push(e.event.clone());
            }
            None if e.event == "status" => last_status = data,
            None => {}
        }
    }
    let expected: Vec<u64> = (0..seen.len() as u64).collect();
    assert_eq!(
        seen, expected,
        "every event once, in order, across the reconnection"
    );
    assert!(seen.len() >= 12, "retries make many events: {kinds_seen:?}");
    assert_eq!(kinds_seen.last().map(String::as_str), Some("run-settled"));
    assert_eq!(last_status["state"], "settled", "{last_status}");
    assert_eq!(
        kinds_seen.len(),
        events(&server, &run).len(),
        "the stream carried the whole log"
    );

    // Resuming after the last event: nothing more, and the stream ends.
    let mut stream = server.stream(&path, seen.last().copied());
    assert_eq!(stream.status, 200);
    while let Some(e) = stream.next_event() {
        assert!(e.id.is_none(), "an event sent twice: {e:?}");
    }
}

#[test]
fn operators_act_on_held_and_moving_runs_and_each_action_is_recorded() {
    let dir = support::tempdir();
    let (tokens, secrets) =
        support::api_tokens(&[("ops-alice", "operator"), ("shop", "submitter")]);
    let (ops, shop) = (secrets[0].as_str(), secrets[1].as_str());
    let hold = flaky_flow("hold", "20ms", 2, "hold");
    let pausable = flaky_flow("pausable", "1500ms", 3, "compensate");
    let mut server = Server::start(
        dir.path(),
        &[("quick", QUICK), ("hold", &hold), ("pausable", &pausable)],
        &tokens,
    );
    server.set_token(Some(ops));
    let held = |times: u32| {
        let reply = server.post("/v1/flows/hold/runs?wait=10s", &json!({"times": times}));
        assert_eq!(reply.json["state"], "needs-attention", "{reply}");
        run_id(&reply)
    };
    let act = |run: &str, action: &str, reason: &str| {
        server.post(
            &format!("/v1/runs/{run}/{action}"),
            &json!({"reason": reason}),
        )
    };
    let recorded = |run: &str, action: &str, reason: &str| {
        let log = events(&server, run);
        let acted: Vec<&Value> = log
            .iter()
            .filter(|e| e["kind"]["type"] == "operator-acted" && e["kind"]["action"] == action)
            .collect();
        assert_eq!(acted.len(), 1, "one {action} recorded: {log:#?}");
        assert_eq!(acted[0]["kind"]["by"], "token:ops-alice");
        assert_eq!(acted[0]["kind"]["reason"], reason);
        log
    };

    // Retry: the same operation id, a fresh attempt budget.
    let run = held(2);
    let reply = act(&run, "retry", "the provider is back");
    assert_eq!(reply.status, 200, "{reply}");
    assert_eq!(reply.json["applied"], true);
    assert_eq!(server.wait_done(&run, LIMIT)["state"], "settled");
    let log = recorded(&run, "retry", "the provider is back");
    let operations: BTreeSet<&str> = log
        .iter()
        .filter(|e| {
            e["step"] == "flaky" && e["kind"]["type"].as_str().unwrap().starts_with("step-")
        })
        .map(|e| e["operation_id"].as_str().unwrap())
        .collect();
    assert_eq!(operations.len(), 1, "{operations:?}");
    let completed = log
        .iter()
        .find(|e| e["step"] == "flaky" && e["kind"]["type"] == "step-completed")
        .expect("the retried step completed");
    assert_eq!(
        completed["attempt"], 3,
        "after two failed attempts: {completed}"
    );
    assert_problem(&act(&run, "retry", "again"), 409);

    // Compensate: the completed first step is undone.
    let run = held(9);
    let reply = act(&run, "compensate", "the customer withdrew");
    assert_eq!(reply.status, 200, "{reply}");
    let status = server.wait_done(&run, LIMIT);
    assert_eq!(status["state"], "compensated", "{status}");
    let log = recorded(&run, "compensate", "the customer withdrew");
    assert!(kinds(&log).contains(&"compensation-completed"));

    // Cancel.
    let run = held(9);
    let reply = act(&run, "cancel", "duplicate order");
    assert_eq!(reply.status, 200, "{reply}");
    assert_eq!(server.wait_done(&run, LIMIT)["state"], "cancelled");
    recorded(&run, "cancel", "duplicate order");

    // Restart a settled run from its second step: that step runs again
    // under a new operation id; the first keeps its output.
    let run = submit(&server, "quick", "?wait=10s", json!({}), 200);
    let reply = server.post(
        &format!("/v1/runs/{run}/restart?from_step=second"),
        &json!({"reason": "downstream lost it"}),
    );
    assert_eq!(reply.status, 200, "{reply}");
    assert_eq!(server.wait_done(&run, LIMIT)["state"], "settled");
    let log = recorded(&run, "restart", "downstream lost it");
    assert!(kinds(&log).contains(&"run-restarted"), "{log:#?}");
    let completed = |step: &str| -> Vec<String> {
        log.iter()
            .filter(|e| e["step"] == step && e["kind"]["type"] == "step-completed")
            .map(|e| e["operation_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(completed("first"), [format!("{run}/first")]);
    assert_eq!(
        completed("second"),
        [format!("{run}/second"), format!("{run}/second~1")]
    );
    let status = server.get(&format!("/v1/runs/{run}")).json;
    assert_eq!(status["restarts"], 1, "{status}");
    assert_eq!(status["steps"][1]["generation"], 1, "{status}");
    let restart = |query: &str| {
        server.post(
            &format!("/v1/runs/{run}/restart{query}"),
            &json!({"reason": "again"}),
        )
    };
    let missing = restart("");
    assert_problem(&missing, 422);
    assert!(missing.text.contains("from_step"), "{missing}");
    let unknown = restart("?from_step=nope");
    assert_problem(&unknown, 409);
    assert!(unknown.text.contains("no such step"), "{unknown}");
    assert_problem(&restart("?from_step=second&step=first"), 400);
    assert_problem(
        &server.post(
            &format!("/v1/runs/{run}/retry?from_step=second"),
            &json!({"reason": "r"}),
        ),
        400,
    );
    assert_eq!(
        kinds(&events(&server, &run))
            .iter()
            .filter(|k| **k == "run-restarted")
            .count(),
        1,
        "refused restarts wrote nothing"
    );

    // Pause a run waiting for its retry, then resume it to the end.
    let run = submit(&server, "pausable", "", json!({"times": 1}), 202);
    server.poll(&format!("/v1/runs/{run}"), LIMIT, |s| {
        s["state"] == "retrying"
    });
    let reply = act(&run, "pause", "checking with the bank");
    assert_eq!(reply.status, 202, "applied by its driver, at once: {reply}");
    assert_eq!(reply.json["applied"], false);
    let paused = server.poll(&format!("/v1/runs/{run}"), LIMIT, |s| {
        s["state"] == "needs-attention"
    });
    assert_eq!(paused["hold"], "paused", "{paused}");
    assert_eq!(paused["steps"][1]["state"], "scheduled", "{paused}");
    let reply = act(&run, "resume", "the bank agrees");
    assert_eq!(reply.status, 200, "{reply}");
    assert_eq!(server.wait_done(&run, LIMIT)["state"], "settled");
    recorded(&run, "pause", "checking with the bank");
    recorded(&run, "resume", "the bank agrees");

    // In bulk, by filter: a dry run counts, then the action applies.
    let bulk: BTreeSet<String> = (0..3).map(|_| held(9)).collect();
    let mut request = json!({
        "action": "cancel",
        "reason": "bulk clean-up",
        "filter": {"state": "needs-attention", "flow": "hold"},
        "dry_run": true,
    });
    let reply = server.post("/v1/runs/actions", &request);
    assert_eq!(reply.status, 200, "{reply}");
    assert_eq!(reply.json["matched"], 3, "{reply}");
    for run in &bulk {
        assert_eq!(
            server.get(&format!("/v1/runs/{run}")).json["state"],
            "needs-attention"
        );
    }
    request["dry_run"] = json!(false);
    let reply = server.post("/v1/runs/actions", &request);
    assert_eq!(reply.status, 200, "{reply}");
    assert_eq!(reply.json["matched"], 3, "{reply}");
    assert_eq!(reply.json["applied"], 3, "{reply}");
    assert_eq!(reply.json["refused"], json!([]), "{reply}");
    for run in &bulk {
        assert_eq!(
            server.get(&format!("/v1/runs/{run}")).json["state"],
            "cancelled"
        );
        recorded(run, "cancel", "bulk clean-up");
    }

    // A user's report, stored as an event and counted.
    let reply = server
        .call("POST", "/v1/flows/quick/runs?wait=10s")
        .token(Some(shop))
        .json(&json!({}))
        .send();
    let run = run_id(&reply);
    let report = json!({"message": "my order shows twice", "field": "total"});
    let reply = server
        .call("POST", &format!("/v1/runs/{run}/reports"))
        .token(Some(shop))
        .json(&report)
        .send();
    assert_eq!(reply.status, 201, "{reply}");
    assert_eq!(reply.json["reports"], 1);
    let reply = server.post(
        &format!("/v1/runs/{run}/reports"),
        &json!({"message": "confirmed by support"}),
    );
    assert_eq!(reply.status, 201, "{reply}");
    assert_eq!(server.get(&format!("/v1/runs/{run}")).json["reports"], 2);
    let log = events(&server, &run);
    let reported: Vec<&Value> = log
        .iter()
        .filter(|e| e["kind"]["type"] == "user-reported")
        .collect();
    assert_eq!(reported.len(), 2, "{log:#?}");
    assert_eq!(reported[0]["kind"]["by"], "token:shop");
    assert_eq!(reported[0]["kind"]["message"], "my order shows twice");
    assert_eq!(reported[0]["kind"]["field"], "total");
    assert_eq!(reported[1]["kind"]["by"], "token:ops-alice");
}

#[test]
fn flows_are_validated_versioned_and_kept_while_runs_use_them() {
    let dir = support::tempdir();
    let mut server = Server::start(
        dir.path(),
        &[("quick", QUICK)],
        "[plugins.flaky.config]\nsecret_token = \"hunter2-never-shown\"\n",
    );
    // Version 1 takes over 1.5 s (one retry); version 2 settles at once.
    let v1 = flaky_flow("orders", "1500ms", 3, "compensate");
    let v2 = format!(
        "{}version: \"2\"\n",
        QUICK.replace("name: quick", "name: orders")
    );

    let reply = server.put("/v1/flows/orders", &v1);
    assert_eq!(reply.status, 201, "{reply}");
    assert_eq!(reply.json["version"], "1");
    assert_eq!(
        server.put("/v1/flows/orders", &v1).status,
        200,
        "the same text again changes nothing"
    );
    let in_flight = submit(&server, "orders", "", json!({"times": 1}), 202);
    let reply = server.put("/v1/flows/orders", &v2);
    assert_eq!(reply.status, 201, "{reply}");
    let newer = submit(&server, "orders", "?wait=10s", json!({}), 200);
    assert_eq!(
        server.get(&format!("/v1/runs/{newer}")).json["flow"],
        "orders@2"
    );
    let flows = server.get("/v1/flows");
    let orders: Vec<&Value> = flows.json["flows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["name"] == "orders")
        .collect();
    assert_eq!(orders.len(), 1, "{flows}");
    assert_eq!(orders[0]["version"], "2", "new runs get the newest");

    let versions = server.get("/v1/flows/orders/versions");
    assert_eq!(versions.status, 200, "{versions}");
    let list = versions.json["versions"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{versions}");
    assert_eq!(
        (
            &list[0]["version"],
            &list[0]["unfinished_runs"],
            &list[0]["drained"]
        ),
        (&json!("1"), &json!(1), &json!(false)),
        "{versions}"
    );
    assert_eq!(
        (
            &list[1]["version"],
            &list[1]["drained"],
            &list[1]["current"]
        ),
        (&json!("2"), &json!(true), &json!(true)),
        "{versions}"
    );

    let refused = server.delete("/v1/flows/orders/versions/1");
    assert_problem(&refused, 409);
    assert_eq!(refused.json["unfinished_runs"], 1, "{refused}");

    // The run in flight finishes on the version it started with.
    let status = server.wait_done(&in_flight, LIMIT);
    assert_eq!(status["state"], "settled", "{status}");
    assert_eq!(status["flow"], "orders@1");
    assert_eq!(events(&server, &in_flight)[0]["kind"]["flow_version"], "1");
    let versions = server.get("/v1/flows/orders/versions");
    assert_eq!(versions.json["versions"][0]["drained"], true, "{versions}");
    let deleted = server.delete("/v1/flows/orders/versions/1");
    assert_eq!(deleted.status, 204, "{deleted}");
    let versions = server.get("/v1/flows/orders/versions");
    assert_eq!(
        versions.json["versions"].as_array().unwrap().len(),
        1,
        "{versions}"
    );
    assert_problem(&server.delete("/v1/flows/orders/versions/1"), 404);

    // Refused versions say what is wrong and where.
    let taken = server.put("/v1/flows/orders", &v2.replace("second", "third"));
    assert_problem(&taken, 409);
    let bad_yaml = server.put(
        "/v1/flows/orders",
        "name: orders\nsteps:\n  - { name: a, plugin: noop\n",
    );
    assert_problem(&bad_yaml, 422);
    let at = bad_yaml.json["errors"][0]["at"]
        .as_str()
        .unwrap_or_default();
    let (line, column) = at
        .split_once(':')
        .unwrap_or_else(|| panic!("no line:column in {bad_yaml}"));
    assert!(
        line.parse::<u32>().is_ok() && column.parse::<u32>().is_ok(),
        "{bad_yaml}"
    );
    let unknown = server.put(
        "/v1/flows/orders",
        "name: orders\nversion: \"3\"\nsteps:\n  - { name: pay, plugin: no-such-plugin }\n",
    );
    assert_problem(&unknown, 422);
    assert!(unknown.text.contains("no-such-plugin"), "{unknown}");
    assert_eq!(
        unknown.json["errors"][0]["at"], "4:26",
        "at the plugin's name: {unknown}"
    );
    assert_problem(&server.put("/v1/flows/other", &v2), 422);
    let as_json = server
        .call("PUT", "/v1/flows/orders")
        .json(&json!({"name": "orders"}))
        .send();
    assert_problem(&as_json, 415);

    // Plugins: manifests and limits, config names but never their values.
    let plugins = server.get("/v1/plugins");
    assert_eq!(plugins.status, 200, "{plugins}");
    let list = plugins.json["plugins"].as_array().unwrap();
    let flaky = list
        .iter()
        .find(|p| p["name"] == "flaky")
        .expect("flaky listed");
    assert_eq!(flaky["manifest"]["name"], "flaky");
    assert!(flaky["manifest"]["input_schema"].is_object(), "{flaky}");
    assert!(flaky["sandbox"]["limits"]["memory_mib"].is_u64(), "{flaky}");
    assert_eq!(
        flaky["sandbox"]["grants"]["config_keys"],
        json!(["secret_token"])
    );
    assert!(list.iter().any(|p| p["name"] == "noop"));
    assert!(
        !plugins.text.contains("hunter2"),
        "a config value leaked: {plugins}"
    );

    // New runs get the version registered last, before a restart and
    // after: `quick` 1 came from a file, 9 and 10 over the API.
    for version in ["9", "10"] {
        let text = format!("{QUICK}version: \"{version}\"\n");
        assert_eq!(server.put("/v1/flows/quick", &text).status, 201);
    }
    let current = |server: &Server| {
        let flows = server.get("/v1/flows");
        let quick = flows.json["flows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "quick")
            .cloned()
            .unwrap_or_else(|| panic!("quick not offered: {flows}"));
        let versions = server.get("/v1/flows/quick/versions");
        let order: Vec<String> = versions.json["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap().to_string())
            .collect();
        (quick["version"].as_str().unwrap().to_string(), order)
    };
    let before = current(&server);
    assert_eq!(
        before,
        ("10".to_string(), vec!["1".into(), "9".into(), "10".into()])
    );
    server.restart();
    assert_eq!(
        current(&server),
        before,
        "a restart keeps the version registered last"
    );
    let run = submit(&server, "quick", "?wait=10s", json!({}), 200);
    assert_eq!(
        server.get(&format!("/v1/runs/{run}")).json["flow"],
        "quick@10"
    );
}

/// One bad request: what it shows, `METHOD path`, its content type
/// (empty: none) and body, and the status it must get.
struct ErrorCase {
    what: &'static str,
    request: String,
    content_type: &'static str,
    body: Vec<u8>,
    status: u16,
}

fn case(
    what: &'static str,
    request: impl Into<String>,
    content_type: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
) -> ErrorCase {
    ErrorCase {
        what,
        request: request.into(),
        content_type,
        body: body.into(),
        status,
    }
}

#[test]
fn errors_are_problem_documents_and_fuzzed_requests_never_fail_the_server() {
    let dir = support::tempdir();
    let mut server = Server::start(
        dir.path(),
        &[("quick", QUICK)],
        "[api]\nmax_wait = \"1s\"\n",
    );
    let run = submit(&server, "quick", "?wait=10s", json!({}), 200);
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    const JSON: &str = "application/json";
    const SUBMIT: &str = "POST /v1/flows/quick/runs";
    let unknown = "01900000-0000-7000-8000-000000000000";
    let cases = [
        case("bad JSON", SUBMIT, JSON, "{\"a\": 1,}", 400),
        case("wrong content type", SUBMIT, "text/plain", "{}", 415),
        case("no content type", SUBMIT, "", "{}", 415),
        case(
            "over the input bound",
            SUBMIT,
            JSON,
            format!("\"{}\"", "x".repeat(1_500_000)),
            413,
        ),
        case("nested 100 deep", SUBMIT, JSON, deep(100), 422),
        case("nested 200 deep", SUBMIT, JSON, deep(200), 422),
        case("nested 100,000 deep", SUBMIT, JSON, deep(100_000), 422),
        case("unknown flow", "POST /v1/flows/nope/runs", JSON, "{}", 404),
        case("bad run id", "GET /v1/runs/not-a-uuid", "", "", 400),
        case(
            "unknown run",
            format!("GET /v1/runs/{unknown}"),
            "",
            "",
            404,
        ),
        case("unknown route", "GET /v1/nope", "", "", 404),
        case("wrong method", "DELETE /v1/runs", "", "", 405),
        case("unknown state", "GET /v1/runs?state=finished", "", "", 400),
        case("unknown parameter", "GET /v1/runs?colour=red", "", "", 400),
        case(
            "unknown submit parameter",
            format!("{SUBMIT}?wiat=30s"),
            JSON,
            "{}",
            400,
        ),
        case("bad limit", "GET /v1/runs?limit=0", "", "", 400),
        case("bad cursor", "GET /v1/runs?cursor=zzz", "", "", 400),
        case("bad escape", "GET /v1/runs?state=%zz", "", "", 400),
        case(
            "bad wait",
            format!("{SUBMIT}?wait=forever"),
            JSON,
            "{}",
            400,
        ),
        case(
            "act on an unknown run",
            format!("POST /v1/runs/{unknown}/cancel"),
            JSON,
            "{}",
            404,
        ),
        case(
            "action body not an object",
            format!("POST /v1/runs/{run}/cancel"),
            JSON,
            "[1]",
            400,
        ),
        case(
            "report without message",
            format!("POST /v1/runs/{run}/reports"),
            JSON,
            "{}",
            422,
        ),
        case(
            "bulk without filter",
            "POST /v1/runs/actions",
            JSON,
            r#"{"action":"cancel","reason":"x"}"#,
            422,
        ),
        case(
            "unknown bulk action",
            "POST /v1/runs/actions",
            JSON,
            r#"{"action":"boom","reason":"x"}"#,
            422,
        ),
        case(
            "flow not UTF-8",
            "PUT /v1/flows/quick",
            "application/yaml",
            [0xff, 0xfe, 0],
            400,
        ),
        case(
            "versions of an unknown flow",
            "GET /v1/flows/nope/versions",
            "",
            "",
            404,
        ),
    ];
    for ErrorCase {
        what,
        request,
        content_type,
        body,
        status,
    } in cases
    {
        let (method, path) = request.split_once(' ').unwrap();
        let mut call = server.call(method, path);
        if !body.is_empty() || !content_type.is_empty() {
            call = call.body(content_type, body);
        }
        let reply = call.send();
        assert_eq!(reply.status, status, "{what}: {reply}");
        assert_problem(&reply, status);
        if what == "bad JSON" {
            assert_eq!(
                reply.json["errors"][0]["at"], "1:9",
                "{what}: the line and column at fault: {reply}"
            );
        }
        if what == "wrong method" {
            assert!(
                reply.header("allow").is_some_and(|a| a.contains("GET")),
                "{reply}"
            );
        }
    }
    // Over the body limit: refused on its Content-Length, before it is sent
    // (a client sending it all would be cut off mid-body by the refusal).
    let too_large = format!(
        "POST /v1/flows/quick/runs HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        3 * 1024 * 1024
    );
    let reply = raw(&server.addr, too_large.as_bytes()).expect("an answer");
    assert_problem(&reply, 413);
    for (what, header, value, status) in [
        ("empty idempotency key", "Idempotency-Key", "", 400),
        (
            "idempotency key too long",
            "Idempotency-Key",
            &"k".repeat(600) as &str,
            422,
        ),
    ] {
        let reply = server
            .call("POST", "/v1/flows/quick/runs")
            .header(header, value)
            .json(&json!({}))
            .send();
        assert_eq!(reply.status, status, "{what}: {reply}");
        assert_problem(&reply, status);
    }
    let reply = server
        .call("GET", &format!("/v1/runs/{run}/stream"))
        .header("Last-Event-ID", "yesterday")
        .send();
    assert_problem(&reply, 400);

    // Random requests, bounded and seeded: never a 5xx, and the server stays up.
    let seed = 0x5e7713;
    let mut rng = fastrand::Rng::with_seed(seed);
    for i in 0..300 {
        let request = fuzz_request(&mut rng, &run);
        if let Some(reply) = raw(&server.addr, &request) {
            assert!(
                reply.status < 500,
                "request {i} of seed {seed:#x} got {reply}:\n{}",
                String::from_utf8_lossy(&request[..request.len().min(2000)])
            );
        }
        assert!(
            server.is_running(),
            "the server exited on request {i} of seed {seed:#x}"
        );
    }
    assert_eq!(server.get("/healthz").status, 200);
    assert_eq!(server.get(&format!("/v1/runs/{run}")).status, 200);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

/// Sends raw bytes on a fresh connection; the answer, if one comes.
fn raw(addr: &str, request: &[u8]) -> Option<Reply> {
    use std::io::{BufRead, Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // The server may answer and close before reading everything.
    let _ = stream.write_all(request);
    let mut reader = std::io::BufReader::new(stream);
    if reader.fill_buf().ok()?.is_empty() {
        return None;
    }
    let (status, headers) = support::read_head(&mut reader);
    let mut body = Vec::new();
    let length = headers
        .get("content-length")
        .and_then(|l| l.parse::<u64>().ok());
    let _ = match length {
        Some(n) => reader.take(n).read_to_end(&mut body),
        None => reader.read_to_end(&mut body),
    };
    let text = String::from_utf8_lossy(&body).into_owned();
    Some(Reply {
        status,
        headers,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    })
}

/// One random request: mostly well-formed HTTP aimed at the routes, with
/// junk in the path, query, headers and body; now and then pure noise.
fn fuzz_request(rng: &mut fastrand::Rng, run: &str) -> Vec<u8> {
    if rng.u8(..) < 12 {
        return (0..rng.usize(1..400)).map(|_| rng.u8(..)).collect();
    }
    let pick =
        |rng: &mut fastrand::Rng, items: &[&str]| items[rng.usize(..items.len())].to_string();
    let junk = |rng: &mut fastrand::Rng, max: usize| -> String {
        (0..rng.usize(0..max))
            .map(|_| format!("%{:02X}", rng.u8(..)))
            .collect()
    };
    let route = ROUTES[rng.usize(..ROUTES.len())];
    // Mostly the route's own method, so the handlers see the junk.
    let method = match rng.u8(..10) {
        0..=7 => route.method.to_string(),
        _ => pick(
            rng,
            &[
                "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "BREW",
            ],
        ),
    };
    let mut path = String::new();
    for segment in route.path.split('/').skip(1) {
        path.push('/');
        if segment.starts_with('{') {
            let value = match rng.u8(..6) {
                0 => "quick".to_string(),
                1 => run.to_string(),
                2 => junk(rng, 40),
                3 => "x".repeat(rng.usize(0..3000)),
                4 => pick(
                    rng,
                    &[
                        "..",
                        "%00",
                        "%2F",
                        "1",
                        "0190f000-0000-7000-8000-00000000000g",
                        "-1",
                    ],
                ),
                _ => format!("{:x}", rng.u128(..)),
            };
            path.push_str(&value);
        } else {
            path.push_str(segment);
        }
    }
    if path.is_empty() {
        path.push('/');
    }
    if rng.bool() {
        let name = pick(
            rng,
            &[
                "wait", "state", "stage", "flow", "since", "cursor", "limit", "zz", "",
            ],
        );
        let value = match rng.u8(..4) {
            0 => pick(
                rng,
                &[
                    "1s",
                    "0s",
                    "99999999999999s",
                    "settled",
                    "retrying,x",
                    "done",
                    "-3",
                    "1e9",
                    "%zz",
                    "%",
                ],
            ),
            1 => junk(rng, 20),
            2 => rng.u64(..).to_string(),
            _ => String::new(),
        };
        path.push_str(&format!("?{name}={value}"));
        if rng.bool() {
            path.push_str("&&=&");
        }
    }
    let body: Vec<u8> = match rng.u8(..7) {
        0 => Vec::new(),
        1 => b"{\"amount\": 1, \"nested\": {\"a\": [1, 2, {\"b\": null}]}}".to_vec(),
        2 => (0..rng.usize(0..2000)).map(|_| rng.u8(..)).collect(),
        3 => {
            let n = rng.usize(1..400);
            format!("{}{}", "{\"a\":".repeat(n), "}".repeat(rng.usize(0..n + 1))).into_bytes()
        }
        4 => b"name: quick\nsteps:\n  - { name: a, plugin: noop }\n".to_vec(),
        5 => b"{\"reason\": \"fuzz\", \"action\": \"pause\", \"filter\": {\"flow\": \"quick\"}, \"dry_run\": true, \"message\": \"m\"}".to_vec(),
        _ => format!("\"{}\"", "y".repeat(rng.usize(0..200_000))).into_bytes(),
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n");
    if rng.u8(..4) > 0 {
        let content_type = match rng.u8(..10) {
            0..=5 => "application/json".to_string(),
            _ => pick(
                rng,
                &[
                    "application/json; charset=utf-8",
                    "application/yaml",
                    "text/plain",
                    "application/x-www-form-urlencoded",
                    "json",
                    "",
                ],
            ),
        };
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    if rng.bool() {
        let key: String = (0..rng.usize(0..700))
            .map(|_| char::from(rng.u8(0x21..0x7f)))
            .collect();
        head.push_str(&format!("Idempotency-Key: {key}\r\n"));
    }
    if rng.u8(..4) == 0 {
        let id = pick(rng, &["0", "3", "-1", "99999999999999999999999", "abc", ""]);
        head.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    if rng.u8(..4) == 0 {
        let auth = pick(
            rng,
            &[
                "Bearer",
                "Bearer ",
                "Basic abc",
                "Bearer stl_00",
                "bearer x y z",
            ],
        );
        head.push_str(&format!("Authorization: {auth}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut request = head.into_bytes();
    request.extend(body);
    request
}

#[test]
fn roles_are_enforced_on_every_route_of_the_table() {
    let dir = support::tempdir();
    let (tokens, secrets) = support::api_tokens(&[
        ("app", "submitter"),
        ("auditor", "viewer"),
        ("ops", "operator"),
    ]);
    let mut server = Server::start(dir.path(), &[("quick", QUICK)], &tokens);
    let roles = [
        (Role::Submitter, secrets[0].as_str()),
        (Role::Viewer, secrets[1].as_str()),
        (Role::Operator, secrets[2].as_str()),
    ];
    let wrong = format!("stl_{}", "0".repeat(64));

    // A run of the submitter's, with a key, settled before the table runs.
    server.set_token(Some(roles[0].1));
    let mine = server
        .call("POST", "/v1/flows/quick/runs?wait=10s")
        .header("Idempotency-Key", "mine")
        .json(&json!({}))
        .send();
    assert_eq!(mine.status, 200, "{mine}");
    let mine = run_id(&mine);

    for route in ROUTES {
        let path = concrete(route.path, &mine, "mine", "no-such-version");
        let send = |token: Option<&str>| {
            let call = server.call(route.method, &path).token(token);
            with_body(call, route.operation).send()
        };
        let what = format!("{} {}", route.method, route.path);
        // Inbound webhooks need no token: their own signature is the
        // proof, and without one they answer 401 whatever token is sent.
        if route.operation == "webhook" {
            for token in [None, Some(wrong.as_str()), Some(roles[0].1)] {
                let reply = send(token);
                assert_eq!(reply.status, 401, "{what}: {reply}");
                assert!(reply.text.contains("bad-webhook-signature"), "{reply}");
            }
            continue;
        }
        if route.need == Need::Nothing {
            for token in [None, Some(wrong.as_str()), Some(roles[0].1)] {
                let reply = send(token);
                assert!(
                    ![401, 403].contains(&reply.status),
                    "{what} needs nothing: {reply}"
                );
            }
            continue;
        }
        for token in [None, Some(wrong.as_str())] {
            let reply = send(token);
            assert_problem(&reply, 401);
            assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{what}");
        }
        for (role, token) in roles {
            let reply = send(Some(token));
            if role.allows(route.need) {
                assert!(
                    ![401, 403].contains(&reply.status),
                    "{what} as {role:?} (needs {:?}): {reply}",
                    route.need
                );
            } else {
                assert_problem(&reply, 403);
            }
        }
    }

    // A submitter sees its own runs, and no one else's.
    server.set_token(Some(roles[2].1));
    let theirs = server
        .call("POST", "/v1/flows/quick/runs?wait=10s")
        .header("Idempotency-Key", "theirs")
        .json(&json!({}))
        .send();
    let theirs = run_id(&theirs);
    server.set_token(Some(roles[0].1));
    assert_eq!(server.get(&format!("/v1/runs/{mine}")).status, 200);
    for path in [
        format!("/v1/runs/{theirs}"),
        format!("/v1/runs/{theirs}/events"),
        format!("/v1/runs/{theirs}/stream"),
        "/v1/flows/quick/runs/by-key/theirs".to_string(),
    ] {
        assert_problem(&server.get(&path), 404);
    }
    let report = server.post(
        &format!("/v1/runs/{theirs}/reports"),
        &json!({"message": "m"}),
    );
    assert_problem(&report, 404);
    assert_problem(&server.get("/v1/runs"), 403);
    // Nor through the other's idempotency key: a conflict that names no run.
    let reused = server
        .call("POST", "/v1/flows/quick/runs")
        .header("Idempotency-Key", "theirs")
        .json(&json!({}))
        .send();
    assert_problem(&reused, 409);
    assert!(
        !reused.text.contains(&theirs),
        "the conflict names the other client's run: {}",
        reused.text
    );
}

/// A route's path with its parameters filled in.
fn concrete(pattern: &str, run: &str, key: &str, version: &str) -> String {
    pattern
        .replace("{flow}", "quick")
        .replace("{id}", run)
        .replace("{key}", key)
        .replace("{version}", version)
        .replace("{name}", "approved")
        .replace("{step}", "one")
}

/// A body each operation accepts far enough to get past authorization.
fn with_body<'s>(call: support::Call<'s>, operation: &str) -> support::Call<'s> {
    match operation {
        "submit_run" => call.json(&json!({})),
        "report_run" => call.json(&json!({"message": "seen from the table"})),
        "signal_run" => call.json(&json!({"payload": {}})),
        "signal_by_correlation" => call.json(&json!({"correlation": "c-1", "payload": {}})),
        "approve_run" => call.json(&json!({"decision": "approve"})),
        "retry_run" | "compensate_run" | "cancel_run" | "pause_run" | "resume_run"
        | "restart_run" | "accept_drift" | "reapply_run" => {
            call.json(&json!({"reason": "from the table"}))
        }
        "bulk_action" => call.json(&json!({
            "action": "cancel", "reason": "from the table", "filter": {"flow": "none"}, "dry_run": true
        })),
        "put_flow" => call.body("application/yaml", QUICK),
        _ => call,
    }
}

#[test]
fn serve_refuses_a_public_address_without_tokens() {
    let dir = support::tempdir();
    Server::setup(dir.path(), &[("quick", QUICK)], "");
    let (code, stdout, stderr) =
        support::output_within(&mut Server::command(dir.path(), "0.0.0.0:0"), LIMIT);
    assert_ne!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without tokens"),
        "{stderr}"
    );
    assert!(!stdout.contains("listening on"), "{stdout}");
}

#[test]
fn the_openapi_document_lists_exactly_the_routes_and_each_answers() {
    let dir = support::tempdir();
    let spare = "name: spare\nsteps:\n  - { name: a, plugin: noop }\n";
    let server = Server::start(dir.path(), &[("quick", QUICK), ("spare", spare)], "");
    let doc = server.get("/v1/openapi.json");
    assert_eq!(doc.status, 200, "{doc}");
    let mut documented = BTreeSet::new();
    for (path, item) in doc.json["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().unwrap() {
            let route = ROUTES
                .iter()
                .find(|r| r.path == path && r.method.eq_ignore_ascii_case(method))
                .unwrap_or_else(|| panic!("documented but not routed: {method} {path}"));
            assert_eq!(operation["operationId"], route.operation);
            documented.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    let table: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(documented, table);

    let run = server
        .call("POST", "/v1/flows/quick/runs?wait=10s")
        .header("Idempotency-Key", "k")
        .json(&json!({}))
        .send();
    let run = run_id(&run);
    for route in ROUTES {
        let path = concrete(route.path, &run, "k", "1")
            .replace("/flows/quick/versions/", "/flows/spare/versions/");
        let reply = with_body(server.call(route.method, &path), route.operation).send();
        // A webhook source this host does not have answers as a bad
        // signature does (401): the route is served.
        if route.operation == "webhook" {
            assert_eq!(reply.status, 401, "{reply}");
            continue;
        }
        // The table's flow correlates on nothing: the handler's own 404.
        if route.operation == "signal_by_correlation" {
            assert!(reply.text.contains("with `correlate:`"), "{reply}");
            continue;
        }
        assert!(
            ![404, 405].contains(&reply.status),
            "{} {} is in the table but the router does not serve it: {reply}",
            route.method,
            route.path
        );
    }
}

#[test]
fn sigterm_answers_waiting_requests_drains_and_exits_cleanly() {
    let dir = support::tempdir();
    let soon = flaky_flow("soon", "700ms", 3, "compensate");
    let late = flaky_flow("late", "4s", 3, "compensate");
    let drain = Duration::from_secs(3);
    let mut server = Server::start(
        dir.path(),
        &[("soon", &soon), ("late", &late)],
        "[api]\ndrain = \"3s\"\n",
    );
    let streamed = submit(&server, "late", "", json!({"times": 1}), 202);
    let mut stream = server.stream(&format!("/v1/runs/{streamed}/stream"), None);
    assert!(stream.next_event().is_some());
    let (soon_reply, late_reply, signalled) = std::thread::scope(|scope| {
        let waiting = |flow: &'static str| {
            let server = &server;
            scope.spawn(move || {
                server.post(
                    &format!("/v1/flows/{flow}/runs?wait=30s"),
                    &json!({"times": 1}),
                )
            })
        };
        let (soon, late) = (waiting("soon"), waiting("late"));
        // Both submissions accepted (three runs in all), both still waiting.
        server.poll("/v1/runs", LIMIT, |page| {
            page["runs"].as_array().unwrap().len() == 3
        });
        std::thread::sleep(Duration::from_millis(100));
        server.sigterm();
        let signalled = Instant::now();
        let soon = soon.join().expect("the waiting request got no answer");
        let late = late.join().expect("the waiting request got no answer");
        (soon, late, signalled)
    });
    let (status, _) = server.wait_exit(drain * 3);
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(took < drain, "took {took:?} to stop, more than the drain");
    for reply in [&soon_reply, &late_reply] {
        assert!(
            reply.status == 200 && reply.json["state"] == "settled"
                || reply.status == 202 && reply.json["stage"] != "done",
            "a waiting request is answered with what is known: {reply}"
        );
    }
    let mut ended = false;
    for _ in 0..100 {
        if stream.next_event().is_none() {
            ended = true;
            break;
        }
    }
    assert!(ended, "the stream ends when the server stops");

    // Whatever was not finished resumes after a restart.
    server.restart();
    for run in [run_id(&soon_reply), run_id(&late_reply), streamed] {
        let status = server.wait_done(&run, LIMIT);
        assert_eq!(status["state"], "settled", "{status}");
    }
}
