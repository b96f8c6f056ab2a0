#include "admin/admin_api.h"

#include <time.h>

#include "admin/routes.h"
#include "core/log.h"
#include "http/request.h"
#include "lua/module_store.h"

namespace tidegate::admin {
namespace {

bool matches(const Route& route, const std::vector<std::string>& segments) {
  if (route.pattern.size() != segments.size()) return false;
  for (size_t i = 0; i < segments.size(); i++) {
    if (route.pattern[i] != "*" && route.pattern[i] != segments[i]) return false;
  }
  return true;
}

std::vector<std::string> splitPath(std::string_view path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < path.size()) {
    size_t slash = path.find('/', i);
    if (slash == std::string_view::npos) slash = path.size();
    if (slash > i) out.emplace_back(path.substr(i, slash - i));
    i = slash + 1;
  }
  return out;
}

// The token from "Authorization: Bearer T" or "X-API-KEY: T".
std::string_view presentedToken(const http::Request& r) {
  std::string_view auth = r.header("authorization");
  if (auth.size() > 7 && strncasecmp(auth.data(), "bearer ", 7) == 0) {
    std::string_view t = auth.substr(7);
    while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
    return t;
  }
  return r.header("x-api-key");
}

// Nesting depth of `text` (arrays and objects), outside strings; stops
// counting past `limit`.
int jsonDepth(std::string_view text, int limit) {
  int depth = 0, max = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '{' || c == '[') {
      if (++depth > max) max = depth;
      if (max > limit) return max;
    } else if (c == '}' || c == ']') {
      depth--;
    }
  }
  return max;
}

}  // namespace

bool tokenMatches(std::string_view given, std::string_view token) {
  // Every byte of the token is looked at whatever `given` holds.
  unsigned char diff = given.size() == token.size() ? 0 : 1;
  for (size_t i = 0; i < token.size(); i++) {
    unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff |= static_cast<unsigned char>(g ^ static_cast<unsigned char>(token[i]));
  }
  return diff == 0 && !token.empty();
}

std::string localTimeText(int64_t wall_ms) {
  if (wall_ms == 0) return {};
  time_t t = static_cast<time_t>(wall_ms / 1000);
  struct tm tm;
  localtime_r(&t, &tm);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

Reply errorReply(int status, std::string message, std::string field) {
  Reply r;
  r.status = status;
  r.body = json{{"error", std::move(message)}};
  if (!field.empty()) r.body["field"] = std::move(field);
  return r;
}

bool parseJsonBody(const AdminRequest& r, json* out, Reply* err) {
  std::string_view type = r.content_type;
  size_t semi = type.find(';');
  if (semi != std::string_view::npos) type = type.substr(0, semi);
  while (!type.empty() && type.back() == ' ') type.remove_suffix(1);
  if (!type.empty() && !(type.size() == 16 && strncasecmp(type.data(), "application/json", 16) == 0)) {
    *err = errorReply(415, "the body must be JSON (Content-Type: application/json)");
    return false;
  }
  if (r.body.size() > kMaxJsonBody) {
    *err = errorReply(413, "the body is larger than " + std::to_string(kMaxJsonBody) + " bytes");
    return false;
  }
  if (jsonDepth(r.body, kMaxJsonDepth) > kMaxJsonDepth) {
    *err = errorReply(400, "JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    return false;
  }
  *out = json::parse(r.body.begin(), r.body.end(), nullptr, false);
  if (out->is_discarded()) {
    *err = errorReply(400, r.body.empty() ? "a JSON body is required" : "malformed JSON");
    return false;
  }
  return true;
}

const std::vector<Route>& routes() {
  static const std::vector<Route> kRoutes = {
      {{"upstreams"}, {"GET"}},
      {{"upstreams", "*"}, {"GET", "PUT", "PATCH", "DELETE"}},
      {{"upstreams", "*", "servers"}, {"POST"}},
      {{"upstreams", "*", "servers", "*"}, {"PATCH", "DELETE"}},
      {{"status"}, {"GET"}},
      {{"config"}, {"GET"}},
      {{"lua"}, {"GET"}},
      {{"lua", "*"}, {"GET", "PUT", "DELETE"}},
      {{"lua", "*", "versions"}, {"GET"}},
      {{"lua", "*", "rollback"}, {"POST"}},
      {{"functions"}, {"GET"}},
      {{"functions", "*"}, {"GET", "PUT", "DELETE"}},
      {{"functions", "*", "versions"}, {"GET"}},
      {{"functions", "*", "rollback"}, {"POST"}},
      {{"ssl"}, {"GET"}},
      {{"ssl", "*"}, {"GET", "PUT", "DELETE"}},
      // tengine dyups and Slardar
      {{"list"}, {"GET"}},
      {{"detail"}, {"GET"}},
      {{"upstream", "*"}, {"GET", "POST", "DELETE"}},
  };
  return kRoutes;
}

AdminApi::AdminApi(const conf::Config& cfg, shm::UpstreamTable& table, lua::Vm* vm)
    : cfg_(cfg),
      table_(table),
      upstreams_(std::make_unique<UpstreamRoutes>(cfg, table)),
      compat_(std::make_unique<CompatRoutes>(table, *upstreams_)),
      lua_(std::make_unique<LuaRoutes>(cfg, table, vm, lua::kModuleKind)),
      functions_(std::make_unique<LuaRoutes>(cfg, table, vm, lua::kFunctionKind)),
      ssl_(std::make_unique<SslRoutes>(cfg, table)) {}

AdminApi::~AdminApi() = default;

// GET /config: the effective state (the conf's upstreams as runtime
// changes left them), in the form PUT /upstreams/{name} takes back.
Reply AdminApi::exportConfig() {
  std::vector<shm::UpstreamTable::Entry> entries;
  uint64_t version = table_.list(&entries);
  json upstreams = json::object();
  for (const shm::UpstreamTable::Entry& e : entries) {
    json spec = json::parse(e.spec, nullptr, false);
    if (spec.is_object()) upstreams[e.name] = std::move(spec);
  }
  Reply r;
  r.body = json{{"version", version},
                {"state_dir", cfg_.http.admin.state_dir},
                {"conf_file", cfg_.conf_file},
                {"upstreams", std::move(upstreams)}};
  return r;
}

void AdminApi::handle(http::Request& r, http::ContentSink& sink) {
  Reply reply;
  AdminRequest ar;
  ar.method = r.method();
  ar.segments = splitPath(r.uri);
  if (!tokenMatches(presentedToken(r), cfg_.http.admin.token)) {
    reply = errorReply(401, "a valid token is required (Authorization: Bearer TOKEN or X-API-KEY: TOKEN)");
    reply.headers.emplace_back("WWW-Authenticate", "Bearer");
  } else {
    const Route* route = nullptr;
    for (const Route& rt : routes()) {
      if (matches(rt, ar.segments)) route = &rt;
    }
    bool allowed = false;
    if (route) {
      for (std::string_view m : route->methods) allowed = allowed || m == ar.method;
    }
    if (!route) {
      reply = errorReply(404, "no such route: " + r.uri);
    } else if (!allowed) {
      reply = errorReply(405, "method " + std::string(ar.method) + " is not allowed here");
      std::string allow;
      for (std::string_view m : route->methods) allow.append(allow.empty() ? "" : ", ").append(m);
      reply.headers.emplace_back("Allow", allow);
    } else {
      ar.body = r.body.inFile() ? std::string_view() : std::string_view(r.body.data());
      ar.content_type = r.header("content-type");
      ar.if_match = r.header("if-match");
      ar.query = r.query();
      if (ar.segments[0] == "upstreams") reply = upstreams_->handle(ar);
      else if (ar.segments[0] == "config") reply = exportConfig();
      else if (ar.segments[0] == "lua") reply = lua_->handle(ar);
      else if (ar.segments[0] == "functions") reply = functions_->handle(ar);
      else if (ar.segments[0] == "ssl") reply = ssl_->handle(ar);
      else reply = compat_->handle(ar);
    }
  }
  http::ContentResult res;
  res.status = reply.status;
  res.headers = std::move(reply.headers);
  res.headers.emplace_back("Content-Type", reply.is_text ? "text/plain" : "application/json");
  res.headers.emplace_back("Cache-Control", "no-store");
  if (reply.is_text) res.body = std::move(reply.text);
  else res.body = reply.body.is_null() ? "{}\n" : reply.body.dump() + "\n";
  sink.finish(std::move(res), nullptr);
}

}  // namespace tidegate::admin
