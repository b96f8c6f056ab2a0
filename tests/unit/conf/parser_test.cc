// Parser: the tree it builds, its syntax errors (nginx's texts, with
// file:line), and `include` with globs resolved against the conf directory.
#include "conf/parser.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "temp_dir_fixture.h"

namespace tidegate::conf {
namespace {

namespace fs = std::filesystem;

struct Parsed {
  bool ok = false;
  std::vector<ConfNode> nodes;
  ConfError err;
};

Parsed parse(const std::string& text) {
  Parsed p;
  Parser parser("/nonexistent");
  p.ok = parser.parseString(text, "p.conf", &p.nodes, &p.err);
  return p;
}

std::string parseError(const std::string& text) {
  Parsed p = parse(text);
  EXPECT_FALSE(p.ok) << "expected an error for: " << text;
  return p.err.message();
}

TEST(ParserTest, BuildsNestedTreeWithPositions) {
  Parsed p = parse("worker_processes 2;\nhttp {\n  server {\n    listen 80;\n  }\n}\n");
  ASSERT_TRUE(p.ok) << p.err.message();
  ASSERT_EQ(p.nodes.size(), 2u);
  EXPECT_EQ(p.nodes[0].name, "worker_processes");
  EXPECT_EQ(p.nodes[0].args, (std::vector<std::string>{"2"}));
  EXPECT_FALSE(p.nodes[0].has_block);
  const ConfNode& http = p.nodes[1];
  EXPECT_TRUE(http.has_block);
  EXPECT_TRUE(http.args.empty());
  EXPECT_EQ(http.line, 2);
  ASSERT_EQ(http.children.size(), 1u);
  const ConfNode& listen = http.children[0].children.at(0);
  EXPECT_EQ(listen.name, "listen");
  EXPECT_EQ(listen.line, 4);
  EXPECT_EQ(listen.where(), "p.conf:4");
  ASSERT_TRUE(listen.file);
  EXPECT_EQ(*listen.file, "p.conf");
}

TEST(ParserTest, BlockArgumentsAndQuotedFlags) {
  Parsed p = parse("location = \"/a b\" { return 200 ok; }");
  ASSERT_TRUE(p.ok) << p.err.message();
  const ConfNode& loc = p.nodes.at(0);
  EXPECT_EQ(loc.args, (std::vector<std::string>{"=", "/a b"}));
  EXPECT_EQ(loc.quoted, (std::vector<bool>{false, true}));
  ASSERT_EQ(loc.children.size(), 1u);
  EXPECT_EQ(loc.children[0].args, (std::vector<std::string>{"200", "ok"}));
  EXPECT_FALSE(loc.lua_block);
}

TEST(ParserTest, EmptyBlocksAndNoTrailingSemicolonAfterBlock) {
  Parsed p = parse("events {}\nhttp { }");
  ASSERT_TRUE(p.ok);
  ASSERT_EQ(p.nodes.size(), 2u);
  EXPECT_TRUE(p.nodes[0].has_block);
  EXPECT_TRUE(p.nodes[0].children.empty());
}

TEST(ParserTest, StraySemicolon) {
  EXPECT_EQ(parseError("daemon off;\n;"), "unexpected \";\" in p.conf:2");
  EXPECT_EQ(parseError("http { } ;"), "unexpected \";\" in p.conf:1");
}

TEST(ParserTest, StrayOpenBrace) { EXPECT_EQ(parseError("a;\n{ }"), "unexpected \"{\" in p.conf:2"); }

TEST(ParserTest, UnexpectedCloseBraceAtTopLevel) {
  EXPECT_EQ(parseError("http {\n}\n}\n"), "unexpected \"}\" in p.conf:3");
}

TEST(ParserTest, CloseBraceInsideDirectiveMeansMissingSemicolon) {
  EXPECT_EQ(parseError("server {\n  listen 80\n}\n"), "unexpected \"}\" in p.conf:3");
}

TEST(ParserTest, EndOfFileInsideDirective) {
  EXPECT_EQ(parseError("daemon off"), "unexpected end of file, expecting \";\" or \"}\" in p.conf:1");
}

TEST(ParserTest, EndOfFileInsideBlock) {
  EXPECT_EQ(parseError("http {\n  server {\n  }\n"), "unexpected end of file, expecting \"}\" in p.conf:4");
}

TEST(ParserTest, LexicalErrorsPropagate) {
  std::string msg = parseError("a \"x\"y;");
  EXPECT_EQ(msg, "unexpected \"y\" in p.conf:1");
}

TEST(ParserTest, ParseFileMissingFileNamesIt) {
  Parser parser("/nonexistent");
  std::vector<ConfNode> nodes;
  ConfError err;
  ASSERT_FALSE(parser.parseFile("/nonexistent/tidegate.conf", &nodes, &err));
  EXPECT_NE(err.message().find("open() \"/nonexistent/tidegate.conf\" failed"), std::string::npos);
  EXPECT_NE(err.message().find("No such file or directory"), std::string::npos);
}

// --- include -----------------------------------------------------------------

class ParserIncludeTest : public testing_support::TempDirTest {
 protected:
  ParserIncludeTest() : TempDirTest("tidegate-parser") {}
  bool parseMain(const std::string& text) {
    write("main.conf", text);
    Parser parser(dir_);
    nodes_.clear();
    return parser.parseFile(dir_ + "/main.conf", &nodes_, &err_);
  }

  std::vector<ConfNode> nodes_;
  ConfError err_;
};

TEST_F(ParserIncludeTest, GlobIncludesMatchingFilesInSortedOrder) {
  write("conf.d/b.conf", "b_directive 2;\n");
  write("conf.d/a.conf", "# first\na_directive 1;\n");
  write("conf.d/skip.txt", "never;\n");
  ASSERT_TRUE(parseMain("before;\ninclude conf.d/*.conf;\nafter;\n")) << err_.message();
  ASSERT_EQ(nodes_.size(), 4u);
  EXPECT_EQ(nodes_[0].name, "before");
  EXPECT_EQ(nodes_[1].name, "a_directive");
  EXPECT_EQ(*nodes_[1].file, dir_ + "/conf.d/a.conf");
  EXPECT_EQ(nodes_[1].line, 2);
  EXPECT_EQ(nodes_[2].name, "b_directive");
  EXPECT_EQ(nodes_[3].name, "after");
  EXPECT_EQ(nodes_[3].line, 3);
  EXPECT_EQ(*nodes_[3].file, dir_ + "/main.conf");
}

TEST_F(ParserIncludeTest, IncludeInsideBlockAddsChildren) {
  write("servers/one.conf", "server { listen 8001; }\n");
  write("servers/two.conf", "server { listen 8002; }\n");
  ASSERT_TRUE(parseMain("http {\n  include servers/*.conf;\n  default_type a/b;\n}\n")) << err_.message();
  ASSERT_EQ(nodes_.size(), 1u);
  const auto& kids = nodes_[0].children;
  ASSERT_EQ(kids.size(), 3u);
  EXPECT_EQ(kids[0].name, "server");
  EXPECT_EQ(kids[0].children.at(0).args.at(0), "8001");
  EXPECT_EQ(kids[1].children.at(0).args.at(0), "8002");
  EXPECT_EQ(kids[2].name, "default_type");
}

TEST_F(ParserIncludeTest, RelativePathResolvesAgainstConfDirNotCwd) {
  write("sub/x.conf", "from_sub;\n");
  // The parser is given dir_, so "sub/x.conf" must be found even though the
  // process cwd is elsewhere.
  ASSERT_NE(fs::current_path(), fs::path(dir_));
  ASSERT_TRUE(parseMain("include sub/x.conf;\n")) << err_.message();
  ASSERT_EQ(nodes_.size(), 1u);
  EXPECT_EQ(nodes_[0].name, "from_sub");
}

TEST_F(ParserIncludeTest, NestedIncludeIsRelativeToMainConfDir) {
  write("a/first.conf", "include b/second.conf;\n");
  write("b/second.conf", "deep 1;\n");
  ASSERT_TRUE(parseMain("include a/first.conf;\n")) << err_.message();
  ASSERT_EQ(nodes_.size(), 1u);
  EXPECT_EQ(nodes_[0].name, "deep");
}

TEST_F(ParserIncludeTest, AbsolutePathInclude) {
  write("abs.conf", "absolute_ok;\n");
  ASSERT_TRUE(parseMain("include " + dir_ + "/abs.conf;\n")) << err_.message();
  ASSERT_EQ(nodes_.size(), 1u);
  EXPECT_EQ(nodes_[0].name, "absolute_ok");
}

TEST_F(ParserIncludeTest, GlobMatchingNothingIsFine) {
  fs::create_directories(fs::path(dir_) / "empty.d");
  ASSERT_TRUE(parseMain("include empty.d/*.conf;\ninclude *.none;\nstill_here;\n")) << err_.message();
  ASSERT_EQ(nodes_.size(), 1u);
  EXPECT_EQ(nodes_[0].name, "still_here");
}

// Regression (fixed): parser.cc expandInclude calls glob() with GLOB_ERR, so when the
// directory part of the pattern does not exist glob() returns GLOB_ABORTED
// (not GLOB_NOMATCH) and "include conf.d/*.conf;" fails with "No such file".
// nginx (ngx_open_glob: glob(pattern, 0, ...), gl.test = 1) treats that as
// an empty match and loads the rest of the conf.
TEST_F(ParserIncludeTest, GlobInMissingDirectoryIsFine) {
  ASSERT_TRUE(parseMain("include nothing/*.conf;\nstill_here;\n")) << err_.message();
  ASSERT_EQ(nodes_.size(), 1u);
  EXPECT_EQ(nodes_[0].name, "still_here");
}

TEST_F(ParserIncludeTest, MissingPlainFileIsAnError) {
  ASSERT_FALSE(parseMain("a;\ninclude missing.conf;\n"));
  EXPECT_EQ(err_.message(), "open() \"" + dir_ + "/missing.conf\" failed (2: No such file or directory) in " + dir_ +
                                "/main.conf:2");
}

TEST_F(ParserIncludeTest, ErrorInIncludedFileNamesThatFile) {
  write("bad.conf", "ok;\n\nbroken {\n");
  ASSERT_FALSE(parseMain("include bad.conf;\n"));
  EXPECT_EQ(err_.file, dir_ + "/bad.conf");
  EXPECT_EQ(err_.line, 4);
  EXPECT_NE(err_.text.find("unexpected end of file"), std::string::npos);
}

TEST_F(ParserIncludeTest, BlockCannotBeClosedByTheIncludingFile) {
  write("open.conf", "http {\n");
  ASSERT_FALSE(parseMain("include open.conf;\n}\n"));
  EXPECT_EQ(err_.file, dir_ + "/open.conf");
}

TEST_F(ParserIncludeTest, SelfIncludeStopsWithNestingError) {
  write("loop.conf", "include loop.conf;\n");
  ASSERT_FALSE(parseMain("include loop.conf;\n"));
  EXPECT_NE(err_.text.find("include nesting too deep"), std::string::npos);
  EXPECT_EQ(err_.file, dir_ + "/loop.conf");
}

TEST_F(ParserIncludeTest, IncludeNeedsExactlyOneArgument) {
  ASSERT_FALSE(parseMain("include a.conf b.conf;\n"));
  EXPECT_EQ(err_.message(), "invalid number of arguments in \"include\" directive in " + dir_ + "/main.conf:1");
  ASSERT_FALSE(parseMain("\ninclude;\n"));
  EXPECT_EQ(err_.line, 2);
}

TEST_F(ParserIncludeTest, LuaBlockInIncludedFile) {
  write("lua.conf", "content_by_lua_block {\n  ngx.say(\"}\")\n}\n");
  ASSERT_TRUE(parseMain("location / {\n  include lua.conf;\n}\n")) << err_.message();
  const ConfNode& lua = nodes_.at(0).children.at(0);
  EXPECT_TRUE(lua.lua_block);
  EXPECT_EQ(lua.args.back(), "\n  ngx.say(\"}\")\n");
  EXPECT_EQ(*lua.file, dir_ + "/lua.conf");
  EXPECT_EQ(lua.lua_line, 1);
}

}  // namespace
}  // namespace tidegate::conf
