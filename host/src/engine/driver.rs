//! Drives one run: wait for its next action to be due, call the plugin,
//! commit what happened, repeat until the run is terminal.
//!
//! The in-memory summary only advances after a commit is durable, so after a
//! crash the log names exactly the step and attempt to call next, with the
//! same operation id. A plugin call may therefore happen again after a crash
//! (at least once); its completion is recorded at most once.

use super::status::Progress;
use super::transitions;
use super::{Engine, Live};
use crate::flow::Flow;
use crate::flow::template::Scope;
use crate::model::{
    Event, EventKind, Failure, FailureClass, Next, RunSummary, SCHEMA_VERSION, Source, now_ms,
    operation_id,
};
use crate::runtime::call::{CallContext, CallFailure};
use crate::runtime::{CallKind, CallOutput, CallReport, CallRequest, Executor, ProgressSink};
use crate::store::{Commit, Store};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
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
        operation_id: step_name.as_ref().map(|s| operation_id(summary.run_id, s)),
        step: step_name,
        attempt,
        source,
        causation: Some(summary.last_event),
        trace_id: summary.run_id.trace_id(),
        kind,
    }
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
        let step = match &kind {
            EventKind::StepScheduled { index, .. }
            | EventKind::CompensationScheduled { index, .. } => Some(*index),
            EventKind::ReconciliationScheduled { .. }
            | EventKind::RunSettled
            | EventKind::RunCompensated
            | EventKind::RunDrifted { .. }
            | EventKind::RunNeedsAttention { .. } => None,
            _ => Some(index),
        };
        let source = if i == 0 {
            plugin.clone()
        } else {
            Source::host()
        };
        (kind, step, source)
    })
}

fn split_failure(f: CallFailure) -> (Failure, Option<Duration>) {
    let retry_after = f.retry_after_ms.map(Duration::from_millis);
    (
        Failure {
            class: f.class,
            message: f.message,
        },
        retry_after,
    )
}

impl<S: Store, X: Executor> Engine<S, X> {
    pub(super) async fn drive(self, mut summary: RunSummary, flow: Arc<Flow>) {
        let run = summary.run_id;
        let mut stop = self.inner.shutdown.subscribe();
        while let Some(due) = summary.next.due_ms() {
            if *stop.borrow() {
                break;
            }
            let now = now_ms();
            // Waiting (for a timer or a free worker) ends early on shutdown;
            // an action already started is finished and recorded.
            let permit = tokio::select! {
                permit = async {
                    if due > now {
                        tokio::time::sleep(Duration::from_millis(due - now)).await;
                    }
                    self.inner.permits.acquire().await
                } => permit,
                _ = stop.changed() => break,
            };
            let Ok(_permit) = permit else { break };
            self.set_running(run, true);
            // Boxed: the call's state (a few KiB, wasmtime's included) lives
            // on the heap only while it runs, so the many runs that wait for
            // a timer or a worker stay small.
            let result = match summary.next.clone() {
                Next::Step { index, attempt, .. } => {
                    Box::pin(self.run_step(&mut summary, &flow, index, attempt)).await
                }
                Next::Compensate { index, attempt, .. } => {
                    Box::pin(self.compensate_step(&mut summary, &flow, index, attempt)).await
                }
                Next::Reconcile { attempt, .. } => {
                    Box::pin(self.reconcile(&mut summary, &flow, attempt)).await
                }
                Next::Nothing => Ok(()),
            };
            self.set_running(run, false);
            if let Err(e) = result {
                // Nothing was recorded: the same action runs again (with the
                // same operation id) once the store answers.
                tracing::error!(run = %run, "cannot record progress, retrying in 1 s: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        self.inner
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&run);
    }

    fn set_running(&self, run: crate::model::RunId, running: bool) {
        if let Some(live) = self
            .inner
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&run)
        {
            live.running = running;
            if !running {
                live.progress = None;
            }
        }
    }

    fn progress_sink(&self, run: crate::model::RunId) -> ProgressSink {
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
    /// then advances the in-memory summary.
    async fn record(
        &self,
        summary: &mut RunSummary,
        kinds: Vec<(EventKind, Option<u32>, Source)>,
    ) -> Result<(), crate::store::StoreError> {
        let previous_due_ms = summary.next.due_ms();
        let mut next = summary.clone();
        let now = now_ms();
        let mut events = Vec::with_capacity(kinds.len());
        for (kind, step, source) in kinds {
            let event = draft(&next, kind, step, source, now);
            next.apply(&event);
            events.push(event);
        }
        let commit = Commit {
            run_id: next.run_id,
            events,
            summary: next.clone(),
            previous_due_ms,
            claim: None,
        };
        self.inner.store.commit(commit).await?;
        *summary = next;
        if let Some(Live { updates, .. }) = self
            .inner
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&summary.run_id)
        {
            updates.send_replace(Arc::new(summary.clone()));
        }
        Ok(())
    }

    fn call_context(
        &self,
        summary: &RunSummary,
        flow: &Flow,
        index: u32,
        attempt: u32,
    ) -> CallContext {
        let step = &flow.steps[index as usize].name;
        CallContext {
            run_id: summary.run_id.to_string(),
            flow: flow.id(),
            step: step.clone(),
            operation_id: operation_id(summary.run_id, step),
            attempt,
            trace_id: summary.run_id.trace_id(),
        }
    }

    /// Renders the step's input and checks it against the plugin's schema.
    fn step_input(
        &self,
        summary: &RunSummary,
        flow: &Flow,
        index: u32,
    ) -> Result<Value, CallFailure> {
        let step = &flow.steps[index as usize];
        let run_id = summary.run_id.to_string();
        let scope = Scope {
            input: &summary.input,
            outputs: &summary.outputs,
            run_id: &run_id,
        };
        let input = step.input.render(&scope).map_err(|e| {
            CallFailure::new(FailureClass::InvalidInput, format!("step input: {e}"))
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

    /// Parses what the plugin returned and checks it against the plugin's
    /// output schema. Either problem is the plugin's fault, so it fails the
    /// attempt for good: retrying the same code gives the same answer.
    fn step_output(&self, plugin: &str, text: &str) -> Result<Value, CallFailure> {
        let output = serde_json::from_str::<Value>(text).map_err(|e| {
            CallFailure::new(
                FailureClass::Permanent,
                format!("plugin '{plugin}' returned output that is not JSON: {e}"),
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

    async fn call(
        &self,
        summary: &RunSummary,
        flow: &Flow,
        index: u32,
        attempt: u32,
        kind: CallKind,
    ) -> (CallReport, Vec<(EventKind, Option<u32>, Source)>) {
        let step = &flow.steps[index as usize];
        let report = match self.step_input(summary, flow, index) {
            Err(failure) => CallReport {
                source: "host".into(),
                result: Err(failure),
                denials: Vec::new(),
                duration: Duration::ZERO,
            },
            Ok(input) => {
                let request = CallRequest {
                    plugin: step.plugin.clone(),
                    kind,
                    ctx: self.call_context(summary, flow, index, attempt),
                    input: input.to_string(),
                    output: summary.outputs[index as usize]
                        .as_ref()
                        .map(Value::to_string),
                    timeout: step.timeout,
                    progress: Some(self.progress_sink(summary.run_id)),
                };
                self.inner.executor.call(request).await
            }
        };
        let denials = report
            .denials
            .iter()
            .map(|d| {
                let kind = EventKind::CapabilityDenied {
                    capability: d.capability.clone(),
                    detail: d.detail.clone(),
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
    ) -> Result<(), crate::store::StoreError> {
        let (report, mut events) = self
            .call(summary, flow, index, attempt, CallKind::Run)
            .await;
        let source = Source(report.source.clone());
        let now = now_ms();
        let output = match report.result {
            Ok(CallOutput::Ran(text)) => {
                self.step_output(&flow.steps[index as usize].plugin, &text)
            }
            Ok(other) => Err(CallFailure::new(
                FailureClass::Permanent,
                format!("unexpected answer {other:?}"),
            )),
            Err(f) => Err(f),
        };
        let decided = match output {
            Ok(output) => {
                let reconciles = |plugin: &str| {
                    self.inner
                        .executor
                        .plugin(plugin)
                        .is_some_and(|p| p.manifest.supports_reconcile)
                };
                let duration_ms = report.duration.as_millis() as u64;
                vec![
                    EventKind::StepCompleted {
                        index,
                        output,
                        duration_ms,
                    },
                    transitions::after_step_completed(flow, index, now, &reconciles),
                ]
            }
            Err(f) => {
                let (failure, retry_after) = split_failure(f);
                transitions::after_step_failed(
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
        self.record(summary, events).await
    }

    async fn compensate_step(
        &self,
        summary: &mut RunSummary,
        flow: &Flow,
        index: u32,
        attempt: u32,
    ) -> Result<(), crate::store::StoreError> {
        let (report, mut events) = self
            .call(summary, flow, index, attempt, CallKind::Compensate)
            .await;
        let source = Source(report.source.clone());
        let now = now_ms();
        let decided = match report.result {
            Ok(_) => {
                let duration_ms = report.duration.as_millis() as u64;
                vec![
                    EventKind::CompensationCompleted { index, duration_ms },
                    transitions::after_compensation_completed(flow, summary, index, now),
                ]
            }
            Err(f) => {
                let (failure, retry_after) = split_failure(f);
                transitions::after_compensation_failed(
                    flow,
                    index,
                    attempt,
                    failure,
                    retry_after,
                    now,
                )
            }
        };
        events.extend(attribute(decided, index, &source));
        self.record(summary, events).await
    }

    /// One confirmation pass: ask every step whose plugin can reconcile.
    async fn reconcile(
        &self,
        summary: &mut RunSummary,
        flow: &Flow,
        attempt: u32,
    ) -> Result<(), crate::store::StoreError> {
        let mut verdicts = Vec::new();
        let mut events = Vec::new();
        for (i, step) in flow.steps.iter().enumerate() {
            let index = i as u32;
            let reconciles = self
                .inner
                .executor
                .plugin(&step.plugin)
                .is_some_and(|p| p.manifest.supports_reconcile);
            if !reconciles || summary.outputs[i].is_none() {
                continue;
            }
            let (report, denials) = self
                .call(summary, flow, index, attempt, CallKind::Reconcile)
                .await;
            events.extend(denials);
            let verdict = match report.result {
                Ok(CallOutput::Reconciled(v)) => Ok(v),
                Ok(other) => Err(Failure {
                    class: FailureClass::Permanent,
                    message: format!("unexpected answer {other:?}"),
                }),
                Err(f) => Err(Failure {
                    class: f.class,
                    message: f.message,
                }),
            };
            verdicts.push((index, verdict, Source(report.source.clone())));
        }
        let sources: Vec<(u32, Source)> =
            verdicts.iter().map(|(i, _, s)| (*i, s.clone())).collect();
        let decided = transitions::after_reconciliation(
            flow,
            verdicts.into_iter().map(|(i, v, _)| (i, v)).collect(),
            attempt,
            now_ms(),
        );
        for kind in decided {
            let (step, source) = match &kind {
                EventKind::StepReconciled { index, .. } => {
                    let source = sources
                        .iter()
                        .find(|(i, _)| i == index)
                        .map(|(_, s)| s.clone())
                        .unwrap_or_else(Source::host);
                    (Some(*index), source)
                }
                _ => (None, Source::host()),
            };
            events.push((kind, step, source));
        }
        self.record(summary, events).await
    }
}
