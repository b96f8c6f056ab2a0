#!/usr/bin/env bash
# Side-by-side benchmark: tidegate vs Debian nginx + lua module, same conf, same load.
# Usage: bench/run.sh [scenario]   (default: hello; see README.md)
# Env:   TIDEGATE=build/tidegate NGINX=/usr/sbin/nginx ROUNDS=5 CONNS=50 DURATION=5
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIO=${1:-hello}
TIDEGATE=${TIDEGATE:-build/tidegate}
NGINX=${NGINX:-/usr/sbin/nginx}
ROUNDS=${ROUNDS:-5} CONNS=${CONNS:-50} DURATION=${DURATION:-5}

# ---- scenarios: scenario_NAME SERVER prints the body of the server block ------------
# SERVER is "nginx" or "tidegate", for the rare case the two need different spelling.
scenario_hello() { echo 'location / { return 200 "hello"; }'; }
scenario_lua_say() { echo 'location / { content_by_lua_block { ngx.say("hello") } }'; }
# The request-facing API: ngx.var, ngx.ctx, ngx.req.get_headers, ngx.header.
scenario_lua_api() {
  cat <<'EOC'
location / {
    content_by_lua_block {
        local h = ngx.req.get_headers()
        ngx.ctx.host = h.host
        ngx.header["X-Uri"] = ngx.var.uri
        ngx.say(ngx.var.arg_name or "anon", " ", ngx.ctx.host, " ", ngx.var.request_method)
    }
}
EOC
}

die() { echo "bench: $*" >&2; exit 1; }

declare -F "scenario_$SCENARIO" >/dev/null ||
  die "unknown scenario '$SCENARIO' (have: $(declare -F | sed -n 's/.* scenario_//p' | tr '\n' ' '))"
[ -x "$TIDEGATE" ] ||
  die "tidegate binary not found at '$TIDEGATE': build it first, or set TIDEGATE=/path/to/tidegate"
TIDEGATE=$(realpath "$TIDEGATE")

# ---- dependencies ---------------------------------------------------------------------
install_deps() {
  local p missing=()
  for p in nginx-core libnginx-mod-http-lua wrk; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return
  echo "bench: installing ${missing[*]}" >&2
  # Debian starts nginx on :80 at install time; a policy-rc.d that exits 101 forbids
  # invoke-rc.d/deb-systemd-invoke from starting it. Keep any policy already present.
  local policy=/usr/sbin/policy-rc.d ours=""
  if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' >$policy; chmod +x $policy; ours=1; fi
  export DEBIAN_FRONTEND=noninteractive
  local rc=0
  { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; } || rc=$?
  if [ -n "$ours" ]; then rm -f $policy; fi
  return $rc
}
install_deps
# Load the lua module (and NDK, which it needs) by absolute path: Debian's snippets in
# modules-available are relative to nginx's own prefix, not to the -p we pass.
MODDIR=$("$NGINX" -V 2>&1 | sed -n 's/.*--modules-path=\([^ ]*\).*/\1/p')
MODDIR=${MODDIR:-/usr/lib/nginx/modules}
for m in ndk_http_module ngx_http_lua_module; do
  [ -f "$MODDIR/$m.so" ] || die "$MODDIR/$m.so missing (is libnginx-mod-http-lua installed?)"
done
NGX_MODULES="load_module $MODDIR/ndk_http_module.so; load_module $MODDIR/ngx_http_lua_module.so;"

TICK=$(getconf CLK_TCK)
ulimit -n 65536 2>/dev/null || true   # large CONNS would otherwise hit the fd limit
TMP=$(mktemp -d /tmp/tidegate-bench.XXXXXX)
SERVER_PID="" WRK_PID=""
cleanup() {
  if [ -n "$WRK_PID" ]; then kill "$WRK_PID" 2>/dev/null || true; fi
  if [ -n "$SERVER_PID" ]; then stop_server; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM   # route signals through the EXIT trap

# ---- process accounting ---------------------------------------------------------------
# Prints "pid ticks" (utime+stime) for ROOT and all its descendants. /proc/PID/stat's comm
# field may contain spaces, so split after the last ')': then ppid is field 2, utime 12.
tree() {
  local -A ppid=() ticks=(); local f s pid want=" $1 " grew=1 a
  for f in /proc/[0-9]*/stat; do
    { read -r s <"$f"; } 2>/dev/null || continue
    pid=${s%% *}; read -ra a <<<"${s##*) }"
    ppid[$pid]=${a[1]}; ticks[$pid]=$((a[11] + a[12]))
  done
  while ((grew)); do   # fixpoint: workers of the master, and any of theirs
    grew=0
    for pid in "${!ppid[@]}"; do
      if [[ $want == *" ${ppid[$pid]} "* && $want != *" $pid "* ]]; then want+="$pid "; grew=1; fi
    done
  done
  for pid in $want; do if [ -n "${ticks[$pid]:-}" ]; then echo "$pid ${ticks[$pid]}"; fi; done
}
cpu_ticks() { tree "$1" | awk '{ t += $2 } END { print t + 0 }'; }

# ---- servers --------------------------------------------------------------------------
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

write_conf() {   # write_conf SERVER PORT -> path of a fresh prefix dir holding conf
  local dir="$TMP/$1"; rm -rf "$dir"; mkdir -p "$dir/logs"
  { [ "$1" = nginx ] && echo "$NGX_MODULES"
    cat <<EOF
daemon off; master_process on; worker_processes 1;
error_log $dir/logs/error.log warn; pid $dir/logs/server.pid;
events { worker_connections 4096; }
http {
  access_log off; keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$2;
    $("scenario_$SCENARIO" "$1")
  }
}
EOF
  } >"$dir/server.conf"
  echo "$dir"
}

start_server() {   # start_server SERVER PORT; sets SERVER_PID
  local bin=$NGINX dir deadline=$((SECONDS + 10))
  [ "$1" = tidegate ] && bin=$TIDEGATE
  dir=$(write_conf "$1" "$2")
  # Pin the master to CPU 0; workers inherit the mask. taskset execs, so $! is the master.
  taskset -c 0 "$bin" -p "$dir/" -c "$dir/server.conf" >"$dir/logs/stdout" 2>&1 &
  SERVER_PID=$!
  # Ready means a worker answered, not merely that the port is bound.
  until curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$2/" 2>/dev/null; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null || ((SECONDS > deadline)); then
      cat "$dir/logs/stdout" "$dir/logs/error.log" >&2 2>/dev/null || true
      die "$1 did not become ready on port $2"
    fi
    sleep 0.05
  done
}

stop_server() {   # graceful QUIT, then SIGKILL the whole tree after a deadline
  local pid=$SERVER_PID deadline=$((SECONDS + 10)) left
  SERVER_PID=""
  mapfile -t left < <(tree "$pid" | cut -d' ' -f1)
  kill -QUIT "$pid" 2>/dev/null || true
  # A zombie still passes kill -0, so look at the state letter too.
  while kill -0 "$pid" 2>/dev/null && [[ $(cut -d' ' -f3 /proc/$pid/stat 2>/dev/null) != Z ]]; do
    if ((SECONDS > deadline)); then
      echo "bench: server $pid ignored SIGQUIT, killing it" >&2
      kill -9 "${left[@]}" 2>/dev/null || true; break
    fi
    sleep 0.05
  done
  wait "$pid" 2>/dev/null || true
}

# ---- one run: sets RESULT="req/s p99_us cpu_us_per_req" -------------------------------
# Called directly, never in $(...): a subshell does not run the EXIT trap, so a failure
# there would orphan the server.
to_us() { awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
  print (u == "s" ? n * 1e6 : u == "ms" ? n * 1e3 : n) }'; }

run_one() {
  local port out c0 c1 reqs rps p99
  port=$(free_port)
  start_server "$1" "$port"
  c0=$(cpu_ticks "$SERVER_PID")
  # wrk catches SIGINT and exits 0, so bash would swallow a Ctrl-C given to a foreground
  # wrk and carry on; `wait` on a background wrk is interrupted by the trap instead.
  taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/" \
    >"$TMP/wrk.out" &
  WRK_PID=$!
  wait "$WRK_PID"
  WRK_PID=""
  c1=$(cpu_ticks "$SERVER_PID")
  stop_server
  out=$(<"$TMP/wrk.out")
  # Errors or non-2xx make the CPU/request meaningless; say so loudly but keep the data.
  grep -E 'Socket errors|Non-2xx' <<<"$out" | sed "s/^ */bench: WARNING $1 round $round: /" >&2 || true
  reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  p99=$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  [[ $reqs =~ ^[1-9][0-9]*$ ]] || die "$1: wrk reported no requests:"$'\n'"$out"
  RESULT=$(awk -v r="$rps" -v p="$p99" -v t=$((c1 - c0)) -v hz="$TICK" -v n="$reqs" \
    'BEGIN { printf "%.0f %.0f %.3f\n", r, p, t * 1e6 / hz / n }')
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

# ---- interleaved rounds ---------------------------------------------------------------
echo "scenario=$SCENARIO rounds=$ROUNDS conns=$CONNS duration=${DURATION}s tidegate=$TIDEGATE"
echo "server on CPU 0, wrk on CPU 1; ng = nginx, tg = tidegate, r:* = tg/ng per round"
echo "p99 in us; cpu = server CPU (all its processes) in us per request"
printf '%-6s | %9s %7s %7s | %9s %7s %7s | %6s %6s %6s\n' round \
  "ng req/s" "ng p99" "ng cpu" "tg req/s" "tg p99" "tg cpu" "r:rps" "r:p99" "r:cpu"
declare -A R
for ((round = 1; round <= ROUNDS; round++)); do
  order="nginx tidegate"; ((round % 2)) || order="tidegate nginx"   # cancel drift/warm-up bias
  for s in $order; do run_one "$s"; R[$s]=$RESULT; done
  read -r nr np nc <<<"${R[nginx]}"; read -r tr tp tc <<<"${R[tidegate]}"
  read -r rr rp rc < <(awk -v a="$tr" -v b="$nr" -v c="$tp" -v d="$np" -v e="$tc" -v f="$nc" \
    'function q(x, y) { return y > 0 ? x / y : 0 } BEGIN { printf "%.3f %.3f %.3f\n", q(a,b), q(c,d), q(e,f) }')
  echo "$nr $np $nc $tr $tp $tc $rr $rp $rc" >>"$TMP/rounds"
  printf '%-6s | %9s %7s %7s | %9s %7s %7s | %6s %6s %6s\n' "$round" "$nr" "$np" "$nc" "$tr" "$tp" "$tc" "$rr" "$rp" "$rc"
done

col() { awk -v c="$1" '{ print $c }' "$TMP/rounds" | median; }
printf '%-6s | %9.0f %7.0f %7.3f | %9.0f %7.0f %7.3f | %6.3f %6.3f %6.3f\n' median \
  "$(col 1)" "$(col 2)" "$(col 3)" "$(col 4)" "$(col 5)" "$(col 6)" "$(col 7)" "$(col 8)" "$(col 9)"
echo
# The range shows how far single rounds scatter, i.e. how much to trust the median.
summary() {   # summary LABEL COLUMN
  local lo hi
  read -r lo hi < <(awk -v c="$2" 'NR == 1 || $c < lo { lo = $c } NR == 1 || $c > hi { hi = $c }
    END { print lo, hi }' "$TMP/rounds")
  printf '%s: %s ratio (tidegate/nginx) median = %.2f over %d rounds (range %.2f-%.2f)\n' \
    "$SCENARIO" "$1" "$(col "$2")" "$ROUNDS" "$lo" "$hi"
}
summary req/s 7
summary p99 8
summary cpu/req 9
