// Helpers shared by the ngx API files: find the running request or task,
// or raise OpenResty's "API disabled in the context of ..." error.
#pragma once

#include <lua.hpp>

namespace tidegate::lua {

class LuaTask;
class RequestContext;

// The request being served (rewrite, access, content, log phases).
RequestContext* requireRequest(lua_State* L);
// The running request or timer.
LuaTask* requireTask(lua_State* L);
// The running request or timer, when `L` may yield to wait for an event.
LuaTask* requireYieldable(lua_State* L);

// Stack: [t] -> [t] with t[name] = fn.
inline void setFn(lua_State* L, const char* name, lua_CFunction fn) {
  lua_pushcfunction(L, fn);
  lua_setfield(L, -2, name);
}

}  // namespace tidegate::lua
