// The downstream TLS of one listen address in one worker: an SSL_CTX with
// the default server's protocols, ciphers and session settings, and the
// certificate choice made per handshake from the SNI name:
//   1. ssl_certificate_by_lua* of the server the name selects, if any;
//   2. a certificate pushed through the admin API for the name (exact,
//      then "*.parent" wildcard);
//   3. the ssl_certificate pairs of the server the name selects (nginx's
//      server_name rules), or of the default server.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <string_view>

#include "conf/config.h"
#include "tls/certificate.h"
#include "tls/channel.h"

namespace tidegate::tls {

// Checks protocols and ciphers as a server context would take them.
bool checkServerSettings(const conf::SslSettings& s, std::string* err);

// Certificates known at handshake time beyond the conf (the admin API's).
class CertificateSource {
 public:
  virtual ~CertificateSource() = default;
  // For an SNI name (lower-cased, possibly empty); null when none.
  virtual CertKeyPtr find(std::string_view server_name) = 0;
};

// Runs ssl_certificate_by_lua* for a handshake, in the layer that has
// Lua (the http server, for the connection that owns the handshake).
class CertificateScript {
 public:
  enum class Outcome { kContinue, kPause, kFail };
  virtual ~CertificateScript() = default;
  // `owner` is the SSL's app data. kPause: the code waits and the
  // handshake pauses (kPaused); the owner steps it again once the code
  // ended, which calls this again, for the outcome. kFail: logged.
  // `budget_ms`: the server's lua_budget_timeout (0: none).
  virtual Outcome runCertificateScript(SSL* ssl, void* owner, const conf::LuaCode& code, uint64_t budget_ms) = 0;
};

class ServerContext {
 public:
  static std::unique_ptr<ServerContext> create(const conf::Config::ListenGroup& group, std::string* err);
  ~ServerContext();
  ServerContext(const ServerContext&) = delete;
  ServerContext& operator=(const ServerContext&) = delete;

  // A server-side channel for one accepted connection; `owner` is kept as
  // the SSL's app data.
  std::unique_ptr<Channel> newChannel(void* owner) const;
  void setCertificateSource(CertificateSource* src) { dynamic_ = src; }
  void setCertificateScript(CertificateScript* script) { script_ = script; }
  SSL_CTX* ctx() const { return ctx_; }
  const conf::Config::ListenGroup& group() const { return *group_; }

  // The SNI name of a handshake in progress or done, lower-cased.
  static std::string serverName(SSL* ssl);

 private:
  ServerContext() = default;
  static int onCertificate(SSL* ssl, void* arg);
  // ssl_certificate_by_lua* of `server` (else of the default server): -1
  // while it waits, 0 if it failed, 1 if it set a certificate, 2 if there
  // is none or it set none.
  int runScript(SSL* ssl, const conf::Server* server);
  static int onAlpn(SSL* ssl, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                    unsigned int inlen, void* arg);

  SSL_CTX* ctx_ = nullptr;
  const conf::Config::ListenGroup* group_ = nullptr;
  CertificateSource* dynamic_ = nullptr;
  CertificateScript* script_ = nullptr;
};

// Applies `s` (protocols, ciphers, server preference) to `ctx`.
bool applyProtocols(SSL_CTX* ctx, uint64_t protocols, const std::string& ciphers, std::string* err);

}  // namespace tidegate::tls
