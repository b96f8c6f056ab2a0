// ASCII case helpers for protocol tokens (header names, codings): HTTP
// field names are case-insensitive ASCII (RFC 9110 5.1), never locale text.
#pragma once

#include <string_view>

namespace tidegate::http {

inline char asciiLower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++) {
    if (asciiLower(a[i]) != asciiLower(b[i])) return false;
  }
  return true;
}

}  // namespace tidegate::http
