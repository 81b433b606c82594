#!/usr/bin/env bash
# Builds every example plugin to a wasm32-wasip2 component and copies them to
# example-plugins/dist/, where settle.toml and the tests look for them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
source tests/env.sh
# The toolchain rust-toolchain.toml pins (auto-install is off on our machines).
if ! rustup show active-toolchain >/dev/null 2>&1; then
  channel=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
  rustup toolchain install "$channel" --profile minimal --component rustfmt clippy
fi
rustup target add wasm32-wasip2 >/dev/null
plugins=(transfer reserve-stock notify flaky noop hostile)
args=()
for p in "${plugins[@]}"; do args+=(-p "$p"); done
cargo build --quiet --target wasm32-wasip2 --profile plugin "${args[@]}"
mkdir -p "$here/dist"
for p in "${plugins[@]}"; do
  cp "$CARGO_TARGET_DIR/wasm32-wasip2/plugin/${p//-/_}.wasm" "$here/dist/$p.wasm"
done
echo "plugins built: $(ls "$here/dist" | tr '\n' ' ')" >&2

# Variants of `hostile` whose describe() misbehaves, for the load-time tests.
# They go to dist-hostile/, never to dist/: the demo must not load them.
variants=(describe-sleep describe-loop describe-trap describe-oom huge-name huge-version
  huge-summary huge-schema deep-schema bad-version squat-noop)
mkdir -p "$here/dist-hostile"
for v in "${variants[@]}"; do
  cargo build --quiet --target wasm32-wasip2 --profile plugin -p hostile --features "$v"
  cp "$CARGO_TARGET_DIR/wasm32-wasip2/plugin/hostile.wasm" "$here/dist-hostile/$v.wasm"
done
# Leave the plain build last in the target directory, matching dist/hostile.wasm.
cargo build --quiet --target wasm32-wasip2 --profile plugin -p hostile
echo "hostile variants built: $(ls "$here/dist-hostile" | tr '\n' ' ')" >&2
