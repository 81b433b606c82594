//! A hostile plugin cannot take the host down: what it sends the host (kv
//! calls, refusals, logs, progress) is bounded per call, its time limit holds
//! whatever its host calls cost, and what it claims in `describe` is bounded
//! and checked before the host believes it.
//!
//! The plugin is `example-plugins/hostile`; its describe-time variants are
//! built by `example-plugins/build.sh` into `example-plugins/dist-hostile/`.

use crate::support;
use serde_json::json;
use settle::app::Host;
use settle::model::{EventKind, RunId};
use settle::runtime::Limits;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The describe-time variants of `hostile`.
pub fn variant(name: &str) -> PathBuf {
    let path = support::plugin_dir()
        .join("../dist-hostile")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is not built: run example-plugins/build.sh",
        path.display()
    );
    path
}

/// One step calling `hostile` in `mode`, tried once.
fn one_step(mode: &str, extra: &str) -> std::sync::Arc<settle::flow::Flow> {
    support::flow(&format!(
        "name: hostile-{mode}\nsteps:\n  - name: attack\n    plugin: hostile\n    input: {{ mode: {mode} {extra} }}\n    compensate: false\n    retry: {{ max_attempts: 1 }}\n"
    ))
}

fn with_timeout(config: &mut settle::config::Config, timeout: Duration) {
    config.plugin_mut("hostile").limits = Some(Limits {
        timeout,
        ..Limits::default()
    });
}

/// Waits for the run to stop (terminal, or held for an operator), at most 60 s.
async fn finish(host: &Host, run: RunId) -> settle::model::RunSummary {
    tokio::time::timeout(Duration::from_secs(60), host.engine.wait(run))
        .await
        .expect("the run ends within 60 s")
        .expect("wait")
        .expect("summary")
}

fn denials(host: &Host, run: RunId) -> Vec<(String, String)> {
    support::events(host, run)
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::CapabilityDenied { capability, detail } => Some((capability, detail)),
            _ => None,
        })
        .collect()
}

/// Peak resident memory of this process so far, bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// The issue's case: a plugin granted nothing calls `kv.get` with a 1 MiB key
/// in a loop for one 5 s attempt. It used to take 6.7 GB of memory, 5.4 GB
/// of store and 19.5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_flood_with_a_huge_key_stays_small_and_ends_on_time() {
    let dir = support::tempdir();
    let mut config = support::config(dir.path());
    with_timeout(&mut config, Duration::from_secs(5));
    let host = Host::start(&config).await.unwrap();
    let store_before = dir_size(&config.data_dir);
    let rss_before = peak_rss();

    let started = Instant::now();
    let run = support::submit(&host, &one_step("kv-flood", ", key_kib: 1024"), json!({})).await;
    let end = finish(&host, run).await;
    let took = started.elapsed();
    let store_growth = dir_size(&config.data_dir).saturating_sub(store_before);
    let rss_growth = peak_rss().saturating_sub(rss_before);
    let denied = denials(&host, run);
    eprintln!(
        "kv flood: run took {took:?}, store grew {} KiB, peak RSS grew {} MiB, {} capability-denied events, state {:?}",
        store_growth / 1024,
        rss_growth / (1024 * 1024),
        denied.len(),
        end.state
    );
    let failure = end.last_failure.expect("the attempt failed");
    assert!(
        failure.message.contains("time limit of 5s"),
        "{}",
        failure.message
    );
    assert!(
        took < Duration::from_secs(7),
        "the attempt ends near its 5 s limit: {took:?}"
    );
    assert!(
        (2..=9).contains(&denied.len()),
        "a few refusals recorded, the rest counted: {}",
        denied.len()
    );
    let last = &denied.last().expect("a denial").1;
    assert!(last.contains("more refusals"), "{last}");
    let detail_bytes: usize = denied.iter().map(|(_, d)| d.len()).sum();
    assert!(
        detail_bytes < 8 * 1024,
        "denial details are short: {detail_bytes} bytes"
    );
    assert!(
        store_growth < 16 * 1024 * 1024,
        "store grew {store_growth} bytes"
    );
    assert!(
        rss_growth < 256 * 1024 * 1024,
        "peak memory grew {rss_growth} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_refusals_are_counted_not_recorded_one_by_one() {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    let run = support::submit(&host, &one_step("deny-flood", ", count: 1000"), json!({})).await;
    let end = finish(&host, run).await;
    assert_eq!(
        end.outputs[0].as_ref().map(|o| o["refused"].clone()),
        Some(json!(1000)),
        "the plugin saw every refusal: {end:?}"
    );
    let denied = denials(&host, run);
    assert!(denied.len() <= 9, "{} denial events", denied.len());
    let last = &denied.last().expect("a denial").1;
    assert!(
        last.contains("992 more refusals"),
        "the rest are counted in one: {last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_the_operator_did_not_configure_is_a_recorded_denial() {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    let run = support::submit(
        &host,
        &one_step("config-missing", ", key: api_token"),
        json!({}),
    )
    .await;
    finish(&host, run).await;
    let denied = denials(&host, run);
    assert!(
        denied
            .iter()
            .any(|(c, d)| c == "config" && d.contains("api_token") && d.contains("hostile")),
        "{denied:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_a_failed_attempt_are_not_kept() {
    let dir = support::tempdir();
    let mut config = support::config(dir.path());
    config.plugin_mut("hostile").grants.kv = true;
    let host = Host::start(&config).await.unwrap();
    let run = support::submit(
        &host,
        &one_step("kv-write-then-fail", ", key: left-behind"),
        json!({}),
    )
    .await;
    let end = finish(&host, run).await;
    assert!(end.last_failure.is_some(), "the attempt failed");
    let read = support::submit(&host, &one_step("kv-read", ", key: left-behind"), json!({})).await;
    let read = finish(&host, read).await;
    assert_eq!(
        read.outputs[0].as_ref().map(|o| o["value"].clone()),
        Some(serde_json::Value::Null),
        "the failed attempt's write was dropped: {read:?}"
    );
}

/// A `settle.toml` and a flow file for the CLI tests.
/// Runs one attack through `settle run` (so its logs go where an operator
/// sees them); exit code, stdout and stderr.
fn run_cli(dir: &Path, mode: &str, timeout: &str) -> (i32, String, String) {
    let (config, flow) = cli_setup(dir, mode, timeout);
    support::settle(&[
        "run",
        flow.to_str().unwrap(),
        "--input",
        "{}",
        "-q",
        "--config",
        config.to_str().unwrap(),
    ])
    .unwrap()
}

fn cli_setup(dir: &Path, mode: &str, timeout: &str) -> (PathBuf, PathBuf) {
    let config = support::write_config(dir, None);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[plugins.hostile.limits]\ntimeout = \"{timeout}\"\n"
    ));
    std::fs::write(&config, text).unwrap();
    let flow = dir.join("flow.yaml");
    std::fs::write(
        &flow,
        format!(
            "name: cli-{mode}\nsteps:\n  - name: attack\n    plugin: hostile\n    input: {{ mode: {mode} }}\n    compensate: false\n    retry: {{ max_attempts: 1 }}\n"
        ),
    )
    .unwrap();
    (config, flow)
}

#[test]
fn a_log_flood_is_cut_to_a_bounded_stderr() {
    let dir = support::tempdir();
    let started = Instant::now();
    let (_, _, stderr) = run_cli(dir.path(), "log-flood", "1s");
    eprintln!(
        "log flood: {} KiB of stderr in {:?}",
        stderr.len() / 1024,
        started.elapsed()
    );
    assert!(
        stderr.len() < 512 * 1024,
        "stderr holds {} KiB",
        stderr.len() / 1024
    );
    assert!(
        stderr.contains("log lines") && stderr.contains("dropped"),
        "the dropped lines are counted: {}",
        &stderr[stderr.len().saturating_sub(2000)..]
    );
}

#[test]
fn a_plugin_log_line_cannot_forge_a_host_line() {
    let dir = support::tempdir();
    let (code, stdout, stderr) = run_cli(dir.path(), "log-forge", "5s");
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let forged: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("forged host line"))
        .collect();
    assert_eq!(forged.len(), 1, "{stderr}");
    assert!(
        forged[0].contains("innocent"),
        "the forged text stays on the plugin's own line: {stderr}"
    );
    assert!(
        !stderr.contains("\u{1b}[31mred") && !stderr.contains('\u{7}'),
        "control characters are escaped: {stderr:?}"
    );
}

pub use settle::runtime::MemoryKv;

/// A runtime alone (no store, no engine), with `limits` for every plugin.
pub fn runtime(limits: Limits) -> settle::runtime::Runtime {
    let options = settle::runtime::RuntimeOptions {
        max_concurrent_calls: 4,
        max_memory_mib: 256,
        default_limits: limits,
        ..Default::default()
    };
    settle::runtime::Runtime::new(options, std::sync::Arc::new(MemoryKv::default()))
        .expect("runtime")
}

fn request(mode: &str) -> settle::runtime::CallRequest {
    settle::runtime::CallRequest {
        plugin: "hostile".into(),
        kind: settle::runtime::CallKind::Run,
        ctx: settle::runtime::CallContext {
            run_id: "run".into(),
            flow: "f@1".into(),
            step: "attack".into(),
            operation_id: "op".into(),
            step_id: "run/attack".into(),
            attempt: 1,
            trace_id: "trace".into(),
        },
        input: json!({ "mode": mode }).to_string(),
        output: None,
        timeout: None,
        progress: None,
        build: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reports_are_bounded_in_size_and_rate() {
    let runtime = runtime(Limits {
        timeout: Duration::from_secs(1),
        ..Limits::default()
    });
    runtime
        .load_file(&support::plugin_dir().join("hostile.wasm"))
        .await
        .expect("hostile loads");
    let seen = std::sync::Arc::new(std::sync::Mutex::new((0usize, 0usize)));
    let sink_seen = seen.clone();
    let mut call = request("progress-flood");
    call.progress = Some(std::sync::Arc::new(move |_, message: String| {
        let mut s = sink_seen.lock().unwrap();
        s.0 += 1;
        s.1 = s.1.max(message.len());
    }));
    let report = runtime.invoke(call).await;
    assert!(report.result.is_err(), "the flood runs into its time limit");
    let (count, longest) = *seen.lock().unwrap();
    eprintln!("progress flood: {count} reports passed on in 1 s, longest {longest} bytes");
    assert!(count <= 60, "{count} reports passed on in 1 s");
    assert!(longest <= 256, "a report of {longest} bytes passed on");
}

/// `describe` gets the same time limit as a call: a plugin whose describe
/// sleeps or loops fails to load, quickly, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_that_sleeps_or_loops_does_not_hang_load() {
    let runtime = runtime(Limits {
        timeout: Duration::from_secs(1),
        ..Limits::default()
    });
    for name in ["describe-sleep", "describe-loop"] {
        let started = Instant::now();
        let result =
            tokio::time::timeout(Duration::from_secs(20), runtime.load_file(&variant(name)))
                .await
                .unwrap_or_else(|_| panic!("{name}: load hangs"));
        let error = result.expect_err(name).to_string();
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{name}: {:?}",
            started.elapsed()
        );
        assert!(error.contains("time limit of 1s"), "{name}: {error}");
        assert!(
            !error.contains('\n') && error.len() < 400,
            "{name}: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_failures_say_why_in_one_line() {
    let runtime = runtime(Limits {
        memory_mib: 32,
        ..Limits::default()
    });
    for (name, why) in [
        ("describe-trap", "planned trap in describe"),
        ("describe-oom", "memory limit of 32 MiB"),
    ] {
        let error = runtime
            .load_file(&variant(name))
            .await
            .expect_err(name)
            .to_string();
        assert!(error.contains(why), "{name}: {error}");
        assert!(!error.contains("backtrace"), "{name}: {error}");
        assert!(
            !error.contains('\n') && error.len() < 600,
            "{name}: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_manifest_may_hold_is_bounded() {
    let runtime = runtime(Limits::default());
    for (name, words) in [
        ("huge-name", "name"),
        ("huge-version", "version"),
        ("huge-summary", "summary"),
        ("huge-schema", "input schema"),
        ("deep-schema", "input schema"),
        ("bad-version", "version"),
    ] {
        let error = runtime
            .load_file(&variant(name))
            .await
            .expect_err(name)
            .to_string();
        assert!(error.contains(words), "{name}: {error}");
        assert!(
            !error.contains('\n') && error.len() < 400,
            "{name}: {} bytes",
            error.len()
        );
    }
    assert!(runtime.plugins().is_empty(), "nothing was installed");
}

/// Copies `files` (name in the directory, source path) into a fresh directory.
fn plugin_dir_of(dir: &Path, files: &[(&str, PathBuf)]) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for (name, source) in files {
        std::fs::copy(source, plugins.join(name)).unwrap();
    }
    plugins
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_take_another_plugins_name() {
    let dir = support::tempdir();
    let plugins = plugin_dir_of(
        dir.path(),
        &[
            ("0-squat.wasm", variant("squat-noop")),
            ("noop.wasm", support::plugin_dir().join("noop.wasm")),
        ],
    );
    let runtime = runtime(Limits::default());
    let errors = runtime.load_dir(&plugins).await;
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert!(
        text.iter()
            .any(|e| e.contains("0-squat.wasm") && e.contains("noop.wasm") && e.contains("'noop'")),
        "the clash names both files: {text:?}"
    );
    assert!(
        runtime.plugin_info("noop").is_none(),
        "neither file is installed as 'noop' until the operator pins one"
    );
}

/// Components that are not plugins of this contract, written as WebAssembly
/// text (the loader accepts text as well as binary).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_failures_say_what_is_wrong_in_one_line() {
    let dir = support::tempdir();
    let handler = |version: &str| {
        format!(
            r#"(component
                 (core module $m (func (export "f")))
                 (core instance $i (instantiate $m))
                 (func $f (canon lift (core func $i "f")))
                 (instance $h (export "describe" (func $f)))
                 (export "settle:plugin/handler@{version}" (instance $h)))"#
        )
    };
    let cases = [
        (
            "no-handler",
            "(component)".to_string(),
            "does not export settle:plugin/handler@",
        ),
        (
            "other-version",
            handler("0.1.0"),
            "was built for settle:plugin@0.1.0; this host needs 0.2.0",
        ),
        (
            "unknown-import",
            r#"(component (import "foo:bar/baz" (instance)))"#.to_string(),
            "imports foo:bar/baz, which this host does not provide",
        ),
    ];
    let runtime = runtime(Limits::default());
    for (name, text, words) in cases {
        let path = dir.path().join(format!("{name}.wasm"));
        std::fs::write(&path, text).unwrap();
        let error = runtime.load_file(&path).await.expect_err(name).to_string();
        assert!(error.contains(&format!("{name}.wasm")), "{name}: {error}");
        assert!(error.contains(words), "{name}: {error}");
        assert!(
            !error.contains('\n') && error.len() < 400,
            "{name}: {error}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_quotas_bound_keys_and_bytes_per_plugin() {
    let dir = support::tempdir();
    let mut config = support::config(dir.path());
    let hostile = config.plugin_mut("hostile");
    hostile.grants.kv = true;
    hostile.limits = Some(Limits {
        max_kv_keys: 5,
        max_kv_total_kib: 4,
        ..Limits::default()
    });
    let host = Host::start(&config).await.unwrap();

    // Keys: the sixth is refused, and the five before it are kept.
    let fill = |extra: &str| one_step("kv-fill", extra);
    let run = support::submit(
        &host,
        &fill(", count: 8, value_bytes: 10, prefix: k"),
        json!({}),
    )
    .await;
    let out = finish(&host, run).await.outputs[0].clone().expect("output");
    assert_eq!(out["accepted"], 5, "{out}");
    assert!(
        out["error"]
            .as_str()
            .is_some_and(|e| e.contains("kv quota") && e.contains("5 keys")),
        "{out}"
    );
    assert!(denials(&host, run).iter().any(|(c, _)| c == "kv-quota"));

    // Bytes: 4 KiB in all, whatever the number of keys.
    let run = support::submit(
        &host,
        &fill(", count: 1, value_bytes: 5000, prefix: big"),
        json!({}),
    )
    .await;
    let out = finish(&host, run).await.outputs[0].clone().expect("output");
    assert_eq!(out["accepted"], 0, "{out}");
    assert!(
        out["error"].as_str().is_some_and(|e| e.contains("4 KiB")),
        "{out}"
    );

    // Rewriting a key in place stays within the quota.
    let run = support::submit(
        &host,
        &fill(", count: 5, value_bytes: 10, prefix: k"),
        json!({}),
    )
    .await;
    let out = finish(&host, run).await.outputs[0].clone().expect("output");
    assert_eq!(out["accepted"], 5, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pin_decides_which_component_a_name_means() {
    let dir = support::tempdir();
    let plugins = plugin_dir_of(
        dir.path(),
        &[
            ("0-squat.wasm", variant("squat-noop")),
            ("noop.wasm", support::plugin_dir().join("noop.wasm")),
        ],
    );
    let real = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(plugins.join("noop.wasm")).unwrap(),
        ))
    };
    for pin in [
        settle::runtime::plugin::PluginSettings {
            file: Some("noop.wasm".into()),
            ..Default::default()
        },
        settle::runtime::plugin::PluginSettings {
            digest: Some(format!("sha256:{real}")),
            ..Default::default()
        },
    ] {
        let mut options = settle::runtime::RuntimeOptions {
            max_concurrent_calls: 4,
            max_memory_mib: 256,
            ..Default::default()
        };
        options.plugins.insert("noop".into(), pin);
        let runtime =
            settle::runtime::Runtime::new(options, std::sync::Arc::new(MemoryKv::default()))
                .unwrap();
        let errors: Vec<String> = runtime
            .load_dir(&plugins)
            .await
            .iter()
            .map(|e| e.to_string())
            .collect();
        let noop = runtime
            .plugin_info("noop")
            .expect("the pinned noop is installed");
        assert_eq!(noop.digest, real);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("0-squat.wasm") && e.contains("pins")),
            "{errors:?}"
        );
    }
}

/// The compiled-plugin cache is native code: an artifact that does not match
/// its checksum is recompiled, and a directory others may write is not used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compiled_plugin_cache_is_verified_before_use() {
    use std::os::unix::fs::PermissionsExt;
    let dir = support::tempdir();
    let cache = dir.path().join("cache");
    let plugins = plugin_dir_of(
        dir.path(),
        &[
            ("noop.wasm", support::plugin_dir().join("noop.wasm")),
            ("flaky.wasm", support::plugin_dir().join("flaky.wasm")),
        ],
    );
    let start = || {
        let options = settle::runtime::RuntimeOptions {
            max_concurrent_calls: 4,
            max_memory_mib: 256,
            cache_dir: Some(cache.clone()),
            ..Default::default()
        };
        settle::runtime::Runtime::new(options, std::sync::Arc::new(MemoryKv::default())).unwrap()
    };
    let first = start();
    assert!(first.load_dir(&plugins).await.is_empty());
    let artifact = |name: &str| {
        let digest = first.plugin_info(name).unwrap().digest.clone();
        std::fs::read_dir(&cache)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with(&digest) && n.ends_with(".cwasm")
            })
            .expect("an artifact")
    };
    let (noop, flaky) = (artifact("noop"), artifact("flaky"));
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & 0o077, 0, "the cache directory is private: {mode:o}");

    // Swap in another plugin's native code under noop's name.
    std::fs::copy(&flaky, &noop).unwrap();
    let second = start();
    assert!(second.load_dir(&plugins).await.is_empty());
    let noop_info = second.plugin_info("noop").expect("noop installed");
    assert!(!noop_info.from_cache, "a swapped artifact is not loaded");
    assert_eq!(noop_info.manifest.name, "noop");
    assert!(second.plugin_info("flaky").unwrap().from_cache);

    // A cache directory others may write into is not used at all.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let third = start();
    assert!(third.load_dir(&plugins).await.is_empty());
    assert!(!third.caches_compiled_plugins());
    assert!(third.plugins().iter().all(|p| !p.from_cache));
}

/// With every instance slot taken, a new instance waits for one (counted)
/// instead of failing: here `describe` of a plugin being loaded while the
/// only slot runs a call that sleeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_makes_instances_wait_for_a_slot() {
    let options = settle::runtime::RuntimeOptions {
        max_concurrent_calls: 1,
        max_memory_mib: 256,
        ..Default::default()
    };
    let runtime =
        settle::runtime::Runtime::new(options, std::sync::Arc::new(MemoryKv::default())).unwrap();
    runtime
        .load_file(&support::plugin_dir().join("hostile.wasm"))
        .await
        .expect("hostile loads");
    // Long enough that the load below (compiling noop takes up to a second
    // on a busy machine) still finds the slot taken, and short of the 2 s
    // a call waits for one.
    let mut sleeper = request("sleep");
    sleeper.input = json!({"mode": "sleep", "ms": 1500}).to_string();
    let busy = {
        let runtime = runtime.clone();
        tokio::spawn(async move { runtime.invoke(sleeper).await })
    };
    // Until the sleeper holds the only slot, not a guessed while.
    for _ in 0..500 {
        if runtime.slots().0 == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(runtime.slots(), (1, 1), "the sleeper holds the only slot");
    let loaded = runtime
        .load_file(&support::plugin_dir().join("noop.wasm"))
        .await;
    assert!(loaded.is_ok(), "{:?}", loaded.err().map(|e| e.to_string()));
    assert!(busy.await.unwrap().result.is_ok());
    let waits = settle::runtime::RuntimeStats::get(&runtime.stats().pool_waits);
    assert_eq!(waits, 1, "the load waited for the slot once");
}
