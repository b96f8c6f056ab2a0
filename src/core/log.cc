#include "core/log.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace tidegate::core {
namespace {

constexpr const char* kLevelNames[] = {"debug", "info", "notice", "warn",
                                       "error", "crit", "alert", "emerg"};

struct Sink {
  int fd = 2;
  std::string path = "stderr";
  LogLevel level = LogLevel::kError;
};

Sink& sink() {
  static Sink s;
  return s;
}

int openLogFile(const std::string& path) {
  if (path == "stderr") return dup(2);
  return ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

}  // namespace

bool parseLogLevel(std::string_view text, LogLevel* out) {
  for (int i = 0; i < 8; i++) {
    if (text == kLevelNames[i]) {
      *out = static_cast<LogLevel>(i);
      return true;
    }
  }
  return false;
}

const char* logLevelName(LogLevel level) { return kLevelNames[static_cast<int>(level)]; }

bool ErrorLog::open(const std::string& path, LogLevel level, std::string* err) {
  int fd = openLogFile(path);
  if (fd < 0) {
    if (err) *err = "open() \"" + path + "\" failed (" + std::to_string(errno) + ": " + strerror(errno) + ")";
    return false;
  }
  Sink& s = sink();
  if (s.fd > 2) ::close(s.fd);
  s.fd = fd;
  s.path = path;
  s.level = level;
  return true;
}

bool ErrorLog::reopen(std::string* err) {
  Sink& s = sink();
  if (s.path == "stderr") return true;
  return open(s.path, s.level, err);
}

bool LogRateLimit::allow(unsigned long* suppressed) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  uint64_t now = static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
  if (now - window_start_ms_ >= 1000) {
    window_start_ms_ = now;
    in_window_ = 0;
  }
  if (in_window_ >= kBurst) {
    dropped_++;
    return false;
  }
  in_window_++;
  *suppressed = dropped_;
  dropped_ = 0;
  return true;
}

void ErrorLog::setLevel(LogLevel level) { sink().level = level; }
bool ErrorLog::enabled(LogLevel level) { return level >= sink().level; }
int ErrorLog::fd() { return sink().fd; }

void ErrorLog::redirectStderr() {
  Sink& s = sink();
  if (s.path != "stderr" && s.fd > 2) dup2(s.fd, 2);
}

void ErrorLog::write(LogLevel level, unsigned long conn, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vwrite(level, conn, fmt, ap);
  va_end(ap);
}

void ErrorLog::vwrite(LogLevel level, unsigned long conn, const char* fmt, va_list ap) {
  char buf[4096];
  time_t now = time(nullptr);
  struct tm tm;
  localtime_r(&now, &tm);
  size_t n = strftime(buf, sizeof(buf), "%Y/%m/%d %H:%M:%S", &tm);
  long tid = syscall(SYS_gettid);
  int w = snprintf(buf + n, sizeof(buf) - n, " [%s] %d#%ld: ", logLevelName(level), getpid(), tid);
  if (w > 0) n += static_cast<size_t>(w);
  if (conn != 0) {
    w = snprintf(buf + n, sizeof(buf) - n, "*%lu ", conn);
    if (w > 0) n += static_cast<size_t>(w);
  }
  w = vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
  if (w > 0) n += static_cast<size_t>(w);
  if (n > sizeof(buf) - 2) n = sizeof(buf) - 2;
  buf[n++] = '\n';
  // A short write to a log is not worth failing a request over.
  ssize_t r = ::write(sink().fd, buf, n);
  (void)r;
}

}  // namespace tidegate::core
