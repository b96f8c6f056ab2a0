// ngx.socket.tcp against scripted peers: bytes split at every offset,
// refused connects, stalls, resets, close-delimited reads, the keepalive
// pool, a timer, a client leaving while a cosocket waits, and 1,000
// cosockets at once in one worker.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "fake_upstream.h"
#include "harness.h"
#include "scripted_peer.h"

namespace tidegate::test {
namespace {

// A peer script: reads "split N" and answers `payload` in two writes, the
// first N bytes, then the rest.
std::function<void(int)> splitting(const std::string& payload) {
  return [payload](int fd) {
    int split = std::stoi(readLine(fd).substr(6));
    writeAll(fd, payload.substr(0, static_cast<size_t>(split)));
    std::this_thread::sleep_for(Ms(3));  // separate reads at the gateway
    writeAll(fd, payload.substr(static_cast<size_t>(split)));
  };
}

// Connects once per split offset of `payload` (0..size) to a peer that
// sends it in two writes; `reads` (Lua) reads it from `sock` into the
// string `got`, which must equal `want` for every split.
void expectEverySplitReads(const std::string& payload, const std::string& reads, const std::string& want) {
  ScriptedPeer peer(splitting(payload));
  Gateway gw;
  ASSERT_TRUE(startWith(gw, R"(
    local bad = {}
    for split = 0, )" + std::to_string(payload.size()) + R"( do
        local sock = ngx.socket.tcp()
        assert(sock:connect("127.0.0.1", )" + std::to_string(peer.port()) + R"())
        sock:send({"split ", split, "\n"})
        local got
        )" + reads + R"(
        if got ~= ")" + want + R"(" then bad[#bad + 1] = split .. "=" .. tostring(got) end
    end
    ngx.say("bad splits: ", #bad, " ", table.concat(bad, ","))
  )"));
  Response r = httpGet(gw.port(), "/t");
  EXPECT_EQ(r.body, "bad splits: 0 \n");
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(LuaSocketTest, ReceivePatternsWithThePayloadSplitAtEveryByte) {
  expectEverySplitReads("line1\r\nline2\nABCDE", R"(
        local a = sock:receive()
        local b = sock:receive("*l")
        local c = sock:receive(3)
        local d = sock:receive("*a")
        local e, err = sock:receive(1)  -- *a saw the close
        got = table.concat({a, b, c, d, err}, "|"))",
                        "line1|line2|ABC|DE|closed");
}

// The pattern's prefix "\r\n--xy" appears once without its end.
TEST(LuaSocketTest, ReceiveUntilWithThePayloadSplitAtEveryByte) {
  expectEverySplitReads("head\r\n--xyz\r\n--xybody\r\n--xyzAAAAAAA\r\n--xyz--end", R"(
        local t = {}
        t[1] = sock:receiveuntil("\r\n--xyz")()
        t[2] = sock:receiveuntil("\r\n--xyz", {inclusive = true})()
        local sized = sock:receiveuntil("\r\n--xyz")
        for i = 3, 6 do t[i] = tostring(sized(3)) end
        t[7] = sock:receive("*a")
        got = table.concat(t, "|"))",
                        "head|\\r\\n--xybody\\r\\n--xyz|AAA|AAA|A|nil|--end");
}

TEST(LuaSocketTest, ConnectRefused) {
  RefusingPort refusing;
  Gateway gw;
  ASSERT_TRUE(startWith(gw, R"(
    local sock = ngx.socket.tcp()
    ngx.say(sock:connect("127.0.0.1", )" + std::to_string(refusing.port()) + R"())
  )"));
  EXPECT_EQ(httpGet(gw.port(), "/t").body, "nilconnection refused\n");
  EXPECT_EQ(gw.stop(), 0);
}

TEST(LuaSocketTest, ReadTimeoutOnAStalledPeerAndTheConfDefault) {
  FakeUpstream up;
  up.setDefault(Behaviour::stallOnAccept());
  Gateway gw;
  ASSERT_TRUE(startWith(gw, R"(
    local sock = ngx.socket.tcp()
    assert(sock:connect("127.0.0.1", )" + std::to_string(up.port()) + R"())
    local t0 = ngx.now()
    ngx.say(sock:receive())
    ngx.say(ngx.now() - t0 < 2)
    sock:settimeout(50)
    ngx.say(sock:receive(4))
    ngx.say(sock:close())
  )", "lua_socket_read_timeout 100ms;"));
  EXPECT_EQ(httpGet(gw.port(), "/t").body, "niltimeout\ntrue\nniltimeout\n1\n");
  up.release();
  EXPECT_EQ(gw.stop(), 0);
}

// A connection's timer is restarted only when it would fire too late
// (armTimer): a wait after a shorter one that ended early is not cut short
// by the timer left running, one after a longer one still times out at its
// own deadline, and the idle timeout in the pool still closes the
// connection after both.
TEST(LuaSocketTest, EachWaitTimesOutAtItsOwnDeadline) {
  std::atomic<bool> peer_saw_close{false};
  ScriptedPeer peer([&](int fd) {
    writeAll(fd, "a\n");
    std::this_thread::sleep_for(Ms(900));  // past the first wait's 500 ms
    writeAll(fd, "b\n");
    std::this_thread::sleep_for(Ms(100));
    writeAll(fd, "c\n");
    char ch;
    while (::read(fd, &ch, 1) > 0) {
    }
    peer_saw_close = true;
  });
  Gateway gw;
  ASSERT_TRUE(startWith(gw, R"(
    local sock = ngx.socket.tcp()
    assert(sock:connect("127.0.0.1", )" + std::to_string(peer.port()) + R"())
    sock:settimeout(500)
    ngx.say(sock:receive())
    sock:settimeout(5000)
    ngx.say(sock:receive())
    ngx.say(sock:receive())
    sock:settimeout(100)
    local t0 = ngx.now()
    ngx.say(sock:receive())
    ngx.say(ngx.now() - t0 < 2)
    ngx.say(sock:setkeepalive(100))
  )"));
  EXPECT_EQ(httpGet(gw.port(), "/t").body, "a\nb\nc\nniltimeout\ntrue\n1\n");
  EXPECT_TRUE(waitFor([&] { return peer_saw_close.load(); }));
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLinesBut({"read timed out"}).empty()) << gw.errorLog();
}

// How a read ends follows the peer: closed before the count (the partial
// data), reset (the socket is closed after), "*a" until a close.
TEST(LuaSocketTest, ReadsEndAsThePeerDoes) {
  struct Case {
    const char* name;
    Behaviour peer;
    std::string lua;
    std::string want;
    std::string logged;  // the error line (lua_socket_log_errors), if any
  };
  const Case cases[] = {
      {"closed before the count", Behaviour::rawBytes("12345"), "ngx.say(sock:receive(10))", "nilclosed12345\n", ""},
      {"reset", Behaviour::resetAfterRequest(), "ngx.say(sock:receive('*a'))\nngx.say(sock:receive())",
       "nilconnection reset by peer\nnilclosed\n", "recv() failed (104: Connection reset by peer), client: 127.0.0.1"},
      {"*a until close", Behaviour::closing(200, "the whole body"),
       "local all, err = sock:receive('*a')\nngx.say(all:sub(-14), ' ', err)", "the whole body nil\n", ""},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    FakeUpstream up;
    up.setDefault(c.peer);
    Gateway gw;
    ASSERT_TRUE(startWith(gw, connectAndGet(up.port()) + c.lua));
    EXPECT_EQ(httpGet(gw.port(), "/t").body, c.want);
    EXPECT_EQ(gw.stop(), 0);
    if (!c.logged.empty()) EXPECT_NE(gw.errorLog().find(c.logged), std::string::npos) << gw.errorLog();
    EXPECT_TRUE(gw.seriousLogLinesBut({"recv() failed"}).empty()) << gw.errorLog();
  }
}

// Three requests of the gateway, one upstream connection.
TEST(LuaSocketTest, KeepalivePoolReusesTheConnectionAcrossRequests) {
  FakeUpstream up;
  up.setDefault(Behaviour::respond(200, "pooled"));
  Gateway gw;
  ASSERT_TRUE(startWith(gw, connectAndGet(up.port()) + R"LUA(
    local len
    while true do
        local line = sock:receive()
        if line == "" then break end
        len = len or tonumber(line:match("^[Cc]ontent%-[Ll]ength: (%d+)"))
    end
    ngx.say(sock:receive(len), " ", sock:getreusedtimes())
    ngx.say(sock:setkeepalive(10000, 4))
  )LUA"));
  for (int i = 0; i < 3; i++) {
    EXPECT_EQ(httpGet(gw.port(), "/t").body, "pooled " + std::to_string(i) + "\n1\n");
  }
  EXPECT_EQ(up.connectionsAccepted(), 1);
  EXPECT_EQ(up.requestCount(), 3u);
  // The peer closing an idle pooled connection drops it from the pool.
  up.closeIdleConnections();
  ASSERT_TRUE(up.waitForOpenConnections(0));
  EXPECT_TRUE(waitFor([&] { return httpGet(gw.port(), "/t").body == "pooled 0\n1\n"; }));
  EXPECT_EQ(up.connectionsAccepted(), 2);
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(LuaSocketTest, SocketInATimer) {
  FakeUpstream up;
  up.setDefault(Behaviour::closing(200, "from timer"));
  Gateway gw;
  ASSERT_TRUE(startWith(gw, R"(
    local done
    ngx.timer.at(0, function()
)" + connectAndGet(up.port()) + R"(
        done = sock:receive("*a"):sub(-10)
    end)
    while not done do ngx.sleep(0.01) end
    ngx.say(done)
  )"));
  EXPECT_EQ(httpGet(gw.port(), "/t").body, "from timer\n");
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

// The client leaves while the cosocket waits in receive: the wait is
// cancelled and the peer sees its connection closed.
TEST(LuaSocketTest, ClientLeavingWhileACosocketWaitsClosesTheUpstreamConnection) {
  expectClientLeavingClosesThePeer(R"(
    sock:send("hello\n")
    ngx.log(ngx.WARN, "cosocket waiting")
    sock:receive()
  )");
}

// A socket that only its waiting call holds (no Lua variable does) lives
// through full collections until the call returns: the wait keeps it.
TEST(LuaSocketTest, ASocketOnlyItsWaitingCallHoldsSurvivesCollections) {
  ScriptedPeer peer([](int fd) {
    readLine(fd);
    std::this_thread::sleep_for(Ms(200));  // while the collections run
    writeAll(fd, "late\n");
    char ch;
    while (::read(fd, &ch, 1) > 0) {
    }
  });
  Gateway gw;
  ASSERT_TRUE(startWith(gw, R"(
    local port = )" + std::to_string(peer.port()) + R"(
    local collector = ngx.thread.spawn(function()
        for _ = 1, 5 do
            collectgarbage()
            collectgarbage()
            ngx.sleep(0.02)
        end
    end)
    local function read()
        local s = assert(ngx.socket.connect("127.0.0.1", port))
        s:send("go\n")
        return s:receive()  -- a tail call: only receive's own frame holds s
    end
    ngx.say(read())
    ngx.thread.wait(collector)
  )"));
  EXPECT_EQ(httpGet(gw.port(), "/t").body, "late\n");
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

// A socket the handler leaves open is closed when its request ends.
TEST(LuaSocketTest, TheEndOfTheRequestClosesItsSockets) {
  std::atomic<int> peer_saw_close{0};
  ScriptedPeer peer(readUntilClose(&peer_saw_close));
  Gateway gw;
  ASSERT_TRUE(startWith(gw, connectTo(peer.port()) + R"(
    ngx.say("left open")
  )"));
  EXPECT_EQ(httpGet(gw.port(), "/t").body, "left open\n");
  EXPECT_TRUE(waitFor([&] { return peer_saw_close.load() == 1; }));
  EXPECT_EQ(gw.stop(), 0);
}

// A request's live sockets leave its list in any order (closed, parked)
// and the end of the request closes exactly the ones still open.
TEST(LuaSocketTest, TheEndOfTheRequestClosesOnlyTheSocketsStillOpen) {
  std::atomic<int> peer_saw_close{0};
  ScriptedPeer peer(readUntilClose(&peer_saw_close));
  Gateway gw;
  ASSERT_TRUE(startWith(gw, R"(
    local port = )" + std::to_string(peer.port()) + R"(
    if ngx.var.arg_again then
        local a, b = ngx.socket.tcp(), ngx.socket.tcp()
        assert(a:connect("127.0.0.1", port))
        assert(b:connect("127.0.0.1", port))
        ngx.say(a:getreusedtimes(), b:getreusedtimes())
        assert(a:setkeepalive(10000, 8))
        assert(b:setkeepalive(10000, 8))
        return
    end
    local socks = {}
    for i = 1, 5 do
        socks[i] = ngx.socket.tcp()
        assert(socks[i]:connect("127.0.0.1", port))
    end
    -- The list is 5 4 3 2 1: 3 from its middle, then 2 (next to where 3
    -- was) and 5 (the head).
    assert(socks[3]:close())
    assert(socks[2]:setkeepalive(10000, 8))
    assert(socks[5]:setkeepalive(10000, 8))
    ngx.say("open: 1, 4")
  )"));
  EXPECT_EQ(httpGet(gw.port(), "/t").body, "open: 1, 4\n");
  EXPECT_TRUE(waitFor([&] { return peer_saw_close.load() >= 3; }));  // 3 closed, 1 and 4 at the end
  // The parked ones, still open, serve the next request.
  EXPECT_EQ(httpGet(gw.port(), "/t?again=1").body, "11\n");
  EXPECT_EQ(peer_saw_close.load(), 3);
  EXPECT_EQ(peer.accepted(), 5);
  // The two parked connections stay open in the pool until the stop.
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(waitFor([&] { return peer_saw_close.load() == 5; }));
}

// A socket parked with setkeepalive and connected again (it takes its own
// connection back from the pool) is the request's again: left open, it is
// closed when the request ends.
TEST(LuaSocketTest, ASocketConnectedAgainAfterSetkeepaliveIsClosedWithItsRequest) {
  std::atomic<int> peer_saw_close{0};
  ScriptedPeer peer(readUntilClose(&peer_saw_close));
  Gateway gw;
  ASSERT_TRUE(startWith(gw, connectTo(peer.port()) + R"(
    assert(sock:setkeepalive(10000, 4))
    assert(sock:connect("127.0.0.1", )" + std::to_string(peer.port()) + R"())
    ngx.say("reused ", sock:getreusedtimes())
  )"));
  EXPECT_EQ(httpGet(gw.port(), "/t").body, "reused 1\n");
  EXPECT_TRUE(waitFor([&] { return peer_saw_close.load() == 1; }));
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

// A connected socket that the handler drops is closed by the GC, while its
// request still runs (the peer sees the close before the client leaves,
// which ends the request).
TEST(LuaSocketTest, ACollectedSocketClosesItsConnection) {
  std::atomic<int> peer_saw_close{0};
  ScriptedPeer peer(readUntilClose(&peer_saw_close));
  Gateway gw;
  // Opened in a function of its own: a dead temporary of the running frame
  // would keep the socket reachable.
  ASSERT_TRUE(startWith(gw, "local function open()\n" + connectTo(peer.port()) + R"(
    end
    open()
    collectgarbage()
    collectgarbage()
    ngx.sleep(60)
  )", "lua_check_client_abort on;"));
  {
    RawClient c(gw.port());
    c.send("GET /t HTTP/1.1\r\nHost: a\r\n\r\n");
    EXPECT_TRUE(waitFor([&] { return peer_saw_close.load() == 1; }));
  }
  EXPECT_EQ(gw.stop(), 0);
}

// log_by_lua* may use cosockets (beyond OpenResty): the handler waits
// detached from the client, whose keepalive connection goes on to its
// next request meanwhile; after the wait it still reads its request
// (variables, headers, ngx.ctx of the earlier phases).
TEST(LuaSocketTest, LogPhaseCosocketWaitsDetachedFromTheClient) {
  std::atomic<bool> release{false};
  std::atomic<int> lines{0};
  ScriptedPeer peer([&](int fd) {
    std::string line = readLine(fd);
    lines++;
    waitFor([&] { return release.load(); });
    writeAll(fd, "ack " + line + "\n");
  });
  Gateway gw;
  gw.setSimpleConf(R"(location /t {
      content_by_lua_block { ngx.ctx.who = "content" ngx.say("answered") }
      log_by_lua_block {
)" + connectTo(peer.port()) + R"(
          sock:send({ngx.var.uri, " ", ngx.var.arg_n, "\n"})
          local ack, err = sock:receive()
          ngx.log(ngx.WARN, "logged: ", ack, " ", ngx.var.request_uri, " ", ngx.ctx.who, " ",
                  ngx.req.get_headers()["x-tag"], " ", ngx.var.remote_addr, " ", ngx.status)
          error("after the wait")
      }
    })");
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  c.send("GET /t?n=1 HTTP/1.1\r\nHost: a\r\nX-Tag: first\r\n\r\n");
  EXPECT_EQ(c.readResponse().body, "answered\n");
  // The first log handler waits for its peer; the connection serves the next request.
  ASSERT_TRUE(waitFor([&] { return lines.load() == 1; }));
  c.send("GET /t?n=2 HTTP/1.1\r\nHost: a\r\nX-Tag: second\r\n\r\n");
  EXPECT_EQ(c.readResponse().body, "answered\n");
  ASSERT_TRUE(waitFor([&] { return lines.load() == 2; }));
  c.close();
  release = true;
  ASSERT_TRUE(gw.waitLog("logged: ack /t 2 /t?n=2 content second 127.0.0.1 200"));
  ASSERT_TRUE(gw.waitLog("logged: ack /t 1 /t?n=1 content first 127.0.0.1 200"));
  EXPECT_TRUE(gw.waitLog("failed to run log_by_lua*: log_by_lua"));
  EXPECT_EQ(httpGet(gw.port(), "/none").status, 404);  // the worker lives on
  EXPECT_EQ(gw.stop(), 0);
}

// A graceful stop waits for a log handler that still waits (here until
// its read timeout).
TEST(LuaSocketTest, GracefulStopWaitsForAWaitingLogHandler) {
  std::atomic<int> peer_saw_close{0};
  ScriptedPeer peer(readUntilClose(&peer_saw_close));
  Gateway gw;
  gw.setSimpleConf(R"(location /t {
      return 204;
      log_by_lua_block {
)" + connectTo(peer.port()) + R"(
          sock:settimeout(300)
          ngx.log(ngx.WARN, "log waiting")
          ngx.log(ngx.WARN, "log read: ", select(2, sock:receive()))
      }
    })");
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/t").status, 204);
  ASSERT_TRUE(gw.waitLog("log waiting"));
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_NE(gw.errorLog().find("log read: timeout"), std::string::npos) << gw.errorLog();
  // The peer's thread sees the close on its own schedule.
  EXPECT_TRUE(waitFor([&] { return peer_saw_close.load() == 1; }));
}

// balancer_by_lua* may use cosockets (beyond OpenResty) within
// lua_balancer_timeout: here it asks a registry peer for the upstream's
// port (on a pooled connection), and a registry that stalls costs a 500.
TEST(LuaSocketTest, BalancerCosocketsWithinTheirTimeBudget) {
  FakeUpstream up;
  std::atomic<int> registry_conns{0};
  std::atomic<bool> stall{false};
  std::atomic<int> stalled_closed{0};
  ScriptedPeer registry([&](int fd) {
    registry_conns++;
    for (;;) {
      std::string name = readLine(fd);
      if (name.empty()) return;
      if (name == "stall") {
        char b;
        while (::read(fd, &b, 1) > 0) {
        }
        stalled_closed++;
        return;
      }
      writeAll(fd, std::to_string(up.port()) + "\n");
    }
  });
  Gateway gw;
  gw.setSimpleConf("location / { lua_balancer_timeout 200ms; proxy_pass http://backend; }",
                   R"(upstream backend {
      server 0.0.0.1;
      balancer_by_lua_block {
)" + connectTo(registry.port()) + R"(
          sock:send((ngx.var.arg_stall and "stall" or "backend") .. "\n")
          local port, err = sock:receive()
          if not port then error("registry: " .. err) end
          ngx.ctx.reused = sock:getreusedtimes()
          sock:setkeepalive()
          assert(require("ngx.balancer").set_current_peer("127.0.0.1", tonumber(port)))
      }
    })");
  ASSERT_TRUE(gw.start());
  for (int i = 0; i < 3; i++) EXPECT_EQ(httpGet(gw.port(), "/").status, 200) << gw.errorLog();
  EXPECT_EQ(registry_conns.load(), 1);  // the pool served the later requests
  EXPECT_EQ(up.requestCount(), 3u);
  EXPECT_EQ(httpGet(gw.port(), "/?stall=1").status, 500);
  EXPECT_TRUE(gw.waitLog("balancer_by_lua* took longer than lua_balancer_timeout (200ms)"));
  EXPECT_TRUE(waitFor([&] { return stalled_closed.load() == 1; }));  // cancelled: its socket closed
  EXPECT_EQ(httpGet(gw.port(), "/").status, 200);
  EXPECT_EQ(gw.stop(), 0);
}

// The client leaving while balancer_by_lua* waits cancels it.
TEST(LuaSocketTest, ClientLeavingWhileTheBalancerWaitsCancelsIt) {
  std::atomic<int> peer_saw_close{0};
  ScriptedPeer peer(readUntilClose(&peer_saw_close));
  Gateway gw;
  gw.setSimpleConf("location / { lua_balancer_timeout 10s; proxy_pass http://backend; }\n"
                   "location = /alive { return 204; }",
                   R"(upstream backend {
      server 0.0.0.1;
      balancer_by_lua_block {
)" + connectTo(peer.port()) + R"(
          ngx.log(ngx.WARN, "balancer waiting")
          sock:receive()
      }
    })");
  ASSERT_TRUE(gw.start());
  {
    RawClient c(gw.port());
    c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_TRUE(gw.waitLog("balancer waiting"));
  }
  EXPECT_TRUE(waitFor([&] { return peer_saw_close.load() == 1; }));
  EXPECT_EQ(httpGet(gw.port(), "/alive").status, 204);  // the worker lives on
  EXPECT_EQ(gw.stop(), 0);
}

// A peer that reads nothing: a large send fills the buffers and times out,
// which closes the socket (OpenResty).
TEST(LuaSocketTest, SendTimeoutOnAPeerThatDoesNotRead) {
  std::atomic<bool> done{false};
  ScriptedPeer peer([&](int) { waitFor([&] { return done.load(); }); });
  Gateway gw;
  ASSERT_TRUE(startWith(gw, connectTo(peer.port()) + R"(
    sock:setoption("sndbuf", 65536)
    sock:settimeouts(1000, 100, 1000)
    local t0 = ngx.now()
    ngx.say(sock:send(string.rep("x", 64 * 1024 * 1024)))
    ngx.say(ngx.now() - t0 < 5)
    ngx.say(sock:send("more"))
  )"));
  EXPECT_EQ(httpGet(gw.port(), "/t").body, "niltimeout\ntrue\nnilclosed\n");
  done = true;
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_NE(gw.errorLog().find("lua tcp socket write timed out, client: 127.0.0.1"), std::string::npos);
  EXPECT_TRUE(gw.seriousLogLinesBut({"write timed out"}).empty()) << gw.errorLog();
}

// Bytes (and the close) that come while no receive waits are kept for
// the next one; reading pauses past 64 KiB unread and resumes for it.
TEST(LuaSocketTest, BytesThatComeWhileNoReceiveWaitsAreKept) {
  const std::string big(300 * 1024, 'b');
  ScriptedPeer peer([&](int fd) {
    readLine(fd);
    writeAll(fd, big + "\nend\n");
  });
  Gateway gw;
  ASSERT_TRUE(startWith(gw, connectTo(peer.port()) + R"(
    sock:send("go\n")
    ngx.sleep(0.2)  -- everything arrives (and the peer closes) meanwhile
    local data = sock:receive()
    ngx.say(#data, " ", sock:receive(), " ", select(2, sock:receive()))
  )"));
  EXPECT_EQ(httpGet(gw.port(), "/t").body, std::to_string(big.size()) + " end closed\n");
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

// connect's pool_size and backlog: at most pool_size connections open for
// the pool; further connects wait (up to backlog of them) for one to be
// parked or closed, or fail.
TEST(LuaSocketTest, PoolSizeAndBacklogLimitTheOpenConnections) {
  std::atomic<int> accepted{0};
  ScriptedPeer peer([&](int fd) {
    accepted++;
    for (;;) {
      std::string line = readLine(fd);
      if (line.empty()) return;
      writeAll(fd, line + "\n");
    }
  });
  Gateway gw;
  ASSERT_TRUE(startWith(gw, R"(
    local opts = {pool = "limited", pool_size = 1, backlog = 1}
    local function use(name, hold)
        local sock = ngx.socket.tcp()
        sock:settimeouts(hold and 2000 or 100, 1000, 1000)
        local ok, err = sock:connect("127.0.0.1", )" + std::to_string(peer.port()) + R"(, opts)
        if not ok then return name .. ": " .. err end
        sock:send(name .. "\n")
        local echo = sock:receive()
        if hold then ngx.sleep(0.05) end
        local reused = sock:getreusedtimes()
        sock:setkeepalive()
        return name .. ": " .. echo .. " reused " .. reused
    end
    local a = ngx.thread.spawn(use, "a", true)
    local b = ngx.thread.spawn(use, "b", true)   -- waits for a's connection
    local c = ngx.thread.spawn(use, "c", true)   -- the backlog is full
    for _, t in ipairs({a, b, c}) do ngx.say(select(2, ngx.thread.wait(t))) end
    -- A connection held open: a waiting connect times out.
    local held = ngx.socket.tcp()
    assert(held:connect("127.0.0.1", )" + std::to_string(peer.port()) + R"(, opts))
    ngx.say(use("d", false))
    held:close()
    ngx.say(use("e", false))
    ngx.say(pcall(ngx.socket.tcp().connect, ngx.socket.tcp(), "127.0.0.1", 1, {pool_size = 0}))
    ngx.say(pcall(ngx.socket.tcp().connect, ngx.socket.tcp(), "127.0.0.1", 1, {backlog = -1}))
  )"));
  std::string body = httpGet(gw.port(), "/t").body;
  EXPECT_NE(body.find("a: a reused 0\nb: b reused 1\nc: too many waiting connect operations\n"
                      "d: timeout\ne: e reused 0\nfalse"),
            std::string::npos)
      << body;
  EXPECT_NE(body.find("bad \"pool_size\" option value: 0"), std::string::npos) << body;
  EXPECT_NE(body.find("bad \"backlog\" option value: -1"), std::string::npos) << body;
  EXPECT_EQ(accepted.load(), 2);  // a (reused by b, then by held), e
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_NE(gw.errorLog().find("lua tcp socket connect timed out, when connecting to 127.0.0.1:"), std::string::npos);
  EXPECT_TRUE(gw.seriousLogLinesBut({"connect timed out"}).empty()) << gw.errorLog();
}

// A listener whose backlog is full drops further SYNs (Linux), so a
// connect to it waits until the connect timeout.
TEST(LuaSocketTest, ConnectTimeout) {
  int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  ASSERT_EQ(::listen(lfd, 0), 0);
  std::vector<int> fillers;
  for (int i = 0; i < 4; i++) {
    int f = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ::connect(f, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    fillers.push_back(f);
  }
  Gateway gw;
  ASSERT_TRUE(startWith(gw, R"(
    local sock = ngx.socket.tcp()
    sock:settimeouts(150, 1000, 1000)
    local t0 = ngx.now()
    ngx.say(sock:connect("127.0.0.1", )" + std::to_string(ntohs(a.sin_port)) + R"())
    ngx.say(ngx.now() - t0 < 1)
  )"));
  EXPECT_EQ(httpGet(gw.port(), "/t").body, "niltimeout\ntrue\n");
  EXPECT_EQ(gw.stop(), 0);
  for (int f : fillers) ::close(f);
  ::close(lfd);
}

// 1,000 light threads of one request, each with a cosocket to a second
// server of the same worker that answers after a short sleep.
TEST(LuaSocketTest, AThousandConcurrentCosocketsInOneWorker) {
  Gateway gw;
  gw.setConf(R"(
worker_processes 1;
worker_rlimit_nofile 8192;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:{PORT2};
    location /peer { content_by_lua_block { ngx.sleep(0.05) ngx.header["Content-Length"] = 4 ngx.print("pong") } }
  }
  server {
    listen 127.0.0.1:{PORT};
    location /t {
      content_by_lua_block {
        local ok, running, max = 0, 0, 0
        local threads = {}
        for i = 1, 1000 do
          threads[i] = ngx.thread.spawn(function()
            local sock = ngx.socket.tcp()
            assert(sock:connect("127.0.0.1", {PORT2}))
            running = running + 1
            if running > max then max = running end
            sock:send("GET /peer HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            local all = sock:receive("*a")
            running = running - 1
            if all and all:sub(-4) == "pong" then ok = ok + 1 end
          end)
        end
        for i = 1, 1000 do ngx.thread.wait(threads[i]) end
        ngx.say(ok, " ", max > 500)
      }
    }
  }
}
)");
  ASSERT_TRUE(gw.start()) << gw.errorLog();
  RawClient c(gw.port());
  c.send("GET /t HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
  Response r = c.readResponse(Ms(20000));
  EXPECT_EQ(r.body, "1000 true\n");
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

}  // namespace
}  // namespace tidegate::test
