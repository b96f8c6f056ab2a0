// Error log in nginx's shape, because users grep it:
//   2026/11/29 16:20:00 [error] 1234#1234: *5 what failed, client: 1.2.3.4, ...
// One process-wide sink; every process (master, workers) opens the file with
// O_APPEND so lines from different processes never interleave mid-line.
#pragma once

#include <cstdarg>
#include <cstdint>
#include <string>
#include <string_view>

namespace tidegate::core {

enum class LogLevel { kDebug = 0, kInfo, kNotice, kWarn, kError, kCrit, kAlert, kEmerg };

// Parses "debug".."emerg"; returns false for anything else.
bool parseLogLevel(std::string_view text, LogLevel* out);
const char* logLevelName(LogLevel level);

class ErrorLog {
 public:
  // Opens (or reopens) `path`; "stderr" writes to fd 2. Returns false and
  // leaves the previous sink in place when the file cannot be opened.
  static bool open(const std::string& path, LogLevel level, std::string* err);
  static bool reopen(std::string* err);
  static void setLevel(LogLevel level);
  static bool enabled(LogLevel level);
  // Makes fd 2 point at the log file, so stray writes land in the log (nginx does the same).
  static void redirectStderr();
  static int fd();

  // `conn` is the connection number printed as "*N" (0 = none).
  static void write(LogLevel level, unsigned long conn, const char* fmt, ...)
      __attribute__((format(printf, 3, 4)));
  static void vwrite(LogLevel level, unsigned long conn, const char* fmt, va_list ap);
};

// Per call site: at most kBurst lines per second; the first line after a
// quiet spell says how many were dropped. For lines a client can trigger at
// will (bad requests, timeouts), so a flood cannot fill the disk.
class LogRateLimit {
 public:
  static constexpr unsigned kBurst = 20;
  // True if this line may be written now; *suppressed is the number dropped
  // since the last written line (to mention in it).
  bool allow(unsigned long* suppressed);

 private:
  uint64_t window_start_ms_ = 0;
  unsigned in_window_ = 0;
  unsigned long dropped_ = 0;
};

}  // namespace tidegate::core

#define TG_LOG(level, ...)                                                   \
  do {                                                                       \
    if (::tidegate::core::ErrorLog::enabled(level))                          \
      ::tidegate::core::ErrorLog::write(level, 0, __VA_ARGS__);              \
  } while (0)
// Like TG_LOG_CONN, rate-limited per call site (see LogRateLimit).
#define TG_LOG_CONN_LIMITED(level, conn, fmt, ...)                                                      \
  do {                                                                                                 \
    static ::tidegate::core::LogRateLimit tg_limit_;                                                   \
    unsigned long tg_dropped_ = 0;                                                                     \
    if (::tidegate::core::ErrorLog::enabled(level) && tg_limit_.allow(&tg_dropped_)) {                 \
      if (tg_dropped_) ::tidegate::core::ErrorLog::write(level, conn, "(%lu similar lines suppressed) " fmt, \
                                                         tg_dropped_, __VA_ARGS__);                    \
      else ::tidegate::core::ErrorLog::write(level, conn, fmt, __VA_ARGS__);                           \
    }                                                                                                  \
  } while (0)
#define TG_LOG_CONN(level, conn, ...)                                        \
  do {                                                                       \
    if (::tidegate::core::ErrorLog::enabled(level))                          \
      ::tidegate::core::ErrorLog::write(level, conn, __VA_ARGS__);           \
  } while (0)
