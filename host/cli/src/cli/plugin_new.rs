//! `settle plugin new NAME`: a ready-to-build Rust plugin in a directory
//! of its own, anywhere. The SDK goes with it (`settle-sdk/`, with the WIT
//! contract this host implements), so the project needs nothing from this
//! repository: `cargo build --release --target wasm32-wasip2` builds it,
//! `cargo test` runs its test, `settle plugin check` checks the result.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// The SDK's sources, as this host was built with them.
const SDK_FILES: [(&str, &str); 4] = [
    (
        "src/lib.rs",
        include_str!("../../../../plugin-sdk/src/lib.rs"),
    ),
    (
        "src/http.rs",
        include_str!("../../../../plugin-sdk/src/http.rs"),
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
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(dir)
}

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

    #[test]
    fn it_greets_and_refuses_an_empty_name() {
        assert_eq!(greeting("Ada").unwrap(), "Hello, Ada!");
        assert!(greeting(" ").is_err());
    }
}
"#;

const README: &str = r#"# {{name}}: a Settle plugin

    cargo test                                        # the plugin's own test
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
