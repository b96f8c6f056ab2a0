#include "conf/loader.h"

#include <unistd.h>

#include <climits>
#include <map>

#include "conf/directives.h"
#include "conf/parser.h"
#include "tls/server_context.h"

namespace tidegate::conf {

void HttpSettings::inheritFrom(const HttpSettings& p) {
  if (!default_type) default_type = p.default_type;
  if (!keepalive_timeout_ms) {
    keepalive_timeout_ms = p.keepalive_timeout_ms;
    keepalive_header_s = p.keepalive_header_s;
  }
  if (!keepalive_requests) keepalive_requests = p.keepalive_requests;
  if (!client_header_timeout_ms) client_header_timeout_ms = p.client_header_timeout_ms;
  if (!client_body_timeout_ms) client_body_timeout_ms = p.client_body_timeout_ms;
  if (!send_timeout_ms) send_timeout_ms = p.send_timeout_ms;
  if (!client_body_min_rate) client_body_min_rate = p.client_body_min_rate;
  if (!send_min_rate) send_min_rate = p.send_min_rate;
  if (!client_max_body_size) client_max_body_size = p.client_max_body_size;
  if (!client_body_buffer_size) client_body_buffer_size = p.client_body_buffer_size;
  if (!client_body_temp_path) client_body_temp_path = p.client_body_temp_path;
  if (!server_tokens) server_tokens = p.server_tokens;
  if (!lua_check_client_abort) lua_check_client_abort = p.lua_check_client_abort;
  if (!lua_balancer_timeout_ms) lua_balancer_timeout_ms = p.lua_balancer_timeout_ms;
  if (!lua_budget_timeout_ms) lua_budget_timeout_ms = p.lua_budget_timeout_ms;
  if (!lua_sandbox_instructions) lua_sandbox_instructions = p.lua_sandbox_instructions;
  if (!lua_sandbox_timeout_ms) lua_sandbox_timeout_ms = p.lua_sandbox_timeout_ms;
  if (!lua_sandbox_memory) lua_sandbox_memory = p.lua_sandbox_memory;
  if (!lua_transform_underscores) lua_transform_underscores = p.lua_transform_underscores;
  if (!lua_socket_connect_timeout_ms) lua_socket_connect_timeout_ms = p.lua_socket_connect_timeout_ms;
  if (!lua_socket_send_timeout_ms) lua_socket_send_timeout_ms = p.lua_socket_send_timeout_ms;
  if (!lua_socket_read_timeout_ms) lua_socket_read_timeout_ms = p.lua_socket_read_timeout_ms;
  if (!lua_socket_keepalive_timeout_ms) lua_socket_keepalive_timeout_ms = p.lua_socket_keepalive_timeout_ms;
  if (!lua_socket_buffer_size) lua_socket_buffer_size = p.lua_socket_buffer_size;
  if (!lua_socket_pool_size) lua_socket_pool_size = p.lua_socket_pool_size;
  if (!lua_socket_send_lowat) lua_socket_send_lowat = p.lua_socket_send_lowat;
  if (!lua_socket_log_errors) lua_socket_log_errors = p.lua_socket_log_errors;
  if (!lua_ssl_trusted_certificate) lua_ssl_trusted_certificate = p.lua_ssl_trusted_certificate;
  if (!lua_ssl_verify_depth) lua_ssl_verify_depth = p.lua_ssl_verify_depth;
  if (!lua_ssl_protocols) lua_ssl_protocols = p.lua_ssl_protocols;
  if (!lua_ssl_ciphers) lua_ssl_ciphers = p.lua_ssl_ciphers;
  if (!lua_need_request_body) lua_need_request_body = p.lua_need_request_body;
  if (!access_logs) access_logs = p.access_logs;
  if (!rewrite_lua) rewrite_lua = p.rewrite_lua;
  if (!access_lua) access_lua = p.access_lua;
  if (!log_lua) log_lua = p.log_lua;
  if (!header_filter_lua) header_filter_lua = p.header_filter_lua;
  if (!body_filter_lua) body_filter_lua = p.body_filter_lua;
  proxy.inheritFrom(p.proxy);
  ssl.inheritFrom(p.ssl);
}

void SslSettings::inheritFrom(const SslSettings& p) {
  if (!certificate_files) {
    certificate_files = p.certificate_files;
    if (where.empty()) where = p.where;
  }
  if (!key_files) key_files = p.key_files;
  if (!protocols) protocols = p.protocols;
  if (!ciphers) ciphers = p.ciphers;
  if (!prefer_server_ciphers) prefer_server_ciphers = p.prefer_server_ciphers;
  if (!ecdh_curve) ecdh_curve = p.ecdh_curve;
  if (!dhparam) dhparam = p.dhparam;
  if (!session_cache) session_cache = p.session_cache;
  if (!session_tickets) session_tickets = p.session_tickets;
  if (!session_timeout_ms) session_timeout_ms = p.session_timeout_ms;
  if (!session_ticket_keys) session_ticket_keys = p.session_ticket_keys;
  if (!certificate_lua) certificate_lua = p.certificate_lua;
}

void SslSettings::fillDefaults() {
  // nginx's defaults, but TLSv1 and TLSv1.1 are off (RFC 8996).
  if (!certificate_files) certificate_files.emplace();
  if (!key_files) key_files.emplace();
  if (!protocols) protocols = kTlsV1_2 | kTlsV1_3;
  if (!ciphers) ciphers = "HIGH:!aNULL:!MD5";
  if (!prefer_server_ciphers) prefer_server_ciphers = false;
  if (!ecdh_curve) ecdh_curve = "auto";
  if (!dhparam) dhparam = "";
  if (!session_cache) session_cache.emplace();  // "none": no shared cache, tickets still work
  if (!session_tickets) session_tickets = true;
  if (!session_timeout_ms) session_timeout_ms = 5 * 60 * 1000;
  if (!session_ticket_keys) session_ticket_keys.emplace();
}

void HttpSettings::fillDefaults() {
  // nginx's defaults.
  if (!default_type) default_type = "text/plain";
  if (!keepalive_timeout_ms) keepalive_timeout_ms = 75000;
  if (!keepalive_header_s) keepalive_header_s = 0;
  if (!keepalive_requests) keepalive_requests = 1000;
  if (!client_header_timeout_ms) client_header_timeout_ms = 60000;
  if (!client_body_timeout_ms) client_body_timeout_ms = 60000;
  if (!send_timeout_ms) send_timeout_ms = 60000;
  if (!client_body_min_rate) client_body_min_rate = 0;
  if (!send_min_rate) send_min_rate = 0;
  if (!client_max_body_size) client_max_body_size = 1024 * 1024;
  if (!client_body_buffer_size) client_body_buffer_size = 16 * 1024;  // nginx on 64-bit platforms
  if (!server_tokens) server_tokens = true;
  if (!lua_check_client_abort) lua_check_client_abort = false;
  if (!lua_balancer_timeout_ms) lua_balancer_timeout_ms = 100;
  if (!lua_budget_timeout_ms) lua_budget_timeout_ms = 0;
  if (!lua_sandbox_instructions) lua_sandbox_instructions = 10000000;
  if (!lua_sandbox_timeout_ms) lua_sandbox_timeout_ms = 5000;
  if (!lua_sandbox_memory) lua_sandbox_memory = 64u << 20;
  if (!lua_transform_underscores) lua_transform_underscores = true;
  // OpenResty's cosocket defaults.
  if (!lua_socket_connect_timeout_ms) lua_socket_connect_timeout_ms = 60000;
  if (!lua_socket_send_timeout_ms) lua_socket_send_timeout_ms = 60000;
  if (!lua_socket_read_timeout_ms) lua_socket_read_timeout_ms = 60000;
  if (!lua_socket_keepalive_timeout_ms) lua_socket_keepalive_timeout_ms = 60000;
  if (!lua_socket_buffer_size) lua_socket_buffer_size = 4096;
  if (!lua_socket_pool_size) lua_socket_pool_size = 30;
  if (!lua_socket_send_lowat) lua_socket_send_lowat = 0;
  if (!lua_socket_log_errors) lua_socket_log_errors = true;
  // lua-nginx-module's depth 1 and DEFAULT ciphers. Protocols: TLSv1.2 and
  // TLSv1.3, not its documented SSLv3 to TLSv1.2 (deprecated by RFC 8996).
  if (!lua_ssl_verify_depth) lua_ssl_verify_depth = 1;
  if (!lua_ssl_protocols) lua_ssl_protocols = kTlsV1_2 | kTlsV1_3;
  if (!lua_ssl_ciphers) lua_ssl_ciphers = "DEFAULT";
  if (!lua_need_request_body) lua_need_request_body = false;
  proxy.fillDefaults();
  ssl.fillDefaults();
}

void ProxySettings::inheritFrom(const ProxySettings& p) {
  if (!set_headers) set_headers = p.set_headers;
  if (!pass_request_headers) pass_request_headers = p.pass_request_headers;
  if (!pass_request_body) pass_request_body = p.pass_request_body;
  if (!hide_headers) hide_headers = p.hide_headers;
  if (!pass_headers) pass_headers = p.pass_headers;
  if (!http_version) http_version = p.http_version;
  if (!connect_timeout_ms) connect_timeout_ms = p.connect_timeout_ms;
  if (!send_timeout_ms) send_timeout_ms = p.send_timeout_ms;
  if (!read_timeout_ms) read_timeout_ms = p.read_timeout_ms;
  if (!buffering) buffering = p.buffering;
  if (!buffer_size) buffer_size = p.buffer_size;
  if (!buffers_number) {
    buffers_number = p.buffers_number;
    buffers_size = p.buffers_size;
  }
  if (!request_buffering) request_buffering = p.request_buffering;
  if (!next_upstream) next_upstream = p.next_upstream;
  if (!next_upstream_tries) next_upstream_tries = p.next_upstream_tries;
  if (!next_upstream_timeout_ms) next_upstream_timeout_ms = p.next_upstream_timeout_ms;
  if (!intercept_errors) intercept_errors = p.intercept_errors;
  if (!ignore_client_abort) ignore_client_abort = p.ignore_client_abort;
  if (!ssl_verify) ssl_verify = p.ssl_verify;
  if (!ssl_trusted_certificate) {
    ssl_trusted_certificate = p.ssl_trusted_certificate;
    ssl_trusted_certificate_where = p.ssl_trusted_certificate_where;
  }
  if (!ssl_verify_depth) ssl_verify_depth = p.ssl_verify_depth;
  if (!ssl_server_name) ssl_server_name = p.ssl_server_name;
  if (!ssl_name) ssl_name = p.ssl_name;
  if (!ssl_certificate && !ssl_certificate_key) {
    // The pair is inherited whole, as nginx merges proxy_ssl_certificate(_key).
    ssl_certificate = p.ssl_certificate;
    ssl_certificate_key = p.ssl_certificate_key;
    ssl_certificate_where = p.ssl_certificate_where;
    ssl_certificate_key_where = p.ssl_certificate_key_where;
  }
  if (!ssl_protocols) ssl_protocols = p.ssl_protocols;
  if (!ssl_ciphers) ssl_ciphers = p.ssl_ciphers;
  if (!ssl_session_reuse) ssl_session_reuse = p.ssl_session_reuse;
}

void ProxySettings::fillDefaults() {
  if (!set_headers) set_headers.emplace();
  if (!pass_request_headers) pass_request_headers = true;
  if (!pass_request_body) pass_request_body = true;
  if (!hide_headers) hide_headers.emplace();
  if (!pass_headers) pass_headers.emplace();
  if (!connect_timeout_ms) connect_timeout_ms = 60000;
  if (!send_timeout_ms) send_timeout_ms = 60000;
  if (!read_timeout_ms) read_timeout_ms = 60000;
  if (!buffering) buffering = true;
  if (!buffer_size) buffer_size = 4096;
  if (!buffers_number) {
    buffers_number = 8;
    buffers_size = 4096;
  }
  if (!request_buffering) request_buffering = true;
  if (!next_upstream) next_upstream = kNextError | kNextTimeout;
  if (!next_upstream_tries) next_upstream_tries = 0;
  if (!next_upstream_timeout_ms) next_upstream_timeout_ms = 0;
  if (!intercept_errors) intercept_errors = false;
  if (!ignore_client_abort) ignore_client_abort = false;
  if (!ssl_verify) ssl_verify = true;
  if (!ssl_verify_depth) ssl_verify_depth = 1;
  if (!ssl_server_name) ssl_server_name = false;
  if (!ssl_protocols) ssl_protocols = kTlsV1_2 | kTlsV1_3;
  if (!ssl_ciphers) ssl_ciphers = "DEFAULT";
  if (!ssl_session_reuse) ssl_session_reuse = true;
}

namespace {

void mergeLocations(std::vector<std::shared_ptr<Location>>& locs, const HttpSettings& parent) {
  for (auto& loc : locs) {
    loc->settings.inheritFrom(parent);
    mergeLocations(loc->children, loc->settings);
  }
}

bool groupListens(Config& cfg, ConfError* err) {
  for (auto& server : cfg.http.servers) {
    if (server->listens.empty()) server->listens.push_back(Listen{});
    for (const auto& l : server->listens) {
      Config::ListenGroup* group = nullptr;
      for (auto& g : cfg.listen_groups) {
        if (g.listen.key() == l.key()) group = &g;
      }
      if (!group) {
        cfg.listen_groups.push_back(Config::ListenGroup{l, {}, nullptr});
        group = &cfg.listen_groups.back();
      }
      group->listen.reuseport |= l.reuseport;
      group->listen.ssl |= l.ssl;  // as nginx: one listen with ssl makes the address TLS
      if (l.backlog != Listen{}.backlog) group->listen.backlog = l.backlog;
      group->servers.push_back(server);
      if (l.default_server) {
        if (group->default_server) {
          *err = ConfError::at(server->where, "a duplicate default server for " + l.key());
          return false;
        }
        group->default_server = server;
      }
    }
  }
  for (auto& g : cfg.listen_groups) {
    if (!g.default_server) g.default_server = g.servers.front();
  }
  for (size_t i = 0; i < cfg.listen_groups.size(); i++) {
    const Listen& l = cfg.listen_groups[i].listen;
    bool wildcard = l.host == "0.0.0.0" || l.host == "::";
    if (wildcard) continue;
    for (size_t w = 0; w < cfg.listen_groups.size(); w++) {
      const Listen& wl = cfg.listen_groups[w].listen;
      if (wl.port == l.port && wl.ipv6() == l.ipv6() && (wl.host == "0.0.0.0" || wl.host == "::")) {
        cfg.listen_groups[i].via = static_cast<int>(w);
      }
    }
  }
  return true;
}

// The admin API's server: one location served by the admin handler, none
// of the http level's Lua phases, and a listen group of its own (a port a
// data-plane server also listens on is refused, so no data-plane request
// can reach it, and the admin API no data-plane location).
bool addAdminServer(Config& cfg, ConfError* err) {
  AdminConf& a = cfg.http.admin;
  if (a.state_dir.empty()) a.state_dir = cfg.prefix + "/state";
  if (!a.enabled) return true;
  const std::string& host = a.listen.host;
  // A unix socket is reachable from this machine only (and made mode 0600).
  bool loopback = a.listen.isUnix() || host.rfind("127.", 0) == 0 || host == "::1";
  if (a.token.empty()) {
    *err = ConfError::at(a.where, "admin_listen needs an admin_token (there is no default credential)");
    return false;
  }
  if (!loopback && a.token.size() < 32) {
    *err = ConfError::at(a.where, "admin_listen on a non-loopback address needs an admin_token of 32 characters or more");
    return false;
  }
  for (const auto& server : cfg.http.servers) {
    for (const Listen& l : server->listens) {
      if (l.isUnix() ? l.unix_path == a.listen.unix_path : l.port == a.listen.port) {
        *err = ConfError::at(a.where, "admin_listen " + a.listen.key() + " shares its port with the listen of the server in " +
                                          server->where);
        return false;
      }
    }
  }
  auto server = std::make_shared<Server>();
  server->where = a.where;
  server->listens.push_back(a.listen);
  server->limits = cfg.http.limits;
  HttpSettings& s = server->settings;
  // Bodies are JSON or Lua source, read whole into memory, never to a file.
  s.client_max_body_size = kAdminMaxBody;
  s.client_body_buffer_size = kAdminMaxBody;
  s.access_logs = cfg.http.settings.access_logs;
  s.lua_need_request_body = false;
  s.fillDefaults();
  s.client_body_temp_path = cfg.prefix + "/client_body_temp";
  auto loc = std::make_shared<Location>();
  loc->pattern = "/";
  loc->where = a.where;
  loc->admin = true;
  loc->settings = s;
  server->locations.push_back(loc);
  cfg.http.servers.push_back(server);
  return true;
}

// ssl_certificate pairs, read and checked now (a bad one fails -t and a
// reload); a pair several servers inherit is loaded once. Every server of a
// TLS address needs one, unless certificates can come at handshake time
// (ssl_certificate_by_lua*, or the admin API's PUT /ssl/{name}).
bool loadCertificates(Config& cfg, ConfError* err) {
  std::map<std::pair<std::string, std::string>, tls::CertKeyPtr> loaded;
  for (auto& server : cfg.http.servers) {
    SslSettings& ssl = server->settings.ssl;
    const auto& certs = *ssl.certificate_files;
    const auto& keys = *ssl.key_files;
    if (certs.size() != keys.size()) {
      std::string what = certs.size() > keys.size() ? "no \"ssl_certificate_key\" is defined for certificate \"" +
                                                          certs[keys.size()] + "\""
                                                    : "no \"ssl_certificate\" is defined for key \"" +
                                                          keys[certs.size()] + "\"";
      *err = ConfError::at(ssl.where.empty() ? server->where : ssl.where, what);
      return false;
    }
    for (size_t i = 0; i < certs.size(); i++) {
      tls::CertKeyPtr& ck = loaded[{certs[i], keys[i]}];
      std::string why;
      if (!ck) ck = tls::CertKey::fromFiles(certs[i], keys[i], &why);
      if (!ck) {
        *err = ConfError::at(ssl.where, why);
        return false;
      }
      server->certificates.push_back(ck);
    }
  }
  for (const auto& g : cfg.listen_groups) {
    if (!g.listen.ssl) continue;
    for (const auto& server : g.servers) {
      if (!server->certificates.empty() || server->settings.ssl.certificate_lua || cfg.http.admin.enabled) continue;
      *err = ConfError::at(server->where, "no \"ssl_certificate\" is defined for the \"listen " + g.listen.key() +
                                              " ssl\" directive");
      return false;
    }
    std::string why;
    if (!tls::checkServerSettings(g.default_server->settings.ssl, &why)) {
      *err = ConfError::at(g.default_server->where, why);
      return false;
    }
  }
  return true;
}

bool finish(Config& cfg, ConfError* err) {
  HttpSettings& http = cfg.http.settings;
  if (!http.access_logs) {
    http.access_logs = std::vector<AccessLogTarget>{
        AccessLogTarget{cfg.prefix + "/logs/access.log", cfg.http.log_formats.empty() ? nullptr : cfg.http.log_formats[0]}};
    if (!(*http.access_logs)[0].format) http.access_logs->clear();
  }
  // nginx's default, under the prefix (the directory is made when first used).
  if (!http.client_body_temp_path) http.client_body_temp_path = cfg.prefix + "/client_body_temp";
  http.fillDefaults();
  for (auto& server : cfg.http.servers) {
    // Head limits are merged after the whole http block, so their order
    // relative to server blocks does not matter (as in nginx).
    if (!server->buffers_set) {
      server->limits.request_line = cfg.http.limits.request_line;
      server->limits.header_line = cfg.http.limits.header_line;
      server->limits.total = cfg.http.limits.total;
    }
    if (!server->fields_set) server->limits.max_fields = cfg.http.limits.max_fields;
    server->settings.inheritFrom(http);
    mergeLocations(server->locations, server->settings);
  }
  if (cfg.error_log.rfind('/', 0) != 0 && cfg.error_log != "stderr") cfg.error_log = cfg.prefix + "/" + cfg.error_log;
  if (!cfg.pid_file.empty() && cfg.pid_file[0] != '/') cfg.pid_file = cfg.prefix + "/" + cfg.pid_file;
  return addAdminServer(cfg, err) && groupListens(cfg, err) && loadCertificates(cfg, err);
}

std::string absolutePrefix(const std::string& prefix) {
  std::string p = prefix;
  if (p.empty()) {
    char buf[PATH_MAX];
    p = getcwd(buf, sizeof(buf)) ? buf : ".";
  } else if (p[0] != '/') {
    char buf[PATH_MAX];
    p = std::string(getcwd(buf, sizeof(buf)) ? buf : ".") + "/" + p;
  }
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

bool build(Config& cfg, std::vector<ConfNode>& nodes, ConfError* err) {
  BuildState st;
  st.config = &cfg;
  st.ctx = kMainCtx;
  declareVariables(nodes, &cfg.http.variables);
  if (!buildBlock(nodes, st, err)) return false;
  // What refers to blocks anywhere in http, once all of them exist.
  if (!resolveProxyPasses(cfg.http, err)) return false;
  return finish(cfg, err) && checkProxyCertificates(cfg.http, err);
}

}  // namespace

bool loadConfig(const LoadOptions& opts, ConfigPtr* out, ConfError* err) {
  auto cfg = std::make_shared<Config>();
  cfg->prefix = absolutePrefix(opts.prefix);
  std::string file = opts.conf_file.empty() ? "conf/tidegate.conf" : opts.conf_file;
  if (file[0] != '/') file = cfg->prefix + "/" + file;
  cfg->conf_file = file;
  std::string dir = file.substr(0, file.rfind('/'));
  Parser parser(dir);
  std::vector<ConfNode> nodes;
  if (!opts.extra.empty() && !parser.parseString(opts.extra, "command line", &nodes, err)) return false;
  if (!parser.parseFile(file, &nodes, err)) return false;
  cfg->files = parser.files();
  if (!build(*cfg, nodes, err)) return false;
  *out = cfg;
  return true;
}

bool loadConfigFromString(const std::string& text, const std::string& prefix, ConfigPtr* out, ConfError* err) {
  auto cfg = std::make_shared<Config>();
  cfg->prefix = absolutePrefix(prefix);
  cfg->conf_file = cfg->prefix + "/test.conf";
  Parser parser(cfg->prefix);
  std::vector<ConfNode> nodes;
  if (!parser.parseString(text, "test.conf", &nodes, err)) return false;
  if (!build(*cfg, nodes, err)) return false;
  *out = cfg;
  return true;
}

}  // namespace tidegate::conf
