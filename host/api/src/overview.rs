//! `GET /v1/overview`: what the dashboard shows at a glance, in one bounded
//! read. Counts, rates and latencies are over the [`WINDOW`] most recent
//! runs; per-step times over the event logs of the [`SAMPLE`] most recent
//! finished ones; held runs and runs with reports are listed in full up to
//! [`MAX_LISTED`]. Nothing here scans the whole store.

use crate::Shared;
use crate::problem::Problem;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use settle_engine::queries::{RunListing, step_views};
use settle_engine::status::RunStatus;
use settle_types::executor::Executor;
use settle_types::store::RunQueries;
use settle_types::{EventKind, RunState, Stage};
use std::collections::BTreeMap;

/// Most recent runs counted.
pub const WINDOW: usize = 500;
/// Most recent finished runs whose event logs are read for step times.
pub const SAMPLE: usize = 50;
/// Most held or reported runs listed.
pub const MAX_LISTED: usize = 100;

/// p50 and p90 of some milliseconds, by nearest rank.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Latency {
    pub n: usize,
    pub p50_ms: u64,
    pub p90_ms: u64,
}

impl Latency {
    fn of(mut values: Vec<u64>) -> Self {
        values.sort_unstable();
        let rank = |p: usize| {
            let i = (values.len() * p).div_ceil(100).saturating_sub(1);
            values.get(i).copied().unwrap_or(0)
        };
        Latency {
            n: values.len(),
            p50_ms: rank(50),
            p90_ms: rank(90),
        }
    }
}

/// One step of a flow over the sample.
#[derive(Debug, Default, Serialize)]
pub struct StepStats {
    pub step: String,
    /// From its first schedule to its last answer, all attempts.
    pub latency: Latency,
    /// Mean time per run: waiting between attempts, queued and committing,
    /// inside the plugin (see `steps[].timing` of `GET /v1/runs/{id}`).
    pub mean_backing_off_ms: u64,
    pub mean_queued_and_committing_ms: u64,
    pub mean_in_plugin_ms: u64,
    pub attempts: u64,
    pub failed_attempts: u64,
}

/// One flow over the window.
#[derive(Debug, Default, Serialize)]
pub struct FlowStats {
    pub flow: String,
    pub runs: usize,
    pub by_state: BTreeMap<&'static str, usize>,
    /// Finished runs: accepted to finished.
    pub latency: Latency,
    /// Share of runs that came to a stop (finished, or held for an operator)
    /// without completing: compensated, held, cancelled.
    pub failure_rate: f64,
    /// Share of sampled runs in which some attempt failed and was retried.
    pub retry_rate: f64,
    pub sampled: usize,
    pub steps: Vec<StepStats>,
}

/// A step of a flow: (flow, index, step name).
type StepKey = (String, u32, String);

/// Totals of one step over the sampled runs.
#[derive(Default)]
struct StepSums {
    latencies: Vec<u64>,
    runs: u64,
    backing_off_ms: u64,
    queued_and_committing_ms: u64,
    in_plugin_ms: u64,
    attempts: u64,
    failed_attempts: u64,
}

/// `GET /v1/overview`.
/// `GET /v1/alerts`: the host's recent alerts, newest first.
pub async fn alerts<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
) -> Response {
    let alerts = api.alerts.as_ref().map_or(json!([]), |list| list());
    Json(json!({ "alerts": alerts })).into_response()
}

/// `GET /v1/breakers`: every failure domain's guards: circuit breakers,
/// retry budgets and bulkheads.
pub async fn breakers<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
) -> Response {
    Json(api.engine.domains()).into_response()
}

pub async fn overview<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
) -> Result<Response, Problem> {
    let recent = api
        .queries
        .list(&RunListing {
            limit: WINDOW,
            ..RunListing::default()
        })
        .await?;
    let held = api
        .queries
        .list(&RunListing {
            states: vec![RunState::NeedsAttention],
            limit: MAX_LISTED,
            ..RunListing::default()
        })
        .await?;

    let mut by_state: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut by_stage: BTreeMap<&'static str, usize> = BTreeMap::new();
    // Per flow: its stats, the latencies of its finished runs, and how many
    // of its runs are terminal (finished, or stopped for an operator).
    let mut flows: BTreeMap<String, (FlowStats, Vec<u64>, usize)> = BTreeMap::new();
    for run in &recent.runs {
        *by_state.entry(run.state.as_str()).or_default() += 1;
        *by_stage.entry(stage_name(run.stage)).or_default() += 1;
        let (stats, latencies, terminal) = flows.entry(flow_name(run).to_string()).or_default();
        stats.runs += 1;
        *stats.by_state.entry(run.state.as_str()).or_default() += 1;
        if run.state.is_terminal() {
            *terminal += 1;
            if let Some(done) = run.finished_at_ms {
                latencies.push(done.saturating_sub(run.accepted_at_ms));
            }
        }
    }

    // Step times and retries from the event logs of the newest finished runs.
    let mut steps: BTreeMap<StepKey, StepSums> = BTreeMap::new();
    let mut retried: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let sample = recent
        .runs
        .iter()
        .filter(|r| r.stage == Stage::Done)
        .take(SAMPLE);
    for run in sample {
        let events = api.queries.events(run.run_id).await?;
        let Some(names) = events.iter().find_map(|e| match &e.kind {
            EventKind::RunAccepted { steps, .. } => Some(steps.clone()),
            _ => None,
        }) else {
            continue;
        };
        let flow = flow_name(run).to_string();
        let any_retry = events.iter().any(|e| {
            matches!(
                &e.kind,
                EventKind::StepFailed {
                    retry_at_ms: Some(_),
                    ..
                } | EventKind::CompensationFailed {
                    retry_at_ms: Some(_),
                    ..
                }
            )
        });
        let counted = retried.entry(flow.clone()).or_default();
        counted.0 += 1;
        counted.1 += usize::from(any_retry);
        let mut first_scheduled: BTreeMap<u32, u64> = BTreeMap::new();
        let mut last_answer: BTreeMap<u32, u64> = BTreeMap::new();
        let mut failed: BTreeMap<u32, u64> = BTreeMap::new();
        for e in &events {
            match &e.kind {
                EventKind::StepScheduled { index, .. } => {
                    first_scheduled.entry(*index).or_insert(e.at_ms);
                }
                EventKind::StepCompleted { index, .. } => {
                    last_answer.insert(*index, e.at_ms);
                }
                EventKind::StepFailed { index, .. } => {
                    last_answer.insert(*index, e.at_ms);
                    *failed.entry(*index).or_default() += 1;
                }
                _ => {}
            }
        }
        for (i, view) in step_views(&names, &events).into_iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            let (Some(start), Some(end)) = (first_scheduled.get(&index), last_answer.get(&index))
            else {
                continue;
            };
            let sums = steps
                .entry((flow.clone(), index, view.name.clone()))
                .or_default();
            sums.latencies.push(end.saturating_sub(*start));
            sums.runs += 1;
            sums.backing_off_ms += view.timing.backing_off_ms;
            sums.queued_and_committing_ms += view.timing.queued_and_committing_ms;
            sums.in_plugin_ms += view.timing.in_plugin_ms;
            sums.attempts += u64::from(view.attempts);
            sums.failed_attempts += failed.get(&index).copied().unwrap_or(0);
        }
    }

    let mut flow_list = Vec::new();
    for (name, (mut stats, latencies, terminal)) in flows {
        stats.flow = name.clone();
        let not_completed = ["compensated", "needs-attention", "cancelled"]
            .iter()
            .map(|s| stats.by_state.get(s).copied().unwrap_or(0))
            .sum::<usize>();
        stats.failure_rate = ratio(not_completed, terminal);
        stats.latency = Latency::of(latencies);
        let (sampled, with_retry) = retried.get(&name).copied().unwrap_or((0, 0));
        stats.sampled = sampled;
        stats.retry_rate = ratio(with_retry, sampled);
        stats.steps = steps
            .iter()
            .filter(|((flow, _, _), _)| *flow == name)
            .map(|((_, _, step), s)| {
                let runs = s.runs.max(1);
                StepStats {
                    step: step.clone(),
                    latency: Latency::of(s.latencies.clone()),
                    mean_backing_off_ms: s.backing_off_ms / runs,
                    mean_queued_and_committing_ms: s.queued_and_committing_ms / runs,
                    mean_in_plugin_ms: s.in_plugin_ms / runs,
                    attempts: s.attempts,
                    failed_attempts: s.failed_attempts,
                }
            })
            .collect();
        flow_list.push(stats);
    }

    let reported: Vec<&RunStatus> = recent
        .runs
        .iter()
        .filter(|r| r.reports > 0)
        .take(MAX_LISTED)
        .collect();
    Ok(Json(json!({
        "window": {
            "runs": recent.runs.len(),
            "limit": WINDOW,
            "complete": recent.next_cursor.is_none(),
            "sampled_for_steps": SAMPLE,
        },
        "by_state": by_state,
        "by_stage": by_stage,
        "in_flight": api.engine.in_flight(),
        "domains": api.engine.domains(),
        "alerts": api.alerts.as_ref().map_or(json!([]), |list| list()),
        "flows": flow_list,
        "held": held.runs,
        "held_complete": held.next_cursor.is_none(),
        "reported": reported,
    }))
    .into_response())
}

fn flow_name(run: &RunStatus) -> &str {
    run.flow
        .rsplit_once('@')
        .map_or(run.flow.as_str(), |(name, _)| name)
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Accepted => "accepted",
        Stage::Running => "running",
        Stage::Waiting => "waiting",
        Stage::Done => "done",
    }
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::Latency;

    #[test]
    fn percentiles_are_nearest_rank() {
        let l = Latency::of((1..=10).rev().map(|n| n * 100).collect());
        assert_eq!((l.n, l.p50_ms, l.p90_ms), (10, 500, 900));
        let one = Latency::of(vec![42]);
        assert_eq!((one.p50_ms, one.p90_ms), (42, 42));
        let none = Latency::of(Vec::new());
        assert_eq!((none.n, none.p50_ms, none.p90_ms), (0, 0, 0));
    }
}
