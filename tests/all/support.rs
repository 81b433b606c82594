//! Shared test helpers: real plugins from `example-plugins/dist`, a sled
//! store in a temporary directory, the demo service as a real process.

#![allow(dead_code)]

use anyhow::Context;
use serde_json::Value;
use settle::app::Host;
use settle::config::Config;
use settle::flow::Flow;
use settle::model::{Event, RunId, RunSummary};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

/// The example plugins, built by `example-plugins/build.sh`.
pub fn plugin_dir() -> PathBuf {
    let dir = std::env::var_os("SETTLE_TEST_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../example-plugins/dist")
        });
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
    data: PathBuf,
    pub base_url: String,
    pub addr: String,
}

impl Service {
    /// Starts the service on a free loopback port, journaling under `data`.
    pub fn start(data: &Path) -> Service {
        let (child, addr) = spawn_service(data, "127.0.0.1:0");
        Service {
            child,
            data: data.to_path_buf(),
            base_url: format!("http://{addr}"),
            addr,
        }
    }

    /// Kills the service with SIGKILL, waits `down`, and starts it again on
    /// the same address and data directory (it replays its journal), as a
    /// crash of the outside world would. Plugins see refused connections
    /// meanwhile.
    pub fn crash_and_restart(&mut self, down: std::time::Duration) {
        self.child.kill().expect("SIGKILL the demo service");
        self.child.wait().expect("reap the demo service");
        std::thread::sleep(down);
        let (child, addr) = spawn_service(&self.data, &self.addr);
        assert_eq!(addr, self.addr, "the restarted demo service moved");
        self.child = child;
    }

    pub fn state(&self) -> Value {
        self.get("/state")
    }

    /// Per (path, idempotency key): requests `received` and `applied`.
    pub fn requests(&self) -> Value {
        self.get("/requests")
    }

    fn get(&self, path: &str) -> Value {
        ureq::get(&format!("{}{path}", self.base_url))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .body_mut()
            .read_json()
            .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
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

/// Starts `settle demo-service` on `listen`; the child and the address it
/// reports on its first line.
fn spawn_service(data: &Path, listen: &str) -> (Child, String) {
    let mut child = settle_command()
        .args(["demo-service", "--listen", listen, "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start demo service");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read address");
    let Some(addr) = line.trim().strip_prefix("listening on ") else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the demo service did not start on {listen} (see its stderr above)");
    };
    (child, addr.to_string())
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
    host.store.events_now(run).expect("events")
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

/// Runs a command to its end, but for at most `limit`: a hang fails the
/// test (the child is killed) instead of stalling the suite. Output goes
/// through files, so a chatty child never blocks on a full pipe. Returns
/// (exit code, stdout, stderr).
pub fn output_within(command: &mut Command, limit: std::time::Duration) -> (i32, String, String) {
    let dir = tempdir();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = command
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("start the command");
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the command") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} did not finish within {limit:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (
        status.code().unwrap_or(-1),
        read(&out_path),
        read(&err_path),
    )
}
