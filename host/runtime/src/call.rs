//! One call into a plugin: a fresh store (cheap, from the pooling allocator),
//! limits applied, the result or the failure classified. Functions of one
//! plugin and one request; the [`crate::Runtime`] owns the pool and calls them.
//!
//! A fresh store per call is not only cheap, it is required: an instance that
//! trapped is poisoned and cannot be entered again.

use crate::bindings::StepPre;
use crate::bindings::settle::plugin::types as wit;
use crate::budget::{RuntimeStats, cut};
use crate::host_imports::CallState;
use crate::limits::{LimitHit, POOL_WAIT};
use crate::plugin::PluginInfo;
use settle_types::executor::{CallFailure, CallKind, CallOutput, CallRequest};
use settle_types::{FailureClass, Verdict};

use std::time::{Duration, Instant};
use wasmtime::{Store, Trap, UpdateDeadline};

/// A store whose memory and time are bounded by the state's limiter: at every
/// epoch tick the guest yields to tokio, and past its deadline it is stopped.
pub(crate) fn sandboxed_store(engine: &wasmtime::Engine, state: CallState) -> Store<CallState> {
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut cx| {
        Ok(if cx.data_mut().limiter.out_of_time() {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Yield(1)
        })
    });
    store
}

/// Why a call did not get an answer from the plugin.
pub(crate) enum CallError {
    /// The pooling allocator had no free slot within [`POOL_WAIT`].
    PoolExhausted(String),
    /// A trap, a limit, or a host function that failed.
    Wasm(wasmtime::Error),
}

impl From<wasmtime::Error> for CallError {
    fn from(e: wasmtime::Error) -> Self {
        CallError::Wasm(e)
    }
}

type ExportResult = Result<Result<CallOutput, wit::StepError>, CallError>;

/// A component ready to instantiate: a plugin, or the expression evaluator.
pub(crate) trait Instantiate {
    type Instance;
    fn instantiate<'a>(
        &'a self,
        store: &'a mut Store<CallState>,
    ) -> impl Future<Output = wasmtime::Result<Self::Instance>> + Send + 'a;
}

impl Instantiate for StepPre<CallState> {
    type Instance = crate::bindings::Step;
    fn instantiate<'a>(
        &'a self,
        store: &'a mut Store<CallState>,
    ) -> impl Future<Output = wasmtime::Result<Self::Instance>> + Send + 'a {
        self.instantiate_async(store)
    }
}

/// Instantiates, waiting (bounded) for a pool slot when every slot is taken,
/// so pool exhaustion delays a call instead of failing it as a trap.
pub(crate) async fn instantiate<P: Instantiate + Sync>(
    store: &mut Store<CallState>,
    pre: &P,
    stats: &RuntimeStats,
) -> Result<P::Instance, CallError> {
    let started = Instant::now();
    let mut waited = false;
    loop {
        match pre.instantiate(&mut *store).await {
            Ok(instance) => return Ok(instance),
            Err(e)
                if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                    .is_some() =>
            {
                if !waited {
                    waited = true;
                    RuntimeStats::add(&stats.pool_waits, 1);
                }
                if started.elapsed() >= POOL_WAIT {
                    return Err(CallError::PoolExhausted(e.to_string()));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => return Err(CallError::Wasm(e)),
        }
    }
}

pub(crate) async fn call_export(
    store: &mut Store<CallState>,
    plugin: &PluginInfo,
    request: &CallRequest,
    timeout: Duration,
    stats: &RuntimeStats,
) -> ExportResult {
    let instance = instantiate(store, &plugin.pre, stats).await?;
    let h = instance.settle_plugin_handler();
    // The attempt's own deadline: a step's lower `timeout` included.
    // On the stand-in's clock when there is one (tests, replays).
    let now_ms = store
        .data()
        .stand_in
        .as_ref()
        .map_or_else(settle_types::now_ms, |s| s.now_ms());
    let deadline_ms = now_ms.saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
    let cx = wit::CallContext {
        run_id: request.ctx.run_id.clone(),
        flow: request.ctx.flow.clone(),
        step: request.ctx.step.clone(),
        operation_id: request.ctx.operation_id.clone(),
        step_id: request.ctx.step_id.clone(),
        attempt: request.ctx.attempt,
        trace_id: request.ctx.trace_id.clone(),
        deadline_ms,
    };
    let output = request.output.as_deref();
    Ok(match request.kind {
        CallKind::Run => h
            .call_run(&mut *store, &cx, &request.input)
            .await?
            .map(CallOutput::Ran),
        CallKind::Compensate => h
            .call_compensate(&mut *store, &cx, &request.input, output)
            .await?
            .map(|()| CallOutput::Compensated),
        CallKind::Reconcile => h
            .call_reconcile(&mut *store, &cx, &request.input, output.unwrap_or("null"))
            .await?
            .map(|v| {
                CallOutput::Reconciled(match v {
                    wit::Verdict::InSync => Verdict::InSync,
                    wit::Verdict::Drifted(d) => Verdict::Drifted(plugin_text(&d)),
                    wit::Verdict::Unknown => Verdict::Unknown,
                })
            }),
    })
}

/// Calls `describe` on a freshly loaded plugin, under the same limits as a
/// call (memory, and time, whether the plugin computes or waits). The error
/// is one plain line saying why.
pub(crate) async fn describe(
    store: &mut Store<CallState>,
    pre: &StepPre<CallState>,
    stats: &RuntimeStats,
) -> Result<wit::Manifest, String> {
    let timeout = store.data().limiter.timeout();
    let call = async {
        let instance = instantiate(store, pre, stats).await?;
        Ok::<_, CallError>(
            instance
                .settle_plugin_handler()
                .call_describe(&mut *store)
                .await?,
        )
    };
    let outcome =
        tokio::time::timeout(timeout.saturating_add(crate::limits::EPOCH_TICK * 2), call).await;
    let data = store.data_mut();
    data.finish();
    match outcome {
        Err(_elapsed) => Err(LimitHit::Time { limit: timeout }.to_string()),
        Ok(Err(CallError::PoolExhausted(reason))) => {
            Err(format!("no free instance slot: {reason}"))
        }
        Ok(Err(CallError::Wasm(e))) => {
            Err(classify_trap(&e, data.limiter.hit.as_ref(), &data.stderr).message)
        }
        Ok(Ok(manifest)) => Ok(manifest),
    }
}

/// A plugin's own words, made safe to show: cut, and with newlines and
/// control characters escaped, so they cannot forge lines in a terminal.
fn plugin_text(text: &str) -> String {
    crate::budget::escape(&cut(text, 2000))
}

pub(crate) fn step_failure(e: wit::StepError) -> CallFailure {
    match e {
        wit::StepError::Retryable(r) => CallFailure {
            class: FailureClass::Retryable,
            message: plugin_text(&r.message),
            retry_after_ms: r.retry_after_ms,
        },
        wit::StepError::Permanent(m) => CallFailure::new(FailureClass::Permanent, plugin_text(&m)),
        wit::StepError::InvalidInput(m) => {
            CallFailure::new(FailureClass::InvalidInput, plugin_text(&m))
        }
    }
}

pub(crate) fn limit_failure(hit: &LimitHit) -> CallFailure {
    let class = match hit {
        LimitHit::Memory { .. } => FailureClass::MemoryLimit,
        LimitHit::Time { .. } => FailureClass::Timeout,
        LimitHit::Output { .. } => FailureClass::OutputLimit,
    };
    CallFailure::new(class, hit.to_string())
}

/// A trap is the host's business: say which limit caused it, if one did,
/// and what the plugin printed before it died.
pub(crate) fn classify_trap(
    error: &wasmtime::Error,
    hit: Option<&LimitHit>,
    stderr: &wasmtime_wasi::p2::pipe::MemoryOutputPipe,
) -> CallFailure {
    if let Some(hit) = hit {
        return limit_failure(hit);
    }
    let trap = error.downcast_ref::<Trap>().map(|t| t.to_string());
    // What the guest printed, without Rust's hint about RUST_BACKTRACE,
    // which concerns the guest's environment, not the operator's.
    let printed = String::from_utf8_lossy(&stderr.contents())
        .lines()
        .filter(|l| !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string();
    let mut message = match trap {
        Some(t) => format!("plugin trapped: {t}"),
        None => format!("plugin failed: {}", plain_reason(error)),
    };
    if !printed.is_empty() {
        // What the guest printed (a panic message) is its own text: escaped,
        // so it stays on one line.
        message.push_str(&format!(
            "; it printed: {}",
            crate::budget::escape(&cut(&printed, 1000))
        ));
    }
    CallFailure::new(FailureClass::Trap, message)
}

/// A wasmtime error as one plain line: the root cause, never the Debug form
/// (whose wasm backtrace runs to kilobytes and hides the reason).
pub fn plain_reason(error: &wasmtime::Error) -> String {
    let root = error.root_cause().to_string();
    let line = root.lines().next().unwrap_or_default().trim();
    let line = if line.is_empty() || line.starts_with("error while executing at wasm backtrace") {
        error.to_string()
    } else {
        line.to_string()
    };
    cut(line.lines().next().unwrap_or_default(), 300)
}
