// proxy_pass and the proxy_* settings of nginx's ngx_http_proxy_module, with
// its syntax, contexts, defaults (ProxySettings::fillDefaults) and errors.
// Only the model is built here; src/proxy/ uses it (issue 4).
#include <strings.h>

#include <set>

#include "conf/directives.h"
#include "conf/resolve.h"
#include "tls/tls_client.h"

namespace tidegate::conf {
namespace {

bool invalidValue(const ConfNode& n, const std::string& value, std::string* err) {
  err->assign("invalid value \"").append(value).append("\" in \"").append(n.name).append("\" directive");
  return false;
}

}  // namespace

// proxy_pass http://host[:port][uri]; or a URL with variables, evaluated per
// request. Host names are resolved later, in resolveProxyPasses().
bool parseProxyUrl(std::string_view url, ProxyPass* pp, std::string* err) {
  size_t prefix = 0;
  if (url.size() >= 8 && strncasecmp(url.data(), "https://", 8) == 0) {
    prefix = 8;
  } else if (url.size() >= 7 && strncasecmp(url.data(), "http://", 7) == 0) {
    prefix = 7;
  } else {
    err->assign("invalid URL prefix");  // nginx's text at conf time
    return false;
  }
  pp->https = prefix == 8;
  std::string_view rest = url.substr(prefix);
  if (rest.size() >= 5 && strncasecmp(rest.data(), "unix:", 5) == 0) {
    err->assign("unix domain socket upstreams are not supported yet");
    return false;
  }
  // The URI starts at the first '/' or '?' after the host (after ']' for IPv6).
  size_t host_end = rest.empty() || rest.front() != '[' ? 0 : rest.find(']');
  size_t uri_at = host_end == std::string_view::npos ? host_end : rest.find_first_of("/?", host_end);
  HostPort hp;
  if (const char* why = parseHostPort(rest.substr(0, uri_at), &hp)) {
    err->assign(why).append(" in upstream \"").append(rest).append("\"");
    return false;
  }
  pp->host = hp.host;
  pp->port = hp.port_given || !pp->https ? hp.port : 443;
  pp->port_given = hp.port_given;
  pp->has_uri = uri_at != std::string_view::npos;
  if (pp->has_uri) pp->uri.assign(rest.substr(uri_at));
  return true;
}

namespace {

bool onProxyPass(const ConfNode& n, BuildState& st, std::string* err) {
  Location& loc = *st.location;
  if (!notDuplicate(loc.proxy_pass, n, err)) return false;
  ProxyPass pp;
  pp.where = n.where();
  const std::string& url = n.args[0];
  if (url.find('$') != std::string::npos) {
    // As nginx: nothing is checked until the value exists, per request.
    pp.has_vars = true;
    if (!compileComplexValue(url, &pp.value, err, st.variables())) return false;
    loc.proxy_pass = std::move(pp);
    return true;
  }
  if (!parseProxyUrl(url, &pp, err)) return false;
  // The URI part replaces the part of the request URI that matched the
  // location; a regex location has no such part to replace.
  if (pp.has_uri && (loc.match == LocationMatch::kRegex || loc.match == LocationMatch::kRegexCaseless)) {
    err->assign(
        "\"proxy_pass\" cannot have URI part in location given by regular expression, or inside named location, "
        "or inside \"if\" statement, or inside \"limit_except\" block");
    return false;
  }
  loc.proxy_pass = std::move(pp);
  return true;
}

// proxy_set_header field value; (repeatable: the level's list replaces its parent's)
bool onSetHeader(const ConfNode& n, BuildState& st, std::string* err) {
  ProxyHeader h;
  h.name = n.args[0];
  h.lower = lowerCase(h.name);
  if (!compileComplexValue(n.args[1], &h.value, err, st.variables())) return false;
  auto& list = st.settings().proxy.set_headers;
  if (!list) list.emplace();
  list->push_back(std::move(h));
  return true;
}

// proxy_hide_header / proxy_pass_header field; (repeatable, a list per level)
template <std::optional<std::vector<std::string>> ProxySettings::*Field>
bool onHeaderName(const ConfNode& n, BuildState& st, std::string*) {
  auto& list = st.settings().proxy.*Field;
  if (!list) list.emplace();
  list->push_back(lowerCase(n.args[0]));
  return true;
}

// proxy_http_version 1.0 | 1.1;
bool onHttpVersion(const ConfNode& n, BuildState& st, std::string* err) {
  auto& version = st.settings().proxy.http_version;
  if (!notDuplicate(version, n, err)) return false;
  if (n.args[0] == "1.0") {
    version = 10;
  } else if (n.args[0] == "1.1") {
    version = 11;
  } else {
    return invalidValue(n, n.args[0], err);
  }
  return true;
}

// proxy_buffers number size;
bool onBuffers(const ConfNode& n, BuildState& st, std::string* err) {
  ProxySettings& p = st.settings().proxy;
  if (!notDuplicate(p.buffers_number, n, err)) return false;
  uint64_t number = 0, size = 0;
  if (!parseCount(n.args[0], &number) || number == 0) return invalidValue(n, n.args[0], err);
  if (!parseSize(n.args[1], &size) || size == 0) return invalidValue(n, n.args[1], err);
  p.buffers_number = number;
  p.buffers_size = size;
  return true;
}

// proxy_next_upstream error | timeout | ... | off ...;
// As nginx's bitmask: names are case-insensitive, a second directive in the
// same block adds to the first, and `off` anywhere means only `off`.
bool onNextUpstream(const ConfNode& n, BuildState& st, std::string* err) {
  static const struct {
    const char* name;
    uint32_t bit;
  } kConditions[] = {
      {"error", kNextError},       {"timeout", kNextTimeout},   {"invalid_header", kNextInvalidHeader},
      {"http_500", kNextHttp500},  {"http_502", kNextHttp502},  {"http_503", kNextHttp503},
      {"http_504", kNextHttp504},  {"http_403", kNextHttp403},  {"http_404", kNextHttp404},
      {"http_429", kNextHttp429},  {"non_idempotent", kNextNonIdempotent},
      {"off", kNextOff},
  };
  uint32_t bits = st.settings().proxy.next_upstream.value_or(0);
  for (const std::string& a : n.args) {
    uint32_t bit = 0;
    for (const auto& c : kConditions) {
      if (strcasecmp(a.c_str(), c.name) == 0) bit = c.bit;
    }
    if (!bit) return invalidValue(n, a, err);
    bits |= bit;
  }
  st.settings().proxy.next_upstream = bits & kNextOff ? kNextOff : bits;
  return true;
}

// proxy_ssl_name NAME; (variables allowed, evaluated per request)
bool onSslName(const ConfNode& n, BuildState& st, std::string* err) {
  auto& field = st.settings().proxy.ssl_name;
  if (!notDuplicate(field, n, err)) return false;
  ComplexValue v;
  if (!compileComplexValue(n.args[0], &v, err, st.variables())) return false;
  field = std::move(v);
  return true;
}

// proxy_ssl_trusted_certificate, proxy_ssl_certificate, proxy_ssl_certificate_key
// FILE; (the files are loaded after the merge, in checkProxyCertificates)
template <std::optional<std::string> ProxySettings::*Field, std::string ProxySettings::*Where>
bool onSslFile(const ConfNode& n, BuildState& st, std::string* err) {
  if (!onPath<Field>(n, st, err)) return false;
  st.settings().proxy.*Where = n.where();
  return true;
}

const Directive kProxyDirectives[] = {
    {"proxy_pass", kLocationCtx, 1, 1, false, onProxyPass},
    {"proxy_set_header", kAnyHttpLevel, 2, 2, false, onSetHeader},
    {"proxy_pass_request_headers", kAnyHttpLevel, 1, 1, false, onFlag<&ProxySettings::pass_request_headers>},
    {"proxy_pass_request_body", kAnyHttpLevel, 1, 1, false, onFlag<&ProxySettings::pass_request_body>},
    {"proxy_hide_header", kAnyHttpLevel, 1, 1, false, onHeaderName<&ProxySettings::hide_headers>},
    {"proxy_pass_header", kAnyHttpLevel, 1, 1, false, onHeaderName<&ProxySettings::pass_headers>},
    {"proxy_http_version", kAnyHttpLevel, 1, 1, false, onHttpVersion},
    {"proxy_connect_timeout", kAnyHttpLevel, 1, 1, false, onDuration<&ProxySettings::connect_timeout_ms>},
    {"proxy_send_timeout", kAnyHttpLevel, 1, 1, false, onDuration<&ProxySettings::send_timeout_ms>},
    {"proxy_read_timeout", kAnyHttpLevel, 1, 1, false, onDuration<&ProxySettings::read_timeout_ms>},
    {"proxy_buffering", kAnyHttpLevel, 1, 1, false, onFlag<&ProxySettings::buffering>},
    {"proxy_buffer_size", kAnyHttpLevel, 1, 1, false, onSize<&ProxySettings::buffer_size>},
    {"proxy_buffers", kAnyHttpLevel, 2, 2, false, onBuffers},
    {"proxy_request_buffering", kAnyHttpLevel, 1, 1, false, onFlag<&ProxySettings::request_buffering>},
    {"proxy_next_upstream", kAnyHttpLevel, 1, kAnyArgs, false, onNextUpstream},
    {"proxy_next_upstream_tries", kAnyHttpLevel, 1, 1, false,
     onNumber<&ProxySettings::next_upstream_tries, parseCount>},
    {"proxy_next_upstream_timeout", kAnyHttpLevel, 1, 1, false,
     onDuration<&ProxySettings::next_upstream_timeout_ms>},
    {"proxy_intercept_errors", kAnyHttpLevel, 1, 1, false, onFlag<&ProxySettings::intercept_errors>},
    {"proxy_ignore_client_abort", kAnyHttpLevel, 1, 1, false, onFlag<&ProxySettings::ignore_client_abort>},
    {"proxy_ssl_verify", kAnyHttpLevel, 1, 1, false, onFlag<&ProxySettings::ssl_verify>},
    {"proxy_ssl_trusted_certificate", kAnyHttpLevel, 1, 1, false,
     onSslFile<&ProxySettings::ssl_trusted_certificate, &ProxySettings::ssl_trusted_certificate_where>},
    {"proxy_ssl_verify_depth", kAnyHttpLevel, 1, 1, false, onNumber<&ProxySettings::ssl_verify_depth, parseCount>},
    {"proxy_ssl_server_name", kAnyHttpLevel, 1, 1, false, onFlag<&ProxySettings::ssl_server_name>},
    {"proxy_ssl_name", kAnyHttpLevel, 1, 1, false, onSslName},
    {"proxy_ssl_certificate", kAnyHttpLevel, 1, 1, false,
     onSslFile<&ProxySettings::ssl_certificate, &ProxySettings::ssl_certificate_where>},
    {"proxy_ssl_certificate_key", kAnyHttpLevel, 1, 1, false,
     onSslFile<&ProxySettings::ssl_certificate_key, &ProxySettings::ssl_certificate_key_where>},
    {"proxy_ssl_protocols", kAnyHttpLevel, 1, kAnyArgs, false, onSslProtocols<&ProxySettings::ssl_protocols>},
    {"proxy_ssl_ciphers", kAnyHttpLevel, 1, 1, false, onString<&ProxySettings::ssl_ciphers>},
    {"proxy_ssl_session_reuse", kAnyHttpLevel, 1, 1, false, onFlag<&ProxySettings::ssl_session_reuse>},
};

const UpstreamConf* findUpstream(const HttpConfig& http, const std::string& name) {
  for (const auto& u : http.upstreams) {
    if (strcasecmp(u->name.c_str(), name.c_str()) == 0) return u.get();
  }
  return nullptr;
}

// A fixed target names an upstream block (looked up by name at run time, as
// nginx matches them: case-insensitively) or is resolved here. A name that
// does not resolve is not an error: the proxy answers 502 until it does.
bool resolveTargets(const std::vector<std::shared_ptr<Location>>& locations, const HttpConfig& http,
                    ConfError* err) {
  for (const auto& loc : locations) {
    if (!resolveTargets(loc->children, http, err)) return false;
    if (!loc->proxy_pass || loc->proxy_pass->has_vars) continue;
    ProxyPass& pp = *loc->proxy_pass;
    if (findUpstream(http, pp.host)) {
      if (!pp.port_given) continue;
      *err = ConfError::at(pp.where, "upstream \"" + pp.host + "\" may not have port " + std::to_string(pp.port));
      return false;
    }
    resolveHost(pp.host, pp.port, &pp.addresses);
  }
  return true;
}

}  // namespace

bool resolveProxyPasses(HttpConfig& http, ConfError* err) {
  for (const auto& server : http.servers) {
    if (!resolveTargets(server->locations, http, err)) return false;
  }
  return true;
}

namespace {

// One level's CA file and client certificate; `checked` holds the files and
// pairs already loaded.
bool checkCertificate(const ProxySettings& p, std::set<std::string>* checked, ConfError* err) {
  std::string why;
  if (p.ssl_trusted_certificate && checked->insert(*p.ssl_trusted_certificate).second &&
      !tls::checkTrustedCertificate(*p.ssl_trusted_certificate, &why)) {
    *err = ConfError::at(p.ssl_trusted_certificate_where, why);
    return false;
  }
  if (!p.ssl_certificate && !p.ssl_certificate_key) return true;
  if (!p.ssl_certificate_key) {
    *err = ConfError::at(p.ssl_certificate_where, "no \"proxy_ssl_certificate_key\" is defined for certificate \"" +
                                                       *p.ssl_certificate + "\"");
    return false;
  }
  if (!p.ssl_certificate) {
    *err = ConfError::at(p.ssl_certificate_key_where, "no \"proxy_ssl_certificate\" is defined for key \"" +
                                                           *p.ssl_certificate_key + "\"");
    return false;
  }
  std::string pair = *p.ssl_certificate;
  pair.append(1, '\0').append(*p.ssl_certificate_key);
  if (!checked->insert(pair).second) return true;
  if (tls::checkCertificatePair(*p.ssl_certificate, *p.ssl_certificate_key, &why)) return true;
  // A certificate that does not load is its directive's error; a key that
  // does not load or match is the key's.
  bool cert_failed = why.rfind("cannot load certificate \"", 0) == 0;
  *err = ConfError::at(cert_failed ? p.ssl_certificate_where : p.ssl_certificate_key_where, why);
  return false;
}

bool checkLocations(const std::vector<std::shared_ptr<Location>>& locations, std::set<std::string>* checked,
                    ConfError* err) {
  for (const auto& loc : locations) {
    if (!checkCertificate(loc->settings.proxy, checked, err)) return false;
    if (!checkLocations(loc->children, checked, err)) return false;
  }
  return true;
}

}  // namespace

bool checkProxyCertificates(const HttpConfig& http, ConfError* err) {
  std::set<std::string> checked;
  if (!checkCertificate(http.settings.proxy, &checked, err)) return false;
  for (const auto& server : http.servers) {
    if (!checkCertificate(server->settings.proxy, &checked, err)) return false;
    if (!checkLocations(server->locations, &checked, err)) return false;
  }
  return true;
}

void registerProxyDirectives() {
  registerDirectives(kProxyDirectives, sizeof(kProxyDirectives) / sizeof(kProxyDirectives[0]));
}

}  // namespace tidegate::conf
