// tls::DynamicCerts and the store it reads (tls/cert_store.h): names,
// wildcards, re-reading only when the counter moves, and keeping the
// previous certificate when a file cannot be read.
#include "tls/dynamic_certs.h"

#include <gtest/gtest.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "temp_dir_fixture.h"
#include "tls/cert_store.h"

namespace tidegate::tls {
namespace {

std::string bioText(BIO* b) {
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  std::string out(data, static_cast<size_t>(n));
  BIO_free(b);
  return out;
}

// A self-signed EC certificate with CN `cn`, as PEM; its key in *key_pem.
std::string makeCert(const std::string& cn, std::string* key_pem) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 86400);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(x, name);
  X509_sign(x, key, EVP_sha256());
  BIO* cb = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(cb, x);
  BIO* kb = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(kb, key, nullptr, nullptr, 0, nullptr, nullptr);
  X509_free(x);
  EVP_PKEY_free(key);
  *key_pem = bioText(kb);
  return bioText(cb);
}

std::string cnOf(const CertKeyPtr& ck) {
  if (!ck) return "";
  char cn[256] = {0};
  X509_NAME_get_text_by_NID(X509_get_subject_name(ck->cert()), NID_commonName, cn, sizeof(cn));
  return cn;
}

void writeFile(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// A state directory written the way the admin API writes it.
class DynamicCertsTest : public testing_support::TempDirTest {
 protected:
  DynamicCertsTest() : TempDirTest("tg-dyncert") {}
  void SetUp() override {
    TempDirTest::SetUp();
    mkdir(certDir(dir_).c_str(), 0700);
  }

  // Puts `name` with a new certificate of CN `cn` and moves the counter.
  uint64_t put(const std::string& name, const std::string& cn) {
    StoredCert sc{name, "", ""};
    sc.cert = makeCert(cn, &sc.key);
    std::string err;
    CertKeyPtr ck = CertKey::fromPem(sc.cert, sc.key, &err);
    EXPECT_TRUE(ck) << err;
    uint64_t v = ++index_.version;
    writeFile(certFilePath(dir_, v), sc.toJson());
    index_.certs[name] = StoredCertInfo::of(*ck, v, 0);
    commit();
    return v;
  }
  void remove(const std::string& name) {
    index_.certs.erase(name);
    index_.version++;
    commit();
  }
  void commit() {
    writeFile(certDir(dir_) + "/index.json", index_.toJson());
    counter_++;
  }

  CertIndex index_;
  uint64_t counter_ = 0;
};

TEST(CertStoreTest, NamesAreHostNamesOrOneWildcard) {
  std::string out, err;
  EXPECT_TRUE(normalizeCertName("WWW.Example.COM", &out, &err));
  EXPECT_EQ(out, "www.example.com");
  EXPECT_TRUE(normalizeCertName("*.example.com", &out, &err));
  EXPECT_EQ(out, "*.example.com");
  EXPECT_TRUE(normalizeCertName("localhost", &out, &err));
  EXPECT_TRUE(normalizeCertName("a_b.c-d.e", &out, &err));
  for (const char* bad : {"", ".", "a..b", ".a", "a.", "*", "*.", "a.*.b", "**.a", "*a.b", "-a.b", "a-.b", "a b",
                          "a/b", "a:1", "é.b"}) {
    EXPECT_FALSE(normalizeCertName(bad, &out, &err)) << bad;
    EXPECT_NE(err.find("invalid server name"), std::string::npos);
  }
  EXPECT_TRUE(normalizeCertName(std::string(63, 'a') + ".b", &out, &err));
  EXPECT_FALSE(normalizeCertName(std::string(64, 'a') + ".b", &out, &err));
  std::string long_name;
  for (int i = 0; i < 64; i++) long_name.append("abc.");
  long_name.append("d");  // 257 bytes
  EXPECT_FALSE(normalizeCertName(long_name, &out, &err));
}

TEST(CertStoreTest, WildcardForTakesOffOneLabel) {
  EXPECT_EQ(wildcardFor("a.example.com"), "*.example.com");
  EXPECT_EQ(wildcardFor("example.com"), "*.com");
  EXPECT_EQ(wildcardFor("localhost"), "");
  EXPECT_EQ(wildcardFor(".com"), "");
  EXPECT_EQ(wildcardFor("a."), "");
}

TEST_F(DynamicCertsTest, FindsExactThenOneLabelWildcard) {
  DynamicCerts dc(dir_, [this] { return counter_; });
  EXPECT_EQ(dc.find("a.example.com"), nullptr);
  put("*.example.com", "wild");
  put("x.example.com", "exact");
  EXPECT_EQ(cnOf(dc.find("a.example.com")), "wild");
  EXPECT_EQ(cnOf(dc.find("x.example.com")), "exact");
  EXPECT_EQ(dc.find("example.com"), nullptr);
  EXPECT_EQ(dc.find("a.b.example.com"), nullptr);
  EXPECT_EQ(dc.find(""), nullptr);
  remove("x.example.com");
  EXPECT_EQ(cnOf(dc.find("x.example.com")), "wild");
  EXPECT_EQ(dc.size(), 1u);
}

TEST_F(DynamicCertsTest, ReadsOnlyWhenTheCounterMovesAndParsesOncePerChange) {
  put("a.test", "one");
  DynamicCerts dc(dir_, [this] { return counter_; });
  CertKeyPtr first = dc.find("a.test");
  EXPECT_EQ(cnOf(first), "one");
  // A change the counter does not announce is not seen.
  uint64_t announced = counter_;
  put("a.test", "two");
  counter_ = announced;
  EXPECT_EQ(dc.find("a.test"), first);
  counter_++;
  CertKeyPtr second = dc.find("a.test");
  EXPECT_EQ(cnOf(second), "two");
  // Another name changing leaves this one's parsed certificate as it was.
  put("b.test", "bee");
  EXPECT_EQ(dc.find("a.test"), second);
  EXPECT_EQ(cnOf(dc.find("b.test")), "bee");
}

TEST_F(DynamicCertsTest, AFileThatCannotBeReadKeepsThePreviousCertificate) {
  put("a.test", "one");
  DynamicCerts dc(dir_, [this] { return counter_; });
  EXPECT_EQ(cnOf(dc.find("a.test")), "one");
  uint64_t v = put("a.test", "two");
  writeFile(certFilePath(dir_, v), "{\"name\": \"a.test\", \"cert\": \"garbage\", \"key\": \"\"}");
  EXPECT_EQ(cnOf(dc.find("a.test")), "one");
  unlink(certFilePath(dir_, v).c_str());
  counter_++;
  EXPECT_EQ(cnOf(dc.find("a.test")), "one");
  // An index that cannot be read keeps them all.
  writeFile(certDir(dir_) + "/index.json", "{");
  counter_++;
  EXPECT_EQ(cnOf(dc.find("a.test")), "one");
  // The next good change is taken.
  put("a.test", "three");
  EXPECT_EQ(cnOf(dc.find("a.test")), "three");
  // A new name whose file is missing is simply not served.
  index_.certs["c.test"] = index_.certs["a.test"];
  index_.certs["c.test"].version = 999;
  commit();
  EXPECT_EQ(dc.find("c.test"), nullptr);
  EXPECT_EQ(cnOf(dc.find("a.test")), "three");
}

TEST_F(DynamicCertsTest, TheIndexRoundTrips) {
  put("*.example.com", "wild");
  CertIndex read;
  std::string err;
  ASSERT_TRUE(readCertIndex(dir_, &read, &err)) << err;
  EXPECT_EQ(read.version, 1u);
  ASSERT_EQ(read.certs.count("*.example.com"), 1u);
  const StoredCertInfo& info = read.certs["*.example.com"];
  EXPECT_EQ(info.version, 1u);
  EXPECT_EQ(info.dns_names, std::vector<std::string>{"wild"});
  EXPECT_EQ(info.key_type, "EC");
  EXPECT_EQ(info.sha256.size(), 64u);
  EXPECT_GT(info.not_after, 0);
  StoredCert sc;
  ASSERT_TRUE(readStoredCert(dir_, 1, &sc, &err)) << err;
  EXPECT_EQ(sc.name, "*.example.com");
  EXPECT_FALSE(readStoredCert(dir_, 2, &sc, &err));
  // No index yet: an empty store.
  std::filesystem::remove_all(certDir(dir_));
  ASSERT_TRUE(readCertIndex(dir_, &read, &err)) << err;
  EXPECT_TRUE(read.certs.empty());
}

}  // namespace
}  // namespace tidegate::tls
