#include "upstream/publish.h"

#include <strings.h>

#include <nlohmann/json.hpp>

#include "upstream/upstream_json.h"

namespace tidegate::upstream {

namespace {

bool fromConf(const std::string& spec) {
  nlohmann::json j = nlohmann::json::parse(spec, nullptr, false);
  return j.is_object() && j.value("origin", "") == "conf";
}

}  // namespace

bool publishConfUpstreams(const conf::Config& cfg, shm::UpstreamTable& table, std::string* err) {
  for (const auto& u : cfg.http.upstreams) {
    // One changed at runtime (the admin API) wins over the conf's.
    shm::UpstreamTable::Entry e;
    if (table.get(u->name, &e) && !fromConf(e.spec)) continue;
    if (!table.put(u->name, upstreamToJson(*u, "conf"), err)) {
      *err = "upstream \"" + u->name + "\": " + *err;
      return false;
    }
  }
  std::vector<shm::UpstreamTable::Entry> entries;
  table.list(&entries);
  for (const shm::UpstreamTable::Entry& e : entries) {
    bool in_conf = false;
    for (const auto& u : cfg.http.upstreams) in_conf = in_conf || strcasecmp(u->name.c_str(), e.name.c_str()) == 0;
    if (in_conf) continue;
    if (fromConf(e.spec)) table.remove(e.name);
  }
  return true;
}

}  // namespace tidegate::upstream
