//! Operator actions on runs (one, or many by filter) and user reports. Each
//! is an audited event: the token's name, the time, and the reason given.

use crate::auth::Caller;
use crate::problem::Problem;
use crate::runs::{listing, query_pairs, unknown_parameter, visible_run};
use crate::{Shared, body};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, MatchedPath, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use settle_engine::{ActError, OperatorCommand, Requested};
use settle_types::executor::Executor;
use settle_types::store::RunQueries;
use settle_types::{EventKind, OperatorAction, RunId, bounds};

/// Longest reason or report, bytes.
const MAX_TEXT: usize = 4096;
/// Most runs one bulk action touches.
const MAX_BULK: usize = 10_000;

fn action_named(name: &str) -> Option<OperatorAction> {
    Some(match name {
        "retry" => OperatorAction::Retry,
        "compensate" => OperatorAction::Compensate,
        "cancel" => OperatorAction::Cancel,
        "pause" => OperatorAction::Pause,
        "resume" => OperatorAction::Resume,
        "restart" => OperatorAction::Restart,
        "accept-drift" => OperatorAction::AcceptDrift,
        "reapply" => OperatorAction::Reapply,
        _ => return None,
    })
}

fn act_problem(e: ActError) -> Problem {
    match e {
        ActError::NoSuchRun(run) => Problem::not_found(format!("no run {run}")),
        ActError::Busy(run) => Problem::conflict(
            "run-busy",
            format!(
                "run {run} is being driven right now; pause it first, or act once it waits for an operator"
            ),
        ),
        e @ ActError::Refused { .. } => Problem::conflict("action-refused", e.to_string()),
        e @ ActError::FlowUnreadable { .. } => Problem::conflict("flow-unreadable", e.to_string()),
        ActError::Store(e) => e.into(),
    }
}

/// `POST /v1/runs/{id}/{action}`.
// Each argument is one axum extractor: what the request carries.
#[allow(clippy::too_many_arguments)]
pub async fn act<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    Extension(caller): Extension<Caller>,
    matched: MatchedPath,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    lang: crate::language::Language,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Problem> {
    let name = matched.as_str().rsplit('/').next().unwrap_or("");
    let action = action_named(name).ok_or_else(|| Problem::not_found("no such action"))?;
    let body = body::object_or_empty(&headers, &bytes, 64 * 1024)?;
    let reason = body::text_field(&body, "reason", false, MAX_TEXT)?.unwrap_or_default();
    let step = step_of(action, query.as_deref(), &body)?;
    let summary = visible_run(&api, &caller, &id).await?;
    let command = OperatorCommand {
        action,
        by: format!("token:{}", caller.name),
        reason,
        step,
    };
    match api.engine.request(summary.run_id, command).await.map_err(act_problem)? {
        Requested::Applied(_) => {
            let status = api.queries.status(summary.run_id).await?;
            let status = status.map(|s| s.localized(lang.0));
            Ok(lang.mark(
                Json(json!({ "applied": true, "status": status })).into_response(),
            ))
        }
        Requested::Deferred => Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "applied": false,
                "detail": format!("the run is moving: it will {name} at its next step boundary (an attempt in progress finishes first)"),
                "status_url": format!("/v1/runs/{}", summary.run_id),
            })),
        )
            .into_response()),
    }
}

/// The step an action names: `retry`'s optional `step` (the one the run
/// stopped at), `restart`'s required `from_step` (query or body).
fn step_of(
    action: OperatorAction,
    query: Option<&str>,
    body: &serde_json::Map<String, Value>,
) -> Result<Option<String>, Problem> {
    let restart = action == OperatorAction::Restart;
    let mut from_query = None;
    for (name, value) in query_pairs(query)? {
        match name.as_str() {
            "from_step" if restart => from_query = Some(value),
            other if restart => return Err(unknown_parameter(other, "from_step")),
            other => return Err(unknown_parameter(other, "none")),
        }
    }
    if !restart {
        return body::text_field(body, "step", false, 256);
    }
    let from_body = body::text_field(body, "from_step", false, 256)?;
    let step = match (from_query, from_body) {
        (Some(q), Some(b)) if q != b => {
            return Err(Problem::bad_request(
                "conflicting-step",
                format!(
                    "from_step is '{}' in the query and '{}' in the body; give it once",
                    bounds::cut(&q, 64),
                    bounds::cut(&b, 64)
                ),
            )
            .at("from_step", "given twice"));
        }
        (q, b) => q.or(b),
    };
    match step {
        Some(s) if s.len() <= 256 => Ok(Some(s)),
        Some(_) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too-long",
            "from_step is longer than 256 bytes",
        )
        .at("from_step", "too long")),
        None => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "from-step-required",
            "a restart names the step to run again from: ?from_step=STEP",
        )
        .at("from_step", "required")),
    }
}

/// `POST /v1/runs/actions`: one action on every run a filter selects.
pub async fn bulk<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Problem> {
    let body = body::object_or_empty(&headers, &bytes, 64 * 1024)?;
    let name = body::text_field(&body, "action", true, 32)?.unwrap_or_default();
    let action = action_named(&name).ok_or_else(|| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown-action",
            format!(
                "unknown action '{}' (retry, compensate, cancel, pause, resume, restart, accept-drift, reapply)",
                bounds::cut(&name, 32)
            ),
        )
        .at("/action", "unknown")
    })?;
    let reason = body::text_field(&body, "reason", true, MAX_TEXT)?.unwrap_or_default();
    // Only a restart names a step in bulk: `from_step`, the same for all.
    let step = match action {
        OperatorAction::Restart => step_of(action, None, &body)?,
        _ => None,
    };
    let dry_run = match body.get("dry_run") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "wrong-type",
                "'dry_run' must be true or false",
            )
            .at("/dry_run", "not a boolean"));
        }
    };
    // The filter: the same names as `GET /v1/runs` takes.
    let filter = match body.get("filter") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Array(items) => items
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Some(_) => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "wrong-type",
                "'filter' must be an object",
            )
            .at("/filter", "not an object"));
        }
    };
    if filter.iter().any(|(k, _)| k == "cursor" || k == "limit") {
        return Err(Problem::bad_request(
            "bad-filter",
            "a bulk filter takes state, stage, flow and since",
        )
        .at("/filter", "cursor and limit are not filters"));
    }
    if filter.is_empty() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "filter-required",
            "a bulk action needs a filter (state, stage, flow or since); it never applies to every run by accident",
        )
        .at("/filter", "required"));
    }
    let mut listing = listing(&filter)?;
    listing.limit = settle_engine::queries::MAX_PAGE;
    let mut runs: Vec<RunId> = Vec::new();
    loop {
        let page = api.queries.list(&listing).await?;
        runs.extend(page.runs.iter().map(|s| s.run_id));
        match page.next_cursor {
            Some(c) if runs.len() < MAX_BULK => listing.cursor = Some(c),
            _ => break,
        }
    }
    runs.truncate(MAX_BULK);
    if dry_run {
        return Ok(
            Json(json!({ "dry_run": true, "action": name, "matched": runs.len() })).into_response(),
        );
    }
    let (mut applied, mut deferred) = (0usize, 0usize);
    let mut refused = Vec::new();
    for run in &runs {
        let command = OperatorCommand {
            action,
            by: format!("token:{}", caller.name),
            reason: reason.clone(),
            step: step.clone(),
        };
        match api.engine.request(*run, command).await {
            Ok(Requested::Applied(_)) => applied += 1,
            Ok(Requested::Deferred) => deferred += 1,
            Err(e) => {
                if refused.len() < 100 {
                    refused.push(json!({ "run_id": run, "why": e.to_string() }));
                }
            }
        }
    }
    Ok(Json(json!({
        "dry_run": false,
        "action": name,
        "matched": runs.len(),
        "applied": applied,
        "deferred": deferred,
        "refused": refused,
    }))
    .into_response())
}

/// `POST /v1/runs/{id}/reports`.
pub async fn report<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Problem> {
    let body = body::object_or_empty(&headers, &bytes, 64 * 1024)?;
    let message = body::text_field(&body, "message", true, MAX_TEXT)?.unwrap_or_default();
    if message.trim().is_empty() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing-field",
            "'message' must say something",
        )
        .at("/message", "empty"));
    }
    let field = body::text_field(&body, "field", false, 256)?;
    let summary = visible_run(&api, &caller, &id).await?;
    let kind = EventKind::UserReported {
        message,
        field,
        by: format!("token:{}", caller.name),
    };
    api.engine
        .annotate(summary.run_id, kind)
        .await
        .map_err(act_problem)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "recorded": true, "run_id": summary.run_id, "reports": summary.reports.saturating_add(1) })),
    )
        .into_response())
}

/// `POST /v1/runs/{id}/signals/{name}`.
pub async fn signal<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    Extension(caller): Extension<Caller>,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Problem> {
    let body = body::object_or_empty(&headers, &bytes, settle_engine::MAX_SIGNAL_BYTES + 1024)?;
    let payload = body.get("payload").cloned().unwrap_or(Value::Null);
    let header_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let key = match body::text_field(&body, "idempotency_key", false, 512)? {
        Some(k) => Some(k),
        None => header_key,
    };
    if key.as_ref().is_some_and(|k| k.len() > 512) {
        return Err(Problem::bad_request(
            "bad-idempotency-key",
            "the key is longer than 512 bytes",
        ));
    }
    let summary = visible_run(&api, &caller, &id).await?;
    let run = summary.run_id;
    let by = format!("token:{}", caller.name);
    // Keys are the sender's own: no one can take another sender's key
    // (a webhook's delivery id) first.
    let key = key.map(|k| format!("{by}:{k}"));
    match api.engine.signal(run, &name, payload, key, by).await {
        Ok(recorded) => Ok(signal_answer(run, &name, recorded)),
        Err(e) => Err(signal_problem(e)),
    }
}

/// `POST /v1/flows/{flow}/signals/{name}`: a signal addressed by the
/// value its step correlates on (`{correlation, payload, idempotency_key?}`).
pub async fn signal_by_correlation<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    Extension(caller): Extension<Caller>,
    Path((flow, name)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Problem> {
    let body = body::object_or_empty(&headers, &bytes, settle_engine::MAX_SIGNAL_BYTES + 1024)?;
    let Some(value) = body::text_field(&body, "correlation", true, 256)? else {
        return Err(Problem::bad_request(
            "missing-field",
            "'correlation' names the run by the value its step correlates on",
        ));
    };
    // Only a flow that correlates on this signal is looked through.
    let correlates = api.catalog.versions(&flow).iter().any(|v| {
        v.flow
            .steps
            .iter()
            .filter_map(|s| s.signal.as_ref())
            .any(|g| g.name == name && g.correlate.is_some())
    });
    if !correlates {
        return Err(Problem::not_found(format!(
            "flow '{}' has no signal '{}' with `correlate:`",
            bounds::cut(&flow, 64),
            bounds::cut(&name, 64)
        )));
    }
    let run = api
        .engine
        .run_by_correlation(&flow, &name, &value, |s| {
            crate::runs::visible(&caller, s.submitted_by.as_deref())
        })
        .await
        .map_err(signal_problem)?;
    // A submitter finds only its own runs, as by id.
    let summary = visible_run(&api, &caller, &run.to_string()).await?;
    let payload = body.get("payload").cloned().unwrap_or(Value::Null);
    let by = format!("token:{}", caller.name);
    let key = body::text_field(&body, "idempotency_key", false, 512)?.map(|k| format!("{by}:{k}"));
    match api
        .engine
        .signal(summary.run_id, &name, payload, key, by)
        .await
    {
        Ok(recorded) => Ok(signal_answer(summary.run_id, &name, recorded)),
        Err(e) => Err(signal_problem(e)),
    }
}

/// 201 for a signal recorded, 200 for a repeat that changed nothing.
pub(crate) fn signal_answer(run: RunId, signal: &str, recorded: bool) -> Response {
    let status = if recorded {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = json!({
        "run_id": run,
        "signal": signal,
        "recorded": recorded,
        "duplicate": !recorded,
    });
    (status, Json(body)).into_response()
}

pub(crate) fn signal_problem(e: settle_engine::SignalError) -> Problem {
    use settle_engine::SignalError as E;
    match e {
        E::NoSuchRun(run) => Problem::not_found(format!("no run {run}")),
        e @ E::NotCorrelated { .. } => Problem::not_found(e.to_string()),
        e @ E::Ambiguous { .. } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ambiguous-correlation",
            e.to_string(),
        )
        .at("/correlation", "several runs"),
        e @ (E::Ended { .. } | E::TooMany(_)) => Problem::conflict("signal-refused", e.to_string()),
        e @ E::Unknown { .. } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown-signal",
            e.to_string(),
        ),
        e @ E::Invalid { .. } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-signal",
            e.to_string(),
        )
        .at("/payload", "does not match"),
        E::Act(e) => act_problem(e),
    }
}

/// `POST /v1/runs/{id}/approvals/{step}`.
pub async fn approve<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    Extension(caller): Extension<Caller>,
    Path((id, step)): Path<(String, String)>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Problem> {
    let body = body::object_or_empty(&headers, &bytes, 16 * 1024)?;
    let approve = decision(&body)?;
    let comment = body::text_field(&body, "comment", false, 1024)?;
    let summary = visible_run(&api, &caller, &id).await?;
    let run = summary.run_id;
    let who = settle_engine::Approver {
        name: &caller.name,
        role: caller.role.as_str(),
        identified: api.auth.enabled(),
        via_link_from: None,
    };
    decided(
        api.engine
            .decide_approval(run, &step, who, approve, comment)
            .await,
        run,
        &step,
    )
}

/// `decision` of an approval's body: approve (`true`) or reject.
pub(crate) fn decision(body: &serde_json::Map<String, serde_json::Value>) -> Result<bool, Problem> {
    match body::text_field(body, "decision", true, 16)?.as_deref() {
        Some("approve") => Ok(true),
        Some("reject") => Ok(false),
        _ => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad-decision",
            "'decision' is approve or reject",
        )
        .at("/decision", "approve or reject")),
    }
}

/// The answer to a decision: 201 recorded, 200 a repeat that changed
/// nothing, 403 someone the step does not let decide.
pub(crate) fn decided(
    result: Result<bool, settle_engine::SignalError>,
    run: settle_types::RunId,
    step: &str,
) -> Result<Response, Problem> {
    match result {
        Ok(recorded) => Ok((
            if recorded {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            Json(json!({
                "run_id": run,
                "step": step,
                "recorded": recorded,
                "duplicate": !recorded,
            })),
        )
            .into_response()),
        Err(settle_engine::SignalError::Invalid { problem, .. }) => Err(Problem::new(
            StatusCode::FORBIDDEN,
            "not-an-approver",
            problem,
        )),
        Err(e) => Err(signal_problem(e)),
    }
}
