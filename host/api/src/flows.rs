//! Flows and plugins: what a host offers. `PUT /v1/flows/{flow}` registers
//! a version after validating it against the installed plugins; runs in
//! flight keep the version they started with; a version that unfinished
//! runs still use cannot be deleted.

use crate::problem::Problem;
use crate::{Shared, body};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use settle_engine::catalog::{CatalogError, MAX_FLOW_BYTES};
use settle_flow::{Flow, PluginFacts};
use settle_types::bounds;
use settle_types::executor::Executor;
use settle_types::store::RunQueries;

fn flow_json(flow: &Flow) -> serde_json::Value {
    json!({
        "name": flow.name,
        "version": flow.version,
        "description": flow.description,
        "digest": flow.digest,
        "steps": flow.steps.iter().map(|s| match (&s.wait, &s.signal, &s.approval) {
            (Some(_), _, _) => json!({"name": s.name, "wait": true}),
            (_, Some(g), _) => json!({"name": s.name, "signal": g.name}),
            (_, _, Some(_)) => json!({"name": s.name, "approval": true}),
            _ => match &s.parallel {
                Some(p) => json!({
                    "name": s.name,
                    "parallel": {
                        "join": match p.join {
                            settle_flow::Join::All => json!("all"),
                            settle_flow::Join::First(n) => json!({"first": n}),
                        },
                        "branches": p.branches.iter()
                            .map(|b| json!({"name": b.name, "plugin": b.call.plugin}))
                            .collect::<Vec<_>>(),
                    },
                }),
                None => json!({"name": s.name, "plugin": s.plugin}),
            },
        }).collect::<Vec<_>>(),
        "runs_url": format!("/v1/flows/{}/runs", flow.name),
    })
}

/// `GET /v1/flows`.
pub async fn list<S: RunQueries + Clone, X: Executor>(State(api): State<Shared<S, X>>) -> Response {
    let flows: Vec<_> = api.catalog.all().iter().map(|f| flow_json(f)).collect();
    Json(json!({ "flows": flows })).into_response()
}

/// `PUT /v1/flows/{flow}`: the body is the flow's YAML.
pub async fn put<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, Problem> {
    body::expect_type(
        &headers,
        &[
            "application/yaml",
            "application/x-yaml",
            "text/yaml",
            "text/plain",
        ],
    )?;
    if bytes.len() > MAX_FLOW_BYTES {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!(
                "the flow has {} bytes; the limit is {MAX_FLOW_BYTES}",
                bytes.len()
            ),
        ));
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| Problem::bad_request("bad-flow", format!("the flow is not UTF-8: {e}")))?;
    let file = format!("{}.yaml", bounds::cut(&name, 64));
    let flow = Flow::parse(text, &file).map_err(|errors| {
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-flow",
            format!("the flow is not valid: {errors}"),
        );
        for e in &errors.0 {
            p = p.at(format!("{}:{}", e.at.line, e.at.column), e.message.clone());
        }
        p
    })?;
    let installed: Vec<PluginFacts> = api
        .engine
        .executor()
        .plugins()
        .iter()
        .map(|p| PluginFacts::of(p))
        .collect();
    flow.check_plugins(&file, &installed).map_err(|errors| {
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-flow",
            format!("the flow does not fit the installed plugins: {errors}"),
        );
        for e in &errors.0 {
            p = p.at(format!("{}:{}", e.at.line, e.at.column), e.message.clone());
        }
        p
    })?;
    let body = flow_json(&flow);
    match api.catalog.register(&name, flow) {
        Ok(true) => Ok((StatusCode::CREATED, Json(body)).into_response()),
        Ok(false) => Ok(Json(body).into_response()),
        Err(e @ CatalogError::NameMismatch { .. }) => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "name-mismatch",
            e.to_string(),
        )
        .at("name", "differs from the path")),
        Err(e @ CatalogError::VersionTaken { .. }) => {
            Err(Problem::conflict("version-taken", e.to_string())
                .at("version", "already registered"))
        }
        Err(e) => Err(Problem::internal(e)),
    }
}

/// `GET /v1/flows/{flow}/versions`.
pub async fn versions<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let versions = api.catalog.versions(&name);
    if versions.is_empty() {
        return Err(Problem::not_found(format!(
            "no flow '{}'",
            bounds::cut(&name, 64)
        )));
    }
    let unfinished = api.queries.unfinished_by_version(&name).await?;
    let current = api.catalog.current(&name).map(|f| f.version.clone());
    let list: Vec<_> = versions
        .iter()
        .map(|v| {
            let runs = unfinished.get(&v.flow.version).copied().unwrap_or(0);
            json!({
                "version": v.flow.version,
                "digest": v.flow.digest,
                "registered_at_ms": v.registered_at_ms,
                "origin": v.origin,
                "current": current.as_deref() == Some(v.flow.version.as_str()),
                "unfinished_runs": runs,
                "drained": runs == 0,
            })
        })
        .collect();
    Ok(Json(json!({ "flow": name, "versions": list })).into_response())
}

/// `DELETE /v1/flows/{flow}/versions/{version}`.
pub async fn delete_version<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let in_use = api
        .queries
        .unfinished_by_version(&name)
        .await?
        .get(&version)
        .copied()
        .unwrap_or(0);
    match api.catalog.remove(&name, &version, in_use) {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(e @ CatalogError::NoSuchVersion { .. }) => Err(Problem::not_found(e.to_string())),
        Err(e @ CatalogError::InUse { .. }) => {
            Err(Problem::conflict("version-in-use", e.to_string())
                .with("unfinished_runs", json!(in_use)))
        }
        Err(e) => Err(Problem::internal(e)),
    }
}

/// `GET /v1/plugins`.
/// `GET /v1/flows/{flow}/guarantees`: how the current version converges,
/// in plain words, with its measured timing and objective.
pub async fn guarantees<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let flow = api
        .catalog
        .current(&name)
        .ok_or_else(|| Problem::not_found(format!("no flow '{}'", bounds::cut(&name, 64))))?;
    let expectation = api.queries.usual_time(&flow.name).await;
    let objective = api.queries.objective(&flow).await?;
    let executor = api.engine.executor();
    let reconciles = |plugin: &str| {
        executor
            .plugin(plugin)
            .is_some_and(|p| p.manifest.supports_reconcile)
    };
    let explained = settle_engine::guarantees::explain(&flow, &reconciles, expectation, objective);
    Ok(Json(explained).into_response())
}

#[derive(serde::Deserialize)]
pub struct GraphQuery {
    version: Option<String>,
}

/// `GET /v1/flows/{flow}/graph.svg`: the flow drawn (the current version,
/// or `?version=`).
pub async fn graph<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    Path(name): Path<String>,
    axum::extract::Query(query): axum::extract::Query<GraphQuery>,
) -> Result<Response, Problem> {
    let flow = match &query.version {
        None => api.catalog.current(&name),
        Some(v) => api.catalog.version(&name, v).map(|v| v.flow),
    }
    .ok_or_else(|| {
        Problem::not_found(format!(
            "no flow '{}'{}",
            bounds::cut(&name, 64),
            query
                .version
                .as_deref()
                .map(|v| format!(" version '{}'", bounds::cut(v, 64)))
                .unwrap_or_default()
        ))
    })?;
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "image/svg+xml"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        settle_flow::graph::svg(&flow),
    )
        .into_response())
}

pub async fn plugins<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
) -> Response {
    let list: Vec<_> = api
        .engine
        .executor()
        .plugins()
        .iter()
        .map(|p| p.to_json())
        .collect();
    Json(json!({ "plugins": list })).into_response()
}
