#include "conf/directives.h"

#include <strings.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <iterator>
#include <limits>
#include <mutex>
#include <unordered_map>

namespace tidegate::conf {
namespace {

// A name may have one entry per context it means something different in
// (`server` is a block in http and a line in upstream).
std::unordered_multimap<std::string_view, Directive>& registry() {
  static std::unordered_multimap<std::string_view, Directive> r;
  return r;
}

bool argCountOk(const Directive& d, const ConfNode& node) {
  int n = static_cast<int>(node.args.size());
  if (node.lua_block) n--;  // the Lua source is not a user-written argument
  if (n < d.min_args) return false;
  return d.max_args == kAnyArgs || n <= d.max_args;
}

}  // namespace

std::string BuildState::resolvePath(const std::string& path) const {
  if (path.empty() || path[0] == '/' || path == "stderr") return path;
  return config->prefix + "/" + path;
}

void registerDirectives(const Directive* list, size_t count) {
  for (size_t i = 0; i < count; i++) registry().emplace(list[i].name, list[i]);
}

const Directive* findDirective(std::string_view name, uint32_t ctx) {
  static std::once_flag once;
  std::call_once(once, [] {
    registerCoreDirectives();
    registerLuaDirectives();
    registerRewriteDirectives();
    registerUpstreamDirectives();
    registerProxyDirectives();
    registerSslDirectives();
    registerAdminDirectives();
  });
  auto [first, last] = registry().equal_range(name);
  if (first == last) return nullptr;
  for (auto it = first; it != last; ++it) {
    if (it->second.contexts & ctx) return &it->second;
  }
  return &first->second;  // known, but not here
}

bool buildBlock(const std::vector<ConfNode>& nodes, BuildState& st, ConfError* err) {
  for (const auto& node : nodes) {
    const Directive* d = findDirective(node.name, st.ctx);
    auto fail = [&](std::string text) {
      *err = ConfError{std::move(text), node.file ? *node.file : "", node.line};
      return false;
    };
    if (!d) return fail("unknown directive \"" + node.name + "\"");
    if (!(d->contexts & st.ctx)) return fail("\"" + node.name + "\" directive is not allowed here");
    if (d->block && !node.has_block) return fail("directive \"" + node.name + "\" has no opening \"{\"");
    if (!d->block && node.has_block) return fail("directive \"" + node.name + "\" is not terminated by \";\"");
    if (!argCountOk(*d, node)) return fail("invalid number of arguments in \"" + node.name + "\" directive");
    if (d->once && !st.config->seen_once.insert(std::string(d->name)).second) {
      return fail("\"" + node.name + "\" directive is duplicate");
    }
    std::string why;
    st.error = err;
    if (!d->handler(node, st, &why)) {
      // A handler that already positioned the error (a nested block) sets err itself.
      if (why.empty()) return false;
      return fail(why);
    }
  }
  return true;
}

bool parseInt(std::string_view text, int64_t* out) {
  if (text.empty()) return false;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && p == text.data() + text.size();
}

std::string lowerCase(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

bool parseCount(std::string_view text, uint64_t* out) {
  int64_t v = 0;
  if (!parseInt(text, &v) || v < 0) return false;
  *out = static_cast<uint64_t>(v);
  return true;
}

bool parseDurationMs(std::string_view text, uint64_t* out) {
  // nginx's ngx_parse_time: "1h30m", "500ms"; a trailing number without a
  // unit is seconds ("1m30" = 90 s). Overflow is an error, never a wrap.
  if (text.empty()) return false;
  uint64_t total = 0;
  size_t i = 0;
  while (i < text.size()) {
    size_t start = i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) i++;
    if (i == start) return false;
    uint64_t n = 0;
    auto [p, ec] = std::from_chars(text.data() + start, text.data() + i, n);
    if (ec != std::errc()) return false;
    uint64_t mult = 1000;  // no unit: seconds
    if (i < text.size()) {
      if (text.substr(i, 2) == "ms") {
        mult = 1;
        i += 2;
      } else {
        switch (text[i]) {
          case 's': mult = 1000; break;
          case 'm': mult = 60000; break;
          case 'h': mult = 3600000; break;
          case 'd': mult = 86400000; break;
          case 'w': mult = 604800000; break;
          case 'M': mult = 2592000000ull; break;
          case 'y': mult = 31536000000ull; break;
          default: return false;
        }
        i++;
      }
    }
    if (n > std::numeric_limits<uint64_t>::max() / mult) return false;
    if (total > std::numeric_limits<uint64_t>::max() - n * mult) return false;
    total += n * mult;
  }
  *out = total;
  return true;
}

bool parseSize(std::string_view text, uint64_t* out) {
  if (text.empty()) return false;
  uint64_t mult = 1;
  char last = text.back();
  switch (last) {
    case 'k': case 'K': mult = 1024; break;
    case 'm': case 'M': mult = 1024 * 1024; break;
    case 'g': case 'G': mult = 1024ull * 1024 * 1024; break;
    default: break;
  }
  if (mult != 1) text.remove_suffix(1);
  uint64_t n = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || p != text.data() + text.size() || text.empty()) return false;
  if (n > std::numeric_limits<uint64_t>::max() / mult) return false;
  *out = n * mult;
  return true;
}

bool parseSslProtocols(const ConfNode& n, uint64_t* bits, std::string* err) {
  static const std::pair<const char*, uint64_t> kNames[] = {{"SSLv2", kSslV2},     {"SSLv3", kSslV3},
                                                            {"TLSv1", kTlsV1},     {"TLSv1.1", kTlsV1_1},
                                                            {"TLSv1.2", kTlsV1_2}, {"TLSv1.3", kTlsV1_3}};
  *bits = 0;
  for (const std::string& a : n.args) {
    const auto* it = std::find_if(std::begin(kNames), std::end(kNames), [&](const auto& p) { return a == p.first; });
    if (it == std::end(kNames)) {
      err->assign("invalid value \"").append(a).append(1, '"');
      return false;
    }
    *bits |= it->second;
  }
  return true;
}

bool parseFlag(const ConfNode& node, bool* out, std::string* err) {
  const std::string& v = node.args[0];
  if (strcasecmp(v.c_str(), "on") == 0) { *out = true; return true; }
  if (strcasecmp(v.c_str(), "off") == 0) { *out = false; return true; }
  *err = "invalid value \"" + v + "\" in \"" + node.name + "\" directive, it must be \"on\" or \"off\"";
  return false;
}

}  // namespace tidegate::conf
