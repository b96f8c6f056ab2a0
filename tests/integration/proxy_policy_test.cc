// What the proxy_* directives and upstream options change, seen from the
// outside: retries (proxy_next_upstream and its limits), passive health,
// the all-down rule, the balancers picking real backends, header and body
// passing switches, and Lua phases around a proxied request.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "fake_upstream.h"
#include "harness.h"

namespace tidegate::test {
namespace {

std::string server(const FakeUpstream& u, const std::string& params = "") {
  return "server 127.0.0.1:" + std::to_string(u.port()) + " " + params + ";";
}

TEST(ProxyPolicyTest, NextUpstreamStatusesAreRetriedOnlyWhenNamed) {
  FakeUpstream a, b;
  a.setDefault(Behaviour::respond(503, "busy"));
  Gateway gw;
  gw.setSimpleConf("location /plain { proxy_pass http://backend; }\n"
                   "location /retry { proxy_pass http://backend; proxy_next_upstream error timeout http_503; }\n"
                   "location /post { proxy_pass http://backend; proxy_next_upstream http_503 non_idempotent; }\n",
                   "upstream backend { " + server(a, "max_fails=0") + server(b, "backup") + " }");
  ASSERT_TRUE(gw.start());
  Response r = httpGet(gw.port(), "/plain");
  EXPECT_EQ(r.status, 503) << "not named: the upstream's answer goes to the client";
  EXPECT_EQ(r.body, "busy");
  EXPECT_EQ(httpGet(gw.port(), "/retry").status, 200);
  EXPECT_EQ(b.requestCount(), 1u);
  RawClient c(gw.port());
  ASSERT_TRUE(c.send("POST /retry HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx"));
  EXPECT_EQ(c.readResponse().status, 503) << "a POST is not sent twice without non_idempotent";
  ASSERT_TRUE(c.send("POST /post HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx"));
  EXPECT_EQ(c.readResponse().status, 200) << "non_idempotent allows it";
  EXPECT_EQ(b.requestCount(), 2u);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyPolicyTest, NextUpstreamTriesAndOffLimitRetries) {
  RefusingPort p1, p2, p3;
  FakeUpstream good;
  Gateway gw;
  std::string ups = "upstream backend { server 127.0.0.1:" + std::to_string(p1.port()) +
                    " max_fails=0; server 127.0.0.1:" + std::to_string(p2.port()) +
                    " max_fails=0; server 127.0.0.1:" + std::to_string(p3.port()) + " max_fails=0; " +
                    server(good, "backup") + " }";
  gw.setSimpleConf("access_log logs/t.log t;\n"
                   "location /two { proxy_pass http://backend; proxy_next_upstream_tries 2; }\n"
                   "location /off { proxy_pass http://backend; proxy_next_upstream off; }\n"
                   "location /all { proxy_pass http://backend; }\n",
                   "log_format t '$uri $status $upstream_status';\n" + ups);
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/two").status, 502);
  EXPECT_EQ(httpGet(gw.port(), "/off").status, 502);
  EXPECT_EQ(httpGet(gw.port(), "/all").status, 200);
  EXPECT_EQ(good.requestCount(), 1u);
  std::string log;
  EXPECT_TRUE(waitFor([&] {
    log = gw.prefix().read("logs/t.log");
    return log.find("/all") != std::string::npos;
  }));
  EXPECT_NE(log.find("/two 502 502, 502\n"), std::string::npos) << log;
  EXPECT_NE(log.find("/off 502 502\n"), std::string::npos) << log;
  EXPECT_NE(log.find("/all 200 502, 502, 502, 200\n"), std::string::npos) << log;
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyPolicyTest, PassiveHealthTakesAFailingServerOutForFailTimeout) {
  FakeUpstream a, b;
  Gateway gw;
  gw.setSimpleConf("location / { proxy_pass http://backend; proxy_read_timeout 300ms; }",
                   "upstream backend { " + server(a, "max_fails=2 fail_timeout=1s") + server(b) + " }");
  ASSERT_TRUE(gw.start());
  a.setDefault(Behaviour::resetAfterRequest());
  // Two failures (each retried on b, so clients see 200) take a out.
  int a_hits = 0;
  for (int i = 0; i < 6; i++) EXPECT_EQ(httpGet(gw.port(), "/").status, 200) << gw.errorLog();
  a_hits = static_cast<int>(a.requestCount());
  EXPECT_EQ(a_hits, 2) << "a got traffic until max_fails, then none";
  EXPECT_TRUE(gw.waitLog("upstream server temporarily disabled"));
  a.setDefault(Behaviour::respond(200, "a is back"));
  // After fail_timeout it gets traffic again without any active check.
  EXPECT_TRUE(waitFor([&] { return httpGet(gw.port(), "/").body == "a is back"; }, Ms(5000)));
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyPolicyTest, AllServersDownIs503UnlessFailOpen) {
  FakeUpstream a;
  Gateway gw;
  gw.setSimpleConf("location /closed { proxy_pass http://closed; }\nlocation /open { proxy_pass http://open; }",
                   "upstream closed { " + server(a, "down") + " }\n"
                   "upstream open { " + server(a, "max_fails=1 fail_timeout=30s") + " balancer round_robin fail_open; }");
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/closed").status, 503);
  EXPECT_TRUE(gw.waitLog("no live upstreams while connecting to upstream"));
  a.enqueue(Behaviour::resetAfterRequest());
  EXPECT_EQ(httpGet(gw.port(), "/open").status, 502);  // takes the only server out
  EXPECT_EQ(httpGet(gw.port(), "/open").status, 200) << "fail_open: tried anyway";
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyPolicyTest, UnknownUpstreamNameIs502NotAConfError) {
  Gateway gw;
  gw.setSimpleConf("location / { proxy_pass http://not-created-yet; }");
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/").status, 502);
  EXPECT_TRUE(gw.waitLog("no upstream \"not-created-yet\""));
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyPolicyTest, ProxyPassWithVariables) {
  FakeUpstream a;
  Gateway gw;
  gw.setSimpleConf("location / { proxy_pass http://$arg_to; }\n"
                   "location /u { proxy_pass http://backend/fixed?$args; }",
                   "upstream backend { " + server(a) + " }");
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/x/y?to=127.0.0.1:" + std::to_string(a.port())).status, 200) << gw.errorLog();
  EXPECT_EQ(httpGet(gw.port(), "/x?to=backend").status, 200) << gw.errorLog();
  EXPECT_EQ(httpGet(gw.port(), "/u/anything?k=v").status, 200) << gw.errorLog();
  EXPECT_EQ(httpGet(gw.port(), "/x?to=nowhere").status, 502);
  auto reqs = a.requests();
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[0].target, "/x/y?to=127.0.0.1:" + std::to_string(a.port()));
  EXPECT_EQ(reqs[1].target, "/x?to=backend");
  EXPECT_EQ(reqs[2].target, "/fixed?k=v") << "a URI with variables replaces the whole request URI";
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyPolicyTest, HeaderAndBodySwitches) {
  FakeUpstream a;
  a.setDefault(Behaviour::respond(200, "ok", {{"X-Secret", "s"}, {"Server", "fake"}, {"X-Keep", "k"}}));
  Gateway gw;
  gw.setSimpleConf(R"(
    location /nohdr { proxy_pass http://backend; proxy_pass_request_headers off; }
    location /nobody { proxy_pass http://backend; proxy_pass_request_body off; }
    location /hide { proxy_pass http://backend; proxy_hide_header X-Secret; proxy_pass_header Server; }
    location /v10 { proxy_pass http://backend; proxy_http_version 1.0; }
)",
                   "upstream backend { " + server(a) + " }");
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  ASSERT_TRUE(c.send("GET /nohdr HTTP/1.1\r\nHost: a\r\nX-Client: 1\r\n\r\n"));
  EXPECT_EQ(c.readResponse().status, 200);
  ASSERT_TRUE(c.send("POST /nobody HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody"));
  EXPECT_EQ(c.readResponse().status, 200);
  ASSERT_TRUE(c.send("GET /hide HTTP/1.1\r\nHost: a\r\n\r\n"));
  Response hidden = c.readResponse();
  ASSERT_TRUE(c.send("GET /v10 HTTP/1.1\r\nHost: a\r\n\r\n"));
  EXPECT_EQ(c.readResponse().status, 200);
  auto reqs = a.requests();
  ASSERT_EQ(reqs.size(), 4u);
  EXPECT_FALSE(reqs[0].hasHeader("x-client"));
  EXPECT_EQ(reqs[0].header("host"), "backend");
  EXPECT_EQ(reqs[1].body, "");
  EXPECT_FALSE(reqs[1].hasHeader("content-length"));
  EXPECT_FALSE(hidden.hasHeader("x-secret"));
  EXPECT_EQ(hidden.header("x-keep"), "k");
  EXPECT_EQ(hidden.header("server"), "fake") << "proxy_pass_header Server passes the upstream's";
  EXPECT_EQ(reqs[3].version, "HTTP/1.0");
  EXPECT_EQ(reqs[3].header("connection"), "close");
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyPolicyTest, InterceptErrorsReplacesTheUpstreamErrorPage) {
  FakeUpstream a;
  a.setDefault(Behaviour::respond(404, "upstream's own 404 page"));
  Gateway gw;
  gw.setSimpleConf("location / { proxy_pass http://backend; proxy_intercept_errors on; }\n"
                   "location /pass { proxy_pass http://backend; }",
                   "upstream backend { " + server(a) + " }");
  ASSERT_TRUE(gw.start());
  Response r = httpGet(gw.port(), "/");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body.find("upstream's own"), std::string::npos);
  EXPECT_NE(r.body.find("404 Not Found"), std::string::npos) << r.body;
  EXPECT_EQ(httpGet(gw.port(), "/pass").body, "upstream's own 404 page");
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyPolicyTest, LuaPhasesAroundAProxiedRequest) {
  FakeUpstream a;
  a.setDefault(Behaviour::respond(200, "from upstream", {{"X-Up", "u"}}));
  Gateway gw;
  gw.setSimpleConf(R"(
    location / {
        access_by_lua_block {
            if ngx.var.arg_deny then return ngx.exit(403) end
            ngx.ctx.tag = "t1"
            ngx.req.set_header("X-From-Lua", ngx.ctx.tag)
        }
        proxy_pass http://backend;
        header_filter_by_lua_block { ngx.header["X-Ctx"] = (ngx.ctx.tag or "-") .. "/" .. (ngx.header["X-Up"] or "-") }
        body_filter_by_lua_block { if ngx.arg[1] ~= "" then ngx.arg[1] = ngx.arg[1]:upper() end }
        log_by_lua_block { ngx.log(ngx.WARN, "logged ", ngx.ctx.tag, " ", ngx.var.upstream_status) }
    }
)",
                   "upstream backend { " + server(a) + " }");
  ASSERT_TRUE(gw.start());
  Response r = httpGet(gw.port(), "/p");
  EXPECT_EQ(r.status, 200) << gw.errorLog();
  EXPECT_EQ(r.body, "FROM UPSTREAM");
  EXPECT_EQ(r.header("x-ctx"), "t1/u");
  EXPECT_TRUE(gw.waitLog("logged t1 200"));
  EXPECT_EQ(httpGet(gw.port(), "/p?deny=1").status, 403);
  ASSERT_EQ(a.requestCount(), 1u) << "access denied: never proxied";
  EXPECT_EQ(a.requests()[0].header("x-from-lua"), "t1");
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(ProxyPolicyTest, ClientLeavingClosesTheUpstreamAndLogs499) {
  FakeUpstream a;
  a.setDefault(Behaviour::slow(Ms(60000)));
  Gateway gw;
  gw.setSimpleConf("access_log logs/a.log a;\nlocation / { proxy_pass http://backend; }\n"
                   "location = /ready { access_log off; return 200; }",
                   "log_format a '$status';\nupstream backend { " + server(a) + " }");
  ASSERT_TRUE(gw.start());
  // The port accepts before the worker has opened everything it keeps
  // (logs...): count from a worker that has served a request.
  ASSERT_TRUE(waitFor([&] { return gw.workerPids().size() == 1; }));
  pid_t worker = gw.workerPids().at(0);
  int baseline = restingFdCount(worker, gw.port(), "/ready");
  ASSERT_GT(baseline, 0);
  {
    RawClient c(gw.port());
    ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    ASSERT_TRUE(a.waitForRequests(1));
    EXPECT_EQ(openFdCount(worker), baseline + 2);  // the client's and the upstream's sockets
  }
  // Both sockets close: the upstream connection ended with the client.
  EXPECT_TRUE(waitFor([&] { return openFdCount(worker) == baseline; })) << openFdCount(worker);
  EXPECT_TRUE(gw.waitLog("client prematurely closed connection while reading response header from upstream"));
  EXPECT_TRUE(waitFor([&] { return gw.prefix().read("logs/a.log") == "499\n"; })) << gw.prefix().read("logs/a.log");
  a.release();
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyPolicyTest, EwmaSendsMostTrafficToTheFastBackend) {
  FakeUpstream fast, slow;
  slow.setDefault(Behaviour::slow(Ms(40)));
  Gateway gw;
  gw.setSimpleConf("location / { proxy_pass http://backend; }",
                   "upstream backend { " + server(fast) + server(slow) + " balancer ewma; }");
  ASSERT_TRUE(gw.start());
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; t++) {
    clients.emplace_back([&] {
      RawClient c(gw.port());
      for (int i = 0; i < 50; i++) {
        if (!c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n")) return;
        if (c.readResponse().status == 200) ok++;
      }
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok.load(), 200);
  double share = static_cast<double>(fast.requestCount()) / 200.0;
  EXPECT_GE(share, 0.8) << "fast " << fast.requestCount() << ", slow " << slow.requestCount();
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyPolicyTest, WeightedRoundRobinAndConsistentHashPickRealBackends) {
  FakeUpstream a, b;
  Gateway gw;
  gw.setSimpleConf("location /rr { proxy_pass http://rr; }\nlocation /hash { proxy_pass http://h; }",
                   "upstream rr { " + server(a, "weight=3") + server(b) + " }\n"
                   "upstream h { " + server(a) + server(b) + " hash $arg_user consistent; }");
  ASSERT_TRUE(gw.start());
  for (int i = 0; i < 40; i++) ASSERT_EQ(httpGet(gw.port(), "/rr").status, 200);
  EXPECT_EQ(a.requestCount(), 30u);
  EXPECT_EQ(b.requestCount(), 10u);
  // One user always lands on the same backend.
  for (int u = 0; u < 10; u++) {
    size_t a0 = a.requestCount();
    for (int i = 0; i < 5; i++) ASSERT_EQ(httpGet(gw.port(), "/hash?user=u" + std::to_string(u)).status, 200);
    size_t on_a = a.requestCount() - a0;
    EXPECT_TRUE(on_a == 0 || on_a == 5) << "user u" << u << " split: " << on_a << " of 5 on a";
  }
  EXPECT_EQ(gw.stop(), 0);
}

}  // namespace
}  // namespace tidegate::test
