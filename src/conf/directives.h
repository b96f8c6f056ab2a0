// The directive registry: each feature registers its directives (name,
// allowed blocks, argument count, handler) and the builder dispatches to
// them. Adding a directive never touches the lexer, parser or builder.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "conf/ast.h"
#include "conf/config.h"

namespace tidegate::conf {

enum Context : uint32_t {
  kMainCtx = 1u << 0,
  kEventsCtx = 1u << 1,
  kHttpCtx = 1u << 2,
  kServerCtx = 1u << 3,
  kLocationCtx = 1u << 4,
  kUpstreamCtx = 1u << 5,
};
constexpr uint32_t kAnyHttpLevel = kHttpCtx | kServerCtx | kLocationCtx;

// What a handler may touch: the config under construction and the block it
// sits in. Pointers below the current level are null.
struct BuildState {
  Config* config = nullptr;
  HttpConfig* http = nullptr;
  Server* server = nullptr;
  Location* location = nullptr;
  UpstreamConf* upstream = nullptr;  // inside an upstream { } block
  uint32_t ctx = kMainCtx;
  // Where a handler that builds a nested block reports that block's error.
  ConfError* error = nullptr;

  HttpSettings& settings() const {
    if (location) return location->settings;
    if (server) return server->settings;
    return http->settings;
  }
  // Paths in the conf are relative to the prefix (nginx's rule for logs, pid...).
  std::string resolvePath(const std::string& path) const;
  // The conf's user variables, for compileComplexValue().
  const UserVariables* variables() const { return &config->http.variables; }
};

using DirectiveHandler = bool (*)(const ConfNode& node, BuildState& st, std::string* err);

constexpr int kAnyArgs = -1;

struct Directive {
  std::string_view name;
  uint32_t contexts;
  int min_args;
  int max_args;  // kAnyArgs = no upper bound
  bool block;    // takes a { } block
  DirectiveHandler handler;
  // Main-level (and events) directives that nginx refuses to see twice.
  bool once = false;
};

void registerDirectives(const Directive* list, size_t count);
// The entry for `name` in context `ctx` (or another context's, to say it is
// not allowed here); null for an unknown name.
const Directive* findDirective(std::string_view name, uint32_t ctx);

// Walks `nodes` in context `st.ctx`, checking each node against the registry
// and calling its handler. The first error stops the walk; *err says where.
bool buildBlock(const std::vector<ConfNode>& nodes, BuildState& st, ConfError* err);

// Value parsers with nginx's syntax.
bool parseDurationMs(std::string_view text, uint64_t* out);  // "75s", "1m30s", "500ms", "10"
bool parseSize(std::string_view text, uint64_t* out);        // "1m", "8k", "1024"
bool parseFlag(const ConfNode& node, bool* out, std::string* err);  // on|off
bool parseInt(std::string_view text, int64_t* out);
bool parseCount(std::string_view text, uint64_t* out);       // a non-negative integer
std::string lowerCase(std::string text);                      // ASCII
// listen's address: "host:port", "port", "host" (port 80), "[v6]:port",
// "unix:/path"; "*" is 0.0.0.0 and "localhost" 127.0.0.1. Only the address
// fields are set.
bool parseListenAddress(const std::string& addr, Listen* out);

// nginx refuses a single-value directive given twice in one block.
template <typename T>
bool notDuplicate(const std::optional<T>& field, const ConfNode& n, std::string* err) {
  if (!field) return true;
  err->assign(1, '"').append(n.name).append("\" directive is duplicate");
  return false;
}

// The settings object a member pointer of the http levels belongs to, in
// the block being built: HttpSettings itself or its nested ProxySettings.
template <typename S>
S& settingsOf(BuildState& st);
template <>
inline HttpSettings& settingsOf<HttpSettings>(BuildState& st) { return st.settings(); }
template <>
inline ProxySettings& settingsOf<ProxySettings>(BuildState& st) { return st.settings().proxy; }
template <>
inline SslSettings& settingsOf<SslSettings>(BuildState& st) { return st.settings().ssl; }

template <typename M>
struct MemberOf;
template <typename S, typename T>
struct MemberOf<T S::*> {
  using Settings = S;
};

// The field `Field` (&HttpSettings::x or &ProxySettings::x) of the block being built.
template <auto Field>
auto& settingsField(BuildState& st) {
  return settingsOf<typename MemberOf<decltype(Field)>::Settings>(st).*Field;
}

// A single number-like setting of the http levels (a std::optional<uint64_t>
// member of HttpSettings or ProxySettings): a duration (parseDurationMs), a
// size or rate (parseSize) or a count (parseCount).
template <auto Field, bool (*Parse)(std::string_view, uint64_t*)>
bool onNumber(const ConfNode& n, BuildState& st, std::string* err) {
  std::optional<uint64_t>& field = settingsField<Field>(st);
  if (!notDuplicate(field, n, err)) return false;
  uint64_t v = 0;
  if (!Parse(n.args[0], &v)) {
    err->assign("invalid value \"").append(n.args[0]).append("\" in \"").append(n.name).append("\" directive");
    return false;
  }
  field = v;
  return true;
}
template <auto Field>
constexpr DirectiveHandler onDuration = onNumber<Field, parseDurationMs>;
template <auto Field>
constexpr DirectiveHandler onSize = onNumber<Field, parseSize>;

// An on|off setting of the http levels (a std::optional<bool> member of
// HttpSettings or ProxySettings).
template <auto Field>
bool onFlag(const ConfNode& n, BuildState& st, std::string* err) {
  std::optional<bool>& field = settingsField<Field>(st);
  if (!notDuplicate(field, n, err)) return false;
  bool v = false;
  if (!parseFlag(n, &v, err)) return false;
  field = v;
  return true;
}

// A file path setting of the http levels (a std::optional<std::string>
// member); a relative path is under the prefix.
template <auto Field>
bool onPath(const ConfNode& n, BuildState& st, std::string* err) {
  std::optional<std::string>& field = settingsField<Field>(st);
  if (!notDuplicate(field, n, err)) return false;
  field = st.resolvePath(n.args[0]);
  return true;
}

// A string setting of the http levels, taken as written.
template <auto Field>
bool onString(const ConfNode& n, BuildState& st, std::string* err) {
  std::optional<std::string>& field = settingsField<Field>(st);
  if (!notDuplicate(field, n, err)) return false;
  field = n.args[0];
  return true;
}

// The arguments of lua_ssl_protocols / proxy_ssl_protocols (nginx's names
// SSLv2 ... TLSv1.3) as kSslV2 | ... | kTlsV1_3. False with *err set.
bool parseSslProtocols(const ConfNode& n, uint64_t* bits, std::string* err);
template <auto Field>
bool onSslProtocols(const ConfNode& n, BuildState& st, std::string* err) {
  std::optional<uint64_t>& field = settingsField<Field>(st);
  if (!notDuplicate(field, n, err)) return false;
  uint64_t bits = 0;
  if (!parseSslProtocols(n, &bits, err)) return false;
  field = bits;
  return true;
}

// Registers the directives of the foundation (core, events, http, server, location).
void registerCoreDirectives();
// Registers the Lua runtime's directives (conf/lua_directives.cc).
void registerLuaDirectives();
// Registers set and return (conf/rewrite_directives.cc).
void registerRewriteDirectives();
// Registers upstream { } and what goes in it (conf/upstream_directives.cc).
void registerUpstreamDirectives();
// Registers proxy_pass and the proxy_* settings (conf/proxy_directives.cc).
void registerProxyDirectives();
void registerSslDirectives();
void registerAdminDirectives();
// The step of proxy_pass that needs the whole http block built (an upstream
// block may follow the server that names it): a fixed target that names no
// upstream block is resolved into ProxyPass::addresses. False with *err set.
bool resolveProxyPasses(HttpConfig& http, ConfError* err);
// After the merge: every proxy_ssl_certificate loads with its key and they
// match (checked once per distinct pair). False with *err at the
// directive's file:line.
bool checkProxyCertificates(const HttpConfig& http, ConfError* err);

// Declares every variable that `set` or `set_by_lua*` assigns anywhere in
// `nodes`, before the build, so that any value may name it (nginx resolves
// variable names once the whole conf is read).
void declareVariables(const std::vector<ConfNode>& nodes, UserVariables* vars);
// The variable a set or set_by_lua* directive assigns (its first argument,
// "$name"): a declared user variable, or the one changeable built-in ($args).
// False with nginx's error text otherwise.
bool assignableVariable(const ConfNode& n, const BuildState& st, VarRef* out, std::string* err);
// The rewrite-module list of the block being built (server or location).
std::vector<RewriteAction>& rewriteActions(BuildState& st);

}  // namespace tidegate::conf
