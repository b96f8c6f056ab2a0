// Upstream addresses as the conf writes them ("host[:port]", "[v6][:port]")
// and their resolution when the conf loads. Shared by upstream { server }
// and proxy_pass, which nginx parses with the same ngx_parse_url.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tidegate::conf {

struct HostPort {
  std::string host;  // as written; an IPv6 address keeps its brackets
  uint16_t port = 80;  // nginx's default for http
  bool port_given = false;
};

// Splits `text` ("host[:port]" or "[v6][:port]", nothing after). Null when
// valid; else what is wrong in nginx's words: "no host", "invalid host",
// "invalid IPv6 address" or "invalid port".
const char* parseHostPort(std::string_view text, HostPort* out);

// Appends "ip:port" for each address `host` resolves to (IPv6 in brackets),
// in the resolver's order, without duplicates. Blocks on getaddrinfo(): for
// conf load only. False if the name does not resolve.
bool resolveHost(const std::string& host, uint16_t port, std::vector<std::string>* out);

struct ProxyPass;
// proxy_pass's "http://host[:port][uri]" into `pp` (host, port, URI; not
// resolved). At load for a fixed value, per request for one with
// variables. False with *err in nginx's words.
bool parseProxyUrl(std::string_view url, ProxyPass* pp, std::string* err);

}  // namespace tidegate::conf
