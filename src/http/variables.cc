#include "http/variables.h"

#include <unistd.h>

#include <cstdio>

#include "core/clock.h"
#include "core/log.h"
#include "http/ascii.h"
#include "http/upstream_variables.h"
#include "tidegate/version.h"

namespace tidegate::http {
namespace {

std::string_view findArg(std::string_view args, std::string_view name) {
  size_t pos = 0;
  while (pos <= args.size()) {
    size_t amp = args.find('&', pos);
    if (amp == std::string_view::npos) amp = args.size();
    std::string_view pair = args.substr(pos, amp - pos);
    size_t eq = pair.find('=');
    std::string_view key = pair.substr(0, eq);
    if (iequals(key, name)) return eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    pos = amp + 1;
  }
  return {};
}

std::string_view findCookie(std::string_view cookies, std::string_view name) {
  size_t pos = 0;
  while (pos < cookies.size()) {
    size_t semi = cookies.find(';', pos);
    if (semi == std::string_view::npos) semi = cookies.size();
    std::string_view pair = cookies.substr(pos, semi - pos);
    while (!pair.empty() && pair.front() == ' ') pair.remove_prefix(1);
    size_t eq = pair.find('=');
    if (eq != std::string_view::npos && pair.substr(0, eq) == name) return pair.substr(eq + 1);
    pos = semi + 1;
  }
  return {};
}

void appendNumber(std::string* out, uint64_t v) { out->append(std::to_string(v)); }

std::string hostName() {
  char buf[256] = {0};
  gethostname(buf, sizeof(buf) - 1);
  return buf;
}

// nginx's uninitialized_variable_warn (on by default): a user variable read
// before any set assigned it is "" and says so.
void appendUserVariable(const conf::VarRef& var, const Request& r, std::string* out) {
  std::string_view value;
  if (r.vars.get(var.index, &value) == RequestVariables::State::kUnset) {
    TG_LOG_CONN_LIMITED(core::LogLevel::kWarn, r.conn ? r.conn->id : 0, "using uninitialized \"%s\" variable%s",
                        var.name.c_str(), describeRequest(r).c_str());
  }
  out->append(value);
}

}  // namespace

void appendMsAsSeconds(uint64_t ms, std::string* out) {
  char buf[32];
  int n = snprintf(buf, sizeof(buf), "%llu.%03llu", static_cast<unsigned long long>(ms / 1000),
                   static_cast<unsigned long long>(ms % 1000));
  out->append(buf, static_cast<size_t>(n));
}

std::string describeRequest(const Request& r) {
  std::string s;
  if (r.conn) s.append(", client: ").append(r.conn->remote_addr);
  if (r.server) s.append(", server: ").append(r.server->primaryName());
  if (r.head && r.base) s.append(", request: \"").append(r.head->request_line.in(r.base)).append("\"");
  return s;
}

void appendVariable(const conf::VarRef& var, const Request& r, std::string* out, bool dash_if_empty) {
  using conf::VarId;
  size_t before = out->size();
  switch (var.id) {
    case VarId::kRemoteAddr: out->append(r.conn->remote_addr); break;
    case VarId::kRemotePort: appendNumber(out, r.conn->remote_port); break;
    case VarId::kRemoteUser: break;
    case VarId::kTimeLocal: out->append(core::timeLocal()); break;
    case VarId::kTimeIso8601: out->append(core::timeIso8601()); break;
    case VarId::kMsec: appendMsAsSeconds(core::wallMs(), out); break;
    case VarId::kRequest: if (r.head) out->append(r.head->request_line.in(r.base)); break;
    case VarId::kRequestMethod: if (r.head) out->append(r.method()); break;
    case VarId::kRequestUri: if (r.head) out->append(r.head->target.in(r.base)); break;
    case VarId::kUri: out->append(r.uri); break;
    case VarId::kArgs: out->append(r.query()); break;
    case VarId::kIsArgs:
      if (r.vars.argsReplaced() ? !r.vars.args().empty() : r.has_args) out->push_back('?');
      break;
    case VarId::kStatus: {
      char buf[8];
      int n = snprintf(buf, sizeof(buf), "%03d", r.status);
      out->append(buf, static_cast<size_t>(n));
      break;
    }
    case VarId::kBodyBytesSent: appendNumber(out, r.body_bytes_sent); break;
    case VarId::kBytesSent: appendNumber(out, r.bytes_sent); break;
    case VarId::kRequestTime: {
      uint64_t now = r.conn && r.conn->loop ? uv_now(r.conn->loop) : r.start_ms;
      appendMsAsSeconds(now > r.start_ms ? now - r.start_ms : 0, out);
      break;
    }
    case VarId::kRequestLength: appendNumber(out, r.request_length); break;
    case VarId::kHost:
      if (!r.host.empty()) out->append(r.host);
      else if (r.server) out->append(r.server->primaryName());
      break;
    case VarId::kHostname: {
      static const std::string name = hostName();
      out->append(name);
      break;
    }
    case VarId::kServerName: if (r.server) out->append(r.server->primaryName()); break;
    case VarId::kServerPort: appendNumber(out, r.conn->local_port); break;
    case VarId::kServerAddr: out->append(r.conn->local_addr); break;
    case VarId::kServerProtocol:
      if (r.head) {
        out->append(r.head->http_minor == 0 ? "HTTP/1.0" : "HTTP/1.1");
      }
      break;
    case VarId::kScheme: out->append(r.conn->ssl_protocol ? "https" : "http"); break;
    case VarId::kHttps: if (r.conn->ssl_protocol) out->append("on"); break;
    case VarId::kSslProtocol: if (r.conn->ssl_protocol) out->append(r.conn->ssl_protocol); break;
    case VarId::kSslCipher: if (r.conn->ssl_cipher) out->append(r.conn->ssl_cipher); break;
    case VarId::kSslServerName: out->append(r.conn->ssl_server_name); break;
    case VarId::kSslSessionReused:
      if (r.conn->ssl_protocol) out->push_back(r.conn->ssl_session_reused ? 'r' : '.');
      break;
    case VarId::kConnection: appendNumber(out, r.conn->id); break;
    case VarId::kConnectionRequests: appendNumber(out, r.conn->requests); break;
    case VarId::kRequestCompletion:
      if (r.completed) out->append("OK");
      break;
    case VarId::kPid: appendNumber(out, static_cast<uint64_t>(getpid())); break;
    case VarId::kContentLength: if (r.head) out->append(r.header("content-length")); break;
    case VarId::kContentType: if (r.head) out->append(r.header("content-type")); break;
    case VarId::kTidegateVersion: out->append(TIDEGATE_VERSION); break;
    case VarId::kRequestBody:
      // nginx's rule: only a body that was read and sits in memory.
      if (r.body.read() && !r.body.inFile()) out->append(r.body.data());
      break;
    case VarId::kUpstreamAddr:
    case VarId::kUpstreamStatus:
    case VarId::kUpstreamResponseTime:
    case VarId::kUpstreamConnectTime:
    case VarId::kUpstreamHeaderTime:
    case VarId::kUpstreamResponseLength:
    case VarId::kUpstreamHttpHeader:
    case VarId::kProxyHost:
    case VarId::kProxyPort:
    case VarId::kProxyAddXForwardedFor: appendUpstreamVariable(var, r, out); break;
    case VarId::kHttpHeader: if (r.head) out->append(r.header(var.param)); break;
    case VarId::kSentHttpHeader:
      if (var.param == "content-type") out->append(r.sent_content_type);
      else if (var.param == "location") out->append(r.sent_location);
      else if (var.param == "content-length" && r.sent_content_length >= 0) appendNumber(out, static_cast<uint64_t>(r.sent_content_length));
      else if (var.param == "server") out->append(*r.settings().server_tokens ? "tidegate/" TIDEGATE_VERSION : "tidegate");
      break;
    case VarId::kArg: out->append(findArg(r.query(), var.param)); break;
    case VarId::kCookie: if (r.head) out->append(findCookie(r.header("cookie"), var.param)); break;
    case VarId::kUser: appendUserVariable(var, r, out); break;
  }
  if (dash_if_empty && out->size() == before) out->push_back('-');
}

void evaluate(const conf::ComplexValue& value, const Request& r, std::string* out, bool dash_if_empty) {
  for (const auto& part : value.parts) {
    if (part.is_var) appendVariable(part.var, r, out, dash_if_empty);
    else out->append(part.literal);
  }
}

conf::LuaCode resolveLuaFile(const conf::LuaCode& code, const Request& r) {
  conf::LuaCode out;
  out.kind = conf::LuaCode::Kind::kFile;
  evaluate(*code.path, r, &out.source);
  if (out.source.empty() || out.source[0] != '/') out.source.insert(0, code.prefix + "/");
  out.chunkname.assign(1, '@').append(out.source);
  return out;
}

// nginx's "not found" variables, which Lua reads as nil: a header, an
// argument or a cookie the request does not have (a missing value is a
// null view; an empty one points into the request), and the proxy's
// variables of a request that was not proxied.
bool variableFound(const conf::VarRef& var, const Request& r) {
  switch (var.id) {
    case conf::VarId::kHttpHeader: return r.head && r.header(var.param).data() != nullptr;
    case conf::VarId::kContentLength: return r.head && r.header("content-length").data() != nullptr;
    case conf::VarId::kContentType: return r.head && r.header("content-type").data() != nullptr;
    case conf::VarId::kArg: return findArg(r.query(), var.param).data() != nullptr;
    case conf::VarId::kCookie: return r.head && findCookie(r.header("cookie"), var.param).data() != nullptr;
    default: return upstreamVariableFound(var, r);
  }
}

}  // namespace tidegate::http
