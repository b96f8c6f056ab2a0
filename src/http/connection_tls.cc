// A connection's TLS: the handshake, decryption of what the client sends
// into the read buffer (then the same path as plaintext), and encryption of
// the output in flush(). OpenSSL works on memory BIOs (tls::Channel).
#include "core/log.h"
#include "http/connection.h"
#include "http/http_server.h"
#include "tls/server_context.h"

namespace tidegate::http {

using core::LogLevel;

void Connection::handleTlsRead(ssize_t nread, const uv_buf_t* buf) {
  if (closing_) return;
  bool discarding = phase_ == Phase::kLingering || close_after_write_;
  if (nread <= 0 || discarding) {
    // EOF and errors as for plaintext; after the last answer, input is
    // only watched for the close and never decrypted.
    if (nread != 0) handleRead(nread < 0 ? nread : 0);
    if (discarding && nread > 0) last_io_ms_ = uv_now(server_->loop());
    return;
  }
  last_io_ms_ = uv_now(server_->loop());
  if (!tls_->handshaked() && SSL_in_before(tls_->ssl()) && buf->base[0] != 0x16) {
    plainRequestOnTlsPort();  // not a TLS record (0x16: handshake): a plain request
    return;
  }
  tls_->feed(buf->base, static_cast<size_t>(nread));
  if (!tls_->handshaked() && !handshakeStep()) return;
  pumpTls();
}

// As nginx: a plain HTTP request to a TLS port gets a plain 400 that says
// so, then the connection closes.
void Connection::plainRequestOnTlsPort() {
  TG_LOG_CONN_LIMITED(LogLevel::kInfo, info_.id, "client sent plain HTTP request to HTTPS port, client: %s",
                      info_.remote_addr.c_str());
  static const char kBody[] =
      "<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n<body>\r\n"
      "<center><h1>400 Bad Request</h1></center>\r\n"
      "<center>The plain HTTP request was sent to HTTPS port</center>\r\n</body>\r\n</html>\r\n";
  std::string answer = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: ";
  answer.append(std::to_string(sizeof(kBody) - 1)).append("\r\nConnection: close\r\n\r\n").append(kBody);
  tls_.reset();  // the answer and what follows are plaintext
  out_ = std::move(answer);
  close_after_write_ = true;
  flush();
}

// False while the handshake is not done (or failed: the connection closes).
bool Connection::handshakeStep() {
  tls::Channel::Step step = tls_->handshake();
  if (step == tls::Channel::Step::kError) {
    // As nginx: a client's failed handshake is logged at info.
    TG_LOG_CONN_LIMITED(LogLevel::kInfo, info_.id, "SSL_do_handshake() failed (%s) while SSL handshaking, client: %s",
                        tls_->error().c_str(), info_.remote_addr.c_str());
    writeTlsAlert();  // the one OpenSSL queued for the client
    close();
    return false;
  }
  flush();  // the server's flight
  if (closing_ || step != tls::Channel::Step::kDone) return false;
  SSL* ssl = tls_->ssl();
  info_.ssl_protocol = SSL_get_version(ssl);
  info_.ssl_cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(ssl));
  info_.ssl_server_name = tls::ServerContext::serverName(ssl);
  info_.ssl_session_reused = SSL_session_reused(ssl) == 1;
  return true;
}

// Moves decrypted input into the read buffer, through handleRead() as if it
// came off the socket, while reading is on.
void Connection::pumpTls() {
  while (!closing_ && reading_ && tls_->handshaked()) {
    if (phase_ == Phase::kLingering || close_after_write_) return;
    if (!reserve(512) && cap_ == end_) {
      handleRead(UV_ENOBUFS);  // as a full buffer is for plaintext
      return;
    }
    int n = tls_->readPlain(buf_ + end_, cap_ - end_);
    if (n == 0) break;
    if (n == -2) {
      TG_LOG_CONN_LIMITED(LogLevel::kInfo, info_.id, "SSL_read() failed (%s)%s", tls_->error().c_str(),
                          describe().c_str());
      close();
      return;
    }
    handleRead(n < 0 ? UV_EOF : n);  // -1: the client's close_notify
  }
  // A key update or a TLS 1.3 ticket request may have queued records.
  if (!closing_ && tls_->hasOutput()) flush();
}

// Plaintext waits in OpenSSL while reading is paused; the socket will not
// announce it again, so the connection's timer brings it in on a later
// loop turn (never from inside the call that resumed reading).
void Connection::scheduleTlsPump() {
  if (tls_pump_ || closing_) return;
  tls_pump_ = true;
  timerSoon();
}

void Connection::timerSoon() {
  timer_fires_at_ = uv_now(server_->loop());
  uv_timer_start(&timer_, onTimer, 0, 0);
}

// close_notify (RFC 8446 6.1), best effort: when nothing else waits for
// the socket, as nginx's ngx_ssl_shutdown does; once per connection.
void Connection::sendCloseNotify() {
  if (!tls_ || !tls_->handshaked() || write_pending_ || closing_ || SSL_get_shutdown(tls_->ssl()) & SSL_SENT_SHUTDOWN) {
    return;
  }
  tls_->shutdown();
  writeTlsAlert();
}

// An alert OpenSSL queued, written at once if the socket takes it (the
// connection is about to close: nothing waits for a partial write).
void Connection::writeTlsAlert() {
  std::string alert;
  if (!tls_->takeOutput(&alert)) return;
  uv_buf_t b = uv_buf_init(alert.data(), static_cast<unsigned>(alert.size()));
  uv_try_write(reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1);
}

tls::CertificateScript::Outcome Connection::runCertificateLua(SSL* ssl, const conf::LuaCode& code,
                                                              uint64_t budget_ms) {
  using Outcome = tls::CertificateScript::Outcome;
  switch (cert_lua_) {
    case CertLua::kRunning: return Outcome::kPause;  // more of the handshake came meanwhile
    case CertLua::kDone: return Outcome::kContinue;  // resumed (or a second ClientHello after a retry request)
    case CertLua::kFailed: return Outcome::kFail;
    case CertLua::kNone: break;
  }
  ContentHandler* lua = server_->contentHandler();
  if (!lua) {
    TG_LOG_CONN(LogLevel::kError, info_.id, "ssl_certificate_by_lua* cannot run: no Lua VM, client: %s",
                info_.remote_addr.c_str());
    cert_lua_ = CertLua::kFailed;
    return Outcome::kFail;
  }
  bool ok = true;
  cert_lua_ = CertLua::kRunning;
  cert_task_ = lua->runSslCertificate(ssl, info_, code, budget_ms, &ok, [this](bool ok) { certLuaEnded(ok); });
  if (cert_task_) return Outcome::kPause;
  cert_lua_ = ok ? CertLua::kDone : CertLua::kFailed;
  return ok ? Outcome::kContinue : Outcome::kFail;
}

// From inside the task: the handshake is stepped again from the timer,
// where the task can be freed.
void Connection::certLuaEnded(bool ok) {
  cert_lua_ = ok ? CertLua::kDone : CertLua::kFailed;
  cert_resume_ = true;
  timerSoon();
}

void Connection::sealTlsOutput() {
  if (!out_.empty() && tls_->handshaked()) {
    if (!tls_->encrypt(out_)) {
      TG_LOG_CONN_LIMITED(LogLevel::kInfo, info_.id, "SSL_write() failed (%s)%s", tls_->error().c_str(),
                          describe().c_str());
      out_.clear();
      close();
      return;
    }
    out_.clear();
  }
  tls_->takeOutput(&wire_);
}

}  // namespace tidegate::http
