// Helpers shared by the ngx API files: find the running request or task,
// or raise OpenResty's "API disabled in the context of ..." error.
#pragma once

#include <lua.hpp>

#include <string>
#include <string_view>

#include <string>

namespace tidegate::lua {

class LuaTask;
class RequestContext;

// The request being served (rewrite, access, content, log phases).
RequestContext* requireRequest(lua_State* L);
// The running request or timer.
LuaTask* requireTask(lua_State* L);
// The running request or timer, when `L` may yield to wait for an event.
LuaTask* requireYieldable(lua_State* L);

// Appends the ngx.say/ngx.print argument at `idx` to *out (api/ngx_request.cc);
// raises OpenResty's error naming `fname` for a value it cannot print.
void appendValue(lua_State* L, int idx, std::string* out, const char* fname);

// ngx.var.NAME's value into *out; false for nil (unknown, or unset).
bool readVariable(RequestContext* ctx, std::string_view name, std::string* out);
// ngx.header.NAME = value for one value ('_' in NAME becomes '-').
void setResponseHeader(RequestContext* ctx, std::string name, std::string_view value);

// Stack: [t] -> [t] with t[name] = fn.
inline void setFn(lua_State* L, const char* name, lua_CFunction fn) {
  lua_pushcfunction(L, fn);
  lua_setfield(L, -2, name);
}

}  // namespace tidegate::lua
