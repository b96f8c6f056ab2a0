// Vm::from(): the VM a lua_State belongs to, with several VMs alive in one
// thread (it keeps its last answer, keyed by the state's allocator data).
#include "lua/vm.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "../conf/load_util.h"

namespace tidegate::lua {
namespace {

std::shared_ptr<Vm> newVm() {
  std::string err;
  std::shared_ptr<Vm> vm = Vm::create(conf::load("events {} http {}"), &err);
  EXPECT_TRUE(vm) << err;
  return vm;
}

TEST(VmTest, FromNamesTheVmOfEachStateAndItsCoroutines) {
  std::shared_ptr<Vm> a = newVm();
  std::shared_ptr<Vm> b = newVm();
  ASSERT_TRUE(a && b);
  lua_State* co_a = lua_newthread(a->state());
  lua_State* co_b = lua_newthread(b->state());
  for (int i = 0; i < 3; i++) {  // alternating, so a remembered answer is tested both ways
    EXPECT_EQ(Vm::from(a->state()), a.get());
    EXPECT_EQ(Vm::from(co_b), b.get());
    EXPECT_EQ(Vm::from(co_a), a.get());
    EXPECT_EQ(Vm::from(b->state()), b.get());
  }
  lua_pop(a->state(), 1);
  lua_pop(b->state(), 1);
  // A VM made after another is gone is never answered with the old one.
  Vm* gone = a.get();
  EXPECT_EQ(Vm::from(a->state()), gone);
  a.reset();
  std::shared_ptr<Vm> c = newVm();
  ASSERT_TRUE(c);
  EXPECT_EQ(Vm::from(c->state()), c.get());
  EXPECT_EQ(Vm::from(b->state()), b.get());
}

// Which handler code may share one table of globals with every request.
TEST(VmTest, KeepsGlobalsSeesEveryWayToTheGlobalsTable) {
  std::shared_ptr<Vm> vm = newVm();
  ASSERT_TRUE(vm);
  lua_State* L = vm->state();
  auto keeps = [&](const char* code) {
    EXPECT_EQ(luaL_loadstring(L, code), 0) << code;
    int top = lua_gettop(L);
    bool k = vm->keepsGlobals(-1);
    EXPECT_EQ(lua_gettop(L), top);
    lua_pop(L, 1);
    return k;
  };
  EXPECT_TRUE(keeps("local n = ngx.shared.d:get('n') or 0 ngx.say(n + 1)"));
  EXPECT_TRUE(keeps("local t = {} t.x = 1 local function f() return t.x end return f()"));
  EXPECT_TRUE(keeps("return function() return function() return string.rep('a', 2) end end"));
  EXPECT_FALSE(keeps("counter = 1"));
  EXPECT_FALSE(keeps("local x = 1 if x then y = 2 end"));
  EXPECT_FALSE(keeps("return function() return function() z = 3 end end"));  // nested two deep
  EXPECT_FALSE(keeps("getfenv(1).w = 1"));
  EXPECT_FALSE(keeps("local f = _G.setfenv"));
  EXPECT_FALSE(keeps("local info = debug.getinfo(1)"));
}

}  // namespace
}  // namespace tidegate::lua
