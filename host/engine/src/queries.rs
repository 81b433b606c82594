//! Reads for people and programs: the one place that turns stored
//! summaries and live knowledge into [`RunStatus`], pages and event logs.
//! The HTTP API and the CLI both read through [`Queries`], so a status
//! looks the same wherever it is read.

use crate::expectations::{Expectation, Expectations};
use crate::status::{Progress, RunStatus};
use settle_types::store::{RunFilter, RunQueries, StoreError, Unreadable};
use settle_types::{Event, RunId, RunState, RunSummary, Stage};
use std::sync::Arc;

/// Most runs one page may hold.
pub const MAX_PAGE: usize = 500;

/// What a process driving runs knows that the store does not yet: whether
/// an attempt is running now, and its last progress report.
pub trait LiveView: Send + Sync + 'static {
    fn live(&self, run: RunId) -> Option<(bool, Option<Progress>)>;
    /// How long runs usually take, as the engine keeps it.
    fn expectations(&self) -> Arc<Expectations>;
}

/// Which runs a listing wants, as clients ask for them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunListing {
    pub states: Vec<RunState>,
    pub stage: Option<Stage>,
    pub flow: Option<String>,
    pub since_ms: Option<u64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<RunId>,
    pub limit: usize,
}

/// Logs of settled runs read back per flow for its steps' usual times.
const STEP_HISTORY_READ: usize = 100;

/// One page of runs, newest first.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunPage {
    pub runs: Vec<RunStatus>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<RunId>,
    /// Records that could not be read and were skipped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<Unreadable>,
}

/// Reads over a store, with what a live engine knows when there is one.
pub struct Queries<S> {
    store: S,
    live: Option<Arc<dyn LiveView>>,
    expectations: Arc<Expectations>,
}

impl<S: Clone> Clone for Queries<S> {
    fn clone(&self) -> Self {
        Queries {
            store: self.store.clone(),
            live: self.live.clone(),
            expectations: self.expectations.clone(),
        }
    }
}

impl<S: RunQueries> Queries<S> {
    /// Reads over the store alone (no engine in this process).
    pub fn offline(store: S) -> Self {
        Queries {
            store,
            live: None,
            expectations: Arc::default(),
        }
    }

    /// Reads over the store, with what `live` knows of the runs it drives.
    pub fn with_live(store: S, live: Arc<dyn LiveView>) -> Self {
        Queries {
            store,
            expectations: live.expectations(),
            live: Some(live),
        }
    }

    async fn status_of(&self, summary: &settle_types::RunSummary) -> RunStatus {
        let (running, progress) = self
            .live
            .as_ref()
            .filter(|_| !summary.state.is_terminal())
            .and_then(|l| l.live(summary.run_id))
            .unwrap_or((false, None));
        let expectation = self.expectation(summary).await;
        RunStatus::new(summary, running, progress, expectation)
    }

    /// How long a run still moving usually takes; `None` once it stopped.
    async fn expectation(&self, summary: &settle_types::RunSummary) -> Option<Expectation> {
        // A restarted or re-applied run is measured against runs that
        // were not: no honest expectation can be given.
        if summary.state.is_terminal() || !summary.on_first_pass() {
            return None;
        }
        self.load_expectations(&summary.flow).await;
        let now = settle_types::now_ms();
        let elapsed = now.saturating_sub(summary.accepted_at_ms);
        let mut expectation = self.expectations.expect(&summary.flow, elapsed);
        if let settle_types::Next::Step { index, .. } = summary.next
            && let (Some(step), Some(since)) = (
                summary.steps.get(index as usize),
                summary.step_started_at_ms,
            )
        {
            expectation.step =
                self.expectations
                    .expect_step(&summary.flow, step, now.saturating_sub(since));
        }
        Some(expectation)
    }

    /// How long runs of `flow` usually take, for a run accepted now.
    pub async fn usual_time(&self, flow: &str) -> Expectation {
        self.load_expectations(flow).await;
        self.expectations.expect(flow, 0)
    }

    /// Reads `flow`'s history back once: the newest runs that settled on
    /// their first pass. A store that cannot answer leaves it for later.
    async fn load_expectations(&self, flow: &str) {
        if !self.expectations.loaded(flow) {
            let filter = RunFilter {
                states: vec![RunState::Settled],
                flow: Some(flow.to_string()),
                ..RunFilter::default()
            };
            match self
                .store
                .list_runs(&filter, crate::expectations::WINDOW)
                .await
            {
                Ok(scan) => {
                    // As the engine counts them: settled on their first
                    // pass, not restarted, not by accepting a drift.
                    let counted: Vec<&settle_types::RunSummary> = scan
                        .items
                        .iter()
                        .filter(|s| {
                            s.on_first_pass()
                                && !s
                                    .verdicts
                                    .iter()
                                    .flatten()
                                    .any(|v| matches!(v, settle_types::Verdict::Drifted(_)))
                        })
                        .collect();
                    self.expectations.load(
                        flow,
                        counted.iter().filter_map(|s| {
                            Some(s.finished_at_ms?.saturating_sub(s.accepted_at_ms))
                        }),
                    );
                    // Step times are in the logs: the newest runs' only,
                    // so reading them back stays cheap; the windows grow
                    // from there as runs settle.
                    let mut steps: std::collections::BTreeMap<String, Vec<u64>> =
                        Default::default();
                    for s in counted.iter().take(STEP_HISTORY_READ) {
                        let Ok(events) = self.store.events(s.run_id).await else {
                            continue;
                        };
                        for (step, ms) in crate::expectations::step_times(&s.steps, &events) {
                            steps.entry(step).or_default().push(ms);
                        }
                    }
                    self.expectations.load_steps(flow, steps);
                }
                Err(e) => tracing::warn!(flow = %flow, "cannot read past runs: {e}"),
            }
        }
    }

    /// Where a run stands.
    pub async fn status(&self, run: RunId) -> Result<Option<RunStatus>, StoreError> {
        match self.store.summary(run).await? {
            Some(s) => Ok(Some(self.status_of(&s).await)),
            None => Ok(None),
        }
    }

    /// A run's events, in order; empty for an unknown run.
    pub async fn events(&self, run: RunId) -> Result<Vec<Event>, StoreError> {
        self.store.events(run).await
    }

    /// The run holding idempotency key `key` of `flow`, whatever its window.
    pub async fn by_key(&self, flow: &str, key: &str) -> Result<Option<RunStatus>, StoreError> {
        match self.store.find_idempotent(flow, key, u64::MAX, 0).await? {
            Some(run) => self.status(run).await,
            None => Ok(None),
        }
    }

    /// One page of runs, newest first. A stage filter is applied to the
    /// statuses (a stage depends on the time), so a page may read past
    /// `limit` stored runs to fill itself; it stops after reading
    /// `limit * 20` of them and hands back a cursor.
    pub async fn list(&self, listing: &RunListing) -> Result<RunPage, StoreError> {
        let limit = listing.limit.clamp(1, MAX_PAGE);
        let mut filter = RunFilter {
            states: listing.states.clone(),
            flow: listing.flow.clone(),
            since_ms: listing.since_ms,
            before: listing.cursor,
        };
        let mut page = RunPage {
            runs: Vec::new(),
            next_cursor: None,
            unreadable: Vec::new(),
        };
        let mut budget = limit.saturating_mul(20);
        loop {
            let want = if listing.stage.is_some() {
                limit.min(budget)
            } else {
                limit + 1
            };
            let scan = self.store.list_runs(&filter, want).await?;
            page.unreadable.extend(scan.unreadable);
            let read = scan.items.len();
            budget = budget.saturating_sub(read);
            for summary in scan.items {
                filter.before = Some(summary.run_id);
                let status = self.status_of(&summary).await;
                if listing.stage.is_some_and(|st| st != status.stage) {
                    continue;
                }
                if page.runs.len() == limit {
                    // One more than asked for: there is a next page.
                    page.next_cursor = page.runs.last().map(|s| s.run_id);
                    return Ok(page);
                }
                page.runs.push(status);
            }
            if read < want {
                return Ok(page);
            }
            if page.runs.len() == limit || budget == 0 {
                page.next_cursor = filter.before;
                return Ok(page);
            }
        }
    }
}

/// What is known of one step of a run, from its events.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StepView {
    pub name: String,
    /// `pending`, `scheduled`, `completed`, `failed`, `compensating`,
    /// `compensated`, `compensation-failed`.
    pub state: &'static str,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// Whether an attempt may have had its effect without the host knowing.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub may_have_effect: bool,
    /// Which run of the step this is: 0 for the first, N after the Nth
    /// restart that re-ran it (what is shown is that run's alone).
    #[serde(skip_serializing_if = "settle_types::summary::is_zero")]
    pub generation: u32,
    pub timing: StepTiming,
}

/// Where a step's time went, milliseconds: waiting between attempts
/// (backoff), from due to answered minus the plugin's own time (queued for
/// a worker and committing), and inside the plugin. Tells an operator
/// whether Settle or the plugin is slow.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct StepTiming {
    pub backing_off_ms: u64,
    pub queued_and_committing_ms: u64,
    pub in_plugin_ms: u64,
}

/// Per-step views of a run, folded from its events.
pub fn step_views(steps: &[String], events: &[Event]) -> Vec<StepView> {
    use settle_types::EventKind as K;
    let mut views: Vec<StepView> = steps
        .iter()
        .map(|name| StepView {
            name: name.clone(),
            state: "pending",
            ..StepView::default()
        })
        .collect();
    // (scheduled at, due at) of the attempt in progress, per step.
    let mut due: Vec<Option<(u64, u64)>> = vec![None; steps.len()];
    for e in events {
        if let &K::RunRestarted {
            from_index,
            generation,
        } = &e.kind
        {
            // What the earlier run of these steps did is kept in the log,
            // not in their views.
            for (view, due) in views
                .iter_mut()
                .zip(due.iter_mut())
                .skip(from_index as usize)
            {
                *view = StepView {
                    name: std::mem::take(&mut view.name),
                    state: "pending",
                    generation,
                    ..StepView::default()
                };
                *due = None;
            }
            continue;
        }
        let (index, at) = match &e.kind {
            K::StepScheduled { index, .. }
            | K::StepCompleted { index, .. }
            | K::StepSkipped { index, .. }
            | K::StepFailed { index, .. }
            | K::CompensationScheduled { index, .. }
            | K::CompensationCompleted { index, .. }
            | K::CompensationFailed { index, .. } => (*index as usize, e.at_ms),
            _ => continue,
        };
        let Some(view) = views.get_mut(index) else {
            continue;
        };
        let finish = |view: &mut StepView, due: Option<(u64, u64)>, plugin_ms: u64| {
            if let Some((scheduled, due_at)) = due {
                view.timing.backing_off_ms = view
                    .timing
                    .backing_off_ms
                    .saturating_add(due_at.saturating_sub(scheduled));
                let busy = at.saturating_sub(due_at.max(scheduled));
                view.timing.in_plugin_ms = view.timing.in_plugin_ms.saturating_add(plugin_ms);
                view.timing.queued_and_committing_ms = view
                    .timing
                    .queued_and_committing_ms
                    .saturating_add(busy.saturating_sub(plugin_ms));
            }
        };
        match &e.kind {
            K::StepScheduled { not_before_ms, .. } => {
                view.state = "scheduled";
                due[index] = Some((at, *not_before_ms));
            }
            K::CompensationScheduled { not_before_ms, .. } => {
                view.state = "compensating";
                due[index] = Some((at, *not_before_ms));
            }
            K::StepCompleted {
                output,
                duration_ms,
                ..
            } => {
                view.state = "completed";
                view.attempts = view.attempts.saturating_add(1);
                view.output = Some(output.clone());
                finish(view, due[index].take(), *duration_ms);
            }
            K::StepSkipped { .. } => {
                view.state = "skipped";
                due[index] = None;
            }
            K::StepFailed {
                failure,
                may_have_effect,
                duration_ms,
                ..
            } => {
                view.state = "failed";
                view.attempts = view.attempts.saturating_add(1);
                view.last_failure = Some(failure.message.clone());
                view.may_have_effect |= *may_have_effect;
                finish(view, due[index].take(), duration_ms.unwrap_or(0));
            }
            K::CompensationCompleted { duration_ms, .. } => {
                view.state = "compensated";
                finish(view, due[index].take(), *duration_ms);
            }
            K::CompensationFailed { failure, .. } => {
                view.state = "compensation-failed";
                view.last_failure = Some(failure.message.clone());
                finish(view, due[index].take(), 0);
            }
            _ => {}
        }
    }
    views
}

impl<S: RunQueries> Queries<S> {
    /// Runs that may still be driven (not finished, or held for an
    /// operator), of `flow` when given.
    async fn unfinished(&self, flow: Option<&str>) -> Result<Vec<RunSummary>, StoreError> {
        let active = self.store.active_runs().await?;
        let held = self
            .store
            .list_runs(
                &RunFilter {
                    states: vec![RunState::NeedsAttention],
                    flow: flow.map(str::to_string),
                    ..RunFilter::default()
                },
                usize::MAX,
            )
            .await?;
        Ok(active
            .items
            .into_iter()
            .chain(held.items)
            .filter(|s| flow.is_none_or(|f| s.flow == f))
            .collect())
    }

    /// How many unfinished runs (moving or held) call plugin `name`: what
    /// removing it would strand.
    pub async fn unfinished_using_plugin(&self, name: &str) -> Result<usize, StoreError> {
        Ok(self
            .unfinished(None)
            .await?
            .iter()
            .filter(|s| s.plugins.contains_key(name))
            .count())
    }

    /// Runs of `flow` that may still be driven, by flow version.
    pub async fn unfinished_by_version(
        &self,
        flow: &str,
    ) -> Result<std::collections::BTreeMap<String, usize>, StoreError> {
        let mut counts = std::collections::BTreeMap::new();
        for s in self.unfinished(Some(flow)).await? {
            *counts.entry(s.flow_version.clone()).or_insert(0) += 1;
        }
        Ok(counts)
    }
}

/// How a flow meets its objective, from its recent runs.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ObjectiveReport {
    pub settled_within_ms: u64,
    /// The share of runs that should settle in time, 0–1.
    pub target: f64,
    pub window_ms: u64,
    /// Runs accepted in the window that settled in time.
    pub met: usize,
    /// Runs accepted in the window that did not: ended otherwise, settled
    /// late, or still moving past the time.
    pub missed: usize,
    /// Runs still moving within their time: not counted yet.
    pub pending: usize,
    /// `met / (met + missed)`; absent before any run counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attainment: Option<f64>,
    /// Share of the error budget (`1 - target` of the runs) left over the
    /// window; negative once spent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_left: Option<f64>,
    /// How fast the last hour spent the budget: 1.0 spends exactly the
    /// budget over the window; 14.4 spends a 30-day budget in two days
    /// (the SRE workbook's fast-burn threshold).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burn_rate_1h: Option<f64>,
    /// Runs read for this (at most [`OBJECTIVE_SAMPLE`]).
    pub runs_read: usize,
}

/// Most runs one objective report reads.
pub const OBJECTIVE_SAMPLE: usize = 10_000;

/// Whether `summary` met `within_ms`, missed it, or cannot tell yet.
fn verdict_on_time(
    summary: &settle_types::RunSummary,
    within_ms: u64,
    now_ms: u64,
) -> Option<bool> {
    let deadline = summary.accepted_at_ms.saturating_add(within_ms);
    if let Some(first) = summary.first_settled_at_ms {
        return Some(!summary.breached && first <= deadline);
    }
    match summary.state {
        RunState::Settled if !summary.breached => {
            Some(summary.finished_at_ms.is_some_and(|f| f <= deadline))
        }
        RunState::Settled => Some(false),
        _ if summary.breached || now_ms > deadline => Some(false),
        s if s.is_terminal() && s != RunState::NeedsAttention => Some(false),
        _ => None,
    }
}

impl<S: RunQueries> Queries<S> {
    /// The objective of `flow` and how its recent runs meet it.
    pub async fn objective(
        &self,
        flow: &settle_flow::Flow,
    ) -> Result<Option<ObjectiveReport>, StoreError> {
        let Some(objective) = flow.objective else {
            return Ok(None);
        };
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (within, window) = (ms(objective.settled_within), ms(objective.window));
        let now = settle_types::now_ms();
        let runs = self
            .store
            .list_runs(
                &RunFilter {
                    flow: Some(flow.name.clone()),
                    since_ms: Some(now.saturating_sub(window)),
                    ..RunFilter::default()
                },
                OBJECTIVE_SAMPLE,
            )
            .await?
            .items;
        let hour_ago = now.saturating_sub(3_600_000);
        let (mut met, mut missed, mut pending) = (0usize, 0usize, 0usize);
        let (mut hour_met, mut hour_missed) = (0usize, 0usize);
        for run in &runs {
            match verdict_on_time(run, within, now) {
                Some(true) => met += 1,
                Some(false) => missed += 1,
                None => pending += 1,
            }
            if run.accepted_at_ms >= hour_ago {
                match verdict_on_time(run, within, now) {
                    Some(true) => hour_met += 1,
                    Some(false) => hour_missed += 1,
                    None => {}
                }
            }
        }
        let budget = (1.0 - objective.target).max(f64::EPSILON);
        let share = |missed: usize, total: usize| (total > 0).then(|| missed as f64 / total as f64);
        let miss_rate = share(missed, met + missed);
        Ok(Some(ObjectiveReport {
            settled_within_ms: within,
            target: objective.target,
            window_ms: window,
            met,
            missed,
            pending,
            attainment: miss_rate.map(|m| 1.0 - m),
            budget_left: miss_rate.map(|m| 1.0 - m / budget),
            burn_rate_1h: share(hour_missed, hour_met + hour_missed).map(|m| m / budget),
            runs_read: runs.len(),
        }))
    }
}
