//! The `settle` command line.
//!
//! Exit codes: 0 success (for `run`: every run settled), 1 a run ended in
//! another terminal state, 2 bad input or configuration (or an operator's
//! command was refused), 3 a run waits for an operator (its status says why
//! and what to do), 74 the store stopped after a failed write.

/// `println!` that ends the process quietly when stdout is closed
/// (`settle events RUN | head`) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

mod bench;
mod bench_http;
mod bench_languages;
mod bench_rechecks;
mod demo;
mod drill;
mod flow_cmd;
pub mod jsonl;
mod operator;
mod plugin_cmd;
mod plugin_new;
mod plugin_replay;
mod plugin_session;
mod read;
mod remote;
mod run;
mod serve;
mod serve_child;

/// Exit code: a run waits for an operator (state `needs-attention`).
pub const EXIT_HELD: u8 = 3;

use crate::config::Config;
use crate::telemetry::LogFormat;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "settle",
    version,
    about = "Durable, sandboxed WebAssembly workflows that converge"
)]
pub struct Cli {
    /// Store directory (overrides `data_dir` in settle.toml).
    #[arg(long, global = true, env = "SETTLE_DATA")]
    data: Option<PathBuf>,
    /// Configuration file (default: ./settle.toml if present).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Directory of plugin components, in addition to those in settle.toml.
    #[arg(long = "plugins", global = true)]
    plugin_dirs: Vec<PathBuf>,
    /// How log lines are written to stderr: `text` for people (coloured only
    /// on a terminal) or `json`, one object per line, for machines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SETTLE_LOG_FORMAT")]
    log_format: LogFormat,
    /// A running `settle serve` (e.g. http://127.0.0.1:7700): `submit`,
    /// `status`, `runs`, `events` and the operator's commands go to it over
    /// HTTP instead of a local store. The token is read from SETTLE_TOKEN.
    #[arg(long, global = true, env = "SETTLE_SERVER")]
    server: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a flow to a terminal state; prints the final run summary as JSON.
    Run(run::RunArgs),
    /// Submit a run to a server (`--server`): prints its id, or with --wait
    /// follows it to the end and prints its final status as JSON.
    Submit(remote::SubmitArgs),
    /// List runs, newest first.
    Runs {
        /// Only runs in this state (e.g. settled, compensated, needs-attention).
        #[arg(long)]
        state: Option<crate::model::RunState>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Where a run stands: state, phrase, current step and attempts. With
    /// no run and `--server`: the server's failure domains (circuit
    /// breakers, retry budgets, bulkheads).
    Status {
        run: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A run's event log, with lineage.
    Events {
        run: String,
        #[arg(long)]
        json: bool,
    },
    /// Installed plugins and their manifests.
    Plugins {
        #[arg(long)]
        json: bool,
    },
    /// Check a flow file without running it.
    Validate { flow: PathBuf },
    /// Without a run: finish every unfinished run of the local store, then
    /// exit. With a run and --reason: release that held or paused run where
    /// it stopped.
    Resume(ResumeArgs),
    /// Try again the action a held run stopped at, with a fresh attempt budget.
    Retry(operator::RetryArgs),
    /// Undo the completed steps of a held (or drifted) run, in reverse order.
    Compensate(operator::ActArgs),
    /// Stop a run for good; what it changed stays in place.
    Cancel(operator::ActArgs),
    /// Hold a moving run at its next step boundary until `settle resume RUN`.
    Pause(operator::ActArgs),
    /// Run an ended or held run again from a step, with its flow version:
    /// that step and those after run again; nothing is undone first.
    Restart(operator::RestartArgs),
    /// Accept what downstream systems say of a drifted run: it counts as
    /// settled again and is no longer checked.
    AcceptDrift(operator::ActArgs),
    /// Deliver a signal to a run whose flow waits for it (`signal:` steps);
    /// kept if the run has not reached the step yet. Needs --server.
    Signal {
        run: String,
        name: String,
        /// The payload, as JSON (the step's output).
        #[arg(long, default_value = "null")]
        payload: String,
        /// An idempotency key: a repeat under it is not taken again.
        #[arg(long)]
        key: Option<String>,
    },
    /// Approve (or `--reject`) an approval step of a run, as the token in
    /// use. Needs --server.
    Approve {
        run: String,
        step: String,
        #[arg(long)]
        reject: bool,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Repair a drifted run: run its steps again from the first drifted
    /// one, under their same operation ids, then confirm them again.
    Reapply(operator::ActArgs),
    /// Rebuild every index from the event log.
    Reindex {
        #[arg(long)]
        json: bool,
    },
    /// Serve the HTTP API and dashboard until SIGTERM/SIGINT.
    Serve(serve::ServeArgs),
    /// Flow files: `validate` every problem at once, `graph` as Mermaid,
    /// `test` as a dry run with mocked step outputs.
    Flow {
        #[command(subcommand)]
        command: flow_cmd::FlowCommand,
    },
    /// Plugin components: `check` one before installing it, or create a
    /// `new` one.
    Plugin {
        #[command(subcommand)]
        command: plugin_cmd::PluginCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Run the shipped demo flows end to end (starts the demo service itself).
    Demo,
    /// Measure throughput, overhead, latency and recovery; prints figures.
    Bench(bench::BenchArgs),
    /// Run a synthetic workload with injected faults against a host it
    /// starts; report what happened, exit 1 when a threshold is missed.
    Drill(drill::DrillArgs),
    /// The demo's outside world: a ledger, stock table and outbox over HTTP.
    /// Its state is journaled under `--data DIR`.
    DemoService {
        #[arg(long, default_value = "127.0.0.1:7300")]
        listen: SocketAddr,
        /// Serve `POST /drift/transfers`, which changes the world behind
        /// Settle's back (tests and drills only).
        #[arg(long)]
        drift_hooks: bool,
    },
}

#[derive(clap::Args, Debug)]
struct ResumeArgs {
    /// The run to release (its id); without it, every unfinished run.
    run: Option<String>,
    /// Why (with a run): recorded in the run's log.
    #[arg(long, requires = "run")]
    reason: Option<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Make a token: prints it once, and the lines for settle.toml.
    New {
        /// submitter, viewer or operator.
        #[arg(long)]
        role: String,
        /// Recorded with everything the token does.
        #[arg(long, default_value = "operator")]
        name: String,
    },
}

/// Parses arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = crate::telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    };
    // A store that stopped after a failed write overrides any other answer.
    match crate::store::process_store_failure() {
        Some(_) => ExitCode::from(crate::store::EXIT_STORE_FAILED),
        None => code,
    }
}

fn config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(data) = &cli.data {
        config.data_dir = data.clone();
    }
    for dir in &cli.plugin_dirs {
        config.add_plugin_dir(dir.clone());
    }
    Ok(config)
}

/// The commands a server answers, when `--server` (or SETTLE_SERVER) names
/// one; `None` for those that only work here.
fn dispatch_remote(cli: &Cli, url: &str) -> Option<anyhow::Result<ExitCode>> {
    let server = || remote::Server::new(url);
    use crate::model::OperatorAction as A;
    Some(match &cli.command {
        Command::Submit(args) => server().and_then(|s| remote::submit(&s, args)),
        Command::Runs { state, limit, json } => {
            server().and_then(|s| remote::runs(&s, *state, *limit, *json))
        }
        Command::Status {
            run: Some(run),
            json,
        } => server().and_then(|s| remote::status(&s, run, *json)),
        Command::Status { run: None, json } => server().and_then(|s| remote::domains(&s, *json)),
        Command::Events { run, json } => server().and_then(|s| remote::events(&s, run, *json)),
        Command::Retry(args) => server().and_then(|s| remote::retry(&s, args)),
        Command::Restart(args) => server().and_then(|s| remote::restart(&s, args)),
        Command::Compensate(args) => {
            server().and_then(|s| remote::act(&s, A::Compensate, args, None))
        }
        Command::Cancel(args) => server().and_then(|s| remote::act(&s, A::Cancel, args, None)),
        Command::Pause(args) => server().and_then(|s| remote::act(&s, A::Pause, args, None)),
        Command::AcceptDrift(args) => {
            server().and_then(|s| remote::act(&s, A::AcceptDrift, args, None))
        }
        Command::Reapply(args) => server().and_then(|s| remote::act(&s, A::Reapply, args, None)),
        Command::Flow {
            command: flow_cmd::FlowCommand::Versions { name },
        } => server().and_then(|s| flow_cmd::versions(&s, name)),
        Command::Signal {
            run,
            name,
            payload,
            key,
        } => server().and_then(|s| remote::signal(&s, run, name, payload, key.as_deref())),
        Command::Approve {
            run,
            step,
            reject,
            comment,
        } => server().and_then(|s| remote::approve(&s, run, step, *reject, comment.as_deref())),
        Command::Resume(args) => match resume_one(args) {
            Some(args) => server().and_then(|s| remote::act(&s, A::Resume, &args, None)),
            None => Err(anyhow::anyhow!(
                "over --server, resume names a run and a reason: settle resume RUN --reason WHY (the server resumes its own unfinished runs when it starts)"
            )),
        },
        _ => return None,
    })
}

/// `settle resume RUN --reason WHY` as an operator's command.
fn resume_one(args: &ResumeArgs) -> Option<operator::ActArgs> {
    Some(operator::ActArgs {
        run: args.run.clone()?,
        reason: args.reason.clone().unwrap_or_default(),
        json: args.json,
    })
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(url) = cli.server.as_deref().filter(|u| !u.is_empty()) {
        // Blocking HTTP (ureq) on this worker thread: nothing else runs.
        if let Some(result) = tokio::task::block_in_place(|| dispatch_remote(&cli, url)) {
            return result;
        }
    }
    match &cli.command {
        Command::Submit(_) => anyhow::bail!(
            "settle submit sends a run to a server: give --server URL (or set SETTLE_SERVER); to run a flow file here, use settle run"
        ),
        Command::Run(args) => run::run(&config(&cli)?, args).await,
        Command::Runs { state, limit, json } => {
            read::runs(&config(&cli)?, *state, *limit, *json).await
        }
        Command::Status {
            run: Some(run),
            json,
        } => read::status(&config(&cli)?, run, *json).await,
        Command::Status { run: None, .. } => anyhow::bail!(
            "name a run (settle status RUN), or give --server URL to see the server's failure domains: breakers, retry budgets and bulkheads live in the serving host"
        ),
        Command::Events { run, json } => read::events(&config(&cli)?, run, *json).await,
        Command::Plugins { json } => read::plugins(&config(&cli)?, *json).await,
        Command::Validate { flow } => read::validate(&config(&cli)?, flow).await,
        Command::Resume(args) => match resume_one(args) {
            Some(one) => {
                operator::act(&config(&cli)?, crate::model::OperatorAction::Resume, &one).await
            }
            None => run::resume(&config(&cli)?, args.json).await,
        },
        Command::Reindex { json } => read::reindex(&config(&cli)?, *json).await,
        Command::Retry(args) => operator::retry(&config(&cli)?, args).await,
        Command::Restart(args) => operator::restart(&config(&cli)?, args).await,
        Command::Compensate(args) => {
            operator::act(
                &config(&cli)?,
                crate::model::OperatorAction::Compensate,
                args,
            )
            .await
        }
        Command::Cancel(args) => {
            operator::act(&config(&cli)?, crate::model::OperatorAction::Cancel, args).await
        }
        Command::Pause(args) => {
            operator::act(&config(&cli)?, crate::model::OperatorAction::Pause, args).await
        }
        Command::AcceptDrift(args) => {
            operator::act(
                &config(&cli)?,
                crate::model::OperatorAction::AcceptDrift,
                args,
            )
            .await
        }
        Command::Reapply(args) => {
            operator::act(&config(&cli)?, crate::model::OperatorAction::Reapply, args).await
        }
        Command::Serve(args) => serve::serve(&config(&cli)?, args).await,
        Command::Flow { command } => flow_cmd::flow(&config(&cli)?, command).await,
        Command::Approve { .. } => anyhow::bail!(
            "approvals go to the serving host that drives the run: give --server URL (or set SETTLE_SERVER)"
        ),
        Command::Signal { .. } => anyhow::bail!(
            "signals go to the serving host that drives the run: give --server URL (or set SETTLE_SERVER)"
        ),
        Command::Plugin { command } => plugin_cmd::plugin(&config(&cli)?, command).await,
        Command::Token {
            command: TokenCommand::New { role, name },
        } => serve::token_new(role, name),
        Command::Demo => demo::demo(&config(&cli)?).await,
        Command::Bench(args) => bench::bench(&config(&cli)?, args).await,
        Command::Drill(args) => drill::drill(&config(&cli)?, args).await,
        Command::DemoService {
            listen,
            drift_hooks,
        } => {
            let data = cli
                .data
                .clone()
                .ok_or_else(|| anyhow::anyhow!("demo-service needs --data DIR"))?;
            settle_demo_service::serve(*listen, &data, *drift_hooks).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints a value as pretty JSON on stdout.
fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Formats Unix milliseconds as RFC 3339 UTC.
fn time(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}
