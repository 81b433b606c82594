//! `settle plugin check FILE.wasm`: whether a component is a plugin this
//! host can run, which contract version it implements, what it imports,
//! and what it says of itself — or, plainly, what is wrong with it.

use super::read::runtime_only;
use crate::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum PluginCommand {
    /// Load FILE.wasm as the host would (compile, link against this host's
    /// contract, ask it to describe itself) without installing it.
    Check {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Create a ready-to-build plugin project in DIR/NAME, with its test
    /// and the SDK (and WIT contract) it builds with.
    New {
        name: String,
        /// Where the project's directory goes.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// rust, python (componentize-py) or js (componentize-js).
        #[arg(long, default_value = "rust")]
        lang: String,
    },
}

pub async fn plugin(config: &Config, command: &PluginCommand) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Check { file, json } => check(config, file, *json).await,
        PluginCommand::New { name, dir, lang } => {
            let (at, next) = match lang.as_str() {
                "rust" => (
                    super::plugin_new::new_rust(name, dir)?,
                    "cargo test && cargo build --release --target wasm32-wasip2",
                ),
                "python" => (
                    super::plugin_new::new_python(name, dir)?,
                    "python3 -m unittest && ./build.sh",
                ),
                "js" => (
                    super::plugin_new::new_js(name, dir)?,
                    "node --test && ./build.sh",
                ),
                other => anyhow::bail!("--lang {other}: rust, python or js"),
            };
            outln!("created plugin {name} ({lang}) in {}", at.display());
            outln!("  cd {} && {next}", at.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn check(config: &Config, file: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    // Only the sandbox settings are needed: no plugin directory is loaded.
    let mut config = config.clone();
    config.plugin_dirs.clear();
    let (runtime, _) = runtime_only(&config).await?;
    let contract = crate::runtime::contract_version();
    let info = match runtime.check_file(file).await {
        Ok(info) => info,
        Err(e) => {
            if json {
                super::print_json(&serde_json::json!({"ok": false, "problem": e.to_string()}))?;
            } else {
                eprintln!("not a plugin this host can run: {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let (imports, exports) = runtime
        .interfaces(file)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let m = &info.manifest;
    if json {
        super::print_json(&serde_json::json!({
            "ok": true,
            "contract": contract,
            "name": m.name,
            "version": m.version,
            "digest": info.digest,
            "summary": m.summary,
            "compensates": m.supports_compensate,
            "reconciles": m.supports_reconcile,
            "retry": m.retry,
            "input_schema": m.input_schema,
            "output_schema": m.output_schema,
            "imports": imports,
            "exports": exports,
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{}: plugin {} {} implements settle:plugin/handler@{contract}, the contract of this host",
        file.display(),
        m.name,
        m.version
    );
    outln!("  summary: {}", m.summary);
    outln!("  sha256: {}", info.digest);
    let yes = |b: bool| if b { "yes" } else { "no" };
    outln!(
        "  compensates: {} · reconciles: {}",
        yes(m.supports_compensate),
        yes(m.supports_reconcile)
    );
    if let Some(r) = &m.retry {
        outln!(
            "  suggests retries: {} attempts, from {} ms, ×{}, at most {} ms apart",
            r.max_attempts,
            r.initial_interval_ms,
            r.backoff_coefficient,
            r.max_interval_ms
        );
    }
    outln!("  imports: {}", imports.join(", "));
    outln!("  exports: {}", exports.join(", "));
    let needs_http = imports.iter().any(|i| i.starts_with("wasi:http/"));
    if needs_http {
        outln!(
            "  it may send HTTP requests: grant its hosts in settle.toml ([plugins.{}] allowed_outbound_hosts)",
            m.name
        );
    }
    outln!("  input schema: {}", m.input_schema);
    outln!("  output schema: {}", m.output_schema);
    Ok(ExitCode::SUCCESS)
}
