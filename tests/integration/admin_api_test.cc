// The admin API through a running gateway: the token on every route, the
// /upstreams routes and their errors, writes every worker sees at once,
// If-Match under concurrent writers, persistence across restart and reload,
// and the conf rules of admin_listen.
#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "admin/routes.h"
#include "fake_upstream.h"
#include "harness.h"

namespace tidegate::test {
namespace {

const std::string kToken = "test-token-0123456789";

// One request to the admin port (fresh connection).
Response admin(int port, const std::string& method, const std::string& path, const std::string& body = "",
               const std::string& extra = "Authorization: Bearer " + kToken + "\r\n",
               const std::string& type = "application/json") {
  RawClient c(port);
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n" + extra;
  if (!body.empty() || method == "PUT" || method == "POST" || method == "PATCH") {
    if (!type.empty()) req += "Content-Type: " + type + "\r\n";
    req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  }
  c.send(req + "\r\n" + body);
  return c.readResponse();
}

std::string authed(const std::string& more = "") { return "X-API-KEY: " + kToken + "\r\n" + more; }

std::string serverJson(const FakeUpstream& up, const std::string& extra = "") {
  return R"({"host": "127.0.0.1", "port": )" + std::to_string(up.port()) + extra + "}";
}

// A gateway with the admin API on port2, "backend" from the conf and a
// location proxying to upstream "dyn" (which the tests create).
void adminConf(Gateway& gw, const FakeUpstream& up, int workers = 2, const std::string& extra = "") {
  gw.setSimpleConf("location / { proxy_pass http://backend; }\nlocation /dyn { proxy_pass http://dyn; }",
                   "admin_listen 127.0.0.1:{PORT2};\nadmin_token " + kToken + ";\nupstream backend { server 127.0.0.1:" +
                       std::to_string(up.port()) + "; }\n" + extra,
                   workers);
}

TEST(AdminApiTest, EveryRouteNeedsTheToken) {
  FakeUpstream up;
  Gateway gw;
  adminConf(gw, up, 1);
  ASSERT_TRUE(gw.start());
  int checked = 0;
  for (const admin::Route& route : admin::routes()) {
    std::string path;
    for (std::string_view seg : route.pattern) path += "/" + std::string(seg == "*" ? "x" : seg);
    for (std::string_view m : route.methods) {
      std::string method(m);
      for (const std::string& creds : {std::string(), std::string("Authorization: Bearer wrong\r\n"),
                                       std::string("X-API-KEY: " + kToken + "x\r\n"),
                                       std::string("Authorization: Basic " + kToken + "\r\n")}) {
        Response r = admin(gw.port2(), method, path, "{}", creds);
        EXPECT_EQ(r.status, 401) << method << " " << path << " with [" << creds << "]";
        EXPECT_NE(r.body.find("\"error\""), std::string::npos);
      }
      Response ok = admin(gw.port2(), method, path, "{}");
      EXPECT_NE(ok.status, 401) << method << " " << path;
      checked++;
    }
  }
  EXPECT_GE(checked, 8);
  // The token never reaches the logs.
  EXPECT_EQ(gw.errorLog().find(kToken), std::string::npos);
  EXPECT_EQ(gw.accessLog().find(kToken), std::string::npos);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(AdminApiTest, DataPlaneListenersNeverReachTheAdminApi) {
  FakeUpstream up;
  Gateway gw;
  adminConf(gw, up, 1);
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  c.send("GET /upstreams HTTP/1.1\r\nHost: x\r\nX-API-KEY: " + kToken + "\r\nConnection: close\r\n\r\n");
  Response r = c.readResponse();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok");  // proxied to the backend like any other path
  ASSERT_EQ(up.requestCount(), 1u);
  EXPECT_EQ(up.requests()[0].target, "/upstreams");
  EXPECT_EQ(gw.stop(), 0);
}

TEST(AdminApiTest, AnUpstreamMadeAtRuntimeServesEveryWorkerAtOnce) {
  FakeUpstream conf_up, a, b;
  a.setDefault(Behaviour::respond(200, "from-a"));
  b.setDefault(Behaviour::respond(200, "from-b"));
  Gateway gw;
  adminConf(gw, conf_up, 2);
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/dyn").status, 502);  // named but not there yet

  Response put = admin(gw.port2(), "PUT", "/upstreams/dyn", R"({"servers": [)" + serverJson(a) + "]}");
  ASSERT_EQ(put.status, 201) << put.body;
  EXPECT_FALSE(put.header("etag").empty());
  EXPECT_NE(put.body.find("\"origin\":\"api\""), std::string::npos) << put.body;
  // Right after the 2xx, on whichever worker: the new upstream.
  for (int i = 0; i < 20; i++) ASSERT_EQ(httpGet(gw.port(), "/dyn").body, "from-a");

  // Add b, take a down: only b from now on.
  ASSERT_EQ(admin(gw.port2(), "POST", "/upstreams/dyn/servers", serverJson(b)).status, 200);
  Response down = admin(gw.port2(), "PATCH", "/upstreams/dyn/servers/127.0.0.1:" + std::to_string(a.port()),
                        R"({"down": true})");
  ASSERT_EQ(down.status, 200) << down.body;
  for (int i = 0; i < 20; i++) ASSERT_EQ(httpGet(gw.port(), "/dyn").body, "from-b");

  // The object reads back as written.
  Response got = admin(gw.port2(), "GET", "/upstreams/dyn");
  ASSERT_EQ(got.status, 200);
  EXPECT_EQ(got.header("etag"), admin(gw.port2(), "GET", "/upstreams/dyn").header("etag"));
  EXPECT_NE(got.body.find("\"down\":true"), std::string::npos) << got.body;
  Response all = admin(gw.port2(), "GET", "/upstreams");
  EXPECT_NE(all.body.find("\"name\":\"backend\""), std::string::npos);
  EXPECT_NE(all.body.find("\"name\":\"dyn\""), std::string::npos);
  // GET /config: the effective state, by name.
  nlohmann::json config = nlohmann::json::parse(admin(gw.port2(), "GET", "/config").body, nullptr, false);
  ASSERT_TRUE(config.is_object());
  EXPECT_EQ(config["upstreams"]["backend"]["origin"], "conf");
  EXPECT_EQ(config["upstreams"]["dyn"]["origin"], "api");
  EXPECT_EQ(config["upstreams"]["dyn"]["servers"].size(), 2u);

  // Remove b: a is down, so no live peer (503); delete the upstream: 502.
  ASSERT_EQ(admin(gw.port2(), "DELETE", "/upstreams/dyn/servers/127.0.0.1:" + std::to_string(b.port())).status, 200);
  EXPECT_EQ(httpGet(gw.port(), "/dyn").status, 503);
  ASSERT_EQ(admin(gw.port2(), "DELETE", "/upstreams/dyn").status, 200);
  for (int i = 0; i < 6; i++) EXPECT_EQ(httpGet(gw.port(), "/dyn").status, 502);
  EXPECT_EQ(admin(gw.port2(), "GET", "/upstreams/dyn").status, 404);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(AdminApiTest, ErrorsAreJsonWithTheRightStatus) {
  FakeUpstream up;
  Gateway gw;
  adminConf(gw, up, 1);
  ASSERT_TRUE(gw.start());
  int p = gw.port2();
  struct Case {
    std::string method, path, body, type;
    int status;
    std::string says, field;
  } cases[] = {
      {"PUT", "/upstreams/u", "{", "application/json", 400, "malformed JSON", ""},
      {"PUT", "/upstreams/u", R"({"servers": [{"host": "127.0.0.1", "port": 70000}]})", "application/json", 400,
       "from 1 to 65535", "servers[0].port"},
      {"PUT", "/upstreams/u", R"({"servers": [], "balancer": {"type": "magic"}})", "application/json", 400,
       "must be round_robin", "balancer.type"},
      {"PUT", "/upstreams/u", R"({"name": "other"})", "application/json", 400, "differs", "name"},
      {"PUT", "/upstreams/u", "[1]", "application/json", 400, "JSON object", ""},
      {"PUT", "/upstreams/bad%20name", R"({"servers": []})", "application/json", 400, "invalid upstream name", "name"},
      {"PUT", "/upstreams/u", "{}", "application/x-www-form-urlencoded", 415, "Content-Type: application/json", ""},
      {"GET", "/upstreams/none", "", "", 404, "no upstream", ""},
      {"PATCH", "/upstreams/none", "{}", "application/json", 404, "no upstream", ""},
      {"DELETE", "/upstreams/none", "", "", 404, "no upstream", ""},
      {"DELETE", "/upstreams/backend/servers/1.2.3.4:5", "", "", 404, "no server", ""},
      {"GET", "/nothing/here", "", "", 404, "no such route", ""},
      {"POST", "/upstreams", "{}", "application/json", 405, "not allowed", ""},
      {"DELETE", "/upstreams/backend", "", "", 409, "defined in the conf", ""},
      {"POST", "/upstreams/backend/servers", serverJson(up), "application/json", 409, "exists", "host"},
      {"PATCH", "/upstreams/backend/servers/127.0.0.1:" + std::to_string(up.port()), R"({"port": 1})",
       "application/json", 400, "identity", "port"},
  };
  for (const Case& c : cases) {
    Response r = admin(p, c.method, c.path, c.body, authed(), c.type);
    EXPECT_EQ(r.status, c.status) << c.method << " " << c.path << " " << c.body << " -> " << r.body;
    EXPECT_EQ(r.header("content-type"), "application/json");
    EXPECT_NE(r.body.find(c.says), std::string::npos) << c.method << " " << c.path << " -> " << r.body;
    if (!c.field.empty()) EXPECT_NE(r.body.find("\"field\":\"" + c.field + "\""), std::string::npos) << r.body;
  }
  EXPECT_EQ(admin(p, "POST", "/upstreams", "{}").header("allow"), "GET");
  // Too large (413) and too deep (400): refused before parsing.
  std::string big = "{\"servers\": [], \"pad\": \"" + std::string(1u << 20, 'x') + "\"}";
  Response r = admin(p, "PUT", "/upstreams/u", big);
  EXPECT_EQ(r.status, 413) << r.body;
  // Above the listener's own cap (8 MiB): refused from the head, still in JSON.
  RawClient huge(p);
  huge.send("PUT /upstreams/u HTTP/1.1\r\nHost: a\r\nX-API-KEY: " + kToken +
            "\r\nContent-Type: application/json\r\nContent-Length: 9000000\r\n\r\n{");
  r = huge.readResponse();
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_NE(r.body.find("\"error\""), std::string::npos) << r.body;
  std::string deep = std::string(100000, '[') + std::string(100000, ']');
  r = admin(p, "PUT", "/upstreams/u", deep);
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("nested deeper"), std::string::npos) << r.body;
  // A rejected write changed nothing.
  EXPECT_EQ(admin(p, "GET", "/upstreams/u").status, 404);
  EXPECT_EQ(httpGet(gw.port(), "/").status, 200);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(AdminApiTest, IfMatchLetsConcurrentWritersLoseNoUpdate) {
  FakeUpstream up;
  Gateway gw;
  adminConf(gw, up, 2);
  ASSERT_TRUE(gw.start());
  int p = gw.port2();
  ASSERT_EQ(admin(p, "PUT", "/upstreams/many", R"({"servers": []})").status, 201);
  // Stale ETag: 409, and nothing changes.
  Response first = admin(p, "GET", "/upstreams/many");
  std::string etag = first.header("etag");
  ASSERT_EQ(admin(p, "PATCH", "/upstreams/many", R"({"keepalive": 3})", authed("If-Match: " + etag + "\r\n")).status,
            200);
  Response stale = admin(p, "PATCH", "/upstreams/many", R"({"keepalive": 9})", authed("If-Match: " + etag + "\r\n"));
  EXPECT_EQ(stale.status, 409) << stale.body;
  EXPECT_NE(admin(p, "GET", "/upstreams/many").body.find("\"keepalive\":3"), std::string::npos);

  // Each writer adds its own server by read-modify-write with If-Match,
  // retrying on 409: every server must be there at the end.
  constexpr int kWriters = 6;
  std::atomic<int> conflicts{0};
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; w++) {
    writers.emplace_back([&, w] {
      for (int attempt = 0; attempt < 200; attempt++) {
        Response cur = admin(p, "GET", "/upstreams/many");
        std::string body = cur.body;
        size_t at = body.find("\"servers\":[");
        if (at == std::string::npos) return;
        std::string server = R"({"host": "127.0.0.1", "port": )" + std::to_string(20000 + w) + "}";
        bool empty = body.compare(at + 11, 1, "]") == 0;
        body.insert(at + 11, server + (empty ? "" : ","));
        Response r = admin(p, "PUT", "/upstreams/many", body, authed("If-Match: " + cur.header("etag") + "\r\n"));
        if (r.status == 200) return;
        if (r.status == 409) conflicts++;
      }
    });
  }
  for (auto& t : writers) t.join();
  std::string final_body = admin(p, "GET", "/upstreams/many").body;
  for (int w = 0; w < kWriters; w++) {
    EXPECT_NE(final_body.find("\"port\":" + std::to_string(20000 + w)), std::string::npos) << w << ": " << final_body;
  }
  EXPECT_EQ(gw.stop(), 0);
}

TEST(AdminApiTest, ChangesPersistAcrossRestartAndReloadAndWinOverTheConf) {
  FakeUpstream conf_up, runtime_up;
  runtime_up.setDefault(Behaviour::respond(200, "runtime"));
  Gateway gw;
  adminConf(gw, conf_up, 2);
  ASSERT_TRUE(gw.start());
  ASSERT_EQ(admin(gw.port2(), "PUT", "/upstreams/dyn", R"({"servers": [)" + serverJson(runtime_up) + "]}").status, 201);
  // Replacing the conf's upstream at runtime: the runtime one wins.
  ASSERT_EQ(admin(gw.port2(), "PUT", "/upstreams/backend", R"({"servers": [)" + serverJson(runtime_up) + "]}").status,
            200);
  EXPECT_EQ(httpGet(gw.port(), "/").body, "runtime");
  ASSERT_TRUE(gw.prefix().exists("state/upstreams.json"));

  // A reload keeps it.
  std::vector<pid_t> old = gw.workerPids();
  gw.signal(SIGHUP);
  ASSERT_TRUE(waitFor([&] {
    for (pid_t w : gw.workerPids()) {
      for (pid_t o : old) {
        if (w == o) return false;
      }
    }
    return gw.workerPids().size() == 2;
  }));
  EXPECT_EQ(httpGet(gw.port(), "/").body, "runtime");
  EXPECT_EQ(httpGet(gw.port(), "/dyn").body, "runtime");

  // A restart keeps it.
  ASSERT_EQ(gw.stop(), 0);
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/dyn").body, "runtime");
  EXPECT_EQ(httpGet(gw.port(), "/").body, "runtime");
  // Deleting the runtime version brings the conf's back.
  Response del = admin(gw.port2(), "DELETE", "/upstreams/backend");
  ASSERT_EQ(del.status, 200) << del.body;
  EXPECT_NE(del.body.find("\"restored_from_conf\":true"), std::string::npos);
  EXPECT_EQ(httpGet(gw.port(), "/").body, "ok");
  ASSERT_EQ(gw.stop(), 0);
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/").body, "ok");
  EXPECT_EQ(httpGet(gw.port(), "/dyn").body, "runtime");
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(AdminApiTest, DyupsAndSlardarRoutesWork) {
  FakeUpstream conf_up, a, b;
  a.setDefault(Behaviour::respond(200, "from-a"));
  b.setDefault(Behaviour::respond(200, "from-b"));
  Gateway gw;
  adminConf(gw, conf_up, 2);
  ASSERT_TRUE(gw.start());
  int p = gw.port2();
  std::string pa = std::to_string(a.port()), pb = std::to_string(b.port());
  // dyups: a text body (curl -d sends it form-encoded), "success".
  Response r = admin(p, "POST", "/upstream/dyn",
                     "server 127.0.0.1:" + pa + " weight=2 max_fails=3 fail_timeout=5s;server 127.0.0.1:" + pb + ";",
                     authed(), "application/x-www-form-urlencoded");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "success");
  std::set<std::string> seen;
  for (int i = 0; i < 12; i++) seen.insert(httpGet(gw.port(), "/dyn").body);
  EXPECT_EQ(seen, (std::set<std::string>{"from-a", "from-b"}));
  EXPECT_EQ(admin(p, "GET", "/list").body, "backend\ndyn\n");
  std::string line_a = "server 127.0.0.1:" + pa + " weight=2 max_conns=0 max_fails=3 fail_timeout=5 backup=0 down=0\n";
  EXPECT_EQ(admin(p, "GET", "/upstream/dyn").body,
            line_a + "server 127.0.0.1:" + pb + " weight=1 max_conns=0 max_fails=1 fail_timeout=10 backup=0 down=0\n");
  EXPECT_NE(admin(p, "GET", "/detail").body.find("dyn\n" + line_a), std::string::npos);
  r = admin(p, "POST", "/upstream/dyn", "server 127.0.0.1:1 colour=red;", authed(), "");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("invalid parameter \"colour=red\""), std::string::npos) << r.body;
  // Slardar: JSON, same answer.
  r = admin(p, "POST", "/upstream/dyn", R"({"servers": [{"host": "127.0.0.1", "port": )" + pb + R"(}], "keepalive": 20})",
            authed(), "");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body, "success");
  for (int i = 0; i < 6; i++) EXPECT_EQ(httpGet(gw.port(), "/dyn").body, "from-b");
  EXPECT_EQ(admin(p, "DELETE", "/upstream/dyn").body, "success");
  EXPECT_EQ(admin(p, "GET", "/upstream/dyn").status, 404);
  EXPECT_EQ(httpGet(gw.port(), "/dyn").status, 502);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(AdminApiTest, StatusShowsHealthWithHistory) {
  FakeUpstream conf_up;
  RefusingPort refusing;
  Gateway gw;
  adminConf(gw, conf_up, 2);
  ASSERT_TRUE(gw.start());
  int p = gw.port2();
  ASSERT_EQ(admin(p, "PUT", "/upstreams/dyn",
                  R"({"servers": [{"host": "127.0.0.1", "port": )" + std::to_string(refusing.port()) +
                      R"(, "max_fails": 1, "fail_timeout": 60}, )" + serverJson(conf_up) + "]}")
                .status,
            201);
  // One failed try (retried on the other server) takes the refusing one out.
  EXPECT_EQ(httpGet(gw.port(), "/dyn").status, 200);
  EXPECT_EQ(httpGet(gw.port(), "/dyn").status, 200);
  Response st = admin(p, "GET", "/status");
  ASSERT_EQ(st.status, 200);
  std::string refusing_id = "127.0.0.1:" + std::to_string(refusing.port());
  nlohmann::json doc = nlohmann::json::parse(st.body, nullptr, false);
  ASSERT_TRUE(doc.contains("cls:dyn")) << st.body;
  nlohmann::json entry;
  for (const auto& s : doc["cls:dyn"]) {
    if (s["server"] == refusing_id) entry = s;
  }
  ASSERT_TRUE(entry.is_object()) << st.body;
  EXPECT_EQ(entry["status"], "err");
  EXPECT_NE(entry["msg"].get<std::string>().find("Connection refused"), std::string::npos) << entry;
  EXPECT_EQ(entry["fail_num"], 1);
  EXPECT_TRUE(entry["lastmodified"].is_string());
  ASSERT_EQ(entry["history"].size(), 1u);
  EXPECT_EQ(entry["history"][0]["status"], "err");
  EXPECT_NE(entry["history"][0]["reason"].get<std::string>().find("max_fails"), std::string::npos);
  EXPECT_NE(st.body.find("\"status\":\"ok\""), std::string::npos);
  EXPECT_EQ(gw.stop(), 0);
}

// One request over a unix-domain socket; the raw response text.
std::string unixRequest(const std::string& path, const std::string& request) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  memcpy(un.sun_path, path.data(), path.size());
  std::string out;
  if (connect(fd, reinterpret_cast<sockaddr*>(&un), sizeof(un)) == 0 &&
      write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

TEST(AdminApiTest, AUnixSocketListener) {
  FakeUpstream up;
  Gateway gw;
  gw.setSimpleConf("location / { proxy_pass http://backend; }",
                   "admin_listen unix:{PREFIX}/admin.sock; admin_token " + kToken +
                       "; upstream backend { server 127.0.0.1:" + std::to_string(up.port()) + "; }",
                   2);
  std::string sock = gw.path("admin.sock");
  for (int run = 0; run < 2; run++) {  // the second start replaces the file the first left
    ASSERT_TRUE(gw.start());
    std::string ok = unixRequest(sock, "GET /upstreams HTTP/1.1\r\nHost: a\r\nX-API-KEY: " + kToken +
                                           "\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(ok.rfind("HTTP/1.1 200", 0), 0u) << ok;
    EXPECT_NE(ok.find("\"name\":\"backend\""), std::string::npos);
    std::string no = unixRequest(sock, "GET /upstreams HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(no.rfind("HTTP/1.1 401", 0), 0u) << no;
    struct stat st;
    ASSERT_EQ(stat(sock.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    EXPECT_EQ(gw.stop(), 0);
  }
}

TEST(AdminApiTest, ConfRulesForTheAdminListener) {
  struct Case {
    std::string http;
    std::string says;
  } cases[] = {
      {"admin_listen 127.0.0.1:{PORT2};", "admin_listen needs an admin_token"},
      {"admin_listen 0.0.0.0:{PORT2}; admin_token short-token;", "32 characters or more"},
      {"admin_listen 127.0.0.1:{PORT}; admin_token t;", "shares its port"},
      {"admin_listen 127.0.0.1:{PORT2}; admin_token env:TIDEGATE_TEST_NO_SUCH_VAR;", "is not set"},
      {"admin_listen 127.0.0.1:nope; admin_token t;", "invalid address"},
  };
  for (const Case& c : cases) {
    Gateway gw;
    gw.setSimpleConf("location / { return 200; }", c.http);
    RunResult r = runTidegate({"-t", "-p", gw.prefix().path(), "-c", gw.path("conf/tidegate.conf")});
    EXPECT_NE(r.exit_code, 0) << c.http;
    EXPECT_NE(r.err.find(c.says), std::string::npos) << c.http << " -> " << r.err;
  }
  // A long token from the environment on a wildcard address is fine.
  setenv("TIDEGATE_TEST_ADMIN_TOKEN", "0123456789abcdef0123456789abcdef", 1);
  Gateway gw;
  gw.setSimpleConf("location / { return 200; }",
                   "admin_listen 0.0.0.0:{PORT2}; admin_token env:TIDEGATE_TEST_ADMIN_TOKEN;");
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port2());
  c.send("GET /upstreams HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer 0123456789abcdef0123456789abcdef\r\n"
         "Connection: close\r\n\r\n");
  EXPECT_EQ(c.readResponse().status, 200);
  EXPECT_EQ(gw.stop(), 0);
  unsetenv("TIDEGATE_TEST_ADMIN_TOKEN");
}

}  // namespace
}  // namespace tidegate::test
