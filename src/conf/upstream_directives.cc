// upstream NAME { server ...; keepalive ...; balancer ...; } with nginx's
// syntax and errors, plus tidegate's `tier=` and `balancer` (issue 4).
// Host names resolve when the conf loads (and on each reload), as nginx
// does. Only the model is built here; the proxy uses it.
#include <netdb.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <set>

#include "conf/directives.h"

namespace tidegate::conf {
namespace {

// "ip:port" for each address `host` resolves to (IPv6 in brackets), in the
// resolver's order, without duplicates. False with nginx's error text.
bool resolve(const std::string& host, uint16_t port, std::vector<std::string>* out, std::string* err) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  std::string name = host.size() > 2 && host.front() == '[' ? host.substr(1, host.size() - 2) : host;
  if (getaddrinfo(name.c_str(), nullptr, &hints, &res) != 0 || !res) {
    err->assign("host not found in upstream \"").append(host).append("\"");
    return false;
  }
  std::set<std::string> seen;
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

// "host[:port]", "[v6][:port]"; the port defaults to 80 as in nginx.
bool splitAddress(const std::string& text, std::string* host, uint16_t* port) {
  std::string port_text;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos) return false;
    *host = text.substr(0, close + 1);
    if (close + 1 < text.size()) {
      if (text[close + 1] != ':') return false;
      port_text = text.substr(close + 2);
    }
  } else {
    size_t colon = text.rfind(':');
    *host = colon == std::string::npos ? text : text.substr(0, colon);
    if (colon != std::string::npos) port_text = text.substr(colon + 1);
  }
  if (host->empty()) return false;
  if (port_text.empty()) return text.back() != ':';  // "host:" has an empty port
  int64_t p = 0;
  if (!parseInt(port_text, &p) || p < 1 || p > 65535) return false;
  *port = static_cast<uint16_t>(p);
  return true;
}

bool invalidParameter(const std::string& arg, std::string* err) {
  err->assign("invalid parameter \"").append(arg).append("\"");
  return false;
}

// "key=N" with N a non-negative integer.
bool intParam(std::string_view arg, std::string_view key, int64_t max, int* out) {
  int64_t v = 0;
  if (!parseInt(arg.substr(key.size()), &v) || v < 0 || v > max) return false;
  *out = static_cast<int>(v);
  return true;
}

bool onUpstream(const ConfNode& n, BuildState& st, std::string* err) {
  for (const auto& u : st.http->upstreams) {
    if (u->name == n.args[0]) {
      err->assign("duplicate upstream \"").append(n.args[0]).append("\"");
      return false;
    }
  }
  auto up = std::make_shared<UpstreamConf>();
  up->name = n.args[0];
  up->where = n.where();
  st.http->upstreams.push_back(up);
  BuildState inner = st;
  inner.ctx = kUpstreamCtx;
  inner.upstream = up.get();
  if (!buildBlock(n.children, inner, st.error)) return false;
  if (up->servers.empty()) {
    *st.error = ConfError{"no servers are inside upstream", n.file ? *n.file : "", n.line};
    return false;
  }
  return true;
}

// server address [weight=N] [max_fails=N] [fail_timeout=T] [backup] [down] [tier=N];
bool onUpstreamServer(const ConfNode& n, BuildState& st, std::string* err) {
  UpstreamServer s;
  s.where = n.where();
  if (!splitAddress(n.args[0], &s.host, &s.port)) {
    err->assign("invalid host in upstream \"").append(n.args[0]).append("\"");
    return false;
  }
  bool tier_set = false;
  for (size_t i = 1; i < n.args.size(); i++) {
    const std::string& a = n.args[i];
    std::string_view v(a);
    if (v.rfind("weight=", 0) == 0) {
      if (!intParam(v, "weight=", 1000000, &s.weight) || s.weight == 0) return invalidParameter(a, err);
    } else if (v.rfind("max_fails=", 0) == 0) {
      if (!intParam(v, "max_fails=", 1000000, &s.max_fails)) return invalidParameter(a, err);
    } else if (v.rfind("fail_timeout=", 0) == 0) {
      if (!parseDurationMs(v.substr(13), &s.fail_timeout_ms)) return invalidParameter(a, err);
    } else if (v.rfind("tier=", 0) == 0) {
      if (!intParam(v, "tier=", 100, &s.tier)) return invalidParameter(a, err);
      tier_set = true;
    } else if (a == "backup") {
      s.backup = true;
    } else if (a == "down") {
      s.down = true;
    } else {
      return invalidParameter(a, err);
    }
  }
  if (s.backup && !tier_set) s.tier = 1;
  for (const auto& other : st.upstream->servers) {
    if (other.id() == s.id()) {
      err->assign("duplicate server \"").append(s.id()).append("\" in upstream \"").append(st.upstream->name);
      err->append("\"");
      return false;
    }
  }
  if (!resolve(s.host, s.port, &s.addresses, err)) return false;
  st.upstream->servers.push_back(std::move(s));
  return true;
}

bool setBalancer(BuildState& st, const std::string& type, std::string* err) {
  if (st.upstream->balancer_set) {
    err->assign("load balancing method redefined");
    return false;
  }
  st.upstream->balancer_set = true;
  st.upstream->balancer = type;
  return true;
}

// least_conn;
bool onLeastConn(const ConfNode&, BuildState& st, std::string* err) { return setBalancer(st, "least_conn", err); }

// hash KEY [consistent]; (tidegate hashes consistently either way)
bool onHash(const ConfNode& n, BuildState& st, std::string* err) {
  if (n.args.size() == 2 && n.args[1] != "consistent") {
    err->assign("invalid parameter \"").append(n.args[1]).append("\"");
    return false;
  }
  if (!setBalancer(st, "chash", err)) return false;
  ComplexValue key;
  if (!compileComplexValue(n.args[0], &key, err, st.variables())) return false;
  st.upstream->hash_key = std::move(key);
  return true;
}

// balancer round_robin|least_conn|ewma|chash [key=VALUE] [fail_open] [tier_min_healthy=N%];
bool onBalancer(const ConfNode& n, BuildState& st, std::string* err) {
  const std::string& type = n.args[0];
  if (type != "round_robin" && type != "least_conn" && type != "ewma" && type != "chash") {
    err->assign("unknown balancer \"").append(type).append("\" (round_robin, chash, least_conn, ewma)");
    return false;
  }
  if (!setBalancer(st, type, err)) return false;
  for (size_t i = 1; i < n.args.size(); i++) {
    std::string_view a(n.args[i]);
    if (a == "fail_open") {
      st.upstream->fail_open = true;
    } else if (a.rfind("tier_min_healthy=", 0) == 0) {
      std::string_view v = a.substr(17);
      if (!v.empty() && v.back() == '%') v.remove_suffix(1);
      int64_t pct = 0;
      if (!parseInt(v, &pct) || pct < 0 || pct > 100) return invalidParameter(n.args[i], err);
      st.upstream->tier_min_healthy = static_cast<int>(pct);
    } else if (a.rfind("key=", 0) == 0 && type == "chash") {
      ComplexValue key;
      if (!compileComplexValue(std::string(a.substr(4)), &key, err, st.variables())) return false;
      st.upstream->hash_key = std::move(key);
    } else {
      return invalidParameter(n.args[i], err);
    }
  }
  if (type == "chash" && !st.upstream->hash_key) {
    err->assign("balancer chash needs key=VALUE");
    return false;
  }
  return true;
}

template <uint64_t UpstreamConf::*Field, bool (*Parse)(std::string_view, uint64_t*)>
bool onUpstreamNumber(const ConfNode& n, BuildState& st, std::string* err) {
  if (!Parse(n.args[0], &(st.upstream->*Field))) {
    err->assign("invalid value \"").append(n.args[0]).append("\" in \"").append(n.name).append("\" directive");
    return false;
  }
  return true;
}

bool parseCount(std::string_view text, uint64_t* out) {
  int64_t v = 0;
  if (!parseInt(text, &v) || v < 0) return false;
  *out = static_cast<uint64_t>(v);
  return true;
}

const Directive kUpstreamDirectives[] = {
    {"upstream", kHttpCtx, 1, 1, true, onUpstream},
    {"server", kUpstreamCtx, 1, kAnyArgs, false, onUpstreamServer},
    {"least_conn", kUpstreamCtx, 0, 0, false, onLeastConn},
    {"hash", kUpstreamCtx, 1, 2, false, onHash},
    {"balancer", kUpstreamCtx, 1, kAnyArgs, false, onBalancer},
    {"keepalive", kUpstreamCtx, 1, 1, false, onUpstreamNumber<&UpstreamConf::keepalive, parseCount>},
    {"keepalive_timeout", kUpstreamCtx, 1, 1, false,
     onUpstreamNumber<&UpstreamConf::keepalive_timeout_ms, parseDurationMs>},
    {"keepalive_requests", kUpstreamCtx, 1, 1, false, onUpstreamNumber<&UpstreamConf::keepalive_requests, parseCount>},
};

}  // namespace

void registerUpstreamDirectives() {
  registerDirectives(kUpstreamDirectives, sizeof(kUpstreamDirectives) / sizeof(kUpstreamDirectives[0]));
}

}  // namespace tidegate::conf
