//! # settle-sdk: write Settle plugins in Rust
//!
//! A Settle plugin is one WebAssembly component that performs one change in the
//! outside world (`run`), can undo it (`compensate`) and can check that the
//! outside world still agrees with it (`reconcile`). This crate hides the
//! component plumbing: implement [`Step`] with typed serde input and output,
//! export it with [`export_step!`], and build with
//! `cargo build --target wasm32-wasip2 --release`.
//!
//! ```ignore
//! use serde::{Deserialize, Serialize};
//! use settle_sdk::{Ctx, Manifest, Step, StepError, http};
//!
//! #[derive(Deserialize, Serialize)]
//! struct Input { account: String, amount: i64 }
//! #[derive(Deserialize, Serialize)]
//! struct Output { transfer_id: String }
//!
//! struct Debit;
//!
//! impl Step for Debit {
//!     type Input = Input;
//!     type Output = Output;
//!
//!     fn manifest() -> Manifest {
//!         Manifest::new("debit", "1.0.0", "Takes money from an account")
//!     }
//!
//!     fn run(ctx: &Ctx, input: Input) -> Result<Output, StepError> {
//!         let base = settle_sdk::config::get("base_url")
//!             .ok_or_else(|| StepError::permanent("config 'base_url' is not set"))?;
//!         // The operation id is the idempotency key: a retried call has no second effect.
//!         let reply = http::post_json(&format!("{base}/debit"), &ctx.operation_id, &input)?;
//!         Ok(Output { transfer_id: reply.json::<serde_json::Value>()?["id"].to_string() })
//!     }
//! }
//!
//! settle_sdk::export_step!(Debit);
//! ```
//!
//! Errors: return [`StepError::retryable`] for what may pass (a timeout, a 503),
//! [`StepError::permanent`] for what never will, [`StepError::invalid_input`]
//! when the input itself is wrong. A panic traps the instance; the host counts it
//! as a failed attempt and retries it like a retryable error.

#![allow(unsafe_code)] // generated component bindings

pub mod http;
/// The harness for a plugin's own tests (native builds only).
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        // The SDK carries its own copy of the contract (`wit/` at the top of
        // the repository is the source; a test keeps the two equal), so it
        // builds as a dependency outside this repository too.
        path: "wit",
        world: "step",
        pub_export_macro: true,
        export_macro_name: "__export_step_world",
        default_bindings_module: "settle_sdk::bindings",
    });
}

use bindings::exports::settle::plugin::handler as wit;
use bindings::settle::plugin::types as wit_types;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use serde;
pub use serde_json;

/// What the host tells the plugin about the call in progress.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub run_id: String,
    pub flow: String,
    pub step: String,
    /// This action's id (run, compensate and reconcile each have their own),
    /// stable across attempts and replays: pass it on as the idempotency key.
    pub operation_id: String,
    /// The step's id, shared by its actions; equal to `operation_id` in `run`.
    /// `compensate` finds what `run` did under it when `run`'s output is unknown.
    pub step_id: String,
    pub attempt: u32,
    pub trace_id: String,
    /// Unix milliseconds after which the host abandons this attempt.
    pub deadline_ms: u64,
}

impl From<wit_types::CallContext> for Ctx {
    fn from(c: wit_types::CallContext) -> Self {
        Ctx {
            run_id: c.run_id,
            flow: c.flow,
            step: c.step,
            operation_id: c.operation_id,
            step_id: c.step_id,
            attempt: c.attempt,
            trace_id: c.trace_id,
            deadline_ms: c.deadline_ms,
        }
    }
}

/// A failure, classified by what the host must do about it.
#[derive(Debug, Clone, PartialEq)]
pub enum StepError {
    /// May pass on a later attempt; the host retries per the step's policy.
    Retryable {
        message: String,
        retry_after_ms: Option<u64>,
    },
    /// Will never pass: the host stops retrying and compensates.
    Permanent(String),
    /// The input is wrong: the host stops retrying and compensates.
    InvalidInput(String),
}

impl StepError {
    pub fn retryable(message: impl Into<String>) -> Self {
        StepError::Retryable {
            message: message.into(),
            retry_after_ms: None,
        }
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        StepError::Permanent(message.into())
    }
    pub fn invalid_input(message: impl Into<String>) -> Self {
        StepError::InvalidInput(message.into())
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::Retryable { message, .. } => write!(f, "retryable: {message}"),
            StepError::Permanent(m) => write!(f, "permanent: {m}"),
            StepError::InvalidInput(m) => write!(f, "invalid input: {m}"),
        }
    }
}

impl From<StepError> for wit_types::StepError {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Retryable {
                message,
                retry_after_ms,
            } => wit_types::StepError::Retryable(wit_types::RetryableError {
                message,
                retry_after_ms,
            }),
            StepError::Permanent(m) => wit_types::StepError::Permanent(m),
            StepError::InvalidInput(m) => wit_types::StepError::InvalidInput(m),
        }
    }
}

/// What `reconcile` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    InSync,
    Drifted(String),
    Unknown,
}

/// The retry policy a plugin suggests; a flow may override it.
#[derive(Debug, Clone)]
pub struct RetrySuggestion {
    pub max_attempts: u32,
    pub initial_interval_ms: u64,
    pub backoff_coefficient: f64,
    pub max_interval_ms: u64,
}

/// Who the plugin is and what it takes and gives.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub summary: String,
    /// JSON Schema of the input. Defaults to "any object".
    pub input_schema: serde_json::Value,
    /// JSON Schema of the output. Defaults to "any object".
    pub output_schema: serde_json::Value,
    pub retry: Option<RetrySuggestion>,
}

impl Manifest {
    pub fn new(name: &str, version: &str, summary: &str) -> Self {
        Manifest {
            name: name.into(),
            version: version.into(),
            summary: summary.into(),
            input_schema: serde_json::json!({"type": "object"}),
            output_schema: serde_json::json!({"type": "object"}),
            retry: None,
        }
    }
    pub fn input_schema(mut self, schema: serde_json::Value) -> Self {
        self.input_schema = schema;
        self
    }
    pub fn output_schema(mut self, schema: serde_json::Value) -> Self {
        self.output_schema = schema;
        self
    }
    pub fn retry(mut self, retry: RetrySuggestion) -> Self {
        self.retry = Some(retry);
        self
    }
}

/// One step: the trait a plugin implements.
pub trait Step {
    type Input: DeserializeOwned;
    type Output: Serialize + DeserializeOwned;

    fn manifest() -> Manifest;

    /// Make the change. Must be idempotent under `ctx.operation_id`.
    fn run(ctx: &Ctx, input: Self::Input) -> Result<Self::Output, StepError>;

    /// Whether [`Step::compensate`] is implemented.
    const COMPENSATES: bool = false;
    /// Undo what `run` did. Must be idempotent under `ctx.operation_id`.
    ///
    /// `output` is `None` when the outcome of `run` is unknown (it timed out,
    /// trapped or was interrupted after it began): `run` may or may not have
    /// had its effect. Look the effect up under `ctx.step_id` (the idempotency
    /// key `run` used) and return `Ok(())` when there is nothing to undo.
    fn compensate(
        _ctx: &Ctx,
        _input: Self::Input,
        _output: Option<Self::Output>,
    ) -> Result<(), StepError> {
        Err(StepError::permanent("this plugin cannot compensate"))
    }

    /// Whether [`Step::reconcile`] is implemented.
    const RECONCILES: bool = false;
    /// Compare what `run` recorded with the outside world.
    fn reconcile(
        _ctx: &Ctx,
        _input: Self::Input,
        _output: Self::Output,
    ) -> Result<Verdict, StepError> {
        Ok(Verdict::Unknown)
    }
}

fn decode<T: DeserializeOwned>(what: &str, json: &str) -> Result<T, StepError> {
    serde_json::from_str(json).map_err(|e| StepError::invalid_input(format!("{what}: {e}")))
}

/// Adapts a [`Step`] to the component's exports. Use [`export_step!`].
#[doc(hidden)]
pub struct Adapter<S>(std::marker::PhantomData<S>);

impl<S: Step> wit::Guest for Adapter<S> {
    fn describe() -> wit_types::Manifest {
        let m = S::manifest();
        wit_types::Manifest {
            name: m.name,
            version: m.version,
            summary: m.summary,
            input_schema: m.input_schema.to_string(),
            output_schema: m.output_schema.to_string(),
            supports_compensate: S::COMPENSATES,
            supports_reconcile: S::RECONCILES,
            retry: m.retry.map(|r| wit_types::RetrySuggestion {
                max_attempts: r.max_attempts,
                initial_interval_ms: r.initial_interval_ms,
                backoff_coefficient: r.backoff_coefficient,
                max_interval_ms: r.max_interval_ms,
            }),
        }
    }

    fn run(ctx: wit_types::CallContext, input: String) -> Result<String, wit_types::StepError> {
        let input = decode::<S::Input>("input", &input)?;
        let output = S::run(&ctx.into(), input)?;
        serde_json::to_string(&output)
            .map_err(|e| StepError::permanent(format!("output cannot be encoded: {e}")).into())
    }

    fn compensate(
        ctx: wit_types::CallContext,
        input: String,
        output: Option<String>,
    ) -> Result<(), wit_types::StepError> {
        let input = decode::<S::Input>("input", &input)?;
        // An output that no longer decodes (the plugin's output type changed)
        // is treated like an unknown outcome: look the effect up by step id.
        let output = output.and_then(|o| serde_json::from_str::<S::Output>(&o).ok());
        Ok(S::compensate(&ctx.into(), input, output)?)
    }

    fn reconcile(
        ctx: wit_types::CallContext,
        input: String,
        output: String,
    ) -> Result<wit_types::Verdict, wit_types::StepError> {
        let input = decode::<S::Input>("input", &input)?;
        let output = decode::<S::Output>("recorded output", &output)?;
        Ok(match S::reconcile(&ctx.into(), input, output)? {
            Verdict::InSync => wit_types::Verdict::InSync,
            Verdict::Drifted(d) => wit_types::Verdict::Drifted(d),
            Verdict::Unknown => wit_types::Verdict::Unknown,
        })
    }
}

/// Exports a type implementing [`Step`] as the plugin's component exports.
#[macro_export]
macro_rules! export_step {
    ($step:ty) => {
        type __SettleStepAdapter = $crate::Adapter<$step>;
        $crate::bindings::__export_step_world!(__SettleStepAdapter with_types_in $crate::bindings);
    };
}

/// Structured logs, attributed by the host to the run, step and plugin.
pub mod log {
    use crate::bindings::settle::plugin::log::{Level, write};
    pub fn debug(message: &str) {
        write(Level::Debug, message)
    }
    pub fn info(message: &str) {
        write(Level::Info, message)
    }
    pub fn warn(message: &str) {
        write(Level::Warn, message)
    }
    pub fn error(message: &str) {
        write(Level::Error, message)
    }
}

/// Report how far the call has got; shown in the run's status.
pub fn progress(fraction: f32, message: &str) {
    bindings::settle::plugin::progress::report(fraction, message)
}

/// Settings the operator gave this plugin in `settle.toml`.
pub mod config {
    pub fn get(key: &str) -> Option<String> {
        crate::bindings::settle::plugin::config::get(key)
    }

    /// A setting the plugin cannot work without: its absence is a permanent
    /// error naming the key (the operator must add it to `settle.toml`).
    pub fn require(key: &str) -> Result<String, crate::StepError> {
        get(key).ok_or_else(|| {
            crate::StepError::permanent(format!("setting '{key}' is not configured"))
        })
    }
}

/// Durable key-value state kept by the host for this plugin alone.
pub mod kv {
    use crate::StepError;
    use crate::bindings::settle::plugin::kv::{self as wit, KvError};

    fn to_step_error(e: KvError) -> StepError {
        match e {
            KvError::Denied => {
                StepError::permanent("key-value state is not granted to this plugin")
            }
            KvError::TooLarge(m) => StepError::permanent(format!("key-value entry too large: {m}")),
            KvError::Store(m) => StepError::retryable(format!("key-value store failed: {m}")),
        }
    }

    pub fn get(key: &str) -> Result<Option<Vec<u8>>, StepError> {
        wit::get(key).map_err(to_step_error)
    }
    pub fn set(key: &str, value: &[u8]) -> Result<(), StepError> {
        wit::set(key, value).map_err(to_step_error)
    }
    pub fn delete(key: &str) -> Result<(), StepError> {
        wit::delete(key).map_err(to_step_error)
    }
}
