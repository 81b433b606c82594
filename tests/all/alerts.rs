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
