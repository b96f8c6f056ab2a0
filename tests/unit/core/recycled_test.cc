// core::Recycled: blocks of the class's size come back to the next object;
// other sizes and blocks past the cap go to the global operators.
#include "core/recycled.h"

#include <gtest/gtest.h>

#include <memory>
#include <thread>
#include <vector>

namespace tidegate::core {
namespace {

struct Small : Recycled<Small, 4> {
  virtual ~Small() = default;
  long a = 1;
};

// A derived class has another size: it never takes or leaves a Small block.
struct Bigger : Small {
  long more[8] = {};
};

TEST(RecycledTest, AFreedBlockServesTheNextObject) {
  auto* first = new Small;
  void* where = first;
  delete first;
  auto* second = new Small;
  EXPECT_EQ(static_cast<void*>(second), where);
  EXPECT_EQ(second->a, 1);  // constructed again
  delete second;
}

TEST(RecycledTest, AnotherSizeUsesTheGlobalOperators) {
  auto* small = new Small;
  void* small_block = small;
  delete small;  // kept
  std::unique_ptr<Small> bigger = std::make_unique<Bigger>();
  EXPECT_NE(static_cast<void*>(bigger.get()), small_block);
  bigger.reset();  // through the base's virtual destructor: the global delete
  auto* again = new Small;
  EXPECT_EQ(static_cast<void*>(again), small_block);  // the kept block is still there
  delete again;
}

TEST(RecycledTest, KeepsAtMostItsCap) {
  std::vector<Small*> made;
  for (int i = 0; i < 6; i++) made.push_back(new Small);
  std::vector<void*> blocks(made.begin(), made.end());
  for (Small* s : made) delete s;  // four are kept, two freed
  int reused = 0;
  std::vector<Small*> again;
  for (int i = 0; i < 6; i++) {
    again.push_back(new Small);
    for (void* b : blocks) reused += static_cast<void*>(again.back()) == b && i < 4;
  }
  EXPECT_EQ(reused, 4);
  for (Small* s : again) delete s;
}

// An object freed by a thread_local destructor that runs after the
// thread's free list is gone goes to the global delete (under ASan, a push
// into the destroyed list would be reported).
struct Counted : Recycled<Counted, 4> {
  ~Counted() { destroyed++; }
  static inline int destroyed = 0;
};

TEST(RecycledTest, AnObjectFreedAfterTheListIsGoneUsesTheGlobalDelete) {
  struct Holder {
    Counted* c = nullptr;
    ~Holder() { delete c; }
  };
  Counted::destroyed = 0;
  std::thread([] {
    thread_local Holder holder;  // made first, so destroyed last
    delete new Counted;          // the free list is made now
    holder.c = new Counted;
  }).join();
  EXPECT_EQ(Counted::destroyed, 2);  // the second by the holder, after the list
}

}  // namespace
}  // namespace tidegate::core
