// Error log in nginx's shape, because users grep it:
//   2026/11/29 16:20:00 [error] 1234#1234: *5 what failed, client: 1.2.3.4, ...
// One process-wide sink; every process (master, workers) opens the file with
// O_APPEND so lines from different processes never interleave mid-line.
#pragma once

#include <cstdarg>
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

}  // namespace tidegate::core

#define TG_LOG(level, ...)                                                   \
  do {                                                                       \
    if (::tidegate::core::ErrorLog::enabled(level))                          \
      ::tidegate::core::ErrorLog::write(level, 0, __VA_ARGS__);              \
  } while (0)
#define TG_LOG_CONN(level, conn, ...)                                        \
  do {                                                                       \
    if (::tidegate::core::ErrorLog::enabled(level))                          \
      ::tidegate::core::ErrorLog::write(level, conn, __VA_ARGS__);           \
  } while (0)
