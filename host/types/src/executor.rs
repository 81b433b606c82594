//! The engine's view of the runtime: calls to plugins and what a plugin says
//! about itself, in plain types. The runtime (wasmtime) implements
//! [`Executor`]; the engine never sees a WebAssembly type.

use crate::{FailureClass, Verdict};
use serde::Serialize;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The engine's view of the runtime.
pub trait Executor: Send + Sync + 'static {
    /// Calls a plugin. Never fails as a whole: every failure is in the report.
    fn call(&self, request: CallRequest) -> impl Future<Output = CallReport> + Send;
    /// An installed plugin, by name.
    fn plugin(&self, name: &str) -> Option<Arc<PluginDescriptor>>;
    /// Every installed plugin, by name.
    fn plugins(&self) -> Vec<Arc<PluginDescriptor>>;
    /// Runs a flow's jq programs on `context` in the sandbox: for each
    /// program, its value or why it has none. `Err` when the batch failed as
    /// a whole (a limit hit, no free instance slot).
    fn evaluate(
        &self,
        programs: Vec<String>,
        context: serde_json::Value,
    ) -> impl Future<Output = Result<Vec<Result<serde_json::Value, String>>, EvalFailure>> + Send
    {
        let _ = (programs, context);
        async {
            Err(EvalFailure::Host(
                "this host cannot evaluate expressions".into(),
            ))
        }
    }
}

/// Why a batch of expressions has no answers.
#[derive(Clone, Debug, PartialEq)]
pub enum EvalFailure {
    /// The host could not run them (no free instance slot, no evaluator):
    /// its own setup, held for an operator, never the flow's fault.
    Host(String),
    /// They ran into a limit of the sandbox (time, memory, output): the
    /// flow's expressions are at fault.
    Limit(String),
}

impl std::fmt::Display for EvalFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvalFailure::Host(e) | EvalFailure::Limit(e) => f.write_str(e),
        }
    }
}

/// Which export to call: one of a step's actions.
pub use crate::Action as CallKind;

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
    /// The build (component digest) to call: the one the run started
    /// with, kept when another is installed since. `None`: the build
    /// installed now.
    pub build: Option<String>,
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

/// Most downstream hosts one call reports.
pub const MAX_DOWNSTREAMS: usize = 8;

/// How a downstream host (a `wasi:http` authority) fared in one call, as
/// the host saw it on the wire: what its circuit breaker counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downstream {
    /// `host:port`, lower case.
    pub authority: String,
    /// A request to it failed: no connection, no answer before the call
    /// ended, or a 5xx or 429 answer.
    pub failed: bool,
}

/// Everything the engine needs to know about a call.
#[derive(Clone, Debug)]
pub struct CallReport {
    /// `name@version#digest`, or the bare name when the plugin is not installed.
    pub source: String,
    pub result: Result<CallOutput, CallFailure>,
    pub denials: Vec<Denial>,
    pub duration: Duration,
    /// The downstream hosts the call sent requests to (allowed ones only),
    /// each once, at most [`MAX_DOWNSTREAMS`].
    pub downstream: Vec<Downstream>,
    /// The call's HTTP exchanges, when its plugin's are recorded
    /// (`record_exchanges`), for `settle plugin replay`.
    pub exchanges: Vec<Exchange>,
}

/// The most HTTP exchanges of one call recorded.
pub const MAX_EXCHANGES: usize = 8;
/// The most bytes of one request or response body recorded.
pub const MAX_EXCHANGE_BODY_BYTES: usize = 16 * 1024;

/// One HTTP exchange of a call, as recorded for replays: bodies as text
/// (UTF-8, lossy), each at most [`MAX_EXCHANGE_BODY_BYTES`].
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct Exchange {
    pub method: String,
    pub url: String,
    /// `None`: no answer came (refused, failed, or the call ended first).
    pub status: Option<u16>,
    pub request_body: String,
    pub response_body: String,
    /// A body was longer than was kept: a replay cannot give it whole.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// What a plugin says about itself, in host types.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub summary: String,
    pub input_schema: serde_json::Value,
    pub output_schema: serde_json::Value,
    pub supports_compensate: bool,
    pub supports_reconcile: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<SuggestedRetry>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SuggestedRetry {
    pub max_attempts: u32,
    pub initial_interval_ms: u64,
    pub backoff_coefficient: f64,
    pub max_interval_ms: u64,
}

/// An installed plugin as the engine, the API and the CLI see it: who it is,
/// what it says about itself, and its schemas, compiled once.
pub struct PluginDescriptor {
    pub name: Arc<str>,
    /// `name@version#digest` (16 hex digits of the SHA-256), the source of its events.
    pub source: String,
    /// Full SHA-256 of the component's bytes.
    pub digest: String,
    pub path: PathBuf,
    pub manifest: Manifest,
    /// The limits and grants it runs under, as configured (for people).
    pub sandbox: serde_json::Value,
    /// Whether the compiled form came from the cache.
    pub from_cache: bool,
    /// Time to compile or deserialize.
    pub load_time: Duration,
    input_validator: Option<jsonschema::Validator>,
    output_validator: Option<jsonschema::Validator>,
}

impl PluginDescriptor {
    /// A descriptor; `schema_of` compiles the manifest's schemas (an empty
    /// object means none was declared).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: Arc<str>,
        source: String,
        digest: String,
        path: PathBuf,
        manifest: Manifest,
        sandbox: serde_json::Value,
        from_cache: bool,
        load_time: Duration,
    ) -> Result<Self, String> {
        let input_validator = compile_schema(&manifest.input_schema, "input")?;
        let output_validator = compile_schema(&manifest.output_schema, "output")?;
        Ok(PluginDescriptor {
            name,
            source,
            digest,
            path,
            manifest,
            sandbox,
            from_cache,
            load_time,
            input_validator,
            output_validator,
        })
    }

    /// What people may see of the plugin (API, CLI): who it is, its
    /// manifest and schemas, its limits and grants (config names only).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": &*self.name,
            "source": self.source,
            "digest": self.digest,
            "manifest": self.manifest,
            "sandbox": self.sandbox,
            "from_cache": self.from_cache,
            "load_ms": self.load_time.as_secs_f64() * 1000.0,
        })
    }

    /// Checks `input` against the plugin's input schema; every problem, with
    /// the path of the value it concerns.
    pub fn check_input(&self, input: &serde_json::Value) -> Result<(), String> {
        schema_problems(self.input_validator.as_ref(), input)
    }

    /// Checks what the plugin returned against its own output schema, so a
    /// later step never maps its input from a shape nobody promised.
    pub fn check_output(&self, output: &serde_json::Value) -> Result<(), String> {
        schema_problems(self.output_validator.as_ref(), output)
    }
}

impl std::fmt::Debug for PluginDescriptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginDescriptor")
            .field("source", &self.source)
            .field("path", &self.path)
            .finish()
    }
}

/// Compiles a schema; an empty object means none was declared.
fn compile_schema(
    schema: &serde_json::Value,
    what: &str,
) -> Result<Option<jsonschema::Validator>, String> {
    if schema.as_object().is_some_and(|o| o.is_empty()) {
        return Ok(None);
    }
    jsonschema::validator_for(schema)
        .map(Some)
        .map_err(|e| format!("{what} schema is not a valid JSON Schema: {e}").replace('\n', " "))
}

/// At most five problems of `value` against `validator`, each with the path of
/// the value it concerns; no validator means no schema was declared.
fn schema_problems(
    validator: Option<&jsonschema::Validator>,
    value: &serde_json::Value,
) -> Result<(), String> {
    let Some(validator) = validator else {
        return Ok(());
    };
    let problems: Vec<String> = validator
        .iter_errors(value)
        .take(5)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("{at}: {e}")
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
