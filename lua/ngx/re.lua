-- ngx.re as lua-resty-core provides it: split() and opt(). The matching is
-- done by the binary's ngx.re engine through the internal "tidegate.re"
-- helpers (src/lua/api/ngx_re.cc), so options, the compile-once cache and
-- error texts are the same as ngx.re.match's.
local helpers = require "tidegate.re"

local compile = helpers.compile
local exec = helpers.exec
local release = helpers.release
local sub = string.sub
local type = type
local tostring = tostring
local error = error

local _M = { version = "0.1.28" }

-- Appends the fields of `subj` from offset `start` (0-based) to `res`,
-- returning how many entries it wrote, or nil, err. A field ends where a
-- match begins; a match's first capture, when it matched, follows its field.
-- An empty match right where a field starts does not split, so an empty
-- separator cuts between characters. With max > 0, at most max fields and
-- the last one holds the rest of the subject.
local function split_fields(subj, re, start, max, res)
  local len = #subj
  local n, fields = 0, 1
  local search = start
  while max <= 0 or fields < max do
    local from, to, next_search, capture = exec(re, subj, search)
    if from == nil then
      break
    end
    if from == false then
      return nil, to
    end
    search = next_search
    if from > start or to > from then
      n = n + 1
      res[n] = sub(subj, start + 1, from)
      if capture then
        n = n + 1
        res[n] = capture
      end
      fields = fields + 1
      start = to
      if start >= len then
        -- The subject ends with a separator. With a max the empty last
        -- field is kept; without, empty trailing entries go, as in Perl.
        if max > 0 then
          break
        end
        while n > 0 and res[n] == "" do
          res[n] = nil
          n = n - 1
        end
        return n
      end
    end
  end
  n = n + 1
  res[n] = sub(subj, start + 1)
  return n
end

-- res, err = split(subject, regex, options?, ctx?, max?, res?)
function _M.split(subj, regex, opts, ctx, max, res)
  subj = tostring(subj)
  local pos = ctx and ctx.pos or 1
  max = max or 0
  if res == nil then
    res = {}
  elseif type(res) ~= "table" then
    error("res is not a table", 2)
  end

  if pos > #subj then
    res[1] = nil
    return res
  end
  if pos < 1 then
    pos = 1
  end

  local re, err = compile(regex, opts)
  if not re then
    return nil, err
  end
  local n
  n, err = split_fields(subj, re, pos - 1, max, res)
  release(re)
  if not n then
    return nil, err
  end
  -- A reused table is not cleared: a nil after the fields ends it for ipairs and #.
  res[n + 1] = nil
  return res
end

-- opt("jit_stack_size", bytes): the PCRE2 JIT stack for later matches
-- (at least 32 KiB), allowed only while the compile-once cache is empty.
function _M.opt(option, value)
  if option == "jit_stack_size" then
    if not helpers.cache_empty() then
      error("changing jit stack size is not allowed when some regexs have already been compiled and cached", 2)
    end
    if not helpers.set_jit_stack_size(value) then
      error("pcre jit stack allocation failed", 2)
    end
    return
  end
  error("unrecognized option name", 2)
end

return _M
