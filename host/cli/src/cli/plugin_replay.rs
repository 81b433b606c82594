//! `settle plugin replay RUN STEP --plugin NEW.wasm`: calls `run` of a new
//! build of a step's plugin with what the recorded step was given (its
//! input, as rendered from the run's log, its ids and attempt), in a
//! dry-run sandbox: no request leaves the host; each is answered with the
//! recorded exchange for its method and URL (`record_exchanges` in the
//! plugin's settings), others fail as refused. kv reads see the store as
//! it is now; writes are dropped. Then it compares the new output with
//! the recorded one, field by field. Exit 0 when they agree, 1 when they
//! differ (or the new build fails), 2 when the replay cannot be made.

use super::read::parse_run;
use crate::app::open_store;
use crate::config::Config;
use crate::model::{Action, EventKind, RunSummary};
use crate::runtime::stand_in::{Scripted, StandIn};
use crate::runtime::{CallContext, CallKind, CallOutput, CallRequest, KvUsage, KvWrite, PluginKv};
use anyhow::{Context, bail};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// The run (its id).
    pub run: String,
    /// The step's name.
    pub step: String,
    /// The new build to replay the step with.
    #[arg(long)]
    pub plugin: PathBuf,
    /// For a `for_each` step, the item's position; for a `parallel` step,
    /// the branch's name.
    #[arg(long)]
    pub item: Option<String>,
}

/// kv as the store has it now; a replay's writes are dropped.
struct ReadOnlyKv(Arc<dyn PluginKv>);

impl PluginKv for ReadOnlyKv {
    fn get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.0.get(plugin, key)
    }
    fn usage(&self, plugin: &str) -> Result<KvUsage, String> {
        self.0.usage(plugin)
    }
    fn apply(&self, _: &str, _: &[KvWrite]) -> Result<(), String> {
        Ok(())
    }
}

pub async fn replay(config: &Config, args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    let run = parse_run(&args.run)?;
    let store = open_store(config)?;
    let queries = settle_engine::queries::Queries::offline(store.clone());
    let events = queries.events(run).await?;
    let summary = settle_types::store::RunLog::summary(&store, run)
        .await?
        .with_context(|| format!("no run {run}"))?;
    let text = settle_types::store::RunLog::get_flow(&store, &summary.flow_digest)
        .await?
        .with_context(|| format!("the flow of run {run} is not in the store"))?;
    let flow = crate::flow::Flow::parse(&text, &summary.flow)
        .map_err(|e| anyhow::anyhow!("the run's flow no longer parses: {e}"))?;
    let index = flow
        .steps
        .iter()
        .position(|s| s.name == args.step)
        .with_context(|| {
            let names: Vec<_> = flow.steps.iter().map(|s| s.name.as_str()).collect();
            format!(
                "run {run} has no step '{}'; its steps: {}",
                args.step,
                names.join(", ")
            )
        })?;
    let step = &flow.steps[index];
    if !step.calls_plugin() {
        bail!("step '{}' calls no plugin: nothing to replay", step.name);
    }
    // Which call: the step's, or one item's or branch's.
    let (call, item, position) = match (&step.for_each, &step.parallel, &args.item) {
        (None, None, None) => (step, None, None),
        (None, None, Some(_)) => bail!("step '{}' has no items: leave out --item", step.name),
        (_, _, None) => bail!(
            "step '{}' calls its plugin per item: name one with --item (a position, or a branch's name)",
            step.name
        ),
        (_, Some(p), Some(name)) => {
            let at = p
                .branches
                .iter()
                .position(|b| &b.name == name)
                .with_context(|| format!("step '{}' has no branch '{name}'", step.name))?;
            (&p.branches[at].call, None, Some(at as u32))
        }
        (Some(_), None, Some(n)) => {
            let at: u32 = n
                .parse()
                .context("--item of a for_each step is a position")?;
            (step, Some(at), Some(at))
        }
    };
    // What the call gave, and the attempt that gave it (from its event's
    // envelope); a step that never completed is replayed as its last
    // attempt, to debug it.
    let completed = events.iter().rev().find_map(|e| match (&e.kind, position) {
        (
            EventKind::StepCompleted {
                index: i, output, ..
            },
            None,
        ) if *i as usize == index => Some((output.clone(), e.attempt)),
        (
            EventKind::ItemCompleted {
                index: i,
                item,
                output,
            },
            Some(p),
        ) if *i as usize == index && *item == p => Some((output.clone(), e.attempt)),
        _ => None,
    });
    let recorded = events.iter().rev().find_map(|e| match &e.kind {
        EventKind::ExchangesRecorded {
            index: i,
            item,
            attempt,
            exchanges,
        } if *i as usize == index
            && *item == position
            && completed
                .as_ref()
                .is_none_or(|(_, a)| a.is_none_or(|a| a == *attempt)) =>
        {
            Some((*attempt, exchanges.clone()))
        }
        _ => None,
    });
    let attempt = completed
        .as_ref()
        .and_then(|(_, a)| *a)
        .or(recorded.as_ref().map(|(a, _)| *a))
        .unwrap_or(1);
    let recorded_output = completed.map(|(o, _)| o);
    let exchanges = recorded.map(|(_, x)| x).unwrap_or_default();
    let stand_in = Arc::new(StandIn::new(crate::model::now_ms()));
    let truncated = exchanges.iter().filter(|x| x.truncated).count();
    stand_in.script(exchanges.iter().filter_map(|x| {
        Some(Scripted {
            method: x.method.clone(),
            url: x.url.clone(),
            status: x.status?,
            headers: Vec::new(),
            body: x.response_body.clone(),
            times: 1,
        })
    }));
    let kv = Arc::new(ReadOnlyKv(Arc::new(store.clone())));
    let (runtime, name) = super::plugin_session::stand_in_runtime(
        config,
        &args.plugin,
        |name| {
            // The operator's grants and limits; not a pin to the build
            // installed, which the new build is not.
            let mut settings = config.plugins.get(name).cloned().unwrap_or_default();
            settings.file = None;
            settings.digest = None;
            settings
        },
        stand_in.clone(),
        kv,
    )
    .await?;
    if name != call.plugin {
        outln!(
            "note: {} is plugin '{name}'; step '{}' calls '{}'",
            args.plugin.display(),
            args.step,
            call.plugin
        );
    }
    let input = render_input(&runtime, &summary, &flow, index, call, item).await?;
    let described = runtime
        .plugin_info(&name)
        .context("the new build is not loaded")?;
    if let Err(problems) = described.check_input(&input) {
        outln!("input does not match the new build's input schema: {problems}");
        return Ok(ExitCode::from(1));
    }
    let suffix = match (&step.parallel, position) {
        (Some(p), Some(at)) => format!("/{}", p.branches[at as usize].name),
        (None, Some(at)) => format!("/{at}"),
        _ => String::new(),
    };
    let operation_id = summary
        .operation_id(index, Action::Run)
        .map(crate::model::OperationId::into_string)
        .unwrap_or_default();
    let request = CallRequest {
        plugin: name.clone(),
        kind: CallKind::Run,
        ctx: CallContext {
            run_id: summary.run_id.to_string(),
            flow: flow.id(),
            step: step.name.clone(),
            operation_id: format!("{operation_id}{suffix}"),
            step_id: format!(
                "{}{suffix}",
                crate::model::step_id(summary.run_id, &step.name)
            ),
            attempt,
            trace_id: summary.run_id.trace_id(),
        },
        input: input.to_string(),
        output: None,
        timeout: call.timeout,
        progress: None,
        build: None,
    };
    outln!(
        "replaying step '{}' of run {run} (attempt {attempt}) with {} in a dry run",
        args.step,
        args.plugin.display()
    );
    outln!("input:    {input}");
    outln!(
        "recorded exchanges: {}{}",
        exchanges.len(),
        if truncated > 0 {
            format!(" ({truncated} cut short when recorded: their answers are partial)")
        } else if exchanges.is_empty() {
            format!(
                " (set record_exchanges = true in [plugins.{}] to record them)",
                call.plugin
            )
        } else {
            String::new()
        }
    );
    let report = runtime.invoke(request).await;
    // The requests it sent, against those recorded: same method, URL and
    // body, in order.
    let mut differences = Vec::new();
    let sent = stand_in.take_requests();
    for (i, r) in sent.iter().enumerate() {
        outln!(
            "request:  {} {} ({})",
            r.method,
            r.url,
            if r.answered {
                "answered as recorded"
            } else {
                "no recorded answer: refused"
            }
        );
        match exchanges.get(i) {
            None => differences.push(format!(
                "request {}: {} {} was not made by the recorded call",
                i + 1,
                r.method,
                r.url
            )),
            Some(x) if x.method != r.method || x.url != r.url => differences.push(format!(
                "request {}: {} {} → {} {}",
                i + 1,
                x.method,
                x.url,
                r.method,
                r.url
            )),
            Some(x) if !x.truncated && x.request_body != r.body => differences.push(format!(
                "request {} body: {} → {}",
                i + 1,
                crate::model::bounds::cut(&x.request_body, 200),
                crate::model::bounds::cut(&r.body, 200)
            )),
            Some(_) => {}
        }
    }
    for (i, x) in exchanges.iter().enumerate().skip(sent.len()) {
        differences.push(format!(
            "request {}: {} {} was made by the recorded call, not by this build",
            i + 1,
            x.method,
            x.url
        ));
    }
    let shown = |v: &Option<Value>| {
        v.as_ref().map_or_else(
            || "(none: the step never completed)".to_string(),
            Value::to_string,
        )
    };
    let replayed = match report.result {
        Ok(CallOutput::Ran(text)) => match serde_json::from_str::<Value>(&text) {
            Ok(v) => v,
            Err(e) => {
                outln!("recorded: {}", shown(&recorded_output));
                outln!("replayed: output that is not JSON ({e})");
                return Ok(ExitCode::from(1));
            }
        },
        Ok(other) => bail!("the new build answered {other:?} to run"),
        Err(f) => {
            outln!("recorded: {}", shown(&recorded_output));
            outln!("replayed: failed ({}): {}", f.class.as_str(), f.message);
            return Ok(ExitCode::from(1));
        }
    };
    outln!("recorded: {}", shown(&recorded_output));
    outln!("replayed: {replayed}");
    if let Err(problems) = described.check_output(&replayed) {
        differences.push(format!(
            "the output does not match the new build's output schema: {problems}"
        ));
    }
    match &recorded_output {
        Some(recorded) => diff("", recorded, &replayed, &mut differences),
        None => differences.push("the recorded step has no output to compare with".into()),
    }
    if differences.is_empty() {
        outln!("same output");
        return Ok(ExitCode::SUCCESS);
    }
    outln!("{} difference(s):", differences.len());
    for d in differences.iter().take(50) {
        outln!("  {d}");
    }
    Ok(ExitCode::from(1))
}

/// The input the step (or its item or branch) was given, rendered from the
/// run's log as the engine renders it.
async fn render_input(
    runtime: &crate::runtime::Runtime,
    summary: &RunSummary,
    flow: &crate::flow::Flow,
    index: usize,
    call: &crate::flow::StepDef,
    item: Option<u32>,
) -> anyhow::Result<Value> {
    let run_id = summary.run_id.to_string();
    let scope = crate::flow::template::Scope {
        input: &summary.input,
        outputs: &summary.outputs,
        run_id: &run_id,
    };
    let names: Vec<&str> = flow.steps.iter().map(|s| s.name.as_str()).collect();
    let item_value = match (item, &flow.steps[index].for_each) {
        (Some(at), Some(each)) => {
            let list = each
                .list
                .render_in(&scope, &names, index, runtime)
                .await
                .map_err(|e| anyhow::anyhow!("the step's list cannot be made: {e}"))?;
            let value = list
                .get(at as usize)
                .cloned()
                .with_context(|| format!("the step's list has no item {at}"))?;
            Some((value, at as usize))
        }
        _ => None,
    };
    call.input
        .render_item_in(
            &scope,
            &names,
            index,
            runtime,
            item_value.as_ref().map(|(v, at)| (v, *at)),
        )
        .await
        .map_err(|e| anyhow::anyhow!("the step's input cannot be made: {e}"))
}

/// Where `a` and `b` differ, as `PATH: A → B` lines.
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    if out.len() >= 200 {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let at = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => diff(&at, p, q, out),
                    (Some(p), None) => out.push(format!("{at}: {p} → (absent)")),
                    (None, Some(q)) => out.push(format!("{at}: (absent) → {q}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), p, q, out);
            }
        }
        _ if a != b => {
            let at = if path.is_empty() { "." } else { path };
            out.push(format!("{at}: {a} → {b}"));
        }
        _ => {}
    }
}
