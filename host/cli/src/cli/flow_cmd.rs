//! `settle flow validate | graph | test`: what a citizen developer needs
//! before a flow meets a run — every problem at once, a picture of the
//! flow, and a dry run that touches nothing outside.

use super::read::runtime_only;
use crate::config::Config;
use crate::flow::{Flow, PluginFacts, template::Scope};
use anyhow::Context;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum FlowCommand {
    /// Every problem of each flow file at once (file:line:column), with how
    /// to fix it: syntax, limits, references, and each step's input against
    /// its plugin's schema (the installed plugins are loaded to know them).
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// The flow as a Mermaid diagram: its steps, where a failure goes (the
    /// undo of the steps before, in reverse), confirmation and checks.
    Graph { file: PathBuf },
    /// A dry run: evaluates each step's `if:` and renders its input from
    /// `--input` and the mocked outputs of the steps before (jq in the
    /// sandbox, as on a host), checks it against the plugin's schema, and
    /// prints the path taken. Calls no plugin and writes nothing.
    Test {
        file: PathBuf,
        /// The run's input, as JSON.
        #[arg(long, default_value = "{}")]
        input: String,
        /// A step's output, as `STEP=JSON`; every step that runs needs one.
        #[arg(long = "mock", value_name = "STEP=JSON")]
        mocks: Vec<String>,
    },
    /// Every registered version of a flow on a server (`--server`), and how
    /// many unfinished runs use each (0: drained, safe to remove).
    Versions { name: String },
}

pub async fn flow(config: &Config, command: &FlowCommand) -> anyhow::Result<ExitCode> {
    match command {
        FlowCommand::Validate { files } => validate(config, files).await,
        FlowCommand::Graph { file } => {
            let flow = Flow::load(file)?;
            outln!("{}", mermaid(&flow));
            Ok(ExitCode::SUCCESS)
        }
        FlowCommand::Test { file, input, mocks } => test(config, file, input, mocks).await,
        FlowCommand::Versions { .. } => anyhow::bail!(
            "flow versions are kept by a serving host: give --server URL (or set SETTLE_SERVER)"
        ),
    }
}

async fn validate(config: &Config, files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let (runtime, _) = runtime_only(config).await?;
    let installed: Vec<PluginFacts> = runtime
        .plugins()
        .iter()
        .map(|p| PluginFacts::of(p))
        .collect();
    let mut failed = 0;
    for path in files {
        let file = path.display().to_string();
        match Flow::load(path).and_then(|f| f.check_plugins(&file, &installed).map(|()| f)) {
            Ok(flow) => outln!(
                "{file}: flow {} is valid: {} step(s)",
                flow.id(),
                flow.steps.len()
            ),
            Err(errors) => {
                failed += 1;
                eprintln!("{errors}");
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} flow file(s) have problems", files.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Text for a Mermaid label: quotes as entities, no control characters
/// (step and plugin names are identifiers already; a version may be any
/// text).
fn label(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .replace('"', "#quot;")
}

/// The flow as Mermaid `flowchart` text.
pub fn mermaid(flow: &Flow) -> String {
    let mut out = vec![
        "flowchart TD".to_string(),
        format!("    accepted([\"{} accepted\"])", label(&flow.id())),
    ];
    let last = flow.steps.len().saturating_sub(1);
    for (i, step) in flow.steps.iter().enumerate() {
        let from = if i == 0 {
            "accepted".to_string()
        } else {
            format!("step{}", i - 1)
        };
        let what = match (&step.wait, &step.signal) {
            (Some(crate::flow::Wait::For(d)), _) => {
                format!("wait {}", humantime::format_duration(*d))
            }
            (Some(crate::flow::Wait::Until(_)), _) => "wait until a time".to_string(),
            (None, Some(signal)) => format!("signal {}", signal.name),
            (None, None) if step.approval.is_some() => "approval".to_string(),
            (None, None) => match &step.for_each {
                Some(f) => format!("{} for each item, {} at a time", step.plugin, f.concurrency),
                None => step.plugin.clone(),
            },
        };
        let arrow = match &step.condition {
            Some(c) => format!("-- \"if {}\" -->", label(&c.text)),
            None => "-->".to_string(),
        };
        match &step.parallel {
            // Forks to its branches, which meet at its join.
            Some(p) => {
                out.push(format!(
                    "    {from} {arrow} fork{i}[[\"{}. {} (parallel, {} at a time)\"]]",
                    i + 1,
                    step.name,
                    p.concurrency
                ));
                for (j, b) in p.branches.iter().enumerate() {
                    out.push(format!(
                        "    fork{i} --> branch{i}_{j}[\"{} ({})\"] --> step{i}",
                        b.name, b.call.plugin
                    ));
                }
                let join = match p.join {
                    crate::flow::Join::All => "join: all".to_string(),
                    crate::flow::Join::First(n) => format!("join: first {n}"),
                };
                out.push(format!("    step{i}{{{{\"{join}\"}}}}"));
            }
            None => out.push(format!(
                "    {from} {arrow} step{i}[\"{}. {} ({what})\"]",
                i + 1,
                step.name,
            )),
        }
        // A false `if:` passes the step over, to the next (or to the end).
        if step.condition.is_some() {
            let next = if i == last {
                "confirm".to_string()
            } else {
                format!("step{}", i + 1)
            };
            out.push(format!("    {from} -. \"else: skipped\" .-> {next}"));
        }
        // A step that holds when its retries run out waits for an operator.
        if step.on_exhausted == crate::flow::OnExhausted::Hold {
            out.push(format!(
                "    step{i} -. \"retries run out\" .-> held{i}([\"held for an operator\"])"
            ));
        }
        // A failure for good undoes the compensable steps before, newest first.
        match (0..i).rev().find(|&k| flow.steps[k].compensate) {
            Some(k) => out.push(format!("    step{i} -. fails .-> undo{k}")),
            None => out.push(format!("    step{i} -. fails .-> compensated")),
        }
    }
    // The last step is undone only when a drift is (`on_drift: compensate`).
    let undo_last = flow.on_drift == crate::flow::OnDrift::Compensate;
    let compensable: Vec<usize> = (0..flow.steps.len())
        .filter(|&k| flow.steps[k].compensate && (k < last || undo_last))
        .collect();
    for (n, &k) in compensable.iter().enumerate().rev() {
        let next = match n.checked_sub(1) {
            Some(prev) => format!("undo{}", compensable[prev]),
            None => "compensated".to_string(),
        };
        out.push(format!(
            "    undo{k}[\"undo {}\"] --> {next}",
            flow.steps[k].name
        ));
    }
    out.push("    compensated([\"could not complete: undone\"])".to_string());
    if !flow.steps.is_empty() {
        out.push(format!(
            "    step{last} --> confirm{{{{\"confirm with downstream systems\"}}}}"
        ));
        out.push("    confirm -- \"in sync\" --> settled([\"settled\"])".to_string());
        out.push("    confirm -- \"disagrees\" --> drifted([\"drifted\"])".to_string());
        match (flow.on_drift, compensable.last()) {
            (crate::flow::OnDrift::Compensate, Some(k)) => {
                out.push(format!(
                    "    drifted -. \"on_drift: compensate\" .-> undo{k}"
                ));
            }
            (crate::flow::OnDrift::Reapply, _) => {
                out.push("    drifted -. \"on_drift: reapply\" .-> confirm".to_string());
            }
            _ => {}
        }
    }
    if let Some(r) = flow.rechecks {
        out.push(format!(
            "    settled -. \"checked every {} for {}\" .-> confirm",
            humantime::format_duration(r.every),
            humantime::format_duration(r.window)
        ));
    }
    out.join("\n")
}

/// A call's input in a dry run: rendered over the steps before `before`,
/// printed after `shown`, and checked against its plugin's schema; `None`
/// (after saying why, naming it `who`) when it cannot be made or does not
/// fit.
async fn dry_input(
    runtime: &crate::runtime::Runtime,
    scope: &Scope<'_>,
    names: &[&str],
    before: usize,
    call: &crate::flow::StepDef,
    who: &str,
    shown: &str,
) -> Option<Value> {
    let rendered = match call.input.render_in(scope, names, before, runtime).await {
        Ok(v) => v,
        Err(e) => {
            outln!("   {who}input: cannot be made: {e}");
            return None;
        }
    };
    outln!("   {shown}{rendered}");
    if let Some(plugin) = crate::runtime::Executor::plugin(runtime, &call.plugin)
        && let Err(problems) = plugin.check_input(&rendered)
    {
        outln!(
            "   {who}input does not match the schema of plugin '{}': {problems}",
            call.plugin
        );
        return None;
    }
    Some(rendered)
}

/// `step`'s mocked output, said as such; `None` (after saying the dry run
/// stops there, and what `what` the mock would be) without one.
fn mocked(
    given: &std::collections::BTreeMap<String, Value>,
    step: &str,
    what: &str,
) -> Option<Value> {
    let Some(output) = given.get(step) else {
        outln!("   no --mock {step}=JSON{what}: the dry run stops here");
        return None;
    };
    outln!("   output: {output} (mocked)");
    Some(output.clone())
}

async fn test(
    config: &Config,
    path: &Path,
    input: &str,
    mocks: &[String],
) -> anyhow::Result<ExitCode> {
    let flow = Flow::load(path)?;
    let input: Value = serde_json::from_str(input).context("--input is not JSON")?;
    let mut given = std::collections::BTreeMap::new();
    for m in mocks {
        let (step, json) = m
            .split_once('=')
            .with_context(|| format!("--mock '{m}': write STEP=JSON"))?;
        anyhow::ensure!(
            flow.steps.iter().any(|s| s.name == step),
            "--mock '{step}': flow {} has no such step",
            flow.id()
        );
        let output: Value =
            serde_json::from_str(json).with_context(|| format!("--mock {step}: not JSON"))?;
        given.insert(step.to_string(), output);
    }
    // The installed plugins, for their schemas; expressions run in the
    // same sandbox as on a host.
    let (runtime, _) = runtime_only(config).await?;
    outln!("dry run of flow {} (no plugin is called)", flow.id());
    let names: Vec<&str> = flow.steps.iter().map(|s| s.name.as_str()).collect();
    let mut outputs: Vec<Option<Value>> = vec![None; flow.steps.len()];
    let stops = |step: &str, class: &str| {
        outln!(
            "   the run would stop here: step '{step}' fails with {class}, and the steps before are undone"
        );
        Ok(ExitCode::FAILURE)
    };
    for (i, step) in flow.steps.iter().enumerate() {
        let scope = Scope {
            input: &input,
            outputs: &outputs,
            run_id: "dry-run",
        };
        if let Some(condition) = &step.condition {
            match condition
                .template
                .render_in(&scope, &names, i, &runtime)
                .await
            {
                Ok(v) if crate::flow::Condition::holds(&v) => {}
                Ok(v) => {
                    outln!(
                        "{}. {} skipped: `if: {}` is {v}",
                        i + 1,
                        step.name,
                        condition.text
                    );
                    continue;
                }
                Err(e) => {
                    outln!("{}. {}: `if` cannot be evaluated: {e}", i + 1, step.name);
                    return stops(&step.name, "invalid-input");
                }
            }
        }
        if let Some(wait) = &step.wait {
            let how = match wait {
                crate::flow::Wait::For(d) => humantime::format_duration(*d).to_string(),
                crate::flow::Wait::Until(t) => match t.render_in(&scope, &names, i, &runtime).await
                {
                    Ok(v) => format!("until {v}"),
                    Err(e) => format!("until a time that cannot be made: {e}"),
                },
            };
            outln!(
                "{}. {} (wait {how}): no plugin, nothing to mock",
                i + 1,
                step.name
            );
            outputs[i] = Some(serde_json::json!({ "waited_until_ms": 0 }));
            continue;
        }
        let what = match (&step.signal, &step.approval, &step.parallel) {
            (Some(signal), _, _) => format!("waits for signal '{}'", signal.name),
            (None, Some(_), _) => "waits for approval; mock its output".to_string(),
            (None, None, Some(p)) => match p.join {
                crate::flow::Join::All => "parallel, join all".to_string(),
                crate::flow::Join::First(n) => format!("parallel, join first {n}"),
            },
            (None, None, None) => step.plugin.clone(),
        };
        outln!("{}. {} ({what})", i + 1, step.name);
        // A `parallel` step: each branch's input, checked as a step's is.
        if let Some(parallel) = &step.parallel {
            for b in &parallel.branches {
                let who = format!("branch {} ", b.name);
                let shown = format!("branch {} ({}) input: ", b.name, b.call.plugin);
                if dry_input(&runtime, &scope, &names, i, &b.call, &who, &shown)
                    .await
                    .is_none()
                {
                    return stops(&step.name, "invalid-input");
                }
            }
            let Some(output) = mocked(&given, &step.name, " (an object with each branch's output)")
            else {
                return Ok(ExitCode::FAILURE);
            };
            outputs[i] = Some(output);
            continue;
        }
        // A `for_each` step: its list, and each item's input.
        if let Some(for_each) = &step.for_each {
            let list = match for_each.list.render_in(&scope, &names, i, &runtime).await {
                Ok(Value::Array(items)) => items,
                Ok(other) => {
                    outln!("   for_each gives {other}, not a list");
                    return stops(&step.name, "invalid-input");
                }
                Err(e) => {
                    outln!("   for_each cannot be made: {e}");
                    return stops(&step.name, "invalid-input");
                }
            };
            outln!(
                "   for each of {} item(s), {} at a time:",
                list.len(),
                for_each.concurrency
            );
            for (position, item) in list.iter().enumerate() {
                match step
                    .input
                    .render_item_in(&scope, &names, i, &runtime, Some((item, position)))
                    .await
                {
                    Ok(v) => outln!("   item {position} input: {v}"),
                    Err(e) => {
                        outln!("   item {position} input: cannot be made: {e}");
                        return stops(&step.name, "invalid-input");
                    }
                }
            }
            let Some(output) = mocked(&given, &step.name, " (the list of the items' outputs)")
            else {
                return Ok(ExitCode::FAILURE);
            };
            outputs[i] = Some(output);
            continue;
        }
        if dry_input(&runtime, &scope, &names, i, step, "", "input:  ")
            .await
            .is_none()
        {
            return stops(&step.name, "invalid-input");
        }
        let Some(output) = mocked(&given, &step.name, "") else {
            return Ok(ExitCode::FAILURE);
        };
        outputs[i] = Some(output);
    }
    outln!(
        "every step completed or was skipped: the run would be confirmed with downstream systems, then settle"
    );
    Ok(ExitCode::SUCCESS)
}

/// `settle flow versions NAME --server URL`.
pub fn versions(server: &super::remote::Server, name: &str) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "'{name}' is not a flow name (letters, digits, '-' or '_')"
    );
    let path = format!("/v1/flows/{name}/versions");
    let answer: Value = server.get(&format!("flow {name}"), &path)?;
    outln!("flow {name}");
    for v in answer["versions"].as_array().into_iter().flatten() {
        let version = v["version"].as_str().unwrap_or("?");
        let current = if v["current"] == true { "current" } else { "" };
        match v["unfinished_runs"].as_u64() {
            Some(0) => {
                outln!("  {version:<12} {current:<8} drained (0 unfinished run(s); can be removed)")
            }
            Some(runs) => outln!("  {version:<12} {current:<8} in use ({runs} unfinished run(s))"),
            None => outln!("  {version:<12} {current:<8} ? (the server did not say)"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_a_held_step_is_drawn_held() {
        let flow = Flow::parse(
            "name: f\nversion: \"1\\\" --> x\\n\"\nsteps:\n  - { name: a, plugin: p }\n  - { name: b, plugin: p, on_exhausted: hold }\n",
            "f.yaml",
        )
        .unwrap();
        let text = mermaid(&flow);
        assert!(
            text.contains("accepted([\"f@1#quot; --> x accepted\"])"),
            "{text}"
        );
        assert_eq!(text.lines().count(), text.matches('\n').count() + 1);
        assert!(
            !text.contains("x\n accepted"),
            "no line break from the version"
        );
        assert!(
            text.contains("step1 -. \"retries run out\" .-> held1([\"held for an operator\"])"),
            "{text}"
        );
    }
}
