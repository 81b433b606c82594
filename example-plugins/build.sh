#!/usr/bin/env bash
# Builds every example plugin to a wasm32-wasip2 component and copies them to
# example-plugins/dist/, where settle.toml and the tests look for them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
source tests/env.sh
rustup target add wasm32-wasip2 >/dev/null
plugins=(transfer reserve-stock notify flaky noop)
args=()
for p in "${plugins[@]}"; do args+=(-p "$p"); done
cargo build --quiet --target wasm32-wasip2 --profile plugin "${args[@]}"
mkdir -p "$here/dist"
for p in "${plugins[@]}"; do
  cp "$CARGO_TARGET_DIR/wasm32-wasip2/plugin/${p//-/_}.wasm" "$here/dist/$p.wasm"
done
echo "plugins built: $(ls "$here/dist" | tr '\n' ' ')" >&2
