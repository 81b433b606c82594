//! A test harness for a plugin's own `cargo test`: the plugin's component
//! runs inside the real host runtime (the `settle` command, the same
//! sandbox, limits and grants as a run's calls), against a stand-in world
//! the test controls: a clock it sets and moves, HTTP answers it scripts
//! (no request reaches the network), an in-memory kv, and the log lines the
//! plugin writes.
//!
//! ```no_run
//! use settle_sdk::testing::{Plugin, World};
//! use serde_json::json;
//!
//! let mut plugin = Plugin::build(env!("CARGO_MANIFEST_DIR"), World::new().allow_host("bank.test"))
//!     .expect("built and started");
//! plugin.respond("POST", "http://bank.test/pay", 200, r#"{"id":"p-1"}"#);
//! let paid = plugin.run(&json!({"amount": 5}));
//! assert_eq!(paid.output.unwrap()["id"], "p-1");
//! assert_eq!(paid.requests[0].method, "POST");
//! ```
//!
//! Needs the `wasm32-wasip2` target (`rustup target add wasm32-wasip2`) and
//! the `settle` command: on `PATH`, or named by the `SETTLE` variable.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The stand-in world a plugin starts in: what it is granted, the clock.
#[derive(Clone, Debug, Default)]
pub struct World {
    now_ms: Option<u64>,
    kv: bool,
    hosts: Vec<String>,
    config: Vec<(String, String)>,
    settle: Option<PathBuf>,
}

impl World {
    pub fn new() -> Self {
        World::default()
    }

    /// The clock's start, milliseconds since the Unix epoch (default: now).
    pub fn now_ms(mut self, ms: u64) -> Self {
        self.now_ms = Some(ms);
        self
    }

    /// Grants kv (kept in memory for the plugin's calls).
    pub fn kv(mut self) -> Self {
        self.kv = true;
        self
    }

    /// Allows requests to `host` (as the operator's `allowed_outbound_hosts`).
    pub fn allow_host(mut self, host: &str) -> Self {
        self.hosts.push(host.to_string());
        self
    }

    /// The `settle` command to run the plugin with (default: the `SETTLE`
    /// variable, else `settle` on `PATH`).
    pub fn settle(mut self, command: impl Into<PathBuf>) -> Self {
        self.settle = Some(command.into());
        self
    }

    /// A setting the plugin reads with `config::get`.
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.config.push((key.to_string(), value.to_string()));
        self
    }
}

/// A request the plugin sent.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Whether a scripted answer was given (else it failed as refused).
    pub answered: bool,
}

/// What one call came to.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// `run`'s output.
    pub output: Option<Value>,
    /// `reconcile`'s verdict: `in-sync`, `unknown`, or `drifted: DETAIL`.
    pub verdict: Option<String>,
    /// The failure's class (`retryable`, `permanent`, `invalid-input`,
    /// `trap`, `timeout`, …) and message, when it failed.
    pub failure: Option<(String, String)>,
    /// Its log lines, as (level, message).
    pub logs: Vec<(String, String)>,
    pub requests: Vec<Request>,
    /// What the host refused it (a host not allowed, kv not granted), as
    /// (capability, detail).
    pub denials: Vec<(String, String)>,
}

impl Answer {
    /// Whether it succeeded.
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }

    /// The failure's class, when it failed.
    pub fn class(&self) -> Option<&str> {
        self.failure.as_ref().map(|(c, _)| c.as_str())
    }
}

/// A plugin running in the host runtime (a `settle plugin session`
/// process, stopped when this is dropped).
pub struct Plugin {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Plugin {
    /// Builds the crate at `manifest_dir` (pass `env!("CARGO_MANIFEST_DIR")`)
    /// for `wasm32-wasip2` in release mode, then starts its component.
    pub fn build(manifest_dir: &str, world: World) -> Result<Plugin, String> {
        let component = build_component(Path::new(manifest_dir))?;
        Plugin::start(&component, world)
    }

    /// Starts a component file in the host runtime.
    pub fn start(component: &Path, world: World) -> Result<Plugin, String> {
        let settle = world
            .settle
            .clone()
            .map(Into::into)
            .or_else(|| std::env::var_os("SETTLE"))
            .unwrap_or_else(|| "settle".into());
        let mut command = Command::new(&settle);
        command
            .args(["plugin", "session"])
            .arg(component)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(ms) = world.now_ms {
            command.args(["--now-ms", &ms.to_string()]);
        }
        if world.kv {
            command.arg("--kv");
        }
        for host in &world.hosts {
            command.args(["--allow-host", host]);
        }
        for (k, v) in &world.config {
            command.args(["--config-value", &format!("{k}={v}")]);
        }
        let mut child = command.spawn().map_err(|e| {
            format!(
                "cannot start `{} plugin session` (install settle, or set SETTLE to it): {e}",
                PathBuf::from(&settle).display()
            )
        })?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        // The session says it loaded the plugin, or stops saying why (on
        // stderr, which the test shows).
        let mut ready = String::new();
        let _ = stdout.read_line(&mut ready);
        if !ready.starts_with("{\"ready\"") {
            let status = child.wait().map_err(|e| e.to_string())?;
            return Err(format!(
                "`settle plugin session {}` did not start ({status}): see its message above",
                component.display()
            ));
        }
        Ok(Plugin {
            child,
            stdin,
            stdout,
        })
    }

    /// Calls `run` with `input`.
    pub fn run(&mut self, input: &Value) -> Answer {
        self.call(json!({ "call": "run", "input": input }))
    }

    /// Calls `run` as attempt `attempt` of operation `operation_id` (a retry
    /// of the same operation has the same id).
    pub fn run_as(&mut self, input: &Value, operation_id: &str, attempt: u32) -> Answer {
        self.call(json!({
            "call": "run", "input": input, "operation_id": operation_id, "attempt": attempt,
        }))
    }

    /// Calls `compensate`; `output` is what `run` returned, or `None` when
    /// its outcome is unknown.
    pub fn compensate(&mut self, input: &Value, output: Option<&Value>) -> Answer {
        self.call(json!({ "call": "compensate", "input": input, "output": output }))
    }

    /// Calls `reconcile` with what `run` returned.
    pub fn reconcile(&mut self, input: &Value, output: &Value) -> Answer {
        self.call(json!({ "call": "reconcile", "input": input, "output": output }))
    }

    /// Scripts one answer: the next request with this method and URL gets it.
    pub fn respond(&mut self, method: &str, url: &str, status: u16, body: &str) {
        self.command(json!({
            "respond": [{ "method": method, "url": url, "status": status, "body": body }],
        }));
    }

    /// Moves the clock on.
    pub fn advance(&mut self, by: std::time::Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.command(json!({ "advance_ms": ms }));
    }

    fn call(&mut self, command: Value) -> Answer {
        let a = self.command(command);
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let pairs = |v: &Value, a: &str, b: &str| -> Vec<(String, String)> {
            v.as_array()
                .into_iter()
                .flatten()
                .map(|x| (text(&x[a]), text(&x[b])))
                .collect()
        };
        Answer {
            output: a.get("output").cloned(),
            verdict: a.get("verdict").map(|v| match v {
                Value::String(s) => s.clone(),
                other => format!("drifted: {}", text(&other["drifted"])),
            }),
            failure: (a["outcome"] == "failed").then(|| (text(&a["class"]), text(&a["message"]))),
            logs: pairs(&a["logs"], "level", "message"),
            requests: a["requests"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| Request {
                    method: text(&r["method"]),
                    url: text(&r["url"]),
                    headers: r["headers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|h| (text(&h[0]), text(&h[1])))
                        .collect(),
                    body: text(&r["body"]),
                    answered: r["answered"] == true,
                })
                .collect(),
            denials: pairs(&a["denials"], "capability", "detail"),
        }
    }

    /// Sends one command line and reads its answer line.
    fn command(&mut self, command: Value) -> Value {
        writeln!(self.stdin, "{command}")
            .and_then(|()| self.stdin.flush())
            .expect("the plugin session stopped");
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("the plugin session stopped");
        let answer: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the plugin session answered {line:?}: {e}"));
        if let Some(e) = answer.get("error") {
            panic!("the plugin session refused {command}: {e}");
        }
        answer
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds the crate's component; returns its path.
fn build_component(dir: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Its own target directory: the test's build holds the usual one.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"))
        .join("settle-harness");
    let out = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2"])
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the component failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))
        .map_err(|e| format!("cannot read Cargo.toml: {e}"))?;
    let name = package_name(&manifest).ok_or("no [package] name in Cargo.toml")?;
    let component = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    if component.is_file() {
        Ok(component)
    } else {
        Err(format!(
            "no component at {} (is the crate a `cdylib`?)",
            component.display()
        ))
    }
}

/// `name = "…"` of the `[package]` table.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(rest) = line.strip_prefix("name") {
            let value = rest.trim_start().strip_prefix('=')?.trim();
            return Some(value.trim_matches('"').to_string());
        }
    }
    None
}
