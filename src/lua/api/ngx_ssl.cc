// require "ngx.ssl": lua-resty-core's downstream TLS API for
// ssl_certificate_by_lua*, with its names, arguments, return values and
// error texts. The functions that change the handshake work on the SSL*
// of the running SslCertTask; the getters also in a request on a TLS
// connection (from what the handshake recorded). Elsewhere in a request
// they return nil and "bad request" (OpenResty's answer on a connection
// without TLS); without a request or handshake (init_by_lua*, timers)
// they raise "no request found". The PEM
// and DER converters work anywhere. parse_pem_cert / parse_pem_priv_key
// return userdata freed by the GC (lua-resty-core's are FFI cdata).
// OpenSSL's error queue is emptied after every failure.
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <string>
#include <string_view>

#include "lua/api/common.h"
#include "lua/phases/content.h"
#include "lua/phases/ssl_certificate.h"

namespace tidegate::lua {
namespace {

const char kChainMeta[] = "ngx.ssl.cert_chain";
const char kKeyMeta[] = "ngx.ssl.priv_key";

// The protocol versions: their names ($ssl_protocol, get_tls1_version_str)
// and the ngx.ssl constants.
struct VersionName {
  const char* name;
  const char* constant;
  int version;
};
const VersionName kVersions[] = {{"SSLv3", "SSL3_VERSION", SSL3_VERSION},
                                 {"TLSv1", "TLS1_VERSION", TLS1_VERSION},
                                 {"TLSv1.1", "TLS1_1_VERSION", TLS1_1_VERSION},
                                 {"TLSv1.2", "TLS1_2_VERSION", TLS1_2_VERSION},
                                 {"TLSv1.3", "TLS1_3_VERSION", TLS1_3_VERSION}};

struct ChainBox {
  STACK_OF(X509)* chain;
};
struct KeyBox {
  EVP_PKEY* key;
};

// The running ssl_certificate_by_lua* task; null in another task; raises
// lua-resty-core's "no request found" outside any.
SslCertTask* handshakeTask(lua_State* L) {
  LuaTask* task = Vm::from(L)->current();
  if (!task || (!task->request() && task->phase() != Phase::kSslCert)) luaL_error(L, "no request found");
  return task->phase() == Phase::kSslCert ? dynamic_cast<SslCertTask*>(task) : nullptr;
}

// What the getters read: the handshake in progress (ssl set), or the one
// a request's TLS connection made (ssl null); conn null: neither.
struct Handshake {
  SSL* ssl = nullptr;
  const http::ConnInfo* conn = nullptr;
};

Handshake handshakeOrConnection(lua_State* L) {
  if (SslCertTask* t = handshakeTask(L)) return {t->ssl(), &t->conn()};
  RequestContext* ctx = Vm::from(L)->current()->request();
  const http::ConnInfo* conn = ctx ? ctx->req().conn : nullptr;
  return {nullptr, conn && conn->ssl_protocol ? conn : nullptr};
}

int tlsVersion(const Handshake& h) {
  if (h.ssl) return SSL_version(h.ssl);
  for (const VersionName& v : kVersions) {
    if (std::string_view(v.name) == h.conn->ssl_protocol) return v.version;
  }
  return 0;
}

// Stack: [] -> [nil, err]
int fail(lua_State* L, std::string_view what) {
  ERR_clear_error();
  lua_pushnil(L);
  lua_pushlstring(L, what.data(), what.size());
  return 2;
}

int ok(lua_State* L) {
  lua_pushboolean(L, 1);
  return 1;
}

std::string_view checkString(lua_State* L, int idx) {
  size_t len = 0;
  const char* s = luaL_checklstring(L, idx, &len);
  return {s, len};
}

// Every certificate of a PEM text, in order; null if there is none.
STACK_OF(X509)* readPemCerts(std::string_view pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  STACK_OF(X509)* chain = sk_X509_new_null();
  // The first may carry trust settings ("TRUSTED CERTIFICATE"), as nginx reads it.
  X509* x = PEM_read_bio_X509_AUX(bio, nullptr, nullptr, nullptr);
  while (x) {
    sk_X509_push(chain, x);
    x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  }
  BIO_free(bio);
  ERR_clear_error();  // the end of the text reads as "no start line"
  if (sk_X509_num(chain) == 0) {
    sk_X509_free(chain);
    return nullptr;
  }
  return chain;
}

// DER certificates back to back; null if one does not parse.
STACK_OF(X509)* readDerCerts(std::string_view der) {
  STACK_OF(X509)* chain = sk_X509_new_null();
  auto p = reinterpret_cast<const unsigned char*>(der.data());
  const unsigned char* end = p + der.size();
  while (p < end) {
    X509* x = d2i_X509(nullptr, &p, static_cast<long>(end - p));
    if (!x) {
      sk_X509_pop_free(chain, X509_free);
      return nullptr;
    }
    sk_X509_push(chain, x);
  }
  if (sk_X509_num(chain) == 0) {
    sk_X509_free(chain);
    return nullptr;
  }
  return chain;
}

EVP_PKEY* readPemKey(std::string_view pem, const char* passphrase) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  // With a null callback OpenSSL takes `u` as the passphrase; without one
  // an encrypted key fails rather than prompting on the terminal.
  EVP_PKEY* key = passphrase ? PEM_read_bio_PrivateKey(bio, nullptr, nullptr, const_cast<char*>(passphrase))
                             : PEM_read_bio_PrivateKey(bio, nullptr, [](char*, int, int, void*) { return 0; }, nullptr);
  BIO_free(bio);
  return key;
}

EVP_PKEY* readDerKey(std::string_view der) {
  auto p = reinterpret_cast<const unsigned char*>(der.data());
  return d2i_AutoPrivateKey(nullptr, &p, static_cast<long>(der.size()));
}

// The leaf (first) and its chain as the handshake's certificate, beside
// any of another key type already set. Null, or what failed.
const char* useChain(SSL* ssl, STACK_OF(X509)* chain) {
  if (SSL_use_certificate(ssl, sk_X509_value(chain, 0)) != 1) return "SSL_use_certificate() failed";
  if (SSL_clear_chain_certs(ssl) != 1) return "SSL_clear_chain_certs() failed";
  for (int i = 1; i < sk_X509_num(chain); i++) {
    if (SSL_add1_chain_cert(ssl, sk_X509_value(chain, i)) != 1) return "SSL_add1_chain_cert() failed";
  }
  return nullptr;
}

// --- the handshake ---------------------------------------------------------

int sslClearCerts(lua_State* L) {
  SslCertTask* t = handshakeTask(L);
  if (!t) return fail(L, "bad request");
  SSL_certs_clear(t->ssl());
  return ok(L);
}

int sslSetDerCert(lua_State* L) {
  std::string_view der = checkString(L, 1);
  SslCertTask* t = handshakeTask(L);
  if (!t) return fail(L, "bad request");
  STACK_OF(X509)* chain = readDerCerts(der);
  if (!chain) return fail(L, "d2i_X509_bio() failed");
  const char* err = useChain(t->ssl(), chain);
  sk_X509_pop_free(chain, X509_free);
  return err ? fail(L, err) : ok(L);
}

int sslSetDerPrivKey(lua_State* L) {
  std::string_view der = checkString(L, 1);
  SslCertTask* t = handshakeTask(L);
  if (!t) return fail(L, "bad request");
  EVP_PKEY* key = readDerKey(der);
  if (!key) return fail(L, "d2i_PrivateKey_bio() failed");
  int rc = SSL_use_PrivateKey(t->ssl(), key);
  EVP_PKEY_free(key);
  return rc == 1 ? ok(L) : fail(L, "SSL_use_PrivateKey() failed");
}

int sslSetCert(lua_State* L) {
  SslCertTask* t = handshakeTask(L);
  if (!t) return fail(L, "bad request");
  if (lua_isnil(L, 1)) return fail(L, "no certificate chain");
  auto* box = static_cast<ChainBox*>(luaL_checkudata(L, 1, kChainMeta));
  const char* err = useChain(t->ssl(), box->chain);
  return err ? fail(L, err) : ok(L);
}

int sslSetPrivKey(lua_State* L) {
  SslCertTask* t = handshakeTask(L);
  if (!t) return fail(L, "bad request");
  if (lua_isnil(L, 1)) return fail(L, "no private key");
  auto* box = static_cast<KeyBox*>(luaL_checkudata(L, 1, kKeyMeta));
  return SSL_use_PrivateKey(t->ssl(), box->key) == 1 ? ok(L) : fail(L, "SSL_use_PrivateKey() failed");
}

// The SNI name (in a request: as the connection recorded it, lower-cased);
// nil without one.
int sslServerName(lua_State* L) {
  Handshake h = handshakeOrConnection(L);
  if (!h.conn) return fail(L, "bad request");
  if (!h.ssl) {
    if (h.conn->ssl_server_name.empty()) return 0;
    lua_pushlstring(L, h.conn->ssl_server_name.data(), h.conn->ssl_server_name.size());
    return 1;
  }
  const char* name = SSL_get_servername(h.ssl, TLSEXT_NAMETYPE_host_name);
  if (!name) return 0;
  lua_pushstring(L, name);
  return 1;
}

int sslGetTls1Version(lua_State* L) {
  Handshake h = handshakeOrConnection(L);
  if (!h.conn) return fail(L, "bad request");
  lua_pushinteger(L, tlsVersion(h));
  return 1;
}

int sslGetTls1VersionStr(lua_State* L) {
  Handshake h = handshakeOrConnection(L);
  if (!h.conn) return fail(L, "bad request");
  int version = tlsVersion(h);
  for (const VersionName& v : kVersions) {
    if (v.version == version) {
      lua_pushstring(L, v.name);
      return 1;
    }
  }
  return fail(L, "unknown version");
}

// An address in binary form and "inet" / "inet6"; nil, nil, err on failure.
int pushRawAddr(lua_State* L, const std::string& text) {
  unsigned char buf[16];
  bool v6 = text.find(':') != std::string::npos;
  if (inet_pton(v6 ? AF_INET6 : AF_INET, text.c_str(), buf) != 1) {
    lua_pushnil(L);
    lua_pushnil(L);
    lua_pushliteral(L, "unknown address type");
    return 3;
  }
  lua_pushlstring(L, reinterpret_cast<const char*>(buf), v6 ? 16 : 4);
  lua_pushstring(L, v6 ? "inet6" : "inet");
  return 2;
}

// raw_server_addr() / raw_client_addr()
int rawAddr(lua_State* L, bool server) {
  Handshake h = handshakeOrConnection(L);
  if (!h.conn) {
    lua_pushnil(L);
    return 1 + fail(L, "bad request");
  }
  return pushRawAddr(L, server ? h.conn->local_addr : h.conn->remote_addr);
}

int sslRawServerAddr(lua_State* L) { return rawAddr(L, true); }
int sslRawClientAddr(lua_State* L) { return rawAddr(L, false); }

int sslServerPort(lua_State* L) {
  Handshake h = handshakeOrConnection(L);
  if (!h.conn) return fail(L, "bad request");
  lua_pushinteger(L, h.conn->local_port);
  return 1;
}

// --- conversions (any phase) -------------------------------------------------

int sslCertPemToDer(lua_State* L) {
  STACK_OF(X509)* chain = readPemCerts(checkString(L, 1));
  if (!chain) return fail(L, "PEM_read_bio_X509_AUX() failed");
  std::string der;
  for (int i = 0; i < sk_X509_num(chain); i++) {
    unsigned char* out = nullptr;
    int n = i2d_X509(sk_X509_value(chain, i), &out);
    if (n > 0) der.append(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
    OPENSSL_free(out);
  }
  sk_X509_pop_free(chain, X509_free);
  lua_pushlstring(L, der.data(), der.size());
  return 1;
}

int sslPrivKeyPemToDer(lua_State* L) {
  std::string_view pem = checkString(L, 1);
  const char* passphrase = luaL_optstring(L, 2, nullptr);
  EVP_PKEY* key = readPemKey(pem, passphrase);
  if (!key) return fail(L, "PEM_read_bio_PrivateKey() failed");
  unsigned char* out = nullptr;
  int n = i2d_PrivateKey(key, &out);
  EVP_PKEY_free(key);
  if (n <= 0) return fail(L, "i2d_PrivateKey() failed");
  lua_pushlstring(L, reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  OPENSSL_free(out);
  return 1;
}

// Stack: [] -> [box] (owning `chain`)
int pushChain(lua_State* L, STACK_OF(X509)* chain) {
  auto* box = static_cast<ChainBox*>(lua_newuserdata(L, sizeof(ChainBox)));
  box->chain = chain;
  luaL_getmetatable(L, kChainMeta);
  lua_setmetatable(L, -2);
  return 1;
}

int pushKey(lua_State* L, EVP_PKEY* key) {
  auto* box = static_cast<KeyBox*>(lua_newuserdata(L, sizeof(KeyBox)));
  box->key = key;
  luaL_getmetatable(L, kKeyMeta);
  lua_setmetatable(L, -2);
  return 1;
}

int sslParsePemCert(lua_State* L) {
  STACK_OF(X509)* chain = readPemCerts(checkString(L, 1));
  return chain ? pushChain(L, chain) : fail(L, "PEM_read_bio_X509_AUX() failed");
}

int sslParseDerCert(lua_State* L) {
  STACK_OF(X509)* chain = readDerCerts(checkString(L, 1));
  return chain ? pushChain(L, chain) : fail(L, "d2i_X509_bio() failed");
}

int sslParsePemPrivKey(lua_State* L) {
  EVP_PKEY* key = readPemKey(checkString(L, 1), nullptr);
  return key ? pushKey(L, key) : fail(L, "PEM_read_bio_PrivateKey() failed");
}

int sslParseDerPrivKey(lua_State* L) {
  EVP_PKEY* key = readDerKey(checkString(L, 1));
  return key ? pushKey(L, key) : fail(L, "d2i_PrivateKey_bio() failed");
}

int chainGc(lua_State* L) {
  auto* box = static_cast<ChainBox*>(lua_touserdata(L, 1));
  sk_X509_pop_free(box->chain, X509_free);
  box->chain = nullptr;
  return 0;
}

int keyGc(lua_State* L) {
  auto* box = static_cast<KeyBox*>(lua_touserdata(L, 1));
  EVP_PKEY_free(box->key);
  box->key = nullptr;
  return 0;
}

int loadSsl(lua_State* L) {
  lua_createtable(L, 0, 24);
  setFn(L, "clear_certs", sslClearCerts);
  setFn(L, "set_der_cert", sslSetDerCert);
  setFn(L, "set_der_priv_key", sslSetDerPrivKey);
  setFn(L, "set_cert", sslSetCert);
  setFn(L, "set_priv_key", sslSetPrivKey);
  setFn(L, "server_name", sslServerName);
  setFn(L, "server_port", sslServerPort);
  setFn(L, "raw_server_addr", sslRawServerAddr);
  setFn(L, "raw_client_addr", sslRawClientAddr);
  setFn(L, "get_tls1_version", sslGetTls1Version);
  setFn(L, "get_tls1_version_str", sslGetTls1VersionStr);
  setFn(L, "cert_pem_to_der", sslCertPemToDer);
  setFn(L, "priv_key_pem_to_der", sslPrivKeyPemToDer);
  setFn(L, "parse_pem_cert", sslParsePemCert);
  setFn(L, "parse_der_cert", sslParseDerCert);
  setFn(L, "parse_pem_priv_key", sslParsePemPrivKey);
  setFn(L, "parse_der_priv_key", sslParseDerPrivKey);
  for (const VersionName& v : kVersions) {
    lua_pushinteger(L, v.version);
    lua_setfield(L, -2, v.constant);
  }
  lua_pushliteral(L, "0.1.28");
  lua_setfield(L, -2, "version");
  return 1;
}

}  // namespace

// Stack: [] -> []
void openNgxSsl(lua_State* L) {
  luaL_newmetatable(L, kChainMeta);
  setFn(L, "__gc", chainGc);
  lua_pop(L, 1);
  luaL_newmetatable(L, kKeyMeta);
  setFn(L, "__gc", keyGc);
  lua_pop(L, 1);
  setPreload(L, "ngx.ssl", loadSsl);
}

}  // namespace tidegate::lua
