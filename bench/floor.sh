#!/usr/bin/env bash
# Runs one of bench/run.sh's scenarios (default "hello") with the minimal epoll
# responder in tidegate's place: nginx does the scenario's work, the responder only
# reads each request and writes a fixed answer. The ratio it prints is the floor on
# this machine for that scenario: no server that does one read and one write per
# keepalive request can go below it, whatever its user-space cost.
# Usage: bench/floor.sh [scenario]   (env as for run.sh: ROUNDS, CONNS, DURATION)
set -euo pipefail
cd "$(dirname "$0")/.."
TMP=$(mktemp -d /tmp/tidegate-floor.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
cc -O2 -o "$TMP/minimal_responder" bench/floor/minimal_responder.c
# run.sh starts its server as "BIN -p DIR -c CONF" (take the port from the conf) after
# checking the conf with "BIN -t ..." (nothing to check here).
cat >"$TMP/wrapper" <<WRAP
#!/usr/bin/env bash
while [ \$# -gt 0 ]; do case \$1 in -c) conf=\$2; shift;; -t) exit 0;; esac; shift; done
# The redis scenario's handler names redis's port: then the responder asks redis too.
redis=\$(grep -o 'connect("127.0.0.1", [0-9]*' "\$conf" | grep -o '[0-9]*\$' || true)
exec "$TMP/minimal_responder" "\$(grep -o 'listen 127.0.0.1:[0-9]*' "\$conf" | cut -d: -f2)" \$redis
WRAP
chmod +x "$TMP/wrapper"
TIDEGATE="$TMP/wrapper" bash bench/run.sh "${1:-hello}"
