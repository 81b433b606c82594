//! The demo world's state and its rules, with no I/O: a ledger of accounts
//! and transfers, a stock table with reservations, an outbox of messages.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A change made behind Settle's back (a test and drill hook): sets a
/// recorded transfer's `amount` or `refunded` without touching balances, as
/// a manual edit in a back office would. Served only when the service was
/// started with `--drift-hooks`; always replayed from the journal.
pub const DRIFT_TRANSFER: &str = "/drift/transfers";

/// Journal-only path: a transfer request repeated under its idempotency
/// key after the transfer was edited behind Settle's back (a re-apply)
/// puts the transfer back as it was asked for. Never served to clients;
/// [`World::edited_under`] tells when a repeat needs it.
pub const RESTORE_TRANSFER: &str = "/ledger/transfers:restore";

/// Everything the outside world holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct World {
    /// Balances in minor units; accounts open on first use.
    pub accounts: BTreeMap<String, i64>,
    pub transfers: BTreeMap<String, Transfer>,
    pub stock: BTreeMap<String, i64>,
    pub reservations: BTreeMap<String, Reservation>,
    pub messages: Vec<Message>,
    /// Idempotency keys a compensation found nothing under: a request that
    /// arrives later with one of them is refused (409), so an attempt whose
    /// outcome was unknown cannot take effect after it was undone.
    #[serde(default)]
    pub voided_keys: std::collections::BTreeSet<String>,
    /// Requests that changed something.
    pub requests: u64,
    /// Repeated requests answered from the idempotency record, not applied again.
    pub deduplicated: u64,
    /// Transfers edited behind Settle's back, as they were before the
    /// first edit: what a re-applied request puts back.
    #[serde(default)]
    pub edited: BTreeMap<String, Transfer>,
    /// Transfers put back by a re-applied request.
    #[serde(default)]
    pub restored: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Transfer {
    pub id: String,
    pub from: String,
    pub to: String,
    pub amount: i64,
    pub refunded: bool,
    pub idempotency_key: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reservation {
    pub id: String,
    pub sku: String,
    pub quantity: i64,
    pub released: bool,
    pub idempotency_key: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub to: String,
    pub text: String,
    pub idempotency_key: String,
}

/// An answer: HTTP status and JSON body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

fn reply(status: u16, body: Value) -> Reply {
    Reply { status, body }
}

fn problem(status: u16, message: impl Into<String>) -> Reply {
    reply(status, json!({ "error": message.into() }))
}

impl World {
    /// The world on first start: some stock to reserve.
    pub fn seeded() -> Self {
        let mut w = World::default();
        w.stock.insert("widget".into(), 1_000_000);
        w.stock.insert("gadget".into(), 1_000_000);
        w.stock.insert("rare-item".into(), 1);
        w
    }

    /// The paths a `POST` can change the world through.
    pub const CHANGE_PATHS: [&'static str; 7] = [
        "/ledger/transfers",
        "/ledger/refunds",
        "/stock/reservations",
        "/stock/releases",
        "/outbox/messages",
        "/outbox/voids",
        DRIFT_TRANSFER,
    ];

    /// Whether a `POST` to `path` can change the world (else it is a 404
    /// that is not worth journaling).
    pub fn changes(path: &str) -> bool {
        Self::CHANGE_PATHS.contains(&path)
    }

    /// Applies one state-changing request. Deterministic: replaying the
    /// journal's requests in order rebuilds the same world.
    pub fn apply(&mut self, path: &str, key: &str, body: &Value) -> Reply {
        let text = |field: &str| body.get(field).and_then(Value::as_str).map(str::to_string);
        let int = |field: &str| body.get(field).and_then(Value::as_i64);
        let voided = |kind: &str| {
            problem(
                409,
                format!("{kind} under key '{key}' was cancelled by an earlier compensation"),
            )
        };
        let reply = match path {
            "/ledger/transfers" | "/stock/reservations" | "/outbox/messages"
                if self.voided_keys.contains(key) =>
            {
                voided(path.rsplit('/').next().unwrap_or("request"))
            }
            "/ledger/transfers" => match (text("from"), text("to"), int("amount")) {
                (Some(from), Some(to), Some(amount))
                    if amount > 0 && !from.is_empty() && !to.is_empty() =>
                {
                    let id = format!("t-{:06}", self.transfers.len() + 1);
                    *self.accounts.entry(from.clone()).or_default() -= amount;
                    *self.accounts.entry(to.clone()).or_default() += amount;
                    let t = Transfer {
                        id: id.clone(),
                        from,
                        to,
                        amount,
                        refunded: false,
                        idempotency_key: key.into(),
                    };
                    let body = json!(t);
                    self.transfers.insert(id, t);
                    reply(201, body)
                }
                _ => problem(
                    422,
                    "need from, to (non-empty) and a positive integer amount",
                ),
            },
            DRIFT_TRANSFER => match text("transfer_id") {
                Some(id) => match self.transfers.get_mut(&id) {
                    Some(t) => {
                        self.edited.entry(id.clone()).or_insert_with(|| t.clone());
                        if let Some(amount) = int("amount") {
                            t.amount = amount;
                        }
                        if let Some(refunded) = body.get("refunded").and_then(Value::as_bool) {
                            t.refunded = refunded;
                        }
                        reply(200, json!(t))
                    }
                    None => problem(404, format!("no transfer {id}")),
                },
                None => problem(422, "need transfer_id, and amount or refunded"),
            },
            RESTORE_TRANSFER => match self.edited_under(key) {
                Some(id) => {
                    let original = self.edited.remove(&id).expect("edited_under found it");
                    let body = json!(original);
                    self.transfers.insert(id, original);
                    self.restored += 1;
                    reply(201, body)
                }
                None => problem(404, format!("no edited transfer under key '{key}'")),
            },
            "/ledger/refunds" => match (text("transfer_id"), text("transfer_key")) {
                (Some(id), _) => self.refund(&id),
                (None, Some(k)) => {
                    let found = self.transfers.values().find(|t| t.idempotency_key == k);
                    match found.map(|t| t.id.clone()) {
                        Some(id) => self.refund(&id),
                        None => self.void(k),
                    }
                }
                (None, None) => problem(422, "need transfer_id or transfer_key"),
            },
            "/stock/releases" => match (text("reservation_id"), text("reservation_key")) {
                (Some(id), _) => self.release(&id),
                (None, Some(k)) => {
                    let found = self.reservations.values().find(|r| r.idempotency_key == k);
                    match found.map(|r| r.id.clone()) {
                        Some(id) => self.release(&id),
                        None => self.void(k),
                    }
                }
                (None, None) => problem(422, "need reservation_id or reservation_key"),
            },
            "/stock/reservations" => match (text("sku"), int("quantity")) {
                (Some(sku), Some(quantity)) if quantity > 0 => {
                    let available = self.stock.get(&sku).copied().unwrap_or(0);
                    if available < quantity {
                        problem(
                            409,
                            format!(
                                "insufficient stock of '{sku}': {available} available, {quantity} asked"
                            ),
                        )
                    } else {
                        self.stock.insert(sku.clone(), available - quantity);
                        let id = format!("r-{:06}", self.reservations.len() + 1);
                        let r = Reservation {
                            id: id.clone(),
                            sku,
                            quantity,
                            released: false,
                            idempotency_key: key.into(),
                        };
                        let body = json!(r);
                        self.reservations.insert(id, r);
                        reply(201, body)
                    }
                }
                _ => problem(422, "need sku and a positive integer quantity"),
            },
            // Nothing went out under this key: make sure nothing ever does.
            "/outbox/voids" => match text("message_key") {
                Some(k) if !self.messages.iter().any(|m| m.idempotency_key == k) => self.void(k),
                Some(k) => problem(409, format!("a message was already sent under key '{k}'")),
                None => problem(422, "need message_key"),
            },
            "/outbox/messages" => match (text("to"), text("text")) {
                (Some(to), Some(text)) if !to.is_empty() => {
                    let id = format!("m-{:06}", self.messages.len() + 1);
                    let m = Message {
                        id,
                        to,
                        text,
                        idempotency_key: key.into(),
                    };
                    let body = json!(m);
                    self.messages.push(m);
                    reply(201, body)
                }
                _ => problem(422, "need to (non-empty) and text"),
            },
            other => problem(404, format!("no such endpoint {other}")),
        };
        if reply.status < 300 {
            self.requests += 1;
        }
        reply
    }

    /// The transfer made under idempotency key `key`, if it was edited
    /// behind Settle's back since.
    pub fn edited_under(&self, key: &str) -> Option<String> {
        self.edited
            .values()
            .find(|t| t.idempotency_key == key)
            .map(|t| t.id.clone())
    }

    /// A compensation found nothing under `key`: a request arriving later
    /// with it is refused, so it cannot take effect after the undo.
    fn void(&mut self, key: String) -> Reply {
        self.voided_keys.insert(key.clone());
        reply(200, json!({ "voided_key": key }))
    }

    /// Refunds transfer `id` once; a second refund answers the same.
    fn refund(&mut self, id: &str) -> Reply {
        match self.transfers.get_mut(id) {
            None => problem(404, "no such transfer"),
            Some(t) if t.refunded => reply(200, json!(t)),
            Some(t) => {
                // Refunded for real: nothing of it is put back any more.
                self.edited.remove(id);
                t.refunded = true;
                let t = t.clone();
                *self.accounts.entry(t.from.clone()).or_default() += t.amount;
                *self.accounts.entry(t.to.clone()).or_default() -= t.amount;
                reply(200, json!(t))
            }
        }
    }

    /// Releases reservation `id` once; a second release answers the same.
    fn release(&mut self, id: &str) -> Reply {
        match self.reservations.get_mut(id) {
            None => problem(404, "no such reservation"),
            Some(r) if r.released => reply(200, json!(r)),
            Some(r) => {
                r.released = true;
                let r = r.clone();
                *self.stock.entry(r.sku.clone()).or_default() += r.quantity;
                reply(200, json!(r))
            }
        }
    }

    /// Answers a read. `path` may carry a query: `/outbox/messages?idempotency_key=K`
    /// finds the message sent under key K.
    pub fn read(&self, path: &str) -> Reply {
        if let Some(key) = path.strip_prefix("/outbox/messages?idempotency_key=") {
            return self
                .messages
                .iter()
                .find(|m| m.idempotency_key == key)
                .map_or_else(
                    || problem(404, "no message under that key"),
                    |m| reply(200, json!(m)),
                );
        }
        let id = |prefix: &str| path.strip_prefix(prefix).map(str::to_string);
        if path == "/state" {
            return reply(200, json!(self));
        }
        if let Some(id) = id("/ledger/transfers/") {
            return self.transfers.get(&id).map_or_else(
                || problem(404, "no such transfer"),
                |t| reply(200, json!(t)),
            );
        }
        if let Some(id) = id("/stock/reservations/") {
            return self.reservations.get(&id).map_or_else(
                || problem(404, "no such reservation"),
                |r| reply(200, json!(r)),
            );
        }
        problem(404, format!("no such resource {path}"))
    }
}
