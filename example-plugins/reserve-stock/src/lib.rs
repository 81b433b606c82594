//! `reserve-stock`: reserves items in the stock table; compensation releases
//! them. Asking for more than is in stock is a permanent failure (HTTP 409).

use serde::{Deserialize, Serialize};
use settle_sdk::{Ctx, Manifest, Step, StepError, Verdict, config, http};

#[derive(Deserialize, Serialize)]
pub struct Input {
    pub sku: String,
    pub quantity: u32,
}

#[derive(Deserialize, Serialize)]
pub struct Output {
    pub reservation_id: String,
}

#[derive(Deserialize)]
struct Reservation {
    id: String,
    released: bool,
}

fn base_url() -> Result<String, StepError> {
    config::require("base_url")
}

struct ReserveStock;

impl Step for ReserveStock {
    type Input = Input;
    type Output = Output;
    const COMPENSATES: bool = true;
    const RECONCILES: bool = true;

    fn manifest() -> Manifest {
        Manifest::new(
            "reserve-stock",
            "1.0.0",
            "Reserves items in stock; releases them on compensation",
        )
        .input_schema(serde_json::json!({
            "type": "object",
            "required": ["sku", "quantity"],
            "properties": {
                "sku": {"type": "string", "minLength": 1},
                "quantity": {"type": "integer", "minimum": 1}
            }
        }))
        .output_schema(serde_json::json!({
            "type": "object",
            "required": ["reservation_id"],
            "properties": {"reservation_id": {"type": "string"}}
        }))
    }

    fn run(ctx: &Ctx, input: Input) -> Result<Output, StepError> {
        settle_sdk::progress(
            0.5,
            &format!("reserving {} x {}", input.quantity, input.sku),
        );
        let reply = http::post_json(
            &format!("{}/stock/reservations", base_url()?),
            &ctx.operation_id,
            &input,
        )?;
        let r: Reservation = reply.json()?;
        Ok(Output {
            reservation_id: r.id,
        })
    }

    /// Releases the reservation `run` made under the step id, whether or not
    /// its output is known; with none, the stock table voids the key.
    fn compensate(ctx: &Ctx, _input: Input, _output: Option<Output>) -> Result<(), StepError> {
        let body = serde_json::json!({ "reservation_key": ctx.step_id });
        http::post_json(
            &format!("{}/stock/releases", base_url()?),
            &ctx.operation_id,
            &body,
        )?;
        Ok(())
    }

    fn reconcile(_ctx: &Ctx, _input: Input, output: Output) -> Result<Verdict, StepError> {
        let reply = http::get(&format!(
            "{}/stock/reservations/{}",
            base_url()?,
            output.reservation_id
        ))?;
        let r: Reservation = reply.json()?;
        Ok(if r.released {
            Verdict::Drifted(format!("reservation {} was released", r.id))
        } else {
            Verdict::InSync
        })
    }
}

settle_sdk::export_step!(ReserveStock);
