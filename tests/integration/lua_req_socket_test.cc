// ngx.req.socket(): the body reader fed in pieces (receive, "*l",
// receiveuntil split at every byte offset, reading past the end, its
// errors) and the raw socket (a line protocol after a 101, full duplex
// with two light threads, the client leaving while a read waits, the
// request ending while a read waits, a read timeout).
#include <gtest/gtest.h>
#include <string>
#include <thread>

#include "harness.h"

namespace tidegate::test {
namespace {

const char kConf[] = R"(
    location = /ping { return 200 "pong"; }
    location /lines {
        content_by_lua_block {
            local sock = assert(ngx.req.socket())
            local line = sock:receive()
            local five = sock:receive(5)
            local rest, err, partial = sock:receive(100)
            ngx.say(line, "|", five, "|", tostring(rest), "|", err, "|", partial)
            local again, err2, partial2 = sock:receive(1)
            ngx.say(tostring(again), "|", err2, "|", partial2)
        }
    }
    location /multi {
        content_by_lua_block {
            local sock = assert(ngx.req.socket())
            local size = tonumber(ngx.var.arg_size)
            local to_boundary = sock:receiveuntil("\r\n--b")
            local out = {}
            while true do
                local data, err
                if size then
                    local parts = {}
                    while true do
                        local piece, e = to_boundary(size)
                        if not piece then err = e break end
                        parts[#parts + 1] = piece
                    end
                    data = not err and table.concat(parts) or nil
                else
                    data, err = to_boundary()
                end
                if not data then out[#out + 1] = "err:" .. err break end
                out[#out + 1] = "[" .. data .. "]"
                if sock:receive(2) == "--" then out[#out + 1] = "end" break end
            end
            ngx.say(table.concat(out, ","))
        }
    }
    location = /go { content_by_lua_block { ngx.shared.flags:set("go", true) } }
    location /partial {
        content_by_lua_block {
            local sock = assert(ngx.req.socket())
            local two = sock:receive(2)
            while not ngx.shared.flags:get("go") do ngx.sleep(0.005) end
            ngx.shared.flags:delete("go")
            ngx.say(two)
        }
    }
    location /first5 {
        content_by_lua_block {
            local sock = assert(ngx.req.socket())
            ngx.print(sock:receive(5))
        }
    }
    location /errors {
        content_by_lua_block {
            local what = ngx.var.arg_what
            if what == "read" then ngx.req.read_body() end
            local sock, err = ngx.req.socket()
            if what == "twice" then sock, err = ngx.req.socket() end
            ngx.say(tostring(sock), " ", err)
        }
    }
    location /echo {
        content_by_lua_block {
            ngx.status = 101
            ngx.header["Upgrade"] = "lines"
            ngx.send_headers()
            ngx.flush(true)
            local sock = assert(ngx.req.socket(true))
            while true do
                local line, err = sock:receive()
                if not line then
                    ngx.log(ngx.WARN, "echo ended: ", err)
                    return
                end
                if line == "quit" then
                    sock:send("bye\n")
                    return
                end
                sock:send({"echo: ", line, "\n"})
            end
        }
    }
    location /duplex {
        content_by_lua_block {
            local sock = assert(ngx.req.socket(true))
            sock:send("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            local writer = ngx.thread.spawn(function()
                for i = 1, 5 do
                    assert(sock:send("tick " .. i .. "\n"))
                    ngx.sleep(0.01)
                end
            end)
            local line, err = sock:receive()
            ngx.thread.wait(writer)
            sock:send("got " .. tostring(line) .. " " .. tostring(err) .. "\n")
        }
    }
    location /leave {
        content_by_lua_block {
            local sock = assert(ngx.req.socket(true))
            ngx.log(ngx.WARN, "raw read waits")
            local data, err, partial = sock:receive()
            ngx.log(ngx.WARN, "raw read ended: ", tostring(data), " ", err, " [", partial, "]")
        }
    }
    location /exit {
        content_by_lua_block {
            local sock = assert(ngx.req.socket(true))
            ngx.thread.spawn(function()
                sock:receive()
                ngx.log(ngx.ERR, "the reader should never wake")
            end)
            sock:send("bye\n")
            ngx.exit(200)
        }
    }
    location /timeout {
        content_by_lua_block {
            local sock = assert(ngx.req.socket(true))
            sock:settimeout(100)
            local data, err, partial = sock:receive(10)
            sock:send("first: " .. tostring(data) .. " " .. err .. " [" .. partial .. "]\n")
            sock:settimeout(5000)
            sock:send("then: " .. tostring(sock:receive(3)) .. "\n")
        }
    }
    location /rawbody {
        content_by_lua_block {
            local sock = assert(ngx.req.socket(true))
            local body = sock:receive(10)
            local extra = sock:receive()
            sock:send("HTTP/1.0 200 OK\r\n\r\n" .. body .. "|" .. extra)
        }
    }
    location /big {
        content_by_lua_block {
            local raw = ngx.var.arg_raw
            local sock = assert(ngx.req.socket(raw and true or nil))
            local data, err = sock:receive(raw and 1048576 or "*a")
            local out = tostring(data and #data) .. " " .. tostring(err) .. " " .. ngx.md5(data or "")
            if raw then
                sock:send("HTTP/1.0 200 OK\r\n\r\n" .. out)
            else
                ngx.print(out)
            end
        }
    }
    location /slow {
        content_by_lua_block {
            local sock = assert(ngx.req.socket(true))
            while not ngx.shared.flags:get("go") do ngx.sleep(0.005) end
            ngx.shared.flags:delete("go")
            local parts = {}
            for i = 1, 16 do parts[i] = assert(sock:receive(65536)) end
            local data = table.concat(parts)
            sock:send("HTTP/1.0 200 OK\r\n\r\n" .. #data .. " " .. ngx.md5(data))
        }
    }
    location /rawerrors {
        content_by_lua_block {
            if ngx.var.arg_what == "pending" then
                ngx.print("x")
                local sock, err = ngx.req.socket(true)
                ngx.say(" ", tostring(sock), " ", err)
                return
            end
            local sock = assert(ngx.req.socket(true))
            local again, err = ngx.req.socket(true)
            sock:send("HTTP/1.0 200 OK\r\n\r\n" .. tostring(again) .. " " .. err)
        }
    }
)";

class LuaReqSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    gw_.setSimpleConf(kConf, "lua_shared_dict flags 1m;");
    ASSERT_TRUE(gw_.start());
    ASSERT_TRUE(ping_.connect(gw_.port()));
  }
  void TearDown() override {
    ping_.close();
    raw_.close();
    EXPECT_TRUE(gw_.seriousLogLines().empty()) << gw_.errorLog();
    gw_.stop();
  }

  // Two request/response round trips through the one worker: the bytes
  // sent before this were read by it (its loop turned since they came).
  void barrier() {
    for (int i = 0; i < 2; i++) {
      ASSERT_TRUE(ping_.send("GET /ping HTTP/1.1\r\nHost: a\r\n\r\n"));
      ASSERT_EQ(ping_.readResponse().body, "pong");
    }
  }

  // POSTs `body` to `path` in pieces, split before each offset in `cuts`
  // (a barrier after each piece); returns the response body.
  std::string postInPieces(const std::string& path, const std::string& body, const std::vector<size_t>& cuts) {
    RawClient c(gw_.port());
    c.send("POST " + path + " HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n");
    size_t from = 0;
    for (size_t cut : cuts) {
      c.send(body.substr(from, cut - from));
      barrier();
      from = cut;
    }
    c.send(body.substr(from));
    Response r = c.readResponse();
    EXPECT_EQ(r.status, 200);
    return r.body;
  }

  // A raw-socket conversation: GET `path`, with `behind` in the same write.
  RawClient& talk(const std::string& path, const std::string& behind = "") {
    raw_.connect(gw_.port());
    raw_.send("GET " + path + " HTTP/1.1\r\nHost: a\r\n\r\n" + behind);
    return raw_;
  }

  Gateway gw_;
  RawClient ping_;
  RawClient raw_;
};

TEST_F(LuaReqSocketTest, BodyReaderReadsLinesAndCountsAsItArrivesThenClosed) {
  std::string body = "first line\r\nabcdeXYZ";
  EXPECT_EQ(postInPieces("/lines", body, {3, 12, 15}), "first line|abcde|nil|closed|XYZ\nnil|closed|\n");
  EXPECT_EQ(postInPieces("/lines", body, {}), "first line|abcde|nil|closed|XYZ\nnil|closed|\n");
}

TEST_F(LuaReqSocketTest, ReceiveUntilOverAMultipartBodySplitAtEveryByte) {
  const std::string body = "pre\r\n--b\r\npart one\r\n--b\r\npart\r\ntwo\r\r\n--b--\r\n";
  const std::string want = "[pre],[part one],[part\r\ntwo\r],end\n";
  for (size_t cut = 0; cut <= body.size(); cut++) {
    SCOPED_TRACE("split at " + std::to_string(cut));
    EXPECT_EQ(postInPieces("/multi", body, {cut}), want);
    EXPECT_EQ(postInPieces("/multi?size=3", body, {cut}), want);
  }
}

TEST_F(LuaReqSocketTest, PipelinedBodiesAreReadOneRequestEach) {
  RawClient c(gw_.port());
  c.send("POST /lines HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nl1\nabcdeP"
         "POST /lines HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\nl2\nvwxyz");
  Response r1 = c.readResponse();
  EXPECT_EQ(r1.body, "l1|abcde|nil|closed|P\nnil|closed|\n");
  Response r2 = c.readResponse();
  EXPECT_EQ(r2.body, "l2|vwxyz|nil|closed|\nnil|closed|\n");
}

// A handler that read part of a body which then arrived whole: the rest
// is dropped with the request, never read by the next one.
TEST_F(LuaReqSocketTest, UnreadRestOfAStreamedBodyStaysWithItsRequest) {
  raw_.connect(gw_.port());
  raw_.send("POST /partial HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nab");
  barrier();
  raw_.send("cdef");
  barrier();
  EXPECT_EQ(httpGet(gw_.port(), "/go").status, 200);
  Response r1 = raw_.readResponse();
  EXPECT_EQ(r1.body, "ab\n");
  EXPECT_EQ(r1.header("connection"), "keep-alive");
  raw_.send("POST /lines HTTP/1.1\r\nHost: a\r\nContent-Length: 8\r\n\r\n");
  barrier();
  raw_.send("l2\nvwxyz");
  EXPECT_EQ(raw_.readResponse().body, "l2|vwxyz|nil|closed|\nnil|closed|\n");
}

// The handler ends on bytes that come with the end of the body, in one
// read: one response, and the request is not run again for that end.
TEST_F(LuaReqSocketTest, HandlerEndingOnTheLastPieceAnswersOnce) {
  raw_.connect(gw_.port());
  raw_.send("POST /first5 HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
  barrier();
  raw_.send("defghij");
  std::string all = raw_.readUntilClose();
  EXPECT_EQ(all.substr(all.size() - 9), "\r\n\r\nabcde") << all;
  EXPECT_EQ(all.find("HTTP/1.1", 1), std::string::npos) << all;
  // Logged once: the request ran once.
  EXPECT_TRUE(waitFor([&] { return gw_.accessLog().find("POST /first5") != std::string::npos; }));
  std::string log = gw_.accessLog();
  EXPECT_EQ(log.find("POST /first5", log.find("POST /first5") + 1), std::string::npos) << log;
}

TEST_F(LuaReqSocketTest, BodyReaderErrors) {
  auto post = [&](const std::string& path, const std::string& extra) {
    RawClient c(gw_.port());
    c.send("POST " + path + " HTTP/1.1\r\nHost: a\r\nConnection: close\r\n" + extra);
    return c.readResponse().body;
  };
  EXPECT_EQ(post("/errors?what=read", "Content-Length: 3\r\n\r\nabc"), "nil request body already exists\n");
  EXPECT_EQ(post("/errors?what=twice", "Content-Length: 3\r\n\r\nabc"), "nil request body already exists\n");
  EXPECT_EQ(post("/errors", "Content-Length: 0\r\n\r\n"), "nil no body\n");
  EXPECT_EQ(post("/errors", "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
            "nil chunked request bodies not supported yet\n");
  EXPECT_EQ(httpGet(gw_.port(), "/errors").body, "nil no body\n");
}

TEST_F(LuaReqSocketTest, RawSocketEchoesALineProtocolAfterA101) {
  // The first line comes right behind the request, in the same packet.
  RawClient& c = talk("/echo", "hello\n");
  std::string got = c.readUntil("echo: hello\n");
  EXPECT_EQ(got.rfind("HTTP/1.1 101 Switching Protocols\r\n", 0), 0u) << got;
  EXPECT_NE(got.find("\r\nUpgrade: lines\r\n"), std::string::npos) << got;
  EXPECT_NE(got.find("\r\nConnection: upgrade\r\n\r\necho: hello\n"), std::string::npos) << got;
  EXPECT_EQ(got.find("Content-Type"), std::string::npos) << got;
  for (std::string line : {"two", "", "a longer line"}) {
    c.send(line + "\r\n");
    EXPECT_EQ(c.readUntil("\n"), "echo: " + line + "\n");
  }
  c.send("quit\n");
  EXPECT_EQ(c.readUntilClose(), "bye\n");
  EXPECT_EQ(httpGet(gw_.port(), "/ping").body, "pong");
}

TEST_F(LuaReqSocketTest, RawSocketIsFullDuplex) {
  RawClient& c = talk("/duplex");
  // Every tick is sent while the handler's receive waits.
  EXPECT_EQ(c.readUntil("tick 5\n"), "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\ntick 1\ntick 2\ntick 3\ntick 4\ntick 5\n");
  c.send("ping\n");
  EXPECT_EQ(c.readUntilClose(), "got ping nil\n");
}

TEST_F(LuaReqSocketTest, ClientLeavingWakesTheWaitingRawRead) {
  talk("/leave", "abc");
  ASSERT_TRUE(gw_.waitLog("raw read waits"));
  raw_.close();
  EXPECT_TRUE(gw_.waitLog("raw read ended: nil closed [abc]"));
  EXPECT_EQ(httpGet(gw_.port(), "/ping").body, "pong");
}

TEST_F(LuaReqSocketTest, RequestEndingWhileARawReadWaitsCleansUp) {
  for (int i = 0; i < 3; i++) EXPECT_EQ(talk("/exit").readUntilClose(), "bye\n");
  EXPECT_EQ(httpGet(gw_.port(), "/ping").body, "pong");
}

TEST_F(LuaReqSocketTest, RawReadTimesOutAndTheSocketStaysUsable) {
  RawClient& c = talk("/timeout", "abc");
  std::string first = c.readUntil("\n");  // the timeout came before "xyz" was sent
  c.send("xyz");
  EXPECT_EQ(first + c.readUntilClose(), "first: nil timeout [abc]\nthen: xyz\n");
}

// A body nobody read comes first on the raw socket, the part already
// received and the part still on its way, then what follows it.
TEST_F(LuaReqSocketTest, RawSocketReadsAnUnreadBody) {
  const std::string head = "POST /rawbody HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n";
  const std::string want = "HTTP/1.0 200 OK\r\n\r\n0123456789|extra";
  raw_.connect(gw_.port());
  raw_.send(head + "0123456789extra\n");
  EXPECT_EQ(raw_.readUntilClose(), want);
  raw_.connect(gw_.port());
  raw_.send(head + "0123");
  barrier();
  raw_.send("456789extra\n");
  EXPECT_EQ(raw_.readUntilClose(), want);
}

// A read that wants more than the 64 KiB at which the client is paused:
// the bytes keep coming for it, through the body reader and the raw socket.
// Then a raw client that sends while the handler reads nothing.
TEST_F(LuaReqSocketTest, OneMegabyteReadThroughEitherSocket) {
  std::string mb;
  for (int i = 0; mb.size() < 1048576; i++) mb += std::to_string(i) + ",";
  mb.resize(1048576);
  raw_.connect(gw_.port());
  raw_.send("POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n");
  barrier();
  raw_.send(mb);
  const std::string want = "1048576 nil 7de1ea66d2a996014bbdc418b98e239f";  // the MD5 of `mb`
  EXPECT_EQ(raw_.readResponse(Ms(20000)).body, want);
  raw_.connect(gw_.port());
  raw_.send("GET /big?raw=1 HTTP/1.1\r\nHost: a\r\n\r\n");
  barrier();
  raw_.send(mb);
  EXPECT_EQ(raw_.readUntilClose(Ms(20000)), "HTTP/1.0 200 OK\r\n\r\n" + want);
  // Sent while the handler reads nothing: the client is paused once 64
  // KiB wait (the rest stays in the kernel buffers), then resumed.
  raw_.connect(gw_.port());
  raw_.send("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
  std::thread sender([&] { raw_.send(mb); });
  barrier();
  EXPECT_EQ(httpGet(gw_.port(), "/go").status, 200);
  sender.join();
  EXPECT_EQ(raw_.readUntilClose(Ms(20000)), "HTTP/1.0 200 OK\r\n\r\n1048576 7de1ea66d2a996014bbdc418b98e239f");
}

TEST_F(LuaReqSocketTest, RawSocketErrors) {
  EXPECT_EQ(httpGet(gw_.port(), "/rawerrors?what=pending").body, "x nil pending data to write\n");
  EXPECT_EQ(talk("/rawerrors").readUntilClose(), "HTTP/1.0 200 OK\r\n\r\nnil duplicate call");
}

}  // namespace
}  // namespace tidegate::test
