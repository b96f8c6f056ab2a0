#include "upstream/ewma.h"

#include <algorithm>
#include <cmath>

namespace tidegate::upstream {

namespace {

// A score never reaches zero, so in_flight still counts for a peer whose
// estimate has decayed away (or that has none yet).
constexpr double kMinLatencyUs = 1;

uint64_t seedFrom(const BalancerOptions& options) {
  if (options.seed != 0) return options.seed;
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

EwmaBalancer::EwmaBalancer(const BalancerOptions& options) : Balancer(options), rng_(seedFrom(options)) {}

double EwmaBalancer::decay(int64_t since_us, int64_t now_us) const {
  const double dt = static_cast<double>(std::max<int64_t>(now_us - since_us, 0));
  const double tau = static_cast<double>(std::max<int64_t>(options().ewma_decay_us, 1));
  return std::exp(-dt / tau);
}

double EwmaBalancer::latencyUs(std::size_t i, int64_t now_us) const {
  const PeerState& s = state(i);
  return s.ewma_us * decay(s.ewma_stamp_us, now_us);
}

double EwmaBalancer::score(std::size_t i, int64_t now_us) const {
  const double latency = std::max(latencyUs(i, now_us), kMinLatencyUs);
  return latency * (state(i).in_flight + 1) / peer(i).weight;
}

// New peers start at the median score of the peers that have samples, so
// they neither take the whole load (score 0) nor starve; their first real
// sample replaces the seed.
void EwmaBalancer::rebuilt(const std::vector<bool>& fresh, int64_t now_us) {
  std::vector<double> scores;
  for (std::size_t i = 0; i < size(); ++i) {
    if (!fresh[i] && state(i).ewma_sampled) scores.push_back(score(i, now_us));
  }
  if (scores.empty()) return;
  const double seed_score = median(std::move(scores));
  std::span<PeerState> ss = states();
  for (std::size_t i = 0; i < size(); ++i) {
    if (!fresh[i]) continue;
    ss[i].ewma_us = seed_score * peer(i).weight;  // in_flight is 0: score == seed_score
    ss[i].ewma_stamp_us = now_us;
    ss[i].ewma_sampled = false;
  }
}

std::size_t EwmaBalancer::choose(const Candidates& c, const PickContext& ctx) {
  const std::size_t n = c.list.size();
  std::uniform_int_distribution<std::size_t> first(0, n - 1), second(0, n - 2);
  const std::size_t a = first(rng_);
  std::size_t b = second(rng_);
  if (b >= a) ++b;
  const std::size_t pa = c.list[a], pb = c.list[b];
  return score(pb, ctx.now_us) < score(pa, ctx.now_us) ? pb : pa;
}

void EwmaBalancer::finished(std::size_t i, int64_t latency_us, Outcome outcome, int64_t now_us) {
  PeerState& s = states()[i];
  double sample = static_cast<double>(std::max<int64_t>(latency_us, 0));
  if (outcome == Outcome::kFailed) {
    sample = std::max({sample, kFailureLatencyUs, kFailureFactor * latencyUs(i, now_us)});
  }
  const double current = latencyUs(i, now_us);
  if (!s.ewma_sampled || sample > current) {
    s.ewma_us = sample;
  } else {
    const double w = decay(s.ewma_stamp_us, now_us);
    s.ewma_us = s.ewma_us * w + sample * (1 - w);
  }
  s.ewma_stamp_us = now_us;
  s.ewma_sampled = true;
}

}  // namespace tidegate::upstream
