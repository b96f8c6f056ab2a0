// Balancers changed at runtime: a Lua balancer module (pushed or from a
// file) picks the peer, errors fall back to round robin, a new version of
// the module takes over, and swapping balancers under load fails no request.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "fake_upstream.h"
#include "harness.h"

namespace tidegate::test {
namespace {

const std::string kToken = "balancer-test-token";

Response admin(int port, const std::string& method, const std::string& path, const std::string& body = "",
               const std::string& type = "application/json") {
  RawClient c(port);
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nX-API-KEY: " + kToken +
                    "\r\nContent-Type: " + type + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
                    body;
  c.send(req);
  return c.readResponse();
}

Response pushModule(int port, const std::string& name, const std::string& src) {
  return admin(port, "PUT", "/lua/" + name, src, "text/plain");
}

std::string serversJson(const FakeUpstream& a, const FakeUpstream& b) {
  return R"({"host": "127.0.0.1", "port": )" + std::to_string(a.port()) + R"(}, {"host": "127.0.0.1", "port": )" +
         std::to_string(b.port()) + "}";
}

// Counts of each body over `n` requests to /dyn.
std::map<std::string, int> spread(const Gateway& gw, int n) {
  std::map<std::string, int> out;
  for (int i = 0; i < n; i++) out[httpGet(gw.port(), "/dyn").body]++;
  return out;
}

const char* kPickSecond = R"(
local _M = {}
local mt = {__index = _M}
function _M.new(servers) return setmetatable({servers = servers}, mt) end
function _M:pick() return self.servers[2] end
function _M:feedback(server, ok, latency_ms)
  ngx.shared.fb:incr(server.id .. (ok and "_ok" or "_failed"), 1, 0)
  if type(latency_ms) == "number" and latency_ms >= 0 then ngx.shared.fb:set("latency", "seen") end
end
return _M
)";

void balancerConf(Gateway& gw, const std::string& extra = "") {
  gw.setSimpleConf("location /dyn { proxy_pass http://dyn; }\n"
                   "location /fb { content_by_lua_block { ngx.say(ngx.shared.fb:get(ngx.var.arg_k)) } }",
                   "admin_listen 127.0.0.1:{PORT2};\nadmin_token " + kToken +
                       ";\nlua_shared_dict fb 1m;\nlua_package_path '{PREFIX}/lualib/?.lua;;';\n" + extra,
                   2);
}

TEST(AdminBalancerTest, APushedLuaBalancerPicksAndGetsFeedback) {
  FakeUpstream a, b;
  a.setDefault(Behaviour::respond(200, "a"));
  b.setDefault(Behaviour::respond(200, "b"));
  Gateway gw;
  balancerConf(gw);
  ASSERT_TRUE(gw.start());
  int p = gw.port2();
  ASSERT_EQ(pushModule(p, "pick_second", kPickSecond).status, 201);
  Response put = admin(p, "PUT", "/upstreams/dyn",
                       "{\"servers\": [" + serversJson(a, b) + R"(], "balancer": {"type": "lua", "module": "pick_second"}})");
  ASSERT_EQ(put.status, 201) << put.body;
  EXPECT_EQ(spread(gw, 10), (std::map<std::string, int>{{"b", 10}}));
  std::string b_id = "127.0.0.1:" + std::to_string(b.port());
  EXPECT_EQ(httpGet(gw.port(), "/fb?k=" + b_id + "_ok").body, "10\n");
  EXPECT_EQ(httpGet(gw.port(), "/fb?k=latency").body, "seen\n");

  // A new version of the module takes over at once.
  std::string pick_first = kPickSecond;
  pick_first.replace(pick_first.find("self.servers[2]"), 15, "self.servers[1]");
  ASSERT_EQ(pushModule(p, "pick_second", pick_first).status, 200);
  EXPECT_EQ(spread(gw, 10), (std::map<std::string, int>{{"a", 10}}));

  // A server its pick names that is down: health rules, round robin answers.
  ASSERT_EQ(admin(p, "PATCH", "/upstreams/dyn/servers/127.0.0.1:" + std::to_string(a.port()), R"({"down": true})").status,
            200);
  EXPECT_EQ(spread(gw, 6), (std::map<std::string, int>{{"b", 6}}));
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(AdminBalancerTest, AFailingLuaBalancerFallsBackToRoundRobin) {
  FakeUpstream a, b;
  a.setDefault(Behaviour::respond(200, "a"));
  b.setDefault(Behaviour::respond(200, "b"));
  Gateway gw;
  balancerConf(gw);
  ASSERT_TRUE(gw.start());
  int p = gw.port2();
  ASSERT_EQ(pushModule(p, "broken", "local M = {}\nfunction M.new() return M end\n"
                                    "function M:pick() error('no idea') end\nreturn M")
                .status,
            201);
  ASSERT_EQ(admin(p, "PUT", "/upstreams/dyn",
                  "{\"servers\": [" + serversJson(a, b) + R"(], "balancer": {"type": "lua", "module": "broken"}})")
                .status,
            201);
  std::map<std::string, int> got = spread(gw, 10);
  EXPECT_EQ(got["a"] + got["b"], 10);
  EXPECT_GE(got["a"], 3);
  EXPECT_GE(got["b"], 3);
  EXPECT_TRUE(gw.waitLog("pick() failed: broken:3: no idea; using round robin"));
  // A module that does not exist: the same.
  ASSERT_EQ(admin(p, "PATCH", "/upstreams/dyn", R"({"balancer": {"type": "lua", "module": "missing"}})").status, 200);
  got = spread(gw, 4);
  EXPECT_EQ(got["a"] + got["b"], 4);
  EXPECT_TRUE(gw.waitLog("lua balancer \"missing\" of upstream \"dyn\": module 'missing' not found"));
  // Validation: lua needs a module, and only lua takes one.
  EXPECT_EQ(admin(p, "PATCH", "/upstreams/dyn", R"({"balancer": {"type": "lua", "module": null}})").status, 400);
  EXPECT_EQ(admin(p, "PATCH", "/upstreams/dyn", R"({"balancer": {"type": "ewma"}})").status, 400);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(AdminBalancerTest, ALuaBalancerFromTheConfAndAFile) {
  FakeUpstream a, b;
  a.setDefault(Behaviour::respond(200, "a"));
  b.setDefault(Behaviour::respond(200, "b"));
  Gateway gw;
  gw.prefix().write("lualib/pick_second.lua", kPickSecond);
  balancerConf(gw, "upstream dyn { server 127.0.0.1:" + std::to_string(a.port()) + "; server 127.0.0.1:" +
                       std::to_string(b.port()) + "; balancer lua module=pick_second; }");
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(spread(gw, 8), (std::map<std::string, int>{{"b", 8}}));
  EXPECT_EQ(gw.stop(), 0);
  Gateway bad;
  bad.setSimpleConf("location / { return 200; }", "upstream u { server 127.0.0.1:1; balancer lua; }");
  RunResult r = runTidegate({"-t", "-p", bad.prefix().path(), "-c", bad.path("conf/tidegate.conf")});
  EXPECT_NE(r.err.find("balancer lua needs module=NAME"), std::string::npos) << r.err;
}

TEST(AdminBalancerTest, SwappingBalancersUnderLoadFailsNoRequest) {
  FakeUpstream a, b, c;
  Gateway gw;
  balancerConf(gw);
  ASSERT_TRUE(gw.start());
  int p = gw.port2();
  ASSERT_EQ(pushModule(p, "pick_second", kPickSecond).status, 201);
  ASSERT_EQ(admin(p, "PUT", "/upstreams/dyn", "{\"servers\": [" + serversJson(a, b) + "]}").status, 201);
  std::atomic<bool> done{false};
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; t++) {
    clients.emplace_back([&] {
      while (!done) {
        if (httpGet(gw.port(), "/dyn").status == 200) ok++;
        else failed++;
      }
    });
  }
  // Merge patches: each names every field so nothing of the last one stays.
  const char* kBalancers[] = {R"({"type": "least_conn", "key": null, "module": null})",
                              R"({"type": "ewma", "key": null, "module": null})",
                              R"({"type": "chash", "key": "$remote_port", "module": null})",
                              R"({"type": "lua", "module": "pick_second", "key": null})",
                              R"({"type": "round_robin", "key": null, "module": null})"};
  std::string c_server = R"({"host": "127.0.0.1", "port": )" + std::to_string(c.port()) + "}";
  for (int i = 0; i < 40; i++) {
    std::string body = std::string(R"({"balancer": )") + kBalancers[i % 5] + "}";
    Response r = admin(p, "PATCH", "/upstreams/dyn", body);
    ASSERT_EQ(r.status, 200) << body << " -> " << r.body;
    // Servers come and go too.
    if (i % 2 == 0) ASSERT_EQ(admin(p, "POST", "/upstreams/dyn/servers", c_server).status, 200);
    else ASSERT_EQ(admin(p, "DELETE", "/upstreams/dyn/servers/127.0.0.1:" + std::to_string(c.port())).status, 200);
    int before = ok.load();
    ASSERT_TRUE(waitFor([&] { return ok.load() > before + 4; }));
  }
  done = true;
  for (auto& t : clients) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(ok.load(), 160);
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

}  // namespace
}  // namespace tidegate::test
