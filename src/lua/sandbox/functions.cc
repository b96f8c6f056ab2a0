#include "lua/sandbox/functions.h"

#include <luajit.h>

#include <set>

#include "lua/pushed_modules.h"
#include "lua/sandbox/budget.h"
#include "lua/task.h"
#include "lua/vm.h"

namespace tidegate::lua {
namespace {

std::string chunkName(const std::string& name) {
  std::string out = "=function:";
  return out.append(name);
}

// Compiles `text` (text only: bytecode could break out of the VM).
// Stack: [] -> [fn] on success, [] with *err on failure.
bool loadText(lua_State* L, const std::string& text, const std::string& name, std::string* err) {
  if (luaL_loadbufferx(L, text.data(), text.size(), chunkName(name).c_str(), "t") == 0) return true;
  *err = lua_tostring(L, -1) ? lua_tostring(L, -1) : "cannot compile";
  lua_pop(L, 1);
  return false;
}

}  // namespace

// The source must compile alone too: then the wrapper's body is exactly
// the source's block, and no text ("end, f() --") can put code outside the
// closure, where it would run unsandboxed.
bool Functions::compile(lua_State* L, const std::string& name, const std::string& source, std::string* err) {
  if (!loadText(L, source, name, err)) return false;
  lua_pop(L, 1);
  if (!loadText(L, wrapHandler(source), name, err)) return false;
  lua_pop(L, 1);
  return true;
}

bool Functions::freshIndex(std::string* err) {
  uint64_t now = moduleCounter();
  if (have_index_ && now == seen_) return true;
  if (!dir_.empty() && !readModuleIndex(dir_, &index_, err, kFunctionKind)) return false;
  seen_ = now;
  have_index_ = true;
  dropOldMakers();
  return true;
}

// Versions no function has any more are not compiled code to keep (a
// request running one holds its closure).
void Functions::dropOldMakers() {
  std::set<std::string> current;
  for (const auto& [name, f] : index_.modules) current.insert(f.md5);
  for (auto it = makers_.begin(); it != makers_.end();) {
    if (current.count(it->first)) {
      ++it;
      continue;
    }
    luaL_unref(vm_.state(), LUA_REGISTRYINDEX, it->second);
    it = makers_.erase(it);
  }
}

bool Functions::pushMaker(lua_State* L, const std::string& name, const std::string& md5, std::string* err) {
  auto it = makers_.find(md5);
  if (it != makers_.end()) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, it->second);
    return true;
  }
  std::string source;
  if (!readModuleSource(dir_, md5, &source, err, kFunctionKind)) return false;
  if (!compile(L, name, source, err) || !loadText(L, wrapHandler(source), name, err)) return false;
  // Stack: [maker]. No trace may start in any of its prototypes, so the
  // budget hook sees every instruction (budget.h).
  luaJIT_setmode(L, -1, LUAJIT_MODE_ALLFUNC | LUAJIT_MODE_OFF);
  lua_pushvalue(L, -1);
  makers_[md5] = luaL_ref(L, LUA_REGISTRYINDEX);
  return true;
}

// Whether the running sandboxed request was killed (the pcall wrappers ask).
int Functions::killed(lua_State* L) {
  sandbox::BudgetRun* run = sandbox::BudgetRun::active();
  lua_pushboolean(L, run && run->killed() != sandbox::Budget::kNone);
  return 1;
}

bool Functions::pushSandbox(lua_State* L, std::string* err) {
  if (sandbox_ref_ != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, sandbox_ref_);
    return true;
  }
  const conf::SandboxConf& sc = vm_.config().http.lua.sandbox;
  int base = lua_gettop(L);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "tidegate.sandbox");
  if (lua_pcall(L, 1, 1, 0) != 0) {
    *err = std::string("cannot load the sandbox: ") + (lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
    lua_settop(L, base);
    return false;
  }
  // Stack: [builder] -> [builder, killed, KILL, conf]
  lua_pushcfunction(L, killed);
  lua_pushlightuserdata(L, sandbox::BudgetRun::killKey());
  lua_createtable(L, 0, 3);
  lua_pushboolean(L, sc.pcall);
  lua_setfield(L, -2, "pcall");
  for (const auto* names : {&sc.shared_dicts, &sc.modules}) {
    lua_createtable(L, static_cast<int>(names->size()), 0);
    for (size_t i = 0; i < names->size(); i++) {
      lua_pushstring(L, (*names)[i].c_str());
      lua_rawseti(L, -2, static_cast<int>(i + 1));
    }
    lua_setfield(L, -2, names == &sc.shared_dicts ? "shared_dicts" : "modules");
  }
  if (lua_pcall(L, 3, 1, 0) != 0 || !lua_istable(L, -1)) {
    *err = std::string("cannot build the sandbox: ") + (lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
    lua_settop(L, base);
    return false;
  }
  lua_pushvalue(L, -1);
  sandbox_ref_ = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushlightuserdata(L, sandbox::BudgetRun::sandboxKey());
  lua_pushvalue(L, -2);
  lua_rawset(L, LUA_REGISTRYINDEX);
  return true;
}

Functions::Push Functions::push(lua_State* L, const std::string& name, std::string* err) {
  if (!freshIndex(err)) return Push::kError;
  auto it = index_.modules.find(name);
  if (it == index_.modules.end()) return Push::kNotFound;
  int base = lua_gettop(L);
  if (!pushSandbox(L, err)) return Push::kError;
  // Stack: [sandbox] -> [sandbox, run, maker] -> [sandbox, run, chunk]
  lua_getfield(L, base + 1, "run");
  if (!pushMaker(L, name, it->second.md5, err)) {
    lua_settop(L, base);
    return Push::kError;
  }
  lua_call(L, 0, 1);  // the maker only returns the closure
  lua_getfield(L, base + 1, "new_env");
  lua_call(L, 0, 1);
  lua_setfenv(L, -2);
  lua_remove(L, base + 1);
  return Push::kOk;
}

}  // namespace tidegate::lua
