//! Plugins in other languages, built against the same `wit/` by
//! `example-plugins/build-other-languages.sh`: loaded and run by the host
//! like the Rust ones. They settle, are confirmed by `reconcile`, and are
//! undone by `compensate`.

use crate::support;
use serde_json::json;
use settle::app::Host;
use settle::model::{EventKind, RunState, Verdict};
use std::path::{Path, PathBuf};

fn other_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../example-plugins/dist-other");
    assert!(
        dir.join("py-ledger.wasm").exists() && dir.join("js-ledger.wasm").exists(),
        "the other-language plugins are not built in {}: run example-plugins/build-other-languages.sh (the README's test command does)",
        dir.display()
    );
    dir
}

async fn host(dir: &Path) -> Host {
    let mut config = support::config(dir);
    config.plugin_dirs.push(other_dir());
    for plugin in ["py-ledger", "js-ledger"] {
        let mut grants = settle::runtime::PluginSettings::default();
        grants.grants.kv = true;
        config.plugins.insert(plugin.into(), grants);
    }
    Host::start(&config)
        .await
        .expect("host starts with the Python and JavaScript plugins")
}

/// Two bookings by `plugin`; the second refuses when the input says `fail`.
fn book(plugin: &str) -> std::sync::Arc<settle::flow::Flow> {
    support::flow(&format!(
        "
name: book-{plugin}
steps:
  - name: book
    plugin: {plugin}
    input: {{ account: \"${{{{ input.account }}}}\", amount: \"${{{{ input.amount }}}}\" }}
  - name: book-again
    plugin: {plugin}
    input: {{ account: \"${{{{ input.account }}}}\", amount: 1, fail: \"${{{{ input.fail }}}}\" }}
"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_plugin_settles_is_confirmed_and_is_undone() {
    settles_is_confirmed_and_is_undone("py-ledger").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_plugin_settles_is_confirmed_and_is_undone() {
    settles_is_confirmed_and_is_undone("js-ledger").await;
}

async fn settles_is_confirmed_and_is_undone(plugin: &str) {
    let dir = support::tempdir();
    let host = host(dir.path()).await;
    let flow = book(plugin);

    let done = support::run_to_end(
        &host,
        &flow,
        json!({"account": "ann", "amount": 7, "fail": false}),
    )
    .await;
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    let booking = done.outputs[0].clone().unwrap();
    assert_eq!(booking["account"], json!("ann"));
    assert_eq!(booking["amount"], json!(7));
    // reconcile found both bookings where run left them.
    assert!(done.confirmed(), "{done:#?}");
    assert_eq!(
        done.verdicts,
        vec![Some(Verdict::InSync), Some(Verdict::InSync)]
    );

    // The second step refuses for good: the first booking is undone.
    let undone = support::run_to_end(
        &host,
        &flow,
        json!({"account": "bob", "amount": 3, "fail": true}),
    )
    .await;
    assert_eq!(undone.state, RunState::Compensated, "{undone:#?}");
    assert!(undone.compensated[0]);
    let failure = undone.last_failure.clone().unwrap();
    assert!(
        failure.message.contains("account bob refuses bookings"),
        "{failure:?}"
    );
    let events = support::events(&host, undone.run_id);
    assert!(
        events
            .iter()
            .any(|e| matches!(e.kind, EventKind::CompensationCompleted { index: 0, .. }))
    );
    host.shutdown().await.unwrap();
}

/// A `for_each` step's items are each asked by `reconcile`: the run is
/// confirmed only when every item's booking is where it was made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_item_of_a_for_each_step_is_confirmed() {
    let dir = support::tempdir();
    let host = host(dir.path()).await;
    let flow = support::flow(
        "
name: book-each
steps:
  - name: book
    plugin: py-ledger
    for_each: \"${{ input.accounts }}\"
    concurrency: 2
    input: { account: \"${{ item }}\", amount: \"${{ item_index + 1 }}\" }
",
    );
    let done = support::run_to_end(&host, &flow, json!({"accounts": ["ann", "bob", "cy"]})).await;
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    assert!(done.confirmed(), "{done:#?}");
    let bookings = done.outputs[0].clone().unwrap();
    assert_eq!(bookings[2]["account"], json!("cy"));
    assert_eq!(bookings[2]["amount"], json!(3));
    // Three items, three bookings under their own step ids.
    let ids: std::collections::BTreeSet<_> = bookings
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["booking"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3, "{bookings}");
    host.shutdown().await.unwrap();
}
