//! What the layers need of durable storage, split by role as the callers use
//! it: the engine appends to and reads the [`RunLog`]; the API and the CLI
//! page through runs with [`RunQueries`]; plugins keep their state through
//! [`KvStore`]; operators rebuild indexes with [`Maintenance`]. [`Store`] is
//! all four, for the composition root.
//!
//! The behaviour every backend must show is tested once, in the
//! `settle-store-tests` crate, and run against each backend. A commit appends a run's
//! new events together with the index entries they imply (summary, active set,
//! idempotency claim) atomically, and returns only once all of it is on disk.
//!
//! There is no timer index for runs in flight: a run's next due time is in
//! its summary, the engine keeps its timers in memory, and on start it
//! re-arms them from the active set (a run whose time has passed runs at
//! once). Settled runs checked again later are many more and wait long: a
//! commit whose summary has a `recheck` also writes a (due time, run) entry
//! of a time-ordered index, read with [`RunLog::due_rechecks`].
//!
//! Reads that list many records skip a record that cannot be read, report it
//! in [`Scan::unreadable`] and count it, so one bad record never stops
//! listing, resume or start. A store knows nothing of Wasm, flows or HTTP.

use crate::{Event, RunId, RunState, RunSummary};
use std::future::Future;

/// Everything one state change of one run writes, applied atomically.
#[derive(Clone, Debug)]
pub struct Commit {
    pub run_id: RunId,
    /// New events, in order, with consecutive `seq` numbers.
    pub events: Vec<Event>,
    /// The run's summary after folding `events` in.
    pub summary: RunSummary,
    /// For a run's first commit: the idempotency key it claims.
    pub claim: Option<IdempotencyClaim>,
}

/// A run's claim on an idempotency key of its flow.
#[derive(Clone, Debug)]
pub struct IdempotencyClaim {
    pub flow: String,
    pub key: String,
    /// A key is honoured for this long after the run that claimed it was accepted.
    pub window_ms: u64,
}

/// What a commit did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Written and durable.
    Committed,
    /// Not written: another run already holds the idempotency key.
    Duplicate(RunId),
}

/// What `reindex` rebuilt.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReindexReport {
    pub runs: u64,
    pub events: u64,
    pub active: u64,
    pub idempotency_keys: u64,
    /// Settled runs with a check due later.
    #[serde(default)]
    pub rechecks: u64,
    /// Index entries of the old indexes that the rebuild dropped.
    pub dropped: u64,
}

/// A record that could not be read, skipped by a listing.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unreadable {
    /// The run it belongs to, when its key says.
    pub run: Option<RunId>,
    /// Its key, as `prefix:hex`.
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.run {
            Some(run) => write!(
                f,
                "run {run}: record {} unreadable: {}",
                self.key, self.reason
            ),
            None => write!(f, "record {} unreadable: {}", self.key, self.reason),
        }
    }
}

/// What a listing found: the records it could read, and those it skipped.
#[derive(Clone, Debug)]
pub struct Scan<T> {
    pub items: Vec<T>,
    pub unreadable: Vec<Unreadable>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store open (sled allows one at a time).
    #[error(
        "the store at {path} is in use by another settle process; stop it or use --data for another store"
    )]
    Locked { path: String },
    /// The underlying database failed.
    #[error("store I/O failed: {0}")]
    Io(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A record on disk cannot be read.
    #[error("corrupt record at key {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// The store was closed while a commit was waiting.
    #[error("the store is closed")]
    Closed,
    /// A flush or sync failed, so the store stopped for good (fail-stop):
    /// after a failed fsync the page cache may have dropped the data, and a
    /// later successful sync would prove nothing. Restart the host; it
    /// recovers from what is on disk.
    #[error(
        "the store stopped after a failed write to disk ({reason}); restart settle to recover from what is on disk"
    )]
    Stopped { reason: String },
    /// A commit would overwrite an event already in the log: two writers
    /// acted on one run. Nothing was written.
    #[error("run {run}: event {seq} is already in the log; another writer acted on this run")]
    Conflict { run: RunId, seq: u64 },
    /// `reindex` found records it cannot read; the old indexes were kept.
    #[error("reindex kept the old indexes: {count} record(s) cannot be read, first: {first}")]
    RebuildFailed { count: usize, first: String },
}

impl StoreError {
    /// Nothing more can be written in this process.
    pub fn is_fatal(&self) -> bool {
        matches!(self, StoreError::Stopped { .. } | StoreError::Closed)
    }
}

impl StoreError {
    /// Wraps a backend's own error.
    pub fn io(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Io(Box::new(error))
    }
}

/// Which runs a listing wants. Every field narrows; the default is every run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only runs in one of these states (empty: any state).
    pub states: Vec<RunState>,
    /// Only runs of this flow (by name, any version).
    pub flow: Option<String>,
    /// Only runs accepted at or after this time.
    pub since_ms: Option<u64>,
    /// Only runs older than this one: the cursor of the previous page.
    pub before: Option<RunId>,
}

impl RunFilter {
    /// Whether `summary` passes every condition but the cursor.
    pub fn matches(&self, summary: &RunSummary) -> bool {
        (self.states.is_empty() || self.states.contains(&summary.state))
            && self.flow.as_ref().is_none_or(|f| *f == summary.flow)
            && self.since_ms.is_none_or(|t| summary.accepted_at_ms >= t)
    }
}

/// The engine's log: what it appends and what it reads back to drive and
/// resume runs. Every method is async, so a networked backend fits.
pub trait RunLog: Send + Sync + 'static {
    /// Appends events and their index entries atomically; resolves once durable.
    fn commit(
        &self,
        commit: Commit,
    ) -> impl Future<Output = Result<CommitOutcome, StoreError>> + Send;
    /// The current summary of a run.
    fn summary(
        &self,
        run: RunId,
    ) -> impl Future<Output = Result<Option<RunSummary>, StoreError>> + Send;
    /// A run's whole log, in order.
    fn events(&self, run: RunId) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send;
    /// Summaries of every run that is not terminal.
    fn active_runs(&self) -> impl Future<Output = Result<Scan<RunSummary>, StoreError>> + Send;
    /// The run holding `key` for `flow`, if its claim is still inside its window.
    fn find_idempotent(
        &self,
        flow: &str,
        key: &str,
        window_ms: u64,
        now_ms: u64,
    ) -> impl Future<Output = Result<Option<RunId>, StoreError>> + Send;
    /// Keeps the text of a flow, by digest, so a run can always be resumed
    /// under the exact flow it was accepted with. Durable with the next commit.
    fn put_flow(
        &self,
        digest: &str,
        text: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn get_flow(
        &self,
        digest: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;
    /// Settled runs whose next check against downstream systems is due at
    /// or before `now_ms`, earliest first, at most `limit`, as (due, run):
    /// a range read of a time-ordered index, never a scan of every run. An
    /// entry may be stale (the run moved on since it was written): the
    /// caller compares it with the summary's `recheck` and drops it.
    fn due_rechecks(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(u64, RunId)>, StoreError>> + Send;
    /// Removes one entry of the recheck index (processed, or stale). Need
    /// not be durable: an entry that comes back is stale and dropped again.
    fn drop_recheck(
        &self,
        due_ms: u64,
        run: RunId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Reads for people and programs watching runs (API, CLI, dashboard).
pub trait RunQueries: RunLog {
    /// Newest runs first that pass `filter`; at most `limit`.
    fn list_runs(
        &self,
        filter: &RunFilter,
        limit: usize,
    ) -> impl Future<Output = Result<Scan<RunSummary>, StoreError>> + Send;
}

/// Plugin-scoped key-value state.
///
/// Synchronous on purpose: a plugin reads its state from inside a host
/// import, which wasmtime calls synchronously on the plugin's own thread.
/// Writes made by one call are applied together, with [`KvStore::kv_apply`],
/// only when the call succeeded.
pub trait KvStore: Send + Sync + 'static {
    fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Applies one plugin call's writes (`None` deletes) in one atomic batch.
    fn kv_apply(
        &self,
        plugin: &str,
        writes: &[(String, Option<Vec<u8>>)],
    ) -> Result<(), StoreError>;
    /// How many keys `plugin` keeps, and their bytes (keys and values).
    fn kv_usage(&self, plugin: &str) -> Result<(u64, u64), StoreError>;
}

/// What operators do to a store as a whole.
pub trait Maintenance: Send + Sync + 'static {
    /// Rebuilds every index from the events alone, beside the old ones, and
    /// swaps them in one atomic batch only if every event could be read;
    /// otherwise the old indexes stay and the error names what failed.
    fn reindex(&self) -> impl Future<Output = Result<ReindexReport, StoreError>> + Send;
}

/// A whole backend: every role.
pub trait Store: RunQueries + KvStore + Maintenance + Clone {}
impl<T: RunQueries + KvStore + Maintenance + Clone> Store for T {}
