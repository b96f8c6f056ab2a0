#include "http/upstream_variables.h"

#include <algorithm>

#include "http/ascii.h"
#include "http/variables.h"

namespace tidegate::http {
namespace {

using conf::VarId;

// One value per try, joined with ", " as nginx joins its upstream states.
// (nginx also writes " : " between two upstream groups after an internal
// redirect; tidegate proxies a request once.)
template <typename Fn>
void appendPerTry(const Request& r, std::string* out, Fn fn) {
  const auto& tries = r.upstream.tries;
  for (size_t i = 0; i < tries.size(); i++) {
    if (i > 0) out->append(", ");
    fn(tries[i]);
  }
}

// nginx keeps these times in ms and prints -1 (the try never got that far)
// as "-"; a negative measure otherwise is clamped to 0 (ngx_max(ms, 0)).
void appendTryTime(int64_t us, std::string* out) {
  if (us == -1) {
    out->push_back('-');
    return;
  }
  appendMsAsSeconds(static_cast<uint64_t>(std::max<int64_t>(us, 0) / 1000), out);
}

// nginx's ngx_http_variable_unknown_header rule: ASCII case-insensitive,
// '-' in the header name matching '_' in the variable's (already '-' in param).
bool headerNamed(std::string_view name, std::string_view param) {
  if (name.size() != param.size()) return false;
  for (size_t i = 0; i < name.size(); i++) {
    char c = asciiLower(name[i]);
    if ((c == '_' ? '-' : c) != param[i]) return false;
  }
  return true;
}

// Every upstream response header of that name, joined with ", " (nginx >= 1.23).
void appendUpstreamHeader(const UpstreamRecord& u, std::string_view param, std::string* out) {
  bool first = true;
  for (const auto& [name, value] : u.headers()) {
    if (!headerNamed(name, param)) continue;
    if (!first) out->append(", ");
    out->append(value);
    first = false;
  }
}

// Every X-Forwarded-For of the request (as Lua left them), each followed by
// ", ", then the client address: nginx's ngx_http_proxy_add_x_forwarded_for_variable.
void appendXForwardedFor(const Request& r, std::string* out) {
  if (r.head) {
    r.forEachHeader([out](std::string_view name, std::string_view value) {
      if (iequals(name, "x-forwarded-for")) out->append(value).append(", ");
      return true;
    });
  }
  if (r.conn) out->append(r.conn->remote_addr);
}

}  // namespace

void appendUpstreamVariable(const conf::VarRef& var, const Request& r, std::string* out) {
  switch (var.id) {
    case VarId::kUpstreamAddr:
      appendPerTry(r, out, [out](const UpstreamTry& t) { out->append(t.addr); });
      break;
    case VarId::kUpstreamStatus:
      appendPerTry(r, out, [out](const UpstreamTry& t) {
        if (t.status == 0) out->push_back('-');
        else out->append(std::to_string(t.status));
      });
      break;
    case VarId::kUpstreamResponseTime:
      appendPerTry(r, out, [out](const UpstreamTry& t) { appendTryTime(t.response_us, out); });
      break;
    case VarId::kUpstreamConnectTime:
      appendPerTry(r, out, [out](const UpstreamTry& t) { appendTryTime(t.connect_us, out); });
      break;
    case VarId::kUpstreamHeaderTime:
      appendPerTry(r, out, [out](const UpstreamTry& t) { appendTryTime(t.header_us, out); });
      break;
    case VarId::kUpstreamResponseLength:
      appendPerTry(r, out, [out](const UpstreamTry& t) { out->append(std::to_string(t.length)); });
      break;
    case VarId::kUpstreamHttpHeader: appendUpstreamHeader(r.upstream, var.param, out); break;
    case VarId::kProxyHost: out->append(r.upstream.proxy_host); break;
    case VarId::kProxyPort: out->append(r.upstream.proxy_port); break;
    case VarId::kProxyAddXForwardedFor: appendXForwardedFor(r, out); break;
    default: break;
  }
}

bool upstreamVariableFound(const conf::VarRef& var, const Request& r) {
  switch (var.id) {
    case VarId::kUpstreamAddr:
    case VarId::kUpstreamStatus:
    case VarId::kUpstreamResponseTime:
    case VarId::kUpstreamConnectTime:
    case VarId::kUpstreamHeaderTime:
    case VarId::kUpstreamResponseLength: return !r.upstream.tries.empty();
    case VarId::kUpstreamHttpHeader:
      return std::ranges::any_of(r.upstream.headers(), [&var](const auto& h) { return headerNamed(h.first, var.param); });
    case VarId::kProxyHost: return !r.upstream.proxy_host.empty();
    case VarId::kProxyPort: return !r.upstream.proxy_port.empty();
    default: return true;
  }
}

}  // namespace tidegate::http
