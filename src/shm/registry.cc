#include "shm/registry.h"

#include <time.h>

namespace tidegate::shm {

SharedDicts& SharedDicts::instance() {
  static SharedDicts registry;
  return registry;
}

int64_t SharedDicts::nowMs() {
  // The coarse clock (a few ns, a tick of resolution): expiry needs no more
  // precision than nginx's cached time gives its shared dicts.
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

Dict* SharedDicts::make(const Key& key, std::string* err) {
  auto it = zones_.find(key);
  if (it != zones_.end()) return it->second.dict.get();
  Entry e;
  e.zone = Zone::create(std::get<2>(key), err);
  if (!e.zone || !Dict::init(*e.zone, err)) return nullptr;
  e.dict = std::make_unique<Dict>(*e.zone, &SharedDicts::nowMs);
  return zones_.emplace(key, std::move(e)).first->second.dict.get();
}

bool SharedDicts::ensure(const std::vector<conf::SharedDictConf>& dicts, std::string* err) {
  for (const conf::SharedDictConf& d : dicts) {
    std::string why;
    if (!make(Key(false, d.name, d.size), &why)) {
      *err = "lua_shared_dict \"" + d.name + "\": " + why + " in " + d.where;
      return false;
    }
  }
  return true;
}

Dict* SharedDicts::ensureInternal(const std::string& name, uint64_t size, std::string* err) {
  return make(Key(true, name, size), err);
}

uint64_t SharedDicts::sweepExpired(uint64_t scan_each) {
  uint64_t n = 0;
  for (auto& [key, e] : zones_) n += e.dict->flushExpired(0, scan_each);
  return n;
}

Dict* SharedDicts::find(const std::string& name, uint64_t size) {
  auto it = zones_.find(Key(false, name, size));
  return it == zones_.end() ? nullptr : it->second.dict.get();
}

Dict* SharedDicts::findInternal(const std::string& name, uint64_t size) {
  auto it = zones_.find(Key(true, name, size));
  return it == zones_.end() ? nullptr : it->second.dict.get();
}

}  // namespace tidegate::shm
