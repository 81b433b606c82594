//! `noop`: does nothing and returns at once. Measures the host's own cost per
//! step (`settle bench`).

use serde::{Deserialize, Serialize};
use settle_sdk::{Ctx, Manifest, Step, StepError};

#[derive(Deserialize, Serialize)]
pub struct Echo(serde_json::Value);

struct Noop;

impl Step for Noop {
    type Input = Echo;
    type Output = Echo;
    const COMPENSATES: bool = true;

    fn manifest() -> Manifest {
        Manifest::new("noop", "1.0.0", "Returns its input; for benchmarks")
            .input_schema(serde_json::json!({}))
            .output_schema(serde_json::json!({}))
    }

    fn run(_ctx: &Ctx, input: Echo) -> Result<Echo, StepError> {
        Ok(input)
    }

    fn compensate(_ctx: &Ctx, _input: Echo, _output: Option<Echo>) -> Result<(), StepError> {
        Ok(())
    }
}

settle_sdk::export_step!(Noop);
