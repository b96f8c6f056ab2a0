#include "lua/task.h"

#include <algorithm>

#include "core/log.h"

namespace tidegate::lua {

void raiseDisabled(lua_State* L, Phase phase) {
  if (phase == Phase::kTimer) luaL_error(L, "API disabled in the context of ngx.timer");
  if (phase == Phase::kSslCert) luaL_error(L, "API disabled in the context of ssl_certificate_by_lua*");
  luaL_error(L, "API disabled in the context of %s_by_lua*", phaseName(phase));
  __builtin_unreachable();
}

LuaTask::~LuaTask() {
  killAll();
  sweep();
  if (ctx_ref_ != LUA_NOREF) luaL_unref(vm_.state(), LUA_REGISTRYINDEX, ctx_ref_);
  if (env_ref_ != LUA_NOREF) luaL_unref(vm_.state(), LUA_REGISTRYINDEX, env_ref_);
  for (EndHook hook : end_hooks_) hook(*this);
  cos_.clear();
  auto* spare = spareCos();
  if (spare && cos_.capacity() > spare->capacity()) cos_.swap(*spare);
}

std::vector<std::unique_ptr<Co>>* LuaTask::spareCos() {
  return core::threadLocalUntilExit<std::vector<std::unique_ptr<Co>>>();
}

namespace {

const char kEnvMetaKey = 0;   // registry: the metatable of request environments
const char kWarnedKey = 0;    // registry: names of globals already warned about

// __newindex of a request environment: the value stays in the request's
// table; the first write of each name in a worker is logged, as OpenResty
// warns about globals written at request time.
int writeGlobal(lua_State* L) {
  // Stack: [env, key, value]
  lua_pushlightuserdata(L, const_cast<char*>(&kWarnedKey));
  lua_rawget(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  if (lua_isnil(L, -1)) {
    lua_pushvalue(L, 2);
    lua_pushboolean(L, 1);
    lua_rawset(L, -4);
    lua_Debug ar;
    std::string where;
    if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
      where.append(ar.short_src).append(":").append(std::to_string(ar.currentline)).append(": ");
    }
    const char* name = lua_tostring(L, 2);
    TG_LOG(core::LogLevel::kWarn,
           "[lua] %swriting a global Lua variable ('%s') which may lead to race conditions between concurrent "
           "requests, so prefer the use of 'local' variables; it stays in this request",
           where.c_str(), name ? name : luaL_typename(L, 2));
  }
  lua_settop(L, 3);
  lua_rawset(L, 1);
  return 0;
}

}  // namespace

void LuaTask::pushNewEnv(lua_State* L) {
  lua_newtable(L);
  lua_pushlightuserdata(L, const_cast<char*>(&kEnvMetaKey));
  lua_rawget(L, LUA_REGISTRYINDEX);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, LUA_GLOBALSINDEX);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, writeGlobal);
    lua_setfield(L, -2, "__newindex");
    lua_pushlightuserdata(L, const_cast<char*>(&kEnvMetaKey));
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
    lua_pushlightuserdata(L, const_cast<char*>(&kWarnedKey));
    lua_newtable(L);
    lua_rawset(L, LUA_REGISTRYINDEX);
  }
  lua_setmetatable(L, -2);
}

void LuaTask::pushEnv(lua_State* L) {
  if (inherited_) {
    inherited_->pushEnv(L);
    return;
  }
  if (env_ref_ != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, env_ref_);
    return;
  }
  pushNewEnv(L);
  lua_pushvalue(L, -1);
  env_ref_ = luaL_ref(L, LUA_REGISTRYINDEX);
}

void LuaTask::keepInherited() {
  LuaTask* from = inherited_;
  if (!from) return;
  inherited_ = nullptr;
  lua_State* L = vm_.state();
  from->pushCtx(L);
  ctx_ref_ = luaL_ref(L, LUA_REGISTRYINDEX);
  // No table of globals yet: the handlers so far wrote none (Vm::push).
  if (from->hasEnv()) {
    from->pushEnv(L);
    env_ref_ = luaL_ref(L, LUA_REGISTRYINDEX);
  }
}

void LuaTask::pushCtx(lua_State* L) {
  if (inherited_) {
    inherited_->pushCtx(L);
    return;
  }
  if (ctx_ref_ == LUA_NOREF) {
    lua_newtable(L);
    lua_pushvalue(L, -1);
    ctx_ref_ = luaL_ref(L, LUA_REGISTRYINDEX);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, ctx_ref_);
}

void LuaTask::setCtx(lua_State* L) {
  if (inherited_) {
    inherited_->setCtx(L);
    return;
  }
  if (ctx_ref_ != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, ctx_ref_);
  ctx_ref_ = luaL_ref(L, LUA_REGISTRYINDEX);
}

Co* LuaTask::find(lua_State* L) const {
  for (const auto& c : cos_) {
    if (c->L == L && c->state != Co::State::kDead) return c.get();
  }
  return nullptr;
}

Co* LuaTask::adopt(lua_State* L, Co::Kind kind) {
  auto c = std::make_unique<Co>();
  c->L = lua_tothread(L, -1);
  c->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  c->kind = kind;
  cos_.push_back(std::move(c));
  return cos_.back().get();
}

void LuaTask::suspend(std::unique_ptr<Wait> wait) {
  running_->wait = std::move(wait);
  op_ = Op::kWait;
}

void LuaTask::requestResume(Co* co, int nargs) {
  op_ = Op::kResume;
  op_target_ = co;
  op_nargs_ = nargs;
}

void LuaTask::requestSpawn(Co* co, int nargs) {
  op_ = Op::kSpawn;
  op_target_ = co;
  op_nargs_ = nargs;
}

namespace {
const char kKilledKey = 0;  // registry: weak set of coroutines ended mid-flight
}

// A coroutine ended while suspended still looks suspended to LuaJIT; this
// set makes coroutine.status() say "dead" and resume() refuse it.
void LuaTask::markKilled(lua_State* co) {
  lua_State* L = vm_.state();
  lua_pushlightuserdata(L, const_cast<char*>(&kKilledKey));
  lua_rawget(L, LUA_REGISTRYINDEX);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushlightuserdata(L, const_cast<char*>(&kKilledKey));
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
  }
  lua_pushthread(co);
  lua_xmove(co, L, 1);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

bool LuaTask::wasKilled(lua_State* L, lua_State* co) {
  lua_pushlightuserdata(L, const_cast<char*>(&kKilledKey));
  lua_rawget(L, LUA_REGISTRYINDEX);
  bool killed = false;
  if (!lua_isnil(L, -1)) {
    lua_pushthread(co);
    lua_xmove(co, L, 1);
    lua_rawget(L, -2);
    killed = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return killed;
}

// Drops the registry anchor of a coroutine that will not run again.
void LuaTask::release(Co* co) {
  co->wait.reset();
  co->waiting_for.clear();
  if (co->kind == Co::Kind::kThread && co->state != Co::State::kZombie && co->state != Co::State::kDead) {
    live_threads_--;
  }
  if (co->state != Co::State::kDead) dead_++;
  co->state = Co::State::kDead;
  if (lua_status(co->L) == LUA_YIELD) markKilled(co->L);
  for (auto& c : cos_) {
    if (c->parent == co) c->parent = nullptr;  // its children outlive it
  }
  if (co->ref != LUA_NOREF) {
    // An entry coroutine that returned goes back to the pool.
    if (co->kind == Co::Kind::kEntry && lua_status(co->L) == 0) vm_.recycle(co->L, co->ref);
    else luaL_unref(vm_.state(), LUA_REGISTRYINDEX, co->ref);
  }
  co->ref = LUA_NOREF;
}

// Frees the records of dead coroutines (never while run() may hold one).
void LuaTask::sweep() {
  if (in_run_ || dead_ == 0) return;
  cos_.erase(std::remove_if(cos_.begin(), cos_.end(), [](const auto& c) { return c->state == Co::State::kDead; }),
             cos_.end());
  dead_ = 0;
}

void LuaTask::killAll() {
  for (auto& c : cos_) {
    if (c->state != Co::State::kDead) release(c.get());
  }
  live_threads_ = 0;
}

void LuaTask::kill(Co* co) {
  // The coroutines it resumed (directly or not) go with it.
  for (auto& c : cos_) {
    if (c.get() == co || c->state == Co::State::kDead || c->kind != Co::Kind::kUser) continue;
    for (Co* p = c->parent; p; p = p->kind == Co::Kind::kUser ? p->parent : nullptr) {
      if (p == co) {
        release(c.get());
        break;
      }
    }
  }
  release(co);
}

namespace {

// `msg` (null: none) and co's traceback, as the error log shows them; built
// on L's stack, which is left as it was.
std::string tracebackOf(lua_State* L, lua_State* co, const char* msg) {
  luaL_traceback(L, co, msg, 0);
  std::string out = lua_tostring(L, -1) ? lua_tostring(L, -1) : "";
  lua_pop(L, 1);
  return out;
}

// What coroutine.resume (or ngx.thread.wait) returns, moved to `to`: true
// and every value on `from`'s stack, or false and the error on its top.
// Returns the number of values pushed.
int handBack(lua_State* from, lua_State* to, bool ok) {
  int n = ok ? lua_gettop(from) : 1;
  lua_checkstack(to, n + 1);
  lua_pushboolean(to, ok);
  lua_xmove(from, to, n);
  return n + 1;
}

}  // namespace

int LuaTask::reap(Co* thread, lua_State* to) {
  int n = handBack(thread->L, to, !thread->failed);
  release(thread);
  return n;
}

void LuaTask::startEntry(int nargs) {
  lua_State* L = vm_.state();
  killAll();
  sweep();
  entry_done_ = false;
  exit_requested_ = false;
  // Stack: [fn, args...] -> []; the coroutine (pooled) is anchored while it lives.
  auto c = std::make_unique<Co>();
  c->kind = Co::Kind::kEntry;
  c->L = vm_.newThread(L, &c->ref);
  lua_pop(L, 1);
  lua_xmove(L, c->L, 1 + nargs);
  cos_.push_back(std::move(c));
  entry_ = cos_.back().get();
  run(entry_, nargs);
}

void LuaTask::spawnFromLoop() {
  lua_State* L = vm_.state();
  lua_State* co = lua_newthread(L);
  lua_insert(L, -2);
  lua_xmove(L, co, 1);
  Co* c = adopt(L, Co::Kind::kThread);
  c->parent = entry_ && entry_->state != Co::State::kDead ? entry_ : nullptr;
  live_threads_++;
  run(c, 0);
}

void LuaTask::wake(Co* co, int nargs) {
  co->wait.reset();  // the event came: nothing left to cancel
  run(co, nargs);
}

// Runs coroutines until every one of them waits for an event or the task
// ends. Each step resumes one coroutine and looks at why it stopped.
void LuaTask::run(Co* co, int nargs) {
  in_run_ = true;
  while (co) {
    running_ = co;
    co->state = Co::State::kRunning;
    op_ = Op::kNone;
    vm_.setCurrent(this, phase());
    if (guard_) guard_->enter(co->L);
    int rc = lua_resume(co->L, nargs);
    if (guard_) guard_->leave(co->L);
    vm_.setCurrent(nullptr, phase());
    running_ = nullptr;
    nargs = 0;
    if (guard_ && guard_->tripped()) {
      std::string trace = tracebackOf(vm_.state(), co->L, nullptr);
      killAll();
      entry_ = nullptr;
      entry_failed_ = false;
      in_run_ = false;
      onBudgetKill(std::move(trace));  // may destroy this task
      return;
    }
    if (exit_requested_) {
      killAll();
      in_run_ = false;
      onExit();  // may destroy this task
      return;
    }
    if (rc == LUA_YIELD) {
      Op op = op_;
      op_ = Op::kNone;
      switch (op) {
        case Op::kResume: {
          Co* target = op_target_;
          target->parent = co;
          co->state = Co::State::kNormal;
          nargs = op_nargs_;
          co = target;
          continue;
        }
        case Op::kSpawn: {
          Co* child = op_target_;
          child->parent = co;
          child->spawning = true;
          live_threads_++;
          co->state = Co::State::kNormal;
          nargs = op_nargs_;
          co = child;
          continue;
        }
        case Op::kYield:
          if (co->kind == Co::Kind::kUser && co->parent) {
            // Back to the resumer: coroutine.resume returns true, values...
            Co* parent = co->parent;
            nargs = handBack(co->L, parent->L, true);
            co->state = Co::State::kSuspended;
            co->parent = nullptr;
            co = parent;
            continue;
          }
          // coroutine.yield() in an entry coroutine or a light thread: it
          // runs again on the next loop turn (OpenResty's behaviour).
          lua_settop(co->L, 0);
          co->wait = sleepWait(this, co, 0);
          co = afterSuspend(co, &nargs);
          continue;
        case Op::kWait:
        case Op::kNone:
          // An API waits for an event, or a bare lua_yield from C: the
          // latter is treated as a wait that nothing ends until teardown.
          co = afterSuspend(co, &nargs);
          continue;
      }
    }
    co = afterEnd(co, rc != 0, &nargs);
    if (entry_failed_) {
      entry_failed_ = false;
      killAll();
      entry_ = nullptr;
      in_run_ = false;
      onError(std::move(entry_error_));  // may destroy this task
      return;
    }
  }
  in_run_ = false;
  if (entry_done_ && live_threads_ == 0) {
    entry_ = nullptr;
    sweep();
    onDone();  // may destroy this task
    return;
  }
  sweep();
}

// `co` waits for an event. If that leaves a thread's spawn() pending, its
// parent continues now with the thread object.
Co* LuaTask::afterSuspend(Co* co, int* nargs) {
  co->state = Co::State::kWaiting;
  Co* c = co;
  while (c->kind == Co::Kind::kUser && c->parent) c = c->parent;
  if (c->kind == Co::Kind::kThread && c->spawning) return returnFromSpawn(c, nargs);
  return nullptr;
}

Co* LuaTask::returnFromSpawn(Co* thread, int* nargs) {
  thread->spawning = false;
  Co* parent = thread->parent;
  lua_rawgeti(parent->L, LUA_REGISTRYINDEX, thread->ref);
  *nargs = 1;
  return parent;
}

// `co` returned (or raised). Decides who runs next.
Co* LuaTask::afterEnd(Co* co, bool error, int* nargs) {
  lua_State* L = vm_.state();
  switch (co->kind) {
    case Co::Kind::kUser: {
      // coroutine.resume returns true, results... or false, err.
      Co* parent = co->parent;
      *nargs = handBack(co->L, parent->L, !error);
      release(co);
      return parent;
    }
    case Co::Kind::kEntry:
      if (error) {
        const char* msg = lua_tostring(co->L, -1);
        entry_error_ = tracebackOf(L, co->L, msg ? msg : "unknown error");
        entry_failed_ = true;
        return nullptr;
      }
      entry_done_ = true;
      release(co);
      return nullptr;
    case Co::Kind::kThread: {
      if (error) {
        const char* msg = lua_tostring(co->L, -1);
        TG_LOG(core::LogLevel::kError, "lua user thread aborted: runtime error: %s",
               tracebackOf(L, co->L, msg ? msg : "unknown error").c_str());
        lua_State* t = co->L;
        lua_insert(t, 1);
        lua_settop(t, 1);  // keep only the message, for wait()
      }
      co->failed = error;
      live_threads_--;
      co->state = Co::State::kZombie;
      Co* parent = co->parent;
      if (parent && parent->state == Co::State::kWaiting &&
          std::find(parent->waiting_for.begin(), parent->waiting_for.end(), co) != parent->waiting_for.end()) {
        parent->waiting_for.clear();
        *nargs = reap(co, parent->L);
        return parent;
      }
      if (co->spawning) return returnFromSpawn(co, nargs);
      return nullptr;
    }
  }
  return nullptr;
}

namespace {

class SleepWait : public Wait {
 public:
  SleepWait(LuaTask* task, Co* co, uint64_t ms) : task_(task), co_(co) {
    timer_ = new uv_timer_t;
    uv_timer_init(task->loop(), timer_);
    timer_->data = this;
    uv_timer_start(timer_, onTimer, ms, 0);
  }
  ~SleepWait() override {
    uv_timer_stop(timer_);
    uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  }

 private:
  static void onTimer(uv_timer_t* t) noexcept {
    auto* self = static_cast<SleepWait*>(t->data);
    LuaTask* task = self->task_;
    Co* co = self->co_;
    task->wake(co, 0);  // destroys self
  }
  LuaTask* task_;
  Co* co_;
  uv_timer_t* timer_;
};

}  // namespace

std::unique_ptr<Wait> sleepWait(LuaTask* task, Co* co, uint64_t ms) {
  return std::make_unique<SleepWait>(task, co, ms);
}

}  // namespace tidegate::lua
