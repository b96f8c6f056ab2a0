// Request-target handling: split, percent-decode and normalise the path the
// way nginx does before location matching, so "/a/../admin" cannot dodge a
// "location /admin" rule.
#pragma once

#include <string>
#include <string_view>

namespace tidegate::http {

struct TargetParts {
  std::string_view authority;  // from an absolute-form target, else empty
  std::string_view path;       // raw, still encoded
  std::string_view args;       // after '?', without it
  bool has_args = false;
};

TargetParts splitTarget(std::string_view target);

// The value of a hex digit, or -1.
int hexValue(char c);

// Query-component decoding as ngx.unescape_uri does it: %XX decoded, '+' is
// a space, a malformed escape is kept as it is (never an error).
std::string unescapeComponent(std::string_view s);

// Decodes %XX, merges repeated '/', resolves "." and ".." segments.
// False (400) on a bad escape, an encoded NUL, or ".." above the root.
bool normalizePath(std::string_view raw, std::string* out);

}  // namespace tidegate::http
