// The dict across forked processes: visibility, atomic incr, and a lock holder
// killed in the middle of an operation (through the crash points that the
// unit test build compiles in, see src/shm/test_hooks.h).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vector>

#include "dict_fixture.h"
#include "shm/test_hooks.h"

namespace tidegate::shm {
namespace {

using ShmProcessTest = DictFixture;

// Runs `body` in a forked child and returns its wait status.
template <class F>
int inChild(F body) {
  pid_t pid = fork();
  if (pid == 0) {
    body();
    _exit(0);
  }
  int status = -1;
  waitpid(pid, &status, 0);
  return status;
}

TEST_F(ShmProcessTest, ChildWritesParentReads) {
  dict_->set("parent", Value::ofString("p"));
  int status = inChild([&] {
    std::string out;
    bool seen = dict_->get("parent", &out).status == Status::kOk && out == "p";
    dict_->set("child", Value::ofString(seen ? "saw parent" : "blind"), 0, 5);
    dict_->rpush("list", Value::ofNumber(42));
  });
  ASSERT_TRUE(WIFEXITED(status));
  std::string out;
  ReadResult r = dict_->get("child", &out);
  EXPECT_EQ(r.status, Status::kOk);
  EXPECT_EQ(out, "saw parent");
  EXPECT_EQ(r.flags, 5u);
  EXPECT_EQ(dict_->rpop("list", &out).number, 42);
}

TEST_F(ShmProcessTest, ConcurrentIncrSumsExactly) {
  constexpr int kProcs = 4;
  constexpr int kIncrs = 5000;
  std::vector<pid_t> pids;
  for (int p = 0; p < kProcs; p++) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      double zero = 0;
      bool ok = true;
      for (int i = 0; i < kIncrs; i++) ok = dict_->incr("hits", 1, &zero).status == Status::kOk && ok;
      _exit(ok ? 0 : 1);
    }
    pids.push_back(pid);
  }
  for (pid_t pid : pids) {
    int status = -1;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  std::string out;
  EXPECT_EQ(dict_->get("hits", &out).number, kProcs * kIncrs);
}

test::CrashPoint g_kill_at;
void killAtTarget(test::CrashPoint point) {
  if (point == g_kill_at) raise(SIGKILL);
}
void exitAtTarget(test::CrashPoint point) {
  if (point == g_kill_at) _exit(3);
}

// Kills a child at `point` while it runs `op` holding the lock.
template <class F>
void killChildAt(test::CrashPoint point, F op) {
  int status = inChild([&] {
    g_kill_at = point;
    test::setCrashHook(killAtTarget);
    op();
    _exit(7);  // the crash point was not reached
  });
  ASSERT_TRUE(WIFSIGNALED(status)) << "child exited with " << WEXITSTATUS(status);
  ASSERT_EQ(WTERMSIG(status), SIGKILL);
}

TEST_F(ShmProcessTest, KilledDuringAWriteResetsTheDict) {
  for (int i = 0; i < 100; i++) dict_->set("k" + std::to_string(i), Value::ofNumber(i));
  uint64_t empty_free = 0;
  {
    std::string err;
    auto z = Zone::create(zone_->size(), &err);
    ASSERT_TRUE(Dict::init(*z, &err));
    empty_free = Dict(*z, fakeNow).freeSpace();
  }
  // A different size forces free + insert: the child dies with "k5" out of its
  // hash chain but still in the LRU list.
  killChildAt(test::CrashPoint::kUnlinkBeforeLru,
              [&] { dict_->set("k5", Value::ofString("a longer value than a number")); });

  std::string out;
  EXPECT_EQ(dict_->get("k1", &out).status, Status::kNotFound);  // the lock is usable; the dict was reset
  EXPECT_EQ(dict_->ownerDeaths(), 1u);
  EXPECT_EQ(dict_->resets(), 1u);
  expectSound();
  EXPECT_EQ(dict_->freeSpace(), empty_free);
  EXPECT_EQ(dict_->set("after", Value::ofString("works")).status, Status::kOk);
  EXPECT_EQ(getString("after"), "works");
}

TEST_F(ShmProcessTest, KilledHalfwayThroughAnInsertResetsTheDict) {
  dict_->set("keep", Value::ofNumber(1));
  double zero = 0;
  killChildAt(test::CrashPoint::kInsertBeforeLru, [&] { dict_->incr("counter", 1, &zero); });
  EXPECT_EQ(dict_->incr("counter", 1, &zero).value, 1);
  EXPECT_EQ(dict_->resets(), 1u);
  expectSound();
}

TEST_F(ShmProcessTest, KilledDuringAReadKeepsTheData) {
  dict_->set("a", Value::ofString("A"));
  dict_->set("b", Value::ofString("B"));
  killChildAt(test::CrashPoint::kGetBeforeTouch, [&] {
    std::string out;
    dict_->get("a", &out);
  });
  EXPECT_EQ(getString("a"), "A");
  EXPECT_EQ(getString("b"), "B");
  EXPECT_EQ(dict_->ownerDeaths(), 1u);
  EXPECT_EQ(dict_->resets(), 0u);
}

TEST_F(ShmProcessTest, ExitWhileHoldingTheLockIsRecoveredToo) {
  dict_->set("a", Value::ofString("A"));
  int status = inChild([&] {
    g_kill_at = test::CrashPoint::kUnlinkBeforeLru;
    test::setCrashHook(exitAtTarget);
    dict_->remove("a");
  });
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 3);
  EXPECT_EQ(dict_->set("b", Value::ofString("B")).status, Status::kOk);
  EXPECT_EQ(getString("b"), "B");
  EXPECT_EQ(dict_->resets(), 1u);
  // A second recovery is not needed: the lock is consistent again.
  EXPECT_EQ(dict_->ownerDeaths(), 1u);
}

}  // namespace
}  // namespace tidegate::shm
