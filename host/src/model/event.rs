//! The event schema: the one record of everything that happens to a run.
//!
//! Events are appended, never changed. Every index and summary is a fold over
//! them (see [`crate::model::summary`]), so this file *is* the data model.
//! The schema is versioned (`v`): a reader of version N must read every event
//! written by versions before N (a test keeps a version-1 log for that).

use super::RunId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// The version of the schema this host writes.
pub const SCHEMA_VERSION: u16 = 1;

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
    /// attempt is scheduled.
    StepFailed {
        index: u32,
        failure: Failure,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_at_ms: Option<u64>,
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
    /// A plugin asked for something the operator has not granted it.
    CapabilityDenied { capability: String, detail: String },
    /// Terminal: completed and confirmed.
    RunSettled,
    /// Terminal: every completed step was undone.
    RunCompensated,
    /// Terminal: completed, but downstream disagrees.
    RunDrifted { detail: String },
    /// Terminal until an operator acts.
    RunNeedsAttention { reason: String },
}

impl EventKind {
    /// The kebab-case name used in the serialised `type` field.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::RunAccepted { .. } => "run-accepted",
            EventKind::StepScheduled { .. } => "step-scheduled",
            EventKind::StepCompleted { .. } => "step-completed",
            EventKind::StepFailed { .. } => "step-failed",
            EventKind::CompensationScheduled { .. } => "compensation-scheduled",
            EventKind::CompensationCompleted { .. } => "compensation-completed",
            EventKind::CompensationFailed { .. } => "compensation-failed",
            EventKind::ReconciliationScheduled { .. } => "reconciliation-scheduled",
            EventKind::StepReconciled { .. } => "step-reconciled",
            EventKind::CapabilityDenied { .. } => "capability-denied",
            EventKind::RunSettled => "run-settled",
            EventKind::RunCompensated => "run-compensated",
            EventKind::RunDrifted { .. } => "run-drifted",
            EventKind::RunNeedsAttention { .. } => "run-needs-attention",
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
    /// The plugin is not installed, or cannot be instantiated.
    Unavailable,
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
        }
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
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| {
            format!(
                "unknown failure class '{s}' (one of: retryable, permanent, invalid-input, \
                     trap, timeout, memory-limit, output-limit, unavailable)"
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
