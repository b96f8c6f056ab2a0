// coroutine.* as lua-nginx-module replaces them, and ngx.thread.*. Inside a
// request or timer, resume/yield/spawn hand over to the task's scheduler
// (lua/task.h), so an API that waits inside a user coroutine suspends just
// that coroutine. Elsewhere (init, log, set phases) the standard functions
// run unchanged.
#include <cstring>

#include "lua/api/common.h"
#include "lua/task.h"
#include "lua/vm.h"

namespace tidegate::lua {
namespace {

// Upvalue 1 of each replacement: the standard function it stands in for.
int callOriginal(lua_State* L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

// The scheduling task if `L` is the coroutine it is running now.
LuaTask* scheduling(lua_State* L) {
  LuaTask* task = LuaTask::current(L);
  if (!task || !task->running() || task->running()->L != L) return nullptr;
  return task;
}

// A coroutine that has run to its end (or never had a function).
bool finished(lua_State* co) { return lua_status(co) == 0 && lua_gettop(co) == 0; }

int coResume(lua_State* L) {
  LuaTask* task = scheduling(L);
  if (!task) return callOriginal(L);
  lua_State* co = lua_tothread(L, 1);
  luaL_argcheck(L, co, 1, "coroutine expected");
  Co* c = task->find(co);
  if (!c) {
    if (finished(co) || LuaTask::wasKilled(L, co)) {
      lua_pushboolean(L, 0);
      lua_pushliteral(L, "cannot resume dead coroutine");
      return 2;
    }
    lua_pushvalue(L, 1);
    c = task->adopt(L, Co::Kind::kUser);
  }
  if (c->kind != Co::Kind::kUser || c->state != Co::State::kSuspended || co == L) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "cannot resume non-suspended coroutine");
    return 2;
  }
  int n = lua_gettop(L) - 1;
  lua_xmove(L, co, n);
  task->requestResume(c, n);
  return lua_yield(L, 0);
}

int coYield(lua_State* L) {
  LuaTask* task = scheduling(L);
  if (!task) return lua_yield(L, lua_gettop(L));  // what the standard yield does
  Co* c = task->running();
  task->requestYield();
  if (c->kind == Co::Kind::kUser && c->parent) return lua_yield(L, lua_gettop(L));
  return lua_yield(L, 0);
}

int coStatus(lua_State* L) {
  LuaTask* task = LuaTask::current(L);
  lua_State* co = lua_tothread(L, 1);
  Co* c = task && co ? task->find(co) : nullptr;
  if (!c) {
    if (co && LuaTask::wasKilled(L, co)) {
      lua_pushliteral(L, "dead");
      return 1;
    }
    return callOriginal(L);
  }
  switch (c->state) {
    case Co::State::kSuspended: lua_pushliteral(L, "suspended"); break;
    case Co::State::kNormal: lua_pushliteral(L, "normal"); break;
    case Co::State::kZombie: lua_pushliteral(L, "zombie"); break;
    case Co::State::kDead: lua_pushliteral(L, "dead"); break;
    default: lua_pushliteral(L, "running"); break;  // running, or waiting for I/O
  }
  return 1;
}

// ngx.thread.spawn(func, ...): runs func until it ends or waits, then
// returns the thread (a coroutine object).
int threadSpawn(lua_State* L) {
  LuaTask* task = requireYieldable(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  int n = lua_gettop(L);
  lua_State* co = lua_newthread(L);  // Stack: [f, args..., co]
  lua_insert(L, 1);                  // [co, f, args...]
  lua_xmove(L, co, n);               // [co]
  Co* c = task->adopt(L, Co::Kind::kThread);
  task->requestSpawn(c, n - 1);
  return lua_yield(L, 0);
}

// A thread of this task that `L` may wait for or kill, or null after
// pushing OpenResty's failure values (for kill) or raising (for wait).
Co* childThread(lua_State* L, LuaTask* task, int idx, const char** err) {
  lua_State* co = lua_tothread(L, idx);
  if (!co) luaL_argerror(L, idx, "lua thread expected");
  Co* c = task->find(co);
  if (!c) {
    *err = "already waited or killed";
    return nullptr;
  }
  if (c->kind != Co::Kind::kThread) {
    *err = "not user thread";
    return nullptr;
  }
  return c;
}

// ngx.thread.wait(t1, t2, ...): the results of the first to end, as
// coroutine.resume returns them.
int threadWait(lua_State* L) {
  LuaTask* task = requireYieldable(L);
  Co* self = task->running();
  int n = lua_gettop(L);
  if (n == 0) return luaL_error(L, "at least one coroutine should be specified");
  std::vector<Co*> wanted;
  const char* err = nullptr;
  for (int i = 1; i <= n; i++) {
    Co* c = childThread(L, task, i, &err);
    if (!c) continue;
    if (c->parent != self) return luaL_error(L, "only the parent coroutine can wait on the thread");
    if (c->state == Co::State::kZombie) {
      lua_settop(L, 0);
      return task->reap(c, L);
    }
    wanted.push_back(c);
  }
  if (wanted.empty()) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, err ? err : "already waited or killed");
    return 2;
  }
  lua_settop(L, 0);
  self->waiting_for = std::move(wanted);
  task->suspend(nullptr);
  return lua_yield(L, 0);
}

// ngx.thread.kill(t): true, or nil and why.
int threadKill(lua_State* L) {
  LuaTask* task = requireYieldable(L);
  const char* err = nullptr;
  Co* c = childThread(L, task, 1, &err);
  if (c && c->parent != task->running()) err = "killer not parent";
  else if (c && c->state == Co::State::kZombie) err = "already terminated";
  if (err) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  task->kill(c);
  lua_pushboolean(L, 1);
  return 1;
}

// coroutine.wrap on top of the replaced resume, so it schedules too.
const char kWrap[] = R"(
local resume, create = ...
local function pass(ok, ...)
  if not ok then error((...), 2) end
  return ...
end
return function(f)
  local co = create(f)
  return function(...) return pass(resume(co, ...)) end
end
)";

}  // namespace

// Stack: [ngx] -> [ngx]
void openNgxThread(lua_State* L) {
  lua_createtable(L, 0, 3);
  setFn(L, "spawn", threadSpawn);
  setFn(L, "wait", threadWait);
  setFn(L, "kill", threadKill);
  lua_setfield(L, -2, "thread");

  lua_getglobal(L, "coroutine");
  int co = lua_gettop(L);
  const struct {
    const char* name;
    lua_CFunction fn;
  } kReplaced[] = {{"resume", coResume}, {"status", coStatus}};
  for (const auto& r : kReplaced) {
    lua_getfield(L, co, r.name);
    lua_pushcclosure(L, r.fn, 1);
    lua_setfield(L, co, r.name);
  }
  lua_pushcfunction(L, coYield);
  lua_setfield(L, co, "yield");
  if (luaL_loadbuffer(L, kWrap, sizeof(kWrap) - 1, "=coroutine.wrap") == 0) {
    lua_getfield(L, co, "resume");
    lua_getfield(L, co, "create");
    lua_call(L, 2, 1);
    lua_setfield(L, co, "wrap");
  } else {
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

}  // namespace tidegate::lua
