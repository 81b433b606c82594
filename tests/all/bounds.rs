//! What the store accepted it can always read back: values are bounded where
//! they enter, one unreadable record never stops listing, status, resume or
//! start, and a failed `reindex` keeps the old indexes.

use crate::support;
use serde_json::{Value, json};
use settle::app::Host;
use settle::engine::SubmitError;
use settle::model::{FailureClass, RunId, RunState, bounds};

fn nested(levels: usize) -> Value {
    let mut v = json!("leaf");
    for i in 0..levels {
        v = if i % 2 == 0 {
            json!([v])
        } else {
            json!({ "k": v })
        };
    }
    v
}

/// A random JSON value of at most `depth` levels (deterministic per seed).
fn random_value(rng: &mut fastrand::Rng, depth: usize) -> Value {
    let pick = if depth == 0 {
        rng.u8(0..4)
    } else {
        rng.u8(0..6)
    };
    match pick {
        0 => Value::Null,
        1 => json!(rng.bool()),
        2 => json!(rng.i64(..)),
        3 => {
            let len = rng.usize(0..12);
            // Quotes, escapes, control characters and non-ASCII text.
            let chars = ['a', '"', '\\', '\n', '\u{0}', 'é', '😀', '<', '/'];
            json!(
                (0..len)
                    .map(|_| chars[rng.usize(..chars.len())])
                    .collect::<String>()
            )
        }
        4 => Value::Array(
            (0..rng.usize(0..4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.usize(0..4))
                .map(|i| (format!("k{i}\u{1}\""), random_value(rng, depth - 1)))
                .collect(),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_past_the_depth_limit_are_refused_where_they_enter() {
    let dir = support::tempdir();
    let host = Host::start(&support::config(dir.path())).await.unwrap();
    let echo = support::flow(
        "name: echo\nsteps:\n  - { name: same, plugin: noop, input: \"${{ input }}\" }\n",
    );

    // The case that used to break the whole store: 126 levels, echoed back.
    let err = host
        .engine
        .submit(&echo, nested(126), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SubmitError::OverBounds {
                what: "run input",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("the limit is 64"), "{err}");
    assert!(
        host.store
            .list_runs_now(&Default::default(), 10)
            .unwrap()
            .items
            .is_empty()
    );

    let long_key = "k".repeat(bounds::MAX_IDEMPOTENCY_KEY_BYTES + 1);
    let err = host
        .engine
        .submit(&echo, json!({}), Some(long_key))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("idempotency key"), "{err}");

    // An output past the limit (the step wraps its input two levels deeper)
    // is the plugin's failure, not a record the store cannot read.
    let wrapping = support::flow(
        "name: wrap\nsteps:\n  - name: deeper\n    plugin: noop\n    input: { a: { b: \"${{ input }}\" } }\n    retry: { max_attempts: 1 }\n",
    );
    let run = support::run_to_end(&host, &wrapping, nested(bounds::MAX_JSON_DEPTH - 1)).await;
    let failure = run.last_failure.clone().expect("the output was refused");
    assert_eq!(
        failure.class,
        FailureClass::OutputLimit,
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("limit is 64"),
        "{}",
        failure.message
    );
    assert!(run.outputs[0].is_none());
    host.shutdown().await.unwrap();

    // Every read command still works on this store.
    let config = support::write_config(dir.path(), None);
    let (code, stdout, stderr) =
        support::settle(&["runs", "--json", "--config", config.to_str().unwrap()]).unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&run.run_id.to_string()));
}

/// Any value the engine accepts comes back the same from the store and from
/// every read command (`status`, `events`, `runs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_values_round_trip_through_store_and_read_commands() {
    let dir = support::tempdir();
    let config = support::config(dir.path());
    let echo = support::flow(
        "name: echo\nsteps:\n  - { name: same, plugin: noop, input: \"${{ input }}\" }\n",
    );
    let mut accepted: Vec<(RunId, Value)> = Vec::new();
    {
        let host = Host::start(&config).await.unwrap();
        let mut rng = fastrand::Rng::with_seed(5);
        let mut inputs: Vec<Value> = (0..40)
            .map(|_| json!({ "v": random_value(&mut rng, 8) }))
            .collect();
        // The deepest value accepted, and one just past it.
        inputs.push(nested(bounds::MAX_JSON_DEPTH));
        inputs.push(nested(bounds::MAX_JSON_DEPTH + 1));
        for input in inputs {
            match host.engine.submit(&echo, input.clone(), None).await {
                Ok(s) => accepted.push((s.run_id, input)),
                Err(SubmitError::OverBounds { .. }) => {
                    assert!(bounds::json_depth(&input) > bounds::MAX_JSON_DEPTH);
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(accepted.len(), 41);
        for (run, input) in &accepted {
            let s = host.engine.wait(*run).await.unwrap().unwrap();
            assert_eq!(s.state, RunState::Settled);
            assert_eq!(&s.input, input);
            assert_eq!(s.outputs[0].as_ref(), Some(input), "echoed unchanged");
        }
        host.shutdown().await.unwrap();
    }
    let config = support::write_config(dir.path(), None);
    let config = config.to_str().unwrap();
    let (code, runs, stderr) =
        support::settle(&["runs", "--json", "--limit", "100", "--config", config]).unwrap();
    assert_eq!(code, 0, "{stderr}");
    let runs: Vec<Value> = serde_json::from_str(&runs).unwrap();
    assert_eq!(runs.len(), accepted.len());
    for (run, input) in accepted.iter().step_by(7) {
        let (code, status, stderr) =
            support::settle(&["status", &run.to_string(), "--json", "--config", config]).unwrap();
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(
            serde_json::from_str::<Value>(&status).unwrap()["state"],
            "settled"
        );
        let (code, events, stderr) =
            support::settle(&["events", &run.to_string(), "--json", "--config", config]).unwrap();
        assert_eq!(code, 0, "{stderr}");
        let events: Vec<settle::model::Event> = serde_json::from_str(&events).unwrap();
        let settle::model::EventKind::RunAccepted { input: logged, .. } = &events[0].kind else {
            panic!("first event is run-accepted");
        };
        assert_eq!(logged, input);
    }
}

/// Writes garbage over a run's summary record, as a bug or a bad disk might.
fn corrupt_summary(data: &std::path::Path, run: RunId) {
    let db = sled::open(data.join("store")).unwrap();
    let mut key = vec![b'r'];
    key.extend_from_slice(run.as_bytes());
    db.insert(key, &b"{\"not\": a summary"[..]).unwrap();
    db.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unreadable_record_never_stops_listing_status_resume_or_start() {
    let dir = support::tempdir();
    let config = support::config(dir.path());
    let flow = support::flow("name: ok\nsteps:\n  - { name: a, plugin: noop }\n");
    let (bad, good, waiting) = {
        let host = Host::start(&config).await.unwrap();
        host.engine.set_paused(true);
        // Two runs left active (accepted, not driven), one settled.
        let bad = support::submit(&host, &flow, json!({"n": 1})).await;
        let waiting = support::submit(&host, &flow, json!({"n": 2})).await;
        host.engine.set_paused(false);
        let good = support::run_to_end(&host, &flow, json!({"n": 3}))
            .await
            .run_id;
        host.shutdown().await.unwrap();
        (bad, good, waiting)
    };
    corrupt_summary(&config.data_dir, bad);

    // Start resumes what it can read and reports what it cannot.
    let host = crate::idempotency::reopen(&config).await;
    assert_eq!(host.resumed.runs, vec![waiting]);
    assert_eq!(host.resumed.unreadable.len(), 1);
    assert_eq!(host.resumed.unreadable[0].run, Some(bad));
    assert_eq!(
        host.engine.wait(waiting).await.unwrap().unwrap().state,
        RunState::Settled
    );
    let listed = host.store.list_runs_now(&Default::default(), 10).unwrap();
    assert_eq!(listed.items.len(), 2);
    assert_eq!(listed.unreadable.len(), 1);
    assert!(host.store.unreadable_records() >= 2, "counted");
    assert!(host.engine.status(good).await.unwrap().is_some());
    host.shutdown().await.unwrap();

    let config = support::write_config(dir.path(), None);
    let (code, stdout, stderr) =
        support::settle(&["runs", "--config", config.to_str().unwrap()]).unwrap();
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&good.to_string()), "{stdout}");
    assert!(
        stderr.contains(&bad.to_string()) && stderr.contains("unreadable"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reindex_that_cannot_read_an_event_keeps_the_old_indexes() {
    let dir = support::tempdir();
    let config = support::config(dir.path());
    let flow = support::flow("name: ok\nsteps:\n  - { name: a, plugin: noop }\n");
    let run = {
        let host = Host::start(&config).await.unwrap();
        let s = host
            .engine
            .submit(&flow, json!({}), Some("order-7".into()))
            .await
            .unwrap();
        host.engine.wait(s.run_id).await.unwrap();
        host.shutdown().await.unwrap();
        s.run_id
    };
    {
        let db = sled::open(config.data_dir.join("store")).unwrap();
        let mut key = vec![b'e'];
        key.extend_from_slice(run.as_bytes());
        key.extend_from_slice(&1u64.to_be_bytes());
        db.insert(key, &b"garbage"[..]).unwrap();
        db.flush().unwrap();
    }
    let file = support::write_config(dir.path(), None);
    let (code, _, stderr) =
        support::settle(&["reindex", "--config", file.to_str().unwrap()]).unwrap();
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("kept the old indexes"), "{stderr}");

    // The idempotency claim survived: the key still names the same run.
    let host = crate::idempotency::reopen(&config).await;
    let again = host
        .engine
        .submit(&flow, json!({}), Some("order-7".into()))
        .await
        .unwrap();
    assert!(again.existing);
    assert_eq!(again.run_id, run);
    assert_eq!(
        host.store
            .list_runs_now(&Default::default(), 10)
            .unwrap()
            .items
            .len(),
        1
    );
    assert!(
        host.store
            .list_runs_now(&Default::default(), 0)
            .unwrap()
            .items
            .is_empty()
    );
}
