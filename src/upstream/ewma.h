// "Speed first": peak EWMA of latency with power-of-two-choices, after
// Finagle's and Linkerd's PeakEwma balancers.
//
// Each peer carries a latency estimate that jumps up at once to a sample
// above it ("peak": a backend that turns slow loses traffic immediately) and
// otherwise blends towards samples with time constant ewma_decay_us. With no
// samples the estimate decays towards zero, so a peer that was penalised is
// probed again after a while. A failed try counts as a large latency,
// max(1 s, 10x the estimate), so a backend that fails fast cannot look fast.
//
// score = estimate * (in_flight + 1) / weight; a pick compares two distinct
// random candidates and takes the lower score, which avoids the herd that
// "always the best" causes when estimates are stale.
#pragma once

#include <random>
#include <vector>

#include "upstream/balancer.h"

namespace tidegate::upstream {

class EwmaBalancer final : public Balancer {
 public:
  // Failure penalty floor.
  static constexpr double kFailureLatencyUs = 1'000'000;
  static constexpr double kFailureFactor = 10;

  explicit EwmaBalancer(const BalancerOptions& options);
  std::string_view type() const override { return "ewma"; }

  // The estimate of peer i as of now_us (decayed since its last sample).
  double latencyUs(std::size_t i, int64_t now_us) const;
  double score(std::size_t i, int64_t now_us) const;

 protected:
  void rebuilt(const std::vector<bool>& fresh, int64_t now_us) override;
  std::size_t choose(const Candidates& c, const PickContext& ctx) override;
  void finished(std::size_t i, int64_t latency_us, Outcome outcome, int64_t now_us) override;

 private:
  double decay(int64_t since_us, int64_t now_us) const;

  std::mt19937_64 rng_;
};

}  // namespace tidegate::upstream
