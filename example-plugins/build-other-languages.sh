#!/usr/bin/env bash
# Builds the example plugins written in other languages against the same
# wit/ as the Rust ones, with pinned tools it installs itself:
#   py-ledger (Python): componentize-py, from PyPI, in a virtualenv;
#   js-ledger (JavaScript): @bytecodealliance/componentize-js, from npm.
# They go to example-plugins/dist-other/, not dist/: the demo does not load
# them (a Python component is 18 MB to compile).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
source tests/env.sh
COMPONENTIZE_PY_VERSION=0.25.1
COMPONENTIZE_JS_VERSION=0.23.0
# The same place `settle plugin new --lang python|js` projects look.
tools="${SETTLE_PLUGIN_TOOLS:-${CARGO_TARGET_DIR}/../plugin-tools}"
mkdir -p "$tools" "$here/dist-other"
for tool in python3 npm node; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "build-other-languages.sh: '$tool' is needed to build the Python and JavaScript example plugins; install it (Debian: apt-get install -y python3-venv nodejs npm)" >&2
    exit 1
  }
done

venv="$tools/componentize-py-$COMPONENTIZE_PY_VERSION"
if [ ! -x "$venv/bin/componentize-py" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi
"$venv/bin/componentize-py" -d wit -w step componentize \
  -p example-plugins/py-ledger app -o "$here/dist-other/py-ledger.wasm" >/dev/null
js="$tools/componentize-js-$COMPONENTIZE_JS_VERSION"
if [ ! -x "$js/node_modules/.bin/componentize-js" ]; then
  mkdir -p "$js"
  npm install --silent --no-audit --no-fund --prefix "$js" \
    "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION" >/dev/null
fi
"$js/node_modules/.bin/componentize-js" --wit wit -n step \
  -o "$here/dist-other/js-ledger.wasm" example-plugins/js-ledger/ledger.js >/dev/null
echo "other-language plugins built: $(ls "$here/dist-other" | tr '\n' ' ')" >&2
