#include "tls/session_cache.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "core/log.h"
#include "shm/registry.h"

namespace tidegate::tls {
namespace {

using core::LogLevel;
using shm::Dict;
using shm::SharedDicts;

// The ticket key zone, shared by every TLS address (as nginx's one
// ssl_session_ticket_key file may be): an 80-byte entry per rotation period
// and distinct ssl_session_timeout. ticketRotationMs() keeps at most about
// kMaxLiveKeys alive per timeout, a few hundred bytes each with the dict's
// entry overhead; LRU eviction would drop the oldest first.
const char kTicketZone[] = "ssl_session_ticket_keys";
constexpr uint64_t kTicketZoneSize = 256 * 1024;
constexpr int64_t kMaxLiveKeys = 250;

// nginx's NGX_SSL_MAX_SESSION_SIZE: a larger session (a long client
// certificate chain) is not shared.
constexpr int kMaxSessionBytes = 4096;

// nginx's ssl_session_ticket_key layouts: 80 bytes are a name, an
// HMAC-SHA256 key and an AES-256-CBC key; 48 bytes a name, a 16-byte HMAC
// key and an AES-128-CBC key. The keys tidegate makes are of the first
// kind, their name starting with the rotation epoch they belong to (how a
// ticket finds its key in the zone), then random bytes.
constexpr size_t kNameBytes = 16;
constexpr size_t kKeyBytes = 80;
constexpr size_t kShortKeyBytes = 48;

struct TicketKey {
  unsigned char bytes[kKeyBytes];
  bool aes128 = false;  // the 48-byte layout
  unsigned char* name() { return bytes; }
  size_t hmacBytes() const { return aes128 ? 16 : 32; }
  unsigned char* hmac() { return bytes + kNameBytes; }
  unsigned char* aes() { return bytes + kNameBytes + hmacBytes(); }
  const EVP_CIPHER* cipher() const { return aes128 ? EVP_aes_128_cbc() : EVP_aes_256_cbc(); }
};

std::string cacheZoneName(const std::string& zone) {
  std::string name = "ssl_session_cache:";
  name.append(zone);
  return name;
}

// What the callbacks of one SSL_CTX use, kept as its ex_data. OpenSSL calls
// the session and ticket callbacks on the context the SSL was made from;
// an SSL moved to another context (SSL_set_SSL_CTX) finds none there and
// gets a full handshake, never a wrong key.
struct Resumption {
  Dict* cache = nullptr;  // ssl_session_cache shared:..., or null
  Dict* keys = nullptr;   // the ticket key zone, or null
  int64_t timeout_ms = 0;
  int64_t period_ms = 0;  // ticket key rotation
  // ssl_session_ticket_key: the first seals, all open; the zone is unused.
  std::vector<TicketKey> file_keys;
};

void freeResumption(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) { delete static_cast<Resumption*>(ptr); }

int resumptionIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, freeResumption);
  return index;
}

Resumption* resumptionOf(SSL_CTX* ctx) {
  return static_cast<Resumption*>(SSL_CTX_get_ex_data(ctx, resumptionIndex()));
}

std::string_view bytesView(const unsigned char* p, size_t n) { return {reinterpret_cast<const char*>(p), n}; }

// --- the shared session cache -------------------------------------------

// New session (a full handshake finished): a copy goes to the zone. Keeps
// no reference, hence 0.
int onNewSession(SSL* ssl, SSL_SESSION* sess) noexcept {
  Resumption* r = resumptionOf(SSL_get_SSL_CTX(ssl));
  if (!r || !r->cache) return 0;
  // A TLS 1.3 stateless ticket carries the session itself; its id is a
  // dummy no client will ever present.
  if (SSL_version(ssl) >= TLS1_3_VERSION && !(SSL_get_options(ssl) & SSL_OP_NO_TICKET)) return 0;
  unsigned int id_len = 0;
  const unsigned char* id = SSL_SESSION_get_id(sess, &id_len);
  int n = i2d_SSL_SESSION(sess, nullptr);
  if (id_len == 0 || n <= 0 || n > kMaxSessionBytes) return 0;
  unsigned char buf[kMaxSessionBytes];
  unsigned char* end = buf;
  i2d_SSL_SESSION(sess, &end);
  // A TTL of 0 would mean "never" to the dict.
  shm::WriteResult w = r->cache->set(bytesView(id, id_len), shm::Value::ofString(bytesView(buf, end - buf)),
                                     std::max<int64_t>(r->timeout_ms, 1));
  if (w.status != shm::Status::kOk) {
    TG_LOG_CONN_LIMITED(LogLevel::kAlert, 0, "could not allocate a new session in the SSL session shared cache (%d bytes)",
                        n);
  }
  return 0;
}

// A client offers a session id: the session from the zone, or null for a
// full handshake. OpenSSL owns the returned reference (*copy = 0) and checks
// its expiry and session id context itself.
SSL_SESSION* onGetSession(SSL* ssl, const unsigned char* id, int len, int* copy) noexcept {
  *copy = 0;
  Resumption* r = resumptionOf(SSL_get_SSL_CTX(ssl));
  if (!r || !r->cache || len <= 0) return nullptr;
  std::string bytes;
  shm::ReadResult got = r->cache->get(bytesView(id, static_cast<size_t>(len)), &bytes);
  if (got.status != shm::Status::kOk || got.type != shm::Type::kString) return nullptr;
  const unsigned char* p = reinterpret_cast<const unsigned char*>(bytes.data());
  return d2i_SSL_SESSION(nullptr, &p, static_cast<long>(bytes.size()));
}

// A session must not be resumed any more (a fatal alert on its connection,
// or OpenSSL's own expiry): out of the zone too.
void onRemoveSession(SSL_CTX* ctx, SSL_SESSION* sess) noexcept {
  Resumption* r = resumptionOf(ctx);
  if (!r || !r->cache) return;
  unsigned int id_len = 0;
  const unsigned char* id = SSL_SESSION_get_id(sess, &id_len);
  if (id_len > 0) r->cache->remove(bytesView(id, id_len));
}

// nginx's modes (ngx_ssl_session_cache()).
void setCacheMode(SSL_CTX* ctx, const conf::SslSessionCacheConf& c, bool shared) {
  if (c.off) {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    return;
  }
  if (!c.builtin && c.zone.empty()) {
    // "none": session ids are still handed out (some clients misbehave when
    // told nothing is resumable) but nothing is stored.
    SSL_CTX_set_session_cache_mode(
        ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_AUTO_CLEAR | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_cache_size(ctx, 1);
    return;
  }
  // builtin and shared together: the worker's own cache first, then the zone.
  long mode = SSL_SESS_CACHE_SERVER;
  if (!c.builtin) mode |= SSL_SESS_CACHE_NO_INTERNAL;
  SSL_CTX_set_session_cache_mode(ctx, mode);
  if (c.builtin) SSL_CTX_sess_set_cache_size(ctx, static_cast<long>(c.builtin_size));
  if (!shared) return;
  SSL_CTX_sess_set_new_cb(ctx, onNewSession);
  SSL_CTX_sess_set_get_cb(ctx, onGetSession);
  SSL_CTX_sess_set_remove_cb(ctx, onRemoveSession);
}

// --- ticket keys ---------------------------------------------------------

std::string keySlot(int64_t period_ms, int64_t epoch) {
  std::string slot = "ticket:";
  slot.append(std::to_string(period_ms)).append(":").append(std::to_string(epoch));
  return slot;
}

// The key of rotation `epoch`; false when there is none (never made, or
// expired: no ticket it sealed can still be valid).
bool readKey(const Resumption& r, int64_t epoch, TicketKey* key) {
  std::string bytes;
  shm::ReadResult got = r.keys->get(keySlot(r.period_ms, epoch), &bytes);
  if (got.status != shm::Status::kOk || got.type != shm::Type::kString || bytes.size() != kKeyBytes) return false;
  std::memcpy(key->bytes, bytes.data(), kKeyBytes);
  return true;
}

// The encryption key of the period `now` falls in. The first worker that
// needs it makes it; add() lets exactly one of racing workers store theirs.
bool currentKey(const Resumption& r, int64_t now, TicketKey* key) {
  int64_t epoch = now / r.period_ms;
  if (readKey(r, epoch, key)) return true;
  uint64_t tag = static_cast<uint64_t>(epoch);
  std::memcpy(key->name(), &tag, sizeof(tag));
  if (RAND_bytes(key->bytes + sizeof(tag), static_cast<int>(kKeyBytes - sizeof(tag))) != 1) return false;
  // It must open tickets until the last one it seals can have timed out.
  int64_t ttl = (epoch + 1) * r.period_ms + r.timeout_ms - now;
  shm::WriteResult w = r.keys->add(keySlot(r.period_ms, epoch), shm::Value::ofString(bytesView(key->bytes, kKeyBytes)), ttl);
  return w.status == shm::Status::kOk || readKey(r, epoch, key);
}

// Sets up the cipher and MAC contexts OpenSSL hands the ticket callback.
bool useKey(TicketKey& key, unsigned char* iv, EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx, bool seal) {
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key.hmac(), key.hmacBytes()),
                         OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                         OSSL_PARAM_construct_end()};
  if (EVP_MAC_CTX_set_params(hctx, params) != 1) return false;
  return (seal ? EVP_EncryptInit_ex(cctx, key.cipher(), nullptr, key.aes(), iv)
               : EVP_DecryptInit_ex(cctx, key.cipher(), nullptr, key.aes(), iv)) == 1;
}

// Sealing: 1 with `key` set up, 0 to send no ticket, -1 on error.
int sealWith(TicketKey* key, unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx) {
  if (RAND_bytes(iv, EVP_CIPHER_iv_length(key->cipher())) != 1) return 0;
  std::memcpy(name, key->name(), kNameBytes);
  return useKey(*key, iv, cctx, hctx, true) ? 1 : -1;
}

// A TLS 1.3 resumption gets a new ticket only when the key callback asks
// to renew (OpenSSL's rule): as nginx does, it always asks, so a client
// that keeps only the latest ticket (wrk does) can resume again.
bool renewAlways(SSL* ssl) { return SSL_version(ssl) >= TLS1_3_VERSION; }

// The ticket key callback with ssl_session_ticket_key files.
int fileTicketKey(SSL* ssl, Resumption* r, unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cctx,
                  EVP_MAC_CTX* hctx, int enc) {
  if (enc == 1) return sealWith(&r->file_keys[0], name, iv, cctx, hctx);
  for (size_t i = 0; i < r->file_keys.size(); i++) {
    TicketKey& key = r->file_keys[i];
    if (std::memcmp(key.name(), name, kNameBytes) != 0) continue;
    if (!useKey(key, iv, cctx, hctx, false)) return -1;
    return i == 0 && !renewAlways(ssl) ? 1 : 2;
  }
  return 0;
}

// OpenSSL's ticket key callback (SSL_CTX_set_tlsext_ticket_key_evp_cb).
// Sealing (enc = 1): see sealWith(). Opening: 0 when the key is unknown or
// expired (full handshake), 1 with the key that seals now, 2 with an older
// one (resumed, and a new ticket is sealed with the current key).
int onTicketKey(SSL* ssl, unsigned char name[16], unsigned char* iv, EVP_CIPHER_CTX* cctx, EVP_MAC_CTX* hctx,
                int enc) noexcept {
  Resumption* r = resumptionOf(SSL_get_SSL_CTX(ssl));
  if (r && !r->file_keys.empty()) return fileTicketKey(ssl, r, name, iv, cctx, hctx, enc);
  if (!r || !r->keys) return 0;
  int64_t now = SharedDicts::nowMs();
  TicketKey key;
  if (enc == 1) return currentKey(*r, now, &key) ? sealWith(&key, name, iv, cctx, hctx) : 0;
  uint64_t tag = 0;
  std::memcpy(&tag, name, sizeof(tag));
  int64_t epoch = static_cast<int64_t>(tag);
  int64_t current = now / r->period_ms;
  if (epoch < 0 || epoch > current || !readKey(*r, epoch, &key)) return 0;
  if (std::memcmp(key.name(), name, kNameBytes) != 0) return 0;
  if (!useKey(key, iv, cctx, hctx, false)) return -1;
  return epoch == current && !renewAlways(ssl) ? 1 : 2;
}

// Reads ssl_session_ticket_key files; false and *err for one that cannot be
// read or is not 48 or 80 bytes (nginx's message).
bool readKeyFiles(const std::vector<std::string>& files, std::vector<TicketKey>* keys, std::string* err) {
  for (const std::string& file : files) {
    unsigned char buf[kKeyBytes + 1];  // one more, to see a longer file
    FILE* f = fopen(file.c_str(), "rb");
    size_t n = f ? fread(buf, 1, sizeof(buf), f) : 0;
    if (f) fclose(f);
    std::string why;
    if (!f) {
      why.append("cannot open \"").append(file).append("\" (").append(std::strerror(errno)).append(")");
    } else if (n != kKeyBytes && n != kShortKeyBytes) {
      why.append("\"").append(file).append("\" must be 48 or 80 bytes");
    }
    if (!why.empty()) {
      *err = std::move(why);
      return false;
    }
    TicketKey key;
    std::memcpy(key.bytes, buf, n);
    key.aes128 = n == kShortKeyBytes;
    keys->push_back(key);
  }
  return true;
}

}  // namespace

int64_t ticketRotationMs(uint64_t session_timeout_ms) {
  int64_t timeout = static_cast<int64_t>(session_timeout_ms);
  int64_t period = std::clamp<int64_t>(timeout / 2, 1000, 3600 * 1000);
  // A key lives one period plus the timeout: bound how many are alive.
  return std::max(period, timeout / kMaxLiveKeys);
}

bool ensureSessionZones(const conf::Config& cfg, std::string* err) {
  std::map<std::string, const conf::SslSessionCacheConf*> zones;
  for (const auto& server : cfg.http.servers) {
    const auto& cache = server->settings.ssl.session_cache;
    if (!cache || cache->zone.empty()) continue;
    auto [it, fresh] = zones.emplace(cache->zone, &*cache);
    if (!fresh && it->second->zone_size != cache->zone_size) {
      err->assign("the size ")
          .append(std::to_string(cache->zone_size))
          .append(" of shared memory zone \"")
          .append(cache->zone)
          .append("\" conflicts with already declared size ")
          .append(std::to_string(it->second->zone_size))
          .append(" in ")
          .append(cache->where);
      return false;
    }
  }
  std::string why;
  for (const auto& [name, cache] : zones) {
    if (!SharedDicts::instance().ensureInternal(cacheZoneName(name), cache->zone_size, &why)) {
      err->assign("ssl_session_cache \"shared:").append(name).append("\": ").append(why).append(" in ").append(cache->where);
      return false;
    }
  }
  bool tickets = false;
  for (const auto& g : cfg.listen_groups) {
    const conf::SslSettings& ssl = g.default_server->settings.ssl;
    bool key_files = ssl.session_ticket_keys && !ssl.session_ticket_keys->empty();
    if (g.listen.ssl && *ssl.session_tickets && !key_files) tickets = true;
  }
  if (tickets && !SharedDicts::instance().ensureInternal(kTicketZone, kTicketZoneSize, &why)) {
    err->assign("ssl_session_tickets: ").append(why);
    return false;
  }
  return true;
}

bool installSessionResumption(SSL_CTX* ctx, const conf::SslSettings& s, std::string* err) {
  const conf::SslSessionCacheConf& cache = *s.session_cache;
  auto r = std::make_unique<Resumption>();
  r->timeout_ms = static_cast<int64_t>(*s.session_timeout_ms);
  r->period_ms = ticketRotationMs(*s.session_timeout_ms);
  if (!cache.zone.empty()) {
    r->cache = SharedDicts::instance().findInternal(cacheZoneName(cache.zone), cache.zone_size);
  }
  if (*s.session_tickets && s.session_ticket_keys && !readKeyFiles(*s.session_ticket_keys, &r->file_keys, err)) {
    return false;
  }
  if (*s.session_tickets && r->file_keys.empty()) {
    r->keys = SharedDicts::instance().findInternal(kTicketZone, kTicketZoneSize);
  }
  setCacheMode(ctx, cache, r->cache != nullptr);
  if (!r->cache && !r->keys && r->file_keys.empty()) return true;
  if (SSL_CTX_set_ex_data(ctx, resumptionIndex(), r.get()) != 1) {
    *err = "SSL_CTX_set_ex_data() failed";
    return false;
  }
  r.release();  // the context's now (freeResumption)
  Resumption* set = resumptionOf(ctx);
  if ((set->keys || !set->file_keys.empty()) && SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, onTicketKey) != 1) {
    *err = "SSL_CTX_set_tlsext_ticket_key_evp_cb() failed";
    return false;
  }
  return true;
}

}  // namespace tidegate::tls
