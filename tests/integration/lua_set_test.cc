// User variables across a connection's life: values set by one request
// (set, ngx.var, set $args) are gone for the next keepalive request, and
// the access log, whose format comes before the `set` in the conf, logs
// them.
#include <gtest/gtest.h>

#include "harness.h"

namespace tidegate::test {
namespace {

const char* kLogFormat = "log_format vars '$request_uri v=$v w=$w args=$args';";

const char* kServer = R"(
    access_log logs/vars.log vars;
    location /set { set $v "$arg_v"; return 200 "v=$v"; }
    location /get { return 200 "v=[$v]"; }
    location /lua-set { set $w ''; content_by_lua_block { ngx.var.w = ngx.var.arg_w ngx.say("w=", ngx.var.w) } }
    location /lua-get { content_by_lua_block { ngx.say("w=[", ngx.var.w, "]") } }
    location /args { set $args "replaced=1"; return 200 "args=$args"; }
    location /plain { return 200 "args=$args"; }
)";

std::string get(RawClient& c, const std::string& target) {
  c.send("GET " + target + " HTTP/1.1\r\nHost: a\r\n\r\n");
  Response r = c.readResponse();
  EXPECT_EQ(r.header("connection"), "keep-alive") << target;
  return r.body;
}

TEST(LuaSetTest, KeepaliveRequestsDoNotSeeTheValuesOfEarlierOnes) {
  Gateway gw;
  gw.setSimpleConf(kServer, kLogFormat);
  ASSERT_TRUE(gw.start()) << gw.errorLog();
  RawClient c(gw.port());
  EXPECT_EQ(get(c, "/set?v=one"), "v=one");
  EXPECT_EQ(get(c, "/get"), "v=[]");
  EXPECT_EQ(get(c, "/lua-set?w=two"), "w=two\n");
  EXPECT_EQ(get(c, "/lua-get"), "w=[]\n");
  EXPECT_EQ(get(c, "/args?orig=1"), "args=replaced=1");
  EXPECT_EQ(get(c, "/plain?orig=2"), "args=orig=2");
  // The same, pipelined: the next request is parsed before the first is logged.
  c.send("GET /set?v=three HTTP/1.1\r\nHost: a\r\n\r\nGET /get HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(c.readResponse().body, "v=three");
  EXPECT_EQ(c.readResponse().body, "v=[]");
  c.close();
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(LuaSetTest, TheAccessLogReadsUserVariables) {
  Gateway gw;
  gw.setSimpleConf(kServer, kLogFormat);
  ASSERT_TRUE(gw.start()) << gw.errorLog();
  RawClient c(gw.port());
  get(c, "/set?v=logged");
  get(c, "/lua-set?w=fromlua");
  get(c, "/args?orig=1");
  c.close();
  EXPECT_EQ(gw.stop(), 0);
  std::string log = gw.prefix().read("logs/vars.log");
  // Unset variables are "-" in the access log, as any empty value.
  EXPECT_NE(log.find("/set?v=logged v=logged w=- args=v=logged\n"), std::string::npos) << log;
  EXPECT_NE(log.find("/lua-set?w=fromlua v=- w=fromlua args=w=fromlua\n"), std::string::npos) << log;
  EXPECT_NE(log.find("/args?orig=1 v=- w=- args=replaced=1\n"), std::string::npos) << log;
}

}  // namespace
}  // namespace tidegate::test
