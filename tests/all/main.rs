//! Settle's integration tests: one binary, one module per capability.
//! Everything is real: sled on disk, components built from example-plugins/,
//! the demo service as its own process on loopback.

mod bad_input;
mod cli;
mod crash;
mod hostile;
mod idempotency;
mod retries;
mod runtime;
mod saga;
mod sandbox;
mod store;
mod support;
mod ui;
