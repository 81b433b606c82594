//! The retry policy: how many attempts a step (or a compensation) gets, and
//! how long to wait between them.
//!
//! Delay before attempt `n + 1` after attempt `n` failed:
//! `min(initial_interval * backoff_coefficient^(n-1), max_interval)`, then
//! spread by ± `jitter` (a fraction), and never earlier than a `retry-after`
//! the plugin asked for. A failure whose class is in `non_retryable` (or that
//! is permanent or invalid input) is never retried.

use crate::model::FailureClass;
use std::time::Duration;

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
        class.retryable_by_default() && !self.non_retryable.contains(&class)
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
            base.mul_f64(factor.max(0.0))
        } else {
            base
        };
        Some(retry_after.map_or(spread, |r| spread.max(r)))
    }

    /// The delay before attempt `attempt + 1`, without jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(64) as i32;
        let millis =
            self.initial_interval.as_secs_f64() * 1000.0 * self.backoff_coefficient.powi(exponent);
        Duration::from_secs_f64((millis / 1000.0).min(self.max_interval.as_secs_f64()))
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
    fn retry_after_is_a_floor_and_jitter_stays_in_bounds() {
        let p = policy();
        let d = p
            .next_delay(1, FailureClass::Retryable, Some(Duration::from_secs(2)))
            .unwrap();
        assert_eq!(d, Duration::from_secs(2));
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
