#include "conf/lexer.h"

namespace tidegate::conf {
namespace {

bool isSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

// nginx's escapes, quoted or not: \" \' \\ \t \r \n; any other escape is
// kept verbatim with its backslash, so regexes such as \d survive.
void appendEscape(char e, std::string* out) {
  switch (e) {
    case 'n': *out += '\n'; break;
    case 't': *out += '\t'; break;
    case 'r': *out += '\r'; break;
    case '"': case '\'': case '\\': *out += e; break;
    default: *out += '\\'; *out += e; break;
  }
}

}  // namespace

bool Lexer::skipSpaceAndComments() {
  while (!eof()) {
    char c = peek();
    if (isSpace(c)) {
      advance();
    } else if (c == '#') {
      while (!eof() && peek() != '\n') advance();
    } else {
      return true;
    }
  }
  return false;
}

bool Lexer::next(Token* tok, ConfError* err) {
  *tok = Token{};
  if (!skipSpaceAndComments()) {
    tok->type = TokenType::kEnd;
    tok->line = line_;
    return true;
  }
  tok->line = line_;
  char c = peek();
  switch (c) {
    case ';':
      advance();
      tok->type = TokenType::kSemicolon;
      return true;
    case '{':
      advance();
      tok->type = TokenType::kOpenBrace;
      return true;
    case '}':
      advance();
      tok->type = TokenType::kCloseBrace;
      return true;
    case '"':
    case '\'':
      return readQuoted(c, tok, err);
    default:
      return readWord(tok, err);
  }
}

bool Lexer::readQuoted(char quote, Token* tok, ConfError* err) {
  int start_line = line_;
  advance();  // opening quote
  tok->type = TokenType::kWord;
  tok->quoted = true;
  while (!eof()) {
    char c = peek();
    if (c == quote) {
      advance();
      // nginx requires a separator after a closing quote: "a"b is an error.
      char n = peek();
      if (!eof() && !isSpace(n) && n != ';' && n != '{' && n != '}') {
        *err = error(std::string("unexpected \"") + n + "\"");
        return false;
      }
      return true;
    }
    if (c == '\\' && pos_ + 1 < src_.size()) {
      advance();
      appendEscape(peek(), &tok->text);
      advance();
      continue;
    }
    tok->text += c;
    advance();
  }
  *err = ConfError{"unexpected end of file, expecting \"" + std::string(1, quote) + "\"", file_, start_line};
  return false;
}

bool Lexer::readWord(Token* tok, ConfError* err) {
  tok->type = TokenType::kWord;
  while (!eof()) {
    char c = peek();
    if (isSpace(c) || c == ';' || c == '{' || c == '}') break;
    if (c == '$' && peek(1) == '{') {
      // "${var}" keeps its braces: copy through the closing brace.
      size_t close = src_.find('}', pos_);
      if (close == std::string_view::npos) {
        *err = error("unexpected end of file, expecting \"}\" in variable name");
        return false;
      }
      while (pos_ <= close) {
        tok->text += peek();
        advance();
      }
      continue;
    }
    if (c == '\\' && pos_ + 1 < src_.size()) {
      advance();
      appendEscape(peek(), &tok->text);
      advance();
      continue;
    }
    tok->text += c;
    advance();
  }
  return true;
}

std::optional<size_t> Lexer::longBracketLevel() const {
  size_t i = pos_ + 1;
  size_t level = 0;
  while (i < src_.size() && src_[i] == '=') {
    level++;
    i++;
  }
  if (i < src_.size() && src_[i] == '[') return level;
  return std::nullopt;
}

bool Lexer::skipLuaLongBracket(size_t level) {
  // At '[': skip "[==[" then find "]==]".
  for (size_t i = 0; i < level + 2; i++) advance();
  while (!eof()) {
    if (peek() == ']') {
      size_t i = 1;
      while (i <= level && peek(i) == '=') i++;
      if (i == level + 1 && peek(i) == ']') {
        for (size_t k = 0; k < level + 2; k++) advance();
        return true;
      }
    }
    advance();
  }
  return false;
}

bool Lexer::skipLuaString(char quote) {
  advance();
  while (!eof()) {
    char c = peek();
    if (c == '\\') {
      advance();
      if (!eof()) advance();
      continue;
    }
    if (c == quote) {
      advance();
      return true;
    }
    if (c == '\n') return true;  // unfinished string: let Lua report it later
    advance();
  }
  return false;
}

bool Lexer::readLuaBlock(std::string* out, ConfError* err) {
  int start_line = line_;
  size_t start = pos_;
  int depth = 1;
  while (!eof()) {
    char c = peek();
    if (c == '-' && peek(1) == '-') {
      advance();
      advance();
      if (peek() == '[') {
        if (auto level = longBracketLevel()) {
          if (!skipLuaLongBracket(*level)) break;
          continue;
        }
      }
      while (!eof() && peek() != '\n') advance();
      continue;
    }
    if (c == '"' || c == '\'') {
      if (!skipLuaString(c)) break;
      continue;
    }
    if (c == '[') {
      if (auto level = longBracketLevel()) {
        if (!skipLuaLongBracket(*level)) break;
        continue;
      }
    }
    if (c == '{') depth++;
    if (c == '}') {
      depth--;
      if (depth == 0) {
        *out = std::string(src_.substr(start, pos_ - start));
        advance();
        return true;
      }
    }
    advance();
  }
  *err = ConfError{"unexpected end of file, expecting \"}\" to close the Lua block", file_, start_line};
  return false;
}

}  // namespace tidegate::conf
