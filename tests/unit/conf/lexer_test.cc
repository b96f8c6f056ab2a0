// Lexer: tokens, quoting and escapes, comments, ${var} words and the
// Lua-aware scanning of *_by_lua_block bodies (the latter through the Parser,
// which is what decides that a block is Lua).
#include "conf/lexer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "conf/parser.h"

namespace tidegate::conf {
namespace {

struct Lexed {
  bool ok = true;
  std::vector<Token> tokens;  // without the final kEnd
  ConfError err;
};

Lexed lexAll(std::string_view src) {
  Lexed out;
  Lexer lex(src, "t.conf");
  for (;;) {
    Token tok;
    if (!lex.next(&tok, &out.err)) {
      out.ok = false;
      return out;
    }
    if (tok.type == TokenType::kEnd) return out;
    out.tokens.push_back(tok);
  }
}

std::vector<std::string> words(const Lexed& l) {
  std::vector<std::string> w;
  for (const auto& t : l.tokens) {
    if (t.type == TokenType::kWord) w.push_back(t.text);
  }
  return w;
}

TEST(LexerTest, SplitsWordsAndPunctuation) {
  Lexed l = lexAll("server {\n  listen 80;\n}\n");
  ASSERT_TRUE(l.ok) << l.err.message();
  ASSERT_EQ(l.tokens.size(), 6u);
  EXPECT_EQ(l.tokens[0].type, TokenType::kWord);
  EXPECT_EQ(l.tokens[0].text, "server");
  EXPECT_EQ(l.tokens[1].type, TokenType::kOpenBrace);
  EXPECT_EQ(l.tokens[2].text, "listen");
  EXPECT_EQ(l.tokens[2].line, 2);
  EXPECT_EQ(l.tokens[3].text, "80");
  EXPECT_EQ(l.tokens[4].type, TokenType::kSemicolon);
  EXPECT_EQ(l.tokens[5].type, TokenType::kCloseBrace);
  EXPECT_EQ(l.tokens[5].line, 3);
}

TEST(LexerTest, WordsEndAtSemicolonAndBracesWithoutSpaces) {
  Lexed l = lexAll("a b;c{d}");
  ASSERT_TRUE(l.ok);
  ASSERT_EQ(l.tokens.size(), 7u);
  EXPECT_EQ(l.tokens[1].text, "b");
  EXPECT_EQ(l.tokens[2].type, TokenType::kSemicolon);
  EXPECT_EQ(l.tokens[3].text, "c");
  EXPECT_EQ(l.tokens[4].type, TokenType::kOpenBrace);
  EXPECT_EQ(l.tokens[5].text, "d");
  EXPECT_EQ(l.tokens[6].type, TokenType::kCloseBrace);
}

TEST(LexerTest, EmptyInputIsJustEnd) {
  Lexer lex("  \n\t # only a comment\n", "t.conf");
  Token tok;
  ConfError err;
  ASSERT_TRUE(lex.next(&tok, &err));
  EXPECT_EQ(tok.type, TokenType::kEnd);
  EXPECT_EQ(tok.line, 3);
}

TEST(LexerTest, HashStartsCommentOnlyAtTokenStart) {
  Lexed l = lexAll("a#b c; # comment ; {\nd;#x\n");
  ASSERT_TRUE(l.ok);
  EXPECT_EQ(words(l), (std::vector<std::string>{"a#b", "c", "d"}));
  ASSERT_EQ(l.tokens.size(), 5u);
  EXPECT_EQ(l.tokens[3].line, 2);
}

TEST(LexerTest, DoubleQuotedEscapes) {
  Lexed l = lexAll(R"("a\"b" "c\\d" "e\nf" "g\th" "i\rj")");
  ASSERT_TRUE(l.ok) << l.err.message();
  EXPECT_EQ(words(l), (std::vector<std::string>{"a\"b", "c\\d", "e\nf", "g\th", "i\rj"}));
  for (const auto& t : l.tokens) EXPECT_TRUE(t.quoted);
}

TEST(LexerTest, UnknownEscapesInQuotesKeepTheBackslash) {
  // nginx keeps "\d" verbatim, which is what makes quoted regexes work.
  Lexed l = lexAll(R"("^/a\d+\.php$" '\x')");
  ASSERT_TRUE(l.ok);
  EXPECT_EQ(words(l), (std::vector<std::string>{"^/a\\d+\\.php$", "\\x"}));
}

TEST(LexerTest, SingleQuotesAndQuotesInsideOtherQuotes) {
  Lexed l = lexAll(R"('say "hi"' "it's" 'it\'s' "")");
  ASSERT_TRUE(l.ok);
  EXPECT_EQ(words(l), (std::vector<std::string>{"say \"hi\"", "it's", "it's", ""}));
}

TEST(LexerTest, QuotedStringKeepsSpacesSemicolonsBracesAndNewlines) {
  Lexed l = lexAll("x \"a; {b}\nc\";\ny;");
  ASSERT_TRUE(l.ok);
  EXPECT_EQ(words(l), (std::vector<std::string>{"x", "a; {b}\nc", "y"}));
  EXPECT_EQ(l.tokens.back().line, 3);  // the ';' after y
}

TEST(LexerTest, UnquotedWordIsNotMarkedQuoted) {
  Lexed l = lexAll("plain \"q\";");
  ASSERT_TRUE(l.ok);
  EXPECT_FALSE(l.tokens[0].quoted);
  EXPECT_TRUE(l.tokens[1].quoted);
}

TEST(LexerTest, ClosingQuoteMustBeFollowedBySeparator) {
  Lexed l = lexAll("a \"b\"c;");
  ASSERT_FALSE(l.ok);
  EXPECT_EQ(l.err.message(), "unexpected \"c\" in t.conf:1");
  EXPECT_TRUE(lexAll("a \"b\";").ok);
  EXPECT_TRUE(lexAll("a \"b\"{").ok);
  EXPECT_TRUE(lexAll("a \"b\"}").ok);
}

TEST(LexerTest, UnterminatedQuoteReportsItsOpeningLine) {
  Lexed l = lexAll("a;\nb \"never\nclosed;\n");
  ASSERT_FALSE(l.ok);
  EXPECT_EQ(l.err.file, "t.conf");
  EXPECT_EQ(l.err.line, 2);
  EXPECT_NE(l.err.text.find("unexpected end of file"), std::string::npos);
}

TEST(LexerTest, DollarBraceVariableKeepsBracesInsideWord) {
  Lexed l = lexAll("return 200 ${host}x/${uri};");
  ASSERT_TRUE(l.ok) << l.err.message();
  EXPECT_EQ(words(l), (std::vector<std::string>{"return", "200", "${host}x/${uri}"}));
  EXPECT_EQ(l.tokens.back().type, TokenType::kSemicolon);
}

TEST(LexerTest, PlainBraceStillEndsAWord) {
  Lexed l = lexAll("a$b{");
  ASSERT_TRUE(l.ok);
  ASSERT_EQ(l.tokens.size(), 2u);
  EXPECT_EQ(l.tokens[0].text, "a$b");
  EXPECT_EQ(l.tokens[1].type, TokenType::kOpenBrace);
}

TEST(LexerTest, UnterminatedDollarBraceIsAnError) {
  Lexed l = lexAll("return 200 ${host");
  ASSERT_FALSE(l.ok);
  EXPECT_NE(l.err.text.find("variable name"), std::string::npos);
  EXPECT_EQ(l.err.line, 1);
}

TEST(LexerTest, BackslashEscapesSeparatorInUnquotedWord) {
  Lexed l = lexAll("a\\;b;");
  ASSERT_TRUE(l.ok);
  ASSERT_EQ(l.tokens.size(), 2u);
  EXPECT_EQ(l.tokens[0].text, "a\\;b");  // nginx keeps an unknown escape verbatim
  EXPECT_EQ(l.tokens[1].type, TokenType::kSemicolon);
}

// nginx's ngx_conf_read_token applies one escape rule to quoted and unquoted
// words alike: \" \' \\ \n \t \r are rewritten, any other "\x" is kept, so the
// common unquoted `location ~ \.php$` keeps its regex intact.
TEST(LexerTest, UnquotedWordsUseTheSameEscapesAsQuoted) {
  Lexed l = lexAll("location ~ \\.php$ {");
  ASSERT_TRUE(l.ok);
  ASSERT_GE(l.tokens.size(), 3u);
  EXPECT_EQ(l.tokens[2].text, "\\.php$");
  EXPECT_EQ(words(lexAll("x ^/a\\d+;")), (std::vector<std::string>{"x", "^/a\\d+"}));
  EXPECT_EQ(words(lexAll("x a\\nb c\\td e\\\\f g\\\"h;")),
            (std::vector<std::string>{"x", "a\nb", "c\td", "e\\f", "g\"h"}));
}

TEST(LexerTest, TracksLinesAcrossCommentsAndCrlf) {
  Lexed l = lexAll("a;\r\n# c1\r\n\r\nb;");
  ASSERT_TRUE(l.ok);
  ASSERT_EQ(l.tokens.size(), 4u);
  EXPECT_EQ(l.tokens[2].text, "b");
  EXPECT_EQ(l.tokens[2].line, 4);
}

// --- Lua blocks, through the parser ----------------------------------------

struct LuaParse {
  bool ok = false;
  std::vector<ConfNode> nodes;
  ConfError err;
};

LuaParse parseLua(const std::string& text) {
  LuaParse p;
  Parser parser("/nonexistent");
  p.ok = parser.parseString(text, "lua.conf", &p.nodes, &p.err);
  return p;
}

TEST(LexerLuaTest, CapturesTheWholeSourceDespiteBracesInStringsAndComments) {
  const std::string lua =
      " local s = \"}\" ; local t = [[ } ]] ; -- } comment \n"
      " local u = [==[ ]] } ]==] ; --[[ } ]] local v = '\\'}' ";
  LuaParse p = parseLua("content_by_lua_block {" + lua + "}\nnext_directive x;\n");
  ASSERT_TRUE(p.ok) << p.err.message();
  ASSERT_EQ(p.nodes.size(), 2u);
  const ConfNode& n = p.nodes[0];
  EXPECT_EQ(n.name, "content_by_lua_block");
  EXPECT_TRUE(n.lua_block);
  EXPECT_TRUE(n.has_block);
  ASSERT_EQ(n.args.size(), 1u);
  EXPECT_EQ(n.args.back(), lua);
  EXPECT_TRUE(n.children.empty());
  EXPECT_EQ(p.nodes[1].name, "next_directive");
  EXPECT_EQ(p.nodes[1].line, 3);
}

TEST(LexerLuaTest, NestedTablesBalanceBraces) {
  const std::string lua = "\n  local t = { a = { 1, 2 }, b = {} }\n  ngx.say(t.a[1])\n";
  LuaParse p = parseLua("server {\n  content_by_lua_block {" + lua + "}\n  listen 80;\n}\n");
  ASSERT_TRUE(p.ok) << p.err.message();
  ASSERT_EQ(p.nodes.size(), 1u);
  ASSERT_EQ(p.nodes[0].children.size(), 2u);
  const ConfNode& lua_node = p.nodes[0].children[0];
  EXPECT_EQ(lua_node.args.back(), lua);
  EXPECT_EQ(lua_node.line, 2);
  EXPECT_EQ(lua_node.lua_line, 2);
  EXPECT_EQ(p.nodes[0].children[1].name, "listen");
  EXPECT_EQ(p.nodes[0].children[1].line, 6);
}

TEST(LexerLuaTest, LongBracketLevelsMustMatch) {
  const std::string lua = " local a = [=[ ]] ]==] } ]=] local b = [[x]] ";
  LuaParse p = parseLua("access_by_lua_block {" + lua + "}");
  ASSERT_TRUE(p.ok) << p.err.message();
  EXPECT_EQ(p.nodes[0].args.back(), lua);
}

TEST(LexerLuaTest, LongCommentWithLevelAndIndexingBrackets) {
  const std::string lua = " --[==[ } ]] ]==] local x = t[ [[}]] ] ; y = t[1] ";
  LuaParse p = parseLua("rewrite_by_lua_block {" + lua + "}");
  ASSERT_TRUE(p.ok) << p.err.message();
  EXPECT_EQ(p.nodes[0].args.back(), lua);
}

TEST(LexerLuaTest, ArgumentsBeforeTheBlockAreKept) {
  LuaParse p = parseLua("set_by_lua_block $x {\n return 1 \n}");
  ASSERT_TRUE(p.ok) << p.err.message();
  ASSERT_EQ(p.nodes[0].args.size(), 2u);
  EXPECT_EQ(p.nodes[0].args[0], "$x");
  EXPECT_EQ(p.nodes[0].args[1], "\n return 1 \n");
  EXPECT_EQ(p.nodes[0].quoted, (std::vector<bool>{false, true}));
}

TEST(LexerLuaTest, EmptyBlock) {
  LuaParse p = parseLua("init_by_lua_block {}");
  ASSERT_TRUE(p.ok);
  ASSERT_EQ(p.nodes[0].args.size(), 1u);
  EXPECT_EQ(p.nodes[0].args[0], "");
}

TEST(LexerLuaTest, UnterminatedBlockReportsFileAndLine) {
  LuaParse p = parseLua("a;\nb;\ncontent_by_lua_block {\n local t = {\n");
  ASSERT_FALSE(p.ok);
  EXPECT_EQ(p.err.file, "lua.conf");
  EXPECT_EQ(p.err.line, 3);
  EXPECT_EQ(p.err.message(), "unexpected end of file, expecting \"}\" to close the Lua block in lua.conf:3");
}

TEST(LexerLuaTest, UnterminatedLongStringIsUnterminatedBlock) {
  LuaParse p = parseLua("content_by_lua_block { local s = [[ } \n");
  ASSERT_FALSE(p.ok);
  EXPECT_NE(p.err.text.find("Lua block"), std::string::npos);
  EXPECT_EQ(p.err.line, 1);
}

TEST(LexerLuaTest, BraceInsideNonLuaBlockIsStructure) {
  // Only *_by_lua_block names switch to Lua lexing.
  LuaParse p = parseLua("lua_shared_dict { a \"}\"; }");
  ASSERT_TRUE(p.ok) << p.err.message();
  EXPECT_FALSE(p.nodes[0].lua_block);
  ASSERT_EQ(p.nodes[0].children.size(), 1u);
  EXPECT_EQ(p.nodes[0].children[0].args, (std::vector<std::string>{"}"}));
}

}  // namespace
}  // namespace tidegate::conf
