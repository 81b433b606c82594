//! Alerts: rules in settle.toml (`[[alerts.rules]]`) turn what the engine
//! commits into alerts for people — a run drifted, missed its objective,
//! waits for an operator, got a user's report, or a circuit breaker
//! opened; and, over a sliding window ([`crate::alert_windows`]), a step's
//! failure rate over a threshold, user reports over a count, an
//! objective's error budget burning fast; and runs left in a state longer
//! than a time (`stuck`, found by a sweep the server runs). Each alert carries the rule's owner, escalation path and
//! suggested mitigation, is kept for the dashboard (`GET /v1/alerts`), is
//! counted in `/metrics`, and, with a webhook configured, is POSTed as a
//! CloudEvent (structured JSON), signed with HMAC-SHA256 of the body in
//! `Settle-Signature: sha256=HEX`, retried with backoff until the receiver
//! answers 2xx (at most [`MAX_TRIES`]), and always under the same `id`, so
//! a receiver deduplicates repeats.
//!
//! Delivery is at least once while the host runs; alerts still queued when
//! it stops are lost (they are in the run logs, where they came from).

use crate::alert_windows::{Figure, Windows};
use serde::{Deserialize, Serialize};
use settle_types::observe::{Observer, domain_in_words as describe};
use settle_types::{Event, EventKind, RunState, RunSummary};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// `[alerts]` in settle.toml.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertConfig {
    /// Where alerts are POSTed, if anywhere (`http://…`).
    pub webhook: Option<String>,
    /// The HMAC-SHA256 key of `Settle-Signature`.
    pub secret: Option<String>,
    pub rules: Vec<AlertRule>,
}

impl AlertConfig {
    /// What is wrong with it, if anything: a webhook needs a secret (an
    /// unsigned alert can be forged) and an `http://` address (TLS is not
    /// built in); rule names are unique (they are part of alert ids).
    pub fn check(&self) -> Result<(), String> {
        if let Some(url) = &self.webhook {
            if !url.starts_with("http://") {
                return Err(format!(
                    "[alerts] webhook '{url}': only http:// is supported (put a TLS proxy in front for https)"
                ));
            }
            if self.secret.as_deref().is_none_or(str::is_empty) {
                return Err("[alerts] webhook needs a `secret`: alerts are signed with it".into());
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for rule in &self.rules {
            rule.check()?;
            if rule.name.trim().is_empty() || !names.insert(rule.name.as_str()) {
                return Err(format!(
                    "[[alerts.rules]]: every rule needs a name of its own ('{}' is empty or repeated)",
                    rule.name
                ));
            }
        }
        Ok(())
    }
}

/// One rule: which happening raises an alert, and who is told what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    pub name: String,
    pub when: AlertKind,
    /// Only runs of this flow (or breakers of this domain).
    #[serde(default)]
    pub only: Option<String>,
    pub owner: String,
    #[serde(default)]
    pub escalation: String,
    #[serde(default)]
    pub mitigation: String,
    /// `step-failure-rate`: the share of failed attempts (0–1);
    /// `reports`: the number of reports; `burn-rate`: how many times
    /// faster than the objective allows the error budget is spent.
    #[serde(default)]
    pub threshold: Option<f64>,
    /// The sliding window of `step-failure-rate`, `reports`, `burn-rate`.
    #[serde(default, with = "settle_types::duration_text::opt")]
    pub window: Option<Duration>,
    /// `burn-rate`: a shorter window that must agree (it is still burning).
    #[serde(default, with = "settle_types::duration_text::opt")]
    pub short_window: Option<Duration>,
    /// `step-failure-rate`, `burn-rate`: samples in the window before the
    /// figure counts (default 10).
    #[serde(default)]
    pub min_events: Option<u32>,
    /// `step-failure-rate`: only this step.
    #[serde(default)]
    pub step: Option<String>,
    /// `stuck`: the state (default `needs-attention`).
    #[serde(default)]
    pub state: Option<RunState>,
    /// `stuck`: how long a run may stay in the state without a change.
    #[serde(default, with = "settle_types::duration_text::opt")]
    pub longer_than: Option<Duration>,
}

impl AlertRule {
    /// What a rule of its kind lacks or has out of range, if anything.
    fn check(&self) -> Result<(), String> {
        let need =
            |what: &str| format!("rule '{}' ({}) needs {what}", self.name, self.when.as_str());
        let threshold = self.threshold.filter(|t| t.is_finite() && *t > 0.0);
        match self.when {
            AlertKind::StepFailureRate => {
                if threshold.is_none_or(|t| t > 1.0) {
                    return Err(need(
                        "`threshold`, a share of failed attempts above 0 and at most 1",
                    ));
                }
            }
            AlertKind::Reports | AlertKind::BurnRate => {
                if threshold.is_none() {
                    return Err(need("a positive `threshold`"));
                }
            }
            AlertKind::Stuck => {
                if self.longer_than.is_none_or(|d| d.is_zero()) {
                    return Err(need("`longer_than`, e.g. \"1h\""));
                }
                // Held and drifted runs wait for an operator: they can stay.
                if self.state.is_some_and(RunState::is_terminal)
                    && !matches!(
                        self.state,
                        Some(RunState::NeedsAttention | RunState::Drifted)
                    )
                {
                    return Err(need("a `state` a run can stay stuck in (not an end state)"));
                }
                return Ok(());
            }
            _ => return Ok(()),
        }
        if self
            .window
            .is_none_or(|w| w.is_zero() || w > Duration::from_secs(30 * 86_400))
        {
            return Err(need("a `window` of at most 30 days, e.g. \"5m\""));
        }
        Ok(())
    }

    fn window_ms(&self) -> u64 {
        self.window
            .map_or(0, |w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    Drift,
    ObjectiveBreached,
    Held,
    Report,
    BreakerOpen,
    /// A step's failed attempts over `threshold` of its attempts in `window`.
    StepFailureRate,
    /// User reports of a flow's runs reach `threshold` in `window`.
    Reports,
    /// A flow's objective error budget burns `threshold` times too fast.
    BurnRate,
    /// A run stays in `state` without a change for `longer_than`.
    Stuck,
}

impl AlertKind {
    fn as_str(self) -> &'static str {
        match self {
            AlertKind::Drift => "drift",
            AlertKind::ObjectiveBreached => "objective-breached",
            AlertKind::Held => "held",
            AlertKind::Report => "report",
            AlertKind::BreakerOpen => "breaker-open",
            AlertKind::StepFailureRate => "step-failure-rate",
            AlertKind::Reports => "reports",
            AlertKind::BurnRate => "burn-rate",
            AlertKind::Stuck => "stuck",
        }
    }
}

/// One alert, as kept and as sent (the CloudEvent's `data`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable: the rule and the event (or breaker change) that raised it.
    pub id: String,
    pub rule: String,
    pub kind: AlertKind,
    pub at_ms: u64,
    /// The flow (or the plugin, for a breaker).
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub detail: String,
    pub owner: String,
    pub escalation: String,
    pub mitigation: String,
}

/// Most alerts kept for the dashboard.
const KEPT: usize = 200;
/// Most alerts waiting for delivery; more are dropped (and logged).
const QUEUE: usize = 1_000;
/// Most delivery attempts of one alert.
pub const MAX_TRIES: u32 = 8;

/// A flow's objective target (0–1), if it has one: what a burn rate is
/// measured against.
pub type ObjectiveTarget = Box<dyn Fn(&str) -> Option<f64> + Send + Sync>;

/// The host's alerts: raised from committed events, kept, delivered.
pub struct Alerts {
    rules: Vec<AlertRule>,
    recent: Mutex<VecDeque<Alert>>,
    outbox: Option<tokio::sync::mpsc::Sender<Alert>>,
    raised: Option<prometheus::IntCounterVec>,
    /// Alerts not delivered because the queue was full.
    dropped: Option<prometheus::IntCounter>,
    /// The sliding windows of the windowed rules, by rule name.
    windows: Mutex<std::collections::HashMap<String, Windows>>,
    objective_target: Option<ObjectiveTarget>,
    /// Ids of the `stuck` alerts the last sweep found (and raised once).
    stuck_raised: Mutex<std::collections::HashSet<String>>,
}

impl Alerts {
    /// Starts delivery (with a webhook) on the current tokio runtime.
    /// `raised` counts alerts by rule, for `/metrics`.
    pub fn start(config: &AlertConfig, raised: Option<prometheus::IntCounterVec>) -> Self {
        let outbox = config.webhook.clone().map(|url| {
            let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
            let secret = config.secret.clone().unwrap_or_default();
            tokio::spawn(deliver(rx, url, secret));
            tx
        });
        let windows = config
            .rules
            .iter()
            .filter_map(|r| {
                let min = r.min_events.unwrap_or(10) as usize;
                let threshold = r.threshold?;
                Some((r.name.clone(), Windows::new(r.window_ms(), threshold, min)))
            })
            .collect();
        Alerts {
            rules: config.rules.clone(),
            recent: Mutex::new(VecDeque::new()),
            outbox,
            raised,
            dropped: None,
            windows: Mutex::new(windows),
            objective_target: None,
            stuck_raised: Mutex::default(),
        }
    }

    /// Counting alerts the full delivery queue dropped (for `/metrics`).
    pub fn with_dropped_counter(mut self, dropped: prometheus::IntCounter) -> Self {
        self.dropped = Some(dropped);
        self
    }

    /// With where flows' objective targets are read (for `burn-rate`).
    pub fn with_objectives(mut self, target: ObjectiveTarget) -> Self {
        self.objective_target = Some(target);
        self
    }

    /// The rules of `kind`, for `subject`.
    fn rules_for(&self, kind: AlertKind, subject: &str) -> impl Iterator<Item = &AlertRule> {
        self.rules
            .iter()
            .filter(move |r| r.when == kind && r.only.as_deref().is_none_or(|o| o == subject))
    }

    /// Adds a sample to the windows of the `kind` rules for `flow` (and
    /// `step`); raises an alert for each that crosses its threshold.
    fn sample(&self, kind: AlertKind, flow: &str, step: Option<&str>, at_ms: u64, bad: bool) {
        let mut crossed = Vec::new();
        {
            let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
            for rule in self.rules_for(kind, flow) {
                if kind == AlertKind::StepFailureRate
                    && rule.step.is_some()
                    && rule.step.as_deref() != step
                {
                    continue;
                }
                let figure = match kind {
                    AlertKind::StepFailureRate => Figure::Rate,
                    AlertKind::Reports => Figure::Count,
                    _ => {
                        let Some(target) = self.objective_target.as_ref().and_then(|t| t(flow))
                        else {
                            continue;
                        };
                        Figure::BurnRate {
                            target,
                            short_ms: rule
                                .short_window
                                .map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX)),
                        }
                    }
                };
                let key = match step {
                    Some(step) => format!("{flow}/{step}"),
                    None => flow.to_string(),
                };
                let Some(w) = windows.get_mut(&rule.name) else {
                    continue;
                };
                if let Some(c) = w.add(&key, at_ms, bad, figure) {
                    crossed.push((rule.clone(), key, c));
                }
            }
        }
        for (rule, key, c) in crossed {
            let window = humantime::format_duration(rule.window.unwrap_or_default());
            let detail = match kind {
                AlertKind::StepFailureRate => format!(
                    "step '{}' of flow '{flow}': {} of {} attempts failed in the last {window} ({:.0} %, threshold {:.0} %)",
                    step.unwrap_or("?"),
                    c.bad,
                    c.all,
                    c.figure * 100.0,
                    rule.threshold.unwrap_or_default() * 100.0
                ),
                AlertKind::Reports => format!(
                    "{} user reports on runs of flow '{flow}' in the last {window} (threshold {})",
                    c.bad,
                    rule.threshold.unwrap_or_default()
                ),
                _ => format!(
                    "flow '{flow}' is spending its error budget {:.1}× as fast as its objective allows ({} of {} runs missed it in the last {window}; threshold {}×)",
                    c.figure,
                    c.bad,
                    c.all,
                    rule.threshold.unwrap_or_default()
                ),
            };
            self.raise_for(
                &rule,
                kind,
                flow,
                &format!("{key}/{at_ms}"),
                None,
                detail,
                at_ms,
            );
        }
    }

    /// Raises a `stuck` alert for each run that has stayed in a rule's
    /// state for longer than it allows, once per run and stay in the state:
    /// `runs` are (run id, flow, state, when it entered that state). A run
    /// is alerted on again only after a sweep no longer found it stuck.
    pub fn sweep(&self, runs: &[(String, String, RunState, u64)], now_ms: u64) {
        let mut stuck_now = std::collections::HashSet::new();
        let mut raise = Vec::new();
        {
            let raised = self.stuck_raised.lock().unwrap_or_else(|p| p.into_inner());
            for rule in self.rules.iter().filter(|r| r.when == AlertKind::Stuck) {
                let state = rule.state.unwrap_or(RunState::NeedsAttention);
                let limit = rule.longer_than.map_or(u64::MAX, |d| {
                    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
                });
                for (run, flow, s, since_ms) in runs {
                    let stayed = now_ms.saturating_sub(*since_ms);
                    if *s != state
                        || stayed <= limit
                        || rule.only.as_deref().is_some_and(|o| o != flow)
                    {
                        continue;
                    }
                    let key = format!("{run}/{since_ms}");
                    let id = format!("{}/{key}", rule.name);
                    if !raised.contains(&id) {
                        raise.push((rule, run, flow, key, stayed));
                    }
                    stuck_now.insert(id);
                }
            }
        }
        *self.stuck_raised.lock().unwrap_or_else(|p| p.into_inner()) = stuck_now;
        for (rule, run, flow, key, stayed) in raise {
            let state = rule.state.unwrap_or(RunState::NeedsAttention);
            let detail = format!(
                "the run has been {} for {} (longer than {})",
                state.as_str(),
                humantime::format_duration(Duration::from_secs(stayed / 1000)),
                humantime::format_duration(rule.longer_than.unwrap_or_default())
            );
            self.raise_for(
                rule,
                AlertKind::Stuck,
                flow,
                &key,
                Some(run.clone()),
                detail,
                now_ms,
            );
        }
    }

    /// The states `stuck` rules watch, for the sweep to list.
    pub fn stuck_states(&self) -> Vec<RunState> {
        let mut states: Vec<RunState> = self
            .rules
            .iter()
            .filter(|r| r.when == AlertKind::Stuck)
            .map(|r| r.state.unwrap_or(RunState::NeedsAttention))
            .collect();
        states.sort_by_key(|s| s.as_str());
        states.dedup();
        states
    }

    /// The newest alerts first.
    pub fn recent(&self) -> Vec<Alert> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.iter().rev().cloned().collect()
    }

    fn raise(
        &self,
        kind: AlertKind,
        subject: &str,
        key: &str,
        run: Option<String>,
        detail: String,
        at_ms: u64,
    ) {
        let rules: Vec<&AlertRule> = self.rules_for(kind, subject).collect();
        for rule in rules {
            self.raise_for(rule, kind, subject, key, run.clone(), detail.clone(), at_ms);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn raise_for(
        &self,
        rule: &AlertRule,
        kind: AlertKind,
        subject: &str,
        key: &str,
        run: Option<String>,
        detail: String,
        at_ms: u64,
    ) {
        let alert = Alert {
            id: format!("{}/{key}", rule.name),
            rule: rule.name.clone(),
            kind,
            at_ms,
            subject: subject.to_string(),
            run_id: run,
            detail: settle_types::bounds::cut_detail(&detail),
            owner: rule.owner.clone(),
            escalation: rule.escalation.clone(),
            mitigation: rule.mitigation.clone(),
        };
        tracing::warn!(alert = %alert.id, owner = %alert.owner, "alert {}: {}", kind.as_str(), alert.detail);
        if let Some(c) = &self.raised {
            c.with_label_values(&[&rule.name]).inc();
        }
        if let Some(tx) = &self.outbox
            && tx.try_send(alert.clone()).is_err()
        {
            tracing::error!(alert = %alert.id, "the alert queue is full: not delivered");
            if let Some(dropped) = &self.dropped {
                dropped.inc();
            }
        }
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back(alert);
    }
}

impl Observer for Alerts {
    fn committed(&self, _before: Option<RunState>, events: &[Event], after: &RunSummary) {
        for e in events {
            let step_name = |index: u32| after.steps.get(index as usize).map(String::as_str);
            match &e.kind {
                EventKind::StepCompleted { index, .. } | EventKind::StepFailed { index, .. } => {
                    let failed = matches!(e.kind, EventKind::StepFailed { .. });
                    let step = step_name(*index);
                    self.sample(
                        AlertKind::StepFailureRate,
                        &after.flow,
                        step,
                        e.at_ms,
                        failed,
                    );
                }
                EventKind::UserReported { .. } => {
                    self.sample(AlertKind::Reports, &after.flow, None, e.at_ms, true);
                }
                // A run counts once for its objective: bad when it missed
                // it, good when it first settled in time.
                EventKind::ObjectiveBreached { .. } => {
                    self.sample(AlertKind::BurnRate, &after.flow, None, e.at_ms, true);
                }
                EventKind::RunSettled
                    if !after.breached && after.first_settled_at_ms == Some(e.at_ms) =>
                {
                    self.sample(AlertKind::BurnRate, &after.flow, None, e.at_ms, false);
                }
                _ => {}
            }
            let (kind, detail) = match &e.kind {
                EventKind::RunDrifted { detail } => (AlertKind::Drift, detail.clone()),
                EventKind::ObjectiveBreached {
                    settled_within_ms,
                    elapsed_ms,
                } => (
                    AlertKind::ObjectiveBreached,
                    format!(
                        "not settled within {settled_within_ms} ms (now {elapsed_ms} ms after it was accepted)"
                    ),
                ),
                EventKind::RunHeld { cause, reason } => {
                    (AlertKind::Held, format!("{}: {reason}", cause.as_str()))
                }
                EventKind::UserReported { message, .. } => (AlertKind::Report, message.clone()),
                _ => continue,
            };
            let run = after.run_id.to_string();
            self.raise(
                kind,
                &after.flow,
                &format!("{run}/{}", e.seq),
                Some(run),
                detail,
                e.at_ms,
            );
        }
    }

    fn breaker_changed(&self, domain: &str, state: &str) {
        if state == "open" {
            let now = settle_types::now_ms();
            self.raise(
                AlertKind::BreakerOpen,
                domain,
                &format!("{domain}/{now}"),
                None,
                format!(
                    "the circuit breaker of {} opened: its attempts wait",
                    describe(domain)
                ),
                now,
            );
        }
    }
}

/// The CloudEvent (structured JSON) of an alert.
pub fn cloud_event(alert: &Alert) -> serde_json::Value {
    serde_json::json!({
        "specversion": "1.0",
        "id": alert.id,
        "source": "settle",
        "type": format!("dev.settle.alert.{}", alert.kind.as_str()),
        "subject": alert.subject,
        "time": humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + Duration::from_millis(alert.at_ms)
        ).to_string(),
        "datacontenttype": "application/json",
        "data": alert,
    })
}

/// `sha256=HEX` of HMAC-SHA256(`secret`, `body`): `Settle-Signature`.
pub use settle_types::signing::signature;

/// Alerts delivered at once: a receiver that hangs on one does not hold
/// back the others (each try has a 5 s timeout).
const DELIVERIES_IN_FLIGHT: usize = 8;

async fn deliver(mut rx: tokio::sync::mpsc::Receiver<Alert>, url: String, secret: String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(DELIVERIES_IN_FLIGHT));
    while let Some(alert) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (agent, url, secret) = (agent.clone(), url.clone(), secret.clone());
        tokio::spawn(async move {
            deliver_one(&agent, &url, &secret, &alert).await;
            drop(slot);
        });
    }
}

/// Delivers one alert: retried with backoff until the receiver answers
/// 2xx, at most [`MAX_TRIES`] times, always the same body and signature.
async fn deliver_one(agent: &ureq::Agent, url: &str, secret: &str, alert: &Alert) {
    let body = cloud_event(alert).to_string();
    let signed = signature(secret, body.as_bytes());
    let mut wait = Duration::from_millis(200);
    for attempt in 1..=MAX_TRIES {
        let (agent, url, body, signed) =
            (agent.clone(), url.to_string(), body.clone(), signed.clone());
        let answer = tokio::task::spawn_blocking(move || {
            agent
                .post(&url)
                .header("Content-Type", "application/cloudevents+json")
                .header("Settle-Signature", &signed)
                .send(body.as_bytes())
                .map(|r| r.status().as_u16())
        })
        .await;
        match answer {
            Ok(Ok(status)) if (200..300).contains(&status) => return,
            other => {
                tracing::warn!(alert = %alert.id, attempt, "webhook delivery failed: {other:?}");
                if attempt == MAX_TRIES {
                    tracing::error!(alert = %alert.id, "webhook delivery given up after {MAX_TRIES} tries");
                } else {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_needs_a_secret_and_rules_their_own_names() {
        let rule = |name: &str| AlertRule {
            name: name.into(),
            when: AlertKind::Held,
            only: None,
            owner: "ops".into(),
            escalation: String::new(),
            mitigation: String::new(),
            threshold: None,
            window: None,
            short_window: None,
            min_events: None,
            step: None,
            state: None,
            longer_than: None,
        };
        let mut c = AlertConfig {
            webhook: Some("http://127.0.0.1:1/h".into()),
            secret: None,
            rules: vec![rule("a")],
        };
        assert!(c.check().unwrap_err().contains("needs a `secret`"));
        c.secret = Some("k".into());
        assert_eq!(c.check(), Ok(()));
        c.webhook = Some("https://example.invalid/h".into());
        assert!(c.check().unwrap_err().contains("only http://"));
        c.webhook = None;
        c.rules.push(rule("a"));
        assert!(c.check().unwrap_err().contains("repeated"));
    }
}
