#include "tls_support.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

namespace tidegate::test {
namespace {

using Clock = std::chrono::steady_clock;

std::mutex g_certs_mu;

const char kCaExt[] = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n";

std::string newKey(bool ecdsa) {
  return ecdsa ? "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes" : "-newkey rsa:2048 -nodes";
}

std::string lastSslError() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "no OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

}  // namespace

TlsCerts& TlsCerts::get() {
  static TlsCerts certs;
  return certs;
}

bool TlsCerts::run(const std::string& cmd) const {
  std::string full = "cd '" + dir_.path() + "' && (" + cmd + ") >>openssl.log 2>&1";
  return std::system(full.c_str()) == 0;
}

TlsCerts::TlsCerts() {
  dir_.write("ca.ext", kCaExt);
  const std::string ca = "openssl req -x509 " + newKey(true) + " -days 2 -addext basicConstraints=critical,CA:TRUE" +
                         " -addext keyUsage=critical,keyCertSign,cRLSign";
  ok_ = run(ca + " -keyout ca.key -out ca.crt -subj /CN=tidegate-test-ca") &&
        run(ca + " -keyout other-ca.key -out other-ca.crt -subj /CN=tidegate-untrusted-ca") &&
        run("openssl req " + newKey(true) + " -keyout inter.key -out inter.csr -subj /CN=tidegate-test-intermediate") &&
        run("openssl x509 -req -in inter.csr -CA ca.crt -CAkey ca.key -set_serial 2 -days 2 -extfile ca.ext"
            " -out inter.crt");
}

TlsCerts::Leaf TlsCerts::leaf(const std::string& id, const std::vector<std::string>& names, Options opt) {
  std::lock_guard<std::mutex> lock(g_certs_mu);
  // Test files share this cache: one id must always mean one certificate.
  std::string spec = std::to_string(static_cast<int>(opt.signer)) + (opt.ecdsa ? " ec " : " rsa ") +
                     std::to_string(opt.days);
  for (const auto& n : names) spec.append(" ").append(n);
  auto it = leaves_.find(id);
  if (it != leaves_.end()) {
    if (specs_[id] != spec) throw std::logic_error("TlsCerts: leaf \"" + id + "\" asked for again with other names or options");
    return it->second;
  }
  specs_[id] = spec;
  Leaf leaf{path(id + ".crt"), path(id + ".key"), path(id + ".leaf.crt")};
  std::string san = "subjectAltName=";
  for (size_t i = 0; i < names.size(); i++) san += (i ? ",DNS:" : "DNS:") + names[i];
  dir_.write(id + ".ext", san + "\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n");
  const std::string cn = names.empty() ? "tidegate-test" : names[0];
  bool made;
  if (opt.signer == Signer::kSelf) {
    made = run("openssl req -x509 " + newKey(opt.ecdsa) + " -keyout " + id + ".key -out " + id +
               ".leaf.crt -subj '/CN=" + cn + "' -days " + std::to_string(opt.days) + " -addext '" + san + "'");
  } else {
    const char* ca = opt.signer == Signer::kCa ? "ca" : opt.signer == Signer::kIntermediate ? "inter" : "other-ca";
    static int serial = 100;
    made = run("openssl req " + newKey(opt.ecdsa) + " -keyout " + id + ".key -out " + id + ".csr -subj '/CN=" + cn +
               "'") &&
           run(std::string("openssl x509 -req -in ") + id + ".csr -CA " + ca + ".crt -CAkey " + ca +
               ".key -set_serial " + std::to_string(++serial) + " -days " + std::to_string(opt.days) + " -extfile " +
               id + ".ext -out " + id + ".leaf.crt");
  }
  std::string chain = opt.signer == Signer::kIntermediate ? " inter.crt" : "";
  if (!made || !run("cat " + id + ".leaf.crt" + chain + " > " + id + ".crt")) ok_ = false;
  leaves_[id] = leaf;
  return leaf;
}

// --- TlsConn -----------------------------------------------------------------------

TlsConn::~TlsConn() { close(); }

void TlsConn::close() {
  // Counts as closed cleanly without a close_notify (the peer may be gone):
  // SSL_free marks the session of a connection that was not shut down as
  // not resumable, and the session tests resume them.
  if (ssl_ && SSL_is_init_finished(ssl_)) SSL_set_shutdown(ssl_, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  if (ssl_) SSL_free(ssl_);
  if (ctx_) SSL_CTX_free(ctx_);
  ssl_ = nullptr;
  ctx_ = nullptr;
  RawClient::close();
}

bool TlsConn::connectTls(int port, const TlsClientOptions& opt, Ms timeout) {
  error_.clear();
  if (!connect(port, timeout)) {
    error_ = "connect failed";
    return false;
  }
  ctx_ = SSL_CTX_new(TLS_client_method());
  if (opt.min_version) SSL_CTX_set_min_proto_version(ctx_, opt.min_version);
  if (opt.max_version) SSL_CTX_set_max_proto_version(ctx_, opt.max_version);
  if (opt.min_version && opt.min_version < TLS1_2_VERSION) SSL_CTX_set_security_level(ctx_, 0);
  if (!opt.ciphers.empty()) SSL_CTX_set_cipher_list(ctx_, opt.ciphers.c_str());
  if (!opt.sigalgs.empty()) SSL_CTX_set1_sigalgs_list(ctx_, opt.sigalgs.c_str());
  if (!opt.groups.empty()) SSL_CTX_set1_groups_list(ctx_, opt.groups.c_str());
  if (!opt.ca_file.empty()) {
    SSL_CTX_load_verify_locations(ctx_, opt.ca_file.c_str(), nullptr);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
  }
  ssl_ = SSL_new(ctx_);
  SSL_set_fd(ssl_, fd_);
  if (!opt.sni.empty()) SSL_set_tlsext_host_name(ssl_, opt.sni.c_str());
  if (!opt.alpn.empty()) {
    std::string wire;
    for (const auto& p : opt.alpn) {
      wire += static_cast<char>(p.size());
      wire += p;
    }
    SSL_set_alpn_protos(ssl_, reinterpret_cast<const unsigned char*>(wire.data()), static_cast<unsigned>(wire.size()));
  }
  if (opt.session) SSL_set_session(ssl_, opt.session);
  timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  if (SSL_connect(ssl_) != 1) {
    error_ = lastSslError();
    return false;
  }
  if (opt.keep_session) {
    // A TLS 1.3 session ticket comes after the handshake: read what is
    // already there so it is processed (a peek that returns nothing).
    char c;
    pollfd p{fd_, POLLIN, 0};
    if (SSL_version(ssl_) == TLS1_3_VERSION && poll(&p, 1, 200) > 0) {
      timeval short_tv{0, 100000};
      setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &short_tv, sizeof(short_tv));
      SSL_peek(ssl_, &c, 1);
      ERR_clear_error();
      setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    }
    *opt.keep_session = SSL_get1_session(ssl_);
  }
  return true;
}

void TlsConn::describe(TlsResult* r) const {
  r->handshake = true;
  r->protocol = SSL_get_version(ssl_);
  r->cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(ssl_));
  const unsigned char* alpn = nullptr;
  unsigned alpn_len = 0;
  SSL_get0_alpn_selected(ssl_, &alpn, &alpn_len);
  r->alpn.assign(reinterpret_cast<const char*>(alpn), alpn_len);
  r->reused = SSL_session_reused(ssl_) == 1;
  if (X509* cert = SSL_get1_peer_certificate(ssl_)) {
    char cn[256] = {0};
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
    r->subject_cn = cn;
    EVP_PKEY* key = X509_get0_pubkey(cert);
    r->key_type = key && EVP_PKEY_base_id(key) == EVP_PKEY_EC ? "EC" : "RSA";
    X509_free(cert);
  }
}

ssize_t TlsConn::receiveSome(char* buf, size_t len, Ms timeout) {
  if (!ssl_) return 0;
  auto deadline = Clock::now() + timeout;
  for (;;) {
    if (SSL_pending(ssl_) == 0) {
      auto left = std::chrono::duration_cast<Ms>(deadline - Clock::now());
      if (left.count() <= 0) return -1;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) return -1;
    }
    int n = SSL_read(ssl_, buf, static_cast<int>(len));
    if (n > 0) return n;
    int err = SSL_get_error(ssl_, n);
    ERR_clear_error();
    if (err != SSL_ERROR_WANT_READ) return 0;  // close_notify, reset, or a TLS error
  }
}

bool TlsConn::sendAll(const std::string& bytes) {
  if (!ssl_) return false;
  return bytes.empty() || SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size())) == static_cast<int>(bytes.size());
}

std::string getRequest(const std::string& path, const std::string& host) {
  return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n";
}

TlsResult tlsRequest(int port, const std::string& request, const TlsClientOptions& opt, Ms timeout) {
  TlsResult r;
  TlsConn conn;
  if (!conn.connectTls(port, opt, timeout)) {
    r.error = conn.error();
    return r;
  }
  conn.describe(&r);
  if (!request.empty() && conn.send(request)) r.response = conn.readResponse(timeout);
  return r;
}

}  // namespace tidegate::test
