// A server certificate with its chain and private key, loaded from PEM
// (files named in the conf, or text pushed through the admin API) and
// checked: the key must match the certificate. Immutable once made and
// shared (shared_ptr) by every connection that serves it.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tidegate::tls {

class CertKey {
 public:
  // PEM text: `cert` holds the certificate then its chain; `key` the
  // private key (RSA, EC or Ed25519; unencrypted). Null with *err on
  // failure ("no certificate", "key does not match the certificate", ...).
  static std::shared_ptr<const CertKey> fromPem(std::string_view cert, std::string_view key, std::string* err);
  // The same from files; *err names the file that failed.
  static std::shared_ptr<const CertKey> fromFiles(const std::string& cert_file, const std::string& key_file,
                                                  std::string* err);
  // From DER (ngx.ssl's set_der_cert / set_der_priv_key): `cert` is one or
  // more DER certificates back to back.
  static std::shared_ptr<const CertKey> fromDer(std::string_view cert, std::string_view key, std::string* err);
  ~CertKey();
  CertKey(const CertKey&) = delete;
  CertKey& operator=(const CertKey&) = delete;

  X509* cert() const { return cert_; }
  STACK_OF(X509)* chain() const { return chain_; }
  EVP_PKEY* key() const { return key_; }
  // "RSA", "EC", "ED25519"...
  std::string keyType() const;
  // The certificate's DNS names (SANs, or the CN when it has none).
  std::vector<std::string> names() const;
  // notAfter as seconds since the epoch.
  int64_t notAfter() const;
  // Adds this certificate to `ssl` (beside one of another key type).
  bool useFor(SSL* ssl) const;

 private:
  CertKey() = default;
  X509* cert_ = nullptr;
  STACK_OF(X509)* chain_ = nullptr;
  EVP_PKEY* key_ = nullptr;
};

using CertKeyPtr = std::shared_ptr<const CertKey>;

// OpenSSL's error queue as one line ("error:0A00009C:SSL routines::http
// request"), emptied; `fallback` when it is empty.
std::string takeSslErrors(const char* fallback = "unknown error");

}  // namespace tidegate::tls
