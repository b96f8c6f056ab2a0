-- The environment of sandboxed functions (content_by_function), built fresh
-- for every request from a whitelist (docs/functions.md). Everything handed
-- to user code is either a per-request copy (string, table, math, os, ngx,
-- ngx.req, ngx.re) or a proxy whose metatable is hidden (ngx.header,
-- ngx.var, ngx.shared.*, required modules), so one request cannot change
-- what the next one sees. The real values are captured here, when the
-- worker first runs a function; user code never reaches this module.
--
-- Loaded by src/lua/sandbox/functions.cc: require("tidegate.sandbox")(killed,
-- KILL, conf) returns new_env(name) and run(chunk). `killed()` says whether
-- the running request exceeded a budget; KILL is the error value the
-- budget hook raises (a light userdata user code cannot make).

local real_ngx = ngx
local string, table, math, os = string, table, math, os
local pairs, ipairs, type, error, rawset, tostring = pairs, ipairs, type, error, rawset, tostring
local G = _G
local real_pcall, real_xpcall = pcall, xpcall
local real_setmt, real_getmt = setmetatable, getmetatable
local real_require = require

local function copy(src, names)
  local out = {}
  if names then
    for _, k in ipairs(names) do out[k] = src[k] end
  else
    for k, v in pairs(src) do out[k] = v end
  end
  return out
end

-- A read-only view of `t`: reads go to it, writes fail, the metatable is
-- hidden (getmetatable gives false, setmetatable refuses).
local function readonly(t, what)
  return real_setmt({}, {
    __index = t,
    __newindex = function() error(what .. " is read-only", 2) end,
    __metatable = false,
  })
end

-- JSON: lua-cjson when the system has it (encode/decode only: its
-- settings are process-wide).
local json_libs = {}
for _, name in ipairs({ "cjson", "cjson.safe" }) do
  local ok, lib = pcall(real_require, name)
  if ok and type(lib) == "table" then json_libs[name] = lib end
end
local kJson = { "encode", "decode", "null", "empty_array" }

-- Lua patterns run in C, where the budget hook cannot stop them, and
-- backtrack: k quantifiers over n bytes may take about n^k steps at each of
-- n starting positions
-- (string.find(string.rep("a", 300), string.rep("a-", 6) .. "b") runs for
-- hours). The sandbox's find/match/gmatch/gsub refuse a pattern whose bound
-- passes kPatternSteps (about a second of matching); plain finds are linear.
local kPatternSteps = 1e9
local str_byte = string.byte

local function quantifiers(pat)
  local k, i, n = 0, 1, #pat
  while i <= n do
    local c = str_byte(pat, i)
    if c == 37 then  -- '%': the next character is literal
      i = i + 1
    elseif c == 42 or c == 43 or c == 45 then  -- '*' '+' '-' (a range in a set counts too)
      k = k + 1
    end
    i = i + 1
  end
  return k
end

local function check_pattern(fname, s, pat)
  if type(s) ~= "string" and type(s) ~= "number" then return end
  if type(pat) ~= "string" and type(pat) ~= "number" then return end
  pat = tostring(pat)
  local n = #tostring(s) + 1
  -- An anchored pattern is tried at one position only.
  local tries = str_byte(pat, 1) == 94 and 0 or 1  -- '^'
  if n ^ (quantifiers(pat) + tries) > kPatternSteps then
    error("bad argument #2 to '" .. fname .. "' (pattern too complex for this subject in the sandbox)", 3)
  end
end

-- The guarded pattern functions, also put in the real string table while
-- sandboxed code runs (enter/leave below), since strings' methods
-- (("x"):find(...)) are the real table's.
local function guards()
  local s = {}
  local find, match, gmatch, gsub = string.find, string.match, string.gmatch, string.gsub
  s.find = function(str, pat, init, plain)
    if not plain then check_pattern("find", str, pat) end
    return find(str, pat, init, plain)
  end
  s.match = function(str, pat, init)
    check_pattern("match", str, pat)
    return match(str, pat, init)
  end
  s.gmatch = function(str, pat)
    check_pattern("gmatch", str, pat)
    return gmatch(str, pat)
  end
  s.gsub = function(str, pat, repl, n)
    check_pattern("gsub", str, pat)
    return gsub(str, pat, repl, n)
  end
  return s
end
local kGuards = guards()
local kOriginals = { dump = string.dump }
for k in pairs(kGuards) do kOriginals[k] = string[k] end

local function guarded_string()
  local s = {}
  for k, v in pairs(string) do s[k] = v end
  for k, v in pairs(kGuards) do s[k] = v end
  s.dump = nil
  return s
end

-- Around every resume of a sandboxed coroutine (src/lua/sandbox/budget.cc).
local function enter_strings()
  for k, v in pairs(kGuards) do string[k] = v end
  string.dump = nil
end
local function leave_strings()
  for k, v in pairs(kOriginals) do string[k] = v end
end

local kBase = { "assert", "error", "ipairs", "next", "pairs", "select", "tonumber", "tostring", "type",
  "unpack", "rawequal", "rawget", "_VERSION" }
local kNgx = { "say", "print", "exit", "log", "now", "time", "today", "localtime", "utctime", "http_time",
  "update_time", "md5", "md5_bin", "sha1_bin", "crc32_short", "crc32_long", "encode_base64", "decode_base64",
  "escape_uri", "unescape_uri", "encode_args", "decode_args", "quote_sql_str", "sleep", "flush", "eof",
  "get_phase", "null" }
local kReq = { "get_method", "get_uri_args", "get_post_args", "get_headers", "read_body", "get_body_data",
  "http_version", "raw_header", "start_time", "is_internal" }
local kRe = { "match", "find", "gmatch", "sub", "gsub" }
local kDict = { "get", "get_stale", "set", "safe_set", "add", "safe_add", "replace", "incr", "delete", "ttl",
  "expire", "capacity", "free_space", "lpush", "rpush", "lpop", "rpop", "llen", "get_keys", "flush_all" }

return function(killed, KILL, conf)
  -- Metatables set by sandboxed code: the only ones getmetatable shows it.
  local user_mts = real_setmt({}, { __mode = "k" })

  local function sb_setmetatable(t, mt)
    if type(t) ~= "table" then error("bad argument #1 to 'setmetatable' (table expected)", 2) end
    local cur = real_getmt(t)
    if cur ~= nil and not user_mts[cur] then error("cannot change a protected metatable", 2) end
    if mt ~= nil then user_mts[mt] = true end
    return real_setmt(t, mt)
  end

  local function sb_getmetatable(v)
    local mt = real_getmt(v)
    if type(v) == "table" and mt ~= nil and user_mts[mt] then return mt end
    return nil
  end

  -- pcall/xpcall that cannot catch a budget kill: once the request is
  -- killed, they raise KILL again (and the hook keeps raising it).
  local function rethrow(...)
    if killed() then error(KILL, 0) end
    return ...
  end
  local function sb_pcall(f, ...) return rethrow(real_pcall(f, ...)) end
  local function sb_xpcall(f, handler, ...)
    return rethrow(real_xpcall(f, function(e)
      if killed() then return e end
      return handler(e)
    end, ...))
  end

  local dicts_allowed = {}
  for _, n in ipairs(conf.shared_dicts) do dicts_allowed[n] = true end
  local modules_allowed = {}
  for _, n in ipairs(conf.modules) do modules_allowed[n] = true end

  local function dict_proxy(real)
    local d = {}
    for _, m in ipairs(kDict) do
      if real[m] then d[m] = function(_, ...) return real[m](real, ...) end end
    end
    return readonly(d, "a shared dict")
  end

  local function new_ngx()
    local n = copy(real_ngx, kNgx)
    for k, v in pairs(real_ngx) do
      if type(v) == "number" then n[k] = v end  -- ngx.OK, ngx.HTTP_*, ngx.ERR, ...
    end
    n.req = copy(real_ngx.req, kReq)
    n.re = copy(real_ngx.re, kRe)
    n.header = real_setmt({}, {
      __index = function(_, k) return real_ngx.header[k] end,
      __newindex = function(_, k, v) real_ngx.header[k] = v end,
      __metatable = false,
    })
    n.var = real_setmt({}, {
      __index = function(_, k) return real_ngx.var[k] end,
      __newindex = function() error("ngx.var is read-only in a function", 2) end,
      __metatable = false,
    })
    local dicts = {}
    n.shared = real_setmt({}, {
      __index = function(_, k)
        if not dicts_allowed[k] then return nil end
        local d = dicts[k]
        if not d and real_ngx.shared[k] then
          d = dict_proxy(real_ngx.shared[k])
          dicts[k] = d
        end
        return d
      end,
      __newindex = function() error("ngx.shared is read-only", 2) end,
      __metatable = false,
    })
    -- ngx.status and ngx.ctx are accessors of the real ngx table.
    return real_setmt(n, {
      __index = function(_, k)
        if k == "status" or k == "ctx" or k == "headers_sent" then return real_ngx[k] end
      end,
      __newindex = function(t, k, v)
        if k == "status" or k == "ctx" then
          real_ngx[k] = v
        else
          rawset(t, k, v)
        end
      end,
      __metatable = false,
    })
  end

  local function sb_require(name)
    if json_libs[name] then return copy(json_libs[name], kJson) end
    if not modules_allowed[name] then
      error("module '" .. tostring(name) .. "' is not allowed in the sandbox", 2)
    end
    local m = real_require(name)
    if type(m) == "table" then return readonly(m, "module '" .. name .. "'") end
    return m
  end

  local function new_env()
    local env = copy(G, kBase)
    env.setmetatable = sb_setmetatable
    env.getmetatable = sb_getmetatable
    env.require = sb_require
    if conf.pcall then
      env.pcall = sb_pcall
      env.xpcall = sb_xpcall
    end
    env.string = guarded_string()
    env.table = copy(table)
    env.math = copy(math)
    env.os = copy(os, { "time", "clock", "date", "difftime" })
    env.ngx = new_ngx()
    if json_libs.cjson then env.cjson = copy(json_libs.cjson, kJson) end
    env._G = env
    return env
  end

  -- The entry of a request: the chunk, then the handler it returns (if it
  -- returns a function), in the same request and environment.
  local function run(chunk)
    local r = chunk()
    if type(r) == "function" then return r() end
  end

  return { new_env = new_env, run = run, enter = enter_strings, leave = leave_strings }
end
