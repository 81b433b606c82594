//! One-time approval links: a URL per approver of a waiting approval step,
//! so a person can decide from an e-mail or a chat message without an API
//! token. The link is the credential: the run, the step, the approver and
//! the wait it belongs to (its `until`), signed with HMAC-SHA256 under the
//! host's `api.link_secret`. It works once per person and pass of the step
//! (the engine keeps each person's first decision; a repeat changes
//! nothing), and only while that very wait lasts: a step run again waits
//! anew, with an `until` of its own, and the old links are dead.

use crate::auth::Caller;
use crate::problem::Problem;
use crate::runs::visible_run;
use crate::{Shared, body};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use settle_engine::Approver;
use settle_types::executor::Executor;
use settle_types::store::RunQueries;
use settle_types::{RunId, RunSummary};

/// The longest token accepted: anything longer is not one of ours.
const MAX_TOKEN_CHARS: usize = 2048;

/// What a link says: who may decide what, for which wait.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Claims {
    run: RunId,
    step: String,
    approver: String,
    /// The operator who asked for the link: named with the decision.
    issued_by: String,
    /// The wait this link belongs to (`pausing_until` of the run).
    until: u64,
}

fn mint(secret: &str, claims: &Claims) -> String {
    let body = hex::encode(serde_json::to_vec(claims).unwrap_or_default());
    let mac = settle_types::signing::signature(secret, body.as_bytes());
    format!("{body}.{}", mac.trim_start_matches("sha256="))
}

fn open(secret: &str, token: &str) -> Option<Claims> {
    if token.len() > MAX_TOKEN_CHARS {
        return None;
    }
    let (body, mac) = token.split_once('.')?;
    if !settle_types::signing::verify(secret, body.as_bytes(), &format!("sha256={mac}")) {
        return None;
    }
    serde_json::from_slice(&hex::decode(body).ok()?).ok()
}

fn secret<S: RunQueries + Clone, X: Executor>(api: &Shared<S, X>) -> Result<&str, Problem> {
    api.config.link_secret.as_deref().ok_or_else(|| {
        Problem::conflict(
            "no-link-secret",
            "approval links need a secret: set api.link_secret in settle.toml (at least 16 characters)",
        )
    })
}

/// The approval the run waits for at `step` now, as (until, approvers).
async fn waiting_approval<S: RunQueries + Clone, X: Executor>(
    api: &Shared<S, X>,
    summary: &RunSummary,
    step: &str,
) -> Result<(u64, Vec<String>), Problem> {
    let gone = || {
        Problem::new(
            StatusCode::GONE,
            "link-expired",
            format!(
                "run {} does not wait for approval at step '{}' now: the link has expired",
                summary.run_id,
                settle_types::bounds::cut(step, 64)
            ),
        )
    };
    let awaiting = summary
        .awaiting()
        .filter(|a| a.step == step && a.needed.is_some());
    let until = awaiting.and_then(|a| a.until_ms).ok_or_else(gone)?;
    let flow = api
        .engine
        .flow_for(summary)
        .await
        .map_err(|why| Problem::conflict("flow-unreadable", why))?;
    let approvers = flow
        .steps
        .iter()
        .find(|s| s.name == step)
        .and_then(|s| s.approval.as_ref())
        .map(|a| a.approvers.clone())
        .ok_or_else(gone)?;
    Ok((until, approvers))
}

/// `GET /v1/runs/{id}/approvals/{step}/links`: one link per approver the
/// step names (people allowed by role alone have no name to link to).
pub async fn list<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    Extension(caller): Extension<Caller>,
    Path((id, step)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let secret = secret(&api)?;
    let summary = visible_run(&api, &caller, &id).await?;
    let (until, approvers) = waiting_approval(&api, &summary, &step).await?;
    let links: Vec<_> = approvers
        .into_iter()
        .filter(|a| summary.submitted_by.as_deref() != Some(a.as_str()))
        .map(|approver| {
            let token = mint(
                secret,
                &Claims {
                    run: summary.run_id,
                    step: step.clone(),
                    approver: approver.clone(),
                    issued_by: caller.name.clone(),
                    until,
                },
            );
            json!({ "approver": approver, "path": format!("/v1/approve/{token}"), "expires_at_ms": until })
        })
        .collect();
    tracing::info!(run = %summary.run_id, step = %step, by = %caller.name, "approval links handed out");
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "run_id": summary.run_id, "step": step, "links": links })),
    )
        .into_response())
}

/// The link's claims, checked: signed by this host, and its wait still on.
async fn claims<S: RunQueries + Clone, X: Executor>(
    api: &Shared<S, X>,
    token: &str,
) -> Result<(Claims, RunSummary), Problem> {
    let secret = secret(api)?;
    let claims = open(secret, token).ok_or_else(|| Problem::not_found("no such approval link"))?;
    let summary = api
        .engine
        .store()
        .summary(claims.run)
        .await?
        .ok_or_else(|| Problem::not_found("no such approval link"))?;
    let (until, _) = waiting_approval(api, &summary, &claims.step).await?;
    if until != claims.until {
        return Err(Problem::new(
            StatusCode::GONE,
            "link-expired",
            "this link belongs to an earlier wait of the step: ask for a new one",
        ));
    }
    Ok((claims, summary))
}

/// `GET /v1/approve/{token}`: a page with the request and two buttons.
pub async fn page<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    Path(token): Path<String>,
) -> Result<Response, Problem> {
    let (claims, summary) = claims(&api, &token).await?;
    let phrase = summary.phrase(settle_types::now_ms(), false);
    let html = PAGE
        .replace("{approver}", &escape(&claims.approver))
        .replace("{step}", &escape(&claims.step))
        .replace("{run}", &escape(&claims.run.to_string()))
        .replace("{flow}", &escape(&summary.flow))
        .replace("{phrase}", &escape(&phrase));
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        html,
    )
        .into_response())
}

/// `POST /v1/approve/{token}`: `{decision: approve | reject, comment?}`,
/// decided as the link's approver.
pub async fn decide<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Problem> {
    let body = body::object_or_empty(&headers, &bytes, 16 * 1024)?;
    let approve = crate::actions::decision(&body)?;
    let comment = body::text_field(&body, "comment", false, 1024)?;
    let (claims, _) = claims(&api, &token).await?;
    let who = Approver {
        name: &claims.approver,
        role: "link",
        identified: true,
        via_link_from: Some(&claims.issued_by),
    };
    crate::actions::decided(
        api.engine
            .decide_approval(claims.run, &claims.step, who, approve, comment)
            .await,
        claims.run,
        &claims.step,
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Approval: {step}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:16px system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em}
button{font-size:1em;padding:.4em 1.2em;margin-right:.6em}textarea{width:100%}</style></head>
<body>
<h1>Approval asked of {approver}</h1>
<p>Step <b>{step}</b> of flow <b>{flow}</b>, run <code>{run}</code>.</p>
<p id="phrase">{phrase}</p>
<p><textarea id="comment" rows="3" placeholder="comment (recorded with your decision)"></textarea></p>
<p><button id="approve" type="button">Approve</button><button id="reject" type="button">Reject</button></p>
<p id="result" role="status"></p>
<script>
async function decide(decision) {
  const comment = document.getElementById("comment").value.trim();
  const r = await fetch(location.pathname, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(comment ? { decision, comment } : { decision }) });
  const answer = await r.json().catch(() => ({}));
  document.getElementById("result").textContent = r.ok
    ? (answer.recorded ? "Your decision (" + decision + ") is recorded. Thank you." : "Your decision was recorded before; the first one stands.")
    : "Not recorded: " + (answer.detail || r.status);
  if (r.ok) for (const b of document.querySelectorAll("button")) b.disabled = true;
}
document.getElementById("approve").onclick = () => decide("approve");
document.getElementById("reject").onclick = () => decide("reject");
</script>
</body></html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_opens_only_under_its_secret_and_unaltered() {
        let claims = Claims {
            run: RunId::new(),
            step: "finance".into(),
            approver: "ann".into(),
            issued_by: "cy".into(),
            until: 42,
        };
        let token = mint("secret-of-sixteen-chars", &claims);
        assert_eq!(open("secret-of-sixteen-chars", &token), Some(claims));
        assert_eq!(open("another-secret-of-16", &token), None);
        // Another approver's name, with the same signature.
        let (body, mac) = token.split_once('.').unwrap();
        let forged = hex::encode(
            String::from_utf8(hex::decode(body).unwrap())
                .unwrap()
                .replace("ann", "bob"),
        );
        assert_eq!(
            open("secret-of-sixteen-chars", &format!("{forged}.{mac}")),
            None
        );
        assert_eq!(open("secret-of-sixteen-chars", "x"), None);
        assert_eq!(open("secret-of-sixteen-chars", &"a".repeat(5000)), None);
    }
}
