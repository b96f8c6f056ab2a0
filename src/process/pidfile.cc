#include "process/pidfile.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

namespace tidegate::process {

bool writePidFile(const std::string& path, pid_t pid, std::string* err) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    *err = "open() \"" + path + "\" failed (" + std::to_string(errno) + ": " + strerror(errno) + ")";
    return false;
  }
  std::string text = std::to_string(pid) + "\n";
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  if (!ok) *err = "write() to \"" + path + "\" failed";
  return ok;
}

pid_t readPidFile(const std::string& path, std::string* err) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *err = "open() \"" + path + "\" failed (" + std::to_string(errno) + ": " + strerror(errno) + ")";
    return -1;
  }
  char buf[32] = {0};
  ssize_t n = ::read(fd, buf, sizeof(buf) - 1);
  ::close(fd);
  long pid = n > 0 ? strtol(buf, nullptr, 10) : 0;
  if (pid <= 0) {
    *err = "invalid PID number \"" + std::string(buf, n > 0 ? static_cast<size_t>(n) : 0) + "\" in \"" + path + "\"";
    return -1;
  }
  return static_cast<pid_t>(pid);
}

void removePidFile(const std::string& path, pid_t pid) {
  std::string err;
  if (readPidFile(path, &err) == pid) unlink(path.c_str());
}

}  // namespace tidegate::process
