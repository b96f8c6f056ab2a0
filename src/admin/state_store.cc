#include "admin/state_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "conf/parser.h"
#include "upstream/upstream_json.h"

namespace tidegate::admin {
namespace {

using nlohmann::json;

std::string sysError(const char* call, const std::string& path) {
  return std::string(call) + "() \"" + path + "\" failed (" + std::to_string(errno) + ": " + strerror(errno) + ")";
}

bool makeDir(const std::string& dir, std::string* err) {
  if (mkdir(dir.c_str(), 0700) == 0 || errno == EEXIST) return true;
  *err = sysError("mkdir", dir);
  return false;
}

bool writeAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

bool writeFileAtomic(const std::string& path, const std::string& content, std::string* err) {
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    *err = sysError("open", tmp);
    return false;
  }
  if (!writeAll(fd, content) || fsync(fd) != 0) {
    *err = sysError("write", tmp);
    ::close(fd);
    unlink(tmp.c_str());
    return false;
  }
  ::close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    *err = sysError("rename", tmp);
    unlink(tmp.c_str());
    return false;
  }
  std::string dir = path.substr(0, path.rfind('/'));
  int dfd = ::open(dir.empty() ? "/" : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);  // the rename itself is durable
    ::close(dfd);
  }
  return true;
}

StateStore::Lock::Lock(const StateStore& store, std::string* err) {
  if (!makeDir(store.dir_, err)) return;
  std::string path = store.dir_ + "/.lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    *err = sysError("open", path);
    return;
  }
  while (flock(fd_, LOCK_EX) != 0) {
    if (errno == EINTR) continue;
    *err = sysError("flock", path);
    ::close(fd_);
    fd_ = -1;
    return;
  }
}

StateStore::Lock::~Lock() {
  if (fd_ >= 0) ::close(fd_);  // releases the flock
}

bool StateStore::saveUpstreams(shm::UpstreamTable& table, std::string* err) const {
  std::vector<shm::UpstreamTable::Entry> entries;
  table.list(&entries);
  json list = json::array();
  for (const shm::UpstreamTable::Entry& e : entries) {
    json spec = json::parse(e.spec, nullptr, false);
    if (!spec.is_object() || spec.value("origin", "") == "conf") continue;
    list.push_back(std::move(spec));
  }
  json doc{{"version", 1}, {"upstreams", list}};
  return makeDir(dir_, err) && writeFileAtomic(dir_ + "/upstreams.json", doc.dump(1) + "\n", err);
}

bool StateStore::loadUpstreams(shm::UpstreamTable& table, const conf::UserVariables* vars, std::string* err) const {
  std::string path = dir_ + "/upstreams.json";
  if (::access(path.c_str(), F_OK) != 0 && errno == ENOENT) return true;  // no state yet
  std::string text;
  if (!conf::readFile(path, &text, err)) return false;
  json doc = json::parse(text, nullptr, false);
  if (!doc.is_object() || !doc.contains("upstreams") || !doc["upstreams"].is_array()) {
    *err = "\"" + path + "\" is not a tidegate state file";
    return false;
  }
  // Everything is checked before anything is published.
  std::vector<std::pair<std::string, std::string>> specs;
  for (const json& spec : doc["upstreams"]) {
    conf::UpstreamConf u;
    std::string origin, why, field;
    std::string text_spec = spec.dump();
    if (!upstream::upstreamFromJson(text_spec, &u, &origin, vars, &why, &field) || u.name.empty()) {
      *err = "\"" + path + "\": upstream \"" + u.name + "\": " + (why.empty() ? "no name" : why);
      return false;
    }
    specs.emplace_back(u.name, std::move(text_spec));
  }
  for (const auto& [name, spec] : specs) {
    if (!table.put(name, spec, err)) return false;
  }
  return true;
}

}  // namespace tidegate::admin
