#include "http/access_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/log.h"
#include "http/variables.h"

namespace tidegate::http {
namespace {

void collectPaths(const conf::HttpSettings& s, std::map<std::string, int>* fds) {
  if (!s.access_logs) return;
  for (const auto& t : *s.access_logs) fds->emplace(t.path, -1);
}


int openAppend(const std::string& path) {
  return ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

void appendEscaped(std::string_view v, std::string* out) {
  static const char kHex[] = "0123456789ABCDEF";
  for (char ch : v) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\' || c < 0x20 || c > 0x7e) {
      out->append("\\x");
      out->push_back(kHex[c >> 4]);
      out->push_back(kHex[c & 15]);
    } else {
      out->push_back(ch);
    }
  }
}

}  // namespace

bool AccessLog::check(const conf::Config& cfg, std::string* err) {
  AccessLog probe;
  return probe.open(cfg, err);  // the destructor closes what it opened
}

AccessLog::~AccessLog() {
  for (auto& [path, fd] : fds_) {
    if (fd >= 0) ::close(fd);
  }
}

bool AccessLog::open(const conf::Config& cfg, std::string* err) {
  conf::forEachSettings(cfg.http, [this](const conf::HttpSettings& s) { collectPaths(s, &fds_); });
  for (auto& [path, fd] : fds_) {
    fd = openAppend(path);
    if (fd < 0) {
      *err = "open() \"" + path + "\" failed (" + std::to_string(errno) + ": " + strerror(errno) + ")";
      return false;
    }
  }
  return true;
}

bool AccessLog::reopen(std::string* err) {
  bool ok = true;
  for (auto& [path, fd] : fds_) {
    int nfd = openAppend(path);
    if (nfd < 0) {
      *err = "open() \"" + path + "\" failed (" + std::to_string(errno) + ": " + strerror(errno) + ")";
      ok = false;
      continue;  // keep writing to the old file rather than losing lines
    }
    if (fd >= 0) ::close(fd);
    fd = nfd;
  }
  return ok;
}

int AccessLog::fdFor(const std::string& path) {
  auto it = fds_.find(path);
  return it == fds_.end() ? -1 : it->second;
}

void formatLogLine(const conf::LogFormat& fmt, const Request& r, std::string* out) {
  std::string value;
  for (const auto& part : fmt.format.parts) {
    if (!part.is_var) {
      out->append(part.literal);
      continue;
    }
    value.clear();
    appendVariable(part.var, r, &value);
    if (value.empty()) out->push_back('-');
    else appendEscaped(value, out);
  }
}

void AccessLog::log(const Request& r) {
  if (!r.server) return;
  const auto& targets = r.settings().access_logs;  // a reference: no copy per request
  if (!targets || targets->empty()) return;
  for (const auto& t : *targets) {
    int fd = fdFor(t.path);
    if (fd < 0 || !t.format) continue;
    line_.clear();
    formatLogLine(*t.format, r, &line_);
    line_.push_back('\n');
    ssize_t n = ::write(fd, line_.data(), line_.size());
    if (n < 0) TG_LOG(core::LogLevel::kAlert, "write() to \"%s\" failed (%d: %s)", t.path.c_str(), errno, strerror(errno));
  }
}

}  // namespace tidegate::http
