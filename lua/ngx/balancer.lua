-- ngx.balancer as lua-resty-core provides it, for balancer_by_lua*: the
-- arguments, return values and error texts are OpenResty's. The work is done
-- by the tg_balancer_* FFI functions (src/lua/api/ngx_balancer.cc), which
-- answer "API disabled in the current context" outside balancer_by_lua*.
-- tidegate's extension: set_more_tries(count, retry_on).
local ffi = require "ffi"
local C = require "tidegate.cdefs"
local base = require "resty.core.base"

local ffi_string = ffi.string
local get_request = base.get_request
local error = error
local type = type
local tonumber = tonumber
local tostring = tostring

local errmsg = ffi.new("const char*[1]")
local int_out = ffi.new("int[1]")

-- The statuses retry_on may name: those proxy_next_upstream has an http_*
-- condition for (conf::nextUpstreamForStatus).
local retryable = { [500] = true, [502] = true, [503] = true, [504] = true, [403] = true, [404] = true, [429] = true }
local max_retry_on = 16
local retry_on_buf = ffi.new("int[?]", max_retry_on)

local peer_state_names = { [2] = "next", [4] = "failed" }

local _M = { version = "0.1.28" }

local function request()
  local r = get_request()
  if not r then
    error("no request found", 3)
  end
  return r
end

local function failure()
  return nil, ffi_string(errmsg[0])
end

-- set_current_peer(host, port?): host is an IP address, optionally with
-- ":port"; `host_name` (OpenResty's third argument, for upstream TLS and
-- the pool key) is accepted and not used: tidegate has no upstream TLS yet.
function _M.set_current_peer(addr, port, host_name)
  local r = request()
  if type(addr) ~= "string" then
    error("bad argument #1 to 'set_current_peer' (string expected, got " .. type(addr) .. ")", 2)
  end
  if not port then
    port = 0
  elseif type(port) ~= "number" then
    port = tonumber(port) or 0
  end
  if host_name ~= nil and type(host_name) ~= "string" then
    error("bad argument #3 to 'set_current_peer' (string expected, got " .. type(host_name) .. ")", 2)
  end
  if C.tg_balancer_set_current_peer(r, addr, #addr, port, errmsg) == 0 then
    return true
  end
  return failure()
end

-- set_more_tries(count, retry_on?): `retry_on`, a table of statuses
-- ({502, 503}), retries them for this request as proxy_next_upstream
-- http_502 http_503 would.
function _M.set_more_tries(count, retry_on)
  local r = request()
  if type(count) ~= "number" then
    error("bad argument #1 to 'set_more_tries' (number expected, got " .. type(count) .. ")", 2)
  end
  local n = 0
  if retry_on ~= nil then
    if type(retry_on) ~= "table" then
      error("bad argument #2 to 'set_more_tries' (table expected, got " .. type(retry_on) .. ")", 2)
    end
    n = #retry_on
    if n > max_retry_on then
      error("bad argument #2 to 'set_more_tries' (too many statuses)", 2)
    end
    for i = 1, n do
      local status = retry_on[i]
      if not retryable[status] then
        error("bad argument #2 to 'set_more_tries' (cannot retry on status " .. tostring(status)
              .. ": 500, 502, 503, 504, 403, 404 or 429 expected)", 2)
      end
      retry_on_buf[i - 1] = status
    end
  end
  local rc = C.tg_balancer_set_more_tries(r, count, retry_on_buf, n, errmsg)
  if rc == 0 then
    return true
  end
  if rc == 1 then
    return true, ffi_string(errmsg[0])  -- the warning
  end
  return failure()
end

function _M.get_last_failure()
  local r = request()
  local state = C.tg_balancer_get_last_failure(r, int_out, errmsg)
  if state == 0 then
    return nil
  end
  if state < 0 then
    return nil, nil, ffi_string(errmsg[0])
  end
  return peer_state_names[state] or "unknown", int_out[0]
end

-- A timeout argument in seconds: nil keeps the value in force (0 to C).
local function timeout_ms(value, what)
  if not value then
    return 0
  end
  if type(value) ~= "number" or value <= 0 then
    error("bad " .. what .. " timeout", 3)
  end
  return value * 1000
end

function _M.set_timeouts(connect_timeout, send_timeout, read_timeout)
  local r = request()
  local connect_ms = timeout_ms(connect_timeout, "connect")
  local send_ms = timeout_ms(send_timeout, "send")
  local read_ms = timeout_ms(read_timeout, "read")
  if C.tg_balancer_set_timeouts(r, connect_ms, send_ms, read_ms, errmsg) == 0 then
    return true
  end
  return false, ffi_string(errmsg[0])
end

-- An optional non-negative number argument of enable_keepalive.
local function keepalive_arg(value, argn, default)
  if not value then
    return default
  end
  if type(value) ~= "number" then
    error("bad argument #" .. argn .. " to 'enable_keepalive' (number expected, got " .. type(value) .. ")", 3)
  end
  if value < 0 then
    error("bad argument #" .. argn .. " to 'enable_keepalive' (expected >= 0)", 3)
  end
  return value
end

-- enable_keepalive(idle_timeout?, max_requests?): seconds (default 60) and
-- requests (default 100) for the connection to the peer set.
function _M.enable_keepalive(idle_timeout, max_requests)
  local r = request()
  idle_timeout = keepalive_arg(idle_timeout, 1, 60)
  max_requests = keepalive_arg(max_requests, 2, 100)
  if C.tg_balancer_enable_keepalive(r, idle_timeout * 1000, max_requests, errmsg) == 0 then
    return true
  end
  return failure()
end

function _M.recreate_request()
  local r = request()
  if C.tg_balancer_recreate_request(r, errmsg) == 0 then
    return true
  end
  return failure()
end

return _M
