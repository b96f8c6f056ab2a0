// Time formatting of the `ngx` table, available in every phase: today,
// localtime, utctime, http_time, cookie_time, parse_http_time.
#include <time.h>

#include <cstdio>
#include <cstring>

#include "lua/vm.h"

namespace tidegate::lua {
namespace {

int pushFormatted(lua_State* L, time_t t, bool utc, const char* fmt) {
  struct tm tm;
  if (utc) gmtime_r(&t, &tm);
  else localtime_r(&t, &tm);
  char buf[64];
  size_t n = strftime(buf, sizeof(buf), fmt, &tm);
  lua_pushlstring(L, buf, n);
  return 1;
}

int ngxToday(lua_State* L) { return pushFormatted(L, time(nullptr), false, "%Y-%m-%d"); }
int ngxLocaltime(lua_State* L) { return pushFormatted(L, time(nullptr), false, "%Y-%m-%d %H:%M:%S"); }
int ngxUtctime(lua_State* L) { return pushFormatted(L, time(nullptr), true, "%Y-%m-%d %H:%M:%S"); }

// "Thu, 18 Nov 2010 11:27:35 GMT" (RFC 9110 5.6.7). The C locale's day and
// month names are the ones HTTP wants.
int ngxHttpTime(lua_State* L) {
  return pushFormatted(L, static_cast<time_t>(luaL_checknumber(L, 1)), true, "%a, %d %b %Y %H:%M:%S GMT");
}

// "Thu, 18-Nov-10 11:27:35 GMT": the Netscape cookie format nginx writes.
int ngxCookieTime(lua_State* L) {
  return pushFormatted(L, static_cast<time_t>(luaL_checknumber(L, 1)), true, "%a, %d-%b-%y %H:%M:%S GMT");
}

// The three formats RFC 9110 5.6.7 says a recipient must accept; nil
// otherwise.
int ngxParseHttpTime(lua_State* L) {
  const char* s = luaL_checkstring(L, 1);
  static const char* kFormats[] = {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"};
  for (const char* f : kFormats) {
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char* end = strptime(s, f, &tm);
    if (end && *end == '\0') {
      lua_pushnumber(L, static_cast<lua_Number>(timegm(&tm)));
      return 1;
    }
  }
  lua_pushnil(L);
  return 1;
}

}  // namespace

// Stack: [ngx] -> [ngx]
void openNgxTime(lua_State* L) {
  static const luaL_Reg kFns[] = {
      {"today", ngxToday},          {"localtime", ngxLocaltime},     {"utctime", ngxUtctime},
      {"http_time", ngxHttpTime},   {"cookie_time", ngxCookieTime},  {"parse_http_time", ngxParseHttpTime},
      {nullptr, nullptr},
  };
  for (const luaL_Reg* f = kFns; f->name; f++) {
    lua_pushcfunction(L, f->func);
    lua_setfield(L, -2, f->name);
  }
}

}  // namespace tidegate::lua
