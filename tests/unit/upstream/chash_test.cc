#include "upstream/chash.h"

#include <gtest/gtest.h>

#include <map>

#include "balancer_fixture.h"

namespace tidegate::upstream {
namespace {

using namespace testing;

constexpr int kKeys = 1000;

std::string key(int k) { return "user-" + std::to_string(k); }

// Owner id of every key.
std::vector<std::string> owners(Balancer& b, int keys = kKeys) {
  std::vector<std::string> out;
  for (int k = 0; k < keys; ++k) {
    const std::string kk = key(k);
    std::optional<std::size_t> i = b.pick(PickContext{kk, {}, 0});
    out.push_back(i ? b.peer(*i).id() : "");
  }
  return out;
}

TEST(Chash, KeyHashIsStable) {
  // Pinned (checked against an independent Python FNV-1a + splitmix64
  // finaliser; FNV-1a("a") is 0xaf63dc4c8601ec8c on the FNV page): a changed
  // hash would move every key of every deployment on upgrade.
  EXPECT_EQ(chashKey(""), 0xf52a15e9a9b5e89bull);
  EXPECT_EQ(chashKey("a"), 0x02c0bdbf481420f8ull);
  EXPECT_EQ(chashKey("user-1"), 0xc499b5f8a721df58ull);
}

TEST(Chash, SameKeySamePeer) {
  std::unique_ptr<Balancer> b = built("chash", weightedPeers({1, 1, 1, 1}));
  std::vector<std::string> first = owners(*b);
  EXPECT_EQ(owners(*b), first);
  // Another instance built from the same list in another order agrees.
  std::vector<Peer> reversed = weightedPeers({1, 1, 1, 1});
  std::reverse(reversed.begin(), reversed.end());
  std::unique_ptr<Balancer> other = built("chash", reversed);
  EXPECT_EQ(owners(*other), first);
}

TEST(Chash, DistributionFollowsWeights) {
  std::unique_ptr<Balancer> b = built("chash", weightedPeers({1, 1, 2}));
  std::map<std::string, int> count;
  for (const std::string& id : owners(*b)) ++count[id];
  EXPECT_NEAR(count["a:80"], 250, 60);
  EXPECT_NEAR(count["b:80"], 250, 60);
  EXPECT_NEAR(count["c:80"], 500, 60);
}

TEST(Chash, AddingAFifthPeerMovesAboutAFifth) {
  std::unique_ptr<Balancer> b = built("chash", weightedPeers({1, 1, 1, 1}));
  std::vector<std::string> before = owners(*b);
  b->rebuild(weightedPeers({1, 1, 1, 1, 1}));
  std::vector<std::string> after = owners(*b);
  int moved = 0;
  for (int k = 0; k < kKeys; ++k) {
    if (before[k] == after[k]) continue;
    ++moved;
    EXPECT_EQ(after[k], "e:80") << "a key moves only to the new peer";
  }
  const double fraction = static_cast<double>(moved) / kKeys;
  EXPECT_GT(fraction, 0.12);
  EXPECT_LT(fraction, 0.3);
}

TEST(Chash, RemovingAPeerMovesOnlyItsKeys) {
  std::unique_ptr<Balancer> b = built("chash", weightedPeers({1, 1, 1, 1, 1}));
  std::vector<std::string> before = owners(*b);
  std::vector<Peer> without_c = weightedPeers({1, 1, 1, 1, 1});
  without_c.erase(without_c.begin() + 2);
  b->rebuild(without_c);
  std::vector<std::string> after = owners(*b);
  int moved = 0, had_c = 0;
  for (int k = 0; k < kKeys; ++k) {
    if (before[k] == "c:80") ++had_c;
    if (before[k] == after[k]) continue;
    ++moved;
    EXPECT_EQ(before[k], "c:80") << key(k) << " moved but was not on the removed peer";
  }
  EXPECT_EQ(moved, had_c);
  EXPECT_GT(had_c, 100);
}

// Health does not change the ring: an unhealthy peer's keys walk on to the
// next peers and come back when it recovers; nobody else's keys move.
TEST(Chash, UnhealthyPeerKeysWalkOnAndReturn) {
  std::unique_ptr<Balancer> b = built("chash", weightedPeers({1, 1, 1, 1}));
  std::vector<std::string> before = owners(*b);
  b->markHealthy(1, false);
  std::vector<std::string> during = owners(*b);
  int spread[4] = {0, 0, 0, 0};
  for (int k = 0; k < kKeys; ++k) {
    if (before[k] != "b:80") {
      EXPECT_EQ(during[k], before[k]);
    } else {
      ASSERT_NE(during[k], "b:80");
      ++spread[during[k][0] - 'a'];
    }
  }
  // 160 points per peer interleave, so b's keys spread over all three others.
  EXPECT_GT(spread[0], 20);
  EXPECT_GT(spread[2], 20);
  EXPECT_GT(spread[3], 20);
  b->markHealthy(1, true);
  EXPECT_EQ(owners(*b), before);
}

TEST(Chash, RetryWalksTheRingDeterministically) {
  std::unique_ptr<Balancer> b = built("chash", weightedPeers({1, 1, 1}));
  std::optional<std::size_t> first = b->pick(PickContext{"cart-17", {}, 0});
  ASSERT_TRUE(first);
  const std::size_t tried[] = {*first};
  std::optional<std::size_t> second = b->pick(PickContext{"cart-17", tried, 0});
  ASSERT_TRUE(second);
  EXPECT_NE(*second, *first);
  EXPECT_EQ(b->pick(PickContext{"cart-17", tried, 0}), second) << "the retry peer is stable too";
  // And it is where the key goes when the first peer is unhealthy.
  b->markHealthy(*first, false);
  EXPECT_EQ(b->pick(PickContext{"cart-17", {}, 0}), second);
}

}  // namespace
}  // namespace tidegate::upstream
