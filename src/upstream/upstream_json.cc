#include "upstream/upstream_json.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "conf/directives.h"
#include "conf/resolve.h"

namespace tidegate::upstream {
namespace {

using nlohmann::json;

double seconds(uint64_t ms) { return static_cast<double>(ms) / 1000.0; }

json healthCheckJson(const conf::HealthCheckConf& hc) {
  json status = json::array();
  if (hc.statuses.empty()) status.push_back("200-399");
  for (const auto& [lo, hi] : hc.statuses) {
    status.push_back(lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi));
  }
  return json{{"type", hc.tcp ? "tcp" : "http"},
              {"uri", hc.uri},
              {"host", hc.host},
              {"interval", seconds(hc.interval_ms)},
              {"unhealthy_interval", seconds(hc.unhealthy_interval_ms ? hc.unhealthy_interval_ms : hc.interval_ms)},
              {"timeout", seconds(hc.timeout_ms)},
              {"fails", hc.fails},
              {"passes", hc.passes},
              {"status", status},
              {"port", hc.port}};
}

// Reads one object's fields, reporting the first problem with its path.
class Reader {
 public:
  Reader(const json& obj, std::string path, std::string* err, std::string* field)
      : obj_(obj), path_(std::move(path)), err_(err), field_(field) {}

  bool isObject() {
    if (obj_.is_object()) return true;
    return fail("", "must be an object");
  }
  // Every key must be one of `known`.
  bool onlyKnown(std::initializer_list<std::string_view> known) {
    for (const auto& [k, v] : obj_.items()) {
      bool ok = false;
      for (std::string_view n : known) ok = ok || k == n;
      if (!ok) return fail(k, "unknown field");
    }
    return true;
  }
  bool has(const char* key) const { return obj_.contains(key); }
  const json& at(const char* key) const { return obj_.at(key); }
  std::string path(const char* key) const { return path_.empty() ? key : path_ + "." + key; }

  bool str(const char* key, std::string* out) {
    if (!has(key)) return true;
    if (!at(key).is_string()) return fail(key, "must be a string");
    *out = at(key).get<std::string>();
    return true;
  }
  bool boolean(const char* key, bool* out) {
    if (!has(key)) return true;
    if (!at(key).is_boolean()) return fail(key, "must be true or false");
    *out = at(key).get<bool>();
    return true;
  }
  bool integer(const char* key, int64_t lo, int64_t hi, int64_t* out) {
    if (!has(key)) return true;
    const json& v = at(key);
    if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi) {
      return fail(key, "must be an integer from " + std::to_string(lo) + " to " + std::to_string(hi));
    }
    *out = v.get<int64_t>();
    return true;
  }
  template <typename T>
  bool integer(const char* key, int64_t lo, int64_t hi, T* out) {
    int64_t v = static_cast<int64_t>(*out);
    if (!integer(key, lo, hi, &v)) return false;
    *out = static_cast<T>(v);
    return true;
  }
  // Seconds as a number, or a conf-style duration string ("500ms", "10s").
  bool duration(const char* key, uint64_t* out_ms) {
    if (!has(key)) return true;
    const json& v = at(key);
    if (v.is_number() && v.get<double>() >= 0 && v.get<double>() < 1e9) {
      *out_ms = static_cast<uint64_t>(std::llround(v.get<double>() * 1000.0));
      return true;
    }
    if (v.is_string() && conf::parseDurationMs(v.get<std::string>(), out_ms)) return true;
    return fail(key, "must be seconds or a duration such as \"10s\"");
  }

  bool fail(std::string_view key, const std::string& why) {
    *field_ = key.empty() ? path_ : path(std::string(key).c_str());
    *err_ = field_->empty() ? why : *field_ + ": " + why;
    return false;
  }

 private:
  const json& obj_;
  std::string path_;
  std::string* err_;
  std::string* field_;
};

bool readServer(const json& j, const std::string& path, conf::UpstreamServer* s, std::string* err,
                std::string* field) {
  Reader r(j, path, err, field);
  if (!r.isObject() || !r.onlyKnown({"host", "port", "addresses", "weight", "max_fails", "fail_timeout", "backup",
                                     "down", "tier"})) {
    return false;
  }
  if (!r.has("host")) return r.fail("host", "is required");
  if (!r.str("host", &s->host)) return false;
  if (s->host.empty() || s->host.find_first_of(" /\r\n") != std::string::npos) return r.fail("host", "invalid host");
  if (!r.integer("port", 1, 65535, &s->port) || !r.integer("weight", 1, 1000000, &s->weight) ||
      !r.integer("max_fails", 0, 1000000, &s->max_fails) || !r.duration("fail_timeout", &s->fail_timeout_ms) ||
      !r.boolean("backup", &s->backup) || !r.boolean("down", &s->down) || !r.integer("tier", 0, 100, &s->tier)) {
    return false;
  }
  if (s->backup && !r.has("tier")) s->tier = 1;
  if (r.has("addresses")) {
    const json& a = r.at("addresses");
    if (!a.is_array()) return r.fail("addresses", "must be an array of \"ip:port\"");
    for (const json& x : a) {
      if (!x.is_string()) return r.fail("addresses", "must be an array of \"ip:port\"");
      s->addresses.push_back(x.get<std::string>());
    }
  } else if (!conf::resolveHost(s->host, s->port, &s->addresses)) {
    return r.fail("host", "host not found");
  }
  return true;
}

bool readHealthCheck(const json& j, conf::HealthCheckConf* hc, std::string* err, std::string* field) {
  Reader r(j, "health_check", err, field);
  if (!r.isObject() || !r.onlyKnown({"type", "uri", "host", "interval", "unhealthy_interval", "timeout", "fails",
                                     "passes", "status", "port"})) {
    return false;
  }
  hc->enabled = true;
  std::string type = "http";
  if (!r.str("type", &type) || !r.str("uri", &hc->uri) || !r.str("host", &hc->host) ||
      !r.duration("interval", &hc->interval_ms) || !r.duration("unhealthy_interval", &hc->unhealthy_interval_ms) ||
      !r.duration("timeout", &hc->timeout_ms) || !r.integer("fails", 1, 1000, &hc->fails) ||
      !r.integer("passes", 1, 1000, &hc->passes) || !r.integer("port", 0, 65535, &hc->port)) {
    return false;
  }
  if (type != "http" && type != "tcp") return r.fail("type", "must be \"http\" or \"tcp\"");
  hc->tcp = type == "tcp";
  if (hc->uri.empty() || hc->uri[0] != '/' || hc->uri.find_first_of(" \r\n") != std::string::npos) {
    return r.fail("uri", "must be a path starting with /");
  }
  if (hc->host.find_first_of(" \r\n") != std::string::npos) return r.fail("host", "invalid host");
  if (hc->interval_ms == 0) return r.fail("interval", "must be above 0");
  if (hc->timeout_ms == 0) return r.fail("timeout", "must be above 0");
  if (r.has("status")) {
    const json& st = r.at("status");
    if (!st.is_array()) return r.fail("status", "must be an array such as [\"200-399\", 404]");
    for (const json& x : st) {
      int lo = 0, hi = 0;
      if (x.is_number_integer()) {
        lo = hi = x.get<int>();
      } else if (x.is_string()) {
        std::string t = x.get<std::string>();
        size_t dash = t.find('-');
        int64_t a = 0, b = 0;
        if (!conf::parseInt(std::string_view(t).substr(0, dash), &a)) a = -1;
        b = a;
        if (dash != std::string::npos && !conf::parseInt(std::string_view(t).substr(dash + 1), &b)) b = -1;
        lo = static_cast<int>(a);
        hi = static_cast<int>(b);
      }
      if (lo < 100 || hi > 599 || lo > hi) return r.fail("status", "must be statuses or ranges within 100-599");
      hc->statuses.emplace_back(lo, hi);
    }
  }
  return true;
}

}  // namespace

std::string upstreamToJson(const conf::UpstreamConf& u, std::string_view origin) {
  json servers = json::array();
  for (const conf::UpstreamServer& s : u.servers) {
    servers.push_back(json{{"host", s.host},
                           {"port", s.port},
                           {"addresses", s.addresses},
                           {"weight", s.weight},
                           {"max_fails", s.max_fails},
                           {"fail_timeout", seconds(s.fail_timeout_ms)},
                           {"backup", s.backup},
                           {"down", s.down},
                           {"tier", s.tier}});
  }
  json balancer{{"type", u.balancer}, {"fail_open", u.fail_open}, {"tier_min_healthy", u.tier_min_healthy}};
  if (u.hash_key) balancer["key"] = u.hash_key->raw;
  if (!u.balancer_module.empty()) balancer["module"] = u.balancer_module;
  json j{{"name", u.name},
         {"origin", origin},
         {"servers", servers},
         {"balancer", balancer},
         {"keepalive", u.keepalive},
         {"keepalive_timeout", seconds(u.keepalive_timeout_ms)},
         {"keepalive_requests", u.keepalive_requests},
         {"pool_conns", u.pool_conns},
         {"pool_wait", seconds(u.pool_wait_ms)}};
  if (u.health_check.enabled) j["health_check"] = healthCheckJson(u.health_check);
  return j.dump();
}

bool upstreamFromJson(std::string_view text, conf::UpstreamConf* out, std::string* origin,
                      const conf::UserVariables* vars, std::string* err, std::string* field) {
  field->clear();
  json j = json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded()) {
    *err = "malformed JSON";
    return false;
  }
  Reader r(j, "", err, field);
  if (!r.isObject() || !r.onlyKnown({"name", "origin", "servers", "balancer", "keepalive", "keepalive_timeout",
                                     "keepalive_requests", "pool_conns", "pool_wait", "health_check"})) {
    return false;
  }
  if (!r.str("name", &out->name) || !r.str("origin", origin) || !r.integer("keepalive", 0, 1000000, &out->keepalive) ||
      !r.duration("keepalive_timeout", &out->keepalive_timeout_ms) ||
      !r.integer("keepalive_requests", 0, 100000000, &out->keepalive_requests) ||
      !r.integer("pool_conns", 0, 1000000, &out->pool_conns) || !r.duration("pool_wait", &out->pool_wait_ms)) {
    return false;
  }
  if (r.has("servers")) {
    const json& list = r.at("servers");
    if (!list.is_array()) return r.fail("servers", "must be an array");
    for (size_t i = 0; i < list.size(); i++) {
      conf::UpstreamServer s;
      std::string path = "servers[" + std::to_string(i) + "]";
      if (!readServer(list[i], path, &s, err, field)) return false;
      for (const conf::UpstreamServer& other : out->servers) {
        if (other.id() == s.id()) {
          *field = path;
          *err = path + ": duplicate server \"" + s.id() + "\"";
          return false;
        }
      }
      out->servers.push_back(std::move(s));
    }
  }
  if (r.has("balancer")) {
    Reader b(r.at("balancer"), "balancer", err, field);
    if (!b.isObject() || !b.onlyKnown({"type", "key", "module", "fail_open", "tier_min_healthy"})) return false;
    if (!b.str("type", &out->balancer) || !b.boolean("fail_open", &out->fail_open) ||
        !b.integer("tier_min_healthy", 0, 100, &out->tier_min_healthy)) {
      return false;
    }
    const std::string& t = out->balancer;
    if (t != "round_robin" && t != "chash" && t != "least_conn" && t != "ewma" && t != "lua") {
      return b.fail("type", "must be round_robin, chash, least_conn, ewma or lua");
    }
    if (!b.str("module", &out->balancer_module)) return false;
    if (t == "lua" && out->balancer_module.empty()) return b.fail("module", "is required for lua");
    if (t != "lua" && !out->balancer_module.empty()) return b.fail("module", "is only for lua");
    std::string key;
    if (!b.str("key", &key)) return false;
    if (t == "chash" && key.empty()) return b.fail("key", "is required for chash");
    if (!key.empty()) {
      conf::ComplexValue cv;
      std::string why;
      if (!conf::compileComplexValue(key, &cv, &why, vars)) return b.fail("key", why);
      out->hash_key = std::move(cv);
    }
    out->balancer_set = true;
  }
  if (r.has("health_check") && !r.at("health_check").is_null()) {
    if (!readHealthCheck(r.at("health_check"), &out->health_check, err, field)) return false;
  }
  return true;
}

}  // namespace tidegate::upstream
