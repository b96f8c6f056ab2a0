#include "tls/session_cache.h"

#include <gtest/gtest.h>

namespace tidegate::tls {
namespace {

// Half the timeout, within [1 s, 1 h], and never so short that more than
// about 250 keys are alive at once.
TEST(SessionCacheTest, TicketRotationPeriodFollowsTheTimeout) {
  EXPECT_EQ(ticketRotationMs(5 * 60 * 1000), 150 * 1000);  // the default timeout
  EXPECT_EQ(ticketRotationMs(4000), 2000);
  EXPECT_EQ(ticketRotationMs(500), 1000);
  EXPECT_EQ(ticketRotationMs(24 * 3600 * 1000), 3600 * 1000);
  int64_t month = int64_t{30} * 24 * 3600 * 1000;
  EXPECT_EQ(ticketRotationMs(month), month / 250);
}

}  // namespace
}  // namespace tidegate::tls
