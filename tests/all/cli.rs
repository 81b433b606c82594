//! The `settle` binary as people use it: the demo, read commands with
//! `--json`, the plugin catalog, and environment overrides of settle.toml.

use crate::support;
use serde_json::Value;

#[test]
fn demo_runs_three_flows_and_the_store_shows_them() {
    let dir = support::tempdir();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let plugins = support::plugin_dir();
    let (code, stdout, stderr) = support::settle(&[
        "demo",
        "--data",
        data,
        "--plugins",
        plugins.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("settled: Completed and confirmed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("compensated: Could not complete; all changes were undone"),
        "{stdout}"
    );
    assert!(
        stdout.contains("insufficient stock of 'rare-item'"),
        "{stdout}"
    );
    assert!(
        stdout.contains("planned failure 2 of 2 (retryable)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"bob\":0"),
        "bob's charge was refunded: {stdout}"
    );

    let (_, runs, _) = support::settle(&["runs", "--json", "--data", data]).unwrap();
    let runs: Vec<Value> = serde_json::from_str(&runs).unwrap();
    let states: Vec<&str> = runs.iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(
        states,
        ["settled", "compensated", "settled"],
        "newest first"
    );
    let (_, only, _) =
        support::settle(&["runs", "--json", "--state", "compensated", "--data", data]).unwrap();
    assert_eq!(serde_json::from_str::<Vec<Value>>(&only).unwrap().len(), 1);

    let run = runs[1]["run_id"].as_str().unwrap();
    let (code, status, _) = support::settle(&["status", run, "--json", "--data", data]).unwrap();
    assert_eq!(code, 0);
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["phrase"],
        "Could not complete; all changes were undone"
    );
    assert_eq!(status["last_failure"]["class"], "permanent");

    let (_, events, _) = support::settle(&["events", run, "--json", "--data", data]).unwrap();
    let events: Vec<Value> = serde_json::from_str(&events).unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["kind"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "run-accepted",
            "step-scheduled",
            "step-completed",
            "step-scheduled",
            "step-failed",
            "compensation-scheduled",
            "compensation-completed",
            "run-compensated"
        ]
    );
    for e in &events {
        for field in ["id", "run_id", "seq", "at_ms", "source", "trace_id"] {
            assert!(!e[field].is_null(), "event lacks {field}: {e}");
        }
    }

    let (code, text, _) = support::settle(&["status", "not-a-run", "--data", data]).unwrap();
    assert_eq!(code, 2, "{text}");
    let (_, _, err) = support::settle(&["status", "not-a-run", "--data", data]).unwrap();
    assert!(err.contains("'not-a-run' is not a run id"), "{err}");
}

#[test]
fn plugin_catalog_and_environment_overrides() {
    let dir = support::tempdir();
    let config = support::write_config(dir.path(), None);
    let out = support::settle_command()
        .args(["plugins", "--json", "--config", config.to_str().unwrap()])
        .env("SETTLE_PLUGINS__NOOP__KV", "true")
        .env("SETTLE_LIMITS__TIMEOUT", "3s")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let catalog: Value = serde_json::from_slice(&out.stdout).unwrap();
    let plugins = catalog["plugins"].as_array().unwrap();
    let names: Vec<&str> = plugins
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "flaky",
            "hostile",
            "noop",
            "notify",
            "reserve-stock",
            "transfer"
        ]
    );
    let by_name = |name: &str| {
        plugins
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} in the catalog"))
    };
    let noop = by_name("noop");
    assert_eq!(noop["grants"]["kv"], true, "environment override applied");
    assert_eq!(noop["limits"]["timeout"], "3s");
    assert!(noop["source"].as_str().unwrap().starts_with("noop@1.0.0#"));
    let transfer = by_name("transfer");
    assert_eq!(transfer["manifest"]["supports_reconcile"], true);
    assert_eq!(
        transfer["manifest"]["input_schema"]["required"][2],
        "amount"
    );

    let bad = support::settle_command()
        .args(["plugins", "--config", config.to_str().unwrap()])
        .env("SETTLE_LIMITS__TIMEOUT", "whenever")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("invalid configuration") && err.contains("whenever"),
        "{err}"
    );
}
