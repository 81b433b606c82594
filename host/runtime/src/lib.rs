//! # settle-runtime
//!
//! The runtime: loads plugins (WebAssembly components) and calls them in a
//! sandbox. It knows nothing of flows or runs beyond the call context it is
//! handed.
//!
//! - [`Runtime`] (`runtime.rs`): the wasmtime engine and instance pool;
//!   loading plugins (one name per component) and calling them.
//! - [`plugin`]: an installed plugin, its operator settings, load errors.
//! - [`cache`]: the compiled-plugin cache, verified before use.
//! - [`diagnose`]: why a component cannot be linked, in one line.
//! - [`manifest`]: what `describe` may say, bounded and checked.
//! - [`limits`]: memory, time and output limits per call, and the bounds on
//!   what a call may send the host.
//! - [`budget`]: those bounds, counted per call.
//! - [`grants`]: what the operator lets each plugin do (outbound hosts, kv, config).
//! - [`host_imports`]: the host functions a plugin may call, one file per
//!   interface.
//! - [`kv`]: a plugin's key-value state: quotas, writes kept only on success.
//! - [`call`]: one call, in a fresh store from the pooling allocator.
//! - [`expressions`]: a flow's jq expressions, run in the embedded
//!   evaluator component under the same sandbox.
//!
//! Dependencies run one way: `runtime` → `call` → `host_imports` → `kv`,
//! `budget`, `limits`, `grants`; nothing below names the [`Runtime`].

pub mod bindings;
pub mod budget;
pub mod cache;
pub mod call;
pub mod diagnose;
pub mod expressions;
pub mod grants;
pub mod host_imports;
pub mod kv;
pub mod limits;
pub mod manifest;
pub mod plugin;
mod runtime;
pub mod stand_in;

pub use budget::RuntimeStats;
pub use diagnose::contract_version;
pub use grants::Grants;
pub use kv::{KvUsage, KvWrite, MemoryKv, PluginKv};
pub use limits::{LimitHit, Limits};
pub use plugin::{LoadError, PluginInfo, PluginSettings};
pub use runtime::{Runtime, RuntimeOptions, component_digest};
pub use settle_types::executor::{
    CallContext, CallFailure, CallKind, CallOutput, CallReport, CallRequest, Denial, EvalFailure,
    Executor, PluginDescriptor, ProgressSink,
};
