// The request-facing part of `ngx` (content phase for now): ngx.say,
// ngx.print, ngx.exit, ngx.sleep, ngx.status, ngx.header, ngx.var.
// Arguments, return values and error texts follow lua-nginx-module.
#include <charconv>
#include <cmath>
#include <initializer_list>
#include <string>

#include "conf/complex_value.h"
#include "core/log.h"
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
// content, timers; and log_by_lua* for cosockets), else OpenResty's "API
// disabled" error.
LuaTask* requireYieldable(lua_State* L, bool cosocket) {
  Vm* vm = Vm::from(L);
  LuaTask* task = vm->current();
  bool phase_ok =
      task && (yieldablePhase(vm->phase()) || (cosocket && (vm->phase() == Phase::kLog || vm->phase() == Phase::kBalancer)));
  if (!phase_ok || !task->running() || task->running()->L != L) {
    if (phase_ok) luaL_error(L, "no co ctx found");
    raiseDisabled(L, vm->phase());
  }
  return task;
}

namespace {

// An array of strings and numbers, joined by LuaJIT's table.concat in one C
// call: a fraction of the element-by-element walk's cost, and the common
// case (lua-resty-* libraries build their requests so). False, with nothing
// appended, for anything else in it (a nested table, a boolean, nil,
// ngx.null), which the walk handles. Stack: unchanged.
bool appendFlatArray(lua_State* L, int abs, std::string* out) {
  Vm* vm = Vm::from(L);
  if (!vm) return false;
  vm->pushTableConcat(L);
  lua_pushvalue(L, abs);
  if (lua_pcall(L, 1, 1, 0) != 0) {
    lua_pop(L, 1);
    return false;
  }
  size_t len = 0;
  const char* s = lua_tolstring(L, -1, &len);
  out->append(s, len);
  lua_pop(L, 1);
  return true;
}

}  // namespace

bool appendInteger(double n, std::string* out) {
  if (!(n > -1e14 && n < 1e14)) return false;
  auto i = static_cast<int64_t>(n);
  if (static_cast<double>(i) != n) return false;  // a fraction
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof(buf), i);
  out->append(buf, static_cast<size_t>(r.ptr - buf));
  return true;
}

// Appends one ngx.say/ngx.print argument; tables are flattened as OpenResty
// does (array part, recursively). Raises for other types.
void appendValue(lua_State* L, int idx, std::string* out, const char* fname) {
  switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
      if (appendInteger(lua_tonumber(L, idx), out)) return;
      [[fallthrough]];
    case LUA_TSTRING: {
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
      if (appendFlatArray(L, abs, out)) return;
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

void outputAppended(RequestContext* ctx) {
  // Output beyond this is sent on (chunked) instead of growing in memory.
  constexpr size_t kAutoFlushBytes = 64 * 1024;
  if (ctx->result().body.size() >= kAutoFlushBytes) ctx->flushOutput(false);
}

bool outputAllowed(RequestContext* ctx) {
  Phase p = ctx->vm().phase();
  return (p == Phase::kRewrite || p == Phase::kAccess || p == Phase::kContent) && !ctx->eofSent();
}

bool readVariable(RequestContext* ctx, std::string_view name, std::string* out) {
  const conf::VarRef* ref = ctx->vm().variable(name);
  if (!ref) return false;
  std::string_view unused;
  if (ref->id == conf::VarId::kUser &&
      ctx->req().vars.get(ref->index, &unused) == http::RequestVariables::State::kNotFound) {
    return false;
  }
  if (!http::variableFound(*ref, ctx->req())) return false;
  out->clear();
  http::appendVariable(*ref, ctx->req(), out);
  return true;
}

// Header names as lua-nginx-module takes them: '_' becomes '-' (unless
// lua_transform_underscores_in_response_headers is off).
std::string responseHeaderName(std::string name, const RequestContext* ctx) {
  if (*ctx->req().settings().lua_transform_underscores) {
    for (char& c : name) {
      if (c == '_') c = '-';
    }
  }
  return name;
}

void setResponseHeader(RequestContext* ctx, std::string name, std::string_view value) {
  name = responseHeaderName(std::move(name), ctx);
  auto& headers = ctx->result().headers;
  for (size_t i = 0; i < headers.size();) {
    if (http::iequals(headers[i].first, name)) headers.erase(headers.begin() + static_cast<long>(i));
    else i++;
  }
  headers.emplace_back(std::move(name), std::string(value));
}

void setAccessors(lua_State* L, lua_CFunction index, lua_CFunction newindex) {
  lua_createtable(L, 0, 2);
  setFn(L, "__index", index);
  setFn(L, "__newindex", newindex);
  lua_setmetatable(L, -2);
}

void setNgxArg(lua_State* L) {
  lua_getglobal(L, "ngx");
  if (!lua_istable(L, -1)) {
    lua_pop(L, 2);
    return;
  }
  lua_pushliteral(L, "arg");
  lua_pushvalue(L, -3);
  lua_rawset(L, -3);
  lua_pop(L, 2);
}

namespace {

// The running request, unless the phase is one of `disabled` (a Lua error
// in OpenResty's words, from the "Context:" lines of lua-nginx-module).
RequestContext* requireRequestNotIn(lua_State* L, std::initializer_list<Phase> disabled) {
  RequestContext* ctx = requireRequest(L);
  Phase phase = Vm::from(L)->phase();
  for (Phase p : disabled) {
    if (p == phase) raiseDisabled(L, phase);
  }
  return ctx;
}

// Output, exit and yields: not in set_by_lua* and balancer_by_lua* (they
// cannot yield) nor in the log phase (the response is out).
RequestContext* requireResponsePhase(lua_State* L) {
  return requireRequestNotIn(L, {Phase::kSet, Phase::kHeaderFilter, Phase::kBodyFilter, Phase::kLog,
                                 Phase::kBalancer});
}

// nil, "seen eof" once ngx.eof() ended the body, as OpenResty returns it.
int seenEof(lua_State* L) {
  lua_pushnil(L);
  lua_pushliteral(L, "seen eof");
  return 2;
}

int output(lua_State* L, bool newline, const char* fname) {
  RequestContext* ctx = requireResponsePhase(L);
  if (ctx->eofSent()) return seenEof(L);
  std::string& body = ctx->result().body;
  int top = lua_gettop(L);
  for (int i = 1; i <= top; i++) appendValue(L, i, &body, fname);
  if (newline) body.push_back('\n');
  outputAppended(ctx);
  lua_pushinteger(L, 1);  // ok
  return 1;
}

// Waits in ngx.flush(true) until the output is written to the socket.
class DrainWait : public Wait {
 public:
  explicit DrainWait(RequestContext* ctx) : ctx_(ctx) {}
  ~DrainWait() override { ctx_->sink().cancelDrain(); }

 private:
  RequestContext* ctx_;
};

// ngx.flush(wait?): sends the head and what was printed so far; with
// wait, returns once it is written to the socket.
int ngxFlush(lua_State* L) {
  RequestContext* ctx = requireResponsePhase(L);
  bool wait = lua_toboolean(L, 1);
  if (ctx->eofSent()) return seenEof(L);
  ctx->flushOutput(false);
  lua_settop(L, 0);
  if (wait) {
    LuaTask* task = requireYieldable(L);
    Co* co = task->running();
    bool drained = ctx->sink().waitDrain([task, co] {
      lua_pushinteger(co->L, 1);
      task->wake(co, 1);
    });
    if (!drained) {
      task->suspend(std::make_unique<DrainWait>(ctx));
      return lua_yield(L, 0);
    }
  }
  lua_pushinteger(L, 1);
  return 1;
}

// ngx.send_headers(): the head goes out now (with what was printed so
// far, which OpenResty would have sent already). 1, or nil, err after
// ngx.eof; nothing more once the head is out.
int ngxSendHeaders(lua_State* L) {
  RequestContext* ctx = requireResponsePhase(L);
  if (ctx->eofSent()) return seenEof(L);
  if (!ctx->headersSent()) ctx->flushOutput(false);
  lua_pushinteger(L, 1);
  return 1;
}

// ngx.on_abort(fn): fn runs as a light thread when the client goes away
// (with lua_check_client_abort on).
int ngxOnAbort(lua_State* L) {
  RequestContext* ctx = requireResponsePhase(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  if (!*ctx->req().settings().lua_check_client_abort) {
    lua_pushnil(L);
    lua_pushliteral(L, "lua_check_client_abort is off");
    return 2;
  }
  lua_settop(L, 1);
  if (!ctx->setOnAbort(L)) {
    lua_pushnil(L);
    lua_pushliteral(L, "duplicate call");
    return 2;
  }
  lua_pushinteger(L, 1);
  return 1;
}

// ngx.eof(): the response body ends here; the handler may go on working.
int ngxEof(lua_State* L) {
  RequestContext* ctx = requireResponsePhase(L);
  if (ctx->eofSent()) return seenEof(L);
  ctx->flushOutput(true);
  lua_pushinteger(L, 1);
  return 1;
}

int ngxSay(lua_State* L) { return output(L, true, "say"); }
int ngxPrint(lua_State* L) { return output(L, false, "print"); }

// ngx.exit(status): ends the handler; a status >= 200 becomes the
// response's (an error page if nothing was printed), 0 keeps the current.
int ngxExit(lua_State* L) {
  if (Vm::from(L)->phase() == Phase::kBalancer) return balancerExit(L);
  LuaTask* task = requireYieldable(L);
  lua_Integer status = luaL_checkinteger(L, 1);
  if (RequestContext* ctx = task->request()) ctx->exit(static_cast<int>(status));
  else task->exitWithStatus(static_cast<int>(status));  // a timer, a handshake
  return lua_yield(L, 0);
}

// ngx.redirect(uri, status?): 302 by default; 301, 302, 303, 307, 308 allowed.
int ngxRedirect(lua_State* L) {
  RequestContext* ctx = requireResponsePhase(L);
  size_t len = 0;
  const char* uri = luaL_checklstring(L, 1, &len);
  lua_Integer status = luaL_optinteger(L, 2, 302);
  if (ctx->headersSent()) return luaL_error(L, "attempt to call ngx.redirect after sending out the headers");
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

// ngx.header's key at `idx`, compared without case.
std::string headerName(lua_State* L, int idx, const RequestContext* ctx) {
  return responseHeaderName(luaL_checkstring(L, idx), ctx);
}

// ngx.header.NAME -> value, a table for a repeated header, or nil.
int headerIndex(lua_State* L) {
  RequestContext* ctx = requireRequestNotIn(L, {Phase::kSet});
  std::string name = headerName(L, 2, ctx);
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
  RequestContext* ctx = requireRequestNotIn(L, {Phase::kSet});
  if (ctx->headersSent()) {
    TG_LOG(core::LogLevel::kError, "attempt to set ngx.header.HEADER after sending out response headers");
    return 0;
  }
  std::string name = headerName(L, 2, ctx);
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

// ngx.var.NAME: the core variables and the conf's user variables; nil for
// an unknown name or a user variable assigned nil, as OpenResty.
int varIndex(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  size_t len = 0;
  const char* name = luaL_checklstring(L, 2, &len);
  std::string& value = ctx->scratch();
  if (!readVariable(ctx, std::string_view(name, len), &value)) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushlstring(L, value.data(), value.size());
  return 1;
}

// ngx.var.NAME = string | number | nil: a variable declared with set (or
// set_by_lua*), or $args. Error texts are lua-nginx-module's.
int varNewIndex(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  const char* name = luaL_checkstring(L, 2);
  int type = lua_type(L, 3);
  if (type != LUA_TNIL && type != LUA_TNUMBER && type != LUA_TSTRING) {
    lua_pushfstring(L, "string, number, or nil expected, but got %s", lua_typename(L, type));
    return luaL_argerror(L, 1, lua_tostring(L, -1));
  }
  conf::VarRef ref;
  bool known = conf::lookupVariable(name, &ref, &Vm::from(L)->config().http.variables);
  if (known && (ref.id == conf::VarId::kUser || ref.id == conf::VarId::kArgs)) {
    size_t len = 0;
    const char* value = type == LUA_TNIL ? "" : lua_tolstring(L, 3, &len);
    http::RequestVariables& vars = ctx->req().vars;
    if (ref.id == conf::VarId::kArgs) vars.replaceArgs(std::string_view(value, len));
    else if (type == LUA_TNIL) vars.setNotFound(ref.index);
    else vars.set(ref.index, std::string_view(value, len));
    return 0;
  }
  // A built-in with a value of its own exists but cannot change; the prefix
  // families ($arg_*, $http_*...) are not variables to nginx at all.
  if (known && !conf::isPrefixVariable(ref.id)) return luaL_error(L, "variable \"%s\" not changeable", name);
  return luaL_error(L, "variable \"%s\" not found for writing; maybe it is a built-in variable that is not changeable "
                       "or you forgot to use \"set $%s '';\" in the config file to define it first",
                    name, name);
}

// ngx.status, ngx.headers_sent and ngx.ctx through the ngx table's metatable.
int ngxIndex(lua_State* L) {
  const char* key = lua_tostring(L, 2);
  if (key && std::string_view(key) == "status") {
    RequestContext* ctx = requireRequest(L);
    // In the log phase the response is out: report what was sent.
    lua_pushinteger(L, ctx->phase() == Phase::kLog ? ctx->req().status : ctx->result().status);
    return 1;
  }
  if (key && std::string_view(key) == "headers_sent") {
    lua_pushboolean(L, requireRequest(L)->headersSent());
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
    if (ctx->headersSent()) {
      TG_LOG(core::LogLevel::kError, "attempt to set ngx.status after sending out response headers");
      return 0;
    }
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
  setFn(L, "flush", ngxFlush);
  setFn(L, "eof", ngxEof);
  setFn(L, "send_headers", ngxSendHeaders);
  setFn(L, "on_abort", ngxOnAbort);
  proxyTable(L, "header", headerIndex, headerNewIndex);
  proxyTable(L, "var", varIndex, varNewIndex);
  openNgxReq(L);
  setAccessors(L, ngxIndex, ngxNewIndex);  // ngx.status, ngx.headers_sent, ngx.ctx
}

}  // namespace tidegate::lua
