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
  kConnection,
  kConnectionRequests,
  kPid,
  kContentLength,
  kContentType,
  kTidegateVersion,
  kHttpHeader,      // $http_NAME: a request header
  kSentHttpHeader,  // $sent_http_NAME: a response header
  kArg,             // $arg_NAME: a query argument
  kCookie,          // $cookie_NAME
};

struct VarRef {
  VarId id = VarId::kRemoteAddr;
  // For the prefix families: the part after the prefix, lower-cased, with
  // '_' turned into '-' for header names (nginx's rule for $http_*).
  std::string param;
  std::string name;  // as written, for error messages
};

// Resolves a variable name as written after '$'. False if unknown.
bool lookupVariable(std::string_view name, VarRef* out);

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

// Compiles "text with $vars". On failure *err reads like nginx's
// `unknown "foo" variable`.
bool compileComplexValue(std::string_view text, ComplexValue* out, std::string* err);

}  // namespace tidegate::conf
