//! A plugin that loops, eats memory, traps, returns too much or reaches for
//! what it was not granted fails its attempt with an error naming the limit;
//! the host and other runs carry on.

use crate::support::{self, Service};
use serde_json::json;
use settle::app::Host;
use settle::model::{EventKind, FailureClass, HoldCause, RunState};
use settle::runtime::Limits;
use std::time::Duration;

fn bad(mode: &str, extra: &str) -> String {
    format!(
        r#"
name: bad-{mode}
steps:
  - name: misbehave
    plugin: flaky
    input: {{ mode: {mode} {extra} }}
    retry: {{ max_attempts: 1 }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_plugins_fail_their_attempt_only() {
    let dir = support::tempdir();
    let mut config = support::config(dir.path());
    config.plugin_mut("flaky").limits = Some(Limits {
        memory_mib: 32,
        timeout: Duration::from_millis(300),
        max_output_kib: 512,
        max_kv_value_kib: 16,
        ..Limits::default()
    });
    let host = Host::start(&config).await.unwrap();
    let good = support::flow(
        "name: good\nsteps:\n  - { name: a, plugin: noop }\n  - { name: b, plugin: noop }\n",
    );

    let cases = [
        ("loop", "", FailureClass::Timeout, "time limit of 300ms"),
        (
            "oom",
            "",
            FailureClass::MemoryLimit,
            "memory limit of 32 MiB",
        ),
        ("trap", "", FailureClass::Trap, "planned trap"),
        (
            "huge-output",
            ", size_mb: 1",
            FailureClass::OutputLimit,
            "output limit of 512 KiB",
        ),
        (
            "huge-output",
            ", size_mb: 100",
            FailureClass::MemoryLimit,
            "memory limit of 32 MiB",
        ),
    ];
    let mut bad_runs = Vec::new();
    for (mode, extra, class, words) in cases {
        let flow = support::flow(&bad(mode, extra));
        let run = support::submit(&host, &flow, json!({})).await;
        bad_runs.push((run, mode, class, words));
    }
    // Good runs submitted alongside all settle.
    let mut good_runs = Vec::new();
    for _ in 0..20 {
        good_runs.push(support::submit(&host, &good, json!({})).await);
    }
    for run in good_runs {
        let s = host.engine.wait(run).await.unwrap().unwrap();
        assert_eq!(s.state, RunState::Settled);
    }
    for (run, mode, class, words) in bad_runs {
        let s = host.engine.wait(run).await.unwrap().unwrap();
        assert_eq!(s.state, RunState::Compensated, "{mode}");
        let failure = s.last_failure.expect("failure recorded");
        assert_eq!(failure.class, class, "{mode}: {}", failure.message);
        assert!(
            failure.message.contains(words),
            "{mode}: '{}' should mention '{words}'",
            failure.message
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungranted_capabilities_are_refused_and_recorded() {
    let dir = support::tempdir();
    let service = Service::start(&dir.path().join("world"));
    let mut config = support::config(dir.path());
    service.grant(&mut config);
    // transfer may not reach the service; kv is not granted to flaky.
    config.plugin_mut("transfer").grants.allowed_outbound_hosts = vec!["127.0.0.1:1".into()];
    config.plugin_mut("flaky").grants.kv = false;
    let host = Host::start(&config).await.unwrap();

    let flow = support::flow(
        "name: denied\nsteps:\n  - name: pay\n    plugin: transfer\n    input: { from: a, to: b, amount: 5 }\n    retry: { max_attempts: 1 }\n",
    );
    let run = support::run_to_end(&host, &flow, json!({})).await;
    // The operator forgot a grant: the run waits for them, nothing is undone.
    assert_eq!(run.state, RunState::NeedsAttention);
    assert_eq!(run.hold, Some(HoldCause::HostSetup));
    let failure = run.last_failure.clone().unwrap();
    assert_eq!(
        failure.class,
        FailureClass::HostSetup,
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("does not allow") && failure.message.contains("grant it"),
        "{}",
        failure.message
    );
    let phrase = run.phrase(0, false);
    assert!(
        phrase.starts_with("Stopped: an operator must act: waiting for an operator:")
            && phrase.contains("allowed_outbound_hosts"),
        "{phrase}"
    );
    assert!(
        !support::event_names(&host, run.run_id)
            .iter()
            .any(|n| n.starts_with("compensation")),
        "a setup slip undoes nothing"
    );
    let denial = support::events(&host, run.run_id)
        .into_iter()
        .find_map(|e| match e.kind {
            EventKind::CapabilityDenied { capability, detail } => Some((capability, detail)),
            _ => None,
        })
        .expect("a capability-denied event");
    assert_eq!(denial.0, "outbound-http");
    assert!(denial.1.contains(&service.addr), "{}", denial.1);
    assert_eq!(
        service.state()["requests"],
        0,
        "nothing reached the outside world"
    );

    let flow = support::flow(
        "name: nokv\nsteps:\n  - { name: count, plugin: flaky, input: { mode: kv-count }, retry: { max_attempts: 1 } }\n",
    );
    let run = support::run_to_end(&host, &flow, json!({})).await;
    assert_eq!(run.state, RunState::NeedsAttention);
    assert_eq!(run.hold, Some(HoldCause::HostSetup));
    assert!(run.last_failure.unwrap().message.contains("not granted"));
    assert!(support::event_names(&host, run.run_id).contains(&"capability-denied".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_kv_is_durable_plugin_state() {
    let dir = support::tempdir();
    let mut config = support::config(dir.path());
    config.plugin_mut("flaky").grants.kv = true;
    let flow = support::flow(
        "name: kv\nsteps:\n  - { name: count, plugin: flaky, input: { mode: kv-count } }\n",
    );
    {
        let host = Host::start(&config).await.unwrap();
        for expected in 1..=2 {
            let run = support::run_to_end(&host, &flow, json!({})).await;
            assert_eq!(run.outputs[0].as_ref().unwrap()["count"], expected);
        }
    }
    let host = crate::idempotency::reopen(&config).await;
    let run = support::run_to_end(&host, &flow, json!({})).await;
    assert_eq!(
        run.outputs[0].as_ref().unwrap()["count"],
        3,
        "kv survived the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_breaks_its_schema_fails_the_step_for_good() {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    let flow = support::flow(
        "name: liar\nsteps:\n  - { name: lie, plugin: flaky, input: { mode: bad-output }, retry: { max_attempts: 3 } }\n",
    );
    let run = support::run_to_end(&host, &flow, json!({})).await;
    assert_eq!(run.state, RunState::Compensated);
    let failure = run.last_failure.expect("failure recorded");
    assert_eq!(failure.class, FailureClass::Permanent);
    assert!(
        failure.message.contains("does not match its output schema")
            && failure.message.contains("/attempt"),
        "{}",
        failure.message
    );
    assert!(run.outputs[0].is_none(), "a rejected output is not kept");
    // One attempt (the same code gives the same answer), then the step is
    // undone: the plugin returned, so its effect may well have happened.
    let names = support::event_names(&host, run.run_id);
    assert_eq!(names.iter().filter(|n| *n == "step-failed").count(), 1);
    assert!(
        names.contains(&"compensation-completed".to_string()),
        "{names:?}"
    );
    assert_eq!(run.attempts_total, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reports_show_in_status_while_the_call_runs() {
    let dir = support::tempdir();
    let mut config = support::config(dir.path());
    config.plugin_mut("flaky").limits = Some(Limits {
        timeout: Duration::from_secs(3),
        ..Limits::default()
    });
    let host = Host::start(&config).await.unwrap();
    let flow = support::flow(
        "name: slow\nsteps:\n  - { name: crawl, plugin: flaky, input: { mode: progress-loop }, retry: { max_attempts: 1 } }\n",
    );
    let run = support::submit(&host, &flow, json!({})).await;
    let mut seen = None;
    for _ in 0..150 {
        let status = host.engine.status(run).await.unwrap().unwrap();
        if let Some(progress) = status.progress {
            seen = Some((progress, status.phrase));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (progress, phrase) = seen.expect("progress visible while the plugin runs");
    assert_eq!(progress.fraction, 0.5);
    assert_eq!(progress.message, "halfway there");
    assert!(phrase.contains("crawl"), "{phrase}");

    let end = host.engine.wait(run).await.unwrap().unwrap();
    assert_eq!(end.last_failure.unwrap().class, FailureClass::Timeout);
    let status = host.engine.status(run).await.unwrap().unwrap();
    assert!(
        status.progress.is_none(),
        "no stale progress after the call: {:?}",
        status.progress
    );
}

/// A loopback HTTP server that counts the requests it receives and answers
/// each with `302 Found` to `redirect_to`, or `200 OK` when there is none.
struct Counter {
    addr: std::net::SocketAddr,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Counter {
    fn start(bind: &str, redirect_to: Option<String>) -> Option<Counter> {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind(bind).ok()?;
        let addr = listener.local_addr().ok()?;
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = stream.read(&mut buf);
                let answer = match &redirect_to {
                    Some(to) => format!(
                        "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    ),
                    None => "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                        .to_string(),
                };
                let _ = stream.write_all(answer.as_bytes());
            }
        });
        Some(Counter { addr, hits })
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn hostile_flow(input: serde_json::Value) -> std::sync::Arc<settle::flow::Flow> {
    support::flow(&format!(
        "name: sandbox\nsteps:\n  - name: probe\n    plugin: hostile\n    input: {input}\n    compensate: false\n    retry: {{ max_attempts: 1 }}\n"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_environment_and_sockets_are_out_of_reach() {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    let target = Counter::start("127.0.0.1:0", None).expect("listener");

    let run = support::run_to_end(&host, &hostile_flow(json!({"mode": "fs"})), json!({})).await;
    let fs = run.outputs[0].clone().expect("fs probe output");
    for (what, outcome) in fs.as_object().unwrap() {
        assert!(
            outcome.as_str().is_some_and(|o| o.starts_with("refused")),
            "{what}: {outcome}"
        );
    }
    assert!(!std::path::Path::new("/tmp/settle-hostile").exists());

    let run = support::run_to_end(&host, &hostile_flow(json!({"mode": "env"})), json!({})).await;
    let env = run.outputs[0].clone().expect("env probe output");
    assert_eq!(env["vars"], json!([]), "no environment variable: {env}");
    assert!(
        env["args"].as_array().is_some_and(|a| a.is_empty()),
        "no arguments: {env}"
    );

    let input = json!({"mode": "socket", "addr": target.addr.to_string()});
    let run = support::run_to_end(&host, &hostile_flow(input), json!({})).await;
    let sockets = run.outputs[0].clone().expect("socket probe output");
    for (what, outcome) in sockets.as_object().unwrap() {
        assert!(
            outcome.as_str().is_some_and(|o| !o.contains("allowed")),
            "{what}: {outcome}"
        );
    }
    assert_eq!(target.hits(), 0, "no connection reached the listener");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_hosts_outside_the_allowlist_are_refused_in_every_spelling() {
    let dir = support::tempdir();
    let elsewhere = Counter::start("127.0.0.1:0", None).expect("listener");
    let elsewhere_v6 = Counter::start("[::1]:0", None);
    let port = elsewhere.addr.port();
    let redirect = format!("http://localhost:{port}/stolen");
    let allowed = Counter::start("127.0.0.1:0", Some(redirect.clone())).expect("listener");
    let mut config = support::config(dir.path());
    config.plugin_mut("hostile").grants.allowed_outbound_hosts = vec![allowed.addr.to_string()];
    let host = Host::start(&config).await.unwrap();

    let allowed_port = allowed.addr.port();
    let mut urls = vec![
        format!("http://localhost:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0x7f000001:{port}/"),
        format!("http://127.1:{port}/"),
        format!("http://0177.0.0.1:{port}/"),
        format!("http://127.0.0.1.:{port}/"),
        format!("http://{}@localhost:{port}/", allowed.addr),
        format!("http://user:pw@127.0.0.1:{allowed_port}@localhost:{port}/"),
    ];
    if let Some(v6) = &elsewhere_v6 {
        urls.push(format!("http://[::1]:{}/", v6.addr.port()));
        urls.push(format!("http://[::ffff:127.0.0.1]:{port}/"));
    }
    for url in &urls {
        let input = json!({"mode": "http", "url": url});
        let run = support::run_to_end(&host, &hostile_flow(input), json!({})).await;
        let hops = run.outputs[0].clone().expect("http probe output")["hops"].clone();
        assert!(
            hops[0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("Denied") || e.contains("refused")),
            "{url}: {hops}"
        );
        assert!(
            support::event_names(&host, run.run_id).contains(&"capability-denied".to_string())
                || hops[0]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("refused")),
            "{url}: no denial recorded"
        );
    }

    // An allowed host redirecting elsewhere: the plugin follows, the host refuses.
    let input = json!({"mode": "http", "url": format!("http://{}/", allowed.addr), "follow": true});
    let run = support::run_to_end(&host, &hostile_flow(input), json!({})).await;
    let hops = run.outputs[0].clone().expect("http probe output")["hops"].clone();
    assert_eq!(hops[0]["status"], 302, "{hops}");
    assert_eq!(hops[1]["url"], redirect.as_str(), "{hops}");
    assert!(
        hops[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("Denied")),
        "{hops}"
    );
    assert_eq!(allowed.hits(), 1, "only the allowed host was reached");
    assert_eq!(
        elsewhere.hits(),
        0,
        "nothing reached a host outside the allowlist"
    );
    assert_eq!(elsewhere_v6.map_or(0, |c| c.hits()), 0);
}
