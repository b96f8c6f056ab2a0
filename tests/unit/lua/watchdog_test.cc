// lua_budget_timeout's machinery (lua/watchdog.h) on a bare LuaJIT state:
// the watchdog stops JIT-compiled code, nests, and gives back the hook it
// replaced; the conf side finds the smallest budget.
#include "lua/watchdog.h"

#include <gtest/gtest.h>
#include <uv.h>

#include <string>

#include "../conf/load_util.h"

namespace tidegate::lua {
namespace {

class WatchdogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    L_ = luaL_newstate();
    luaL_openlibs(L_);
    std::string err;
    ASSERT_TRUE(Watchdog::start(L_, 1, &err)) << err;
  }
  void TearDown() override {
    Watchdog::stop();
    lua_close(L_);
  }
  // Runs `code` as set_by_lua* and the filters do, under a budget of `ms`;
  // the error's message (its first line, before the traceback), or "" if it
  // ended normally.
  std::string runWithin(const std::string& code, uint64_t ms) {
    EXPECT_EQ(luaL_loadstring(L_, code.c_str()), 0);
    int rc = pcallWithBudget(L_, 0, 0, 0, ms);
    std::string out = rc != 0 && lua_isstring(L_, -1) ? lua_tostring(L_, -1) : "";
    out = out.substr(0, out.find('\n'));
    tripped_ = out == budgetExceeded(ms);
    lua_settop(L_, 0);
    return out;
  }
  lua_State* L_ = nullptr;
  bool tripped_ = false;
};

TEST_F(WatchdogTest, StopsACompiledLoop) {
  EXPECT_EQ(runWithin("local x = 0 while true do x = x + 1 end", 30), "lua_budget_timeout 30ms exceeded");
  EXPECT_TRUE(tripped_);
  // The loop ran as a trace (the point of the exercise).
  ASSERT_EQ(luaL_dostring(L_, "return require('jit.util').traceinfo(1) ~= nil"), 0);
  EXPECT_TRUE(lua_toboolean(L_, -1));
  lua_settop(L_, 0);
  // A pcall around the loop does not keep it alive (the kill is a yield).
  EXPECT_EQ(runWithin("while true do pcall(function() local x = 0 for i = 1, 1e15 do x = x + i end end) end", 30),
            "lua_budget_timeout 30ms exceeded");
  // Code that ends in time is untouched, and nothing is left armed.
  EXPECT_EQ(runWithin("local x = 0 for i = 1, 1000 do x = x + i end", 1000), "");
  EXPECT_FALSE(tripped_);
  EXPECT_EQ(lua_gethook(L_), nullptr);
}

int g_calls = 0;
void countingHook(lua_State*, lua_Debug*) { g_calls++; }

// The hook in place before arm() (a sandbox's count hook) is back after
// the kill, with its mask and count.
TEST_F(WatchdogTest, GivesBackTheHookItReplaced) {
  lua_sethook(L_, countingHook, LUA_MASKCOUNT, 1000);
  EXPECT_NE(runWithin("local x = 0 while true do x = x + 1 end", 20), "");
  EXPECT_EQ(lua_gethook(L_), countingHook);
  EXPECT_EQ(lua_gethookmask(L_), LUA_MASKCOUNT);
  EXPECT_EQ(lua_gethookcount(L_), 1000);
  lua_sethook(L_, nullptr, 0, 0);
}

// An inner run (a filter inside ngx.flush) is checked against its own
// deadline; the outer run, past its deadline meanwhile, gets its kill hook
// back when the inner one ends.
TEST_F(WatchdogTest, NestedRuns) {
  Tripwire outer(10);
  outer.arm(L_, uv_hrtime());  // already past: the hook is set at once
  EXPECT_NE(lua_gethook(L_), nullptr);
  EXPECT_EQ(runWithin("local x = 0 for i = 1, 1000 do x = x + i end", 1000), "");  // inner: in time
  EXPECT_FALSE(tripped_);
  EXPECT_FALSE(outer.tripped());
  EXPECT_NE(lua_gethook(L_), nullptr);  // the outer kill is pending again
  ASSERT_EQ(luaL_loadstring(L_, "local x = 1"), 0);
  EXPECT_NE(lua_pcall(L_, 0, 0, 0), 0);
  EXPECT_TRUE(outer.tripped());
  lua_settop(L_, 0);
  outer.disarm();
  EXPECT_EQ(lua_gethook(L_), nullptr);
}

TEST_F(WatchdogTest, JitProfileIsTaken) {
  ASSERT_EQ(luaL_dostring(L_, "return pcall(require('jit.profile').start, 'l', function() end)"), 0);
  EXPECT_FALSE(lua_toboolean(L_, -2));
  EXPECT_NE(std::string(lua_tostring(L_, -1)).find("jit.profile is in use by lua_budget_timeout"), std::string::npos);
}

TEST(WatchdogConfTest, SmallestBudgetAndInterval) {
  conf::ConfigPtr cfg = conf::load(
      "http { lua_budget_timeout 2s; server { listen 1; location / { lua_budget_timeout off; } "
      "location /a { location /a/b { lua_budget_timeout 40ms; } } } server { listen 2; lua_budget_timeout 1s; } }");
  ASSERT_TRUE(cfg);
  EXPECT_EQ(minBudgetTimeout(*cfg), 40u);
  EXPECT_EQ(minBudgetTimeout(*conf::load("http { server { listen 1; } }")), 0u);
  EXPECT_EQ(Watchdog::intervalFor(40), 4);
  EXPECT_EQ(Watchdog::intervalFor(5), 1);
  EXPECT_EQ(Watchdog::intervalFor(60000), 10);
}

}  // namespace
}  // namespace tidegate::lua
