#!/usr/bin/env bash
# Runs the backend on its local default (./data, http://127.0.0.1:8080,
# nats://127.0.0.1:4222). When no broker answers there it starts one
# (installing nats-server if needed) and says so. Extra arguments go to the
# backend, e.g. `--config backend.toml`.
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_BIN="$(bash scripts/ensure-nats.sh)"
NATS_PID=""
if ! (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
  mkdir -p data/nats-dev
  echo "no broker answers at nats://127.0.0.1:4222: starting '$NATS_BIN -js' there (store: data/nats-dev)" >&2
  "$NATS_BIN" -js -a 127.0.0.1 -p 4222 -sd data/nats-dev >data/nats-dev/nats.log 2>&1 &
  NATS_PID=$!
  trap '[ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null' EXIT
  for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && break; sleep 0.1; done
fi

if [ -z "${KANADE_AUTH_STATIC_TOKEN:-}" ] && [ -z "${KANADE_AUTH_DISABLE:-}" ]; then
  echo "KANADE_AUTH_STATIC_TOKEN is not set: running with KANADE_AUTH_DISABLE=1 (local development only)" >&2
  export KANADE_AUTH_DISABLE=1
fi
# Built exactly as the tests build it, so one warm target directory serves
# both (dependencies are optimised in the dev profile).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kanade-backend/target}"
cargo build --workspace --all-targets
"$CARGO_TARGET_DIR/debug/kanade-backend" "$@"
