#!/usr/bin/env bash
# Instructions per request in user space, tidegate and nginx side by side, under
# callgrind: exact and repeatable where bench/run.sh's CPU per request is noisy, but
# blind to the kernel (most of a loopback request's cost) and to cache effects.
# Usage: bench/instructions.sh [scenario]   (default: lua_say; bench/run.sh's scenarios
#        without TLS: hello, lua_say, lua_api, lua_work, shdict, redis, proxy, proxy_lua)
# Env:   REQUESTS=20000 sequential keepalive requests, measured after REQUESTS/10 of
#        warm-up; TIDEGATE, NGINX as for run.sh; KEEP_TMP=1 keeps the callgrind
#        output (bench/lib.sh); CALLGRIND_OPTS adds valgrind options; CODE_LINES=1
#        also prints the code footprint per request (bench/code_lines.py).
set -euo pipefail
cd "$(dirname "$0")/.."
SCENARIO=${1:-lua_say}
REQUESTS=${REQUESTS:-20000}
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null ||
  { echo "bench: instructions.sh needs valgrind" >&2; exit 1; }
source bench/lib.sh
bench_tmp tidegate-instr
PORT=$(free_port)
if [ "$SCENARIO" = redis ]; then
  export REDIS_PORT
  REDIS_PORT=$(free_port)
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" >"$TMP/redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do [ "$(redis-cli -p "$REDIS_PORT" set bench hello 2>/dev/null)" = OK ] && break; sleep 0.05; done
fi
case $SCENARIO in proxy*) export BACKEND_PORT; BACKEND_PORT=$(free_port) ;; esac
CONF_ONLY=$TMP CONF_PORT=$PORT bash bench/run.sh "$SCENARIO" >/dev/null
if [ -f "$TMP/backend/server.conf" ]; then
  # The proxies' backend, as run.sh writes it, in one process.
  sed -i 's/master_process on;/master_process off;/' "$TMP/backend/server.conf"
  "${NGINX:-/usr/sbin/nginx}" -p "$TMP/backend/" -c "$TMP/backend/server.conf" &
  PIDS+=($!)
  for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$BACKEND_PORT/" 2>/dev/null && break; sleep 0.05; done
fi

# A keepalive client: N requests one after another, each response read whole.
cat >"$TMP/client.py" <<'EOP'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("127.0.0.1", port))
req = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
for _ in range(n):
    s.sendall(req)
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            sys.exit("connection closed")
        buf += chunk
        head, sep, body = buf.partition(b"\r\n\r\n")
        if not sep:
            continue
        if b"chunked" in head.lower():
            if body.endswith(b"0\r\n\r\n"):
                break
        else:
            length = [l for l in head.lower().split(b"\r\n") if l.startswith(b"content-length:")]
            if length and len(body) >= int(length[0].split(b":")[1]):
                break
    if not head.startswith(b"HTTP/1.1 200"):
        sys.exit("not a 200: " + head.decode(errors="replace"))
EOP

# Dumps callgrind's counts so far (to OUT.N) and waits for the file; the dump happens
# when the server next runs, so one more request wakes it.
dump() {
  callgrind_control -d "$1" >/dev/null 2>&1 &
  sleep 0.3
  curl -fsS -o /dev/null "http://127.0.0.1:$PORT/" || true
  for _ in $(seq 200); do [ -f "$2" ] && return; sleep 0.05; done
  echo "bench: no callgrind dump $2" >&2; exit 1
}

measure() {   # measure SIDE BIN -> prints instructions per request
  local dir="$TMP/$1" out pid total
  sed -i 's/master_process on;/master_process off;/' "$dir/server.conf"
  out="$dir/callgrind.out"
  valgrind --tool=callgrind ${CALLGRIND_OPTS:-} --callgrind-out-file="$out" "$2" -p "$dir/" -c "$dir/server.conf" >"$dir/valgrind.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 600); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/" 2>/dev/null && break; sleep 0.1; done
  python3 "$TMP/client.py" "$PORT" $((REQUESTS / 10))
  dump "$pid" "$out.1"
  python3 "$TMP/client.py" "$PORT" "$REQUESTS"
  dump "$pid" "$out.2"
  kill -QUIT "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  total=$(callgrind_annotate --threshold=100 "$out.2" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  echo $((total / REQUESTS))
}

if [ -n "${CODE_LINES:-}" ]; then CALLGRIND_OPTS="${CALLGRIND_OPTS:-} --dump-instr=yes"; fi
ng=$(measure nginx "${NGINX:-/usr/sbin/nginx}")
tg=$(measure tidegate "$(realpath "${TIDEGATE:-build/tidegate}")")
echo "$SCENARIO: instructions per request (user space, callgrind, $REQUESTS sequential keepalive requests)"
echo "$SCENARIO: nginx $ng, tidegate $tg, ratio (tidegate/nginx) $(awk -v a="$tg" -v b="$ng" 'BEGIN { printf "%.2f", a / b }')"
if [ -n "${CODE_LINES:-}" ]; then
  for side in nginx tidegate; do
    echo "$SCENARIO: $side code run in most requests: $(python3 bench/code_lines.py "$TMP/$side/callgrind.out.2" $((REQUESTS / 2)))"
  done
fi
