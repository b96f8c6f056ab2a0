// A fixture for unit tests that need files: a fresh directory under /tmp
// for each test, removed with everything in it afterwards.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <utility>

namespace tidegate::testing_support {

class TempDirTest : public ::testing::Test {
 protected:
  // The directory is /tmp/<prefix>-XXXXXX.
  explicit TempDirTest(std::string prefix) : prefix_(std::move(prefix)) {}

  void SetUp() override {
    std::string tmpl = "/tmp/" + prefix_ + "-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  // Writes `text` to `rel` under the directory, making the directories
  // on the way.
  void write(const std::string& rel, const std::string& text) {
    std::filesystem::path p = std::filesystem::path(dir_) / rel;
    std::filesystem::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }

  std::string dir_;

 private:
  std::string prefix_;
};

}  // namespace tidegate::testing_support
