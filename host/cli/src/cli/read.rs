//! Read commands: `runs`, `status`, `events`, `plugins`, `validate`, `reindex`.

use super::{print_json, time};
use crate::app::open_store;
use crate::config::Config;
use crate::engine::queries::{Queries, RunListing};
use crate::engine::status::RunStatus;
use crate::model::{Event, RunId, RunState};
use crate::runtime::{Runtime, RuntimeOptions};
use crate::store::Maintenance;
use anyhow::Context;
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

pub(super) fn parse_run(run: &str) -> anyhow::Result<RunId> {
    run.parse()
        .with_context(|| format!("'{run}' is not a run id (a UUID)"))
}

pub async fn runs(
    config: &Config,
    state: Option<RunState>,
    limit: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    if limit == 0 {
        if json {
            print_json(&Vec::<()>::new())?;
        } else {
            outln!("no runs");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let queries = Queries::offline(open_store(config)?);
    // Page by page: one page holds at most `queries::MAX_PAGE` runs.
    let mut listing = RunListing {
        states: state.into_iter().collect(),
        limit: limit.min(crate::engine::queries::MAX_PAGE),
        ..RunListing::default()
    };
    let mut statuses = Vec::new();
    loop {
        let page = queries.list(&listing).await?;
        for skipped in &page.unreadable {
            eprintln!("warning: {skipped}; skipped");
        }
        statuses.extend(page.runs);
        match page.next_cursor {
            Some(cursor) if statuses.len() < limit => {
                listing.cursor = Some(cursor);
                listing.limit = (limit - statuses.len()).min(crate::engine::queries::MAX_PAGE);
            }
            _ => break,
        }
    }
    statuses.truncate(limit);
    print_runs(&statuses, json)?;
    Ok(ExitCode::SUCCESS)
}

/// What `settle runs` prints, from a local store or a server.
pub(super) fn print_runs(statuses: &[RunStatus], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&statuses);
    }
    for s in statuses {
        outln!(
            "{}  {:<16} {:<22} {}",
            s.run_id,
            s.flow,
            s.state.as_str(),
            s.phrase
        );
    }
    if statuses.is_empty() {
        outln!("no runs");
    }
    Ok(())
}

pub async fn status(config: &Config, run: &str, json: bool) -> anyhow::Result<ExitCode> {
    let run = parse_run(run)?;
    let queries = Queries::offline(open_store(config)?);
    let status = queries
        .status(run)
        .await?
        .with_context(|| format!("no run {run}"))?;
    print_status(&status, json)?;
    Ok(ExitCode::SUCCESS)
}

/// What `settle status` prints, from a local store or a server.
pub(super) fn print_status(status: &RunStatus, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(status);
    }
    outln!("run      {}", status.run_id);
    outln!("flow     {}", status.flow);
    outln!("state    {}", status.state);
    outln!("status   {}", status.phrase);
    if let Some(step) = &status.step {
        outln!(
            "step     {} of {} ({}), {} attempt {} of {}",
            step.number,
            status.step_count,
            step.name,
            step.action,
            step.attempt,
            step.max_attempts
        );
    }
    let skipped = match status.skipped_steps {
        0 => String::new(),
        n => format!(" ({n} skipped)"),
    };
    outln!(
        "done     {} of {} steps{skipped}, {} attempts in all",
        status.completed_steps,
        status.step_count,
        status.attempts_total
    );
    if let Some(f) = &status.last_failure {
        outln!("failure  {} ({})", f.message, f.class.as_str());
    }
    if let Some(d) = &status.detail {
        outln!("detail   {d}");
    }
    outln!("accepted {}", time(status.accepted_at_ms));
    if let Some(t) = status.finished_at_ms {
        outln!("finished {}", time(t));
    }
    Ok(())
}

pub async fn events(config: &Config, run: &str, json: bool) -> anyhow::Result<ExitCode> {
    let run = parse_run(run)?;
    let queries = Queries::offline(open_store(config)?);
    let events = queries.events(run).await?;
    anyhow::ensure!(!events.is_empty(), "no run {run}");
    print_events(&events, json)?;
    Ok(ExitCode::SUCCESS)
}

/// What `settle events` prints, from a local store or a server.
pub(super) fn print_events(events: &[Event], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&events);
    }
    for e in events {
        let step = match (&e.step, e.attempt) {
            (Some(s), Some(a)) => format!("{s}#{a}"),
            (Some(s), None) => s.clone(),
            _ => String::new(),
        };
        let detail = serde_json::to_value(&e.kind)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .map(|mut m| {
                m.remove("type");
                serde_json::Value::Object(m).to_string()
            })
            .unwrap_or_default();
        outln!(
            "{:>3} {} {:<24} {:<14} {:<40} {}",
            e.seq,
            time(e.at_ms),
            e.kind.name(),
            step,
            e.source.0,
            if detail == "{}" {
                String::new()
            } else {
                detail
            }
        );
    }
    Ok(())
}

/// Loads the plugins without opening the store (another process may hold it).
pub(super) async fn runtime_only(
    config: &Config,
) -> anyhow::Result<(Runtime, Vec<crate::runtime::LoadError>)> {
    struct NoKv;
    impl crate::runtime::PluginKv for NoKv {
        fn get(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, String> {
            Err("no store".into())
        }
        fn apply(&self, _: &str, _: &[crate::runtime::KvWrite]) -> Result<(), String> {
            Err("no store".into())
        }
        fn usage(&self, _: &str) -> Result<crate::runtime::KvUsage, String> {
            Err("no store".into())
        }
    }
    let options = RuntimeOptions {
        max_concurrent_calls: 4,
        max_memory_mib: config.runtime.max_memory_mib,
        cache_dir: Some(config.cache_dir()),
        // Reads plugins without running flows: no builds to keep.
        builds_dir: None,
        default_limits: config.limits.clone(),
        plugins: config.plugins.clone(),
        stand_in: None,
    };
    let runtime = Runtime::new(options, Arc::new(NoKv))?;
    let mut errors = Vec::new();
    for dir in &config.plugin_dirs {
        errors.extend(runtime.load_dir(dir).await);
    }
    Ok((runtime, errors))
}

pub async fn plugins(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let (runtime, errors) = runtime_only(config).await?;
    let plugins = runtime.plugins();
    if json {
        let list: Vec<_> = plugins
            .iter()
            .map(|p| {
                // The local operator sees more than the API shows: the file,
                // and the grants with their config values.
                let mut view = p.to_json();
                if let Some(map) = view.as_object_mut() {
                    map.insert("path".into(), json!(p.path));
                    map.insert("limits".into(), json!(p.limits));
                    map.insert("grants".into(), json!(*p.grants));
                }
                view
            })
            .collect();
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        print_json(&json!({ "plugins": list, "errors": errors }))?;
    } else {
        for p in &plugins {
            let caps = [
                p.manifest.supports_compensate.then_some("compensate"),
                p.manifest.supports_reconcile.then_some("reconcile"),
            ];
            let caps: Vec<&str> = caps.into_iter().flatten().collect();
            outln!("{:<16} {:<44} {}", p.name, p.source, p.manifest.summary);
            outln!("{:<16} supports: run {}", "", caps.join(" "));
            if let Some(r) = &p.manifest.retry {
                outln!(
                    "{:<16} suggested retry (used where a flow sets none): {} attempts, {} ms doubling by {} up to {} ms",
                    "",
                    r.max_attempts,
                    r.initial_interval_ms,
                    r.backoff_coefficient,
                    r.max_interval_ms
                );
            }
        }
        for e in &errors {
            eprintln!("error: {e}");
        }
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub async fn validate(config: &Config, path: &Path) -> anyhow::Result<ExitCode> {
    let (runtime, _) = runtime_only(config).await?;
    let file = path.display().to_string();
    let flow = crate::flow::Flow::load(path)?;
    let installed: Vec<_> = runtime
        .plugins()
        .iter()
        .map(|p| crate::flow::PluginFacts::of(p))
        .collect();
    flow.check_plugins(&file, &installed)?;
    outln!("flow {} is valid: {} step(s)", flow.id(), flow.steps.len());
    Ok(ExitCode::SUCCESS)
}

pub async fn reindex(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let store = open_store(config)?;
    let report = store.reindex().await?;
    if json {
        print_json(&report)?;
    } else {
        outln!(
            "rebuilt from {} events: {} runs, {} active, {} idempotency keys; {} stale entries dropped",
            report.events,
            report.runs,
            report.active,
            report.idempotency_keys,
            report.dropped
        );
    }
    Ok(ExitCode::SUCCESS)
}
