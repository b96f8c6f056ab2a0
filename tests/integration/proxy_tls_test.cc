// proxy_pass https://: verification (on by default), SNI and the checked
// name, client certificates, pooled TLS connections and session reuse,
// retries on a failed handshake, large bodies both ways, the handshake
// under proxy_connect_timeout, and the conf checks of the client
// certificate. The upstreams are in-test TLS servers (tls_upstream.h) with
// certificates from TlsCerts.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"
#include "tls_support.h"
#include "tls_upstream.h"

namespace tidegate::test {
namespace {

using Signer = TlsCerts::Signer;

TlsCerts::Leaf leafFor(const std::string& id, const std::vector<std::string>& names, Signer signer, int days = 2) {
  TlsCerts::Options opt;
  opt.signer = signer;
  opt.days = days;
  return TlsCerts::get().leaf(id, names, opt);
}

std::unique_ptr<TlsUpstream> upstreamWith(const TlsCerts::Leaf& leaf, const std::string& client_ca = "") {
  TlsUpstream::Options opt;
  opt.cert = leaf.cert;
  opt.key = leaf.key;
  opt.client_ca = client_ca;
  return std::make_unique<TlsUpstream>(opt);
}

std::string trusted() { return "proxy_ssl_trusted_certificate " + TlsCerts::get().path("ca.crt") + ";\n"; }

std::string port(const TlsUpstream& u) { return std::to_string(u.port()); }

class ProxyTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // An upstream's SSL_write to a connection the gateway closed must not kill the test.
    signal(SIGPIPE, SIG_IGN);
    ASSERT_TRUE(TlsCerts::get().ok()) << "openssl CLI failed";
  }
  // Stops the gateway; no serious log line but those containing `provoked`.
  static void stopClean(Gateway& gw, const std::vector<std::string>& provoked = {}) {
    EXPECT_EQ(gw.stop(), 0);
    EXPECT_EQ(gw.seriousLogLinesBut(provoked), std::vector<std::string>{});
  }
};

// The six certificates of the matrix, in order: valid, expired,
// self-signed, for another name, from an untrusted CA, through an
// intermediate (the chain comes from the upstream, the root is trusted).
struct Matrix {
  std::vector<std::unique_ptr<TlsUpstream>> ups;
  Matrix() {
    ups.push_back(upstreamWith(leafFor("valid", {"localhost"}, Signer::kCa)));
    ups.push_back(upstreamWith(leafFor("expired", {"localhost"}, Signer::kCa, -1)));
    ups.push_back(upstreamWith(leafFor("self", {"localhost"}, Signer::kSelf)));
    ups.push_back(upstreamWith(leafFor("other-name", {"other.example"}, Signer::kCa)));
    ups.push_back(upstreamWith(leafFor("untrusted", {"localhost"}, Signer::kOtherCa)));
    ups.push_back(upstreamWith(leafFor("via-inter", {"localhost"}, Signer::kIntermediate)));
  }
  bool ok() const {
    for (const auto& u : ups) {
      if (!u->ok()) return false;
    }
    return true;
  }
  // location /cN proxies to upstream N, with `extra` settings.
  std::string locations(const std::string& extra) const {
    std::string conf;
    for (size_t i = 0; i < ups.size(); i++) {
      conf.append("location /c").append(std::to_string(i)).append(" { proxy_pass https://127.0.0.1:");
      conf.append(port(*ups[i])).append("/info; proxy_ssl_name localhost; ").append(extra).append("}\n");
    }
    return conf;
  }
};

TEST_F(ProxyTlsTest, VerificationMatrixWithVerifyOn) {
  Matrix m;
  ASSERT_TRUE(m.ok());
  Gateway gw;
  gw.setSimpleConf(m.locations(""), trusted());
  ASSERT_TRUE(gw.start());
  const int expected[] = {200, 502, 502, 502, 502, 200};
  for (size_t i = 0; i < m.ups.size(); i++) {
    Response r = httpGet(gw.port(), "/c" + std::to_string(i));
    EXPECT_EQ(r.status, expected[i]) << "case " << i << ": " << r.body;
  }
  std::string upstream1 = "upstream: \"https://127.0.0.1:" + port(*m.ups[1]) + "/info\"";
  EXPECT_TRUE(gw.waitLog("upstream SSL certificate verify error: (10:certificate has expired) while SSL handshaking "
                         "to upstream, client: 127.0.0.1"));
  EXPECT_NE(gw.errorLog().find(upstream1), std::string::npos) << gw.errorLog();
  EXPECT_TRUE(gw.waitLog("upstream SSL certificate verify error: (18:"));  // self-signed
  EXPECT_TRUE(gw.waitLog("upstream SSL certificate does not match \"localhost\" while SSL handshaking to upstream"));
  EXPECT_TRUE(gw.waitLog("upstream SSL certificate verify error: (20:unable to get local issuer certificate)"));
  std::string log = gw.errorLog();
  EXPECT_EQ(log.find("127.0.0.1:" + port(*m.ups[0])), std::string::npos) << log;
  EXPECT_EQ(log.find("127.0.0.1:" + port(*m.ups[5])), std::string::npos) << log;
  stopClean(gw, {"upstream SSL certificate"});
}

TEST_F(ProxyTlsTest, VerificationMatrixWithVerifyOffPassesAll) {
  Matrix m;
  ASSERT_TRUE(m.ok());
  Gateway gw;
  gw.setSimpleConf(m.locations("proxy_ssl_verify off; "), trusted());
  ASSERT_TRUE(gw.start());
  for (size_t i = 0; i < m.ups.size(); i++) {
    Response r = httpGet(gw.port(), "/c" + std::to_string(i));
    EXPECT_EQ(r.status, 200) << "case " << i;
    EXPECT_EQ(r.body.rfind("sni= reused=0 cert=0", 0), 0u) << r.body;  // no SNI by default
  }
  stopClean(gw);
}

// Verification is on by default: without a trusted file the system's store
// is used, which does not know the test CA.
TEST_F(ProxyTlsTest, VerifyIsOnByDefault) {
  auto up = upstreamWith(leafFor("valid", {"localhost"}, Signer::kCa));
  ASSERT_TRUE(up->ok());
  Gateway gw;
  gw.setSimpleConf("location / { proxy_pass https://127.0.0.1:" + port(*up) + "; proxy_ssl_name localhost; }");
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/").status, 502);
  EXPECT_TRUE(gw.waitLog("upstream SSL certificate verify error: (20:"));
  stopClean(gw, {"upstream SSL certificate"});
}

// proxy_pass https://NAME of an upstream block: NAME is $proxy_host, the
// Host header, the checked name and (with proxy_ssl_server_name on) the SNI.
TEST_F(ProxyTlsTest, UpstreamNameIsTheDefaultNameAndSniOnlyWhenAsked) {
  auto up = upstreamWith(leafFor("valid", {"localhost"}, Signer::kCa));
  ASSERT_TRUE(up->ok());
  Gateway gw;
  gw.setSimpleConf(
      "location /off { proxy_pass https://localhost/info; }\n"
      "location /on { proxy_pass https://localhost/info; proxy_ssl_server_name on; }\n",
      trusted() + "upstream localhost { server 127.0.0.1:" + port(*up) + "; }\n");
  ASSERT_TRUE(gw.start());
  Response off = httpGet(gw.port(), "/off");
  EXPECT_EQ(off.status, 200);
  EXPECT_EQ(off.body.find("sni= "), 0u) << off.body;
  EXPECT_NE(off.body.find("host=localhost"), std::string::npos) << off.body;
  Response on = httpGet(gw.port(), "/on");
  EXPECT_EQ(on.status, 200);
  EXPECT_EQ(on.body.find("sni=localhost "), 0u) << on.body;
  stopClean(gw);
}

// proxy_ssl_name is both the SNI and the name the certificate must match;
// it may hold variables, as may the URL.
TEST_F(ProxyTlsTest, SslNameOverridesSniAndCheckedName) {
  // Two upstreams: a failed check takes its server out for fail_timeout.
  auto up = upstreamWith(leafFor("wild", {"*.example.test"}, Signer::kCa));
  auto up2 = upstreamWith(leafFor("wild", {"*.example.test"}, Signer::kCa));
  ASSERT_TRUE(up->ok() && up2->ok());
  Gateway gw;
  std::string target = "https://127.0.0.1:" + port(*up) + "/info";
  gw.setSimpleConf("location /named { proxy_pass " + target +
                       "; proxy_ssl_server_name on; proxy_ssl_name api.example.test; }\n"
                       "location /var { set $n www.example.test; set $up 127.0.0.1:" +
                       port(*up) +
                       "; proxy_pass https://$up/info; proxy_ssl_server_name on; proxy_ssl_name $n; }\n"
                       "location /wrong { proxy_pass " +
                       target + "; proxy_ssl_server_name on; proxy_ssl_name example.test; }\n"
                                "location /ip { proxy_pass https://127.0.0.1:" +
                       port(*up2) + "/info; proxy_ssl_server_name on; }\n",
                   trusted());
  ASSERT_TRUE(gw.start());
  Response named = httpGet(gw.port(), "/named");
  EXPECT_EQ(named.status, 200);
  EXPECT_EQ(named.body.find("sni=api.example.test "), 0u) << named.body;
  Response var = httpGet(gw.port(), "/var");
  EXPECT_EQ(var.status, 200);
  EXPECT_EQ(var.body.find("sni=www.example.test "), 0u) << var.body;
  EXPECT_EQ(httpGet(gw.port(), "/wrong").status, 502);  // a wildcard covers one label only
  EXPECT_TRUE(gw.waitLog("upstream SSL certificate does not match \"example.test\""));
  // The default name, an address, is not sent as SNI (RFC 6066) and does not match.
  EXPECT_EQ(httpGet(gw.port(), "/ip").status, 502);
  EXPECT_TRUE(gw.waitLog("upstream SSL certificate does not match \"127.0.0.1\""));
  ASSERT_TRUE(waitFor([&] { return up2->handshakeCount() == 1; }));
  EXPECT_EQ(up2->handshakes()[0].sni, "");
  stopClean(gw, {"upstream SSL certificate does not match"});
}

TEST_F(ProxyTlsTest, ClientCertificateForAnUpstreamThatRequiresOne) {
  auto up = upstreamWith(leafFor("valid", {"localhost"}, Signer::kCa), TlsCerts::get().path("ca.crt"));
  ASSERT_TRUE(up->ok());
  TlsCerts::Leaf client = leafFor("client", {"client.test"}, Signer::kCa);
  Gateway gw;
  std::string target = "https://127.0.0.1:" + port(*up) + "/info; proxy_ssl_name localhost;";
  gw.setSimpleConf("location /without { proxy_pass " + target + " }\n" +  //
                       "location /with { proxy_pass " + target + " proxy_ssl_certificate " + client.cert +
                       "; proxy_ssl_certificate_key " + client.key + "; }\n",
                   trusted());
  ASSERT_TRUE(gw.start());
  // (First with: a failure takes the server out for fail_timeout.)
  Response with = httpGet(gw.port(), "/with");
  EXPECT_EQ(with.status, 200);
  EXPECT_NE(with.body.find("cert=1"), std::string::npos) << with.body;
  EXPECT_EQ(httpGet(gw.port(), "/without").status, 502);
  // TLS 1.3: the upstream refuses after the client's side of the handshake
  // ended, so the refusal shows wherever the proxy is then (sending the
  // request or reading the answer).
  const std::vector<std::string> refused = {"SSL_read() failed", "SSL_do_handshake() failed", "prematurely closed",
                                            "recv() failed", "writev() failed"};
  EXPECT_EQ(gw.seriousLogLinesBut(refused).size() + 1, gw.seriousLogLines().size()) << gw.errorLog();
  stopClean(gw, refused);
}

std::string keepaliveConf(const std::string& extra) {
  return "location / { proxy_pass https://ka; proxy_http_version 1.1; proxy_set_header Connection \"\"; "
         "proxy_ssl_name localhost; " +
         extra + "}\n";
}

TEST_F(ProxyTlsTest, KeepaliveUsesOneTlsConnectionAndResumesTheSession) {
  auto up = upstreamWith(leafFor("valid", {"localhost"}, Signer::kCa));
  ASSERT_TRUE(up->ok());
  Gateway gw;
  gw.setSimpleConf(keepaliveConf(""),
                   trusted() + "upstream ka { server 127.0.0.1:" + port(*up) + "; keepalive 8; }\n");
  ASSERT_TRUE(gw.start());
  for (int i = 0; i < 5; i++) EXPECT_EQ(httpGet(gw.port(), "/info").status, 200);
  EXPECT_EQ(up->accepted(), 1);
  // The upstream closes its connection; the next one resumes the session.
  EXPECT_EQ(httpGet(gw.port(), "/close").status, 200);
  Response r = httpGet(gw.port(), "/info");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("reused=1"), std::string::npos) << r.body;
  EXPECT_EQ(up->accepted(), 2);
  stopClean(gw);
}

TEST_F(ProxyTlsTest, SessionReuseOffDoesNotResume) {
  auto up = upstreamWith(leafFor("valid", {"localhost"}, Signer::kCa));
  ASSERT_TRUE(up->ok());
  Gateway gw;
  gw.setSimpleConf(keepaliveConf("proxy_ssl_session_reuse off; "),
                   trusted() + "upstream ka { server 127.0.0.1:" + port(*up) + "; keepalive 8; }\n");
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/close").status, 200);
  Response r = httpGet(gw.port(), "/info");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find("reused=0"), std::string::npos) << r.body;
  stopClean(gw);
}

// A pooled TLS connection is never used for a plain request to the same
// peer, nor for a request with another SNI.
TEST_F(ProxyTlsTest, PooledTlsConnectionsAreKeyedBySettings) {
  auto up = upstreamWith(leafFor("wild", {"*.example.test"}, Signer::kCa));
  ASSERT_TRUE(up->ok());
  Gateway gw;
  std::string common = "proxy_pass https://ka/info; proxy_http_version 1.1; proxy_set_header Connection \"\"; "
                       "proxy_ssl_server_name on; ";
  gw.setSimpleConf("location /a { " + common + "proxy_ssl_name a.example.test; }\n" +  //
                       "location /b { " + common + "proxy_ssl_name b.example.test; }\n" +
                       "location /plain { proxy_pass http://ka/info; }\n",
                   trusted() + "upstream ka { server 127.0.0.1:" + port(*up) + "; keepalive 8; }\n");
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/a").body.find("sni=a.example.test"), 0u);
  EXPECT_EQ(httpGet(gw.port(), "/b").body.find("sni=b.example.test"), 0u);
  EXPECT_EQ(httpGet(gw.port(), "/a").body.find("sni=a.example.test"), 0u);
  EXPECT_EQ(up->accepted(), 2);
  // Plain HTTP to the TLS port: a new connection, which the upstream refuses.
  EXPECT_EQ(httpGet(gw.port(), "/plain").status, 502);
  EXPECT_EQ(up->accepted(), 3);
  stopClean(gw, {"prematurely closed", "recv() failed"});
}

TEST_F(ProxyTlsTest, FailedVerificationTriesTheNextPeer) {
  auto bad = upstreamWith(leafFor("expired", {"localhost"}, Signer::kCa, -1));
  auto good = upstreamWith(leafFor("valid", {"localhost"}, Signer::kCa));
  ASSERT_TRUE(bad->ok() && good->ok());
  Gateway gw;
  gw.setSimpleConf("location / { proxy_pass https://two/info; proxy_ssl_name localhost; }\n",
                   trusted() + "upstream two { server 127.0.0.1:" + port(*bad) + "; server 127.0.0.1:" +
                       port(*good) + "; }\n");
  ASSERT_TRUE(gw.start());
  for (int i = 0; i < 3; i++) EXPECT_EQ(httpGet(gw.port(), "/").status, 200);
  EXPECT_GE(bad->accepted(), 1);
  EXPECT_TRUE(gw.waitLog("upstream SSL certificate verify error: (10:"));
  stopClean(gw, {"upstream SSL certificate"});
}

TEST_F(ProxyTlsTest, LargeBodiesBothWaysAndChunkedResponse) {
  auto up = upstreamWith(leafFor("valid", {"localhost"}, Signer::kCa));
  ASSERT_TRUE(up->ok());
  Gateway gw;
  gw.setSimpleConf("location / { proxy_pass https://127.0.0.1:" + port(*up) +
                       "; proxy_ssl_name localhost; client_max_body_size 16m; }\n",
                   trusted());
  ASSERT_TRUE(gw.start());
  const size_t kSize = 4 * 1024 * 1024;
  Response big = httpGet(gw.port(), "/big?" + std::to_string(kSize));
  EXPECT_EQ(big.status, 200);
  EXPECT_TRUE(big.complete);
  EXPECT_EQ(big.body, std::string(kSize, 'b'));
  std::string body(kSize, '\0');
  for (size_t i = 0; i < kSize; i++) body[i] = static_cast<char>('a' + i % 23);
  RawClient c(gw.port());
  ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(kSize) + "\r\n\r\n" + body));
  Response echo = c.readResponse(Ms(20000));
  EXPECT_EQ(echo.status, 200);
  EXPECT_TRUE(echo.complete);
  EXPECT_TRUE(echo.body == body) << echo.body.size();
  stopClean(gw);
}

TEST_F(ProxyTlsTest, WebSocketUpgradeOverTls) {
  auto up = upstreamWith(leafFor("valid", {"localhost"}, Signer::kCa));
  ASSERT_TRUE(up->ok());
  Gateway gw;
  gw.setSimpleConf("location /ws { proxy_pass https://127.0.0.1:" + port(*up) +
                       "; proxy_ssl_name localhost; proxy_set_header Upgrade $http_upgrade; "
                       "proxy_set_header Connection \"upgrade\"; }\n",
                   trusted());
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  ASSERT_TRUE(c.send("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"));
  std::string head = c.readUntil("\r\n\r\n");
  EXPECT_EQ(head.rfind("HTTP/1.1 101 ", 0), 0u) << head;
  for (int i = 0; i < 10; i++) {
    std::string msg = "message " + std::to_string(i);
    ASSERT_TRUE(c.send(msg));
    EXPECT_EQ(c.readBytes(msg.size()), msg);
  }
  // A large piece that needs back-pressure both ways: written while read.
  std::string large(3 << 20, 'w');
  std::thread writer([&] { c.send(large); });
  EXPECT_TRUE(c.readBytes(large.size(), Ms(20000)) == large);
  writer.join();
  c.close();
  stopClean(gw);
}

TEST_F(ProxyTlsTest, HandshakeTimeoutIsA504UnderConnectTimeout) {
  std::atomic<int> closes{0};
  ScriptedPeer silent(readUntilClose(&closes));  // accepts, never answers the ClientHello
  Gateway gw;
  gw.setSimpleConf("location / { proxy_pass https://127.0.0.1:" + std::to_string(silent.port()) +
                   "; proxy_connect_timeout 300ms; }\n");
  ASSERT_TRUE(gw.start());
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(httpGet(gw.port(), "/").status, 504);
  auto took = std::chrono::duration_cast<Ms>(std::chrono::steady_clock::now() - t0);
  EXPECT_GE(took.count(), 250);
  EXPECT_LT(took.count(), 3000);
  EXPECT_TRUE(gw.waitLog("upstream timed out (110: Connection timed out) while SSL handshaking to upstream"));
  EXPECT_TRUE(waitFor([&] { return closes.load() == 1; }));
  stopClean(gw, {"upstream timed out"});
}

// The line of the first conf line containing `needle`, as "tidegate.conf:N".
std::string confLine(const Gateway& gw, const std::string& needle) {
  std::string conf = gw.prefix().read("conf/tidegate.conf");
  size_t at = conf.find(needle);
  size_t line = 1;
  for (size_t i = 0; i < at && i < conf.size(); i++) line += conf[i] == '\n';
  return "tidegate.conf:" + std::to_string(line);
}

// `tidegate -t` on a location with proxy_ssl_certificate `cert` and
// proxy_ssl_certificate_key `key`; *line is where the `needle` directive is.
RunResult confTest(const std::string& cert, const std::string& key, const std::string& needle, std::string* line) {
  Gateway gw;
  gw.setSimpleConf("location / {\n proxy_pass https://127.0.0.1:1;\n proxy_ssl_certificate " + cert +
                   ";\n proxy_ssl_certificate_key " + key + ";\n}\n");
  *line = confLine(gw, needle);
  return runTidegate({"-t", "-p", gw.prefix().path(), "-c", gw.path("conf/tidegate.conf")});
}

TEST_F(ProxyTlsTest, ConfTestRefusesUnreadableOrMismatchedClientCertificate) {
  TlsCerts::Leaf a = leafFor("valid", {"localhost"}, Signer::kCa);
  TlsCerts::Leaf b = leafFor("client", {"client.test"}, Signer::kCa);
  std::string line;
  RunResult r = confTest("/nonexistent/c.crt", a.key, "proxy_ssl_certificate /", &line);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("cannot load certificate \"/nonexistent/c.crt\""), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(line), std::string::npos) << r.err;
  r = confTest(a.cert, "/nonexistent/c.key", "proxy_ssl_certificate_key", &line);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("cannot load certificate key \"/nonexistent/c.key\""), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(line), std::string::npos) << r.err;
  r = confTest(a.cert, b.key, "proxy_ssl_certificate_key", &line);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("does not match key"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(line), std::string::npos) << r.err;
  r = confTest(a.cert, a.key, "proxy_ssl_certificate", &line);
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST_F(ProxyTlsTest, ConfTestRefusesAnUnreadableTrustedCertificate) {
  Gateway gw;
  gw.setSimpleConf("location / { proxy_pass https://127.0.0.1:1; }\n",
                   "proxy_ssl_trusted_certificate /nonexistent/ca.crt;\n");
  RunResult r = runTidegate({"-t", "-p", gw.prefix().path(), "-c", gw.path("conf/tidegate.conf")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("SSL_CTX_load_verify_locations(\"/nonexistent/ca.crt\") failed"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(confLine(gw, "proxy_ssl_trusted_certificate")), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tidegate::test
