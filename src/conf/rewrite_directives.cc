// nginx's rewrite-module directives (set, return), kept in conf order per
// block; http/rewrite.cc runs them. set_by_lua* (conf/lua_directives.cc)
// joins the same list.
#include "conf/directives.h"

namespace tidegate::conf {
namespace {

bool isSetDirective(const std::string& name) {
  return name == "set" || name == "set_by_lua" || name == "set_by_lua_block" || name == "set_by_lua_file";
}

// A built-in with a value of its own ($host, $uri...), not a prefix family.
bool isFixedBuiltin(std::string_view name) {
  VarRef ref;
  return lookupVariable(name, &ref) && !isPrefixVariable(ref.id);
}

bool onSet(const ConfNode& n, BuildState& st, std::string* err) {
  RewriteAction a;
  a.kind = RewriteAction::Kind::kSet;
  a.where = n.where();
  if (!assignableVariable(n, st, &a.target, err)) return false;
  if (!compileComplexValue(n.args[1], &a.value, err, st.variables())) return false;
  rewriteActions(st).push_back(std::move(a));
  return true;
}

bool onReturn(const ConfNode& n, BuildState& st, std::string* err) {
  RewriteAction a;
  a.kind = RewriteAction::Kind::kReturn;
  a.where = n.where();
  ReturnAction& r = a.ret;
  const std::string& first = n.args[0];
  int64_t code = 0;
  if (parseInt(first, &code)) {
    if (code < 0 || code > 999) {
      *err = "invalid return code \"" + first + "\"";
      return false;
    }
    r.code = static_cast<int>(code);
    if (n.args.size() > 1) {
      r.has_text = true;
      if (!compileComplexValue(n.args[1], &r.text, err, st.variables())) return false;
    }
  } else {
    if (n.args.size() != 1 || !(first.rfind("http://", 0) == 0 || first.rfind("https://", 0) == 0 ||
                                first.rfind("$scheme", 0) == 0)) {
      *err = "invalid return code \"" + first + "\"";
      return false;
    }
    r.code = 302;
    r.has_text = true;
    if (!compileComplexValue(first, &r.text, err, st.variables())) return false;
  }
  // Directives after a return stay in the list: the runner stops at the
  // return, so they are never reached (as in nginx).
  rewriteActions(st).push_back(std::move(a));
  return true;
}

const Directive kRewriteDirectives[] = {
    {"set", kServerCtx | kLocationCtx, 2, 2, false, onSet},
    {"return", kServerCtx | kLocationCtx, 1, 2, false, onReturn},
};

}  // namespace

void declareVariables(const std::vector<ConfNode>& nodes, UserVariables* vars) {
  for (const auto& n : nodes) {
    if (isSetDirective(n.name) && !n.args.empty() && n.args[0].size() > 1 && n.args[0][0] == '$') {
      std::string_view name = std::string_view(n.args[0]).substr(1);
      if (!isFixedBuiltin(name)) vars->declare(name);
    }
    declareVariables(n.children, vars);
  }
}

bool assignableVariable(const ConfNode& n, const BuildState& st, VarRef* out, std::string* err) {
  const std::string& arg = n.args[0];
  if (arg.empty() || arg[0] != '$') {
    *err = "invalid variable name \"" + arg + "\"";
    return false;
  }
  if (arg.size() == 1) {
    *err = "invalid variable name \"$\"";
    return false;
  }
  std::string_view name = std::string_view(arg).substr(1);
  // Of the built-ins only $args is changeable (nginx's NGX_HTTP_VAR_CHANGEABLE
  // among the variables we have); the others are nginx's duplicates.
  if (!lookupVariable(name, out, st.variables()) || (out->id != VarId::kUser && out->id != VarId::kArgs)) {
    *err = "the duplicate \"" + std::string(name) + "\" variable";
    return false;
  }
  return true;
}

std::vector<RewriteAction>& rewriteActions(BuildState& st) {
  return st.location ? st.location->rewrite : st.server->rewrite;
}

void registerRewriteDirectives() {
  registerDirectives(kRewriteDirectives, sizeof(kRewriteDirectives) / sizeof(kRewriteDirectives[0]));
}

}  // namespace tidegate::conf
