//! # settle-types
//!
//! What every layer of Settle shares, and nothing that ties it to a backend:
//! identities (an [`OperationId`] per action), run states and their phrases,
//! the event schema and its version, the summary folded from events, failure
//! classes, the [`retry::RetryPolicy`], a [`clock::Clock`], and the traits
//! between the layers: the store's roles ([`store`]) and the [`executor`]
//! that runs plugins. No sled, no wasmtime: the engine is built against
//! these alone, so `cargo tree -i sled -p settle-engine` comes back empty.

pub mod bounds;
pub mod clock;
pub mod duration_text;
pub mod event;
pub mod executor;
pub mod ids;
pub mod messages;
pub mod observe;
pub mod retry;
pub mod signing;
pub mod state;
pub mod store;
pub mod summary;

pub use event::{
    Event, EventKind, Failure, FailureClass, HoldCause, OperatorAction, SCHEMA_VERSION, Source,
    Verdict,
};
pub use ids::{Action, OperationId, RunId, step_id};
pub use state::{RunState, Stage};
pub use summary::{Next, Recheck, RunSummary};

pub use clock::now_ms;
