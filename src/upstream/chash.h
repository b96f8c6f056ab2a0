// Consistent hashing on a key (nginx's `hash $key consistent`): a ring with
// kPointsPerWeight points per unit of weight for every server, each point
// placed by hashing the server's id alone, so adding or removing a server
// moves only the keys on the arcs it gains or loses (about 1/N of them).
// A key whose owner is unhealthy, down or already tried walks on along the
// ring to the next usable server; the ring itself changes only on rebuild.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "upstream/balancer.h"

namespace tidegate::upstream {

// 64-bit FNV-1a (http://www.isthe.com/chongo/tech/comp/fnv/) followed by a
// splitmix64-style finaliser: FNV alone leaves similar strings ("k1", "k2")
// close together on the ring.
uint64_t chashKey(std::string_view key);

class ChashBalancer final : public Balancer {
 public:
  // nginx's ngx_http_upstream_hash_module uses 160 points per weight unit.
  static constexpr int kPointsPerWeight = 160;

  using Balancer::Balancer;
  std::string_view type() const override { return "chash"; }

 protected:
  void rebuilt(const std::vector<bool>& fresh, int64_t now_us) override;
  std::size_t choose(const Candidates& c, const PickContext& ctx) override;

 private:
  struct Point {
    uint64_t hash;
    std::size_t peer;
  };
  std::vector<Point> ring_;  // sorted by hash
};

}  // namespace tidegate::upstream
