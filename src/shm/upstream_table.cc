#include "shm/upstream_table.h"

#include <signal.h>
#include <strings.h>
#include <time.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "shm/mutex.h"
#include "shm/test_hooks.h"

namespace tidegate::shm {

namespace {

constexpr uint64_t kMagic = 0x7464677570737431;  // "tdgupst1"
constexpr uint64_t kBuckets = 4096;
// The table's zone: address space is reserved, pages cost memory only once
// written, so it is generous (a server's health record is ~1.2 KB).
constexpr size_t kZoneSize = 32u << 20;
constexpr size_t kErrorMax = 127;
constexpr size_t kReasonMax = 95;

uint64_t align8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// FNV-1a over the lower-cased upstream name, a separator and the server.
uint64_t healthHash(std::string_view upstream, std::string_view server) {
  uint64_t h = 0xcbf29ce484222325;
  for (char c : upstream) h = (h ^ static_cast<unsigned char>(lower(c))) * 0x100000001b3;
  h = (h ^ 0xff) * 0x100000001b3;
  for (char c : server) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3;
  return h;
}

bool sameName(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

int64_t monoMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

int64_t wallMs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Copies at most `max` bytes of `s` into a fixed field.
uint8_t fill(char* field, size_t max, std::string_view s) {
  size_t n = s.size() < max ? s.size() : max;
  memcpy(field, s.data(), n);
  return static_cast<uint8_t>(n);
}

}  // namespace

struct UpstreamTableHeader {
  uint64_t magic;
  pthread_mutex_t mutex;
  uint32_t dirty;  // a write is in progress (see the header comment)
  int32_t checker_pid;
  uint64_t version;  // read without the lock (atomic_ref)
  uint64_t next_version;
  Offset dir_head;  // directory entries, in publishing order
  Offset dir_tail;
  Offset buckets;   // kBuckets health chains
  Offset heap_origin;
  uint64_t owner_deaths;
  uint64_t resets;
  uint64_t module_version;  // atomic_ref; never reset with the table
  uint64_t cert_version;    // the same
  HeapHeader heap;
};

struct UpstreamTable::DirEntry {
  Offset next;
  Offset prev;
  uint64_t version;
  Offset spec;  // heap block of spec_len bytes
  uint64_t spec_len;
  uint32_t name_len;
  std::string_view name() const { return {reinterpret_cast<const char*>(this + 1), name_len}; }
};

struct UpstreamTable::HealthRec {
  struct Transition {
    int64_t at_ms;
    uint8_t healthy;
    uint8_t reason_len;
    char reason[kReasonMax + 1];
  };
  Offset next;
  uint64_t hash;
  int64_t passive_down_until;
  int64_t window_start;
  int64_t last_change_ms;
  uint64_t fail_num;
  uint32_t passive_fails;
  uint32_t successes;
  uint32_t failures;
  uint8_t active_down;
  uint8_t manual_down;
  uint8_t error_len;
  uint8_t history_len;
  uint8_t history_next;  // ring position of the next transition
  uint16_t upstream_len;
  uint16_t server_len;
  char last_error[kErrorMax + 1];
  Transition history[ServerHealth::kHistory];
  const char* key() const { return reinterpret_cast<const char*>(this + 1); }
  std::string_view upstream() const { return {key(), upstream_len}; }
  std::string_view server() const { return {key() + upstream_len, server_len}; }
};

// The table lock; a write lock keeps `dirty` set until it is released (as
// DictLock does; see dict.cc).
class TableLock {
 public:
  TableLock(UpstreamTable& t, bool write) : t_(t), mutex_(&t.h_->mutex) {
    if (mutex_.lock() == LockResult::kOwnerDied) {
      t_.h_->owner_deaths++;
      if (std::atomic_ref<uint32_t>(t_.h_->dirty).load(std::memory_order_acquire) != 0) {
        t_.reset();
        t_.h_->resets++;
      }
    }
    if (write) {
      std::atomic_ref<uint32_t>(t_.h_->dirty).store(1, std::memory_order_relaxed);
      std::atomic_signal_fence(std::memory_order_seq_cst);
    }
  }
  ~TableLock() {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    std::atomic_ref<uint32_t>(t_.h_->dirty).store(0, std::memory_order_relaxed);
    mutex_.unlock();
  }
  TableLock(const TableLock&) = delete;
  TableLock& operator=(const TableLock&) = delete;

 private:
  UpstreamTable& t_;
  RobustMutex mutex_;
};

UpstreamTable* UpstreamTable::shared() {
  struct Holder {
    std::unique_ptr<Zone> zone;
    std::unique_ptr<UpstreamTable> table;
  };
  static Holder* holder = [] {
    auto* hd = new Holder;
    std::string err;
    hd->zone = Zone::create(kZoneSize, &err);
    if (hd->zone && init(*hd->zone, &err)) hd->table = std::make_unique<UpstreamTable>(*hd->zone, monoMs, wallMs);
    return hd;
  }();
  return holder->table.get();
}

bool UpstreamTable::init(Zone& zone, std::string* err) {
  auto* h = reinterpret_cast<UpstreamTableHeader*>(zone.base());
  h->buckets = align8(sizeof(UpstreamTableHeader));
  h->heap_origin = h->buckets + kBuckets * sizeof(Offset);
  if (h->heap_origin + 4096 > zone.size()) {
    *err = "zone too small for the upstream table";
    return false;
  }
  if (!RobustMutex::init(&h->mutex)) {
    *err = "cannot initialise a robust process-shared mutex";
    return false;
  }
  h->dirty = 0;
  h->checker_pid = 0;
  h->version = 1;
  h->next_version = 1;
  h->owner_deaths = 0;
  h->resets = 0;
  h->module_version = 0;
  h->cert_version = 0;
  h->dir_head = h->dir_tail = 0;
  memset(zone.base() + h->buckets, 0, kBuckets * sizeof(Offset));
  Heap(zone.base(), &h->heap).init(h->heap_origin, zone.size());
  h->magic = kMagic;
  return true;
}

UpstreamTable::UpstreamTable(Zone& zone, NowMs mono, NowMs wall)
    : zone_(zone),
      base_(zone.base()),
      h_(reinterpret_cast<UpstreamTableHeader*>(zone.base())),
      mono_(mono),
      wall_(wall) {}

uint64_t UpstreamTable::version() const {
  return std::atomic_ref<uint64_t>(h_->version).load(std::memory_order_acquire);
}

void UpstreamTable::bump() {
  std::atomic_ref<uint64_t>(h_->version).fetch_add(1, std::memory_order_release);
}

void UpstreamTable::reset() {
  memset(base_ + h_->buckets, 0, kBuckets * sizeof(Offset));
  h_->dir_head = h_->dir_tail = 0;
  Heap(base_, &h_->heap).init(h_->heap_origin, zone_.size());
  bump();
}

Offset UpstreamTable::findEntry(std::string_view name) const {
  for (Offset off = h_->dir_head; off != 0;) {
    auto* e = reinterpret_cast<const DirEntry*>(base_ + off);
    if (sameName(e->name(), name)) return off;
    off = e->next;
  }
  return 0;
}

bool UpstreamTable::put(std::string_view name, std::string_view spec, std::string* err) {
  TableLock lock(*this, true);
  Heap heap(base_, &h_->heap);
  Offset off = findEntry(name);
  if (off != 0) {
    auto* e = reinterpret_cast<DirEntry*>(base_ + off);
    if (e->spec_len == spec.size() && memcmp(base_ + e->spec, spec.data(), spec.size()) == 0) return true;
  }
  Offset blob = heap.alloc(spec.empty() ? 1 : spec.size());
  if (blob == 0) {
    *err = "the upstream table is full";
    return false;
  }
  memcpy(base_ + blob, spec.data(), spec.size());
  TG_SHM_CRASH_POINT(kUpstreamPut);
  if (off == 0) {
    off = heap.alloc(sizeof(DirEntry) + name.size());
    if (off == 0) {
      heap.free(blob);
      *err = "the upstream table is full";
      return false;
    }
    auto* e = reinterpret_cast<DirEntry*>(base_ + off);
    e->next = 0;
    e->prev = h_->dir_tail;
    e->spec = 0;
    e->name_len = static_cast<uint32_t>(name.size());
    memcpy(e + 1, name.data(), name.size());
    if (h_->dir_tail != 0) reinterpret_cast<DirEntry*>(base_ + h_->dir_tail)->next = off;
    else h_->dir_head = off;
    h_->dir_tail = off;
  }
  auto* e = reinterpret_cast<DirEntry*>(base_ + off);
  Offset old = e->spec;
  e->spec = blob;
  e->spec_len = spec.size();
  e->version = ++h_->next_version;
  if (old != 0) heap.free(old);
  bump();
  return true;
}

bool UpstreamTable::remove(std::string_view name) {
  {
    TableLock lock(*this, true);
    Offset off = findEntry(name);
    if (off == 0) return false;
    auto* e = reinterpret_cast<DirEntry*>(base_ + off);
    if (e->prev != 0) reinterpret_cast<DirEntry*>(base_ + e->prev)->next = e->next;
    else h_->dir_head = e->next;
    if (e->next != 0) reinterpret_cast<DirEntry*>(base_ + e->next)->prev = e->prev;
    else h_->dir_tail = e->prev;
    Heap heap(base_, &h_->heap);
    heap.free(e->spec);
    heap.free(off);
    bump();
  }
  pruneHealth(name, {});
  return true;
}

bool UpstreamTable::get(std::string_view name, Entry* out) {
  TableLock lock(*this, false);
  Offset off = findEntry(name);
  if (off == 0) return false;
  auto* e = reinterpret_cast<const DirEntry*>(base_ + off);
  out->name.assign(e->name());
  out->version = e->version;
  out->spec.assign(reinterpret_cast<const char*>(base_ + e->spec), e->spec_len);
  return true;
}

uint64_t UpstreamTable::list(std::vector<Entry>* out, const std::function<uint64_t(std::string_view)>& known) {
  TableLock lock(*this, false);
  out->clear();
  for (Offset off = h_->dir_head; off != 0;) {
    auto* e = reinterpret_cast<const DirEntry*>(base_ + off);
    Entry& x = out->emplace_back();
    x.name.assign(e->name());
    x.version = e->version;
    if (!known || known(x.name) != e->version) {
      x.spec.assign(reinterpret_cast<const char*>(base_ + e->spec), e->spec_len);
    }
    off = e->next;
  }
  return version();
}

Offset UpstreamTable::findHealth(std::string_view upstream, std::string_view server, uint64_t hash) const {
  Offset off = reinterpret_cast<const Offset*>(base_ + h_->buckets)[hash % kBuckets];
  while (off != 0) {
    auto* r = reinterpret_cast<const HealthRec*>(base_ + off);
    if (r->hash == hash && r->server() == server && sameName(r->upstream(), upstream)) return off;
    off = r->next;
  }
  return 0;
}

Offset UpstreamTable::healthFor(std::string_view upstream, std::string_view server, bool create) {
  uint64_t hash = healthHash(upstream, server);
  Offset off = findHealth(upstream, server, hash);
  if (off != 0 || !create) return off;
  if (upstream.size() > 0xffff || server.size() > 0xffff) return 0;
  off = Heap(base_, &h_->heap).alloc(sizeof(HealthRec) + upstream.size() + server.size());
  if (off == 0) return 0;
  auto* r = reinterpret_cast<HealthRec*>(base_ + off);
  memset(r, 0, sizeof(HealthRec));
  r->hash = hash;
  r->upstream_len = static_cast<uint16_t>(upstream.size());
  r->server_len = static_cast<uint16_t>(server.size());
  char* key = reinterpret_cast<char*>(r + 1);
  memcpy(key, upstream.data(), upstream.size());
  memcpy(key + upstream.size(), server.data(), server.size());
  Offset& head = reinterpret_cast<Offset*>(base_ + h_->buckets)[hash % kBuckets];
  r->next = head;
  head = off;
  return off;
}

void UpstreamTable::transition(HealthRec* r, bool healthy, std::string_view reason) {
  HealthRec::Transition& t = r->history[r->history_next];
  t.at_ms = wall_();
  t.healthy = healthy ? 1 : 0;
  t.reason_len = fill(t.reason, kReasonMax, reason);
  r->history_next = static_cast<uint8_t>((r->history_next + 1) % ServerHealth::kHistory);
  if (r->history_len < ServerHealth::kHistory) r->history_len++;
  r->last_change_ms = t.at_ms;
  bump();
}

bool UpstreamTable::reportFailure(std::string_view upstream, std::string_view server, int max_fails,
                                  uint64_t fail_timeout_ms, std::string_view error) {
  int64_t now = mono_();
  TableLock lock(*this, true);
  Offset off = healthFor(upstream, server, true);
  if (off == 0) return false;
  auto* r = reinterpret_cast<HealthRec*>(base_ + off);
  r->fail_num++;
  r->error_len = fill(r->last_error, kErrorMax, error);
  if (max_fails <= 0 || r->passive_down_until > now) return false;
  if (r->passive_fails == 0 || now - r->window_start > static_cast<int64_t>(fail_timeout_ms)) {
    r->passive_fails = 0;
    r->window_start = now;
  }
  if (++r->passive_fails < static_cast<uint32_t>(max_fails)) return false;
  bool was_healthy = !r->active_down && r->passive_down_until == 0;
  r->passive_down_until = now + (fail_timeout_ms > 0 ? static_cast<int64_t>(fail_timeout_ms) : 1);
  r->passive_fails = 0;
  std::string reason = std::to_string(max_fails) + (max_fails == 1 ? " failure" : " failures") +
                       " (max_fails), out for fail_timeout: ";
  reason.append(error);
  if (was_healthy) transition(r, false, reason);
  else bump();
  return true;
}

bool UpstreamTable::reportProbe(std::string_view upstream, std::string_view server, bool ok, std::string_view error,
                                int fails, int passes) {
  int64_t now = mono_();
  TableLock lock(*this, true);
  Offset off = healthFor(upstream, server, true);
  if (off == 0) return false;
  auto* r = reinterpret_cast<HealthRec*>(base_ + off);
  if (ok) {
    r->failures = 0;
    r->successes++;
    bool passive_out = r->passive_down_until > now;
    if ((r->active_down || passive_out) && r->successes >= static_cast<uint32_t>(passes < 1 ? 1 : passes)) {
      r->active_down = 0;
      r->passive_down_until = 0;
      r->passive_fails = 0;
      transition(r, true, std::to_string(r->successes) + " health check(s) passed");
      return true;
    }
    return false;
  }
  r->successes = 0;
  r->failures++;
  r->fail_num++;
  r->error_len = fill(r->last_error, kErrorMax, error);
  if (!r->active_down && r->failures >= static_cast<uint32_t>(fails < 1 ? 1 : fails)) {
    bool was_healthy = r->passive_down_until <= now;
    r->active_down = 1;
    std::string reason = std::to_string(r->failures) + " health check(s) failed: ";
    reason.append(error);
    if (was_healthy) transition(r, false, reason);
    else bump();
    return true;
  }
  return false;
}

bool UpstreamTable::setManualDown(std::string_view upstream, std::string_view server, bool down) {
  TableLock lock(*this, true);
  Offset off = healthFor(upstream, server, true);
  if (off == 0) return false;
  auto* r = reinterpret_cast<HealthRec*>(base_ + off);
  if ((r->manual_down != 0) == down) return false;
  r->manual_down = down ? 1 : 0;
  transition(r, !down, down ? "set down by hand" : "set up by hand");
  return true;
}

void UpstreamTable::copyOut(const HealthRec* r, ServerHealth* out) const {
  out->active_down = r->active_down != 0;
  out->manual_down = r->manual_down != 0;
  out->passive_down_until = r->passive_down_until;
  out->passive_fails = r->passive_fails;
  out->successes = r->successes;
  out->failures = r->failures;
  out->fail_num = r->fail_num;
  out->last_change_ms = r->last_change_ms;
  out->last_error.assign(r->last_error, r->error_len);
  out->history.clear();
  int start = (r->history_next + ServerHealth::kHistory - r->history_len) % ServerHealth::kHistory;
  for (int i = 0; i < r->history_len; i++) {
    const HealthRec::Transition& t = r->history[(start + i) % ServerHealth::kHistory];
    out->history.push_back({t.at_ms, t.healthy != 0, std::string(t.reason, t.reason_len)});
  }
}

void UpstreamTable::health(std::string_view upstream, const std::vector<std::string>& servers,
                           std::vector<ServerHealth>* out) {
  int64_t now = mono_();
  TableLock lock(*this, true);
  out->resize(servers.size());
  for (size_t i = 0; i < servers.size(); i++) {
    ServerHealth& s = (*out)[i];
    s = ServerHealth();
    s.server = servers[i];
    Offset off = healthFor(upstream, servers[i], false);
    if (off == 0) continue;
    auto* r = reinterpret_cast<HealthRec*>(base_ + off);
    if (r->passive_down_until != 0 && r->passive_down_until <= now) {
      r->passive_down_until = 0;
      r->passive_fails = 0;
      if (!r->active_down) transition(r, true, "fail_timeout is over");
    }
    copyOut(r, &s);
  }
}

void UpstreamTable::unlinkHealth(Offset off) {
  auto* r = reinterpret_cast<HealthRec*>(base_ + off);
  Offset* link = &reinterpret_cast<Offset*>(base_ + h_->buckets)[r->hash % kBuckets];
  while (*link != 0 && *link != off) link = &reinterpret_cast<HealthRec*>(base_ + *link)->next;
  if (*link == off) *link = r->next;
  Heap(base_, &h_->heap).free(off);
}

void UpstreamTable::pruneHealth(std::string_view upstream, const std::vector<std::string>& keep) {
  TableLock lock(*this, true);
  auto* buckets = reinterpret_cast<Offset*>(base_ + h_->buckets);
  for (uint64_t b = 0; b < kBuckets; b++) {
    for (Offset off = buckets[b]; off != 0;) {
      auto* r = reinterpret_cast<HealthRec*>(base_ + off);
      Offset next = r->next;
      if (sameName(r->upstream(), upstream)) {
        bool kept = false;
        for (const std::string& k : keep) kept = kept || r->server() == k;
        if (!kept) unlinkHealth(off);
      }
      off = next;
    }
  }
}

bool UpstreamTable::claimChecker(pid_t self) {
  std::atomic_ref<int32_t> slot(h_->checker_pid);
  int32_t cur = slot.load(std::memory_order_acquire);
  if (cur == self) return true;
  // A checker that died without the master noticing yet (or with no master)
  // is replaced once its pid is gone.
  if (cur != 0 && !(kill(cur, 0) != 0 && errno == ESRCH)) return false;
  return slot.compare_exchange_strong(cur, self, std::memory_order_acq_rel);
}

void UpstreamTable::releaseChecker(pid_t self) {
  int32_t expected = self;
  std::atomic_ref<int32_t>(h_->checker_pid).compare_exchange_strong(expected, 0, std::memory_order_acq_rel);
}

void UpstreamTable::processExited(pid_t pid) { releaseChecker(pid); }

pid_t UpstreamTable::checker() const {
  return std::atomic_ref<int32_t>(h_->checker_pid).load(std::memory_order_acquire);
}

uint64_t UpstreamTable::moduleVersion() const {
  return std::atomic_ref<uint64_t>(h_->module_version).load(std::memory_order_acquire);
}

void UpstreamTable::bumpModuleVersion() {
  std::atomic_ref<uint64_t>(h_->module_version).fetch_add(1, std::memory_order_acq_rel);
}

uint64_t UpstreamTable::certVersion() const {
  return std::atomic_ref<uint64_t>(h_->cert_version).load(std::memory_order_acquire);
}

void UpstreamTable::bumpCertVersion() {
  std::atomic_ref<uint64_t>(h_->cert_version).fetch_add(1, std::memory_order_acq_rel);
}

uint64_t UpstreamTable::ownerDeaths() {
  TableLock lock(*this, false);
  return h_->owner_deaths;
}

uint64_t UpstreamTable::resets() {
  TableLock lock(*this, false);
  return h_->resets;
}

bool UpstreamTable::check(std::string* why) {
  TableLock lock(*this, false);
  if (h_->magic != kMagic) {
    *why = "bad magic";
    return false;
  }
  if (!Heap(base_, &h_->heap).check(why)) return false;
  Offset prev = 0;
  for (Offset off = h_->dir_head; off != 0;) {
    auto* e = reinterpret_cast<const DirEntry*>(base_ + off);
    if (e->prev != prev) {
      *why = "directory back link broken at " + std::string(e->name());
      return false;
    }
    prev = off;
    off = e->next;
  }
  if (prev != h_->dir_tail) {
    *why = "directory tail is not the last entry";
    return false;
  }
  return true;
}

}  // namespace tidegate::shm
