#include "http/router.h"

#include <cctype>
#include <string>

namespace tidegate::http {
namespace {

using conf::Location;
using conf::LocationMatch;
using LocationList = std::vector<std::shared_ptr<Location>>;

bool isRegex(const Location& l) {
  return l.match == LocationMatch::kRegex || l.match == LocationMatch::kRegexCaseless;
}

enum class Found { kNone, kPrefix, kExact, kRegex };

// nginx's ngx_http_core_find_location: the longest prefix at this level
// (its nested locations searched next); an exact or regex match inside is
// final. Unless the prefix found at this level is "^~", this level's
// regexes are tried in conf order and a match (then its own nested
// locations) wins over the prefix.
Found find(const LocationList& locs, std::string_view uri, const Location** out) {
  const Location* best = nullptr;
  for (const auto& l : locs) {
    if (l->match == LocationMatch::kExact) {
      if (uri == l->pattern) {
        *out = l.get();
        return Found::kExact;
      }
    } else if (!isRegex(*l)) {
      if (uri.substr(0, l->pattern.size()) == l->pattern && (!best || l->pattern.size() > best->pattern.size())) {
        best = l.get();
      }
    }
  }
  Found rc = Found::kNone;
  bool noregex = false;
  if (best) {
    *out = best;
    rc = Found::kPrefix;
    noregex = best->match == LocationMatch::kNoRegex;
    if (!best->children.empty()) {
      const Location* nested = nullptr;
      Found inner = find(best->children, uri, &nested);
      if (inner != Found::kNone) *out = nested;
      if (inner == Found::kExact || inner == Found::kRegex) return inner;
    }
  }
  if (noregex) return rc;
  for (const auto& l : locs) {
    if (isRegex(*l) && l->regex->matches(uri)) {
      *out = l.get();
      if (!l->children.empty()) {
        const Location* nested = nullptr;
        if (find(l->children, uri, &nested) != Found::kNone) *out = nested;
      }
      return Found::kRegex;
    }
  }
  return rc;
}

bool wildcardMatch(const conf::ServerName& sn, std::string_view host) {
  if (sn.kind == conf::ServerName::Kind::kLeadingWild) {
    // sn.name is ".example.com": the host must end with it and have more before it.
    return host.size() > sn.name.size() && host.substr(host.size() - sn.name.size()) == sn.name;
  }
  return host.size() > sn.name.size() && host.substr(0, sn.name.size()) == sn.name;
}

}  // namespace

const conf::Server* findServer(const conf::Config::ListenGroup& group, std::string_view host_in) {
  if (group.servers.size() == 1) return group.default_server.get();
  std::string host(host_in);
  for (char& c : host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!host.empty() && host.back() == '.') host.pop_back();
  if (host.empty()) return group.default_server.get();
  for (const auto& s : group.servers) {
    for (const auto& n : s->names) {
      if (n.kind == conf::ServerName::Kind::kExact && n.name == host) return s.get();
    }
  }
  for (auto kind : {conf::ServerName::Kind::kLeadingWild, conf::ServerName::Kind::kTrailingWild}) {
    const conf::Server* best = nullptr;
    size_t best_len = 0;
    for (const auto& s : group.servers) {
      for (const auto& n : s->names) {
        if (n.kind == kind && n.name.size() > best_len && wildcardMatch(n, host)) {
          best = s.get();
          best_len = n.name.size();
        }
      }
    }
    if (best) return best;
  }
  for (const auto& s : group.servers) {
    for (const auto& n : s->names) {
      if (n.kind == conf::ServerName::Kind::kRegex && n.regex->matches(host)) return s.get();
    }
  }
  return group.default_server.get();
}

const conf::Location* findLocation(const conf::Server& server, std::string_view uri) {
  const Location* out = nullptr;
  find(server.locations, uri, &out);
  return out;
}

}  // namespace tidegate::http
