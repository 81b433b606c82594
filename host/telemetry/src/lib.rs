//! # settle-telemetry
//!
//! Logs, metrics and traces of the host.
//!
//! **Logs**: `tracing` to stderr, filtered by `RUST_LOG` (default: warnings,
//! and settle's own info lines). Two formats, picked with the global
//! `--log-format` flag:
//! - `text` (default) for people. Colour codes are written only when stderr
//!   is a terminal: `settle run … 2>log` must leave a file that `grep` and
//!   log shippers read as plain text.
//! - `json` for machines: one JSON object per line, with the event's fields
//!   (`message`, `run`, `step`, …) at the top level beside `timestamp`,
//!   `level` and `target`, and the fields of the spans it happened in under
//!   `spans`.
//!
//! **Spans**: every run is driven inside a `run` span (`run_id`, `flow`,
//! `flow_version`, `trace_id`); each attempt inside `step` (`step`,
//! `step_index`) > `attempt` (`attempt`, `action`, `operation_id`) >
//! `plugin_call` (`plugin`). A plugin's own log lines carry `run_id`,
//! `step`, `attempt` and `operation_id` themselves.
//!
//! **Traces**: with `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, those spans also go to that
//! OTLP collector over HTTP (protobuf), as service `settle`; the other
//! standard `OTEL_*` variables (headers, batch delay) apply. A run's trace
//! id there is the `trace_id` of its events.
//!
//! **Metrics**: [`metrics::Metrics`], rendered by `GET /metrics`.

mod alert_windows;
pub mod alerts;
pub mod metrics;
mod trace_ids;

use std::io::IsTerminal;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured only on a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Keeps trace export going; dropping it sends the spans still queued.
/// Keep it until the process ends.
#[must_use = "dropping the guard stops trace export"]
#[derive(Debug, Default)]
pub struct Guard {
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: spans not sent to the OTLP endpoint: {e}");
        }
    }
}

/// The OTLP endpoint the environment names, if any.
fn otlp_endpoint() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok().filter(|e| !e.trim().is_empty()))
}

/// Installs the global subscriber. A second call (tests) is a no-op.
pub fn init(format: LogFormat) -> Guard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,settle=info"));
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .boxed(),
    };
    let mut guard = Guard::default();
    let traces = otlp_endpoint().and_then(|endpoint| match otlp_provider() {
        Ok(provider) => {
            use opentelemetry::trace::TracerProvider as _;
            // The run's trace id is offered beneath the bridge and cleared
            // above it (see `trace_ids`).
            let layer = trace_ids::RunTraceIds
                .and_then(tracing_opentelemetry::layer().with_tracer(provider.tracer("settle")))
                .and_then(trace_ids::ClearRunTraceId);
            guard.traces = Some(provider);
            Some(layer)
        }
        Err(e) => {
            eprintln!("warning: spans are not exported to {endpoint}: {e}");
            None
        }
    });
    // Already installed (a test that calls the CLI twice) is fine: keep it.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init();
    guard
}

/// A tracer provider that batches spans to the OTLP endpoint of the
/// environment, from its own thread.
fn otlp_provider() -> Result<opentelemetry_sdk::trace::SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| e.to_string())?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("settle")
        .build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_id_generator(trace_ids::RunIdGenerator::default())
        .with_resource(resource)
        .build())
}
