//! `flaky`: misbehaves on demand, for tests and drills.
//!
//! Modes (`mode` in the input):
//! - `ok`: succeeds.
//! - `fail-times`: a retryable error on the first `times` attempts, then success.
//! - `fail-rate`: a retryable error with probability `rate` (deterministic per
//!   operation id and attempt, so a test sees the same sequence every time).
//! - `permanent`: a permanent error.
//! - `invalid`: an invalid-input error.
//! - `trap`: panics (the instance traps).
//! - `loop`: never returns.
//! - `oom`: allocates until memory runs out.
//! - `huge-output`: returns `size_mb` megabytes of output.
//! - `fail-compensate`: succeeds, but its compensation always fails permanently.
//! - `kv-count`: counts its calls in the host's key-value store.
//! - `bad-output`: returns output that breaks its own output schema.
//! - `progress-loop`: reports progress (50%, "halfway there"), then never returns.
//! - `ctx`: succeeds; `payload` is the call context as JSON (operation id,
//!   step id, attempt, deadline), so tests can see what the host passed.

use serde::{Deserialize, Serialize};
use settle_sdk::{Ctx, Manifest, Step, StepError};

#[derive(Deserialize, Serialize, Default)]
pub struct Input {
    #[serde(default = "ok")]
    pub mode: String,
    #[serde(default)]
    pub times: u32,
    #[serde(default)]
    pub rate: f64,
    #[serde(default)]
    pub size_mb: u32,
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
}

fn ok() -> String {
    "ok".into()
}

#[derive(Deserialize, Serialize)]
pub struct Output {
    pub attempt: u32,
    #[serde(default)]
    pub payload: String,
    #[serde(default)]
    pub count: u64,
}

/// FNV-1a: a stable pseudo-random number from the operation id and attempt.
fn roll(ctx: &Ctx) -> f64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in ctx.operation_id.bytes().chain(ctx.attempt.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % 10_000) as f64 / 10_000.0
}

struct Flaky;

impl Step for Flaky {
    type Input = Input;
    type Output = Output;
    const COMPENSATES: bool = true;

    fn manifest() -> Manifest {
        Manifest::new(
            "flaky",
            "1.0.0",
            "Fails, traps, loops or eats memory on demand",
        )
        .input_schema(serde_json::json!({
            "type": "object",
            "properties": {
                "mode": {"enum": ["ok", "fail-times", "fail-rate", "permanent", "invalid", "trap",
                                  "loop", "oom", "huge-output", "fail-compensate", "kv-count",
                                  "bad-output", "progress-loop", "ctx"]},
                "times": {"type": "integer", "minimum": 0},
                "rate": {"type": "number", "minimum": 0, "maximum": 1},
                "size_mb": {"type": "integer", "minimum": 0},
                "retry_after_ms": {"type": "integer", "minimum": 0}
            }
        }))
        .output_schema(serde_json::json!({
            "type": "object",
            "required": ["attempt"],
            "properties": {
                "attempt": {"type": "integer", "minimum": 1},
                "payload": {"type": "string"},
                "count": {"type": "integer", "minimum": 0}
            }
        }))
    }

    fn run(ctx: &Ctx, input: Input) -> Result<Output, StepError> {
        let done = |payload: String| {
            Ok(Output {
                attempt: ctx.attempt,
                payload,
                count: 0,
            })
        };
        match input.mode.as_str() {
            "ok" | "fail-compensate" => done(String::new()),
            "ctx" => done(
                serde_json::json!({
                    "operation_id": ctx.operation_id,
                    "step_id": ctx.step_id,
                    "attempt": ctx.attempt,
                    "deadline_ms": ctx.deadline_ms,
                })
                .to_string(),
            ),
            "fail-times" if ctx.attempt <= input.times => Err(StepError::Retryable {
                message: format!("planned failure {} of {}", ctx.attempt, input.times),
                retry_after_ms: input.retry_after_ms,
            }),
            "fail-times" => done(String::new()),
            "fail-rate" if roll(ctx) < input.rate => Err(StepError::retryable(format!(
                "random failure on attempt {}",
                ctx.attempt
            ))),
            "fail-rate" => done(String::new()),
            "permanent" => Err(StepError::permanent("planned permanent failure")),
            "invalid" => Err(StepError::invalid_input("planned invalid input")),
            "trap" => panic!("planned trap"),
            "bad-output" => Ok(Output {
                attempt: 0,
                payload: String::new(),
                count: 0,
            }),
            "progress-loop" | "loop" => {
                if input.mode == "progress-loop" {
                    settle_sdk::progress(0.5, "halfway there");
                }
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "huge-output" => done("x".repeat(input.size_mb as usize * 1024 * 1024)),
            "kv-count" => {
                let key = format!("count:{}", ctx.step);
                let count = settle_sdk::kv::get(&key)?
                    .and_then(|v| String::from_utf8(v).ok()?.parse::<u64>().ok())
                    .unwrap_or(0)
                    + 1;
                settle_sdk::kv::set(&key, count.to_string().as_bytes())?;
                Ok(Output {
                    attempt: ctx.attempt,
                    payload: String::new(),
                    count,
                })
            }
            other => Err(StepError::invalid_input(format!("unknown mode '{other}'"))),
        }
    }

    fn compensate(_ctx: &Ctx, input: Input, _output: Option<Output>) -> Result<(), StepError> {
        if input.mode == "fail-compensate" {
            return Err(StepError::permanent("planned compensation failure"));
        }
        Ok(())
    }
}

settle_sdk::export_step!(Flaky);
