//! A flow's jq expressions, run in the sandbox.
//!
//! jq can loop and grow values without bound, so expressions never run in
//! the host's own code: the host embeds the evaluator component
//! (`host/expr/guest`, built by this crate's build script) and runs every
//! batch of expressions in a fresh instance from the same pool as plugin
//! calls, under [`expression_limits`]. A program that runs out of time or
//! memory fails with a message saying which limit it hit; the host and
//! every other run carry on.
//!
//! The component is compiled on first use (and cached with the compiled
//! plugins when the cache is on), so a host whose flows use no expressions
//! never pays for it.

use crate::call::{CallError, Instantiate, classify_trap, instantiate, limit_failure};
use crate::host_imports::CallState;
use crate::limits::{CallLimiter, LimitHit, Limits};
use crate::runtime::Runtime;
use serde_json::Value;
use settle_types::executor::EvalFailure;
use std::time::Duration;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../expr/wit",
        world: "evaluator",
        exports: { default: async },
    });
}

pub(crate) use bindings::EvaluatorPre;

impl Instantiate for EvaluatorPre<CallState> {
    type Instance = bindings::Evaluator;
    fn instantiate<'a>(
        &'a self,
        store: &'a mut wasmtime::Store<CallState>,
    ) -> impl Future<Output = wasmtime::Result<Self::Instance>> + Send + 'a {
        self.instantiate_async(store)
    }
}

/// The evaluator component, built from `host/expr/guest`.
static EVALUATOR_WASM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/evaluator.wasm"));

/// How long one batch of expressions (one step's) may take, CPU and all.
/// jq over a run's context takes microseconds; this stops only loops.
pub const EXPRESSION_TIMEOUT: Duration = Duration::from_millis(500);

/// The limits of one batch of expressions.
pub fn expression_limits() -> Limits {
    Limits {
        memory_mib: 64,
        timeout: EXPRESSION_TIMEOUT,
        max_output_kib: 1024,
        ..Limits::default()
    }
}

impl Runtime {
    /// Runs each jq program on `context` in one sandboxed instance. For
    /// each program, its one value or why it has none. `Err` when the batch
    /// as a whole failed: a limit hit, no free instance slot.
    pub async fn evaluate(
        &self,
        programs: &[String],
        context: &Value,
    ) -> Result<Vec<Result<Value, String>>, EvalFailure> {
        if programs.is_empty() {
            return Ok(Vec::new());
        }
        let pre = self.evaluator().await.map_err(EvalFailure::Host)?;
        let limits = expression_limits();
        let _slot = self.acquire_slot().await;
        let mut store = self.bare_store("expressions", &limits);
        let context = context.to_string();
        // The instance first, waiting (bounded) for a pool slot: a wait
        // for room is the host's, not the programs' time.
        let instance = match instantiate(&mut store, &pre, self.stats()).await {
            Ok(instance) => instance,
            Err(CallError::PoolExhausted(reason)) => {
                return Err(EvalFailure::Host(format!(
                    "no free instance slot to evaluate expressions: {reason} (raise runtime.max_concurrent_calls in settle.toml)"
                )));
            }
            Err(CallError::Wasm(e)) => {
                return Err(EvalFailure::Host(format!(
                    "the expression evaluator does not start: {}",
                    crate::call::plain_reason(&e)
                )));
            }
        };
        store.data_mut().limiter = CallLimiter::new(&limits, limits.timeout);
        let call = instance.call_evaluate(&mut store, programs, &context);
        let outcome = tokio::time::timeout(
            limits.timeout.saturating_add(crate::limits::EPOCH_TICK * 2),
            call,
        )
        .await;
        let data = store.data_mut();
        data.finish();
        let answers = match outcome {
            Err(_elapsed) => {
                return Err(expression_failure(&LimitHit::Time {
                    limit: limits.timeout,
                }));
            }
            Ok(Err(e)) => {
                let failure = classify_trap(&e, data.limiter.hit.as_ref(), &data.stderr);
                return Err(EvalFailure::Limit(format!(
                    "expressions stopped: {}",
                    failure
                        .message
                        .replace("plugin trapped", "the evaluator trapped")
                        .replace("the plugin asked", "they asked")
                )));
            }
            Ok(Ok(answers)) => answers,
        };
        let bytes: usize = answers
            .iter()
            .map(|a| a.as_ref().map_or_else(String::len, String::len))
            .sum();
        if bytes > limits.max_output_bytes() {
            return Err(expression_failure(&LimitHit::Output {
                limit_bytes: limits.max_output_bytes(),
                actual_bytes: bytes,
            }));
        }
        Ok(answers
            .into_iter()
            .map(|answer| {
                let text = answer?;
                let value: Value = serde_json::from_str(&text).map_err(|_| {
                    format!(
                        "gave {}, which is not JSON",
                        settle_types::bounds::cut(&text, 40)
                    )
                })?;
                settle_types::bounds::check_depth(&value)
                    .map_err(|e| format!("gave a value {e}"))?;
                Ok(whole_numbers(value))
            })
            .collect())
    }

    /// The evaluator, compiled (or loaded from the cache) on first use.
    async fn evaluator(&self) -> Result<EvaluatorPre<CallState>, String> {
        let runtime = self.clone();
        self.evaluator_cell()
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || runtime.load_evaluator())
                    .await
                    .map_err(|e| format!("loading the expression evaluator failed: {e}"))?
            })
            .await
            .cloned()
    }

    fn load_evaluator(&self) -> Result<EvaluatorPre<CallState>, String> {
        let digest = crate::runtime::component_digest(EVALUATOR_WASM);
        let (component, _cached) = self
            .compile_cached(
                std::path::Path::new("<expression evaluator>"),
                EVALUATOR_WASM,
                &digest,
            )
            .map_err(|e| format!("the expression evaluator does not load: {e}"))?;
        let pre = self
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| format!("the expression evaluator does not link: {e}"))?;
        EvaluatorPre::new(pre).map_err(|e| format!("the expression evaluator does not fit: {e}"))
    }
}

/// jq computes in doubles, so `1200 / 100` is `12.0`; a plugin that takes
/// a whole number would refuse it. A number with no fraction, within the
/// range a double holds exactly, is given as the whole number it is.
fn whole_numbers(value: Value) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() <= EXACT => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(whole_numbers).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, whole_numbers(v)))
                .collect(),
        ),
        other => other,
    }
}

fn expression_failure(hit: &LimitHit) -> EvalFailure {
    EvalFailure::Limit(format!(
        "expressions stopped: {}",
        limit_failure(hit).message.replace("the plugin", "they")
    ))
}
