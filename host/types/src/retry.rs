//! The retry policy: how many attempts a step (or a compensation) gets, and
//! how long to wait between them.
//!
//! Delay before attempt `n + 1` after attempt `n` failed:
//! `min(initial_interval * backoff_coefficient^(n-1), max_interval)`, then
//! spread by ± `jitter` (a fraction), and never earlier than a `retry-after`
//! the plugin asked for — but a plugin's `retry-after` is clamped to
//! `max_interval`, and every delay to [`MAX_RETRY_DELAY`], so no plugin can
//! park a run for centuries or overflow the host's clock arithmetic. A
//! failure whose class is in `non_retryable` (or that is permanent or invalid
//! input) is never retried; host-setup failures are never retried either:
//! they hold the run for an operator.

use crate::FailureClass;
use std::time::Duration;

/// The longest any retry waits, whatever a flow or a plugin says.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. 1 means no retry.
    pub max_attempts: u32,
    pub initial_interval: Duration,
    pub backoff_coefficient: f64,
    pub max_interval: Duration,
    /// Fraction (0..=1) by which each delay is randomly spread.
    pub jitter: f64,
    /// Failure classes that are never retried, beyond permanent and invalid input.
    pub non_retryable: Vec<FailureClass>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_interval: Duration::from_millis(200),
            backoff_coefficient: 2.0,
            max_interval: Duration::from_secs(30),
            jitter: 0.1,
            non_retryable: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// Whether a failure of `class` may be retried at all.
    pub fn retries(&self, class: FailureClass) -> bool {
        class.retryable_by_default()
            && !class.is_host_setup()
            && !self.non_retryable.contains(&class)
    }

    /// The delay before the next attempt, after `attempt` failed with
    /// `class`; `None` when there is no next attempt.
    pub fn next_delay(
        &self,
        attempt: u32,
        class: FailureClass,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts || !self.retries(class) {
            return None;
        }
        let base = self.backoff(attempt);
        let spread = if self.jitter > 0.0 {
            let factor = 1.0 + self.jitter * (fastrand::f64() * 2.0 - 1.0);
            Duration::try_from_secs_f64(base.as_secs_f64() * factor.max(0.0)).unwrap_or(base)
        } else {
            base
        };
        let ceiling = self.max_interval.max(spread).min(MAX_RETRY_DELAY);
        let asked = retry_after.map_or(Duration::ZERO, |r| r.min(ceiling));
        Some(spread.max(asked).min(MAX_RETRY_DELAY))
    }

    /// The delay before attempt `attempt + 1`, without jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let secs = self.initial_interval.as_secs_f64() * self.backoff_coefficient.powi(exponent);
        let cap = self.max_interval.min(MAX_RETRY_DELAY);
        // `try_from` refuses NaN, infinity and overflow: the cap is the answer then.
        Duration::try_from_secs_f64(secs).map_or(cap, |d| d.min(cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial_interval: Duration::from_millis(100),
            backoff_coefficient: 2.0,
            max_interval: Duration::from_millis(500),
            jitter: 0.0,
            non_retryable: vec![FailureClass::Timeout],
        }
    }

    #[test]
    fn exponential_backoff_capped() {
        let p = policy();
        let delays: Vec<_> = (1..5)
            .map(|a| {
                p.next_delay(a, FailureClass::Retryable, None)
                    .unwrap()
                    .as_millis()
            })
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 500]);
        assert_eq!(p.next_delay(5, FailureClass::Retryable, None), None);
    }

    #[test]
    fn non_retryable_classes_stop_at_once() {
        let p = policy();
        assert_eq!(p.next_delay(1, FailureClass::Permanent, None), None);
        assert_eq!(p.next_delay(1, FailureClass::InvalidInput, None), None);
        assert_eq!(p.next_delay(1, FailureClass::Timeout, None), None);
        assert!(p.next_delay(1, FailureClass::Trap, None).is_some());
    }

    #[test]
    fn retry_after_is_a_floor_clamped_by_max_interval() {
        let p = policy();
        let d = p
            .next_delay(1, FailureClass::Retryable, Some(Duration::from_millis(300)))
            .unwrap();
        assert_eq!(d, Duration::from_millis(300));
        // A plugin cannot stretch a wait past the flow's max_interval…
        let d = p
            .next_delay(1, FailureClass::Retryable, Some(Duration::from_secs(2)))
            .unwrap();
        assert_eq!(d, Duration::from_millis(500));
        // …nor overflow anything with the largest value the contract allows.
        let d = p
            .next_delay(
                1,
                FailureClass::Retryable,
                Some(Duration::from_millis(u64::MAX)),
            )
            .unwrap();
        assert_eq!(d, Duration::from_millis(500));
        let wide = RetryPolicy {
            max_interval: Duration::MAX,
            initial_interval: Duration::MAX,
            backoff_coefficient: 100.0,
            ..policy()
        };
        let d = wide
            .next_delay(4, FailureClass::Retryable, Some(Duration::MAX))
            .unwrap();
        assert_eq!(d, MAX_RETRY_DELAY);
    }

    #[test]
    fn host_setup_failures_are_never_retried() {
        assert_eq!(policy().next_delay(1, FailureClass::HostSetup, None), None);
        assert_eq!(
            policy().next_delay(1, FailureClass::Unavailable, None),
            None
        );
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let jittery = RetryPolicy {
            jitter: 0.5,
            ..policy()
        };
        for _ in 0..100 {
            let d = jittery
                .next_delay(2, FailureClass::Retryable, None)
                .unwrap()
                .as_millis();
            assert!((100..=300).contains(&d), "{d}");
        }
    }
}
