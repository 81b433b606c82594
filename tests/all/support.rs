//! Shared test helpers: real plugins from `example-plugins/dist`, a sled
//! store in a temporary directory, the demo service as a real process.

#![allow(dead_code)]

use anyhow::Context;
use serde_json::Value;
use settle::app::Host;
use settle::config::Config;
use settle::flow::Flow;
use settle::model::{Event, RunId, RunSummary};
use settle::store::Store;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

/// The example plugins, built by `example-plugins/build.sh`.
pub fn plugin_dir() -> PathBuf {
    let dir = std::env::var_os("SETTLE_TEST_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../example-plugins/dist"));
    assert!(
        dir.join("transfer.wasm").exists(),
        "example plugins are not built in {}: run example-plugins/build.sh (the README's test command does)",
        dir.display()
    );
    dir
}

/// The `settle` binary under test.
pub fn settle_bin() -> &'static str {
    env!("CARGO_BIN_EXE_settle")
}

/// A command for the `settle` binary, started in a scratch directory: a
/// command without `--data` must not write into the source tree, and the
/// repository's reference `settle.toml` must not be picked up by accident.
pub fn settle_command() -> Command {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cwd");
    std::fs::create_dir_all(&scratch).expect("create the scratch directory");
    let mut command = Command::new(settle_bin());
    command.current_dir(scratch);
    command
}

/// A configuration over a fresh store in `dir`, sharing one compile cache
/// across tests so each plugin is compiled once per test run.
pub fn config(dir: &Path) -> Config {
    let mut config = Config {
        data_dir: dir.join("data"),
        plugin_dirs: vec![plugin_dir()],
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")),
        ..Config::default()
    };
    config.runtime.max_concurrent_calls = 32;
    config.runtime.max_memory_mib = 256;
    config.engine.max_runs_in_flight = 64;
    config
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("settle-test-")
        .tempdir()
        .expect("temp dir")
}

/// A flow from YAML text.
pub fn flow(yaml: &str) -> Arc<Flow> {
    Arc::new(
        Flow::parse(yaml, "test.yaml").unwrap_or_else(|e| panic!("test flow does not parse:\n{e}")),
    )
}

/// The demo service as a child process, stopped by PID when dropped.
pub struct Service {
    child: Child,
    pub base_url: String,
    pub addr: String,
}

impl Service {
    pub fn start(data: &Path) -> Service {
        let mut child = settle_command()
            .args(["demo-service", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start demo service");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read address");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .expect("service address")
            .to_string();
        Service {
            child,
            base_url: format!("http://{addr}"),
            addr,
        }
    }

    pub fn state(&self) -> Value {
        ureq::get(&format!("{}/state", self.base_url))
            .call()
            .expect("GET /state")
            .body_mut()
            .read_json()
            .expect("state JSON")
    }

    /// Grants the example plugins access to this service.
    pub fn grant(&self, config: &mut Config) {
        for plugin in ["transfer", "reserve-stock", "notify"] {
            let s = config.plugin_mut(plugin);
            s.grants.allowed_outbound_hosts = vec![self.addr.clone()];
            s.grants
                .config
                .insert("base_url".into(), self.base_url.clone());
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Submits a run without an idempotency key; its id.
pub async fn submit(host: &Host, flow: &Arc<Flow>, input: Value) -> RunId {
    host.engine
        .submit(flow, input, None)
        .await
        .expect("submit")
        .run_id
}

/// Submits a run and waits for it to be terminal.
pub async fn run_to_end(host: &Host, flow: &Arc<Flow>, input: Value) -> RunSummary {
    let run = submit(host, flow, input).await;
    host.engine.wait(run).await.expect("wait").expect("summary")
}

/// The names of a run's events, in order.
pub fn event_names(host: &Host, run: RunId) -> Vec<String> {
    events(host, run)
        .iter()
        .map(|e| e.kind.name().to_string())
        .collect()
}

pub fn events(host: &Host, run: RunId) -> Vec<Event> {
    host.store.events(run).expect("events")
}

/// Runs `settle` with arguments; returns (exit code, stdout, stderr).
pub fn settle(args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let out = settle_command().args(args).output().context("run settle")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Writes a settle.toml for CLI tests: this store, the example plugins, the
/// shared compile cache, and (if given) grants to reach the demo service.
pub fn write_config(dir: &Path, service: Option<&Service>) -> PathBuf {
    let mut config = config(dir);
    if let Some(service) = service {
        service.grant(&mut config);
    }
    let path = dir.join("settle.toml");
    std::fs::write(&path, toml::to_string(&config).expect("config as TOML"))
        .expect("write settle.toml");
    path
}
