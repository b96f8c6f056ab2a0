// The budgets of one sandboxed request (lua_sandbox_instructions,
// lua_sandbox_timeout, lua_sandbox_memory), and how they bite:
//
// - Instructions: a count hook (lua_sethook, LUA_MASKCOUNT) set while one
//   of the request's coroutines runs and removed when it yields (LuaJIT's
//   hooks belong to the whole VM, not to a coroutine). The sandboxed chunk
//   is compiled with the JIT off for all its prototypes, so the
//   interpreter runs every instruction of it and the hook fires.
// - Wall clock: the hook also compares the clock, and a libuv timer ends
//   the request while it waits (ngx.sleep, a body read).
// - Memory: while a sandboxed coroutine runs, the VM's allocator is a
//   wrapper (lua_setallocf around each resume, so trusted code never pays
//   for it) that charges every allocation growing a block to the request.
//   One that would pass the budget fails, and LuaJIT raises "not enough
//   memory" (string.rep to gigabytes included).
//
// string.dump is not in the sandbox's string table, and the real one loses
// it while sandboxed code runs (strings' methods are the real table's);
// the Lua pattern functions, which run in C where no hook can stop them,
// refuse patterns whose backtracking bound is too large for the subject.
//
// Once a budget is exceeded the request is "killed": the hook raises the
// kill (a light userdata) at every tick, and the pcall/xpcall wrappers of
// lua/tidegate/sandbox.lua re-raise it, so no Lua code can catch it and go
// on.
#pragma once

#include <lua.hpp>
#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>

#include "conf/config.h"
#include "lua/task.h"

namespace tidegate::lua::sandbox {

enum class Budget { kNone, kInstructions, kTimeout, kMemory };
const char* budgetName(Budget b);

// The lua_sandbox_* budgets of a request's location (0: no limit).
struct Limits {
  uint64_t instructions = 0;
  uint64_t timeout_ms = 0;
  uint64_t memory = 0;
  static Limits of(const conf::HttpSettings& s) {
    return {s.lua_sandbox_instructions.value_or(0), s.lua_sandbox_timeout_ms.value_or(0),
            s.lua_sandbox_memory.value_or(0)};
  }
};

class BudgetRun : public ResumeGuard {
 public:
  // `on_timeout` runs from the loop when the wall-clock budget passes while
  // the request waits; it must end the request's coroutines.
  // `L`: the VM's main state.
  BudgetRun(lua_State* L, uv_loop_t* loop, Limits limits, std::function<void()> on_timeout);
  ~BudgetRun() override;
  BudgetRun(const BudgetRun&) = delete;
  BudgetRun& operator=(const BudgetRun&) = delete;

  // Around every resume of one of the request's coroutines.
  void enter(lua_State* co) override;
  void leave(lua_State* co) override;

  Budget killed() const { return killed_; }
  // "instructions (10000000)", for the log line.
  std::string describe() const;

  // The running sandboxed request, null when trusted code runs.
  static BudgetRun* active() { return active_; }
  // The error value of a kill.
  static void* killKey();
  // The registry key of the sandbox table (lua/sandbox/functions.cc sets it).
  static void* sandboxKey();

 private:
  static void hook(lua_State* L, lua_Debug* ar);
  // Strings' methods are the real string table's: while sandboxed code
  // runs, it has no dump and the pattern functions are the sandbox's
  // guarded ones (lua/tidegate/sandbox.lua enter/leave). Stack: unchanged.
  void swapStrings(bool sandboxed);
  static void* alloc(void* ud, void* ptr, size_t osize, size_t nsize);
  static void onTimer(uv_timer_t* t) noexcept;
  // False when `bytes` more would pass the memory budget.
  bool charge(size_t bytes);
  void kill(Budget b);

  lua_State* L_;
  const Limits limits_;
  std::function<void()> on_timeout_;
  uv_timer_t* timer_ = nullptr;
  uint64_t start_ns_;
  uint64_t instructions_ = 0;
  uint64_t allocated_ = 0;
  lua_Alloc orig_alloc_ = nullptr;  // the VM's allocator, put back by leave()
  void* alloc_ud_ = nullptr;
  Budget killed_ = Budget::kNone;
  static inline BudgetRun* active_ = nullptr;
};

}  // namespace tidegate::lua::sandbox
