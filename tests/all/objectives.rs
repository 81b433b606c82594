//! A flow's objective: a run that has not settled in time records one
//! breach, when the time passes; the guarantees page explains the flow in
//! plain words and reports how well it keeps its objective.

use crate::support::{self, Server};
use serde_json::{Value, json};

const FAST: &str = "
name: fast
objective: { settled_within: 5s, target: 90%, window: 1h }
steps:
  - { name: one, plugin: noop }
";

/// Fails once, then waits 1.5 s before the retry: misses 500 ms.
const LATE: &str = "
name: late
objective: { settled_within: 500ms, target: 90%, window: 1h }
steps:
  - name: pay
    plugin: flaky
    input: { mode: fail-times, times: 1 }
    retry: { max_attempts: 3, initial_interval: 1500ms, backoff_coefficient: 1, jitter: 0 }
";

/// Settles at once; its objective is short.
const BRIEF: &str = "
name: brief
objective: { settled_within: 300ms, target: 90%, window: 1h }
steps:
  - { name: one, plugin: noop }
";

/// Held for an operator at once.
const STUCK: &str = "
name: stuck
objective: { settled_within: 1h, target: 90%, window: 1h }
defaults:
  on_exhausted: hold
steps:
  - name: pay
    plugin: flaky
    input: { mode: fail-times, times: 9 }
    retry: { max_attempts: 1 }
";

#[test]
fn a_restart_after_settling_in_time_is_no_breach_and_a_cancel_is_one() {
    let dir = support::tempdir();
    let server = Server::start(dir.path(), &[("brief", BRIEF), ("stuck", STUCK)], "");
    let settled = server.post("/v1/flows/brief/runs?wait=10s", &json!({}));
    assert_eq!(settled.json["state"], "settled", "{settled}");
    let run = settled.json["run_id"].as_str().unwrap().to_string();
    // Well past its 300 ms, an operator runs it again: it met its
    // objective the first time, and that stands.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let reply = server.post(
        &format!("/v1/runs/{run}/restart?from_step=one"),
        &json!({"reason": "again"}),
    );
    assert_eq!(reply.status, 200, "{reply}");
    server.wait_done(&run, std::time::Duration::from_secs(10));
    assert!(!kinds(&server, &run).contains(&"objective-breached".to_string()));
    let objective = &server.get("/v1/flows/brief/guarantees").json["objective"];
    assert_eq!(objective["met"], 1, "{objective}");

    // Held, then cancelled by an operator: it never settled, one breach.
    let held = server.post("/v1/flows/stuck/runs?wait=10s", &json!({}));
    assert_eq!(held.json["state"], "needs-attention", "{held}");
    let run = held.json["run_id"].as_str().unwrap().to_string();
    let reply = server.post(
        &format!("/v1/runs/{run}/cancel"),
        &json!({"reason": "gone"}),
    );
    assert_eq!(reply.status, 200, "{reply}");
    let breaches = |server: &Server| {
        kinds(server, &run)
            .iter()
            .filter(|k| *k == "objective-breached")
            .count()
    };
    assert_eq!(breaches(&server), 1);
    // A later report on the ended run is no second breach.
    let reply = server.post(
        &format!("/v1/runs/{run}/reports"),
        &json!({"message": "still waiting for my order"}),
    );
    assert!(reply.status < 300, "{reply}");
    assert_eq!(breaches(&server), 1);
}

fn kinds(server: &Server, run: &str) -> Vec<String> {
    server.get(&format!("/v1/runs/{run}/events")).json["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"]["type"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_missed_objective_is_recorded_once_when_it_passes_and_the_guarantees_say_so() {
    let dir = support::tempdir();
    let server = Server::start(dir.path(), &[("fast", FAST), ("late", LATE)], "");
    for _ in 0..3 {
        let reply = server.post("/v1/flows/fast/runs?wait=10s", &json!({}));
        assert_eq!(reply.json["state"], "settled", "{reply}");
    }
    let reply = server.post("/v1/flows/late/runs?wait=10s", &json!({}));
    assert_eq!(reply.json["state"], "settled", "{reply}");
    let late = reply.json["run_id"].as_str().unwrap().to_string();
    let names = kinds(&server, &late);
    let breaches: Vec<usize> = names
        .iter()
        .enumerate()
        .filter(|(_, k)| *k == "objective-breached")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(breaches.len(), 1, "exactly one breach per run: {names:?}");
    // Recorded while the run waited for its retry, not at its end.
    let completed = names.iter().position(|k| k == "step-completed").unwrap();
    assert!(breaches[0] < completed, "{names:?}");
    let events = server.get(&format!("/v1/runs/{late}/events")).json;
    let breach = &events["events"][breaches[0]]["kind"];
    assert_eq!(breach["settled_within_ms"], 500);
    assert!(breach["elapsed_ms"].as_u64().unwrap() >= 500, "{breach}");

    let fast = server.get("/v1/flows/fast/guarantees");
    assert_eq!(fast.status, 200, "{fast}");
    let objective = &fast.json["objective"];
    assert_eq!(
        (objective["met"].clone(), objective["missed"].clone()),
        (json!(3), json!(0))
    );
    assert_eq!(objective["attainment"], 1.0);
    let text = sentences(&fast.json);
    for expected in [
        "Your request is recorded on disk before you get an answer",
        "It goes through 1 step(s), in order: one.",
        "The goal: 90 % of requests settle within 5 s; over the last 1 h, 100 % did (3 of 3).",
        "No estimate yet: 3 run(s) of this flow have settled, 20 are needed.",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }

    let late = server.get("/v1/flows/late/guarantees").json;
    let objective = &late["objective"];
    assert_eq!(
        (objective["met"].clone(), objective["missed"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(objective["attainment"], 0.0);
    let burn = objective["burn_rate_1h"].as_f64().unwrap();
    assert!(
        (burn - 10.0).abs() < 1e-9,
        "all of a 10 % budget missed: {burn}"
    );
    let text = sentences(&late);
    assert!(
        text.contains(
            "If pay fails for a reason that may pass, it is tried up to 3 times, waiting 2 s to"
        ),
        "{text}"
    );
    assert_eq!(server.get("/v1/flows/nope/guarantees").status, 404);
}

fn sentences(guarantees: &Value) -> String {
    guarantees["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Held at once; misses its short objective while it waits.
const HELD_SHORT: &str = "
name: heldshort
objective: { settled_within: 700ms, target: 90%, window: 1h }
defaults:
  on_exhausted: hold
steps:
  - name: pay
    plugin: flaky
    input: { mode: fail-times, times: 9 }
    retry: { max_attempts: 1 }
";

#[test]
fn a_held_run_records_its_missed_objective_without_anyone_acting_even_across_a_restart() {
    let dir = support::tempdir();
    let mut server = Server::start(dir.path(), &[("heldshort", HELD_SHORT)], "");
    let first = server.post("/v1/flows/heldshort/runs?wait=10s", &json!({}));
    assert_eq!(first.json["state"], "needs-attention", "{first}");
    let first = first.json["run_id"].as_str().unwrap().to_string();
    let breached = |server: &Server, run: &str| {
        kinds(server, run)
            .iter()
            .filter(|k| *k == "objective-breached")
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while breached(&server, &first) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            kinds(&server, &first)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A second held run; the host crashes before its deadline, and the
    // restarted host watches it from the store.
    let second = server.post("/v1/flows/heldshort/runs?wait=10s", &json!({}));
    assert_eq!(second.json["state"], "needs-attention", "{second}");
    let second = second.json["run_id"].as_str().unwrap().to_string();
    server.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while breached(&server, &second) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            kinds(&server, &second)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(breached(&server, &first), 1, "once");
    assert_eq!(breached(&server, &second), 1, "once");
    let status = server.get(&format!("/v1/runs/{second}")).json;
    assert_eq!(status["state"], "needs-attention", "still held: {status}");
}
