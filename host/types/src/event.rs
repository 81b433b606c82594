//! The event schema: the one record of everything that happens to a run.
//!
//! Events are appended, never changed. Every index and summary is a fold over
//! them (see [`crate::summary`]), so this file *is* the data model.
//! The schema is versioned (`v`): a reader of version N must read every event
//! written by versions before N (a test keeps a version-1 log for that).

use super::RunId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The version of the schema this host writes.
///
/// - 1: the spine.
/// - 2: `step-failed` may say the attempt may have had its effect;
///   `run-held`, `operator-acted` and `run-cancelled`; the failure class
///   `host-setup`; `run-needs-attention` is no longer written (holds replace
///   it) but still read.
/// - 3: `run-restarted` (an operator re-runs a run from one of its steps);
///   `recheck-scheduled` and `rechecks-ended` (periodic reconciliation of
///   settled runs); the operator action `accept-drift`;
///   operation ids of re-run steps carry their generation; `step-failed`
///   says how long the attempt spent in the plugin; `step-deferred` (an
///   attempt that waits for a plugin's circuit breaker);
///   `objective-breached`.
/// - 4: `run-reapplied` (a drifted run's steps are run again under their
///   same operation ids) and the operator action `reapply`; `run-accepted`
///   records the message catalog version (`catalog`); `step-waiting` (a
///   `wait:` step's durable timer, or a `signal:` step's timeout);
///   `signal-received`, `signal-taken`.
/// - 5: `step-skipped` (a step whose `if:` condition was false).
/// - 6: `items-started`, `item-completed`, `items-failed`,
///   `item-compensated` (the items of a `for_each` step); `run-accepted`
///   records the plugins' digests (`plugins`); `plugin-changed`.
/// - 7: `flow-upgraded` (a run moved to a newer version of its flow, at a
///   step boundary, as that version asked with `upgrade: at-step-boundary`);
///   `exchanges-recorded` (a call's HTTP exchanges, for replays).
pub const SCHEMA_VERSION: u16 = 7;

/// One immutable record in a run's log, with its lineage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Schema version the event was written with.
    pub v: u16,
    /// Unique id of this event (UUID v7).
    pub id: Uuid,
    pub run_id: RunId,
    /// Position in the run's log, from 0, without gaps.
    pub seq: u64,
    /// When the host recorded it, Unix milliseconds.
    pub at_ms: u64,
    /// The step it concerns, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The step's operation id (stable across attempts), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    /// The attempt it concerns, if any (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Who caused it: `host`, or the plugin as `name@version#digest`.
    pub source: Source,
    /// The event that led to this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation: Option<Uuid>,
    /// Trace id shared by the whole run.
    pub trace_id: String,
    /// What happened, as `{"type": "step-completed", ...}`.
    pub kind: EventKind,
}

/// Who caused an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Source(pub String);

impl Source {
    pub fn host() -> Self {
        Source("host".into())
    }
}

/// What happened. Serialised as `"type": "kebab-case-name"` plus its fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum EventKind {
    /// The run was accepted: from here on it is never lost.
    RunAccepted {
        flow: String,
        flow_version: String,
        /// Content digest of the flow file, so a resumed run can tell if the
        /// flow changed under it.
        flow_digest: String,
        /// Names of the flow's steps, in order.
        steps: Vec<String>,
        input: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        idempotency_key: Option<String>,
        /// Who submitted it (the API token's name), when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        submitted_by: Option<String>,
        /// The message catalog version its phrases are rendered with
        /// ([`crate::messages`]); 0 for runs accepted before catalogs.
        #[serde(default, skip_serializing_if = "crate::summary::is_zero")]
        catalog: u32,
        /// The SHA-256 of each plugin the flow's steps call, as installed
        /// when the run was accepted.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        plugins: std::collections::BTreeMap<String, String>,
    },
    /// Attempt `attempt` (of at most `max_attempts`) of step `index` is due
    /// at `not_before_ms`.
    StepScheduled {
        index: u32,
        attempt: u32,
        max_attempts: u32,
        not_before_ms: u64,
    },
    /// The step's `run` returned this output. Recorded at most once per step.
    StepCompleted {
        index: u32,
        output: Value,
        duration_ms: u64,
    },
    /// An attempt of the step failed; `retry_at_ms` is set when another
    /// attempt is scheduled. `may_have_effect` says the attempt's outcome is
    /// unknown (it timed out, trapped, ran out of memory, was interrupted,
    /// or returned an output the host rejected): the step is then
    /// compensated like a completed one if the run is undone.
    StepFailed {
        index: u32,
        failure: Failure,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_at_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        may_have_effect: bool,
        /// Time inside the plugin, when the attempt reached it (written
        /// since schema 3).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_ms: Option<u64>,
    },
    /// The run did not settle within its flow's objective
    /// (`settled_within`): recorded once, when that time passed or the run
    /// ended otherwise.
    ObjectiveBreached {
        settled_within_ms: u64,
        elapsed_ms: u64,
    },
    /// Attempt `attempt` of step `index` was not made: the plugin's circuit
    /// breaker is open (its downstream is failing), so it waits until
    /// `until_ms` without spending an attempt.
    StepDeferred {
        index: u32,
        attempt: u32,
        until_ms: u64,
        reason: String,
    },
    /// Undoing completed step `index`: attempt `attempt` (of at most
    /// `max_attempts`) is due at `not_before_ms`.
    CompensationScheduled {
        index: u32,
        attempt: u32,
        max_attempts: u32,
        not_before_ms: u64,
    },
    /// Step `index` was undone.
    CompensationCompleted { index: u32, duration_ms: u64 },
    /// An attempt to undo step `index` failed.
    CompensationFailed {
        index: u32,
        failure: Failure,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_at_ms: Option<u64>,
    },
    /// Every step completed; confirmation with downstream systems is due.
    ReconciliationScheduled {
        attempt: u32,
        max_attempts: u32,
        not_before_ms: u64,
    },
    /// What a step's `reconcile` answered.
    StepReconciled { index: u32, verdict: Verdict },
    /// A settled run's steps are checked against downstream systems again
    /// at `not_before_ms` (its flow's `reconcile:` window); `attempt` counts
    /// the checks in a row that got no answer (1 after an answer).
    RecheckScheduled { not_before_ms: u64, attempt: u32 },
    /// No more checks of this settled run: its window closed, or an
    /// operator accepted what downstream systems say.
    RechecksEnded {
        reason: String,
        /// The last checks got no answer: the run is not confirmed.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unanswered: bool,
    },
    /// A plugin asked for something the operator has not granted it.
    CapabilityDenied { capability: String, detail: String },
    /// Terminal: completed and confirmed.
    RunSettled,
    /// Terminal: every completed step was undone.
    RunCompensated,
    /// Terminal: completed, but downstream disagrees.
    RunDrifted { detail: String },
    /// Written by schema 1 only: stopped for an operator, with nothing left
    /// to resume. Hosts now write [`EventKind::RunHeld`].
    RunNeedsAttention { reason: String },
    /// The run waits for an operator (state `needs-attention`). What it was
    /// about to do stays recorded, so it continues there once released
    /// (`settle resume` for a fixed setup, `settle retry`, `settle compensate`).
    RunHeld { cause: HoldCause, reason: String },
    /// An operator acted on the run: who, what and why.
    OperatorActed {
        action: OperatorAction,
        by: String,
        reason: String,
    },
    /// Terminal: cancelled by an operator. Nothing more is done; what had
    /// completed stays in place (the status says what).
    RunCancelled,
    /// An operator re-runs the run from step `from_index`, with the same
    /// flow version: what steps `from_index..` had done is forgotten (not
    /// undone) and they run again as generation `generation`, under new
    /// operation ids, so a downstream system does not answer with the
    /// earlier call's reply. Steps before it keep their outputs.
    RunRestarted { from_index: u32, generation: u32 },
    /// A `wait:` step began: the run waits until `until_ms`, then the step
    /// completes. Recorded once, so a restart keeps the same time.
    StepWaiting {
        index: u32,
        until_ms: u64,
        /// The signal a `signal:` step waits for (until `until_ms`, its
        /// timeout); none for a `wait:` step.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<String>,
        /// For an `approval:` step, the approvals it needs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        needed: Option<u32>,
    },
    /// The step's `if:` condition was false: it is passed over, as if it
    /// had nothing to do. It has no output, and nothing of it is undone.
    StepSkipped {
        index: u32,
        /// The condition as the flow wrote it (cut), for people.
        condition: String,
    },
    /// Item `item` (its position in the list) of `for_each` step `index`
    /// returned this output. Recorded once per item, as each completes:
    /// a retry of the step calls only the items without one.
    ItemCompleted {
        index: u32,
        item: u32,
        output: Value,
    },
    /// The HTTP exchanges of a `run` call of step `index` (of its item
    /// `item`, for a `for_each` or `parallel` step), recorded when its
    /// plugin's are (`record_exchanges`): what `settle plugin replay`
    /// answers a new build with. Bounded by the runtime.
    ExchangesRecorded {
        index: u32,
        item: Option<u32>,
        attempt: u32,
        exchanges: Vec<crate::executor::Exchange>,
    },
    /// The run moved, between two steps, to another version of its flow
    /// (the current one, which asked for it with `upgrade:
    /// at-step-boundary`); `steps` are the new version's step names. The
    /// steps done so far are the new version's first steps, by name.
    FlowUpgraded {
        from_version: String,
        from_digest: String,
        to_version: String,
        to_digest: String,
        steps: Vec<String>,
        /// The builds of plugins the run did not call before (name →
        /// digest), which it keeps from now on.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        plugins: std::collections::BTreeMap<String, String>,
    },
    /// The build of `plugin` installed now is not the one the run started
    /// with (or last saw), and its flow moves runs to new builds (`upgrade:
    /// at-step-boundary`): recorded once per change, before the step that
    /// calls it; from then on the run calls the new build.
    PluginChanged {
        plugin: String,
        from: String,
        to: String,
    },
    /// Items of `for_each` step `index` about to be called, written before
    /// the calls go out: an item started and not completed or failed may
    /// have had its effect (a crash, a timeout), so it is undone with the
    /// completed ones.
    ItemsStarted { index: u32, items: Vec<u32> },
    /// Items of `for_each` step `index` whose call failed with no effect
    /// (the plugin said so: retryable, permanent, invalid input).
    ItemsFailed { index: u32, items: Vec<u32> },
    /// Item `item` of `for_each` step `index` was undone.
    ItemCompensated { index: u32, item: u32 },
    /// A `signal:` or `approval:` step took the received signal at
    /// `position` (in the order received), in the commit that completes it.
    SignalTaken { index: u32, position: u32 },
    /// A named signal arrived from outside (`POST /v1/runs/{id}/signals/{name}`).
    /// Kept in the log: a `signal:` step takes it when the run gets there.
    SignalReceived {
        name: String,
        payload: Value,
        /// The sender's idempotency key: a second delivery under it is
        /// not taken again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// Who sent it (the API token's name).
        by: String,
    },
    /// A drifted run is repaired by running its steps again from
    /// `from_index` (its first drifted step) under their same operation
    /// ids: a downstream system puts back what the step asked for, and
    /// answers the steps still in sync from its idempotency records.
    /// `automatic`: the flow's `on_drift: reapply` asked for it, not an
    /// operator.
    RunReapplied {
        from_index: u32,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        automatic: bool,
    },
    /// A person said that what they see is not what they expected. Changes
    /// nothing in the run; counted and shown to operators.
    UserReported {
        message: String,
        /// The field the person means, when they named one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
        /// Who sent it (the API token's name).
        by: String,
    },
}

/// Why a run waits for an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HoldCause {
    /// The host's own setup is incomplete (a plugin missing or failing to
    /// load, a grant or config value missing). Nothing was undone; once the
    /// operator fixes it, `settle resume` continues the run where it stopped.
    HostSetup,
    /// A step's retries ran out and its flow says `on_exhausted: hold`.
    RetriesExhausted,
    /// A compensation could not succeed: something may still be in place.
    CompensationFailed,
    /// Downstream systems could not be asked whether they agree.
    ConfirmationFailed,
    /// The host itself failed while driving the run (a bug): the message says where.
    HostError,
    /// An operator paused the run; `resume` continues it where it stopped.
    Paused,
}

impl HoldCause {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldCause::HostSetup => "host-setup",
            HoldCause::RetriesExhausted => "retries-exhausted",
            HoldCause::CompensationFailed => "compensation-failed",
            HoldCause::ConfirmationFailed => "confirmation-failed",
            HoldCause::HostError => "host-error",
            HoldCause::Paused => "paused",
        }
    }
}

/// What an operator did to a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperatorAction {
    /// Released a run held for the host's setup, after fixing it.
    Resume,
    /// Tried the action the run stopped at again, with a fresh attempt budget.
    Retry,
    /// Undid the run's completed steps.
    Compensate,
    /// Stopped the run for good.
    Cancel,
    /// Held the run at its next step boundary until someone resumes it.
    Pause,
    /// Ran the run again from a step (the command's `step`).
    Restart,
    /// Accepted what downstream systems say of a drifted run: it counts as
    /// settled again, and is no longer checked.
    AcceptDrift,
    /// Ran a drifted run's steps again from its first drifted step, under
    /// their same operation ids, then confirmed them again.
    Reapply,
}

impl OperatorAction {
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorAction::Resume => "resume",
            OperatorAction::Retry => "retry",
            OperatorAction::Compensate => "compensate",
            OperatorAction::Cancel => "cancel",
            OperatorAction::Pause => "pause",
            OperatorAction::Restart => "restart",
            OperatorAction::AcceptDrift => "accept-drift",
            OperatorAction::Reapply => "reapply",
        }
    }
}

impl EventKind {
    /// The kebab-case name used in the serialised `type` field.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::RunAccepted { .. } => "run-accepted",
            EventKind::StepScheduled { .. } => "step-scheduled",
            EventKind::StepCompleted { .. } => "step-completed",
            EventKind::StepFailed { .. } => "step-failed",
            EventKind::StepDeferred { .. } => "step-deferred",
            EventKind::ObjectiveBreached { .. } => "objective-breached",
            EventKind::CompensationScheduled { .. } => "compensation-scheduled",
            EventKind::CompensationCompleted { .. } => "compensation-completed",
            EventKind::CompensationFailed { .. } => "compensation-failed",
            EventKind::ReconciliationScheduled { .. } => "reconciliation-scheduled",
            EventKind::StepReconciled { .. } => "step-reconciled",
            EventKind::RecheckScheduled { .. } => "recheck-scheduled",
            EventKind::RechecksEnded { .. } => "rechecks-ended",
            EventKind::CapabilityDenied { .. } => "capability-denied",
            EventKind::RunSettled => "run-settled",
            EventKind::RunCompensated => "run-compensated",
            EventKind::RunDrifted { .. } => "run-drifted",
            EventKind::RunNeedsAttention { .. } => "run-needs-attention",
            EventKind::RunHeld { .. } => "run-held",
            EventKind::OperatorActed { .. } => "operator-acted",
            EventKind::RunCancelled => "run-cancelled",
            EventKind::RunRestarted { .. } => "run-restarted",
            EventKind::RunReapplied { .. } => "run-reapplied",
            EventKind::StepWaiting { .. } => "step-waiting",
            EventKind::StepSkipped { .. } => "step-skipped",
            EventKind::ItemCompleted { .. } => "item-completed",
            EventKind::ItemsStarted { .. } => "items-started",
            EventKind::PluginChanged { .. } => "plugin-changed",
            EventKind::FlowUpgraded { .. } => "flow-upgraded",
            EventKind::ExchangesRecorded { .. } => "exchanges-recorded",
            EventKind::ItemsFailed { .. } => "items-failed",
            EventKind::ItemCompensated { .. } => "item-compensated",
            EventKind::SignalReceived { .. } => "signal-received",
            EventKind::SignalTaken { .. } => "signal-taken",
            EventKind::UserReported { .. } => "user-reported",
        }
    }
}

/// A failed attempt: what kind of failure, and what was said.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub class: FailureClass,
    pub message: String,
}

/// Failure classes. A flow's `non_retryable` list names these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureClass {
    /// The plugin said: try again later.
    Retryable,
    /// The plugin said: this will never work.
    Permanent,
    /// The plugin (or the host's schema check) said: the input is wrong.
    InvalidInput,
    /// The plugin trapped (a panic, an unreachable, a bad memory access).
    Trap,
    /// The attempt ran past its time limit.
    Timeout,
    /// The plugin tried to use more memory than its limit.
    MemoryLimit,
    /// The plugin returned more output than the host accepts.
    OutputLimit,
    /// The plugin is not installed, or cannot be instantiated. The host's
    /// own setup: holds the run, never compensates it.
    Unavailable,
    /// The host's setup refused what the plugin needed: a capability not
    /// granted, a config value missing, no instance slot to be had. Holds
    /// the run for an operator, never compensates it.
    HostSetup,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Retryable => "retryable",
            FailureClass::Permanent => "permanent",
            FailureClass::InvalidInput => "invalid-input",
            FailureClass::Trap => "trap",
            FailureClass::Timeout => "timeout",
            FailureClass::MemoryLimit => "memory-limit",
            FailureClass::OutputLimit => "output-limit",
            FailureClass::Unavailable => "unavailable",
            FailureClass::HostSetup => "host-setup",
        }
    }

    /// Caused by the host's own setup, not by the plugin or the outside
    /// world: the run waits for an operator instead of spending attempts
    /// or undoing real work.
    pub fn is_host_setup(self) -> bool {
        matches!(self, FailureClass::Unavailable | FailureClass::HostSetup)
    }

    /// Whether a failure of this class may pass on another attempt, before
    /// the flow's own `non_retryable` list is applied.
    pub fn retryable_by_default(self) -> bool {
        !matches!(self, FailureClass::Permanent | FailureClass::InvalidInput)
    }
}

impl std::str::FromStr for FailureClass {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use FailureClass::*;
        [
            Retryable,
            Permanent,
            InvalidInput,
            Trap,
            Timeout,
            MemoryLimit,
            OutputLimit,
            Unavailable,
            HostSetup,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| {
            format!(
                "unknown failure class '{s}' (one of: retryable, permanent, invalid-input, \
                     trap, timeout, memory-limit, output-limit, unavailable, host-setup)"
            )
        })
    }
}

/// What `reconcile` found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "kebab-case")]
pub enum Verdict {
    InSync,
    Drifted(String),
    Unknown,
}
