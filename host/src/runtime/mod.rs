//! The runtime: loads plugins (WebAssembly components) and calls them in a
//! sandbox. It knows nothing of flows or runs beyond the call context it is
//! handed.
//!
//! - [`plugin`]: loading, the precompiled cache keyed by content digest, the catalog.
//! - [`limits`]: memory, time and output limits per call.
//! - [`grants`]: what the operator lets each plugin do (outbound hosts, kv, config).
//! - [`host_imports`]: the host functions a plugin may call.
//! - [`call`]: one call, in a fresh store from the pooling allocator.

pub mod bindings;
pub mod call;
pub mod grants;
pub mod host_imports;
pub mod limits;
pub mod plugin;

pub use call::{CallKind, CallOutput, CallReport, CallRequest, Denial, ProgressSink};
pub use grants::Grants;
pub use host_imports::PluginKv;
pub use limits::{LimitHit, Limits};
pub use plugin::{LoadError, PluginInfo, Runtime, RuntimeOptions};

use std::future::Future;
use std::sync::Arc;

/// The engine's view of the runtime.
pub trait Executor: Send + Sync + 'static {
    /// Calls a plugin. Never fails as a whole: every failure is in the report.
    fn call(&self, request: CallRequest) -> impl Future<Output = CallReport> + Send;
    /// An installed plugin, by name.
    fn plugin(&self, name: &str) -> Option<Arc<PluginInfo>>;
}
