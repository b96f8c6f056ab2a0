// The Lua side of a TCP cosocket's client TLS (sslhandshake): its session
// objects and results. The TLS itself is tls::TlsClient (tls/tls_client.h).
#pragma once

#include <lua.hpp>

#include <string>

#include "conf/config.h"
#include "tls/tls_client.h"

namespace tidegate::lua {

using tls::TlsClient;
using tls::TlsSessionBox;

// The lua_ssl_* settings of `s` as the client context's settings (nothing
// is trusted without lua_ssl_trusted_certificate, as in lua-nginx-module).
tls::ClientSettings cosocketTlsSettings(const conf::HttpSettings& s);

// The session object at `idx` (a userdata that pushTlsSession made), or null.
const TlsSessionBox* toTlsSession(lua_State* L, int idx);
// `tls`'s session as a Lua object, or true when the caller passed false
// for it. Stack: [] -> [session | true]
void pushTlsSession(lua_State* L, TlsClient* tls, bool want_session);
// A finished handshake, checked as lua-nginx-module does when `verify`:
// the chain (lua_ssl_trusted_certificate, lua_ssl_verify_depth), then
// `name`, when not empty, against the certificate. Pushes the results;
// *ok false for a failure. Stack: [] -> [session | true] or [nil, err]
int pushHandshakeResult(lua_State* L, TlsClient* tls, const std::string& name, bool verify, bool want_session,
                        bool* ok);

}  // namespace tidegate::lua
