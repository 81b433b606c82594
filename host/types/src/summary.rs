//! The run summary: a fold over a run's events. The store keeps it as an
//! index (it can always be rebuilt from the log); the engine keeps the same
//! fold in memory for the run it drives; status phrases are read from it.

use super::event::{Event, EventKind, Failure, HoldCause, Verdict};
use super::messages::Message;
use super::{RunId, RunState};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// What the engine must do next for a run, as the log says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Next {
    /// Call attempt `attempt` of step `index`, not before `not_before_ms`.
    Step {
        index: u32,
        attempt: u32,
        max_attempts: u32,
        not_before_ms: u64,
    },
    /// Call attempt `attempt` of the compensation of step `index`.
    Compensate {
        index: u32,
        attempt: u32,
        max_attempts: u32,
        not_before_ms: u64,
    },
    /// Confirm the completed steps with downstream systems.
    Reconcile {
        attempt: u32,
        max_attempts: u32,
        not_before_ms: u64,
    },
    /// Nothing: the run is terminal.
    Nothing,
}

impl Next {
    /// When the next action is due, if there is one.
    pub fn due_ms(&self) -> Option<u64> {
        match *self {
            Next::Step { not_before_ms, .. }
            | Next::Compensate { not_before_ms, .. }
            | Next::Reconcile { not_before_ms, .. } => Some(not_before_ms),
            Next::Nothing => None,
        }
    }
}

/// Everything known about a run, folded from its events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run_id: RunId,
    pub flow: String,
    pub flow_version: String,
    pub flow_digest: String,
    pub steps: Vec<String>,
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
    /// The message catalog version its phrases are rendered with.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub catalog: u32,
    pub state: RunState,
    pub next: Next,
    /// Output of each completed step (None: not completed). A step that
    /// completed with output `null` is written as [`NULL_OUTPUT`], so it
    /// reads back as completed.
    #[serde(with = "outputs_record")]
    pub outputs: Vec<Option<Value>>,
    /// Steps that were undone.
    pub compensated: Vec<bool>,
    /// Steps with an attempt whose outcome is unknown (timed out, trapped,
    /// interrupted, output rejected): they may have had their effect, so
    /// they are undone like completed steps. Empty in summaries written
    /// before schema 2; read it with [`RunSummary::may_have_effect`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uncertain: Vec<bool>,
    /// Steps passed over because their `if:` condition was false (empty
    /// when none was); read it with [`RunSummary::was_skipped`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<bool>,
    /// The digest of each plugin as the run last saw it: as accepted,
    /// then as `plugin-changed` says.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub plugins: std::collections::BTreeMap<String, String>,
    /// What the items of `for_each` steps did, by step index.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub items: std::collections::BTreeMap<u32, ItemsDone>,
    /// Verdicts of the last reconciliation, per step.
    pub verdicts: Vec<Option<Verdict>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
    /// Why the run drifted or needs attention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Why the run waits for an operator, while it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldCause>,
    /// Attempts made so far, all steps and compensations together.
    pub attempts_total: u32,
    /// Reports from people that what they see is not what they expected.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reports: u32,
    /// Times an operator restarted the run from a step.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// Times the run's drifted steps were run again (`run-reapplied`), by
    /// an operator or by its flow's `on_drift: reapply`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reapplies: u32,
    /// Of those, the ones the flow asked for without an operator: bounded,
    /// so a downstream that keeps drifting is not written to forever.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub auto_reapplies: u32,
    /// Until when a `wait:` step holds the run, while it does (for a
    /// `signal:` step, its timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pausing_until: Option<u64>,
    /// The signal the run waits for, while it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_signal: Option<String>,
    /// For an approval it waits for, how many approvals it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_needed: Option<u32>,
    /// Signals received, in order; a second one under the same name and
    /// idempotency key is not kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signals: Vec<ReceivedSignal>,
    /// When the run entered the state it is in.
    #[serde(default)]
    pub state_since_ms: u64,
    /// When the step the run is at was first scheduled (its attempt 1):
    /// how long a step takes is measured from here to its completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at_ms: Option<u64>,
    /// Why the next attempt waits without being made (a circuit breaker is
    /// open), while it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_on: Option<String>,
    /// When a settled run is next checked against downstream systems, and
    /// how many checks in a row got no answer; `None` when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck: Option<Recheck>,
    /// When the run first settled: what its objective is judged by, even
    /// after a restart or an accepted drift settles it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_settled_at_ms: Option<u64>,
    /// The run missed its flow's objective (`objective-breached`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub breached: bool,
    /// The latest check of a settled run got no answer: what it confirmed
    /// earlier is no longer known to hold.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub check_unanswered: bool,
    /// Effects of earlier runs of restarted steps that were not undone
    /// (`charge (run 1)`): a restart forgets them in its outputs, the
    /// phrases do not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<String>,
    /// Per step, the restart whose run of it counts (0: the first). Empty
    /// until the run is first restarted; read it with
    /// [`RunSummary::generation`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generations: Vec<u32>,
    pub accepted_at_ms: u64,
    pub updated_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// Sequence number the next event of this run gets.
    pub next_seq: u64,
    /// The last event recorded, the causation of the next.
    pub last_event: Uuid,
}

/// A signal the run received.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceivedSignal {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub payload: Value,
    /// The step that took it (`signal-taken`); a restart does not give it
    /// back, so a step run again waits for a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_by: Option<u32>,
}

impl ReceivedSignal {
    /// The name approval decisions are recorded under start with this: a
    /// person may decide again on an approval step run again, while a
    /// delivery id of any other signal is taken once, ever.
    pub const APPROVAL_PREFIX: &'static str = "approval.";
}

/// Most items of one `for_each` step.
pub const MAX_ITEMS: usize = 1000;

/// What the items of one `for_each` step did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ItemsDone {
    /// (position in the list, output), in the order they completed.
    #[serde(default)]
    pub completed: Vec<(u32, Value)>,
    /// Positions whose calls went out (`items-started`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub started: Vec<u32>,
    /// Positions whose last call failed with no effect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<u32>,
    /// Positions undone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compensated: Vec<u32>,
}

impl ItemsDone {
    /// Positions started whose outcome is unknown: neither completed nor
    /// failed with no effect (a crash, a timeout, a trap).
    pub fn uncertain(&self) -> Vec<u32> {
        self.started
            .iter()
            .filter(|p| !self.failed.contains(p) && !self.completed.iter().any(|(c, _)| c == *p))
            .copied()
            .collect()
    }

    /// The first `n` items to complete that are not undone, in the order
    /// they completed: the ones a `first: N` join keeps.
    pub fn kept(&self, n: usize) -> Vec<u32> {
        self.completed
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| !self.compensated.contains(p))
            .take(n)
            .collect()
    }

    /// Items to undo, newest first: the completed in reverse order of
    /// completion, then those whose outcome is unknown; none undone yet.
    pub fn to_undo(&self) -> Vec<u32> {
        let mut out: Vec<u32> = self.completed.iter().rev().map(|(i, _)| *i).collect();
        out.extend(self.uncertain());
        out.retain(|i| !self.compensated.contains(i));
        out
    }
}

/// What a waiting run waits for ([`RunSummary::awaiting`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Awaiting {
    /// The step that waits.
    pub step: String,
    /// The signal it waits for (`approval.STEP` for an approval).
    pub signal: String,
    /// For an approval: the approvals it needs, and those given so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed: Option<u32>,
    #[serde(default)]
    pub given: usize,
    /// Until when it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

/// Most signals one run keeps.
pub const MAX_SIGNALS: usize = 100;

/// The next periodic check of a settled run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recheck {
    pub due_ms: u64,
    /// Checks in a row that got no answer, plus one.
    pub attempt: u32,
}

/// How a step that completed with output `null` is written in a summary
/// record (plain `null` there means "not completed"). A plugin may not
/// return this exact value (the engine refuses it).
pub const NULL_OUTPUT: &str = "$settle:null-output";

/// Whether `value` is the reserved marker of a `null` output.
pub fn is_null_output_marker(value: &Value) -> bool {
    value.as_object().is_some_and(|o| {
        o.len() == 1 && o.get("$settle").and_then(Value::as_str) == Some(NULL_OUTPUT)
    })
}

/// `outputs` in a summary record: `null` for a step not completed, the
/// marker for one that completed with `null`, else the output itself —
/// so records written before the marker existed read the same.
mod outputs_record {
    use super::{NULL_OUTPUT, is_null_output_marker};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::{Value, json};

    pub fn serialize<S: Serializer>(outputs: &[Option<Value>], s: S) -> Result<S::Ok, S::Error> {
        let marker = json!({ "$settle": NULL_OUTPUT });
        let written: Vec<&Value> = outputs
            .iter()
            .map(|o| match o {
                None => &Value::Null,
                Some(Value::Null) => &marker,
                Some(v) => v,
            })
            .collect();
        written.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Option<Value>>, D::Error> {
        let read = Vec::<Value>::deserialize(d)?;
        Ok(read
            .into_iter()
            .map(|v| match v {
                Value::Null => None,
                v if is_null_output_marker(&v) => Some(Value::Null),
                v => Some(v),
            })
            .collect())
    }
}

impl RunSummary {
    /// Starts a summary from the run's first event.
    pub fn from_first(event: &Event) -> Option<Self> {
        let EventKind::RunAccepted {
            flow,
            flow_version,
            flow_digest,
            steps,
            input,
            idempotency_key,
            submitted_by,
            catalog,
            plugins,
        } = &event.kind
        else {
            return None;
        };
        let n = steps.len();
        // Everything not named here starts as nothing known, as in a
        // placeholder: one list of a summary's fields to keep up to date.
        Some(RunSummary {
            flow: flow.clone(),
            flow_version: flow_version.clone(),
            flow_digest: flow_digest.clone(),
            steps: steps.clone(),
            input: input.clone(),
            idempotency_key: idempotency_key.clone(),
            submitted_by: submitted_by.clone(),
            catalog: *catalog,
            plugins: plugins.clone(),
            outputs: vec![None; n],
            compensated: vec![false; n],
            uncertain: vec![false; n],
            verdicts: vec![None; n],
            accepted_at_ms: event.at_ms,
            updated_at_ms: event.at_ms,
            state_since_ms: event.at_ms,
            next_seq: event.seq.saturating_add(1),
            last_event: event.id,
            ..RunSummary::placeholder(event.run_id)
        })
    }

    /// A stand-in for a run about to be read or written, with nothing known.
    pub fn placeholder(run_id: RunId) -> Self {
        RunSummary {
            run_id,
            flow: String::new(),
            flow_version: String::new(),
            flow_digest: String::new(),
            steps: Vec::new(),
            input: Value::Null,
            idempotency_key: None,
            submitted_by: None,
            catalog: 0,
            state: RunState::Accepted,
            next: Next::Nothing,
            outputs: Vec::new(),
            compensated: Vec::new(),
            uncertain: Vec::new(),
            skipped: Vec::new(),
            items: Default::default(),
            plugins: Default::default(),
            verdicts: Vec::new(),
            last_failure: None,
            detail: None,
            hold: None,
            attempts_total: 0,
            reports: 0,
            restarts: 0,
            reapplies: 0,
            auto_reapplies: 0,
            superseded: Vec::new(),
            pausing_until: None,
            awaiting_signal: None,
            awaiting_needed: None,
            signals: Vec::new(),
            state_since_ms: 0,
            step_started_at_ms: None,
            waiting_on: None,
            recheck: None,
            check_unanswered: false,
            first_settled_at_ms: None,
            breached: false,
            generations: Vec::new(),
            accepted_at_ms: 0,
            updated_at_ms: 0,
            finished_at_ms: None,
            next_seq: 0,
            last_event: Uuid::nil(),
        }
    }

    /// Folds every event of a run, in order, into its summary.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> Option<Self> {
        let mut it = events.into_iter();
        let mut s = Self::from_first(it.next()?)?;
        for e in it {
            s.apply(e);
        }
        Some(s)
    }

    /// Applies one event. Events out of range are ignored rather than trusted:
    /// a summary never claims more than the log says.
    pub fn apply(&mut self, event: &Event) {
        self.next_seq = event.seq.saturating_add(1);
        let state_before = self.state;
        self.last_event = event.id;
        self.updated_at_ms = event.at_ms;
        let n = self.steps.len() as u32;
        if !matches!(
            event.kind,
            EventKind::StepDeferred { .. }
                | EventKind::UserReported { .. }
                | EventKind::ObjectiveBreached { .. }
        ) {
            self.waiting_on = None;
        }
        // A pause ends when its step ends or starts afresh, not when the
        // run is held or released meanwhile: its time is kept.
        if matches!(
            event.kind,
            EventKind::StepCompleted { .. }
                | EventKind::StepSkipped { .. }
                | EventKind::StepScheduled { attempt: 1, .. }
                | EventKind::RunRestarted { .. }
                | EventKind::RunReapplied { .. }
                | EventKind::CompensationScheduled { .. }
                | EventKind::RunSettled
                | EventKind::RunCompensated
                | EventKind::RunCancelled
                | EventKind::RunDrifted { .. }
        ) {
            self.pausing_until = None;
            self.awaiting_signal = None;
            self.awaiting_needed = None;
        }
        match &event.kind {
            EventKind::RunAccepted { .. } => {}
            EventKind::StepDeferred {
                index,
                attempt,
                until_ms,
                reason,
            } if *index < n => {
                let max_attempts = match self.next {
                    Next::Step { max_attempts, .. } => max_attempts,
                    _ => *attempt,
                };
                self.next = Next::Step {
                    index: *index,
                    attempt: *attempt,
                    max_attempts,
                    not_before_ms: *until_ms,
                };
                self.waiting_on = Some(reason.clone());
            }
            EventKind::SignalReceived {
                name, payload, key, ..
            } if !self.is_repeat(name, key.as_deref()) && self.signals.len() < MAX_SIGNALS => {
                self.signals.push(ReceivedSignal {
                    name: name.clone(),
                    key: key.clone(),
                    payload: payload.clone(),
                    taken_by: None,
                });
                // The run waits for it: it is due now.
                if self.awaiting_signal.as_ref() == Some(name)
                    && let Next::Step { not_before_ms, .. } = &mut self.next
                {
                    *not_before_ms = event.at_ms;
                }
            }
            &EventKind::SignalTaken { index, position } => {
                if let Some(signal) = self.signals.get_mut(position as usize) {
                    signal.taken_by = Some(index);
                }
            }
            &EventKind::StepWaiting {
                index,
                until_ms,
                ref signal,
                needed,
            } if index < n => {
                self.awaiting_signal = signal.clone();
                self.awaiting_needed = needed;
                let (attempt, max_attempts) = match self.next {
                    Next::Step {
                        attempt,
                        max_attempts,
                        ..
                    } => (attempt, max_attempts),
                    _ => (1, 1),
                };
                self.state = RunState::Processing;
                self.next = Next::Step {
                    index,
                    attempt,
                    max_attempts,
                    not_before_ms: until_ms,
                };
                self.pausing_until = Some(until_ms);
            }
            &EventKind::StepScheduled {
                index,
                attempt,
                max_attempts,
                not_before_ms,
            } if index < n => {
                if attempt == 1 {
                    self.step_started_at_ms = Some(event.at_ms);
                }
                self.state = if attempt > 1 {
                    RunState::Retrying
                } else if index == 0 {
                    RunState::Accepted
                } else {
                    RunState::Processing
                };
                self.next = Next::Step {
                    index,
                    attempt,
                    max_attempts,
                    not_before_ms,
                };
            }
            EventKind::StepCompleted { index, output, .. } if *index < n => {
                self.outputs[*index as usize] = Some(output.clone());
                if let Some(skipped) = self.skipped.get_mut(*index as usize) {
                    *skipped = false;
                }
                self.attempts_total = self.attempts_total.saturating_add(1);
                self.last_failure = None;
            }
            EventKind::ItemCompleted {
                index,
                item,
                output,
            } if *index < n => {
                let done = self.items.entry(*index).or_default();
                if !done.completed.iter().any(|(i, _)| i == item) {
                    done.completed.push((*item, output.clone()));
                }
                self.attempts_total = self.attempts_total.saturating_add(1);
            }
            EventKind::FlowUpgraded {
                to_version,
                to_digest,
                steps,
                plugins,
                ..
            } => {
                for (name, digest) in plugins {
                    if self.plugins.len() < crate::summary::MAX_ITEMS {
                        self.plugins
                            .entry(name.clone())
                            .or_insert_with(|| digest.clone());
                    }
                }
                let n = steps.len();
                self.flow_version = to_version.clone();
                self.flow_digest = to_digest.clone();
                self.steps = steps.clone();
                self.outputs.resize(n, None);
                self.compensated.resize(n, false);
                self.uncertain.resize(n, false);
                self.verdicts.resize(n, None);
                if self.skipped.len() > n {
                    self.skipped.truncate(n);
                }
                self.items.retain(|i, _| (*i as usize) < n);
            }
            EventKind::PluginChanged { plugin, to, .. } => {
                if let Some(digest) = self.plugins.get_mut(plugin) {
                    *digest = to.clone();
                }
            }
            EventKind::ItemsStarted { index, items } if *index < n => {
                let done = self.items.entry(*index).or_default();
                for item in items {
                    done.failed.retain(|f| f != item);
                    if !done.started.contains(item) && done.started.len() < MAX_ITEMS {
                        done.started.push(*item);
                    }
                }
            }
            EventKind::ItemsFailed { index, items } if *index < n => {
                let done = self.items.entry(*index).or_default();
                for item in items {
                    if !done.failed.contains(item) && done.failed.len() < MAX_ITEMS {
                        done.failed.push(*item);
                    }
                }
            }
            &EventKind::ItemCompensated { index, item } if index < n => {
                let done = self.items.entry(index).or_default();
                if !done.compensated.contains(&item) {
                    done.compensated.push(item);
                }
            }
            &EventKind::StepSkipped { index, .. } if index < n => {
                self.skipped.resize(n as usize, false);
                self.skipped[index as usize] = true;
                // Skipped on this pass: what an earlier pass left (before a
                // re-apply) is no longer its output, nor checked.
                self.outputs[index as usize] = None;
                if let Some(verdict) = self.verdicts.get_mut(index as usize) {
                    *verdict = None;
                }
                self.last_failure = None;
            }
            EventKind::StepFailed {
                index,
                failure,
                may_have_effect,
                ..
            } => {
                self.attempts_total = self.attempts_total.saturating_add(1);
                self.last_failure = Some(failure.clone());
                if *may_have_effect && *index < n {
                    self.uncertain.resize(n as usize, false);
                    self.uncertain[*index as usize] = true;
                }
            }
            EventKind::CompensationFailed { failure, .. } => {
                self.attempts_total = self.attempts_total.saturating_add(1);
                self.last_failure = Some(failure.clone());
            }
            &EventKind::CompensationScheduled {
                index,
                attempt,
                max_attempts,
                not_before_ms,
            } if index < n => {
                self.state = RunState::Compensating;
                self.finished_at_ms = None;
                self.next = Next::Compensate {
                    index,
                    attempt,
                    max_attempts,
                    not_before_ms,
                };
            }
            &EventKind::CompensationCompleted { index, .. } if index < n => {
                self.compensated[index as usize] = true;
                self.attempts_total = self.attempts_total.saturating_add(1);
            }
            &EventKind::ReconciliationScheduled {
                attempt,
                max_attempts,
                not_before_ms,
            } => {
                self.state = RunState::PendingReconciliation;
                self.next = Next::Reconcile {
                    attempt,
                    max_attempts,
                    not_before_ms,
                };
            }
            EventKind::StepReconciled { index, verdict } if *index < n => {
                self.verdicts[*index as usize] = Some(verdict.clone());
            }
            EventKind::RunSettled => {
                self.finish(event, RunState::Settled, None);
                self.first_settled_at_ms.get_or_insert(event.at_ms);
            }
            EventKind::RunCompensated => self.finish(event, RunState::Compensated, None),
            EventKind::RunDrifted { detail } => self.finish(event, RunState::Drifted, Some(detail)),
            EventKind::RunNeedsAttention { reason } => {
                self.finish(event, RunState::NeedsAttention, Some(reason))
            }
            EventKind::RunHeld { cause, reason } => {
                // `next` stays: it is what the run does once released.
                // The step's time is no longer its own: not measured.
                self.step_started_at_ms = None;
                self.state = RunState::NeedsAttention;
                self.hold = Some(*cause);
                self.detail = Some(reason.clone());
            }
            EventKind::OperatorActed { .. } => {
                self.hold = None;
                self.detail = None;
            }
            EventKind::RunCancelled => self.finish(event, RunState::Cancelled, None),
            &EventKind::RunRestarted {
                from_index,
                generation,
            } if from_index < n => self.restart(from_index as usize, generation),
            &EventKind::RunReapplied {
                from_index,
                automatic,
            } if from_index < n => {
                self.reapplies = self.reapplies.saturating_add(1);
                if automatic {
                    self.auto_reapplies = self.auto_reapplies.saturating_add(1);
                }
                // Moving again: the steps keep their outputs until the
                // runs of them replace those; every verdict is asked anew.
                self.state = RunState::Processing;
                self.verdicts = vec![None; n as usize];
                self.finished_at_ms = None;
                self.detail = None;
                self.hold = None;
                // Their items run again too, under the same operation ids;
                // what they did stays to be undone until they complete again.
                for (_, done) in self.items.range_mut(from_index..) {
                    let positions: Vec<u32> = done.completed.drain(..).map(|(p, _)| p).collect();
                    for p in positions {
                        if !done.started.contains(&p) {
                            done.started.push(p);
                        }
                    }
                    done.failed.clear();
                }
            }
            EventKind::UserReported { .. } => self.reports = self.reports.saturating_add(1),
            &EventKind::RecheckScheduled {
                not_before_ms,
                attempt,
            } if self.state == RunState::Settled => {
                self.recheck = Some(Recheck {
                    due_ms: not_before_ms,
                    attempt,
                });
                self.check_unanswered = attempt > 1;
            }
            EventKind::ObjectiveBreached { .. } => self.breached = true,
            EventKind::RechecksEnded { unanswered, .. } => {
                self.recheck = None;
                self.check_unanswered = *unanswered;
            }
            _ => {}
        }
        // Only a settled run is checked again: any other state ends that.
        if self.state != RunState::Settled {
            self.recheck = None;
        }
        if self.state != state_before {
            self.state_since_ms = event.at_ms;
        }
    }

    /// Forgets what steps `from..` did: they run again as `generation`.
    /// Nothing is undone; the steps before keep their outputs.
    fn restart(&mut self, from: usize, generation: u32) {
        let n = self.steps.len();
        self.restarts = self.restarts.max(generation);
        self.generations.resize(n, 0);
        self.uncertain.resize(n, false);
        self.skipped.resize(n, false);
        for i in from..n {
            if self.may_have_effect(i) && !self.compensated[i] {
                let run = self.generation(i).saturating_add(1);
                self.superseded
                    .push(format!("{} (run {run})", self.steps[i]));
            }
            self.outputs[i] = None;
            self.compensated[i] = false;
            self.uncertain[i] = false;
            self.skipped[i] = false;
            self.items.remove(&(i as u32));
            self.generations[i] = generation;
        }
        // Confirmation is asked again of every step once they all complete.
        self.verdicts = vec![None; n];
        self.finished_at_ms = None;
        self.last_failure = None;
        self.detail = None;
        self.hold = None;
    }

    /// Which run of step `index` counts: 0 for the first, N after the Nth
    /// restart that re-ran it. Part of the step's operation ids.
    pub fn generation(&self, index: usize) -> u32 {
        self.generations.get(index).copied().unwrap_or(0)
    }

    /// The operation id of `action` of step `index`, in the generation
    /// that counts now; `None` for a step the run does not have.
    pub fn operation_id(&self, index: usize, action: crate::Action) -> Option<crate::OperationId> {
        let step = self.steps.get(index)?;
        Some(crate::OperationId::of_generation(
            self.run_id,
            step,
            action,
            self.generation(index),
        ))
    }

    /// Whether step `index` completed or may have had its effect: what
    /// compensation must undo.
    pub fn may_have_effect(&self, index: usize) -> bool {
        self.outputs.get(index).is_some_and(Option::is_some)
            || self.uncertain.get(index).copied().unwrap_or(false)
            || self
                .items
                .get(&(index as u32))
                .is_some_and(|d| !d.to_undo().is_empty() || !d.compensated.is_empty())
    }

    /// Whether step `index` was passed over (its `if:` was false).
    pub fn was_skipped(&self, index: usize) -> bool {
        self.skipped.get(index).copied().unwrap_or(false)
    }

    /// What the run waits for from outside, while a `signal:` or
    /// `approval:` step waits (not while it is held for an operator).
    pub fn awaiting(&self) -> Option<Awaiting> {
        let Next::Step { index, .. } = self.next else {
            return None;
        };
        let signal = self.awaiting_signal.clone()?;
        if self.state == RunState::NeedsAttention {
            return None;
        }
        let given = self
            .signals
            .iter()
            .filter(|s| {
                s.name == signal && s.taken_by.is_none() && s.payload["decision"] == "approve"
            })
            .count();
        Some(Awaiting {
            step: self.steps.get(index as usize).cloned().unwrap_or_default(),
            needed: self.awaiting_needed,
            given: if self.awaiting_needed.is_some() {
                given
            } else {
                0
            },
            signal,
            until_ms: self.pausing_until,
        })
    }

    /// Steps that completed and were not undone, in order.
    pub fn left_in_place(&self) -> Vec<&str> {
        self.not_undone(true)
    }

    /// Steps whose outcome is unknown (never completed, may have had their
    /// effect) and were not undone, in order.
    pub fn maybe_left_in_place(&self) -> Vec<&str> {
        self.not_undone(false)
    }

    fn not_undone(&self, completed: bool) -> Vec<&str> {
        (0..self.steps.len())
            .filter(|&i| {
                self.may_have_effect(i)
                    && !self.compensated[i]
                    && self.outputs[i].is_some() == completed
            })
            .map(|i| self.steps[i].as_str())
            .collect()
    }

    /// Whether every step that answered a confirmation said in-sync, and at
    /// least one did: only then is a settled run "confirmed".
    pub fn confirmed(&self) -> bool {
        let answered: Vec<&Verdict> = self.verdicts.iter().flatten().collect();
        !self.check_unanswered
            && !answered.is_empty()
            && answered.iter().all(|v| **v == Verdict::InSync)
    }

    fn finish(&mut self, event: &Event, state: RunState, detail: Option<&String>) {
        self.state = state;
        self.next = Next::Nothing;
        self.finished_at_ms = Some(event.at_ms);
        self.detail = detail.cloned();
        self.hold = None;
    }

    /// Whether a signal `name` under `key` would be a repeat: one under the
    /// same key is kept and not yet taken, or (but for approval decisions,
    /// which a step run again asks for anew) was ever received.
    pub fn is_repeat(&self, name: &str, key: Option<&str>) -> bool {
        let Some(key) = key else { return false };
        self.signals.iter().any(|s| {
            s.name == name
                && s.key.as_deref() == Some(key)
                && (s.taken_by.is_none() || !name.starts_with(ReceivedSignal::APPROVAL_PREFIX))
        })
    }

    /// Whether the run is still on its first pass: never restarted from a
    /// step nor re-applied after a drift. Only such runs say how long runs
    /// of their flow take.
    pub fn on_first_pass(&self) -> bool {
        self.restarts == 0 && self.reapplies == 0
    }

    /// Number of steps that completed.
    pub fn completed_steps(&self) -> usize {
        self.outputs.iter().filter(|o| o.is_some()).count()
    }

    /// The phrase shown to people for this run's state, in English. It says
    /// what is known, never more. `running` tells whether an attempt is in
    /// progress right now (only the host driving the run knows that).
    pub fn phrase(&self, now_ms: u64, running: bool) -> String {
        self.message(now_ms, running)
            .render(crate::messages::Lang::En, self.catalog)
    }

    /// The phrase as a catalog message, to render in any language.
    pub fn message(&self, now_ms: u64, running: bool) -> Message {
        let step_name = |i: u32| {
            self.steps
                .get(i as usize)
                .map(String::as_str)
                .unwrap_or("?")
        };
        let seconds = |until: u64| until.saturating_sub(now_ms).div_ceil(1000);
        match (&self.state, &self.next) {
            (_, Next::Step { not_before_ms, .. }) if self.waiting_on.is_some() => {
                let reason = self.waiting_on.as_deref().unwrap_or_default();
                if now_ms < *not_before_ms {
                    Message::new("run.waiting")
                        .with("reason", reason)
                        .with("seconds", seconds(*not_before_ms))
                } else {
                    Message::new("run.waiting-for-go").with("reason", reason)
                }
            }
            (_, Next::Step { index, .. })
                if self.awaiting_needed.is_some() && self.state != RunState::NeedsAttention =>
            {
                let given = self.awaiting().map_or(0, |a| a.given);
                Message::new("run.awaiting-approval")
                    .with("step", step_name(*index))
                    .with("given", given)
                    .with("needed", self.awaiting_needed.unwrap_or(1))
                    .with(
                        "until",
                        crate::clock::rfc3339_seconds(self.pausing_until.unwrap_or_default()),
                    )
            }
            (_, Next::Step { index, .. })
                if self.awaiting_signal.is_some() && self.state != RunState::NeedsAttention =>
            {
                let until = self.pausing_until.unwrap_or_default();
                Message::new("run.awaiting-signal")
                    .with(
                        "signal",
                        self.awaiting_signal.as_deref().unwrap_or_default(),
                    )
                    .with("step", step_name(*index))
                    .with("until", crate::clock::rfc3339_seconds(until))
            }
            (_, Next::Step { index, .. })
                if self.pausing_until.is_some() && self.state != RunState::NeedsAttention =>
            {
                let until = self.pausing_until.unwrap_or_default();
                Message::new("run.pausing")
                    .with("step", step_name(*index))
                    .with("until", crate::clock::rfc3339_seconds(until))
                    .with("seconds", seconds(until))
            }
            (RunState::Accepted, _) if !running => Message::new("run.accepted"),
            (
                RunState::Retrying,
                Next::Step {
                    index,
                    attempt,
                    max_attempts,
                    not_before_ms,
                },
            ) if !running || now_ms < *not_before_ms => Message::new("run.retrying")
                .with("step", step_name(*index))
                .with("attempt", attempt)
                .with("max_attempts", max_attempts)
                .with("seconds", seconds(*not_before_ms)),
            (RunState::Processing | RunState::Retrying, Next::Step { index, .. })
                if self.reapplies > 0 && self.verdicts.iter().all(Option::is_none) =>
            {
                Message::new("run.repairing")
                    .with("step", step_name(*index))
                    .with("number", index.saturating_add(1))
                    .with("count", self.steps.len())
            }
            (
                RunState::Accepted | RunState::Processing | RunState::Retrying,
                Next::Step { index, .. },
            ) => Message::new("run.processing")
                .with("number", index.saturating_add(1))
                .with("count", self.steps.len())
                .with("step", step_name(*index)),
            (RunState::Compensating, _) => Message::new("run.compensating"),
            (RunState::PendingReconciliation, _) => Message::new("run.confirming"),
            (RunState::Settled, _) if self.confirmed() => Message::new("run.settled-confirmed"),
            (RunState::Settled, _) => Message::new("run.settled-unconfirmed"),
            (RunState::Compensated, _) => self.compensated_message(),
            (RunState::Drifted, _) => match &self.detail {
                Some(detail) => Message::new("run.drifted").with("detail", detail),
                None => Message::new("run.drifted-no-detail"),
            },
            (RunState::NeedsAttention, _) => match &self.detail {
                Some(reason) => Message::new("run.held").with("reason", reason),
                None => Message::new("run.held-no-reason"),
            },
            (RunState::Cancelled, _) => {
                Message::new("run.cancelled").with_messages("left", self.left_clauses())
            }
            (state, _) => Message::new("run.state").with("state", state),
        }
    }

    /// What was left in place, as clauses ("; left in place: charge").
    fn left_clauses(&self) -> Vec<Message> {
        let mut clauses = Vec::new();
        let mut clause = |id: &str, steps: Vec<&str>| {
            if !steps.is_empty() {
                clauses.push(Message::new(id).with("steps", steps.join(", ")));
            }
        };
        clause("clause.left-in-place", self.left_in_place());
        clause("clause.maybe-left-in-place", self.maybe_left_in_place());
        clause(
            "clause.earlier-runs-left",
            self.superseded.iter().map(String::as_str).collect(),
        );
        clauses
    }

    /// "Could not complete; …": what was undone and what was left, as the log says.
    fn compensated_message(&self) -> Message {
        let undone: Vec<&str> = (0..self.steps.len())
            .filter(|&i| self.compensated[i])
            .map(|i| self.steps[i].as_str())
            .collect();
        let left = self.left_clauses();
        match (undone.is_empty(), left.is_empty()) {
            (true, true) => Message::new("run.compensated-nothing-changed"),
            (false, true) => Message::new("run.compensated-all-undone"),
            (true, false) => {
                Message::new("run.compensated-none-undone").with_messages("left", left)
            }
            (false, false) => Message::new("run.compensated-some-undone")
                .with("undone", undone.join(", "))
                .with_messages("left", left),
        }
    }
}

/// For `skip_serializing_if` of counters that are mostly zero.
pub fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod items_done_tests {
    use super::ItemsDone;
    use serde_json::json;

    /// A `first` join that kept item 2 and undid 0 (completed after it)
    /// and 1 (outcome unknown): the kept one is the first to complete not
    /// undone; a later undo of the step takes only the kept one; nothing
    /// undone counts as of unknown outcome.
    #[test]
    fn kept_and_to_undo_leave_out_what_was_undone() {
        let done = ItemsDone {
            completed: vec![(2, json!("c")), (0, json!("a"))],
            started: vec![0, 1, 2],
            failed: vec![],
            compensated: vec![],
        };
        assert_eq!(done.kept(1), vec![2]);
        assert_eq!(done.to_undo(), vec![0, 2, 1]);
        let undone = ItemsDone {
            compensated: vec![0, 1],
            ..done
        };
        assert_eq!(undone.kept(1), vec![2]);
        assert_eq!(undone.kept(5), vec![2]);
        assert_eq!(undone.to_undo(), vec![2]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventKind, SCHEMA_VERSION, Source};

    fn event(run: RunId, seq: u64, at_ms: u64, kind: EventKind) -> Event {
        Event {
            v: SCHEMA_VERSION,
            id: Uuid::now_v7(),
            run_id: run,
            seq,
            at_ms,
            step: None,
            operation_id: None,
            attempt: None,
            source: Source::host(),
            causation: None,
            trace_id: run.trace_id(),
            kind,
        }
    }

    #[test]
    fn phrases_say_what_is_known_and_no_more() {
        let run = RunId::new();
        let accepted = EventKind::RunAccepted {
            catalog: 1,
            flow: "order".into(),
            flow_version: "1".into(),
            flow_digest: "d".into(),
            steps: vec![
                "charge".into(),
                "reserve-stock".into(),
                "notify".into(),
                "audit".into(),
            ],
            input: serde_json::json!({}),
            idempotency_key: None,
            submitted_by: None,
            plugins: Default::default(),
        };
        let mut s = RunSummary::from_first(&event(run, 0, 1_000, accepted)).unwrap();
        s.apply(&event(
            run,
            1,
            1_000,
            EventKind::StepScheduled {
                index: 0,
                attempt: 1,
                max_attempts: 5,
                not_before_ms: 1_000,
            },
        ));
        assert_eq!(s.phrase(1_000, false), "Request accepted");
        assert_eq!(s.phrase(1_000, true), "Processing: step 1 of 4 (charge)");

        s.apply(&event(
            run,
            2,
            1_010,
            EventKind::StepCompleted {
                index: 0,
                output: serde_json::json!({}),
                duration_ms: 1,
            },
        ));
        s.apply(&event(
            run,
            3,
            1_010,
            EventKind::StepScheduled {
                index: 1,
                attempt: 1,
                max_attempts: 5,
                not_before_ms: 1_010,
            },
        ));
        assert_eq!(
            s.phrase(1_010, false),
            "Processing: step 2 of 4 (reserve-stock)"
        );

        let failure = crate::Failure {
            class: crate::FailureClass::Retryable,
            message: "503".into(),
        };
        s.apply(&event(
            run,
            4,
            2_000,
            EventKind::StepFailed {
                index: 1,
                failure,
                retry_at_ms: Some(6_000),
                may_have_effect: false,
                duration_ms: Some(3),
            },
        ));
        s.apply(&event(
            run,
            5,
            2_000,
            EventKind::StepScheduled {
                index: 1,
                attempt: 3,
                max_attempts: 5,
                not_before_ms: 6_000,
            },
        ));
        assert_eq!(s.state, RunState::Retrying);
        assert_eq!(
            s.phrase(2_000, false),
            "Retrying reserve-stock (attempt 3 of 5) in 4 s"
        );
        assert_eq!(
            s.phrase(6_500, true),
            "Processing: step 2 of 4 (reserve-stock)"
        );

        s.apply(&event(
            run,
            6,
            7_000,
            EventKind::CompensationScheduled {
                index: 0,
                attempt: 1,
                max_attempts: 5,
                not_before_ms: 7_000,
            },
        ));
        assert_eq!(s.phrase(7_000, true), "Undoing completed steps");
        assert!(!s.state.is_terminal());
        s.apply(&event(
            run,
            7,
            7_100,
            EventKind::CompensationCompleted {
                index: 0,
                duration_ms: 1,
            },
        ));
        s.apply(&event(run, 8, 7_100, EventKind::RunCompensated));
        assert_eq!(
            s.phrase(8_000, false),
            "Could not complete; all changes were undone"
        );
        assert_eq!(s.next, Next::Nothing);
        assert_eq!(s.finished_at_ms, Some(7_100));
        assert_eq!(s.attempts_total, 3);
    }
}
