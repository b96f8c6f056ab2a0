#include "core/log.h"

#include <gtest/gtest.h>

namespace tidegate::core {
namespace {

TEST(LogRateLimitTest, AllowsABurstThenDrops) {
  LogRateLimit limit;
  unsigned long suppressed = 0;
  unsigned allowed = 0;
  for (int i = 0; i < 100; i++) {
    if (limit.allow(&suppressed)) allowed++;
  }
  // All 100 calls land in one one-second window (a coarse clock never
  // advances a second within a tight loop of 100 calls).
  EXPECT_EQ(allowed, LogRateLimit::kBurst);
  EXPECT_EQ(suppressed, 0u);
}

TEST(LogLevelTest, ParsesNginxLevelNames) {
  LogLevel l;
  ASSERT_TRUE(parseLogLevel("warn", &l));
  EXPECT_EQ(l, LogLevel::kWarn);
  ASSERT_TRUE(parseLogLevel("emerg", &l));
  EXPECT_EQ(l, LogLevel::kEmerg);
  EXPECT_FALSE(parseLogLevel("warning", &l));
  EXPECT_STREQ(logLevelName(LogLevel::kNotice), "notice");
}

}  // namespace
}  // namespace tidegate::core
