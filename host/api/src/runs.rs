//! Submitting runs and reading them: `POST /v1/flows/{flow}/runs`,
//! `GET /v1/runs`, `GET /v1/runs/{id}`, its events, and lookup by key.

use crate::auth::{Caller, Role};
use crate::language::Language;
use crate::problem::Problem;
use crate::{Shared, body};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use settle_engine::SubmitError;
use settle_engine::queries::{RunListing, step_views};
use settle_engine::status::RunStatus;
use settle_types::executor::Executor;
use settle_types::store::RunQueries;
use settle_types::{RunId, RunState, Stage, bounds};
use std::time::Duration;

/// A run id from the path: 400 naming it when it is not one.
pub fn run_id(text: &str) -> Result<RunId, Problem> {
    text.parse().map_err(|_| {
        Problem::bad_request(
            "bad-run-id",
            format!("'{}' is not a run id (a UUID)", bounds::cut(text, 64)),
        )
        .at("id", "not a UUID")
    })
}

/// The query string as (name, value) pairs: 400 for a malformed one.
pub fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, Problem> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(Vec::new());
    };
    if raw.len() > 4096 {
        return Err(Problem::bad_request(
            "bad-query",
            "the query string is longer than 4096 bytes",
        ));
    }
    serde_urlencoded_pairs(raw)
}

fn serde_urlencoded_pairs(raw: &str) -> Result<Vec<(String, String)>, Problem> {
    let decode = |s: &str| -> Result<String, Problem> {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        Problem::bad_request("bad-query", "a %-escape in the query is malformed")
                    })?;
                out.push(hex);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out)
            .map_err(|_| Problem::bad_request("bad-query", "the query is not UTF-8"))
    };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// 400 naming a query parameter the route does not take, and those it does.
pub(crate) fn unknown_parameter(name: &str, known: &str) -> Problem {
    let name = bounds::cut(name, 40);
    Problem::bad_request(
        "bad-query",
        format!("unknown query parameter '{name}' ({known})"),
    )
    .at(name, "unknown")
}

/// `?wait=30s`: how long to hold the answer, bounded by the host. The only
/// parameter a submission takes: another (`?wiat=`) is named, not ignored.
fn wait_of(pairs: &[(String, String)], max: Duration) -> Result<Option<Duration>, Problem> {
    if let Some((k, _)) = pairs.iter().find(|(k, _)| k != "wait") {
        return Err(unknown_parameter(k, "a submission takes only wait"));
    }
    let Some((_, text)) = pairs.first() else {
        return Ok(None);
    };
    let d = humantime::parse_duration(text).map_err(|e| {
        Problem::bad_request(
            "bad-query",
            format!("wait='{}': {e} (say e.g. 30s)", bounds::cut(text, 40)),
        )
        .at("wait", "not a duration")
    })?;
    Ok(Some(d.min(max)))
}

fn location(run: RunId) -> Value {
    json!({
        "status_url": format!("/v1/runs/{run}"),
        "stream_url": format!("/v1/runs/{run}/stream"),
    })
}

fn status_body(status: RunStatus, existing: Option<bool>, lang: Language) -> Value {
    let status = status.localized(lang.0);
    let mut body = serde_json::to_value(&status).unwrap_or(Value::Null);
    if let (Some(map), Value::Object(links)) = (body.as_object_mut(), location(status.run_id)) {
        map.extend(links);
        if let Some(existing) = existing {
            map.insert("existing".into(), json!(existing));
        }
    }
    body
}

/// `POST /v1/flows/{flow}/runs`.
pub async fn submit<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    Extension(caller): Extension<Caller>,
    Path(flow_name): Path<String>,
    RawQuery(raw): RawQuery,
    lang: Language,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Problem> {
    if api.is_draining() {
        return Err(Problem::unavailable(
            "the host is shutting down; submit again to another host or later",
        ));
    }
    let pairs = query_pairs(raw.as_deref())?;
    let wait = wait_of(&pairs, api.config.max_wait)?;
    let input = body::json(&headers, &bytes, bounds::MAX_INPUT_BYTES)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|k| !k.is_empty())
                .ok_or_else(|| {
                    Problem::bad_request(
                        "bad-idempotency-key",
                        "Idempotency-Key must be non-empty visible ASCII",
                    )
                    .at("Idempotency-Key", "not visible ASCII")
                })?
                .to_string(),
        ),
    };
    let Some(flow) = api.catalog.current(&flow_name) else {
        return Err(Problem::not_found(format!(
            "no flow '{}'; GET /v1/flows lists those offered",
            bounds::cut(&flow_name, 64)
        )));
    };
    api.auth.admit_submission(&caller)?;
    let submitted = api
        .engine
        .submit_as(&flow, input.clone(), key.clone(), Some(caller.name.clone()))
        .await
        .map_err(submit_problem)?;
    let run = submitted.run_id;
    if submitted.existing {
        // A repeat must be the same request: the same key with another
        // body is a client bug, not a retry.
        let events = api.queries.events(run).await?;
        let (first_input, first_by) = events
            .first()
            .and_then(|e| match &e.kind {
                settle_types::EventKind::RunAccepted {
                    input,
                    submitted_by,
                    ..
                } => Some((Some(input), submitted_by.as_deref())),
                _ => None,
            })
            .unwrap_or((None, None));
        // A submitter never learns of another token's run through its key.
        if !visible(&caller, first_by) {
            return Err(Problem::conflict(
                "idempotency-key-reused",
                "this Idempotency-Key is already used by another client of this flow; use a new key",
            ));
        }
        if first_input != Some(&input) {
            return Err(Problem::conflict(
                "idempotency-key-reused",
                format!(
                    "Idempotency-Key '{}' was used for run {run} with a different body; use a new key for a new request",
                    bounds::cut(key.as_deref().unwrap_or(""), 64)
                ),
            )
            .with("run_id", json!(run)));
        }
    }
    let mut code = StatusCode::ACCEPTED;
    if let Some(wait) = wait {
        // A host that is stopping answers with what it knows now.
        tokio::select! {
            _ = tokio::time::timeout(wait, api.engine.wait(run)) => {}
            _ = api.drained() => {}
        }
    }
    let status =
        api.queries.status(run).await?.ok_or_else(|| {
            Problem::internal(format!("run {run} was accepted but cannot be read"))
        })?;
    if wait.is_some() && status.stage == Stage::Done {
        code = StatusCode::OK;
    }
    let body = status_body(status, Some(submitted.existing), lang);
    let mut response = lang.mark((code, Json(body)).into_response());
    if let Ok(v) = HeaderValue::from_str(&format!("/v1/runs/{run}")) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

fn submit_problem(e: SubmitError) -> Problem {
    match e {
        SubmitError::InvalidInput {
            step,
            plugin,
            problem,
        } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-input",
            format!(
                "the input does not give step '{step}' (plugin '{plugin}') what it needs: {problem}"
            ),
        )
        .at(format!("steps/{step}"), problem),
        SubmitError::UnknownPlugin { step, plugin } => Problem::unavailable(format!(
            "step '{step}' uses plugin '{plugin}', which is not installed on this host"
        )),
        SubmitError::OverBounds { what, problem } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "over-bounds",
            format!("{what} rejected: {problem}"),
        ),
        SubmitError::Store(e) => e.into(),
    }
}

/// A submitter sees only the runs it submitted; to others they do not exist.
pub fn visible(caller: &Caller, submitted_by: Option<&str>) -> bool {
    caller.role != Role::Submitter || submitted_by == Some(caller.name.as_str())
}

/// The run, if it exists and the caller may see it.
pub async fn visible_run<S: RunQueries + Clone, X: Executor>(
    api: &Shared<S, X>,
    caller: &Caller,
    id: &str,
) -> Result<settle_types::RunSummary, Problem> {
    let run = run_id(id)?;
    match api.engine.store().summary(run).await? {
        Some(s) if visible(caller, s.submitted_by.as_deref()) => Ok(s),
        _ => Err(Problem::not_found(format!("no run {run}"))),
    }
}

/// `GET /v1/runs/{id}`: the status, with what is known of each step.
pub async fn get<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    lang: Language,
) -> Result<Response, Problem> {
    let summary = visible_run(&api, &caller, &id).await?;
    let run = summary.run_id;
    let status = api
        .queries
        .status(run)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no run {run}")))?;
    let events = api.queries.events(run).await?;
    let mut body = status_body(status, None, lang);
    if let Some(map) = body.as_object_mut() {
        map.insert("steps".into(), json!(step_views(&summary.steps, &events)));
        map.insert("reports".into(), json!(summary.reports));
        if let Some(key) = &summary.idempotency_key {
            map.insert("idempotency_key".into(), json!(key));
        }
    }
    Ok(lang.mark(Json(body).into_response()))
}

/// `GET /v1/runs/{id}/events`.
pub async fn events<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let summary = visible_run(&api, &caller, &id).await?;
    let events = api.queries.events(summary.run_id).await?;
    Ok(Json(json!({ "run_id": summary.run_id, "events": events })).into_response())
}

/// `GET /v1/flows/{flow}/runs/by-key/{key}`.
pub async fn by_key<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    Extension(caller): Extension<Caller>,
    Path((flow, key)): Path<(String, String)>,
    lang: Language,
) -> Result<Response, Problem> {
    if key.len() > bounds::MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(Problem::bad_request(
            "bad-idempotency-key",
            "the key is longer than any the host accepts",
        ));
    }
    let not_found = || {
        Problem::not_found(format!(
            "no run of flow '{}' has that idempotency key",
            bounds::cut(&flow, 64)
        ))
    };
    let status = api
        .queries
        .by_key(&flow, &key)
        .await?
        .ok_or_else(not_found)?;
    let summary = api
        .engine
        .store()
        .summary(status.run_id)
        .await?
        .ok_or_else(not_found)?;
    if !visible(&caller, summary.submitted_by.as_deref()) {
        return Err(not_found());
    }
    Ok(lang.mark(Json(status_body(status, None, lang)).into_response()))
}

/// The listing a query string asks for.
pub fn listing(pairs: &[(String, String)]) -> Result<RunListing, Problem> {
    let mut listing = RunListing {
        limit: 50,
        ..RunListing::default()
    };
    for (k, v) in pairs {
        match k.as_str() {
            "state" => {
                for s in v.split(',').filter(|s| !s.is_empty()) {
                    let state: RunState = s.parse().map_err(|e: String| {
                        Problem::bad_request("bad-query", e).at("state", "unknown state")
                    })?;
                    listing.states.push(state);
                }
            }
            "stage" => {
                listing.stage = Some(match v.as_str() {
                    "accepted" => Stage::Accepted,
                    "running" => Stage::Running,
                    "waiting" => Stage::Waiting,
                    "done" => Stage::Done,
                    _ => {
                        return Err(Problem::bad_request(
                            "bad-query",
                            format!(
                                "unknown stage '{}' (one of: accepted, running, waiting, done)",
                                bounds::cut(v, 40)
                            ),
                        )
                        .at("stage", "unknown stage"));
                    }
                })
            }
            "flow" => listing.flow = Some(bounds::cut(v, 256)),
            "since" => {
                let t = humantime::parse_rfc3339_weak(v)
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    .or_else(|| v.parse::<u64>().ok())
                    .ok_or_else(|| {
                        Problem::bad_request(
                            "bad-query",
                            "since must be an RFC 3339 time or Unix milliseconds",
                        )
                        .at("since", "not a time")
                    })?;
                listing.since_ms = Some(t);
            }
            "cursor" => {
                listing.cursor = Some(run_id(v).map_err(|p| p.at("cursor", "not a run id"))?)
            }
            "limit" => {
                listing.limit = v.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    Problem::bad_request("bad-query", "limit must be a whole number from 1")
                        .at("limit", "not a number")
                })?
            }
            _ => {
                return Err(unknown_parameter(
                    k,
                    "state, stage, flow, since, cursor, limit",
                ));
            }
        }
    }
    Ok(listing)
}

/// `GET /v1/runs`.
pub async fn list<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    RawQuery(raw): RawQuery,
    lang: Language,
) -> Result<Response, Problem> {
    let listing = listing(&query_pairs(raw.as_deref())?)?;
    let mut page = api.queries.list(&listing).await?;
    page.runs = page.runs.into_iter().map(|s| s.localized(lang.0)).collect();
    Ok(lang.mark(Json(page).into_response()))
}
