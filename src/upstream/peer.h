// What a balancer knows about one upstream server: its static description
// (Peer, from conf or the admin API) and its runtime state (PeerState, kept
// by the balancer). They are separate so that a new server list can be
// swapped in while the state of servers that stay carries over by id().
#pragma once

#include <cstdint>
#include <string>

namespace tidegate::upstream {

struct Peer {
  std::string host;
  uint16_t port = 0;
  int weight = 1;  // values below 1 are treated as 1
  int tier = 0;    // lower tiers serve first ("local first"); backup = 1
  bool down = false;  // administratively off: never picked, not even fail-open

  // "host:port": the identity state is keyed by across rebuilds.
  std::string id() const;
};

struct PeerState {
  bool healthy = true;  // as told by the caller (passive or active health)
  int in_flight = 0;    // onStart minus onFinish

  // Smooth weighted round robin (also breaks least_conn ties), nginx's
  // current_weight and effective_weight.
  int current_weight = 0;
  int effective_weight = 0;

  // Peak EWMA of latency in microseconds as of ewma_stamp_us. Until the first
  // real sample (ewma_sampled false) the value is a seed and any sample
  // replaces it.
  double ewma_us = 0;
  int64_t ewma_stamp_us = 0;
  bool ewma_sampled = false;
};

}  // namespace tidegate::upstream
