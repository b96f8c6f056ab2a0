#include "tls/channel.h"

#include <openssl/err.h>

#include "tls/certificate.h"

namespace tidegate::tls {

Channel::Channel(SSL* ssl) : ssl_(ssl) {
  in_ = BIO_new(BIO_s_mem());
  out_ = BIO_new(BIO_s_mem());
  // Reads of an empty BIO are "retry later", not EOF.
  BIO_set_mem_eof_return(in_, -1);
  BIO_set_mem_eof_return(out_, -1);
  SSL_set_bio(ssl_, in_, out_);
}

Channel::~Channel() { SSL_free(ssl_); }

void Channel::feed(const char* data, size_t len) {
  if (len > 0) BIO_write(in_, data, static_cast<int>(len));
}

void Channel::noteError(int rc) {
  int e = SSL_get_error(ssl_, rc);
  if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN) {
    error_ = takeSslErrors("unexpected end of the connection");
  } else {
    error_ = takeSslErrors("TLS error");
  }
}

Channel::Step Channel::handshake() {
  if (handshaked_) return Step::kDone;
  ERR_clear_error();
  int rc = SSL_do_handshake(ssl_);
  if (rc == 1) {
    handshaked_ = true;
    return Step::kDone;
  }
  switch (SSL_get_error(ssl_, rc)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE: return Step::kWant;
    case SSL_ERROR_WANT_X509_LOOKUP: return Step::kPaused;
    default: noteError(rc); return Step::kError;
  }
}

int Channel::readPlain(char* buf, size_t cap) {
  ERR_clear_error();
  size_t got = 0;
  int rc = SSL_read_ex(ssl_, buf, cap, &got);
  if (rc == 1) return static_cast<int>(got);
  switch (SSL_get_error(ssl_, rc)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE: return 0;
    case SSL_ERROR_ZERO_RETURN: return -1;
    default: noteError(rc); return -2;
  }
}

bool Channel::buffered() const { return SSL_pending(ssl_) > 0 || BIO_ctrl_pending(in_) > 0; }

bool Channel::encrypt(std::string_view plain) {
  ERR_clear_error();
  size_t done = 0;
  while (done < plain.size()) {
    size_t n = 0;
    // The memory BIO takes everything: a write never waits.
    if (SSL_write_ex(ssl_, plain.data() + done, plain.size() - done, &n) != 1) {
      noteError(0);
      return false;
    }
    done += n;
  }
  return true;
}

bool Channel::takeOutput(std::string* out) {
  size_t pending = BIO_ctrl_pending(out_);
  if (pending == 0) return false;
  size_t at = out->size();
  out->resize(at + pending);
  int n = BIO_read(out_, out->data() + at, static_cast<int>(pending));
  out->resize(at + (n > 0 ? static_cast<size_t>(n) : 0));
  return n > 0;
}

bool Channel::hasOutput() const { return BIO_ctrl_pending(out_) > 0; }

void Channel::shutdown() {
  if (!handshaked_) return;
  ERR_clear_error();
  SSL_shutdown(ssl_);  // queues close_notify; the peer's is not waited for
  ERR_clear_error();
}

}  // namespace tidegate::tls
