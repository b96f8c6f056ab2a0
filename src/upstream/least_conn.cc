#include "upstream/least_conn.h"

#include "upstream/round_robin.h"

namespace tidegate::upstream {

namespace {

// in_flight(a)/weight(a) < in_flight(b)/weight(b), without division (as
// ngx_http_upstream_get_least_conn_peer compares them).
bool lessLoaded(const PeerState& a, int wa, const PeerState& b, int wb) {
  return static_cast<int64_t>(a.in_flight) * wb < static_cast<int64_t>(b.in_flight) * wa;
}

}  // namespace

std::size_t LeastConnBalancer::choose(const Candidates& c, const PickContext&) {
  std::span<const Peer> ps = peers();
  std::span<PeerState> ss = states();
  std::size_t best = c.list.front();
  for (std::size_t i : c.list) {
    if (lessLoaded(ss[i], ps[i].weight, ss[best], ps[best].weight)) best = i;
  }
  ties_.clear();
  for (std::size_t i : c.list) {
    if (!lessLoaded(ss[best], ps[best].weight, ss[i], ps[i].weight)) ties_.push_back(i);
  }
  if (ties_.size() == 1) return best;
  return smoothWeightedPick(ties_, ps, ss);
}

}  // namespace tidegate::upstream
