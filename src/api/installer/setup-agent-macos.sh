#!/bin/sh
# kanade-agent setup for macOS (launchd), run as root from the unpacked
# installer. Written for kanade-backend, columnar edition. Same
# environment and ./install-stage steps as setup-agent.sh.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=${KANADE_INSTALL_ROOT:-}
stage() { printf '%s\n' "$1" >> "$here/install-stage"; }
# A value as sh reads it (the launchd job sources agent.env): single-quoted.
sq() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }

if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
    echo "setup-agent-macos.sh: run as root (sudo)" >&2
    exit 126
fi

stage placement
install -d -m 0755 "$root/usr/local/bin" "$root/etc/kanade" "$root/var/lib/kanade" "$root/var/log/kanade"
install -m 0755 "$here/bin/kanade-agent" "$root/usr/local/bin/kanade-agent"
if [ ! -e "$root/etc/kanade/agent.toml" ] || [ "${KANADE_FORCE_CONFIG:-0}" = 1 ]; then
    install -m 0644 "$here/etc/agent.toml" "$root/etc/kanade/agent.toml"
fi
umask 077
env_file="$root/etc/kanade/agent.env"
: > "$env_file"
[ -n "${KANADE_NATS_TOKEN:-}" ] && printf 'KANADE_NATS_TOKEN=%s\n' "$(sq "$KANADE_NATS_TOKEN")" >> "$env_file"
if [ -n "${KANADE_NATS_USER:-}" ] && [ -n "${KANADE_NATS_PASSWORD:-}" ]; then
    printf 'KANADE_NATS_USER=%s\nKANADE_NATS_PASSWORD=%s\n' "$(sq "$KANADE_NATS_USER")" "$(sq "$KANADE_NATS_PASSWORD")" >> "$env_file"
fi
[ -n "${KANADE_COMMAND_KEYS:-}" ] && printf '%s\n' "$KANADE_COMMAND_KEYS" > "$root/etc/kanade/command-keys.json"
[ "${KANADE_REQUIRE_SIGNED_COMMANDS:-0}" = 1 ] && printf '1\n' > "$root/etc/kanade/require-signed-commands"
umask 022

stage service_start
plist="$root/Library/LaunchDaemons/com.kanade.agent.plist"
install -d -m 0755 "$root/Library/LaunchDaemons"
install -m 0644 "$here/launchd/com.kanade.agent.plist" "$plist"
if [ -z "$root" ]; then
    launchctl bootout system/com.kanade.agent 2>/dev/null || true
    launchctl bootstrap system "$plist"
fi

stage connection_check
"$root/usr/local/bin/kanade-agent" --check-connection --config "$root/etc/kanade/agent.toml"
echo "kanade-agent installed and connected."
