// Smooth weighted round robin against the sequences nginx documents
// (ngx_http_upstream_round_robin.c, commit 52327e0627f4 "smooth weighted
// round-robin balancing").
#include "upstream/round_robin.h"

#include <gtest/gtest.h>

#include "balancer_fixture.h"

namespace tidegate::upstream {
namespace {

using namespace testing;

TEST(RoundRobin, SmoothSequenceFor511) {
  std::unique_ptr<Balancer> b = built("round_robin", weightedPeers({5, 1, 1}));
  EXPECT_EQ(pickSequence(*b, 7), "aabacaa");
  EXPECT_EQ(pickSequence(*b, 14), "aabacaaaabacaa") << "the cycle repeats";
}

TEST(RoundRobin, EqualWeightsAlternate) {
  std::unique_ptr<Balancer> b = built("round_robin", weightedPeers({1, 1, 1}));
  EXPECT_EQ(pickSequence(*b, 9), "abcabcabc");
  b = built("round_robin", weightedPeers({3, 3}));
  EXPECT_EQ(pickSequence(*b, 6), "ababab");
}

TEST(RoundRobin, ExactProportionsOver10kPicks) {
  std::unique_ptr<Balancer> b = built("round_robin", weightedPeers({5, 3, 2}));
  std::vector<int> counts = countPicks(*b, 10'000);
  EXPECT_EQ(counts, (std::vector<int>{5000, 3000, 2000}));
}

TEST(RoundRobin, SkipsUnhealthyAndTriedWithoutBursts) {
  std::unique_ptr<Balancer> b = built("round_robin", weightedPeers({1, 1, 1}));
  b->markHealthy(1, false);
  EXPECT_EQ(pickSequence(*b, 6), "acacac");
  const std::size_t tried[] = {0};
  EXPECT_EQ(pickSequence(*b, 3, PickContext{"", tried, 0}), "ccc");
}

// nginx drops a failed peer's effective weight (by weight / max_fails, all of
// it with the default max_fails=1) and restores one unit per selection.
TEST(RoundRobin, FailureLowersEffectiveWeightUntilItRecovers) {
  std::unique_ptr<Balancer> b = built("round_robin", weightedPeers({3, 3}));
  b->onStart(0);
  b->onFinish(0, 1'000, Outcome::kFailed, 0);
  EXPECT_EQ(b->state(0).effective_weight, 0);
  EXPECT_EQ(pickSequence(*b, 6), "bbabab");
  EXPECT_EQ(b->state(0).effective_weight, 3);
  std::vector<int> counts = countPicks(*b, 600);
  EXPECT_EQ(counts, (std::vector<int>{300, 300}));
}

}  // namespace
}  // namespace tidegate::upstream
