// The first part of the `ngx` table: constants, ngx.log/print,
// ngx.get_phase, clock functions, ngx.worker and ngx.config. Names, values,
// argument checks and error texts follow lua-nginx-module.
#include <time.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/log.h"
#include "lua/api/common.h"
#include "lua/timer.h"
#include "lua/vm.h"

namespace tidegate::lua {
namespace {

using core::LogLevel;

// lua-nginx-module's log levels (ngx.STDERR .. ngx.DEBUG = 0 .. 8).
LogLevel toLogLevel(lua_Integer level) {
  static const LogLevel kMap[] = {LogLevel::kEmerg, LogLevel::kEmerg, LogLevel::kAlert,  LogLevel::kCrit,
                                  LogLevel::kError, LogLevel::kWarn,  LogLevel::kNotice, LogLevel::kInfo,
                                  LogLevel::kDebug};
  return kMap[level];
}

// Builds "[lua] source:line: args..." from the arguments at [first, top].
// Raises OpenResty's error for a table or function argument.
std::string logMessage(lua_State* L, int first, const char* fname) {
  std::string msg = "[lua] ";
  lua_Debug ar;
  if (lua_getstack(L, 1, &ar) && lua_getinfo(L, "Sl", &ar)) {
    msg.append(ar.short_src).append(":").append(std::to_string(ar.currentline)).append(": ");
  }
  int top = lua_gettop(L);
  for (int i = first; i <= top; i++) {
    switch (lua_type(L, i)) {
      case LUA_TNUMBER:
      case LUA_TSTRING: {
        size_t len = 0;
        const char* s = lua_tolstring(L, i, &len);
        msg.append(s, len);
        break;
      }
      case LUA_TNIL: msg.append("nil"); break;
      case LUA_TBOOLEAN: msg.append(lua_toboolean(L, i) ? "true" : "false"); break;
      case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, i) == nullptr) {
          msg.append("null");  // ngx.null
          break;
        }
        [[fallthrough]];
      default:
        luaL_error(L, "bad argument #%d to '%s' (string, number, boolean, or nil expected, got %s)", i, fname,
                   luaL_typename(L, i));
    }
  }
  return msg;
}

// ngx.log(level, ...). Stack: unchanged; returns nothing.
int ngxLog(lua_State* L) {
  lua_Integer level = luaL_checkinteger(L, 1);
  if (level < 0 || level > 8) return luaL_error(L, "bad log level: %d", static_cast<int>(level));
  LogLevel lvl = toLogLevel(level);
  if (!core::ErrorLog::enabled(lvl)) return 0;
  std::string msg = logMessage(L, 2, "log");
  core::ErrorLog::write(lvl, 0, "%s", msg.c_str());
  return 0;
}

// print(...): ngx.log(ngx.NOTICE, ...).
int luaPrint(lua_State* L) {
  if (!core::ErrorLog::enabled(LogLevel::kNotice)) return 0;
  std::string msg = logMessage(L, 1, "print");
  core::ErrorLog::write(LogLevel::kNotice, 0, "%s", msg.c_str());
  return 0;
}

int getPhase(lua_State* L) {
  lua_pushstring(L, phaseName(Vm::from(L)->phase()));
  return 1;
}

int ngxNow(lua_State* L) {
  lua_pushnumber(L, core::wallSeconds());  // seconds with millisecond resolution, as OpenResty
  return 1;
}

int ngxTime(lua_State* L) {
  // The clock ngx.now() reads: time() uses a coarser one that may still
  // show the previous second, so math.floor(ngx.now()) could pass ngx.time().
  lua_pushinteger(L, static_cast<lua_Integer>(core::wallSeconds()));
  return 1;
}

int ngxUpdateTime(lua_State*) { return 0; }  // our clock reads are never stale

int workerPid(lua_State* L) {
  lua_pushinteger(L, getpid());
  return 1;
}

int workerId(lua_State* L) {
  int id = Vm::from(L)->workerId();
  if (id < 0) lua_pushnil(L);  // the master (init phase) has no worker id
  else lua_pushinteger(L, id);
  return 1;
}

int workerExiting(lua_State* L) {
  lua_pushboolean(L, Vm::from(L)->exiting());
  return 1;
}

int workerCount(lua_State* L) {
  lua_pushinteger(L, Vm::from(L)->config().worker_processes);
  return 1;
}

// The pids of `parent`'s children that run the same binary as we do, from
// /proc (the master's workers, when called in a worker).
std::vector<long> workerSiblings(pid_t parent) {
  std::vector<long> pids;
  char self_exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
  if (n <= 0) return pids;
  std::string exe(self_exe, static_cast<size_t>(n));
  std::string path = "/proc/" + std::to_string(parent) + "/task/" + std::to_string(parent) + "/children";
  FILE* f = fopen(path.c_str(), "r");
  if (!f) return pids;
  long pid = 0;
  while (fscanf(f, "%ld", &pid) == 1) {
    char buf[PATH_MAX];
    std::string link = "/proc/" + std::to_string(pid) + "/exe";
    ssize_t m = readlink(link.c_str(), buf, sizeof(buf) - 1);
    if (m > 0 && std::string(buf, static_cast<size_t>(m)) == exe) pids.push_back(pid);
  }
  fclose(f);
  return pids;
}

// ngx.worker.pids(): the workers' pids (this process alone without a
// master); not in the master's init phase.
int workerPids(lua_State* L) {
  Vm* vm = Vm::from(L);
  if (vm->workerId() < 0) return luaL_error(L, "API disabled in the context of %s_by_lua*", phaseName(vm->phase()));
  std::vector<long> pids;
  if (vm->config().master_process) pids = workerSiblings(getppid());
  if (pids.empty()) pids.push_back(getpid());
  lua_createtable(L, static_cast<int>(pids.size()), 0);
  for (size_t i = 0; i < pids.size(); i++) {
    lua_pushinteger(L, static_cast<lua_Integer>(pids[i]));
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  return 1;
}

int configPrefix(lua_State* L) {
  lua_pushstring(L, (Vm::from(L)->config().prefix + "/").c_str());
  return 1;
}

int configConfigure(lua_State* L) {
  lua_pushstring(L, "");
  return 1;
}

struct IntConst {
  const char* name;
  lua_Integer value;
};

constexpr IntConst kConstants[] = {
    {"OK", 0}, {"ERROR", -1}, {"AGAIN", -2}, {"DONE", -4}, {"DECLINED", -5},
    {"STDERR", 0}, {"EMERG", 1}, {"ALERT", 2}, {"CRIT", 3}, {"ERR", 4}, {"WARN", 5}, {"NOTICE", 6}, {"INFO", 7},
    {"DEBUG", 8},
    {"HTTP_GET", 2}, {"HTTP_HEAD", 4}, {"HTTP_POST", 8}, {"HTTP_PUT", 16}, {"HTTP_DELETE", 32},
    {"HTTP_MKCOL", 64}, {"HTTP_COPY", 128}, {"HTTP_MOVE", 256}, {"HTTP_OPTIONS", 512}, {"HTTP_PROPFIND", 1024},
    {"HTTP_PROPPATCH", 2048}, {"HTTP_LOCK", 4096}, {"HTTP_UNLOCK", 8192}, {"HTTP_PATCH", 16384},
    {"HTTP_TRACE", 32768},
    {"HTTP_CONTINUE", 100}, {"HTTP_SWITCHING_PROTOCOLS", 101}, {"HTTP_OK", 200}, {"HTTP_CREATED", 201},
    {"HTTP_ACCEPTED", 202}, {"HTTP_NO_CONTENT", 204}, {"HTTP_PARTIAL_CONTENT", 206},
    {"HTTP_SPECIAL_RESPONSE", 300}, {"HTTP_MOVED_PERMANENTLY", 301}, {"HTTP_MOVED_TEMPORARILY", 302},
    {"HTTP_SEE_OTHER", 303}, {"HTTP_NOT_MODIFIED", 304}, {"HTTP_TEMPORARY_REDIRECT", 307},
    {"HTTP_PERMANENT_REDIRECT", 308}, {"HTTP_BAD_REQUEST", 400}, {"HTTP_UNAUTHORIZED", 401},
    {"HTTP_PAYMENT_REQUIRED", 402}, {"HTTP_FORBIDDEN", 403}, {"HTTP_NOT_FOUND", 404},
    {"HTTP_NOT_ALLOWED", 405}, {"HTTP_NOT_ACCEPTABLE", 406}, {"HTTP_REQUEST_TIMEOUT", 408},
    {"HTTP_CONFLICT", 409}, {"HTTP_GONE", 410}, {"HTTP_UPGRADE_REQUIRED", 426},
    {"HTTP_TOO_MANY_REQUESTS", 429}, {"HTTP_CLOSE", 444}, {"HTTP_ILLEGAL", 451},
    {"HTTP_INTERNAL_SERVER_ERROR", 500}, {"HTTP_METHOD_NOT_IMPLEMENTED", 501}, {"HTTP_BAD_GATEWAY", 502},
    {"HTTP_SERVICE_UNAVAILABLE", 503}, {"HTTP_GATEWAY_TIMEOUT", 504}, {"HTTP_VERSION_NOT_SUPPORTED", 505},
    {"HTTP_INSUFFICIENT_STORAGE", 507},
};

// Stack: [t] -> [t], with name = fn set.
}  // namespace

void openNgx(lua_State* L) {
  // Stack: [] -> [] with globals ngx and print set.
  lua_createtable(L, 0, 128);
  for (const auto& c : kConstants) {
    lua_pushinteger(L, c.value);
    lua_setfield(L, -2, c.name);
  }
  lua_pushlightuserdata(L, nullptr);
  lua_setfield(L, -2, "null");
  setFn(L, "log", ngxLog);
  setFn(L, "get_phase", getPhase);
  setFn(L, "now", ngxNow);
  setFn(L, "time", ngxTime);
  setFn(L, "update_time", ngxUpdateTime);

  lua_createtable(L, 0, 4);  // ngx.worker
  setFn(L, "pid", workerPid);
  setFn(L, "id", workerId);
  setFn(L, "count", workerCount);
  setFn(L, "pids", workerPids);
  setFn(L, "exiting", workerExiting);
  lua_setfield(L, -2, "worker");

  lua_createtable(L, 0, 6);  // ngx.config
  lua_pushstring(L, "http");
  lua_setfield(L, -2, "subsystem");
  // A lua-nginx-module version number: 0.10.25, which OpenResty libraries accept.
  lua_pushinteger(L, 10025);
  lua_setfield(L, -2, "ngx_lua_version");
  lua_pushinteger(L, 1022001);  // the nginx version tidegate's conf language follows (1.22.1)
  lua_setfield(L, -2, "nginx_version");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "debug");
  setFn(L, "prefix", configPrefix);
  setFn(L, "nginx_configure", configConfigure);
  lua_setfield(L, -2, "config");

  openNgxRequest(L);
  openNgxString(L);
  openNgxTime(L);
  openNgxThread(L);
  openNgxTimer(L);
  openNgxRe(L);
  openNgxSocket(L);
  lua_setglobal(L, "ngx");
  openNgxSemaphore(L);
  openNgxSsl(L);
  openTidegateUpstream(L);
  lua_pushcfunction(L, luaPrint);
  lua_setglobal(L, "print");
}

}  // namespace tidegate::lua
