// RELIABILITY.md "Request framing", "Limits" and "Slow and abusive clients"
// sent as raw bytes to the real binary: each rejected request gets its
// status and a closed connection, and nothing after it is served.
#include <gtest/gtest.h>

#include <memory>

#include "harness.h"

namespace tidegate::test {
namespace {

class FramingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    gw_ = new Gateway;
    gw_->setSimpleConf(R"(
    client_max_body_size 100;
    location / { return 200 "ok"; }
)",
                       "client_header_timeout 1s; client_body_timeout 1s; keepalive_timeout 1s;");
    ASSERT_TRUE(gw_->start());
  }
  static void TearDownTestSuite() {
    EXPECT_EQ(gw_->stop(), 0);
    delete gw_;
  }

  // Sends `request` followed by a valid pipelined request; expects `status`
  // for the first and no answer for the second (the connection closes).
  void expectRejected(const std::string& request, int status) {
    RawClient c(gw_->port());
    ASSERT_TRUE(c.send(request + "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"));
    Response r = c.readResponse();
    EXPECT_EQ(r.status, status) << request;
    EXPECT_EQ(r.header("connection"), "close") << request;
    std::string rest = c.readUntilClose(Ms(3000));
    EXPECT_EQ(rest, "") << "served after a rejected request: " << request;
  }

  static Gateway* gw_;
};

Gateway* FramingTest::gw_ = nullptr;

const std::string kHead = "POST / HTTP/1.1\r\nHost: a\r\n";

TEST_F(FramingTest, ContentLengthWithTransferEncoding) {
  expectRejected(kHead + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
  expectRejected(kHead + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400);
  expectRejected(kHead + "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n", 400);
}

TEST_F(FramingTest, BadContentLength) {
  for (const char* cl : {"Content-Length: 5\r\nContent-Length: 5", "Content-Length: 5, 5", "Content-Length: +5",
                         "Content-Length: -1", "Content-Length: 0x5", "Content-Length: ",
                         "Content-Length: 18446744073709551616"}) {
    expectRejected(kHead + cl + "\r\n\r\nhello", 400);
  }
}

TEST_F(FramingTest, BadTransferEncoding) {
  for (const char* te : {"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked", "Transfer-Encoding: chunked, gzip",
                         "Transfer-Encoding: chunkedchunked", "Transfer-Encoding: chunked;x=1"}) {
    expectRejected(kHead + te + "\r\n\r\n0\r\n\r\n", 400);
  }
  expectRejected(kHead + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501);
  expectRejected(kHead + "Transfer-Encoding: identity\r\n\r\n", 501);
}

TEST_F(FramingTest, HeaderSyntax) {
  for (const char* h : {"X-A : 1", "X-A: 1\r\n folded", "X-A: a\rb", ": empty", "X(A: 1", "X-A: a\x01"}) {
    expectRejected(std::string("GET / HTTP/1.1\r\nHost: a\r\n") + h + "\r\n\r\n", 400);
  }
  expectRejected(std::string("GET / HTTP/1.1\r\nHost: a\r\nX-A: a") + '\0' + "\r\n\r\n", 400);
  expectRejected("GET / HTTP/1.1\nHost: a\r\n\r\n", 400);
  expectRejected("GET / HTTP/1.1\r\nHost: a\n\r\n", 400);
}

TEST_F(FramingTest, HostAndVersionRules) {
  expectRejected("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
  expectRejected("GET / HTTP/1.1\r\n\r\n", 400);
  expectRejected("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
  expectRejected("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505);
  expectRejected("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
}

TEST_F(FramingTest, RequestLine) {
  for (const char* line : {"GET  / HTTP/1.1", "get / HTTP/1.1", "GET / HTTP/1.1 x", "GET /a b HTTP/1.1",
                           "GET /a#b HTTP/1.1", "GET /\x7f HTTP/1.1"}) {
    expectRejected(std::string(line) + "\r\nHost: a\r\n\r\n", 400);
  }
}

TEST_F(FramingTest, ChunkFraming) {
  const std::string head = kHead + "Transfer-Encoding: chunked\r\n\r\n";
  for (const char* body : {"ffffffffffffffffff\r\n", "-1\r\n", " 5\r\nhello\r\n0\r\n\r\n", "5 \r\nhello\r\n0\r\n\r\n",
                           "3\r\nhello\r\n0\r\n\r\n", "5;a\nhello\r\n0\r\n\r\n"}) {
    expectRejected(head + body, 400);
  }
  expectRejected(head + "5;" + std::string(5000, 'x') + "\r\nhello\r\n0\r\n\r\n", 400);
}

TEST_F(FramingTest, Limits) {
  expectRejected("GET /" + std::string(9000, 'a') + " HTTP/1.1\r\nHost: a\r\n\r\n", 414);
  expectRejected("GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(9000, 'a') + "\r\n\r\n", 431);
  std::string many = "GET / HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 101; i++) many += "X-" + std::to_string(i) + ": v\r\n";
  expectRejected(many + "\r\n", 431);
  std::string total = "GET / HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 6; i++) total += "X-" + std::to_string(i) + ": " + std::string(7000, 'v') + "\r\n";
  expectRejected(total + "\r\n", 431);
  expectRejected(kHead + "Content-Length: 101\r\n\r\n" + std::string(101, 'b'), 413);
  expectRejected(kHead + "Transfer-Encoding: chunked\r\n\r\n64\r\n" + std::string(100, 'b') + "\r\n1\r\nb\r\n0\r\n\r\n",
                 413);
}

TEST_F(FramingTest, BodyWithinLimitIsAccepted) {
  RawClient c(gw_->port());
  c.send(kHead + "Content-Length: 100\r\n\r\n" + std::string(100, 'b'));
  EXPECT_EQ(c.readResponse().status, 200);
}

TEST_F(FramingTest, ExpectContinueOverLimitIs413WithoutReading) {
  RawClient c(gw_->port());
  c.send(kHead + "Content-Length: 1000000\r\nExpect: 100-continue\r\n\r\n");
  Response r = c.readResponse();
  EXPECT_EQ(r.status, 413);  // the final answer, not "100 Continue"
  EXPECT_TRUE(c.waitClosed());
}

TEST_F(FramingTest, IncompleteChunkedBodyTimesOutWith408) {
  RawClient c(gw_->port());
  c.send(kHead + "Transfer-Encoding: chunked\r\n\r\n5\r\nhel");
  Response r = c.readResponse(Ms(5000));
  EXPECT_EQ(r.status, 408);
  EXPECT_TRUE(c.waitClosed());
}

TEST_F(FramingTest, SlowHeadHitsAbsoluteDeadline) {
  // Dribbles one byte every 200 ms: a gap timer would never fire, the head
  // deadline (1 s) must.
  RawClient c(gw_->port());
  auto start = std::chrono::steady_clock::now();
  std::string head = "GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ";
  c.send(head);
  bool closed = waitFor([&] {
    c.send("a");
    std::string got = c.readUntilClose(Ms(200));
    return got.find("408") != std::string::npos || !c.send("b");
  }, Ms(5000));
  EXPECT_TRUE(closed);
  auto took = std::chrono::duration_cast<Ms>(std::chrono::steady_clock::now() - start);
  EXPECT_LT(took.count(), 2500);
}

TEST_F(FramingTest, IdleKeepaliveIsClosed) {
  RawClient c(gw_->port());
  c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(c.readResponse().status, 200);
  auto start = std::chrono::steady_clock::now();
  EXPECT_TRUE(c.waitClosed(Ms(4000)));
  auto took = std::chrono::duration_cast<Ms>(std::chrono::steady_clock::now() - start);
  EXPECT_GE(took.count(), 900);
}

TEST_F(FramingTest, ConnectionThatSendsNothingIsClosed) {
  RawClient c(gw_->port());
  EXPECT_TRUE(c.waitClosed(Ms(4000)));
}

}  // namespace
}  // namespace tidegate::test

namespace tidegate::test {
namespace {

TEST(SlowBodyTest, BodyBelowMinimumRateGets408) {
  Gateway gw;
  gw.setSimpleConf("    location / { return 200 \"ok\"; }\n",
                   "client_body_timeout 30s; client_body_min_rate 1000;");
  ASSERT_TRUE(gw.start());
  // 10 bytes a second against a 1000 B/s minimum: the gap timeout (30 s)
  // would never fire, the rate check must (after its 1 s grace).
  RawClient c(gw.port());
  c.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n");
  auto start = std::chrono::steady_clock::now();
  std::string got;
  ASSERT_TRUE(waitFor([&] {
    c.send(std::string(10, 'x'));
    got += c.readUntilClose(Ms(100));
    return got.find("\r\n\r\n") != std::string::npos;
  }, Ms(10000)));
  EXPECT_EQ(got.substr(0, 12), "HTTP/1.1 408");
  auto took = std::chrono::duration_cast<Ms>(std::chrono::steady_clock::now() - start);
  EXPECT_LT(took.count(), 3000);
  EXPECT_TRUE(gw.waitLog("below client_body_min_rate"));
  EXPECT_EQ(gw.stop(), 0);
}

TEST(SlowBodyTest, BodyAboveMinimumRateIsServed) {
  Gateway gw;
  gw.setSimpleConf("    location / { return 200 \"ok\"; }\n", "client_body_min_rate 1000;");
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  c.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 20000\r\n\r\n");
  std::string got;
  for (int i = 0; i < 20; i++) {
    c.send(std::string(1000, 'x'));
    got += c.readUntilClose(Ms(50));  // paces the client at ~20 KB/s, well above the minimum
  }
  ASSERT_TRUE(waitFor([&] {
    got += c.readUntilClose(Ms(50));
    return got.find("\r\n\r\nok") != std::string::npos;
  }));
  EXPECT_EQ(got.substr(0, 15), "HTTP/1.1 200 OK");
  EXPECT_EQ(gw.stop(), 0);
}

TEST(SlowlorisTest, ManySlowHeadsAllClosedWithinDeadlineWhileServing) {
  Gateway gw;
  gw.setConf(R"(
worker_processes 1;
events { worker_connections 4096; }
http {
  client_header_timeout 2s;
  access_log off;
  server { listen 127.0.0.1:{PORT}; location / { return 200 "ok"; } }
}
)");
  ASSERT_TRUE(gw.start());
  std::vector<std::unique_ptr<RawClient>> slow;
  auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 1000; i++) {
    auto c = std::make_unique<RawClient>();
    ASSERT_TRUE(c->connect(gw.port()));
    c->send("GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ");  // never finishes
    slow.push_back(std::move(c));
  }
  // Normal traffic keeps flowing meanwhile.
  for (int i = 0; i < 50; i++) ASSERT_EQ(httpGet(gw.port(), "/").status, 200);
  // Every slow connection is answered 408 and closed by deadline + 1 s,
  // counted from the last connection's start.
  for (auto& c : slow) {
    auto left = std::chrono::duration_cast<Ms>(start + Ms(3000 + 1000) - std::chrono::steady_clock::now());
    EXPECT_TRUE(c->waitClosed(left.count() > 0 ? left : Ms(1))) << "slow connection outlived its deadline";
  }
  EXPECT_EQ(httpGet(gw.port(), "/").status, 200);
  EXPECT_EQ(gw.stop(), 0);
}

}  // namespace
}  // namespace tidegate::test
