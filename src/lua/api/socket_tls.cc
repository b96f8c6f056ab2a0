#include "lua/api/socket_tls.h"

#include <openssl/x509v3.h>

namespace tidegate::lua {
namespace {

const char kSessionMeta[] = "tidegate.socket.ssl_session";

int sessionGc(lua_State* L) {
  auto** box = static_cast<TlsSessionBox**>(lua_touserdata(L, 1));
  if (*box) (*box)->release();
  *box = nullptr;
  return 0;
}

}  // namespace

tls::ClientSettings cosocketTlsSettings(const conf::HttpSettings& s) {
  tls::ClientSettings t;
  t.trusted_certificate = s.lua_ssl_trusted_certificate.value_or("");
  t.verify_depth = s.lua_ssl_verify_depth.value_or(1);
  t.protocols = s.lua_ssl_protocols.value_or(0);
  t.ciphers = s.lua_ssl_ciphers.value_or("DEFAULT");
  return t;
}

const TlsSessionBox* toTlsSession(lua_State* L, int idx) {
  auto** box = static_cast<TlsSessionBox**>(luaL_testudata(L, idx, kSessionMeta));
  return box ? *box : nullptr;
}

void pushTlsSession(lua_State* L, TlsClient* tls, bool want_session) {
  if (!want_session) {
    lua_pushboolean(L, 1);
    return;
  }
  auto** box = static_cast<TlsSessionBox**>(lua_newuserdata(L, sizeof(TlsSessionBox*)));
  *box = tls->sessionBox()->retain();
  if (luaL_newmetatable(L, kSessionMeta)) {
    lua_pushcfunction(L, sessionGc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
}

int pushHandshakeResult(lua_State* L, TlsClient* tls, const std::string& name, bool verify, bool want_session,
                        bool* ok) {
  *ok = false;
  if (verify) {
    long rc = tls->verifyResult();
    if (rc != X509_V_OK) {
      lua_pushnil(L);
      lua_pushfstring(L, "%d: %s", static_cast<int>(rc), X509_verify_cert_error_string(rc));
      return 2;
    }
    if (!name.empty() && !tls->certificateMatches(name)) {
      lua_pushnil(L);
      lua_pushliteral(L, "certificate host mismatch");
      return 2;
    }
  }
  *ok = true;
  pushTlsSession(L, tls, want_session);
  return 1;
}

}  // namespace tidegate::lua
