-- The FFI fast paths of the request API (DESIGN.md section 3): ngx.var
-- reads, ngx.ctx, ngx.header writes of one value, ngx.say/ngx.print of one
-- string, ngx.req.get_headers and ngx.now call into the
-- binary through ffi.C, which JIT-compiled code can do without leaving the
-- trace; a lua_CFunction call ends it. Anything unusual (no request, a
-- phase that refuses the API, tables, errors) falls back to the
-- lua_CFunction, which keeps OpenResty's behaviour and error texts.
-- Vm::create() loads this module once, after the ngx table exists.
local ffi = require "ffi"
local C = require "tidegate.cdefs"

local ffi_string = ffi.string
local type = type
local tostring = tostring
local registry = debug.getregistry()

local value_ptr = ffi.new("const char*[1]")
local len_ptr = ffi.new("size_t[1]")

local capi = {}

-- ngx.var.NAME
local var_mt = getmetatable(ngx.var)
capi.var_index = var_mt.__index
local c_var_index = capi.var_index
var_mt.__index = function(t, name)
  if type(name) == "string" then
    local r = C.tg_get_request()
    if r ~= nil then
      local rc = C.tg_var_get(r, name, #name, value_ptr, len_ptr)
      if rc == 0 then
        -- Not a tail call: a trace that starts here may then return to the
        -- (interpreted) caller; "return ffi_string(...)" aborts it.
        local value = ffi_string(value_ptr[0], len_ptr[0])
        return value
      end
      if rc == 1 then
        return nil
      end
    end
  end
  return c_var_index(t, name)
end

-- ngx.ctx (and ngx.status, through the same metatable)
local ngx_mt = getmetatable(ngx)
capi.ngx_index = ngx_mt.__index
local c_ngx_index = capi.ngx_index
ngx_mt.__index = function(t, key)
  if key == "ctx" then
    local r = C.tg_get_request()
    if r ~= nil then
      local ref = C.tg_ctx_ref(r)
      if ref >= 0 then
        return registry[ref]
      end
    end
  end
  return c_ngx_index(t, key)
end

-- ngx.header.NAME = value
local header_mt = getmetatable(ngx.header)
capi.header_newindex = header_mt.__newindex
local c_header_newindex = capi.header_newindex
header_mt.__newindex = function(t, name, value)
  local vt = type(value)
  if type(name) == "string" and (vt == "string" or vt == "number") then
    local r = C.tg_get_request()
    if r ~= nil then
      if vt == "number" then
        value = tostring(value)
      end
      if C.tg_header_set(r, name, #name, value, #value) == 0 then
        return
      end
    end
  end
  return c_header_newindex(t, name, value)
end

-- ngx.say / ngx.print of one string (the common case). The FFI calls are in a
-- function of fixed arguments: LuaJIT never starts a trace in a vararg function,
-- and FFI calls that the interpreter makes cost some 1,500 instructions each
-- (bench/instructions.sh lua_say: 11,100 per request with them in the vararg
-- function itself, more than the lua_CFunction's path).
local function output_one(s, newline)
  local r = C.tg_get_request()
  if r ~= nil and C.tg_output(r, s, #s, newline) == 0 then
    return true
  end
  return false
end
local function output_integer(n, newline)
  local r = C.tg_get_request()
  if r ~= nil and C.tg_output_integer(r, n, newline) == 0 then
    return true
  end
  return false
end
local function fast_output(c_fn, newline)
  return function(...)
    local s = ...
    if select("#", ...) == 1 then
      local t = type(s)
      if t == "string" and output_one(s, newline) then
        return 1
      end
      if t == "number" and output_integer(s, newline) then
        return 1
      end
    end
    return c_fn(...)
  end
end
capi.say = ngx.say
capi.print = ngx.print
ngx.say = fast_output(capi.say, 1)
ngx.print = fast_output(capi.print, 0)

-- ngx.req.get_headers(max?, raw?)
local new_tab = require "table.new"
local headers_mt = {
  -- h.user_agent and h["User-Agent"] find "user-agent", as OpenResty's.
  __index = function(t, key)
    if type(key) ~= "string" then
      return nil
    end
    return rawget(t, (string.lower(key):gsub("_", "-")))
  end,
}
local header_cap = 32
local header_buf = ffi.new("tg_header_t[?]", header_cap)
capi.get_headers = ngx.req.get_headers
local c_get_headers = capi.get_headers
ngx.req.get_headers = function(max, raw)
  local r = C.tg_get_request()
  if r == nil or (max ~= nil and type(max) ~= "number") then
    return c_get_headers(max, raw)
  end
  raw = raw and 1 or 0
  local n = C.tg_req_headers(r, header_buf, header_cap, raw)
  if n < 0 then
    return c_get_headers(max, raw ~= 0)
  end
  max = max or 100
  local take = n
  if max > 0 and n > max then
    take = max
  end
  if take > header_cap then
    header_cap = take
    header_buf = ffi.new("tg_header_t[?]", take)
    C.tg_req_headers(r, header_buf, take, raw)
  end
  local t = new_tab(0, take)
  for i = 0, take - 1 do
    local h = header_buf[i]
    local name = ffi_string(h.name, h.name_len)
    local value = ffi_string(h.value, h.value_len)
    local old = t[name]
    if old == nil then
      t[name] = value
    elseif type(old) == "table" then
      old[#old + 1] = value
    else
      t[name] = { old, value }
    end
  end
  if raw == 0 then
    setmetatable(t, headers_mt)
  end
  if take < n then
    return t, "truncated"
  end
  return t
end

-- ngx.now()
capi.now = ngx.now
ngx.now = function()
  local now = C.tg_now()  -- not a tail call (see ngx.var above)
  return now
end

-- ngx.shared.DICT:get(key) and :set(key, value, exptime?, flags?) for a
-- string key and a string, number or boolean value.
local shdict = registry["tidegate.shdict.methods"]
if shdict then
  -- zone[2]: the dict as a void* cdata. A lightuserdata argument is a JIT
  -- "NYI: unsupported C type conversion": every call would leave the trace.
  local cast = ffi.cast
  for _, zone in pairs(ngx.shared) do
    rawset(zone, 2, cast("void*", zone[1]))
  end
  local res = ffi.new("tg_shdict_result_t[1]")
  local str_ptr = ffi.new("const char*[1]")
  local tonumber = tonumber
  capi.shdict_get = shdict.get
  local c_get = capi.shdict_get
  shdict.get = function(zone, key)
    if type(zone) == "table" and type(key) == "string" then
      local d = zone[2]
      local n = #key
      if d ~= nil and n > 0 and n <= 65535 then
        local rc = C.tg_shdict_get(d, key, n, res, str_ptr)
        if rc == 1 then
          return nil
        end
        if rc == 0 then
          local r = res[0]
          local t = r.type
          local v
          if t == 4 then
            v = ffi_string(str_ptr[0], r.len)
          elseif t == 3 then
            v = tonumber(r.number)
          else
            v = r.number ~= 0
          end
          if r.flags ~= 0 then
            return v, tonumber(r.flags)
          end
          return v
        end
      end
    end
    return c_get(zone, key)
  end
  capi.shdict_set = shdict.set
  local c_set = capi.shdict_set
  shdict.set = function(zone, key, value, exptime, flags)
    if type(zone) == "table" and type(key) == "string" then
      local d = zone[2]
      local n = #key
      local vt = type(value)
      if d ~= nil and n > 0 and n <= 65535 and (exptime == nil or type(exptime) == "number")
          and (flags == nil or type(flags) == "number") then
        local rc = -1
        if vt == "string" then
          rc = C.tg_shdict_set(d, key, n, 4, value, #value, 0, exptime or 0, flags or 0, res)
        elseif vt == "number" then
          rc = C.tg_shdict_set(d, key, n, 3, nil, 0, value, exptime or 0, flags or 0, res)
        elseif vt == "boolean" then
          rc = C.tg_shdict_set(d, key, n, 1, nil, 0, value and 1 or 0, exptime or 0, flags or 0, res)
        end
        if rc == 0 then
          return true, nil, res[0].forcible ~= 0
        end
        if rc == 1 then
          return false, "no memory", res[0].forcible ~= 0
        end
      end
    end
    return c_set(zone, key, value, exptime, flags)
  end
  capi.shdict_incr = shdict.incr
  local c_incr = capi.shdict_incr
  shdict.incr = function(zone, key, value, init, init_ttl)
    if type(zone) == "table" and type(key) == "string" and type(value) == "number" then
      local d = zone[2]
      local n = #key
      if d ~= nil and n > 0 and n <= 65535 and (init == nil or type(init) == "number")
          and (init_ttl == nil or (init ~= nil and type(init_ttl) == "number")) then
        -- An error changes nothing: the lua_CFunction then returns it.
        local rc = C.tg_shdict_incr(d, key, n, value, init ~= nil and 1 or 0, init or 0, init_ttl or 0, res)
        if rc == 0 then
          return res[0].number, nil, res[0].forcible ~= 0
        end
      end
    end
    return c_incr(zone, key, value, init, init_ttl)
  end
end

-- require(name) of a module already loaded (handlers often require theirs on
-- every request): a table lookup that a trace can hold, where the C function
-- would end it. Only a table or a function: anything else (not loaded yet,
-- true for a module that returned nothing, the sentinel of one being loaded,
-- which this LuaJIT shows Lua as a number) goes to the C function.
local loaded = package.loaded
capi.require = require
local c_require = capi.require
require = function(name)  -- luacheck: ignore (a global on purpose)
  local m = loaded[name]
  local t = type(m)
  if t == "table" or t == "function" then
    return m
  end
  return c_require(name)
end

-- The lua_CFunction versions, for bench/lua_micro.sh.
return { capi = capi }
