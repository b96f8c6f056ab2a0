// Running out of file descriptors or connection slots is a normal state:
// no crash, no busy loop, rate-limited logs, and service resumes once
// resources free up (RELIABILITY.md "Processes").
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <sstream>

#include "harness.h"

namespace tidegate::test {
namespace {

// utime+stime of a process in clock ticks.
long cpuTicks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t close = stat.rfind(')');
  std::istringstream rest(stat.substr(close + 2));
  std::string field;
  long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; i++) {
    if (i == 14) utime = std::stol(field);
    if (i == 15) stime = std::stol(field);
  }
  return utime + stime;
}

int countLines(const std::string& text, const std::string& needle) {
  int n = 0;
  for (size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) n++;
  return n;
}

void exhaustAndRecover(Gateway& gw, const std::string& log_needle) {
  ASSERT_TRUE(waitFor([&] { return gw.workerPids().size() == 1; }));
  pid_t worker = gw.workerPids()[0];
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < 300; i++) {
    auto c = std::make_unique<RawClient>();
    if (c->connect(gw.port(), Ms(1000))) clients.push_back(std::move(c));
  }
  ASSERT_TRUE(gw.waitLog(log_needle));
  // Hold the pressure for a second: the worker must stay (nearly) idle.
  long before = cpuTicks(worker);
  waitFor([] { return false; }, Ms(1000));
  long used = cpuTicks(worker) - before;
  EXPECT_LT(used, sysconf(_SC_CLK_TCK) / 4) << "worker busy-looped while out of resources";
  EXPECT_LE(countLines(gw.errorLog(), log_needle), 3) << "log not rate-limited";
  clients.clear();
  // Service resumes within a second of the resources coming back.
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(waitFor([&] { return httpGet(gw.port(), "/").status == 200; }, Ms(3000)));
  auto took = std::chrono::duration_cast<Ms>(std::chrono::steady_clock::now() - start);
  EXPECT_LT(took.count(), 1000);
  EXPECT_EQ(gw.workerPids(), std::vector<pid_t>{worker}) << "the worker died";
}

TEST(ResilienceTest, FileDescriptorExhaustion) {
  Gateway gw;
  gw.setSimpleConf("    location / { return 200 \"ok\"; }\n", "client_header_timeout 30s;", 1,
                   "worker_rlimit_nofile 64;");
  ASSERT_TRUE(gw.start());
  exhaustAndRecover(gw, "accept() failed (24: Too many open files)");
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ResilienceTest, WorkerConnectionsExhaustion) {
  Gateway gw;
  gw.setConf(R"(
worker_processes 1;
events { worker_connections 50; }
http {
  client_header_timeout 30s;
  server { listen 127.0.0.1:{PORT}; location / { return 200 "ok"; } }
}
)");
  ASSERT_TRUE(gw.start());
  exhaustAndRecover(gw, "worker_connections are not enough");
  EXPECT_EQ(gw.stop(), 0);
}

}  // namespace
}  // namespace tidegate::test
