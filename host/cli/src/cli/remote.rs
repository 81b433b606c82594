//! The CLI as a client of a running `settle serve`: with `--server URL` (or
//! `SETTLE_SERVER`), `submit`, `status`, `runs`, `events` and the operator's
//! commands go over HTTP and print what they print on a local store (the
//! formatting is shared with `read.rs` and `operator.rs`). The token comes
//! from `SETTLE_TOKEN` and is sent as `Authorization: Bearer`.
//!
//! A problem document from the server (RFC 9457) becomes one line naming
//! the status and the detail; a server that cannot be reached is named.
//! Both end the command with exit code 2, like any refused command.

use super::operator::{ActArgs, RestartArgs, RetryArgs, print_acted};
use super::read::{parse_run, print_events, print_runs, print_status};
use super::run::{RunReport, progress_line};
use crate::engine::status::RunStatus;
use crate::model::{Event, OperatorAction, RunId, RunState};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::io::BufRead;
use std::process::ExitCode;
use std::time::Duration;

/// Longest a plain request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a run's stream is opened again after it ended early (the
/// server restarted, a proxy cut it) before the command gives up.
const MAX_RECONNECTS: u32 = 5;

/// A running `settle serve`.
pub struct Server {
    /// `http://host:port`, without a trailing slash.
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
    /// Without an overall timeout: a run's stream lasts as long as the run.
    streaming: ureq::Agent,
}

/// `settle submit`.
#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    /// The flow, by name, as the server offers it (`GET /v1/flows`).
    flow: String,
    /// The run input, as JSON.
    #[arg(long, default_value = "{}")]
    input: String,
    /// Deduplicates: the same key for the same flow returns the same run.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Follow the run to the end with a progress bar, then print its final
    /// status as JSON; the exit code is that of `settle run`.
    #[arg(long)]
    wait: bool,
    /// No progress bar with --wait.
    #[arg(long, short)]
    quiet: bool,
}

/// The part of a problem document the CLI shows.
#[derive(Deserialize, Default)]
struct Problem {
    #[serde(default)]
    title: String,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    errors: Vec<FieldError>,
}

#[derive(Deserialize)]
struct FieldError {
    at: String,
    message: String,
}

/// `GET /v1/runs`: one page.
#[derive(Deserialize)]
struct Page {
    runs: Vec<RunStatus>,
    next_cursor: Option<RunId>,
    #[serde(default)]
    unreadable: Vec<settle_types::store::Unreadable>,
}

/// `GET /v1/runs/{id}`: the status and what is known of each step.
#[derive(Deserialize)]
struct RunView {
    #[serde(flatten)]
    status: RunStatus,
    #[serde(default)]
    steps: Vec<StepView>,
}

#[derive(Deserialize)]
struct StepView {
    name: String,
    #[serde(default)]
    output: Option<Value>,
}

impl Server {
    /// The server at `url`, with the token of `SETTLE_TOKEN` if set.
    pub fn new(url: &str) -> anyhow::Result<Server> {
        let base = url.trim().trim_end_matches('/').to_string();
        anyhow::ensure!(
            base.starts_with("http://") || base.starts_with("https://"),
            "--server '{url}' is not an http:// URL (say e.g. http://127.0.0.1:7700)"
        );
        let token = std::env::var("SETTLE_TOKEN")
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        let agent = |global: Option<Duration>| -> ureq::Agent {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(CONNECT_TIMEOUT))
                .timeout_global(global)
                .build()
                .into()
        };
        Ok(Server {
            base,
            token,
            agent: agent(Some(REQUEST_TIMEOUT)),
            streaming: agent(None),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorize<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(t) => request.header("Authorization", format!("Bearer {t}")),
            None => request,
        }
    }

    /// The server could not be reached, or the exchange broke.
    fn unreachable(&self, e: ureq::Error) -> anyhow::Error {
        anyhow::anyhow!("cannot reach the server at {}: {e}", self.base)
    }

    /// A success body as `T`; a problem document as one line.
    fn answer<T: DeserializeOwned>(
        &self,
        what: &str,
        mut response: ureq::http::Response<ureq::Body>,
    ) -> anyhow::Result<(u16, T)> {
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(64 * 1024 * 1024)
            .read_to_string()
            .map_err(|e| self.unreachable(e))?;
        if status >= 400 {
            anyhow::bail!("{}", problem_line(what, status, &text));
        }
        let value = serde_json::from_str(&text).with_context(|| {
            format!("{what}: the server's answer ({status}) is not what a settle server sends")
        })?;
        Ok((status, value))
    }

    pub(super) fn get<T: DeserializeOwned>(&self, what: &str, path: &str) -> anyhow::Result<T> {
        let response = self
            .authorize(self.agent.get(self.url(path)))
            .call()
            .map_err(|e| self.unreachable(e))?;
        Ok(self.answer(what, response)?.1)
    }

    fn post<T: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> anyhow::Result<(u16, T)> {
        let mut request = self.authorize(self.agent.post(self.url(path)));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send_json(body).map_err(|e| self.unreachable(e))?;
        self.answer(what, response)
    }

    /// The run's status and step outputs, as `settle run` reports them.
    fn report(&self, run: RunId, existing: bool) -> anyhow::Result<RunReport> {
        let view: RunView = self.get(&format!("run {run}"), &format!("/v1/runs/{run}"))?;
        let outputs = view
            .steps
            .into_iter()
            .filter_map(|s| s.output.map(|o| (s.name, o)))
            .collect();
        Ok(RunReport {
            status: view.status,
            existing,
            outputs,
        })
    }

    /// Follows the run's event stream until it ends or waits for an
    /// operator, showing each status on `bar`. Reconnects (resuming after
    /// the last event seen) when the stream ends early.
    fn follow(&self, run: RunId, bar: &ProgressBar) -> anyhow::Result<()> {
        let mut last_id: Option<String> = None;
        for _ in 0..=MAX_RECONNECTS {
            let mut request = self
                .authorize(
                    self.streaming
                        .get(self.url(&format!("/v1/runs/{run}/stream"))),
                )
                .header("Accept", "text/event-stream");
            if let Some(id) = &last_id {
                request = request.header("Last-Event-ID", id);
            }
            let response = request.call().map_err(|e| self.unreachable(e))?;
            let status = response.status().as_u16();
            if status >= 400 {
                let text = response.into_body().read_to_string().unwrap_or_default();
                anyhow::bail!("{}", problem_line(&format!("run {run}"), status, &text));
            }
            let reader = std::io::BufReader::new(response.into_body().into_reader());
            let (mut event, mut data) = (String::new(), String::new());
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if line.is_empty() {
                    if matches!(event.as_str(), "status" | "progress")
                        && let Ok(s) = serde_json::from_str::<RunStatus>(&data)
                    {
                        bar.set_message(progress_line(&s));
                        if stops_here(s.state) {
                            return Ok(());
                        }
                    }
                    event.clear();
                    data.clear();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                } else if let Some(v) = line.strip_prefix("id:") {
                    last_id = Some(v.trim().to_string());
                }
            }
            // The stream ended: the run may have ended with it.
            let s: RunStatus = self.get(&format!("run {run}"), &format!("/v1/runs/{run}"))?;
            bar.set_message(progress_line(&s));
            if stops_here(s.state) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        anyhow::bail!(
            "the server at {} closed the stream of run {run} {} times before it ended; `settle status {run} --server {}` tells where it stands",
            self.base,
            MAX_RECONNECTS + 1,
            self.base
        )
    }
}

/// Where following a run stops: it ended, or waits for an operator.
fn stops_here(state: RunState) -> bool {
    state.is_terminal() || state == RunState::NeedsAttention
}

/// One line for a problem document: `run X: 404 Not Found: no run X (at: message)`.
fn problem_line(what: &str, status: u16, body: &str) -> String {
    let problem: Problem = serde_json::from_str(body).unwrap_or_default();
    let reason = ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let title = if problem.title.is_empty() {
        reason
    } else {
        problem.title.as_str()
    };
    let detail = if problem.detail.is_empty() {
        settle_types::bounds::cut(body.trim(), 200)
    } else {
        problem.detail.clone()
    };
    let mut line = format!("{what}: the server answered {status} {title}: {detail}");
    if !problem.errors.is_empty() {
        let at: Vec<String> = problem
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.at, e.message))
            .collect();
        line.push_str(&format!(" ({})", at.join("; ")));
    }
    line
}

/// Percent-encodes one path segment or query value.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn progress_bar(quiet: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        None,
        if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}").unwrap_or(ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

/// Exit code of `settle run` for a run's final state.
fn run_exit(state: RunState) -> ExitCode {
    match state {
        RunState::Settled => ExitCode::SUCCESS,
        RunState::NeedsAttention => ExitCode::from(super::EXIT_HELD),
        _ => ExitCode::from(1),
    }
}

pub fn submit(server: &Server, args: &SubmitArgs) -> anyhow::Result<ExitCode> {
    let input: Value = serde_json::from_str(&args.input).context("--input is not valid JSON")?;
    let mut headers = Vec::new();
    if let Some(key) = &args.idempotency_key {
        headers.push(("Idempotency-Key", key.as_str()));
    }
    #[derive(Deserialize)]
    struct Accepted {
        run_id: RunId,
        #[serde(default)]
        existing: bool,
    }
    let (_, accepted): (u16, Accepted) = server.post(
        &format!("flow '{}'", args.flow),
        &format!("/v1/flows/{}/runs", encode(&args.flow)),
        &headers,
        &input,
    )?;
    let run = accepted.run_id;
    if !args.wait {
        outln!("{run}");
        return Ok(ExitCode::SUCCESS);
    }
    // stdout carries the final JSON; the id is on stderr at once, so it is
    // known even if the wait is interrupted.
    eprintln!(
        "run {run} {}",
        if accepted.existing {
            "(existing: the idempotency key named it)"
        } else {
            "accepted"
        }
    );
    let bar = progress_bar(args.quiet);
    let followed = server.follow(run, &bar);
    bar.finish_and_clear();
    followed?;
    let report = server.report(run, accepted.existing)?;
    super::print_json(&report)?;
    Ok(run_exit(report.status.state))
}

pub fn status(server: &Server, run: &str, json: bool) -> anyhow::Result<ExitCode> {
    let run = parse_run(run)?;
    let status: RunStatus = server.get(&format!("run {run}"), &format!("/v1/runs/{run}"))?;
    print_status(&status, json)?;
    Ok(ExitCode::SUCCESS)
}

/// `settle status --server URL` without a run: the failure domains.
pub fn domains(server: &Server, json: bool) -> anyhow::Result<ExitCode> {
    let views: serde_json::Value = server.get("failure domains", "/v1/breakers")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&views)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list = |key: &str| views[key].as_array().cloned().unwrap_or_default();
    let (breakers, budgets, bulkheads) =
        (list("breakers"), list("retry_budgets"), list("bulkheads"));
    if breakers.is_empty() && budgets.is_empty() && bulkheads.is_empty() {
        println!("no circuit breaker, retry budget or bulkhead is configured");
    }
    for b in &breakers {
        println!(
            "breaker  {:<32} {:<9} {} of {} recent attempts failed",
            b["domain"].as_str().unwrap_or("?"),
            b["state"].as_str().unwrap_or("?"),
            b["failures"],
            b["calls"]
        );
    }
    for b in &budgets {
        println!(
            "budget   {:<32} {} retries of {} allowed for {} first attempts in {} s",
            b["domain"].as_str().unwrap_or("?"),
            b["retries"],
            b["allowed"].as_f64().unwrap_or_default().floor(),
            b["first_attempts"],
            b["window_ms"].as_u64().unwrap_or_default() / 1000
        );
    }
    for b in &bulkheads {
        println!(
            "bulkhead {:<32} {} of at most {} calls in flight",
            b["plugin"].as_str().unwrap_or("?"),
            b["in_flight"],
            b["max_in_flight"]
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `settle signal RUN NAME --payload JSON [--key K] --server URL`.
pub fn signal(
    server: &Server,
    run: &str,
    name: &str,
    payload: &str,
    key: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let run = parse_run(run)?;
    let payload: Value = serde_json::from_str(payload).context("--payload is not JSON")?;
    let mut body = serde_json::json!({ "payload": payload });
    if let Some(key) = key {
        body["idempotency_key"] = Value::String(key.to_string());
    }
    let (status, answer): (u16, Value) = server.post(
        &format!("signal {name} to run {run}"),
        &format!("/v1/runs/{run}/signals/{name}"),
        &[],
        &body,
    )?;
    if status == 201 {
        outln!("signal {name} recorded for run {run}");
    } else if answer["duplicate"] == true {
        outln!("signal {name} was already received under that key: not recorded again");
    }
    Ok(ExitCode::SUCCESS)
}

/// `settle approve RUN STEP [--reject] [--comment C] --server URL`.
pub fn approve(
    server: &Server,
    run: &str,
    step: &str,
    reject: bool,
    comment: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let run = parse_run(run)?;
    let decision = if reject { "reject" } else { "approve" };
    let mut body = serde_json::json!({ "decision": decision });
    if let Some(c) = comment {
        body["comment"] = Value::String(c.to_string());
    }
    let (status, _): (u16, Value) = server.post(
        &format!("{decision} step {step} of run {run}"),
        &format!("/v1/runs/{run}/approvals/{step}"),
        &[],
        &body,
    )?;
    if status == 201 {
        outln!("{decision} recorded for step {step} of run {run}");
    } else {
        outln!("you had decided on step {step} of run {run} already: the first decision stands");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn events(server: &Server, run: &str, json: bool) -> anyhow::Result<ExitCode> {
    let run = parse_run(run)?;
    #[derive(Deserialize)]
    struct Events {
        events: Vec<Event>,
    }
    let answer: Events = server.get(&format!("run {run}"), &format!("/v1/runs/{run}/events"))?;
    anyhow::ensure!(!answer.events.is_empty(), "no run {run}");
    print_events(&answer.events, json)?;
    Ok(ExitCode::SUCCESS)
}

pub fn runs(
    server: &Server,
    state: Option<RunState>,
    limit: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut statuses = Vec::new();
    let mut cursor: Option<RunId> = None;
    // Page by page, as on a local store; the server bounds each page.
    while statuses.len() < limit {
        let want = (limit - statuses.len()).min(crate::engine::queries::MAX_PAGE);
        let mut path = format!("/v1/runs?limit={want}");
        if let Some(s) = state {
            path.push_str(&format!("&state={}", s.as_str()));
        }
        if let Some(c) = cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page: Page = server.get("runs", &path)?;
        for skipped in &page.unreadable {
            eprintln!("warning: {skipped}; skipped");
        }
        statuses.extend(page.runs);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    statuses.truncate(limit);
    print_runs(&statuses, json)?;
    Ok(ExitCode::SUCCESS)
}

/// `retry`, `compensate`, `cancel`, `pause`, `resume RUN`: recorded with
/// the token's name; then follows the run until it stops moving, as the
/// local command does.
pub fn act(
    server: &Server,
    action: OperatorAction,
    args: &ActArgs,
    step: Option<&str>,
) -> anyhow::Result<ExitCode> {
    super::operator::check_reason(&args.reason)?;
    let run = parse_run(&args.run)?;
    let mut body = json!({ "reason": args.reason });
    if let Some(step) = step {
        let field = match action {
            OperatorAction::Restart => "from_step",
            _ => "step",
        };
        body[field] = json!(step);
    }
    let (_, _answer): (u16, Value) = server.post(
        &format!("{} run {run}", action.as_str()),
        &format!("/v1/runs/{run}/{}", action.as_str()),
        &[],
        &body,
    )?;
    // Applied (200) or deferred to the next step boundary (202): either
    // way the run's stream says when it stops moving.
    server.follow(run, &ProgressBar::hidden())?;
    print_acted(&server.report(run, true)?, args.json)
}

pub fn restart(server: &Server, args: &RestartArgs) -> anyhow::Result<ExitCode> {
    act(
        server,
        OperatorAction::Restart,
        &args.act,
        Some(&args.from_step),
    )
}

pub fn retry(server: &Server, args: &RetryArgs) -> anyhow::Result<ExitCode> {
    act(
        server,
        OperatorAction::Retry,
        &args.act,
        args.step.as_deref(),
    )
}
