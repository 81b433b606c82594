//! Alerts: rules in settle.toml (`[[alerts.rules]]`) turn what the engine
//! commits into alerts for people — a run drifted, missed its objective,
//! waits for an operator, got a user's report, or a plugin's circuit
//! breaker opened. Each alert carries the rule's owner, escalation path and
//! suggested mitigation, is kept for the dashboard (`GET /v1/alerts`), is
//! counted in `/metrics`, and, with a webhook configured, is POSTed as a
//! CloudEvent (structured JSON), signed with HMAC-SHA256 of the body in
//! `Settle-Signature: sha256=HEX`, retried with backoff until the receiver
//! answers 2xx (at most [`MAX_TRIES`]), and always under the same `id`, so
//! a receiver deduplicates repeats.
//!
//! Delivery is at least once while the host runs; alerts still queued when
//! it stops are lost (they are in the run logs, where they came from).

use serde::{Deserialize, Serialize};
use settle_types::observe::Observer;
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
    /// Only runs of this flow (or breakers of this plugin).
    #[serde(default)]
    pub only: Option<String>,
    pub owner: String,
    #[serde(default)]
    pub escalation: String,
    #[serde(default)]
    pub mitigation: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    Drift,
    ObjectiveBreached,
    Held,
    Report,
    BreakerOpen,
}

impl AlertKind {
    fn as_str(self) -> &'static str {
        match self {
            AlertKind::Drift => "drift",
            AlertKind::ObjectiveBreached => "objective-breached",
            AlertKind::Held => "held",
            AlertKind::Report => "report",
            AlertKind::BreakerOpen => "breaker-open",
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

/// The host's alerts: raised from committed events, kept, delivered.
pub struct Alerts {
    rules: Vec<AlertRule>,
    recent: Mutex<VecDeque<Alert>>,
    outbox: Option<tokio::sync::mpsc::Sender<Alert>>,
    raised: Option<prometheus::IntCounterVec>,
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
        Alerts {
            rules: config.rules.clone(),
            recent: Mutex::new(VecDeque::new()),
            outbox,
            raised,
        }
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
        for rule in self
            .rules
            .iter()
            .filter(|r| r.when == kind && r.only.as_deref().is_none_or(|o| o == subject))
        {
            let alert = Alert {
                id: format!("{}/{key}", rule.name),
                rule: rule.name.clone(),
                kind,
                at_ms,
                subject: subject.to_string(),
                run_id: run.clone(),
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
            }
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() == KEPT {
                recent.pop_front();
            }
            recent.push_back(alert);
        }
    }
}

impl Observer for Alerts {
    fn committed(&self, _before: Option<RunState>, events: &[Event], after: &RunSummary) {
        for e in events {
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
                format!("the circuit breaker of plugin '{domain}' opened: its attempts wait"),
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

/// `sha256=HEX` of HMAC-SHA256(`secret`, `body`).
pub fn signature(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver(mut rx: tokio::sync::mpsc::Receiver<Alert>, url: String, secret: String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    while let Some(alert) = rx.recv().await {
        let body = cloud_event(&alert).to_string();
        let signed = signature(&secret, body.as_bytes());
        let mut wait = Duration::from_millis(200);
        for attempt in 1..=MAX_TRIES {
            let (agent, url, body, signed) =
                (agent.clone(), url.clone(), body.clone(), signed.clone());
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
                Ok(Ok(status)) if (200..300).contains(&status) => break,
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

    #[test]
    fn signatures_are_hmac_sha256_of_the_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
