// Loading a conf from a string in unit tests (prefix /srv/tg, file test.conf).
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "conf/loader.h"

namespace tidegate::conf {

// The loaded conf; fails the test (and returns null) if it does not load.
inline ConfigPtr load(const std::string& text) {
  ConfigPtr cfg;
  ConfError err;
  EXPECT_TRUE(loadConfigFromString(text, "/srv/tg", &cfg, &err)) << err.message();
  return cfg;
}

// The error message; fails the test if the conf loads.
inline std::string loadError(const std::string& text) {
  ConfigPtr cfg;
  ConfError err;
  EXPECT_FALSE(loadConfigFromString(text, "/srv/tg", &cfg, &err));
  return err.message();
}

}  // namespace tidegate::conf
