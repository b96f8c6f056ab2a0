#include "lua/api/socket_read.h"

#include <algorithm>
#include <cstring>

namespace tidegate::lua {
namespace {

// The length of the longest tail of `in` that begins the pattern: bytes
// that may yet turn out to be the boundary.
size_t heldBack(const std::string& in, const Until& u) {
  for (size_t k = std::min(in.size(), u.plen - 1); k > 0; k--) {
    if (in.compare(in.size() - k, k, u.pat, k) == 0) return k;
  }
  return 0;
}

// Pushes `take` bytes off the front of the buffer, then drops `skip` more.
// Stack of L: [] -> [data]
int pushTaken(lua_State* L, std::string& in, size_t take, size_t skip) {
  lua_pushlstring(L, in.data(), take);
  in.erase(0, take + skip);
  return 1;
}

// receiveuntil's iterator over the buffer. Without a size: the data before
// the boundary (and the boundary when inclusive). With one: at most size
// bytes per call, then a lone nil once the boundary is passed.
int takeUntil(lua_State* L, std::string& in, Until* u, size_t size) {
  if (!u->found) {
    size_t pos = in.find(u->pat, u->scan_from, u->plen);
    if (pos == std::string::npos) {
      u->scan_from = in.size() >= u->plen ? in.size() - u->plen + 1 : 0;
      if (size == 0 || in.size() - heldBack(in, *u) < size) return 0;
      u->scan_from -= std::min(u->scan_from, size);
      return pushTaken(L, in, size, 0);
    }
    u->found = true;
    u->region = u->inclusive ? pos + u->plen : pos;
    u->skip = u->inclusive ? 0 : u->plen;
    u->scan_from = 0;
  }
  if (size == 0) {
    u->found = false;
    return pushTaken(L, in, u->region, u->skip);
  }
  if (u->region == 0) {
    u->found = false;
    in.erase(0, u->skip);
    lua_pushnil(L);
    return 1;
  }
  size_t k = std::min(u->region, size);
  u->region -= k;
  return pushTaken(L, in, k, 0);
}

}  // namespace

int takeBuffered(lua_State* L, std::string& in, const ReadSpec& r) {
  switch (r.mode) {
    case ReadMode::kLine: {
      size_t nl = in.find('\n');
      if (nl == std::string::npos) return 0;
      return pushTaken(L, in, nl > 0 && in[nl - 1] == '\r' ? nl - 1 : nl, nl > 0 && in[nl - 1] == '\r' ? 2 : 1);
    }
    case ReadMode::kAll: return 0;
    case ReadMode::kBytes: return in.size() < r.n ? 0 : pushTaken(L, in, r.n, 0);
    case ReadMode::kAny: return in.empty() ? 0 : pushTaken(L, in, std::min(in.size(), r.n), 0);
    case ReadMode::kUntil: return takeUntil(L, in, r.until, r.n);
  }
  return 0;
}

int pushReadFailure(lua_State* L, std::string& in, const ReadSpec& r, const char* err) {
  lua_pushnil(L);
  lua_pushstring(L, err);
  if (r.mode == ReadMode::kAny) return 2;
  if (r.until) r.until->scan_from = 0;
  lua_pushlstring(L, in.data(), in.size());
  in.clear();
  return 3;
}

int receiveArgs(lua_State* L, ReadSpec* r) {
  *r = ReadSpec{};
  if (lua_isnumber(L, 2)) {  // a numeric string too ("2"), as lua_isnumber() in OpenResty
    lua_Number v = lua_tonumber(L, 2);
    if (v < 0) return luaL_argerror(L, 2, "bad pattern argument");
    r->n = static_cast<size_t>(v);
    if (r->n == 0) {
      lua_pushliteral(L, "");
      return 1;
    }
    r->mode = ReadMode::kBytes;
  } else if (!lua_isnoneornil(L, 2)) {
    const char* p = luaL_checkstring(L, 2);
    if (std::strcmp(p, "*a") == 0) r->mode = ReadMode::kAll;
    else if (std::strcmp(p, "*l") != 0) return luaL_argerror(L, 2, "bad pattern argument");
  }
  return 0;
}

void receiveAnyArgs(lua_State* L, ReadSpec* r) {
  lua_Integer max = luaL_checkinteger(L, 2);
  if (max <= 0) luaL_argerror(L, 2, "bad max argument");
  *r = ReadSpec{ReadMode::kAny, static_cast<size_t>(max), nullptr};
}

int pushUntilIterator(lua_State* L, lua_CFunction iter) {
  size_t plen = 0;
  const char* pat = luaL_checklstring(L, 2, &plen);
  bool inclusive = false;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_getfield(L, 3, "inclusive");
    if (!lua_isnil(L, -1) && !lua_isboolean(L, -1)) {
      return luaL_error(L, "bad \"inclusive\" option value type: %s", luaL_typename(L, -1));
    }
    inclusive = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  if (plen == 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "pattern is empty");
    return 2;
  }
  lua_pushvalue(L, 1);
  auto* u = static_cast<Until*>(lua_newuserdata(L, sizeof(Until)));
  *u = Until{pat, plen, inclusive, false, 0, 0, 0};
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, iter, 3);
  return 1;
}

ReadSpec untilIteratorArgs(lua_State* L) {
  lua_settop(L, 1);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);  // [sock, size]
  size_t size = 0;
  if (!lua_isnil(L, 2)) {
    lua_Integer v = luaL_checkinteger(L, 2);
    if (v <= 0) luaL_argerror(L, 1, "bad size argument");
    size = static_cast<size_t>(v);
  }
  auto* u = static_cast<Until*>(lua_touserdata(L, lua_upvalueindex(2)));
  return ReadSpec{ReadMode::kUntil, size, u};
}

}  // namespace tidegate::lua
