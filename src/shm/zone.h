// A shared-memory zone and the allocator inside it.
//
// A Zone is one anonymous MAP_SHARED mapping made by the master before fork, so
// every worker inherits it. Nothing inside a zone is a pointer: structures link
// each other by Offset from the zone base, so a process that maps the zone at a
// different address (or a future file-backed zone) reads the same bytes.
//
// Heap: segregated-fit with boundary tags and immediate coalescing. Every block
// carries its size in a header and a footer, so a freed block merges with free
// neighbours in O(1); free blocks sit in one list per power-of-two size class.
// An allocation first-fits inside its own class, then takes the head of the
// next non-empty larger class, so it costs a few list steps, not a walk of the
// whole heap. Chosen over a slab/size-class allocator because dict values vary
// from a boolean to a large string: with size classes, memory freed by many
// small entries could never serve one big entry, whereas coalescing gives it
// back (fragmentation stays bounded by what is still live in between).
// The heap has no lock of its own: its owner (the dict) serialises it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace tidegate::shm {

// Bytes from the zone base. 0 is never a heap payload (the zone starts with a
// header), so it doubles as "none".
using Offset = uint64_t;

class Zone {
 public:
  // The smallest zone accepted (nginx's lua_shared_dict minimum is 8 pages).
  static constexpr size_t kMinSize = 32 * 1024;

  // Maps `size` bytes (rounded up to a page), zero-filled. nullptr and *err on failure.
  static std::unique_ptr<Zone> create(size_t size, std::string* err);
  ~Zone();
  Zone(const Zone&) = delete;
  Zone& operator=(const Zone&) = delete;

  std::byte* base() const { return base_; }
  size_t size() const { return size_; }

 private:
  Zone(std::byte* base, size_t size) : base_(base), size_(size) {}
  std::byte* base_;
  size_t size_;
};

// The heap's state, stored inside the zone it manages.
struct HeapHeader {
  static constexpr int kClasses = 48;
  Offset begin;         // first block
  Offset end;           // one past the last block (a permanently used end tag)
  uint64_t free_bytes;  // sum of free block sizes, tags included
  Offset free_lists[kClasses];
};

// A view of the heap in [begin, end) of a zone; cheap to construct per call.
class Heap {
 public:
  Heap(std::byte* base, HeapHeader* header) : base_(base), h_(header) {}

  // Formats [begin, end) as one free block; anything allocated before is gone.
  void init(Offset begin, Offset end);
  // Returns the offset of `n` usable bytes (8-byte aligned), or 0 when no free
  // block is large enough.
  Offset alloc(size_t n);
  // `payload` must come from alloc() and not be freed yet.
  void free(Offset payload);
  uint64_t freeBytes() const { return h_->free_bytes; }
  // Walks every block and free list; false and *why when a structure is broken.
  bool check(std::string* why) const;

 private:
  uint64_t& tag(Offset at) const { return *reinterpret_cast<uint64_t*>(base_ + at); }
  Offset& nextFree(Offset block) const { return *reinterpret_cast<Offset*>(base_ + block + 8); }
  Offset& prevFree(Offset block) const { return *reinterpret_cast<Offset*>(base_ + block + 16); }
  void setTags(Offset block, uint64_t size, bool used);
  void pushFree(Offset block, uint64_t size);
  void unlinkFree(Offset block, uint64_t size);

  std::byte* base_;
  HeapHeader* h_;
};

}  // namespace tidegate::shm
