// The coroutine scheduler shared by everything that runs Lua on the loop:
// a request's phases (phases/content.h) and ngx.timer callbacks (timer.h).
// A LuaTask owns the coroutines of one such run: the entry coroutine, the
// user coroutines its code creates (coroutine.*) and its light threads
// (ngx.thread.*). Only one runs at a time; run() drives them flat, as
// lua-nginx-module does: coroutine.resume, coroutine.yield and
// ngx.thread.spawn yield to run(), which resumes the right coroutine, so an
// API that waits (ngx.sleep, a semaphore, later a socket) suspends exactly
// the coroutine that called it, and its event resumes that one.
#pragma once

#include <uv.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "core/recycled.h"
#include "lua/vm.h"

namespace tidegate::lua {

class LuaTask;
class RequestContext;

// Something a coroutine waits for. Destroying it cancels the event (a
// timer, a queue entry); when the event comes it calls LuaTask::wake().
class Wait {
 public:
  virtual ~Wait() = default;
};

// One coroutine of a task.
struct Co : core::Recycled<Co> {
  enum class Kind { kEntry, kUser, kThread };
  // kWaiting: suspended on an API event; kNormal: it resumed another
  // coroutine (or spawned a thread) that is running or waiting;
  // kZombie: a finished light thread nobody waited for yet.
  enum class State { kSuspended, kRunning, kNormal, kWaiting, kZombie, kDead };

  lua_State* L = nullptr;
  int ref = LUA_NOREF;  // anchors the coroutine in the registry
  Kind kind = Kind::kUser;
  State state = State::kSuspended;
  // kUser: the coroutine that resumed it (while kRunning/kNormal/kWaiting).
  // kThread: the coroutine that spawned it.
  Co* parent = nullptr;
  std::unique_ptr<Wait> wait;
  bool spawning = false;        // a thread's first run: its parent waits for spawn() to return
  bool failed = false;          // a zombie thread ended with an error (the message is on its stack)
  std::vector<Co*> waiting_for;  // ngx.thread.wait() by this coroutine
};

// Told around every resume of a task's coroutines (the sandbox budgets,
// lua/sandbox/budget.h; lua_budget_timeout, lua/watchdog.h).
class ResumeGuard {
 public:
  virtual ~ResumeGuard() = default;
  virtual void enter(lua_State* co) = 0;
  virtual void leave(lua_State* co) = 0;
  // After leave(): the run was stopped for good (lua_budget_timeout); the
  // task ends with onBudgetKill() whatever the resume returned.
  virtual bool tripped() const { return false; }
};

class LuaTask {
 public:
  LuaTask(Vm& vm, uv_loop_t* loop) : vm_(vm), loop_(loop) {
    if (auto* spare = spareCos()) cos_.swap(*spare);
  }
  virtual ~LuaTask();
  LuaTask(const LuaTask&) = delete;
  LuaTask& operator=(const LuaTask&) = delete;

  // The running task of this VM's process, null outside Lua on the loop.
  static LuaTask* current(lua_State* L) { return Vm::from(L)->current(); }

  Vm& vm() const { return vm_; }
  uv_loop_t* loop() const { return loop_; }
  // The head of ngx.socket.tcp's list of this task's live sockets
  // (api/ngx_socket.cc links them; its end hook closes what is left).
  void*& liveCosockets() { return live_cosockets_; }
  // Unique in this process: an object handed to Lua remembers the id of
  // the task that made it, so a later task cannot use it by mistake.
  uint64_t id() const { return id_; }
  // Called with a task when it is destroyed, after its coroutines ended
  // (ngx.socket.tcp and ngx.socket.udp close the sockets the task left
  // open). Adding a hook twice (a second VM) keeps one.
  using EndHook = void (*)(LuaTask& task);
  static void addEndHook(EndHook hook) {
    if (std::find(end_hooks_.begin(), end_hooks_.end(), hook) == end_hooks_.end()) end_hooks_.push_back(hook);
  }
  virtual Phase phase() const = 0;
  // The request this task serves; null for a timer.
  virtual RequestContext* request() { return nullptr; }

  // ngx.ctx: Stack: [] -> [ctx] (created on first use) / [t] -> [] (replace).
  void pushCtx(lua_State* L);
  void setCtx(lua_State* L);
  // The globals of this task's handlers: a table of its own that falls back
  // to _G; writing a new global there logs a warning (once per name).
  // Stack: [] -> [env].
  void pushEnv(lua_State* L);
  // Whether pushEnv() has made that table (here or in the inherited task).
  bool hasEnv() const { return inherited_ ? inherited_->hasEnv() : env_ref_ != LUA_NOREF; }
  // A new table of globals as pushEnv() makes them. Stack: [] -> [env].
  static void pushNewEnv(lua_State* L);
  // The registry reference of ngx.ctx, LUA_NOREF before its first use.
  int ctxRef() const { return inherited_ ? inherited_->ctxRef() : ctx_ref_; }
  // Uses `from`'s ngx.ctx and globals (a later phase run in a task of its
  // own: log_by_lua*, balancer_by_lua*), which must outlive this task or
  // keepInherited() must be called before it goes. Before any use.
  void inherit(LuaTask& from) { inherited_ = &from; }
  // Holds references to the inherited ngx.ctx and globals of its own (made
  // now if need be), so that `from` may go.
  void keepInherited();

  // --- used by the API functions (always for the running coroutine) ---
  Co* running() const { return running_; }
  // The coroutine record for `L` in this task, or null.
  Co* find(lua_State* L) const;
  // The API is about to `return lua_yield(L, 0)` until `wait`'s event
  // calls wake(). A null wait: woken by other means (ngx.thread.wait).
  void suspend(std::unique_ptr<Wait> wait);
  // ngx.exit and friends: every coroutine ends once the caller yields.
  void requestExit() { exit_requested_ = true; }
  // ngx.exit(status) in a task without a request: a timer just ends; a
  // task whose owner reads the status (ssl_certificate_by_lua*) keeps it.
  virtual void exitWithStatus(int) { requestExit(); }
  bool exitRequested() const { return exit_requested_; }
  // coroutine.resume(co, args...): `nargs` arguments are on co's stack.
  void requestResume(Co* co, int nargs);
  // coroutine.yield(...) from a user coroutine.
  void requestYield() { op_ = Op::kYield; }
  // ngx.thread.spawn(f, args...): `co` holds f and `nargs` arguments.
  void requestSpawn(Co* co, int nargs);
  // Records a new coroutine (a user coroutine or a light thread) whose
  // lua_State is on the top of L's stack; pops it.
  Co* adopt(lua_State* L, Co::Kind kind);
  // ngx.thread.kill: ends `co` and every coroutine it resumed.
  void kill(Co* co);
  // A zombie thread's results (or false, err) are moved to `to`'s stack
  // as coroutine.resume returns them; the thread is then dead. Returns
  // the number of values pushed.
  int reap(Co* thread, lua_State* to);

  // Whether `co` was ended by kill/teardown while suspended (LuaJIT
  // still reports it suspended).
  static bool wasKilled(lua_State* L, lua_State* co);

  // Starts `fn` (on top of the VM's main stack; popped) as a light thread
  // of the entry coroutine, from the loop (ngx.on_abort's handler).
  void spawnFromLoop();

  // The event `co` waited for came: its results (`nargs` values) are on
  // co's stack. Resumes it. Called from the loop only.
  void wake(Co* co, int nargs);

 protected:
  // Null, or told around every resume from now on.
  void setGuard(ResumeGuard* guard) { guard_ = guard; }
  // Starts `fn` with `nargs` arguments (on top of the VM's main stack:
  // [fn, args...]; popped) as the entry coroutine, after dropping the
  // coroutines of an earlier entry.
  void startEntry(int nargs = 0);
  // The entry coroutine and every light thread ended normally.
  virtual void onDone() = 0;
  // ngx.exit (or a redirect) ended every coroutine.
  virtual void onExit() = 0;
  // The entry coroutine raised `msg`; every coroutine has been ended.
  virtual void onError(std::string msg_with_traceback) = 0;
  // The guard tripped: every coroutine has been ended. `trace`: where the
  // stopped coroutine was.
  virtual void onBudgetKill(std::string trace) { onError(std::move(trace)); }
  // Ends every coroutine (cancelling what they wait for).
  void killAll();

 public:
  // The guard's deadline passed while the task waited (HandlerBudget's
  // timer): every coroutine ends, then onBudgetKill("while waiting").
  void expireBudget() {
    killAll();
    onBudgetKill("while waiting");  // may destroy this task
  }

 protected:

 private:
  enum class Op { kNone, kWait, kResume, kYield, kSpawn };
  void run(Co* co, int nargs);
  Co* afterSuspend(Co* co, int* nargs);
  Co* afterEnd(Co* co, bool error, int* nargs);
  Co* returnFromSpawn(Co* thread, int* nargs);
  void release(Co* co);
  void markKilled(lua_State* co);
  void sweep();

  // An empty vector with the storage of an ended task's cos_, which the
  // next task takes: a task per request then allocates none for it. Null
  // once the thread's copy is destroyed (at its exit).
  static std::vector<std::unique_ptr<Co>>* spareCos();

  static inline uint64_t last_id_ = 0;
  static inline std::vector<EndHook> end_hooks_;
  Vm& vm_;
  uv_loop_t* loop_;
  const uint64_t id_ = ++last_id_;
  std::vector<std::unique_ptr<Co>> cos_;
  Co* entry_ = nullptr;
  Co* running_ = nullptr;
  Op op_ = Op::kNone;
  Co* op_target_ = nullptr;
  int op_nargs_ = 0;
  int live_threads_ = 0;
  bool entry_done_ = false;
  bool entry_failed_ = false;  // the entry raised entry_error_; run() reports it
  std::string entry_error_;
  bool exit_requested_ = false;
  bool in_run_ = false;
  int dead_ = 0;  // records release() marked dead that sweep() has not freed
  int ctx_ref_ = LUA_NOREF;
  int env_ref_ = LUA_NOREF;
  LuaTask* inherited_ = nullptr;
  void* live_cosockets_ = nullptr;
  ResumeGuard* guard_ = nullptr;
};

// ngx.sleep(): a one-shot timer that wakes the coroutine with no results.
std::unique_ptr<Wait> sleepWait(LuaTask* task, Co* co, uint64_t ms);

// "API disabled in the context of <phase>_by_lua*" (OpenResty's words;
// "ngx.timer" for timers).
[[noreturn]] void raiseDisabled(lua_State* L, Phase phase);

}  // namespace tidegate::lua
