"""py-ledger: a Settle plugin in Python, built with componentize-py against
the same `wit/` as the Rust plugins.

It books an amount under the step's id in the plugin's durable key-value
state (`run`), removes the booking (`compensate`), and checks it is still
there and unchanged (`reconcile`). Input: {"account": str, "amount": int},
and "fail": true to refuse for good (to test compensation of the steps
before).
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import kv, log, types

INPUT_SCHEMA = {
    "type": "object",
    "required": ["account", "amount"],
    "properties": {
        "account": {"type": "string", "minLength": 1},
        "amount": {"type": "integer", "minimum": 1},
        "fail": {"type": "boolean"},
    },
}
OUTPUT_SCHEMA = {
    "type": "object",
    "required": ["booking", "account", "amount"],
    "properties": {
        "booking": {"type": "string"},
        "account": {"type": "string"},
        "amount": {"type": "integer"},
    },
}


def key(ctx: types.CallContext) -> str:
    return "booking/" + ctx.step_id


def parse(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise Err(types.StepError_InvalidInput(f"input is not JSON: {e}"))
    if not isinstance(value, dict):
        raise Err(types.StepError_InvalidInput("input is not an object"))
    return value


class Handler(exports.Handler):
    def describe(self) -> types.Manifest:
        return types.Manifest(
            name="py-ledger",
            version="1.0.0",
            summary="Books an amount in its own state; written in Python",
            input_schema=json.dumps(INPUT_SCHEMA),
            output_schema=json.dumps(OUTPUT_SCHEMA),
            supports_compensate=True,
            supports_reconcile=True,
            retry=None,
        )

    def run(self, ctx: types.CallContext, input: str) -> str:
        request = parse(input)
        if request.get("fail"):
            raise Err(types.StepError_Permanent(f"account {request['account']} refuses bookings"))
        booking = {
            "booking": ctx.step_id,
            "account": request["account"],
            "amount": request["amount"],
        }
        # Idempotent: a retry under the same step id finds its own booking.
        existing = kv.get(key(ctx))
        if existing is not None:
            return existing.decode()
        text = json.dumps(booking, separators=(",", ":"))
        kv.set(key(ctx), text.encode())
        log.write(log.Level.INFO, f"booked {request['amount']} on {request['account']}")
        return text

    def compensate(self, ctx: types.CallContext, input: str, output) -> None:
        # Nothing booked is nothing to undo.
        kv.delete(key(ctx))
        log.write(log.Level.INFO, "booking removed")

    def reconcile(self, ctx: types.CallContext, input: str, output: str) -> types.Verdict:
        stored = kv.get(key(ctx))
        if stored is None:
            return types.Verdict_Drifted("the booking is gone")
        if json.loads(stored) != json.loads(output):
            return types.Verdict_Drifted("the booking differs from the one recorded")
        return types.Verdict_InSync()
