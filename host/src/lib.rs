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
//! Layers, each knowing only the one below through a narrow trait:
//!
//! - [`model`]: identities, run states, the event schema, the summary fold.
//! - [`store`]: the append-only log and its indexes (sled); knows no Wasm.
//! - [`runtime`]: wasmtime components, sandbox limits, host imports; knows no flows.
//! - [`flow`]: the YAML language and its validation.
//! - [`engine`]: the saga state machine, retries, durable timers, recovery.
//! - [`app`]: wires them together from [`config`].
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
pub mod demo_service;
pub mod engine;
pub mod flow;
pub mod model;
pub mod runtime;
pub mod store;
pub mod telemetry;
