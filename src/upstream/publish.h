// The conf's upstream blocks into the shared upstream table: the master
// does it when a conf loads (before init_by_lua* and before it forks) and on
// every reload. Upstreams the conf made and no longer has are removed;
// those made or replaced at runtime (origin other than "conf") are left
// alone: runtime state wins over the conf until it is deleted.
#pragma once

#include <string>

#include "conf/config.h"
#include "shm/upstream_table.h"

namespace tidegate::upstream {

// False with *err when the table is full (what was published stays).
bool publishConfUpstreams(const conf::Config& cfg, shm::UpstreamTable& table, std::string* err);

}  // namespace tidegate::upstream
