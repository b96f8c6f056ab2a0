#include "lua/api/socket_tls.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <unordered_map>

namespace tidegate::lua {
namespace {

const char kSessionMeta[] = "tidegate.socket.ssl_session";

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

// nginx's ngx_ssl_create() applied to the lua_ssl_* settings: every
// protocol allowed by version, then the unlisted ones switched off. The
// peer is verified after the handshake (SSL_VERIFY_NONE keeps the result
// for SSL_get_verify_result), as lua-nginx-module does.
SSL_CTX* newContext(const conf::HttpSettings& s, std::string* err) {
  err->clear();
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) {
    *err = "failed to create ssl context";
    return nullptr;
  }
  SSL_CTX_set_min_proto_version(ctx, 0);
  SSL_CTX_set_max_proto_version(ctx, 0);
  uint64_t p = s.lua_ssl_protocols.value_or(conf::kTlsV1_2 | conf::kTlsV1_3);
  const std::pair<uint64_t, uint64_t> kOff[] = {{conf::kSslV3, SSL_OP_NO_SSLv3},
                                                {conf::kTlsV1, SSL_OP_NO_TLSv1},
                                                {conf::kTlsV1_1, SSL_OP_NO_TLSv1_1},
                                                {conf::kTlsV1_2, SSL_OP_NO_TLSv1_2},
                                                {conf::kTlsV1_3, SSL_OP_NO_TLSv1_3}};
  for (const auto& [bit, op] : kOff) {
    if (!(p & bit)) SSL_CTX_set_options(ctx, op);
  }
  SSL_CTX_set_verify_depth(ctx, static_cast<int>(s.lua_ssl_verify_depth.value_or(1)));
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, onNewSession);
  const std::string ciphers = s.lua_ssl_ciphers.value_or("DEFAULT");
  if (SSL_CTX_set_cipher_list(ctx, ciphers.c_str()) != 1) {
    *err = "SSL_CTX_set_cipher_list(\"" + ciphers + "\") failed";
  } else if (s.lua_ssl_trusted_certificate &&
             SSL_CTX_load_verify_locations(ctx, s.lua_ssl_trusted_certificate->c_str(), nullptr) != 1) {
    *err = "SSL_CTX_load_verify_locations(\"" + *s.lua_ssl_trusted_certificate + "\") failed";
  }
  ERR_clear_error();
  if (err->empty()) return ctx;
  SSL_CTX_free(ctx);
  return nullptr;
}

// One SSL_CTX per distinct lua_ssl_* settings, made on first use in this
// worker and kept for its life (a reload starts new workers).
SSL_CTX* clientContext(const conf::HttpSettings& s, std::string* err) {
  static std::unordered_map<std::string, SSL_CTX*> contexts;
  std::string key = s.lua_ssl_trusted_certificate.value_or("");
  key.append(1, '\0').append(std::to_string(s.lua_ssl_verify_depth.value_or(1)));
  key.append(1, '\0').append(std::to_string(s.lua_ssl_protocols.value_or(0)));
  key.append(1, '\0').append(s.lua_ssl_ciphers.value_or(""));
  auto it = contexts.find(key);
  if (it != contexts.end()) return it->second;
  SSL_CTX* ctx = newContext(s, err);
  if (ctx) contexts.emplace(std::move(key), ctx);
  return ctx;
}

}  // namespace

void TlsSessionBox::release() {
  if (--refs > 0) return;
  if (session) SSL_SESSION_free(session);
  delete this;
}

std::unique_ptr<TlsClient> TlsClient::create(const conf::HttpSettings& s, const std::string& server_name,
                                             const TlsSessionBox* resume, std::string* err) {
  SSL_CTX* ctx = clientContext(s, err);
  if (!ctx) return nullptr;
  std::unique_ptr<TlsClient> c(new TlsClient);
  c->box_ = new TlsSessionBox;
  c->ssl_ = SSL_new(ctx);
  c->in_ = BIO_new(BIO_s_mem());
  c->out_ = BIO_new(BIO_s_mem());
  if (!c->ssl_ || !c->in_ || !c->out_) {
    BIO_free(c->in_);
    BIO_free(c->out_);
    *err = "failed to create ssl connection";
    return nullptr;
  }
  // An empty input BIO means "more to come" (SSL_ERROR_WANT_READ), not EOF.
  BIO_set_mem_eof_return(c->in_, -1);
  SSL_set_bio(c->ssl_, c->in_, c->out_);
  SSL_set_connect_state(c->ssl_);
  SSL_set_app_data(c->ssl_, c.get());
  if (!server_name.empty() && SSL_set_tlsext_host_name(c->ssl_, server_name.c_str()) != 1) {
    *err = "SSL_set_tlsext_host_name failed";
  } else if (resume && resume->session && SSL_set_session(c->ssl_, resume->session) != 1) {
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
  if (ssl_) SSL_set_shutdown(ssl_, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  SSL_free(ssl_);  // frees both BIOs
  if (box_) box_->release();
}

TlsClient::Step TlsClient::handshake() {
  int rc = SSL_do_handshake(ssl_);
  if (rc == 1) {
    handshaked_ = true;
    // A resumed TLS 1.2 session is not announced to onNewSession; a TLS
    // 1.3 ticket replaces this when it arrives.
    if (!box_->session) box_->session = SSL_get1_session(ssl_);
    return Step::kDone;
  }
  int e = SSL_get_error(ssl_, rc);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return Step::kWant;
  ERR_clear_error();
  return Step::kError;
}

TlsClient::Input TlsClient::feed(const char* data, size_t len, std::string* plain) {
  if (len > 0) BIO_write(in_, data, static_cast<int>(len));  // a memory BIO takes all
  if (!handshaked_) return Input::kOk;
  char buf[16384];  // one TLS record's plaintext at most (RFC 8446 section 5.1)
  for (;;) {
    size_t n = 0;
    int rc = SSL_read_ex(ssl_, buf, sizeof(buf), &n);
    if (rc == 1) {
      plain->append(buf, n);
      continue;
    }
    int e = SSL_get_error(ssl_, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return Input::kOk;
    if (e == SSL_ERROR_ZERO_RETURN) return Input::kClosed;
    ERR_clear_error();
    return Input::kError;
  }
}

bool TlsClient::encrypt(const std::string& plain) {
  size_t written = 0;
  if (SSL_write_ex(ssl_, plain.data(), plain.size(), &written) == 1) return true;
  ERR_clear_error();
  return false;
}

std::string TlsClient::takeOutput() {
  std::string out(BIO_ctrl_pending(out_), '\0');
  if (!out.empty()) BIO_read(out_, out.data(), static_cast<int>(out.size()));
  return out;
}

std::string TlsClient::shutdown() {
  if (!handshaked_) return {};
  SSL_shutdown(ssl_);
  ERR_clear_error();
  return takeOutput();
}

long TlsClient::verifyResult() const { return SSL_get_verify_result(ssl_); }

bool TlsClient::certificateMatches(const std::string& host) const {
  X509* cert = SSL_get1_peer_certificate(ssl_);
  if (!cert) return false;
  bool ok = X509_check_host(cert, host.data(), host.size(), 0, nullptr) == 1;
  X509_free(cert);
  return ok;
}

int sessionGc(lua_State* L) {
  auto** box = static_cast<TlsSessionBox**>(lua_touserdata(L, 1));
  if (*box) (*box)->release();
  *box = nullptr;
  return 0;
}

const TlsSessionBox* toTlsSession(lua_State* L, int idx) {
  auto** box = static_cast<TlsSessionBox**>(luaL_testudata(L, idx, kSessionMeta));
  return box ? *box : nullptr;
}

void pushTlsSession(lua_State* L, TlsClient* tls, bool want_session) {
  if (!want_session) {
    lua_pushboolean(L, 1);
    return;
  }
  auto** box = static_cast<TlsSessionBox**>(lua_newuserdata(L, sizeof(TlsSessionBox*)));
  *box = tls->sessionBox()->retain();
  if (luaL_newmetatable(L, kSessionMeta)) {
    lua_pushcfunction(L, sessionGc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
}

int pushHandshakeResult(lua_State* L, TlsClient* tls, const std::string& name, bool verify, bool want_session,
                        bool* ok) {
  *ok = false;
  if (verify) {
    long rc = tls->verifyResult();
    if (rc != X509_V_OK) {
      lua_pushnil(L);
      lua_pushfstring(L, "%d: %s", static_cast<int>(rc), X509_verify_cert_error_string(rc));
      return 2;
    }
    if (!name.empty() && !tls->certificateMatches(name)) {
      lua_pushnil(L);
      lua_pushliteral(L, "certificate host mismatch");
      return 2;
    }
  }
  *ok = true;
  pushTlsSession(L, tls, want_session);
  return 1;
}

}  // namespace tidegate::lua
