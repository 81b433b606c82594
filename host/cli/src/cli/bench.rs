//! `settle bench`: figures for a 3-step flow of the `noop` plugin, every
//! step durable before it is acknowledged. Run it on a release build.
//!
//! - durable steps per second with 1, 64 and 1,024 runs in flight;
//! - per step, at 1 in flight: the whole cycle, the plugin call within it,
//!   and the host's own overhead (the rest: rendering, events, the durable
//!   commit);
//! - instantiate + call latency of a plugin (fresh pooled instance per call);
//! - resume of 10,000 unfinished runs: re-enqueueing them, and finishing them;
//! - peak memory (VmHWM).

use crate::app::Host;
use crate::config::Config;
use crate::engine::{Engine, EngineOptions};
use crate::flow::Flow;
use crate::model::now_ms;
use crate::runtime::{
    CallContext, CallKind, CallReport, CallRequest, Executor, PluginDescriptor, Runtime,
};
use anyhow::Context;
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// Fewer runs: a quick look, not figures to quote.
    #[arg(long)]
    pub quick: bool,
    /// Over HTTP: start a `settle serve` and measure it as its clients see it.
    #[arg(long)]
    http: bool,
    /// What checking settled runs again costs: 100,000 runs in their
    /// `reconcile:` window, each checked once.
    #[arg(long, conflicts_with = "http")]
    rechecks: bool,
    /// Plugins in other languages beside the Rust ones: size, load
    /// (compile, then from the cache) and instantiate + call, from
    /// example-plugins/dist and dist-other.
    #[arg(long, conflicts_with_all = ["http", "rechecks"])]
    languages: bool,
}

pub(super) const FLOW: &str = r#"
name: bench
version: "1"
steps:
  - { name: one, plugin: noop, compensate: false }
  - { name: two, plugin: noop, compensate: false }
  - { name: three, plugin: noop, compensate: false }
"#;

#[derive(Serialize, Default)]
struct Figures {
    /// What each commit waited for (`store.sync`).
    sync: crate::store::SyncMode,
    steps_per_second: Vec<Throughput>,
    step_cycle_us: Percentiles,
    plugin_call_in_step_us: Percentiles,
    host_overhead_per_step_us: Percentiles,
    instantiate_call_us: Percentiles,
    /// The expression evaluator's first load (compile, or the cache).
    expression_load_ms: u64,
    /// One step's jq expressions (3 programs) in a fresh sandboxed instance.
    expression_batch_us: Percentiles,
    resume_runs: usize,
    resume_enqueue_ms: u64,
    resume_until_all_settled_ms: u64,
    peak_rss_mib: f64,
}

#[derive(Serialize)]
struct Throughput {
    in_flight: usize,
    runs: usize,
    steps: usize,
    seconds: f64,
    steps_per_second: f64,
}

#[derive(Serialize, Default, Clone, Copy)]
pub(super) struct Percentiles {
    pub p50: u64,
    pub p99: u64,
    pub samples: usize,
}

pub(super) fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    if samples.is_empty() {
        return Percentiles::default();
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_micros() as u64;
    Percentiles {
        p50: at(0.5),
        p99: at(0.99),
        samples: samples.len(),
    }
}

/// When each call of a run started, and how long it took.
type CallTimes = Arc<Mutex<HashMap<String, Vec<(Instant, Duration)>>>>;

/// Wraps the runtime to time every call, by run.
#[derive(Clone)]
struct Timed {
    inner: Runtime,
    calls: CallTimes,
}

impl Executor for Timed {
    async fn call(&self, request: CallRequest) -> CallReport {
        let run = request.ctx.run_id.clone();
        let start = Instant::now();
        let report = self.inner.invoke(request).await;
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(run)
            .or_default()
            .push((start, start.elapsed()));
        report
    }
    fn plugin(&self, name: &str) -> Option<Arc<PluginDescriptor>> {
        Executor::plugin(&self.inner, name)
    }
    fn plugins(&self) -> Vec<Arc<PluginDescriptor>> {
        Executor::plugins(&self.inner)
    }
}

pub async fn bench(base: &Config, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    if args.http {
        return super::bench_http::bench(base, args).await;
    }
    if args.rechecks {
        return super::bench_rechecks::bench(base, args).await;
    }
    if args.languages {
        return super::bench_languages::bench(base, args).await;
    }
    let dir = std::env::temp_dir().join(format!("settle-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = base.clone();
    config.data_dir = dir.clone();
    config.cache_dir = Some(base.cache_dir());
    config.engine.max_runs_in_flight = 1024;
    let result = measure(&config, args).await;
    let _ = std::fs::remove_dir_all(&dir);
    let figures = result?;
    if args.json {
        super::print_json(&figures)?;
    } else {
        print_table(&figures);
    }
    Ok(ExitCode::SUCCESS)
}

async fn measure(config: &Config, args: &BenchArgs) -> anyhow::Result<Figures> {
    let scale = if args.quick { 10 } else { 1 };
    let mut figures = Figures {
        sync: config.store.sync,
        ..Figures::default()
    };
    let flow = Arc::new(Flow::parse(FLOW, "bench.yaml")?);
    {
        let host = Host::start(config).await?;
        anyhow::ensure!(
            host.runtime.plugin_info("noop").is_some(),
            "the noop plugin is not installed: build the plugins (example-plugins/build.sh) or pass --plugins DIR"
        );
        let timed = Timed {
            inner: host.runtime.clone(),
            calls: Default::default(),
        };
        let engine = Engine::new(
            host.store.clone(),
            timed.clone(),
            EngineOptions {
                max_runs_in_flight: 1024,
                ..EngineOptions::default()
            },
        );

        // First, while nothing else runs (no store work left over from a
        // throughput phase competes for the two cores).
        figures.instantiate_call_us = instantiate_call(&host.runtime, 2000 / scale).await;
        (figures.expression_load_ms, figures.expression_batch_us) =
            expressions(&host.runtime, 1000 / scale).await;

        // Per-step figures at 1 in flight.
        throughput(&engine, &flow, 1, 300 / scale).await?;
        let mut cycles = Vec::new();
        let mut calls = Vec::new();
        let mut overheads = Vec::new();
        for runs in timed
            .calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            for pair in runs.windows(2) {
                let cycle = pair[1].0 - pair[0].0;
                cycles.push(cycle);
                calls.push(pair[0].1);
                overheads.push(cycle.saturating_sub(pair[0].1));
            }
        }
        figures.step_cycle_us = percentiles(cycles);
        figures.plugin_call_in_step_us = percentiles(calls);
        figures.host_overhead_per_step_us = percentiles(overheads);

        for (in_flight, runs) in [(1, 300 / scale), (64, 4000 / scale), (1024, 20_000 / scale)] {
            figures
                .steps_per_second
                .push(throughput(&engine, &flow, in_flight, runs).await?);
        }

        // Accept 10,000 runs without driving them, as if the host died.
        let paused = Engine::new(
            host.store.clone(),
            host.runtime.clone(),
            EngineOptions {
                max_runs_in_flight: 1024,
                ..EngineOptions::default()
            },
        );
        paused.set_paused(true);
        figures.resume_runs = 10_000 / scale;
        submit_all(&paused, &flow, figures.resume_runs, 1024).await?;
    }
    // The host is gone; a new one resumes every run from the log.
    let started = Instant::now();
    let host = start_again(config).await?;
    figures.resume_enqueue_ms = started.elapsed().as_millis() as u64;
    anyhow::ensure!(
        host.resumed.runs.len() == figures.resume_runs,
        "resumed {} runs",
        host.resumed.runs.len()
    );
    for run in &host.resumed.runs {
        host.engine.wait(*run).await?;
    }
    figures.resume_until_all_settled_ms = started.elapsed().as_millis() as u64;
    figures.peak_rss_mib = peak_rss_mib();
    Ok(figures)
}

/// The store is released when the previous host's committer thread ends.
async fn start_again(config: &Config) -> anyhow::Result<Host> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Host::start(config).await {
            Ok(host) => return Ok(host),
            Err(e) if Instant::now() < deadline && e.to_string().contains("in use") => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => return Err(e),
        }
    }
}

pub(super) async fn submit_all<X: Executor>(
    engine: &Engine<crate::store::SledStore, X>,
    flow: &Arc<Flow>,
    runs: usize,
    in_flight: usize,
) -> anyhow::Result<Vec<crate::model::RunId>> {
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..runs {
        let (engine, flow, slots) = (engine.clone(), flow.clone(), slots.clone());
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let run = engine.submit(&flow, json!({}), None).await?.run_id;
            if !engine.is_paused() {
                engine.wait(run).await?;
            }
            anyhow::Ok(run)
        });
    }
    let mut ids = Vec::with_capacity(runs);
    while let Some(done) = tasks.join_next().await {
        ids.push(done.context("bench task")??);
    }
    Ok(ids)
}

async fn throughput<X: Executor>(
    engine: &Engine<crate::store::SledStore, X>,
    flow: &Arc<Flow>,
    in_flight: usize,
    runs: usize,
) -> anyhow::Result<Throughput> {
    let started = Instant::now();
    submit_all(engine, flow, runs, in_flight).await?;
    let seconds = started.elapsed().as_secs_f64();
    let steps = runs * flow.steps.len();
    Ok(Throughput {
        in_flight,
        runs,
        steps,
        seconds,
        steps_per_second: steps as f64 / seconds,
    })
}

/// The evaluator's first load, then `n` batches of a step's typical
/// expressions, each in a fresh sandboxed instance.
async fn expressions(runtime: &Runtime, n: usize) -> (u64, Percentiles) {
    let programs: Vec<String> = [
        "input.amount * 100",
        "[input.items[] | select(.qty > 0) | .sku]",
        "if input.amount > 100 then \"review\" else \"auto\" end",
    ]
    .map(String::from)
    .to_vec();
    let context = json!({
        "input": {"amount": 250, "items": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 0}]},
        "steps": {}, "run": {"id": "bench"}
    });
    let start = Instant::now();
    if let Err(e) = runtime.evaluate(&programs, &context).await {
        tracing::warn!("expressions failed: {e}");
    }
    let load_ms = start.elapsed().as_millis() as u64;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let answers = runtime.evaluate(&programs, &context).await;
        samples.push(start.elapsed());
        if !answers.as_ref().is_ok_and(|a| a.iter().all(Result::is_ok)) {
            tracing::warn!("expressions failed: {answers:?}");
        }
    }
    (load_ms, percentiles(samples))
}

/// Call number `i` of a bench's series: `kind` on `plugin`, outside any run,
/// each under its own operation id.
pub(super) fn bench_request(
    plugin: &str,
    kind: CallKind,
    i: usize,
    input: &str,
    output: Option<&str>,
) -> CallRequest {
    CallRequest {
        plugin: plugin.into(),
        kind,
        ctx: CallContext {
            run_id: "bench".into(),
            flow: "bench@1".into(),
            step: "one".into(),
            operation_id: format!("bench/{i}"),
            step_id: format!("bench/{i}"),
            attempt: 1,
            trace_id: "0".into(),
        },
        input: input.into(),
        output: output.map(str::to_string),
        timeout: None,
        progress: None,
        build: None,
    }
}

async fn instantiate_call(runtime: &Runtime, n: usize) -> Percentiles {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let request = bench_request("noop", CallKind::Run, i, "{}", None);
        let start = Instant::now();
        let report = runtime.invoke(request).await;
        samples.push(start.elapsed());
        if report.result.is_err() {
            tracing::warn!("noop call failed: {:?}", report.result);
        }
    }
    percentiles(samples)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn print_table(f: &Figures) {
    outln!(
        "settle bench: 3-step flow of the noop plugin, every step durable before it is acknowledged"
    );
    outln!(
        "(store.sync = {}; see README, \"How durable a commit is\")",
        serde_json::to_string(&f.sync).unwrap_or_default()
    );
    outln!(
        "(taken {}; medians of one run each: repeat and compare ratios on a shared machine)\n",
        super::time(now_ms())
    );
    for t in &f.steps_per_second {
        outln!(
            "{:>5} in flight: {:>8.0} durable steps/s   ({} runs, {} steps in {:.2} s)",
            t.in_flight,
            t.steps_per_second,
            t.runs,
            t.steps,
            t.seconds
        );
    }
    let line = |name: &str, p: &Percentiles| {
        outln!(
            "{name:<38} p50 {:>7} µs   p99 {:>7} µs   (n={})",
            p.p50,
            p.p99,
            p.samples
        )
    };
    outln!();
    line("step cycle at 1 in flight", &f.step_cycle_us);
    line("  plugin call within it", &f.plugin_call_in_step_us);
    line(
        "  host overhead (incl. durable commit)",
        &f.host_overhead_per_step_us,
    );
    line("instantiate + call (noop, pooled)", &f.instantiate_call_us);
    line(
        "jq expressions of one step (3, sandboxed)",
        &f.expression_batch_us,
    );
    outln!(
        "{:<38} {} ms (once per host; cached compiled after)",
        "  evaluator first load",
        f.expression_load_ms
    );
    outln!();
    outln!(
        "resume of {} unfinished runs: re-enqueued in {} ms, all settled after {} ms",
        f.resume_runs,
        f.resume_enqueue_ms,
        f.resume_until_all_settled_ms
    );
    outln!("peak memory (VmHWM): {:.0} MiB", f.peak_rss_mib);
}
