// admin_listen, admin_token, state_dir and lua_module_history: where the
// admin API listens, the token every route needs, where runtime changes
// persist, and how many versions of a pushed Lua module are kept. The loader
// checks them together and makes the admin server (loader.cc).
#include <cstdlib>

#include "conf/directives.h"

namespace tidegate::conf {
namespace {

bool onAdminListen(const ConfNode& n, BuildState& st, std::string* err) {
  AdminConf& a = st.config->http.admin;
  if (a.enabled) {
    err->assign("\"admin_listen\" directive is duplicate");
    return false;
  }
  if (!parseListenAddress(n.args[0], &a.listen)) {
    err->assign("invalid address \"").append(n.args[0]).append("\" in \"admin_listen\" directive");
    return false;
  }
  a.enabled = true;
  a.where = n.where();
  return true;
}

// admin_token TOKEN | env:NAME;
bool onAdminToken(const ConfNode& n, BuildState& st, std::string* err) {
  AdminConf& a = st.config->http.admin;
  if (!a.token.empty()) {
    err->assign("\"admin_token\" directive is duplicate");
    return false;
  }
  const std::string& v = n.args[0];
  if (v.rfind("env:", 0) == 0) {
    const char* value = getenv(v.c_str() + 4);
    if (!value || !*value) {
      err->assign("admin_token: environment variable \"").append(v.substr(4)).append("\" is not set");
      return false;
    }
    a.token = value;
  } else {
    a.token = v;
  }
  if (a.token.empty()) {
    err->assign("admin_token is empty");
    return false;
  }
  return true;
}

bool onStateDir(const ConfNode& n, BuildState& st, std::string*) {
  st.config->http.admin.state_dir = st.resolvePath(n.args[0]);
  return true;
}

// lua_module_history N; (1-1000)
bool onLuaModuleHistory(const ConfNode& n, BuildState& st, std::string* err) {
  uint64_t v = 0;
  if (!parseCount(n.args[0], &v) || v < 1 || v > 1000) {
    err->assign("invalid value \"").append(n.args[0]).append("\" in \"lua_module_history\" directive (1-1000)");
    return false;
  }
  st.config->http.admin.lua_history = v;
  return true;
}

const Directive kAdminDirectives[] = {
    {"admin_listen", kHttpCtx, 1, 1, false, onAdminListen},
    {"admin_token", kHttpCtx, 1, 1, false, onAdminToken},
    {"state_dir", kHttpCtx, 1, 1, false, onStateDir},
    {"lua_module_history", kHttpCtx, 1, 1, false, onLuaModuleHistory},
};

}  // namespace

void registerAdminDirectives() {
  registerDirectives(kAdminDirectives, sizeof(kAdminDirectives) / sizeof(kAdminDirectives[0]));
}

}  // namespace tidegate::conf
