// proxy_pass https://: the proxy_ssl_* settings of a request, the
// handshake on a new connection and the check of the upstream's
// certificate. The bytes go through the connection's TLS layer
// (UpstreamConn), so nothing else in the proxy knows about TLS.
#include <arpa/inet.h>
#include <openssl/x509.h>

#include "http/variables.h"
#include "proxy/proxy_task.h"

namespace tidegate::proxy {
namespace {

// RFC 6066 section 3: a literal IPv4 or IPv6 address is not sent as SNI.
bool isAddress(const std::string& name) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, name.c_str(), buf) == 1 || inet_pton(AF_INET6, name.c_str(), buf) == 1;
}

}  // namespace

const TlsProfile& ProxyModule::tlsProfile(const conf::ProxySettings& s) {
  auto it = tls_profiles_.find(&s);
  if (it != tls_profiles_.end()) return it->second;
  TlsProfile p;
  bool verify = *s.ssl_verify;
  p.settings.trusted_certificate = s.ssl_trusted_certificate.value_or("");
  p.settings.system_ca = verify;  // without a trusted file, the system's CA store
  p.settings.verify_depth = *s.ssl_verify_depth;
  p.settings.protocols = *s.ssl_protocols;
  p.settings.ciphers = *s.ssl_ciphers;
  p.settings.certificate = s.ssl_certificate.value_or("");
  p.settings.certificate_key = s.ssl_certificate_key.value_or("");
  // A pooled connection serves only requests with the same settings, SNI
  // and checked name (never a plain one: its key has no such part).
  p.key.assign(1, '\0').append("tls");
  p.key.append(1, '\0').append(verify ? "v" : "-").append(*s.ssl_server_name ? "s" : "-");
  p.key.append(1, '\0').append(p.settings.cacheKey());
  p.key.append(1, '\0');
  return tls_profiles_.emplace(&s, std::move(p)).first->second;
}

void ProxyTask::prepareTls() {
  Rare& rare = this->rare();
  rare.tls_profile = &m_.tlsProfile(s_);
  std::string& name = rare.tls_name;
  if (s_.ssl_name) {
    http::evaluate(*s_.ssl_name, r_, &name);
  } else {
    name = target_.host;  // $proxy_host without its port
  }
  if (name.size() > 2 && name.front() == '[' && name.back() == ']') name = name.substr(1, name.size() - 2);
  rare.tls_key.assign(rare.tls_profile->key).append(name);
}

void ProxyTask::startHandshake() {
  state_ = State::kHandshaking;
  const std::string& name = rare_->tls_name;  // prepareTls() made rare_
  std::string sni = *s_.ssl_server_name && !isAddress(name) ? name : std::string();
  const tls::TlsSessionBox* resume = *s_.ssl_session_reuse ? m_.pool().session(poolKey()) : nullptr;
  std::string err;
  std::unique_ptr<tls::TlsClient> client = tls::TlsClient::create(rare_->tls_profile->settings, sni, resume, &err);
  if (!client) {
    conn_->stopTimer();
    fail(conf::kNextError, 502, err);
    return;
  }
  if (!conn_->startTls(std::move(client))) {
    conn_->stopTimer();
    std::string why = conn_->tlsError();
    fail(conf::kNextError, 502, why);
  }
}

void ProxyTask::onHandshake(bool ok) {
  conn_->stopTimer();
  std::string why = ok ? verifyPeer() : conn_->tlsError();
  if (!why.empty()) {
    fail(conf::kNextError, 502, why);
    return;
  }
  if (*s_.ssl_session_reuse) m_.pool().keepSession(poolKey(), conn_->tls()->sessionBox());
  r_.upstream.tries.back().connect_us = nowUs() - try_start_us_;
  sendRequest();
}

std::string ProxyTask::verifyPeer() const {
  if (!*s_.ssl_verify) return {};
  const tls::TlsClient& t = *conn_->tls();
  long rc = t.verifyResult();
  std::string why;
  if (rc != X509_V_OK) {
    why.assign("upstream SSL certificate verify error: (").append(std::to_string(rc)).append(":");
    why.append(X509_verify_cert_error_string(rc)).append(")");
  } else if (!t.certificateMatches(rare_->tls_name)) {
    why.assign("upstream SSL certificate does not match \"").append(rare_->tls_name).append("\"");
  }
  return why;
}

}  // namespace tidegate::proxy
