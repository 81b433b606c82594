//! A run's exported trace has the trace id its events carry.
//!
//! The engine opens each run's `run` span with a `trace_id` field (the run
//! id's 32 hex digits, the same as in every event and in the plugin's
//! context). The OpenTelemetry bridge starts the OTel span of a `run` span
//! when the span is first entered, and asks the SDK's id generator for a
//! trace id then, on that thread. [`RunTraceIds`] (a layer beneath the
//! bridge) hands that id over in a thread-local just before;
//! [`ClearRunTraceId`] (a layer above it) takes it back afterwards, so no
//! other span ever gets it.

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use std::cell::Cell;
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

thread_local! {
    /// The trace id for the root span being started on this thread.
    static NEXT: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// The trace id of a `run` span, until its first entry.
struct Pending(TraceId);

struct TraceIdField(Option<TraceId>);

impl Visit for TraceIdField {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "trace_id" {
            self.0 = TraceId::from_hex(&format!("{value:?}")).ok();
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "trace_id" {
            self.0 = TraceId::from_hex(value).ok();
        }
    }
}

/// Beneath the bridge: notes a `run` span's trace id, and offers it to the
/// id generator when the span is first entered.
pub struct RunTraceIds;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for RunTraceIds {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "run" || attrs.parent().is_some() || !attrs.is_root() {
            return;
        }
        let mut field = TraceIdField(None);
        attrs.record(&mut field);
        if let (Some(trace), Some(span)) = (field.0, ctx.span(id)) {
            span.extensions_mut().insert(Pending(trace));
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if let Some(Pending(trace)) = span.extensions_mut().remove::<Pending>() {
            NEXT.with(|next| next.set(Some(trace)));
        }
    }
}

/// Above the bridge: whatever the bridge did not take is dropped.
pub struct ClearRunTraceId;

impl<S: Subscriber> Layer<S> for ClearRunTraceId {
    fn on_enter(&self, _id: &Id, _ctx: Context<'_, S>) {
        NEXT.with(|next| next.set(None));
    }
}

/// Random ids, except the trace id offered for a `run` span.
#[derive(Debug, Default)]
pub struct RunIdGenerator(RandomIdGenerator);

impl IdGenerator for RunIdGenerator {
    fn new_trace_id(&self) -> TraceId {
        NEXT.with(Cell::take)
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}
