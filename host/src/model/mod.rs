//! Domain types every layer shares: identities, run states, the event schema
//! and the run summary that is folded from events. Nothing here does I/O.

pub mod bounds;
pub mod event;
pub mod ids;
pub mod state;
pub mod summary;

pub use event::{
    Event, EventKind, Failure, FailureClass, HoldCause, OperatorAction, SCHEMA_VERSION, Source,
    Verdict,
};
pub use ids::{Action, OperationId, RunId, step_id};
pub use state::{RunState, Stage};
pub use summary::{Next, RunSummary};

/// Milliseconds since the Unix epoch, the time unit of every event.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
