#include "upstream/ewma.h"

#include <gtest/gtest.h>

#include "balancer_fixture.h"

namespace tidegate::upstream {
namespace {

using namespace testing;

std::unique_ptr<EwmaBalancer> ewma(std::vector<Peer> peers, uint64_t seed = 7) {
  BalancerOptions options;
  options.seed = seed;
  auto b = std::make_unique<EwmaBalancer>(options);
  b->rebuild(std::move(peers));
  return b;
}

// Measured: 98.8% to the fast backend with these figures.
TEST(Ewma, FastBackendGetsAtLeast80Percent) {
  for (uint64_t seed : {1, 2, 3}) {
    std::unique_ptr<EwmaBalancer> b = ewma(weightedPeers({1, 1}), seed);
    int64_t now = 0;
    // a: 50 ms, b: 5 ms; 10 concurrent clients, 10,000 requests.
    std::vector<int> counts = simulate(*b, {{50'000, false}, {5'000, false}}, 10'000, 10, now);
    EXPECT_GE(share(counts, 1), 0.8) << "seed " << seed << ": " << counts[0] << " vs " << counts[1];
  }
}

TEST(Ewma, PeakSampleReplacesAtOnceLowerOnesBlend) {
  std::unique_ptr<EwmaBalancer> b = ewma(weightedPeers({1}));
  b->onFinish(0, 5'000, Outcome::kOk, 1'000'000);
  EXPECT_DOUBLE_EQ(b->latencyUs(0, 1'000'000), 5'000);  // the first sample is taken as is
  b->onFinish(0, 80'000, Outcome::kOk, 1'001'000);
  EXPECT_DOUBLE_EQ(b->latencyUs(0, 1'001'000), 80'000);  // peak: no averaging upwards
  // 1 s later (tau 10 s) a 5 ms sample moves it by 1 - e^-0.1 of the gap.
  b->onFinish(0, 5'000, Outcome::kOk, 2'001'000);
  const double w = std::exp(-0.1);
  EXPECT_NEAR(b->latencyUs(0, 2'001'000), 80'000 * w + 5'000 * (1 - w), 1e-6);
  // With no samples the estimate decays towards zero: e^-1 after 10 s.
  EXPECT_NEAR(b->latencyUs(0, 12'001'000), b->latencyUs(0, 2'001'000) * std::exp(-1.0), 1e-6);
}

TEST(Ewma, ScoreCountsInFlightAndWeight) {
  std::unique_ptr<EwmaBalancer> b = ewma(weightedPeers({1, 4}));
  b->onFinish(0, 10'000, Outcome::kOk, 0);
  b->onFinish(1, 10'000, Outcome::kOk, 0);
  EXPECT_DOUBLE_EQ(b->score(0, 0), 10'000);
  EXPECT_DOUBLE_EQ(b->score(1, 0), 2'500);
  b->onStart(1);
  b->onStart(1);
  EXPECT_DOUBLE_EQ(b->score(1, 0), 7'500);
}

TEST(Ewma, FailureCountsAsALargeLatency) {
  std::unique_ptr<EwmaBalancer> b = ewma(weightedPeers({1}));
  b->onFinish(0, 2'000, Outcome::kOk, 0);
  b->onFinish(0, 500, Outcome::kFailed, 1'000);
  EXPECT_NEAR(b->latencyUs(0, 1'000), 1'000'000, 1e-6) << "at least 1 s";
  b->onFinish(0, 500, Outcome::kFailed, 2'000);
  EXPECT_NEAR(b->latencyUs(0, 2'000), 10 * 1'000'000 * std::exp(-0.0001), 1.0) << "10x the estimate";
}

// b answers errors in 1 ms, a succeeds in 20 ms: without the penalty b would
// look 20x faster and take nearly everything. Measured: 5 of 10,000.
TEST(Ewma, FastFailingBackendGetsLittleTraffic) {
  std::unique_ptr<EwmaBalancer> b = ewma(weightedPeers({1, 1}));
  int64_t now = 0;
  std::vector<int> counts = simulate(*b, {{20'000, false}, {1'000, true}}, 10'000, 10, now);
  EXPECT_LT(share(counts, 1), 0.01) << counts[0] << " vs " << counts[1];
  EXPECT_GT(counts[1], 0) << "it is still probed now and then";
}

TEST(Ewma, PenalisedPeerIsProbedAgainAfterDecay) {
  std::unique_ptr<EwmaBalancer> b = ewma(weightedPeers({1, 1}));
  b->onFinish(0, 10'000, Outcome::kOk, 0);
  b->onFinish(1, 10'000, Outcome::kFailed, 0);  // counts as 1 s
  EXPECT_EQ(pickSequence(*b, 20, PickContext{"", {}, 1'000}), std::string(20, 'a'));
  // Both estimates decay alike without samples (at 30 s: 0.5 ms vs 50 ms).
  EXPECT_EQ(pickSequence(*b, 5, PickContext{"", {}, 30'000'000}), "aaaaa");
  // a answers in 10 ms again at 60 s; b has decayed to 1 s * e^-6 = 2.5 ms
  // (below 10 ms after 10 s * ln(100) = 46 s) and is probed.
  b->onFinish(0, 10'000, Outcome::kOk, 60'000'000);
  EXPECT_NEAR(b->latencyUs(1, 60'000'000), 1e6 * std::exp(-6.0), 1e-6);
  EXPECT_EQ(pickSequence(*b, 1, PickContext{"", {}, 60'000'000}), "b");
}

TEST(Ewma, NewPeerStartsAtTheMedianScore) {
  std::unique_ptr<EwmaBalancer> b = ewma(weightedPeers({1, 1, 2}));
  b->onFinish(0, 30'000, Outcome::kOk, 0);  // score 30 ms
  b->onFinish(1, 10'000, Outcome::kOk, 0);  // score 10 ms
  b->onFinish(2, 40'000, Outcome::kOk, 0);  // score 40/2 = 20 ms
  std::vector<Peer> peers = weightedPeers({1, 1, 2});
  peers.push_back(namedPeer('d', 3));
  b->rebuild(peers, 0);
  EXPECT_DOUBLE_EQ(b->score(3, 0), 20'000);
  EXPECT_DOUBLE_EQ(b->latencyUs(3, 0), 60'000);
  EXPECT_FALSE(b->state(3).ewma_sampled);
  // Its first real sample replaces the seed even though it is lower.
  b->onFinish(3, 3'000, Outcome::kOk, 1'000);
  EXPECT_DOUBLE_EQ(b->latencyUs(3, 1'000), 3'000);
}

TEST(Ewma, NewPeerMedianOfEvenCountAndOfNone) {
  std::unique_ptr<EwmaBalancer> b = ewma(weightedPeers({1, 1}));
  b->rebuild(weightedPeers({1, 1, 1}), 0);
  EXPECT_FALSE(b->state(2).ewma_sampled);
  EXPECT_DOUBLE_EQ(b->latencyUs(2, 0), 0) << "no samples anywhere: nothing to seed from";
  b->onFinish(0, 10'000, Outcome::kOk, 0);
  b->onFinish(1, 20'000, Outcome::kOk, 0);
  b->rebuild(weightedPeers({1, 1, 1, 1}), 0);  // c (unsampled) and d are not counted
  EXPECT_DOUBLE_EQ(b->score(3, 0), 15'000);
}

TEST(Ewma, SameSeedSamePicks) {
  std::unique_ptr<EwmaBalancer> x = ewma(weightedPeers({1, 1, 1, 1}), 99);
  std::unique_ptr<EwmaBalancer> y = ewma(weightedPeers({1, 1, 1, 1}), 99);
  EXPECT_EQ(pickSequence(*x, 50), pickSequence(*y, 50));
}

}  // namespace
}  // namespace tidegate::upstream
