// UpstreamRecord's header vectors: what a finished request releases is the
// next head's storage (the last released first), the record then holds
// none, and the spares stay bounded.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "http/request.h"

namespace tidegate::http {
namespace {

using Fields = std::vector<UpstreamRecord::Field>;

// Empties the worker's spares (they are per thread and outlive a test).
void drainSpares() {
  Fields out;
  while (UpstreamRecord::takeSpareHeaders(&out)) out.clear();
}

// A record holding `fields` as the proxy leaves them (exchangeHeaders).
void fill(UpstreamRecord* record, Fields fields, size_t bytes) {
  record->exchangeHeaders([&](Fields& record_fields, size_t& record_bytes) {
    record_fields.swap(fields);
    record_bytes = bytes;
  });
}

TEST(UpstreamRecordTest, ReleasedHeadersAreTheNextHeadsStorageLastFirst) {
  drainSpares();
  UpstreamRecord a, b;
  fill(&a, {{"Server", "one"}}, 64);
  fill(&b, {{"Server", "two"}, {"X-B", "2"}}, 64);
  ASSERT_EQ(a.headers().size(), 1u);
  const std::string* b_name = &b.headers()[0].first;
  a.releaseHeaders();
  b.releaseHeaders();
  EXPECT_TRUE(a.headers().empty());
  EXPECT_TRUE(b.headers().empty());
  Fields out;
  ASSERT_TRUE(UpstreamRecord::takeSpareHeaders(&out));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(&out[0].first, b_name);  // the same strings, not copies
  EXPECT_EQ(out[0].second, "two");
  Fields next;
  ASSERT_TRUE(UpstreamRecord::takeSpareHeaders(&next));
  EXPECT_EQ(next[0].second, "one");
  Fields none;
  EXPECT_FALSE(UpstreamRecord::takeSpareHeaders(&none));
  EXPECT_TRUE(none.empty());
}

TEST(UpstreamRecordTest, ARecordWithoutHeadersReleasesNothing) {
  drainSpares();
  UpstreamRecord r;
  r.releaseHeaders();
  Fields out;
  EXPECT_FALSE(UpstreamRecord::takeSpareHeaders(&out));
}

TEST(UpstreamRecordTest, LargeHeadsAreNotKept) {
  drainSpares();
  UpstreamRecord r;
  fill(&r, {{"X-Big", std::string(32 * 1024, 'v')}}, 32 * 1024 + 32);
  r.releaseHeaders();
  // Kept by the record (freed with it), not by the spares.
  EXPECT_EQ(r.headers().size(), 1u);
  Fields out;
  EXPECT_FALSE(UpstreamRecord::takeSpareHeaders(&out));
}

TEST(UpstreamRecordTest, TheSparesAreBounded) {
  drainSpares();
  size_t kept = 0;
  for (int i = 0; i < 1000; i++) {
    UpstreamRecord r;
    fill(&r, {{"N", std::to_string(i)}}, 32);
    r.releaseHeaders();
  }
  Fields out;
  while (UpstreamRecord::takeSpareHeaders(&out)) {
    out.clear();
    kept++;
  }
  EXPECT_GT(kept, 0u);
  EXPECT_LT(kept, 1000u);
}

}  // namespace
}  // namespace tidegate::http
