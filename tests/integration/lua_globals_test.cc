// Handler globals across requests: code that writes no global runs on one
// shared table of globals and one closure (Vm::push); what a request writes
// never reaches another, however it writes it.
#include <gtest/gtest.h>

#include "harness.h"

namespace tidegate::test {
namespace {

TEST(LuaGlobalsTest, NoWriteReachesAnotherRequest) {
  Gateway gw;
  gw.setSimpleConf(R"(
    location /getfenv { content_by_lua_block {
        local before = tostring(written)
        getfenv(1).written = ngx.var.arg_v
        ngx.say(before, " ", written)
    } }
    location /assign { content_by_lua_block {
        local before = tostring(written)
        written = ngx.var.arg_v
        ngx.say(before, " ", written)
    } }
    location /read { content_by_lua_block { ngx.say("read ", tostring(written)) } }
  )");
  ASSERT_TRUE(gw.start());
  for (const char* path : {"/getfenv", "/assign"}) {
    EXPECT_EQ(httpGet(gw.port(), std::string(path) + "?v=1").body, "nil 1\n") << path;
    EXPECT_EQ(httpGet(gw.port(), std::string(path) + "?v=2").body, "nil 2\n") << path;
    EXPECT_EQ(httpGet(gw.port(), "/read").body, "read nil\n") << path;
  }
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

// One closure serves every request of a handler that writes no global: two
// requests suspended in it at once keep their own locals.
TEST(LuaGlobalsTest, RequestsSuspendedInTheSameHandlerKeepTheirLocals) {
  Gateway gw;
  // The first request waits (in ngx.sleep) until the second has come and gone.
  gw.setSimpleConf(R"(
    location /t { content_by_lua_block {
        local mine = ngx.var.arg_n
        local function later() return "n=" .. mine end
        local d = ngx.shared.sync
        local deadline = ngx.now() + 10
        if ngx.var.arg_first then
            d:set("first_waits", true)
            while not d:get("second_done") and ngx.now() < deadline do ngx.sleep(0.005) end
        else
            while not d:get("first_waits") and ngx.now() < deadline do ngx.sleep(0.005) end
            d:set("second_done", true)
        end
        ngx.say(later())
    } }
  )", "lua_shared_dict sync 1m;\n");
  ASSERT_TRUE(gw.start());
  RawClient slow(gw.port());
  slow.send("GET /t?n=1&first=1 HTTP/1.1\r\nHost: a\r\n\r\n");
  RawClient fast(gw.port());
  fast.send("GET /t?n=2 HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(fast.readResponse().body, "n=2\n");
  EXPECT_EQ(slow.readResponse().body, "n=1\n");
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

}  // namespace
}  // namespace tidegate::test
