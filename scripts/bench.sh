#!/usr/bin/env bash
# Side-by-side benchmark: the SQLite design vs this store, one synthetic
# fleet, one run. `bash scripts/bench.sh full` for the README table (about
# 20 M rows; needs ~4 GB free in $BENCH_DIR, default /tmp), `quick` for a
# smoke run. Uses the warm test build (dependencies and the engine are
# optimised there) instead of a separate release build of DataFusion.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kanade-backend/target}"
scale="${1:-quick}"
bin=$(cargo test --workspace --all-targets --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "compare" and m.get("executable"):
        print(m["executable"])')
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)" >&2
exec "$bin" --scale "$scale" --dir "${BENCH_DIR:-/tmp}"
