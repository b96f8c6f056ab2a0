#include "upstream/chash.h"

#include <algorithm>
#include <string>

namespace tidegate::upstream {

namespace {

// FNV-1a 64-bit parameters from the FNV reference page.
constexpr uint64_t kFnvOffset = 14695981039346656037ull;
constexpr uint64_t kFnvPrime = 1099511628211ull;
// 2^64 / golden ratio, the usual odd increment that spreads consecutive
// integers over 64 bits.
constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;

uint64_t fnv1a(std::string_view s) {
  uint64_t h = kFnvOffset;
  for (unsigned char ch : s) {
    h ^= ch;
    h *= kFnvPrime;
  }
  return h;
}

// Multipliers and shifts of Stafford's "Mix13" variant, the finaliser
// splitmix64 uses: every input bit flips about half the output bits.
uint64_t mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

}  // namespace

uint64_t chashKey(std::string_view key) { return mix(fnv1a(key)); }

void ChashBalancer::rebuilt(const std::vector<bool>&, int64_t) {
  std::span<const Peer> ps = peers();
  ring_.clear();
  for (std::size_t i = 0; i < ps.size(); ++i) {
    const uint64_t base = fnv1a(ps[i].id());
    const int points = ps[i].weight * kPointsPerWeight;
    for (int k = 0; k < points; ++k) ring_.push_back({mix(base + kGolden * static_cast<uint64_t>(k)), i});
  }
  // On a (rare) equal hash, order by id so the ring does not depend on the
  // order servers were listed in.
  std::sort(ring_.begin(), ring_.end(), [ps](const Point& a, const Point& b) {
    if (a.hash != b.hash) return a.hash < b.hash;
    return ps[a.peer].id() < ps[b.peer].id();
  });
}

std::size_t ChashBalancer::choose(const Candidates& c, const PickContext& ctx) {
  const uint64_t h = chashKey(ctx.hash_key);
  auto it = std::lower_bound(ring_.begin(), ring_.end(), h,
                             [](const Point& p, uint64_t v) { return p.hash < v; });
  std::size_t pos = static_cast<std::size_t>(it - ring_.begin());
  for (std::size_t n = 0; n < ring_.size(); ++n, ++pos) {
    const Point& p = ring_[pos % ring_.size()];
    if (c.eligible[p.peer]) return p.peer;
  }
  return c.list.front();  // unreachable: every candidate has points on the ring
}

}  // namespace tidegate::upstream
