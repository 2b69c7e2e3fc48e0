#!/usr/bin/env bash
# Makes sure the dashboard's browser tests can run: Debian's chromium at
# /usr/bin/chromium (playwright cannot download its own browser here) and
# playwright-core from tests/browser/package-lock.json. Quiet when both
# are already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
  echo "chromium not found: installing Debian's chromium" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >&2
fi

command -v node >/dev/null || { echo "node is needed for the browser tests" >&2; exit 1; }
want="$(node -p "require('./tests/browser/package.json').dependencies['playwright-core']")"
have="$(node -p "require('./tests/browser/node_modules/playwright-core/package.json').version" 2>/dev/null || echo none)"
if [ "$want" != "$have" ]; then
  echo "installing playwright-core for the browser tests (npm ci)" >&2
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
