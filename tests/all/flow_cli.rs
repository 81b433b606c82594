//! `settle flow validate | graph | test`: every problem of several files at
//! once with where and how to fix it, the flow drawn as Mermaid, and a dry
//! run with mocked step outputs that calls no plugin.

use crate::support;
use std::path::{Path, PathBuf};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn run(args: &[&str]) -> (i32, String, String) {
    support::settle(args).unwrap()
}

#[test]
fn validate_reports_every_problem_of_every_file_against_the_installed_plugins() {
    let dir = support::tempdir();
    let config = support::write_config(dir.path(), None);
    let bad = dir.path().join("ship.yaml");
    std::fs::write(
        &bad,
        "name: ship
steps:
  - name: reserve
    plugin: reserve-stock
    input: { sku: widget, quantity: 0 }
  - name: charge
    plugin: transfer
    input:
      from: ann
      too: shop
      amount: ${{ steps.reserve.output.reservation_id }}
",
    )
    .unwrap();
    let good = repo("example-plugins/flows/order.yaml");
    let (code, out, err) = run(&[
        "--config",
        config.to_str().unwrap(),
        "flow",
        "validate",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("flow order@1 is valid: 3 step(s)"), "{out}");
    let file = bad.display().to_string();
    for expected in [
        format!(
            "flow {file}:5:12: field 'quantity' of step 'reserve': 0 does not fit plugin 'reserve-stock'"
        ),
        format!(
            "flow {file}:9:11: step 'charge' does not give plugin 'transfer' its required field 'to' (is 'too' meant to be 'to'?)"
        ),
        format!(
            "flow {file}:9:11: field 'amount' of step 'charge' gets 'steps.reserve.output.reservation_id', which plugin 'reserve-stock' returns as string, but plugin 'transfer' wants integer"
        ),
        "1 of 2 flow file(s) have problems".to_string(),
    ] {
        assert!(err.contains(&expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn graph_draws_the_steps_and_where_a_failure_goes() {
    let (code, out, err) = run(&[
        "flow",
        "graph",
        repo("example-plugins/flows/order.yaml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    for line in [
        "flowchart TD",
        "accepted --> step0[\"1. charge (transfer)\"]",
        "step0 --> step1[\"2. reserve (reserve-stock)\"]",
        "step2 -. fails .-> undo1",
        "undo1[\"undo reserve\"] --> undo0",
        "undo0[\"undo charge\"] --> compensated",
        "confirm -- \"in sync\" --> settled([\"settled\"])",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn test_renders_each_input_from_mocks_and_stops_where_one_is_missing() {
    let order = repo("example-plugins/flows/order.yaml");
    let order = order.to_str().unwrap();
    let input = r#"{"customer":"ann","amount":700,"sku":"widget","quantity":1}"#;
    let (code, out, err) = run(&[
        "flow",
        "test",
        order,
        "--input",
        input,
        "--mock",
        r#"charge={"transfer_id":"t-9","amount":700}"#,
        "--mock",
        r#"reserve={"reservation_id":"r-1"}"#,
        "--mock",
        r#"confirm={"message_id":"m-1"}"#,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(r#"input:  {"text":"Order confirmed: 1 x widget, paid with t-9","to":"ann"}"#),
        "{out}"
    );
    assert!(out.contains("every step completed"), "{out}");
    let (code, out, _) = run(&[
        "flow",
        "test",
        order,
        "--input",
        input,
        "--mock",
        r#"charge={"transfer_id":"t-9","amount":700}"#,
    ]);
    assert_eq!(code, 1);
    assert!(
        out.contains("no --mock reserve=JSON: the dry run stops here"),
        "{out}"
    );
    // A mapping that cannot be made says so, at the step it stops.
    let (code, out, _) = run(&["flow", "test", order, "--input", "{}"]);
    assert_eq!(code, 1);
    assert!(out.contains("input: cannot be made:"), "{out}");
}

const PRICED: &str = r#"name: priced
steps:
  - name: quote
    plugin: noop
    input:
      cents: "${{ input.amount * 100 }}"
      skus: "${{ [input.items[].sku] }}"
  - name: review
    if: "${{ steps.quote.output.cents > 10000 }}"
    plugin: noop
    input: { why: large }
  - name: charge
    plugin: transfer
    input:
      from: "${{ input.customer }}"
      to: shop
      amount: "${{ steps.quote.output.cents / 100 }}"
"#;

/// The dry run evaluates jq (in the sandbox) and `if:`, prints the path
/// taken with skipped steps, and checks each input against the plugin's
/// schema; the graph draws the condition and where a false one goes.
#[test]
fn test_and_graph_follow_expressions_and_conditions() {
    let dir = support::tempdir();
    let file = dir.path().join("priced.yaml");
    std::fs::write(&file, PRICED).unwrap();
    let file = file.to_str().unwrap();
    let input = r#"{"customer":"ann","amount":12,"items":[{"sku":"a"},{"sku":"b"}]}"#;
    let quote = r#"quote={"cents":1200,"skus":["a","b"]}"#;
    let (code, out, err) = run(&[
        "flow",
        "test",
        file,
        "--input",
        input,
        "--mock",
        quote,
        "--mock",
        r#"charge={"transfer_id":"t-1","amount":12}"#,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    for expected in [
        r#"input:  {"cents":1200,"skus":["a","b"]}"#,
        "2. review skipped: `if: ${{ steps.quote.output.cents > 10000 }}` is false",
        r#"input:  {"amount":12,"from":"ann","to":"shop"}"#,
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    // A big order takes the review; an input the plugin refuses stops it.
    let (code, out, _) = run(&[
        "flow",
        "test",
        file,
        "--input",
        r#"{"customer":"ann","amount":250,"items":[]}"#,
        "--mock",
        r#"quote={"cents":"lots"}"#,
        "--mock",
        r#"review={}"#,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("2. review (noop)"), "{out}");
    assert!(
        out.contains("3. charge (transfer)\n   input: cannot be made: 'steps.quote.output.cents / 100' failed"),
        "{out}"
    );
    // An input the installed plugin's schema refuses stops the dry run there.
    let config = support::write_config(dir.path(), None);
    let (code, out, _) = run(&[
        "--config",
        config.to_str().unwrap(),
        "flow",
        "test",
        file,
        "--input",
        r#"{"customer":7,"amount":12,"items":[]}"#,
        "--mock",
        r#"quote={"cents":1200}"#,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("input does not match the schema of plugin 'transfer'"),
        "{out}"
    );
    let (code, out, err) = run(&["flow", "graph", file]);
    assert_eq!(code, 0, "{err}");
    for line in [
        "step0 -- \"if ${{ steps.quote.output.cents > 10000 }}\" --> step1[\"2. review (noop)\"]",
        "step0 -. \"else: skipped\" .-> step2",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn the_host_serves_the_published_flow_schema() {
    let dir = support::tempdir();
    let server = support::Server::start(dir.path(), &[], "");
    let reply = server.get("/v1/schema/flow.json");
    assert_eq!(reply.status, 200, "{reply}");
    assert_eq!(
        reply.header("content-type"),
        Some("application/schema+json")
    );
    let published = std::fs::read_to_string(repo("host/flow/schema/flow.schema.json")).unwrap();
    assert_eq!(reply.text, published);
    assert_eq!(reply.json["title"], "Settle flow file");
}

#[test]
fn versions_lists_each_version_and_whether_runs_still_use_it() {
    let dir = support::tempdir();
    let quick = "name: quick\nversion: \"1\"\nsteps:\n  - { name: one, plugin: noop }\n";
    let server = support::Server::start(dir.path(), &[("quick", quick)], "");
    let reply = server.put(
        "/v1/flows/quick",
        "name: quick\nversion: \"2\"\nsteps:\n  - { name: one, plugin: noop }\n",
    );
    assert!(reply.status < 300, "{reply}");
    let (code, out, err) = run(&["flow", "versions", "quick", "--server", &server.base_url]);
    assert_eq!(code, 0, "{err}");
    let line = |v: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(v))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("1 ").contains("drained"), "{out}");
    assert!(
        line("2 ").contains("current") && line("2 ").contains("0 unfinished run(s)"),
        "{out}"
    );
    // Without a server there is no catalog to read.
    let (code, _, err) = run(&["flow", "versions", "quick"]);
    assert_ne!(code, 0);
    assert!(err.contains("--server"), "{err}");
}

/// The dry run of a `for_each` step shows each item's input; the graph
/// says the step runs per item.
#[test]
fn test_and_graph_show_a_for_each_step_per_item() {
    let dir = support::tempdir();
    let file = dir.path().join("each.yaml");
    std::fs::write(
        &file,
        "name: each\nsteps:\n  - name: ship\n    plugin: noop\n    for_each: \"${{ input.orders }}\"\n    concurrency: 3\n    input: { order: \"${{ item }}\", n: \"${{ item_index }}\" }\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let (code, out, err) = run(&[
        "flow",
        "test",
        file,
        "--input",
        r#"{"orders":["a","b"]}"#,
        "--mock",
        r#"ship=[{"order":"a"},{"order":"b"}]"#,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    for expected in [
        "for each of 2 item(s), 3 at a time:",
        r#"item 0 input: {"n":0,"order":"a"}"#,
        r#"item 1 input: {"n":1,"order":"b"}"#,
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    let (code, out, _) = run(&["flow", "graph", file]);
    assert_eq!(code, 0);
    assert!(
        out.contains("1. ship (noop for each item, 3 at a time)"),
        "{out}"
    );
}

/// The dry run of a `parallel` step shows each branch's input (checked
/// against its plugin); the graph forks to the branches and joins.
#[test]
fn test_and_graph_show_a_parallel_steps_branches() {
    let dir = support::tempdir();
    let config = support::write_config(dir.path(), None);
    let config = config.to_str().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(
        &file,
        r#"name: p
steps:
  - name: tell
    parallel:
      join: { first: 1 }
      branches:
        - { name: mail, plugin: noop, input: { to: "${{ input.to }}" } }
        - { name: odd, plugin: flaky, input: { mode: "${{ input.mode }}" } }
  - name: after
    plugin: noop
    input: { x: "${{ steps.tell.output.mail.to // \"nobody\" }}" }
"#,
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let mock = r#"tell={"mail":{"to":"ann"},"odd":null}"#;
    let args = |input: &'static str| {
        vec![
            "--config",
            config,
            "flow",
            "test",
            file,
            "--input",
            input,
            "--mock",
            mock,
            "--mock",
            r#"after={"x":"ann"}"#,
        ]
    };
    let (code, out, err) = run(&args(r#"{"to":"ann","mode":"ok"}"#));
    assert_eq!(code, 0, "{out}{err}");
    for expected in [
        "1. tell (parallel, join first 1)",
        r#"branch mail (noop) input: {"to":"ann"}"#,
        r#"branch odd (flaky) input: {"mode":"ok"}"#,
        r#"input:  {"x":"ann"}"#,
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    // A branch's input is checked against its own plugin's schema.
    let (code, out, _) = run(&args(r#"{"to":"ann","mode":"sideways"}"#));
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("branch odd input does not match the schema of plugin 'flaky'"),
        "{out}"
    );
    let (code, out, _) = run(&["flow", "graph", file]);
    assert_eq!(code, 0);
    for expected in [
        "accepted --> fork0[[\"1. tell (parallel, 2 at a time)\"]]",
        "fork0 --> branch0_0[\"mail (noop)\"] --> step0",
        "fork0 --> branch0_1[\"odd (flaky)\"] --> step0",
        "step0{{\"join: first 1\"}}",
        "step0 --> step1[\"2. after (noop)\"]",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}
