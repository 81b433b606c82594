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

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How often the epoch ticker fires: the granularity of time limits, and the
/// longest a busy guest holds a tokio worker before yielding.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Limits for calls into one plugin. `settle.toml` sets defaults and
/// per-plugin values; a flow's step `timeout` may lower `timeout`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Linear memory one call may grow to, in MiB.
    pub memory_mib: u64,
    /// Wall-clock time one call may take (CPU and waiting alike).
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Largest output (JSON text) a call may return, in KiB.
    pub max_output_kib: u64,
    /// Largest value the plugin may store in its key-value state, in KiB.
    pub max_kv_value_kib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: 64,
            timeout: Duration::from_secs(10),
            max_output_kib: 1024,
            max_kv_value_kib: 64,
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
pub struct CallLimiter {
    memory_bytes: usize,
    deadline: Instant,
    timeout: Duration,
    pub hit: Option<LimitHit>,
}

impl CallLimiter {
    pub fn new(limits: &Limits, timeout: Duration) -> Self {
        CallLimiter {
            memory_bytes: limits.memory_bytes(),
            // A timeout too long to add is as good as none.
            deadline: Instant::now()
                .checked_add(timeout)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600)),
            timeout,
            hit: None,
        }
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
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.hit = Some(LimitHit::Memory {
                limit_bytes: self.memory_bytes,
                wanted_bytes: desired,
            });
            return Ok(false);
        }
        Ok(true)
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

/// serde for durations written as "10s", "250ms".
pub mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("'{text}' is not a duration like 10s or 250ms: {e}"))
        })
    }
}
