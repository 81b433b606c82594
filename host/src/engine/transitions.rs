//! The saga's decisions, as pure functions from what the log says (the run
//! summary) and what just happened to the events to append. No I/O here: the
//! driver calls these, then commits what they return in one durable write.

use super::retry::RetryPolicy;
use crate::flow::Flow;
use crate::model::{EventKind, Failure, RunSummary, Verdict};
use std::time::Duration;

/// How many times the host asks downstream systems before giving up on a
/// confirmation and asking an operator.
pub fn reconcile_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial_interval: Duration::from_millis(500),
        ..RetryPolicy::default()
    }
}

/// Step `index` completed: schedule the next step, or confirm, or settle.
pub fn after_step_completed(
    flow: &Flow,
    index: u32,
    now_ms: u64,
    reconciles: &dyn Fn(&str) -> bool,
) -> EventKind {
    let next = index as usize + 1;
    if let Some(step) = flow.steps.get(next) {
        return EventKind::StepScheduled {
            index: next as u32,
            attempt: 1,
            max_attempts: step.retry.max_attempts,
            not_before_ms: now_ms,
        };
    }
    if flow.steps.iter().any(|s| reconciles(&s.plugin)) {
        EventKind::ReconciliationScheduled {
            attempt: 1,
            max_attempts: reconcile_policy().max_attempts,
            not_before_ms: now_ms,
        }
    } else {
        EventKind::RunSettled
    }
}

/// An attempt of step `index` failed: retry it, or start undoing.
pub fn after_step_failed(
    flow: &Flow,
    summary: &RunSummary,
    index: u32,
    attempt: u32,
    failure: Failure,
    retry_after: Option<Duration>,
    now_ms: u64,
) -> Vec<EventKind> {
    let policy = &flow.steps[index as usize].retry;
    match policy.next_delay(attempt, failure.class, retry_after) {
        Some(delay) => {
            let at = now_ms + delay.as_millis() as u64;
            vec![
                EventKind::StepFailed {
                    index,
                    failure,
                    retry_at_ms: Some(at),
                },
                EventKind::StepScheduled {
                    index,
                    attempt: attempt + 1,
                    max_attempts: policy.max_attempts,
                    not_before_ms: at,
                },
            ]
        }
        None => vec![
            EventKind::StepFailed {
                index,
                failure,
                retry_at_ms: None,
            },
            next_compensation(flow, summary, index, now_ms),
        ],
    }
}

/// The next completed step below `below` to undo, in reverse order, or the
/// end of the saga when nothing is left.
pub fn next_compensation(flow: &Flow, summary: &RunSummary, below: u32, now_ms: u64) -> EventKind {
    let pending = (0..below as usize).rev().find(|&i| {
        flow.steps[i].compensate && summary.outputs[i].is_some() && !summary.compensated[i]
    });
    match pending {
        Some(i) => EventKind::CompensationScheduled {
            index: i as u32,
            attempt: 1,
            max_attempts: flow.steps[i].retry.max_attempts,
            not_before_ms: now_ms,
        },
        None => EventKind::RunCompensated,
    }
}

/// Step `index` was undone: undo the one before it, or finish.
pub fn after_compensation_completed(
    flow: &Flow,
    summary: &RunSummary,
    index: u32,
    now_ms: u64,
) -> EventKind {
    // `summary` does not yet include this completion: skip `index` explicitly.
    next_compensation(flow, summary, index, now_ms)
}

/// An attempt to undo step `index` failed: retry it, or stop for an operator.
pub fn after_compensation_failed(
    flow: &Flow,
    index: u32,
    attempt: u32,
    failure: Failure,
    retry_after: Option<Duration>,
    now_ms: u64,
) -> Vec<EventKind> {
    let step = &flow.steps[index as usize];
    match step.retry.next_delay(attempt, failure.class, retry_after) {
        Some(delay) => {
            let at = now_ms + delay.as_millis() as u64;
            vec![
                EventKind::CompensationFailed {
                    index,
                    failure,
                    retry_at_ms: Some(at),
                },
                EventKind::CompensationScheduled {
                    index,
                    attempt: attempt + 1,
                    max_attempts: step.retry.max_attempts,
                    not_before_ms: at,
                },
            ]
        }
        None => {
            let reason = format!(
                "compensation of step '{}' failed after {attempt} attempt(s): {} ({})",
                step.name,
                failure.message,
                failure.class.as_str()
            );
            vec![
                EventKind::CompensationFailed {
                    index,
                    failure,
                    retry_at_ms: None,
                },
                EventKind::RunNeedsAttention { reason },
            ]
        }
    }
}

/// The verdicts of one confirmation pass: settle, drift, or ask again.
pub fn after_reconciliation(
    flow: &Flow,
    verdicts: Vec<(u32, Result<Verdict, Failure>)>,
    attempt: u32,
    now_ms: u64,
) -> Vec<EventKind> {
    let mut events = Vec::new();
    let mut drifted = Vec::new();
    let mut undecided = Vec::new();
    for (index, verdict) in verdicts {
        let name = &flow.steps[index as usize].name;
        match verdict {
            Ok(v) => {
                match &v {
                    Verdict::InSync => {}
                    Verdict::Drifted(d) => drifted.push(format!("{name}: {d}")),
                    Verdict::Unknown => undecided.push(format!("{name}: no answer")),
                }
                events.push(EventKind::StepReconciled { index, verdict: v });
            }
            Err(f) => undecided.push(format!("{name}: {}", f.message)),
        }
    }
    if !drifted.is_empty() {
        events.push(EventKind::RunDrifted {
            detail: drifted.join("; "),
        });
    } else if undecided.is_empty() {
        events.push(EventKind::RunSettled);
    } else {
        let policy = reconcile_policy();
        match policy.next_delay(attempt, crate::model::FailureClass::Retryable, None) {
            Some(delay) => events.push(EventKind::ReconciliationScheduled {
                attempt: attempt + 1,
                max_attempts: policy.max_attempts,
                not_before_ms: now_ms + delay.as_millis() as u64,
            }),
            None => events.push(EventKind::RunNeedsAttention {
                reason: format!(
                    "could not confirm with downstream systems: {}",
                    undecided.join("; ")
                ),
            }),
        }
    }
    events
}
