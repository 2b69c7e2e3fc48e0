#!/usr/bin/env bash
# Maintenance script: NOT run by CI, and it needs no cargo build.
#
# Produces tests/fixtures/kanade-0101.db: a small SQLite database written by
# the REAL upstream kanade-backend 0.101.0 (migrated schema, _sqlx_migrations
# with upstream checksums, and rows projected from real traffic). It starts a
# private nats-server, the upstream backend, two upstream kanade-agent 0.101.0
# processes (fixture-pc-01, fixture-pc-02) and drives them with the upstream
# `kanade` CLI:
#   - agent config (10s heartbeat / host perf, process perf on, top 10)
#   - jobs hello-fixture (exit 0), fail-fixture (exit 3), check-fixture
#     (check: ok on pc-01, fail on pc-02, with an alert) exec'd on both PCs
#   - fail-fixture revoked, exec'd again (agents report skipped, exit 126),
#     unrevoked
#   - a per_pc every 1m schedule of hello-fixture (one scheduler fire)
#   - agent metadata, a group membership, an operator account, a ping,
#     two ad-hoc `kanade run`s (one sh, one powershell that cannot spawn)
# Then it stops everything with SIGINT, copies the DB with VACUUM INTO (WAL
# checkpointed, journal_mode switched to DELETE so no sidecars are needed),
# trims perf tables to at most HOST_PERF_KEEP / PROCESS_PERF_KEEP rows
# (newest kept) and VACUUMs again.
#
# Needs: the three upstream 0.101.0 binaries below, nats-server >= 2.10
# (scripts/ensure-nats.sh), curl, python3. Every process it starts is killed
# on exit; all state lives under $WORK (wiped at start).
#
# Usage: scripts/build-0101-fixture.sh            (from anywhere)
set -euo pipefail

BACKEND_BIN="${BACKEND_BIN:-/opt/kanade-0101-backend/bin/kanade-backend}"
CLI_BIN="${CLI_BIN:-/opt/kanade-0101/bin/kanade}"
AGENT_BIN="${AGENT_BIN:-/opt/kanade-0101/bin/kanade-agent}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
NATS_BIN="${NATS_BIN:-$(bash "$REPO/scripts/ensure-nats.sh")}"

WORK="${WORK:-/tmp/up0101}"
OUT="${OUT:-$REPO/tests/fixtures/kanade-0101.db}"
NATS_PORT="${NATS_PORT:-14222}"
NATS_MON_PORT="${NATS_MON_PORT:-18222}"
HTTP_PORT="${HTTP_PORT:-18090}"
STATIC_TOKEN="fixture-token"
JWT_SECRET="fixture-jwt-secret-0123456789abcdef"
ADMIN_PASSWORD="fixture-admin-pw"      # bootstrap `admin` (must_change_pw=1)
ALICE_PASSWORD="fixture-alice-pw-123"  # operator `alice`
PCS=(fixture-pc-01 fixture-pc-02)
PERF_SECONDS="${PERF_SECONDS:-110}"    # minimum agent run time
HOST_PERF_KEEP=200
PROCESS_PERF_KEEP=500

DB="$WORK/backend.db"
PIDS=()

log() { printf '[fixture %s] %s\n' "$(date -u +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

stop_pid() { # pid [seconds]: SIGINT, wait, then SIGKILL
  local pid=$1 t=${2:-20}
  kill -0 "$pid" 2>/dev/null || return 0
  kill -INT "$pid" 2>/dev/null || true
  for _ in $(seq 1 $((t * 10))); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  log "pid $pid ignored SIGINT for ${t}s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[$i]}" 10; done
}
trap cleanup EXIT

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() { # seconds description command...
  local t=$1 what=$2; shift 2
  for _ in $(seq 1 $((t * 2))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  die "timed out after ${t}s waiting for $what"
}
sql() { python3 - "$DB" "$1" <<'PY'
import sqlite3, sys
con = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=10)
for row in con.execute(sys.argv[2]):
    print("|".join("" if v is None else str(v) for v in row))
PY
}
at_least() { [ "$(sql "$1")" -ge "$2" ]; } # query threshold

for bin in "$BACKEND_BIN" "$CLI_BIN" "$AGENT_BIN" "$NATS_BIN"; do
  [ -x "$bin" ] || command -v "$bin" >/dev/null || die "missing binary: $bin"
done
"$BACKEND_BIN" --version | grep -q ' 0\.101\.0$' || die "backend is not 0.101.0"
KANADE_NO_AUTOUPDATE=1 "$CLI_BIN" --version | grep -q ' 0\.101\.0$' || die "CLI is not 0.101.0"
for p in "$NATS_PORT" "$NATS_MON_PORT" "$HTTP_PORT"; do
  port_busy "$p" && die "port $p is already in use (override NATS_PORT / NATS_MON_PORT / HTTP_PORT)"
done

rm -rf "$WORK"
mkdir -p "$WORK"/{js,logs,home/.config,backend-data,jobs,schedules}

# ── 1. nats-server ────────────────────────────────────────────────────
"$NATS_BIN" -js -a 127.0.0.1 -p "$NATS_PORT" -m "$NATS_MON_PORT" -sd "$WORK/js" \
  >"$WORK/logs/nats.log" 2>&1 &
PIDS+=($!)
wait_for 20 "nats-server" curl -sf "http://127.0.0.1:$NATS_MON_PORT/healthz"
log "nats-server up on :$NATS_PORT (monitor :$NATS_MON_PORT)"

# ── 2. upstream backend ───────────────────────────────────────────────
cat >"$WORK/backend.toml" <<EOF
[server]
bind = "127.0.0.1:$HTTP_PORT"

[nats]
url = "nats://127.0.0.1:$NATS_PORT"
monitor_url = "http://127.0.0.1:$NATS_MON_PORT"

[db]
sqlite_path = "$DB"

[log]
path = "$WORK/logs/backend.log"
level = "info"
EOF
# KANADE_AGENT_DATA_DIR: the backend keeps its boot sentinel in data_dir(),
# which would otherwise be /var/lib/kanade.
env HOME="$WORK/home" XDG_CONFIG_HOME="$WORK/home/.config" \
  KANADE_AGENT_DATA_DIR="$WORK/backend-data" \
  KANADE_AUTH_STATIC_TOKEN="$STATIC_TOKEN" \
  KANADE_JWT_SECRET="$JWT_SECRET" \
  KANADE_BOOTSTRAP_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
  NO_COLOR=1 RUST_LOG=info \
  "$BACKEND_BIN" --config "$WORK/backend.toml" >"$WORK/logs/backend.out" 2>&1 &
PIDS+=($!)
BACKEND_PID=$!
wait_for 60 "backend /health" curl -sf "http://127.0.0.1:$HTTP_PORT/health"
grep -q 'sqlite migrations applied' "$WORK/logs/backend.out" || die "backend did not log its migrations"
grep -q 'seeded bootstrap admin' "$WORK/logs/backend.out" || die "backend did not seed the bootstrap admin"
log "backend up on :$HTTP_PORT"

# ── CLI environment ───────────────────────────────────────────────────
export HOME="$WORK/home" XDG_CONFIG_HOME="$WORK/home/.config"
export KANADE_NO_AUTOUPDATE=1 NO_COLOR=1 RUST_LOG=warn
export KANADE_BACKEND_URL="http://127.0.0.1:$HTTP_PORT"
export KANADE_NATS_URL="nats://127.0.0.1:$NATS_PORT"
export KANADE_AUTH_TOKEN="$STATIC_TOKEN"
k() { log "kanade $*"; "$CLI_BIN" "$@"; }

# Agent cadence first, so the agents pick it up at boot.
k config set heartbeat_interval=10s
k config set host_perf_interval=10s
k config set process_perf_enabled=true
k config set process_perf_top_n=10

# ── 3. two upstream agents ────────────────────────────────────────────
for pc in "${PCS[@]}"; do
  d="$WORK/agents/$pc"
  mkdir -p "$d/data"
  cat >"$d/agent.toml" <<EOF
[agent]
id       = "$pc"
nats_url = "nats://127.0.0.1:$NATS_PORT"

[log]
path  = "$d/agent.log"
level = "info"
EOF
  # KANADE_KLP_SOCKET_PATH: each agent gets its own Client App socket
  # (the default /run/kanade/agent.sock would be shared and left behind).
  env KANADE_AGENT_DATA_DIR="$d/data" KANADE_KLP_SOCKET_PATH="$d/agent.sock" RUST_LOG=info \
    "$AGENT_BIN" --config "$d/agent.toml" >"$d/agent.out" 2>&1 &
  PIDS+=($!)
done
AGENTS_STARTED=$SECONDS
wait_for 60 "2 agents in the agents table" at_least "select count(*) from agents" 2
log "both agents heartbeat"

# ── 4. CLI traffic ────────────────────────────────────────────────────
cat >"$WORK/jobs/hello-fixture.yaml" <<'EOF'
id: hello-fixture
version: 0.1.0
description: fixture job that succeeds
execute:
  shell: sh
  script: "echo hello-fixture"
  timeout: 30s
EOF
cat >"$WORK/jobs/fail-fixture.yaml" <<'EOF'
id: fail-fixture
version: 0.1.0
description: fixture job that exits 3
execute:
  shell: sh
  script: "echo about-to-fail >&2; exit 3"
  timeout: 30s
EOF
# The agent's environment reaches the script, so its data dir tells the
# two PCs apart (both run on this host).
cat >"$WORK/jobs/check-fixture.yaml" <<'EOF'
id: check-fixture
version: 0.1.0
description: fixture health check (ok on fixture-pc-01, fail on fixture-pc-02)
execute:
  shell: sh
  timeout: 30s
  script: |
    case "${KANADE_AGENT_DATA_DIR:-}" in
      *fixture-pc-02*) echo '{"status":"fail","detail":"fixture check failed"}' ;;
      *) echo '{"status":"ok","detail":"fixture check passed"}' ;;
    esac
check:
  name: fixture_check
  label: Fixture check
  alert:
    on: [fail]
    notify_user: true
    title: "{label} failed on {pc_id}"
    body: "{detail}"
EOF
cat >"$WORK/schedules/hello-fixture-patrol.yaml" <<'EOF'
id: hello-fixture-patrol
when:
  per_pc: { every: 1m }
job_id: hello-fixture
enabled: true
target:
  pcs: [fixture-pc-01, fixture-pc-02]
EOF

TARGETS="$(IFS=,; echo "${PCS[*]}")"
k job create "$WORK"/jobs/*.yaml
k exec hello-fixture --pcs "$TARGETS"
k exec fail-fixture --pcs "$TARGETS"
k exec check-fixture --pcs "$TARGETS"
wait_for 30 "6 finished execution_results" \
  at_least "select count(*) from execution_results where finished_at is not null" 6
log "6 results projected"

k revoke fail-fixture
k exec fail-fixture --pcs "$TARGETS"   # agents skip it (exit 126, skipped=1)
sleep 3
k unrevoke fail-fixture

k schedule create "$WORK/schedules/hello-fixture-patrol.yaml"
k meta set fixture-pc-01 site Osaka
k meta set fixture-pc-02 site Tokyo
k meta set fixture-pc-01 owner alice
k group add fixture-pc-01 canary
printf '%s\n' "$ALICE_PASSWORD" | k account create alice --role operator --password-stdin
k ping fixture-pc-01
k run --shell sh --timeout 30 fixture-pc-02 -- 'echo via-run'
# Default shell is powershell: absent on Linux, the agent reports a spawn
# failure (exit -1). Kept on purpose; the CLI exits non-zero for it.
k run --timeout 30 fixture-pc-02 -- 'echo via-run' || true

# ── let perf accumulate and the schedule fire once ────────────────────
log "waiting for a scheduler fire and >= ${PERF_SECONDS}s of agent traffic"
for _ in $(seq 1 200); do
  fired="$(sql "select count(*) from executions where initiated_by = 'scheduler' and status = 'completed'")"
  [ "$fired" -ge 1 ] && [ $((SECONDS - AGENTS_STARTED)) -ge "$PERF_SECONDS" ] && break
  sleep 1
done
[ "$fired" -ge 1 ] || die "the schedule never fired"
sleep 3 # let the last results / heartbeats land

# ── 5. graceful stop: agents, backend, broker ─────────────────────────
cleanup
PIDS=()
grep -q 'SQLite pools closed' "$WORK/logs/backend.out" || die "backend did not shut down cleanly"
log "all processes stopped"

mkdir -p "$(dirname "$OUT")"
python3 - "$DB" "$OUT" "$HOST_PERF_KEEP" "$PROCESS_PERF_KEEP" <<'PY'
import os, sqlite3, sys
src, out, host_keep, proc_keep = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tmp = out + ".tmp"
for p in (tmp, out):
    if os.path.exists(p):
        os.remove(p)
con = sqlite3.connect(src)
con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
con.execute("VACUUM INTO ?", (tmp,))
con.close()
c = sqlite3.connect(tmp)
# No id column (PRIMARY KEY (pc_id, at[, pid])): keep the newest by `at`.
c.execute("DELETE FROM host_perf_samples WHERE rowid NOT IN (SELECT rowid FROM "
          "host_perf_samples ORDER BY at DESC, pc_id LIMIT ?)", (host_keep,))
c.execute("DELETE FROM process_perf_samples WHERE rowid NOT IN (SELECT rowid FROM "
          "process_perf_samples ORDER BY at DESC, pc_id, pid LIMIT ?)", (proc_keep,))
c.commit()
c.execute("PRAGMA journal_mode=DELETE")
c.execute("VACUUM")
assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
c.close()
os.replace(tmp, out)
PY
log "wrote $OUT ($(stat -c %s "$OUT") bytes)"
python3 - "$OUT" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
for (t,) in c.execute("select name from sqlite_master where type='table' order by name"):
    n = c.execute('select count(*) from "%s"' % t).fetchone()[0]
    print(f"  {t}: {n}")
PY
