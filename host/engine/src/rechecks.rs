//! The reconciler of settled runs: checks each one against downstream
//! systems again while its flow's `reconcile:` window lasts.
//!
//! Work comes from the store's time-ordered recheck index, read up to now
//! in batches ([`RunLog::due_rechecks`]): the cost is a range read plus the
//! checks that are due, never a scan of every settled run. A batch's checks
//! run concurrently, each holding one of the engine's run permits, so
//! checks and runs in flight share the same bound on plugin calls.

use crate::Engine;
use settle_types::executor::Executor;
use settle_types::store::{RunQueries, StoreError};
use settle_types::{EventKind, RunId, RunState, Source};
use std::time::Duration;

/// Most due checks taken from the index in one pass.
pub const BATCH: usize = 256;
/// How long the reconciler sleeps when nothing is due.
const IDLE: Duration = Duration::from_millis(50);
/// Most held runs whose objectives are watched from the start.
const HELD_WATCHED: usize = 100_000;
/// When a run whose flow cannot be read is asked about again.
const FLOW_UNREADABLE_RETRY_MS: u64 = 60_000;

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Index entries read.
    pub due: usize,
    /// Runs checked against downstream systems.
    pub checked: usize,
    /// Entries that no longer matched their run (it moved on): dropped.
    pub stale: usize,
    /// Runs being driven or acted on right now: left for the next pass.
    pub busy: usize,
}

impl<S: RunQueries, X: Executor> Engine<S, X> {
    /// Checks every settled run whose check is due now (at most `limit`),
    /// and waits for those checks to be recorded.
    pub async fn recheck_due(&self, limit: usize) -> Result<Pass, StoreError> {
        let due = self
            .inner
            .store
            .due_rechecks(self.now(), limit.max(1))
            .await?;
        let mut pass = Pass {
            due: due.len(),
            ..Pass::default()
        };
        let mut checks = tokio::task::JoinSet::new();
        for (due_ms, run) in due {
            if *self.inner.shutdown.borrow() {
                break;
            }
            if !self.claim(run) {
                // Driven or acted on right now: an entry its summary no
                // longer names is dropped here, so busy runs cannot keep
                // filling every batch.
                let stale = match self.inner.store.summary(run).await {
                    Ok(Some(s)) => s.recheck.is_none_or(|r| r.due_ms != due_ms),
                    Ok(None) => true,
                    Err(_) => false,
                };
                if stale {
                    let _ = self.inner.store.drop_recheck(due_ms, run).await;
                    pass.stale += 1;
                } else {
                    pass.busy += 1;
                }
                continue;
            }
            let engine = self.clone();
            checks.spawn(async move { engine.recheck_claimed(run, due_ms).await });
        }
        while let Some(joined) = checks.join_next().await {
            match joined {
                Ok(Ok(true)) => pass.checked += 1,
                Ok(Ok(false)) => pass.stale += 1,
                Ok(Err(e)) => tracing::error!("a check of a settled run failed: {e}"),
                // A panic in one check is that check's alone.
                Err(e) => tracing::error!("a check of a settled run panicked: {e}"),
            }
        }
        Ok(pass)
    }

    /// Watches every run held for an operator whose objective has not
    /// passed or been recorded yet (see [`Engine::watch_held_objective`]);
    /// run once at start, when no driver is there to have set a watch.
    /// Reads at most `limit` held runs; returns how many it watches.
    pub async fn watch_held_runs(&self, limit: usize) -> Result<usize, StoreError> {
        let filter = settle_types::store::RunFilter {
            states: vec![RunState::NeedsAttention],
            ..Default::default()
        };
        let held = self.inner.store.list_runs(&filter, limit).await?;
        let mut watched = 0;
        for summary in held.items {
            let Ok(flow) = self.flow_for(&summary).await else {
                continue;
            };
            if let Some(at) = crate::driver::breach_due(&flow, &summary) {
                self.watch_held_objective(summary.run_id, at);
                watched += 1;
            }
        }
        Ok(watched)
    }

    /// Records, at `at_ms`, that held run `run` missed its objective, if it
    /// is still held then and nothing recorded it meanwhile: no driver is
    /// there to notice the deadline pass. Stops at shutdown.
    pub(crate) fn watch_held_objective(&self, run: RunId, at_ms: u64) {
        let engine = self.clone();
        let mut stop = self.inner.shutdown.subscribe();
        // Subscribing marks a stop already under way as seen: ask.
        if *stop.borrow() {
            return;
        }
        tokio::spawn(async move {
            let wait = Duration::from_millis(at_ms.saturating_sub(engine.now()));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return,
            }
            // A driver letting go, or an operator acting, holds the run
            // for a moment: ask again a few times.
            for _ in 0..20 {
                if *stop.borrow() {
                    return;
                }
                match engine.record_missed_objective(run).await {
                    Ok(Some(_)) => return,
                    Ok(None) => tokio::time::sleep(Duration::from_millis(250)).await,
                    Err(e) => {
                        tracing::error!(run = %run, "cannot record the missed objective: {e}");
                        return;
                    }
                }
            }
        });
    }

    /// Records a held run's missed objective now, under a claim: `Some(true)`
    /// when recorded, `Some(false)` when there is nothing to record (it moved
    /// on, or it was recorded), `None` when the run is busy.
    async fn record_missed_objective(&self, run: RunId) -> Result<Option<bool>, StoreError> {
        if !self.claim(run) {
            return Ok(None);
        }
        let outcome = async {
            let Some(mut summary) = self.inner.store.summary(run).await? else {
                return Ok(false);
            };
            let Ok(flow) = self.flow_for(&summary).await else {
                return Ok(false);
            };
            let due = crate::driver::breach_due(&flow, &summary);
            if summary.state != RunState::NeedsAttention || due.is_none_or(|at| self.now() < at) {
                return Ok(false);
            }
            self.record_breach(&mut summary, &flow).await.map(|()| true)
        }
        .await;
        self.release(run);
        outcome.map(Some)
    }

    /// Runs the reconciler until the engine shuts down: a pass, then
    /// another at once while whole batches come back, else a short sleep.
    /// It first watches the objectives of the runs held when it starts.
    pub fn start_rechecks(&self) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        let mut stop = self.inner.shutdown.subscribe();
        tokio::spawn(async move {
            if let Err(e) = engine.watch_held_runs(HELD_WATCHED).await {
                tracing::error!("cannot read the held runs to watch their objectives: {e}");
            }
            loop {
                if *stop.borrow() {
                    break;
                }
                let idle = if engine.is_paused() {
                    true
                } else {
                    match engine.recheck_due(BATCH).await {
                        // Only a full batch that moved something is
                        // followed at once: entries that stay (busy runs,
                        // failed checks) never make the loop spin.
                        Ok(pass) => pass.due < BATCH || pass.checked + pass.stale == 0,
                        Err(e) => {
                            tracing::error!("the reconciler cannot read what is due: {e}");
                            true
                        }
                    }
                };
                if idle {
                    tokio::select! {
                        _ = tokio::time::sleep(IDLE) => {}
                        _ = stop.changed() => break,
                    }
                }
            }
        })
    }

    /// One check of a run this task has claimed; releases it, or hands it
    /// to a driver when the check set more in motion (undoing a drift).
    /// False when the index entry was stale.
    async fn recheck_claimed(&self, run: RunId, due_ms: u64) -> Result<bool, StoreError> {
        // A check calls plugins: it holds a run permit like any attempt.
        let outcome = match self.inner.permits.acquire().await {
            Ok(_permit) => self.recheck_one(run, due_ms).await,
            Err(_) => Err(StoreError::Closed),
        };
        // Dropped only once the check is recorded (or the entry was stale):
        // after a failure the entry stays, and the next pass asks again.
        if outcome.is_ok() {
            let _ = self.inner.store.drop_recheck(due_ms, run).await;
        }
        match outcome {
            Ok(Some((summary, flow)))
                if !summary.state.is_terminal() && !*self.inner.shutdown.borrow() =>
            {
                self.spawn(summary, flow, false);
                Ok(true)
            }
            Ok(checked) => {
                self.release(run);
                Ok(checked.is_some())
            }
            Err(e) => {
                self.release(run);
                Err(e)
            }
        }
    }

    async fn recheck_one(
        &self,
        run: RunId,
        due_ms: u64,
    ) -> Result<Option<(settle_types::RunSummary, std::sync::Arc<settle_flow::Flow>)>, StoreError>
    {
        let Some(mut summary) = self.inner.store.summary(run).await? else {
            return Ok(None);
        };
        let Some(recheck) = summary.recheck.filter(|r| r.due_ms == due_ms) else {
            return Ok(None);
        };
        if summary.state != RunState::Settled {
            return Ok(None);
        }
        let flow = match self.flow_for(&summary).await {
            Ok(flow) => flow,
            Err(why) => {
                // Whatever the cause (a store that did not answer, a flow
                // that does not parse), the run is asked about again later,
                // never given up on.
                tracing::warn!(run = %run, "cannot check the run, its flow cannot be read: {why}");
                let later = EventKind::RecheckScheduled {
                    not_before_ms: self.now().saturating_add(FLOW_UNREADABLE_RETRY_MS),
                    attempt: recheck.attempt,
                };
                self.record(
                    &mut summary,
                    vec![(later, None, Source::host())],
                    self.now(),
                )
                .await?;
                return Ok(None);
            }
        };
        self.recheck(&mut summary, &flow, recheck.attempt).await?;
        Ok(Some((summary, flow)))
    }
}
