// balancer_by_lua*: an upstream's code, run by the proxy before every try
// of a request to choose its peer, in a task of its own. Beyond
// OpenResty, cosockets may wait there (the proxy bounds the wait with
// lua_balancer_timeout); ngx.sleep, semaphores, threads and output raise
// "API disabled in the context of balancer_by_lua*" as in OpenResty
// (ngx.exit records its status and returns). It shares the request's
// ngx.ctx and globals, so ngx.ctx is the one access_by_lua* filled;
// ngx.var and the ngx.req reads work, and ngx.req.set_header too (it
// reaches the upstream with ngx.balancer.recreate_request()).
// ngx.balancer (api/ngx_balancer.cc) reads and fills `call` meanwhile.
//
// Lua balancer modules: an instance is a registry table {obj, servers}
// where servers maps id -> the table given to new(). Calls run on the
// VM's main state with lua_pcall, outside any request (ngx.ctx and
// ngx.var are not there; ngx.shared and module state are).
#include <memory>

#include "core/log.h"
#include "lua/phases/content.h"

namespace tidegate::lua {
namespace {

// Stack: [] -> [message]; returns it for *err.
std::string popError(lua_State* L) {
  std::string e = lua_tostring(L, -1) ? lua_tostring(L, -1) : "error object is not a string";
  lua_pop(L, 1);
  return e;
}

}  // namespace

int LuaContentHandler::newLuaBalancer(const std::string& module, const std::vector<LuaBalancerPeer>& peers,
                                      std::string* err) {
  vm_.refreshModules();
  lua_State* L = vm_.state();
  int top = lua_gettop(L);
  lua_getglobal(L, "require");
  lua_pushstring(L, module.c_str());
  if (lua_pcall(L, 1, 1, 0) != 0) {
    *err = popError(L);
    lua_settop(L, top);
    return 0;
  }
  lua_getfield(L, -1, "new");
  if (!lua_isfunction(L, -1)) {
    *err = "module \"" + module + "\" has no new()";
    lua_settop(L, top);
    return 0;
  }
  // Stack: [mod, new] -> [mod, new, list, byid]
  lua_createtable(L, static_cast<int>(peers.size()), 0);
  lua_createtable(L, 0, static_cast<int>(peers.size()));
  for (size_t i = 0; i < peers.size(); i++) {
    const LuaBalancerPeer& p = peers[i];
    lua_createtable(L, 0, 5);
    lua_pushlstring(L, p.id.data(), p.id.size());
    lua_setfield(L, -2, "id");
    lua_pushlstring(L, p.host.data(), p.host.size());
    lua_setfield(L, -2, "host");
    lua_pushinteger(L, p.port);
    lua_setfield(L, -2, "port");
    lua_pushinteger(L, p.weight);
    lua_setfield(L, -2, "weight");
    lua_pushinteger(L, p.tier);
    lua_setfield(L, -2, "tier");
    lua_pushvalue(L, -1);
    lua_rawseti(L, -4, static_cast<int>(i + 1));
    lua_setfield(L, -2, p.id.c_str());
  }
  // new(list): Stack: [mod, new, list, byid] -> [mod, byid, obj]
  lua_insert(L, -3);  // [mod, byid, new, list]
  if (lua_pcall(L, 1, 1, 0) != 0) {
    *err = popError(L);
    lua_settop(L, top);
    return 0;
  }
  if (lua_isnil(L, -1)) {
    *err = "new() returned nil";
    lua_settop(L, top);
    return 0;
  }
  lua_createtable(L, 0, 2);
  lua_insert(L, -3);  // [mod, inst, byid, obj]
  lua_setfield(L, -3, "obj");
  lua_setfield(L, -2, "servers");
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, top);
  return ref > 0 ? ref : 0;
}

bool LuaContentHandler::luaBalancerPick(int handle, std::string* id, std::string* err) {
  lua_State* L = vm_.state();
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, handle);
  lua_getfield(L, -1, "obj");
  lua_getfield(L, -1, "pick");
  if (!lua_isfunction(L, -1)) {
    *err = "the balancer object has no pick()";
    lua_settop(L, top);
    return false;
  }
  lua_pushvalue(L, -2);
  if (lua_pcall(L, 1, 1, 0) != 0) {
    *err = popError(L);
    lua_settop(L, top);
    return false;
  }
  if (lua_istable(L, -1)) lua_getfield(L, -1, "id");
  bool ok = lua_type(L, -1) == LUA_TSTRING;
  if (ok) id->assign(lua_tostring(L, -1));
  else *err = "pick() returned no server";
  lua_settop(L, top);
  return ok;
}

void LuaContentHandler::luaBalancerFeedback(int handle, const std::string& id, bool ok, double latency_ms) {
  lua_State* L = vm_.state();
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, handle);
  lua_getfield(L, -1, "obj");
  lua_getfield(L, -1, "feedback");
  lua_getfield(L, -3, "servers");
  lua_getfield(L, -1, id.c_str());
  lua_remove(L, -2);
  // Stack: [inst, obj, feedback, server]. A try that started before the
  // instance was rebuilt may end on a server it does not have: no feedback.
  if (lua_isfunction(L, -2) && !lua_isnil(L, -1)) {
    lua_pushvalue(L, -3);
    lua_insert(L, -2);  // [inst, obj, feedback, obj, server]
    lua_pushboolean(L, ok);
    lua_pushnumber(L, latency_ms);
    if (lua_pcall(L, 4, 0, 0) != 0) {
      TG_LOG(core::LogLevel::kError, "lua balancer feedback() failed: %s", popError(L).c_str());
    }
  }
  lua_settop(L, top);
}

void LuaContentHandler::freeLuaBalancer(int handle) {
  if (handle > 0) luaL_unref(vm_.state(), LUA_REGISTRYINDEX, handle);
}

std::unique_ptr<http::ContentTask> LuaContentHandler::runBalancer(http::Request& r, const conf::LuaCode& code,
                                                                  http::ContentTask* task, http::BalancerCall* call,
                                                                  bool* ok, std::function<void(bool)> done) {
  auto run = std::make_unique<RequestContext>(vm_, loop_, r, http::LuaPhases{}, balancer_sink_);
  if (auto* ctx = dynamic_cast<RequestContext*>(task)) run->inherit(*ctx);
  run->setBalancerCall(call);
  if (!run->runAlone(code, Phase::kBalancer, ok)) return nullptr;
  run->whenEnded(std::move(done));
  return run;
}

}  // namespace tidegate::lua
