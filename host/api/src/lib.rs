//! # settle-api
//!
//! Settle over HTTP: the `/v1` JSON API that applications submit runs to and
//! read them from, live status as Server-Sent Events, operator actions, and
//! the dashboard. It reads through the engine's [`Queries`] and acts through
//! the engine; it never opens a store itself.
//!
//! - [`routes`]: every route in one table (router, roles and OpenAPI from it).
//! - [`auth`]: tokens, roles, rate limits.
//! - [`problem`]: RFC 9457 errors.
//! - `runs`, `stream`, `actions`, `flows`, `overview`: the handlers.

// Handlers answer errors as problem documents, a few hundred bytes, once
// per failed request: not worth boxing.
#![allow(clippy::result_large_err)]

mod actions;
pub mod auth;
mod body;
mod dashboard;
mod flows;
pub mod hooks;
mod language;
pub mod links;
mod overview;
pub mod problem;
pub mod routes;
mod runs;
mod stream;

use auth::{Auth, Caller, Need};
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use problem::Problem;
use serde::{Deserialize, Serialize};
use settle_engine::Engine;
use settle_engine::catalog::FlowCatalog;
use settle_engine::queries::Queries;
use settle_types::executor::Executor;
use settle_types::store::RunQueries;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `[api]` in `settle.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Where `settle serve` listens.
    pub listen: SocketAddr,
    /// Largest request body, bytes (a run input is at most 1 MiB of JSON).
    pub max_body_bytes: usize,
    /// Longest `?wait=` a client may ask for.
    #[serde(with = "settle_types::duration_text")]
    pub max_wait: Duration,
    /// How long `settle serve` lets in-flight requests and attempts finish
    /// after SIGTERM/SIGINT.
    #[serde(with = "settle_types::duration_text")]
    pub drain: Duration,
    /// Bearer tokens (hashes). None: no authentication, loopback only.
    pub tokens: Vec<auth::TokenConfig>,
    /// Sources of inbound webhooks, by name (`POST /v1/hooks/{name}`).
    pub webhooks: std::collections::BTreeMap<String, hooks::WebhookSource>,
    /// Signs one-time approval links (`GET /v1/runs/{id}/approvals/{step}/links`);
    /// without it there are none. At least 16 characters; changing it
    /// kills the links given out.
    #[serde(default, skip_serializing)]
    pub link_secret: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            max_body_bytes: 2 * 1024 * 1024,
            max_wait: Duration::from_secs(60),
            drain: Duration::from_secs(10),
            tokens: Vec::new(),
            webhooks: Default::default(),
            link_secret: None,
        }
    }
}

/// What the handlers share.
pub struct Api<S: RunQueries, X: Executor> {
    pub engine: Engine<S, X>,
    pub queries: Queries<S>,
    pub catalog: Arc<FlowCatalog>,
    pub auth: Auth,
    pub config: ApiConfig,
    /// Prometheus text, rendered by whoever owns the metrics.
    pub metrics: Option<Arc<dyn Fn() -> String + Send + Sync>>,
    /// The host's recent alerts, newest first, for `GET /v1/alerts`.
    pub alerts: Option<Arc<dyn Fn() -> serde_json::Value + Send + Sync>>,
    ready: AtomicBool,
    /// Inbound webhook deliveries refused, for `GET /v1/hooks/rejected`.
    pub rejected: hooks::Rejected,
    /// Set once on SIGTERM/SIGINT: `?wait`s answer with what is known and
    /// streams end, so the requests in flight finish within the drain.
    draining: tokio::sync::watch::Sender<bool>,
}

impl<S: RunQueries + Clone, X: Executor> Api<S, X> {
    pub fn new(
        engine: Engine<S, X>,
        catalog: Arc<FlowCatalog>,
        config: ApiConfig,
    ) -> Result<Arc<Self>, String> {
        let auth = Auth::new(&config.tokens)?;
        for (name, source) in &config.webhooks {
            source.check(name)?;
        }
        if config
            .link_secret
            .as_ref()
            .is_some_and(|s| s.chars().count() < 16)
        {
            return Err("api.link_secret must have at least 16 characters".into());
        }
        if !auth.enabled() && !config.listen.ip().is_loopback() {
            return Err(format!(
                "refusing to listen on {} without tokens: anyone who can reach it could act on runs. Add [[api.tokens]] to settle.toml (`settle token new --role operator`), or listen on 127.0.0.1",
                config.listen
            ));
        }
        Ok(Arc::new(Api {
            queries: engine.queries(),
            engine,
            catalog,
            auth,
            config,
            metrics: None,
            alerts: None,
            ready: AtomicBool::new(false),
            rejected: hooks::Rejected::default(),
            draining: tokio::sync::watch::channel(false).0,
        }))
    }

    /// With the host's alerts for `GET /v1/alerts`.
    pub fn with_alerts(
        mut self: Arc<Self>,
        alerts: Arc<dyn Fn() -> serde_json::Value + Send + Sync>,
    ) -> Arc<Self> {
        if let Some(api) = Arc::get_mut(&mut self) {
            api.alerts = Some(alerts);
        }
        self
    }

    /// With a metrics renderer for `/metrics`.
    pub fn with_metrics(
        mut self: Arc<Self>,
        render: Arc<dyn Fn() -> String + Send + Sync>,
    ) -> Arc<Self> {
        if let Some(api) = Arc::get_mut(&mut self) {
            api.metrics = Some(render);
        }
        self
    }

    /// Marks the host ready (runs resumed): `/readyz` answers 200.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Marks the host draining: `/readyz` answers 503, new runs are
    /// refused, `?wait`s answer at once and streams end.
    pub fn set_draining(&self) {
        self.ready.store(false, Ordering::Relaxed);
        self.draining.send_replace(true);
    }

    fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Resolves once the host is draining.
    async fn drained(&self) {
        let mut draining = self.draining.subscribe();
        let _ = draining.wait_for(|d| *d).await;
    }
}

type Shared<S, X> = Arc<Api<S, X>>;

/// The router: every route of [`routes::ROUTES`], behind the role check.
pub fn router<S, X>(api: Shared<S, X>) -> Router
where
    S: RunQueries + Clone,
    X: Executor,
{
    let mut router: Router<Shared<S, X>> = Router::new();
    for r in routes::ROUTES {
        router = router.route(r.path, handler::<S, X>(r.operation, r.method));
    }
    router
        .fallback(|| async { Problem::not_found("no such route; see /v1/openapi.json") })
        .layer(middleware::from_fn_with_state(
            api.clone(),
            authorize::<S, X>,
        ))
        .layer(middleware::from_fn_with_state(
            api.clone(),
            declared_length::<S, X>,
        ))
        .layer(middleware::map_response(problem::problems_everywhere))
        .layer(axum::extract::DefaultBodyLimit::max(
            api.config.max_body_bytes,
        ))
        .with_state(api)
}

/// The handler of one operation of the table.
fn handler<S, X>(operation: &str, method: &str) -> MethodRouter<Shared<S, X>>
where
    S: RunQueries + Clone,
    X: Executor,
{
    let m: MethodRouter<Shared<S, X>> = match operation {
        "health" => get(|| async { "ok" }),
        "ready" => get(ready::<S, X>),
        "dashboard" => get(dashboard::page),
        "metrics" => get(metrics::<S, X>),
        "openapi" => get(|| async { axum::Json(routes::openapi()) }),
        "flow_schema" => get(|| async {
            (
                [(axum::http::header::CONTENT_TYPE, "application/schema+json")],
                settle_flow::FLOW_SCHEMA,
            )
        }),
        "submit_run" => post(runs::submit::<S, X>),
        "run_by_key" => get(runs::by_key::<S, X>),
        "list_runs" => get(runs::list::<S, X>),
        "get_run" => get(runs::get::<S, X>),
        "run_events" => get(runs::events::<S, X>),
        "run_stream" => get(stream::stream::<S, X>),
        "report_run" => post(actions::report::<S, X>),
        "signal_run" => post(actions::signal::<S, X>),
        "signal_by_correlation" => post(actions::signal_by_correlation::<S, X>),
        "approve_run" => post(actions::approve::<S, X>),
        "approval_links" => get(links::list::<S, X>),
        "approval_link_page" => get(links::page::<S, X>),
        "approval_link_decide" => post(links::decide::<S, X>),
        "webhook" => post(hooks::deliver::<S, X>),
        "rejected_webhooks" => get(|State(api): State<Shared<S, X>>| async move {
            axum::Json(serde_json::json!({ "rejected": api.rejected.list() }))
        }),
        "retry_run" | "compensate_run" | "cancel_run" | "pause_run" | "resume_run"
        | "restart_run" | "accept_drift" | "reapply_run" => post(actions::act::<S, X>),
        "bulk_action" => post(actions::bulk::<S, X>),
        "overview" => get(overview::overview::<S, X>),
        "list_breakers" => get(overview::breakers::<S, X>),
        "list_alerts" => get(overview::alerts::<S, X>),
        "flow_guarantees" => get(flows::guarantees::<S, X>),
        "flow_graph" => get(flows::graph::<S, X>),
        "list_flows" => get(flows::list::<S, X>),
        "put_flow" => put(flows::put::<S, X>),
        "flow_versions" => get(flows::versions::<S, X>),
        "delete_flow_version" => delete(flows::delete_version::<S, X>),
        "list_plugins" => get(flows::plugins::<S, X>),
        other => unreachable!("route table names operation {other} ({method}) that has no handler"),
    };
    m
}

/// Finds the route, checks the caller's token against what it needs, and
/// hands the caller to the handler.
async fn authorize<S, X>(
    State(api): State<Shared<S, X>>,
    matched: Option<MatchedPath>,
    mut request: Request,
    next: Next,
) -> Response
where
    S: RunQueries + Clone,
    X: Executor,
{
    let need = matched
        .as_ref()
        .and_then(|m| routes::find(request.method().as_str(), m.as_str()))
        .map_or(Need::Nothing, |r| r.need);
    if need != Need::Nothing {
        let caller = match api.auth.caller(request.headers()) {
            Ok(c) => c,
            Err(p) => {
                let mut response = p.into_response();
                response.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer"),
                );
                return response;
            }
        };
        if !caller.role.allows(need) {
            return auth::forbidden(&caller, need).into_response();
        }
        request.extensions_mut().insert(caller);
    } else {
        request.extensions_mut().insert(Caller {
            name: "anonymous".into(),
            role: auth::Role::Viewer,
        });
    }
    next.run(request).await
}

/// 413 for a body whose declared length is over the limit, before any of
/// it is read: a client that asked `Expect: 100-continue` is spared the
/// upload, and one that did not is told why the connection ends.
async fn declared_length<S, X>(
    State(api): State<Shared<S, X>>,
    request: Request,
    next: Next,
) -> Response
where
    S: RunQueries + Clone,
    X: Executor,
{
    let max = api.config.max_body_bytes;
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(bytes) if bytes > max as u64 => Problem::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            format!("the body has {bytes} bytes; the limit is {max}"),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

async fn ready<S: RunQueries + Clone, X: Executor>(State(api): State<Shared<S, X>>) -> Response {
    if api.ready.load(Ordering::Relaxed) {
        "ready".into_response()
    } else if api.is_draining() {
        Problem::unavailable("the host is shutting down").into_response()
    } else {
        Problem::unavailable("the host is starting: resuming unfinished runs").into_response()
    }
}

async fn metrics<S: RunQueries + Clone, X: Executor>(State(api): State<Shared<S, X>>) -> Response {
    match &api.metrics {
        Some(render) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            render(),
        )
            .into_response(),
        None => Problem::not_found("metrics are not enabled on this host").into_response(),
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting and lets requests in flight finish for up to `drain`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopped_tx.send(());
    });
    let mut server = tokio::spawn(async move { server.await });
    let _ = stopped_rx.await;
    // Stopped accepting: give requests in flight (a `?wait`, a stream) `drain`.
    match tokio::time::timeout(drain, &mut server).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(std::io::Error::other(join.to_string())),
        Err(_) => {
            tracing::warn!("requests still in flight after {drain:?}; stopping anyway");
            // Its connections (and the router's hold on the engine) go now.
            server.abort();
            let _ = server.await;
            Ok(())
        }
    }
}
