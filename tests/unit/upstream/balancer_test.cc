// The shared part of every balancer: the factory, weight proportions, tiers,
// retries skipping tried peers, the all-unhealthy rule and rebuilds keeping
// state by id.
#include "upstream/balancer.h"

#include <gtest/gtest.h>

#include "balancer_fixture.h"

namespace tidegate::upstream {
namespace {

using namespace testing;

const char* const kTypes[] = {"round_robin", "chash", "least_conn", "ewma"};

TEST(BalancerFactory, KnowsTheFourTypes) {
  for (const char* type : kTypes) {
    std::unique_ptr<Balancer> b = makeBalancer(type, {});
    ASSERT_NE(b, nullptr) << type;
    EXPECT_EQ(b->type(), type);
  }
  EXPECT_EQ(makeBalancer("random", {}), nullptr);
  EXPECT_EQ(makeBalancer("", {}), nullptr);
}

TEST(BalancerPeer, IdIsHostColonPort) {
  Peer p;
  p.host = "10.0.0.1";
  p.port = 8080;
  EXPECT_EQ(p.id(), "10.0.0.1:8080");
}

class EveryBalancer : public ::testing::TestWithParam<const char*> {};

INSTANTIATE_TEST_SUITE_P(Types, EveryBalancer, ::testing::ValuesIn(kTypes));

// How far a peer's share may be from weight / total weight over 10,000
// requests. round_robin and least_conn are exact; chash depends on where the
// keys fall (measured 0.501/0.295/0.204); ewma balances
// latency * (in_flight + 1) / weight between two random candidates, which
// favours the heavy peer a little (measured 0.533/0.302/0.163 over seeds).
double shareTolerance(std::string_view type) {
  if (type == "chash") return 0.02;
  if (type == "ewma") return 0.05;
  return 0.0001;
}

// 10,000 requests from 40 concurrent clients, every backend answering in
// 10 ms, weights 5:3:2.
TEST_P(EveryBalancer, SharesFollowWeights) {
  std::unique_ptr<Balancer> b = built(GetParam(), weightedPeers({5, 3, 2}));
  int64_t now = 0;
  std::vector<int> counts = simulate(*b, std::vector<Backend>(3), 10'000, 40, now);
  const double tolerance = shareTolerance(GetParam());
  const double expected[] = {0.5, 0.3, 0.2};
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_NEAR(share(counts, i), expected[i], tolerance) << counts[0] << " " << counts[1] << " " << counts[2];
  }
}

TEST_P(EveryBalancer, NoPeersPicksNone) {
  std::unique_ptr<Balancer> b = built(GetParam(), {});
  EXPECT_FALSE(b->pick({}).has_value());
}

TEST_P(EveryBalancer, DownPeersAreNeverPicked) {
  std::vector<Peer> peers = weightedPeers({1, 1, 1});
  peers[1].down = true;
  BalancerOptions fail_open;
  fail_open.fail_open = true;
  std::unique_ptr<Balancer> b = built(GetParam(), peers, fail_open);
  std::vector<int> counts = countPicks(*b, 1000);
  EXPECT_EQ(counts[1], 0);
  EXPECT_EQ(counts[0] + counts[2], 1000);
  // Not even fail-open brings a down peer back.
  b->markHealthy(0, false);
  b->markHealthy(2, false);
  counts = countPicks(*b, 1000);
  EXPECT_EQ(counts[1], 0);
}

TEST_P(EveryBalancer, RetriesSkipTriedPeers) {
  std::unique_ptr<Balancer> b = built(GetParam(), weightedPeers({1, 1, 1}));
  for (int k = 0; k < 100; ++k) {
    const std::string key = "user" + std::to_string(k);
    std::vector<std::size_t> tried;
    for (int attempt = 0; attempt < 3; ++attempt) {
      std::optional<std::size_t> i = b->pick(PickContext{key, tried, 0});
      ASSERT_TRUE(i.has_value()) << key << " attempt " << attempt;
      EXPECT_EQ(std::count(tried.begin(), tried.end(), *i), 0) << key;
      tried.push_back(*i);
    }
    EXPECT_FALSE(b->pick(PickContext{key, tried, 0}).has_value()) << "all three tried";
  }
}

TEST_P(EveryBalancer, AllUnhealthyPicksNone) {
  std::unique_ptr<Balancer> b = built(GetParam(), weightedPeers({1, 2}));
  b->markHealthy(0, false);
  b->markHealthy(1, false);
  EXPECT_EQ(pickSequence(*b, 5), "-----");
  b->markHealthy(1, true);
  EXPECT_EQ(pickSequence(*b, 5), "bbbbb");
}

TEST_P(EveryBalancer, AllUnhealthyWithFailOpenPicksAmongAll) {
  BalancerOptions options;
  options.fail_open = true;
  std::unique_ptr<Balancer> b = built(GetParam(), weightedPeers({1, 1}), options);
  b->markHealthy(0, false);
  b->markHealthy(1, false);
  std::vector<int> counts = countPicks(*b, 1000);
  EXPECT_GT(counts[0], 0);
  EXPECT_GT(counts[1], 0);
  EXPECT_EQ(counts[0] + counts[1], 1000);
  // Fail-open still skips what this request already tried.
  const std::size_t tried[] = {0, 1};
  EXPECT_FALSE(b->pick(PickContext{"", tried, 0}).has_value());
}

TEST_P(EveryBalancer, UnhealthyPeerGetsNothingWhileOthersServe) {
  std::unique_ptr<Balancer> b = built(GetParam(), weightedPeers({1, 1, 1}));
  b->markHealthy(1, false);
  std::vector<int> counts = countPicks(*b, 3000);
  EXPECT_EQ(counts[1], 0);
  EXPECT_EQ(counts[0] + counts[2], 3000);
  EXPECT_GT(counts[0], 900);
  EXPECT_GT(counts[2], 900);
}

// --- tiers ----------------------------------------------------------------------

std::vector<Peer> twoTiers() {
  return {namedPeer('a', 1, 0), namedPeer('b', 1, 0), namedPeer('c', 1, 1), namedPeer('d', 1, 1)};
}

TEST_P(EveryBalancer, LowerTierServesAloneWhileAnyIsHealthy) {
  std::unique_ptr<Balancer> b = built(GetParam(), twoTiers());
  std::vector<int> counts = countPicks(*b, 1000);
  EXPECT_EQ(counts[2] + counts[3], 0);
  EXPECT_EQ(counts[0] + counts[1], 1000);

  b->markHealthy(0, false);
  counts = countPicks(*b, 1000);
  EXPECT_EQ(counts[1], 1000) << "b is the last healthy peer of tier 0";

  b->markHealthy(1, false);
  counts = countPicks(*b, 1000);
  EXPECT_EQ(counts[0] + counts[1], 0);
  EXPECT_EQ(counts[2] + counts[3], 1000);
  EXPECT_GT(counts[2], 0);
  EXPECT_GT(counts[3], 0);

  b->markHealthy(0, true);
  counts = countPicks(*b, 1000);
  EXPECT_EQ(counts[0], 1000) << "tier 0 takes traffic back as soon as a peer is healthy";
}

TEST_P(EveryBalancer, DownPeersDoNotKeepATierServing) {
  std::vector<Peer> peers = twoTiers();
  peers[0].down = true;
  peers[1].down = true;
  std::unique_ptr<Balancer> b = built(GetParam(), peers);
  std::vector<int> counts = countPicks(*b, 100);
  EXPECT_EQ(counts[2] + counts[3], 100);
}

TEST_P(EveryBalancer, TierMinHealthySpillsOver) {
  std::vector<Peer> peers = {namedPeer('a', 1, 0), namedPeer('b', 1, 0), namedPeer('c', 1, 0),
                             namedPeer('d', 1, 0), namedPeer('e', 1, 1)};
  BalancerOptions options;
  options.tier_min_healthy = 50;
  std::unique_ptr<Balancer> b = built(GetParam(), peers, options);
  b->markHealthy(0, false);
  b->markHealthy(1, false);
  std::vector<int> counts = countPicks(*b, 1000);
  EXPECT_EQ(counts[4], 0) << "2 of 4 healthy is 50%: tier 0 still serves";
  EXPECT_EQ(counts[2] + counts[3], 1000);

  b->markHealthy(2, false);
  counts = countPicks(*b, 1000);
  EXPECT_EQ(counts[4], 1000) << "1 of 4 is below 50%: tier 1 serves";

  b->markHealthy(4, false);
  counts = countPicks(*b, 1000);
  EXPECT_EQ(counts[3], 1000) << "no tier reaches 50%: the lowest with a healthy peer serves";
}

TEST_P(EveryBalancer, RetrySpillsToTheNextTierOnceTheServingTierIsTried) {
  std::unique_ptr<Balancer> b = built(GetParam(), twoTiers());
  std::vector<std::size_t> tried;
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::optional<std::size_t> i = b->pick(PickContext{"key", tried, 0});
    ASSERT_TRUE(i.has_value());
    EXPECT_EQ(b->peer(*i).tier, 0) << "attempt " << attempt;
    tried.push_back(*i);
  }
  std::optional<std::size_t> third = b->pick(PickContext{"key", tried, 0});
  ASSERT_TRUE(third.has_value());
  EXPECT_EQ(b->peer(*third).tier, 1);
}

// --- rebuild --------------------------------------------------------------------

TEST_P(EveryBalancer, RebuildKeepsStateForIdsThatStay) {
  std::unique_ptr<Balancer> b = built(GetParam(), weightedPeers({1, 1, 1}));
  b->markHealthy(1, false);  // b
  b->onStart(2);             // c
  b->onStart(2);
  b->onStart(0);
  b->onFinish(0, 7'000, Outcome::kOk, 1'000);  // a: one sample

  // Reordered, "a" removed, "d" added.
  b->rebuild({namedPeer('d'), namedPeer('c'), namedPeer('b')});
  ASSERT_EQ(b->size(), 3u);
  EXPECT_EQ(b->indexOf("a:80"), std::nullopt);
  ASSERT_EQ(b->indexOf("b:80"), 2u);
  ASSERT_EQ(b->indexOf("c:80"), 1u);
  EXPECT_FALSE(b->state(2).healthy);
  EXPECT_EQ(b->state(1).in_flight, 2);
  EXPECT_TRUE(b->state(0).healthy);
  EXPECT_EQ(b->state(0).in_flight, 0);

  // Back again, "a" is new: its sample is gone; "c" still has its requests.
  b->rebuild(weightedPeers({1, 1, 1}));
  EXPECT_FALSE(b->state(0).ewma_sampled);
  EXPECT_EQ(b->state(2).in_flight, 2);
  EXPECT_FALSE(b->state(1).healthy);
}

TEST(BalancerRebuild, WeightBelowOneCountsAsOne) {
  std::unique_ptr<Balancer> b = built("round_robin", weightedPeers({0, -3}));
  EXPECT_EQ(b->peer(0).weight, 1);
  EXPECT_EQ(b->peer(1).weight, 1);
  EXPECT_EQ(pickSequence(*b, 4), "abab");
}

TEST(BalancerFeedback, IndexesOutOfRangeAreIgnored) {
  std::unique_ptr<Balancer> b = built("least_conn", weightedPeers({1}));
  b->onStart(5);
  b->onFinish(5, 1, Outcome::kFailed, 0);
  b->markHealthy(5, false);
  b->onFinish(0, 1, Outcome::kOk, 0);  // more finishes than starts
  EXPECT_EQ(b->state(0).in_flight, 0);
  EXPECT_EQ(pickSequence(*b, 2), "aa");
}

}  // namespace
}  // namespace tidegate::upstream
