#include "upstream/balancer.h"

#include <algorithm>
#include <string>
#include <unordered_map>
#include <utility>

#include "upstream/chash.h"
#include "upstream/ewma.h"
#include "upstream/least_conn.h"
#include "upstream/round_robin.h"

namespace tidegate::upstream {

void Balancer::rebuild(std::vector<Peer> peers, int64_t now_us) {
  std::unordered_map<std::string, PeerState> old;
  for (std::size_t i = 0; i < peers_.size(); ++i) old.emplace(peers_[i].id(), states_[i]);

  std::vector<PeerState> states(peers.size());
  std::vector<bool> fresh(peers.size(), true);
  for (std::size_t i = 0; i < peers.size(); ++i) {
    Peer& p = peers[i];
    p.weight = std::max(p.weight, 1);
    auto it = old.find(p.id());
    if (it != old.end()) {
      states[i] = it->second;
      fresh[i] = false;
    }
    // A new or re-weighted server starts at its full weight, as nginx does
    // after a reload.
    if (fresh[i] || states[i].effective_weight > p.weight) states[i].effective_weight = p.weight;
  }
  peers_ = std::move(peers);
  states_ = std::move(states);

  tiers_.clear();
  for (const Peer& p : peers_) tiers_.push_back(p.tier);
  std::sort(tiers_.begin(), tiers_.end());
  tiers_.erase(std::unique(tiers_.begin(), tiers_.end()), tiers_.end());
  rebuilt(fresh, now_us);
}

// The lowest tier whose healthy share reaches tier_min_healthy; failing
// that, the lowest tier with any healthy peer; nullopt when none has one.
std::optional<int> Balancer::servingTier() const {
  std::optional<int> fallback;
  for (int tier : tiers_) {
    int total = 0, healthy = 0;
    for (std::size_t i = 0; i < peers_.size(); ++i) {
      if (peers_[i].tier != tier) continue;
      ++total;
      if (!peers_[i].down && states_[i].healthy) ++healthy;
    }
    if (healthy == 0) continue;
    if (healthy * 100 >= options_.tier_min_healthy * total) return tier;
    if (!fallback) fallback = tier;
  }
  return fallback;
}

// Adds the untried, not-down peers of `tier` (healthy ones only when asked)
// to the candidates; true when it added any.
bool Balancer::gather(int tier, bool need_healthy) {
  bool added = false;
  for (std::size_t i = 0; i < peers_.size(); ++i) {
    if (peers_[i].tier != tier || peers_[i].down || tried_[i]) continue;
    if (need_healthy && !states_[i].healthy) continue;
    list_.push_back(i);
    eligible_[i] = 1;
    added = true;
  }
  return added;
}

std::optional<std::size_t> Balancer::pick(const PickContext& ctx) {
  list_.clear();
  eligible_.assign(peers_.size(), 0);
  tried_.assign(peers_.size(), 0);
  for (std::size_t t : ctx.tried) {
    if (t < tried_.size()) tried_[t] = 1;
  }

  if (std::optional<int> serving = servingTier()) {
    // A retry that has tried the serving tier's healthy peers spills over to
    // the other tiers, lowest first, as nginx moves on to backup servers.
    if (!gather(*serving, true)) {
      for (int tier : tiers_) {
        if (tier != *serving && gather(tier, true)) break;
      }
    }
  } else if (options_.fail_open) {
    for (int tier : tiers_) {
      if (gather(tier, false)) break;
    }
  }
  if (list_.empty()) return std::nullopt;
  if (list_.size() == 1) return list_.front();
  return choose(Candidates{list_, eligible_}, ctx);
}

void Balancer::onStart(std::size_t i) {
  if (i < states_.size()) ++states_[i].in_flight;
}

void Balancer::onFinish(std::size_t i, int64_t latency_us, Outcome outcome, int64_t now_us) {
  if (i >= states_.size()) return;
  if (states_[i].in_flight > 0) --states_[i].in_flight;
  finished(i, latency_us, outcome, now_us);
}

void Balancer::markHealthy(std::size_t i, bool healthy) {
  if (i < states_.size()) states_[i].healthy = healthy;
}

std::optional<std::size_t> Balancer::indexOf(std::string_view id) const {
  for (std::size_t i = 0; i < peers_.size(); ++i) {
    if (peers_[i].id() == id) return i;
  }
  return std::nullopt;
}

void Balancer::rebuilt(const std::vector<bool>&, int64_t) {}

// nginx lowers a failed peer's effective weight by weight / max_fails and
// lets it climb back by one per selection round; with the default
// max_fails=1 that is all of it. Shared by the balancers that use smooth
// round robin (round_robin, and least_conn for its ties).
void Balancer::finished(std::size_t i, int64_t, Outcome outcome, int64_t) {
  if (outcome == Outcome::kFailed) states_[i].effective_weight = 0;
}

std::unique_ptr<Balancer> makeBalancer(std::string_view type, const BalancerOptions& options) {
  if (type == "round_robin") return std::make_unique<RoundRobinBalancer>(options);
  if (type == "chash") return std::make_unique<ChashBalancer>(options);
  if (type == "least_conn") return std::make_unique<LeastConnBalancer>(options);
  if (type == "ewma") return std::make_unique<EwmaBalancer>(options);
  return nullptr;
}

}  // namespace tidegate::upstream
