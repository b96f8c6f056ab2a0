// balancer_by_lua* and require "ngx.balancer" against the fake upstream:
// the peer the code sets, ngx.ctx shared with the other phases, tries and
// get_last_failure(), retry_on, timeouts, keepalive, recreate_request(),
// errors, and the API outside the balancer.
#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "fake_upstream.h"
#include "harness.h"

namespace tidegate::test {
namespace {

std::string port(const FakeUpstream& up) { return std::to_string(up.port()); }

// An upstream "backend" whose only server is OpenResty's placeholder and
// whose peers come from `lua`, proxied at /; `server_extra` goes into the
// server block, `http_extra` at http level.
void balancerConf(Gateway& gw, const std::string& lua, const std::string& server_extra = "",
                  const std::string& http_extra = "") {
  gw.setSimpleConf("location / { proxy_pass http://backend; }\n" + server_extra,
                   http_extra + "\nupstream backend {\n server 0.0.0.1;\n balancer_by_lua_block {\n" + lua +
                       "\n }\n}\n");
}

// A server_extra / http_extra pair that logs each request's upstream tries
// to logs/up.log.
constexpr const char* kUpLog = "access_log logs/up.log up;";
constexpr const char* kUpFormat = "log_format up '$status $upstream_addr $upstream_status';";

void expectUpLog(const Gateway& gw, const std::string& want) {
  EXPECT_TRUE(waitFor([&] { return gw.prefix().read("logs/up.log").find(want) != std::string::npos; }))
      << gw.prefix().read("logs/up.log");
}

// Stops the gateway, which must have logged no error.
void stopClean(Gateway& gw) {
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

// `n` requests, one after the other on one client connection.
void getOnOneConnection(const Gateway& gw, int n) {
  RawClient c(gw.port());
  for (int i = 0; i < n; i++) {
    ASSERT_TRUE(c.send("GET /k HTTP/1.1\r\nHost: a\r\n\r\n"));
    EXPECT_EQ(c.readResponse().status, 200) << gw.errorLog();
  }
}

// Lua that sends every try to 127.0.0.1:`p`, failing loudly if refused.
std::string peerLua(int p) {
  return "local b = require 'ngx.balancer'\n"
         "local ok, err = b.set_current_peer('127.0.0.1', " + std::to_string(p) + ")\n"
         "if not ok then error(err) end\n";
}

TEST(ProxyBalancerLuaTest, SetCurrentPeerChoosesTheUpstream) {
  FakeUpstream up;
  up.setDefault(Behaviour::respond(200, "from fake"));
  Gateway gw;
  balancerConf(gw, peerLua(up.port()) + "ngx.log(ngx.NOTICE, 'phase: ', ngx.get_phase())",
               kUpLog, kUpFormat);
  ASSERT_TRUE(gw.start()) << gw.errorLog();
  Response r = httpGet(gw.port(), "/x");
  EXPECT_EQ(r.status, 200) << gw.errorLog();
  EXPECT_EQ(r.body, "from fake");
  ASSERT_EQ(up.requestCount(), 1u);
  EXPECT_EQ(up.requests()[0].target, "/x");
  EXPECT_TRUE(gw.waitLog("phase: balancer"));
  std::string want = "200 127.0.0.1:" + port(up) + " 200";
  expectUpLog(gw, want);
  stopClean(gw);
}

TEST(ProxyBalancerLuaTest, SetCurrentPeerTakesAddressesAsOpenResty) {
  FakeUpstream up;
  Gateway gw;
  // Each call's result is logged; the last one sets the real peer, as
  // "ip:port" (a port in the text wins over the argument).
  balancerConf(gw, R"(
    local b = require "ngx.balancer"
    local function try(...)
      local ok, err = b.set_current_peer(...)
      ngx.log(ngx.NOTICE, "peer ", select(1, ...), ": ", tostring(ok), " ", tostring(err))
    end
    try("example.com", 80)
    try("127.0.0.1", 0)
    try("127.0.0.1", 70000)
    try("127.0.0.1:x", 80)
    try("[zz]", 80)
    try("", 80)
    try("[::1]", 8080)
    try("::1", 8080)
    try("127.0.0.1:)" + port(up) + R"(", 1)
  )");
  ASSERT_TRUE(gw.start()) << gw.errorLog();
  EXPECT_EQ(httpGet(gw.port(), "/").status, 200) << gw.errorLog();
  for (const char* line : {"peer example.com: nil no host allowed", "peer 127.0.0.1: nil invalid port",
                           "peer 127.0.0.1:x: nil invalid port", "peer [zz]: nil invalid IPv6 address",
                           "peer : nil no host", "peer [::1]: true nil", "peer ::1: true nil"}) {
    EXPECT_TRUE(gw.waitLog(line, Ms(2000))) << line << "\n" << gw.errorLog();
  }
  EXPECT_EQ(up.requestCount(), 1u);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyBalancerLuaTest, NgxCtxFromAccessByLuaIsVisible) {
  FakeUpstream up;
  Gateway gw;
  // access_by_lua* chooses the port, the balancer reads it from ngx.ctx,
  // along with ngx.var and the request headers.
  balancerConf(gw, R"(
    local b = require "ngx.balancer"
    ngx.log(ngx.NOTICE, "uri=", ngx.var.uri, " arg=", ngx.var.arg_a, " hdr=", ngx.req.get_headers()["x-h"])
    assert(b.set_current_peer("127.0.0.1", ngx.ctx.port))
  )",
               "access_by_lua_block { ngx.ctx.port = " + port(up) + " }");
  ASSERT_TRUE(gw.start()) << gw.errorLog();
  RawClient c(gw.port());
  ASSERT_TRUE(c.send("GET /p?a=1 HTTP/1.1\r\nHost: a\r\nX-H: v\r\nConnection: close\r\n\r\n"));
  EXPECT_EQ(c.readResponse().status, 200) << gw.errorLog();
  EXPECT_EQ(up.requestCount(), 1u);
  EXPECT_TRUE(gw.waitLog("uri=/p arg=1 hdr=v"));
  stopClean(gw);
}

TEST(ProxyBalancerLuaTest, NgxCtxOfTheBalancerLastsAcrossTriesAndReachesLogByLua) {
  FakeUpstream up;
  RefusingPort refused;
  Gateway gw;
  // No Lua phase before the proxy: the balancer's ngx.ctx is the request's.
  balancerConf(gw, R"(
    local b = require "ngx.balancer"
    ngx.ctx.runs = (ngx.ctx.runs or 0) + 1
    if ngx.ctx.runs == 1 then
      assert(b.set_current_peer("127.0.0.1", )" + std::to_string(refused.port()) + R"())
      assert(b.set_more_tries(1))
    else
      assert(b.set_current_peer("127.0.0.1", )" + port(up) + R"())
    end
  )",
               "log_by_lua_block { ngx.log(ngx.NOTICE, 'balancer runs: ', ngx.ctx.runs) }");
  ASSERT_TRUE(gw.start()) << gw.errorLog();
  EXPECT_EQ(httpGet(gw.port(), "/").status, 200) << gw.errorLog();
  EXPECT_TRUE(gw.waitLog("balancer runs: 2")) << gw.errorLog();
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyBalancerLuaTest, GetLastFailureReportsTheRefusedTry) {
  FakeUpstream up;
  RefusingPort refused;
  Gateway gw;
  balancerConf(gw, R"(
    local b = require "ngx.balancer"
    local state, status = b.get_last_failure()
    ngx.log(ngx.NOTICE, "last failure: ", tostring(state), " ", tostring(status))
    if not state then
      assert(b.set_current_peer("127.0.0.1", )" + std::to_string(refused.port()) + R"())
      assert(b.set_more_tries(1))
    else
      assert(b.set_current_peer("127.0.0.1", )" + port(up) + R"())
    end
  )",
               kUpLog, kUpFormat);
  ASSERT_TRUE(gw.start()) << gw.errorLog();
  EXPECT_EQ(httpGet(gw.port(), "/").status, 200) << gw.errorLog();
  EXPECT_TRUE(gw.waitLog("last failure: nil nil"));
  EXPECT_TRUE(gw.waitLog("last failure: failed 502")) << gw.errorLog();
  std::string want = "200 127.0.0.1:" + std::to_string(refused.port()) + ", 127.0.0.1:" + port(up) + " 502, 200";
  expectUpLog(gw, want);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyBalancerLuaTest, SetMoreTriesGrantsRetries) {
  FakeUpstream up;
  RefusingPort refused;
  Gateway gw;
  // The first try goes to the refusing port with ?more=N more tries, the
  // next ones to the fake.
  balancerConf(gw, R"(
    local b = require "ngx.balancer"
    if not b.get_last_failure() then
      assert(b.set_current_peer("127.0.0.1", )" + std::to_string(refused.port()) + R"())
      local ok, warn = b.set_more_tries(tonumber(ngx.var.arg_more))
      ngx.log(ngx.NOTICE, "more tries ", ngx.var.arg_more, ": ", tostring(ok), " ", tostring(warn))
    else
      assert(b.set_current_peer("127.0.0.1", )" + port(up) + R"())
    end
  )",
               "location /capped { proxy_pass http://backend; proxy_next_upstream_tries 2; }");
  ASSERT_TRUE(gw.start()) << gw.errorLog();
  EXPECT_EQ(httpGet(gw.port(), "/?more=0").status, 502);
  EXPECT_EQ(up.requestCount(), 0u) << "no more tries: no retry";
  EXPECT_EQ(httpGet(gw.port(), "/?more=1").status, 200) << gw.errorLog();
  EXPECT_EQ(up.requestCount(), 1u);
  EXPECT_EQ(httpGet(gw.port(), "/capped?more=5").status, 200) << gw.errorLog();
  EXPECT_TRUE(gw.waitLog("more tries 5: true reduced tries due to limit")) << gw.errorLog();
  EXPECT_TRUE(gw.waitLog("more tries 1: true nil"));
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyBalancerLuaTest, RetryOnRetriesA503ForGetButNotForPost) {
  FakeUpstream busy;
  busy.setDefault(Behaviour::respond(503, "busy"));
  FakeUpstream good;
  Gateway gw;
  balancerConf(gw, R"(
    local b = require "ngx.balancer"
    if not b.get_last_failure() then
      assert(b.set_current_peer("127.0.0.1", )" + port(busy) + R"())
      assert(b.set_more_tries(1, {503}))
    else
      assert(b.set_current_peer("127.0.0.1", )" + port(good) + R"())
    end
  )");
  ASSERT_TRUE(gw.start()) << gw.errorLog();
  Response r = httpGet(gw.port(), "/");
  EXPECT_EQ(r.status, 200) << gw.errorLog();
  EXPECT_EQ(busy.requestCount(), 1u);
  EXPECT_EQ(good.requestCount(), 1u);
  // POST is not idempotent: once sent, it is not sent again.
  RawClient c(gw.port());
  ASSERT_TRUE(c.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"));
  r = c.readResponse();
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.body, "busy");
  EXPECT_EQ(busy.requestCount(), 2u);
  EXPECT_EQ(good.requestCount(), 1u);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyBalancerLuaTest, SetTimeoutsReadTimeoutFires) {
  FakeUpstream up;
  up.setDefault(Behaviour::slow(Ms(3000)));
  Gateway gw;
  balancerConf(gw, peerLua(up.port()) + "assert(b.set_timeouts(nil, nil, 0.2))");
  ASSERT_TRUE(gw.start()) << gw.errorLog();
  auto start = std::chrono::steady_clock::now();
  Response r = httpGet(gw.port(), "/");
  auto took = std::chrono::duration_cast<Ms>(std::chrono::steady_clock::now() - start);
  EXPECT_EQ(r.status, 504) << gw.errorLog();
  EXPECT_LT(took.count(), 2000) << "proxy_read_timeout is 60s: the balancer's 0.2s applied";
  EXPECT_TRUE(gw.waitLog("upstream timed out (110: Connection timed out) while reading response header"));
  up.release();
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyBalancerLuaTest, SetTimeoutsRefusesBadValues) {
  FakeUpstream up;
  Gateway gw;
  balancerConf(gw, peerLua(up.port()) + R"(
    local ok, err = pcall(b.set_timeouts, 0, 1, 1)
    ngx.log(ngx.NOTICE, "zero: ", err)
    ok, err = pcall(b.set_timeouts, 1, "1", 1)
    ngx.log(ngx.NOTICE, "string: ", err)
  )");
  ASSERT_TRUE(gw.start()) << gw.errorLog();
  EXPECT_EQ(httpGet(gw.port(), "/").status, 200) << gw.errorLog();
  EXPECT_TRUE(gw.waitLog("zero: bad connect timeout"));
  EXPECT_TRUE(gw.waitLog("string: bad send timeout"));
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyBalancerLuaTest, EnableKeepalivePoolsWithItsLimits) {
  FakeUpstream up;
  Gateway gw;
  // max_requests 2: four requests take two upstream connections (the
  // upstream's own keepalive_requests is 1000).
  balancerConf(gw, R"(
    local b = require "ngx.balancer"
    local ok, err = b.enable_keepalive()
    ngx.log(ngx.NOTICE, "before a peer: ", tostring(ok), " ", err)
    assert(b.set_current_peer("127.0.0.1", )" + port(up) + R"())
    assert(b.enable_keepalive(60, 2))
  )");
  ASSERT_TRUE(gw.start()) << gw.errorLog();
  getOnOneConnection(gw, 4);
  EXPECT_EQ(up.connectionsAccepted(), 2);
  EXPECT_EQ(up.requestsOnConnection(1), 2);
  EXPECT_EQ(up.requestsOnConnection(2), 2);
  EXPECT_TRUE(gw.waitLog("before a peer: nil no current peer set"));
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyBalancerLuaTest, ALuaPeerIsPooledByDefault) {
  FakeUpstream up;
  Gateway gw;
  balancerConf(gw, peerLua(up.port()));
  ASSERT_TRUE(gw.start()) << gw.errorLog();
  getOnOneConnection(gw, 3);
  EXPECT_EQ(up.connectionsAccepted(), 1) << "the pool key is the peer's ip:port";
  EXPECT_EQ(up.requestsOnConnection(1), 3);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyBalancerLuaTest, RecreateRequestSendsChangesMadeInTheBalancer) {
  FakeUpstream up;
  Gateway gw;
  balancerConf(gw, peerLua(up.port()) + R"(
    ngx.req.set_header("X-From-Balancer", "yes")
    ngx.var.via = "balancer"
    if ngx.var.arg_recreate then assert(b.recreate_request()) end
  )",
               "set $via 'conf';", "proxy_set_header X-Via $via;");
  ASSERT_TRUE(gw.start()) << gw.errorLog();
  EXPECT_EQ(httpGet(gw.port(), "/?recreate=1").status, 200) << gw.errorLog();
  EXPECT_EQ(httpGet(gw.port(), "/").status, 200) << gw.errorLog();
  ASSERT_EQ(up.requestCount(), 2u);
  auto reqs = up.requests();
  EXPECT_EQ(reqs[0].header("x-from-balancer"), "yes");
  EXPECT_EQ(reqs[0].header("x-via"), "balancer");
  EXPECT_FALSE(reqs[1].hasHeader("x-from-balancer")) << "the request was built before the balancer ran";
  EXPECT_EQ(reqs[1].header("x-via"), "conf");
  stopClean(gw);
}

TEST(ProxyBalancerLuaTest, AnErrorInTheBalancerIsA500WithATraceback) {
  FakeUpstream up;
  Gateway gw;
  balancerConf(gw, R"(
    local function f() local t = nil; return t.x end
    if ngx.var.arg_sleep then ngx.sleep(0.01) end
    if ngx.var.arg_exit then return ngx.exit(tonumber(ngx.var.arg_exit)) end
    f()
  )");
  ASSERT_TRUE(gw.start()) << gw.errorLog();
  EXPECT_EQ(httpGet(gw.port(), "/").status, 500);
  EXPECT_TRUE(gw.waitLog("failed to run balancer_by_lua*: balancer_by_lua(tidegate.conf:")) << gw.errorLog();
  EXPECT_TRUE(gw.waitLog("attempt to index local 't' (a nil value)"));
  EXPECT_TRUE(gw.waitLog("stack traceback:"));
  EXPECT_EQ(httpGet(gw.port(), "/?sleep=1").status, 500);
  EXPECT_TRUE(gw.waitLog("API disabled in the context of balancer_by_lua*"));
  EXPECT_EQ(httpGet(gw.port(), "/?exit=503").status, 503);
  EXPECT_EQ(httpGet(gw.port(), "/?exit=-1").status, 500) << "ngx.ERROR";
  EXPECT_EQ(up.requestCount(), 0u);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyBalancerLuaTest, WithoutAPeerTheUpstreamsServersServe) {
  FakeUpstream up;
  Gateway gw;
  gw.setSimpleConf("location / { proxy_pass http://backend; }",
                   "upstream backend { server 127.0.0.1:" + port(up) +
                       "; balancer_by_lua_block { ngx.log(ngx.NOTICE, 'try ', tostring("
                       "require('ngx.balancer').get_last_failure())) } }");
  ASSERT_TRUE(gw.start()) << gw.errorLog();
  EXPECT_EQ(httpGet(gw.port(), "/").status, 200) << gw.errorLog();
  EXPECT_EQ(up.requestCount(), 1u);
  EXPECT_TRUE(gw.waitLog("try nil"));
  stopClean(gw);
}

TEST(ProxyBalancerLuaTest, TheApiOutsideTheBalancerSaysSo) {
  Gateway gw;
  gw.setSimpleConf(R"(
    location / {
      content_by_lua_block {
        local b = require "ngx.balancer"
        local ok, err = b.set_current_peer("127.0.0.1", 80)
        ngx.say("peer: ", tostring(ok), " ", err)
        ok, err = b.set_more_tries(1)
        ngx.say("tries: ", tostring(ok), " ", err)
        local state, status, e = b.get_last_failure()
        ngx.say("failure: ", tostring(state), " ", e)
        ok, err = b.set_timeouts(1, 1, 1)
        ngx.say("timeouts: ", tostring(ok), " ", err)
      }
    }
  )");
  ASSERT_TRUE(gw.start()) << gw.errorLog();
  Response r = httpGet(gw.port(), "/");
  EXPECT_EQ(r.status, 200) << gw.errorLog();
  EXPECT_EQ(r.body,
            "peer: nil API disabled in the current context\n"
            "tries: nil API disabled in the current context\n"
            "failure: nil API disabled in the current context\n"
            "timeouts: false API disabled in the current context\n");
  EXPECT_EQ(gw.stop(), 0);
}

}  // namespace
}  // namespace tidegate::test
