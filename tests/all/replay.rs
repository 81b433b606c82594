//! `settle plugin replay`: a recorded step called again with a new build,
//! in a dry run answered from the recorded exchanges, its output compared
//! with the recorded one.

use crate::support::{self, Service};
use serde_json::json;
use settle::model::{EventKind, RunState};

const PAY: &str = "
name: pay
steps:
  - name: charge
    plugin: transfer
    input: { from: ann, to: bob, amount: \"${{ input.amount }}\" }
";

/// `settle --config CONFIG plugin replay RUN STEP --plugin PLUGIN.wasm`
/// with an example plugin's build; (exit code, stdout, stderr).
fn replay(config: &std::path::Path, run: &str, step: &str, plugin: &str) -> (i32, String, String) {
    let build = support::plugin_dir().join(format!("{plugin}.wasm"));
    support::settle(&[
        "--config",
        config.to_str().unwrap(),
        "plugin",
        "replay",
        run,
        step,
        "--plugin",
        build.to_str().unwrap(),
    ])
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_replays_from_its_recorded_exchanges_and_differences_are_named() {
    let dir = support::tempdir();
    let service = Service::start(&dir.path().join("world"));
    let mut config = support::config(dir.path());
    service.grant(&mut config);
    config.plugin_mut("transfer").record_exchanges = true;
    // The operator pins the build installed; a replay of another build
    // is not refused for it.
    let installed = std::fs::read(support::plugin_dir().join("transfer.wasm")).unwrap();
    config.plugin_mut("transfer").digest = Some(hex::encode(
        <sha2::Sha256 as sha2::Digest>::digest(&installed),
    ));
    let config_path = dir.path().join("settle.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();

    let host = settle::app::Host::start(&config).await.unwrap();
    let done = support::run_to_end(&host, &support::flow(PAY), json!({"amount": 7})).await;
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    let recorded: Vec<_> = support::events(&host, done.run_id)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ExchangesRecorded { exchanges, .. } => Some(exchanges),
            _ => None,
        })
        .collect();
    assert_eq!(recorded.len(), 1, "one run call, one record");
    let exchange = &recorded[0][0];
    assert_eq!(exchange.method, "POST");
    assert!(exchange.url.ends_with("/ledger/transfers"), "{exchange:?}");
    assert!(
        exchange.request_body.contains("\"amount\":7"),
        "{exchange:?}"
    );
    assert!(
        exchange.response_body.contains("\"amount\":7"),
        "{exchange:?}"
    );
    host.shutdown().await.unwrap();
    // The outside world is gone: the replay must not need it.
    drop(service);

    let run = done.run_id.to_string();
    let (code, out, err) = replay(&config_path, &run, "charge", "transfer");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("answered as recorded"), "{out}");
    assert!(out.contains("same output"), "{out}");

    // Another build (one that echoes its input) gives another output.
    let (code, out, err) = replay(&config_path, &run, "charge", "noop");
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("is plugin 'noop'; step 'charge' calls 'transfer'"),
        "{out}"
    );
    assert!(out.contains(".transfer_id: "), "{out}");
    assert!(out.contains(".from: (absent) → \"ann\""), "{out}");
    assert!(
        out.contains("was made by the recorded call, not by this build"),
        "{out}"
    );

    // A step that is not there is named, with the steps there are.
    let (code, _, err) = replay(&config_path, &run, "charg", "transfer");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no step 'charg'; its steps: charge"), "{err}");
}

/// Without recorded exchanges the replay says how to record them, and the
/// new build's requests are refused (nothing leaves the host).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_recorded_exchanges_requests_are_refused_and_it_says_how_to_record() {
    let dir = support::tempdir();
    let service = Service::start(&dir.path().join("world"));
    let mut config = support::config(dir.path());
    service.grant(&mut config);
    let config_path = dir.path().join("settle.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    let host = settle::app::Host::start(&config).await.unwrap();
    let done = support::run_to_end(&host, &support::flow(PAY), json!({"amount": 7})).await;
    assert_eq!(done.state, RunState::Settled, "{done:#?}");
    host.shutdown().await.unwrap();
    let requests_before = service.requests();
    let (code, out, err) = replay(&config_path, &done.run_id.to_string(), "charge", "transfer");
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("set record_exchanges = true in [plugins.transfer]"),
        "{out}"
    );
    assert!(out.contains("no recorded answer: refused"), "{out}");
    assert_eq!(
        service.requests(),
        requests_before,
        "nothing reached the service"
    );
}
