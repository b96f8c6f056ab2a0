// Pushed Lua modules through a running gateway: every worker serves the new
// version from its next request, bad pushes change nothing, versions and
// rollback, delete falls back to lua_package_path, and everything persists.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>

#include "harness.h"

namespace tidegate::test {
namespace {

const std::string kToken = "lua-test-token";

Response admin(int port, const std::string& method, const std::string& path, const std::string& body = "") {
  RawClient c(port);
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nX-API-KEY: " + kToken +
                    "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  c.send(req);
  return c.readResponse();
}

// A gateway with 2 workers whose / says require("mymod").v, a file
// version of mymod on lua_package_path, and the admin API on port2.
void luaConf(Gateway& gw, const std::string& extra = "") {
  gw.prefix().write("lualib/mymod.lua", "return {v = 'file'}\n");
  gw.setSimpleConf("location / { content_by_lua_block { ngx.say(require('mymod').v) } }\n"
                   "location /other { content_by_lua_block { ngx.say(require('helper').greet()) } }\n"
                   // Holds the module it started with until /go says so.
                   "location /slow { content_by_lua_block {\n"
                   "  local m = require('mymod'); ngx.shared.flags:set('started', true)\n"
                   "  while not ngx.shared.flags:get('go') do ngx.sleep(0.005) end\n"
                   "  ngx.say(m.v) } }\n"
                   "location /started { content_by_lua_block { ngx.say(ngx.shared.flags:get('started')) } }\n"
                   "location /go { content_by_lua_block { ngx.shared.flags:set('go', true) } }",
                   "admin_listen 127.0.0.1:{PORT2};\nadmin_token " + kToken +
                       ";\nlua_package_path '{PREFIX}/lualib/?.lua;;';\nlua_shared_dict flags 1m;\n" + extra,
                   2);
}

// What `n` fresh requests to / answered (both workers serve some).
std::set<std::string> answers(const Gateway& gw, int n = 12) {
  std::set<std::string> out;
  for (int i = 0; i < n; i++) out.insert(httpGet(gw.port(), "/").body);
  return out;
}

using Answers = std::set<std::string>;

TEST(AdminLuaTest, APushServesEveryWorkerFromItsNextRequest) {
  Gateway gw;
  luaConf(gw);
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(answers(gw), Answers{"file\n"});
  Response r = admin(gw.port2(), "PUT", "/lua/mymod", "return {v = 'pushed-1'}");
  ASSERT_EQ(r.status, 201) << r.body;
  nlohmann::json j = nlohmann::json::parse(r.body);
  std::string v1 = j["version"];
  EXPECT_EQ(v1.size(), 32u);  // md5
  EXPECT_EQ(answers(gw), Answers{"pushed-1\n"});  // it wins over the file, in both workers

  ASSERT_EQ(admin(gw.port2(), "PUT", "/lua/mymod", "return {v = 'pushed-2'}").status, 200);
  EXPECT_EQ(answers(gw), Answers{"pushed-2\n"});

  // A module may require another pushed one.
  ASSERT_EQ(admin(gw.port2(), "PUT", "/lua/helper", "local m = require('mymod')\n"
                                                    "return {greet = function() return 'hi ' .. m.v end}")
                .status,
            201);
  EXPECT_EQ(httpGet(gw.port(), "/other").body, "hi pushed-2\n");

  // GET /lua: Slardar's shape.
  nlohmann::json list = nlohmann::json::parse(admin(gw.port2(), "GET", "/lua").body);
  EXPECT_EQ(list["version"], 3);
  ASSERT_EQ(list["modules"].size(), 2u);
  EXPECT_EQ(list["modules"][1]["name"], "mymod");
  EXPECT_EQ(list["modules"][1]["version"].get<std::string>().size(), 32u);
  EXPECT_TRUE(list["modules"][1]["time"].is_string());
  Response src = admin(gw.port2(), "GET", "/lua/mymod");
  EXPECT_EQ(src.body, "return {v = 'pushed-2'}");
  EXPECT_EQ(src.header("content-type"), "text/plain");
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(AdminLuaTest, ARunningRequestKeepsTheVersionItStartedWith) {
  Gateway gw;
  luaConf(gw);
  ASSERT_TRUE(gw.start());
  ASSERT_EQ(admin(gw.port2(), "PUT", "/lua/mymod", "return {v = 'old'}").status, 201);
  Response slow;
  std::thread t([&] { slow = httpGet(gw.port(), "/slow"); });
  ASSERT_TRUE(waitFor([&] { return httpGet(gw.port(), "/started").body == "true\n"; }));
  ASSERT_EQ(admin(gw.port2(), "PUT", "/lua/mymod", "return {v = 'new'}").status, 200);
  EXPECT_EQ(answers(gw), Answers{"new\n"});  // the next requests, on every worker
  httpGet(gw.port(), "/go");
  t.join();
  EXPECT_EQ(slow.body, "old\n");
  EXPECT_EQ(gw.stop(), 0);
}

TEST(AdminLuaTest, ABadPushChangesNothing) {
  Gateway gw;
  luaConf(gw);
  ASSERT_TRUE(gw.start());
  ASSERT_EQ(admin(gw.port2(), "PUT", "/lua/mymod", "return {v = 'good'}").status, 201);
  struct Case {
    std::string path, body;
    int status;
    std::string says;
  } cases[] = {
      {"/lua/mymod", "return {v = ", 400, "syntax error: mymod:1:"},
      {"/lua/mymod", "error('broken at load')", 400, "error while loading: mymod:1: broken at load"},
      {"/lua/mymod", "\x1bLJ\x02\x00", 400, "syntax error"},  // bytecode is refused
      {"/lua/mymod", "", 400, "Lua source"},
      {"/lua/ngx.balancer", "return 1", 400, "built-in module"},
      {"/lua/..bad", "return 1", 400, "invalid module name"},
  };
  for (const Case& c : cases) {
    Response r = admin(gw.port2(), "PUT", c.path, c.body);
    EXPECT_EQ(r.status, c.status) << c.path << " " << c.body << " -> " << r.body;
    EXPECT_NE(r.body.find(c.says), std::string::npos) << r.body;
  }
  EXPECT_EQ(answers(gw), Answers{"good\n"});
  nlohmann::json versions = nlohmann::json::parse(admin(gw.port2(), "GET", "/lua/mymod/versions").body);
  EXPECT_EQ(versions["versions"].size(), 1u);
  EXPECT_EQ(admin(gw.port2(), "GET", "/lua/nothere").status, 404);
  EXPECT_EQ(admin(gw.port2(), "POST", "/lua/mymod").status, 405);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(AdminLuaTest, RollbackVersionsAndDelete) {
  Gateway gw;
  luaConf(gw);
  ASSERT_TRUE(gw.start());
  std::vector<std::string> md5s;
  for (int i = 1; i <= 12; i++) {
    Response r = admin(gw.port2(), "PUT", "/lua/mymod", "return {v = 'v" + std::to_string(i) + "'}");
    ASSERT_LT(r.status, 300) << r.body;
    md5s.push_back(nlohmann::json::parse(r.body)["version"]);
  }
  EXPECT_EQ(answers(gw), Answers{"v12\n"});
  nlohmann::json versions = nlohmann::json::parse(admin(gw.port2(), "GET", "/lua/mymod/versions").body);
  ASSERT_EQ(versions["versions"].size(), 10u);  // the last 10
  EXPECT_EQ(versions["current"], md5s[11]);
  EXPECT_EQ(versions["versions"][0]["version"], md5s[11]);  // newest first
  EXPECT_EQ(versions["versions"][9]["version"], md5s[2]);
  EXPECT_FALSE(gw.prefix().exists("state/lua/" + md5s[0] + ".lua"));  // beyond the history: deleted
  EXPECT_TRUE(gw.prefix().exists("state/lua/" + md5s[2] + ".lua"));

  // The previous version, then a chosen one.
  Response rb = admin(gw.port2(), "POST", "/lua/mymod/rollback");
  ASSERT_EQ(rb.status, 200) << rb.body;
  EXPECT_EQ(answers(gw), Answers{"v11\n"});
  rb = admin(gw.port2(), "POST", "/lua/mymod/rollback?to=" + md5s[4]);
  ASSERT_EQ(rb.status, 200) << rb.body;
  EXPECT_EQ(answers(gw), Answers{"v5\n"});
  EXPECT_EQ(admin(gw.port2(), "POST", "/lua/mymod/rollback?to=" + md5s[0]).status, 404);  // not kept

  // Delete: require finds the file again.
  ASSERT_EQ(admin(gw.port2(), "DELETE", "/lua/mymod").status, 200);
  EXPECT_EQ(answers(gw), Answers{"file\n"});
  EXPECT_EQ(admin(gw.port2(), "DELETE", "/lua/mymod").status, 404);
  EXPECT_EQ(admin(gw.port2(), "POST", "/lua/mymod/rollback").status, 404);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(AdminLuaTest, LuaModuleHistorySetsTheVersionsKept) {
  Gateway gw;
  luaConf(gw, "lua_module_history 3;");
  ASSERT_TRUE(gw.start());
  for (int i = 1; i <= 5; i++) {
    ASSERT_LT(admin(gw.port2(), "PUT", "/lua/mymod", "return {v = " + std::to_string(i) + "}").status, 300);
  }
  nlohmann::json versions = nlohmann::json::parse(admin(gw.port2(), "GET", "/lua/mymod/versions").body);
  EXPECT_EQ(versions["versions"].size(), 3u);
  EXPECT_EQ(gw.stop(), 0);
  Gateway bad;
  bad.setSimpleConf("location / { return 200; }", "lua_module_history 0;");
  RunResult r = runTidegate({"-t", "-p", bad.prefix().path(), "-c", bad.path("conf/tidegate.conf")});
  EXPECT_NE(r.err.find("invalid value \"0\" in \"lua_module_history\" directive"), std::string::npos) << r.err;
}

TEST(AdminLuaTest, PushedModulesPersistAcrossRestartAndReload) {
  Gateway gw;
  luaConf(gw);
  ASSERT_TRUE(gw.start());
  ASSERT_EQ(admin(gw.port2(), "PUT", "/lua/mymod", "return {v = 'kept'}").status, 201);
  ASSERT_EQ(gw.stop(), 0);
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(answers(gw), Answers{"kept\n"});
  std::vector<pid_t> old = gw.workerPids();
  gw.signal(SIGHUP);
  ASSERT_TRUE(gw.waitWorkersReplaced(old, 2));
  EXPECT_EQ(answers(gw), Answers{"kept\n"});
  EXPECT_EQ(gw.stop(), 0);
}

}  // namespace
}  // namespace tidegate::test
