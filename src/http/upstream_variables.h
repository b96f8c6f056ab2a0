// nginx's proxy and upstream module variables ($upstream_addr, $upstream_status,
// $upstream_*_time, $upstream_response_length, $upstream_http_NAME,
// $proxy_host, $proxy_port, $proxy_add_x_forwarded_for), read from what the
// proxy recorded in Request::upstream. http/variables.cc dispatches here.
#pragma once

#include <string>

#include "conf/complex_value.h"
#include "http/request.h"

namespace tidegate::http {

// Accepts conf::VarId's proxy group and kUpstreamHttpHeader; appends
// nothing for any other id.
void appendUpstreamVariable(const conf::VarRef& var, const Request& r, std::string* out);
// nginx's "not found": the $upstream_* lists of a request that made no try,
// an $upstream_http_NAME the response did not carry, $proxy_host and
// $proxy_port of a request that was not proxied. True for any id not
// evaluated here, so variableFound() may end with it.
bool upstreamVariableFound(const conf::VarRef& var, const Request& r);

}  // namespace tidegate::http
