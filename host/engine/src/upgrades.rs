//! `upgrade: at-step-boundary`: a run moves to the current version of its
//! flow between two steps, when that version asks for it and agrees with
//! what the run did so far. Runs of a version that does not ask keep the
//! version they started with (the default).
//!
//! A run about to start step `index` (its first attempt, no item of it
//! called) moves when the current version has a step `index` and its
//! first `index` steps are the run's, by name and by what they call: the
//! outputs recorded so far keep meaning the same, and undoing them calls
//! the same plugins. The move is one event (`flow-upgraded`, with both
//! versions), written after the new version's text is kept in the store;
//! the step is scheduled again under the new version's retry policy.

use crate::Engine;
use settle_flow::{Flow, StepDef, Upgrade};
use settle_types::executor::Executor;
use settle_types::store::{RunQueries, StoreError};
use settle_types::{EventKind, Next, RunState, RunSummary, Source};
use std::sync::Arc;

/// Why `new` cannot take over a run of `old` about to start step `index`;
/// `None` when it can.
pub fn incompatible(old: &Flow, new: &Flow, index: usize) -> Option<String> {
    if new.steps.len() <= index {
        return Some(format!(
            "version {} has {} step(s); the run is at step {}",
            new.version,
            new.steps.len(),
            index + 1
        ));
    }
    for (done, step) in old.steps[..index].iter().zip(&new.steps) {
        if !same_calls(done, step) {
            return Some(format!(
                "step {} is '{}' in version {} but '{}' (or calls other plugins) in version {}",
                old.steps
                    .iter()
                    .position(|s| s.name == done.name)
                    .unwrap_or(0)
                    + 1,
                done.name,
                old.version,
                step.name,
                new.version
            ));
        }
    }
    None
}

/// Whether two steps have one name and make the same kind of calls to the
/// same plugins (so an output of one is an output of the other, and
/// undoing it calls the same plugins).
fn same_calls(a: &StepDef, b: &StepDef) -> bool {
    let calls = |s: &StepDef| -> Vec<(String, String)> {
        s.calls()
            .iter()
            .map(|c| (c.name.clone(), c.plugin.clone()))
            .collect()
    };
    a.name == b.name
        && a.compensate == b.compensate
        && a.for_each.is_some() == b.for_each.is_some()
        && a.parallel.is_some() == b.parallel.is_some()
        && a.calls_plugin() == b.calls_plugin()
        && calls(a) == calls(b)
}

/// Whether attempt `attempt` of step `index` starts the step afresh: its
/// first attempt, nothing of it begun (no call of it may be out, no item
/// called, no timer or wait started). `maybe_interrupted`: the run was
/// just resumed, so its first attempt may have been cut off mid-call.
pub(crate) fn at_step_boundary(
    summary: &RunSummary,
    index: u32,
    attempt: u32,
    maybe_interrupted: bool,
) -> bool {
    attempt == 1
        && !maybe_interrupted
        && !summary.items.contains_key(&index)
        && summary.pausing_until.is_none()
        && summary.awaiting_signal.is_none()
}

impl<S: RunQueries, X: Executor> Engine<S, X> {
    /// At a step boundary, the version of the flow the run goes on with:
    /// the current one when it asks for runs to move and can take this one
    /// over (recorded), else `flow`.
    /// See [`at_step_boundary`] for `maybe_interrupted`.
    pub(crate) async fn upgrade_at_boundary(
        &self,
        summary: &mut RunSummary,
        flow: &Arc<Flow>,
        maybe_interrupted: bool,
    ) -> Result<Arc<Flow>, StoreError> {
        let Next::Step {
            index,
            attempt,
            not_before_ms,
            ..
        } = summary.next
        else {
            return Ok(flow.clone());
        };
        if !at_step_boundary(summary, index, attempt, maybe_interrupted)
            || !matches!(summary.state, RunState::Accepted | RunState::Processing)
        {
            return Ok(flow.clone());
        }
        let Some(current) = self.inner.catalog.get().and_then(|c| c.current(&flow.name)) else {
            return Ok(flow.clone());
        };
        if current.digest == flow.digest || current.upgrade != Upgrade::AtStepBoundary {
            return Ok(flow.clone());
        }
        // A re-applied run has effects past this step: the new version
        // would not know how to undo them.
        if (index as usize..summary.steps.len()).any(|i| summary.may_have_effect(i)) {
            return Ok(flow.clone());
        }
        if let Some(why) = incompatible(flow, &current, index as usize) {
            tracing::debug!(run = %summary.run_id, "not moved to {}: {why}", current.id());
            return Ok(flow.clone());
        }
        let next = self.remember_flow(&current);
        self.inner
            .store
            .put_flow(&next.digest, &next.source)
            .await?;
        let step = &next.steps[index as usize];
        let events = vec![
            (
                EventKind::FlowUpgraded {
                    from_version: flow.version.clone(),
                    from_digest: flow.digest.clone(),
                    to_version: next.version.clone(),
                    to_digest: next.digest.clone(),
                    steps: next.steps.iter().map(|s| s.name.clone()).collect(),
                    plugins: next
                        .steps
                        .iter()
                        .flat_map(StepDef::calls)
                        .filter(|c| !summary.plugins.contains_key(&c.plugin))
                        .filter_map(|c| {
                            let p = self.inner.executor.plugin(&c.plugin)?;
                            Some((c.plugin.clone(), p.digest.clone()))
                        })
                        .collect(),
                },
                None,
                Source::host(),
            ),
            (
                EventKind::StepScheduled {
                    index,
                    attempt: 1,
                    max_attempts: step.retry.max_attempts,
                    not_before_ms,
                },
                Some(index),
                Source::host(),
            ),
        ];
        tracing::info!(run = %summary.run_id, "moved from {} to {}", flow.id(), next.id());
        let now = self.now();
        self.record(summary, events, now).await?;
        Ok(next)
    }
}
