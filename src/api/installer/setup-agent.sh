#!/bin/sh
# kanade-agent setup for Linux (systemd), run as root from the unpacked
# installer. Written for kanade-backend, columnar edition.
#
# Reads from the environment (install.sh sets what the backend embedded):
#   KANADE_NATS_TOKEN, KANADE_NATS_USER + KANADE_NATS_PASSWORD  broker credentials
#   KANADE_COMMAND_KEYS            JSON keyring of the backend's signing keys
#   KANADE_REQUIRE_SIGNED_COMMANDS=1  refuse unsigned commands on this host
#   KANADE_FORCE_CONFIG=1          replace an existing /etc/kanade/agent.toml
#   KANADE_INSTALL_ROOT            install under this prefix (staging, tests)
# Each step's name is appended to ./install-stage, so a caller can say
# where a failure happened.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=${KANADE_INSTALL_ROOT:-}
stage() { printf '%s\n' "$1" >> "$here/install-stage"; }
# A value as systemd's EnvironmentFile reads it: double-quoted, with `\`
# and `"` escaped.
dq() { printf '"%s"' "$(printf '%s' "$1" | sed 's/[\\"]/\\&/g')"; }

if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
    echo "setup-agent.sh: run as root (sudo)" >&2
    exit 126
fi

stage placement
install -d -m 0755 "$root/usr/local/bin" "$root/etc/kanade" "$root/var/lib/kanade" "$root/var/log/kanade"
install -m 0755 "$here/bin/kanade-agent" "$root/usr/local/bin/kanade-agent"
if [ ! -e "$root/etc/kanade/agent.toml" ] || [ "${KANADE_FORCE_CONFIG:-0}" = 1 ]; then
    install -m 0644 "$here/etc/agent.toml" "$root/etc/kanade/agent.toml"
else
    echo "keeping the existing $root/etc/kanade/agent.toml (KANADE_FORCE_CONFIG=1 replaces it)"
fi
umask 077
env_file="$root/etc/kanade/agent.env"
: > "$env_file"
chmod 0600 "$env_file"
[ -n "${KANADE_NATS_TOKEN:-}" ] && printf 'KANADE_NATS_TOKEN=%s\n' "$(dq "$KANADE_NATS_TOKEN")" >> "$env_file"
if [ -n "${KANADE_NATS_USER:-}" ] && [ -n "${KANADE_NATS_PASSWORD:-}" ]; then
    printf 'KANADE_NATS_USER=%s\nKANADE_NATS_PASSWORD=%s\n' "$(dq "$KANADE_NATS_USER")" "$(dq "$KANADE_NATS_PASSWORD")" >> "$env_file"
fi
if [ -n "${KANADE_COMMAND_KEYS:-}" ]; then
    printf '%s\n' "$KANADE_COMMAND_KEYS" > "$root/etc/kanade/command-keys.json"
    chmod 0600 "$root/etc/kanade/command-keys.json"
fi
if [ "${KANADE_REQUIRE_SIGNED_COMMANDS:-0}" = 1 ]; then
    printf '1\n' > "$root/etc/kanade/require-signed-commands"
    chmod 0600 "$root/etc/kanade/require-signed-commands"
fi
umask 022

stage service_start
install -d -m 0755 "$root/etc/systemd/system"
install -m 0644 "$here/systemd/kanade-agent.service" "$root/etc/systemd/system/kanade-agent.service"
if [ -z "$root" ]; then
    systemctl daemon-reload
    systemctl enable kanade-agent.service
    systemctl restart kanade-agent.service
fi

stage connection_check
# The credentials are in this environment already (install.sh set them).
"$root/usr/local/bin/kanade-agent" --check-connection --config "$root/etc/kanade/agent.toml"
echo "kanade-agent installed and connected."
