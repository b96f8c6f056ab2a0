// Certificates pushed through the admin API (PUT /ssl/{name}): every worker
// serves them from its next handshake, exact names beat wildcards and the
// conf's certificates, bad pushes change nothing, they persist across a
// restart and a reload, and a rotation under load fails no handshake.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <ctime>
#include <nlohmann/json.hpp>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "harness.h"
#include "tls_support.h"

namespace tidegate::test {
namespace {

using nlohmann::json;

const std::string kToken = "tls-admin-token";

Response admin(int port, const std::string& method, const std::string& path, const std::string& body = "",
               const std::string& extra = "") {
  RawClient c(port);
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nX-API-KEY: " + kToken +
                    "\r\n" + extra;
  if (method == "PUT") req.append("Content-Type: application/json\r\n");
  req.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n\r\n").append(body);
  c.send(req);
  return c.readResponse();
}

// The PUT body for a leaf made by TlsCerts.
std::string certBody(const TlsCerts::Leaf& leaf) {
  TlsCerts& c = TlsCerts::get();
  return json{{"cert", c.read(leaf.cert.substr(c.path("").size()))}, {"key", c.read(leaf.key.substr(c.path("").size()))}}
      .dump();
}

Response putCert(const Gateway& gw, const std::string& name, const TlsCerts::Leaf& leaf,
                 const std::string& extra = "") {
  return admin(gw.port2(), "PUT", "/ssl/" + name, certBody(leaf), extra);
}

// A leaf whose CN is `cn` (what the tests look for) and that also names `host`.
TlsCerts::Leaf leafFor(const std::string& cn, const std::string& host, bool ecdsa = true) {
  return TlsCerts::get().leaf(cn, {cn, host}, {TlsCerts::Signer::kCa, ecdsa, 2});
}

// The CN the server presents for `sni` ("" when the handshake fails).
std::string servedCn(const Gateway& gw, const std::string& sni) {
  TlsResult r = tlsRequest(gw.port(), "", TlsClientOptions{.sni = sni});
  return r.handshake ? r.subject_cn : "";
}

// A gateway whose TLS server "conf.test" has the conf certificate CN
// "conf-cert" (the default server: every name without one of its own gets
// it), whose / answers the worker's pid, with the admin API on port2.
void tlsConf(Gateway& gw, int workers = 2, bool conf_cert = true) {
  TlsCerts::Leaf conf_leaf = leafFor("conf-cert", "conf.test");
  std::string certs =
      conf_cert ? "    ssl_certificate " + conf_leaf.cert + ";\n    ssl_certificate_key " + conf_leaf.key + ";\n" : "";
  gw.setConf("worker_processes " + std::to_string(workers) +
             ";\nevents { worker_connections 1024; }\nhttp {\n  access_log logs/access.log;\n"
             "  admin_listen 127.0.0.1:{PORT2};\n  admin_token " + kToken +
             ";\n  server {\n    listen 127.0.0.1:{PORT} ssl reuseport;\n    server_name conf.test;\n" + certs +
             "    location / { return 200 \"$pid\"; }\n  }\n}\n");
}

// Handshakes with `sni` on fresh connections until both workers answered
// (their pids); the CNs they presented.
std::set<std::string> cnsOnEveryWorker(const Gateway& gw, const std::string& sni) {
  std::set<std::string> cns, pids;
  for (int i = 0; i < 200 && pids.size() < 2; i++) {
    TlsResult r = tlsRequest(gw.port(), getRequest("/", sni), TlsClientOptions{.sni = sni});
    cns.insert(r.handshake ? r.subject_cn : "handshake failed: " + r.error);
    if (r.response.status == 200) pids.insert(r.response.body);
  }
  if (pids.size() < 2) cns.insert("only one worker answered");
  return cns;
}

using Names = std::set<std::string>;

TEST(TlsAdminTest, APutServesEveryWorkerFromItsNextHandshake) {
  ASSERT_TRUE(TlsCerts::get().ok());
  Gateway gw;
  tlsConf(gw, 2);
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(cnsOnEveryWorker(gw, "a.test"), Names{"conf-cert"});
  Response r = putCert(gw, "a.test", leafFor("a-v1", "a.test"));
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(cnsOnEveryWorker(gw, "a.test"), Names{"a-v1"});
  r = putCert(gw, "a.test", leafFor("a-v2", "a.test", false));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(cnsOnEveryWorker(gw, "a.test"), Names{"a-v2"});
  TlsResult rsa = tlsRequest(gw.port(), "", TlsClientOptions{.sni = "a.test"});
  EXPECT_EQ(rsa.key_type, "RSA");
  // Names are case-insensitive, in the URL as in the SNI.
  ASSERT_EQ(putCert(gw, "MiXed.Test", leafFor("mixed", "mixed.test")).status, 201);
  EXPECT_EQ(servedCn(gw, "MIXED.test"), "mixed");
  EXPECT_EQ(admin(gw.port2(), "GET", "/ssl/mixed.test").status, 200);
  // Other names still get the conf's.
  EXPECT_EQ(servedCn(gw, "b.test"), "conf-cert");
  EXPECT_EQ(servedCn(gw, ""), "conf-cert");
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(TlsAdminTest, AWildcardMatchesOneLabelAndExactNamesWin) {
  ASSERT_TRUE(TlsCerts::get().ok());
  Gateway gw;
  tlsConf(gw, 2);
  ASSERT_TRUE(gw.start());
  Response r = putCert(gw, "*.w.test", TlsCerts::get().leaf("admin-wild", {"wild", "*.w.test"}));
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(json::parse(r.body)["name"], "*.w.test");
  r = putCert(gw, "%2A.pct.test", TlsCerts::get().leaf("admin-wild-pct", {"wild-pct", "*.pct.test"}));
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(json::parse(r.body)["name"], "*.pct.test");
  EXPECT_EQ(cnsOnEveryWorker(gw, "a.w.test"), Names{"wild"});
  EXPECT_EQ(servedCn(gw, "B.W.TEST"), "wild");
  EXPECT_EQ(servedCn(gw, "x.pct.test"), "wild-pct");
  EXPECT_EQ(servedCn(gw, "w.test"), "conf-cert");      // not the parent
  EXPECT_EQ(servedCn(gw, "a.b.w.test"), "conf-cert");  // one label only
  // An exact name beats the wildcard, for that name only.
  ASSERT_EQ(putCert(gw, "x.w.test", leafFor("exact", "x.w.test")).status, 201);
  EXPECT_EQ(cnsOnEveryWorker(gw, "x.w.test"), Names{"exact"});
  EXPECT_EQ(servedCn(gw, "y.w.test"), "wild");
  // Deleting the exact one lets the wildcard serve it again.
  ASSERT_EQ(admin(gw.port2(), "DELETE", "/ssl/x.w.test").status, 200);
  EXPECT_EQ(cnsOnEveryWorker(gw, "x.w.test"), Names{"wild"});
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(TlsAdminTest, APushedCertificateBeatsTheConfsAndDeleteFallsBack) {
  ASSERT_TRUE(TlsCerts::get().ok());
  Gateway gw;
  tlsConf(gw, 2);
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(servedCn(gw, "conf.test"), "conf-cert");
  ASSERT_EQ(putCert(gw, "conf.test", leafFor("dyn-conf", "conf.test")).status, 201);
  EXPECT_EQ(cnsOnEveryWorker(gw, "conf.test"), Names{"dyn-conf"});
  Response del = admin(gw.port2(), "DELETE", "/ssl/conf.test");
  ASSERT_EQ(del.status, 200) << del.body;
  EXPECT_EQ(json::parse(del.body)["deleted"], "conf.test");
  EXPECT_EQ(cnsOnEveryWorker(gw, "conf.test"), Names{"conf-cert"});
  Response again = admin(gw.port2(), "DELETE", "/ssl/conf.test");
  EXPECT_EQ(again.status, 404);
  EXPECT_NE(again.body.find("no certificate for \\\"conf.test\\\""), std::string::npos) << again.body;
  EXPECT_EQ(admin(gw.port2(), "GET", "/ssl/conf.test").status, 404);
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(TlsAdminTest, ABadPushIsA400AndTheOldCertificateKeepsServing) {
  ASSERT_TRUE(TlsCerts::get().ok());
  Gateway gw;
  tlsConf(gw, 2);
  ASSERT_TRUE(gw.start());
  TlsCerts::Leaf good = leafFor("good", "bad.test");
  TlsCerts::Leaf other = leafFor("other", "other.test");
  ASSERT_EQ(putCert(gw, "bad.test", good).status, 201);
  std::string cert = json::parse(certBody(good))["cert"], key = json::parse(certBody(good))["key"];
  std::string other_key = json::parse(certBody(other))["key"];
  struct Case {
    std::string path, body;
    int status;
    std::string says, field;
  } cases[] = {
      {"/ssl/bad.test", json{{"cert", "-----BEGIN CERTIFICATE-----\nnot base64\n"}, {"key", key}}.dump(), 400,
       "no certificate in the PEM", "cert"},
      {"/ssl/bad.test", json{{"cert", cert}, {"key", "garbage"}}.dump(), 400, "no private key in the PEM", "key"},
      {"/ssl/bad.test", json{{"cert", cert}, {"key", other_key}}.dump(), 400,
       "the private key does not match the certificate", "key"},
      {"/ssl/bad.test", json{{"cert", cert}}.dump(), 400, "key: a PEM string is required", "key"},
      {"/ssl/bad.test", json{{"key", key}}.dump(), 400, "cert: a PEM string is required", "cert"},
      {"/ssl/bad.test", json{{"cert", cert}, {"key", key}, {"chain", ""}}.dump(), 400, "unknown field", "chain"},
      {"/ssl/bad.test", json{{"cert", 1}, {"key", key}}.dump(), 400, "cert: a PEM string", "cert"},
      {"/ssl/bad.test", "[]", 400, "must be a JSON object", ""},
      {"/ssl/bad.test", "{", 400, "malformed JSON", ""},
      {"/ssl/bad..test", certBody(good), 400, "invalid server name", "name"},
      {"/ssl/a.*.test", certBody(good), 400, "invalid server name", "name"},
      {"/ssl/*", certBody(good), 400, "invalid server name", "name"},
      {"/ssl/-a.test", certBody(good), 400, "invalid server name", "name"},
      {"/ssl/a%20b.test", certBody(good), 400, "invalid server name", "name"},
      {"/ssl/" + std::string(64, 'a') + ".test", certBody(good), 400, "invalid server name", "name"},
  };
  for (const Case& k : cases) {
    Response r = admin(gw.port2(), "PUT", k.path, k.body);
    EXPECT_EQ(r.status, k.status) << k.path << " " << k.body << " -> " << r.body;
    json j = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r.body;
    EXPECT_NE(j.value("error", "").find(k.says), std::string::npos) << r.body;
    EXPECT_EQ(j.value("field", ""), k.field) << r.body;
  }
  // A stale If-Match: 409.
  Response stale = putCert(gw, "bad.test", other, "If-Match: \"999\"\r\n");
  EXPECT_EQ(stale.status, 409) << stale.body;
  EXPECT_EQ(putCert(gw, "new.test", other, "If-Match: *\r\n").status, 409);
  EXPECT_EQ(admin(gw.port2(), "DELETE", "/ssl/bad.test", "", "If-Match: \"999\"\r\n").status, 409);
  // Nothing changed.
  EXPECT_EQ(cnsOnEveryWorker(gw, "bad.test"), Names{"good"});
  json list = json::parse(admin(gw.port2(), "GET", "/ssl").body);
  EXPECT_EQ(list["version"], 1);
  EXPECT_EQ(list["certs"].size(), 1u);
  EXPECT_EQ(gw.prefix().read("state/ssl/index.json").find("other"), std::string::npos);
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

// sha256 of the DER of the first certificate in `pem`, lower-case hex.
std::string fingerprint(const std::string& pem) {
  BIO* b = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* x = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  X509_digest(x, EVP_sha256(), d, &n);
  X509_free(x);
  std::string out;
  char hex[3];
  for (unsigned int i = 0; i < n; i++) {
    snprintf(hex, sizeof hex, "%02x", d[i]);
    out.append(hex);
  }
  return out;
}

TEST(TlsAdminTest, GetListsEveryEntryWithoutItsKey) {
  ASSERT_TRUE(TlsCerts::get().ok());
  Gateway gw;
  tlsConf(gw, 1);
  ASSERT_TRUE(gw.start());
  json empty = json::parse(admin(gw.port2(), "GET", "/ssl").body);
  EXPECT_EQ(empty["version"], 0);
  EXPECT_TRUE(empty["certs"].empty());
  TlsCerts::Leaf ec = leafFor("list-ec", "ec.test");
  TlsCerts::Leaf rsa = TlsCerts::get().leaf("list-rsa", {"list-rsa", "rsa.test", "*.rsa.test"},
                                            {TlsCerts::Signer::kIntermediate, false, 2});
  Response put = putCert(gw, "ec.test", ec);
  ASSERT_EQ(put.status, 201);
  EXPECT_EQ(put.header("etag"), "\"1\"");
  ASSERT_EQ(putCert(gw, "rsa.test", rsa).status, 201);
  // The same pair again changes nothing.
  Response same = putCert(gw, "ec.test", ec);
  EXPECT_EQ(same.status, 200);
  EXPECT_EQ(same.header("etag"), "\"1\"");

  Response r = admin(gw.port2(), "GET", "/ssl");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body.find("PRIVATE"), std::string::npos);
  json list = json::parse(r.body);
  EXPECT_EQ(list["version"], 2);
  ASSERT_EQ(list["certs"].size(), 2u);
  json e = list["certs"][0];
  EXPECT_EQ(e["name"], "ec.test");
  EXPECT_EQ(e["dns_names"], json::array({"list-ec", "ec.test"}));
  EXPECT_EQ(e["key_type"], "EC");
  EXPECT_EQ(e["version"], 1);
  EXPECT_EQ(e["fingerprint_sha256"], fingerprint(json::parse(certBody(ec))["cert"]));
  int64_t now = static_cast<int64_t>(time(nullptr));
  EXPECT_GT(e["not_after"].get<int64_t>(), now + 86400);
  EXPECT_LT(e["not_after"].get<int64_t>(), now + 3 * 86400);
  std::string iso = e["not_after_iso"];
  ASSERT_EQ(iso.size(), 20u) << iso;
  EXPECT_EQ(iso.back(), 'Z');
  EXPECT_TRUE(e["time"].is_string());
  json f = list["certs"][1];
  EXPECT_EQ(f["name"], "rsa.test");
  EXPECT_EQ(f["key_type"], "RSA");
  EXPECT_EQ(f["dns_names"], json::array({"list-rsa", "rsa.test", "*.rsa.test"}));
  EXPECT_EQ(f["version"], 2);

  Response one = admin(gw.port2(), "GET", "/ssl/RSA.test");
  ASSERT_EQ(one.status, 200);
  EXPECT_EQ(one.header("etag"), "\"2\"");
  EXPECT_EQ(json::parse(one.body), f);
  EXPECT_EQ(one.body.find("PRIVATE"), std::string::npos);
  // The intermediate goes out with the leaf.
  TlsResult verified = tlsRequest(gw.port(), "", TlsClientOptions{.sni = "rsa.test", .ca_file = TlsCerts::get().path("ca.crt")});
  EXPECT_TRUE(verified.handshake) << verified.error;
  // A write with the current ETag goes through and moves it.
  Response up = putCert(gw, "rsa.test", leafFor("list-rsa2", "rsa.test"), "If-Match: \"2\"\r\n");
  EXPECT_EQ(up.status, 200) << up.body;
  EXPECT_EQ(up.header("etag"), "\"3\"");
  EXPECT_EQ(admin(gw.port2(), "GET", "/ssl").status, 200);
  EXPECT_EQ(admin(gw.port2(), "POST", "/ssl/ec.test").status, 405);
  EXPECT_EQ(admin(gw.port2(), "DELETE", "/ssl/ec.test", "", "If-Match: \"1\"\r\n").status, 200);
  EXPECT_EQ(json::parse(admin(gw.port2(), "GET", "/ssl").body)["version"], 4);
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(TlsAdminTest, CertificatesPersistAcrossRestartAndReload) {
  ASSERT_TRUE(TlsCerts::get().ok());
  Gateway gw;
  tlsConf(gw, 2);
  ASSERT_TRUE(gw.start());
  ASSERT_EQ(putCert(gw, "keep.test", leafFor("kept", "keep.test")).status, 201);
  ASSERT_EQ(putCert(gw, "*.keep.test", TlsCerts::get().leaf("kept-wild", {"kept-wild", "*.keep.test"})).status, 201);
  ASSERT_EQ(putCert(gw, "gone.test", leafFor("gone", "gone.test")).status, 201);
  ASSERT_EQ(admin(gw.port2(), "DELETE", "/ssl/gone.test").status, 200);

  std::vector<pid_t> old = gw.workerPids();
  gw.signal(SIGHUP);
  ASSERT_TRUE(gw.waitWorkersReplaced(old, 2));
  EXPECT_EQ(cnsOnEveryWorker(gw, "keep.test"), Names{"kept"});
  EXPECT_EQ(cnsOnEveryWorker(gw, "a.keep.test"), Names{"kept-wild"});
  EXPECT_EQ(servedCn(gw, "gone.test"), "conf-cert");

  ASSERT_EQ(gw.stop(), 0);
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(cnsOnEveryWorker(gw, "keep.test"), Names{"kept"});
  EXPECT_EQ(cnsOnEveryWorker(gw, "a.keep.test"), Names{"kept-wild"});
  EXPECT_EQ(servedCn(gw, "gone.test"), "conf-cert");
  json list = json::parse(admin(gw.port2(), "GET", "/ssl").body);
  EXPECT_EQ(list["version"], 4);
  EXPECT_EQ(list["certs"].size(), 2u);
  // Versions go on from where they were.
  Response r = putCert(gw, "gone.test", leafFor("back", "gone.test"));
  EXPECT_EQ(r.header("etag"), "\"5\"");
  EXPECT_EQ(servedCn(gw, "gone.test"), "back");
  // The key is kept where only the daemon's user reads it.
  struct stat st;
  ASSERT_EQ(stat(gw.path("state/ssl/5.cert").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(stat(gw.path("state/ssl").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(TlsAdminTest, AServerWithNoCertificateAtAllServesOnlyPushedNames) {
  ASSERT_TRUE(TlsCerts::get().ok());
  Gateway gw;
  tlsConf(gw, 1, false);
  ASSERT_TRUE(gw.start());
  TlsResult none = tlsRequest(gw.port(), "", TlsClientOptions{.sni = "nothing.test"});
  EXPECT_FALSE(none.handshake);
  EXPECT_TRUE(gw.waitLog("no certificate for the TLS server name \"nothing.test\""));
  ASSERT_EQ(putCert(gw, "nothing.test", leafFor("now-something", "nothing.test")).status, 201);
  TlsResult r = tlsRequest(gw.port(), getRequest("/", "nothing.test"), TlsClientOptions{.sni = "nothing.test"});
  EXPECT_TRUE(r.handshake) << r.error;
  EXPECT_EQ(r.subject_cn, "now-something");
  EXPECT_EQ(r.response.status, 200);
  EXPECT_EQ(servedCn(gw, "other.test"), "");
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLinesBut({"no certificate for the TLS server name"}).empty()) << gw.errorLog();
}

TEST(TlsAdminTest, RotationUnderARequestLoopFailsNoHandshake) {
  ASSERT_TRUE(TlsCerts::get().ok());
  constexpr int kRotations = 20;
  std::vector<TlsCerts::Leaf> leaves;
  for (int i = 0; i <= kRotations; i++) leaves.push_back(leafFor("rot-" + std::to_string(i), "rot.test"));
  Gateway gw;
  tlsConf(gw, 2);
  ASSERT_TRUE(gw.start());
  ASSERT_EQ(putCert(gw, "rot.test", leaves[0]).status, 201);

  std::atomic<bool> stop{false};
  std::atomic<int> handshakes{0}, failures{0};
  std::string last_failure;
  std::set<std::string> seen;
  std::mutex seen_mutex;
  std::string last_cn;
  std::thread client([&] {
    while (!stop.load()) {
      TlsResult r = tlsRequest(gw.port(), "", TlsClientOptions{.sni = "rot.test"});
      std::lock_guard<std::mutex> lock(seen_mutex);
      handshakes++;
      if (!r.handshake) {
        failures++;
        last_failure = r.error;
        continue;
      }
      seen.insert(r.subject_cn);
      last_cn = r.subject_cn;
    }
  });
  for (int i = 1; i <= kRotations; i++) {
    int before = handshakes.load();
    Response put = putCert(gw, "rot.test", leaves[i]);
    EXPECT_EQ(put.status, 200) << put.body;
    // Let a few handshakes through between pushes.
    EXPECT_TRUE(waitFor([&] { return handshakes.load() >= before + 3; }));
  }
  std::string last = "rot-" + std::to_string(kRotations);
  EXPECT_TRUE(waitFor([&] {
    std::lock_guard<std::mutex> lock(seen_mutex);
    return last_cn == last;
  }));
  stop = true;
  client.join();
  EXPECT_EQ(failures.load(), 0) << last_failure;
  EXPECT_GT(handshakes.load(), 3 * kRotations);
  EXPECT_GE(seen.size(), 3u);
  EXPECT_TRUE(seen.count(last));
  EXPECT_EQ(cnsOnEveryWorker(gw, "rot.test"), Names{last});
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

}  // namespace
}  // namespace tidegate::test
