#!/usr/bin/env bash
# The README's test command: builds the example plugins (wasm32-wasip2
# components) once, then runs every test of the workspace against them.
# Builds go to the target directory of tests/env.sh, shared with ./demo.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/env.sh
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# The dashboard test (tests/all/browser.rs) drives a real headless Chromium
# through chromedriver: Debian's chromium and chromium-driver, installed
# once, as root or through sudo.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    echo "tests/run.sh: the dashboard test needs chromium and chromedriver; install them as root: apt-get install -y chromium chromium-driver" >&2
    exit 1
  fi
  "${as_root[@]}" apt-get install -y chromium chromium-driver \
    || { "${as_root[@]}" apt-get update && "${as_root[@]}" apt-get install -y chromium chromium-driver; }
fi
./example-plugins/build.sh
./example-plugins/build-other-languages.sh
cargo test --workspace --exclude transfer --exclude reserve-stock --exclude notify --exclude flaky --exclude noop --exclude hostile "$@"
