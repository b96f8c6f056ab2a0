#include "shm/dict.h"

#include <sys/random.h>

#include <atomic>
#include <bit>
#include <chrono>
#include <cstring>

#include "shm/mutex.h"
#include "shm/test_hooks.h"

namespace tidegate::shm {

namespace {

constexpr uint64_t kMagic = 0x7464676473686d31;  // "tdgdshm1"
// One bucket per 256 bytes of zone: ~3% of the zone, chains of 2-3 entries
// when entries average ~100 bytes.
constexpr uint64_t kBytesPerBucket = 256;
// nginx frees at most two expired tail entries per write (ngx_http_lua_shdict_expire).
constexpr int kExpirePerWrite = 2;
// flush_all marks entries expired at this instant, as nginx does (sd->expires = 1).
constexpr int64_t kFlushedAt = 1;

uint64_t align8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

// FNV-1a from a per-zone random basis (so clients cannot aim keys at one
// chain), folded to 32 bits.
uint32_t hashKey(uint64_t seed, std::string_view key) {
  uint64_t h = 0xcbf29ce484222325 ^ seed;
  for (unsigned char c : key) h = (h ^ c) * 0x100000001b3;
  return static_cast<uint32_t>(h ^ (h >> 32));
}

size_t valueBytes(const Value& v) {
  switch (v.type) {
    case Type::kString:
      return v.string.size();
    case Type::kNumber:
      return sizeof(double);
    case Type::kBoolean:
      return 1;
    default:
      return 0;
  }
}

Status checkKey(std::string_view key) {
  if (key.empty()) return Status::kEmptyKey;
  if (key.size() > Dict::kMaxKey) return Status::kKeyTooLong;
  return Status::kOk;
}

struct ListHead {
  Offset head;
  Offset tail;
  int64_t len;
};

struct ListNode {
  Offset prev;
  Offset next;
  uint32_t len;
  Type type;
  std::byte* bytes() { return reinterpret_cast<std::byte*>(this + 1); }
};

}  // namespace

struct DictHeader {
  uint64_t magic;
  pthread_mutex_t mutex;
  uint32_t dirty;  // a mutation is in progress (see dict.h)
  uint32_t bucket_mask;
  uint64_t hash_seed;
  Offset buckets;
  Offset heap_origin;
  Offset lru_head;  // most recently used
  Offset lru_tail;
  uint64_t entries;
  uint64_t owner_deaths;
  uint64_t resets;
  HeapHeader heap;
};

struct Dict::Entry {
  Offset hash_next;
  Offset lru_prev;
  Offset lru_next;
  int64_t expires;  // absolute ms, 0 = never
  uint32_t hash;
  uint32_t flags;
  uint32_t value_len;
  uint16_t key_len;
  Type type;

  static uint64_t valueAt(size_t key_len) { return align8(sizeof(Entry) + key_len); }
  std::string_view key() const { return {reinterpret_cast<const char*>(this + 1), key_len}; }
  std::byte* value() { return reinterpret_cast<std::byte*>(this) + valueAt(key_len); }
  const std::byte* value() const { return reinterpret_cast<const std::byte*>(this) + valueAt(key_len); }
  ListHead* list() { return reinterpret_cast<ListHead*>(value()); }
};

// The dict lock for one operation. A write lock keeps `dirty` set until it is
// released; the signal fences keep the compiler from moving structure writes
// outside the dirty window (a SIGKILL can land between any two instructions).
class DictLock {
 public:
  DictLock(Dict& d, bool write) : d_(d), mutex_(&d.h_->mutex) {
    if (mutex_.lock() == LockResult::kOwnerDied) {
      d_.h_->owner_deaths++;
      if (std::atomic_ref<uint32_t>(d_.h_->dirty).load(std::memory_order_acquire) != 0) {
        d_.reset();
        d_.h_->resets++;
      }
    }
    if (write) markDirty();
  }
  ~DictLock() {
    clearDirty();
    mutex_.unlock();
  }
  DictLock(const DictLock&) = delete;
  DictLock& operator=(const DictLock&) = delete;

  void markDirty() {
    std::atomic_ref<uint32_t>(d_.h_->dirty).store(1, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
  void clearDirty() {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    std::atomic_ref<uint32_t>(d_.h_->dirty).store(0, std::memory_order_relaxed);
  }

 private:
  Dict& d_;
  RobustMutex mutex_;
};

bool Dict::init(Zone& zone, std::string* err) {
  auto* h = reinterpret_cast<DictHeader*>(zone.base());
  uint64_t buckets = std::bit_floor(zone.size() / kBytesPerBucket);
  if (buckets < 16) buckets = 16;
  h->buckets = (sizeof(DictHeader) + 63) & ~uint64_t{63};
  h->heap_origin = h->buckets + buckets * sizeof(Offset);
  if (h->heap_origin + 4096 > zone.size()) {
    *err = "zone too small for a dict";
    return false;
  }
  h->bucket_mask = static_cast<uint32_t>(buckets - 1);
  if (!RobustMutex::init(&h->mutex)) {
    *err = "cannot initialise a robust process-shared mutex";
    return false;
  }
  h->owner_deaths = 0;
  h->resets = 0;
  if (getrandom(&h->hash_seed, sizeof(h->hash_seed), 0) != sizeof(h->hash_seed)) {
    h->hash_seed = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  Dict d(zone, nullptr);
  d.reset();
  h->magic = kMagic;
  return true;
}

Dict::Dict(Zone& zone, NowMs now)
    : zone_(zone), base_(zone.base()), h_(reinterpret_cast<DictHeader*>(zone.base())), now_(now) {}

void Dict::reset() {
  std::memset(base_ + h_->buckets, 0, (uint64_t{h_->bucket_mask} + 1) * sizeof(Offset));
  h_->lru_head = 0;
  h_->lru_tail = 0;
  h_->entries = 0;
  Heap(base_, &h_->heap).init(h_->heap_origin, zone_.size());
}

Offset& Dict::bucket(uint32_t hash) const {
  return reinterpret_cast<Offset*>(base_ + h_->buckets)[hash & h_->bucket_mask];
}

Status Dict::probe(std::string_view key, Probe* p) const {
  if (Status s = checkKey(key); s != Status::kOk) return s;
  *p = {key, hashKey(h_->hash_seed, key), now_()};
  return Status::kOk;
}

Offset Dict::find(const Probe& p) const {
  for (Offset off = bucket(p.hash); off != 0;) {
    const Entry* e = entry(off);
    if (e->hash == p.hash && e->key() == p.key) return off;
    off = e->hash_next;
  }
  return 0;
}

Offset Dict::findLive(const Probe& p) const {
  Offset off = find(p);
  return off != 0 && !expired(entry(off), p.now) ? off : 0;
}

bool Dict::expired(const Entry* e, int64_t now) const { return e->expires != 0 && e->expires <= now; }

void Dict::lruPushHead(Offset off) {
  Entry* e = entry(off);
  e->lru_prev = 0;
  e->lru_next = h_->lru_head;
  if (h_->lru_head != 0) {
    entry(h_->lru_head)->lru_prev = off;
  } else {
    h_->lru_tail = off;
  }
  h_->lru_head = off;
}

void Dict::lruUnlink(Offset off) {
  Entry* e = entry(off);
  if (e->lru_prev != 0) {
    entry(e->lru_prev)->lru_next = e->lru_next;
  } else {
    h_->lru_head = e->lru_next;
  }
  if (e->lru_next != 0) {
    entry(e->lru_next)->lru_prev = e->lru_prev;
  } else {
    h_->lru_tail = e->lru_prev;
  }
}

void Dict::touch(Offset off) {
  if (h_->lru_head == off) return;
  lruUnlink(off);
  lruPushHead(off);
}

void Dict::unlinkEntry(Offset off) {
  Entry* e = entry(off);
  Offset* link = &bucket(e->hash);
  while (*link != off) link = &entry(*link)->hash_next;
  *link = e->hash_next;
  TG_SHM_CRASH_POINT(kUnlinkBeforeLru);
  lruUnlink(off);
}

void Dict::freeEntry(Offset off) {
  unlinkEntry(off);
  Heap heap(base_, &h_->heap);
  Entry* e = entry(off);
  if (e->type == Type::kList) {
    for (Offset n = e->list()->head; n != 0;) {
      Offset next = reinterpret_cast<ListNode*>(base_ + n)->next;
      heap.free(n);
      n = next;
    }
  }
  heap.free(off);
  h_->entries--;
}

void Dict::expireSome(int64_t now) {
  for (int i = 0; i < kExpirePerWrite && h_->lru_tail != 0; i++) {
    if (!expired(entry(h_->lru_tail), now)) return;
    freeEntry(h_->lru_tail);
  }
}

Offset Dict::allocEntry(size_t bytes, bool evict, int64_t now, bool* forcible) {
  Heap heap(base_, &h_->heap);
  // Never empty the whole dict for a value that could not fit anyway.
  if (bytes + 16 > h_->heap.end - h_->heap.begin) return 0;
  Offset off = heap.alloc(bytes);
  while (off == 0 && evict && h_->lru_tail != 0) {
    if (!expired(entry(h_->lru_tail), now)) *forcible = true;
    freeEntry(h_->lru_tail);
    off = heap.alloc(bytes);
  }
  return off;
}

Offset Dict::insert(const Probe& p, size_t value_bytes, bool evict, bool* forcible) {
  Offset off = allocEntry(Entry::valueAt(p.key.size()) + value_bytes, evict, p.now, forcible);
  if (off == 0) return 0;
  Entry* e = entry(off);
  e->hash = p.hash;
  e->key_len = static_cast<uint16_t>(p.key.size());
  e->value_len = static_cast<uint32_t>(value_bytes);
  e->type = Type::kNil;
  e->flags = 0;
  e->expires = 0;
  std::memcpy(e + 1, p.key.data(), p.key.size());
  Offset& head = bucket(p.hash);
  e->hash_next = head;
  head = off;
  TG_SHM_CRASH_POINT(kInsertBeforeLru);
  lruPushHead(off);
  h_->entries++;
  return off;
}

void Dict::readValue(const Entry* e, ReadResult* r, std::string* out) const {
  r->status = Status::kOk;
  r->type = e->type;
  r->flags = e->flags;
  switch (e->type) {
    case Type::kString:
      if (out != nullptr) out->assign(reinterpret_cast<const char*>(e->value()), e->value_len);
      break;
    case Type::kNumber:
      std::memcpy(&r->number, e->value(), sizeof(double));
      break;
    case Type::kBoolean:
      r->boolean = *e->value() != std::byte{0};
      break;
    default:
      break;
  }
}

ReadResult Dict::read(std::string_view key, std::string* out, bool stale_ok) {
  ReadResult r;
  Probe p;
  if ((r.status = probe(key, &p)) != Status::kOk) return r;
  DictLock lock(*this, false);
  r.status = Status::kNotFound;
  Offset off = find(p);
  if (off == 0) return r;
  const Entry* e = entry(off);
  bool is_expired = expired(e, p.now);
  if (is_expired && !stale_ok) return r;
  if (e->type == Type::kList) {
    r.status = Status::kIsAList;
    return r;
  }
  readValue(e, &r, out);
  r.stale = is_expired;
  TG_SHM_CRASH_POINT(kGetBeforeTouch);
  if (!is_expired) {
    lock.markDirty();
    touch(off);
    lock.clearDirty();
  }
  return r;
}

ReadResult Dict::get(std::string_view key, std::string* out) { return read(key, out, false); }
ReadResult Dict::getStale(std::string_view key, std::string* out) { return read(key, out, true); }

WriteResult Dict::store(std::string_view key, const Value& v, int64_t ttl_ms, uint32_t flags, Mode mode,
                        bool safe) {
  WriteResult r;
  Probe p;
  if ((r.status = probe(key, &p)) != Status::kOk) return r;
  size_t bytes = valueBytes(v);
  if (bytes > UINT32_MAX) return {Status::kNoMemory, false};
  DictLock lock(*this, true);
  expireSome(p.now);
  Offset off = find(p);
  bool live = off != 0 && !expired(entry(off), p.now);
  if (mode == Mode::kAdd && live) return {Status::kExists, false};
  if (mode == Mode::kReplace && !live) return {Status::kNotFound, false};
  if (v.type == Type::kNil) {
    if (off != 0) freeEntry(off);
    return r;
  }
  if (off != 0 && (entry(off)->type == Type::kList || entry(off)->value_len != bytes)) {
    freeEntry(off);
    off = 0;
  }
  if (off != 0) {
    touch(off);
  } else if ((off = insert(p, bytes, !safe, &r.forcible)) == 0) {
    r.status = Status::kNoMemory;
    return r;
  }
  Entry* e = entry(off);
  e->type = v.type;
  e->flags = flags;
  e->expires = ttl_ms > 0 ? p.now + ttl_ms : 0;
  if (v.type == Type::kString) {
    std::memcpy(e->value(), v.string.data(), bytes);
  } else if (v.type == Type::kNumber) {
    std::memcpy(e->value(), &v.number, bytes);
  } else {
    *e->value() = static_cast<std::byte>(v.boolean ? 1 : 0);
  }
  return r;
}

WriteResult Dict::set(std::string_view key, const Value& v, int64_t ttl_ms, uint32_t flags) {
  return store(key, v, ttl_ms, flags, Mode::kSet, false);
}
WriteResult Dict::safeSet(std::string_view key, const Value& v, int64_t ttl_ms, uint32_t flags) {
  return store(key, v, ttl_ms, flags, Mode::kSet, true);
}
WriteResult Dict::add(std::string_view key, const Value& v, int64_t ttl_ms, uint32_t flags) {
  return store(key, v, ttl_ms, flags, Mode::kAdd, false);
}
WriteResult Dict::safeAdd(std::string_view key, const Value& v, int64_t ttl_ms, uint32_t flags) {
  return store(key, v, ttl_ms, flags, Mode::kAdd, true);
}
WriteResult Dict::replace(std::string_view key, const Value& v, int64_t ttl_ms, uint32_t flags) {
  return store(key, v, ttl_ms, flags, Mode::kReplace, false);
}

Status Dict::remove(std::string_view key) { return store(key, Value{}, 0, 0, Mode::kSet, true).status; }

IncrResult Dict::incr(std::string_view key, double n, const double* init, int64_t init_ttl_ms) {
  IncrResult r;
  Probe p;
  if ((r.status = probe(key, &p)) != Status::kOk) return r;
  DictLock lock(*this, true);
  expireSome(p.now);
  Offset off = find(p);
  if (off != 0 && !expired(entry(off), p.now)) {
    Entry* e = entry(off);
    if (e->type != Type::kNumber) return {Status::kNotANumber, 0, false};
    std::memcpy(&r.value, e->value(), sizeof(double));
    r.value += n;
    std::memcpy(e->value(), &r.value, sizeof(double));
    touch(off);
    return r;
  }
  if (init == nullptr) return {Status::kNotFound, 0, false};
  if (off != 0) freeEntry(off);
  if ((off = insert(p, sizeof(double), true, &r.forcible)) == 0) {
    r.status = Status::kNoMemory;
    return r;
  }
  Entry* e = entry(off);
  e->type = Type::kNumber;
  e->expires = init_ttl_ms > 0 ? p.now + init_ttl_ms : 0;
  r.value = *init + n;
  std::memcpy(e->value(), &r.value, sizeof(double));
  return r;
}

CountResult Dict::push(std::string_view key, const Value& v, bool left) {
  CountResult r;
  Probe p;
  if ((r.status = probe(key, &p)) != Status::kOk) return r;
  size_t bytes = valueBytes(v);
  if (bytes > UINT32_MAX) return {Status::kNoMemory, 0};
  DictLock lock(*this, true);
  expireSome(p.now);
  Offset off = find(p);
  if (off != 0 && expired(entry(off), p.now)) {
    freeEntry(off);
    off = 0;
  }
  if (off != 0 && entry(off)->type != Type::kList) return {Status::kNotAList, 0};
  bool created = off == 0;
  bool unused = false;
  if (created) {
    if ((off = insert(p, sizeof(ListHead), false, &unused)) == 0) return {Status::kNoMemory, 0};
    entry(off)->type = Type::kList;
    *entry(off)->list() = ListHead{0, 0, 0};
  }
  Offset n = Heap(base_, &h_->heap).alloc(sizeof(ListNode) + bytes);
  if (n == 0) {
    if (created) freeEntry(off);
    return {Status::kNoMemory, 0};
  }
  auto* node = reinterpret_cast<ListNode*>(base_ + n);
  node->len = static_cast<uint32_t>(bytes);
  node->type = v.type;
  if (v.type == Type::kNumber) {
    std::memcpy(node->bytes(), &v.number, bytes);
  } else {
    std::memcpy(node->bytes(), v.string.data(), bytes);
  }
  ListHead* l = entry(off)->list();
  node->prev = left ? 0 : l->tail;
  node->next = left ? l->head : 0;
  if (l->len == 0) {
    l->head = l->tail = n;
  } else if (left) {
    reinterpret_cast<ListNode*>(base_ + l->head)->prev = n;
    l->head = n;
  } else {
    reinterpret_cast<ListNode*>(base_ + l->tail)->next = n;
    l->tail = n;
  }
  r.count = ++l->len;
  touch(off);
  return r;
}

ReadResult Dict::pop(std::string_view key, std::string* out, bool left) {
  ReadResult r;
  Probe p;
  if ((r.status = probe(key, &p)) != Status::kOk) return r;
  DictLock lock(*this, true);
  r.status = Status::kNotFound;
  Offset off = find(p);
  if (off == 0) return r;
  if (expired(entry(off), p.now)) {
    freeEntry(off);
    return r;
  }
  if (entry(off)->type != Type::kList) {
    r.status = Status::kNotAList;
    return r;
  }
  ListHead* l = entry(off)->list();
  Offset n = left ? l->head : l->tail;
  auto* node = reinterpret_cast<ListNode*>(base_ + n);
  r.status = Status::kOk;
  r.type = node->type;
  if (node->type == Type::kNumber) {
    std::memcpy(&r.number, node->bytes(), sizeof(double));
  } else if (out != nullptr) {
    out->assign(reinterpret_cast<const char*>(node->bytes()), node->len);
  }
  if (left) {
    l->head = node->next;
    if (l->head != 0) reinterpret_cast<ListNode*>(base_ + l->head)->prev = 0;
  } else {
    l->tail = node->prev;
    if (l->tail != 0) reinterpret_cast<ListNode*>(base_ + l->tail)->next = 0;
  }
  Heap(base_, &h_->heap).free(n);
  if (--l->len == 0) {
    l->head = l->tail = 0;
    freeEntry(off);
  } else {
    touch(off);
  }
  return r;
}

CountResult Dict::llen(std::string_view key) {
  CountResult r;
  Probe p;
  if ((r.status = probe(key, &p)) != Status::kOk) return r;
  DictLock lock(*this, false);
  Offset off = findLive(p);
  if (off == 0) return r;
  if (entry(off)->type != Type::kList) return {Status::kNotAList, 0};
  r.count = entry(off)->list()->len;
  return r;
}

CountResult Dict::ttl(std::string_view key) {
  CountResult r;
  Probe p;
  if ((r.status = probe(key, &p)) != Status::kOk) return r;
  DictLock lock(*this, false);
  Offset off = findLive(p);
  if (off == 0) return {Status::kNotFound, 0};
  r.count = entry(off)->expires == 0 ? 0 : entry(off)->expires - p.now;
  return r;
}

Status Dict::expire(std::string_view key, int64_t ttl_ms) {
  Probe p;
  if (Status s = probe(key, &p); s != Status::kOk) return s;
  DictLock lock(*this, true);
  Offset off = findLive(p);
  if (off == 0) return Status::kNotFound;
  entry(off)->expires = ttl_ms > 0 ? p.now + ttl_ms : 0;
  return Status::kOk;
}

void Dict::flushAll() {
  DictLock lock(*this, true);
  for (Offset off = h_->lru_head; off != 0; off = entry(off)->lru_next) entry(off)->expires = kFlushedAt;
}

uint64_t Dict::flushExpired(uint64_t max, uint64_t max_scan) {
  int64_t now = now_();
  DictLock lock(*this, true);
  uint64_t freed = 0, scanned = 0;
  for (Offset off = h_->lru_tail; off != 0 && (max == 0 || freed < max) && (max_scan == 0 || scanned++ < max_scan);) {
    Offset prev = entry(off)->lru_prev;
    if (expired(entry(off), now)) {
      freeEntry(off);
      freed++;
    }
    off = prev;
  }
  return freed;
}

std::vector<std::string> Dict::getKeys(size_t max) {
  int64_t now = now_();
  std::vector<std::string> keys;
  DictLock lock(*this, false);
  for (Offset off = h_->lru_head; off != 0 && (max == 0 || keys.size() < max); off = entry(off)->lru_next) {
    if (!expired(entry(off), now)) keys.emplace_back(entry(off)->key());
  }
  return keys;
}

uint64_t Dict::freeSpace() {
  DictLock lock(*this, false);
  return h_->heap.free_bytes;
}

uint64_t Dict::ownerDeaths() {
  DictLock lock(*this, false);
  return h_->owner_deaths;
}

uint64_t Dict::resets() {
  DictLock lock(*this, false);
  return h_->resets;
}

bool Dict::check(std::string* why) {
  DictLock lock(*this, false);
  if (h_->magic != kMagic) {
    *why = "not a dict zone";
    return false;
  }
  if (!Heap(base_, &h_->heap).check(why)) return false;
  uint64_t hashed = 0;
  for (uint64_t b = 0; b <= h_->bucket_mask; b++) {
    for (Offset off = reinterpret_cast<Offset*>(base_ + h_->buckets)[b]; off != 0; off = entry(off)->hash_next) {
      if ((entry(off)->hash & h_->bucket_mask) != b || ++hashed > h_->entries) {
        *why = "bad hash chain " + std::to_string(b);
        return false;
      }
    }
  }
  uint64_t listed = 0;
  Offset prev = 0;
  for (Offset off = h_->lru_head; off != 0; prev = off, off = entry(off)->lru_next) {
    if (entry(off)->lru_prev != prev || ++listed > h_->entries) {
      *why = "bad LRU list";
      return false;
    }
  }
  if (hashed != h_->entries || listed != h_->entries || h_->lru_tail != prev) {
    *why = "entry count " + std::to_string(h_->entries) + " but " + std::to_string(hashed) + " hashed, " +
           std::to_string(listed) + " in the LRU list";
    return false;
  }
  return true;
}

#ifdef TIDEGATE_TEST_HOOKS
namespace test {
namespace {
CrashHook g_crash_hook = nullptr;
}  // namespace
void setCrashHook(CrashHook hook) { g_crash_hook = hook; }
void crashPoint(CrashPoint point) {
  if (g_crash_hook != nullptr) g_crash_hook(point);
}
}  // namespace test
#endif

}  // namespace tidegate::shm
