// The client TLS of a TCP cosocket (sslhandshake). OpenSSL never touches
// the socket: it reads ciphertext from one memory BIO, which the libuv read
// callback fills, and writes ciphertext to another, which the cosocket
// empties with uv_write, so a handshake never blocks the loop.
#pragma once

#include <openssl/ssl.h>

#include <lua.hpp>

#include <memory>
#include <string>

#include "conf/config.h"

namespace tidegate::lua {

// The session a server gave one connection, shared by that connection and
// the Lua session objects made from it: a TLS 1.3 server sends its ticket
// after the handshake, and the connection updates the box when it arrives
// (RFC 8446 section 4.6.1). Reference counted by hand; release() frees.
struct TlsSessionBox {
  SSL_SESSION* session = nullptr;
  int refs = 1;

  TlsSessionBox* retain() {
    refs++;
    return this;
  }
  void release();
};

class TlsClient {
 public:
  enum class Step { kDone, kWant, kError };
  enum class Input { kOk, kClosed, kError };

  // A client for the TLS settings `s` (their SSL_CTX is made once per
  // worker), sending `server_name` as SNI when not empty and offering
  // `resume`'s session when it has one. Null with *err set on failure.
  static std::unique_ptr<TlsClient> create(const conf::HttpSettings& s, const std::string& server_name,
                                           const TlsSessionBox* resume, std::string* err);
  ~TlsClient();
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;

  // Advances the handshake with the ciphertext fed so far.
  Step handshake();
  bool handshaked() const { return handshaked_; }
  // Takes ciphertext read from the socket; once the handshake is done, the
  // plaintext it holds is appended to *plain. kClosed: the peer's
  // close_notify.
  Input feed(const char* data, size_t len, std::string* plain);
  // Encrypts `plain` into the pending output. False on a TLS error.
  bool encrypt(const std::string& plain);
  // The ciphertext to write, in order; empties it.
  std::string takeOutput();
  // The close_notify alert to send (RFC 8446 section 6.1), once handshaked.
  std::string shutdown();

  // Verification of the peer, after the handshake: X509_V_OK or an X509_V_ERR_*.
  long verifyResult() const;
  // Whether the peer's certificate names `host` (RFC 6125 rules, as X509_check_host).
  bool certificateMatches(const std::string& host) const;
  TlsSessionBox* sessionBox() { return box_; }

 private:
  TlsClient() = default;

  SSL* ssl_ = nullptr;
  BIO* in_ = nullptr;   // ciphertext from the peer (owned by ssl_)
  BIO* out_ = nullptr;  // ciphertext to the peer (owned by ssl_)
  TlsSessionBox* box_ = nullptr;
  bool handshaked_ = false;
};

// --- sslhandshake's results (the Lua side) ---

// The session object at `idx` (a userdata that pushTlsSession made), or null.
const TlsSessionBox* toTlsSession(lua_State* L, int idx);
// `tls`'s session as a Lua object, or true when the caller passed false
// for it. Stack: [] -> [session | true]
void pushTlsSession(lua_State* L, TlsClient* tls, bool want_session);
// A finished handshake, checked as lua-nginx-module does when `verify`:
// the chain (lua_ssl_trusted_certificate, lua_ssl_verify_depth), then
// `name`, when not empty, against the certificate. Pushes the results;
// *ok false for a failure. Stack: [] -> [session | true] or [nil, err]
int pushHandshakeResult(lua_State* L, TlsClient* tls, const std::string& name, bool verify, bool want_session,
                        bool* ok);

}  // namespace tidegate::lua
