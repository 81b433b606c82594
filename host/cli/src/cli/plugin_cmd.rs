//! `settle plugin check FILE.wasm`: whether a component is a plugin this
//! host can run, which contract version it implements, what it imports,
//! and what it says of itself — or, plainly, what is wrong with it.
//! `settle plugin install FILE.wasm`: the same check, what it asks to be
//! granted, a confirmation, then a copy into a plugin directory.

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
    /// Check FILE.wasm, show what it would ask to be granted, and (once
    /// confirmed, or with --yes) copy it into a plugin directory as
    /// NAME.wasm. Grants stay the operator's: the lines to add to
    /// settle.toml are printed, never written.
    Install {
        file: PathBuf,
        /// Install without asking.
        #[arg(long)]
        yes: bool,
        /// The plugin directory (default: the first of plugin_dirs).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Replace an installed plugin of the same name with another build.
        #[arg(long)]
        replace: bool,
    },
    /// Run FILE.wasm in the host's runtime against a stand-in world (a
    /// clock you set, scripted HTTP answers, kv in memory): one JSON
    /// command per line on stdin, one JSON answer per line on stdout. What
    /// the SDK's test harness speaks.
    Session(super::plugin_session::SessionArgs),
    /// Call `run` of a new build with what a recorded step was given, in a
    /// dry run (no outbound request; recorded answers), and compare its
    /// output with the recorded one. Exit 1 when they differ.
    Replay(super::plugin_replay::ReplayArgs),
    /// Remove an installed plugin's file from its plugin directory, unless
    /// unfinished runs still call it (their count is given). Takes effect
    /// when the host next starts; reads the local store.
    Remove { name: String },
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
        PluginCommand::Install {
            file,
            yes,
            dir,
            replace,
        } => install(config, file, *yes, dir.as_deref(), *replace).await,
        PluginCommand::Remove { name } => remove(config, name).await,
        PluginCommand::Session(args) => super::plugin_session::session(config, args).await,
        PluginCommand::Replay(args) => super::plugin_replay::replay(config, args).await,
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

/// `settle plugin remove NAME`: refused while unfinished runs call it.
async fn remove(config: &Config, name: &str) -> anyhow::Result<ExitCode> {
    let (runtime, _) = runtime_only(config).await?;
    let Some(info) = runtime.plugin_info(name) else {
        anyhow::bail!("no plugin '{name}' is installed (settle plugins lists them)");
    };
    let queries = settle_engine::queries::Queries::offline(crate::app::open_store(config)?);
    let runs = queries.unfinished_using_plugin(name).await?;
    if runs > 0 {
        anyhow::bail!(
            "plugin '{name}' is still called by {runs} unfinished run(s): wait until they finish (settle runs), or cancel them; nothing was removed"
        );
    }
    std::fs::remove_file(&info.path)
        .map_err(|e| anyhow::anyhow!("cannot remove {}: {e}", info.path.display()))?;
    outln!(
        "removed plugin {name} ({}); no unfinished run calls it. A host running now still has it until it restarts.",
        info.path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// What a plugin's imports ask the operator to grant, in words, with the
/// settle.toml line that grants it.
fn asks(name: &str, imports: &[String]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if imports.iter().any(|i| i.starts_with("wasi:http/")) {
        out.push((
            "it may send HTTP requests (only to the hosts you allow)",
            format!("allowed_outbound_hosts = [\"HOST:PORT\"]   # in [plugins.{name}]"),
        ));
    }
    if imports.iter().any(|i| i.starts_with("settle:plugin/kv")) {
        out.push((
            "it may keep durable key-value state",
            format!("kv = true   # in [plugins.{name}]"),
        ));
    }
    if imports
        .iter()
        .any(|i| i.starts_with("settle:plugin/config"))
    {
        out.push((
            "it may read settings you give it",
            format!("config = {{ KEY = \"VALUE\" }}   # in [plugins.{name}]"),
        ));
    }
    out
}

async fn install(
    config: &Config,
    file: &std::path::Path,
    yes: bool,
    dir: Option<&std::path::Path>,
    replace: bool,
) -> anyhow::Result<ExitCode> {
    let mut sandbox = config.clone();
    sandbox.plugin_dirs.clear();
    let (runtime, _) = runtime_only(&sandbox).await?;
    let info = match runtime.check_file(file).await {
        Ok(info) => info,
        Err(e) => {
            eprintln!("not installed: not a plugin this host can run: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let (imports, _) = runtime
        .interfaces(file)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let m = &info.manifest;
    let Some(dir) = dir.or(config.plugin_dirs.first().map(PathBuf::as_path)) else {
        anyhow::bail!("no plugin directory: set plugin_dirs in settle.toml or pass --dir");
    };
    let target = dir.join(format!("{}.wasm", m.name));
    outln!("plugin {} {} ({})", m.name, m.version, m.summary);
    outln!("  sha256: {}", info.digest);
    let asked = asks(&m.name, &imports);
    if asked.is_empty() {
        outln!("  it asks for nothing beyond computing: no network, no state, no settings");
    }
    for (what, _) in &asked {
        outln!("  {what}");
    }
    if target.exists() {
        let installed = std::fs::read(&target)
            .map(|b| crate::runtime::component_digest(&b))
            .unwrap_or_default();
        if installed == info.digest {
            outln!("already installed as {} (the same build)", target.display());
            return Ok(ExitCode::SUCCESS);
        }
        if !replace {
            eprintln!(
                "not installed: {} holds another build of {} ({}); pass --replace to put this one in its place (runs in progress record the change)",
                target.display(),
                m.name,
                &installed[..installed.len().min(16)]
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    if !yes {
        use std::io::{BufRead, IsTerminal, Write};
        if !std::io::stdin().is_terminal() {
            eprintln!("not installed: confirm with --yes (there is no terminal to ask)");
            return Ok(ExitCode::FAILURE);
        }
        print!("install it as {}? [y/N] ", target.display());
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            outln!("not installed");
            return Ok(ExitCode::FAILURE);
        }
    }
    std::fs::create_dir_all(dir)?;
    // Written beside, then renamed: a host starting meanwhile never reads
    // half a component.
    let partial = dir.join(format!(".{}.wasm.partial", m.name));
    std::fs::copy(file, &partial)?;
    std::fs::rename(&partial, &target)?;
    outln!("installed as {}", target.display());
    if !asked.is_empty() {
        outln!("grant what it needs in settle.toml (nothing is granted by installing):");
        outln!("  [plugins.{}]", m.name);
        for (_, line) in &asked {
            outln!("  {line}");
        }
    }
    outln!("a serving host loads it when it starts again");
    Ok(ExitCode::SUCCESS)
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
