// The admin API's inside: a request as the routes see it, their reply, the
// route table, and the JSON body rules every write shares.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "conf/config.h"
#include "shm/upstream_table.h"

namespace tidegate::lua {
class Vm;
}

namespace tidegate::admin {

using nlohmann::json;

// JSON bodies: at most this many bytes (413) and this much nesting (400),
// both checked before parsing.
constexpr size_t kMaxJsonBody = 1u << 20;
constexpr int kMaxJsonDepth = 32;

struct AdminRequest {
  std::string_view method;
  std::vector<std::string> segments;  // the path split on '/', empty ones dropped
  std::string_view body;
  std::string_view content_type;
  std::string_view if_match;  // "" when absent
  std::string_view query;     // the raw query string
};

struct Reply {
  int status = 200;
  json body;
  // The tengine dyups routes answer text/plain: `text` is sent instead of
  // `body` when is_text.
  bool is_text = false;
  std::string text;
  std::vector<std::pair<std::string, std::string>> headers;
};

Reply errorReply(int status, std::string message, std::string field = {});
// "2026-11-29 23:59:01" in local time, as ngx.localtime() prints; "" for 0.
std::string localTimeText(int64_t wall_ms);

// A version as an ETag: "N".
std::string etagOf(uint64_t version);
// If-Match: absent, "*" (any current version) or one of the listed ETags;
// `exists` false when there is no current version.
bool ifMatchAllows(std::string_view if_match, bool exists, uint64_t version);

// Reads a JSON body: 415 unless the Content-Type is application/json (or
// absent), 413 above kMaxJsonBody, 400 for nesting deeper than
// kMaxJsonDepth or malformed JSON. False with *err set.
bool parseJsonBody(const AdminRequest& r, json* out, Reply* err);

// One route: a path pattern ("*" matches one segment) and its methods.
struct Route {
  std::vector<std::string_view> pattern;
  std::vector<std::string_view> methods;
};
// Every route, for routing and for tests that walk them.
const std::vector<Route>& routes();

// The upstream routes: /upstreams[/{name}[/servers[/{host:port}]]].
class UpstreamRoutes {
 public:
  UpstreamRoutes(const conf::Config& cfg, shm::UpstreamTable& table) : cfg_(cfg), table_(table) {}
  Reply handle(const AdminRequest& r);

  // Validates `spec` (the whole upstream object), then under the state
  // lock checks If-Match against the current version, publishes it and
  // persists it (undoing the publish if that fails). 201 for a new
  // upstream, else 200, with the stored object and its ETag.
  Reply write(const AdminRequest& r, const std::string& name, json spec);
  Reply remove(const AdminRequest& r, const std::string& name);

 private:
  Reply list();
  Reply get(const std::string& name);
  Reply put(const AdminRequest& r, const std::string& name);
  Reply patch(const AdminRequest& r, const std::string& name);
  Reply addServer(const AdminRequest& r, const std::string& name);
  Reply changeServer(const AdminRequest& r, const std::string& name, const std::string& server);
  // The current spec of `name` as JSON; false if there is none.
  bool current(const std::string& name, json* spec, uint64_t* version);

  const conf::Config& cfg_;
  shm::UpstreamTable& table_;
};

// Routes for people coming from tengine's dyups (GET /list, GET /detail,
// GET|POST|DELETE /upstream/{name} with text bodies) and from Slardar
// (POST /upstream/{name} with JSON, GET /status). Writes go through
// UpstreamRoutes::write, with the same validation and persistence.
class CompatRoutes {
 public:
  CompatRoutes(shm::UpstreamTable& table, UpstreamRoutes& upstreams) : table_(table), upstreams_(upstreams) {}
  Reply handle(const AdminRequest& r);

 private:
  Reply list();
  Reply detail();
  Reply show(const std::string& name);
  Reply post(const AdminRequest& r, const std::string& name);
  Reply status();

  shm::UpstreamTable& table_;
  UpstreamRoutes& upstreams_;
};

// Pushed Lua modules: /lua[/{module}[/versions|/rollback]], and sandboxed
// functions: /functions[/{name}[/versions|/rollback]] (lua/module_store.h,
// `kind` says which).
class LuaRoutes {
 public:
  // `vm`: this worker's VM, where a push is tried before it is kept (null:
  // no Lua, pushes are refused).
  LuaRoutes(const conf::Config& cfg, shm::UpstreamTable& table, lua::Vm* vm, const char* kind)
      : cfg_(cfg), table_(table), vm_(vm), kind_(kind) {}
  Reply handle(const AdminRequest& r);

 private:
  bool functions() const { return std::string_view(kind_) == "functions"; }
  std::string noun() const { return functions() ? "function" : "module"; }
  Reply store(const std::string& name, const std::string& src);
  Reply list();
  Reply source(const std::string& name);
  Reply versions(const std::string& name);
  Reply push(const AdminRequest& r, const std::string& name);
  Reply rollback(const AdminRequest& r, const std::string& name);
  Reply remove(const std::string& name);

  const conf::Config& cfg_;
  shm::UpstreamTable& table_;
  lua::Vm* vm_;
  const char* kind_;
};

// Certificates by server name: /ssl[/{name}] (tls/cert_store.h). Every
// change is persisted (the PEMs, then the index that names them) before
// the answer, then announced to the workers through the table's
// certificate counter.
class SslRoutes {
 public:
  SslRoutes(const conf::Config& cfg, shm::UpstreamTable& table) : cfg_(cfg), table_(table) {}
  Reply handle(const AdminRequest& r);

 private:
  Reply list();
  Reply get(const std::string& name);
  Reply put(const AdminRequest& r, const std::string& name);
  Reply remove(const AdminRequest& r, const std::string& name);

  const conf::Config& cfg_;
  shm::UpstreamTable& table_;
};

// dyups's body ("server 127.0.0.1:8089 weight=2;server 127.0.0.1:8088;",
// plus keepalive N; least_conn; ip_hash; hash KEY [consistent];) as an
// upstream object. False with *err.
bool parseDyupsText(std::string_view text, json* spec, std::string* err);

}  // namespace tidegate::admin
