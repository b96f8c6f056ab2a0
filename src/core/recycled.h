// Class-specific operator new/delete for objects that come and go once per
// request or more (a Lua task, its coroutine records): freed blocks of the
// class's own size are kept, up to kKeep of them per thread, and handed out
// again, which costs a fraction of a malloc/free pair. Any other size (a
// derived class) goes to the global operators, both ways. Under
// AddressSanitizer a kept block is poisoned, so a use after free is still
// reported.
#pragma once

#include <cstddef>
#include <new>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define TIDEGATE_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define TIDEGATE_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define TIDEGATE_POISON(p, n) ((void)(p), (void)(n))
#define TIDEGATE_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

namespace tidegate::core {

// The calling thread's T, made on first use; null once it has been
// destroyed at the thread's exit, so a thread_local destructor that runs
// later (and frees an object, say) can tell instead of touching a dead
// object. `Tag` tells apart two uses that keep the same type.
template <class T, class Tag = T>
T* threadLocalUntilExit() {
  // A plain bool has no destructor: it is still there to read afterwards.
  thread_local bool gone = false;
  if (gone) return nullptr;
  struct Holder {
    T value;
    ~Holder() { gone = true; }
  };
  thread_local Holder holder;
  return &holder.value;
}

template <class T, size_t kKeep = 256>
class Recycled {
 public:
  static void* operator new(size_t size) {
    FreeBlocks* free_blocks = threadLocalUntilExit<FreeBlocks>();
    if (size != sizeof(T) || !free_blocks) return ::operator new(size);
    std::vector<void*>& blocks = free_blocks->blocks;
    if (!blocks.empty()) {
      void* p = blocks.back();
      blocks.pop_back();
      TIDEGATE_UNPOISON(p, sizeof(T));
      return p;
    }
    return ::operator new(size);
  }
  static void operator delete(void* p, size_t size) noexcept {
    // After the thread's list is destroyed (objects freed by later
    // thread_local destructors): the global operator.
    FreeBlocks* free_blocks = threadLocalUntilExit<FreeBlocks>();
    if (size != sizeof(T) || !free_blocks) {
      ::operator delete(p);
      return;
    }
    std::vector<void*>& blocks = free_blocks->blocks;
    if (blocks.size() < kKeep) {
      // The vector's growth could throw; a block it cannot take is freed.
      try {
        blocks.push_back(p);
        TIDEGATE_POISON(p, sizeof(T));
        return;
      } catch (...) {
      }
    }
    ::operator delete(p);
  }

 private:
  struct FreeBlocks {
    std::vector<void*> blocks;
    ~FreeBlocks() {
      for (void* p : blocks) {
        TIDEGATE_UNPOISON(p, sizeof(T));
        ::operator delete(p);
      }
    }
  };
};

}  // namespace tidegate::core
