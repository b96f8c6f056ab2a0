// Conf directives of the Lua runtime (OpenResty's names and contexts). They
// only fill conf::LuaConf; src/lua/ runs the code.
#include "conf/directives.h"

namespace tidegate::conf {
namespace {

std::string baseName(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// "init_by_lua_block" -> "init_by_lua", as OpenResty names its chunks.
std::string phaseName(const std::string& directive) {
  for (const char* suffix : {"_block", "_file"}) {
    std::string s(suffix);
    if (directive.size() > s.size() && directive.compare(directive.size() - s.size(), s.size(), s) == 0) {
      return directive.substr(0, directive.size() - s.size());
    }
  }
  return directive;
}

bool isFileDirective(const ConfNode& n) {
  return n.name.size() > 5 && n.name.compare(n.name.size() - 5, 5, "_file") == 0;
}

// The code (or file path) is argument `arg`: 0, or 1 after set_by_lua*'s "$var".
bool setCode(const ConfNode& n, BuildState& st, LuaCode* code, std::string* err, size_t arg = 0) {
  if (!code->empty()) {
    *err = "\"" + n.name + "\" directive is duplicate";
    return false;
  }
  if (isFileDirective(n) && n.args[arg].find('$') != std::string::npos) {
    // OpenResty evaluates a file path with variables per request.
    auto path = std::make_shared<ComplexValue>();
    if (!compileComplexValue(n.args[arg], path.get(), err, st.variables())) return false;
    code->kind = LuaCode::Kind::kFile;
    code->path = std::move(path);
    code->prefix = st.config->prefix;
  } else if (isFileDirective(n)) {
    code->kind = LuaCode::Kind::kFile;
    code->source = st.resolvePath(n.args[arg]);
    code->chunkname.assign(1, '@').append(code->source);
  } else {
    code->kind = LuaCode::Kind::kInline;
    code->source = n.args[arg];
    int line = n.lua_block ? n.lua_line : n.line;
    code->chunkname.assign(1, '=');
    code->chunkname.append(phaseName(n.name)).append(1, '(').append(baseName(n.file ? *n.file : "conf"));
    code->chunkname.append(1, ':').append(std::to_string(line)).append(1, ')');
  }
  return true;
}

bool onInit(const ConfNode& n, BuildState& st, std::string* err) { return setCode(n, st, &st.http->lua.init, err); }

bool onInitWorker(const ConfNode& n, BuildState& st, std::string* err) {
  return setCode(n, st, &st.http->lua.init_worker, err);
}

bool onExitWorker(const ConfNode& n, BuildState& st, std::string* err) {
  return setCode(n, st, &st.http->lua.exit_worker, err);
}

template <std::optional<LuaCode> HttpSettings::*Field>
bool onPhase(const ConfNode& n, BuildState& st, std::string* err) {
  std::optional<LuaCode>& slot = st.settings().*Field;
  if (slot) {
    *err = "\"" + n.name + "\" directive is duplicate";
    return false;
  }
  slot = LuaCode{};
  return setCode(n, st, &*slot, err);
}

bool onContent(const ConfNode& n, BuildState& st, std::string* err) {
  return setCode(n, st, &st.location->content_lua, err);
}

// content_by_function NAME | $var; the content phase of a location runs a
// sandboxed function pushed through the admin API (lua/sandbox/).
bool onContentFunction(const ConfNode& n, BuildState& st, std::string* err) {
  LuaCode* code = &st.location->content_lua;
  if (!code->empty()) {
    err->assign("\"").append(n.name).append("\" directive is duplicate");
    return false;
  }
  code->kind = LuaCode::Kind::kFunction;
  code->chunkname = "=function";
  const std::string& arg = n.args[0];
  if (arg.find('$') == std::string::npos) {
    code->source = arg;
    return true;
  }
  if (arg.size() == 2 && arg[0] == '$' && arg[1] >= '1' && arg[1] <= '9') {
    if (!st.location->regex) {
      err->assign("\"").append(arg).append("\" in \"content_by_function\" needs a regex location");
      return false;
    }
    code->capture = arg[1] - '0';
    return true;
  }
  auto name = std::make_shared<ComplexValue>();
  if (!compileComplexValue(n.args[0], name.get(), err, st.variables())) return false;
  code->path = std::move(name);
  return true;
}

// lua_budget_timeout: a duration, or off (0).
bool parseBudget(std::string_view text, uint64_t* out) {
  if (text == "off") {
    *out = 0;
    return true;
  }
  return parseDurationMs(text, out);
}

bool onSandboxPcall(const ConfNode& n, BuildState& st, std::string* err) {
  return parseFlag(n, &st.http->lua.sandbox.pcall, err);
}

template <std::vector<std::string> SandboxConf::*Field>
bool onSandboxNames(const ConfNode& n, BuildState& st, std::string* err) {
  std::vector<std::string>& names = st.http->lua.sandbox.*Field;
  names.insert(names.end(), n.args.begin(), n.args.end());
  (void)err;
  return true;
}

// ssl_certificate_by_lua*: http or server, once per block.
bool onSslCertificateLua(const ConfNode& n, BuildState& st, std::string* err) {
  std::optional<LuaCode>& slot = st.settings().ssl.certificate_lua;
  if (!notDuplicate(slot, n, err)) return false;
  slot = LuaCode{};
  return setCode(n, st, &*slot, err);
}

// balancer_by_lua*: inside upstream { }, once per block.
bool onBalancer(const ConfNode& n, BuildState& st, std::string* err) {
  return setCode(n, st, &st.upstream->balancer_lua, err);
}

// set_by_lua $var '<code>' [$arg...]; set_by_lua_file $var <path> [$arg...];
// set_by_lua_block $var { <code> }. It joins the block's rewrite-module list
// and declares $var (declareVariables() saw it before the build).
bool onSetByLua(const ConfNode& n, BuildState& st, std::string* err) {
  RewriteAction a;
  a.kind = RewriteAction::Kind::kSetByLua;
  a.where = n.where();
  if (!assignableVariable(n, st, &a.target, err)) return false;
  if (!setCode(n, st, &a.lua, err, 1)) return false;
  size_t first_arg = n.lua_block ? n.args.size() : 2;
  for (size_t i = first_arg; i < n.args.size(); i++) {
    ComplexValue v;
    if (!compileComplexValue(n.args[i], &v, err, st.variables())) return false;
    a.lua_args.push_back(std::move(v));
  }
  rewriteActions(st).push_back(std::move(a));
  return true;
}

// ";;" stands for the default path and "$prefix" for the prefix, as in OpenResty.
bool onPackagePath(const ConfNode& n, BuildState& st, std::string* err) {
  std::string& target = n.name == "lua_package_path" ? st.http->lua.package_path : st.http->lua.package_cpath;
  if (!target.empty()) {
    *err = "\"" + n.name + "\" directive is duplicate";
    return false;
  }
  std::string v = n.args[0];
  for (size_t pos = v.find("$prefix"); pos != std::string::npos; pos = v.find("$prefix", pos)) {
    v.replace(pos, 7, st.config->prefix);
  }
  target = v;
  return true;
}

bool onCodeCache(const ConfNode& n, BuildState& st, std::string* err) {
  return parseFlag(n, &st.http->lua.code_cache, err);
}

// A count with nginx's ngx_conf_set_num_slot syntax and error text.
template <uint64_t LuaConf::*Field>
bool onLuaCount(const ConfNode& n, BuildState& st, std::string* err) {
  int64_t v = 0;
  if (!parseInt(n.args[0], &v) || v < 0) {
    err->assign(1, '"').append(n.name).append("\" directive invalid number");
    return false;
  }
  st.http->lua.*Field = static_cast<uint64_t>(v);
  return true;
}

// lua_shared_dict NAME SIZE; (http): lua-nginx-module's errors. The zone is
// made by the master when the conf is loaded (shm/registry.h).
bool onSharedDict(const ConfNode& n, BuildState& st, std::string* err) {
  const std::string& name = n.args[0];
  if (name.empty()) {
    err->assign("invalid lua shared dict name \"").append(name).append("\"");
    return false;
  }
  uint64_t size = 0;
  if (!parseSize(n.args[1], &size) || size < 32 * 1024) {
    err->assign("invalid lua shared dict size \"").append(n.args[1]).append("\"");
    return false;
  }
  for (const SharedDictConf& d : st.http->lua.shared_dicts) {
    if (d.name == name) {
      err->assign("lua_shared_dict \"").append(name).append("\" is already defined as \"").append(d.name).append("\"");
      return false;
    }
  }
  st.http->lua.shared_dicts.push_back(SharedDictConf{name, size, n.where()});
  return true;
}

const Directive kLuaDirectives[] = {
    {"lua_package_path", kHttpCtx, 1, 1, false, onPackagePath},
    {"lua_package_cpath", kHttpCtx, 1, 1, false, onPackagePath},
    {"lua_code_cache", kHttpCtx, 1, 1, false, onCodeCache},
    {"lua_max_pending_timers", kHttpCtx, 1, 1, false, onLuaCount<&LuaConf::max_pending_timers>, true},
    {"lua_shared_dict", kHttpCtx, 2, 2, false, onSharedDict},
    {"lua_max_running_timers", kHttpCtx, 1, 1, false, onLuaCount<&LuaConf::max_running_timers>, true},
    {"lua_check_client_abort", kAnyHttpLevel, 1, 1, false, onFlag<&HttpSettings::lua_check_client_abort>},
    {"lua_balancer_timeout", kAnyHttpLevel, 1, 1, false, onDuration<&HttpSettings::lua_balancer_timeout_ms>},
    {"lua_budget_timeout", kAnyHttpLevel, 1, 1, false, onNumber<&HttpSettings::lua_budget_timeout_ms, parseBudget>},
    {"lua_transform_underscores_in_response_headers", kAnyHttpLevel, 1, 1, false,
     onFlag<&HttpSettings::lua_transform_underscores>},
    {"lua_socket_connect_timeout", kAnyHttpLevel, 1, 1, false, onDuration<&HttpSettings::lua_socket_connect_timeout_ms>},
    {"lua_socket_send_timeout", kAnyHttpLevel, 1, 1, false, onDuration<&HttpSettings::lua_socket_send_timeout_ms>},
    {"lua_socket_read_timeout", kAnyHttpLevel, 1, 1, false, onDuration<&HttpSettings::lua_socket_read_timeout_ms>},
    {"lua_socket_keepalive_timeout", kAnyHttpLevel, 1, 1, false,
     onDuration<&HttpSettings::lua_socket_keepalive_timeout_ms>},
    {"lua_socket_buffer_size", kAnyHttpLevel, 1, 1, false, onSize<&HttpSettings::lua_socket_buffer_size>},
    {"lua_socket_pool_size", kAnyHttpLevel, 1, 1, false, onSize<&HttpSettings::lua_socket_pool_size>},
    {"lua_socket_send_lowat", kAnyHttpLevel, 1, 1, false, onSize<&HttpSettings::lua_socket_send_lowat>},
    {"lua_socket_log_errors", kAnyHttpLevel, 1, 1, false, onFlag<&HttpSettings::lua_socket_log_errors>},
    {"lua_ssl_trusted_certificate", kAnyHttpLevel, 1, 1, false, onPath<&HttpSettings::lua_ssl_trusted_certificate>},
    {"lua_ssl_verify_depth", kAnyHttpLevel, 1, 1, false, onNumber<&HttpSettings::lua_ssl_verify_depth, parseCount>},
    {"lua_ssl_protocols", kAnyHttpLevel, 1, kAnyArgs, false, onSslProtocols<&HttpSettings::lua_ssl_protocols>},
    {"lua_ssl_ciphers", kAnyHttpLevel, 1, 1, false, onString<&HttpSettings::lua_ssl_ciphers>},
    {"lua_need_request_body", kAnyHttpLevel, 1, 1, false, onFlag<&HttpSettings::lua_need_request_body>},
    {"lua_regex_cache_max_entries", kHttpCtx, 1, 1, false, onLuaCount<&LuaConf::regex_cache_max_entries>, true},
    {"lua_regex_match_limit", kHttpCtx, 1, 1, false, onLuaCount<&LuaConf::regex_match_limit>, true},
    {"init_by_lua_block", kHttpCtx, 0, 0, true, onInit},
    {"init_by_lua", kHttpCtx, 1, 1, false, onInit},
    {"init_by_lua_file", kHttpCtx, 1, 1, false, onInit},
    {"init_worker_by_lua_block", kHttpCtx, 0, 0, true, onInitWorker},
    {"init_worker_by_lua", kHttpCtx, 1, 1, false, onInitWorker},
    {"init_worker_by_lua_file", kHttpCtx, 1, 1, false, onInitWorker},
    {"rewrite_by_lua_block", kAnyHttpLevel, 0, 0, true, onPhase<&HttpSettings::rewrite_lua>},
    {"rewrite_by_lua", kAnyHttpLevel, 1, 1, false, onPhase<&HttpSettings::rewrite_lua>},
    {"rewrite_by_lua_file", kAnyHttpLevel, 1, 1, false, onPhase<&HttpSettings::rewrite_lua>},
    {"access_by_lua_block", kAnyHttpLevel, 0, 0, true, onPhase<&HttpSettings::access_lua>},
    {"access_by_lua", kAnyHttpLevel, 1, 1, false, onPhase<&HttpSettings::access_lua>},
    {"access_by_lua_file", kAnyHttpLevel, 1, 1, false, onPhase<&HttpSettings::access_lua>},
    {"log_by_lua_block", kAnyHttpLevel, 0, 0, true, onPhase<&HttpSettings::log_lua>},
    {"log_by_lua", kAnyHttpLevel, 1, 1, false, onPhase<&HttpSettings::log_lua>},
    {"log_by_lua_file", kAnyHttpLevel, 1, 1, false, onPhase<&HttpSettings::log_lua>},
    {"header_filter_by_lua_block", kAnyHttpLevel, 0, 0, true, onPhase<&HttpSettings::header_filter_lua>},
    {"header_filter_by_lua", kAnyHttpLevel, 1, 1, false, onPhase<&HttpSettings::header_filter_lua>},
    {"header_filter_by_lua_file", kAnyHttpLevel, 1, 1, false, onPhase<&HttpSettings::header_filter_lua>},
    {"body_filter_by_lua_block", kAnyHttpLevel, 0, 0, true, onPhase<&HttpSettings::body_filter_lua>},
    {"body_filter_by_lua", kAnyHttpLevel, 1, 1, false, onPhase<&HttpSettings::body_filter_lua>},
    {"body_filter_by_lua_file", kAnyHttpLevel, 1, 1, false, onPhase<&HttpSettings::body_filter_lua>},
    {"exit_worker_by_lua_block", kHttpCtx, 0, 0, true, onExitWorker},
    {"exit_worker_by_lua", kHttpCtx, 1, 1, false, onExitWorker},
    {"exit_worker_by_lua_file", kHttpCtx, 1, 1, false, onExitWorker},
    {"set_by_lua_block", kServerCtx | kLocationCtx, 1, 1, true, onSetByLua},
    {"set_by_lua", kServerCtx | kLocationCtx, 2, kAnyArgs, false, onSetByLua},
    {"set_by_lua_file", kServerCtx | kLocationCtx, 2, kAnyArgs, false, onSetByLua},
    {"content_by_lua_block", kLocationCtx, 0, 0, true, onContent},
    {"content_by_lua", kLocationCtx, 1, 1, false, onContent},
    {"content_by_lua_file", kLocationCtx, 1, 1, false, onContent},
    {"content_by_function", kLocationCtx, 1, 1, false, onContentFunction},
    {"lua_sandbox_instructions", kAnyHttpLevel, 1, 1, false, onNumber<&HttpSettings::lua_sandbox_instructions, parseCount>},
    {"lua_sandbox_timeout", kAnyHttpLevel, 1, 1, false, onDuration<&HttpSettings::lua_sandbox_timeout_ms>},
    {"lua_sandbox_memory", kAnyHttpLevel, 1, 1, false, onSize<&HttpSettings::lua_sandbox_memory>},
    {"lua_sandbox_pcall", kHttpCtx, 1, 1, false, onSandboxPcall},
    {"lua_sandbox_shared_dicts", kHttpCtx, 1, kAnyArgs, false, onSandboxNames<&SandboxConf::shared_dicts>},
    {"lua_sandbox_modules", kHttpCtx, 1, kAnyArgs, false, onSandboxNames<&SandboxConf::modules>},
    {"ssl_certificate_by_lua_block", kHttpCtx | kServerCtx, 0, 0, true, onSslCertificateLua},
    {"ssl_certificate_by_lua", kHttpCtx | kServerCtx, 1, 1, false, onSslCertificateLua},
    {"ssl_certificate_by_lua_file", kHttpCtx | kServerCtx, 1, 1, false, onSslCertificateLua},
    {"balancer_by_lua_block", kUpstreamCtx, 0, 0, true, onBalancer},
    {"balancer_by_lua", kUpstreamCtx, 1, 1, false, onBalancer},
    {"balancer_by_lua_file", kUpstreamCtx, 1, 1, false, onBalancer},
};

}  // namespace

void registerLuaDirectives() {
  registerDirectives(kLuaDirectives, sizeof(kLuaDirectives) / sizeof(kLuaDirectives[0]));
}

}  // namespace tidegate::conf
