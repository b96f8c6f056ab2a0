// lua_budget_timeout: a wall-clock budget for trusted Lua handlers, which
// run with the JIT on. A handler that passes it is ended, even inside a
// JIT-compiled loop that calls nothing.
//
// Why it is hard: the code runs on the loop thread, so no libuv timer can
// fire while it spins; a debug hook set from elsewhere (lua_sethook is
// safe to call from a signal handler) stops the interpreter, but LuaJIT
// never calls hooks inside compiled traces, and a trace of a loop can run
// forever without leaving.
//
// How it bites: the worker runs LuaJIT's own sampling profiler in 'l' mode
// (luaJIT_profile_start). In that mode every trace is compiled with a
// check at each source line change that leaves the trace when the
// profiler's flag is set, and the profiler's SIGPROF timer sets that flag
// every interval of CPU time. In front of LuaJIT's SIGPROF handler sits
// ours: when the armed run is past its deadline it sets a count hook
// (every instruction). The trace exits at its next line check, the
// interpreter calls the hook, and the hook yields the handler's coroutine
// out of LuaJIT; the scheduler (LuaTask::run) sees the trip and ends the
// request (500, or a cut response). A yield cannot be caught by pcall, and
// no xpcall message handler runs. set_by_lua* and the filters run as a
// coroutine of their own under a budget (pcallWithBudget) for that reason.
// Where the code cannot yield (a C function in between) LuaJIT raises an
// error instead, and the hook fires again at every instruction, so a pcall
// that catches it is hit again at its next instruction.
//
// A wait (ngx.sleep, a cosocket) that outlives the deadline is ended by a
// libuv timer.
//
// The handler calls lua_sethook, and LuaJIT's handler rewrites the dispatch
// table, from signal context, as LuaJIT's profiler always does; a kill that
// an interleaving with a hook change on the loop thread loses comes with
// the next sample.
//
// Cost: the line checks in traces (a byte test and a branch each), one
// SIGPROF per interval of CPU time while the worker is busy, two stores
// around each resume. Nothing of this runs unless the conf sets a budget.
// Limits: a single C call (string.rep, table.sort of millions, a blocking
// FFI call) is not interrupted; the kill comes when it returns. jit.profile
// is taken (its start() raises).
#pragma once

#include <lua.hpp>
#include <uv.h>

#include <cstdint>
#include <string>

#include "conf/config.h"
#include "lua/task.h"

namespace tidegate::lua {

// One armed run: a deadline and the hook it replaced (restored when the
// run ends, so a sandbox count hook around it survives). Runs nest (a
// body filter inside ngx.flush): the innermost is checked.
class Tripwire {
 public:
  explicit Tripwire(uint64_t budget_ms) : budget_ms_(budget_ms) {}
  ~Tripwire() { disarm(); }
  Tripwire(const Tripwire&) = delete;
  Tripwire& operator=(const Tripwire&) = delete;

  // From now on the watchdog checks this run against `deadline_ns`
  // (uv_hrtime()). Past it already: the hook is set at once.
  void arm(lua_State* L, uint64_t deadline_ns);
  // The run stopped (ended, yielded): no more checks; the hook before
  // arm() is back.
  void disarm();
  bool armed() const { return L_ != nullptr; }
  // The hook found the run past its deadline.
  bool tripped() const { return tripped_; }
  void reset() { tripped_ = false; }
  uint64_t budgetMs() const { return budget_ms_; }
  void setBudgetMs(uint64_t ms) { budget_ms_ = ms; }

 // --- for the SIGPROF handler and the kill hook (lua/watchdog.cc) ---
  uint64_t deadline() const { return deadline_ns_; }
  bool hookSet() const { return hook_set_; }
  void trip() { tripped_ = true; }
  // Every instruction from now on calls the kill hook.
  void setKillHook();

 private:
  void restoreHook();

  uint64_t budget_ms_;
  bool tripped_ = false;
  lua_State* L_ = nullptr;
  uint64_t deadline_ns_ = 0;
  volatile bool hook_set_ = false;
  Tripwire* outer_ = nullptr;
  lua_Hook saved_hook_ = nullptr;
  int saved_mask_ = 0;
  int saved_count_ = 0;
};

// The per-worker machinery (process-wide: LuaJIT has one profiler).
class Watchdog {
 public:
  // Starts the profiler on L's VM, sampling every `interval_ms` of CPU
  // time, and puts our check in front of its SIGPROF handler. Call on the
  // loop thread of a worker (after fork: interval timers are not
  // inherited). False with *err when LuaJIT's profiler is not the SIGPROF
  // kind this relies on.
  static bool start(lua_State* L, int interval_ms, std::string* err);
  static void stop();
  static bool running();
  // The sampling interval for budgets down to `min_budget_ms`: a tenth of
  // it, 1 to 10 ms (how late past its deadline a spinning handler ends).
  static int intervalFor(uint64_t min_budget_ms);
};

// The smallest lua_budget_timeout anywhere in the conf (0: none).
uint64_t minBudgetTimeout(const conf::Config& cfg);

// The budget of one request task's handler, across its resumes: a
// Tripwire armed around each resume, and a libuv timer (made and started
// only once the handler waits) that ends a handler still waiting at its
// deadline. A handler that runs to its end in one go costs a clock read
// and a few stores.
class HandlerBudget : public ResumeGuard {
 public:
  // `task->expireBudget()` runs from the loop when the deadline passes
  // while the handler waits.
  HandlerBudget(uv_loop_t* loop, LuaTask* task) : loop_(loop), task_(task) {}
  ~HandlerBudget() override;
  HandlerBudget(const HandlerBudget&) = delete;
  HandlerBudget& operator=(const HandlerBudget&) = delete;

  // A handler starts with `budget_ms` of wall-clock time.
  void begin(uint64_t budget_ms);
  // It ended (or the task moved on): the timer stops.
  void end();
  uint64_t budgetMs() const { return wire_.budgetMs(); }

  void enter(lua_State* co) override { wire_.arm(co, deadline_ns_); }
  void leave(lua_State* co) override;
  bool tripped() const override { return wire_.tripped(); }

 private:
  static void onTimer(uv_timer_t* t) noexcept;

  Tripwire wire_{0};
  uv_loop_t* loop_;
  LuaTask* task_;
  uv_timer_t* timer_ = nullptr;  // from the first wait on
  bool timing_ = false;          // the timer runs for this handler
  uint64_t deadline_ns_ = 0;
};

// lua_pcall(L, nargs, nresults, errfunc = Vm::traceback) under a
// lua_budget_timeout of `budget_ms` (set_by_lua* and the filters; 0: plain
// lua_pcall): with a budget the code runs as a coroutine, and a kill fails
// the run with "lua_budget_timeout 50ms exceeded" and the traceback.
int pcallWithBudget(lua_State* L, int nargs, int nresults, int errfunc, uint64_t budget_ms);

// "lua_budget_timeout 50ms exceeded", the words of every kill.
std::string budgetExceeded(uint64_t budget_ms);

}  // namespace tidegate::lua
