// The one interface every upstream balancer implements, and the part they
// share: server list and state across rebuilds, tiers, health, retries and
// the all-unhealthy rule. Pure computation: no I/O, no clock of its own (the
// caller passes the time), not thread-safe (one instance per worker).
//
// Lifecycle for the caller (the proxy):
//   rebuild(servers)              on load and whenever the server list changes
//   markHealthy(i, up)            whenever health (passive or active) changes
//   pick(ctx) -> i or nullopt     on every try; nullopt means 503
//   onStart(i) ... onFinish(i,..) around every try that got a peer
// Indexes are valid until the next rebuild(); a try that spans a rebuild
// translates its peer with indexOf(id) (an index out of range is ignored).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "upstream/peer.h"

namespace tidegate::upstream {

struct PickContext {
  std::string_view hash_key;           // chash only: the evaluated key
  std::span<const std::size_t> tried;  // peers already tried by this request
  int64_t now_us = 0;                  // monotonic microseconds
};

enum class Outcome { kOk, kFailed };

struct BalancerOptions {
  // When no peer that is not `down` is healthy, pick among them anyway
  // instead of returning nullopt.
  bool fail_open = false;
  // A tier serves only while at least this percentage of its peers is
  // healthy (0: while any is). If no tier reaches it, the lowest tier with a
  // healthy peer serves.
  int tier_min_healthy = 0;
  // ewma: seed of the power-of-two-choices RNG; 0 draws one at random.
  uint64_t seed = 0;
  // ewma: decay time constant (10 s, as Finagle's and Linkerd's peak EWMA).
  int64_t ewma_decay_us = 10'000'000;
};

// The peers a balancer may choose from for one pick: `list` in index order,
// and `eligible[i]` non-zero for exactly those. Never empty.
struct Candidates {
  std::span<const std::size_t> list;
  std::span<const char> eligible;
};

class Balancer {
 public:
  explicit Balancer(const BalancerOptions& options) : options_(options) {}
  virtual ~Balancer() = default;
  Balancer(const Balancer&) = delete;
  Balancer& operator=(const Balancer&) = delete;

  virtual std::string_view type() const = 0;

  // Replaces the server list. State (health, in-flight, weights, EWMA) of
  // every id that stays is kept; new ids start fresh (ewma: at the median).
  void rebuild(std::vector<Peer> peers, int64_t now_us = 0);

  // The peer for this try, or nullopt when none may be used: every peer down
  // or unhealthy (without fail_open), or every usable peer already tried.
  std::optional<std::size_t> pick(const PickContext& ctx);

  void onStart(std::size_t i);
  void onFinish(std::size_t i, int64_t latency_us, Outcome outcome, int64_t now_us);
  void markHealthy(std::size_t i, bool healthy);

  std::size_t size() const { return peers_.size(); }
  const Peer& peer(std::size_t i) const { return peers_[i]; }
  const PeerState& state(std::size_t i) const { return states_[i]; }
  std::optional<std::size_t> indexOf(std::string_view id) const;

 protected:
  // After rebuild: fresh[i] is true for ids that were not there before.
  virtual void rebuilt(const std::vector<bool>& fresh, int64_t now_us);
  // Chooses one of c.list; may update state (round robin's weights).
  virtual std::size_t choose(const Candidates& c, const PickContext& ctx) = 0;
  // Called from onFinish after in_flight was decremented.
  virtual void finished(std::size_t i, int64_t latency_us, Outcome outcome, int64_t now_us);

  const BalancerOptions& options() const { return options_; }
  std::span<const Peer> peers() const { return peers_; }
  std::span<PeerState> states() { return states_; }

 private:
  std::optional<int> servingTier() const;
  bool gather(int tier, bool need_healthy);

  BalancerOptions options_;
  std::vector<Peer> peers_;
  std::vector<PeerState> states_;
  std::vector<int> tiers_;  // distinct tiers, ascending
  // Scratch for pick(), kept to avoid allocating per request.
  std::vector<std::size_t> list_;
  std::vector<char> eligible_;
  std::vector<char> tried_;
};

// "round_robin", "chash", "least_conn" or "ewma"; nullptr for anything else.
std::unique_ptr<Balancer> makeBalancer(std::string_view type, const BalancerOptions& options);

}  // namespace tidegate::upstream
