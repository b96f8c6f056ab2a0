// Request teardown while coroutines wait: a client that leaves while its
// handler's light threads wait on a semaphore, a sleep and a user
// coroutine must cancel all of it; a later post to the same semaphore must
// not touch the gone request (ASan catches it if it does).
#include <gtest/gtest.h>
#include <sys/socket.h>

#include "harness.h"

namespace tidegate::test {
namespace {

const char* kWaiters = R"(
    location /wait {
        content_by_lua_block {
            local s = require "shared_sema"
            ngx.thread.spawn(function() s.sema:wait(30) ngx.log(ngx.ERR, "waiter resumed after abort") end)
            ngx.thread.spawn(function() ngx.sleep(30) end)
            ngx.thread.spawn(function()
                local co = coroutine.create(function() ngx.sleep(30) end)
                coroutine.resume(co)  -- this thread waits for the coroutine's sleep
            end)
            ngx.log(ngx.WARN, "all waiting now")
            s.sema:wait(30)
        }
    }
    location /post {
        content_by_lua_block {
            local s = require "shared_sema"
            s.sema:post(5)
            ngx.sleep(0.05)
            ngx.say("posted, count ", s.sema:count())
        }
    }
)";

TEST(LuaSchedulingTest, ClientLeavingCancelsEveryWaitingCoroutine) {
  Gateway gw;
  gw.prefix().write("lua/shared_sema.lua", "return { sema = require('ngx.semaphore').new(0) }\n");
  gw.setSimpleConf(kWaiters, "lua_package_path \"$prefix/lua/?.lua;;\";\nlua_check_client_abort on;\n");
  ASSERT_TRUE(gw.start());
  {
    RawClient c(gw.port());
    c.send("GET /wait HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_TRUE(gw.waitLog("all waiting now"));
  }  // the client leaves with four coroutines suspended
  // Nobody waits any more: the post keeps all five resources.
  ASSERT_TRUE(waitFor([&] { return httpGet(gw.port(), "/post").body == "posted, count 5\n"; }));
  EXPECT_EQ(gw.stop(Ms(10000)), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

// lua_check_client_abort off (the default): a client that half-closes
// after its request still gets the whole response, streamed or not.
TEST(LuaSchedulingTest, HalfClosedClientStillGetsTheResponse) {
  Gateway gw;
  gw.setSimpleConf(R"(
    location /t {
        content_by_lua_block {
            ngx.say("one")
            ngx.flush(true)
            ngx.sleep(0.05)
            ngx.say("two")
        }
    }
  )");
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  c.send("GET /t HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_EQ(::shutdown(c.fd(), SHUT_WR), 0);
  Response r = c.readResponse();
  EXPECT_TRUE(r.complete);
  EXPECT_EQ(r.body, "one\ntwo\n");
  EXPECT_TRUE(c.waitClosed());  // no keepalive after a half-close
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

// lua_check_client_abort on: ngx.on_abort's handler runs when the client
// leaves; without one the request ends with 499.
TEST(LuaSchedulingTest, OnAbortHandlerRunsWhenTheClientLeaves) {
  Gateway gw;
  gw.setSimpleConf(R"(
    lua_check_client_abort on;
    location /handler {
        content_by_lua_block {
            local ok, err = ngx.on_abort(function()
                ngx.log(ngx.WARN, "on_abort ran")
                ngx.exit(499)
            end)
            ngx.log(ngx.WARN, "registered: ", ok, " again: ", select(2, ngx.on_abort(function() end)))
            ngx.sleep(30)
        }
    }
    location /plain {
        content_by_lua_block { ngx.log(ngx.WARN, "plain sleeping") ngx.sleep(30) }
    }
    location /off {
        lua_check_client_abort off;
        content_by_lua_block { ngx.say(select(2, ngx.on_abort(function() end))) }
    }
  )");
  ASSERT_TRUE(gw.start());
  {
    RawClient c(gw.port());
    c.send("GET /handler HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_TRUE(gw.waitLog("registered: 1 again: duplicate call"));
  }
  EXPECT_TRUE(gw.waitLog("on_abort ran"));
  {
    RawClient c(gw.port());
    c.send("GET /plain HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_TRUE(gw.waitLog("plain sleeping"));
  }
  EXPECT_TRUE(waitFor([&] { return gw.accessLog().find("\"GET /plain HTTP/1.1\" 499") != std::string::npos; }))
      << gw.accessLog();
  EXPECT_EQ(httpGet(gw.port(), "/off").body, "lua_check_client_abort is off\n");
  EXPECT_EQ(gw.stop(Ms(10000)), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

// A global written by one request's handler is not seen by the next one
// (each request's handlers get an environment of their own).
TEST(LuaSchedulingTest, GlobalsDoNotLeakAcrossRequests) {
  Gateway gw;
  gw.setSimpleConf(R"(
    location /t {
        content_by_lua_block {
            ngx.say(tostring(seen_before))
            seen_before = true
        }
    }
  )");
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/t").body, "nil\n");
  EXPECT_EQ(httpGet(gw.port(), "/t").body, "nil\n");
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.waitLog("writing a global Lua variable ('seen_before')"));
}

// log_by_lua* runs once the response is handed to the kernel: with a
// client that has not read a large response yet, it has not run; once the
// client reads it all, it runs and sees what was sent.
TEST(LuaSchedulingTest, LogPhaseRunsAfterTheResponseIsSent) {
  Gateway gw;
  gw.setSimpleConf(R"(
    location /big {
        content_by_lua_block {
            local chunk = string.rep("x", 65536)
            for i = 1, 512 do ngx.print(chunk) end
            ngx.log(ngx.WARN, "content done")
        }
        log_by_lua_block { ngx.log(ngx.WARN, "log phase: body_bytes_sent=", ngx.var.body_bytes_sent) }
    }
  )");
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  c.send("GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  // 32 MiB cannot fit in the socket buffers: the response is still queued.
  ASSERT_TRUE(gw.waitLog("content done"));
  EXPECT_EQ(gw.errorLog().find("log phase:"), std::string::npos);
  std::string all = c.readUntilClose(Ms(20000));
  EXPECT_GT(all.size(), 32u * 1024 * 1024);
  EXPECT_TRUE(gw.waitLog("log phase: body_bytes_sent=33554432"));
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

// The Lua phases start once the head is read: an access handler answers
// before the body is sent, and ngx.req.read_body waits for the body.
const char* kEarly = R"(
    location /guarded {
        access_by_lua_block { if not ngx.var.http_x_key then ngx.exit(403) end }
        content_by_lua_block { ngx.req.read_body() ngx.say("got ", #(ngx.req.get_body_data() or "")) }
    }
    location /echo {
        content_by_lua_block {
            ngx.log(ngx.WARN, "handler runs before the body, complete: ", tostring(ngx.req.get_body_data()))
            local t = ngx.thread.spawn(function()
                ngx.req.read_body()
                return "thread saw " .. ngx.req.get_body_data()
            end)
            ngx.req.read_body()
            local _, from_thread = ngx.thread.wait(t)
            ngx.say(ngx.req.get_body_data(), " / ", from_thread)
        }
    }
    location /hop {
        access_by_lua_block { ngx.exec("/echo") }
    }
    location /slow {
        client_body_timeout 200ms;
        content_by_lua_block {
            ngx.req.read_body()
            ngx.log(ngx.ERR, "never: the body timed out")
        }
    }
)";

TEST(LuaSchedulingTest, AccessPhaseAnswersBeforeTheBodyArrives) {
  Gateway gw;
  gw.setSimpleConf(kEarly);
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  c.send("POST /guarded HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n");
  Response r = c.readResponse();  // no body byte was sent
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_TRUE(c.waitClosed());
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(LuaSchedulingTest, ReadBodyWaitsForTheBody) {
  Gateway gw;
  gw.setSimpleConf(kEarly);
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  c.send("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello");
  ASSERT_TRUE(gw.waitLog("handler runs before the body, complete: nil"));
  c.send(" world");
  Response r = c.readResponse();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello world / thread saw hello world\n");
  EXPECT_EQ(r.header("connection"), "keep-alive");  // the body was read whole
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

// ngx.exec while the body is still arriving: the next location's handler
// reads it.
TEST(LuaSchedulingTest, ExecBeforeTheBodyArrivesKeepsReadingIt) {
  Gateway gw;
  gw.setSimpleConf(kEarly);
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  c.send("POST /hop HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello");
  ASSERT_TRUE(gw.waitLog("handler runs before the body, complete: nil"));
  c.send(" world");
  Response r = c.readResponse();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello world / thread saw hello world\n");
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(LuaSchedulingTest, BodyTimeoutWhileReadBodyWaitsEndsTheHandler) {
  Gateway gw;
  gw.setSimpleConf(kEarly);
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  c.send("POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
  Response r = c.readResponse();
  EXPECT_EQ(r.status, 408);
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_EQ(gw.errorLog().find("never: the body timed out"), std::string::npos);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

// A body read while the handler runs, a log phase and keepalive together:
// the next requests on the connection (one pipelined behind the body) are
// served in order, each logged once.
TEST(LuaSchedulingTest, EarlyBodyThenLogPhaseThenPipelinedRequests) {
  Gateway gw;
  gw.setSimpleConf(R"(
    location /up {
        content_by_lua_block {
            ngx.log(ngx.WARN, "up handler started")
            ngx.req.read_body()
            ngx.say("len ", #ngx.req.get_body_data())
        }
        log_by_lua_block { ngx.log(ngx.WARN, "logged ", ngx.var.request_uri, " ", ngx.status) }
        header_filter_by_lua_block { ngx.header["X-Filtered"] = "1" }
    }
    location /next { content_by_lua_block { ngx.say("next ", ngx.var.arg_n) } }
  )");
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  c.send("POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nabc");
  ASSERT_TRUE(gw.waitLog("up handler started"));  // the rest of the body comes after
  c.send("def" "GET /next?n=1 HTTP/1.1\r\nHost: a\r\n\r\n");
  Response first = c.readResponse();
  EXPECT_EQ(first.body, "len 6\n");
  EXPECT_EQ(first.header("x-filtered"), "1");
  EXPECT_EQ(first.header("connection"), "keep-alive");
  EXPECT_EQ(c.readResponse().body, "next 1\n");
  c.send("GET /next?n=2 HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(c.readResponse().body, "next 2\n");
  EXPECT_TRUE(gw.waitLog("logged /up 200"));
  EXPECT_EQ(gw.stop(), 0);
  std::string log = gw.errorLog();
  EXPECT_EQ(log.find("logged /up 200"), log.rfind("logged /up 200"));  // once
  EXPECT_TRUE(gw.seriousLogLines().empty()) << log;
}

}  // namespace
}  // namespace tidegate::test
