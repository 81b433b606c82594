#!/usr/bin/env bash
# The README's test command: builds the example plugins (wasm32-wasip2
# components) once, then runs every test of the workspace against them.
# Builds go to a shared target directory outside the clone, so the wasmtime
# host is compiled once per machine, not once per checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/settle/target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
./example-plugins/build.sh
cargo test --workspace --exclude transfer --exclude reserve-stock --exclude notify --exclude flaky --exclude noop --exclude hostile "$@"
