#include "conf/resolve.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <set>

#include "conf/directives.h"

namespace tidegate::conf {

const char* parseHostPort(std::string_view text, HostPort* out) {
  std::string_view port_text;
  bool has_colon = false;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return "invalid host";
    out->host.assign(text.substr(0, close + 1));
    std::string addr(text.substr(1, close - 1));
    in6_addr unused;
    if (inet_pton(AF_INET6, addr.c_str(), &unused) != 1) return "invalid IPv6 address";
    if (close + 1 < text.size()) {
      if (text[close + 1] != ':') return "invalid host";
      has_colon = true;
      port_text = text.substr(close + 2);
    }
  } else {
    size_t colon = text.rfind(':');
    has_colon = colon != std::string_view::npos;
    out->host.assign(text.substr(0, has_colon ? colon : text.size()));
    if (has_colon) port_text = text.substr(colon + 1);
  }
  if (out->host.empty()) return "no host";
  out->port_given = has_colon;
  if (!has_colon) return nullptr;
  int64_t p = 0;
  if (!parseInt(port_text, &p) || p < 1 || p > 65535) return "invalid port";
  out->port = static_cast<uint16_t>(p);
  return nullptr;
}

bool resolveHost(const std::string& host, uint16_t port, std::vector<std::string>* out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  std::string name = host.size() > 2 && host.front() == '[' ? host.substr(1, host.size() - 2) : host;
  if (getaddrinfo(name.c_str(), nullptr, &hints, &res) != 0 || !res) return false;
  std::set<std::string> seen(out->begin(), out->end());
  for (addrinfo* a = res; a; a = a->ai_next) {
    char buf[INET6_ADDRSTRLEN] = {0};
    std::string addr;
    if (a->ai_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ai_addr)->sin_addr, buf, sizeof(buf));
      addr.assign(buf);
    } else if (a->ai_family == AF_INET6) {
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(a->ai_addr)->sin6_addr, buf, sizeof(buf));
      addr.assign(1, '[').append(buf).append(1, ']');
    } else {
      continue;
    }
    addr.append(1, ':').append(std::to_string(port));
    if (seen.insert(addr).second) out->push_back(addr);
  }
  freeaddrinfo(res);
  return true;
}

}  // namespace tidegate::conf
