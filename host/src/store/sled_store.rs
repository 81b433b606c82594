//! The embedded store on sled, with group commit.
//!
//! Workers never flush. Each commit goes to a single committer thread, which
//! takes everything queued, writes it as one atomic sled batch, flushes once,
//! and only then answers every waiting worker. With one run in flight a commit
//! costs one flush; under load the batches grow by themselves. The queue is
//! bounded, which gives backpressure for free.
//!
//! Durability: when [`Store::commit`] returns, the batch has been written,
//! `flush`ed and (with [`SyncMode::Fsync`], the default) `fdatasync`ed, see
//! [`super::disk_sync`]. With [`SyncMode::Flush`] only sled's flush is waited
//! for, which uses `sync_file_range` (sled issue #1452): safe against a crash
//! of the process (kill -9 included), not against power loss.

use super::disk_sync::{DiskSync, SyncMode};
use super::keys;
use super::{Commit, CommitOutcome, IdempotencyClaim, ReindexReport, Store, StoreError};
use crate::model::{Event, RunId, RunState, RunSummary};
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
}

impl SledStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Self, StoreError> {
        // sled's file lock does not stop a second open in the same process:
        // keep our own register, released when the committer has closed it.
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(sled::Error::Io(e)))?;
        let key = dir
            .canonicalize()
            .map_err(|e| StoreError::Io(sled::Error::Io(e)))?;
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
            .open()
            .map_err(|e| match &e {
                sled::Error::Io(io) if io.to_string().contains("lock") => StoreError::Locked {
                    path: dir.display().to_string(),
                },
                _ => StoreError::Io(e),
            })?;
        let disk = match options.sync {
            SyncMode::Fsync => {
                Some(DiskSync::open(dir).map_err(|e| StoreError::Io(sled::Error::Io(e)))?)
            }
            SyncMode::Flush => None,
        };
        let disk_syncs = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::sync_channel(options.queue_depth);
        let committer = Committer {
            db: db.clone(),
            max_batch: options.max_batch,
            disk,
            disk_syncs: disk_syncs.clone(),
        };
        let registered = dir
            .canonicalize()
            .map_err(|e| StoreError::Io(sled::Error::Io(e)))?;
        thread::Builder::new()
            .name("settle-committer".into())
            .spawn(move || {
                committer.run(rx);
                // Every handle is gone (the queue closed): close the database,
                // then let this process open it again.
                open_stores().remove(&registered);
            })
            .map_err(|e| StoreError::Io(sled::Error::Io(e)))?;
        Ok(SledStore {
            db,
            path: dir.to_path_buf(),
            tx,
            disk_syncs,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many group commits have been `fdatasync`ed since the store opened.
    pub fn disk_syncs(&self) -> u64 {
        self.disk_syncs.load(Ordering::Relaxed)
    }

    /// Bytes the store takes on disk.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    fn decode<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            key: format!("{}:{}", char::from(key[0]), hex::encode(&key[1..])),
            reason: e.to_string(),
        })
    }

    fn summaries_under(&self, prefix: u8) -> Result<Vec<RunSummary>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix([prefix]) {
            let (k, _) = item?;
            let Some(run) = RunId::from_slice(&k[1..]) else {
                continue;
            };
            if let Some(s) = self.summary(run)? {
                out.push(s);
            }
        }
        Ok(out)
    }
}

impl Store for SledStore {
    async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
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

    fn summary(&self, run: RunId) -> Result<Option<RunSummary>, StoreError> {
        let key = keys::run_key(keys::RUN, run);
        match self.db.get(key)? {
            Some(v) => Ok(Some(Self::decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    fn events(&self, run: RunId) -> Result<Vec<Event>, StoreError> {
        self.db
            .scan_prefix(keys::events_of(run))
            .map(|item| {
                let (k, v) = item?;
                Self::decode(&k, &v)
            })
            .collect()
    }

    fn active_runs(&self) -> Result<Vec<RunSummary>, StoreError> {
        self.summaries_under(keys::ACTIVE)
    }

    fn list_runs(
        &self,
        state: Option<RunState>,
        limit: usize,
    ) -> Result<Vec<RunSummary>, StoreError> {
        let mut out = Vec::new();
        // Run ids are UUID v7: reverse key order is newest first.
        for item in self.db.scan_prefix([keys::RUN]).rev() {
            let (k, v) = item?;
            let s: RunSummary = Self::decode(&k, &v)?;
            if state.is_none_or(|st| st == s.state) {
                out.push(s);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn due_timers(&self, until_ms: u64) -> Result<Vec<(u64, RunId)>, StoreError> {
        let start = keys::timer(0, RunId(uuid::Uuid::nil()));
        let end = keys::timer(until_ms.saturating_add(1), RunId(uuid::Uuid::nil()));
        let mut out = Vec::new();
        for item in self.db.range(start..end) {
            let (k, _) = item?;
            if let Some(t) = keys::parse_timer(&k) {
                out.push(t);
            }
        }
        Ok(out)
    }

    fn find_idempotent(
        &self,
        flow: &str,
        key: &str,
        window_ms: u64,
        now_ms: u64,
    ) -> Result<Option<RunId>, StoreError> {
        Ok(self
            .db
            .get(keys::idempotency(flow, key))?
            .and_then(|v| keys::parse_idempotency_value(&v))
            .filter(|(_, accepted)| accepted.saturating_add(window_ms) > now_ms)
            .map(|(run, _)| run))
    }

    fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(keys::kv(plugin, key))?.map(|v| v.to_vec()))
    }

    fn kv_set(&self, plugin: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.db.insert(keys::kv(plugin, key), value)?;
        Ok(())
    }

    fn kv_delete(&self, plugin: &str, key: &str) -> Result<(), StoreError> {
        self.db.remove(keys::kv(plugin, key))?;
        Ok(())
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
        self.db.apply_batch(batch)?;
        Ok(())
    }

    fn kv_usage(&self, plugin: &str) -> Result<(u64, u64), StoreError> {
        let prefix = keys::kv(plugin, "");
        let (mut count, mut bytes) = (0u64, 0u64);
        for item in self.db.scan_prefix(&prefix) {
            let (k, v) = item?;
            count = count.saturating_add(1);
            let key_bytes = k.len().saturating_sub(prefix.len()) as u64;
            bytes = bytes
                .saturating_add(key_bytes)
                .saturating_add(v.len() as u64);
        }
        Ok((count, bytes))
    }

    fn put_flow(&self, digest: &str, text: &str) -> Result<(), StoreError> {
        let key = keys::flow(digest);
        if !self.db.contains_key(&key)? {
            self.db.insert(key, text.as_bytes())?;
        }
        Ok(())
    }

    fn get_flow(&self, digest: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .db
            .get(keys::flow(digest))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    fn reindex(&self) -> Result<ReindexReport, StoreError> {
        let mut drop = sled::Batch::default();
        for prefix in keys::INDEXES {
            for item in self.db.scan_prefix([prefix]) {
                drop.remove(item?.0);
            }
        }
        self.db.apply_batch(drop)?;

        let mut report = ReindexReport::default();
        let mut batch = sled::Batch::default();
        let mut current: Option<RunSummary> = None;
        let finish = |s: RunSummary, batch: &mut sled::Batch, report: &mut ReindexReport| {
            report.runs += 1;
            let entries = index_entries(&s, None);
            report.active += u64::from(entries.active);
            report.timers += u64::from(entries.timer.is_some());
            entries.write(&s, batch);
            if let Some(key) = &s.idempotency_key {
                report.idempotency_keys += 1;
                batch.insert(
                    keys::idempotency(&s.flow, key),
                    &keys::idempotency_value(s.run_id, s.accepted_at_ms)[..],
                );
            }
        };
        for item in self.db.scan_prefix([keys::EVENT]) {
            let (k, v) = item?;
            let event: Event = Self::decode(&k, &v)?;
            report.events += 1;
            match current.as_mut() {
                Some(s) if s.run_id == event.run_id => s.apply(&event),
                _ => {
                    if let Some(done) = current.take() {
                        finish(done, &mut batch, &mut report);
                    }
                    current = RunSummary::from_first(&event);
                }
            }
        }
        if let Some(done) = current.take() {
            finish(done, &mut batch, &mut report);
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        Ok(report)
    }
}

/// The index entries a summary implies.
struct IndexEntries {
    active: bool,
    timer: Option<u64>,
    stale_timer: Option<u64>,
}

fn index_entries(summary: &RunSummary, previous_due_ms: Option<u64>) -> IndexEntries {
    let timer = summary.next.due_ms();
    IndexEntries {
        active: !summary.state.is_terminal(),
        timer,
        stale_timer: previous_due_ms.filter(|&d| Some(d) != timer),
    }
}

impl IndexEntries {
    fn write(&self, summary: &RunSummary, batch: &mut sled::Batch) {
        let run = summary.run_id;
        let encoded = serde_json::to_vec(summary).unwrap_or_default();
        batch.insert(&keys::run_key(keys::RUN, run)[..], encoded);
        if self.active {
            batch.insert(&keys::run_key(keys::ACTIVE, run)[..], &[][..]);
        } else {
            batch.remove(&keys::run_key(keys::ACTIVE, run)[..]);
        }
        if let Some(stale) = self.stale_timer {
            batch.remove(&keys::timer(stale, run)[..]);
        }
        if let Some(due) = self.timer {
            batch.insert(&keys::timer(due, run)[..], &[][..]);
        }
    }
}

/// The single writer: applies queued commits in groups, one flush per group.
struct Committer {
    db: sled::Db,
    max_batch: usize,
    disk: Option<DiskSync>,
    disk_syncs: Arc<AtomicU64>,
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
        let mut batch = sled::Batch::default();
        // Claims made earlier in this group, not yet visible in the tree.
        let mut claimed: HashMap<Vec<u8>, RunId> = HashMap::new();
        let mut outcomes = Vec::with_capacity(group.len());
        let now = crate::model::now_ms();
        for (commit, _) in &group {
            let outcome = match &commit.claim {
                Some(claim) => self.check_claim(claim, commit.run_id, now, &mut claimed),
                None => Ok(CommitOutcome::Committed),
            };
            if let Ok(CommitOutcome::Committed) = outcome {
                stage(commit, &mut batch);
            }
            outcomes.push(outcome);
        }
        let written = self
            .db
            .apply_batch(batch)
            .and_then(|()| self.db.flush().map(|_| ()))
            .and_then(|()| self.sync_to_disk());
        for ((_, reply), outcome) in group.into_iter().zip(outcomes) {
            let answer = match &written {
                Ok(()) => outcome,
                Err(e) => Err(StoreError::Io(e.clone())),
            };
            let _ = reply.send(answer);
        }
    }

    fn sync_to_disk(&mut self) -> sled::Result<()> {
        if let Some(disk) = &mut self.disk {
            disk.sync()?;
            self.disk_syncs.fetch_add(1, Ordering::Relaxed);
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
            .get(&key)?
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
    index_entries(&commit.summary, commit.previous_due_ms).write(&commit.summary, batch);
    if let Some(claim) = &commit.claim {
        batch.insert(
            keys::idempotency(&claim.flow, &claim.key),
            &keys::idempotency_value(commit.run_id, commit.summary.accepted_at_ms)[..],
        );
    }
}
