#include "conf/parser.h"

#include <glob.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "conf/lexer.h"

namespace tidegate::conf {
namespace {

// Deep enough for any sane layout; stops "include self;" loops.
constexpr int kMaxIncludeDepth = 32;

bool endsWith(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

struct Frame {
  std::vector<ConfNode>* list;
};

}  // namespace

bool readFile(const std::string& path, std::string* out, std::string* err) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *err = "open() \"" + path + "\" failed (" + std::to_string(errno) + ": " + strerror(errno) + ")";
    return false;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

bool Parser::parseFile(const std::string& path, std::vector<ConfNode>* out, ConfError* err) {
  std::string text, why;
  if (!readFile(path, &text, &why)) {
    *err = ConfError{why, "", 0};
    return false;
  }
  files_.push_back(path);
  return parseText(text, std::make_shared<const std::string>(path), out, err, 0);
}

bool Parser::parseString(const std::string& text, const std::string& name, std::vector<ConfNode>* out,
                         ConfError* err) {
  return parseText(text, std::make_shared<const std::string>(name), out, err, 0);
}

bool Parser::parseText(const std::string& text, const std::shared_ptr<const std::string>& file,
                       std::vector<ConfNode>* out, ConfError* err, int depth) {
  sources_.push_back(text);
  Lexer lex(sources_.back(), *file);
  // The stack of open blocks; the bottom is the top level of this file.
  std::vector<std::vector<ConfNode>*> stack{out};
  ConfNode cur;
  bool in_directive = false;
  Token tok;
  for (;;) {
    if (!lex.next(&tok, err)) return false;
    switch (tok.type) {
      case TokenType::kWord:
        if (!in_directive) {
          cur = ConfNode{};
          cur.name = tok.text;
          cur.file = file;
          cur.line = tok.line;
          in_directive = true;
          if (tok.quoted) {
            *err = ConfError{"unexpected quoted directive name \"" + tok.text + "\"", *file, tok.line};
            return false;
          }
        } else {
          cur.args.push_back(tok.text);
          cur.quoted.push_back(tok.quoted);
        }
        break;
      case TokenType::kSemicolon:
        if (!in_directive) {
          *err = ConfError{"unexpected \";\"", *file, tok.line};
          return false;
        }
        in_directive = false;
        if (cur.name == "include") {
          if (!expandInclude(cur, stack.back(), err, depth)) return false;
        } else {
          stack.back()->push_back(std::move(cur));
        }
        break;
      case TokenType::kOpenBrace:
        if (!in_directive) {
          *err = ConfError{"unexpected \"{\"", *file, tok.line};
          return false;
        }
        in_directive = false;
        cur.has_block = true;
        if (endsWith(cur.name, "_by_lua_block")) {
          std::string body;
          cur.lua_block = true;
          cur.lua_line = tok.line;
          if (!lex.readLuaBlock(&body, err)) return false;
          cur.args.push_back(std::move(body));
          cur.quoted.push_back(true);
          stack.back()->push_back(std::move(cur));
        } else {
          stack.back()->push_back(std::move(cur));
          stack.push_back(&stack.back()->back().children);
        }
        break;
      case TokenType::kCloseBrace:
        if (in_directive || stack.size() == 1) {
          *err = ConfError{"unexpected \"}\"", *file, tok.line};
          return false;
        }
        stack.pop_back();
        break;
      case TokenType::kEnd:
        if (in_directive) {
          *err = ConfError{"unexpected end of file, expecting \";\" or \"}\"", *file, tok.line};
          return false;
        }
        if (stack.size() != 1) {
          *err = ConfError{"unexpected end of file, expecting \"}\"", *file, tok.line};
          return false;
        }
        return true;
    }
  }
}

bool Parser::expandInclude(const ConfNode& node, std::vector<ConfNode>* out, ConfError* err, int depth) {
  if (node.args.size() != 1) {
    *err = ConfError{"invalid number of arguments in \"include\" directive", *node.file, node.line};
    return false;
  }
  if (depth >= kMaxIncludeDepth) {
    *err = ConfError{"include nesting too deep (over " + std::to_string(kMaxIncludeDepth) + ")",
                     *node.file, node.line};
    return false;
  }
  std::string pattern = node.args[0];
  if (!pattern.empty() && pattern[0] != '/') pattern = conf_dir_ + "/" + pattern;
  bool has_glob = pattern.find_first_of("*?[") != std::string::npos;
  glob_t g{};
  int rc = glob(pattern.c_str(), 0, nullptr, &g);
  if (rc == GLOB_NOMATCH && has_glob) {
    globfree(&g);
    return true;  // nginx: a wildcard include that matches nothing is fine
  }
  if (rc != 0) {
    globfree(&g);
    *err = ConfError{"open() \"" + pattern + "\" failed (2: No such file or directory)", *node.file, node.line};
    return false;
  }
  std::vector<std::string> paths(g.gl_pathv, g.gl_pathv + g.gl_pathc);
  globfree(&g);
  for (const auto& path : paths) {
    std::string text, why;
    if (!readFile(path, &text, &why)) {
      *err = ConfError{why, *node.file, node.line};
      return false;
    }
    files_.push_back(path);
    if (!parseText(text, std::make_shared<const std::string>(path), out, err, depth + 1)) return false;
  }
  return true;
}

}  // namespace tidegate::conf
