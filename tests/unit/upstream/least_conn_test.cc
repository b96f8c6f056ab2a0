#include "upstream/least_conn.h"

#include <gtest/gtest.h>

#include "balancer_fixture.h"

namespace tidegate::upstream {
namespace {

using namespace testing;

TEST(LeastConn, PicksTheLeastLoaded) {
  std::unique_ptr<Balancer> b = built("least_conn", weightedPeers({1, 1, 1}));
  for (int k = 0; k < 3; ++k) b->onStart(0);
  b->onStart(1);
  for (int k = 0; k < 2; ++k) b->onStart(2);
  EXPECT_EQ(pickSequence(*b, 3), "bbb");
  b->onStart(1);
  b->onStart(1);  // b: 3, c: 2
  EXPECT_EQ(pickSequence(*b, 1), "c");
  b->onFinish(0, 1'000, Outcome::kOk, 0);
  b->onFinish(0, 1'000, Outcome::kOk, 0);  // a: 1
  EXPECT_EQ(pickSequence(*b, 1), "a");
}

TEST(LeastConn, LoadIsRelativeToWeight) {
  std::unique_ptr<Balancer> b = built("least_conn", weightedPeers({4, 1}));
  for (int k = 0; k < 3; ++k) b->onStart(0);  // 3/4
  b->onStart(1);                              // 1/1
  EXPECT_EQ(pickSequence(*b, 1), "a");
  b->onStart(0);
  b->onStart(0);  // 5/4 > 1/1
  EXPECT_EQ(pickSequence(*b, 1), "b");
}

TEST(LeastConn, TiesGoWeightedRoundRobin) {
  std::unique_ptr<Balancer> b = built("least_conn", weightedPeers({5, 1, 1}));
  EXPECT_EQ(pickSequence(*b, 7), "aabacaa");
  std::vector<int> counts = countPicks(*b, 7'000);
  EXPECT_EQ(counts, (std::vector<int>{5000, 1000, 1000}));
}

// A backend that is 10x slower keeps more requests in flight, so it gets
// fewer new ones: with 20 clients and 2 ms vs 20 ms, the fast one takes most.
TEST(LeastConn, SlowBackendGetsLessUnderLoad) {
  std::unique_ptr<Balancer> b = built("least_conn", weightedPeers({1, 1}));
  int64_t now = 0;
  std::vector<int> counts = simulate(*b, {{2'000, false}, {20'000, false}}, 10'000, 20, now);
  EXPECT_GT(share(counts, 0), 0.85) << counts[0] << " vs " << counts[1];
}

}  // namespace
}  // namespace tidegate::upstream
