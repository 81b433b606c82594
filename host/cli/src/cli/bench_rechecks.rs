//! `settle bench --rechecks`: what checking settled runs again costs the
//! host. It settles N one-step runs of a flow with a `reconcile:` window
//! (100,000; 10,000 with `--quick`), lets their first check fall due, then
//! times the reconciler working through all of them: checks per second of
//! wall time and per second of the host's CPU (user + system), from which
//! the CPU an hour of checks costs at `every: 1h` follows.
//!
//! The plugin's `reconcile` is answered in the host (in sync, at once): the
//! figures are the host's side of a check (index read, summary read, the
//! commit of its events, the next due entry). A real check adds one plugin
//! call, as `instantiate + call` in the main bench measures it.
//!
//! Then drift detection: 2,000 runs (500 with `--quick`) of a flow checked
//! `every: 2s`, the reconciler running as in `settle serve`; a quarter of
//! them drift (their `reconcile` starts to answer `drifted`) at random
//! moments over 4 s. It reports the time from drift to the `run-drifted`
//! commit (p50/p99: bounded by `every` plus its spread, by design) and how
//! late that commit came after the check was due (the host's own delay).

use super::bench::BenchArgs;
use crate::app::Host;
use crate::config::Config;
use crate::engine::{Engine, EngineOptions};
use crate::flow::Flow;
use crate::model::RunState;
use crate::runtime::{
    CallKind, CallOutput, CallReport, CallRequest, Executor, PluginDescriptor, Runtime,
};
use anyhow::Context;
use serde::Serialize;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

const FLOW: &str = r#"
name: checked
version: "1"
reconcile: { after: 1s, every: 1h, for: 7d }
steps:
  - { name: one, plugin: noop, compensate: false }
"#;

const WATCHED: &str = r#"
name: watched
version: "1"
reconcile: { after: 1s, every: 2s, for: 30m }
steps:
  - { name: one, plugin: noop, compensate: false }
"#;

/// Runs whose downstream now disagrees, by run id.
type Drifted = Arc<std::sync::Mutex<std::collections::HashSet<String>>>;

/// The runtime, with every plugin said to reconcile and its `reconcile`
/// answered in the host: in sync, unless the run is in `drifted`.
#[derive(Clone)]
struct InSync {
    inner: Runtime,
    drifted: Drifted,
}

impl Executor for InSync {
    async fn call(&self, request: CallRequest) -> CallReport {
        if request.kind == CallKind::Reconcile {
            let drifted = self
                .drifted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&request.ctx.run_id);
            let verdict = if drifted {
                crate::model::Verdict::Drifted("changed behind Settle's back (bench)".into())
            } else {
                crate::model::Verdict::InSync
            };
            return CallReport {
                source: "bench-in-sync".into(),
                result: Ok(CallOutput::Reconciled(verdict)),
                denials: Vec::new(),
                duration: Duration::ZERO,
                downstream: Vec::new(),
                exchanges: Vec::new(),
            };
        }
        self.inner.invoke(request).await
    }
    fn plugin(&self, name: &str) -> Option<Arc<PluginDescriptor>> {
        let real = Executor::plugin(&self.inner, name)?;
        let mut manifest = real.manifest.clone();
        manifest.supports_reconcile = true;
        PluginDescriptor::new(
            real.name.clone(),
            real.source.clone(),
            real.digest.clone(),
            real.path.clone(),
            manifest,
            real.sandbox.clone(),
            real.from_cache,
            real.load_time,
        )
        .ok()
        .map(Arc::new)
    }
    fn plugins(&self) -> Vec<Arc<PluginDescriptor>> {
        Executor::plugins(&self.inner)
    }
}

#[derive(Serialize)]
struct Figures {
    runs: usize,
    /// Time to settle them (step, confirmation, first check scheduled).
    settle_seconds: f64,
    /// Time to check them all once, and the host CPU it took.
    check_seconds: f64,
    check_cpu_seconds: f64,
    checks_per_second: f64,
    checks_per_cpu_second: f64,
    /// Host CPU for one hour of checks of all runs at `every: 1h`.
    cpu_seconds_per_hour: f64,
    /// Passes of the reconciler (up to 256 checks each).
    passes: usize,
    detection: Detection,
}

/// How soon drift is found.
#[derive(Serialize, Default)]
struct Detection {
    runs: usize,
    every_ms: u64,
    drifted: usize,
    detected: usize,
    /// Drift made → `run-drifted` committed, milliseconds.
    found_p50_ms: u64,
    found_p99_ms: u64,
    /// The check's due time → `run-drifted` committed, milliseconds.
    late_p50_ms: u64,
    late_p99_ms: u64,
}

/// When each run's `run-drifted` was committed.
#[derive(Default)]
struct DriftSeen(std::sync::Mutex<std::collections::HashMap<String, Instant>>);

impl crate::model::observe::Observer for DriftSeen {
    fn committed(
        &self,
        _before: Option<RunState>,
        events: &[crate::model::Event],
        after: &crate::model::RunSummary,
    ) {
        if events
            .iter()
            .any(|e| matches!(e.kind, crate::model::EventKind::RunDrifted { .. }))
        {
            let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
            seen.entry(after.run_id.to_string())
                .or_insert_with(Instant::now);
        }
    }
}

pub async fn bench(base: &Config, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("settle-bench-rechecks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = base.clone();
    config.data_dir = dir.clone();
    config.cache_dir = Some(base.cache_dir());
    let result = match measure(&config, if args.quick { 10_000 } else { 100_000 }).await {
        Ok(mut f) => {
            let _ = std::fs::remove_dir_all(&dir);
            detection(&config, if args.quick { 500 } else { 2_000 })
                .await
                .map(|d| {
                    f.detection = d;
                    f
                })
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let f = result?;
    if args.json {
        super::print_json(&f)?;
    } else {
        outln!(
            "settle bench --rechecks: {} settled one-step runs in their reconcile: window, each checked once",
            f.runs
        );
        outln!(
            "(reconcile answered in the host: the host's side of a check; a real one adds a plugin call)"
        );
        outln!();
        outln!("settled in {:.1} s", f.settle_seconds);
        outln!(
            "checked all once in {:.2} s ({} passes): {:.0} checks/s, {:.2} s of host CPU",
            f.check_seconds,
            f.passes,
            f.checks_per_second,
            f.check_cpu_seconds
        );
        outln!(
            "{:.0} checks per second of host CPU: {} runs at every: 1h cost {:.1} s of CPU an hour ({:.2} % of one core)",
            f.checks_per_cpu_second,
            f.runs,
            f.cpu_seconds_per_hour,
            f.cpu_seconds_per_hour / 36.0
        );
        let d = &f.detection;
        outln!();
        outln!(
            "drift detection, {} runs checked every {} ms, {} drifted: {} detected",
            d.runs,
            d.every_ms,
            d.drifted,
            d.detected
        );
        outln!(
            "  drift made -> run-drifted committed: p50 {} ms, p99 {} ms (bounded by every + its spread)",
            d.found_p50_ms,
            d.found_p99_ms
        );
        outln!(
            "  check due -> run-drifted committed: p50 {} ms, p99 {} ms (the host's own delay)",
            d.late_p50_ms,
            d.late_p99_ms
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn measure(config: &Config, runs: usize) -> anyhow::Result<Figures> {
    let host = Host::start(config).await?;
    anyhow::ensure!(
        host.runtime.plugin_info("noop").is_some(),
        "the noop plugin is not installed: build the plugins (example-plugins/build.sh) or pass --plugins DIR"
    );
    let flow = Arc::new(Flow::parse(FLOW, "checked.yaml")?);
    let engine = Engine::new(
        host.store.clone(),
        InSync {
            inner: host.runtime.clone(),
            drifted: Drifted::default(),
        },
        EngineOptions {
            max_runs_in_flight: 1024,
            ..EngineOptions::default()
        },
    );
    let started = Instant::now();
    let ids = super::bench::submit_all(&engine, &flow, runs, 1024).await?;
    let settle_seconds = started.elapsed().as_secs_f64();
    let last = host
        .store
        .summary_now(*ids.last().context("no runs")?)?
        .context("the last run is not in the store")?;
    anyhow::ensure!(
        last.state == RunState::Settled && last.recheck.is_some(),
        "the runs did not settle with a check scheduled: {last:?}"
    );
    // Every run's first check falls due a second after it settled.
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let (mut checked, mut passes) = (0usize, 0usize);
    loop {
        let pass = engine.recheck_due(crate::engine::rechecks::BATCH).await?;
        if pass.due == 0 {
            break;
        }
        passes += 1;
        checked += pass.checked;
    }
    let check_seconds = started.elapsed().as_secs_f64();
    let check_cpu_seconds = (cpu_seconds() - cpu_before).max(0.01);
    anyhow::ensure!(
        checked == runs,
        "checked {checked} of {runs} runs; the rest were not due or were busy"
    );
    let checks_per_cpu_second = checked as f64 / check_cpu_seconds;
    // The store closes once nothing holds it.
    engine.shutdown().await;
    drop(engine);
    host.shutdown().await?;
    Ok(Figures {
        runs,
        settle_seconds,
        check_seconds,
        check_cpu_seconds,
        checks_per_second: checked as f64 / check_seconds,
        checks_per_cpu_second,
        cpu_seconds_per_hour: runs as f64 / checks_per_cpu_second,
        passes,
        detection: Detection::default(),
    })
}

async fn detection(config: &Config, runs: usize) -> anyhow::Result<Detection> {
    let host = Host::start(config).await?;
    let flow = Arc::new(Flow::parse(WATCHED, "watched.yaml")?);
    let every_ms = flow.rechecks.map_or(0, |r| r.every.as_millis() as u64);
    let drifted = Drifted::default();
    let engine = Engine::new(
        host.store.clone(),
        InSync {
            inner: host.runtime.clone(),
            drifted: drifted.clone(),
        },
        EngineOptions {
            max_runs_in_flight: 1024,
            ..EngineOptions::default()
        },
    );
    let seen = Arc::new(DriftSeen::default());
    engine.observe(seen.clone());
    let ids = super::bench::submit_all(&engine, &flow, runs, 1024).await?;
    let reconciler = engine.start_rechecks();
    // Let the checks settle into their rhythm, then drift a quarter of the
    // runs at random moments over 4 s.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let mut rng = fastrand::Rng::with_seed(11);
    let mut chosen: Vec<_> = ids.clone();
    rng.shuffle(&mut chosen);
    chosen.truncate(runs / 4);
    let mut at: Vec<(Duration, crate::model::RunId)> = chosen
        .into_iter()
        .map(|r| (Duration::from_millis(rng.u64(0..4_000)), r))
        .collect();
    at.sort();
    let started = Instant::now();
    // (run, drift made, the check that is due next, as an instant)
    let mut made = Vec::with_capacity(at.len());
    for (when, run) in at {
        if let Some(wait) = when.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let due_ms = host
            .store
            .summary_now(run)?
            .and_then(|s| s.recheck)
            .map(|r| r.due_ms);
        let now = Instant::now();
        let now_ms = crate::model::now_ms();
        drifted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run.to_string());
        let due = due_ms.map(|d| now + Duration::from_millis(d.saturating_sub(now_ms)));
        made.push((run.to_string(), now, due));
    }
    // Every drifted run is found within two rounds, or it is not.
    let deadline = Instant::now() + Duration::from_millis(2 * every_ms + 5_000);
    while seen.0.lock().unwrap_or_else(|p| p.into_inner()).len() < made.len()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen_at = seen.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let (mut found, mut late) = (Vec::new(), Vec::new());
    for (run, made_at, due) in &made {
        let Some(at) = seen_at.get(run) else { continue };
        found.push(at.saturating_duration_since(*made_at));
        // A check already under way when the drift was made answered in
        // sync: the one after is the one that finds it.
        if let Some(due) = due.filter(|d| d >= made_at) {
            late.push(at.saturating_duration_since(due));
        }
    }
    engine.shutdown().await;
    let _ = reconciler.await;
    drop(engine);
    host.shutdown().await?;
    let found = super::bench::percentiles(found);
    let late = super::bench::percentiles(late);
    Ok(Detection {
        runs,
        every_ms,
        drifted: made.len(),
        detected: found.samples,
        found_p50_ms: found.p50 / 1000,
        found_p99_ms: found.p99 / 1000,
        late_p50_ms: late.p50 / 1000,
        late_p99_ms: late.p99 / 1000,
    })
}

/// This process's CPU time so far (user + system), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold
    // spaces): utime and stime are the 12th and 13th from there.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Linux reports in clock ticks of 1/100 s on every platform we build for.
    (ticks(11) + ticks(12)) / 100.0
}
