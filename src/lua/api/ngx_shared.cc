// ngx.shared.DICT: the lua_shared_dict zones (src/shm/) with OpenResty's
// methods, arguments, return values and errors (lua-resty-core's
// resty.core.shdict). Usable in every phase, init_by_lua* and timers
// included. ngx.shared.NAME is a table holding the dict at [1], with the
// methods in its metatable; a method called with '.' instead of ':' is
// OpenResty's 'bad "zone" argument'.
#include <signal.h>

#include <cmath>
#include <string>

#include "lua/api/common.h"
#include "shm/registry.h"
#include "shm/test_hooks.h"
#include "tidegate/ffi.h"

namespace tidegate::lua {
namespace {

using shm::Dict;
using shm::Status;

Dict* checkDict(lua_State* L) {
  if (lua_type(L, 1) == LUA_TTABLE) {
    lua_rawgeti(L, 1, 1);
    auto* d = static_cast<Dict*>(lua_touserdata(L, -1));
    lua_pop(L, 1);
    if (d) return d;
  }
  luaL_error(L, "bad \"zone\" argument");
  return nullptr;
}

// The key at index 2 as OpenResty takes it: nil is an error, numbers and
// other values are converted with tostring(). False with the error pushed
// (nil, err) for the caller to return.
bool checkKey(lua_State* L, std::string_view* key) {
  if (lua_isnoneornil(L, 2)) {
    lua_pushnil(L);
    lua_pushliteral(L, "nil key");
    return false;
  }
  if (lua_type(L, 2) != LUA_TSTRING && lua_type(L, 2) != LUA_TNUMBER) {
    lua_getglobal(L, "tostring");
    lua_pushvalue(L, 2);
    lua_call(L, 1, 1);
    lua_replace(L, 2);
  }
  size_t len = 0;
  const char* p = lua_tolstring(L, 2, &len);
  *key = std::string_view(p, len);
  if (len == 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "empty key");
    return false;
  }
  if (len > Dict::kMaxKey) {
    lua_pushnil(L);
    lua_pushliteral(L, "key too long");
    return false;
  }
  return true;
}

// The value at `idx` for set/add/replace and the lists.
bool checkValue(lua_State* L, int idx, shm::Value* v, bool list) {
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
      size_t len = 0;
      const char* p = lua_tolstring(L, idx, &len);
      *v = shm::Value::ofString(std::string_view(p, len));
      return true;
    }
    case LUA_TNUMBER: *v = shm::Value::ofNumber(lua_tonumber(L, idx)); return true;
    case LUA_TBOOLEAN:
      if (list) return false;
      *v = shm::Value::ofBoolean(lua_toboolean(L, idx) != 0);
      return true;
    default: return false;
  }
}

// exptime in seconds (0: never), as milliseconds.
int64_t checkExptime(lua_State* L, int idx) {
  if (lua_isnoneornil(L, idx)) return 0;
  double t = luaL_checknumber(L, idx);
  if (t < 0) luaL_error(L, "bad \"exptime\" argument");
  return static_cast<int64_t>(std::llround(t * 1000));
}

int pushStatusError(lua_State* L, Status s, bool falsy) {
  if (falsy) lua_pushboolean(L, 0);
  else lua_pushnil(L);
  switch (s) {
    case Status::kNotFound: lua_pushliteral(L, "not found"); break;
    case Status::kExists: lua_pushliteral(L, "exists"); break;
    case Status::kNoMemory: lua_pushliteral(L, "no memory"); break;
    case Status::kNotANumber: lua_pushliteral(L, "not a number"); break;
    case Status::kNotAList: lua_pushliteral(L, "value not a list"); break;
    case Status::kIsAList: lua_pushliteral(L, "value is a list"); break;
    case Status::kEmptyKey: lua_pushliteral(L, "empty key"); break;
    case Status::kKeyTooLong: lua_pushliteral(L, "key too long"); break;
    case Status::kOk: lua_pushnil(L); break;
  }
  return 2;
}

// Pushes a read value (string, number or boolean).
void pushRead(lua_State* L, const shm::ReadResult& r, const std::string& buf) {
  switch (r.type) {
    case shm::Type::kString: lua_pushlstring(L, buf.data(), buf.size()); break;
    case shm::Type::kNumber: lua_pushnumber(L, r.number); break;
    case shm::Type::kBoolean: lua_pushboolean(L, r.boolean); break;
    default: lua_pushnil(L); break;
  }
}

std::string& scratch() {
  static std::string buf;
  return buf;
}

int get(lua_State* L, bool stale) {
  Dict* d = checkDict(L);
  std::string_view key;
  if (!checkKey(L, &key)) return 2;
  std::string& buf = scratch();
  shm::ReadResult r = stale ? d->getStale(key, &buf) : d->get(key, &buf);
  if (r.status == Status::kIsAList) return pushStatusError(L, r.status, false);
  if (r.status != Status::kOk) {
    lua_pushnil(L);
    return 1;
  }
  pushRead(L, r, buf);
  if (!stale) {
    // OpenResty returns the flags only when they are set.
    if (r.flags == 0) return 1;
    lua_pushinteger(L, r.flags);
    return 2;
  }
  if (r.flags) lua_pushinteger(L, r.flags);
  else lua_pushnil(L);
  lua_pushboolean(L, r.stale);
  return 3;
}

int dictGet(lua_State* L) { return get(L, false); }
int dictGetStale(lua_State* L) { return get(L, true); }

enum class Op { kSet, kSafeSet, kAdd, kSafeAdd, kReplace };

int store(lua_State* L, Op op) {
  Dict* d = checkDict(L);
  std::string_view key;
  if (!checkKey(L, &key)) return 2;
  if (lua_isnoneornil(L, 3) && op != Op::kAdd && op != Op::kSafeAdd && op != Op::kReplace) {
    d->remove(key);  // set(key, nil) deletes
    lua_pushboolean(L, 1);
    lua_pushnil(L);
    lua_pushboolean(L, 0);
    return 3;
  }
  shm::Value v;
  if (!checkValue(L, 3, &v, false)) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "bad value type");
    return 2;
  }
  int64_t ttl = checkExptime(L, 4);
  uint32_t flags = lua_isnoneornil(L, 5) ? 0 : static_cast<uint32_t>(luaL_checkinteger(L, 5));
  shm::WriteResult w;
  switch (op) {
    case Op::kSet: w = d->set(key, v, ttl, flags); break;
    case Op::kSafeSet: w = d->safeSet(key, v, ttl, flags); break;
    case Op::kAdd: w = d->add(key, v, ttl, flags); break;
    case Op::kSafeAdd: w = d->safeAdd(key, v, ttl, flags); break;
    case Op::kReplace: w = d->replace(key, v, ttl, flags); break;
  }
  if (w.status != Status::kOk) {
    pushStatusError(L, w.status, true);
    lua_pushboolean(L, w.forcible);
    return 3;
  }
  lua_pushboolean(L, 1);
  lua_pushnil(L);
  lua_pushboolean(L, w.forcible);
  return 3;
}

int dictSet(lua_State* L) { return store(L, Op::kSet); }
int dictSafeSet(lua_State* L) { return store(L, Op::kSafeSet); }
int dictAdd(lua_State* L) { return store(L, Op::kAdd); }
int dictSafeAdd(lua_State* L) { return store(L, Op::kSafeAdd); }
int dictReplace(lua_State* L) { return store(L, Op::kReplace); }

int dictDelete(lua_State* L) {
  Dict* d = checkDict(L);
  std::string_view key;
  if (!checkKey(L, &key)) return 2;
  d->remove(key);
  lua_pushboolean(L, 1);
  return 1;
}

double toNumberArg(lua_State* L, int idx, const char* what) {
  if (lua_type(L, idx) == LUA_TNUMBER) return lua_tonumber(L, idx);
  lua_pushvalue(L, idx);
  double n = 0;
  bool ok = lua_type(L, -1) == LUA_TSTRING && lua_isnumber(L, -1);
  if (ok) n = lua_tonumber(L, -1);
  lua_pop(L, 1);
  if (!ok) luaL_error(L, "cannot convert '%s' to a number", what);
  return n;
}

int dictIncr(lua_State* L) {
  Dict* d = checkDict(L);
  std::string_view key;
  if (!checkKey(L, &key)) return 2;
  double n = toNumberArg(L, 3, "value");
  double init = 0;
  bool has_init = !lua_isnoneornil(L, 4);
  if (has_init) init = toNumberArg(L, 4, "init");
  int64_t init_ttl = 0;
  if (!lua_isnoneornil(L, 5)) {
    if (!has_init) return luaL_error(L, "must not set 'init_ttl' when 'init' is undefined");
    double t = luaL_checknumber(L, 5);
    if (t < 0) return luaL_error(L, "bad \"init_ttl\" argument");
    init_ttl = static_cast<int64_t>(std::llround(t * 1000));
  }
  shm::IncrResult r = d->incr(key, n, has_init ? &init : nullptr, init_ttl);
  if (r.status != Status::kOk) {
    pushStatusError(L, r.status, false);
    lua_pushboolean(L, r.forcible);
    return 3;
  }
  lua_pushnumber(L, r.value);
  lua_pushnil(L);
  lua_pushboolean(L, r.forcible);
  return 3;
}

int push(lua_State* L, bool left) {
  Dict* d = checkDict(L);
  std::string_view key;
  if (!checkKey(L, &key)) return 2;
  shm::Value v;
  if (!checkValue(L, 3, &v, true)) {
    lua_pushnil(L);
    lua_pushliteral(L, "bad value type");
    return 2;
  }
  shm::CountResult r = left ? d->lpush(key, v) : d->rpush(key, v);
  if (r.status != Status::kOk) return pushStatusError(L, r.status, false);
  lua_pushinteger(L, r.count);
  return 1;
}

int dictLpush(lua_State* L) { return push(L, true); }
int dictRpush(lua_State* L) { return push(L, false); }

int pop(lua_State* L, bool left) {
  Dict* d = checkDict(L);
  std::string_view key;
  if (!checkKey(L, &key)) return 2;
  std::string& buf = scratch();
  shm::ReadResult r = left ? d->lpop(key, &buf) : d->rpop(key, &buf);
  if (r.status == Status::kNotFound) {
    lua_pushnil(L);
    return 1;
  }
  if (r.status != Status::kOk) return pushStatusError(L, r.status, false);
  pushRead(L, r, buf);
  return 1;
}

int dictLpop(lua_State* L) { return pop(L, true); }
int dictRpop(lua_State* L) { return pop(L, false); }

int dictLlen(lua_State* L) {
  Dict* d = checkDict(L);
  std::string_view key;
  if (!checkKey(L, &key)) return 2;
  shm::CountResult r = d->llen(key);
  if (r.status != Status::kOk) return pushStatusError(L, r.status, false);
  lua_pushinteger(L, r.count);
  return 1;
}

int dictTtl(lua_State* L) {
  Dict* d = checkDict(L);
  std::string_view key;
  if (!checkKey(L, &key)) return 2;
  shm::CountResult r = d->ttl(key);
  if (r.status != Status::kOk) return pushStatusError(L, r.status, false);
  lua_pushnumber(L, static_cast<double>(r.count) / 1000.0);
  return 1;
}

int dictExpire(lua_State* L) {
  Dict* d = checkDict(L);
  std::string_view key;
  if (!checkKey(L, &key)) return 2;
  if (lua_isnoneornil(L, 3)) return luaL_error(L, "bad \"exptime\" argument");
  Status s = d->expire(key, checkExptime(L, 3));
  if (s != Status::kOk) return pushStatusError(L, s, false);
  lua_pushboolean(L, 1);
  return 1;
}

int dictFlushAll(lua_State* L) {
  checkDict(L)->flushAll();
  return 0;
}

int dictFlushExpired(lua_State* L) {
  Dict* d = checkDict(L);
  lua_Integer max = luaL_optinteger(L, 2, 0);
  lua_pushinteger(L, static_cast<lua_Integer>(d->flushExpired(max > 0 ? static_cast<uint64_t>(max) : 0)));
  return 1;
}

int dictGetKeys(lua_State* L) {
  Dict* d = checkDict(L);
  lua_Integer max = luaL_optinteger(L, 2, 1024);  // OpenResty's default; 0 means all
  std::vector<std::string> keys = d->getKeys(max > 0 ? static_cast<size_t>(max) : 0);
  lua_createtable(L, static_cast<int>(keys.size()), 0);
  int i = 0;
  for (const std::string& k : keys) {
    lua_pushlstring(L, k.data(), k.size());
    lua_rawseti(L, -2, ++i);
  }
  return 1;
}

int dictCapacity(lua_State* L) {
  lua_pushnumber(L, static_cast<double>(checkDict(L)->capacity()));
  return 1;
}

int dictFreeSpace(lua_State* L) {
  lua_pushnumber(L, static_cast<double>(checkDict(L)->freeSpace()));
  return 1;
}

#ifdef TIDEGATE_TEST_HOOKS
// Test builds only: dict:_crash_next("unlink" | "get" | "insert") makes this
// process die by SIGKILL at that point of its next dict operation, with the
// lock held (the lock-recovery integration test).
shm::test::CrashPoint g_armed_point;
bool g_armed = false;

void crashIfArmed(shm::test::CrashPoint point) {
  if (g_armed && point == g_armed_point) raise(SIGKILL);
}

int dictCrashNext(lua_State* L) {
  checkDict(L);
  std::string_view what = luaL_checkstring(L, 2);
  if (what == "unlink") g_armed_point = shm::test::CrashPoint::kUnlinkBeforeLru;
  else if (what == "get") g_armed_point = shm::test::CrashPoint::kGetBeforeTouch;
  else if (what == "insert") g_armed_point = shm::test::CrashPoint::kInsertBeforeLru;
  else return luaL_error(L, "unknown crash point \"%s\"", std::string(what).c_str());
  g_armed = true;
  shm::test::setCrashHook(crashIfArmed);
  return 0;
}
#endif

}  // namespace

}  // namespace tidegate::lua

extern "C" {

int tg_shdict_get(void* zone, const char* key, size_t key_len, tg_shdict_result_t* res, const char** value) {
  auto* d = static_cast<tidegate::shm::Dict*>(zone);
  std::string& buf = tidegate::lua::scratch();
  tidegate::shm::ReadResult r = d->get(std::string_view(key, key_len), &buf);
  if (r.status == tidegate::shm::Status::kNotFound) return 1;
  if (r.status != tidegate::shm::Status::kOk) return -1;
  res->type = static_cast<int>(r.type);
  res->number = r.type == tidegate::shm::Type::kBoolean ? (r.boolean ? 1 : 0) : r.number;
  res->flags = r.flags;
  res->len = buf.size();
  *value = buf.data();
  return 0;
}

int tg_shdict_set(void* zone, const char* key, size_t key_len, int type, const char* str, size_t str_len,
                  double number, double exptime, unsigned int flags, tg_shdict_result_t* res) {
  if (exptime < 0) return -1;  // the slow path raises the error
  tidegate::shm::Value v;
  switch (type) {
    case 1: v = tidegate::shm::Value::ofBoolean(number != 0); break;
    case 3: v = tidegate::shm::Value::ofNumber(number); break;
    case 4: v = tidegate::shm::Value::ofString(std::string_view(str, str_len)); break;
    default: return -1;
  }
  auto* d = static_cast<tidegate::shm::Dict*>(zone);
  tidegate::shm::WriteResult w = d->set(std::string_view(key, key_len), v, static_cast<int64_t>(std::llround(exptime * 1000)), flags);
  res->forcible = w.forcible;
  if (w.status == tidegate::shm::Status::kOk) return 0;
  if (w.status == tidegate::shm::Status::kNoMemory) return 1;
  return -1;
}

int tg_shdict_incr(void* zone, const char* key, size_t key_len, double n, int has_init, double init,
                   double init_ttl, tg_shdict_result_t* res) {
  if (init_ttl < 0) return -1;
  auto* d = static_cast<tidegate::shm::Dict*>(zone);
  tidegate::shm::IncrResult r = d->incr(std::string_view(key, key_len), n, has_init ? &init : nullptr,
                                         static_cast<int64_t>(std::llround(init_ttl * 1000)));
  if (r.status != tidegate::shm::Status::kOk) return -1;
  res->number = r.value;
  res->forcible = r.forcible;
  return 0;
}

}  // extern "C"

namespace tidegate::lua {

void openNgxShared(lua_State* L, const conf::LuaConf& lua) {
  // Stack: [ngx] -> [ngx] with ngx.shared set.
  lua_createtable(L, 0, 20);  // the methods, shared by every dict: [ngx, mt]
  lua_createtable(L, 0, 20);  // [ngx, mt, methods]
  setFn(L, "get", dictGet);
  setFn(L, "get_stale", dictGetStale);
  setFn(L, "set", dictSet);
  setFn(L, "safe_set", dictSafeSet);
  setFn(L, "add", dictAdd);
  setFn(L, "safe_add", dictSafeAdd);
  setFn(L, "replace", dictReplace);
  setFn(L, "delete", dictDelete);
  setFn(L, "incr", dictIncr);
  setFn(L, "lpush", dictLpush);
  setFn(L, "rpush", dictRpush);
  setFn(L, "lpop", dictLpop);
  setFn(L, "rpop", dictRpop);
  setFn(L, "llen", dictLlen);
  setFn(L, "ttl", dictTtl);
  setFn(L, "expire", dictExpire);
  setFn(L, "flush_all", dictFlushAll);
  setFn(L, "flush_expired", dictFlushExpired);
  setFn(L, "get_keys", dictGetKeys);
  setFn(L, "capacity", dictCapacity);
  setFn(L, "free_space", dictFreeSpace);
#ifdef TIDEGATE_TEST_HOOKS
  setFn(L, "_crash_next", dictCrashNext);
#endif
  // lua/tidegate/fastpath.lua replaces get and set with FFI versions.
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, "tidegate.shdict.methods");
  lua_setfield(L, -2, "__index");  // [ngx, mt]
  lua_createtable(L, 0, static_cast<int>(lua.shared_dicts.size()));  // [ngx, mt, shared]
  for (const conf::SharedDictConf& c : lua.shared_dicts) {
    Dict* d = shm::SharedDicts::instance().find(c.name, c.size);
    if (!d) continue;
    lua_createtable(L, 2, 0);  // [ngx, mt, shared, dict]: [1] the Dict, [2] its FFI pointer
    lua_pushlightuserdata(L, d);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, -3);
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, c.name.c_str());
  }
  lua_setfield(L, -3, "shared");  // [ngx, mt]
  lua_pop(L, 1);
}

}  // namespace tidegate::lua
