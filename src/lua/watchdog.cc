#include "lua/watchdog.h"

#include <luajit.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>

namespace tidegate::lua {
namespace {

// What the SIGPROF handler reads: written on the loop thread, read by the
// handler, which runs on that thread (signals caught elsewhere are sent on).
struct State {
  lua_State* L = nullptr;  // the VM being watched (hooks are VM-wide)
  pid_t tid = 0;           // its loop thread
  pthread_t thread{};
  void (*luajit_handler)(int) = nullptr;
  std::atomic<Tripwire*> current{nullptr};  // the innermost armed run
};
State g_state;

uint64_t monotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);  // uv_hrtime's clock; async-signal-safe
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

// Every interval of the process's CPU time. Sets the kill hook of a run
// past its deadline, then lets LuaJIT flag the sample (which makes a
// running trace leave at its next line check).
void onSigprof(int sig) {
  int saved_errno = errno;
  if (static_cast<pid_t>(syscall(SYS_gettid)) != g_state.tid) {
    // A libuv pool thread took it: the VM's thread must see it.
    pthread_kill(g_state.thread, sig);
    errno = saved_errno;
    return;
  }
  Tripwire* t = g_state.current.load(std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_acquire);
  if (t && monotonicNs() >= t->deadline()) t->setKillHook();
  g_state.luajit_handler(sig);
  errno = saved_errno;
}

void onSample(void*, lua_State*, int, int) {}

int profileTaken(lua_State* L) { return luaL_error(L, "jit.profile is in use by lua_budget_timeout"); }

// Every instruction once set: a run past its deadline stops here.
void killHook(lua_State* L, lua_Debug*) {
  Tripwire* t = g_state.current.load(std::memory_order_relaxed);
  if (!t || !t->hookSet()) return;  // left over from a run that ended
  t->trip();
  lua_yield(L, 0);  // never returns: yields, or raises where L cannot yield
}

}  // namespace

std::string budgetExceeded(uint64_t budget_ms) {
  return "lua_budget_timeout " + std::to_string(budget_ms) + "ms exceeded";
}

// --- Tripwire ---

void Tripwire::arm(lua_State* L, uint64_t deadline_ns) {
  if (L_) return;
  L_ = L;
  deadline_ns_ = deadline_ns;
  outer_ = g_state.current.load(std::memory_order_relaxed);
  // An outer run's pending kill waits until this one is done.
  if (outer_ && outer_->hook_set_) outer_->restoreHook();
  saved_hook_ = lua_gethook(L);
  saved_mask_ = lua_gethookmask(L);
  saved_count_ = lua_gethookcount(L);
  hook_set_ = false;
  std::atomic_signal_fence(std::memory_order_release);
  g_state.current.store(this, std::memory_order_relaxed);
  if (uv_hrtime() >= deadline_ns_) setKillHook();
}

void Tripwire::disarm() {
  if (!L_) return;
  g_state.current.store(outer_, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  if (hook_set_) restoreHook();
  if (outer_ && uv_hrtime() >= outer_->deadline_ns_) outer_->setKillHook();
  L_ = nullptr;
  outer_ = nullptr;
}

void Tripwire::setKillHook() {
  hook_set_ = true;
  lua_sethook(L_, killHook, LUA_MASKCOUNT, 1);
}

void Tripwire::restoreHook() {
  hook_set_ = false;
  lua_sethook(L_, saved_hook_, saved_mask_, saved_count_);
}

// --- Watchdog ---

bool Watchdog::start(lua_State* L, int interval_ms, std::string* err) {
  if (g_state.L) return true;
  char mode[32];
  snprintf(mode, sizeof(mode), "li%d", interval_ms);
  luaJIT_profile_start(L, mode, onSample, nullptr);
  struct sigaction cur {};
  sigaction(SIGPROF, nullptr, &cur);
  if ((cur.sa_flags & SA_SIGINFO) || cur.sa_handler == SIG_DFL || cur.sa_handler == SIG_IGN) {
    luaJIT_profile_stop(L);
    *err = "LuaJIT's profiler does not use SIGPROF here: lua_budget_timeout cannot stop compiled code";
    return false;
  }
  g_state.L = L;
  g_state.tid = static_cast<pid_t>(syscall(SYS_gettid));
  g_state.thread = pthread_self();
  g_state.luajit_handler = cur.sa_handler;
  struct sigaction ours = cur;
  ours.sa_handler = onSigprof;
  sigaction(SIGPROF, &ours, nullptr);
  // Someone else's jit.profile.start() would replace the watchdog.
  lua_getglobal(L, "require");
  lua_pushliteral(L, "jit.profile");
  if (lua_pcall(L, 1, 1, 0) == 0 && lua_istable(L, -1)) {
    lua_pushcfunction(L, profileTaken);
    lua_setfield(L, -2, "start");
    lua_pushcfunction(L, profileTaken);
    lua_setfield(L, -2, "stop");
  }
  lua_pop(L, 1);
  return true;
}

void Watchdog::stop() {
  if (!g_state.L) return;
  luaJIT_profile_stop(g_state.L);  // puts back the SIGPROF action from before start()
  g_state.L = nullptr;
  g_state.luajit_handler = nullptr;
  g_state.current.store(nullptr);
}

bool Watchdog::running() { return g_state.L != nullptr; }

int Watchdog::intervalFor(uint64_t min_budget_ms) {
  return static_cast<int>(std::clamp<uint64_t>(min_budget_ms / 10, 1, 10));
}

uint64_t minBudgetTimeout(const conf::Config& cfg) {
  uint64_t m = 0;
  conf::forEachSettings(cfg.http, [&](const conf::HttpSettings& s) {
    uint64_t b = s.lua_budget_timeout_ms.value_or(0);
    if (b != 0 && (m == 0 || b < m)) m = b;
  });
  return m;
}

namespace {

const char kRunnerKey = 0;  // registry: the coroutine budgeted lua_pcall-style runs reuse
bool g_runner_busy = false;

// A coroutine for one run, on L's stack top: the cached one, or a new one
// when a run is already on it (runs nest) or the last one did not return.
lua_State* runnerThread(lua_State* L, bool* cached) {
  *cached = !g_runner_busy;
  if (*cached) {
    lua_pushlightuserdata(L, const_cast<char*>(&kRunnerKey));
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_State* co = lua_tothread(L, -1)) return co;
    lua_pop(L, 1);
  }
  lua_State* co = lua_newthread(L);
  if (*cached) {
    lua_pushlightuserdata(L, const_cast<char*>(&kRunnerKey));
    lua_pushvalue(L, -2);
    lua_rawset(L, LUA_REGISTRYINDEX);
  }
  return co;
}

void dropRunner(lua_State* L) {
  lua_pushlightuserdata(L, const_cast<char*>(&kRunnerKey));
  lua_pushnil(L);
  lua_rawset(L, LUA_REGISTRYINDEX);
}

}  // namespace

// With a budget the code runs as a coroutine, so that a kill yields it out
// (no pcall or xpcall message handler inside sees anything) instead of
// raising an error. The outcome is lua_pcall's, the error with a traceback
// as Vm::traceback makes it.
int pcallWithBudget(lua_State* L, int nargs, int nresults, int errfunc, uint64_t ms) {
  if (ms == 0) return lua_pcall(L, nargs, nresults, errfunc);
  bool cached = false;
  lua_State* co = runnerThread(L, &cached);  // Stack: [fn, args..., co]
  lua_insert(L, -(nargs + 2));               // Stack: [co, fn, args...]
  lua_xmove(L, co, nargs + 1);
  bool was_busy = g_runner_busy;
  g_runner_busy = true;
  Tripwire wire(ms);
  wire.arm(co, uv_hrtime() + ms * 1000000);
  int rc = lua_resume(co, nargs);
  wire.disarm();
  g_runner_busy = was_busy;
  if (rc == 0) {
    int got = lua_gettop(co);
    if (nresults == LUA_MULTRET) nresults = got;
    lua_settop(co, nresults);  // as lua_pcall adjusts
    lua_xmove(co, L, nresults);  // Stack: [co, results...]
    lua_remove(L, -(nresults + 1));
    return 0;
  }
  // It yielded (the kill, or a yield from outside any coroutine) or raised.
  std::string msg;
  if (wire.tripped()) {
    msg = budgetExceeded(ms);
  } else if (rc == LUA_YIELD) {
    msg = "attempt to yield from outside a coroutine";
  } else {
    const char* m = lua_tostring(co, -1);
    msg = m ? m : "unknown error";
  }
  luaL_traceback(L, co, msg.c_str(), 0);  // Stack: [co, message]
  lua_remove(L, -2);
  if (cached) dropRunner(L);  // dead or suspended: a new one next time
  return rc == LUA_YIELD ? LUA_ERRRUN : rc;
}

// --- HandlerBudget ---

HandlerBudget::~HandlerBudget() {
  wire_.disarm();
  if (!timer_) return;
  uv_timer_stop(timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}

void HandlerBudget::begin(uint64_t budget_ms) {
  end();
  wire_.setBudgetMs(budget_ms);
  wire_.reset();
  deadline_ns_ = uv_hrtime() + budget_ms * 1000000;
}

void HandlerBudget::end() {
  if (!timing_) return;
  timing_ = false;
  uv_timer_stop(timer_);
}

// A coroutine that yielded waits (or handed control to another of the
// task's, which is as good): from now on the clock runs on the loop too.
void HandlerBudget::leave(lua_State* co) {
  wire_.disarm();
  if (timing_ || wire_.tripped() || lua_status(co) != LUA_YIELD) return;
  if (!timer_) {
    timer_ = new uv_timer_t;
    uv_timer_init(loop_, timer_);
    timer_->data = this;
  }
  timing_ = true;
  uint64_t now = uv_hrtime();
  uv_timer_start(timer_, onTimer, now < deadline_ns_ ? (deadline_ns_ - now + 999999) / 1000000 : 0, 0);
}

// The loop's clock may lag behind the deadline's: wait for the rest.
void HandlerBudget::onTimer(uv_timer_t* t) noexcept {
  auto* self = static_cast<HandlerBudget*>(t->data);
  uint64_t now = uv_hrtime();
  if (now < self->deadline_ns_) {
    uv_timer_start(t, onTimer, (self->deadline_ns_ - now + 999999) / 1000000, 0);
    return;
  }
  self->timing_ = false;
  self->task_->expireBudget();  // may destroy self
}

}  // namespace tidegate::lua
