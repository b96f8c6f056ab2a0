// Active health checks (health_check in an upstream): probes start with no
// client traffic, take a server out after `fails` failures and bring it
// back after `passes` successes, the proxy follows the verdict, one worker
// per machine probes, and another one takes over when it dies.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "fake_upstream.h"
#include "harness.h"

namespace tidegate::test {
namespace {

constexpr const char* kProxyAll = "location / { proxy_pass http://backend; }";
constexpr const char* kUserAgent = "tidegate-health-check";

bool isProbe(const RecordedRequest& r) { return r.header("user-agent") == kUserAgent; }

size_t probeCount(const FakeUpstream& up) {
  size_t n = 0;
  for (const RecordedRequest& r : up.requests()) n += isProbe(r) ? 1 : 0;
  return n;
}

size_t proxiedCount(const FakeUpstream& up) { return up.requestCount() - probeCount(up); }

std::string server(int port) { return "127.0.0.1:" + std::to_string(port); }

// The pids that logged "health checks run in this worker", in log order.
std::vector<pid_t> checkerPids(const Gateway& gw) {
  std::vector<pid_t> pids;
  std::string log = gw.errorLog();
  const std::string needle = "health checks run in this worker";
  for (size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) {
    size_t line = log.rfind('\n', at);
    line = line == std::string::npos ? 0 : line + 1;
    size_t level = log.find("] ", line);
    if (level == std::string::npos || level > at) continue;
    pids.push_back(static_cast<pid_t>(std::stol(log.substr(level + 2))));
  }
  return pids;
}

// A gateway proxying to upstream "backend" of one server, `up`, checked
// every 100 ms, with `workers` workers.
bool startChecked(Gateway& gw, const FakeUpstream& up, int workers) {
  gw.setSimpleConf(kProxyAll, "upstream backend { server " + server(up.port()) + "; health_check interval=100ms; }",
                   workers);
  return gw.start();
}

// A fake upstream whose probes get 500 while `failing` is set; proxied
// requests always get 200.
void answerProbes(FakeUpstream& up, std::atomic<bool>& failing) {
  up.setHandler([&failing](const RecordedRequest& r) {
    if (isProbe(r) && failing.load()) return Behaviour::respond(500, "sick");
    return Behaviour::respond(200, "ok");
  });
}

TEST(HealthCheckTest, ServerGoesDownAndComesBackWithNoTraffic) {
  FakeUpstream up;
  std::atomic<bool> failing{false};
  answerProbes(up, failing);
  Gateway gw;
  gw.setSimpleConf(kProxyAll, "upstream backend { server " + server(up.port()) +
                                  "; health_check uri=/healthz host=probe.example interval=100ms fails=3 passes=2; }");
  ASSERT_TRUE(gw.start());
  ASSERT_TRUE(waitFor([&] { return probeCount(up) >= 2; })) << gw.errorLog();
  EXPECT_EQ(up.requests()[0].raw_head,
            "GET /healthz HTTP/1.0\r\nHost: probe.example\r\nUser-Agent: tidegate-health-check\r\n"
            "Connection: close\r\n\r\n");

  failing = true;
  size_t before = probeCount(up);
  std::string down = "server " + server(up.port()) + " of upstream \"backend\" is down: 3 health check(s) failed: status 500";
  ASSERT_TRUE(gw.waitLog(down)) << gw.errorLog();
  EXPECT_GE(probeCount(up), before + 3) << "down only after `fails` failures";
  EXPECT_NE(gw.errorLog().find("[warn]"), std::string::npos);

  failing = false;
  std::string up_again = "server " + server(up.port()) + " of upstream \"backend\" is up: 2 health check(s) passed";
  ASSERT_TRUE(gw.waitLog(up_again)) << gw.errorLog();
  EXPECT_EQ(proxiedCount(up), 0u) << "no client traffic was needed";
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(HealthCheckTest, ServerDownByChecksGetsNoTrafficUntilItPasses) {
  FakeUpstream a, b;
  std::atomic<bool> failing{true};
  answerProbes(a, failing);
  Gateway gw;
  gw.setSimpleConf(kProxyAll, "upstream backend { server " + server(a.port()) + "; server " + server(b.port()) +
                                  "; health_check interval=100ms fails=2 passes=2; }",
                   2);
  ASSERT_TRUE(gw.start());
  ASSERT_TRUE(gw.waitLog("server " + server(a.port()) + " of upstream \"backend\" is down")) << gw.errorLog();
  for (int i = 0; i < 8; i++) EXPECT_EQ(httpGet(gw.port(), "/x").status, 200);
  EXPECT_EQ(proxiedCount(a), 0u) << "a server the checks took out gets no traffic";
  EXPECT_EQ(proxiedCount(b), 8u);

  failing = false;
  ASSERT_TRUE(gw.waitLog("server " + server(a.port()) + " of upstream \"backend\" is up")) << gw.errorLog();
  for (int i = 0; i < 8; i++) EXPECT_EQ(httpGet(gw.port(), "/x").status, 200);
  EXPECT_GE(proxiedCount(a), 3u) << "back in the rotation once it passed";
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(HealthCheckTest, OneWorkerProbesForTheMachine) {
  FakeUpstream up;
  Gateway gw;
  ASSERT_TRUE(startChecked(gw, up, 4));
  ASSERT_EQ(gw.workerPids().size(), 4u);
  ASSERT_TRUE(waitFor([&] { return probeCount(up) >= 1; })) << gw.errorLog();
  auto t0 = std::chrono::steady_clock::now();
  constexpr size_t kProbes = 11;
  ASSERT_TRUE(waitFor([&] { return probeCount(up) >= kProbes; })) << gw.errorLog();
  auto elapsed = std::chrono::duration_cast<Ms>(std::chrono::steady_clock::now() - t0);
  // One prober waits `interval` between probes: 10 gaps take 1 s; four
  // would take a quarter of that.
  EXPECT_GE(elapsed.count(), 800) << probeCount(up) << " probes";
  EXPECT_EQ(checkerPids(gw).size(), 1u) << gw.errorLog();
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(HealthCheckTest, AnotherWorkerTakesOverWhenTheCheckerDies) {
  FakeUpstream up;
  Gateway gw;
  ASSERT_TRUE(startChecked(gw, up, 3));
  ASSERT_TRUE(waitFor([&] { return checkerPids(gw).size() == 1; })) << gw.errorLog();
  pid_t first = checkerPids(gw)[0];
  ASSERT_TRUE(waitFor([&] { return probeCount(up) >= 2; }));
  ASSERT_EQ(kill(first, SIGKILL), 0);
  ASSERT_TRUE(waitFor([&] { return checkerPids(gw).size() == 2; })) << gw.errorLog();
  pid_t second = checkerPids(gw)[1];
  EXPECT_NE(second, first);
  size_t after = probeCount(up);
  EXPECT_TRUE(waitFor([&] { return probeCount(up) >= after + 3; })) << "probes go on";
  EXPECT_EQ(gw.stop(), 0);
}

TEST(HealthCheckTest, ReloadHandsTheChecksToANewWorkerWithTheNewSettings) {
  FakeUpstream up;
  Gateway gw;
  ASSERT_TRUE(startChecked(gw, up, 2));
  ASSERT_TRUE(waitFor([&] { return checkerPids(gw).size() == 1 && probeCount(up) >= 1; })) << gw.errorLog();
  std::vector<pid_t> old = gw.workerPids();
  gw.setSimpleConf(kProxyAll,
                   "upstream backend { server " + server(up.port()) + "; health_check uri=/v2 interval=100ms; }", 2);
  gw.signal(SIGHUP);
  auto probedV2 = [&] {
    for (const RecordedRequest& r : up.requests()) {
      if (isProbe(r) && r.target == "/v2") return true;
    }
    return false;
  };
  ASSERT_TRUE(waitFor(probedV2)) << gw.errorLog();
  ASSERT_TRUE(waitFor([&] { return checkerPids(gw).size() >= 2; })) << gw.errorLog();
  pid_t now = checkerPids(gw).back();
  EXPECT_EQ(std::find(old.begin(), old.end(), now), old.end()) << "a new worker checks after the reload";
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(HealthCheckTest, TcpCheckStartsWithoutRequestsAndFindsARefusingPort) {
  RefusingPort refusing;
  FakeUpstream up;
  Gateway gw;
  gw.setSimpleConf(kProxyAll, "upstream backend { server " + server(refusing.port()) + "; server " +
                                  server(up.port()) + "; health_check type=tcp interval=100ms; }");
  ASSERT_TRUE(gw.start());
  std::string down = "server " + server(refusing.port()) +
                     " of upstream \"backend\" is down: 1 health check(s) failed: connect() failed (111: ";
  ASSERT_TRUE(gw.waitLog(down)) << gw.errorLog();
  ASSERT_TRUE(up.waitForConnections(2)) << "the open port is probed too";
  EXPECT_EQ(up.requestCount(), 0u) << "a tcp check sends nothing";
  EXPECT_EQ(gw.errorLog().find("server " + server(up.port()) + " of upstream \"backend\" is down"),
            std::string::npos);
  for (int i = 0; i < 4; i++) EXPECT_EQ(httpGet(gw.port(), "/x").status, 200);
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(HealthCheckTest, BadStatusLineFailsAndAServerThatIsOutIsProbedAtUnhealthyInterval) {
  FakeUpstream up;
  up.setDefault(Behaviour::rawBytes("HTTP/1.1 2OO OK\r\n\r\n"));
  Gateway gw;
  gw.setSimpleConf(kProxyAll, "upstream backend { server " + server(up.port()) +
                                  "; health_check interval=1m unhealthy_interval=50ms; }");
  ASSERT_TRUE(gw.start());
  ASSERT_TRUE(gw.waitLog("is down: 1 health check(s) failed: bad status line")) << gw.errorLog();
  // With interval=1m, five probes in a few seconds come only from unhealthy_interval.
  EXPECT_TRUE(waitFor([&] { return probeCount(up) >= 5; }, Ms(5000))) << probeCount(up) << " probes";
  EXPECT_EQ(gw.stop(), 0);
}

TEST(HealthCheckTest, StalledProbeTimesOutAndPortParameterIsUsed) {
  FakeUpstream served, stalled;
  stalled.setDefault(Behaviour::stallOnAccept());
  Gateway gw;
  // The server's identity is `served`, its probes go to `stalled`'s port.
  gw.setSimpleConf(kProxyAll, "upstream backend { server " + server(served.port()) +
                                  "; health_check interval=100ms timeout=150ms port=" +
                                  std::to_string(stalled.port()) + "; }");
  ASSERT_TRUE(gw.start());
  std::string down = "server " + server(served.port()) + " of upstream \"backend\" is down: 1 health check(s) failed: timeout";
  ASSERT_TRUE(gw.waitLog(down)) << gw.errorLog();
  EXPECT_GE(stalled.connectionsAccepted(), 1);
  EXPECT_EQ(served.connectionsAccepted(), 0);
  EXPECT_EQ(httpGet(gw.port(), "/x").status, 503) << "its only server is down";
  EXPECT_TRUE(gw.waitLog("no live upstreams"));
  EXPECT_EQ(gw.stop(), 0);
}

}  // namespace
}  // namespace tidegate::test
