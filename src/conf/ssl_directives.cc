// The downstream TLS directives of nginx's ngx_http_ssl_module: syntax,
// contexts, defaults (SslSettings::fillDefaults) and errors. `listen ...
// ssl` is in core_directives.cc; the certificates are loaded and checked by
// the loader (loadCertificates), so `tidegate -t` and a reload catch a bad
// file or a key that does not match.
#include <cstring>

#include "conf/directives.h"

namespace tidegate::conf {
namespace {

// ssl_certificate FILE; ssl_certificate_key FILE; (repeatable: an RSA and an
// ECDSA pair side by side, paired by position).
template <std::optional<std::vector<std::string>> SslSettings::*Field>
bool onFile(const ConfNode& n, BuildState& st, std::string* err) {
  if (n.args[0].find('$') != std::string::npos) {
    *err = "variables in \"" + n.name + "\" are not supported (use ssl_certificate_by_lua* or PUT /ssl/{name})";
    return false;
  }
  SslSettings& ssl = st.settings().ssl;
  auto& files = ssl.*Field;
  if (!files) files.emplace();
  files->push_back(st.resolvePath(n.args[0]));
  if (ssl.where.empty()) ssl.where = n.where();
  return true;
}

// ssl_session_cache off | none | [builtin[:size]] [shared:name:size];
bool onSessionCache(const ConfNode& n, BuildState& st, std::string* err) {
  std::optional<SslSessionCacheConf>& field = st.settings().ssl.session_cache;
  if (!notDuplicate(field, n, err)) return false;
  SslSessionCacheConf c;
  for (const std::string& a : n.args) {
    if ((a == "off" || a == "none") && n.args.size() == 1) {
      c.off = a == "off";
      continue;
    }
    if (a == "builtin") {
      c.builtin = true;
      continue;
    }
    if (a.rfind("builtin:", 0) == 0) {
      c.builtin = parseCount(a.substr(8), &c.builtin_size) && c.builtin_size > 0;
      if (c.builtin) continue;
    } else if (a.rfind("shared:", 0) == 0) {
      size_t colon = a.find(':', 7);
      if (colon != std::string::npos && colon > 7 && parseSize(a.substr(colon + 1), &c.zone_size)) {
        c.zone = a.substr(7, colon - 7);
        // nginx refuses a zone under 8 pages; so does shm::Zone (kMinSize).
        if (c.zone_size < 32 * 1024) {
          *err = "session cache \"" + a + "\" is too small";
          return false;
        }
        continue;
      }
    }
    *err = "invalid session cache \"" + a + "\"";
    return false;
  }
  c.where = n.where();
  field = c;
  return true;
}

// ssl_session_ticket_key FILE; (repeatable; read and checked when the
// server contexts are made, so -t and a reload catch a bad one).
bool onTicketKeyFile(const ConfNode& n, BuildState& st, std::string*) {
  std::optional<std::vector<std::string>>& files = st.settings().ssl.session_ticket_keys;
  if (!files) files.emplace();
  files->push_back(st.resolvePath(n.args[0]));
  return true;
}

const Directive kSslDirectives[] = {
    {"ssl_certificate", kHttpCtx | kServerCtx, 1, 1, false, onFile<&SslSettings::certificate_files>},
    {"ssl_certificate_key", kHttpCtx | kServerCtx, 1, 1, false, onFile<&SslSettings::key_files>},
    {"ssl_protocols", kHttpCtx | kServerCtx, 1, kAnyArgs, false, onSslProtocols<&SslSettings::protocols>},
    {"ssl_ciphers", kHttpCtx | kServerCtx, 1, 1, false, onString<&SslSettings::ciphers>},
    {"ssl_ecdh_curve", kHttpCtx | kServerCtx, 1, 1, false, onString<&SslSettings::ecdh_curve>},
    {"ssl_dhparam", kHttpCtx | kServerCtx, 1, 1, false, onPath<&SslSettings::dhparam>},
    {"ssl_prefer_server_ciphers", kHttpCtx | kServerCtx, 1, 1, false, onFlag<&SslSettings::prefer_server_ciphers>},
    {"ssl_session_cache", kHttpCtx | kServerCtx, 1, 2, false, onSessionCache},
    {"ssl_session_tickets", kHttpCtx | kServerCtx, 1, 1, false, onFlag<&SslSettings::session_tickets>},
    {"ssl_session_ticket_key", kHttpCtx | kServerCtx, 1, 1, false, onTicketKeyFile},
    {"ssl_session_timeout", kHttpCtx | kServerCtx, 1, 1, false, onDuration<&SslSettings::session_timeout_ms>},
};

}  // namespace

void registerSslDirectives() {
  registerDirectives(kSslDirectives, sizeof(kSslDirectives) / sizeof(kSslDirectives[0]));
}

}  // namespace tidegate::conf
