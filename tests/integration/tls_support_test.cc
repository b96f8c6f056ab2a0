// The TLS test support itself: the certificates it makes verify (or fail
// to) the way the tests that use them assume.
#include <gtest/gtest.h>
#include <openssl/x509.h>
#include <openssl/pem.h>

#include <cstdio>

#include "tls_support.h"

namespace tidegate::test {
namespace {

// X509_V_OK or the error of verifying `cert` (with its chain file) against ca.crt.
long verify(const std::string& cert_file) {
  TlsCerts& c = TlsCerts::get();
  X509_STORE* store = X509_STORE_new();
  X509_STORE_load_file(store, c.path("ca.crt").c_str());
  FILE* f = fopen(cert_file.c_str(), "r");
  X509* leaf = PEM_read_X509(f, nullptr, nullptr, nullptr);
  STACK_OF(X509)* chain = sk_X509_new_null();
  while (X509* more = PEM_read_X509(f, nullptr, nullptr, nullptr)) sk_X509_push(chain, more);
  fclose(f);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, leaf, chain);
  long result = X509_verify_cert(ctx) == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  sk_X509_pop_free(chain, X509_free);
  X509_free(leaf);
  X509_STORE_free(store);
  return result;
}

TEST(TlsSupportTest, CertificatesVerifyAsIntended) {
  TlsCerts& c = TlsCerts::get();
  ASSERT_TRUE(c.ok()) << c.read("openssl.log");
  EXPECT_EQ(verify(c.leaf("support-good", {"localhost"}).cert), X509_V_OK);
  EXPECT_EQ(verify(c.leaf("support-rsa", {"localhost"}, {TlsCerts::Signer::kCa, false, 2}).cert), X509_V_OK);
  TlsCerts::Leaf via = c.leaf("support-via-inter", {"localhost"}, {TlsCerts::Signer::kIntermediate, true, 2});
  EXPECT_EQ(verify(via.cert), X509_V_OK);
  EXPECT_EQ(verify(via.leaf_only), X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
  EXPECT_EQ(verify(c.leaf("support-expired", {"localhost"}, {TlsCerts::Signer::kCa, true, -1}).cert), X509_V_ERR_CERT_HAS_EXPIRED);
  EXPECT_EQ(verify(c.leaf("support-self", {"localhost"}, {TlsCerts::Signer::kSelf, true, 2}).cert),
            X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT);
  EXPECT_EQ(verify(c.leaf("support-foreign", {"localhost"}, {TlsCerts::Signer::kOtherCa, true, 2}).cert),
            X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
  EXPECT_TRUE(c.ok()) << c.read("openssl.log");
}

}  // namespace
}  // namespace tidegate::test
