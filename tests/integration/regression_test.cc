// Behaviours found wrong in review, each pinned by a test against the binary.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "core/log.h"
#include "harness.h"

namespace tidegate::test {
namespace {

TEST(RegressionTest, PipelinedLargeResponsesDoNotStall) {
  Gateway gw;
  std::string big(20000, 'x');
  gw.setSimpleConf("    location / { return 200 \"" + big + "\"; }\n", "client_header_timeout 30s;");
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  std::string batch;
  for (int i = 0; i < 8; i++) batch += "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  c.send(batch);
  for (int i = 0; i < 8; i++) {
    Response r = c.readResponse(Ms(5000));
    ASSERT_EQ(r.status, 200) << "response " << i;
    EXPECT_EQ(r.body.size(), big.size());
  }
  EXPECT_EQ(gw.stop(), 0);
}

TEST(RegressionTest, Return444AfterPipelinedRequestKeepsEarlierAnswer) {
  Gateway gw;
  gw.setSimpleConf("    location /a { return 200 \"a\"; }\n    location /drop { return 444; }\n");
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  c.send("GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /drop HTTP/1.1\r\nHost: a\r\n\r\n");
  Response r = c.readResponse();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "a");
  EXPECT_TRUE(c.waitClosed());
  EXPECT_EQ(gw.stop(), 0);
}

TEST(RegressionTest, UnopenableAccessLogFailsTestAndReloadButNotService) {
  Gateway gw;
  gw.setSimpleConf("    location / { return 200 \"v1\"; }\n");
  ASSERT_TRUE(gw.start());
  // A directory where the log file should be: open() fails.
  mkdir(gw.path("logs/blocked.log").c_str(), 0755);
  std::string bad = "worker_processes 1;\nevents {}\nhttp {\n  access_log logs/blocked.log;\n"
                    "  server { listen 127.0.0.1:{PORT}; location / { return 200 \"v2\"; } }\n}\n";
  gw.setConf(bad);
  RunResult t = runTidegate({"-p", gw.prefix().path(), "-c", "conf/tidegate.conf", "-t"});
  EXPECT_NE(t.exit_code, 0);
  EXPECT_NE(t.err.find("blocked.log"), std::string::npos) << t.err;
  gw.signal(SIGHUP);
  EXPECT_TRUE(gw.waitLog("reconfiguration failed"));
  EXPECT_EQ(httpGet(gw.port(), "/").body, "v1");
  EXPECT_EQ(gw.stop(), 0);
}

TEST(RegressionTest, VariablesAfterReview) {
  Gateway gw;
  gw.setSimpleConf(R"(
    location /r { return 302 /target; }
    location / { return 200 "ok"; }
)",
                   "log_format t '$host $status [$sent_http_location] $request_time';\n"
                   "  access_log logs/t.log t;");
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  c.send("GET /r HTTP/1.1\r\nHost: EXAMPLE.Test:8080\r\n\r\n");
  Response r = c.readResponse();
  EXPECT_EQ(r.status, 302);
  // A local redirect target becomes absolute with the requested host.
  EXPECT_EQ(r.header("location"), "http://example.test:" + std::to_string(gw.port()) + "/target");
  // Idle time on a keepalive connection does not count into $request_time.
  waitFor([] { return false; }, Ms(1200));
  c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(c.readResponse().status, 200);
  ASSERT_TRUE(waitFor([&] { return gw.prefix().read("logs/t.log").find("a 200") != std::string::npos; }));
  std::string log = gw.prefix().read("logs/t.log");
  EXPECT_NE(log.find("example.test 302 [http://example.test:"), std::string::npos) << log;
  EXPECT_NE(log.find("a 200 [-] 0.0"), std::string::npos) << log;
  EXPECT_EQ(gw.stop(), 0);
}

TEST(RegressionTest, ServerLevelReturnWins) {
  Gateway gw;
  gw.setSimpleConf("    return 403;\n    location / { return 200 \"loc\"; }\n");
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/").status, 403);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(RegressionTest, DuplicateDirectivesAreRefused) {
  Gateway gw;
  gw.setConf("worker_processes 1;\nworker_processes 2;\nevents {}\n");
  RunResult r = runTidegate({"-p", gw.prefix().path(), "-c", "conf/tidegate.conf", "-t"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("\"worker_processes\" directive is duplicate"), std::string::npos) << r.err;
  gw.setConf("events {}\nhttp { keepalive_timeout 5s; keepalive_timeout 6s; }\n");
  r = runTidegate({"-p", gw.prefix().path(), "-c", "conf/tidegate.conf", "-t"});
  EXPECT_NE(r.err.find("\"keepalive_timeout\" directive is duplicate"), std::string::npos) << r.err;
}

TEST(RegressionTest, DaemonReportsBindErrorToTheShell) {
  Gateway holder;
  holder.setSimpleConf("    location / { return 200 \"x\"; }\n");
  ASSERT_TRUE(holder.start());
  Gateway gw;
  gw.setConf("daemon on;\nevents {}\nhttp { server { listen 127.0.0.1:" + std::to_string(holder.port()) +
             "; return 200 \"d\"; } }\n");
  RunResult r = runTidegate({"-p", gw.prefix().path(), "-c", "conf/tidegate.conf"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("Address already in use"), std::string::npos) << r.err;
  EXPECT_EQ(holder.stop(), 0);
}

}  // namespace
}  // namespace tidegate::test


namespace tidegate::test {
namespace {

TEST(LogFloodTest, ClientErrorLinesAreRateLimited) {
  Gateway gw;
  gw.setSimpleConf("    location / { return 200 \"ok\"; }\n");
  ASSERT_TRUE(gw.start());
  for (int i = 0; i < 100; i++) {
    RawClient c(gw.port());
    c.send("GET / HTTP/1.1\r\nHost: a\r\nX-A : bad\r\n\r\n");
    EXPECT_EQ(c.readResponse().status, 400);
  }
  EXPECT_EQ(gw.stop(), 0);
  std::string log = gw.errorLog();
  int lines = 0;
  for (size_t p = log.find("while reading client request headers"); p != std::string::npos;
       p = log.find("while reading client request headers", p + 1)) {
    lines++;
  }
  // 100 bad requests within a few hundred ms: at most a burst or two is logged.
  EXPECT_GE(lines, 1);
  EXPECT_LE(lines, 2 * static_cast<int>(core::LogRateLimit::kBurst));
}

}  // namespace
}  // namespace tidegate::test

namespace tidegate::test {
namespace {

// A client that pipelines far more than it reads is paused (back-pressure),
// not answered 431 because its unread requests filled the head buffer.
TEST(BackPressureTest, SlowReaderOfPipelinedAnswersIsPausedNotRejected) {
  Gateway gw;
  std::string big(60000, 'x');
  gw.setSimpleConf("    location / { return 200 \"" + big + "\"; }\n", "client_header_timeout 30s;");
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  std::string batch;
  // ~85 KB of requests asking for ~54 MB of answers, sent before reading any:
  // far more than the head buffer (32 KB) and the socket buffers hold.
  const int n = 900;  // under keepalive_requests (1000)
  for (int i = 0; i < n; i++) batch += "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: " + std::string(60, 'p') + "\r\n\r\n";
  ASSERT_TRUE(c.send(batch));
  for (int i = 0; i < n; i++) {
    Response r = c.readResponse(Ms(10000));
    ASSERT_EQ(r.status, 200) << "response " << i;
    ASSERT_EQ(r.body.size(), big.size());
  }
  EXPECT_EQ(gw.stop(), 0);
}

}  // namespace
}  // namespace tidegate::test
