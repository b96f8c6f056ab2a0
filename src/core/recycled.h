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

template <class T, size_t kKeep = 256>
class Recycled {
 public:
  static void* operator new(size_t size) {
    if (size != sizeof(T) || gone()) return ::operator new(size);
    std::vector<void*>& blocks = freeBlocks().blocks;
    if (!blocks.empty()) {
      void* p = blocks.back();
      blocks.pop_back();
      TIDEGATE_UNPOISON(p, sizeof(T));
      return p;
    }
    return ::operator new(size);
  }
  static void operator delete(void* p, size_t size) noexcept {
    if (size != sizeof(T) || gone()) {
      ::operator delete(p);
      return;
    }
    std::vector<void*>& blocks = freeBlocks().blocks;
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
      gone() = true;
      for (void* p : blocks) {
        TIDEGATE_UNPOISON(p, sizeof(T));
        ::operator delete(p);
      }
    }
  };
  static FreeBlocks& freeBlocks() {
    thread_local FreeBlocks f;
    return f;
  }
  // Set once the thread's list is destroyed (at its exit): objects freed
  // later, by other destructors, go to the global operator. A plain bool
  // has no destructor, so it is still there to read.
  static bool& gone() {
    thread_local bool g = false;
    return g;
  }
};

}  // namespace tidegate::core
