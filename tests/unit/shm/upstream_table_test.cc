// The shared upstream table: versioned specs, health records keyed by
// address (passive windows, active thresholds, manual down, history), the
// checker election, and recovery from a writer killed holding the lock.
#include "shm/upstream_table.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <optional>

#include "shm/test_hooks.h"

namespace tidegate::shm {
namespace {

int64_t g_mono = 1'000'000;
int64_t g_wall = 1'700'000'000'000;
int64_t fakeMono() { return g_mono; }
int64_t fakeWall() { return g_wall; }

class UpstreamTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    g_mono = 1'000'000;
    std::string err;
    zone_ = Zone::create(1 << 20, &err);
    ASSERT_NE(zone_, nullptr) << err;
    ASSERT_TRUE(UpstreamTable::init(*zone_, &err)) << err;
    table_.emplace(*zone_, fakeMono, fakeWall);
  }
  void TearDown() override {
    std::string why;
    EXPECT_TRUE(table_->check(&why)) << why;
  }
  ServerHealth healthOf(std::string_view upstream, const std::string& server) {
    std::vector<ServerHealth> out;
    table_->health(upstream, {server}, &out);
    return out.at(0);
  }
  void put(std::string_view name, std::string_view spec) {
    std::string err;
    ASSERT_TRUE(table_->put(name, spec, &err)) << err;
  }

  std::unique_ptr<Zone> zone_;
  std::optional<UpstreamTable> table_;
};

TEST_F(UpstreamTableTest, PutPublishesANewVersionOnlyWhenTheSpecChanges) {
  uint64_t v0 = table_->version();
  put("Backend", "{\"a\":1}");
  uint64_t v1 = table_->version();
  EXPECT_GT(v1, v0);
  UpstreamTable::Entry e;
  ASSERT_TRUE(table_->get("backend", &e));  // names are case-insensitive
  EXPECT_EQ(e.name, "Backend");
  EXPECT_EQ(e.spec, "{\"a\":1}");
  uint64_t entry_v1 = e.version;

  put("BACKEND", "{\"a\":1}");
  EXPECT_EQ(table_->version(), v1);  // the same text: nothing moved
  put("backend", "{\"a\":2, \"longer\": true}");
  EXPECT_GT(table_->version(), v1);
  ASSERT_TRUE(table_->get("backend", &e));
  EXPECT_EQ(e.spec, "{\"a\":2, \"longer\": true}");
  EXPECT_GT(e.version, entry_v1);
  EXPECT_EQ(e.name, "Backend");  // the name as first published
}

TEST_F(UpstreamTableTest, ListKeepsPublishingOrderAndSkipsSpecsTheCallerHas) {
  put("one", "1");
  put("two", "2");
  put("three", "3");
  std::vector<UpstreamTable::Entry> all;
  uint64_t v = table_->list(&all);
  EXPECT_EQ(v, table_->version());
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].name, "one");
  EXPECT_EQ(all[2].name, "three");
  uint64_t two_version = all[1].version;
  std::vector<UpstreamTable::Entry> again;
  table_->list(&again, [&](std::string_view name) { return name == "two" ? two_version : 0; });
  ASSERT_EQ(again.size(), 3u);
  EXPECT_EQ(again[0].spec, "1");
  EXPECT_EQ(again[1].spec, "");  // known: not copied
  EXPECT_EQ(again[2].spec, "3");

  EXPECT_TRUE(table_->remove("TWO"));
  EXPECT_FALSE(table_->remove("two"));
  table_->list(&all);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1].name, "three");
  put("four", "4");  // the tail link is right after removing from the middle
  table_->list(&all);
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[2].name, "four");
}

TEST_F(UpstreamTableTest, PassiveFailuresTakeAServerOutWithinTheirWindow) {
  const std::string s = "10.0.0.1:80";
  uint64_t v = table_->version();
  EXPECT_FALSE(table_->reportFailure("up", s, 3, 10'000, "connect() failed (111: Connection refused)"));
  EXPECT_FALSE(table_->reportFailure("up", s, 3, 10'000, "timeout"));
  EXPECT_EQ(table_->version(), v);  // counting alone moves nothing
  ServerHealth h = healthOf("up", s);
  EXPECT_EQ(h.passive_fails, 2u);
  EXPECT_EQ(h.fail_num, 2u);
  EXPECT_EQ(h.last_error, "timeout");
  EXPECT_TRUE(h.healthy(g_mono));

  // The window is over: the count starts again.
  g_mono += 10'001;
  EXPECT_FALSE(table_->reportFailure("up", s, 3, 10'000, "a"));
  EXPECT_FALSE(table_->reportFailure("up", s, 3, 10'000, "b"));
  EXPECT_TRUE(table_->reportFailure("up", s, 3, 10'000, "c"));
  EXPECT_GT(table_->version(), v);
  h = healthOf("up", s);
  EXPECT_FALSE(h.healthy(g_mono));
  EXPECT_EQ(h.passive_down_until, g_mono + 10'000);
  ASSERT_EQ(h.history.size(), 1u);
  EXPECT_FALSE(h.history[0].healthy);
  EXPECT_EQ(h.history[0].at_ms, g_wall);
  EXPECT_NE(h.history[0].reason.find("3 failures (max_fails)"), std::string::npos) << h.history[0].reason;
  EXPECT_NE(h.history[0].reason.find(": c"), std::string::npos);
  // Failures while out are counted but do not extend the time-out.
  EXPECT_FALSE(table_->reportFailure("up", s, 3, 10'000, "d"));
  EXPECT_EQ(healthOf("up", s).fail_num, 6u);

  // fail_timeout later it is back, as a transition everyone sees.
  g_mono += 10'000;
  v = table_->version();
  h = healthOf("up", s);
  EXPECT_TRUE(h.healthy(g_mono));
  EXPECT_EQ(h.passive_down_until, 0);
  ASSERT_EQ(h.history.size(), 2u);
  EXPECT_TRUE(h.history[1].healthy);
  EXPECT_EQ(h.history[1].reason, "fail_timeout is over");
  EXPECT_GT(table_->version(), v);
}

TEST_F(UpstreamTableTest, MaxFailsZeroCountsButNeverTakesOut) {
  for (int i = 0; i < 5; i++) EXPECT_FALSE(table_->reportFailure("up", "a:1", 0, 1000, "x"));
  ServerHealth h = healthOf("up", "a:1");
  EXPECT_TRUE(h.healthy(g_mono));
  EXPECT_EQ(h.fail_num, 5u);
  EXPECT_TRUE(h.history.empty());
}

TEST_F(UpstreamTableTest, ActiveChecksChangeStateOnlyAfterTheirThresholds) {
  const std::string s = "10.0.0.2:8080";
  EXPECT_FALSE(table_->reportProbe("up", s, false, "status 500", 2, 3));
  EXPECT_TRUE(healthOf("up", s).healthy(g_mono));
  EXPECT_FALSE(table_->reportProbe("up", s, true, "", 2, 3));  // a success breaks the run
  EXPECT_FALSE(table_->reportProbe("up", s, false, "status 500", 2, 3));
  EXPECT_TRUE(table_->reportProbe("up", s, false, "timeout", 2, 3));
  ServerHealth h = healthOf("up", s);
  EXPECT_FALSE(h.healthy(g_mono));
  EXPECT_TRUE(h.active_down);
  EXPECT_EQ(h.failures, 2u);
  EXPECT_EQ(h.history.back().reason, "2 health check(s) failed: timeout");
  EXPECT_FALSE(table_->reportProbe("up", s, false, "timeout", 2, 3));  // already down: no new transition
  EXPECT_EQ(healthOf("up", s).history.size(), 1u);

  EXPECT_FALSE(table_->reportProbe("up", s, true, "", 2, 3));
  EXPECT_FALSE(table_->reportProbe("up", s, true, "", 2, 3));
  EXPECT_TRUE(table_->reportProbe("up", s, true, "", 2, 3));
  h = healthOf("up", s);
  EXPECT_TRUE(h.healthy(g_mono));
  EXPECT_EQ(h.successes, 3u);
  EXPECT_EQ(h.history.size(), 2u);
  EXPECT_EQ(h.history.back().reason, "3 health check(s) passed");
}

TEST_F(UpstreamTableTest, PassiveAndActiveShareOneRecord) {
  const std::string s = "10.0.0.3:80";
  ASSERT_TRUE(table_->reportFailure("up", s, 1, 60'000, "connect() failed (111: Connection refused)"));
  ServerHealth h = healthOf("up", s);
  EXPECT_FALSE(h.healthy(g_mono));
  // A passing active check ends the passive time-out early.
  EXPECT_TRUE(table_->reportProbe("up", s, true, "", 5, 1));
  h = healthOf("up", s);
  EXPECT_TRUE(h.healthy(g_mono));
  EXPECT_EQ(h.passive_down_until, 0);
  EXPECT_EQ(h.history.size(), 2u);
  EXPECT_EQ(h.fail_num, 1u);
}

TEST_F(UpstreamTableTest, HistoryKeepsTheLastTransitionsOldestFirst) {
  const std::string s = "h:1";
  for (int i = 0; i < ServerHealth::kHistory + 3; i++) {
    g_wall += 1000;
    EXPECT_TRUE(table_->setManualDown("up", s, i % 2 == 0));
  }
  ServerHealth h = healthOf("up", s);
  ASSERT_EQ(h.history.size(), static_cast<size_t>(ServerHealth::kHistory));
  for (size_t i = 1; i < h.history.size(); i++) EXPECT_LT(h.history[i - 1].at_ms, h.history[i].at_ms);
  EXPECT_EQ(h.history.back().at_ms, g_wall);
  EXPECT_EQ(h.last_change_ms, g_wall);
  EXPECT_TRUE(h.manual_down);  // the last call (i = 10) set it down
  EXPECT_EQ(h.history.back().reason, "set down by hand");
  EXPECT_FALSE(table_->setManualDown("up", s, true));  // no change
}

TEST_F(UpstreamTableTest, RecordsAreKeyedByUpstreamAndAddress) {
  table_->setManualDown("Up", "a:1", true);
  EXPECT_TRUE(healthOf("up", "a:1").manual_down);  // upstream names ignore case
  EXPECT_FALSE(healthOf("up", "a:2").manual_down);
  EXPECT_FALSE(healthOf("other", "a:1").manual_down);
  // A record outlives a change of the server list; removing the upstream
  // (or pruning) drops it.
  put("up", "{}");
  table_->setManualDown("up", "a:2", true);
  table_->pruneHealth("up", {"a:2"});
  EXPECT_FALSE(healthOf("up", "a:1").manual_down);
  EXPECT_TRUE(healthOf("up", "a:2").manual_down);
  EXPECT_TRUE(table_->remove("up"));
  EXPECT_FALSE(healthOf("up", "a:2").manual_down);
}

TEST_F(UpstreamTableTest, TheCheckerIsElectedOnceAndReplacedWhenGone) {
  EXPECT_EQ(table_->checker(), 0);
  pid_t me = getpid();
  EXPECT_TRUE(table_->claimChecker(me));
  EXPECT_TRUE(table_->claimChecker(me));
  EXPECT_FALSE(table_->claimChecker(me + 1));  // me is alive
  EXPECT_EQ(table_->checker(), me);
  table_->releaseChecker(me + 1);  // not the checker: no effect
  EXPECT_EQ(table_->checker(), me);
  table_->processExited(me);
  EXPECT_EQ(table_->checker(), 0);

  // A checker whose process is gone is replaced even before anyone reaps it.
  pid_t child = fork();
  if (child == 0) _exit(0);
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(table_->claimChecker(child));  // a pid that no longer exists
  EXPECT_TRUE(table_->claimChecker(me));
  EXPECT_EQ(table_->checker(), me);
  table_->releaseChecker(me);
  EXPECT_EQ(table_->checker(), 0);
}

TEST_F(UpstreamTableTest, ForkedProcessesShareSpecsAndHealth) {
  put("shared", "{\"v\":1}");
  pid_t child = fork();
  if (child == 0) {
    UpstreamTable::Entry e;
    bool ok = table_->get("shared", &e) && e.spec == "{\"v\":1}";
    std::string err;
    ok = ok && table_->put("shared", "{\"v\":2}", &err);
    table_->reportFailure("shared", "x:1", 1, 1000, "from the child");
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  UpstreamTable::Entry e;
  ASSERT_TRUE(table_->get("shared", &e));
  EXPECT_EQ(e.spec, "{\"v\":2}");
  ServerHealth h = healthOf("shared", "x:1");
  EXPECT_FALSE(h.healthy(g_mono));
  EXPECT_EQ(h.last_error, "from the child");
}

#ifdef TIDEGATE_TEST_HOOKS
void killAtPut(test::CrashPoint point) {
  if (point == test::CrashPoint::kUpstreamPut) raise(SIGKILL);
}

TEST_F(UpstreamTableTest, AWriterKilledHoldingTheLockEmptiesTheTableSafely) {
  put("kept", "{\"old\":true}");
  table_->setManualDown("kept", "a:1", true);
  uint64_t v = table_->version();
  pid_t child = fork();
  if (child == 0) {
    test::setCrashHook(killAtPut);
    std::string err;
    table_->put("new", "{\"half\":\"written\"}", &err);
    _exit(7);  // not reached
  }
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status));
  ASSERT_EQ(WTERMSIG(status), SIGKILL);
  // The next locker inherits the lock, sees a write in progress and starts
  // over from an empty table (the master then republishes the conf's).
  EXPECT_EQ(table_->resets(), 1u);
  EXPECT_EQ(table_->ownerDeaths(), 1u);
  std::vector<UpstreamTable::Entry> all;
  table_->list(&all);
  EXPECT_TRUE(all.empty());
  EXPECT_GT(table_->version(), v);  // workers resync
  EXPECT_FALSE(healthOf("kept", "a:1").manual_down);
  put("kept", "{\"again\":true}");
  UpstreamTable::Entry e;
  ASSERT_TRUE(table_->get("kept", &e));
  EXPECT_EQ(e.spec, "{\"again\":true}");
}
#endif

}  // namespace
}  // namespace tidegate::shm
