-- resty.core.base as lua-resty-core exports it, for libraries that require
-- it: FFI status codes, table helpers, the string buffer and get_request().
local ffi = require "ffi"
local C = require "tidegate.cdefs"
local new_tab = require "table.new"
local clear_tab = require "table.clear"

local _M = new_tab(0, 24)
_M.version = "0.1.28"
_M.new_tab = new_tab
_M.clear_tab = clear_tab

_M.FFI_OK = 0
_M.FFI_NO_REQ_CTX = -100
_M.FFI_BAD_CONTEXT = -101
_M.FFI_ERROR = -1
_M.FFI_AGAIN = -2
_M.FFI_BUSY = -3
_M.FFI_DONE = -4
_M.FFI_DECLINED = -5
_M.FFI_ABORT = -6

-- The current request as an opaque pointer, or nil outside a request.
function _M.get_request()
  local r = C.tg_get_request()
  if r == nil then
    return nil
  end
  return r
end

function _M.allows_subsystem(...)
  for i = 1, select("#", ...) do
    if select(i, ...) == "http" then
      return true
    end
  end
  return false
end

function _M.ref_in_table(tb, key)
  if key == nil then
    return -1
  end
  local ref = tb[0]
  if ref then
    tb[0] = tb[ref]
  else
    ref = #tb + 1
  end
  tb[ref] = key
  return ref
end

-- A scratch buffer for FFI calls that return strings.
local str_buf_size = 4096
local str_buf
local size_ptr

function _M.get_string_buf_size()
  return str_buf_size
end

function _M.set_string_buf_size(size)
  if size <= 0 then
    return
  end
  if str_buf then
    str_buf = nil
  end
  str_buf_size = size
end

function _M.get_string_buf(size, must_alloc)
  if size > str_buf_size or must_alloc then
    return ffi.new("unsigned char[?]", size)
  end
  if not str_buf then
    str_buf = ffi.new("unsigned char[?]", str_buf_size)
  end
  return str_buf
end

function _M.get_size_ptr()
  if not size_ptr then
    size_ptr = ffi.new("size_t[1]")
  end
  return size_ptr
end

function _M.is_not_windows()
  return true
end

return _M
