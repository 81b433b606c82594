//! # settle-store-sled
//!
//! The embedded store on sled, with group commit: Settle's event log and its
//! indexes in one sled tree ([`keys`] has the layout).
//!
//! Workers never flush. Each commit goes to a single committer thread, which
//! takes everything queued, writes it as one atomic sled batch, flushes once,
//! and only then answers every waiting worker. With one run in flight a commit
//! costs one flush; under load the batches grow by themselves. The queue is
//! bounded, which gives backpressure for free.
//!
//! Durability: when [`Store::commit`] returns, the batch has been written,
//! `flush`ed and (with [`SyncMode::Fsync`], the default) `fdatasync`ed, see
//! [`crate::disk_sync`]. With [`SyncMode::Flush`] only sled's flush is waited
//! for, which uses `sync_file_range` (sled issue #1452): safe against a crash
//! of the process (kill -9 included), not against power loss.

pub mod disk_sync;
pub mod keys;

pub use disk_sync::SyncMode;

use disk_sync::DiskSync;
use settle_types::observe::SharedObserver;
use settle_types::store::{
    Commit, CommitOutcome, IdempotencyClaim, KvStore, Maintenance, ReindexReport, RunFilter,
    RunLog, RunQueries, Scan, StoreError, Unreadable,
};
use settle_types::{Event, RunId, RunSummary};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use tokio::sync::oneshot;

/// Stores open in this process, by canonical path.
fn open_stores() -> std::sync::MutexGuard<'static, std::collections::HashSet<PathBuf>> {
    static OPEN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<PathBuf>>> =
        std::sync::OnceLock::new();
    OPEN.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// Waits until the store at `path` (as given to `open`) is closed in this process.
pub async fn wait_until_closed(
    path: &Path,
    timeout: std::time::Duration,
) -> Result<(), StoreError> {
    let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let deadline = std::time::Instant::now() + timeout;
    while open_stores().contains(&key) {
        if std::time::Instant::now() > deadline {
            return Err(StoreError::Locked {
                path: path.display().to_string(),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    Ok(())
}

/// How the store is opened.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// sled's page cache, in bytes.
    pub cache_capacity: u64,
    /// Most commits written by one flush.
    pub max_batch: usize,
    /// Commits that may wait for the committer before callers are held back.
    pub queue_depth: usize,
    /// What a commit waits for before it is acknowledged.
    pub sync: SyncMode,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            // Small on purpose: the engine drives runs from memory and reads
            // the store mostly for status and on resume (see settle.toml).
            cache_capacity: 64 * 1024 * 1024,
            max_batch: 2048,
            queue_depth: 8192,
            sync: SyncMode::Fsync,
        }
    }
}

type Reply = oneshot::Sender<Result<CommitOutcome, StoreError>>;

/// The sled store. Cheap to clone.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
    tx: mpsc::SyncSender<(Commit, Reply)>,
    /// Completed `fdatasync` rounds (none with [`SyncMode::Flush`]).
    disk_syncs: Arc<AtomicU64>,
    /// Blob files `fdatasync`ed.
    blob_syncs: Arc<AtomicU64>,
    /// Records listings had to skip because they could not be read.
    unreadable: Arc<AtomicU64>,
    /// Set once a write, flush or sync failed: the store has stopped.
    stopped: Arc<std::sync::OnceLock<String>>,
    /// Idempotency claims applied to sled's memory but not yet flushed and
    /// synced (see [`SledStore::find_idempotent_now`]).
    unsynced_claims: UnsyncedClaims,
    /// Told of every group commit, once set (see [`SledStore::observe`]).
    observer: Arc<std::sync::OnceLock<SharedObserver>>,
}

/// Keys of idempotency claims in the batch being written.
type UnsyncedClaims = Arc<std::sync::Mutex<std::collections::HashSet<Vec<u8>>>>;

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        // sled's file lock does not stop a second open in the same process:
        // keep our own register, released when the committer has closed it.
        std::fs::create_dir_all(dir).map_err(io)?;
        let key = dir.canonicalize().map_err(io)?;
        if !open_stores().insert(key.clone()) {
            return Err(StoreError::Locked {
                path: dir.display().to_string(),
            });
        }
        let opened = Self::open_registered(dir, options);
        if opened.is_err() {
            open_stores().remove(&key);
        }
        opened.map(|mut s| {
            s.path = key;
            s
        })
    }

    fn open_registered(dir: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_capacity)
            .mode(sled::Mode::HighThroughput)
            // Only the committer flushes: a batch whose flush failed must
            // not reach the disk later behind its callers' backs.
            .flush_every_ms(None)
            .open()
            .map_err(|e| match &e {
                sled::Error::Io(io) if io.to_string().contains("lock") => StoreError::Locked {
                    path: dir.display().to_string(),
                },
                _ => io(e),
            })?;
        let disk = match options.sync {
            SyncMode::Fsync => Some(DiskSync::open(dir).map_err(io)?),
            SyncMode::Flush => None,
        };
        let disk_syncs = Arc::new(AtomicU64::new(0));
        let blob_syncs = Arc::new(AtomicU64::new(0));
        let stopped = Arc::new(std::sync::OnceLock::new());
        let observer = Arc::new(std::sync::OnceLock::new());
        let (tx, rx) = mpsc::sync_channel(options.queue_depth);
        let unsynced_claims = UnsyncedClaims::default();
        let committer = Committer {
            db: db.clone(),
            unsynced_claims: unsynced_claims.clone(),
            max_batch: options.max_batch,
            disk,
            disk_syncs: disk_syncs.clone(),
            blob_syncs: blob_syncs.clone(),
            stopped: stopped.clone(),
            observer: observer.clone(),
        };
        let registered = dir.canonicalize().map_err(io)?;
        thread::Builder::new()
            .name("settle-committer".into())
            .spawn(move || {
                let stopped = committer.stopped.clone();
                // A panic in the writer (sled's, or ours) stops the store like
                // a failed write: waiters see the queue close, and every later
                // commit is refused.
                let ran =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| committer.run(rx)));
                if let Err(panic) = ran {
                    let reason = format!("the store's writer failed: {}", panic_text(&panic));
                    eprintln!(
                        "settle: fatal: {reason}; restart settle to recover from what is on disk."
                    );
                    let _ = stopped.set(reason.clone());
                    let _ = STOPPED.set(reason);
                }
                // Every handle is gone (the queue closed): close the database,
                // then let this process open it again.
                open_stores().remove(&registered);
            })
            .map_err(io)?;
        Ok(SledStore {
            db,
            path: dir.to_path_buf(),
            tx,
            disk_syncs,
            blob_syncs,
            unreadable: Arc::new(AtomicU64::new(0)),
            stopped,
            unsynced_claims,
            observer,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tells `observer` of every group commit from now on (its size and how
    /// long its write and flush took). Set once; a second call is ignored.
    pub fn observe(&self, observer: SharedObserver) {
        let _ = self.observer.set(observer);
    }

    /// How many group commits have been `fdatasync`ed since the store opened.
    pub fn disk_syncs(&self) -> u64 {
        self.disk_syncs.load(Ordering::Relaxed)
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// How many blob files (values sled keeps outside its log) have been
    /// `fdatasync`ed since the store opened.
    pub fn blob_syncs(&self) -> u64 {
        self.blob_syncs.load(Ordering::Relaxed)
    }

    /// Why the store stopped, if a write, flush or sync failed (fail-stop).
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.get().map(String::as_str)
    }

    fn check_running(&self) -> Result<(), StoreError> {
        match self.stopped() {
            Some(reason) => Err(StoreError::Stopped {
                reason: reason.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Records skipped by listings since the store opened.
    pub fn unreadable_records(&self) -> u64 {
        self.unreadable.load(Ordering::Relaxed)
    }

    fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            key: key_text(key),
            reason: e.to_string(),
        })
    }

    /// Decodes a record for a listing: one that cannot be read is reported,
    /// counted and skipped.
    fn decode_or_skip<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        bytes: &[u8],
        skipped: &mut Vec<Unreadable>,
    ) -> Option<T> {
        match serde_json::from_slice(bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                self.unreadable.fetch_add(1, Ordering::Relaxed);
                let unreadable = Unreadable {
                    run: key.get(1..17).and_then(RunId::from_slice),
                    key: key_text(key),
                    reason: e.to_string(),
                };
                tracing::warn!("{unreadable}; skipped");
                skipped.push(unreadable);
                None
            }
        }
    }

    fn summaries_under(&self, prefix: u8) -> Result<Scan<RunSummary>, StoreError> {
        self.check_running()?;
        let mut items = Vec::new();
        let mut unreadable = Vec::new();
        for item in self.db.scan_prefix([prefix]) {
            let (k, _) = item.map_err(io)?;
            let Some(run) = RunId::from_slice(&k[1..]) else {
                continue;
            };
            let key = keys::run_key(keys::RUN, run);
            if let Some(bytes) = self.db.get(key).map_err(io)?
                && let Some(s) = self.decode_or_skip(&key, &bytes, &mut unreadable)
            {
                items.push(s);
            }
        }
        Ok(Scan { items, unreadable })
    }
}

/// What a panic said, for messages.
fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// A key as `prefix:hex`, for messages.
fn key_text(key: &[u8]) -> String {
    match key.split_first() {
        Some((prefix, rest)) => format!("{}:{}", char::from(*prefix), hex::encode(rest)),
        None => String::new(),
    }
}

impl RunLog for SledStore {
    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        self.check_running()?;
        let (reply, answer) = oneshot::channel();
        let tx = self.tx.clone();
        // The queue is bounded: a full queue holds this caller back, on a
        // blocking thread so the async workers keep running.
        match tx.try_send((commit, reply)) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(item)) => {
                tokio::task::spawn_blocking(move || tx.send(item).map_err(|_| StoreError::Closed))
                    .await
                    .map_err(|_| StoreError::Closed)??;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn summary(&self, run: RunId) -> Result<Option<RunSummary>, StoreError> {
        self.summary_now(run)
    }

    async fn events(&self, run: RunId) -> Result<Vec<Event>, StoreError> {
        self.events_now(run)
    }

    async fn active_runs(&self) -> Result<Scan<RunSummary>, StoreError> {
        self.active_runs_now()
    }

    async fn find_idempotent(
        &self,
        flow: &str,
        key: &str,
        window_ms: u64,
        now_ms: u64,
    ) -> Result<Option<RunId>, StoreError> {
        self.find_idempotent_now(flow, key, window_ms, now_ms)
    }

    async fn due_rechecks(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u64, RunId)>, StoreError> {
        let start = keys::recheck(0, RunId(uuid::Uuid::nil()));
        let end = keys::recheck(now_ms, RunId(uuid::Uuid::from_bytes([0xff; 16])));
        let mut due = Vec::new();
        for item in self.db.range(start..=end) {
            if due.len() >= limit {
                break;
            }
            let (key, _) = item.map_err(io)?;
            match keys::parse_recheck(&key) {
                Some(entry) => due.push(entry),
                // Not ours to read: skip it, the rest still count.
                None => tracing::warn!("unreadable recheck index key {key:?}"),
            }
        }
        Ok(due)
    }

    async fn drop_recheck(&self, due_ms: u64, run: RunId) -> Result<(), StoreError> {
        self.db.remove(keys::recheck(due_ms, run)).map_err(io)?;
        Ok(())
    }

    async fn put_flow(&self, digest: &str, text: &str) -> Result<(), StoreError> {
        let key = keys::flow(digest);
        if !self.db.contains_key(&key).map_err(io)? {
            self.db.insert(key, text.as_bytes()).map_err(io)?;
        }
        Ok(())
    }

    async fn get_flow(&self, digest: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .db
            .get(keys::flow(digest))
            .map_err(io)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }
}

impl RunQueries for SledStore {
    async fn list_runs(
        &self,
        filter: &RunFilter,
        limit: usize,
    ) -> Result<Scan<RunSummary>, StoreError> {
        self.list_runs_now(filter, limit)
    }
}

impl Maintenance for SledStore {
    async fn reindex(&self) -> Result<ReindexReport, StoreError> {
        self.reindex_now()
    }
}

/// sled's reads are answered from its page cache, or from disk with a short
/// blocking read: the async methods above call these directly.
impl SledStore {
    /// The current summary of a run.
    pub fn summary_now(&self, run: RunId) -> Result<Option<RunSummary>, StoreError> {
        // After a failed write sled's memory may be ahead of the disk.
        self.check_running()?;
        let key = keys::run_key(keys::RUN, run);
        match self.db.get(key).map_err(io)? {
            Some(v) => Ok(Some(Self::decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// A run's whole log, in order.
    pub fn events_now(&self, run: RunId) -> Result<Vec<Event>, StoreError> {
        self.check_running()?;
        self.db
            .scan_prefix(keys::events_of(run))
            .map(|item| {
                let (k, v) = item.map_err(io)?;
                Self::decode(&k, &v)
            })
            .collect()
    }

    /// Newest runs first that pass `filter`; at most `limit`.
    pub fn list_runs_now(
        &self,
        filter: &RunFilter,
        limit: usize,
    ) -> Result<Scan<RunSummary>, StoreError> {
        self.check_running()?;
        let mut items = Vec::new();
        let mut unreadable = Vec::new();
        if limit == 0 {
            return Ok(Scan { items, unreadable });
        }
        // Run ids are UUID v7: reverse key order is newest first.
        let end = match filter.before {
            Some(before) => keys::run_key(keys::RUN, before).to_vec(),
            None => vec![keys::RUN + 1],
        };
        for item in self.db.range(vec![keys::RUN]..end).rev() {
            let (k, v) = item.map_err(io)?;
            let Some(s) = self.decode_or_skip::<RunSummary>(&k, &v, &mut unreadable) else {
                continue;
            };
            // UUID v7 order is acceptance order: nothing older can match.
            if filter.since_ms.is_some_and(|t| s.accepted_at_ms < t) {
                break;
            }
            if filter.matches(&s) {
                items.push(s);
                if items.len() >= limit {
                    break;
                }
            }
        }
        Ok(Scan { items, unreadable })
    }

    pub fn find_idempotent_now(
        &self,
        flow: &str,
        key: &str,
        window_ms: u64,
        now_ms: u64,
    ) -> Result<Option<RunId>, StoreError> {
        // After a failed write, sled's memory may hold a claim that never
        // reached the disk: answer nothing from it.
        self.check_running()?;
        let key = keys::idempotency(flow, key);
        // A claim whose batch is still being flushed is not durable yet: a
        // client told "this is your run" now could lose it in a crash. Say
        // nothing; the caller's own commit then meets the claim in the
        // committer, which answers only after that flush.
        if self
            .unsynced_claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key)
        {
            return Ok(None);
        }
        Ok(self
            .db
            .get(key)
            .map_err(io)?
            .and_then(|v| keys::parse_idempotency_value(&v))
            .filter(|(_, accepted)| accepted.saturating_add(window_ms) > now_ms)
            .map(|(run, _)| run))
    }

    /// Summaries of every run that is not terminal.
    pub fn active_runs_now(&self) -> Result<Scan<RunSummary>, StoreError> {
        self.summaries_under(keys::ACTIVE)
    }

    /// Rebuilds every index from the events alone (see [`Maintenance::reindex`]).
    pub fn reindex_now(&self) -> Result<ReindexReport, StoreError> {
        // Rebuild beside the old indexes, in memory: nothing is touched
        // until every event has been read.
        let mut report = ReindexReport::default();
        let mut rebuilt: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = Default::default();
        let mut unreadable = Vec::new();
        let mut current: Option<RunSummary> = None;
        let mut finish = |s: RunSummary, report: &mut ReindexReport| {
            report.runs += 1;
            report.active += u64::from(!s.state.is_terminal());
            report.rechecks += u64::from(s.recheck.is_some());
            let mut batch = Vec::new();
            index_entries(&s, |key, value| batch.push((key, value)));
            if let Some(key) = &s.idempotency_key {
                report.idempotency_keys += 1;
                batch.push((
                    keys::idempotency(&s.flow, key),
                    Some(keys::idempotency_value(s.run_id, s.accepted_at_ms).to_vec()),
                ));
            }
            for (key, value) in batch {
                if let Some(value) = value {
                    rebuilt.insert(key, value);
                }
            }
        };
        for item in self.db.scan_prefix([keys::EVENT]) {
            let (k, v) = item.map_err(io)?;
            let Some(event) = self.decode_or_skip::<Event>(&k, &v, &mut unreadable) else {
                continue;
            };
            report.events += 1;
            match current.as_mut() {
                Some(s) if s.run_id == event.run_id => s.apply(&event),
                _ => {
                    if let Some(done) = current.take() {
                        finish(done, &mut report);
                    }
                    current = RunSummary::from_first(&event);
                }
            }
        }
        if let Some(done) = current.take() {
            finish(done, &mut report);
        }
        if let Some(first) = unreadable.first() {
            return Err(StoreError::RebuildFailed {
                count: unreadable.len(),
                first: first.to_string(),
            });
        }
        // Swap: one atomic batch drops old entries the rebuild lacks and
        // writes every rebuilt one.
        let mut batch = sled::Batch::default();
        for prefix in keys::INDEXES {
            for item in self.db.scan_prefix([prefix]) {
                let (k, _) = item.map_err(io)?;
                if !rebuilt.contains_key(k.as_ref()) {
                    report.dropped += 1;
                    batch.remove(k);
                }
            }
        }
        for (k, v) in rebuilt {
            batch.insert(k, v);
        }
        self.db.apply_batch(batch).map_err(io)?;
        self.db.flush().map_err(io)?;
        Ok(report)
    }
}

impl KvStore for SledStore {
    fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db
            .get(keys::kv(plugin, key))
            .map_err(io)?
            .map(|v| v.to_vec()))
    }

    fn kv_apply(
        &self,
        plugin: &str,
        writes: &[(String, Option<Vec<u8>>)],
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (key, value) in writes {
            match value {
                Some(v) => batch.insert(keys::kv(plugin, key), v.as_slice()),
                None => batch.remove(keys::kv(plugin, key)),
            }
        }
        self.db.apply_batch(batch).map_err(io)?;
        Ok(())
    }

    fn kv_usage(&self, plugin: &str) -> Result<(u64, u64), StoreError> {
        let prefix = keys::kv(plugin, "");
        let (mut count, mut bytes) = (0u64, 0u64);
        for item in self.db.scan_prefix(&prefix) {
            let (k, v) = item.map_err(io)?;
            count = count.saturating_add(1);
            let key_bytes = k.len().saturating_sub(prefix.len()) as u64;
            bytes = bytes
                .saturating_add(key_bytes)
                .saturating_add(v.len() as u64);
        }
        Ok((count, bytes))
    }
}

/// The index entries a summary implies, as (key, value) with `None` for a
/// key to remove: its summary, and its place in the active set.
fn index_entries(summary: &RunSummary, mut put: impl FnMut(Vec<u8>, Option<Vec<u8>>)) {
    let run = summary.run_id;
    // A summary always encodes: it was folded from decoded events.
    let encoded = serde_json::to_vec(summary).unwrap_or_default();
    put(keys::run_key(keys::RUN, run).to_vec(), Some(encoded));
    let active = keys::run_key(keys::ACTIVE, run).to_vec();
    if summary.state.is_terminal() {
        put(active, None);
    } else {
        put(active, Some(Vec::new()));
    }
    // The entry of an earlier due time is left behind: the reader drops
    // it once it sees the summary no longer names it.
    if let Some(recheck) = summary.recheck {
        put(
            keys::recheck(recheck.due_ms, run).to_vec(),
            Some(Vec::new()),
        );
    }
}

/// Exit code of a process whose store stopped after a failed write.
pub const EXIT_STORE_FAILED: u8 = 74;

/// Set when any store of this process stopped, for the process's exit code.
static STOPPED: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Why a store of this process stopped after a failed write, if one did.
pub fn process_store_failure() -> Option<&'static str> {
    STOPPED.get().map(String::as_str)
}

/// The single writer: applies queued commits in groups, one flush per group.
struct Committer {
    db: sled::Db,
    unsynced_claims: UnsyncedClaims,
    max_batch: usize,
    disk: Option<DiskSync>,
    disk_syncs: Arc<AtomicU64>,
    blob_syncs: Arc<AtomicU64>,
    stopped: Arc<std::sync::OnceLock<String>>,
    observer: Arc<std::sync::OnceLock<SharedObserver>>,
}

impl Committer {
    fn run(mut self, rx: mpsc::Receiver<(Commit, Reply)>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(item) => group.push(item),
                    Err(_) => break,
                }
            }
            self.write_group(group);
        }
    }

    fn write_group(&mut self, group: Vec<(Commit, Reply)>) {
        if let Some(reason) = self.stopped.get() {
            for (_, reply) in group {
                let _ = reply.send(Err(StoreError::Stopped {
                    reason: reason.clone(),
                }));
            }
            return;
        }
        let mut batch = sled::Batch::default();
        // Claims made earlier in this group, not yet visible in the tree.
        let mut claimed: HashMap<Vec<u8>, RunId> = HashMap::new();
        let mut outcomes = Vec::with_capacity(group.len());
        let now = settle_types::now_ms();
        // Events written earlier in this group, not yet visible in the tree.
        let mut appended: std::collections::HashSet<(RunId, u64)> = Default::default();
        for (commit, _) in &group {
            let outcome = match self.check_append(commit, &mut appended) {
                Err(e) => Err(e),
                Ok(()) => match &commit.claim {
                    Some(claim) => self.check_claim(claim, commit.run_id, now, &mut claimed),
                    None => Ok(CommitOutcome::Committed),
                },
            };
            if let Ok(CommitOutcome::Committed) = outcome {
                stage(commit, &mut batch);
            }
            outcomes.push(outcome);
        }
        // Claims of this group are visible in sled's memory from the batch
        // on, but not durable until the sync: lookups must not answer them.
        let unsynced: Vec<Vec<u8>> = claimed.keys().cloned().collect();
        if !unsynced.is_empty() {
            self.unsynced_claims
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(unsynced.iter().cloned());
        }
        let started = std::time::Instant::now();
        // sled panics on some I/O failures (its directory gone, say): that
        // is a failed write too.
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.db
                .apply_batch(batch)
                .and_then(|()| self.db.flush().map(|_| ()))
                .and_then(|()| self.sync_to_disk())
                .map_err(|e| e.to_string())
        }))
        .unwrap_or_else(|panic| Err(format!("the store's writer failed: {}", panic_text(&panic))));
        let failed = written.err();
        if !unsynced.is_empty() {
            let mut set = self
                .unsynced_claims
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for key in &unsynced {
                set.remove(key);
            }
        }
        if failed.is_none()
            && let Some(observer) = self.observer.get()
        {
            let events = group.iter().map(|(c, _)| c.events.len()).sum();
            observer.group_committed(group.len(), events, started.elapsed());
        }
        // Stopped before anyone is answered, so no caller can read sled's
        // memory (ahead of the disk) after being told the write failed.
        if let Some(reason) = &failed {
            self.fail_stop(reason.clone());
        }
        for ((_, reply), outcome) in group.into_iter().zip(outcomes) {
            let answer = match &failed {
                None => outcome,
                Some(reason) => Err(StoreError::Stopped {
                    reason: reason.clone(),
                }),
            };
            let _ = reply.send(answer);
        }
    }

    /// A failed write, flush or sync stops the store for good: the batch
    /// may be half on disk and sled's memory ahead of it (an idempotency
    /// claim or active entry nobody was told about), and after a failed
    /// fsync a later one proves nothing. Every waiter was told; from now on
    /// every commit and idempotency lookup fails with [`StoreError::Stopped`],
    /// drivers stop, and the `settle` process exits with
    /// [`EXIT_STORE_FAILED`]. A restart recovers from what is on disk.
    fn fail_stop(&self, reason: String) {
        tracing::error!("store write failed, the store has stopped: {reason}");
        eprintln!(
            "settle: fatal: the store could not write to disk ({reason}); it has stopped. \
             Restart settle to recover from what is on disk."
        );
        let _ = self.stopped.set(reason.clone());
        let _ = STOPPED.set(reason);
    }

    fn sync_to_disk(&mut self) -> sled::Result<()> {
        if let Some(disk) = &mut self.disk {
            disk.sync()?;
            self.disk_syncs.fetch_add(1, Ordering::Relaxed);
            self.blob_syncs.store(disk.blob_syncs, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The log is append-only: a commit whose first event would overwrite
    /// one already written (two writers on one run) is refused.
    fn check_append(
        &self,
        commit: &Commit,
        appended: &mut std::collections::HashSet<(RunId, u64)>,
    ) -> Result<(), StoreError> {
        let Some(first) = commit.events.first() else {
            return Ok(());
        };
        let taken = appended.contains(&(first.run_id, first.seq))
            || self
                .db
                .contains_key(keys::event(first.run_id, first.seq))
                .map_err(io)?;
        if taken {
            return Err(StoreError::Conflict {
                run: first.run_id,
                seq: first.seq,
            });
        }
        for e in &commit.events {
            appended.insert((e.run_id, e.seq));
        }
        Ok(())
    }

    fn check_claim(
        &self,
        claim: &IdempotencyClaim,
        run: RunId,
        now: u64,
        claimed: &mut HashMap<Vec<u8>, RunId>,
    ) -> Result<CommitOutcome, StoreError> {
        let key = keys::idempotency(&claim.flow, &claim.key);
        if let Some(holder) = claimed.get(&key) {
            return Ok(CommitOutcome::Duplicate(*holder));
        }
        if let Some((holder, accepted)) = self
            .db
            .get(&key)
            .map_err(io)?
            .and_then(|v| keys::parse_idempotency_value(&v))
            && accepted.saturating_add(claim.window_ms) > now
        {
            return Ok(CommitOutcome::Duplicate(holder));
        }
        claimed.insert(key, run);
        Ok(CommitOutcome::Committed)
    }
}

/// Adds one commit's events and index entries to the group's batch.
fn stage(commit: &Commit, batch: &mut sled::Batch) {
    for event in &commit.events {
        let encoded = serde_json::to_vec(event).unwrap_or_default();
        batch.insert(&keys::event(event.run_id, event.seq)[..], encoded);
    }
    index_entries(&commit.summary, |key, value| match value {
        Some(v) => batch.insert(key, v),
        None => batch.remove(key),
    });
    if let Some(claim) = &commit.claim {
        batch.insert(
            keys::idempotency(&claim.flow, &claim.key),
            &keys::idempotency_value(commit.run_id, commit.summary.accepted_at_ms)[..],
        );
    }
}

/// sled's own error, as a store error.
fn io(e: impl Into<sled::Error>) -> StoreError {
    StoreError::io(e.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A claim in a batch that is not yet synced is not an answer: a client
    /// told "this is your run" must never lose it in a crash.
    #[test]
    fn a_claim_not_yet_synced_is_not_answered() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("s"), &StoreOptions::default()).unwrap();
        let run = RunId::new();
        let key = keys::idempotency("order", "k");
        // As the committer leaves it between applying a batch and its sync.
        store.unsynced_claims.lock().unwrap().insert(key.clone());
        store
            .db
            .insert(&key, &keys::idempotency_value(run, 1_000)[..])
            .unwrap();
        assert_eq!(
            store
                .find_idempotent_now("order", "k", 60_000, 2_000)
                .unwrap(),
            None
        );
        store.unsynced_claims.lock().unwrap().remove(&key);
        assert_eq!(
            store
                .find_idempotent_now("order", "k", 60_000, 2_000)
                .unwrap(),
            Some(run)
        );
    }
}
