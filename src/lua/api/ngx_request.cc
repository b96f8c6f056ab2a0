// The request-facing part of `ngx` (content phase for now): ngx.say,
// ngx.print, ngx.exit, ngx.sleep, ngx.status, ngx.header, ngx.var.
// Arguments, return values and error texts follow lua-nginx-module.
#include <cmath>
#include <string>

#include "conf/complex_value.h"
#include "http/ascii.h"
#include "http/variables.h"
#include "lua/api/common.h"
#include "lua/phases/content.h"
#include "lua/vm.h"

namespace tidegate::lua {

void openNgxReq(lua_State* L);  // api/ngx_req.cc

// The running request, or a Lua error in OpenResty's words for a phase
// where the API is not allowed ("API disabled in the context of init_by_lua*").
RequestContext* requireRequest(lua_State* L) {
  Vm* vm = Vm::from(L);
  LuaTask* task = vm->current();
  RequestContext* ctx = task ? task->request() : nullptr;
  if (!ctx) raiseDisabled(L, vm->phase());
  return ctx;
}

// The running request or timer.
LuaTask* requireTask(lua_State* L) {
  Vm* vm = Vm::from(L);
  LuaTask* task = vm->current();
  if (!task) raiseDisabled(L, vm->phase());
  return task;
}

// The running task if its code may wait for events here (rewrite, access,
// content, timers), else OpenResty's "API disabled" error.
LuaTask* requireYieldable(lua_State* L) {
  Vm* vm = Vm::from(L);
  LuaTask* task = vm->current();
  if (!task || !task->canYield() || !task->running() || task->running()->L != L) {
    if (task && task->canYield()) luaL_error(L, "no co ctx found");
    raiseDisabled(L, vm->phase());
  }
  return task;
}

// Appends one ngx.say/ngx.print argument; tables are flattened as OpenResty
// does (array part, recursively). Raises for other types.
void appendValue(lua_State* L, int idx, std::string* out, const char* fname) {
  switch (lua_type(L, idx)) {
    case LUA_TSTRING:
    case LUA_TNUMBER: {
      size_t len = 0;
      const char* s = lua_tolstring(L, idx, &len);
      out->append(s, len);
      return;
    }
    case LUA_TNIL: out->append("nil"); return;
    case LUA_TBOOLEAN: out->append(lua_toboolean(L, idx) ? "true" : "false"); return;
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == nullptr) {
        out->append("null");
        return;
      }
      break;
    case LUA_TTABLE: {
      int abs = idx > 0 ? idx : lua_gettop(L) + idx + 1;
      size_t n = lua_objlen(L, abs);
      for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, abs, static_cast<int>(i));
        appendValue(L, -1, out, fname);
        lua_pop(L, 1);
      }
      return;
    }
    default: break;
  }
  luaL_error(L, "bad argument #%d to '%s' (string, number, boolean, nil, ngx.null, or array table expected, got %s)",
             idx, fname, luaL_typename(L, idx));
}

namespace {

// Output, exit and yields are not for the log phase (the response is out).
RequestContext* requireResponsePhase(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  if (ctx->phase() == Phase::kLog) raiseDisabled(L, Phase::kLog);
  return ctx;
}

int output(lua_State* L, bool newline, const char* fname) {
  RequestContext* ctx = requireResponsePhase(L);
  std::string& body = ctx->result().body;
  int top = lua_gettop(L);
  for (int i = 1; i <= top; i++) appendValue(L, i, &body, fname);
  if (newline) body.push_back('\n');
  lua_pushinteger(L, 1);  // ok
  return 1;
}

int ngxSay(lua_State* L) { return output(L, true, "say"); }
int ngxPrint(lua_State* L) { return output(L, false, "print"); }

// ngx.exit(status): ends the handler; a status >= 200 becomes the
// response's (an error page if nothing was printed), 0 keeps the current.
int ngxExit(lua_State* L) {
  LuaTask* task = requireYieldable(L);
  lua_Integer status = luaL_checkinteger(L, 1);
  if (RequestContext* ctx = task->request()) ctx->exit(static_cast<int>(status));
  else task->requestExit();  // a timer: it just ends
  return lua_yield(L, 0);
}

// ngx.redirect(uri, status?): 302 by default; 301, 302, 303, 307, 308 allowed.
int ngxRedirect(lua_State* L) {
  RequestContext* ctx = requireResponsePhase(L);
  size_t len = 0;
  const char* uri = luaL_checklstring(L, 1, &len);
  lua_Integer status = luaL_optinteger(L, 2, 302);
  if (status != 301 && status != 302 && status != 303 && status != 307 && status != 308) {
    return luaL_error(L, "only ngx.HTTP_MOVED_TEMPORARILY, ngx.HTTP_MOVED_PERMANENTLY, ngx.HTTP_PERMANENT_REDIRECT, "
                         "ngx.HTTP_SEE_OTHER, and ngx.HTTP_TEMPORARY_REDIRECT are allowed");
  }
  auto& headers = ctx->result().headers;
  for (size_t i = 0; i < headers.size();) {
    if (http::iequals(headers[i].first, "location")) headers.erase(headers.begin() + static_cast<long>(i));
    else i++;
  }
  headers.emplace_back("Location", std::string(uri, len));
  ctx->result().body.clear();
  ctx->exit(static_cast<int>(status));
  return lua_yield(L, 0);
}

int ngxSleep(lua_State* L) {
  LuaTask* task = requireYieldable(L);
  lua_Number sec = luaL_checknumber(L, 1);
  if (sec < 0) return luaL_error(L, "invalid sleep duration \"%f\"", sec);
  task->suspend(sleepWait(task, task->running(), static_cast<uint64_t>(std::llround(sec * 1000))));
  return lua_yield(L, 0);
}

// Header names as lua-nginx-module accepts them: '_' becomes '-'
// (lua_transform_underscores_in_response_headers on), compared without case.
std::string headerName(lua_State* L, int idx) {
  std::string name = luaL_checkstring(L, idx);
  for (char& c : name) {
    if (c == '_') c = '-';
  }
  return name;
}

// ngx.header.NAME -> value, a table for a repeated header, or nil.
int headerIndex(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  std::string name = headerName(L, 2);
  const auto& headers = ctx->result().headers;
  int found = 0;
  for (const auto& h : headers) found += http::iequals(h.first, name) ? 1 : 0;
  if (found == 0) {
    lua_pushnil(L);
    return 1;
  }
  if (found > 1) lua_createtable(L, found, 0);
  int i = 0;
  for (const auto& [k, v] : headers) {
    if (!http::iequals(k, name)) continue;
    lua_pushlstring(L, v.data(), v.size());
    if (found > 1) lua_rawseti(L, -2, ++i);
  }
  return 1;
}

// ngx.header.NAME = string | number | array of them | nil (removes).
int headerNewIndex(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  std::string name = headerName(L, 2);
  auto& headers = ctx->result().headers;
  for (size_t i = 0; i < headers.size();) {
    if (http::iequals(headers[i].first, name)) headers.erase(headers.begin() + static_cast<long>(i));
    else i++;
  }
  int t = lua_type(L, 3);
  if (t == LUA_TNIL) return 0;
  if (t == LUA_TTABLE) {
    size_t n = lua_objlen(L, 3);
    for (size_t i = 1; i <= n; i++) {
      lua_rawgeti(L, 3, static_cast<int>(i));
      size_t len = 0;
      const char* v = lua_tolstring(L, -1, &len);
      if (v) headers.emplace_back(name, std::string(v, len));
      lua_pop(L, 1);
    }
    return 0;
  }
  size_t len = 0;
  const char* v = lua_tolstring(L, 3, &len);
  if (!v) return luaL_error(L, "attempt to set ngx.header.HEADER to a %s", luaL_typename(L, 3));
  headers.emplace_back(name, std::string(v, len));
  return 0;
}

// ngx.var.NAME: the core variables; nil for an unknown name, as OpenResty.
int varIndex(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  size_t len = 0;
  const char* name = luaL_checklstring(L, 2, &len);
  conf::VarRef ref;
  if (!conf::lookupVariable(std::string_view(name, len), &ref)) {
    lua_pushnil(L);
    return 1;
  }
  std::string value;
  http::appendVariable(ref, ctx->req(), &value);
  lua_pushlstring(L, value.data(), value.size());
  return 1;
}

int varNewIndex(lua_State* L) {
  requireRequest(L);
  const char* name = luaL_checkstring(L, 2);
  return luaL_error(L, "variable \"%s\" not found for writing; maybe it is a built-in variable that is not changeable "
                       "or you forgot to use \"set $%s '';\" in the config file to define it first",
                    name, name);
}

// ngx.status through the ngx table's metatable.
int ngxIndex(lua_State* L) {
  const char* key = lua_tostring(L, 2);
  if (key && std::string_view(key) == "status") {
    RequestContext* ctx = requireRequest(L);
    // In the log phase the response is out: report what was sent.
    lua_pushinteger(L, ctx->phase() == Phase::kLog ? ctx->req().status : ctx->result().status);
    return 1;
  }
  if (key && std::string_view(key) == "ctx") {
    requireTask(L)->pushCtx(L);  // per request (or timer), created on first use
    return 1;
  }
  lua_pushnil(L);
  return 1;
}

int ngxNewIndex(lua_State* L) {
  const char* key = lua_tostring(L, 2);
  if (key && std::string_view(key) == "status") {
    RequestContext* ctx = requireRequest(L);
    ctx->result().status = static_cast<int>(luaL_checkinteger(L, 3));
    return 0;
  }
  if (key && std::string_view(key) == "ctx") {
    LuaTask* ctx = requireTask(L);
    if (!lua_istable(L, 3)) return luaL_error(L, "ctx should be a table while getting a %s", luaL_typename(L, 3));
    lua_pushvalue(L, 3);
    ctx->setCtx(L);
    return 0;
  }
  lua_rawset(L, 1);
  return 0;
}

// Stack: [t] -> [t], with t's metatable = {__index = index, __newindex = newindex}.
void setAccessors(lua_State* L, lua_CFunction index, lua_CFunction newindex) {
  lua_createtable(L, 0, 2);
  setFn(L, "__index", index);
  setFn(L, "__newindex", newindex);
  lua_setmetatable(L, -2);
}

// Stack: [ngx] -> [ngx] with ngx.<field> = an empty table with accessors.
void proxyTable(lua_State* L, const char* field, lua_CFunction index, lua_CFunction newindex) {
  lua_newtable(L);
  setAccessors(L, index, newindex);
  lua_setfield(L, -2, field);
}

}  // namespace

void openNgxRequest(lua_State* L) {
  // Stack: [ngx] -> [ngx]
  setFn(L, "say", ngxSay);
  setFn(L, "print", ngxPrint);
  setFn(L, "exit", ngxExit);
  setFn(L, "sleep", ngxSleep);
  setFn(L, "redirect", ngxRedirect);
  proxyTable(L, "header", headerIndex, headerNewIndex);
  proxyTable(L, "var", varIndex, varNewIndex);
  openNgxReq(L);
  setAccessors(L, ngxIndex, ngxNewIndex);  // ngx.status, ngx.ctx
}

}  // namespace tidegate::lua
