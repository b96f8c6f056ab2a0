// nginx's least_conn: the fewest requests in flight relative to weight;
// ties go round robin (smooth, weighted), so an idle upstream still spreads
// its traffic by weight.
#pragma once

#include <vector>

#include "upstream/balancer.h"

namespace tidegate::upstream {

class LeastConnBalancer final : public Balancer {
 public:
  using Balancer::Balancer;
  std::string_view type() const override { return "least_conn"; }

 protected:
  std::size_t choose(const Candidates& c, const PickContext& ctx) override;

 private:
  std::vector<std::size_t> ties_;  // scratch, kept to avoid allocating per pick
};

}  // namespace tidegate::upstream
