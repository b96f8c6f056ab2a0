// Master/worker life: -t, respawn, reload under load, graceful and fast
// stop, log reopening, -s signals through the pid file.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <thread>

#include "harness.h"

namespace tidegate::test {
namespace {

const char* kServer = "    location / { return 200 \"v1\"; }\n";

TEST(ConfTest, DashTAcceptsValidConf) {
  Gateway gw;
  gw.setSimpleConf(kServer);
  RunResult r = runTidegate({"-p", gw.prefix().path(), "-c", "conf/tidegate.conf", "-t"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("syntax is ok"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("test is successful"), std::string::npos) << r.err;
}

TEST(ConfTest, DashTRejectsWithFileAndLineAndBindsNothing) {
  Gateway gw;
  gw.setConf("events {}\nhttp {\n  server {\n    listen 127.0.0.1:{PORT};\n    bogus_directive on;\n  }\n}\n");
  RunResult r = runTidegate({"-p", gw.prefix().path(), "-c", "conf/tidegate.conf", "-t"});
  EXPECT_NE(r.exit_code, 0);
  std::string conf = gw.path("conf/tidegate.conf");
  EXPECT_NE(r.err.find("unknown directive \"bogus_directive\" in " + conf + ":8"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("test failed"), std::string::npos) << r.err;
}

TEST(ConfTest, DashTDoesNotBind) {
  Gateway gw;
  gw.setSimpleConf(kServer);
  ASSERT_TRUE(gw.start());
  // The port is taken by the running gateway; -t must still succeed.
  RunResult r = runTidegate({"-p", gw.prefix().path(), "-c", "conf/tidegate.conf", "-t", "-q"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ConfTest, VersionAndHelp) {
  RunResult v = runTidegate({"-v"});
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_NE(v.err.find("tidegate version: tidegate/"), std::string::npos);
  RunResult h = runTidegate({"-h"});
  EXPECT_EQ(h.exit_code, 0);
  EXPECT_NE(h.err.find("-s signal"), std::string::npos);
  RunResult bad = runTidegate({"-x"});
  EXPECT_NE(bad.exit_code, 0);
}

TEST(ConfTest, GlobalDirectivesFromCommandLine) {
  Gateway gw;
  gw.setConf("events {}\nhttp { server { listen 127.0.0.1:{PORT}; return 200 \"g\"; } }\n");
  RunResult r = runTidegate({"-p", gw.prefix().path(), "-c", "conf/tidegate.conf", "-g", "worker_processes 2;", "-t"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  RunResult bad = runTidegate({"-p", gw.prefix().path(), "-c", "conf/tidegate.conf", "-g", "nope;", "-t"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("unknown directive \"nope\" in command line:1"), std::string::npos) << bad.err;
}

TEST(ProcessTest, StartsWorkersAndWritesPidFile) {
  Gateway gw;
  gw.setSimpleConf(kServer, "", 2);
  ASSERT_TRUE(gw.start());
  EXPECT_TRUE(waitFor([&] { return gw.workerPids().size() == 2; }));
  EXPECT_EQ(gw.prefix().read("logs/tidegate.pid"), std::to_string(gw.masterPid()) + "\n");
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_FALSE(gw.prefix().exists("logs/tidegate.pid"));
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(ProcessTest, KilledWorkerIsRespawnedQuickly) {
  Gateway gw;
  gw.setSimpleConf(kServer, "", 2);
  ASSERT_TRUE(gw.start());
  ASSERT_TRUE(waitFor([&] { return gw.workerPids().size() == 2; }));
  std::vector<pid_t> before = gw.workerPids();
  // A keepalive connection on the other worker must survive.
  auto start = std::chrono::steady_clock::now();
  kill(before[0], SIGKILL);
  ASSERT_TRUE(waitFor([&] {
    auto now = gw.workerPids();
    return now.size() == 2 && std::find(now.begin(), now.end(), before[0]) == now.end();
  }, Ms(5000)));
  auto took = std::chrono::duration_cast<Ms>(std::chrono::steady_clock::now() - start);
  EXPECT_LT(took.count(), 1000);
  EXPECT_TRUE(gw.waitLog("exited on signal 9"));
  for (int i = 0; i < 10; i++) EXPECT_EQ(httpGet(gw.port(), "/").status, 200);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProcessTest, WorkerThatKeepsDyingBacksOff) {
  Gateway gw;
  gw.setSimpleConf(kServer, "", 1);
  ASSERT_TRUE(gw.start());
  for (int i = 0; i < 4; i++) {
    pid_t w = -1;
    ASSERT_TRUE(waitFor([&] {
      auto pids = gw.workerPids();
      if (pids.empty()) return false;
      w = pids[0];
      return true;
    }, Ms(10000)));
    kill(w, SIGKILL);
    waitFor([&] { auto p = gw.workerPids(); return p.empty() || p[0] != w; }, Ms(10000));
  }
  EXPECT_TRUE(gw.waitLog("keeps dying"));
  EXPECT_TRUE(waitFor([&] { return gw.workerPids().size() == 1; }, Ms(10000)));
  EXPECT_EQ(httpGet(gw.port(), "/").status, 200);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProcessTest, ReloadUnderLoadFailsNoRequest) {
  Gateway gw;
  gw.setSimpleConf(kServer, "", 2);
  ASSERT_TRUE(gw.start());
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0}, v2{0};
  auto client = [&] {
    while (!stop) {
      // Half on fresh connections, half on a keepalive one.
      Response r = httpGet(gw.port(), "/");
      if (r.status == 200 && r.complete) ok++;
      else { failed++; fprintf(stderr, "fresh failed: %d\n", r.status); }
      if (r.body == "v2") v2++;
    }
  };
  auto keepalive = [&] {
    // Behaves like a real HTTP client (RFC 9112 9.3.1): a request on a reused
    // connection that the server closed before any response byte is retried
    // on a new connection; anything else counts as a failure.
    RawClient c(gw.port());
    bool reused = false;
    while (!stop) {
      bool sent = c.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
      Response r = sent ? c.readResponse() : Response{};
      if (r.status == 0 && reused) {
        c.connect(gw.port());
        reused = false;
        continue;
      }
      if (r.status == 200) ok++;
      else { failed++; fprintf(stderr, "keepalive failed: %d\n", r.status); }
      reused = true;
      if (r.header("connection") == "close") {
        c.connect(gw.port());
        reused = false;
      }
    }
  };
  std::thread t1(client), t2(keepalive);
  ASSERT_TRUE(waitFor([&] { return ok > 50; }));
  gw.setSimpleConf("    location / { return 200 \"v2\"; }\n", "", 2);
  for (int i = 0; i < 3; i++) {
    std::vector<pid_t> old = gw.workerPids();
    gw.signal(SIGHUP);
    // Wait until every old worker has drained and exited, then keep going.
    ASSERT_TRUE(gw.waitWorkersReplaced(old, 2));
    int seen = ok;
    waitFor([&] { return ok > seen + 200; });
  }
  EXPECT_TRUE(waitFor([&] { return v2 > 0; }));
  stop = true;
  t1.join();
  t2.join();
  EXPECT_EQ(failed, 0);
  EXPECT_GT(ok, 300);
  EXPECT_TRUE(waitFor([&] { return gw.workerPids().size() == 2; }));
  EXPECT_EQ(gw.stop(), 0);
  EXPECT_TRUE(gw.seriousLogLines().empty()) << gw.errorLog();
}

TEST(ProcessTest, ReloadWithInvalidConfKeepsServing) {
  Gateway gw;
  gw.setSimpleConf(kServer, "", 1);
  ASSERT_TRUE(gw.start());
  std::vector<pid_t> before = gw.workerPids();
  gw.setSimpleConf("    location / { retrun 200; }\n", "", 1);
  gw.signal(SIGHUP);
  EXPECT_TRUE(gw.waitLog("reconfiguration failed"));
  EXPECT_NE(gw.errorLog().find("unknown directive \"retrun\""), std::string::npos);
  EXPECT_EQ(httpGet(gw.port(), "/").body, "v1");
  EXPECT_EQ(gw.workerPids(), before);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProcessTest, ReloadAddsListener) {
  Gateway gw;
  gw.setSimpleConf(kServer);
  ASSERT_TRUE(gw.start());
  gw.setSimpleConf(std::string(kServer) + "    listen 127.0.0.1:{PORT2};\n");
  gw.signal(SIGHUP);
  EXPECT_TRUE(waitFor([&] { return httpGet(gw.port2(), "/").status == 200; }));
  EXPECT_EQ(httpGet(gw.port(), "/").status, 200);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProcessTest, GracefulQuitFinishesInFlightRequest) {
  Gateway gw;
  gw.setSimpleConf(kServer, "client_body_timeout 10s;");
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  // A request whose body is still arriving when QUIT comes.
  c.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab");
  RawClient idle(gw.port());
  idle.send("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(idle.readResponse().status, 200);
  ASSERT_TRUE(waitFor([&] { return gw.errorLog().find("start worker") != std::string::npos; }));
  gw.signal(SIGQUIT);
  EXPECT_TRUE(idle.waitClosed(Ms(5000)));  // idle keepalive connections close at once
  c.send("cd");
  Response r = c.readResponse();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_EQ(gw.waitExit(Ms(10000)), 0);
}

TEST(ProcessTest, FastStop) {
  Gateway gw;
  gw.setSimpleConf(kServer, "", 2);
  ASSERT_TRUE(gw.start());
  RawClient c(gw.port());
  c.send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab");
  EXPECT_EQ(gw.stopWith(SIGTERM, Ms(5000)), 0);
  EXPECT_TRUE(c.waitClosed(Ms(5000)));
}

TEST(ProcessTest, ReopenLogs) {
  Gateway gw;
  gw.setSimpleConf(kServer, "", 2);
  ASSERT_TRUE(gw.start());
  EXPECT_EQ(httpGet(gw.port(), "/first").status, 200);
  ASSERT_TRUE(waitFor([&] { return gw.accessLog().find("/first") != std::string::npos; }));
  ASSERT_EQ(rename(gw.path("logs/access.log").c_str(), gw.path("logs/access.log.1").c_str()), 0);
  ASSERT_EQ(rename(gw.path("logs/error.log").c_str(), gw.path("logs/error.log.1").c_str()), 0);
  gw.signal(SIGUSR1);
  ASSERT_TRUE(waitFor([&] { return gw.prefix().exists("logs/error.log"); }));
  // Both workers say so in the new error log; from then on requests land in
  // the new access log only.
  ASSERT_TRUE(waitFor([&] {
    std::string log = gw.errorLog();
    size_t first = log.find("worker reopened its logs");
    return first != std::string::npos && log.find("worker reopened its logs", first + 1) != std::string::npos;
  })) << gw.errorLog();
  EXPECT_EQ(httpGet(gw.port(), "/second").status, 200);
  EXPECT_TRUE(waitFor([&] { return gw.accessLog().find("/second") != std::string::npos; }));
  EXPECT_EQ(gw.prefix().read("logs/access.log.1").find("/second"), std::string::npos);
  EXPECT_EQ(gw.stop(), 0);
}

TEST(ProcessTest, SignalsThroughPidFile) {
  Gateway gw;
  gw.setSimpleConf(kServer);
  ASSERT_TRUE(gw.start());
  gw.setSimpleConf("    location / { return 200 \"v2\"; }\n");
  RunResult r = runTidegate({"-p", gw.prefix().path(), "-c", "conf/tidegate.conf", "-s", "reload"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(waitFor([&] { return httpGet(gw.port(), "/").body == "v2"; }));
  r = runTidegate({"-p", gw.prefix().path(), "-c", "conf/tidegate.conf", "-s", "quit"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(gw.waitExit(Ms(10000)), 0);
}

TEST(ProcessTest, DaemonMode) {
  Gateway gw;
  gw.setConf("daemon on;\nevents {}\nhttp { server { listen 127.0.0.1:{PORT}; return 200 \"d\"; } }\n");
  RunResult r = runTidegate({"-p", gw.prefix().path(), "-c", "conf/tidegate.conf"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(waitFor([&] { return httpGet(gw.port(), "/").body == "d"; }));
  std::string pid_text = gw.prefix().read("logs/tidegate.pid");
  pid_t pid = static_cast<pid_t>(std::atoi(pid_text.c_str()));
  ASSERT_GT(pid, 0);
  std::vector<pid_t> workers = childrenOf(pid);
  kill(pid, SIGQUIT);
  EXPECT_TRUE(waitFor([&] { return kill(pid, 0) != 0; }));
  for (pid_t w : workers) EXPECT_TRUE(waitFor([&] { return kill(w, 0) != 0; }));
}

TEST(ProcessTest, SingleProcessMode) {
  Gateway gw;
  gw.setSimpleConf(kServer, "", 1, "master_process off;");
  ASSERT_TRUE(gw.start());
  EXPECT_TRUE(gw.workerPids().empty());
  EXPECT_EQ(httpGet(gw.port(), "/").body, "v1");
  EXPECT_EQ(gw.stop(), 0);
}

}  // namespace
}  // namespace tidegate::test
