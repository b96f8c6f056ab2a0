// TLS helpers for the integration tests: certificates made with the
// openssl CLI in a temp dir (a CA, an intermediate, leaves for given
// names, expired, self-signed and foreign-CA ones, RSA or ECDSA), and a
// blocking TLS client that reports what the handshake negotiated.
#pragma once

#include <openssl/ssl.h>

#include <map>
#include <string>
#include <vector>

#include "harness.h"

namespace tidegate::test {

// Certificates and keys, made once per test binary (in a temp dir that
// lives until it exits). Files: ca.crt/.key (the trusted CA),
// inter.crt/.key (an intermediate CA it signed), other-ca.crt/.key (a CA
// nobody trusts). Leaves come from leaf().
class TlsCerts {
 public:
  struct Leaf {
    std::string cert;   // path: the leaf, then its chain (intermediate) when it has one
    std::string key;    // path
    std::string leaf_only;  // path: the leaf alone
  };
  enum class Signer { kCa, kIntermediate, kOtherCa, kSelf };
  struct Options {
    Signer signer = Signer::kCa;
    bool ecdsa = true;
    int days = 2;       // <0: already expired
  };

  static TlsCerts& get();
  bool ok() const { return ok_; }
  std::string path(const std::string& name) const { return dir_.path() + "/" + name; }
  // A leaf for `names` (the first is the CN; all are DNS SANs; "*.x" works),
  // made on first use under `id` (a file name stem) and cached. Every test
  // file of the binary shares the cache: asking for an `id` again with other
  // names or options throws (the test fails instead of getting the wrong
  // certificate).
  Leaf leaf(const std::string& id, const std::vector<std::string>& names, Options opt);
  Leaf leaf(const std::string& id, const std::vector<std::string>& names) { return leaf(id, names, Options()); }
  std::string read(const std::string& file) const { return dir_.read(file); }

 private:
  TlsCerts();
  bool run(const std::string& cmd) const;
  TempDir dir_;
  bool ok_ = false;
  std::map<std::string, Leaf> leaves_;
  std::map<std::string, std::string> specs_;  // id -> what it was made from
};

// What one TLS connection negotiated, and the HTTP answer it got.
struct TlsResult {
  bool handshake = false;   // the handshake completed
  std::string error;        // why not (OpenSSL's reason)
  std::string protocol;     // "TLSv1.3"
  std::string cipher;
  std::string alpn;         // selected protocol, or ""
  std::string subject_cn;   // the CN of the certificate the server sent
  std::string key_type;     // "EC" or "RSA"
  bool reused = false;      // the session was resumed
  Response response;        // when a request was sent
};

struct TlsClientOptions {
  std::string sni;          // "" sends none
  int min_version = 0;      // TLS1_2_VERSION...; 0: library default
  int max_version = 0;
  std::string ciphers;      // TLS <= 1.2 cipher list; "" default
  std::string sigalgs;      // e.g. "RSA+SHA256" to ask for an RSA certificate
  std::string groups;       // key exchange groups offered, e.g. "X25519"
  std::vector<std::string> alpn;  // offered
  SSL_SESSION* session = nullptr;  // offered for resumption (not owned)
  SSL_SESSION** keep_session = nullptr;  // receives the new session (caller frees)
  std::string ca_file;      // verify against it when set (the result's error says why it failed)
};

// Connects to 127.0.0.1:port, handshakes, and when `request` is not empty
// sends it and reads one response.
TlsResult tlsRequest(int port, const std::string& request, const TlsClientOptions& opt, Ms timeout = Ms(5000));
// "GET path HTTP/1.1" with Host `host` and Connection: close.
std::string getRequest(const std::string& path, const std::string& host);

// A TLS connection that stays open: RawClient's reads and writes (and its
// HTTP framing) over TLS.
class TlsConn : public RawClient {
 public:
  TlsConn() = default;
  ~TlsConn() override;
  // Connects and handshakes; false with error() set when either fails.
  bool connectTls(int port, const TlsClientOptions& opt, Ms timeout = Ms(5000));
  void close() override;
  SSL* ssl() const { return ssl_; }
  const std::string& error() const { return error_; }
  // Fills `r` from the finished handshake (not the response).
  void describe(TlsResult* r) const;

 protected:
  ssize_t receiveSome(char* buf, size_t len, Ms timeout) override;
  bool sendAll(const std::string& bytes) override;

 private:
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string error_;
};

}  // namespace tidegate::test
