// The syntax tree of an nginx-style conf file, before any directive is
// interpreted. Later stages (directives.h) give the nodes their meaning.
#pragma once

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace tidegate::conf {

struct ConfNode {
  std::string name;
  std::vector<std::string> args;
  std::vector<bool> quoted;  // parallel to args: was the argument quoted?
  std::shared_ptr<const std::string> file;
  int line = 0;
  bool has_block = false;
  // A *_by_lua_block: args.back() holds the Lua source verbatim and
  // lua_line is the line of its opening brace.
  bool lua_block = false;
  int lua_line = 0;
  std::vector<ConfNode> children;

  std::string where() const { return (file ? *file : std::string("?")) + ":" + std::to_string(line); }
};

// An error with its position; message() renders nginx's "... in file:line".
struct ConfError {
  std::string text;
  std::string file;
  int line = 0;
  std::string message() const {
    if (file.empty()) return text;
    return text + " in " + file + ":" + std::to_string(line);
  }
  // An error found after the build, at a place the model kept as
  // ConfNode::where() ("file:line").
  static ConfError at(const std::string& where, std::string text) {
    size_t colon = where.rfind(':');
    if (colon == std::string::npos) return ConfError{std::move(text), where, 0};
    return ConfError{std::move(text), where.substr(0, colon), std::atoi(where.c_str() + colon + 1)};
  }
};

}  // namespace tidegate::conf
