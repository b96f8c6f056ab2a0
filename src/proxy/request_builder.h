// The request a proxied try sends upstream: nginx's request line rules
// (proxy_pass's URI replacing the location's prefix, or the client's URI
// as received) and header rules (proxy_set_header with nginx's defaults,
// the client's headers unless overridden or hop-by-hop).
#pragma once

#include <string>
#include <string_view>

#include "conf/config.h"
#include "http/request.h"

namespace tidegate::proxy {

// Where proxy_pass sends this request, after variables were evaluated.
struct ProxyTarget {
  std::string host;        // as written: an upstream name, a host name or an address
  uint16_t port = 80;
  bool port_given = false;
  bool has_uri = false;
  std::string uri;
  bool from_variables = false;  // a URI part then replaces the whole request URI
  bool https = false;           // proxy_pass https://
  // $proxy_host: the name, with ":port" when it is not the scheme's default.
  std::string proxyHost() const;
};

// nginx's ngx_escape_uri for a path: space, '#', '%', '?', controls and
// bytes above 0x7e are %XX-encoded.
void appendEscapedPath(std::string_view path, std::string* out);

struct BuiltRequest {
  std::string head;        // request line, headers, blank line
  int64_t body_length = 0; // bytes of the request body that follow (-1: streamed chunked)
  bool keepalive = true;   // the upstream connection may be reused after this exchange
  bool upgrade = false;    // the request asks for a protocol upgrade (WebSocket)
};

// Builds the head for `r` to `t` with the location's settings.
void buildRequest(const http::Request& r, const conf::ProxySettings& s, const ProxyTarget& t, BuiltRequest* out);

}  // namespace tidegate::proxy
