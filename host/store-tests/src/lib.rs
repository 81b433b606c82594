//! # settle-store-tests
//!
//! The behaviour every store backend must show, written once against the
//! store traits of `settle-types` and run for each backend: a backend's
//! test file calls [`store_suite!`] with an expression that opens a fresh,
//! empty store, and gets one `#[tokio::test]` per behaviour below. The
//! PostgreSQL backend that comes later only has to pass the same suite.
//!
//! Every check here is about what the engine, the API and the CLI rely
//! on: what a commit returns is readable back, exactly; an idempotency key
//! belongs to one run; the log is append-only; listings are newest first
//! and page without gaps; plugin state changes all at once.

use serde_json::json;
use settle_types::store::{Commit, CommitOutcome, IdempotencyClaim, RunFilter, Store, StoreError};
use settle_types::{Event, EventKind, RunId, RunState, RunSummary, SCHEMA_VERSION, Source};

/// Wall-clock milliseconds `offset` from now: a backend checks idempotency
/// windows against its own clock, so the suite's runs are accepted "now".
fn at(offset: u64) -> u64 {
    settle_types::now_ms().saturating_add(offset)
}

/// Generates one test per behaviour of the suite for a backend.
/// `$fresh` is an async expression that yields `(store, guard)`: a fresh,
/// empty store and whatever must live as long as it (a temporary directory).
#[macro_export]
macro_rules! store_suite {
    ($fresh:expr) => {
        $crate::store_suite!(@tests $fresh;
            a_commit_reads_back_exactly,
            an_unknown_run_reads_as_nothing,
            a_terminal_run_leaves_the_active_set,
            an_idempotency_key_belongs_to_one_run,
            an_idempotency_claim_expires_with_its_window,
            the_log_is_append_only,
            concurrent_commits_are_all_durable_and_distinct,
            listings_are_newest_first_and_page_without_gaps,
            listings_filter_by_state_flow_and_time,
            plugin_state_changes_all_at_once,
            flows_are_kept_by_digest_and_never_replaced,
            a_reindex_keeps_every_answer,
            due_rechecks_come_in_due_order_and_only_when_due,
        );
    };
    (@tests $fresh:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, guard) = $fresh.await;
                $crate::$name(&store).await;
                // The store closes before what it lives in goes away.
                drop(store);
                drop(guard);
            }
        )*
    };
}

/// A run's first commit: accepted, first step scheduled.
pub fn first_commit(flow: &str, key: Option<&str>, at_ms: u64) -> Commit {
    let run = RunId::new();
    let accepted = event(
        run,
        0,
        at_ms,
        EventKind::RunAccepted {
            catalog: 1,
            flow: flow.into(),
            flow_version: "1".into(),
            flow_digest: format!("digest-of-{flow}"),
            steps: vec!["a".into(), "b".into()],
            input: json!({"amount": 250, "text": "quote \" and emoji 🙂"}),
            idempotency_key: key.map(str::to_string),
            submitted_by: Some("tester".into()),
            plugins: [("noop".to_string(), "ab".repeat(32))].into(),
        },
    );
    let mut summary = RunSummary::from_first(&accepted).expect("a first event");
    let scheduled = event(
        run,
        1,
        at_ms,
        EventKind::StepScheduled {
            index: 0,
            attempt: 1,
            max_attempts: 3,
            not_before_ms: at_ms,
        },
    );
    summary.apply(&scheduled);
    Commit {
        run_id: run,
        events: vec![accepted, scheduled],
        summary,
        claim: key.map(|k| IdempotencyClaim {
            flow: flow.into(),
            key: k.into(),
            window_ms: 60_000,
        }),
    }
}

/// The commit that follows `summary` with `kinds`.
pub fn next_commit(summary: &RunSummary, kinds: Vec<EventKind>, at_ms: u64) -> Commit {
    let mut next = summary.clone();
    let mut events = Vec::new();
    for kind in kinds {
        let e = event(next.run_id, next.next_seq, at_ms, kind);
        next.apply(&e);
        events.push(e);
    }
    Commit {
        run_id: next.run_id,
        events,
        summary: next,
        claim: None,
    }
}

fn event(run: RunId, seq: u64, at_ms: u64, kind: EventKind) -> Event {
    Event {
        v: SCHEMA_VERSION,
        id: uuid::Uuid::now_v7(),
        run_id: run,
        seq,
        at_ms,
        step: None,
        operation_id: None,
        attempt: None,
        source: Source::host(),
        causation: None,
        trace_id: run.trace_id(),
        kind,
    }
}

/// Commits a run through to settled; its final summary.
async fn settled_run<S: Store>(store: &S, flow: &str, at_ms: u64) -> RunSummary {
    let first = first_commit(flow, None, at_ms);
    let summary = first.summary.clone();
    assert_eq!(store.commit(first).await.unwrap(), CommitOutcome::Committed);
    let done = next_commit(
        &summary,
        vec![
            EventKind::StepCompleted {
                index: 0,
                output: json!({"id": 1}),
                duration_ms: 1,
            },
            EventKind::StepScheduled {
                index: 1,
                attempt: 1,
                max_attempts: 1,
                not_before_ms: at_ms,
            },
            EventKind::StepCompleted {
                index: 1,
                output: json!(null),
                duration_ms: 1,
            },
            EventKind::RunSettled,
        ],
        at_ms,
    );
    let summary = done.summary.clone();
    assert_eq!(store.commit(done).await.unwrap(), CommitOutcome::Committed);
    summary
}

pub async fn a_commit_reads_back_exactly<S: Store>(store: &S) {
    let commit = first_commit("order", None, at(1_000));
    let (run, events, summary) = (commit.run_id, commit.events.clone(), commit.summary.clone());
    assert_eq!(
        store.commit(commit).await.unwrap(),
        CommitOutcome::Committed
    );
    assert_eq!(store.summary(run).await.unwrap(), Some(summary.clone()));
    assert_eq!(store.events(run).await.unwrap(), events);
    assert_eq!(
        RunSummary::fold(&store.events(run).await.unwrap()),
        Some(summary),
        "the summary is the fold of the log"
    );
    let active = store.active_runs().await.unwrap();
    assert_eq!(
        active.items.iter().map(|s| s.run_id).collect::<Vec<_>>(),
        vec![run]
    );
    assert!(active.unreadable.is_empty());
}

pub async fn an_unknown_run_reads_as_nothing<S: Store>(store: &S) {
    let run = RunId::new();
    assert_eq!(store.summary(run).await.unwrap(), None);
    assert!(store.events(run).await.unwrap().is_empty());
    assert!(
        store
            .list_runs(&RunFilter::default(), 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

pub async fn a_terminal_run_leaves_the_active_set<S: Store>(store: &S) {
    let settled = settled_run(store, "order", at(1_000)).await;
    assert_eq!(settled.state, RunState::Settled);
    assert!(store.active_runs().await.unwrap().items.is_empty());
    assert_eq!(
        store
            .summary(settled.run_id)
            .await
            .unwrap()
            .map(|s| s.state),
        Some(RunState::Settled)
    );
    assert_eq!(store.events(settled.run_id).await.unwrap().len(), 6);
}

pub async fn an_idempotency_key_belongs_to_one_run<S: Store>(store: &S) {
    let first = first_commit("order", Some("k-1"), at(1_000));
    let winner = first.run_id;
    assert_eq!(store.commit(first).await.unwrap(), CommitOutcome::Committed);
    let second = first_commit("order", Some("k-1"), at(1_001));
    let loser = second.run_id;
    assert_eq!(
        store.commit(second).await.unwrap(),
        CommitOutcome::Duplicate(winner)
    );
    assert_eq!(
        store.summary(loser).await.unwrap(),
        None,
        "nothing of the loser is written"
    );
    assert!(store.events(loser).await.unwrap().is_empty());
    assert_eq!(
        store
            .find_idempotent("order", "k-1", 60_000, at(2_000))
            .await
            .unwrap(),
        Some(winner)
    );
    // Keys are scoped by flow.
    let other = first_commit("refund", Some("k-1"), at(1_002));
    assert_eq!(store.commit(other).await.unwrap(), CommitOutcome::Committed);
    // Two claims of one key in flight at once: exactly one wins.
    let racers: Vec<Commit> = (0..16)
        .map(|i| first_commit("race", Some("same"), at(1_000 + i)))
        .collect();
    let outcomes = futures_join(
        racers
            .into_iter()
            .map(|c| store.commit(c))
            .collect::<Vec<_>>(),
    )
    .await;
    let committed = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(CommitOutcome::Committed)))
        .count();
    assert_eq!(committed, 1, "{outcomes:?}");
    let holder = store
        .find_idempotent("race", "same", 60_000, at(1_100))
        .await
        .unwrap();
    for o in &outcomes {
        if let Ok(CommitOutcome::Duplicate(run)) = o {
            assert_eq!(Some(*run), holder);
        }
    }
}

/// Polls every future to completion, concurrently, without an extra crate.
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if outputs[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => outputs[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("polled to completion"))
        .collect()
}

pub async fn an_idempotency_claim_expires_with_its_window<S: Store>(store: &S) {
    let accepted = at(1_000);
    let first = first_commit("order", Some("k"), accepted);
    let run = first.run_id;
    store.commit(first).await.unwrap();
    assert_eq!(
        store
            .find_idempotent("order", "k", 60_000, accepted + 59_999)
            .await
            .unwrap(),
        Some(run)
    );
    assert_eq!(
        store
            .find_idempotent("order", "k", 60_000, accepted + 60_000)
            .await
            .unwrap(),
        None,
        "a claim is honoured for its window only"
    );
    assert_eq!(
        store
            .find_idempotent("order", "k", u64::MAX, accepted + 1_000_000_000_000)
            .await
            .unwrap(),
        Some(run),
        "a window past the end of time does not overflow"
    );
}

pub async fn the_log_is_append_only<S: Store>(store: &S) {
    let first = first_commit("order", None, at(1_000));
    let run = first.run_id;
    let summary = first.summary.clone();
    let original = first.events.clone();
    store.commit(first).await.unwrap();
    // A second writer that believes it is at seq 0 again.
    let mut rogue = first_commit("order", None, at(2_000));
    rogue.run_id = run;
    for e in &mut rogue.events {
        e.run_id = run;
    }
    rogue.summary.run_id = run;
    match store.commit(rogue).await {
        Err(StoreError::Conflict { run: r, seq }) => {
            assert_eq!((r, seq), (run, 0));
        }
        other => panic!("an overwrite of event 0 must be refused, got {other:?}"),
    }
    assert_eq!(store.events(run).await.unwrap(), original);
    assert_eq!(store.summary(run).await.unwrap(), Some(summary));
}

pub async fn concurrent_commits_are_all_durable_and_distinct<S: Store>(store: &S) {
    let commits: Vec<Commit> = (0..200)
        .map(|i| first_commit("bulk", None, at(1_000 + i)))
        .collect();
    let runs: Vec<RunId> = commits.iter().map(|c| c.run_id).collect();
    let outcomes = futures_join(commits.into_iter().map(|c| store.commit(c)).collect()).await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Ok(CommitOutcome::Committed)))
    );
    for run in &runs {
        let s = store
            .summary(*run)
            .await
            .unwrap()
            .expect("committed run reads back");
        assert_eq!(s.run_id, *run);
        assert_eq!(store.events(*run).await.unwrap().len(), 2);
    }
    assert_eq!(store.active_runs().await.unwrap().items.len(), 200);
}

pub async fn listings_are_newest_first_and_page_without_gaps<S: Store>(store: &S) {
    let mut runs = Vec::new();
    for i in 0..25 {
        runs.push(settled_run(store, "order", at(1_000 + i)).await.run_id);
    }
    // UUID v7: acceptance order is id order.
    runs.reverse();
    let mut seen = Vec::new();
    let mut filter = RunFilter::default();
    loop {
        let page = store.list_runs(&filter, 7).await.unwrap();
        assert!(page.items.len() <= 7);
        if page.items.is_empty() {
            break;
        }
        filter.before = page.items.last().map(|s| s.run_id);
        seen.extend(page.items.into_iter().map(|s| s.run_id));
    }
    assert_eq!(seen, runs, "every run once, newest first");
    assert!(
        store
            .list_runs(&RunFilter::default(), 0)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

pub async fn listings_filter_by_state_flow_and_time<S: Store>(store: &S) {
    let done = settled_run(store, "order", at(5_000)).await;
    let open = first_commit("refund", None, at(9_000));
    let open_run = open.run_id;
    store.commit(open).await.unwrap();
    let ids = |s: Vec<RunSummary>| s.into_iter().map(|s| s.run_id).collect::<Vec<_>>();
    let by_state = RunFilter {
        states: vec![RunState::Settled],
        ..RunFilter::default()
    };
    assert_eq!(
        ids(store.list_runs(&by_state, 10).await.unwrap().items),
        vec![done.run_id]
    );
    let by_flow = RunFilter {
        flow: Some("refund".into()),
        ..RunFilter::default()
    };
    assert_eq!(
        ids(store.list_runs(&by_flow, 10).await.unwrap().items),
        vec![open_run]
    );
    let since = RunFilter {
        since_ms: Some(at(6_000)),
        ..RunFilter::default()
    };
    assert_eq!(
        ids(store.list_runs(&since, 10).await.unwrap().items),
        vec![open_run]
    );
    let none = RunFilter {
        states: vec![RunState::Cancelled],
        ..RunFilter::default()
    };
    assert!(store.list_runs(&none, 10).await.unwrap().items.is_empty());
}

pub async fn plugin_state_changes_all_at_once<S: Store>(store: &S) {
    store
        .kv_apply(
            "counter",
            &[
                ("a".into(), Some(b"1".to_vec())),
                ("b".into(), Some(b"22".to_vec())),
            ],
        )
        .unwrap();
    assert_eq!(store.kv_get("counter", "a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(store.kv_usage("counter").unwrap(), (2, 5));
    // Another plugin's state is separate, even under the same key.
    assert_eq!(store.kv_get("other", "a").unwrap(), None);
    assert_eq!(store.kv_usage("other").unwrap(), (0, 0));
    store
        .kv_apply(
            "counter",
            &[("a".into(), None), ("b".into(), Some(b"3".to_vec()))],
        )
        .unwrap();
    assert_eq!(store.kv_get("counter", "a").unwrap(), None);
    assert_eq!(store.kv_get("counter", "b").unwrap(), Some(b"3".to_vec()));
    assert_eq!(store.kv_usage("counter").unwrap(), (1, 2));
}

pub async fn flows_are_kept_by_digest_and_never_replaced<S: Store>(store: &S) {
    assert_eq!(store.get_flow("d1").await.unwrap(), None);
    store.put_flow("d1", "name: a\n").await.unwrap();
    store.put_flow("d1", "name: changed\n").await.unwrap();
    assert_eq!(
        store.get_flow("d1").await.unwrap().as_deref(),
        Some("name: a\n"),
        "a digest names one text for good"
    );
}

pub async fn a_reindex_keeps_every_answer<S: Store>(store: &S) {
    let done = settled_run(store, "order", at(1_000)).await;
    let open = first_commit("order", Some("key"), at(2_000));
    let open_run = open.run_id;
    store.commit(open).await.unwrap();
    let before = store
        .list_runs(&RunFilter::default(), 10)
        .await
        .unwrap()
        .items;
    let report = store.reindex().await.unwrap();
    assert_eq!(
        (report.runs, report.active, report.idempotency_keys),
        (2, 1, 1)
    );
    assert_eq!(
        store
            .list_runs(&RunFilter::default(), 10)
            .await
            .unwrap()
            .items,
        before
    );
    assert_eq!(
        store
            .active_runs()
            .await
            .unwrap()
            .items
            .iter()
            .map(|s| s.run_id)
            .collect::<Vec<_>>(),
        vec![open_run]
    );
    assert_eq!(
        store
            .find_idempotent("order", "key", 60_000, at(2_500))
            .await
            .unwrap(),
        Some(open_run)
    );
    assert_eq!(store.summary(done.run_id).await.unwrap(), Some(done));
}

pub async fn due_rechecks_come_in_due_order_and_only_when_due<S: Store>(store: &S) {
    let base = at(0);
    let mut runs = Vec::new();
    // Three settled runs checked again at base+3000, +1000, +2000.
    for offset in [3_000, 1_000, 2_000] {
        let settled = settled_run(store, "order", base).await;
        let scheduled = next_commit(
            &settled,
            vec![EventKind::RecheckScheduled {
                not_before_ms: base + offset,
                attempt: 1,
            }],
            base,
        );
        let summary = scheduled.summary.clone();
        store.commit(scheduled).await.unwrap();
        runs.push((base + offset, summary));
    }
    let ids = |due: Vec<(u64, RunId)>| due.into_iter().map(|(_, r)| r).collect::<Vec<_>>();
    assert!(store.due_rechecks(base + 999, 10).await.unwrap().is_empty());
    assert_eq!(
        store.due_rechecks(base + 2_000, 10).await.unwrap(),
        vec![
            (base + 1_000, runs[1].1.run_id),
            (base + 2_000, runs[2].1.run_id)
        ]
    );
    assert_eq!(
        ids(store.due_rechecks(base + 5_000, 2).await.unwrap()),
        vec![runs[1].1.run_id, runs[2].1.run_id],
        "at most `limit`, earliest first"
    );
    // Moved on: the run due first is checked and scheduled again later;
    // its old entry is stale until dropped, and the summary says so.
    let (old_due, first) = &runs[1];
    let again = next_commit(
        first,
        vec![EventKind::RecheckScheduled {
            not_before_ms: base + 4_000,
            attempt: 1,
        }],
        base,
    );
    store.commit(again).await.unwrap();
    let stored = store.summary(first.run_id).await.unwrap().unwrap();
    assert_eq!(stored.recheck.map(|r| r.due_ms), Some(base + 4_000));
    store.drop_recheck(*old_due, first.run_id).await.unwrap();
    assert_eq!(
        ids(store.due_rechecks(base + 5_000, 10).await.unwrap()),
        vec![runs[2].1.run_id, runs[0].1.run_id, first.run_id]
    );
    // A reindex rebuilds the index from the summaries: stale entries go.
    let third = &runs[0].1;
    let ended = next_commit(
        third,
        vec![EventKind::RechecksEnded {
            reason: "window closed".into(),
            unanswered: false,
        }],
        base,
    );
    store.commit(ended).await.unwrap();
    let report = store.reindex().await.unwrap();
    assert_eq!(report.rechecks, 2);
    assert_eq!(
        ids(store.due_rechecks(base + 5_000, 10).await.unwrap()),
        vec![runs[2].1.run_id, first.run_id]
    );
}
