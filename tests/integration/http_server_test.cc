// The HTTP/1.1 server against the real binary: keepalive, pipelining, HEAD,
// 100-continue, HTTP/1.0, return, routing by server_name and location.
#include <gtest/gtest.h>

#include "harness.h"

namespace tidegate::test {
namespace {

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    gw_.setConf(R"(
worker_processes 1;
events { worker_connections 1024; }
http {
  log_format short '$request_method $uri $status $body_bytes_sent "$http_x_tag" $args';
  access_log logs/access.log short;
  default_type text/plain;
  server {
    listen 127.0.0.1:{PORT} default_server;
    server_name main.test;
    location = /exact { return 200 "exact"; }
    location /prefix { return 200 "prefix"; }
    location ^~ /static/ { return 200 "static"; }
    location ~ \.php$ { return 200 "php"; }
    location ~* \.JPG$ { return 200 "jpg"; }
    location /nest/ {
      location /nest/inner { return 200 "inner"; }
      return 200 "nest";
    }
    location /vars { return 200 "uri=$uri args=$args host=$host arg_a=$arg_a method=$request_method"; }
    location /redirect { return 301 http://example.com/new; }
    location /teapot { return 418; }
    location /drop { return 444; }
    location /empty { return 204; }
    location / { return 200 "root"; }
  }
  server {
    listen 127.0.0.1:{PORT};
    server_name *.wild.test;
    return 200 "wild";
  }
  server {
    listen 127.0.0.1:{PORT};
    server_name ~^re\d+\.test$;
    return 200 "regex";
  }
}
)");
    ASSERT_TRUE(gw_.start());
  }
  void TearDown() override {
    EXPECT_EQ(gw_.stop(), 0);
    EXPECT_TRUE(gw_.seriousLogLines().empty()) << gw_.errorLog();
  }
  Gateway gw_;
};

TEST_F(HttpServerTest, ServesReturnWithDateAndServer) {
  Response r = httpGet(gw_.port(), "/");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "root");
  EXPECT_EQ(r.header("server").substr(0, 9), "tidegate/");  // server_tokens on by default
  EXPECT_FALSE(r.header("date").empty());
  EXPECT_EQ(r.header("content-type"), "text/plain");
  EXPECT_EQ(r.header("content-length"), "4");
}

TEST_F(HttpServerTest, LocationMatchingOrder) {
  EXPECT_EQ(httpGet(gw_.port(), "/exact").body, "exact");
  EXPECT_EQ(httpGet(gw_.port(), "/exact/more").body, "root");
  EXPECT_EQ(httpGet(gw_.port(), "/prefix/x").body, "prefix");
  EXPECT_EQ(httpGet(gw_.port(), "/prefix/x.php").body, "php");   // regex beats a plain prefix
  EXPECT_EQ(httpGet(gw_.port(), "/static/x.php").body, "static");  // ^~ stops the regex search
  EXPECT_EQ(httpGet(gw_.port(), "/a/B.jpg").body, "jpg");          // ~* is caseless
  EXPECT_EQ(httpGet(gw_.port(), "/nest/inner/x").body, "inner");
  EXPECT_EQ(httpGet(gw_.port(), "/nest/other").body, "nest");
  // Normalised before matching: dot segments and encoded characters.
  EXPECT_EQ(httpGet(gw_.port(), "/static/../exact").body, "exact");
  EXPECT_EQ(httpGet(gw_.port(), "/%65xact").body, "exact");
  EXPECT_EQ(httpGet(gw_.port(), "//exact").body, "exact");
  EXPECT_EQ(httpGet(gw_.port(), "/../etc/passwd").status, 400);
}

TEST_F(HttpServerTest, ServerNameMatching) {
  EXPECT_EQ(httpGet(gw_.port(), "/x", "a.wild.test").body, "wild");
  EXPECT_EQ(httpGet(gw_.port(), "/x", "re42.test").body, "regex");
  EXPECT_EQ(httpGet(gw_.port(), "/x", "main.test").body, "root");
  EXPECT_EQ(httpGet(gw_.port(), "/x", "MAIN.test:8080").body, "root");
  EXPECT_EQ(httpGet(gw_.port(), "/x", "unknown.test").body, "root");  // default_server
}

TEST_F(HttpServerTest, Variables) {
  Response r = httpGet(gw_.port(), "/vars/%41?a=1&b=2", "main.test");
  EXPECT_EQ(r.body, "uri=/vars/A args=a=1&b=2 host=main.test arg_a=1 method=GET");
}

TEST_F(HttpServerTest, ReturnCodes) {
  Response r = httpGet(gw_.port(), "/redirect");
  EXPECT_EQ(r.status, 301);
  EXPECT_EQ(r.header("location"), "http://example.com/new");
  r = httpGet(gw_.port(), "/teapot");
  EXPECT_EQ(r.status, 418);
  r = httpGet(gw_.port(), "/empty");
  EXPECT_EQ(r.status, 204);
  EXPECT_FALSE(r.hasHeader("content-length"));
  RawClient c(gw_.port());
  c.send("GET /drop HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(c.readUntilClose(), "");  // 444 closes without an answer
}

TEST_F(HttpServerTest, KeepaliveServesManyRequestsOnOneConnection) {
  RawClient c(gw_.port());
  for (int i = 0; i < 20; i++) {
    ASSERT_TRUE(c.send("GET /exact HTTP/1.1\r\nHost: a\r\n\r\n"));
    Response r = c.readResponse();
    ASSERT_EQ(r.status, 200) << i;
    EXPECT_EQ(r.body, "exact");
    EXPECT_EQ(r.header("connection"), "keep-alive");
  }
}

TEST_F(HttpServerTest, PipelinedResponsesInOrder) {
  RawClient c(gw_.port());
  std::string batch;
  for (const char* p : {"/exact", "/prefix", "/static/", "/x.php", "/"}) {
    batch += std::string("GET ") + p + " HTTP/1.1\r\nHost: a\r\n\r\n";
  }
  batch += "POST /exact HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
  batch += "POST /prefix HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
  ASSERT_TRUE(c.send(batch));
  for (const char* want : {"exact", "prefix", "static", "php", "root", "exact", "prefix"}) {
    Response r = c.readResponse();
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, want);
  }
}

TEST_F(HttpServerTest, HeadHasNoBody) {
  RawClient c(gw_.port());
  c.send("HEAD /exact HTTP/1.1\r\nHost: a\r\n\r\nGET /exact HTTP/1.1\r\nHost: a\r\n\r\n");
  Response r = c.readResponse(Ms(5000), true);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-length"), "5");
  Response next = c.readResponse();
  EXPECT_EQ(next.body, "exact");  // the HEAD reply carried no body bytes
}

TEST_F(HttpServerTest, Http10ClosesUnlessKeepAlive) {
  RawClient c(gw_.port());
  c.send("GET /exact HTTP/1.0\r\n\r\n");
  Response r = c.readResponse();
  EXPECT_EQ(r.status_line.substr(0, 8), "HTTP/1.1");  // our version, as nginx answers
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_TRUE(c.waitClosed());
  RawClient k(gw_.port());
  k.send("GET /exact HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  EXPECT_EQ(k.readResponse().header("connection"), "keep-alive");
  k.send("GET /prefix HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  EXPECT_EQ(k.readResponse().body, "prefix");
}

TEST_F(HttpServerTest, ConnectionCloseIsHonoured) {
  RawClient c(gw_.port());
  c.send("GET /exact HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  Response r = c.readResponse();
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_TRUE(c.waitClosed());
}

TEST_F(HttpServerTest, ExpectContinueGetsInterimResponse) {
  RawClient c(gw_.port());
  c.send("POST /exact HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
  std::string interim;
  ASSERT_TRUE(waitFor([&] {
    interim += c.readUntilClose(Ms(50));
    return interim.find("\r\n\r\n") != std::string::npos;
  }, Ms(5000)));
  EXPECT_EQ(interim, "HTTP/1.1 100 Continue\r\n\r\n");
  c.send("hello");
  Response r = c.readResponse();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "exact");
}

TEST_F(HttpServerTest, AccessLogLines) {
  RawClient c(gw_.port());
  c.send("GET /exact?q=1 HTTP/1.1\r\nHost: a\r\nX-Tag: t\"1\r\n\r\n");
  c.readResponse();
  ASSERT_TRUE(waitFor([&] { return gw_.accessLog().find("GET /exact 200 5") != std::string::npos; }));
  EXPECT_NE(gw_.accessLog().find("GET /exact 200 5 \"t\\x221\" q=1"), std::string::npos) << gw_.accessLog();
}

}  // namespace
}  // namespace tidegate::test

namespace tidegate::test {
namespace {

TEST(KeepaliveSettingsTest, KeepaliveRequestsAndHeaderTimeout) {
  Gateway gw;
  gw.setSimpleConf(R"(
    location / { return 200 "ok"; }
    location /off { keepalive_timeout 0; return 200 "off"; }
)",
                   "keepalive_requests 3; keepalive_timeout 30s 25s;");
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  for (int i = 1; i <= 3; i++) {
    c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    Response r = c.readResponse();
    EXPECT_EQ(r.status, 200);
    if (i < 3) {
      EXPECT_EQ(r.header("connection"), "keep-alive") << i;
      EXPECT_EQ(r.header("keep-alive"), "timeout=25");
    } else {
      EXPECT_EQ(r.header("connection"), "close");  // the third request is the last
    }
  }
  EXPECT_TRUE(c.waitClosed());
  RawClient d(gw.port());
  d.send("GET /off HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(d.readResponse().header("connection"), "close");
  EXPECT_TRUE(d.waitClosed());
  EXPECT_EQ(gw.stop(), 0);
}

}  // namespace
}  // namespace tidegate::test
