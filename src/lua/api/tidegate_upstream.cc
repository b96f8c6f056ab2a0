// require "tidegate.upstream": the shared upstream table
// (shm/upstream_table.h) from Lua, in every phase and in timers, the
// master's init_by_lua* included (the master publishes the conf's upstreams
// before that runs). Every call reads the table afresh: a set_down made by
// one worker is what every process reads next, and every worker's proxy
// acts on it from its next request.
//
// As in lua-upstream-nginx-module, an argument of the wrong type raises a
// Lua error and an unknown upstream or server returns nil and a message.
// The argument checks run before any C++ object is made; afterwards only a
// push can raise (out of memory), which LuaJIT's external unwinder (x64)
// carries through the frame's destructors, as in ngx.shared's get_keys.
#include <strings.h>
#include <unistd.h>

#include <string>
#include <string_view>
#include <vector>

#include "conf/config.h"
#include "lua/api/common.h"
#include "lua/vm.h"
#include "shm/upstream_table.h"
#include "upstream/upstream_json.h"

namespace tidegate::lua {
namespace {

const char kNotFound[] = "upstream not found";

// Stack: [t] -> [t] with t[key] = value.
void setString(lua_State* L, const char* key, std::string_view value) {
  lua_pushlstring(L, value.data(), value.size());
  lua_setfield(L, -2, key);
}
void setNumber(lua_State* L, const char* key, lua_Number value) {
  lua_pushnumber(L, value);
  lua_setfield(L, -2, key);
}
void setBool(lua_State* L, const char* key, bool value) {
  lua_pushboolean(L, value ? 1 : 0);
  lua_setfield(L, -2, key);
}

// Argument checks raise OpenResty's text naming `fname` themselves: LuaJIT
// names a C function only from its call site, which a tail call or
// pcall(f, ...) does not have ("bad argument #1 to '?'").
void argError(lua_State* L, int idx, const char* fname, const char* expected) {
  luaL_error(L, "bad argument #%d to '%s' (%s expected, got %s)", idx, fname, expected, luaL_typename(L, idx));
}

// A string argument (a number is taken as its text, as luaL_checklstring does).
std::string_view checkString(lua_State* L, int idx, const char* fname) {
  if (!lua_isstring(L, idx)) argError(L, idx, fname, "string");
  size_t len = 0;
  const char* p = lua_tolstring(L, idx, &len);
  return {p, len};
}

lua_Number seconds(int64_t ms) { return static_cast<lua_Number>(ms) / 1000.0; }

// Stack: [] -> [nil, msg]; returns 2 for the caller to return.
int fail(lua_State* L, std::string_view msg) {
  lua_pushnil(L);
  lua_pushlstring(L, msg.data(), msg.size());
  return 2;
}

// The upstream `name` as the table holds it now (names are
// case-insensitive). False with *err: "upstream not found", or why its spec
// does not parse (only a conf whose `set` variables differ from the
// publisher's, see proxy/upstreams.cc).
bool loadUpstream(lua_State* L, std::string_view name, conf::UpstreamConf* out, std::string* err) {
  shm::UpstreamTable* table = shm::UpstreamTable::shared();
  shm::UpstreamTable::Entry e;
  if (!table || !table->get(name, &e)) {
    *err = kNotFound;
    return false;
  }
  Vm* vm = Vm::from(L);
  std::string origin, field;
  if (!upstream::upstreamFromJson(e.spec, out, &origin, vm ? &vm->config().http.variables : nullptr, err, &field)) {
    *err = "upstream \"" + e.name + "\" cannot be read: " + *err;
    return false;
  }
  return true;
}

// get_upstreams() -> {name, ...} in publishing order.
int getUpstreams(lua_State* L) {
  std::vector<shm::UpstreamTable::Entry> entries;
  if (shm::UpstreamTable* table = shm::UpstreamTable::shared()) table->list(&entries);
  lua_createtable(L, static_cast<int>(entries.size()), 0);
  for (size_t i = 0; i < entries.size(); i++) {
    lua_pushlstring(L, entries[i].name.data(), entries[i].name.size());
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  return 1;
}

// Stack: [] -> [{host=, port=, addr=, addresses=, weight=, ...}]
void pushServer(lua_State* L, const conf::UpstreamServer& s) {
  lua_createtable(L, 0, 10);
  setString(L, "host", s.host);
  setNumber(L, "port", s.port);
  if (!s.addresses.empty()) setString(L, "addr", s.addresses.front());
  lua_createtable(L, static_cast<int>(s.addresses.size()), 0);
  for (size_t i = 0; i < s.addresses.size(); i++) {
    lua_pushlstring(L, s.addresses[i].data(), s.addresses[i].size());
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  lua_setfield(L, -2, "addresses");
  setNumber(L, "weight", s.weight);
  setNumber(L, "max_fails", s.max_fails);
  setNumber(L, "fail_timeout", seconds(static_cast<int64_t>(s.fail_timeout_ms)));
  setBool(L, "backup", s.backup);
  setBool(L, "down", s.down);
  setNumber(L, "tier", s.tier);
}

// get_servers(name) -> {server, ...} | nil, err
int getServers(lua_State* L) {
  std::string_view name = checkString(L, 1, "get_servers");
  conf::UpstreamConf uc;
  std::string err;
  if (!loadUpstream(L, name, &uc, &err)) return fail(L, err);
  lua_createtable(L, static_cast<int>(uc.servers.size()), 0);
  for (size_t i = 0; i < uc.servers.size(); i++) {
    pushServer(L, uc.servers[i]);
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  return 1;
}

// Stack: [] -> [{time=, healthy=, reason=}, ...] oldest first.
void pushHistory(lua_State* L, const std::vector<shm::ServerHealth::Transition>& history) {
  lua_createtable(L, static_cast<int>(history.size()), 0);
  for (size_t i = 0; i < history.size(); i++) {
    lua_createtable(L, 0, 3);
    setNumber(L, "time", seconds(history[i].at_ms));
    setBool(L, "healthy", history[i].healthy);
    setString(L, "reason", history[i].reason);
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
}

// Stack: [] -> [{server=, host=, port=, status=, ...}] for one address of `s`.
void pushStatus(lua_State* L, const conf::UpstreamServer& s, const shm::ServerHealth& h, int64_t now_ms) {
  bool passive_down = h.passive_down_until > now_ms;
  bool healthy = h.healthy(now_ms);
  lua_createtable(L, 0, 15);
  setString(L, "server", h.server);
  setString(L, "host", s.host);
  setNumber(L, "port", s.port);
  setString(L, "status", h.status(s.down, now_ms));
  setBool(L, "healthy", healthy);
  setBool(L, "manual_down", h.manual_down);
  setBool(L, "active_down", h.active_down);
  setBool(L, "passive_down", passive_down);
  setNumber(L, "fail_num", static_cast<lua_Number>(h.fail_num));
  setNumber(L, "failures", h.failures);
  setNumber(L, "successes", h.successes);
  setString(L, "msg", h.last_error);
  setNumber(L, "lastmodified", seconds(h.last_change_ms));
  pushHistory(L, h.history);
  lua_setfield(L, -2, "history");
}

// get_status(name) -> {status, ...} (one per server address) | nil, err
int getStatus(lua_State* L) {
  std::string_view name = checkString(L, 1, "get_status");
  conf::UpstreamConf uc;
  std::string err;
  if (!loadUpstream(L, name, &uc, &err)) return fail(L, err);
  std::vector<std::string> addrs;
  std::vector<const conf::UpstreamServer*> owner;  // by address
  for (const conf::UpstreamServer& s : uc.servers) {
    for (const std::string& a : s.addresses) {
      addrs.push_back(a);
      owner.push_back(&s);
    }
  }
  std::vector<shm::ServerHealth> health;
  shm::UpstreamTable* table = shm::UpstreamTable::shared();
  table->health(name, addrs, &health);
  // After health(): a passive time-out that is over has been ended there.
  int64_t now = table->nowMs();
  lua_createtable(L, static_cast<int>(addrs.size()), 0);
  for (size_t i = 0; i < addrs.size(); i++) {
    pushStatus(L, *owner[i], health[i], now);
    lua_rawseti(L, -2, static_cast<int>(i + 1));
  }
  return 1;
}

// The addresses `server` names in `uc`: every address of the server written
// "host:port" (host case-insensitive), or the one address "ip:port".
std::vector<std::string> matchAddresses(const conf::UpstreamConf& uc, std::string_view server) {
  std::vector<std::string> out;
  auto add = [&out](const std::string& a) {
    for (const std::string& o : out) {
      if (o == a) return;
    }
    out.push_back(a);
  };
  for (const conf::UpstreamServer& s : uc.servers) {
    std::string id = s.id();
    bool named = id.size() == server.size() && strncasecmp(id.data(), server.data(), id.size()) == 0;
    for (const std::string& a : s.addresses) {
      if (named || a == server) add(a);
    }
  }
  return out;
}

// set_down(name, server, down) -> true | nil, err
int setDown(lua_State* L) {
  std::string_view name = checkString(L, 1, "set_down");
  std::string_view server = checkString(L, 2, "set_down");
  if (!lua_isboolean(L, 3)) argError(L, 3, "set_down", "boolean");
  bool down = lua_toboolean(L, 3) != 0;
  conf::UpstreamConf uc;
  std::string err;
  if (!loadUpstream(L, name, &uc, &err)) return fail(L, err);
  std::vector<std::string> addrs = matchAddresses(uc, server);
  if (addrs.empty()) return fail(L, "server not found");
  shm::UpstreamTable* table = shm::UpstreamTable::shared();
  bool unchanged = false;
  for (const std::string& a : addrs) unchanged = !table->setManualDown(name, a, down) || unchanged;
  if (unchanged) {
    // setManualDown is false both when the flag already was `down` and when
    // no record could be made (the zone is full): tell them apart.
    std::vector<shm::ServerHealth> health;
    table->health(name, addrs, &health);
    for (const shm::ServerHealth& h : health) {
      if (h.manual_down != down) return fail(L, "the upstream table is full");
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

// checker_pid() -> pid | nil
int checkerPid(lua_State* L) {
  shm::UpstreamTable* table = shm::UpstreamTable::shared();
  pid_t pid = table ? table->checker() : 0;
  if (pid == 0) lua_pushnil(L);
  else lua_pushinteger(L, pid);
  return 1;
}

// package.preload["tidegate.upstream"]
int loadUpstreamModule(lua_State* L) {
  lua_createtable(L, 0, 5);
  setFn(L, "get_upstreams", getUpstreams);
  setFn(L, "get_servers", getServers);
  setFn(L, "get_status", getStatus);
  setFn(L, "set_down", setDown);
  setFn(L, "checker_pid", checkerPid);
  return 1;
}

}  // namespace

// Stack: [] -> []
void openTidegateUpstream(lua_State* L) {
  setPreload(L, "tidegate.upstream", loadUpstreamModule);
}

}  // namespace tidegate::lua
