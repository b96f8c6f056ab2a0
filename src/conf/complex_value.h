// Text with embedded variables ("$remote_addr - ${status}x"), compiled once at
// conf load into literal and variable parts. Evaluation lives in the http
// layer (http/variables.h); this layer only knows names.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tidegate::conf {

enum class VarId : uint16_t {
  kRemoteAddr,
  kRemotePort,
  kRemoteUser,
  kTimeLocal,
  kTimeIso8601,
  kMsec,
  kRequest,
  kRequestMethod,
  kRequestUri,
  kUri,
  kArgs,
  kIsArgs,
  kStatus,
  kBodyBytesSent,
  kBytesSent,
  kRequestTime,
  kRequestLength,
  kHost,
  kHostname,
  kServerName,
  kServerPort,
  kServerAddr,
  kServerProtocol,
  kScheme,
  kHttps,
  kSslProtocol,
  kSslCipher,
  kSslServerName,
  kSslSessionReused,
  kConnection,
  kConnectionRequests,
  kRequestCompletion,  // "OK" once the whole response went out, else ""
  kPid,
  kContentLength,
  kContentType,
  kTidegateVersion,
  kRequestBody,     // the body when kept in memory and read (else "")
  // The proxy's (http/upstream_variables.h), from Request::upstream.
  kUpstreamAddr,
  kUpstreamStatus,
  kUpstreamResponseTime,
  kUpstreamConnectTime,
  kUpstreamHeaderTime,
  kUpstreamResponseLength,
  kProxyHost,
  kProxyPort,
  kProxyAddXForwardedFor,
  kHttpHeader,          // $http_NAME: a request header
  kSentHttpHeader,      // $sent_http_NAME: a response header
  kUpstreamHttpHeader,  // $upstream_http_NAME: a header of the upstream's response
  kArg,             // $arg_NAME: a query argument
  kCookie,          // $cookie_NAME
  kUser,            // declared by set / set_by_lua*: VarRef::index is its id
};

// The prefix families ($http_*, $arg_*, ...) are not variables of their own:
// `set $arg_x` declares a user variable that shadows the family's name.
inline bool isPrefixVariable(VarId id) {
  return id == VarId::kHttpHeader || id == VarId::kSentHttpHeader || id == VarId::kUpstreamHttpHeader ||
         id == VarId::kArg || id == VarId::kCookie;
}

struct VarRef {
  VarId id = VarId::kRemoteAddr;
  // For the prefix families: the part after the prefix, lower-cased, with
  // '_' turned into '-' for header names (nginx's rule for $http_*).
  std::string param;
  std::string name;  // as written, for error messages
  uint16_t index = 0;  // kUser: the variable's id
};

// The variables a conf declares (set, set_by_lua*). nginx resolves names
// after the whole conf is read, so the loader declares them all before any
// directive is built (declareVariables() in conf/directives.h): a value may
// name a variable whose `set` comes later in the file.
struct UserVariables {
  std::vector<std::string> names;  // id -> name
  int find(std::string_view name) const;
  uint16_t declare(std::string_view name);  // the existing id, or a new one
};

// Resolves a variable name as written after '$': built-ins first, then the
// conf's user variables, then the prefix families. False if unknown.
bool lookupVariable(std::string_view name, VarRef* out, const UserVariables* user = nullptr);

struct ComplexValue {
  struct Part {
    bool is_var = false;
    std::string literal;
    VarRef var;
  };
  std::vector<Part> parts;
  std::string raw;

  bool isConstant() const { return parts.empty() || (parts.size() == 1 && !parts[0].is_var); }
  const std::string& constantText() const;  // valid when isConstant()
};

// Compiles "text with $vars", resolving names against the built-ins and
// `user` (the conf's declared variables; directive handlers pass
// BuildState::variables()). On failure *err reads like nginx's
// `unknown "foo" variable`.
bool compileComplexValue(std::string_view text, ComplexValue* out, std::string* err,
                         const UserVariables* user = nullptr);

}  // namespace tidegate::conf
