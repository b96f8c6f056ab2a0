// Debian's unmodified lua-nginx-websocket on ngx.req.socket(true): an echo
// server built with nginx.websocket.server, spoken to by a raw WebSocket
// client here (RFC 6455 handshake and masked frames) and by
// nginx.websocket.client from a content handler and from a timer, which
// connect to the gateway itself.
#include <gtest/gtest.h>
#include <string>

#include "harness.h"

namespace tidegate::test {
namespace {

const char kHttp[] = "lua_shared_dict results 1m;";

// {WS}: ws://127.0.0.1:PORT/ws (filled in once the port is known).
const char kServer[] = R"(
    location = /ws {
        content_by_lua_block {
            local server = require "nginx.websocket.server"
            local wb, err = server:new{timeout = 5000, max_payload_len = 1024}
            if not wb then
                ngx.log(ngx.WARN, "websocket handshake refused: ", err)
                return ngx.exit(400)
            end
            while true do
                local data, typ, err = wb:recv_frame()
                if not data then
                    ngx.log(ngx.WARN, "websocket recv failed: ", err)
                    return
                end
                if typ == "close" then
                    wb:send_close(1000, "bye " .. data)
                    return
                elseif typ == "ping" then
                    wb:send_pong(data)
                elseif typ == "pong" then
                    wb:send_text("got pong: " .. data)
                elseif typ == "text" and data == "ping me" then
                    wb:send_ping("are you there")
                elseif typ == "text" then
                    wb:send_text("echo: " .. data)
                elseif typ == "binary" then
                    wb:send_binary(data)
                end
            end
        }
    }
    location = /client {
        content_by_lua_block {
            local client = require "nginx.websocket.client"
            local wb = client:new{timeout = 5000}
            local ok, err = wb:connect("{WS}")
            if not ok then return ngx.say("connect failed: ", err) end
            assert(wb:send_text("hi"))
            local data, typ = wb:recv_frame()
            ngx.say(typ, ": ", data)
            assert(wb:send_ping("p"))
            data, typ = wb:recv_frame()
            ngx.say(typ, ": ", data)
            assert(wb:send_close(1000, "done"))
            local data, typ, code = wb:recv_frame()
            ngx.say(typ, ": ", data, " ", code)
            ngx.say("close: ", tostring(wb:close()))
        }
    }
    location = /keepalive {
        content_by_lua_block {
            local client = require "nginx.websocket.client"
            local wb = client:new{timeout = 5000}
            assert(wb:connect("{WS}"))
            ngx.say("reused: ", wb.sock:getreusedtimes())
            assert(wb:send_text(ngx.var.arg_text))
            local data = wb:recv_frame()
            ngx.say(data)
            if ngx.var.arg_last then
                wb:send_close()
                local _, typ = wb:recv_frame()
                ngx.say(typ)
            else
                ngx.say("keepalive: ", tostring(wb:set_keepalive()))
            end
        }
    }
    location = /timer {
        content_by_lua_block {
            local ok, err = ngx.timer.at(0, function()
                local client = require "nginx.websocket.client"
                local wb = client:new{timeout = 5000}
                local ok, err = wb:connect("{WS}")
                if not ok then
                    ngx.shared.results:set("timer", "connect failed: " .. err)
                    return
                end
                wb:send_text("from a timer")
                local data = wb:recv_frame()
                wb:send_close()
                local _, typ = wb:recv_frame()
                ngx.shared.results:set("timer", data .. ", then " .. typ)
            end)
            ngx.say(ok and "started" or err)
        }
    }
    location = /result {
        content_by_lua_block { ngx.print(ngx.shared.results:get("timer") or "") }
    }
)";

class LuaWebSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string conf = kServer;
    std::string ws = "ws://127.0.0.1:{PORT}/ws";
    for (size_t at; (at = conf.find("{WS}")) != std::string::npos;) conf.replace(at, 4, ws);
    gw_.setSimpleConf(conf, kHttp);
    ASSERT_TRUE(gw_.start());
  }
  void TearDown() override {
    EXPECT_TRUE(gw_.seriousLogLines().empty()) << gw_.errorLog();
    gw_.stop();
  }
  Gateway gw_;
};

// One frame from a client: FIN, `opcode`, masked with a fixed key
// (RFC 6455 5.3: every client frame is masked). Payloads < 126 bytes.
std::string clientFrame(int opcode, const std::string& payload) {
  const unsigned char key[4] = {0x37, 0xfa, 0x21, 0x3d};
  std::string f;
  f.push_back(static_cast<char>(0x80 | opcode));
  f.push_back(static_cast<char>(0x80 | payload.size()));
  f.append(reinterpret_cast<const char*>(key), 4);
  for (size_t i = 0; i < payload.size(); i++) f.push_back(static_cast<char>(payload[i] ^ key[i % 4]));
  return f;
}

// One unmasked frame as the server sends it.
std::string serverFrame(int opcode, const std::string& payload) {
  return std::string(1, static_cast<char>(0x80 | opcode)) + static_cast<char>(payload.size()) + payload;
}

TEST_F(LuaWebSocketTest, RawClientHandshakeAndMaskedFrames) {
  RawClient c(gw_.port());
  // RFC 6455 1.3's sample key and the accept value it gives.
  c.send("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
  std::string head = c.readUntil("\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 101 Switching Protocols\r\n", 0), 0u) << head;
  EXPECT_NE(head.find("\r\nUpgrade: websocket\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("\r\nConnection: upgrade\r\n"), std::string::npos) << head;
  EXPECT_EQ(head.find("Content-Type"), std::string::npos) << head;
  EXPECT_EQ(head.find("Transfer-Encoding"), std::string::npos) << head;

  // Two frames in one write, then one split across writes.
  c.send(clientFrame(0x1, "hello") + clientFrame(0x9, "p1"));
  std::string want = serverFrame(0x1, "echo: hello") + serverFrame(0xa, "p1");
  EXPECT_EQ(c.readBytes(want.size()), want);
  std::string bin = clientFrame(0x2, std::string("\x00\x01\xff", 3));
  c.send(bin.substr(0, 3));
  c.send(bin.substr(3));
  want = serverFrame(0x2, std::string("\x00\x01\xff", 3));
  EXPECT_EQ(c.readBytes(want.size()), want);

  // The server pings; the client's pong reaches it.
  c.send(clientFrame(0x1, "ping me"));
  want = serverFrame(0x9, "are you there");
  EXPECT_EQ(c.readBytes(want.size()), want);
  c.send(clientFrame(0xa, "here"));
  want = serverFrame(0x1, "got pong: here");
  EXPECT_EQ(c.readBytes(want.size()), want);

  // Close handshake (RFC 6455 5.5.1): code 1000, the server answers and closes.
  c.send(clientFrame(0x8, std::string("\x03\xe8", 2) + "ok"));
  EXPECT_EQ(c.readUntilClose(), serverFrame(0x8, std::string("\x03\xe8", 2) + "bye ok"));
  EXPECT_EQ(httpGet(gw_.port(), "/result").status, 200);  // the worker goes on
}

TEST_F(LuaWebSocketTest, NotAWebSocketRequestIsRefused) {
  EXPECT_EQ(httpGet(gw_.port(), "/ws").status, 400);
  EXPECT_TRUE(gw_.waitLog("websocket handshake refused: bad \"upgrade\" request header: nil"));
}

TEST_F(LuaWebSocketTest, LibraryClientFromAContentHandler) {
  Response r = httpGet(gw_.port(), "/client");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "text: echo: hi\npong: p\nclose: bye done 1000\nclose: 1\n");
}

TEST_F(LuaWebSocketTest, LibraryClientFromATimer) {
  EXPECT_EQ(httpGet(gw_.port(), "/timer").body, "started\n");
  std::string result;
  EXPECT_TRUE(waitFor([&] {
    result = httpGet(gw_.port(), "/result").body;
    return !result.empty();
  }));
  EXPECT_EQ(result, "echo: from a timer, then close");
}

// The server's session stays open between frames, so a client connection
// parked with set_keepalive is taken again (no second handshake) and the
// same server session answers it.
TEST_F(LuaWebSocketTest, LibraryClientKeepaliveReusesTheSession) {
  EXPECT_EQ(httpGet(gw_.port(), "/keepalive?text=one").body, "reused: 0\necho: one\nkeepalive: 1\n");
  EXPECT_EQ(httpGet(gw_.port(), "/keepalive?text=two&last=1").body, "reused: 1\necho: two\nclose\n");
}

}  // namespace
}  // namespace tidegate::test
