//! Every metric the host exports on `GET /metrics`, in one place.
//!
//! [`Metrics`] implements [`Observer`]: the engine and the store call it
//! after each commit, call and group write, and it turns what they report
//! into Prometheus counters, histograms and gauges. The engine and the
//! store know nothing of Prometheus.
//!
//! Labels are bounded: `flow` is the flow's name (not its version), `step`
//! a step name of that flow, `action` one of `run`, `compensate`,
//! `reconcile`, `class` a failure class, `cause` a hold cause, `state` a
//! run state. Run ids never become labels.
//!
//! The hot path stays cheap: a labelled metric is found by hashing its
//! label values (no allocation once it exists), and an update is an atomic
//! add.
//!
//! ```
//! use settle_telemetry::metrics::Metrics;
//! let metrics = Metrics::new();
//! let text = metrics.render();
//! assert!(text.contains("# TYPE settle_runs gauge"));
//! ```

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use settle_types::executor::CallKind;
use settle_types::observe::Observer;
use settle_types::{Event, EventKind, FailureClass, RunState, RunSummary, Stage, Verdict};
use std::time::Duration;

/// The states a run waits or works in: the `settle_runs` gauge has one
/// series for each. Terminal runs are counted by
/// `settle_run_duration_seconds_count` instead.
pub const NON_TERMINAL: [RunState; 6] = [
    RunState::Accepted,
    RunState::Processing,
    RunState::Retrying,
    RunState::Compensating,
    RunState::PendingReconciliation,
    RunState::NeedsAttention,
];

/// Prometheus metrics of one host.
pub struct Metrics {
    registry: Registry,

    // Histograms.
    /// `settle_step_duration_seconds{flow,step,action}`: how long one plugin
    /// call of a step took (one attempt of its run, compensate or reconcile
    /// action), whatever it answered.
    pub step_duration: HistogramVec,
    /// `settle_run_duration_seconds{flow,state}`: from acceptance to the
    /// terminal state `state` (settled, compensated, drifted, cancelled).
    pub run_duration: HistogramVec,
    /// `settle_store_commit_seconds`: one group commit of the store (write,
    /// flush and sync of every commit queued at once).
    pub store_commit: prometheus::Histogram,
    /// `settle_store_commit_batch_size`: commits written by one group commit.
    pub store_batch: prometheus::Histogram,

    // Counters.
    /// `settle_runs_accepted_total{flow}`: runs accepted.
    pub runs_accepted: IntCounterVec,
    /// `settle_attempts_total{flow,step,action}`: attempts of an action of
    /// a step (plugin calls, and attempts whose input the host refused).
    pub attempts: IntCounterVec,
    /// `settle_failures_total{flow,step,action,class}`: failed attempts by
    /// failure class (as recorded: a refused grant makes it `host-setup`).
    pub failures: IntCounterVec,
    /// `settle_retries_total{flow,step,action}`: attempts scheduled after a
    /// failed one (attempt 2 and later).
    pub retries: IntCounterVec,
    /// `settle_compensations_total{flow,step}`: completed steps undone.
    pub compensations: IntCounterVec,
    /// `settle_holds_total{flow,cause}`: runs stopped for an operator.
    pub holds: IntCounterVec,
    /// `settle_idempotency_repeats_total{flow}`: submissions whose
    /// idempotency key named an existing run (nothing new started).
    pub idempotency_repeats: IntCounterVec,
    /// `settle_reports_total{flow}`: reports by people that what they see
    /// is not what they expected.
    pub reports: IntCounterVec,
    /// `settle_verdicts_total{flow,step,verdict}`: answers of downstream
    /// systems when a run was checked (`in-sync`, `drifted`, `unknown`),
    /// right after its steps and later in its `reconcile:` window.
    pub verdicts: IntCounterVec,
    /// `settle_drifts_total{flow}`: runs found drifted.
    pub drifts: IntCounterVec,
    /// `settle_operator_actions_total{flow,action}`: operators' commands
    /// applied (resume, retry, compensate, cancel, pause).
    pub operator_actions: IntCounterVec,
    /// `settle_store_events_total`: events written by the store.
    pub store_events: IntCounter,
    /// `settle_pool_waits_total`: plugin calls that waited for an instance slot.
    pub pool_waits: IntCounter,
    /// `settle_pool_exhausted_total`: plugin calls that waited for a slot in vain.
    pub pool_exhausted: IntCounter,
    /// `settle_plugin_log_lines_dropped_total`: plugin log lines over a
    /// call's budget, not written.
    pub log_lines_dropped: IntCounter,

    // Gauges.
    /// `settle_runs{state}`: runs in each non-terminal state now.
    pub runs: IntGaugeVec,
    /// `settle_pool_slots_in_use`: plugin calls running now (instance slots held).
    pub pool_slots_in_use: IntGauge,
    /// `settle_pool_slots`: instance slots in all (`runtime.max_concurrent_calls`).
    pub pool_slots: IntGauge,
    /// `settle_runs_driven`: runs this process is driving now.
    pub runs_driven: IntGauge,
    /// `settle_breaker_open{domain}`: 1 while the circuit breaker of a
    /// plugin is open or half-open, else 0.
    pub breaker_open: IntGaugeVec,
    /// `settle_breaker_transitions_total{domain,state}`: circuit breaker
    /// changes, by the state entered.
    pub breaker_transitions: IntCounterVec,
    /// `settle_deferred_attempts_total{flow,step}`: attempts that waited
    /// on a failure domain (an open breaker, a spent retry budget) instead
    /// of being made.
    pub deferred_attempts: IntCounterVec,
    /// `settle_retry_budget_retries{domain}`: retries in the budget's
    /// window now; `settle_retry_budget_allowed{domain}`: retries it allows.
    pub retry_budget_retries: IntGaugeVec,
    pub retry_budget_allowed: IntGaugeVec,
    /// `settle_bulkhead_in_flight{plugin}`: calls of the plugin in flight
    /// now; `settle_bulkhead_limit{plugin}`: the most allowed.
    pub bulkhead_in_flight: IntGaugeVec,
    pub bulkhead_limit: IntGaugeVec,
    /// `settle_alerts_total{rule}`: alerts raised, by rule.
    pub alerts: IntCounterVec,
    /// `settle_alerts_dropped_total`: alerts not delivered to the webhook
    /// because its queue was full (they are still listed and counted).
    pub alerts_dropped: IntCounter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Seconds, for latencies of plugin calls: 1 ms to ~65 s.
fn call_buckets() -> Vec<f64> {
    exponential(0.001, 2.0, 17)
}

fn exponential(start: f64, factor: f64, count: usize) -> Vec<f64> {
    prometheus::exponential_buckets(start, factor, count).unwrap_or_default()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let plain_counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
                .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("metric registered once");
            h
        };
        let plain_histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h =
                prometheus::Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                    .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("metric registered once");
            h
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let gauges = |name: &str, help: &str, label: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let retry_budget_retries = gauges(
            "settle_retry_budget_retries",
            "Retries in a retry budget's window now.",
            "domain",
        );
        let retry_budget_allowed = gauges(
            "settle_retry_budget_allowed",
            "Retries a retry budget allows in its window now.",
            "domain",
        );
        let bulkhead_in_flight = gauges(
            "settle_bulkhead_in_flight",
            "Calls of a plugin with a bulkhead in flight now.",
            "plugin",
        );
        let bulkhead_limit = gauges(
            "settle_bulkhead_limit",
            "Most calls of a plugin in flight at once (its bulkhead).",
            "plugin",
        );
        let breaker_open = IntGaugeVec::new(
            Opts::new(
                "settle_breaker_open",
                "1 while a plugin's circuit breaker is open or half-open.",
            ),
            &["domain"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(breaker_open.clone()))
            .expect("metric registered once");
        let runs = IntGaugeVec::new(
            Opts::new("settle_runs", "Runs in each non-terminal state now."),
            &["state"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(runs.clone()))
            .expect("metric registered once");
        // Every state has a series from the start, so a dashboard shows 0,
        // not "no data".
        for state in NON_TERMINAL {
            runs.with_label_values(&[state.as_str()]).set(0);
        }
        Metrics {
            step_duration: histogram(
                "settle_step_duration_seconds",
                "Duration of one plugin call of a step (one attempt of its run, compensate or reconcile action).",
                &["flow", "step", "action"],
                call_buckets(),
            ),
            run_duration: histogram(
                "settle_run_duration_seconds",
                "Time from a run's acceptance to its terminal state.",
                &["flow", "state"],
                // 10 ms to ~2.9 h.
                exponential(0.01, 2.0, 21),
            ),
            store_commit: plain_histogram(
                "settle_store_commit_seconds",
                "Duration of one group commit of the store (write, flush, sync).",
                // 0.1 ms to ~3.3 s.
                exponential(0.0001, 2.0, 16),
            ),
            store_batch: plain_histogram(
                "settle_store_commit_batch_size",
                "Commits written by one group commit.",
                exponential(1.0, 2.0, 12),
            ),
            runs_accepted: counter("settle_runs_accepted_total", "Runs accepted.", &["flow"]),
            attempts: counter(
                "settle_attempts_total",
                "Attempts of an action of a step.",
                &["flow", "step", "action"],
            ),
            failures: counter(
                "settle_failures_total",
                "Failed attempts, by failure class.",
                &["flow", "step", "action", "class"],
            ),
            retries: counter(
                "settle_retries_total",
                "Attempts scheduled after a failed one.",
                &["flow", "step", "action"],
            ),
            compensations: counter(
                "settle_compensations_total",
                "Completed steps undone.",
                &["flow", "step"],
            ),
            holds: counter(
                "settle_holds_total",
                "Runs stopped for an operator, by cause.",
                &["flow", "cause"],
            ),
            idempotency_repeats: counter(
                "settle_idempotency_repeats_total",
                "Submissions whose idempotency key named an existing run.",
                &["flow"],
            ),
            reports: counter(
                "settle_reports_total",
                "Reports by people that a run is not what they expected.",
                &["flow"],
            ),
            verdicts: counter(
                "settle_verdicts_total",
                "Answers of downstream systems when a run was checked.",
                &["flow", "step", "verdict"],
            ),
            drifts: counter(
                "settle_drifts_total",
                "Runs found drifted (downstream disagrees).",
                &["flow"],
            ),
            operator_actions: counter(
                "settle_operator_actions_total",
                "Operators' commands applied, by action.",
                &["flow", "action"],
            ),
            store_events: plain_counter(
                "settle_store_events_total",
                "Events written by the store.",
            ),
            pool_waits: plain_counter(
                "settle_pool_waits_total",
                "Plugin calls that waited for a free instance slot.",
            ),
            pool_exhausted: plain_counter(
                "settle_pool_exhausted_total",
                "Plugin calls that waited for an instance slot in vain.",
            ),
            log_lines_dropped: plain_counter(
                "settle_plugin_log_lines_dropped_total",
                "Plugin log lines over a call's budget, not written.",
            ),
            pool_slots_in_use: gauge(
                "settle_pool_slots_in_use",
                "Plugin calls running now (instance slots held).",
            ),
            pool_slots: gauge("settle_pool_slots", "Instance slots in all."),
            runs_driven: gauge("settle_runs_driven", "Runs this process is driving now."),
            breaker_open,
            breaker_transitions: counter(
                "settle_breaker_transitions_total",
                "Circuit breaker changes, by the state entered.",
                &["domain", "state"],
            ),
            deferred_attempts: counter(
                "settle_deferred_attempts_total",
                "Attempts that waited on an open circuit breaker or a spent retry budget instead of being made.",
                &["flow", "step"],
            ),
            retry_budget_retries,
            retry_budget_allowed,
            bulkhead_in_flight,
            bulkhead_limit,
            alerts: counter("settle_alerts_total", "Alerts raised, by rule.", &["rule"]),
            alerts_dropped: {
                let c = IntCounter::new(
                    "settle_alerts_dropped_total",
                    "Alerts not delivered to the webhook because its queue was full.",
                )
                .expect("valid metric");
                registry
                    .register(Box::new(c.clone()))
                    .expect("metric registered once");
                c
            },
            runs,
            registry,
        }
    }

    /// Sets the `settle_runs` gauge of `state` (at start, from the store).
    pub fn set_runs(&self, state: RunState, n: i64) {
        self.runs.with_label_values(&[state.as_str()]).set(n);
    }

    /// Brings a counter kept elsewhere (the runtime's) up to `total`.
    pub fn catch_up(counter: &IntCounter, total: u64) {
        counter.inc_by(total.saturating_sub(counter.get()));
    }

    /// Every metric, as Prometheus text (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            return format!("# cannot encode metrics: {e}\n");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    fn state_changed(&self, before: Option<RunState>, after: RunState) {
        if before == Some(after) {
            return;
        }
        if let Some(before) = before
            && !ended(before)
        {
            self.runs.with_label_values(&[before.as_str()]).dec();
        }
        if !ended(after) {
            self.runs.with_label_values(&[after.as_str()]).inc();
        }
    }
}

/// Whether a run in `state` is done for good (settled, compensated,
/// drifted, cancelled); a held run is not: an operator may move it on.
fn ended(state: RunState) -> bool {
    state.stage(false) == Stage::Done
}

fn step_of(event: &Event) -> &str {
    event.step.as_deref().unwrap_or("")
}

impl Observer for Metrics {
    fn committed(&self, before: Option<RunState>, events: &[Event], after: &RunSummary) {
        let flow = after.flow.as_str();
        for event in events {
            match &event.kind {
                EventKind::RunAccepted { .. } => {
                    self.runs_accepted.with_label_values(&[flow]).inc();
                }
                EventKind::StepScheduled { attempt, .. } if *attempt > 1 => {
                    self.retries
                        .with_label_values(&[flow, step_of(event), "run"])
                        .inc();
                }
                EventKind::CompensationScheduled { attempt, .. } if *attempt > 1 => {
                    self.retries
                        .with_label_values(&[flow, step_of(event), "compensate"])
                        .inc();
                }
                EventKind::ReconciliationScheduled { attempt, .. } if *attempt > 1 => {
                    self.retries
                        .with_label_values(&[flow, "", "reconcile"])
                        .inc();
                }
                EventKind::StepFailed { failure, .. } => {
                    self.failures
                        .with_label_values(&[flow, step_of(event), "run", failure.class.as_str()])
                        .inc();
                }
                EventKind::CompensationFailed { failure, .. } => {
                    self.failures
                        .with_label_values(&[
                            flow,
                            step_of(event),
                            "compensate",
                            failure.class.as_str(),
                        ])
                        .inc();
                }
                EventKind::CompensationCompleted { .. } => {
                    self.compensations
                        .with_label_values(&[flow, step_of(event)])
                        .inc();
                }
                EventKind::RunHeld { cause, .. } => {
                    self.holds.with_label_values(&[flow, cause.as_str()]).inc();
                }
                EventKind::RunNeedsAttention { .. } => {
                    self.holds.with_label_values(&[flow, "legacy"]).inc();
                }
                EventKind::UserReported { .. } => {
                    self.reports.with_label_values(&[flow]).inc();
                }
                EventKind::StepReconciled { verdict, .. } => {
                    let verdict = match verdict {
                        Verdict::InSync => "in-sync",
                        Verdict::Drifted(_) => "drifted",
                        Verdict::Unknown => "unknown",
                    };
                    self.verdicts
                        .with_label_values(&[flow, step_of(event), verdict])
                        .inc();
                }
                EventKind::RunDrifted { .. } => {
                    self.drifts.with_label_values(&[flow]).inc();
                }
                EventKind::StepDeferred { .. } => {
                    self.deferred_attempts
                        .with_label_values(&[flow, step_of(event)])
                        .inc();
                }
                EventKind::OperatorActed { action, .. } => {
                    self.operator_actions
                        .with_label_values(&[flow, action.as_str()])
                        .inc();
                }
                _ => {}
            }
        }
        if ended(after.state) && before.is_none_or(|b| !ended(b)) {
            let end = after.finished_at_ms.unwrap_or(after.updated_at_ms);
            let seconds = end.saturating_sub(after.accepted_at_ms) as f64 / 1000.0;
            self.run_duration
                .with_label_values(&[flow, after.state.as_str()])
                .observe(seconds);
        }
        self.state_changed(before, after.state);
    }

    fn breaker_changed(&self, domain: &str, state: &str) {
        self.breaker_open
            .with_label_values(&[domain])
            .set(i64::from(state != "closed"));
        self.breaker_transitions
            .with_label_values(&[domain, state])
            .inc();
    }

    fn idempotent_repeat(&self, flow: &str) {
        self.idempotency_repeats.with_label_values(&[flow]).inc();
    }

    fn called(
        &self,
        flow: &str,
        step: &str,
        kind: CallKind,
        duration: Duration,
        outcome: Result<(), FailureClass>,
    ) {
        let action = kind.as_str();
        self.attempts.with_label_values(&[flow, step, action]).inc();
        self.step_duration
            .with_label_values(&[flow, step, action])
            .observe(duration.as_secs_f64());
        // Failed runs and compensations are counted from what was recorded
        // (see `committed`); a reconciliation records no failure per step.
        if let (CallKind::Reconcile, Err(class)) = (kind, outcome) {
            self.failures
                .with_label_values(&[flow, step, action, class.as_str()])
                .inc();
        }
    }

    fn group_committed(&self, commits: usize, events: usize, latency: Duration) {
        self.store_commit.observe(latency.as_secs_f64());
        self.store_batch.observe(commits as f64);
        self.store_events.inc_by(events as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_change_moves_one_run_between_gauges() {
        let m = Metrics::new();
        m.state_changed(None, RunState::Accepted);
        m.state_changed(Some(RunState::Accepted), RunState::Processing);
        m.state_changed(Some(RunState::Processing), RunState::Settled);
        m.state_changed(None, RunState::Retrying);
        m.state_changed(Some(RunState::Retrying), RunState::NeedsAttention);
        m.state_changed(None, RunState::Retrying);
        let get = |s: RunState| m.runs.with_label_values(&[s.as_str()]).get();
        assert_eq!(get(RunState::Accepted), 0);
        assert_eq!(get(RunState::Processing), 0);
        assert_eq!(get(RunState::Retrying), 1);
        assert_eq!(get(RunState::NeedsAttention), 1);
        let text = m.render();
        assert!(text.contains("settle_runs{state=\"retrying\"} 1"), "{text}");
    }
}
