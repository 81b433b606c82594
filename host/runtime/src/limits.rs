//! Sandbox limits: how much memory, time and output one plugin call may use.
//!
//! Every call gets a fresh store with these limits. A plugin that passes one
//! fails that attempt with a [`LimitHit`] naming the limit; the host and other
//! runs carry on.
//!
//! - Memory: a [`wasmtime::ResourceLimiter`] refuses growth past
//!   `memory_bytes`. The guest then usually aborts (a trap); the limiter has
//!   recorded why, so the failure says "memory limit", not "trap".
//! - Time: epoch interruption. A ticker advances the engine's epoch every
//!   [`EPOCH_TICK`]; at each tick a running guest yields to tokio (so a busy
//!   plugin cannot starve other runs) and is stopped once past its deadline.
//! - Output: checked when the call returns.
//! - What a plugin sends the host while it runs (refusals, log lines,
//!   progress reports, kv keys) is bounded per call by the constants below,
//!   so a plugin that floods the host costs it a bounded amount of memory,
//!   store and log, whatever it does in a loop.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How often the epoch ticker fires: the granularity of time limits, and the
/// longest a busy guest holds a tokio worker before yielding.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Capability refusals recorded one by one per call; the rest are counted
/// into one final refusal ("… and N more refusals").
pub const MAX_DENIALS_RECORDED: usize = 8;
/// Longest detail of a recorded refusal, bytes (the key or URL it names is cut).
pub const MAX_DENIAL_DETAIL_BYTES: usize = 300;
/// Longest plugin log line, bytes, after escaping.
pub const MAX_LOG_LINE_BYTES: usize = 4096;
/// Plugin log lines written per call; further lines are counted, not written.
pub const MAX_LOG_LINES_PER_CALL: u32 = 100;
/// Plugin log bytes written per call; further lines are counted, not written.
pub const MAX_LOG_BYTES_PER_CALL: usize = 64 * 1024;
/// Longest progress message, bytes.
pub const MAX_PROGRESS_MESSAGE_BYTES: usize = 200;
/// Progress reports closer together than this are dropped (the last one
/// before the call ends is always passed on).
pub const PROGRESS_MIN_INTERVAL: Duration = Duration::from_millis(50);
/// Longest kv key, bytes: checked before the store is touched.
pub const MAX_KV_KEY_BYTES: usize = 1024;

/// Longest a call waits for a free instance slot when the pool is exhausted
/// (a component holding more memories or instances than a slot's share).
pub const POOL_WAIT: Duration = Duration::from_secs(2);

/// Limits for calls into one plugin. `settle.toml` sets defaults and
/// per-plugin values; a flow's step `timeout` may lower `timeout`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Linear memory one call may grow to, in MiB.
    pub memory_mib: u64,
    /// Wall-clock time one call may take (CPU and waiting alike).
    #[serde(with = "settle_types::duration_text")]
    pub timeout: Duration,
    /// Largest output (JSON text) a call may return, in KiB.
    pub max_output_kib: u64,
    /// Largest value the plugin may store in its key-value state, in KiB.
    pub max_kv_value_kib: u64,
    /// Most keys the plugin may keep in its key-value state.
    pub max_kv_keys: u64,
    /// Most bytes (keys and values) the plugin may keep in its key-value
    /// state, in KiB.
    pub max_kv_total_kib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: 64,
            timeout: Duration::from_secs(10),
            max_output_kib: 1024,
            max_kv_value_kib: 64,
            max_kv_keys: 10_000,
            max_kv_total_kib: 64 * 1024,
        }
    }
}

impl Limits {
    pub fn memory_bytes(&self) -> usize {
        (self.memory_mib as usize).saturating_mul(1024 * 1024)
    }
    pub fn max_output_bytes(&self) -> usize {
        (self.max_output_kib as usize).saturating_mul(1024)
    }
    pub fn max_kv_value_bytes(&self) -> usize {
        (self.max_kv_value_kib as usize).saturating_mul(1024)
    }
    pub fn max_kv_total_bytes(&self) -> u64 {
        self.max_kv_total_kib.saturating_mul(1024)
    }
}

/// Which limit a call ran into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LimitHit {
    Memory {
        limit_bytes: usize,
        wanted_bytes: usize,
    },
    Time {
        limit: Duration,
    },
    Output {
        limit_bytes: usize,
        actual_bytes: usize,
    },
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitHit::Memory {
                limit_bytes,
                wanted_bytes,
            } => write!(
                f,
                "memory limit of {} MiB hit (the plugin asked for {} MiB)",
                limit_bytes / (1024 * 1024),
                wanted_bytes.div_ceil(1024 * 1024)
            ),
            LimitHit::Time { limit } => write!(
                f,
                "time limit of {} hit",
                humantime::format_duration(*limit)
            ),
            LimitHit::Output {
                limit_bytes,
                actual_bytes,
            } => write!(
                f,
                "output limit of {} KiB hit (the plugin returned {} KiB)",
                limit_bytes / 1024,
                actual_bytes.div_ceil(1024)
            ),
        }
    }
}

/// Per-call limiter, kept in the store's data. Records what it refused.
///
/// The memory limit holds for the call as a whole: a component may hold
/// several core instances, each with its own linear memories, and the limiter
/// counts the sum of all of them, so k memories cannot take k times the limit.
pub struct CallLimiter {
    memory_bytes: usize,
    /// Bytes of linear memory of every memory of this call, together.
    memory_in_use: usize,
    deadline: Instant,
    timeout: Duration,
    pub hit: Option<LimitHit>,
}

impl CallLimiter {
    pub fn new(limits: &Limits, timeout: Duration) -> Self {
        CallLimiter {
            memory_bytes: limits.memory_bytes(),
            memory_in_use: 0,
            deadline: Instant::now()
                .checked_add(timeout)
                .unwrap_or_else(far_future),
            timeout,
            hit: None,
        }
    }

    /// Checked on entry to every host function too, so the time a plugin
    /// makes the host spend on its behalf counts against its deadline and a
    /// guest that spends its time in host calls is stopped as surely as one
    /// that computes.
    pub fn check_time(&mut self) -> Result<(), LimitHit> {
        if self.out_of_time() {
            Err(LimitHit::Time {
                limit: self.timeout,
            })
        } else {
            Ok(())
        }
    }

    /// The time limit of this call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Called at every epoch tick while the guest runs: past the deadline the
    /// call is stopped.
    pub fn out_of_time(&mut self) -> bool {
        if Instant::now() >= self.deadline {
            self.hit = Some(LimitHit::Time {
                limit: self.timeout,
            });
            true
        } else {
            false
        }
    }
}

impl wasmtime::ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .memory_in_use
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.memory_bytes {
            self.hit = Some(LimitHit::Memory {
                limit_bytes: self.memory_bytes,
                wanted_bytes: total,
            });
            return Ok(false);
        }
        self.memory_in_use = total;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        // The growth was counted when it was allowed; a failure after that
        // (the pool's own ceiling) leaves the count a little high, which
        // only errs on the side of the limit.
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// A deadline so far away it is never reached (a timeout too large to add).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::component::{Component, Linker};
    use wasmtime::{Config, Engine, Store};

    /// A component of two core instances, each with a 20 MiB memory: 40 MiB
    /// together, under a 32 MiB limit per call.
    const TWO_MEMORIES: &str = r#"
        (component
          (core module $a (memory 320))
          (core instance (instantiate $a))
          (core module $b (memory 320))
          (core instance (instantiate $b)))
    "#;

    #[test]
    fn the_memory_limit_holds_for_all_memories_of_a_call_together() {
        let engine = Engine::new(Config::new().wasm_component_model(true)).expect("engine");
        let component = Component::new(&engine, TWO_MEMORIES).expect("component");
        let limits = Limits {
            memory_mib: 32,
            ..Limits::default()
        };
        let mut store = Store::new(&engine, CallLimiter::new(&limits, Duration::from_secs(5)));
        store.limiter(|l| l);
        let result = Linker::<CallLimiter>::new(&engine).instantiate(&mut store, &component);
        assert!(
            result.is_err(),
            "two memories of 20 MiB pass a 32 MiB limit"
        );
        assert!(
            matches!(store.data().hit, Some(LimitHit::Memory { wanted_bytes, .. }) if wanted_bytes == 40 * 1024 * 1024),
            "{:?}",
            store.data().hit
        );
    }
}
