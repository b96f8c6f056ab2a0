// An upstream's description as JSON: how it is stored in the shared
// upstream table (shm/upstream_table.h), and the object the admin API and
// tidegate.upstream show. One format both ways:
//
//   {"name": "backend", "origin": "conf",
//    "servers": [{"host": "app1", "port": 8080, "addresses": ["10.0.0.5:8080"],
//                 "weight": 1, "max_fails": 1, "fail_timeout": 10,
//                 "backup": false, "down": false, "tier": 0}],
//    "balancer": {"type": "chash", "key": "$arg_u", "fail_open": false,
//                 "tier_min_healthy": 0},   (or {"type": "lua", "module": "name"})
//    "keepalive": 0, "keepalive_timeout": 60, "keepalive_requests": 1000,
//    "health_check": {"type": "http", "uri": "/", "host": "", "interval": 5,
//                     "unhealthy_interval": 5, "timeout": 1, "fails": 1,
//                     "passes": 1, "status": ["200-399"], "port": 0}}
//
// Durations are seconds (fractions allowed). health_check is absent when the
// upstream has none. `addresses` are what `host` resolved to; when absent,
// parsing resolves the host (blocking: the caller's business). `origin` is
// "conf" for an upstream block (a reload replaces it) and anything else for
// one made at runtime. balancer_by_lua* is not part of it: it stays with the
// conf that declared it.
#pragma once

#include <string>
#include <string_view>

#include "conf/config.h"

namespace tidegate::upstream {

std::string upstreamToJson(const conf::UpstreamConf& u, std::string_view origin);

// Fills *out from `text`. False with *err (and *field, the offending field's
// path such as "servers[1].port", when one is to blame) on malformed JSON, a
// value of the wrong type or range, or an unknown field. `vars` resolves
// user variables in the balancer key.
bool upstreamFromJson(std::string_view text, conf::UpstreamConf* out, std::string* origin,
                      const conf::UserVariables* vars, std::string* err, std::string* field);

}  // namespace tidegate::upstream
