#include "lua/api/socket_common.h"

#include <netinet/in.h>
#include <uv.h>

#include <algorithm>
#include <cstring>

#include "core/log.h"
#include "http/variables.h"
#include "lua/phases/content.h"

namespace tidegate::lua {

const conf::HttpSettings& socketSettings(LuaTask* task) {
  if (RequestContext* ctx = task->request()) return ctx->req().settings();
  return task->vm().config().http.settings;
}

uint64_t checkTimeoutMs(lua_State* L, int idx, uint64_t current) {
  if (lua_isnoneornil(L, idx)) return current;
  lua_Number ms = luaL_checknumber(L, idx);
  if (ms < 0) luaL_argerror(L, idx, "bad timeout value");
  return static_cast<uint64_t>(ms);
}

void logSocketError(LuaTask* task, const std::string& what) {
  if (!socketSettings(task).lua_socket_log_errors.value_or(true)) return;
  RequestContext* ctx = task->request();
  std::string where = ctx ? http::describeRequest(ctx->req())
                          : std::string(task->phase() == Phase::kSslCert ? ", context: ssl_certificate_by_lua*"
                                                                          : ", context: ngx.timer");
  uint64_t conn = ctx && ctx->req().conn ? ctx->req().conn->id : 0;
  TG_LOG_CONN_LIMITED(core::LogLevel::kError, conn, "%s%s", what.c_str(), where.c_str());
}

std::string errnoText(int uv_status) {
  std::string text = "(";
  text.append(std::to_string(-uv_status)).append(": ").append(std::strerror(-uv_status)).append(")");
  return text;
}

int pushSocketFailure(lua_State* L, const char* err) {
  lua_pushnil(L);
  lua_pushstring(L, err);
  return 2;
}

sockaddr_storage pickAddress(const addrinfo* res, int port) {
  const addrinfo* pick = res;
  for (const addrinfo* a = res; a; a = a->ai_next) {
    if (a->ai_family == AF_INET) {
      pick = a;
      break;
    }
  }
  sockaddr_storage addr{};
  std::memcpy(&addr, pick->ai_addr, std::min(sizeof(addr), static_cast<size_t>(pick->ai_addrlen)));
  auto nport = htons(static_cast<uint16_t>(port));
  if (addr.ss_family == AF_INET6) reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port = nport;
  else reinterpret_cast<sockaddr_in*>(&addr)->sin_port = nport;
  return addr;
}

std::string unresolvedMessage(const std::string& host, int uv_status) {
  return host + " could not be resolved (" + uv_strerror(uv_status) + ")";
}

}  // namespace tidegate::lua
