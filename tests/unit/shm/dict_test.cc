#include "shm/dict.h"

#include "dict_fixture.h"

namespace tidegate::shm {
namespace {

constexpr Status kOk = Status::kOk;

using DictTest = DictFixture;

TEST_F(DictTest, SetAndGetEveryType) {
  std::string out;
  EXPECT_EQ(dict_->set("s", Value::ofString("hello"), 0, 7).status, kOk);
  EXPECT_EQ(dict_->set("n", Value::ofNumber(3.5)).status, kOk);
  EXPECT_EQ(dict_->set("b", Value::ofBoolean(true)).status, kOk);
  EXPECT_EQ(dict_->set("f", Value::ofBoolean(false)).status, kOk);
  EXPECT_EQ(dict_->set("e", Value::ofString("")).status, kOk);

  ReadResult r = dict_->get("s", &out);
  EXPECT_EQ(r.status, kOk);
  EXPECT_EQ(r.type, Type::kString);
  EXPECT_EQ(out, "hello");
  EXPECT_EQ(r.flags, 7u);
  EXPECT_FALSE(r.stale);
  r = dict_->get("n", &out);
  EXPECT_EQ(r.type, Type::kNumber);
  EXPECT_EQ(r.number, 3.5);
  EXPECT_EQ(r.flags, 0u);
  EXPECT_TRUE(dict_->get("b", &out).boolean);
  r = dict_->get("f", &out);
  EXPECT_EQ(r.type, Type::kBoolean);
  EXPECT_FALSE(r.boolean);
  r = dict_->get("e", &out);
  EXPECT_EQ(r.type, Type::kString);
  EXPECT_EQ(out, "");
  EXPECT_EQ(dict_->get("missing", &out).status, Status::kNotFound);
  // No buffer: status, type and flags only.
  r = dict_->get("s", nullptr);
  EXPECT_EQ(r.type, Type::kString);
  EXPECT_EQ(r.flags, 7u);
}

TEST_F(DictTest, OverwriteSameAndOtherSizes) {
  dict_->set("k", Value::ofString("aaaa"));
  dict_->set("k", Value::ofString("bbbb"));
  EXPECT_EQ(getString("k"), "bbbb");
  dict_->set("k", Value::ofString(std::string(5000, 'c')));
  EXPECT_EQ(getString("k"), std::string(5000, 'c'));
  dict_->set("k", Value::ofNumber(1));
  std::string out;
  EXPECT_EQ(dict_->get("k", &out).number, 1);
  EXPECT_EQ(dict_->getKeys().size(), 1u);
}

TEST_F(DictTest, KeyErrors) {
  std::string out;
  EXPECT_EQ(dict_->get("", &out).status, Status::kEmptyKey);
  EXPECT_EQ(dict_->set("", Value::ofNumber(1)).status, Status::kEmptyKey);
  std::string long_key(Dict::kMaxKey + 1, 'k');
  EXPECT_EQ(dict_->set(long_key, Value::ofNumber(1)).status, Status::kKeyTooLong);
  EXPECT_EQ(dict_->incr(long_key, 1).status, Status::kKeyTooLong);
  std::string max_key(Dict::kMaxKey, 'k');
  EXPECT_EQ(dict_->set(max_key, Value::ofString("v")).status, kOk);
  EXPECT_EQ(getString(max_key), "v");
}

TEST_F(DictTest, AddReplaceDelete) {
  EXPECT_EQ(dict_->replace("k", Value::ofString("x")).status, Status::kNotFound);
  EXPECT_EQ(dict_->add("k", Value::ofString("a")).status, kOk);
  EXPECT_EQ(dict_->add("k", Value::ofString("b")).status, Status::kExists);
  EXPECT_EQ(dict_->safeAdd("k", Value::ofString("b")).status, Status::kExists);
  EXPECT_EQ(getString("k"), "a");
  EXPECT_EQ(dict_->replace("k", Value::ofString("c")).status, kOk);
  EXPECT_EQ(getString("k"), "c");
  EXPECT_EQ(dict_->remove("k"), kOk);
  EXPECT_EQ(dict_->get("k", nullptr).status, Status::kNotFound);
  EXPECT_EQ(dict_->remove("k"), kOk);
  // set with nil deletes, as in OpenResty.
  dict_->set("k", Value::ofNumber(1));
  EXPECT_EQ(dict_->set("k", Value{}).status, kOk);
  EXPECT_EQ(dict_->get("k", nullptr).status, Status::kNotFound);
}

TEST_F(DictTest, AddSucceedsAndReplaceFailsOnExpiredKeys) {
  dict_->set("k", Value::ofString("old"), 100);
  g_fake_now += 100;
  EXPECT_EQ(dict_->replace("k", Value::ofString("x")).status, Status::kNotFound);
  EXPECT_EQ(dict_->add("k", Value::ofString("new")).status, kOk);
  EXPECT_EQ(getString("k"), "new");
}

TEST_F(DictTest, ExpiryFollowsTheInjectedClock) {
  std::string out;
  dict_->set("k", Value::ofString("v"), 1500, 3);
  g_fake_now += 1499;
  EXPECT_EQ(dict_->get("k", &out).status, kOk);
  CountResult t = dict_->ttl("k");
  EXPECT_EQ(t.status, kOk);
  EXPECT_EQ(t.count, 1);
  g_fake_now += 1;
  EXPECT_EQ(dict_->get("k", &out).status, Status::kNotFound);
  EXPECT_EQ(dict_->ttl("k").status, Status::kNotFound);
  ReadResult r = dict_->getStale("k", &out);
  EXPECT_EQ(r.status, kOk);
  EXPECT_TRUE(r.stale);
  EXPECT_EQ(out, "v");
  EXPECT_EQ(r.flags, 3u);
  // get_stale of a live value is not stale.
  dict_->set("live", Value::ofNumber(1));
  r = dict_->getStale("live", &out);
  EXPECT_EQ(r.status, kOk);
  EXPECT_FALSE(r.stale);
  EXPECT_EQ(dict_->getStale("missing", &out).status, Status::kNotFound);
}

TEST_F(DictTest, TtlAndExpire) {
  EXPECT_EQ(dict_->ttl("k").status, Status::kNotFound);
  EXPECT_EQ(dict_->expire("k", 10), Status::kNotFound);
  dict_->set("k", Value::ofNumber(1));
  EXPECT_EQ(dict_->ttl("k").count, 0);  // never expires
  EXPECT_EQ(dict_->expire("k", 2000), kOk);
  EXPECT_EQ(dict_->ttl("k").count, 2000);
  g_fake_now += 500;
  EXPECT_EQ(dict_->ttl("k").count, 1500);
  EXPECT_EQ(dict_->expire("k", 0), kOk);
  g_fake_now += 1'000'000;
  EXPECT_EQ(dict_->ttl("k").count, 0);
  EXPECT_EQ(dict_->expire("k", 10), kOk);
  g_fake_now += 10;
  EXPECT_EQ(dict_->expire("k", 10), Status::kNotFound);
}

TEST_F(DictTest, IncrAndItsErrors) {
  EXPECT_EQ(dict_->incr("n", 1).status, Status::kNotFound);
  double init = 10;
  IncrResult r = dict_->incr("n", 2, &init);
  EXPECT_EQ(r.status, kOk);
  EXPECT_EQ(r.value, 12);
  EXPECT_FALSE(r.forcible);
  r = dict_->incr("n", -0.5, &init);  // init ignored when present
  EXPECT_EQ(r.value, 11.5);
  dict_->set("s", Value::ofString("1"));
  EXPECT_EQ(dict_->incr("s", 1).status, Status::kNotANumber);
  EXPECT_EQ(dict_->incr("s", 1, &init).status, Status::kNotANumber);
  dict_->lpush("l", Value::ofNumber(1));
  EXPECT_EQ(dict_->incr("l", 1).status, Status::kNotANumber);
}

TEST_F(DictTest, IncrKeepsTtlAndFlagsAndInitTtlApplies) {
  dict_->set("n", Value::ofNumber(1), 1000, 9);
  dict_->incr("n", 1);
  EXPECT_EQ(dict_->ttl("n").count, 1000);
  std::string out;
  EXPECT_EQ(dict_->get("n", &out).flags, 9u);

  double init = 0;
  dict_->incr("m", 1, &init, 300);
  EXPECT_EQ(dict_->ttl("m").count, 300);
  g_fake_now += 300;
  EXPECT_EQ(dict_->incr("m", 1).status, Status::kNotFound);
  IncrResult r = dict_->incr("m", 5, &init);
  EXPECT_EQ(r.value, 5);
  EXPECT_EQ(dict_->ttl("m").count, 0);
}

TEST_F(DictTest, Lists) {
  std::string out;
  EXPECT_EQ(dict_->llen("l").count, 0);
  EXPECT_EQ(dict_->lpop("l", &out).status, Status::kNotFound);
  EXPECT_EQ(dict_->lpush("l", Value::ofString("b")).count, 1);
  EXPECT_EQ(dict_->lpush("l", Value::ofString("a")).count, 2);
  EXPECT_EQ(dict_->rpush("l", Value::ofNumber(3)).count, 3);
  EXPECT_EQ(dict_->llen("l").count, 3);
  EXPECT_EQ(dict_->get("l", &out).status, Status::kIsAList);

  ReadResult r = dict_->lpop("l", &out);
  EXPECT_EQ(r.type, Type::kString);
  EXPECT_EQ(out, "a");
  r = dict_->rpop("l", &out);
  EXPECT_EQ(r.type, Type::kNumber);
  EXPECT_EQ(r.number, 3);
  r = dict_->rpop("l", &out);
  EXPECT_EQ(out, "b");
  // The emptied list is gone, and its memory with it.
  EXPECT_EQ(dict_->rpop("l", &out).status, Status::kNotFound);
  EXPECT_TRUE(dict_->getKeys().empty());

  dict_->set("s", Value::ofString("x"));
  EXPECT_EQ(dict_->lpush("s", Value::ofNumber(1)).status, Status::kNotAList);
  EXPECT_EQ(dict_->rpush("s", Value::ofNumber(1)).status, Status::kNotAList);
  EXPECT_EQ(dict_->lpop("s", &out).status, Status::kNotAList);
  EXPECT_EQ(dict_->rpop("s", &out).status, Status::kNotAList);
  EXPECT_EQ(dict_->llen("s").status, Status::kNotAList);
}

TEST_F(DictTest, ListsExpireAndAreReplacedBySet) {
  uint64_t empty = dict_->freeSpace();
  for (int i = 0; i < 100; i++) dict_->rpush("l", Value::ofString(std::string(100, 'x')));
  EXPECT_EQ(dict_->expire("l", 50), kOk);
  g_fake_now += 50;
  EXPECT_EQ(dict_->llen("l").count, 0);
  std::string out;
  EXPECT_EQ(dict_->lpop("l", &out).status, Status::kNotFound);
  EXPECT_EQ(dict_->freeSpace(), empty);

  for (int i = 0; i < 10; i++) dict_->rpush("l", Value::ofNumber(i));
  dict_->set("l", Value::ofString("plain"));
  EXPECT_EQ(getString("l"), "plain");
  dict_->remove("l");
  EXPECT_EQ(dict_->freeSpace(), empty);
}

TEST_F(DictTest, FlushAllMarksExpiredAndFlushExpiredFrees) {
  uint64_t empty = dict_->freeSpace();
  for (int i = 0; i < 10; i++) dict_->set("k" + std::to_string(i), Value::ofNumber(i));
  dict_->flushAll();
  std::string out;
  EXPECT_EQ(dict_->get("k1", &out).status, Status::kNotFound);
  EXPECT_TRUE(dict_->getStale("k1", &out).stale);
  EXPECT_TRUE(dict_->getKeys().empty());
  EXPECT_LT(dict_->freeSpace(), empty);
  EXPECT_EQ(dict_->flushExpired(3), 3u);
  EXPECT_EQ(dict_->flushExpired(), 7u);
  EXPECT_EQ(dict_->flushExpired(), 0u);
  EXPECT_EQ(dict_->freeSpace(), empty);
}

TEST_F(DictTest, FlushExpiredCanBoundItsScanFromTheLruTail) {
  for (int i = 0; i < 6; i++) dict_->set("k" + std::to_string(i), Value::ofNumber(i), 10);
  g_fake_now += 11;  // all six expired; k0 is the least recently used
  EXPECT_EQ(dict_->flushExpired(0, 2), 2u);
  std::string out;
  EXPECT_EQ(dict_->getStale("k0", &out).status, Status::kNotFound);  // freed
  EXPECT_EQ(dict_->getStale("k1", &out).status, Status::kNotFound);
  EXPECT_TRUE(dict_->getStale("k2", &out).stale);  // beyond the scan
  EXPECT_EQ(dict_->flushExpired(0, 100), 4u);
}

TEST_F(DictTest, FlushExpiredLeavesLiveEntries) {
  dict_->set("a", Value::ofNumber(1), 100);
  dict_->set("b", Value::ofNumber(2));
  dict_->set("c", Value::ofNumber(3), 100);
  g_fake_now += 100;
  EXPECT_EQ(dict_->flushExpired(), 2u);
  EXPECT_EQ(dict_->getKeys(), std::vector<std::string>{"b"});
}

TEST_F(DictTest, GetKeysSkipsExpiredAndHonoursMax) {
  dict_->set("a", Value::ofNumber(1));
  dict_->set("b", Value::ofNumber(1), 10);
  dict_->set("c", Value::ofNumber(1));
  g_fake_now += 10;
  EXPECT_EQ(dict_->getKeys(), (std::vector<std::string>{"c", "a"}));
  EXPECT_EQ(dict_->getKeys(1).size(), 1u);
}

TEST_F(DictTest, CapacityAndFreeSpace) {
  EXPECT_EQ(dict_->capacity(), zone_->size());
  uint64_t before = dict_->freeSpace();
  EXPECT_GT(before, zone_->size() * 9 / 10);
  dict_->set("k", Value::ofString(std::string(10000, 'v')));
  EXPECT_LE(dict_->freeSpace(), before - 10000);
  dict_->remove("k");
  EXPECT_EQ(dict_->freeSpace(), before);
}

class DictSmallTest : public DictFixture {
 protected:
  DictSmallTest() : DictFixture(64 * 1024) {}
};

// Fills the dict with 1 KB values k0, k1, ... until a set would evict; returns how many fit.
int fill(Dict& d) {
  std::string v(1000, 'v');
  for (int i = 0;; i++) {
    WriteResult r = d.safeSet("k" + std::to_string(i), Value::ofString(v));
    if (r.status != Status::kOk) return i;
  }
}

TEST_F(DictSmallTest, EvictsLeastRecentlyUsedAndReportsForcible) {
  int n = fill(*dict_);
  ASSERT_GT(n, 20);
  std::string out;
  ASSERT_EQ(dict_->get("k0", &out).status, kOk);  // k0 is now the most recent; k1 the LRU tail
  WriteResult r = dict_->set("new", Value::ofString(std::string(1000, 'n')));
  EXPECT_EQ(r.status, kOk);
  EXPECT_TRUE(r.forcible);
  EXPECT_EQ(dict_->get("k0", &out).status, kOk);
  EXPECT_EQ(dict_->get("k1", &out).status, Status::kNotFound);
  EXPECT_EQ(dict_->get("k2", &out).status, kOk);
  EXPECT_EQ(getString("new"), std::string(1000, 'n'));
}

TEST_F(DictSmallTest, AddAndIncrEvictToo) {
  fill(*dict_);
  WriteResult w = dict_->add("added", Value::ofString(std::string(1000, 'a')));
  EXPECT_EQ(w.status, kOk);
  EXPECT_TRUE(w.forcible);
  fill(*dict_);
  double init = 0;
  // Fill again so an 8-byte number needs room too.
  for (int i = 0; dict_->safeSet("x" + std::to_string(i), Value::ofNumber(i)).status == kOk; i++) {
  }
  IncrResult r = dict_->incr("counter", 1, &init);
  EXPECT_EQ(r.status, kOk);
  EXPECT_TRUE(r.forcible);
}

TEST_F(DictSmallTest, SafeSetAndSafeAddNeverEvict) {
  int n = fill(*dict_);
  std::string big(1000, 'b');
  WriteResult r = dict_->safeSet("one-more", Value::ofString(big));
  EXPECT_EQ(r.status, Status::kNoMemory);
  EXPECT_FALSE(r.forcible);
  EXPECT_EQ(dict_->safeAdd("one-more", Value::ofString(big)).status, Status::kNoMemory);
  EXPECT_EQ(dict_->getKeys().size(), static_cast<size_t>(n));
}

TEST_F(DictSmallTest, EvictingOnlyExpiredEntriesIsNotForcible) {
  int n = fill(*dict_);
  for (int i = 0; i < n; i++) dict_->expire("k" + std::to_string(i), 10);
  g_fake_now += 10;
  WriteResult r = dict_->set("big", Value::ofString(std::string(10000, 'b')));
  EXPECT_EQ(r.status, kOk);
  EXPECT_FALSE(r.forcible);
}

TEST_F(DictSmallTest, ValueLargerThanTheZoneFailsWithoutEvicting) {
  int n = fill(*dict_);
  WriteResult r = dict_->set("huge", Value::ofString(std::string(128 * 1024, 'h')));
  EXPECT_EQ(r.status, Status::kNoMemory);
  EXPECT_EQ(dict_->getKeys().size(), static_cast<size_t>(n));
}

TEST_F(DictSmallTest, PushesNeverEvict) {
  fill(*dict_);
  EXPECT_EQ(dict_->rpush("l", Value::ofString(std::string(1000, 'l'))).status, Status::kNoMemory);
  EXPECT_EQ(dict_->llen("l").count, 0);
}

}  // namespace
}  // namespace tidegate::shm
