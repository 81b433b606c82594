//! Retry budgets, one per failure domain the operator gives one
//! (`[retry_budgets.NAME]` for a plugin, `[retry_budgets."host:…"]` for a
//! downstream host, `"host:*"` for every host): over a sliding window,
//! retries may be at most `share` of the first attempts, plus
//! `min_retries` so a quiet domain can still retry. A retry over budget is
//! not made: it waits (a `step-deferred` event, no attempt spent), so a
//! failing downstream is not hammered by every run retrying at once. First
//! attempts are never held back by a budget.
//!
//! Like breakers, budgets live in memory: a restarted host starts afresh.

use crate::breakers::{EVERY_HOST, HOST_PREFIX, describe};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// How many retries a domain may take.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryBudgetPolicy {
    /// Retries allowed per first attempt in the window (0–10).
    pub share: f64,
    /// Retries allowed in the window whatever the first attempts.
    pub min_retries: u32,
    #[serde(with = "settle_types::duration_text")]
    pub window: Duration,
}

impl Default for RetryBudgetPolicy {
    fn default() -> Self {
        RetryBudgetPolicy {
            share: 0.2,
            min_retries: 10,
            window: Duration::from_secs(60),
        }
    }
}

impl RetryBudgetPolicy {
    /// Within sane bounds: a share in [0, 10], a window of 1 s to a day.
    pub fn bounded(self) -> Self {
        RetryBudgetPolicy {
            share: if self.share.is_finite() {
                self.share.clamp(0.0, 10.0)
            } else {
                0.2
            },
            min_retries: self.min_retries.min(1_000_000),
            window: self
                .window
                .clamp(Duration::from_secs(1), Duration::from_secs(86_400)),
        }
    }
}

/// Most attempts one budget remembers; older ones count no more (the
/// share of retries among the newest stays what it was).
const MAX_ATTEMPTS_KEPT: usize = 10_000;
/// Most budgets one host keeps (those of hosts made from `host:*`
/// included): at most 256 × 10,000 attempts remembered.
const MAX_BUDGETS: usize = 256;

struct Budget {
    policy: RetryBudgetPolicy,
    /// (time, was a retry) of the attempts let through, oldest first.
    attempts: VecDeque<(u64, bool)>,
    retries: usize,
}

impl Budget {
    fn new(policy: RetryBudgetPolicy) -> Self {
        Budget {
            policy: policy.bounded(),
            attempts: VecDeque::new(),
            retries: 0,
        }
    }

    fn trim(&mut self, now_ms: u64) {
        let window = u64::try_from(self.policy.window.as_millis()).unwrap_or(u64::MAX);
        let from = now_ms.saturating_sub(window);
        while let Some(&(at, retry)) = self.attempts.front() {
            if at >= from && self.attempts.len() <= MAX_ATTEMPTS_KEPT {
                break;
            }
            self.attempts.pop_front();
            self.retries -= usize::from(retry);
        }
    }

    /// Retries the window allows now.
    fn allowed(&self) -> f64 {
        let firsts = self.attempts.len() - self.retries;
        f64::from(self.policy.min_retries) + self.policy.share * firsts as f64
    }
}

/// A budget's use, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BudgetView {
    pub domain: String,
    pub first_attempts: usize,
    pub retries: usize,
    /// Retries the window allows now.
    pub allowed: f64,
    pub window_ms: u64,
}

/// Every retry budget of a host.
#[derive(Default)]
pub struct RetryBudgets {
    budgets: Mutex<HashMap<String, Budget>>,
    every_host: Option<RetryBudgetPolicy>,
}

impl RetryBudgets {
    pub fn new(policies: impl IntoIterator<Item = (String, RetryBudgetPolicy)>) -> Self {
        let mut every_host = None;
        let budgets = policies
            .into_iter()
            .filter_map(|(domain, policy)| {
                if domain == EVERY_HOST {
                    every_host = Some(policy);
                    return None;
                }
                Some((domain, Budget::new(policy)))
            })
            .take(MAX_BUDGETS)
            .collect();
        RetryBudgets {
            budgets: Mutex::new(budgets),
            every_host,
        }
    }

    /// Whether an attempt in `domain` may go now: `Ok`, or
    /// `Err((wait_until_ms, reason))` for a retry over budget. A first
    /// attempt always goes. Nothing is counted: [`RetryBudgets::count`]
    /// does, once every guard of the attempt has let it go.
    pub fn check(&self, domain: &str, retry: bool, now_ms: u64) -> Result<(), (u64, String)> {
        if !retry {
            return Ok(());
        }
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        let Some(b) = budgets.get_mut(domain) else {
            return Ok(());
        };
        b.trim(now_ms);
        if b.retries as f64 + 1.0 <= b.allowed() {
            return Ok(());
        }
        // Room comes back as the oldest retry leaves the window, or a
        // first attempt comes in: look again within a second or so.
        let window = u64::try_from(b.policy.window.as_millis()).unwrap_or(u64::MAX);
        let wait = (window / 20).clamp(250, 5_000);
        let reason = format!(
            "retries to {} are over their budget ({} retries for {} first attempts in {})",
            describe(domain),
            b.retries,
            b.attempts.len() - b.retries,
            humantime::format_duration(b.policy.window)
        );
        Err((now_ms.saturating_add(wait), reason))
    }

    /// Counts an attempt made in `domain`. A downstream host first seen
    /// gets a budget of its own under `host:*`; when there are
    /// [`MAX_BUDGETS`] already, an empty one of another host makes room.
    pub fn count(&self, domain: &str, retry: bool, now_ms: u64) {
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        if !budgets.contains_key(domain)
            && domain.starts_with(HOST_PREFIX)
            && let Some(policy) = self.every_host
        {
            if budgets.len() >= MAX_BUDGETS {
                let idle = budgets
                    .iter_mut()
                    .filter(|(d, _)| d.starts_with(HOST_PREFIX))
                    .find_map(|(d, b)| {
                        b.trim(now_ms);
                        b.attempts.is_empty().then(|| d.clone())
                    });
                if let Some(idle) = idle {
                    budgets.remove(&idle);
                }
            }
            if budgets.len() < MAX_BUDGETS {
                budgets.insert(domain.to_string(), Budget::new(policy));
            }
        }
        let Some(b) = budgets.get_mut(domain) else {
            return;
        };
        b.attempts.push_back((now_ms, retry));
        b.retries += usize::from(retry);
        b.trim(now_ms);
    }

    /// [`RetryBudgets::check`], then [`RetryBudgets::count`] when it may go.
    pub fn admit(&self, domain: &str, retry: bool, now_ms: u64) -> Result<(), (u64, String)> {
        self.check(domain, retry, now_ms)?;
        self.count(domain, retry, now_ms);
        Ok(())
    }

    /// Whether `domain` has (or would get) a budget.
    pub fn guards(&self, domain: &str) -> bool {
        (self.every_host.is_some() && domain.starts_with(HOST_PREFIX))
            || self
                .budgets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(domain)
    }

    pub fn views(&self, now_ms: u64) -> Vec<BudgetView> {
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        let mut views: Vec<BudgetView> = budgets
            .iter_mut()
            .map(|(domain, b)| {
                b.trim(now_ms);
                BudgetView {
                    domain: domain.clone(),
                    first_attempts: b.attempts.len() - b.retries,
                    retries: b.retries,
                    allowed: b.allowed(),
                    window_ms: u64::try_from(b.policy.window.as_millis()).unwrap_or(u64::MAX),
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

    fn budgets() -> RetryBudgets {
        RetryBudgets::new([(
            "pay".to_string(),
            RetryBudgetPolicy {
                share: 0.5,
                min_retries: 1,
                window: Duration::from_secs(10),
            },
        )])
    }

    #[test]
    fn retries_are_a_share_of_first_attempts_in_the_window() {
        let b = budgets();
        assert!(b.admit("other", true, 0).is_ok(), "no budget, no limit");
        for t in 0..4 {
            assert!(b.admit("pay", false, t).is_ok(), "first attempts always go");
        }
        // 1 + 0.5 × 4 = 3 retries.
        for t in 4..7 {
            assert!(b.admit("pay", true, t).is_ok());
        }
        let (until, reason) = b.admit("pay", true, 7).unwrap_err();
        assert_eq!(until, 7 + 500);
        assert_eq!(
            reason,
            "retries to plugin 'pay' are over their budget (3 retries for 4 first attempts in 10s)"
        );
        // A new first attempt makes room for half a retry: not yet one.
        b.admit("pay", false, 8).unwrap();
        assert!(b.admit("pay", true, 9).is_err());
        b.admit("pay", false, 10).unwrap();
        assert!(b.admit("pay", true, 11).is_ok());
        // Once the window passes, everything ages out.
        assert!(b.admit("pay", true, 20_000).is_ok(), "min_retries");
        assert!(b.admit("pay", true, 20_001).is_err());
        let view = &b.views(20_002)[0];
        assert_eq!((view.first_attempts, view.retries), (0, 1));
    }

    #[test]
    fn every_host_gets_its_own_budget_and_policies_are_bounded() {
        let policy = RetryBudgetPolicy {
            share: 0.0,
            min_retries: 1,
            window: Duration::from_secs(10),
        };
        let b = RetryBudgets::new([(EVERY_HOST.to_string(), policy)]);
        assert!(b.guards("host:a:80") && !b.guards("pay"));
        assert!(b.admit("host:a:80", true, 0).is_ok());
        assert!(b.admit("host:a:80", true, 1).is_err());
        assert!(b.admit("host:b:80", true, 2).is_ok(), "a host of its own");
        let p = RetryBudgetPolicy {
            share: f64::INFINITY,
            min_retries: u32::MAX,
            window: Duration::ZERO,
        }
        .bounded();
        assert_eq!(p.share, 0.2);
        assert_eq!(p.min_retries, 1_000_000);
        assert_eq!(p.window, Duration::from_secs(1));
    }
}
