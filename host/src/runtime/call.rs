//! One call into a plugin: a fresh store (cheap, from the pooling allocator),
//! limits applied, the result or the failure classified.
//!
//! A fresh store per call is not only cheap, it is required: an instance that
//! trapped is poisoned and cannot be entered again.

use super::bindings::StepPre;
use super::bindings::settle::plugin::types as wit;
use super::host_imports::{CallState, Caller, truncate};
use super::limits::{CallLimiter, LimitHit};
use super::plugin::{PluginInfo, Runtime};
use crate::model::{FailureClass, Verdict};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::{Store, Trap, UpdateDeadline};

/// Which export to call: one of a step's actions.
pub use crate::model::Action as CallKind;

/// Receives progress reports while a call runs.
pub type ProgressSink = Arc<dyn Fn(f32, String) + Send + Sync>;

/// The call context handed to the plugin, in host types.
#[derive(Clone, Debug)]
pub struct CallContext {
    pub run_id: String,
    pub flow: String,
    pub step: String,
    /// This action's operation id (see [`crate::model::OperationId`]).
    pub operation_id: String,
    /// The step's id, shared by its actions.
    pub step_id: String,
    pub attempt: u32,
    pub trace_id: String,
}

/// A call to make.
#[derive(Clone)]
pub struct CallRequest {
    pub plugin: String,
    pub kind: CallKind,
    pub ctx: CallContext,
    /// JSON text of the step's input.
    pub input: String,
    /// JSON text of the step's recorded output (compensate and reconcile);
    /// `None` for a compensation when the outcome of `run` is unknown.
    pub output: Option<String>,
    /// Time limit for this attempt; the plugin's own limit applies if lower.
    pub timeout: Option<Duration>,
    pub progress: Option<ProgressSink>,
}

/// What a successful call returned.
#[derive(Clone, Debug, PartialEq)]
pub enum CallOutput {
    /// `run`'s output, JSON text.
    Ran(String),
    Compensated,
    Reconciled(Verdict),
}

/// A failed call, classified.
#[derive(Clone, Debug, PartialEq)]
pub struct CallFailure {
    pub class: FailureClass,
    pub message: String,
    /// The earliest retry the plugin asked for.
    pub retry_after_ms: Option<u64>,
}

impl CallFailure {
    pub fn new(class: FailureClass, message: impl Into<String>) -> Self {
        CallFailure {
            class,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

/// Something a plugin asked for and was refused.
#[derive(Clone, Debug, PartialEq)]
pub struct Denial {
    pub capability: String,
    pub detail: String,
}

/// Everything the engine needs to know about a call.
#[derive(Clone, Debug)]
pub struct CallReport {
    /// `name@version#digest`, or the bare name when the plugin is not installed.
    pub source: String,
    pub result: Result<CallOutput, CallFailure>,
    pub denials: Vec<Denial>,
    pub duration: Duration,
}

impl Runtime {
    /// Calls `request.kind` on the plugin. Every failure ends in the report.
    pub async fn invoke(&self, request: CallRequest) -> CallReport {
        let started = Instant::now();
        let Some(plugin) = self.plugin_info(&request.plugin) else {
            return CallReport {
                source: request.plugin.clone(),
                result: Err(CallFailure::new(
                    FailureClass::Unavailable,
                    format!("plugin '{}' is not installed", request.plugin),
                )),
                denials: Vec::new(),
                duration: started.elapsed(),
            };
        };
        let _slot = self.acquire_slot().await;
        let timeout = request
            .timeout
            .map_or(plugin.limits.timeout, |t| t.min(plugin.limits.timeout));
        let mut store = self.new_store(&plugin, &request, timeout);
        // The epoch callback stops guests that compute; this timeout stops
        // guests that wait (on outbound HTTP, say).
        let outcome = tokio::time::timeout(
            timeout.saturating_add(super::limits::EPOCH_TICK * 2),
            call_export(&mut store, &plugin, &request, timeout),
        )
        .await;
        let data = store.data_mut();
        let denials = data.take_denials();
        let result = match outcome {
            Err(_elapsed) => Err(limit_failure(&LimitHit::Time { limit: timeout })),
            Ok(Err(trap)) => Err(classify_trap(
                &trap,
                data.limiter.hit.as_ref(),
                &data.stderr,
            )),
            Ok(Ok(Err(step_error))) => Err(step_failure(step_error)),
            Ok(Ok(Ok(CallOutput::Ran(output))))
                if output.len() > plugin.limits.max_output_bytes() =>
            {
                Err(limit_failure(&LimitHit::Output {
                    limit_bytes: plugin.limits.max_output_bytes(),
                    actual_bytes: output.len(),
                }))
            }
            Ok(Ok(Ok(output))) => Ok(output),
        };
        CallReport {
            source: plugin.source.clone(),
            result,
            denials,
            duration: started.elapsed(),
        }
    }

    fn new_store(
        &self,
        plugin: &PluginInfo,
        request: &CallRequest,
        timeout: Duration,
    ) -> Store<CallState> {
        let caller = Caller {
            plugin: plugin.name.clone(),
            run_id: request.ctx.run_id.clone(),
            step: request.ctx.step.clone(),
        };
        let state = CallState::new(
            caller,
            plugin.grants.clone(),
            self.kv(),
            plugin.limits.max_kv_value_bytes(),
            request.progress.clone(),
            CallLimiter::new(&plugin.limits, timeout),
        );
        sandboxed_store(self.engine(), state)
    }
}

/// A store whose memory and time are bounded by the state's limiter: at every
/// epoch tick the guest yields to tokio, and past its deadline it is stopped.
pub(super) fn sandboxed_store(engine: &wasmtime::Engine, state: CallState) -> Store<CallState> {
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

type ExportResult = wasmtime::Result<Result<CallOutput, wit::StepError>>;

async fn call_export(
    store: &mut Store<CallState>,
    plugin: &PluginInfo,
    request: &CallRequest,
    timeout: Duration,
) -> ExportResult {
    let instance = plugin.pre.instantiate_async(&mut *store).await?;
    let h = instance.settle_plugin_handler();
    // The attempt's real deadline: the lower of the step's timeout and the
    // plugin's limit, as enforced by the limiter.
    let deadline_ms = crate::model::now_ms()
        .saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
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
                    wit::Verdict::Drifted(d) => Verdict::Drifted(d),
                    wit::Verdict::Unknown => Verdict::Unknown,
                })
            }),
    })
}

/// Calls `describe` on a freshly loaded plugin.
pub(super) async fn describe(
    store: &mut Store<CallState>,
    pre: &StepPre<CallState>,
) -> wasmtime::Result<wit::Manifest> {
    let instance = pre.instantiate_async(&mut *store).await?;
    instance
        .settle_plugin_handler()
        .call_describe(&mut *store)
        .await
}

fn step_failure(e: wit::StepError) -> CallFailure {
    match e {
        wit::StepError::Retryable(r) => CallFailure {
            class: FailureClass::Retryable,
            message: truncate(&r.message, 2000),
            retry_after_ms: r.retry_after_ms,
        },
        wit::StepError::Permanent(m) => {
            CallFailure::new(FailureClass::Permanent, truncate(&m, 2000))
        }
        wit::StepError::InvalidInput(m) => {
            CallFailure::new(FailureClass::InvalidInput, truncate(&m, 2000))
        }
    }
}

fn limit_failure(hit: &LimitHit) -> CallFailure {
    let class = match hit {
        LimitHit::Memory { .. } => FailureClass::MemoryLimit,
        LimitHit::Time { .. } => FailureClass::Timeout,
        LimitHit::Output { .. } => FailureClass::OutputLimit,
    };
    CallFailure::new(class, hit.to_string())
}

/// A trap is the host's business: say which limit caused it, if one did,
/// and what the plugin printed before it died.
fn classify_trap(
    error: &wasmtime::Error,
    hit: Option<&LimitHit>,
    stderr: &wasmtime_wasi::p2::pipe::MemoryOutputPipe,
) -> CallFailure {
    if let Some(hit) = hit {
        return limit_failure(hit);
    }
    let trap = error.downcast_ref::<Trap>().map(|t| t.to_string());
    let printed = String::from_utf8_lossy(&stderr.contents())
        .trim()
        .to_string();
    let mut message = match trap {
        Some(t) => format!("plugin trapped: {t}"),
        None => format!("plugin failed: {}", first_line(&format!("{error:?}"))),
    };
    if !printed.is_empty() {
        message.push_str(&format!("; it printed: {}", truncate(&printed, 1000)));
    }
    CallFailure::new(FailureClass::Trap, message)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}
