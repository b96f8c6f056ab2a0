#include "http/rewrite.h"

#include <string>
#include <vector>

#include "core/log.h"
#include "http/variables.h"

namespace tidegate::http {
namespace {

// Stores `value` (its buffer is taken) into the action's target.
void assign(const conf::VarRef& target, Request& r, std::string* value) {
  if (target.id == conf::VarId::kArgs) r.vars.replaceArgs(*value);
  else r.vars.take(target.index, value);
}

bool runSetByLua(const conf::RewriteAction& a, Request& r, ContentHandler* lua) {
  if (!lua) {
    TG_LOG_CONN(core::LogLevel::kError, r.conn ? r.conn->id : 0, "failed to run set_by_lua*: no Lua VM%s",
                describeRequest(r).c_str());
    return false;
  }
  std::vector<std::string> args(a.lua_args.size());
  for (size_t i = 0; i < args.size(); i++) evaluate(a.lua_args[i], r, &args[i]);
  std::string value;
  bool ok = lua->runSet(r, a.lua, args, &value);
  if (ok) assign(a.target, r, &value);
  return ok;
}

// One block's list; stops at a return or an error.
RewriteOutcome runList(const std::vector<conf::RewriteAction>& actions, Request& r, ContentHandler* lua,
                       std::string* scratch) {
  for (const auto& a : actions) {
    switch (a.kind) {
      case conf::RewriteAction::Kind::kSet:
        // Evaluated aside first: the value may read the variable it replaces.
        scratch->clear();
        evaluate(a.value, r, scratch);
        assign(a.target, r, scratch);
        break;
      case conf::RewriteAction::Kind::kReturn: return RewriteOutcome{RewriteOutcome::Kind::kReturn, &a.ret};
      case conf::RewriteAction::Kind::kSetByLua:
        if (!runSetByLua(a, r, lua)) return RewriteOutcome{RewriteOutcome::Kind::kError, nullptr};
        break;
    }
  }
  return RewriteOutcome{};
}

}  // namespace

RewriteOutcome runRewritePhases(Request& r, ContentHandler* lua, bool with_server) {
  std::string scratch;
  RewriteOutcome out;
  if (with_server) out = runList(r.server->rewrite, r, lua, &scratch);
  if (out.kind == RewriteOutcome::Kind::kContinue && r.location) out = runList(r.location->rewrite, r, lua, &scratch);
  return out;
}

}  // namespace tidegate::http
