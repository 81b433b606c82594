//! Inbound webhooks: a third party (a payment provider's callback) delivers
//! a signal to a run without an API token. Each source has its own secret
//! (`[api.webhooks.NAME]` in settle.toml); a delivery is accepted only when
//!
//! - `Settle-Webhook-Signature: sha256=HEX` is the HMAC-SHA256, under the
//!   source's secret, of `TIMESTAMP.BODY`, with `TIMESTAMP` the
//!   `Settle-Webhook-Timestamp` header (Unix seconds);
//! - that timestamp is within the source's `tolerance` of now;
//! - the body is JSON naming the run (`run_id`, a JSON Pointer) and the
//!   delivery (`delivery_id`): a delivery id is taken once (it is the
//!   signal's idempotency key), so a replay is answered 200 and changes
//!   nothing;
//! - the body matches the signal's schema in the run's flow.
//!
//! A rejected delivery gets a 4xx naming the problem. One the source did
//! sign (a stale timestamp, no run id, a payload its signal refuses) is
//! logged and kept (the newest 100) for `GET /v1/hooks/rejected`; one it
//! did not sign (an unknown source, a bad signature) could come from
//! anyone, so it is answered 401 alike and logged at debug only.

use crate::problem::Problem;
use crate::{Shared, actions};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use settle_types::executor::Executor;
use settle_types::store::RunQueries;
use settle_types::{RunId, bounds};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// One source of inbound webhooks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSource {
    /// The HMAC-SHA256 key the source signs with.
    pub secret: String,
    /// The signal its deliveries are.
    pub signal: String,
    /// JSON Pointer to the run id in the body, e.g. `/metadata/run_id`.
    pub run_id: String,
    /// JSON Pointer to the delivery's own id, e.g. `/id`.
    #[serde(default = "default_delivery_id")]
    pub delivery_id: String,
    /// How far the signed timestamp may be from now.
    #[serde(default = "default_tolerance", with = "settle_types::duration_text")]
    pub tolerance: Duration,
}

fn default_delivery_id() -> String {
    "/id".into()
}

fn default_tolerance() -> Duration {
    Duration::from_secs(300)
}

impl WebhookSource {
    /// What is wrong with it, if anything.
    pub fn check(&self, name: &str) -> Result<(), String> {
        if self.secret.len() < 16 {
            return Err(format!(
                "[api.webhooks.{name}]: `secret` needs at least 16 characters"
            ));
        }
        if name == "rejected"
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "[api.webhooks.{name}]: a source name is letters, digits, '-' or '_', and not 'rejected'"
            ));
        }
        for (key, pointer) in [("run_id", &self.run_id), ("delivery_id", &self.delivery_id)] {
            if !pointer.starts_with('/') {
                return Err(format!(
                    "[api.webhooks.{name}]: `{key}` is a JSON Pointer like /metadata/run_id"
                ));
            }
        }
        Ok(())
    }
}

/// Most rejected deliveries kept.
const KEPT: usize = 100;

/// Rejected deliveries, newest last.
#[derive(Default)]
pub struct Rejected(Mutex<VecDeque<Value>>);

impl Rejected {
    fn keep(&self, source: &str, status: StatusCode, problem: &str) {
        tracing::warn!(
            source,
            status = status.as_u16(),
            "webhook delivery rejected: {problem}"
        );
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(json!({
            "at_ms": settle_types::now_ms(),
            "source": bounds::cut(source, 64),
            "status": status.as_u16(),
            "problem": bounds::cut_detail(problem),
        }));
    }

    pub fn list(&self) -> Vec<Value> {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().rev().cloned().collect()
    }
}

/// `POST /v1/hooks/{source}`.
pub async fn deliver<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    match accept(&api, &source, &headers, &bytes).await {
        Ok(response) => response,
        // Signed by the source: kept and logged, for its operator to see.
        Err(Refusal::Signed(problem)) => {
            let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
            api.rejected.keep(&source, status, &problem.detail);
            problem.into_response()
        }
        // Not proven to come from a source: anyone could send these, so
        // they fill neither the list nor the log above debug.
        Err(Refusal::Unsigned(problem)) => {
            tracing::debug!(
                source = %bounds::cut(&source.replace(|c: char| c.is_control(), ""), 64),
                "unsigned webhook delivery refused: {}",
                problem.detail
            );
            problem.into_response()
        }
    }
}

/// Why a delivery was refused, and whether the source signed it.
enum Refusal {
    Signed(Problem),
    Unsigned(Problem),
}

impl From<Problem> for Refusal {
    fn from(p: Problem) -> Self {
        Refusal::Signed(p)
    }
}

async fn accept<S: RunQueries + Clone, X: Executor>(
    api: &Shared<S, X>,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Refusal> {
    let unauthorized = |why: &str| {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "bad-webhook-signature",
            why.to_string(),
        )
    };
    let bad_signature =
        "the signature is not HMAC-SHA256 of TIMESTAMP.BODY under this source's secret";
    // An unknown source answers as a bad signature does: source names are
    // not to be found out by trying.
    let Some(source) = api.config.webhooks.get(name) else {
        return Err(Refusal::Unsigned(unauthorized(bad_signature)));
    };
    let header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    let (Some(timestamp), Some(signature)) = (
        header("settle-webhook-timestamp"),
        header("settle-webhook-signature"),
    ) else {
        return Err(Refusal::Unsigned(unauthorized(
            "needs Settle-Webhook-Timestamp and Settle-Webhook-Signature headers",
        )));
    };
    let mut signed = Vec::with_capacity(timestamp.len() + 1 + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    if !settle_types::signing::verify(&source.secret, &signed, signature) {
        return Err(Refusal::Unsigned(unauthorized(bad_signature)));
    }
    let Ok(at) = timestamp.trim().parse::<u64>() else {
        return Err(unauthorized("Settle-Webhook-Timestamp is not Unix seconds").into());
    };
    let now = settle_types::now_ms() / 1000;
    let tolerance = source.tolerance.as_secs();
    if at.abs_diff(now) > tolerance {
        return Err(unauthorized(&format!(
            "the timestamp is {} s from now, outside the {} s this source allows (a replay?)",
            at.abs_diff(now),
            tolerance
        ))
        .into());
    }
    let payload: Value = serde_json::from_slice(body)
        .map_err(|e| Problem::bad_request("bad-json", format!("the body is not JSON: {e}")))?;
    let field = |pointer: &str, what: &str| {
        payload
            .pointer(pointer)
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "missing-field",
                    format!("the body has no {what} at {pointer}"),
                )
                .at(pointer, "missing")
            })
    };
    let run = field(&source.run_id, "run id")?;
    let delivery = field(&source.delivery_id, "delivery id")?;
    let run: RunId = run.parse().map_err(|_| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad-run-id",
            format!(
                "'{}' at {} is not a run id",
                bounds::cut(&run, 64),
                source.run_id
            ),
        )
    })?;
    let key = format!("webhook:{name}:{delivery}");
    let by = format!("webhook:{name}");
    match api
        .engine
        .signal(run, &source.signal, payload, Some(key), by)
        .await
    {
        Ok(recorded) => Ok(actions::signal_answer(run, &source.signal, recorded)),
        Err(e) => Err(Refusal::Signed(actions::signal_problem(e))),
    }
}
