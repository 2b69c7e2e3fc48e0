#!/usr/bin/env bash
# Side-by-side benchmark: the SQLite design vs this store, one synthetic
# fleet, one run. `bash scripts/bench.sh full` for the README table (about
# 20 M rows; needs ~4 GB free in $BENCH_DIR, default /tmp), `quick` for a
# smoke run. Further arguments go to the benchmark (`--only inventory`).
#
# `full` measures the release build (as it ships; the first build of
# DataFusion in release takes ~20 min on 2 cores). `quick` uses the warm
# test build. BENCH_BUILD=release|test overrides the choice.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kanade-backend/target}"
# The capture section runs a nats-server.
PATH="$(dirname "$(bash scripts/ensure-nats.sh)"):$PATH"
export PATH
scale="${1:-quick}"
build="${BENCH_BUILD:-$([ "$scale" = full ] && echo release || echo test)}"
if [ "$build" = release ]; then
  cmd=(cargo bench --workspace --bench compare --no-run --message-format=json)
else
  cmd=(cargo test --workspace --all-targets --no-run --message-format=json)
fi
bin=$("${cmd[@]}" 2>/dev/null | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "compare" and m.get("executable"):
        print(m["executable"])')
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); build: $build" >&2
exec "$bin" --scale "$scale" --dir "${BENCH_DIR:-/tmp}" "${@:2}"
