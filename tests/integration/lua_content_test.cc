// content_by_lua* across the connection's life: pipelining and keepalive
// after a yielding handler, a client that leaves while its handler sleeps,
// and a graceful stop that waits for handlers in flight.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>

#include "harness.h"

namespace tidegate::test {
namespace {

const char* kSleepy = R"(
    location /sleep { content_by_lua_block { ngx.sleep(tonumber(ngx.var.arg_s) or 0.05) ngx.say("woke ", ngx.var.arg_n) } }
    location /now { content_by_lua_block { ngx.say("now ", ngx.var.arg_n) } }
)";

// A Lua file named through variables resolves per request; the handler
// lookup's memory of its last answer must not hand one request's file to
// the next (the resolved code is a temporary, at the same address each time).
TEST(LuaContentTest, FilesNamedThroughVariablesAlternate) {
  Gateway gw;
  gw.prefix().write("lua/handlers/hello.lua", "ngx.say('hello')\n");
  gw.prefix().write("lua/handlers/bye.lua", "ngx.say('bye')\n");
  gw.setSimpleConf("location /t { content_by_lua_file lua/handlers/$arg_h.lua; }");
  ASSERT_TRUE(gw.start());
  for (int i = 0; i < 3; i++) {
    EXPECT_EQ(httpGet(gw.port(), "/t?h=hello").body, "hello\n");
    EXPECT_EQ(httpGet(gw.port(), "/t?h=bye").body, "bye\n");
  }
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(LuaContentTest, PipelinedRequestsAfterAYieldingHandlerStayInOrder) {
  Gateway gw;
  gw.setSimpleConf(kSleepy);
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  c.send("GET /sleep?n=1 HTTP/1.1\r\nHost: a\r\n\r\nGET /now?n=2 HTTP/1.1\r\nHost: a\r\n\r\n"
         "GET /sleep?n=3 HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(c.readResponse().body, "woke 1\n");
  EXPECT_EQ(c.readResponse().body, "now 2\n");
  Response third = c.readResponse();
  EXPECT_EQ(third.body, "woke 3\n");
  EXPECT_EQ(third.header("connection"), "keep-alive");
  c.send("GET /now?n=4 HTTP/1.1\r\nHost: a\r\n\r\n");  // the connection is still good
  EXPECT_EQ(c.readResponse().body, "now 4\n");
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(LuaContentTest, ClientLeavingWhileTheHandlerSleepsCancelsIt) {
  Gateway gw;
  gw.setSimpleConf(kSleepy, "lua_check_client_abort on;\n");
  ASSERT_TRUE(gw.start());
  {
    RawClient c(gw.port());
    c.send("GET /sleep?s=30&n=1 HTTP/1.1\r\nHost: a\r\n\r\n");
    c.readUntilClose(Ms(100));  // the handler is asleep now
  }  // the client leaves
  // The worker keeps serving, and a graceful stop does not wait 30 s for the
  // cancelled handler: its timer went with the connection.
  EXPECT_EQ(httpGet(gw.port(), "/now?n=2").body, "now 2\n");
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(gw.stop(Ms(10000)), 0);
  EXPECT_LT(std::chrono::duration_cast<Ms>(std::chrono::steady_clock::now() - t0).count(), 5000);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(LuaContentTest, GracefulStopWaitsForARunningHandler) {
  Gateway gw;
  gw.setSimpleConf(kSleepy);
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  c.send("GET /sleep?s=0.5&n=7 HTTP/1.1\r\nHost: a\r\n\r\n");
  c.readUntilClose(Ms(100));
  gw.signal(SIGQUIT);
  Response r = c.readResponse(Ms(5000));
  EXPECT_EQ(r.body, "woke 7\n");
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_EQ(gw.waitExit(Ms(10000)), 0);
}

// A fast stop (SIGTERM) while handlers wait on their client: one in
// ngx.flush(true) behind a client that reads nothing, one in a raw request
// socket's receive, one in a log handler's cosocket. Their connections are
// closed and their tasks freed in the right order (the sanitizer build
// checks it): the worker exits cleanly.
TEST(LuaContentTest, FastStopWhileHandlersWaitOnTheirClients) {
  int silent = freePort();  // nothing listens: the log handler's connect fails or waits
  Gateway gw;
  gw.setSimpleConf(R"(
    location /flush { content_by_lua_block {
        ngx.print(string.rep("x", 8 * 1024 * 1024))
        ngx.log(ngx.WARN, "flush waiting")
        ngx.flush(true)
    } }
    location /raw { content_by_lua_block {
        local sock = assert(ngx.req.socket(true))
        ngx.log(ngx.WARN, "raw waiting")
        sock:receive()
    } }
    location /log {
        return 204;
        log_by_lua_block {
            local sock = ngx.socket.tcp()
            sock:settimeout(60000)
            ngx.log(ngx.WARN, "log waiting")
            sock:connect("10.255.255.1", )" + std::to_string(silent) + R"()
        }
    })");
  ASSERT_TRUE(gw.start());
  RawClient flush(gw.port()), raw(gw.port());
  flush.send("GET /flush HTTP/1.1\r\nHost: a\r\n\r\n");
  raw.send("GET /raw HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(httpGet(gw.port(), "/log").status, 204);
  ASSERT_TRUE(gw.waitLog("flush waiting"));
  ASSERT_TRUE(gw.waitLog("raw waiting"));
  ASSERT_TRUE(gw.waitLog("log waiting"));
  EXPECT_EQ(gw.stopWith(SIGTERM, Ms(10000)), 0);
  EXPECT_TRUE(gw.seriousLogLinesBut({"connect() failed", "timed out"}).empty()) << gw.errorLog();
}

}  // namespace
}  // namespace tidegate::test

namespace tidegate::test {
namespace {

// While a handler sleeps, pipelined requests keep arriving; its request's
// bytes must stay put (ngx.var reads them after the sleep) and every
// pipelined request is answered afterwards, in order.
TEST(LuaContentTest, PipelinedFloodDuringASleepingHandler) {
  Gateway gw;
  gw.setSimpleConf(kSleepy, "client_header_timeout 30s;");
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  std::string batch = "GET /sleep?s=0.2&n=first HTTP/1.1\r\nHost: a\r\n\r\n";
  const int n = 500;  // ~50 KB of requests: more than the head buffer holds
  for (int i = 0; i < n; i++) {
    batch += "GET /now?n=" + std::to_string(i) + " HTTP/1.1\r\nHost: a\r\nX-Pad: " + std::string(40, 'p') + "\r\n\r\n";
  }
  ASSERT_TRUE(c.send(batch));
  EXPECT_EQ(c.readResponse().body, "woke first\n");
  for (int i = 0; i < n; i++) {
    Response r = c.readResponse();
    ASSERT_EQ(r.body, "now " + std::to_string(i) + "\n") << i;
  }
  EXPECT_EQ(gw.stop(), 0);
}

// The request's query string is a view into the read buffer; when the
// buffer slides or grows while a body is read, the view must follow it.
TEST(LuaContentTest, ArgsSurviveBufferMovesWhileReadingABody) {
  Gateway gw;
  gw.setSimpleConf("    location / { return 200 \"args=$args\"; }\n", "client_body_timeout 10s;");
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  // The first request fills most of the 1 KB initial buffer, so the second
  // starts near its end; its body then arrives in pieces.
  std::string pad(800, 'p');
  c.send("GET /?first=1 HTTP/1.1\r\nHost: a\r\nX-Pad: " + pad + "\r\n\r\n" +
         "POST /?second=2&keep=this HTTP/1.1\r\nHost: a\r\nContent-Length: 3000\r\n\r\n");
  EXPECT_EQ(c.readResponse().body, "args=first=1");
  std::string got;
  for (int i = 0; i < 3; i++) {
    c.send(std::string(1000, 'b'));
    got += c.readUntilClose(Ms(20));  // paces the pieces into separate reads
  }
  ASSERT_TRUE(waitFor([&] {
    got += c.readUntilClose(Ms(20));
    return got.find("args=second") != std::string::npos;
  }));
  EXPECT_NE(got.find("\r\n\r\nargs=second=2&keep=this"), std::string::npos) << got;
  EXPECT_EQ(gw.stop(), 0);
}

TEST(LuaContentTest, WorkerPidsListsEveryWorker) {
  Gateway gw;
  gw.setSimpleConf(R"(
    location /t {
        content_by_lua_block {
            local pids = ngx.worker.pids()
            local mine = false
            for _, p in ipairs(pids) do if p == ngx.worker.pid() then mine = true end end
            table.sort(pids)
            ngx.say(#pids, " ", mine, " ", table.concat(pids, ","))
        }
    }
  )", "", 2);
  ASSERT_TRUE(gw.start());
  std::vector<pid_t> workers = gw.workerPids();
  ASSERT_EQ(workers.size(), 2u);
  std::sort(workers.begin(), workers.end());
  std::string want = "2 true " + std::to_string(workers[0]) + "," + std::to_string(workers[1]) + "\n";
  EXPECT_EQ(httpGet(gw.port(), "/t").body, want);
  EXPECT_EQ(gw.stop(), 0);
}

}  // namespace
}  // namespace tidegate::test
