// The directive registry, buildBlock's generic checks and the value parsers
// (nginx's time and size syntax).
#include "conf/directives.h"

#include <gtest/gtest.h>

#include <iterator>
#include <string>
#include <vector>

#include "conf/parser.h"

namespace tidegate::conf {
namespace {

uint64_t ms(std::string_view text) {
  uint64_t v = 12345;
  EXPECT_TRUE(parseDurationMs(text, &v)) << text;
  return v;
}

bool durationRejected(std::string_view text) {
  uint64_t v = 0;
  return !parseDurationMs(text, &v);
}

uint64_t size(std::string_view text) {
  uint64_t v = 12345;
  EXPECT_TRUE(parseSize(text, &v)) << text;
  return v;
}

bool sizeRejected(std::string_view text) {
  uint64_t v = 0;
  return !parseSize(text, &v);
}

TEST(DirectiveValueTest, DurationUnits) {
  EXPECT_EQ(ms("75s"), 75000u);
  EXPECT_EQ(ms("10"), 10000u);  // a bare number is seconds
  EXPECT_EQ(ms("0"), 0u);
  EXPECT_EQ(ms("500ms"), 500u);
  EXPECT_EQ(ms("2m"), 120000u);
  EXPECT_EQ(ms("1h"), 3600000u);
  EXPECT_EQ(ms("1d"), 86400000u);
  EXPECT_EQ(ms("1w"), 604800000u);
  EXPECT_EQ(ms("1M"), 30ull * 86400000u);
  EXPECT_EQ(ms("1y"), 365ull * 86400000u);
}

TEST(DirectiveValueTest, DurationCombinations) {
  EXPECT_EQ(ms("1m30s"), 90000u);
  EXPECT_EQ(ms("1h1m1s"), 3661000u);
  EXPECT_EQ(ms("1s500ms"), 1500u);
}

TEST(DirectiveValueTest, DurationRejectsGarbage) {
  EXPECT_TRUE(durationRejected(""));
  EXPECT_TRUE(durationRejected("1x"));
  EXPECT_TRUE(durationRejected("s"));
  EXPECT_TRUE(durationRejected("-1s"));
  EXPECT_TRUE(durationRejected("1.5s"));
  EXPECT_TRUE(durationRejected("1 s"));
  EXPECT_TRUE(durationRejected("abc"));
  EXPECT_TRUE(durationRejected("ms"));
}

TEST(DirectiveValueTest, DurationRejectsOverflowingProduct) {
  EXPECT_TRUE(durationRejected("18446744073709551615y"));
}

// Regression (fixed): directives.cc parseDurationMs ignores std::from_chars' error, so a
// number too large for uint64_t leaves n == 0 and the value parses as 0 ms
// (e.g. keepalive_timeout 99999999999999999999 silently disables keepalive).
// nginx's ngx_parse_time returns NGX_ERROR on overflow ("invalid value").
TEST(DirectiveValueTest, DurationRejectsNumberTooLongForUint64) {
  EXPECT_TRUE(durationRejected("99999999999999999999999"));
  EXPECT_TRUE(durationRejected("99999999999999999999999s"));
}

TEST(DirectiveValueTest, SizeUnits) {
  EXPECT_EQ(size("1024"), 1024u);
  EXPECT_EQ(size("0"), 0u);
  EXPECT_EQ(size("8k"), 8u * 1024);
  EXPECT_EQ(size("8K"), 8u * 1024);
  EXPECT_EQ(size("1m"), 1024u * 1024);
  EXPECT_EQ(size("1M"), 1024u * 1024);
  EXPECT_EQ(size("2g"), 2ull * 1024 * 1024 * 1024);
  EXPECT_EQ(size("2G"), 2ull * 1024 * 1024 * 1024);
}

TEST(DirectiveValueTest, SizeRejectsGarbage) {
  EXPECT_TRUE(sizeRejected(""));
  EXPECT_TRUE(sizeRejected("k"));
  EXPECT_TRUE(sizeRejected("1x"));
  EXPECT_TRUE(sizeRejected("1kb"));
  EXPECT_TRUE(sizeRejected("-1"));
  EXPECT_TRUE(sizeRejected("1.5m"));
  EXPECT_TRUE(sizeRejected("99999999999999999999"));
  EXPECT_TRUE(sizeRejected("18446744073709551615k"));
}

TEST(DirectiveValueTest, ParseInt) {
  int64_t v = 0;
  EXPECT_TRUE(parseInt("42", &v));
  EXPECT_EQ(v, 42);
  EXPECT_FALSE(parseInt("", &v));
  EXPECT_FALSE(parseInt("4x", &v));
  EXPECT_FALSE(parseInt(" 4", &v));
  EXPECT_FALSE(parseInt("99999999999999999999", &v));
}

TEST(DirectiveValueTest, ParseFlag) {
  ConfNode n;
  n.name = "daemon";
  bool v = false;
  std::string err;
  n.args = {"on"};
  EXPECT_TRUE(parseFlag(n, &v, &err));
  EXPECT_TRUE(v);
  n.args = {"off"};
  EXPECT_TRUE(parseFlag(n, &v, &err));
  EXPECT_FALSE(v);
  n.args = {"yes"};
  EXPECT_FALSE(parseFlag(n, &v, &err));
  EXPECT_EQ(err, "invalid value \"yes\" in \"daemon\" directive, it must be \"on\" or \"off\"");
}

// --- registry and buildBlock --------------------------------------------------

struct Built {
  bool ok = false;
  ConfError err;
  Config cfg;
};

// Parses `text` and builds it at the main level into a fresh Config.
Built buildMain(const std::string& text) {
  Built b;
  Parser parser("/nonexistent");
  std::vector<ConfNode> nodes;
  if (!parser.parseString(text, "d.conf", &nodes, &b.err)) {
    ADD_FAILURE() << "parse failed: " << b.err.message();
    return b;
  }
  b.cfg.prefix = "/prefix";
  BuildState st;
  st.config = &b.cfg;
  st.ctx = kMainCtx;
  b.ok = buildBlock(nodes, st, &b.err);
  return b;
}

std::string buildError(const std::string& text) {
  Built b = buildMain(text);
  EXPECT_FALSE(b.ok) << text;
  return b.err.message();
}

TEST(DirectiveRegistryTest, CoreDirectivesAreRegistered) {
  for (std::string_view name : {"daemon", "worker_processes", "http", "server", "listen", "location", "return",
                                "keepalive_timeout", "access_log", "log_format"}) {
    const Directive* d = findDirective(name, kMainCtx);
    ASSERT_NE(d, nullptr) << name;
    EXPECT_EQ(d->name, name);
  }
  EXPECT_EQ(findDirective("no_such_directive", kMainCtx), nullptr);
  const Directive* location = findDirective("location", kServerCtx);
  EXPECT_TRUE(location->block);
  EXPECT_EQ(location->contexts, static_cast<uint32_t>(kServerCtx | kLocationCtx));
  EXPECT_FALSE(findDirective("listen", kServerCtx)->block);
  // One name, one meaning per context: `server` is a block in http, a line in upstream.
  EXPECT_TRUE(findDirective("server", kHttpCtx)->block);
  EXPECT_FALSE(findDirective("server", kUpstreamCtx)->block);
  EXPECT_EQ(findDirective("keepalive_timeout", kUpstreamCtx)->contexts, static_cast<uint32_t>(kUpstreamCtx));
}

TEST(DirectiveBuildTest, UnknownDirective) {
  EXPECT_EQ(buildError("daemon off;\nfrobnicate 1;"), "unknown directive \"frobnicate\" in d.conf:2");
}

TEST(DirectiveBuildTest, NotAllowedHere) {
  EXPECT_EQ(buildError("listen 80;"), "\"listen\" directive is not allowed here in d.conf:1");
  EXPECT_EQ(buildError("http {\n  listen 80;\n}"), "\"listen\" directive is not allowed here in d.conf:2");
  EXPECT_EQ(buildError("http {\n\n  location / { }\n}"), "\"location\" directive is not allowed here in d.conf:3");
  EXPECT_EQ(buildError("http { server { location / { server { } } } }"),
            "\"server\" directive is not allowed here in d.conf:1");
  EXPECT_EQ(buildError("worker_connections 10;"), "\"worker_connections\" directive is not allowed here in d.conf:1");
  EXPECT_EQ(buildError("http {\n server {\n  location / {\n   client_header_timeout 1s;\n  }\n }\n}"),
            "\"client_header_timeout\" directive is not allowed here in d.conf:4");
}

TEST(DirectiveBuildTest, BlockAndTerminatorMismatch) {
  EXPECT_EQ(buildError("\nhttp;"), "directive \"http\" has no opening \"{\" in d.conf:2");
  EXPECT_EQ(buildError("daemon off { }"), "directive \"daemon\" is not terminated by \";\" in d.conf:1");
}

TEST(DirectiveBuildTest, WrongArgumentCount) {
  EXPECT_EQ(buildError("daemon;"), "invalid number of arguments in \"daemon\" directive in d.conf:1");
  EXPECT_EQ(buildError("daemon on off;"), "invalid number of arguments in \"daemon\" directive in d.conf:1");
  EXPECT_EQ(buildError("http x { }"), "invalid number of arguments in \"http\" directive in d.conf:1");
  EXPECT_EQ(buildError("http { server { location { } } }"),
            "invalid number of arguments in \"location\" directive in d.conf:1");
  EXPECT_EQ(buildError("http { server { location = /a /b { } } }"),
            "invalid number of arguments in \"location\" directive in d.conf:1");
}

TEST(DirectiveBuildTest, FirstErrorStopsTheWalk) {
  Built b = buildMain("worker_processes 3;\nbogus;\nworker_processes 5;\n");
  ASSERT_FALSE(b.ok);
  EXPECT_EQ(b.err.line, 2);
  EXPECT_EQ(b.cfg.worker_processes, 3);
}

TEST(DirectiveBuildTest, NestedBlockErrorKeepsItsOwnPosition) {
  EXPECT_EQ(buildError("events {\n  worker_connections 1;\n}\n"),
            "invalid value \"1\" in \"worker_connections\" directive in d.conf:2");
}

// A feature registers its own directives without touching the parser or
// builder; Lua blocks carry their source as an extra, uncounted argument.
struct Seen {
  int calls = 0;
  std::string last_body;
  size_t last_args = 0;
};
Seen g_seen;

bool onTestLua(const ConfNode& n, BuildState&, std::string*) {
  g_seen.calls++;
  g_seen.last_body = n.args.back();
  g_seen.last_args = n.args.size();
  return true;
}

bool onTestFails(const ConfNode& n, BuildState&, std::string* err) {
  *err = "test failure for \"" + n.args[0] + "\"";
  return false;
}

const Directive kTestDirectives[] = {
    {"tgtest_by_lua_block", kMainCtx, 0, 0, true, onTestLua},
    {"tgtest_arg_by_lua_block", kMainCtx, 1, 1, true, onTestLua},
    {"tgtest_fails", kMainCtx, 1, 1, false, onTestFails},
};

class DirectiveCustomTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { registerDirectives(kTestDirectives, std::size(kTestDirectives)); }
  void SetUp() override { g_seen = Seen{}; }
};

TEST_F(DirectiveCustomTest, RegisteredDirectiveIsFoundAlongsideCore) {
  ASSERT_NE(findDirective("tgtest_fails", kMainCtx), nullptr);
  EXPECT_NE(findDirective("daemon", kMainCtx), nullptr);
}

TEST_F(DirectiveCustomTest, LuaSourceIsNotCountedAsAnArgument) {
  Built b = buildMain("tgtest_by_lua_block {\n  local t = { \"}\" }\n}\n");
  ASSERT_TRUE(b.ok) << b.err.message();
  EXPECT_EQ(g_seen.calls, 1);
  EXPECT_EQ(g_seen.last_body, "\n  local t = { \"}\" }\n");
  EXPECT_EQ(g_seen.last_args, 1u);

  Built with_arg = buildMain("tgtest_arg_by_lua_block $v { return 1 }");
  ASSERT_TRUE(with_arg.ok) << with_arg.err.message();
  EXPECT_EQ(g_seen.last_args, 2u);
}

TEST_F(DirectiveCustomTest, LuaBlockWithTooManyArguments) {
  EXPECT_EQ(buildError("tgtest_by_lua_block extra { }"),
            "invalid number of arguments in \"tgtest_by_lua_block\" directive in d.conf:1");
  EXPECT_EQ(buildError("tgtest_arg_by_lua_block { }"),
            "invalid number of arguments in \"tgtest_arg_by_lua_block\" directive in d.conf:1");
  EXPECT_EQ(g_seen.calls, 0);
}

TEST_F(DirectiveCustomTest, HandlerErrorGetsTheNodePosition) {
  EXPECT_EQ(buildError("daemon off;\n\ntgtest_fails x;"), "test failure for \"x\" in d.conf:3");
}

}  // namespace
}  // namespace tidegate::conf
