// /upstreams routes: an upstream is the JSON object of upstream/upstream_json.h.
#include <strings.h>

#include "admin/routes.h"
#include "admin/state_store.h"
#include "core/log.h"
#include "upstream/upstream_json.h"

namespace tidegate::admin {
namespace {

using core::LogLevel;

// The index in spec["servers"] of the server named `id` ("host:port" as
// given, or one of its resolved addresses); npos if none.
size_t findServer(const json& spec, const std::string& id) {
  const json& servers = spec["servers"];
  for (size_t i = 0; i < servers.size(); i++) {
    const json& s = servers[i];
    std::string host = s.value("host", "");
    int port = s.value("port", 80);
    if (host + ":" + std::to_string(port) == id) return i;
    if (s.contains("addresses") && s["addresses"].is_array()) {
      for (const json& a : s["addresses"]) {
        if (a.is_string() && a.get<std::string>() == id) return i;
      }
    }
  }
  return std::string::npos;
}

// A name proxy_pass can say: 1-128 of letters, digits, '_', '-', '.', ':'.
bool validUpstreamName(const std::string& name) {
  if (name.empty() || name.size() > 128) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
              c == '.' || c == ':';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

std::string etagOf(uint64_t version) {
  std::string tag(1, '"');
  tag.append(std::to_string(version)).push_back('"');
  return tag;
}

bool ifMatchAllows(std::string_view if_match, bool exists, uint64_t version) {
  if (if_match.empty()) return true;
  if (if_match == "*") return exists;
  if (!exists) return false;
  std::string want = etagOf(version);
  size_t i = 0;
  while (i < if_match.size()) {
    size_t comma = if_match.find(',', i);
    if (comma == std::string_view::npos) comma = if_match.size();
    std::string_view tag = if_match.substr(i, comma - i);
    while (!tag.empty() && tag.front() == ' ') tag.remove_prefix(1);
    while (!tag.empty() && tag.back() == ' ') tag.remove_suffix(1);
    if (tag.rfind("W/", 0) == 0) tag.remove_prefix(2);
    if (tag == want) return true;
    i = comma + 1;
  }
  return false;
}

Reply UpstreamRoutes::handle(const AdminRequest& r) {
  const std::vector<std::string>& seg = r.segments;
  if (seg.size() == 1) return list();
  const std::string& name = seg[1];
  if (seg.size() == 2) {
    if (r.method == "GET") return get(name);
    if (r.method == "PUT") return put(r, name);
    if (r.method == "PATCH") return patch(r, name);
    return remove(r, name);
  }
  if (seg.size() == 3) return addServer(r, name);
  return changeServer(r, name, seg[3]);
}

bool UpstreamRoutes::current(const std::string& name, json* spec, uint64_t* version) {
  shm::UpstreamTable::Entry e;
  if (!table_.get(name, &e)) return false;
  *spec = json::parse(e.spec, nullptr, false);
  *version = e.version;
  return spec->is_object();
}

Reply UpstreamRoutes::list() {
  std::vector<shm::UpstreamTable::Entry> entries;
  uint64_t version = table_.list(&entries);
  json list = json::array();
  for (const shm::UpstreamTable::Entry& e : entries) {
    json spec = json::parse(e.spec, nullptr, false);
    if (spec.is_object()) {
      spec["version"] = e.version;
      list.push_back(std::move(spec));
    }
  }
  Reply reply;
  reply.body = json{{"version", version}, {"upstreams", list}};
  reply.headers.emplace_back("ETag", etagOf(version));
  return reply;
}

Reply UpstreamRoutes::get(const std::string& name) {
  json spec;
  uint64_t version = 0;
  if (!current(name, &spec, &version)) return errorReply(404, "no upstream \"" + name + "\"");
  Reply reply;
  spec["version"] = version;
  reply.body = std::move(spec);
  reply.headers.emplace_back("ETag", etagOf(version));
  return reply;
}

Reply UpstreamRoutes::put(const AdminRequest& r, const std::string& name) {
  json body;
  Reply err;
  if (!parseJsonBody(r, &body, &err)) return err;
  if (!body.is_object()) return errorReply(400, "the upstream must be a JSON object");
  if (body.contains("name") && !(body["name"].is_string() && strcasecmp(body["name"].get<std::string>().c_str(), name.c_str()) == 0)) {
    return errorReply(400, "the name differs from the one in the path", "name");
  }
  body.erase("version");  // as GET shows it: accepted back
  return write(r, name, std::move(body));
}

Reply UpstreamRoutes::patch(const AdminRequest& r, const std::string& name) {
  json body;
  Reply err;
  if (!parseJsonBody(r, &body, &err)) return err;
  if (!body.is_object()) return errorReply(400, "a patch must be a JSON object (RFC 7386 merge patch)");
  json spec;
  uint64_t version = 0;
  if (!current(name, &spec, &version)) return errorReply(404, "no upstream \"" + name + "\"");
  if (body.contains("name")) return errorReply(400, "an upstream cannot be renamed", "name");
  spec.merge_patch(body);
  return write(r, name, std::move(spec));
}

Reply UpstreamRoutes::addServer(const AdminRequest& r, const std::string& name) {
  json body;
  Reply err;
  if (!parseJsonBody(r, &body, &err)) return err;
  if (!body.is_object()) return errorReply(400, "a server must be a JSON object");
  json spec;
  uint64_t version = 0;
  if (!current(name, &spec, &version)) return errorReply(404, "no upstream \"" + name + "\"");
  if (!spec.contains("servers") || !spec["servers"].is_array()) spec["servers"] = json::array();
  std::string id = body.value("host", "") + ":" + std::to_string(body.value("port", 80));
  if (body.contains("host") && body["host"].is_string() && findServer(spec, id) != std::string::npos) {
    return errorReply(409, "server \"" + id + "\" exists in upstream \"" + name + "\"", "host");
  }
  spec["servers"].push_back(std::move(body));
  return write(r, name, std::move(spec));
}

Reply UpstreamRoutes::changeServer(const AdminRequest& r, const std::string& name, const std::string& server) {
  json spec;
  uint64_t version = 0;
  if (!current(name, &spec, &version)) return errorReply(404, "no upstream \"" + name + "\"");
  size_t i = spec.contains("servers") && spec["servers"].is_array() ? findServer(spec, server) : std::string::npos;
  if (i == std::string::npos) return errorReply(404, "no server \"" + server + "\" in upstream \"" + name + "\"");
  if (r.method == "DELETE") {
    spec["servers"].erase(i);
    return write(r, name, std::move(spec));
  }
  json body;
  Reply err;
  if (!parseJsonBody(r, &body, &err)) return err;
  if (!body.is_object()) return errorReply(400, "a patch must be a JSON object (RFC 7386 merge patch)");
  for (const char* fixed : {"host", "port", "addresses"}) {
    if (body.contains(fixed)) {
      return errorReply(400, "a server's identity cannot change (remove it and add another)", fixed);
    }
  }
  spec["servers"][i].merge_patch(body);
  return write(r, name, std::move(spec));
}

Reply UpstreamRoutes::write(const AdminRequest& r, const std::string& name, json spec) {
  if (!validUpstreamName(name)) {
    return errorReply(400, "invalid upstream name \"" + name + "\" (letters, digits, _ - . :)", "name");
  }
  spec["name"] = name;
  spec["origin"] = "api";
  spec.erase("version");
  conf::UpstreamConf u;
  std::string origin, why, field;
  if (!upstream::upstreamFromJson(spec.dump(), &u, &origin, &cfg_.http.variables, &why, &field)) {
    return errorReply(400, why, field);
  }
  u.name = name;
  std::string canonical = upstream::upstreamToJson(u, "api");

  StateStore store(cfg_.http.admin.state_dir);
  std::string err;
  StateStore::Lock lock(store, &err);
  if (!lock.ok()) return errorReply(500, "cannot lock the state directory: " + err);
  shm::UpstreamTable::Entry before;
  bool existed = table_.get(name, &before);
  if (!ifMatchAllows(r.if_match, existed, before.version)) {
    return errorReply(409, "the upstream changed (If-Match does not match its ETag)");
  }
  if (!table_.put(name, canonical, &err)) return errorReply(500, err);
  if (!store.saveUpstreams(table_, &err)) {
    // Not persisted: not applied either.
    std::string ignored;
    if (existed) table_.put(before.name, before.spec, &ignored);
    else table_.remove(name);
    TG_LOG(LogLevel::kError, "admin: upstream \"%s\" not changed: %s", name.c_str(), err.c_str());
    return errorReply(500, "cannot persist the change: " + err);
  }
  shm::UpstreamTable::Entry after;
  table_.get(name, &after);
  TG_LOG(LogLevel::kNotice, "admin: upstream \"%s\" %s (version %llu)", name.c_str(), existed ? "changed" : "created",
         static_cast<unsigned long long>(after.version));
  Reply reply;
  reply.status = existed ? 200 : 201;
  reply.body = json::parse(after.spec, nullptr, false);
  reply.body["version"] = after.version;
  reply.headers.emplace_back("ETag", etagOf(after.version));
  return reply;
}

Reply UpstreamRoutes::remove(const AdminRequest& r, const std::string& name) {
  StateStore store(cfg_.http.admin.state_dir);
  std::string err;
  StateStore::Lock lock(store, &err);
  if (!lock.ok()) return errorReply(500, "cannot lock the state directory: " + err);
  shm::UpstreamTable::Entry before;
  if (!table_.get(name, &before)) return errorReply(404, "no upstream \"" + name + "\"");
  if (!ifMatchAllows(r.if_match, true, before.version)) {
    return errorReply(409, "the upstream changed (If-Match does not match its ETag)");
  }
  // An upstream of the conf comes back as the conf defines it: runtime
  // state wins over the conf only until it is deleted.
  const conf::UpstreamConf* from_conf = nullptr;
  for (const auto& u : cfg_.http.upstreams) {
    if (strcasecmp(u->name.c_str(), name.c_str()) == 0) from_conf = u.get();
  }
  json spec = json::parse(before.spec, nullptr, false);
  bool is_conf = spec.is_object() && spec.value("origin", "") == "conf";
  if (is_conf) return errorReply(409, "upstream \"" + name + "\" is defined in the conf; remove it there");
  if (from_conf) {
    if (!table_.put(name, upstream::upstreamToJson(*from_conf, "conf"), &err)) return errorReply(500, err);
  } else {
    table_.remove(name);
  }
  if (!store.saveUpstreams(table_, &err)) {
    std::string ignored;
    table_.put(before.name, before.spec, &ignored);
    return errorReply(500, "cannot persist the change: " + err);
  }
  TG_LOG(LogLevel::kNotice, "admin: upstream \"%s\" deleted%s", name.c_str(), from_conf ? " (the conf's is back)" : "");
  Reply reply;
  reply.body = json{{"deleted", name}, {"restored_from_conf", from_conf != nullptr}};
  return reply;
}

}  // namespace tidegate::admin
