//! The SDK's test harness (`settle_sdk::testing`) against the example
//! plugins: their components in the real runtime (`settle plugin
//! session`), meeting a stand-in world of scripted HTTP, a set clock, kv in
//! memory and kept log lines.

use crate::support;
use serde_json::json;
use settle_sdk::testing::{Plugin, World};

fn start(plugin: &str, world: World) -> Plugin {
    let component = support::plugin_dir().join(format!("{plugin}.wasm"));
    Plugin::start(&component, world.settle(support::settle_bin())).expect("the session starts")
}

/// Scripted answers stand in for the ledger: `run` sends its request (with
/// the operation id as idempotency key), an unscripted request fails as
/// refused (nothing reaches the network), and `reconcile` sees what the
/// script says now.
#[test]
fn scripted_http_answers_run_and_reconcile_and_nothing_else_gets_out() {
    let world = World::new()
        .allow_host("bank.test")
        .config("base_url", "http://bank.test");
    let mut plugin = start("transfer", world);
    let input = json!({"from": "ann", "to": "bob", "amount": 5});
    plugin.respond(
        "POST",
        "http://bank.test/ledger/transfers",
        200,
        r#"{"id":"t-1","amount":5,"refunded":false}"#,
    );
    let paid = plugin.run_as(&input, "op-1", 1);
    assert_eq!(
        paid.output,
        Some(json!({"transfer_id": "t-1", "amount": 5})),
        "{paid:?}"
    );
    assert_eq!(paid.requests.len(), 1);
    let sent = &paid.requests[0];
    assert_eq!(sent.method, "POST");
    assert!(sent.answered);
    assert!(
        sent.headers
            .iter()
            .any(|(k, v)| k == "idempotency-key" && v == "op-1"),
        "{sent:?}"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&sent.body).unwrap(),
        input
    );
    // The script's one answer is used up: the next request is refused.
    let again = plugin.run(&input);
    assert_eq!(again.class(), Some("retryable"), "{again:?}");
    assert!(!again.requests[0].answered);
    // The ledger now says the transfer was refunded: drift.
    plugin.respond(
        "GET",
        "http://bank.test/ledger/transfers/t-1",
        200,
        r#"{"id":"t-1","amount":5,"refunded":true}"#,
    );
    let checked = plugin.reconcile(&input, paid.output.as_ref().unwrap());
    assert_eq!(
        checked.verdict.as_deref(),
        Some("drifted: transfer t-1 was refunded on the ledger"),
        "{checked:?}"
    );
}

/// Grants still hold: a host the plugin is not allowed is refused before
/// the script is asked, and the refusal is reported.
#[test]
fn a_host_not_allowed_is_refused_and_reported() {
    let world = World::new().config("base_url", "http://bank.test");
    let mut plugin = start("transfer", world);
    plugin.respond("POST", "http://bank.test/ledger/transfers", 200, "{}");
    let refused = plugin.run(&json!({"from": "ann", "to": "bob", "amount": 5}));
    assert!(!refused.ok(), "{refused:?}");
    assert!(refused.requests.is_empty(), "{refused:?}");
    assert_eq!(refused.denials.len(), 1, "{refused:?}");
    assert_eq!(refused.denials[0].0, "outbound-http");
}

/// The plugin's clock is the world's: a call's deadline is the set time
/// plus its time limit, and moving the clock moves it.
#[test]
fn the_clock_is_set_and_moved_by_the_test() {
    let start_ms = 1_700_000_000_000u64;
    let mut plugin = start("flaky", World::new().now_ms(start_ms));
    let deadline = |plugin: &mut Plugin| {
        let answer = plugin.run(&json!({"mode": "ctx"}));
        let payload = answer.output.unwrap()["payload"]
            .as_str()
            .unwrap()
            .to_string();
        serde_json::from_str::<serde_json::Value>(&payload).unwrap()["deadline_ms"]
            .as_u64()
            .unwrap()
    };
    let first = deadline(&mut plugin);
    assert_eq!(first, start_ms + 10_000, "the default 10 s limit");
    plugin.advance(std::time::Duration::from_secs(3600));
    assert_eq!(deadline(&mut plugin), first + 3_600_000);
}

/// kv written by one call is read by the next; log lines come back with
/// the call that wrote them, escaped as the host logs them.
#[test]
fn kv_persists_between_calls_and_logs_are_kept() {
    let mut plugin = start("hostile", World::new().kv());
    let filled =
        plugin.run(&json!({"mode": "kv-fill", "prefix": "k", "count": 1, "value_bytes": 3}));
    assert_eq!(filled.output.unwrap()["accepted"], 1);
    let read = plugin.run(&json!({"mode": "kv-read", "key": "k0"}));
    assert_eq!(read.output, Some(json!({"value": "vvv"})), "{read:?}");
    let logged = plugin.run(&json!({"mode": "log-forge"}));
    assert_eq!(logged.logs.len(), 1, "{logged:?}");
    let (level, line) = &logged.logs[0];
    assert_eq!(level, "info");
    assert!(line.starts_with("innocent"), "{line}");
    assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line:?}");
    // Without kv granted, the same call is refused.
    let mut bare = start("hostile", World::new());
    let refused = bare.run(&json!({"mode": "kv-read", "key": "k0"}));
    assert_eq!(refused.class(), Some("permanent"), "{refused:?}");
    assert_eq!(refused.denials.len(), 1, "{refused:?}");
    assert_eq!(refused.denials[0].0, "kv");
}
