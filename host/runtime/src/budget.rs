//! What one call may send the host while it runs, counted: refusals, log
//! lines and progress reports. Each is bounded per call (the constants are in
//! [`crate::limits`]); past the bound the host counts instead of keeping, and
//! says how much it dropped once, when the call ends.
//!
//! Without these bounds a plugin calling a refused function in a loop filled
//! the store with one event per call, and one logging in a loop filled the
//! host's stderr: the cost of a call must not depend on how hostile it is.

use crate::limits::{
    MAX_DENIAL_DETAIL_BYTES, MAX_DENIALS_RECORDED, MAX_LOG_BYTES_PER_CALL, MAX_LOG_LINE_BYTES,
    MAX_LOG_LINES_PER_CALL, MAX_PROGRESS_MESSAGE_BYTES, PROGRESS_MIN_INTERVAL,
};
use settle_types::executor::Denial;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Counters over the runtime's life, readable by tests and metrics.
#[derive(Debug, Default)]
pub struct RuntimeStats {
    /// Refusals counted but not recorded one by one.
    pub denials_dropped: AtomicU64,
    /// Plugin log lines not written because a call passed its log budget.
    pub log_lines_dropped: AtomicU64,
    /// Progress reports not passed on (too frequent).
    pub progress_dropped: AtomicU64,
    /// Calls that had to wait for a free instance slot in the pool.
    pub pool_waits: AtomicU64,
    /// Calls that waited for a slot in vain and failed.
    pub pool_exhausted: AtomicU64,
}

impl RuntimeStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The refusals of one call: the first [`MAX_DENIALS_RECORDED`] kept, the
/// rest counted.
#[derive(Debug, Default)]
pub struct Denials {
    kept: Vec<Denial>,
    more: u64,
}

impl Denials {
    pub fn push(&mut self, capability: &str, detail: String) {
        if self.kept.len() < MAX_DENIALS_RECORDED {
            self.kept.push(Denial {
                capability: capability.into(),
                detail: cut(&escape(&detail), MAX_DENIAL_DETAIL_BYTES),
            });
        } else {
            self.more = self.more.saturating_add(1);
        }
    }

    /// Both lists in one, still bounded: what does not fit is counted.
    pub fn merge(mut self, other: Denials) -> Denials {
        self.more = self.more.saturating_add(other.more);
        for d in other.kept {
            if self.kept.len() < MAX_DENIALS_RECORDED {
                self.kept.push(d);
            } else {
                self.more = self.more.saturating_add(1);
            }
        }
        self
    }

    /// Every refusal kept, then one that counts the rest, if any.
    pub fn finish(self, plugin: &str) -> (Vec<Denial>, u64) {
        let mut all = self.kept;
        if self.more > 0 {
            all.push(Denial {
                capability: "bounded".into(),
                detail: format!(
                    "plugin '{plugin}': … and {} more refusals in this call, not recorded one by one",
                    self.more
                ),
            });
        }
        (all, self.more)
    }
}

/// The log budget of one call.
#[derive(Debug, Default)]
pub struct LogBudget {
    lines: u32,
    bytes: usize,
    dropped_lines: u64,
    dropped_bytes: u64,
}

impl LogBudget {
    /// The line to write, escaped and cut, or `None` past the call's budget.
    pub fn admit(&mut self, message: &str) -> Option<String> {
        let line = cut(&escape(message), MAX_LOG_LINE_BYTES);
        let bytes = self.bytes.saturating_add(line.len());
        if self.lines >= MAX_LOG_LINES_PER_CALL || bytes > MAX_LOG_BYTES_PER_CALL {
            self.dropped_lines = self.dropped_lines.saturating_add(1);
            self.dropped_bytes = self.dropped_bytes.saturating_add(message.len() as u64);
            return None;
        }
        self.lines += 1;
        self.bytes = bytes;
        Some(line)
    }

    /// Lines and bytes dropped in this call.
    pub fn dropped(&self) -> (u64, u64) {
        (self.dropped_lines, self.dropped_bytes)
    }
}

/// Lets progress reports through at most every [`PROGRESS_MIN_INTERVAL`],
/// keeping the last one held back so the call can pass it on when it ends.
#[derive(Debug, Default)]
pub struct ProgressGate {
    last_sent: Option<Instant>,
    held: Option<(f32, String)>,
    dropped: u64,
}

impl ProgressGate {
    /// The report to pass on now, if any.
    pub fn admit(&mut self, fraction: f32, message: &str) -> Option<(f32, String)> {
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let now = Instant::now();
        let due = self
            .last_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= PROGRESS_MIN_INTERVAL);
        // Cut before escaping: the guest's message may be megabytes long.
        let message = cut(
            &escape(&cut(message, MAX_PROGRESS_MESSAGE_BYTES)),
            MAX_PROGRESS_MESSAGE_BYTES,
        );
        if due {
            self.last_sent = Some(now);
            self.held = None;
            Some((fraction, message))
        } else {
            if self.held.replace((fraction, message)).is_some() {
                self.dropped = self.dropped.saturating_add(1);
            }
            None
        }
    }

    /// The report held back when the call ends, and how many were dropped.
    pub fn finish(&mut self) -> (Option<(f32, String)>, u64) {
        (self.held.take(), self.dropped)
    }
}

/// Escapes newlines and every other control character (ANSI escapes
/// included), so what a plugin writes can never pass for a line of the host.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_LOG_LINE_BYTES * 2));
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            // Bidirectional overrides can reorder what a terminal shows.
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
        if out.len() > MAX_LOG_LINE_BYTES * 2 {
            break;
        }
    }
    out
}

/// Cuts text on a character boundary, marking the cut (one definition, in
/// the model's bounds).
pub use settle_types::bounds::cut;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_text_holds_no_control_character() {
        let forged = "ok\n2026-01-01T00:00:00Z ERROR settle: forged\u{1b}[31m\r\u{7}\u{202e}";
        let line = escape(forged);
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert!(
            line.contains("\\n2026") && line.contains("\\u{1b}[31m"),
            "{line}"
        );
    }

    #[test]
    fn refusals_past_the_first_few_are_counted() {
        let mut d = Denials::default();
        for i in 0..100 {
            d.push("kv", format!("get 'key-{i}' {}", "k".repeat(1 << 20)));
        }
        let (all, more) = d.finish("p");
        assert_eq!(all.len(), MAX_DENIALS_RECORDED + 1);
        assert_eq!(more, 100 - MAX_DENIALS_RECORDED as u64);
        assert!(
            all.iter()
                .all(|d| d.detail.len() <= MAX_DENIAL_DETAIL_BYTES + 3)
        );
        assert!(
            all[MAX_DENIALS_RECORDED]
                .detail
                .contains("92 more refusals")
        );
    }

    #[test]
    fn a_log_flood_is_cut_to_the_budget() {
        let mut b = LogBudget::default();
        let big = "x".repeat(10_000);
        let written: usize = (0..1000)
            .filter_map(|_| b.admit(&big))
            .map(|l| l.len())
            .sum();
        assert!(written <= MAX_LOG_BYTES_PER_CALL);
        assert!(b.dropped().0 > 900);
    }

    #[test]
    fn progress_is_rate_limited_and_the_last_report_kept() {
        let mut g = ProgressGate::default();
        assert!(g.admit(0.1, "a").is_some());
        assert!(g.admit(0.2, "b").is_none());
        assert!(g.admit(0.3, &"c".repeat(1 << 20)).is_none());
        let (held, dropped) = g.finish();
        let (fraction, message) = held.expect("the last report is kept");
        assert_eq!(fraction, 0.3);
        assert!(message.len() <= MAX_PROGRESS_MESSAGE_BYTES + 3);
        assert_eq!(dropped, 1);
    }
}
