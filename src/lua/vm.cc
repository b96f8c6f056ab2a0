#include "lua/vm.h"

#include <cstring>

#include "conf/parser.h"
#include "core/log.h"
#include "lua/embedded.h"
#include "lua/task.h"
#include "http/variables.h"
#include "lua/phases/content.h"
#include "shm/registry.h"

namespace tidegate::lua {
namespace {

// A light userdata key for the owning Vm in the registry.
const char kVmKey = 0;

// ";;" in an OpenResty path means "the default path here".
std::string expandPath(const std::string& conf, const char* dflt) {
  if (conf.empty()) return dflt;
  std::string out = conf;
  size_t pos = out.find(";;");
  if (pos != std::string::npos) out.replace(pos, 2, std::string(";") + dflt + ";");
  return out;
}

void setPackagePaths(lua_State* L, const conf::LuaConf& lc) {
  // Stack: [] -> []
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  std::string path = expandPath(lc.package_path, lua_tostring(L, -1));
  lua_pop(L, 1);
  lua_getfield(L, -1, "cpath");
  std::string cpath = expandPath(lc.package_cpath, lua_tostring(L, -1));
  lua_pop(L, 1);
  lua_pushstring(L, path.c_str());
  lua_setfield(L, -2, "path");
  lua_pushstring(L, cpath.c_str());
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
}

// package.preload loader for one embedded module; upvalue 1 is its entry.
// Stack: [name] -> [module value].
int loadEmbedded(lua_State* L) {
  const auto* m = static_cast<const EmbeddedModule*>(lua_touserdata(L, lua_upvalueindex(1)));
  if (luaL_loadbuffer(L, m->source, strlen(m->source), m->chunkname) != 0) return lua_error(L);
  lua_pushstring(L, m->name);
  lua_call(L, 1, 1);
  return 1;
}

// Stack: [] -> []
void registerEmbedded(lua_State* L) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  for (const EmbeddedModule* m = kEmbeddedModules; m->name; m++) {
    lua_pushlightuserdata(L, const_cast<EmbeddedModule*>(m));
    lua_pushcclosure(L, loadEmbedded, 1);
    lua_setfield(L, -2, m->name);
  }
  lua_pop(L, 2);
}

}  // namespace

int Vm::traceback(lua_State* L) {
  if (!lua_isstring(L, 1)) return 1;
  luaL_traceback(L, L, lua_tostring(L, 1), 1);
  return 1;
}

const char* phaseName(Phase p) {
  switch (p) {
    case Phase::kInit: return "init";
    case Phase::kInitWorker: return "init_worker";
    case Phase::kSet: return "set";
    case Phase::kRewrite: return "rewrite";
    case Phase::kAccess: return "access";
    case Phase::kContent: return "content";
    case Phase::kLog: return "log";
    case Phase::kTimer: return "timer";
    case Phase::kHeaderFilter: return "header_filter";
    case Phase::kBodyFilter: return "body_filter";
    case Phase::kExitWorker: return "exit_worker";
    case Phase::kBalancer: return "balancer";
    case Phase::kSslCert: return "ssl_cert";
  }
  return "?";
}

std::shared_ptr<Vm> Vm::create(conf::ConfigPtr cfg, std::string* err) {
  std::shared_ptr<Vm> vm(new Vm());
  vm->cfg_ = std::move(cfg);
  vm->L_ = luaL_newstate();
  if (!vm->L_) {
    *err = "failed to create the Lua VM (out of memory)";
    return nullptr;
  }
  lua_State* L = vm->L_;
  luaL_openlibs(L);
  lua_pushlightuserdata(L, const_cast<char*>(&kVmKey));
  lua_pushlightuserdata(L, vm.get());
  lua_rawset(L, LUA_REGISTRYINDEX);
  lua_getglobal(L, "table");
  lua_getfield(L, -1, "concat");
  vm->table_concat_ = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pop(L, 1);
  setPackagePaths(L, vm->cfg_->http.lua);
  registerEmbedded(L);
  vm->modules_ = std::make_unique<PushedModules>(vm->cfg_->http.admin.state_dir);
  vm->modules_->install(L);
  vm->functions_ = std::make_unique<Functions>(*vm, vm->cfg_->http.admin.state_dir);
  // The lua_shared_dict zones exist before any Lua runs (init_by_lua* uses
  // them) and before workers are forked (they inherit the mappings).
  if (!shm::SharedDicts::instance().ensure(vm->cfg_->http.lua.shared_dicts, err)) return nullptr;
  openNgx(L);
  lua_getglobal(L, "ngx");
  openNgxShared(L, vm->cfg_->http.lua);
  lua_pop(L, 1);
  // The FFI fast paths replace parts of the ngx table (lua/tidegate/fastpath.lua).
  lua_getglobal(L, "require");
  lua_pushliteral(L, "tidegate.fastpath");
  if (lua_pcall(L, 1, 0, 0) != 0) {
    *err = std::string("failed to load the ngx fast paths: ") + lua_tostring(L, -1);
    return nullptr;
  }
  active_ = vm.get();
  return vm;
}

Vm::~Vm() {
  if (active_ == this) active_ = nullptr;
  if (from_vm_ == this) from_ud_ = from_vm_ = nullptr;
  if (L_) lua_close(L_);
}

// Vm::from's slow path. LuaJIT's own allocator has one arena per state
// family (the sandbox's charging allocator keeps that data), so its `ud`
// names the VM; a build on the system allocator passes null and always
// takes the registry path.
Vm* Vm::fromRegistry(lua_State* L, void* ud) {
  lua_pushlightuserdata(L, const_cast<char*>(&kVmKey));
  lua_rawget(L, LUA_REGISTRYINDEX);
  Vm* vm = static_cast<Vm*>(lua_touserdata(L, -1));
  lua_pop(L, 1);
  if (ud && vm) {
    from_ud_ = ud;
    from_vm_ = vm;
  }
  return vm;
}

const conf::VarRef* Vm::variable(std::string_view name) {
  auto addr = reinterpret_cast<uintptr_t>(name.data());
  VarSlot& slot = var_slots_[((addr >> 4) ^ name.size()) % var_slots_.size()];
  if (slot.addr == name.data() && slot.name == name) return &slot.ref;
  conf::VarRef ref;
  if (!conf::lookupVariable(name, &ref, &cfg_->http.variables)) return nullptr;
  slot.addr = name.data();
  slot.name.assign(name);
  slot.ref = std::move(ref);
  return &slot.ref;
}

std::string wrapHandler(std::string_view code, bool vararg) {
  std::string out = vararg ? "return function(...) " : "return function() ";
  if (!code.empty() && code[0] == '#') {
    size_t eol = code.find('\n');
    code = eol == std::string_view::npos ? std::string_view() : code.substr(eol);
  }
  out.append(code);
  out.append("\nend");
  return out;
}

namespace {

bool readFile(const std::string& path, std::string* out, std::string* err) {
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) {
    err->assign("cannot open ").append(path);
    return false;
  }
  char buf[8192];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out->append(buf, n);
  bool ok = !ferror(f);
  fclose(f);
  if (!ok) err->assign("cannot read ").append(path);
  return ok;
}

}  // namespace

// Compiles `code` once (per chunk name, while lua_code_cache is on): as it
// is for init phases, or wrapped as a closure maker for request handlers.
// Stack: [] -> [fn] on success, [] on failure.
bool Vm::load(const conf::LuaCode& code, bool wrap, std::string* err) {
  bool cache = cfg_->http.lua.code_cache;
  if (cache && !wrap) {
    auto it = chunks_.find(code.chunkname);
    if (it != chunks_.end()) {
      lua_rawgeti(L_, LUA_REGISTRYINDEX, it->second);
      return true;
    }
  }
  int rc;
  if (!wrap && code.kind == conf::LuaCode::Kind::kFile) {
    rc = luaL_loadfile(L_, code.source.c_str());
  } else if (!wrap) {
    rc = luaL_loadbuffer(L_, code.source.data(), code.source.size(), code.chunkname.c_str());
  } else {
    std::string body;
    if (code.kind == conf::LuaCode::Kind::kFile && !readFile(code.source, &body, err)) return false;
    std::string_view source = code.kind == conf::LuaCode::Kind::kFile ? body : code.source;
    // Without "..." first: that fails only for code that uses it.
    std::string text = wrapHandler(source, false);
    rc = luaL_loadbuffer(L_, text.data(), text.size(), code.chunkname.c_str());
    if (rc != 0) {
      lua_pop(L_, 1);
      text = wrapHandler(source, true);
      rc = luaL_loadbuffer(L_, text.data(), text.size(), code.chunkname.c_str());
    }
  }
  if (rc != 0) {
    *err = lua_tostring(L_, -1) ? lua_tostring(L_, -1) : "failed to load Lua code";
    lua_pop(L_, 1);
    return false;
  }
  if (cache && !wrap) {
    lua_pushvalue(L_, -1);
    chunks_[code.chunkname] = luaL_ref(L_, LUA_REGISTRYINDEX);
  }
  return true;
}

Vm::Handler* Vm::handler(const conf::LuaCode& code, std::string* err) {
  // The same code as last time (most requests run one location's): its
  // address and name, without the map's string comparisons.
  if (&code == last_code_ && last_->first == code.chunkname) return &last_->second;
  auto it = handlers_.find(code.chunkname);
  if (it != handlers_.end()) {
    last_code_ = &code;
    last_ = &*it;
    return &it->second;
  }
  if (!load(code, true, err)) return nullptr;  // Stack: [maker]
  Handler h;
  if (keepsGlobals(-1)) {
    lua_pushvalue(L_, -1);
    lua_call(L_, 0, 1);
    if (shared_env_ == LUA_NOREF) {
      LuaTask::pushNewEnv(L_);
      shared_env_ = luaL_ref(L_, LUA_REGISTRYINDEX);
    }
    lua_rawgeti(L_, LUA_REGISTRYINDEX, shared_env_);
    lua_setfenv(L_, -2);
    h.shared = luaL_ref(L_, LUA_REGISTRYINDEX);
  }
  h.maker = luaL_ref(L_, LUA_REGISTRYINDEX);
  last_code_ = &code;
  last_ = &*handlers_.emplace(code.chunkname, h).first;
  return &last_->second;
}

bool Vm::keepsGlobals(int idx) {
  int fn = idx < 0 ? lua_gettop(L_) + idx + 1 : idx;
  if (keeps_globals_ == LUA_NOREF) {
    lua_getglobal(L_, "require");
    lua_pushliteral(L_, "tidegate.purity");
    if (lua_pcall(L_, 1, 1, 0) != 0 || !lua_isfunction(L_, -1)) {
      TG_LOG(core::LogLevel::kError, "[lua] tidegate.purity: %s", lua_tostring(L_, -1) ? lua_tostring(L_, -1) : "not a function");
      lua_pop(L_, 1);
      keeps_globals_ = LUA_REFNIL;
      return false;
    }
    keeps_globals_ = luaL_ref(L_, LUA_REGISTRYINDEX);
  }
  if (keeps_globals_ == LUA_REFNIL) return false;
  lua_rawgeti(L_, LUA_REGISTRYINDEX, keeps_globals_);
  lua_pushvalue(L_, fn);
  bool keeps = lua_pcall(L_, 1, 1, 0) == 0 && lua_toboolean(L_, -1);
  lua_pop(L_, 1);
  return keeps;
}

bool Vm::push(const conf::LuaCode& code, LuaTask* task, std::string* err) {
  refreshModules();
  if (code.path) {
    // A file named through variables: this request's file (cached by path).
    RequestContext* ctx = task->request();
    if (!ctx) {
      *err = "a Lua file path with variables needs a request";
      return false;
    }
    conf::LuaCode file = http::resolveLuaFile(code, ctx->req());
    return push(file, task, err);
  }
  if (!cfg_->http.lua.code_cache) {
    if (!load(code, true, err)) return false;
  } else {
    Handler* h = handler(code, err);
    if (!h) return false;
    // Code that writes no global shares one closure, unless an earlier
    // phase of the request wrote one: then it must see it.
    if (h->shared != LUA_REFNIL && !task->hasEnv()) {
      lua_rawgeti(L_, LUA_REGISTRYINDEX, h->shared);
      return true;
    }
    lua_rawgeti(L_, LUA_REGISTRYINDEX, h->maker);
  }
  // Stack: [maker] -> [handler]; the maker only returns the closure.
  lua_call(L_, 0, 1);
  task->pushEnv(L_);
  lua_setfenv(L_, -2);
  return true;
}

lua_State* Vm::newThread(lua_State* L, int* ref) {
  if (!thread_pool_.empty()) {
    auto [co, r] = thread_pool_.back();
    thread_pool_.pop_back();
    lua_rawgeti(L, LUA_REGISTRYINDEX, r);
    *ref = r;
    return co;
  }
  lua_State* co = lua_newthread(L);
  lua_pushvalue(L, -1);
  *ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return co;
}

void Vm::recycle(lua_State* co, int ref) {
  constexpr size_t kMaxPooled = 256;
  if (thread_pool_.size() >= kMaxPooled || lua_status(co) != 0) {
    luaL_unref(L_, LUA_REGISTRYINDEX, ref);
    return;
  }
  lua_settop(co, 0);
  thread_pool_.emplace_back(co, ref);
}

bool Vm::run(const conf::LuaCode& code, Phase phase, std::string* err) {
  if (code.empty()) return true;
  phase_ = phase;
  int base = lua_gettop(L_);
  lua_pushcfunction(L_, traceback);
  if (!load(code, false, err)) {
    lua_settop(L_, base);
    return false;
  }
  // Stack: [traceback, fn]
  int rc = lua_pcall(L_, 0, 0, base + 1);
  if (rc != 0) {
    *err = lua_tostring(L_, -1) ? lua_tostring(L_, -1) : "unknown Lua error";
  }
  lua_settop(L_, base);
  return rc == 0;
}

}  // namespace tidegate::lua
