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

// Returns the match and whether it is final (exact or regex).
const Location* find(const LocationList& locs, std::string_view uri, bool* final_match) {
  *final_match = false;
  const Location* best = nullptr;
  for (const auto& l : locs) {
    if (l->match == LocationMatch::kExact) {
      if (uri == l->pattern) {
        *final_match = true;
        return l.get();
      }
    } else if (!isRegex(*l)) {
      if (uri.substr(0, l->pattern.size()) == l->pattern && (!best || l->pattern.size() > best->pattern.size())) {
        best = l.get();
      }
    }
  }
  if (best && !best->children.empty()) {
    bool nested_final = false;
    const Location* nested = find(best->children, uri, &nested_final);
    if (nested && nested_final) {
      *final_match = true;
      return nested;
    }
    if (nested) best = nested;
  }
  if (best && best->match == LocationMatch::kNoRegex) return best;
  for (const auto& l : locs) {
    if (isRegex(*l) && l->regex->matches(uri)) {
      *final_match = true;
      return l.get();
    }
  }
  return best;
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
  bool final_match = false;
  return find(server.locations, uri, &final_match);
}

}  // namespace tidegate::http
