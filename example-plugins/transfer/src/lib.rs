//! `transfer`: moves money between two ledger accounts.
//!
//! run = one transfer on the ledger; compensate = refund it; reconcile =
//! compare what the step recorded with the ledger. The ledger's address comes
//! from the plugin's `base_url` setting; the operation id is the idempotency
//! key, so a retried or replayed call moves the money once.

use serde::{Deserialize, Serialize};
use settle_sdk::{Ctx, Manifest, RetrySuggestion, Step, StepError, Verdict, config, http};

#[derive(Deserialize, Serialize)]
pub struct Input {
    pub from: String,
    pub to: String,
    /// In minor units (cents).
    pub amount: i64,
    /// Drills only: asks the demo ledger to answer this late (it makes the
    /// transfer at once), so an attempt can time out after its effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_after_ms: Option<u64>,
}

#[derive(Deserialize, Serialize)]
pub struct Output {
    pub transfer_id: String,
    pub amount: i64,
}

#[derive(Deserialize)]
struct LedgerTransfer {
    id: String,
    amount: i64,
    refunded: bool,
}

fn base_url() -> Result<String, StepError> {
    config::require("base_url")
}

struct Transfer;

impl Step for Transfer {
    type Input = Input;
    type Output = Output;
    const COMPENSATES: bool = true;
    const RECONCILES: bool = true;

    fn manifest() -> Manifest {
        Manifest::new(
            "transfer",
            "1.0.0",
            "Moves money between two ledger accounts; refunds on compensation",
        )
        .input_schema(serde_json::json!({
            "type": "object",
            "required": ["from", "to", "amount"],
            "properties": {
                "from": {"type": "string", "minLength": 1},
                "to": {"type": "string", "minLength": 1},
                "amount": {"type": "integer", "minimum": 1},
                "answer_after_ms": {"type": "integer", "minimum": 0}
            }
        }))
        .output_schema(serde_json::json!({
            "type": "object",
            "required": ["transfer_id", "amount"],
            "properties": {"transfer_id": {"type": "string"}, "amount": {"type": "integer"}}
        }))
        .retry(RetrySuggestion {
            max_attempts: 5,
            initial_interval_ms: 200,
            backoff_coefficient: 2.0,
            max_interval_ms: 10_000,
        })
    }

    fn run(ctx: &Ctx, input: Input) -> Result<Output, StepError> {
        if input.amount <= 0 {
            return Err(StepError::invalid_input(format!(
                "amount must be positive, got {}",
                input.amount
            )));
        }
        let reply = http::post_json(
            &format!("{}/ledger/transfers", base_url()?),
            &ctx.operation_id,
            &input,
        )?;
        let t: LedgerTransfer = reply.json()?;
        Ok(Output {
            transfer_id: t.id,
            amount: t.amount,
        })
    }

    /// Refunds the transfer `run` made under the step id, whether or not its
    /// output is known. With no such transfer the ledger voids the key, so a
    /// late `run` request cannot move the money afterwards.
    fn compensate(ctx: &Ctx, _input: Input, _output: Option<Output>) -> Result<(), StepError> {
        let body = serde_json::json!({ "transfer_key": ctx.step_id });
        http::post_json(
            &format!("{}/ledger/refunds", base_url()?),
            &ctx.operation_id,
            &body,
        )?;
        Ok(())
    }

    fn reconcile(_ctx: &Ctx, _input: Input, output: Output) -> Result<Verdict, StepError> {
        let reply = http::get(&format!(
            "{}/ledger/transfers/{}",
            base_url()?,
            output.transfer_id
        ))?;
        let t: LedgerTransfer = reply.json()?;
        Ok(if t.refunded {
            Verdict::Drifted(format!("transfer {} was refunded on the ledger", t.id))
        } else if t.amount != output.amount {
            Verdict::Drifted(format!(
                "ledger says {} but the step recorded {}",
                t.amount, output.amount
            ))
        } else {
            Verdict::InSync
        })
    }
}

settle_sdk::export_step!(Transfer);
