// One request on a downstream connection: the parsed head (views into the
// connection buffer), the routing result and the response bookkeeping that
// variables and the access log read.
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "conf/config.h"
#include "http/request_head.h"
#include "http/request_variables.h"

namespace tidegate::http {

struct ConnInfo {
  uv_loop_t* loop = nullptr;
  uint64_t id = 0;
  uint64_t requests = 0;  // requests served on this connection, this one included
  std::string remote_addr;
  uint16_t remote_port = 0;
  std::string local_addr;
  uint16_t local_port = 0;
};

struct Request {
  const char* base = nullptr;  // the connection buffer the head's slices point into
  const RequestHead* head = nullptr;
  const ConnInfo* conn = nullptr;
  const conf::Server* server = nullptr;
  const conf::Location* location = nullptr;
  std::string uri;             // normalised, decoded path ($uri)
  Slice args;                  // raw query ($args), in the buffer like the head's slices
  bool has_args = false;
  std::string host;            // lower-cased, without port, from Host or an absolute-form target
  int status = 0;
  uint64_t bytes_sent = 0;
  uint64_t body_bytes_sent = 0;
  uint64_t request_length = 0;
  // The loop's cached clock (ms), as nginx's request times use its cached time:
  // no clock read per request.
  uint64_t start_ms = 0;
  // Response headers already decided (for $sent_http_*): only the ones we make.
  std::string_view sent_content_type;
  std::string sent_location;
  int64_t sent_content_length = -1;
  // What set, set_by_lua* and ngx.var writes assigned. Mutable: handlers
  // see the request as const, and assigning a variable is the one change
  // nginx lets them make to it.
  mutable RequestVariables vars;

  std::string_view header(std::string_view lower_name) const;
  // $args: the query as received, or as `set $args` / ngx.var.args replaced it.
  std::string_view query() const { return vars.argsReplaced() ? std::string_view(vars.args()) : args.in(base); }
  // Back to a fresh request; strings keep their capacity (no allocation per request).
  void reset() {
    base = nullptr;
    head = nullptr;
    server = nullptr;
    location = nullptr;
    uri.clear();
    args = Slice{};
    has_args = false;
    host.clear();
    status = 0;
    bytes_sent = body_bytes_sent = request_length = 0;
    start_ms = 0;
    sent_content_type = {};
    sent_location.clear();
    sent_content_length = -1;
    vars.clear();
  }
  // The settings that apply: the location's, else the server's.
  const conf::HttpSettings& settings() const {
    return location ? location->settings : server->settings;
  }
};

}  // namespace tidegate::http
