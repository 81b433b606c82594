//! The demo service: a small "outside world" (a ledger, a stock table, an
//! outbox) that the example plugins change over HTTP, as they would a real
//! SaaS API. It runs as its own process (`settle demo-service`), so crash
//! tests can kill the host and count duplicates here.
//!
//! - Every `POST` needs an `Idempotency-Key`. A repeated key (same path and
//!   body) gets the first answer again and changes nothing; it is counted in
//!   `deduplicated`. The same key with a different body is refused (422).
//! - Durable across its own restarts: each accepted request is appended to
//!   `journal.jsonl` and `fsync`ed before it is answered; start-up replays it.
//! - `GET /state` shows everything, for tests and people.

pub mod ledger;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use ledger::{Reply, World};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Mutex;

/// One accepted request, as journaled.
#[derive(Serialize, Deserialize)]
struct Entry {
    path: String,
    key: String,
    body: Value,
}

struct Service {
    world: World,
    /// (path, key) → (request body, first answer).
    seen: HashMap<(String, String), (Value, Reply)>,
    journal: File,
}

type Shared = Arc<Mutex<Service>>;

impl Service {
    fn open(dir: &Path) -> anyhow::Result<Service> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join("journal.jsonl");
        let mut world = World::seeded();
        let mut seen = HashMap::new();
        if path.exists() {
            let file =
                File::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
            for (n, line) in BufReader::new(file).lines().enumerate() {
                let line = line?;
                // A torn last line (crash mid-write) was never answered: drop it.
                let Ok(entry) = serde_json::from_str::<Entry>(&line) else {
                    tracing::warn!("journal line {} unreadable, ignored", n + 1);
                    continue;
                };
                let reply = world.apply(&entry.path, &entry.key, &entry.body);
                seen.insert((entry.path, entry.key), (entry.body, reply));
            }
        }
        let journal = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Service {
            world,
            seen,
            journal,
        })
    }

    fn post(&mut self, path: &str, key: &str, body: Value) -> anyhow::Result<Reply> {
        if let Some((first_body, first_reply)) = self.seen.get(&(path.to_string(), key.to_string()))
        {
            if *first_body != body {
                return Ok(Reply {
                    status: 422,
                    body: json!({"error": "Idempotency-Key already used with a different request"}),
                });
            }
            self.world.deduplicated += 1;
            return Ok(first_reply.clone());
        }
        let reply = self.world.apply(path, key, &body);
        if reply.status < 300 {
            let line = serde_json::to_string(&Entry {
                path: path.into(),
                key: key.into(),
                body: body.clone(),
            })?;
            self.journal.write_all(format!("{line}\n").as_bytes())?;
            self.journal.sync_data()?;
            self.seen
                .insert((path.into(), key.into()), (body, reply.clone()));
        }
        Ok(reply)
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
    match method {
        Method::GET if path == "/healthz" => (StatusCode::OK, "ok").into_response(),
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
                Err(e) => bad(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("journal write failed: {e}"),
                ),
            }
        }
        _ => bad(StatusCode::METHOD_NOT_ALLOWED, "GET or POST"),
    }
}

/// Serves until the process is stopped.
pub async fn serve(listen: SocketAddr, data: &Path) -> anyhow::Result<()> {
    let service = Arc::new(Mutex::new(Service::open(data)?));
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
