-- Whether a request handler's code can tell a table of globals of its own
-- from one that every request shares (src/lua/vm.cc, Vm::keepsGlobals).
-- It cannot when none of its functions writes a global (no GSET instruction)
-- and none names getfenv, setfenv or debug, the ways to reach the table
-- itself. Such handlers run on one shared table and one closure, which saves
-- a table, a closure and two registry references per request; the others get
-- a table of their own, where a global they write stays in their request.
local util = require "jit.util"
local funcinfo, funcbc, funck = util.funcinfo, util.funcbc, util.funck
local band = bit.band

-- The opcodes of a function's bytecode, as a set.
local function opcodes(f)
  local seen = {}
  local pc = 1
  while true do
    local ins = funcbc(f, pc)
    if not ins then return seen end
    seen[band(ins, 0xff)] = true
    pc = pc + 1
  end
end

-- GSET's number differs between LuaJIT versions: it is the one opcode that a
-- global assignment adds to a local one.
local GSET
do
  local global, localonly = opcodes(loadstring("g = ...")), opcodes(loadstring("local g = ..."))
  for op in pairs(global) do
    if not localonly[op] then
      if GSET then return function() return false end end  -- not one: never claim purity
      GSET = op
    end
  end
  if not GSET then return function() return false end end
end

local reaching = { getfenv = true, setfenv = true, debug = true }

local function keeps(f)
  if opcodes(f)[GSET] then return false end
  for i = 1, funcinfo(f).gcconsts do
    local k = funck(f, -i)
    local t = type(k)
    if t == "proto" then
      if not keeps(k) then return false end
    elseif t == "string" and reaching[k] then
      return false
    end
  end
  return true
end

return keeps
