#!/usr/bin/env bash
# The README's demo command: builds the example plugins and the host into the
# same target directory as `bash tests/run.sh` (see tests/env.sh), then runs
# `settle demo`. Arguments replace the default `--data /tmp/settle-demo`.
set -euo pipefail
cd "$(dirname "$0")"
source tests/env.sh
./example-plugins/build.sh
if [ $# -eq 0 ]; then set -- --data /tmp/settle-demo; fi
exec cargo run -p settle-cli -- demo "$@"
