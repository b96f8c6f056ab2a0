// An in-test HTTPS upstream for the proxy's TLS tests: blocking OpenSSL on
// one thread per connection (ScriptedPeer), HTTP/1.1 with keepalive. It
// records what each connection's handshake was (the SNI it saw, whether
// the session was resumed, whether a client certificate came) and answers:
//   GET  /info   "sni=NAME reused=0|1 cert=0|1 host=HOST" (Content-Length)
//   GET  /close  the same, with Connection: close, then close_notify
//   GET  /big?N  N bytes, chunked
//   POST /echo   the request body back, chunked
//   GET  /ws     101 Switching Protocols, then every byte back until the end
//   anything else "ok" (Content-Length)
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "scripted_peer.h"

namespace tidegate::test {

class TlsUpstream {
 public:
  struct Options {
    std::string cert;            // chain file (leaf first)
    std::string key;
    std::string client_ca;       // when set: a client certificate signed by it is required
  };
  struct Handshake {
    std::string sni;
    bool reused = false;
    bool client_cert = false;
  };

  explicit TlsUpstream(const Options& opt)
      : ctx_(SSL_CTX_new(TLS_server_method()), SSL_CTX_free), peer_([this](int fd) { serve(fd); }) {
    SSL_CTX* ctx = ctx_.get();
    ok_ = SSL_CTX_use_certificate_chain_file(ctx, opt.cert.c_str()) == 1 &&
          SSL_CTX_use_PrivateKey_file(ctx, opt.key.c_str(), SSL_FILETYPE_PEM) == 1;
    SSL_CTX_set_session_id_context(ctx, reinterpret_cast<const unsigned char*>("tgu"), 3);
    SSL_CTX_set_tlsext_servername_callback(ctx, onServerName);
    if (!opt.client_ca.empty()) {
      ok_ = ok_ && SSL_CTX_load_verify_locations(ctx, opt.client_ca.c_str(), nullptr) == 1;
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    }
  }
  bool ok() const { return ok_; }
  int port() const { return peer_.port(); }
  int accepted() const { return peer_.accepted(); }
  // The handshakes that completed, in order.
  std::vector<Handshake> handshakes() const {
    std::lock_guard<std::mutex> lock(mu_);
    return handshakes_;
  }
  size_t handshakeCount() const { return handshakes().size(); }

 private:
  // Buffered reads over SSL (the request head, then a body).
  struct Reader {
    SSL* ssl;
    std::string buf;
    bool fill() {
      char tmp[16384];
      int n = SSL_read(ssl, tmp, sizeof(tmp));
      if (n <= 0) return false;
      buf.append(tmp, static_cast<size_t>(n));
      return true;
    }
    bool line(std::string* out) {
      size_t eol;
      while ((eol = buf.find("\r\n")) == std::string::npos) {
        if (!fill()) return false;
      }
      out->assign(buf, 0, eol);
      buf.erase(0, eol + 2);
      return true;
    }
    bool bytes(size_t n, std::string* out) {
      while (buf.size() < n) {
        if (!fill()) return false;
      }
      out->append(buf, 0, n);
      buf.erase(0, n);
      return true;
    }
  };

  static int onServerName(SSL* ssl, int*, void*) {
    const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name) *static_cast<std::string*>(SSL_get_app_data(ssl)) = name;
    return SSL_TLSEXT_ERR_OK;
  }

  static bool writeAllTls(SSL* ssl, const std::string& s) {
    return s.empty() || SSL_write(ssl, s.data(), static_cast<int>(s.size())) > 0;
  }

  static std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
    return s;
  }

  // Reads one request; false when the connection ended.
  static bool readRequest(Reader& rd, std::string* target, std::string* host, std::string* body) {
    std::string line;
    if (!rd.line(&line)) return false;
    *target = line;
    size_t length = 0;
    bool chunked = false;
    for (;;) {
      if (!rd.line(&line)) return false;
      if (line.empty()) break;
      size_t colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = lower(line.substr(0, colon));
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value[0] == ' ') value.erase(0, 1);
      if (name == "host") *host = value;
      if (name == "content-length") length = std::stoul(value);
      if (name == "transfer-encoding" && lower(value) == "chunked") chunked = true;
    }
    body->clear();
    if (!chunked) return rd.bytes(length, body);
    for (;;) {
      if (!rd.line(&line)) return false;
      size_t n = std::stoul(line, nullptr, 16);
      if (n == 0) return rd.line(&line);
      if (!rd.bytes(n, body) || !rd.line(&line)) return false;
    }
  }

  static std::string chunked(const std::string& body) {
    std::string out;
    for (size_t off = 0; off < body.size(); off += 65536) {
      size_t n = std::min<size_t>(65536, body.size() - off);
      char hex[24];
      snprintf(hex, sizeof(hex), "%zx\r\n", n);
      out.append(hex).append(body, off, n).append("\r\n");
    }
    return out.append("0\r\n\r\n");
  }

  // An upgraded connection: every byte back until the peer ends it.
  static void echo(Reader& rd) {
    while (rd.buf.empty() || writeAllTls(rd.ssl, rd.buf)) {
      rd.buf.clear();
      if (!rd.fill()) return;
    }
  }

  void serve(int fd) {
    SSL* ssl = SSL_new(ctx_.get());
    SSL_set_fd(ssl, fd);
    std::string sni;
    SSL_set_app_data(ssl, &sni);
    if (SSL_accept(ssl) == 1) {
      Handshake h;
      h.sni = sni;
      h.reused = SSL_session_reused(ssl) == 1;
      X509* cert = SSL_get1_peer_certificate(ssl);
      h.client_cert = cert != nullptr;
      X509_free(cert);
      {
        std::lock_guard<std::mutex> lock(mu_);
        handshakes_.push_back(h);
      }
      Reader rd{ssl, {}};
      std::string target, host, body;
      while (readRequest(rd, &target, &host, &body)) {
        std::string info = "sni=" + h.sni + " reused=" + (h.reused ? "1" : "0") + " cert=" +
                           (h.client_cert ? "1" : "0") + " host=" + host;
        bool close = target.find(" /close ") != std::string::npos;
        std::string out;
        if (target.rfind("GET /ws ", 0) == 0) {
          writeAllTls(ssl, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
          echo(rd);
          break;
        }
        if (target.rfind("GET /big?", 0) == 0) {
          size_t n = std::stoul(target.substr(9));
          out = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(std::string(n, 'b'));
        } else if (target.rfind("POST /echo ", 0) == 0) {
          out = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(body);
        } else {
          std::string text = target.find(" /info ") != std::string::npos || close ? info : "ok";
          out = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(text.size()) + "\r\n" +
                (close ? "Connection: close\r\n" : "") + "\r\n" + text;
        }
        if (!writeAllTls(ssl, out) || close) break;
      }
      SSL_shutdown(ssl);
    }
    SSL_free(ssl);
  }

  std::unique_ptr<SSL_CTX, void (*)(SSL_CTX*)> ctx_;  // outlives the peer's threads
  mutable std::mutex mu_;
  std::vector<Handshake> handshakes_;
  bool ok_ = false;
  ScriptedPeer peer_;  // last: its threads stop before the rest goes
};

}  // namespace tidegate::test
