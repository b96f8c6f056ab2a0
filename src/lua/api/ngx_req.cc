// ngx.req.* (the read side, content phase for now): get_method,
// http_version, get_uri_args, get_headers, raw_header, start_time,
// is_internal. Return shapes follow lua-nginx-module.
#include <string>

#include "http/ascii.h"
#include "http/uri.h"
#include "lua/api/common.h"
#include "lua/phases/content.h"
#include "lua/vm.h"

namespace tidegate::lua {

// requireRequest: api/common.h

namespace {

// Stack: [t, key, value] -> [t]: t[key] = value, or an array of values when
// the key repeats (OpenResty's multi-value shape).
void addMulti(lua_State* L) {
  lua_pushvalue(L, -2);  // [t, k, v, k]
  lua_rawget(L, -4);     // [t, k, v, old]
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_rawset(L, -3);
    return;
  }
  if (lua_type(L, -1) == LUA_TTABLE) {  // [t, k, v, arr]
    lua_insert(L, -2);                  // [t, k, arr, v]
    lua_rawseti(L, -2, static_cast<int>(lua_objlen(L, -2)) + 1);
    lua_pop(L, 2);
    return;
  }
  lua_createtable(L, 2, 0);  // [t, k, v, old, arr]
  lua_insert(L, -2);         // [t, k, v, arr, old]
  lua_rawseti(L, -2, 1);     // [t, k, v, arr]
  lua_insert(L, -2);         // [t, k, arr, v]
  lua_rawseti(L, -2, 2);     // [t, k, arr]
  lua_rawset(L, -3);         // [t]
}

int getMethod(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  std::string_view m = ctx->req().head->method.in(ctx->req().base);
  lua_pushlstring(L, m.data(), m.size());
  return 1;
}

int httpVersion(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  lua_pushnumber(L, ctx->req().head->http_minor == 0 ? 1.0 : 1.1);
  return 1;
}

int startTime(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  lua_pushnumber(L, static_cast<double>(ctx->startWallMs()) / 1000.0);
  return 1;
}

int isInternal(lua_State* L) {
  requireRequest(L);
  lua_pushboolean(L, 0);
  return 1;
}

// Pushes a table for "a=1&a=2&b&c=x%20y" -> {a={"1","2"}, b=true, c="x y"}.
// More than `max` (0 = no limit) arguments: returns 2 with "truncated"
// pushed after the table. Stack: [] -> [t] or [t, "truncated"].
int pushArgs(lua_State* L, std::string_view args, lua_Integer max) {
  lua_createtable(L, 0, 4);
  int count = 0;
  size_t pos = 0;
  while (pos < args.size()) {
    size_t amp = args.find('&', pos);
    if (amp == std::string_view::npos) amp = args.size();
    std::string_view pair = args.substr(pos, amp - pos);
    pos = amp + 1;
    if (pair.empty()) continue;
    if (max > 0 && count >= max) {
      lua_pushliteral(L, "truncated");
      return 2;
    }
    count++;
    size_t eq = pair.find('=');
    std::string key = http::unescapeComponent(pair.substr(0, eq));
    if (key.empty()) continue;  // "=x": OpenResty skips an empty key
    lua_pushlstring(L, key.data(), key.size());
    if (eq == std::string_view::npos) {
      lua_pushboolean(L, 1);
    } else {
      std::string value = http::unescapeComponent(pair.substr(eq + 1));
      lua_pushlstring(L, value.data(), value.size());
    }
    addMulti(L);
  }
  return 1;
}

// ngx.req.get_uri_args(max?): the query as a table; max defaults to 100.
int getUriArgs(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  return pushArgs(L, ctx->req().query(), luaL_optinteger(L, 1, 100));
}

// ngx.decode_args(str, max?): the same parsing for any string, any phase.
int decodeArgs(lua_State* L) {
  size_t len = 0;
  const char* s = luaL_checklstring(L, 1, &len);
  return pushArgs(L, std::string_view(s, len), luaL_optinteger(L, 2, 100));
}

// The metatable OpenResty gives get_headers() results: h.user_agent and
// h["User-Agent"] find "user-agent".
int headersIndex(lua_State* L) {
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  std::string key = lua_tostring(L, 2);
  for (char& c : key) c = c == '_' ? '-' : http::asciiLower(c);
  lua_pushlstring(L, key.data(), key.size());
  lua_rawget(L, 1);
  return 1;
}

// ngx.req.get_headers(max?, raw?): names lower-cased unless raw, repeated
// headers as arrays; more than `max` (default 100) returns "truncated".
int getHeaders(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  lua_Integer max = luaL_optinteger(L, 1, 100);
  bool raw = lua_toboolean(L, 2);
  const http::Request& r = ctx->req();
  lua_createtable(L, 0, static_cast<int>(r.head->headers.size()));
  int count = 0;
  for (const auto& h : r.head->headers) {
    if (max > 0 && count >= max) {
      lua_pushliteral(L, "truncated");
      return 2;
    }
    count++;
    std::string name(h.name.in(r.base));
    if (!raw) {
      for (char& c : name) c = http::asciiLower(c);
    }
    std::string_view value = h.value.in(r.base);
    lua_pushlstring(L, name.data(), name.size());
    lua_pushlstring(L, value.data(), value.size());
    addMulti(L);
  }
  if (!raw) {
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, headersIndex);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
  }
  return 1;
}

// ngx.req.raw_header(no_request_line?): the head as received.
int rawHeader(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  const http::Request& r = ctx->req();
  std::string_view head(r.base, r.head->head_len);
  if (lua_toboolean(L, 1)) {
    size_t eol = head.find("\r\n");
    if (eol != std::string_view::npos) head.remove_prefix(eol + 2);
  }
  lua_pushlstring(L, head.data(), head.size());
  return 1;
}

}  // namespace

// Stack: [ngx] -> [ngx] with ngx.req set.
void openNgxReq(lua_State* L) {
  lua_createtable(L, 0, 8);
  static const luaL_Reg kFns[] = {
      {"get_method", getMethod},   {"http_version", httpVersion}, {"start_time", startTime},
      {"is_internal", isInternal}, {"get_uri_args", getUriArgs},  {"get_headers", getHeaders},
      {"raw_header", rawHeader},   {nullptr, nullptr},
  };
  for (const luaL_Reg* f = kFns; f->name; f++) {
    lua_pushcfunction(L, f->func);
    lua_setfield(L, -2, f->name);
  }
  lua_setfield(L, -2, "req");
  lua_pushcfunction(L, decodeArgs);
  lua_setfield(L, -2, "decode_args");
}

}  // namespace tidegate::lua
