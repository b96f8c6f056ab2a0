// Loads a conf file into an immutable Config: parse, run directives, merge
// inherited settings, group servers by listen address, validate.
#pragma once

#include <string>

#include "conf/ast.h"
#include "conf/config.h"

namespace tidegate::conf {

struct LoadOptions {
  std::string prefix;        // -p; default: current directory
  std::string conf_file;     // -c; relative to prefix
  std::string extra;         // -g 'directives;'
  std::string error_log;     // -e: used when the conf names no error_log
};

bool loadConfig(const LoadOptions& opts, ConfigPtr* out, ConfError* err);

// Used by tests: build from text with a given file name for messages.
bool loadConfigFromString(const std::string& text, const std::string& prefix, ConfigPtr* out, ConfError* err);

}  // namespace tidegate::conf
