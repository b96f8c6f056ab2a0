// ngx.socket.udp against a datagram peer on loopback (udp_peer.h): round
// trips, the read timeout, host names, unix-domain peers, ICMP refusals,
// timers, light threads sharing a socket, and the endpoint closing when
// its request ends or the client leaves while a receive waits.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "harness.h"
#include "udp_peer.h"

namespace tidegate::test {
namespace {

// Echoes every datagram but those starting with "silent".
UdpPeer::Script echo(const std::string& prefix = "") {
  return [prefix](const std::string& d) -> std::optional<std::string> {
    if (d.rfind("silent", 0) == 0) return std::nullopt;
    return prefix + d;
  };
}

// Lua: `sock`, with its peer set.
std::string peerAt(int port, const std::string& host = "127.0.0.1") {
  return "local sock = ngx.socket.udp()\nassert(sock:setpeername(\"" + host + "\", " + std::to_string(port) + "))\n";
}

// Starts a gateway serving `lua` at /t, runs `use` against it, and stops
// it, which must go cleanly.
void withGateway(const std::string& lua, const std::function<void(Gateway&)>& use, const std::string& http_extra = "") {
  Gateway gw;
  gw.setSimpleConf("location /t { content_by_lua_block {\n" + lua + "\n} }", http_extra);
  ASSERT_TRUE(gw.start()) << gw.errorLog();
  use(gw);
  EXPECT_EQ(gw.stop(), 0);
  // Receive timeouts are logged (lua_socket_log_errors): the timeout tests provoke them.
  EXPECT_TRUE(gw.seriousLogLinesBut({"lua udp socket read timed out"}).empty()) << gw.errorLog();
}

// The body of GET /t served by `lua`.
std::string bodyOf(const std::string& lua, const std::string& http_extra = "") {
  std::string body;
  withGateway(lua, [&](Gateway& gw) { body = httpGet(gw.port(), "/t").body; }, http_extra);
  return body;
}

TEST(LuaSocketUdpTest, RoundTripsANestedTableCutsToSizeAndClosesOnce) {
  UdpPeer peer(echo());
  EXPECT_EQ(bodyOf(peerAt(peer.port()) + R"(
    ngx.say(sock:send({"ab", {"cd", {1, 2}}}))
    ngx.say(sock:receive())
    ngx.say(sock:send("hello"))
    ngx.say(sock:receive(2))
    sock:send(string.rep("x", 60000))
    ngx.say(#sock:receive())
    ngx.say(sock:close())
    ngx.say(sock:close())
    ngx.say(sock:send("x"))
  )"), "1\nabcd12\n1\nhe\n60000\n1\nnilclosed\nnilclosed\n");
  EXPECT_EQ(peer.received(), 3);
}

// The conf's lua_socket_read_timeout first, then settimeout's.
TEST(LuaSocketUdpTest, ReceiveTimeoutLeavesTheSocketUsable) {
  UdpPeer peer(echo());
  EXPECT_EQ(bodyOf(peerAt(peer.port()) + R"(
    sock:send("silent")
    local t0 = ngx.now()
    ngx.say(sock:receive())
    ngx.say(ngx.now() - t0 < 2)
    sock:settimeout(50)
    ngx.say(sock:receive())
    sock:settimeout(5000)
    sock:send("again")
    ngx.say(sock:receive())
  )", "lua_socket_read_timeout 100ms;"), "niltimeout\ntrue\nniltimeout\nagain\n");
}

// setpeername with a host name waits for the lookup; calling it again
// re-targets the socket.
TEST(LuaSocketUdpTest, HostNameAndReTargeting) {
  UdpPeer one(echo("one:"));
  UdpPeer two(echo("two:"));
  EXPECT_EQ(bodyOf(peerAt(one.port(), "localhost") + R"(
    sock:send("a")
    ngx.say(sock:receive())
    ngx.say(sock:setpeername("127.0.0.1", )" + std::to_string(two.port()) + R"())
    sock:send("b")
    ngx.say(sock:receive())
  )"), "one:a\n1\ntwo:b\n");
  EXPECT_EQ(one.received(), 1);
  EXPECT_EQ(two.received(), 1);
}

TEST(LuaSocketUdpTest, UnixDomainDatagramPeer) {
  TempDir dir;
  std::string path = dir.path() + "/dgram.sock";
  UdpPeer peer(echo("unix:"), 0, path);
  ASSERT_EQ(peer.port(), -1);
  EXPECT_EQ(bodyOf(R"(
    local sock = ngx.socket.udp()
    ngx.say(sock:setpeername("unix:)" + path + R"("))
    sock:send("hi")
    ngx.say(sock:receive())
  )"), "1\nunix:hi\n");
}

// A datagram to a closed port comes back as ICMP port unreachable, which
// the next receive reports; the socket is still usable.
TEST(LuaSocketUdpTest, RefusedByThePeerAndStillUsable) {
  int closed_port;
  {
    UdpPeer gone(echo());
    closed_port = gone.port();
  }
  EXPECT_EQ(bodyOf(peerAt(closed_port) + R"(
    sock:settimeout(5000)
    sock:send("x")
    ngx.say(sock:receive())
    ngx.say(sock:close())
  )"), "nilconnection refused\n1\n");
}

TEST(LuaSocketUdpTest, SocketInATimer) {
  UdpPeer peer(echo());
  EXPECT_EQ(bodyOf(R"(
    local done
    ngx.timer.at(0, function()
)" + peerAt(peer.port()) + R"(
        sock:send("from timer")
        done = sock:receive()
    end)
    while not done do ngx.sleep(0.01) end
    ngx.say(done)
  )"), "from timer\n");
}

// One light thread waits in receive; another finds the socket busy for
// receive and close, but may send.
TEST(LuaSocketUdpTest, LightThreadsShareASocket) {
  UdpPeer peer(echo());
  EXPECT_EQ(bodyOf(peerAt(peer.port()) + R"(
    local t = ngx.thread.spawn(function() return sock:receive() end)
    ngx.say(sock:receive())
    ngx.say(sock:close())
    ngx.say(sock:send("ping"))
    ngx.say(select(2, ngx.thread.wait(t)))
  )"), "nilsocket busy\nnilsocket busy\n1\nping\n");
}

// 100 light threads, each with a socket of its own waiting at once: every
// datagram reaches the receive of its socket. (100 small datagrams fit in
// the peer's default receive buffer; many more could be dropped.)
TEST(LuaSocketUdpTest, AHundredSocketsWaitingAtOnce) {
  UdpPeer peer(echo());
  EXPECT_EQ(bodyOf(R"(
    local ok, threads = 0, {}
    for i = 1, 100 do
        threads[i] = ngx.thread.spawn(function()
)" + peerAt(peer.port()) + R"(
            sock:send(tostring(i))
            if sock:receive() == tostring(i) then ok = ok + 1 end
        end)
    end
    for i = 1, 100 do ngx.thread.wait(threads[i]) end
    ngx.say(ok)
  )"), "100\n");
}

// How many UDP sockets of this machine are connected to 127.0.0.1:port
// (/proc/net/udp lists "local_address rem_address" as hex "0100007F:PORT").
int udpSocketsConnectedTo(int port) {
  std::ifstream in("/proc/net/udp");
  char want[32];
  std::snprintf(want, sizeof(want), "0100007F:%04X", port);
  std::string line;
  int n = 0;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote;
    fields >> slot >> local >> remote;
    if (remote == want) n++;
  }
  return n;
}

// The worker closes the request's UDP socket once `client` is done, and
// serves the next request.
void expectSocketClosedAfter(Gateway& gw, int peer_port, const std::function<void()>& client) {
  client();
  EXPECT_TRUE(waitFor([&] { return udpSocketsConnectedTo(peer_port) == 0; }));
  EXPECT_EQ(httpGet(gw.port(), "/none").status, 404);
}

TEST(LuaSocketUdpTest, ClientLeavingWhileAReceiveWaitsClosesTheSocket) {
  UdpPeer peer(echo());
  withGateway(peerAt(peer.port()) + R"(
    sock:send("silent")
    ngx.log(ngx.WARN, "udp receive waiting")
    sock:receive()
  )", [&](Gateway& gw) {
    expectSocketClosedAfter(gw, peer.port(), [&] {
      RawClient c(gw.port());
      c.send("GET /t HTTP/1.1\r\nHost: a\r\n\r\n");
      ASSERT_TRUE(gw.waitLog("udp receive waiting"));
      EXPECT_EQ(udpSocketsConnectedTo(peer.port()), 1);
    });
  }, "lua_check_client_abort on;");
}

TEST(LuaSocketUdpTest, TheEndOfTheRequestClosesItsSockets) {
  UdpPeer peer(echo());
  withGateway(peerAt(peer.port()) + R"(
    sock:send("left open")
    ngx.say(sock:receive())
  )", [&](Gateway& gw) {
    expectSocketClosedAfter(gw, peer.port(), [&] { EXPECT_EQ(httpGet(gw.port(), "/t").body, "left open\n"); });
  });
}

}  // namespace
}  // namespace tidegate::test
