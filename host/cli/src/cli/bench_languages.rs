//! `settle bench --languages`: what a plugin costs by the language it is
//! written in. For each example plugin found (Rust in example-plugins/dist,
//! others in example-plugins/dist-other): its size, its load (compiled, then
//! loaded again from the compiled cache), and instantiate + call, each call
//! in a fresh instance from the pool as on a host.
//!
//! The call is the plugin's lightest: `run` of `noop` (Rust), `reconcile`
//! of a booking `py-ledger` (Python) and `js-ledger` (JavaScript) do not
//! have (one kv read).

use super::bench::{BenchArgs, Percentiles, percentiles};
use crate::config::Config;
use crate::runtime::{CallKind, Runtime, RuntimeOptions};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

/// (language, file name, call, input, recorded output)
const PLUGINS: &[(&str, &str, CallKind, &str, Option<&str>)] = &[
    ("Rust", "noop.wasm", CallKind::Run, "{}", None),
    (
        "Python",
        "py-ledger.wasm",
        CallKind::Reconcile,
        r#"{"account":"a","amount":1}"#,
        Some(r#"{"booking":"b","account":"a","amount":1}"#),
    ),
    (
        "JS",
        "js-ledger.wasm",
        CallKind::Reconcile,
        r#"{"account":"a","amount":1}"#,
        Some(r#"{"booking":"b","account":"a","amount":1}"#),
    ),
];

#[derive(Serialize)]
struct Row {
    language: &'static str,
    plugin: String,
    size_kib: u64,
    compile_ms: u64,
    cached_load_ms: u64,
    instantiate_call_us: Percentiles,
}

pub async fn bench(base: &Config, args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let cache = std::env::temp_dir().join(format!("settle-bench-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache)?;
    // Owned by this user alone, or the runtime will not use it.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700))?;
    }
    let rows = measure(base, args, &cache).await;
    let _ = std::fs::remove_dir_all(&cache);
    let rows = rows?;
    if args.json {
        super::print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

async fn measure(base: &Config, args: &BenchArgs, cache: &Path) -> anyhow::Result<Vec<Row>> {
    let n = if args.quick { 100 } else { 1000 };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dirs: Vec<PathBuf> = base
        .plugin_dirs
        .iter()
        .cloned()
        .chain([repo.join("example-plugins/dist-other")])
        .collect();
    let mut rows = Vec::new();
    for (language, file, kind, input, output) in PLUGINS {
        let Some(path) = dirs.iter().map(|d| d.join(file)).find(|p| p.exists()) else {
            outln!(
                "{language}: {file} not found (build it: example-plugins/build-other-languages.sh)"
            );
            continue;
        };
        let size_kib = std::fs::metadata(&path)?.len() / 1024;
        let mut options = RuntimeOptions {
            max_concurrent_calls: 8,
            max_memory_mib: base.runtime.max_memory_mib,
            cache_dir: Some(cache.to_path_buf()),
            default_limits: base.limits.clone(),
            ..RuntimeOptions::default()
        };
        let mut settings = crate::runtime::PluginSettings::default();
        settings.grants.kv = true;
        let start = Instant::now();
        let runtime = loaded(&options, &path).await?;
        let compile_ms = start.elapsed().as_millis() as u64;
        drop(runtime);
        let start = Instant::now();
        let name = {
            let runtime = loaded(&options, &path).await?;
            runtime.plugins()[0].name.to_string()
        };
        let cached_load_ms = start.elapsed().as_millis() as u64;
        options.plugins.insert(name.clone(), settings);
        let runtime = loaded(&options, &path).await?;
        let mut samples = Vec::with_capacity(n);
        for i in 0..n {
            let request = super::bench::bench_request(&name, *kind, i, input, *output);
            let start = Instant::now();
            let report = runtime.invoke(request).await;
            samples.push(start.elapsed());
            anyhow::ensure!(
                report.result.is_ok(),
                "{name}: the call failed: {:?}",
                report.result
            );
        }
        rows.push(Row {
            language,
            plugin: name,
            size_kib,
            compile_ms,
            cached_load_ms,
            instantiate_call_us: percentiles(samples),
        });
    }
    Ok(rows)
}

fn print_table(rows: &[Row]) {
    outln!(
        "settle bench --languages: one plugin per language, each call in a fresh pooled instance"
    );
    outln!(
        "{:<8} {:<12} {:>9} {:>11} {:>12} {:>16} {:>9}",
        "language",
        "plugin",
        "size",
        "compile",
        "cached load",
        "inst+call p50",
        "p99"
    );
    for r in rows {
        outln!(
            "{:<8} {:<12} {:>6} KiB {:>8} ms {:>9} ms {:>13} µs {:>6} µs",
            r.language,
            r.plugin,
            r.size_kib,
            r.compile_ms,
            r.cached_load_ms,
            r.instantiate_call_us.p50,
            r.instantiate_call_us.p99
        );
    }
}

/// A runtime with the one plugin at `path` loaded.
async fn loaded(options: &RuntimeOptions, path: &Path) -> anyhow::Result<Runtime> {
    let runtime = Runtime::new(
        options.clone(),
        Arc::new(crate::runtime::MemoryKv::default()),
    )?;
    runtime
        .load_file(path)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(runtime)
}
