// Tokenizer for the conf language. nginx's rules: words end at whitespace,
// ';', '{' or '}'; "..." and '...' quote with \-escapes; '#' starts a comment
// at the start of a token; "${name}" inside a word keeps its braces.
// Lua blocks are lexed by readLuaBlock() with Lua's own rules so that braces in
// Lua strings, long brackets and comments do not end the block.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "conf/ast.h"

namespace tidegate::conf {

enum class TokenType { kWord, kSemicolon, kOpenBrace, kCloseBrace, kEnd };

struct Token {
  TokenType type = TokenType::kEnd;
  std::string text;
  bool quoted = false;
  int line = 0;
};

class Lexer {
 public:
  Lexer(std::string_view src, std::string file) : src_(src), file_(std::move(file)) {}

  // Returns false and fills *err on a lexical error (unterminated quote...).
  bool next(Token* tok, ConfError* err);
  // Called right after the '{' of a *_by_lua_block: consumes Lua source up to
  // the matching '}' and stores it (without the braces) in *out.
  bool readLuaBlock(std::string* out, ConfError* err);
  int line() const { return line_; }
  const std::string& file() const { return file_; }

 private:
  bool skipSpaceAndComments();
  bool readQuoted(char quote, Token* tok, ConfError* err);
  bool readWord(Token* tok, ConfError* err);
  // Lua helpers: return false on EOF.
  bool skipLuaString(char quote);
  bool skipLuaLongBracket(size_t level);
  std::optional<size_t> longBracketLevel() const;  // at '[' : level if "[=*["
  char peek(size_t ahead = 0) const { return pos_ + ahead < src_.size() ? src_[pos_ + ahead] : '\0'; }
  bool eof() const { return pos_ >= src_.size(); }
  void advance() {
    if (src_[pos_] == '\n') line_++;
    pos_++;
  }
  ConfError error(std::string text) const { return ConfError{std::move(text), file_, line_}; }

  std::string_view src_;
  std::string file_;
  size_t pos_ = 0;
  int line_ = 1;
};

}  // namespace tidegate::conf
