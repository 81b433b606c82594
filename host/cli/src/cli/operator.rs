//! An operator's commands on one run: `settle retry`, `settle compensate`,
//! `settle cancel`, `settle pause`, `settle resume RUN`, `settle restart`. Each is recorded as an `operator-acted` event naming who
//! (the OS user) and why (`--reason`), together with what it sets in motion.
//! Only the run named is driven; other unfinished runs are left for the
//! next `settle run`, `settle resume` or server.

use super::run::RunReport;
use crate::app::{Host, OnStart};
use crate::config::Config;
use crate::engine::OperatorCommand;
use crate::model::{OperatorAction, RunId, RunState};
use anyhow::Context;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ActArgs {
    /// The run (its id).
    pub run: String,
    /// Why: recorded in the run's log with your user name (over `--server`,
    /// with the token's name).
    #[arg(long)]
    pub reason: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct RetryArgs {
    #[command(flatten)]
    pub act: ActArgs,
    /// The step to retry: must be the one the run stopped at (a safeguard
    /// against retrying the wrong run).
    #[arg(long)]
    pub step: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct RestartArgs {
    #[command(flatten)]
    pub act: ActArgs,
    /// The step to run again from: it and every step after it run again
    /// (under new operation ids); the steps before keep their outputs.
    #[arg(long)]
    pub from_step: String,
}

/// Who is acting: the OS user, as far as the environment says.
fn operator() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .into_iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown-user".into())
}

/// A command from the current OS user.
pub fn command(action: OperatorAction, reason: &str, step: Option<String>) -> OperatorCommand {
    OperatorCommand {
        action,
        by: operator(),
        reason: reason.to_string(),
        step,
    }
}

pub async fn retry(config: &Config, args: &RetryArgs) -> anyhow::Result<ExitCode> {
    apply(config, &args.act, OperatorAction::Retry, args.step.clone()).await
}

pub async fn restart(config: &Config, args: &RestartArgs) -> anyhow::Result<ExitCode> {
    apply(
        config,
        &args.act,
        OperatorAction::Restart,
        Some(args.from_step.clone()),
    )
    .await
}

pub async fn act(
    config: &Config,
    action: OperatorAction,
    args: &ActArgs,
) -> anyhow::Result<ExitCode> {
    apply(config, args, action, None).await
}

/// A reason is required: it is recorded in the run's log.
pub(super) fn check_reason(reason: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !reason.trim().is_empty(),
        "--reason must say why (it is recorded in the run's log)"
    );
    Ok(())
}

async fn apply(
    config: &Config,
    args: &ActArgs,
    action: OperatorAction,
    step: Option<String>,
) -> anyhow::Result<ExitCode> {
    check_reason(&args.reason)?;
    let run: RunId = args
        .run
        .parse()
        .with_context(|| format!("'{}' is not a run id (a UUID)", args.run))?;
    let host = Host::start_with(config, OnStart::Leave).await?;
    for e in &host.load_errors {
        eprintln!("warning: {e}");
    }
    let acted = host
        .engine
        .act(run, command(action, &args.reason, step))
        .await;
    if let Err(e) = acted {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(2));
    }
    let summary = host
        .engine
        .wait(run)
        .await?
        .with_context(|| format!("run {run} is not in the store"))?;
    print_acted(&RunReport::new(&summary, true), args.json)
}

/// What an operator's command prints once the run stops moving, from a
/// local store or a server, and its exit code: 0 when the run ended
/// settled, compensated or cancelled, 3 when it waits for an operator
/// (paused included), 1 otherwise.
pub(super) fn print_acted(report: &RunReport, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        super::print_json(report)?;
    } else {
        outln!(
            "{}  {:<22} {}",
            report.status.run_id,
            report.status.state.as_str(),
            report.status.phrase
        );
    }
    Ok(match report.status.state {
        RunState::Settled | RunState::Compensated | RunState::Cancelled => ExitCode::SUCCESS,
        RunState::NeedsAttention => ExitCode::from(super::EXIT_HELD),
        _ => ExitCode::from(1),
    })
}
