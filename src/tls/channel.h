// One TLS connection over memory BIOs: OpenSSL never touches the socket.
// Ciphertext read from the socket is fed in; plaintext comes out of
// readPlain(); plaintext to send is encrypted into pending ciphertext that
// the owner writes with libuv. No call ever blocks the loop.
#pragma once

#include <openssl/ssl.h>

#include <string>
#include <string_view>

namespace tidegate::tls {

class Channel {
 public:
  enum class Step { kDone, kWant, kPaused, kError };

  // Takes ownership of `ssl` (set to the accept or the connect state).
  explicit Channel(SSL* ssl);
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // Ciphertext from the peer.
  void feed(const char* data, size_t len);
  // Advances the handshake with what was fed. kPaused: a certificate
  // callback asked to wait (ssl_certificate_by_lua*); call again later.
  Step handshake();
  bool handshaked() const { return handshaked_; }
  // Decrypts into buf: > 0 bytes, 0 when more ciphertext is needed, -1 on
  // the peer's close_notify, -2 on a TLS error (error() says which).
  int readPlain(char* buf, size_t cap);
  // Whether decrypted or undecrypted input is held (readPlain would return
  // data or progress without another feed).
  bool buffered() const;
  // Encrypts `plain` into the pending ciphertext. False on a TLS error.
  bool encrypt(std::string_view plain);
  // Appends the pending ciphertext to *out (handshake messages, records,
  // alerts), in order; true if there was any.
  bool takeOutput(std::string* out);
  bool hasOutput() const;
  // Queues close_notify (RFC 8446 6.1) when the handshake is done.
  void shutdown();
  // OpenSSL's reason for the last kError / -2, emptied from its queue.
  const std::string& error() const { return error_; }
  SSL* ssl() const { return ssl_; }

 private:
  void noteError(int rc);

  SSL* ssl_;
  BIO* in_ = nullptr;   // owned by ssl_
  BIO* out_ = nullptr;  // owned by ssl_
  bool handshaked_ = false;
  std::string error_;
};

}  // namespace tidegate::tls
