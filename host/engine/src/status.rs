//! Run status as people and programs see it: the state, its phrase, where
//! the run stands, and what the plugin last reported.

use crate::expectations::Expectation;
use serde::{Deserialize, Serialize};
use settle_types::messages::{Lang, Message};
use settle_types::{Failure, HoldCause, Next, RunId, RunState, RunSummary, Stage, now_ms};

/// What is known about a run right now. Deserializable too: the CLI reads
/// it back from the HTTP API and prints it as it prints a local one.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunStatus {
    pub run_id: RunId,
    pub flow: String,
    pub state: RunState,
    /// The coarse stage clients may rely on across versions.
    pub stage: Stage,
    /// Why the run waits for an operator, while it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldCause>,
    /// The sentence shown to people, in `language`, e.g. "Retrying
    /// reserve-stock (attempt 3 of 5) in 4 s".
    pub phrase: String,
    /// The phrase as a catalog message (an id and its parameters), to
    /// render in another language or to match on.
    pub message: Message,
    /// The message catalog version the run's phrases are rendered with.
    #[serde(default)]
    pub catalog: u32,
    /// The language of `phrase` (`Accept-Language` chooses it).
    #[serde(default)]
    pub language: Lang,
    /// The step the run is at (or undoing), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<StepPosition>,
    /// The signal or approval the run waits for, while it does: what the
    /// dashboard offers to send or decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting: Option<settle_types::summary::Awaiting>,
    /// Steps completed so far.
    pub completed_steps: usize,
    /// Steps passed over because their `if:` was false.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_steps: usize,
    pub step_count: usize,
    /// Attempts made so far, steps and compensations together.
    pub attempts_total: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Reports from people that what they see is not what they expected.
    #[serde(default, skip_serializing_if = "settle_types::summary::is_zero")]
    pub reports: u32,
    /// Times an operator restarted the run from a step.
    #[serde(default, skip_serializing_if = "settle_types::summary::is_zero")]
    pub restarts: u32,
    /// Times its drifted steps were run again to repair it.
    #[serde(default, skip_serializing_if = "settle_types::summary::is_zero")]
    pub reapplies: u32,
    pub accepted_at_ms: u64,
    pub updated_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<u64>,
    /// For a run still moving: how long runs of its flow usually take, or
    /// that there is not yet enough history to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expectation: Option<Expectation>,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepPosition {
    /// 1-based, as shown to people.
    pub number: u32,
    pub name: String,
    pub attempt: u32,
    pub max_attempts: u32,
    /// `run`, `compensate` or `reconcile`.
    pub action: &'static str,
}

/// A [`StepPosition`] as read back, with its action as text.
#[derive(Deserialize)]
struct StepPositionText {
    number: u32,
    name: String,
    attempt: u32,
    max_attempts: u32,
    action: String,
}

// By hand: a derive would tie the input's lifetime to the `'static` action.
impl<'de> Deserialize<'de> for StepPosition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = StepPositionText::deserialize(d)?;
        let action = ["run", "compensate", "reconcile"]
            .into_iter()
            .find(|a| *a == t.action)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("unknown step action '{}'", t.action))
            })?;
        Ok(StepPosition {
            number: t.number,
            name: t.name,
            attempt: t.attempt,
            max_attempts: t.max_attempts,
            action,
        })
    }
}

/// The last progress report of the plugin call in progress.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Progress {
    pub fraction: f32,
    pub message: String,
}

impl RunStatus {
    /// Status from the stored summary, plus what the host driving the run
    /// knows live (whether an attempt is running, its last progress report).
    pub fn new(
        summary: &RunSummary,
        running: bool,
        progress: Option<Progress>,
        expectation: Option<Expectation>,
    ) -> Self {
        let now = now_ms();
        let message = with_expectation(summary.message(now, running), expectation.as_ref());
        let name = |i: u32| summary.steps.get(i as usize).cloned().unwrap_or_default();
        let step = match summary.next {
            Next::Step {
                index,
                attempt,
                max_attempts,
                ..
            } => Some(StepPosition {
                number: index.saturating_add(1),
                name: name(index),
                attempt,
                max_attempts,
                action: "run",
            }),
            Next::Compensate {
                index,
                attempt,
                max_attempts,
                ..
            } => Some(StepPosition {
                number: index.saturating_add(1),
                name: name(index),
                attempt,
                max_attempts,
                action: "compensate",
            }),
            Next::Reconcile { .. } | Next::Nothing => None,
        };
        RunStatus {
            run_id: summary.run_id,
            flow: format!("{}@{}", summary.flow, summary.flow_version),
            state: summary.state,
            stage: summary.state.stage(
                (summary.next.due_ms().is_some_and(|d| d > now) || summary.waiting_on.is_some())
                    && !running,
            ),
            hold: summary.hold,
            phrase: message.render(Lang::En, summary.catalog),
            message,
            catalog: summary.catalog,
            language: Lang::En,
            step,
            awaiting: summary.awaiting(),
            completed_steps: summary.completed_steps(),
            skipped_steps: summary.skipped.iter().filter(|s| **s).count(),
            step_count: summary.steps.len(),
            attempts_total: summary.attempts_total,
            next_attempt_at_ms: summary.next.due_ms().filter(|&d| d > now),
            last_failure: summary.last_failure.clone(),
            progress: if running { progress } else { None },
            detail: summary.detail.clone(),
            reports: summary.reports,
            restarts: summary.restarts,
            reapplies: summary.reapplies,
            accepted_at_ms: summary.accepted_at_ms,
            updated_at_ms: summary.updated_at_ms,
            finished_at_ms: summary.finished_at_ms,
            expectation,
        }
    }
}

/// The phrase with what is known of time: "…; usually completes within
/// 8 s (…)", or "Taking longer than usual (…): …" for a run past that.
/// Without enough history the phrase promises nothing (the status's
/// `expectation` says why).
fn with_expectation(phrase: Message, expectation: Option<&Expectation>) -> Message {
    match expectation {
        Some(e) if e.usually_within_ms.is_some() && e.overdue => {
            let mut overdue = e.message.clone();
            overdue.id = "status.overdue".into();
            overdue.with_messages("phrase", vec![phrase])
        }
        Some(Expectation {
            step: Some(step), ..
        }) if step.overdue => Message::new("status.step-overdue")
            .with("step", &step.step)
            .with("percent", crate::expectations::PERCENT)
            .with("runs", step.of_runs)
            .with("within", crate::expectations::human(step.usually_within_ms))
            .with_messages("phrase", vec![phrase]),
        Some(e) if e.usually_within_ms.is_some() => Message::new("status.with-expectation")
            .with_messages("phrase", vec![phrase])
            .with_messages("expectation", vec![e.message.clone()]),
        _ => phrase,
    }
}

impl RunStatus {
    /// The status with its phrases in `lang` (they are in English until
    /// then), rendered with the run's own catalog version.
    pub fn localized(mut self, lang: Lang) -> Self {
        self.phrase = self.message.render(lang, self.catalog);
        if let Some(e) = &mut self.expectation {
            e.text = e.message.render(lang, self.catalog);
        }
        self.language = lang;
        self
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expectations::StepExpectation;

    #[test]
    fn a_step_past_its_usual_time_is_said_when_the_run_is_not() {
        let expectation = |run_overdue: bool, step_overdue: bool| Expectation {
            usually_within_ms: Some(8_000),
            of_runs: 500,
            overdue: run_overdue,
            text: String::new(),
            message: Message::new("expect.usually")
                .with("percent", 90)
                .with("runs", 500)
                .with("within", "8 s"),
            step: Some(StepExpectation {
                step: "charge".into(),
                usually_within_ms: 2_000,
                of_runs: 480,
                overdue: step_overdue,
            }),
        };
        let phrase = || {
            Message::new("run.retrying")
                .with("step", "charge")
                .with("attempt", 3)
                .with("max_attempts", 5)
                .with("seconds", 4)
        };
        let said = |e: Expectation| with_expectation(phrase(), Some(&e)).render(Lang::En, 1);
        assert_eq!(
            said(expectation(false, true)),
            "Taking longer than usual at charge (90 % of the last 480 runs finished it within 2 s): Retrying charge (attempt 3 of 5) in 4 s"
        );
        assert_eq!(
            said(expectation(false, false)),
            "Retrying charge (attempt 3 of 5) in 4 s; usually completes within 8 s (90 % of the last 500 runs)"
        );
        assert!(said(expectation(true, true)).starts_with(
            "Taking longer than usual (90 % of the last 500 runs completed within 8 s)"
        ));
    }
}
