// Lua modules pushed through the admin API, inside one VM (a worker's, or
// the master's for init_by_lua*): a searcher in package.loaders, after
// package.preload and ahead of lua_package_path, so a pushed module wins
// over a file of the same name; and refresh(), which every request phase
// and timer calls first: when the machine's module counter moved
// (shm::UpstreamTable::moduleVersion(), one integer compare otherwise), it
// re-reads the index and replaces package.loaded[name] of every loaded
// module that changed, in one assignment between two handlers. A request
// that already holds the old module table keeps it; the next require gets
// the new one. A module that fails to load here keeps its old value (the
// error is logged); a deleted one is dropped from package.loaded.
#pragma once

#include <lua.hpp>

#include <map>
#include <string>

#include "lua/module_store.h"

namespace tidegate::lua {

// The machine's counter of pushed modules and functions: every push,
// rollback or delete bumps it (0 without shared memory).
uint64_t moduleCounter();

class PushedModules {
 public:
  explicit PushedModules(std::string state_dir) : dir_(std::move(state_dir)) {}

  // Stack: [] -> []
  void install(lua_State* L);
  void refresh(lua_State* L);
  // Runs `source` as module `name` (text only, the name as require passes
  // it) and sets package.loaded[name] to its value (true for nil). False
  // with *err, and package.loaded unchanged, on a syntax or runtime error.
  // Stack: [] -> []
  bool load(lua_State* L, const std::string& name, const std::string& source, const std::string& md5,
            std::string* err);
  // Compiles without running: false with the compiler's message.
  static bool compile(lua_State* L, const std::string& name, const std::string& source, std::string* err);
  // Compiles and runs it as load() does, keeping nothing: false with the
  // compiler's or the runtime's message. Stack: [] -> []
  static bool tryLoad(lua_State* L, const std::string& name, const std::string& source, std::string* err);

 private:
  static int searcher(lua_State* L);
  // Compiles and runs `source`; true with its value pushed (true for nil),
  // false with *err and nothing pushed.
  static bool run(lua_State* L, const std::string& name, const std::string& source, std::string* err);
  // The index as of the module counter now (re-read when it moved).
  bool freshIndex(std::string* err);

  std::string dir_;
  uint64_t seen_ = 0;  // the module counter the index was read at
  bool have_index_ = false;
  ModuleIndex index_;
  std::map<std::string, std::string> loaded_md5_;  // name -> the version in package.loaded
};

}  // namespace tidegate::lua
