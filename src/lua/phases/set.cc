// set_by_lua*: a rewrite-module step that computes one variable. As in
// OpenResty it runs to completion on the VM's main thread with lua_pcall,
// not in a coroutine, so nothing in it can yield: output, exit, sleep and
// the other yielding APIs raise "API disabled in the context of
// set_by_lua*" (api/ngx_request.cc checks Phase::kSet). ngx.var, ngx.req
// reads, ngx.log and ngx.ctx work: the code runs with a RequestContext of
// its own as Vm::current().
#include <string>
#include <vector>

#include "core/log.h"
#include "http/variables.h"
#include "lua/api/common.h"
#include "lua/phases/content.h"

namespace tidegate::lua {
namespace {

// ngx.arg = {args...} while the code runs, nil afterwards.
// Stack: unchanged.
void setArgTable(lua_State* L, const std::vector<std::string>* args) {
  if (args) {
    lua_createtable(L, static_cast<int>(args->size()), 0);
    for (size_t i = 0; i < args->size(); i++) {
      lua_pushlstring(L, (*args)[i].data(), (*args)[i].size());
      lua_rawseti(L, -2, static_cast<int>(i + 1));
    }
  } else {
    lua_pushnil(L);
  }
  setNgxArg(L);
}

void logLoadError(const http::Request& r, const conf::LuaCode& code, const std::string& err) {
  std::string where = http::describeRequest(r);
  unsigned long conn = r.conn ? r.conn->id : 0;
  if (code.kind == conf::LuaCode::Kind::kFile) {
    TG_LOG_CONN(core::LogLevel::kError, conn, "failed to load external Lua file \"%s\": %s%s", code.source.c_str(),
                err.c_str(), where.c_str());
  } else {
    TG_LOG_CONN(core::LogLevel::kError, conn, "failed to load inlined Lua code: %s%s", err.c_str(), where.c_str());
  }
}

}  // namespace

bool LuaContentHandler::runSet(http::Request& r, const conf::LuaCode& code, const std::vector<std::string>& args,
                               std::string* out) {
  lua_State* L = vm_.state();
  int base = lua_gettop(L);
  if (!lua_checkstack(L, static_cast<int>(args.size()) + 4)) {
    TG_LOG_CONN(core::LogLevel::kError, r.conn ? r.conn->id : 0, "failed to run set_by_lua*: too many arguments%s",
                http::describeRequest(r).c_str());
    return false;
  }
  lua_pushcfunction(L, Vm::traceback);  // Stack: [tb]
  DetachedSink sink(false);  // the set phase never answers
  RequestContext ctx(vm_, loop_, r, http::LuaPhases{}, sink);
  std::string err;
  if (!vm_.push(code, &ctx, &err)) {  // Stack: [tb, fn], or [tb] on failure
    logLoadError(r, code, err);
    lua_settop(L, base);
    return false;
  }
  // OpenResty passes the arguments both as ngx.arg and as the chunk's `...`.
  for (const auto& a : args) lua_pushlstring(L, a.data(), a.size());  // Stack: [tb, fn, args...]
  setArgTable(L, &args);
  LuaTask* prev = vm_.current();
  Phase prev_phase = vm_.phase();
  vm_.setCurrent(&ctx, Phase::kSet);
  // Stack: [tb, result] or [tb, error]
  int rc = pcallWithBudget(L, static_cast<int>(args.size()), 1, base + 1,
                           r.settings().lua_budget_timeout_ms.value_or(0));
  vm_.setCurrent(prev, prev_phase);
  setArgTable(L, nullptr);
  size_t len = 0;
  const char* s = lua_tolstring(L, -1, &len);
  if (rc != 0) {
    TG_LOG_CONN(core::LogLevel::kError, r.conn ? r.conn->id : 0, "failed to run set_by_lua*: %s%s",
                s ? s : "unknown reason", http::describeRequest(r).c_str());
  } else if (s) {
    out->assign(s, len);  // a string, or a number converted as tostring() would
  } else {
    out->clear();  // nil, booleans, tables: "" as OpenResty
  }
  lua_settop(L, base);
  return rc == 0;
}

}  // namespace tidegate::lua
