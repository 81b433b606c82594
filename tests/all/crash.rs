//! Crash safety, in a test that can fail. `settle run` is killed with
//! SIGKILL at random moments while runs are in flight, some settling and
//! some being compensated, and the demo service is killed and restarted
//! under it. Then, without submitting any key again (the last pass is
//! `settle resume`):
//! - every run whose submission was acknowledged (the CLI's "run accepted"
//!   log line, read from its stderr before the kill) exists, is terminal and
//!   ended as its input asks (settled, or compensated); a key acknowledged
//!   twice named the same run both times;
//! - the demo service, which counts every request it received, applied no
//!   effect twice and no step's effect under two operation ids (grouped by
//!   the `RUN/STEP` prefix of the idempotency key, so the check holds
//!   whether an action's operation id is `RUN/STEP` or `RUN/STEP/ACTION`);
//! - every effect belongs to a run the store knows; a settled run's effects
//!   are in place, a compensated run's are undone, and no order was charged
//!   twice.

use crate::support::{self, Service};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// Orders in the input file; far more than the kill rounds get through.
const ORDERS: usize = 4000;
/// Every third order's `verify` step fails for good: that run compensates.
const COMPENSATE_EVERY: usize = 3;
/// Kills of `settle run` that must land while runs are unfinished.
const KILLS_WANTED: usize = 20;
/// Rounds are bounded: too few kills landing fails the test, never loops.
const MAX_ROUNDS: usize = 30;
/// Rounds in which the demo service is killed and restarted too.
const SERVICE_KILL_ROUNDS: [usize; 3] = [2, 9, 16];

/// charge → reserve → verify → confirm. `verify` (plugin `flaky`) takes its
/// mode from the input: `ok`, or `permanent`, which undoes reserve and charge.
/// Retries are generous so a restart of the demo service is waited out.
const FLOW: &str = r#"
name: crash-order
version: "1"
idempotency_window: 24h
defaults:
  timeout: 10s
  retry:
    max_attempts: 30
    initial_interval: 50ms
    backoff_coefficient: 2
    max_interval: 500ms
    jitter: 0.1
steps:
  - name: charge
    plugin: transfer
    input:
      from: ${{ input.customer }}
      to: shop
      amount: ${{ input.amount }}
  - name: reserve
    plugin: reserve-stock
    input:
      sku: ${{ input.sku }}
      quantity: ${{ input.quantity }}
  - name: verify
    plugin: flaky
    input:
      mode: ${{ input.verify }}
  - name: confirm
    plugin: notify
    input:
      to: ${{ input.customer }}
      text: "Order confirmed, paid with ${{ steps.charge.output.transfer_id }}"
"#;

fn compensates(order: usize) -> bool {
    order.is_multiple_of(COMPENSATE_EVERY)
}

/// Unique per order, so a transfer names its order.
fn amount(order: usize) -> i64 {
    100 + order as i64
}

fn key(order: usize) -> String {
    format!("order-{order}")
}

fn order_of_key(key: &str) -> usize {
    key.strip_prefix("order-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("acknowledged an unknown key {key:?}"))
}

/// `RUN/STEP` of an idempotency key `RUN/STEP[/ACTION]`.
fn step_prefix(key: &str) -> String {
    key.splitn(3, '/').take(2).collect::<Vec<_>>().join("/")
}

fn run_of_key(key: &str) -> &str {
    key.split('/').next().unwrap_or_default()
}

struct Harness {
    config: PathBuf,
    flow: PathBuf,
    inputs: PathBuf,
}

impl Harness {
    fn new(dir: &Path, service: &Service) -> Harness {
        let config = support::write_config(dir, Some(service));
        let flow = dir.join("crash-order.yaml");
        std::fs::write(&flow, FLOW).expect("write the flow");
        let inputs = dir.join("orders.jsonl");
        let lines: Vec<String> = (0..ORDERS)
            .map(|i| {
                let verify = if compensates(i) { "permanent" } else { "ok" };
                serde_json::json!({
                    "input": {"customer": format!("c{}", i % 7), "amount": amount(i),
                              "sku": "widget", "quantity": 1, "verify": verify},
                    "idempotency_key": key(i),
                })
                .to_string()
            })
            .collect();
        std::fs::write(&inputs, lines.join("\n")).expect("write the orders");
        Harness {
            config,
            flow,
            inputs,
        }
    }

    fn config(&self) -> &str {
        self.config.to_str().expect("UTF-8 path")
    }

    /// `settle run --inputs` over every order, logging acknowledgements as
    /// JSON to `log`. Orders already accepted get their existing run back.
    fn spawn_run(&self, log: &Path) -> Child {
        support::settle_command()
            .args(["run", self.flow.to_str().expect("UTF-8 path"), "--inputs"])
            .arg(&self.inputs)
            .args(["--concurrency", "32", "--quiet", "--log-format", "json"])
            .args(["--config", self.config()])
            .env("RUST_LOG", "warn,settle::cli::run=debug")
            .stdout(std::process::Stdio::null())
            .stderr(File::create(log).expect("create the log"))
            .spawn()
            .expect("start settle run")
    }

    /// Every run in the store, by run id.
    fn runs(&self) -> HashMap<String, Value> {
        let (code, out, err) = support::output_within(
            support::settle_command().args([
                "runs",
                "--json",
                "--limit",
                "100000",
                "--config",
                self.config(),
            ]),
            Duration::from_secs(30),
        );
        assert_eq!(code, 0, "settle runs: {err}");
        let runs: Vec<Value> = serde_json::from_str(&out).expect("settle runs --json");
        runs.into_iter()
            .map(|r| (r["run_id"].as_str().unwrap_or_default().to_string(), r))
            .collect()
    }
}

fn is_terminal(run: &Value) -> bool {
    matches!(
        run["state"].as_str(),
        Some("settled" | "compensated" | "drifted" | "needs-attention" | "cancelled")
    )
}

/// The acknowledgements in one `settle run` log: (idempotency key, run id).
/// Lines that are not JSON log lines (plain warnings) are skipped; only the
/// last line may be torn by the kill.
fn acknowledgements(log: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(log).expect("read the log");
    let lines: Vec<&str> = text.lines().collect();
    let mut acks = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        if !line.starts_with('{') {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(record) if record["message"] == "run accepted" => acks.push((
                record["idempotency_key"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
                record["run"].as_str().unwrap_or_default().into(),
            )),
            Ok(_) => {}
            Err(_) if n + 1 == lines.len() => {}
            Err(e) => panic!(
                "{}:{}: not a JSON log line ({e}): {line}",
                log.display(),
                n + 1
            ),
        }
    }
    acks
}

#[test]
fn sigkill_of_host_and_service_loses_no_acknowledged_run_and_duplicates_no_effect() {
    let started = Instant::now();
    let dir = support::tempdir();
    let mut service = Service::start(&dir.path().join("world"));
    let h = Harness::new(dir.path(), &service);
    let seed = std::env::var("SETTLE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let ms = Duration::from_millis;

    // Key → the run its submission was acknowledged with.
    let mut acked: HashMap<String, String> = HashMap::new();
    let (mut kills, mut compensating_kills, mut service_kills) = (0, 0, 0);
    for round in 0..MAX_ROUNDS {
        if kills >= KILLS_WANTED && compensating_kills > 0 && service_kills > 0 {
            break;
        }
        let log = dir.path().join(format!("settle-run-{round}.log"));
        let mut child = h.spawn_run(&log);
        std::thread::sleep(ms(rng.u64(200..700)));
        let service_killed = SERVICE_KILL_ROUNDS.contains(&round);
        if service_killed {
            service.crash_and_restart(ms(rng.u64(20..200)));
            std::thread::sleep(ms(rng.u64(100..300)));
        }
        let running = child.try_wait().expect("poll settle run").is_none();
        if running {
            child.kill().expect("SIGKILL settle run");
        }
        let status = child.wait().expect("reap settle run");
        for (key, run) in acknowledgements(&log) {
            let first = acked.entry(key.clone()).or_insert_with(|| run.clone());
            assert_eq!(
                *first, run,
                "key {key} was acknowledged as run {first}, later as {run}: an accepted run was lost (seed {seed})"
            );
        }
        // What the kill left behind: unfinished runs mean it landed mid-work.
        let runs = h.runs();
        let unfinished = runs.values().filter(|r| !is_terminal(r)).count();
        let compensating = runs
            .values()
            .filter(|r| r["state"] == "compensating")
            .count();
        assert!(
            running || unfinished > 0,
            "settle run ended by itself ({status}) after {kills} kills with all its work done: \
             make the work larger (seed {seed})"
        );
        if running && unfinished > 0 {
            kills += 1;
            compensating_kills += usize::from(compensating > 0);
            service_kills += usize::from(service_killed);
        }
    }
    assert!(
        kills >= KILLS_WANTED,
        "only {kills} of {MAX_ROUNDS} kills landed while runs were unfinished (seed {seed})"
    );
    assert!(
        compensating_kills > 0,
        "no kill landed while a run was being compensated (seed {seed})"
    );
    assert!(
        service_kills > 0,
        "the demo service was never killed mid-work (seed {seed})"
    );
    assert!(!acked.is_empty(), "no submission was acknowledged");

    // The last pass submits nothing: it finishes what the store holds.
    let (code, _, err) = support::output_within(
        support::settle_command().args(["resume", "--json", "--config", h.config()]),
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "settle resume (seed {seed}): {err}");
    let runs = h.runs();
    for run in runs.values() {
        assert!(is_terminal(run), "not terminal after resume: {run}");
    }
    for (key, run) in &acked {
        let Some(status) = runs.get(run) else {
            panic!("run {run} (key {key}) was acknowledged, then lost (seed {seed})");
        };
        let expected = if compensates(order_of_key(key)) {
            "compensated"
        } else {
            "settled"
        };
        assert_eq!(status["state"], expected, "{key}: {status} (seed {seed})");
    }

    check_requests(&service.requests(), &runs, seed);
    check_world(&service.state(), &runs, &acked, seed);

    let requests = service.requests();
    let rows = requests.as_array().expect("requests");
    let received: u64 = rows.iter().filter_map(|r| r["received"].as_u64()).sum();
    let applied: u64 = rows.iter().filter_map(|r| r["applied"].as_u64()).sum();
    eprintln!(
        "crash test: {kills} kills ({compensating_kills} during compensation, {service_kills} with the \
         demo service killed too), {} runs ({} acknowledged), {received} requests received for \
         {applied} effects, in {:.1} s (seed {seed})",
        runs.len(),
        acked.len(),
        started.elapsed().as_secs_f64(),
    );
}

/// Per (path, key) the service applied at most one change, and per step of
/// a run at most one key changed anything on each path; every key that
/// changed something belongs to a run in the store.
fn check_requests(requests: &Value, runs: &HashMap<String, Value>, seed: u64) {
    let mut keys_per_step: HashMap<(String, String), HashSet<String>> = HashMap::new();
    for row in requests.as_array().expect("GET /requests is a list") {
        let (path, key) = (
            row["path"].as_str().unwrap_or_default(),
            row["key"].as_str().unwrap_or_default(),
        );
        let applied = row["applied"].as_u64().unwrap_or_default();
        assert!(
            applied <= 1,
            "{path} applied key {key} {applied} times (seed {seed})"
        );
        if applied == 0 {
            continue;
        }
        assert!(
            runs.contains_key(run_of_key(key)),
            "{path} applied {key} for a run the store does not know (seed {seed})"
        );
        keys_per_step
            .entry((path.to_string(), step_prefix(key)))
            .or_default()
            .insert(key.to_string());
    }
    for ((path, step), keys) in keys_per_step {
        assert_eq!(
            keys.len(),
            1,
            "{step} changed {path} under several operation ids: {keys:?} (seed {seed})"
        );
    }
}

/// The outside world agrees with the store: one charge per order; a settled
/// run's charge, reservation and message in place; a compensated run's
/// charge refunded, reservation released, no message.
fn check_world(
    state: &Value,
    runs: &HashMap<String, Value>,
    acked: &HashMap<String, String>,
    seed: u64,
) {
    let by_run = |what: &str| -> HashMap<String, Vec<Value>> {
        let items: Vec<Value> = match &state[what] {
            Value::Object(map) => map.values().cloned().collect(),
            Value::Array(list) => list.clone(),
            other => panic!("state has no {what}: {other}"),
        };
        let mut by_run: HashMap<String, Vec<Value>> = HashMap::new();
        for item in items {
            let key = item["idempotency_key"].as_str().unwrap_or_default();
            by_run
                .entry(run_of_key(key).to_string())
                .or_default()
                .push(item);
        }
        by_run
    };
    let (transfers, reservations, messages) = (
        by_run("transfers"),
        by_run("reservations"),
        by_run("messages"),
    );

    let mut charged_orders = HashSet::new();
    for list in transfers.values() {
        for t in list {
            assert!(
                charged_orders.insert(t["amount"].as_i64()),
                "an order was charged twice: {t} (seed {seed})"
            );
        }
    }
    let mut shop = 0;
    for (run, status) in runs {
        let count = |of: &HashMap<String, Vec<Value>>| of.get(run).map_or(0, Vec::len);
        let one = |of: &HashMap<String, Vec<Value>>| of.get(run).and_then(|l| l.first()).cloned();
        match status["state"].as_str() {
            Some("settled") => {
                assert_eq!(
                    (count(&transfers), count(&reservations), count(&messages)),
                    (1, 1, 1),
                    "settled run {run}: one charge, reservation and message (seed {seed})"
                );
                let t = one(&transfers).unwrap_or_default();
                assert_eq!(t["refunded"], false, "settled run {run} refunded");
                let r = one(&reservations).unwrap_or_default();
                assert_eq!(r["released"], false, "settled run {run} released");
                shop += t["amount"].as_i64().unwrap_or_default();
            }
            Some("compensated") => {
                assert_eq!(count(&messages), 0, "compensated run {run} sent a message");
                for t in transfers.get(run).into_iter().flatten() {
                    assert_eq!(
                        t["refunded"], true,
                        "compensated run {run}: {t} (seed {seed})"
                    );
                }
                for r in reservations.get(run).into_iter().flatten() {
                    assert_eq!(
                        r["released"], true,
                        "compensated run {run}: {r} (seed {seed})"
                    );
                }
            }
            other => panic!("run {run} ended {other:?}: {status} (seed {seed})"),
        }
    }
    assert_eq!(
        state["accounts"]["shop"].as_i64().unwrap_or_default(),
        shop,
        "the shop holds exactly the settled runs' money (seed {seed})"
    );
    // An acknowledged run's charge is its own order's.
    for (key, run) in acked {
        if let Some(t) = transfers.get(run).and_then(|l| l.first()) {
            assert_eq!(
                t["amount"].as_i64(),
                Some(amount(order_of_key(key))),
                "run {run} of {key} charged another order's amount (seed {seed})"
            );
        }
    }
}
