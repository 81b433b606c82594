//! Crash safety: `settle run` is killed with SIGKILL at random moments while
//! many runs are in flight, and restarted. In the end every accepted run is
//! terminal and the outside world holds no duplicate effect.

use crate::support::{self, Service};
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const RUNS: usize = 2000;
const KILLS: usize = 20;

#[test]
fn sigkill_at_random_moments_loses_nothing_and_duplicates_nothing() {
    let dir = support::tempdir();
    let service = Service::start(&dir.path().join("world"));
    let config = support::write_config(dir.path(), Some(&service));
    let flow = Path::new(env!("CARGO_MANIFEST_DIR")).join("../example-plugins/flows/order.yaml");
    let inputs = dir.path().join("orders.jsonl");
    let lines: Vec<String> = (0..RUNS)
        .map(|i| {
            serde_json::json!({
                "input": {"customer": format!("c{}", i % 7), "amount": 100 + i, "sku": "widget", "quantity": 1},
                "idempotency_key": format!("order-{i}"),
            })
            .to_string()
        })
        .collect();
    std::fs::write(&inputs, lines.join("\n")).unwrap();

    let seed = std::env::var("SETTLE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "run",
            flow.to_str().unwrap(),
            "--inputs",
            inputs.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(
            [
                "--concurrency",
                "32",
                "--config",
                config.to_str().unwrap(),
                "--quiet",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let started = Instant::now();
    // Each run makes 3 changes in the outside world; a kill counts only while
    // some of them are still to be made, i.e. while runs are in flight.
    let all_changes = 3 * RUNS as u64;
    let mut kills = 0;
    while kills < KILLS {
        let mut child = support::settle_command()
            .args(args(&[]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.u64(80..400)));
        let done = service.state()["requests"].as_u64().unwrap();
        assert!(
            done < all_changes,
            "the work finished after only {kills} kills: make it larger (seed {seed})"
        );
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
    }
    // The last start runs to the end.
    let out = support::settle_command().args(args(&[])).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "seed {seed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reports: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reports.len(), RUNS);
    assert!(
        reports.iter().all(|r| r["state"] == "settled"),
        "seed {seed}"
    );
    let ids: HashSet<&str> = reports
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), RUNS, "one run per idempotency key");

    // The store holds exactly those runs, all terminal.
    let (_, runs, _) = support::settle(&[
        "runs",
        "--json",
        "--limit",
        "100000",
        "--config",
        config.to_str().unwrap(),
    ])
    .unwrap();
    let runs: Vec<Value> = serde_json::from_str(&runs).unwrap();
    assert_eq!(runs.len(), RUNS, "no run lost, none doubled (seed {seed})");
    assert!(runs.iter().all(|r| r["state"] == "settled"));

    // The outside world: one transfer, reservation and message per run.
    let state = service.state();
    for (what, per_run) in [("transfers", 1), ("reservations", 1)] {
        let items = state[what].as_object().unwrap();
        assert_eq!(
            items.len(),
            RUNS * per_run,
            "{what}: duplicates or losses (seed {seed})"
        );
        let keys: HashSet<&str> = items
            .values()
            .map(|t| t["idempotency_key"].as_str().unwrap())
            .collect();
        assert_eq!(
            keys.len(),
            items.len(),
            "{what}: one effect per operation id"
        );
    }
    assert_eq!(state["messages"].as_array().unwrap().len(), RUNS);
    let total: i64 = (0..RUNS as i64).map(|i| 100 + i).sum();
    assert_eq!(
        state["accounts"]["shop"], total,
        "money moved exactly once per order"
    );
    eprintln!(
        "crash test: {kills} kills in {:.1} s, {} repeated requests deduplicated by the service (seed {seed})",
        started.elapsed().as_secs_f64(),
        state["deduplicated"]
    );
}
