// Picks the server block for a Host and the location for a normalised URI,
// with nginx's rules and order.
#pragma once

#include <string_view>

#include "conf/config.h"

namespace tidegate::http {

// Exact name, then the longest leading wildcard, then the longest trailing
// wildcard, then regexes in conf order; otherwise the default server.
const conf::Server* findServer(const conf::Config::ListenGroup& group, std::string_view host);

// nginx's order: "=" exact; else the longest prefix; nested locations of
// that prefix are searched next; "^~" stops there; otherwise the first
// matching regex (conf order) wins over the prefix. nullptr when none match.
const conf::Location* findLocation(const conf::Server& server, std::string_view uri);

}  // namespace tidegate::http
