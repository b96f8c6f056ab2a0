#include "upstream/round_robin.h"

namespace tidegate::upstream {

// As ngx_http_upstream_get_peer (ngx_http_upstream_round_robin.c): every
// candidate gains its effective weight, the highest current weight wins (the
// first on a tie) and pays back the total. Over a full cycle each peer is
// chosen weight times, spread out rather than in bursts.
std::size_t smoothWeightedPick(std::span<const std::size_t> list, std::span<const Peer> peers,
                               std::span<PeerState> states) {
  std::size_t best = list.front();
  int total = 0;
  bool have_best = false;
  for (std::size_t i : list) {
    PeerState& s = states[i];
    s.current_weight += s.effective_weight;
    total += s.effective_weight;
    // effective_weight only drops on failure; it climbs back here.
    if (s.effective_weight < peers[i].weight) ++s.effective_weight;
    if (!have_best || s.current_weight > states[best].current_weight) {
      best = i;
      have_best = true;
    }
  }
  states[best].current_weight -= total;
  return best;
}

std::size_t RoundRobinBalancer::choose(const Candidates& c, const PickContext&) {
  return smoothWeightedPick(c.list, peers(), states());
}

}  // namespace tidegate::upstream
