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
        .args([
            "demo-service",
            "--drift-hooks",
            "--listen",
            listen,
            "--data",
        ])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start demo service");
    let Some(addr) = listening_address(&mut child) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the demo service did not start on {listen} (see its stderr above)");
    };
    (child, addr)
}

/// The address a child announces on the first line of its stdout
/// (`listening on ADDR`), waiting at most a minute. The rest of its stdout
/// is drained, so the child never blocks on a full pipe.
fn listening_address(child: &mut Child) -> Option<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let line = rx.recv_timeout(std::time::Duration::from_secs(60)).ok()?;
    line.trim()
        .strip_prefix("listening on ")
        .map(str::to_string)
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

/// `settle serve` as a child process on a free loopback port, for tests of
/// the HTTP API (and of whatever talks to it: the dashboard, the CLI as a
/// client). Killed by PID when dropped.
///
/// ```ignore
/// let dir = support::tempdir();
/// let server = Server::start(dir.path(), &[("quick", QUICK_YAML)], "");
/// let reply = server.post("/v1/flows/quick/runs?wait=10s", &json!({}));
/// assert_eq!(reply.status, 200, "{reply}");
/// ```
///
/// `start` writes `DIR/settle.toml` ([`config`] of `DIR`, so the store is
/// `DIR/data` and the plugins are the example ones, with `toml_extra` merged
/// over it: tables key by key, anything else replaced) and each flow to
/// `DIR/flows/NAME.yaml`, then runs `settle serve --listen 127.0.0.1:0
/// --flows DIR/flows` and reads the address from its first line. Its log
/// (stderr) goes to `DIR/serve.log`, across restarts, and is shown when a
/// start fails.
pub struct Server {
    child: Option<Child>,
    dir: PathBuf,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// The bearer token requests carry unless told otherwise.
    token: Option<String>,
    agent: ureq::Agent,
}

/// An answer of the server.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    /// Header names in lower case.
    pub headers: std::collections::BTreeMap<String, String>,
    /// The body as JSON; `Value::Null` when it is not JSON.
    pub json: Value,
    /// The body as text.
    pub text: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {} {}", self.status, bounded(&self.text, 2000))
    }
}

fn bounded(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// One request to a [`Server`], built up, then `send()`.
pub struct Call<'s> {
    server: &'s Server,
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    token: Option<String>,
}

impl Call<'_> {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The bearer token to send (`None`: no Authorization header).
    pub fn token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(str::to_string);
        self
    }

    /// A JSON body, with `Content-Type: application/json`.
    pub fn json(self, body: &Value) -> Self {
        self.body("application/json", body.to_string().into_bytes())
    }

    /// Any body, with the content type given.
    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self.header("Content-Type", content_type)
    }

    pub fn send(self) -> Reply {
        let url = format!("{}{}", self.server.base_url, self.path);
        let mut request = ureq::http::Request::builder()
            .method(self.method.as_str())
            .uri(&url);
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let what = format!("{} {}", self.method, self.path);
        let response = if self.body.is_empty() {
            self.server.agent.run(request.body(()).expect(&what))
        } else {
            self.server.agent.run(request.body(self.body).expect(&what))
        };
        // A connection dropped mid-answer is a server that died or a
        // handler that panicked: its log says which.
        let mut response = response.unwrap_or_else(|e| {
            let log = self.server.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!("{what}: {e}\nthe server's log ends:\n{}", tail.join("\n"))
        });
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let text = response
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|e| panic!("{what}: reading the body: {e}"));
        Reply {
            status: response.status().as_u16(),
            headers,
            json: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }
}

impl Server {
    /// Writes the setup to `dir` and starts `settle serve` on it.
    pub fn start(dir: &Path, flows: &[(&str, &str)], toml_extra: &str) -> Server {
        Self::setup(dir, flows, toml_extra);
        let mut server = Server {
            child: None,
            dir: dir.to_path_buf(),
            addr: "127.0.0.1:0".into(),
            base_url: String::new(),
            token: None,
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_global(Some(std::time::Duration::from_secs(60)))
                .build()
                .into(),
        };
        server.spawn();
        server
    }

    /// Writes `DIR/settle.toml` and `DIR/flows/*.yaml` (see [`Server`]);
    /// the path of the configuration.
    pub fn setup(dir: &Path, flows: &[(&str, &str)], toml_extra: &str) -> PathBuf {
        let mut table: toml::Table =
            toml::from_str(&toml::to_string(&config(dir)).expect("the test configuration as TOML"))
                .expect("the test configuration reads back");
        let extra: toml::Table = toml::from_str(toml_extra)
            .unwrap_or_else(|e| panic!("toml_extra is not TOML: {e}\n{toml_extra}"));
        merge_toml(&mut table, extra);
        let path = dir.join("settle.toml");
        std::fs::write(&path, toml::to_string(&table).expect("settle.toml"))
            .expect("write settle.toml");
        let flow_dir = dir.join("flows");
        std::fs::create_dir_all(&flow_dir).expect("create the flow directory");
        for (name, yaml) in flows {
            std::fs::write(flow_dir.join(format!("{name}.yaml")), yaml).expect("write a flow");
        }
        path
    }

    /// `settle serve` over the setup in `dir`, listening on `listen`; for
    /// tests of how it starts (or refuses to).
    pub fn command(dir: &Path, listen: &str) -> Command {
        let mut command = settle_command();
        command
            .arg("serve")
            .arg("--config")
            .arg(dir.join("settle.toml"))
            .args(["--listen", listen, "--flows"])
            .arg(dir.join("flows"));
        command
    }

    /// Starts the process on `self.addr` (port 0 the first time; the same
    /// address on a restart, so URLs stay valid).
    fn spawn(&mut self) {
        let log_path = self.dir.join("serve.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open serve.log");
        let mut child = Self::command(&self.dir, &self.addr)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start settle serve");
        let Some(addr) = listening_address(&mut child) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "settle serve did not start on {}; its log:\n{}",
                self.addr,
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        };
        self.base_url = format!("http://{addr}");
        self.addr = addr;
        self.child = Some(child);
    }

    /// The directory of its setup: `settle.toml`, `flows/`, `data/` (the
    /// store, for `settle --config DIR/settle.toml` commands once the
    /// server is stopped) and `serve.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Requests carry `token` from now on (`None`: no Authorization header).
    pub fn set_token(&mut self, token: Option<&str>) {
        self.token = token.map(str::to_string);
    }

    /// The process id of the server now running.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// What the server logged so far, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL settle serve");
            child.wait().expect("reap settle serve");
        }
    }

    /// Sends SIGTERM (a graceful stop); see [`Server::wait_exit`].
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits up to `limit` for the server to exit: its status and how long
    /// the wait took. A server still running then is killed, and the test fails.
    pub fn wait_exit(
        &mut self,
        limit: std::time::Duration,
    ) -> (std::process::ExitStatus, std::time::Duration) {
        let started = std::time::Instant::now();
        let mut child = self.child.take().expect("the server is running");
        loop {
            if let Some(status) = child.try_wait().expect("poll settle serve") {
                return (status, started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "settle serve did not exit within {limit:?}; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("poll settle serve").is_none())
    }

    /// Starts the server again on the same data directory and address (it
    /// resumes unfinished runs); one still running is killed with SIGKILL first.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// A request; see [`Call`].
    pub fn call(&self, method: &str, path: &str) -> Call<'_> {
        Call {
            server: self,
            method: method.to_string(),
            path: path.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            token: self.token.clone(),
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.call("GET", path).send()
    }

    /// POST with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Reply {
        self.call("POST", path).json(body).send()
    }

    /// PUT with a YAML body (flows).
    pub fn put(&self, path: &str, yaml: &str) -> Reply {
        self.call("PUT", path)
            .body("application/yaml", yaml.as_bytes())
            .send()
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.call("DELETE", path).send()
    }

    /// GETs `path` until `done` holds for its JSON, for at most `limit`;
    /// the last answer. Fails the test on timeout, with that answer.
    pub fn poll(
        &self,
        path: &str,
        limit: std::time::Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let reply = self.get(path);
            if reply.status == 200 && done(&reply.json) {
                return reply.json;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "GET {path}: not there after {limit:?}; last answer {reply}"
            );
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
    }

    /// Polls a run until its stage is `done`; its status.
    pub fn wait_done(&self, run: &str, limit: std::time::Duration) -> Value {
        self.poll(&format!("/v1/runs/{run}"), limit, |s| s["stage"] == "done")
    }

    /// Opens a Server-Sent Events stream (`GET path`), resuming after
    /// `last_event_id` if given, with the server's token.
    pub fn stream(&self, path: &str, last_event_id: Option<u64>) -> SseStream {
        let mut headers = Vec::new();
        if let Some(id) = last_event_id {
            headers.push(("Last-Event-ID".to_string(), id.to_string()));
        }
        SseStream::open(&self.addr, path, self.token.as_deref(), &headers)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Merges `extra` into `base`: tables key by key, anything else replaced.
fn merge_toml(base: &mut toml::Table, extra: toml::Table) {
    for (key, value) in extra {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => merge_toml(b, e),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// `[[api.tokens]]` lines for settle.toml, one per `(name, role)`, and the
/// tokens themselves, in the same order.
pub fn api_tokens(tokens: &[(&str, &str)]) -> (String, Vec<String>) {
    let mut toml = String::new();
    let mut secrets = Vec::new();
    for (name, role) in tokens {
        let (token, sha256) = settle::api::auth::new_token().expect("a new token");
        toml.push_str(&format!(
            "[[api.tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{sha256}\"\n\n"
        ));
        secrets.push(token);
    }
    (toml, secrets)
}

/// One Server-Sent Event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SseEvent {
    /// `event:`; `message` when absent.
    pub event: String,
    /// `id:`, if any.
    pub id: Option<String>,
    /// `data:` lines, joined by newlines.
    pub data: String,
}

/// A Server-Sent Events stream over a plain TCP connection (HTTP/1.1,
/// chunked or not), read one event at a time; dropping it drops the
/// connection. Each read waits at most 30 s.
pub struct SseStream {
    pub status: u16,
    pub headers: std::collections::BTreeMap<String, String>,
    lines: Box<dyn BufRead + Send>,
}

impl SseStream {
    pub fn open(
        addr: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(String, String)],
    ) -> SseStream {
        use std::io::Write;
        let stream = std::net::TcpStream::connect(addr).expect("connect for the stream");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("read timeout");
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nConnection: close\r\n"
        );
        if let Some(token) = token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        (&stream)
            .write_all(request.as_bytes())
            .expect("send the stream request");
        let mut reader = BufReader::new(stream);
        let (status, headers) = read_head(&mut reader);
        let chunked = headers
            .get("transfer-encoding")
            .is_some_and(|t| t.contains("chunked"));
        let lines: Box<dyn BufRead + Send> = if chunked {
            Box::new(BufReader::new(Dechunk {
                inner: reader,
                left: 0,
                done: false,
            }))
        } else {
            Box::new(reader)
        };
        SseStream {
            status,
            headers,
            lines,
        }
    }

    /// The next event; `None` once the server has ended the stream.
    /// Comments (keep-alives) are skipped.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        let mut event = SseEvent::default();
        let mut seen = false;
        loop {
            let mut line = String::new();
            let n = self
                .lines
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("reading the event stream: {e}"));
            if n == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if seen {
                    if event.event.is_empty() {
                        event.event = "message".into();
                    }
                    return Some(event);
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            seen = true;
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event.event = value.to_string(),
                "id" => event.id = Some(value.to_string()),
                "data" => {
                    if !event.data.is_empty() {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                }
                _ => {}
            }
        }
    }
}

/// The status code and headers (names in lower case) of an HTTP/1.1 answer.
pub fn read_head(reader: &mut impl BufRead) -> (u16, std::collections::BTreeMap<String, String>) {
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .unwrap_or_else(|e| panic!("reading the status line: {e}"));
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {status_line:?}"));
    let mut headers = std::collections::BTreeMap::new();
    loop {
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("reading the headers: {e}"));
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    (status, headers)
}

/// The body of a `Transfer-Encoding: chunked` answer.
struct Dechunk<R> {
    inner: R,
    /// Bytes left in the current chunk.
    left: usize,
    done: bool,
}

impl<R: BufRead> std::io::Read for Dechunk<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let mut size = String::new();
            if self.inner.read_line(&mut size)? == 0 {
                self.done = true;
                return Ok(0);
            }
            let size = size.trim();
            let size = size.split(';').next().unwrap_or("");
            self.left = usize::from_str_radix(size, 16).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("chunk size {size:?}"),
                )
            })?;
            if self.left == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let n = {
            let available = self.inner.fill_buf()?;
            if available.is_empty() {
                self.done = true;
                return Ok(0);
            }
            let n = available.len().min(self.left).min(buf.len());
            buf[..n].copy_from_slice(&available[..n]);
            n
        };
        self.inner.consume(n);
        self.left -= n;
        if self.left == 0 {
            // The CRLF after the chunk.
            let mut crlf = String::new();
            self.inner.read_line(&mut crlf)?;
        }
        Ok(n)
    }
}
