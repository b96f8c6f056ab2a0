// Request teardown while coroutines wait: a client that leaves while its
// handler's light threads wait on a semaphore, a sleep and a user
// coroutine must cancel all of it; a later post to the same semaphore must
// not touch the gone request (ASan catches it if it does).
#include <gtest/gtest.h>

#include "harness.h"

namespace tidegate::test {
namespace {

const char* kWaiters = R"(
    location /wait {
        content_by_lua_block {
            local s = require "shared_sema"
            ngx.thread.spawn(function() s.sema:wait(30) ngx.log(ngx.ERR, "waiter resumed after abort") end)
            ngx.thread.spawn(function() ngx.sleep(30) end)
            ngx.thread.spawn(function()
                local co = coroutine.create(function() ngx.sleep(30) end)
                coroutine.resume(co)  -- this thread waits for the coroutine's sleep
            end)
            ngx.log(ngx.WARN, "all waiting now")
            s.sema:wait(30)
        }
    }
    location /post {
        content_by_lua_block {
            local s = require "shared_sema"
            s.sema:post(5)
            ngx.sleep(0.05)
            ngx.say("posted, count ", s.sema:count())
        }
    }
)";

TEST(LuaSchedulingTest, ClientLeavingCancelsEveryWaitingCoroutine) {
  Gateway gw;
  gw.prefix().write("lua/shared_sema.lua", "return { sema = require('ngx.semaphore').new(0) }\n");
  gw.setSimpleConf(kWaiters, "lua_package_path \"$prefix/lua/?.lua;;\";\n");
  ASSERT_TRUE(gw.start());
  {
    RawClient c(gw.port());
    c.send("GET /wait HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_TRUE(gw.waitLog("all waiting now"));
  }  // the client leaves with four coroutines suspended
  // Nobody waits any more: the post keeps all five resources.
  ASSERT_TRUE(waitFor([&] { return httpGet(gw.port(), "/post").body == "posted, count 5\n"; }));
  EXPECT_EQ(gw.stop(Ms(10000)), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

}  // namespace
}  // namespace tidegate::test
