// Sandboxed functions pushed through the admin API (PUT /functions/{name}),
// as one worker's VM runs them for content_by_function. The store is the
// pushed modules' (lua/module_store.h, kind "functions"); the index is
// re-read when the machine's module counter moved, as PushedModules does.
//
// A function's source is compiled once per worker and version, as the body
// of a closure maker (the wrapper shares the first line, so line numbers do
// not move), with the JIT off for every prototype in it (budget.h). Each
// request calls the maker for a fresh closure and gives it a fresh
// environment (lua/tidegate/sandbox.lua); if the chunk returns a function,
// that function is called in the same request. Nothing a function creates
// outlives its request: state that must last goes in ngx.shared.
#pragma once

#include <lua.hpp>

#include <map>
#include <string>

#include "lua/module_store.h"

namespace tidegate::lua {

class Vm;

class Functions {
 public:
  Functions(Vm& vm, std::string state_dir) : vm_(vm), dir_(std::move(state_dir)) {}

  // Compiles `source` as a function body (text only) without running it:
  // false with the compiler's message.
  static bool compile(lua_State* L, const std::string& name, const std::string& source, std::string* err);

  enum class Push { kOk, kNotFound, kError };
  // Pushes the entry of one request of function `name`: [run, chunk], where
  // chunk is a fresh closure with a fresh sandbox environment and run(chunk)
  // calls it (and the handler it returns). kNotFound / kError push nothing
  // (*err says why for kError).
  Push push(lua_State* L, const std::string& name, std::string* err);

 private:
  bool freshIndex(std::string* err);
  void dropOldMakers();
  // Stack: [] -> [maker] (compiled once per md5).
  bool pushMaker(lua_State* L, const std::string& name, const std::string& md5, std::string* err);
  // Stack: [] -> [sandbox] (the table sandbox.lua's builder returned).
  bool pushSandbox(lua_State* L, std::string* err);
  static int killed(lua_State* L);

  Vm& vm_;
  std::string dir_;
  bool have_index_ = false;
  uint64_t seen_ = 0;
  ModuleIndex index_;
  std::map<std::string, int> makers_;  // md5 -> registry ref of its closure maker
  int sandbox_ref_ = LUA_NOREF;
};

}  // namespace tidegate::lua
