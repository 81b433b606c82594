//! `settle plugin session FILE.wasm`: a plugin in the real host runtime
//! (the same sandbox, limits and grants as a run's calls) meeting a
//! stand-in world: a clock the session sets, HTTP answers it scripts (no
//! request reaches the network), an in-memory kv, log lines kept. Driven
//! by one JSON command per line on stdin, each answered by one JSON line
//! on stdout: what the SDK's test harness (`settle_sdk::testing`) speaks,
//! and a way to try a plugin by hand.
//!
//! Commands:
//! - `{"call": "run", "input": {...}}`, `{"call": "compensate", "input":
//!   {...}, "output": {...}}`, `{"call": "reconcile", "input": {...},
//!   "output": {...}}`; optional `attempt`, `operation_id`, `step_id`.
//!   Answer: `{"outcome": "ok", "output": ...}` (or `"verdict"`), or
//!   `{"outcome": "failed", "class": ..., "message": ...}`; with the call's
//!   `logs`, `requests` and `denials`.
//! - `{"respond": [{"method", "url", "status", "headers", "body", "times"}]}`:
//!   scripted answers, used in order.
//! - `{"advance_ms": N}`: moves the clock on.
//!
//! A line that is not a command is answered `{"error": ...}`; the session
//! goes on. kv writes of a successful call are kept for the next calls.

use crate::config::Config;
use crate::runtime::stand_in::{Scripted, StandIn};
use crate::runtime::{
    CallContext, CallKind, CallOutput, CallRequest, MemoryKv, PluginSettings, Runtime,
    RuntimeOptions,
};
use anyhow::Context;
use serde_json::{Value, json};
use std::io::{BufRead, Read};
use std::process::ExitCode;
use std::sync::Arc;

/// The longest command line read, bytes.
const MAX_LINE_BYTES: u64 = 4 * 1024 * 1024;

/// What the stand-in world grants the plugin and where its clock starts.
#[derive(clap::Args, Debug, Clone)]
pub struct SessionArgs {
    pub file: std::path::PathBuf,
    /// The clock's start, milliseconds since the Unix epoch (default: now).
    #[arg(long)]
    pub now_ms: Option<u64>,
    /// Grant kv (in memory, for the session).
    #[arg(long)]
    pub kv: bool,
    /// Allow requests to this host (as `allowed_outbound_hosts`); repeat.
    #[arg(long = "allow-host")]
    pub allow_hosts: Vec<String>,
    /// A setting the plugin reads with `config::get`, KEY=VALUE; repeat.
    #[arg(long = "config-value")]
    pub config_values: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Command {
    call: Option<String>,
    #[serde(default)]
    input: Value,
    output: Option<Value>,
    attempt: Option<u32>,
    operation_id: Option<String>,
    step_id: Option<String>,
    respond: Option<Vec<Scripted>>,
    advance_ms: Option<u64>,
}

pub async fn session(config: &Config, args: &SessionArgs) -> anyhow::Result<ExitCode> {
    let mut settings = PluginSettings::default();
    settings.grants.kv = args.kv;
    settings.grants.allowed_outbound_hosts = args.allow_hosts.clone();
    for pair in &args.config_values {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--config-value {pair}: write KEY=VALUE"))?;
        settings.grants.config.insert(k.to_string(), v.to_string());
    }
    let stand_in = Arc::new(StandIn::new(
        args.now_ms.unwrap_or_else(crate::model::now_ms),
    ));
    let (runtime, name) = stand_in_runtime(
        config,
        &args.file,
        |_| settings,
        stand_in.clone(),
        Arc::new(MemoryKv::default()),
    )
    .await?;
    // The first line says the plugin is loaded (a harness waits for it).
    let digest = runtime.plugin_info(&name).map(|p| p.digest.clone());
    outln!(
        "{}",
        json!({ "ready": { "plugin": name, "digest": digest } })
    );
    let stdin = std::io::stdin();
    let mut calls = 0u64;
    loop {
        let mut line = Vec::new();
        let read = stdin
            .lock()
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut line)
            .context("reading a command")?;
        if read == 0 {
            break;
        }
        // A line past the limit is one error, not several commands.
        if !line.ends_with(b"\n") && read as u64 == MAX_LINE_BYTES {
            let mut rest = Vec::new();
            let _ = stdin.lock().read_until(b'\n', &mut rest);
            outln!(
                "{}",
                json!({ "error": format!("a command line is at most {MAX_LINE_BYTES} bytes") })
            );
            continue;
        }
        let Ok(line) = std::str::from_utf8(&line) else {
            outln!("{}", json!({ "error": "a command line is UTF-8 text" }));
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        let answer = match serde_json::from_str::<Command>(line) {
            Err(e) => json!({ "error": format!("not a command: {e}") }),
            Ok(command) => {
                calls += 1;
                answer(&runtime, &stand_in, &name, command, calls).await
            }
        };
        outln!("{answer}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A runtime whose plugins meet `stand_in`, with `file` installed under
/// the settings `settings` gives for its name; returns it and the name.
pub(super) async fn stand_in_runtime(
    config: &Config,
    file: &std::path::Path,
    settings: impl FnOnce(&str) -> PluginSettings,
    stand_in: Arc<StandIn>,
    kv: Arc<dyn crate::runtime::PluginKv>,
) -> anyhow::Result<(Runtime, String)> {
    let base = RuntimeOptions {
        max_concurrent_calls: 2,
        max_memory_mib: config.runtime.max_memory_mib,
        cache_dir: Some(config.cache_dir()),
        builds_dir: None,
        default_limits: config.limits.clone(),
        plugins: Default::default(),
        stand_in: Some(stand_in),
    };
    // Its name first (its settings are by name), then the runtime it runs in.
    let probe = Runtime::new(base.clone(), Arc::new(MemoryKv::default()))?;
    let name = probe
        .check_file(file)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .name
        .to_string();
    drop(probe);
    let mut options = base;
    options.plugins.insert(name.clone(), settings(&name));
    let runtime = Runtime::new(options, kv)?;
    runtime
        .load_file(file)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((runtime, name))
}

async fn answer(
    runtime: &Runtime,
    stand_in: &StandIn,
    plugin: &str,
    command: Command,
    n: u64,
) -> Value {
    if let Some(answers) = command.respond {
        let count = answers.len();
        stand_in.script(answers);
        return json!({ "outcome": "ok", "scripted": count });
    }
    if let Some(ms) = command.advance_ms {
        stand_in.advance(std::time::Duration::from_millis(ms));
        return json!({ "outcome": "ok", "now_ms": stand_in.now_ms() });
    }
    let kind = match command.call.as_deref() {
        Some("run") => CallKind::Run,
        Some("compensate") => CallKind::Compensate,
        Some("reconcile") => CallKind::Reconcile,
        Some(other) => {
            return json!({ "error": format!("call '{other}': run, compensate or reconcile") });
        }
        None => return json!({ "error": "a command has `call`, `respond` or `advance_ms`" }),
    };
    if kind == CallKind::Reconcile && command.output.is_none() {
        return json!({ "error": "reconcile needs `output` (what run returned)" });
    }
    let operation_id = command
        .operation_id
        .unwrap_or_else(|| format!("session/{n}"));
    let request = CallRequest {
        plugin: plugin.to_string(),
        kind,
        ctx: CallContext {
            run_id: "session".into(),
            flow: "session@1".into(),
            step: "step".into(),
            step_id: command.step_id.unwrap_or_else(|| operation_id.clone()),
            operation_id,
            attempt: command.attempt.unwrap_or(1),
            trace_id: "0".into(),
        },
        input: command.input.to_string(),
        output: command.output.map(|o| o.to_string()),
        timeout: None,
        progress: None,
        build: None,
    };
    let report = runtime.invoke(request).await;
    let mut answer = match report.result {
        Ok(CallOutput::Ran(text)) => json!({
            "outcome": "ok",
            "output": serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
        }),
        Ok(CallOutput::Compensated) => json!({ "outcome": "ok" }),
        Ok(CallOutput::Reconciled(verdict)) => json!({
            "outcome": "ok",
            "verdict": match verdict {
                crate::model::Verdict::InSync => json!("in-sync"),
                crate::model::Verdict::Unknown => json!("unknown"),
                crate::model::Verdict::Drifted(detail) => json!({ "drifted": detail }),
            },
        }),
        Err(f) => json!({
            "outcome": "failed",
            "class": f.class.as_str(),
            "message": f.message,
        }),
    };
    answer["duration_ms"] = json!(u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX));
    answer["logs"] = json!(stand_in.take_logs());
    answer["requests"] = json!(stand_in.take_requests());
    answer["denials"] = json!(
        report
            .denials
            .iter()
            .map(|d| json!({ "capability": d.capability, "detail": d.detail }))
            .collect::<Vec<_>>()
    );
    answer
}
