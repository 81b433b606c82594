//! Run states and the phrases people see. The doc comment of each variant is
//! its specification: what it means and which transitions leave it.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Recorded durably; no step has started. Leaves to `processing`.
    Accepted,
    /// A step attempt is scheduled or running. Leaves to `retrying` (an attempt
    /// failed and another is scheduled), the next step, `compensating` (a step
    /// failed for good) or `pending-reconciliation` (every step completed).
    Processing,
    /// An attempt failed with a retryable error; the next attempt is scheduled
    /// at a recorded time. Leaves like `processing`.
    Retrying,
    /// A step failed for good; completed steps are being undone in reverse
    /// order. Leaves to `compensated`, or `needs-attention` when a
    /// compensation fails for good.
    Compensating,
    /// Every step completed; the host is confirming with downstream systems
    /// (`reconcile`). Leaves to `settled` or `drifted`, or `needs-attention`
    /// when no answer can be had.
    PendingReconciliation,
    /// Terminal: every step completed and downstream systems agree.
    Settled,
    /// Terminal: a step failed for good and every completed step was undone.
    Compensated,
    /// Terminal: completed, but a downstream system disagrees with what the
    /// steps recorded. An operator reviews it.
    Drifted,
    /// Waiting for an operator: the host's setup is incomplete (a plugin or
    /// grant missing), retries ran out under `on_exhausted: hold`, or
    /// something could not be undone. The run is not driven, but what it was
    /// about to do stays recorded: `settle resume` (setup fixed),
    /// `settle retry`, `settle compensate` or `settle cancel` move it on.
    NeedsAttention,
    /// Terminal: cancelled by an operator.
    Cancelled,
}

/// The coarse stage of a run, stable across versions, for clients to rely on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Accepted,
    Running,
    /// On a timer (a retry), a signal or an operator.
    Waiting,
    Done,
}

impl RunState {
    pub const ALL: [RunState; 10] = [
        RunState::Accepted,
        RunState::Processing,
        RunState::Retrying,
        RunState::Compensating,
        RunState::PendingReconciliation,
        RunState::Settled,
        RunState::Compensated,
        RunState::Drifted,
        RunState::NeedsAttention,
        RunState::Cancelled,
    ];

    /// The coarse stage. `retry_pending` tells whether a retry timer is
    /// still running (only then is a `retrying` run waiting, not running).
    pub fn stage(self, retry_pending: bool) -> Stage {
        match self {
            RunState::Accepted => Stage::Accepted,
            RunState::Retrying if retry_pending => Stage::Waiting,
            RunState::Processing
            | RunState::Retrying
            | RunState::Compensating
            | RunState::PendingReconciliation => Stage::Running,
            RunState::NeedsAttention => Stage::Waiting,
            RunState::Settled | RunState::Compensated | RunState::Drifted | RunState::Cancelled => {
                Stage::Done
            }
        }
    }

    /// No further step will be taken without an operator.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Settled
                | RunState::Compensated
                | RunState::Drifted
                | RunState::NeedsAttention
                | RunState::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Accepted => "accepted",
            RunState::Processing => "processing",
            RunState::Retrying => "retrying",
            RunState::Compensating => "compensating",
            RunState::PendingReconciliation => "pending-reconciliation",
            RunState::Settled => "settled",
            RunState::Compensated => "compensated",
            RunState::Drifted => "drifted",
            RunState::NeedsAttention => "needs-attention",
            RunState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RunState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = RunState::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown run state '{s}' (one of: {})", names.join(", "))
            })
    }
}
