// /lua routes (pushed Lua modules) and /functions routes (sandboxed
// functions): the same store, versions and rollback (see routes.h and
// lua/module_store.h); only the validation of a push differs.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <set>
#include <string_view>

#include "admin/routes.h"
#include "admin/state_store.h"
#include "core/clock.h"
#include "core/log.h"
#include "lua/module_store.h"
#include "lua/sandbox/functions.h"
#include "lua/vm.h"

namespace tidegate::admin {
namespace {

using core::LogLevel;

json versionJson(const std::string& name, const lua::ModuleVersion& v) {
  return json{{"name", name}, {"version", v.md5}, {"time", localTimeText(v.time_ms)}};
}

// The value of `key` in a query string ("to=abc&x=1"), or "".
std::string queryArg(std::string_view query, std::string_view key) {
  size_t i = 0;
  while (i <= query.size()) {
    size_t amp = query.find('&', i);
    if (amp == std::string_view::npos) amp = query.size();
    std::string_view pair = query.substr(i, amp - i);
    if (pair.size() > key.size() && pair.substr(0, key.size()) == key && pair[key.size()] == '=') {
      return std::string(pair.substr(key.size() + 1));
    }
    i = amp + 1;
  }
  return {};
}

// Makes `md5` the module's current version (a push or a rollback): history
// gets it as its newest entry and the oldest beyond `keep` go.
void setCurrent(lua::ModuleIndex& index, const std::string& name, const std::string& md5, int64_t now, size_t keep) {
  lua::ModuleIndex::Module& m = index.modules[name];
  m.md5 = md5;
  m.time_ms = now;
  m.history.push_back({md5, now});
  while (m.history.size() > keep) m.history.erase(m.history.begin());
  index.version++;
}

// Deletes the source files in lua/ that no module's history names.
void collectSources(const lua::ModuleIndex& index, const std::set<std::string>& candidates,
                    const std::string& state_dir, const char* kind) {
  for (const std::string& md5 : candidates) {
    bool used = false;
    for (const auto& [n, m] : index.modules) {
      for (const lua::ModuleVersion& v : m.history) used = used || v.md5 == md5;
    }
    if (!used) unlink(lua::moduleSourcePath(state_dir, md5, kind).c_str());
  }
}

std::set<std::string> sourcesOf(const lua::ModuleIndex& index, const std::string& name) {
  std::set<std::string> out;
  auto it = index.modules.find(name);
  if (it == index.modules.end()) return out;
  for (const lua::ModuleVersion& v : it->second.history) out.insert(v.md5);
  return out;
}

// One change of the module index, with the sources the module named had
// before it (those no longer named are deleted by commit()).
bool readModules(const std::string& dir, lua::ModuleIndex* out, std::string* err) {
  return lua::readModuleIndex(dir, out, err, lua::kModuleKind);
}
bool readFunctions(const std::string& dir, lua::ModuleIndex* out, std::string* err) {
  return lua::readModuleIndex(dir, out, err, lua::kFunctionKind);
}

class IndexChange : public LockedIndex<lua::ModuleIndex> {
 public:
  IndexChange(const std::string& dir, const std::string& name, const char* kind)
      : LockedIndex(dir, std::string_view(kind) == lua::kFunctionKind ? readFunctions : readModules), kind_(kind) {
    if (ok()) before_ = sourcesOf(index(), name);
  }
  // Writes the index, deletes the sources nothing names any more, and
  // tells every worker. False with *err (nothing changed then).
  bool commit(shm::UpstreamTable& table, std::string* err) {
    if (!writeFileAtomic(lua::moduleDir(dir(), kind_) + "/index.json", index().toJson(), err)) return false;
    collectSources(index(), before_, dir(), kind_);
    table.bumpModuleVersion();
    return true;
  }

 private:
  const char* kind_;
  std::set<std::string> before_;
};

}  // namespace

Reply LuaRoutes::handle(const AdminRequest& r) {
  const std::vector<std::string>& seg = r.segments;
  if (seg.size() == 1) return list();
  const std::string& name = seg[1];
  if (!lua::validModuleName(name)) {
    std::string msg = "invalid ";
    msg.append(noun()).append(" name \"").append(name).append("\" (letters, digits, _ - and . separators)");
    return errorReply(400, msg, "name");
  }
  if (seg.size() == 3) return seg[2] == "versions" ? versions(name) : rollback(r, name);
  if (r.method == "GET") return source(name);
  if (r.method == "PUT") return push(r, name);
  return remove(name);
}

Reply LuaRoutes::list() {
  lua::ModuleIndex index;
  std::string err;
  if (!lua::readModuleIndex(cfg_.http.admin.state_dir, &index, &err, kind_)) return errorReply(500, err);
  json modules = json::array();
  for (const auto& [name, m] : index.modules) modules.push_back(versionJson(name, {m.md5, m.time_ms}));
  Reply reply;
  reply.body = json{{"version", index.version}, {functions() ? "functions" : "modules", modules}};
  return reply;
}

Reply LuaRoutes::source(const std::string& name) {
  lua::ModuleIndex index;
  std::string err, text;
  if (!lua::readModuleIndex(cfg_.http.admin.state_dir, &index, &err, kind_)) return errorReply(500, err);
  auto it = index.modules.find(name);
  if (it == index.modules.end()) return errorReply(404, noun() + " \"" + name + "\"");
  if (!lua::readModuleSource(cfg_.http.admin.state_dir, it->second.md5, &text, &err, kind_)) {
    return errorReply(500, err);
  }
  Reply reply;
  reply.is_text = true;
  reply.text = std::move(text);
  reply.headers.emplace_back("ETag", "\"" + it->second.md5 + "\"");
  return reply;
}

Reply LuaRoutes::versions(const std::string& name) {
  lua::ModuleIndex index;
  std::string err;
  if (!lua::readModuleIndex(cfg_.http.admin.state_dir, &index, &err, kind_)) return errorReply(500, err);
  auto it = index.modules.find(name);
  if (it == index.modules.end()) return errorReply(404, noun() + " \"" + name + "\"");
  json list = json::array();
  for (auto v = it->second.history.rbegin(); v != it->second.history.rend(); ++v) {
    list.push_back(json{{"version", v->md5}, {"time", localTimeText(v->time_ms)}});
  }
  Reply reply;
  reply.body = json{{"name", name}, {"current", it->second.md5}, {"versions", list}};
  return reply;
}

Reply LuaRoutes::push(const AdminRequest& r, const std::string& name) {
  if (!vm_) return errorReply(500, "this worker has no Lua VM");
  std::string src(r.body);
  if (src.empty()) return errorReply(400, std::string("the body must be the ").append(noun()).append("'s Lua source"));
  std::string err;
  if (functions()) {
    if (!lua::Functions::compile(vm_->state(), name, src, &err)) return errorReply(400, "syntax error: " + err);
    return store(name, src);
  }
  lua_State* L = vm_->state();
  // Built-in modules (ngx.*, resty.core, tidegate.*) are not replaceable.
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_getfield(L, -1, name.c_str());
  bool builtin = !lua_isnil(L, -1);
  lua_pop(L, 3);
  if (builtin) return errorReply(400, "\"" + name + "\" is a built-in module", "name");
  if (!lua::PushedModules::compile(L, name, src, &err)) return errorReply(400, "syntax error: " + err);
  // Run once here, as require would, so a module that fails at load time
  // is refused before any worker sees it.
  if (!lua::PushedModules::tryLoad(L, name, src, &err)) return errorReply(400, "error while loading: " + err);
  return store(name, src);
}

// Keeps a validated push: the source, then the index, then every worker
// is told.
Reply LuaRoutes::store(const std::string& name, const std::string& src) {
  std::string err;
  const std::string& dir = cfg_.http.admin.state_dir;
  IndexChange change(dir, name, kind_);
  if (!change.ok()) return errorReply(500, change.error());
  lua::ModuleIndex& index = change.index();
  std::string md5 = lua::md5Hex(src);
  auto it = index.modules.find(name);
  bool existed = it != index.modules.end();
  Reply reply;
  if (existed && it->second.md5 == md5) {
    reply.body = versionJson(name, {md5, it->second.time_ms});
    return reply;  // the same source: nothing changes
  }
  setCurrent(index, name, md5, static_cast<int64_t>(core::wallMs()), cfg_.http.admin.lua_history);
  if (::mkdir(lua::moduleDir(dir, kind_).c_str(), 0700) != 0 && errno != EEXIST) {
    return errorReply(500, "mkdir() \"" + lua::moduleDir(dir, kind_) + "\" failed (" + strerror(errno) + ")");
  }
  if (!writeFileAtomic(lua::moduleSourcePath(dir, md5, kind_), src, &err) || !change.commit(table_, &err)) {
    return errorReply(500, std::string("cannot persist the ").append(noun()).append(": ").append(err));
  }
  vm_->refreshModules();
  TG_LOG(LogLevel::kNotice, "admin: Lua %s \"%s\" %s (%s)", noun().c_str(), name.c_str(),
         existed ? "replaced" : "pushed", md5.c_str());
  reply.status = existed ? 200 : 201;
  reply.body = versionJson(name, {md5, index.modules[name].time_ms});
  reply.headers.emplace_back("ETag", "\"" + md5 + "\"");
  return reply;
}

Reply LuaRoutes::rollback(const AdminRequest& r, const std::string& name) {
  const std::string& dir = cfg_.http.admin.state_dir;
  IndexChange change(dir, name, kind_);
  if (!change.ok()) return errorReply(500, change.error());
  lua::ModuleIndex& index = change.index();
  std::string err;
  auto it = index.modules.find(name);
  if (it == index.modules.end()) return errorReply(404, noun() + " \"" + name + "\"");
  const std::vector<lua::ModuleVersion>& history = it->second.history;
  std::string to = queryArg(r.query, "to");
  if (to.empty()) {
    // The version that was current before this one.
    if (history.size() < 2) return errorReply(409, noun() + " \"" + name + "\" has no previous version");
    to = history[history.size() - 2].md5;
  } else {
    bool known = false;
    for (const lua::ModuleVersion& v : history) known = known || v.md5 == to;
    if (!known) return errorReply(404, noun() + " \"" + name + "\" has no version " + to, "to");
  }
  Reply reply;
  if (to == it->second.md5) {
    reply.body = versionJson(name, {to, it->second.time_ms});
    return reply;
  }
  std::string src;
  if (!lua::readModuleSource(dir, to, &src, &err, kind_)) return errorReply(500, err);
  setCurrent(index, name, to, static_cast<int64_t>(core::wallMs()), cfg_.http.admin.lua_history);
  if (!change.commit(table_, &err)) return errorReply(500, "cannot persist the rollback: " + err);
  if (vm_) vm_->refreshModules();
  TG_LOG(LogLevel::kNotice, "admin: Lua %s \"%s\" rolled back to %s", noun().c_str(), name.c_str(), to.c_str());
  reply.body = versionJson(name, {to, index.modules[name].time_ms});
  reply.headers.emplace_back("ETag", "\"" + to + "\"");
  return reply;
}

Reply LuaRoutes::remove(const std::string& name) {
  IndexChange change(cfg_.http.admin.state_dir, name, kind_);
  if (!change.ok()) return errorReply(500, change.error());
  lua::ModuleIndex& index = change.index();
  if (!index.modules.count(name)) return errorReply(404, noun() + " \"" + name + "\"");
  index.modules.erase(name);
  index.version++;
  std::string err;
  if (!change.commit(table_, &err)) return errorReply(500, "cannot persist the delete: " + err);
  if (vm_) vm_->refreshModules();
  TG_LOG(LogLevel::kNotice, "admin: Lua %s \"%s\" deleted", noun().c_str(), name.c_str());
  Reply reply;
  reply.body = json{{"deleted", name}};
  return reply;
}

}  // namespace tidegate::admin
