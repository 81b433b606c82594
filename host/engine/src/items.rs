//! `for_each` steps: one plugin call per item of a list.
//!
//! The list is an expression of the run (so it is the same each time the
//! step is asked for it). Each item is its own operation: its ids are the
//! step's with `/POSITION` appended, so a downstream system sees one
//! idempotency key per item. Each item's output is recorded as it comes
//! (`item-completed`); an attempt of the step calls only the items without
//! one, at most `concurrency` at a time. When every item has an output the
//! step completes with the list of them, in the list's order.
//!
//! Calls are written down before they go out (`items-started`), so an item
//! in flight when the host stops, or whose call timed out or trapped, is
//! known to perhaps have had its effect. The first failure stops new
//! calls; the calls in flight finish and are recorded; then the attempt
//! fails as that failure says (retried, held or undone, as for any step);
//! items the plugin said failed with no effect are recorded
//! (`items-failed`). Undoing the step undoes its items one by one, newest
//! first (`item-compensated`): the completed ones and those started whose
//! outcome is unknown. Each item call takes a slot of its plugin's
//! bulkhead.
//!
//! A `parallel` step is run the same way: its branches are its items (a
//! branch's position is its place in `branches`), each calling its own
//! plugin with its own input, under ids ending in `/BRANCH`. Under `join:
//! all` it is a `for_each` over the branches; under `join: first: N` a
//! failed branch does not stop the others, no branch is started once N
//! have an output (the calls already out are waited for and recorded), and
//! the attempt fails only when fewer than N could give one. Its output has
//! a field per branch (null for a branch without an output).

use crate::driver::{blame_setup, split_failure};
use crate::{Engine, transitions};
use serde_json::Value;
use settle_flow::{Flow, Join, StepDef};
use settle_types::executor::{CallFailure, CallKind, CallOutput, CallRequest, Executor};
use settle_types::store::{RunQueries, StoreError};
use settle_types::summary::{ItemsDone, MAX_ITEMS};
use settle_types::{EventKind, Failure, FailureClass, RunSummary, Source, Verdict};
use std::time::Instant;

/// The most bytes the outputs of one `for_each` step's items may come to
/// together (the step's output, kept in the run's summary).
pub const MAX_ITEMS_OUTPUT_BYTES: usize = 256 * 1024;

/// Branch `position` of a `parallel` step; `None` for a `for_each` item.
fn branch_of(step: &StepDef, position: u32) -> Option<&settle_flow::Branch> {
    step.parallel
        .as_ref()
        .and_then(|p| p.branches.get(position as usize))
}

/// The call item `position` of `step` makes: the step's own, or its branch's.
fn call_of(step: &StepDef, position: u32) -> &StepDef {
    branch_of(step, position).map_or(step, |b| &b.call)
}

/// How messages name item `position` of `step`.
fn label(step: &StepDef, position: u32) -> String {
    match branch_of(step, position) {
        Some(b) => format!("branch '{}'", b.name),
        None => format!("item {position}"),
    }
}

/// What ends item `position`'s ids: its position, or its branch's name
/// (stable when branches are added in a later version of the flow).
fn id_suffix(step: &StepDef, position: u32) -> String {
    match branch_of(step, position) {
        Some(b) => b.name.clone(),
        None => position.to_string(),
    }
}

/// The failure an attempt of a `first: N` join that fell short ends with:
/// a failure of the host's setup first (held for an operator, never
/// undone), then one a retry may mend, then the first.
fn short_failure(failures: Vec<CallFailure>) -> Option<CallFailure> {
    let rank = |f: &CallFailure| match f.class {
        FailureClass::HostSetup | FailureClass::Unavailable => 0,
        FailureClass::Permanent | FailureClass::InvalidInput => 2,
        _ => 1,
    };
    failures
        .into_iter()
        .enumerate()
        .min_by_key(|(i, f)| (rank(f), *i))
        .map(|(_, f)| f)
}

impl<S: RunQueries, X: Executor> Engine<S, X> {
    /// The step's list, rendered; a `parallel` step's branches' names.
    async fn item_list(
        &self,
        summary: &RunSummary,
        flow: &Flow,
        index: u32,
    ) -> Result<Vec<Value>, CallFailure> {
        let step = &flow.steps[index as usize];
        if let Some(parallel) = &step.parallel {
            return Ok(parallel
                .branches
                .iter()
                .map(|b| Value::String(b.name.clone()))
                .collect());
        }
        let Some(for_each) = step.for_each.as_ref() else {
            return Ok(Vec::new());
        };
        match self.render(summary, flow, index, &for_each.list).await? {
            Value::Array(items) if items.len() <= MAX_ITEMS => Ok(items),
            Value::Array(items) => Err(CallFailure::new(
                FailureClass::InvalidInput,
                format!(
                    "`for_each` gives {} items; a step may have at most {MAX_ITEMS}",
                    items.len()
                ),
            )),
            other => Err(CallFailure::new(
                FailureClass::InvalidInput,
                format!(
                    "`for_each` gives {}, not a list",
                    settle_types::bounds::cut(&other.to_string(), 60)
                ),
            )),
        }
    }

    /// Item `position`'s input, checked against its plugin's schema.
    async fn item_input(
        &self,
        summary: &RunSummary,
        flow: &Flow,
        index: u32,
        item: &Value,
        position: usize,
    ) -> Result<Value, CallFailure> {
        let step = &flow.steps[index as usize];
        let input = match step.parallel {
            // A branch's input reads the run and earlier steps, no item.
            Some(_) => {
                let call = call_of(step, position as u32);
                self.checked_call_input(summary, flow, index, call, None)
                    .await
            }
            None => {
                self.checked_input(summary, flow, index, Some((item, position)))
                    .await
            }
        };
        input.map_err(|f| CallFailure {
            message: format!("{}: {}", label(step, position as u32), f.message),
            ..f
        })
    }

    /// The call of one item's `action`: the step's context, with the
    /// item's position in its ids.
    fn item_request(
        &self,
        summary: &RunSummary,
        flow: &Flow,
        index: u32,
        attempt: u32,
        kind: CallKind,
        (position, input, output): (u32, &Value, Option<&Value>),
    ) -> CallRequest {
        let output = output.map(Value::to_string);
        let step = &flow.steps[index as usize];
        let mut request = self.call_request(summary, flow, index, attempt, kind, input, output);
        let suffix = id_suffix(step, position);
        request.plugin = call_of(step, position).plugin.clone();
        request.build = summary.plugins.get(&request.plugin).cloned();
        request.ctx.operation_id = format!("{}/{suffix}", request.ctx.operation_id);
        request.ctx.step_id = format!("{}/{suffix}", request.ctx.step_id);
        // Items run side by side: one progress line would mix them.
        request.progress = None;
        request
    }

    /// One attempt of `for_each` or `parallel` step `index`: see the
    /// module docs.
    pub(crate) async fn run_items(
        &self,
        summary: &mut RunSummary,
        flow: &Flow,
        index: u32,
        attempt: u32,
        maybe_interrupted: bool,
        probes: &[String],
    ) -> Result<(), StoreError> {
        let step = &flow.steps[index as usize];
        let (concurrency, join) = match (&step.for_each, &step.parallel) {
            (_, Some(p)) => (p.concurrency, p.join),
            (Some(f), None) => (f.concurrency, Join::All),
            (None, None) => (1, Join::All),
        };
        let concurrency = concurrency as usize;
        let started = Instant::now();
        let list = match self.item_list(summary, flow, index).await {
            Ok(list) => list,
            Err(f) => {
                return self
                    .items_failed(summary, flow, index, attempt, f, maybe_interrupted)
                    .await;
            }
        };
        let needed = match join {
            Join::All => list.len(),
            Join::First(n) => (n as usize).min(list.len()),
        };
        let done = summary.items.get(&index).cloned().unwrap_or_default();
        let mut have = done
            .completed
            .iter()
            .filter(|(p, _)| (*p as usize) < list.len() && !done.compensated.contains(p))
            .count();
        // Items started whose outcome is unknown (a crash, a timeout) go
        // first: their ids make a repeat safe, and the run learns what they
        // did. Once a `first` join is met they are not called again but
        // undone (below), as an undo copes with an unknown outcome.
        let uncertain: Vec<u32> = done
            .uncertain()
            .into_iter()
            .filter(|p| !done.compensated.contains(p))
            .collect();
        let mut order: Vec<usize> = (0..list.len()).collect();
        order.sort_by_key(|p| !uncertain.contains(&(*p as u32)));
        let mut pending = Vec::new();
        // Under `join: all` the first failure stops new calls and is the
        // attempt's; under `first: N` failures are kept, and the calls go on.
        let mut failures: Vec<CallFailure> = Vec::new();
        // Items whose call failed with no effect (the plugin said so).
        let mut failed_clean = Vec::new();
        for position in order {
            if done.completed.iter().any(|(p, _)| *p as usize == position) {
                continue;
            }
            // A branch a `first` join undid as surplus is not called again.
            if join != Join::All && done.compensated.contains(&(position as u32)) {
                continue;
            }
            match self
                .item_input(summary, flow, index, &list[position], position)
                .await
            {
                Ok(input) => pending.push((position as u32, input)),
                // Under `first: N`, a branch whose input cannot be made is
                // that branch failing, not the step.
                Err(f) if join != Join::All && f.class == FailureClass::InvalidInput => {
                    failures.push(f);
                }
                Err(f) => {
                    return self
                        .items_failed(summary, flow, index, attempt, f, maybe_interrupted)
                        .await;
                }
            }
        }
        let mut calls = tokio::task::JoinSet::new();
        let mut positions = std::collections::HashMap::new();
        let mut queue = pending.into_iter().peekable();
        let mut store_error = None;
        // What the calls came to, by plugin, for the plugins' and the
        // hosts' breakers (a probe the attempt was admitted as must learn
        // its outcome).
        let mut outcomes: std::collections::BTreeMap<String, (Option<FailureClass>, Vec<_>)> =
            Default::default();
        loop {
            // The next calls, written down before they go out: a crash
            // while they are in flight leaves them to be undone.
            let mut batch = Vec::new();
            let stopped = match join {
                Join::All => !failures.is_empty(),
                Join::First(_) => have >= needed,
            };
            while !stopped && calls.len() + batch.len() < concurrency {
                let Some(next) = queue.next() else { break };
                batch.push(next);
            }
            if !batch.is_empty() {
                let started = EventKind::ItemsStarted {
                    index,
                    items: batch.iter().map(|(p, _)| *p).collect(),
                };
                let now = self.now();
                if let Err(e) = self
                    .record(summary, vec![(started, Some(index), Source::host())], now)
                    .await
                {
                    store_error = Some(e);
                    break;
                }
            }
            for (position, input) in batch {
                let request = self.item_request(
                    summary,
                    flow,
                    index,
                    attempt,
                    CallKind::Run,
                    (position, &input, None),
                );
                let engine = self.clone();
                let plugin = request.plugin.clone();
                // Each call takes a slot of its plugin's bulkhead, as any call does.
                let handle = calls.spawn(async move {
                    let _slot = engine.inner.domains.bulkhead(&plugin).await;
                    engine.inner.executor.call(request).await
                });
                positions.insert(handle.id(), position);
            }
            let Some(joined) = calls.join_next_with_id().await else {
                break;
            };
            let (position, report) = match joined {
                Ok((id, report)) => match positions.remove(&id) {
                    Some(position) => (position, report),
                    None => continue,
                },
                Err(e) => {
                    // A call that panicked: its outcome is unknown (it was
                    // started, so it is undone if the run is).
                    let what = positions
                        .remove(&e.id())
                        .map_or_else(|| "an item".to_string(), |p| label(step, p));
                    failures.push(CallFailure::new(
                        FailureClass::Trap,
                        format!("{what}: the call failed in the host: {e}"),
                    ));
                    continue;
                }
            };
            let source = Source(report.source.clone());
            let plugin = &call_of(step, position).plugin;
            let recorded = (!report.exchanges.is_empty()).then(|| {
                let kind = EventKind::ExchangesRecorded {
                    index,
                    item: Some(position),
                    attempt,
                    exchanges: report.exchanges.clone(),
                };
                (kind, Some(index), source.clone())
            });
            let outcome = outcomes.entry(plugin.clone()).or_default();
            outcome.1.extend(report.downstream.iter().cloned());
            if let Err(f) = &report.result {
                outcome.0.get_or_insert(f.class);
            }
            let result = self
                .run_answer(plugin, report.result)
                .map_err(|(f, unknown)| (blame_setup(f, &report.denials), unknown));
            match result {
                Ok(output) => {
                    let event = EventKind::ItemCompleted {
                        index,
                        item: position,
                        output,
                    };
                    let now = self.now();
                    let events = recorded.into_iter().chain([(event, Some(index), source)]);
                    if let Err(e) = self.record(summary, events.collect(), now).await {
                        store_error = Some(e);
                        break;
                    }
                    have += 1;
                }
                Err((mut f, unknown)) => {
                    if !unknown {
                        failed_clean.push(position);
                    }
                    f.message = format!("{}: {}", label(step, position), f.message);
                    failures.push(f);
                    // A failed call's exchanges too: what replays debug.
                    if let Some(recorded) = recorded {
                        let now = self.now();
                        if let Err(e) = self.record(summary, vec![recorded], now).await {
                            store_error = Some(e);
                            break;
                        }
                    }
                }
            }
        }
        let now = self.now();
        for (plugin, (first_failed, downstream)) in &outcomes {
            let outcome = crate::breakers::Outcome::of(first_failed.map_or(Ok(()), Err));
            for change in self
                .inner
                .domains
                .record(plugin, outcome, downstream, probes, now)
            {
                self.breaker_changed(change);
            }
        }
        if let Some(e) = store_error {
            // The calls still in flight are dropped with the set; they were
            // written down as started, so a resumed run undoes them if need be.
            return Err(e);
        }
        let mut events = Vec::new();
        if !failed_clean.is_empty() {
            failed_clean.sort_unstable();
            events.push(EventKind::ItemsFailed {
                index,
                items: failed_clean,
            });
        }
        let failure = match join {
            Join::All => failures.into_iter().next(),
            Join::First(_) if have >= needed => None,
            Join::First(_) => short_failure(failures).map(|f| CallFailure {
                message: format!(
                    "{have} of the {needed} branches needed gave an output; {}",
                    f.message
                ),
                ..f
            }),
        };
        if let Some(f) = failure {
            let (failure, retry_after) = split_failure(f);
            let mut after = summary.clone();
            if let Some(EventKind::ItemsFailed { items, .. }) = events.first() {
                after.items.entry(index).or_default().failed.extend(items);
            }
            let failed = transitions::StepFailure {
                may_have_effect: maybe_interrupted || after.may_have_effect(index as usize),
                failure,
                retry_after,
                duration_ms: Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
            };
            events.extend(transitions::after_step_failed(
                flow, summary, index, attempt, failed, now,
            ));
            return self.record(summary, host_events(events, index), now).await;
        }
        // Under `first: N` (when the step undoes), the branches past the
        // first N to complete, and those whose outcome is unknown, are not
        // wanted: undone now, newest first, before the step completes. An
        // undo that fails fails the attempt, as that failure says.
        if join != Join::All && step.compensate {
            if !events.is_empty() {
                self.record(
                    summary,
                    host_events(std::mem::take(&mut events), index),
                    now,
                )
                .await?;
            }
            let done = summary.items.get(&index).cloned().unwrap_or_default();
            let winners = done.kept(needed);
            for position in done.to_undo().into_iter().filter(|p| !winners.contains(p)) {
                if let Err(f) = self
                    .undo_and_record(summary, flow, index, attempt, position, &list)
                    .await?
                {
                    let f = CallFailure {
                        message: format!("undoing a branch past the join: {}", f.message),
                        ..f
                    };
                    return self
                        .items_failed(summary, flow, index, attempt, f, maybe_interrupted)
                        .await;
                }
            }
        }
        let now = self.now();
        let done = summary.items.get(&index).cloned().unwrap_or_default();
        let mut outputs: Vec<(u32, Value)> = done
            .completed
            .iter()
            .filter(|(p, _)| (*p as usize) < list.len() && !done.compensated.contains(p))
            .cloned()
            .collect();
        outputs.sort_by_key(|(p, _)| *p);
        if outputs.len() < needed {
            // Never expected: every item either completed or failed above.
            let f = CallFailure::new(
                FailureClass::Retryable,
                format!(
                    "{} of {} items have an output; the others are called again",
                    outputs.len(),
                    needed
                ),
            );
            return self
                .items_failed(summary, flow, index, attempt, f, maybe_interrupted)
                .await;
        }
        let output = match &step.parallel {
            // Every item has its output: the step's is the list of them.
            None => Value::Array(outputs.into_iter().map(|(_, o)| o).collect()),
            // A field per branch; null for one without an output.
            Some(parallel) => Value::Object(
                parallel
                    .branches
                    .iter()
                    .enumerate()
                    .map(|(position, b)| {
                        let output = outputs
                            .iter()
                            .find(|(p, _)| *p as usize == position)
                            .map_or(Value::Null, |(_, o)| o.clone());
                        (b.name.clone(), output)
                    })
                    .collect(),
            ),
        };
        if let Err(e) = settle_types::bounds::check_json(&output, MAX_ITEMS_OUTPUT_BYTES) {
            let f = CallFailure::new(
                FailureClass::OutputLimit,
                format!("the items' outputs together: {e}"),
            );
            return self
                .items_failed(summary, flow, index, attempt, f, maybe_interrupted)
                .await;
        }
        events.extend([
            EventKind::StepCompleted {
                index,
                output,
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            },
            transitions::after_step_completed(flow, index, now, &|plugin| self.reconciles(plugin)),
        ]);
        self.record(summary, host_events(events, index), now).await
    }

    /// The attempt failed before any call: recorded as the step's failure.
    async fn items_failed(
        &self,
        summary: &mut RunSummary,
        flow: &Flow,
        index: u32,
        attempt: u32,
        f: CallFailure,
        maybe_interrupted: bool,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let (failure, retry_after) = split_failure(f);
        let failed = transitions::StepFailure {
            may_have_effect: maybe_interrupted || summary.may_have_effect(index as usize),
            failure,
            retry_after,
            duration_ms: None,
        };
        let events = transitions::after_step_failed(flow, summary, index, attempt, failed, now);
        self.record(summary, host_events(events, index), now).await
    }

    /// Asks the plugin about each item of `for_each` step `index` that
    /// completed (each branch of a `parallel` step whose plugin
    /// reconciles): the step is in sync when every item is; the first item
    /// that is not (drifted, unknown, or no answer) is the step's verdict,
    /// naming the item. `None` when none was asked.
    pub(crate) async fn reconcile_items(
        &self,
        summary: &RunSummary,
        flow: &Flow,
        index: u32,
        attempt: u32,
    ) -> Option<(Result<Verdict, Failure>, Source)> {
        let done = summary.items.get(&index).cloned().unwrap_or_default();
        let list = match self.item_list(summary, flow, index).await {
            Ok(list) => list,
            Err(f) => return Some((Err(split_failure(f).0), Source::host())),
        };
        let mut source = Source::host();
        let mut completed = done.completed;
        completed.sort_by_key(|(p, _)| *p);
        let step = &flow.steps[index as usize];
        let mut asked = false;
        for (position, output) in completed {
            // A branch undone past a `first` join is not the run's.
            if !self.reconciles(&call_of(step, position).plugin)
                || done.compensated.contains(&position)
            {
                continue;
            }
            let what = label(step, position);
            let Some(item) = list.get(position as usize) else {
                let failure = Failure {
                    class: FailureClass::Permanent,
                    message: format!("{what} is no longer in the list: the list changed"),
                };
                return Some((Err(failure), source));
            };
            let input = match self
                .item_input(summary, flow, index, item, position as usize)
                .await
            {
                Ok(input) => input,
                Err(f) => return Some((Err(split_failure(f).0), source)),
            };
            let request = self.item_request(
                summary,
                flow,
                index,
                attempt,
                CallKind::Reconcile,
                (position, &input, Some(&output)),
            );
            let report = self.inner.executor.call(request).await;
            asked = true;
            source = Source(report.source.clone());
            match report.result {
                Ok(CallOutput::Reconciled(Verdict::InSync)) => {}
                Ok(CallOutput::Reconciled(Verdict::Drifted(detail))) => {
                    let detail = format!("{what}: {detail}");
                    return Some((
                        Ok(Verdict::Drifted(settle_types::bounds::cut_detail(&detail))),
                        source,
                    ));
                }
                Ok(CallOutput::Reconciled(Verdict::Unknown)) => {
                    return Some((Ok(Verdict::Unknown), source));
                }
                Ok(other) => {
                    let failure = Failure {
                        class: FailureClass::Permanent,
                        message: format!("{what}: unexpected answer {other:?}"),
                    };
                    return Some((Err(failure), source));
                }
                Err(f) => {
                    let mut failure = split_failure(blame_setup(f, &report.denials)).0;
                    failure.message = format!("{what}: {}", failure.message);
                    return Some((Err(failure), source));
                }
            }
        }
        // Nothing asked (every branch that reconciles was undone, or gave
        // no output): no verdict, rather than one no one gave.
        asked.then_some((Ok(Verdict::InSync), source))
    }

    /// Undoes item `position` of step `index` and records it
    /// (`item-compensated`); the inner `Err` is the undo's failure.
    async fn undo_and_record(
        &self,
        summary: &mut RunSummary,
        flow: &Flow,
        index: u32,
        attempt: u32,
        position: u32,
        list: &[Value],
    ) -> Result<Result<(), CallFailure>, StoreError> {
        match self
            .undo_item(summary, flow, index, attempt, position, list)
            .await
        {
            Ok(source) => {
                let event = EventKind::ItemCompensated {
                    index,
                    item: position,
                };
                let now = self.now();
                self.record(summary, vec![(event, Some(index), source)], now)
                    .await?;
                Ok(Ok(()))
            }
            Err(f) => Ok(Err(f)),
        }
    }

    /// Calls `compensate` for item `position` of step `index` (its
    /// recorded output, if any); the failure names the item.
    async fn undo_item(
        &self,
        summary: &RunSummary,
        flow: &Flow,
        index: u32,
        attempt: u32,
        position: u32,
        list: &[Value],
    ) -> Result<Source, CallFailure> {
        let step = &flow.steps[index as usize];
        let Some(item) = list.get(position as usize) else {
            return Err(CallFailure::new(
                FailureClass::Permanent,
                format!(
                    "item {position} to undo is no longer in the list (it has {} items): the list changed since it was called",
                    list.len()
                ),
            ));
        };
        let output = summary.items.get(&index).and_then(|done| {
            done.completed
                .iter()
                .find(|(p, _)| *p == position)
                .map(|(_, o)| o.clone())
        });
        let input = self
            .item_input(summary, flow, index, item, position as usize)
            .await?;
        let request = self.item_request(
            summary,
            flow,
            index,
            attempt,
            CallKind::Compensate,
            (position, &input, output.as_ref()),
        );
        // A branch's undo takes a slot of its own plugin's bulkhead (a
        // `for_each` step's undo holds its plugin's slot as a whole).
        let _slot = match step.parallel {
            Some(_) => self.inner.domains.bulkhead(&request.plugin).await,
            None => None,
        };
        let report = self.inner.executor.call(request).await;
        report
            .result
            .map(|_| Source(report.source.clone()))
            .map_err(|f| {
                let f = blame_setup(f, &report.denials);
                CallFailure {
                    message: format!("{}: {}", label(step, position), f.message),
                    ..f
                }
            })
    }

    /// Undoes the items of `for_each` step `index`, newest first; each
    /// one undone is recorded, so a retry goes on with the rest.
    pub(crate) async fn compensate_items(
        &self,
        summary: &mut RunSummary,
        flow: &Flow,
        index: u32,
        attempt: u32,
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let done: ItemsDone = summary.items.get(&index).cloned().unwrap_or_default();
        let failed = |summary: &RunSummary, f: CallFailure| {
            let (failure, retry_after) = split_failure(f);
            transitions::after_compensation_failed(
                flow,
                summary,
                index,
                attempt,
                failure,
                retry_after,
                self.now(),
            )
        };
        let list = match self.item_list(summary, flow, index).await {
            Ok(list) => list,
            Err(f) => {
                let now = self.now();
                let events = host_events(failed(summary, f), index);
                return self.record(summary, events, now).await;
            }
        };
        for position in done.to_undo() {
            if let Err(f) = self
                .undo_and_record(summary, flow, index, attempt, position, &list)
                .await?
            {
                let now = self.now();
                let events = host_events(failed(summary, f), index);
                return self.record(summary, events, now).await;
            }
        }
        let now = self.now();
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let events = vec![
            EventKind::CompensationCompleted { index, duration_ms },
            transitions::after_compensation_completed(flow, summary, index, now),
        ];
        self.record(summary, host_events(events, index), now).await
    }
}

fn host_events(events: Vec<EventKind>, index: u32) -> Vec<(EventKind, Option<u32>, Source)> {
    events
        .into_iter()
        .map(|k| (crate::driver::step_of(&k, index), k))
        .map(|(at, k)| (k, at, Source::host()))
        .collect()
}
