// Helpers shared by the balancer tests: peers named "a", "b", ... so a pick
// sequence reads as a string, and pick counting.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <queue>
#include <string>
#include <vector>

#include "upstream/balancer.h"

namespace tidegate::upstream::testing {

inline Peer namedPeer(char name, int weight = 1, int tier = 0) {
  Peer p;
  p.host = std::string(1, name);
  p.port = 80;
  p.weight = weight;
  p.tier = tier;
  return p;
}

// Peers "a", "b", ... with the given weights, all in tier 0.
inline std::vector<Peer> weightedPeers(const std::vector<int>& weights) {
  std::vector<Peer> peers;
  for (std::size_t i = 0; i < weights.size(); ++i) peers.push_back(namedPeer(static_cast<char>('a' + i), weights[i]));
  return peers;
}

inline std::unique_ptr<Balancer> built(std::string_view type, std::vector<Peer> peers,
                                       BalancerOptions options = {}) {
  if (options.seed == 0) options.seed = 42;
  std::unique_ptr<Balancer> b = makeBalancer(type, options);
  EXPECT_NE(b, nullptr) << type;
  if (b) b->rebuild(std::move(peers));
  return b;
}

// The host names of n picks without feedback, e.g. "aabacaa"; "-" for none.
inline std::string pickSequence(Balancer& b, int n, const PickContext& ctx = {}) {
  std::string out;
  for (int k = 0; k < n; ++k) {
    std::optional<std::size_t> i = b.pick(ctx);
    out += i ? b.peer(*i).host : "-";
  }
  return out;
}

// Per-peer counts over n picks, key "k<n>" for each pick (chash spreads).
inline std::vector<int> countPicks(Balancer& b, int n) {
  std::vector<int> counts(b.size(), 0);
  for (int k = 0; k < n; ++k) {
    const std::string key = "k" + std::to_string(k);
    std::optional<std::size_t> i = b.pick(PickContext{key, {}, 0});
    EXPECT_TRUE(i.has_value());
    if (i) ++counts[*i];
  }
  return counts;
}

// A closed loop of `concurrency` clients sending `requests` requests, each
// answered by its peer after latency(peer) microseconds of simulated time,
// failed when fails(peer). Returns the per-peer pick counts; `now_us` is
// advanced to the end of the run.
struct Backend {
  int64_t latency_us = 10'000;
  bool fails = false;
};

inline std::vector<int> simulate(Balancer& b, const std::vector<Backend>& backends, int requests, int concurrency,
                                 int64_t& now_us) {
  using Done = std::pair<int64_t, std::size_t>;  // finish time, peer
  std::priority_queue<Done, std::vector<Done>, std::greater<Done>> running;
  std::vector<int> counts(b.size(), 0);
  int issued = 0;
  while (issued < requests || !running.empty()) {
    while (issued < requests && static_cast<int>(running.size()) < concurrency) {
      const std::string key = "k" + std::to_string(issued++);
      std::optional<std::size_t> i = b.pick(PickContext{key, {}, now_us});
      if (!i) {
        ADD_FAILURE() << "no peer at request " << issued;
        return counts;
      }
      ++counts[*i];
      b.onStart(*i);
      running.push({now_us + backends[*i].latency_us, *i});
    }
    auto [t, i] = running.top();
    running.pop();
    now_us = t;
    b.onFinish(i, backends[i].latency_us, backends[i].fails ? Outcome::kFailed : Outcome::kOk, now_us);
  }
  return counts;
}

inline double share(const std::vector<int>& counts, std::size_t i) {
  int total = 0;
  for (int c : counts) total += c;
  return total == 0 ? 0.0 : static_cast<double>(counts[i]) / total;
}

}  // namespace tidegate::upstream::testing
