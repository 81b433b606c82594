//! `settle plugin check FILE.wasm`: a component this host can run is
//! described (contract version, imports, manifest); anything else is
//! refused with a one-line reason that names the file and the problem.

use crate::support;

fn check(file: &std::path::Path) -> (i32, String, String) {
    support::settle(&["plugin", "check", file.to_str().unwrap()]).unwrap()
}

#[test]
fn a_plugin_is_described_and_anything_else_refused_with_the_reason() {
    let dist = support::plugin_dir();
    let (code, out, err) = check(&dist.join("transfer.wasm"));
    assert_eq!(code, 0, "{err}");
    let contract = settle::runtime::contract_version();
    for expected in [
        format!("plugin transfer 1.0.0 implements settle:plugin/handler@{contract}"),
        "compensates: yes · reconciles: yes".to_string(),
        "wasi:http/outgoing-handler".to_string(),
        "[plugins.transfer] allowed_outbound_hosts".to_string(),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
    }
    // Its describe() answers with a forged version: named, not installed.
    let hostile = dist.join("../dist-hostile/bad-version.wasm");
    let (code, _, err) = check(&hostile);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("not a plugin this host can run: ") && err.contains("bad-version.wasm"),
        "{err}"
    );
    // Not WebAssembly at all.
    let dir = support::tempdir();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "hello").unwrap();
    let (code, _, err) = check(&text);
    assert_eq!(code, 1);
    assert!(
        err.contains("notes.wasm") && err.contains("not a valid WebAssembly component"),
        "{err}"
    );
    let (code, out, _) = support::settle(&[
        "plugin",
        "check",
        "--json",
        dist.join("noop.wasm").to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["name"], "noop");
    assert_eq!(json["contract"], contract);
}
