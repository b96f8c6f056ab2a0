#include "lua/pushed_modules.h"

#include "core/log.h"
#include "shm/upstream_table.h"

namespace tidegate::lua {
namespace {

using core::LogLevel;

std::string chunkName(const std::string& name) { return "=" + name; }

}  // namespace

uint64_t moduleCounter() {
  shm::UpstreamTable* t = shm::UpstreamTable::shared();
  return t ? t->moduleVersion() : 0;
}

bool PushedModules::compile(lua_State* L, const std::string& name, const std::string& source, std::string* err) {
  // Text only: a pushed chunk of bytecode could break out of the VM.
  if (luaL_loadbufferx(L, source.data(), source.size(), chunkName(name).c_str(), "t") != 0) {
    *err = lua_tostring(L, -1) ? lua_tostring(L, -1) : "cannot compile";
    lua_pop(L, 1);
    return false;
  }
  lua_pop(L, 1);
  return true;
}

void PushedModules::install(lua_State* L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaders");
  // Shift entries 2..n up by one and put ours at 2 (after preload).
  int n = static_cast<int>(lua_objlen(L, -1));
  for (int i = n; i >= 2; i--) {
    lua_rawgeti(L, -1, i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushlightuserdata(L, this);
  lua_pushcclosure(L, searcher, 1);
  lua_rawseti(L, -2, 2);
  lua_pop(L, 2);
}

bool PushedModules::freshIndex(std::string* err) {
  uint64_t now = moduleCounter();
  if (have_index_ && now == seen_) return true;
  if (dir_.empty()) {  // no state directory (the `tidegate lua` command): nothing pushed
    have_index_ = true;
    seen_ = now;
    return true;
  }
  if (!readModuleIndex(dir_, &index_, err)) return false;
  seen_ = now;
  have_index_ = true;
  return true;
}

// package.loaders entry. Stack: [name] -> [loader] or [message].
int PushedModules::searcher(lua_State* L) {
  auto* self = static_cast<PushedModules*>(lua_touserdata(L, lua_upvalueindex(1)));
  std::string name = luaL_checkstring(L, 1);
  std::string err;
  if (!self->freshIndex(&err)) {
    TG_LOG(LogLevel::kError, "pushed Lua modules: %s", err.c_str());
    lua_pushfstring(L, "\n\tno pushed module '%s' (the index cannot be read)", name.c_str());
    return 1;
  }
  auto it = self->index_.modules.find(name);
  if (it == self->index_.modules.end()) {
    lua_pushfstring(L, "\n\tno pushed module '%s'", name.c_str());
    return 1;
  }
  std::string source;
  if (!readModuleSource(self->dir_, it->second.md5, &source, &err)) return luaL_error(L, "%s", err.c_str());
  if (luaL_loadbufferx(L, source.data(), source.size(), chunkName(name).c_str(), "t") != 0) return lua_error(L);
  self->loaded_md5_[name] = it->second.md5;
  return 1;
}

bool PushedModules::run(lua_State* L, const std::string& name, const std::string& source, std::string* err) {
  int top = lua_gettop(L);
  if (luaL_loadbufferx(L, source.data(), source.size(), chunkName(name).c_str(), "t") != 0) {
    *err = lua_tostring(L, -1) ? lua_tostring(L, -1) : "cannot compile";
    lua_settop(L, top);
    return false;
  }
  lua_pushstring(L, name.c_str());
  if (lua_pcall(L, 1, 1, 0) != 0) {
    *err = lua_tostring(L, -1) ? lua_tostring(L, -1) : "error object is not a string";
    lua_settop(L, top);
    return false;
  }
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushboolean(L, 1);
  }
  return true;
}

bool PushedModules::tryLoad(lua_State* L, const std::string& name, const std::string& source, std::string* err) {
  if (!run(L, name, source, err)) return false;
  lua_pop(L, 1);
  return true;
}

bool PushedModules::load(lua_State* L, const std::string& name, const std::string& source, const std::string& md5,
                         std::string* err) {
  if (!run(L, name, source, err)) return false;
  // Stack: [value] -> []
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaded");
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, name.c_str());
  lua_pop(L, 3);
  loaded_md5_[name] = md5;
  return true;
}

void PushedModules::refresh(lua_State* L) {
  if (have_index_ && moduleCounter() == seen_) return;
  std::string err;
  if (!freshIndex(&err)) {
    TG_LOG(LogLevel::kError, "pushed Lua modules: %s", err.c_str());
    return;
  }
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaded");
  // Changed or new: replace what is loaded (from a push or from a file).
  for (const auto& [name, m] : index_.modules) {
    auto was = loaded_md5_.find(name);
    if (was != loaded_md5_.end() && was->second == m.md5) continue;
    lua_getfield(L, -1, name.c_str());
    bool in_use = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!in_use) continue;  // the next require finds the new one
    std::string source;
    if (!readModuleSource(dir_, m.md5, &source, &err) || !load(L, name, source, m.md5, &err)) {
      TG_LOG(LogLevel::kError, "pushed Lua module \"%s\" (%s) not loaded, the old one stays: %s", name.c_str(),
             m.md5.c_str(), err.c_str());
    }
  }
  // Deleted: the next require looks on lua_package_path again.
  for (auto it = loaded_md5_.begin(); it != loaded_md5_.end();) {
    if (index_.modules.count(it->first)) {
      ++it;
      continue;
    }
    lua_pushnil(L);
    lua_setfield(L, -2, it->first.c_str());
    it = loaded_md5_.erase(it);
  }
  lua_pop(L, 2);
}

}  // namespace tidegate::lua
