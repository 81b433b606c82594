//! Failure domains: what keeps one failing or slow downstream from taking
//! everyone down with it. A domain is a plugin, or a downstream host by
//! the `wasi:http` authority a plugin's calls sent requests to. Three
//! guards, each configured per domain in settle.toml and none by default:
//!
//! - a circuit breaker ([`crate::breakers`]): attempts wait while it is open;
//! - a retry budget ([`crate::retry_budget`]): retries wait once they are
//!   more than a share of the first attempts;
//! - a bulkhead per plugin (`[bulkheads] NAME = N`): at most N calls of the
//!   plugin in flight; the rest wait *before* taking a worker, so a slow
//!   plugin cannot hold every worker and instance slot.
//!
//! Which hosts a plugin talks to is learnt from its calls (the runtime
//! reports them), so an attempt is held back by the breaker of a host its
//! plugin's recent calls reached, before it reaches it again.

use crate::breakers::{Admission, BreakerPolicy, BreakerView, Breakers, Change, Outcome};
use crate::retry_budget::{BudgetView, RetryBudgetPolicy, RetryBudgets};
use serde::Serialize;
use settle_types::executor::{Downstream, MAX_DOWNSTREAMS};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Every guard, as configured.
#[derive(Clone, Debug, Default)]
pub struct DomainPolicies {
    /// By plugin name, `host:AUTHORITY`, or `host:*`.
    pub breakers: Vec<(String, BreakerPolicy)>,
    /// By plugin name, `host:AUTHORITY`, or `host:*`.
    pub retry_budgets: Vec<(String, RetryBudgetPolicy)>,
    /// Plugin name → most calls in flight at once.
    pub bulkheads: Vec<(String, u32)>,
}

/// Whether an attempt may be made now.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Go; it is the half-open probe of these domains.
    Go { probes: Vec<String> },
    /// Wait until `until_ms`, for `reason`.
    Wait { until_ms: u64, reason: String },
}

struct Bulkhead {
    slots: Arc<Semaphore>,
    max: u32,
}

/// A bulkhead's use, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BulkheadView {
    pub plugin: String,
    pub in_flight: u32,
    pub max_in_flight: u32,
}

/// Every guard's state, for the API, the dashboard and `settle status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DomainViews {
    pub breakers: Vec<BreakerView>,
    pub retry_budgets: Vec<BudgetView>,
    pub bulkheads: Vec<BulkheadView>,
}

/// Most plugins whose downstream hosts are remembered.
const MAX_PLUGINS_LEARNT: usize = 4096;

pub struct Domains {
    breakers: Breakers,
    budgets: RetryBudgets,
    bulkheads: HashMap<String, Bulkhead>,
    /// Plugin → the downstream hosts its latest call sent requests to.
    hosts: Mutex<HashMap<String, Vec<String>>>,
}

impl Domains {
    pub fn new(policies: DomainPolicies) -> Self {
        let bulkheads = policies
            .bulkheads
            .into_iter()
            .map(|(plugin, max)| {
                let max = max.clamp(1, 1_000_000);
                let slots = Arc::new(Semaphore::new(max as usize));
                (plugin, Bulkhead { slots, max })
            })
            .collect();
        Domains {
            breakers: Breakers::new(policies.breakers),
            budgets: RetryBudgets::new(policies.retry_budgets),
            bulkheads,
            hosts: Mutex::default(),
        }
    }

    /// The domains an attempt of `plugin` falls in: the plugin, then the
    /// guarded hosts its latest call reached.
    fn of(&self, plugin: &str) -> Vec<String> {
        let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let mut domains = vec![plugin.to_string()];
        domains.extend(
            hosts
                .get(plugin)
                .into_iter()
                .flatten()
                .filter(|d| self.breakers.guards(d) || self.budgets.guards(d))
                .cloned(),
        );
        domains
    }

    /// Whether attempt `attempt` of a step of `plugin` may be made now,
    /// and what changed in the breakers on the way. Every guard is asked
    /// first; only when all let the attempt go is it counted (a retry in
    /// the budgets, a probe handed out), so an attempt one guard holds back
    /// spends nothing of the others.
    pub fn admit(&self, plugin: &str, attempt: u32, now_ms: u64) -> (Admit, Vec<Change>) {
        let domains = self.of(plugin);
        let retry = attempt > 1;
        for domain in &domains {
            if let Some((until_ms, reason)) = self.breakers.check(domain, now_ms) {
                return (Admit::Wait { until_ms, reason }, Vec::new());
            }
        }
        for domain in &domains {
            if let Err((until_ms, reason)) = self.budgets.check(domain, retry, now_ms) {
                return (Admit::Wait { until_ms, reason }, Vec::new());
            }
        }
        let mut changes = Vec::new();
        let mut probes = Vec::new();
        for domain in &domains {
            let (admission, change) = self.breakers.admit(domain, now_ms);
            changes.extend(change);
            match admission {
                Admission::Go => {}
                Admission::Probe => probes.push(domain.clone()),
                // Another attempt took the probe in between.
                Admission::Wait { until_ms, reason } => {
                    return (Admit::Wait { until_ms, reason }, changes);
                }
            }
        }
        for domain in &domains {
            self.budgets.count(domain, retry, now_ms);
        }
        (Admit::Go { probes }, changes)
    }

    /// What an admitted attempt came to: for the plugin, as its result
    /// says; for each host it sent requests to, as the wire said.
    pub fn record(
        &self,
        plugin: &str,
        outcome: Outcome,
        downstream: &[Downstream],
        probes: &[String],
        now_ms: u64,
    ) -> Vec<Change> {
        let probe = |d: &str| probes.iter().any(|p| p == d);
        let mut changes: Vec<Change> = self
            .breakers
            .record(plugin, now_ms, outcome, probe(plugin))
            .into_iter()
            .collect();
        let mut reached = Vec::with_capacity(downstream.len().min(MAX_DOWNSTREAMS));
        for d in downstream.iter().take(MAX_DOWNSTREAMS) {
            let domain = crate::breakers::host_domain(&d.authority);
            let outcome = if d.failed {
                Outcome::Failed
            } else {
                Outcome::Answered
            };
            changes.extend(
                self.breakers
                    .record(&domain, now_ms, outcome, probe(&domain)),
            );
            reached.push(domain);
        }
        // A probe whose call never reached its host learnt nothing of it.
        for p in probes
            .iter()
            .filter(|p| *p != plugin && !reached.contains(p))
        {
            changes.extend(self.breakers.record(p, now_ms, Outcome::Silent, true));
        }
        if !reached.is_empty() {
            let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
            if hosts.len() < MAX_PLUGINS_LEARNT || hosts.contains_key(plugin) {
                hosts.insert(plugin.to_string(), reached);
            }
        }
        changes
    }

    /// A slot in `plugin`'s bulkhead, waited for; `None` when it has none.
    pub async fn bulkhead(&self, plugin: &str) -> Option<OwnedSemaphorePermit> {
        let b = self.bulkheads.get(plugin)?;
        b.slots.clone().acquire_owned().await.ok()
    }

    pub fn views(&self, now_ms: u64) -> DomainViews {
        let mut bulkheads: Vec<BulkheadView> = self
            .bulkheads
            .iter()
            .map(|(plugin, b)| BulkheadView {
                plugin: plugin.clone(),
                in_flight: b
                    .max
                    .saturating_sub(u32::try_from(b.slots.available_permits()).unwrap_or(u32::MAX)),
                max_in_flight: b.max,
            })
            .collect();
        bulkheads.sort_by(|a, b| a.plugin.cmp(&b.plugin));
        DomainViews {
            breakers: self.breakers.views(now_ms),
            retry_budgets: self.budgets.views(now_ms),
            bulkheads,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn strict() -> BreakerPolicy {
        BreakerPolicy {
            failure_rate: 0.5,
            min_calls: 2,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
        }
    }

    fn failed(authority: &str) -> Vec<Downstream> {
        vec![Downstream {
            authority: authority.into(),
            failed: true,
        }]
    }

    #[test]
    fn a_failing_host_holds_back_every_plugin_that_reaches_it_and_no_other() {
        let d = Domains::new(DomainPolicies {
            breakers: vec![("host:*".into(), strict())],
            ..DomainPolicies::default()
        });
        // Until `pay` has reached the host, nothing is known of it.
        assert_eq!(d.admit("pay", 1, 0).0, Admit::Go { probes: vec![] });
        // Its calls fail on the wire although the plugin itself answers
        // (it turned the 503 into a permanent error, say).
        d.record("pay", Outcome::Answered, &failed("psp:443"), &[], 1);
        let opened = d.record("pay", Outcome::Answered, &failed("psp:443"), &[], 2);
        assert_eq!(opened[0].domain, "host:psp:443");
        assert_eq!(opened[0].state, "open");
        match d.admit("pay", 1, 3).0 {
            Admit::Wait { until_ms, reason } => {
                assert_eq!(until_ms, 5_002);
                assert_eq!(
                    reason,
                    "downstream host 'psp:443' is failing; its circuit breaker is open"
                );
            }
            other => panic!("{other:?}"),
        }
        // A plugin that reached another host is not held back.
        d.record("mail", Outcome::Answered, &[], &[], 3);
        assert_eq!(d.admit("mail", 1, 4).0, Admit::Go { probes: vec![] });
        // After open_for one probe; its host answering closes the breaker.
        let Admit::Go { probes } = d.admit("pay", 1, 5_002).0 else {
            panic!("a probe");
        };
        assert_eq!(probes, ["host:psp:443"]);
        let ok = vec![Downstream {
            authority: "psp:443".into(),
            failed: false,
        }];
        let closed = d.record("pay", Outcome::Answered, &ok, &probes, 5_003);
        assert_eq!(closed[0].state, "closed");
    }

    #[test]
    fn a_retry_one_budget_holds_back_spends_nothing_of_the_others() {
        let budget = |min_retries| RetryBudgetPolicy {
            share: 0.0,
            min_retries,
            window: Duration::from_secs(60),
        };
        let d = Domains::new(DomainPolicies {
            retry_budgets: vec![
                ("pay".into(), budget(5)),
                ("host:psp:443".into(), budget(1)),
            ],
            ..DomainPolicies::default()
        });
        let reached = vec![Downstream {
            authority: "psp:443".into(),
            failed: false,
        }];
        d.record("pay", Outcome::Answered, &reached, &[], 0);
        assert!(matches!(d.admit("pay", 2, 1).0, Admit::Go { .. }));
        // The host's budget (one retry) is spent; the plugin's (five) is not.
        for t in 2..10 {
            assert!(matches!(d.admit("pay", 2, t).0, Admit::Wait { .. }));
        }
        let views = d.views(10).retry_budgets;
        let retries = |domain: &str| views.iter().find(|v| v.domain == domain).unwrap().retries;
        assert_eq!((retries("pay"), retries("host:psp:443")), (1, 1));
    }

    #[tokio::test]
    async fn a_bulkhead_lets_through_at_most_its_size() {
        let d = Domains::new(DomainPolicies {
            bulkheads: vec![("slow".into(), 2)],
            ..DomainPolicies::default()
        });
        let a = d.bulkhead("slow").await.unwrap();
        let _b = d.bulkhead("slow").await.unwrap();
        assert!(d.bulkhead("other").await.is_none(), "no bulkhead, no wait");
        let third = tokio::time::timeout(Duration::from_millis(50), d.bulkhead("slow")).await;
        assert!(third.is_err(), "the third waits");
        assert_eq!(d.views(0).bulkheads[0].in_flight, 2);
        drop(a);
        let third = tokio::time::timeout(Duration::from_millis(50), d.bulkhead("slow")).await;
        assert!(third.is_ok(), "and goes once one ends");
    }
}
