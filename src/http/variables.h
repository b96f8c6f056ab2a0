// Evaluates conf variables ($remote_addr, $http_NAME, ...) against a request.
#pragma once

#include <cstdint>
#include <string>

#include "conf/complex_value.h"
#include "http/request.h"

namespace tidegate::http {

// Appends the variable's value; nginx prints "-" for empty values only in
// the access log, which passes `dash_if_empty`.
void appendVariable(const conf::VarRef& var, const Request& r, std::string* out, bool dash_if_empty = false);
void evaluate(const conf::ComplexValue& value, const Request& r, std::string* out, bool dash_if_empty = false);

// A time in ms as nginx prints $msec and the *_time variables ("%T.%03M"):
// seconds with three decimals, "0.012".
void appendMsAsSeconds(uint64_t ms, std::string* out);

// ", client: ..., server: ..., request: \"...\"": the tail of an error log
// line about this request, in nginx's shape.
std::string describeRequest(const Request& r);
// False for a variable nginx reports "not found" in this request (a missing
// header, argument or cookie): ngx.var reads it as nil.
bool variableFound(const conf::VarRef& var, const Request& r);
// A *_by_lua_file whose path has variables, for this request: the path
// evaluated (relative to the prefix) and its chunk name.
conf::LuaCode resolveLuaFile(const conf::LuaCode& code, const Request& r);

}  // namespace tidegate::http
