//! What the engine and the store tell whoever watches them (metrics), as
//! plain calls with borrowed data: the engine and the store stay free of
//! any exporter, and an observer that ignores a call costs one virtual call.
//!
//! `settle-telemetry` implements [`Observer`] with Prometheus metrics; the
//! composition root (`settle serve`) hands it to both.

use crate::executor::CallKind;
use crate::{Event, EventKind, FailureClass, RunState, RunSummary};
use std::sync::Arc;
use std::time::Duration;

/// Watches the engine and the store. Every method has a no-op default and
/// must be cheap: it runs on the hot path, after the fact, never failing it.
pub trait Observer: Send + Sync + 'static {
    /// `events` of one run were committed durably. `before` is the run's
    /// state before them (`None`: the commit accepted the run); `after` is
    /// its summary once they apply. The events come as [`without_payloads`]
    /// leaves them: a step's output and a run's input are `null` here.
    fn committed(&self, before: Option<RunState>, events: &[Event], after: &RunSummary) {
        let _ = (before, events, after);
    }

    /// A submission named an idempotency key already used for this flow:
    /// the existing run was returned, nothing new started.
    fn idempotent_repeat(&self, flow: &str) {
        let _ = flow;
    }

    /// One plugin call (any action) ended after `duration`: `Ok` when the
    /// plugin answered, else the class of its failure as the runtime saw it.
    fn called(
        &self,
        flow: &str,
        step: &str,
        kind: CallKind,
        duration: Duration,
        outcome: Result<(), FailureClass>,
    ) {
        let _ = (flow, step, kind, duration, outcome);
    }

    /// The store wrote one group of `commits` commits (`events` events in
    /// all) with one flush, which took `latency`.
    fn group_committed(&self, commits: usize, events: usize, latency: Duration) {
        let _ = (commits, events, latency);
    }

    /// The circuit breaker of `domain` changed to `state` (`closed`,
    /// `open`, `half-open`).
    fn breaker_changed(&self, domain: &str, state: &str) {
        let _ = (domain, state);
    }
}

/// Domain names of downstream hosts start with this (`host:psp:443`); any
/// other failure domain is a plugin, by name.
pub const HOST_DOMAIN_PREFIX: &str = "host:";

/// A failure domain as people read it: "plugin 'pay'", "downstream host
/// 'psp:443'".
pub fn domain_in_words(domain: &str) -> String {
    match domain.strip_prefix(HOST_DOMAIN_PREFIX) {
        Some(authority) => format!("downstream host '{authority}'"),
        None => format!("plugin '{domain}'"),
    }
}

/// Copies of `events` for an observer, without the payloads an observer
/// has no use for (a step's output, a run's input), so that observing a
/// commit never copies what a plugin returned.
pub fn without_payloads(events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .map(|event| {
            let kind = match &event.kind {
                EventKind::StepCompleted {
                    index, duration_ms, ..
                } => EventKind::StepCompleted {
                    index: *index,
                    output: serde_json::Value::Null,
                    duration_ms: *duration_ms,
                },
                EventKind::SignalReceived { name, key, by, .. } => EventKind::SignalReceived {
                    name: name.clone(),
                    payload: serde_json::Value::Null,
                    key: key.clone(),
                    by: by.clone(),
                },
                EventKind::RunAccepted {
                    flow,
                    flow_version,
                    flow_digest,
                    steps,
                    idempotency_key,
                    submitted_by,
                    catalog,
                    plugins,
                    ..
                } => EventKind::RunAccepted {
                    plugins: plugins.clone(),
                    catalog: *catalog,
                    flow: flow.clone(),
                    flow_version: flow_version.clone(),
                    flow_digest: flow_digest.clone(),
                    steps: steps.clone(),
                    input: serde_json::Value::Null,
                    idempotency_key: idempotency_key.clone(),
                    submitted_by: submitted_by.clone(),
                },
                other => other.clone(),
            };
            Event {
                v: event.v,
                id: event.id,
                run_id: event.run_id,
                seq: event.seq,
                at_ms: event.at_ms,
                step: event.step.clone(),
                operation_id: event.operation_id.clone(),
                attempt: event.attempt,
                source: event.source.clone(),
                causation: event.causation,
                trace_id: event.trace_id.clone(),
                kind,
            }
        })
        .collect()
}

/// Observes nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}

/// A shared observer.
pub type SharedObserver = Arc<dyn Observer>;

/// Several observers, each told everything, in order.
pub struct Fanout(pub Vec<SharedObserver>);

impl Observer for Fanout {
    fn committed(&self, before: Option<RunState>, events: &[Event], after: &RunSummary) {
        for o in &self.0 {
            o.committed(before, events, after);
        }
    }

    fn idempotent_repeat(&self, flow: &str) {
        for o in &self.0 {
            o.idempotent_repeat(flow);
        }
    }

    fn called(
        &self,
        flow: &str,
        step: &str,
        kind: CallKind,
        duration: Duration,
        outcome: Result<(), FailureClass>,
    ) {
        for o in &self.0 {
            o.called(flow, step, kind, duration, outcome);
        }
    }

    fn group_committed(&self, commits: usize, events: usize, latency: Duration) {
        for o in &self.0 {
            o.group_committed(commits, events, latency);
        }
    }

    fn breaker_changed(&self, domain: &str, state: &str) {
        for o in &self.0 {
            o.breaker_changed(domain, state);
        }
    }
}
