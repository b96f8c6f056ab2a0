// One LuaJIT VM. The master creates it from the conf and runs init_by_lua*
// in it before forking, so every worker starts from that state (as in
// OpenResty); a reload builds a new one. Code from the conf is compiled
// once and kept in the registry.
#pragma once

#include <lua.hpp>

#include <array>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "conf/config.h"
#include "lua/pushed_modules.h"
#include "lua/sandbox/functions.h"

namespace tidegate::lua {

// OpenResty's phase names, as ngx.get_phase() returns them.
enum class Phase {
  kInit,
  kInitWorker,
  kSet,
  kRewrite,
  kAccess,
  kContent,
  kHeaderFilter,
  kBodyFilter,
  kLog,
  kTimer,
  kExitWorker,
  kBalancer,
  kSslCert,  // ssl_certificate_by_lua* ("ssl_cert")
};
// Phases whose code runs in a coroutine that may wait for events.
inline bool yieldablePhase(Phase p) {
  return p == Phase::kRewrite || p == Phase::kAccess || p == Phase::kContent || p == Phase::kTimer ||
         p == Phase::kSslCert;
}

class LuaTask;  // lua/task.h
class Timers;   // lua/timer.h
const char* phaseName(Phase p);

class Vm {
 public:
  // A VM with the standard libraries, package paths from the conf and the
  // ngx API. nullptr with *err on failure.
  static std::shared_ptr<Vm> create(conf::ConfigPtr cfg, std::string* err);
  ~Vm();
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;

  lua_State* state() const { return L_; }
  const conf::Config& config() const { return *cfg_; }
  Phase phase() const { return phase_; }
  // The task (request or timer) whose coroutine is running now.
  LuaTask* current() const { return current_; }
  void setCurrent(LuaTask* ctx, Phase phase) {
    current_ = ctx;
    phase_ = phase;
  }
  // The worker's slot (0-based); -1 in the master.
  int workerId() const { return worker_id_; }
  void setWorkerId(int id) {
    worker_id_ = id;
    active_ = this;
  }
  // The VM of this process (the last created in the master; the worker's
  // own in a worker), for the FFI entry points, which get no lua_State.
  static Vm* active() { return active_; }
  // The worker's ngx.timer.* state (null in the master).
  Timers* timers() const { return timers_; }
  void setTimers(Timers* t) { timers_ = t; }
  // ngx.worker.exiting(): set when the worker starts to stop.
  bool exiting() const { return exiting_; }
  void setExiting() { exiting_ = true; }

  // Compiles `code` (cached by chunk name) and runs it in protected mode in
  // `phase`. False with the error and its traceback in *err.
  bool run(const conf::LuaCode& code, Phase phase, std::string* err);
  // Pushes a request-phase handler for `code`: a fresh closure of the code
  // (compiled once) whose globals are `task`'s environment, so globals it
  // writes stay in that request (with a warning) while init-time globals
  // remain readable. False with *err (and nothing pushed) on a syntax error.
  bool push(const conf::LuaCode& code, LuaTask* task, std::string* err);

  // Modules pushed through the admin API (lua/pushed_modules.h).
  PushedModules& modules() { return *modules_; }
  // Picks up pushed modules that changed; called before every request
  // phase handler and timer (one integer compare when nothing did).
  void refreshModules() { modules_->refresh(L_); }

  // Sandboxed functions (content_by_function; lua/sandbox/functions.h).
  Functions& functions() { return *functions_; }

  // Entry coroutines are recycled: a pooled thread and its registry ref,
  // pushed onto L; recycle() takes back one that returned normally.
  lua_State* newThread(lua_State* L, int* ref);
  void recycle(lua_State* co, int ref);

  // True if neither the function at `idx` nor any function defined in it
  // writes a global or names getfenv, setfenv or debug (lua/tidegate/
  // purity.lua): such code cannot tell a table of globals of its own from one
  // shared by all requests. Stack: unchanged.
  bool keepsGlobals(int idx);

  // The variable ngx.var.NAME reads (conf::lookupVariable with this conf's
  // `set` variables), or null if there is none. Remembered in a small table
  // by the name's address (Lua strings are interned, so a handler's literal
  // comes back at the same one) and checked by content.
  const conf::VarRef* variable(std::string_view name);

  // The Vm a lua_State belongs to (set in the registry at creation).
  static Vm* from(lua_State* L) {
    void* ud = nullptr;
    lua_getallocf(L, &ud);
    if (ud && ud == from_ud_) return from_vm_;
    return fromRegistry(L, ud);
  }
  // LuaJIT's own table.concat, as it was when the VM was made (users may
  // replace the global). Stack: [] -> [fn].
  void pushTableConcat(lua_State* L) const { lua_rawgeti(L, LUA_REGISTRYINDEX, table_concat_); }
  // lua_pcall message handler: a string error gets a traceback; any other
  // value is kept as it is (OpenResty's handler does the same).
  // Stack: [msg] -> [msg .. "\nstack traceback: ..."] or [msg].
  static int traceback(lua_State* L);

 private:
  Vm() = default;
  bool load(const conf::LuaCode& code, bool wrap, std::string* err);  // pushes the function
  // A request-phase handler's code, compiled once (lua_code_cache on).
  struct Handler {
    int maker = LUA_NOREF;   // the function that returns a new closure of the code
    int shared = LUA_REFNIL;  // a closure on the shared globals, if the code may have one
  };
  Handler* handler(const conf::LuaCode& code, std::string* err);

  lua_State* L_ = nullptr;
  conf::ConfigPtr cfg_;
  Phase phase_ = Phase::kInit;
  int worker_id_ = -1;
  bool exiting_ = false;
  LuaTask* current_ = nullptr;
  Timers* timers_ = nullptr;
  std::unique_ptr<PushedModules> modules_;
  std::unique_ptr<Functions> functions_;
  struct VarSlot {
    const char* addr = nullptr;  // null: empty
    std::string name;
    conf::VarRef ref;
  };
  std::array<VarSlot, 64> var_slots_;
  std::map<std::string, int> chunks_;     // chunk name -> registry ref
  std::map<std::string, Handler> handlers_;  // by chunk name
  // handler()'s last answer and the code it was for (compared by address
  // and name: a file's code resolved per request is a temporary).
  const conf::LuaCode* last_code_ = nullptr;
  std::pair<const std::string, Handler>* last_ = nullptr;
  int shared_env_ = LUA_NOREF;  // the globals of handlers that write none
  int keeps_globals_ = LUA_NOREF;  // purity.lua's check
  int table_concat_ = LUA_NOREF;
  std::vector<std::pair<lua_State*, int>> thread_pool_;
  static inline Vm* active_ = nullptr;
  // from()'s last answer, keyed by the state's allocator data (one per
  // lua_State family): most API calls ask it, and the registry lookup it
  // saves cost more than the call itself.
  static Vm* fromRegistry(lua_State* L, void* ud);
  static inline thread_local void* from_ud_ = nullptr;
  static inline thread_local Vm* from_vm_ = nullptr;
};

// The code as the body of a function, so that a request can get a closure
// of its own (with its own globals; Vm::push). The wrapper shares the first line, so
// line numbers do not move. A file's "#!" line is blanked, as luaL_loadfile
// skips it. `vararg`: the function takes "..." (as a chunk does); LuaJIT
// starts no trace in such a function, so request handlers, which get no
// arguments, are wrapped without it unless their code names "...".
std::string wrapHandler(std::string_view code, bool vararg = true);

// Registers the `ngx` table (src/lua/api/*.cc). Stack: unchanged.
void openNgx(lua_State* L);
void openNgxRequest(lua_State* L);  // api/ngx_request.cc; expects ngx on the stack top
void openNgxString(lua_State* L);   // api/ngx_string.cc; same
void openNgxTime(lua_State* L);     // api/ngx_time.cc; same
// ngx.shared.NAME for each lua_shared_dict (api/ngx_shared.cc). Stack: [ngx] -> [ngx].
void openNgxShared(lua_State* L, const conf::LuaConf& lua);
void openNgxThread(lua_State* L);   // api/ngx_thread.cc; same (and replaces coroutine.*)
void openNgxSocket(lua_State* L);     // api/ngx_socket.cc; ngx.socket.* (expects ngx on the top)
void openNgxSocketUdp(lua_State* L);  // api/ngx_socket_udp.cc; ngx.socket.udp (expects ngx.socket on the top)
// Closes the idle connections of the worker's cosocket pool (worker exit).
void closeSocketPool();
void openNgxSemaphore(lua_State* L);  // api/ngx_semaphore.cc; preloads "ngx.semaphore"
void openNgxRe(lua_State* L);       // api/ngx_re.cc; same (needs the Vm in the registry)
void openNgxSsl(lua_State* L);         // api/ngx_ssl.cc; preloads "ngx.ssl"
void openTidegateUpstream(lua_State* L);  // api/tidegate_upstream.cc; preloads "tidegate.upstream"

}  // namespace tidegate::lua
