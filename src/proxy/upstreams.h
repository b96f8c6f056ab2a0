// The upstreams one worker proxies to, as a per-worker copy of the shared
// upstream table (shm/upstream_table.h): every upstream the table holds
// (from upstream blocks, later from the admin API), plus every proxy_pass
// host:port that names none (an implicit round-robin upstream over the
// addresses it resolved to, made on first use). Each has its balancer and
// its peers' addresses.
//
// sync() runs before each request's lookup and costs one integer compare
// while nothing changed: when the table's version moved (an upstream was
// published or removed, a server went out or came back) or a passive
// time-out this worker knows of is over, it re-reads the changed specs and
// every peer's health. An upstream whose spec changed is rebuilt in place:
// its balancer keeps the state of servers that stay (rebuild() by id) and
// generation() moves, so a try that spans it finds its peer again by id.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "conf/config.h"
#include "http/content_handler.h"
#include "proxy/upstream_conn.h"
#include "shm/upstream_table.h"
#include "upstream/balancer.h"

namespace tidegate::proxy {

// An instance of an upstream's Lua balancer module, made for one
// generation of its peers and one version of the pushed modules.
struct LuaBalancerInstance {
  http::ContentHandler* host = nullptr;
  int handle = 0;  // 0: new() failed (round robin until something changes)
  uint64_t generation = 0;
  uint64_t modules = 0;
  LuaBalancerInstance() = default;
  LuaBalancerInstance(const LuaBalancerInstance&) = delete;
  LuaBalancerInstance& operator=(const LuaBalancerInstance&) = delete;
  ~LuaBalancerInstance() {
    if (host && handle) host->freeLuaBalancer(handle);
  }
};

struct UpstreamRuntime {
  struct PeerInfo {
    PeerAddress addr;  // addr.text is the peer's id ("ip:port")
    int max_fails = 1;  // 0: failures are not counted
    uint64_t fail_timeout_ms = 10000;
    bool conf_down = false;  // `down` in the spec (manual set_down adds to it)
  };

  std::string name;
  bool is_implicit = false;
  uint64_t version = 0;     // the table entry's version this copy is built from
  uint64_t generation = 0;  // moves on every rebuild of peers/balancer
  std::shared_ptr<const conf::UpstreamConf> conf;
  const conf::LuaCode* balancer_lua = nullptr;  // balancer_by_lua* of the worker's conf, if any
  std::unique_ptr<upstream::Balancer> balancer;
  std::vector<PeerInfo> peers;  // by balancer index
  uint64_t keepalive = 0;       // idle connections per peer (0: sized from demand)
  uint64_t keepalive_timeout_ms = 60000;
  uint64_t keepalive_requests = 1000;
  PoolLimits pool_limits;  // pool_conns, pool_wait
  std::unique_ptr<LuaBalancerInstance> lua_balancer;  // "balancer": {"type": "lua"}

  // The peer's index now (after a rebuild it may have moved or gone:
  // npos). `index` and `gen` are what the caller saw at pick time.
  size_t indexNow(size_t index, uint64_t gen, const std::string& id) const;
};

class Upstreams {
 public:
  // `table`: the process's shared table (never null; `cfg` outlives us).
  Upstreams(const conf::Config& cfg, shm::UpstreamTable& table);
  Upstreams(const Upstreams&) = delete;
  Upstreams& operator=(const Upstreams&) = delete;

  // Brings the copy up to date if the table changed (see the header comment).
  void sync() {
    if (table_.version() != seen_ || (next_expiry_ != 0 && table_.nowMs() >= next_expiry_)) resync();
  }
  // The upstream of that name (case-insensitive), or null.
  std::shared_ptr<UpstreamRuntime> find(std::string_view name);
  // The implicit upstream over `addresses` ("ip:port" each), made on first
  // use and kept. `key` names it ($upstream_addr lists its peers).
  std::shared_ptr<UpstreamRuntime> implicit(const std::string& key, const std::vector<std::string>& addresses);

  // Passive health: a failed try against peer `id` of `rt`, with nginx's
  // log text. Counted in the shared table so every worker agrees; true if
  // it took the peer out (this worker stops choosing it at once, the others
  // on their next request).
  bool reportFailure(UpstreamRuntime& rt, const std::string& id, std::string_view error);
  // The pushed Lua modules' version (a Lua balancer is rebuilt when it moves).
  uint64_t moduleVersion() const { return table_.moduleVersion(); }

 private:
  void resync();
  void build(UpstreamRuntime& rt, std::shared_ptr<const conf::UpstreamConf> uc);
  // Reads the health of rt's peers from the table and tells the balancer.
  void applyHealth(UpstreamRuntime& rt, int64_t now_ms);

  const conf::Config& cfg_;
  shm::UpstreamTable& table_;
  uint64_t seen_ = 0;        // the table version this copy reflects
  int64_t next_expiry_ = 0;  // the earliest passive time-out end among our peers (0: none)
  std::unordered_map<std::string, std::shared_ptr<UpstreamRuntime>> named_;     // by lower-cased name
  std::unordered_map<std::string, std::shared_ptr<UpstreamRuntime>> implicit_;  // by key
  // find()'s last answer, as asked (a location names the same upstream
  // request after request); dropped when named_ changes.
  std::string last_name_;
  std::shared_ptr<UpstreamRuntime> last_found_;
  // Scratch for applyHealth().
  std::vector<std::string> ids_;
  std::vector<shm::ServerHealth> health_;
};

}  // namespace tidegate::proxy
