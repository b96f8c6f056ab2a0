// ngx.balancer's C side: the FFI entry points lua/ngx/balancer.lua calls
// (declared in include/tidegate/ffi.h), and ngx.exit in balancer_by_lua*.
// They read and fill the http::BalancerCall of the run in progress
// (phases/balancer.cc); the proxy applies it. Return values and error
// texts are lua-nginx-module's (ngx_http_lua_balancer.c).
#include <arpa/inet.h>

#include <algorithm>
#include <string>
#include <string_view>

#include "tidegate/ffi.h"

#include "lua/api/common.h"
#include "lua/phases/content.h"

namespace tidegate::lua {
namespace {

constexpr const char* kDisabled = "API disabled in the current context";

// The BalancerCall of `r` while its balancer_by_lua* code runs; null with
// *err set anywhere else.
http::BalancerCall* currentCall(void* r, const char** err) {
  RequestContext* ctx = ffiRequest(r);
  http::BalancerCall* call = ctx && Vm::active()->phase() == Phase::kBalancer ? ctx->balancerCall() : nullptr;
  if (!call) *err = kDisabled;
  return call;
}

// A port as ngx_parse_url() takes it: 1..65535, digits only.
bool parsePort(std::string_view text, int* port) {
  if (text.empty() || text.size() > 5) return false;
  int v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *port = v;
  return v >= 1 && v <= 65535;
}

// set_current_peer's address: "ip", "ip:port", "[v6]", "[v6]:port", or a
// bare IPv6 address (tidegate accepts it; nginx's URL parser does not).
// Host names are refused, as OpenResty does (no resolver in the balancer).
// Fills call->peer_host (normalised) and peer_port; or returns the error.
const char* parsePeer(std::string_view text, int port, http::BalancerCall* call) {
  if (text.empty()) return "no host";
  std::string host;
  std::string_view port_text;
  bool has_port = false;
  int family = AF_INET;
  if (text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return "invalid host";
    host.assign(text.substr(1, close - 1));
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty() && rest[0] != ':') return "invalid host";
    has_port = !rest.empty();
    if (has_port) port_text = rest.substr(1);
    family = AF_INET6;
  } else if (std::count(text.begin(), text.end(), ':') > 1) {
    host.assign(text);
    family = AF_INET6;
  } else {
    size_t colon = text.find(':');
    host.assign(text.substr(0, colon));
    has_port = colon != std::string_view::npos;
    if (has_port) port_text = text.substr(colon + 1);
  }
  if (host.empty()) return "no host";
  unsigned char bin[sizeof(in6_addr)];
  if (inet_pton(family, host.c_str(), bin) != 1) {
    return family == AF_INET6 ? "invalid IPv6 address" : "no host allowed";
  }
  if (has_port ? !parsePort(port_text, &port) : (port < 1 || port > 65535)) return "invalid port";
  if (family == AF_INET6) {
    char out[INET6_ADDRSTRLEN];
    inet_ntop(family, bin, out, sizeof(out));
    call->peer_host = out;
  } else {
    // inet_pton takes IPv4 only in its canonical form (four decimal parts
    // without leading zeros), so the text is what inet_ntop would print.
    call->peer_host = std::move(host);
  }
  call->peer_port = static_cast<uint16_t>(port);
  return nullptr;
}

}  // namespace

int balancerExit(lua_State* L) {
  RequestContext* ctx = requireRequest(L);
  lua_Integer status = luaL_checkinteger(L, 1);
  http::BalancerCall* call = ctx->balancerCall();
  if (!call) raiseDisabled(L, Phase::kBalancer);
  call->exit_status = static_cast<int>(status);
  return 0;
}

}  // namespace tidegate::lua

using tidegate::http::BalancerCall;
using tidegate::lua::currentCall;

extern "C" {

int tg_balancer_set_current_peer(void* r, const char* addr, size_t len, int port, const char** err) {
  BalancerCall* call = currentCall(r, err);
  if (!call) return -1;
  *err = tidegate::lua::parsePeer(std::string_view(addr, len), port, call);
  return *err ? -1 : 0;
}

int tg_balancer_set_more_tries(void* r, int count, const int* statuses, int n, const char** err) {
  BalancerCall* call = currentCall(r, err);
  if (!call) return -1;
  for (int i = 0; i < n; i++) {
    if (tidegate::conf::nextUpstreamForStatus(statuses[i]) == 0) {
      *err = "bad retry_on status";
      return -1;
    }
  }
  for (int i = 0; i < n; i++) call->retry_on.push_back(statuses[i]);
  uint64_t more = count > 0 ? static_cast<uint64_t>(count) : 0;
  // lua-nginx-module caps the total to proxy_next_upstream_tries and warns.
  int rc = 0;
  if (call->max_tries > 0 && call->tries_allowed + more > call->max_tries) {
    more = call->max_tries > call->tries_allowed ? call->max_tries - call->tries_allowed : 0;
    *err = "reduced tries due to limit";
    rc = 1;
  }
  call->more_tries = more;
  return rc;
}

int tg_balancer_get_last_failure(void* r, int* status, const char** err) {
  BalancerCall* call = currentCall(r, err);
  if (!call) return -1;
  if (call->last_state.empty()) return 0;
  *status = call->last_status;
  return call->last_state == "next" ? 2 : 4;
}

int tg_balancer_set_timeouts(void* r, long connect_ms, long send_ms, long read_ms, const char** err) {
  BalancerCall* call = currentCall(r, err);
  if (!call) return -1;
  if (connect_ms > 0) call->connect_timeout_ms = connect_ms;
  if (send_ms > 0) call->send_timeout_ms = send_ms;
  if (read_ms > 0) call->read_timeout_ms = read_ms;
  return 0;
}

int tg_balancer_enable_keepalive(void* r, long idle_timeout_ms, long max_requests, const char** err) {
  BalancerCall* call = currentCall(r, err);
  if (!call) return -1;
  if (call->peer_host.empty()) {
    *err = "no current peer set";
    return -1;
  }
  call->keepalive = true;
  call->keepalive_timeout_ms = idle_timeout_ms > 0 ? static_cast<uint64_t>(idle_timeout_ms) : 0;
  call->keepalive_requests = max_requests > 0 ? static_cast<uint64_t>(max_requests) : 0;
  return 0;
}

int tg_balancer_recreate_request(void* r, const char** err) {
  BalancerCall* call = currentCall(r, err);
  if (!call) return -1;
  call->recreate_request = true;
  return 0;
}

}  // extern "C"
