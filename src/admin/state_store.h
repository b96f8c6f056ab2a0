// What the admin API changed, kept in the state directory (state_dir) so a
// restart or a reload loses nothing: `upstreams.json` holds every upstream
// made or replaced at runtime (the table entries whose origin is not
// "conf"), as one JSON object {"version": 1, "upstreams": [spec, ...]}.
//
// Writes are atomic and durable: the new content goes to a temporary file
// in the same directory, is fsync()ed, renamed over the old one, and the
// directory is fsync()ed, so a crash leaves the old file or the new one.
// Writers in several workers take an exclusive flock() on `.lock` in the
// directory around "change the table, write the file" (Lock), so the file
// always matches the table of the last writer.
#pragma once

#include <string>

#include "conf/config.h"
#include "shm/upstream_table.h"

namespace tidegate::admin {

class StateStore {
 public:
  explicit StateStore(std::string dir) : dir_(std::move(dir)) {}

  // Holds the directory's lock while alive (blocking flock). ok() false
  // with *err if the directory cannot be made or locked.
  class Lock {
   public:
    Lock(const StateStore& store, std::string* err);
    ~Lock();
    Lock(const Lock&) = delete;
    Lock& operator=(const Lock&) = delete;
    bool ok() const { return fd_ >= 0; }

   private:
    int fd_ = -1;
  };

  // Writes every runtime upstream of `table` to upstreams.json. Call with
  // the Lock held. False with *err (the file is unchanged then).
  bool saveUpstreams(shm::UpstreamTable& table, std::string* err) const;
  // Publishes the saved upstreams into `table` (they win over the conf's of
  // the same name). A missing file is no state. False with *err on a file
  // that cannot be read or parsed (nothing is published then).
  bool loadUpstreams(shm::UpstreamTable& table, const conf::UserVariables* vars, std::string* err) const;

  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

// One change of an index file in the state directory (lua/index.json,
// ssl/index.json): the directory's lock, held from construction to
// destruction, and the index as `read` found it under the lock. ok() false
// with error() set when either failed.
template <class Index>
class LockedIndex {
 public:
  using Reader = bool (*)(const std::string& dir, Index* out, std::string* err);
  LockedIndex(const std::string& dir, Reader read) : dir_(dir), store_(dir), lock_(store_, &err_) {
    if (!lock_.ok()) err_ = "cannot lock the state directory: " + err_;
    else ok_ = read(dir, &index_, &err_);
  }
  bool ok() const { return ok_; }
  const std::string& error() const { return err_; }
  const std::string& dir() const { return dir_; }
  Index& index() { return index_; }

 private:
  std::string dir_;
  StateStore store_;
  std::string err_;
  StateStore::Lock lock_;
  bool ok_ = false;
  Index index_;
};

// Writes `content` to `path` atomically and durably (see above).
bool writeFileAtomic(const std::string& path, const std::string& content, std::string* err);

}  // namespace tidegate::admin
