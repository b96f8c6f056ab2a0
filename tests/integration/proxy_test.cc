// proxy_pass against the fake upstream: what goes upstream (request line,
// URI replacement, headers), what comes back (status, headers, bodies of
// every framing), keepalive pooling, and the variables the access log sees.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <string>
#include <thread>

#include "fake_upstream.h"
#include "harness.h"

namespace tidegate::test {
namespace {

std::string upstreamBlock(const FakeUpstream& a, const std::string& extra = "") {
  return "upstream backend { server 127.0.0.1:" + std::to_string(a.port()) + "; " + extra + " }";
}

constexpr const char* kProxyAll = "location / { proxy_pass http://backend; }";

// A gateway whose `server_body` proxies to `up` as upstream "backend".
bool startProxy(Gateway& gw, const FakeUpstream& up, const std::string& server_body = kProxyAll) {
  gw.setSimpleConf(server_body, upstreamBlock(up));
  return gw.start();
}

TEST(ProxyTest, PassesTheRequestAndTheResponse) {
  FakeUpstream up;
  up.setDefault(Behaviour::respond(201, "created", {{"X-Up", "1"}, {"Server", "fake"}}));
  Gateway gw;
  ASSERT_TRUE(startProxy(gw, up));
  RawClient c(gw.port());
  ASSERT_TRUE(c.send("GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example.com\r\nX-Client: yes\r\nConnection: close\r\n\r\n"));
  Response r = c.readResponse();
  EXPECT_EQ(r.status, 201) << gw.errorLog();
  EXPECT_EQ(r.body, "created");
  EXPECT_EQ(r.header("x-up"), "1");
  EXPECT_EQ(r.header("server").rfind("tidegate", 0), 0u) << "the upstream's Server is hidden by default";
  ASSERT_EQ(up.requestCount(), 1u);
  RecordedRequest got = up.requests()[0];
  EXPECT_EQ(got.method, "GET");
  EXPECT_EQ(got.target, "/a/b?x=1&y=%20");
  EXPECT_EQ(got.version, "HTTP/1.1");
  EXPECT_EQ(got.header("host"), "backend");
  EXPECT_EQ(got.header("x-client"), "yes");
  EXPECT_FALSE(got.hasHeader("connection")) << "pooled by default: no Connection: close";
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(ProxyTest, UriPartReplacesTheLocationPrefix) {
  FakeUpstream up;
  Gateway gw;
  gw.setSimpleConf("location /name/ { proxy_pass http://127.0.0.1:" + std::to_string(up.port()) +
                   "/remote/; }\n"
                   "location /plain/ { proxy_pass http://127.0.0.1:" + std::to_string(up.port()) + "; }\n");
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/name/x/y?q=1").status, 200) << gw.errorLog();
  EXPECT_EQ(httpGet(gw.port(), "/plain/%7Ex/../z").status, 200);
  ASSERT_TRUE(up.waitForRequests(2));
  auto reqs = up.requests();
  EXPECT_EQ(reqs[0].target, "/remote/x/y?q=1");
  EXPECT_EQ(reqs[1].target, "/plain/%7Ex/../z") << "without a URI part the client's URI goes as received";
  EXPECT_EQ(reqs[1].header("host"), "127.0.0.1:" + std::to_string(up.port()));
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyTest, ProxySetHeaderOverridesDropsAndAdds) {
  FakeUpstream up;
  Gateway gw;
  ASSERT_TRUE(startProxy(gw, up, R"(
    location / {
        proxy_pass http://backend;
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Drop "";
    }
)"));
  RawClient c(gw.port());
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: Site.example\r\nX-Drop: 1\r\nX-Forwarded-For: 10.0.0.1\r\n"
                     "Connection: close\r\n\r\n"));
  EXPECT_EQ(c.readResponse().status, 200) << gw.errorLog();
  ASSERT_EQ(up.requestCount(), 1u);
  RecordedRequest got = up.requests()[0];
  EXPECT_EQ(got.header("host"), "site.example");
  EXPECT_EQ(got.header("x-real-ip"), "127.0.0.1");
  EXPECT_EQ(got.header("x-forwarded-for"), "10.0.0.1, 127.0.0.1");
  EXPECT_EQ(got.headerCount("x-forwarded-for"), 1u);
  EXPECT_FALSE(got.hasHeader("x-drop"));
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyTest, BodiesOfEveryFramingReachTheClient) {
  FakeUpstream up;
  Gateway gw;
  ASSERT_TRUE(startProxy(gw, up));
  up.enqueue(Behaviour::chunked(std::string(10000, 'c'), 1000));
  Response r = httpGet(gw.port(), "/chunked");
  EXPECT_EQ(r.status, 200) << gw.errorLog();
  EXPECT_EQ(r.body, std::string(10000, 'c'));
  up.enqueue(Behaviour::closing(200, std::string(5000, 'z')));
  r = httpGet(gw.port(), "/closing");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, std::string(5000, 'z'));
  Behaviour until_close = Behaviour::respond(200, "until close");
  until_close.framing = Framing::kCloseDelimited;
  up.enqueue(until_close);
  r = httpGet(gw.port(), "/eof");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "until close");
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(ProxyTest, PostBodyGoesUpstreamWithItsLength) {
  FakeUpstream up;
  Gateway gw;
  ASSERT_TRUE(startProxy(gw, up));
  RawClient c(gw.port());
  ASSERT_TRUE(c.send("POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"));
  EXPECT_EQ(c.readResponse().status, 200) << gw.errorLog();
  ASSERT_EQ(up.requestCount(), 1u);
  RecordedRequest got = up.requests()[0];
  EXPECT_EQ(got.body, "hello world");
  EXPECT_EQ(got.header("content-length"), "11");
  EXPECT_FALSE(got.hasHeader("transfer-encoding"));
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyTest, KeepaliveConnectionsArePooledAndReused) {
  FakeUpstream up;
  Gateway gw;
  ASSERT_TRUE(startProxy(gw, up));
  RawClient c(gw.port());
  for (int i = 0; i < 5; i++) {
    ASSERT_TRUE(c.send("GET /k HTTP/1.1\r\nHost: a\r\n\r\n"));
    EXPECT_EQ(c.readResponse().status, 200) << gw.errorLog();
  }
  EXPECT_EQ(up.connectionsAccepted(), 1) << "one upstream connection serves every request";
  EXPECT_EQ(up.requestsOnConnection(1), 5);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyTest, PoolHonoursKeepaliveRequestsTimeoutAndCap) {
  FakeUpstream up;
  Gateway gw;
  gw.setSimpleConf("location / { proxy_pass http://backend; }\nlocation /t { proxy_pass http://short; }\n"
                   "location /c { proxy_pass http://capped; }",
                   "upstream backend { server 127.0.0.1:" + std::to_string(up.port()) + "; keepalive_requests 3; }\n"
                   "upstream short { server 127.0.0.1:" + std::to_string(up.port()) +
                       "; keepalive_timeout 200ms; }\n"
                   "upstream capped { server 127.0.0.1:" + std::to_string(up.port()) + "; keepalive 1; }");
  ASSERT_TRUE(gw.start());
  // keepalive_requests 3: a connection serves three requests, then closes.
  RawClient c(gw.port());
  for (int i = 0; i < 6; i++) {
    ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    ASSERT_EQ(c.readResponse().status, 200) << gw.errorLog();
  }
  EXPECT_EQ(up.connectionsAccepted(), 2);
  EXPECT_EQ(up.requestsOnConnection(1), 3);
  EXPECT_EQ(up.requestsOnConnection(2), 3);
  // keepalive_timeout: an idle pooled connection is closed by us after it.
  ASSERT_TRUE(c.send("GET /t HTTP/1.1\r\nHost: a\r\n\r\n"));
  ASSERT_EQ(c.readResponse().status, 200);
  int before = up.connectionsAccepted();
  EXPECT_TRUE(up.waitForOpenConnections(0)) << "idle connections outlived keepalive_timeout";
  ASSERT_TRUE(c.send("GET /t HTTP/1.1\r\nHost: a\r\n\r\n"));
  ASSERT_EQ(c.readResponse().status, 200);
  EXPECT_EQ(up.connectionsAccepted(), before + 1);
  // keepalive 1: of two connections busy at once, one stays pooled.
  RawClient c2(gw.port());
  up.enqueue(Behaviour::slow(Ms(200)));
  up.enqueue(Behaviour::slow(Ms(200)));
  ASSERT_TRUE(c.send("GET /c HTTP/1.1\r\nHost: a\r\n\r\n"));
  ASSERT_TRUE(c2.send("GET /c HTTP/1.1\r\nHost: a\r\n\r\n"));
  ASSERT_EQ(c.readResponse().status, 200);
  ASSERT_EQ(c2.readResponse().status, 200);
  EXPECT_TRUE(up.waitForOpenConnections(1));
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyTest, ReloadKeepsProxyingWithoutFailures) {
  FakeUpstream a, b;
  Gateway gw;
  auto conf = [&](const FakeUpstream& u) {
    return "upstream backend { server 127.0.0.1:" + std::to_string(u.port()) + "; }";
  };
  gw.setSimpleConf(kProxyAll, conf(a), 2);
  ASSERT_TRUE(gw.start());
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::thread client([&] {
    while (!stop) {
      if (httpGet(gw.port(), "/").status == 200) ok++;
      else failed++;
    }
  });
  ASSERT_TRUE(waitFor([&] { return ok > 20; }));
  // The upstream block changes to another server: the new workers use it.
  gw.setSimpleConf(kProxyAll, conf(b), 2);
  gw.signal(SIGHUP);
  EXPECT_TRUE(waitFor([&] { return b.requestCount() > 20; })) << gw.errorLog();
  stop = true;
  client.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProxyTest, AccessLogShowsUpstreamVariables) {
  FakeUpstream up;
  RefusingPort refused;
  Gateway gw;
  gw.setSimpleConf("access_log logs/up.log up;\nlocation / { proxy_pass http://backend; }",
                   "log_format up '$status $upstream_addr $upstream_status $upstream_response_length';\n"
                   "upstream backend { server 127.0.0.1:" + std::to_string(refused.port()) +
                       "; server 127.0.0.1:" + std::to_string(up.port()) + "; }");
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/").status, 200) << gw.errorLog();
  std::string want = "200 127.0.0.1:" + std::to_string(refused.port()) + ", 127.0.0.1:" +
                     std::to_string(up.port()) + " 502, 200 0, 2";
  EXPECT_TRUE(waitFor([&] { return gw.prefix().read("logs/up.log").find(want) != std::string::npos; }))
      << gw.prefix().read("logs/up.log");
  EXPECT_EQ(gw.stop(), 0);
}

// A request's exchange buffers (the parser's fields, the head's views) and
// the request's record of the upstream's headers are reused: nothing of an
// earlier response may show in a later one, on the same client connection
// or another.
TEST(ProxyTest, ReusedExchangeBuffersCarryNothingOver) {
  FakeUpstream up;
  const std::string long_a(70, 'a'), long_z(40, 'z');
  up.enqueue(Behaviour::respond(200, "one", {{"X-A", long_a}, {"X-B", "b-value-longer-than-sso"}, {"X-C", "c"}}));
  up.enqueue(Behaviour::respond(200, "two", {{"X-Z", long_z}}));
  up.enqueue(Behaviour::respond(200, "three"));
  Gateway gw;
  gw.setSimpleConf("access_log logs/up.log up;\nlocation / { proxy_pass http://backend; }",
                   "log_format up '$request_uri [$upstream_http_x_a] [$upstream_http_x_z]';\n" + upstreamBlock(up));
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  ASSERT_TRUE(c.send("GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"));
  Response r1 = c.readResponse();
  ASSERT_EQ(r1.body, "one") << gw.errorLog();
  EXPECT_EQ(r1.header("x-a"), long_a);
  EXPECT_EQ(r1.header("x-b"), "b-value-longer-than-sso");
  ASSERT_TRUE(c.send("GET /2 HTTP/1.1\r\nHost: a\r\n\r\n"));
  Response r2 = c.readResponse();
  ASSERT_EQ(r2.body, "two") << gw.errorLog();
  EXPECT_EQ(r2.header("x-z"), long_z);
  for (const char* gone : {"x-a", "x-b", "x-c"}) EXPECT_FALSE(r2.hasHeader(gone)) << gone;
  RawClient other(gw.port());
  ASSERT_TRUE(other.send("GET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
  Response r3 = other.readResponse();
  ASSERT_EQ(r3.body, "three") << gw.errorLog();
  for (const char* gone : {"x-a", "x-b", "x-c", "x-z"}) EXPECT_FALSE(r3.hasHeader(gone)) << gone;
  const std::string want = "/1 [" + long_a + "] [-]\n/2 [-] [" + long_z + "]\n/3 [-] [-]\n";
  EXPECT_TRUE(waitFor([&] { return gw.prefix().read("logs/up.log") == want; })) << gw.prefix().read("logs/up.log");
  EXPECT_EQ(gw.stop(), 0);
}

// Reads from `fd` until `want` bytes total are in *got (or the deadline).
bool readAtLeast(int fd, size_t want, std::string* got, Ms timeout = Ms(5000)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (got->size() < want) {
    auto left = std::chrono::duration_cast<Ms>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) return false;
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return false;
    got->append(buf, static_cast<size_t>(n));
  }
  return true;
}

TEST(ProxyTest, WebSocketUpgradeBecomesATunnelAfterThe101) {
  FakeUpstream up;
  up.setDefault(Behaviour::upgradeEcho());
  Gateway gw;
  ASSERT_TRUE(startProxy(gw, up, R"(
    location /ws {
        proxy_pass http://backend;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "upgrade";
    }
)"));
  RawClient c(gw.port());
  // The first frame rides right behind the request.
  ASSERT_TRUE(c.send("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nfirst"));
  std::string got;
  ASSERT_TRUE(readAtLeast(c.fd(), 1, &got)) << gw.errorLog();
  while (got.find("\r\n\r\n") == std::string::npos) ASSERT_TRUE(readAtLeast(c.fd(), got.size() + 1, &got));
  size_t head_end = got.find("\r\n\r\n") + 4;
  std::string head = got.substr(0, head_end);
  EXPECT_EQ(head.rfind("HTTP/1.1 101 ", 0), 0u) << head;
  EXPECT_NE(head.find("Upgrade: websocket"), std::string::npos) << head;
  EXPECT_NE(head.find("Connection: upgrade"), std::string::npos) << head;
  std::string data = got.substr(head_end);
  ASSERT_TRUE(readAtLeast(c.fd(), 5, &data)) << data;
  EXPECT_EQ(data, "first");
  // Both ways, many times, and a large piece that needs back-pressure.
  for (int i = 0; i < 20; i++) {
    std::string msg = "message " + std::to_string(i);
    ASSERT_TRUE(c.send(msg));
    std::string echo;
    ASSERT_TRUE(readAtLeast(c.fd(), msg.size(), &echo));
    EXPECT_EQ(echo, msg);
  }
  std::string big(3 << 20, 'w');
  std::thread writer([&] { c.send(big); });
  std::string echo;
  EXPECT_TRUE(readAtLeast(c.fd(), big.size(), &echo, Ms(20000)));
  writer.join();
  EXPECT_EQ(echo.size(), big.size());
  RecordedRequest req = up.requests().at(0);
  EXPECT_EQ(req.header("upgrade"), "websocket");
  EXPECT_EQ(req.header("connection"), "upgrade");
  // The client leaves: the upstream side closes too.
  c.close();
  EXPECT_TRUE(up.waitForOpenConnections(0));
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(ProxyTest, A101ThatWasNotAskedForIsA502) {
  FakeUpstream up;
  up.setDefault(Behaviour::badFraming(BadFraming::kUnrequested101));
  Gateway gw;
  ASSERT_TRUE(startProxy(gw, up));
  RawClient c(gw.port());
  // The client asks, but the conf does not pass the upgrade on (nginx's default).
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"));
  EXPECT_EQ(c.readResponse().status, 502);
  EXPECT_TRUE(gw.waitLog("while reading response header from upstream"));
  EXPECT_EQ(gw.stop(), 0);
}

}  // namespace
}  // namespace tidegate::test
