// nginx's smooth weighted round robin: weights {5,1,1} give a,a,b,a,c,a,a
// rather than a,a,a,a,a,b,c.
#pragma once

#include "upstream/balancer.h"

namespace tidegate::upstream {

class RoundRobinBalancer final : public Balancer {
 public:
  using Balancer::Balancer;
  std::string_view type() const override { return "round_robin"; }

 protected:
  std::size_t choose(const Candidates& c, const PickContext& ctx) override;
};

// One smooth weighted round-robin step over `list` (non-empty), updating
// current_weight and effective_weight in `states`. Returns the chosen index.
std::size_t smoothWeightedPick(std::span<const std::size_t> list, std::span<const Peer> peers,
                               std::span<PeerState> states);

}  // namespace tidegate::upstream
