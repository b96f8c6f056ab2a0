// lua_budget_timeout (docs/lua-api.md "Budgets for trusted handlers"): a
// trusted handler, JIT on, that runs past its wall-clock budget is ended in
// every phase, inside pcall/xpcall, in a JIT-compiled loop and while it
// waits; the worker serves the next request. Without the watchdog the loops
// below would hold the worker forever: every request here has a client
// timeout, so such a failure shows as a failed read, not a hang.
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <string>
#include <vector>

#include "fake_upstream.h"
#include "harness.h"

namespace tidegate::test {
namespace {

// A JIT-hot numeric loop that calls nothing (LuaJIT compiles it after a few
// dozen iterations; hooks alone never see it again).
const std::string kSpin = "local x = 0 while true do x = x + 1 end";

std::string loc(const std::string& path, const std::string& body) {
  return "location = " + path + " { " + body + " }\n";
}

std::string content(const std::string& lua) { return "content_by_lua_block { " + lua + " }"; }

// One worker, budget 100ms for the whole server; /pid answers from the worker.
void budgetConf(Gateway& gw, const std::string& locations, const std::string& http_extra = "") {
  gw.setSimpleConf("lua_budget_timeout 100ms;\n" + loc("/pid", content("ngx.say(ngx.worker.pid())")) + locations,
                   http_extra, 1);
}

Response get(const Gateway& gw, const std::string& path) {
  RawClient c(gw.port());
  c.send("GET " + path + " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  return c.readResponse(Ms(8000));
}

// The worker that served the kill is the one that answers next.
void expectSameWorker(const Gateway& gw, const std::string& pid_before) {
  Response r = get(gw, "/pid");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, pid_before);
}

TEST(LuaBudgetTest, JitLoopKilledInTheRequestPhases) {
  Gateway gw;
  budgetConf(gw, loc("/content", content(kSpin)) +
                     loc("/rewrite", "rewrite_by_lua_block { " + kSpin + " } " + content("ngx.say('no')")) +
                     loc("/access", "access_by_lua_block { " + kSpin + " } " + content("ngx.say('no')")) +
                     loc("/set", "set_by_lua_block $v { " + kSpin + " } return 200 $v;") +
                     loc("/timed", "lua_budget_timeout 300ms; " + content("pcall(function() " + kSpin + " end)")));
  ASSERT_TRUE(gw.start());
  std::string pid = get(gw, "/pid").body;
  // RELIABILITY.md: stopped within twice the budget, even inside pcall.
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(get(gw, "/timed").status, 500);
  auto took = std::chrono::duration_cast<Ms>(std::chrono::steady_clock::now() - t0);
  EXPECT_GE(took.count(), 300);
  EXPECT_LT(took.count(), 600);
  for (const std::string& phase : {"content", "rewrite", "access", "set"}) {
    Response r = get(gw, "/" + phase);
    EXPECT_EQ(r.status, 500) << phase;
    EXPECT_TRUE(r.complete) << phase;
    expectSameWorker(gw, pid);
  }
  std::string log = gw.errorLog();
  EXPECT_NE(log.find("content_by_lua* killed: lua_budget_timeout 100ms exceeded; stack traceback:"), std::string::npos)
      << log;
  EXPECT_NE(log.find("rewrite_by_lua* killed: lua_budget_timeout 100ms exceeded"), std::string::npos) << log;
  EXPECT_NE(log.find("access_by_lua* killed: lua_budget_timeout 100ms exceeded"), std::string::npos) << log;
  EXPECT_NE(log.find("failed to run set_by_lua*: lua_budget_timeout 100ms exceeded"), std::string::npos) << log;
  // The traceback names the loop's line.
  EXPECT_NE(log.find("content_by_lua(tidegate.conf:"), std::string::npos) << log;
  EXPECT_TRUE(gw.seriousLogLinesBut({"lua_budget_timeout 100ms exceeded", "lua_budget_timeout 300ms exceeded"}).empty());
  EXPECT_EQ(gw.stop(), 0);
}

// The filters and log_by_lua* run after the head may be out: a kill in the
// header filter closes the connection with no response, in the body filter
// it cuts the body, in the log phase the response stands.
TEST(LuaBudgetTest, JitLoopKilledInFiltersAndLog) {
  Gateway gw;
  budgetConf(gw, loc("/header", content("ngx.say('hi')") + " header_filter_by_lua_block { " + kSpin + " }") +
                     loc("/body", content("ngx.say('hi')") + " body_filter_by_lua_block { " + kSpin + " }") +
                     loc("/log", content("ngx.say('logged')") + " log_by_lua_block { " + kSpin + " }"));
  ASSERT_TRUE(gw.start());
  std::string pid = get(gw, "/pid").body;
  {
    RawClient c(gw.port());
    c.send("GET /header HTTP/1.1\r\nHost: localhost\r\n\r\n");
    EXPECT_EQ(c.readUntilClose(Ms(8000)), "");
  }
  expectSameWorker(gw, pid);
  Response r = get(gw, "/body");
  EXPECT_FALSE(r.complete && r.status == 200 && r.body == "hi\n");
  expectSameWorker(gw, pid);
  r = get(gw, "/log");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "logged\n");
  EXPECT_TRUE(gw.waitLog("log_by_lua* killed: lua_budget_timeout 100ms exceeded"));
  expectSameWorker(gw, pid);
  std::string log = gw.errorLog();
  EXPECT_NE(log.find("failed to run header_filter_by_lua*: lua_budget_timeout 100ms exceeded"), std::string::npos)
      << log;
  EXPECT_NE(log.find("failed to run body_filter_by_lua*: lua_budget_timeout 100ms exceeded"), std::string::npos)
      << log;
  EXPECT_TRUE(gw.seriousLogLinesBut({"lua_budget_timeout 100ms exceeded"}).empty());
  EXPECT_EQ(gw.stop(), 0);
}

TEST(LuaBudgetTest, JitLoopKilledInBalancer) {
  FakeUpstream up;
  Gateway gw;
  budgetConf(gw, loc("/proxy", "proxy_pass http://spin;") + loc("/direct", "proxy_pass http://fine;"),
             "upstream spin { server 127.0.0.1:" + std::to_string(up.port()) + "; balancer_by_lua_block { " + kSpin +
                 " } }\nupstream fine { server 127.0.0.1:" + std::to_string(up.port()) + "; }\n");
  ASSERT_TRUE(gw.start());
  std::string pid = get(gw, "/pid").body;
  Response r = get(gw, "/proxy");
  EXPECT_GE(r.status, 500);
  EXPECT_TRUE(gw.waitLog("balancer_by_lua* killed: lua_budget_timeout 100ms exceeded"));
  expectSameWorker(gw, pid);
  EXPECT_EQ(get(gw, "/direct").status, 200);
  EXPECT_EQ(gw.stop(), 0);
}

// pcall, xpcall (even with a message handler that never returns), a
// coroutine, a light thread: none of them keeps a killed handler alive.
TEST(LuaBudgetTest, KillCannotBeCaught) {
  Gateway gw;
  budgetConf(
      gw, loc("/pcall", content("local n = 0 while true do n = n + 1 pcall(function() " + kSpin + " end) end")) +
              loc("/xpcall", content("while true do xpcall(function() " + kSpin +
                                     " end, function(e) while true do end end) end")) +
              loc("/error", content("while true do pcall(error, 'x') end")) +
              loc("/coroutine", content("local co = coroutine.wrap(function() " + kSpin +
                                        " end) while true do pcall(co) end")) +
              loc("/thread", content("local t = ngx.thread.spawn(function() " + kSpin +
                                     " end) ngx.thread.wait(t) ngx.say('no')")) +
              loc("/sort", content("local t = {} for i = 1, 100 do t[i] = i end "
                                   "while true do pcall(table.sort, t, function(a, b) " + kSpin + " end) end")) +
              loc("/set", "set_by_lua_block $v { while true do xpcall(function() " + kSpin +
                              " end, function(e) while true do end end) end } return 200 $v;") +
              loc("/filter", content("ngx.say('hi')") + " header_filter_by_lua_block { local co = coroutine.wrap("
                                 "function() " + kSpin + " end) while true do pcall(co) "
                                 "xpcall(function() " + kSpin + " end, function(e) while true do end end) end }"));
  ASSERT_TRUE(gw.start());
  std::string pid = get(gw, "/pid").body;
  for (const std::string& path : {"/pcall", "/xpcall", "/error", "/coroutine", "/thread", "/sort", "/set"}) {
    Response r = get(gw, path);
    EXPECT_EQ(r.status, 500) << path;
    expectSameWorker(gw, pid);
  }
  {
    RawClient c(gw.port());
    c.send("GET /filter HTTP/1.1\r\nHost: localhost\r\n\r\n");
    EXPECT_EQ(c.readUntilClose(Ms(8000)), "");
  }
  expectSameWorker(gw, pid);
  EXPECT_NE(gw.errorLog().find("failed to run header_filter_by_lua*: lua_budget_timeout 100ms exceeded"),
            std::string::npos);
  EXPECT_TRUE(gw.seriousLogLinesBut({"lua_budget_timeout 100ms exceeded"}).empty());
  EXPECT_EQ(gw.stop(), 0);
}

// A handler that waits past its budget (ngx.sleep, a cosocket read) ends at
// the deadline with 500; one that sleeps a little less is fine; the budget
// is per handler, so two phases of 60ms each pass under 100ms.
TEST(LuaBudgetTest, WaitingHandlerEndsAtTheDeadline) {
  FakeUpstream up;
  up.setDefault(Behaviour::stallOnAccept());
  Gateway gw;
  budgetConf(gw, loc("/sleep", content("ngx.sleep(30) ngx.say('woke')")) +
                     loc("/socket", content("local s = ngx.socket.tcp() s:settimeout(30000) "
                                            "assert(s:connect('127.0.0.1', " + std::to_string(up.port()) + ")) "
                                            "s:send('GET / HTTP/1.0\\r\\n\\r\\n') s:receive('*a') ngx.say('read')")) +
                     loc("/short", "rewrite_by_lua_block { ngx.sleep(0.06) } " +
                                       content("ngx.sleep(0.06) ngx.say('both')")) +
                     loc("/busy", content("local t = ngx.now() + 0.06 local n = 0 "
                                          "while ngx.now() < t do n = n + 1 ngx.update_time() end ngx.say('busy')")));
  ASSERT_TRUE(gw.start());
  std::string pid = get(gw, "/pid").body;
  EXPECT_EQ(get(gw, "/sleep").status, 500);
  EXPECT_EQ(get(gw, "/socket").status, 500);
  EXPECT_TRUE(gw.waitLog("content_by_lua* killed: lua_budget_timeout 100ms exceeded; while waiting"));
  Response r = get(gw, "/short");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "both\n");
  r = get(gw, "/busy");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "busy\n");
  expectSameWorker(gw, pid);
  EXPECT_TRUE(gw.seriousLogLinesBut({"lua_budget_timeout 100ms exceeded"}).empty());
  EXPECT_EQ(gw.stop(), 0);
}

// After the head is out, a kill cuts the response: the client never sees a
// complete body.
TEST(LuaBudgetTest, KillAfterFlushCutsTheResponse) {
  Gateway gw;
  budgetConf(gw, loc("/flushed", content("ngx.say('start') ngx.flush(true) " + kSpin)));
  ASSERT_TRUE(gw.start());
  Response r = get(gw, "/flushed");
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.complete);
  EXPECT_TRUE(gw.waitLog("content_by_lua* killed: lua_budget_timeout 100ms exceeded"));
  EXPECT_EQ(gw.stop(), 0);
}

// The budget inherits and `off` ends it in a nested level; the JIT was on
// (a trace exists after the loop ran); jit.profile belongs to the watchdog.
TEST(LuaBudgetTest, OffJitAndProfile) {
  Gateway gw;
  budgetConf(gw, loc("/spin", content(kSpin)) +
                     loc("/off", "lua_budget_timeout off; " +
                                     content("local t = ngx.now() + 0.3 while ngx.now() < t do ngx.update_time() end "
                                             "ngx.say('off')")) +
                     loc("/jit", content("ngx.say(jit.status(), ' ', require('jit.util').traceinfo(1) ~= nil)")) +
                     loc("/profile", content("ngx.say(pcall(require('jit.profile').start, 'f', function() end))")));
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(get(gw, "/spin").status, 500);
  EXPECT_EQ(get(gw, "/jit").body, "true true\n");
  Response r = get(gw, "/off");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "off\n");
  r = get(gw, "/profile");
  EXPECT_EQ(r.body.rfind("false", 0), 0u) << r.body;
  EXPECT_NE(r.body.find("jit.profile is in use by lua_budget_timeout"), std::string::npos) << r.body;
  EXPECT_EQ(gw.stop(), 0);
}

// A reload's workers start their own watchdog; a conf without budgets
// starts none (the loop then holds its worker: not requested here).
TEST(LuaBudgetTest, ReloadKeepsTheWatchdog) {
  Gateway gw;
  budgetConf(gw, loc("/content", content(kSpin)));
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(get(gw, "/content").status, 500);
  std::vector<pid_t> old = gw.workerPids();
  gw.signal(SIGHUP);
  ASSERT_TRUE(gw.waitWorkersReplaced(old, 1));
  EXPECT_EQ(get(gw, "/content").status, 500);
  EXPECT_TRUE(gw.seriousLogLinesBut({"lua_budget_timeout 100ms exceeded"}).empty());
  EXPECT_EQ(gw.stop(), 0);
}

TEST(LuaBudgetTest, ConfChecks) {
  TempDir dir;
  dir.write("bad.conf", "events {}\nhttp { server { listen 127.0.0.1:1; lua_budget_timeout soon; } }\n");
  RunResult r = runTidegate({"-t", "-p", dir.path(), "-c", dir.path() + "/bad.conf"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("invalid value \"soon\" in \"lua_budget_timeout\" directive"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("bad.conf:2"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tidegate::test
