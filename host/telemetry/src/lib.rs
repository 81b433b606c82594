//! Logs: `tracing` to stderr, filtered by `RUST_LOG` (default: warnings, and
//! settle's own info lines).
//!
//! Two formats, picked with the global `--log-format` flag:
//! - `text` (default) for people. Colour codes are written only when stderr
//!   is a terminal: `settle run … 2>log` must leave a file that `grep` and
//!   log shippers read as plain text.
//! - `json` for machines: one JSON object per line, with the event's fields
//!   (`message`, `run`, `step`, …) at the top level beside `timestamp`,
//!   `level` and `target`.

pub mod metrics;

use std::io::IsTerminal;

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured only on a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. A second call (tests) is a no-op.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,settle=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Already installed (a test that calls the CLI twice) is fine: keep it.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
