// What the TCP (api/ngx_socket.cc) and UDP (api/ngx_socket_udp.cc)
// cosockets share: the object check, timeouts from the conf, failure
// results and the choice among a host name's addresses.
#pragma once

#include <lua.hpp>
#include <netdb.h>
#include <sys/socket.h>
#include <uv.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "conf/config.h"
#include "lua/api/common.h"
#include "lua/task.h"

namespace tidegate::lua {

// The cosocket userdata of type `meta` at index 1, only for the task that
// made it (`S::task_id`): an object kept from an ended request raises
// OpenResty's "bad request". A userdata of S's size whose `S::meta` is
// `meta` (set where it is made, beside its metatable) is one: that check
// costs a fraction of luaL_checkudata's, which interns the type name on
// every call, and only our code makes userdata with that pointer in it.
// Anything else goes to luaL_checkudata, for its error.
template <class S>
S* checkTaskSocket(lua_State* L, const char* meta) {
  S* sock = nullptr;
  if (lua_type(L, 1) == LUA_TUSERDATA && lua_objlen(L, 1) == sizeof(S)) {
    sock = static_cast<S*>(lua_touserdata(L, 1));
    if (sock->meta != meta) sock = nullptr;
  }
  if (!sock) sock = static_cast<S*>(luaL_checkudata(L, 1, meta));
  if (requireTask(L)->id() != sock->task_id) luaL_error(L, "bad request");
  return sock;
}

// Yields from a method whose wait was just suspended, leaving the socket
// (index 1) as the one value on the coroutine's stack: it is kept from the
// GC while the coroutine waits, costs no registry reference, and stays at
// index 1 below the results the event pushes (lua_resume returns only
// those).
inline int yieldWithSocket(lua_State* L) {
  lua_pushvalue(L, 1);
  return lua_yield(L, 1);
}

// Closes `handles`, which `owner` holds (their data points to it), once
// (`owner->closing` guards a second call). `owner` is deleted in the close
// callback that brings `owner->open_handles` to 0: libuv handles are freed
// only after their close callbacks.
template <class Owner>
void closeOwnedHandles(Owner* owner, std::initializer_list<uv_handle_t*> handles) {
  if (owner->closing) return;
  owner->closing = true;
  for (uv_handle_t* h : handles) {
    uv_close(h, [](uv_handle_t* closed) noexcept {
      auto* o = static_cast<Owner*>(closed->data);
      if (--o->open_handles == 0) delete o;
    });
  }
}

// A host name lookup in flight for a waiting call `W`. It outlives a
// cancelled wait (which clears `waiter`): libuv always calls back, with
// UV_ECANCELED after uv_cancel, and the callback frees it.
template <class W>
struct HostLookup {
  uv_getaddrinfo_t req;
  W* waiter = nullptr;
  std::string host;
  int port = 0;
};

// The running request or timer where cosockets (TCP and UDP) may be used:
// OpenResty's yieldable phases, log_by_lua* and balancer_by_lua*; else
// OpenResty's "API disabled in the context of ..." error.
inline LuaTask* requireCosocketTask(lua_State* L) { return requireYieldable(L, true); }

// The http settings in force for `task` (its location's, or the http
// level's for a timer): lua_socket_*_timeout and friends.
const conf::HttpSettings& socketSettings(LuaTask* task);

// A timeout argument in ms at `idx`; `current` when absent. Raises on a
// negative value.
uint64_t checkTimeoutMs(lua_State* L, int idx, uint64_t current);

// Stack: [] -> [nil, err]; returns 2.
int pushSocketFailure(lua_State* L, const char* err);

// lua_socket_log_errors on (the default): `what` goes to the error log with
// the request's description (or ", context: ngx.timer"), as OpenResty logs
// a cosocket's failures ("lua tcp socket read timed out", "connect() failed
// (111: Connection refused)"). Rate-limited.
void logSocketError(LuaTask* task, const std::string& what);
// nginx's "(111: Connection refused)" text for a libuv error.
std::string errnoText(int uv_status);

// The address to use among getaddrinfo's answers, with `port` set: the
// first IPv4 one, as OpenResty's resolver asks for A records only (unless
// ipv6=on); else the first. `res` must not be null.
sockaddr_storage pickAddress(const addrinfo* res, int port);

// OpenResty's text for a failed lookup: "HOST could not be resolved (...)".
std::string unresolvedMessage(const std::string& host, int uv_status);

}  // namespace tidegate::lua
