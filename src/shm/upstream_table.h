// The shared upstream table: every upstream's description and every
// server's health, in one shared-memory zone all processes see.
//
// Two kinds of records, both in the zone's heap and linked by Offset:
//   - one directory entry per upstream: its name, a version and a spec (the
//     upstream's description as JSON text, upstream/upstream_json.h). put()
//     writes a whole new spec and swaps it in under the lock, so a reader
//     (who copies under the same lock) sees the old spec or the new one,
//     never a mix.
//   - one health record per (upstream, server address): passive failures in
//     their fail_timeout window, active probe results (consecutive successes
//     and failures, and the verdict), a manual down flag (set_down), total
//     failures, the last error, when the status last changed and the last
//     kHistory transitions with their reasons. Records are keyed by address,
//     not by position, so they survive any change of the server list.
//
// version() is one integer that changes on every put/remove and on every
// health transition (a server going out or coming back); a worker compares it
// with the value it last synced at, on each request, and re-reads only then.
// Failures that do not change a verdict do not move it.
//
// Clocks: passive windows use the monotonic NowMs clock every process shares;
// last_change and history times are wall-clock milliseconds (for people).
//
// One robust mutex guards everything; operations are short (no I/O, no Lua).
// If a process dies holding it in the middle of a write (the `dirty` flag is
// set) the next locker empties the table and counts a reset; the master,
// which reaps the dead worker, then publishes the conf's upstreams again
// (resets() tells it). Health records are lost then; servers count as up.
//
// The health checker election lives here too: checker() is the pid of the
// one process that runs active probes for the machine (0: none yet). So
// does the counter of pushed Lua modules (moduleVersion(): the admin API
// bumps it after each push, rollback or delete; workers compare it), and
// its twin for certificates pushed through PUT /ssl (certVersion()).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "shm/zone.h"

namespace tidegate::shm {

struct UpstreamTableHeader;

// A copy of one health record.
struct ServerHealth {
  static constexpr int kHistory = 8;
  struct Transition {
    int64_t at_ms = 0;  // wall clock
    bool healthy = true;
    std::string reason;
  };

  std::string server;             // "ip:port"
  bool active_down = false;       // the active checks' verdict
  bool manual_down = false;       // set_down(..., true)
  int64_t passive_down_until = 0;  // monotonic ms; 0: not taken out by passive health
  uint32_t passive_fails = 0;     // in the current fail_timeout window
  uint32_t successes = 0;         // consecutive active probe results
  uint32_t failures = 0;
  uint64_t fail_num = 0;          // every failure counted, passive and active
  int64_t last_change_ms = 0;     // wall clock of the last transition (0: none)
  std::string last_error;
  std::vector<Transition> history;  // oldest first, at most kHistory

  // Gets traffic (manual_down aside, which works like the `down` flag).
  bool healthy(int64_t now_ms) const { return !active_down && (passive_down_until == 0 || passive_down_until <= now_ms); }
  // The word /status and get_status() show: "down" (`down` in its
  // definition, or set down by hand), "err" (out by active or passive
  // health) or "ok".
  const char* status(bool conf_down, int64_t now_ms) const {
    return conf_down || manual_down ? "down" : healthy(now_ms) ? "ok" : "err";
  }
};

class UpstreamTable {
 public:
  using NowMs = int64_t (*)();

  // The process's table, made on first use (the master calls it before it
  // forks, so workers share it). Null if the mapping failed.
  static UpstreamTable* shared();

  // Formats `zone` (zero-filled, before fork). False and *err on failure.
  static bool init(Zone& zone, std::string* err);
  // `mono`: the passive-health clock (shared by all processes); `wall`: for people.
  UpstreamTable(Zone& zone, NowMs mono, NowMs wall);

  // --- upstream directory -------------------------------------------------
  struct Entry {
    std::string name;  // as first published
    uint64_t version = 0;
    std::string spec;
  };

  uint64_t version() const;
  // The passive-health clock (monotonic milliseconds).
  int64_t nowMs() const { return mono_(); }
  // Publishes `spec` for `name` (case-insensitive). Nothing changes (and the
  // version stays) when the spec is the same text. False and *err when the
  // zone is full.
  bool put(std::string_view name, std::string_view spec, std::string* err);
  // Removes the upstream and its health records; false if there was none.
  bool remove(std::string_view name);
  bool get(std::string_view name, Entry* out);
  // Every upstream, in publishing order. `known` returns the version the
  // caller already has for a name (0: none); the spec is copied only when it
  // differs. Returns version() as of the listing.
  uint64_t list(std::vector<Entry>* out, const std::function<uint64_t(std::string_view)>& known = {});

  // --- health -------------------------------------------------------------
  // A failed try against `server` (passive health): counted in a window of
  // fail_timeout_ms; the max_fails-th failure in it takes the server out for
  // fail_timeout_ms. True if this failure took it out. max_fails 0 counts
  // the failure (fail_num, last_error) but never takes the server out.
  bool reportFailure(std::string_view upstream, std::string_view server, int max_fails, uint64_t fail_timeout_ms,
                     std::string_view error);
  // An active probe's result. The server goes down after `fails`
  // consecutive failures and comes back after `passes` consecutive
  // successes (which also end a passive time-out). True if its verdict changed.
  bool reportProbe(std::string_view upstream, std::string_view server, bool ok, std::string_view error, int fails,
                   int passes);
  // set_down: true if the flag changed.
  bool setManualDown(std::string_view upstream, std::string_view server, bool down);
  // The records of `servers` of one upstream, in that order, under one lock
  // (a server without a record reads as healthy with no history). A passive
  // time-out that is over is ended here, as a transition.
  void health(std::string_view upstream, const std::vector<std::string>& servers, std::vector<ServerHealth>* out);
  // Drops the records of `upstream` whose server is not in `keep`.
  void pruneHealth(std::string_view upstream, const std::vector<std::string>& keep);

  // --- the health checker election -----------------------------------------
  // Makes `self` the checker if there is none or the last one is gone (its
  // pid no longer exists or released). True if `self` is the checker now.
  bool claimChecker(pid_t self);
  // `self` stops being the checker (a worker that is shutting down).
  void releaseChecker(pid_t self);
  // The master reaped `pid`: if it was the checker, the place is free.
  void processExited(pid_t pid);
  pid_t checker() const;

  // --- pushed Lua modules ---------------------------------------------------
  uint64_t moduleVersion() const;
  void bumpModuleVersion();
  // --- certificates pushed through the admin API ----------------------------
  uint64_t certVersion() const;
  void bumpCertVersion();

  // Times the lock was inherited from a dead holder, and how many of those
  // emptied the table.
  uint64_t ownerDeaths();
  uint64_t resets();
  // Heap and index invariants, for tests.
  bool check(std::string* why);

 private:
  friend class TableLock;
  struct DirEntry;
  struct HealthRec;

  Offset findEntry(std::string_view name) const;
  Offset findHealth(std::string_view upstream, std::string_view server, uint64_t hash) const;
  Offset healthFor(std::string_view upstream, std::string_view server, bool create);
  void transition(HealthRec* r, bool healthy, std::string_view reason);
  void unlinkHealth(Offset off);
  void bump();
  void reset();
  void copyOut(const HealthRec* r, ServerHealth* out) const;

  Zone& zone_;
  std::byte* base_;
  UpstreamTableHeader* h_;
  NowMs mono_;
  NowMs wall_;
};

}  // namespace tidegate::shm
