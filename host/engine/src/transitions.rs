//! The saga's decisions, as pure functions from what the log says (the run
//! summary) and what just happened to the events to append. No I/O here: the
//! driver calls these, then commits what they return in one durable write.
//!
//! Rules kept here, in one place:
//! - A failure caused by the host's own setup (plugin missing, grant or
//!   config missing, no instance slot) never spends attempts and never
//!   compensates: the run is held for an operator.
//! - When a step fails for good, every step that completed **or may have had
//!   its effect** is compensated, in reverse order, the failed step included
//!   when its outcome is unknown. Steps with `compensate: false` are left in
//!   place, and the final phrase says so.
//! - A compensation or a confirmation that cannot succeed holds the run,
//!   never silently ends it.

use settle_flow::{Flow, OnExhausted};
use settle_types::retry::RetryPolicy;
use settle_types::{
    EventKind, Failure, FailureClass, HoldCause, Next, OperatorAction, RunSummary, Verdict, bounds,
};
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

/// The step's policy with the attempt budget the log recorded for the
/// action in progress (an operator's retry may have granted more), so the
/// engine stops where the status said it would.
fn with_budget(policy: &RetryPolicy, recorded_max: Option<u32>) -> RetryPolicy {
    RetryPolicy {
        max_attempts: recorded_max.unwrap_or(policy.max_attempts),
        ..policy.clone()
    }
}

/// The attempt budget recorded for the action a summary says is in progress.
fn recorded_max(next: &Next) -> Option<u32> {
    match *next {
        Next::Step { max_attempts, .. }
        | Next::Compensate { max_attempts, .. }
        | Next::Reconcile { max_attempts, .. } => Some(max_attempts),
        Next::Nothing => None,
    }
}

/// `now + delay`, saturating: no delay can overflow the clock.
fn at(now_ms: u64, delay: Duration) -> u64 {
    now_ms.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
}

/// The hold for a host-setup failure: the cause and the fix, for people.
fn host_setup_hold(failure: &Failure) -> EventKind {
    EventKind::RunHeld {
        cause: HoldCause::HostSetup,
        reason: bounds::cut_detail(&format!(
            "waiting for an operator: {}; fix the setup, then run `settle resume`",
            failure.message
        )),
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
    if flow
        .steps
        .iter()
        .flat_map(|s| s.calls())
        .any(|s| reconciles(&s.plugin))
    {
        EventKind::ReconciliationScheduled {
            attempt: 1,
            max_attempts: reconcile_policy().max_attempts,
            not_before_ms: now_ms,
        }
    } else {
        EventKind::RunSettled
    }
}

/// What an attempt of a step left behind.
#[derive(Clone, Debug)]
pub struct StepFailure {
    pub failure: Failure,
    /// The earliest retry the plugin asked for.
    pub retry_after: Option<Duration>,
    /// The attempt's outcome is unknown: it may have had its effect.
    pub may_have_effect: bool,
    /// Time inside the plugin, when the attempt reached it.
    pub duration_ms: Option<u64>,
}

/// An attempt of step `index` failed: retry it, hold the run, or start undoing.
pub fn after_step_failed(
    flow: &Flow,
    summary: &RunSummary,
    index: u32,
    attempt: u32,
    failed: StepFailure,
    now_ms: u64,
) -> Vec<EventKind> {
    let step = &flow.steps[index as usize];
    let StepFailure {
        failure,
        retry_after,
        may_have_effect,
        duration_ms,
    } = failed;
    let failed_event = |retry_at_ms| EventKind::StepFailed {
        index,
        failure: failure.clone(),
        retry_at_ms,
        may_have_effect,
        duration_ms,
    };
    if failure.class.is_host_setup() {
        return vec![failed_event(None), host_setup_hold(&failure)];
    }
    let policy = with_budget(&step.retry, recorded_max(&summary.next));
    if let Some(delay) = policy.next_delay(attempt, failure.class, retry_after) {
        let due = at(now_ms, delay);
        return vec![
            failed_event(Some(due)),
            EventKind::StepScheduled {
                index,
                attempt: attempt.saturating_add(1),
                max_attempts: policy.max_attempts,
                not_before_ms: due,
            },
        ];
    }
    if step.on_exhausted == OnExhausted::Hold && failure.class.retryable_by_default() {
        let reason = bounds::cut_detail(&format!(
            "step '{}' failed after {attempt} attempt(s): {} ({}); retry it, compensate or cancel the run",
            step.name,
            failure.message,
            failure.class.as_str()
        ));
        return vec![
            failed_event(None),
            EventKind::RunHeld {
                cause: HoldCause::RetriesExhausted,
                reason,
            },
        ];
    }
    let mut undoing = summary.clone();
    if may_have_effect {
        undoing.uncertain.resize(undoing.steps.len(), false);
        undoing.uncertain[index as usize] = true;
    }
    vec![
        failed_event(None),
        next_compensation(flow, &undoing, index.saturating_add(1), now_ms),
    ]
}

/// The next step below `below` to undo, in reverse order — one that
/// completed or may have had its effect, is to be compensated, and is not
/// undone yet — or the end of the saga when nothing is left.
pub fn next_compensation(flow: &Flow, summary: &RunSummary, below: u32, now_ms: u64) -> EventKind {
    let below = (below as usize).min(flow.steps.len());
    let pending = (0..below).rev().find(|&i| {
        flow.steps[i].compensate && summary.may_have_effect(i) && !summary.compensated[i]
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

/// An attempt to undo step `index` failed: retry it, or hold for an operator.
pub fn after_compensation_failed(
    flow: &Flow,
    summary: &RunSummary,
    index: u32,
    attempt: u32,
    failure: Failure,
    retry_after: Option<Duration>,
    now_ms: u64,
) -> Vec<EventKind> {
    let step = &flow.steps[index as usize];
    let failed_event = |retry_at_ms| EventKind::CompensationFailed {
        index,
        failure: failure.clone(),
        retry_at_ms,
    };
    if failure.class.is_host_setup() {
        return vec![failed_event(None), host_setup_hold(&failure)];
    }
    let policy = with_budget(&step.retry, recorded_max(&summary.next));
    match policy.next_delay(attempt, failure.class, retry_after) {
        Some(delay) => {
            let due = at(now_ms, delay);
            vec![
                failed_event(Some(due)),
                EventKind::CompensationScheduled {
                    index,
                    attempt: attempt.saturating_add(1),
                    max_attempts: policy.max_attempts,
                    not_before_ms: due,
                },
            ]
        }
        None => {
            let reason = bounds::cut_detail(&format!(
                "compensation of step '{}' failed after {attempt} attempt(s): {} ({}); \
                 its change may still be in place: fix it and retry, or cancel the run",
                step.name,
                failure.message,
                failure.class.as_str()
            ));
            vec![
                failed_event(None),
                EventKind::RunHeld {
                    cause: HoldCause::CompensationFailed,
                    reason,
                },
            ]
        }
    }
}

/// What one confirmation pass found for one step.
pub type Confirmation = (u32, Result<Verdict, Failure>);

/// One pass's answers, sorted: the verdict events, what disagreed, what
/// gave no answer, and the first failure of the host's own setup.
struct Answers {
    events: Vec<EventKind>,
    drifted: Vec<String>,
    /// The first step found drifted.
    first_drifted: Option<u32>,
    unanswered: Vec<String>,
    setup: Option<Failure>,
}

fn sort_answers(flow: &Flow, verdicts: Vec<Confirmation>) -> Answers {
    let mut answers = Answers {
        events: Vec::new(),
        drifted: Vec::new(),
        first_drifted: None,
        unanswered: Vec::new(),
        setup: None,
    };
    for (index, verdict) in verdicts {
        let name = &flow.steps[index as usize].name;
        match verdict {
            Ok(v) => {
                match &v {
                    Verdict::InSync => {}
                    Verdict::Drifted(d) => {
                        answers.drifted.push(format!("{name}: {d}"));
                        answers.first_drifted =
                            Some(answers.first_drifted.map_or(index, |f| f.min(index)));
                    }
                    Verdict::Unknown => answers.unanswered.push(format!("{name}: no answer")),
                }
                answers
                    .events
                    .push(EventKind::StepReconciled { index, verdict: v });
            }
            Err(f) if f.class.is_host_setup() => {
                answers.setup.get_or_insert(f);
            }
            Err(f) => answers.unanswered.push(format!("{name}: {}", f.message)),
        }
    }
    answers
}

/// The verdicts of one confirmation pass: settle, drift, hold, or ask again.
pub fn after_reconciliation(
    flow: &Flow,
    summary: &RunSummary,
    verdicts: Vec<Confirmation>,
    attempt: u32,
    now_ms: u64,
) -> Vec<EventKind> {
    let Answers {
        mut events,
        drifted,
        first_drifted,
        unanswered: undecided,
        setup,
    } = sort_answers(flow, verdicts);
    if let Some(first) = first_drifted {
        events.push(EventKind::RunDrifted {
            detail: bounds::cut_detail(&drifted.join("; ")),
        });
        events.extend(drift_repair(flow, summary, first, now_ms));
    } else if let Some(failure) = setup {
        events.push(host_setup_hold(&failure));
    } else if undecided.is_empty() {
        events.push(EventKind::RunSettled);
        if let Some(rechecks) = flow.rechecks {
            events.push(EventKind::RecheckScheduled {
                not_before_ms: at(now_ms, rechecks.after),
                attempt: 1,
            });
        }
    } else {
        let policy = with_budget(&reconcile_policy(), recorded_max(&summary.next));
        match policy.next_delay(attempt, FailureClass::Retryable, None) {
            Some(delay) => events.push(EventKind::ReconciliationScheduled {
                attempt: attempt.saturating_add(1),
                max_attempts: policy.max_attempts,
                not_before_ms: at(now_ms, delay),
            }),
            None => events.push(EventKind::RunHeld {
                cause: HoldCause::ConfirmationFailed,
                reason: bounds::cut_detail(&format!(
                    "could not confirm with downstream systems: {}; retry the confirmation, or cancel",
                    undecided.join("; ")
                )),
            }),
        }
    }
    events
}

/// What a periodic check of a settled run found: nothing more than events
/// while every step is in sync; the run drifts (and, if its flow says so,
/// is undone) when one is not; a check without an answer is asked again
/// sooner, and never counts as in sync.
pub fn after_recheck(
    flow: &Flow,
    summary: &RunSummary,
    verdicts: Vec<Confirmation>,
    attempt: u32,
    now_ms: u64,
) -> Vec<EventKind> {
    let Some(rechecks) = flow.rechecks else {
        return vec![EventKind::RechecksEnded {
            reason: "its flow no longer asks for checks".into(),
            unanswered: false,
        }];
    };
    let Answers {
        mut events,
        drifted,
        first_drifted,
        mut unanswered,
        setup,
    } = sort_answers(flow, verdicts);
    // A check the host's own setup stopped is no answer either: asked again.
    unanswered.extend(setup.map(|f| f.message));
    if let Some(first) = first_drifted {
        events.push(EventKind::RunDrifted {
            detail: bounds::cut_detail(&format!("found by a later check: {}", drifted.join("; "))),
        });
        events.extend(drift_repair(flow, summary, first, now_ms));
        return events;
    }
    let settled_at = summary.finished_at_ms.unwrap_or(now_ms);
    let window_ends = at(settled_at, rechecks.window);
    let (delay, attempt) = if unanswered.is_empty() {
        (spread(rechecks.every, summary), 1)
    } else {
        // Asked again sooner, but never more often than `every` allows.
        let delay = reconcile_policy()
            .next_delay(attempt, FailureClass::Retryable, None)
            .unwrap_or(rechecks.every)
            .min(rechecks.every);
        (delay, attempt.saturating_add(1))
    };
    let due = at(now_ms, delay);
    if due > window_ends {
        let reason = if unanswered.is_empty() {
            "its reconcile window closed".to_string()
        } else {
            bounds::cut_detail(&format!(
                "its reconcile window closed without an answer ({}); not confirmed",
                unanswered.join("; ")
            ))
        };
        events.push(EventKind::RechecksEnded {
            reason,
            unanswered: !unanswered.is_empty(),
        });
    } else {
        events.push(EventKind::RecheckScheduled {
            not_before_ms: due,
            attempt,
        });
    }
    events
}

/// `every`, plus up to a tenth of it picked by the run's id: runs that
/// settled together are not all checked in the same instant.
fn spread(every: Duration, summary: &RunSummary) -> Duration {
    let bytes = summary.run_id.as_bytes();
    let pick = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default());
    let tenth = u64::try_from(every.as_millis() / 10).unwrap_or(u64::MAX);
    every.saturating_add(Duration::from_millis(pick % tenth.max(1)))
}

/// Why an operator's command cannot be applied to a run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The run is in a state where the command means nothing.
    #[error("run is {state}: {why}")]
    State { state: String, why: String },
    /// `--step` names another step than the one the run stopped at.
    #[error("run stopped at step '{stopped_at}', not '{asked}'")]
    WrongStep { stopped_at: String, asked: String },
    /// A restart cannot begin at this step.
    #[error("cannot restart from step '{step}': {why}")]
    Restart { step: String, why: String },
}

/// The events an operator's command appends after its `operator-acted`
/// event: the action to take next, or the end of the run.
pub fn operator_command(
    flow: &Flow,
    summary: &RunSummary,
    action: OperatorAction,
    step: Option<&str>,
    now_ms: u64,
) -> Result<Vec<EventKind>, Refused> {
    let refuse = |why: &str| Refused::State {
        state: summary.state.as_str().to_string(),
        why: why.to_string(),
    };
    let held = summary.state == settle_types::RunState::NeedsAttention;
    match action {
        OperatorAction::Cancel => cancel(summary),
        OperatorAction::Pause => {
            if summary.state.is_terminal() {
                return Err(refuse(
                    "only a run that is still moving can be paused (a held run waits already)",
                ));
            }
            Ok(vec![EventKind::RunHeld {
                cause: HoldCause::Paused,
                reason: "paused by an operator; resume it to continue where it stopped".into(),
            }])
        }
        OperatorAction::Resume => {
            if !held {
                return Err(refuse("only a run waiting for an operator can be resumed"));
            }
            if summary.next == Next::Nothing {
                return Err(refuse("nothing is left to resume (held by an older host)"));
            }
            Ok(resumed(flow, &summary.next, false, now_ms))
        }
        OperatorAction::Retry => {
            if !held {
                return Err(refuse("only a run waiting for an operator can be retried"));
            }
            if let Some(asked) = step {
                let stopped_at = match summary.next {
                    Next::Step { index, .. } | Next::Compensate { index, .. } => {
                        summary.steps.get(index as usize).cloned()
                    }
                    _ => None,
                };
                if stopped_at.as_deref() != Some(asked) {
                    return Err(Refused::WrongStep {
                        stopped_at: stopped_at.unwrap_or_else(|| "(none)".into()),
                        asked: asked.to_string(),
                    });
                }
            }
            if summary.next == Next::Nothing {
                return Err(refuse("nothing is left to retry (held by an older host)"));
            }
            Ok(resumed(flow, &summary.next, true, now_ms))
        }
        OperatorAction::Compensate => {
            if !held && summary.state != settle_types::RunState::Drifted {
                return Err(refuse(
                    "only a run waiting for an operator, or one that drifted, can be compensated",
                ));
            }
            Ok(vec![next_compensation(
                flow,
                summary,
                flow.steps.len() as u32,
                now_ms,
            )])
        }
        OperatorAction::Restart => restart(flow, summary, step, now_ms),
        OperatorAction::AcceptDrift => {
            if summary.state != settle_types::RunState::Drifted {
                return Err(refuse("only a drifted run's drift can be accepted"));
            }
            Ok(vec![EventKind::RunSettled])
        }
        OperatorAction::Reapply => {
            if summary.state != settle_types::RunState::Drifted {
                return Err(refuse("only a drifted run can be re-applied"));
            }
            if summary.reapplies >= bounds::MAX_RESTARTS {
                return Err(refuse(
                    "its steps were re-applied the most times one run takes; compensate it or accept the drift",
                ));
            }
            let from = first_drifted(summary).ok_or_else(|| {
                refuse("no step of it is recorded as drifted (its last checks found none)")
            })?;
            Ok(reapply(flow, from, false, now_ms))
        }
    }
}

/// Most times a flow's `on_drift: reapply` runs a run's steps again by
/// itself; after that the drift waits for an operator.
pub const MAX_AUTO_REAPPLIES: u32 = 3;

/// Running a drifted run's steps again from its first drifted step, under
/// the same operation ids (its generation stays): what the step asked of
/// a downstream system is asked again, and the steps after it, still in
/// sync, are answered from the downstream's idempotency records.
fn reapply(flow: &Flow, from: u32, automatic: bool, now_ms: u64) -> Vec<EventKind> {
    let max_attempts = flow
        .steps
        .get(from as usize)
        .map_or(1, |step| step.retry.max_attempts);
    vec![
        EventKind::RunReapplied {
            from_index: from,
            automatic,
        },
        EventKind::StepScheduled {
            index: from,
            attempt: 1,
            max_attempts,
            not_before_ms: now_ms,
        },
    ]
}

/// The first step the run's last checks found drifted.
fn first_drifted(summary: &RunSummary) -> Option<u32> {
    let i = summary
        .verdicts
        .iter()
        .position(|v| matches!(v, Some(Verdict::Drifted(_))))?;
    u32::try_from(i).ok()
}

/// What a flow's `on_drift:` does by itself once drift is recorded (after
/// the `run-drifted` event): nothing for `alert`, the run undone for
/// `compensate`, its drifted steps from `first_drifted` run again for
/// `reapply` (at most [`MAX_AUTO_REAPPLIES`] times; then an operator
/// decides).
fn drift_repair(
    flow: &Flow,
    summary: &RunSummary,
    first_drifted: u32,
    now_ms: u64,
) -> Vec<EventKind> {
    match flow.on_drift {
        settle_flow::OnDrift::Alert => Vec::new(),
        settle_flow::OnDrift::Compensate => vec![next_compensation(
            flow,
            summary,
            flow.steps.len() as u32,
            now_ms,
        )],
        settle_flow::OnDrift::Reapply if summary.auto_reapplies < MAX_AUTO_REAPPLIES => {
            reapply(flow, first_drifted, true, now_ms)
        }
        settle_flow::OnDrift::Reapply => Vec::new(),
    }
}

/// Re-running a run from step `step` with its own flow version: the run
/// must have stopped moving (ended, or waiting for an operator), and every
/// step before `step` must have completed and not been undone, since the
/// steps that run again read their outputs.
fn restart(
    flow: &Flow,
    summary: &RunSummary,
    step: Option<&str>,
    now_ms: u64,
) -> Result<Vec<EventKind>, Refused> {
    let Some(step) = step else {
        return Err(Refused::Restart {
            step: String::new(),
            why: "name the step to restart from".into(),
        });
    };
    let refuse = |why: String| Refused::Restart {
        step: step.to_string(),
        why,
    };
    if !summary.state.is_terminal() {
        return Err(Refused::State {
            state: summary.state.as_str().to_string(),
            why: "only a run that stopped moving (ended, or waiting for an operator) can be restarted; pause it first".into(),
        });
    }
    let Some(from) = flow.steps.iter().position(|s| s.name == step) else {
        let names: Vec<&str> = flow.steps.iter().map(|s| s.name.as_str()).collect();
        return Err(refuse(format!(
            "flow {} has no such step (its steps: {})",
            flow.id(),
            names.join(", ")
        )));
    };
    if let Some(missing) = (0..from).find(|&i| !summary.outputs.get(i).is_some_and(Option::is_some))
    {
        return Err(refuse(format!(
            "step '{}' before it never completed, so there is nothing to run it from",
            flow.steps[missing].name
        )));
    }
    if let Some(undone) = (0..from).find(|&i| summary.compensated.get(i).copied().unwrap_or(false))
    {
        return Err(refuse(format!(
            "step '{}' before it was undone; restart from that step or earlier",
            flow.steps[undone].name
        )));
    }
    if summary.restarts >= bounds::MAX_RESTARTS {
        return Err(refuse(format!(
            "the run was restarted {} times already, the most one run takes; submit a new run",
            summary.restarts
        )));
    }
    Ok(vec![
        EventKind::RunRestarted {
            from_index: from as u32,
            generation: summary.restarts.saturating_add(1),
        },
        EventKind::StepScheduled {
            index: from as u32,
            attempt: 1,
            max_attempts: flow.steps[from].retry.max_attempts,
            not_before_ms: now_ms,
        },
    ])
}

/// Cancelling a run: it ends here, nothing more is done. A run that was
/// not waiting for an operator may have been interrupted mid-call: the step
/// it was at is marked as possibly having had its effect, so its status
/// names it among what may have been left in place.
pub fn cancel(summary: &RunSummary) -> Result<Vec<EventKind>, Refused> {
    let held = summary.state == settle_types::RunState::NeedsAttention;
    if summary.state.is_terminal() && !held {
        return Err(Refused::State {
            state: summary.state.as_str().to_string(),
            why: "it has already ended".into(),
        });
    }
    let mut events = Vec::new();
    if let Next::Step { index, .. } = summary.next
        && !held
    {
        // Whether an attempt began before the host stopped cannot be told
        // from the log: "may have" is what is known. A step that was
        // waiting (a `wait`, a signal, an approval) calls nothing: it has
        // had no effect.
        let waiting = summary.pausing_until.is_some();
        events.push(EventKind::StepFailed {
            index,
            failure: Failure {
                class: FailureClass::Permanent,
                message: "cancelled by an operator".into(),
            },
            retry_at_ms: None,
            may_have_effect: !waiting,
            duration_ms: None,
        });
    }
    events.push(EventKind::RunCancelled);
    Ok(events)
}

/// The action a held run was about to take, scheduled again. A retry gets a
/// fresh budget of attempts; a release after a setup fix continues the count.
fn resumed(flow: &Flow, next: &Next, fresh_budget: bool, now_ms: u64) -> Vec<EventKind> {
    let budget = |attempt: u32, max: u32, policy: &RetryPolicy| {
        let attempt = attempt.saturating_add(1);
        let max = if fresh_budget {
            attempt.saturating_add(policy.max_attempts.saturating_sub(1))
        } else {
            // Released after a setup fix: the attempt the setup failure
            // took is given back.
            max.saturating_add(1).max(attempt)
        };
        (attempt, max)
    };
    match *next {
        Next::Step {
            index,
            attempt,
            max_attempts,
            ..
        }
        | Next::Compensate {
            index,
            attempt,
            max_attempts,
            ..
        } => {
            let policy = &flow.steps[index as usize].retry;
            let (attempt, max_attempts) = budget(attempt, max_attempts, policy);
            vec![if matches!(next, Next::Step { .. }) {
                EventKind::StepScheduled {
                    index,
                    attempt,
                    max_attempts,
                    not_before_ms: now_ms,
                }
            } else {
                EventKind::CompensationScheduled {
                    index,
                    attempt,
                    max_attempts,
                    not_before_ms: now_ms,
                }
            }]
        }
        Next::Reconcile {
            attempt,
            max_attempts,
            ..
        } => {
            let (attempt, max_attempts) = budget(attempt, max_attempts, &reconcile_policy());
            vec![EventKind::ReconciliationScheduled {
                attempt,
                max_attempts,
                not_before_ms: now_ms,
            }]
        }
        Next::Nothing => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use settle_types::event::Event;
    use settle_types::{RunId, RunState, Source};

    fn settled_run(flow: &Flow) -> RunSummary {
        let accepted = Event {
            v: settle_types::event::SCHEMA_VERSION,
            id: uuid::Uuid::now_v7(),
            run_id: RunId::new(),
            seq: 0,
            at_ms: 1,
            step: None,
            operation_id: None,
            attempt: None,
            source: Source::host(),
            causation: None,
            trace_id: String::new(),
            kind: EventKind::RunAccepted {
                catalog: 1,
                flow: flow.name.clone(),
                flow_version: flow.version.clone(),
                flow_digest: String::new(),
                steps: flow.steps.iter().map(|s| s.name.clone()).collect(),
                input: serde_json::Value::Null,
                idempotency_key: None,
                submitted_by: None,
                plugins: Default::default(),
            },
        };
        let mut run = RunSummary::from_first(&accepted).unwrap();
        run.outputs = vec![Some(serde_json::json!({})); flow.steps.len()];
        run.state = RunState::Settled;
        run
    }

    #[test]
    fn on_drift_reapply_repairs_a_run_at_most_max_auto_reapplies_times() {
        let flow = Flow::parse(
            "name: f\non_drift: reapply\nreconcile: { every: 1h, for: 1d }\nsteps:\n  - { name: a, plugin: p }\n  - { name: b, plugin: p }\n",
            "f.yaml",
        )
        .unwrap();
        let mut run = settled_run(&flow);
        let found = || {
            vec![
                (0, Ok(Verdict::InSync)),
                (1, Ok(Verdict::Drifted("moved".into()))),
            ]
        };
        let names = |events: &[EventKind]| events.iter().map(EventKind::name).collect::<Vec<_>>();
        run.auto_reapplies = MAX_AUTO_REAPPLIES - 1;
        let events = after_recheck(&flow, &run, found(), 1, 5);
        assert_eq!(
            names(&events),
            [
                "step-reconciled",
                "step-reconciled",
                "run-drifted",
                "run-reapplied",
                "step-scheduled"
            ]
        );
        assert_eq!(
            events[3],
            EventKind::RunReapplied {
                from_index: 1,
                automatic: true
            },
            "from the first drifted step"
        );
        // The same on the first confirmation.
        let first = after_reconciliation(&flow, &run, found(), 1, 5);
        assert_eq!(
            names(&first)[2..],
            ["run-drifted", "run-reapplied", "step-scheduled"]
        );
        run.auto_reapplies = MAX_AUTO_REAPPLIES;
        let events = after_recheck(&flow, &run, found(), 1, 5);
        assert_eq!(
            names(&events)[2..],
            ["run-drifted"],
            "then an operator decides"
        );
        // An operator may still re-apply it, but not without a drifted step.
        run.state = RunState::Drifted;
        run.verdicts = vec![None, Some(Verdict::Drifted("moved".into()))];
        let by_hand = operator_command(&flow, &run, OperatorAction::Reapply, None, 5).unwrap();
        assert_eq!(
            by_hand[0],
            EventKind::RunReapplied {
                from_index: 1,
                automatic: false
            }
        );
        run.verdicts = vec![None, None];
        assert!(operator_command(&flow, &run, OperatorAction::Reapply, None, 5).is_err());
    }

    #[test]
    fn a_run_is_restarted_at_most_max_restarts_times() {
        let flow = Flow::parse("name: f\nsteps:\n  - { name: a, plugin: p }\n", "f.yaml").unwrap();
        let mut run = settled_run(&flow);
        run.restarts = bounds::MAX_RESTARTS - 1;
        let events = operator_command(&flow, &run, OperatorAction::Restart, Some("a"), 5).unwrap();
        assert_eq!(
            events[0],
            EventKind::RunRestarted {
                from_index: 0,
                generation: bounds::MAX_RESTARTS
            }
        );
        run.restarts = bounds::MAX_RESTARTS;
        let refused =
            operator_command(&flow, &run, OperatorAction::Restart, Some("a"), 5).unwrap_err();
        assert!(
            refused.to_string().contains("the most one run takes"),
            "{refused}"
        );
        // Saturating, not overflowing, even from a corrupt count.
        run.restarts = u32::MAX;
        assert!(operator_command(&flow, &run, OperatorAction::Restart, Some("a"), 5).is_err());
    }
}
