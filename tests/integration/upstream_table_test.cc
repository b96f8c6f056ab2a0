// The shared upstream table across processes, through require
// "tidegate.upstream": a set_down made in one worker steers every worker's
// traffic, passive health counted by one worker is what all of them read
// and act on, and a reload keeps the health of servers that stay while it
// drops upstreams the conf no longer has.
#include <gtest/gtest.h>
#include <signal.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "fake_upstream.h"
#include "harness.h"

namespace tidegate::test {
namespace {

// X-Worker: the worker that served; X-Up: the addresses it tried.
const char* kServer = R"(
    location / {
        proxy_pass http://backend;
        header_filter_by_lua_block {
            ngx.header["X-Worker"] = ngx.worker.pid()
            ngx.header["X-Up"] = ngx.var.upstream_addr
        }
    }
    location /set {
        content_by_lua_block {
            local up = require "tidegate.upstream"
            ngx.say(up.set_down("backend", ngx.var.arg_s, ngx.var.arg_d == "1"))
        }
    }
    location /status {
        content_by_lua_block {
            local up = require "tidegate.upstream"
            ngx.header["X-Worker"] = ngx.worker.pid()
            local weights = {}
            for _, s in ipairs(up.get_servers("backend")) do weights[#weights + 1] = s.weight end
            ngx.say(table.concat(up.get_upstreams(), ","), " weights=", table.concat(weights, ","))
            for _, s in ipairs(up.get_status("backend")) do
                local h = s.history[#s.history]
                ngx.say(s.server, " ", s.status, " fail_num=", s.fail_num, " history=", #s.history,
                        " last=", h and h.reason or "-", " msg=", s.msg)
            end
        }
    }
)";

std::string addr(int port) { return "127.0.0.1:" + std::to_string(port); }

std::string backend(const std::string& servers) { return "upstream backend { " + servers + " }\n"; }

// Two workers serving kServer, each on its own listening socket (reuseport):
// the kernel spreads connections over both by their source port. With one
// shared socket the worker that wins every accept may serve all 400 tries
// of spread() or statusEverywhere() (seen once under ASan).
void twoWorkers(Gateway& gw, const std::string& http_extra) { gw.setSimpleConf(kServer, http_extra, 2, "", " reuseport"); }

// Proxied requests (a connection each) until both workers served at least
// `n` between them: worker pid -> the X-Up values it answered with. Stops
// early (with fewer workers) after 400 requests.
std::map<std::string, std::set<std::string>> spread(const Gateway& gw, int n) {
  std::map<std::string, std::set<std::string>> seen;
  for (int i = 0; i < 400 && (i < n || seen.size() < 2); i++) {
    Response r = httpGet(gw.port(), "/");
    EXPECT_EQ(r.status, 200) << gw.errorLog();
    seen[r.header("x-worker")].insert(r.header("x-up"));
  }
  return seen;
}

// /status as every worker answers it: worker pid -> body.
std::map<std::string, std::string> statusEverywhere(const Gateway& gw) {
  std::map<std::string, std::string> seen;
  for (int i = 0; i < 400 && seen.size() < 2; i++) {
    Response r = httpGet(gw.port(), "/status");
    EXPECT_EQ(r.status, 200) << gw.errorLog();
    seen[r.header("x-worker")] = r.body;
  }
  return seen;
}

TEST(UpstreamTableTest, SetDownInOneWorkerStopsTrafficFromEveryWorker) {
  FakeUpstream a, b;
  Gateway gw;
  twoWorkers(gw, backend("server " + addr(a.port()) + "; server " + addr(b.port()) + ";"));
  ASSERT_TRUE(gw.start());
  ASSERT_EQ(spread(gw, 20).size(), 2u);
  ASSERT_GT(a.requestCount(), 0u);
  ASSERT_GT(b.requestCount(), 0u);

  ASSERT_EQ(httpGet(gw.port(), "/set?d=1&s=" + addr(a.port())).body, "true\n");
  size_t a_before = a.requestCount();
  std::map<std::string, std::set<std::string>> after = spread(gw, 40);
  ASSERT_EQ(after.size(), 2u);
  for (const auto& [pid, ups] : after) EXPECT_EQ(ups, std::set<std::string>{addr(b.port())}) << "worker " << pid;
  EXPECT_EQ(a.requestCount(), a_before);
  for (const auto& [pid, body] : statusEverywhere(gw)) {
    EXPECT_NE(body.find(addr(a.port()) + " down fail_num=0 history=1 last=set down by hand"), std::string::npos)
        << pid << ": " << body;
  }

  // Up again: every worker sends it traffic on its next requests.
  ASSERT_EQ(httpGet(gw.port(), "/set?d=0&s=" + addr(a.port())).body, "true\n");
  std::set<std::string> back;
  EXPECT_TRUE(waitFor([&] {
    Response r = httpGet(gw.port(), "/");
    if (r.header("x-up") == addr(a.port())) back.insert(r.header("x-worker"));
    return back.size() == 2;
  }));
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(UpstreamTableTest, PassiveHealthIsSharedByEveryWorker) {
  RefusingPort bad;
  FakeUpstream good;
  Gateway gw;
  twoWorkers(gw, backend("server " + addr(bad.port()) + " max_fails=1 fail_timeout=30s; server " +
                         addr(good.port()) + ";"));
  ASSERT_TRUE(gw.start());
  // One try against the refusing server (then the next server answers).
  ASSERT_TRUE(waitFor([&] {
    Response r = httpGet(gw.port(), "/");
    EXPECT_EQ(r.status, 200);
    return r.header("x-up").find(addr(bad.port())) != std::string::npos;
  }));
  std::map<std::string, std::string> status = statusEverywhere(gw);
  ASSERT_EQ(status.size(), 2u);
  for (const auto& [pid, body] : status) {
    EXPECT_NE(body.find(addr(bad.port()) + " err fail_num=1 history=1 last=1 failure (max_fails)"),
              std::string::npos)
        << pid << ": " << body;
    EXPECT_NE(body.find("msg=connect() failed (111: Connection refused)"), std::string::npos) << pid << ": " << body;
    EXPECT_NE(body.find(addr(good.port()) + " ok fail_num=0 history=0"), std::string::npos) << pid << ": " << body;
  }
  // No worker tries it again while its fail_timeout lasts.
  std::map<std::string, std::set<std::string>> after = spread(gw, 40);
  ASSERT_EQ(after.size(), 2u);
  for (const auto& [pid, ups] : after) EXPECT_EQ(ups, std::set<std::string>{addr(good.port())}) << "worker " << pid;
  EXPECT_EQ(gw.stop(), 0);
}

TEST(UpstreamTableTest, AReloadKeepsTheHealthOfServersThatStayAndDropsRemovedUpstreams) {
  FakeUpstream a, b;
  Gateway gw;
  auto conf = [&](int weight, const std::string& extra) {
    return backend("server " + addr(a.port()) + " weight=" + std::to_string(weight) + "; server " +
                   addr(b.port()) + ";") +
           extra;
  };
  twoWorkers(gw, conf(1, "upstream extra { server " + addr(b.port()) + "; }"));
  ASSERT_TRUE(gw.start());
  ASSERT_EQ(httpGet(gw.port(), "/set?d=1&s=" + addr(a.port())).body, "true\n");
  for (const auto& [pid, body] : statusEverywhere(gw)) {
    EXPECT_EQ(body.substr(0, body.find('\n')), "backend,extra weights=1,1") << pid;
  }

  std::vector<pid_t> old_workers = gw.workerPids();
  twoWorkers(gw, conf(2, ""));
  gw.signal(SIGHUP);
  ASSERT_TRUE(gw.waitWorkersReplaced(old_workers, 2)) << gw.errorLog();

  std::map<std::string, std::string> status = statusEverywhere(gw);
  ASSERT_EQ(status.size(), 2u);
  for (const auto& [pid, body] : status) {
    EXPECT_EQ(body.substr(0, body.find('\n')), "backend weights=2,1") << pid;
    EXPECT_NE(body.find(addr(a.port()) + " down fail_num=0 history=1 last=set down by hand"), std::string::npos)
        << pid << ": " << body;
  }
  std::map<std::string, std::set<std::string>> after = spread(gw, 40);
  ASSERT_EQ(after.size(), 2u);
  for (const auto& [pid, ups] : after) EXPECT_EQ(ups, std::set<std::string>{addr(b.port())}) << "worker " << pid;
  EXPECT_EQ(a.requestCount(), 0u);
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

}  // namespace
}  // namespace tidegate::test
