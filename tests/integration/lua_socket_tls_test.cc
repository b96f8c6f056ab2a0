// tcpsock:sslhandshake against an in-test TLS echo peer (OpenSSL on a
// blocking socket, one thread per connection), with certificates the test
// makes with the openssl CLI: a CA, a server certificate it signed for
// localhost and test.local, an expired one, a self-signed one. Also a
// plain peer that stalls, one that closes mid-handshake, and a client that
// leaves while a handshake waits.
#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "harness.h"
#include "scripted_peer.h"

namespace tidegate::test {
namespace {

// The certificates, made once for the suite.
class Certs {
 public:
  static const Certs& get() {
    static Certs certs;
    return certs;
  }
  std::string path(const std::string& name) const { return dir_.path() + "/" + name; }
  bool ok() const { return ok_; }

 private:
  Certs() {
    const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string sign = "openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -extfile san.ext";
    dir_.write("san.ext", "subjectAltName=DNS:localhost,DNS:test.local\n");
    std::string cmd = "cd '" + dir_.path() + "' && (" +  //
                      "openssl req -x509 " + key + " -keyout ca.key -out ca.crt -subj /CN=tidegate-test-ca -days 2" +
                      " && openssl req " + key + " -keyout srv.key -out srv.csr -subj /CN=localhost" +  //
                      " && " + sign + " -out srv.crt -days 2" +                                         //
                      " && " + sign + " -out expired.crt -days -1" +                                    //
                      " && openssl req -x509 " + key + " -keyout self.key -out self.crt -subj /CN=localhost -days 2" +
                      ") >/dev/null 2>&1";
    ok_ = std::system(cmd.c_str()) == 0;
  }
  TempDir dir_;
  bool ok_ = false;
};

// Reads one "\n"-terminated line (byte by byte: tests only).
bool tlsReadLine(SSL* ssl, std::string* line) {
  line->clear();
  char ch;
  while (SSL_read(ssl, &ch, 1) == 1) {
    if (ch == '\n') return true;
    *line += ch;
  }
  return false;
}

// One connection of the echo peer: each line comes back; "?" is answered
// with what the handshake was ("sni=NAME reused=0|1 TLSv1.3"); "bye" is
// echoed, then the peer sends close_notify and closes.
void tlsEcho(SSL_CTX* ctx, int fd) {
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  std::string sni;  // as sent (a resumed TLS 1.2 session reports the stored one)
  SSL_set_app_data(ssl, &sni);
  if (SSL_accept(ssl) == 1) {
    for (std::string line; tlsReadLine(ssl, &line);) {
      std::string reply = line + "\n";
      if (line == "?") {
        reply = "sni=" + sni + " reused=" + (SSL_session_reused(ssl) ? "1 " : "0 ") + SSL_get_version(ssl) + "\n";
      }
      SSL_write(ssl, reply.data(), static_cast<int>(reply.size()));
      if (line == "bye") {
        SSL_shutdown(ssl);
        break;
      }
    }
  }
  SSL_free(ssl);
}

// Keeps the SNI the client sent in the string at the connection's app data.
int onServerName(SSL* ssl, int*, void*) {
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name) *static_cast<std::string*>(SSL_get_app_data(ssl)) = name;
  return SSL_TLSEXT_ERR_OK;
}

// A TLS echo peer on a loopback port with the certificate `cert` and
// its key (files of Certs).
class TlsPeer {
 public:
  explicit TlsPeer(const std::string& cert, const std::string& key = "srv.key")
      : ctx_(SSL_CTX_new(TLS_server_method()), SSL_CTX_free), peer_([this](int fd) { tlsEcho(ctx_.get(), fd); }) {
    const Certs& c = Certs::get();
    ok_ = SSL_CTX_use_certificate_chain_file(ctx_.get(), c.path(cert).c_str()) == 1 &&
          SSL_CTX_use_PrivateKey_file(ctx_.get(), c.path(key).c_str(), SSL_FILETYPE_PEM) == 1;
    SSL_CTX_set_session_id_context(ctx_.get(), reinterpret_cast<const unsigned char*>("tg"), 2);
    SSL_CTX_set_tlsext_servername_callback(ctx_.get(), onServerName);
  }
  int port() const { return peer_.port(); }
  int accepted() const { return peer_.accepted(); }
  bool ok() const { return ok_; }

 private:
  std::unique_ptr<SSL_CTX, void (*)(SSL_CTX*)> ctx_;  // outlives the peer's threads
  ScriptedPeer peer_;
  bool ok_ = false;
};

std::string trusted() { return "lua_ssl_trusted_certificate " + Certs::get().path("ca.crt") + ";"; }

// Lua: a function `hs(port, ...)` that connects a new socket and hands
// back the socket and sslhandshake's results.
const char kHs[] = R"(
local function hs(port, ...)
  local sock = ngx.socket.tcp()
  sock:settimeout(5000)
  assert(sock:connect("127.0.0.1", port))
  return sock, sock:sslhandshake(...)
end
)";

std::string lua(int port, const std::string& body) {
  return std::string(kHs) + "local port = " + std::to_string(port) + "\n" + body;
}

class LuaSocketTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The peer's SSL_write to a connection the gateway closed must not kill the test.
    signal(SIGPIPE, SIG_IGN);
    ASSERT_TRUE(Certs::get().ok()) << "openssl CLI failed";
  }
  // Stops the gateway; no error lines in its log but the one the test
  // provoked (`logged`, which must be there).
  void stopClean(Gateway& gw, const std::string& logged = "") {
    EXPECT_EQ(gw.stop(), 0);
    if (logged.empty()) {
      EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
      return;
    }
    EXPECT_NE(gw.errorLog().find(logged), std::string::npos) << gw.errorLog();
    EXPECT_TRUE(gw.seriousLogLinesBut({logged}).empty()) << gw.errorLog();
  }
  // GET /t runs `lua` with `sock` connected to 127.0.0.1:port; the body
  // must be `want`. `then` checks more before the gateway stops.
  void expectBody(int port, const std::string& lua, const std::string& want,
                  const std::function<void()>& then = [] {}, const std::string& logged = "") {
    Gateway gw;
    ASSERT_TRUE(startWith(gw, connectTo(port) + lua));
    EXPECT_EQ(httpGet(gw.port(), "/t").body, want);
    then();
    stopClean(gw, logged);
  }
};

// Every receive pattern over TLS, a body larger than a TLS record, and the
// peer's close_notify ending "*a".
TEST_F(LuaSocketTlsTest, HandshakeThenEveryReceivePatternOverTls) {
  TlsPeer peer("srv.crt");
  ASSERT_TRUE(peer.ok());
  Gateway gw;
  ASSERT_TRUE(startWith(gw, lua(peer.port(), R"(
    local sock, sess, err = hs(port, nil, "test.local", true)
    ngx.say(type(sess), " ", tostring(err))
    ngx.say(rawequal(sock:sslhandshake(sess), sess), " ", tostring(sock:sslhandshake(false)))
    sock:send({"hello", "\n", "?\n"})
    ngx.say(sock:receive())
    ngx.say(sock:receive("*l"))
    sock:send("abcdefgh\n")
    ngx.say(sock:receive(3), " ", sock:receiveany(10) == "defgh\n")
    sock:send("part1--part2\r\n")
    local it = sock:receiveuntil("--")
    ngx.say(it(), " ", sock:receive())
    local big = string.rep("0123456789", 10000)
    ngx.say(sock:send(big .. "\n"))
    ngx.say(sock:receive() == big)
    sock:send("bye\n")
    ngx.say(sock:receive("*a"))
    ngx.say(sock:receive())
  )"), trusted()));
  EXPECT_EQ(httpGet(gw.port(), "/t").body,
            "userdata nil\n"
            "true true\n"
            "hello\n"
            "sni=test.local reused=0 TLSv1.3\n"
            "abc true\n"
            "part1 part2\n"
            "100001\n"
            "true\n"
            "bye\n\n"
            "nilclosed\n");
  stopClean(gw);
}

// ssl_verify: the chain against lua_ssl_trusted_certificate, the name
// against the certificate, OpenResty's error texts; a failure closes.
TEST_F(LuaSocketTlsTest, VerificationOutcomes) {
  TlsPeer good("srv.crt"), expired("expired.crt"), self("self.crt", "self.key");
  ASSERT_TRUE(good.ok() && expired.ok() && self.ok());
  Gateway gw;
  std::string check = std::string(kHs) + R"(
    local function try(p, name, verify)
      local sock, sess, err = hs(p, nil, name, verify)
      if not sess then
        ngx.say(err, " / ", select(2, sock:send("x")))
        return
      end
      sock:send("?\n")
      ngx.say(sock:receive())
    end
  )";
  auto tries = [&](const std::vector<std::string>& calls) {
    std::string lua = "content_by_lua_block {\n" + check;
    for (const std::string& c : calls) lua += "try(" + c + ")\n";
    return lua + "}\n";
  };
  std::string g = std::to_string(good.port()), e = std::to_string(expired.port()), s = std::to_string(self.port());
  gw.setSimpleConf("location /trusted { " + trusted() +
                   tries({g + ", 'localhost', true", g + ", nil, true", g + ", 'other.example', true",
                          g + ", 'other.example', false", e + ", 'localhost', true", s + ", 'localhost', true",
                          s + ", 'localhost', false"}) +
                   "}\nlocation /untrusted { " + tries({g + ", 'localhost', true", g + ", 'localhost', false"}) + "}\n");
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/trusted").body,
            "sni=localhost reused=0 TLSv1.3\n"
            "sni= reused=0 TLSv1.3\n"
            "certificate host mismatch / closed\n"
            "sni=other.example reused=0 TLSv1.3\n"
            "10: certificate has expired / closed\n"
            "18: self-signed certificate / closed\n"
            "sni=localhost reused=0 TLSv1.3\n");
  EXPECT_EQ(httpGet(gw.port(), "/untrusted").body,
            "20: unable to get local issuer certificate / closed\n"
            "sni=localhost reused=0 TLSv1.3\n");
  stopClean(gw);
}

// A session from one handshake resumes the next (TLS 1.3: the ticket came
// after the first handshake; TLS 1.2 as lua_ssl_protocols asks).
TEST_F(LuaSocketTlsTest, SessionReuse) {
  TlsPeer peer("srv.crt");
  ASSERT_TRUE(peer.ok());
  Gateway gw;
  std::string body = lua(peer.port(), R"(
    local function once(reuse)
      local sock, sess, err = hs(port, reuse, "localhost", true)
      if not sess then return ngx.say("failed: ", err) end
      sock:send("?\n")
      ngx.say(sock:receive())
      sock:close()
      return sess
    end
    local s1 = once(nil)
    local s2 = once(s1)
    once(s2)
    local sock, ok = hs(port, false)
    ngx.say(tostring(ok))
  )");
  gw.setSimpleConf("location /t { content_by_lua_block {\n" + body + "\n} }\n" +
                   "location /t12 { lua_ssl_protocols TLSv1.2; content_by_lua_block {\n" + body + "\n} }\n",
                   trusted());
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/t").body,
            "sni=localhost reused=0 TLSv1.3\n"
            "sni=localhost reused=1 TLSv1.3\n"
            "sni=localhost reused=1 TLSv1.3\n"
            "true\n");
  EXPECT_EQ(httpGet(gw.port(), "/t12").body,
            "sni=localhost reused=0 TLSv1.2\n"
            "sni=localhost reused=1 TLSv1.2\n"
            "sni=localhost reused=1 TLSv1.2\n"
            "true\n");
  stopClean(gw);
}

// A TLS connection parked by setkeepalive (right after the handshake: the
// TLS 1.3 tickets arrive while it idles) comes back with its TLS state;
// sslhandshake is then a no-op.
TEST_F(LuaSocketTlsTest, KeepalivePoolKeepsTheTlsConnection) {
  TlsPeer peer("srv.crt");
  ASSERT_TRUE(peer.ok());
  Gateway gw;
  ASSERT_TRUE(startWith(gw, R"(
    local sock = ngx.socket.tcp()
    assert(sock:connect("127.0.0.1", )" + std::to_string(peer.port()) + R"())
    local n = sock:getreusedtimes()
    local sess, err = sock:sslhandshake(nil, "localhost", true)
    ngx.say(n, " ", type(sess), " ", tostring(err))
    if n > 0 then
      sock:send("?\n")
      ngx.say(sock:receive())
    end
    ngx.say(sock:setkeepalive())
  )", trusted()));
  EXPECT_EQ(httpGet(gw.port(), "/t").body, "0 userdata nil\n1\n");
  EXPECT_EQ(httpGet(gw.port(), "/t").body, "1 userdata nil\nsni=localhost reused=0 TLSv1.3\n1\n");
  EXPECT_EQ(httpGet(gw.port(), "/t").body, "2 userdata nil\nsni=localhost reused=0 TLSv1.3\n1\n");
  EXPECT_EQ(peer.accepted(), 1);
  stopClean(gw);
}

// A peer that never answers the ClientHello: the connect timeout ends the
// handshake (as in lua-nginx-module) and the socket is closed.
TEST_F(LuaSocketTlsTest, HandshakeTimeout) {
  std::atomic<int> closes{0};
  ScriptedPeer peer(readUntilClose(&closes));
  expectBody(peer.port(), R"(
    sock:settimeouts(200, 60000, 60000)
    local sess, err = sock:sslhandshake()
    ngx.say(tostring(sess), " ", err)
    ngx.say(select(2, sock:send("x")))
  )", "nil timeout\nclosed\n", [&] { EXPECT_TRUE(waitFor([&] { return closes.load() == 1; })); },
             "lua tcp socket SSL handshake timed out with 127.0.0.1:");
}

// A peer that reads the ClientHello and closes: "handshake failed".
TEST_F(LuaSocketTlsTest, PeerClosingMidHandshake) {
  ScriptedPeer peer([](int fd) {
    char buf[64];
    (void)::read(fd, buf, sizeof(buf));
  });
  expectBody(peer.port(), R"(
    local sess, err = sock:sslhandshake(nil, "localhost")
    ngx.say(tostring(sess), " ", err)
    ngx.say(select(2, sock:receive()))
  )", "nil handshake failed\nclosed\n");
}

// The client leaves while the handshake waits: the wait is cancelled, the
// connection (and its TLS state) freed, and the worker lives on.
TEST_F(LuaSocketTlsTest, ClientLeavingDuringTheHandshake) {
  expectClientLeavingClosesThePeer(R"(
    ngx.log(ngx.WARN, "cosocket waiting")
    sock:sslhandshake()
  )");
}

// lua_ssl_* settings OpenSSL refuses fail the handshake (nginx would
// refuse the conf) and leave the connection as it was.
TEST_F(LuaSocketTlsTest, UnusableSslSettings) {
  TlsPeer peer("srv.crt");
  ASSERT_TRUE(peer.ok());
  Gateway gw;
  std::string lua = "content_by_lua_block {\n" + std::string(kHs) + "local p = " + std::to_string(peer.port()) + R"(
    local sock, sess, err = hs(p, nil, "localhost", true)
    ngx.say(tostring(sess), " ", err, " ", sock:send("x\n"))
  })";
  gw.setSimpleConf("location /ciphers { lua_ssl_ciphers NO-SUCH-CIPHER; " + lua + " }\n" +
                   "location /ca { lua_ssl_trusted_certificate /nonexistent/ca.crt; " + lua + " }\n");
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/ciphers").body, "nil SSL_CTX_set_cipher_list(\"NO-SUCH-CIPHER\") failed 2\n");
  EXPECT_EQ(httpGet(gw.port(), "/ca").body,
            "nil SSL_CTX_load_verify_locations(\"/nonexistent/ca.crt\") failed 2\n");
  stopClean(gw);
}

// Argument checks and a closed socket.
TEST_F(LuaSocketTlsTest, MisuseAndClosedSocket) {
  Gateway gw;
  ASSERT_TRUE(startWith(gw, R"(
    local sock = ngx.socket.tcp()
    ngx.say(select(2, sock:sslhandshake()))
    ngx.say(pcall(sock.sslhandshake, sock, nil, nil, nil, nil, 1))
  )"));
  EXPECT_EQ(httpGet(gw.port(), "/t").body,
            "closed\n"
            "falsengx.socket sslhandshake: expecting 1 ~ 5 arguments (including the object), but seen 6\n");
  stopClean(gw);
}

}  // namespace
}  // namespace tidegate::test
