//! `GET /v1/runs/{id}/stream`: a run's events as Server-Sent Events.
//!
//! Each event of the run's log is sent once, in order, as `event: <type>`
//! with `id: <seq>`; a client that reconnects with `Last-Event-ID: N` gets
//! every event after N, so nothing is lost or repeated. Progress reports
//! (not in the log) are sent as `event: progress` without an id. A `status`
//! event follows each batch of log events with the run's phrase. The
//! stream ends after the run reaches a terminal state, or when the host
//! stops (the client resumes from another host, or later, with
//! `Last-Event-ID`).

use crate::Shared;
use crate::auth::Caller;
use crate::problem::Problem;
use crate::runs::visible_run;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use settle_types::executor::Executor;
use settle_types::store::RunQueries;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How often a run not driven by this process is looked at again.
const POLL: Duration = Duration::from_millis(250);
/// Longest a stream stays open.
const MAX_STREAM: Duration = Duration::from_secs(3600);

pub async fn stream<S: RunQueries + Clone, X: Executor>(
    State(api): State<Shared<S, X>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    lang: crate::language::Language,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let summary = visible_run(&api, &caller, &id).await?;
    let run = summary.run_id;
    let after: Option<u64> = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| {
                    Problem::bad_request(
                        "bad-last-event-id",
                        "Last-Event-ID must be an event sequence number",
                    )
                    .at("Last-Event-ID", "not a number")
                })?,
        ),
    };
    let (tx, rx) = mpsc::channel::<Result<Sse, Infallible>>(64);
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let mut next_seq = after.map_or(0, |a| a.saturating_add(1));
        let mut last_progress = None;
        while started.elapsed() < MAX_STREAM {
            let Ok(events) = api.queries.events(run).await else {
                break;
            };
            let fresh: Vec<_> = events.iter().filter(|e| e.seq >= next_seq).collect();
            for e in &fresh {
                let data = serde_json::to_string(e).unwrap_or_default();
                let sse = Sse::default()
                    .event(e.kind.name())
                    .id(e.seq.to_string())
                    .data(data);
                if tx.send(Ok(sse)).await.is_err() {
                    return;
                }
                next_seq = e.seq.saturating_add(1);
            }
            let Ok(Some(status)) = api.queries.status(run).await else {
                break;
            };
            let status = status.localized(lang.0);
            let progress = status
                .progress
                .as_ref()
                .map(|p| (p.fraction.to_bits(), p.message.clone()));
            if !fresh.is_empty() || progress != last_progress {
                let data = serde_json::to_string(&status).unwrap_or_default();
                let kind = if fresh.is_empty() {
                    "progress"
                } else {
                    "status"
                };
                if tx
                    .send(Ok(Sse::default().event(kind).data(data)))
                    .await
                    .is_err()
                {
                    return;
                }
                last_progress = progress;
            }
            if status.state.is_terminal() {
                break;
            }
            // Wake on the next change of a run this process drives, or poll;
            // a host that is stopping ends the stream (the client resumes
            // with `Last-Event-ID`).
            let changed = async {
                match api.engine.watch(run) {
                    Some(mut updates) => {
                        let _ = tokio::time::timeout(POLL * 4, updates.changed()).await;
                    }
                    None => tokio::time::sleep(POLL).await,
                }
            };
            tokio::select! {
                _ = changed => {}
                _ = api.drained() => break,
            }
        }
    });
    Ok(lang.mark(
        axum::response::Sse::new(ReceiverStream::new(rx))
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response(),
    ))
}
