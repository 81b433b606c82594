//! Every route of the API in one table: its method, path, what it does and
//! what it needs. The router is built from it, the role check reads it, and
//! `/v1/openapi.json` is generated from it, so the three cannot disagree; a
//! test walks the table against the running router.

use crate::auth::Need;
use serde_json::{Value, json};

/// One route.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub method: &'static str,
    /// axum syntax: `/v1/runs/{id}`.
    pub path: &'static str,
    /// The OpenAPI operation id, and the handler's name in `router()`.
    pub operation: &'static str,
    pub summary: &'static str,
    pub need: Need,
    /// Status codes it answers besides errors.
    pub ok: &'static [u16],
}

const fn route(
    method: &'static str,
    path: &'static str,
    operation: &'static str,
    summary: &'static str,
    need: Need,
    ok: &'static [u16],
) -> Route {
    Route {
        method,
        path,
        operation,
        summary,
        need,
        ok,
    }
}

pub const ROUTES: &[Route] = &[
    route(
        "GET",
        "/healthz",
        "health",
        "The process is up.",
        Need::Nothing,
        &[200],
    ),
    route(
        "GET",
        "/readyz",
        "ready",
        "The host serves: store open, runs resumed.",
        Need::Nothing,
        &[200],
    ),
    route(
        "GET",
        "/",
        "dashboard",
        "The operators' dashboard (HTML).",
        Need::Nothing,
        &[200],
    ),
    route(
        "GET",
        "/metrics",
        "metrics",
        "Prometheus metrics.",
        Need::Read,
        &[200],
    ),
    route(
        "GET",
        "/v1/openapi.json",
        "openapi",
        "This document.",
        Need::Nothing,
        &[200],
    ),
    route(
        "GET",
        "/v1/schema/flow.json",
        "flow_schema",
        "The JSON Schema of flow files (draft 2020-12), for editors to complete and check them; the same as `host/flow/schema/flow.schema.json` in the repository.",
        Need::Nothing,
        &[200],
    ),
    route(
        "POST",
        "/v1/flows/{flow}/runs",
        "submit_run",
        "Submit a run of a flow; the body is its input. Durable before the answer. `Idempotency-Key` returns the same run for a repeat; `?wait=30s` answers once the run is done.",
        Need::Submit,
        &[200, 202],
    ),
    route(
        "GET",
        "/v1/flows/{flow}/runs/by-key/{key}",
        "run_by_key",
        "The run an idempotency key of a flow names.",
        Need::ReadRun,
        &[200],
    ),
    route(
        "GET",
        "/v1/runs",
        "list_runs",
        "Runs, newest first: `state`, `stage`, `flow`, `since`, `cursor`, `limit`.",
        Need::Read,
        &[200],
    ),
    route(
        "GET",
        "/v1/runs/{id}",
        "get_run",
        "Where a run stands: state, stage, phrase, steps, attempts, timings.",
        Need::ReadRun,
        &[200],
    ),
    route(
        "GET",
        "/v1/runs/{id}/events",
        "run_events",
        "A run's event log, with lineage.",
        Need::ReadRun,
        &[200],
    ),
    route(
        "GET",
        "/v1/runs/{id}/stream",
        "run_stream",
        "Server-Sent Events: one per event of the run (`id:` is its sequence number; resume with `Last-Event-ID`) and per progress report, ending when the run is done.",
        Need::ReadRun,
        &[200],
    ),
    route(
        "POST",
        "/v1/runs/{id}/signals/{name}",
        "signal_run",
        "Deliver signal `name` to a run whose flow waits for it (a `signal:` step): `{payload, idempotency_key?}` (or an `Idempotency-Key` header). Checked against the step's schema, recorded before the answer (201), kept until the run reaches the step; a repeat under the same key is answered 200 and not recorded again. A submitter signals only its own runs.",
        Need::Report,
        &[200, 201],
    ),
    route(
        "POST",
        "/v1/flows/{flow}/signals/{name}",
        "signal_by_correlation",
        "Deliver signal `name` to the unfinished run of the flow whose step correlates on `correlation` (`correlate:` in the flow, read from the run's input): `{correlation, payload, idempotency_key?}`. 404 when no run does, 422 when several do.",
        Need::Report,
        &[200, 201],
    ),
    route(
        "POST",
        "/v1/runs/{id}/approvals/{step}",
        "approve_run",
        "Decide on approval step `step` as the calling token: `{decision: approve | reject, comment?}`. Only approvers the step names (by token name or role), never the run's submitter; each person decides once (a repeat is answered 200 and changes nothing); one rejection fails the step.",
        Need::Read,
        &[200, 201],
    ),
    route(
        "GET",
        "/v1/runs/{id}/approvals/{step}/links",
        "approval_links",
        "One-time links for approval step `step` while the run waits at it: one per approver the step names (not the submitter), `{approver, path, expires_at_ms}`; each lets that person decide once, without a token, until the wait ends. Needs `api.link_secret`.",
        Need::Operate,
        &[200],
    ),
    route(
        "GET",
        "/v1/approve/{token}",
        "approval_link_page",
        "The page of a one-time approval link: what is asked, with approve and reject buttons. The link is the credential.",
        Need::Nothing,
        &[200],
    ),
    route(
        "POST",
        "/v1/approve/{token}",
        "approval_link_decide",
        "Decide through a one-time approval link, as its approver: `{decision: approve | reject, comment?}`. 410 once the wait it was given for has ended.",
        Need::Nothing,
        &[200, 201],
    ),
    route(
        "POST",
        "/v1/hooks/{source}",
        "webhook",
        "An inbound webhook from a third party (`[api.webhooks.SOURCE]`): signed with HMAC-SHA256 of `TIMESTAMP.BODY` under the source's secret (`Settle-Webhook-Timestamp`, `Settle-Webhook-Signature: sha256=HEX`), within the source's time window; delivered as its signal to the run the body names, once per delivery id. Needs no token: the signature is the proof.",
        Need::Nothing,
        &[200, 201],
    ),
    route(
        "GET",
        "/v1/hooks/rejected",
        "rejected_webhooks",
        "The newest 100 inbound webhook deliveries refused, with why.",
        Need::Read,
        &[200],
    ),
    route(
        "POST",
        "/v1/runs/{id}/reports",
        "report_run",
        "A person says what they see is not what they expected: `{message, field?}`.",
        Need::Report,
        &[201],
    ),
    route(
        "POST",
        "/v1/runs/{id}/retry",
        "retry_run",
        "Try the action a held run stopped at again (same operation id), with a fresh attempt budget. Body: `{reason, step?}`.",
        Need::Operate,
        &[200],
    ),
    route(
        "POST",
        "/v1/runs/{id}/compensate",
        "compensate_run",
        "Undo a held or drifted run's completed steps. Body: `{reason}`.",
        Need::Operate,
        &[200],
    ),
    route(
        "POST",
        "/v1/runs/{id}/cancel",
        "cancel_run",
        "Stop a run for good; what it changed stays. Applied at the next step boundary when the run is moving. Body: `{reason}`.",
        Need::Operate,
        &[200, 202],
    ),
    route(
        "POST",
        "/v1/runs/{id}/pause",
        "pause_run",
        "Hold a moving run at its next step boundary. Body: `{reason}`.",
        Need::Operate,
        &[200, 202],
    ),
    route(
        "POST",
        "/v1/runs/{id}/resume",
        "resume_run",
        "Release a held or paused run where it stopped. Body: `{reason}`.",
        Need::Operate,
        &[200],
    ),
    route(
        "POST",
        "/v1/runs/{id}/restart",
        "restart_run",
        "Run an ended or held run again from step `from_step` (query or body), with its flow version: earlier steps keep their outputs; that step and the ones after run again under new operation ids (nothing is undone first). Body: `{reason, from_step?}`.",
        Need::Operate,
        &[200],
    ),
    route(
        "POST",
        "/v1/runs/{id}/accept-drift",
        "accept_drift",
        "Accept what downstream systems say of a drifted run: it counts as settled again and is no longer checked. Body: `{reason}`.",
        Need::Operate,
        &[200],
    ),
    route(
        "POST",
        "/v1/runs/{id}/reapply",
        "reapply_run",
        "Repair a drifted run by running its steps again from the first drifted one, under their same operation ids (a downstream puts back what the step asked for), then confirming them again. Body: `{reason}`.",
        Need::Operate,
        &[200],
    ),
    route(
        "POST",
        "/v1/runs/actions",
        "bulk_action",
        "One action on every run a filter selects: `{action, reason, filter: {state, stage, flow, since}, dry_run, from_step?}`; a dry run only counts.",
        Need::Operate,
        &[200],
    ),
    route(
        "GET",
        "/v1/flows/{flow}/guarantees",
        "flow_guarantees",
        "How the current version of a flow converges, in plain words for the people waiting: its steps, retries, what is undone, how the outside world is checked, how long runs usually take, and how well it keeps its objective.",
        Need::Read,
        &[200],
    ),
    route(
        "GET",
        "/v1/flows/{flow}/graph.svg",
        "flow_graph",
        "The current version of a flow drawn as SVG (`?version=V` for another): its steps, branches, conditions and what is undone; what the dashboard's flow page shows.",
        Need::Read,
        &[200],
    ),
    route(
        "GET",
        "/v1/alerts",
        "list_alerts",
        "The host's recent alerts (at most 200), newest first: rule, kind, subject, run, detail, owner, escalation and mitigation (`[[alerts.rules]]` in settle.toml).",
        Need::Read,
        &[200],
    ),
    route(
        "GET",
        "/v1/breakers",
        "list_breakers",
        "Every failure domain's guards: `breakers` (`[breakers.DOMAIN]` in settle.toml, a plugin or `host:AUTHORITY`): state (`closed`, `open`, `half-open`), attempts and failures in its window, when an open one lets a probe through; `retry_budgets`: first attempts and retries in the window and the retries it allows; `bulkheads`: calls of a plugin in flight and the most allowed.",
        Need::Read,
        &[200],
    ),
    route(
        "GET",
        "/v1/overview",
        "overview",
        "At a glance, over the 500 most recent runs: counts by state and stage, runs in flight, per-flow latency (p50/p90), failure and retry rates, per-step times from the newest 50 finished runs; held runs and runs with user reports.",
        Need::Read,
        &[200],
    ),
    route(
        "GET",
        "/v1/flows",
        "list_flows",
        "Flows offered, with their current version.",
        Need::Read,
        &[200],
    ),
    route(
        "PUT",
        "/v1/flows/{flow}",
        "put_flow",
        "Register a version of a flow (YAML body), validated first. Runs in flight keep their version.",
        Need::Operate,
        &[200, 201],
    ),
    route(
        "GET",
        "/v1/flows/{flow}/versions",
        "flow_versions",
        "Every version of a flow, and how many unfinished runs use each (0: drained).",
        Need::Read,
        &[200],
    ),
    route(
        "DELETE",
        "/v1/flows/{flow}/versions/{version}",
        "delete_flow_version",
        "Remove a version no unfinished run uses.",
        Need::Operate,
        &[204],
    ),
    route(
        "GET",
        "/v1/plugins",
        "list_plugins",
        "Installed plugins: manifests, schemas, limits, grants (config names only).",
        Need::Read,
        &[200],
    ),
];

/// The route `method path` (an axum pattern) matches, if any.
pub fn find(method: &str, pattern: &str) -> Option<&'static Route> {
    ROUTES
        .iter()
        .find(|r| r.method == method && r.path == pattern)
}

/// The OpenAPI 3.1 document, from [`ROUTES`].
pub fn openapi() -> Value {
    let mut paths = serde_json::Map::new();
    for r in ROUTES {
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut responses = serde_json::Map::new();
        for code in r.ok {
            responses.insert(code.to_string(), json!({"description": "success"}));
        }
        responses.insert(
            "default".into(),
            json!({"description": "an RFC 9457 problem document", "content": {"application/problem+json": {}}}),
        );
        let op = json!({
            "operationId": r.operation,
            "summary": r.summary,
            "parameters": params,
            "responses": responses,
            "x-settle-needs": r.need,
        });
        paths
            .entry(r.path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|o| o.insert(r.method.to_ascii_lowercase(), op));
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Settle", "version": env!("CARGO_PKG_VERSION")},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    })
}
