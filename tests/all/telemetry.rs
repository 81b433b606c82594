//! Telemetry of a real `settle serve`: `GET /metrics` counts exactly what the
//! runs did, and with `--log-format json` every line of an attempt (the
//! plugin's own too) says whose it is: run, step, attempt, operation id.

use crate::support;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Two steps of `flaky`, each told its mode by the run input; the second
/// fails `times` times before it succeeds (`fail-times`), retried at once.
const FLOW: &str = r#"name: tele
version: "1"
steps:
  - name: first
    plugin: flaky
    input:
      mode: ${{ input.first }}
  - name: second
    plugin: flaky
    input:
      mode: ${{ input.second }}
      times: 3
    retry: { max_attempts: 5, initial_interval: 10ms, backoff_coefficient: 1, max_interval: 10ms, jitter: 0 }
"#;

/// `hostile` logs one line (`log-forge`), then `flaky` fails its first
/// attempt and succeeds on the second.
const LOG_FLOW: &str = r#"name: logged
version: "1"
steps:
  - name: talk
    plugin: hostile
    input:
      mode: log-forge
  - name: wobble
    plugin: flaky
    input:
      mode: fail-times
      times: 1
    retry: { max_attempts: 3, initial_interval: 10ms, backoff_coefficient: 1, max_interval: 10ms, jitter: 0 }
"#;

/// `settle serve` on a free loopback port, stopped by its PID when dropped.
struct Server {
    child: Child,
    base: String,
    stderr: PathBuf,
}

impl Server {
    /// Starts `settle serve` over a fresh store in `dir`, offering `flows`
    /// (name, YAML), with `extra` global arguments; stderr goes to a file.
    fn start(dir: &Path, flows: &[(&str, &str)], extra: &[&str]) -> Server {
        Self::start_with_env(dir, flows, extra, &[])
    }

    /// [`Server::start`] with more environment variables.
    fn start_with_env(
        dir: &Path,
        flows: &[(&str, &str)],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let config = support::write_config(dir, None);
        let flow_dir = dir.join("flows");
        std::fs::create_dir_all(&flow_dir).expect("create the flow directory");
        for (name, yaml) in flows {
            std::fs::write(flow_dir.join(format!("{name}.yaml")), yaml).expect("write a flow");
        }
        let stderr = dir.join("serve.stderr");
        let mut child = support::settle_command()
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--flows")
            .arg(&flow_dir)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("start settle serve");
        let mut line = String::new();
        let read = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        let server = |base: String| Server {
            child,
            base,
            stderr: stderr.clone(),
        };
        match (read, line.trim().strip_prefix("listening on ")) {
            (Ok(_), Some(addr)) => server(format!("http://{addr}")),
            _ => {
                drop(server(String::new()));
                panic!(
                    "settle serve did not start: {line:?}\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
        }
    }

    fn get(&self, path: &str) -> String {
        ureq::get(&format!("{}{path}", self.base))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    fn get_json(&self, path: &str) -> Value {
        serde_json::from_str(&self.get(path)).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    fn post(&self, path: &str, body: Value, key: Option<&str>) -> Value {
        let mut request = ureq::post(&format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request
            .send_json(body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
            .body_mut()
            .read_json()
            .unwrap_or_else(|e| panic!("POST {path}: not JSON: {e}"))
    }

    /// Submits a run of `flow`; its id.
    fn submit(&self, flow: &str, input: Value, key: Option<&str>) -> String {
        let answer = self.post(&format!("/v1/flows/{flow}/runs"), input, key);
        answer["run_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no run_id in {answer}"))
            .to_string()
    }

    /// Waits (at most 30 s) until the run is in `state`.
    fn wait_for(&self, run: &str, state: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.get_json(&format!("/v1/runs/{run}"));
            if status["state"] == state {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "run {run} not {state} after 30 s: {status}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `/metrics` once no run is being driven: a driver counts a commit
    /// just after the store acknowledged it, so a status read in between
    /// may be ahead of the metrics.
    fn quiet_metrics(&self) -> (String, Vec<Sample>) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.get("/metrics");
            let samples = parse_metrics(&text);
            if value(&samples, "settle_runs_driven", &[]) == 0.0 {
                return (text, samples);
            }
            assert!(
                Instant::now() < deadline,
                "runs still driven after 10 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn events(&self, run: &str) -> Vec<Value> {
        let body = self.get_json(&format!("/v1/runs/{run}/events"));
        body["events"].as_array().cloned().expect("events")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One sample of Prometheus text.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses Prometheus text (format 0.0.4): every sample line is
/// `name{label="value",…} number`, and belongs to a family with a `# TYPE`
/// line before it. Panics, naming the line, on anything else.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut typed: Vec<(String, String)> = Vec::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate().map(|(n, l)| (n + 1, l)) {
        if line.is_empty() || line.starts_with("# HELP ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("line {n}: bad TYPE: {line}"));
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "line {n}: unknown type: {line}"
            );
            typed.push((name.to_string(), kind.to_string()));
            continue;
        }
        assert!(!line.starts_with('#'), "line {n}: stray comment: {line}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("line {n}: no value: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|e| panic!("line {n}: value {v:?}: {e}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("line {n}: unclosed labels: {line}"));
                (name, parse_labels(inner, n))
            }
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "line {n}: bad metric name {name:?}"
        );
        let family = typed
            .last()
            .unwrap_or_else(|| panic!("line {n}: sample before any TYPE: {line}"));
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|_| family.1 == "histogram")
            .unwrap_or(name);
        assert_eq!(
            base, family.0,
            "line {n}: sample outside its family: {line}"
        );
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    assert!(!samples.is_empty(), "no samples in:\n{text}");
    samples
}

fn parse_labels(inner: &str, n: usize) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = inner;
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("line {n}: bad label in {inner}"));
        // Label values here hold no escaped quotes.
        let (value, after) = after
            .split_once('"')
            .unwrap_or_else(|| panic!("line {n}: unclosed label value in {inner}"));
        labels.insert(key.to_string(), value.to_string());
        rest = after.strip_prefix(',').unwrap_or(after);
    }
    labels
}

/// The sum of the samples named `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

#[test]
fn metrics_count_exactly_what_the_runs_did() {
    let dir = support::tempdir();
    let server = Server::start(dir.path(), &[("tele", FLOW)], &[]);
    // Settles at once; submitted twice with one key, so the second is a repeat.
    let plain = json!({"first": "ok", "second": "ok"});
    let a = server.submit("tele", plain.clone(), Some("key-a"));
    assert_eq!(server.submit("tele", plain, Some("key-a")), a);
    // Its second step fails three times (retryable), then succeeds: 4 attempts.
    let b = server.submit("tele", json!({"first": "ok", "second": "fail-times"}), None);
    // The second step fails for good; undoing the first fails too: held.
    let c = server.submit(
        "tele",
        json!({"first": "fail-compensate", "second": "permanent"}),
        None,
    );
    // The second step fails for good; the first is undone.
    let d = server.submit("tele", json!({"first": "ok", "second": "permanent"}), None);
    server.wait_for(&a, "settled");
    server.wait_for(&b, "settled");
    server.wait_for(&c, "needs-attention");
    server.wait_for(&d, "compensated");

    let (text, m) = server.quiet_metrics();
    let tele = ("flow", "tele");
    let check = |name: &str, labels: &[(&str, &str)], expected: f64| {
        let got = value(&m, name, labels);
        assert_eq!(got, expected, "{name}{labels:?}\n{text}");
    };
    check("settle_runs_accepted_total", &[tele], 4.0);
    check("settle_idempotency_repeats_total", &[tele], 1.0);
    let run = ("action", "run");
    let compensate = ("action", "compensate");
    check(
        "settle_attempts_total",
        &[tele, ("step", "first"), run],
        4.0,
    );
    check(
        "settle_attempts_total",
        &[tele, ("step", "second"), run],
        7.0,
    );
    check(
        "settle_attempts_total",
        &[tele, ("step", "first"), compensate],
        2.0,
    );
    check(
        "settle_attempts_total",
        &[tele, ("step", "second"), compensate],
        0.0,
    );
    check(
        "settle_step_duration_seconds_count",
        &[tele, ("step", "second"), run],
        7.0,
    );
    check(
        "settle_failures_total",
        &[tele, ("step", "second"), run, ("class", "retryable")],
        3.0,
    );
    check(
        "settle_failures_total",
        &[tele, ("step", "second"), run, ("class", "permanent")],
        2.0,
    );
    check(
        "settle_failures_total",
        &[tele, ("step", "first"), compensate, ("class", "permanent")],
        1.0,
    );
    check("settle_failures_total", &[tele], 6.0);
    check(
        "settle_retries_total",
        &[tele, ("step", "second"), run],
        3.0,
    );
    check("settle_retries_total", &[tele], 3.0);
    check(
        "settle_compensations_total",
        &[tele, ("step", "first")],
        1.0,
    );
    check(
        "settle_holds_total",
        &[tele, ("cause", "compensation-failed")],
        1.0,
    );
    check("settle_holds_total", &[tele], 1.0);
    check(
        "settle_run_duration_seconds_count",
        &[tele, ("state", "settled")],
        2.0,
    );
    check(
        "settle_run_duration_seconds_count",
        &[tele, ("state", "compensated")],
        1.0,
    );
    check("settle_runs", &[("state", "needs-attention")], 1.0);
    check("settle_runs", &[], 1.0);
    check("settle_pool_slots_in_use", &[], 0.0);
    check("settle_pool_slots", &[], 32.0);
    check("settle_reports_total", &[], 0.0);
    check("settle_operator_actions_total", &[], 0.0);

    // Every event went through a group commit of the store.
    let events: usize = [&a, &b, &c, &d]
        .iter()
        .map(|r| server.events(r).len())
        .sum();
    check("settle_store_events_total", &[], events as f64);
    assert!(value(&m, "settle_store_commit_seconds_count", &[]) >= 1.0);
    assert!(value(&m, "settle_store_commit_batch_size_sum", &[]) >= 4.0);

    // A person's report and an operator's cancel are counted; the held run
    // leaves the gauge and ends.
    server.post(
        &format!("/v1/runs/{a}/reports"),
        json!({"message": "the total looks wrong"}),
        None,
    );
    server.post(
        &format!("/v1/runs/{c}/cancel"),
        json!({"reason": "written off"}),
        None,
    );
    server.wait_for(&c, "cancelled");
    let (text, m) = server.quiet_metrics();
    let check = |name: &str, labels: &[(&str, &str)], expected: f64| {
        let got = value(&m, name, labels);
        assert_eq!(got, expected, "{name}{labels:?}\n{text}");
    };
    check("settle_reports_total", &[tele], 1.0);
    check(
        "settle_operator_actions_total",
        &[tele, ("action", "cancel")],
        1.0,
    );
    check("settle_runs", &[], 0.0);
    check(
        "settle_run_duration_seconds_count",
        &[tele, ("state", "cancelled")],
        1.0,
    );

    // The dashboard asks only for series this host exports (every family
    // has one by now).
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    let mut used = std::collections::BTreeSet::new();
    for expr in &exprs {
        for (i, _) in expr.match_indices("settle_") {
            let name: String = expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            used.insert(name);
        }
    }
    assert!(used.len() >= 15, "the dashboard uses {used:?}");
    for name in &used {
        assert!(
            m.iter().any(|s| &s.name == name),
            "the dashboard asks for {name}, which /metrics does not have:\n{text}"
        );
    }
}

/// The Grafana dashboard shipped with the host.
const DASHBOARD: &str = include_str!("../../host/telemetry/grafana/settle.json");

fn collect_exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// Every field name of a JSON log line: its own, and its spans'.
fn fields_of(record: &Value) -> BTreeMap<String, Value> {
    let mut fields = BTreeMap::new();
    let spans = record["spans"].as_array().cloned().unwrap_or_default();
    for object in spans.iter().chain([record]) {
        if let Some(map) = object.as_object() {
            for (k, v) in map {
                fields.insert(k.clone(), v.clone());
            }
        }
    }
    fields
}

#[test]
fn json_log_lines_of_an_attempt_say_whose_they_are() {
    let dir = support::tempdir();
    let server = Server::start(
        dir.path(),
        &[("logged", LOG_FLOW)],
        &["--log-format", "json"],
    );
    let run = server.submit("logged", json!({}), None);
    server.wait_for(&run, "settled");
    let events = server.events(&run);
    let op_of = |step: &str| {
        events
            .iter()
            .find(|e| e["step"] == step && e["operation_id"].is_string())
            .map(|e| e["operation_id"].clone())
            .unwrap_or_else(|| panic!("no operation id of {step} in {events:?}"))
    };
    let stderr = std::fs::read_to_string(&server.stderr).expect("read stderr");
    let records: Vec<Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();

    // The plugin's own line carries them at its top level.
    let said: Vec<&Value> = records
        .iter()
        .filter(|r| {
            r["message"]
                .as_str()
                .is_some_and(|m| m.contains("innocent"))
        })
        .collect();
    assert_eq!(said.len(), 1, "the plugin's log line once:\n{stderr}");
    let plugin_line = said[0];
    assert_eq!(plugin_line["run_id"], run.as_str(), "{plugin_line}");
    assert_eq!(plugin_line["step"], "talk", "{plugin_line}");
    assert_eq!(plugin_line["attempt"], 1, "{plugin_line}");
    assert_eq!(plugin_line["operation_id"], op_of("talk"), "{plugin_line}");
    // …and sits in the spans run > step > attempt > plugin_call.
    let names: Vec<&str> = plugin_line["spans"]
        .as_array()
        .map(|s| s.iter().filter_map(|s| s["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        ["run", "step", "attempt", "plugin_call"],
        "spans of the plugin's line: {plugin_line}"
    );
    let fields = fields_of(plugin_line);
    assert_eq!(fields["flow"], "logged", "{plugin_line}");
    assert_eq!(fields["trace_id"], events[0]["trace_id"], "{plugin_line}");

    // The host's line about the failed attempt carries them through its spans.
    let failed: Vec<BTreeMap<String, Value>> = records
        .iter()
        .filter(|r| {
            r["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("attempt failed"))
        })
        .map(fields_of)
        .collect();
    assert_eq!(failed.len(), 1, "one failed attempt:\n{stderr}");
    let host_line = &failed[0];
    assert_eq!(host_line["run_id"], run.as_str(), "{host_line:?}");
    assert_eq!(host_line["step"], "wobble", "{host_line:?}");
    assert_eq!(host_line["attempt"], 1, "{host_line:?}");
    assert_eq!(host_line["action"], "run", "{host_line:?}");
    assert_eq!(host_line["operation_id"], op_of("wobble"), "{host_line:?}");
    assert_eq!(host_line["class"], "retryable", "{host_line:?}");
}

/// What the collector received: (request line, body) of each request.
type Received = std::sync::Mutex<Vec<(String, Vec<u8>)>>;

/// A minimal OTLP/HTTP collector on loopback: answers 200 to every POST and
/// keeps the bodies (protobuf `ExportTraceServiceRequest`s).
struct Collector {
    addr: String,
    bodies: std::sync::Arc<Received>,
}

impl Collector {
    fn start() -> Collector {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the collector");
        let addr = listener
            .local_addr()
            .expect("collector address")
            .to_string();
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = bodies.clone();
        // Ends with the test process; each connection ends when its peer
        // closes it or stays silent for 10 s.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || Self::answer(stream, &kept));
            }
        });
        Collector { addr, bodies }
    }

    fn answer(stream: std::net::TcpStream, kept: &std::sync::Mutex<Vec<(String, Vec<u8>)>>) {
        use std::io::{Read, Write};
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let mut writer = stream.try_clone().expect("clone the stream");
        let mut reader = BufReader::new(stream);
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                return;
            }
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 {
                    return;
                }
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            kept.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((request_line.trim_end().to_string(), body));
            let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
            if writer.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    }

    /// Every byte received so far, and the request lines.
    fn received(&self) -> (Vec<String>, Vec<u8>) {
        let bodies = self.bodies.lock().unwrap_or_else(|p| p.into_inner());
        let lines = bodies.iter().map(|(l, _)| l.clone()).collect();
        let bytes = bodies.iter().flat_map(|(_, b)| b.iter().copied()).collect();
        (lines, bytes)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn spans_go_to_the_otlp_endpoint_when_one_is_set() {
    let dir = support::tempdir();
    let collector = Collector::start();
    let endpoint = format!("http://{}", collector.addr);
    let server = Server::start_with_env(
        dir.path(),
        &[("logged", LOG_FLOW)],
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("NO_PROXY", "127.0.0.1"),
            ("no_proxy", "127.0.0.1"),
        ],
    );
    let run = server.submit("logged", json!({}), None);
    server.wait_for(&run, "settled");
    let events = server.events(&run);
    let wobble = events
        .iter()
        .find_map(|e| {
            (e["step"] == "wobble")
                .then(|| e["operation_id"].as_str())
                .flatten()
        })
        .expect("operation id of wobble")
        .to_string();
    // The exported trace has the trace id of the run's events (16 raw bytes
    // in protobuf).
    let trace_hex = events[0]["trace_id"].as_str().expect("trace id");
    let trace: Vec<u8> = (0..trace_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&trace_hex[i..i + 2], 16).expect("hex trace id"))
        .collect();
    assert_eq!(trace.len(), 16, "{trace_hex}");
    // Span names and attribute values travel as plain UTF-8 in protobuf.
    let wanted: Vec<&[u8]> = vec![
        &trace,
        b"settle",
        b"run",
        b"step",
        b"attempt",
        b"plugin_call",
        run.as_bytes(),
        wobble.as_bytes(),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (lines, bytes) = collector.received();
        if wanted.iter().all(|w| contains(&bytes, w)) {
            assert!(
                lines.iter().all(|l| l.starts_with("POST /v1/traces ")),
                "{lines:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the collector did not get the run's spans within 20 s: requests {lines:?}, {} bytes; stderr:\n{}",
            bytes.len(),
            std::fs::read_to_string(&server.stderr).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
