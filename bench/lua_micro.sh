#!/usr/bin/env bash
# Micro-benchmark of the request API's two implementations: the FFI fast
# paths (what ngx.var, ngx.ctx, ngx.header and ngx.now use) against the
# lua_CFunctions they fall back to. One request runs each loop N times and
# reports CPU ns per call (os.clock). No nginx here: this is about JIT traces.
# Usage: bench/lua_micro.sh   Env: TIDEGATE=build/tidegate N=2000000
#        BUDGET=300s runs it under lua_budget_timeout (the watchdog's line checks in
#        every trace; compare with a run without it)
set -euo pipefail
cd "$(dirname "$0")/.."
TIDEGATE=${TIDEGATE:-build/tidegate}
N=${N:-2000000}
[ -x "$TIDEGATE" ] || { echo "build first: make build" >&2; exit 1; }
dir=$(mktemp -d)
trap 'kill "$(cat "$dir/logs/tg.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$dir"' EXIT
mkdir -p "$dir/logs"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$dir/tidegate.conf" <<EOC
daemon off;
master_process off;
error_log logs/error.log warn;
pid logs/tg.pid;
events { worker_connections 64; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$port;
    ${BUDGET:+lua_budget_timeout $BUDGET;}
    location /micro {
      content_by_lua_block {
        local capi = require("tidegate.fastpath").capi
        local n = $N
        local var, hdr = ngx.var, ngx.header
        ngx.ctx.x = 1
        local function measure(name, f)
          f(1000)  -- warm up (and let the JIT compile the loop)
          local t0 = os.clock()
          f(n)
          local ns = (os.clock() - t0) * 1e9 / n
          ngx.say(string.format("%-30s %8.1f ns/call", name, ns))
        end
        local cases = {
          {"ngx.var.uri ffi", function(k) local s for i = 1, k do s = var.uri end return s end},
          {"ngx.var.uri cfunction", function(k) local s for i = 1, k do s = capi.var_index(var, "uri") end return s end},
          {"ngx.ctx ffi", function(k) local s for i = 1, k do s = ngx.ctx end return s end},
          {"ngx.ctx cfunction", function(k) local s for i = 1, k do s = capi.ngx_index(ngx, "ctx") end return s end},
          {"ngx.header ffi", function(k) for i = 1, k do hdr.x_a = "v" end end},
          {"ngx.header cfunction", function(k) for i = 1, k do capi.header_newindex(hdr, "x_a", "v") end end},
          {"ngx.now ffi", function(k) local s for i = 1, k do s = ngx.now() end return s end},
          {"ngx.now cfunction", function(k) local s for i = 1, k do s = capi.now() end return s end},
          {"get_headers ffi", function(k) local s for i = 1, k do s = ngx.req.get_headers() end return s end},
          {"get_headers cfunction", function(k) local s for i = 1, k do s = capi.get_headers() end return s end},
        }
        for _, c in ipairs(cases) do measure(c[1], c[2]) end
        -- A handler runs once per request, in the interpreter; the fast paths it
        -- calls are traced on their own. The same calls from loops the JIT may
        -- not compile:
        for _, c in ipairs(cases) do
          local f = c[2]
          jit.off(f)
          measure("interp " .. c[1], f)
        end
      }
    }
  }
}
EOC
"$TIDEGATE" -p "$dir" -c tidegate.conf &
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.05; done
curl -s --max-time 120 "http://127.0.0.1:$port/micro"
