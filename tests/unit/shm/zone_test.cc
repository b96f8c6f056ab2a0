#include "shm/zone.h"

#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

namespace tidegate::shm {
namespace {

TEST(ZoneTest, RejectsTooSmallAndRoundsToPages) {
  std::string err;
  EXPECT_EQ(Zone::create(1024, &err), nullptr);
  EXPECT_NE(err.find("minimum"), std::string::npos);
  auto zone = Zone::create(Zone::kMinSize + 1, &err);
  ASSERT_NE(zone, nullptr) << err;
  EXPECT_EQ(zone->size() % static_cast<size_t>(sysconf(_SC_PAGESIZE)), 0u);
  EXPECT_GT(zone->size(), Zone::kMinSize);
}

TEST(ZoneTest, ChildWritesAreSeenByTheParent) {
  std::string err;
  auto zone = Zone::create(Zone::kMinSize, &err);
  ASSERT_NE(zone, nullptr) << err;
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    zone->base()[100] = std::byte{42};
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_EQ(zone->base()[100], std::byte{42});
}

class ZoneHeapTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string err;
    zone_ = Zone::create(256 * 1024, &err);
    ASSERT_NE(zone_, nullptr) << err;
    header_ = reinterpret_cast<HeapHeader*>(zone_->base());
    heap().init(4096, zone_->size());
    initial_free_ = heap().freeBytes();
  }
  void TearDown() override { expectSound(); }
  Heap heap() { return Heap(zone_->base(), header_); }
  void expectSound() {
    std::string why;
    EXPECT_TRUE(heap().check(&why)) << why;
  }

  std::unique_ptr<Zone> zone_;
  HeapHeader* header_ = nullptr;
  uint64_t initial_free_ = 0;
};

TEST_F(ZoneHeapTest, FillFreeAndFillAgain) {
  EXPECT_GT(initial_free_, 256u * 1024 - 4096 - 64);
  std::vector<Offset> blocks;
  for (Offset off; (off = heap().alloc(100)) != 0;) {
    EXPECT_EQ(off % 8, 0u);
    EXPECT_GE(off, 4096u);
    EXPECT_LE(off + 100, zone_->size());
    blocks.push_back(off);
  }
  EXPECT_GT(blocks.size(), 2000u);
  EXPECT_LT(heap().freeBytes(), 200u);
  expectSound();
  for (Offset off : blocks) heap().free(off);
  EXPECT_EQ(heap().freeBytes(), initial_free_);
  expectSound();
  // Everything coalesced back into one block.
  Offset big = heap().alloc(initial_free_ - 16);
  EXPECT_NE(big, 0u);
  EXPECT_EQ(heap().freeBytes(), 0u);
  heap().free(big);
}

TEST_F(ZoneHeapTest, ReusesAFreedBlock) {
  Offset a = heap().alloc(200);
  Offset b = heap().alloc(200);
  ASSERT_NE(a, 0u);
  ASSERT_NE(b, 0u);
  heap().free(a);
  EXPECT_EQ(heap().alloc(200), a);
  EXPECT_EQ(heap().alloc(0) % 8, 0u);
}

TEST_F(ZoneHeapTest, FragmentationIsBoundedByLiveNeighbours) {
  std::vector<Offset> blocks;
  for (Offset off; (off = heap().alloc(1000)) != 0;) blocks.push_back(off);
  for (size_t i = 0; i < blocks.size(); i += 2) heap().free(blocks[i]);
  // Half the heap is free, but in holes of ~1 KB: a 4 KB request cannot fit.
  EXPECT_GT(heap().freeBytes(), initial_free_ / 3);
  EXPECT_EQ(heap().alloc(4000), 0u);
  EXPECT_NE(heap().alloc(900), 0u);
  expectSound();
  for (size_t i = 1; i < blocks.size(); i += 2) heap().free(blocks[i]);
  EXPECT_NE(heap().alloc(100 * 1024), 0u);
}

TEST_F(ZoneHeapTest, RandomAllocFreeKeepsInvariants) {
  std::mt19937 rng(7);
  std::vector<Offset> live;
  for (int i = 0; i < 5000; i++) {
    if (live.empty() || rng() % 3 != 0) {
      Offset off = heap().alloc(rng() % 3000);
      if (off != 0) live.push_back(off);
    } else {
      size_t k = rng() % live.size();
      heap().free(live[k]);
      live[k] = live.back();
      live.pop_back();
    }
    if (i % 500 == 0) expectSound();
  }
  std::shuffle(live.begin(), live.end(), rng);
  for (Offset off : live) heap().free(off);
  EXPECT_EQ(heap().freeBytes(), initial_free_);
}

TEST_F(ZoneHeapTest, RefusesWhatCannotFit) {
  EXPECT_EQ(heap().alloc(zone_->size()), 0u);
  EXPECT_EQ(heap().alloc(SIZE_MAX), 0u);
  EXPECT_EQ(heap().alloc(SIZE_MAX - 8), 0u);
  EXPECT_EQ(heap().freeBytes(), initial_free_);
}

}  // namespace
}  // namespace tidegate::shm
