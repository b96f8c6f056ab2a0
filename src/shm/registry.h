// The process's shared dict zones, by name (lua_shared_dict). The master
// makes them when a conf is loaded, before it forks workers, so every
// worker inherits the same mappings; a reload keeps a zone whose name and
// size stay (its data with it) and makes the new ones (a resized zone is a
// new, empty one, as in nginx). Zones are never
// unmapped while the process lives: workers of an older conf may still use
// them.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "conf/config.h"
#include "shm/dict.h"
#include "shm/zone.h"

namespace tidegate::shm {

class SharedDicts {
 public:
  static SharedDicts& instance();

  // Makes the zones of `dicts` that do not exist with that size yet. False
  // with *err if a mapping fails.
  bool ensure(const std::vector<conf::SharedDictConf>& dicts, std::string* err);
  // The dict of that name and size as ensure() made it; null if none.
  Dict* find(const std::string& name, uint64_t size);
  // The same for tidegate's own zones (the TLS session cache and ticket
  // keys), in a namespace of their own: no lua_shared_dict name reaches
  // them. The zone is made on the first call (master, before fork); null
  // and *err if the mapping fails.
  Dict* ensureInternal(const std::string& name, uint64_t size, std::string* err);
  Dict* findInternal(const std::string& name, uint64_t size);

  // The periodic half of expiry (reads and writes free expired entries
  // lazily too): in every zone, frees the expired among the `scan_each`
  // least recently used entries. Returns how many went.
  uint64_t sweepExpired(uint64_t scan_each);

  // Milliseconds on a clock every process shares (CLOCK_MONOTONIC_COARSE), for expiry.
  static int64_t nowMs();

 private:
  struct Entry {
    std::unique_ptr<Zone> zone;
    std::unique_ptr<Dict> dict;
  };
  // (internal, name, size)
  using Key = std::tuple<bool, std::string, uint64_t>;
  Dict* make(const Key& key, std::string* err);
  std::map<Key, Entry> zones_;
};

}  // namespace tidegate::shm
