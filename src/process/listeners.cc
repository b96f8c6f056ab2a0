#include "process/listeners.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <set>

namespace tidegate::process {
namespace {

// A unix-domain listener. A socket file left by a process that is gone is
// replaced; the socket is made 0600 (only this user may connect).
int openUnixSocket(const conf::Listen& l, std::string* err) {
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  memcpy(un.sun_path, l.unix_path.data(), l.unix_path.size());
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *err = std::string("socket() failed (") + std::to_string(errno) + ": " + strerror(errno) + ")";
    return -1;
  }
  struct stat st;
  if (lstat(l.unix_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) {
    // Still served? Then it is someone else's, and bind() reports it.
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool live = probe >= 0 && connect(probe, reinterpret_cast<sockaddr*>(&un), sizeof(un)) == 0;
    if (probe >= 0) ::close(probe);
    if (!live) unlink(l.unix_path.c_str());
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&un), sizeof(un)) != 0 || chmod(l.unix_path.c_str(), 0600) != 0 ||
      listen(fd, l.backlog) != 0) {
    *err = "bind() to " + l.key() + " failed (" + std::to_string(errno) + ": " + strerror(errno) + ")";
    ::close(fd);
    return -1;
  }
  return fd;
}

int openSocket(const conf::Listen& l, std::string* err) {
  if (l.isUnix()) return openUnixSocket(l, err);
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (l.ipv6()) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(l.port);
    if (inet_pton(AF_INET6, l.host.c_str(), &in6->sin6_addr) != 1) {
      *err = "invalid address \"" + l.host + "\"";
      return -1;
    }
    len = sizeof(*in6);
  } else {
    auto* in = reinterpret_cast<sockaddr_in*>(&ss);
    in->sin_family = AF_INET;
    in->sin_port = htons(l.port);
    if (inet_pton(AF_INET, l.host.c_str(), &in->sin_addr) != 1) {
      *err = "host not found in \"" + l.host + ":" + std::to_string(l.port) + "\" of the \"listen\" directive";
      return -1;
    }
    len = sizeof(*in);
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *err = std::string("socket() failed (") + std::to_string(errno) + ": " + strerror(errno) + ")";
    return -1;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (l.reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  if (l.ipv6()) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || listen(fd, l.backlog) != 0) {
    *err = "bind() to " + l.key() + " failed (" + std::to_string(errno) + ": " + strerror(errno) + ")";
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

ListenerSet::~ListenerSet() { closeAll(); }

std::string ListenerSet::socketKey(const conf::Config::ListenGroup& g, int slot) {
  return g.listen.reuseport ? g.listen.key() + "#reuseport" + std::to_string(slot) : g.listen.key();
}

bool ListenerSet::open(const conf::Config& cfg, std::string* err) {
  for (const auto& g : cfg.listen_groups) {
    if (g.via >= 0) continue;  // served through a wildcard socket
    int slots = g.listen.reuseport ? cfg.worker_processes : 1;
    for (int slot = 0; slot < slots; slot++) {
      std::string key = socketKey(g, slot);
      if (fds_.count(key)) continue;
      if (auto it = inherited_.find(key); it != inherited_.end()) {
        fds_[key] = it->second;  // from the old binary: already bound and listening
        inherited_.erase(it);
        continue;
      }
      int fd = openSocket(g.listen, err);
      if (fd < 0) return false;
      fds_[key] = fd;
    }
  }
  return true;
}

void ListenerSet::prune(const conf::Config& cfg) {
  std::set<std::string> used;
  for (const auto& g : cfg.listen_groups) {
    if (g.via >= 0) continue;
    int slots = g.listen.reuseport ? cfg.worker_processes : 1;
    for (int slot = 0; slot < slots; slot++) used.insert(socketKey(g, slot));
  }
  for (auto it = fds_.begin(); it != fds_.end();) {
    if (used.count(it->first)) {
      ++it;
    } else {
      ::close(it->second);
      it = fds_.erase(it);
    }
  }
}

std::vector<int> ListenerSet::fdsFor(const conf::Config& cfg, int slot) const {
  std::vector<int> out;
  for (const auto& g : cfg.listen_groups) {
    auto it = g.via >= 0 ? fds_.end() : fds_.find(socketKey(g, g.listen.reuseport ? slot : 0));
    out.push_back(it == fds_.end() ? -1 : it->second);
  }
  return out;
}

void ListenerSet::closeAllExcept(const std::vector<int>& keep) {
  for (auto it = fds_.begin(); it != fds_.end();) {
    if (std::find(keep.begin(), keep.end(), it->second) == keep.end()) {
      ::close(it->second);
      it = fds_.erase(it);
    } else {
      ++it;
    }
  }
}

std::string ListenerSet::inheritSpec() const {
  std::string spec;
  for (const auto& [key, fd] : fds_) spec += key + "=" + std::to_string(fd) + ";";
  return spec;
}

void ListenerSet::clearCloexec() const {
  for (const auto& [key, fd] : fds_) {
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0) fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
  }
}

void ListenerSet::adoptInherited() {
  const char* env = getenv(kInheritEnv);
  if (!env) return;
  std::string spec = env;
  unsetenv(kInheritEnv);  // workers and later binaries must not see it
  size_t pos = 0;
  while (pos < spec.size()) {
    size_t semi = spec.find(';', pos);
    if (semi == std::string::npos) semi = spec.size();
    std::string item = spec.substr(pos, semi - pos);
    pos = semi + 1;
    size_t eq = item.rfind('=');
    if (eq == std::string::npos) continue;
    int fd = atoi(item.c_str() + eq + 1);
    if (fd <= 2 || fcntl(fd, F_GETFD) < 0) continue;  // not an open fd of ours
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    inherited_[item.substr(0, eq)] = fd;
    inherited_any_ = true;
  }
}

void ListenerSet::closeUnadopted() {
  for (auto& [key, fd] : inherited_) ::close(fd);
  inherited_.clear();
}

void ListenerSet::closeAll() {
  for (auto& [key, fd] : fds_) ::close(fd);
  fds_.clear();
}

}  // namespace tidegate::process
