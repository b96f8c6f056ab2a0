// Self-tests of the scripted fake upstream: each behaviour is driven with a
// plain client socket and what arrives on the wire is asserted byte for byte
// (framing), by errno (resets), or by a read timeout (stalls).
#include "fake_upstream.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

#include "harness.h"

namespace tidegate::test {
namespace {

using Clock = std::chrono::steady_clock;
const std::string kGet = "GET /x?a=1 HTTP/1.1\r\nHost: up\r\nX-Test: one\r\n\r\n";

// What a client reads until the stream ends.
struct Wire {
  std::string bytes;
  int error = 0;         // 0: EOF; an errno (ECONNRESET...); ETIMEDOUT: still open
};

Wire readToEnd(int fd, Ms timeout = Ms(5000)) {
  Wire w;
  auto deadline = Clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<Ms>(deadline - Clock::now()).count();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0) {
      w.error = ETIMEDOUT;
      return w;
    }
    char buf[65536];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n == 0) return w;
    if (n < 0) {
      w.error = errno;
      return w;
    }
    w.bytes.append(buf, static_cast<size_t>(n));
  }
}

// Reads exactly `n` bytes (or less on EOF/timeout).
std::string readExactly(int fd, size_t n, Ms timeout = Ms(5000)) {
  std::string out;
  auto deadline = Clock::now() + timeout;
  while (out.size() < n) {
    auto left = std::chrono::duration_cast<Ms>(deadline - Clock::now()).count();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || poll(&p, 1, static_cast<int>(left)) <= 0) break;
    char buf[65536];
    ssize_t got = recv(fd, buf, std::min(sizeof(buf), n - out.size()), 0);
    if (got <= 0) break;
    out.append(buf, static_cast<size_t>(got));
  }
  return out;
}

// True if nothing at all (no byte, no EOF) arrives within `window`.
bool staysSilent(int fd, Ms window) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, static_cast<int>(window.count())) == 0;
}

int selfFds() { return openFdCount(getpid()); }

TEST(FakeUpstreamTest, RespondsAndRecordsTheRequest) {
  FakeUpstream up;
  RawClient c(up.port());
  ASSERT_TRUE(c.send(kGet));
  const std::string expected = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
  ASSERT_EQ(readExactly(c.fd(), expected.size()), expected);
  EXPECT_TRUE(staysSilent(c.fd(), Ms(50))) << "keepalive: no close after the response";
  ASSERT_TRUE(up.waitForRequests(1));
  RecordedRequest r = up.requests()[0];
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.target, "/x?a=1");
  EXPECT_EQ(r.version, "HTTP/1.1");
  EXPECT_EQ(r.raw_head, kGet);
  ASSERT_EQ(r.headers.size(), 2u);
  EXPECT_EQ(r.headers[1], (std::pair<std::string, std::string>{"X-Test", "one"}));
  EXPECT_EQ(r.header("x-test"), "one");
  EXPECT_TRUE(r.body.empty());
  EXPECT_EQ(r.connection, 1);
  EXPECT_EQ(r.index_on_connection, 1);
}

TEST(FakeUpstreamTest, DecodesChunkedRequestBodyWithExtensionsAndTrailers) {
  FakeUpstream up;
  RawClient c(up.port());
  ASSERT_TRUE(c.send("POST /up HTTP/1.1\r\nHost: up\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"));
  EXPECT_EQ(c.readResponse().body, "ok");
  ASSERT_TRUE(up.waitForRequests(1));
  RecordedRequest r = up.requests()[0];
  EXPECT_TRUE(r.chunked);
  EXPECT_TRUE(r.body_complete);
  EXPECT_EQ(r.body, "hello world");
  EXPECT_EQ(r.body_bytes, 11u);
  ASSERT_EQ(r.trailers.size(), 1u);
  EXPECT_EQ(r.trailers[0].second, "t");
}

TEST(FakeUpstreamTest, CountsConnectionsAndRequestsAcrossKeepaliveAndPipelining) {
  FakeUpstream up;
  RawClient a(up.port());
  ASSERT_TRUE(a.send(kGet));
  EXPECT_EQ(a.readResponse().status, 200);
  ASSERT_TRUE(a.send("POST /p HTTP/1.1\r\nHost: up\r\nContent-Length: 3\r\n\r\nabc" + kGet));  // pipelined
  EXPECT_EQ(a.readResponse().status, 200);
  EXPECT_EQ(a.readResponse().status, 200);
  RawClient b(up.port());
  ASSERT_TRUE(b.send(kGet));
  EXPECT_EQ(b.readResponse().status, 200);
  ASSERT_TRUE(up.waitForRequests(4));
  EXPECT_EQ(up.connectionsAccepted(), 2);
  EXPECT_EQ(up.requestsOnConnection(1), 3);
  EXPECT_EQ(up.requestsOnConnection(2), 1);
  auto reqs = up.requests();
  EXPECT_EQ(reqs[1].body, "abc");
  EXPECT_EQ(reqs[2].index_on_connection, 3);
  EXPECT_EQ(reqs[3].connection, 2);
  EXPECT_EQ(up.openConnections(), 2);
  a.close();
  b.close();
  EXPECT_TRUE(up.waitForOpenConnections(0));
}

TEST(FakeUpstreamTest, ChunkedAndClosingResponses) {
  FakeUpstream up;
  up.enqueue(Behaviour::chunked("hello world", 4));
  up.enqueue(Behaviour::closing(503, "no"));
  RawClient c(up.port());
  ASSERT_TRUE(c.send(kGet));
  const std::string chunked =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nhell\r\n4\r\no wo\r\n3\r\nrld\r\n0\r\n\r\n";
  EXPECT_EQ(readExactly(c.fd(), chunked.size()), chunked);
  ASSERT_TRUE(c.send(kGet));
  Wire w = readToEnd(c.fd());
  EXPECT_EQ(w.bytes, "HTTP/1.1 503 Status\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno");
  EXPECT_EQ(w.error, 0);
}

TEST(FakeUpstreamTest, QueueFirstThenHandlerThenDefault) {
  FakeUpstream up;
  up.setDefault(Behaviour::respond(204, ""));
  RawClient c(up.port());
  ASSERT_TRUE(c.send(kGet));
  EXPECT_EQ(c.readResponse().status, 204);
  up.enqueue(Behaviour::respond(201, "queued"));
  std::atomic<bool> handler_saw_body{true};
  up.setHandler([&](const RecordedRequest& r) {
    handler_saw_body = !r.body.empty();
    return Behaviour::respond(202, "for " + r.target);
  });
  ASSERT_TRUE(c.send("POST /a HTTP/1.1\r\nHost: up\r\nContent-Length: 1\r\n\r\nz"));
  EXPECT_EQ(c.readResponse().body, "queued");
  ASSERT_TRUE(c.send("POST /b HTTP/1.1\r\nHost: up\r\nContent-Length: 1\r\n\r\nz"));
  Response r = c.readResponse();
  EXPECT_EQ(r.status, 202);
  EXPECT_EQ(r.body, "for /b");
  EXPECT_FALSE(handler_saw_body);
  ASSERT_TRUE(up.waitForRequests(3));
  EXPECT_EQ(up.requests()[2].body, "z");
}

TEST(FakeUpstreamTest, RefusingPortAndStoppedListenerRefuse) {
  RefusingPort refusing;
  ASSERT_GT(refusing.port(), 0);
  EXPECT_EQ(connectErrno(refusing.port()), ECONNREFUSED);
  FakeUpstream up;
  EXPECT_EQ(connectErrno(up.port()), 0);
  RawClient c(up.port());
  ASSERT_TRUE(up.waitForConnections(2));  // one still in the backlog would be reset
  up.stopListening();
  EXPECT_EQ(connectErrno(up.port()), ECONNREFUSED);
  ASSERT_TRUE(c.send(kGet));  // the accepted connection goes on
  EXPECT_EQ(c.readResponse().body, "ok");
}

TEST(FakeUpstreamTest, StallOnAcceptNeverAnswersUntilReleased) {
  FakeUpstream up;
  up.enqueue(Behaviour::stallOnAccept());
  RawClient c(up.port());
  ASSERT_TRUE(c.send(kGet));
  ASSERT_TRUE(up.waitForConnections(1));
  EXPECT_TRUE(staysSilent(c.fd(), Ms(200)));
  EXPECT_EQ(up.requestCount(), 0u);
  up.release();
  Wire w = readToEnd(c.fd());
  EXPECT_EQ(w.bytes, "");
  EXPECT_EQ(w.error, 0);
}

TEST(FakeUpstreamTest, ResetOnAcceptResetsBeforeReading) {
  FakeUpstream up;
  up.setDefault(Behaviour::resetOnAccept());
  RawClient c(up.port());
  Wire w = readToEnd(c.fd());
  EXPECT_EQ(w.error, ECONNRESET);
  EXPECT_EQ(w.bytes, "");
  EXPECT_EQ(up.requestCount(), 0u);
}

TEST(FakeUpstreamTest, ResetAfterRequestReadsTheWholeRequestFirst) {
  FakeUpstream up;
  up.enqueue(Behaviour::resetAfterRequest());
  RawClient c(up.port());
  ASSERT_TRUE(c.send("POST /r HTTP/1.1\r\nHost: up\r\nContent-Length: 5\r\n\r\nhello"));
  Wire w = readToEnd(c.fd());
  EXPECT_EQ(w.error, ECONNRESET);
  EXPECT_EQ(w.bytes, "");
  ASSERT_TRUE(up.waitForRequests(1));
  EXPECT_EQ(up.requests()[0].body, "hello");
  EXPECT_TRUE(up.requests()[0].body_complete);
}

TEST(FakeUpstreamTest, TruncatedBodiesEndWithFin) {
  FakeUpstream up;
  up.enqueue(Behaviour::truncatedBody("0123456789", 5));
  RawClient c(up.port());
  ASSERT_TRUE(c.send(kGet));
  Wire w = readToEnd(c.fd());
  EXPECT_EQ(w.bytes, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\n01234");
  EXPECT_EQ(w.error, 0);

  up.enqueue(Behaviour::truncatedChunked("0123456789", 6));
  RawClient d(up.port());
  ASSERT_TRUE(d.send(kGet));
  w = readToEnd(d.fd());
  EXPECT_EQ(w.bytes, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n6\r\n012345\r\n");
  EXPECT_EQ(w.error, 0);
}

TEST(FakeUpstreamTest, StallMidBodyResumesOnRelease) {
  FakeUpstream up;
  up.enqueue(Behaviour::stallMidBody("0123456789", 4));
  RawClient c(up.port());
  ASSERT_TRUE(c.send(kGet));
  const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
  EXPECT_EQ(readExactly(c.fd(), head.size() + 4), head + "0123");
  EXPECT_TRUE(staysSilent(c.fd(), Ms(200)));
  up.release();
  EXPECT_EQ(readExactly(c.fd(), 6), "456789");
  ASSERT_TRUE(c.send(kGet));  // still a keepalive connection
  EXPECT_EQ(c.readResponse().body, "ok");
}

TEST(FakeUpstreamTest, IdleKeepaliveClosedAfterTimeout) {
  FakeUpstream up;
  up.enqueue(Behaviour::idleCloseAfter(Ms(150)));
  RawClient c(up.port());
  ASSERT_TRUE(c.send(kGet));
  auto start = Clock::now();
  EXPECT_EQ(c.readResponse().body, "ok");
  Wire w = readToEnd(c.fd());
  EXPECT_GE(std::chrono::duration_cast<Ms>(Clock::now() - start).count(), 140);
  EXPECT_EQ(w.bytes, "");
  EXPECT_EQ(w.error, 0);
  c.close();
  EXPECT_TRUE(up.waitForOpenConnections(0));
}

TEST(FakeUpstreamTest, IdleKeepaliveClosedOnCommandOnly) {
  FakeUpstream up;
  RawClient idle(up.port()), busy(up.port());
  ASSERT_TRUE(idle.send(kGet));
  EXPECT_EQ(idle.readResponse().body, "ok");
  up.enqueue(Behaviour::stallMidBody("0123456789", 4));
  ASSERT_TRUE(busy.send(kGet));
  ASSERT_TRUE(up.waitForRequests(2));
  EXPECT_TRUE(staysSilent(idle.fd(), Ms(100)));
  up.closeIdleConnections();
  Wire w = readToEnd(idle.fd());
  EXPECT_EQ(w.error, 0);
  EXPECT_EQ(w.bytes, "");
  // The connection in the middle of a response is not idle: it goes on.
  up.release();
  EXPECT_EQ(busy.readResponse().body, "0123456789");
  idle.close();
  EXPECT_TRUE(up.waitForOpenConnections(1));
}

TEST(FakeUpstreamTest, EarlyResponseBeforeTheBodyThenGracefulClose) {
  FakeUpstream up;
  up.enqueue(Behaviour::earlyResponse(413, "big"));
  RawClient c(up.port());
  ASSERT_TRUE(c.send("POST /e HTTP/1.1\r\nHost: up\r\nContent-Length: 100000\r\n\r\n0123456789"));
  Wire w = readToEnd(c.fd());
  EXPECT_EQ(w.bytes, "HTTP/1.1 413 Early\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig");
  EXPECT_EQ(w.error, 0) << "unread request bytes must not turn the close into an RST";
  ASSERT_TRUE(up.waitForRequests(1));
  EXPECT_EQ(up.requests()[0].body_bytes, 0u);
  EXPECT_FALSE(up.requests()[0].body_complete);
}

TEST(FakeUpstreamTest, ResetDuringUploadAfterKBytes) {
  FakeUpstream up;
  up.enqueue(Behaviour::resetDuringUpload(1000));
  RawClient c(up.port());
  // More than K bytes arrive, so the fake resets with unread data too.
  ASSERT_TRUE(c.send("POST /u HTTP/1.1\r\nHost: up\r\nContent-Length: 200000\r\n\r\n" + std::string(1500, 'u')));
  Wire w = readToEnd(c.fd());
  EXPECT_EQ(w.error, ECONNRESET);
  ASSERT_TRUE(up.waitForRequests(1));
  EXPECT_EQ(up.requests()[0].body_bytes, 1000u);
  EXPECT_EQ(up.requests()[0].body, std::string(1000, 'u'));
  EXPECT_FALSE(up.requests()[0].body_complete);
}

TEST(FakeUpstreamTest, BadFramingSendsExactBytesThenCloses) {
  const std::pair<BadFraming, std::string> cases[] = {
      {BadFraming::kContentLengthAndChunked,
       "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
      {BadFraming::kTwoContentLengths, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"},
      {BadFraming::kInvalidChunkSize, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"},
      {BadFraming::kUnknownTransferEncoding, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello"},
      {BadFraming::kObsFold, "HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 5\r\n\r\nhello"},
      {BadFraming::kBareLf, "HTTP/1.1 200 OK\nContent-Length: 5\n\nhello"},
      {BadFraming::kNotHttp, "garbage\r\n\r\n"},
      {BadFraming::kHttp09, "<html>hello</html>\n"},
      {BadFraming::kUnrequested101,
       "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"},
      {BadFraming::kExcessBody, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA"},
      {BadFraming::kBodyOn204, "HTTP/1.1 204 No Content\r\n\r\nhello"},
  };
  FakeUpstream up;
  for (const auto& [kind, expected] : cases) {
    up.enqueue(Behaviour::badFraming(kind));
    RawClient c(up.port());
    ASSERT_TRUE(c.send(kGet));
    Wire w = readToEnd(c.fd());
    EXPECT_EQ(w.bytes, expected) << static_cast<int>(kind);
    EXPECT_EQ(w.error, 0);
  }
  up.enqueue(Behaviour::badFraming(BadFraming::kOversizedHead));
  RawClient c(up.port());
  ASSERT_TRUE(c.send(kGet));
  Wire w = readToEnd(c.fd());
  EXPECT_EQ(w.bytes.size(), 17u + 7 + 65536 + 2 + 19 + 2 + 5);
  EXPECT_EQ(w.bytes.find("\r\n\r\n"), 17u + 7 + 65536 + 2 + 17);
}

TEST(FakeUpstreamTest, SwitchingProtocolsThenEcho) {
  FakeUpstream up;
  up.enqueue(Behaviour::upgradeEcho());
  RawClient c(up.port());
  ASSERT_TRUE(c.send("GET /ws HTTP/1.1\r\nHost: up\r\nConnection: Upgrade\r\nUpgrade: tunnel\r\n\r\nearly"));
  const std::string head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: tunnel\r\nConnection: Upgrade\r\n\r\n";
  EXPECT_EQ(readExactly(c.fd(), head.size() + 5), head + "early");
  ASSERT_TRUE(c.send("ping"));
  EXPECT_EQ(readExactly(c.fd(), 4), "ping");
  shutdown(c.fd(), SHUT_WR);
  Wire w = readToEnd(c.fd());
  EXPECT_EQ(w.error, 0);
}

TEST(FakeUpstreamTest, SlowResponseDelaysTheHead) {
  FakeUpstream up;
  up.enqueue(Behaviour::slow(Ms(200), "late"));
  RawClient c(up.port());
  auto start = Clock::now();
  ASSERT_TRUE(c.send(kGet));
  Response r = c.readResponse();
  EXPECT_GE(std::chrono::duration_cast<Ms>(Clock::now() - start).count(), 190);
  EXPECT_EQ(r.body, "late");
}

TEST(FakeUpstreamTest, LargeStreamedBodyIsBackPressuredAndIntact) {
  constexpr size_t kSize = 32u << 20;  // far beyond loopback socket buffers
  for (Framing framing : {Framing::kContentLength, Framing::kChunked}) {
    FakeUpstream up;
    up.enqueue(Behaviour::largeBody(kSize, framing));
    RawClient c(up.port());
    ASSERT_TRUE(c.send(kGet));
    ASSERT_TRUE(waitFor([&] { return up.bodyBytesSent() > 0; }));
    // The client does not read: the writer must block well short of the end.
    EXPECT_FALSE(waitFor([&] { return up.bodyBytesSent() == kSize; }, Ms(300)));
    Response r = c.readResponse(Ms(30000));
    ASSERT_TRUE(r.complete);
    ASSERT_EQ(r.body.size(), kSize);
    size_t bad = 0;
    for (size_t i = 0; i < kSize; i++) bad += r.body[i] != generatedByte(i);
    EXPECT_EQ(bad, 0u);
    EXPECT_EQ(up.bodyBytesSent(), kSize);
  }
}

TEST(FakeUpstreamTest, DestructorEndsStallsAndLeaksNoFd) {
  int before = selfFds();
  {
    FakeUpstream up;
    up.enqueue(Behaviour::stallOnAccept());
    RawClient a(up.port());
    ASSERT_TRUE(waitFor([&] { return up.pending() == 0; }));
    up.setHandler([](const RecordedRequest& r) {
      if (r.target == "/mid") return Behaviour::stallMidBody("0123456789", 3);
      if (r.target == "/large") return Behaviour::largeBody(64u << 20);
      return Behaviour::respond(200, "ok");
    });
    RawClient b(up.port()), c(up.port()), d(up.port());
    ASSERT_TRUE(b.send(kGet));
    ASSERT_TRUE(c.send("GET /mid HTTP/1.1\r\nHost: up\r\n\r\n"));
    ASSERT_TRUE(d.send("GET /large HTTP/1.1\r\nHost: up\r\n\r\n"));
    ASSERT_TRUE(up.waitForRequests(3));
    EXPECT_EQ(b.readResponse().body, "ok");
    ASSERT_TRUE(waitFor([&] { return up.bodyBytesSent() > 3; }));
  }
  EXPECT_EQ(selfFds(), before);
}

}  // namespace
}  // namespace tidegate::test
