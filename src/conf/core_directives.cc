// Directives of the foundation, with nginx's meaning and defaults.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>

#include "conf/directives.h"

namespace tidegate::conf {
namespace {

// --- main ---------------------------------------------------------------

bool onDaemon(const ConfNode& n, BuildState& st, std::string* err) {
  return parseFlag(n, &st.config->daemon, err);
}

bool onMasterProcess(const ConfNode& n, BuildState& st, std::string* err) {
  return parseFlag(n, &st.config->master_process, err);
}

bool onWorkerProcesses(const ConfNode& n, BuildState& st, std::string* err) {
  if (n.args[0] == "auto") {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    st.config->worker_processes = cpus > 0 ? static_cast<int>(cpus) : 1;
    return true;
  }
  int64_t v = 0;
  if (!parseInt(n.args[0], &v) || v < 1 || v > 1024) {
    *err = "invalid value \"" + n.args[0] + "\" in \"worker_processes\" directive";
    return false;
  }
  st.config->worker_processes = static_cast<int>(v);
  return true;
}

bool onErrorLog(const ConfNode& n, BuildState& st, std::string* err) {
  st.config->error_log = st.resolvePath(n.args[0]);
  st.config->error_log_set = true;
  if (n.args.size() > 1) {
    static const char* kLevels[] = {"debug", "info", "notice", "warn", "error", "crit", "alert", "emerg"};
    if (std::find(std::begin(kLevels), std::end(kLevels), n.args[1]) == std::end(kLevels)) {
      *err = "invalid log level \"" + n.args[1] + "\"";
      return false;
    }
    st.config->error_log_level = n.args[1];
  }
  return true;
}

bool onPid(const ConfNode& n, BuildState& st, std::string*) {
  st.config->pid_file = n.args[0] == "off" ? "" : st.resolvePath(n.args[0]);
  return true;
}

bool onWorkerShutdownTimeout(const ConfNode& n, BuildState& st, std::string* err) {
  if (!parseDurationMs(n.args[0], &st.config->worker_shutdown_timeout_ms)) {
    *err = "invalid value \"" + n.args[0] + "\" in \"worker_shutdown_timeout\" directive";
    return false;
  }
  return true;
}

bool onWorkerRlimitNofile(const ConfNode& n, BuildState& st, std::string* err) {
  int64_t v = 0;
  if (!parseInt(n.args[0], &v) || v < 16) {
    *err = "invalid value \"" + n.args[0] + "\" in \"worker_rlimit_nofile\" directive";
    return false;
  }
  st.config->worker_rlimit_nofile = static_cast<uint64_t>(v);
  return true;
}

bool onEvents(const ConfNode& n, BuildState& st, std::string*) {
  BuildState inner = st;
  inner.ctx = kEventsCtx;
  return buildBlock(n.children, inner, st.error);
}

bool onWorkerConnections(const ConfNode& n, BuildState& st, std::string* err) {
  int64_t v = 0;
  if (!parseInt(n.args[0], &v) || v < 2 || v > 1000000) {
    *err = "invalid value \"" + n.args[0] + "\" in \"worker_connections\" directive";
    return false;
  }
  st.config->worker_connections = static_cast<int>(v);
  return true;
}

// --- http-level values -----------------------------------------------------

bool onHttp(const ConfNode& n, BuildState& st, std::string* err) {
  if (st.config->has_http) {
    *err = "\"http\" directive is duplicate";
    return false;
  }
  st.config->has_http = true;
  BuildState inner = st;
  inner.ctx = kHttpCtx;
  inner.http = &st.config->http;
  auto combined = std::make_shared<LogFormat>();
  combined->name = "combined";
  compileComplexValue(
      "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent "
      "\"$http_referer\" \"$http_user_agent\"",
      &combined->format, err);
  st.config->http.log_formats.push_back(std::move(combined));
  return buildBlock(n.children, inner, st.error);
}

bool onKeepaliveTimeout(const ConfNode& n, BuildState& st, std::string* err) {
  if (!notDuplicate(st.settings().keepalive_timeout_ms, n, err)) return false;
  uint64_t ms = 0, header_ms = 0;
  for (size_t i = 0; i < n.args.size(); i++) {
    if (!parseDurationMs(n.args[i], i == 0 ? &ms : &header_ms)) {
      *err = "invalid value \"" + n.args[i] + "\" in \"keepalive_timeout\" directive";
      return false;
    }
  }
  st.settings().keepalive_timeout_ms = ms;
  st.settings().keepalive_header_s = header_ms / 1000;
  return true;
}

bool onKeepaliveRequests(const ConfNode& n, BuildState& st, std::string* err) {
  if (!notDuplicate(st.settings().keepalive_requests, n, err)) return false;
  int64_t v = 0;
  if (!parseInt(n.args[0], &v) || v < 0) {
    *err = "invalid value \"" + n.args[0] + "\" in \"keepalive_requests\" directive";
    return false;
  }
  st.settings().keepalive_requests = static_cast<uint64_t>(v);
  return true;
}

bool onDefaultType(const ConfNode& n, BuildState& st, std::string* err) {
  if (!notDuplicate(st.settings().default_type, n, err)) return false;
  st.settings().default_type = n.args[0];
  return true;
}

// client_body_temp_path path [level1 [level2 [level3]]]: relative to the
// prefix. The levels (nginx's hashed subdirectories) are accepted and not
// used: tidegate keeps every file in `path`.
bool onClientBodyTempPath(const ConfNode& n, BuildState& st, std::string* err) {
  if (!notDuplicate(st.settings().client_body_temp_path, n, err)) return false;
  for (size_t i = 1; i < n.args.size(); i++) {
    int64_t level = 0;
    if (!parseInt(n.args[i], &level) || level < 1 || level > 2) {
      *err = "invalid value \"" + n.args[i] + "\" in \"" + n.name + "\" directive";
      return false;
    }
  }
  std::string path = st.resolvePath(n.args[0]);
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  st.settings().client_body_temp_path = path;
  return true;
}


HeadLimits& currentLimits(BuildState& st) { return st.server ? st.server->limits : st.http->limits; }

bool onLargeClientHeaderBuffers(const ConfNode& n, BuildState& st, std::string* err) {
  int64_t num = 0;
  uint64_t size = 0;
  if (!parseInt(n.args[0], &num) || num < 1 || !parseSize(n.args[1], &size) || size < 64) {
    *err = "invalid value in \"large_client_header_buffers\" directive";
    return false;
  }
  HeadLimits& l = currentLimits(st);
  bool& set = st.server ? st.server->buffers_set : st.http->buffers_set;
  if (set) {
    *err = "\"large_client_header_buffers\" directive is duplicate";
    return false;
  }
  set = true;
  l.request_line = size;
  l.header_line = size;
  l.total = size * static_cast<uint64_t>(num);
  return true;
}

bool onClientMaxHeaderFields(const ConfNode& n, BuildState& st, std::string* err) {
  int64_t v = 0;
  if (!parseInt(n.args[0], &v) || v < 1) {
    *err = "invalid value \"" + n.args[0] + "\" in \"client_max_header_fields\" directive";
    return false;
  }
  bool& set = st.server ? st.server->fields_set : st.http->fields_set;
  if (set) {
    *err = "\"client_max_header_fields\" directive is duplicate";
    return false;
  }
  set = true;
  currentLimits(st).max_fields = static_cast<size_t>(v);
  return true;
}

bool onLogFormat(const ConfNode& n, BuildState& st, std::string* err) {
  auto fmt = std::make_shared<LogFormat>();
  fmt->name = n.args[0];
  size_t first = 1;
  if (n.args.size() > 1 && n.args[1].rfind("escape=", 0) == 0) {
    if (n.args[1] != "escape=default") {
      *err = "unsupported \"" + n.args[1] + "\" in \"log_format\" directive (only escape=default)";
      return false;
    }
    first = 2;
  }
  if (first >= n.args.size()) {
    *err = "invalid number of arguments in \"log_format\" directive";
    return false;
  }
  std::string text;
  for (size_t i = first; i < n.args.size(); i++) text += n.args[i];
  for (const auto& f : st.http->log_formats) {
    if (f->name == fmt->name) {
      *err = "duplicate \"log_format\" name \"" + fmt->name + "\"";
      return false;
    }
  }
  if (!compileComplexValue(text, &fmt->format, err, st.variables())) return false;
  st.http->log_formats.push_back(std::move(fmt));
  return true;
}

bool onAccessLog(const ConfNode& n, BuildState& st, std::string* err) {
  auto& logs = st.settings().access_logs;
  if (n.args[0] == "off") {
    if (n.args.size() != 1) {
      *err = "invalid parameter \"" + n.args[1] + "\"";
      return false;
    }
    logs = std::vector<AccessLogTarget>{};
    return true;
  }
  if (n.args.size() > 2) {
    *err = "invalid parameter \"" + n.args[2] + "\" (buffer=, flush= and if= are not supported yet)";
    return false;
  }
  if (n.args[0].rfind("syslog:", 0) == 0) {
    *err = "syslog access logs are not supported yet";
    return false;
  }
  if (n.args[0].find('$') != std::string::npos) {
    *err = "variables in access_log paths are not supported yet";
    return false;
  }
  std::string fmt_name = n.args.size() > 1 ? n.args[1] : "combined";
  std::shared_ptr<const LogFormat> fmt;
  for (const auto& f : st.http->log_formats) {
    if (f->name == fmt_name) fmt = f;
  }
  if (!fmt) {
    *err = "unknown log format \"" + fmt_name + "\"";
    return false;
  }
  if (!logs) logs = std::vector<AccessLogTarget>{};
  logs->push_back(AccessLogTarget{st.resolvePath(n.args[0]), fmt});
  return true;
}

// --- server ----------------------------------------------------------------

bool onServer(const ConfNode& n, BuildState& st, std::string*) {
  auto server = std::make_shared<Server>();
  server->where = n.where();
  st.http->servers.push_back(server);
  BuildState inner = st;
  inner.ctx = kServerCtx;
  inner.server = server.get();
  return buildBlock(n.children, inner, st.error);
}

bool parsePort(std::string_view text, uint16_t* port) {
  int64_t v = 0;
  if (!parseInt(text, &v) || v < 1 || v > 65535) return false;
  *port = static_cast<uint16_t>(v);
  return true;
}

}  // namespace

bool parseListenAddress(const std::string& addr, Listen* out) {
  Listen& l = *out;
  if (addr.rfind("unix:", 0) == 0) {
    l.unix_path = addr.substr(5);
    l.host.clear();
    l.port = 0;
    return l.unix_path.size() > 1 && l.unix_path.size() < 108;  // sun_path
  }
  bool ok = !addr.empty();
  if (ok && addr.front() == '[') {
    size_t close = addr.find(']');
    ok = close != std::string::npos;
    if (ok) {
      l.host = addr.substr(1, close - 1);
      ok = close + 1 == addr.size() ? true : (addr[close + 1] == ':' && parsePort(addr.substr(close + 2), &l.port));
    }
  } else if (size_t colon = addr.rfind(':'); colon != std::string::npos) {
    l.host = addr.substr(0, colon);
    ok = parsePort(addr.substr(colon + 1), &l.port);
  } else if (std::all_of(addr.begin(), addr.end(), ::isdigit)) {
    ok = parsePort(addr, &l.port);
  } else {
    l.host = addr;
  }
  if (l.host == "*") l.host = "0.0.0.0";
  if (l.host == "localhost") l.host = "127.0.0.1";
  return ok && !l.host.empty();
}

namespace {

bool onListen(const ConfNode& n, BuildState& st, std::string* err) {
  Listen l;
  const std::string& addr = n.args[0];
  if (!parseListenAddress(addr, &l)) {
    *err = "invalid address \"" + addr + "\" in \"listen\" directive";
    return false;
  }
  for (size_t i = 1; i < n.args.size(); i++) {
    const std::string& p = n.args[i];
    int64_t v = 0;
    if (p == "default_server" || p == "default") l.default_server = true;
    else if (p == "reuseport") l.reuseport = true;
    else if (p == "ssl") l.ssl = true;
    else if (p.rfind("backlog=", 0) == 0 && parseInt(p.substr(8), &v) && v > 0) l.backlog = static_cast<int>(v);
    else {
      *err = "invalid parameter \"" + p + "\"";
      return false;
    }
  }
  st.server->listens.push_back(l);
  return true;
}

bool onServerName(const ConfNode& n, BuildState& st, std::string* err) {
  for (const auto& raw : n.args) {
    ServerName sn;
    if (!raw.empty() && raw[0] == '~') {
      sn.kind = ServerName::Kind::kRegex;
      sn.name = raw;
      sn.regex = Regex::compile(raw.substr(1), true, err);
      if (!sn.regex) return false;
    } else {
      std::string name = lowerCase(raw);
      if (name.rfind("*.", 0) == 0) {
        sn.kind = ServerName::Kind::kLeadingWild;
        sn.name = name.substr(1);  // ".example.com"
      } else if (!name.empty() && name[0] == '.') {
        // ".example.com" = example.com and *.example.com
        ServerName exact;
        exact.name = name.substr(1);
        st.server->names.push_back(exact);
        sn.kind = ServerName::Kind::kLeadingWild;
        sn.name = name;
      } else if (name.size() > 2 && name.compare(name.size() - 2, 2, ".*") == 0) {
        sn.kind = ServerName::Kind::kTrailingWild;
        sn.name = name.substr(0, name.size() - 1);  // "www.example."
      } else if (name.find('*') != std::string::npos) {
        *err = "invalid server name or wildcard \"" + raw + "\"";
        return false;
      } else {
        sn.name = name;
      }
    }
    st.server->names.push_back(std::move(sn));
  }
  return true;
}

// --- location --------------------------------------------------------------

bool onLocation(const ConfNode& n, BuildState& st, std::string* err) {
  auto loc = std::make_shared<Location>();
  loc->where = n.where();
  std::string mod, pattern;
  if (n.args.size() == 2) {
    mod = n.args[0];
    pattern = n.args[1];
  } else {
    // nginx also accepts the modifier glued to the pattern: "=/x", "~\.php$".
    const std::string& a = n.args[0];
    for (const char* m : {"^~", "~*", "=", "~"}) {
      size_t len = strlen(m);
      if (a.size() > len && a.compare(0, len, m) == 0) {
        mod = m;
        pattern = a.substr(len);
        break;
      }
    }
    if (mod.empty()) pattern = a;
  }
  if (mod == "=") loc->match = LocationMatch::kExact;
  else if (mod == "^~") loc->match = LocationMatch::kNoRegex;
  else if (mod == "~") loc->match = LocationMatch::kRegex;
  else if (mod == "~*") loc->match = LocationMatch::kRegexCaseless;
  else if (!mod.empty()) {
    *err = "invalid location modifier \"" + mod + "\"";
    return false;
  }
  loc->pattern = pattern;
  if (mod.empty() && !loc->pattern.empty() && loc->pattern[0] == '@') {
    *err = "named locations (\"" + loc->pattern + "\") are not supported yet";
    return false;
  }
  if (loc->match == LocationMatch::kRegex || loc->match == LocationMatch::kRegexCaseless) {
    loc->regex = Regex::compile(loc->pattern, loc->match == LocationMatch::kRegexCaseless, err);
    if (!loc->regex) return false;
  }
  if (Location* parent = st.location) {
    if (parent->match == LocationMatch::kExact) {
      *err = "location \"" + loc->pattern + "\" cannot be inside the exact location \"" + parent->pattern + "\"";
      return false;
    }
    bool parent_prefix = parent->match == LocationMatch::kPrefix || parent->match == LocationMatch::kNoRegex;
    bool child_prefix = loc->match != LocationMatch::kRegex && loc->match != LocationMatch::kRegexCaseless;
    if (!parent_prefix && child_prefix) {
      *err = "location \"" + loc->pattern + "\" could not be inside regex location \"" + parent->pattern + "\"";
      return false;
    }
    if (parent_prefix && child_prefix && loc->pattern.rfind(parent->pattern, 0) != 0) {
      *err = "location \"" + loc->pattern + "\" is outside location \"" + parent->pattern + "\"";
      return false;
    }
  }
  auto& siblings = st.location ? st.location->children : st.server->locations;
  auto prefixLike = [](LocationMatch m) { return m == LocationMatch::kPrefix || m == LocationMatch::kNoRegex; };
  for (const auto& other : siblings) {
    bool same_kind = other->match == loc->match || (prefixLike(other->match) && prefixLike(loc->match));
    if (!loc->regex && same_kind && other->pattern == loc->pattern) {
      *err = "duplicate location \"" + loc->pattern + "\"";
      return false;
    }
  }
  if (st.location) {
    st.location->children.push_back(loc);
  } else {
    st.server->locations.push_back(loc);
  }
  BuildState inner = st;
  inner.ctx = kLocationCtx;
  inner.location = loc.get();
  return buildBlock(n.children, inner, st.error);
}

const Directive kCoreDirectives[] = {
    {"daemon", kMainCtx, 1, 1, false, onDaemon, true},
    {"master_process", kMainCtx, 1, 1, false, onMasterProcess, true},
    {"worker_processes", kMainCtx, 1, 1, false, onWorkerProcesses, true},
    {"error_log", kMainCtx, 1, 2, false, onErrorLog},
    {"pid", kMainCtx, 1, 1, false, onPid, true},
    {"worker_shutdown_timeout", kMainCtx, 1, 1, false, onWorkerShutdownTimeout, true},
    {"worker_rlimit_nofile", kMainCtx, 1, 1, false, onWorkerRlimitNofile, true},
    {"events", kMainCtx, 0, 0, true, onEvents, true},
    {"worker_connections", kEventsCtx, 1, 1, false, onWorkerConnections, true},
    {"http", kMainCtx, 0, 0, true, onHttp},
    {"default_type", kAnyHttpLevel, 1, 1, false, onDefaultType},
    {"server_tokens", kAnyHttpLevel, 1, 1, false, onFlag<&HttpSettings::server_tokens>},
    {"log_format", kHttpCtx, 2, kAnyArgs, false, onLogFormat},
    {"access_log", kAnyHttpLevel, 1, kAnyArgs, false, onAccessLog},
    {"keepalive_timeout", kAnyHttpLevel, 1, 2, false, onKeepaliveTimeout},
    {"keepalive_requests", kAnyHttpLevel, 1, 1, false, onKeepaliveRequests},
    {"client_header_timeout", kHttpCtx | kServerCtx, 1, 1, false,
     onDuration<&HttpSettings::client_header_timeout_ms>},
    {"client_body_timeout", kAnyHttpLevel, 1, 1, false, onDuration<&HttpSettings::client_body_timeout_ms>},
    {"send_timeout", kAnyHttpLevel, 1, 1, false, onDuration<&HttpSettings::send_timeout_ms>},
    {"client_body_min_rate", kAnyHttpLevel, 1, 1, false, onSize<&HttpSettings::client_body_min_rate>},
    {"send_min_rate", kAnyHttpLevel, 1, 1, false, onSize<&HttpSettings::send_min_rate>},
    {"client_max_body_size", kAnyHttpLevel, 1, 1, false, onSize<&HttpSettings::client_max_body_size>},
    {"client_body_buffer_size", kAnyHttpLevel, 1, 1, false, onSize<&HttpSettings::client_body_buffer_size>},
    {"client_body_temp_path", kAnyHttpLevel, 1, 4, false, onClientBodyTempPath},
    {"large_client_header_buffers", kHttpCtx | kServerCtx, 2, 2, false, onLargeClientHeaderBuffers},
    {"client_max_header_fields", kHttpCtx | kServerCtx, 1, 1, false, onClientMaxHeaderFields},
    {"server", kHttpCtx, 0, 0, true, onServer},
    {"listen", kServerCtx, 1, kAnyArgs, false, onListen},
    {"server_name", kServerCtx, 1, kAnyArgs, false, onServerName},
    {"location", kServerCtx | kLocationCtx, 1, 2, true, onLocation},
};

}  // namespace

void registerCoreDirectives() {
  registerDirectives(kCoreDirectives, sizeof(kCoreDirectives) / sizeof(kCoreDirectives[0]));
}

}  // namespace tidegate::conf
