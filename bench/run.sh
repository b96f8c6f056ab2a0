#!/usr/bin/env bash
# Side-by-side benchmark: tidegate vs Debian nginx + lua module, same conf, same load.
# Usage: bench/run.sh [scenario]   (default: hello; see README.md)
# Env:   TIDEGATE=build/tidegate NGINX=/usr/sbin/nginx ROUNDS=5 DURATION=5
#        CONNS=50 THREADS=1 (scenario defaults may differ) BACKEND_WORKERS=1
#        FLOOR=1: a third side, "floor", the minimal epoll responder of bench/floor/
#        (one read and one write per request, a fixed answer), in the same rounds
set -euo pipefail
cd "$(dirname "$0")/.."

SCENARIO=${1:-hello}
TIDEGATE=${TIDEGATE:-build/tidegate}
NGINX=${NGINX:-/usr/sbin/nginx}
ROUNDS=${ROUNDS:-5} DURATION=${DURATION:-5}
CONNS=${CONNS:-} THREADS=${THREADS:-}   # empty: the scenario's default, else 50 and 1
BACKEND_WORKERS=${BACKEND_WORKERS:-1}
# The servers compared, in the order of round 1. Ratios are tidegate over each other
# side, the first one being the headline. A side is "nginx" or "tidegate", optionally
# followed by "_VARIANT" for a scenario that compares variants of one server's conf.
SIDES="nginx tidegate"
declare -A LABEL=([nginx]=ng [tidegate]=tg)   # column headings
BACKEND="" BACKEND_PORT=${BACKEND_PORT:-}   # BACKEND set by a scenario's setup: it needs the backend
# (BACKEND_PORT from the environment: bench/instructions.sh runs the backend itself)
TLS="" WRK_HEADER=""         # TLS: the server listens with ssl; WRK_HEADER: one more request header
WORKERS=1 SERVER_CPUS=0      # a scenario's setup may change them (shdict_ops)

# ---- scenarios ------------------------------------------------------------------------
# scenario_NAME SERVER SIDE prints the body of the server block. SERVER is "nginx" or
# "tidegate", for the rare case the two need different spelling; SIDE is the full side
# name. Optional hooks:
#   http_NAME SERVER SIDE  prints more of the http block (upstream blocks);
#   setup_NAME             runs before anything starts: sets BACKEND, SIDES, LABEL, or
#                          defaults for CONNS and THREADS (${CONNS:-N}: the env wins).
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

# lua_budget_timeout's cost (issue 9: under 5%): the same handlers on tidegate without and
# with a budget (tidegate_budget: the watchdog runs, every trace has its line checks).
# lua_work does some table and string work per request, so JIT traces matter;
# lua_say_budget and lua_api_budget are lua_say and lua_api. The ratio to watch is
# tidegate/tidegate_budget (cpu/req).
budget_line() { if [ "$1" = tidegate_budget ]; then echo 'lua_budget_timeout 100ms;'; fi; }
scenario_lua_work() {
  budget_line "$2"
  cat <<'EOC'
location / {
    content_by_lua_block {
        local t = {}
        for i = 1, 200 do t[i] = i * 2 end
        local s = 0
        for i = 1, #t do
            if t[i] % 3 == 0 then
                s = s + t[i]
            else
                s = s - 1
            end
        end
        local parts = {}
        for i = 1, 20 do parts[i] = tostring(i + s) end
        ngx.say(s, " ", #table.concat(parts, ","))
    }
}
EOC
}
scenario_lua_say_budget() { budget_line "$2"; scenario_lua_say; }
scenario_lua_api_budget() { budget_line "$2"; scenario_lua_api; }
setup_lua_work() { SIDES="nginx tidegate tidegate_budget"; LABEL[tidegate_budget]=tgb; }
setup_lua_say_budget() { setup_lua_work; }
setup_lua_api_budget() { setup_lua_work; }

# Proxy scenarios. One backend (plain nginx answering "hello", started once, its CPU not
# counted) serves every run. The location is nginx's recipe for upstream keepalive;
# tidegate pools without it but reads the same conf.
proxy_location() {   # proxy_location [LUA]: LUA (an access_by_lua_block) goes first
  printf 'location / {\n%s\n    proxy_pass http://backend;\n' "${1:-}"
  printf '    proxy_http_version 1.1;\n    proxy_set_header Connection "";\n}\n'
}
upstream_backend() {   # upstream_backend [KEEPALIVE]: none means the server's default pool
  echo "upstream backend { server 127.0.0.1:$BACKEND_PORT;${1:+ keepalive $1;} }"
}

scenario_proxy() { proxy_location; }
http_proxy() { upstream_backend 64; }
setup_proxy() { BACKEND=1; }

# Lua on the proxy path: an access check that reads ngx.var, and a balancer that picks
# the peer itself.
scenario_proxy_lua() {
  proxy_location '    access_by_lua_block {
        if ngx.var.http_x_api_key == "blocked" then return ngx.exit(403) end
        ngx.ctx.uri = ngx.var.uri
    }'
}
http_proxy_lua() {
  # keepalive after balancer_by_lua: in nginx, the one declared last wraps the other.
  cat <<EOC
upstream backend {
    server 0.0.0.1;   # never used: the balancer sets the peer
    balancer_by_lua_block {
        local b = require "ngx.balancer"
        b.set_current_peer("127.0.0.1", $BACKEND_PORT)
    }
    keepalive 64;
}
EOC
}
setup_proxy_lua() { BACKEND=1; }

# Many clients: tidegate's default pool (sized from demand) against nginx with a pool
# big enough for every client connection, and with the common small one.
scenario_proxy_1000() { proxy_location; }
http_proxy_1000() {
  case $2 in
    nginx) upstream_backend 1024 ;;
    nginx_ka64) upstream_backend 64 ;;
    *) upstream_backend ;;
  esac
}
setup_proxy_1000() {
  BACKEND=1 CONNS=${CONNS:-1000} THREADS=${THREADS:-2}
  SIDES="nginx tidegate nginx_ka64"
  LABEL[nginx_ka64]=ng64
}

# ngx.shared.DICT: one get and one set per request (issue 5: <= 0.85x nginx CPU/request).
scenario_shdict() {
  cat <<'EOC'
location / {
    content_by_lua_block {
        local d = ngx.shared.bench
        local n = d:get("n") or 0
        d:set("n", n + 1)
        ngx.say(n)
    }
}
EOC
}
http_shdict() { echo 'lua_shared_dict bench 10m;'; }
# ngx.shared.DICT under contention: 2 workers on both CPUs, each request 1000 incr of one
# key (so ops/s = req/s x 1000; CPU/request is per 1000 operations).
scenario_shdict_ops() {
  cat <<'EOC'
location / {
    content_by_lua_block {
        local d = ngx.shared.bench
        local incr = d.incr
        for i = 1, 1000 do incr(d, "hot", 1, 0) end
        ngx.say("ok")
    }
}
EOC
}
http_shdict_ops() { echo 'lua_shared_dict bench 10m;'; }

# Upstream updates under load, 2 workers: tidegate changes its upstream through the admin
# API every 100 ms (a PUT that swaps the server's weight: a new version every worker
# picks up); nginx flips the peer its balancer_by_lua reads from a shared dict, the way
# OpenResty setups change upstreams without a reload; tidegate_still is tidegate with no
# updates, so tidegate/tidegate_still is the cost of the updates themselves.
scenario_admin_updates() { proxy_location; }
http_admin_updates() {
  case $2 in
    nginx)
      cat <<EOC
lua_shared_dict ups 1m;
init_by_lua_block { ngx.shared.ups:set("port", $BACKEND_PORT) }
upstream backend {
    server 0.0.0.1;
    balancer_by_lua_block {
        require("ngx.balancer").set_current_peer("127.0.0.1", ngx.shared.ups:get("port"))
    }
    keepalive 64;
}
server {
    listen 127.0.0.1:$ADMIN_PORT;
    location /flip { content_by_lua_block { ngx.shared.ups:set("port", $BACKEND_PORT); ngx.shared.ups:incr("n", 1, 0); ngx.say("ok") } }
}
EOC
      ;;
    *)
      echo "admin_listen 127.0.0.1:$ADMIN_PORT; admin_token $ADMIN_TOKEN; state_dir $TMP/$2/state;"
      upstream_backend 64
      ;;
  esac
}
setup_admin_updates() {
  BACKEND=1 WORKERS=2 SIDES="nginx tidegate tidegate_still"
  LABEL[tidegate_still]=tg0
  ADMIN_PORT=needed ADMIN_TOKEN=bench-token-0123456789abcdef0123456789
}
# during_SCENARIO SIDE: runs in the background while wrk does, killed when wrk ends.
# One python process on a keepalive connection (a curl per update would cost the load
# CPU more than the update costs the server).
during_admin_updates() {
  python3 - "$1" "$ADMIN_PORT" "$ADMIN_TOKEN" "$BACKEND_PORT" <<'EOP'
import http.client, json, sys, time
side, port, token, backend = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
if side not in ("nginx", "tidegate"):
    sys.exit(0)
conn = http.client.HTTPConnection("127.0.0.1", port)
n = 0
while True:
    time.sleep(0.1)
    n += 1
    if side == "nginx":
        conn.request("GET", "/flip")
    else:
        spec = {"servers": [{"host": "127.0.0.1", "port": backend, "weight": n % 2 + 1}], "keepalive": 64}
        conn.request("PUT", "/upstreams/backend", json.dumps(spec),
                     {"X-API-KEY": token, "Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    if r.status >= 300:
        print(f"bench: WARNING {side}: update {n} answered {r.status}", file=sys.stderr)
EOP
}
# Debian's lua-nginx-redis, unmodified, on both sides: each request takes a connection
# from the pool, GETs one key and puts the connection back. One redis-server (started
# by start_redis, on CPU 1 beside wrk; its CPU is not counted) serves every run.
scenario_redis() {
  cat <<EOC
location / {
    content_by_lua_block {
        local redis = require "nginx.redis"
        local red = redis:new()
        red:set_timeout(1000)
        local ok, err = red:connect("127.0.0.1", $REDIS_PORT)
        if not ok then ngx.log(ngx.ERR, "redis connect: ", err) return ngx.exit(500) end
        local v, err = red:get("bench")
        if not v then ngx.log(ngx.ERR, "redis get: ", err) return ngx.exit(500) end
        red:set_keepalive(10000, 64)
        ngx.say(v)
    }
}
EOC
}
# Debian's lua module and tidegate both find /usr/share/lua/5.1 by default; say it anyway.
http_redis() { echo 'lua_package_path "/usr/share/lua/5.1/?.lua;;";'; }
setup_redis() {
  [ -f /usr/share/lua/5.1/nginx/redis.lua ] && command -v redis-server >/dev/null ||
    die "redis needs lua-nginx-redis and redis-server (scripts/setup.sh installs them)"
  REDIS_PORT=${REDIS_PORT:-needed}   # bench/instructions.sh brings its own redis
}
# HTTPS (issue 8): TLS termination with the same OpenSSL on both sides (an ECDSA P-256
# certificate, the servers' default ciphers, ssl_protocols TLSv1.2 TLSv1.3 on both: Debian's
# nginx 1.22 would stop at TLSv1.2, whose resumption skips the key exchange TLS 1.3 does).
# wrk resumes sessions (TLS 1.3 tickets) on its new connections. *_new: a new connection, so a full
# handshake, per request (wrk sends Connection: close); otherwise keepalive.
scenario_https_hello() { scenario_hello; }
scenario_https_hello_new() { scenario_hello; }
scenario_https_proxy() { proxy_location; }
scenario_https_proxy_new() { proxy_location; }
http_https_proxy() { upstream_backend 64; }
http_https_proxy_new() { upstream_backend 64; }
setup_https_hello() { TLS=1; }
setup_https_hello_new() { TLS=1 WRK_HEADER="Connection: close"; }
setup_https_proxy() { TLS=1 BACKEND=1; }
setup_https_proxy_new() { TLS=1 BACKEND=1 WRK_HEADER="Connection: close"; }
setup_shdict_ops() { WORKERS=${SHDICT_WORKERS:-2} SERVER_CPUS=${SHDICT_CPUS:-0,1}; CONNS=${CONNS:-4}; }

die() { echo "bench: $*" >&2; exit 1; }

declare -F "scenario_$SCENARIO" >/dev/null ||
  die "unknown scenario '$SCENARIO' (have: $(declare -F | sed -n 's/.* scenario_//p' | tr '\n' ' '))"
[ -x "$TIDEGATE" ] ||
  die "tidegate binary not found at '$TIDEGATE': build it first, or set TIDEGATE=/path/to/tidegate"
TIDEGATE=$(realpath "$TIDEGATE")
if declare -F "setup_$SCENARIO" >/dev/null; then "setup_$SCENARIO"; fi
CONNS=${CONNS:-50} THREADS=${THREADS:-1}
if [ -n "${FLOOR:-}" ]; then SIDES+=" floor"; LABEL[floor]=fl; fi

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
# A proxy holds a client and an upstream socket per connection; wrk and the backend one
# each. The servers inherit this limit.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
((NOFILE >= 2 * CONNS + 64)) || die "ulimit -n is $NOFILE, too low for CONNS=$CONNS (need $((2 * CONNS + 64)))"
WORKER_CONNS=$((2 * CONNS + 64 > 4096 ? 2 * CONNS + 64 : 4096))
TMP=$(mktemp -d /tmp/tidegate-bench.XXXXXX)
SERVER_PID="" BACKEND_PID="" WRK_PID="" DURING_PID="" REDIS_PID=""
cleanup() {
  if [ -n "$WRK_PID" ]; then kill "$WRK_PID" 2>/dev/null || true; fi
  if [ -n "$DURING_PID" ]; then kill "$DURING_PID" 2>/dev/null || true; fi
  if [ -n "$SERVER_PID" ]; then stop SERVER_PID; fi
  if [ -n "$BACKEND_PID" ]; then stop BACKEND_PID; fi
  if [ -n "$REDIS_PID" ]; then kill "$REDIS_PID" 2>/dev/null || true; wait "$REDIS_PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM   # route signals through the EXIT trap

# ---- process accounting ---------------------------------------------------------------
# Prints "pid ticks sys" (utime+stime, stime) for ROOT and all its descendants.
# /proc/PID/stat's comm field may contain spaces, so split after the last ')': then ppid
# is field 2, utime 12, stime 13.
tree() {
  local -A ppid=() ticks=(); local f s pid want=" $1 " grew=1 a
  for f in /proc/[0-9]*/stat; do
    { read -r s <"$f"; } 2>/dev/null || continue
    pid=${s%% *}; read -ra a <<<"${s##*) }"
    ppid[$pid]=${a[1]}; ticks[$pid]="$((a[11] + a[12])) ${a[12]}"
  done
  while ((grew)); do   # fixpoint: workers of the master, and any of theirs
    grew=0
    for pid in "${!ppid[@]}"; do
      if [[ $want == *" ${ppid[$pid]} "* && $want != *" $pid "* ]]; then want+="$pid "; grew=1; fi
    done
  done
  for pid in $want; do if [ -n "${ticks[$pid]:-}" ]; then echo "$pid ${ticks[$pid]}"; fi; done
}
cpu_ticks() { tree "$1" | awk '{ t += $2; s += $3 } END { print t + 0, s + 0 }'; }   # "total sys"
# "busy total" jiffies of CPUs 0 and 1 (whatever runs there, other load included).
# Fields 2-9: user nice system idle iowait irq softirq steal; guest time is in user.
cpus_busy() {
  awk '$1 == "cpu0" || $1 == "cpu1" { t = 0; for (i = 2; i <= 9; i++) t += $i
    printf "%d %d ", t - $5 - $6, t }' /proc/stat
}

# ---- servers --------------------------------------------------------------------------
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

write_conf() {   # write_conf SIDE PORT -> path of a fresh prefix dir holding conf
  local dir="$TMP/$1" kind=${1%%_*}; rm -rf "$dir"; mkdir -p "$dir/logs"
  if [ "$kind" = floor ]; then kind=tidegate; fi   # its wrapper reads only the ports
  { [ "$kind" = nginx ] && echo "$NGX_MODULES"
    cat <<EOF
daemon off; master_process on; worker_processes $WORKERS;
error_log $dir/logs/error.log warn; pid $dir/logs/server.pid;
events { worker_connections $WORKER_CONNS; }
http {
  access_log off; keepalive_requests 1000000;
  $(if declare -F "http_$SCENARIO" >/dev/null; then "http_$SCENARIO" "$kind" "$1"; fi)
  server {
    listen 127.0.0.1:$2${TLS:+ ssl};
    ${TLS:+ssl_certificate $TMP/tls.crt; ssl_certificate_key $TMP/tls.key; ssl_protocols TLSv1.2 TLSv1.3;}
    $("scenario_$SCENARIO" "$kind" "$1")
  }
}
EOF
  } >"$dir/server.conf"
  echo "$dir"
}

server_bin() {
  case ${1%%_*} in tidegate) echo "$TIDEGATE" ;; floor) echo "$TMP/floor-bin/wrapper" ;; *) echo "$NGINX" ;; esac
}
# The floor side: run.sh starts a server as "BIN -p DIR -c CONF" after "BIN -t ..."; the
# wrapper takes the port from the conf (and, for the redis scenario, redis's port from the
# handler, so that the responder asks redis too).
make_floor() {
  mkdir -p "$TMP/floor-bin"   # not TMP/floor: write_conf makes that the side's prefix
  cc -O2 -o "$TMP/floor-bin/minimal_responder" bench/floor/minimal_responder.c || die "cannot build the floor responder"
  cat >"$TMP/floor-bin/wrapper" <<WRAP
#!/usr/bin/env bash
while [ \$# -gt 0 ]; do case \$1 in -c) conf=\$2; shift;; -t) exit 0;; esac; shift; done
redis=\$(grep -o 'connect("127.0.0.1", [0-9]*' "\$conf" | grep -o '[0-9]*\$' || true)
exec "$TMP/floor-bin/minimal_responder" "\$(grep -o 'listen 127.0.0.1:[0-9]*' "\$conf" | cut -d: -f2)" \$redis
WRAP
  chmod +x "$TMP/floor-bin/wrapper"
}

# launch VAR BIN CPUS DIR PORT: starts BIN with DIR's conf pinned to CPUS (workers inherit
# the mask; taskset execs, so the pid is the master's), stores the pid in VAR at once (so
# cleanup can stop it) and returns when a worker answers, not merely when the port is bound.
launch() {
  local deadline=$((SECONDS + 10)) scheme=http
  if [ "$1" = SERVER_PID ] && [ -n "$TLS" ]; then scheme=https; fi
  taskset -c "$3" "$2" -p "$4/" -c "$4/server.conf" >"$4/logs/stdout" 2>&1 &
  printf -v "$1" %s $!
  until curl -kfsS -o /dev/null --max-time 1 "$scheme://127.0.0.1:$5/" 2>/dev/null; do
    if ! kill -0 "${!1}" 2>/dev/null || ((SECONDS > deadline)); then
      cat "$4/logs/stdout" "$4/logs/error.log" >&2 2>/dev/null || true
      die "$2 did not become ready on port $5"
    fi
    sleep 0.05
  done
}

start_server() { launch SERVER_PID "$(server_bin "$1")" "$SERVER_CPUS" "$(write_conf "$1" "$2")" "$2"; }

# The proxies' upstream: plain nginx (no lua module), on the load CPU beside wrk so the
# gateway has CPU 0 to itself. It never closes a keepalive connection first.
write_backend_conf() {   # write_backend_conf DIR: DIR/server.conf, DIR/logs/
  local dir=$1; mkdir -p "$dir/logs"
  cat >"$dir/server.conf" <<EOF
daemon off; master_process on; worker_processes $BACKEND_WORKERS;
error_log $dir/logs/error.log warn; pid $dir/logs/server.pid;
events { worker_connections $WORKER_CONNS; }
http {
  access_log off; keepalive_requests 1000000; keepalive_timeout 600s;
  server {
    listen 127.0.0.1:$BACKEND_PORT;
    location / { return 200 "hello"; }
    location = /bench-status { stub_status; }
  }
}
EOF
}
start_backend() {
  write_backend_conf "$TMP/backend"
  launch BACKEND_PID "$NGINX" 1 "$TMP/backend" "$BACKEND_PORT"
}
# The redis scenario's server: no persistence, on CPU 1 beside wrk, holding the key
# every request reads. Ready when redis-cli can set it.
start_redis() {
  local deadline=$((SECONDS + 10))
  taskset -c 1 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$TMP" >"$TMP/redis.log" 2>&1 &
  REDIS_PID=$!
  until [ "$(redis-cli -p "$REDIS_PORT" set bench hello 2>/dev/null)" = OK ]; do
    if ! kill -0 "$REDIS_PID" 2>/dev/null || ((SECONDS > deadline)); then
      cat "$TMP/redis.log" >&2
      die "redis-server did not become ready on port $REDIS_PORT"
    fi
    sleep 0.05
  done
}
backend_accepts() {   # connections the backend has accepted so far (this request's too)
  curl -fsS --max-time 2 "http://127.0.0.1:$BACKEND_PORT/bench-status" | awk 'NR == 3 { print $1 }'
}

stop() {   # stop VAR: graceful QUIT of the tree whose root pid VAR holds, SIGKILL after 10 s
  local pid=${!1} deadline=$((SECONDS + 10)) left
  printf -v "$1" %s ""
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

# Each side's conf must pass its server's -t. tidegate refusing one means a directive it
# does not have yet: the scenario is skipped, not failed, and runs once it lands.
check_confs() {
  local side dir out
  for side in $SIDES; do
    dir=$(write_conf "$side" 1)
    out=$("$(server_bin "$side")" -t -p "$dir/" -c "$dir/server.conf" 2>&1) && continue
    [ "${side%%_*}" = tidegate ] || die "$side -t refuses the $SCENARIO conf:"$'\n'"$out"
    echo "bench: SKIPPED $SCENARIO: tidegate -t refuses its conf:" >&2
    sed 's/^/  /' <<<"$out" >&2
    exit 0
  done
}

# ---- one run: sets RESULT="req/s p99_us cpu_us_per_req est new backend% cpu0% cpu1% sys_us_per_req"
# Called directly, never in $(...): a subshell does not run the EXIT trap, so a failure
# there would orphan the server. est, new and backend% are "-" without a backend.
to_us() { awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
  print (u == "s" ? n * 1e6 : u == "ms" ? n * 1e3 : n) }'; }

run_one() {
  local port out c0 c1 k0 k1 b0=0 b1=0 n0=0 n1=1 est=- s0 s1 t0 t1 reqs rps p99 n
  port=$(free_port)
  start_server "$1" "$port"
  if [ -n "$BACKEND" ]; then n0=$(backend_accepts); read -r b0 _ < <(cpu_ticks "$BACKEND_PID"); fi
  s0=$(cpus_busy) t0=$EPOCHREALTIME
  read -r c0 k0 < <(cpu_ticks "$SERVER_PID")
  # wrk catches SIGINT and exits 0, so bash would swallow a Ctrl-C given to a foreground
  # wrk and carry on; `wait` on a background wrk is interrupted by the trap instead.
  taskset -c 1 wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency ${WRK_HEADER:+-H "$WRK_HEADER"} \
    "$SCHEME://127.0.0.1:$port/" >"$TMP/wrk.out" &
  WRK_PID=$!
  if declare -F "during_$SCENARIO" >/dev/null; then
    "during_$SCENARIO" "$1" &
    DURING_PID=$!
  fi
  if [ -n "$BACKEND" ]; then   # how many connections the gateway holds to the backend
    sleep "$(awk -v d="$DURATION" 'BEGIN { print d / 2 }')"
    est=$(ss -Htn state established "( dport = :$BACKEND_PORT )" | wc -l)
  fi
  wait "$WRK_PID"
  WRK_PID=""
  if [ -n "$DURING_PID" ]; then kill "$DURING_PID" 2>/dev/null || true; wait "$DURING_PID" 2>/dev/null || true; DURING_PID=""; fi
  read -r c1 k1 < <(cpu_ticks "$SERVER_PID")
  s1=$(cpus_busy) t1=$EPOCHREALTIME
  if [ -n "$BACKEND" ]; then read -r b1 _ < <(cpu_ticks "$BACKEND_PID"); n1=$(backend_accepts); fi
  stop SERVER_PID
  out=$(<"$TMP/wrk.out")
  # Errors or non-2xx make the CPU/request meaningless; say so loudly but keep the data.
  grep -E 'Socket errors|Non-2xx' <<<"$out" | sed "s/^ */bench: WARNING $1 round $round: /" >&2 || true
  n=$(grep -cE '\[(error|crit|alert|emerg)\]' "$TMP/$1/logs/error.log" 2>/dev/null) || true
  if ((n > 0)); then
    echo "bench: WARNING $1 round $round: $n error lines in its log; the first:" >&2
    grep -m1 -E '\[(error|crit|alert|emerg)\]' "$TMP/$1/logs/error.log" >&2
  fi
  reqs=$(awk '/requests in/ { print $1 }' <<<"$out")
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  p99=$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  [[ $reqs =~ ^[1-9][0-9]*$ ]] || die "$1: wrk reported no requests:"$'\n'"$out"
  # new: connections the backend accepted during the run, less the second status request.
  RESULT=$(awk -v r="$rps" -v p="$p99" -v t=$((c1 - c0)) -v k=$((k1 - k0)) -v hz="$TICK" -v n="$reqs" \
    -v est="$est" -v new=$((n1 - n0 - 1)) -v b=$((b1 - b0)) -v wall="$(awk -v a="$t0" -v b="$t1" \
    'BEGIN { print b - a }')" -v s="$s0 $s1" -v bk="$BACKEND" 'BEGIN {
      split(s, c); printf "%.0f %.0f %.3f %s %s %s %.0f %.0f %.3f\n", r, p, t * 1e6 / hz / n,
        est, bk ? new : "-", bk ? sprintf("%.0f", b * 100 / hz / wall) : "-",
        100 * (c[5] - c[1]) / (c[6] - c[2]), 100 * (c[7] - c[3]) / (c[8] - c[4]), k * 1e6 / hz / n }')
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }

# ---- interleaved rounds ---------------------------------------------------------------
if [ -n "$BACKEND" ]; then BACKEND_PORT=${BACKEND_PORT:-$(free_port)}; fi
if [ "${ADMIN_PORT:-}" = needed ]; then ADMIN_PORT=$(free_port); fi
if [ "${REDIS_PORT:-}" = needed ]; then REDIS_PORT=$(free_port); fi
SCHEME=http
if [ -n "$TLS" ]; then
  SCHEME=https
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$TMP/tls.key" \
    -out "$TMP/tls.crt" -subj /CN=localhost -days 2 -addext subjectAltName=DNS:localhost >/dev/null 2>&1 ||
    die "openssl could not make the bench certificate"
fi
if [ -n "${FLOOR:-}" ]; then make_floor; fi
check_confs
# CONF_ONLY=DIR (bench/instructions.sh): each side's prefix (server.conf, logs/) goes to
# DIR/SIDE, listening on CONF_PORT, and the backend's (if the scenario has one, on
# BACKEND_PORT) to DIR/backend; nothing runs.
if [ -n "${CONF_ONLY:-}" ]; then
  if [ -n "$BACKEND" ]; then write_backend_conf "$CONF_ONLY/backend"; fi
  for side in $SIDES; do
    dir=$(write_conf "$side" "${CONF_PORT:?CONF_ONLY needs CONF_PORT}")
    rm -rf "${CONF_ONLY:?}/$side"; cp -r "$dir" "$CONF_ONLY/$side"
    sed -i "s#$dir/#$CONF_ONLY/$side/#g" "$CONF_ONLY/$side/server.conf"
  done
  exit 0
fi
if [ -n "$BACKEND" ]; then start_backend; fi
if [ -n "${REDIS_PORT:-}" ]; then start_redis; fi
read -ra SIDE <<<"$SIDES"
REF=${SIDE[0]}
echo "scenario=$SCENARIO rounds=$ROUNDS conns=$CONNS threads=$THREADS duration=${DURATION}s tidegate=$TIDEGATE"
echo "server ($WORKERS worker(s)) on CPU $SERVER_CPUS, wrk on CPU 1;$(for s in "${SIDE[@]}"; do printf ' %s = %s,' "${LABEL[$s]}" "$s"; done | sed 's/,$//')"
echo "r:* = tidegate/$REF per round; p99 in us; cpu = server CPU (all its processes) in us per request"
if [ -n "$BACKEND" ]; then
  echo "backend: nginx, $BACKEND_WORKERS worker(s) on CPU 1 (with wrk), port $BACKEND_PORT; its CPU is not counted"
fi
if [ -n "${REDIS_PORT:-}" ]; then
  echo "redis: redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on CPU 1 (with wrk), port $REDIS_PORT; its CPU is not counted"
fi
# Columns of $TMP/runs: round side req/s p99 cpu est new backend% cpu0% cpu1% sys
row() {   # row ROUND VALUES...: one table line, three columns per side then the ratios
  local first=$1; shift
  printf '%-6s' "$first"
  while (($# > 3)); do printf ' | %10s %8s %8s' "$1" "$2" "$3"; shift 3; done
  printf ' | %6s %6s %6s\n' "$1" "$2" "$3"
}
heads=()
for s in "${SIDE[@]}"; do l=${LABEL[$s]}; heads+=("$l req/s" "$l p99" "$l cpu"); done
row round "${heads[@]}" r:rps r:p99 r:cpu
# Per-round NUM/SIDE ratios of column COL (NUM: tidegate unless given): ratios SIDE COL [ROUND [NUM]]
ratios() {
  awk -v s="$1" -v c="$2" -v only="${3:-}" -v num="${4:-tidegate}" '$2 == num { t[$1] = $c } $2 == s { r[$1] = $c }
    END { for (k in t) if ((only == "" || k == only) && r[k] > 0) printf "%.3f\n", t[k] / r[k] }' "$TMP/runs"
}
values() { awk -v s="$1" -v c="$2" '$2 == s { print $c }' "$TMP/runs"; }   # values SIDE COL
: >"$TMP/runs"
for ((round = 1; round <= ROUNDS; round++)); do
  # Rotate the order each round, so no side always gets the cooler or the warmer slot.
  cells=() notes=""
  for ((i = 0; i < ${#SIDE[@]}; i++)); do
    s=${SIDE[(i + round - 1) % ${#SIDE[@]}]}
    run_one "$s"
    echo "$round $s $RESULT" >>"$TMP/runs"
  done
  for s in "${SIDE[@]}"; do
    read -r rps p99 cpu est new bk c0 c1 _ < <(awk -v r="$round" -v s="$s" '$1 == r && $2 == s' "$TMP/runs" | cut -d' ' -f3-)
    cells+=("$rps" "$p99" "$cpu")
    notes+=" ${LABEL[$s]} $est/$new ${bk}% $c0/$c1;"
  done
  row "$round" "${cells[@]}" "$(ratios "$REF" 3 "$round")" "$(ratios "$REF" 4 "$round")" "$(ratios "$REF" 5 "$round")"
  if [ -n "$BACKEND" ]; then echo "       backend conns est/new, backend CPU, CPU 0/1 % busy:${notes%;}"; fi
done

cells=()
for s in "${SIDE[@]}"; do
  cells+=("$(printf '%.0f %.0f %.3f' "$(values "$s" 3 | median)" "$(values "$s" 4 | median)" "$(values "$s" 5 | median)")")
done
cells+=("$(printf '%.3f %.3f %.3f' "$(ratios "$REF" 3 | median)" "$(ratios "$REF" 4 | median)" "$(ratios "$REF" 5 | median)")")
row median ${cells[*]}
echo
# The range shows how far single rounds scatter, i.e. how much to trust the median.
summary() {   # summary LABEL COLUMN SIDE [NUM]
  local lo hi num=${4:-tidegate}
  read -r lo hi < <(ratios "$3" "$2" "" "$num" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo, hi }')
  printf '%s: %s ratio (%s/%s) median = %.2f over %d rounds (range %.2f-%.2f)\n' \
    "$SCENARIO" "$1" "$num" "$3" "$(ratios "$3" "$2" "" "$num" | median)" "$ROUNDS" "$lo" "$hi"
}
for s in "${SIDE[@]}"; do
  [ "$s" = tidegate ] && continue
  summary req/s 3 "$s"
  summary p99 4 "$s"
  summary cpu/req 5 "$s"
done
# With FLOOR=1: the floor itself (floor/REF), measured in the same rounds as tidegate/floor.
if [ -n "${FLOOR:-}" ]; then summary cpu/req 5 "$REF" floor; fi
# The kernel's part (system time) of each side's CPU per request: both servers make the
# same system calls for a request, so this part is about equal and bounds the ratio.
line=""
for s in "${SIDE[@]}"; do
  line+=" ${LABEL[$s]} $(printf '%.2f of %.2f' "$(values "$s" 11 | median)" "$(values "$s" 5 | median)"),"
done
echo "$SCENARIO: kernel part of the CPU per request (median us):${line%,}"
[ -n "$BACKEND" ] || exit 0

# Pooling: a gateway that pools holds about CONNS connections to the backend and opens
# few new ones (each is reopened after keepalive_requests, 1000 by default, requests).
line=""
for s in "${SIDE[@]}"; do
  line+=" $s $(values "$s" 6 | median) established, $(values "$s" 7 | median) new per run;"
done
echo "$SCENARIO: backend connections (median):${line%;}"
# The backend shares CPU 1 with wrk. If either saturates it, req/s and p99 describe the
# load side rather than the gateway; CPU per request still holds.
read -r bmax lmax < <(awk '{ if ($8 > b) b = $8; if ($10 > l) l = $10 } END { print b + 0, l + 0 }' "$TMP/runs")
echo "$SCENARIO: backend CPU max ${bmax}% (of CPU 1); CPU 1 (wrk + backend + others) busy max ${lmax}%"
if ((bmax >= 90)); then   # all its workers share CPU 1
  echo "$SCENARIO: WARNING the backend was saturated: req/s and p99 are the backend's, not the gateway's"
elif ((lmax >= 95)); then
  echo "$SCENARIO: WARNING CPU 1 (wrk + backend) was saturated: req/s and p99 may be the load side's"
fi
