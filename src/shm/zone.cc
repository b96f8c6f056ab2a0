#include "shm/zone.h"

#include <sys/mman.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>

namespace tidegate::shm {

namespace {

// A block is [header tag][payload...][footer tag]; a tag is size | used bit.
// Free blocks keep their list links in the first 16 payload bytes.
constexpr uint64_t kUsed = 1;
constexpr uint64_t kTagBytes = 8;
constexpr uint64_t kMinBlock = 32;  // tags + two links

uint64_t sizeOf(uint64_t tag) { return tag & ~uint64_t{7}; }

int classOf(uint64_t size) {
  int c = std::bit_width(size) - 1 - 5;  // 32-63 bytes -> class 0
  if (c < 0) return 0;
  return c < HeapHeader::kClasses ? c : HeapHeader::kClasses - 1;
}

}  // namespace

std::unique_ptr<Zone> Zone::create(size_t size, std::string* err) {
  if (size < kMinSize) {
    *err = "zone size " + std::to_string(size) + " is below the minimum of " + std::to_string(kMinSize);
    return nullptr;
  }
  size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  size = (size + page - 1) / page * page;
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    *err = std::string("mmap(") + std::to_string(size) + ") failed (" + std::to_string(errno) + ": " +
           std::strerror(errno) + ")";
    return nullptr;
  }
  return std::unique_ptr<Zone>(new Zone(static_cast<std::byte*>(p), size));
}

Zone::~Zone() { munmap(base_, size_); }

void Heap::init(Offset begin, Offset end) {
  begin = (begin + 7) & ~Offset{7};
  end &= ~Offset{7};
  // Used sentinels on both sides, so coalescing never looks outside the heap.
  tag(begin) = kUsed;
  tag(end - kTagBytes) = kUsed;
  h_->begin = begin + kTagBytes;
  h_->end = end - kTagBytes;
  h_->free_bytes = 0;
  for (Offset& head : h_->free_lists) head = 0;
  uint64_t size = h_->end - h_->begin;
  if (size < kMinBlock) return;
  setTags(h_->begin, size, false);
  pushFree(h_->begin, size);
  h_->free_bytes = size;
}

Offset Heap::alloc(size_t n) {
  if (n > h_->end - h_->begin) return 0;
  uint64_t need = ((uint64_t{n} + 7) & ~uint64_t{7}) + 2 * kTagBytes;
  if (need < kMinBlock) need = kMinBlock;
  if (need > h_->free_bytes) return 0;
  int c = classOf(need);
  Offset block = 0;
  for (Offset b = h_->free_lists[c]; b != 0; b = nextFree(b)) {
    if (sizeOf(tag(b)) >= need) {
      block = b;
      break;
    }
  }
  for (int k = c + 1; block == 0 && k < HeapHeader::kClasses; k++) block = h_->free_lists[k];
  if (block == 0) return 0;

  uint64_t size = sizeOf(tag(block));
  unlinkFree(block, size);
  if (size - need >= kMinBlock) {
    setTags(block + need, size - need, false);
    pushFree(block + need, size - need);
    size = need;
  }
  setTags(block, size, true);
  h_->free_bytes -= size;
  return block + kTagBytes;
}

void Heap::free(Offset payload) {
  Offset block = payload - kTagBytes;
  uint64_t size = sizeOf(tag(block));
  h_->free_bytes += size;
  Offset next = block + size;
  if ((tag(next) & kUsed) == 0) {
    uint64_t next_size = sizeOf(tag(next));
    unlinkFree(next, next_size);
    size += next_size;
  }
  uint64_t prev_footer = tag(block - kTagBytes);
  if ((prev_footer & kUsed) == 0) {
    uint64_t prev_size = sizeOf(prev_footer);
    block -= prev_size;
    unlinkFree(block, prev_size);
    size += prev_size;
  }
  setTags(block, size, false);
  pushFree(block, size);
}

void Heap::setTags(Offset block, uint64_t size, bool used) {
  tag(block) = size | (used ? kUsed : 0);
  tag(block + size - kTagBytes) = size | (used ? kUsed : 0);
}

void Heap::pushFree(Offset block, uint64_t size) {
  Offset& head = h_->free_lists[classOf(size)];
  nextFree(block) = head;
  prevFree(block) = 0;
  if (head != 0) prevFree(head) = block;
  head = block;
}

void Heap::unlinkFree(Offset block, uint64_t size) {
  Offset next = nextFree(block);
  Offset prev = prevFree(block);
  if (prev != 0) {
    nextFree(prev) = next;
  } else {
    h_->free_lists[classOf(size)] = next;
  }
  if (next != 0) prevFree(next) = prev;
}

bool Heap::check(std::string* why) const {
  uint64_t free_bytes = 0;
  uint64_t free_blocks = 0;
  bool prev_free = false;
  for (Offset b = h_->begin; b < h_->end;) {
    uint64_t t = tag(b);
    uint64_t size = sizeOf(t);
    if (size < kMinBlock || b + size > h_->end || tag(b + size - kTagBytes) != t) {
      *why = "bad block at " + std::to_string(b);
      return false;
    }
    bool is_free = (t & kUsed) == 0;
    if (is_free && prev_free) {
      *why = "uncoalesced free blocks at " + std::to_string(b);
      return false;
    }
    if (is_free) {
      free_bytes += size;
      free_blocks++;
    }
    prev_free = is_free;
    b += size;
  }
  if (free_bytes != h_->free_bytes) {
    *why = "free_bytes " + std::to_string(h_->free_bytes) + " but blocks hold " + std::to_string(free_bytes);
    return false;
  }
  uint64_t listed = 0;
  for (int c = 0; c < HeapHeader::kClasses; c++) {
    Offset prev = 0;
    for (Offset b = h_->free_lists[c]; b != 0; prev = b, b = nextFree(b)) {
      if ((tag(b) & kUsed) != 0 || classOf(sizeOf(tag(b))) != c || prevFree(b) != prev ||
          ++listed > free_blocks) {
        *why = "bad free list " + std::to_string(c);
        return false;
      }
    }
  }
  if (listed != free_blocks) {
    *why = "free blocks missing from the free lists";
    return false;
  }
  return true;
}

}  // namespace tidegate::shm
