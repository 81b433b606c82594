//! Circuit breakers, one per failure domain the operator gives one in
//! settle.toml: a plugin (`[breakers.NAME]`) or a downstream host, by the
//! `wasi:http` authority its plugins send requests to
//! (`[breakers."host:ledger.example:443"]`, or `[breakers."host:*"]` for a
//! breaker of its own for every host). When too many recent attempts fail
//! the way a failing downstream fails (for a plugin: `retryable`,
//! `timeout`; for a host: no connection, no answer, a 5xx or 429), the
//! breaker opens and new attempts wait instead of spending their retry
//! budget against it; after `open_for` one probe goes through, and its
//! answer closes the breaker or opens it again.
//!
//! A deferred attempt is recorded in the run's log (`step-deferred`) and
//! does not count against `max_attempts`. Breaker state lives in memory: a
//! restarted host starts with every breaker closed.

use serde::{Deserialize, Serialize};
use settle_types::FailureClass;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// When a plugin's breaker opens, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerPolicy {
    /// Share of failed attempts in `window` that opens it (0–1).
    pub failure_rate: f64,
    /// Attempts in `window` before the rate counts at all.
    pub min_calls: u32,
    #[serde(with = "settle_types::duration_text")]
    pub window: Duration,
    /// How long it stays open before one probe is let through.
    #[serde(with = "settle_types::duration_text")]
    pub open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            failure_rate: 0.5,
            min_calls: 10,
            window: Duration::from_secs(30),
            open_for: Duration::from_secs(10),
        }
    }
}

impl BreakerPolicy {
    /// The policy within sane bounds: a rate in (0, 1], at least one call,
    /// a window and an open time of at least 100 ms and at most a day.
    pub fn bounded(self) -> Self {
        let clamp = |d: Duration| d.clamp(Duration::from_millis(100), Duration::from_secs(86_400));
        BreakerPolicy {
            failure_rate: if self.failure_rate.is_finite() {
                self.failure_rate.clamp(0.01, 1.0)
            } else {
                0.5
            },
            min_calls: self.min_calls.clamp(1, 100_000),
            window: clamp(self.window),
            open_for: clamp(self.open_for),
        }
    }
}

/// What an attempt says about its plugin's downstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It answered (a result, or a clear no: permanent, invalid input).
    Answered,
    /// It failed the way a failing or overloaded service fails.
    Failed,
    /// Nothing: a trap, a limit, the host's own setup.
    Silent,
}

impl Outcome {
    pub fn of(result: Result<(), FailureClass>) -> Self {
        match result {
            Ok(()) => Outcome::Answered,
            Err(FailureClass::Retryable | FailureClass::Timeout) => Outcome::Failed,
            Err(FailureClass::Permanent | FailureClass::InvalidInput) => Outcome::Answered,
            Err(_) => Outcome::Silent,
        }
    }
}

/// What a breaker says to an attempt about to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead.
    Go,
    /// Go ahead as the one probe of a half-open breaker.
    Probe,
    /// Wait until `until_ms`: the breaker is open (or its probe is out).
    Wait { until_ms: u64, reason: String },
}

/// A breaker's state, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BreakerView {
    pub domain: String,
    /// `closed`, `open` or `half-open`.
    pub state: &'static str,
    /// Attempts and failures counted in the window now.
    pub calls: usize,
    pub failures: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_until_ms: Option<u64>,
}

#[derive(Debug)]
enum State {
    Closed,
    Open {
        until_ms: u64,
    },
    /// One probe is out; the rest wait.
    HalfOpen {
        probe_since_ms: u64,
    },
}

struct Breaker {
    policy: BreakerPolicy,
    /// (time, failed) of recent attempts, oldest first.
    outcomes: VecDeque<(u64, bool)>,
    state: State,
}

/// Most outcomes one breaker keeps: the window is a time, this bounds it.
const MAX_OUTCOMES: usize = 10_000;

impl Breaker {
    fn trim(&mut self, now_ms: u64) {
        let window = u64::try_from(self.policy.window.as_millis()).unwrap_or(u64::MAX);
        let from = now_ms.saturating_sub(window);
        while self.outcomes.front().is_some_and(|(at, _)| *at < from) {
            self.outcomes.pop_front();
        }
        while self.outcomes.len() > MAX_OUTCOMES {
            self.outcomes.pop_front();
        }
    }

    fn counts(&self) -> (usize, usize) {
        let failures = self.outcomes.iter().filter(|(_, f)| *f).count();
        (self.outcomes.len(), failures)
    }

    fn open_ms(&self) -> u64 {
        u64::try_from(self.policy.open_for.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Every breaker of a host: what changed, for the log and the metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub domain: String,
    pub state: &'static str,
    pub detail: String,
}

/// The domain name of downstream host `authority` (`host:port`).
pub fn host_domain(authority: &str) -> String {
    format!("{HOST_PREFIX}{authority}")
}

pub use settle_types::observe::HOST_DOMAIN_PREFIX as HOST_PREFIX;
pub use settle_types::observe::domain_in_words as describe;

/// The key of the policy every downstream host without one of its own gets.
pub const EVERY_HOST: &str = "host:*";

/// Most breakers one host keeps: hosts get theirs as they are first seen,
/// and a plugin may send requests to many; when full, a closed breaker of
/// a host with nothing in its window makes room.
const MAX_BREAKERS: usize = 256;

#[derive(Default)]
pub struct Breakers {
    breakers: Mutex<HashMap<String, Breaker>>,
    /// The policy of a downstream host without one of its own.
    every_host: Option<BreakerPolicy>,
}

impl Breaker {
    fn new(policy: BreakerPolicy) -> Self {
        Breaker {
            policy: policy.bounded(),
            outcomes: VecDeque::new(),
            state: State::Closed,
        }
    }
}

impl Breakers {
    /// Breakers for the domains the operator named; `host:*` is the
    /// policy of every downstream host not named.
    pub fn new(policies: impl IntoIterator<Item = (String, BreakerPolicy)>) -> Self {
        let mut every_host = None;
        let breakers = policies
            .into_iter()
            .filter_map(|(domain, policy)| {
                if domain == EVERY_HOST {
                    every_host = Some(policy);
                    return None;
                }
                Some((domain, Breaker::new(policy)))
            })
            .take(MAX_BREAKERS)
            .collect();
        Breakers {
            breakers: Mutex::new(breakers),
            every_host,
        }
    }

    /// Whether `domain` has (or would get) a breaker.
    pub fn guards(&self, domain: &str) -> bool {
        (self.every_host.is_some() && domain.starts_with(HOST_PREFIX))
            || self
                .breakers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(domain)
    }

    /// Whether an attempt in `domain` would have to wait now, without
    /// changing anything: `Some((until_ms, reason))` while its breaker is
    /// open, or half-open with its probe out.
    pub fn check(&self, domain: &str, now_ms: u64) -> Option<(u64, String)> {
        let breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let b = breakers.get(domain)?;
        match b.state {
            State::Open { until_ms } if now_ms < until_ms => Some((
                until_ms,
                format!(
                    "{} is failing; its circuit breaker is open",
                    describe(domain)
                ),
            )),
            State::HalfOpen { probe_since_ms }
                if now_ms < probe_since_ms.saturating_add(b.open_ms()) =>
            {
                Some((
                    probe_since_ms
                        .saturating_add(b.open_ms())
                        .min(now_ms.saturating_add(1_000)),
                    format!(
                        "{} was failing; one attempt is checking whether it recovered",
                        describe(domain)
                    ),
                ))
            }
            _ => None,
        }
    }

    /// Whether an attempt of a step of `domain` may start now.
    pub fn admit(&self, domain: &str, now_ms: u64) -> (Admission, Option<Change>) {
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let Some(b) = breakers.get_mut(domain) else {
            return (Admission::Go, None);
        };
        let open_ms = b.open_ms();
        match b.state {
            State::Closed => (Admission::Go, None),
            State::Open { until_ms } if now_ms < until_ms => (
                Admission::Wait {
                    until_ms,
                    reason: format!(
                        "{} is failing; its circuit breaker is open",
                        describe(domain)
                    ),
                },
                None,
            ),
            State::Open { .. } => {
                b.state = State::HalfOpen {
                    probe_since_ms: now_ms,
                };
                let change = Change {
                    domain: domain.to_string(),
                    state: "half-open",
                    detail: "one attempt goes through to see whether it recovered".into(),
                };
                (Admission::Probe, Some(change))
            }
            // A probe that never answered (its host stopped) is replaced
            // after `open_for`.
            State::HalfOpen { probe_since_ms }
                if now_ms >= probe_since_ms.saturating_add(open_ms) =>
            {
                b.state = State::HalfOpen {
                    probe_since_ms: now_ms,
                };
                (Admission::Probe, None)
            }
            State::HalfOpen { probe_since_ms } => (
                Admission::Wait {
                    until_ms: probe_since_ms
                        .saturating_add(open_ms)
                        .min(now_ms.saturating_add(1_000)),
                    reason: format!(
                        "{} was failing; one attempt is checking whether it recovered",
                        describe(domain)
                    ),
                },
                None,
            ),
        }
    }

    /// What an admitted attempt of `domain` came to.
    pub fn record(
        &self,
        domain: &str,
        now_ms: u64,
        outcome: Outcome,
        probe: bool,
    ) -> Option<Change> {
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        if !breakers.contains_key(domain)
            && domain.starts_with(HOST_PREFIX)
            && let Some(policy) = self.every_host
        {
            if breakers.len() >= MAX_BREAKERS {
                let idle = breakers
                    .iter_mut()
                    .filter(|(d, b)| d.starts_with(HOST_PREFIX) && matches!(b.state, State::Closed))
                    .find_map(|(d, b)| {
                        b.trim(now_ms);
                        b.outcomes.is_empty().then(|| d.clone())
                    });
                if let Some(idle) = idle {
                    breakers.remove(&idle);
                }
            }
            if breakers.len() < MAX_BREAKERS {
                breakers.insert(domain.to_string(), Breaker::new(policy));
            }
        }
        let b = breakers.get_mut(domain)?;
        if outcome == Outcome::Silent {
            // A probe that learnt nothing lets the next one through at once.
            if probe && matches!(b.state, State::HalfOpen { .. }) {
                b.state = State::Open { until_ms: now_ms };
            }
            return None;
        }
        let failed = outcome == Outcome::Failed;
        b.outcomes.push_back((now_ms, failed));
        b.trim(now_ms);
        let open_ms = b.open_ms();
        let (calls, failures) = b.counts();
        let open = |b: &mut Breaker, detail: String| {
            b.state = State::Open {
                until_ms: now_ms.saturating_add(open_ms),
            };
            Some(Change {
                domain: domain.to_string(),
                state: "open",
                detail,
            })
        };
        match b.state {
            State::HalfOpen { .. } if probe && failed => {
                open(b, "the probe failed too".to_string())
            }
            State::HalfOpen { .. } if probe => {
                b.state = State::Closed;
                b.outcomes.clear();
                Some(Change {
                    domain: domain.to_string(),
                    state: "closed",
                    detail: "the probe succeeded".into(),
                })
            }
            State::Closed
                if calls >= b.policy.min_calls as usize
                    && failures as f64 >= b.policy.failure_rate * calls as f64 =>
            {
                open(
                    b,
                    format!(
                        "{failures} of the last {calls} attempts failed within {}",
                        humantime::format_duration(b.policy.window)
                    ),
                )
            }
            _ => None,
        }
    }

    /// Every breaker, for the API and the dashboard.
    pub fn views(&self, now_ms: u64) -> Vec<BreakerView> {
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let mut views: Vec<BreakerView> = breakers
            .iter_mut()
            .map(|(domain, b)| {
                b.trim(now_ms);
                let (calls, failures) = b.counts();
                let (state, open_until_ms) = match b.state {
                    State::Closed => ("closed", None),
                    State::Open { until_ms } => ("open", Some(until_ms)),
                    State::HalfOpen { .. } => ("half-open", None),
                };
                BreakerView {
                    domain: domain.clone(),
                    state,
                    calls,
                    failures,
                    open_until_ms,
                }
            })
            .collect();
        views.sort_by(|a, b| a.domain.cmp(&b.domain));
        views
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers() -> Breakers {
        Breakers::new([(
            "pay".to_string(),
            BreakerPolicy {
                failure_rate: 0.5,
                min_calls: 4,
                window: Duration::from_secs(10),
                open_for: Duration::from_secs(5),
            },
        )])
    }

    #[test]
    fn it_opens_on_the_failure_rate_and_a_probe_closes_it() {
        let b = breakers();
        assert_eq!(b.admit("other", 0).0, Admission::Go, "no breaker, no wait");
        for t in 0..3 {
            assert_eq!(
                b.record("pay", t, Outcome::Failed, false),
                None,
                "below min_calls"
            );
        }
        let opened = b.record("pay", 3, Outcome::Failed, false).expect("opens");
        assert_eq!(opened.state, "open");
        assert!(
            opened.detail.starts_with("4 of the last 4 attempts failed"),
            "{}",
            opened.detail
        );
        match b.admit("pay", 100).0 {
            Admission::Wait { until_ms, .. } => assert_eq!(until_ms, 5_003),
            other => panic!("{other:?}"),
        }
        // After open_for: one probe, the others wait for it.
        assert_eq!(b.admit("pay", 5_003).0, Admission::Probe);
        assert!(matches!(b.admit("pay", 5_004).0, Admission::Wait { .. }));
        assert_eq!(
            b.record("pay", 5_010, Outcome::Answered, true)
                .unwrap()
                .state,
            "closed"
        );
        assert_eq!(b.admit("pay", 5_011).0, Admission::Go);
    }

    #[test]
    fn a_failed_probe_opens_it_again_and_old_failures_age_out() {
        let b = breakers();
        for t in 0..4 {
            b.record("pay", t, Outcome::Failed, false);
        }
        assert_eq!(b.admit("pay", 6_000).0, Admission::Probe);
        assert_eq!(
            b.record("pay", 6_001, Outcome::Failed, true).unwrap().state,
            "open"
        );
        assert!(matches!(
            b.admit("pay", 7_000).0,
            Admission::Wait {
                until_ms: 11_001,
                ..
            }
        ));
        // Successes dilute, and failures older than the window do not count.
        let b = breakers();
        for t in 0..3 {
            b.record("pay", t, Outcome::Failed, false);
        }
        assert_eq!(
            b.record("pay", 20_000, Outcome::Failed, false),
            None,
            "the old three aged out"
        );
        assert_eq!(b.views(20_000)[0].calls, 1);
    }

    #[test]
    fn a_probe_that_learns_nothing_or_never_answers_is_replaced() {
        let b = breakers();
        for t in 0..4 {
            b.record("pay", t, Outcome::Failed, false);
        }
        assert_eq!(b.admit("pay", 6_000).0, Admission::Probe);
        // It trapped: no word on the downstream, the breaker stays shut to
        // others, and the next attempt is the new probe.
        assert_eq!(b.record("pay", 6_001, Outcome::Silent, true), None);
        assert_eq!(b.views(6_002)[0].state, "open");
        assert_eq!(b.admit("pay", 6_002).0, Admission::Probe);
        // This one never reports: after open_for another goes.
        assert!(matches!(b.admit("pay", 6_003).0, Admission::Wait { .. }));
        assert_eq!(b.admit("pay", 11_002).0, Admission::Probe);
    }

    #[test]
    fn policies_are_bounded() {
        let p = BreakerPolicy {
            failure_rate: f64::NAN,
            min_calls: 0,
            window: Duration::ZERO,
            open_for: Duration::from_secs(u64::MAX),
        }
        .bounded();
        assert_eq!(p.failure_rate, 0.5);
        assert_eq!(p.min_calls, 1);
        assert_eq!(p.window, Duration::from_millis(100));
        assert_eq!(p.open_for, Duration::from_secs(86_400));
    }
}
