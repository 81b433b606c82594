#!/usr/bin/env bash
# The README's test command: builds the example plugins (wasm32-wasip2
# components) once, then runs every test of the workspace against them.
# Builds go to the target directory of tests/env.sh, shared with ./demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/env.sh
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
./example-plugins/build.sh
cargo test --workspace --exclude transfer --exclude reserve-stock --exclude notify --exclude flaky --exclude noop --exclude hostile "$@"
