//! Bad input of every kind gets a clear error naming the problem and the
//! place, and loses nothing already accepted.

use crate::support;
use serde_json::json;
use settle::app::Host;
use settle::engine::SubmitError;
use settle::model::RunState;

#[test]
fn malformed_flow_names_file_line_and_column() {
    let text = "name: broken\nsteps:\n  - name: a\n    plugin: noop\n   input: [unclosed\n";
    let err = settle::flow::Flow::parse(text, "broken.yaml")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("flow broken.yaml:5:"), "{err}");
    assert!(err.contains("not valid YAML"), "{err}");

    let dir = support::tempdir();
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, text).unwrap();
    let (code, _, stderr) = support::settle(&[
        "validate",
        path.to_str().unwrap(),
        "--plugins",
        support::plugin_dir().to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("broken.yaml:5:"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_plugin_is_named_with_a_suggestion() {
    let dir = support::tempdir();
    let flow_path = dir.path().join("typo.yaml");
    std::fs::write(
        &flow_path,
        "name: typo\nsteps:\n  - name: reserve\n    plugin: reserve-stok\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let (code, stdout, stderr) = support::settle(&[
        "run",
        flow_path.to_str().unwrap(),
        "--input",
        "{}",
        "--data",
        data.to_str().unwrap(),
        "--plugins",
        support::plugin_dir().to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(code, 2);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("typo.yaml:4:13: step 'reserve' uses plugin 'reserve-stok', which is not installed (did you mean 'reserve-stock'?)"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_that_fails_the_plugin_schema_is_rejected_before_acceptance() {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    let flow = support::flow(
        "name: pay\nsteps:\n  - name: charge\n    plugin: transfer\n    input: { from: a, to: b, amount: \"${{ input.amount }}\" }\n",
    );
    let err = host
        .engine
        .submit(&flow, json!({"amount": "lots"}), None)
        .await
        .unwrap_err();
    let SubmitError::InvalidInput {
        step,
        plugin,
        problem,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!((step.as_str(), plugin.as_str()), ("charge", "transfer"));
    assert!(problem.contains("/amount"), "{problem}");
    let missing = host
        .engine
        .submit(&flow, json!({}), None)
        .await
        .unwrap_err()
        .to_string();
    assert!(missing.contains("input.amount"), "{missing}");
    assert!(
        host.store
            .list_runs_now(&Default::default(), 10)
            .unwrap()
            .items
            .is_empty(),
        "nothing was accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_wasm_is_reported_and_accepted_runs_survive() {
    let dir = support::tempdir();
    let mut config = support::config(dir.path());
    let flow = support::flow(
        "name: survive\nsteps:\n  - { name: a, plugin: noop }\n  - { name: b, plugin: noop }\n",
    );

    // A run accepted before the bad plugin arrives is not driven yet.
    let run = {
        let host = Host::start(&config).await.unwrap();
        host.engine.set_paused(true);
        support::submit(&host, &flow, json!({})).await
    };

    let bad_dir = dir.path().join("more-plugins");
    std::fs::create_dir_all(&bad_dir).unwrap();
    std::fs::write(bad_dir.join("broken.wasm"), b"\0asm\x0d\x00\x01\x00garbage").unwrap();
    std::fs::write(bad_dir.join("empty.wasm"), b"").unwrap();
    config.plugin_dirs.push(bad_dir.clone());

    let host = crate::idempotency::reopen(&config).await;
    let errors: Vec<String> = host.load_errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|e| e.contains("not a valid WebAssembly component")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("broken.wasm")),
        "{errors:?}"
    );
    assert!(
        host.runtime.plugin_info("noop").is_some(),
        "good plugins still load"
    );
    assert_eq!(host.resumed.runs, vec![run]);
    let s = host.engine.wait(run).await.unwrap().unwrap();
    assert_eq!(s.state, RunState::Settled, "the accepted run was not lost");
}

#[test]
fn bad_jsonl_lines_are_named_and_nothing_starts() {
    let dir = support::tempdir();
    let flow_path = dir.path().join("f.yaml");
    std::fs::write(
        &flow_path,
        "name: f\nsteps:\n  - { name: a, plugin: noop }\n",
    )
    .unwrap();
    let inputs = dir.path().join("in.jsonl");
    std::fs::write(
        &inputs,
        "{\"a\": 1}\nnot json\n[1]\n{\"input\": {}, \"idempotency_key\": 7}\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let (code, _, stderr) = support::settle(&[
        "run",
        flow_path.to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--plugins",
        support::plugin_dir().to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(code, 2);
    assert!(stderr.contains("in.jsonl:2: not JSON"), "{stderr}");
    assert!(
        stderr.contains("in.jsonl:3: a line must be a JSON object"),
        "{stderr}"
    );
    assert!(
        stderr.contains("in.jsonl:4: idempotency_key must be a string"),
        "{stderr}"
    );
    let (_, runs, _) =
        support::settle(&["runs", "--json", "--data", data.to_str().unwrap()]).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&runs).unwrap(),
        json!([])
    );
}
