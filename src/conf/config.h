// The immutable configuration model. Built once per load by conf/builder.h,
// then shared read-only (std::shared_ptr<const Config>) by the master and
// every worker. Later features add fields here and directives in their own
// files (see directives.h); the parser core does not change.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "conf/complex_value.h"
#include "conf/regex.h"
#include "tls/certificate.h"

namespace tidegate::conf {

// Lua code from the conf: an inline block/string or a file. The chunk name
// follows OpenResty's ("init_by_lua(tidegate.conf:12)", or "@path" for files)
// so tracebacks point at the conf.
struct LuaCode {
  // kFunction: content_by_function; `source` is the function's name, or
  // `path` evaluates to it per request.
  enum class Kind { kNone, kInline, kFile, kFunction };
  Kind kind = Kind::kNone;
  std::string source;     // the code (inline) or the absolute path (file)
  std::string chunkname;
  // *_by_lua_file with variables in its path: evaluated per request (a
  // relative result against `prefix`), as OpenResty does; source is empty.
  std::shared_ptr<const ComplexValue> path;
  std::string prefix;
  // content_by_function $N: capture N of the location's regex (this conf
  // has no general regex-capture variables yet).
  int capture = -1;
  bool empty() const { return kind == Kind::kNone; }
};

// lua_shared_dict NAME SIZE: a zone of shared memory holding ngx.shared.NAME.
struct SharedDictConf {
  std::string name;
  uint64_t size = 0;
  std::string where;  // file:line
};

// http-level Lua settings (lua_package_path and friends, init phases).
// What sandboxed functions (content_by_function) may use and spend: the
// lua_sandbox_* directives (http level). Budgets are per request; 0 turns
// one off.
// The sandbox of content_by_function, one per VM (http level). Its budgets
// are per location: HttpSettings::lua_sandbox_*.
struct SandboxConf {
  bool pcall = false;                // pcall/xpcall wrappers that cannot catch a budget kill
  std::vector<std::string> shared_dicts;  // ngx.shared.NAME reachable from the sandbox
  std::vector<std::string> modules;       // require()-able from the sandbox
};

struct LuaConf {
  std::string package_path;   // "" = LuaJIT's default; ";;" expanded to it
  std::string package_cpath;
  bool code_cache = true;
  LuaCode init;               // init_by_lua*: master, before fork
  LuaCode init_worker;        // init_worker_by_lua*: each worker
  LuaCode exit_worker;        // exit_worker_by_lua*: each worker, as it exits
  uint64_t max_pending_timers = 1024;  // lua_max_pending_timers
  uint64_t max_running_timers = 256;   // lua_max_running_timers
  // ngx.re: compile-once ("o") cache size per worker, and PCRE2's match
  // limit (0: PCRE2's default).
  uint64_t regex_cache_max_entries = 1024;
  uint64_t regex_match_limit = 0;
  std::vector<SharedDictConf> shared_dicts;  // lua_shared_dict, in conf order
  SandboxConf sandbox;
};

struct LogFormat {
  std::string name;
  ComplexValue format;
};

struct AccessLogTarget {
  std::string path;  // absolute
  std::shared_ptr<const LogFormat> format;
};

// proxy_next_upstream's conditions (a bit set).
enum NextUpstream : uint32_t {
  kNextError = 1u << 0,
  kNextTimeout = 1u << 1,
  kNextInvalidHeader = 1u << 2,
  kNextHttp500 = 1u << 3,
  kNextHttp502 = 1u << 4,
  kNextHttp503 = 1u << 5,
  kNextHttp504 = 1u << 6,
  kNextHttp403 = 1u << 7,
  kNextHttp404 = 1u << 8,
  kNextHttp429 = 1u << 9,
  kNextNonIdempotent = 1u << 10,
  kNextOff = 1u << 31,  // `off` alone: never retry
};

// The condition that names an upstream response status (http_502...), or
// 0 for a status proxy_next_upstream cannot name.
inline uint32_t nextUpstreamForStatus(int status) {
  switch (status) {
    case 500: return kNextHttp500;
    case 502: return kNextHttp502;
    case 503: return kNextHttp503;
    case 504: return kNextHttp504;
    case 403: return kNextHttp403;
    case 404: return kNextHttp404;
    case 429: return kNextHttp429;
    default: return 0;
  }
}

// One proxy_set_header: the value is evaluated per request; an empty
// result drops the header (nginx's rule).
struct ProxyHeader {
  std::string name;        // as written
  std::string lower;       // lower-cased, for matching
  ComplexValue value;
};

// The proxy_* settings of the http levels, inherited as nginx merges them
// (a list given at a level replaces its parent's whole list).
struct ProxySettings {
  std::optional<std::vector<ProxyHeader>> set_headers;     // proxy_set_header
  std::optional<bool> pass_request_headers;                // on
  std::optional<bool> pass_request_body;                   // on
  std::optional<std::vector<std::string>> hide_headers;    // proxy_hide_header, lower-cased
  std::optional<std::vector<std::string>> pass_headers;    // proxy_pass_header, lower-cased
  // proxy_http_version: 10 or 11. tidegate's default is 11 with pooled
  // connections (nginx's is 10 and Connection: close); an explicit 1.0
  // keeps nginx's Connection: close.
  std::optional<int> http_version;
  std::optional<uint64_t> connect_timeout_ms;              // 60s
  std::optional<uint64_t> send_timeout_ms;                 // 60s
  std::optional<uint64_t> read_timeout_ms;                 // 60s
  std::optional<bool> buffering;                           // on
  std::optional<uint64_t> buffer_size;                     // proxy_buffer_size: 4k (the response head must fit)
  std::optional<uint64_t> buffers_number;                  // proxy_buffers: 8
  std::optional<uint64_t> buffers_size;                    //                4k
  std::optional<bool> request_buffering;                   // on
  std::optional<uint32_t> next_upstream;                   // kNextError | kNextTimeout
  std::optional<uint64_t> next_upstream_tries;             // 0: unlimited
  std::optional<uint64_t> next_upstream_timeout_ms;        // 0: unlimited
  std::optional<bool> intercept_errors;                    // off
  std::optional<bool> ignore_client_abort;                 // off

  // Upstream TLS (proxy_pass https://...): the proxy_ssl_* directives.
  // Unlike nginx, the upstream's certificate is verified by default.
  std::optional<bool> ssl_verify;                          // on
  std::optional<std::string> ssl_trusted_certificate;      // absolute path; unset: the system's CA store
  std::optional<uint64_t> ssl_verify_depth;                // 1 (leaf, one intermediate, root)
  std::optional<bool> ssl_server_name;                     // off: no SNI
  std::optional<ComplexValue> ssl_name;                    // unset: the host of proxy_pass
  std::optional<std::string> ssl_certificate;              // client certificate (absolute path)
  std::optional<std::string> ssl_certificate_key;          // its key (absolute path)
  std::string ssl_trusted_certificate_where;               // file:line of the files' directives, for load errors
  std::string ssl_certificate_where;
  std::string ssl_certificate_key_where;
  std::optional<uint64_t> ssl_protocols;                   // kTlsV1_2 | kTlsV1_3
  std::optional<std::string> ssl_ciphers;                  // DEFAULT
  std::optional<bool> ssl_session_reuse;                   // on

  void inheritFrom(const ProxySettings& parent);
  void fillDefaults();
};

// proxy_pass's target. A fixed one is parsed at load; one with variables
// is evaluated per request and parsed the same way then.
struct ProxyPass {
  std::string where;  // file:line
  bool has_vars = false;
  ComplexValue value;      // has_vars: the whole argument
  // Fixed target: "http://" or "https://", host [":" port] [uri].
  bool https = false;
  std::string host;        // as written (an upstream name, a host name or an address)
  uint16_t port = 80;
  bool port_given = false;
  bool has_uri = false;    // a URI part, even "/": it replaces the location's prefix
  std::string uri;
  // host:port resolved at load when `host` is not an upstream block's name
  // and resolves ("ip:port"); empty for a name that may be created later.
  std::vector<std::string> addresses;
};

// lua_ssl_protocols' names, as bits of HttpSettings::lua_ssl_protocols.
constexpr uint64_t kSslV2 = 1, kSslV3 = 2, kTlsV1 = 4, kTlsV1_1 = 8, kTlsV1_2 = 16, kTlsV1_3 = 32;

// ssl_session_cache: off | none | [builtin[:size]] [shared:name:size] (a
// shared zone holds the sessions of every worker; servers naming the same
// zone share it; docs/tls.md).
struct SslSessionCacheConf {
  bool off = false;          // "off": no cache, and clients are told so
  bool builtin = false;      // per-worker OpenSSL cache
  uint64_t builtin_size = 20480;  // sessions
  std::string zone;          // shared:NAME:SIZE; empty: none
  uint64_t zone_size = 0;    // bytes
  std::string where;         // file:line of the directive
};

// The downstream TLS of a server (http and server levels; docs/tls.md).
// The certificates, protocols, ciphers and session settings of a port are
// its default server's; the certificate of a handshake follows SNI.
struct SslSettings {
  // ssl_certificate / ssl_certificate_key pairs by position (absolute paths).
  std::optional<std::vector<std::string>> certificate_files;
  std::optional<std::vector<std::string>> key_files;
  std::optional<uint64_t> protocols;  // kTlsV1_2 | kTlsV1_3 (the default)
  std::optional<std::string> ciphers;
  std::optional<bool> prefer_server_ciphers;
  std::optional<std::string> ecdh_curve;  // "auto" (OpenSSL's list) or "X25519:prime256v1..."
  std::optional<std::string> dhparam;     // a PEM file of DH parameters (for DHE ciphers); "" none
  std::optional<SslSessionCacheConf> session_cache;
  std::optional<bool> session_tickets;
  std::optional<uint64_t> session_timeout_ms;
  // ssl_session_ticket_key files (absolute paths): the first seals, all
  // open. None: keys in shared memory, rotated (docs/tls.md).
  std::optional<std::vector<std::string>> session_ticket_keys;
  std::optional<LuaCode> certificate_lua;  // ssl_certificate_by_lua*
  std::string where;  // file:line of the first ssl_certificate, for load errors

  void inheritFrom(const SslSettings& parent);
  void fillDefaults();
};

// Settings that http, server and location levels share and inherit, with
// nginx's merge rule: a level that does not set one takes its parent's.
struct HttpSettings {
  std::optional<std::string> default_type;
  std::optional<uint64_t> keepalive_timeout_ms;
  std::optional<uint64_t> keepalive_header_s;  // keepalive_timeout's 2nd value: "Keep-Alive: timeout=N" (0: none)
  std::optional<uint64_t> keepalive_requests;
  std::optional<uint64_t> client_header_timeout_ms;
  std::optional<uint64_t> client_body_timeout_ms;
  std::optional<uint64_t> send_timeout_ms;
  // Minimum average rates in bytes/s (0: off), checked after a 1 s grace.
  std::optional<uint64_t> client_body_min_rate;
  std::optional<uint64_t> send_min_rate;
  std::optional<uint64_t> client_max_body_size;
  // A request body kept for Lua stays in memory up to this many bytes,
  // beyond that it goes to a file under client_body_temp_path (absolute).
  std::optional<uint64_t> client_body_buffer_size;
  std::optional<std::string> client_body_temp_path;
  std::optional<bool> server_tokens;
  std::optional<bool> lua_check_client_abort;
  // How long balancer_by_lua* may wait on cosockets per try (beyond OpenResty).
  std::optional<uint64_t> lua_balancer_timeout_ms;
  // lua_budget_timeout: wall clock for each trusted Lua handler run (0: off;
  // lua/watchdog.h).
  std::optional<uint64_t> lua_budget_timeout_ms;
  // lua_sandbox_*: the budgets of one request of a sandboxed function (0: no
  // limit). Instructions of the Lua VM (a debug hook counts them); wall clock
  // from start to end; bytes allocated (a running total, frees give none back).
  std::optional<uint64_t> lua_sandbox_instructions;
  std::optional<uint64_t> lua_sandbox_timeout_ms;
  std::optional<uint64_t> lua_sandbox_memory;
  std::optional<bool> lua_transform_underscores;  // lua_transform_underscores_in_response_headers
  // lua_socket_*: the cosocket defaults (OpenResty's values; used by ngx.socket.*).
  std::optional<uint64_t> lua_socket_connect_timeout_ms;
  std::optional<uint64_t> lua_socket_send_timeout_ms;
  std::optional<uint64_t> lua_socket_read_timeout_ms;
  std::optional<uint64_t> lua_socket_keepalive_timeout_ms;
  std::optional<uint64_t> lua_socket_buffer_size;
  std::optional<uint64_t> lua_socket_pool_size;
  std::optional<uint64_t> lua_socket_send_lowat;
  std::optional<bool> lua_socket_log_errors;
  // lua_ssl_*: the client TLS of cosockets (sslhandshake).
  std::optional<std::string> lua_ssl_trusted_certificate;  // absolute path; unset: nothing trusted
  std::optional<uint64_t> lua_ssl_verify_depth;
  std::optional<uint64_t> lua_ssl_protocols;  // kSslV2 | ... | kTlsV1_3
  std::optional<std::string> lua_ssl_ciphers;
  std::optional<bool> lua_need_request_body;  // the body counts as read before the Lua phases
  // access_log: unset = inherit; set and empty = off.
  std::optional<std::vector<AccessLogTarget>> access_logs;
  // rewrite_by_lua*, access_by_lua*: http, server or location, inherited.
  std::optional<LuaCode> rewrite_lua;
  std::optional<LuaCode> access_lua;
  std::optional<LuaCode> log_lua;
  std::optional<LuaCode> header_filter_lua;
  std::optional<LuaCode> body_filter_lua;
  ProxySettings proxy;
  SslSettings ssl;  // http and server levels only

  void inheritFrom(const HttpSettings& parent);
  void fillDefaults();
};

// Request head limits, configured per server (large_client_header_buffers etc.).
struct HeadLimits {
  size_t request_line = 8192;   // > this: 414
  size_t header_line = 8192;    // one field > this: 431
  size_t total = 32768;         // whole head > this: 431
  size_t max_fields = 100;      // more fields: 431
};

struct ReturnAction {
  int code = 0;
  bool has_text = false;
  ComplexValue text;  // body, or the Location for redirects
};

// One directive of nginx's rewrite module (or one that hooks into it, like
// set_by_lua*). A server's list runs before location matching, the matched
// location's after it, each in conf order, until a `return`.
struct RewriteAction {
  enum class Kind { kSet, kReturn, kSetByLua };
  Kind kind = Kind::kSet;
  std::string where;  // file:line
  VarRef target;      // kSet, kSetByLua: a user variable, or $args
  ComplexValue value;  // kSet
  ReturnAction ret;    // kReturn
  // kSetByLua: the code and its extra arguments (ngx.arg[1..n]).
  LuaCode lua;
  std::vector<ComplexValue> lua_args;
};

enum class LocationMatch { kPrefix, kExact, kNoRegex /* ^~ */, kRegex, kRegexCaseless };

struct Location {
  LocationMatch match = LocationMatch::kPrefix;
  std::string pattern;
  std::shared_ptr<const Regex> regex;
  std::string where;  // file:line
  HttpSettings settings;
  std::vector<RewriteAction> rewrite;  // not inherited by nested locations (nginx)
  LuaCode content_lua;  // content_by_lua*
  std::optional<ProxyPass> proxy_pass;
  bool admin = false;  // the admin API (only in the server made for admin_listen)
  std::vector<std::shared_ptr<Location>> children;
};

struct Listen {
  std::string host = "0.0.0.0";
  uint16_t port = 80;
  std::string unix_path;  // "unix:/path": a unix-domain socket (host empty, port 0)
  bool default_server = false;
  bool reuseport = false;
  bool ssl = false;  // TLS on this address (any server's `listen ... ssl` makes it so)
  int backlog = 511;  // nginx's default on Linux
  bool isUnix() const { return !unix_path.empty(); }
  bool ipv6() const { return host.find(':') != std::string::npos; }
  std::string key() const {
    if (isUnix()) return "unix:" + unix_path;
    return (ipv6() ? "[" + host + "]" : host) + ":" + std::to_string(port);
  }
};

struct ServerName {
  enum class Kind { kExact, kLeadingWild /* *.a.com or .a.com */, kTrailingWild /* www.a.* */, kRegex };
  Kind kind = Kind::kExact;
  std::string name;  // lower-cased; for wildcards the fixed part
  std::shared_ptr<const Regex> regex;
};

struct Server {
  std::vector<Listen> listens;
  std::vector<ServerName> names;
  std::string where;
  HttpSettings settings;
  HeadLimits limits;
  bool buffers_set = false;  // large_client_header_buffers given in this server
  bool fields_set = false;   // client_max_header_fields given in this server
  std::vector<RewriteAction> rewrite;  // server-level set, return, set_by_lua*
  std::vector<std::shared_ptr<Location>> locations;
  // ssl_certificate pairs, loaded and checked at load (every worker shares them).
  std::vector<tls::CertKeyPtr> certificates;
  std::string primaryName() const { return names.empty() ? std::string() : names[0].name; }
};

// One `server` line of an upstream block.
struct UpstreamServer {
  std::string host;  // as written (a name or an address)
  uint16_t port = 80;
  std::vector<std::string> addresses;  // resolved at load: "ip:port" (IPv6 in brackets)
  int weight = 1;
  int max_fails = 1;
  uint64_t fail_timeout_ms = 10000;
  bool backup = false;  // tier 1 unless a tier is given
  bool down = false;
  int tier = 0;
  std::string where;  // file:line
  std::string id() const { return host + ":" + std::to_string(port); }
};

// health_check [type=http|tcp] [uri=/path] [host=NAME] [interval=T]
// [unhealthy_interval=T] [timeout=T] [fails=N] [passes=N]
// [status=200-399,...] [port=N]; in an upstream (docs/health.md).
struct HealthCheckConf {
  bool enabled = false;
  bool tcp = false;      // type=tcp: a connect is the whole probe
  std::string uri = "/";
  std::string host;      // the Host header; empty: the server's host as written
  uint64_t interval_ms = 5000;
  uint64_t unhealthy_interval_ms = 0;  // 0: interval_ms
  uint64_t timeout_ms = 1000;
  int fails = 1;   // consecutive failed probes that take a server out
  int passes = 1;  // consecutive passed probes that bring it back
  std::vector<std::pair<int, int>> statuses;  // inclusive ranges; empty: 200-399
  int port = 0;    // 0: the server's own port

  bool statusOk(int status) const;
};

// upstream NAME { ... }: the servers and how to choose among them
// (src/upstream/ balancers, or balancer_by_lua*; src/proxy/ uses it).
struct UpstreamConf {
  std::string name;
  std::string where;
  std::vector<UpstreamServer> servers;
  std::string balancer = "round_robin";  // round_robin | chash | least_conn | ewma | lua
  std::string balancer_module;           // lua: the module (pushed or on lua_package_path)
  std::optional<ComplexValue> hash_key;  // chash
  bool fail_open = false;
  int tier_min_healthy = 0;  // percent
  // Idle connections cached per worker and peer; 0 (the default): sized
  // from demand (as many as were busy at once), each closed after
  // keepalive_timeout idle. tidegate pools by default; nginx does not.
  uint64_t keepalive = 0;
  uint64_t keepalive_timeout_ms = 60000;
  uint64_t keepalive_requests = 1000;
  // pool_conns, pool_wait: past `pool_conns` connections open to a peer
  // (per worker), a try that finds none idle waits up to `pool_wait` for
  // one to come back before it opens another (0 in either: never waits).
  uint64_t pool_conns = 64;
  uint64_t pool_wait_ms = 100;
  bool balancer_set = false;
  // balancer_by_lua*: runs before every try; a peer it sets replaces the
  // balancer's pick (which remains the fallback).
  LuaCode balancer_lua;
  HealthCheckConf health_check;
};

// admin_listen, admin_token, state_dir (docs/admin-api.md). The loader
// makes a server of its own for the admin listener (one location served by
// the admin API), in a listen group no data-plane server shares.
constexpr uint64_t kAdminMaxBody = 8u << 20;  // a request body to the admin API

struct AdminConf {
  bool enabled = false;
  Listen listen;
  std::string token;      // the value (admin_token env:NAME is read at load)
  std::string state_dir;  // absolute; default <prefix>/state
  uint64_t lua_history = 10;  // lua_module_history: versions kept per pushed module
  std::string where;      // admin_listen's file:line
};

struct HttpConfig {
  HttpSettings settings;
  LuaConf lua;
  HeadLimits limits;
  bool buffers_set = false;
  bool fields_set = false;
  std::vector<std::shared_ptr<const LogFormat>> log_formats;
  std::vector<std::shared_ptr<Server>> servers;
  std::vector<std::shared_ptr<UpstreamConf>> upstreams;
  UserVariables variables;  // set / set_by_lua* targets, declared before the build
  AdminConf admin;
};

struct Config {
  std::string prefix;     // ends without '/'
  std::string conf_file;  // absolute
  bool daemon = true;
  bool master_process = true;
  int worker_processes = 1;
  std::string error_log = "logs/error.log";  // absolute after load
  bool error_log_set = false;                 // given in the conf (wins over -e)
  uint64_t worker_rlimit_nofile = 0;          // 0: inherit the limit
  std::vector<std::string> files;             // every conf file read, for -T
  std::set<std::string> seen_once;            // builder bookkeeping: single-use directives seen
  std::string error_log_level = "error";
  std::string pid_file = "logs/tidegate.pid";
  int worker_connections = 512;
  uint64_t worker_shutdown_timeout_ms = 0;  // 0: wait for in-flight requests forever
  bool has_http = false;
  HttpConfig http;

  // Every distinct listen address with the server blocks on it.
  struct ListenGroup {
    Listen listen;
    std::vector<std::shared_ptr<const Server>> servers;
    std::shared_ptr<const Server> default_server;
    // As nginx does, a specific address on a port that also has a wildcard
    // listen is not bound itself: it is served through the wildcard's
    // socket (this index into listen_groups), chosen by local address.
    int via = -1;
  };
  std::vector<ListenGroup> listen_groups;
};

using ConfigPtr = std::shared_ptr<const Config>;

// Calls fn(location) for every location of `locs`, nested ones too, parents first.
template <typename Fn>
void forEachLocation(const std::vector<std::shared_ptr<Location>>& locs, Fn&& fn) {
  for (const auto& l : locs) {
    fn(*l);
    forEachLocation(l->children, fn);
  }
}

// Calls fn(settings) for the http level, every server and every location.
template <typename Fn>
void forEachSettings(const HttpConfig& http, Fn&& fn) {
  fn(http.settings);
  for (const auto& srv : http.servers) {
    fn(srv->settings);
    forEachLocation(srv->locations, [&](const Location& l) { fn(l.settings); });
  }
}

}  // namespace tidegate::conf
