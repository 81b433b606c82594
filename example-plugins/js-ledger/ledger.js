// js-ledger: a Settle plugin in JavaScript, built with componentize-js
// against the same `wit/` as the Rust plugins.
//
// It books an amount under the step's id in the plugin's durable key-value
// state (`run`), removes the booking (`compensate`), and checks it is still
// there and unchanged (`reconcile`). Input: {"account": string, "amount":
// integer}, and "fail": true to refuse for good (to test compensation of the
// steps before).

import * as kv from "settle:plugin/kv@0.2.0";
import { write } from "settle:plugin/log@0.2.0";

const INPUT_SCHEMA = {
  type: "object",
  required: ["account", "amount"],
  properties: {
    account: { type: "string", minLength: 1 },
    amount: { type: "integer", minimum: 1 },
    fail: { type: "boolean" },
  },
};
const OUTPUT_SCHEMA = {
  type: "object",
  required: ["booking", "account", "amount"],
  properties: {
    booking: { type: "string" },
    account: { type: "string" },
    amount: { type: "integer" },
  },
};

const key = (ctx) => `booking/${ctx.stepId}`;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function parse(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw { tag: "invalid-input", val: `input is not JSON: ${e}` };
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw { tag: "invalid-input", val: "input is not an object" };
  }
  return value;
}

export const handler = {
  describe() {
    return {
      name: "js-ledger",
      version: "1.0.0",
      summary: "Books an amount in its own state; written in JavaScript",
      inputSchema: JSON.stringify(INPUT_SCHEMA),
      outputSchema: JSON.stringify(OUTPUT_SCHEMA),
      supportsCompensate: true,
      supportsReconcile: true,
      retry: undefined,
    };
  },

  run(ctx, input) {
    const request = parse(input);
    if (request.fail) {
      throw { tag: "permanent", val: `account ${request.account} refuses bookings` };
    }
    // Idempotent: a retry under the same step id finds its own booking.
    const existing = kv.get(key(ctx));
    if (existing !== undefined && existing !== null) {
      return decoder.decode(existing);
    }
    const text = JSON.stringify({
      booking: ctx.stepId,
      account: request.account,
      amount: request.amount,
    });
    kv.set(key(ctx), encoder.encode(text));
    write("info", `booked ${request.amount} on ${request.account}`);
    return text;
  },

  compensate(ctx, _input, _output) {
    // Nothing booked is nothing to undo.
    kv.delete(key(ctx));
    write("info", "booking removed");
  },

  reconcile(ctx, _input, output) {
    const stored = kv.get(key(ctx));
    if (stored === undefined || stored === null) {
      return { tag: "drifted", val: "the booking is gone" };
    }
    const kept = JSON.parse(decoder.decode(stored));
    const recorded = JSON.parse(output);
    // Field by field: the host keeps JSON, not the text's key order.
    const same = ["booking", "account", "amount"].every((k) => kept[k] === recorded[k]);
    if (!same) {
      return { tag: "drifted", val: "the booking differs from the one recorded" };
    }
    return { tag: "in-sync" };
  },
};
