// Listening sockets, created by the master before fork and kept across
// reloads so that no connection is refused while workers change. A
// `reuseport` address gets one socket per worker slot.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "conf/config.h"

namespace tidegate::process {

class ListenerSet {
 public:
  ListenerSet() = default;
  ~ListenerSet();
  ListenerSet(const ListenerSet&) = delete;
  ListenerSet& operator=(const ListenerSet&) = delete;

  // Makes sure every listen group of `cfg` has its sockets (for
  // `workers` slots), reusing the ones already open. Sockets no longer
  // named by `cfg` are closed by prune(). False with *err if bind() fails.
  bool open(const conf::Config& cfg, std::string* err);
  // Closes sockets that `cfg` no longer uses.
  void prune(const conf::Config& cfg);
  // The fds worker `slot` listens on, parallel to cfg.listen_groups.
  std::vector<int> fdsFor(const conf::Config& cfg, int slot) const;
  void closeAll();
  // In a forked worker: drop the copies of sockets it does not serve.
  void closeAllExcept(const std::vector<int>& keep);

  // Binary upgrade (USR2). The old master passes its sockets to the new
  // binary in the environment as "key=fd;key=fd;"; the new one adopts the
  // ones its conf still names instead of binding, and closes the rest.
  static constexpr const char* kInheritEnv = "TIDEGATE_INHERIT";
  std::string inheritSpec() const;
  void clearCloexec() const;
  // Reads and unsets the environment variable. Call before open().
  void adoptInherited();
  // Closes inherited sockets that open() did not use.
  void closeUnadopted();
  bool inherited() const { return inherited_any_; }

 private:
  static std::string socketKey(const conf::Config::ListenGroup& g, int slot);
  std::map<std::string, int> fds_;
  std::map<std::string, int> inherited_;
  bool inherited_any_ = false;
};

}  // namespace tidegate::process
