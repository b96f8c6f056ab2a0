// ngx.timer.at / ngx.timer.every: a worker's Lua timers. Each expiry runs
// the callback as the entry coroutine of a task of its own (phase "timer",
// detached from any request), so it may sleep, spawn threads and wait on
// semaphores. Caps as OpenResty: lua_max_pending_timers (creation fails
// with "too many pending timers"), lua_max_running_timers (an expiry beyond
// it is dropped with an alert). At a graceful stop every pending timer
// fires at once with premature = true and the worker waits for running
// callbacks (up to worker_shutdown_timeout).
#pragma once

#include <uv.h>

#include <functional>
#include <list>
#include <memory>
#include <string>

#include "lua/vm.h"

namespace tidegate::lua {

class Timers {
 public:
  Timers(Vm& vm, uv_loop_t* loop);
  ~Timers();
  Timers(const Timers&) = delete;
  Timers& operator=(const Timers&) = delete;

  // Creates a timer from L's stack: [delay, fn, args...]. False with *err
  // (OpenResty's text) when it cannot.
  bool add(lua_State* L, uint64_t delay_ms, bool every, const char** err);
  size_t pendingCount() const { return pending_.size(); }
  size_t runningCount() const { return running_.size(); }

  // Graceful stop: pending timers fire now (premature); `idle` runs once no
  // callback is running any more (at once if none is).
  void shutdown(std::function<void()> idle);
  // Ends running callbacks and drops pending timers (fast stop, or the
  // shutdown timeout).
  void abortAll();

 private:
  struct Pending;
  class Task;
  void fire(Pending* p, bool premature);
  void drop(Pending* p);
  void finished(Task* t);
  void notifyIfIdle();
  static void onTimer(uv_timer_t* h) noexcept;

  Vm& vm_;
  uv_loop_t* loop_;
  std::list<Pending*> pending_;
  std::list<std::unique_ptr<Task>> running_;
  bool stopping_ = false;
  std::function<void()> idle_;
};

// Registers ngx.timer.* on the ngx table. Stack: [ngx] -> [ngx].
void openNgxTimer(lua_State* L);

}  // namespace tidegate::lua
