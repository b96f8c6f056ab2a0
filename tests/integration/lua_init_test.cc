// init_by_lua* runs at conf load: an error in it fails -t, a start and a
// reload (which keeps the old configuration serving), as in OpenResty.
#include <gtest/gtest.h>
#include <signal.h>

#include "harness.h"

namespace tidegate::test {
namespace {

const char* kBadInit = R"(
events {}
http {
  init_by_lua_block { local t = nil; t.field = 1 }
  server { listen 127.0.0.1:{PORT}; return 200 "x"; }
}
)";

TEST(LuaInitTest, InitErrorFailsTestAndStart) {
  Gateway gw;
  gw.setConf(kBadInit);
  RunResult t = runTidegate({"-p", gw.prefix().path(), "-c", "conf/tidegate.conf", "-t"});
  EXPECT_EQ(t.exit_code, 1);
  EXPECT_NE(t.err.find("init_by_lua error: init_by_lua(tidegate.conf:"), std::string::npos) << t.err;
  EXPECT_NE(t.err.find("attempt to index local 't' (a nil value)"), std::string::npos) << t.err;
  EXPECT_NE(t.err.find("test failed"), std::string::npos) << t.err;
  RunResult start = runTidegate({"-p", gw.prefix().path(), "-c", "conf/tidegate.conf"});
  EXPECT_EQ(start.exit_code, 1);
}

TEST(LuaInitTest, ReloadWithInitErrorKeepsServing) {
  Gateway gw;
  gw.setSimpleConf("    location / { return 200 \"v1\"; }\n", "init_by_lua_block { version = 1 }");
  ASSERT_TRUE(gw.start());
  gw.setConf(kBadInit);
  gw.signal(SIGHUP);
  EXPECT_TRUE(gw.waitLog("reconfiguration failed"));
  EXPECT_NE(gw.errorLog().find("init_by_lua error"), std::string::npos);
  EXPECT_EQ(httpGet(gw.port(), "/").body, "v1");
  EXPECT_EQ(gw.stop(), 0);
}

TEST(LuaInitTest, ReloadRunsNewInitCode) {
  Gateway gw;
  gw.setSimpleConf("    location / { return 200 \"ok\"; }\n",
                   "init_by_lua_block { gen = 'first' }\n  init_worker_by_lua_block { ngx.log(ngx.NOTICE, 'gen=', gen) }");
  ASSERT_TRUE(gw.start());
  EXPECT_TRUE(gw.waitLog("gen=first"));
  gw.setSimpleConf("    location / { return 200 \"ok\"; }\n",
                   "init_by_lua_block { gen = 'second' }\n  init_worker_by_lua_block { ngx.log(ngx.NOTICE, 'gen=', gen) }");
  gw.signal(SIGHUP);
  EXPECT_TRUE(gw.waitLog("gen=second"));
  EXPECT_EQ(gw.stop(), 0);
}

}  // namespace
}  // namespace tidegate::test
