//! Time, as the engine reads it.
//!
//! Every event carries milliseconds since the Unix epoch. The engine reads
//! the time through a [`Clock`] so tests (and the plugin test harness) can
//! drive it; the host uses [`SystemClock`].

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The machine's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        now_ms()
    }
}

/// Milliseconds since the Unix epoch by the wall clock; 0 before 1970,
/// saturated far in the future.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `ms` (Unix milliseconds) as an RFC 3339 time to the second, UTC, as
/// people read it in phrases: `2026-12-05T14:05:00Z`.
pub fn rfc3339_seconds(ms: u64) -> String {
    // RFC 3339 ends with year 9999.
    const LAST_MS: u64 = 253_402_300_799_000;
    let at = std::time::UNIX_EPOCH
        .checked_add(std::time::Duration::from_millis(ms.min(LAST_MS)))
        .unwrap_or(std::time::UNIX_EPOCH);
    humantime::format_rfc3339_seconds(at).to_string()
}
