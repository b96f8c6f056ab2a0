// The admin API (docs/admin-api.md): the handler of the server the conf
// makes for admin_listen. Every worker runs one; writes go through the
// shared upstream table (so every worker sees them on its next request)
// and the state directory (so a restart or reload keeps them).
//
// A request is checked in this order: the token (401), the route (404),
// the method (405 with Allow), then the route's own checks (415, 413, 400,
// 404, 409). Errors are JSON: {"error": "...", "field": "..."} (field only
// when one is to blame).
#pragma once

#include <memory>

#include "conf/config.h"
#include "http/content_handler.h"
#include "shm/upstream_table.h"

namespace tidegate::lua {
class Vm;
}

namespace tidegate::admin {

class UpstreamRoutes;
struct Reply;
class CompatRoutes;
class LuaRoutes;
class SslRoutes;

class AdminApi final : public http::AdminHandler {
 public:
  // `vm`: the worker's Lua VM (pushed modules are tried in it), or null.
  AdminApi(const conf::Config& cfg, shm::UpstreamTable& table, lua::Vm* vm);
  ~AdminApi() override;

  void handle(http::Request& r, http::ContentSink& sink) override;

 private:
  Reply exportConfig();

  const conf::Config& cfg_;
  shm::UpstreamTable& table_;
  std::unique_ptr<UpstreamRoutes> upstreams_;
  std::unique_ptr<CompatRoutes> compat_;
  std::unique_ptr<LuaRoutes> lua_;
  std::unique_ptr<LuaRoutes> functions_;
  std::unique_ptr<SslRoutes> ssl_;
};

// True if `given` equals `token`, in time that does not depend on where they differ.
bool tokenMatches(std::string_view given, std::string_view token);

}  // namespace tidegate::admin
