// Helpers shared by the ngx API files: find the running request or task,
// or raise OpenResty's "API disabled in the context of ..." error.
#pragma once

#include <lua.hpp>

#include <initializer_list>
#include <string>
#include <string_view>

#include "lua/vm.h"

namespace tidegate::lua {

class LuaTask;
class RequestContext;

// The request being served (rewrite, access, content, log phases).
RequestContext* requireRequest(lua_State* L);
// The running request or timer.
LuaTask* requireTask(lua_State* L);
// The running request or timer, when `L` may yield to wait for an event;
// `cosocket`: in log_by_lua* (it runs detached from the client) and
// balancer_by_lua* (under lua_balancer_timeout) too.
LuaTask* requireYieldable(lua_State* L, bool cosocket = false);

// Appends the ngx.say/ngx.print argument at `idx` to *out (api/ngx_request.cc);
// raises OpenResty's error naming `fname` for a value it cannot print.
void appendValue(lua_State* L, int idx, std::string* out, const char* fname);
// Appends an integer of up to 14 digits, which LuaJIT's "%.14g" prints as
// plain digits, without the string lua_tolstring would intern (-0 prints as
// 0, as in OpenResty); false, with nothing appended, for any other number.
bool appendInteger(double n, std::string* out);

// After ngx.say/ngx.print appended to the body: large output is streamed.
void outputAppended(RequestContext* ctx);
// Whether ngx.say/ngx.print may append now (a request phase, before ngx.eof).
bool outputAllowed(RequestContext* ctx);
// ngx.var.NAME's value into *out; false for nil (unknown, or unset).
bool readVariable(RequestContext* ctx, std::string_view name, std::string* out);
// ngx.header.NAME = value for one value ('_' in NAME becomes '-').
void setResponseHeader(RequestContext* ctx, std::string name, std::string_view value);

// The request being served, if the running phase is one of `allowed` (the
// API's "Context:" line in lua-nginx-module), else OpenResty's "API
// disabled in the context of ..." error. api/ngx_req.cc.
RequestContext* requireRequestIn(lua_State* L, std::initializer_list<Phase> allowed);

// The running task (request or timer) for an FFI entry point, only if `r`
// (what tg_get_request() returned) is it: a pointer kept from an earlier
// request is never used. Null otherwise. api/ffi_exports.cc.
LuaTask* ffiTask(void* r);
RequestContext* ffiRequest(void* r);

// ngx.exit(status) in balancer_by_lua*: records the status for the proxy
// and returns (nothing yields there), as OpenResty does. api/ngx_balancer.cc.
int balancerExit(lua_State* L);

// ngx.decode_args / get_uri_args / get_post_args parsing: pushes a table
// for "a=1&a=2&b&c=x%20y" -> {a={"1","2"}, b=true, c="x y"}; more than
// `max` (0 = no limit) arguments pushes "truncated" too and returns 2.
// Stack: [] -> [t] or [t, "truncated"]. api/ngx_req.cc.
int pushArgs(lua_State* L, std::string_view args, lua_Integer max);

// ngx.encode_args for the table at `idx` ("a=1&b=x%20y&b=2"); raises
// OpenResty's error for a value it cannot encode. api/ngx_string.cc.
std::string encodeArgs(lua_State* L, int idx);

// Stack: [t] -> [t], with t's metatable = {__index = index, __newindex = newindex}.
void setAccessors(lua_State* L, lua_CFunction index, lua_CFunction newindex);
// ngx.arg = the value on the top (set_by_lua*'s arguments, body_filter's
// chunk and eof, or nil afterwards). Stack: [v] -> [].
void setNgxArg(lua_State* L);

// Stack: [t] -> [t] with t[name] = fn.
inline void setFn(lua_State* L, const char* name, lua_CFunction fn) {
  lua_pushcfunction(L, fn);
  lua_setfield(L, -2, name);
}

// package.preload[name] = loader, so that require(name) builds the module
// on first use. Stack: unchanged.
inline void setPreload(lua_State* L, const char* name, lua_CFunction loader) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  setFn(L, name, loader);
  lua_pop(L, 2);
}

}  // namespace tidegate::lua
