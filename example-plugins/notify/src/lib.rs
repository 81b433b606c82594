//! `notify`: records a message in the outbox. A sent message cannot be unsent,
//! so compensation records a correction addressed to the same recipient.

use serde::{Deserialize, Serialize};
use settle_sdk::{Ctx, Manifest, Step, StepError, config, http};

#[derive(Deserialize, Serialize)]
pub struct Input {
    pub to: String,
    pub text: String,
}

#[derive(Deserialize, Serialize)]
pub struct Output {
    pub message_id: String,
}

#[derive(Deserialize)]
struct Message {
    id: String,
}

fn send(key: &str, to: &str, text: &str) -> Result<String, StepError> {
    let base = config::require("base_url")?;
    let body = serde_json::json!({ "to": to, "text": text });
    let m: Message = http::post_json(&format!("{base}/outbox/messages"), key, &body)?.json()?;
    Ok(m.id)
}

/// The id of the message sent under idempotency key `key`, if any.
fn sent_under(key: &str) -> Result<Option<String>, StepError> {
    let base = config::require("base_url")?;
    http::get_optional(&format!("{base}/outbox/messages?idempotency_key={key}"))?
        .map(|reply| reply.json::<Message>().map(|m| m.id))
        .transpose()
}

struct Notify;

impl Step for Notify {
    type Input = Input;
    type Output = Output;
    const COMPENSATES: bool = true;

    fn manifest() -> Manifest {
        Manifest::new(
            "notify",
            "1.0.0",
            "Sends a message; compensation sends a correction",
        )
        .input_schema(serde_json::json!({
            "type": "object",
            "required": ["to", "text"],
            "properties": {"to": {"type": "string", "minLength": 1}, "text": {"type": "string"}}
        }))
        .output_schema(serde_json::json!({
            "type": "object",
            "required": ["message_id"],
            "properties": {"message_id": {"type": "string"}}
        }))
    }

    fn run(ctx: &Ctx, input: Input) -> Result<Output, StepError> {
        Ok(Output {
            message_id: send(&ctx.operation_id, &input.to, &input.text)?,
        })
    }

    /// A sent message cannot be unsent: compensation sends a correction to
    /// the same recipient, under its own operation id. When `run`'s outcome
    /// is unknown, the outbox is asked whether a message went out under the
    /// step id; if none did, there is nothing to correct.
    fn compensate(ctx: &Ctx, input: Input, output: Option<Output>) -> Result<(), StepError> {
        let message_id = match output {
            Some(o) => o.message_id,
            None => match sent_under(&ctx.step_id)? {
                Some(id) => id,
                None => return Ok(()),
            },
        };
        let text = format!(
            "Correction: please disregard message {message_id} ({})",
            input.text
        );
        send(&ctx.operation_id, &input.to, &text)?;
        Ok(())
    }
}

settle_sdk::export_step!(Notify);
