// The client side of TLS, for every outgoing connection that speaks it
// (cosockets' sslhandshake, proxy_pass https://). OpenSSL never touches
// the socket: it reads ciphertext from one memory BIO, which the owner's
// libuv read callback fills, and writes ciphertext to another, which the
// owner empties with uv_write, so a handshake never blocks the loop.
#pragma once

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <string>

#include "tls/channel.h"

namespace tidegate::tls {

// What an SSL_CTX is made from. Equal settings share one context per
// worker (made on first use, kept for the worker's life).
struct ClientSettings {
  std::string trusted_certificate;  // PEM CA file; empty: see system_ca
  bool system_ca = false;           // with no file: the system's default store (else nothing is trusted)
  uint64_t verify_depth = 1;
  uint64_t protocols = 0;           // conf::kSslV2 | ... | conf::kTlsV1_3; 0: TLSv1.2 TLSv1.3
  std::string ciphers = "DEFAULT";
  std::string certificate;          // client certificate chain (PEM), optional
  std::string certificate_key;      // its key (PEM)

  // The context cache's key: every field.
  std::string cacheKey() const;
};

// Checks that `cert` and `key` load and belong together (conf-time check of
// a client certificate). False with *err set (OpenSSL's reason) if not.
bool checkCertificatePair(const std::string& cert, const std::string& key, std::string* err);
// Checks that a CA file loads (conf-time). False with *err set if not.
bool checkTrustedCertificate(const std::string& file, std::string* err);

// The session a server gave one connection, shared by that connection and
// whoever keeps it for resumption (Lua session objects, the proxy's cache
// per peer): a TLS 1.3 server sends its ticket after the handshake, and the
// connection updates the box when it arrives (RFC 8446 section 4.6.1).
// Reference counted by hand; release() frees.
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

  // A client for the settings `s`, sending `server_name` as SNI when not
  // empty and offering `resume`'s session when it has one. Null with *err
  // set on failure.
  static std::unique_ptr<TlsClient> create(const ClientSettings& s, const std::string& server_name,
                                           const TlsSessionBox* resume, std::string* err);
  ~TlsClient();
  TlsClient(const TlsClient&) = delete;
  TlsClient& operator=(const TlsClient&) = delete;

  // Advances the handshake with the ciphertext fed so far.
  Step handshake();
  bool handshaked() const;
  // Takes ciphertext read from the socket; once the handshake is done, the
  // plaintext it holds is appended to *plain. kClosed: the peer's
  // close_notify.
  Input feed(const char* data, size_t len, std::string* plain);
  // Encrypts `plain` into the pending output. False on a TLS error.
  bool encrypt(const char* plain, size_t len);
  bool encrypt(const std::string& plain) { return encrypt(plain.data(), plain.size()); }
  // The ciphertext to write, in order; empties it.
  std::string takeOutput();
  bool hasOutput() const;
  // The close_notify alert to send (RFC 8446 section 6.1), once handshaked.
  std::string shutdown();

  // Verification of the peer, after the handshake: X509_V_OK or an X509_V_ERR_*.
  long verifyResult() const;
  // Whether the peer's certificate names `host` (RFC 6125 rules, as
  // X509_check_host; an IP address literal against its IP SANs).
  bool certificateMatches(const std::string& host) const;
  bool sessionReused() const;
  TlsSessionBox* sessionBox() { return box_; }
  // OpenSSL's reason for the last kError ("" if it gave none).
  const std::string& lastError() const;

 private:
  TlsClient() = default;

  std::unique_ptr<Channel> ch_;  // the SSL and its memory BIOs
  TlsSessionBox* box_ = nullptr;
};

}  // namespace tidegate::tls
