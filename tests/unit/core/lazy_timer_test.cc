// core::LazyTimer: the uv timer restarts only for an earlier deadline; a
// callback that comes early re-arms for the rest; a cleared deadline
// fires to no effect. Real timers on a private loop, a few ms each.
#include "core/lazy_timer.h"

#include <gtest/gtest.h>

#include <vector>

namespace tidegate::core {
namespace {

struct Fixture {
  uv_loop_t loop;
  LazyTimer timer;
  int calls = 0;
  std::vector<uint64_t> expired_at;  // loop times at which expired() said yes
  uint64_t start = 0;

  Fixture() {
    uv_loop_init(&loop);
    uv_timer_init(&loop, timer.handle());
    timer.handle()->data = this;
    start = uv_now(&loop);
  }
  ~Fixture() {
    uv_close(reinterpret_cast<uv_handle_t*>(timer.handle()), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }
  static void onTimer(uv_timer_t* t) noexcept {
    auto* f = static_cast<Fixture*>(t->data);
    f->calls++;
    if (f->timer.expired(onTimer)) f->expired_at.push_back(uv_now(t->loop));
  }
};

TEST(LazyTimerTest, ALaterDeadlineLeavesTheTimerAndTheEarlyCallbackRearms) {
  Fixture f;
  f.timer.set(20, Fixture::onTimer);
  f.timer.set(60, Fixture::onTimer);
  // Still started for the first deadline: the heap was not touched.
  EXPECT_LE(uv_timer_get_due_in(f.timer.handle()), 20u);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  EXPECT_EQ(f.calls, 2);  // early at 20, then at 60
  ASSERT_EQ(f.expired_at.size(), 1u);
  EXPECT_GE(f.expired_at[0], f.start + 60);
}

TEST(LazyTimerTest, AnEarlierDeadlineRestartsTheTimer) {
  Fixture f;
  f.timer.set(5000, Fixture::onTimer);
  f.timer.set(10, Fixture::onTimer);
  EXPECT_LE(uv_timer_get_due_in(f.timer.handle()), 10u);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  EXPECT_EQ(f.calls, 1);
  ASSERT_EQ(f.expired_at.size(), 1u);
  EXPECT_LT(f.expired_at[0], f.start + 5000);
}

TEST(LazyTimerTest, AClearedDeadlineFiresToNoEffect) {
  Fixture f;
  f.timer.set(10, Fixture::onTimer);
  f.timer.clear();
  uv_run(&f.loop, UV_RUN_DEFAULT);  // returns: the timer did not restart
  EXPECT_EQ(f.calls, 1);
  EXPECT_TRUE(f.expired_at.empty());
  // Set again after it fired: a fresh start.
  f.timer.set(5, Fixture::onTimer);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  EXPECT_EQ(f.calls, 2);
  EXPECT_EQ(f.expired_at.size(), 1u);
}

}  // namespace
}  // namespace tidegate::core
