// ngx.shared.DICT across processes: every worker sees one store, incr is
// atomic under concurrent requests, and a reload keeps the data of a zone
// whose name and size stay.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace tidegate::test {
namespace {

const char* kServer = R"(
    location /incr { content_by_lua_block { ngx.say(ngx.shared.counters:incr("n", 1, 0)) } }
    location /get { content_by_lua_block { ngx.say(ngx.shared.counters:get("n")) } }
    location /pid { content_by_lua_block { ngx.say(ngx.worker.pid()) } }
)";

TEST(SharedDictTest, IncrFromEveryWorkerIsAtomicAndVisibleEverywhere) {
  Gateway gw;
  // reuseport: the kernel spreads connections over both workers by their
  // source port; with one shared socket, the worker that wins every accept
  // under load may serve them all.
  gw.setConf(std::string("worker_processes 2;\nevents {}\nhttp {\n  lua_shared_dict counters 1m;\n"
                         "  server {\n    listen 127.0.0.1:{PORT} reuseport;\n") +
             kServer + "\n  }\n}\n");
  ASSERT_TRUE(gw.start());
  ASSERT_TRUE(waitFor([&] { return gw.workerPids().size() == 2u; }));
  constexpr int kThreads = 4, kEach = 100;
  std::atomic<int> ok{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < kThreads; t++) {
    clients.emplace_back([&] {
      for (int i = 0; i < kEach; i++) {
        if (httpGet(gw.port(), "/incr").status == 200) ok++;
      }
    });
  }
  for (auto& c : clients) c.join();
  ASSERT_EQ(ok.load(), kThreads * kEach);
  // Both workers served some of them (one connection per request), and
  // every worker reads the same total.
  std::set<std::string> pids;
  for (int i = 0; i < 40 && pids.size() < 2; i++) pids.insert(httpGet(gw.port(), "/pid").body);
  EXPECT_EQ(pids.size(), 2u);
  for (int i = 0; i < 10; i++) EXPECT_EQ(httpGet(gw.port(), "/get").body, "400\n");
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(SharedDictTest, ReloadKeepsTheDataOfAnUnchangedZone) {
  Gateway gw;
  gw.setSimpleConf(kServer, "lua_shared_dict counters 1m;", 2);
  ASSERT_TRUE(gw.start());
  for (int i = 0; i < 5; i++) ASSERT_EQ(httpGet(gw.port(), "/incr").status, 200);
  std::vector<pid_t> old_workers = gw.workerPids();
  gw.signal(SIGHUP);
  ASSERT_TRUE(gw.waitWorkersReplaced(old_workers, 2)) << gw.errorLog();
  EXPECT_EQ(httpGet(gw.port(), "/get").body, "5\n");
  EXPECT_EQ(gw.stop(), 0);
}

// A worker killed (SIGKILL) inside a dict operation, with the dict's lock
// held and an entry half-linked: the master respawns it, the other worker
// and the new one take the lock again (robust mutex) and find the dict
// consistent (reset, since the write was half done) and usable.
TEST(SharedDictTest, AWorkerKilledHoldingTheLockDoesNotBlockTheOthers) {
  Gateway gw;
  gw.setSimpleConf(std::string(kServer) + R"(
    location /crash {
        content_by_lua_block {
            local d = ngx.shared.counters
            d:_crash_next("insert")
            d:set("new key", "never finished")
        }
    }
)",
                   "lua_shared_dict counters 1m;", 2);
  ASSERT_TRUE(gw.start());
  for (int i = 0; i < 3; i++) ASSERT_EQ(httpGet(gw.port(), "/incr").status, 200);
  std::vector<pid_t> before = gw.workerPids();
  Response crashed = httpGet(gw.port(), "/crash");
  EXPECT_EQ(crashed.status, 0) << "the worker died mid-request";
  // Respawned, and every worker serves dict operations again, at once.
  ASSERT_TRUE(waitFor([&] { return gw.workerPids().size() == 2 && gw.workerPids() != before; })) << gw.errorLog();
  for (int i = 0; i < 20; i++) {
    Response r = httpGet(gw.port(), "/incr");
    ASSERT_EQ(r.status, 200) << gw.errorLog();
  }
  // The interrupted write emptied the dict (it could not be trusted); the
  // 20 increments after it all counted.
  EXPECT_EQ(httpGet(gw.port(), "/get").body, "20\n");
  EXPECT_TRUE(gw.waitLog("exited on signal 9"));
  EXPECT_EQ(gw.stop(), 0);
}

TEST(SharedDictTest, ExpiredEntriesNoOneTouchesAreFreedPeriodically) {
  Gateway gw;
  gw.setSimpleConf(R"(
    location /set { content_by_lua_block { local ok = ngx.shared.counters:set("k", "v", 0.05); ngx.say(ok) } }
    location /stale { content_by_lua_block { ngx.say(ngx.shared.counters:get_stale("k")) } }
  )",
                   "lua_shared_dict counters 1m;", 2);
  ASSERT_TRUE(gw.start());
  ASSERT_EQ(httpGet(gw.port(), "/set").body, "true\n");
  // get_stale returns an expired value until it is freed; no write comes to
  // free it lazily, so only the workers' sweep can.
  EXPECT_TRUE(waitFor([&] { return httpGet(gw.port(), "/stale").body == "nil\n"; }, Ms(10000)));
  EXPECT_EQ(gw.stop(), 0);
}

TEST(SharedDictTest, ABadSizeIsAConfError) {
  Gateway gw;
  gw.setSimpleConf(kServer, "lua_shared_dict counters 1k;");
  RunResult r = runTidegate({"-t", "-p", gw.prefix().path(), "-c", gw.path("conf/tidegate.conf")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("invalid lua shared dict size \"1k\""), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tidegate::test
