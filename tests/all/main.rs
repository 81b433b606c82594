//! Settle's integration tests: one binary, one module per capability.
//! Everything is real: sled on disk, components built from example-plugins/,
//! the demo service as its own process on loopback.

mod alerts;
mod api;
mod bad_input;
mod bounds;
mod breakers;
mod browser;
mod cli;
mod client;
mod crash;
mod domains;
mod drift;
mod drill;
mod expectations;
mod expressions;
mod flow_cli;
mod flow_limits;
mod fuzz;
mod guides;
mod harness;
mod holds;
mod hostile;
mod idempotency;
mod items;
mod languages;
mod logs;
mod messages;
mod objectives;
mod parallel;
mod plugin_cli;
mod replay;
mod restart;
mod retries;
mod runtime;
mod saga;
mod sandbox;
mod signals;
mod store;
mod support;
mod telemetry;
mod ui;
mod upgrades;
mod waits;
