// USR2 binary upgrade: a new master starts on the same listening sockets,
// both serve until QUIT reaches the old one, and no request fails.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <thread>

#include "harness.h"

namespace tidegate::test {
namespace {

pid_t pidFrom(const Gateway& gw, const std::string& rel) {
  if (!gw.prefix().exists(rel)) return -1;
  return static_cast<pid_t>(std::atoi(gw.prefix().read(rel).c_str()));
}

TEST(UpgradeTest, Usr2StartsNewBinaryOnSameSocketsWithoutFailures) {
  Gateway gw;
  gw.setSimpleConf("    location / { return 200 \"ok\"; }\n", "", 2);
  ASSERT_TRUE(gw.start());
  pid_t old_master = gw.masterPid();
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::thread client([&] {
    while (!stop) {
      Response r = httpGet(gw.port(), "/");
      if (r.status == 200) ok++;
      else failed++;
    }
  });
  ASSERT_TRUE(waitFor([&] { return ok > 20; }));
  gw.signal(SIGUSR2);
  // The old pid file moves aside and the new master writes its own.
  ASSERT_TRUE(waitFor([&] { return pidFrom(gw, "logs/tidegate.pid.oldbin") == old_master; }));
  pid_t new_master = -1;
  ASSERT_TRUE(waitFor([&] {
    new_master = pidFrom(gw, "logs/tidegate.pid");
    return new_master > 0 && new_master != old_master && childrenOf(new_master).size() == 2;
  }));
  int before_quit = ok;
  gw.signal(SIGQUIT);  // the old master drains and leaves
  EXPECT_EQ(gw.waitExit(Ms(10000)), 0);
  EXPECT_TRUE(waitFor([&] { return ok > before_quit + 50; }));
  stop = true;
  client.join();
  EXPECT_EQ(failed, 0);
  EXPECT_FALSE(gw.prefix().exists("logs/tidegate.pid.oldbin"));
  EXPECT_EQ(pidFrom(gw, "logs/tidegate.pid"), new_master);
  // The new master now owns the service; stop it like any master.
  std::vector<pid_t> workers = childrenOf(new_master);
  kill(new_master, SIGQUIT);
  EXPECT_TRUE(waitFor([&] { return kill(new_master, 0) != 0; }));
  for (pid_t w : workers) EXPECT_TRUE(waitFor([&] { return kill(w, 0) != 0; }));
  EXPECT_EQ(gw.errorLog().find("[emerg]"), std::string::npos) << gw.errorLog();
}

TEST(UpgradeTest, FailedNewBinaryRestoresPidFile) {
  Gateway gw;
  gw.setSimpleConf("    location / { return 200 \"ok\"; }\n");
  ASSERT_TRUE(gw.start());
  // A conf the new binary refuses: it exits, the old master carries on.
  gw.setSimpleConf("    location / { nonsense; }\n");
  gw.signal(SIGUSR2);
  EXPECT_TRUE(gw.waitLog("this master keeps serving"));
  EXPECT_TRUE(waitFor([&] { return pidFrom(gw, "logs/tidegate.pid") == gw.masterPid(); }));
  EXPECT_FALSE(gw.prefix().exists("logs/tidegate.pid.oldbin"));
  EXPECT_EQ(httpGet(gw.port(), "/").status, 200);
  EXPECT_EQ(gw.stop(), 0);
}

}  // namespace
}  // namespace tidegate::test
