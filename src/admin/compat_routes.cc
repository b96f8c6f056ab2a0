// tengine dyups and Slardar routes (see routes.h).
#include <time.h>

#include "admin/routes.h"
#include "conf/directives.h"
#include "conf/resolve.h"

namespace tidegate::admin {
namespace {

Reply textReply(int status, std::string text) {
  Reply r;
  r.status = status;
  r.is_text = true;
  r.text = std::move(text);
  return r;
}

// "server 10.0.0.1:80 weight=1 max_conns=0 max_fails=1 fail_timeout=10 backup=0 down=0\n" per server, as dyups prints.
std::string dyupsServers(const json& spec) {
  std::string out;
  if (!spec.contains("servers") || !spec["servers"].is_array()) return out;
  for (const json& s : spec["servers"]) {
    double ft = s.value("fail_timeout", 10.0);
    out += "server " + s.value("host", "") + ":" + std::to_string(s.value("port", 80)) +
           " weight=" + std::to_string(s.value("weight", 1)) + " max_conns=0 max_fails=" +
           std::to_string(s.value("max_fails", 1)) + " fail_timeout=" + std::to_string(static_cast<long>(ft)) +
           " backup=" + (s.value("backup", false) ? "1" : "0") + " down=" + (s.value("down", false) ? "1" : "0") + "\n";
  }
  return out;
}

// Splits on whitespace.
std::vector<std::string> words(std::string_view s) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && isspace(static_cast<unsigned char>(s[i]))) i++;
    size_t start = i;
    while (i < s.size() && !isspace(static_cast<unsigned char>(s[i]))) i++;
    if (i > start) out.emplace_back(s.substr(start, i - start));
  }
  return out;
}

bool dyupsServer(const std::vector<std::string>& w, json* server, std::string* err) {
  if (w.size() < 2) {
    *err = "server needs an address";
    return false;
  }
  conf::HostPort hp;
  if (const char* bad = conf::parseHostPort(w[1], &hp)) {
    *err = std::string(bad) + " in \"" + w[1] + "\"";
    return false;
  }
  json s{{"host", hp.host}, {"port", hp.port}};
  for (size_t i = 2; i < w.size(); i++) {
    const std::string& a = w[i];
    size_t eq = a.find('=');
    std::string key = a.substr(0, eq);
    std::string val = eq == std::string::npos ? "" : a.substr(eq + 1);
    int64_t n = 0;
    uint64_t ms = 0;
    if ((key == "weight" || key == "max_fails" || key == "tier") && conf::parseInt(val, &n)) {
      s[key] = n;
    } else if (key == "fail_timeout" && conf::parseDurationMs(val, &ms)) {
      s[key] = static_cast<double>(ms) / 1000.0;
    } else if (key == "max_conns" && conf::parseInt(val, &n)) {
      // dyups prints it; tidegate does not cap connections per server.
    } else if (a == "backup" || a == "down") {
      s[a] = true;
    } else {
      *err = "invalid parameter \"" + a + "\"";
      return false;
    }
  }
  *server = std::move(s);
  return true;
}

}  // namespace

bool parseDyupsText(std::string_view text, json* spec, std::string* err) {
  *spec = json{{"servers", json::array()}};
  size_t i = 0;
  while (i < text.size()) {
    size_t semi = text.find(';', i);
    if (semi == std::string_view::npos) semi = text.size();
    std::vector<std::string> w = words(text.substr(i, semi - i));
    i = semi + 1;
    if (w.empty()) continue;
    if (w[0] == "server") {
      json server;
      if (!dyupsServer(w, &server, err)) return false;
      (*spec)["servers"].push_back(std::move(server));
    } else if (w[0] == "keepalive" && w.size() == 2) {
      int64_t n = 0;
      if (!conf::parseInt(w[1], &n) || n < 0) {
        *err = "invalid keepalive \"" + w[1] + "\"";
        return false;
      }
      (*spec)["keepalive"] = n;
    } else if (w[0] == "least_conn" && w.size() == 1) {
      (*spec)["balancer"] = json{{"type", "least_conn"}};
    } else if (w[0] == "ip_hash" && w.size() == 1) {
      (*spec)["balancer"] = json{{"type", "chash"}, {"key", "$remote_addr"}};
    } else if (w[0] == "hash" && (w.size() == 2 || (w.size() == 3 && w[2] == "consistent"))) {
      (*spec)["balancer"] = json{{"type", "chash"}, {"key", w[1]}};
    } else {
      *err = "unknown directive \"" + w[0] + "\"";
      return false;
    }
  }
  if ((*spec)["servers"].empty()) {
    *err = "no servers";
    return false;
  }
  return true;
}

Reply CompatRoutes::handle(const AdminRequest& r) {
  const std::string& first = r.segments[0];
  if (first == "list") return list();
  if (first == "detail") return detail();
  if (first == "status") return status();
  const std::string& name = r.segments[1];
  if (r.method == "GET") return show(name);
  if (r.method == "POST") return post(r, name);
  Reply removed = upstreams_.remove(r, name);
  if (removed.status != 200) return textReply(removed.status, removed.body.value("error", "") + "\n");
  return textReply(200, "success");
}

Reply CompatRoutes::list() {
  std::vector<shm::UpstreamTable::Entry> entries;
  table_.list(&entries);
  std::string out;
  for (const auto& e : entries) out += e.name + "\n";
  return textReply(out.empty() ? 204 : 200, out);
}

Reply CompatRoutes::detail() {
  std::vector<shm::UpstreamTable::Entry> entries;
  table_.list(&entries);
  std::string out;
  for (const auto& e : entries) {
    out += e.name + "\n" + dyupsServers(json::parse(e.spec, nullptr, false)) + "\n";
  }
  return textReply(out.empty() ? 204 : 200, out);
}

Reply CompatRoutes::show(const std::string& name) {
  shm::UpstreamTable::Entry e;
  if (!table_.get(name, &e)) return textReply(404, "no upstream \"" + name + "\"\n");
  return textReply(200, dyupsServers(json::parse(e.spec, nullptr, false)));
}

Reply CompatRoutes::post(const AdminRequest& r, const std::string& name) {
  std::string_view body = r.body;
  while (!body.empty() && isspace(static_cast<unsigned char>(body.front()))) body.remove_prefix(1);
  json spec;
  if (!body.empty() && body.front() == '{') {
    // Slardar's JSON: the same object as PUT /upstreams/{name}.
    AdminRequest as_json = r;
    as_json.content_type = "application/json";
    Reply err;
    if (!parseJsonBody(as_json, &spec, &err)) return textReply(err.status, err.body.value("error", "") + "\n");
    if (!spec.is_object()) return textReply(400, "the upstream must be a JSON object\n");
  } else {
    std::string err;
    if (!parseDyupsText(body, &spec, &err)) return textReply(400, err + "\n");
  }
  Reply written = upstreams_.write(r, name, std::move(spec));
  if (written.status >= 300) {
    std::string why = written.body.value("error", "");
    return textReply(written.status, why + "\n");
  }
  return textReply(200, "success");
}

Reply CompatRoutes::status() {
  std::vector<shm::UpstreamTable::Entry> entries;
  uint64_t version = table_.list(&entries);
  json out = json::object();
  std::vector<std::string> ids;
  std::vector<shm::ServerHealth> health;
  int64_t now = table_.nowMs();
  for (const auto& e : entries) {
    json spec = json::parse(e.spec, nullptr, false);
    json servers = json::array();
    if (spec.is_object() && spec.contains("servers")) {
      ids.clear();
      std::vector<const json*> owner;
      for (const json& s : spec["servers"]) {
        for (const json& a : s.value("addresses", json::array())) {
          ids.push_back(a.get<std::string>());
          owner.push_back(&s);
        }
      }
      table_.health(e.name, ids, &health);
      for (size_t i = 0; i < ids.size(); i++) {
        const shm::ServerHealth& h = health[i];
        json history = json::array();
        for (const auto& t : h.history) {
          history.push_back(json{{"time", localTimeText(t.at_ms)}, {"status", t.healthy ? "ok" : "err"}, {"reason", t.reason}});
        }
        servers.push_back(json{{"server", ids[i]},
                               {"host", owner[i]->value("host", "")},
                               {"status", h.status(owner[i]->value("down", false), now)},
                               {"msg", h.last_error.empty() ? json(nullptr) : json(h.last_error)},
                               {"lastmodified", h.last_change_ms ? json(localTimeText(h.last_change_ms)) : json(nullptr)},
                               {"fail_num", h.fail_num},
                               {"history", history}});
      }
    }
    out["cls:" + e.name] = std::move(servers);
  }
  out["version"] = version;
  pid_t checker = table_.checker();
  out["checker_pid"] = checker ? json(checker) : json(nullptr);
  Reply r;
  r.body = std::move(out);
  return r;
}

}  // namespace tidegate::admin
