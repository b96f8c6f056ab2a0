-- ngx.process as lua-resty-core provides it.
local C = require "tidegate.cdefs"
local types = { [0] = "single", [1] = "master", [2] = "worker" }

local _M = { version = "0.1.28" }

function _M.type()
  return types[C.tg_process_type()]
end

function _M.get_master_pid()
  return tonumber(C.tg_master_pid())
end

function _M.enable_privileged_agent()
  return nil, "privileged agent processes are not supported by tidegate"
end

function _M.signal_graceful_exit()
  return nil, "not supported by tidegate"
end

return _M
