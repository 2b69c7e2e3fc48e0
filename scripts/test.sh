#!/usr/bin/env bash
# The test command: installs what the tests need (nats-server; chromium and
# playwright-core for the dashboard's browser tests; DuckDB for the bench's
# smoke run; aiosmtpd for the mail tests), then runs every unit,
# end-to-end and browser test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
NATS_BIN="$(bash scripts/ensure-nats.sh)"
PATH="$(dirname "$NATS_BIN"):$PATH"
export PATH
bash scripts/ensure-browser.sh
# The benchmark's smoke run (a test target) asks the same questions of our
# files with DuckDB and must get the same answers.
python3 -c 'import duckdb' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check duckdb
export BENCH_DUCKDB=required
# The password-link tests mail through a local SMTP server.
python3 -c 'import aiosmtpd' 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check aiosmtpd
# ... and takes perf samples through a broker both ways.
export BENCH_NATS=required
# The full-disk test mounts a small tmpfs, which root can.
if [ "$(id -u)" = 0 ]; then export KANADE_TEST_TMPFS=required; fi
# The run command (scripts/run-local.sh) builds into the same directory
# with the same flags, so on a fresh machine the two share one build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kanade-backend/target}"
cargo test --workspace --all-targets
