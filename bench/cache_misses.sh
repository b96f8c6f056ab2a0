#!/usr/bin/env bash
# Cache misses per request in tidegate's user space under many connections, where
# run.sh's CPU per request hides them in a noisy total: cachegrind simulates this VM's
# caches (D1 64 KB, and the 1 MB L2 of each core as the last level) on one worker
# (master_process off) while wrk keeps CONNS keepalive connections busy. Prints the
# totals and the functions with the most last-level misses, per request.
# Usage: bench/cache_misses.sh [scenario]   (default: proxy_1000; run.sh's scenarios
#        without TLS)
# Env:   CONNS (default: the scenario's, 1000 for proxy_1000), DURATION=20 (wrk's
#        measured run, after 5 s of warm-up), TOP=30, TIDEGATE as for run.sh;
#        KEEP_TMP=1 keeps cachegrind's output (bench/lib.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
SCENARIO=${1:-proxy_1000}
DURATION=${DURATION:-20} TOP=${TOP:-30}
TIDEGATE=${TIDEGATE:-build/tidegate}
command -v valgrind >/dev/null && command -v wrk >/dev/null ||
  { echo "bench: cache_misses.sh needs valgrind and wrk" >&2; exit 1; }
source bench/lib.sh
bench_tmp tidegate-misses
PORT=$(free_port)
case $SCENARIO in proxy*) export BACKEND_PORT; BACKEND_PORT=$(free_port) ;; esac
CONNS=${CONNS:-$( [ "$SCENARIO" = proxy_1000 ] && echo 1000 || echo 50 )}
CONNS=$CONNS CONF_ONLY=$TMP CONF_PORT=$PORT bash bench/run.sh "$SCENARIO" >/dev/null
ulimit -n "$(ulimit -Hn)"
wait_for() {   # wait_for PORT PID
  for _ in $(seq 400); do
    curl -fsS -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.05
  done
  echo "bench: nothing answers on port $1" >&2; exit 1
}
if [ -f "$TMP/backend/server.conf" ]; then
  # One process, so that the kill in cleanup leaves no worker behind.
  sed -i 's/master_process on;/master_process off;/' "$TMP/backend/server.conf"
  taskset -c 1 "${NGINX:-/usr/sbin/nginx}" -p "$TMP/backend/" -c "$TMP/backend/server.conf" &
  PIDS+=($!)
  wait_for "$BACKEND_PORT" "${PIDS[-1]}"
fi
sed -i 's/master_process on;/master_process off;/' "$TMP/tidegate/server.conf"
taskset -c 0 valgrind --tool=cachegrind --cache-sim=yes --I1=65536,8,64 --D1=65536,8,64 \
  --LL=1048576,8,64 --cachegrind-out-file="$TMP/cg.out" "$(realpath "$TIDEGATE")" \
  -p "$TMP/tidegate/" -c "$TMP/tidegate/server.conf" >"$TMP/valgrind.log" 2>&1 &
TG=$!
PIDS+=($TG)
wait_for "$PORT" "$TG"
count() { awk '/requests in/ { print $1 }' "$1"; }
taskset -c 1 wrk -t2 -c"$CONNS" -d5s "http://127.0.0.1:$PORT/" >"$TMP/warm.out"
taskset -c 1 wrk -t2 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$PORT/" >"$TMP/wrk.out"
# cachegrind writes its counts when the process exits; startup and warm-up count too
# (both small next to the requests).
kill -QUIT "$TG"
wait "$TG" || true
REQUESTS=$(($(count "$TMP/warm.out") + $(count "$TMP/wrk.out") + 1))
echo "$SCENARIO: $CONNS connections, $REQUESTS requests under cachegrind (D1 64 KB, LL 1 MB)"
python3 - "$TMP/cg.out" "$REQUESTS" "$TOP" <<'EOP'
import collections, re, sys
path, requests, top = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
events, names, fn = None, {}, None
totals = collections.defaultdict(lambda: [0] * 9)
for line in open(path):
    if line.startswith("events:"):
        events = line.split()[1:]
    elif line.startswith("fn="):
        m = re.match(r"\((\d+)\)(?: (.*))?", line[3:].strip())
        if m:
            if m.group(2):
                names[m.group(1)] = m.group(2)
            fn = names[m.group(1)]
        else:
            fn = line[3:].strip()
    elif fn and line[:1].isdigit():
        for i, v in enumerate(line.split()[1:10]):
            totals[fn][i] += int(v)
col = {e: i for i, e in enumerate(events)}
def per(v, e):
    return v[col[e]] / requests
ll = lambda v: per(v, "DLmr") + per(v, "DLmw")
print("per request: instructions %.0f, D1 misses %.1f (read %.1f, write %.1f), LL misses %.1f" % (
    sum(per(v, "Ir") for v in totals.values()),
    sum(per(v, "D1mr") + per(v, "D1mw") for v in totals.values()),
    sum(per(v, "D1mr") for v in totals.values()), sum(per(v, "D1mw") for v in totals.values()),
    sum(ll(v) for v in totals.values())))
print("%7s %7s %7s  function (by LL misses)" % ("LL", "D1", "instr"))
for name, v in sorted(totals.items(), key=lambda kv: -ll(kv[1]))[:top]:
    print("%7.2f %7.2f %7.0f  %s" % (ll(v), per(v, "D1mr") + per(v, "D1mw"), per(v, "Ir"), name[:110]))
EOP
