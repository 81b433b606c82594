//! `settle run` and `settle resume`.

use super::jsonl::{self, Request};
use crate::app::{Host, HostEngine};
use crate::config::Config;
use crate::engine::status::RunStatus;
use crate::flow::{Flow, PluginFacts};
use crate::model::{RunId, RunState, RunSummary};
use anyhow::{Context, anyhow};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The flow file (YAML).
    flow: PathBuf,
    /// The run input, as JSON.
    #[arg(long, conflicts_with = "inputs")]
    input: Option<String>,
    /// Deduplicates: the same key for the same flow returns the same run.
    #[arg(long, conflicts_with = "inputs")]
    idempotency_key: Option<String>,
    /// One run per line: a JSON input, or {"input": ..., "idempotency_key": "..."}.
    #[arg(long)]
    inputs: Option<PathBuf>,
    /// Runs in progress at once with --inputs.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// What `settle run` prints for each run.
#[derive(Serialize)]
pub struct RunReport {
    #[serde(flatten)]
    pub status: RunStatus,
    /// True when the idempotency key named an earlier run.
    pub existing: bool,
    /// Output of each completed step, by step name.
    pub outputs: serde_json::Map<String, Value>,
}

impl RunReport {
    pub fn new(summary: &RunSummary, existing: bool) -> Self {
        let outputs = summary
            .steps
            .iter()
            .zip(&summary.outputs)
            .filter_map(|(name, out)| out.clone().map(|o| (name.clone(), o)))
            .collect();
        RunReport {
            status: RunStatus::new(summary, false, None, None),
            existing,
            outputs,
        }
    }
}

/// Loads a flow and checks it against the installed plugins; every problem
/// is printed with its place.
pub fn load_flow(host: &Host, path: &Path) -> anyhow::Result<Arc<Flow>> {
    let file = path.display().to_string();
    let flow = Flow::load(path)?;
    let installed: Vec<PluginFacts> = host
        .runtime
        .plugins()
        .iter()
        .map(|p| PluginFacts::of(p))
        .collect();
    flow.check_plugins(&file, &installed)?;
    // Nothing can reach this process to deliver them.
    if let Some(step) = flow
        .steps
        .iter()
        .find(|s| s.signal.is_some() || s.approval.is_some())
    {
        anyhow::bail!(
            "flow {}: step '{}' waits for a signal or an approval, which only a serving host can receive: run it with settle serve and settle submit",
            flow.id(),
            step.name
        );
    }
    Ok(Arc::new(flow))
}

fn parse_requests(args: &RunArgs) -> anyhow::Result<Vec<Request>> {
    if let Some(path) = &args.inputs {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        // Nothing is accepted unless every line is good.
        return jsonl::parse_lines(&text, &path.display().to_string())
            .map_err(|problems| anyhow!("no run was started:\n{}", problems.join("\n")));
    }
    let input = match &args.input {
        Some(text) => serde_json::from_str(text).context("--input is not valid JSON")?,
        None => Value::Object(Default::default()),
    };
    Ok(vec![Request {
        input,
        key: args.idempotency_key.clone(),
    }])
}

pub async fn run(config: &Config, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let requests = parse_requests(args)?;
    let host = start(config).await?;
    let flow = load_flow(&host, &args.flow)?;
    let single = args.inputs.is_none();
    let bars = MultiProgress::with_draw_target(if args.quiet {
        indicatif::ProgressDrawTarget::hidden()
    } else {
        indicatif::ProgressDrawTarget::stderr()
    });
    let overall = (!single).then(|| {
        let bar = bars.add(ProgressBar::new(requests.len() as u64));
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} runs finished {msg}")
                .unwrap_or(ProgressStyle::default_bar()),
        );
        bar
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, request) in requests.into_iter().enumerate() {
        let (engine, flow, slots) = (host.engine.clone(), flow.clone(), slots.clone());
        let bar = single.then(|| bars.add(ProgressBar::new_spinner()));
        tasks.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let result = run_one(&engine, &flow, request, bar).await;
            (i, result)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (i, result) = joined.context("a run task failed")?;
        if let Some(bar) = &overall {
            bar.inc(1);
        }
        results.push((i, result));
    }
    if let Some(bar) = overall {
        bar.finish();
    }
    results.sort_by_key(|(i, _)| *i);
    let mut all_settled = true;
    let mut held = false;
    for (_, result) in results {
        match result {
            Ok(report) => {
                all_settled &= report.status.state == RunState::Settled;
                held |= report.status.state == RunState::NeedsAttention;
                if single {
                    super::print_json(&report)?;
                } else {
                    outln!("{}", serde_json::to_string(&report)?);
                }
            }
            Err(e) => {
                all_settled = false;
                if single {
                    return Err(e);
                }
                outln!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            }
        }
    }
    Ok(if all_settled {
        ExitCode::SUCCESS
    } else if held {
        ExitCode::from(super::EXIT_HELD)
    } else {
        ExitCode::from(1)
    })
}

pub(super) async fn start(config: &Config) -> anyhow::Result<Host> {
    let host = Host::start(config).await?;
    report_start(&host);
    Ok(host)
}

/// Warns about plugins that did not load and runs that cannot be resumed.
fn report_start(host: &Host) {
    for e in &host.load_errors {
        eprintln!("warning: {e}");
    }
    for (run, why) in &host.resumed.stuck {
        eprintln!("warning: run {run} cannot be resumed: {why}");
    }
    for skipped in &host.resumed.unreadable {
        eprintln!("warning: {skipped}; skipped");
    }
    if !host.resumed.runs.is_empty() {
        eprintln!("resuming {} unfinished run(s)", host.resumed.runs.len());
    }
}

async fn run_one(
    engine: &HostEngine,
    flow: &Arc<Flow>,
    request: Request,
    bar: Option<ProgressBar>,
) -> anyhow::Result<RunReport> {
    let key = request.key.clone();
    let submitted = engine.submit(flow, request.input, request.key).await?;
    let run = submitted.run_id;
    // The acknowledgement, for whoever reads the logs (the crash test does):
    // from here on the run is durable and must never be lost.
    tracing::debug!(
        run = %run,
        idempotency_key = key.as_deref().unwrap_or(""),
        existing = submitted.existing,
        "run accepted"
    );
    let ticker = bar.map(|bar| {
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or(ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        let engine = engine.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(Some(status)) = engine.status(run).await {
                    bar.set_message(progress_line(&status));
                    if status.state.is_terminal() {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            bar.finish_and_clear();
        })
    });
    let summary = engine
        .wait(run)
        .await?
        .with_context(|| format!("run {run} is not in the store"))?;
    // The run ended, waits for an operator, or is not driven here at all:
    // the progress line has nothing more to show.
    if let Some(t) = ticker {
        t.abort();
        let _ = t.await;
    }
    Ok(RunReport::new(&summary, submitted.existing))
}

/// The progress bar's line for a run: its phrase, state and the plugin's
/// last progress report (`settle run`, and `settle submit --wait` from the
/// server's stream).
pub(super) fn progress_line(status: &RunStatus) -> String {
    let progress = status
        .progress
        .as_ref()
        .map(|p| format!("  {:.0}% {}", p.fraction * 100.0, p.message))
        .unwrap_or_default();
    format!("{}  [{}]{progress}", status.phrase, status.state)
}

/// Finishes every unfinished run, then prints what each ended as.
pub async fn resume(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let mut host = Host::start_with(config, crate::app::OnStart::Leave).await?;
    // Runs held because the host's setup failed, taken before anything is
    // driven (a run held again below must not be released by this command):
    // the operator says the setup is fixed by running it. A run whose setup
    // is still broken is held again, with the same cause.
    let held = host.engine.held_for_setup().await?;
    host.resumed = host.engine.resume().await?;
    report_start(&host);
    let mut runs: Vec<RunId> = host.resumed.runs.clone();
    for run in held {
        let command = super::operator::command(
            crate::model::OperatorAction::Resume,
            "settle resume: setup fixed",
            None,
        );
        match host.engine.act(run, command).await {
            Ok(_) => runs.push(run),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    let mut reports = Vec::new();
    for run in &runs {
        if let Some(summary) = host.engine.wait(*run).await? {
            reports.push(RunReport::new(&summary, true));
        }
    }
    if json {
        super::print_json(&reports)?;
    } else {
        outln!(
            "resumed {} run(s); {} cannot be resumed",
            runs.len(),
            host.resumed.stuck.len()
        );
        for r in &reports {
            outln!(
                "{}  {:<22} {}",
                r.status.run_id,
                r.status.state.as_str(),
                r.status.phrase
            );
        }
    }
    let held = reports
        .iter()
        .any(|r| r.status.state == RunState::NeedsAttention);
    Ok(if !host.resumed.stuck.is_empty() {
        ExitCode::from(1)
    } else if held {
        ExitCode::from(super::EXIT_HELD)
    } else {
        ExitCode::SUCCESS
    })
}
