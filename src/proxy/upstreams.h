// The upstreams one worker proxies to: every `upstream` block, and every
// proxy_pass host:port that names none (an implicit round-robin upstream
// over the addresses it resolved to), each with its balancer, its peers'
// addresses and their passive health (per worker until the shared upstream
// table of issue 5 takes it over).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "conf/config.h"
#include "proxy/upstream_conn.h"
#include "upstream/balancer.h"

namespace tidegate::proxy {

struct UpstreamRuntime {
  struct PeerInfo {
    PeerAddress addr;
    int max_fails = 1;  // 0: failures are not counted
    uint64_t fail_timeout_ms = 10000;
    int fails = 0;                 // within the window that started at window_start_ms
    uint64_t window_start_ms = 0;
    uint64_t down_until_ms = 0;    // taken out by passive health until then (0: in)
  };

  std::string name;
  std::shared_ptr<const conf::UpstreamConf> conf;  // null for an implicit upstream
  std::unique_ptr<upstream::Balancer> balancer;
  std::vector<PeerInfo> peers;  // by balancer index
  uint64_t keepalive = 0;       // idle connections per peer (0: sized from demand)
  uint64_t keepalive_timeout_ms = 60000;
  uint64_t keepalive_requests = 1000;
  size_t down_count = 0;        // peers taken out by passive health

  // Peers whose fail_timeout is over get traffic again. Cheap when none is out.
  void refreshHealth(uint64_t now_ms);
  // Passive health: a failed try counts against max_fails within
  // fail_timeout; reaching it takes the peer out for fail_timeout. True if
  // this failure took it out.
  bool reportFailure(size_t i, uint64_t now_ms);
};

class Upstreams {
 public:
  explicit Upstreams(const conf::Config& cfg);
  Upstreams(const Upstreams&) = delete;
  Upstreams& operator=(const Upstreams&) = delete;

  // The upstream block of that name (case-insensitive), or null.
  UpstreamRuntime* find(std::string_view name);
  // The implicit upstream over `addresses` ("ip:port" each), made on first
  // use and kept. `key` names it ($upstream_addr lists its peers).
  UpstreamRuntime* implicit(const std::string& key, const std::vector<std::string>& addresses);

 private:
  std::unordered_map<std::string, std::unique_ptr<UpstreamRuntime>> named_;     // by lower-cased name
  std::unordered_map<std::string, std::unique_ptr<UpstreamRuntime>> implicit_;  // by key
};

}  // namespace tidegate::proxy
