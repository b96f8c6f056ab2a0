// Bodies stream through the proxy both ways with bounded memory: a 1 GB
// download and a 1 GB upload leave the worker's peak RSS flat, and a client
// that stops reading pauses the upstream instead of filling memory.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "fake_upstream.h"
#include "harness.h"

namespace tidegate::test {
namespace {

constexpr size_t kGiB = size_t{1} << 30;
// Peak RSS may grow by this much at most while a GiB goes through.
constexpr long kFlatKb = 16 * 1024;

class ProxyStream : public ::testing::Test {
 protected:
  void start(const std::string& location_extra = "") {
    gw.setSimpleConf("client_max_body_size 2g;\nlocation / { proxy_pass http://backend; " + location_extra + " }",
                     "upstream backend { server 127.0.0.1:" + std::to_string(up.port()) + "; }");
    ASSERT_TRUE(gw.start());
    ASSERT_EQ(gw.workerPids().size(), 1u);
    worker = gw.workerPids()[0];
    // Code paths and buffers touched once before the peak is taken.
    ASSERT_EQ(httpGet(gw.port(), "/warm").status, 200);
    peak_before = procStatusKb(worker, "VmHWM");
    ASSERT_GT(peak_before, 0);
  }
  void TearDown() override {
    if (gw.running()) EXPECT_EQ(gw.stop(), 0);
  }
  long peakGrowthKb() const { return procStatusKb(worker, "VmHWM") - peak_before; }
  // POSTs a GiB with Content-Length; *got is what the upstream recorded.
  void uploadGigabyte(RecordedRequest* got) {
    RawClient c(gw.port());
    ASSERT_TRUE(c.send("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: " + std::to_string(kGiB) + "\r\n\r\n"));
    std::string piece(1 << 20, 'u');
    for (size_t sent = 0; sent < kGiB; sent += piece.size()) ASSERT_TRUE(c.send(piece));
    Response r = c.readResponse(Ms(120000));
    EXPECT_EQ(r.status, 200) << gw.errorLog();
    ASSERT_TRUE(up.waitForRequests(2));
    *got = up.requests()[1];
    EXPECT_EQ(got->body_bytes, kGiB);
  }

  FakeUpstream up;
  Gateway gw;
  pid_t worker = -1;
  long peak_before = 0;
};

// Reads the response head, then the body up to `want` bytes checking each
// byte against generatedByte(); returns the body bytes read.
size_t readGeneratedBody(int fd, std::string* head, size_t want, Ms timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string buf;
  size_t body = 0;
  bool in_body = false;
  std::vector<char> chunk(256 * 1024);
  while (body < want) {
    auto left = std::chrono::duration_cast<Ms>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) break;
    ssize_t n = recv(fd, chunk.data(), chunk.size(), 0);
    if (n <= 0) break;
    size_t from = 0;
    if (!in_body) {
      buf.append(chunk.data(), static_cast<size_t>(n));
      size_t end = buf.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      *head = buf.substr(0, end + 4);
      in_body = true;
      std::string rest = buf.substr(end + 4);
      for (char c : rest) {
        if (c != generatedByte(body)) return body;
        body++;
      }
      continue;
    }
    for (size_t i = from; i < static_cast<size_t>(n); i++) {
      if (chunk[i] != generatedByte(body)) return body;
      body++;
    }
  }
  return body;
}

TEST_F(ProxyStream, OneGigabyteDownloadKeepsMemoryFlat) {
  start();
  up.setDefault(Behaviour::largeBody(kGiB));
  RawClient c(gw.port());
  ASSERT_TRUE(c.send("GET /big HTTP/1.1\r\nHost: a\r\n\r\n"));
  std::string head;
  EXPECT_EQ(readGeneratedBody(c.fd(), &head, kGiB, Ms(120000)), kGiB) << head << gw.errorLog();
  EXPECT_NE(head.find("Content-Length: 1073741824"), std::string::npos) << head;
  EXPECT_LT(peakGrowthKb(), kFlatKb) << "the worker's peak RSS grew with the body";
}

TEST_F(ProxyStream, OneGigabyteUploadKeepsMemoryFlat) {
  start();
  RecordedRequest got;
  ASSERT_NO_FATAL_FAILURE(uploadGigabyte(&got));
  EXPECT_TRUE(got.body_complete);
  EXPECT_LT(peakGrowthKb(), kFlatKb) << "the worker's peak RSS grew with the body";
}

TEST_F(ProxyStream, AClientThatStopsReadingPausesTheUpstream) {
  constexpr size_t kBody = 512u << 20;
  start();
  up.setDefault(Behaviour::largeBody(kBody));
  RawClient c(gw.port());
  ASSERT_TRUE(c.send("GET /big HTTP/1.1\r\nHost: a\r\n\r\n"));
  // The client reads nothing: what the upstream manages to send levels off
  // (socket buffers and the proxy's bounded buffer), far below the body.
  uint64_t last = 0;
  auto changed = std::chrono::steady_clock::now();
  ASSERT_TRUE(waitFor(
      [&] {
        uint64_t sent = up.bodyBytesSent();
        auto now = std::chrono::steady_clock::now();
        if (sent != last) {
          last = sent;
          changed = now;
          return false;
        }
        return sent > 0 && now - changed > Ms(300);  // unchanged for a while: paused
      },
      Ms(20000)));
  EXPECT_LT(last, 64u << 20) << "the upstream kept sending to a client that does not read";
  EXPECT_LT(peakGrowthKb(), kFlatKb);
  // Once the client reads, the rest follows, intact.
  std::string head;
  EXPECT_EQ(readGeneratedBody(c.fd(), &head, kBody, Ms(60000)), kBody);
}

// proxy_request_buffering off: the body goes upstream as it arrives (the
// upstream has its first bytes before the client sent the rest), chunked
// when its length is unknown, and a GiB passes with flat memory and no
// temp file.
TEST_F(ProxyStream, UnbufferedUploadReachesTheUpstreamAsItArrives) {
  start("proxy_request_buffering off;");
  std::atomic<bool> head_seen{false};
  up.setHandler([&](const RecordedRequest& r) {
    if (r.target == "/s") head_seen = true;
    return Behaviour::respond(200, "ok");
  });
  RawClient c(gw.port());
  ASSERT_TRUE(c.send("POST /s HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"));
  // The upstream has the request while the client is still sending it.
  ASSERT_TRUE(waitFor([&] { return head_seen.load(); })) << gw.errorLog();
  ASSERT_TRUE(c.send("7\r\n second\r\n0\r\n\r\n"));
  Response r = c.readResponse();
  EXPECT_EQ(r.status, 200) << gw.errorLog();
  ASSERT_TRUE(up.waitForRequests(2));
  RecordedRequest got = up.requests()[1];
  EXPECT_TRUE(got.chunked);
  EXPECT_EQ(got.body, "first second");
  EXPECT_FALSE(gw.prefix().exists("client_body_temp")) << "nothing was buffered to disk";
}

TEST_F(ProxyStream, UnbufferedGigabyteUploadKeepsMemoryFlat) {
  start("proxy_request_buffering off;");
  RecordedRequest got;
  ASSERT_NO_FATAL_FAILURE(uploadGigabyte(&got));
  EXPECT_EQ(got.header("content-length"), std::to_string(kGiB));
  EXPECT_TRUE(got.body_complete);
  EXPECT_LT(peakGrowthKb(), kFlatKb) << "the worker's peak RSS grew with the body";
  EXPECT_FALSE(gw.prefix().exists("client_body_temp")) << "nothing was buffered to disk";
}

}  // namespace
}  // namespace tidegate::test
