#include "tls/server_context.h"

#include <openssl/err.h>
#include <openssl/pem.h>

#include "core/log.h"
#include "http/ascii.h"
#include "http/router.h"
#include "tls/session_cache.h"

namespace tidegate::tls {
namespace {

using core::LogLevel;

const char kSessionContext[] = "tidegate";

// ssl_dhparam: DH parameters for the DHE ciphers of TLS 1.2.
bool useDhParams(SSL_CTX* ctx, const std::string& file, std::string* err) {
  BIO* bio = BIO_new_file(file.c_str(), "r");
  EVP_PKEY* dh = bio ? PEM_read_bio_Parameters(bio, nullptr) : nullptr;
  BIO_free(bio);
  if (!dh || SSL_CTX_set0_tmp_dh_pkey(ctx, dh) != 1) {
    EVP_PKEY_free(dh);
    *err = "cannot use DH parameters from \"" + file + "\" (ssl_dhparam): " + takeSslErrors("no parameters");
    return false;
  }
  return true;
}

SSL_CTX* newServerCtx(const conf::SslSettings& s, std::string* err) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) {
    *err = "SSL_CTX_new() failed: " + takeSslErrors();
    return nullptr;
  }
  if (!applyProtocols(ctx, *s.protocols, *s.ciphers, err)) {
    SSL_CTX_free(ctx);
    return nullptr;
  }
  if (*s.ecdh_curve != "auto" && SSL_CTX_set1_groups_list(ctx, s.ecdh_curve->c_str()) != 1) {
    ERR_clear_error();
    SSL_CTX_free(ctx);
    *err = "SSL_CTX_set1_groups_list(\"" + *s.ecdh_curve + "\") failed (ssl_ecdh_curve)";
    return nullptr;
  }
  if (!s.dhparam->empty() && !useDhParams(ctx, *s.dhparam, err)) {
    SSL_CTX_free(ctx);
    return nullptr;
  }
  uint64_t opts = SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION;
  if (*s.prefer_server_ciphers) opts |= SSL_OP_CIPHER_SERVER_PREFERENCE;
  if (!*s.session_tickets) opts |= SSL_OP_NO_TICKET;
  SSL_CTX_set_options(ctx, opts);
  // Idle connections give their record buffers back (DESIGN.md 9).
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_timeout(ctx, static_cast<long>(*s.session_timeout_ms / 1000));
  SSL_CTX_set_session_id_context(ctx, reinterpret_cast<const unsigned char*>(kSessionContext),
                                 sizeof(kSessionContext) - 1);
  if (!installSessionResumption(ctx, s, err)) {
    SSL_CTX_free(ctx);
    return nullptr;
  }
  return ctx;
}

}  // namespace

bool applyProtocols(SSL_CTX* ctx, uint64_t protocols, const std::string& ciphers, std::string* err) {
  static const std::pair<uint64_t, int> kVersions[] = {{conf::kTlsV1, TLS1_VERSION},
                                                       {conf::kTlsV1_1, TLS1_1_VERSION},
                                                       {conf::kTlsV1_2, TLS1_2_VERSION},
                                                       {conf::kTlsV1_3, TLS1_3_VERSION}};
  int min = 0, max = 0;
  for (const auto& [bit, version] : kVersions) {
    if (!(protocols & bit)) continue;
    if (!min) min = version;
    max = version;
  }
  if (!min) {
    *err = "no TLS protocol is enabled (SSLv2 and SSLv3 are not supported)";
    return false;
  }
  SSL_CTX_set_min_proto_version(ctx, min);
  SSL_CTX_set_max_proto_version(ctx, max);
  // A hole in the range (TLSv1 TLSv1.2) is closed with the old NO_ flags.
  if (!(protocols & conf::kTlsV1_1) && min < TLS1_1_VERSION && max > TLS1_1_VERSION) {
    SSL_CTX_set_options(ctx, SSL_OP_NO_TLSv1_1);
  }
  if (!(protocols & conf::kTlsV1_2) && min < TLS1_2_VERSION && max > TLS1_2_VERSION) {
    SSL_CTX_set_options(ctx, SSL_OP_NO_TLSv1_2);
  }
  // OpenSSL 3 refuses TLSv1 and TLSv1.1 at its default security level: one
  // who asks for them gets them.
  if (min < TLS1_2_VERSION) SSL_CTX_set_security_level(ctx, 0);
  if (SSL_CTX_set_cipher_list(ctx, ciphers.c_str()) != 1) {
    ERR_clear_error();
    *err = "SSL_CTX_set_cipher_list(\"" + ciphers + "\") failed";
    return false;
  }
  return true;
}

bool checkServerSettings(const conf::SslSettings& s, std::string* err) {
  SSL_CTX* ctx = newServerCtx(s, err);
  if (!ctx) return false;
  SSL_CTX_free(ctx);
  return true;
}

std::unique_ptr<ServerContext> ServerContext::create(const conf::Config::ListenGroup& group, std::string* err) {
  std::unique_ptr<ServerContext> sc(new ServerContext());
  sc->group_ = &group;
  sc->ctx_ = newServerCtx(group.default_server->settings.ssl, err);
  if (!sc->ctx_) return nullptr;
  // The default server's certificates sit in the context: a handshake that
  // selects them (most do) has nothing to set per connection.
  for (const CertKeyPtr& ck : group.default_server->certificates) {
    if (SSL_CTX_use_cert_and_key(sc->ctx_, ck->cert(), ck->key(), ck->chain(), 1) != 1) {
      *err = "cannot use the certificate of the server in " + group.default_server->where + ": " + takeSslErrors();
      return nullptr;
    }
  }
  SSL_CTX_set_cert_cb(sc->ctx_, onCertificate, sc.get());
  SSL_CTX_set_alpn_select_cb(sc->ctx_, onAlpn, sc.get());
  return sc;
}

ServerContext::~ServerContext() { SSL_CTX_free(ctx_); }

std::unique_ptr<Channel> ServerContext::newChannel(void* owner) const {
  SSL* ssl = SSL_new(ctx_);
  if (!ssl) return nullptr;
  SSL_set_accept_state(ssl);
  SSL_set_app_data(ssl, owner);
  return std::make_unique<Channel>(ssl);
}

std::string ServerContext::serverName(SSL* ssl) {
  const char* sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  std::string name = sni ? sni : "";
  for (char& c : name) c = http::asciiLower(c);  // as Host is (connection.cc), never locale rules
  if (!name.empty() && name.back() == '.') name.pop_back();
  return name;
}

int ServerContext::runScript(SSL* ssl, const conf::Server* server) {
  if (!server) server = group_->default_server.get();
  const std::optional<conf::LuaCode>& code = server->settings.ssl.certificate_lua;
  if (!code || !script_) return 2;
  switch (script_->runCertificateScript(ssl, SSL_get_app_data(ssl), *code,
                                       server->settings.lua_budget_timeout_ms.value_or(0))) {
    case CertificateScript::Outcome::kPause: return -1;
    case CertificateScript::Outcome::kFail: return 0;
    case CertificateScript::Outcome::kContinue: break;
  }
  // What the code set, not certificates every SSL starts with (those of
  // the context, when it has some).
  X509* set = SSL_get_certificate(ssl);
  if (!set || set == SSL_CTX_get0_certificate(SSL_get_SSL_CTX(ssl))) return 2;
  if (SSL_check_private_key(ssl) != 1) {
    TG_LOG(LogLevel::kError, "ssl_certificate_by_lua* set a certificate without its private key (%s) on %s",
           takeSslErrors("no key").c_str(), group_->listen.key().c_str());
    return 0;
  }
  return 1;
}

// Runs once the ClientHello is read (SNI known): picks the certificates.
// Again after a pause (ssl_certificate_by_lua* waited), when the code ended.
int ServerContext::onCertificate(SSL* ssl, void* arg) {
  auto* self = static_cast<ServerContext*>(arg);
  std::string name = serverName(ssl);
  const conf::Server* named = name.empty() ? nullptr : http::findServer(*self->group_, name);
  if (int rc = self->runScript(ssl, named); rc != 2) return rc;
  if (self->dynamic_) {
    if (CertKeyPtr ck = self->dynamic_->find(name)) {
      SSL_certs_clear(ssl);
      return ck->useFor(ssl) ? 1 : 0;
    }
  }
  const conf::Server* server = named;
  const conf::Server* fallback = self->group_->default_server.get();
  if (!server || server->certificates.empty()) server = fallback;
  // The default server's certificates are the context's, unless the Lua
  // code cleared them (ngx.ssl.clear_certs) and set none.
  if (server->certificates == fallback->certificates && !server->certificates.empty() &&
      SSL_get_certificate(ssl) != nullptr) {
    return 1;
  }
  if (server->certificates.empty()) {
    TG_LOG(LogLevel::kError, "no certificate for the TLS server name \"%s\" on %s", name.c_str(),
           self->group_->listen.key().c_str());
    return 0;
  }
  SSL_certs_clear(ssl);
  for (const CertKeyPtr& ck : server->certificates) {
    if (!ck->useFor(ssl)) return 0;
  }
  return 1;
}

// ALPN: http/1.1 when offered; otherwise no protocol is selected (the
// client may still speak HTTP/1.1, as with nginx).
int ServerContext::onAlpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                          unsigned int inlen, void*) {
  static const unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kHttp11, sizeof(kHttp11), in, inlen) == OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

}  // namespace tidegate::tls
