// RequestBody: start() begins a new body whatever the last request left
// (start() skips the reset when nothing changed since the last one, so each
// way of changing a body is checked here), and the temp file a body spilled
// to goes with it.
#include "http/request_body.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <string>

#include "temp_dir_fixture.h"

namespace tidegate::http {
namespace {

class RequestBodyTest : public testing_support::TempDirTest {
 protected:
  RequestBodyTest() : TempDirTest("tidegate-body") {}
  void TearDown() override {
    body_.reset();
    TempDirTest::TearDown();
  }
  static bool exists(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0;
  }
  // A fresh body, as start() must leave it.
  void expectFresh(uint64_t limit) {
    EXPECT_TRUE(body_.keeping());
    EXPECT_EQ(body_.size(), 0u);
    EXPECT_TRUE(body_.data().empty());
    EXPECT_FALSE(body_.inFile());
    EXPECT_FALSE(body_.read());
    EXPECT_FALSE(body_.discarded());
    EXPECT_FALSE(body_.failed());
    EXPECT_TRUE(body_.error().empty());
    // The new limit holds: limit bytes stay in memory, one more spills.
    ASSERT_TRUE(body_.append(std::string(limit, 'n')));
    EXPECT_FALSE(body_.inFile());
    ASSERT_TRUE(body_.append("x"));
    EXPECT_TRUE(body_.inFile());
    EXPECT_TRUE(body_.takeSpilled());
    EXPECT_EQ(body_.size(), limit + 1);
  }

  RequestBody body_;
};

TEST_F(RequestBodyTest, KeepsInMemoryUpToTheLimitThenSpillsToAFile) {
  body_.start(8, &dir_);
  ASSERT_TRUE(body_.append("12345678"));
  EXPECT_FALSE(body_.inFile());
  EXPECT_EQ(body_.data(), "12345678");
  ASSERT_TRUE(body_.append("9"));
  ASSERT_TRUE(body_.inFile());
  EXPECT_TRUE(body_.takeSpilled());
  EXPECT_FALSE(body_.takeSpilled());
  ASSERT_TRUE(body_.flush());
  body_.seal();
  std::ifstream in(body_.path());
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(content, "123456789");
  EXPECT_EQ(body_.size(), 9u);
}

TEST_F(RequestBodyTest, StartAfterAppendDropsTheBodyAndItsFile) {
  body_.start(4, &dir_);
  ASSERT_TRUE(body_.append("abcdefgh"));
  ASSERT_TRUE(body_.inFile());
  std::string path = body_.path();
  ASSERT_TRUE(exists(path));
  body_.start(16, &dir_);
  EXPECT_FALSE(exists(path));
  expectFresh(16);
}

TEST_F(RequestBodyTest, StartAfterMemoryAppendDropsTheData) {
  body_.start(64, &dir_);
  ASSERT_TRUE(body_.append("kept"));
  body_.start(3, &dir_);
  expectFresh(3);
}

TEST_F(RequestBodyTest, StartOnAFreshBodyAndTwiceInARow) {
  body_.start(5, &dir_);
  body_.start(2, &dir_);
  expectFresh(2);
}

// Each change a Lua handler can make to a body it did not start.
TEST_F(RequestBodyTest, StartAfterEachChangeGivesAFreshBody) {
  struct Change {
    const char* name;
    std::function<void(RequestBody&)> make;
  };
  const Change changes[] = {
      {"markRead", [](RequestBody& b) { b.markRead(); }},
      {"discard", [](RequestBody& b) { b.discard(); }},
      {"setData", [](RequestBody& b) { b.setData("replaced"); }},
  };
  for (const Change& c : changes) {
    SCOPED_TRACE(c.name);
    body_.reset();
    c.make(body_);
    body_.start(4, &dir_);
    expectFresh(4);
  }
}

TEST_F(RequestBodyTest, StartAfterSetFileDeletesAFileToClean) {
  write("given", "from a file");
  std::string path = dir_ + "/given";
  std::string err;
  body_.reset();
  ASSERT_TRUE(body_.setFile(path, true, &err)) << err;
  EXPECT_TRUE(body_.inFile());
  EXPECT_EQ(body_.size(), 11u);
  body_.start(4, &dir_);
  EXPECT_FALSE(exists(path));
  expectFresh(4);
}

TEST_F(RequestBodyTest, AFileNotToCleanSurvivesTheReset) {
  write("kept", "stays");
  std::string path = dir_ + "/kept";
  std::string err;
  ASSERT_TRUE(body_.setFile(path, false, &err)) << err;
  body_.start(4, &dir_);
  EXPECT_TRUE(exists(path));
  expectFresh(4);
}

TEST_F(RequestBodyTest, ResetDeletesTheSpilledFile) {
  body_.start(1, &dir_);
  ASSERT_TRUE(body_.append("abc"));
  std::string path = body_.path();
  ASSERT_TRUE(exists(path));
  body_.reset();
  EXPECT_FALSE(exists(path));
  EXPECT_FALSE(body_.keeping());
  EXPECT_EQ(body_.size(), 0u);
}

TEST_F(RequestBodyTest, AFailedSpillIsReportedAndStartClearsIt) {
  std::string missing_parent = dir_ + "/file-not-dir";
  write("file-not-dir", "x");  // a file where the temp dir should go
  std::string bad = missing_parent + "/sub";
  body_.start(1, &bad);
  EXPECT_FALSE(body_.append("abc"));
  EXPECT_TRUE(body_.failed());
  EXPECT_FALSE(body_.error().empty());
  body_.start(4, &dir_);
  expectFresh(4);
}

}  // namespace
}  // namespace tidegate::http
