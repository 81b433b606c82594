//! Drives one run: wait for its next action to be due, call the plugin,
//! commit what happened, repeat until the run is terminal.
//!
//! The in-memory summary only advances after a commit is durable, so after a
//! crash the log names exactly the step and attempt to call next, with the
//! same operation id. A plugin call may therefore happen again after a crash
//! (at least once); its completion is recorded at most once.

use crate::domains::Admit;
use crate::status::Progress;
use crate::transitions;
use crate::{Engine, Live};
use serde_json::Value;
use settle_flow::Flow;
use settle_flow::template::{RenderError, Scope};
use settle_types::executor::EvalFailure;
use settle_types::executor::{CallContext, CallFailure};
use settle_types::executor::{
    CallKind, CallOutput, CallReport, CallRequest, Executor, ProgressSink,
};
use settle_types::store::{Commit, RunQueries};
use settle_types::{
    Action, Event, EventKind, Failure, FailureClass, Next, OperationId, RunSummary, SCHEMA_VERSION,
    Source, Verdict, bounds, step_id,
};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;
use uuid::Uuid;

/// Builds the next event of a run with its lineage.
pub(super) fn draft(
    summary: &RunSummary,
    kind: EventKind,
    step: Option<u32>,
    source: Source,
    at_ms: u64,
) -> Event {
    let step_name = step.and_then(|i| summary.steps.get(i as usize).cloned());
    let operation_id = step
        .zip(action_of(&kind, &summary.next))
        .and_then(|(i, action)| summary.operation_id(i as usize, action))
        .map(OperationId::into_string);
    let attempt = match (&kind, &summary.next) {
        (
            EventKind::StepScheduled { attempt, .. }
            | EventKind::CompensationScheduled { attempt, .. },
            _,
        ) => Some(*attempt),
        (_, Next::Step { attempt, .. } | Next::Compensate { attempt, .. }) if step.is_some() => {
            Some(*attempt)
        }
        _ => None,
    };
    Event {
        v: SCHEMA_VERSION,
        id: Uuid::now_v7(),
        run_id: summary.run_id,
        seq: summary.next_seq,
        at_ms,
        operation_id,
        step: step_name,
        attempt,
        source,
        causation: Some(summary.last_event),
        trace_id: summary.run_id.trace_id(),
        kind,
    }
}

/// Which action of its step an event concerns, for its operation id.
fn action_of(kind: &EventKind, next: &Next) -> Option<Action> {
    match kind {
        EventKind::StepScheduled { .. }
        | EventKind::StepCompleted { .. }
        | EventKind::StepFailed { .. }
        | EventKind::StepDeferred { .. } => Some(Action::Run),
        EventKind::CompensationScheduled { .. }
        | EventKind::CompensationCompleted { .. }
        | EventKind::CompensationFailed { .. } => Some(Action::Compensate),
        EventKind::StepReconciled { .. } => Some(Action::Reconcile),
        // Whatever the call in progress was.
        EventKind::CapabilityDenied { .. } => match next {
            Next::Step { .. } => Some(Action::Run),
            Next::Compensate { .. } => Some(Action::Compensate),
            Next::Reconcile { .. } => Some(Action::Reconcile),
            Next::Nothing => None,
        },
        _ => None,
    }
}

/// When a run of `flow` misses its objective, unless it already did (or
/// settled): its
/// acceptance plus `settled_within`.
pub(crate) fn breach_due(flow: &Flow, summary: &RunSummary) -> Option<u64> {
    // A run that settled once met its objective or recorded its breach
    // already: a restart or a later drift is judged apart.
    let objective = flow
        .objective
        .filter(|_| !summary.breached && summary.first_settled_at_ms.is_none())?;
    let within = u64::try_from(objective.settled_within.as_millis()).unwrap_or(u64::MAX);
    Some(summary.accepted_at_ms.saturating_add(within))
}

/// Lineage for the events decided after a call to step `index`: the first
/// (what the plugin answered) comes from the plugin, the rest from the host;
/// each concerns the step it schedules, or none when it ends the run.
fn attribute(
    decided: Vec<EventKind>,
    index: u32,
    plugin: &Source,
) -> impl Iterator<Item = (EventKind, Option<u32>, Source)> + '_ {
    decided.into_iter().enumerate().map(move |(i, kind)| {
        let step = step_of(&kind, index);
        let source = if i == 0 {
            plugin.clone()
        } else {
            Source::host()
        };
        (kind, step, source)
    })
}

/// The step an event decided while at step `index` concerns: the step it
/// schedules, none when it concerns the whole run, else `index`.
pub(crate) fn step_of(kind: &EventKind, index: u32) -> Option<u32> {
    match kind {
        EventKind::StepScheduled { index, .. } | EventKind::CompensationScheduled { index, .. } => {
            Some(*index)
        }
        EventKind::ReconciliationScheduled { .. }
        | EventKind::RunSettled
        | EventKind::RunCompensated
        | EventKind::RunDrifted { .. }
        | EventKind::RunNeedsAttention { .. }
        | EventKind::RunHeld { .. }
        | EventKind::RunCancelled => None,
        _ => Some(index),
    }
}

/// The spans of one attempt: `step` (its name and index) and, inside it,
/// `attempt` (its number, action and operation id), both children of the
/// run's span; the plugin call is a `plugin_call` span inside them.
fn attempt_span(
    summary: &RunSummary,
    flow: &Flow,
    index: u32,
    attempt: u32,
    action: Action,
) -> tracing::Span {
    let Some(step) = flow.steps.get(index as usize) else {
        return tracing::Span::none();
    };
    let step_span = tracing::info_span!("step", step = %step.name, step_index = index);
    tracing::info_span!(
        parent: &step_span,
        "attempt",
        attempt,
        action = action.as_str(),
        operation_id = %summary
            .operation_id(index as usize, action)
            .map(OperationId::into_string)
            .unwrap_or_default(),
    )
}

/// Most `capability-denied` events one call records; the runtime counts
/// the rest in its last denial.
const MAX_DENIAL_EVENTS: usize = 16;

/// A step's verdict (or why there is none) and the plugin that gave it.
type SourcedVerdict = (u32, Result<Verdict, Failure>, Source);

fn strip(verdicts: &[SourcedVerdict]) -> Vec<transitions::Confirmation> {
    verdicts.iter().map(|(i, v, _)| (*i, v.clone())).collect()
}

/// Lineage for what a confirmation decided: a step's verdict comes from
/// its plugin, the rest from the host.
fn attribute_verdicts(
    decided: Vec<EventKind>,
    verdicts: &[SourcedVerdict],
) -> Vec<(EventKind, Option<u32>, Source)> {
    decided
        .into_iter()
        .map(|kind| match &kind {
            EventKind::StepReconciled { index, .. } => {
                let source = verdicts
                    .iter()
                    .find(|(i, _, _)| i == index)
                    .map(|(_, _, s)| s.clone())
                    .unwrap_or_else(Source::host);
                let index = *index;
                (kind, Some(index), source)
            }
            EventKind::CompensationScheduled { index, .. } => {
                let index = *index;
                (kind, Some(index), Source::host())
            }
            _ => (kind, None, Source::host()),
        })
        .collect()
}

pub(crate) fn split_failure(f: CallFailure) -> (Failure, Option<Duration>) {
    let retry_after = f.retry_after_ms.map(Duration::from_millis);
    (
        Failure {
            class: f.class,
            message: bounds::cut_detail(&f.message),
        },
        retry_after,
    )
}

/// A failed call during which the host refused the plugin something it
/// asked for (a grant, a config value) is the host's setup failing, not the
/// plugin or the outside world: it holds the run instead of undoing work.
pub(crate) fn blame_setup(
    mut failure: CallFailure,
    denials: &[settle_types::executor::Denial],
) -> CallFailure {
    if let Some(first) = denials.first()
        && !failure.class.is_host_setup()
    {
        failure.message = format!(
            "{} (refused: {}; grant it in settle.toml)",
            failure.message, first.detail
        );
        failure.class = FailureClass::HostSetup;
        failure.retry_after_ms = None;
    }
    failure
}

/// Whether an attempt that failed this way may have had its effect: the
/// call began and its outcome is unknown, or it returned and the host
/// rejected what it said.
pub(crate) fn outcome_unknown(class: FailureClass) -> bool {
    matches!(
        class,
        FailureClass::Timeout
            | FailureClass::Trap
            | FailureClass::MemoryLimit
            | FailureClass::OutputLimit
    )
}

/// The events of a step that calls no plugin failing for good: nothing of
/// it can have had an effect; what came before is undone (or held), as
/// for any step.
fn builtin_failed(
    flow: &Flow,
    summary: &RunSummary,
    index: u32,
    class: FailureClass,
    message: &str,
    now: u64,
) -> Vec<EventKind> {
    failed_before_call(flow, summary, index, 1, class, message, false, now)
}

/// The events of attempt `attempt` of step `index` failing before any
/// call went out; `may_have_effect` keeps the doubt an earlier attempt
/// (cut short by a stop) left.
#[allow(clippy::too_many_arguments)]
fn failed_before_call(
    flow: &Flow,
    summary: &RunSummary,
    index: u32,
    attempt: u32,
    class: FailureClass,
    message: &str,
    may_have_effect: bool,
    now: u64,
) -> Vec<EventKind> {
    let failed = transitions::StepFailure {
        may_have_effect,
        failure: Failure {
            class,
            message: bounds::cut_detail(message),
        },
        retry_after: None,
        duration_ms: None,
    };
    transitions::after_step_failed(flow, summary, index, attempt, failed, now)
}

/// Until when a `wait:` step waits, started now: `for` from now, or the
/// time `until` rendered to (`until`: RFC 3339, or Unix milliseconds), at
/// most a year ahead.
fn wait_until(wait: &settle_flow::Wait, until: Option<Value>, now: u64) -> Result<u64, String> {
    let latest = now.saturating_add(
        u64::try_from(settle_flow::limits::MAX_WAIT.as_millis()).unwrap_or(u64::MAX),
    );
    let until = match (wait, until) {
        (settle_flow::Wait::For(d), _) => {
            now.saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        }
        (settle_flow::Wait::Until(_), None) => {
            return Err("`wait: until` has no value".into());
        }
        (settle_flow::Wait::Until(_), Some(value)) => match value {
            // Unix milliseconds; a number that small is seconds, or a
            // mistake: refused rather than taken as 1970.
            serde_json::Value::Number(n) => n
                .as_u64()
                .filter(|ms| *ms >= 100_000_000_000)
                .ok_or_else(|| format!("`wait: until` is {n}, not a time in Unix milliseconds"))?,
            serde_json::Value::String(text) => humantime::parse_rfc3339(&text)
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| u64::try_from(d.as_millis()).ok())
                .ok_or_else(|| {
                    format!(
                        "`wait: until` is '{}', not an RFC 3339 time in UTC like 2026-12-05T14:05:00Z",
                        bounds::cut(&text, 64)
                    )
                })?,
            other => return Err(format!("`wait: until` is {other}, not a time")),
        },
    };
    if until > latest {
        return Err("`wait: until` is more than a year ahead".into());
    }
    Ok(until)
}

/// The plugin the run's next action calls, when it calls one plugin (a
/// step or its compensation): the one whose bulkhead it waits for.
fn plugin_of<'f>(flow: &'f Flow, next: &Next) -> Option<&'f str> {
    match *next {
        // A `for_each` step's items take a slot each, as their calls go
        // out (`items.rs`): the attempt as a whole takes none.
        Next::Step { index, .. } => flow
            .steps
            .get(index as usize)
            .filter(|step| step.calls_plugin() && !step.calls_per_item())
            .map(|step| step.plugin.as_str()),
        // A `parallel` step's branches are undone one by one, each call
        // to its own plugin.
        Next::Compensate { index, .. } => flow
            .steps
            .get(index as usize)
            .filter(|step| step.calls_plugin() && step.parallel.is_none())
            .map(|step| step.plugin.as_str()),
        Next::Reconcile { .. } | Next::Nothing => None,
    }
}

/// Runs a driver future, turning a panic into `Err(message)` so that one
/// run's bug cannot take down the task, leave `wait` hanging or keep
/// `shutdown` waiting for a run that will never report.
struct CatchPanic<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future<Output = ()>> std::future::Future for CatchPanic<F> {
    type Output = Result<(), String>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(())) => std::task::Poll::Ready(Ok(())),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                std::task::Poll::Ready(Err(message))
            }
        }
    }
}

impl<S: RunQueries, X: Executor> Engine<S, X> {
    /// Drives a run until it ends, waits for an operator, or the engine
    /// shuts down; a panic inside is recorded as a hold, never propagated.
    /// `resumed` says the run was picked up from the store, so its first
    /// attempt may repeat one that was interrupted mid-call.
    pub(super) async fn drive_guarded(self, summary: RunSummary, flow: Arc<Flow>, resumed: bool) {
        let run = summary.run_id;
        let outcome = CatchPanic(Box::pin(self.clone().drive(summary, flow, resumed))).await;
        if let Err(message) = outcome {
            tracing::error!(run = %run, "the host failed while driving the run: {message}");
            self.hold_after_panic(run, &message).await;
        }
        self.inner.lock_live().remove(&run);
    }

    /// Records that the host failed on this run, from what the store says
    /// (the driver's own copy went down with it).
    async fn hold_after_panic(&self, run: settle_types::RunId, message: &str) {
        let Ok(Some(mut summary)) = self.inner.store.summary(run).await else {
            return;
        };
        if summary.state.is_terminal() {
            return;
        }
        let reason = bounds::cut_detail(&format!(
            "the host failed while driving this run ({message}); report it, then retry or cancel the run"
        ));
        let held = vec![(
            EventKind::RunHeld {
                cause: settle_types::HoldCause::HostError,
                reason,
            },
            None,
            Source::host(),
        )];
        if let Err(e) = self.record(&mut summary, held, self.now()).await {
            tracing::error!(run = %run, "cannot record the failure: {e}");
        }
    }

    async fn drive(self, mut summary: RunSummary, flow: Arc<Flow>, resumed: bool) {
        let run = summary.run_id;
        let mut flow = flow;
        let mut stop = self.inner.shutdown.subscribe();
        let mut maybe_interrupted = resumed;
        // A breaker's wait beyond the one recorded (see `admit`).
        let mut deferred_until: Option<u64> = None;
        let wake = self.wake_of(run);
        while !summary.state.is_terminal() {
            let notes = self.take_notes(run);
            if !notes.is_empty() {
                let (kinds, replies): (Vec<_>, Vec<_>) = notes.into_iter().unzip();
                let events = kinds
                    .into_iter()
                    .map(|k| (k, None, Source::host()))
                    .collect();
                let outcome = self.record(&mut summary, events, self.now()).await;
                // A signal may have come for the step the run waits at.
                deferred_until = None;
                let answer = outcome.as_ref().map(|_| ()).map_err(|e| e.to_string());
                for reply in replies {
                    let _ = reply.send(answer.clone());
                }
                if outcome.is_err() {
                    break;
                }
                continue;
            }
            if let Some(command) = self.take_interrupt(run) {
                if let Err(e) = self.apply_interrupt(&mut summary, &flow, command).await {
                    tracing::error!(run = %run, "cannot record the operator's command: {e}");
                    break;
                }
                continue;
            }
            // Between steps, the run may move to a newer version of its flow.
            match self
                .upgrade_at_boundary(&mut summary, &flow, maybe_interrupted)
                .await
            {
                Ok(next) => flow = next,
                Err(e) => {
                    tracing::error!(run = %run, "cannot record the move to a new flow version, stopping: {e}");
                    break;
                }
            }
            // The flow's objective passed while the run still moves: said
            // once, when it passes, not when the run ends.
            let breach_at = breach_due(&flow, &summary);
            if breach_at.is_some_and(|at| self.now() >= at) {
                if let Err(e) = self.record_breach(&mut summary, &flow).await {
                    if e.is_fatal() {
                        tracing::error!(run = %run, "cannot record the missed objective, stopping: {e}");
                        break;
                    }
                    tracing::error!(run = %run, "cannot record the missed objective, retrying in 1 s: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
            let Some(due) = summary.next.due_ms() else {
                break;
            };
            let due = due.max(deferred_until.unwrap_or(0));
            if *stop.borrow() {
                break;
            }
            let now = self.now();
            // A wait ends at the objective's deadline too, to record it
            // (without waiting for a worker: that is when objectives are
            // missed).
            let wake_at = breach_at.map_or(due, |at| due.min(at));
            // Waiting (for a timer or a free worker) ends early on shutdown;
            // an action already started is finished and recorded.
            let permit = tokio::select! {
                permit = async {
                    if wake_at > now {
                        tokio::time::sleep(Duration::from_millis(wake_at - now)).await;
                    }
                    if breach_at.is_some_and(|at| self.now() >= at) {
                        return None;
                    }
                    // A slot of the plugin's bulkhead first, then a
                    // worker: runs queued behind a slow plugin hold no
                    // worker while they wait.
                    let slot = match plugin_of(&flow, &summary.next) {
                        // The objective's deadline may pass while it
                        // queues: it wakes to record that, slot or not.
                        Some(plugin) => match breach_at {
                            Some(at) => {
                                let left = Duration::from_millis(at.saturating_sub(self.now()));
                                let slot = self.inner.domains.bulkhead(plugin);
                                match tokio::time::timeout(left, slot).await {
                                    Ok(slot) => slot,
                                    Err(_) => return None,
                                }
                            }
                            None => self.inner.domains.bulkhead(plugin).await,
                        },
                        None => None,
                    };
                    Some((slot, self.inner.permits.acquire().await))
                } => permit,
                _ = stop.changed() => break,
                // A pause or cancel arrived: apply it before waiting on.
                _ = async {
                    match &wake {
                        Some(w) => w.notified().await,
                        None => std::future::pending().await,
                    }
                } => continue,
            };
            // Woken by the objective's deadline: record that first.
            let Some((_bulkhead_slot, permit)) = permit else {
                continue;
            };
            let Ok(_permit) = permit else { break };
            // Woken for the deadline, but the clock says it has not come
            // (it lags the timer): the action still waits for its own time.
            if wake_at < due && self.now() < due {
                continue;
            }
            self.set_running(run, true);
            // Boxed: the call's state (a few KiB, wasmtime's included) lives
            // on the heap only while it runs, so the many runs that wait for
            // a timer or a worker stay small.
            let skipped = self
                .unless_condition(&summary, &flow, maybe_interrupted)
                .await;
            let result = match summary.next.clone() {
                // Its `if:` was false (or could not be evaluated): passed
                // over (or failed) without calling anything.
                Next::Step { index, .. } if skipped.is_some() => {
                    maybe_interrupted = false;
                    let events = skipped.unwrap_or_default();
                    let now = self.now();
                    self.record_builtin(&mut summary, index, events, now, &mut deferred_until)
                        .await
                }
                Next::Step { index, .. }
                    if flow.steps.get(index as usize).is_some_and(|s| s.is_wait()) =>
                {
                    maybe_interrupted = false;
                    self.wait_step(&mut summary, &flow, index, &mut deferred_until)
                        .await
                }
                Next::Step { index, .. }
                    if flow
                        .steps
                        .get(index as usize)
                        .is_some_and(|s| s.approval.is_some()) =>
                {
                    maybe_interrupted = false;
                    self.approval_step(&mut summary, &flow, index, &mut deferred_until)
                        .await
                }
                Next::Step { index, .. }
                    if flow
                        .steps
                        .get(index as usize)
                        .is_some_and(|s| s.signal.is_some()) =>
                {
                    maybe_interrupted = false;
                    self.signal_step(&mut summary, &flow, index, &mut deferred_until)
                        .await
                }
                Next::Step { index, attempt, .. } => {
                    match self
                        .admit(&mut summary, &flow, index, attempt, &mut deferred_until)
                        .await
                    {
                        Ok(Some(probes)) => {
                            deferred_until = None;
                            // Taken only by an attempt actually made: a
                            // deferred one keeps the doubt for the next.
                            let interrupted = std::mem::take(&mut maybe_interrupted);
                            let span = attempt_span(&summary, &flow, index, attempt, Action::Run);
                            Box::pin(
                                self.run_step(
                                    &mut summary,
                                    &flow,
                                    index,
                                    attempt,
                                    interrupted,
                                    &probes,
                                )
                                .instrument(span),
                            )
                            .await
                        }
                        Ok(None) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
                Next::Compensate { index, attempt, .. } => {
                    maybe_interrupted = false;
                    let span = attempt_span(&summary, &flow, index, attempt, Action::Compensate);
                    Box::pin(
                        self.compensate_step(&mut summary, &flow, index, attempt)
                            .instrument(span),
                    )
                    .await
                }
                Next::Reconcile { attempt, .. } => {
                    maybe_interrupted = false;
                    Box::pin(self.reconcile(&mut summary, &flow, attempt)).await
                }
                Next::Nothing => Ok(()),
            };
            self.set_running(run, false);
            if let Err(e) = result {
                if e.is_fatal() || matches!(e, settle_types::store::StoreError::Conflict { .. }) {
                    // The store stopped for good, or another writer owns the
                    // run: nothing more can be recorded here.
                    tracing::error!(run = %run, "cannot record progress, stopping: {e}");
                    break;
                }
                // Nothing was recorded: the same action runs again (with the
                // same operation id) once the store answers.
                tracing::error!(run = %run, "cannot record progress, retrying in 1 s: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        // Held for an operator: no driver will see its objective pass.
        if summary.state == settle_types::RunState::NeedsAttention
            && let Some(at) = breach_due(&flow, &summary)
        {
            self.watch_held_objective(run, at);
        }
    }

    /// Records that the run missed its flow's objective.
    pub(crate) async fn record_breach(
        &self,
        summary: &mut RunSummary,
        flow: &Flow,
    ) -> Result<(), settle_types::store::StoreError> {
        let Some(objective) = flow.objective else {
            return Ok(());
        };
        let now = self.now();
        let breach = EventKind::ObjectiveBreached {
            settled_within_ms: u64::try_from(objective.settled_within.as_millis())
                .unwrap_or(u64::MAX),
            elapsed_ms: now.saturating_sub(summary.accepted_at_ms),
        };
        self.record(summary, vec![(breach, None, Source::host())], now)
            .await
    }

    fn set_running(&self, run: settle_types::RunId, running: bool) {
        if let Some(live) = self.inner.lock_live().get_mut(&run) {
            live.running = running;
            if !running {
                live.progress = None;
            }
        }
    }

    fn progress_sink(&self, run: settle_types::RunId) -> ProgressSink {
        let inner = Arc::downgrade(&self.inner);
        Arc::new(move |fraction, message| {
            if let Some(inner) = inner.upgrade()
                && let Some(live) = inner
                    .live
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(&run)
            {
                live.progress = Some(Progress { fraction, message });
            }
        })
    }

    /// Appends `kinds` (with lineage) to the run's log in one durable commit,
    /// then advances the in-memory summary. `now` is the time the decision
    /// was taken: the events carry it, so a recorded retry time is exactly
    /// its delay after the failure that scheduled it.
    pub(super) async fn record(
        &self,
        summary: &mut RunSummary,
        kinds: Vec<(EventKind, Option<u32>, Source)>,
        now: u64,
    ) -> Result<(), settle_types::store::StoreError> {
        let before = summary.state;
        let mut next = summary.clone();
        let mut events = Vec::with_capacity(kinds.len());
        // (step, how long it took), for the steps' usual times.
        let mut step_times = Vec::new();
        for (kind, step, source) in kinds {
            let event = draft(&next, kind, step, source, now);
            if let (EventKind::StepCompleted { index, .. }, Some(since)) =
                (&event.kind, next.step_started_at_ms)
                && let Some(name) = next.steps.get(*index as usize)
            {
                step_times.push((name.clone(), event.at_ms.saturating_sub(since)));
            }
            next.apply(&event);
            events.push(event);
        }
        // Ended otherwise than settled (undone, drifted, cancelled) before
        // it ever settled: it missed its flow's objective, said in the same
        // commit, so a crash cannot lose it between the two.
        let ended_unsettled = |state| {
            matches!(
                state,
                settle_types::RunState::Compensated
                    | settle_types::RunState::Drifted
                    | settle_types::RunState::Cancelled
            )
        };
        // Only the commit that ends it: a later one (a user's report on an
        // old run) is no news about its objective.
        if ended_unsettled(next.state)
            && !ended_unsettled(before)
            && let Ok(flow) = self.flow_for(&next).await
            && let (Some(objective), Some(_)) = (flow.objective, breach_due(&flow, &next))
        {
            let breach = EventKind::ObjectiveBreached {
                settled_within_ms: u64::try_from(objective.settled_within.as_millis())
                    .unwrap_or(u64::MAX),
                elapsed_ms: now.saturating_sub(next.accepted_at_ms),
            };
            let event = draft(&next, breach, None, Source::host(), now);
            next.apply(&event);
            events.push(event);
        }
        // Kept for the observer only: the commit takes the events.
        let observed = self
            .observer()
            .map(|_| settle_types::observe::without_payloads(&events));
        let commit = Commit {
            run_id: next.run_id,
            events,
            summary: next.clone(),
            claim: None,
        };
        self.inner.store.commit(commit).await?;
        // A run that settled on its first pass is a sample of how long
        // runs of its flow take (not one restarted, nor one whose drift an
        // operator accepted).
        if next.state == settle_types::RunState::Settled
            && before != settle_types::RunState::Settled
            && before != settle_types::RunState::Drifted
            && next.on_first_pass()
            && let Some(finished) = next.finished_at_ms
        {
            self.inner
                .expectations
                .record(&next.flow, finished.saturating_sub(next.accepted_at_ms));
        }
        if next.on_first_pass() {
            for (step, ms) in step_times {
                self.inner.expectations.record_step(&next.flow, &step, ms);
            }
        }
        if let (Some(o), Some(events)) = (self.observer(), &observed) {
            o.committed(Some(before), events, &next);
        }
        *summary = next;
        if let Some(Live { updates, .. }) = self.inner.lock_live().get(&summary.run_id) {
            updates.send_replace(Arc::new(summary.clone()));
        }
        Ok(())
    }

    pub(crate) fn call_context(
        &self,
        summary: &RunSummary,
        flow: &Flow,
        index: u32,
        attempt: u32,
        action: Action,
    ) -> CallContext {
        let step = &flow.steps[index as usize].name;
        CallContext {
            run_id: summary.run_id.to_string(),
            flow: flow.id(),
            step: step.clone(),
            operation_id: summary
                .operation_id(index as usize, action)
                .map(OperationId::into_string)
                .unwrap_or_default(),
            step_id: step_id(summary.run_id, step),
            attempt,
            trace_id: summary.run_id.trace_id(),
        }
    }

    /// Renders a template of step `index` (its input, its wait): plain
    /// references here, jq programs in the sandbox, over the outputs of the
    /// steps before it.
    pub(crate) async fn render(
        &self,
        summary: &RunSummary,
        flow: &Flow,
        index: u32,
        template: &settle_flow::Template,
    ) -> Result<Value, CallFailure> {
        self.render_item(summary, flow, index, template, None).await
    }

    /// [`Self::render`], for one item of a `for_each` step when `item` is
    /// given (its value and position).
    pub(crate) async fn render_item(
        &self,
        summary: &RunSummary,
        flow: &Flow,
        index: u32,
        template: &settle_flow::Template,
        item: Option<(&Value, usize)>,
    ) -> Result<Value, CallFailure> {
        let run_id = summary.run_id.to_string();
        let scope = Scope {
            input: &summary.input,
            outputs: &summary.outputs,
            run_id: &run_id,
        };
        let names: Vec<&str> = flow.steps.iter().map(|s| s.name.as_str()).collect();
        template
            .render_item_in(&scope, &names, index as usize, &self.inner.executor, item)
            .await
            .map_err(|e| match e {
                // The host's own capacity or setup: held, never undone.
                RenderError::Sandbox(EvalFailure::Host(e)) => {
                    CallFailure::new(FailureClass::HostSetup, e)
                }
                e => CallFailure::new(FailureClass::InvalidInput, e.to_string()),
            })
    }

    /// Renders step `index`'s input (for `item`, if given) and checks it
    /// against the plugin's schema.
    pub(crate) async fn checked_input(
        &self,
        summary: &RunSummary,
        flow: &Flow,
        index: u32,
        item: Option<(&Value, usize)>,
    ) -> Result<Value, CallFailure> {
        self.checked_call_input(summary, flow, index, &flow.steps[index as usize], item)
            .await
    }

    /// [`Self::checked_input`] for `step`, one of the calls step `index`
    /// makes (itself, or one of its branches).
    pub(crate) async fn checked_call_input(
        &self,
        summary: &RunSummary,
        flow: &Flow,
        index: u32,
        step: &settle_flow::StepDef,
        item: Option<(&Value, usize)>,
    ) -> Result<Value, CallFailure> {
        let input = self
            .render_item(summary, flow, index, &step.input, item)
            .await
            .map_err(|f| CallFailure {
                message: format!("step input: {}", f.message),
                ..f
            })?;
        if let Some(plugin) = self.inner.executor.plugin(&step.plugin) {
            plugin.check_input(&input).map_err(|problems| {
                CallFailure::new(
                    FailureClass::InvalidInput,
                    format!(
                        "input does not match the schema of plugin '{}': {problems}",
                        step.plugin
                    ),
                )
            })?;
        }
        Ok(input)
    }

    /// Under `upgrade: at-step-boundary`, moves the run to the builds of
    /// step `index`'s plugins installed now, recording each change
    /// (`plugin-changed`): the log says which build each call went to.
    /// Otherwise the run keeps the builds it started with.
    async fn note_plugin_change(
        &self,
        summary: &mut RunSummary,
        flow: &Flow,
        index: u32,
    ) -> Result<(), settle_types::store::StoreError> {
        if flow.upgrade != settle_flow::Upgrade::AtStepBoundary {
            return Ok(());
        }
        for call in flow.steps[index as usize].calls() {
            let plugin = &call.plugin;
            let (Some(seen), Some(now_installed)) = (
                summary.plugins.get(plugin),
                self.inner.executor.plugin(plugin),
            ) else {
                continue;
            };
            if *seen == now_installed.digest {
                continue;
            }
            let change = EventKind::PluginChanged {
                plugin: plugin.clone(),
                from: seen.clone(),
                to: now_installed.digest.clone(),
            };
            tracing::warn!(run = %summary.run_id, plugin = %plugin, "the plugin changed since the run last called it");
            let now = self.now();
            self.record(summary, vec![(change, Some(index), Source::host())], now)
                .await?;
        }
        Ok(())
    }

    /// A step with an `if:` about to begin: when its condition is false,
    /// the events that pass it over; when the condition cannot be
    /// evaluated, those that fail the step. `None`: the step goes ahead (no
    /// condition, already begun, or true). Evaluated again if the run stops
    /// before the answer is recorded: the same context gives the same answer.
    async fn unless_condition(
        &self,
        summary: &RunSummary,
        flow: &Flow,
        maybe_interrupted: bool,
    ) -> Option<Vec<EventKind>> {
        // Asked before every attempt, not only the first: a pause, a hold
        // or an operator's retry schedules the next one afresh.
        let Next::Step { index, attempt, .. } = summary.next else {
            return None;
        };
        if summary.pausing_until.is_some() {
            return None;
        }
        let condition = flow.steps.get(index as usize)?.condition.as_ref()?;
        let value = self.render(summary, flow, index, &condition.template).await;
        let now = self.now();
        match value {
            Ok(v) if settle_flow::Condition::holds(&v) => None,
            Ok(_) => Some(vec![
                EventKind::StepSkipped {
                    index,
                    condition: condition.text.clone(),
                },
                transitions::after_step_completed(flow, index, now, &|plugin| {
                    self.reconciles(plugin)
                }),
            ]),
            // An earlier attempt cut short by a stop may have had its
            // effect: that is kept, so it is undone if need be.
            Err(f) => Some(failed_before_call(
                flow,
                summary,
                index,
                attempt,
                f.class,
                &format!("`if`: {}", f.message),
                maybe_interrupted,
                now,
            )),
        }
    }

    /// Until when a `wait:` step started now waits.
    async fn wait_target(
        &self,
        summary: &RunSummary,
        flow: &Flow,
        index: u32,
        wait: &settle_flow::Wait,
    ) -> Result<u64, CallFailure> {
        let until = match wait {
            settle_flow::Wait::For(_) => None,
            settle_flow::Wait::Until(template) => {
                Some(self.render(summary, flow, index, template).await?)
            }
        };
        wait_until(wait, until, self.now())
            .map_err(|e| CallFailure::new(FailureClass::InvalidInput, e))
    }

    /// Parses what the plugin returned and checks it against the host's
    /// bounds and the plugin's output schema. Any problem is the plugin's
    /// fault, so it fails the attempt for good: retrying the same code gives
    /// the same answer.
    /// What a `run` call answered: the output, checked, or the failure and
    /// whether the attempt may have had its effect all the same.
    pub(crate) fn run_answer(
        &self,
        plugin: &str,
        result: Result<CallOutput, CallFailure>,
    ) -> Result<Value, (CallFailure, bool)> {
        match result {
            Ok(CallOutput::Ran(text)) => self.step_output(plugin, &text).map_err(|f| (f, true)),
            Ok(other) => Err((
                CallFailure::new(
                    FailureClass::Permanent,
                    format!("unexpected answer {other:?}"),
                ),
                true,
            )),
            Err(f) => {
                let unknown = outcome_unknown(f.class);
                Err((f, unknown))
            }
        }
    }

    fn step_output(&self, plugin: &str, text: &str) -> Result<Value, CallFailure> {
        let output = serde_json::from_str::<Value>(text).map_err(|e| {
            // serde_json stops at 128 levels: that is over our limit too.
            let class = if e.to_string().contains("recursion limit") {
                FailureClass::OutputLimit
            } else {
                FailureClass::Permanent
            };
            CallFailure::new(
                class,
                format!("plugin '{plugin}' returned output that is not JSON the host accepts: {e}"),
            )
        })?;
        if settle_types::summary::is_null_output_marker(&output) {
            return Err(CallFailure::new(
                FailureClass::Permanent,
                format!("plugin '{plugin}' returned the host's reserved marker as output"),
            ));
        }
        // Its size was bounded by the runtime (`limits.max_output_kib`).
        bounds::check_depth(&output).map_err(|e| {
            CallFailure::new(
                FailureClass::OutputLimit,
                format!("output of plugin '{plugin}' is over the host's limit: {e}"),
            )
        })?;
        if let Some(info) = self.inner.executor.plugin(plugin) {
            info.check_output(&output).map_err(|problems| {
                CallFailure::new(
                    FailureClass::Permanent,
                    format!(
                        "output of plugin '{plugin}' does not match its output schema: {problems}"
                    ),
                )
            })?;
        }
        Ok(output)
    }

    /// Calls one action of step `index`; the refusals come back as events
    /// (bounded here and by the runtime). See [`blame_setup`] for what a
    /// refusal does to a failure.
    /// The call of `kind` on step `index`'s plugin with `input`, progress
    /// reported to the run's status.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn call_request(
        &self,
        summary: &RunSummary,
        flow: &Flow,
        index: u32,
        attempt: u32,
        kind: CallKind,
        input: &Value,
        output: Option<String>,
    ) -> CallRequest {
        let step = &flow.steps[index as usize];
        CallRequest {
            plugin: step.plugin.clone(),
            kind,
            ctx: self.call_context(summary, flow, index, attempt, kind),
            input: input.to_string(),
            output,
            timeout: step.timeout,
            progress: Some(self.progress_sink(summary.run_id)),
            // The build the run started with (or was upgraded to).
            build: summary.plugins.get(&step.plugin).cloned(),
        }
    }

    async fn call(
        &self,
        summary: &RunSummary,
        flow: &Flow,
        index: u32,
        attempt: u32,
        kind: CallKind,
    ) -> (CallReport, Vec<(EventKind, Option<u32>, Source)>) {
        let step = &flow.steps[index as usize];
        let report = match self.checked_input(summary, flow, index, None).await {
            Err(failure) => CallReport {
                source: "host".into(),
                result: Err(failure),
                denials: Vec::new(),
                duration: Duration::ZERO,
                downstream: Vec::new(),
                exchanges: Vec::new(),
            },
            Ok(input) => {
                let output = match kind {
                    CallKind::Run => None,
                    CallKind::Compensate | CallKind::Reconcile => summary.outputs[index as usize]
                        .as_ref()
                        .map(Value::to_string),
                };
                let request =
                    self.call_request(summary, flow, index, attempt, kind, &input, output);
                let span = tracing::info_span!("plugin_call", plugin = %step.plugin);
                self.inner.executor.call(request).instrument(span).await
            }
        };
        if let Some(o) = self.observer() {
            let outcome = report.result.as_ref().map(|_| ()).map_err(|f| f.class);
            o.called(&flow.name, &step.name, kind, report.duration, outcome);
        }
        match &report.result {
            Ok(_) => tracing::debug!(
                duration_ms = report.duration.as_millis() as u64,
                "attempt answered"
            ),
            Err(f) => tracing::info!(
                class = f.class.as_str(),
                duration_ms = report.duration.as_millis() as u64,
                "attempt failed: {}",
                f.message
            ),
        }
        // The runtime keeps the first refusals and counts the rest in its
        // last one: keep the first few and that last.
        let kept = report.denials.len().min(MAX_DENIAL_EVENTS);
        let denials = report.denials[..kept.saturating_sub(1)]
            .iter()
            .chain(report.denials.last())
            .map(|d| {
                let kind = EventKind::CapabilityDenied {
                    capability: bounds::cut(&d.capability, 64),
                    detail: bounds::cut_detail(&d.detail),
                };
                (kind, Some(index), Source(report.source.clone()))
            })
            .collect();
        (report, denials)
    }

    async fn run_step(
        &self,
        summary: &mut RunSummary,
        flow: &Flow,
        index: u32,
        attempt: u32,
        maybe_interrupted: bool,
        probes: &[String],
    ) -> Result<(), settle_types::store::StoreError> {
        // Only at a step boundary: a retry, the rest of the items, or an
        // undo goes to the build that may have made the effect.
        if crate::upgrades::at_step_boundary(summary, index, attempt, maybe_interrupted) {
            self.note_plugin_change(summary, flow, index).await?;
        }
        if flow.steps[index as usize].calls_per_item() {
            return self
                .run_items(summary, flow, index, attempt, maybe_interrupted, probes)
                .await;
        }
        let plugin = &flow.steps[index as usize].plugin;
        let (report, mut events) = self
            .call(summary, flow, index, attempt, CallKind::Run)
            .await;
        let source = Source(report.source.clone());
        let now = self.now();
        let outcome =
            crate::breakers::Outcome::of(report.result.as_ref().map(|_| ()).map_err(|f| f.class));
        for change in self
            .inner
            .domains
            .record(plugin, outcome, &report.downstream, probes, now)
        {
            self.breaker_changed(change);
        }
        let denials = report.denials;
        if !report.exchanges.is_empty() {
            let recorded = EventKind::ExchangesRecorded {
                index,
                item: None,
                attempt,
                exchanges: report.exchanges,
            };
            events.push((recorded, Some(index), source.clone()));
        }
        // (output, whether a failure may have had its effect)
        let output = self.run_answer(&flow.steps[index as usize].plugin, report.result);
        let decided = match output {
            Ok(output) => {
                let reconciles = |plugin: &str| self.reconciles(plugin);
                let duration_ms = u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX);
                vec![
                    EventKind::StepCompleted {
                        index,
                        output,
                        duration_ms,
                    },
                    transitions::after_step_completed(flow, index, now, &reconciles),
                ]
            }
            Err((f, unknown)) => {
                // Whether the attempt may have had its effect is decided on
                // what happened (a timeout stays a timeout), before a refusal
                // makes it the host's setup failing; an earlier interrupted
                // call of this attempt may have had one too.
                let (failure, retry_after) = split_failure(blame_setup(f, &denials));
                let failed = transitions::StepFailure {
                    may_have_effect: unknown || maybe_interrupted,
                    failure,
                    retry_after,
                    duration_ms: Some(
                        u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
                    ),
                };
                transitions::after_step_failed(flow, summary, index, attempt, failed, now)
            }
        };
        events.extend(attribute(decided, index, &source));
        self.record(summary, events, now).await
    }

    /// The events of a step that calls no plugin completing with `output`.
    fn builtin_completed(
        &self,
        flow: &Flow,
        index: u32,
        output: serde_json::Value,
        now: u64,
    ) -> Vec<EventKind> {
        vec![
            EventKind::StepCompleted {
                index,
                output,
                duration_ms: 0,
            },
            transitions::after_step_completed(flow, index, now, &|plugin| self.reconciles(plugin)),
        ]
    }

    /// Records what a step that calls no plugin decided, as the host's.
    async fn record_builtin(
        &self,
        summary: &mut RunSummary,
        index: u32,
        events: Vec<EventKind>,
        now: u64,
        deferred: &mut Option<u64>,
    ) -> Result<(), settle_types::store::StoreError> {
        *deferred = None;
        let events = events
            .into_iter()
            .map(|k| (step_of(&k, index), k))
            .map(|(step, k)| (k, step, Source::host()))
            .collect();
        self.record(summary, events, now).await
    }

    /// A `wait:` step: the first time, records until when it waits (so a
    /// restart keeps that time); once that time has come, completes it.
    /// An `until` that cannot be read as a time fails the step for good.
    async fn wait_step(
        &self,
        summary: &mut RunSummary,
        flow: &Flow,
        index: u32,
        deferred: &mut Option<u64>,
    ) -> Result<(), settle_types::store::StoreError> {
        let now = self.now();
        let Some(wait) = flow.steps.get(index as usize).and_then(|s| s.wait.as_ref()) else {
            return Ok(());
        };
        let events = match summary.pausing_until {
            Some(until) if now >= until => self.builtin_completed(
                flow,
                index,
                serde_json::json!({ "waited_until_ms": until }),
                now,
            ),
            // Not yet (woken early, or released from a hold): the loop
            // sleeps until then.
            Some(until) => {
                *deferred = Some(until);
                return Ok(());
            }
            None => match self.wait_target(summary, flow, index, wait).await {
                Ok(until_ms) => vec![EventKind::StepWaiting {
                    index,
                    until_ms,
                    signal: None,
                    needed: None,
                }],
                Err(f) => builtin_failed(flow, summary, index, f.class, &f.message, now),
            },
        };
        self.record_builtin(summary, index, events, now, deferred)
            .await
    }

    /// A `signal:` step: takes the first signal of its name no step has
    /// taken, if the run has one; else, the first time, records until when
    /// it waits; when that time passes without it, fails for good or goes
    /// on without it, as the flow says.
    async fn signal_step(
        &self,
        summary: &mut RunSummary,
        flow: &Flow,
        index: u32,
        deferred: &mut Option<u64>,
    ) -> Result<(), settle_types::store::StoreError> {
        let now = self.now();
        let Some(signal) = flow
            .steps
            .get(index as usize)
            .and_then(|s| s.signal.as_ref())
        else {
            return Ok(());
        };
        // The first one of its name no step has taken, in the order received.
        let received = summary
            .signals
            .iter()
            .enumerate()
            .find(|(_, s)| s.name == signal.name && s.taken_by.is_none())
            .map(|(position, s)| (position, s.payload.clone()));
        let complete = |output| self.builtin_completed(flow, index, output, now);
        let events = match (received, summary.pausing_until) {
            (Some((position, payload)), _) => {
                let mut events = vec![EventKind::SignalTaken {
                    index,
                    position: u32::try_from(position).unwrap_or(u32::MAX),
                }];
                events.extend(complete(payload));
                events
            }
            (None, None) => vec![EventKind::StepWaiting {
                index,
                until_ms: now
                    .saturating_add(u64::try_from(signal.timeout.as_millis()).unwrap_or(u64::MAX)),
                signal: Some(signal.name.clone()),
                needed: None,
            }],
            (None, Some(until)) if now < until => {
                *deferred = Some(until);
                return Ok(());
            }
            (None, Some(_)) => match signal.on_timeout {
                settle_flow::OnTimeout::Continue => complete(serde_json::Value::Null),
                settle_flow::OnTimeout::Fail => builtin_failed(
                    flow,
                    summary,
                    index,
                    FailureClass::Permanent,
                    &format!(
                        "no signal '{}' came within {}",
                        signal.name,
                        humantime::format_duration(signal.timeout)
                    ),
                    now,
                ),
            },
        };
        self.record_builtin(summary, index, events, now, deferred)
            .await
    }

    /// An `approval:` step: completes once enough people approved (its
    /// output names them), fails for good on a rejection, and otherwise
    /// waits (the first time recording until when), like a signal step.
    async fn approval_step(
        &self,
        summary: &mut RunSummary,
        flow: &Flow,
        index: u32,
        deferred: &mut Option<u64>,
    ) -> Result<(), settle_types::store::StoreError> {
        let now = self.now();
        let Some(step) = flow.steps.get(index as usize) else {
            return Ok(());
        };
        let Some(approval) = step.approval.as_ref() else {
            return Ok(());
        };
        let name = settle_flow::Approval::signal_name(&step.name);
        // The decisions not taken by an earlier run of this step.
        let decisions: Vec<(usize, &settle_types::summary::ReceivedSignal)> = summary
            .signals
            .iter()
            .enumerate()
            .filter(|(_, s)| s.name == name && s.taken_by.is_none())
            .collect();
        let by = |s: &settle_types::summary::ReceivedSignal| s.key.clone().unwrap_or_default();
        // In the order given: whichever comes first, enough approvals or a
        // rejection, decides.
        let mut approved: Vec<String> = Vec::new();
        let mut rejected = None;
        for (_, d) in &decisions {
            if approved.len() >= approval.required as usize {
                break;
            }
            if d.payload["decision"] == "reject" {
                rejected = Some(*d);
                break;
            }
            if d.payload["decision"] == "approve" {
                approved.push(by(d));
            }
        }
        let taken: Vec<EventKind> = decisions
            .iter()
            .map(|(p, _)| EventKind::SignalTaken {
                index,
                position: u32::try_from(*p).unwrap_or(u32::MAX),
            })
            .collect();
        let fail = |message: String| {
            builtin_failed(flow, summary, index, FailureClass::Permanent, &message, now)
        };
        let complete = |output| self.builtin_completed(flow, index, output, now);
        let events = if let Some(r) = rejected {
            let comment = r.payload["comment"].as_str().unwrap_or_default();
            // Taken: a run of the step again asks anew.
            let mut events = taken.clone();
            events.extend(fail(format!(
                "rejected by {}{}",
                by(r),
                if comment.is_empty() {
                    String::new()
                } else {
                    format!(": {comment}")
                }
            )));
            events
        } else if approved.len() >= approval.required as usize {
            let mut events = taken;
            events.extend(complete(serde_json::json!({ "approved_by": approved })));
            events
        } else {
            match summary.pausing_until {
                None => vec![EventKind::StepWaiting {
                    index,
                    until_ms: now.saturating_add(
                        u64::try_from(approval.timeout.as_millis()).unwrap_or(u64::MAX),
                    ),
                    signal: Some(name),
                    needed: Some(approval.required),
                }],
                Some(until) if now < until => {
                    *deferred = Some(until);
                    return Ok(());
                }
                // The decisions so far are spent either way: a run of the
                // step again asks anew.
                Some(_) => {
                    let mut events = taken;
                    events.extend(match approval.on_timeout {
                        settle_flow::OnTimeout::Continue => complete(serde_json::Value::Null),
                        settle_flow::OnTimeout::Fail => fail(format!(
                            "{} of {} approvals came within {}",
                            approved.len(),
                            approval.required,
                            humantime::format_duration(approval.timeout)
                        )),
                    });
                    events
                }
            }
        };
        self.record_builtin(summary, index, events, now, deferred)
            .await
    }

    /// Whether `plugin` answers `reconcile` (a plugin missing now is asked
    /// all the same, and holds the run, rather than skipping confirmation).
    pub(crate) fn reconciles(&self, plugin: &str) -> bool {
        !plugin.is_empty()
            && self
                .inner
                .executor
                .plugin(plugin)
                .is_none_or(|p| p.manifest.supports_reconcile)
    }

    /// Asks the step's failure domains (circuit breakers, retry budgets)
    /// whether the attempt may start: with `Some(probes)` it may (as the
    /// probe of those half-open breakers); with `None` it was deferred
    /// (recorded, no attempt spent) and waits.
    async fn admit(
        &self,
        summary: &mut RunSummary,
        flow: &Flow,
        index: u32,
        attempt: u32,
        deferred_until: &mut Option<u64>,
    ) -> Result<Option<Vec<String>>, settle_types::store::StoreError> {
        // A `parallel` step is admitted when each of its plugins is.
        let mut plugins: Vec<&str> = flow.steps[index as usize]
            .calls()
            .iter()
            .map(|c| c.plugin.as_str())
            .collect();
        plugins.sort_unstable();
        plugins.dedup();
        let mut admission = Admit::Go { probes: Vec::new() };
        for plugin in plugins {
            let (admit, changes) = self.inner.domains.admit(plugin, attempt, self.now());
            for change in changes {
                self.breaker_changed(change);
            }
            match (&mut admission, admit) {
                (Admit::Go { probes }, Admit::Go { probes: more }) => probes.extend(more),
                (_, wait @ Admit::Wait { .. }) => {
                    admission = wait;
                    break;
                }
                _ => {}
            }
        }
        match admission {
            Admit::Go { probes } => Ok(Some(probes)),
            // Already recorded as waiting for this attempt: the rest of
            // the wait is kept in memory, so a long outage adds one event
            // per attempt, not one per probe.
            Admit::Wait { until_ms, .. } if summary.waiting_on.is_some() => {
                *deferred_until = Some(until_ms);
                Ok(None)
            }
            Admit::Wait { until_ms, reason } => {
                let deferred = EventKind::StepDeferred {
                    index,
                    attempt,
                    until_ms,
                    reason: bounds::cut_detail(&reason),
                };
                let now = self.now();
                self.record(summary, vec![(deferred, Some(index), Source::host())], now)
                    .await?;
                Ok(None)
            }
        }
    }

    /// Says that a breaker changed: in the host's log and to the observer.
    pub(crate) fn breaker_changed(&self, change: crate::breakers::Change) {
        tracing::warn!(
            domain = %change.domain,
            state = change.state,
            "circuit breaker {}: {}",
            change.state,
            change.detail
        );
        if let Some(o) = self.observer() {
            o.breaker_changed(&change.domain, change.state);
        }
    }

    async fn compensate_step(
        &self,
        summary: &mut RunSummary,
        flow: &Flow,
        index: u32,
        attempt: u32,
    ) -> Result<(), settle_types::store::StoreError> {
        if flow.steps[index as usize].calls_per_item() {
            return self.compensate_items(summary, flow, index, attempt).await;
        }
        let (report, mut events) = self
            .call(summary, flow, index, attempt, CallKind::Compensate)
            .await;
        let source = Source(report.source.clone());
        let now = self.now();
        let decided = match report.result {
            Ok(_) => {
                let duration_ms = u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX);
                vec![
                    EventKind::CompensationCompleted { index, duration_ms },
                    transitions::after_compensation_completed(flow, summary, index, now),
                ]
            }
            Err(f) => {
                let (failure, retry_after) = split_failure(blame_setup(f, &report.denials));
                transitions::after_compensation_failed(
                    flow,
                    summary,
                    index,
                    attempt,
                    failure,
                    retry_after,
                    now,
                )
            }
        };
        events.extend(attribute(decided, index, &source));
        self.record(summary, events, now).await
    }

    /// One confirmation pass: ask every completed step whose plugin can
    /// reconcile. A step whose plugin is missing is asked all the same: the
    /// runtime answers `unavailable`, which holds the run for an operator
    /// instead of skipping to "settled".
    async fn reconcile(
        &self,
        summary: &mut RunSummary,
        flow: &Flow,
        attempt: u32,
    ) -> Result<(), settle_types::store::StoreError> {
        self.confirm(summary, flow, attempt, transitions::after_reconciliation)
            .await
    }

    /// A periodic check of a settled run (its flow's `reconcile:` window):
    /// the same questions as the confirmation pass, other consequences
    /// ([`transitions::after_recheck`]).
    pub(super) async fn recheck(
        &self,
        summary: &mut RunSummary,
        flow: &Flow,
        attempt: u32,
    ) -> Result<(), settle_types::store::StoreError> {
        self.confirm(summary, flow, attempt, transitions::after_recheck)
            .await
    }

    /// Asks downstream, lets `decide` say what follows, records it all.
    async fn confirm(
        &self,
        summary: &mut RunSummary,
        flow: &Flow,
        attempt: u32,
        decide: fn(&Flow, &RunSummary, Vec<transitions::Confirmation>, u32, u64) -> Vec<EventKind>,
    ) -> Result<(), settle_types::store::StoreError> {
        let (verdicts, mut events) = self.ask_downstream(summary, flow, attempt).await;
        let now = self.now();
        let decided = decide(flow, summary, strip(&verdicts), attempt, now);
        events.extend(attribute_verdicts(decided, &verdicts));
        self.record(summary, events, now).await
    }

    /// Calls `reconcile` of every completed step whose plugin can: each
    /// step's verdict (or why there is none) and who gave it, plus the
    /// capabilities refused on the way.
    async fn ask_downstream(
        &self,
        summary: &RunSummary,
        flow: &Flow,
        attempt: u32,
    ) -> (Vec<SourcedVerdict>, Vec<(EventKind, Option<u32>, Source)>) {
        let mut verdicts = Vec::new();
        let mut events = Vec::new();
        for (i, step) in flow.steps.iter().enumerate() {
            let index = i as u32;
            if !step.calls().iter().any(|c| self.reconciles(&c.plugin))
                || summary.outputs[i].is_none()
            {
                continue;
            }
            if step.calls_per_item() {
                // A list of no items has nothing to ask.
                if summary
                    .items
                    .get(&index)
                    .is_none_or(|d| d.completed.is_empty())
                {
                    continue;
                }
                if let Some((verdict, source)) =
                    self.reconcile_items(summary, flow, index, attempt).await
                {
                    verdicts.push((index, verdict, source));
                }
                continue;
            }
            let span = attempt_span(summary, flow, index, attempt, Action::Reconcile);
            let (report, denials) = self
                .call(summary, flow, index, attempt, CallKind::Reconcile)
                .instrument(span)
                .await;
            events.extend(denials);
            let verdict = match report.result {
                Ok(CallOutput::Reconciled(Verdict::Drifted(detail))) => {
                    Ok(Verdict::Drifted(bounds::cut_detail(&detail)))
                }
                Ok(CallOutput::Reconciled(v)) => Ok(v),
                Ok(other) => Err(Failure {
                    class: FailureClass::Permanent,
                    message: format!("unexpected answer {other:?}"),
                }),
                Err(f) => Err(split_failure(blame_setup(f, &report.denials)).0),
            };
            verdicts.push((index, verdict, Source(report.source.clone())));
        }
        (verdicts, events)
    }
}
