#include "conf/complex_value.h"

#include <cctype>

namespace tidegate::conf {
namespace {

struct Fixed {
  std::string_view name;
  VarId id;
};

constexpr Fixed kFixed[] = {
    {"remote_addr", VarId::kRemoteAddr},
    {"remote_port", VarId::kRemotePort},
    {"remote_user", VarId::kRemoteUser},
    {"time_local", VarId::kTimeLocal},
    {"time_iso8601", VarId::kTimeIso8601},
    {"msec", VarId::kMsec},
    {"request", VarId::kRequest},
    {"request_method", VarId::kRequestMethod},
    {"request_uri", VarId::kRequestUri},
    {"uri", VarId::kUri},
    {"document_uri", VarId::kUri},
    {"args", VarId::kArgs},
    {"query_string", VarId::kArgs},
    {"is_args", VarId::kIsArgs},
    {"status", VarId::kStatus},
    {"body_bytes_sent", VarId::kBodyBytesSent},
    {"bytes_sent", VarId::kBytesSent},
    {"request_time", VarId::kRequestTime},
    {"request_length", VarId::kRequestLength},
    {"host", VarId::kHost},
    {"hostname", VarId::kHostname},
    {"server_name", VarId::kServerName},
    {"server_port", VarId::kServerPort},
    {"server_addr", VarId::kServerAddr},
    {"server_protocol", VarId::kServerProtocol},
    {"scheme", VarId::kScheme},
    {"https", VarId::kHttps},
    {"ssl_protocol", VarId::kSslProtocol},
    {"ssl_cipher", VarId::kSslCipher},
    {"ssl_server_name", VarId::kSslServerName},
    {"ssl_session_reused", VarId::kSslSessionReused},
    {"connection", VarId::kConnection},
    {"connection_requests", VarId::kConnectionRequests},
    {"request_completion", VarId::kRequestCompletion},
    {"pid", VarId::kPid},
    {"content_length", VarId::kContentLength},
    {"content_type", VarId::kContentType},
    {"tidegate_version", VarId::kTidegateVersion},
    {"nginx_version", VarId::kTidegateVersion},
    {"request_body", VarId::kRequestBody},
    {"upstream_addr", VarId::kUpstreamAddr},
    {"upstream_status", VarId::kUpstreamStatus},
    {"upstream_response_time", VarId::kUpstreamResponseTime},
    {"upstream_connect_time", VarId::kUpstreamConnectTime},
    {"upstream_header_time", VarId::kUpstreamHeaderTime},
    {"upstream_response_length", VarId::kUpstreamResponseLength},
    {"proxy_host", VarId::kProxyHost},
    {"proxy_port", VarId::kProxyPort},
    {"proxy_add_x_forwarded_for", VarId::kProxyAddXForwardedFor},
};

struct Prefix {
  std::string_view prefix;
  VarId id;
  bool header;
};

constexpr Prefix kPrefixes[] = {
    {"http_", VarId::kHttpHeader, true},
    {"sent_http_", VarId::kSentHttpHeader, true},
    {"upstream_http_", VarId::kUpstreamHttpHeader, true},
    {"arg_", VarId::kArg, false},
    {"cookie_", VarId::kCookie, false},
};

bool isNameChar(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

}  // namespace

int UserVariables::find(std::string_view name) const {
  for (size_t i = 0; i < names.size(); i++) {
    if (names[i] == name) return static_cast<int>(i);
  }
  return -1;
}

uint16_t UserVariables::declare(std::string_view name) {
  int id = find(name);
  if (id >= 0) return static_cast<uint16_t>(id);
  names.emplace_back(name);
  return static_cast<uint16_t>(names.size() - 1);
}

bool lookupVariable(std::string_view name, VarRef* out, const UserVariables* user) {
  for (const auto& f : kFixed) {
    if (f.name == name) {
      *out = VarRef{f.id, "", std::string(name), 0};
      return true;
    }
  }
  if (int id = user ? user->find(name) : -1; id >= 0) {
    *out = VarRef{VarId::kUser, "", std::string(name), static_cast<uint16_t>(id)};
    return true;
  }
  for (const auto& p : kPrefixes) {
    if (name.size() > p.prefix.size() && name.substr(0, p.prefix.size()) == p.prefix) {
      std::string param(name.substr(p.prefix.size()));
      if (p.header) {
        for (char& c : param) c = c == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      }
      *out = VarRef{p.id, std::move(param), std::string(name), 0};
      return true;
    }
  }
  return false;
}

const std::string& ComplexValue::constantText() const {
  static const std::string kEmpty;
  return parts.empty() ? kEmpty : parts[0].literal;
}

bool compileComplexValue(std::string_view text, ComplexValue* out, std::string* err, const UserVariables* user) {
  *out = ComplexValue{};
  out->raw = std::string(text);
  std::string literal;
  size_t i = 0;
  auto flush = [&] {
    if (!literal.empty()) {
      ComplexValue::Part part;
      part.literal = std::move(literal);
      out->parts.push_back(std::move(part));
      literal.clear();
    }
  };
  while (i < text.size()) {
    char c = text[i];
    if (c != '$') {
      literal += c;
      i++;
      continue;
    }
    std::string_view name;
    if (i + 1 < text.size() && text[i + 1] == '{') {
      size_t close = text.find('}', i + 2);
      if (close == std::string_view::npos) {
        *err = "the closing bracket in \"" + std::string(text.substr(i + 2)) + "\" variable is missing";
        return false;
      }
      name = text.substr(i + 2, close - i - 2);
      i = close + 1;
    } else {
      size_t start = i + 1;
      size_t end = start;
      while (end < text.size() && isNameChar(text[end])) end++;
      name = text.substr(start, end - start);
      i = end;
    }
    if (name.empty()) {
      *err = "invalid variable name in \"" + std::string(text) + "\"";
      return false;
    }
    ComplexValue::Part part;
    part.is_var = true;
    if (!lookupVariable(name, &part.var, user)) {
      *err = "unknown \"" + std::string(name) + "\" variable";
      return false;
    }
    flush();
    out->parts.push_back(std::move(part));
  }
  flush();
  return true;
}

}  // namespace tidegate::conf
