//! Alert rules: a run held for an operator raises one alert with its owner,
//! escalation and mitigation; the webhook receives it as a signed
//! CloudEvent, retried until it answers 2xx, under one id.

use crate::support::{self, Server};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HOLD: &str = "
name: hold
defaults:
  on_exhausted: hold
steps:
  - name: pay
    plugin: flaky
    input: { mode: fail-times, times: 9 }
    retry: { max_attempts: 2, initial_interval: 10ms, jitter: 0 }
";

/// (signature header, body) of every request the receiver got.
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// A webhook on loopback that answers 500 to the first `fail_first`
/// requests, then 204; it stops after `limit` (or when the test ends).
fn receiver(fail_first: usize) -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received: Received = Arc::default();
    let log = received.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().take(20).enumerate() {
            let Ok(mut stream) = stream else { break };
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut length, mut signature) = (0usize, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("settle-signature:") {
                    signature = line["settle-signature:".len()..].trim().to_string();
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            log.lock()
                .unwrap()
                .push((signature, String::from_utf8_lossy(&body).into_owned()));
            let status = if n < fail_first {
                "500 Internal Server Error"
            } else {
                "204 No Content"
            };
            let _ = stream.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (url, received)
}

#[test]
fn a_held_run_raises_one_alert_delivered_signed_and_retried_until_acknowledged() {
    let dir = support::tempdir();
    let (url, received) = receiver(2);
    let extra = format!(
        r#"
[alerts]
webhook = "{url}"
secret = "s3cret"

[[alerts.rules]]
name = "stuck-payments"
when = "held"
only = "hold"
owner = "payments-team"
escalation = "page the payments on-call after 15 min"
mitigation = "check the provider's status page, then retry the run"

[[alerts.rules]]
name = "never"
when = "held"
only = "another-flow"
owner = "nobody"
"#
    );
    let server = Server::start(dir.path(), &[("hold", HOLD)], &extra);
    let reply = server.post("/v1/flows/hold/runs?wait=10s", &json!({}));
    assert_eq!(reply.json["state"], "needs-attention", "{reply}");
    let run = reply.json["run_id"].as_str().unwrap().to_string();

    // Two refusals, then the receiver takes it: three deliveries in all.
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.lock().unwrap().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "deliveries: {:?}",
            received.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(800));
    let got = received.lock().unwrap().clone();
    assert_eq!(
        got.len(),
        3,
        "no delivery after the one acknowledged: {got:?}"
    );
    let first: Value = serde_json::from_str(&got[0].1).unwrap();
    for (signature, body) in &got {
        assert_eq!(body, &got[0].1, "every try sends the same event");
        assert_eq!(
            signature,
            &settle::telemetry::alerts::signature("s3cret", body.as_bytes()),
            "the signature verifies"
        );
    }
    assert_eq!(first["specversion"], "1.0");
    assert_eq!(first["type"], "dev.settle.alert.held");
    assert_eq!(first["source"], "settle");
    assert_eq!(first["subject"], "hold");
    let data = &first["data"];
    assert_eq!(data["rule"], "stuck-payments");
    assert_eq!(data["run_id"], run.as_str());
    assert_eq!(data["owner"], "payments-team");
    assert_eq!(data["escalation"], "page the payments on-call after 15 min");
    assert!(
        data["detail"]
            .as_str()
            .unwrap()
            .starts_with("retries-exhausted: "),
        "{data}"
    );
    assert_eq!(first["id"], data["id"]);

    // The dashboard's list and the metrics say the same: one alert.
    let alerts = server.get("/v1/alerts").json;
    let list = alerts["alerts"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{alerts}");
    assert_eq!(list[0]["id"], first["id"]);
    let metrics = server.get("/metrics").text;
    assert!(
        metrics.contains("settle_alerts_total{rule=\"stuck-payments\"} 1"),
        "{metrics}"
    );
}

/// The hold flow with an objective it cannot meet (its run waits for an
/// operator), for the burn-rate rule.
const HOLD_WITH_OBJECTIVE: &str = "
name: hold
objective: { settled_within: 300ms, target: 99% }
defaults:
  on_exhausted: hold
steps:
  - name: pay
    plugin: flaky
    input: { mode: fail-times, times: 9 }
    retry: { max_attempts: 2, initial_interval: 10ms, jitter: 0 }
";

/// Polls `/v1/alerts` until `rule` has raised `n` alerts; returns them.
fn alerts_of(server: &Server, rule: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let alerts = server.get("/v1/alerts").json;
        let of_rule: Vec<Value> = alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["rule"] == rule)
            .cloned()
            .collect();
        if of_rule.len() >= n {
            return of_rule;
        }
        assert!(Instant::now() < deadline, "{rule}: {alerts}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rate_count_burn_and_stuck_rules_raise_one_alert_each_when_crossed() {
    let dir = support::tempdir();
    let extra = r#"
[[alerts.rules]]
name = "pay-failing"
when = "step-failure-rate"
only = "hold"
step = "pay"
threshold = 0.5
window = "1m"
min_events = 2
owner = "payments-team"
mitigation = "look at the provider's status page"

[[alerts.rules]]
name = "people-unhappy"
when = "reports"
threshold = 2
window = "1m"
owner = "support"

[[alerts.rules]]
name = "budget-burning"
when = "burn-rate"
threshold = 10
window = "1h"
min_events = 1
owner = "sre"

[[alerts.rules]]
name = "held-too-long"
when = "stuck"
state = "needs-attention"
longer_than = "1s"
owner = "ops"
escalation = "page ops after 2 alerts"
"#;
    let server = Server::start(dir.path(), &[("hold", HOLD_WITH_OBJECTIVE)], extra);
    let reply = server.post("/v1/flows/hold/runs?wait=10s", &json!({}));
    assert_eq!(reply.json["state"], "needs-attention", "{reply}");
    let run = reply.json["run_id"].as_str().unwrap().to_string();

    // Both attempts failed: 2 of 2 over a threshold of half.
    let failing = alerts_of(&server, "pay-failing", 1);
    let detail = failing[0]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("step 'pay' of flow 'hold': 2 of 2 attempts failed in the last 1m"),
        "{detail}"
    );
    assert_eq!(
        failing[0]["mitigation"],
        "look at the provider's status page"
    );

    // The objective (300 ms) passes while the run waits: one bad run of
    // one is a burn rate of 100.
    let burning = alerts_of(&server, "budget-burning", 1);
    let detail = burning[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("spending its error budget 100.0× as fast"),
        "{detail}"
    );

    // Held for more than a second: one stuck alert naming the run.
    let stuck = alerts_of(&server, "held-too-long", 1);
    assert_eq!(stuck[0]["run_id"], run.as_str());
    assert!(
        stuck[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("the run has been needs-attention for"),
        "{}",
        stuck[0]
    );

    // Two reports reach the count; a third does not raise it again.
    for n in 0..3 {
        let r = server.post(
            &format!("/v1/runs/{run}/reports"),
            &json!({"message": format!("still not paid ({n})")}),
        );
        assert!(r.status < 300, "{r}");
    }
    let unhappy = alerts_of(&server, "people-unhappy", 1);
    assert!(
        unhappy[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("2 user reports on runs of flow 'hold' in the last 1m"),
        "{}",
        unhappy[0]
    );

    // Later sweeps and events raise nothing more: one alert per crossing.
    std::thread::sleep(Duration::from_millis(1_200));
    let all = server.get("/v1/alerts").json;
    let count = |rule: &str| {
        all["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["rule"] == rule)
            .count()
    };
    for rule in [
        "pay-failing",
        "people-unhappy",
        "budget-burning",
        "held-too-long",
    ] {
        assert_eq!(count(rule), 1, "{rule}: {all}");
    }
}

#[test]
fn a_windowed_rule_without_its_threshold_is_refused_at_start() {
    let dir = support::tempdir();
    let config = Server::setup(
        dir.path(),
        &[("hold", HOLD)],
        "[[alerts.rules]]\nname = \"r\"\nwhen = \"step-failure-rate\"\nowner = \"o\"\nwindow = \"1m\"\n",
    );
    let (code, _, err) = support::settle(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
    .unwrap();
    assert_ne!(code, 0);
    assert!(
        err.contains("rule 'r' (step-failure-rate) needs `threshold`"),
        "{err}"
    );
}
