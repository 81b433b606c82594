//! `settle plugin new NAME`: a ready-to-build Rust plugin in a directory
//! of its own, anywhere. The SDK goes with it (`settle-sdk/`, with the WIT
//! contract this host implements), so the project needs nothing from this
//! repository: `cargo build --release --target wasm32-wasip2` builds it,
//! `cargo test` runs its test, `settle plugin check` checks the result.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// The SDK's sources, as this host was built with them.
const SDK_FILES: [(&str, &str); 5] = [
    (
        "src/lib.rs",
        include_str!("../../../../plugin-sdk/src/lib.rs"),
    ),
    (
        "src/http.rs",
        include_str!("../../../../plugin-sdk/src/http.rs"),
    ),
    (
        "src/testing.rs",
        include_str!("../../../../plugin-sdk/src/testing.rs"),
    ),
    (
        "wit/plugin.wit",
        include_str!("../../../../plugin-sdk/wit/plugin.wit"),
    ),
    ("Cargo.toml", SDK_MANIFEST),
];

/// The SDK's manifest outside the workspace: the same dependencies as
/// `plugin-sdk/Cargo.toml` (a test keeps them equal).
const SDK_MANIFEST: &str = r#"[package]
name = "settle-sdk"
description = "Write Settle plugins (steps with run / compensate / reconcile) in Rust"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
wit-bindgen = "0.63"
wasi = "0.14"
serde = { version = "1", features = ["derive"] }
serde_json = "1"
"#;

/// Creates `parent/NAME`; refuses a name that is not a plugin name or a
/// directory that exists already. Returns where it wrote.
pub fn new_rust(name: &str, parent: &Path) -> anyhow::Result<PathBuf> {
    let dir = project_dir(name, parent)?;
    let crate_name = name.replace('-', "_");
    let files: Vec<(String, String)> = SDK_FILES
        .iter()
        .map(|(path, text)| (format!("settle-sdk/{path}"), text.to_string()))
        .chain([
            ("Cargo.toml".to_string(), manifest(name)),
            ("src/lib.rs".to_string(), LIB_RS.replace("{{name}}", name)),
            (
                "README.md".to_string(),
                README
                    .replace("{{name}}", name)
                    .replace("{{crate}}", &crate_name),
            ),
            (".gitignore".to_string(), "/target\n".to_string()),
        ])
        .collect();
    write_files(&dir, files)?;
    Ok(dir)
}

/// `parent/NAME`, once `name` is a plugin name and the directory is free.
fn project_dir(name: &str, parent: &Path) -> anyhow::Result<PathBuf> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!(
            "'{name}' cannot name a plugin: use 1 to 64 lowercase letters, digits or '-', starting with a letter"
        );
    }
    // Names cargo or Rust keep for themselves, or the SDK's own.
    const TAKEN: [&str; 12] = [
        "test",
        "core",
        "std",
        "alloc",
        "proc-macro",
        "self",
        "super",
        "crate",
        "settle-sdk",
        "build",
        "deps",
        "examples",
    ];
    if TAKEN.contains(&name) {
        bail!("'{name}' is taken by cargo, Rust or the SDK: choose another plugin name");
    }
    let dir = parent.join(name);
    if dir.exists() {
        bail!(
            "{} exists already: choose another name or --dir",
            dir.display()
        );
    }
    Ok(dir)
}

fn write_files(dir: &Path, files: Vec<(String, String)>) -> anyhow::Result<()> {
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// The contract a plugin in another language builds against.
const WIT: &str = include_str!("../../../../wit/plugin.wit");

/// Pinned tools: the versions this host's tests build plugins with.
pub const COMPONENTIZE_PY: &str = "0.25.1";
pub const COMPONENTIZE_JS: &str = "0.23.0";

/// A Python plugin (componentize-py): `app.py` (the component), `logic.py`
/// (the work, tested natively by `python3 -m unittest`), `build.sh`.
pub fn new_python(name: &str, parent: &Path) -> anyhow::Result<PathBuf> {
    let dir = project_dir(name, parent)?;
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{componentize_py}}", COMPONENTIZE_PY)
    };
    write_files(
        &dir,
        vec![
            ("wit/plugin.wit".into(), WIT.into()),
            ("app.py".into(), fill(PY_APP)),
            ("logic.py".into(), fill(PY_LOGIC)),
            ("test_logic.py".into(), fill(PY_TEST)),
            ("build.sh".into(), fill(PY_BUILD)),
            ("README.md".into(), fill(PY_README)),
            (".gitignore".into(), "__pycache__/\n*.wasm\n".into()),
        ],
    )?;
    executable(&dir.join("build.sh"))?;
    Ok(dir)
}

/// A JavaScript plugin (componentize-js): `plugin.js` (the component),
/// `logic.js` (the work, tested natively by `node --test`), `build.sh`.
pub fn new_js(name: &str, parent: &Path) -> anyhow::Result<PathBuf> {
    let dir = project_dir(name, parent)?;
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{componentize_js}}", COMPONENTIZE_JS)
    };
    write_files(
        &dir,
        vec![
            ("wit/plugin.wit".into(), WIT.into()),
            ("plugin.js".into(), fill(JS_PLUGIN)),
            ("logic.js".into(), fill(JS_LOGIC)),
            ("logic.test.js".into(), fill(JS_TEST)),
            ("package.json".into(), fill(JS_PACKAGE)),
            ("build.sh".into(), fill(JS_BUILD)),
            ("README.md".into(), fill(JS_README)),
            (".gitignore".into(), "node_modules/\n*.wasm\n".into()),
        ],
    )?;
    executable(&dir.join("build.sh"))?;
    Ok(dir)
}

fn executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

const PY_LOGIC: &str = r#""""The work of `{{name}}`, apart from the plugin plumbing: plain Python,
tested natively (`python3 -m unittest`)."""


class InvalidInput(Exception):
    """The input itself is wrong: retrying cannot help."""


def greeting(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput("name is empty")
    return f"Hello, {name}!"
"#;

const PY_TEST: &str = r#"import unittest

from logic import InvalidInput, greeting


class GreetingTest(unittest.TestCase):
    def test_it_greets_and_refuses_an_empty_name(self):
        self.assertEqual(greeting("Ada"), "Hello, Ada!")
        with self.assertRaises(InvalidInput):
            greeting(" ")


if __name__ == "__main__":
    unittest.main()
"#;

const PY_APP: &str = r#""""`{{name}}`: a Settle plugin in Python (componentize-py). `run` makes
one change in the outside world; `compensate` undoes it; `reconcile`
checks it still holds. This one only greets: nothing to undo or check."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types

from logic import InvalidInput, greeting

INPUT_SCHEMA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1}},
}
OUTPUT_SCHEMA = {
    "type": "object",
    "required": ["greeting"],
    "properties": {"greeting": {"type": "string"}},
}


class Handler(exports.Handler):
    def describe(self) -> types.Manifest:
        return types.Manifest(
            name="{{name}}",
            version="0.1.0",
            summary="Greets someone by name",
            input_schema=json.dumps(INPUT_SCHEMA),
            output_schema=json.dumps(OUTPUT_SCHEMA),
            supports_compensate=False,
            supports_reconcile=False,
            retry=None,
        )

    def run(self, ctx: types.CallContext, input: str) -> str:
        try:
            request = json.loads(input)
            return json.dumps({"greeting": greeting(request.get("name"))})
        except (ValueError, AttributeError, InvalidInput) as e:
            raise Err(types.StepError_InvalidInput(str(e)))

    def compensate(self, ctx: types.CallContext, input: str, output) -> None:
        pass

    def reconcile(self, ctx: types.CallContext, input: str, output: str) -> types.Verdict:
        return types.Verdict_Unknown()
"#;

const PY_BUILD: &str = r#"#!/usr/bin/env bash
# Builds {{name}}.wasm with componentize-py {{componentize_py}}, installed once
# into a virtualenv under $SETTLE_PLUGIN_TOOLS (default ~/.cache/settle/plugin-tools).
set -euo pipefail
cd "$(dirname "$0")"
tools="${SETTLE_PLUGIN_TOOLS:-$HOME/.cache/settle/plugin-tools}"
venv="$tools/componentize-py-{{componentize_py}}"
if [ ! -x "$venv/bin/componentize-py" ]; then
  mkdir -p "$tools"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py=={{componentize_py}}"
fi
"$venv/bin/componentize-py" -d wit -w step componentize app -o {{name}}.wasm >/dev/null
echo "built {{name}}.wasm"
"#;

const PY_README: &str = r#"# {{name}}: a Settle plugin in Python

    python3 -m unittest        # the plugin's own test (logic.py)
    ./build.sh                 # the component: {{name}}.wasm (componentize-py {{componentize_py}})
    settle plugin check {{name}}.wasm

Then copy `{{name}}.wasm` into a directory of `plugin_dirs` in settle.toml.
`wit/plugin.wit` is the contract of the host that created this project.
"#;

const JS_LOGIC: &str = r#"// The work of `{{name}}`, apart from the plugin plumbing: plain
// JavaScript, tested natively (`node --test`).

export class InvalidInput extends Error {}

export function greeting(name) {
  if (typeof name !== "string" || name.trim() === "") {
    throw new InvalidInput("name is empty");
  }
  return `Hello, ${name}!`;
}
"#;

const JS_TEST: &str = r#"import { test } from "node:test";
import assert from "node:assert/strict";
import { InvalidInput, greeting } from "./logic.js";

test("it greets and refuses an empty name", () => {
  assert.equal(greeting("Ada"), "Hello, Ada!");
  assert.throws(() => greeting(" "), InvalidInput);
});
"#;

const JS_PLUGIN: &str = r#"// `{{name}}`: a Settle plugin in JavaScript (componentize-js). `run` makes
// one change in the outside world; `compensate` undoes it; `reconcile`
// checks it still holds. This one only greets: nothing to undo or check.

import { greeting } from "./logic.js";

const INPUT_SCHEMA = {
  type: "object",
  required: ["name"],
  properties: { name: { type: "string", minLength: 1 } },
};
const OUTPUT_SCHEMA = {
  type: "object",
  required: ["greeting"],
  properties: { greeting: { type: "string" } },
};

export const handler = {
  describe() {
    return {
      name: "{{name}}",
      version: "0.1.0",
      summary: "Greets someone by name",
      inputSchema: JSON.stringify(INPUT_SCHEMA),
      outputSchema: JSON.stringify(OUTPUT_SCHEMA),
      supportsCompensate: false,
      supportsReconcile: false,
      retry: undefined,
    };
  },
  run(_ctx, input) {
    try {
      return JSON.stringify({ greeting: greeting(JSON.parse(input).name) });
    } catch (e) {
      throw { tag: "invalid-input", val: String(e.message || e) };
    }
  },
  compensate() {},
  reconcile() {
    return { tag: "unknown" };
  },
};
"#;

const JS_PACKAGE: &str = r#"{
  "name": "{{name}}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "scripts": { "test": "node --test", "build": "./build.sh" }
}
"#;

const JS_BUILD: &str = r#"#!/usr/bin/env bash
# Builds {{name}}.wasm with @bytecodealliance/componentize-js {{componentize_js}}, installed
# once under $SETTLE_PLUGIN_TOOLS (default ~/.cache/settle/plugin-tools).
set -euo pipefail
cd "$(dirname "$0")"
tools="${SETTLE_PLUGIN_TOOLS:-$HOME/.cache/settle/plugin-tools}"
js="$tools/componentize-js-{{componentize_js}}"
if [ ! -x "$js/node_modules/.bin/componentize-js" ]; then
  mkdir -p "$js"
  npm install --silent --no-audit --no-fund --prefix "$js" \
    "@bytecodealliance/componentize-js@{{componentize_js}}" >/dev/null
fi
"$js/node_modules/.bin/componentize-js" --wit wit -n step -o {{name}}.wasm plugin.js >/dev/null
echo "built {{name}}.wasm"
"#;

const JS_README: &str = r#"# {{name}}: a Settle plugin in JavaScript

    node --test                # the plugin's own test (logic.js)
    ./build.sh                 # the component: {{name}}.wasm (componentize-js {{componentize_js}})
    settle plugin check {{name}}.wasm

Then copy `{{name}}.wasm` into a directory of `plugin_dirs` in settle.toml.
`wit/plugin.wit` is the contract of the host that created this project.
"#;

fn manifest(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
settle-sdk = {{ path = "settle-sdk" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

# Small components: they are compiled once and instantiated per call.
[profile.release]
opt-level = "s"
strip = true

# A project of its own, even inside another workspace's directory.
[workspace]
"#
    )
}

const LIB_RS: &str = r#"//! `{{name}}`: a Settle plugin. `run` makes one change in the outside
//! world; `compensate` undoes it; `reconcile` checks it still holds.
//! This one only greets, so it has nothing to undo or check.

use serde::{Deserialize, Serialize};
use settle_sdk::{Ctx, Manifest, Step, StepError};

#[derive(Deserialize, Serialize)]
pub struct Input {
    pub name: String,
}

#[derive(Deserialize, Serialize)]
pub struct Output {
    pub greeting: String,
}

/// The work itself, apart from the plugin plumbing: tested natively.
pub fn greeting(name: &str) -> Result<String, StepError> {
    if name.trim().is_empty() {
        return Err(StepError::invalid_input("name is empty"));
    }
    Ok(format!("Hello, {name}!"))
}

pub struct Plugin;

impl Step for Plugin {
    type Input = Input;
    type Output = Output;

    fn manifest() -> Manifest {
        Manifest::new("{{name}}", "0.1.0", "Greets someone by name")
            .input_schema(serde_json::json!({
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string", "minLength": 1}}
            }))
            .output_schema(serde_json::json!({
                "type": "object",
                "required": ["greeting"],
                "properties": {"greeting": {"type": "string"}}
            }))
    }

    fn run(_ctx: &Ctx, input: Input) -> Result<Output, StepError> {
        Ok(Output {
            greeting: greeting(&input.name)?,
        })
    }
}

// The component's exports exist only in the WebAssembly build; `cargo
// test` builds the crate natively and tests the work above.
#[cfg(target_arch = "wasm32")]
settle_sdk::export_step!(Plugin);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use settle_sdk::testing::{Plugin, World};

    #[test]
    fn it_greets_and_refuses_an_empty_name() {
        assert_eq!(greeting("Ada").unwrap(), "Hello, Ada!");
        assert!(greeting(" ").is_err());
    }

    /// The component itself, in the host's runtime (needs `settle` on
    /// PATH, or SETTLE naming it, and the wasm32-wasip2 target).
    #[test]
    fn the_component_greets_in_the_host() {
        let mut plugin = Plugin::build(env!("CARGO_MANIFEST_DIR"), World::new()).unwrap();
        let hello = plugin.run(&json!({ "name": "Ada" }));
        assert_eq!(hello.output, Some(json!({ "greeting": "Hello, Ada!" })));
        let refused = plugin.run(&json!({ "name": " " }));
        assert_eq!(refused.class(), Some("invalid-input"), "{refused:?}");
    }
}
"#;

const README: &str = r#"# {{name}}: a Settle plugin

    cargo test                                        # the plugin's own tests; the second
                                                      # runs the component in the host's
                                                      # runtime: it needs `settle` on PATH (or
                                                      # SETTLE naming it) and the wasm32-wasip2
                                                      # target (rustup target add wasm32-wasip2)
    cargo build --release --target wasm32-wasip2      # the component
    settle plugin check target/wasm32-wasip2/release/{{crate}}.wasm

Then copy the `.wasm` into a directory of `plugin_dirs` in settle.toml and
use it in a flow:

    steps:
      - name: hello
        plugin: {{name}}
        input: { name: "${{ input.name }}" }
        compensate: false

`settle-sdk/` is the SDK this project builds with, with the contract
(`settle-sdk/wit/plugin.wit`) of the host that created it.
"#;
