#include "http/request_body.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

namespace tidegate::http {
namespace {

// A string kept between requests gives back memory past this.
constexpr size_t kKeepCapacity = 64 * 1024;

// nginx's shape: `open() "/p" failed (2: No such file or directory)`.
std::string syscallError(const char* call, const std::string& path, int err) {
  std::string s(call);
  s.append("() \"").append(path).append("\" failed (").append(std::to_string(err)).append(": ");
  s.append(strerror(err)).append(")");
  return s;
}

// mkdir -p, mode 0700 as nginx makes its temp paths (only the worker reads them).
bool makeDirs(const std::string& dir) {
  for (size_t pos = 1; pos <= dir.size(); pos++) {
    if (pos < dir.size() && dir[pos] != '/') continue;
    std::string part = dir.substr(0, pos);
    if (mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) return false;
  }
  return true;
}

// Ten digits like nginx's temp files; the start differs per process so
// that workers sharing the directory rarely collide (O_EXCL settles it).
uint32_t nextTempNumber() {
  static uint32_t next = static_cast<uint32_t>(getpid()) * 7919u + static_cast<uint32_t>(time(nullptr));
  return next++ % 1000000000u;
}

}  // namespace

void RequestBody::start(uint64_t memory_limit, const std::string* temp_dir) {
  if (dirty_) reset();
  dirty_ = true;
  keeping_ = true;
  limit_ = memory_limit;
  temp_dir_ = temp_dir;
}

bool RequestBody::openTempFile() {
  if (!temp_dir_) {
    error_ = "no client_body_temp_path";
    return false;
  }
  bool made_dir = false;
  for (int attempt = 0; attempt < 100; attempt++) {
    char name[16];
    snprintf(name, sizeof(name), "/%010u", nextTempNumber());
    std::string path = *temp_dir_ + name;
    int fd = open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
    if (fd >= 0) {
      fd_ = fd;
      path_ = std::move(path);
      clean_ = true;
      return true;
    }
    if (errno == EEXIST) continue;
    if (errno == ENOENT && !made_dir) {  // the directory is made when first needed
      made_dir = true;
      if (makeDirs(*temp_dir_)) continue;
    }
    error_ = syscallError("open", path, errno);
    return false;
  }
  error_ = "no free temp file name in \"" + *temp_dir_ + "\"";
  return false;
}

bool RequestBody::writeAll(std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd_, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error_ = syscallError("write", path_, n < 0 ? errno : ENOSPC);
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

bool RequestBody::append(std::string_view data) {
  if (!keeping_ || failed_ || data.empty()) return !failed_;
  size_ += data.size();
  if (data_.size() + data.size() <= limit_) {
    data_.append(data);
    return true;
  }
  // Past the limit: the body goes to (or on in) a file; what waited in
  // memory is written first, then this piece, so memory never holds more.
  if (fd_ < 0) {
    if (!openTempFile()) {
      failed_ = true;
      return false;
    }
    spilled_ = true;
  }
  if (!writeAll(data_) || !writeAll(data)) {
    failed_ = true;
    return false;
  }
  data_.clear();
  return true;
}

bool RequestBody::flush() {
  if (fd_ < 0 || failed_) return !failed_;
  if (!writeAll(data_)) {
    failed_ = true;
    return false;
  }
  data_.clear();
  return true;
}

void RequestBody::seal() {
  keeping_ = false;
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool RequestBody::takeSpilled() {
  bool s = spilled_;
  spilled_ = false;
  return s;
}

void RequestBody::discard() {
  bool read = read_;
  reset();
  read_ = read;
  discarded_ = true;
  dirty_ = true;
}

void RequestBody::setData(std::string_view data) {
  dirty_ = true;
  dropFile();
  data_.assign(data);
  size_ = data.size();
  keeping_ = false;  // a new body: nothing more is appended to it
}

bool RequestBody::setFile(const std::string& path, bool clean, std::string* err) {
  struct stat st;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &st) != 0) {
    *err = syscallError(fd < 0 ? "open" : "fstat", path, errno);
    if (fd >= 0) ::close(fd);
    return false;
  }
  ::close(fd);
  dirty_ = true;
  dropFile();
  data_.clear();
  keeping_ = false;
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ == 0) {  // an empty body has no file, as in OpenResty
    if (clean) unlink(path.c_str());
    return true;
  }
  path_ = path;
  clean_ = clean;
  return true;
}

void RequestBody::dropFile() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!path_.empty() && clean_) unlink(path_.c_str());
  path_.clear();
}

void RequestBody::reset() {
  dropFile();
  if (data_.capacity() > kKeepCapacity) std::string().swap(data_);
  data_.clear();
  error_.clear();
  size_ = limit_ = 0;
  temp_dir_ = nullptr;
  dirty_ = keeping_ = spilled_ = failed_ = read_ = discarded_ = false;
  clean_ = true;
}

}  // namespace tidegate::http
