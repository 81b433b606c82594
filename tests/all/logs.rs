//! Log lines on stderr: plain text when stderr is a file or a pipe (colour
//! codes only on a terminal), and one JSON object per line with
//! `--log-format json`, for machines.

use crate::support;
use serde_json::Value;
use std::path::Path;
use std::process::Stdio;

const FLOW: &str = "name: echo\nversion: \"1\"\nsteps:\n  - name: echo\n    plugin: noop\n    input:\n      n: ${{ input.n }}\n";

/// Runs one `noop` flow with `extra` arguments and stderr sent to a file, as
/// `settle run … 2>file` does; returns (stdout, the file's text).
fn run_with_stderr_to_file(dir: &Path, extra: &[&str]) -> (String, String) {
    let config = support::write_config(dir, None);
    let flow = dir.join("echo.yaml");
    std::fs::write(&flow, FLOW).expect("write the flow");
    let log = dir.join("stderr.log");
    let file = std::fs::File::create(&log).expect("create the log file");
    let out = support::settle_command()
        .args(["run", flow.to_str().unwrap(), "--input", r#"{"n": 1}"#])
        .args(["--config", config.to_str().unwrap()])
        .args(extra)
        // Debug lines of the CLI include "run accepted"; NO_COLOR must not be
        // what keeps colour out.
        .env("RUST_LOG", "warn,settle=debug")
        .env_remove("NO_COLOR")
        .stderr(Stdio::from(file))
        .output()
        .expect("run settle");
    let stderr = std::fs::read_to_string(&log).expect("read the log file");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

#[test]
fn logs_to_a_file_carry_no_colour_codes() {
    let dir = support::tempdir();
    let (_, stderr) = run_with_stderr_to_file(dir.path(), &[]);
    assert!(
        stderr.contains("run accepted"),
        "no log line to check:\n{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escape codes in a log file:\n{stderr:?}"
    );
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let dir = support::tempdir();
    let (stdout, stderr) = run_with_stderr_to_file(dir.path(), &["--log-format", "json"]);
    let summary: Value = serde_json::from_str(&stdout).expect("run summary");
    let mut accepted = Vec::new();
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let record: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line:?}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(record[field].is_string(), "no {field} in {line}");
        }
        if record["message"] == "run accepted" {
            accepted.push(record);
        }
    }
    assert_eq!(accepted.len(), 1, "{stderr}");
    assert_eq!(
        accepted[0]["run"], summary["run_id"],
        "fields at the top level"
    );
    assert_eq!(accepted[0]["level"], "DEBUG");
}
