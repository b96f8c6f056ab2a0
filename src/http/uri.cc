#include "http/uri.h"

#include <strings.h>

#include <vector>

namespace tidegate::http {

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string unescapeComponent(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hexValue(s[i + 1]) >= 0 && hexValue(s[i + 2]) >= 0) {
      out += static_cast<char>(hexValue(s[i + 1]) * 16 + hexValue(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

TargetParts splitTarget(std::string_view target) {
  TargetParts t;
  for (std::string_view scheme : {std::string_view("http://"), std::string_view("https://")}) {
    if (target.size() >= scheme.size() && strncasecmp(target.data(), scheme.data(), scheme.size()) == 0) {
      std::string_view rest = target.substr(scheme.size());
      size_t slash = rest.find_first_of("/?");
      t.authority = rest.substr(0, slash);
      target = slash == std::string_view::npos ? std::string_view("/") : rest.substr(slash);
      break;
    }
  }
  size_t q = target.find('?');
  if (q == std::string_view::npos) {
    t.path = target;
  } else {
    t.path = target.substr(0, q);
    t.args = target.substr(q + 1);
    t.has_args = true;
  }
  if (t.path.empty()) t.path = "/";
  return t;
}

bool normalizePath(std::string_view raw, std::string* out) {
  // Fast path: nothing encoded, no empty or dot segments.
  if (!raw.empty() && raw[0] == '/' && raw.find('%') == std::string_view::npos &&
      raw.find("//") == std::string_view::npos && raw.find("/.") == std::string_view::npos) {
    out->assign(raw);
    return true;
  }
  // Decode first so that encoded dots and slashes are normalised too, as nginx does.
  std::string decoded;
  decoded.reserve(raw.size());
  for (size_t i = 0; i < raw.size(); i++) {
    char c = raw[i];
    if (c == '%') {
      if (i + 2 >= raw.size()) return false;
      int hi = hexValue(raw[i + 1]), lo = hexValue(raw[i + 2]);
      if (hi < 0 || lo < 0) return false;
      c = static_cast<char>(hi * 16 + lo);
      if (c == '\0') return false;
      i += 2;
    }
    decoded += c;
  }
  if (decoded.empty() || decoded[0] != '/') return false;
  std::vector<std::string_view> segs;
  bool trailing_slash = false;
  size_t i = 1;
  while (i <= decoded.size()) {
    size_t j = decoded.find('/', i);
    if (j == std::string::npos) j = decoded.size();
    std::string_view seg(decoded.data() + i, j - i);
    bool last = j >= decoded.size();
    if (seg == "..") {
      if (segs.empty()) return false;  // above the root
      segs.pop_back();
      trailing_slash = true;
    } else if (seg == "." || seg.empty()) {
      trailing_slash = true;
    } else {
      segs.push_back(seg);
      trailing_slash = false;
    }
    if (last) break;
    i = j + 1;
  }
  out->clear();
  out->push_back('/');
  for (size_t k = 0; k < segs.size(); k++) {
    if (k) *out += '/';
    out->append(segs[k]);
  }
  if (trailing_slash && !segs.empty()) *out += '/';
  return true;
}

}  // namespace tidegate::http
