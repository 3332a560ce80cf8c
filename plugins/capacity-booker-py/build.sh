#!/usr/bin/env bash
# Builds the capacity booker (Python) as a WebAssembly component.
#   build.sh [OUT.wasm]   (default: capacity-booker-py.wasm beside this script)
# Uses the componentize-py on PATH, or $COMPONENTIZE_PY if set. $WORLD picks the world
# (default booker-scheduler: the store, no outbound HTTP; booker-scheduler-http adds
# wasi:http's outgoing handler, for rules that call a customer's system).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
wit="$(cd "$here/../../wit" && pwd)"
out="${1:-$here/capacity-booker-py.wasm}"
cpy="${COMPONENTIZE_PY:-componentize-py}"
if ! command -v "$cpy" >/dev/null 2>&1; then
    echo "build.sh: $cpy not found; pip install -r $here/requirements.txt (in a virtualenv) or set COMPONENTIZE_PY" >&2
    exit 1
fi
start=$(date +%s)
"$cpy" -d "$wit" -w "${WORLD:-booker-scheduler}" componentize app -p "$here" -o "$out"
end=$(date +%s)
size=$(wc -c <"$out" | tr -d ' ')
echo "built $out ($size bytes, $((size / 1024 / 1024)) MiB) in $((end - start)) s"
