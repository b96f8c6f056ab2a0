// Downstream TLS session resumption that works whichever worker accepts
// the next connection (docs/tls.md):
//   - ssl_session_cache shared:NAME:SIZE: sessions (i2d_SSL_SESSION bytes,
//     keyed by session id) in a shared dict zone of the master's mapping,
//     with ssl_session_timeout as their TTL and LRU eviction when full.
//     OpenSSL's external cache callbacks read and write it.
//   - ssl_session_tickets on: ticket keys in a shared dict zone too, made
//     by the first worker that needs one and rotated every
//     ticketRotationMs(ssl_session_timeout); a ticket sealed with a previous
//     key still opens while its session may live, and is then renewed.
//   - ssl_session_ticket_key FILE...: fixed keys instead (nginx's files).
// Both zones live in shm::SharedDicts' internal namespace, so no
// lua_shared_dict can name them.
#pragma once

#include <openssl/ssl.h>

#include <cstdint>
#include <string>

#include "conf/config.h"

namespace tidegate::tls {

// Makes the zones the conf's servers need (master, before fork, next to the
// lua_shared_dict zones): one per ssl_session_cache shared name, and the
// ticket key zone when a TLS address uses tickets. A zone a previous conf
// made with the same name and size is kept, sessions and keys with it.
// False and *err on a size conflict or a failed mapping.
bool ensureSessionZones(const conf::Config& cfg, std::string* err);

// Applies `s`'s session cache mode (nginx's off / none / builtin /
// shared), and for a shared cache or tickets the callbacks that use the
// zones ensureSessionZones() made (or the ticket key files). A zone that
// does not exist (a conf being checked before any is made) leaves that
// part to OpenSSL's per-context defaults. False and *err when a ticket key
// file is unreadable or of a wrong size, or OpenSSL refuses.
bool installSessionResumption(SSL_CTX* ctx, const conf::SslSettings& s, std::string* err);

// How long a ticket key encrypts: half the session timeout (a ticket from
// the previous key is then still worth renewing), between 1 s and 1 h.
int64_t ticketRotationMs(uint64_t session_timeout_ms);

}  // namespace tidegate::tls
