// upstream NAME { server ...; keepalive ...; balancer ...; } with nginx's
// syntax and errors, plus tidegate's `tier=` and `balancer` (issue 4).
// Host names resolve when the conf loads (and on each reload), as nginx
// does. Only the model is built here; the proxy uses it.
#include <strings.h>

#include "conf/directives.h"
#include "conf/resolve.h"

namespace tidegate::conf {
namespace {

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
    if (strcasecmp(u->name.c_str(), n.args[0].c_str()) == 0) {  // nginx's names are case-insensitive
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
  // With balancer_by_lua* the code may choose every peer itself (OpenResty
  // confs still name a placeholder such as `server 0.0.0.1;`).
  if (up->servers.empty() && up->balancer_lua.empty()) {
    *st.error = ConfError{"no servers are inside upstream", n.file ? *n.file : "", n.line};
    return false;
  }
  return true;
}

// server address [weight=N] [max_fails=N] [fail_timeout=T] [backup] [down] [tier=N];
bool onUpstreamServer(const ConfNode& n, BuildState& st, std::string* err) {
  UpstreamServer s;
  s.where = n.where();
  HostPort hp;
  if (parseHostPort(n.args[0], &hp)) {
    err->assign("invalid host in upstream \"").append(n.args[0]).append("\"");
    return false;
  }
  s.host = hp.host;
  s.port = hp.port;
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
  if (!resolveHost(s.host, s.port, &s.addresses)) {
    err->assign("host not found in upstream \"").append(s.host).append("\"");
    return false;
  }
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

// balancer round_robin|least_conn|ewma|chash|lua [key=VALUE] [module=NAME] [fail_open] [tier_min_healthy=N%];
bool onBalancer(const ConfNode& n, BuildState& st, std::string* err) {
  const std::string& type = n.args[0];
  if (type != "round_robin" && type != "least_conn" && type != "ewma" && type != "chash" && type != "lua") {
    err->assign("unknown balancer \"").append(type).append("\" (round_robin, chash, least_conn, ewma, lua)");
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
    } else if (a.rfind("module=", 0) == 0 && type == "lua" && a.size() > 7) {
      st.upstream->balancer_module = std::string(a.substr(7));
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
  if (type == "lua" && st.upstream->balancer_module.empty()) {
    err->assign("balancer lua needs module=NAME");
    return false;
  }
  return true;
}

// "200-399,404": inclusive ranges of HTTP statuses.
bool parseStatuses(std::string_view v, std::vector<std::pair<int, int>>* out) {
  while (!v.empty()) {
    size_t comma = v.find(',');
    std::string_view item = v.substr(0, comma);
    v = comma == std::string_view::npos ? std::string_view() : v.substr(comma + 1);
    size_t dash = item.find('-');
    int64_t lo = 0, hi = 0;
    if (!parseInt(item.substr(0, dash), &lo)) return false;
    hi = lo;
    if (dash != std::string_view::npos && !parseInt(item.substr(dash + 1), &hi)) return false;
    if (lo < 100 || hi > 599 || lo > hi) return false;
    out->emplace_back(static_cast<int>(lo), static_cast<int>(hi));
    if (comma != std::string_view::npos && v.empty()) return false;
  }
  return true;
}

// health_check [type=http|tcp] [uri=/path] [host=NAME] [interval=T]
// [unhealthy_interval=T] [timeout=T] [fails=N] [passes=N] [status=...] [port=N];
bool onHealthCheck(const ConfNode& n, BuildState& st, std::string* err) {
  HealthCheckConf& hc = st.upstream->health_check;
  if (hc.enabled) {
    err->assign("\"health_check\" directive is duplicate");
    return false;
  }
  hc.enabled = true;
  for (const std::string& a : n.args) {
    std::string_view v(a);
    size_t eq = v.find('=');
    std::string_view key = v.substr(0, eq);
    std::string_view val = eq == std::string_view::npos ? std::string_view() : v.substr(eq + 1);
    if (eq == std::string_view::npos || val.empty()) return invalidParameter(a, err);
    bool ok = false;
    if (key == "type") {
      ok = val == "http" || val == "tcp";
      hc.tcp = val == "tcp";
    } else if (key == "uri") {
      ok = val[0] == '/' && val.find_first_of(" \r\n") == std::string_view::npos;
      hc.uri = val;
    } else if (key == "host") {
      ok = val.find_first_of(" \r\n") == std::string_view::npos;
      hc.host = val;
    } else if (key == "interval") {
      ok = parseDurationMs(val, &hc.interval_ms) && hc.interval_ms > 0;
    } else if (key == "unhealthy_interval") {
      ok = parseDurationMs(val, &hc.unhealthy_interval_ms) && hc.unhealthy_interval_ms > 0;
    } else if (key == "timeout") {
      ok = parseDurationMs(val, &hc.timeout_ms) && hc.timeout_ms > 0;
    } else if (key == "fails") {
      ok = intParam(v, "fails=", 1000, &hc.fails) && hc.fails > 0;
    } else if (key == "passes") {
      ok = intParam(v, "passes=", 1000, &hc.passes) && hc.passes > 0;
    } else if (key == "port") {
      ok = intParam(v, "port=", 65535, &hc.port) && hc.port > 0;
    } else if (key == "status") {
      ok = parseStatuses(val, &hc.statuses);
    }
    if (!ok) return invalidParameter(a, err);
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
    {"pool_conns", kUpstreamCtx, 1, 1, false, onUpstreamNumber<&UpstreamConf::pool_conns, parseCount>},
    {"pool_wait", kUpstreamCtx, 1, 1, false, onUpstreamNumber<&UpstreamConf::pool_wait_ms, parseDurationMs>},
    {"health_check", kUpstreamCtx, 0, kAnyArgs, false, onHealthCheck},
};

}  // namespace

bool HealthCheckConf::statusOk(int status) const {
  if (statuses.empty()) return status >= 200 && status <= 399;
  for (const auto& [lo, hi] : statuses) {
    if (status >= lo && status <= hi) return true;
  }
  return false;
}

void registerUpstreamDirectives() {
  registerDirectives(kUpstreamDirectives, sizeof(kUpstreamDirectives) / sizeof(kUpstreamDirectives[0]));
}

}  // namespace tidegate::conf
