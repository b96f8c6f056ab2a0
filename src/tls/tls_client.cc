#include "tls/tls_client.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <unordered_map>

#include "conf/config.h"

namespace tidegate::tls {
namespace {

// OpenSSL's first queued error as text ("" if none); empties the queue.
std::string takeFirstError() {
  unsigned long e = ERR_peek_error();
  std::string text;
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    text = buf;
  }
  ERR_clear_error();
  return text;
}

// OpenSSL's new-session callback (a TLS 1.2 handshake's end, a TLS 1.3
// ticket): the connection's box keeps the session. Returning 1 keeps the
// reference OpenSSL passed.
int onNewSession(SSL* ssl, SSL_SESSION* session) noexcept {
  auto* client = static_cast<TlsClient*>(SSL_get_app_data(ssl));
  if (!client) return 0;
  TlsSessionBox* box = client->sessionBox();
  if (box->session) SSL_SESSION_free(box->session);
  box->session = session;
  return 1;
}

// Loads a client certificate chain and its key into `ctx`. False with
// *err set if either does not load or they do not belong together.
bool useCertificate(SSL_CTX* ctx, const std::string& cert, const std::string& key, std::string* err) {
  const char* what = nullptr;
  EVP_PKEY* pkey = nullptr;
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) {
    err->assign("cannot load certificate \"").append(cert).append("\"");
    what = "SSL_CTX_use_certificate_chain_file";
  } else if (BIO* bio = BIO_new_file(key.c_str(), "r"); !bio || !(pkey = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr))) {
    BIO_free(bio);
    err->assign("cannot load certificate key \"").append(key).append("\"");
    what = "PEM_read_bio_PrivateKey";
  } else {
    BIO_free(bio);
    // SSL_CTX_use_PrivateKey refuses a key that is not the certificate's.
    if (SSL_CTX_use_PrivateKey(ctx, pkey) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
      err->assign("certificate \"").append(cert).append("\" does not match key \"").append(key).append("\"");
      what = "SSL_CTX_use_PrivateKey";
    }
    EVP_PKEY_free(pkey);
  }
  if (!what) return true;
  std::string reason = takeFirstError();
  if (!reason.empty()) err->append(": ").append(what).append("() failed (SSL: ").append(reason).append(")");
  return false;
}

// nginx's ngx_ssl_create() applied to the settings: every protocol allowed
// by version, then the unlisted ones switched off. The peer is verified
// after the handshake by the owner (SSL_VERIFY_NONE keeps the result for
// SSL_get_verify_result), as nginx and lua-nginx-module do.
SSL_CTX* newContext(const ClientSettings& s, std::string* err) {
  err->clear();
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    *err = "failed to create ssl context";
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(ctx, 0);
  SSL_CTX_set_max_proto_version(ctx, 0);
  uint64_t p = s.protocols != 0 ? s.protocols : conf::kTlsV1_2 | conf::kTlsV1_3;
  const std::pair<uint64_t, uint64_t> kOff[] = {{conf::kSslV3, SSL_OP_NO_SSLv3},
                                                {conf::kTlsV1, SSL_OP_NO_TLSv1},
                                                {conf::kTlsV1_1, SSL_OP_NO_TLSv1_1},
                                                {conf::kTlsV1_2, SSL_OP_NO_TLSv1_2},
                                                {conf::kTlsV1_3, SSL_OP_NO_TLSv1_3}};
  for (const auto& [bit, op] : kOff) {
    if (!(p & bit)) SSL_CTX_set_options(ctx, op);
  }
  SSL_CTX_set_verify_depth(ctx, static_cast<int>(s.verify_depth));
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, onNewSession);
  if (SSL_CTX_set_cipher_list(ctx, s.ciphers.c_str()) != 1) {
    err->assign("SSL_CTX_set_cipher_list(\"").append(s.ciphers).append("\") failed");
  } else if (!s.trusted_certificate.empty() &&
             SSL_CTX_load_verify_locations(ctx, s.trusted_certificate.c_str(), nullptr) != 1) {
    err->assign("SSL_CTX_load_verify_locations(\"").append(s.trusted_certificate).append("\") failed");
  } else if (s.trusted_certificate.empty() && s.system_ca && SSL_CTX_set_default_verify_paths(ctx) != 1) {
    err->assign("SSL_CTX_set_default_verify_paths() failed");
  } else if (!s.certificate.empty()) {
    useCertificate(ctx, s.certificate, s.certificate_key, err);
  }
  ERR_clear_error();
  if (err->empty()) return ctx;
  SSL_CTX_free(ctx);
  return nullptr;
}

// One SSL_CTX per distinct settings, made on first use in this worker and
// kept for its life (a reload starts new workers).
SSL_CTX* clientContext(const ClientSettings& s, std::string* err) {
  static std::unordered_map<std::string, SSL_CTX*> contexts;
  std::string key = s.cacheKey();
  auto it = contexts.find(key);
  if (it != contexts.end()) return it->second;
  SSL_CTX* ctx = newContext(s, err);
  if (ctx) contexts.emplace(std::move(key), ctx);
  return ctx;
}

}  // namespace

std::string ClientSettings::cacheKey() const {
  std::string key = trusted_certificate;
  key.append(1, '\0').append(system_ca ? "1" : "0");
  key.append(1, '\0').append(std::to_string(verify_depth));
  key.append(1, '\0').append(std::to_string(protocols));
  key.append(1, '\0').append(ciphers);
  key.append(1, '\0').append(certificate);
  key.append(1, '\0').append(certificate_key);
  return key;
}

bool checkCertificatePair(const std::string& cert, const std::string& key, std::string* err) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    err->assign("failed to create ssl context");
    return false;
  }
  bool ok = useCertificate(ctx, cert, key, err);
  SSL_CTX_free(ctx);
  return ok;
}

bool checkTrustedCertificate(const std::string& file, std::string* err) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  bool ok = ctx && SSL_CTX_load_verify_locations(ctx, file.c_str(), nullptr) == 1;
  if (!ok) {
    err->assign("SSL_CTX_load_verify_locations(\"").append(file).append("\") failed");
    std::string reason = takeFirstError();
    if (!reason.empty()) err->append(" (SSL: ").append(reason).append(")");
  }
  ERR_clear_error();
  SSL_CTX_free(ctx);
  return ok;
}

void TlsSessionBox::release() {
  if (--refs > 0) return;
  if (session) SSL_SESSION_free(session);
  delete this;
}

std::unique_ptr<TlsClient> TlsClient::create(const ClientSettings& s, const std::string& server_name,
                                             const TlsSessionBox* resume, std::string* err) {
  SSL_CTX* ctx = clientContext(s, err);
  if (!ctx) return nullptr;
  SSL* ssl = SSL_new(ctx);
  if (!ssl) {
    ERR_clear_error();
    *err = "failed to create ssl connection";
    return nullptr;
  }
  SSL_set_connect_state(ssl);
  std::unique_ptr<TlsClient> c(new TlsClient);
  c->ch_ = std::make_unique<Channel>(ssl);
  c->box_ = new TlsSessionBox;
  SSL_set_app_data(ssl, c.get());
  if (!server_name.empty() && SSL_set_tlsext_host_name(ssl, server_name.c_str()) != 1) {
    *err = "SSL_set_tlsext_host_name failed";
  } else if (resume && resume->session && SSL_set_session(ssl, resume->session) != 1) {
    *err = "ssl set session failed";
  }
  ERR_clear_error();
  if (!err->empty()) return nullptr;
  return c;
}

TlsClient::~TlsClient() {
  // Freed without a close_notify sent, OpenSSL would mark the session not
  // resumable; nginx does not hold an unclean close against a session
  // either (ngx_ssl_shutdown).
  if (ch_) SSL_set_shutdown(ch_->ssl(), SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  ch_.reset();
  if (box_) box_->release();
}

TlsClient::Step TlsClient::handshake() {
  switch (ch_->handshake()) {
    case Channel::Step::kDone:
      // A resumed TLS 1.2 session is not announced to onNewSession; a TLS
      // 1.3 ticket replaces this when it arrives.
      if (!box_->session) box_->session = SSL_get1_session(ch_->ssl());
      return Step::kDone;
    case Channel::Step::kWant:
    case Channel::Step::kPaused: return Step::kWant;
    case Channel::Step::kError: break;
  }
  return Step::kError;
}

bool TlsClient::handshaked() const { return ch_->handshaked(); }

TlsClient::Input TlsClient::feed(const char* data, size_t len, std::string* plain) {
  ch_->feed(data, len);
  if (!ch_->handshaked()) return Input::kOk;
  char buf[16384];  // one TLS record's plaintext at most (RFC 8446 section 5.1)
  for (;;) {
    int n = ch_->readPlain(buf, sizeof(buf));
    if (n > 0) {
      plain->append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) return Input::kOk;
    return n == -1 ? Input::kClosed : Input::kError;
  }
}

bool TlsClient::encrypt(const char* plain, size_t len) { return ch_->encrypt(std::string_view(plain, len)); }

const std::string& TlsClient::lastError() const { return ch_->error(); }

bool TlsClient::hasOutput() const { return ch_->hasOutput(); }

bool TlsClient::sessionReused() const { return SSL_session_reused(ch_->ssl()) == 1; }

std::string TlsClient::takeOutput() {
  std::string out;
  ch_->takeOutput(&out);
  return out;
}

std::string TlsClient::shutdown() {
  ch_->shutdown();
  return takeOutput();
}

long TlsClient::verifyResult() const { return SSL_get_verify_result(ch_->ssl()); }

bool TlsClient::certificateMatches(const std::string& host) const {
  X509* cert = SSL_get1_peer_certificate(ch_->ssl());
  if (!cert) return false;
  // An address is matched against the IP SANs, a name against the DNS ones.
  bool ok = X509_check_ip_asc(cert, host.c_str(), 0) == 1 || X509_check_host(cert, host.data(), host.size(), 0, nullptr) == 1;
  X509_free(cert);
  return ok;
}

}  // namespace tidegate::tls
