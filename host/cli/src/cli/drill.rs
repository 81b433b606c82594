//! `settle drill --scenario FILE`: a synthetic workload against a host the
//! drill starts itself (`settle serve` as a child process, the demo service
//! with its drift hooks), with faults injected on a timetable: the host
//! killed with SIGKILL and started again, the downstream service down for a
//! while, records changed behind Settle's back. It then waits for every run
//! to stop moving and reports what happened — runs by end state, drift
//! injected / detected / repaired, time to settle, objective attainment,
//! duplicate effects found downstream, how often the announced expectation
//! held — and fails (exit 1) when a threshold of the scenario is missed.
//!
//! A scenario is TOML (see `example-plugins/drills/`):
//!
//! ```toml
//! name = "smoke"
//! duration = "4s"        # how long runs arrive
//! rate = 10              # runs per second
//! [[flow]]
//! file = "pay.yaml"      # next to the scenario
//! input = { customer = "ann", amount = 5 }
//! [[fault]]
//! at = "1s"
//! kind = "crash-host"    # crash-host | outage | latency (ms = 800) | drift
//! down = "500ms"
//! [thresholds]
//! min_settled = 0.9      # share of runs that settled
//! max_duplicates = 0
//! ```

use super::demo::grant_demo_service;
use super::serve_child::ServeChild as Serve;
use crate::config::Config;
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use settle_demo_service::{DemoService, Launcher};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct DrillArgs {
    /// The scenario (TOML).
    #[arg(long)]
    pub scenario: PathBuf,
    /// Also write the report here, as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    name: String,
    #[serde(with = "settle_types::duration_text")]
    duration: Duration,
    /// Runs per second (at most 1,000).
    rate: f64,
    #[serde(
        default = "default_settle_within",
        with = "settle_types::duration_text"
    )]
    settle_timeout: Duration,
    #[serde(rename = "flow")]
    flows: Vec<FlowMix>,
    #[serde(default, rename = "fault")]
    faults: Vec<Fault>,
    #[serde(default)]
    thresholds: Thresholds,
}

fn default_settle_within() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowMix {
    file: PathBuf,
    #[serde(default = "one")]
    weight: u32,
    #[serde(default)]
    input: toml::Table,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fault {
    #[serde(with = "settle_types::duration_text")]
    at: Duration,
    kind: FaultKind,
    /// crash-host, outage: how long it stays down.
    #[serde(default, with = "settle_types::duration_text::opt")]
    down: Option<Duration>,
    /// drift: how many settled runs to change behind Settle's back.
    #[serde(default)]
    count: Option<usize>,
    /// latency: how late every answer of the downstream is, milliseconds
    /// (for `down`).
    #[serde(default)]
    ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum FaultKind {
    CrashHost,
    Outage,
    Drift,
    /// The downstream answers `ms` late for `down`: a slow dependency.
    Latency,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Thresholds {
    /// Share of runs that must settle.
    min_settled: Option<f64>,
    /// Most effects applied twice downstream (0 unless broken).
    max_duplicates: Option<u64>,
    /// Share of injected drift that must be detected.
    min_drift_detected: Option<f64>,
    /// Share of injected drift that must be repaired (undone, or re-applied
    /// and confirmed again).
    min_drift_repaired: Option<f64>,
    /// Longest p99 accepted → finished, milliseconds.
    max_p99_ms: Option<u64>,
}

/// Shared between the arrivals and the fault injector.
type Shared<T> = std::sync::Arc<std::sync::Mutex<T>>;

/// What the drill found.
#[derive(Debug, Default, Serialize)]
struct Report {
    scenario: String,
    submitted: usize,
    settled: usize,
    compensated: usize,
    drifted: usize,
    held: usize,
    cancelled: usize,
    still_moving: usize,
    host_crashes: usize,
    outages: usize,
    slowdowns: usize,
    /// Drift the scenario asked for, and how much could be injected.
    drift_asked: usize,
    drift_injected: usize,
    drift_detected: usize,
    drift_repaired: usize,
    settle_p50_ms: u64,
    settle_p90_ms: u64,
    settle_p99_ms: u64,
    /// Transfers on the ledger beyond those the runs own, plus requests
    /// applied twice under one key (must be 0).
    duplicate_effects: u64,
    /// Runs beyond one per idempotency key submitted (must be 0).
    duplicate_runs: u64,
    /// Of the runs that were told how long runs usually take, the share
    /// that finished within it.
    eta_told: usize,
    eta_accuracy: Option<f64>,
    /// Per flow, from its guarantees (when it declares an objective).
    objective_attainment: std::collections::BTreeMap<String, Option<f64>>,
    thresholds: Thresholds,
    missed: Vec<String>,
}

pub async fn drill(config: &Config, args: &DrillArgs) -> anyhow::Result<ExitCode> {
    let config = config.clone();
    let scenario_path = args.scenario.clone();
    let report_path = args.report.clone();
    tokio::task::spawn_blocking(move || run(&config, &scenario_path, report_path.as_deref()))
        .await
        .context("the drill stopped")?
}

fn run(config: &Config, path: &Path, report_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the scenario {}", path.display()))?;
    let scenario: Scenario =
        toml::from_str(&text).with_context(|| format!("scenario {}", path.display()))?;
    anyhow::ensure!(
        scenario.rate > 0.0 && scenario.rate <= 1_000.0,
        "scenario {}: rate must be more than 0 and at most 1000 runs per second",
        path.display()
    );
    anyhow::ensure!(
        !scenario.flows.is_empty(),
        "scenario {}: no [[flow]]",
        path.display()
    );
    anyhow::ensure!(
        scenario
            .flows
            .iter()
            .all(|f| (1..=1_000).contains(&f.weight)),
        "scenario {}: a flow's weight is 1 to 1000",
        path.display()
    );
    anyhow::ensure!(
        scenario.settle_timeout <= Duration::from_secs(3_600),
        "scenario {}: settle_timeout is at most 1h",
        path.display()
    );
    for f in &scenario.faults {
        anyhow::ensure!(
            f.down.is_none_or(|d| d <= Duration::from_secs(600))
                && f.count.is_none_or(|c| (1..=10_000).contains(&c)),
            "scenario {}: a fault's `down` is at most 10m and its `count` 1 to 10000",
            path.display()
        );
    }
    anyhow::ensure!(
        scenario.duration <= Duration::from_secs(3_600),
        "scenario {}: duration is at most 1h",
        path.display()
    );
    let base = path.parent().unwrap_or(Path::new("."));
    let dir = std::env::temp_dir().join(format!("settle-drill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("flows"))?;
    let mut names = Vec::new();
    for mix in &scenario.flows {
        let file = base.join(&mix.file);
        let flow = settle_flow::Flow::load(&file)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("scenario {}: flow {}", path.display(), file.display()))?;
        std::fs::copy(&file, dir.join("flows").join(format!("{}.yaml", flow.name)))?;
        names.push(flow.name);
    }

    let exe = std::env::current_exe().context("cannot find this settle binary")?;
    let mut service = DemoService::start(
        Launcher {
            program: exe.clone(),
            args: vec!["demo-service".into(), "--drift-hooks".into()],
        },
        &dir.join("world"),
    )?;
    let mut serve_config = config.clone();
    serve_config.data_dir = dir.join("data");
    serve_config.cache_dir = Some(config.cache_dir());
    grant_demo_service(&mut serve_config, &service.base_url);
    // The drill's own crashes and drift must not page anyone.
    serve_config.alerts = Default::default();
    write_private(&dir.join("settle.toml"), &toml::to_string(&serve_config)?)?;
    let mut host = serve(&dir, "127.0.0.1:0")?;
    let http: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();

    let mut report = Report {
        scenario: scenario.name.clone(),
        ..Report::default()
    };
    // (run, flow, announced usual time), shared with the faults.
    let runs: Shared<Vec<(String, String, Option<u64>)>> = Shared::default();
    let addr = host.addr.clone();
    let mut faults: Vec<Fault> = scenario.faults;
    faults.sort_by_key(|f| f.at);
    let started = Instant::now();
    // Faults run on their own thread, on their timetable, while runs keep
    // arriving: a crash finds runs in flight, as it would in production.
    let injector = {
        let (runs, http, dir) = (runs.clone(), http.clone(), dir.clone());
        std::thread::spawn(
            move || -> anyhow::Result<(Serve, DemoService, Report, Vec<String>)> {
                let mut tally = Report::default();
                let mut drifted = Vec::new();
                for f in &faults {
                    if let Some(wait) = f.at.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    let snapshot = runs.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    inject(
                        f,
                        &mut host,
                        &mut service,
                        &dir,
                        &http,
                        &snapshot,
                        &mut drifted,
                        &mut tally,
                    )?;
                }
                Ok((host, service, tally, drifted))
            },
        )
    };
    let mut rng = fastrand::Rng::with_seed(7);
    let total_weight: u32 = scenario.flows.iter().map(|f| f.weight).sum();
    let interval = Duration::from_secs_f64(1.0 / scenario.rate);
    let mut next = started;
    let mut i = 0usize;
    while started.elapsed() < scenario.duration {
        let mut pick = rng.u32(0..total_weight);
        let (mix, flow) = scenario
            .flows
            .iter()
            .zip(&names)
            .find(|(m, _)| {
                let w = m.weight;
                if pick < w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .unwrap_or((&scenario.flows[0], &names[0]));
        let input = serde_json::to_value(&mix.input)?;
        let key = format!("drill-{i}");
        i += 1;
        if let Some(run) = submit(&http, &addr, flow, &key, &input)? {
            let told = status(&http, &addr, &run)
                .ok()
                .and_then(|s| s["expectation"]["usually_within_ms"].as_u64());
            runs.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((run, flow.to_string(), told));
        }
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let (host, service, tally, drifted_runs) = injector
        .join()
        .map_err(|_| anyhow::anyhow!("the fault injector panicked"))??;
    report.host_crashes = tally.host_crashes;
    report.outages = tally.outages;
    report.slowdowns = tally.slowdowns;
    report.drift_asked = tally.drift_asked;
    report.drift_injected = tally.drift_injected;
    let runs = std::mem::take(&mut *runs.lock().unwrap_or_else(|p| p.into_inner()));
    report.submitted = runs.len();

    // Every run stops moving, and every injected drift is found (or time
    // runs out).
    let deadline = Instant::now() + scenario.settle_timeout;
    let finals: Vec<Value> = loop {
        let mut finals: Vec<Value> = Vec::with_capacity(runs.len());
        for (run, _, _) in &runs {
            if Instant::now() > deadline {
                break;
            }
            finals.push(status(&http, &addr, run).unwrap_or(Value::Null));
        }
        finals.resize(runs.len(), Value::Null);
        let moving = finals
            .iter()
            // Stopped: ended, or held for an operator (a pending retry
            // timer is "waiting" too, and still moving).
            .filter(|s| s["stage"] != "done" && s["state"] != "needs-attention")
            .count();
        let undetected = drifted_runs
            .iter()
            .filter(|r| {
                status(&http, &addr, r)
                    .map(|s| !drift_found(&s))
                    .unwrap_or(true)
            })
            .count();
        if (moving == 0 && undetected == 0) || Instant::now() > deadline {
            break finals;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let mut latencies = Vec::new();
    let (mut told, mut kept) = (0usize, 0usize);
    for (s, (_, _, announced)) in finals.iter().zip(&runs) {
        match s["state"].as_str().unwrap_or("") {
            "settled" => report.settled += 1,
            "compensated" => report.compensated += 1,
            "drifted" => report.drifted += 1,
            "needs-attention" => report.held += 1,
            "cancelled" => report.cancelled += 1,
            _ => report.still_moving += 1,
        }
        if let (Some(a), Some(f), true) = (
            s["accepted_at_ms"].as_u64(),
            s["finished_at_ms"].as_u64(),
            s["state"] == "settled",
        ) {
            let took = f.saturating_sub(a);
            latencies.push(took);
            if let Some(within) = announced {
                told += 1;
                kept += usize::from(took <= *within);
            }
        }
    }
    report.eta_told = told;
    report.eta_accuracy = (told > 0).then(|| kept as f64 / told as f64);
    latencies.sort_unstable();
    let pct = |p: usize| {
        latencies
            .get((latencies.len() * p).div_ceil(100).saturating_sub(1))
            .copied()
            .unwrap_or(0)
    };
    (
        report.settle_p50_ms,
        report.settle_p90_ms,
        report.settle_p99_ms,
    ) = (pct(50), pct(90), pct(99));
    for run in &drifted_runs {
        let s = status(&http, &addr, run).unwrap_or(Value::Null);
        report.drift_detected += usize::from(drift_found(&s));
        // Undone, or put back and confirmed again by a re-apply.
        let reapplied = s["reapplies"].as_u64().unwrap_or(0) > 0 && s["state"] == "settled";
        report.drift_repaired += usize::from(s["state"] == "compensated" || reapplied);
    }
    // Duplicates, seen from both sides: a key that started a second run
    // (the store), and transfers on the ledger that no run owns.
    let mut listed = 0usize;
    for flow in &names {
        listed += count_runs(&http, &addr, flow)?;
    }
    report.duplicate_runs = listed.saturating_sub(runs.len()) as u64;
    let owned = finals
        .iter()
        .filter(|s| {
            s["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|st| st["output"]["transfer_id"].is_string())
        })
        .count();
    let on_ledger = service.state()?["transfers"]
        .as_object()
        .map_or(0, serde_json::Map::len);
    let applied_twice = service.requests()?.as_array().map_or(0, |rows| {
        rows.iter()
            .filter(|r| r["applied"].as_u64().unwrap_or(0) > 1)
            .count()
    });
    report.duplicate_effects = (on_ledger.saturating_sub(owned) + applied_twice) as u64;
    for flow in &names {
        let g = get(&http, &addr, &format!("/v1/flows/{flow}/guarantees")).unwrap_or(Value::Null);
        report
            .objective_attainment
            .insert(flow.clone(), g["objective"]["attainment"].as_f64());
    }
    report.thresholds = scenario.thresholds;
    judge(&mut report);
    drop(host);
    print(&report);
    if let Some(p) = report_path {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(if report.missed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[allow(clippy::too_many_arguments)]
fn inject(
    fault: &Fault,
    host: &mut Serve,
    service: &mut DemoService,
    dir: &Path,
    http: &ureq::Agent,
    runs: &[(String, String, Option<u64>)],
    drifted: &mut Vec<String>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let down = fault.down.unwrap_or(Duration::from_millis(500));
    match fault.kind {
        FaultKind::CrashHost => {
            let addr = host.addr.clone();
            host.kill9();
            std::thread::sleep(down);
            *host = serve(dir, &addr)?;
            report.host_crashes += 1;
        }
        FaultKind::Outage => {
            service.crash_and_restart(down)?;
            report.outages += 1;
        }
        FaultKind::Latency => {
            let ms = fault.ms.unwrap_or(1_000);
            let reply = http
                .post(&format!(
                    "{}{}",
                    service.base_url,
                    settle_demo_service::LATENCY_HOOK
                ))
                .send_json(json!({"ms": ms, "for_ms": down.as_millis() as u64}))?;
            anyhow::ensure!(
                reply.status().is_success(),
                "the demo service refused the latency fault: {}",
                reply.status()
            );
            report.slowdowns += 1;
        }
        FaultKind::Drift => {
            let want = fault.count.unwrap_or(1);
            report.drift_asked += want;
            for (run, _, _) in runs.iter().rev() {
                if drifted.len() >= want + report.drift_injected {
                    break;
                }
                let s = status(http, &host.addr, run).unwrap_or(Value::Null);
                if s["state"] != "settled" || drifted.contains(run) {
                    continue;
                }
                let id = s["steps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find_map(|st| st["output"]["transfer_id"].as_str().map(str::to_string));
                let Some(id) = id else { continue };
                let reply = http
                    .post(&format!("{}/drift/transfers", service.base_url))
                    .header("Idempotency-Key", &format!("drill-drift-{run}"))
                    .send_json(json!({"transfer_id": id, "amount": 1}))?;
                if reply.status().is_success() {
                    drifted.push(run.clone());
                }
            }
            report.drift_injected = drifted.len();
        }
    }
    Ok(())
}

/// Whether a run whose record was changed shows the drift was found:
/// drifted, being or been undone, or re-applied.
fn drift_found(status: &Value) -> bool {
    matches!(
        status["state"].as_str(),
        Some("drifted" | "compensating" | "compensated")
    ) || status["reapplies"].as_u64().unwrap_or(0) > 0
}

fn judge(report: &mut Report) {
    let t = &report.thresholds;
    let mut missed = Vec::new();
    let share = |n: usize, of: usize| if of == 0 { 1.0 } else { n as f64 / of as f64 };
    if let Some(min) = t.min_settled {
        let got = share(report.settled, report.submitted);
        if got < min {
            missed.push(format!("settled {got:.3} of the runs, below {min}"));
        }
    }
    if let Some(max) = t.max_duplicates
        && report.duplicate_effects + report.duplicate_runs > max
    {
        missed.push(format!(
            "{} duplicate effects downstream and {} duplicate runs, above {max}",
            report.duplicate_effects, report.duplicate_runs
        ));
    }
    if let Some(min) = t.min_drift_detected {
        let got = share(report.drift_detected, report.drift_injected);
        if got < min {
            missed.push(format!(
                "detected {got:.3} of the injected drift, below {min}"
            ));
        }
    }
    if let Some(min) = t.min_drift_repaired {
        let got = share(report.drift_repaired, report.drift_injected);
        if got < min {
            missed.push(format!(
                "repaired {got:.3} of the injected drift, below {min}"
            ));
        }
    }
    if report.drift_injected < report.drift_asked {
        missed.push(format!(
            "injected {} of the {} drifts asked for (too few settled runs with a transfer)",
            report.drift_injected, report.drift_asked
        ));
    }
    if let Some(max) = t.max_p99_ms
        && report.settle_p99_ms > max
    {
        missed.push(format!(
            "p99 time to finish {} ms, above {max} ms",
            report.settle_p99_ms
        ));
    }
    if report.submitted == 0 {
        missed.push("no run was submitted".into());
    }
    report.missed = missed;
}

fn print(r: &Report) {
    outln!("drill {}: {} runs submitted", r.scenario, r.submitted);
    outln!(
        "  settled {}, compensated {}, drifted {}, held {}, cancelled {}, still moving {}",
        r.settled,
        r.compensated,
        r.drifted,
        r.held,
        r.cancelled,
        r.still_moving
    );
    outln!(
        "  faults: {} host crash(es), {} downstream outage(s), {} slow downstream period(s)",
        r.host_crashes,
        r.outages,
        r.slowdowns
    );
    outln!(
        "  drift: injected {}, detected {}, repaired {}",
        r.drift_injected,
        r.drift_detected,
        r.drift_repaired
    );
    outln!(
        "  time to finish: p50 {} ms, p90 {} ms, p99 {} ms",
        r.settle_p50_ms,
        r.settle_p90_ms,
        r.settle_p99_ms
    );
    outln!(
        "  duplicates: {} effects downstream, {} runs for one key",
        r.duplicate_effects,
        r.duplicate_runs
    );
    match r.eta_accuracy {
        Some(a) => outln!(
            "  expectation kept: {:.1} % of {} runs told one",
            a * 100.0,
            r.eta_told
        ),
        None => outln!("  expectation kept: no run was told one (too little history)"),
    }
    for (flow, a) in &r.objective_attainment {
        if let Some(a) = a {
            outln!("  objective of {flow}: {:.1} % attained", a * 100.0);
        }
    }
    if r.missed.is_empty() {
        outln!("  every threshold met");
    } else {
        for m in &r.missed {
            outln!("  MISSED: {m}");
        }
    }
}

fn submit(
    http: &ureq::Agent,
    addr: &str,
    flow: &str,
    key: &str,
    input: &Value,
) -> anyhow::Result<Option<String>> {
    // A client retries with the same key while the host is away: one run.
    for _ in 0..200 {
        let sent = http
            .post(&format!("http://{addr}/v1/flows/{flow}/runs"))
            .header("Idempotency-Key", key)
            .send_json(input);
        match sent {
            Ok(mut r) if r.status().is_success() => {
                let body: Value = r.body_mut().read_json()?;
                return Ok(body["run_id"].as_str().map(str::to_string));
            }
            Ok(r) if r.status().as_u16() < 500 && r.status().as_u16() != 429 => {
                bail!("POST /v1/flows/{flow}/runs answered {}", r.status())
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    Ok(None)
}

/// Runs of `flow` in the store, every page.
fn count_runs(http: &ureq::Agent, addr: &str, flow: &str) -> anyhow::Result<usize> {
    let mut count = 0;
    let mut cursor = String::new();
    for _ in 0..10_000 {
        let page = get(
            http,
            addr,
            &format!("/v1/runs?flow={flow}&limit=500{cursor}"),
        )?;
        count += page["runs"].as_array().map_or(0, Vec::len);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return Ok(count),
        }
    }
    bail!("too many pages of runs of {flow}")
}

fn status(http: &ureq::Agent, addr: &str, run: &str) -> anyhow::Result<Value> {
    get(http, addr, &format!("/v1/runs/{run}"))
}

fn get(http: &ureq::Agent, addr: &str, path: &str) -> anyhow::Result<Value> {
    for _ in 0..100 {
        if let Ok(mut r) = http.get(&format!("http://{addr}{path}")).call()
            && r.status().is_success()
        {
            return Ok(r.body_mut().read_json()?);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("GET {path}: no answer")
}

/// Writes `text` readable by this user only (it may hold grants).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// `settle serve` over the drill's directory, listening on `listen`.
fn serve(dir: &Path, listen: &str) -> anyhow::Result<Serve> {
    let args: Vec<std::ffi::OsString> = vec![
        "--config".into(),
        dir.join("settle.toml").into(),
        "--listen".into(),
        listen.into(),
        "--flows".into(),
        dir.join("flows").into(),
    ];
    Serve::start(&args, &dir.join("serve.log"))
}
