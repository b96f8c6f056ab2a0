#include "tls/certificate.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <ctime>
#include <fstream>
#include <sstream>

namespace tidegate::tls {
namespace {

bool readFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

}  // namespace

std::string takeSslErrors(const char* fallback) {
  std::string out;
  char buf[256];
  while (unsigned long e = ERR_get_error()) {
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += " ";
    out += buf;
  }
  return out.empty() ? fallback : out;
}

CertKey::~CertKey() {
  X509_free(cert_);
  sk_X509_pop_free(chain_, X509_free);
  EVP_PKEY_free(key_);
}

std::shared_ptr<const CertKey> CertKey::fromPem(std::string_view cert, std::string_view key, std::string* err) {
  ERR_clear_error();
  std::shared_ptr<CertKey> ck(new CertKey());
  BIO* cb = BIO_new_mem_buf(cert.data(), static_cast<int>(cert.size()));
  ck->cert_ = PEM_read_bio_X509_AUX(cb, nullptr, nullptr, nullptr);
  ck->chain_ = sk_X509_new_null();
  while (ck->cert_) {
    X509* more = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
    if (!more) break;
    sk_X509_push(ck->chain_, more);
  }
  BIO_free(cb);
  if (!ck->cert_) {
    *err = "no certificate in the PEM (" + takeSslErrors("empty") + ")";
    return nullptr;
  }
  BIO* kb = BIO_new_mem_buf(key.data(), static_cast<int>(key.size()));
  // No passphrase callback: an encrypted key fails instead of prompting.
  ck->key_ = PEM_read_bio_PrivateKey(kb, nullptr, [](char*, int, int, void*) { return 0; }, nullptr);
  BIO_free(kb);
  if (!ck->key_) {
    *err = "no private key in the PEM (" + takeSslErrors("empty") + ")";
    return nullptr;
  }
  if (X509_check_private_key(ck->cert_, ck->key_) != 1) {
    ERR_clear_error();
    *err = "the private key does not match the certificate";
    return nullptr;
  }
  ERR_clear_error();  // the chain loop ends on a "no start line"
  return ck;
}

std::shared_ptr<const CertKey> CertKey::fromFiles(const std::string& cert_file, const std::string& key_file,
                                                  std::string* err) {
  std::string cert, key;
  if (!readFile(cert_file, &cert)) {
    *err = "cannot load certificate \"" + cert_file + "\": cannot read the file";
    return nullptr;
  }
  if (!readFile(key_file, &key)) {
    *err = "cannot load certificate key \"" + key_file + "\": cannot read the file";
    return nullptr;
  }
  auto ck = fromPem(cert, key, err);
  if (!ck) *err = "cannot load certificate \"" + cert_file + "\" with key \"" + key_file + "\": " + *err;
  return ck;
}

std::shared_ptr<const CertKey> CertKey::fromDer(std::string_view cert, std::string_view key, std::string* err) {
  ERR_clear_error();
  std::shared_ptr<CertKey> ck(new CertKey());
  const auto* p = reinterpret_cast<const unsigned char*>(cert.data());
  const auto* end = p + cert.size();
  ck->cert_ = d2i_X509(nullptr, &p, end - p);
  ck->chain_ = sk_X509_new_null();
  while (ck->cert_ && p < end) {
    X509* more = d2i_X509(nullptr, &p, end - p);
    if (!more) break;
    sk_X509_push(ck->chain_, more);
  }
  if (!ck->cert_ || p != end) {
    *err = "invalid DER certificate (" + takeSslErrors("trailing data") + ")";
    return nullptr;
  }
  const auto* kp = reinterpret_cast<const unsigned char*>(key.data());
  ck->key_ = d2i_AutoPrivateKey(nullptr, &kp, static_cast<long>(key.size()));
  if (!ck->key_) {
    *err = "invalid DER private key (" + takeSslErrors("empty") + ")";
    return nullptr;
  }
  if (X509_check_private_key(ck->cert_, ck->key_) != 1) {
    ERR_clear_error();
    *err = "the private key does not match the certificate";
    return nullptr;
  }
  return ck;
}

std::string CertKey::keyType() const {
  switch (EVP_PKEY_base_id(key_)) {
    case EVP_PKEY_RSA: return "RSA";
    case EVP_PKEY_EC: return "EC";
    case EVP_PKEY_ED25519: return "ED25519";
    case EVP_PKEY_ED448: return "ED448";
    default: return "other";
  }
}

std::vector<std::string> CertKey::names() const {
  std::vector<std::string> out;
  auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert_, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans, i);
    if (gn->type != GEN_DNS) continue;
    const ASN1_IA5STRING* s = gn->d.dNSName;
    out.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), static_cast<size_t>(ASN1_STRING_length(s)));
  }
  GENERAL_NAMES_free(sans);
  if (out.empty()) {
    char cn[256] = {0};
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert_), NID_commonName, cn, sizeof(cn)) > 0) out.emplace_back(cn);
  }
  return out;
}

int64_t CertKey::notAfter() const {
  const ASN1_TIME* t = X509_get0_notAfter(cert_);
  struct tm tm {};
  if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

bool CertKey::useFor(SSL* ssl) const {
  // override=1 replaces a certificate of the same key type only: an RSA and
  // an ECDSA one sit side by side and OpenSSL picks by the client's sigalgs.
  return SSL_use_cert_and_key(ssl, cert_, key_, chain_, 1) == 1;
}

}  // namespace tidegate::tls
