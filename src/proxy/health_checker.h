// Active health checks (docs/health.md), run once per machine: every worker
// has a HealthChecker, and the one whose pid holds the shared upstream
// table's checker slot (shm/upstream_table.h) probes every server of every
// upstream that has a health_check; the others only keep asking for the
// slot, so when the checker dies (the master frees its slot) or stops,
// another worker takes over within one election period.
//
// The checker follows the table: on each election tick where the table's
// version moved, it re-lists the upstreams and starts probes for a new
// upstream at once (not after an interval, not on a first request), stops
// those of a removed one and restarts those of one whose spec changed.
// Each server has one probe, re-armed only when the last one has finished
// (probes never pile up): after `interval` while the server is healthy,
// `unhealthy_interval` while it is not. Results go to the table
// (reportProbe), so every worker sees a verdict on its next request.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "conf/config.h"
#include "shm/upstream_table.h"

namespace tidegate::proxy {

class HealthProbe;

class HealthChecker {
 public:
  // Every period the worker asks for the checker slot. 200 ms: a dead
  // checker is replaced well within a second; a compare-and-swap costs nothing.
  static constexpr uint64_t kElectionMs = 200;

  // `cfg` (its user variables, for reading specs) and `table` outlive us.
  HealthChecker(uv_loop_t* loop, const conf::Config& cfg, shm::UpstreamTable& table);
  // Calls stop().
  ~HealthChecker();
  HealthChecker(const HealthChecker&) = delete;
  HealthChecker& operator=(const HealthChecker&) = delete;

  // Starts the election; the first tick runs on the loop's next turn.
  void start();
  // Stops the election and every probe and gives up the checker slot (a
  // worker that begins to shut down). Idempotent. Handles close through the
  // loop: their memory goes in their close callbacks, so this object may be
  // destroyed at once, but the loop must run once more before it closes.
  void stop();

  bool isChecker() const { return is_checker_; }

 private:
  struct Probes {
    uint64_t version = 0;  // the table entry's version the probes were made from
    std::vector<HealthProbe*> probes;
  };

  static void onElection(uv_timer_t* t) noexcept;
  void elect();
  // Makes the probes match the table's upstreams (see the header comment).
  void sync();
  void startProbes(const std::string& name, const std::string& spec, Probes* out);
  void stopProbes(Probes& p);
  void stopAllProbes();

  uv_loop_t* loop_;
  const conf::Config& cfg_;
  shm::UpstreamTable& table_;
  pid_t pid_;
  uv_timer_t* election_ = nullptr;  // heap: freed in its close callback
  bool stopped_ = false;
  bool is_checker_ = false;
  uint64_t seen_ = 0;  // the table version the probes reflect (0: none yet)
  std::unordered_map<std::string, Probes> upstreams_;  // by lower-cased name
};

}  // namespace tidegate::proxy
