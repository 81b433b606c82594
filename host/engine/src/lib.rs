//! # settle-engine
//!
//! The engine: accepts runs, drives each through its flow as a saga, and
//! resumes unfinished runs after a restart.
//!
//! It knows the store only through [`Store`] and the runtime only through
//! [`Executor`]. Every state change is decided by a pure function
//! ([`transitions`]) and committed as events before anyone may rely on it:
//! a step's completion and the next step's schedule go out in one commit,
//! and only then is the next step called.

mod driver;
pub use settle_types::retry;
pub mod breakers;
pub mod catalog;
pub mod domains;
pub mod expectations;
pub mod guarantees;
mod items;
pub mod queries;
pub mod rechecks;
pub mod retry_budget;
pub mod status;
pub mod transitions;
pub mod upgrades;

use serde_json::Value;
use settle_flow::{Flow, StepDef};
use settle_types::clock::{Clock, SystemClock};
use settle_types::executor::Executor;
use settle_types::observe::{Observer, SharedObserver};
use settle_types::store::{
    Commit, CommitOutcome, IdempotencyClaim, RunFilter, RunQueries, StoreError,
};
use settle_types::{Event, EventKind, RunId, RunSummary, SCHEMA_VERSION, Source};
use status::{Progress, RunStatus};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;
use uuid::Uuid;

/// How the engine runs.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Runs executing a step at once; runs waiting for a timer do not count.
    pub max_runs_in_flight: usize,
    /// Where the engine reads the time of its decisions (event times, due
    /// times of retries): the wall clock, or a test's own.
    pub clock: EngineClock,
    /// Circuit breakers, retry budgets and bulkheads (none by default).
    pub domains: domains::DomainPolicies,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_runs_in_flight: 1024,
            clock: EngineClock::default(),
            domains: domains::DomainPolicies::default(),
        }
    }
}

/// The engine's clock: any [`Clock`], shared.
#[derive(Clone)]
pub struct EngineClock(pub Arc<dyn Clock>);

impl Default for EngineClock {
    fn default() -> Self {
        EngineClock(Arc::new(SystemClock))
    }
}

impl std::fmt::Debug for EngineClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineClock")
    }
}

/// Why a run was not accepted. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The run input does not give a step what its plugin needs.
    #[error("input rejected: step '{step}' (plugin '{plugin}'): {problem}")]
    InvalidInput {
        step: String,
        plugin: String,
        problem: String,
    },
    /// A step's plugin is not installed.
    #[error("step '{step}' uses plugin '{plugin}', which is not installed")]
    UnknownPlugin { step: String, plugin: String },
    /// The input or the idempotency key is over the host's bounds
    /// (see [`settle_types::bounds`]).
    #[error("{what} rejected: {problem}")]
    OverBounds { what: &'static str, problem: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The answer to a submission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submitted {
    pub run_id: RunId,
    /// True when the idempotency key named an existing run: nothing new was started.
    pub existing: bool,
}

/// What `resume` found.
#[derive(Clone, Debug, Default)]
pub struct Resumed {
    pub runs: Vec<RunId>,
    /// Runs that cannot be driven, and why (their flow cannot be read).
    pub stuck: Vec<(RunId, String)>,
    /// Records that could not be read: skipped, so the others go on.
    pub unreadable: Vec<settle_types::store::Unreadable>,
}

/// Why an operator's command was not applied. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("no run {0}")]
    NoSuchRun(RunId),
    /// This process is driving the run right now.
    #[error("run {0} is being driven right now; act on it once it waits for an operator")]
    Busy(RunId),
    #[error("cannot {action} run {run}: {refused}")]
    Refused {
        run: RunId,
        action: &'static str,
        refused: transitions::Refused,
    },
    #[error("cannot {action} run {run}: {why}")]
    FlowUnreadable {
        run: RunId,
        action: &'static str,
        why: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who decides on an approval: the token's name and role, and whether
/// tokens tell people apart at all (without them everyone is `local`).
#[derive(Clone, Copy, Debug)]
pub struct Approver<'a> {
    pub name: &'a str,
    pub role: &'a str,
    pub identified: bool,
    /// Who handed out the link the decision came through, when it came
    /// through one: the log says so, apart from the person's own token.
    pub via_link_from: Option<&'a str>,
}

/// Why a signal was not taken. Nothing was recorded.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("no run {0}")]
    NoSuchRun(RunId),
    #[error("run {run} has ended ({state}): it waits for no signal")]
    Ended { run: RunId, state: String },
    #[error("run {run}'s flow waits for no signal '{name}' (it waits for: {known})")]
    Unknown {
        run: RunId,
        name: String,
        known: String,
    },
    #[error("signal '{name}': {problem}")]
    Invalid { name: String, problem: String },
    #[error("run {0} has received the most signals one run keeps ({max})", max = settle_types::summary::MAX_SIGNALS)]
    TooMany(RunId),
    #[error(
        "no unfinished run of flow '{flow}' waits for signal '{name}' correlating on '{value}'"
    )]
    NotCorrelated {
        flow: String,
        name: String,
        value: String,
    },
    #[error("{runs} unfinished runs correlate on '{value}': address one by its id")]
    Ambiguous { runs: usize, value: String },
    #[error(transparent)]
    Act(#[from] ActError),
}

/// Most runs of a flow looked through for a correlation value.
pub const MAX_CORRELATED_RUNS: usize = 10_000;

/// Largest signal payload, as JSON text.
pub const MAX_SIGNAL_BYTES: usize = 64 * 1024;
/// Most payload bytes of all the signals one run keeps: they live in its
/// summary, rewritten on each of its commits.
pub const MAX_SIGNALS_BYTES: usize = 256 * 1024;

/// An operator's command, with who gave it and why (both recorded).
#[derive(Clone, Debug)]
pub struct OperatorCommand {
    pub action: settle_types::OperatorAction,
    pub by: String,
    pub reason: String,
    /// `settle retry --step S`: the step the operator means.
    pub step: Option<String>,
}

/// The retry policy a plugin suggests in its manifest, bounded as a flow's
/// own would be (at least one attempt, coefficient 1–100).
fn suggested_policy(s: &settle_types::executor::SuggestedRetry) -> retry::RetryPolicy {
    let coefficient = if s.backoff_coefficient.is_finite() {
        s.backoff_coefficient.clamp(1.0, 100.0)
    } else {
        2.0
    };
    retry::RetryPolicy {
        max_attempts: s.max_attempts.clamp(1, 100),
        initial_interval: std::time::Duration::from_millis(s.initial_interval_ms),
        backoff_coefficient: coefficient,
        max_interval: std::time::Duration::from_millis(s.max_interval_ms)
            .min(retry::MAX_RETRY_DELAY),
        ..retry::RetryPolicy::default()
    }
}

/// The engine. Cheap to clone.
pub struct Engine<S: RunQueries, X: Executor> {
    inner: Arc<Inner<S, X>>,
}

impl<S: RunQueries, X: Executor> Clone for Engine<S, X> {
    fn clone(&self) -> Self {
        Engine {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<S, X> {
    store: S,
    executor: X,
    permits: Semaphore,
    /// `max_runs_in_flight`: the permits there are.
    capacity: usize,
    /// Runs driven by this process.
    live: Mutex<HashMap<RunId, Live>>,
    /// Parsed flows by digest.
    flows: Mutex<HashMap<String, Arc<Flow>>>,
    /// Accept runs without driving them (benchmarks and drills of recovery).
    paused: AtomicBool,
    /// Set once: drivers stop at their next wait.
    shutdown: watch::Sender<bool>,
    /// Told what was committed and called, once set (metrics).
    observer: std::sync::OnceLock<SharedObserver>,
    /// The flows offered by name, once set: where a run finds the version
    /// to upgrade to (`upgrade: at-step-boundary`).
    catalog: std::sync::OnceLock<Arc<catalog::FlowCatalog>>,
    clock: Arc<dyn Clock>,
    /// How long runs usually take, per flow (statuses say it).
    expectations: Arc<expectations::Expectations>,
    domains: domains::Domains,
}

/// What only the driving process knows about a run.
struct Live {
    updates: watch::Sender<Arc<RunSummary>>,
    running: bool,
    progress: Option<Progress>,
    /// A pause or cancel for the driver to apply at its next step boundary.
    interrupt: Option<OperatorCommand>,
    /// Events that change nothing (user reports) for the driver to record
    /// between actions, each with whom to tell once it is durable.
    notes: Vec<(EventKind, tokio::sync::oneshot::Sender<Result<(), String>>)>,
    wake: Arc<tokio::sync::Notify>,
}

impl Live {
    fn new(summary: Arc<RunSummary>) -> Self {
        Live {
            updates: watch::channel(summary).0,
            running: false,
            progress: None,
            interrupt: None,
            notes: Vec::new(),
            wake: Arc::new(tokio::sync::Notify::new()),
        }
    }
}

/// How busy the engine is: see [`Engine::in_flight`].
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct InFlight {
    /// Runs executing a step now.
    pub executing: usize,
    /// `max_runs_in_flight`.
    pub capacity: usize,
    /// Runs this process drives (executing, or waiting on a timer).
    pub driven: usize,
}

/// What became of an operator's request.
#[derive(Clone, Debug)]
pub enum Requested {
    /// Applied and recorded; the run's summary after it.
    Applied(Box<RunSummary>),
    /// The run is being driven right now: its driver applies the command
    /// at the next step boundary (an attempt in progress finishes and is
    /// recorded first).
    Deferred,
}

impl<S: RunQueries, X: Executor> Engine<S, X> {
    pub fn new(store: S, executor: X, options: EngineOptions) -> Self {
        Engine {
            inner: Arc::new(Inner {
                store,
                executor,
                permits: Semaphore::new(options.max_runs_in_flight.max(1)),
                capacity: options.max_runs_in_flight.max(1),
                live: Mutex::new(HashMap::new()),
                flows: Mutex::new(HashMap::new()),
                paused: AtomicBool::new(false),
                shutdown: watch::channel(false).0,
                observer: std::sync::OnceLock::new(),
                catalog: std::sync::OnceLock::new(),
                clock: options.clock.0,
                expectations: Arc::default(),
                domains: domains::Domains::new(options.domains),
            }),
        }
    }

    /// The time of a decision, by the engine's clock.
    pub(crate) fn now(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// While paused, runs are accepted and recorded but not driven: they
    /// wait, as after a crash, for a host to resume them.
    pub fn set_paused(&self, paused: bool) {
        self.inner.paused.store(paused, Ordering::Relaxed);
    }

    pub fn is_paused(&self) -> bool {
        self.inner.paused.load(Ordering::Relaxed)
    }

    /// How busy this process is right now: runs executing a step (holding
    /// one of `max_runs_in_flight` permits) and runs it drives at all
    /// (executing or waiting on a timer).
    pub fn in_flight(&self) -> InFlight {
        let driven = self.inner.lock_live().len();
        InFlight {
            executing: self
                .inner
                .capacity
                .saturating_sub(self.inner.permits.available_permits()),
            capacity: self.inner.capacity,
            driven,
        }
    }

    /// Tells `observer` what the engine commits and calls from now on
    /// (see [`settle_types::observe`]). Set once; a second call is ignored.
    pub fn observe(&self, observer: SharedObserver) {
        let _ = self.inner.observer.set(observer);
    }

    /// Lets runs move to the current version of their flow between steps,
    /// when that version asks for it (`upgrade: at-step-boundary`).
    pub fn offer_upgrades(&self, catalog: Arc<catalog::FlowCatalog>) {
        let _ = self.inner.catalog.set(catalog);
    }

    pub(crate) fn observer(&self) -> Option<&dyn Observer> {
        self.inner.observer.get().map(|o| &**o)
    }

    pub fn store(&self) -> &S {
        &self.inner.store
    }

    pub fn executor(&self) -> &X {
        &self.inner.executor
    }

    /// Accepts a run of `flow` and starts driving it. Returns once the run is
    /// durably recorded. With an idempotency key already used for this flow
    /// (inside the flow's window), returns that run instead.
    pub async fn submit(
        &self,
        flow: &Arc<Flow>,
        input: Value,
        key: Option<String>,
    ) -> Result<Submitted, SubmitError> {
        self.submit_as(flow, input, key, None).await
    }

    /// [`Engine::submit`], recording who submitted the run.
    pub async fn submit_as(
        &self,
        flow: &Arc<Flow>,
        input: Value,
        key: Option<String>,
        by: Option<String>,
    ) -> Result<Submitted, SubmitError> {
        use settle_types::bounds;
        if let Some(key) = &key
            && key.len() > bounds::MAX_IDEMPOTENCY_KEY_BYTES
        {
            return Err(SubmitError::OverBounds {
                what: "idempotency key",
                problem: format!(
                    "{} bytes; the limit is {} bytes",
                    key.len(),
                    bounds::MAX_IDEMPOTENCY_KEY_BYTES
                ),
            });
        }
        bounds::check_json(&input, bounds::MAX_INPUT_BYTES).map_err(|e| {
            SubmitError::OverBounds {
                what: "run input",
                problem: e.to_string(),
            }
        })?;
        if let Some(key) = &key
            && let Some(run_id) = self
                .inner
                .store
                .find_idempotent(
                    &flow.name,
                    key,
                    u64::try_from(flow.idempotency_window.as_millis()).unwrap_or(u64::MAX),
                    self.now(),
                )
                .await?
        {
            if let Some(o) = self.observer() {
                o.idempotent_repeat(&flow.name);
            }
            return Ok(Submitted {
                run_id,
                existing: true,
            });
        }
        let run_id = RunId::new();
        self.check_input(flow, &input, run_id)?;
        self.inner
            .store
            .put_flow(&flow.digest, &flow.source)
            .await?;
        let flow = &self.remember_flow(flow);

        let now = self.now();
        let accepted = EventKind::RunAccepted {
            flow: flow.name.clone(),
            flow_version: flow.version.clone(),
            flow_digest: flow.digest.clone(),
            steps: flow.steps.iter().map(|s| s.name.clone()).collect(),
            input,
            idempotency_key: key.clone(),
            submitted_by: by.map(|b| settle_types::bounds::cut(&b, 256)),
            catalog: settle_types::messages::CATALOG_VERSION,
            plugins: flow
                .steps
                .iter()
                .flat_map(StepDef::calls)
                .filter_map(|s| {
                    let p = self.inner.executor.plugin(&s.plugin)?;
                    Some((s.plugin.clone(), p.digest.clone()))
                })
                .collect(),
        };
        let first = Event {
            v: SCHEMA_VERSION,
            id: Uuid::now_v7(),
            run_id,
            seq: 0,
            at_ms: now,
            step: None,
            operation_id: None,
            attempt: None,
            source: Source::host(),
            causation: None,
            trace_id: run_id.trace_id(),
            kind: accepted,
        };
        let Some(mut summary) = RunSummary::from_first(&first) else {
            unreachable!("a run-accepted event always starts a summary")
        };
        let step0 = &flow.steps[0];
        let scheduled = driver::draft(
            &summary,
            EventKind::StepScheduled {
                index: 0,
                attempt: 1,
                max_attempts: step0.retry.max_attempts,
                not_before_ms: now,
            },
            Some(0),
            Source::host(),
            now,
        );
        summary.apply(&scheduled);
        // Keys are scoped by flow name, not version: a client retrying across a
        // flow upgrade still finds its run.
        let claim = key.map(|key| IdempotencyClaim {
            flow: flow.name.clone(),
            key,
            window_ms: u64::try_from(flow.idempotency_window.as_millis()).unwrap_or(u64::MAX),
        });
        let events = vec![first, scheduled];
        // Kept for the observer only: the commit takes the events.
        let observed = self
            .observer()
            .map(|_| settle_types::observe::without_payloads(&events));
        let commit = Commit {
            run_id,
            events,
            summary: summary.clone(),
            claim,
        };
        match self.inner.store.commit(commit).await? {
            CommitOutcome::Duplicate(existing) => {
                if let Some(o) = self.observer() {
                    o.idempotent_repeat(&flow.name);
                }
                Ok(Submitted {
                    run_id: existing,
                    existing: true,
                })
            }
            CommitOutcome::Committed => {
                if let (Some(o), Some(events)) = (self.observer(), &observed) {
                    o.committed(None, events, &summary);
                }
                if !self.is_paused() {
                    self.spawn(summary, flow.clone(), false);
                }
                Ok(Submitted {
                    run_id,
                    existing: false,
                })
            }
        }
    }

    /// Checks what can be checked before accepting: every plugin installed,
    /// and every step input that depends only on the run input matches its
    /// plugin's schema.
    fn check_input(&self, flow: &Flow, input: &Value, run_id: RunId) -> Result<(), SubmitError> {
        let run_id = run_id.to_string();
        let scope = settle_flow::template::Scope {
            input,
            outputs: &[],
            run_id: &run_id,
        };
        for step in flow.steps.iter().flat_map(StepDef::calls) {
            let Some(plugin) = self.inner.executor.plugin(&step.plugin) else {
                return Err(SubmitError::UnknownPlugin {
                    step: step.name.clone(),
                    plugin: step.plugin.clone(),
                });
            };
            if !step.input.depends_only_on_input() {
                continue;
            }
            let invalid = |problem: String| SubmitError::InvalidInput {
                step: step.name.clone(),
                plugin: step.plugin.clone(),
                problem,
            };
            let value = step.input.render(&scope).map_err(invalid)?;
            plugin.check_input(&value).map_err(invalid)?;
        }
        Ok(())
    }

    /// Keeps the flow for its runs, with the retry policy each plugin
    /// suggests wherever the flow sets none; returns the flow runs use.
    fn remember_flow(&self, flow: &Arc<Flow>) -> Arc<Flow> {
        let mut flows = self.inner.flows.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = flows.get(&flow.digest) {
            return known.clone();
        }
        let executor = &self.inner.executor;
        let resolved = Arc::new(Flow::clone(flow).with_suggested_retry(|plugin| {
            executor
                .plugin(plugin)
                .and_then(|p| p.manifest.retry.as_ref().map(suggested_policy))
        }));
        // Resolved while a plugin is missing: not kept, so the plugin's own
        // suggestion applies once it is back.
        if flow
            .steps
            .iter()
            .flat_map(StepDef::calls)
            .all(|s| executor.plugin(&s.plugin).is_some())
        {
            flows.insert(flow.digest.clone(), resolved.clone());
        }
        resolved
    }

    /// The flow a run was accepted under, from memory or from the store.
    pub async fn flow_for(&self, summary: &RunSummary) -> Result<Arc<Flow>, String> {
        if let Some(f) = self
            .inner
            .flows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&summary.flow_digest)
        {
            return Ok(f.clone());
        }
        let text = self
            .inner
            .store
            .get_flow(&summary.flow_digest)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "flow {} (digest {}) is not in the store",
                    summary.flow, summary.flow_digest
                )
            })?;
        let flow = Arc::new(
            Flow::parse(&text, &format!("{}@{}", summary.flow, summary.flow_version))
                .map_err(|e| e.to_string())?,
        );
        Ok(self.remember_flow(&flow))
    }

    /// Resumes every run that is not terminal, from its log.
    /// Runs waiting for an operator are not among them (see [`Engine::act`]).
    /// A record that cannot be read is reported and skipped.
    pub async fn resume(&self) -> Result<Resumed, StoreError> {
        let mut resumed = Resumed::default();
        let active = self.inner.store.active_runs().await?;
        resumed.unreadable = active.unreadable;
        for summary in active.items {
            let run = summary.run_id;
            if !self.claim(run) {
                continue;
            }
            match self.flow_for(&summary).await {
                Ok(flow) => {
                    self.spawn(summary, flow, true);
                    resumed.runs.push(run);
                }
                Err(why) => {
                    self.release(run);
                    resumed.stuck.push((run, why));
                }
            }
        }
        Ok(resumed)
    }

    /// Applies an operator's command to a run that is not being driven:
    /// records who did what and why, with the action it implies, in one
    /// commit, then drives the run on if there is more to do.
    pub async fn act(&self, run: RunId, command: OperatorCommand) -> Result<RunSummary, ActError> {
        // Claimed for the whole command: no driver, resume or second command
        // can write to this run meanwhile. A driver that has just recorded
        // a hold or an end lets go in an instant: wait for that, not longer.
        let claimed = self.claim(run) || (self.wait_for_driver_exit(run).await && self.claim(run));
        if !claimed {
            return Err(ActError::Busy(run));
        }
        match self.act_claimed(run, command).await {
            Ok((summary, Some(flow))) if !summary.state.is_terminal() && !self.is_paused() => {
                self.spawn(summary.clone(), flow, false);
                Ok(summary)
            }
            outcome => {
                self.release(run);
                outcome.map(|(summary, _)| summary)
            }
        }
    }

    /// Waits (at most 2 s) for the driver of `run` to let go, if what it
    /// last recorded stops it (a hold or an end); false when it is still
    /// moving the run.
    async fn wait_for_driver_exit(&self, run: RunId) -> bool {
        let Some(mut updates) = self.watch(run) else {
            return true;
        };
        // The store may be a step ahead of the driver's own copy: it
        // commits first, then tells the watchers.
        let stopping = updates.borrow().state.is_terminal()
            || matches!(self.inner.store.summary(run).await, Ok(Some(s)) if s.state.is_terminal());
        if !stopping {
            return false;
        }
        let exited = async { while updates.changed().await.is_ok() {} };
        tokio::time::timeout(std::time::Duration::from_secs(2), exited)
            .await
            .is_ok()
    }

    /// Like [`Engine::act`], but a pause or cancel of a run this process
    /// is driving is handed to its driver instead of refused.
    pub async fn request(
        &self,
        run: RunId,
        command: OperatorCommand,
    ) -> Result<Requested, ActError> {
        use settle_types::OperatorAction::{Cancel, Pause};
        let interruptible = matches!(command.action, Pause | Cancel);
        match self.act(run, command.clone()).await {
            Err(ActError::Busy(_)) if interruptible => {
                let mut live = self.inner.lock_live();
                match live.get_mut(&run) {
                    Some(l) => {
                        l.interrupt = Some(command);
                        l.wake.notify_one();
                        Ok(Requested::Deferred)
                    }
                    // The driver stopped in between: the caller may ask again.
                    None => Err(ActError::Busy(run)),
                }
            }
            outcome => outcome.map(|s| Requested::Applied(Box::new(s))),
        }
    }

    /// The events an operator's command implies for a run, led by the
    /// audit record of who did it and why.
    fn decide(
        flow: Option<&Flow>,
        summary: &RunSummary,
        command: &OperatorCommand,
        now: u64,
    ) -> Result<Vec<(EventKind, Option<u32>, Source)>, transitions::Refused> {
        let then = match flow {
            Some(flow) if command.action != settle_types::OperatorAction::Cancel => {
                transitions::operator_command(
                    flow,
                    summary,
                    command.action,
                    command.step.as_deref(),
                    now,
                )
            }
            _ => transitions::cancel(summary),
        }?;
        let acted = EventKind::OperatorActed {
            action: command.action,
            by: settle_types::bounds::cut(&command.by, 256),
            reason: settle_types::bounds::cut_detail(&command.reason),
        };
        Ok(std::iter::once(acted)
            .chain(then)
            .map(|kind| {
                let step = match &kind {
                    EventKind::StepScheduled { index, .. }
                    | EventKind::CompensationScheduled { index, .. }
                    | EventKind::StepFailed { index, .. } => Some(*index),
                    _ => None,
                };
                (kind, step, Source::host())
            })
            .collect())
    }

    /// Applies an interrupt (pause or cancel) from inside the run's driver.
    pub(crate) async fn apply_interrupt(
        &self,
        summary: &mut RunSummary,
        flow: &Flow,
        command: OperatorCommand,
    ) -> Result<(), StoreError> {
        let now = self.now();
        match Self::decide(Some(flow), summary, &command, now) {
            Ok(events) => self.record(summary, events, now).await,
            Err(refused) => {
                tracing::warn!(run = %summary.run_id, "{} refused: {refused}", command.action.as_str());
                Ok(())
            }
        }
    }

    /// Delivers signal `name` to `run`: checked against what the run's
    /// flow waits for (name, payload schema), then recorded durably before
    /// this returns. A signal sent before the run reaches its step is kept
    /// and taken there. `Ok(false)`: a repeat under the same idempotency
    /// key, not recorded again.
    pub async fn signal(
        &self,
        run: RunId,
        name: &str,
        payload: serde_json::Value,
        key: Option<String>,
        by: String,
    ) -> Result<bool, SignalError> {
        let Some((summary, flow)) = self
            .run_for_signal(run, "signal", |s| s.is_repeat(name, key.as_deref()))
            .await?
        else {
            return Ok(false);
        };
        let waiting: Vec<(usize, &settle_flow::Signal)> = flow
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.signal.as_ref().filter(|g| g.name == name).map(|g| (i, g)))
            .collect();
        if waiting.is_empty() {
            let known = flow.signal_names();
            return Err(SignalError::Unknown {
                run,
                name: settle_types::bounds::cut(name, 64),
                known: if known.is_empty() {
                    "nothing".into()
                } else {
                    known.join(", ")
                },
            });
        }
        // The step that will take it: the first of that name not yet done,
        // after those the signals already kept will go to.
        let kept = summary
            .signals
            .iter()
            .filter(|s| s.name == name && s.taken_by.is_none())
            .count();
        let Some((_, spec)) = waiting
            .iter()
            .filter(|(i, _)| summary.outputs.get(*i).is_some_and(Option::is_none))
            .nth(kept)
        else {
            return Err(SignalError::Ended {
                run,
                state: format!(
                    "{}, and no step of it waits for another '{}'",
                    summary.state.as_str(),
                    settle_types::bounds::cut(name, 64)
                ),
            });
        };
        let invalid = |problem: String| SignalError::Invalid {
            name: name.to_string(),
            problem,
        };
        if let Some(from) = &spec.from
            && from != &by
        {
            return Err(invalid(format!(
                "only {from} may send it, not {}",
                settle_types::bounds::cut(&by, 80)
            )));
        }
        settle_types::bounds::check_json(&payload, MAX_SIGNAL_BYTES)
            .map_err(|e| invalid(format!("payload {e}")))?;
        spec.check_payload(&payload).map_err(invalid)?;
        let kept_bytes: usize = summary
            .signals
            .iter()
            .map(|s| settle_types::bounds::json_len(&s.payload))
            .sum();
        if kept_bytes.saturating_add(settle_types::bounds::json_len(&payload)) > MAX_SIGNALS_BYTES {
            return Err(SignalError::TooMany(run));
        }
        if summary.signals.len() >= settle_types::summary::MAX_SIGNALS {
            return Err(SignalError::TooMany(run));
        }
        let before = summary.signals.len();
        let kind = EventKind::SignalReceived {
            name: name.to_string(),
            payload,
            key: key.clone(),
            by,
        };
        self.annotate(run, kind).await?;
        // Said from what the log kept: a delivery racing this one under the
        // same key, or the last room taken meanwhile, is not "recorded".
        let after = self.summary_for_signal(run).await?;
        let kept = after.signals.len() > before;
        if !kept && after.is_repeat(name, key.as_deref()) {
            return Ok(false);
        }
        if !kept {
            return Err(SignalError::TooMany(run));
        }
        Ok(true)
    }

    /// The unfinished run of flow `flow_name` whose `signal: name` step
    /// correlates on `value` (its `correlate:` template, read from the
    /// run's input). Looks through the flow's unfinished runs (at most
    /// [`MAX_CORRELATED_RUNS`]): there is no index by correlation value.
    pub async fn run_by_correlation(
        &self,
        flow_name: &str,
        name: &str,
        value: &str,
        visible: impl Fn(&RunSummary) -> bool,
    ) -> Result<RunId, SignalError> {
        use settle_types::RunState as S;
        let filter = settle_types::store::RunFilter {
            flow: Some(flow_name.to_string()),
            // Only runs that may still wait count against the limit.
            states: vec![S::Accepted, S::Processing, S::Retrying, S::NeedsAttention],
            ..Default::default()
        };
        let runs = self
            .inner
            .store
            .list_runs(&filter, MAX_CORRELATED_RUNS)
            .await
            .map_err(ActError::from)?;
        let mut found = Vec::new();
        // Runs the caller may not see are not there for it: they neither
        // match nor make a value ambiguous.
        for summary in runs.items.iter().filter(|s| visible(s)) {
            let Ok(flow) = self.flow_for(summary).await else {
                continue;
            };
            let run_id = summary.run_id.to_string();
            let scope = settle_flow::template::Scope {
                input: &summary.input,
                outputs: &[],
                run_id: &run_id,
            };
            // A step still to be done (no output recorded) whose value is
            // the one asked for: a string as it is, a whole number as its
            // digits.
            let matches = flow.steps.iter().enumerate().any(|(i, s)| {
                summary.outputs.get(i).is_some_and(Option::is_none)
                    && !summary.was_skipped(i)
                    && s.signal.as_ref().is_some_and(|g| {
                        g.name == name
                            && g.correlate
                                .as_ref()
                                .is_some_and(|t| match t.render(&scope) {
                                    Ok(serde_json::Value::String(v)) => v == value,
                                    Ok(serde_json::Value::Number(n)) => {
                                        (n.is_i64() || n.is_u64()) && n.to_string() == value
                                    }
                                    _ => false,
                                })
                    })
            });
            if matches {
                found.push(summary.run_id);
            }
        }
        match found.as_slice() {
            [run] => Ok(*run),
            [] => Err(SignalError::NotCorrelated {
                flow: settle_types::bounds::cut(flow_name, 64),
                name: settle_types::bounds::cut(name, 64),
                value: settle_types::bounds::cut(value, 128),
            }),
            many => Err(SignalError::Ambiguous {
                runs: many.len(),
                value: settle_types::bounds::cut(value, 128),
            }),
        }
    }

    /// The run's summary as the store has it, for a signal.
    async fn summary_for_signal(&self, run: RunId) -> Result<RunSummary, SignalError> {
        self.inner
            .store
            .summary(run)
            .await
            .map_err(ActError::from)?
            .ok_or(SignalError::NoSuchRun(run))
    }

    /// The run a signal (or an approval decision) goes to, with its flow;
    /// `None` when `is_repeat` says it came already: answered as such
    /// whatever became of the run since. An ended run takes none.
    async fn run_for_signal(
        &self,
        run: RunId,
        action: &'static str,
        is_repeat: impl Fn(&RunSummary) -> bool,
    ) -> Result<Option<(RunSummary, Arc<Flow>)>, SignalError> {
        let summary = self.summary_for_signal(run).await?;
        if is_repeat(&summary) {
            return Ok(None);
        }
        if summary.state.is_terminal() && summary.state != settle_types::RunState::NeedsAttention {
            return Err(SignalError::Ended {
                run,
                state: summary.state.as_str().to_string(),
            });
        }
        let flow = self
            .flow_for(&summary)
            .await
            .map_err(|why| ActError::FlowUnreadable { run, action, why })?;
        Ok(Some((summary, flow)))
    }

    /// Records a person's decision on approval step `step` of `run`:
    /// `approve` or not (a rejection). Refused for someone the step does
    /// not name (by token name or role), for the run's submitter (no one
    /// approves their own request), and for a run not waiting for it.
    /// `Ok(false)`: this person had decided already; the first decision
    /// stands.
    pub async fn decide_approval(
        &self,
        run: RunId,
        step: &str,
        who: Approver<'_>,
        approve: bool,
        comment: Option<String>,
    ) -> Result<bool, SignalError> {
        let Approver {
            name,
            role,
            identified,
            via_link_from,
        } = who;
        let signal = settle_flow::Approval::signal_name(step);
        let Some((summary, flow)) = self
            .run_for_signal(run, "approve", |s| s.is_repeat(&signal, Some(name)))
            .await?
        else {
            return Ok(false);
        };
        let Some(approval) = flow
            .steps
            .iter()
            .find(|s| s.name == step)
            .and_then(|s| s.approval.as_ref())
        else {
            return Err(SignalError::Unknown {
                run,
                name: settle_types::bounds::cut(step, 64),
                known: flow
                    .steps
                    .iter()
                    .filter(|s| s.approval.is_some())
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let refuse = |problem: &str| SignalError::Invalid {
            name: signal.clone(),
            problem: problem.to_string(),
        };
        // Without tokens everyone is the same `local`: there is no one to
        // tell apart, and no self-approval to refuse.
        if identified && summary.submitted_by.as_deref() == Some(name) {
            return Err(refuse("whoever submitted a run cannot approve it"));
        }
        // Only a run waiting at this step takes decisions: one made before
        // (or after) would count for a pass no one was asked about.
        let index = flow.steps.iter().position(|s| s.name == step);
        let waiting_here = summary.awaiting_signal.as_deref() == Some(signal.as_str())
            && index.is_some_and(|i| summary.outputs.get(i).is_some_and(Option::is_none));
        if !waiting_here {
            return Err(SignalError::Ended {
                run,
                state: format!(
                    "{}, and not waiting for approval at step '{}'",
                    summary.state.as_str(),
                    settle_types::bounds::cut(step, 64)
                ),
            });
        }
        if !approval.allows(name, role) {
            return Err(refuse(&format!(
                "'{}' may not decide here: the step names approvers {} and roles {}",
                settle_types::bounds::cut(name, 64),
                if approval.approvers.is_empty() {
                    "(none)".into()
                } else {
                    approval.approvers.join(", ")
                },
                if approval.roles.is_empty() {
                    "(none)".into()
                } else {
                    approval.roles.join(", ")
                },
            )));
        }
        if summary.signals.len() >= settle_types::summary::MAX_SIGNALS {
            return Err(SignalError::TooMany(run));
        }
        let payload = serde_json::json!({
            "decision": if approve { "approve" } else { "reject" },
            "comment": comment.map(|c| settle_types::bounds::cut(&c, 1024)),
        });
        let before = summary.signals.len();
        let kind = EventKind::SignalReceived {
            name: signal.clone(),
            payload,
            key: Some(name.to_string()),
            by: match via_link_from {
                Some(issuer) => format!("link:{name} (issued by {issuer})"),
                None => format!("token:{name}"),
            },
        };
        self.annotate(run, kind).await?;
        // Said from what the log kept: a racing decision by the same person
        // is not "recorded" twice.
        let after = self.summary_for_signal(run).await?;
        Ok(after.signals.len() > before)
    }

    /// Records an event that changes nothing in the run (a user's report);
    /// returns once it is durable. A run being driven records it through
    /// its driver, between two actions.
    pub async fn annotate(&self, run: RunId, kind: EventKind) -> Result<(), ActError> {
        // A driver may stop between our two looks: then ask again.
        for _ in 0..3 {
            if self.claim(run) {
                let outcome = self.annotate_claimed(run, kind).await;
                self.release(run);
                return outcome;
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            {
                let mut live = self.inner.lock_live();
                let Some(l) = live.get_mut(&run) else {
                    continue;
                };
                l.notes.push((kind.clone(), tx));
                l.wake.notify_one();
            }
            match rx.await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => return Err(ActError::Store(StoreError::Stopped { reason: e })),
                // The driver stopped before recording it: nothing was written.
                Err(_) => continue,
            }
        }
        Err(ActError::Busy(run))
    }

    async fn annotate_claimed(&self, run: RunId, kind: EventKind) -> Result<(), ActError> {
        let mut summary = self
            .inner
            .store
            .summary(run)
            .await?
            .ok_or(ActError::NoSuchRun(run))?;
        self.record(&mut summary, vec![(kind, None, Source::host())], self.now())
            .await?;
        Ok(())
    }

    /// Notes waiting for the driver of `run`, taken.
    pub(crate) fn take_notes(
        &self,
        run: RunId,
    ) -> Vec<(EventKind, tokio::sync::oneshot::Sender<Result<(), String>>)> {
        self.inner
            .lock_live()
            .get_mut(&run)
            .map(|l| std::mem::take(&mut l.notes))
            .unwrap_or_default()
    }

    /// The command waiting for the driver of `run`, taken.
    pub(crate) fn take_interrupt(&self, run: RunId) -> Option<OperatorCommand> {
        self.inner
            .lock_live()
            .get_mut(&run)
            .and_then(|l| l.interrupt.take())
    }

    /// What wakes the driver of `run` when a command arrives.
    pub(crate) fn wake_of(&self, run: RunId) -> Option<Arc<tokio::sync::Notify>> {
        self.inner.lock_live().get(&run).map(|l| l.wake.clone())
    }

    async fn act_claimed(
        &self,
        run: RunId,
        command: OperatorCommand,
    ) -> Result<(RunSummary, Option<Arc<Flow>>), ActError> {
        let action = command.action.as_str();
        let mut summary = self
            .inner
            .store
            .summary(run)
            .await?
            .ok_or(ActError::NoSuchRun(run))?;
        let now = self.now();
        // Cancelling needs no flow: a run whose flow cannot be read can
        // still be stopped.
        let flow = if command.action == settle_types::OperatorAction::Cancel {
            None
        } else {
            Some(
                self.flow_for(&summary)
                    .await
                    .map_err(|why| ActError::FlowUnreadable { run, action, why })?,
            )
        };
        let events = Self::decide(flow.as_deref(), &summary, &command, now).map_err(|refused| {
            ActError::Refused {
                run,
                action,
                refused,
            }
        })?;
        self.record(&mut summary, events, now).await?;
        Ok((summary, flow))
    }

    /// Marks `run` as driven by this process, unless it already is.
    fn claim(&self, run: RunId) -> bool {
        let mut live = self.inner.lock_live();
        if live.contains_key(&run) {
            return false;
        }
        live.insert(run, Live::new(Arc::new(RunSummary::placeholder(run))));
        true
    }

    pub(crate) fn release(&self, run: RunId) {
        self.inner.lock_live().remove(&run);
    }

    /// Runs waiting for an operator because the host's setup failed, which
    /// `settle resume` releases once the setup is fixed.
    pub async fn held_for_setup(&self) -> Result<Vec<RunId>, StoreError> {
        Ok(self
            .inner
            .store
            .list_runs(
                &RunFilter {
                    states: vec![settle_types::RunState::NeedsAttention],
                    ..RunFilter::default()
                },
                usize::MAX,
            )
            .await?
            .items
            .into_iter()
            .filter(|s| s.hold == Some(settle_types::HoldCause::HostSetup))
            .map(|s| s.run_id)
            .collect())
    }

    fn spawn(&self, summary: RunSummary, flow: Arc<Flow>, resumed: bool) {
        self.inner
            .lock_live()
            .insert(summary.run_id, Live::new(Arc::new(summary.clone())));
        let engine = self.clone();
        // Every line logged while driving the run (the plugin's own too)
        // carries its run id, flow and trace id.
        let span = tracing::info_span!(
            parent: None,
            "run",
            run_id = %summary.run_id,
            flow = %summary.flow,
            flow_version = %summary.flow_version,
            trace_id = %summary.run_id.trace_id(),
        );
        tokio::spawn(
            async move { engine.drive_guarded(summary, flow, resumed).await }.instrument(span),
        );
    }

    /// Waits until this process stops driving `run` (it ended, waits for an
    /// operator, or the engine shut down) and returns what the store says;
    /// for a run not driven here, returns what the store says now.
    pub async fn wait(&self, run: RunId) -> Result<Option<RunSummary>, StoreError> {
        let receiver = {
            let live = self.inner.lock_live();
            live.get(&run).map(|l| l.updates.subscribe())
        };
        // The driver drops the sender when it stops: the run ended, waits
        // for an operator, or the engine shut down. Waiting for that (not
        // for a terminal state alone) means the run can be acted on at once.
        if let Some(mut rx) = receiver {
            while rx.changed().await.is_ok() {}
        }
        self.inner.store.summary(run).await
    }

    /// Subscribes to summary updates of a run driven by this process.
    pub fn watch(&self, run: RunId) -> Option<watch::Receiver<Arc<RunSummary>>> {
        self.inner
            .lock_live()
            .get(&run)
            .map(|l| l.updates.subscribe())
    }

    /// The status of a run: what the log says, plus what this process knows live.
    pub async fn status(&self, run: RunId) -> Result<Option<RunStatus>, StoreError>
    where
        S: Clone,
    {
        self.queries().status(run).await
    }

    /// Reads over this engine's store, with what it knows live.
    pub fn queries(&self) -> queries::Queries<S>
    where
        S: Clone,
    {
        queries::Queries::with_live(self.inner.store.clone(), self.inner.clone())
    }

    /// Stops driving runs: each driver finishes the action it is in (and
    /// records it), then stops. Runs not finished stay active in the store
    /// and resume when a host starts on it again.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        while self.live_runs() > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Every circuit breaker and its state now.
    pub fn breakers(&self) -> Vec<breakers::BreakerView> {
        self.inner.domains.views(self.now()).breakers
    }

    /// Every failure domain's guards now: breakers, retry budgets, bulkheads.
    pub fn domains(&self) -> domains::DomainViews {
        self.inner.domains.views(self.now())
    }

    /// Runs this process is driving now.
    pub fn live_runs(&self) -> usize {
        self.inner.lock_live().len()
    }
}

impl<S, X> Inner<S, X> {
    /// The runs this process drives. A panic while it was held left
    /// nothing half-written (each use is one insert, remove or field
    /// update), so a poisoned lock is used as it is.
    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<RunId, Live>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<S: RunQueries, X: Executor> queries::LiveView for Inner<S, X> {
    fn expectations(&self) -> Arc<expectations::Expectations> {
        self.expectations.clone()
    }

    fn live(&self, run: RunId) -> Option<(bool, Option<Progress>)> {
        self.lock_live()
            .get(&run)
            .map(|l| (l.running, l.progress.clone()))
    }
}
