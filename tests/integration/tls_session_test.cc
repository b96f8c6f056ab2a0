// Downstream TLS session resumption across workers: the shared session
// cache (ssl_session_cache shared:...), session tickets whose keys every
// worker shares and that rotate, and ssl_session_timeout.
#include <gtest/gtest.h>

#include <cstring>
#include <signal.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "tls_support.h"

namespace tidegate::test {
namespace {

struct SessionFree {
  void operator()(SSL_SESSION* s) const { SSL_SESSION_free(s); }
};
using Session = std::unique_ptr<SSL_SESSION, SessionFree>;

// Two TLS servers on {PORT} and {PORT2} (the second names the same shared
// zone as the first when `settings` declares one), answering with the pid
// of the worker that accepted.
std::string tlsConf(const std::string& settings, int workers = 2) {
  TlsCerts::Leaf leaf = TlsCerts::get().leaf("srv", {"localhost"});
  std::string server = "    server_name localhost;\n    ssl_certificate " + leaf.cert + ";\n    ssl_certificate_key " +
                       leaf.key + ";\n    " + settings + "\n    location / { return 200 \"$pid\"; }\n";
  std::string conf = "worker_processes " + std::to_string(workers) + ";\n";
  conf.append("events { worker_connections 1024; }\nhttp {\n  access_log logs/access.log;\n")
      .append("  server {\n    listen 127.0.0.1:{PORT} ssl reuseport;\n")
      .append(server)
      .append("  }\n  server {\n    listen 127.0.0.1:{PORT2} ssl;\n")
      .append(server)
      .append("  }\n}\n");
  return conf;
}

// One request on a new connection at `version`, offering `offer`; *keep
// (when given) receives the session the connection ended with.
TlsResult connect(int port, int version, SSL_SESSION* offer = nullptr, Session* keep = nullptr) {
  TlsClientOptions opt;
  opt.sni = "localhost";
  opt.min_version = version;
  opt.max_version = version;
  opt.session = offer;
  SSL_SESSION* kept = nullptr;
  if (keep) opt.keep_session = &kept;
  TlsResult r = tlsRequest(port, getRequest("/", "localhost"), opt);
  if (keep) keep->reset(kept);
  return r;
}

// The session of a full handshake; null if it failed.
Session newSession(int port, int version) {
  Session s;
  TlsResult r = connect(port, version, nullptr, &s);
  if (!r.handshake || r.reused) s.reset();
  return s;
}

// The name of the key that sealed a session's ticket ("" without one).
std::string ticketKeyName(const SSL_SESSION* s) {
  const unsigned char* ticket = nullptr;
  size_t len = 0;
  SSL_SESSION_get0_ticket(s, &ticket, &len);
  return len < 16 ? std::string() : std::string(reinterpret_cast<const char*>(ticket), 16);
}

// Resumes `s` on new connections until both workers have accepted one;
// every connection must resume it.
void expectResumedByEveryWorker(int port, int version, SSL_SESSION* s) {
  std::set<std::string> pids;
  for (int i = 0; i < 60 && pids.size() < 2; i++) {
    TlsResult r = connect(port, version, s);
    ASSERT_TRUE(r.handshake) << r.error;
    ASSERT_EQ(r.response.status, 200);
    EXPECT_TRUE(r.reused) << "connection " << i << " to worker " << r.response.body;
    pids.insert(r.response.body);
  }
  EXPECT_EQ(pids.size(), 2u) << "one worker accepted every connection";
}

TEST(TlsSessionTest, SharedCacheResumesASessionInEveryWorker) {
  ASSERT_TRUE(TlsCerts::get().ok());
  Gateway gw;
  gw.setConf(tlsConf("ssl_session_cache shared:SSL:1m; ssl_session_tickets off;"));
  ASSERT_TRUE(gw.start());
  ASSERT_EQ(gw.workerPids().size(), 2u);
  Session s = newSession(gw.port(), TLS1_2_VERSION);
  ASSERT_TRUE(s);
  EXPECT_EQ(ticketKeyName(s.get()), "");  // resumed by id, not by ticket
  expectResumedByEveryWorker(gw.port(), TLS1_2_VERSION, s.get());
  // The second server names the same zone: one cache.
  EXPECT_TRUE(connect(gw.port2(), TLS1_2_VERSION, s.get()).reused);
  // TLS 1.3 without tickets: stateful tickets, looked up in the zone too.
  Session s13 = newSession(gw.port(), TLS1_3_VERSION);
  ASSERT_TRUE(s13);
  expectResumedByEveryWorker(gw.port(), TLS1_3_VERSION, s13.get());
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(TlsSessionTest, NoCacheAndNoTicketsResumeNothing) {
  ASSERT_TRUE(TlsCerts::get().ok());
  for (const char* cache : {"none", "off"}) {
    SCOPED_TRACE(cache);
    Gateway gw;
    gw.setConf(tlsConf(std::string("ssl_session_cache ") + cache + "; ssl_session_tickets off;"));
    ASSERT_TRUE(gw.start());
    Session s = newSession(gw.port(), TLS1_2_VERSION);
    ASSERT_TRUE(s);
    for (int i = 0; i < 6; i++) {
      TlsResult r = connect(gw.port(), TLS1_2_VERSION, s.get());
      ASSERT_TRUE(r.handshake) << r.error;
      EXPECT_FALSE(r.reused);
    }
    EXPECT_EQ(gw.stop(), 0);
  }
}

TEST(TlsSessionTest, TicketsAreResumedByEveryWorker) {
  ASSERT_TRUE(TlsCerts::get().ok());
  Gateway gw;
  gw.setConf(tlsConf("ssl_session_cache off;"));
  ASSERT_TRUE(gw.start());
  ASSERT_EQ(gw.workerPids().size(), 2u);
  for (int version : {TLS1_2_VERSION, TLS1_3_VERSION}) {
    SCOPED_TRACE(version);
    Session s = newSession(gw.port(), version);
    ASSERT_TRUE(s);
    ASSERT_NE(ticketKeyName(s.get()), "");
    expectResumedByEveryWorker(gw.port(), version, s.get());
  }
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

// A TLS 1.3 resumption gets a new ticket (as from nginx), so a client that
// keeps only its latest session resumes again and again (wrk does).
TEST(TlsSessionTest, AResumedTls13ConnectionGetsANewTicket) {
  ASSERT_TRUE(TlsCerts::get().ok());
  Gateway gw;
  gw.setConf(tlsConf("", 1));
  ASSERT_TRUE(gw.start());
  Session s = newSession(gw.port(), TLS1_3_VERSION);
  ASSERT_TRUE(s);
  for (int i = 0; i < 5; i++) {
    Session next;
    TlsResult r = connect(gw.port(), TLS1_3_VERSION, s.get(), &next);
    ASSERT_TRUE(r.handshake) << r.error;
    EXPECT_TRUE(r.reused) << i;
    ASSERT_TRUE(next);
    const unsigned char* a = nullptr;
    const unsigned char* b = nullptr;
    size_t alen = 0, blen = 0;
    SSL_SESSION_get0_ticket(s.get(), &a, &alen);
    SSL_SESSION_get0_ticket(next.get(), &b, &blen);
    EXPECT_FALSE(alen == blen && std::memcmp(a, b, alen) == 0) << "no new ticket after resumption " << i;
    s = std::move(next);
  }
  EXPECT_EQ(gw.stop(), 0);
}

TEST(TlsSessionTest, TicketKeysRotateAndAnOlderKeyStillResumesAndRenews) {
  ASSERT_TRUE(TlsCerts::get().ok());
  // A 4 s timeout rotates the key every 2 s (tls::ticketRotationMs).
  Gateway gw;
  gw.setConf(tlsConf("ssl_session_cache off; ssl_session_timeout 4s;"));
  ASSERT_TRUE(gw.start());
  // A fresh ticket's key name, from a full handshake.
  auto freshKey = [&](Session* keep) {
    *keep = newSession(gw.port(), TLS1_2_VERSION);
    return *keep ? ticketKeyName(keep->get()) : std::string();
  };
  Session s0;
  std::string k0 = freshKey(&s0);
  ASSERT_NE(k0, "");
  // Wait for a rotation, so that s1 comes at the start of a period.
  Session s1;
  std::string k1;
  ASSERT_TRUE(waitFor([&] { return (k1 = freshKey(&s1)) != k0 && !k1.empty(); }, Ms(5000)));
  // Every worker seals with the new key.
  for (int i = 0; i < 10; i++) {
    Session s;
    EXPECT_EQ(freshKey(&s), k1);
  }
  Session s2;
  std::string k2;
  ASSERT_TRUE(waitFor([&] { return (k2 = freshKey(&s2)) != k1 && !k2.empty(); }, Ms(5000)));
  // s1's key no longer seals but still opens, within s1's timeout; the
  // resumed session gets a ticket sealed with the current key.
  Session renewed;
  TlsResult r = connect(gw.port(), TLS1_2_VERSION, s1.get(), &renewed);
  ASSERT_TRUE(r.handshake) << r.error;
  EXPECT_TRUE(r.reused);
  ASSERT_TRUE(renewed);
  EXPECT_EQ(ticketKeyName(renewed.get()), k2);
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(TlsSessionTest, ASessionOlderThanTheTimeoutIsNotResumed) {
  ASSERT_TRUE(TlsCerts::get().ok());
  for (const char* settings : {"ssl_session_cache shared:SSL:1m; ssl_session_tickets off;", "ssl_session_cache off;"}) {
    SCOPED_TRACE(settings);
    Gateway gw;
    gw.setConf(tlsConf(std::string(settings) + " ssl_session_timeout 1s;"));
    ASSERT_TRUE(gw.start());
    Session s = newSession(gw.port(), TLS1_2_VERSION);
    ASSERT_TRUE(s);
    EXPECT_TRUE(connect(gw.port(), TLS1_2_VERSION, s.get()).reused);
    // OpenSSL counts whole seconds: the session is gone within 2 s.
    EXPECT_TRUE(waitFor([&] { return !connect(gw.port(), TLS1_2_VERSION, s.get()).reused; }, Ms(4000)));
    EXPECT_EQ(gw.stop(), 0);
  }
}

TEST(TlsSessionTest, SessionsAndTicketKeysSurviveAReload) {
  ASSERT_TRUE(TlsCerts::get().ok());
  struct Case {
    const char* settings;
    int version;
  };
  for (const Case& c : {Case{"ssl_session_cache shared:SSL:1m; ssl_session_tickets off;", TLS1_2_VERSION},
                        Case{"ssl_session_cache off;", TLS1_3_VERSION}}) {
    SCOPED_TRACE(c.settings);
    Gateway gw;
    gw.setConf(tlsConf(c.settings));
    ASSERT_TRUE(gw.start());
    Session s = newSession(gw.port(), c.version);
    ASSERT_TRUE(s);
    std::vector<pid_t> old_workers = gw.workerPids();
    gw.signal(SIGHUP);
    ASSERT_TRUE(gw.waitWorkersReplaced(old_workers, 2)) << gw.errorLog();
    expectResumedByEveryWorker(gw.port(), c.version, s.get());
    EXPECT_EQ(gw.stop(), 0);
  }
}

TEST(TlsSessionTest, TicketKeyFilesSealWithTheFirstAndOpenWithAll) {
  ASSERT_TRUE(TlsCerts::get().ok());
  Gateway gw;
  std::string a(80, '\0'), b(48, '\0');  // nginx's two layouts
  for (size_t i = 0; i < a.size(); i++) a[i] = static_cast<char>('A' + i % 26);
  for (size_t i = 0; i < b.size(); i++) b[i] = static_cast<char>('a' + i % 26 + (i > 15 ? 1 : 0));
  gw.prefix().write("a.key", a);
  gw.prefix().write("b.key", b);
  std::string key_a = "ssl_session_ticket_key " + gw.path("a.key") + ";";
  std::string key_b = "ssl_session_ticket_key " + gw.path("b.key") + ";";
  gw.setConf(tlsConf("ssl_session_cache off; " + key_a));
  ASSERT_TRUE(gw.start());
  Session s = newSession(gw.port(), TLS1_2_VERSION);
  ASSERT_TRUE(s);
  EXPECT_EQ(ticketKeyName(s.get()), a.substr(0, 16));
  expectResumedByEveryWorker(gw.port(), TLS1_2_VERSION, s.get());
  // b seals now; a still opens, and its tickets are renewed with b.
  std::vector<pid_t> old_workers = gw.workerPids();
  gw.setConf(tlsConf("ssl_session_cache off; " + key_b + " " + key_a));
  gw.signal(SIGHUP);
  ASSERT_TRUE(gw.waitWorkersReplaced(old_workers, 2)) << gw.errorLog();
  Session renewed;
  EXPECT_TRUE(connect(gw.port(), TLS1_2_VERSION, s.get(), &renewed).reused);
  ASSERT_TRUE(renewed);
  EXPECT_EQ(ticketKeyName(renewed.get()), b.substr(0, 16));
  Session s13 = newSession(gw.port(), TLS1_3_VERSION);
  ASSERT_TRUE(s13);
  EXPECT_EQ(ticketKeyName(s13.get()), b.substr(0, 16));
  expectResumedByEveryWorker(gw.port(), TLS1_3_VERSION, s13.get());
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
  // Neither 48 nor 80 bytes: refused at load.
  gw.prefix().write("c.key", std::string(100, 'c'));
  gw.setConf(tlsConf("ssl_session_ticket_key " + gw.path("c.key") + ";"));
  RunResult r = runTidegate({"-t", "-p", gw.prefix().path(), "-c", gw.path("conf/tidegate.conf")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("c.key\" must be 48 or 80 bytes"), std::string::npos) << r.err;
}

TEST(TlsSessionTest, AZoneDeclaredWithTwoSizesIsAnError) {
  ASSERT_TRUE(TlsCerts::get().ok());
  Gateway gw;
  std::string conf = tlsConf("ssl_session_cache shared:SSL:1m;");
  conf.replace(conf.rfind("shared:SSL:1m"), 13, "shared:SSL:2m");
  gw.setConf(conf);
  RunResult r = runTidegate({"-t", "-p", gw.prefix().path(), "-c", gw.path("conf/tidegate.conf")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("conflicts with already declared size 1048576"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tidegate::test
