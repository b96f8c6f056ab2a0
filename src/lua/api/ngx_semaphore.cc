// require "ngx.semaphore" as lua-resty-core documents it: new(n), post(n),
// wait(timeout), count(). A semaphore lives in one worker and may be shared
// by requests and timers there. Waiters are served in FIFO order; a post
// wakes them on a later loop turn, never inside the poster's call.
#include <cmath>
#include <list>
#include <new>

#include "lua/api/common.h"
#include "lua/task.h"
#include "lua/vm.h"

namespace tidegate::lua {
namespace {

const char kSemaMeta[] = "tidegate.semaphore";

class SemWait;

struct Semaphore {
  lua_Integer resources = 0;
  std::list<SemWait*> waiters;  // FIFO; a granted waiter is no longer here
  void grant();
};

// One coroutine blocked in sema:wait(). Its timer first measures the
// timeout; when a post grants it a resource the timer is re-armed at 0 so
// the coroutine resumes on the next loop turn.
class SemWait : public Wait {
 public:
  SemWait(LuaTask* task, Co* co, Semaphore* sem, uint64_t timeout_ms) : task_(task), co_(co), sem_(sem) {
    timer_ = new uv_timer_t;
    uv_timer_init(task->loop(), timer_);
    timer_->data = this;
    pos_ = sem->waiters.insert(sem->waiters.end(), this);
    uv_timer_start(timer_, onTimer, timeout_ms, 0);
  }
  ~SemWait() override {
    if (state_ == State::kQueued) {
      sem_->waiters.erase(pos_);
    } else if (state_ == State::kGranted) {
      // Killed after a post chose it: the resource goes to the next waiter.
      sem_->resources++;
      sem_->grant();
    }
    uv_timer_stop(timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  }

  // A post chose this waiter (already out of the queue).
  void grant() {
    state_ = State::kGranted;
    uv_timer_start(timer_, onTimer, 0, 0);
  }

 private:
  static void onTimer(uv_timer_t* t) noexcept {
    auto* self = static_cast<SemWait*>(t->data);
    LuaTask* task = self->task_;
    Co* co = self->co_;
    if (self->state_ == State::kGranted) {
      self->state_ = State::kDone;  // the resource is consumed
      lua_pushboolean(co->L, 1);
      task->wake(co, 1);  // destroys self
      return;
    }
    self->sem_->waiters.erase(self->pos_);
    self->state_ = State::kDone;
    lua_pushnil(co->L);
    lua_pushliteral(co->L, "timeout");
    task->wake(co, 2);  // destroys self
  }

  LuaTask* task_;
  Co* co_;
  Semaphore* sem_;
  uv_timer_t* timer_;
  std::list<SemWait*>::iterator pos_;
  enum class State { kQueued, kGranted, kDone } state_ = State::kQueued;
};

// Hands available resources to waiters, oldest first.
void Semaphore::grant() {
  while (resources > 0 && !waiters.empty()) {
    SemWait* w = waiters.front();
    waiters.pop_front();
    resources--;
    w->grant();
  }
}

Semaphore* checkSema(lua_State* L) { return static_cast<Semaphore*>(luaL_checkudata(L, 1, kSemaMeta)); }

// semaphore.new(n?) -> sema
int semaNew(lua_State* L) {
  lua_Number n = luaL_optnumber(L, 1, 0);
  if (n < 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "no negative number");
    return 2;
  }
  void* mem = lua_newuserdata(L, sizeof(Semaphore));
  auto* sem = new (mem) Semaphore;
  sem->resources = static_cast<lua_Integer>(n);
  luaL_getmetatable(L, kSemaMeta);
  lua_setmetatable(L, -2);
  return 1;
}

// sema:post(n?) -> true
int semaPost(lua_State* L) {
  Semaphore* sem = checkSema(L);
  lua_Number n = luaL_optnumber(L, 2, 1);
  if (n < 0) return luaL_error(L, "no negative number");
  sem->resources += static_cast<lua_Integer>(n);
  sem->grant();
  lua_pushboolean(L, 1);
  return 1;
}

// sema:wait(timeout) -> true | nil, "timeout"
int semaWait(lua_State* L) {
  Semaphore* sem = checkSema(L);
  if (lua_type(L, 2) != LUA_TNUMBER || lua_tonumber(L, 2) < 0) {
    return luaL_error(L, "bad 'timeout' argument: %s", luaL_typename(L, 2));
  }
  lua_Number timeout = lua_tonumber(L, 2);
  if (sem->resources > 0 && sem->waiters.empty()) {
    sem->resources--;
    lua_pushboolean(L, 1);
    return 1;
  }
  if (timeout == 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
  }
  LuaTask* task = requireYieldable(L);
  lua_settop(L, 0);
  auto ms = static_cast<uint64_t>(std::llround(timeout * 1000));
  task->suspend(std::make_unique<SemWait>(task, task->running(), sem, ms));
  return lua_yield(L, 0);
}

// sema:count(): resources available, or minus the number of waiters.
int semaCount(lua_State* L) {
  Semaphore* sem = checkSema(L);
  lua_Integer waiting = static_cast<lua_Integer>(sem->waiters.size());
  lua_pushinteger(L, sem->resources > 0 ? sem->resources : -waiting);
  return 1;
}

int semaGc(lua_State* L) {
  auto* sem = static_cast<Semaphore*>(lua_touserdata(L, 1));
  sem->~Semaphore();  // a waiter keeps its semaphore alive, so none is left
  return 0;
}

// package.preload["ngx.semaphore"]
int loadSemaphore(lua_State* L) {
  lua_createtable(L, 0, 2);
  setFn(L, "new", semaNew);
  lua_pushliteral(L, "0.1.28");
  lua_setfield(L, -2, "version");
  return 1;
}

}  // namespace

// Stack: [] -> []
void openNgxSemaphore(lua_State* L) {
  luaL_newmetatable(L, kSemaMeta);
  lua_createtable(L, 0, 3);
  setFn(L, "post", semaPost);
  setFn(L, "wait", semaWait);
  setFn(L, "count", semaCount);
  lua_setfield(L, -2, "__index");
  setFn(L, "__gc", semaGc);
  lua_pop(L, 1);
  setPreload(L, "ngx.semaphore", loadSemaphore);
}

}  // namespace tidegate::lua
