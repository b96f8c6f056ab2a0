// header_filter_by_lua* and body_filter_by_lua*: run synchronously (with
// lua_pcall, as OpenResty does; nothing in them may yield) in the request's
// Lua context, so ngx.ctx is the one the other phases see. The header
// filter works on ngx.status and ngx.header before the head is written;
// the body filter sees each piece of the body as ngx.arg[1] and the end as
// ngx.arg[2], and whatever it leaves there is what is sent.
#include <string>

#include "core/log.h"
#include "http/variables.h"
#include "lua/api/common.h"
#include "lua/phases/content.h"

namespace tidegate::lua {
namespace {

const char kFilterThreadKey = 0;  // registry: the thread filters run on
const char kArgProxyKey = 0;      // registry: the ngx.arg proxy of body filters

// A thread of its own for filters: a filter may run while a coroutine is
// inside an API call (ngx.flush), so the main stack is not used.
lua_State* filterThread(lua_State* L) {
  lua_pushlightuserdata(L, const_cast<char*>(&kFilterThreadKey));
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_State* t = lua_tothread(L, -1);
  lua_pop(L, 1);
  if (t) return t;
  lua_pushlightuserdata(L, const_cast<char*>(&kFilterThreadKey));
  t = lua_newthread(L);
  lua_rawset(L, LUA_REGISTRYINDEX);
  return t;
}

RequestContext::FilterArgs* currentArgs(lua_State* L) {
  LuaTask* task = Vm::from(L)->current();
  RequestContext* ctx = task ? task->request() : nullptr;
  RequestContext::FilterArgs* args = ctx ? ctx->filterArgs() : nullptr;
  if (!args) raiseDisabled(L, Vm::from(L)->phase());
  return args;
}

// ngx.arg[1] -> the chunk, ngx.arg[2] -> eof.
int argIndex(lua_State* L) {
  RequestContext::FilterArgs* a = currentArgs(L);
  lua_Integer i = lua_tointeger(L, 2);
  if (i == 1) lua_pushlstring(L, a->chunk->data(), a->chunk->size());
  else if (i == 2) lua_pushboolean(L, *a->eof);
  else lua_pushnil(L);
  return 1;
}

// ngx.arg[1] = string | number | nil | array of strings; ngx.arg[2] = bool.
int argNewIndex(lua_State* L) {
  RequestContext::FilterArgs* a = currentArgs(L);
  lua_Integer i = lua_tointeger(L, 2);
  if (i == 2) {
    *a->eof = lua_toboolean(L, 3);
    return 0;
  }
  if (i != 1) return luaL_error(L, "bad index: %d", static_cast<int>(i));
  a->chunk->clear();
  switch (lua_type(L, 3)) {
    case LUA_TNIL: return 0;
    case LUA_TSTRING:
    case LUA_TNUMBER: {
      size_t len = 0;
      const char* s = lua_tolstring(L, 3, &len);
      a->chunk->assign(s, len);
      return 0;
    }
    case LUA_TTABLE: {
      size_t n = lua_objlen(L, 3);
      for (size_t k = 1; k <= n; k++) {
        lua_rawgeti(L, 3, static_cast<int>(k));
        size_t len = 0;
        const char* s = lua_tolstring(L, -1, &len);
        if (!s) return luaL_error(L, "bad argument #%d to 'ngx.arg' (table of strings expected)", 3);
        a->chunk->append(s, len);
        lua_pop(L, 1);
      }
      return 0;
    }
    default:
      return luaL_error(L, "bad chunk data type: %s", luaL_typename(L, 3));
  }
}

// ngx.arg = the proxy while a body filter runs, nil afterwards (set_by_lua*
// has its own ngx.arg). Stack: unchanged.
void setArgProxy(lua_State* L, bool on) {
  if (!on) {
    lua_pushnil(L);
    setNgxArg(L);
    return;
  }
  lua_pushlightuserdata(L, const_cast<char*>(&kArgProxyKey));
  lua_rawget(L, LUA_REGISTRYINDEX);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    setAccessors(L, argIndex, argNewIndex);
    lua_pushlightuserdata(L, const_cast<char*>(&kArgProxyKey));
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
  }
  setNgxArg(L);
}

}  // namespace

bool runToCompletion(Vm& vm, const http::Request& r, const conf::LuaCode& code, Phase phase, RequestContext* ctx) {
  lua_State* main = vm.state();
  lua_State* L = filterThread(main);
  int base = lua_gettop(L);
  lua_pushcfunction(L, Vm::traceback);
  std::string err;
  if (!vm.push(code, ctx, &err)) {  // onto the main stack: [fn]
    TG_LOG_CONN(core::LogLevel::kError, r.conn ? r.conn->id : 0, "failed to load %s_by_lua code: %s%s",
                phaseName(phase), err.c_str(), http::describeRequest(r).c_str());
    lua_settop(L, base);
    return false;
  }
  lua_xmove(main, L, 1);  // Stack (L): [traceback, fn]
  LuaTask* prev = vm.current();
  Phase prev_phase = vm.phase();
  vm.setCurrent(ctx, phase);
  int rc = pcallWithBudget(L, 0, 0, base + 1, r.settings().lua_budget_timeout_ms.value_or(0));
  vm.setCurrent(prev, prev_phase);
  if (rc != 0) {
    const char* msg = lua_tostring(L, -1);
    TG_LOG_CONN(core::LogLevel::kError, r.conn ? r.conn->id : 0, "failed to run %s_by_lua*: %s%s", phaseName(phase),
                msg ? msg : "unknown reason", http::describeRequest(r).c_str());
  }
  lua_settop(L, base);
  return rc == 0;
}

std::unique_ptr<http::ContentTask> LuaContentHandler::detached(http::Request& r, http::ContentSink& sink) {
  return std::make_unique<RequestContext>(vm_, loop_, r, http::LuaPhases{}, sink);
}

bool LuaContentHandler::runHeaderFilter(http::Request& r, const conf::LuaCode& code, http::ContentTask* task,
                                        int* status, http::HeaderList* headers) {
  auto* ctx = dynamic_cast<RequestContext*>(task);
  if (!ctx) return true;
  http::ContentResult& res = ctx->result();
  res.status = *status;
  res.headers = std::move(*headers);
  bool ok = runToCompletion(vm_, r, code, Phase::kHeaderFilter, ctx);
  *status = res.status;
  *headers = res.headers;  // a copy: ngx.header stays readable in later phases
  return ok;
}

bool LuaContentHandler::runBodyFilter(http::Request& r, const conf::LuaCode& code, http::ContentTask* task,
                                      std::string* chunk, bool* eof) {
  auto* ctx = dynamic_cast<RequestContext*>(task);
  if (!ctx) return true;
  RequestContext::FilterArgs args{chunk, eof};
  RequestContext::FilterArgs* prev = ctx->filterArgs();
  ctx->setFilterArgs(&args);
  setArgProxy(vm_.state(), true);
  bool ok = runToCompletion(vm_, r, code, Phase::kBodyFilter, ctx);
  setArgProxy(vm_.state(), false);
  ctx->setFilterArgs(prev);
  return ok;
}

}  // namespace tidegate::lua
