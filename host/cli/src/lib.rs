//! # Settle
//!
//! A host for asynchronous, eventually consistent workflows built from
//! sandboxed WebAssembly components. A **flow** is a chain of steps; each step
//! calls a **plugin** that changes something in the outside world and can undo
//! it. The host records every change as an immutable **event**, retries
//! safely (the **operation id** is the idempotency key), compensates partial
//! work in reverse order, confirms with downstream systems, and says exactly
//! where each **run** stands.
//!
//! This crate is the `settle` binary and the composition root: the only
//! place that names every layer. The layers are crates, so the compiler keeps
//! them apart:
//!
//! - [`model`] (`settle-types`): ids, run states, events, the summary fold,
//!   retry policy, clock, and the traits between layers. No sled, no wasmtime.
//! - [`flow`] (`settle-flow`): the YAML language and its validation.
//! - [`store`] (`settle-store-sled`): the event log and its indexes on sled.
//! - [`runtime`] (`settle-runtime`): wasmtime components, sandbox, host imports.
//! - [`engine`] (`settle-engine`): sagas, retries, recovery, and the
//!   [`engine::queries::Queries`] that the API and the CLI share.
//! - [`telemetry`] (`settle-telemetry`): logs, metrics, traces.
//! - [`api`] (`settle-api`): `settle serve`, HTTP under `/v1`, the dashboard.
//! - [`app`] wires them together from [`config`]; [`cli`] is the command line.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use settle::{app::Host, config::Config, flow::Flow};
//! let host = Host::start(&Config::load(None)?).await?;
//! let flow = std::sync::Arc::new(Flow::load("order.yaml".as_ref())?);
//! let run = host.engine.submit(&flow, serde_json::json!({"amount": 250}), None).await?;
//! let summary = host.engine.wait(run.run_id).await?;
//! # Ok(()) }
//! ```

pub mod app;
pub mod cli;
pub mod config;

pub use settle_api as api;
pub use settle_demo_service as demo_service;
pub use settle_engine as engine;
pub use settle_flow as flow;
pub use settle_runtime as runtime;
pub use settle_telemetry as telemetry;
pub use settle_types as model;

/// Every role of the store: the traits (`settle-types`) and the sled backend.
pub mod store {
    pub use settle_store_sled::*;
    pub use settle_types::store::*;
}
