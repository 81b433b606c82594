//! # settle-demo-service
//!
//! The demo service: a small "outside world" (a ledger, a stock table, an
//! outbox) that the example plugins change over HTTP, as they would a real
//! SaaS API. It runs as its own process (`settle demo-service`), so crash
//! tests can kill the host (and the service) and count duplicates here.
//!
//! - Every `POST` needs an `Idempotency-Key`. A repeated key (same path and
//!   body) gets the first answer again and changes nothing; it is counted in
//!   `deduplicated`. The same key with a different body is refused (422).
//! - Durable across its own restarts: each request that reaches the world is
//!   appended to `journal.jsonl` and `fsync`ed **before** it is applied and
//!   answered (see [`journal`]); start-up replays it. When the journal cannot
//!   be written, nothing is applied and the caller gets a 503.
//! - `POST /drift/transfers` (`{transfer_id, amount?, refunded?}`) edits a
//!   recorded transfer behind Settle's back, so drift is real and testable;
//!   only when started with `--drift-hooks`. A transfer request repeated
//!   under its key after such an edit (a re-apply) puts the transfer back
//!   as it was asked for, journaled as `/ledger/transfers:restore`, and
//!   counted in `restored`, not as a second application of the request.
//! - `POST /drift/latency` (`{ms, for_ms}`, with `--drift-hooks` only)
//!   makes every answer `ms` late for the next `for_ms`: a slow downstream.
//! - `GET /state` shows the world; `GET /requests` counts, per path and
//!   idempotency key, the requests received and the changes applied, so a
//!   test can see an effect made twice (or a retry that never got through).
//!   Received counts cover the journaled requests and, since this start,
//!   the repeats answered from the idempotency record.

mod handle;
pub mod journal;
pub mod ledger;

pub use handle::{CALLERS, DemoService, Launcher};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use journal::{Entry, Journal};
use ledger::{Reply, World};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Mutex;

/// What happened to the requests with one (path, idempotency key).
#[derive(Clone, Debug, Default, Serialize)]
struct Counts {
    /// Requests that arrived, repeats included.
    received: u64,
    /// Requests that changed the world (at most one, if idempotency holds).
    applied: u64,
}

struct Service {
    world: World,
    /// (path, key) → (request body, first answer), for changes applied.
    seen: HashMap<(String, String), (Value, Reply)>,
    /// (path, key) → counts, for `GET /requests`.
    requests: BTreeMap<(String, String), Counts>,
    journal: Journal,
    /// Whether `POST /drift/…` may change the world behind Settle's back.
    drift_hooks: bool,
    /// Until when, and by how much, every answer is late (`POST
    /// /drift/latency`); not journaled: a restart ends it.
    slow: Option<(std::time::Instant, std::time::Duration)>,
}

type Shared = Arc<Mutex<Service>>;

impl Service {
    fn open(dir: &Path, drift_hooks: bool) -> anyhow::Result<Service> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let (journal, entries) = Journal::open(&dir.join("journal.jsonl"))?;
        let mut service = Service {
            world: World::seeded(),
            seen: HashMap::new(),
            requests: BTreeMap::new(),
            journal,
            drift_hooks,
            slow: None,
        };
        for entry in entries {
            service.count_received(&entry.path, &entry.key);
            // A key that already changed the world is never journaled again,
            // but if one were, replay must still apply it only once.
            let key = (entry.path.clone(), entry.key.clone());
            if service.seen.contains_key(&key) {
                service.world.deduplicated += 1;
            } else {
                service.apply(entry);
            }
        }
        Ok(service)
    }

    /// Handles a `POST`: a repeat gets its first answer; anything else is
    /// journaled, and applied once the journal line is durable.
    fn post(&mut self, path: &str, key: &str, body: Value) -> anyhow::Result<Reply> {
        self.count_received(path, key);
        if let Some((first_body, first_reply)) = self.seen.get(&(path.to_string(), key.to_string()))
        {
            if *first_body != body {
                return Ok(Reply {
                    status: 422,
                    body: json!({"error": "Idempotency-Key already used with a different request"}),
                });
            }
            if path == "/ledger/transfers" && self.world.edited_under(key).is_some() {
                // A re-apply: put back what the request asked for.
                let entry = Entry {
                    path: ledger::RESTORE_TRANSFER.into(),
                    key: key.into(),
                    body,
                };
                self.journal.append(&entry)?;
                return Ok(self.apply(entry));
            }
            self.world.deduplicated += 1;
            return Ok(first_reply.clone());
        }
        if !World::changes(path) || (path.starts_with("/drift/") && !self.drift_hooks) {
            return Ok(Reply {
                status: 404,
                body: json!({"error": format!("no such endpoint {path}")}),
            });
        }
        let entry = Entry {
            path: path.into(),
            key: key.into(),
            body,
        };
        // Durable first: an answer given is never lost in a crash.
        self.journal.append(&entry)?;
        Ok(self.apply(entry))
    }

    /// Applies a journaled request to the world. Refused requests (a 4xx)
    /// change nothing and are not remembered, so a retry is judged afresh.
    fn apply(&mut self, entry: Entry) -> Reply {
        let reply = self.world.apply(&entry.path, &entry.key, &entry.body);
        // A restore is not a request of its own: its key's request counts.
        if reply.status < 300 && entry.path != ledger::RESTORE_TRANSFER {
            self.requests
                .entry((entry.path.clone(), entry.key.clone()))
                .or_default()
                .applied += 1;
            self.seen
                .insert((entry.path, entry.key), (entry.body, reply.clone()));
        }
        reply
    }

    fn count_received(&mut self, path: &str, key: &str) {
        self.requests
            .entry((path.to_string(), key.to_string()))
            .or_default()
            .received += 1;
    }

    /// `GET /requests`: one object per (path, key), sorted.
    fn request_counts(&self) -> Value {
        let rows: Vec<Value> = self
            .requests
            .iter()
            .map(|((path, key), c)| {
                json!({"path": path, "key": key, "received": c.received, "applied": c.applied})
            })
            .collect();
        Value::Array(rows)
    }
}

async fn handle(
    State(service): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let answer = |reply: Reply| {
        let status =
            StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(reply.body)).into_response()
    };
    let bad = |status: StatusCode, message: &str| {
        (status, axum::Json(json!({"error": message}))).into_response()
    };
    if let Method::GET | Method::POST = method
        && path != LATENCY_HOOK
        && path != "/healthz"
        && path != "/requests"
    {
        // A slow downstream (the latency hook): every answer is late.
        let slow = service.lock().await.slow;
        if let Some((until, by)) = slow
            && std::time::Instant::now() < until
        {
            tokio::time::sleep(by).await;
        }
    }
    match method {
        Method::POST if path == LATENCY_HOOK => {
            let mut s = service.lock().await;
            if !s.drift_hooks {
                return bad(StatusCode::NOT_FOUND, "no such endpoint");
            }
            let parsed = serde_json::from_slice::<Value>(&body).ok();
            let field = |name: &str| parsed.as_ref().and_then(|b| b.get(name)?.as_u64());
            let (Some(ms), Some(for_ms)) = (field("ms"), field("for_ms")) else {
                return bad(StatusCode::UNPROCESSABLE_ENTITY, "need ms and for_ms");
            };
            let by = std::time::Duration::from_millis(ms.min(30_000));
            let until =
                std::time::Instant::now() + std::time::Duration::from_millis(for_ms.min(3_600_000));
            s.slow = Some((until, by));
            (
                StatusCode::OK,
                axum::Json(json!({"ms": ms, "for_ms": for_ms})),
            )
                .into_response()
        }
        Method::GET if path == "/healthz" => (StatusCode::OK, "ok").into_response(),
        Method::GET if path == "/requests" => (
            StatusCode::OK,
            axum::Json(service.lock().await.request_counts()),
        )
            .into_response(),
        Method::GET => {
            let target = uri.path_and_query().map_or(path.as_str(), |p| p.as_str());
            answer(service.lock().await.world.read(target))
        }
        Method::POST => {
            let Some(key) = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .filter(|k| !k.is_empty())
            else {
                return bad(
                    StatusCode::BAD_REQUEST,
                    "an Idempotency-Key header is required",
                );
            };
            let Ok(body) = serde_json::from_slice::<Value>(&body) else {
                return bad(StatusCode::BAD_REQUEST, "the body must be JSON");
            };
            let key = key.to_string();
            // A drill knob: `"answer_after_ms": N` in a body makes the
            // service apply the change at once but answer N ms late (at most
            // 10 s), as a slow downstream does; the caller's attempt may time
            // out after the change was made.
            let late = body
                .get("answer_after_ms")
                .and_then(Value::as_u64)
                .map(|ms| std::time::Duration::from_millis(ms.min(10_000)));
            let posted = service.lock().await.post(&path, &key, body);
            if let Some(late) = late {
                tokio::time::sleep(late).await;
            }
            match posted {
                Ok(reply) => answer(reply),
                // Nothing was applied: the caller may retry (after a restart).
                Err(e) => bad(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("journal write failed, nothing changed: {e:#}"),
                ),
            }
        }
        _ => bad(StatusCode::METHOD_NOT_ALLOWED, "GET or POST"),
    }
}

/// A test and drill hook (with `--drift-hooks` only): `POST
/// /drift/latency {"ms": N, "for_ms": D}` makes every answer N ms late for
/// the next D ms, as a slow downstream would be.
pub const LATENCY_HOOK: &str = "/drift/latency";

/// Serves until the process is stopped. With `drift_hooks`, `POST
/// /drift/transfers` changes a recorded transfer behind Settle's back (see
/// [`ledger::DRIFT_TRANSFER`]); without, it is a 404.
pub async fn serve(listen: SocketAddr, data: &Path, drift_hooks: bool) -> anyhow::Result<()> {
    let service = Arc::new(Mutex::new(Service::open(data, drift_hooks)?));
    let app = Router::new().fallback(handle).with_state(service);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    // The first line on stdout tells whoever started us where we are.
    println!("listening on {}", listener.local_addr()?);
    use std::io::Write as _;
    std::io::stdout().flush()?;
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(amount: i64) -> Value {
        json!({"from": "alice", "to": "shop", "amount": amount})
    }

    /// A crash while a line is written leaves a torn last line. Replay drops
    /// it, and the next entry must start on a line of its own: every entry
    /// accepted after the restart reads back after the next one.
    #[test]
    fn a_torn_last_line_is_cut_off_and_the_next_entry_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Service::open(dir.path(), false).unwrap();
            for i in 1..=3 {
                let reply = s
                    .post("/ledger/transfers", &format!("k{i}"), transfer(i))
                    .unwrap();
                assert_eq!(reply.status, 201);
            }
        }
        let path = dir.path().join("journal.jsonl");
        let text = std::fs::read_to_string(&path).unwrap();
        let cut = text.trim_end().len() - 7; // the third line, torn
        std::fs::write(&path, &text[..cut]).unwrap();

        let mut s = Service::open(dir.path(), false).unwrap();
        assert_eq!(
            s.world.transfers.len(),
            2,
            "the torn entry was never answered"
        );
        let reply = s.post("/ledger/transfers", "k4", transfer(4)).unwrap();
        assert_eq!(reply.status, 201);
        drop(s);

        let s = Service::open(dir.path(), false).unwrap();
        let keys: Vec<&str> = s
            .world
            .transfers
            .values()
            .map(|t| t.idempotency_key.as_str())
            .collect();
        assert_eq!(keys, ["k1", "k2", "k4"]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.ends_with('\n'));
    }

    /// Not even the last line may be dropped when it is whole.
    #[test]
    fn a_whole_journal_replays_every_entry() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = Service::open(dir.path(), false).unwrap();
            s.post("/ledger/transfers", "k1", transfer(5)).unwrap();
            s.post(
                "/stock/reservations",
                "k2",
                json!({"sku": "widget", "quantity": 2}),
            )
            .unwrap();
        }
        let s = Service::open(dir.path(), false).unwrap();
        assert_eq!(s.world.transfers.len(), 1);
        assert_eq!(s.world.reservations.len(), 1);
        assert_eq!(s.world.accounts["shop"], 5);
    }

    /// A change is applied only once its journal line is durable: when the
    /// write fails, the world is as before and the caller gets an error.
    #[test]
    fn a_failed_journal_write_applies_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Service::open(dir.path(), false).unwrap();
        // Writes to /dev/full fail with ENOSPC.
        let full = std::fs::OpenOptions::new()
            .append(true)
            .open("/dev/full")
            .unwrap();
        s.journal = Journal::over(full, Path::new("/dev/full"));
        let before = json!(s.world);
        assert!(s.post("/ledger/transfers", "k1", transfer(7)).is_err());
        assert_eq!(json!(s.world), before, "nothing applied");
        assert!(s.seen.is_empty(), "no idempotency record");
        // Fail-stop: no later request gets through either.
        assert!(s.post("/ledger/transfers", "k2", transfer(8)).is_err());
        assert_eq!(json!(s.world), before);
    }

    /// `GET /requests` tells received from applied, also across a restart.
    #[test]
    fn requests_are_counted_received_and_applied() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Service::open(dir.path(), false).unwrap();
        for _ in 0..3 {
            s.post("/ledger/transfers", "k1", transfer(5)).unwrap();
        }
        let refused = s
            .post("/ledger/refunds", "k2", json!({"transfer_id": "t-999999"}))
            .unwrap();
        assert_eq!(refused.status, 404);
        let counts = s.request_counts();
        assert_eq!(
            counts,
            json!([
                {"path": "/ledger/refunds", "key": "k2", "received": 1, "applied": 0},
                {"path": "/ledger/transfers", "key": "k1", "received": 3, "applied": 1},
            ])
        );
        drop(s);
        // Journaled requests are counted again on replay; repeats answered
        // from the idempotency record were never journaled.
        let s = Service::open(dir.path(), false).unwrap();
        assert_eq!(
            s.request_counts(),
            json!([
                {"path": "/ledger/refunds", "key": "k2", "received": 1, "applied": 0},
                {"path": "/ledger/transfers", "key": "k1", "received": 1, "applied": 1},
            ])
        );
    }

    #[test]
    fn drift_hooks_change_a_transfer_only_when_on_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let drift = json!({"transfer_id": "t-000001", "amount": 1});
        {
            let mut s = Service::open(dir.path(), false).unwrap();
            s.post("/ledger/transfers", "k1", transfer(5)).unwrap();
            let refused = s.post(ledger::DRIFT_TRANSFER, "d1", drift.clone()).unwrap();
            assert_eq!(refused.status, 404, "off unless started with the flag");
            assert_eq!(s.world.transfers["t-000001"].amount, 5);
        }
        {
            let mut s = Service::open(dir.path(), true).unwrap();
            let changed = s.post(ledger::DRIFT_TRANSFER, "d2", drift).unwrap();
            assert_eq!(changed.status, 200, "{changed:?}");
            assert_eq!(s.world.transfers["t-000001"].amount, 1);
            assert_eq!(s.world.accounts["alice"], -5, "balances are not touched");
        }
        // Replayed from the journal even by a service started without it.
        let s = Service::open(dir.path(), false).unwrap();
        assert_eq!(s.world.transfers["t-000001"].amount, 1);
    }

    #[test]
    fn a_repeated_request_puts_an_edited_transfer_back_once_and_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let drift = json!({"transfer_id": "t-000001", "amount": 1, "refunded": true});
        {
            let mut s = Service::open(dir.path(), true).unwrap();
            s.post("/ledger/transfers", "k1", transfer(5)).unwrap();
            s.post(ledger::DRIFT_TRANSFER, "d1", drift).unwrap();
            let again = s.post("/ledger/transfers", "k1", transfer(5)).unwrap();
            assert_eq!(again.status, 201, "{again:?}");
            let t = &s.world.transfers["t-000001"];
            assert_eq!((t.amount, t.refunded), (5, false));
            assert_eq!(s.world.accounts["alice"], -5, "money moved once");
            // Nothing edited any more: a further repeat is a plain repeat.
            s.post("/ledger/transfers", "k1", transfer(5)).unwrap();
            assert_eq!(s.world.restored, 1);
            assert_eq!(
                s.requests[&("/ledger/transfers".into(), "k1".into())].applied,
                1
            );
        }
        let s = Service::open(dir.path(), false).unwrap();
        assert_eq!(s.world.transfers["t-000001"].amount, 5, "replayed");
        assert_eq!(s.world.restored, 1);
    }
}
