// Access log writer for one worker: one fd per distinct path, opened with
// O_APPEND so workers can share a file, reopened on USR1.
#pragma once

#include <map>
#include <string>

#include "conf/config.h"
#include "http/request.h"

namespace tidegate::http {

class AccessLog {
 public:
  AccessLog() = default;
  ~AccessLog();
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  // Opens every access_log path of the conf. False (with *err) if one fails.
  bool open(const conf::Config& cfg, std::string* err);
  // Checks that every access_log path of `cfg` can be opened for appending
  // (creating it), as -t and a reload must before anything changes.
  static bool check(const conf::Config& cfg, std::string* err);
  bool reopen(std::string* err);
  void log(const Request& r);

 private:
  int fdFor(const std::string& path);
  std::map<std::string, int> fds_;
  std::string line_;
};

// Formats one line (without the newline) as nginx would: variable values
// escaped (", \ and bytes outside 0x20-0x7e as \xHH), empty ones as "-".
void formatLogLine(const conf::LogFormat& fmt, const Request& r, std::string* out);

}  // namespace tidegate::http
