// Turns conf text into a tree of ConfNodes. `include` is expanded here (glob
// patterns, paths relative to the main conf file's directory) so later stages
// see one tree; every node remembers its own file and line.
#pragma once

#include <deque>
#include <string>
#include <vector>

#include "conf/ast.h"

namespace tidegate::conf {

class Parser {
 public:
  // `conf_dir` resolves relative include paths.
  explicit Parser(std::string conf_dir) : conf_dir_(std::move(conf_dir)) {}

  bool parseFile(const std::string& path, std::vector<ConfNode>* out, ConfError* err);
  bool parseString(const std::string& text, const std::string& name, std::vector<ConfNode>* out,
                   ConfError* err);
  // Every file read so far, main file first, includes in reading order.
  const std::vector<std::string>& files() const { return files_; }

 private:
  bool parseText(const std::string& text, const std::shared_ptr<const std::string>& file,
                 std::vector<ConfNode>* out, ConfError* err, int depth);
  bool expandInclude(const ConfNode& node, std::vector<ConfNode>* out, ConfError* err, int depth);

  std::string conf_dir_;
  // Keeps every file's text alive while its nodes are built.
  std::deque<std::string> sources_;  // deque: lexers hold views into it
  std::vector<std::string> files_;
};

// Reads a whole file; false with an errno text on failure.
bool readFile(const std::string& path, std::string* out, std::string* err);

}  // namespace tidegate::conf
