#!/usr/bin/env bash
# The test command: installs what the tests need (nats-server), then runs
# every unit and end-to-end test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
NATS_BIN="$(bash scripts/ensure-nats.sh)"
PATH="$(dirname "$NATS_BIN"):$PATH"
export PATH
cargo test --workspace --all-targets
