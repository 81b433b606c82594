//! The `settle` CLI as a client of a running `settle serve` (`--server`):
//! submit with `--wait`, reads that print what the local commands print for
//! the same store, operator commands recorded with the token's name, clear
//! errors for an unreachable server, and `settle bench --http --quick`.

use crate::support;
use serde_json::Value;
use settle::api::auth::{Role, TokenConfig};
use sha2::{Digest, Sha256};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Longest any one command of these tests may take.
const LIMIT: Duration = Duration::from_secs(120);

const NOOP_FLOW: &str = r#"
name: three
version: "1"
steps:
  - { name: one, plugin: noop, compensate: false }
  - { name: two, plugin: noop, compensate: false }
  - { name: three, plugin: noop, compensate: false }
"#;

/// Fails at once and for good; the flow holds it for an operator.
const HELD_FLOW: &str = r#"
name: held
version: "1"
defaults:
  on_exhausted: hold
steps:
  - { name: broken, plugin: flaky, input: { mode: fail-times, times: 99 }, retry: { max_attempts: 1 } }
"#;

/// A `settle serve` on 127.0.0.1, port 0; stopped by its PID (the kept
/// `Child`) when dropped.
struct Serve {
    child: Child,
    url: String,
}

impl Serve {
    fn start(config: &Path, flows: &Path) -> Serve {
        Serve::start_with(config, flows, &[])
    }

    fn start_with(config: &Path, flows: &Path, extra: &[&str]) -> Serve {
        let mut child = support::settle_command()
            .arg("serve")
            .args(extra)
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--flows")
            .arg(flows)
            .env_remove("SETTLE_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start settle serve");
        // stderr is not kept: the exit status says whether it stopped well.
        let stdout = child.stdout.take().expect("serve's stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
            for _ in lines {}
        });
        let mut serve = Serve {
            child,
            url: String::new(),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("settle serve says where it listens within 60 s");
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("settle serve said '{line}'"));
        serve.url = format!("http://{}", addr.trim());
        serve.wait_ready();
        serve
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if ureq::get(format!("{}/readyz", self.url)).call().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("settle serve at {} is not ready after 60 s", self.url);
    }

    /// SIGTERM by PID, then waits (bounded) for it to close the store and
    /// exit 0.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "settle serve stopped with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("settle serve did not stop within 30 s of SIGTERM");
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A store, a settle.toml for it (with `tokens`), and a flows directory.
struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    flows: PathBuf,
}

fn setup(tokens: Vec<TokenConfig>) -> Setup {
    let dir = support::tempdir();
    let mut config = support::config(dir.path());
    config.api.tokens = tokens;
    let path = dir.path().join("settle.toml");
    std::fs::write(&path, toml::to_string(&config).expect("config as TOML")).unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    std::fs::write(flows.join("three.yaml"), NOOP_FLOW).unwrap();
    std::fs::write(flows.join("held.yaml"), HELD_FLOW).unwrap();
    Setup {
        _dir: dir,
        config: path,
        flows,
    }
}

/// `settle ARGS` against `server` (or a local store when `None`), with
/// `token` as SETTLE_TOKEN; (exit code, stdout, stderr).
fn settle(
    setup: &Setup,
    server: Option<&str>,
    token: Option<&str>,
    args: &[&str],
) -> (i32, String, String) {
    let mut command = support::settle_command();
    command
        .arg("--config")
        .arg(&setup.config)
        .args(args)
        .env_remove("SETTLE_SERVER")
        .env_remove("SETTLE_TOKEN");
    if let Some(url) = server {
        command.env("SETTLE_SERVER", url);
    }
    if let Some(t) = token {
        command.env("SETTLE_TOKEN", t);
    }
    support::output_within(&mut command, LIMIT)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

#[test]
fn submit_wait_follows_the_run_and_exits_0_with_its_settled_status() {
    let setup = setup(Vec::new());
    let serve = Serve::start(&setup.config, &setup.flows);
    let url = serve.url.clone();

    let (code, out, err) = settle(
        &setup,
        None,
        None,
        &[
            "submit",
            "three",
            "--input",
            r#"{"n": 1}"#,
            "--wait",
            "--server",
            &url,
        ],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let report = json(&out);
    assert_eq!(report["state"], "settled", "{report}");
    assert_eq!(report["completed_steps"], 3, "{report}");
    assert_eq!(report["existing"], false, "{report}");
    assert_eq!(report["outputs"].as_object().map(|o| o.len()), Some(3));
    let run = report["run_id"].as_str().unwrap().to_string();
    assert!(err.contains(&format!("run {run} accepted")), "{err}");

    // Without --wait: the id alone; the same key names the same run.
    let (code, out, err) = settle(
        &setup,
        Some(&url),
        None,
        &["submit", "three", "--idempotency-key", "k-1"],
    );
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_string();
    assert!(id.parse::<settle::model::RunId>().is_ok(), "{out}");
    let (code, out, err) = settle(
        &setup,
        Some(&url),
        None,
        &["submit", "three", "--idempotency-key", "k-1", "--wait"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["run_id"], id.as_str());
    assert_eq!(json(&out)["existing"], true);

    // A run held for an operator: exit 3, as `settle run`.
    let (code, out, err) = settle(&setup, Some(&url), None, &["submit", "held", "--wait"]);
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(json(&out)["state"], "needs-attention");

    // The server's problems, one line each, exit 2.
    let (code, _, err) = settle(&setup, Some(&url), None, &["submit", "nope"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("flow 'nope': the server answered 404 Not Found: no flow 'nope'"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (code, _, err) = settle(
        &setup,
        Some(&url),
        None,
        &["submit", "three", "--input", "[1,"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--input is not valid JSON"), "{err}");
    serve.stop();
}

#[test]
fn reads_over_the_server_print_what_the_local_commands_print() {
    let setup = setup(Vec::new());
    let serve = Serve::start(&setup.config, &setup.flows);
    let url = serve.url.clone();
    let mut runs = Vec::new();
    for (flow, code) in [("three", 0), ("held", 3), ("three", 0)] {
        let (got, out, err) = settle(&setup, Some(&url), None, &["submit", flow, "--wait"]);
        assert_eq!(got, code, "{err}");
        runs.push(json(&out)["run_id"].as_str().unwrap().to_string());
    }
    let commands: Vec<Vec<String>> = {
        let mut c = vec![
            vec!["runs".to_string()],
            vec!["runs".into(), "--json".into()],
            vec!["runs".into(), "--state".into(), "settled".into()],
            vec!["runs".into(), "--limit".into(), "2".into()],
        ];
        for run in &runs {
            for cmd in ["status", "events"] {
                c.push(vec![cmd.into(), run.clone()]);
                c.push(vec![cmd.into(), run.clone(), "--json".into()]);
            }
        }
        c
    };
    let mut remote = Vec::new();
    for args in &commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = settle(&setup, Some(&url), None, &args);
        assert_eq!(code, 0, "{args:?} over HTTP: {err}");
        remote.push(out);
    }
    serve.stop();
    for (args, remote) in commands.iter().zip(&remote) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, local, err) = settle(&setup, None, None, &args);
        assert_eq!(code, 0, "{args:?} on the local store: {err}");
        assert!(!local.trim().is_empty(), "{args:?}");
        assert_eq!(
            &local, remote,
            "{args:?}: local (left) and over HTTP (right) differ"
        );
    }
    // A run that does not exist: the same sentence either way, exit 2.
    let missing = "01a242d8-9fa0-77cc-8453-53b0e7955d8a";
    let (code, _, err) = settle(&setup, None, None, &["status", missing]);
    assert_eq!(code, 2);
    assert!(err.contains(&format!("no run {missing}")), "{err}");
}

#[test]
fn operator_commands_over_http_are_recorded_with_the_tokens_name() {
    let token = "stl_test-operator-token";
    let setup = setup(vec![TokenConfig {
        name: "ops-alice".into(),
        role: Role::Operator,
        sha256: hex::encode(Sha256::digest(token.as_bytes())),
        submit_per_second: 200,
    }]);
    let serve = Serve::start(&setup.config, &setup.flows);
    let url = serve.url.clone();

    // No token: the server's 401 in one line.
    let (code, _, err) = settle(&setup, Some(&url), None, &["submit", "held"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("flow 'held': the server answered 401 Unauthorized"),
        "{err}"
    );

    let (code, out, err) = settle(
        &setup,
        Some(&url),
        Some(token),
        &["submit", "held", "--wait"],
    );
    assert_eq!(code, 3, "{err}");
    let run = json(&out)["run_id"].as_str().unwrap().to_string();

    // Retry at the step it stopped at: fails again, held again (exit 3).
    let (code, out, err) = settle(
        &setup,
        Some(&url),
        Some(token),
        &[
            "retry",
            &run,
            "--step",
            "broken",
            "--reason",
            "upstream fixed",
        ],
    );
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.starts_with(&format!("{run}  needs-attention")), "{out}");
    // The wrong step is refused, by the server, in one line.
    let (code, _, err) = settle(
        &setup,
        Some(&url),
        Some(token),
        &["retry", &run, "--step", "other", "--reason", "x"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("the server answered 409 Conflict"), "{err}");
    assert!(err.contains("not 'other'"), "{err}");

    let (code, out, err) = settle(
        &setup,
        Some(&url),
        Some(token),
        &["cancel", &run, "--reason", "customer withdrew", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["state"], "cancelled");

    let (code, out, err) = settle(&setup, Some(&url), Some(token), &["events", &run, "--json"]);
    assert_eq!(code, 0, "{err}");
    let acted: Vec<(String, String, String)> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"]["type"] == "operator-acted")
        .map(|e| {
            let k = &e["kind"];
            (
                k["action"].as_str().unwrap_or("").to_string(),
                k["by"].as_str().unwrap_or("").to_string(),
                k["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        acted,
        vec![
            (
                "retry".into(),
                "token:ops-alice".into(),
                "upstream fixed".into()
            ),
            (
                "cancel".into(),
                "token:ops-alice".into(),
                "customer withdrew".into()
            ),
        ],
        "{out}"
    );
    serve.stop();
}

#[test]
fn pause_and_resume_of_one_run_work_over_http_and_on_a_local_store() {
    let setup = setup(Vec::new());
    // A server that records runs without driving them: they stay accepted.
    let serve = Serve::start_with(&setup.config, &setup.flows, &["--accept-only"]);
    let url = serve.url.clone();
    let (code, out, err) = settle(&setup, Some(&url), None, &["submit", "three"]);
    assert_eq!(code, 0, "{err}");
    let run = out.trim().to_string();
    let (code, out, err) = settle(&setup, Some(&url), None, &["status", &run, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["state"], "accepted", "{out}");
    // Paused over HTTP: held for an operator, exit 3.
    let (code, out, err) = settle(
        &setup,
        Some(&url),
        None,
        &["pause", &run, "--reason", "hold for the audit"],
    );
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("paused by an operator"), "{out}");
    serve.stop();
    // Over HTTP, resume names a run.
    let (code, _, err) = settle(&setup, Some(&url), None, &["resume"]);
    assert_eq!(code, 2);
    assert!(err.contains("settle resume RUN --reason WHY"), "{err}");
    // Released on the local store: it settles (exit 0).
    let (code, out, err) = settle(
        &setup,
        None,
        None,
        &["resume", &run, "--reason", "audit done"],
    );
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.starts_with(&format!("{run}  settled")), "{out}");
    // A settled run cannot be paused: refused, exit 2.
    let (code, _, err) = settle(&setup, None, None, &["pause", &run, "--reason", "late"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("only a run that is still moving can be paused"),
        "{err}"
    );
    let (_, out, _) = settle(&setup, None, None, &["events", &run, "--json"]);
    let acted: Vec<String> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"]["type"] == "operator-acted")
        .map(|e| format!("{} {}", e["kind"]["action"], e["kind"]["by"]))
        .collect();
    assert_eq!(acted.len(), 2, "{out}");
    assert!(acted[0].starts_with("\"pause\" \"token:"), "{acted:?}");
    assert!(acted[1].starts_with("\"resume\""), "{acted:?}");
}

#[test]
fn an_unreachable_server_is_named_and_exits_2() {
    let setup = setup(Vec::new());
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["status", "01a242d8-9fa0-77cc-8453-53b0e7955d8a"],
        vec!["submit", "three", "--wait"],
        vec!["runs"],
    ] {
        let (code, out, err) = settle(&setup, Some(&url), None, &args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains(&format!("cannot reach the server at {url}")),
            "{args:?}: {err}"
        );
    }
    let (code, _, err) = settle(&setup, Some("localhost:7700"), None, &["runs"]);
    assert_eq!(code, 2);
    assert!(err.contains("is not an http:// URL"), "{err}");
    // submit needs a server.
    let (code, _, err) = settle(&setup, None, None, &["submit", "three"]);
    assert_eq!(code, 2);
    assert!(err.contains("give --server URL"), "{err}");
}

#[test]
fn bench_http_quick_prints_its_table() {
    let mut command = support::settle_command();
    command
        .args(["bench", "--http", "--quick", "--plugins"])
        .arg(support::plugin_dir())
        .env_remove("SETTLE_SERVER");
    let (code, out, err) = support::output_within(&mut command, Duration::from_secs(300));
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    for row in [
        "submit ?wait=30s, 1 client(s)",
        "submit ?wait=30s, 64 client(s)",
        "submit, no wait, 64 clients",
        "GET /v1/runs/{id}, 1 client(s)",
        "GET /v1/runs/{id}, 64 client(s)",
        "answers that said finished: 0",
    ] {
        assert!(out.contains(row), "no '{row}' in:\n{out}");
    }
    // It exits 1 when any request was not answered as expected.
}
