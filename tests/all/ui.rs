//! Flow validation messages, Spin's "UI test" style: every `tests/ui/*.yaml`
//! has the expected output next to it (`.err` for invalid flows, `.ok` for
//! valid ones). `SETTLE_BLESS=1` rewrites the expectations; review the diff.

use serde_json::{Value, json};
use settle::flow::{Flow, PluginFacts};
use std::path::Path;

fn installed() -> Vec<PluginFacts> {
    let object = |required: Value, properties: Value| json!({"type": "object", "required": required, "properties": properties});
    let transfer_in = object(
        json!(["from", "to", "amount"]),
        json!({"from": {"type": "string", "minLength": 1}, "to": {"type": "string", "minLength": 1},
               "amount": {"type": "integer", "minimum": 1}}),
    );
    // Closed: it returns these fields and no others.
    let mut transfer_out = object(
        json!(["transfer_id", "amount"]),
        json!({"transfer_id": {"type": "string"}, "amount": {"type": "integer"}}),
    );
    transfer_out["additionalProperties"] = json!(false);
    let reserve_in = object(
        json!(["sku", "quantity"]),
        json!({"sku": {"type": "string", "minLength": 1}, "quantity": {"type": "integer", "minimum": 1}}),
    );
    let reserve_out = object(
        json!(["reservation_id"]),
        json!({"reservation_id": {"type": "string"}}),
    );
    // Takes nothing it does not declare.
    let mut audit_in = object(json!(["text"]), json!({"text": {"type": "string"}}));
    audit_in["additionalProperties"] = json!(false);
    [
        ("transfer", true, transfer_in, transfer_out),
        ("reserve-stock", true, reserve_in, reserve_out),
        ("notify", true, json!({}), json!({})),
        ("flaky", true, json!({}), json!({})),
        ("noop", true, json!({}), json!({})),
        ("audit-log", false, audit_in, json!({})),
    ]
    .into_iter()
    .map(|(name, c, input_schema, output_schema)| PluginFacts {
        name: name.into(),
        supports_compensate: c,
        input_schema,
        output_schema,
    })
    .collect()
}

#[test]
fn flow_validation_messages() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/ui");
    let bless = std::env::var_os("SETTLE_BLESS").is_some();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "ui cases missing in {}", dir.display());
    let mut mismatches = Vec::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let (actual, ext) = match Flow::parse(&text, &name)
            .and_then(|f| f.check_plugins(&name, &installed()).map(|()| f))
        {
            Ok(f) => (
                format!("valid: {} with {} step(s)\n", f.id(), f.steps.len()),
                "ok",
            ),
            Err(e) => (format!("{e}\n"), "err"),
        };
        let expected_path = path.with_extension(ext);
        if bless {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            mismatches.push(format!(
                "{name}:\n--- expected ({})\n{expected}--- actual\n{actual}",
                expected_path.display()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
