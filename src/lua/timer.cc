#include "lua/timer.h"

#include <cmath>

#include "core/log.h"
#include "lua/api/common.h"
#include "lua/task.h"

namespace tidegate::lua {

// A timer waiting to expire. `ref` holds {fn, args...} with n = #args.
struct Timers::Pending {
  uv_timer_t handle;
  Timers* owner;
  int ref = LUA_NOREF;
  int nargs = 0;
  bool every = false;
  std::list<Pending*>::iterator pos;
};

// One expiry's callback and the coroutines it starts.
class Timers::Task : public LuaTask {
 public:
  Task(Vm& vm, uv_loop_t* loop, Timers* owner) : LuaTask(vm, loop), owner_(owner) {}
  Phase phase() const override { return Phase::kTimer; }
  void start(int nargs) { startEntry(nargs); }
  std::list<std::unique_ptr<Task>>::iterator pos;

 private:
  void onDone() override { owner_->finished(this); }
  void onExit() override { owner_->finished(this); }
  void onError(std::string trace) override {
    TG_LOG(core::LogLevel::kError, "lua entry thread aborted: runtime error: %s, context: ngx.timer", trace.c_str());
    owner_->finished(this);
  }
  Timers* owner_;
};

Timers::Timers(Vm& vm, uv_loop_t* loop) : vm_(vm), loop_(loop) {}

Timers::~Timers() { abortAll(); }

bool Timers::add(lua_State* L, uint64_t delay_ms, bool every, const char** err) {
  if (stopping_ || vm_.exiting()) {
    *err = "process exiting";
    return false;
  }
  if (pending_.size() >= vm_.config().http.lua.max_pending_timers) {
    *err = "too many pending timers";
    return false;
  }
  // Stack: [delay, fn, args...] -> unchanged; {fn, args...} is anchored.
  int top = lua_gettop(L);
  lua_createtable(L, top - 1, 0);
  for (int i = 2; i <= top; i++) {
    lua_pushvalue(L, i);
    lua_rawseti(L, -2, i - 1);
  }
  auto* p = new Pending;
  p->owner = this;
  p->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  p->nargs = top - 2;
  p->every = every;
  uv_timer_init(loop_, &p->handle);
  p->handle.data = p;
  uv_timer_start(&p->handle, onTimer, delay_ms, every ? delay_ms : 0);
  p->pos = pending_.insert(pending_.end(), p);
  return true;
}

void Timers::onTimer(uv_timer_t* h) noexcept {
  auto* p = static_cast<Pending*>(h->data);
  p->owner->fire(p, false);
}

// Removes a pending timer; its handle frees the record once closed.
void Timers::drop(Pending* p) {
  pending_.erase(p->pos);
  luaL_unref(vm_.state(), LUA_REGISTRYINDEX, p->ref);
  uv_timer_stop(&p->handle);
  uv_close(reinterpret_cast<uv_handle_t*>(&p->handle),
           [](uv_handle_t* h) { delete static_cast<Pending*>(h->data); });
}

void Timers::fire(Pending* p, bool premature) {
  lua_State* L = vm_.state();
  if (!premature && running_.size() >= vm_.config().http.lua.max_running_timers) {
    TG_LOG(core::LogLevel::kAlert, "%llu lua_max_running_timers are not enough",
           static_cast<unsigned long long>(vm_.config().http.lua.max_running_timers));
    if (!p->every) drop(p);
    return;
  }
  vm_.refreshModules();
  // Stack: [] -> [fn, premature, args...]
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->ref);
  int t = lua_gettop(L);
  int nargs = p->nargs;
  lua_checkstack(L, nargs + 3);
  lua_rawgeti(L, t, 1);
  lua_pushboolean(L, premature);
  for (int i = 1; i <= nargs; i++) lua_rawgeti(L, t, i + 1);
  lua_remove(L, t);
  if (!p->every || premature) drop(p);
  auto task = std::make_unique<Task>(vm_, loop_, this);
  Task* raw = task.get();
  raw->pos = running_.insert(running_.end(), std::move(task));
  raw->start(nargs + 1);  // may finish (and free the task) at once
}

void Timers::finished(Task* t) {
  running_.erase(t->pos);  // destroys t; its caller returns at once
  notifyIfIdle();
}

// Stopping and nothing runs any more: the worker's callback, once.
void Timers::notifyIfIdle() {
  if (!stopping_ || !running_.empty() || !idle_) return;
  auto idle = std::move(idle_);
  idle_ = nullptr;
  idle();
}

void Timers::shutdown(std::function<void()> idle) {
  stopping_ = true;
  idle_ = std::move(idle);
  while (!pending_.empty()) fire(pending_.front(), true);
  notifyIfIdle();
}

void Timers::abortAll() {
  stopping_ = true;
  while (!pending_.empty()) drop(pending_.front());
  running_.clear();
  notifyIfIdle();
}

namespace {

// The worker's timers, or OpenResty's error outside a worker (init_by_lua).
Timers* requireTimers(lua_State* L) {
  Vm* vm = Vm::from(L);
  if (!vm->timers()) raiseDisabled(L, vm->phase());
  return vm->timers();
}

int timerAdd(lua_State* L, bool every) {
  Timers* timers = requireTimers(L);
  lua_Number delay = luaL_checknumber(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (every ? !(delay > 0) : !(delay >= 0)) {
    return luaL_argerror(L, 1, every ? "delay must be greater than zero" : "delay must not be negative");
  }
  const char* err = nullptr;
  if (!timers->add(L, static_cast<uint64_t>(std::llround(delay * 1000)), every, &err)) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushinteger(L, 1);
  return 1;
}

int timerAt(lua_State* L) { return timerAdd(L, false); }
int timerEvery(lua_State* L) { return timerAdd(L, true); }

int timerRunningCount(lua_State* L) {
  Timers* t = Vm::from(L)->timers();
  lua_pushinteger(L, t ? static_cast<lua_Integer>(t->runningCount()) : 0);
  return 1;
}

int timerPendingCount(lua_State* L) {
  Timers* t = Vm::from(L)->timers();
  lua_pushinteger(L, t ? static_cast<lua_Integer>(t->pendingCount()) : 0);
  return 1;
}

}  // namespace

void openNgxTimer(lua_State* L) {
  lua_createtable(L, 0, 4);
  setFn(L, "at", timerAt);
  setFn(L, "every", timerEvery);
  setFn(L, "running_count", timerRunningCount);
  setFn(L, "pending_count", timerPendingCount);
  lua_setfield(L, -2, "timer");
}

}  // namespace tidegate::lua
