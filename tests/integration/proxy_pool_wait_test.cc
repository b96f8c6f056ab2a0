// pool_conns / pool_wait: past `pool_conns` open connections to a peer, a
// try that finds none idle waits for one to come back (first come, first
// served) instead of opening another, for at most `pool_wait`; waiting is
// skipped when no connection changed hands for that long, and `pool_wait 0`
// opens one for every busy try as nginx does.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "fake_upstream.h"
#include "harness.h"

namespace tidegate::test {
namespace {

using Clock = std::chrono::steady_clock;

// A gateway that proxies / to `up` through an upstream block with `params`.
bool startPooled(Gateway& gw, const FakeUpstream& up, const std::string& params) {
  gw.setSimpleConf("location / { proxy_pass http://backend; }",
                   "upstream backend { server 127.0.0.1:" + std::to_string(up.port()) + "; " + params + " }");
  return gw.start();
}

long msSince(Clock::time_point t) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count());
}

// `n` clients, each with one request in flight at once; every response must be a 200.
void sendConcurrently(const Gateway& gw, int n) {
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < n; i++) {
    clients.push_back(std::make_unique<RawClient>(gw.port()));
    ASSERT_TRUE(clients.back()->send("GET /c" + std::to_string(i) + " HTTP/1.1\r\nHost: a\r\n\r\n"));
  }
  for (auto& c : clients) EXPECT_EQ(c->readResponse(Ms(10000)).status, 200) << gw.errorLog();
}

TEST(ProxyPoolWaitTest, TriesPastPoolConnsWaitForAConnectionToComeBack) {
  FakeUpstream up;
  up.setDefault(Behaviour::slow(Ms(50)));
  Gateway gw;
  ASSERT_TRUE(startPooled(gw, up, "pool_conns 2; pool_wait 10s;"));
  sendConcurrently(gw, 6);
  EXPECT_EQ(up.requestCount(), 6u);
  EXPECT_EQ(up.connectionsAccepted(), 2) << "six tries at once shared the two connections";
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyPoolWaitTest, PoolWaitZeroOpensAConnectionForEveryBusyTry) {
  FakeUpstream up;
  up.setDefault(Behaviour::slow(Ms(300)));
  Gateway gw;
  ASSERT_TRUE(startPooled(gw, up, "pool_conns 2; pool_wait 0;"));
  sendConcurrently(gw, 6);
  EXPECT_EQ(up.connectionsAccepted(), 6);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyPoolWaitTest, AWaitEndsAfterPoolWaitWithAConnectionOfItsOwn) {
  FakeUpstream up;
  up.enqueue(Behaviour::slow(Ms(3000)));  // holds the only connection
  Gateway gw;
  gw.setSimpleConf("location / { proxy_pass http://backend; }",
                   "log_format t '$request_uri $upstream_connect_time';\n"
                   "access_log logs/access.log t;\n"
                   "upstream backend { server 127.0.0.1:" + std::to_string(up.port()) +
                       "; pool_conns 1; pool_wait 300ms; }");
  ASSERT_TRUE(gw.start());
  RawClient slow(gw.port());
  ASSERT_TRUE(slow.send("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"));
  ASSERT_TRUE(up.waitForRequests(1));
  RawClient c(gw.port());
  Clock::time_point start = Clock::now();
  ASSERT_TRUE(c.send("GET /next HTTP/1.1\r\nHost: a\r\n\r\n"));
  EXPECT_EQ(c.readResponse().status, 200) << gw.errorLog();
  long took = msSince(start);
  EXPECT_GE(took, 250) << "it waited for the busy connection first";
  EXPECT_LT(took, 2500) << "it did not wait for the slow exchange to end";
  EXPECT_EQ(up.connectionsAccepted(), 2);
  EXPECT_EQ(slow.readResponse().status, 200);
  // The wait is part of $upstream_connect_time (as a connect would be).
  // (The server's own access_log writes the combined format to the same file.)
  ASSERT_TRUE(waitFor([&] { return ("\n" + gw.accessLog()).find("\n/next ") != std::string::npos; }))
      << gw.accessLog();
  std::string log = "\n" + gw.accessLog();
  size_t at = log.find("\n/next ") + 7;
  std::string connect_time = log.substr(at, log.find('\n', at) - at);
  ASSERT_FALSE(connect_time.empty() || connect_time[0] < '0' || connect_time[0] > '9') << log;
  EXPECT_GE(std::stod(connect_time), 0.25) << log;
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyPoolWaitTest, EveryWaiterOpensItsOwnOncePoolWaitIsOver) {
  FakeUpstream up;
  up.setDefault(Behaviour::slow(Ms(1500)));  // longer than every wait
  Gateway gw;
  ASSERT_TRUE(startPooled(gw, up, "pool_conns 2; pool_wait 200ms;"));
  Clock::time_point start = Clock::now();
  sendConcurrently(gw, 6);
  // Four waited 200 ms each, then opened their own: one round of 1.5 s, not three.
  EXPECT_LT(msSince(start), 2900);
  EXPECT_EQ(up.connectionsAccepted(), 6);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyPoolWaitTest, NoWaitWhenNoConnectionChangedHandsForPoolWait) {
  FakeUpstream up, clock_peer;
  up.enqueue(Behaviour::slow(Ms(3000)));
  clock_peer.setDefault(Behaviour::slow(Ms(400)));
  Gateway gw;
  gw.setSimpleConf("location / { proxy_pass http://backend; }\n"
                   "location /clock { proxy_pass http://127.0.0.1:" + std::to_string(clock_peer.port()) + "; }",
                   "upstream backend { server 127.0.0.1:" + std::to_string(up.port()) +
                       "; pool_conns 1; pool_wait 300ms; }");
  ASSERT_TRUE(gw.start());
  RawClient a(gw.port());
  ASSERT_TRUE(a.send("GET /a HTTP/1.1\r\nHost: a\r\n\r\n"));  // opens the only connection, and holds it
  ASSERT_TRUE(up.waitForRequests(1));
  // 400 ms go by (another peer's slow answer marks them) with no connection
  // to `backend` opened, taken or given back.
  RawClient clock(gw.port());
  ASSERT_TRUE(clock.send("GET /clock HTTP/1.1\r\nHost: a\r\n\r\n"));
  ASSERT_EQ(clock.readResponse().status, 200);
  // The one connection is held by an exchange older than pool_wait: the
  // next try opens its own at once.
  RawClient c(gw.port());
  Clock::time_point start = Clock::now();
  ASSERT_TRUE(c.send("GET /c HTTP/1.1\r\nHost: a\r\n\r\n"));
  EXPECT_EQ(c.readResponse().status, 200) << gw.errorLog();
  EXPECT_LT(msSince(start), 250);
  EXPECT_EQ(up.connectionsAccepted(), 2);
  EXPECT_EQ(a.readResponse().status, 200);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyPoolWaitTest, AClientThatLeavesWhileWaitingIsForgotten) {
  FakeUpstream up;
  up.enqueue(Behaviour::slow(Ms(500)));
  Gateway gw;
  ASSERT_TRUE(startPooled(gw, up, "pool_conns 1; pool_wait 10s;"));
  RawClient holder(gw.port());
  ASSERT_TRUE(holder.send("GET /hold HTTP/1.1\r\nHost: a\r\n\r\n"));
  ASSERT_TRUE(up.waitForRequests(1));
  {
    RawClient leaver(gw.port());
    ASSERT_TRUE(leaver.send("GET /leave HTTP/1.1\r\nHost: a\r\n\r\n"));
  }  // closes while it waits (its request and its end arrive together)
  ASSERT_TRUE(gw.waitLog("client prematurely closed connection while connecting to upstream"));
  EXPECT_EQ(holder.readResponse().status, 200);
  // The connection that came back serves the next try; the one that left got nothing.
  RawClient next(gw.port());
  ASSERT_TRUE(next.send("GET /next HTTP/1.1\r\nHost: a\r\n\r\n"));
  EXPECT_EQ(next.readResponse().status, 200) << gw.errorLog();
  EXPECT_EQ(up.connectionsAccepted(), 1);
  EXPECT_EQ(up.requestCount(), 2u);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
  EXPECT_EQ(gw.stop(), 0);
}

}  // namespace
}  // namespace tidegate::test
