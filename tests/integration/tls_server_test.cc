// Downstream TLS (listen ... ssl): the SNI matrix, RSA and ECDSA side by
// side, protocols, ALPN, the $ssl_* variables, bodies both ways, pipelining,
// a proxied WebSocket tunnel, the header deadline over a slow handshake,
// plain HTTP on a TLS port, and certificate errors at -t and at reload.
// Certificates come from the openssl CLI (tls_support.h).
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <chrono>
#include <csignal>
#include <string>
#include <thread>

#include "fake_upstream.h"
#include "harness.h"
#include "tls_support.h"

namespace tidegate::test {
namespace {

using Clock = std::chrono::steady_clock;

TlsCerts& certs() { return TlsCerts::get(); }

std::string pair(const TlsCerts::Leaf& leaf) {
  return "ssl_certificate " + leaf.cert + "; ssl_certificate_key " + leaf.key + ";\n";
}

class TlsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    signal(SIGPIPE, SIG_IGN);
    ASSERT_TRUE(certs().ok()) << certs().read("openssl.log");
  }
  void stopClean(Gateway& gw) {
    EXPECT_EQ(gw.stop(), 0);
    EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
  }
  // One TLS server on {PORT} with `body` (certificate lines included).
  bool startOne(Gateway& gw, const std::string& body, const std::string& http_extra = "", int workers = 1) {
    gw.setConf("worker_processes " + std::to_string(workers) +
               ";\nevents {}\nhttp {\n  access_log logs/access.log;\n" + http_extra +
               "\n  server {\n    listen 127.0.0.1:{PORT} ssl;\n    server_name localhost;\n" + body + "\n  }\n}\n");
    return gw.start();
  }
};

TlsClientOptions sni(const std::string& name) {
  TlsClientOptions o;
  o.sni = name;
  return o;
}

// Four servers on one port: exact names with ECDSA and RSA certificates, a
// wildcard, and a default_server that is not the first block.
TEST_F(TlsServerTest, SniChoosesTheServerCertificate) {
  auto a = certs().leaf("sni-a", {"a.test"});
  auto b = certs().leaf("sni-b", {"b.test"}, {TlsCerts::Signer::kCa, false, 2});
  auto wild = certs().leaf("sni-wild", {"*.wild.test"});
  auto def = certs().leaf("sni-default", {"default.test"});
  Gateway gw;
  gw.setConf(R"(events {}
http {
  access_log off;
  server { listen 127.0.0.1:{PORT} ssl; server_name a.test; )" + pair(a) + R"( return 200 "a $ssl_server_name"; }
  server { listen 127.0.0.1:{PORT} ssl; server_name b.test; )" + pair(b) + R"( return 200 "b $ssl_server_name"; }
  server { listen 127.0.0.1:{PORT} ssl; server_name *.wild.test; )" + pair(wild) + R"( return 200 "wild"; }
  server { listen 127.0.0.1:{PORT} ssl default_server; server_name default.test; )" + pair(def) +
             R"( return 200 "default"; }
}
)");
  ASSERT_TRUE(gw.start()) << gw.stderrText();
  struct Case {
    std::string sni, host, cn, key, body;
  };
  const Case cases[] = {
      {"a.test", "a.test", "a.test", "EC", "a a.test"},
      {"b.test", "b.test", "b.test", "RSA", "b b.test"},
      {"x.wild.test", "x.wild.test", "*.wild.test", "EC", "wild"},
      {"A.TEST", "a.test", "a.test", "EC", "a a.test"},  // names compare case-blind
      {"unknown.test", "unknown.test", "default.test", "EC", "default"},
      {"", "default.test", "default.test", "EC", "default"},  // no SNI: the default server
  };
  for (const Case& c : cases) {
    TlsResult r = tlsRequest(gw.port(), getRequest("/", c.host), sni(c.sni));
    ASSERT_TRUE(r.handshake) << c.sni << ": " << r.error;
    EXPECT_EQ(r.subject_cn, c.cn) << c.sni;
    EXPECT_EQ(r.key_type, c.key) << c.sni;
    EXPECT_EQ(r.response.status, 200) << c.sni;
    EXPECT_EQ(r.response.body, c.body) << c.sni;
  }
  // The request's server still follows Host, as in nginx.
  TlsResult r = tlsRequest(gw.port(), getRequest("/", "b.test"), sni("a.test"));
  EXPECT_EQ(r.subject_cn, "a.test");
  EXPECT_EQ(r.response.body, "b a.test");
  stopClean(gw);
}

// An RSA and an ECDSA certificate in one server: the client's signature
// algorithms choose, in TLS 1.2 and 1.3.
TEST_F(TlsServerTest, RsaAndEcdsaSideBySide) {
  auto ec = certs().leaf("dual-ec", {"localhost"});
  auto rsa = certs().leaf("dual-rsa", {"localhost"}, {TlsCerts::Signer::kCa, false, 2});
  Gateway gw;
  ASSERT_TRUE(startOne(gw, pair(rsa) + pair(ec) + "return 200 ok;")) << gw.stderrText();
  for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    TlsClientOptions o = sni("localhost");
    o.min_version = o.max_version = version;
    o.sigalgs = "ECDSA+SHA256";
    TlsResult r = tlsRequest(gw.port(), getRequest("/", "localhost"), o);
    ASSERT_TRUE(r.handshake) << r.error;
    EXPECT_EQ(r.key_type, "EC") << version;
    o.sigalgs = version == TLS1_3_VERSION ? "rsa_pss_rsae_sha256" : "RSA+SHA256";
    r = tlsRequest(gw.port(), getRequest("/", "localhost"), o);
    ASSERT_TRUE(r.handshake) << r.error;
    EXPECT_EQ(r.key_type, "RSA") << version;
    EXPECT_EQ(r.response.body, "ok");
  }
  stopClean(gw);
}

// TLS 1.0 and 1.1 are refused by default; ssl_protocols narrows further.
TEST_F(TlsServerTest, ProtocolVersions) {
  auto leaf = certs().leaf("proto", {"localhost"});
  Gateway gw;
  ASSERT_TRUE(startOne(gw, pair(leaf) + "return 200 $ssl_protocol;")) << gw.stderrText();
  auto attempt = [&](int version) {
    TlsClientOptions o = sni("localhost");
    o.min_version = o.max_version = version;
    return tlsRequest(gw.port(), getRequest("/", "localhost"), o);
  };
  EXPECT_FALSE(attempt(TLS1_VERSION).handshake);
  EXPECT_FALSE(attempt(TLS1_1_VERSION).handshake);
  EXPECT_EQ(attempt(TLS1_2_VERSION).response.body, "TLSv1.2");
  EXPECT_EQ(attempt(TLS1_3_VERSION).response.body, "TLSv1.3");
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_NE(gw.errorLog().find("SSL_do_handshake() failed"), std::string::npos) << gw.errorLog();

  Gateway only13;
  ASSERT_TRUE(startOne(only13, pair(leaf) + "ssl_protocols TLSv1.3;\nreturn 200 $ssl_protocol;"));
  TlsClientOptions o = sni("localhost");
  o.max_version = TLS1_2_VERSION;
  EXPECT_FALSE(tlsRequest(only13.port(), getRequest("/", "localhost"), o).handshake);
  EXPECT_EQ(tlsRequest(only13.port(), getRequest("/", "localhost"), sni("localhost")).response.body, "TLSv1.3");
  EXPECT_EQ(only13.stop(), 0);
}

// ssl_ecdh_curve limits the key exchange groups; ssl_dhparam enables DHE.
TEST_F(TlsServerTest, EcdhCurveAndDhParams) {
  auto leaf = certs().leaf("groups", {"localhost"}, {TlsCerts::Signer::kCa, false, 2});
  Gateway gw;
  ASSERT_EQ(std::system(("openssl genpkey -genparam -algorithm DH -pkeyopt dh_param:ffdhe2048 -out " +
                         gw.path("dh.pem") + " 2>/dev/null").c_str()),
            0);
  ASSERT_TRUE(startOne(gw, pair(leaf) + "ssl_ecdh_curve prime256v1;\nssl_dhparam dh.pem;\nreturn 200 $ssl_cipher;"))
      << gw.stderrText();
  TlsClientOptions o = sni("localhost");
  o.groups = "X25519";
  EXPECT_FALSE(tlsRequest(gw.port(), getRequest("/", "localhost"), o).handshake);
  o.groups = "P-256";
  EXPECT_TRUE(tlsRequest(gw.port(), getRequest("/", "localhost"), o).handshake);
  o = sni("localhost");
  o.max_version = TLS1_2_VERSION;
  o.ciphers = "DHE-RSA-AES128-GCM-SHA256";
  EXPECT_EQ(tlsRequest(gw.port(), getRequest("/", "localhost"), o).response.body, "DHE-RSA-AES128-GCM-SHA256");
  EXPECT_EQ(gw.stop(), 0);
}

// $https, $scheme, $ssl_* (also from Lua), ALPN, and a self-redirect that
// keeps the https scheme.
TEST_F(TlsServerTest, VariablesAlpnAndRedirects) {
  auto leaf = certs().leaf("vars", {"localhost"});
  Gateway gw;
  ASSERT_TRUE(startOne(gw, pair(leaf) + R"(
    location / { return 200 "$scheme|$https|$ssl_protocol|$ssl_cipher|$ssl_server_name|$ssl_session_reused"; }
    location /lua { content_by_lua_block { ngx.say(ngx.var.scheme, " ", ngx.var.https, " ", ngx.var.ssl_server_name) } }
    location /moved { return 302 /new; }
)")) << gw.stderrText();
  TlsClientOptions o = sni("localhost");
  o.alpn = {"h2", "http/1.1"};
  o.max_version = TLS1_2_VERSION;
  o.ciphers = "ECDHE-ECDSA-AES128-GCM-SHA256";
  TlsResult r = tlsRequest(gw.port(), getRequest("/", "localhost"), o);
  ASSERT_TRUE(r.handshake) << r.error;
  EXPECT_EQ(r.alpn, "http/1.1");
  EXPECT_EQ(r.response.body, "https|on|TLSv1.2|ECDHE-ECDSA-AES128-GCM-SHA256|localhost|.");
  o = sni("localhost");
  o.alpn = {"h2"};  // nothing in common: no ALPN, HTTP/1.1 still served
  r = tlsRequest(gw.port(), getRequest("/lua", "localhost"), o);
  ASSERT_TRUE(r.handshake) << r.error;
  EXPECT_EQ(r.alpn, "");
  EXPECT_EQ(r.response.body, "https on localhost\n");
  r = tlsRequest(gw.port(), getRequest("/moved", "localhost"), sni("localhost"));
  EXPECT_EQ(r.response.header("location"), "https://localhost:" + std::to_string(gw.port()) + "/new");
  // Plain HTTP on the same server block's port says so.
  EXPECT_EQ(httpGet(gw.port(), "/").status, 400);
  stopClean(gw);
}

// Bodies larger than many TLS records both ways, keepalive and pipelining
// on one connection.
TEST_F(TlsServerTest, BodiesKeepaliveAndPipelining) {
  auto leaf = certs().leaf("bodies", {"localhost"});
  Gateway gw;
  ASSERT_TRUE(startOne(gw, pair(leaf) + R"(
    client_max_body_size 16m;
    client_body_buffer_size 16m;
    location /echo { content_by_lua_block { ngx.req.read_body(); ngx.print(ngx.req.get_body_data()) } }
    location /big { content_by_lua_block { ngx.print(string.rep("0123456789abcdef", 5 * 65536)) } }
    location / { return 200 "n$connection_requests"; }
)")) << gw.stderrText();
  TlsConn c;
  ASSERT_TRUE(c.connectTls(gw.port(), sni("localhost"))) << c.error();
  std::string upload(3 << 20, 'u');
  for (size_t i = 0; i < upload.size(); i += 4099) upload[i] = static_cast<char>('a' + i % 26);
  ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: " + std::to_string(upload.size()) +
                     "\r\n\r\n" + upload));
  Response r = c.readResponse(Ms(20000));
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.body == upload) << r.body.size();
  ASSERT_TRUE(c.send("GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  r = c.readResponse(Ms(20000));
  EXPECT_EQ(r.body.size(), 5u << 20);
  std::string pipelined;
  for (int i = 0; i < 20; i++) pipelined += "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
  ASSERT_TRUE(c.send(pipelined));
  for (int i = 0; i < 20; i++) EXPECT_EQ(c.readResponse().body, "n" + std::to_string(i + 3));
  stopClean(gw);
}

// A WebSocket-style tunnel through the proxy, TLS on the client side.
TEST_F(TlsServerTest, ProxiedUpgradeTunnelOverTls) {
  auto leaf = certs().leaf("tunnel", {"localhost"});
  FakeUpstream up;
  up.setDefault(Behaviour::upgradeEcho());
  Gateway gw;
  ASSERT_TRUE(startOne(gw, pair(leaf) + "location /ws { proxy_pass http://127.0.0.1:" + std::to_string(up.port()) +
                               "; proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade;"
                               " proxy_set_header Connection upgrade; }"))
      << gw.stderrText();
  TlsConn c;
  ASSERT_TRUE(c.connectTls(gw.port(), sni("localhost"))) << c.error();
  ASSERT_TRUE(c.send("GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nfirst"));
  std::string head = c.readUntil("\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 101 ", 0), 0u) << head;
  EXPECT_EQ(c.readBytes(5), "first");
  for (int i = 0; i < 10; i++) {
    std::string msg = "message " + std::to_string(i);
    ASSERT_TRUE(c.send(msg));
    EXPECT_EQ(c.readBytes(msg.size()), msg);
  }
  // 2 MB in pieces (one SSL object is not for two threads at once).
  std::string piece(64 << 10, 'w');
  size_t echoed = 0;
  for (int i = 0; i < 32; i++) {
    ASSERT_TRUE(c.send(piece));
    echoed += c.readBytes(piece.size(), Ms(10000)).size();
  }
  EXPECT_EQ(echoed, 32u * piece.size());
  c.close();  // a graceful stop waits for a tunnel to end
  stopClean(gw);
}

// A client that connects and never finishes its handshake is closed at
// client_header_timeout, whether it sent nothing or half a ClientHello.
TEST_F(TlsServerTest, SlowHandshakeHitsTheHeaderDeadline) {
  auto leaf = certs().leaf("slow", {"localhost"});
  Gateway gw;
  ASSERT_TRUE(startOne(gw, pair(leaf) + "client_header_timeout 1s;\nreturn 200 ok;")) << gw.stderrText();
  RawClient silent(gw.port());
  RawClient partial(gw.port());
  // A TLS record header that promises 512 bytes of ClientHello, and 10 of them.
  ASSERT_TRUE(partial.send(std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11)));
  auto start = Clock::now();
  EXPECT_TRUE(silent.waitClosed(Ms(5000)));
  EXPECT_TRUE(partial.waitClosed(Ms(5000)));
  auto took = std::chrono::duration_cast<Ms>(Clock::now() - start).count();
  EXPECT_GE(took, 700);
  EXPECT_LT(took, 4000);
  // Others are served meanwhile and after.
  EXPECT_EQ(tlsRequest(gw.port(), getRequest("/", "localhost"), sni("localhost")).response.body, "ok");
  stopClean(gw);
}

// A client's close_notify ends the connection; a keepalive connection the
// server closes gets one.
TEST_F(TlsServerTest, CloseNotifyBothWays) {
  auto leaf = certs().leaf("close", {"localhost"});
  Gateway gw;
  ASSERT_TRUE(startOne(gw, pair(leaf) + "keepalive_timeout 1s;\nreturn 200 ok;")) << gw.stderrText();
  TlsConn c;
  ASSERT_TRUE(c.connectTls(gw.port(), sni("localhost"))) << c.error();
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  EXPECT_EQ(c.readResponse().body, "ok");
  // The idle connection is closed by the server with close_notify.
  EXPECT_TRUE(c.waitClosed(Ms(5000)));
  EXPECT_EQ(SSL_get_shutdown(c.ssl()) & SSL_RECEIVED_SHUTDOWN, SSL_RECEIVED_SHUTDOWN);
  TlsConn d;
  ASSERT_TRUE(d.connectTls(gw.port(), sni("localhost"))) << d.error();
  SSL_shutdown(d.ssl());
  EXPECT_TRUE(d.waitClosed(Ms(5000)));
  stopClean(gw);
}

// Bad certificates fail -t with file:line, and a reload keeps the old ones.
TEST_F(TlsServerTest, CertificateErrorsAtTestAndReload) {
  auto good = certs().leaf("conf-good", {"localhost"});
  auto other = certs().leaf("conf-other", {"localhost"}, {TlsCerts::Signer::kCa, false, 2});
  struct Case {
    std::string lines, message;
  };
  const Case cases[] = {
      {"ssl_certificate " + good.cert + "; ssl_certificate_key " + other.key + ";", "does not match"},
      {"ssl_certificate /nonexistent/x.crt; ssl_certificate_key " + good.key + ";", "/nonexistent/x.crt"},
      {"ssl_certificate " + good.cert + ";", "no \"ssl_certificate_key\" is defined"},
      {"", "no \"ssl_certificate\" is defined for the \"listen"},
      {pair(good) + "ssl_ciphers NOSUCHCIPHER;", "SSL_CTX_set_cipher_list"},
      {pair(good) + "ssl_protocols TLSv1.4;", "invalid value \"TLSv1.4\""},
      {pair(good) + "ssl_ecdh_curve nosuchcurve;", "ssl_ecdh_curve"},
      {pair(good) + "ssl_dhparam /nonexistent/dh.pem;", "/nonexistent/dh.pem"},
  };
  for (const Case& c : cases) {
    Gateway gw;
    gw.setConf("events {}\nhttp {\n  server {\n    listen 127.0.0.1:{PORT} ssl;\n    " + c.lines + "\n  }\n}\n");
    RunResult r = runTidegate({"-p", gw.prefix().path(), "-c", "conf/tidegate.conf", "-t"});
    EXPECT_NE(r.exit_code, 0) << c.lines;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(gw.path("conf/tidegate.conf") + ":"), std::string::npos) << r.err;
  }
  Gateway gw;
  ASSERT_TRUE(startOne(gw, pair(good) + "return 200 ok;")) << gw.stderrText();
  std::vector<pid_t> before = gw.workerPids();
  gw.setConf("events {}\nhttp {\n  server {\n    listen 127.0.0.1:{PORT} ssl;\n    ssl_certificate " + good.cert +
             "; ssl_certificate_key " + other.key + ";\n  }\n}\n");
  gw.signal(SIGHUP);
  EXPECT_TRUE(gw.waitLog("reconfiguration failed"));
  EXPECT_EQ(gw.workerPids(), before);
  TlsResult r = tlsRequest(gw.port(), getRequest("/", "localhost"), sni("localhost"));
  EXPECT_EQ(r.key_type, "EC");
  EXPECT_EQ(r.response.body, "ok");
  // A good new certificate is served after the reload.
  gw.setConf("events {}\nhttp {\n  server {\n    listen 127.0.0.1:{PORT} ssl;\n    " + pair(other) +
             "    return 200 new;\n  }\n}\n");
  gw.signal(SIGHUP);
  EXPECT_TRUE(waitFor([&] {
    return tlsRequest(gw.port(), getRequest("/", "localhost"), sni("localhost")).response.body == "new";
  }));
  EXPECT_EQ(tlsRequest(gw.port(), getRequest("/", "localhost"), sni("localhost")).key_type, "RSA");
  EXPECT_EQ(gw.stop(), 0);
}

// Many clients at once with several workers: every handshake and request succeeds.
TEST_F(TlsServerTest, ConcurrentHandshakesOnTwoWorkers) {
  auto leaf = certs().leaf("load", {"localhost"});
  Gateway gw;
  ASSERT_TRUE(startOne(gw, pair(leaf) + "return 200 ok;", "", 2)) << gw.stderrText();
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; t++) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; i++) {
        if (tlsRequest(gw.port(), getRequest("/", "localhost"), sni("localhost")).response.body == "ok") ok++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 200);
  stopClean(gw);
}

}  // namespace
}  // namespace tidegate::test
