// RELIABILITY.md "Upstream faults" and "Upstream response framing" through
// proxy_pass: each fault for GET, POST with Content-Length and chunked
// POST, on fresh and on pooled upstream connections. Upstream A misbehaves;
// B (a backup) is where a retry goes, so "retried" and "never sent twice"
// are visible in what each recorded.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include "fake_upstream.h"
#include "harness.h"

namespace tidegate::test {
namespace {

enum class Kind { kGet, kPostLength, kPostChunked };
const Kind kKinds[] = {Kind::kGet, Kind::kPostLength, Kind::kPostChunked};

const char* name(Kind k) {
  switch (k) {
    case Kind::kGet: return "GET";
    case Kind::kPostLength: return "POST with Content-Length";
    default: return "chunked POST";
  }
}

std::string request(Kind k, const std::string& path = "/f") {
  switch (k) {
    case Kind::kGet: return "GET " + path + " HTTP/1.1\r\nHost: a\r\n\r\n";
    case Kind::kPostLength: return "POST " + path + " HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    default:
      return "POST " + path + " HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
  }
}

// A gateway proxying to A (first choice, never taken out) with B as backup.
class ProxyFaults : public ::testing::Test {
 protected:
  void start(int a_port, const std::string& extra = "") {
    gw.setSimpleConf("location / { proxy_pass http://backend; proxy_connect_timeout 1s; proxy_read_timeout 500ms; " +
                         extra + " }\nlocation = /ready { access_log off; return 200; }",
                     "upstream backend { server 127.0.0.1:" + std::to_string(a_port) +
                         " max_fails=0; server 127.0.0.1:" + std::to_string(b.port()) + " backup; }");
    ASSERT_TRUE(gw.start());
    ASSERT_TRUE(waitFor([&] { return gw.workerPids().size() == 1u; }));
    worker = gw.workerPids()[0];
  }
  // One request on its own client connection.
  Response send(Kind k, const std::string& path = "/f") {
    RawClient c(gw.port());
    c.send(request(k, path));
    return c.readResponse(Ms(5000));
  }
  void TearDown() override {
    if (!gw.running()) return;
    EXPECT_EQ(gw.stop(), 0);
  }

  FakeUpstream a;
  FakeUpstream b;
  Gateway gw;
  pid_t worker = -1;
};

TEST_F(ProxyFaults, RefusedIsRetriedOnTheNextPeerForEveryMethod) {
  RefusingPort refused;
  start(refused.port());
  for (Kind k : kKinds) {
    Response r = send(k);
    EXPECT_EQ(r.status, 200) << name(k) << ": nothing was sent, so even a POST moves on\n" << gw.errorLog();
  }
  EXPECT_EQ(b.requestCount(), 3u);
  EXPECT_TRUE(gw.waitLog("connect() failed (111: Connection refused) while connecting to upstream"));
}

TEST_F(ProxyFaults, RefusedWithNoOtherPeerIs502) {
  RefusingPort refused;
  gw.setSimpleConf("location / { proxy_pass http://127.0.0.1:" + std::to_string(refused.port()) + "; }");
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(send(Kind::kGet).status, 502);
}

TEST_F(ProxyFaults, NeverAnswersIs504AndOnlyIdempotentRequestsMoveOn) {
  a.setDefault(Behaviour::stallOnAccept());
  start(a.port());
  EXPECT_EQ(send(Kind::kGet).status, 200) << gw.errorLog();
  EXPECT_EQ(b.requestCount(), 1u);
  for (Kind k : {Kind::kPostLength, Kind::kPostChunked}) {
    EXPECT_EQ(send(k).status, 504) << name(k);
  }
  EXPECT_EQ(b.requestCount(), 1u) << "a POST is never sent twice";
  EXPECT_TRUE(gw.waitLog("upstream timed out (110: Connection timed out) while reading response header from upstream"));
  a.release();
}

TEST_F(ProxyFaults, ResetAfterAcceptIs502AndOnlyIdempotentRequestsMoveOn) {
  a.setDefault(Behaviour::resetOnAccept());
  start(a.port());
  EXPECT_EQ(send(Kind::kGet).status, 200) << gw.errorLog();
  // The reset may arrive before the connection is seen established: then
  // nothing was sent and the POST moves on too. Either way it reaches a
  // server at most once.
  size_t moved_on = 0;
  for (Kind k : {Kind::kPostLength, Kind::kPostChunked}) {
    int status = send(k).status;
    EXPECT_TRUE(status == 502 || status == 200) << name(k) << ": " << status;
    if (status == 200) moved_on++;
  }
  EXPECT_EQ(b.requestCount(), 1u + moved_on);
  EXPECT_EQ(a.requestCount(), 0u);
}

TEST_F(ProxyFaults, ResetAfterTheRequestIs502AndAPostIsNeverSentTwice) {
  a.setDefault(Behaviour::resetAfterRequest());
  start(a.port());
  EXPECT_EQ(send(Kind::kGet).status, 200) << gw.errorLog();
  for (Kind k : {Kind::kPostLength, Kind::kPostChunked}) EXPECT_EQ(send(k).status, 502) << name(k);
  EXPECT_EQ(b.requestCount(), 1u);
  EXPECT_EQ(a.requestCount(), 3u);
  auto posts = a.requests();
  EXPECT_EQ(posts[1].body, "hello");
  EXPECT_EQ(posts[2].body, "hello");
}

// After the head went to the client nothing can be retried: the client
// sees the message cut short and the connection closed, never a clean end.
TEST_F(ProxyFaults, BrokenBodiesReachTheClientTruncatedAndClosed) {
  gw.setSimpleConf("access_log logs/cut.log cut;\n"
                   "location / { proxy_pass http://backend; proxy_read_timeout 500ms; }",
                   "log_format cut '$status $body_bytes_sent [$request_completion] $upstream_status';\n"
                   "upstream backend { server 127.0.0.1:" + std::to_string(a.port()) + "; }");
  ASSERT_TRUE(gw.start());
  struct Case {
    const char* what;
    Behaviour behaviour;
  };
  std::string body(20000, 'x');
  std::vector<Case> cases = {
      {"truncated body", Behaviour::truncatedBody(body, 7000)},
      {"truncated chunked body", Behaviour::truncatedChunked(body, 7000)},
      {"stall mid-body", Behaviour::stallMidBody(body, 7000)},
  };
  for (Kind k : kKinds) {
    for (Case& c : cases) {
      a.enqueue(c.behaviour);
      RawClient client(gw.port());
      client.send(request(k));
      Response r = client.readResponse(Ms(5000));
      EXPECT_EQ(r.status, 200) << c.what << ", " << name(k);
      EXPECT_FALSE(r.complete) << c.what << ", " << name(k);
      EXPECT_EQ(r.body.size(), 7000u) << c.what << ", " << name(k);
      EXPECT_TRUE(client.waitClosed()) << c.what << ", " << name(k);
      a.release();
    }
  }
  EXPECT_EQ(b.requestCount(), 0u);
  EXPECT_TRUE(gw.waitLog("upstream prematurely closed connection while reading upstream"));
  EXPECT_TRUE(gw.waitLog("upstream timed out (110: Connection timed out) while reading upstream"));
  // The access log shows each cut: 7000 bytes of 20000, no completion.
  std::string log;
  EXPECT_TRUE(waitFor([&] {
    log = gw.prefix().read("logs/cut.log");
    return std::count(log.begin(), log.end(), '\n') == 9;
  })) << log;
  size_t cut = 0;
  for (size_t at = 0; (at = log.find("200 7000 [-] 200\n", at)) != std::string::npos; at++) cut++;
  EXPECT_EQ(cut, 9u) << log;
  // A whole response says OK.
  EXPECT_EQ(send(Kind::kGet).status, 200);
  EXPECT_TRUE(waitFor([&] { return gw.prefix().read("logs/cut.log").find("200 2 [OK] 200\n") != std::string::npos; }))
      << gw.prefix().read("logs/cut.log");
}

TEST_F(ProxyFaults, EarlyResponseBeforeTheBodyIsPassedOnAndTheConnectionIsNotReused) {
  start(a.port());
  for (Kind k : kKinds) {
    a.enqueue(Behaviour::earlyResponse(413, "too big"));
    Response r = send(k);
    EXPECT_EQ(r.status, 413) << name(k) << gw.errorLog();
    EXPECT_EQ(r.body, "too big") << name(k);
  }
  // A later request gets a fresh connection (the early answer closed it).
  EXPECT_EQ(send(Kind::kGet).status, 200);
  EXPECT_EQ(b.requestCount(), 0u);
}

TEST_F(ProxyFaults, ResetDuringALargeUploadIs502AndNotRetried) {
  a.setDefault(Behaviour::resetDuringUpload(64 * 1024));
  start(a.port(), "client_max_body_size 10m;");
  std::string big(4 << 20, 'u');
  RawClient c(gw.port());
  ASSERT_TRUE(c.send("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: " + std::to_string(big.size()) + "\r\n\r\n"));
  ASSERT_TRUE(c.send(big));
  EXPECT_EQ(c.readResponse(Ms(10000)).status, 502) << gw.errorLog();
  EXPECT_EQ(b.requestCount(), 0u);
}

// Pooled connections: the fault hits a connection that served a request before.
TEST_F(ProxyFaults, FaultsOnPooledConnectionsAreNeverRetriedForAPostAndNeverPooledAgain) {
  start(a.port());
  for (Kind k : {Kind::kPostLength, Kind::kPostChunked}) {
    RawClient c(gw.port());
    ASSERT_TRUE(c.send(request(Kind::kGet)));
    ASSERT_EQ(c.readResponse().status, 200) << gw.errorLog();
    int before = a.connectionsAccepted();
    a.enqueue(Behaviour::resetAfterRequest());
    ASSERT_TRUE(c.send(request(k)));
    EXPECT_EQ(c.readResponse().status, 502) << name(k) << gw.errorLog();
    EXPECT_EQ(a.connectionsAccepted(), before) << "the POST went on the pooled connection, once";
  }
  // A GET whose pooled connection breaks before any answer is replayed on a
  // fresh connection to the same peer.
  RawClient c(gw.port());
  ASSERT_TRUE(c.send(request(Kind::kGet)));
  ASSERT_EQ(c.readResponse().status, 200);
  a.enqueue(Behaviour::resetAfterRequest());
  ASSERT_TRUE(c.send(request(Kind::kGet)));
  EXPECT_EQ(c.readResponse().status, 200) << gw.errorLog();
  EXPECT_EQ(b.requestCount(), 0u);
}

TEST_F(ProxyFaults, PooledConnectionClosedByThePeerIsReplacedTransparentlyEvenForAPost) {
  start(a.port());
  for (Kind k : kKinds) {
    EXPECT_EQ(send(Kind::kGet).status, 200);
    ASSERT_TRUE(a.waitForOpenConnections(1));
    a.closeIdleConnections();
    // The peer's close has happened (its FIN is on our socket) but the
    // worker may not have read it yet: the reuse itself meets the close.
    ASSERT_TRUE(a.waitForOpenConnections(0));
    EXPECT_EQ(send(k).status, 200) << name(k) << gw.errorLog();
  }
  EXPECT_EQ(b.requestCount(), 0u);
  EXPECT_EQ(a.requestCount(), 6u) << "each request reached A exactly once";
}

TEST_F(ProxyFaults, UpstreamFdsReturnToTheBaselineAfterFaults) {
  start(a.port());
  int baseline = restingFdCount(worker, gw.port(), "/ready");
  ASSERT_GT(baseline, 0);
  std::string body(20000, 'x');
  a.enqueue(Behaviour::resetAfterRequest());
  a.enqueue(Behaviour::truncatedBody(body, 100));
  a.enqueue(Behaviour::earlyResponse(400, "no"));
  a.enqueue(Behaviour::badFraming(BadFraming::kExcessBody));
  for (int i = 0; i < 4; i++) send(Kind::kPostLength);
  // Not one of those connections went back to the pool.
  EXPECT_TRUE(waitFor([&] { return a.openConnections() == 0; })) << a.openConnections() << " still open";
  EXPECT_TRUE(waitFor([&] { return openFdCount(worker) <= baseline; }))
      << openFdCount(worker) << " fds, baseline " << baseline;
}

struct FramingCase {
  BadFraming kind;
  const char* log;  // what the error log says (empty: nothing required)
};

TEST_F(ProxyFaults, BadResponseFramingIs502WithTheReasonLogged) {
  start(a.port(), "proxy_next_upstream off;");
  const FramingCase cases[] = {
      {BadFraming::kContentLengthAndChunked, "upstream sent"},
      {BadFraming::kTwoContentLengths, "upstream sent duplicate header line"},
      {BadFraming::kUnknownTransferEncoding, "upstream sent unknown \"Transfer-Encoding\""},
      {BadFraming::kObsFold, "upstream sent invalid header"},
      {BadFraming::kNotHttp, "upstream sent no valid HTTP/1.0 header"},
      {BadFraming::kHttp09, "upstream sent no valid HTTP/1.0 header"},
      {BadFraming::kUnrequested101, "upstream sent"},
      {BadFraming::kOversizedHead, "upstream sent too big header"},
  };
  for (const FramingCase& c : cases) {
    a.enqueue(Behaviour::badFraming(c.kind));
    Response r = send(Kind::kGet);
    EXPECT_EQ(r.status, 502) << static_cast<int>(c.kind) << "\n" << gw.errorLog();
    EXPECT_TRUE(gw.waitLog(c.log)) << c.log;
  }
}

TEST_F(ProxyFaults, ExcessBodyNeverReachesTheClient) {
  start(a.port());
  a.enqueue(Behaviour::badFraming(BadFraming::kExcessBody));
  RawClient c(gw.port());
  ASSERT_TRUE(c.send(request(Kind::kGet)));
  Response r = c.readResponse();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello");
  a.enqueue(Behaviour::badFraming(BadFraming::kBodyOn204));
  ASSERT_TRUE(c.send(request(Kind::kGet)));
  r = c.readResponse();
  EXPECT_EQ(r.status, 204);
  // The next answer on the same client connection is clean: no stray bytes.
  ASSERT_TRUE(c.send(request(Kind::kGet)));
  r = c.readResponse();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok");
  EXPECT_TRUE(waitFor([&] { return a.openConnections() == 1; }))
      << a.openConnections() << ": the connections with excess bytes are closed, not pooled";
}

TEST_F(ProxyFaults, InvalidChunkSizeAfterTheHeadCutsTheResponse) {
  start(a.port());
  a.enqueue(Behaviour::badFraming(BadFraming::kInvalidChunkSize));
  RawClient c(gw.port());
  ASSERT_TRUE(c.send(request(Kind::kGet)));
  Response r = c.readResponse();
  EXPECT_FALSE(r.complete);
  EXPECT_TRUE(c.waitClosed());
  EXPECT_TRUE(gw.waitLog("upstream sent invalid chunked response"));
}

}  // namespace
}  // namespace tidegate::test
