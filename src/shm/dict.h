// The store behind ngx.shared.DICT: one dict fills one Zone.
//
// Layout in the zone: DictHeader (robust mutex, LRU ends, counters, heap
// header), a power-of-two array of hash buckets (chains linked by Offset), then
// the heap (zone.h) holding one block per entry (header + key + value) and one
// per list node. A get is one hash lookup under an uncontended lock, copies the
// value out into the caller's buffer and allocates nothing in shared memory; it
// moves the entry to the head of the LRU list, as nginx does.
//
// Expiry: absolute milliseconds from the NowMs clock given to the Dict (tests
// drive a fake one); 0 means never. Expired entries stay until touched: a read
// treats them as absent (get_stale still returns them), every write first frees
// up to two expired entries from the LRU tail (nginx's shdict_expire), and
// flush_expired frees them in bulk. When the heap is full, set/add/replace/incr
// evict from the LRU tail and report `forcible` if a live entry went;
// safe_set/safe_add and list pushes never evict and return kNoMemory. A value
// of another size replaces the old one by free + insert, so a failed overwrite
// leaves the key absent, as in nginx.
//
// Crash safety: every mutation runs with `dirty` set in the header (set after
// the lock, cleared before unlock). If a process dies holding the lock, the
// next locker gets EOWNERDEAD; if `dirty` is set the dead process may have left
// a chain, the LRU list or the heap half-linked, so the dict is reset to empty
// (a cache loses its contents rather than serving a broken structure; nginx's
// master only force-unlocks and leaves the structure as the worker left it).
// A death during a read leaves dirty clear and keeps everything.
//
// Lua mapping (OpenResty returns; the Lua layer converts seconds <-> ms):
//   get/get_stale: kOk -> value, flags (nil when 0) [, stale]; kNotFound -> nil;
//                  kIsAList -> nil, "value is a list"
//   set/add/replace/safe_*: kOk -> true, nil, forcible; kExists -> false, "exists";
//                  kNotFound -> false, "not found"; kNoMemory -> false, "no memory", forcible
//   incr: kOk -> value, nil, forcible; kNotFound -> nil, "not found";
//         kNotANumber -> nil, "not a number"; kNoMemory -> nil, "no memory"
//   lpush/rpush: kOk -> length; kNotAList -> nil, "value not a list"; kNoMemory -> nil, "no memory"
//   lpop/rpop: kOk -> value; kNotFound -> nil; kNotAList -> nil, "value not a list"
//   llen: kOk -> length (0 when missing); kNotAList -> nil, "value not a list"
//   ttl: kOk -> seconds (0 = never); kNotFound -> nil, "not found"
//   expire: kOk -> true; kNotFound -> nil, "not found"
//   kEmptyKey -> nil, "empty key"; kKeyTooLong -> nil, "key too long" (any method)
//   capacity: the zone size, as nginx. free_space: bytes in free heap blocks;
//   nginx counts only wholly free 4 KB slab pages, so ours reads higher.
#pragma once

#include <pthread.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "shm/zone.h"

namespace tidegate::shm {

// Values are the LUA_T* numbers OpenResty stores, so the FFI layer can pass them through.
enum class Type : uint8_t { kNil = 0, kBoolean = 1, kNumber = 3, kString = 4, kList = 5 };

enum class Status : uint8_t {
  kOk,
  kNotFound,
  kExists,
  kNoMemory,
  kNotANumber,
  kNotAList,
  kIsAList,
  kEmptyKey,
  kKeyTooLong,
};

struct Value {
  Type type = Type::kNil;
  bool boolean = false;
  double number = 0;
  std::string_view string;

  static Value ofString(std::string_view s) { return {Type::kString, false, 0, s}; }
  static Value ofNumber(double n) { return {Type::kNumber, false, n, {}}; }
  static Value ofBoolean(bool b) { return {Type::kBoolean, b, 0, {}}; }
};

// A value read out; strings are copied into the caller's buffer (which may be
// nullptr when only the status, type or flags matter).
struct ReadResult {
  Status status = Status::kNotFound;
  Type type = Type::kNil;
  bool boolean = false;
  double number = 0;
  uint32_t flags = 0;
  bool stale = false;
};

struct WriteResult {
  Status status = Status::kOk;
  bool forcible = false;
};

struct IncrResult {
  Status status = Status::kOk;
  double value = 0;
  bool forcible = false;
};

struct CountResult {
  Status status = Status::kOk;
  int64_t count = 0;  // list length, or remaining ms for ttl()
};

struct DictHeader;

class Dict {
 public:
  using NowMs = int64_t (*)();
  static constexpr size_t kMaxKey = 65535;

  // Formats `zone` as an empty dict (master, before fork). False and *err on failure.
  static bool init(Zone& zone, std::string* err);
  // Attaches to a zone that init() formatted; `now` is read once per operation.
  Dict(Zone& zone, NowMs now);

  ReadResult get(std::string_view key, std::string* out);
  ReadResult getStale(std::string_view key, std::string* out);
  WriteResult set(std::string_view key, const Value& v, int64_t ttl_ms = 0, uint32_t flags = 0);
  WriteResult safeSet(std::string_view key, const Value& v, int64_t ttl_ms = 0, uint32_t flags = 0);
  WriteResult add(std::string_view key, const Value& v, int64_t ttl_ms = 0, uint32_t flags = 0);
  WriteResult safeAdd(std::string_view key, const Value& v, int64_t ttl_ms = 0, uint32_t flags = 0);
  WriteResult replace(std::string_view key, const Value& v, int64_t ttl_ms = 0, uint32_t flags = 0);
  // ngx.shared.DICT:delete (always succeeds for a valid key).
  Status remove(std::string_view key);
  // `init` applies only when the key is missing or expired; so does `init_ttl_ms`.
  IncrResult incr(std::string_view key, double n, const double* init = nullptr, int64_t init_ttl_ms = 0);
  // Lists hold strings and numbers only (the Lua layer rejects other types).
  CountResult lpush(std::string_view key, const Value& v) { return push(key, v, true); }
  CountResult rpush(std::string_view key, const Value& v) { return push(key, v, false); }
  ReadResult lpop(std::string_view key, std::string* out) { return pop(key, out, true); }
  ReadResult rpop(std::string_view key, std::string* out) { return pop(key, out, false); }
  CountResult llen(std::string_view key);
  CountResult ttl(std::string_view key);
  Status expire(std::string_view key, int64_t ttl_ms);
  void flushAll();
  // Frees expired entries, at most `max` (0 = all), looking at no more than
  // `max_scan` entries from the least recently used end (0 = all); returns
  // how many.
  uint64_t flushExpired(uint64_t max = 0, uint64_t max_scan = 0);
  // Live keys, most recently used first, at most `max` (0 = all).
  std::vector<std::string> getKeys(size_t max = 0);
  uint64_t capacity() const { return zone_.size(); }
  uint64_t freeSpace();

  // Times a lock was inherited from a dead process, and how many of those reset the dict.
  uint64_t ownerDeaths();
  uint64_t resets();
  // Heap and index invariants, for tests. Takes the lock.
  bool check(std::string* why);

 private:
  friend class DictLock;
  struct Entry;
  enum class Mode { kSet, kAdd, kReplace };

  WriteResult store(std::string_view key, const Value& v, int64_t ttl_ms, uint32_t flags, Mode mode, bool safe);
  CountResult push(std::string_view key, const Value& v, bool left);
  ReadResult read(std::string_view key, std::string* out, bool stale_ok);
  ReadResult pop(std::string_view key, std::string* out, bool left);

  Entry* entry(Offset off) const { return reinterpret_cast<Entry*>(base_ + off); }
  Offset& bucket(uint32_t hash) const;
  // A valid key with its hash and the time, taken before the lock.
  struct Probe {
    std::string_view key;
    uint32_t hash;
    int64_t now;
  };
  Status probe(std::string_view key, Probe* p) const;
  Offset find(const Probe& p) const;
  // find(), but 0 for an expired entry too.
  Offset findLive(const Probe& p) const;
  Offset allocEntry(size_t bytes, bool evict, int64_t now, bool* forcible);
  // Allocates, hashes and LRU-links an entry for p.key with room for `value_bytes`;
  // the caller fills in type, value, flags and expiry. 0 when out of memory.
  Offset insert(const Probe& p, size_t value_bytes, bool evict, bool* forcible);
  void unlinkEntry(Offset off);
  void freeEntry(Offset off);
  void lruPushHead(Offset off);
  void lruUnlink(Offset off);
  void touch(Offset off);
  void expireSome(int64_t now);
  void reset();
  bool expired(const Entry* e, int64_t now) const;
  void readValue(const Entry* e, ReadResult* r, std::string* out) const;

  Zone& zone_;
  std::byte* base_;
  DictHeader* h_;
  NowMs now_;
};

}  // namespace tidegate::shm
