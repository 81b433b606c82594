# Sourced by every script the README names (demo.sh, tests/run.sh,
# example-plugins/build.sh): the one place that picks where cargo builds.
# A shared directory outside the clone means wasmtime is compiled once per
# machine, not once per command or per checkout. Set CARGO_TARGET_DIR to
# choose another.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/settle/target}
