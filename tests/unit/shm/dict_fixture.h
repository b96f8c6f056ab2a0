// A dict on a fresh zone with a clock the test drives.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <string>

#include "shm/dict.h"
#include "shm/zone.h"

namespace tidegate::shm {

inline int64_t g_fake_now = 1'000'000;
inline int64_t fakeNow() { return g_fake_now; }

class DictFixture : public ::testing::Test {
 protected:
  explicit DictFixture(size_t zone_size = 1024 * 1024) : zone_size_(zone_size) {}
  void SetUp() override {
    g_fake_now = 1'000'000;
    std::string err;
    zone_ = Zone::create(zone_size_, &err);
    ASSERT_NE(zone_, nullptr) << err;
    ASSERT_TRUE(Dict::init(*zone_, &err)) << err;
    dict_.emplace(*zone_, fakeNow);
  }
  void TearDown() override { expectSound(); }
  void expectSound() {
    std::string why;
    EXPECT_TRUE(dict_->check(&why)) << why;
  }
  // The string stored under `key`, or "<status N>" when get() fails.
  std::string getString(std::string_view key) {
    std::string out;
    ReadResult r = dict_->get(key, &out);
    if (r.status != Status::kOk) return "<status " + std::to_string(static_cast<int>(r.status)) + ">";
    return out;
  }

  size_t zone_size_;
  std::unique_ptr<Zone> zone_;
  std::optional<Dict> dict_;
};

}  // namespace tidegate::shm
